//! The Sentinel sink end to end: the real binary posts to a local stand-in of the Logs
//! Ingestion API and of Entra ID (crowsnest::standin), over HTTPS with a CA of the test's own,
//! through the real workload-identity token exchange of the Azure SDK. The stand-in is as strict
//! as the service (declared columns, TimeGenerated, 1 MB, bearer tokens, scope) and is told to
//! fail in the ways Azure fails.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crowsnest::sink::sentinel::asim_columns::ASIM_AUDIT_COLUMNS;
use crowsnest::sink::sentinel::row::{alert_row, COLUMNS};
use crowsnest::standin::logs_ingestion::{ColumnType, Scripted, Standin, StandinConfig};
use serde_json::Value;

use crate::common::*;
use crowsnest::standin::pki::test_pki;

const STREAM: &str = "Custom-CrowsnestAlert";
const EVENTS_STREAM: &str = "Custom-CrowsnestAuditEvents";
const FEDERATED_TOKEN: &str = "eyJhbGciOiJSUzI1NiJ9.federated-service-account-token.sig";
const SECRET: &str = "s3cr3t-Value~that-must-never-be-logged";

struct Azure {
    standin: Standin,
    dir: tempfile::TempDir,
    ca: PathBuf,
    token_file: PathBuf,
}

fn azure(tweak: impl FnOnce(&mut StandinConfig)) -> Azure {
    let pki = test_pki();
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("test-ca.pem");
    std::fs::write(&ca, &pki.ca_pem).unwrap();
    let token_file = dir.path().join("azure-identity-token");
    std::fs::write(&token_file, FEDERATED_TOKEN).unwrap();
    let declare = |cols: &[(&str, &str)]| cols.iter().map(|(n, t)| (n.to_string(), ColumnType::parse(t).expect("a DCR type"))).collect();
    let mut cfg = StandinConfig::new(BTreeMap::from([
        (STREAM.to_string(), declare(COLUMNS)),
        (EVENTS_STREAM.to_string(), declare(ASIM_AUDIT_COLUMNS)),
    ]));
    cfg.federated_token = Some(FEDERATED_TOKEN.to_string());
    cfg.client_secret = Some(SECRET.to_string());
    cfg.tls = Some((pki.cert_pem.clone(), pki.key_pem.clone()));
    tweak(&mut cfg);
    let standin = Standin::start(cfg).unwrap();
    Azure { standin, dir, ca, token_file }
}

impl Azure {
    fn spool(&self) -> PathBuf {
        self.dir.path().join("spool")
    }

    /// The sink URL; `extra` adds options (`&max_request_bytes=…`).
    fn sink_url(&self, auth: &str, extra: &str) -> String {
        format!(
            "sentinel://{}?dcr={}&stream={STREAM}&auth={auth}&spool_dir={}&batch_timeout=1s{extra}",
            self.standin.addr(),
            "dcr-0123456789abcdef0123456789abcdef",
            self.spool().display()
        )
    }

    /// `crowsnest` with the environment a pod on AKS with workload identity has, pointed at the
    /// stand-in: AZURE_AUTHORITY_HOST for Entra ID, SSL_CERT_FILE for the test CA.
    fn crowsnest(&self) -> Command {
        let mut c = bin();
        c.current_dir(self.dir.path())
            .env("AZURE_AUTHORITY_HOST", self.standin.base_url())
            .env("SSL_CERT_FILE", &self.ca)
            .env("AZURE_TENANT_ID", "00000000-0000-0000-0000-000000000001")
            .env("AZURE_CLIENT_ID", "00000000-0000-0000-0000-000000000002")
            .env("AZURE_FEDERATED_TOKEN_FILE", &self.token_file)
            .env("NO_PROXY", "127.0.0.1,localhost")
            .env_remove("HTTPS_PROXY")
            .env_remove("https_proxy")
            .env_remove("CROWSNEST_LOG")
            .stdin(Stdio::null());
        c
    }

    fn replay(&self, extra_args: &[&str], sink: &str) -> Output {
        let mut c = self.crowsnest();
        c.args(["replay", "--no-progress", "--sink", sink]).args(extra_args);
        c.output().unwrap()
    }

    fn delivered_ids(&self) -> Vec<String> {
        self.standin.accepted_rows(STREAM).iter().map(|r| r["AlertId"].as_str().unwrap().to_string()).collect()
    }

    fn spooled_records(&self) -> usize {
        std::fs::read_dir(self.spool())
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .filter_map(|e| {
                        e.file_name().to_string_lossy().strip_suffix(".json").and_then(|s| s.split('.').nth(1)?.parse::<usize>().ok())
                    })
                    .sum()
            })
            .unwrap_or(0)
    }
}

/// The alerts `crowsnest replay` prints for the bundled sample (what Sentinel must receive):
/// replayed once for all the tests here.
fn reference_alerts() -> Vec<Value> {
    static ALERTS: std::sync::OnceLock<Vec<Value>> = std::sync::OnceLock::new();
    ALERTS
        .get_or_init(|| {
            let dir = tempfile::tempdir().unwrap();
            let out = run(&["replay", "--no-progress"], dir.path());
            assert!(out.status.success());
            let alerts = stdout_alerts(&out);
            assert!(alerts.len() > 20, "the sample raises alerts");
            alerts
        })
        .clone()
}

/// The bundled sample's lines (AKS diagnostic-settings envelopes).
fn sample_text() -> String {
    let mut text = String::new();
    flate2::read::GzDecoder::new(crowsnest::cli::SAMPLE).read_to_string(&mut text).unwrap();
    text
}

fn ids(alerts: &[Value]) -> BTreeSet<String> {
    alerts.iter().map(|a| a["id"].as_str().unwrap().to_string()).collect()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn a_replay_delivers_every_alert_exactly_as_printed_gzipped_under_the_size_limit() {
    let az = azure(|_| {});
    let reference = reference_alerts();
    // Small requests, so the run needs many.
    let out = az.replay(&["--sink", "stdout"], &az.sink_url("workload_identity", "&max_request_bytes=8000"));
    assert!(out.status.success(), "{}", stderr(&out));
    let printed = stdout_alerts(&out);
    assert_eq!(ids(&printed), ids(&reference));

    let rows = az.standin.accepted_rows(STREAM);
    assert_eq!(rows.len(), printed.len(), "each alert once");
    let by_id: BTreeMap<&str, &Value> = rows.iter().map(|r| (r["AlertId"].as_str().unwrap(), r)).collect();
    for a in &printed {
        let expected = Value::Object(alert_row(a).unwrap());
        assert_eq!(by_id[a["id"].as_str().unwrap()], &expected, "the row is the alert as printed");
    }
    let requests = az.standin.requests();
    assert!(requests.len() >= 5, "max_request_bytes=8000 splits {} alerts into several requests", rows.len());
    let mut request_ids = BTreeSet::new();
    for r in &requests {
        assert_eq!(r.status, 204);
        assert!(r.gzip && r.wire_bytes < r.raw_bytes, "gzip on");
        assert!(r.raw_bytes <= 8000, "{} raw bytes in one request", r.raw_bytes);
        assert!(request_ids.insert(r.client_request_id.clone().expect("x-ms-client-request-id")), "a fresh id per request");
    }
    let tokens = az.standin.tokens();
    assert!(!tokens.is_empty() && tokens.iter().all(|t| t.grant == "client_assertion" && t.status == 200), "workload identity");
    assert_eq!(tokens.len(), 1, "the token is cached across requests");
    assert_eq!(az.spooled_records(), 0, "the spool is empty once Azure accepted everything");
    assert!(!az.dir.path().join("dead-letters.jsonl").exists());
}

#[test]
fn run_from_a_config_delivers_with_a_client_secret_and_ca_file_through_an_https_proxy() {
    let az = azure(|_| {});
    let reference = reference_alerts();
    let sample = az.dir.path().join("sample.jsonl.gz");
    std::fs::write(&sample, crowsnest::cli::SAMPLE).unwrap();
    let proxy = ConnectProxy::start();
    let config = format!(
        r#"
[source]
kind = "file"
paths = ["{}"]

[sinks]
stdout = false

[sinks.sentinel]
endpoint = "https://{}"
dcr = "dcr-0123456789abcdef0123456789abcdef"
stream = "{STREAM}"
auth = "client_secret"
client_secret = "${{APP_SECRET}}"
authority_host = "{}"
ca_file = "{}"
spool_dir = "{}"

[metrics]
enabled = false
"#,
        sample.display(),
        az.standin.addr(),
        az.standin.base_url(),
        az.ca.display(),
        az.spool().display()
    );
    std::fs::write(az.dir.path().join("crowsnest.toml"), config).unwrap();
    let out = az
        .crowsnest()
        .args(["run", "-c", "crowsnest.toml"])
        .env("APP_SECRET", SECRET)
        // The CA comes from ca_file, not from SSL_CERT_FILE; the traffic goes through the proxy.
        .env_remove("SSL_CERT_FILE")
        .env_remove("AZURE_AUTHORITY_HOST")
        .env_remove("NO_PROXY")
        .env("HTTPS_PROXY", format!("http://{}", proxy.addr))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(az.delivered_ids().into_iter().collect::<BTreeSet<_>>(), ids(&reference));
    assert!(az.standin.tokens().iter().all(|t| t.grant == "client_secret"));
    assert!(proxy.tunnels.load(Ordering::Relaxed) >= 1, "HTTPS_PROXY is honoured");
    assert!(!stderr(&out).contains(SECRET));
}

#[test]
fn an_outage_loses_nothing_and_the_spool_drains_when_azure_returns() {
    let az = azure(|_| {});
    let expected = ids(&reference_alerts());
    az.standin.set_down(true);
    let child = az
        .crowsnest()
        .args(["replay", "--no-progress", "--sink", &az.sink_url("workload_identity", "&max_request_bytes=8000")])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut child = KillOnDrop(child);
    // Every alert waits on disk while Azure is away…
    wait_for("every alert in the spool", Duration::from_secs(60), || (az.spooled_records() == expected.len()).then_some(()));
    std::thread::sleep(Duration::from_secs(3));
    assert!(child.0.try_wait().unwrap().is_none(), "a replay waits for delivery");
    assert!(az.delivered_ids().is_empty());
    // …and goes once it is back.
    az.standin.set_down(false);
    let status = wait_for("the replay to end", Duration::from_secs(120), || child.0.try_wait().unwrap());
    assert!(status.success());
    assert_eq!(az.delivered_ids().into_iter().collect::<BTreeSet<_>>(), expected);
    assert_eq!(az.spooled_records(), 0);
}

#[test]
fn kill_9_during_an_outage_then_a_restart_delivers_every_alert_from_the_spool() {
    let az = azure(|_| {});
    let expected = ids(&reference_alerts());
    az.standin.set_down(true);
    let url = az.sink_url("workload_identity", "&max_request_bytes=8000");
    let mut child = KillOnDrop(az.crowsnest().args(["replay", "--no-progress", "--sink", &url]).stderr(Stdio::null()).spawn().unwrap());
    wait_for("every alert in the spool", Duration::from_secs(60), || (az.spooled_records() == expected.len()).then_some(()));
    child.0.kill().unwrap(); // SIGKILL: no flush, no drain, no goodbye
    child.0.wait().unwrap();
    az.standin.set_down(false);
    // The restart reads nothing new: whatever arrives comes from the spool.
    let empty = az.dir.path().join("empty.jsonl");
    std::fs::write(&empty, "").unwrap();
    let out = az.replay(&[empty.to_str().unwrap()], &url);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("left in the spool"), "the restart says it resumes: {}", stderr(&out));
    assert_eq!(az.delivered_ids().into_iter().collect::<BTreeSet<_>>(), expected, "every alert arrives, ids compared");
}

#[test]
fn throttling_is_paced_by_retry_after_and_server_errors_timeouts_and_413_are_retried() {
    let az = azure(|_| {});
    let expected = ids(&reference_alerts());
    let status = |s: u16, ra: Option<&str>| Scripted::Status { status: s, retry_after: ra.map(str::to_string), error_code: None };
    az.standin.script(vec![
        status(429, Some("2")),
        status(429, Some("1")),
        status(503, None),
        status(500, None),
        Scripted::Hang(Duration::from_secs(4)),
        status(413, None),
    ]);
    let started = Instant::now();
    let out = az.replay(&[], &az.sink_url("workload_identity", "&max_request_bytes=20000&request_timeout=1s"));
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(az.delivered_ids().into_iter().collect::<BTreeSet<_>>(), expected);
    let r = az.standin.requests();
    let statuses: Vec<u16> = r.iter().map(|r| r.status).collect();
    assert_eq!(&statuses[..2], &[429, 429], "{statuses:?}");
    // Retry-After: 2 then 1 seconds between the attempts, not the backoff's 1 s then 2 s.
    let gap = |i: usize| r[i + 1].at.duration_since(r[i].at);
    assert!(gap(0) >= Duration::from_millis(1900) && gap(0) < Duration::from_millis(3500), "Retry-After 2 honoured: {:?}", gap(0));
    assert!(gap(1) >= Duration::from_millis(900) && gap(1) < Duration::from_millis(1900), "Retry-After 1 honoured: {:?}", gap(1));
    assert!(statuses.contains(&503) && statuses.contains(&500) && statuses.contains(&413));
    assert!(started.elapsed() < Duration::from_secs(60));
    assert!(!az.dir.path().join("dead-letters.jsonl").exists(), "a 413 splits the batch, it drops nothing");
}

#[test]
fn a_refused_batch_goes_to_dead_letters_whole_and_later_batches_still_arrive() {
    let az = azure(|_| {});
    let expected = ids(&reference_alerts());
    az.standin.script(vec![Scripted::Status { status: 400, retry_after: None, error_code: Some("InvalidArgument".into()) }]);
    let out = az.replay(&[], &az.sink_url("workload_identity", "&max_request_bytes=8000"));
    assert!(out.status.success(), "{}", stderr(&out));
    let dead = read_jsonl(&az.dir.path().join("dead-letters.jsonl"));
    assert!(!dead.is_empty());
    for d in &dead {
        assert_eq!(d["reason"], "rejected");
        assert!(d["detail"].as_str().unwrap().contains("400 InvalidArgument"), "{d}");
        assert_eq!(d["source"], format!("sentinel:{STREAM}"));
    }
    let dead_ids: BTreeSet<String> = dead.iter().map(|d| d["record"]["AlertId"].as_str().unwrap().to_string()).collect();
    let delivered: BTreeSet<String> = az.delivered_ids().into_iter().collect();
    assert!(delivered.is_disjoint(&dead_ids));
    assert_eq!(delivered.union(&dead_ids).cloned().collect::<BTreeSet<_>>(), expected, "every alert is in Sentinel or a dead letter");
    assert!(delivered.len() > dead_ids.len(), "later batches were not blocked");
}

#[test]
fn an_expired_or_revoked_token_is_replaced_and_no_secret_reaches_stderr_or_dead_letters() {
    // Tokens say they last an hour but the service stops taking them after one second: the
    // SDK's cache would hand the dead one back; the sink must get a fresh one.
    let az = azure(|c| c.token_valid_for = Some(Duration::from_secs(1)));
    let expected = ids(&reference_alerts());
    let status = |s: u16| Scripted::Status { status: s, retry_after: None, error_code: None };
    // Two server errors keep the first batch waiting past its token's life; a 400 makes dead letters.
    az.standin.script(vec![
        status(503),
        status(503),
        Scripted::Status { status: 400, retry_after: None, error_code: Some("InvalidArgument".into()) },
    ]);
    let out = az
        .crowsnest()
        .args(["-vv", "replay", "--no-progress", "--sink", &az.sink_url("client_secret", "&max_request_bytes=8000")])
        .env("AZURE_CLIENT_SECRET", SECRET)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let delivered: BTreeSet<String> = az.delivered_ids().into_iter().collect();
    let dead = std::fs::read_to_string(az.dir.path().join("dead-letters.jsonl")).unwrap();
    assert_eq!(delivered.len() + dead.lines().count(), expected.len());
    assert!(az.standin.requests().iter().any(|r| r.status == 401), "the stale token was refused");
    assert!(az.standin.tokens().len() >= 2, "and replaced");
    let err = stderr(&out);
    for secret in az.standin.issued_tokens().iter().map(String::as_str).chain([SECRET, FEDERATED_TOKEN]) {
        assert!(!err.contains(secret), "a secret in stderr");
        assert!(!dead.contains(secret), "a secret in a dead letter");
    }
    assert!(!err.contains("Bearer "), "no Authorization header is logged");
}

#[test]
fn validate_check_explains_what_a_refusal_means() {
    let az = azure(|_| {});
    let check = |url: &str| az.crowsnest().args(["validate", "--check", "--source", "stdin", "--sink", url]).output().unwrap();
    let ok = check(&az.sink_url("workload_identity", ""));
    assert!(ok.status.success(), "{}", stderr(&ok));
    assert!(String::from_utf8_lossy(&ok.stdout).contains("OK"), "{}", String::from_utf8_lossy(&ok.stdout));
    assert_eq!(az.standin.accepted_rows(STREAM).len(), 0, "the check adds no row");

    let wrong_dcr =
        az.sink_url("workload_identity", "").replace("dcr-0123456789abcdef0123456789abcdef", "dcr-ffffffffffffffffffffffffffffffff");
    let out = check(&wrong_dcr);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("immutableId, not its name"), "{}", stderr(&out));

    az.standin.script(vec![Scripted::Status { status: 403, retry_after: None, error_code: Some("Forbidden".into()) }]);
    let out = check(&az.sink_url("workload_identity", ""));
    assert!(!out.status.success());
    assert!(stderr(&out).contains("Monitoring Metrics Publisher") && stderr(&out).contains("30 minutes"), "{}", stderr(&out));

    let out = az
        .crowsnest()
        .args(["validate", "--check", "--source", "stdin", "--sink", &az.sink_url("workload_identity", "")])
        .env("AZURE_FEDERATED_TOKEN_FILE", "/nonexistent/token")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(stderr(&out).contains("federated token file"), "{}", stderr(&out));
}

#[test]
fn audit_events_are_forwarded_as_asim_rows_filtered_by_the_users_where() {
    let az = azure(|_| {});
    // Writes only, as most teams forward: the URL carries the condition percent-encoded.
    let url = az.sink_url("workload_identity", "&forward_events=asim&events_where=verb%20NOT%20IN%20('get'%2C%20'list'%2C%20'watch')");
    let out = az.replay(&[], &url);
    assert!(out.status.success(), "{}", stderr(&out));
    // The oracle, read straight from the sample: every audit event (once per auditID and stage)
    // whose verb is not a read.
    let text = sample_text();
    let mut expected = BTreeSet::new();
    for line in text.lines() {
        let v: Value = serde_json::from_str(line).unwrap();
        for r in v["records"].as_array().into_iter().flatten() {
            if !r["category"].as_str().is_some_and(|c| c.starts_with("kube-audit")) {
                continue;
            }
            let Ok(e) = serde_json::from_str::<Value>(r["properties"]["log"].as_str().unwrap_or("")) else { continue };
            if !["get", "list", "watch"].contains(&e["verb"].as_str().unwrap_or("")) {
                expected.insert((e["auditID"].as_str().unwrap().to_string(), e["stage"].as_str().unwrap_or("").to_string()));
            }
        }
    }
    let rows = az.standin.accepted_rows(EVENTS_STREAM);
    assert_eq!(rows.len(), expected.len(), "one row per forwarded event, no more, no fewer");
    let uids: BTreeSet<&str> = rows.iter().map(|r| r["EventOriginalUid"].as_str().unwrap()).collect();
    assert_eq!(uids, expected.iter().map(|(id, _)| id.as_str()).collect());
    for r in &rows {
        // ASimAuditEventLogs has no EventSchema column: ASIM's parsers add it at query time.
        assert_eq!((r["EventSchemaVersion"].as_str(), r["EventVendor"].as_str()), (Some("0.1.2"), Some("Microsoft")), "{r}");
        assert_ne!(r["EventType"], "Read", "the WHERE kept writes only: {r}");
        assert!(r["TimeGenerated"].as_str().is_some_and(|t| t.starts_with("2026-")), "{r}");
    }
    // The alerts went their own way, as before.
    assert_eq!(az.delivered_ids().into_iter().collect::<BTreeSet<_>>(), ids(&reference_alerts()));
    let bad = az
        .crowsnest()
        .args([
            "validate",
            "--source",
            "stdin",
            "--sink",
            &az.sink_url("workload_identity", "&forward_events=asim&events_where=no_such_column%20%3D%201"),
        ])
        .output()
        .unwrap();
    assert!(!bad.status.success() && stderr(&bad).contains("events_where"), "{}", stderr(&bad));
}

#[test]
fn a_full_spool_holds_the_pipeline_back_instead_of_growing_and_nothing_is_lost() {
    let az = azure(|_| {});
    let expected = ids(&reference_alerts());
    az.standin.set_down(true);
    // Room for a few small batches only.
    let url = az.sink_url("workload_identity", "&max_request_bytes=4000&max_spool_bytes=3000");
    let mut child = KillOnDrop(az.crowsnest().args(["replay", "--no-progress", "--sink", &url]).stderr(Stdio::piped()).spawn().unwrap());
    let spool_bytes = || -> u64 {
        std::fs::read_dir(az.spool())
            .map(|d| d.filter_map(|e| e.ok()).filter_map(|e| e.metadata().ok()).map(|m| m.len()).sum())
            .unwrap_or(0)
    };
    wait_for("the spool to fill", Duration::from_secs(60), || (spool_bytes() >= 3000).then_some(()));
    std::thread::sleep(Duration::from_secs(3));
    // Full: the pipeline waits rather than spool more (one batch past the mark at most).
    assert!(spool_bytes() < 3000 + 4000, "the spool grew past its bound: {} bytes", spool_bytes());
    assert!(az.spooled_records() < expected.len(), "the replay is held back, not finished");
    assert!(child.0.try_wait().unwrap().is_none());
    az.standin.set_down(false);
    let status = wait_for("the replay to end", Duration::from_secs(120), || child.0.try_wait().unwrap());
    assert!(status.success());
    let mut err = String::new();
    child.0.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    assert!(err.contains("the spool is full"), "the wait is explained: {err}");
    assert_eq!(az.delivered_ids().into_iter().collect::<BTreeSet<_>>(), expected);
}

#[test]
fn the_sink_counts_requests_bytes_rows_and_tokens_in_its_metrics() {
    use crowsnest::sink::sentinel::{DeadLetterOut, Drain, SentinelSink};
    use crowsnest::sink::{MemorySink, Record, Sink};
    let az = azure(|_| {});
    let alerts = reference_alerts();
    let mut cfg = crowsnest::sink::sentinel::config::from_url(&format!(
        "{}&client_id=00000000-0000-0000-0000-000000000002&tenant_id=00000000-0000-0000-0000-000000000001&authority_host={}",
        az.sink_url("client_secret", "&max_request_bytes=8000"),
        az.standin.base_url()
    ))
    .unwrap();
    cfg.client_secret = Some(SECRET.to_string());
    cfg.ca_file = Some(az.ca.clone());
    let metrics = crowsnest::metrics::Metrics::new();
    let dead = MemorySink::default();
    let mut sink = SentinelSink::new(&cfg, None, DeadLetterOut::new(Box::new(dead.clone())), metrics.clone(), Drain::Complete).unwrap();
    az.standin.script(vec![Scripted::Status { status: 503, retry_after: Some("0".into()), error_code: None }]);
    let records: Vec<Record> = alerts.iter().map(|a| Record::new(a["id"].as_str().unwrap().to_string(), a)).collect();
    sink.send(&records).unwrap();
    sink.finish().unwrap();
    let text = metrics.render();
    let value = |line_start: &str| -> f64 {
        text.lines()
            .find(|l| l.starts_with(line_start))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
            .unwrap_or_else(|| panic!("no {line_start} in\n{text}"))
    };
    let s = format!("stream=\"{STREAM}\"");
    assert_eq!(value(&format!("crowsnest_sentinel_records_total{{{s}}}")), alerts.len() as f64);
    let requests = az.standin.requests();
    assert_eq!(
        value(&format!("crowsnest_sentinel_requests_total{{status=\"204\",{s}}}")),
        requests.iter().filter(|r| r.status == 204).count() as f64
    );
    assert_eq!(value(&format!("crowsnest_sentinel_requests_total{{status=\"503\",{s}}}")), 1.0);
    assert_eq!(value(&format!("crowsnest_sentinel_retries_total{{reason=\"server\",{s}}}")), 1.0);
    let (raw, gz) = (
        value(&format!("crowsnest_sentinel_bytes_total{{stage=\"raw\",{s}}}")),
        value(&format!("crowsnest_sentinel_bytes_total{{stage=\"gzip\",{s}}}")),
    );
    assert_eq!(raw as usize, requests.iter().filter(|r| r.status == 204).map(|r| r.raw_bytes).sum::<usize>());
    assert!(gz > 0.0 && gz < raw / 3.0, "gzip {gz} of {raw}");
    assert_eq!(value(&format!("crowsnest_sentinel_token_refreshes_total{{{s}}}")), 1.0);
    assert_eq!(value(&format!("crowsnest_sentinel_spool_bytes{{{s}}}")), 0.0);
    assert!(!text.contains(SECRET) && az.standin.issued_tokens().iter().all(|t| !text.contains(t.as_str())), "no secret in metrics");
}

#[test]
fn a_quiet_service_sends_an_alert_within_the_batch_timeout_and_stops_cleanly() {
    let az = azure(|_| {});
    let input = az.dir.path().join("audit.jsonl");
    std::fs::write(&input, "").unwrap();
    let config = format!(
        r#"
[source]
kind = "file"
paths = ["{}"]
follow = true

[sinks]
stdout = false

[sinks.sentinel]
endpoint = "https://{}"
dcr = "dcr-0123456789abcdef0123456789abcdef"
auth = "workload_identity"
batch_timeout = "1s"
spool_dir = "{}"

[metrics]
enabled = false
"#,
        input.display(),
        az.standin.addr(),
        az.spool().display()
    );
    std::fs::write(az.dir.path().join("crowsnest.toml"), config).unwrap();
    let mut child = KillOnDrop(az.crowsnest().args(["run", "-c", "crowsnest.toml"]).stderr(Stdio::null()).spawn().unwrap());
    std::thread::sleep(Duration::from_secs(1));
    // One privileged pod: one alert, and nothing else arrives to fill its batch.
    let line = envelope(&[privileged_pod_event("e0000000-0000-4000-8000-000000000001", "2026-11-01T08:00:00.000001Z")]);
    std::fs::OpenOptions::new().append(true).open(&input).unwrap().write_all(format!("{line}\n").as_bytes()).unwrap();
    let sent = Instant::now();
    wait_for("the alert in Sentinel", Duration::from_secs(20), || (!az.standin.accepted_rows(STREAM).is_empty()).then_some(()));
    assert!(sent.elapsed() < Duration::from_secs(10), "a lone alert waits batch_timeout, not for company");
    assert_eq!(az.standin.accepted_rows(STREAM)[0]["RuleId"], "CN-AUDIT-001");
    std::process::Command::new("kill").args(["-TERM", &child.0.id().to_string()]).status().unwrap();
    let status = wait_for("exit after SIGTERM", Duration::from_secs(30), || child.0.try_wait().unwrap());
    assert!(status.success());
    assert_eq!(az.spooled_records(), 0);
}

#[test]
fn an_alert_too_large_for_any_request_is_a_dead_letter_whole_and_the_rest_arrive() {
    use crowsnest::sink::sentinel::{DeadLetterOut, Drain, SentinelSink};
    use crowsnest::sink::{MemorySink, Record, Sink};
    let az = azure(|_| {});
    let mut alerts = reference_alerts();
    // One alert carries a field no request of 4,000 bytes can hold.
    alerts[0]["fields"]["request_uri"] = Value::String("/api/v1/namespaces/x/pods?".to_string() + &"a".repeat(5000));
    let mut cfg = crowsnest::sink::sentinel::config::from_url(&format!(
        "sentinel://{}?dcr=dcr-0123456789abcdef0123456789abcdef&stream={STREAM}&auth=workload_identity&tenant_id=00000000-0000-0000-0000-000000000001&client_id=00000000-0000-0000-0000-000000000002&authority_host={}&max_request_bytes=4000",
        az.standin.addr(),
        az.standin.base_url()
    ))
    .unwrap();
    cfg.federated_token_file = Some(az.token_file.clone());
    cfg.ca_file = Some(az.ca.clone());
    cfg.spool_dir = Some(az.spool());
    let dead = MemorySink::default();
    let mut sink =
        SentinelSink::new(&cfg, None, DeadLetterOut::new(Box::new(dead.clone())), crowsnest::metrics::Metrics::new(), Drain::Complete)
            .unwrap();
    let records: Vec<Record> = alerts.iter().map(|a| Record::new(a["id"].as_str().unwrap().to_string(), a)).collect();
    sink.send(&records).unwrap();
    sink.finish().unwrap();
    let letters: Vec<Value> = dead.records.lock().unwrap().iter().map(|d| serde_json::from_slice(d).unwrap()).collect();
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(letters[0]["reason"], "too_large");
    assert_eq!(letters[0]["record"]["AlertId"], alerts[0]["id"], "the row is kept whole, to be sent again");
    let mut rest = ids(&alerts);
    rest.remove(alerts[0]["id"].as_str().unwrap());
    assert_eq!(az.delivered_ids().into_iter().collect::<BTreeSet<_>>(), rest, "the others are not held up");
}

#[test]
fn a_stopping_service_drains_both_spools_within_one_drain_timeout() {
    use crowsnest::sink::sentinel::{DeadLetterOut, Drain, SentinelSink};
    use crowsnest::sink::{MemorySink, Record, Sink};
    let az = azure(|_| {});
    az.standin.set_down(true);
    let alerts = reference_alerts();
    let records: Vec<Record> = alerts.iter().map(|a| Record::new(a["id"].as_str().unwrap().to_string(), a)).collect();
    let drain = Drain::at_most(Duration::from_secs(2));
    let sink = |stream: &str, spool: &str| {
        let mut cfg = crowsnest::sink::sentinel::config::from_url(&format!(
            "sentinel://{}?dcr=dcr-0123456789abcdef0123456789abcdef&stream={stream}&auth=workload_identity&tenant_id=00000000-0000-0000-0000-000000000001&client_id=00000000-0000-0000-0000-000000000002&authority_host={}",
            az.standin.addr(),
            az.standin.base_url()
        ))
        .unwrap();
        cfg.federated_token_file = Some(az.token_file.clone());
        cfg.ca_file = Some(az.ca.clone());
        cfg.spool_dir = Some(az.dir.path().join(spool));
        let dead = DeadLetterOut::new(Box::new(MemorySink::default()));
        SentinelSink::new(&cfg, None, dead, crowsnest::metrics::Metrics::new(), drain.clone()).unwrap()
    };
    let (mut a, mut b) = (sink(STREAM, "spool-a"), sink(STREAM, "spool-b"));
    a.send(&records).unwrap();
    b.send(&records).unwrap();
    let t = Instant::now();
    a.finish().unwrap();
    b.finish().unwrap();
    let took = t.elapsed();
    assert!(took >= Duration::from_secs(2) && took < Duration::from_secs(4), "one 2 s drain for both, took {took:?}");
    // What did not drain stays spooled for the next start.
    for spool in ["spool-a", "spool-b"] {
        assert!(std::fs::read_dir(az.dir.path().join(spool)).unwrap().any(|e| e.unwrap().file_name().to_string_lossy().ends_with(".json")));
    }
}

/// The Kafka promise with Sentinel: offsets are committed once the alerts derived from them are
/// in the spool (Azure may be away for hours; the topic must not be held back), and a kill
/// during the outage loses none of them: the restart reads nothing again and sends the spool.
#[test]
fn from_kafka_offsets_are_committed_once_alerts_are_spooled_and_a_kill_during_an_outage_loses_none() {
    use crate::broker::{Broker, FETCH_WAIT_MS};
    let az = azure(|_| {});
    let expected = ids(&reference_alerts());
    let mut messages: Vec<Vec<u8>> = sample_text().lines().map(|l| l.as_bytes().to_vec()).collect();
    let sample_messages = messages.len();
    // Quiet traffic four hours on, then six: the watermark passes every window of the sample
    // and of the first quiet hour, so their offsets may be committed (the last hour's windows
    // stay open, and hold theirs back).
    for (start, out) in [("2026-11-01T12:00:00Z", "later.jsonl"), ("2026-11-01T18:00:00Z", "latest.jsonl")] {
        let gen = ["gen", "--events", "4000", "--seed", "5", "--no-attacks", "--no-insights", "--start", start, "--out", out];
        assert!(run(&gen, az.dir.path()).status.success());
        messages.extend(std::fs::read_to_string(az.dir.path().join(out)).unwrap().lines().map(|l| l.as_bytes().to_vec()));
    }
    let broker = Broker::in_memory(az.dir.path());
    broker.create_topic("audit", 3);
    broker.produce("audit", 3, &messages);
    std::fs::write(az.dir.path().join("crowsnest.toml"), "[metrics]\nenabled = false\n[rules]\nidle_timeout = \"5s\"\n").unwrap();
    let source =
        format!("kafka://{}/audit?group=g-sentinel&start=earliest&commit_interval=1s&fetch.wait.max.ms={FETCH_WAIT_MS}", broker.addr());
    let sink = az.sink_url("workload_identity", "&max_request_bytes=8000");
    let start = || {
        KillOnDrop(
            az.crowsnest()
                .args(["run", "-c", "crowsnest.toml", "--source", &source, "--sink", &sink])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        )
    };
    az.standin.set_down(true);
    let mut first = start();
    wait_for("every alert in the spool", Duration::from_secs(120), || (az.spooled_records() >= expected.len()).then_some(()));
    // Partition p holds messages i with i % 3 == p: its sample part ends at offset ⌈(n - p) / 3⌉.
    let sample_end = |p: usize| ((sample_messages + 2 - p) / 3) as i64;
    let sample_committed = || (0..3).all(|p| broker.committed("g-sentinel", "audit", p as i32).unwrap_or(0) >= sample_end(p));
    wait_for("the sample's offsets committed while Azure is away", Duration::from_secs(60), || sample_committed().then_some(()));
    assert!(az.delivered_ids().is_empty());
    first.0.kill().unwrap(); // SIGKILL during the outage
    first.0.wait().unwrap();
    az.standin.set_down(false);
    let _second = start();
    // The sample is not read again (its offsets are committed): its alerts come from the spool.
    wait_for("every alert in Sentinel", Duration::from_secs(120), || {
        expected.is_subset(&az.delivered_ids().into_iter().collect()).then_some(())
    });
}

/// Kills the child if the test fails first.
struct KillOnDrop(Child);
impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// An HTTP CONNECT proxy (what HTTPS_PROXY points at), counting the tunnels it opened.
struct ConnectProxy {
    addr: std::net::SocketAddr,
    tunnels: Arc<AtomicUsize>,
}

impl ConnectProxy {
    fn start() -> ConnectProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let tunnels = Arc::new(AtomicUsize::new(0));
        let count = tunnels.clone();
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let count = count.clone();
                std::thread::spawn(move || {
                    let _ = tunnel(client, &count);
                });
            }
        });
        ConnectProxy { addr, tunnels }
    }
}

fn tunnel(client: TcpStream, count: &AtomicUsize) -> std::io::Result<()> {
    let mut reader = BufReader::new(client.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let target = line.strip_prefix("CONNECT ").and_then(|r| r.split_whitespace().next()).unwrap_or_default().to_string();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 || h == "\r\n" {
            break;
        }
    }
    let upstream = TcpStream::connect(&target)?;
    count.fetch_add(1, Ordering::Relaxed);
    (&client).write_all(b"HTTP/1.1 200 Connection Established\r\n\r\n")?;
    let (mut up_r, mut up_w) = (upstream.try_clone()?, upstream);
    let mut client_w = client;
    let pending = reader.buffer().to_vec();
    up_w.write_all(&pending)?;
    let mut client_r = reader.into_inner();
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut client_r, &mut up_w);
    });
    let mut buf = [0u8; 16384];
    loop {
        let n = up_r.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        client_w.write_all(&buf[..n])?;
    }
}
