//! `crowsnest replay` end to end: the bundled sample, every input shape, determinism.

use std::collections::BTreeMap;
use std::io::Write;

use serde_json::{json, Value};

use crate::common::*;

fn by_rule(alerts: &[Value]) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for a in alerts {
        *m.entry(a["rule_id"].as_str().unwrap().to_string()).or_default() += 1;
    }
    m
}

#[test]
fn bundled_sample_fires_every_rule_as_its_scenarios_say() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(&["replay", "--no-progress"], dir.path());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let alerts = stdout_alerts(&out);
    let rules = by_rule(&alerts);
    // One scenario per rule, except exec (CN-AUDIT-004): the exec-into-pod scenario, the
    // privileged-pod scenario's shell into its pod (which also makes the CN-AUDIT-009 sequence),
    // and the crypto-miner scenario's shell, whose pod's log then shows three suspicious lines
    // (CN-CI-001: curl | sh, XMRig, its pool) and so completes the cross-table CN-CI-010.
    // The hygiene rules see each of mallory's three hand-made pods (debug-shell, node-debugger,
    // log-collector): root allowed (020), docker.io images (025), the default service account's
    // token mounted (027), no limits (028). The token-theft scenario's TokenRequest (045), and
    // the three identities calling from outside the authorized ranges (047): mallory, the stolen
    // CI token, and the anonymous lister. One Container Insights scenario per CN-CI rule.
    let expected = [
        ("CN-AUDIT-001", 1),
        ("CN-AUDIT-002", 1),
        ("CN-AUDIT-003", 1),
        ("CN-AUDIT-004", 3),
        ("CN-AUDIT-005", 1),
        ("CN-AUDIT-006", 1),
        ("CN-AUDIT-007", 1),
        ("CN-AUDIT-008", 1),
        ("CN-AUDIT-009", 1),
        ("CN-AUDIT-010", 1),
        ("CN-AUDIT-011", 1),
        ("CN-AUDIT-020", 3),
        ("CN-AUDIT-025", 3),
        ("CN-AUDIT-027", 3),
        ("CN-AUDIT-028", 3),
        ("CN-AUDIT-045", 1),
        ("CN-AUDIT-047", 3),
        ("CN-CI-001", 3),
        ("CN-CI-002", 1),
        ("CN-CI-003", 1),
        ("CN-CI-004", 1),
        ("CN-CI-005", 1),
        ("CN-CI-006", 1),
        ("CN-CI-010", 1),
    ];
    for (id, n) in expected {
        assert_eq!(rules.get(id), Some(&n), "{id} fires {n} time(s) on the sample; got {rules:?}\n{stderr}");
    }
    assert_eq!(rules.len(), expected.len(), "no other rule fires: {rules:?}");
    // Every alert follows the published alert schema's required keys.
    for a in &alerts {
        for key in [
            "id",
            "rule_id",
            "rule_title",
            "severity",
            "mitre",
            "tags",
            "first_seen",
            "last_seen",
            "count",
            "entities",
            "cluster",
            "audit_ids",
            "fields",
            "detected_at",
        ] {
            assert!(a.get(key).is_some(), "alert lacks {key}: {a}");
        }
        assert!(a["cluster"].as_str().unwrap().to_uppercase().contains("/MANAGEDCLUSTERS/"), "{a}");
    }
    // The summary is on stderr, nothing but alerts on stdout.
    assert!(stderr.contains("crowsnest summary") && stderr.contains("events/s") && stderr.contains("dead letters:"), "{stderr}");
    assert!(stderr.contains("kube_audit 3000") && stderr.contains("container_log "), "{stderr}");
    assert!(!dir.path().join("dead-letters.jsonl").exists(), "the sample is clean: no dead-letter file");
}

#[test]
fn windowed_alert_carries_window_and_samples() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(&["replay", "--no-progress"], dir.path());
    let alerts = stdout_alerts(&out);
    let burst = alerts.iter().find(|a| a["rule_id"] == "CN-AUDIT-007").expect("403 burst alert");
    assert_eq!(burst["entities"]["user_name"], "system:serviceaccount:default:compromised-app");
    assert!(burst["count"].as_u64().unwrap() >= 20);
    assert!(burst["window_start"].is_string() && burst["window_end"].is_string());
    let ids = burst["audit_ids"].as_array().unwrap();
    assert!(!ids.is_empty() && ids.len() <= 10);
}

#[test]
fn results_do_not_depend_on_worker_count_and_ids_are_stable() {
    let dir = tempfile::tempdir().unwrap();
    let ids = |workers: &str| {
        let out = run(&["replay", "--no-progress", "--workers", workers], dir.path());
        assert!(out.status.success());
        let mut v: Vec<String> = stdout_alerts(&out).iter().map(|a| a["id"].as_str().unwrap().to_string()).collect();
        v.sort();
        v
    };
    let one = ids("1");
    assert!(!one.is_empty());
    assert_eq!(one, ids("4"), "same alert ids with 1 and 4 decode workers");
}

#[test]
fn alerts_dead_letters_and_late_events_may_go_to_dev_null() {
    // Not regular files: nothing to sync (syncing /dev/null fails with EINVAL), so no error.
    let dir = tempfile::tempdir().unwrap();
    let out =
        run(&["replay", "--no-progress", "--alerts", "/dev/null", "--dead-letters", "/dev/null", "--late-events", "/dev/null"], dir.path());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!stdout_alerts(&out).is_empty());
}

#[test]
fn raw_events_eventlists_documents_gzip_and_stdin() {
    let dir = tempfile::tempdir().unwrap();
    let ev = |n: u32| privileged_pod_event(&format!("b0000000-0000-4000-8000-{n:012}"), &format!("2026-11-01T08:00:{n:02}.000001Z"));
    // Raw Events as JSON lines.
    let lines = format!("{}\n{}\n", ev(1), ev(2));
    std::fs::write(dir.path().join("raw.jsonl"), &lines).unwrap();
    // One pretty-printed EventList document.
    let list = json!({"kind": "EventList", "apiVersion": "audit.k8s.io/v1", "items": [ev(3), ev(4)]});
    std::fs::write(dir.path().join("list.json"), serde_json::to_string_pretty(&list).unwrap()).unwrap();
    // A pretty-printed AKS envelope, gzip-compressed.
    let env: Value = serde_json::from_str(&envelope(&[ev(5)])).unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(serde_json::to_string_pretty(&env).unwrap().as_bytes()).unwrap();
    std::fs::write(dir.path().join("env.json.gz"), gz.finish().unwrap()).unwrap();
    // A JSON array of Events on one line.
    std::fs::write(dir.path().join("array.json"), json!([ev(6)]).to_string()).unwrap();

    let out = run(&["replay", "--no-progress", "raw.jsonl", "list.json", "env.json.gz", "array.json"], dir.path());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let alerts = stdout_alerts(&out);
    assert_eq!(alerts.iter().filter(|a| a["rule_id"] == "CN-AUDIT-001").count(), 6, "{stderr}");
    let enveloped: Vec<_> = alerts.iter().filter(|a| a["rule_id"] == "CN-AUDIT-001" && a["cluster"].is_string()).collect();
    assert_eq!(enveloped.len(), 1, "only the envelope carries a cluster");
    assert!(stderr.contains("raw 5") && stderr.contains("kube-audit 1"), "{stderr}");

    // stdin
    let mut child = bin()
        .args(["replay", "--no-progress", "-"])
        .current_dir(dir.path())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(lines.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    assert_eq!(stdout_alerts(&out).iter().filter(|a| a["rule_id"] == "CN-AUDIT-001").count(), 2);
}

#[test]
fn secrets_are_redacted_before_alerts_leave() {
    let dir = tempfile::tempdir().unwrap();
    // A rule that selects the raw bodies of secrets, to prove nothing secret gets through.
    std::fs::create_dir_all(dir.path().join("rules/rules")).unwrap();
    std::fs::write(
        dir.path().join("rules/rules/secret-bodies.yaml"),
        "id: T-1\ntitle: secret bodies\nseverity: low\nentities: [name]\nquery: SELECT name, request_object, response_object FROM kube_audit WHERE resource = 'secrets'\n",
    )
    .unwrap();
    let ev = json!({
        "kind": "Event", "apiVersion": "audit.k8s.io/v1", "level": "RequestResponse", "auditID": "c0000000-0000-4000-8000-000000000001",
        "stage": "ResponseComplete", "requestURI": "/api/v1/namespaces/web/secrets", "verb": "create",
        "user": {"username": "ci"}, "objectRef": {"resource": "secrets", "namespace": "web", "name": "db", "apiVersion": "v1"},
        "responseStatus": {"metadata": {}, "code": 201},
        "requestObject": {"kind": "Secret", "apiVersion": "v1", "metadata": {"name": "db", "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{\"data\":{\"password\":\"aHVudGVyMg==\"}}"}}, "data": {"password": "aHVudGVyMg=="}, "stringData": {"user": "s3cr3t-admin"}},
        "responseObject": {"kind": "Secret", "apiVersion": "v1", "metadata": {"name": "db"}, "data": {"password": "aHVudGVyMg==", "user": "czNjcjN0"}},
        "requestReceivedTimestamp": "2026-11-01T08:00:00.000001Z", "stageTimestamp": "2026-11-01T08:00:00.000002Z"
    });
    std::fs::write(dir.path().join("in.jsonl"), format!("{}\n", envelope(&[ev]))).unwrap();
    let out = run(&["replay", "--no-progress", "--rules", "rules", "in.jsonl"], dir.path());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("T-1") && text.contains("password"), "the alert fired and keeps key names: {text}");
    for secret in ["aHVudGVyMg", "s3cr3t-admin", "czNjcjN0"] {
        assert!(!text.contains(secret), "{secret} leaked: {text}");
    }
}

#[test]
fn rules_test_and_list_commands() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(&["rules", "test"], dir.path());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains(" 0 failed"), "{text}");
    let out = run(&["rules", "list"], dir.path());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && text.contains("CN-AUDIT-007") && text.contains("windowed"), "{text}");
}

#[test]
fn a_broken_rule_directory_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("r/rules")).unwrap();
    std::fs::write(dir.path().join("r/rules/bad.yaml"), "id: B-1\ntitle: bad\nseverity: low\nquery: SELECT nope FROM kube_audit\n")
        .unwrap();
    let out = run(&["replay", "--rules", "r"], dir.path());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("B-1") && stderr.contains("nope"), "{stderr}");
    std::fs::write(
        dir.path().join("r/rules/bad.yaml"),
        "id: B-1\ntitle: bad\nseverity: low\nquery: SELECT user_name FROM kube_audit WHERE in_list(user_name, 'no_such_list')\n",
    )
    .unwrap();
    let out = run(&["replay", "--rules", "r"], dir.path());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no_such_list"));
    std::fs::write(
        dir.path().join("r/rules/bad.yaml"),
        "id: B-1\ntitle: bad\nseverity: low\nquery: SELECT user_name, count(*) FROM kube_audit GROUP BY user_name\n",
    )
    .unwrap();
    let out = run(&["replay", "--rules", "r"], dir.path());
    assert!(String::from_utf8_lossy(&out.stderr).contains("TUMBLE"), "a GROUP BY without a window says what to add");
}

#[test]
fn events_after_their_window_fired_go_to_the_late_events_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("rules/rules")).unwrap();
    std::fs::write(
        dir.path().join("rules/rules/burst.yaml"),
        "id: T-LATE\ntitle: burst\nseverity: low\nentities: [user_name]\nquery: |\n  SELECT user_name, count(*) AS n FROM kube_audit\n  GROUP BY user_name, TUMBLE(event_time, INTERVAL '5 minutes') HAVING count(*) >= 2\n",
    )
    .unwrap();
    // The first file closes the 08:00 window (an event at 08:20); the second, read after it,
    // brings one more event for 08:01.
    let ev = |id: u32, t: &str| {
        let mut e = privileged_pod_event(&format!("f0000000-0000-4000-8000-{id:012}"), t);
        e["user"]["username"] = json!("mallory@contoso.com");
        e
    };
    let first = [ev(1, "2026-11-01T08:00:10.000000Z"), ev(2, "2026-11-01T08:00:20.000000Z"), ev(3, "2026-11-01T08:20:00.000000Z")];
    std::fs::write(dir.path().join("a.jsonl"), format!("{}\n", envelope(&first))).unwrap();
    std::fs::write(dir.path().join("b.jsonl"), format!("{}\n", envelope(&[ev(4, "2026-11-01T08:01:00.000000Z")]))).unwrap();
    let out = run(&["replay", "--no-progress", "--rules", "rules", "--allowed-lateness", "0s", "a.jsonl", "b.jsonl"], dir.path());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let alerts = stdout_alerts(&out);
    assert_eq!(alerts.len(), 1, "the 08:00 window fired once, without the late event");
    assert_eq!(alerts[0]["count"], json!(2));
    let late = read_jsonl(&dir.path().join("late-events.jsonl"));
    assert_eq!(late.len(), 1, "{late:?}");
    assert_eq!(late[0]["rule_id"], json!("T-LATE"));
    assert_eq!(late[0]["audit_id"], json!("f0000000-0000-4000-8000-000000000004"));
    assert_eq!(late[0]["watermark"], json!("2026-11-01T08:20:00.000000Z"));
    assert_eq!(late[0]["event"]["user_name"], json!("mallory@contoso.com"), "the event with its columns");
    assert!(String::from_utf8_lossy(&out.stderr).contains("late events:"), "the summary counts it");
}

#[test]
fn a_world_writable_rule_directory_or_rule_file_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules/rules");
    std::fs::create_dir_all(&rules).unwrap();
    std::fs::set_permissions(dir.path().join("rules"), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&rules, std::fs::Permissions::from_mode(0o755)).unwrap();
    let rule = rules.join("r.yaml");
    std::fs::write(&rule, "id: T-1\ntitle: t\nseverity: low\nentities: [name]\nquery: SELECT name FROM kube_audit WHERE verb = 'create'\n")
        .unwrap();
    std::fs::set_permissions(&rule, std::fs::Permissions::from_mode(0o644)).unwrap();
    let replay = || run(&["replay", "--no-progress", "--rules", "rules"], dir.path());
    assert!(replay().status.success(), "{}", String::from_utf8_lossy(&replay().stderr));
    for (path, mode) in [(&rule, 0o666), (&rules, 0o777)] {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
        let out = replay();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success()
                && err.contains("writable by every user")
                && err.contains(&*path.strip_prefix(dir.path()).unwrap().to_string_lossy()),
            "{err}"
        );
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(if mode == 0o666 { 0o644 } else { 0o755 })).unwrap();
    }
}
