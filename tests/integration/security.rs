//! The security promises, each tried by a test that attempts to break it: secret material planted
//! in every form it takes in audit events never reaches any output of a replay (stdout, files,
//! a Kafka topic on a real broker, dead letters, late events, the lake, the log).

use std::path::Path;

use serde_json::{json, Value};

use crate::broker::Broker;
use crate::common::{bin, envelope};

/// Values planted in the input: none may appear in any output, whole or base64-decoded.
const PLANTED: [&str; 10] = [
    "aHVudGVyMi1wbGFudGVk", // base64 of "hunter2-planted", a Secret's data
    "hunter2-planted",
    "s3cr3t-planted-string",                 // stringData
    "bGFzdC1hcHBsaWVkLXBsYW50ZWQ",           // in the last-applied annotation
    "eyJhbGciOiJSUzI1NiJ9.planted-sa-token", // TokenRequest status.token
    "planted-review-token",                  // TokenReview spec.token
    "cGxhbnRlZC10cnVuY2F0ZWQ",               // in a Secret whose record is cut short (a dead letter)
    "planted-cut-envelope",                  // in a Secret inside a cut properties.log
    "planted-late-secret",                   // in a Secret event that arrives after its window fired
    "Bearer planted-header",                 // an Authorization header in a dead letter's sample
];

fn event(id: u32, t: &str, verb: &str, resource: &str, subresource: Option<&str>, request: Value, response: Value) -> Value {
    let mut object_ref = json!({"resource": resource, "namespace": "payments", "name": "db", "apiVersion": "v1"});
    if let Some(s) = subresource {
        object_ref["subresource"] = json!(s);
    }
    json!({
        "kind": "Event", "apiVersion": "audit.k8s.io/v1", "level": "RequestResponse",
        "auditID": format!("5ec00000-0000-4000-8000-{id:012}"), "stage": "ResponseComplete",
        "requestURI": format!("/api/v1/namespaces/payments/{resource}/db"), "verb": verb,
        "user": {"username": "mallory@contoso.com", "groups": ["system:authenticated"]}, "sourceIPs": ["203.0.113.5"],
        "objectRef": object_ref, "responseStatus": {"metadata": {}, "code": 201},
        "requestObject": request, "responseObject": response,
        "requestReceivedTimestamp": t, "stageTimestamp": t
    })
}

fn secret(data: &str, string_data: &str) -> Value {
    json!({"kind": "Secret", "apiVersion": "v1",
        "metadata": {"name": "db", "namespace": "payments", "annotations": {
            "kubectl.kubernetes.io/last-applied-configuration": "{\"data\":{\"k\":\"bGFzdC1hcHBsaWVkLXBsYW50ZWQ=\"}}"}},
        "data": {"password": data}, "stringData": {"user": string_data}, "type": "Opaque"})
}

/// Every output file under `dir` (the lake's Parquet decoded through `crowsnest hunt`), and
/// what the command printed, with what each is.
fn outputs(dir: &Path, stdout: &[u8], stderr: &[u8]) -> Vec<(String, String)> {
    let mut all = vec![("stdout".to_string(), String::from_utf8_lossy(stdout).into_owned())];
    all.push(("stderr".into(), String::from_utf8_lossy(stderr).into_owned()));
    for f in ["alerts.jsonl", "dead-letters.jsonl", "late-events.jsonl"] {
        let text = std::fs::read_to_string(dir.join(f)).unwrap_or_else(|e| panic!("{f}: {e}"));
        assert!(!text.is_empty(), "{f} is empty: the test plants input for it");
        all.push((f.to_string(), text));
    }
    let lake = format!("file://{}/lake", dir.display());
    for table in ["kube_audit", "alerts"] {
        let out = bin()
            .args(["hunt", &format!("SELECT * FROM {table}"), "--lake", &lake, "--format", "ndjson"])
            .current_dir(dir)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        all.push((format!("lake table {table}"), String::from_utf8_lossy(&out.stdout).into_owned()));
    }
    all
}

#[test]
fn planted_secrets_never_reach_any_output_of_a_replay() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    // Rules that select the raw bodies, so any leak in them would show in alerts; and a window
    // whose late events go to the late-events file with every column.
    std::fs::create_dir_all(dir.join("rules/rules")).unwrap();
    std::fs::write(
        dir.join("rules/rules/bodies.yaml"),
        "id: T-BODIES\ntitle: bodies\nseverity: low\nentities: [name]\nquery: SELECT name, request_object, response_object, user_extra FROM kube_audit\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("rules/rules/window.yaml"),
        "id: T-WIN\ntitle: writes\nseverity: low\nentities: [user_name]\nquery: |\n  SELECT user_name, count(*) AS n FROM kube_audit\n  GROUP BY user_name, TUMBLE(event_time, INTERVAL '5 minutes') HAVING count(*) >= 2\n",
    )
    .unwrap();
    let token_request = json!({"kind": "TokenRequest", "apiVersion": "authentication.k8s.io/v1", "spec": {"audiences": ["api"]},
        "status": {"token": "eyJhbGciOiJSUzI1NiJ9.planted-sa-token", "expirationTimestamp": "2026-11-01T09:00:00Z"}});
    let token_review = json!({"kind": "TokenReview", "apiVersion": "authentication.k8s.io/v1", "spec": {"token": "planted-review-token"}});
    let events = [
        event(
            1,
            "2026-11-01T08:00:10.000000Z",
            "create",
            "secrets",
            None,
            secret("aHVudGVyMi1wbGFudGVk", "s3cr3t-planted-string"),
            json!({}),
        ),
        event(2, "2026-11-01T08:00:20.000000Z", "create", "serviceaccounts", Some("token"), json!({}), token_request),
        event(3, "2026-11-01T08:00:30.000000Z", "create", "tokenreviews", None, token_review, json!({})),
        // Closes the 08:00 window: what comes after for it is late.
        event(4, "2026-11-01T08:20:00.000000Z", "get", "pods", None, json!({}), json!({})),
    ];
    let late =
        event(5, "2026-11-01T08:01:00.000000Z", "update", "secrets", None, secret("planted-late-secret", "planted-late-secret"), json!({}));
    // Cut short: a raw Event line, and an envelope whose properties.log is cut (AKS cuts at 16 KiB).
    let cut_event = r#"{"kind":"Event","apiVersion":"audit.k8s.io/v1","auditID":"5ec00000-0000-4000-8000-000000000009","verb":"create","objectRef":{"resource":"secrets"},"requestObject":{"kind":"Secret","data":{"password":"cGxhbnRlZC10cnVuY2F0ZWQ="#;
    let cut_log = r#"{"kind":"Event","auditID":"5ec00000-0000-4000-8000-000000000010","requestObject":{"kind":"Secret","stringData":{"p":"planted-cut-envelope"#;
    let cut_envelope = json!({"records": [{"time": "2026-11-01T08:00:40Z", "category": "kube-audit", "properties": {"log": cut_log}}]});
    let header = r#"{"kind":"Event","headers":{"Authorization":"Bearer planted-header"}"#;
    let first = format!("{}\n{cut_event}\n{cut_envelope}\n{header}\n", envelope(&events));
    std::fs::write(dir.join("a.jsonl"), first).unwrap();
    std::fs::write(dir.join("b.jsonl"), format!("{}\n", envelope(&[late]))).unwrap();
    let lake = format!("file://{}/lake", dir.display());
    let broker = Broker::in_memory(dir);
    broker.create_topic("alerts", 1);
    let topic = format!("kafka://{}/alerts", broker.addr());
    let out = bin()
        .args(["-vv", "replay", "--no-progress", "--rules", "rules", "--allowed-lateness", "0s", "--alerts", "alerts.jsonl"])
        .args(["--sink", "stdout", "--sink", &topic, "--lake", &lake, "a.jsonl", "b.jsonl"])
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mut all = outputs(dir, &out.stdout, &out.stderr);
    let alerts = all.iter().find(|(n, _)| n == "alerts.jsonl").unwrap().1.lines().count();
    let on_topic = broker.read_all("alerts", std::time::Duration::from_secs(10), |docs| docs.len() >= alerts);
    assert_eq!(on_topic.len(), alerts, "every alert reached the topic");
    all.push(("kafka topic alerts".into(), on_topic.iter().map(|d| String::from_utf8_lossy(d).into_owned() + "\n").collect()));
    // The planted input reached each output it was meant for (so the absence below means
    // something): the bodies' keys in alerts, the cut records in dead letters, the late event.
    let text = |name: &str| &all.iter().find(|(n, _)| n == name).unwrap().1;
    assert!(text("alerts.jsonl").contains("password") && text("alerts.jsonl").contains("TokenRequest"), "{}", text("alerts.jsonl"));
    assert!(text("dead-letters.jsonl").lines().count() >= 3, "{}", text("dead-letters.jsonl"));
    assert!(text("late-events.jsonl").contains("5ec00000-0000-4000-8000-000000000005"), "{}", text("late-events.jsonl"));
    assert!(text("lake table kube_audit").contains("TokenReview"));
    for (name, body) in &all {
        for value in PLANTED {
            assert!(!body.contains(value), "{value:?} reached {name}:\n{body}");
        }
    }
}
