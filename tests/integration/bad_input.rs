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

/// Peak resident memory a run reports in its summary (`peak memory: N MB resident`).
fn peak_mb(stderr: &str) -> u64 {
    let line = stderr.lines().find(|l| l.starts_with("peak memory:")).unwrap_or_else(|| panic!("no peak memory in:\n{stderr}"));
    line.split_whitespace().nth(2).and_then(|n| n.parse().ok()).unwrap()
}

/// What a replay of nothing hostile peaks at, in the same build: the bound below is relative
/// to it, so a debug and a release build are held to the same promise.
fn baseline_peak_mb(dir: &std::path::Path) -> u64 {
    let line = envelope(&[privileged_pod_event("b0000000-0000-4000-8000-000000000001", "2026-11-01T08:00:00.000001Z")]);
    std::fs::write(dir.join("calm.jsonl"), line + "\n").unwrap();
    let out = run(&["replay", "--no-progress", "calm.jsonl"], dir);
    assert!(out.status.success());
    peak_mb(&String::from_utf8_lossy(&out.stderr))
}

#[test]
fn hostile_documents_each_become_a_row_or_a_dead_letter_in_bounded_memory() {
    let dir = tempfile::tempdir().unwrap();
    let event = |id: u32, request: Value| {
        let mut e = privileged_pod_event(&format!("b0000000-0000-4000-8000-{id:012}"), "2026-11-01T08:00:00.000001Z");
        e["objectRef"]["resource"] = json!("configmaps");
        e["requestObject"] = request;
        serde_json::to_vec(&e).unwrap()
    };
    let mut docs: Vec<Vec<u8>> = Vec::new();
    // 10,000-deep nesting, as a document and inside a request body.
    docs.push(format!("{}{}", "[".repeat(10_000), "]".repeat(10_000)).into_bytes());
    let mut deep = event(4, json!({"kind": "ConfigMap", "d": 0}));
    let at = deep.windows(5).position(|w| w == b"\"d\":0").unwrap() + 4;
    deep.splice(at..at + 1, format!("{}{}", "[".repeat(10_000), "]".repeat(10_000)).into_bytes());
    docs.push(deep);
    // An AKS record whose properties.log is cut at 16 KiB in the middle of an escape.
    let mut log = "{\"kind\":\"Event\",\"auditID\":\"b0000000-0000-4000-8000-000000000009\",\"requestObject\":{\"x\":\"".to_string();
    log.push_str(&"a".repeat(16 * 1024 - log.len() - 1));
    log.push('\\');
    docs.push(json!({"records": [{"category": "kube-audit", "properties": {"log": log}}]}).to_string().into_bytes());
    // A million-element array in a request body.
    docs.push(event(1, json!({"kind": "ConfigMap", "data": {"v": vec![0; 1_000_000]}})));
    // A number of 100,000 digits.
    let mut big = event(2, json!({"kind": "ConfigMap", "n": 0}));
    let at = big.windows(5).position(|w| w == b"\"n\":0").unwrap() + 4;
    big.splice(at..at + 1, std::iter::repeat_n(b'7', 100_000));
    docs.push(big);
    // 50,000 distinct label keys in one object.
    let labels: serde_json::Map<String, Value> = (0..50_000).map(|i| (format!("key-{i}"), json!("v"))).collect();
    docs.push(event(3, json!({"kind": "ConfigMap", "metadata": {"name": "x", "labels": labels}})));

    let baseline = baseline_peak_mb(dir.path());
    let mut child = bin()
        .args(["replay", "--no-progress", "--no-stdout", "-"])
        .current_dir(dir.path())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let feeder = std::thread::spawn(move || {
        for d in &docs {
            stdin.write_all(d).unwrap();
            stdin.write_all(b"\n").unwrap();
        }
        // A 1 GiB line, streamed: it must never be held whole.
        stdin.write_all(b"{\"kind\":\"Event\",\"x\":\"").unwrap();
        let block = vec![b'a'; 1 << 20];
        for _ in 0..1024 {
            stdin.write_all(&block).unwrap();
        }
        stdin.write_all(b"\"}\n").unwrap();
    });
    let out = child.wait_with_output().unwrap();
    feeder.join().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let reasons: Vec<String> =
        read_jsonl(&dir.path().join("dead-letters.jsonl")).iter().map(|d| d["reason"].as_str().unwrap().to_string()).collect();
    for r in ["too_deep", "truncated", "too_large"] {
        assert!(reasons.iter().any(|x| x == r), "no {r} dead letter: {reasons:?}\n{stderr}");
    }
    // The array, the labels and the long number each become a row or a dead letter: nothing
    // is lost without a trace (7 documents: 3 dead letters above, the rest rows or letters).
    let events: u64 = stderr
        .lines()
        .find(|l| l.starts_with("events by table:"))
        .and_then(|l| l.split("kube_audit ").nth(1))
        .and_then(|n| n.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok())
        .unwrap_or(0);
    assert_eq!(events + reasons.len() as u64, 7, "{reasons:?}\n{stderr}");
    // Bound: 200 MB over a calm run's peak (the million-element body is 2 MB of JSON; a 1 GiB
    // line held whole would be 1,024 MB).
    let peak = peak_mb(&stderr);
    assert!(peak <= baseline + 200, "peak {peak} MB against {baseline} MB for a calm run\n{stderr}");
    eprintln!("hostile input: peak {peak} MB resident, calm run {baseline} MB");
}
