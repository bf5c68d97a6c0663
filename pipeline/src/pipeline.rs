//! The one place that wires sources, decoders, the engine, the alert router and the sinks.
//!
//! ```text
//! reader thread ──chunks──► decode workers (N) ──batches──► this thread: reorder → dedup →
//!   (sources, in order)      (parse, redact,                 engine → router → sinks,
//!                             build Arrow)                   dead letters, metrics
//! ```
//!
//! Channels are bounded, so memory stays flat however large the input: a slow engine or sink
//! slows the reader instead of queueing (a Kafka source pauses its partitions meanwhile).
//! Decoded chunks are put back in source order before the engine sees them, so results do not
//! depend on thread timing.
//!
//! Checkpoints: for sources that can resume (Kafka), every `checkpoint_interval` the sinks are
//! flushed and the offsets [`Checkpoints`] releases are committed. A file run ends by firing
//! every open window; a resumable run that is stopped does not: it leaves the offsets those
//! windows need uncommitted, so the restart rebuilds them (at-least-once, same alert ids).

use std::collections::{BTreeMap, HashMap};
use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender, TryRecvError, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use datafusion::arrow::array::{Array, AsArray};
use indicatif::{ProgressBar, ProgressStyle};

use crate::alert::Alert;
use crate::checkpoint::Checkpoints;
use crate::deadletter::{DeadLetter, Reason};
use crate::decode::dedup::Deduplicator;
use crate::decode::time::format_nanos;
use crate::decode::{DecodeStats, Decoder, Origin, TableBatch};
use crate::engine::{Engine, LateRows};
use crate::metrics::Metrics;
use crate::sink::lake::{LakeSink, LakeStats};
use crate::sink::router::AlertRouter;
use crate::sink::sentinel::events::EventForwarder;
use crate::sink::{Record, Sink};
use crate::source::{Chunk, OffsetCommitter, Source, SourceOffsets};
use crate::tables::insights::InsightsTable;
use crate::tables::{audit_col, KUBE_AUDIT};

/// Where results go.
#[derive(Default)]
pub struct Outputs {
    pub sinks: Vec<Box<dyn Sink>>,
    pub dead_letters: Option<Box<dyn Sink>>,
    /// Events a windowed rule matched after their windows fired (see [`LateRows`]).
    pub late_events: Option<Box<dyn Sink>>,
    /// Decoded audit events forwarded as they are (normalized, to Sentinel), besides alerts.
    pub events: Option<EventForwarder>,
    /// Every decoded row and every alert, as Parquet (see `sink::lake`).
    pub lake: Option<LakeSink>,
}

impl Outputs {
    /// Every sink: alerts, forwarded events, dead letters, late events (what must be flushed
    /// before a commit).
    fn all(&mut self) -> impl Iterator<Item = &mut Box<dyn Sink>> {
        self.sinks
            .iter_mut()
            .chain(self.events.iter_mut().map(|e| &mut e.sink))
            .chain(self.dead_letters.iter_mut())
            .chain(self.late_events.iter_mut())
    }
}

#[derive(Clone)]
pub struct Control {
    /// Set to stop reading; what was read is still processed and flushed.
    pub stop: Arc<AtomicBool>,
    pub bytes_read: Arc<AtomicU64>,
    /// Show a progress bar (only when stderr is a terminal).
    pub progress: bool,
    pub workers: usize,
    pub dedup_capacity: usize,
    /// How often a resumable source's safe offsets are committed (after flushing the sinks).
    pub checkpoint_interval: Duration,
    /// Where rule state that input cannot rebuild (first-sighting histories) is kept across
    /// runs: loaded at start, saved at every checkpoint and at the end.
    pub state_dir: Option<std::path::PathBuf>,
}

impl Default for Control {
    fn default() -> Self {
        Control {
            stop: Arc::new(AtomicBool::new(false)),
            bytes_read: Arc::new(AtomicU64::new(0)),
            progress: false,
            workers: std::thread::available_parallelism().map_or(2, |n| n.get()).clamp(1, 8),
            dedup_capacity: 1 << 20,
            checkpoint_interval: Duration::from_secs(5),
            state_dir: None,
        }
    }
}

/// What a run did, for the summary and for tests.
#[derive(Debug, Default, Clone)]
pub struct Summary {
    pub decode: DecodeStats,
    /// The process's peak resident memory at the end of the run (Linux).
    pub peak_rss: Option<u64>,
    pub dead_letters: BTreeMap<Reason, u64>,
    pub alerts_by_rule: BTreeMap<String, u64>,
    pub alerts: u64,
    pub duplicate_events: u64,
    pub alerts_suppressed: u64,
    pub alerts_duplicate: u64,
    pub late_events: u64,
    /// Window groups dropped at a rule's cap on live groups.
    pub evictions: u64,
    pub bytes_read: u64,
    pub elapsed: Duration,
    /// Time the engine took (all rules), part of `elapsed`.
    pub engine_time: Duration,
    /// The rules that took longest, with their time (for the summary).
    pub slowest_rules: Vec<(String, Duration)>,
    pub rule_errors: u64,
    pub rules: usize,
    /// Events stamped far in the future (kept, but not allowed to move the watermark).
    pub future_events: u64,
    /// Resumable sources: the offsets committed last, and chunks left uncommitted because open
    /// windows still needed them when the run stopped.
    pub committed: Vec<SourceOffsets>,
    pub held_chunks: usize,
    /// What the lake sink wrote, when there is one.
    pub lake: Option<LakeStats>,
}

impl Summary {
    pub fn events_per_second(&self) -> f64 {
        self.decode.total_events() as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// The summary a person reads on stderr at the end of a run.
    pub fn render(&self, dead_letter_sink: Option<&str>) -> String {
        let mut s = String::new();
        let secs = self.elapsed.as_secs_f64();
        s.push_str(&format!(
            "── crowsnest summary ── {} events in {secs:.2}s ({:.0} events/s, {:.1} MB/s read)\n",
            self.decode.total_events(),
            self.events_per_second(),
            self.bytes_read as f64 / 1e6 / secs.max(1e-9)
        ));
        let tables: Vec<String> = self.decode.tables.iter().map(|(t, n)| format!("{t} {n}")).collect();
        s.push_str(&format!("events by table:    {}\n", if tables.is_empty() { "none".to_string() } else { tables.join(", ") }));
        s.push_str(&format!("time in rules:      {:.2}s ({} rules)\n", self.engine_time.as_secs_f64(), self.rules));
        if self.engine_time > Duration::from_secs(1) && !self.slowest_rules.is_empty() {
            let top: Vec<String> = self.slowest_rules.iter().map(|(id, t)| format!("{id} {:.2}s", t.as_secs_f64())).collect();
            s.push_str(&format!("  slowest:          {}\n", top.join(", ")));
        }
        let join = |m: &BTreeMap<String, u64>| m.iter().map(|(k, v)| format!("{k} {v}")).collect::<Vec<_>>().join(", ");
        if !self.decode.events.is_empty() {
            s.push_str(&format!("  by category:      {}\n", join(&self.decode.events)));
        }
        if !self.decode.skipped.is_empty() {
            s.push_str(&format!("skipped (not audit): {}\n", join(&self.decode.skipped)));
        }
        if self.duplicate_events > 0 {
            s.push_str(&format!(
                "duplicate events:   {} (audit: same auditID and stage; Container Insights: same record)\n",
                self.duplicate_events
            ));
        }
        s.push_str(&format!("alerts:             {}", self.alerts));
        if self.alerts_suppressed + self.alerts_duplicate > 0 {
            s.push_str(&format!(" ({} suppressed, {} repeats of an alert id dropped)", self.alerts_suppressed, self.alerts_duplicate));
        }
        s.push('\n');
        for (rule, n) in &self.alerts_by_rule {
            s.push_str(&format!("  {rule:<40} {n}\n"));
        }
        let dead: u64 = self.dead_letters.values().sum();
        s.push_str(&format!("dead letters:       {dead}"));
        if dead > 0 {
            let by = self.dead_letters.iter().map(|(r, n)| format!("{} {n}", r.as_str())).collect::<Vec<_>>().join(", ");
            s.push_str(&format!(" ({by})"));
            if let Some(name) = dead_letter_sink {
                s.push_str(&format!(" → {name}"));
            }
        }
        s.push('\n');
        if self.evictions > 0 {
            s.push_str(&format!("evicted groups:     {} (rules at their max_groups cap; their alerts are lost)\n", self.evictions));
        }
        if self.late_events > 0 {
            s.push_str(&format!("late events:        {} (after their window fired)\n", self.late_events));
        }
        if self.future_events > 0 {
            s.push_str(&format!(
                "future events:      {} (stamped >15 min ahead of the clock; not used for the watermark)\n",
                self.future_events
            ));
        }
        if self.rule_errors > 0 {
            s.push_str(&format!("rule errors:        {} (see the log)\n", self.rule_errors));
        }
        if !self.committed.is_empty() {
            let c = self.committed.iter().map(|o| format!("{}/{}@{}", o.topic, o.partition, o.next)).collect::<Vec<_>>().join(", ");
            s.push_str(&format!("offsets committed:  {c}\n"));
        }
        if let Some(b) = self.peak_rss {
            s.push_str(&format!("peak memory:        {} MB resident\n", b / 1_000_000));
        }
        if let Some(l) = &self.lake {
            s.push_str(&format!("lake:               {} rows in {} Parquet files, {:.1} MB", l.rows, l.files, l.bytes as f64 / 1e6));
            if l.existing > 0 || l.skipped_rows > 0 {
                s.push_str(&format!(" ({} files already there, {} rows already in the lake)", l.existing, l.skipped_rows));
            }
            s.push('\n');
        }
        if self.held_chunks > 0 {
            s.push_str(&format!(
                "left uncommitted:   {} chunks that open windows still need (a restart reads them again)\n",
                self.held_chunks
            ));
        }
        s
    }
}

struct Decoded {
    seq: u64,
    batches: Vec<TableBatch>,
    dead: Vec<DeadLetter>,
    stats: DecodeStats,
    offsets: Option<SourceOffsets>,
    /// The stream the engine keeps a clock for (partitioned sources only).
    stream: Option<Arc<str>>,
    opens_stream: bool,
}

/// Decodes a chunk with a worker's decoder (kept across chunks so its buffers are reused).
pub(crate) fn decode_chunk(d: &mut Decoder, chunk: &Chunk) -> (Vec<TableBatch>, Vec<DeadLetter>, DecodeStats) {
    for doc in &chunk.docs {
        let origin = Origin { source: &chunk.source, unit: chunk.unit, index: doc.index };
        let bytes = &chunk.buf[doc.start..doc.end];
        match doc.oversize {
            Some(len) => d.dead_letters.push(DeadLetter::new(
                &chunk.source,
                format!("{} {}", chunk.unit, doc.index),
                Reason::TooLarge,
                format!("{len} bytes, above the limit (max_document_bytes)"),
                bytes,
            )),
            None => d.decode(origin, bytes),
        }
    }
    let batches = d.finish();
    (batches, std::mem::take(&mut d.dead_letters), std::mem::take(&mut d.stats))
}

/// Decodes one chunk of the queue and hands its buffer back to the reader.
fn decode_job(decoder: &mut Decoder, seq: u64, chunk: Chunk, spare: &SyncSender<Vec<u8>>) -> Decoded {
    let (batches, dead, stats) = decode_chunk(decoder, &chunk);
    let stream = (chunk.offsets.is_some() || chunk.opens_stream).then(|| chunk.source.clone());
    let Chunk { buf, offsets, opens_stream, .. } = chunk;
    // Full: the reader has enough spares; this one is freed.
    let _ = spare.try_send(buf);
    Decoded { seq, batches, dead, stats, offsets, stream, opens_stream }
}

/// Lets the engine thread decode a waiting chunk itself when nothing decoded is ready: it
/// would otherwise sit idle while the decoders are behind, and on two cores that idle time
/// was most of what kept a replay from using both.
struct Helper<'a> {
    chunks: &'a Mutex<Receiver<(u64, Chunk)>>,
    spare: SyncSender<Vec<u8>>,
    decoder: Decoder,
}

impl Helper<'_> {
    fn try_decode(&mut self) -> Option<Decoded> {
        // A worker holding the lock is waiting for a chunk: there is none to take.
        let (seq, chunk) = self.chunks.try_lock().ok()?.try_recv().ok()?;
        Some(decode_job(&mut self.decoder, seq, chunk, &self.spare))
    }
}

/// Runs sources to their end (or until `control.stop`), then fires every open window and
/// flushes the sinks.
pub fn run(
    sources: Vec<Box<dyn Source>>,
    mut engine: Engine,
    mut router: AlertRouter,
    outputs: &mut Outputs,
    metrics: &Metrics,
    control: &Control,
) -> Result<Summary> {
    let started = Instant::now();
    let workers = control.workers.max(1);
    let total_size: Option<u64> = sources.iter().map(|s| s.size_hint()).sum();
    let committers: Vec<Box<dyn OffsetCommitter>> = sources.iter().filter_map(|s| s.committer()).collect();
    let progress = (control.progress && std::io::stderr().is_terminal()).then(|| make_progress(total_size));

    let (chunk_tx, chunk_rx) = sync_channel::<(u64, Chunk)>(workers * 2);
    let (out_tx, out_rx) = sync_channel::<Decoded>(workers * 2);
    // Decoded chunks' buffers, back to the reader to fill again (see Source::recycle).
    let (spare_tx, spare_rx) = sync_channel::<Vec<u8>>(workers * 2);
    let chunk_rx = Arc::new(Mutex::new(chunk_rx));
    let read_error: Arc<Mutex<Option<String>>> = Arc::default();
    // Kafka chunks are cut where the lake's rows of a partition end (after a restart).
    let resume = outputs.lake.as_ref().map(LakeSink::resume);

    std::thread::scope(|scope| -> Result<Summary> {
        let stop = control.stop.clone();
        let read_err = read_error.clone();
        // Named threads: `top -H` and profilers show which stage is busy.
        std::thread::Builder::new().name("cn-read".into()).spawn_scoped(scope, move || {
            let mut seq = 0;
            'sources: for mut source in sources {
                loop {
                    if stop.load(Ordering::Relaxed) {
                        break 'sources;
                    }
                    while let Ok(buf) = spare_rx.try_recv() {
                        source.recycle(buf);
                    }
                    match source.next_chunk() {
                        Ok(Some(chunk)) => {
                            let parts = match (&resume, &chunk.offsets) {
                                (Some(r), Some(o)) => match r.point(&o.topic, o.partition) {
                                    Ok(at) => crate::sink::lake::resume::split_chunk(chunk, at),
                                    // Not knowing what the lake holds, any row written could be
                                    // a repeat: stop reading (nothing unwritten is committed).
                                    Err(e) => {
                                        let msg = format!("{}: the lake's resume point could not be read: {e:#}", source.name());
                                        log::error!("{msg}");
                                        *read_err.lock().expect("lock") = Some(msg);
                                        break 'sources;
                                    }
                                },
                                _ => vec![chunk],
                            };
                            for chunk in parts {
                                let mut item = (seq, chunk);
                                loop {
                                    match chunk_tx.try_send(item) {
                                        Ok(()) => break,
                                        // The pipeline is full: let the source pause (and keep its
                                        // connection alive) until there is room.
                                        Err(TrySendError::Full(back)) => {
                                            item = back;
                                            source.wait_while_full();
                                        }
                                        Err(TrySendError::Disconnected(_)) => break 'sources,
                                    }
                                }
                                seq += 1;
                            }
                        }
                        Ok(None) => break,
                        Err(e) => {
                            // A source that fails mid-read (disk error, broken gzip): report it,
                            // keep what was read, go on with the next source.
                            let msg = format!("{}: read error: {e}", source.name());
                            log::error!("{msg}");
                            *read_err.lock().expect("lock") = Some(msg);
                            break;
                        }
                    }
                }
            }
        })?;
        for w in 0..workers {
            let rx = chunk_rx.clone();
            let tx = out_tx.clone();
            let spare = spare_tx.clone();
            std::thread::Builder::new().name(format!("cn-decode-{w}")).spawn_scoped(scope, move || {
                let mut decoder = Decoder::new();
                loop {
                    let next = rx.lock().expect("lock").recv();
                    let Ok((seq, chunk)) = next else { break };
                    if tx.send(decode_job(&mut decoder, seq, chunk, &spare)).is_err() {
                        break;
                    }
                }
            })?;
        }
        drop(out_tx);
        let helper = Helper { chunks: &chunk_rx, spare: spare_tx.clone(), decoder: Decoder::new() };
        drop(spare_tx);
        let summary = consume(out_rx, helper, &mut engine, &mut router, outputs, &committers, metrics, control, progress.as_ref());
        if let Some(p) = &progress {
            p.finish_and_clear();
        }
        let mut summary = summary?;
        summary.elapsed = started.elapsed();
        summary.bytes_read = control.bytes_read.load(Ordering::Relaxed);
        if let Some(msg) = read_error.lock().expect("lock").take() {
            log::warn!("input ended early: {msg}");
        }
        Ok(summary)
    })
}

fn make_progress(total: Option<u64>) -> ProgressBar {
    let bar = match total {
        Some(t) => ProgressBar::new(t).with_style(
            ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:30} {bytes}/{total_bytes} ({eta}) {msg}")
                .expect("valid template"),
        ),
        None => ProgressBar::new_spinner()
            .with_style(ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bytes} {msg}").expect("valid template")),
    };
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

#[allow(clippy::too_many_arguments)]
fn consume(
    rx: Receiver<Decoded>,
    mut helper: Helper<'_>,
    engine: &mut Engine,
    router: &mut AlertRouter,
    outputs: &mut Outputs,
    committers: &[Box<dyn OffsetCommitter>],
    metrics: &Metrics,
    control: &Control,
    progress: Option<&ProgressBar>,
) -> Result<Summary> {
    let mut summary = Summary { rules: engine.rule_count(), ..Summary::default() };
    if let Some(dir) = &control.state_dir {
        crate::permissions::refuse_world_writable_dir(dir, "state directory")?;
        engine.load_state(dir).context("loading rule state")?;
    } else if engine.has_history() {
        log::info!("no state directory: first-sighting rules start without history (set [state] dir to keep it across restarts)");
    }
    let mut dedup = Deduplicator::new(control.dedup_capacity, audit_col::AUDIT_ID, audit_col::STAGE);
    let mut checkpoints = Checkpoints::default();
    let mut last_checkpoint = Instant::now();
    let mut pending: BTreeMap<u64, Decoded> = BTreeMap::new();
    let mut next = 0u64;
    let mut last_bytes = 0u64;
    let mut quiet_since = Instant::now();
    loop {
        let received = match rx.try_recv() {
            Ok(decoded) => Ok(decoded),
            Err(TryRecvError::Disconnected) => Err(RecvTimeoutError::Disconnected),
            Err(TryRecvError::Empty) => match helper.try_decode() {
                Some(decoded) => Ok(decoded),
                None => rx.recv_timeout(Duration::from_millis(20)),
            },
        };
        match received {
            Ok(decoded) => {
                quiet_since = Instant::now();
                pending.insert(decoded.seq, decoded);
                while let Some(d) = pending.remove(&next) {
                    next += 1;
                    let t = Instant::now();
                    handle(d, engine, router, outputs, metrics, &mut dedup, &mut checkpoints, &mut summary)?;
                    metrics.batch_latency.observe(t.elapsed().as_secs_f64());
                }
            }
            Err(RecvTimeoutError::Timeout) if quiet_since.elapsed() < Duration::from_millis(500) => {}
            // Quiet input: idle partitions stop holding the watermark back.
            Err(RecvTimeoutError::Timeout) => {
                quiet_since = Instant::now();
                let backlog: Vec<Arc<str>> = committers.iter().flat_map(|c| c.streams_with_backlog()).collect();
                engine.note_backlog(&backlog);
                let fired = engine.tick();
                deliver(fired, engine, router, outputs, metrics, &mut summary)?;
            }
            Err(RecvTimeoutError::Disconnected) => break,
        }
        let bytes = control.bytes_read.load(Ordering::Relaxed);
        metrics.bytes_read.inc_by(bytes - last_bytes);
        last_bytes = bytes;
        if let Some(p) = progress {
            p.set_position(bytes);
            p.set_message(format!("{} events, {} alerts", summary.decode.total_events(), summary.alerts));
        }
        if last_checkpoint.elapsed() >= control.checkpoint_interval {
            if !committers.is_empty() {
                checkpoint(engine, outputs, &mut checkpoints, committers, metrics, control, false, &mut summary)?;
            } else if let Some(lake) = outputs.lake.as_mut().filter(|l| l.rolls_by_age()) {
                // A service reading stdin or followed files has nothing to commit, but its rows
                // should still reach the lake within roll_age (stdin cannot be read again).
                lake.checkpoint().with_context(|| format!("{} could not write; stopping", lake.name()))?;
            }
            last_checkpoint = Instant::now();
        }
    }
    if committers.is_empty() {
        // The input ended: every open window fires.
        let fired = engine.finish();
        deliver(fired, engine, router, outputs, metrics, &mut summary)?;
    }
    // The lake writes what it holds before the last commit, which may then go through it.
    if let Some(lake) = outputs.lake.as_mut() {
        lake.finish()?;
        summary.lake = Some(lake.stats.clone());
    }
    if committers.is_empty() {
        for sink in outputs.all() {
            sink.finish().with_context(|| format!("finishing sink {}", sink.name()))?;
        }
        save_state(engine, control)?;
    } else {
        // What is durable is committed first (a spool counts), then spools drain: a stop cut
        // short while Azure is away loses no commit it could have made.
        checkpoint(engine, outputs, &mut checkpoints, committers, metrics, control, true, &mut summary)?;
        for sink in outputs.all() {
            sink.finish().with_context(|| format!("finishing sink {}", sink.name()))?;
        }
        summary.held_chunks = checkpoints.held();
        if summary.held_chunks > 0 {
            log::warn!(
                "stopping with open windows: {} left uncommitted ({}); a restart reads them again",
                summary.held_chunks,
                checkpoints.describe_held()
            );
        }
    }
    summary.duplicate_events = dedup.dropped;
    metrics.duplicate_events.inc_by(dedup.dropped);
    update_rule_metrics(engine, metrics, &mut summary);
    summary.peak_rss = crate::memory::peak_rss();
    Ok(summary)
}

/// Flushes every sink, then commits the offsets no open window needs. A sink that cannot
/// confirm delivery skips this checkpoint (offsets stay where they were) unless `last`.
#[allow(clippy::too_many_arguments)]
fn checkpoint(
    engine: &mut Engine,
    outputs: &mut Outputs,
    checkpoints: &mut Checkpoints,
    committers: &[Box<dyn OffsetCommitter>],
    metrics: &Metrics,
    control: &Control,
    last: bool,
    summary: &mut Summary,
) -> Result<()> {
    for sink in outputs.all() {
        if let Err(e) = sink.flush() {
            metrics.checkpoints_skipped.inc();
            let e = e.context(format!("sink {} did not confirm delivery; offsets stay uncommitted", sink.name()));
            if last {
                return Err(e);
            }
            log::warn!("{e:#}");
            return Ok(());
        }
    }
    // A lake that cannot write (after object_store's own retries) stops the run: the rows it
    // could not write are read again from the last commit, which never passed them.
    if let Some(lake) = outputs.lake.as_mut() {
        lake.release_unowned(|topic, partition| committers.iter().any(|c| c.owns(topic, partition)));
        lake.checkpoint().with_context(|| format!("{} could not write; stopping, offsets stay uncommitted", lake.name()))?;
    }
    // Every alert so far is delivered: the histories that decided them may be saved. A failure
    // costs baselines after a restart, not data: say so and go on.
    if let Err(e) = save_state(engine, control) {
        log::warn!("{e:#}; first-sighting histories stay in memory until the next checkpoint");
    }
    let oldest = engine.oldest_open_window();
    let mut safe = checkpoints.release(oldest);
    // A commit does not pass rows the lake still holds in open files.
    if let Some(lake) = outputs.lake.as_ref() {
        for o in safe.iter_mut() {
            if let Some(held) = lake.hold_back(&o.topic, o.partition) {
                o.next = o.next.min(held);
                o.first = o.next;
            }
        }
    }
    log::debug!(
        "checkpoint: oldest open window {}, held back: {}",
        if oldest == i64::MAX { "none".to_string() } else { format_nanos(oldest) },
        checkpoints.describe_held()
    );
    if safe.is_empty() {
        return Ok(());
    }
    for c in committers {
        if let Err(e) = c.commit(&safe, last) {
            log::warn!("{e:#}");
        }
    }
    summary.committed = safe;
    Ok(())
}

fn save_state(engine: &mut Engine, control: &Control) -> Result<()> {
    match &control.state_dir {
        Some(dir) => engine.save_state(dir).context("saving rule state"),
        None => Ok(()),
    }
}

fn update_rule_metrics(engine: &Engine, metrics: &Metrics, summary: &mut Summary) {
    metrics.future_events.inc_by(engine.future_events.saturating_sub(metrics.future_events.get()));
    summary.future_events = engine.future_events;
    summary.late_events = 0;
    summary.evictions = 0;
    summary.rule_errors = 0;
    let mut busy: Vec<(String, Duration)> = engine.stats().map(|(r, s)| (r.id.clone(), s.busy)).collect();
    busy.sort_by(|a, b| b.1.cmp(&a.1));
    busy.truncate(if std::env::var_os("CROWSNEST_ALL_RULE_TIMES").is_some() { usize::MAX } else { 3 });
    summary.slowest_rules = busy;
    for (cluster, addresses) in engine.cluster_egress() {
        metrics.cluster_egress_addresses.with_label_values(&[cluster.as_str()]).set(addresses.len() as i64);
    }
    for (rule, s) in engine.stats() {
        let id = rule.id.as_str();
        let set = |c: &prometheus::IntCounterVec, v: u64| {
            let c = c.with_label_values(&[id]);
            c.inc_by(v.saturating_sub(c.get()));
        };
        set(&metrics.rule_matches, s.matches);
        set(&metrics.late_events, s.late_events);
        set(&metrics.rule_errors, s.errors);
        metrics.window_groups.with_label_values(&[id]).set(s.live_groups as i64);
        metrics.window_state_bytes.with_label_values(&[id]).set(s.state_bytes as i64);
        set(&metrics.window_evictions, s.evictions);
        summary.late_events += s.late_events;
        summary.evictions += s.evictions;
        summary.rule_errors += s.errors;
    }
}

fn handle(
    d: Decoded,
    engine: &mut Engine,
    router: &mut AlertRouter,
    outputs: &mut Outputs,
    metrics: &Metrics,
    dedup: &mut Deduplicator,
    checkpoints: &mut Checkpoints,
    summary: &mut Summary,
) -> Result<()> {
    for (cat, n) in &d.stats.events {
        let table = InsightsTable::by_la_name(cat).map_or(KUBE_AUDIT, |t| t.name);
        metrics.events_decoded.with_label_values(&[table, cat]).inc_by(*n);
    }
    for (cat, n) in &d.stats.skipped {
        metrics.records_skipped.with_label_values(&[cat]).inc_by(*n);
    }
    summary.decode.merge(&d.stats);
    if !d.dead.is_empty() {
        for dl in &d.dead {
            metrics.dead_letters.with_label_values(&[dl.reason.as_str()]).inc();
            *summary.dead_letters.entry(dl.reason).or_default() += 1;
        }
        match outputs.dead_letters.as_mut() {
            Some(out) => {
                let records: Vec<Record> = d.dead.iter().map(|dl| Record::new(format!("{} {}", dl.source, dl.position), dl)).collect();
                out.send(&records).with_context(|| format!("writing dead letters to {}", out.name()))?
            }
            None => {
                for dl in d.dead.iter().take(3) {
                    log::warn!("dead letter ({}) at {} {}: {}", dl.reason.as_str(), dl.source, dl.position, dl.detail);
                }
            }
        }
    }
    if let (true, Some(stream)) = (d.opens_stream, &d.stream) {
        engine.open_stream(stream);
    }
    let mut newest_event = i64::MIN;
    if !d.batches.is_empty() {
        // The clock sees every event that arrived; the dedup only decides what is evaluated.
        engine.observe(&d.batches, d.stream.as_ref());
        newest_event = engine.last_batch_max_time();
        let batches =
            d.batches.into_iter().map(|b| Ok(TableBatch { batch: dedup.apply(b.table, b.batch)?, ..b })).collect::<Result<Vec<_>>>()?;
        if let Some(lake) = outputs.lake.as_mut() {
            for b in &batches {
                lake.write(b.table, &b.batch, d.offsets.as_ref()).with_context(|| format!("writing to {}", lake.name()))?;
            }
        }
        if let Some(events) = outputs.events.as_mut() {
            for b in batches.iter().filter(|b| b.table == KUBE_AUDIT) {
                events.forward(&b.batch).with_context(|| format!("forwarding events to {}", events.sink.name()))?;
            }
        }
        let t = Instant::now();
        let alerts = engine.evaluate(&batches);
        summary.engine_time += t.elapsed();
        let newest = engine.max_event_time();
        if newest > i64::MIN {
            metrics.watermark_seconds.set(newest / 1_000_000_000);
            let now = chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0);
            metrics.watermark_lag_seconds.set((now - newest) / 1_000_000_000);
        }
        deliver(alerts, engine, router, outputs, metrics, summary)?;
        write_late(engine.take_late(), outputs)?;
        update_rule_metrics(engine, metrics, summary);
    }
    if let Some(o) = &d.offsets {
        checkpoints.handled(o, newest_event);
        if let Some(lake) = outputs.lake.as_mut() {
            lake.handled(o).with_context(|| format!("writing to {}", lake.name()))?;
        }
    }
    Ok(())
}

/// Late events as JSON lines: the rule, its watermark then, and the event's every column.
fn write_late(late: Vec<LateRows>, outputs: &mut Outputs) -> Result<()> {
    let Some(out) = outputs.late_events.as_mut() else {
        return Ok(());
    };
    let mut records = Vec::new();
    for l in late {
        let ids = l.rows.column_by_name("audit_id").map(|c| c.as_string::<i32>().clone());
        for (i, row) in crate::sink::json_rows(&l.rows)?.iter().enumerate() {
            let audit_id = ids.as_ref().filter(|a| a.is_valid(i)).map_or("", |a| a.value(i));
            let head = serde_json::json!({"rule_id": l.rule_id, "watermark": format_nanos(l.closed_until), "audit_id": audit_id});
            let mut json = serde_json::to_vec(&head)?;
            json.pop(); // the closing brace: the event goes in as it was written
            json.extend_from_slice(b",\"event\":");
            json.extend_from_slice(row);
            json.push(b'}');
            records.push(Record { key: format!("{} {audit_id}", l.rule_id), json });
        }
    }
    if records.is_empty() {
        return Ok(());
    }
    out.send(&records).with_context(|| format!("writing late events to {}", out.name()))
}

fn deliver(
    alerts: Vec<Alert>,
    engine: &mut Engine,
    router: &mut AlertRouter,
    outputs: &mut Outputs,
    metrics: &Metrics,
    summary: &mut Summary,
) -> Result<()> {
    let (dup0, sup0) = (router.duplicates, router.suppressed);
    router.count_suppressed_upstream(engine.take_suppressed());
    if alerts.is_empty() {
        metrics.alerts_suppressed.inc_by(router.suppressed - sup0);
        summary.alerts_suppressed = router.suppressed;
        return Ok(());
    }
    let alerts = router.route(alerts);
    metrics.alerts_duplicate.inc_by(router.duplicates - dup0);
    metrics.alerts_suppressed.inc_by(router.suppressed - sup0);
    summary.alerts_duplicate = router.duplicates;
    summary.alerts_suppressed = router.suppressed;
    let mut by_rule: HashMap<(&str, &str), u64> = HashMap::new();
    for a in &alerts {
        *by_rule.entry((&a.rule_id, &a.severity)).or_default() += 1;
        *summary.alerts_by_rule.entry(a.rule_id.clone()).or_default() += 1;
    }
    for ((rule, sev), n) in by_rule {
        metrics.alerts.with_label_values(&[rule, sev]).inc_by(n);
    }
    summary.alerts += alerts.len() as u64;
    if let Some(lake) = outputs.lake.as_mut() {
        lake.write_alerts(&alerts).with_context(|| format!("writing alerts to {}", lake.name()))?;
    }
    let records: Vec<Record> = alerts.iter().map(|a| Record::new(a.id.clone(), a)).collect();
    for sink in outputs.sinks.iter_mut() {
        sink.send(&records).with_context(|| format!("sink {} failed; stopping so no alert is lost", sink.name()))?;
    }
    Ok(())
}
