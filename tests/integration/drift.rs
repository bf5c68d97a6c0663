//! Generated artefacts stay in step with the code that generates them.

use crate::common::*;

#[test]
fn published_schemas_match_the_code() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(&["schema", "--write-dir", dir.path().to_str().unwrap()], dir.path());
    assert!(out.status.success());
    let names = |d: &std::path::Path| -> std::collections::BTreeSet<String> {
        std::fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".json"))
            .collect()
    };
    let fresh_files = names(dir.path());
    for table in ["kube_audit", "alerts", "container_log", "kube_events", "kube_pod_inventory", "kube_node_inventory", "insights_metrics"] {
        assert!(fresh_files.contains(&format!("{table}.json")), "no schema written for {table}");
    }
    assert_eq!(names(&repo_root().join("schemas")), fresh_files, "schemas/ holds exactly the generated table schemas");
    for file in &fresh_files {
        let fresh = std::fs::read_to_string(dir.path().join(file)).unwrap();
        let committed = std::fs::read_to_string(repo_root().join("schemas").join(file)).unwrap_or_default();
        assert_eq!(committed, fresh, "schemas/{file} is stale: run `crowsnest schema --write-dir schemas`");
    }
    // The Sentinel streams, likewise.
    let fresh_streams = names(&dir.path().join("sentinel"));
    assert_eq!(fresh_streams.len(), 2);
    assert_eq!(
        names(&repo_root().join("schemas/sentinel")),
        fresh_streams,
        "schemas/sentinel holds exactly the generated stream definitions"
    );
    for file in &fresh_streams {
        let fresh = std::fs::read_to_string(dir.path().join("sentinel").join(file)).unwrap();
        let committed = std::fs::read_to_string(repo_root().join("schemas/sentinel").join(file)).unwrap_or_default();
        assert_eq!(committed, fresh, "schemas/sentinel/{file} is stale: run `crowsnest schema --write-dir schemas`");
    }
}

#[test]
fn alert_json_follows_the_alert_schema() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(&["replay", "--no-progress"], dir.path());
    let schema: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(repo_root().join("schemas/alerts.json")).unwrap()).unwrap();
    let columns = schema["columns"].as_array().unwrap();
    for alert in stdout_alerts(&out) {
        let obj = alert.as_object().unwrap();
        for c in columns {
            let name = c["name"].as_str().unwrap();
            let nullable = c["nullable"].as_bool().unwrap();
            let v = obj.get(name);
            if !nullable {
                assert!(v.is_some_and(|v| !v.is_null()), "{name} is required: {alert}");
            }
            if let Some(v) = v.filter(|v| !v.is_null()) {
                let ok = match c["type"].as_str().unwrap() {
                    "string" => v.is_string() || ((name == "entities" || name == "fields") && v.is_object()),
                    "uint64" => v.is_u64(),
                    t if t.starts_with("timestamp") => v.as_str().is_some_and(|s| s.ends_with('Z')),
                    t if t.starts_with("list") => v.is_array(),
                    _ => true,
                };
                assert!(ok, "{name} has the wrong type in {alert}");
            }
        }
        for key in obj.keys() {
            assert!(columns.iter().any(|c| c["name"] == key.as_str()), "{key} is not in schemas/alerts.json");
        }
    }
}

#[test]
fn bundled_sample_is_what_gen_writes() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(&["gen", "--events", "3000", "--seed", "7"], dir.path());
    assert!(out.status.success());
    let mut committed = Vec::new();
    use std::io::Read;
    flate2::read::GzDecoder::new(std::fs::File::open(repo_root().join("pipeline/samples/aks-sample.jsonl.gz")).unwrap())
        .read_to_end(&mut committed)
        .unwrap();
    assert!(committed == out.stdout, "pipeline/samples/aks-sample.jsonl.gz is stale: run `crowsnest gen --events 3000 --seed 7 --out pipeline/samples/aks-sample.jsonl.gz`");
}

#[test]
fn shipped_configs_parse() {
    // No Docker engine here: docker-compose.yml is validated by parsing it and checking what it mounts exists.
    let compose: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(repo_root().join("docker-compose.yml")).unwrap()).unwrap();
    let services = compose["services"].as_mapping().expect("services");
    for name in ["crowsnest", "prometheus", "grafana"] {
        assert!(services.contains_key(name), "compose lacks {name}");
    }
    for (_, svc) in services {
        for v in svc["volumes"].as_sequence().into_iter().flatten() {
            let host = v.as_str().unwrap().split(':').next().unwrap();
            if host.starts_with("./dashboards") {
                assert!(repo_root().join(host).exists(), "compose mounts missing {host}");
            }
        }
    }
    let dash: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(repo_root().join("dashboards/crowsnest.json")).unwrap()).unwrap();
    assert!(dash["panels"].as_array().unwrap().len() >= 6);
    for f in ["crowsnest.example.toml", "dashboards/crowsnest.compose.toml"] {
        crowsnest::config::Config::parse(&std::fs::read_to_string(repo_root().join(f)).unwrap()).unwrap_or_else(|e| panic!("{f}: {e:#}"));
    }
    // The example config validates end to end (paths relative to the repository).
    let out = bin().args(["validate", "-c", "crowsnest.example.toml"]).current_dir(repo_root()).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}
