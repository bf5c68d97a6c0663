//! Builds `kube_audit` Arrow batches column by column, straight from the typed parse.

use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayRef, BooleanBuilder, Int32Builder, ListBuilder, RecordBatch, StringBuilder, TimestampNanosecondBuilder,
};
use datafusion::arrow::datatypes::SchemaRef;

use super::audit::{object_facts, user_oid, AuditEvent, PodFacts};
use crate::deadletter::Reason;
use crate::redact::redact_body;
use crate::tables::kube_audit_schema;

/// What the envelope (if any) adds to an event.
#[derive(Clone, Copy, Default)]
pub struct EnvelopeContext<'a> {
    pub cluster: Option<&'a str>,
    pub category: Option<&'a str>,
    /// The envelope record's own time, the last fallback for event_time.
    pub time: Option<i64>,
}

pub struct AuditBatchBuilder {
    schema: SchemaRef,
    rows: usize,
    event_time: TimestampNanosecondBuilder,
    stage_time: TimestampNanosecondBuilder,
    audit_id: StringBuilder,
    stage: StringBuilder,
    level: StringBuilder,
    verb: StringBuilder,
    request_uri: StringBuilder,
    user_name: StringBuilder,
    user_uid: StringBuilder,
    user_groups: ListBuilder<StringBuilder>,
    user_extra: StringBuilder,
    user_oid: StringBuilder,
    impersonated_user: StringBuilder,
    source_ips: ListBuilder<StringBuilder>,
    source_ip: StringBuilder,
    user_agent: StringBuilder,
    resource: StringBuilder,
    subresource: StringBuilder,
    namespace: StringBuilder,
    name: StringBuilder,
    api_group: StringBuilder,
    api_version: StringBuilder,
    response_code: Int32Builder,
    response_reason: StringBuilder,
    authz_decision: StringBuilder,
    authz_reason: StringBuilder,
    cluster: StringBuilder,
    category: StringBuilder,
    request_object: StringBuilder,
    response_object: StringBuilder,
    object_kind: StringBuilder,
    privileged: BooleanBuilder,
    host_pid: BooleanBuilder,
    host_ipc: BooleanBuilder,
    host_network: BooleanBuilder,
    host_path_mounts: ListBuilder<StringBuilder>,
    images: ListBuilder<StringBuilder>,
    run_as_root: BooleanBuilder,
    allow_privilege_escalation: BooleanBuilder,
    added_capabilities: ListBuilder<StringBuilder>,
    automount_sa_token: BooleanBuilder,
    missing_resource_limits: BooleanBuilder,
    service_account_name: StringBuilder,
    owner: StringBuilder,
    workload: StringBuilder,
}

fn list_builder() -> ListBuilder<StringBuilder> {
    ListBuilder::new(StringBuilder::new())
}

fn append_list<'s>(b: &mut ListBuilder<StringBuilder>, items: Option<impl IntoIterator<Item = &'s str>>) {
    match items {
        Some(items) => {
            for s in items {
                b.values().append_value(s);
            }
            b.append(true);
        }
        None => b.append(false),
    }
}

impl Default for AuditBatchBuilder {
    fn default() -> Self {
        Self::new()
    }
}

/// Finishes a string column and starts the next one sized like it: a batch's request bodies
/// are megabytes, and growing a builder from empty by doubling copied them about twice over.
fn finish_sized(builder: &mut StringBuilder) -> ArrayRef {
    let array = builder.finish();
    let bytes = array.values().len();
    *builder = StringBuilder::with_capacity(datafusion::arrow::array::Array::len(&array), bytes + bytes / 8);
    Arc::new(array)
}

impl AuditBatchBuilder {
    pub fn new() -> Self {
        let schema = kube_audit_schema();
        let ts = || TimestampNanosecondBuilder::new().with_timezone("UTC");
        AuditBatchBuilder {
            schema,
            rows: 0,
            event_time: ts(),
            stage_time: ts(),
            audit_id: StringBuilder::new(),
            stage: StringBuilder::new(),
            level: StringBuilder::new(),
            verb: StringBuilder::new(),
            request_uri: StringBuilder::new(),
            user_name: StringBuilder::new(),
            user_uid: StringBuilder::new(),
            user_groups: list_builder(),
            user_extra: StringBuilder::new(),
            user_oid: StringBuilder::new(),
            impersonated_user: StringBuilder::new(),
            source_ips: list_builder(),
            source_ip: StringBuilder::new(),
            user_agent: StringBuilder::new(),
            resource: StringBuilder::new(),
            subresource: StringBuilder::new(),
            namespace: StringBuilder::new(),
            name: StringBuilder::new(),
            api_group: StringBuilder::new(),
            api_version: StringBuilder::new(),
            response_code: Int32Builder::new(),
            response_reason: StringBuilder::new(),
            authz_decision: StringBuilder::new(),
            authz_reason: StringBuilder::new(),
            cluster: StringBuilder::new(),
            category: StringBuilder::new(),
            request_object: StringBuilder::new(),
            response_object: StringBuilder::new(),
            object_kind: StringBuilder::new(),
            privileged: BooleanBuilder::new(),
            host_pid: BooleanBuilder::new(),
            host_ipc: BooleanBuilder::new(),
            host_network: BooleanBuilder::new(),
            host_path_mounts: list_builder(),
            images: list_builder(),
            run_as_root: BooleanBuilder::new(),
            allow_privilege_escalation: BooleanBuilder::new(),
            added_capabilities: list_builder(),
            automount_sa_token: BooleanBuilder::new(),
            missing_resource_limits: BooleanBuilder::new(),
            service_account_name: StringBuilder::new(),
            owner: StringBuilder::new(),
            workload: StringBuilder::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.rows
    }

    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// Appends one Event, or says why it cannot be a row (nothing is appended then).
    pub fn append(&mut self, ev: &AuditEvent<'_>, env: EnvelopeContext<'_>) -> Result<(), (Reason, String)> {
        let audit_id = match ev.audit_id.as_deref() {
            Some(id) if !id.is_empty() => id,
            _ => return Err((Reason::MissingField, "auditID is missing".into())),
        };
        let parse = |name: &str, v: &Option<std::borrow::Cow<'_, str>>| -> Result<Option<i64>, (Reason, String)> {
            match v.as_deref() {
                None => Ok(None),
                Some(s) => super::time::parse_rfc3339_nanos(s)
                    .map(Some)
                    .ok_or_else(|| (Reason::InvalidTimestamp, format!("{name} is not RFC 3339: {s:.40}"))),
            }
        };
        let received = parse("requestReceivedTimestamp", &ev.request_received_timestamp)?;
        let stage_time = parse("stageTimestamp", &ev.stage_timestamp)?;
        let Some(event_time) = received.or(stage_time).or(env.time) else {
            return Err((Reason::MissingField, "neither requestReceivedTimestamp nor stageTimestamp is present".into()));
        };

        let obj = ev.object_ref.as_ref();
        let resource = obj.and_then(|o| o.resource.as_deref());
        let (kind, facts) = match &ev.request_object {
            Some(body) => object_facts(resource.unwrap_or(""), obj.and_then(|o| o.name.as_deref()), body),
            None => (None, None),
        };

        self.event_time.append_value(event_time);
        self.stage_time.append_option(stage_time);
        self.audit_id.append_value(audit_id);
        self.stage.append_option(ev.stage.as_deref());
        self.level.append_option(ev.level.as_deref());
        self.verb.append_option(ev.verb.as_deref());
        self.request_uri.append_option(ev.request_uri.as_deref());
        let user = ev.user.as_ref();
        self.user_name.append_option(user.and_then(|u| u.username.as_deref()));
        self.user_uid.append_option(user.and_then(|u| u.uid.as_deref()));
        append_list(&mut self.user_groups, user.and_then(|u| u.groups.as_ref()).map(|g| g.iter().map(|s| s.as_ref())));
        let extra = user.and_then(|u| u.extra.as_ref());
        self.user_extra.append_option(extra.map(|e| e.get()));
        self.user_oid.append_option(extra.and_then(user_oid));
        self.impersonated_user.append_option(ev.impersonated_user.as_ref().and_then(|u| u.username.as_deref()));
        let ips = ev.source_ips.as_ref();
        append_list(&mut self.source_ips, ips.map(|v| v.iter().map(|s| s.as_ref())));
        self.source_ip.append_option(ips.and_then(|v| v.first()).map(|s| s.as_ref()));
        self.user_agent.append_option(ev.user_agent.as_deref());
        self.resource.append_option(resource);
        self.subresource.append_option(obj.and_then(|o| o.subresource.as_deref()));
        self.namespace.append_option(obj.and_then(|o| o.namespace.as_deref()));
        self.name.append_option(obj.and_then(|o| o.name.as_deref()));
        self.api_group.append_option(obj.and_then(|o| o.api_group.as_deref()));
        self.api_version.append_option(obj.and_then(|o| o.api_version.as_deref()));
        let status = ev.response_status.as_ref();
        self.response_code.append_option(status.and_then(|s| s.code));
        self.response_reason.append_option(status.and_then(|s| s.reason.as_deref()));
        let ann = ev.annotations.as_ref();
        self.authz_decision.append_option(ann.and_then(|a| a.decision.as_deref()));
        self.authz_reason.append_option(ann.and_then(|a| a.reason.as_deref()));
        self.cluster.append_option(env.cluster);
        self.category.append_option(env.category);
        for (builder, body) in [(&mut self.request_object, &ev.request_object), (&mut self.response_object, &ev.response_object)] {
            match body {
                Some(b) => match redact_body(resource, b.get()) {
                    Some(redacted) => builder.append_value(redacted),
                    None => builder.append_value(b.get()),
                },
                None => builder.append_null(),
            }
        }
        self.object_kind.append_option(kind.as_deref());
        self.append_facts(facts.as_ref());
        self.rows += 1;
        Ok(())
    }

    fn append_facts(&mut self, f: Option<&PodFacts>) {
        // Pod facts are NULL for events that carry no pod spec; a ServiceAccount only sets automount.
        // A patch may set privileged (or add a capability) and nothing else.
        let pod = f.filter(|f| {
            !f.images.is_empty()
                || f.host_pid
                || f.host_network
                || f.host_ipc
                || !f.host_path_mounts.is_empty()
                || f.privileged
                || !f.added_capabilities.is_empty()
        });
        let b = |v: &mut BooleanBuilder, x: Option<bool>| v.append_option(x);
        b(&mut self.privileged, pod.map(|f| f.privileged));
        b(&mut self.host_pid, pod.map(|f| f.host_pid));
        b(&mut self.host_ipc, pod.map(|f| f.host_ipc));
        b(&mut self.host_network, pod.map(|f| f.host_network));
        append_list(&mut self.host_path_mounts, pod.map(|f| f.host_path_mounts.iter().map(String::as_str)));
        append_list(&mut self.images, pod.map(|f| f.images.iter().map(String::as_str)));
        b(&mut self.run_as_root, pod.map(|f| f.run_as_root));
        b(&mut self.allow_privilege_escalation, pod.map(|f| f.allow_privilege_escalation));
        append_list(&mut self.added_capabilities, pod.map(|f| f.added_capabilities.iter().map(String::as_str)));
        b(&mut self.automount_sa_token, f.and_then(|f| f.automount_sa_token));
        b(&mut self.missing_resource_limits, pod.map(|f| f.missing_resource_limits));
        self.service_account_name.append_option(pod.and_then(|f| f.service_account_name.as_deref()));
        self.owner.append_option(f.and_then(|f| f.owner.as_deref()));
        self.workload.append_option(f.and_then(|f| f.workload.as_deref()));
    }

    /// Finishes the rows appended so far into a batch and starts afresh.
    pub fn finish(&mut self) -> RecordBatch {
        let columns: Vec<ArrayRef> = vec![
            Arc::new(self.event_time.finish()),
            Arc::new(self.stage_time.finish()),
            finish_sized(&mut self.audit_id),
            finish_sized(&mut self.stage),
            finish_sized(&mut self.level),
            finish_sized(&mut self.verb),
            finish_sized(&mut self.request_uri),
            finish_sized(&mut self.user_name),
            finish_sized(&mut self.user_uid),
            Arc::new(self.user_groups.finish()),
            finish_sized(&mut self.user_extra),
            finish_sized(&mut self.user_oid),
            finish_sized(&mut self.impersonated_user),
            Arc::new(self.source_ips.finish()),
            finish_sized(&mut self.source_ip),
            finish_sized(&mut self.user_agent),
            finish_sized(&mut self.resource),
            finish_sized(&mut self.subresource),
            finish_sized(&mut self.namespace),
            finish_sized(&mut self.name),
            finish_sized(&mut self.api_group),
            finish_sized(&mut self.api_version),
            Arc::new(self.response_code.finish()),
            finish_sized(&mut self.response_reason),
            finish_sized(&mut self.authz_decision),
            finish_sized(&mut self.authz_reason),
            finish_sized(&mut self.cluster),
            finish_sized(&mut self.category),
            finish_sized(&mut self.request_object),
            finish_sized(&mut self.response_object),
            finish_sized(&mut self.object_kind),
            Arc::new(self.privileged.finish()),
            Arc::new(self.host_pid.finish()),
            Arc::new(self.host_ipc.finish()),
            Arc::new(self.host_network.finish()),
            Arc::new(self.host_path_mounts.finish()),
            Arc::new(self.images.finish()),
            Arc::new(self.run_as_root.finish()),
            Arc::new(self.allow_privilege_escalation.finish()),
            Arc::new(self.added_capabilities.finish()),
            Arc::new(self.automount_sa_token.finish()),
            Arc::new(self.missing_resource_limits.finish()),
            finish_sized(&mut self.service_account_name),
            finish_sized(&mut self.owner),
            finish_sized(&mut self.workload),
        ];
        self.rows = 0;
        // The builders and the schema are written side by side; a mismatch is a bug caught by tests.
        RecordBatch::try_new(self.schema.clone(), columns).expect("kube_audit builders match the schema")
    }
}
