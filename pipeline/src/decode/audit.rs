//! The typed, borrowing view of audit.k8s.io/v1 documents, and the pod-spec facts derived from
//! request bodies. Only the fields rules use are declared; serde skips the rest without
//! building a tree. Strings borrow from the input unless they contain escapes.

use std::borrow::Cow;

use serde::de::IgnoredAny;
use serde::Deserialize;
use serde_json::value::RawValue;

pub type Str<'a> = Cow<'a, str>;

/// A JSON value kept as its text (a request body, `user.extra`): what serde_json's `RawValue`
/// holds, but one the scanners can also make: borrowed from a document, or unescaped from one
/// that held it inside a string.
#[derive(Clone, Debug, PartialEq)]
pub struct RawJson<'a>(Cow<'a, str>);

impl<'a> RawJson<'a> {
    /// `text` must be exactly one valid JSON value.
    pub(super) fn borrowed(text: &'a str) -> Self {
        RawJson(Cow::Borrowed(text))
    }

    /// As [`RawJson::borrowed`].
    pub(super) fn owned(text: String) -> Self {
        RawJson(Cow::Owned(text))
    }

    pub fn get(&self) -> &str {
        &self.0
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for RawJson<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        <&'a RawValue>::deserialize(d).map(|raw| RawJson::borrowed(raw.get()))
    }
}

/// Any top-level JSON object Crowsnest accepts, and also one audit Event: an AKS envelope sets
/// `records`, an EventList sets `kind: EventList` and `items`, an Event sets `auditID`.
/// Declaring all three in one struct decides the shape in a single parse.
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct AuditEvent<'a> {
    /// Envelope records, each read as an [`EnvelopeRecord`] or a Container Insights record.
    #[serde(borrow, default)]
    pub records: Option<Vec<&'a RawValue>>,
    /// A Log Analytics record's table (Container Insights); audit Events have none.
    #[serde(borrow, default, rename = "Type")]
    pub la_type: Option<Str<'a>>,
    /// A Log Analytics record's time: with or without `Type`, it marks one.
    #[serde(borrow, default, rename = "TimeGenerated")]
    pub time_generated: Option<RawJson<'a>>,
    #[serde(borrow, default)]
    pub items: Option<Vec<AuditEvent<'a>>>,
    #[serde(borrow, default)]
    pub kind: Option<Str<'a>>,
    #[serde(borrow, default)]
    pub level: Option<Str<'a>>,
    #[serde(borrow, default, rename = "auditID")]
    pub audit_id: Option<Str<'a>>,
    #[serde(borrow, default)]
    pub stage: Option<Str<'a>>,
    #[serde(borrow, default, rename = "requestURI")]
    pub request_uri: Option<Str<'a>>,
    #[serde(borrow, default)]
    pub verb: Option<Str<'a>>,
    #[serde(borrow, default)]
    pub user: Option<UserInfo<'a>>,
    #[serde(borrow, default)]
    pub impersonated_user: Option<UserInfo<'a>>,
    #[serde(borrow, default, rename = "sourceIPs")]
    pub source_ips: Option<Vec<Str<'a>>>,
    #[serde(borrow, default)]
    pub user_agent: Option<Str<'a>>,
    #[serde(borrow, default)]
    pub object_ref: Option<ObjectRef<'a>>,
    #[serde(borrow, default)]
    pub response_status: Option<Status<'a>>,
    #[serde(borrow, default)]
    pub request_object: Option<RawJson<'a>>,
    #[serde(borrow, default)]
    pub response_object: Option<RawJson<'a>>,
    #[serde(borrow, default)]
    pub request_received_timestamp: Option<Str<'a>>,
    #[serde(borrow, default)]
    pub stage_timestamp: Option<Str<'a>>,
    #[serde(borrow, default)]
    pub annotations: Option<Annotations<'a>>,
}

/// One record of an AKS diagnostic-settings envelope.
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct EnvelopeRecord<'a> {
    #[serde(borrow, default)]
    pub category: Option<Str<'a>>,
    /// Set by Log Analytics data export (Container Insights), not by diagnostic settings.
    #[serde(borrow, default, rename = "Type")]
    pub la_type: Option<Str<'a>>,
    #[serde(borrow, default, rename = "TimeGenerated")]
    pub time_generated: Option<&'a RawValue>,
    #[serde(borrow, default, rename = "resourceId")]
    pub resource_id: Option<Str<'a>>,
    #[serde(borrow, default)]
    pub time: Option<Str<'a>>,
    #[serde(borrow, default)]
    pub properties: Option<EnvelopeProperties<'a>>,
}

#[derive(Deserialize, Default)]
pub struct EnvelopeProperties<'a> {
    /// The audit Event as a JSON string (or klog text for non-audit categories), still
    /// escaped: the decoder unescapes it into a reused buffer instead of a fresh String.
    #[serde(borrow, default)]
    pub log: Option<&'a RawValue>,
}

#[derive(Deserialize, Default)]
pub struct UserInfo<'a> {
    #[serde(borrow, default)]
    pub username: Option<Str<'a>>,
    #[serde(borrow, default)]
    pub uid: Option<Str<'a>>,
    #[serde(borrow, default)]
    pub groups: Option<Vec<Str<'a>>>,
    #[serde(borrow, default)]
    pub extra: Option<RawJson<'a>>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct ObjectRef<'a> {
    #[serde(borrow, default)]
    pub resource: Option<Str<'a>>,
    #[serde(borrow, default)]
    pub subresource: Option<Str<'a>>,
    #[serde(borrow, default)]
    pub namespace: Option<Str<'a>>,
    #[serde(borrow, default)]
    pub name: Option<Str<'a>>,
    #[serde(borrow, default)]
    pub api_group: Option<Str<'a>>,
    #[serde(borrow, default)]
    pub api_version: Option<Str<'a>>,
}

#[derive(Deserialize, Default)]
pub struct Status<'a> {
    #[serde(default)]
    pub code: Option<i32>,
    #[serde(borrow, default)]
    pub reason: Option<Str<'a>>,
}

#[derive(Deserialize, Default)]
pub struct Annotations<'a> {
    #[serde(borrow, default, rename = "authorization.k8s.io/decision")]
    pub decision: Option<Str<'a>>,
    #[serde(borrow, default, rename = "authorization.k8s.io/reason")]
    pub reason: Option<Str<'a>>,
}

/// The Entra ID object id AKS puts in `user.extra` (`oid`, or the full claim URI).
pub fn user_oid(extra: &RawJson<'_>) -> Option<String> {
    // Only these two keys are read; the other claims are skipped without building a map.
    #[derive(Deserialize)]
    struct Extra<'a> {
        #[serde(borrow, default)]
        oid: Option<Vec<Str<'a>>>,
        #[serde(borrow, default, rename = "http://schemas.microsoft.com/identity/claims/objectidentifier")]
        claim: Option<Vec<Str<'a>>>,
    }
    let extra: Extra<'_> = serde_json::from_str(extra.get()).ok()?;
    [extra.oid, extra.claim].into_iter().flatten().find_map(|v| v.into_iter().next()).map(|s| s.into_owned())
}

/// Resources whose request body holds a pod spec (directly or as a template).
pub fn carries_pod_spec(resource: &str) -> bool {
    kind_of(resource).is_some()
}

/// Facts about a pod spec that rules test, computed once at decode.
#[derive(Default, Debug, PartialEq)]
pub struct PodFacts {
    pub privileged: bool,
    pub host_pid: bool,
    pub host_ipc: bool,
    pub host_network: bool,
    pub host_path_mounts: Vec<String>,
    pub images: Vec<String>,
    pub run_as_root: bool,
    pub allow_privilege_escalation: bool,
    pub added_capabilities: Vec<String>,
    pub automount_sa_token: Option<bool>,
    pub missing_resource_limits: bool,
    pub service_account_name: Option<String>,
    /// The controlling owner, `Kind/name`.
    pub owner: Option<String>,
    /// The workload the object belongs to, `Kind/name` (see the `workload` column).
    pub workload: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct K8sObject<'a> {
    #[serde(borrow, default)]
    kind: Option<Str<'a>>,
    #[serde(borrow, default)]
    metadata: Option<Metadata<'a>>,
    #[serde(default)]
    automount_service_account_token: Option<bool>,
    #[serde(borrow, default)]
    spec: Option<AnySpec<'a>>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct Metadata<'a> {
    #[serde(borrow, default)]
    name: Option<Str<'a>>,
    #[serde(borrow, default)]
    generate_name: Option<Str<'a>>,
    #[serde(borrow, default)]
    owner_references: Option<Vec<OwnerReference<'a>>>,
    #[serde(borrow, default)]
    labels: Option<Labels<'a>>,
}

#[derive(Deserialize, Default)]
struct OwnerReference<'a> {
    #[serde(borrow, default)]
    kind: Option<Str<'a>>,
    #[serde(borrow, default)]
    name: Option<Str<'a>>,
    #[serde(default)]
    controller: Option<bool>,
}

#[derive(Deserialize, Default)]
struct Labels<'a> {
    #[serde(borrow, default, rename = "pod-template-hash")]
    pod_template_hash: Option<Str<'a>>,
}

/// The kind of the objects of a resource that holds a pod spec (None for other resources).
fn kind_of(resource: &str) -> Option<&'static str> {
    Some(match resource {
        "pods" => "Pod",
        "deployments" => "Deployment",
        "daemonsets" => "DaemonSet",
        "statefulsets" => "StatefulSet",
        "replicasets" => "ReplicaSet",
        "jobs" => "Job",
        "cronjobs" => "CronJob",
        "replicationcontrollers" => "ReplicationController",
        _ => return None,
    })
}

/// The controlling owner (`Kind/name`) and the workload (`Kind/name`) of a pod or workload
/// object named `name` (objectRef.name, empty on a create with generateName). A ReplicaSet a
/// Deployment made is named after it plus `-` and the pod-template-hash label, which is taken
/// off; a Job a CronJob made is named after it plus `-` and the scheduled minute.
fn owner_and_workload(resource: &str, name: Option<&str>, meta: Option<&Metadata<'_>>) -> (Option<String>, Option<String>) {
    let owners = meta.and_then(|m| m.owner_references.as_deref()).unwrap_or_default();
    let owner = owners.iter().find(|o| o.controller == Some(true)).or(owners.first());
    let owner = owner.and_then(|o| Some((o.kind.as_deref()?, o.name.as_deref()?)));
    let hash = meta.and_then(|m| m.labels.as_ref()).and_then(|l| l.pod_template_hash.as_deref());
    let own_name =
        name.filter(|n| !n.is_empty()).or(meta.and_then(|m| m.name.as_deref())).or(meta.and_then(|m| m.generate_name.as_deref()));
    let deployment_of = |rs: &str| hash.and_then(|h| rs.strip_suffix(h)?.strip_suffix('-')).map(|d| format!("Deployment/{d}"));
    let cronjob_of = |job: &str| {
        let (base, minute) = job.rsplit_once('-')?;
        (minute.len() >= 8 && minute.bytes().all(|b| b.is_ascii_digit())).then(|| format!("CronJob/{base}"))
    };
    let workload = match (resource, owner) {
        ("pods", Some(("ReplicaSet", rs))) => deployment_of(rs).unwrap_or_else(|| format!("ReplicaSet/{rs}")),
        ("pods", Some(("Job", job))) => cronjob_of(job).unwrap_or_else(|| format!("Job/{job}")),
        (_, Some((kind @ ("Deployment" | "CronJob" | "DaemonSet" | "StatefulSet" | "ReplicaSet" | "Job"), n))) => format!("{kind}/{n}"),
        ("replicasets", None) => match own_name {
            Some(n) => deployment_of(n).unwrap_or_else(|| format!("ReplicaSet/{n}")),
            None => return (None, None),
        },
        (_, _) => match own_name {
            // Only pod-spec resources get here (see `object_facts`).
            Some(n) => format!("{}/{n}", kind_of(resource).unwrap_or("Object")),
            None => return (owner.map(|(k, n)| format!("{k}/{n}")), None),
        },
    };
    (owner.map(|(k, n)| format!("{k}/{n}")), Some(workload))
}

/// A pod spec, or a workload spec that holds one under `template` (Deployment, DaemonSet, Job…)
/// or `jobTemplate.spec.template` (CronJob).
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct AnySpec<'a> {
    #[serde(borrow, default)]
    template: Option<Box<Template<'a>>>,
    #[serde(borrow, default)]
    job_template: Option<Box<Template<'a>>>,
    #[serde(rename = "hostPID", default)]
    host_pid: Option<bool>,
    #[serde(rename = "hostIPC", default)]
    host_ipc: Option<bool>,
    #[serde(default)]
    host_network: Option<bool>,
    #[serde(default)]
    automount_service_account_token: Option<bool>,
    #[serde(borrow, default)]
    service_account_name: Option<Str<'a>>,
    #[serde(default)]
    security_context: Option<SecurityContext<'a>>,
    #[serde(borrow, default)]
    containers: Option<Vec<Container<'a>>>,
    #[serde(borrow, default)]
    init_containers: Option<Vec<Container<'a>>>,
    #[serde(borrow, default)]
    ephemeral_containers: Option<Vec<Container<'a>>>,
    #[serde(borrow, default)]
    volumes: Option<Vec<Volume<'a>>>,
}

#[derive(Deserialize, Default)]
struct Template<'a> {
    #[serde(borrow, default)]
    spec: Option<AnySpec<'a>>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct Container<'a> {
    #[serde(borrow, default)]
    image: Option<Str<'a>>,
    #[serde(borrow, default)]
    security_context: Option<SecurityContext<'a>>,
    #[serde(default)]
    resources: Option<Resources>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct SecurityContext<'a> {
    #[serde(default)]
    privileged: Option<bool>,
    #[serde(default)]
    run_as_user: Option<i64>,
    #[serde(default)]
    run_as_non_root: Option<bool>,
    #[serde(default)]
    allow_privilege_escalation: Option<bool>,
    #[serde(borrow, default)]
    capabilities: Option<Capabilities<'a>>,
}

#[derive(Deserialize, Default)]
struct Capabilities<'a> {
    #[serde(borrow, default)]
    add: Option<Vec<Str<'a>>>,
}

#[derive(Deserialize, Default)]
struct Resources {
    #[serde(default)]
    limits: Option<Limits>,
}

#[derive(Deserialize, Default)]
struct Limits {
    #[serde(default)]
    cpu: Option<IgnoredAny>,
    #[serde(default)]
    memory: Option<IgnoredAny>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct Volume<'a> {
    #[serde(borrow, default)]
    host_path: Option<HostPath<'a>>,
}

#[derive(Deserialize, Default)]
struct HostPath<'a> {
    #[serde(borrow, default)]
    path: Option<Str<'a>>,
}

/// The `kind` of a request body and, for pods, workloads and ServiceAccounts, its pod-spec facts.
/// A body that does not parse (a JSON patch, a strange shape) yields no facts, never an error:
/// the event itself is still valid.
pub fn object_facts(resource: &str, name: Option<&str>, body: &RawJson<'_>) -> (Option<String>, Option<PodFacts>) {
    if body.get().trim_start().starts_with('[') {
        // A JSON Patch (RFC 6902) carries only the change: the facts are those of what it sets.
        return match json_patch_skeleton(body.get()) {
            Some(skeleton) if carries_pod_spec(resource) => {
                let (_, facts) = object_facts(resource, name, &RawJson::owned(skeleton.to_string()));
                (None, facts)
            }
            _ => (None, None),
        };
    }
    let Ok(obj) = serde_json::from_str::<K8sObject<'_>>(body.get()) else {
        return (None, None);
    };
    let kind = obj.kind.as_deref().map(str::to_string);
    if resource == "serviceaccounts" {
        let facts = PodFacts { automount_sa_token: obj.automount_service_account_token, ..Default::default() };
        return (kind, Some(facts));
    }
    if !carries_pod_spec(resource) {
        return (kind, None);
    }
    let mut spec = match obj.spec {
        Some(s) => s,
        None => return (kind, None),
    };
    // Descend templates: CronJob → jobTemplate.spec → template.spec; workloads → template.spec.
    for _ in 0..3 {
        if let Some(t) = spec.job_template.take().and_then(|t| t.spec) {
            spec = t;
        } else if let Some(t) = spec.template.take().and_then(|t| t.spec) {
            spec = t;
        } else {
            break;
        }
    }
    let (owner, workload) = owner_and_workload(resource, name, obj.metadata.as_ref());
    (kind, Some(PodFacts { owner, workload, ..pod_facts(&spec) }))
}

/// What a JSON Patch adds or replaces, as one object: `[{"op":"replace","path":
/// "/spec/template/spec/containers/0/securityContext/privileged","value":true}]` becomes
/// `{"spec":{"template":{"spec":{"containers":[{"securityContext":{"privileged":true}}]}}}}`, so
/// the same fact finding reads it. Removals and moves set nothing; None when the text is not a
/// patch.
fn json_patch_skeleton(text: &str) -> Option<serde_json::Value> {
    use serde_json::Value;
    #[derive(Deserialize)]
    struct Op<'a> {
        #[serde(borrow)]
        op: Str<'a>,
        #[serde(borrow)]
        path: Str<'a>,
        #[serde(default)]
        value: Option<Value>,
    }
    let ops: Vec<Op<'_>> = serde_json::from_str(text).ok()?;
    // Only a patch of the pod spec has pod-spec facts (a patch of `/spec/replicas` has none).
    const POD_SPEC: &[&str] = &[
        "/containers",
        "/initContainers",
        "/ephemeralContainers",
        "/volumes",
        "/host",
        "/securityContext",
        "/template",
        "/serviceAccount",
        "/automount",
    ];
    if !ops.iter().any(|op| POD_SPEC.iter().any(|p| op.path.contains(p))) {
        return None;
    }
    let mut root = Value::Object(Default::default());
    for op in ops {
        let (Some(value), "add" | "replace") = (op.value, op.op.as_ref()) else { continue };
        let parts: Vec<String> = op.path.split('/').skip(1).map(|p| p.replace("~1", "/").replace("~0", "~")).collect();
        let Some((last, parents)) = parts.split_last() else { continue };
        let mut at = &mut root;
        for (i, part) in parents.iter().enumerate() {
            // A numeric segment or `-` indexes an array: one element stands for any.
            let next_is_index = parents.get(i + 1).unwrap_or(last).parse::<usize>().is_ok() || parents.get(i + 1).unwrap_or(last) == "-";
            at = match at {
                Value::Array(items) => {
                    if items.is_empty() {
                        items.push(Value::Object(Default::default()));
                    }
                    items.last_mut()?
                }
                Value::Object(map) => map.entry(part.clone()).or_insert_with(|| {
                    if next_is_index {
                        Value::Array(Vec::new())
                    } else {
                        Value::Object(Default::default())
                    }
                }),
                _ => break,
            };
        }
        match at {
            Value::Array(items) => items.push(value),
            Value::Object(map) => {
                map.insert(last.clone(), value);
            }
            _ => {}
        }
    }
    Some(root)
}

fn pod_facts(spec: &AnySpec<'_>) -> PodFacts {
    let pod_sc = spec.security_context.as_ref();
    let mut f = PodFacts {
        host_pid: spec.host_pid.unwrap_or(false),
        host_ipc: spec.host_ipc.unwrap_or(false),
        host_network: spec.host_network.unwrap_or(false),
        automount_sa_token: spec.automount_service_account_token,
        service_account_name: spec.service_account_name.as_deref().map(str::to_string),
        ..Default::default()
    };
    for v in spec.volumes.iter().flatten() {
        if let Some(p) = v.host_path.as_ref().and_then(|h| h.path.as_deref()) {
            f.host_path_mounts.push(p.to_string());
        }
    }
    let all = [&spec.containers, &spec.init_containers, &spec.ephemeral_containers];
    for (group, c) in all.iter().enumerate().flat_map(|(g, cs)| cs.iter().flatten().map(move |c| (g, c))) {
        if let Some(img) = c.image.as_deref() {
            f.images.push(img.to_string());
        }
        let sc = c.security_context.as_ref();
        f.privileged |= sc.and_then(|s| s.privileged).unwrap_or(false);
        f.allow_privilege_escalation |= sc.and_then(|s| s.allow_privilege_escalation).unwrap_or(false);
        for cap in sc.and_then(|s| s.capabilities.as_ref()).and_then(|c| c.add.as_ref()).into_iter().flatten() {
            f.added_capabilities.push(cap.to_string());
        }
        // Effective user: the container's setting wins over the pod's.
        let user = sc.and_then(|s| s.run_as_user).or(pod_sc.and_then(|s| s.run_as_user));
        let non_root = sc.and_then(|s| s.run_as_non_root).or(pod_sc.and_then(|s| s.run_as_non_root));
        f.run_as_root |= match user {
            Some(0) => true,
            Some(_) => false,
            None => non_root != Some(true),
        };
        // Ephemeral containers (kubectl debug) cannot carry resources.
        if group < 2 {
            let limits = c.resources.as_ref().and_then(|r| r.limits.as_ref());
            f.missing_resource_limits |= !limits.is_some_and(|l| l.cpu.is_some() && l.memory.is_some());
        }
    }
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(resource: &str, json: &str) -> PodFacts {
        let raw: Box<RawValue> = serde_json::from_str(json).unwrap();
        object_facts(resource, None, &RawJson::borrowed(raw.get())).1.unwrap()
    }

    #[test]
    fn pod_spec_facts() {
        let f = facts(
            "pods",
            r#"{"kind":"Pod","spec":{"hostPID":true,"hostNetwork":true,"securityContext":{"runAsNonRoot":true},
            "volumes":[{"name":"s","hostPath":{"path":"/var/run/docker.sock"}},{"name":"e","emptyDir":{}}],
            "containers":[{"name":"a","image":"ubuntu:22.04","securityContext":{"privileged":true,"capabilities":{"add":["SYS_ADMIN"]}},
              "resources":{"limits":{"cpu":"1","memory":"1Gi"}}},
              {"name":"b","image":"nginx","securityContext":{"runAsUser":0}}]}}"#,
        );
        assert!(f.privileged && f.host_pid && f.host_network && !f.host_ipc);
        assert_eq!(f.host_path_mounts, vec!["/var/run/docker.sock"]);
        assert_eq!(f.images, vec!["ubuntu:22.04", "nginx"]);
        assert_eq!(f.added_capabilities, vec!["SYS_ADMIN"]);
        assert!(f.run_as_root, "container b runs as uid 0 despite the pod's runAsNonRoot");
        assert!(f.missing_resource_limits, "container b has no limits");
    }

    #[test]
    fn templates_are_descended() {
        let f = facts(
            "cronjobs",
            r#"{"kind":"CronJob","spec":{"schedule":"* * * * *","jobTemplate":{"spec":{"template":{"spec":{
              "securityContext":{"runAsUser":1000},"automountServiceAccountToken":false,
              "containers":[{"image":"evil.io/miner:latest","resources":{"limits":{"cpu":"1","memory":"1Gi"}}}]}}}}}}"#,
        );
        assert_eq!(f.images, vec!["evil.io/miner:latest"]);
        assert!(!f.run_as_root && !f.missing_resource_limits && !f.privileged);
        assert_eq!(f.automount_sa_token, Some(false));
        let d =
            facts("deployments", r#"{"spec":{"template":{"spec":{"containers":[{"image":"x","securityContext":{"privileged":true}}]}}}}"#);
        assert!(d.privileged && d.run_as_root);
    }

    #[test]
    fn json_patches_give_the_facts_of_what_they_set() {
        let f = facts(
            "deployments",
            r#"[{"op":"replace","path":"/spec/template/spec/containers/0/securityContext/privileged","value":true},
                {"op":"add","path":"/spec/template/spec/hostNetwork","value":true},
                {"op":"add","path":"/spec/template/spec/volumes/-","value":{"name":"r","hostPath":{"path":"/var/run/docker.sock"}}}]"#,
        );
        assert!(f.privileged && f.host_network && !f.host_pid);
        assert_eq!(f.host_path_mounts, ["/var/run/docker.sock"]);
        let p = facts(
            "pods",
            r#"[{"op":"add","path":"/spec/containers/1","value":{"name":"x","image":"alpine","securityContext":{"privileged":true}}}]"#,
        );
        assert!(p.privileged);
        assert_eq!(p.images, ["alpine"]);
        let removed = RawJson::borrowed(r#"[{"op":"remove","path":"/spec/template/spec/hostNetwork"}]"#);
        assert_eq!(object_facts("deployments", None, &removed), (None, None));
        assert_eq!(object_facts("deployments", None, &RawJson::borrowed("[1,2]")), (None, None));
    }

    #[test]
    fn workloads_by_owner() {
        let of = |resource: &str, name: Option<&str>, json: &str| {
            let f = object_facts(resource, name, &RawJson::borrowed(json)).1.unwrap();
            (f.owner, f.workload)
        };
        let spec = r#""spec":{"containers":[{"image":"x"}]}"#;
        let rs_pod = format!(
            r#"{{"metadata":{{"generateName":"web-5d8f7c9b4-","labels":{{"app":"web","pod-template-hash":"5d8f7c9b4"}},
                "ownerReferences":[{{"kind":"ReplicaSet","name":"web-5d8f7c9b4","controller":true}}]}},{spec}}}"#
        );
        assert_eq!(of("pods", None, &rs_pod), (Some("ReplicaSet/web-5d8f7c9b4".into()), Some("Deployment/web".into())));
        let job_pod =
            format!(r#"{{"metadata":{{"ownerReferences":[{{"kind":"Job","name":"backup-29370240","controller":true}}]}},{spec}}}"#);
        assert_eq!(of("pods", Some("backup-29370240-x7k2p"), &job_pod).1.as_deref(), Some("CronJob/backup"));
        let ds_pod = format!(r#"{{"metadata":{{"ownerReferences":[{{"kind":"DaemonSet","name":"agent","controller":true}}]}},{spec}}}"#);
        assert_eq!(of("pods", None, &ds_pod).1.as_deref(), Some("DaemonSet/agent"));
        let bare = format!(r#"{{"metadata":{{"name":"debug"}},{spec}}}"#);
        assert_eq!(of("pods", Some("debug"), &bare), (None, Some("Pod/debug".into())));
        let rs = r#"{"metadata":{"name":"web-5d8f7c9b4","labels":{"pod-template-hash":"5d8f7c9b4"},
            "ownerReferences":[{"kind":"Deployment","name":"web","controller":true}]},"spec":{"template":{"spec":{"containers":[{"image":"x"}]}}}}"#;
        assert_eq!(of("replicasets", None, rs).1.as_deref(), Some("Deployment/web"));
        let deploy = r#"{"spec":{"template":{"spec":{"containers":[{"image":"x"}]}}}}"#;
        assert_eq!(of("deployments", Some("web"), deploy).1.as_deref(), Some("Deployment/web"));
    }

    #[test]
    fn odd_bodies_give_no_facts() {
        let raw: Box<RawValue> = serde_json::from_str(r#"[{"op":"replace","path":"/spec/replicas","value":3}]"#).unwrap();
        assert_eq!(object_facts("deployments", None, &RawJson::borrowed(raw.get())), (None, None));
        let raw: Box<RawValue> = serde_json::from_str(r#"{"kind":"ClusterRoleBinding","roleRef":{"name":"cluster-admin"}}"#).unwrap();
        assert_eq!(object_facts("clusterrolebindings", None, &RawJson::borrowed(raw.get())), (Some("ClusterRoleBinding".into()), None));
    }

    #[test]
    fn entra_object_id() {
        let raw: Box<RawValue> = serde_json::from_str(r#"{"oid":["0b1c"],"scopes":["x"]}"#).unwrap();
        assert_eq!(user_oid(&RawJson::borrowed(raw.get())).as_deref(), Some("0b1c"));
    }
}
