//! The async side of the Event Hubs source: a supervisor that keeps an `EventProcessor` running
//! (reconnecting with backoff when it fails), one task per partition this instance owns that
//! cuts messages into chunks, and a watcher that reads each owned partition's lag.

use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use azure_core::credentials::TokenCredential;
use azure_core_amqp::message::AmqpMessageBody;
use azure_core_amqp::AmqpValue;
use azure_messaging_eventhubs::error::ErrorKind;
use azure_messaging_eventhubs::models::{ReceivedEventData, StartPositions};
use azure_messaging_eventhubs::processor::PartitionClient;
use azure_messaging_eventhubs::{ConsumerClient, EventProcessor, ProcessorStrategy, StartLocation, StartPosition};
use azure_messaging_eventhubs_checkpointstore_blob::BlobCheckpointStore;
use futures::StreamExt;
use tokio::sync::mpsc::UnboundedSender;
use tokio::sync::watch;

use super::config::EventHubsConfig;
use super::leader::Lease;
use super::ownership::{still_owned, Owned};
use super::Shared;
use crate::source::kafka::{frame_message, StartPosition as Start};
use crate::source::{Chunk, SourceOffsets};

/// Longest wait between two attempts to reach the hub or the checkpoint store.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// How often owned partitions' lag is read from their properties.
const LAG_EVERY: Duration = Duration::from_secs(5);
/// The longest wait for one call to the service: SDK 0.15 never answers a management call
/// whose connection went away meanwhile.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Keeps a processor running until the pipeline stops: a failed connection or processor round
/// is logged, counted, and retried after a backoff that doubles up to [`MAX_BACKOFF`].
pub(super) async fn supervise(
    shared: Arc<Shared>,
    credential: Arc<dyn TokenCredential>,
    store: Arc<BlobCheckpointStore>,
    tx: SyncSender<Chunk>,
    lease: Option<Lease>,
) {
    let lease = lease.map(Rc::new);
    let mut lost = match &lease {
        Some(lease) => match lead(&shared, lease.clone()).await {
            Some(lost) => Some(lost),
            None => return,
        },
        None => {
            shared.metrics.eventhubs_reading.set(1);
            None
        }
    };
    let mut backoff = Duration::from_secs(1);
    loop {
        if shared.stop.load(Ordering::Relaxed) {
            break;
        }
        let started = Instant::now();
        let outcome = session(&shared, &credential, &store, &tx, &mut lost).await;
        forget_partitions(&shared, "the processor stopped");
        match outcome {
            Ok(()) => break,
            Err((kind @ "lease", e)) => {
                // Reading on would miss what the new reader reads: stop, and say why.
                shared.metrics.eventhubs_errors.with_label_values(&[kind]).inc();
                let msg = format!("event hubs: {e:#}; stopping (a restarted instance stands by, then resumes from the checkpoints)");
                log::error!("{msg}");
                *shared.fatal.lock().expect("fatal lock") = Some(msg);
                return;
            }
            Err((kind, e)) => {
                shared.metrics.eventhubs_errors.with_label_values(&[kind]).inc();
                // A session that ran a while was healthy: start the backoff over.
                if started.elapsed() > MAX_BACKOFF * 2 {
                    backoff = Duration::from_secs(1);
                }
                log::warn!("event hubs: {}; retrying in {} s", crate::url::hide_signatures(&format!("{e:#}")), backoff.as_secs());
                if sleep_unless_stopped(&shared, backoff).await {
                    break;
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
    if let Some(lease) = lease {
        lease.release().await;
    }
}

/// Standby until the reader lease is ours, then renews it in the background. The receiver
/// turns true if the lease is lost; None when the pipeline stopped while standing by.
async fn lead(shared: &Arc<Shared>, lease: Rc<Lease>) -> Option<watch::Receiver<bool>> {
    let mut said = false;
    loop {
        match lease.acquire(&shared.cfg).await {
            Ok(true) => break,
            Ok(false) if !said => {
                log::warn!(
                    "event hubs: standing by: another instance of group {} reads {} (this one takes over if its lease runs out)",
                    shared.cfg.group,
                    shared.hub
                );
                said = true;
            }
            Ok(false) => {}
            Err(e) => {
                shared.metrics.eventhubs_errors.with_label_values(&["lease"]).inc();
                log::warn!("event hubs: {e:#}");
            }
        }
        if sleep_unless_stopped(shared, lease.renew_every()).await {
            return None;
        }
    }
    log::warn!("event hubs: this instance reads every partition of {} (it holds the reader lease)", shared.hub);
    shared.metrics.eventhubs_reading.set(1);
    let (lost_tx, lost) = watch::channel(false);
    let shared = shared.clone();
    tokio::task::spawn_local(async move {
        let mut renewed = Instant::now();
        loop {
            if sleep_unless_stopped(&shared, lease.renew_every()).await {
                return;
            }
            match lease.renew(&shared.cfg).await {
                Ok(true) => renewed = Instant::now(),
                Ok(false) => break,
                Err(e) => {
                    shared.metrics.eventhubs_errors.with_label_values(&["lease"]).inc();
                    log::warn!("event hubs: {e:#}");
                    if renewed.elapsed() >= lease.duration() {
                        break;
                    }
                }
            }
        }
        shared.metrics.eventhubs_reading.set(0);
        let _ = lost_tx.send(true);
    });
    Some(lost)
}

/// Resolves when the reader lease is lost (never without one).
async fn lease_lost(lost: &mut Option<watch::Receiver<bool>>) {
    match lost {
        Some(rx) => {
            let _ = rx.wait_for(|lost| *lost).await;
        }
        None => std::future::pending().await,
    }
}

/// Sleeps `d`; true when the pipeline stopped meanwhile.
async fn sleep_unless_stopped(shared: &Shared, d: Duration) -> bool {
    let until = Instant::now() + d;
    while Instant::now() < until {
        if shared.stop.load(Ordering::Relaxed) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100).min(until - Instant::now())).await;
    }
    shared.stop.load(Ordering::Relaxed)
}

async fn stopped(shared: &Shared) {
    while !shared.stop.load(Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Opens a consumer client on the configured hub and group, as `instance` (see
/// `Shared::instance`).
pub(super) async fn open_consumer(cfg: &EventHubsConfig, instance: &str, credential: &Arc<dyn TokenCredential>) -> Result<ConsumerClient> {
    let mut b = ConsumerClient::builder().with_consumer_group(cfg.group.clone()).with_application_id(instance.to_string());
    if let Some(e) = &cfg.endpoint {
        b = b.with_custom_endpoint(e.clone());
    }
    tokio::time::timeout(CALL_TIMEOUT, b.open(&cfg.namespace, cfg.hub.clone(), credential.clone()))
        .await
        .map_err(|_| anyhow!("no answer within {} s", CALL_TIMEOUT.as_secs()))?
        .map_err(|e| anyhow!("{}", super::validate::explain(&e, cfg)))
        .with_context(|| format!("connecting to event hub {} in {}", cfg.hub, cfg.namespace))
}

/// One processor's life: claims partitions, starts a reader for each one handed over, and
/// ends when the processor fails (Err, with the metric's kind) or the pipeline stops (Ok).
async fn session(
    shared: &Arc<Shared>,
    credential: &Arc<dyn TokenCredential>,
    store: &Arc<BlobCheckpointStore>,
    tx: &SyncSender<Chunk>,
    lost: &mut Option<watch::Receiver<bool>>,
) -> std::result::Result<(), (&'static str, anyhow::Error)> {
    let cfg = &shared.cfg;
    let consumer = open_consumer(cfg, &shared.instance, credential).await.map_err(|e| ("connect", e))?;
    // Partition properties (lag) through a connection of their own: the processor owns its client.
    let properties = open_consumer(cfg, &shared.instance, credential).await.map_err(|e| ("connect", e))?;
    let start = StartPosition {
        location: match cfg.start {
            Start::Earliest => StartLocation::Earliest,
            Start::Latest => StartLocation::Latest,
        },
        // A checkpoint names the last message handled: reading resumes after it.
        inclusive: false,
    };
    let (watched, owned) = super::ownership::WatchedStore::new(store.clone());
    let processor = EventProcessor::builder()
        .with_load_balancing_strategy(ProcessorStrategy::Greedy)
        .with_update_interval(to_sdk(cfg.balance_interval()))
        .with_partition_expiration_duration(to_sdk(cfg.ownership_expiry()))
        .with_prefetch(cfg.prefetch)
        .with_start_positions(StartPositions { default: start, ..Default::default() })
        .build(consumer, watched);
    // Building reads the hub's partitions: bounded, as every management call here.
    let processor = tokio::time::timeout(CALL_TIMEOUT, processor)
        .await
        .map_err(|_| ("connect", anyhow!("the hub's properties: no answer within {} s", CALL_TIMEOUT.as_secs())))?
        .map_err(|e| ("connect", anyhow!("starting the event processor: {}", super::validate::explain(&e, cfg))))?;
    log::info!("event hubs: processor started on {} (group {})", cfg.hub, cfg.group);
    let mut run = tokio::task::spawn_local({
        let p = processor.clone();
        async move { p.run().await }
    });
    let mut readers = tokio::task::JoinSet::new();
    let lag = tokio::task::spawn_local(watch_lag(shared.clone(), properties));
    // A partition whose link fails (other than by being taken over) ends the session: SDK 0.15
    // does not reopen a dropped connection, and its processor would go on handing out
    // partitions on the dead one, each failing at once. A fresh client is the cure.
    let (failed_tx, mut failed) = tokio::sync::mpsc::unbounded_channel::<String>();
    let outcome = loop {
        tokio::select! {
            client = processor.next_partition_client() => match client {
                Ok(client) => {
                    readers.spawn_local(read_partition(client, shared.clone(), tx.clone(), failed_tx.clone(), owned.clone()));
                }
                Err(e) => break Err(("processor", anyhow!("waiting for partitions: {e}"))),
            },
            Some(why) = failed.recv() => break Err(("receive", anyhow!("{why}"))),
            _ = lease_lost(lost) => break Err(("lease", anyhow!("the reader lease of {} was lost (another instance holds it, or it could not be renewed in time)", shared.hub))),
            r = &mut run => break match r {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(("processor", anyhow!("the event processor stopped: {}", super::validate::explain(&e, cfg)))),
                Err(e) => Err(("processor", anyhow!("the event processor task failed: {e}"))),
            },
            _ = stopped(shared) => break Ok(()),
            // Reap finished readers so the set does not grow over a long run.
            Some(_) = readers.join_next(), if !readers.is_empty() => {}
        }
    };
    let _ = processor.shutdown().await;
    run.abort();
    lag.abort();
    readers.abort_all();
    outcome
}

fn to_sdk(d: Duration) -> azure_core::time::Duration {
    azure_core::time::Duration::milliseconds(d.as_millis() as i64)
}

/// Forgets every partition (their readers are gone): the next processor claims them again.
fn forget_partitions(shared: &Shared, why: &str) {
    let mut parts = shared.partitions();
    if !parts.is_empty() {
        log::info!("event hubs: releasing partitions {:?}: {why}", sorted_keys(&parts));
        for p in parts.keys() {
            shared.metrics.eventhubs_lag.with_label_values(&[&*shared.hub, &p.to_string()]).set(0);
        }
        shared.metrics.eventhubs_ownership.with_label_values(&[&*shared.hub, "lost"]).inc_by(parts.len() as u64);
    }
    parts.clear();
}

fn sorted_keys(parts: &std::collections::HashMap<i32, super::PartitionState>) -> Vec<i32> {
    let mut v: Vec<i32> = parts.keys().copied().collect();
    v.sort_unstable();
    v
}

/// A chunk being filled from one partition.
struct Filling {
    chunk: Chunk,
    started: Instant,
    /// The service's offset of the chunk's last message.
    last_offset: String,
}

/// Reads one owned partition until it is taken away, its link fails or the pipeline stops.
async fn read_partition(
    client: Arc<PartitionClient>,
    shared: Arc<Shared>,
    tx: SyncSender<Chunk>,
    failed: UnboundedSender<String>,
    owned: Owned,
) {
    let Ok(partition) = client.get_partition_id().parse::<i32>() else {
        log::error!("event hubs: partition id {:?} is not a number; not reading it", client.get_partition_id());
        return;
    };
    let generation = shared.generation.fetch_add(1, Ordering::Relaxed) + 1;
    shared
        .partitions()
        .insert(partition, super::PartitionState { generation, ends: Default::default(), last_sequence: None, lag: 0, committed: None });
    shared.metrics.eventhubs_ownership.with_label_values(&[&*shared.hub, "claimed"]).inc();
    log::info!("event hubs: reading {}/{partition}", shared.hub);
    let source: Arc<str> = format!("eventhubs:{}/{partition}", shared.hub).into();
    // Announced first: until it delivers or goes idle, the partition holds the watermark back.
    let opens =
        Chunk { source: source.clone(), unit: "sequence number", buf: Vec::new(), docs: Vec::new(), offsets: None, opens_stream: true };
    let end = if !send(&tx, opens, &shared).await { End::Stopped } else { receive(&client, &shared, &tx, partition, &source, owned).await };
    let still_ours = {
        let mut parts = shared.partitions();
        let ours = parts.get(&partition).is_some_and(|o| o.generation == generation);
        if ours {
            parts.remove(&partition);
        }
        ours
    };
    if still_ours {
        shared.metrics.eventhubs_ownership.with_label_values(&[&*shared.hub, "lost"]).inc();
        shared.metrics.eventhubs_lag.with_label_values(&[&*shared.hub, &partition.to_string()]).set(0);
    }
    match end {
        End::Failed(e) if matches!(e.kind, ErrorKind::ConsumerDisconnected(_)) => {
            log::info!("event hubs: {}/{partition} was taken over by another instance", shared.hub)
        }
        End::Failed(e) => {
            let _ = failed.send(format!("reading {}/{partition} failed: {}", shared.hub, super::validate::explain(&e, &shared.cfg)));
        }
        End::Revoked => log::info!("event hubs: {}/{partition} went to another instance at the last balancing round", shared.hub),
        End::Stopped => log::info!("event hubs: stopped reading {}/{partition}", shared.hub),
    }
    // Closing takes the partition out of the processor's map of readers; without it the
    // processor would believe it is still being read and never hand it out again.
    if let Ok(client) = Arc::try_unwrap(client) {
        if let Err(e) = client.close().await {
            log::debug!("event hubs: closing {}/{partition}: {e}", shared.hub);
        }
    }
}

/// Why a partition's receive loop ended.
enum End {
    /// The pipeline stopped (or is gone).
    Stopped,
    /// The balancing round gave the partition to another instance.
    Revoked,
    Failed(azure_messaging_eventhubs::EventHubsError),
}

async fn receive(
    client: &PartitionClient,
    shared: &Shared,
    tx: &SyncSender<Chunk>,
    partition: i32,
    source: &Arc<str>,
    mut owned: Owned,
) -> End {
    let id = partition.to_string();
    let stream = client.stream_events();
    futures::pin_mut!(stream);
    let messages = shared.metrics.eventhubs_messages.with_label_values(&[&*shared.hub, &partition.to_string()]);
    let bytes = shared.metrics.eventhubs_bytes.with_label_values(&[&*shared.hub]);
    let mut filling: Option<Filling> = None;
    let mut last: Option<i64> = None;
    loop {
        let linger = filling.as_ref().map_or(Duration::from_secs(3600), |f| shared.linger.saturating_sub(f.started.elapsed()));
        tokio::select! {
            event = stream.next() => match event {
                Some(Ok(event)) => {
                    // SDK 0.15 silently re-attaches a failed link from the position it first
                    // started at, so a partition may start over: what is being filled comes
                    // again, and the positions noted for checkpoints belong to the first reading.
                    let sequence = event.sequence_number();
                    if sequence.is_some_and(|s| last.is_some_and(|l| s <= l)) {
                        log::info!("event hubs: {}/{partition} is read again from sequence number {}", shared.hub, sequence.unwrap_or_default());
                        filling = None;
                        if let Some(o) = shared.partitions().get_mut(&partition) {
                            o.ends.clear();
                        }
                    }
                    last = sequence.or(last);
                    let size = add(&mut filling, &event, shared, partition, source);
                    messages.inc();
                    bytes.inc_by(size as u64);
                    shared.bytes.fetch_add(size as u64, Ordering::Relaxed);
                    if filling.as_ref().is_some_and(|f| f.chunk.buf.len() >= shared.limits.chunk_bytes) && !hand_over(&mut filling, shared, partition, tx).await {
                        return End::Stopped;
                    }
                }
                Some(Err(e)) => return End::Failed(e),
                None => return End::Stopped,
            },
            _ = tokio::time::sleep(linger), if filling.is_some() => {
                if !hand_over(&mut filling, shared, partition, tx).await {
                    return End::Stopped;
                }
            }
            // What is being filled is dropped: the new owner reads it from the checkpoint.
            Ok(()) = owned.changed() => if !still_owned(&owned, &id) {
                return End::Revoked;
            },
            _ = stopped(shared) => return End::Stopped,
        }
    }
}

/// Frames one message into the partition's chunk; its body size.
fn add(filling: &mut Option<Filling>, event: &ReceivedEventData, shared: &Shared, partition: i32, source: &Arc<str>) -> usize {
    let raw = event.raw_amqp_message();
    // AKS diagnostic settings send one Data section per message; anything else is framed as it
    // comes and the decoder explains it (a Value holding a string is read as its text).
    let joined;
    let body: &[u8] = match &raw.body {
        AmqpMessageBody::Binary(parts) if parts.len() == 1 => &parts[0],
        AmqpMessageBody::Binary(parts) => {
            joined = parts.concat();
            &joined
        }
        AmqpMessageBody::Value(AmqpValue::String(s)) => s.as_bytes(),
        AmqpMessageBody::Value(AmqpValue::Binary(b)) => b,
        _ => &[],
    };
    let previous = filling.as_ref().and_then(|f| f.chunk.offsets.as_ref()).map(|o| o.next);
    // A message without a sequence number cannot come from the service; number it after the
    // previous one so its dead letter still says where it was.
    let sequence = event.sequence_number().or(previous).unwrap_or(0);
    let offset = event.offset().clone().unwrap_or_default();
    let f = filling.get_or_insert_with(|| Filling {
        chunk: Chunk {
            source: source.clone(),
            unit: "sequence number",
            buf: Vec::new(),
            docs: Vec::new(),
            offsets: Some(SourceOffsets { topic: shared.hub.clone(), partition, first: sequence, next: sequence }),
            opens_stream: false,
        },
        started: Instant::now(),
        last_offset: String::new(),
    });
    frame_message(&mut f.chunk, body, sequence.max(0) as u64, shared.limits.max_document_bytes);
    if let Some(o) = f.chunk.offsets.as_mut() {
        o.next = o.next.max(sequence + 1);
    }
    f.last_offset = offset;
    body.len()
}

/// Hands the filled chunk to the pipeline, noting where it ends for the committer first. False
/// when the pipeline is gone.
async fn hand_over(filling: &mut Option<Filling>, shared: &Shared, partition: i32, tx: &SyncSender<Chunk>) -> bool {
    let Some(f) = filling.take() else { return true };
    if let Some(o) = &f.chunk.offsets {
        if let Some(owned) = shared.partitions().get_mut(&partition) {
            owned.ends.push_back((o.next, f.last_offset));
            owned.last_sequence = Some(o.next - 1);
        }
    }
    send(tx, f.chunk, shared).await
}

/// Hands a chunk to the pipeline, waiting (without blocking the runtime) while the channel is
/// full: that wait is the back-pressure. False when the pipeline is gone or stopping.
async fn send(tx: &SyncSender<Chunk>, mut chunk: Chunk, shared: &Shared) -> bool {
    loop {
        match tx.try_send(chunk) {
            Ok(()) => return true,
            Err(TrySendError::Disconnected(_)) => return false,
            Err(TrySendError::Full(back)) => {
                if shared.stop.load(Ordering::Relaxed) {
                    return false;
                }
                chunk = back;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    }
}

/// Every few seconds, each owned partition's lag: the last sequence number the service holds
/// minus the last one received. A partition with lag is slow, not idle (see
/// `OffsetCommitter::streams_with_backlog`).
async fn watch_lag(shared: Arc<Shared>, client: ConsumerClient) {
    loop {
        tokio::time::sleep(LAG_EVERY).await;
        let owned: Vec<(i32, Option<i64>)> = shared.partitions().iter().map(|(p, o)| (*p, o.last_sequence)).collect();
        for (partition, last) in owned {
            let answer = tokio::time::timeout(CALL_TIMEOUT, client.get_partition_properties(&partition.to_string())).await;
            match answer.map_err(|_| format!("no answer within {} s", CALL_TIMEOUT.as_secs())).and_then(|r| r.map_err(|e| e.to_string())) {
                Ok(props) => {
                    let lag = if props.is_empty {
                        0
                    } else {
                        // Nothing received yet: everything from the start (or the checkpoint,
                        // which we cannot see from here) counts; the first chunk corrects it.
                        props.last_enqueued_sequence_number - last.unwrap_or(props.beginning_sequence_number - 1)
                    }
                    .max(0);
                    shared.metrics.eventhubs_lag.with_label_values(&[&*shared.hub, &partition.to_string()]).set(lag);
                    if let Some(o) = shared.partitions().get_mut(&partition) {
                        o.lag = lag;
                    }
                }
                Err(e) => {
                    shared.metrics.eventhubs_errors.with_label_values(&["properties"]).inc();
                    log::debug!("event hubs: reading the properties of {}/{partition}: {e}", shared.hub);
                }
            }
        }
    }
}
