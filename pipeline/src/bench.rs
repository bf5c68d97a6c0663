//! `crowsnest bench`: replay throughput measured against baselines in one run, on the same
//! generated file, so the figures are ratios that travel between machines.
//!
//! 1. baseline: parse every line into `serde_json::Value` on one core (the yardstick);
//! 2. the same, also parsing each record's `properties.log` string (what "having the events" costs);
//! 3. the full pipeline (decode, redact, Arrow, every bundled rule, alert routing) with 1 and with
//!    N decode workers;
//! 4. peak memory of the pipeline on 10 % of the file and on the whole file (flat = no growth);
//! 5. DuckDB, when its Python module is installed: load the same file and run comparable SQL.
//!
//! `--kafka HOST:PORT` measures instead the pipeline reading a Kafka topic (3 partitions) and
//! writing alerts to a topic, against file replay of the same events in the same run.

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Args;

use crate::cli::suppression_periods;
use crate::engine::{Engine, EngineOptions};
use crate::metrics::Metrics;
use crate::pipeline::{self, Control, Outputs};
use crate::rules::RuleSet;
use crate::sink::router::AlertRouter;
use crate::sink::{Record, Sink};
use crate::source::file::FileSource;
use crate::source::{FramingLimits, Source};

#[derive(Args)]
pub struct BenchArgs {
    /// Events to generate.
    #[arg(long, default_value_t = 1_000_000)]
    events: u64,
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Where the generated file goes (kept for reuse when its size matches).
    #[arg(long, default_value = "bench-out")]
    dir: PathBuf,
    /// Decode workers for the parallel run (default: cores).
    #[arg(long)]
    workers: Option<usize>,
    /// Skip the DuckDB comparison.
    #[arg(long)]
    no_duckdb: bool,
    /// Kafka mode: a broker (e.g. `tansu broker --storage-engine memory://tansu/`) to load the
    /// events into and read them back from.
    #[arg(long, value_name = "HOST:PORT")]
    kafka: Option<String>,
}

/// Counts alerts, keeps none: the bench measures the pipeline, not a terminal.
struct CountingSink(u64);

impl Sink for CountingSink {
    fn name(&self) -> &str {
        "count"
    }
    fn send(&mut self, alerts: &[Record]) -> Result<()> {
        self.0 += alerts.len() as u64;
        Ok(())
    }
    fn flush(&mut self) -> Result<()> {
        Ok(())
    }
}

/// Peak resident memory since the last reset, in bytes (Linux).
fn peak_rss() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    Some(line.split_whitespace().nth(1)?.parse::<u64>().ok()? * 1024)
}

fn reset_peak_rss() {
    // Writing 5 to clear_refs resets VmHWM to the current RSS (Linux ≥ 4.0).
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

fn ensure_file(args: &BenchArgs, events: u64, name: &str) -> Result<(PathBuf, u64)> {
    std::fs::create_dir_all(&args.dir)?;
    let path = args.dir.join(name);
    let stamp = args.dir.join(format!("{name}.done"));
    let want = format!("{events} {}", args.seed);
    if std::fs::read_to_string(&stamp).ok().as_deref() != Some(want.as_str()) {
        eprintln!("generating {events} events into {} …", path.display());
        let mut w = std::io::BufWriter::with_capacity(1 << 20, File::create(&path)?);
        crate::gen::generate(&crate::gen::GenOptions { events, seed: args.seed, ..Default::default() }, &mut w)?;
        w.flush()?;
        std::fs::write(&stamp, &want)?;
    }
    let size = std::fs::metadata(&path)?.len();
    Ok((path, size))
}

fn baseline_value(path: &Path, inner: bool) -> Result<(f64, u64)> {
    let t = Instant::now();
    let mut docs = 0u64;
    for line in BufReader::with_capacity(1 << 20, File::open(path)?).split(b'\n') {
        let line = line?;
        let v: serde_json::Value = serde_json::from_slice(&line)?;
        if inner {
            for r in v["records"].as_array().into_iter().flatten() {
                if let Some(log) = r["properties"]["log"].as_str() {
                    let ev: serde_json::Result<serde_json::Value> = serde_json::from_str(log);
                    docs += ev.is_ok() as u64;
                }
            }
        } else {
            docs += 1;
        }
        std::hint::black_box(&v);
    }
    Ok((t.elapsed().as_secs_f64(), docs))
}

struct PipelineRun {
    secs: f64,
    events: u64,
    alerts: u64,
    peak_rss: Option<u64>,
}

fn run_pipeline(path: &Path, set: &RuleSet, workers: usize) -> Result<PipelineRun> {
    let engine = Engine::new(set, &EngineOptions::default())?;
    let control = Control { workers, ..Control::default() };
    let sources: Vec<Box<dyn Source>> = vec![Box::new(FileSource::open(path, FramingLimits::default(), control.bytes_read.clone())?)];
    let mut outputs = Outputs { sinks: vec![Box::new(CountingSink(0))], dead_letters: None };
    let metrics = Metrics::new();
    reset_peak_rss();
    let t = Instant::now();
    let summary = pipeline::run(sources, engine, AlertRouter::new(suppression_periods(set), 1 << 20), &mut outputs, &metrics, &control)?;
    let secs = t.elapsed().as_secs_f64();
    Ok(PipelineRun { secs, events: summary.decode.total_events(), alerts: summary.alerts, peak_rss: peak_rss() })
}

fn duckdb(path: &Path, threads: usize) -> Option<f64> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../bench/duckdb_bench.py");
    let out = std::process::Command::new("python3").arg(&script).arg(path).arg(threads.to_string()).output().ok()?;
    if !out.status.success() {
        eprintln!("(DuckDB comparison skipped: {})", String::from_utf8_lossy(&out.stderr).lines().last().unwrap_or("python3 failed"));
        return None;
    }
    String::from_utf8_lossy(&out.stdout).lines().find_map(|l| l.strip_prefix("seconds ").and_then(|s| s.trim().parse().ok()))
}

/// Sum of a counter family in the registry.
fn counter_total(metrics: &Metrics, name: &str) -> u64 {
    metrics
        .registry
        .gather()
        .iter()
        .filter(|f| f.name() == name)
        .flat_map(|f| f.get_metric())
        .map(|m| m.get_counter().get_value() as u64)
        .sum()
}

fn kafka_bench(args: &BenchArgs, brokers: &str, set: &RuleSet, workers: usize) -> Result<()> {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use rdkafka::client::DefaultClientContext;
    use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
    use rdkafka::ClientConfig;

    let (path, size) = ensure_file(args, args.events, "events.jsonl")?;
    std::io::copy(&mut File::open(&path)?, &mut std::io::sink())?;
    let file = run_pipeline(&path, set, workers)?;

    let run_id = std::process::id();
    let (topic, alerts_topic) = (format!("crowsnest-bench-{run_id}"), format!("crowsnest-bench-alerts-{run_id}"));
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new().set("bootstrap.servers", brokers).create()?;
    let opts = AdminOptions::new().operation_timeout(Some(std::time::Duration::from_secs(10)));
    let new = [NewTopic::new(&topic, 3, TopicReplication::Fixed(1)), NewTopic::new(&alerts_topic, 1, TopicReplication::Fixed(1))];
    for r in futures::executor::block_on(admin.create_topics(&new, &opts))? {
        r.map_err(|(t, e)| anyhow::anyhow!("creating {t}: {e}"))?;
    }
    eprintln!("loading {} into {topic} (not timed) …", path.display());
    let producer: ThreadedProducer<DefaultProducerContext> =
        ClientConfig::new().set("bootstrap.servers", brokers).set("linger.ms", "20").set("message.max.bytes", "20000000").create()?;
    for line in BufReader::with_capacity(1 << 20, File::open(&path)?).split(b'\n') {
        let line = line?;
        let mut record = BaseRecord::<(), [u8]>::to(&topic).payload(&line[..]);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((_, r)) => {
                    record = r;
                    producer.poll(std::time::Duration::from_millis(10));
                }
            }
        }
    }
    producer.flush(std::time::Duration::from_secs(300))?;

    let engine = Engine::new(set, &EngineOptions::default())?;
    let control = Control { workers, ..Control::default() };
    let metrics = Metrics::new();
    let connection = crate::kafka::Connection { brokers: brokers.to_string(), ..Default::default() };
    let source_opts = crate::source::kafka::KafkaSourceOptions {
        connection: connection.clone(),
        topics: vec![topic.clone()],
        group: format!("crowsnest-bench-{run_id}"),
        start: crate::source::kafka::StartPosition::Earliest,
        linger: std::time::Duration::from_millis(200),
    };
    let limits = FramingLimits { chunk_bytes: 1 << 20, ..FramingLimits::default() };
    let source =
        crate::source::kafka::KafkaSource::new(&source_opts, limits, control.bytes_read.clone(), control.stop.clone(), metrics.clone())?;
    let sink = crate::sink::kafka::KafkaSink::new(&connection, &alerts_topic, "alerts", metrics.clone())?;
    let mut outputs = Outputs { sinks: vec![Box::new(sink)], dead_letters: None };
    // Stop once every event went through the engine (the pipeline would wait for more).
    let (stop, m, want) = (control.stop.clone(), metrics.clone(), file.events);
    let started = Instant::now();
    // Also stops when nothing moved for 10 s (messages the broker never hands out): the figure
    // then covers the events that did arrive, up to the last one.
    let watcher = std::thread::spawn(move || {
        let (mut last, mut last_at) = (0, Instant::now());
        loop {
            let n = counter_total(&m, "crowsnest_events_decoded_total");
            if n != last {
                (last, last_at) = (n, Instant::now());
            }
            if n >= want || last_at.elapsed() > std::time::Duration::from_secs(10) {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let secs = last_at.duration_since(started).as_secs_f64();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        (secs, last)
    });
    let summary = pipeline::run(
        vec![Box::new(source)],
        engine,
        AlertRouter::new(suppression_periods(set), 1 << 20),
        &mut outputs,
        &metrics,
        &control,
    )?;
    let (kafka_secs, kafka_events) = watcher.join().map_err(|_| anyhow::anyhow!("watcher panicked"))?;
    let produced = counter_total(&metrics, "crowsnest_kafka_produced_total");

    let mut out = std::io::stdout().lock();
    let ev = file.events as f64;
    writeln!(
        out,
        "crowsnest bench (kafka at {brokers}) — {} events, {:.1} MB, {} rules, {workers} decode workers",
        file.events,
        size as f64 / 1e6,
        set.rules.len()
    )?;
    writeln!(out, "{:<58} {:>12} {:>14} {:>8}", "run", "seconds", "events/s", "ratio")?;
    writeln!(out, "{:<58} {:>12.2} {:>14.0} {:>8.2}", "file replay (baseline)", file.secs, ev / file.secs, 1.0)?;
    let kafka_rate = kafka_events as f64 / kafka_secs;
    writeln!(
        out,
        "{:<58} {:>12.2} {:>14.0} {:>8.2}",
        "kafka topic (3 partitions) → rules → kafka alert topic",
        kafka_secs,
        kafka_rate,
        kafka_rate / (ev / file.secs)
    )?;
    if kafka_events < file.events {
        writeln!(out, "WARNING: only {kafka_events} of {} events came back from the broker; the rate covers those", file.events)?;
    }
    writeln!(
        out,
        "alerts: file {}; kafka {} delivered and acknowledged ({} acknowledged in all; windows still open at the stop stay uncommitted)",
        file.alerts, summary.alerts, produced
    )?;
    Ok(())
}

pub fn run(args: &BenchArgs) -> Result<()> {
    let set = RuleSet::bundled()?;
    if let Some(brokers) = &args.kafka {
        let workers = args.workers.unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
        return kafka_bench(args, brokers, &set, workers);
    }
    let workers = args.workers.unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
    let (path, size) = ensure_file(args, args.events, "events.jsonl").context("generating the bench input")?;
    let (small, _) = ensure_file(args, (args.events / 10).max(1), "events-10pct.jsonl")?;
    eprintln!("input: {} ({:.1} MB), {} bundled rules, {} cores", path.display(), size as f64 / 1e6, set.rules.len(), workers);

    // Warm the page cache so no run pays for the disk.
    std::io::copy(&mut File::open(&path)?, &mut std::io::sink())?;
    let (value_secs, _) = baseline_value(&path, false)?;
    let (value_inner_secs, _) = baseline_value(&path, true)?;
    let one = run_pipeline(&path, &set, 1)?;
    let many = run_pipeline(&path, &set, workers)?;
    let small_run = run_pipeline(&small, &set, workers)?;
    let duck = if args.no_duckdb { None } else { duckdb(&path, 1).map(|one| (one, duckdb(&path, workers))) };

    let ev = many.events as f64;
    let rate = |secs: f64| ev / secs;
    let mb = |b: Option<u64>| b.map_or("n/a".to_string(), |b| format!("{:.0} MB", b as f64 / 1e6));
    let mut out = std::io::stdout().lock();
    writeln!(out, "crowsnest bench — {} events, {:.1} MB, {} rules", many.events, size as f64 / 1e6, set.rules.len())?;
    writeln!(out, "{:<58} {:>12} {:>14} {:>8}", "run", "seconds", "events/s", "ratio")?;
    let row = |out: &mut dyn Write, name: &str, secs: f64| {
        writeln!(out, "{name:<58} {secs:>12.2} {:>14.0} {:>8.2}", rate(secs), value_secs / secs)
    };
    row(&mut out, "serde_json::Value parse of each line, 1 core (baseline)", value_secs)?;
    row(&mut out, "serde_json::Value parse incl. properties.log, 1 core", value_inner_secs)?;
    row(&mut out, "crowsnest replay, all rules, 1 decode worker", one.secs)?;
    row(&mut out, &format!("crowsnest replay, all rules, {workers} decode workers"), many.secs)?;
    if let Some((one, many)) = duck {
        row(&mut out, "DuckDB: read_json + comparable SQL, 1 thread", one)?;
        if let Some(many) = many {
            row(&mut out, &format!("DuckDB: read_json + comparable SQL, {workers} threads"), many)?;
        }
    }
    writeln!(out, "alerts: {} (1 worker: {}); events decoded: {} (1 worker: {})", many.alerts, one.alerts, many.events, one.events)?;
    writeln!(
        out,
        "peak RSS of the pipeline: {} on {} events, {} on {} events",
        mb(small_run.peak_rss),
        small_run.events,
        mb(many.peak_rss),
        many.events
    )?;
    writeln!(out, "ratio = baseline seconds / run seconds (above 1: faster than parsing into serde_json::Value on one core)")?;
    Ok(())
}
