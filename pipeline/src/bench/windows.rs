//! `crowsnest bench --windows`: the stateful side alone. Ten windowed rules (TUMBLE, HOP,
//! SESSION; count, DISTINCT, FILTER, sum/min/max/avg) over N events spread across K distinct
//! keys, already decoded (decoding is measured by the replay bench): events per second through
//! the engine, peak live (window, key) groups, and memory per live group.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Result;
use datafusion::arrow::array::{RecordBatch, StringArray, TimestampNanosecondArray};

use super::record;
use crate::decode::time::format_nanos;
use crate::decode::{Decoder, Origin};
use crate::engine::{Engine, EngineOptions};
use crate::gen::Rng;
use crate::memory::{peak_rss, reset_peak_rss, rss_now};
use crate::rules::RuleSet;
use crate::tables::KUBE_AUDIT;

const RULES: &[(&str, &str)] = &[
    ("W-01", "SELECT user_name, count(*) AS n FROM kube_audit GROUP BY user_name, TUMBLE(event_time, INTERVAL '5 minutes') HAVING count(*) >= 12"),
    ("W-02", "SELECT user_name, count(DISTINCT namespace) AS ns FROM kube_audit GROUP BY user_name, TUMBLE(event_time, INTERVAL '10 minutes') HAVING count(DISTINCT namespace) >= 8"),
    ("W-03", "SELECT user_name, count(*) FILTER (WHERE response_code = 403) AS denied FROM kube_audit GROUP BY user_name, HOP(event_time, INTERVAL '1 minute', INTERVAL '5 minutes') HAVING count(*) FILTER (WHERE response_code = 403) >= 6"),
    ("W-04", "SELECT user_name, sum(response_code) AS total, min(response_code) AS lo, max(response_code) AS hi FROM kube_audit GROUP BY user_name, TUMBLE(event_time, INTERVAL '15 minutes') HAVING count(*) > 25"),
    ("W-05", "SELECT user_name, count(*) AS n FROM kube_audit GROUP BY user_name, SESSION(event_time, INTERVAL '2 minutes') HAVING count(*) >= 6"),
    ("W-06", "SELECT user_name, namespace, count(*) AS n FROM kube_audit GROUP BY user_name, namespace, TUMBLE(event_time, INTERVAL '5 minutes') HAVING count(*) >= 5"),
    ("W-07", "SELECT user_name, count(DISTINCT verb) AS verbs FROM kube_audit GROUP BY user_name, HOP(event_time, INTERVAL '5 minutes', INTERVAL '15 minutes') HAVING count(DISTINCT verb) >= 4"),
    ("W-08", "SELECT namespace, count(*) AS n FROM kube_audit GROUP BY namespace, TUMBLE(event_time, INTERVAL '1 hour') HAVING count(*) > 30000"),
    ("W-09", "SELECT user_name, avg(response_code) AS mean FROM kube_audit GROUP BY user_name, TUMBLE(event_time, INTERVAL '10 minutes') HAVING avg(response_code) > 350 AND count(*) >= 5"),
    ("W-10", "SELECT user_name, count(DISTINCT namespace) AS ns FROM kube_audit GROUP BY user_name, SESSION(event_time, INTERVAL '5 minutes') HAVING count(DISTINCT namespace) >= 6"),
];

/// `events` audit events over two hours, users drawn uniformly from `keys`, in batches of 8192
/// rows; arrival is in time order with up to 20 s of disorder (inside the allowed lateness).
fn batches(events: u64, keys: u64, seed: u64) -> Vec<RecordBatch> {
    const SEC: i64 = 1_000_000_000;
    let start = 1_793_520_000 * SEC; // 2026-11-01T08:00:00Z
    let step = 7200 * SEC / events.max(1) as i64;
    let mut rng = Rng(seed);
    let verbs = ["get", "list", "watch", "create", "update", "patch", "delete"];
    let codes = [200, 200, 200, 201, 403, 404, 409];
    let mut out = Vec::new();
    let mut decoder = Decoder::new();
    for i in 0..events {
        let t = start + i as i64 * step + rng.below(20 * SEC as u64) as i64;
        let ts = format_nanos(t);
        let doc = format!(
            r#"{{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Metadata","auditID":"b0000000-0000-4000-8000-{i:012}","stage":"ResponseComplete","requestURI":"/api/v1/pods","verb":"{}","user":{{"username":"user{}"}},"objectRef":{{"resource":"pods","namespace":"ns{}"}},"responseStatus":{{"code":{}}},"requestReceivedTimestamp":"{ts}","stageTimestamp":"{ts}"}}"#,
            verbs[rng.below(7) as usize],
            rng.below(keys),
            rng.below(20),
            codes[rng.below(7) as usize],
        );
        decoder.decode(Origin { source: "bench", unit: "event", index: i }, doc.as_bytes());
        if (i + 1) % 8192 == 0 {
            out.extend(decoder.finish_audit());
            decoder = Decoder::new();
        }
    }
    out.extend(decoder.finish_audit());
    out
}

pub fn run(events: u64, keys: u64, seed: u64) -> Result<()> {
    let files: Vec<(PathBuf, String)> = RULES
        .iter()
        .map(|(id, sql)| (PathBuf::from(format!("{id}.yaml")), format!("id: {id}\ntitle: {id}\nseverity: low\nquery: \"{sql}\"\n")))
        .collect();
    let set = RuleSet::from_texts(&PathBuf::from("(bench)"), files, vec![])?;
    eprintln!("decoding {events} events over {keys} keys (not timed) …");
    let input = batches(events, keys, seed);
    let opts = EngineOptions { allowed_lateness: 30_000_000_000, max_groups_per_rule: 10_000_000, ..EngineOptions::default() };
    let mut engine = Engine::new(&set, &opts)?;
    let rss_before = rss_now();
    reset_peak_rss();
    let (mut alerts, mut peak_groups, mut peak_bytes, mut peak_rule_groups) = (0usize, 0usize, 0usize, 0usize);
    // Per rule: peak live groups and the state bytes at that peak.
    let mut per_rule: Vec<(String, usize, usize)> = engine.stats().map(|(r, _)| (r.id.clone(), 0, 0)).collect();
    let started = Instant::now();
    for b in &input {
        alerts += engine.process(KUBE_AUDIT, b).len();
        let (mut groups, mut bytes) = (0, 0);
        for (i, (_, s)) in engine.stats().enumerate() {
            if s.live_groups > per_rule[i].1 {
                per_rule[i].1 = s.live_groups;
                per_rule[i].2 = s.state_bytes;
            }
            groups += s.live_groups;
            bytes += s.state_bytes;
            peak_rule_groups = peak_rule_groups.max(s.live_groups);
        }
        peak_groups = peak_groups.max(groups);
        peak_bytes = peak_bytes.max(bytes);
    }
    alerts += engine.finish().len();
    let secs = started.elapsed().as_secs_f64();
    let rss_growth = peak_rss().zip(rss_before).map(|(peak, before)| peak.saturating_sub(before));
    let evictions: u64 = engine.stats().map(|(_, s)| s.evictions).sum();
    println!("crowsnest bench --windows — {events} events, {keys} distinct keys, {} windowed rules", RULES.len());
    println!("{:<44} {:>14}", "engine time (10 rules, all batches)", format!("{secs:.2} s"));
    println!("{:<44} {:>14.0}", "events/s through the 10 windowed rules", events as f64 / secs);
    println!("{:<44} {:>14}", "alerts", alerts);
    println!("{:<44} {:>14}", "peak live (window, key) groups, all rules", peak_groups);
    println!("{:<44} {:>14}", "peak live groups of one rule", peak_rule_groups);
    println!("{:<44} {:>14}", "evictions", evictions);
    println!("{:<44} {:>14}", "state at peak, engine's estimate", format!("{:.1} MB", peak_bytes as f64 / 1e6));
    println!("{:<44} {:>14}", "  per live group", format!("{:.0} B", peak_bytes as f64 / peak_groups.max(1) as f64));
    if let Some(growth) = rss_growth {
        println!("{:<44} {:>14}", "peak RSS growth while evaluating", format!("{:.1} MB", growth as f64 / 1e6));
        println!("{:<44} {:>14}", "  per live group", format!("{:.0} B", growth as f64 / peak_groups.max(1) as f64));
        record::figure("RSS per live group", growth as f64 / peak_groups.max(1) as f64, "bytes");
    }
    record::figure(&format!("events/s through 10 windowed rules, {keys} keys"), events as f64 / secs, "events/s");
    record::figure("peak live groups", peak_groups as f64, "groups");
    record::figure("alerts", alerts as f64, "alerts");
    println!("{:<8} {:>18} {:>18}  query", "rule", "peak live groups", "bytes per group");
    for ((id, groups, bytes), (_, sql)) in per_rule.iter().zip(RULES) {
        let aggregates = sql.split(" FROM ").next().unwrap_or("").trim_start_matches("SELECT ");
        println!("{id:<8} {groups:>18} {:>18.0}  {aggregates}", *bytes as f64 / (*groups).max(1) as f64);
    }
    Ok(())
}

/// `bench --windows --flood N`: N events, each with a user of its own, into a rule capped at
/// `max_groups` live groups, beside a rule on 20 namespaces that alerts every minute. Shows the
/// cap holds memory (peak RSS growth, live groups, evictions) and that the other rule still
/// fires every one of its alerts.
pub fn flood(events: u64, max_groups: usize, seed: u64) -> Result<()> {
    const SEC: i64 = 1_000_000_000;
    const NAMESPACES: u64 = 20;
    let rules = [
        (
            "FLOOD",
            format!("max_groups: {max_groups}\nquery: \"SELECT user_name, count(*) AS n, count(DISTINCT namespace) AS ns FROM kube_audit GROUP BY user_name, TUMBLE(event_time, INTERVAL '10 minutes') HAVING count(*) >= 3\""),
        ),
        ("STEADY", "query: \"SELECT namespace, count(*) AS n FROM kube_audit GROUP BY namespace, TUMBLE(event_time, INTERVAL '1 minute') HAVING count(*) >= 10\"".to_string()),
    ];
    let files: Vec<(PathBuf, String)> = rules
        .iter()
        .map(|(id, body)| (PathBuf::from(format!("{id}.yaml")), format!("id: {id}\ntitle: {id}\nseverity: low\n{body}\n")))
        .collect();
    let set = RuleSet::from_texts(&PathBuf::from("(bench)"), files, vec![])?;
    // One decoded batch as a template; each batch of the flood swaps in its own users, times
    // and namespaces (decoding 10 million events is not what is measured).
    const ROWS: u64 = 8192;
    let template = batches(ROWS, 1, seed).into_iter().next().expect("one batch");
    let schema = template.schema();
    let (user_col, time_col, ns_col) = (schema.index_of("user_name")?, schema.index_of("event_time")?, schema.index_of("namespace")?);
    // 100,000 events a minute, in time order.
    let start = 1_793_520_000 * SEC;
    let step = 60 * SEC / 100_000;
    let opts = EngineOptions { allowed_lateness: 0, ..EngineOptions::default() };
    let mut engine = Engine::new(&set, &opts)?;
    let rss_before = rss_now();
    reset_peak_rss();
    let started = Instant::now();
    let (mut steady, mut flooded, mut peak_groups) = (0u64, 0u64, 0usize);
    let mut count = |alerts: Vec<crate::alert::Alert>| {
        for a in alerts {
            if a.rule_id == "STEADY" {
                steady += 1;
            } else {
                flooded += 1;
            }
        }
    };
    let mut i = 0u64;
    while i < events {
        let n = ROWS.min(events - i);
        let users = StringArray::from_iter_values((i..i + n).map(|k| format!("flood-{k:010}")));
        let times = TimestampNanosecondArray::from_iter_values((i..i + n).map(|k| start + k as i64 * step)).with_timezone("UTC");
        let namespaces = StringArray::from_iter_values((i..i + n).map(|k| format!("ns{}", k % NAMESPACES)));
        let mut columns = template.slice(0, n as usize).columns().to_vec();
        columns[user_col] = std::sync::Arc::new(users);
        columns[time_col] = std::sync::Arc::new(times);
        columns[ns_col] = std::sync::Arc::new(namespaces);
        let batch = RecordBatch::try_new(schema.clone(), columns)?;
        count(engine.process(KUBE_AUDIT, &batch));
        peak_groups = peak_groups.max(engine.stats().find(|(r, _)| r.id == "FLOOD").map_or(0, |(_, s)| s.live_groups));
        i += n;
    }
    count(engine.finish());
    let secs = started.elapsed().as_secs_f64();
    let growth = peak_rss().zip(rss_before).map(|(peak, before)| peak.saturating_sub(before));
    let evictions: u64 = engine.stats().map(|(_, s)| s.evictions).sum();
    // Every minute of input, every namespace has 5,000 events: one STEADY alert each.
    let minutes = ((events as i64 - 1) * step / (60 * SEC) + 1) as u64;
    println!("crowsnest bench --windows --flood — {events} events, each its own key, max_groups {max_groups}");
    println!("{:<44} {:>14}", "events/s", format!("{:.0}", events as f64 / secs));
    println!("{:<44} {:>14}", "peak live groups of the flooded rule", peak_groups);
    println!("{:<44} {:>14}", "evictions", evictions);
    println!("{:<44} {:>14}", "alerts of the flooded rule", flooded);
    println!("{:<44} {:>14}", "alerts of the other rule", steady);
    println!("{:<44} {:>14}", "  expected", minutes * NAMESPACES);
    if let Some(g) = growth {
        println!("{:<44} {:>14}", "peak RSS growth", format!("{:.1} MB", g as f64 / 1e6));
        record::figure("flood: peak RSS growth", g as f64, "bytes");
    }
    record::figure("flood: events/s", events as f64 / secs, "events/s");
    record::figure("flood: peak live groups", peak_groups as f64, "groups");
    record::figure("flood: evictions", evictions as f64, "groups");
    Ok(())
}
