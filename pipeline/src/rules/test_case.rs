//! A rule's own test cases (`tests:` in the rule file): what they say, and the documents their
//! events become. The runner that puts them through the decoder and the engine is
//! `crate::rule_tests`, above the engine (the engine reads rules; rules do not drive it).

use anyhow::{Context, Result};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::parse_duration;
use crate::decode::time::{format_nanos, parse_rfc3339_nanos};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestCase {
    pub name: String,
    /// Exact number of alerts expected.
    pub expect: usize,
    /// Entity values every alert must have.
    #[serde(default)]
    pub entities: Option<Map<String, Value>>,
    /// Output values every alert must have (who did it, the owner… beside the entities).
    #[serde(default)]
    pub fields: Option<Map<String, Value>>,
    /// Wrap the events in `{"records":[…]}` envelopes: audit events as AKS diagnostic-settings
    /// records, Container Insights records (with `Type`) as Log Analytics data export sends them.
    #[serde(default)]
    pub envelope: bool,
    pub events: Vec<serde_yaml::Value>,
}

/// The ARM id test envelopes carry.
pub const TEST_CLUSTER: &str = "/SUBSCRIPTIONS/00000000-0000-0000-0000-000000000000/RESOURCEGROUPS/RG-TEST/PROVIDERS/MICROSOFT.CONTAINERSERVICE/MANAGEDCLUSTERS/AKS-TEST";

fn replace_index(v: &mut Value, i: usize) {
    match v {
        Value::String(s) if s.contains("{i}") => *s = s.replace("{i}", &i.to_string()),
        Value::Array(a) => a.iter_mut().for_each(|x| replace_index(x, i)),
        Value::Object(m) => m.values_mut().for_each(|x| replace_index(x, i)),
        _ => {}
    }
}

fn shift_time(ev: &mut Value, key: &str, by: i64) -> Result<()> {
    if let Some(Value::String(s)) = ev.get_mut(key) {
        let t = parse_rfc3339_nanos(s).with_context(|| format!("{key} {s:?} is not RFC 3339"))?;
        *s = format_nanos(t + by);
    }
    Ok(())
}

/// The test's events as audit Event JSON objects, `repeat` blocks expanded.
pub fn expand_events(case: &TestCase) -> Result<Vec<Value>> {
    let mut out = Vec::new();
    for item in &case.events {
        // YAML merge keys (`<<: *base`) let a case vary one field of another's event.
        let mut item = item.clone();
        item.apply_merge().context("a `<<:` merge in an event")?;
        let v: Value = serde_json::to_value(&item).context("event is not representable as JSON")?;
        let is_repeat = v.get("repeat").is_some() && v.get("event").is_some();
        if !is_repeat {
            out.push(v);
            continue;
        }
        let n = v["repeat"].as_u64().context("repeat must be a whole number")? as usize;
        let every = match v.get("every").and_then(Value::as_str) {
            Some(s) => parse_duration(s)?,
            None => 0,
        };
        for i in 0..n {
            let mut ev = v["event"].clone();
            replace_index(&mut ev, i);
            shift_time(&mut ev, "requestReceivedTimestamp", every * i as i64)?;
            shift_time(&mut ev, "stageTimestamp", every * i as i64)?;
            shift_time(&mut ev, "TimeGenerated", every * i as i64)?;
            out.push(ev);
        }
    }
    Ok(out)
}

/// One JSON line per event, or envelope lines of up to 5 records (audit and Container Insights
/// records may share one, as they may share a topic).
pub fn to_documents(events: &[Value], envelope: bool) -> Vec<String> {
    if !envelope {
        return events.iter().map(Value::to_string).collect();
    }
    events
        .chunks(5)
        .map(|chunk| {
            let records: Vec<Value> = chunk
                .iter()
                .map(|ev| {
                    if ev.get("Type").is_some() {
                        // Data export carries the cluster as _ResourceId (in lower case).
                        let mut rec = ev.clone();
                        if let Some(obj) = rec.as_object_mut() {
                            obj.entry("_ResourceId").or_insert_with(|| TEST_CLUSTER.to_lowercase().into());
                        }
                        return rec;
                    }
                    let time = ev.get("stageTimestamp").cloned().unwrap_or(Value::Null);
                    json!({
                        "time": time,
                        "resourceId": TEST_CLUSTER,
                        "category": "kube-audit",
                        "operationName": "Microsoft.ContainerService/managedClusters/diagnosticLogs/Read",
                        "properties": {"log": ev.to_string(), "stream": "stdout", "pod": "kube-apiserver-test-0"}
                    })
                })
                .collect();
            json!({ "records": records }).to_string()
        })
        .collect()
}
