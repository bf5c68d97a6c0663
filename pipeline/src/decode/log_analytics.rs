//! Audit events as Log Analytics stores them, for teams that keep their audit logs in a
//! workspace rather than on an Event Hub:
//!
//! - the **resource-specific** tables `AKSAudit` and `AKSAuditAdmin`: one row per Event, its
//!   fields in PascalCase columns (`AuditId`, `Verb`, `User`, `ObjectRef`…). Data export writes
//!   the `dynamic` columns as JSON; `az monitor log-analytics query` writes every value as a
//!   string, dynamic ones as strings holding JSON. Both are read. `AKSControlPlane` (API server,
//!   scheduler, autoscaler text logs) holds no Events: it is counted as skipped.
//! - the legacy **`AzureDiagnostics`** table: the diagnostic record flattened, the Event as a
//!   string in `log_s`, the category in `Category`.
//!
//! A row is turned back into the audit Event it came from and decoded like any other, so every
//! form gives the same `kube_audit` row as the Event Hubs envelope of the same event. What the
//! table cannot carry is lost: AKSAudit has no `impersonatedUser` column.

use serde::Deserialize;
use serde_json::value::RawValue;

use super::audit::Str;

/// Which Log Analytics form a record is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    /// `AKSAudit` / `AKSAuditAdmin`: the diagnostic category the row stands for.
    ResourceSpecific { category: &'static str },
    /// `AKSControlPlane`: text logs, no Events.
    ControlPlane,
    /// `AzureDiagnostics`: the Event as a string in `log_s`.
    Diagnostics,
}

/// The form of a Log Analytics record, from its `Type` or, when a query left `Type` out, from
/// its columns; None for the Container Insights tables.
pub fn form_of(la_type: Option<&str>, text: &str) -> Option<Form> {
    match la_type {
        Some("AKSAudit") => Some(Form::ResourceSpecific { category: "kube-audit" }),
        Some("AKSAuditAdmin") => Some(Form::ResourceSpecific { category: "kube-audit-admin" }),
        Some("AKSControlPlane") => Some(Form::ControlPlane),
        Some("AzureDiagnostics") => Some(Form::Diagnostics),
        Some(_) => None,
        None if text.contains("\"AuditId\"") => Some(Form::ResourceSpecific { category: "kube-audit" }),
        None if text.contains("\"log_s\"") => Some(Form::Diagnostics),
        None => None,
    }
}

/// An `AKSAudit` / `AKSAuditAdmin` row. String columns are kept as their JSON text (copied into
/// the Event as they are); dynamic ones as JSON or as a string holding JSON.
#[derive(Deserialize)]
struct AuditRow<'a> {
    #[serde(borrow, default, rename = "_ResourceId")]
    resource_id: Option<Str<'a>>,
    #[serde(borrow, default, rename = "TimeGenerated")]
    time_generated: Option<Str<'a>>,
    #[serde(borrow, default, rename = "AuditId")]
    audit_id: Option<&'a RawValue>,
    #[serde(borrow, default, rename = "Level")]
    level: Option<&'a RawValue>,
    #[serde(borrow, default, rename = "Stage")]
    stage: Option<&'a RawValue>,
    #[serde(borrow, default, rename = "RequestUri")]
    request_uri: Option<&'a RawValue>,
    #[serde(borrow, default, rename = "Verb")]
    verb: Option<&'a RawValue>,
    #[serde(borrow, default, rename = "UserAgent")]
    user_agent: Option<&'a RawValue>,
    #[serde(borrow, default, rename = "RequestReceivedTime")]
    request_received: Option<&'a RawValue>,
    #[serde(borrow, default, rename = "StageReceivedTime")]
    stage_received: Option<&'a RawValue>,
    #[serde(borrow, default, rename = "User")]
    user: Option<&'a RawValue>,
    #[serde(borrow, default, rename = "SourceIps")]
    source_ips: Option<&'a RawValue>,
    #[serde(borrow, default, rename = "ObjectRef")]
    object_ref: Option<&'a RawValue>,
    #[serde(borrow, default, rename = "ResponseStatus")]
    response_status: Option<&'a RawValue>,
    #[serde(borrow, default, rename = "RequestObject")]
    request_object: Option<&'a RawValue>,
    #[serde(borrow, default, rename = "ResponseObject")]
    response_object: Option<&'a RawValue>,
    #[serde(borrow, default, rename = "Annotations")]
    annotations: Option<&'a RawValue>,
}

/// What a row adds to its Event, as an envelope record would.
#[derive(Debug)]
pub struct RowContext {
    /// The cluster's ARM id, upper-cased as diagnostic settings write it (Log Analytics
    /// lower-cases `_ResourceId`; ARM ids are case-insensitive).
    pub cluster: Option<String>,
    pub time: Option<String>,
}

/// An `AKSAudit` row rebuilt as the audit Event it was made from (JSON text).
pub fn event_of_row(text: &str) -> Result<(String, RowContext), String> {
    let row: AuditRow<'_> = serde_json::from_str(text).map_err(|e| e.to_string())?;
    let mut out = String::with_capacity(text.len() + 64);
    out.push_str(r#"{"kind":"Event","apiVersion":"audit.k8s.io/v1""#);
    let strings = [
        ("level", row.level),
        ("auditID", row.audit_id),
        ("stage", row.stage),
        ("requestURI", row.request_uri),
        ("verb", row.verb),
        ("userAgent", row.user_agent),
        ("requestReceivedTimestamp", row.request_received),
        ("stageTimestamp", row.stage_received),
    ];
    for (key, value) in strings {
        if let Some(v) = value {
            push_string(&mut out, key, v)?;
        }
    }
    let dynamics = [
        ("user", "User", row.user),
        ("sourceIPs", "SourceIps", row.source_ips),
        ("objectRef", "ObjectRef", row.object_ref),
        ("responseStatus", "ResponseStatus", row.response_status),
        ("requestObject", "RequestObject", row.request_object),
        ("responseObject", "ResponseObject", row.response_object),
        ("annotations", "Annotations", row.annotations),
    ];
    for (key, column, value) in dynamics {
        if let Some(v) = value {
            push_dynamic(&mut out, key, column, v)?;
        }
    }
    out.push('}');
    let cluster = row.resource_id.filter(|r| !r.is_empty()).map(|r| r.to_ascii_uppercase());
    Ok((out, RowContext { cluster, time: row.time_generated.map(|t| t.into_owned()) }))
}

/// `,"key":"value"` for a string column; a column written as a number or boolean becomes its
/// text, as Log Analytics would show it.
fn push_string(out: &mut String, key: &str, value: &RawValue) -> Result<(), String> {
    let raw = value.get();
    out.push_str(",\"");
    out.push_str(key);
    out.push_str("\":");
    if raw.starts_with('"') {
        out.push_str(raw);
    } else if raw == "null" {
        out.push_str("null");
    } else {
        out.push_str(&serde_json::to_string(raw).map_err(|e| e.to_string())?);
    }
    Ok(())
}

/// A dynamic column, given as JSON or as a string holding JSON. Empty strings and the
/// `skipped-too-big-size-object` marker AKS writes for bodies too large to keep are left out.
fn push_dynamic(out: &mut String, key: &str, column: &str, value: &RawValue) -> Result<(), String> {
    let raw = value.get();
    let json: std::borrow::Cow<'_, str> = if raw.starts_with('"') {
        let inner: String = serde_json::from_str(raw).map_err(|e| format!("{column}: {e}"))?;
        if inner.is_empty() || inner == "skipped-too-big-size-object" {
            return Ok(());
        }
        // Exactly one JSON value: anything else would splice text into the Event.
        serde_json::from_str::<&RawValue>(&inner).map_err(|e| format!("{column} is a string that holds no JSON value: {e}"))?;
        inner.into()
    } else if raw == "null" {
        return Ok(());
    } else {
        raw.into()
    };
    out.push_str(",\"");
    out.push_str(key);
    out.push_str("\":");
    out.push_str(&json);
    Ok(())
}

/// An `AzureDiagnostics` row of the AKS categories.
#[derive(Deserialize)]
pub struct DiagnosticsRow<'a> {
    #[serde(borrow, default, rename = "Category")]
    pub category: Option<Str<'a>>,
    #[serde(borrow, default)]
    pub log_s: Option<Str<'a>>,
    #[serde(borrow, default, rename = "ResourceId")]
    resource_id: Option<Str<'a>>,
    #[serde(borrow, default, rename = "_ResourceId")]
    underscore_resource_id: Option<Str<'a>>,
    #[serde(borrow, default, rename = "TimeGenerated")]
    pub time_generated: Option<Str<'a>>,
}

impl DiagnosticsRow<'_> {
    /// The cluster's ARM id, upper-cased (see [`RowContext::cluster`]).
    pub fn cluster(&self) -> Option<String> {
        self.resource_id.as_deref().or(self.underscore_resource_id.as_deref()).filter(|r| !r.is_empty()).map(str::to_ascii_uppercase)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_by_type_and_by_columns() {
        assert_eq!(form_of(Some("AKSAudit"), ""), Some(Form::ResourceSpecific { category: "kube-audit" }));
        assert_eq!(form_of(Some("AKSAuditAdmin"), ""), Some(Form::ResourceSpecific { category: "kube-audit-admin" }));
        assert_eq!(form_of(Some("AKSControlPlane"), ""), Some(Form::ControlPlane));
        assert_eq!(form_of(Some("KubeEvents"), r#"{"AuditId":"x"}"#), None);
        assert_eq!(form_of(None, r#"{"AuditId":"x","Verb":"get"}"#), Some(Form::ResourceSpecific { category: "kube-audit" }));
        assert_eq!(form_of(None, r#"{"Category":"kube-audit","log_s":"{}"}"#), Some(Form::Diagnostics));
        assert_eq!(form_of(None, r#"{"PodName":"x"}"#), None);
    }

    #[test]
    fn dynamic_columns_as_json_or_as_strings() {
        let as_json = r#"{"AuditId":"a1","Verb":"get","User":{"username":"u"},"SourceIps":["1.2.3.4"],
            "RequestObject":"skipped-too-big-size-object","ResponseObject":null,"_ResourceId":"/subscriptions/x"}"#;
        let as_strings = r#"{"AuditId":"a1","Verb":"get","User":"{\"username\":\"u\"}","SourceIps":"[\"1.2.3.4\"]",
            "RequestObject":"","ResponseObject":"","_ResourceId":"/subscriptions/x","TableName":"PrimaryResult"}"#;
        let (a, ctx) = event_of_row(as_json).unwrap();
        let (b, _) = event_of_row(as_strings).unwrap();
        assert_eq!(a, b);
        assert_eq!(ctx.cluster.as_deref(), Some("/SUBSCRIPTIONS/X"));
        let v: serde_json::Value = serde_json::from_str(&a).unwrap();
        assert_eq!(v["user"]["username"], "u");
        assert_eq!(v["sourceIPs"][0], "1.2.3.4");
        assert!(v.get("requestObject").is_none());
    }

    #[test]
    fn a_string_column_cannot_splice_fields_into_the_event() {
        let row = r#"{"AuditId":"a1","User":"{\"username\":\"u\"},\"verb\":\"delete\""}"#;
        assert!(event_of_row(row).unwrap_err().contains("User"));
    }
}
