//! The lake and hunts, through the real binary: replays keep one copy of every row (on disk and
//! in Azurite), a Kafka pipeline killed mid-run loses and repeats nothing, secrets never reach a
//! Parquet file, hunts are read-only, the shell reads statements, compaction and pruning are
//! idempotent, and backtests over the lake match backtests over files.

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::Duration;

use serde_json::{json, Value};

use crate::broker::{Broker, FETCH_WAIT_MS};
use crate::common::{bin, envelope, file_lines, run, stdout_alerts, wait_for, Running};
use crowsnest::standin::azurite::{Azurite, ACCOUNT, KEY};

fn ok(out: &Output) -> String {
    assert!(out.status.success(), "crowsnest failed:\n{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs a hunt (`args` after `hunt`) and returns its rows as JSON objects.
fn hunt_rows(args: &[&str], dir: &Path, env: &[(&str, &str)]) -> Vec<Value> {
    let out = bin().arg("hunt").args(args).args(["--format", "ndjson"]).envs(env.iter().copied()).current_dir(dir).output().unwrap();
    ok(&out).lines().map(|l| serde_json::from_str(l).expect("a JSON row")).collect()
}

fn one(rows: &[Value], col: &str) -> i64 {
    rows[0][col].as_i64().unwrap_or_else(|| panic!("{col} in {rows:?}"))
}

/// Rows, distinct (audit id, stage) pairs, of `kube_audit`; rows and distinct ids of `alerts`.
fn counts(lake: &str, dir: &Path, env: &[(&str, &str)]) -> (i64, i64, i64, i64) {
    let a = hunt_rows(&["SELECT count(*) AS n, count(DISTINCT audit_id || '/' || stage) AS d FROM kube_audit", "--lake", lake], dir, env);
    let b = hunt_rows(&["SELECT count(*) AS n, count(DISTINCT id) AS d FROM alerts", "--lake", lake], dir, env);
    (one(&a, "n"), one(&a, "d"), one(&b, "n"), one(&b, "d"))
}

fn parquet_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else { return out };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(parquet_files(&p));
        } else if p.extension().is_some_and(|x| x == "parquet") {
            out.push(p);
        }
    }
    out.sort();
    out
}

#[test]
fn replaying_the_sample_twice_into_the_lake_keeps_one_copy_of_every_row() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let lake = format!("file://{}/lake", dir.display());
    let first = run(&["replay", "--lake", &lake, "--no-progress"], dir);
    let alerts = stdout_alerts(&first);
    assert!(String::from_utf8_lossy(&first.stderr).contains("rows in"), "{}", String::from_utf8_lossy(&first.stderr));
    let files = parquet_files(&dir.join("lake"));
    assert!(files.iter().any(|f| f.to_string_lossy().contains("table=kube_audit/date=2026-11-01/hour=08/f-")), "{files:?}");
    assert!(files.iter().any(|f| f.to_string_lossy().contains("table=container_log/")), "{files:?}");
    let before = counts(&lake, dir, &[]);
    // The sample's 3,000 audit events; one exec session logs two stages under one audit id.
    assert_eq!((before.0, before.1), (3000, 3000));
    assert_eq!((before.2, before.3), (alerts.len() as i64, alerts.len() as i64));

    let again = run(&["replay", "--lake", &lake, "--no-progress", "--no-stdout"], dir);
    assert!(String::from_utf8_lossy(&again.stderr).contains(&format!("({} files already there", files.len())));
    assert_eq!(parquet_files(&dir.join("lake")), files);
    assert_eq!(counts(&lake, dir, &[]), before);
}

#[test]
fn secret_values_never_reach_a_parquet_file() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let t = "2026-11-02T10:00:00.000000Z";
    let secret = json!({"kind": "Secret", "apiVersion": "v1", "metadata": {"name": "db", "namespace": "payments"},
        "data": {"password": "aHVudGVyMi1zdXBlcnNlY3JldA=="}, "stringData": {"token": "plain-sup3r-secret-token"}, "type": "Opaque"});
    let event = json!({"kind": "Event", "apiVersion": "audit.k8s.io/v1", "level": "RequestResponse", "auditID": "5ec7e7a0-0000-4000-8000-000000000001",
        "stage": "ResponseComplete", "requestURI": "/api/v1/namespaces/payments/secrets", "verb": "create",
        "user": {"username": "alice@contoso.com", "groups": ["system:authenticated"]}, "sourceIPs": ["203.0.113.5"],
        "objectRef": {"resource": "secrets", "namespace": "payments", "name": "db", "apiVersion": "v1"},
        "responseStatus": {"metadata": {}, "code": 201}, "requestObject": secret, "responseObject": secret,
        "requestReceivedTimestamp": t, "stageTimestamp": t});
    std::fs::write(dir.join("in.jsonl"), envelope(&[event]) + "\n").unwrap();
    let lake = format!("file://{}/lake", dir.display());
    ok(&run(&["replay", "in.jsonl", "--lake", &lake, "--no-progress", "--no-stdout"], dir));
    let files = parquet_files(&dir.join("lake"));
    assert!(!files.is_empty());
    // Every column of every row of every file, decompressed.
    let mut seen = 0;
    for f in &files {
        let reader = datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(f).unwrap())
            .unwrap()
            .build()
            .unwrap();
        for batch in reader {
            for row in crowsnest::sink::json_rows(&batch.unwrap()).unwrap() {
                let row = String::from_utf8(row).unwrap();
                for value in ["aHVudGVyMi1zdXBlcnNlY3JldA==", "hunter2-supersecret", "plain-sup3r-secret-token"] {
                    assert!(!row.contains(value), "{} holds a secret value: {row}", f.display());
                }
                seen += 1;
            }
        }
    }
    // The audit row, and the alert the secret's creation raised.
    assert!(seen >= 1);
    // The event is there, its secret's name and keys too: only the values are gone.
    let rows = hunt_rows(&["SELECT name, request_object FROM kube_audit", "--lake", &lake], dir, &[]);
    assert_eq!(rows[0]["name"], "db");
    assert!(rows[0]["request_object"].as_str().unwrap().contains("password"), "{rows:?}");
}

#[test]
fn hunts_are_read_only() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    for sql in [
        "CREATE TABLE x AS SELECT 1",
        "CREATE EXTERNAL TABLE x STORED AS PARQUET LOCATION '/tmp/x'",
        "CREATE VIEW v AS SELECT 1",
        "DROP VIEW kube_audit",
        "INSERT INTO kube_audit SELECT * FROM kube_audit",
        "DELETE FROM kube_audit",
        "COPY (SELECT 1) TO 'copied.csv'",
        "SET datafusion.execution.target_partitions = 1",
        "SELECT * FROM 'escape.parquet'",
    ] {
        let out = run(&["hunt", sql], dir);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{sql} was allowed");
        assert!(err.contains("read-only") || sql.contains("escape.parquet"), "{sql}: {err}");
    }
    assert!(std::fs::read_dir(dir).unwrap().next().is_none(), "a hunt wrote a file");
}

#[test]
fn hunts_print_tables_csv_json_and_name_their_mistakes() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let sql = "SELECT verb, count(*) AS n FROM kube_audit WHERE verb IN ('create', 'get') GROUP BY verb ORDER BY verb";
    let csv = ok(&run(&["hunt", sql, "--format", "csv"], dir));
    assert!(csv.starts_with("verb,n\ncreate,"), "{csv}");
    let json: Value = serde_json::from_str(&ok(&run(&["hunt", sql, "--format", "json"], dir))).unwrap();
    assert_eq!(json.as_array().unwrap().len(), 2);
    let table = ok(&run(&["hunt", sql, "--format", "table"], dir));
    assert!(table.contains("| verb") && table.contains("| create"), "{table}");
    let limited = run(&["hunt", "SELECT audit_id FROM kube_audit", "--max-rows", "5", "--format", "csv"], dir);
    assert_eq!(ok(&limited).lines().count(), 6);
    assert!(String::from_utf8_lossy(&limited.stderr).contains("--max-rows"));
    // The time range applies to every table (the sample's first minute is its busiest).
    let rows = hunt_rows(
        &["SELECT count(*) AS n FROM kube_audit", "--since", "2026-11-01T08:01:00Z", "--until", "2026-11-01T08:10:00Z"],
        dir,
        &[],
    );
    assert!(one(&rows, "n") > 0 && one(&rows, "n") < 3000, "{rows:?}");
    let listed = ok(&run(&["hunt", "--list"], dir));
    assert!(listed.contains("actor-timeline") && listed.contains("--param user="), "{listed}");
    let e = run(&["hunt", "actor-timelin"], dir);
    assert!(String::from_utf8_lossy(&e.stderr).contains("no hunt named"), "{}", String::from_utf8_lossy(&e.stderr));
    let e = run(&["hunt", "actor-timeline"], dir);
    assert!(String::from_utf8_lossy(&e.stderr).contains("--param user="), "{}", String::from_utf8_lossy(&e.stderr));
    let e = run(&["hunt", "SELECT nope FROM kube_audit"], dir);
    assert!(!e.status.success() && String::from_utf8_lossy(&e.stderr).contains("nope"));
}

#[test]
fn the_shell_runs_statements_fed_on_stdin() {
    let tmp = tempfile::tempdir().unwrap();
    let mut child =
        bin().args(["hunt"]).current_dir(tmp.path()).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let script = "\\d\n\\d alerts\n\\format csv\nSELECT count(*) AS n\n  FROM kube_audit\n  WHERE verb = 'create';\n\\timing\nSELECT 'two' AS second;\n\\q\nSELECT 'never' AS x;\n";
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), script.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = ok(&out);
    assert!(stdout.contains("kube_audit\n") && stdout.contains("container_log\n"), "{stdout}");
    assert!(stdout.contains("rule_id") && stdout.contains("first_seen"), "\\d alerts: {stdout}");
    assert!(stdout.contains("n\n") && stdout.contains("second\ntwo\n"), "{stdout}");
    assert!(!stdout.contains("never"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.matches("row(s)").count(), 1, "timing switched off after the first: {stderr}");
}

/// Every hunt of the library returns, over the bundled sample, what its own tests say.
#[test]
fn the_hunt_library_returns_the_rows_its_tests_expect() {
    use crowsnest::hunt::{library::Library, open, Input, TimeRange};
    let lib = Library::bundled().unwrap();
    let set = crowsnest::rules::RuleSet::bundled().unwrap();
    let session = open(&Input::Sample, TimeRange::default(), std::sync::Arc::new(set.lists.clone())).unwrap();
    session.register_hunts(&lib).unwrap();
    let mut failures = Vec::new();
    let mut cases = 0;
    for h in &lib.hunts {
        for (i, t) in h.tests.iter().enumerate() {
            cases += 1;
            let sql = h.render(&t.params).unwrap();
            let result = match session.query(&sql, None, &mut |_| {}) {
                Ok(r) => r,
                Err(e) => {
                    failures.push(format!("{} case {i}: {e:#}", h.name));
                    continue;
                }
            };
            let rows: Vec<Value> = result
                .batches
                .iter()
                .flat_map(|b| crowsnest::sink::json_rows(b).unwrap())
                .map(|r| serde_json::from_slice(&r).unwrap())
                .collect();
            // The same case through the hunt's table function, its parameters in order.
            let args: Vec<String> = h
                .params
                .iter()
                .map(|p| format!("'{}'", t.params.get(&p.name).or(p.default.as_ref()).unwrap().replace('\'', "''")))
                .collect();
            let call = format!("SELECT * FROM {}({})", crowsnest::hunt::table_functions::function_name(&h.name), args.join(", "));
            match session.query(&call, None, &mut |_| {}) {
                Ok(r) if r.rows == rows.len() => {}
                Ok(r) => failures.push(format!("{} case {i}: {call} gave {} rows, the hunt {}", h.name, r.rows, rows.len())),
                Err(e) => failures.push(format!("{} case {i}: {call}: {e:#}", h.name)),
            }
            if let Some(n) = t.rows {
                if rows.len() != n {
                    failures.push(format!("{} case {i}: {} rows, expected {n}", h.name, rows.len()));
                }
            }
            for want in &t.contains {
                let text = |v: &Value| v.as_str().map_or_else(|| v.to_string(), str::to_string);
                let matches = |row: &Value| {
                    want.iter().all(|(k, v)| {
                        let v = match v {
                            serde_yaml::Value::String(s) => s.clone(),
                            serde_yaml::Value::Number(n) => n.to_string(),
                            serde_yaml::Value::Bool(b) => b.to_string(),
                            other => serde_yaml::to_string(other).unwrap().trim().to_string(),
                        };
                        row.get(k).is_some_and(|got| text(got) == v)
                    })
                };
                if !rows.iter().any(matches) {
                    failures.push(format!("{} case {i}: no row like {want:?}", h.name));
                }
            }
        }
    }
    assert!(cases >= 10, "{cases} hunt test cases");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

fn generated(dir: &Path, name: &str, seed: &str, events: &str, start: &str) {
    ok(&run(&["gen", "--events", events, "--seed", seed, "--start", start, "--out", name], dir));
}

#[test]
fn compaction_merges_closed_hours_once_and_finishes_an_interrupted_run_and_prune_keeps_retention() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let lake = format!("file://{}/lake", dir.display());
    // Two inputs over the same hours: two files per partition.
    generated(dir, "a.jsonl", "3", "2000", "2026-11-01T08:00:00Z");
    generated(dir, "b.jsonl", "4", "2000", "2026-11-01T08:00:00Z");
    for f in ["a.jsonl", "b.jsonl"] {
        ok(&run(&["replay", f, "--lake", &lake, "--no-progress", "--no-stdout"], dir));
    }
    let audit_dir = dir.join("lake/table=kube_audit/date=2026-11-01/hour=08");
    let inputs = parquet_files(&audit_dir);
    assert_eq!(inputs.len(), 2);
    let saved: Vec<(PathBuf, Vec<u8>)> = inputs.iter().map(|p| (p.clone(), std::fs::read(p).unwrap())).collect();
    // The two inputs share their attack scenarios, so some alerts (same rule, entities and
    // window: same id) are in both: compaction keeps one of each.
    let (n, d, alert_rows, alerts) = counts(&lake, dir, &[]);
    assert!(alert_rows > alerts, "{alert_rows} {alerts}");
    let before = (n, d, alerts, alerts);

    let report = ok(&run(&["lake", "compact", "--lake", &lake], dir));
    assert!(report.contains("compacted"), "{report}");
    let after = parquet_files(&audit_dir);
    assert_eq!(after.len(), 1);
    assert!(after[0].file_name().unwrap().to_string_lossy().starts_with("c-"));
    assert_eq!(counts(&lake, dir, &[]), before);
    // Again: nothing to do.
    assert!(ok(&run(&["lake", "compact", "--lake", &lake], dir)).contains("compacted 0 partitions"));
    // A compaction that stopped after writing its file, before deleting what it replaced.
    std::fs::write(&saved[0].0, &saved[0].1).unwrap();
    ok(&run(&["lake", "compact", "--lake", &lake], dir));
    assert_eq!(parquet_files(&audit_dir), after);
    assert_eq!(counts(&lake, dir, &[]), before);
    // A third input merges into the compacted file; then the first is replayed again, writing
    // its old file anew: the next compaction knows the rows are already held (the merged file
    // inherits what the one it merged had replaced) and removes it.
    generated(dir, "c.jsonl", "6", "2000", "2026-11-01T08:00:00Z");
    ok(&run(&["replay", "c.jsonl", "--lake", &lake, "--no-progress", "--no-stdout"], dir));
    ok(&run(&["lake", "compact", "--lake", &lake], dir));
    assert_eq!(parquet_files(&audit_dir).len(), 1);
    let merged = counts(&lake, dir, &[]);
    assert!(merged.0 > before.0, "{merged:?} {before:?}");
    ok(&run(&["replay", "a.jsonl", "--lake", &lake, "--no-progress", "--no-stdout"], dir));
    assert_eq!(parquet_files(&audit_dir).len(), 2);
    ok(&run(&["lake", "compact", "--lake", &lake], dir));
    assert_eq!(parquet_files(&audit_dir).len(), 1);
    assert_eq!(counts(&lake, dir, &[]), merged);

    // Retention: November 2026 is older than a day today (the clock says so in CI too, since
    // the data is generated in the past): everything goes, and a dry run deletes nothing.
    let dry = ok(&run(&["lake", "prune", "--lake", &lake, "--older-than", "1d", "--dry-run"], dir));
    assert!(dry.contains("would delete"), "{dry}");
    assert!(!parquet_files(&dir.join("lake")).is_empty());
    ok(&run(&["lake", "prune", "--lake", &lake, "--older-than", "1d"], dir));
    assert!(parquet_files(&dir.join("lake")).is_empty());
    let kept = ok(&run(&["lake", "prune", "--lake", &lake, "--older-than", "36500d"], dir));
    assert!(kept.contains("deleted 0 files"), "{kept}");
}

#[test]
fn a_backtest_over_the_lake_gives_the_alerts_of_a_backtest_over_the_files() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    generated(dir, "in.jsonl", "5", "4000", "2026-11-01T08:00:00Z");
    let lake = format!("file://{}/lake", dir.display());
    ok(&run(&["replay", "in.jsonl", "--lake", &lake, "--no-progress", "--no-stdout"], dir));
    // A single-event rule, a windowed threshold and a sequence.
    let mut compared = 0;
    for rule in ["CN-AUDIT-001", "CN-AUDIT-006", "CN-SEQ-001"] {
        let files = run(&["rules", "backtest", rule, "in.jsonl", "--json"], dir);
        if !files.status.success() {
            continue; // no such rule in this pack
        }
        let ids = |out: &Output| {
            let mut v: Vec<String> = stdout_alerts(out).iter().map(|a| a["id"].as_str().unwrap().to_string()).collect();
            v.sort();
            v
        };
        let over_lake = run(&["rules", "backtest", rule, "--lake", &lake, "--json"], dir);
        ok(&over_lake);
        assert_eq!(ids(&over_lake), ids(&files), "{rule}");
        compared += 1;
    }
    assert!(compared >= 2);
}

fn azurite_env() -> Vec<(&'static str, &'static str)> {
    vec![("AZURE_STORAGE_ACCOUNT_NAME", ACCOUNT), ("AZURE_STORAGE_ACCOUNT_KEY", KEY)]
}

#[test]
fn a_lake_in_azure_blob_storage_azurite_keeps_one_copy_and_is_hunted_and_compacted() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let azurite = Azurite::start(dir).expect("Azurite starts");
    azurite.create_container("security").unwrap();
    let lake = format!("az://security/aks/lake?endpoint={}", azurite.endpoint());
    let env = azurite_env();
    let replay = |extra: &[&str]| {
        let out = bin()
            .args(["replay", "--lake", &lake, "--no-progress", "--no-stdout"])
            .args(extra)
            .envs(env.iter().copied())
            .current_dir(dir)
            .output()
            .unwrap();
        ok(&out);
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let first = replay(&[]);
    assert!(first.contains("rows in"), "{first}");
    let before = counts(&lake, dir, &env);
    assert_eq!((before.0, before.1), (3000, 3000));
    let second = replay(&[]);
    assert!(second.contains("files already there"), "{second}");
    assert_eq!(counts(&lake, dir, &env), before);
    // The same hunt as on disk.
    let rows = hunt_rows(&["actor-timeline", "--param", "user=mallory@contoso.com", "--lake", &lake], dir, &env);
    assert!(!rows.is_empty());
    let stats = bin().args(["lake", "stats", "--lake", &lake]).envs(env.iter().copied()).output().unwrap();
    assert!(ok(&stats).contains("kube_audit"), "{}", ok(&stats));
    // A wrong key is refused by the emulator, and said so.
    let bad = bin()
        .args(["hunt", "SELECT count(*) FROM kube_audit", "--lake", &lake])
        .env("AZURE_STORAGE_ACCOUNT_NAME", ACCOUNT)
        .env("AZURE_STORAGE_ACCOUNT_KEY", "d3Jvbmc=")
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(!String::from_utf8_lossy(&bad.stderr).contains("d3Jvbmc="), "the key was printed");
}

/// `crowsnest run` reading `audit` into the lake (files rolled every second), killed when dropped.
fn start_lake_pipeline(dir: &Path, broker: &Broker, lake: &str) -> Running {
    let a = broker.addr();
    let source =
        format!("kafka://{a}/audit?group=lake&start=earliest&commit_interval=1s&session.timeout.ms=6000&fetch.wait.max.ms={FETCH_WAIT_MS}");
    let alerts = format!("file://{}/alerts.jsonl", dir.display());
    Running::start(
        dir,
        &format!("[metrics]\nenabled = false\n[sinks]\nstdout = false\n[sinks.lake]\nurl = \"{lake}\"\nroll_age = \"1s\"\n"),
        &["--source", &source, "--sink", &alerts],
    )
}

#[test]
fn a_kafka_pipeline_killed_mid_run_leaves_exactly_one_copy_of_every_row_in_the_lake() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    generated(dir, "in.jsonl", "9", "6000", "2026-11-01T08:00:00Z");
    let lines = file_lines(&dir.join("in.jsonl"));
    // What the lake must hold: the audit rows a replay of the same records decodes.
    let expected = one(&hunt_rows(&["SELECT count(DISTINCT audit_id || '/' || stage) AS n FROM kube_audit", "in.jsonl"], dir, &[]), "n");
    let broker = Broker::in_memory(dir);
    broker.create_topic("audit", 3);
    let lake = format!("file://{}/lake", dir.display());
    let (first, rest) = lines.split_at(lines.len() / 2);
    broker.produce("audit", 3, first);
    let mut p = start_lake_pipeline(dir, &broker, &lake);
    let log = || std::fs::read_to_string(dir.join("crowsnest.log")).unwrap_or_default();
    // Killed once some flushes are in the lake, while more is being read.
    wait_for("the first files in the lake", Duration::from_secs(60), || (parquet_files(&dir.join("lake")).len() >= 3).then_some(()));
    broker.produce("audit", 3, rest);
    std::thread::sleep(Duration::from_millis(700));
    p.kill();
    // The killed member stays in the group until its session times out (6 s). tansu gives a
    // member that joins before then no partition and never rebalances again once the dead one
    // expires (a Kafka broker would), so the restart comes after the timeout.
    std::thread::sleep(Duration::from_secs(7));
    let _p = start_lake_pipeline(dir, &broker, &lake);
    let distinct = || {
        let rows =
            hunt_rows(&["SELECT count(*) AS n, count(DISTINCT audit_id || '/' || stage) AS d FROM kube_audit", "--lake", &lake], dir, &[]);
        (one(&rows, "n"), one(&rows, "d"))
    };
    let reached = (0..300).find_map(|_| {
        let c = distinct();
        if c.1 >= expected {
            return Some(c);
        }
        std::thread::sleep(Duration::from_millis(500));
        None
    });
    let Some(_) = reached else { panic!("the lake never held every row: {:?} of {expected}\n{}", distinct(), log()) };
    // A moment more: nothing arrives twice later either.
    std::thread::sleep(Duration::from_secs(3));
    let (n, d) = distinct();
    assert_eq!(d, expected, "{}", log());
    assert_eq!(n, expected, "rows stored twice\n{}", log());
}
