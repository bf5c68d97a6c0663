//! The rule tools: `rules lint` on the shipped pack, `rules coverage`, `rules backtest`, and
//! `rules import-sigma` on rules written in the public Sigma format (tests/fixtures/sigma, with
//! real SigmaHQ Kubernetes audit rules in tests/fixtures/sigma/sigmahq), whose output must run
//! unchanged in the engine.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use crate::common::{envelope, repo_root, run, stdout_alerts};

#[test]
fn the_shipped_rule_pack_passes_lint() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(&["rules", "lint", "--rules", repo_root().join("detections").to_str().unwrap()], dir.path());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains(" 0 error(s)"), "{text}");
}

#[test]
fn coverage_lists_every_control_and_names_those_without_a_rule() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(&["rules", "coverage"], dir.path());
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("Threat Matrix for Kubernetes:"), "{text}");
    assert!(text.contains("privileged-pods") && text.contains("CN-AUDIT-001"), "{text}");
    assert!(text.contains("T1609"), "{text}");
}

/// A raw audit Event, one JSON object.
fn event(id: u32, user: &str, verb: &str, object_ref: Value, uri: &str, code: u16, t: &str) -> Value {
    json!({"kind": "Event", "apiVersion": "audit.k8s.io/v1", "level": "Metadata", "auditID": format!("5e000000-0000-4000-8000-{id:012}"),
        "stage": "ResponseComplete", "requestURI": uri, "verb": verb,
        "user": {"username": user, "groups": ["system:authenticated"]}, "sourceIPs": ["198.51.100.23"],
        "userAgent": "kubectl/v1.30.2 (linux/amd64) kubernetes/3968350", "objectRef": object_ref,
        "responseStatus": {"metadata": {}, "code": code}, "requestReceivedTimestamp": t, "stageTimestamp": t})
}

#[test]
fn backtest_runs_one_rule_and_counts_its_alerts_per_day() {
    let dir = tempfile::tempdir().unwrap();
    // Two days of the generator's attack scenarios.
    for (seed, start, out) in [("5", "2026-11-01T08:00:00Z", "d1.jsonl"), ("6", "2026-11-02T08:00:00Z", "d2.jsonl")] {
        assert!(run(&["gen", "--events", "2000", "--seed", seed, "--start", start, "--out", out], dir.path()).status.success());
    }
    let out = run(&["rules", "backtest", "CN-AUDIT-004", "d1.jsonl", "d2.jsonl"], dir.path());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    // Each day has the exec-into-pod scenario, the privileged pod's exec and the crypto-miner's
    // exec: 3 alerts a day.
    assert!(text.contains("2026-11-01   3") && text.contains("2026-11-02   3"), "{text}");
    assert!(text.contains("CN-AUDIT-004") && text.contains("6 alert(s)"), "{text}");
    // --json gives the same alerts as a replay of the same files, for that rule only.
    let json_out = run(&["rules", "backtest", "CN-AUDIT-004", "d1.jsonl", "d2.jsonl", "--json"], dir.path());
    let backtest: Vec<String> = stdout_alerts(&json_out).iter().map(|a| a["id"].as_str().unwrap().to_string()).collect();
    let replay = run(&["replay", "--no-progress", "d1.jsonl", "d2.jsonl"], dir.path());
    let mut from_replay: Vec<String> =
        stdout_alerts(&replay).iter().filter(|a| a["rule_id"] == "CN-AUDIT-004").map(|a| a["id"].as_str().unwrap().to_string()).collect();
    from_replay.sort();
    let mut sorted = backtest.clone();
    sorted.sort();
    assert_eq!(sorted, from_replay);
    let unknown = run(&["rules", "backtest", "CN-NOPE", "d1.jsonl"], dir.path());
    assert!(!unknown.status.success());
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("no rule with id CN-NOPE"));
}

#[test]
fn sigma_rules_convert_run_unchanged_and_unsupported_ones_say_why() {
    let dir = tempfile::tempdir().unwrap();
    // The fixtures at the top of tests/fixtures/sigma only: import-sigma searches a directory's
    // subdirectories too, and sigmahq/ and taxonomy/ have their own test below.
    let fixtures = dir.path().join("fixtures");
    std::fs::create_dir(&fixtures).unwrap();
    for entry in std::fs::read_dir(repo_root().join("tests/fixtures/sigma")).unwrap() {
        let p = entry.unwrap().path();
        if p.extension().is_some_and(|e| e == "yml") {
            std::fs::copy(&p, fixtures.join(p.file_name().unwrap())).unwrap();
        }
    }
    let out = run(&["rules", "import-sigma", fixtures.to_str().unwrap(), "--out", "sigma/rules"], dir.path());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    let outcome: BTreeMap<&str, &str> = text
        .lines()
        .filter_map(|l| {
            let (verdict, rest) = l.split_once(' ')?;
            let file = rest.trim().split([' ', ':']).next()?;
            Some((std::path::Path::new(file).file_name()?.to_str()?, verdict))
        })
        .filter(|(_, v)| *v == "converted" || *v == "skipped")
        .collect();
    for f in ["webhook_configuration_changed.yml", "shell_exec_in_pod.yml", "hostpath_pod.yml"] {
        assert_eq!(outcome.get(f), Some(&"converted"), "{f}: {text}");
    }
    for (f, why) in [
        ("unsupported_aggregation.yml", "timeframe"),
        ("unsupported_field.yml", "\"file_path\" has no kube_audit column"),
        ("not_kubernetes.yml", "only kubernetes audit rules convert"),
    ] {
        assert_eq!(outcome.get(f), Some(&"skipped"), "{f}: {text}");
        assert!(text.lines().any(|l| l.contains(f) && l.contains(why)), "{f} should say {why:?}: {text}");
    }
    assert!(text.contains("3 of 6 converted"), "{text}");

    // The converted rules run as they are, on AKS envelopes.
    let t = |m: u32| format!("2026-11-01T09:{m:02}:00.000000Z");
    let webhook = json!({"resource": "validatingwebhookconfigurations", "name": "gatekeeper-validating-webhook-configuration", "apiGroup": "admissionregistration.k8s.io", "apiVersion": "v1"});
    let exec = |pod: &str| json!({"resource": "pods", "namespace": "payments", "name": pod, "subresource": "exec", "apiVersion": "v1"});
    let mut host_pod = event(
        5,
        "mallory@contoso.com",
        "create",
        json!({"resource": "pods", "namespace": "default", "name": "logs", "apiVersion": "v1"}),
        "/api/v1/namespaces/default/pods",
        201,
        &t(5),
    );
    host_pod["requestObject"] = json!({"kind": "Pod", "apiVersion": "v1", "metadata": {"name": "logs"},
        "spec": {"containers": [{"name": "c", "image": "alpine:3.19"}], "volumes": [{"name": "h", "hostPath": {"path": "/var/log"}}]}});
    let mut node_pod = host_pod.clone();
    node_pod["auditID"] = json!("5e000000-0000-4000-8000-000000000006");
    node_pod["user"] =
        json!({"username": "system:node:aks-nodepool1-12345678-vmss000000", "groups": ["system:nodes", "system:authenticated"]});
    let events = vec![
        event(
            1,
            "mallory@contoso.com",
            "delete",
            webhook.clone(),
            "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations/gatekeeper-validating-webhook-configuration",
            200,
            &t(1),
        ),
        event(
            2,
            "system:serviceaccount:gatekeeper-system:gatekeeper-admin",
            "update",
            webhook,
            "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations/gatekeeper-validating-webhook-configuration",
            200,
            &t(2),
        ),
        event(
            3,
            "mallory@contoso.com",
            "create",
            exec("api-1"),
            "/api/v1/namespaces/payments/pods/api-1/exec?command=sh&container=api&stdin=true&tty=true",
            101,
            &t(3),
        ),
        event(
            4,
            "alice@contoso.com",
            "create",
            exec("api-2"),
            "/api/v1/namespaces/payments/pods/api-2/exec?command=ls&command=-l&container=api",
            101,
            &t(4),
        ),
        host_pod,
        node_pod,
    ];
    std::fs::write(dir.path().join("events.jsonl"), envelope(&events) + "\n").unwrap();
    let replay = run(&["replay", "--no-progress", "--rules", "sigma", "events.jsonl"], dir.path());
    assert!(replay.status.success(), "{}", String::from_utf8_lossy(&replay.stderr));
    let fired: Vec<(String, String)> = stdout_alerts(&replay)
        .iter()
        .map(|a| (a["rule_id"].as_str().unwrap().to_string(), a["audit_ids"][0].as_str().unwrap().to_string()))
        .collect();
    let id = |n: u32| format!("5e000000-0000-4000-8000-{n:012}");
    assert_eq!(
        fired,
        vec![("SIGMA-3f9c2a71".to_string(), id(1)), ("SIGMA-8b1d4e2f".to_string(), id(3)), ("SIGMA-c4e5f6a7".to_string(), id(5)),],
        "{}",
        String::from_utf8_lossy(&replay.stderr)
    );
    // Lint sees them as plannable rules that still need test cases.
    let lint = run(&["rules", "lint", "--rules", "sigma"], dir.path());
    let lint_text = String::from_utf8_lossy(&lint.stdout);
    assert!(lint_text.contains("no positive test case") && !lint_text.contains("does not plan"), "{lint_text}");
}

/// `import-sigma`'s verdict per file name, from its output lines.
fn import_verdicts(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| {
            let (verdict, rest) = l.split_once(' ')?;
            let file = rest.trim().split([' ', ':']).next()?;
            Some((std::path::Path::new(file).file_name()?.to_str()?.to_string(), verdict.to_string()))
        })
        .filter(|(_, v)| v == "converted" || v == "skipped")
        .collect()
}

#[test]
fn real_sigmahq_kubernetes_rules_convert_plan_and_fire_and_the_others_say_why() {
    let dir = tempfile::tempdir().unwrap();
    let sigmahq = repo_root().join("tests/fixtures/sigma/sigmahq");
    let out = run(&["rules", "import-sigma", sigmahq.to_str().unwrap(), "--out", "sigma/rules"], dir.path());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    let verdicts = import_verdicts(&text);
    // apiGroup (the object's, as SigmaHQ writes it), capabilities and hostPath (list columns),
    // responseStatus.code (a number) under the newer logsource service audit.k8s.io/v1.
    for f in [
        "kubernetes_audit_sidecar_injection.yml",
        "kubernetes_audit_privileged_pod_creation.yml",
        "kubernetes_audit_hostpath_mount.yml",
        "kubernetes_audit_unauthorized_unauthenticated_actions.yml",
    ] {
        assert_eq!(verdicts.get(f).map(String::as_str), Some("converted"), "{f}: {text}");
    }
    for (f, why) in [
        (
            "kubernetes_audit_potential_enumeration_activity.yml",
            "selection selection_status: field responseStatus.code (response_code, a number): the value \"ALLOW\" can never match a number",
        ),
        ("kubernetes_audit_compiler_execution_in_container.yml", "selection selection: field \"file_path\" has no kube_audit column"),
    ] {
        assert_eq!(verdicts.get(f).map(String::as_str), Some("skipped"), "{f}: {text}");
        assert!(text.lines().any(|l| l.starts_with("skipped") && l.contains(f) && l.contains(why)), "{f} should say {why:?}: {text}");
    }
    assert!(text.contains("4 of 6 converted"), "{text}");
    // A rule of SigmaHQ's taxonomy matching list fields by pattern, into the same directory.
    let taxonomy = repo_root().join("tests/fixtures/sigma/taxonomy");
    let out = run(&["rules", "import-sigma", taxonomy.to_str().unwrap(), "--out", "sigma/rules"], dir.path());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("1 of 1 converted"), "{text}");
    let rule = std::fs::read_to_string(dir.path().join("sigma/rules/SIGMA-5d6e7f80.yaml")).unwrap();
    assert!(rule.contains("regexp_like(array_to_string(added_capabilities, chr(10))") && rule.contains("- T1611"), "{rule}");

    // Lint plans every converted rule (they only lack test cases).
    let lint = run(&["rules", "lint", "--rules", "sigma"], dir.path());
    let lint_text = String::from_utf8_lossy(&lint.stdout);
    assert!(lint_text.contains("lint: 5 rules") && !lint_text.contains("does not plan"), "{lint_text}");

    // And they run: each fires on its event only.
    let t = |m: u32| format!("2026-11-01T10:{m:02}:00.000000Z");
    let pod = |name: &str, ns: &str| json!({"resource": "pods", "namespace": ns, "name": name, "apiVersion": "v1"});
    let pod_spec = |volumes: Value, caps: Value| {
        json!({"kind": "Pod", "apiVersion": "v1", "metadata": {"name": "p"}, "spec": {"volumes": volumes,
            "containers": [{"name": "c", "image": "alpine:3.19", "securityContext": {"capabilities": {"add": caps}}}]}})
    };
    let mut sidecar = event(
        1,
        "mallory@contoso.com",
        "patch",
        json!({"resource": "deployments", "namespace": "payments", "name": "api", "apiGroup": "apps", "apiVersion": "v1"}),
        "/apis/apps/v1/namespaces/payments/deployments/api",
        200,
        &t(1),
    );
    sidecar["level"] = json!("Request");
    let mut caps = event(2, "mallory@contoso.com", "create", pod("caps", "kube-system"), "/api/v1/namespaces/kube-system/pods", 201, &t(2));
    caps["requestObject"] = pod_spec(json!([]), json!(["NET_ADMIN"]));
    let mut host = event(3, "mallory@contoso.com", "create", pod("logs", "default"), "/api/v1/namespaces/default/pods", 201, &t(3));
    host["requestObject"] = pod_spec(json!([{"name": "h", "hostPath": {"path": "/var/log"}}]), json!([]));
    // A node identity in the nodes group adding a capability in kube-system: only SigmaHQ's
    // privileged-pod rule (which has no filter) fires.
    let mut node_caps = event(4, "aks-bootstrap", "create", pod("agent", "kube-system"), "/api/v1/namespaces/kube-system/pods", 201, &t(4));
    node_caps["user"] = json!({"username": "aks-bootstrap", "groups": ["system:nodes", "system:authenticated"]});
    node_caps["requestObject"] = pod_spec(json!([]), json!(["SYS_ADMIN"]));
    let denied = event(
        5,
        "bob@contoso.com",
        "list",
        json!({"resource": "secrets", "namespace": "payments", "apiVersion": "v1"}),
        "/api/v1/namespaces/payments/secrets",
        403,
        &t(5),
    );
    let quiet = event(6, "alice@contoso.com", "get", pod("web", "default"), "/api/v1/namespaces/default/pods/web", 200, &t(6));
    std::fs::write(dir.path().join("events.jsonl"), envelope(&[sidecar, caps, host, node_caps, denied, quiet]) + "\n").unwrap();
    let replay = run(&["replay", "--no-progress", "--rules", "sigma", "events.jsonl"], dir.path());
    assert!(replay.status.success(), "{}", String::from_utf8_lossy(&replay.stderr));
    let mut fired: Vec<(String, String)> = stdout_alerts(&replay)
        .iter()
        .map(|a| (a["rule_id"].as_str().unwrap().to_string(), a["audit_ids"][0].as_str().unwrap().to_string()))
        .collect();
    fired.sort();
    let id = |n: u32| format!("5e000000-0000-4000-8000-{n:012}");
    let mut want: Vec<(String, String)> = [
        ("SIGMA-0d933542", 5),
        ("SIGMA-402b955c", 3),
        ("SIGMA-5d6e7f80", 2),
        ("SIGMA-ad9012a6", 1),
        ("SIGMA-c5cd1b20", 2),
        ("SIGMA-c5cd1b20", 4),
    ]
    .iter()
    .map(|(r, n)| (r.to_string(), id(*n)))
    .collect();
    want.sort();
    assert_eq!(fired, want, "{}", String::from_utf8_lossy(&replay.stderr));
}
