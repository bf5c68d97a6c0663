//! `crowsnest serve-sql` with a real client: Python's ADBC Flight SQL driver (the Go client
//! notebooks and Grafana use), from the virtualenv `.ci/run` makes (`CROWSNEST_PYTHON`). The
//! client is `tests/python/flight_sql_client.py`; these tests decide what is right.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};

use crate::common::{bin, repo_root, run};

/// The Python with adbc-driver-flightsql and pyarrow.
fn python() -> PathBuf {
    if let Ok(p) = std::env::var("CROWSNEST_PYTHON") {
        return PathBuf::from(p);
    }
    let venv = PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache/crowsnest/venv/bin/python");
    assert!(
        venv.exists(),
        "the Flight SQL tests need Python with adbc-driver-flightsql and pyarrow: run .ci/run once, or set CROWSNEST_PYTHON"
    );
    venv
}

/// `crowsnest serve-sql ARGS` on a free loopback port; its log is kept for the test to read.
struct SqlServer {
    child: Child,
    uri: String,
    log: Arc<Mutex<String>>,
}

impl SqlServer {
    fn start(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> SqlServer {
        let mut child = bin()
            .arg("serve-sql")
            .args(args)
            .envs(env.iter().copied())
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("crowsnest runs");
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        let keep = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(rest) = line.split("serving Flight SQL on ").nth(1) {
                    let _ = tx.send(rest.split_whitespace().next().unwrap_or_default().to_string());
                }
                keep.lock().unwrap().push_str(&(line + "\n"));
            }
        });
        let uri = rx.recv_timeout(std::time::Duration::from_secs(60)).unwrap_or_else(|_| {
            let _ = child.kill();
            panic!("serve-sql did not start:\n{}", log.lock().unwrap())
        });
        SqlServer { child, uri, log }
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Runs a client plan (`connect` fields merged with `steps`) and returns one answer per step.
    fn client(&self, connect: Value, steps: Vec<Value>) -> Vec<Value> {
        let mut plan = connect;
        plan["uri"] = json!(plan.get("uri").cloned().unwrap_or_else(|| json!(self.uri)));
        plan["steps"] = json!(steps);
        client(&plan)
    }
}

impl Drop for SqlServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn client(plan: &Value) -> Vec<Value> {
    let mut child = Command::new(python())
        .arg(repo_root().join("tests/python/flight_sql_client.py"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python runs");
    child.stdin.take().unwrap().write_all(plan.to_string().as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "the Python client failed:\n{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

fn assert_ok(answer: &Value) -> &Value {
    assert_eq!(answer["ok"], true, "{answer}");
    answer
}

fn assert_refused(answer: &Value, code: &str) {
    assert_eq!(answer["ok"], false, "expected a refusal, got {answer}");
    let msg = answer["message"].as_str().unwrap_or_default();
    assert!(msg.contains(code), "expected {code} in {msg}");
}

const TOKEN_ALICE: &str = "alice-0123456789abcdef0123456789";
const TOKEN_BOB: &str = "bob-fedcba9876543210fedcba98765";

/// The bundled sample replayed into a lake in `dir/lake`, and a token file.
fn lake_and_tokens(dir: &Path) -> String {
    let lake = format!("file://{}/lake", dir.display());
    let out = run(&["replay", "--lake", &lake, "--no-progress", "--no-stdout"], dir);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    std::fs::write(dir.join("tokens"), format!("# hunters\nalice:{TOKEN_ALICE}\nbob:{TOKEN_BOB}\n")).unwrap();
    lake
}

#[test]
fn python_adbc_reads_hunts_with_a_token_or_a_password_and_gets_the_rows_crowsnest_hunt_gives() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let lake = lake_and_tokens(dir);
    let server = SqlServer::start(dir, &["--lake", &lake, "--listen", "127.0.0.1:0", "--tokens", "tokens"], &[]);

    // What the CLI gives for the same hunt and query, as Parquet.
    for (name, args) in [
        ("exec.parquet", vec!["hunt", "exec-sessions", "--lake", &lake, "--format", "parquet"]),
        ("rbac.parquet", vec!["hunt", "rbac-changes", "--lake", &lake, "--format", "parquet"]),
        (
            "alerts.parquet",
            vec![
                "hunt",
                "SELECT rule_id, severity, count(*) AS n FROM alerts GROUP BY 1, 2 ORDER BY 1, 2",
                "--lake",
                &lake,
                "--format",
                "parquet",
            ],
        ),
    ] {
        let out = run(&args, dir);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        std::fs::write(dir.join(name), &out.stdout).unwrap();
    }
    let p = |f: &str| dir.join(f).display().to_string();
    let steps = || {
        vec![
            json!({"sql": "SELECT * FROM exec_sessions()", "same_as_parquet": p("exec.parquet")}),
            json!({"sql": "SELECT * FROM rbac_changes()", "same_as_parquet": p("rbac.parquet")}),
            json!({"sql": "SELECT rule_id, severity, count(*) AS n FROM alerts GROUP BY 1, 2 ORDER BY 1, 2", "same_as_parquet": p("alerts.parquet")}),
            // A prepared statement with a bound parameter (ADBC binds through DoPut).
            json!({"sql": "SELECT count(*) AS n FROM kube_audit WHERE user_name = $1", "params": ["mallory@contoso.com"], "first_rows": 1}),
            json!({"sql": "SELECT * FROM exec_sessions('mallory@contoso.com', 'default')", "first_rows": 5}),
            json!({"objects": true}),
            json!({"table_schema": "kube_audit"}),
            // The plain statement path (Grafana's), with the token or the session token.
            json!({"statement": "SELECT * FROM exec_sessions()", "same_as_parquet": p("exec.parquet")}),
        ]
    };
    for connect in [json!({"token": TOKEN_ALICE}), json!({"user": "bob", "password": TOKEN_BOB})] {
        let answers = server.client(connect.clone(), steps());
        assert_eq!(answers.len(), 8, "{answers:?}");
        for a in &answers[..3] {
            assert_ok(a);
            assert_eq!(a["same"], true, "{connect}: the rows differ from crowsnest hunt's: {a}");
            assert!(a["rows"].as_u64().unwrap() > 0, "{a}");
        }
        let n = assert_ok(&answers[3])["first"][0]["n"].as_i64().unwrap();
        assert!(n > 0, "mallory's requests: {}", answers[3]);
        let exec = &assert_ok(&answers[4])["first"];
        assert_eq!(exec.as_array().unwrap().len(), 1, "{exec}");
        assert_eq!(exec[0]["command"], "nsenter -t 1 -m sh");
        let tables: Vec<&str> = assert_ok(&answers[5])["tables"].as_array().unwrap().iter().map(|t| t.as_str().unwrap()).collect();
        for t in ["crowsnest.public.kube_audit", "crowsnest.public.alerts", "crowsnest.public.container_log"] {
            assert!(tables.contains(&t), "{t} not listed in {tables:?}");
        }
        assert!(!tables.iter().any(|t| t.contains("__lake_")), "plumbing listed: {tables:?}");
        let columns = &assert_ok(&answers[6])["columns"];
        assert_eq!(columns[0], "event_time", "{columns}");
        if connect.get("token").is_some() {
            assert_eq!(assert_ok(&answers[7])["same"], true, "{}", answers[7]);
        } else {
            // pyarrow's client is given no token here (the password is ADBC's): refused.
            assert_refused(&answers[7], "nauthenticated");
        }
    }

    // Files added to the lake while the server runs show in the next query (no listing cache).
    let count = |server: &SqlServer| {
        let a = server.client(json!({"token": TOKEN_ALICE}), vec![json!({"sql": "SELECT count(*) AS n FROM kube_audit", "first_rows": 1})]);
        assert_ok(&a[0])["first"][0]["n"].as_i64().unwrap()
    };
    let before = count(&server);
    let gen = run(&["gen", "--events", "200", "--seed", "3", "--start", "2026-11-03T08:00:00Z", "--out", "more.jsonl"], dir);
    assert!(gen.status.success(), "{}", String::from_utf8_lossy(&gen.stderr));
    let more = run(&["replay", "more.jsonl", "--lake", &lake, "--no-progress", "--no-stdout"], dir);
    assert!(more.status.success(), "{}", String::from_utf8_lossy(&more.stderr));
    assert_eq!(count(&server), before + 200, "the new file's rows are not served");

    // No token, a wrong token, a wrong password: refused, and the server serves on.
    let refused = server.client(json!({}), vec![json!({"sql": "SELECT 1"})]);
    assert_refused(&refused[0], "UNAUTHENTICATED");
    let refused = server.client(json!({"token": "not-a-token-at-all-0000000"}), vec![json!({"sql": "SELECT 1"})]);
    assert_refused(&refused[0], "UNAUTHENTICATED");
    let wrong = server.client(json!({"user": "alice", "password": TOKEN_BOB}), vec![json!({"sql": "SELECT 1"})]);
    let failure = wrong[0].get("connect").unwrap_or(&wrong[0]);
    assert_refused(failure, "UNAUTHENTICATED");
    assert_ok(&server.client(json!({"token": TOKEN_BOB}), vec![json!({"sql": "SELECT 1"})])[0]);

    // Every query is logged with its user and a hash of its text; a token never is.
    let log = server.log();
    assert!(log.contains("user=alice sql_sha256="), "{log}");
    assert!(log.contains("user=bob sql_sha256="), "{log}");
    assert!(log.contains("refused a call from"), "{log}");
    for secret in [TOKEN_ALICE, TOKEN_BOB, "not-a-token-at-all"] {
        assert!(!log.contains(secret), "a token reached the log:\n{log}");
    }
    assert!(!log.contains("cns_"), "a session token reached the log:\n{log}");
}

#[test]
fn every_kind_of_write_is_refused_and_the_server_serves_on() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let server = SqlServer::start(dir, &["--listen", "127.0.0.1:0"], &[]);
    let writes = [
        "CREATE TABLE stolen AS SELECT * FROM kube_audit",
        "CREATE VIEW v AS SELECT 1",
        "CREATE EXTERNAL TABLE passwd (line VARCHAR) STORED AS CSV LOCATION '/etc/passwd'",
        "INSERT INTO kube_audit SELECT * FROM kube_audit",
        "DELETE FROM alerts",
        "UPDATE alerts SET severity = 'low'",
        "COPY (SELECT * FROM kube_audit) TO '/tmp/crowsnest-exfil.parquet'",
        "DROP VIEW kube_audit",
        "SET datafusion.execution.batch_size = 1",
    ];
    let mut steps: Vec<Value> = writes.iter().map(|w| json!({"sql": w})).collect();
    steps.push(json!({"ingest": "injected"}));
    steps.push(json!({"sql": "SELECT count(*) AS n FROM kube_audit", "first_rows": 1}));
    let answers = server.client(json!({}), steps);
    for (w, a) in writes.iter().zip(&answers) {
        assert_eq!(a["ok"], false, "{w} was allowed");
        let msg = a["message"].as_str().unwrap();
        assert!(msg.contains("read-only") || msg.contains("not supported"), "{w}: {msg}");
    }
    let ingest = &answers[writes.len()];
    assert_eq!(ingest["ok"], false, "ingestion was allowed: {ingest}");
    assert!(ingest["message"].as_str().unwrap().contains("read-only"), "{ingest}");
    assert!(assert_ok(&answers[writes.len() + 1])["first"][0]["n"].as_i64().unwrap() > 0);
    assert!(!Path::new("/tmp/crowsnest-exfil.parquet").exists());
}

#[test]
fn a_query_over_its_memory_or_time_limit_fails_alone_and_the_server_serves_on() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let server = SqlServer::start(dir, &["--listen", "127.0.0.1:0", "--memory-limit-mb", "1", "--query-timeout", "3s"], &[]);
    let answers = server.client(
        json!({}),
        vec![
            // A sort of every request body: megabytes, with nowhere to spill.
            json!({"sql": "SELECT request_object, response_object, request_uri FROM kube_audit ORDER BY request_uri, request_object"}),
            json!({"sql": "SELECT count(*) AS n FROM kube_audit", "first_rows": 1}),
            // A hundred trillion rows to sum: past the 3 s limit.
            json!({"sql": "SELECT sum(value % 7) FROM range(0, 100000000000000)"}),
            json!({"sql": "SELECT count(*) AS n FROM alerts", "first_rows": 1}),
        ],
    );
    assert_refused(&answers[0], "memory limit");
    // ADBC files RESOURCE_EXHAUSTED under its INTERNAL class and names the gRPC code after.
    assert_refused(&answers[0], "ResourceExhausted");
    assert!(assert_ok(&answers[1])["first"][0]["n"].as_i64().unwrap() > 0);
    assert_refused(&answers[2], "time limit");
    assert_ok(&answers[3]);
    let log = server.log();
    assert!(log.contains("outcome=ResourceExhausted"), "{log}");
    assert!(log.contains("outcome=DeadlineExceeded"), "{log}");
}

#[test]
fn tls_with_a_test_certificate_and_refusals_of_unsafe_listening() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let pki = crowsnest::standin::pki::test_pki();
    std::fs::write(dir.join("ca.pem"), &pki.ca_pem).unwrap();
    std::fs::write(dir.join("cert.pem"), &pki.cert_pem).unwrap();
    std::fs::write(dir.join("key.pem"), &pki.key_pem).unwrap();
    let server = SqlServer::start(
        dir,
        &["--listen", "127.0.0.1:0", "--tls-cert", "cert.pem", "--tls-key", "key.pem"],
        &[("CROWSNEST_SQL_TOKEN", TOKEN_ALICE)],
    );
    assert!(server.uri.starts_with("grpc+tls://127.0.0.1:"), "{}", server.uri);
    let ca = dir.join("ca.pem").display().to_string();
    let ok = server.client(json!({"token": TOKEN_ALICE, "tls_root_file": ca}), vec![json!({"sql": "SELECT * FROM exec_sessions()"})]);
    assert_eq!(assert_ok(&ok[0])["rows"], 3);
    // A client that does not trust the test CA, and one speaking clear text, get nothing.
    let untrusted = server.client(json!({"token": TOKEN_ALICE}), vec![json!({"sql": "SELECT 1"})]);
    assert_eq!(untrusted[0]["ok"], false, "{}", untrusted[0]);
    let plain =
        server.client(json!({"token": TOKEN_ALICE, "uri": server.uri.replace("grpc+tls", "grpc")}), vec![json!({"sql": "SELECT 1"})]);
    assert_eq!(plain[0]["ok"], false, "{}", plain[0]);

    // Beyond loopback: tokens, then TLS (or an explicit --allow-plaintext) are required.
    let out = run(&["serve-sql", "--listen", "0.0.0.0:0"], dir);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("needs tokens"), "{}", String::from_utf8_lossy(&out.stderr));
    let out = bin().args(["serve-sql", "--listen", "0.0.0.0:0"]).env("CROWSNEST_SQL_TOKEN", TOKEN_ALICE).current_dir(dir).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("--tls-cert"), "{}", String::from_utf8_lossy(&out.stderr));
    let out = bin().args(["serve-sql"]).env("CROWSNEST_SQL_TOKEN", "short").current_dir(dir).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("at least 16"), "{}", String::from_utf8_lossy(&out.stderr));
    // A key that is not the certificate's is named before any client comes.
    let other = crowsnest::standin::pki::test_pki();
    std::fs::write(dir.join("other-key.pem"), &other.key_pem).unwrap();
    let out = run(&["serve-sql", "--tls-cert", "cert.pem", "--tls-key", "other-key.pem"], dir);
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not the key of the certificate"), "{}", String::from_utf8_lossy(&out.stderr));
    // `validate` checks [hunt] as run would: the lake it serves, the listening rules, TLS.
    std::fs::write(dir.join("in.jsonl"), "").unwrap();
    let config = |hunt: &str| {
        format!(
            "[source]\nkind = \"file\"\npaths = [\"in.jsonl\"]\n\n[sinks.lake]\nurl = \"file://{}/lake\"\n\n[hunt]\n{hunt}\n",
            dir.display()
        )
    };
    for (hunt, want) in [
        ("listen = \"127.0.0.1:50051\"\ntls_cert = \"cert.pem\"\ntls_key = \"key.pem\"", "[hunt] Flight SQL on grpc+tls://127.0.0.1:50051"),
        ("listen = \"0.0.0.0:50051\"", "needs tokens"),
        ("tls_cert = \"cert.pem\"\ntls_key = \"other-key.pem\"", "is not the key"),
    ] {
        std::fs::write(dir.join("c.toml"), config(hunt)).unwrap();
        let out = run(&["validate", "-c", "c.toml"], dir);
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(text.contains(want), "{hunt}: {text}");
    }
}

/// `$__timeFilter(col)` as the Grafana Flight SQL data source expands it (grafana-plugin-sdk-go's
/// sqlutil default: RFC 3339 bounds, both inclusive).
fn grafana_macros(sql: &str, from: &str, to: &str) -> String {
    let mut out = String::new();
    let mut rest = sql;
    while let Some(i) = rest.find("$__timeFilter(") {
        out.push_str(&rest[..i]);
        let after = &rest[i + "$__timeFilter(".len()..];
        let end = after.find(')').expect("a closed macro");
        let col = after[..end].trim();
        out.push_str(&format!("{col} >= '{from}' AND {col} <= '{to}'"));
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    assert!(!out.contains("$__"), "a Grafana macro this test does not expand: {out}");
    out
}

#[test]
fn the_hunting_dashboard_queries_run_against_the_endpoint() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let lake = lake_and_tokens(dir);
    let server = SqlServer::start(dir, &["--lake", &lake, "--listen", "127.0.0.1:0", "--tokens", "tokens"], &[]);
    let dash: Value = serde_json::from_str(&std::fs::read_to_string(repo_root().join("dashboards/hunting.json")).unwrap()).unwrap();
    let provisioned = std::fs::read_to_string(repo_root().join("dashboards/grafana-datasource.yml")).unwrap();
    let mut queries = Vec::new();
    for panel in dash["panels"].as_array().unwrap() {
        assert_eq!(panel["datasource"]["type"], "influxdata-flightsql-datasource");
        let uid = panel["datasource"]["uid"].as_str().unwrap();
        assert!(provisioned.contains(&format!("uid: {uid}")), "panel {} uses data source {uid}, which is not provisioned", panel["title"]);
        for t in panel["targets"].as_array().unwrap() {
            let format = t["format"].as_str().unwrap();
            assert!(["table", "time_series"].contains(&format), "{format}");
            // The sample's events are on 2026-11-01, 08:00 to about 08:30.
            let sql = grafana_macros(t["queryText"].as_str().unwrap(), "2026-11-01T00:00:00Z", "2026-11-02T00:00:00Z");
            queries.push((panel["title"].as_str().unwrap().to_string(), format.to_string(), sql));
        }
    }
    assert!(queries.len() >= 6, "{} queries", queries.len());
    // As Grafana's data source sends them: plain statements (GetFlightInfo, then DoGet).
    let steps = queries.iter().map(|(_, _, sql)| json!({"statement": sql})).collect();
    let answers = server.client(json!({"token": TOKEN_ALICE}), steps);
    for ((title, format, sql), a) in queries.iter().zip(&answers) {
        assert_eq!(a["ok"], true, "panel {title:?} fails: {a}\n{sql}");
        assert!(a["rows"].as_u64().unwrap() > 0, "panel {title:?} is empty over the sample:\n{sql}");
        if format == "time_series" {
            // The data source turns a result into series by its `time` column.
            assert!(a["columns"].as_array().unwrap().contains(&json!("time")), "panel {title:?} has no time column: {a}");
        }
    }
}

#[test]
fn run_serves_the_lake_it_writes_when_hunt_listen_is_set() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let port = crate::common::free_port();
    let sample = repo_root().join("pipeline/samples/aks-sample.jsonl.gz");
    let config = format!(
        "[source]\nkind = \"file\"\npaths = [\"{}\"]\nfollow = true\n\n[sinks]\nstdout = false\nfile = \"alerts.jsonl\"\n\n[sinks.lake]\nurl = \"file://{}/lake\"\nroll_age = \"1s\"\n\n[metrics]\nenabled = false\n\n[hunt]\nlisten = \"127.0.0.1:{port}\"\n",
        sample.display(),
        dir.display()
    );
    let mut running = crate::common::Running::start_with_env(dir, &config, &[], &[("CROWSNEST_SQL_TOKEN", TOKEN_ALICE)]);
    let plan = json!({"uri": format!("grpc://127.0.0.1:{port}"), "token": TOKEN_ALICE, "steps": [
        {"sql": "SELECT count(*) AS n FROM kube_audit", "first_rows": 1},
        {"sql": "SELECT count(*) AS n FROM alerts", "first_rows": 1},
    ]});
    // The files close a second after their first row; until then the tables are empty.
    let answers = crate::common::wait_for("the run's lake over Flight SQL", std::time::Duration::from_secs(90), || {
        running.assert_running(dir);
        let a = client(&plan);
        let n = |i: usize| a.get(i).and_then(|x| x["first"][0]["n"].as_i64()).unwrap_or(0);
        // Every event of the sample is in (the 3,000 audit events are rows of kube_audit).
        (n(0) >= 3000 && n(1) > 0).then_some(a)
    });
    assert_ok(&answers[1]);
    let refused = client(&json!({"uri": format!("grpc://127.0.0.1:{port}"), "steps": [{"sql": "SELECT 1"}]}));
    assert_refused(&refused[0], "UNAUTHENTICATED");
}
