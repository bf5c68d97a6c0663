//! The public-API cluster profile of `crowsnest gen` (`--profile public-api`): a cluster whose
//! API server has a public endpoint (no private cluster, no VNet integration), so that every
//! client inside the cluster (the kubelets, `nodeclient`, the kube-system add-ons, the
//! operators running in pods) reaches it through the cluster's outbound public address,
//! [`PUBLIC_API_EGRESS_IP`]; only kube-controller-manager, the scheduler, aksService and
//! masterclient talk from the AKS-managed control plane (172.31.x), and people from their own
//! public addresses.
//!
//! The traffic is a schedule rather than a flat mix: heartbeats at their real periods (each
//! node's lease every 10 s, its status every 5 minutes, the leader-election leases of the
//! control plane and the operators every 2 to 15 s), a Poisson stream of controller and agent
//! requests on top that fills the rate up, mostly get/list/watch with about one request in
//! ten a workload, RBAC or secret write, and the follow-ups of the pods that the ReplicaSet,
//! DaemonSet and Job controllers create (binding, token, status). People (alice, bob, carol)
//! and internet scanners come at a fixed rate of event time, whatever the total rate: a few
//! kubectl requests a day each, a few hundred scanner probes a day.

use serde_json::value::RawValue;

use super::{actor, pod_spec, Actor, Event, Gen, ObjectRef, Rng, APPS, APP_NAMESPACES, NODES, SEC};

/// The cluster's outbound public address (its load balancer's or NAT gateway's egress IP):
/// where the API server sees the nodes and the pods come from in the public-API profile.
pub const PUBLIC_API_EGRESS_IP: &str = "20.61.123.45";

/// The AKS-managed control plane (kube-controller-manager and the scheduler).
const CONTROL_PLANE_IP: &str = "172.31.22.10";
const KUBELET: &str = "kubelet/v1.30.4 (linux/amd64) kubernetes/6b1f4a2";

/// The node leases' renewal period, and the node status report period.
const NODE_LEASE_EVERY: i64 = 10 * SEC;
const NODE_STATUS_EVERY: i64 = 300 * SEC;

/// Leader-election leases renewed by the control plane and the operators: who (index into
/// `PublicApi::leaders`), namespace, lease, renewal period in milliseconds.
const LEADER_LEASES: &[(usize, &str, &str, i64)] = &[
    (0, "kube-system", "kube-controller-manager", 2_000),
    (1, "kube-system", "kube-scheduler", 2_000),
    (2, "kube-system", "cert-manager-controller", 15_000),
    (3, "ingress-nginx", "ingress-nginx-leader", 10_000),
    (4, "flux-system", "kustomize-controller-leader-election", 5_000),
    (5, "flux-system", "source-controller-leader-election", 5_000),
];

/// Requests per second of event time that the heartbeats take (node leases and status, the
/// leader leases): the Poisson stream fills the rest of the requested rate.
fn heartbeat_rate() -> f64 {
    let nodes = NODES.len() as f64 * (SEC as f64 / NODE_LEASE_EVERY as f64 + SEC as f64 / NODE_STATUS_EVERY as f64);
    nodes + LEADER_LEASES.iter().map(|l| 1000.0 / l.3 as f64).sum::<f64>()
}

/// The Poisson stream never goes below this, whatever the requested rate.
const MIN_RANDOM_RATE: f64 = 0.5;
/// kubectl requests by people (three of them) per second of event time: about 75 a day.
const PEOPLE_RATE: f64 = 75.0 / 86_400.0;
/// Internet scanners probing the public endpoint: about 260 requests a day.
const SCANNER_RATE: f64 = 260.0 / 86_400.0;
const SCANNER_AGENTS: &[&str] = &["Mozilla/5.0 zgrab/0.x", "python-requests/2.31.0", "curl/8.5.0"];
const SCANNERS: &[&str] = &["192.0.2.10", "192.0.2.77", "198.51.100.140", "203.0.113.201"];

/// What the schedule holds: the Poisson stream's next request, a heartbeat, or a step that
/// follows a pod's creation.
pub(super) enum Task {
    Random,
    NodeLease(usize),
    NodeStatus(usize),
    Leader(usize),
    Bind { ns: String, pod: String },
    Token { ns: String, sa: &'static str, node: usize },
    PodStatus { ns: String, pod: String, node: usize },
}

/// A Deployment of the application namespaces and its current ReplicaSet.
struct Workload {
    ns: &'static str,
    app: &'static str,
    replicaset: String,
    uid: String,
}

pub(super) struct PublicApi {
    schedule: Vec<(i64, u64, Task)>,
    seq: u64,
    /// Requests per second of the Poisson stream (the requested rate less the heartbeats).
    random_rate: f64,
    kubelets: Vec<Actor>,
    nodeclient: Actor,
    /// kube-controller-manager, scheduler, cert-manager, ingress-nginx, kustomize- and
    /// source-controller (the holders of LEADER_LEASES).
    leaders: Vec<Actor>,
    coredns: Actor,
    konnectivity: Actor,
    metrics_server: Actor,
    azure_policy: Actor,
    ama_logs: Actor,
    defender_collector: Actor,
    defender_publisher: Actor,
    gatekeeper: Actor,
    cainjector: Actor,
    /// replicaset, deployment, daemon-set, job, cronjob, endpointslice controllers and the
    /// garbage collector, all kube-controller-manager.
    kcm_sas: Vec<Actor>,
    aks_service: Actor,
    masterclient: Actor,
    people: Vec<Actor>,
    workloads: Vec<Workload>,
    ama_logs_ds_uid: String,
}

fn service_account(ns: &str, name: &str, ip: &str, agent: &str) -> Actor {
    actor(
        &format!("system:serviceaccount:{ns}:{name}"),
        &["system:serviceaccounts", &format!("system:serviceaccounts:{ns}"), "system:authenticated"],
        ip,
        agent,
        None,
    )
}

/// A kube-controller-manager controller, by its service account.
fn controller(name: &str) -> Actor {
    service_account(
        "kube-system",
        name,
        CONTROL_PLANE_IP,
        &format!("kube-controller-manager/v1.30.4 (linux/amd64) kubernetes/6b1f4a2/system:serviceaccount:kube-system:{name}"),
    )
}

const GATEKEEPER_CONSTRAINTS: &[&str] = &[
    "k8sazurev3containerlimits",
    "k8sazurev2noprivilege",
    "k8sazurev3allowedcapabilities",
    "k8sazurev2blockhostnamespace",
    "k8sazurev1serviceallowedports",
];
/// Secrets and config maps that the application pods mount (the kubelets read them).
const APP_MOUNTS: &[&str] = &["app-config", "frontend-tls", "api-tls", "registry-pull"];
const SYSTEM_PODS: &[&str] =
    &["coredns", "konnectivity-agent", "metrics-server", "azure-policy", "ama-logs", "microsoft-defender-collector-sa"];

impl PublicApi {
    pub(super) fn new(g: &mut Gen, start: i64, rate: f64) -> PublicApi {
        let egress = PUBLIC_API_EGRESS_IP;
        let kubelets = g.kubelets.iter().map(|k| Actor { ip: egress.to_string(), agent: KUBELET.to_string(), ..k.clone() }).collect();
        let nodeclient = Actor { ip: egress.to_string(), ..g.aks[2].clone() };
        let sa = |ns: &str, name: &str, agent: &str| service_account(ns, name, egress, agent);
        let leaders = vec![
            g.controllers[0].clone(),
            g.controllers[1].clone(),
            sa("cert-manager", "cert-manager", "cert-manager-controller/v1.15.1 (linux/amd64) cert-manager/9f2b9e1a"),
            sa("ingress-nginx", "ingress-nginx", "nginx-ingress-controller/v1.10.1 (linux/amd64) ingress-nginx/4fb5aac1dd"),
            sa("flux-system", "kustomize-controller", "kustomize-controller/v1.3.0 (linux/amd64) flux/v2"),
            sa("flux-system", "source-controller", "source-controller/v1.3.0 (linux/amd64) flux/v2"),
        ];
        let kcm_sas = [
            "replicaset-controller",
            "deployment-controller",
            "daemon-set-controller",
            "job-controller",
            "cronjob-controller",
            "endpointslice-controller",
            "generic-garbage-collector",
        ]
        .iter()
        .map(|n| controller(n))
        .collect();
        let mut workloads = Vec::new();
        for ns in APP_NAMESPACES {
            for app in APPS {
                let hash: String = (g.rng.suffix() + &g.rng.suffix())[..9].to_string();
                workloads.push(Workload { ns, app, replicaset: format!("{app}-{hash}"), uid: g.rng.uuid() });
            }
        }
        let random_rate = (rate - heartbeat_rate()).max(MIN_RANDOM_RATE);
        let mut p = PublicApi {
            schedule: Vec::new(),
            seq: 0,
            random_rate,
            kubelets,
            nodeclient,
            leaders,
            coredns: sa("kube-system", "coredns", "coredns/v1.11.1 (linux/amd64) kubernetes/coredns"),
            konnectivity: sa("kube-system", "konnectivity-agent", "konnectivity-agent/v0.1.6 (linux/amd64)"),
            metrics_server: sa("kube-system", "metrics-server", "metrics-server/v0.7.1 (linux/amd64) kubernetes/metrics-server"),
            azure_policy: sa("kube-system", "azure-policy", "azure-policy/v1.5.0 (linux/amd64)"),
            ama_logs: sa("kube-system", "ama-logs", "ama-logs/3.1.22 (linux/amd64) containerinsights"),
            defender_collector: sa("kube-system", "microsoft-defender-collector-sa", "microsoft-defender-collector/1.0.155 (linux/amd64)"),
            defender_publisher: sa("kube-system", "microsoft-defender-publisher-sa", "microsoft-defender-publisher/1.0.155 (linux/amd64)"),
            gatekeeper: sa("gatekeeper-system", "gatekeeper-admin", "gatekeeper/v3.16.3 (linux/amd64) 0c1a4b2/audit"),
            cainjector: sa(
                "cert-manager",
                "cert-manager-cainjector",
                "cert-manager-cainjector/v1.15.1 (linux/amd64) cert-manager/9f2b9e1a",
            ),
            kcm_sas,
            aks_service: g.aks[0].clone(),
            masterclient: g.aks[1].clone(),
            people: g.people.clone(),
            workloads,
            ama_logs_ds_uid: g.rng.uuid(),
        };
        // Heartbeats start at random phases of their periods.
        for i in 0..NODES.len() {
            let (a, b) = (g.rng.below(NODE_LEASE_EVERY as u64) as i64, g.rng.below(NODE_STATUS_EVERY as u64) as i64);
            p.push(start + a, Task::NodeLease(i));
            p.push(start + b, Task::NodeStatus(i));
        }
        for (j, l) in LEADER_LEASES.iter().enumerate() {
            let phase = g.rng.below((l.3 * 1_000_000) as u64) as i64;
            p.push(start + phase, Task::Leader(j));
        }
        let first = p.gap(&mut g.rng);
        p.push(start + first, Task::Random);
        p
    }

    fn push(&mut self, at: i64, task: Task) {
        self.schedule.push((at, self.seq, task));
        self.seq += 1;
    }

    /// Exponential gaps: the Poisson stream.
    fn gap(&self, rng: &mut Rng) -> i64 {
        let gap = -(1.0 - rng.unit()).ln() / self.random_rate;
        (gap * 1e9) as i64
    }

    /// A heartbeat's next time: its period, give or take 100 ms.
    fn again(rng: &mut Rng, at: i64, every: i64) -> i64 {
        at + every - 100_000_000 + rng.below(200_000_000) as i64
    }

    /// The next task by time (and order of scheduling), taken off the schedule; heartbeats and
    /// the Poisson stream put their next occurrence back.
    pub(super) fn next(&mut self, rng: &mut Rng) -> (i64, Task) {
        let i = (0..self.schedule.len()).min_by_key(|&i| (self.schedule[i].0, self.schedule[i].1)).expect("the schedule is never empty");
        let (at, _, task) = self.schedule.swap_remove(i);
        match task {
            Task::Random => {
                let next = at + self.gap(rng);
                self.push(next, Task::Random);
            }
            Task::NodeLease(n) => self.push(Self::again(rng, at, NODE_LEASE_EVERY), Task::NodeLease(n)),
            Task::NodeStatus(n) => self.push(Self::again(rng, at, NODE_STATUS_EVERY), Task::NodeStatus(n)),
            Task::Leader(j) => self.push(Self::again(rng, at, LEADER_LEASES[j].3 * 1_000_000), Task::Leader(j)),
            _ => {}
        }
        (at, task)
    }

    /// The event of a task taken off the schedule by [`PublicApi::next`].
    pub(super) fn event(&mut self, g: &mut Gen, task: Task, at: i64) -> Event {
        match task {
            Task::Random => self.random(g, at),
            Task::NodeLease(n) => {
                let who = self.kubelets[n].clone();
                g.call(&who, at, "update", Gen::grouped("leases", "coordination.k8s.io", Some("kube-node-lease"), Some(NODES[n])), "", 200)
            }
            Task::NodeStatus(n) => {
                let who = self.kubelets[n].clone();
                let o = ObjectRef { subresource: Some("status".into()), ..Gen::core("nodes", None, Some(NODES[n])) };
                g.call(&who, at, "patch", o, "", 200)
            }
            Task::Leader(j) => {
                let (k, ns, name, _) = LEADER_LEASES[j];
                let who = self.leaders[k].clone();
                g.call(&who, at, "update", Gen::grouped("leases", "coordination.k8s.io", Some(ns), Some(name)), "", 200)
            }
            Task::Bind { ns, pod } => {
                let who = self.leaders[1].clone();
                let o = ObjectRef { subresource: Some("binding".into()), ..Gen::core("pods", Some(&ns), Some(&pod)) };
                g.call(&who, at, "create", o, "", 201)
            }
            Task::Token { ns, sa, node } => {
                let who = self.kubelets[node].clone();
                let o = ObjectRef { subresource: Some("token".into()), ..Gen::core("serviceaccounts", Some(&ns), Some(sa)) };
                g.call(&who, at, "create", o, "", 201)
            }
            Task::PodStatus { ns, pod, node } => {
                let who = self.kubelets[node].clone();
                let o = ObjectRef { subresource: Some("status".into()), ..Gen::core("pods", Some(&ns), Some(&pod)) };
                g.call(&who, at, "patch", o, "", 200)
            }
        }
    }

    /// One request of the Poisson stream.
    fn random(&mut self, g: &mut Gen, at: i64) -> Event {
        // People and scanners at a fixed rate of event time, whatever the total rate.
        let u = g.rng.unit() * self.random_rate;
        if u < PEOPLE_RATE {
            return self.person(g, at);
        }
        if u < PEOPLE_RATE + SCANNER_RATE {
            return self.scanner(g, at);
        }
        match g.rng.below(1000) {
            0..=329 => self.kubelet(g, at),
            330..=332 => {
                let who = self.nodeclient.clone();
                if g.rng.chance(0.1) {
                    g.call(&who, at, "list", Gen::grouped("certificatesigningrequests", "certificates.k8s.io", None, None), "", 200)
                } else {
                    let node = *g.rng.pick(NODES);
                    g.call(&who, at, "get", Gen::core("nodes", None, Some(node)), "", 200)
                }
            }
            333..=529 => self.node_agent(g, at),
            530..=599 => self.gatekeeper(g, at),
            600..=629 => self.cert_manager(g, at),
            630..=669 => self.ingress_nginx(g, at),
            670..=749 => self.flux(g, at),
            750..=976 => self.control_plane(g, at),
            977..=979 => self.ci_runner(g, at),
            _ => self.aks(g, at),
        }
    }

    fn kubelet(&mut self, g: &mut Gen, at: i64) -> Event {
        let n = g.rng.below(NODES.len() as u64) as usize;
        let who = self.kubelets[n].clone();
        let node = NODES[n];
        let ns = *g.rng.pick(&["web", "payments", "orders", "kube-system", "ingress-nginx", "cert-manager", "flux-system"]);
        match g.rng.below(300) {
            0..=39 => {
                g.call(&who, at, "watch", Gen::core("pods", None, None), &format!("?fieldSelector=spec.nodeName%3D{node}&watch=true"), 200)
            }
            40..=79 => g.call(&who, at, "get", Gen::core("configmaps", Some(ns), Some("kube-root-ca.crt")), "", 200),
            80..=114 => {
                let name = *g.rng.pick(APP_MOUNTS);
                g.call(&who, at, "get", Gen::core("secrets", Some(ns), Some(name)), "", 200)
            }
            115..=144 => {
                let name = *g.rng.pick(APP_MOUNTS);
                let query = format!("?fieldSelector=metadata.name%3D{name}&watch=true");
                let res = if name.ends_with("-tls") || name == "registry-pull" { "secrets" } else { "configmaps" };
                g.call(&who, at, "watch", Gen::core(res, Some(ns), None), &query, 200)
            }
            145..=174 => g.call(&who, at, "get", Gen::core("nodes", None, Some(node)), "", 200),
            175..=194 => g.call(&who, at, "create", Gen::grouped("subjectaccessreviews", "authorization.k8s.io", None, None), "", 201),
            195..=204 => g.call(&who, at, "create", Gen::grouped("tokenreviews", "authentication.k8s.io", None, None), "", 201),
            205..=219 => {
                let sa = *g.rng.pick(SYSTEM_PODS);
                let o = ObjectRef { subresource: Some("token".into()), ..Gen::core("serviceaccounts", Some("kube-system"), Some(sa)) };
                g.call(&who, at, "create", o, "", 201)
            }
            220..=241 => {
                let w = &self.workloads[g.rng.below(self.workloads.len() as u64) as usize];
                let (ns, pod) = (w.ns, format!("{}-{}", w.replicaset, g.rng.suffix()));
                let o = ObjectRef { subresource: Some("status".into()), ..Gen::core("pods", Some(ns), Some(&pod)) };
                g.call(&who, at, "patch", o, "", 200)
            }
            242..=264 => g.call(&who, at, "create", Gen::core("events", Some(ns), None), "", 201),
            265..=284 => g.call(&who, at, "watch", Gen::core("services", None, None), "?watch=true", 200),
            _ => g.call(&who, at, "get", Gen::grouped("csinodes", "storage.k8s.io", None, Some(node)), "", 200),
        }
    }

    /// The kube-system add-ons that run on the nodes.
    fn node_agent(&mut self, g: &mut Gen, at: i64) -> Event {
        match g.rng.below(197) {
            0..=36 => {
                let who = self.coredns.clone();
                let o = match g.rng.below(3) {
                    0 => Gen::grouped("endpointslices", "discovery.k8s.io", None, None),
                    1 => Gen::core("services", None, None),
                    _ => Gen::core("namespaces", None, None),
                };
                g.call(&who, at, "watch", o, "?allowWatchBookmarks=true&watch=true", 200)
            }
            37..=41 => {
                let who = self.konnectivity.clone();
                g.call(&who, at, "list", Gen::core("services", None, None), "", 200)
            }
            42..=66 => {
                let who = self.metrics_server.clone();
                match g.rng.below(3) {
                    0 => g.call(&who, at, "list", Gen::core("nodes", None, None), "", 200),
                    1 => g.call(
                        &who,
                        at,
                        "get",
                        Gen::core("configmaps", Some("kube-system"), Some("extension-apiserver-authentication")),
                        "",
                        200,
                    ),
                    _ => g.call(&who, at, "create", Gen::grouped("subjectaccessreviews", "authorization.k8s.io", None, None), "", 201),
                }
            }
            67..=91 => {
                let who = self.azure_policy.clone();
                match g.rng.below(50) {
                    0 => {
                        let kind = *g.rng.pick(GATEKEEPER_CONSTRAINTS);
                        g.call(
                            &who,
                            at,
                            "update",
                            Gen::grouped("constrainttemplates", "templates.gatekeeper.sh", None, Some(kind)),
                            "",
                            200,
                        )
                    }
                    1..=19 => g.call(&who, at, "list", Gen::grouped("constrainttemplates", "templates.gatekeeper.sh", None, None), "", 200),
                    20..=39 => {
                        let kind = *g.rng.pick(GATEKEEPER_CONSTRAINTS);
                        g.call(&who, at, "list", Gen::grouped(kind, "constraints.gatekeeper.sh", None, None), "", 200)
                    }
                    _ => g.call(&who, at, "get", Gen::core("configmaps", Some("kube-system"), Some("azure-policy-config")), "", 200),
                }
            }
            92..=146 => {
                let who = self.ama_logs.clone();
                match g.rng.below(6) {
                    0 => g.call(&who, at, "list", Gen::core("pods", None, None), "?limit=500", 200),
                    1 => g.call(&who, at, "list", Gen::core("nodes", None, None), "", 200),
                    2 => g.call(&who, at, "list", Gen::core("events", None, None), "?fieldSelector=type%21%3DNormal&limit=4000", 200),
                    3 => g.call(&who, at, "list", Gen::core("services", None, None), "", 200),
                    4 => g.call(&who, at, "list", Gen::grouped("replicasets", "apps", None, None), "?limit=500", 200),
                    _ => {
                        g.call(&who, at, "get", Gen::core("configmaps", Some("kube-system"), Some("container-azm-ms-agentconfig")), "", 404)
                    }
                }
            }
            147..=181 => {
                let who = self.defender_collector.clone();
                let o = match g.rng.below(8) {
                    0 => Gen::core("pods", None, None),
                    1 => Gen::core("nodes", None, None),
                    2 => Gen::core("namespaces", None, None),
                    3 => Gen::core("services", None, None),
                    4 => Gen::grouped("roles", "rbac.authorization.k8s.io", None, None),
                    5 => Gen::grouped("rolebindings", "rbac.authorization.k8s.io", None, None),
                    6 => Gen::grouped("clusterrolebindings", "rbac.authorization.k8s.io", None, None),
                    _ => Gen::grouped("networkpolicies", "networking.k8s.io", None, None),
                };
                let verb = if g.rng.chance(0.5) { "watch" } else { "list" };
                let query = if verb == "watch" { "?allowWatchBookmarks=true&watch=true" } else { "?limit=500" };
                g.call(&who, at, verb, o, query, 200)
            }
            _ => {
                let who = self.defender_publisher.clone();
                if g.rng.chance(0.5) {
                    g.call(&who, at, "get", Gen::core("configmaps", Some("kube-system"), Some("microsoft-defender-config")), "", 200)
                } else {
                    g.call(&who, at, "list", Gen::core("namespaces", None, None), "", 200)
                }
            }
        }
    }

    /// Azure Policy's Gatekeeper: reads the constraints, audits the pods, writes status.
    fn gatekeeper(&mut self, g: &mut Gen, at: i64) -> Event {
        let who = self.gatekeeper.clone();
        let kind = *g.rng.pick(GATEKEEPER_CONSTRAINTS);
        match g.rng.below(70) {
            0..=19 => g.call(&who, at, "list", Gen::grouped(kind, "constraints.gatekeeper.sh", None, None), "", 200),
            20..=29 => g.call(&who, at, "watch", Gen::grouped(kind, "constraints.gatekeeper.sh", None, None), "?watch=true", 200),
            30..=39 => g.call(&who, at, "get", Gen::grouped("constrainttemplates", "templates.gatekeeper.sh", None, Some(kind)), "", 200),
            40..=49 => g.call(&who, at, "list", Gen::core("pods", None, None), "?limit=500", 200),
            50..=59 => {
                let name = format!("azurepolicy-{kind}-{}", g.rng.hex(20));
                let o =
                    ObjectRef { subresource: Some("status".into()), ..Gen::grouped(kind, "constraints.gatekeeper.sh", None, Some(&name)) };
                g.call(&who, at, "update", o, "", 200)
            }
            _ => {
                let pod = format!("gatekeeper-audit-{}-{}", g.rng.suffix(), g.rng.suffix());
                let name = format!("{pod}-{kind}");
                g.call(
                    &who,
                    at,
                    "update",
                    Gen::grouped("constraintpodstatuses", "status.gatekeeper.sh", Some("gatekeeper-system"), Some(&name)),
                    "",
                    200,
                )
            }
        }
    }

    fn cert_manager(&mut self, g: &mut Gen, at: i64) -> Event {
        let who = self.leaders[2].clone();
        let ns = *g.rng.pick(APP_NAMESPACES);
        let app = *g.rng.pick(APPS);
        match g.rng.below(30) {
            0..=7 => g.call(&who, at, "watch", Gen::grouped("certificates", "cert-manager.io", None, None), "?watch=true", 200),
            8..=11 => g.call(&who, at, "list", Gen::grouped("certificaterequests", "cert-manager.io", None, None), "", 200),
            12..=19 => g.call(&who, at, "get", Gen::core("secrets", Some(ns), Some(&format!("{app}-tls"))), "", 200),
            20..=22 => g.call(&who, at, "get", Gen::grouped("clusterissuers", "cert-manager.io", None, Some("letsencrypt-prod")), "", 200),
            23..=24 => {
                let o = ObjectRef {
                    subresource: Some("status".into()),
                    ..Gen::grouped("certificates", "cert-manager.io", Some(ns), Some(&format!("{app}-tls")))
                };
                g.call(&who, at, "update", o, "", 200)
            }
            // A renewal writes the certificate's secret.
            25 => g.call(&who, at, "update", Gen::core("secrets", Some(ns), Some(&format!("{app}-tls"))), "", 200),
            _ => {
                let who = self.cainjector.clone();
                g.call(
                    &who,
                    at,
                    "watch",
                    Gen::grouped("validatingwebhookconfigurations", "admissionregistration.k8s.io", None, None),
                    "?watch=true",
                    200,
                )
            }
        }
    }

    fn ingress_nginx(&mut self, g: &mut Gen, at: i64) -> Event {
        let who = self.leaders[3].clone();
        let here = Some("ingress-nginx");
        match g.rng.below(40) {
            0..=7 => g.call(&who, at, "watch", Gen::grouped("ingresses", "networking.k8s.io", None, None), "?watch=true", 200),
            8..=13 => g.call(&who, at, "watch", Gen::grouped("endpointslices", "discovery.k8s.io", None, None), "?watch=true", 200),
            14..=18 => g.call(&who, at, "list", Gen::core("services", None, None), "", 200),
            19..=25 => g.call(&who, at, "get", Gen::core("secrets", here, Some("ingress-nginx-admission")), "", 200),
            26..=31 => g.call(&who, at, "get", Gen::core("configmaps", here, Some("ingress-nginx-controller")), "", 200),
            32..=37 => g.call(&who, at, "get", Gen::core("endpoints", here, Some("ingress-nginx-controller")), "", 200),
            _ => {
                let ns = *g.rng.pick(APP_NAMESPACES);
                let o =
                    ObjectRef { subresource: Some("status".into()), ..Gen::grouped("ingresses", "networking.k8s.io", Some(ns), Some(ns)) };
                g.call(&who, at, "update", o, "", 200)
            }
        }
    }

    /// Flux: kustomize-controller applies the application namespaces' manifests (server-side
    /// apply, a dry run first to find drift), source-controller fetches the repository.
    fn flux(&mut self, g: &mut Gen, at: i64) -> Event {
        let kustomize = self.leaders[4].clone();
        let ns = *g.rng.pick(APP_NAMESPACES);
        let app = *g.rng.pick(APPS);
        let target = |g: &mut Gen| match g.rng.below(4) {
            0 | 1 => Gen::grouped("deployments", "apps", Some(ns), Some(app)),
            2 => Gen::core("services", Some(ns), Some(app)),
            _ => Gen::core("configmaps", Some(ns), Some("app-config")),
        };
        match g.rng.below(80) {
            0..=23 => {
                let o = target(g);
                g.call(&kustomize, at, "get", o, "", 200)
            }
            24..=43 => {
                let o = target(g);
                self.flux_apply(g, &kustomize, at, o, true)
            }
            44..=49 => {
                let o = match g.rng.below(8) {
                    0 => Gen::grouped("rolebindings", "rbac.authorization.k8s.io", Some(ns), Some("app-reader")),
                    1 => Gen::core("secrets", Some(ns), Some("app-config")),
                    _ => target(g),
                };
                self.flux_apply(g, &kustomize, at, o, false)
            }
            50..=59 => {
                let name = format!("apps-{ns}");
                g.call(
                    &kustomize,
                    at,
                    "get",
                    Gen::grouped("kustomizations", "kustomize.toolkit.fluxcd.io", Some("flux-system"), Some(&name)),
                    "",
                    200,
                )
            }
            60..=64 => {
                let name = format!("apps-{ns}");
                let o = ObjectRef {
                    subresource: Some("status".into()),
                    ..Gen::grouped("kustomizations", "kustomize.toolkit.fluxcd.io", Some("flux-system"), Some(&name))
                };
                g.call(&kustomize, at, "patch", o, "", 200)
            }
            _ => {
                let source = self.leaders[5].clone();
                let o = Gen::grouped("gitrepositories", "source.toolkit.fluxcd.io", Some("flux-system"), Some("flux-system"));
                if g.rng.chance(0.7) {
                    g.call(&source, at, "get", o, "", 200)
                } else {
                    g.call(&source, at, "patch", ObjectRef { subresource: Some("status".into()), ..o }, "", 200)
                }
            }
        }
    }

    /// A server-side apply by kustomize-controller (with its manifest for workloads and RBAC).
    fn flux_apply(&mut self, g: &mut Gen, who: &Actor, at: i64, o: ObjectRef, dry_run: bool) -> Event {
        let query = if dry_run {
            "?dryRun=All&fieldManager=kustomize-controller&force=true"
        } else {
            "?fieldManager=kustomize-controller&force=true"
        };
        let (ns, name) = (o.namespace.clone().unwrap_or_default(), o.name.clone().unwrap_or_default());
        let body = match o.resource.as_str() {
            "deployments" => {
                let spec = pod_spec(
                    &format!("contosoacr.azurecr.io/{ns}/{name}:1.8.2"),
                    r#","serviceAccountName":"app","automountServiceAccountToken":false,"securityContext":{"runAsNonRoot":true,"runAsUser":10001}"#,
                    r#"{"allowPrivilegeEscalation":false,"readOnlyRootFilesystem":true,"capabilities":{"drop":["ALL"]}}"#,
                    true,
                );
                Some(format!(
                    r#"{{"kind":"Deployment","apiVersion":"apps/v1","metadata":{{"name":"{name}","namespace":"{ns}","labels":{{"app":"{name}","kustomize.toolkit.fluxcd.io/name":"apps-{ns}","kustomize.toolkit.fluxcd.io/namespace":"flux-system"}}}},"spec":{{"replicas":3,"selector":{{"matchLabels":{{"app":"{name}"}}}},"template":{{"metadata":{{"labels":{{"app":"{name}"}}}},"spec":{spec}}}}}}}"#
                ))
            }
            "services" => Some(format!(
                r#"{{"kind":"Service","apiVersion":"v1","metadata":{{"name":"{name}","namespace":"{ns}"}},"spec":{{"type":"ClusterIP","selector":{{"app":"{name}"}},"ports":[{{"port":80,"targetPort":8080}}]}}}}"#
            )),
            "rolebindings" => Some(format!(
                r#"{{"kind":"RoleBinding","apiVersion":"rbac.authorization.k8s.io/v1","metadata":{{"name":"{name}","namespace":"{ns}"}},"roleRef":{{"apiGroup":"rbac.authorization.k8s.io","kind":"Role","name":"app-reader"}},"subjects":[{{"kind":"ServiceAccount","name":"app","namespace":"{ns}"}}]}}"#
            )),
            // Config maps and secrets are logged at Metadata level.
            _ => None,
        };
        let level = if body.is_some() { "RequestResponse" } else { "Metadata" };
        let uri = Gen::uri(&o) + query;
        let mut ev = g.event(who, at, "patch", o, uri, 200, level, "ResponseComplete");
        if let Some(body) = body {
            ev.request_object = RawValue::from_string(body.clone()).ok();
            ev.response_object = RawValue::from_string(body).ok();
        }
        ev
    }

    /// kube-controller-manager (its own user and its controllers' service accounts) and the
    /// scheduler, from the AKS control plane.
    fn control_plane(&mut self, g: &mut Gen, at: i64) -> Event {
        let w = g.rng.below(self.workloads.len() as u64) as usize;
        let (ns, app, rs) = (self.workloads[w].ns, self.workloads[w].app, self.workloads[w].replicaset.clone());
        match g.rng.below(210) {
            0..=39 => {
                let who = self.leaders[0].clone();
                let o = match g.rng.below(6) {
                    0 => Gen::core("namespaces", None, None),
                    1 => Gen::core("nodes", None, None),
                    2 => Gen::core("pods", None, None),
                    3 => Gen::core("serviceaccounts", None, None),
                    4 => Gen::core("configmaps", None, None),
                    _ => Gen::core("resourcequotas", None, None),
                };
                g.call(&who, at, "watch", o, "?allowWatchBookmarks=true&watch=true", 200)
            }
            40..=69 => {
                let who = self.leaders[1].clone();
                let o = match g.rng.below(4) {
                    0 => Gen::core("pods", None, None),
                    1 => Gen::core("nodes", None, None),
                    2 => Gen::core("persistentvolumeclaims", None, None),
                    _ => Gen::grouped("csinodes", "storage.k8s.io", None, None),
                };
                g.call(&who, at, "watch", o, "?allowWatchBookmarks=true&watch=true", 200)
            }
            // replicaset-controller
            70..=75 => {
                let who = self.kcm_sas[0].clone();
                let o = ObjectRef { subresource: Some("status".into()), ..Gen::grouped("replicasets", "apps", Some(ns), Some(&rs)) };
                g.call(&who, at, "update", o, "", 200)
            }
            76..=79 => self.replicaset_pod(g, at, w),
            80..=81 => {
                let who = self.kcm_sas[0].clone();
                let pod = format!("{rs}-{}", g.rng.suffix());
                g.call(&who, at, "delete", Gen::core("pods", Some(ns), Some(&pod)), "", 200)
            }
            82..=88 => {
                let who = self.kcm_sas[0].clone();
                g.call(&who, at, "list", Gen::core("pods", Some(ns), None), &format!("?labelSelector=app%3D{app}"), 200)
            }
            // deployment-controller
            89..=96 => {
                let who = self.kcm_sas[1].clone();
                let o = ObjectRef { subresource: Some("status".into()), ..Gen::grouped("deployments", "apps", Some(ns), Some(app)) };
                g.call(&who, at, "update", o, "", 200)
            }
            97..=102 => {
                let who = self.kcm_sas[1].clone();
                g.call(&who, at, "list", Gen::grouped("replicasets", "apps", Some(ns), None), "", 200)
            }
            103..=104 => {
                let who = self.kcm_sas[1].clone();
                g.call(&who, at, "patch", Gen::grouped("replicasets", "apps", Some(ns), Some(&rs)), "", 200)
            }
            // daemon-set-controller
            105..=110 => {
                let who = self.kcm_sas[2].clone();
                let name = *g.rng.pick(&["ama-logs", "kube-proxy", "azure-ip-masq-agent", "microsoft-defender-collector-ds"]);
                let o =
                    ObjectRef { subresource: Some("status".into()), ..Gen::grouped("daemonsets", "apps", Some("kube-system"), Some(name)) };
                g.call(&who, at, "update", o, "", 200)
            }
            111..=116 => {
                let who = self.kcm_sas[2].clone();
                g.call(&who, at, "list", Gen::core("pods", Some("kube-system"), None), "", 200)
            }
            117 => self.daemonset_pod(g, at),
            // job-controller and cronjob-controller
            118..=122 => {
                let who = self.kcm_sas[3].clone();
                let job = Self::nightly_job(at);
                let o = ObjectRef { subresource: Some("status".into()), ..Gen::grouped("jobs", "batch", Some("orders"), Some(&job)) };
                g.call(&who, at, "update", o, "", 200)
            }
            123 => self.job_pod(g, at),
            124..=125 => {
                let who = self.kcm_sas[3].clone();
                let pod = format!("{}-{}", Self::nightly_job(at), g.rng.suffix());
                g.call(&who, at, "patch", Gen::core("pods", Some("orders"), Some(&pod)), "", 200)
            }
            126..=133 => {
                let who = self.kcm_sas[4 - g.rng.below(2) as usize].clone();
                g.call(&who, at, "list", Gen::grouped("jobs", "batch", Some("orders"), None), "", 200)
            }
            134 => {
                let who = self.kcm_sas[4].clone();
                let job = Self::nightly_job(at);
                let o = Gen::grouped("jobs", "batch", Some("orders"), Some(&job));
                g.call(&who, at, "create", o, "", 201)
            }
            135..=137 => {
                let who = self.kcm_sas[4].clone();
                let o = ObjectRef {
                    subresource: Some("status".into()),
                    ..Gen::grouped("cronjobs", "batch", Some("orders"), Some("report-nightly"))
                };
                g.call(&who, at, "update", o, "", 200)
            }
            // endpointslice-controller
            138..=152 => {
                let who = self.kcm_sas[5].clone();
                let name = format!("{app}-{}", g.rng.suffix());
                g.call(&who, at, "update", Gen::grouped("endpointslices", "discovery.k8s.io", Some(ns), Some(&name)), "", 200)
            }
            153..=162 => {
                let who = self.kcm_sas[5].clone();
                g.call(&who, at, "list", Gen::grouped("endpointslices", "discovery.k8s.io", Some(ns), None), "", 200)
            }
            // generic-garbage-collector
            163..=175 => {
                let who = self.kcm_sas[6].clone();
                g.call(&who, at, "get", Gen::grouped("replicasets", "apps", Some(ns), Some(&rs)), "", 200)
            }
            176..=177 => {
                let who = self.kcm_sas[6].clone();
                let pod = format!("{}-{}", Self::nightly_job(at - 86_400 * SEC), g.rng.suffix());
                g.call(&who, at, "delete", Gen::core("pods", Some("orders"), Some(&pod)), "", 200)
            }
            _ => {
                let who = self.leaders[0].clone();
                g.call(
                    &who,
                    at,
                    "get",
                    Gen::grouped("leases", "coordination.k8s.io", Some("kube-system"), Some("kube-controller-manager")),
                    "",
                    200,
                )
            }
        }
    }

    /// The CI pipelines' deployer (a self-hosted runner in the cluster): Helm release checks
    /// and the odd upgrade of a Deployment. Its history from the egress IP is what makes the
    /// token-theft scenario's use from elsewhere new.
    fn ci_runner(&mut self, g: &mut Gen, at: i64) -> Event {
        let mut ev = if g.rng.chance(0.3) {
            g.ci_deploy(at)
        } else {
            let who = g.ci.clone();
            let ns = *g.rng.pick(APP_NAMESPACES);
            g.call(&who, at, "list", Gen::core("secrets", Some(ns), None), "?labelSelector=owner%3Dhelm", 200)
        };
        ev.source_ips = vec![PUBLIC_API_EGRESS_IP.to_string()];
        ev
    }

    /// aksService and masterclient (the addon manager), from the AKS control plane.
    fn aks(&mut self, g: &mut Gen, at: i64) -> Event {
        if g.rng.chance(0.5) {
            let who = self.aks_service.clone();
            if g.rng.chance(0.03) {
                g.kube_proxy_update(&who, at)
            } else {
                g.call(&who, at, "get", Gen::core("configmaps", Some("kube-system"), Some("coredns")), "", 200)
            }
        } else {
            let who = self.masterclient.clone();
            let name = *g.rng.pick(&["coredns", "metrics-server", "konnectivity-agent", "ama-logs-rs"]);
            let o = Gen::grouped("deployments", "apps", Some("kube-system"), Some(name));
            if g.rng.chance(0.05) {
                g.call(&who, at, "patch", o, "?fieldManager=kubectl-client-side-apply", 200)
            } else {
                g.call(&who, at, "get", o, "", 200)
            }
        }
    }

    /// Alice, bob and carol, each in their namespace, from their own addresses.
    fn person(&mut self, g: &mut Gen, at: i64) -> Event {
        let i = g.rng.below(self.people.len() as u64) as usize;
        let who = self.people[i].clone();
        let ns = APP_NAMESPACES[i];
        let app = *g.rng.pick(APPS);
        match g.rng.below(10) {
            0..=2 => g.call(&who, at, "list", Gen::core("pods", Some(ns), None), "?limit=500", 200),
            3 => g.call(&who, at, "get", Gen::grouped("deployments", "apps", Some(ns), Some(app)), "", 200),
            4 | 5 => {
                let pod = format!(
                    "{}-{}",
                    self.workloads[i * APPS.len() + APPS.iter().position(|a| *a == app).unwrap_or(0)].replicaset,
                    g.rng.suffix()
                );
                let o = ObjectRef { subresource: Some("log".into()), ..Gen::core("pods", Some(ns), Some(&pod)) };
                g.call(&who, at, "get", o, "?container=main&tailLines=200", 200)
            }
            6 => g.call(&who, at, "list", Gen::core("events", Some(ns), None), "", 200),
            7 => {
                // kubectl rollout restart
                let o = Gen::grouped("deployments", "apps", Some(ns), Some(app));
                let uri = Gen::uri(&o) + "?fieldManager=kubectl-rollout";
                let mut ev = g.event(&who, at, "patch", o, uri, 200, "RequestResponse", "ResponseComplete");
                let stamp = chrono::DateTime::from_timestamp_nanos(at).format("%Y-%m-%dT%H:%M:%SZ");
                let body = format!(
                    r#"{{"spec":{{"template":{{"metadata":{{"annotations":{{"kubectl.kubernetes.io/restartedAt":"{stamp}"}}}}}}}}}}"#
                );
                ev.request_object = RawValue::from_string(body).ok();
                ev
            }
            8 => g.call(&who, at, "get", Gen::core("services", Some(ns), Some(app)), "", 404),
            _ => g.call(&who, at, "list", Gen::grouped("ingresses", "networking.k8s.io", Some(ns), None), "", 200),
        }
    }

    /// Internet scanners finding the public endpoint: the public-info paths answer, the rest is
    /// forbidden to system:anonymous.
    fn scanner(&mut self, g: &mut Gen, at: i64) -> Event {
        let ip = *g.rng.pick(SCANNERS);
        let agent = *g.rng.pick(SCANNER_AGENTS);
        let who = actor("system:anonymous", &["system:unauthenticated"], ip, agent, None);
        let (path, code) = *g.rng.pick(&[("/version", 200), ("/healthz", 200), ("/", 403), ("/api", 403), ("/api/v1/pods", 403)]);
        if code == 200 {
            let mut ev = g.event(&who, at, "get", ObjectRef::default(), path.to_string(), 200, "Metadata", "ResponseComplete");
            ev.object_ref = None;
            ev.annotations.reason = "RBAC: allowed by ClusterRoleBinding \"system:public-info-viewer\" of ClusterRole \"system:public-info-viewer\" to Group \"system:unauthenticated\"".into();
            ev
        } else if path == "/api/v1/pods" {
            g.call(&who, at, "list", Gen::core("pods", None, None), "", 403)
        } else {
            let mut ev = g.event(&who, at, "get", ObjectRef::default(), path.to_string(), 403, "Metadata", "ResponseComplete");
            ev.object_ref = None;
            ev
        }
    }

    /// The nightly report CronJob's job of the day `at` falls in (named after its scheduled
    /// time in minutes, as the cronjob controller names jobs).
    fn nightly_job(at: i64) -> String {
        let day = at.div_euclid(86_400 * SEC) * 86_400 + 2 * 3600;
        format!("report-nightly-{}", day / 60)
    }

    /// The replicaset controller creates a pod of workload `w` (its ReplicaSet as owner); the
    /// scheduler binds it and the kubelet reports its status shortly after.
    fn replicaset_pod(&mut self, g: &mut Gen, at: i64, w: usize) -> Event {
        let who = self.kcm_sas[0].clone();
        let (ns, app, rs, uid) = {
            let w = &self.workloads[w];
            (w.ns, w.app, w.replicaset.clone(), w.uid.clone())
        };
        let pod = format!("{rs}-{}", g.rng.suffix());
        let spec = pod_spec(
            &format!("contosoacr.azurecr.io/{ns}/{app}:1.8.2"),
            r#","serviceAccountName":"app","automountServiceAccountToken":false,"securityContext":{"runAsNonRoot":true,"runAsUser":10001}"#,
            r#"{"allowPrivilegeEscalation":false,"readOnlyRootFilesystem":true,"capabilities":{"drop":["ALL"]}}"#,
            true,
        );
        let owner = format!(
            r#"{{"apiVersion":"apps/v1","kind":"ReplicaSet","name":"{rs}","uid":"{uid}","controller":true,"blockOwnerDeletion":true}}"#
        );
        let ev = self.owned_pod(g, &who, at, ns, &pod, &format!("{rs}-"), &format!(r#""app":"{app}""#), &owner, &spec);
        self.follow_pod(g, at, ns, &pod, None);
        ev
    }

    /// The DaemonSet controller recreates an ama-logs pod (privileged, host log paths).
    fn daemonset_pod(&mut self, g: &mut Gen, at: i64) -> Event {
        let who = self.kcm_sas[2].clone();
        let pod = format!("ama-logs-{}", g.rng.suffix());
        let spec = pod_spec(
            "mcr.microsoft.com/azuremonitor/containerinsights/ciprod:3.1.22",
            r#","serviceAccountName":"ama-logs","priorityClassName":"system-node-critical","volumes":[{"name":"host-log","hostPath":{"path":"/var/log"}},{"name":"containerlog-path","hostPath":{"path":"/var/log/containers"}}]"#,
            r#"{"privileged":true}"#,
            true,
        );
        let owner = format!(
            r#"{{"apiVersion":"apps/v1","kind":"DaemonSet","name":"ama-logs","uid":"{}","controller":true,"blockOwnerDeletion":true}}"#,
            self.ama_logs_ds_uid
        );
        let ev = self.owned_pod(g, &who, at, "kube-system", &pod, "ama-logs-", r#""component":"ama-logs-agent""#, &owner, &spec);
        self.follow_pod(g, at, "kube-system", &pod, Some("ama-logs"));
        ev
    }

    /// The Job controller creates the nightly report job's pod.
    fn job_pod(&mut self, g: &mut Gen, at: i64) -> Event {
        let who = self.kcm_sas[3].clone();
        let job = Self::nightly_job(at);
        let pod = format!("{job}-{}", g.rng.suffix());
        let job_uid = g.rng.uuid();
        let spec = pod_spec(
            "contosoacr.azurecr.io/orders/report:2.3.1",
            r#","restartPolicy":"OnFailure","serviceAccountName":"app","automountServiceAccountToken":false,"securityContext":{"runAsNonRoot":true,"runAsUser":10001}"#,
            r#"{"allowPrivilegeEscalation":false,"readOnlyRootFilesystem":true,"capabilities":{"drop":["ALL"]}}"#,
            true,
        );
        let owner = format!(
            r#"{{"apiVersion":"batch/v1","kind":"Job","name":"{job}","uid":"{job_uid}","controller":true,"blockOwnerDeletion":true}}"#
        );
        let ev = self.owned_pod(g, &who, at, "orders", &pod, &format!("{job}-"), &format!(r#""job-name":"{job}""#), &owner, &spec);
        self.follow_pod(g, at, "orders", &pod, None);
        ev
    }

    #[allow(clippy::too_many_arguments)]
    fn owned_pod(
        &mut self,
        g: &mut Gen,
        who: &Actor,
        at: i64,
        ns: &str,
        pod: &str,
        generate_name: &str,
        labels: &str,
        owner: &str,
        spec: &str,
    ) -> Event {
        let o = Gen::core("pods", Some(ns), Some(pod));
        let uri = format!("/api/v1/namespaces/{ns}/pods");
        let mut ev = g.event(who, at, "create", o, uri, 201, "RequestResponse", "ResponseComplete");
        let body = format!(
            r#"{{"kind":"Pod","apiVersion":"v1","metadata":{{"name":"{pod}","generateName":"{generate_name}","namespace":"{ns}","labels":{{{labels}}},"ownerReferences":[{owner}]}},"spec":{spec}}}"#
        );
        ev.request_object = RawValue::from_string(body.clone()).ok();
        ev.response_object = RawValue::from_string(body).ok();
        ev
    }

    /// The steps after a pod's creation: the scheduler binds it, the kubelet requests its
    /// service-account token (when it mounts one) and reports its status.
    fn follow_pod(&mut self, g: &mut Gen, at: i64, ns: &str, pod: &str, sa: Option<&'static str>) {
        let node = g.rng.below(NODES.len() as u64) as usize;
        let bind = at + 20_000_000 + g.rng.below(60_000_000) as i64;
        self.push(bind, Task::Bind { ns: ns.into(), pod: pod.into() });
        if let Some(sa) = sa {
            let t = bind + 500_000_000 + g.rng.below(1_000_000_000) as i64;
            self.push(t, Task::Token { ns: ns.into(), sa, node });
        }
        let t = bind + 2 * SEC + g.rng.below(4_000_000_000) as i64;
        self.push(t, Task::PodStatus { ns: ns.into(), pod: pod.into(), node });
    }
}

impl Gen {
    /// A Metadata-level request with `query` after the object's path.
    fn call(&mut self, who: &Actor, at: i64, verb: &'static str, o: ObjectRef, query: &str, code: i32) -> Event {
        let uri = Self::uri(&o) + query;
        let stage = if verb == "watch" { "ResponseStarted" } else { "ResponseComplete" };
        self.event(who, at, verb, o, uri, code, "Metadata", stage)
    }
}
