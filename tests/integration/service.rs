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

/// Sends `request` as it is and returns what the server answered before closing (or within
/// `wait`): the status line's code, or None when it closed without a word.
fn raw(port: u16, request: &[u8], wait: Duration) -> Option<u16> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(wait)).ok()?;
    let _ = s.write_all(request);
    let mut resp = Vec::new();
    let _ = s.read_to_end(&mut resp);
    String::from_utf8_lossy(&resp).split_whitespace().nth(1)?.parse().ok()
}

#[test]
fn the_metrics_server_answers_its_routes_only_and_outlasts_slow_and_oversized_clients() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    std::fs::write(dir.path().join("in.jsonl"), "").unwrap();
    std::fs::write(
        dir.path().join("crowsnest.toml"),
        format!("[source]\nkind = \"file\"\npaths = [\"in.jsonl\"]\nfollow = true\n[sinks]\nstdout = false\nfile = \"alerts.jsonl\"\n[metrics]\nlisten = \"127.0.0.1:{port}\"\n"),
    )
    .unwrap();
    let _guard = KillOnDrop(
        bin()
            .args(["run", "-c", "crowsnest.toml"])
            .current_dir(dir.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_for("/healthz", Duration::from_secs(30), || http_get(port, "/healthz"));

    // Only the three routes, and GET only: nothing resolves to a file.
    for path in ["/../../../../etc/passwd", "/metrics/../healthz", "/%2e%2e/%2e%2e/etc/passwd", "//etc/passwd", "/metrics.txt"] {
        assert_eq!(http_get(port, path).map(|r| r.0), Some(404), "{path}");
    }
    let post = raw(port, b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}", Duration::from_secs(5));
    assert_eq!(post, Some(405));
    // A head over 8 KiB is refused as such, not read on.
    let mut big = b"GET /metrics HTTP/1.1\r\n".to_vec();
    big.extend(std::iter::repeat_n(b'a', 64 * 1024));
    assert_eq!(raw(port, &big, Duration::from_secs(5)), Some(431));

    // 100 slowloris clients, each sending part of a head and then nothing: scrapes still work
    // meanwhile, and the server drops each slow client after its 5 s.
    let slow: Vec<std::net::TcpStream> = (0..100)
        .map(|_| {
            let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
            s.write_all(b"GET /metrics HTTP/1.1\r\nX-Slow: ").unwrap();
            s
        })
        .collect();
    let started = std::time::Instant::now();
    assert_eq!(http_get(port, "/metrics").map(|r| r.0), Some(200));
    assert!(started.elapsed() < Duration::from_secs(2), "a scrape waited {:?} behind slow clients", started.elapsed());
    // More idle clients than the server serves at once: those over the limit are told so and
    // closed at once instead of holding a descriptor.
    let flood: Vec<std::net::TcpStream> = (0..100).map(|_| std::net::TcpStream::connect(("127.0.0.1", port)).unwrap()).collect();
    let busy = raw(port, b"", Duration::from_secs(2));
    assert_eq!(busy, Some(503), "over the connection limit");
    for mut s in slow {
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut rest = Vec::new();
        let closed = s.read_to_end(&mut rest).is_ok();
        assert!(closed && rest.is_empty(), "a slow client was answered or kept: {:?}", String::from_utf8_lossy(&rest));
    }
    assert!(started.elapsed() < Duration::from_secs(9), "slow clients were held {:?}", started.elapsed());
    drop(flood);
    // Once they are gone, scrapes work as before.
    wait_for("a scrape after the flood", Duration::from_secs(10), || http_get(port, "/metrics").filter(|r| r.0 == 200));
}
