//! The columns of the normalized audit-event rows the Sentinel sink forwards (`forward_events =
//! "asim"`): `kube_audit` rows mapped by `asim_audit.sql` onto the Microsoft Sentinel table
//! `ASimAuditEventLogs` (ASIM Audit Event schema 0.1.2) and posted to the DCR stream
//! `Custom-CrowsnestAuditEvents`, which flows unchanged into `Microsoft-ASimAuditEventLogs`.
//!
//! `ASIM_AUDIT_COLUMNS` is what that stream declaration must declare (deploy/sentinel/
//! crowsnest-sentinel.json, checked by tests/integration/sentinel_templates.rs): every name is a
//! column of `ASimAuditEventLogs` with the type the table declares
//! (<https://learn.microsoft.com/azure/azure-monitor/reference/tables/asimauditeventlogs>), in the
//! order of the SELECT's aliases. A Microsoft table takes only its own columns: `EventSchema`,
//! `Dvc` and the other ASIM aliases are not among them (the ASIM parsers add them at query time).

/// (column, Log Analytics type), in the order of `asim_audit.sql`'s output.
pub const ASIM_AUDIT_COLUMNS: &[(&str, &str)] = &[
    ("TimeGenerated", "datetime"),
    ("EventStartTime", "datetime"),
    ("EventEndTime", "datetime"),
    ("EventCount", "int"),
    ("EventType", "string"),
    ("EventSubType", "string"),
    ("EventResult", "string"),
    ("EventResultDetails", "string"),
    ("EventOriginalResultDetails", "string"),
    ("EventSeverity", "string"),
    ("EventOriginalUid", "string"),
    ("EventOriginalType", "string"),
    ("EventProduct", "string"),
    ("EventVendor", "string"),
    ("EventSchemaVersion", "string"),
    ("Operation", "string"),
    ("Object", "string"),
    ("ObjectType", "string"),
    ("OriginalObjectType", "string"),
    ("ActorUsername", "string"),
    ("ActorUsernameType", "string"),
    ("ActorUserType", "string"),
    ("ActorUserId", "string"),
    ("ActorUserIdType", "string"),
    ("ActorUserAadId", "string"),
    ("SrcIpAddr", "string"),
    ("HttpUserAgent", "string"),
    ("ActingAppName", "string"),
    ("ActingAppType", "string"),
    ("TargetAppName", "string"),
    ("TargetAppType", "string"),
    ("TargetUrl", "string"),
    ("DvcId", "string"),
    ("DvcIdType", "string"),
    ("DvcScopeId", "string"),
    ("DvcAction", "string"),
    ("DvcOriginalAction", "string"),
    ("AdditionalFields", "dynamic"),
];
