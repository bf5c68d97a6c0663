//! The Container Insights tables, as Log Analytics defines them: the same column names and
//! types, so a KQL author recognises every column, and an export from Log Analytics decodes
//! without a mapping. One declaration per table gives both the Arrow schema and the decoder's
//! column list.
//!
//! Log Analytics types map to Arrow as: string → Utf8; dynamic → Utf8 holding the JSON
//! text (query it with the json_* functions); datetime → UTC nanosecond timestamp; int → Int32;
//! long → Int64; real → Float64; bool → Boolean.

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Schema, SchemaRef};

use super::{field, timestamp_type};

/// A Log Analytics column type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LaType {
    String,
    /// JSON: an object, an array, or a string holding JSON.
    Dynamic,
    DateTime,
    Int,
    Long,
    Real,
    Bool,
}

impl LaType {
    pub fn arrow(self) -> DataType {
        match self {
            LaType::String | LaType::Dynamic => DataType::Utf8,
            LaType::DateTime => timestamp_type(),
            LaType::Int => DataType::Int32,
            LaType::Long => DataType::Int64,
            LaType::Real => DataType::Float64,
            LaType::Bool => DataType::Boolean,
        }
    }

    fn name(self) -> &'static str {
        match self {
            LaType::String => "string",
            LaType::Dynamic => "dynamic",
            LaType::DateTime => "datetime",
            LaType::Int => "int",
            LaType::Long => "long",
            LaType::Real => "real",
            LaType::Bool => "bool",
        }
    }
}

/// One Container Insights table.
#[derive(Debug)]
pub struct InsightsTable {
    /// Crowsnest's table name (what rules and hunts say in FROM).
    pub name: &'static str,
    /// The Log Analytics table (the records' `Type`).
    pub la_name: &'static str,
    pub columns: &'static [(&'static str, LaType, &'static str)],
    /// Columns that, all present, identify a record of this table that carries no `Type`.
    pub signature: &'static [&'static str],
}

/// Every Container Insights table's time column (required: a record without it is a dead letter).
pub const TIME_GENERATED: &str = "TimeGenerated";

use LaType::*;

/// Columns every Log Analytics table has, first in every schema.
const COMMON: &[(&str, LaType, &str)] = &[
    (TIME_GENERATED, DateTime, "when the record was generated (the event time windows are over)"),
    ("TenantId", String, "Log Analytics workspace id"),
    ("SourceSystem", String, "agent type that collected the record, e.g. Container"),
    ("Computer", String, "node name (empty for some cluster-level records)"),
    ("_ResourceId", String, "ARM id of the AKS cluster the record came from"),
];

pub const CONTAINER_LOG: InsightsTable = InsightsTable {
    name: "container_log",
    la_name: "ContainerLogV2",
    columns: &[
        ("ContainerId", String, "container id"),
        ("ContainerName", String, "container name"),
        ("PodName", String, "pod name"),
        ("PodNamespace", String, "pod namespace"),
        ("LogMessage", Dynamic, "the log line (a JSON log line stays JSON text)"),
        ("LogSource", String, "stdout or stderr"),
        ("LogLevel", String, "severity parsed from the line, when the agent could"),
        (
            "KubernetesMetadata",
            Dynamic,
            "JSON: podLabels, podAnnotations, podUid, image, imageID, imageRepo, imageTag (when metadata collection is on)",
        ),
    ],
    signature: &["LogMessage", "ContainerId"],
};

pub const KUBE_EVENTS: InsightsTable = InsightsTable {
    name: "kube_events",
    la_name: "KubeEvents",
    columns: &[
        ("ObjectKind", String, "kind of the object the event is about: Pod, Node, …"),
        ("Namespace", String, "namespace of the object"),
        ("Name", String, "name of the object"),
        ("Reason", String, "event reason: BackOff, Failed, OOMKilling, NodeNotReady, …"),
        ("Message", String, "event message"),
        ("KubeEventType", String, "Normal or Warning"),
        ("SourceComponent", String, "component that reported it: kubelet, default-scheduler, …"),
        ("FirstSeen", DateTime, "first time the event was seen"),
        ("LastSeen", DateTime, "last time the event was seen"),
        ("Count", Real, "times the event occurred"),
        ("ClusterId", String, "ARM id of the cluster"),
        ("ClusterName", String, "cluster name"),
    ],
    signature: &["KubeEventType", "Reason"],
};

pub const KUBE_POD_INVENTORY: InsightsTable = InsightsTable {
    name: "kube_pod_inventory",
    la_name: "KubePodInventory",
    columns: &[
        ("ClusterId", String, "ARM id of the cluster"),
        ("ClusterName", String, "cluster name"),
        ("Namespace", String, "pod namespace"),
        ("Name", String, "pod name"),
        ("PodUid", String, "pod uid"),
        ("PodLabel", String, "pod labels as JSON text: [{\"app\":\"web\",…}]"),
        ("PodStatus", String, "Pending, Running, Succeeded, Failed, Unknown, Terminating (a crash-looping pod stays Running)"),
        ("PodIp", String, "pod IP"),
        ("PodCreationTimeStamp", DateTime, "when the pod was created"),
        ("PodStartTime", DateTime, "when the pod started"),
        ("PodRestartCount", Int, "restarts of the pod's containers, summed"),
        ("ControllerKind", String, "kind of the owning controller: ReplicaSet, DaemonSet, …"),
        ("ControllerName", String, "name of the owning controller"),
        ("ServiceName", String, "service the pod backs"),
        ("ContainerID", String, "container id (one row per container)"),
        ("ContainerName", String, "PodUid/containerName (not the plain name, unlike ContainerLogV2)"),
        ("ContainerStatus", String, "running, waiting or terminated (lower case)"),
        ("ContainerStatusReason", String, "why waiting or terminated: CrashLoopBackOff, ImagePullBackOff, OOMKilled, …"),
        ("ContainerLastStatus", String, "the previous state as JSON text: {\"lastState\":\"terminated\",\"reason\":\"OOMKilled\",…}"),
        ("ContainerRestartCount", Int, "restarts of this container"),
        ("ContainerCreationTimeStamp", DateTime, "when the container was created"),
        ("ContainerStartTime", DateTime, "when the container started"),
    ],
    signature: &["PodUid", "PodStatus"],
};

pub const KUBE_NODE_INVENTORY: InsightsTable = InsightsTable {
    name: "kube_node_inventory",
    la_name: "KubeNodeInventory",
    columns: &[
        ("ClusterId", String, "ARM id of the cluster"),
        ("ClusterName", String, "cluster name"),
        (
            "Status",
            String,
            "the conditions that are true, comma-separated: Ready, MemoryPressure,Ready, … (a node that is not ready lacks Ready)",
        ),
        ("LastTransitionTimeReady", DateTime, "when the Ready condition last changed"),
        ("Labels", String, "node labels as JSON text"),
        ("KubeletVersion", String, "kubelet version"),
        ("KubeProxyVersion", String, "kube-proxy version"),
        ("CreationTimeStamp", DateTime, "when the node was created"),
        ("OperatingSystem", String, "node OS image"),
        ("DockerVersion", String, "container runtime version"),
        ("KubernetesProviderID", String, "cloud provider of the node: azure, onprem, azurestack"),
    ],
    signature: &["KubeletVersion", "Status"],
};

pub const INSIGHTS_METRICS: InsightsTable = InsightsTable {
    name: "insights_metrics",
    la_name: "InsightsMetrics",
    columns: &[
        ("Origin", String, "who emitted the metric: container.azm.ms/telegraf, container.azm.ms"),
        ("Namespace", String, "metric namespace: container.azm.ms/disk, container.azm.ms/pv, container.azm.ms/gpu, …"),
        ("Name", String, "metric name"),
        ("Val", Real, "metric value"),
        ("Tags", String, "metric dimensions as JSON text (container.azm.ms/clusterId, …)"),
        ("AgentId", String, "id of the agent that sent it"),
    ],
    signature: &["Namespace", "Name", "Val"],
};

pub const CONTAINER_INVENTORY: InsightsTable = InsightsTable {
    name: "container_inventory",
    la_name: "ContainerInventory",
    columns: &[
        ("ContainerID", String, "container id"),
        ("Name", String, "k8s_<container>_<pod>_<namespace>_<id>_<restarts>"),
        ("ContainerHostname", String, "hostname inside the container (the pod name)"),
        ("ImageID", String, "image id"),
        ("Repository", String, "image registry, e.g. myacr.azurecr.io"),
        ("Image", String, "image name without registry and tag"),
        ("ImageTag", String, "image tag"),
        ("ContainerState", String, "Running, Waiting, Terminated, Failed (terminated with a non-zero exit code)"),
        ("ExitCode", Int, "exit code of a terminated container"),
        ("Command", String, "the container's command"),
        ("EnvironmentVar", String, "environment variables as a JSON array of KEY=VALUE (when collection is enabled)"),
        ("Ports", String, "exposed ports"),
        ("CreatedTime", DateTime, "when the container was created"),
        ("StartedTime", DateTime, "when it started"),
        ("FinishedTime", DateTime, "when it finished"),
    ],
    signature: &["ContainerHostname", "ImageID"],
};

/// Every Container Insights table Crowsnest decodes.
pub const ALL: &[&InsightsTable] =
    &[&CONTAINER_LOG, &KUBE_EVENTS, &KUBE_POD_INVENTORY, &KUBE_NODE_INVENTORY, &INSIGHTS_METRICS, &CONTAINER_INVENTORY];

impl InsightsTable {
    /// Every column: the common ones first, then the table's own.
    pub fn all_columns(&self) -> impl Iterator<Item = &'static (&'static str, LaType, &'static str)> {
        COMMON.iter().chain(self.columns.iter())
    }

    pub fn schema(&self) -> SchemaRef {
        let fields: Vec<_> = self
            .all_columns()
            .map(|&(name, t, desc)| {
                field(name, t.arrow(), name != TIME_GENERATED, &format!("{desc} (Log Analytics {}: {})", self.la_name, t.name()))
            })
            .collect();
        Arc::new(Schema::new(fields))
    }

    /// The table whose Log Analytics name is `la_name` (a record's `Type`).
    pub fn by_la_name(la_name: &str) -> Option<&'static InsightsTable> {
        ALL.iter().copied().find(|t| t.la_name == la_name)
    }

    /// The table a record without `Type` belongs to, from the columns it has.
    pub fn by_signature(has: impl Fn(&str) -> bool) -> Option<&'static InsightsTable> {
        ALL.iter().copied().find(|t| t.signature.iter().all(|c| has(c)))
    }
}
