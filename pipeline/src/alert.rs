//! The alert every sink receives; its JSON form follows `schemas/alert.json`.

use serde::Serialize;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

/// How many audit ids an alert carries at most.
pub const MAX_SAMPLE_IDS: usize = 10;

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Alert {
    pub id: String,
    pub rule_id: String,
    pub rule_title: String,
    pub severity: String,
    pub mitre: Vec<String>,
    pub tags: Vec<String>,
    /// RFC 3339 event times.
    pub first_seen: String,
    pub last_seen: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub window_start: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub window_end: Option<String>,
    pub count: u64,
    pub entities: Map<String, Value>,
    pub cluster: Option<String>,
    pub audit_ids: Vec<String>,
    pub fields: Map<String, Value>,
    pub detected_at: String,
    /// Event time of the last matching event, in nanoseconds: used for suppression, not output.
    #[serde(skip)]
    pub last_seen_nanos: i64,
}

/// A deterministic alert id: the same rule, entity values and anchor (window start, or audit id
/// for single-event rules) give the same id on every run, so replays after a crash produce
/// duplicates that idempotent sinks can drop.
pub fn alert_id(rule_id: &str, entities: &Map<String, Value>, anchor: &str) -> String {
    let mut h = Sha256::new();
    h.update(rule_id.as_bytes());
    h.update([0]);
    // serde_json's Map keeps keys sorted, so the serialization is canonical.
    h.update(Value::Object(entities.clone()).to_string().as_bytes());
    h.update([0]);
    h.update(anchor.as_bytes());
    let digest = h.finalize();
    let hex: String = digest.iter().take(16).map(|b| format!("{b:02x}")).collect();
    format!("cn-{hex}")
}

/// The key suppression and dedup use: rule and entity values.
pub fn entity_key(rule_id: &str, entities: &Map<String, Value>) -> String {
    format!("{rule_id}\u{0}{}", Value::Object(entities.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn ids_are_deterministic_and_distinct() {
        let e = |u: &str| json!({"user_name": u}).as_object().unwrap().clone();
        let a = alert_id("R1", &e("alice"), "2026-11-01T08:00:00Z");
        assert_eq!(a, alert_id("R1", &e("alice"), "2026-11-01T08:00:00Z"));
        assert_ne!(a, alert_id("R1", &e("bob"), "2026-11-01T08:00:00Z"));
        assert_ne!(a, alert_id("R2", &e("alice"), "2026-11-01T08:00:00Z"));
        assert_ne!(a, alert_id("R1", &e("alice"), "2026-11-01T08:05:00Z"));
        assert!(a.starts_with("cn-") && a.len() == 35);
    }
}
