//! `crowsnest gen`: seeded, realistic AKS kube-audit records, as AKS diagnostic settings send
//! them to Event Hubs (`{"records":[…]}` lines, the audit Event as a JSON string in
//! `properties.log`), Container Insights records beside them as Log Analytics data export
//! sends them (see [`insights`]), with named attack scenarios woven in. Used for the bundled
//! sample, the tests and the benchmarks. The same (events, seed, rate) always gives the same
//! bytes, and the audit records do not depend on whether Container Insights records are on.
//! The traffic has two profiles (see [`Profile`]): the default, calm one, and a cluster with a
//! public API server (see [`public_api`]).

mod insights;
mod public_api;

pub use public_api::PUBLIC_API_EGRESS_IP;

use std::io::{self, Write};

use serde::Serialize;
use serde_json::value::RawValue;

use crate::decode::time::format_nanos;

pub struct GenOptions {
    /// Audit events to write (attack scenarios included); non-audit records come on top.
    pub events: u64,
    pub seed: u64,
    pub start_unix_secs: i64,
    /// Average events per second of event time.
    pub events_per_second: f64,
    /// Mix in the attack scenarios (off: background traffic only).
    pub attacks: bool,
    /// Write Container Insights records too (beside, not instead of, the audit events).
    pub insights: bool,
    /// The background traffic's shape.
    pub profile: Profile,
}

/// The shape of the background traffic (the attack scenarios are the same in every profile).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Profile {
    /// A flat mix of kubelets and add-ons on the node network, controllers, people and a CI
    /// deployer: the bundled sample, the tests and the benchmarks (its output never changes).
    #[default]
    Calm,
    /// A cluster whose API server has a public endpoint: nodes and in-cluster agents call it
    /// from the cluster's egress IP ([`PUBLIC_API_EGRESS_IP`]), heartbeats at their real
    /// periods, GitOps (Flux) instead of a CI deployer, people a few times a day.
    PublicApi,
}

impl Default for GenOptions {
    fn default() -> Self {
        // 2026-11-01T08:00:00Z
        GenOptions {
            events: 10_000,
            seed: 1,
            start_unix_secs: 1_793_520_000,
            events_per_second: 100.0,
            attacks: true,
            insights: true,
            profile: Profile::Calm,
        }
    }
}

#[derive(Debug, Default)]
pub struct GenStats {
    pub audit_events: u64,
    pub other_records: u64,
    /// Container Insights records (data-export lines of their own).
    pub insights_records: u64,
    pub lines: u64,
    pub bytes: u64,
    pub attack_events: Vec<(&'static str, u64)>,
}

/// The attack scenarios, each injected once at evenly spread points of the run.
pub const SCENARIOS: &[(&str, &str)] = &[
    ("privileged-pod", "mallory@contoso.com creates privileged pod default/debug-shell and execs into it 3 minutes later"),
    ("host-namespaces", "mallory creates pod default/node-debugger with hostPID, hostIPC and hostNetwork"),
    ("sensitive-hostpath", "mallory creates pod web/log-collector mounting /var/run/docker.sock and /etc"),
    ("exec-into-pod", "mallory execs a shell in payments/payments-api-7d9f8b6c4-q8w2z"),
    ("cluster-admin-binding", "mallory binds cluster-admin to herself (ClusterRoleBinding maintenance-admin)"),
    ("anonymous-allowed", "system:anonymous lists ConfigMaps in kube-system from 203.0.113.50"),
    ("forbidden-burst", "a stolen service-account token (default/compromised-app) draws 30 403s in 90 s"),
    ("secrets-sweep", "mallory reads secrets in 8 namespaces within 3 minutes"),
    ("token-theft", "mallory requests a token for ci/deployer and uses it from her own address 5 minutes later"),
    // Container Insights (the audit half of crypto-miner is the exec).
    ("crypto-miner", "mallory execs into web/frontend-7c5d9f6b8-m4q2x; a minute later its log shows curl | sh, then XMRig and its pool"),
    ("crashloop-burst", "the three pods of namespace orders crash-loop, OOM-killed, within four minutes"),
    ("untrusted-image-pull", "the kubelet fails to pull ghcr.io/xmr-tools/miner:latest for web/tools-5b8c7d9f4-q7w2e"),
    ("new-image", "docker.io/kalilinux/kali-rolling starts in default, after the cluster's images are known"),
    ("node-flapping", "node vmss000003 goes NotReady and back three times in ten minutes"),
    ("system-pod-restarts", "kube-system/azure-policy restarts three times in nine minutes"),
];

/// Scenarios that only Container Insights records show.
const INSIGHTS_ONLY: &[&str] = &["crashloop-burst", "untrusted-image-pull", "new-image", "node-flapping", "system-pod-restarts"];

/// The nodes' last Ready transition in background snapshots (2026-10-20).
const START_OF_NODES: i64 = 1_792_454_400 * SEC;

const CLUSTER: &str = "/SUBSCRIPTIONS/6A3C1E52-0F4B-4D8E-9A7B-2C1D3E4F5A6B/RESOURCEGROUPS/RG-AKS-PROD/PROVIDERS/MICROSOFT.CONTAINERSERVICE/MANAGEDCLUSTERS/AKS-PROD-WEU";
const SEC: i64 = 1_000_000_000;

/// splitmix64: small, fast, and stable across versions (unlike rand's StdRng). Also used by
/// the benches and the randomized tests, so their inputs are reproducible from a seed.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[self.below(xs.len() as u64) as usize]
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }
    fn uuid(&mut self) -> String {
        let (a, b) = (self.next(), self.next());
        format!(
            "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
            a >> 32,
            (a >> 16) & 0xffff,
            a & 0xfff,
            0x8000 | (b >> 48) & 0x3fff,
            b & 0xffff_ffff_ffff
        )
    }
    fn hex(&mut self, n: usize) -> String {
        let mut s = String::with_capacity(n);
        while s.len() < n {
            s.push_str(&format!("{:016x}", self.next()));
        }
        s.truncate(n);
        s
    }
    fn suffix(&mut self) -> String {
        const C: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
        (0..5).map(|_| C[self.below(C.len() as u64) as usize] as char).collect()
    }
}

#[derive(Serialize, Clone)]
struct User {
    username: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    uid: Option<String>,
    groups: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    extra: Option<serde_json::Value>,
}

#[derive(Serialize, Clone, Default)]
#[serde(rename_all = "camelCase")]
struct ObjectRef {
    resource: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    subresource: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    namespace: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    api_group: Option<String>,
    api_version: String,
}

#[derive(Serialize, Clone)]
struct Status {
    metadata: serde_json::Map<String, serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'static str>,
    code: i32,
}

#[derive(Serialize, Clone)]
struct Annotations {
    #[serde(rename = "authorization.k8s.io/decision")]
    decision: &'static str,
    #[serde(rename = "authorization.k8s.io/reason")]
    reason: String,
}

#[derive(Serialize, Clone)]
#[serde(rename_all = "camelCase")]
struct Event {
    kind: &'static str,
    api_version: &'static str,
    level: &'static str,
    #[serde(rename = "auditID")]
    audit_id: String,
    stage: &'static str,
    #[serde(rename = "requestURI")]
    request_uri: String,
    verb: &'static str,
    user: User,
    #[serde(rename = "sourceIPs")]
    source_ips: Vec<String>,
    user_agent: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    object_ref: Option<ObjectRef>,
    response_status: Status,
    #[serde(skip_serializing_if = "Option::is_none")]
    request_object: Option<Box<RawValue>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    response_object: Option<Box<RawValue>>,
    request_received_timestamp: String,
    stage_timestamp: String,
    annotations: Annotations,
    /// Event time in nanoseconds (not serialized).
    #[serde(skip)]
    at: i64,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Record<'a> {
    time: String,
    resource_id: &'static str,
    category: &'static str,
    operation_name: &'static str,
    properties: Properties<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Properties<'a> {
    log: &'a str,
    stream: &'static str,
    pod: &'a str,
    #[serde(rename = "containerID")]
    container_id: &'a str,
}

/// AKS envelope times have 7 fractional digits (100 ns), which chrono cannot format directly.
fn time7(nanos: i64) -> String {
    let secs = chrono::DateTime::from_timestamp_nanos(nanos).format("%Y-%m-%dT%H:%M:%S");
    format!("{secs}.{:07}Z", nanos.rem_euclid(SEC) / 100)
}

#[derive(Clone)]
struct Actor {
    user: User,
    ip: String,
    agent: String,
}

fn actor(name: &str, groups: &[&str], ip: &str, agent: &str, oid: Option<&str>) -> Actor {
    Actor {
        user: User {
            username: name.to_string(),
            uid: None,
            groups: groups.iter().map(|s| s.to_string()).collect(),
            extra: oid.map(|o| serde_json::json!({ "oid": [o] })),
        },
        ip: ip.to_string(),
        agent: agent.to_string(),
    }
}

const NODES: &[&str] = &[
    "aks-nodepool1-38211463-vmss000000",
    "aks-nodepool1-38211463-vmss000001",
    "aks-nodepool1-38211463-vmss000002",
    "aks-nodepool1-38211463-vmss000003",
];
const APP_NAMESPACES: &[&str] = &["web", "payments", "orders"];
const ALL_NAMESPACES: &[&str] = &["default", "web", "payments", "orders", "monitoring", "ingress-nginx", "cert-manager", "kube-system"];
const APPS: &[&str] = &["frontend", "api", "worker", "gateway"];
const KUBECTL: &str = "kubectl/v1.30.4 (linux/amd64) kubernetes/6b1f4a2";
const MALLORY_GROUPS: &[&str] = &["5e2f7a11-9c3d-4b8e-a1f2-7d6c5b4a3e21", "system:authenticated"];

struct Gen {
    rng: Rng,
    people: Vec<Actor>,
    kubelets: Vec<Actor>,
    controllers: Vec<Actor>,
    system_sas: Vec<Actor>,
    aks: Vec<Actor>,
    ci: Actor,
    anonymous: Actor,
    mallory: Actor,
}

/// A pod spec as JSON text.
fn pod_spec(image: &str, extra_spec: &str, container_sc: &str, limits: bool) -> String {
    let resources =
        if limits { r#","resources":{"limits":{"cpu":"500m","memory":"512Mi"},"requests":{"cpu":"100m","memory":"128Mi"}}"# } else { "" };
    format!(
        r#"{{"containers":[{{"name":"main","image":"{image}","ports":[{{"containerPort":8080}}]{resources},"securityContext":{container_sc}}}]{extra_spec}}}"#
    )
}

impl Gen {
    fn new(seed: u64) -> Gen {
        let mut rng = Rng(seed ^ 0x0C20_F5E5_7A11_D00D);
        let people = ["alice@contoso.com", "bob@contoso.com", "carol@contoso.com"]
            .iter()
            .enumerate()
            .map(|(i, n)| {
                let (g1, oid) = (rng.uuid(), rng.uuid());
                let ip = ["20.61.10.5", "52.174.33.91", "20.103.7.44"][i];
                actor(n, &[&g1, "f3a8e6c2-1d4b-4e7a-9c5f-2b8d6e4a1c37", "system:authenticated"], ip, KUBECTL, Some(&oid))
            })
            .collect();
        let kubelets = NODES
            .iter()
            .enumerate()
            .map(|(i, n)| {
                actor(
                    &format!("system:node:{n}"),
                    &["system:nodes", "system:authenticated"],
                    &format!("10.224.0.{}", 4 + i),
                    "kubelet/v1.30.4 (linux/amd64) kubernetes/6b1f4a2",
                    None,
                )
            })
            .collect();
        let controllers = vec![
            actor(
                "system:kube-controller-manager",
                &["system:authenticated"],
                "172.31.22.10",
                "kube-controller-manager/v1.30.4 (linux/amd64) kubernetes/6b1f4a2/leader-election",
                None,
            ),
            actor(
                "system:kube-scheduler",
                &["system:authenticated"],
                "172.31.22.10",
                "kube-scheduler/v1.30.4 (linux/amd64) kubernetes/6b1f4a2/scheduler",
                None,
            ),
            actor(
                "system:serviceaccount:kube-system:replicaset-controller",
                &["system:serviceaccounts", "system:serviceaccounts:kube-system", "system:authenticated"],
                "172.31.22.10",
                "kube-controller-manager/v1.30.4 (linux/amd64) kubernetes/6b1f4a2/system:serviceaccount:kube-system:replicaset-controller",
                None,
            ),
        ];
        let sa = |ns: &str, n: &str, ip: &str, agent: &str| {
            actor(
                &format!("system:serviceaccount:{ns}:{n}"),
                &["system:serviceaccounts", &format!("system:serviceaccounts:{ns}"), "system:authenticated"],
                ip,
                agent,
                None,
            )
        };
        let system_sas = vec![
            sa("kube-system", "coredns", "10.244.0.12", "coredns/v1.11.1 (linux/amd64) kubernetes/coredns"),
            sa("kube-system", "metrics-server", "10.244.2.8", "metrics-server/v0.7.1 (linux/amd64) kubernetes/metrics-server"),
            sa("kube-system", "konnectivity-agent", "10.224.0.5", "konnectivity-agent/v0.1.6 (linux/amd64)"),
            sa("kube-system", "azure-policy", "10.244.3.4", "azure-policy/v1.5.0 (linux/amd64)"),
        ];
        let aks = vec![
            actor("aksService", &["system:masters", "system:authenticated"], "172.31.22.5", "aks-rp/v20261101 (linux/amd64)", None),
            actor(
                "masterclient",
                &["system:masters", "system:authenticated"],
                "172.31.22.6",
                "kubectl/v1.30.4 (linux/amd64) kubernetes/6b1f4a2",
                None,
            ),
            actor("nodeclient", &["system:nodes", "system:authenticated"], "10.224.0.4", "aks-node-agent/v1.0 (linux/amd64)", None),
        ];
        let ci = sa("ci", "deployer", "10.244.4.20", "Helm/3.15.2");
        let anonymous = actor("system:anonymous", &["system:unauthenticated"], "198.51.100.77", "kube-probe/1.30", None);
        let mallory = actor("mallory@contoso.com", MALLORY_GROUPS, "198.51.100.23", KUBECTL, Some("0d9e8c7b-6a5f-4e3d-9c2b-1a0f9e8d7c6b"));
        Gen { rng, people, kubelets, controllers, system_sas, aks, ci, anonymous, mallory }
    }

    #[allow(clippy::too_many_arguments)]
    fn event(
        &mut self,
        who: &Actor,
        at: i64,
        verb: &'static str,
        oref: ObjectRef,
        uri: String,
        code: i32,
        level: &'static str,
        stage: &'static str,
    ) -> Event {
        let latency = 1_000_000 + self.rng.below(40_000_000) as i64;
        let (decision, reason, status, status_reason) = match code {
            403 => ("forbid", String::new(), Some("Failure"), Some("Forbidden")),
            404 => ("allow", "RBAC: allowed".to_string(), Some("Failure"), Some("NotFound")),
            409 => ("allow", "RBAC: allowed".to_string(), Some("Failure"), Some("AlreadyExists")),
            _ => (
                "allow",
                format!(
                    "RBAC: allowed by ClusterRoleBinding \"{}\"",
                    if who.user.groups.iter().any(|g| g == "system:masters") { "cluster-admin" } else { "system:basic-user" }
                ),
                None,
                None,
            ),
        };
        Event {
            kind: "Event",
            api_version: "audit.k8s.io/v1",
            level,
            audit_id: self.rng.uuid(),
            stage,
            request_uri: uri,
            verb,
            user: who.user.clone(),
            source_ips: vec![who.ip.clone()],
            user_agent: who.agent.clone(),
            object_ref: Some(oref),
            response_status: Status { metadata: Default::default(), status, reason: status_reason, code },
            request_object: None,
            response_object: None,
            request_received_timestamp: format_nanos(at),
            stage_timestamp: format_nanos(at + latency),
            annotations: Annotations { decision, reason },
            at,
        }
    }

    fn core(resource: &str, ns: Option<&str>, name: Option<&str>) -> ObjectRef {
        ObjectRef {
            resource: resource.into(),
            namespace: ns.map(Into::into),
            name: name.map(Into::into),
            api_version: "v1".into(),
            ..Default::default()
        }
    }

    fn grouped(resource: &str, group: &str, ns: Option<&str>, name: Option<&str>) -> ObjectRef {
        ObjectRef { api_group: Some(group.into()), ..Self::core(resource, ns, name) }
    }

    fn uri(o: &ObjectRef) -> String {
        let base = match &o.api_group {
            Some(g) => format!("/apis/{g}/{}", o.api_version),
            None => "/api/v1".to_string(),
        };
        let ns = o.namespace.as_ref().map(|n| format!("/namespaces/{n}")).unwrap_or_default();
        let name = o.name.as_ref().map(|n| format!("/{n}")).unwrap_or_default();
        let sub = o.subresource.as_ref().map(|s| format!("/{s}")).unwrap_or_default();
        format!("{base}{ns}/{}{name}{sub}", o.resource)
    }

    fn pod_name(&mut self, app: &str) -> String {
        format!("{app}-{}-{}", self.rng.hex(9).replace(|c: char| !c.is_ascii_alphanumeric(), "x"), self.rng.suffix())
    }

    fn simple(&mut self, who: &Actor, at: i64, verb: &'static str, o: ObjectRef, code: i32) -> Event {
        let uri = Self::uri(&o) + if verb == "watch" { "?watch=true&resourceVersion=1" } else { "" };
        let stage = if verb == "watch" { "ResponseStarted" } else { "ResponseComplete" };
        self.event(who, at, verb, o, uri, code, "Metadata", stage)
    }

    /// One background event at `at`.
    fn background(&mut self, at: i64) -> Event {
        let roll = self.rng.below(1000);
        match roll {
            0..=349 => {
                let k = self.rng.below(self.kubelets.len() as u64) as usize;
                let who = self.kubelets[k].clone();
                let node = who.user.username.trim_start_matches("system:node:").to_string();
                let ns = *self.rng.pick(ALL_NAMESPACES);
                let ev = match self.rng.below(6) {
                    0 | 1 => self.simple(
                        &who,
                        at,
                        "update",
                        Self::grouped("leases", "coordination.k8s.io", Some("kube-node-lease"), Some(&node)),
                        200,
                    ),
                    2 => self.simple(
                        &who,
                        at,
                        "patch",
                        ObjectRef { subresource: Some("status".into()), ..Self::core("nodes", None, Some(&node)) },
                        200,
                    ),
                    3 => self.simple(&who, at, "watch", Self::core("pods", None, None), 200),
                    4 => self.simple(&who, at, "get", Self::core("configmaps", Some(ns), Some("kube-root-ca.crt")), 200),
                    _ => {
                        let name = format!("{}-tls", self.rng.pick(APPS));
                        self.simple(&who, at, "get", Self::core("secrets", Some(ns), Some(&name)), 200)
                    }
                };
                ev
            }
            350..=549 => {
                let who = self.controllers[self.rng.below(self.controllers.len() as u64) as usize].clone();
                let ns = *self.rng.pick(APP_NAMESPACES);
                match self.rng.below(4) {
                    0 => self.simple(
                        &who,
                        at,
                        "update",
                        Self::grouped("leases", "coordination.k8s.io", Some("kube-system"), Some("kube-controller-manager")),
                        200,
                    ),
                    1 => self.simple(&who, at, "list", Self::grouped("replicasets", "apps", Some(ns), None), 200),
                    2 => self.simple(&who, at, "get", Self::core("endpoints", Some(ns), Some("api")), 200),
                    _ => {
                        let pod = self.pod_name("api");
                        self.simple(
                            &who,
                            at,
                            "create",
                            ObjectRef { subresource: Some("binding".into()), ..Self::core("pods", Some(ns), Some(&pod)) },
                            201,
                        )
                    }
                }
            }
            550..=699 => {
                let i = self.rng.below(self.system_sas.len() as u64) as usize;
                let who = self.system_sas[i].clone();
                match i {
                    0 => self.simple(&who, at, "watch", Self::grouped("endpointslices", "discovery.k8s.io", None, None), 200),
                    1 => {
                        let node = NODES[self.rng.below(4) as usize];
                        self.simple(&who, at, "get", Self::core("nodes", None, Some(node)), 200)
                    }
                    2 => self.simple(&who, at, "list", Self::core("services", None, None), 200),
                    _ => self.simple(
                        &who,
                        at,
                        "list",
                        Self::grouped("k8sazurev3containerlimits", "constraints.gatekeeper.sh", None, None),
                        200,
                    ),
                }
            }
            700..=729 => {
                let i = self.rng.below(3) as usize;
                let who = self.aks[i].clone();
                if i == 0 && self.rng.chance(0.2) {
                    self.kube_proxy_update(&who, at)
                } else {
                    self.simple(&who, at, "get", Self::core("configmaps", Some("kube-system"), Some("coredns")), 200)
                }
            }
            730..=879 => {
                let i = self.rng.below(self.people.len() as u64) as usize;
                let who = self.people[i].clone();
                let ns = APP_NAMESPACES[i];
                let code = if self.rng.chance(0.001) {
                    403
                } else if self.rng.chance(0.02) {
                    404
                } else {
                    200
                };
                match self.rng.below(6) {
                    0 => self.simple(&who, at, "list", Self::core("pods", Some(ns), None), code),
                    1 => {
                        let app = *self.rng.pick(APPS);
                        self.simple(&who, at, "get", Self::grouped("deployments", "apps", Some(ns), Some(app)), code)
                    }
                    2 => {
                        let app = *self.rng.pick(APPS);
                        let pod = self.pod_name(app);
                        self.simple(
                            &who,
                            at,
                            "get",
                            ObjectRef { subresource: Some("log".into()), ..Self::core("pods", Some(ns), Some(&pod)) },
                            code,
                        )
                    }
                    3 => self.simple(&who, at, "list", Self::core("events", Some(ns), None), code),
                    4 if self.rng.chance(0.1) => self.simple(&who, at, "get", Self::core("secrets", Some(ns), Some("app-config")), code),
                    _ => self.simple(&who, at, "list", Self::core("services", Some(ns), None), code),
                }
            }
            880..=959 => self.ci_deploy(at),
            _ => {
                let who = self.anonymous.clone();
                let path = *self.rng.pick(&["/healthz", "/readyz", "/version", "/livez"]);
                let mut ev = self.event(&who, at, "get", ObjectRef::default(), path.to_string(), 200, "Metadata", "ResponseComplete");
                ev.object_ref = None;
                ev.annotations.reason = "RBAC: allowed by ClusterRoleBinding \"system:public-info-viewer\" of ClusterRole \"system:public-info-viewer\" to Group \"system:unauthenticated\"".into();
                ev
            }
        }
    }

    fn ci_deploy(&mut self, at: i64) -> Event {
        let who = self.ci.clone();
        let ns = *self.rng.pick(APP_NAMESPACES);
        let app = *self.rng.pick(APPS);
        let version = format!("1.{}.{}", self.rng.below(20), self.rng.below(10));
        let image = format!("contosoacr.azurecr.io/{ns}/{app}:{version}");
        let (verb, code) = if self.rng.chance(0.05) {
            ("create", 409)
        } else if self.rng.chance(0.3) {
            ("create", 201)
        } else {
            ("patch", 200)
        };
        let o = Self::grouped("deployments", "apps", Some(ns), Some(app));
        let uri = Self::uri(&o);
        let mut ev = self.event(&who, at, verb, o, uri, code, "RequestResponse", "ResponseComplete");
        let spec = pod_spec(
            &image,
            r#","serviceAccountName":"app","automountServiceAccountToken":false,"securityContext":{"runAsNonRoot":true,"runAsUser":10001}"#,
            r#"{"allowPrivilegeEscalation":false,"readOnlyRootFilesystem":true,"capabilities":{"drop":["ALL"]}}"#,
            true,
        );
        let body = format!(
            r#"{{"kind":"Deployment","apiVersion":"apps/v1","metadata":{{"name":"{app}","namespace":"{ns}","labels":{{"app":"{app}"}}}},"spec":{{"replicas":3,"selector":{{"matchLabels":{{"app":"{app}"}}}},"template":{{"metadata":{{"labels":{{"app":"{app}"}}}},"spec":{spec}}}}}}}"#
        );
        ev.request_object = RawValue::from_string(body.clone()).ok();
        if code < 400 {
            ev.response_object = RawValue::from_string(body).ok();
        }
        ev
    }

    fn kube_proxy_update(&mut self, who: &Actor, at: i64) -> Event {
        let o = Self::grouped("daemonsets", "apps", Some("kube-system"), Some("kube-proxy"));
        let uri = Self::uri(&o);
        let mut ev = self.event(who, at, "update", o, uri, 200, "RequestResponse", "ResponseComplete");
        let spec = pod_spec(
            "mcr.microsoft.com/oss/kubernetes/kube-proxy:v1.30.4",
            r#","hostNetwork":true,"priorityClassName":"system-node-critical","volumes":[{"name":"lib-modules","hostPath":{"path":"/lib/modules"}},{"name":"xtables-lock","hostPath":{"path":"/run/xtables.lock","type":"FileOrCreate"}}]"#,
            r#"{"privileged":true}"#,
            true,
        );
        let body = format!(
            r#"{{"kind":"DaemonSet","apiVersion":"apps/v1","metadata":{{"name":"kube-proxy","namespace":"kube-system"}},"spec":{{"template":{{"spec":{spec}}}}}}}"#
        );
        ev.request_object = RawValue::from_string(body.clone()).ok();
        ev.response_object = RawValue::from_string(body).ok();
        ev
    }

    fn mallory_pod(&mut self, at: i64, ns: &str, name: &str, image: &str, extra_spec: &str, sc: &str) -> Event {
        let who = self.mallory.clone();
        let o = Self::core("pods", Some(ns), Some(name));
        let uri = format!("/api/v1/namespaces/{ns}/pods?fieldManager=kubectl-run");
        let mut ev = self.event(&who, at, "create", o, uri, 201, "RequestResponse", "ResponseComplete");
        let spec = pod_spec(image, extra_spec, sc, false);
        let body = format!(r#"{{"kind":"Pod","apiVersion":"v1","metadata":{{"name":"{name}","namespace":"{ns}"}},"spec":{spec}}}"#);
        ev.request_object = RawValue::from_string(body.clone()).ok();
        ev.response_object = RawValue::from_string(body).ok();
        ev
    }

    /// The events of one scenario, starting at `at`; `span` bounds how long bursts take.
    fn scenario(&mut self, name: &str, at: i64, span: i64) -> Vec<Event> {
        let m = self.mallory.clone();
        match name {
            "privileged-pod" => {
                let pod = self.mallory_pod(at, "default", "debug-shell", "docker.io/library/ubuntu:22.04", "", r#"{"privileged":true}"#);
                // …then the shell on the host that the privileged pod was for.
                let then = at + 180 * SEC;
                let o = ObjectRef { subresource: Some("exec".into()), ..Self::core("pods", Some("default"), Some("debug-shell")) };
                let uri = "/api/v1/namespaces/default/pods/debug-shell/exec?command=nsenter&command=-t&command=1&command=-m&command=sh&stdin=true&tty=true";
                let exec = self.event(&m, then, "create", o, uri.to_string(), 101, "Metadata", "ResponseStarted");
                vec![pod, exec]
            }
            "host-namespaces" => vec![self.mallory_pod(
                at,
                "default",
                "node-debugger",
                "docker.io/library/busybox:1.36",
                r#","hostPID":true,"hostIPC":true,"hostNetwork":true"#,
                "{}",
            )],
            "sensitive-hostpath" => vec![self.mallory_pod(
                at,
                "web",
                "log-collector",
                "docker.io/library/alpine:3.19",
                r#","volumes":[{"name":"sock","hostPath":{"path":"/var/run/docker.sock"}},{"name":"etc","hostPath":{"path":"/etc"}}]"#,
                "{}",
            )],
            "exec-into-pod" => {
                let pod = "payments-api-7d9f8b6c4-q8w2z";
                let o = ObjectRef { subresource: Some("exec".into()), ..Self::core("pods", Some("payments"), Some(pod)) };
                let uri = format!("/api/v1/namespaces/payments/pods/{pod}/exec?command=sh&container=api&stdin=true&stdout=true&tty=true");
                let started = self.event(&m, at, "create", o, uri, 101, "Metadata", "ResponseStarted");
                let mut done = started.clone();
                done.stage = "ResponseComplete";
                done.stage_timestamp = format_nanos(at + 95 * SEC);
                done.at = at + 95 * SEC;
                vec![started, done]
            }
            "cluster-admin-binding" => {
                let o = Self::grouped("clusterrolebindings", "rbac.authorization.k8s.io", None, Some("maintenance-admin"));
                let uri = "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings?fieldManager=kubectl-create".to_string();
                let mut ev = self.event(&m, at, "create", o, uri, 201, "RequestResponse", "ResponseComplete");
                let body = r#"{"kind":"ClusterRoleBinding","apiVersion":"rbac.authorization.k8s.io/v1","metadata":{"name":"maintenance-admin"},"roleRef":{"apiGroup":"rbac.authorization.k8s.io","kind":"ClusterRole","name":"cluster-admin"},"subjects":[{"apiGroup":"rbac.authorization.k8s.io","kind":"User","name":"mallory@contoso.com"}]}"#;
                ev.request_object = RawValue::from_string(body.to_string()).ok();
                ev.response_object = RawValue::from_string(body.to_string()).ok();
                vec![ev]
            }
            "anonymous-allowed" => {
                let who = actor("system:anonymous", &["system:unauthenticated"], "203.0.113.50", "curl/8.5.0", None);
                let mut ev = self.simple(&who, at, "list", Self::core("configmaps", Some("kube-system"), None), 200);
                ev.annotations.reason =
                    "RBAC: allowed by ClusterRoleBinding \"anon-read\" of ClusterRole \"view\" to User \"system:anonymous\"".into();
                vec![ev]
            }
            "forbidden-burst" => {
                let who = actor(
                    "system:serviceaccount:default:compromised-app",
                    &["system:serviceaccounts", "system:serviceaccounts:default", "system:authenticated"],
                    "10.244.1.17",
                    "python-requests/2.31.0",
                    None,
                );
                let targets = [
                    ("secrets", Some("kube-system")),
                    ("clusterroles", None),
                    ("nodes", None),
                    ("pods", Some("kube-system")),
                    ("secrets", Some("default")),
                    ("serviceaccounts", Some("kube-system")),
                    ("configmaps", Some("kube-system")),
                    ("namespaces", None),
                ];
                (0..30)
                    .map(|i| {
                        let (res, ns) = targets[i % targets.len()];
                        let o = if res == "clusterroles" {
                            Self::grouped(res, "rbac.authorization.k8s.io", None, None)
                        } else {
                            Self::core(res, ns, None)
                        };
                        self.simple(&who, at + span * i as i64 / 30, "list", o, 403)
                    })
                    .collect()
            }
            "secrets-sweep" => ALL_NAMESPACES
                .iter()
                .enumerate()
                .map(|(i, ns)| {
                    self.simple(&m, at + span * i as i64 / 8, "get", Self::core("secrets", Some(ns), Some("db-credentials")), 200)
                })
                .collect(),
            "token-theft" => {
                // `kubectl create token deployer -n ci`: a TokenRequest, logged at Metadata level…
                let o = ObjectRef { subresource: Some("token".into()), ..Self::core("serviceaccounts", Some("ci"), Some("deployer")) };
                let request = self.event(&m, at, "create", o.clone(), Self::uri(&o), 201, "Metadata", "ResponseComplete");
                // …then the token at work from mallory's laptop, not from the CI runners.
                let mut thief = self.ci.clone();
                thief.ip = m.ip.clone();
                thief.agent = KUBECTL.to_string();
                let then = at + 300 * SEC;
                let list = self.simple(&thief, then, "list", Self::core("secrets", Some("ci"), None), 200);
                let get = self.simple(&thief, then + 4 * SEC, "get", Self::core("secrets", Some("ci"), Some("registry-push")), 200);
                vec![request, list, get]
            }
            "crypto-miner" => {
                let (ns, pod) = insights::MINER_POD;
                let o = ObjectRef { subresource: Some("exec".into()), ..Self::core("pods", Some(ns), Some(pod)) };
                let uri = format!("/api/v1/namespaces/{ns}/pods/{pod}/exec?command=sh&container=frontend&stdin=true&stdout=true&tty=true");
                vec![self.event(&m, at, "create", o, uri, 101, "Metadata", "ResponseStarted")]
            }
            _ => Vec::new(),
        }
    }
}

/// Next multiple of `window` at or after `t`, plus `offset`: windowed scenarios start inside
/// one window of the rule that should catch them, so they fire exactly once.
fn aligned(t: i64, window: i64, offset: i64) -> i64 {
    let start = t - t.rem_euclid(window) + offset;
    if start < t {
        start + window
    } else {
        start
    }
}

/// Ends an envelope line (`{"records":[…` so far), writes it and empties the buffer.
fn close_line(out: &mut dyn Write, line: &mut Vec<u8>, stats: &mut GenStats) -> io::Result<()> {
    line.extend_from_slice(b"]}\n");
    out.write_all(line)?;
    stats.bytes += line.len() as u64;
    stats.lines += 1;
    line.clear();
    Ok(())
}

/// A scenario's record: an audit event, or a Container Insights record.
enum Item {
    Audit(Event),
    Insights(serde_json::Value),
}

struct Writer<'a> {
    out: &'a mut dyn Write,
    stats: GenStats,
    line: Vec<u8>,
    in_line: usize,
    line_target: usize,
    /// Container Insights records go in lines of their own, as data export writes them.
    insights_line: Vec<u8>,
    insights_in_line: usize,
    pod: String,
    container: String,
}

impl Writer<'_> {
    fn record(&mut self, category: &'static str, log: &str, at: i64, rng: &mut Rng) -> io::Result<()> {
        let rec = Record {
            time: time7(at + 2_000_000 + rng.below(5_000_000) as i64),
            resource_id: CLUSTER,
            category,
            operation_name: "Microsoft.ContainerService/managedClusters/diagnosticLogs/Read",
            properties: Properties { log, stream: "stdout", pod: &self.pod, container_id: &self.container },
        };
        self.line.extend_from_slice(if self.in_line == 0 { b"{\"records\":[" } else { b"," });
        serde_json::to_writer(&mut self.line, &rec)?;
        self.in_line += 1;
        if self.in_line >= self.line_target {
            self.flush_line(rng)?;
        }
        Ok(())
    }

    fn flush_line(&mut self, rng: &mut Rng) -> io::Result<()> {
        if self.in_line == 0 {
            return Ok(());
        }
        close_line(&mut *self.out, &mut self.line, &mut self.stats)?;
        self.in_line = 0;
        self.line_target = 1 + rng.below(8) as usize;
        Ok(())
    }

    fn insights(&mut self, rec: &serde_json::Value, rng: &mut Rng) -> io::Result<()> {
        self.insights_line.extend_from_slice(if self.insights_in_line == 0 { b"{\"records\":[" } else { b"," });
        serde_json::to_writer(&mut self.insights_line, rec)?;
        self.insights_in_line += 1;
        self.stats.insights_records += 1;
        if self.insights_in_line >= 1 + rng.below(6) as usize {
            self.flush_insights()?;
        }
        Ok(())
    }

    fn flush_insights(&mut self) -> io::Result<()> {
        if self.insights_in_line == 0 {
            return Ok(());
        }
        close_line(&mut *self.out, &mut self.insights_line, &mut self.stats)?;
        self.insights_in_line = 0;
        Ok(())
    }

    fn item(&mut self, item: &Item, rng: &mut Rng, insights_rng: &mut Rng) -> io::Result<()> {
        match item {
            Item::Audit(ev) => self.audit(ev, rng),
            Item::Insights(rec) => self.insights(rec, insights_rng),
        }
    }

    fn audit(&mut self, ev: &Event, rng: &mut Rng) -> io::Result<()> {
        let log = serde_json::to_string(ev)?;
        let category = "kube-audit";
        self.stats.audit_events += 1;
        self.record(category, &log, ev.at, rng)
    }
}

const KLOG: &[(&str, &str)] = &[
    ("kube-apiserver", "controller.go:615] quota admission added evaluator for: leases.coordination.k8s.io"),
    ("kube-apiserver", "handler.go:232] Adding GroupVersion metrics.k8s.io v1beta1 to ResourceManager"),
    ("cluster-autoscaler", "static_autoscaler.go:290] Starting main loop"),
    ("guard", "guard.go:112] Authenticated user via AAD token"),
    ("kube-controller-manager", "replica_set.go:676] Finished syncing ReplicaSet"),
];

pub fn generate(opts: &GenOptions, out: &mut dyn Write) -> io::Result<GenStats> {
    let mut g = Gen::new(opts.seed);
    let rate = if opts.events_per_second > 0.0 { opts.events_per_second } else { 100.0 };
    let start = opts.start_unix_secs * SEC;
    let run = (opts.events as f64 / rate * 1e9) as i64;

    // Its own generator, so the audit records are the same with or without it.
    let mut insights_rng = Rng(opts.seed ^ 0x1A51_6475_C0DE_0006);
    let mut ig = insights::InsightsGen::new(&mut insights_rng);

    // Attack events, by time.
    let mut attacks: Vec<(i64, usize, Item)> = Vec::new();
    let mut attack_counts = Vec::new();
    let s = SCENARIOS.len() as i64;
    let scenarios = if opts.attacks { SCENARIOS } else { &[] };
    for (k, (name, _)) in scenarios.iter().enumerate() {
        if !opts.insights && INSIGHTS_ONLY.contains(name) {
            continue;
        }
        let t = start + run * (k as i64 + 1) / (s + 1);
        let (t, span) = match *name {
            "forbidden-burst" => (aligned(t, 300 * SEC, 30 * SEC), (90 * SEC).min(run / 10).max(3 * SEC)),
            "secrets-sweep" => (aligned(t, 600 * SEC, 60 * SEC), (180 * SEC).min(run / 10).max(8 * SEC)),
            "crashloop-burst" => (aligned(t, 600 * SEC, 60 * SEC), 0),
            "node-flapping" => (aligned(t, 1800 * SEC, 60 * SEC), 0),
            // After the first hour, which CN-CI-004 learns the cluster's images in.
            "new-image" => (t.max(start + 65 * 60 * SEC), 0),
            _ => (t, 0),
        };
        let mut items: Vec<(i64, Item)> = g.scenario(name, t, span).into_iter().map(|ev| (ev.at, Item::Audit(ev))).collect();
        if opts.insights {
            items.extend(ig.scenario(name, t).into_iter().map(|(at, rec)| (at, Item::Insights(rec))));
        }
        attack_counts.push((*name, items.len() as u64));
        for (at, item) in items {
            attacks.push((at, attacks.len(), item));
        }
    }
    attacks.sort_by_key(|(t, seq, _)| (*t, *seq));
    let audit_attacks = attacks.iter().filter(|(_, _, item)| matches!(item, Item::Audit(_))).count();
    let background = opts.events.saturating_sub(audit_attacks as u64);

    let pod = format!("kube-apiserver-6b8f9c7d5-{}", g.rng.suffix());
    let container = g.rng.hex(64);
    let mut w = Writer {
        out,
        stats: GenStats::default(),
        line: Vec::with_capacity(64 << 10),
        in_line: 0,
        line_target: 1 + g.rng.below(8) as usize,
        pod,
        container,
        insights_line: Vec::with_capacity(16 << 10),
        insights_in_line: 0,
    };
    if opts.insights {
        for rec in ig.initial_inventory(start) {
            w.insights(&rec, &mut insights_rng)?;
        }
    }
    let mut public = match opts.profile {
        Profile::Calm => None,
        Profile::PublicApi => Some(public_api::PublicApi::new(&mut g, start, rate)),
    };
    let mut attacks = attacks.into_iter().peekable();
    let mut t = start;
    for _ in 0..background {
        let task = match &mut public {
            None => {
                // Exponential gaps: a Poisson stream of requests at the given rate.
                let gap = -(1.0 - g.rng.unit()).ln() / rate;
                t += (gap * 1e9) as i64;
                None
            }
            Some(p) => {
                let (at, task) = p.next(&mut g.rng);
                t = at;
                Some(task)
            }
        };
        while let Some((_, _, item)) = attacks.next_if(|(at, _, _)| *at <= t) {
            w.item(&item, &mut g.rng, &mut insights_rng)?;
        }
        let ev = match (&mut public, task) {
            (Some(p), Some(task)) => p.event(&mut g, task, t),
            _ => g.background(t),
        };
        w.audit(&ev, &mut g.rng)?;
        if opts.insights {
            if let Some(rec) = ig.background(&mut insights_rng, t) {
                w.insights(&rec, &mut insights_rng)?;
            }
        }
        if g.rng.chance(0.02) {
            let (cat, msg) = *g.rng.pick(KLOG);
            let line = format!("I{} {:>7} {msg}", chrono::DateTime::from_timestamp_nanos(t).format("%m%d %H:%M:%S%.6f"), 1);
            w.record(cat, &line, t, &mut g.rng)?;
            w.stats.other_records += 1;
        }
    }
    // Scenario records after the background traffic: a line each, so that records stay in
    // time order across the two kinds of line (minutes apart here, not milliseconds).
    for (_, _, item) in attacks {
        w.item(&item, &mut g.rng, &mut insights_rng)?;
        w.flush_line(&mut g.rng)?;
        w.flush_insights()?;
    }
    w.flush_line(&mut g.rng)?;
    w.flush_insights()?;
    let mut stats = w.stats;
    stats.attack_events = attack_counts;
    Ok(stats)
}

/// The records of envelope lines (what [`generate`] writes), batched again into envelopes of at
/// most `max_bytes` each, as a busy cluster's diagnostic setting batches them into Event Hubs
/// messages (up to 1 MB). A line that is not an envelope is passed on as it is.
pub fn rebatch<'a>(lines: impl IntoIterator<Item = &'a [u8]>, max_bytes: usize) -> Vec<Vec<u8>> {
    #[derive(serde::Deserialize)]
    struct Envelope<'a> {
        #[serde(borrow)]
        records: Vec<&'a serde_json::value::RawValue>,
    }
    const FRAME: usize = r#"{"records":[]}"#.len();
    let mut out = Vec::new();
    let mut batch: Vec<u8> = Vec::new();
    let close = |batch: &mut Vec<u8>, out: &mut Vec<Vec<u8>>| {
        if !batch.is_empty() {
            batch.extend_from_slice(b"]}");
            out.push(std::mem::take(batch));
        }
    };
    for line in lines {
        let Ok(env) = serde_json::from_slice::<Envelope>(line) else {
            close(&mut batch, &mut out);
            out.push(line.to_vec());
            continue;
        };
        for r in env.records {
            let r = r.get().as_bytes();
            if !batch.is_empty() && batch.len() + 1 + r.len() + 2 > max_bytes {
                close(&mut batch, &mut out);
            }
            if batch.is_empty() {
                batch.reserve(max_bytes.min(r.len() + FRAME));
                batch.extend_from_slice(br#"{"records":["#);
            } else {
                batch.push(b',');
            }
            batch.extend_from_slice(r);
        }
    }
    close(&mut batch, &mut out);
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn rebatched_envelopes_hold_every_record_once_within_the_size() {
        let lines: Vec<String> =
            (0..50).map(|i| format!(r#"{{"records":[{{"n":{i},"pad":"{}"}},{{"n":{}}}]}}"#, "x".repeat(i * 10), i + 1000)).collect();
        let out = super::rebatch(lines.iter().map(|l| l.as_bytes()), 2000);
        assert!(out.len() > 2);
        let mut seen = Vec::new();
        for m in &out {
            assert!(m.len() <= 2000, "{}", m.len());
            let v: serde_json::Value = serde_json::from_slice(m).unwrap();
            seen.extend(v["records"].as_array().unwrap().iter().map(|r| r["n"].as_i64().unwrap()));
        }
        let mut want: Vec<i64> = (0..50).flat_map(|i| [i, i + 1000]).collect();
        want.sort();
        seen.sort();
        assert_eq!(seen, want);
    }

    use super::*;

    fn gen(events: u64, seed: u64) -> (Vec<u8>, GenStats) {
        let mut buf = Vec::new();
        let stats = generate(&GenOptions { events, seed, ..Default::default() }, &mut buf).unwrap();
        (buf, stats)
    }

    #[test]
    fn deterministic_per_seed() {
        assert_eq!(gen(500, 3).0, gen(500, 3).0);
        assert_ne!(gen(500, 3).0, gen(500, 4).0);
    }

    #[test]
    fn lines_are_envelopes_with_audit_events_and_every_scenario() {
        let (buf, stats) = gen(5000, 9);
        let mut audit = 0;
        let mut other = 0;
        let mut insights = std::collections::BTreeSet::new();
        let mut insights_records = 0;
        for line in buf.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            let v: serde_json::Value = serde_json::from_slice(line).unwrap();
            let records = v["records"].as_array().unwrap();
            assert!((1..=8).contains(&records.len()));
            if records[0].get("Type").is_some() {
                for r in records {
                    assert!(r["_ResourceId"].as_str().unwrap().contains("managedclusters"));
                    assert_eq!(r["TimeGenerated"].as_str().unwrap().len(), "2026-11-01T08:00:00.1234567Z".len());
                    insights.insert(r["Type"].as_str().unwrap().to_string());
                    insights_records += 1;
                }
                continue;
            }
            for r in records {
                assert!(r["resourceId"].as_str().unwrap().contains("MANAGEDCLUSTERS"));
                assert_eq!(r["time"].as_str().unwrap().len(), "2026-11-01T08:00:00.1234567Z".len());
                let log = r["properties"]["log"].as_str().unwrap();
                match serde_json::from_str::<serde_json::Value>(log) {
                    Ok(ev) => {
                        assert_eq!(ev["apiVersion"], "audit.k8s.io/v1");
                        audit += 1;
                    }
                    Err(_) => other += 1,
                }
            }
        }
        assert_eq!(audit, 5000);
        assert_eq!(stats.audit_events, 5000);
        assert_eq!(other as u64, stats.other_records);
        assert!(other > 0);
        assert_eq!(insights_records, stats.insights_records);
        let tables: Vec<&str> = insights.iter().map(String::as_str).collect();
        assert_eq!(
            tables,
            ["ContainerInventory", "ContainerLogV2", "InsightsMetrics", "KubeEvents", "KubeNodeInventory", "KubePodInventory"]
        );
        assert_eq!(stats.attack_events.len(), SCENARIOS.len());
        let text = String::from_utf8(buf).unwrap();
        for needle in [
            "debug-shell",
            "node-debugger",
            "log-collector",
            "payments-api-7d9f8b6c4-q8w2z",
            "maintenance-admin",
            "203.0.113.50",
            "compromised-app",
            "db-credentials",
        ] {
            assert!(text.contains(needle), "{needle}");
        }
    }

    #[test]
    fn audit_records_do_not_depend_on_container_insights() {
        let audit_lines = |insights: bool| {
            let mut buf = Vec::new();
            generate(&GenOptions { events: 2000, seed: 5, insights, ..Default::default() }, &mut buf).unwrap();
            buf.split(|&b| b == b'\n')
                .filter(|l| !l.is_empty() && !l.windows(7).any(|w| w == b"\"Type\":"))
                .map(<[u8]>::to_vec)
                .collect::<Vec<_>>()
        };
        assert_eq!(audit_lines(true), audit_lines(false));
    }

    /// The calm profile's output, byte for byte, as it was before the public-API profile came
    /// (the bundled sample and many tests depend on it).
    #[test]
    fn calm_profile_output_is_unchanged() {
        use sha2::{Digest, Sha256};
        let hash = |opts: GenOptions| {
            let mut buf = Vec::new();
            generate(&opts, &mut buf).unwrap();
            format!("{:x}", Sha256::digest(&buf))
        };
        let got = [
            hash(GenOptions { events: 3000, seed: 7, ..Default::default() }),
            hash(GenOptions { events: 2000, seed: 5, attacks: false, ..Default::default() }),
            hash(GenOptions { events: 2000, seed: 5, insights: false, events_per_second: 20.0, ..Default::default() }),
        ];
        assert_eq!(
            got,
            [
                // The bundled sample, pipeline/samples/aks-sample.jsonl.gz, uncompressed.
                "d3a3ed0786d44d9104a4a866b0ccf0c23593d41a4b501f9dcf6973c1f861c78a",
                "cbd24d93d0153e566e45484daab449f217fca8bb45afb51ea5a2d7db0cb2da6f",
                "bbf446fe26f3eb971f35253cabd6cebecd1fabeb2a54443e7dbbe0af8ce27f09",
            ]
        );
    }

    /// The audit events of a run of the public-API profile.
    fn public_api(events: u64, seed: u64, rate: f64, attacks: bool) -> (Vec<u8>, Vec<serde_json::Value>) {
        let mut buf = Vec::new();
        let opts = GenOptions { events, seed, events_per_second: rate, attacks, profile: Profile::PublicApi, ..Default::default() };
        generate(&opts, &mut buf).unwrap();
        let mut audit = Vec::new();
        for line in buf.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            let v: serde_json::Value = serde_json::from_slice(line).unwrap();
            for r in v["records"].as_array().unwrap() {
                if r["category"] == "kube-audit" {
                    audit.push(serde_json::from_str(r["properties"]["log"].as_str().unwrap()).unwrap());
                }
            }
        }
        (buf, audit)
    }

    fn user(ev: &serde_json::Value) -> &str {
        ev["user"]["username"].as_str().unwrap()
    }

    #[test]
    fn public_api_profile_is_deterministic_per_seed() {
        assert_eq!(public_api(2000, 3, 100.0, true).0, public_api(2000, 3, 100.0, true).0);
        assert_ne!(public_api(2000, 3, 100.0, true).0, public_api(2000, 4, 100.0, true).0);
        // Another profile, other bytes; the same scenarios.
        assert_ne!(public_api(2000, 3, 100.0, true).0, gen(2000, 3).0);
        let (buf, audit) = public_api(3000, 9, 100.0, true);
        assert_eq!(audit.len(), 3000);
        let text = String::from_utf8(buf).unwrap();
        for needle in ["debug-shell", "maintenance-admin", "compromised-app", "db-credentials"] {
            assert!(text.contains(needle), "{needle}");
        }
    }

    #[test]
    fn public_api_nodes_and_agents_call_from_the_egress_ip() {
        let (_, audit) = public_api(20_000, 5, 100.0, false);
        let mut from_nodes = 0;
        let mut seen = std::collections::BTreeSet::new();
        for ev in &audit {
            let (u, ip) = (user(ev), ev["sourceIPs"][0].as_str().unwrap());
            let in_cluster = u.starts_with("system:node:")
                || u == "nodeclient"
                || ["coredns", "konnectivity-agent", "metrics-server", "azure-policy", "ama-logs"]
                    .iter()
                    .any(|sa| u == format!("system:serviceaccount:kube-system:{sa}"))
                || u.starts_with("system:serviceaccount:kube-system:microsoft-defender-")
                || ["gatekeeper-system:", "flux-system:", "cert-manager:", "ingress-nginx:"]
                    .iter()
                    .any(|ns| u.starts_with(&format!("system:serviceaccount:{ns}")))
                || u == "system:serviceaccount:ci:deployer";
            if in_cluster {
                assert_eq!(ip, PUBLIC_API_EGRESS_IP, "{u}");
                from_nodes += 1;
                seen.insert(u.split(':').take(3).collect::<Vec<_>>().join(":"));
            } else if u.starts_with("system:kube-")
                || u.starts_with("system:serviceaccount:kube-system:")
                || u == "aksService"
                || u == "masterclient"
            {
                assert!(ip.starts_with("172.31."), "{u} from {ip}");
            }
            assert!(!ip.starts_with("10."), "{u} from {ip}");
        }
        assert!(from_nodes > audit.len() / 2, "{from_nodes} of {}", audit.len());
        for who in [
            "system:node:aks-nodepool1-38211463-vmss000000",
            "nodeclient",
            "system:serviceaccount:kube-system",
            "system:serviceaccount:gatekeeper-system",
            "system:serviceaccount:flux-system",
        ] {
            assert!(seen.iter().any(|s| s.starts_with(who)), "{who}: {seen:?}");
        }
        // The node leases, every 10 s per node.
        let span = audit.last().unwrap()["requestReceivedTimestamp"].as_str().unwrap().to_string();
        let leases = audit
            .iter()
            .filter(|ev| ev["objectRef"]["namespace"] == "kube-node-lease" && user(ev) == "system:node:aks-nodepool1-38211463-vmss000002")
            .count();
        assert!((19..=21).contains(&leases), "{leases} leases in 200 s (last event {span})");
    }

    #[test]
    fn public_api_mix_is_mostly_reads_with_one_write_in_ten() {
        for rate in [100.0, 20.0] {
            let (_, audit) = public_api(20_000, 11, rate, false);
            let n = audit.len() as f64;
            let reads = audit.iter().filter(|ev| ["get", "list", "watch"].contains(&ev["verb"].as_str().unwrap())).count() as f64;
            let writes = audit
                .iter()
                .filter(|ev| {
                    ["create", "update", "patch", "delete"].contains(&ev["verb"].as_str().unwrap())
                        && [
                            "pods",
                            "deployments",
                            "replicasets",
                            "daemonsets",
                            "statefulsets",
                            "jobs",
                            "cronjobs",
                            "services",
                            "configmaps",
                            "secrets",
                            "ingresses",
                            "roles",
                            "rolebindings",
                            "clusterroles",
                            "clusterrolebindings",
                        ]
                        .contains(&ev["objectRef"]["resource"].as_str().unwrap_or(""))
                })
                .count() as f64;
            assert!(reads / n > 0.6, "rate {rate}: reads {}", reads / n);
            assert!((0.07..0.13).contains(&(writes / n)), "rate {rate}: writes {}", writes / n);
            // People: a few kubectl requests a day, so hardly any in 20 000 events.
            let people = audit.iter().filter(|ev| user(ev).ends_with("@contoso.com")).count();
            assert!(people < 10, "{people}");
            // In time order, spanning events / rate seconds.
            let times: Vec<&str> = audit.iter().map(|ev| ev["requestReceivedTimestamp"].as_str().unwrap()).collect();
            assert!(times.windows(2).all(|w| w[0] <= w[1]));
            let span = (crate::decode::time::parse_rfc3339_nanos(times[times.len() - 1]).unwrap()
                - crate::decode::time::parse_rfc3339_nanos(times[0]).unwrap()) as f64
                / 1e9;
            assert!((span - n / rate).abs() < 0.05 * n / rate, "rate {rate}: {span} s");
        }
    }

    #[test]
    fn public_api_controllers_create_pods_with_owners() {
        let (_, audit) = public_api(40_000, 2, 20.0, false);
        let created: Vec<_> = audit
            .iter()
            .filter(|ev| ev["verb"] == "create" && ev["objectRef"]["resource"] == "pods" && ev["objectRef"].get("subresource").is_none())
            .collect();
        assert!(!created.is_empty());
        for ev in created {
            assert!(user(ev).starts_with("system:serviceaccount:kube-system:"), "{}", user(ev));
            assert!(ev["requestObject"]["metadata"]["ownerReferences"][0]["controller"].as_bool().unwrap());
            let pod = ev["objectRef"]["name"].as_str().unwrap();
            assert!(audit.iter().any(|b| b["objectRef"]["name"] == pod && b["objectRef"]["subresource"] == "binding"), "{pod}");
        }
    }

    #[test]
    fn uuids_look_like_uuids() {
        let mut r = Rng(1);
        let u = r.uuid();
        assert_eq!(u.len(), 36);
        assert_eq!(&u[14..15], "4");
    }
}
