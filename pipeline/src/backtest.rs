//! `crowsnest rules backtest RULE FILE…`: one rule over recorded input, through the real
//! pipeline (decoder, engine, suppression), and what it would have fired, day by day — the
//! quickest way to tune a threshold or a list before a rule goes live.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::PathBuf;

use anyhow::{Context, Result};
use serde_json::Value;

use crate::engine::{Engine, EngineOptions};
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
        Outputs { sinks: vec![Box::new(memory.clone()) as Box<dyn Sink>], dead_letters: None, late_events: None, events: None };
    let router = AlertRouter::new(set.suppression_periods(), 1 << 20);
    let summary = pipeline::run(sources, engine, router, &mut outputs, &Metrics::new(), &control)?;
    let records = std::mem::take(&mut *memory.records.lock().expect("memory sink lock"));
    let alerts = records.iter().map(|r| serde_json::from_slice(r).context("an alert that is not JSON")).collect::<Result<Vec<Value>>>()?;
    Ok(Backtest { rule_id: rule.id, title: rule.title, alerts, summary })
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
