//! Helpers shared by the integration tests.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

pub const CLUSTER: &str =
    "/SUBSCRIPTIONS/11111111-2222-3333-4444-555555555555/RESOURCEGROUPS/RG/PROVIDERS/MICROSOFT.CONTAINERSERVICE/MANAGEDCLUSTERS/AKS-IT";

pub fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_crowsnest"))
}

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Runs `crowsnest ARGS` with `stdin` and returns its output.
pub fn run(args: &[&str], dir: &Path) -> Output {
    bin().args(args).current_dir(dir).stdin(std::process::Stdio::null()).output().expect("crowsnest runs")
}

pub fn stdout_alerts(out: &Output) -> Vec<Value> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("stdout line is not JSON ({e}): {l}")))
        .collect()
}

/// A realistic audit Event: a privileged pod created by a person (fires CN-AUDIT-001).
pub fn privileged_pod_event(audit_id: &str, t: &str) -> Value {
    // A distinct pod per event, so rule suppression (same entities) does not fold them.
    let pod = format!("pwn-{}", &audit_id[audit_id.len().saturating_sub(4)..]);
    json!({
        "kind": "Event", "apiVersion": "audit.k8s.io/v1", "level": "RequestResponse",
        "auditID": audit_id, "stage": "ResponseComplete",
        "requestURI": "/api/v1/namespaces/default/pods?fieldManager=kubectl-run", "verb": "create",
        "user": {"username": "eve@contoso.com", "groups": ["system:authenticated"], "extra": {"oid": ["9b7e2b52-0000-4000-8000-000000000001"]}},
        "sourceIPs": ["198.51.100.9"], "userAgent": "kubectl/v1.30.4 (linux/amd64) kubernetes/abc",
        "objectRef": {"resource": "pods", "namespace": "default", "name": pod, "apiVersion": "v1"},
        "responseStatus": {"metadata": {}, "code": 201},
        "requestObject": {"kind": "Pod", "apiVersion": "v1", "metadata": {"name": pod},
            "spec": {"containers": [{"name": "c", "image": "docker.io/library/ubuntu:22.04", "securityContext": {"privileged": true}}]}},
        "requestReceivedTimestamp": t, "stageTimestamp": t,
        "annotations": {"authorization.k8s.io/decision": "allow", "authorization.k8s.io/reason": ""}
    })
}

/// The AKS diagnostic-settings envelope of `events` (one line).
pub fn envelope(events: &[Value]) -> String {
    let records: Vec<Value> = events
        .iter()
        .map(|e| {
            json!({"time": e["stageTimestamp"], "resourceId": CLUSTER, "category": "kube-audit",
                "operationName": "Microsoft.ContainerService/managedClusters/diagnosticLogs/Read",
                "properties": {"log": e.to_string(), "stream": "stdout", "pod": "kube-apiserver-0"}})
        })
        .collect();
    json!({ "records": records }).to_string()
}

pub fn read_jsonl(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path).unwrap_or_default().lines().map(|l| serde_json::from_str(l).expect("JSON line")).collect()
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// GET `path` from 127.0.0.1:`port`: the status code and the body.
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").ok()?;
    let mut resp = String::new();
    s.read_to_string(&mut resp).ok()?;
    let code = resp.split_whitespace().nth(1)?.parse().ok()?;
    Some((code, resp.split("\r\n\r\n").nth(1).unwrap_or("").to_string()))
}

/// Alert ids read from a service's stdout until `want` distinct ones arrived (or it closed).
pub fn read_alert_ids(stdout: std::process::ChildStdout, want: usize) -> std::collections::HashSet<String> {
    use std::io::BufRead;
    let mut got = std::collections::HashSet::new();
    for line in std::io::BufReader::new(stdout).lines() {
        let a: Value = serde_json::from_str(&line.unwrap()).unwrap();
        got.insert(a["id"].as_str().unwrap().to_string());
        if got.len() >= want {
            break;
        }
    }
    got
}

/// The sum of a metric's samples (every label set) on a Prometheus text page.
pub fn metric(page: &str, name: &str) -> Option<f64> {
    let values: Vec<f64> =
        page.lines().filter(|l| l.split(['{', ' ']).next() == Some(name)).filter_map(|l| l.rsplit(' ').next()?.parse().ok()).collect();
    (!values.is_empty()).then(|| values.iter().sum())
}

/// The non-empty lines of a file, as bytes (one Kafka message each).
pub fn file_lines(path: &Path) -> Vec<Vec<u8>> {
    std::fs::read(path).expect("the file").split(|&b| b == b'\n').filter(|l| !l.is_empty()).map(<[u8]>::to_vec).collect()
}

/// `crowsnest -v run -c DIR/crowsnest.toml ARGS…` in `dir`, with `config` as that file and its
/// log appended to `DIR/crowsnest.log` (so a restart's log follows the first's); killed
/// (SIGKILL: no flush, no final commit) when dropped.
pub struct Running(pub Child);

impl Running {
    pub fn start(dir: &Path, config: &str, args: &[&str]) -> Running {
        Running::start_with_env(dir, config, args, &[])
    }

    /// [`Running::start`] with variables set in the service's environment only (tests run in
    /// threads of one process: setting them in our own would leak into the others).
    pub fn start_with_env(dir: &Path, config: &str, args: &[&str], env: &[(&str, &str)]) -> Running {
        let cfg = dir.join("crowsnest.toml");
        std::fs::write(&cfg, config).unwrap();
        let log = std::fs::OpenOptions::new().create(true).append(true).open(dir.join("crowsnest.log")).unwrap();
        let args: Vec<&str> = ["-c", cfg.to_str().unwrap()].into_iter().chain(args.iter().copied()).collect();
        Running(spawn_run(dir, &args, env, Stdio::null(), log))
    }

    /// `crowsnest -v run ARGS…` in `dir` with its stdout piped to the test (alerts the test reads
    /// when it chooses: until then the stdout sink stalls) and its log in `DIR/crowsnest.log`.
    pub fn with_stdout(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> (Running, std::process::ChildStdout) {
        let log = std::fs::File::create(dir.join("crowsnest.log")).unwrap();
        let mut child = spawn_run(dir, args, env, Stdio::piped(), log);
        let stdout = child.stdout.take().unwrap();
        (Running(child), stdout)
    }

    pub fn assert_running(&mut self, dir: &Path) {
        let log = || std::fs::read_to_string(dir.join("crowsnest.log")).unwrap_or_default();
        assert!(self.0.try_wait().unwrap().is_none(), "the pipeline exited:\n{}", log());
    }

    pub fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `crowsnest -v run ARGS…` in `dir`, variables `env` in its environment only, its log to `log`.
fn spawn_run(dir: &Path, args: &[&str], env: &[(&str, &str)], stdout: Stdio, log: std::fs::File) -> Child {
    bin()
        .args(["-v", "run"])
        .args(args)
        .envs(env.iter().copied())
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(log)
        .spawn()
        .expect("crowsnest runs")
}

impl Drop for Running {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Generated AKS records with every attack scenario, background traffic four hours later (it
/// moves the watermark past every window of the first part), and the alert ids a file replay
/// of the first part gives: what a streaming source must deliver.
pub struct AttackData {
    pub attacks: Vec<Vec<u8>>,
    pub later: Vec<Vec<u8>>,
    pub expected: std::collections::HashSet<String>,
}

impl AttackData {
    /// Writes `attacks.jsonl` and `later.jsonl` in `dir`; `messages` turns each file's lines
    /// into the messages a test publishes.
    pub fn generate(dir: &Path, seed: u64, messages: impl Fn(Vec<Vec<u8>>) -> Vec<Vec<u8>>) -> AttackData {
        let (seed, later_seed) = (seed.to_string(), (seed + 1).to_string());
        assert!(run(&["gen", "--events", "4000", "--seed", &seed, "--out", "attacks.jsonl"], dir).status.success());
        let later =
            ["gen", "--events", "1500", "--seed", &later_seed, "--no-attacks", "--start", "2026-11-01T12:00:00Z", "--out", "later.jsonl"];
        assert!(run(&later, dir).status.success());
        let replay = run(&["replay", "attacks.jsonl", "--no-progress"], dir);
        assert!(replay.status.success(), "{}", String::from_utf8_lossy(&replay.stderr));
        let expected: std::collections::HashSet<String> =
            stdout_alerts(&replay).iter().map(|a| a["id"].as_str().unwrap().to_string()).collect();
        assert!(expected.len() >= 8, "every scenario fires in the file replay: {expected:?}");
        AttackData {
            attacks: messages(file_lines(&dir.join("attacks.jsonl"))),
            later: messages(file_lines(&dir.join("later.jsonl"))),
            expected,
        }
    }
}

/// Calls `f` until it gives a value; fails the test after `timeout`.
pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}
