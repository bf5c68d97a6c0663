//! `crowsnest bench --latency`: how long an alert takes, wall clock, from the moment its event is
//! readable at the source (written to a followed file) to the alert leaving the sink.
//!
//! The pipeline runs as `crowsnest run` would (a followed file, decode workers, every bundled
//! rule) on background traffic stamped with the current time, at a steady 10,000 events/s and
//! then as fast as it reads (the writer stays one block ahead of the reader). Probes are mixed
//! in, each for three bench rules:
//! - a single-event rule: latency from the probe's write;
//! - an early-firing window (`early: true`, 5 events): latency from the fifth event's write;
//! - a closing window (TUMBLE 5 s, 1 s lateness): it cannot fire before its end plus the
//!   lateness has passed in event time, so what is ours is the delay after that moment.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use super::record;
use crate::decode::time::format_nanos;
use crate::engine::{Engine, EngineOptions};
use crate::gen::Rng;
use crate::metrics::Metrics;
use crate::pipeline::{self, Control, Outputs};
use crate::rules::RuleSet;
use crate::sink::router::AlertRouter;
use crate::sink::{Record, Sink};
use crate::source::file::FileSource;
use crate::source::{FramingLimits, Source};

const BENCH_RULES: &[(&str, &str)] = &[
    ("LAT-EVENT", "entities: [user_name]\nquery: \"SELECT user_name, audit_id FROM kube_audit WHERE starts_with(user_name, 'probe-')\""),
    (
        "LAT-EARLY",
        "entities: [user_name]\nearly: true\nquery: \"SELECT user_name, count(*) AS n FROM kube_audit WHERE starts_with(user_name, 'burst-') GROUP BY user_name, TUMBLE(event_time, INTERVAL '1 minute') HAVING count(*) >= 5\"",
    ),
    (
        "LAT-CLOSE",
        "entities: [user_name]\nallowed_lateness: 1s\nquery: \"SELECT user_name, count(*) AS n FROM kube_audit WHERE starts_with(user_name, 'win-') GROUP BY user_name, TUMBLE(event_time, INTERVAL '5 seconds')\"",
    ),
];

/// Wall-clock instants the probes' events were written, by audit id (single events) or user
/// (bursts).
#[derive(Default)]
struct Written {
    at: HashMap<String, Instant>,
}

/// Latencies per kind of alert, in milliseconds.
#[derive(Default)]
struct Latencies {
    event: Vec<f64>,
    early: Vec<f64>,
    close: Vec<f64>,
}

/// The sink at the end: notes when each bench alert leaves.
struct LatencySink {
    written: Arc<Mutex<Written>>,
    /// Wall clock (ns since the epoch) paired with the Instant the run started, to place a
    /// window's end in Instant terms.
    epoch: (i64, Instant),
    out: Arc<Mutex<Latencies>>,
}

impl Sink for LatencySink {
    fn name(&self) -> &str {
        "latency"
    }

    fn send(&mut self, alerts: &[Record]) -> Result<()> {
        let now = Instant::now();
        let written = self.written.lock().expect("not poisoned");
        let mut out = self.out.lock().expect("not poisoned");
        for r in alerts {
            let a: serde_json::Value = serde_json::from_slice(&r.json)?;
            let ms = |from: Instant| now.saturating_duration_since(from).as_secs_f64() * 1e3;
            match a["rule_id"].as_str() {
                Some("LAT-EVENT") => {
                    if let Some(t) = a["audit_ids"][0].as_str().and_then(|id| written.at.get(id)) {
                        out.event.push(ms(*t));
                    }
                }
                Some("LAT-EARLY") => {
                    if let Some(t) = a["fields"]["user_name"].as_str().and_then(|u| written.at.get(u)) {
                        out.early.push(ms(*t));
                    }
                }
                Some("LAT-CLOSE") => {
                    // Our delay: from the moment event time (= wall time here) passed the window's
                    // end plus the rule's lateness.
                    let end = a["window_end"].as_str().and_then(crate::decode::time::parse_rfc3339_nanos);
                    if let Some(end) = end {
                        let due = end + 1_000_000_000 - self.epoch.0;
                        let due = if due >= 0 { self.epoch.1 + Duration::from_nanos(due as u64) } else { self.epoch.1 };
                        out.close.push(ms(due));
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        Ok(())
    }
}

fn now_nanos() -> i64 {
    chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default()
}

fn event(id: u64, user: &str, verb: &str, ns: u64, t: i64) -> String {
    let ts = format_nanos(t);
    format!(
        r#"{{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Metadata","auditID":"c0000000-0000-4000-8000-{id:012}","stage":"ResponseComplete","requestURI":"/api/v1/namespaces/ns{ns}/pods","verb":"{verb}","user":{{"username":"{user}"}},"sourceIPs":["10.0.0.{}"],"objectRef":{{"resource":"pods","namespace":"ns{ns}"}},"responseStatus":{{"code":200}},"requestReceivedTimestamp":"{ts}","stageTimestamp":"{ts}"}}"#,
        id % 250
    )
}

/// Writes background traffic and probes to `path` for `secs`, at `rate` events/s (None: as
/// fast as the pipeline reads, staying a block ahead of it).
fn write_traffic(
    path: &Path,
    rate: Option<u64>,
    secs: u64,
    bytes_read: &Arc<std::sync::atomic::AtomicU64>,
    written: &Arc<Mutex<Written>>,
) -> Result<u64> {
    let mut file = std::fs::OpenOptions::new().append(true).open(path)?;
    let mut rng = Rng(7);
    let verbs = ["get", "list", "watch", "update", "patch"];
    let started = Instant::now();
    let (mut id, mut sent, mut bytes_written) = (0u64, 0u64, 0u64);
    let mut next_probe = started;
    let mut probe = 0u64;
    // Blocks of 1 ms at the steady rate; 1,000 events at a time as fast as possible.
    let block = rate.map_or(1000, |r| (r / 1000).max(1));
    while started.elapsed() < Duration::from_secs(secs) {
        let now = Instant::now();
        match rate {
            Some(r) => {
                let due = started + Duration::from_secs_f64(sent as f64 / r as f64);
                if due > now {
                    std::thread::sleep(due - now);
                }
            }
            None => {
                // As fast as the pipeline reads: at most 4 MB ahead of it.
                while bytes_written > bytes_read.load(Ordering::Relaxed) + (4 << 20) {
                    std::thread::sleep(Duration::from_micros(200));
                }
            }
        }
        let mut buf = String::with_capacity(block as usize * 420);
        let t = now_nanos();
        for _ in 0..block {
            id += 1;
            let user = format!("user{}", rng.below(5000));
            buf.push_str(&event(id, &user, verbs[rng.below(5) as usize], rng.below(40), t));
            buf.push('\n');
        }
        sent += block;
        // Every 50 ms: a single-event probe, a window probe; every 200 ms a burst of five.
        let mut probes: Vec<String> = Vec::new();
        if Instant::now() >= next_probe {
            next_probe += Duration::from_millis(50);
            probe += 1;
            id += 1;
            probes.push(format!("c0000000-0000-4000-8000-{id:012}"));
            buf.push_str(&event(id, &format!("probe-{probe}"), "create", 1, t));
            buf.push('\n');
            id += 1;
            buf.push_str(&event(id, &format!("win-{}", probe % 10), "get", 1, t));
            buf.push('\n');
            if probe % 4 == 0 {
                for _ in 0..5 {
                    id += 1;
                    buf.push_str(&event(id, &format!("burst-{probe}"), "get", 1, t));
                    buf.push('\n');
                }
                probes.push(format!("burst-{probe}"));
            }
        }
        // Noted before the write: the clock starts when the bytes can be read.
        {
            let mut w = written.lock().expect("not poisoned");
            let at = Instant::now();
            for p in probes {
                w.at.insert(p, at);
            }
        }
        file.write_all(buf.as_bytes())?;
        bytes_written += buf.len() as u64;
    }
    Ok(sent)
}

struct Percentiles {
    n: usize,
    p50: f64,
    p99: f64,
    max: f64,
}

fn percentiles(v: &mut [f64]) -> Option<Percentiles> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let at = |q: f64| v[((v.len() as f64 * q).ceil() as usize).clamp(1, v.len()) - 1];
    Some(Percentiles { n: v.len(), p50: at(0.5), p99: at(0.99), max: v[v.len() - 1] })
}

/// One run: the pipeline on a followed file fed at `rate` for `secs`; the latencies and the
/// events written.
fn run_once(dir: &Path, set: &RuleSet, rate: Option<u64>, secs: u64, workers: usize) -> Result<(Latencies, u64)> {
    let path = dir.join(format!("latency-{}.jsonl", rate.map_or("max".to_string(), |r| r.to_string())));
    std::fs::write(&path, b"")?;
    let control = Control { workers, ..Control::default() };
    let written = Arc::new(Mutex::new(Written::default()));
    let out = Arc::new(Mutex::new(Latencies::default()));
    let sink = LatencySink { written: written.clone(), epoch: (now_nanos(), Instant::now()), out: out.clone() };
    let source: Box<dyn Source> =
        Box::new(FileSource::open(&path, FramingLimits::default(), control.bytes_read.clone())?.follow(control.stop.clone()));
    let engine = Engine::new(set, &EngineOptions::default())?;
    let router = AlertRouter::new(set.suppression_periods(), 1 << 20);
    let (stop, bytes_read) = (control.stop.clone(), control.bytes_read.clone());
    let pipeline = std::thread::spawn(move || {
        let mut outputs = Outputs { sinks: vec![Box::new(sink)], dead_letters: None, late_events: None, events: None, lake: None };
        pipeline::run(vec![source], engine, router, &mut outputs, &Metrics::new(), &control)
    });
    let sent = write_traffic(&path, rate, secs, &bytes_read, &written)?;
    // Let the last windows close (5 s windows, 1 s lateness, in event time = wall time: an
    // event must arrive after that), then stop.
    let tail = Instant::now();
    while tail.elapsed() < Duration::from_secs(8) {
        let t = now_nanos();
        let mut f = std::fs::OpenOptions::new().append(true).open(&path)?;
        writeln!(f, "{}", event(u64::MAX / 2 + tail.elapsed().as_millis() as u64, "user0", "get", 0, t))?;
        std::thread::sleep(Duration::from_millis(100));
    }
    stop.store(true, Ordering::Relaxed);
    pipeline.join().map_err(|_| anyhow::anyhow!("the pipeline thread panicked"))?.context("the pipeline")?;
    let _ = std::fs::remove_file(&path);
    let lat = std::mem::take(&mut *out.lock().expect("not poisoned"));
    Ok((lat, sent))
}

pub fn run(dir: &Path, secs: u64, workers: usize) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    let mut set = RuleSet::bundled()?;
    let files: Vec<(PathBuf, String)> = BENCH_RULES
        .iter()
        .map(|(id, body)| (PathBuf::from(format!("{id}.yaml")), format!("id: {id}\ntitle: {id}\nseverity: low\n{body}\n")))
        .collect();
    let extra = RuleSet::from_texts(&PathBuf::from("(bench)"), files, vec![])?;
    set.rules.extend(extra.rules);
    println!("crowsnest bench --latency — a followed file, {} rules, {workers} decode workers, {secs} s per rate", set.rules.len());
    println!("{:<30} {:<34} {:>7} {:>9} {:>9} {:>9}", "input", "alert", "alerts", "p50 ms", "p99 ms", "max ms");
    for rate in [Some(10_000), None] {
        let (mut lat, sent) = run_once(dir, &set, rate, secs, workers)?;
        let label = match rate {
            Some(r) => format!("file, {r} events/s"),
            None => format!("file, max ({:.0} events/s)", sent as f64 / secs as f64),
        };
        for (kind, v) in [
            ("single event: from the write", &mut lat.event),
            ("early window: from the 5th write", &mut lat.early),
            ("closing window: our delay", &mut lat.close),
        ] {
            match percentiles(v) {
                Some(p) => {
                    println!("{label:<30} {kind:<34} {:>7} {:>9.1} {:>9.1} {:>9.1}", p.n, p.p50, p.p99, p.max);
                    let tag = format!("latency, {label}, {kind}");
                    record::figure(&format!("{tag}, p50"), p.p50, "ms");
                    record::figure(&format!("{tag}, p99"), p.p99, "ms");
                    record::figure(&format!("{tag}, max"), p.max, "ms");
                }
                None => println!("{label:<30} {kind:<34} {:>7}", 0),
            }
        }
    }
    Ok(())
}
