//! Arrow schemas of every table Crowsnest produces, and their published JSON form.
//!
//! The schemas are the contract between the decoder, the rules (which are SQL over these
//! columns), the lake and the alert sinks. `schemas/*.json` is generated from this file by
//! `crowsnest schema TABLE --json`; a test fails when the committed files drift.

pub mod insights;

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use serde_json::{json, Value};

/// Name of the Kubernetes audit table.
pub const KUBE_AUDIT: &str = "kube_audit";
/// Name of the alert table (what sinks and Sentinel receive).
pub const ALERTS: &str = "alerts";

/// Every table `crowsnest schema` knows, in display order.
pub const TABLE_NAMES: &[&str] = &[
    KUBE_AUDIT,
    insights::CONTAINER_LOG.name,
    insights::KUBE_EVENTS.name,
    insights::KUBE_POD_INVENTORY.name,
    insights::KUBE_NODE_INVENTORY.name,
    insights::INSIGHTS_METRICS.name,
    insights::CONTAINER_INVENTORY.name,
    ALERTS,
];

/// An event table: what rules read, and the columns every alert takes from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Table {
    pub name: &'static str,
    /// The event time: what windows, sequences and the watermark go by.
    pub time_column: &'static str,
    /// What identifies one event (the alert's sample of ids), if the table has it.
    pub id_column: Option<&'static str>,
    /// The cluster the event came from.
    pub cluster_column: &'static str,
}

/// The audit table.
pub const KUBE_AUDIT_TABLE: Table =
    Table { name: KUBE_AUDIT, time_column: "event_time", id_column: Some("audit_id"), cluster_column: "cluster" };

/// Every event table rules can read.
pub fn event_tables() -> impl Iterator<Item = Table> {
    std::iter::once(KUBE_AUDIT_TABLE).chain(insights::ALL.iter().map(|t| Table {
        name: t.name,
        time_column: insights::TIME_GENERATED,
        id_column: None,
        cluster_column: "_ResourceId",
    }))
}

/// The event table named `name`.
pub fn event_table(name: &str) -> Option<Table> {
    event_tables().find(|t| t.name == name)
}

/// The UTC nanosecond timestamp type used for every event time.
pub fn timestamp_type() -> DataType {
    DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into()))
}

fn string_list() -> DataType {
    DataType::List(Arc::new(Field::new("item", DataType::Utf8, true)))
}

fn field(name: &str, data_type: DataType, nullable: bool, description: &str) -> Field {
    Field::new(name, data_type, nullable).with_metadata([("description".to_string(), description.to_string())].into_iter().collect())
}

/// Column positions of `kube_audit`, so the decoder's builders and the schema cannot disagree.
pub mod audit_col {
    pub const EVENT_TIME: usize = 0;
    pub const STAGE_TIME: usize = 1;
    pub const AUDIT_ID: usize = 2;
    pub const STAGE: usize = 3;
    pub const LEVEL: usize = 4;
    pub const VERB: usize = 5;
    pub const REQUEST_URI: usize = 6;
    pub const USER_NAME: usize = 7;
    pub const USER_UID: usize = 8;
    pub const USER_GROUPS: usize = 9;
    pub const USER_EXTRA: usize = 10;
    pub const USER_OID: usize = 11;
    pub const IMPERSONATED_USER: usize = 12;
    pub const SOURCE_IPS: usize = 13;
    pub const SOURCE_IP: usize = 14;
    pub const USER_AGENT: usize = 15;
    pub const RESOURCE: usize = 16;
    pub const SUBRESOURCE: usize = 17;
    pub const NAMESPACE: usize = 18;
    pub const NAME: usize = 19;
    pub const API_GROUP: usize = 20;
    pub const API_VERSION: usize = 21;
    pub const RESPONSE_CODE: usize = 22;
    pub const RESPONSE_REASON: usize = 23;
    pub const AUTHZ_DECISION: usize = 24;
    pub const AUTHZ_REASON: usize = 25;
    pub const CLUSTER: usize = 26;
    pub const CATEGORY: usize = 27;
    pub const REQUEST_OBJECT: usize = 28;
    pub const RESPONSE_OBJECT: usize = 29;
    pub const OBJECT_KIND: usize = 30;
    pub const PRIVILEGED: usize = 31;
    pub const HOST_PID: usize = 32;
    pub const HOST_IPC: usize = 33;
    pub const HOST_NETWORK: usize = 34;
    pub const HOST_PATH_MOUNTS: usize = 35;
    pub const IMAGES: usize = 36;
    pub const RUN_AS_ROOT: usize = 37;
    pub const ALLOW_PRIVILEGE_ESCALATION: usize = 38;
    pub const ADDED_CAPABILITIES: usize = 39;
    pub const AUTOMOUNT_SA_TOKEN: usize = 40;
    pub const MISSING_RESOURCE_LIMITS: usize = 41;
    pub const SERVICE_ACCOUNT_NAME: usize = 42;
    pub const OWNER: usize = 43;
    pub const WORKLOAD: usize = 44;
    pub const COUNT: usize = 45;
}

/// The `kube_audit` table: one row per audit.k8s.io/v1 Event (per auditID and stage).
pub fn kube_audit_schema() -> SchemaRef {
    use audit_col as c;
    let fields = vec![
        (
            c::EVENT_TIME,
            field("event_time", timestamp_type(), false, "requestReceivedTimestamp (falls back to stageTimestamp, then the envelope time)"),
        ),
        (c::STAGE_TIME, field("stage_time", timestamp_type(), true, "stageTimestamp")),
        (c::AUDIT_ID, field("audit_id", DataType::Utf8, false, "auditID; with stage, unique per row")),
        (c::STAGE, field("stage", DataType::Utf8, true, "RequestReceived, ResponseStarted, ResponseComplete or Panic")),
        (c::LEVEL, field("level", DataType::Utf8, true, "Metadata, Request or RequestResponse")),
        (c::VERB, field("verb", DataType::Utf8, true, "get, list, watch, create, update, patch, delete, deletecollection, …")),
        (c::REQUEST_URI, field("request_uri", DataType::Utf8, true, "requestURI")),
        (c::USER_NAME, field("user_name", DataType::Utf8, true, "user.username (Entra ID users appear as their UPN or object id)")),
        (c::USER_UID, field("user_uid", DataType::Utf8, true, "user.uid")),
        (c::USER_GROUPS, field("user_groups", string_list(), true, "user.groups")),
        (c::USER_EXTRA, field("user_extra", DataType::Utf8, true, "user.extra as JSON text")),
        (c::USER_OID, field("user_oid", DataType::Utf8, true, "Entra ID object id from user.extra (oid), when present")),
        (c::IMPERSONATED_USER, field("impersonated_user", DataType::Utf8, true, "impersonatedUser.username")),
        (c::SOURCE_IPS, field("source_ips", string_list(), true, "sourceIPs")),
        (c::SOURCE_IP, field("source_ip", DataType::Utf8, true, "first of sourceIPs (the client as the API server saw it)")),
        (c::USER_AGENT, field("user_agent", DataType::Utf8, true, "userAgent")),
        (c::RESOURCE, field("resource", DataType::Utf8, true, "objectRef.resource, e.g. pods, secrets")),
        (c::SUBRESOURCE, field("subresource", DataType::Utf8, true, "objectRef.subresource, e.g. exec, attach, status")),
        (c::NAMESPACE, field("namespace", DataType::Utf8, true, "objectRef.namespace")),
        (c::NAME, field("name", DataType::Utf8, true, "objectRef.name")),
        (c::API_GROUP, field("api_group", DataType::Utf8, true, "objectRef.apiGroup (empty for the core group)")),
        (c::API_VERSION, field("api_version", DataType::Utf8, true, "objectRef.apiVersion")),
        (c::RESPONSE_CODE, field("response_code", DataType::Int32, true, "responseStatus.code")),
        (c::RESPONSE_REASON, field("response_reason", DataType::Utf8, true, "responseStatus.reason")),
        (c::AUTHZ_DECISION, field("authz_decision", DataType::Utf8, true, "annotation authorization.k8s.io/decision (allow, forbid)")),
        (c::AUTHZ_REASON, field("authz_reason", DataType::Utf8, true, "annotation authorization.k8s.io/reason")),
        (
            c::CLUSTER,
            field("cluster", DataType::Utf8, true, "AKS envelope resourceId (upper-case ARM id of the cluster); null for raw events"),
        ),
        (
            c::CATEGORY,
            field("category", DataType::Utf8, true, "AKS diagnostic category: kube-audit, kube-audit-admin or guard; null for raw events"),
        ),
        (c::REQUEST_OBJECT, field("request_object", DataType::Utf8, true, "requestObject as JSON text (Secret payloads redacted)")),
        (c::RESPONSE_OBJECT, field("response_object", DataType::Utf8, true, "responseObject as JSON text (Secret payloads redacted)")),
        (c::OBJECT_KIND, field("object_kind", DataType::Utf8, true, "requestObject.kind, e.g. Pod, Deployment, ClusterRoleBinding")),
        (
            c::PRIVILEGED,
            field(
                "privileged",
                DataType::Boolean,
                true,
                "derived: some container or initContainer has securityContext.privileged = true (pods and pod templates of workloads)",
            ),
        ),
        (c::HOST_PID, field("host_pid", DataType::Boolean, true, "derived: pod spec hostPID")),
        (c::HOST_IPC, field("host_ipc", DataType::Boolean, true, "derived: pod spec hostIPC")),
        (c::HOST_NETWORK, field("host_network", DataType::Boolean, true, "derived: pod spec hostNetwork")),
        (c::HOST_PATH_MOUNTS, field("host_path_mounts", string_list(), true, "derived: hostPath volume paths of the pod spec")),
        (c::IMAGES, field("images", string_list(), true, "derived: images of all containers, initContainers and ephemeralContainers")),
        (
            c::RUN_AS_ROOT,
            field(
                "run_as_root",
                DataType::Boolean,
                true,
                "derived: some container's effective runAsUser is 0, or none of runAsNonRoot/runAsUser prevents root",
            ),
        ),
        (
            c::ALLOW_PRIVILEGE_ESCALATION,
            field("allow_privilege_escalation", DataType::Boolean, true, "derived: some container sets allowPrivilegeEscalation = true"),
        ),
        (
            c::ADDED_CAPABILITIES,
            field("added_capabilities", string_list(), true, "derived: securityContext.capabilities.add of all containers"),
        ),
        (
            c::AUTOMOUNT_SA_TOKEN,
            field(
                "automount_sa_token",
                DataType::Boolean,
                true,
                "derived: automountServiceAccountToken of the pod spec or ServiceAccount, null when unset",
            ),
        ),
        (
            c::MISSING_RESOURCE_LIMITS,
            field("missing_resource_limits", DataType::Boolean, true, "derived: some container has no cpu or no memory limit"),
        ),
        (c::SERVICE_ACCOUNT_NAME, field("service_account_name", DataType::Utf8, true, "derived: pod spec serviceAccountName")),
        (
            c::OWNER,
            field("owner", DataType::Utf8, true, "derived: the controlling ownerReference of a pod or workload as Kind/name, e.g. ReplicaSet/web-5d8f7c9b4"),
        ),
        (
            c::WORKLOAD,
            field(
                "workload",
                DataType::Utf8,
                true,
                "derived: the workload a pod or workload object belongs to, as Kind/name: a ReplicaSet's pods and the ReplicaSet itself give their Deployment (pod-template-hash removed), a CronJob's Jobs and their pods the CronJob, other pods their owner, a workload itself",
            ),
        ),
    ];
    debug_assert!(fields.iter().enumerate().all(|(i, (pos, _))| i == *pos));
    debug_assert_eq!(fields.len(), c::COUNT);
    Arc::new(Schema::new(fields.into_iter().map(|(_, f)| f).collect::<Vec<_>>()))
}

/// The alert: what every sink receives (JSON lines, Kafka, Sentinel). `fields` and `entities`
/// are JSON objects whose keys depend on the rule.
pub fn alert_schema() -> SchemaRef {
    let f = |n: &str, t: DataType, null: bool, d: &str| field(n, t, null, d);
    Arc::new(Schema::new(vec![
        f("id", DataType::Utf8, false, "deterministic id: hash of rule id, entity values and window start (windowed) or audit id (single event); a replay yields the same id"),
        f("rule_id", DataType::Utf8, false, "id of the rule that fired"),
        f("rule_title", DataType::Utf8, false, "title of the rule"),
        f("severity", DataType::Utf8, false, "informational, low, medium, high or critical"),
        f("mitre", string_list(), false, "MITRE ATT&CK technique ids"),
        f("tags", string_list(), false, "rule tags"),
        f("first_seen", timestamp_type(), false, "event time of the first matching event"),
        f("last_seen", timestamp_type(), false, "event time of the last matching event"),
        f("window_start", timestamp_type(), true, "start of the window (windowed rules)"),
        f("window_end", timestamp_type(), true, "end of the window (windowed rules)"),
        f("count", DataType::UInt64, false, "number of matching events"),
        f("entities", DataType::Utf8, false, "JSON object: the rule's entity columns and their values"),
        f("cluster", DataType::Utf8, true, "cluster (AKS resourceId) of the first matching event"),
        f("audit_ids", string_list(), false, "audit ids of matching events (at most 10)"),
        f("fields", DataType::Utf8, false, "JSON object: the columns the rule's SELECT returns"),
        f("detected_at", timestamp_type(), false, "wall-clock time the alert was produced"),
    ]))
}

/// Schema of a table by name.
pub fn schema_of(table: &str) -> Option<SchemaRef> {
    match table {
        KUBE_AUDIT => Some(kube_audit_schema()),
        ALERTS => Some(alert_schema()),
        other => insights::ALL.iter().find(|t| t.name == other).map(|t| t.schema()),
    }
}

fn type_name(t: &DataType) -> String {
    match t {
        DataType::Utf8 => "string".into(),
        DataType::Boolean => "boolean".into(),
        DataType::Int32 => "int32".into(),
        DataType::Int64 => "int64".into(),
        DataType::UInt64 => "uint64".into(),
        DataType::Float64 => "float64".into(),
        DataType::Timestamp(TimeUnit::Nanosecond, Some(tz)) => format!("timestamp[ns, {tz}]"),
        DataType::List(f) => format!("list<{}>", type_name(f.data_type())),
        other => format!("{other}"),
    }
}

/// The published JSON form of a schema (what `schemas/TABLE.json` holds).
pub fn schema_json(table: &str, schema: &Schema) -> Value {
    let columns: Vec<Value> = schema
        .fields()
        .iter()
        .map(|f| {
            json!({
                "name": f.name(),
                "type": type_name(f.data_type()),
                "arrow_type": format!("{}", f.data_type()),
                "nullable": f.is_nullable(),
                "description": f.metadata().get("description").cloned().unwrap_or_default(),
            })
        })
        .collect();
    json!({ "table": table, "columns": columns })
}

/// Human-readable schema, one column a line.
pub fn schema_text(schema: &Schema) -> String {
    let mut out = String::new();
    for f in schema.fields() {
        let null = if f.is_nullable() { "" } else { " not null" };
        let desc = f.metadata().get("description").map(String::as_str).unwrap_or("");
        out.push_str(&format!("{:<28} {:<32} {}\n", f.name(), format!("{}{null}", type_name(f.data_type())), desc));
    }
    out
}
