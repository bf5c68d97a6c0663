//! Bad input never stops the pipeline: each case becomes a dead letter with its reason, and the
//! good events around it are still decoded and detected.

use std::io::Write;

use serde_json::{json, Value};

use crate::common::*;

/// Writes `bad` between two good lines (each a privileged pod, so each fires an alert), replays
/// the file and returns (alerts, dead letters, stderr).
fn replay_around(bad: &[u8]) -> (Vec<Value>, Vec<Value>, String) {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    let mut f = std::fs::File::create(&input).unwrap();
    f.write_all(envelope(&[privileged_pod_event("a0000000-0000-4000-8000-000000000001", "2026-11-01T08:00:00.000001Z")]).as_bytes())
        .unwrap();
    f.write_all(b"\n").unwrap();
    f.write_all(bad).unwrap();
    f.write_all(b"\n").unwrap();
    f.write_all(envelope(&[privileged_pod_event("a0000000-0000-4000-8000-000000000002", "2026-11-01T08:00:01.000001Z")]).as_bytes())
        .unwrap();
    f.write_all(b"\n").unwrap();
    drop(f);
    let out = run(&["replay", "in.jsonl", "--dead-letters", "dl.jsonl"], dir.path());
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "replay failed: {stderr}");
    let alerts = stdout_alerts(&out);
    (alerts, read_jsonl(&dir.path().join("dl.jsonl")), stderr)
}

fn assert_one_dead_letter(bad: &[u8], reason: &str) -> Value {
    let (alerts, dead, stderr) = replay_around(bad);
    let privileged = alerts.iter().filter(|a| a["rule_id"] == "CN-AUDIT-001").count();
    assert_eq!(privileged, 2, "both good events around the bad input fire: {stderr}");
    assert_eq!(dead.len(), 1, "one dead letter: {dead:?}");
    let d = dead[0].clone();
    assert_eq!(d["reason"], reason, "{d}");
    assert!(d["position"].as_str().unwrap().starts_with("line 2"), "{d}");
    assert!(d["source"].as_str().unwrap().ends_with("in.jsonl"), "{d}");
    assert!(stderr.contains(&format!("{reason} 1")), "the summary counts it: {stderr}");
    d
}

#[test]
fn invalid_json() {
    let d = assert_one_dead_letter(b"{\"records\": [ this is not json", "invalid_json");
    assert!(d["sample"].as_str().unwrap().starts_with("{\"records\""));
}

#[test]
fn wrong_shape() {
    assert_one_dead_letter(br#"{"hello": "world", "n": [1, 2, 3]}"#, "wrong_shape");
    assert_one_dead_letter(br#"{"records": "not a list"}"#, "wrong_shape");
}

#[test]
fn invalid_utf8() {
    let mut bad = envelope(&[privileged_pod_event("a0000000-0000-4000-8000-00000000000f", "2026-11-01T08:00:00Z")]).into_bytes();
    bad[40] = 0xff;
    bad[41] = 0xfe;
    assert_one_dead_letter(&bad, "invalid_utf8");
}

#[test]
fn missing_required_fields() {
    let mut ev = privileged_pod_event("x", "2026-11-01T08:00:00Z");
    ev.as_object_mut().unwrap().remove("auditID");
    let d = assert_one_dead_letter(envelope(&[ev]).as_bytes(), "missing_field");
    assert!(d["detail"].as_str().unwrap().contains("auditID"));
    assert!(d["position"].as_str().unwrap().contains("record 1"), "{d}");
    let mut ev = privileged_pod_event("a0000000-0000-4000-8000-000000000003", "2026-11-01T08:00:00Z");
    let o = ev.as_object_mut().unwrap();
    o.remove("requestReceivedTimestamp");
    o.remove("stageTimestamp");
    assert_one_dead_letter(ev.to_string().as_bytes(), "missing_field");
    assert_one_dead_letter(
        br#"{"records":[{"category":"kube-audit","resourceId":"X","properties":{"stream":"stdout"}}]}"#,
        "missing_field",
    );
}

#[test]
fn invalid_timestamp() {
    let ev = privileged_pod_event("a0000000-0000-4000-8000-000000000004", "yesterday at noon");
    assert_one_dead_letter(ev.to_string().as_bytes(), "invalid_timestamp");
}

#[test]
fn truncated_properties_log_is_cut_at_16_kib() {
    // AKS cuts properties.log at 16 KiB: a record whose log is an incomplete Event.
    let mut ev = privileged_pod_event("a0000000-0000-4000-8000-000000000005", "2026-11-01T08:00:00Z");
    ev["requestObject"]["metadata"]["annotations"] = json!({"big": "x".repeat(20_000)});
    let log = ev.to_string();
    let cut = &log[..16_384];
    let line =
        json!({"records": [{"category": "kube-audit", "resourceId": CLUSTER, "time": "2026-11-01T08:00:00Z", "properties": {"log": cut}}]})
            .to_string();
    let d = assert_one_dead_letter(line.as_bytes(), "truncated");
    assert!(d["detail"].as_str().unwrap().contains("16 KiB"), "{d}");
}

#[test]
fn a_50_mb_line_is_not_buffered() {
    let mut bad = b"{\"records\":[{\"category\":\"kube-audit\",\"properties\":{\"log\":\"".to_vec();
    bad.resize(50 << 20, b'a');
    let d = assert_one_dead_letter(&bad, "too_large");
    assert!(d["detail"].as_str().unwrap().contains(&(50u64 << 20).to_string()), "{d}");
    assert!(d["sample"].as_str().unwrap().len() <= 512);
}

#[test]
fn ten_thousand_deep_nesting() {
    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    assert_one_dead_letter(deep.as_bytes(), "too_deep");
    let deep_obj = format!("{}1{}", "{\"a\":".repeat(10_000), "}".repeat(10_000));
    assert_one_dead_letter(deep_obj.as_bytes(), "too_deep");
    // Deep nesting inside an otherwise valid Event's body: the body is kept as text (it is not
    // parsed into a tree), so the event is decoded and detected, with no stack at risk.
    let mut ev = privileged_pod_event("a0000000-0000-4000-8000-000000000006", "2026-11-01T08:00:00Z");
    ev["responseObject"] = json!(null);
    let text = ev.to_string().replace("\"responseObject\":null", &format!("\"responseObject\":{deep_obj}"));
    let (alerts, dead, _) = replay_around(text.as_bytes());
    let privileged = alerts.iter().filter(|a| a["rule_id"] == "CN-AUDIT-001").count();
    assert_eq!(privileged, 3, "the deep-bodied event is a privileged pod too");
    assert!(dead.is_empty(), "{dead:?}");
}

#[test]
fn non_audit_categories_are_skipped_not_dead() {
    let line = json!({"records": [
        {"category": "kube-apiserver", "resourceId": CLUSTER, "properties": {"log": "I1101 08:00:01.123456       1 controller.go:615] quota admission added evaluator"}},
        {"category": "guard", "resourceId": CLUSTER, "properties": {"log": "I1101 08:00:02 guard authn ok"}},
    ]})
    .to_string();
    let (alerts, dead, stderr) = replay_around(line.as_bytes());
    assert_eq!(alerts.iter().filter(|a| a["rule_id"] == "CN-AUDIT-001").count(), 2);
    assert!(dead.is_empty(), "{dead:?}");
    assert!(stderr.contains("kube-apiserver 1") && stderr.contains("guard 1"), "{stderr}");
}

#[test]
fn every_bad_case_in_one_file_one_run() {
    // All at once: the pipeline counts each and keeps going.
    let mut bad = Vec::new();
    bad.extend_from_slice(b"not json at all\n");
    bad.extend_from_slice(b"{\"kind\":\"Pod\"}\n");
    bad.extend_from_slice(&[0xc3, 0x28, b'\n']);
    bad.extend_from_slice(format!("{}\n", "[".repeat(10_000)).as_bytes());
    bad.extend_from_slice(
        b"{\"records\":[{\"category\":\"kube-audit\",\"properties\":{\"log\":\"{\\\"auditID\\\":\\\"x\\\",\\\"verb\\\":\"}}]}",
    );
    let (alerts, dead, stderr) = replay_around(&bad);
    assert_eq!(alerts.iter().filter(|a| a["rule_id"] == "CN-AUDIT-001").count(), 2, "{stderr}");
    let mut reasons: Vec<&str> = dead.iter().map(|d| d["reason"].as_str().unwrap()).collect();
    reasons.sort();
    assert_eq!(reasons, vec!["invalid_json", "invalid_utf8", "too_deep", "truncated", "wrong_shape"], "{dead:?}");
    let positions: Vec<&str> = dead.iter().map(|d| d["position"].as_str().unwrap()).collect();
    assert_eq!(positions, vec!["line 2", "line 3", "line 4", "line 5", "line 6 record 1"]);
}
