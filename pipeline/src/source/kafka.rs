//! Kafka, and Azure Event Hubs through its Kafka endpoint: a consumer-group member that cuts
//! messages into per-partition chunks and commits offsets only when the pipeline says they are
//! safe (see [`crate::pipeline`], "checkpoints").
//!
//! A message holds an AKS `{"records":[…]}` envelope, one audit Event or EventList, or JSON
//! lines of those; the decoder tells them apart as it does for files.

use std::collections::{HashMap, HashSet};
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaResult;
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::statistics::Statistics;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::ClientContext;
use serde::Deserialize;

use crate::deadletter::SAMPLE_BYTES;
use crate::kafka::{set_default, Connection, Role};
use crate::metrics::Metrics;

use super::{starts_multiline_document, ByteCounter, Chunk, DocRef, FramingLimits, OffsetCommitter, Source, SourceOffsets};

/// Where a consumer group with no committed offset starts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StartPosition {
    /// The oldest retained message: nothing in the topic is skipped (the default).
    #[default]
    Earliest,
    /// Only messages produced from now on.
    Latest,
}

impl std::str::FromStr for StartPosition {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "earliest" => Ok(StartPosition::Earliest),
            "latest" => Ok(StartPosition::Latest),
            other => anyhow::bail!("start={other:?}: expected earliest or latest"),
        }
    }
}

/// How long a partition's partly filled chunk waits for more messages before it is handed
/// over: up to this much latency on the alerts of a partition too quiet to fill a chunk.
pub const DEFAULT_LINGER: Duration = Duration::from_millis(200);

#[derive(Debug, Clone)]
pub struct KafkaSourceOptions {
    pub connection: Connection,
    pub topics: Vec<String>,
    pub group: String,
    pub start: StartPosition,
    /// How long a partly filled chunk may wait for more messages before it is handed over.
    pub linger: Duration,
}

type PartitionKey = (String, i32);

/// The partitions this member owns, and what it has committed of them. Shared by the rebalance
/// callbacks (reader thread) and the committer (pipeline thread).
#[derive(Default)]
struct Ownership {
    assigned: HashSet<PartitionKey>,
    /// The newest offset the pipeline declared safe, per partition.
    safe: HashMap<PartitionKey, i64>,
    committed: HashMap<PartitionKey, i64>,
    /// Partitions assigned since the source last looked: each is announced to the pipeline.
    newly_assigned: Vec<PartitionKey>,
    /// Consumer lag per partition, from librdkafka's statistics.
    lag: HashMap<PartitionKey, i64>,
}

pub struct SourceContext {
    owned: Arc<Mutex<Ownership>>,
    metrics: Metrics,
}

impl ClientContext for SourceContext {
    fn stats(&self, stats: Statistics) {
        let mut lag = HashMap::new();
        for (topic, t) in &stats.topics {
            for (p, part) in &t.partitions {
                if *p >= 0 && part.consumer_lag >= 0 {
                    self.metrics.kafka_consumer_lag.with_label_values(&[topic.as_str(), &p.to_string()]).set(part.consumer_lag);
                    lag.insert((topic.clone(), *p), part.consumer_lag);
                }
            }
        }
        self.owned.lock().expect("ownership lock").lag = lag;
    }

    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        // Broker down, connection refused…: librdkafka retries by itself; say so once in a while.
        self.metrics.kafka_consumer_errors.inc();
        if crate::kafka::worth_logging(self.metrics.kafka_consumer_errors.get()) {
            log::warn!("kafka consumer: {error} ({reason}); retrying");
        }
    }
}

impl ConsumerContext for SourceContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Revoke(tpl) => {
                self.metrics.kafka_rebalances.with_label_values(&["revoke"]).inc();
                // Commit what is already safe before another member takes the partitions over;
                // what is still in flight here will be read again there (at-least-once).
                let mut own = self.owned.lock().expect("ownership lock");
                let mut commit = TopicPartitionList::new();
                let mut done = Vec::new();
                for e in tpl.elements() {
                    let key = (e.topic().to_string(), e.partition());
                    if let Some(&safe) = own.safe.get(&key) {
                        if own.committed.get(&key).is_none_or(|&c| c < safe)
                            && commit.add_partition_offset(e.topic(), e.partition(), Offset::Offset(safe)).is_ok()
                        {
                            done.push((key.clone(), safe));
                        }
                    }
                    own.assigned.remove(&key);
                }
                if commit.count() > 0 {
                    match consumer.commit(&commit, CommitMode::Sync) {
                        Ok(()) => {
                            self.metrics.offset_commits.with_label_values(&["ok"]).inc();
                            own.committed.extend(done);
                        }
                        Err(e) => {
                            self.metrics.offset_commits.with_label_values(&["error"]).inc();
                            log::warn!("kafka: committing before giving up partitions failed: {e}");
                        }
                    }
                }
                log::info!("kafka: partitions revoked: {}", describe(tpl));
            }
            Rebalance::Error(e) => {
                self.metrics.kafka_rebalances.with_label_values(&["error"]).inc();
                log::warn!("kafka: rebalance error: {e}");
            }
            Rebalance::Assign(_) => {}
        }
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance {
            self.metrics.kafka_rebalances.with_label_values(&["assign"]).inc();
            let mut own = self.owned.lock().expect("ownership lock");
            for e in tpl.elements() {
                let key = (e.topic().to_string(), e.partition());
                // Whatever we knew of this partition is from an earlier ownership.
                own.safe.remove(&key);
                own.committed.remove(&key);
                own.newly_assigned.push(key.clone());
                own.assigned.insert(key);
            }
            log::info!("kafka: partitions assigned: {}", describe(tpl));
        }
    }

    fn commit_callback(&self, result: KafkaResult<()>, _offsets: &TopicPartitionList) {
        if let Err(e) = result {
            self.metrics.offset_commits.with_label_values(&["error"]).inc();
            log::warn!("kafka: offset commit failed: {e} (the next checkpoint commits again)");
        }
    }
}

fn describe(tpl: &TopicPartitionList) -> String {
    let parts: Vec<String> = tpl.elements().iter().map(|e| format!("{}/{}", e.topic(), e.partition())).collect();
    if parts.is_empty() {
        "none".into()
    } else {
        parts.join(", ")
    }
}

/// A chunk being filled from one partition.
struct Filling {
    topic: Arc<str>,
    partition: i32,
    chunk: Chunk,
    started: Instant,
}

/// How long the pipeline may stay full before the partitions are paused (see `wait_while_full`).
const PAUSE_AFTER: Duration = Duration::from_secs(2);

pub struct KafkaSource {
    name: String,
    consumer: Arc<BaseConsumer<SourceContext>>,
    owned: Arc<Mutex<Ownership>>,
    limits: FramingLimits,
    linger: Duration,
    filling: Vec<Filling>,
    stop: Arc<AtomicBool>,
    paused: bool,
    /// Since when the pipeline has had no room for the next chunk (see `wait_while_full`).
    full_since: Option<Instant>,
    /// Per partition, the offset after the last message read: a later first offset is a gap.
    next_offset: HashMap<PartitionKey, i64>,
    /// Set by a consumer error (broker away): on recovery every partition is announced
    /// again, so the time the broker was away does not count as the partitions being idle.
    disrupted: bool,
    bytes: ByteCounter,
    metrics: Metrics,
}

impl KafkaSource {
    pub fn new(
        opts: &KafkaSourceOptions,
        limits: FramingLimits,
        bytes: ByteCounter,
        stop: Arc<AtomicBool>,
        metrics: Metrics,
    ) -> Result<Self> {
        let mut c = opts.connection.client_config(Role::Consumer)?;
        c.set("group.id", &opts.group);
        // Offsets are committed by the pipeline, never automatically.
        c.set("enable.auto.commit", "false").set("enable.auto.offset.store", "false");
        let start = match opts.start {
            StartPosition::Earliest => "earliest",
            StartPosition::Latest => "latest",
        };
        set_default(&mut c, "auto.offset.reset", start);
        set_default(&mut c, "statistics.interval.ms", "5000");
        // What librdkafka prefetches is memory too: keep it modest.
        set_default(&mut c, "queued.max.messages.kbytes", "16384");
        set_default(&mut c, "max.partition.fetch.bytes", "1048576");
        let owned = Arc::new(Mutex::new(Ownership::default()));
        let context = SourceContext { owned: owned.clone(), metrics: metrics.clone() };
        let consumer: BaseConsumer<SourceContext> = c.create_with_context(context).context("creating the Kafka consumer")?;
        let topics: Vec<&str> = opts.topics.iter().map(String::as_str).collect();
        consumer.subscribe(&topics).with_context(|| format!("subscribing to {}", opts.topics.join(",")))?;
        log::info!("kafka: consuming {} from {} as group {}", opts.topics.join(","), opts.connection.brokers, opts.group);
        Ok(KafkaSource {
            name: format!("kafka:{}", opts.topics.join(",")),
            consumer: Arc::new(consumer),
            owned,
            limits,
            linger: opts.linger,
            filling: Vec::new(),
            stop,
            paused: false,
            full_since: None,
            next_offset: HashMap::new(),
            disrupted: false,
            bytes,
            metrics,
        })
    }

    /// Frames one message into its partition's chunk.
    fn add(&mut self, m: &BorrowedMessage<'_>) {
        if std::mem::take(&mut self.disrupted) {
            let mut own = self.owned.lock().expect("ownership lock");
            let all: Vec<PartitionKey> = own.assigned.iter().cloned().collect();
            own.newly_assigned.extend(all);
        }
        let (topic, partition, offset) = (m.topic(), m.partition(), m.offset());
        let payload = m.payload().unwrap_or(&[]);
        self.note_offset(topic, partition, offset);
        self.metrics.kafka_messages_consumed.with_label_values(&[topic]).inc();
        self.metrics.kafka_bytes_consumed.with_label_values(&[topic]).inc_by(payload.len() as u64);
        self.bytes.fetch_add(payload.len() as u64, Ordering::Relaxed);
        let i = match self.filling.iter().position(|f| f.partition == partition && &*f.topic == topic) {
            Some(i) if self.filling[i].chunk.offsets.as_ref().is_some_and(|o| offset >= o.next) => i,
            found => {
                // A rewind (the partition was given back and is read again from its committed
                // offset): what was being filled will be read again, so drop it.
                if let Some(i) = found {
                    self.filling.swap_remove(i);
                }
                let topic: Arc<str> = topic.into();
                let source: Arc<str> = format!("kafka:{topic}/{partition}").into();
                self.filling.push(Filling {
                    topic: topic.clone(),
                    partition,
                    chunk: Chunk {
                        source,
                        unit: "offset",
                        buf: Vec::new(),
                        docs: Vec::new(),
                        offsets: Some(SourceOffsets { topic, partition, first: offset, next: offset }),
                        opens_stream: false,
                    },
                    started: Instant::now(),
                });
                self.filling.len() - 1
            }
        };
        let chunk = &mut self.filling[i].chunk;
        frame_message(chunk, payload, offset as u64, self.limits.max_document_bytes);
        chunk.offsets.as_mut().expect("kafka chunks have offsets").next = offset + 1;
    }

    /// Counts offsets skipped between two messages read in order. On a topic that is not
    /// compacted none should be: a gap means the broker did not return them (tansu 0.6 does
    /// this when a fetch starts inside a stored batch), so it is made visible, not silent.
    fn note_offset(&mut self, topic: &str, partition: i32, offset: i64) {
        // Looked up before inserting: one String per partition, not per message.
        let expected = match self.next_offset.iter_mut().find(|((t, p), _)| *p == partition && t == topic) {
            Some((_, next)) => std::mem::replace(next, offset + 1),
            None => {
                self.next_offset.insert((topic.to_string(), partition), offset + 1);
                return;
            }
        };
        if offset > expected {
            self.metrics.kafka_offset_gaps.with_label_values(&[topic]).inc_by((offset - expected) as u64);
            log::debug!("kafka: {topic}/{partition} skipped offsets {expected}..{offset}");
        }
    }

    /// The chunk to hand over now: a full one, or the oldest that has waited `linger`.
    fn ready(&mut self, flush_all: bool) -> Option<Chunk> {
        let full = self.filling.iter().position(|f| f.chunk.buf.len() >= self.limits.chunk_bytes);
        let oldest = (0..self.filling.len()).min_by_key(|&i| self.filling[i].started);
        let i = full.or(oldest.filter(|&i| flush_all || self.filling[i].started.elapsed() >= self.linger))?;
        Some(self.filling.swap_remove(i).chunk)
    }

    fn poll_once(&mut self, timeout: Duration) -> io::Result<()> {
        let consumer = self.consumer.clone();
        match consumer.poll(timeout) {
            None => Ok(()),
            Some(Ok(m)) => {
                self.add(&m);
                Ok(())
            }
            Some(Err(e)) => {
                if let Some(code) = e.rdkafka_error_code() {
                    if code == rdkafka::types::RDKafkaErrorCode::Fatal {
                        return Err(io::Error::other(format!("kafka consumer: fatal error: {e}")));
                    }
                }
                self.metrics.kafka_consumer_errors.inc();
                self.disrupted = true;
                if crate::kafka::worth_logging(self.metrics.kafka_consumer_errors.get()) {
                    log::warn!("kafka consumer: {e}");
                }
                Ok(())
            }
        }
    }

    fn set_paused(&mut self, pause: bool) {
        if self.paused == pause {
            return;
        }
        if let Ok(assigned) = self.consumer.assignment() {
            let r = if pause { self.consumer.pause(&assigned) } else { self.consumer.resume(&assigned) };
            if let Err(e) = r {
                log::warn!("kafka: {} failed: {e}", if pause { "pause" } else { "resume" });
            }
        }
        self.paused = pause;
        self.metrics.kafka_paused.set(pause as i64);
    }
}

/// Appends a message's documents to `chunk`: the whole payload when it is one document
/// (compact or pretty-printed), each non-blank line when it holds JSON lines. A payload above
/// `max` keeps only its first bytes and becomes a `too_large` dead letter.
pub(crate) fn frame_message(chunk: &mut Chunk, payload: &[u8], index: u64, max: usize) {
    let start = chunk.buf.len();
    if payload.len() > max {
        chunk.buf.extend_from_slice(&payload[..SAMPLE_BYTES.min(payload.len())]);
        chunk.docs.push(DocRef { index, start, end: chunk.buf.len(), oversize: Some(payload.len() as u64) });
        chunk.buf.push(b'\n');
        return;
    }
    chunk.buf.extend_from_slice(payload);
    chunk.buf.push(b'\n');
    let body = payload.trim_ascii();
    let first_line = memchr::memchr(b'\n', body).map(|i| &body[..i]);
    match first_line {
        Some(first) if !starts_multiline_document(first) => {
            let mut at = start;
            for line in payload.split(|&b| b == b'\n') {
                let end = at + line.len();
                if !line.trim_ascii().is_empty() {
                    chunk.docs.push(DocRef { index, start: at, end, oversize: None });
                }
                at = end + 1;
            }
        }
        _ => chunk.docs.push(DocRef { index, start, end: start + payload.len(), oversize: None }),
    }
}

impl Source for KafkaSource {
    fn name(&self) -> &str {
        &self.name
    }

    fn next_chunk(&mut self) -> io::Result<Option<Chunk>> {
        self.full_since = None;
        self.set_paused(false);
        loop {
            if self.stop.load(Ordering::Relaxed) {
                // What was read but not handed over is not committed: a restart reads it again.
                return Ok(None);
            }
            let assigned = self.owned.lock().expect("ownership lock").newly_assigned.pop();
            if let Some((topic, partition)) = assigned {
                // Assigned afresh: it starts wherever the group committed, not where we left it.
                self.next_offset.remove(&(topic.clone(), partition));
                let source: Arc<str> = format!("kafka:{topic}/{partition}").into();
                return Ok(Some(Chunk { source, unit: "offset", buf: Vec::new(), docs: Vec::new(), offsets: None, opens_stream: true }));
            }
            if let Some(chunk) = self.ready(false) {
                return Ok(Some(chunk));
            }
            let wait =
                self.filling.iter().map(|f| self.linger.saturating_sub(f.started.elapsed())).min().unwrap_or(Duration::from_millis(100));
            self.poll_once(wait.max(Duration::from_millis(1)))?;
        }
    }

    fn wait_while_full(&mut self) {
        // A short wait costs nothing: librdkafka stops prefetching at its own bounded queue and
        // heartbeats from its own thread. Only a longer one pauses the partitions and polls, so
        // the group goes on hearing from this member and rebalances are served. Pausing at once
        // would throw away the prefetched queue at every brief stall and fetch it again.
        let since = *self.full_since.get_or_insert_with(Instant::now);
        if since.elapsed() < PAUSE_AFTER {
            std::thread::sleep(Duration::from_millis(5));
            return;
        }
        self.set_paused(true);
        if let Err(e) = self.poll_once(Duration::from_millis(20)) {
            log::error!("{e}");
        }
    }

    fn committer(&self) -> Option<Box<dyn OffsetCommitter>> {
        Some(Box::new(KafkaCommitter { consumer: self.consumer.clone(), owned: self.owned.clone(), metrics: self.metrics.clone() }))
    }
}

struct KafkaCommitter {
    consumer: Arc<BaseConsumer<SourceContext>>,
    owned: Arc<Mutex<Ownership>>,
    metrics: Metrics,
}

impl OffsetCommitter for KafkaCommitter {
    fn owns(&self, topic: &str, partition: i32) -> bool {
        self.owned.lock().expect("ownership lock").assigned.contains(&(topic.to_string(), partition))
    }

    fn streams_with_backlog(&self) -> Vec<Arc<str>> {
        let own = self.owned.lock().expect("ownership lock");
        own.lag
            .iter()
            .filter(|(key, &lag)| lag > 0 && own.assigned.contains(*key))
            .map(|((topic, partition), _)| Arc::from(format!("kafka:{topic}/{partition}")))
            .collect()
    }

    fn commit(&self, offsets: &[SourceOffsets], wait: bool) -> Result<()> {
        let mut own = self.owned.lock().expect("ownership lock");
        let mut tpl = TopicPartitionList::new();
        let mut done = Vec::new();
        for o in offsets {
            let key = (o.topic.to_string(), o.partition);
            if !own.assigned.contains(&key) {
                continue; // given up in a rebalance: its new owner commits it
            }
            own.safe.insert(key.clone(), o.next);
            if !wait && own.committed.get(&key).is_some_and(|&c| c >= o.next) {
                continue;
            }
            tpl.add_partition_offset(&o.topic, o.partition, Offset::Offset(o.next))?;
            done.push((key, o.next));
        }
        if tpl.count() == 0 {
            return Ok(());
        }
        let mode = if wait { CommitMode::Sync } else { CommitMode::Async };
        match self.consumer.commit(&tpl, mode) {
            Ok(()) => {
                self.metrics.offset_commits.with_label_values(&["ok"]).inc();
                own.committed.extend(done);
                log::debug!("kafka: committed {}", describe(&tpl));
                Ok(())
            }
            Err(e) => {
                self.metrics.offset_commits.with_label_values(&["error"]).inc();
                Err(anyhow::anyhow!("committing offsets {}: {e}", describe(&tpl)))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk() -> Chunk {
        Chunk { source: "kafka:t/0".into(), unit: "offset", buf: Vec::new(), docs: Vec::new(), offsets: None, opens_stream: false }
    }

    fn docs(c: &Chunk) -> Vec<&str> {
        c.docs.iter().map(|d| std::str::from_utf8(&c.buf[d.start..d.end]).unwrap()).collect()
    }

    #[test]
    fn messages_are_framed_as_one_document_or_as_json_lines() {
        let mut c = chunk();
        frame_message(&mut c, br#"{"records":[{"a":1}]}"#, 7, 1 << 20);
        frame_message(&mut c, b"{\"kind\":\"Event\"}\n\n{\"kind\":\"Event\",\"x\":2}\n", 8, 1 << 20);
        frame_message(&mut c, b"{\n  \"kind\": \"EventList\",\n  \"items\": []\n}\n", 9, 1 << 20);
        assert_eq!(
            docs(&c),
            [
                r#"{"records":[{"a":1}]}"#,
                r#"{"kind":"Event"}"#,
                r#"{"kind":"Event","x":2}"#,
                "{\n  \"kind\": \"EventList\",\n  \"items\": []\n}\n"
            ]
        );
        assert_eq!(c.docs.iter().map(|d| d.index).collect::<Vec<_>>(), [7, 8, 8, 9]);
    }

    #[test]
    fn an_oversize_message_keeps_only_a_sample() {
        let mut c = chunk();
        let big = vec![b'x'; 5000];
        frame_message(&mut c, &big, 3, 1024);
        assert_eq!(c.docs[0].oversize, Some(5000));
        assert_eq!(c.docs[0].end - c.docs[0].start, SAMPLE_BYTES);
    }
}
