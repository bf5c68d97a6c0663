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
}
