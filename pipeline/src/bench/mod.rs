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
//! `--windows` measures the stateful side alone (see [`windows`]); `--sentinel` the Sentinel sink
//! (see [`sentinel`]); `--lake` the lake sink and hunts over the lake (see [`lake`]);
//! `--eventhubs` the native Event Hubs source against file replay (see [`eventhubs`]).
//!
//! `--kafka HOST:PORT` measures instead the pipeline reading a Kafka topic (3 partitions) and
//! writing alerts to a topic, against file replay of the same events in the same run.

mod eventhubs;
mod flight_sql;
mod lake;
mod latency;
pub mod record;
mod sentinel;
mod soak;
mod windows;

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Args;

use crate::engine::{Engine, EngineOptions};
use crate::memory::{peak_rss, reset_peak_rss};
use crate::metrics::Metrics;
use crate::pipeline::{self, Control, Outputs};
use crate::rules::RuleSet;
use crate::sink::lake::LakeSink;
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
    /// Runs of each measurement; the fastest counts (this machine's neighbours come and go,
    /// and the fastest run is the one they disturbed least — for the baseline too).
    #[arg(long, default_value_t = 3)]
    repeat: usize,
    /// Skip the DuckDB comparison.
    #[arg(long)]
    no_duckdb: bool,
    /// Kafka mode: a broker (e.g. `tansu broker --storage-engine memory://tansu/`) to load the
    /// events into and read them back from.
    #[arg(long, value_name = "HOST:PORT")]
    kafka: Option<String>,
    /// Windows mode: ten windowed rules over --events events with --keys distinct keys,
    /// measured in the engine alone (events/s, live groups, memory per live group).
    #[arg(long, conflicts_with = "kafka")]
    windows: bool,
    /// Only the stages, each alone on one core with its input in memory: decoding (the file's
    /// chunks read first), then the rules (the file decoded first).
    #[arg(long, conflicts_with_all = ["kafka", "windows"])]
    stages: bool,
    /// Sentinel mode: --alerts alerts through the Sentinel sink into the local stand-in of the
    /// Logs Ingestion API (HTTPS, gzip), end to end and on the engine thread; then --events
    /// generated audit events forwarded as ASIM rows.
    #[arg(long, conflicts_with_all = ["kafka", "windows", "stages"])]
    sentinel: bool,
    /// Lake mode: measure the lake sink (replay with and without it, bytes per event) and hunts
    /// over the lake it wrote, against DuckDB reading the same Parquet files.
    #[arg(long, conflicts_with_all = ["kafka", "windows", "stages", "sentinel"])]
    lake: bool,
    /// Event Hubs mode: the events through the native Event Hubs source (the Azure SDK over
    /// AMQP from the local stand-in, checkpoints in Azurite) and every rule, against a file
    /// replay of the same events; and the checkpoint writes that cost.
    #[arg(long, conflicts_with_all = ["kafka", "windows", "stages", "sentinel", "lake"])]
    eventhubs: bool,
    /// Flight SQL mode: a hunt's --events-row result streamed from `crowsnest serve-sql` to
    /// Python's ADBC client, against `crowsnest hunt --format parquet` of the same query.
    #[arg(long, conflicts_with_all = ["kafka", "windows", "stages", "sentinel", "lake", "eventhubs"])]
    pub flight_sql: bool,
    /// Soak mode: `crowsnest run` on a followed file fed at --rate events/s for this long
    /// (e.g. 30m), with bad records and changing keys, sampling its memory, threads, open files
    /// and window groups every 5 s into DIR/soak.csv (bench/plot_soak.py draws it).
    #[arg(long, value_name = "DURATION", conflicts_with_all = ["kafka", "windows", "stages", "sentinel", "lake"])]
    soak: Option<String>,
    /// Events per second for --soak.
    #[arg(long, default_value_t = 1000)]
    rate: u64,
    /// Alerts for --sentinel.
    #[arg(long, default_value_t = 200_000)]
    alerts: u64,
    /// Distinct keys (users) for --windows.
    #[arg(long, default_value_t = 100_000)]
    keys: u64,
    /// With --windows: instead, flood one rule with this many distinct keys (one per event)
    /// under --max-groups, beside a rule on 20 keys that must keep alerting; reports the peak
    /// RSS growth, live groups and evictions.
    #[arg(long, requires = "windows", value_name = "EVENTS")]
    flood: Option<u64>,
    /// The flooded rule's max_groups, for --flood.
    #[arg(long, default_value_t = 100_000)]
    max_groups: usize,
    /// Latency mode: event-to-alert latency (p50/p99/max) over a followed file fed at 10,000
    /// events/s and then as fast as the pipeline reads, for single-event rules, early-firing
    /// windows and closing windows; --latency-secs per rate.
    #[arg(long, conflicts_with_all = ["kafka", "windows", "stages", "sentinel", "lake", "eventhubs", "flight_sql"])]
    latency: bool,
    #[arg(long, default_value_t = 20)]
    latency_secs: u64,
    /// Appends every figure of this run, with the commit id, to FILE (JSON lines; see
    /// bench/history_table.py).
    #[arg(long, value_name = "FILE")]
    record: Option<PathBuf>,
    /// The generated traffic: calm (the figures of earlier runs), or public-api (busier: nodes
    /// and agents calling from the cluster's egress IP, controllers making pods with owners,
    /// one event in ten a workload, RBAC or secret write).
    #[arg(long, value_enum, default_value_t = crate::gen::Profile::Calm)]
    profile: crate::gen::Profile,
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

fn ensure_file(args: &BenchArgs, events: u64, name: &str) -> Result<(PathBuf, u64)> {
    ensure_generated(args, events, name, false)
}

/// The generated file `name` in `--dir`, made unless an earlier run left it with the same
/// settings; `insights`: with Container Insights records beside the audit events.
fn ensure_generated(args: &BenchArgs, events: u64, name: &str, insights: bool) -> Result<(PathBuf, u64)> {
    std::fs::create_dir_all(&args.dir)?;
    // Each profile its own file, so switching never reuses the other's.
    let name = match args.profile {
        crate::gen::Profile::Calm => name.to_string(),
        other => format!("{other:?}-{name}").to_lowercase(),
    };
    let path = args.dir.join(&name);
    let stamp = args.dir.join(format!("{name}.done"));
    let kind = if insights { "insights" } else { "audit-only" };
    let want = format!("{events} {} {kind} {:?}", args.seed, args.profile);
    if std::fs::read_to_string(&stamp).ok().as_deref() != Some(want.as_str()) {
        eprintln!("generating {events} events into {} …", path.display());
        let mut w = std::io::BufWriter::with_capacity(1 << 20, File::create(&path)?);
        // Audit records only, but for the lake bench: the figures stay comparable with earlier
        // runs and with DuckDB's load.
        let opts = crate::gen::GenOptions { events, seed: args.seed, insights, profile: args.profile, ..Default::default() };
        crate::gen::generate(&opts, &mut w)?;
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
    run_pipeline_with(path, set, workers, None)
}

/// [`run_pipeline`], writing every row to `lake` too when given.
fn run_pipeline_with(path: &Path, set: &RuleSet, workers: usize, lake: Option<LakeSink>) -> Result<PipelineRun> {
    let engine = Engine::new(set, &EngineOptions::default())?;
    let control = Control { workers, ..Control::default() };
    let sources: Vec<Box<dyn Source>> = vec![Box::new(FileSource::open(path, FramingLimits::default(), control.bytes_read.clone())?)];
    let mut outputs = Outputs { sinks: vec![Box::new(CountingSink(0))], dead_letters: None, late_events: None, events: None, lake };
    let metrics = Metrics::new();
    reset_peak_rss();
    let t = Instant::now();
    let summary = pipeline::run(sources, engine, AlertRouter::new(set.suppression_periods(), 1 << 20), &mut outputs, &metrics, &control)?;
    let secs = t.elapsed().as_secs_f64();
    Ok(PipelineRun { secs, events: summary.decode.total_events(), alerts: summary.alerts, peak_rss: peak_rss() })
}

/// Decoding alone, on one core: the file's chunks read into memory first, then decoded.
/// Returns the seconds and the events decoded.
fn decode_only(path: &Path) -> Result<(f64, u64)> {
    let control = Control::default();
    let mut source = FileSource::open(path, FramingLimits::default(), control.bytes_read.clone())?;
    let mut chunks = Vec::new();
    while let Some(chunk) = source.next_chunk()? {
        chunks.push(chunk);
    }
    let mut decoder = crate::decode::Decoder::new();
    let t = Instant::now();
    let mut events = 0;
    for chunk in &chunks {
        let (batches, _, _) = pipeline::decode_chunk(&mut decoder, chunk);
        events += batches.iter().map(|b| b.batch.num_rows() as u64).sum::<u64>();
    }
    Ok((t.elapsed().as_secs_f64(), events))
}

/// The rules alone, on one core: the file decoded (and de-duplicated) into memory first, then
/// every chunk's batches through the engine as the pipeline hands them over. Returns the
/// seconds the engine took (end-of-input firing included; the fastest of `repeat` runs, each
/// with a new engine), the events it saw, and per rule of that run (slowest first) its busy
/// seconds and the rows its WHERE kept.
fn engine_only(path: &Path, set: &RuleSet, repeat: usize) -> Result<(f64, u64, Vec<(String, f64, u64)>)> {
    use crate::decode::dedup::Deduplicator;
    use crate::decode::Decoder;
    use crate::tables::audit_col;
    let control = Control::default();
    let mut source = FileSource::open(path, FramingLimits::default(), control.bytes_read.clone())?;
    let mut decoder = Decoder::new();
    let mut dedup = Deduplicator::new(control.dedup_capacity, audit_col::AUDIT_ID, audit_col::STAGE);
    let mut chunks = Vec::new();
    let mut events = 0;
    while let Some(chunk) = source.next_chunk()? {
        let (batches, _, _) = pipeline::decode_chunk(&mut decoder, &chunk);
        let batches = batches
            .into_iter()
            .map(|b| Ok(crate::decode::TableBatch { batch: dedup.apply(b.table, b.batch)?, ..b }))
            .collect::<Result<Vec<_>>>()?;
        events += batches.iter().map(|b| b.batch.num_rows() as u64).sum::<u64>();
        chunks.push(batches);
    }
    let (mut best, mut by_rule) = (f64::MAX, Vec::new());
    for _ in 0..repeat {
        let mut engine = Engine::new(set, &EngineOptions::default())?;
        let t = Instant::now();
        let mut alerts = 0;
        for batches in &chunks {
            alerts += engine.process_chunk(batches, None).len();
        }
        alerts += engine.finish().len();
        std::hint::black_box(alerts);
        let secs = t.elapsed().as_secs_f64();
        if secs < best {
            best = secs;
            by_rule = engine.stats().map(|(rule, stats)| (rule.id.clone(), stats.busy.as_secs_f64(), stats.matches)).collect();
        }
    }
    by_rule.sort_by(|a, b| b.1.total_cmp(&a.1));
    Ok((best, events, by_rule))
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
    let loaded = load_topic(brokers, &topic, &path)?;

    let bare_secs = read_topic_bare(brokers, &topic, loaded.sent)?;

    let engine = Engine::new(set, &EngineOptions::default())?;
    let control = Control { workers, ..Control::default() };
    let metrics = Metrics::new();
    // tansu holds every fetch for fetch.wait.max.ms even when it has data (a Kafka broker
    // answers as soon as fetch.min.bytes are there): a short wait measures Crowsnest, not that.
    let librdkafka = [("fetch.wait.max.ms".to_string(), "10".to_string())].into();
    let connection = crate::kafka::Connection { brokers: brokers.to_string(), librdkafka, ..Default::default() };
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
    let sink_connection = crate::kafka::Connection { brokers: brokers.to_string(), ..Default::default() };
    let sink = crate::sink::kafka::KafkaSink::new(&sink_connection, &alerts_topic, "alerts", metrics.clone())?;
    let mut outputs = Outputs { sinks: vec![Box::new(sink)], dead_letters: None, late_events: None, events: None, lake: None };
    let (summary, (total_secs, kafka_secs, kafka_events)) = run_until_decoded(
        Box::new(source),
        engine,
        set,
        &mut outputs,
        (&metrics, &control),
        "crowsnest_kafka_messages_consumed_total",
        file.events,
    )?;
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
    let table = RateTable::start(&mut out, ev / file.secs)?;
    table.row(&mut out, "file replay (baseline)", file.secs, ev)?;
    table.row(&mut out, "kafka topic (3 partitions) → rules → kafka alert topic", kafka_secs, kafka_events as f64)?;
    table.row(&mut out, "bare librdkafka consumer of that topic, no decoding", bare_secs, ev)?;
    writeln!(
        out,
        "(kafka runs timed from the first message read to the last event decoded; {:.2} s more from start-up, the consumer group join)",
        total_secs - kafka_secs
    )?;
    let consumed = counter_total(&metrics, "crowsnest_kafka_messages_consumed_total");
    let gaps = counter_total(&metrics, "crowsnest_kafka_offset_gaps_total");
    writeln!(
        out,
        "messages: {} sent, {} delivery errors, {consumed} consumed, {gaps} offsets skipped by the broker",
        loaded.sent, loaded.delivery_errors
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

/// The table every throughput mode prints: per run its seconds, its rate (events/s, or rows/s
/// for result streaming), and that rate as a ratio to the baseline's.
struct RateTable {
    baseline_rate: f64,
    unit: String,
}

impl RateTable {
    /// Prints the header; `baseline_rate` is the events/s every ratio divides by.
    fn start(out: &mut dyn Write, baseline_rate: f64) -> std::io::Result<RateTable> {
        Self::start_in(out, baseline_rate, "events/s")
    }

    /// The same table for a rate of another `unit`.
    fn start_in(out: &mut dyn Write, baseline_rate: f64, unit: &str) -> std::io::Result<RateTable> {
        writeln!(out, "{:<58} {:>12} {:>14} {:>8}", "run", "seconds", unit, "ratio")?;
        Ok(RateTable { baseline_rate, unit: unit.to_string() })
    }

    fn row(&self, out: &mut dyn Write, name: &str, secs: f64, events: f64) -> std::io::Result<()> {
        let rate = events / secs;
        record::figure(name.trim(), rate, &self.unit);
        record::figure(&format!("{} (ratio)", name.trim()), rate / self.baseline_rate, "ratio");
        writeln!(out, "{name:<58} {secs:>12.2} {rate:>14.0} {:>8.2}", rate / self.baseline_rate)
    }
}

/// Every rule over a source that would wait for more input, until `want` events are decoded
/// (see [`stop_when_decoded`]): the summary, and the watcher's (total s, s from the first
/// message `first_metric` counts, events decoded).
fn run_until_decoded(
    source: Box<dyn Source>,
    engine: Engine,
    set: &RuleSet,
    outputs: &mut Outputs,
    (metrics, control): (&Metrics, &Control),
    first_metric: &'static str,
    want: u64,
) -> Result<(pipeline::Summary, (f64, f64, u64))> {
    let watcher = stop_when_decoded(control, metrics, first_metric, want);
    let summary = pipeline::run(vec![source], engine, AlertRouter::new(set.suppression_periods(), 1 << 20), outputs, metrics, control)?;
    let timing = watcher.join().map_err(|_| anyhow::anyhow!("watcher panicked"))?;
    Ok((summary, timing))
}

/// For a source that would wait for more input: stops the pipeline once `want` events went
/// through the engine, or when nothing moved for 10 s (messages the service never hands out;
/// the figure then covers those that did arrive). The thread returns the seconds from now
/// (connection, group join…) and from the first message `first_metric` counts, to the last
/// event decoded, and the events decoded.
fn stop_when_decoded(
    control: &Control,
    metrics: &Metrics,
    first_metric: &'static str,
    want: u64,
) -> std::thread::JoinHandle<(f64, f64, u64)> {
    let (stop, m) = (control.stop.clone(), metrics.clone());
    let started = Instant::now();
    std::thread::spawn(move || {
        let (mut last, mut last_at, mut first_at) = (0, Instant::now(), None);
        loop {
            if first_at.is_none() && counter_total(&m, first_metric) > 0 {
                first_at = Some(Instant::now());
            }
            let n = counter_total(&m, "crowsnest_events_decoded_total");
            if n != last {
                (last, last_at) = (n, Instant::now());
            }
            if n >= want || last_at.elapsed() > std::time::Duration::from_secs(10) {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let streaming = last_at.duration_since(first_at.unwrap_or(started)).as_secs_f64();
        (last_at.duration_since(started).as_secs_f64(), streaming, last)
    })
}

/// What the bench loader put on the topic, accounted for message by message.
struct Loaded {
    sent: u64,
    delivery_errors: u64,
}

/// Counts delivery reports: a message the broker refused must show in the figures, not vanish.
#[derive(Default)]
struct DeliveryCount {
    ok: std::sync::atomic::AtomicU64,
    failed: std::sync::atomic::AtomicU64,
}

impl rdkafka::ClientContext for DeliveryCount {}

impl rdkafka::producer::ProducerContext for DeliveryCount {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &rdkafka::message::DeliveryResult<'_>, _: ()) {
        use std::sync::atomic::Ordering::Relaxed;
        match result {
            Ok(_) => self.ok.fetch_add(1, Relaxed),
            Err((e, _)) => {
                if self.failed.fetch_add(1, Relaxed) < 5 {
                    eprintln!("bench loader: delivery failed: {e}");
                }
                0
            }
        };
    }
}

/// Seconds a bare librdkafka consumer takes to read `messages` messages of `topic` (all
/// partitions, from the start, payloads touched but not decoded): the ceiling for the pipeline.
fn read_topic_bare(brokers: &str, topic: &str, messages: u64) -> Result<f64> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
    use std::time::Duration;

    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("crowsnest-bench-bare-{}", std::process::id()))
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "10")
        .create()?;
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    let mut tpl = TopicPartitionList::new();
    for p in metadata.topics().iter().flat_map(|t| t.partitions()) {
        tpl.add_partition_offset(topic, p.id(), Offset::Beginning)?;
    }
    consumer.assign(&tpl)?;
    let (started, mut first, mut read, mut bytes) = (Instant::now(), None, 0u64, 0u64);
    while read < messages {
        if let Some(m) = consumer.poll(Duration::from_millis(100)) {
            first.get_or_insert_with(Instant::now);
            bytes += m?.payload().map_or(0, |p| p.len() as u64);
            read += 1;
        } else if started.elapsed() > Duration::from_secs(120) {
            anyhow::bail!("bare consumer: only {read} of {messages} messages after 120 s");
        }
    }
    std::hint::black_box(bytes);
    Ok(first.map_or(0.0, |f| f.elapsed().as_secs_f64()))
}

/// Writes every line of `path` to `topic`, one message each, every delivery accounted for.
fn load_topic(brokers: &str, topic: &str, path: &Path) -> Result<Loaded> {
    use rdkafka::producer::{BaseRecord, Producer, ThreadedProducer};
    use rdkafka::ClientConfig;
    use std::sync::atomic::Ordering::Relaxed;
    use std::time::Duration;

    // One message per batch: tansu 0.6 answers a fetch that starts inside a stored batch with
    // the next batch, skipping the rest of that one, and consumers start mid-batch after every
    // pause or restart. Single-message batches keep that broker bug out of the figures.
    let producer: ThreadedProducer<DeliveryCount> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "0")
        .set("batch.num.messages", "1")
        .set("message.max.bytes", "20000000")
        .set("enable.idempotence", "true")
        .create_with_context(DeliveryCount::default())?;
    let mut sent = 0u64;
    for line in BufReader::with_capacity(1 << 20, File::open(path)?).split(b'\n') {
        let line = line?;
        let mut record = BaseRecord::<(), [u8]>::to(topic).payload(&line[..]);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((_, r)) => {
                    record = r;
                    producer.poll(Duration::from_millis(10));
                }
            }
        }
        sent += 1;
    }
    producer.flush(Duration::from_secs(300))?;
    let context = producer.context();
    let (ok, failed) = (context.ok.load(Relaxed), context.failed.load(Relaxed));
    if ok + failed != sent {
        anyhow::bail!("bench loader: {sent} messages sent but {ok} acknowledged and {failed} failed after flushing");
    }
    Ok(Loaded { sent, delivery_errors: failed })
}

pub fn run(args: &BenchArgs) -> Result<()> {
    run_mode(args)?;
    if let Some(path) = &args.record {
        let cli: Vec<String> = std::env::args().skip(1).collect();
        record::append(path, args.mode(), &cli)?;
    }
    Ok(())
}

impl BenchArgs {
    /// The bench's mode, as recorded.
    fn mode(&self) -> &'static str {
        match self {
            a if a.flood.is_some() => "flood",
            a if a.latency => "latency",
            a if a.windows => "windows",
            a if a.sentinel => "sentinel",
            a if a.soak.is_some() => "soak",
            a if a.kafka.is_some() => "kafka",
            a if a.lake => "lake",
            a if a.eventhubs => "eventhubs",
            a if a.flight_sql => "flight-sql",
            a if a.stages => "stages",
            _ => "replay",
        }
    }
}

fn run_mode(args: &BenchArgs) -> Result<()> {
    if let Some(events) = args.flood {
        return windows::flood(events, args.max_groups, args.seed);
    }
    if args.windows {
        return windows::run(args.events, args.keys, args.seed);
    }
    if args.latency {
        let workers = args.workers.unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
        return latency::run(&args.dir, args.latency_secs.max(1), workers);
    }
    if args.sentinel {
        return sentinel::run(args.alerts, args.events);
    }
    if let Some(d) = &args.soak {
        let secs = crate::rules::parse_duration(d)? / 1_000_000_000;
        return soak::run(&args.dir, std::time::Duration::from_secs(secs.max(1) as u64), args.rate.max(10), args.seed);
    }
    let set = RuleSet::bundled()?;
    if let Some(brokers) = &args.kafka {
        let workers = args.workers.unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
        return kafka_bench(args, brokers, &set, workers);
    }
    let workers = args.workers.unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
    if args.lake {
        return lake::run(args, &set, workers);
    }
    if args.eventhubs {
        return eventhubs::run(args, &set, workers);
    }
    if args.flight_sql {
        return flight_sql::run(args, &set, workers);
    }
    let (path, size) = ensure_file(args, args.events, "events.jsonl").context("generating the bench input")?;
    if args.stages {
        let (secs, events) = decode_only(&path)?;
        println!("decoding alone (1 core): {events} events in {secs:.2} s, {:.0} events/s", events as f64 / secs);
        record::figure("decoding alone, 1 core", events as f64 / secs, "events/s");
        let (secs, events, by_rule) = engine_only(&path, &set, args.repeat.max(1))?;
        record::figure("the rules alone, 1 core", events as f64 / secs, "events/s");
        let total: f64 = by_rule.iter().map(|(_, s, _)| s).sum();
        for (id, s, _) in by_rule.iter().take(5) {
            record::figure(&format!("share of rule time: {id}"), s / total.max(f64::MIN_POSITIVE), "fraction");
        }
        println!(
            "the rules alone ({} rules, 1 core): {events} events in {secs:.2} s, {:.0} events/s",
            set.rules.len(),
            events as f64 / secs
        );
        // A rule that computes a WHERE prefix first is charged for it; the rules sharing it are not.
        let slowest: Vec<String> = by_rule
            .iter()
            .take(10)
            .map(|(id, s, rows)| format!("{id} {s:.3} s ({:.1} %, {rows} rows)", 100.0 * s / total.max(f64::MIN_POSITIVE)))
            .collect();
        println!("  slowest rules (share of the rules' own time, rows their WHERE kept): {}", slowest.join(", "));
        return Ok(());
    }
    let (small, _) = ensure_file(args, (args.events / 10).max(1), "events-10pct.jsonl")?;
    eprintln!("input: {} ({:.1} MB), {} bundled rules, {} cores", path.display(), size as f64 / 1e6, set.rules.len(), workers);

    // Warm the page cache so no run pays for the disk.
    std::io::copy(&mut File::open(&path)?, &mut std::io::sink())?;
    let repeat = args.repeat.max(1);
    let fastest = |f: &dyn Fn() -> Result<f64>| -> Result<f64> { (0..repeat).map(|_| f()).try_fold(f64::MAX, |m, s| Ok(m.min(s?))) };
    let fastest_run = |f: &dyn Fn() -> Result<PipelineRun>| -> Result<PipelineRun> {
        let mut best: Option<PipelineRun> = None;
        for _ in 0..repeat {
            let run = f()?;
            if best.as_ref().is_none_or(|b| run.secs < b.secs) {
                best = Some(run);
            }
        }
        Ok(best.expect("repeat >= 1"))
    };
    let value_secs = fastest(&|| Ok(baseline_value(&path, false)?.0))?;
    let value_inner_secs = fastest(&|| Ok(baseline_value(&path, true)?.0))?;
    let one = fastest_run(&|| run_pipeline(&path, &set, 1))?;
    let many = fastest_run(&|| run_pipeline(&path, &set, workers))?;
    let small_run = run_pipeline(&small, &set, workers)?;
    // Where the time goes: decoding with no rule loaded, and the rules with no decoding.
    let no_rules = RuleSet { rules: Vec::new(), lists: set.lists.clone(), dir: set.dir.clone() };
    let decode_only = fastest_run(&|| run_pipeline(&path, &no_rules, workers))?;
    let (rules_secs, rules_events, _) = engine_only(&path, &set, repeat)?;
    let duck_fastest = |threads: usize| (0..repeat).filter_map(|_| duckdb(&path, threads)).reduce(f64::min);
    let duck = if args.no_duckdb { None } else { duck_fastest(1).map(|one| (one, duck_fastest(workers))) };

    let ev = many.events as f64;
    let rate = |secs: f64| ev / secs;
    let mb = |b: Option<u64>| b.map_or("n/a".to_string(), |b| format!("{:.0} MB", b as f64 / 1e6));
    let mut out = std::io::stdout().lock();
    writeln!(out, "crowsnest bench — {} events, {:.1} MB, {} rules", many.events, size as f64 / 1e6, set.rules.len())?;
    let table = RateTable::start(&mut out, rate(value_secs))?;
    let row = |out: &mut dyn Write, name: &str, secs: f64| table.row(out, name, secs, ev);
    row(&mut out, "serde_json::Value parse of each line, 1 core (baseline)", value_secs)?;
    row(&mut out, "serde_json::Value parse incl. properties.log, 1 core", value_inner_secs)?;
    row(&mut out, "crowsnest replay, all rules, 1 decode worker", one.secs)?;
    row(&mut out, &format!("crowsnest replay, all rules, {workers} decode workers"), many.secs)?;
    row(&mut out, &format!("  breakdown: decoding alone (no rules), {workers} workers"), decode_only.secs)?;
    row(&mut out, "  breakdown: the rules alone on decoded batches, 1 core", rules_secs * ev / rules_events.max(1) as f64)?;
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
    writeln!(out, "each figure: the fastest of {repeat} runs (--repeat)")?;
    Ok(())
}
