//! `crowsnest run` as a service: config, metrics and health endpoints, clean stop on SIGTERM.

use std::io::{Read, Write};
use std::time::Duration;

use crate::common::*;

/// Kills the service if the test fails before stopping it, so no process outlives the test.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn run_serves_metrics_and_stops_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let input = dir.path().join("audit.jsonl");
    std::fs::write(
        &input,
        format!("{}\nnot json\n", envelope(&[privileged_pod_event("d0000000-0000-4000-8000-000000000001", "2026-11-01T08:00:00.000001Z")])),
    )
    .unwrap();
    let config = format!(
        r#"
[source]
kind = "file"
paths = ["{}"]
follow = true

[sinks]
stdout = false
file = "${{ALERTS_DIR}}/alerts.jsonl"

[dead_letters]
file = "dl.jsonl"

[metrics]
listen = "127.0.0.1:{port}"
"#,
        input.display()
    );
    std::fs::write(dir.path().join("crowsnest.toml"), config).unwrap();

    let out = run(&["validate", "-c", "crowsnest.toml"], dir.path());
    assert!(!out.status.success(), "ALERTS_DIR is unset: validate must say so");
    assert!(String::from_utf8_lossy(&out.stderr).contains("ALERTS_DIR"));
    let out = bin().args(["validate", "-c", "crowsnest.toml"]).env("ALERTS_DIR", dir.path()).current_dir(dir.path()).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("8 rules planned") || String::from_utf8_lossy(&out.stdout).contains("rules planned")
    );

    let mut guard = KillOnDrop(
        bin()
            .args(["run", "-c", "crowsnest.toml"])
            .env("ALERTS_DIR", dir.path())
            .current_dir(dir.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let child = &mut guard.0;
    let alerts_file = dir.path().join("alerts.jsonl");
    wait_for("the first alert", Duration::from_secs(60), || (privileged(&alerts_file) == 1).then_some(()));
    let (code, body) = wait_for("/metrics", Duration::from_secs(30), || http_get(port, "/metrics"));
    assert_eq!(code, 200);
    for m in [
        "crowsnest_events_decoded_total{category=\"kube-audit\",table=\"kube_audit\"} 1",
        "crowsnest_dead_letters_total{reason=\"invalid_json\"} 1",
        "crowsnest_alerts_total{rule=\"CN-AUDIT-001\",severity=\"high\"} 1",
        "crowsnest_rule_matches_total{rule=\"CN-AUDIT-001\"} 1",
        "crowsnest_bytes_read_total",
        "crowsnest_batch_latency_seconds_bucket",
        "crowsnest_watermark_lag_seconds",
        "crowsnest_build_info{version=",
    ] {
        assert!(body.contains(m), "metrics lack {m}:\n{body}");
    }
    assert_eq!(http_get(port, "/healthz").unwrap().0, 200);
    assert_eq!(http_get(port, "/readyz").unwrap().0, 200);
    assert_eq!(http_get(port, "/nope").unwrap().0, 404);

    // Lines appended while running are picked up (follow).
    let mut f = std::fs::OpenOptions::new().append(true).open(&input).unwrap();
    writeln!(f, "{}", envelope(&[privileged_pod_event("d0000000-0000-4000-8000-000000000002", "2026-11-01T08:00:05.000001Z")])).unwrap();
    drop(f);
    wait_for("the appended alert", Duration::from_secs(30), || (privileged(&alerts_file) == 2).then_some(()));

    std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    let status = wait_for("exit after SIGTERM", Duration::from_secs(30), || child.try_wait().unwrap());
    let mut stderr = String::new();
    child.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
    assert!(status.success(), "clean exit: {stderr}");
    assert!(stderr.contains("crowsnest summary"), "{stderr}");
    assert_eq!(read_jsonl(&dir.path().join("dl.jsonl")).len(), 1);
}

/// CN-AUDIT-001 alerts in a JSON-lines alert file (the test's events fire other rules too).
fn privileged(path: &std::path::Path) -> usize {
    read_jsonl(path).iter().filter(|a| a["rule_id"] == "CN-AUDIT-001").count()
}

#[test]
fn metrics_bind_to_localhost_by_default() {
    let cfg = crowsnest::config::Config::parse("[source]\nkind = \"stdin\"").unwrap();
    assert!(cfg.metrics.listen.starts_with("127.0.0.1:"));
}
