//! `crowsnest rules backtest RULE FILE…`: one rule over recorded input, through the real
//! pipeline (decoder, engine, suppression), and what it would have fired, day by day — the
//! quickest way to tune a threshold or a list before a rule goes live.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::PathBuf;

use anyhow::{Context, Result};
use serde_json::Value;

use crate::engine::{Engine, EngineOptions};
use crate::hunt::HuntSession;
use crate::hunt::TimeRange;
use crate::metrics::Metrics;
use crate::pipeline::{self, Control, Outputs, Summary};
use crate::rules::RuleSet;
use crate::sink::router::AlertRouter;
use crate::sink::{MemorySink, Sink};
use crate::source::file::open_paths;
use crate::source::FramingLimits;

pub struct Backtest {
    pub rule_id: String,
    pub title: String,
    /// The alerts, as the sinks would have received them.
    pub alerts: Vec<Value>,
    pub summary: Summary,
}

/// Runs rule `rule_id` of `set` alone over `files`.
pub fn run(mut set: RuleSet, rule_id: &str, files: &[PathBuf], opts: &EngineOptions, workers: Option<usize>) -> Result<Backtest> {
    set.retain_ids(&[rule_id.to_string()])?;
    let rule = set.rules[0].clone();
    let mut control = Control { progress: true, ..Control::default() };
    if let Some(w) = workers {
        control.workers = w.max(1);
    }
    let opened = open_paths(files, &FramingLimits::default(), &control.bytes_read)?;
    opened.notices().iter().for_each(|n| eprintln!("crowsnest: {n}"));
    let opts = EngineOptions { min_lateness: opts.min_lateness.max(opened.lateness()), ..opts.clone() };
    let engine = Engine::new(&set, &opts)?;
    let sources = opened.sources;
    let memory = MemorySink::default();
    // Dead letters and late events are counted in the summary; a backtest writes no files.
    let mut outputs =
        Outputs { sinks: vec![Box::new(memory.clone()) as Box<dyn Sink>], dead_letters: None, late_events: None, events: None, lake: None };
    let router = AlertRouter::new(set.suppression_periods(), 1 << 20);
    let summary = pipeline::run(sources, engine, router, &mut outputs, &Metrics::new(), &control)?;
    let records = std::mem::take(&mut *memory.records.lock().expect("memory sink lock"));
    let alerts = records.iter().map(|r| serde_json::from_slice(r).context("an alert that is not JSON")).collect::<Result<Vec<Value>>>()?;
    Ok(Backtest { rule_id: rule.id, title: rule.title, alerts, summary })
}

/// Runs rule `rule_id` of `set` alone over the lake's rows in `range`, hour by hour in event
/// time, through the real engine (windows and sequences included).
pub fn run_lake(
    mut set: RuleSet,
    rule_id: &str,
    lake: &crate::lake::LakeConfig,
    range: TimeRange,
    opts: &EngineOptions,
) -> Result<Backtest> {
    use crate::lake::layout::{hour_of_path, partition_dir, table_dir, HOUR_NANOS};
    set.retain_ids(&[rule_id.to_string()])?;
    let rule = set.rules[0].clone();
    let started = std::time::Instant::now();
    let store = crate::lake::Store::open(lake)?;
    // Tables are read an hour at a time, one after the other: an hour's events of one table may
    // reach the engine after another table's, so windows wait an hour for them.
    let opts = EngineOptions { min_lateness: opts.min_lateness.max(HOUR_NANOS), ..opts.clone() };
    let mut engine = Engine::new(&set, &opts)?;
    let session = HuntSession::over_lake(&store, range, std::sync::Arc::new(set.lists.clone()))?;
    let mut hours = std::collections::BTreeSet::new();
    for t in crate::tables::event_tables() {
        hours.extend(store.list(&format!("{}/", table_dir(t.name)))?.iter().filter_map(|l| hour_of_path(&l.path)));
    }
    let in_range = |h: i64| range.since.is_none_or(|s| (h + 1) * HOUR_NANOS > s) && range.until.is_none_or(|u| h * HOUR_NANOS < u);
    let hours: Vec<i64> = hours.into_iter().filter(|h| in_range(*h)).collect();
    let bar = indicatif::ProgressBar::new(hours.len() as u64);
    if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        bar.set_style(indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} hours {msg}").expect("valid template"));
    } else {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let mut router = AlertRouter::new(set.suppression_periods(), 1 << 20);
    let mut alerts = Vec::new();
    let mut summary = Summary { rules: 1, ..Summary::default() };
    for hour in hours {
        for t in crate::tables::event_tables() {
            // The hour's partition only (the table's view is already limited to the range).
            let part = partition_dir("x", hour);
            let (date, hh) = (part.split("date=").nth(1).map_or("", |d| &d[..10]), &part[part.len() - 2..]);
            let time = t.time_column;
            let sql = format!(
                "SELECT * EXCLUDE (\"date\", \"hour\") FROM \"__lake_{}\" WHERE \"date\" = '{date}' AND \"hour\" = '{hh}' {} ORDER BY \"{time}\"",
                t.name,
                range_sql(&range, time)
            );
            let result = session.query(&sql, None, &mut |_| {})?;
            let schema = crate::tables::schema_of(t.name).expect("known table");
            for b in result.batches.iter().filter(|b| b.num_rows() > 0) {
                // The lake keeps microseconds; the engine works in nanoseconds.
                let b = crate::sink::lake::file::conform(b, &schema)?;
                *summary.decode.events.entry(t.name.to_string()).or_default() += b.num_rows() as u64;
                let fired = engine.process_chunk(&[crate::decode::TableBatch { table: t.name, batch: b }], None);
                alerts.extend(router.route(fired));
                router.count_suppressed_upstream(engine.take_suppressed());
            }
        }
        bar.inc(1);
        bar.set_message(format!("{} alerts", alerts.len()));
    }
    alerts.extend(router.route(engine.finish()));
    router.count_suppressed_upstream(engine.take_suppressed());
    bar.finish_and_clear();
    summary.alerts_suppressed = router.suppressed;
    summary.alerts_duplicate = router.duplicates;
    summary.alerts = alerts.len() as u64;
    summary.elapsed = started.elapsed();
    let alerts = alerts.iter().map(|a| serde_json::to_value(a).context("an alert as JSON")).collect::<Result<Vec<Value>>>()?;
    Ok(Backtest { rule_id: rule.id, title: rule.title, alerts, summary })
}

fn range_sql(range: &TimeRange, time: &str) -> String {
    let mut s = String::new();
    if let Some(since) = range.since {
        s.push_str(&format!(" AND \"{time}\" >= to_timestamp_nanos({since})"));
    }
    if let Some(until) = range.until {
        s.push_str(&format!(" AND \"{time}\" < to_timestamp_nanos({until})"));
    }
    s
}

impl Backtest {
    /// Alerts per UTC day of their first event.
    pub fn per_day(&self) -> BTreeMap<String, usize> {
        let mut days = BTreeMap::new();
        for a in &self.alerts {
            let day = a["first_seen"].as_str().and_then(|s| s.get(..10)).unwrap_or("?").to_string();
            *days.entry(day).or_default() += 1;
        }
        days
    }

    /// A table of the alerts, then the counts per day.
    pub fn render(&self) -> String {
        let mut s = String::new();
        let events = self.summary.decode.total_events();
        let _ = writeln!(s, "{} {}: {} alert(s) over {events} events", self.rule_id, self.title, self.alerts.len());
        if !self.alerts.is_empty() {
            let _ = writeln!(s, "\n{:<28} {:>6}  ENTITIES", "FIRST SEEN", "COUNT");
            for a in &self.alerts {
                let entities = a["entities"]
                    .as_object()
                    .map(|m| {
                        m.iter()
                            .map(|(k, v)| format!("{k}={}", v.as_str().map_or_else(|| v.to_string(), str::to_string)))
                            .collect::<Vec<_>>()
                    })
                    .unwrap_or_default()
                    .join(" ");
                let _ = writeln!(s, "{:<28} {:>6}  {entities}", a["first_seen"].as_str().unwrap_or("?"), a["count"].to_string());
            }
            let _ = writeln!(s, "\n{:<12} ALERTS", "DAY");
            for (day, n) in self.per_day() {
                let _ = writeln!(s, "{day:<12} {n}");
            }
        }
        let sm = &self.summary;
        let dead: u64 = sm.dead_letters.values().sum();
        let _ = writeln!(
            s,
            "\n{} suppressed, {} repeats dropped, {} late events, {} dead letters",
            sm.alerts_suppressed, sm.alerts_duplicate, sm.late_events, dead
        );
        s
    }
}
