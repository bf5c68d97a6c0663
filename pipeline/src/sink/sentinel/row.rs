//! The alert as a Log Analytics row: flat, typed columns for what analysts filter and map to
//! entities, `dynamic` for the rest. `COLUMNS` is the one definition: the table and the DCR's
//! stream declaration in deploy/sentinel/ are checked against it by test, and so is every row.

use serde_json::{Map, Value};

use super::tactics::tactics_for;

/// (column, Log Analytics type), in table order. Names follow Log Analytics rules: at most 45
/// characters, none of the reserved names (id, Type, TenantId, _ResourceId, Title, UniqueId,
/// _SubscriptionId), none beginning with `_`.
pub const COLUMNS: &[(&str, &str)] = &[
    ("TimeGenerated", "datetime"),
    ("AlertId", "string"),
    ("RuleId", "string"),
    ("AlertName", "string"),
    ("Severity", "string"),
    ("CrowsnestSeverity", "string"),
    ("Tactics", "string"),
    ("Techniques", "string"),
    ("Tags", "dynamic"),
    ("ClusterResourceId", "string"),
    ("ClusterName", "string"),
    ("Namespace", "string"),
    ("ActorUsername", "string"),
    ("SrcIpAddr", "string"),
    ("ObjectName", "string"),
    ("FirstSeen", "datetime"),
    ("LastSeen", "datetime"),
    ("WindowStart", "datetime"),
    ("WindowEnd", "datetime"),
    ("Count", "long"),
    ("AuditIds", "dynamic"),
    ("Entities", "dynamic"),
    ("Fields", "dynamic"),
];

/// Where each column comes from (the published definition, schemas/sentinel/).
pub fn describe(column: &str) -> &'static str {
    match column {
        "TimeGenerated" => "the alert's detection time (detected_at)",
        "AlertId" => "the alert's deterministic id (id): a retry after an unknown outcome repeats a row at worst",
        "RuleId" => "rule_id",
        "AlertName" => "the rule's title (rule_title)",
        "Severity" => "Sentinel's Informational/Low/Medium/High; Crowsnest's critical maps to High",
        "CrowsnestSeverity" => "severity as Crowsnest rated it: info, low, medium, high, critical",
        "Tactics" => "Sentinel tactic names of the MITRE techniques, comma-separated, in kill-chain order",
        "Techniques" => "MITRE technique ids (mitre), comma-separated",
        "Tags" => "tags",
        "ClusterResourceId" => "the AKS cluster's resource id (cluster)",
        "ClusterName" => "the last segment of the cluster's resource id",
        "Namespace" => "fields.namespace, else entities.namespace",
        "ActorUsername" => "the first of user_name, requester, creator, exec_user, account in fields, then entities",
        "SrcIpAddr" => "the first of source_ip, requester_ip, creator_ip, exec_ip in fields, then entities",
        "ObjectName" => "the first of name, workload, pod, node, image in fields, then entities",
        "FirstSeen" => "event time of the first matching event (first_seen)",
        "LastSeen" => "event time of the last matching event (last_seen)",
        "WindowStart" => "the window's start, for windowed rules (window_start)",
        "WindowEnd" => "the window's end, for windowed rules (window_end)",
        "Count" => "matching events (count)",
        "AuditIds" => "audit ids of matching events, at most 10 (audit_ids)",
        "Entities" => "what identifies the same thing for suppression and dedup (entities)",
        "Fields" => "the rule's output columns (fields)",
        _ => "",
    }
}

/// The alert's fields (schemas/alerts.json) the row carries, in one column or another: a test
/// fails when the alert gains a field the row does not map.
pub const ALERT_FIELDS_MAPPED: &[&str] = &[
    "id",
    "rule_id",
    "rule_title",
    "severity",
    "mitre",
    "tags",
    "first_seen",
    "last_seen",
    "window_start",
    "window_end",
    "count",
    "entities",
    "cluster",
    "audit_ids",
    "fields",
    "detected_at",
];

/// Sentinel's severities are Informational, Low, Medium and High: `critical` becomes High (the
/// row keeps Crowsnest's own rating in CrowsnestSeverity, so a query can still tell them apart).
pub fn sentinel_severity(crowsnest: &str) -> &'static str {
    match crowsnest {
        "critical" | "high" => "High",
        "medium" => "Medium",
        "low" => "Low",
        _ => "Informational",
    }
}

/// Where an alert's actor, source address, namespace and object are found: the rule's fields
/// first (they name the event's own columns), then its entities.
const ACTOR: &[&str] = &["user_name", "requester", "creator", "exec_user", "account"];
const SOURCE_IP: &[&str] = &["source_ip", "requester_ip", "creator_ip", "exec_ip"];
const NAMESPACE: &[&str] = &["namespace"];
const OBJECT: &[&str] = &["name", "workload", "pod", "node", "image"];

/// The row for one alert (the JSON every sink receives, see `schemas/alerts.json`). `None` when
/// it is not an alert object.
pub fn alert_row(alert: &Value) -> Option<Map<String, Value>> {
    let a = alert.as_object()?;
    let text = |k: &str| a.get(k).and_then(Value::as_str);
    let fields = a.get("fields").and_then(Value::as_object);
    let entities = a.get("entities").and_then(Value::as_object);
    let first_of = |keys: &[&str]| -> Value {
        for k in keys {
            for m in [fields, entities].into_iter().flatten() {
                match m.get(*k) {
                    Some(Value::String(s)) if !s.is_empty() => return Value::String(s.clone()),
                    _ => {}
                }
            }
        }
        Value::Null
    };
    let techniques: Vec<String> = a
        .get("mitre")
        .and_then(Value::as_array)
        .map(|v| v.iter().filter_map(|t| t.as_str().map(str::to_string)).collect())
        .unwrap_or_default();
    let severity = text("severity").unwrap_or("info");
    let cluster = text("cluster");
    let mut row = Map::new();
    let mut put = |k: &str, v: Value| {
        row.insert(k.to_string(), v);
    };
    let string = |s: Option<&str>| s.map_or(Value::Null, |s| Value::String(s.to_string()));
    put("TimeGenerated", string(text("detected_at")));
    put("AlertId", string(text("id")));
    put("RuleId", string(text("rule_id")));
    put("AlertName", string(text("rule_title")));
    put("Severity", Value::String(sentinel_severity(severity).to_string()));
    put("CrowsnestSeverity", Value::String(severity.to_string()));
    put("Tactics", Value::String(tactics_for(&techniques).join(",")));
    put("Techniques", Value::String(techniques.join(",")));
    put("Tags", a.get("tags").cloned().unwrap_or(Value::Array(vec![])));
    put("ClusterResourceId", string(cluster));
    put("ClusterName", string(cluster.map(|c| c.rsplit('/').next().unwrap_or(c))));
    put("Namespace", first_of(NAMESPACE));
    put("ActorUsername", first_of(ACTOR));
    put("SrcIpAddr", first_of(SOURCE_IP));
    put("ObjectName", first_of(OBJECT));
    put("FirstSeen", string(text("first_seen")));
    put("LastSeen", string(text("last_seen")));
    put("WindowStart", string(text("window_start")));
    put("WindowEnd", string(text("window_end")));
    put("Count", a.get("count").cloned().unwrap_or(Value::Null));
    put("AuditIds", a.get("audit_ids").cloned().unwrap_or(Value::Array(vec![])));
    put("Entities", a.get("entities").cloned().unwrap_or(Value::Object(Map::new())));
    put("Fields", a.get("fields").cloned().unwrap_or(Value::Object(Map::new())));
    // Absent values are left out rather than sent as null: smaller requests, same table.
    row.retain(|_, v| !v.is_null());
    Some(row)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn an_alert_becomes_a_row_of_declared_columns() {
        let alert = json!({
            "id": "cn-1", "rule_id": "CN-AUDIT-010", "rule_title": "Exec into a pod", "severity": "critical",
            "mitre": ["T1609", "T1611"], "tags": ["execution"], "first_seen": "2026-11-01T08:00:00Z",
            "last_seen": "2026-11-01T08:00:01Z", "count": 2,
            "entities": {"namespace": "prod", "user_name": "alice"},
            "cluster": "/SUBSCRIPTIONS/X/RESOURCEGROUPS/RG/PROVIDERS/MICROSOFT.CONTAINERSERVICE/MANAGEDCLUSTERS/AKS-PROD",
            "audit_ids": ["a1"], "fields": {"source_ip": "203.0.113.7", "name": "web-1"},
            "detected_at": "2026-11-01T08:00:05Z"
        });
        let row = alert_row(&alert).unwrap();
        for k in row.keys() {
            assert!(COLUMNS.iter().any(|(c, _)| c == k), "{k} is not a declared column");
        }
        assert_eq!(row["TimeGenerated"], "2026-11-01T08:00:05Z");
        assert_eq!((row["Severity"].as_str(), row["CrowsnestSeverity"].as_str()), (Some("High"), Some("critical")));
        assert_eq!(row["Tactics"], "Execution,PrivilegeEscalation");
        assert_eq!(row["Techniques"], "T1609,T1611");
        assert_eq!((row["ActorUsername"].as_str(), row["SrcIpAddr"].as_str()), (Some("alice"), Some("203.0.113.7")));
        assert_eq!((row["Namespace"].as_str(), row["ObjectName"].as_str()), (Some("prod"), Some("web-1")));
        assert_eq!(row["ClusterName"], "AKS-PROD");
        assert!(!row.contains_key("WindowStart"), "absent values are left out");
        assert_eq!(sentinel_severity("info"), "Informational");
    }

    #[test]
    fn every_alert_field_and_every_column_is_accounted_for() {
        for f in crate::tables::alert_schema().fields() {
            assert!(ALERT_FIELDS_MAPPED.contains(&f.name().as_str()), "the alert's {} has no column in the Sentinel row", f.name());
        }
        for (c, _) in COLUMNS {
            assert!(!describe(c).is_empty(), "{c} is not described");
        }
    }
}
