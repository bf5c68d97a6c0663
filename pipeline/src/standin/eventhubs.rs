//! A stand-in for Azure Event Hubs' AMQP 1.0 endpoint, for the tests and the bench: a local
//! server on a loopback port (plain TCP, no TLS) that the real Azure SDK client
//! (`azure_messaging_eventhubs` 0.15, through `ConsumerClientBuilder::with_custom_endpoint`)
//! connects to as it would to `NAMESPACE.servicebus.windows.net:5671`. It is not Azure: it keeps
//! events in memory. It is strict like the service, refusing with the service's error conditions
//! what the service refuses, so that a client bug fails a test instead of passing against a
//! lenient fake.
//!
//! What it implements (the consumer side, what the SDK's `ConsumerClient`, `EventReceiver` and
//! `EventProcessor` use):
//! - SASL ANONYMOUS only (another mechanism gets the `auth` outcome and no connection), as the
//!   service takes it for claims-based security. The client's open frame sets the limits
//!   (max-frame-size is the smaller of both; channel-max 4999 here, like the service).
//! - The `$cbs` node: `put-token` requests (`operation`, `type` "jwt" or
//!   "servicebus.windows.net:sastoken", `name` = the audience URL, `expiration` timestamp, the
//!   token as an AMQP value string), answered with `status-code` 202 (int), `status-description`
//!   "Accepted" and `correlation-id` = the request's `message-id`, on the session's link whose
//!   target is the request's `reply-to`. Any non-empty, unexpired token for an audience in this
//!   namespace is taken (there is no Entra here) and recorded for the connection; anything else
//!   is a 400 or 401 response. A token authorizes its audience and every path under it until it
//!   expires.
//! - The `$management` node: `READ` of `com.microsoft:eventhub` (`name`, `type`, `created_at`,
//!   `partition_count`, `partition_ids`) and of `com.microsoft:partition` (`name`, `type`,
//!   `partition`, `begin_sequence_number`, `last_enqueued_sequence_number`,
//!   `last_enqueued_offset`, `last_enqueued_time_utc`, `is_partition_empty`,
//!   `last_enqueued_sequence_number_epoch`), in the AMQP types the SDK insists on (longs,
//!   strings, timestamps, a boolean, an array of strings: it panics on another type). It takes a
//!   token put on the connection for the hub, a path above it or a path under it (the SDK's is
//!   ".../ConsumerGroups/G/$management"), and the request's `security_token`, when present, must
//!   be one of those tokens.
//! - Receiver links on `amqps://NAMESPACE/HUB/ConsumerGroups/GROUP/Partitions/N` (scheme and host
//!   optional, names case-insensitive as in the service), with the selector filter
//!   (`apache.org:selector-filter:string`, descriptor 0x0000468C00000004) on
//!   `amqp.annotation.x-opt-offset`, `x-opt-sequence-number` or `x-opt-enqueued-time`, `>` or
//!   `>=`, `'-1'` and `'@latest'` included; no filter is the start of the partition. Events go out
//!   as the service sends them: unsettled (the client accepts), the body as one Data section,
//!   message annotations `x-opt-sequence-number` (long, from 0, contiguous), `x-opt-offset`
//!   (string: the event's byte position in the partition, increasing but not contiguous) and
//!   `x-opt-enqueued-time` (timestamp, never decreasing within a partition); no more than the link
//!   credit allows, so a client that stops granting credit stops its link (the partition log is
//!   the only buffer). A detach or end from the client is answered at once, in kind.
//! - Owner levels (`com.microsoft:epoch` link property): a receiver with an epoch at least the
//!   highest on its partition and consumer group takes it over and the others are detached with
//!   `amqp:link:stolen`; a lower epoch, or none while an epoch receiver exists, is refused with
//!   `amqp:link:stolen`; a sixth receiver without epoch is `amqp:resource-limit-exceeded`.
//!
//! Refusals, the way the service refuses a link (attached with a null source, or target, then at
//! once detached with the error, AMQP 1.0 §2.6.3):
//! - no token for the entity on this connection: `amqp:unauthorized-access` ("Unauthorized
//!   access. 'Listen' claim(s) are required to perform this operation. ...");
//! - an unknown hub or consumer group, or an address that is no partition's: `amqp:not-found`
//!   ("The messaging entity '...' could not be found. ...");
//! - a partition id other than "0".."N-1": `com.microsoft:argument-out-of-range` ("The specified
//!   partition is invalid for an EventHub partition sender or receiver. It should be between 0
//!   and N-1.");
//! - a selector that does not parse, or an epoch that is not an integer: `amqp:invalid-field`; a
//!   sequence number or offset past the end of the partition: `com.microsoft:argument-error`
//!   ("The supplied sequence number '488' is invalid. The last sequence number in the system is
//!   '482'", the service's wording);
//! - a sender link (producing over AMQP is not modelled): `amqp:not-implemented`.
//!
//! Management errors are responses: 404 (`amqp:not-found`) for another hub, 401 without a token,
//! 400 for another partition, operation or entity type, with an `error-condition` property.
//! Filters of other types are left out of the attach answer, which is how AMQP says "not
//! supported" (fe2o3 then detaches with its `DesiredFilterNotSupported`).
//!
//! Not modelled: TLS; producing (tests publish with [`EventHubsStandin::publish`]); partition keys
//! and retention (nothing expires, `begin_sequence_number` is 0, or -1 while the partition is
//! empty); idle timeouts; redirects and geo-replication; token claims ('Listen' vs 'Send');
//! closing links when a token expires unrenewed (expiry counts at attach and request time only);
//! throttling (`com.microsoft:server-busy`) and quotas besides the 5 receivers without epoch;
//! tracking ids in error descriptions.
//!
//! Assumed rather than confirmed against the service: `amqp:invalid-field` for an unparseable
//! selector and `com.microsoft:argument-error` for a position past the end; the management error
//! statuses; an empty partition's -1 / "-1" properties; the 64-byte record overhead in offsets.
//!
//! What the SDK 0.15 does against it (see the tests), which a stand-in cannot change:
//! - Owner levels never reach the wire: azure_core_amqp sets the link properties on fe2o3's link
//!   builder before `.name()`, which resets them, so the `EventProcessor`'s epoch 0 is not sent
//!   and its receivers are plain ones (at most 5 per partition and consumer group).
//! - A `ConsumerClient` keeps one link per partition and hands it to every later receiver on that
//!   partition, whatever its start position.
//! - After the connection is dropped or closed by the service, every call on that
//!   `ConsumerClient` fails ("Connection dropped"), even once the service is back: the client
//!   must be built again. A management call in flight when the connection closes never returns
//!   (the SDK has no timeout there).
//! - A receive that fails on the link (a `link:stolen` detach included) re-attaches with the
//!   receiver's original start position, so events can come again.
//!
//! The stand-in runs its own tokio runtime on a background thread, so its API is synchronous and
//! works from plain `#[test]` functions, a bench, or async code. [`EventHubsStandin::shutdown`]
//! stops that runtime, which drops every connection at once (the service going away) and hands
//! back the events, so that [`EventHubsStandin::start_with`] can bring the service back on the
//! same port with the same data; [`EventHubsStandin::close_connections`] closes them properly
//! (`amqp:connection:forced`) and keeps serving.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::net::TcpListener as StdTcpListener;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use fe2o3_amqp::acceptor::sasl_acceptor::{SaslAcceptor, SaslServerFrame};
use fe2o3_amqp::acceptor::{ConnectionAcceptor, LinkAcceptor, LinkEndpoint, ListenerSessionHandle, SessionAcceptor};
use fe2o3_amqp::link::{DetachError, RecvError};
use fe2o3_amqp::types::definitions::{self, AmqpError, ConnectionError, ErrorCondition, LinkError, Role};
use fe2o3_amqp::types::messaging::{
    AmqpValue, ApplicationProperties, Body, Data, Message, MessageAnnotations, Properties, Source, Target, TargetArchetype,
};
use fe2o3_amqp::types::performatives::Attach;
use fe2o3_amqp::types::primitives::{Array, OrderedMap, SimpleValue, Symbol, Timestamp, Value};
use fe2o3_amqp::types::sasl::{SaslCode, SaslInit, SaslOutcome, SaslResponse};
use fe2o3_amqp::{Receiver, Sender};
use log::{debug, info, warn};
use serde_amqp::descriptor::Descriptor;
use tokio::sync::{mpsc, oneshot, watch};

/// What the stand-in serves.
#[derive(Clone, Debug)]
pub struct StandinOptions {
    /// The fully qualified namespace the client is told to use, e.g.
    /// "crowsnest-test.servicebus.windows.net": token audiences and addresses must name it.
    pub namespace: String,
    /// The event hub's name.
    pub hub: String,
    /// Consumer groups besides "$Default", which always exists.
    pub consumer_groups: Vec<String>,
    /// The number of partitions, "0" to "partitions - 1" (1 to 1024).
    pub partitions: usize,
}

impl StandinOptions {
    /// One hub with only the "$Default" consumer group.
    pub fn new(namespace: impl Into<String>, hub: impl Into<String>, partitions: usize) -> Self {
        StandinOptions { namespace: namespace.into(), hub: hub.into(), consumer_groups: Vec::new(), partitions }
    }
}

/// Counters since this instance started (a restarted stand-in starts again from zero).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StandinStats {
    /// AMQP connections opened (SASL and open exchanged).
    pub connections: u64,
    /// Connections currently open.
    pub connections_open: u64,
    /// CBS put-token requests answered 202.
    pub cbs_tokens_accepted: u64,
    /// CBS put-token requests answered with an error status.
    pub cbs_tokens_refused: u64,
    /// `$management` requests answered (any status).
    pub management_requests: u64,
    /// Partition receivers attached, in total.
    pub receivers_attached: u64,
    /// Partition receivers attached now.
    pub receivers_open: u64,
    /// Partition receivers attached, in total, per partition.
    pub receivers_attached_per_partition: Vec<u64>,
    /// Partition receivers attached now, per partition.
    pub receivers_open_per_partition: Vec<u64>,
    /// Events transferred to receivers (a redelivery after a reconnect counts again), per
    /// partition; one waiting for link credit is included.
    pub delivered_per_partition: Vec<u64>,
    /// Refusals by reason: the AMQP error condition for links (e.g. "amqp:unauthorized-access"),
    /// "cbs NNN" and "management NNN" for error responses, "sasl" for a refused mechanism.
    pub refusals: BTreeMap<String, u64>,
}

impl StandinStats {
    /// Events transferred on all partitions.
    pub fn delivered(&self) -> u64 {
        self.delivered_per_partition.iter().sum()
    }

    /// Refusals for one reason (see [`StandinStats::refusals`]).
    pub fn refused(&self, reason: &str) -> u64 {
        self.refusals.get(reason).copied().unwrap_or(0)
    }
}

/// The events of a stopped stand-in, to start another one with the same data.
#[derive(Clone, Debug)]
pub struct StandinState {
    created_at_ms: i64,
    partitions: Vec<PartitionLog>,
}

impl StandinState {
    /// The number of partitions.
    pub fn partitions(&self) -> usize {
        self.partitions.len()
    }

    /// The number of events in a partition (0 for a partition that does not exist).
    pub fn events(&self, partition: usize) -> usize {
        self.partitions.get(partition).map_or(0, |p| p.events.len())
    }
}

/// A running stand-in. Dropping it stops it, like [`EventHubsStandin::shutdown`].
pub struct EventHubsStandin {
    port: u16,
    shared: Arc<Shared>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl EventHubsStandin {
    /// Starts on 127.0.0.1 on a port the system picks.
    pub fn start(opts: StandinOptions) -> Result<EventHubsStandin> {
        Self::launch(opts, 0, None)
    }

    /// Starts on 127.0.0.1:`port` with no events (0: a port the system picks).
    pub fn start_on(opts: StandinOptions, port: u16) -> Result<EventHubsStandin> {
        Self::launch(opts, port, None)
    }

    /// Starts on 127.0.0.1:`port` with the events of a stopped stand-in (see
    /// [`EventHubsStandin::shutdown`]); `opts.partitions` must be the state's partition count.
    pub fn start_with(opts: StandinOptions, port: u16, state: StandinState) -> Result<EventHubsStandin> {
        Self::launch(opts, port, Some(state))
    }

    fn launch(opts: StandinOptions, port: u16, state: Option<StandinState>) -> Result<EventHubsStandin> {
        let shared = Arc::new(Shared::new(opts, state)?);
        // Bind before returning, so that a client can connect as soon as `start` returns. Rust's
        // std sets SO_REUSEADDR on Unix, so a restart can take the port back at once.
        let listener =
            StdTcpListener::bind(("127.0.0.1", port)).with_context(|| format!("Event Hubs stand-in: cannot listen on 127.0.0.1:{port}"))?;
        listener.set_nonblocking(true)?;
        let port = listener.local_addr()?.port();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("eventhubs-standin")
            .enable_all()
            .build()
            .context("Event Hubs stand-in: cannot build its tokio runtime")?;
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let task_shared = shared.clone();
        let thread = std::thread::Builder::new()
            .name(format!("eventhubs-standin-{port}"))
            .spawn(move || {
                runtime.block_on(async move {
                    match tokio::net::TcpListener::from_std(listener) {
                        Ok(listener) => {
                            tokio::select! {
                                _ = accept_loop(listener, task_shared) => {}
                                // Stopped, or the handle was dropped: either way, stop.
                                _ = stop_rx => {}
                            }
                        }
                        Err(e) => warn!("Event Hubs stand-in: cannot use its listener: {e}"),
                    }
                });
                // Dropping the runtime drops every task, and with them every socket: to the
                // clients, the service went away. fe2o3 runs no blocking tasks, so this is quick.
                runtime.shutdown_timeout(Duration::from_secs(5));
            })
            .context("Event Hubs stand-in: cannot start its thread")?;
        info!("Event Hubs stand-in for {}/{} listening on 127.0.0.1:{port}", shared.namespace, shared.hub);
        Ok(EventHubsStandin { port, shared, stop: Some(stop_tx), thread: Some(thread) })
    }

    /// What `ConsumerClientBuilder::with_custom_endpoint` takes: "amqp://127.0.0.1:PORT".
    pub fn endpoint(&self) -> String {
        format!("amqp://127.0.0.1:{}", self.port)
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The namespace as configured (lower-cased, without scheme).
    pub fn namespace(&self) -> &str {
        &self.shared.namespace
    }

    /// The hub's name.
    pub fn hub(&self) -> &str {
        &self.shared.hub
    }

    /// Appends one event (its body one AMQP Data section) to a partition and returns its
    /// (sequence number, offset). Receivers on that partition are woken at once.
    ///
    /// # Panics
    ///
    /// If the partition does not exist (a bug in the test, not client input).
    pub fn publish(&self, partition: usize, body: Vec<u8>) -> (i64, i64) {
        let count = self.shared.partitions.len();
        match self.shared.partitions.get(partition) {
            Some(p) => p.append(body),
            None => panic!("Event Hubs stand-in: no partition {partition} (it has {count})"),
        }
    }

    /// Closes every open connection with `amqp:connection:forced`, as the service does when it
    /// moves a namespace or upgrades a gateway, and keeps listening with the same data: clients
    /// see a close frame instead of a dropped socket (compare [`EventHubsStandin::shutdown`]).
    pub fn close_connections(&self) {
        self.shared.force_close.send_modify(|generation| *generation += 1);
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> StandinStats {
        self.shared.stats.snapshot()
    }

    /// Stops listening and drops every connection at once (no close frames: the service going
    /// away), and returns the events for [`EventHubsStandin::start_with`].
    pub fn shutdown(mut self) -> StandinState {
        self.stop_runtime();
        StandinState {
            created_at_ms: self.shared.created_at_ms,
            partitions: self.shared.partitions.iter().map(|p| lock(&p.log).clone()).collect(),
        }
    }

    fn stop_runtime(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            // The thread only drives the runtime; it ends once every task is dropped.
            let _ = thread.join();
        }
    }
}

impl Drop for EventHubsStandin {
    fn drop(&mut self) {
        self.stop_runtime();
    }
}

// -------------------------------------------------------------------------------------------------
// Shared state: the partitions' logs, the receivers per partition, the counters.
// -------------------------------------------------------------------------------------------------

/// Offsets are byte positions; each stored event takes its body plus this much, so that offsets
/// are not sequence numbers and still grow for empty bodies.
const RECORD_OVERHEAD: i64 = 64;
/// The service's limit of receivers without owner level per partition and consumer group.
const MAX_NON_EPOCH_READERS: usize = 5;
/// Events read from a partition log per lock.
const READ_BATCH: usize = 256;
/// How long a link or connection we close waits for the client's answer before giving up on it.
const ANSWER_WAIT: Duration = Duration::from_secs(30);
/// How long a TCP connection may take to get through SASL and open.
const OPEN_TIMEOUT: Duration = Duration::from_secs(30);
/// The descriptor code of `apache.org:selector-filter:string`.
const SELECTOR_FILTER_CODE: u64 = 0x0000_468C_0000_0004;
const SELECTOR_FILTER_NAME: &str = "apache.org:selector-filter:string";
const EPOCH_PROPERTY: &str = "com.microsoft:epoch";
/// The timestamp the service (and the SDK) use for "no time": 0001-01-01T00:00:00Z.
const NO_TIME_MS: i64 = -62_135_596_800_000;

struct Shared {
    namespace: String,
    hub: String,
    /// Consumer group names, lower-cased (the service's names are case-insensitive).
    groups: HashSet<String>,
    created_at_ms: i64,
    partitions: Vec<Partition>,
    readers: Mutex<Readers>,
    stats: Counters,
    next_connection: AtomicU64,
    /// Bumped by [`EventHubsStandin::close_connections`].
    force_close: watch::Sender<u64>,
}

impl Shared {
    fn new(opts: StandinOptions, state: Option<StandinState>) -> Result<Shared> {
        let namespace = normalize_path(&opts.namespace);
        if namespace.is_empty() || namespace.contains('/') {
            bail!("Event Hubs stand-in: bad namespace {:?}", opts.namespace);
        }
        if opts.hub.is_empty() || opts.hub.contains('/') {
            bail!("Event Hubs stand-in: bad hub name {:?}", opts.hub);
        }
        if opts.partitions == 0 || opts.partitions > 1024 {
            bail!("Event Hubs stand-in: {} partitions (1 to 1024)", opts.partitions);
        }
        let mut groups = HashSet::from(["$default".to_string()]);
        for g in &opts.consumer_groups {
            if g.is_empty() || g.contains('/') {
                bail!("Event Hubs stand-in: bad consumer group {g:?}");
            }
            groups.insert(g.to_ascii_lowercase());
        }
        let (created_at_ms, logs) = match state {
            Some(state) => {
                if state.partitions.len() != opts.partitions {
                    bail!("Event Hubs stand-in: the state has {} partitions, the options {}", state.partitions.len(), opts.partitions);
                }
                (state.created_at_ms, state.partitions)
            }
            None => (now_ms(), vec![PartitionLog::default(); opts.partitions]),
        };
        let partitions: Vec<Partition> = logs.into_iter().map(Partition::new).collect();
        Ok(Shared {
            namespace,
            hub: opts.hub,
            groups,
            created_at_ms,
            stats: Counters::new(partitions.len()),
            partitions,
            readers: Mutex::new(Readers::default()),
            next_connection: AtomicU64::new(1),
            force_close: watch::channel(0).0,
        })
    }

    /// The hub as a resource path: "namespace/hub", lower-cased like audiences.
    fn hub_resource(&self) -> String {
        format!("{}/{}", self.namespace, self.hub.to_ascii_lowercase())
    }
}

#[derive(Debug)]
struct StoredEvent {
    sequence_number: i64,
    offset: i64,
    enqueued_ms: i64,
    body: Vec<u8>,
}

#[derive(Clone, Debug, Default)]
struct PartitionLog {
    /// Event `i` has sequence number `i` (nothing expires).
    events: Vec<Arc<StoredEvent>>,
    /// The offset of the next event.
    next_offset: i64,
}

impl PartitionLog {
    fn last_sequence_number(&self) -> i64 {
        self.events.len() as i64 - 1
    }

    fn last_offset(&self) -> i64 {
        self.events.last().map_or(-1, |e| e.offset)
    }
}

struct Partition {
    log: Mutex<PartitionLog>,
    /// The number of events, so that idle receivers wake up on an append.
    appended: watch::Sender<usize>,
}

impl Partition {
    fn new(log: PartitionLog) -> Partition {
        let (appended, _) = watch::channel(log.events.len());
        Partition { log: Mutex::new(log), appended }
    }

    fn append(&self, body: Vec<u8>) -> (i64, i64) {
        let (sequence_number, offset, count) = {
            let mut log = lock(&self.log);
            let sequence_number = log.events.len() as i64;
            let offset = log.next_offset;
            // Enqueued times never go backwards within a partition, whatever the clock does.
            let enqueued_ms = log.events.last().map_or(now_ms(), |last| last.enqueued_ms.max(now_ms()));
            log.next_offset += body.len() as i64 + RECORD_OVERHEAD;
            log.events.push(Arc::new(StoredEvent { sequence_number, offset, enqueued_ms, body }));
            (sequence_number, offset, log.events.len())
        };
        self.appended.send_replace(count);
        (sequence_number, offset)
    }

    fn read(&self, from: usize, max: usize) -> Vec<Arc<StoredEvent>> {
        let log = lock(&self.log);
        let tail = log.events.get(from..).unwrap_or_default();
        tail[..tail.len().min(max)].to_vec()
    }
}

/// The receivers attached to each (consumer group, partition), for owner levels.
#[derive(Default)]
struct Readers {
    next_id: u64,
    slots: HashMap<(String, usize), Vec<ReaderSlot>>,
}

struct ReaderSlot {
    id: u64,
    epoch: Option<i64>,
    /// Tells the receiver's task to detach with this error (it was displaced).
    kick: oneshot::Sender<definitions::Error>,
}

/// The service's owner-level rules. Returns the indexes of the receivers the new one displaces.
fn admit_epoch(existing: &[Option<i64>], epoch: Option<i64>) -> Result<Vec<usize>, definitions::Error> {
    let highest = existing.iter().flatten().max().copied();
    match (epoch, highest) {
        (Some(new), Some(old)) if new < old => Err(error(
            LinkError::Stolen,
            format!(
                "Receiver 'nil' with higher epoch of '{old}' already exists. Receiver 'nil' with \
                 epoch {new} cannot be created. Make sure you are creating receiver with \
                 increasing epoch value to ensure connectivity, or ensure all old epoch receivers \
                 are closed or disconnected."
            ),
        )),
        (Some(_), _) => Ok((0..existing.len()).collect()),
        (None, Some(old)) => Err(error(
            LinkError::Stolen,
            format!(
                "At least one receiver for the endpoint is created with epoch of '{old}', and so \
                 non-epoch receiver is not allowed. Either reconnect with a higher epoch, or make \
                 sure all epoch receivers are closed or disconnected."
            ),
        )),
        (None, None) if existing.len() >= MAX_NON_EPOCH_READERS => Err(error(
            AmqpError::ResourceLimitExceeded,
            format!(
                "Exceeded the maximum number of allowed receivers per partition in a consumer \
                 group which is {MAX_NON_EPOCH_READERS}."
            ),
        )),
        (None, None) => Ok(Vec::new()),
    }
}

impl Readers {
    /// Registers a receiver, displacing the ones its owner level takes over.
    fn admit(
        &mut self,
        key: (String, usize),
        epoch: Option<i64>,
    ) -> Result<(u64, oneshot::Receiver<definitions::Error>), definitions::Error> {
        let slots = self.slots.entry(key).or_default();
        let existing: Vec<Option<i64>> = slots.iter().map(|s| s.epoch).collect();
        let displaced = admit_epoch(&existing, epoch)?;
        let new_epoch = epoch.unwrap_or(0);
        for index in displaced.into_iter().rev() {
            let old = slots.swap_remove(index);
            let old_epoch = old.epoch.map_or("nil".to_string(), |e| e.to_string());
            let _ = old.kick.send(error(
                LinkError::Stolen,
                format!(
                    "New receiver 'nil' with higher epoch of '{new_epoch}' is created hence current \
                     receiver 'nil' with epoch '{old_epoch}' is getting disconnected. If you are \
                     recreating the receiver, make sure a higher epoch is used."
                ),
            ));
        }
        self.next_id += 1;
        let id = self.next_id;
        let (kick, kicked) = oneshot::channel();
        slots.push(ReaderSlot { id, epoch, kick });
        Ok((id, kicked))
    }

    fn release(&mut self, key: &(String, usize), id: u64) {
        if let Some(slots) = self.slots.get_mut(key) {
            slots.retain(|s| s.id != id);
            if slots.is_empty() {
                self.slots.remove(key);
            }
        }
    }
}

struct PartitionCounters {
    attached: AtomicU64,
    open: AtomicU64,
    delivered: AtomicU64,
}

struct Counters {
    connections: AtomicU64,
    connections_open: AtomicU64,
    cbs_accepted: AtomicU64,
    cbs_refused: AtomicU64,
    management: AtomicU64,
    partitions: Vec<PartitionCounters>,
    refusals: Mutex<BTreeMap<String, u64>>,
}

impl Counters {
    fn new(partitions: usize) -> Counters {
        Counters {
            connections: AtomicU64::new(0),
            connections_open: AtomicU64::new(0),
            cbs_accepted: AtomicU64::new(0),
            cbs_refused: AtomicU64::new(0),
            management: AtomicU64::new(0),
            partitions: (0..partitions)
                .map(|_| PartitionCounters { attached: AtomicU64::new(0), open: AtomicU64::new(0), delivered: AtomicU64::new(0) })
                .collect(),
            refusals: Mutex::new(BTreeMap::new()),
        }
    }

    fn refused(&self, reason: &str) {
        *lock(&self.refusals).entry(reason.to_string()).or_insert(0) += 1;
    }

    fn snapshot(&self) -> StandinStats {
        let per = |f: fn(&PartitionCounters) -> &AtomicU64| -> Vec<u64> {
            self.partitions.iter().map(|p| f(p).load(Ordering::Relaxed)).collect()
        };
        let attached = per(|p| &p.attached);
        let open = per(|p| &p.open);
        StandinStats {
            connections: self.connections.load(Ordering::Relaxed),
            connections_open: self.connections_open.load(Ordering::Relaxed),
            cbs_tokens_accepted: self.cbs_accepted.load(Ordering::Relaxed),
            cbs_tokens_refused: self.cbs_refused.load(Ordering::Relaxed),
            management_requests: self.management.load(Ordering::Relaxed),
            receivers_attached: attached.iter().sum(),
            receivers_open: open.iter().sum(),
            receivers_attached_per_partition: attached,
            receivers_open_per_partition: open,
            delivered_per_partition: per(|p| &p.delivered),
            refusals: lock(&self.refusals).clone(),
        }
    }
}

// -------------------------------------------------------------------------------------------------
// Connections and sessions.
// -------------------------------------------------------------------------------------------------

/// SASL ANONYMOUS and nothing else (fe2o3's own anonymous acceptor takes any mechanism). fe2o3's
/// acceptor goes on to the AMQP header after any outcome, even a failed one, so the refusal is
/// also recorded here for the connection to be dropped once fe2o3 returns it.
#[derive(Clone)]
struct AnonymousOnly {
    shared: Arc<Shared>,
    refused: Arc<AtomicBool>,
}

impl AnonymousOnly {
    fn outcome(&self, code: SaslCode) -> SaslServerFrame {
        if code != SaslCode::Ok {
            self.refused.store(true, Ordering::Relaxed);
            self.shared.stats.refused("sasl");
        }
        SaslServerFrame::Outcome(SaslOutcome { code, additional_data: None })
    }
}

impl SaslAcceptor for AnonymousOnly {
    fn mechanisms(&self) -> Array<Symbol> {
        Array::from(vec![Symbol::from("ANONYMOUS")])
    }

    fn on_init(&mut self, init: SaslInit) -> SaslServerFrame {
        if init.mechanism.as_str() == "ANONYMOUS" {
            self.outcome(SaslCode::Ok)
        } else {
            debug!("Event Hubs stand-in: SASL mechanism {} refused", init.mechanism.as_str());
            self.outcome(SaslCode::Auth)
        }
    }

    fn on_response(&mut self, _response: SaslResponse) -> SaslServerFrame {
        // No challenge was sent, so a response is out of turn.
        self.outcome(SaslCode::Auth)
    }
}

async fn accept_loop(listener: tokio::net::TcpListener, shared: Arc<Shared>) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let _ = stream.set_nodelay(true);
                debug!("Event Hubs stand-in: TCP connection from {peer}");
                tokio::spawn(serve_connection(stream, shared.clone()));
            }
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                warn!("Event Hubs stand-in: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// What a connection has been authorized for through `$cbs`.
struct ConnectionCtx {
    id: u64,
    grants: Mutex<Vec<Grant>>,
}

struct Grant {
    /// Normalized: no scheme, lower case, no trailing slash.
    audience: String,
    token: String,
    expires_ms: Option<i64>,
}

impl Grant {
    fn live(&self, now: i64) -> bool {
        self.expires_ms.is_none_or(|t| t > now)
    }
}

impl ConnectionCtx {
    /// A live token whose audience is `resource` or a path above it.
    fn authorizes(&self, resource: &str) -> bool {
        let now = now_ms();
        lock(&self.grants).iter().any(|g| g.live(now) && path_covers(&g.audience, resource))
    }

    /// Management requests on a hub: a live token for the hub, a path above it or a path under it
    /// (the SDK's audience is "…/HUB/ConsumerGroups/G/$management"); a `security_token` in the
    /// request must be one of those tokens.
    fn authorizes_management(&self, hub_resource: &str, security_token: Option<&str>) -> bool {
        let now = now_ms();
        lock(&self.grants).iter().any(|g| {
            g.live(now)
                && (path_covers(&g.audience, hub_resource) || path_covers(hub_resource, &g.audience))
                && security_token.is_none_or(|t| t == g.token)
        })
    }
}

/// Whether `audience` is `resource` or a path above it ("ns/hub" covers "ns/hub/consumergroups/…").
fn path_covers(audience: &str, resource: &str) -> bool {
    resource == audience
        || (resource.len() > audience.len() && resource.starts_with(audience) && resource.as_bytes()[audience.len()] == b'/')
}

/// Counts a connection closed when its task ends, however it ends.
struct OpenGuard<'a>(&'a AtomicU64);

impl Drop for OpenGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn serve_connection(stream: tokio::net::TcpStream, shared: Arc<Shared>) {
    let sasl = AnonymousOnly { shared: shared.clone(), refused: Arc::new(AtomicBool::new(false)) };
    let sasl_refused = sasl.refused.clone();
    let acceptor = ConnectionAcceptor::builder()
        .container_id(format!("eventhubs-standin-{}", shared.namespace))
        .channel_max(4999u16)
        .sasl_acceptor(sasl)
        .build();
    let mut connection = match tokio::time::timeout(OPEN_TIMEOUT, acceptor.accept(stream)).await {
        Ok(Ok(connection)) if sasl_refused.load(Ordering::Relaxed) => {
            // A client that carried on after a failed SASL outcome: no connection for it.
            let e = error(AmqpError::UnauthorizedAccess, "SASL authentication failed.".into());
            let _ = connection_close(connection, e).await;
            return;
        }
        Ok(Ok(connection)) => connection,
        Ok(Err(e)) => {
            // A refused SASL mechanism usually ends here (the client hangs up), as does a client
            // that is not AMQP.
            debug!("Event Hubs stand-in: connection not opened: {e}");
            return;
        }
        Err(_) => {
            debug!("Event Hubs stand-in: connection not opened within {OPEN_TIMEOUT:?}");
            return;
        }
    };
    let ctx = Arc::new(ConnectionCtx { id: shared.next_connection.fetch_add(1, Ordering::Relaxed), grants: Mutex::new(Vec::new()) });
    shared.stats.connections.fetch_add(1, Ordering::Relaxed);
    shared.stats.connections_open.fetch_add(1, Ordering::Relaxed);
    let _open = OpenGuard(&shared.stats.connections_open);
    debug!("Event Hubs stand-in: connection {} open", ctx.id);

    let session_acceptor = SessionAcceptor::new();
    let mut force_close = shared.force_close.subscribe();
    force_close.borrow_and_update();
    loop {
        enum Next {
            Session(Option<fe2o3_amqp::acceptor::IncomingSession>),
            Forced,
        }
        let next = tokio::select! {
            // `None` once the connection engine has stopped: the client closed (fe2o3 answers
            // the close frame itself) or the socket went away.
            incoming = connection.next_incoming_session() => Next::Session(incoming),
            _ = force_close.changed() => Next::Forced,
        };
        match next {
            Next::Session(Some(incoming)) => match session_acceptor.accept_incoming_session(incoming, &mut connection).await {
                Ok(session) => {
                    tokio::spawn(serve_session(session, shared.clone(), ctx.clone()));
                }
                Err(e) => {
                    warn!("Event Hubs stand-in: connection {}: session not begun: {e}", ctx.id);
                    break;
                }
            },
            Next::Session(None) => break,
            Next::Forced => {
                let e = error(ConnectionError::ConnectionForced, "The connection was closed by the service (Event Hubs stand-in).".into());
                shared.stats.refused("amqp:connection:forced");
                if let Err(e) = connection_close(connection, e).await {
                    debug!("Event Hubs stand-in: connection {}: forced close: {e}", ctx.id);
                }
                debug!("Event Hubs stand-in: connection {} closed by the service", ctx.id);
                return;
            }
        }
    }
    debug!("Event Hubs stand-in: connection {} closed", ctx.id);
}

async fn connection_close(
    mut connection: fe2o3_amqp::acceptor::ListenerConnectionHandle,
    e: definitions::Error,
) -> Result<(), fe2o3_amqp::connection::Error> {
    tokio::time::timeout(ANSWER_WAIT, connection.close_with_error(e)).await.unwrap_or(Ok(()))
}

/// The node a `$cbs` or `$management` link talks to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Node {
    Cbs,
    Management,
}

fn node_of(address: Option<&str>) -> Option<Node> {
    let last = address?.trim_end_matches('/').rsplit('/').next()?;
    match last {
        "$cbs" => Some(Node::Cbs),
        "$management" => Some(Node::Management),
        _ => None,
    }
}

/// A request or reply of `$cbs` and `$management`: any body, application properties.
type ValueMessage = Message<Body<Value>>;

/// Per session: the links replies go out on, by their target address (the requests' reply-to).
/// Per session, because the SDK opens a session per CBS exchange, all with the same reply-to.
type ReplyRoutes = Arc<Mutex<HashMap<String, (u64, mpsc::Sender<ValueMessage>)>>>;

struct SessionCtx {
    shared: Arc<Shared>,
    connection: Arc<ConnectionCtx>,
    routes: ReplyRoutes,
    next_route: AtomicU64,
}

type Acceptor = LinkAcceptor<fn(Source) -> Option<Source>, fn(Target) -> Option<Target>>;

async fn serve_session(mut session: ListenerSessionHandle, shared: Arc<Shared>, connection: Arc<ConnectionCtx>) {
    let ctx = SessionCtx { shared, connection, routes: Arc::new(Mutex::new(HashMap::new())), next_route: AtomicU64::new(1) };
    let acceptor: Acceptor = LinkAcceptor::new();
    // Attaches are answered here, one after the other, and each link then lives in its own task,
    // so that a link that waits (for credit, for events, for a detach) never holds up the others.
    // `None` once the session has ended (fe2o3 answers the end frame itself).
    while let Some(attach) = session.next_incoming_attach().await {
        on_attach(attach, &mut session, &acceptor, &ctx).await;
    }
}

async fn on_attach(mut attach: Attach, session: &mut ListenerSessionHandle, acceptor: &Acceptor, ctx: &SessionCtx) {
    match attach.role {
        // The client receives: the link is one of our senders.
        Role::Receiver => {
            let source = attach.source.as_ref().and_then(|s| s.address.clone());
            match node_of(source.as_deref()) {
                Some(node) => attach_reply_link(attach, node, session, acceptor, ctx).await,
                None => {
                    let admitted = match attach.source.as_deref_mut() {
                        Some(source) => admit_reader(&ctx.shared, &ctx.connection, source, &attach.properties),
                        None => Err(error(AmqpError::InvalidField, "A receiver link needs a source.".into())),
                    };
                    match admitted {
                        Ok(reader) => attach_reader(attach, reader, session, acceptor, ctx).await,
                        Err(e) => refuse(attach, e, session, acceptor, &ctx.shared).await,
                    }
                }
            }
        }
        // The client sends: the link is one of our receivers.
        Role::Sender => {
            let target = target_address(&attach);
            match node_of(target.as_deref()) {
                Some(node) => attach_request_link(attach, node, session, acceptor, ctx).await,
                None => {
                    let e = error(
                        AmqpError::NotImplemented,
                        format!(
                            "The Event Hubs stand-in does not accept events over AMQP (target \
                             '{}'); tests publish with EventHubsStandin::publish.",
                            target.unwrap_or_default()
                        ),
                    );
                    refuse(attach, e, session, acceptor, &ctx.shared).await
                }
            }
        }
    }
}

#[allow(irrefutable_let_patterns)]
fn target_address(attach: &Attach) -> Option<String> {
    match attach.target.as_deref() {
        Some(TargetArchetype::Target(t)) => t.address.clone(),
        _ => None,
    }
}

/// Refuses a link the way the service does: attach with a null terminus on our side, then a
/// closing detach with the error (AMQP 1.0 §2.6.3). The client's detach is awaited in a task of
/// its own; the link endpoint must live until then, or fe2o3 would end the session when the
/// client's detach finds no link.
async fn refuse(mut attach: Attach, e: definitions::Error, session: &mut ListenerSessionHandle, acceptor: &Acceptor, shared: &Shared) {
    let reason = condition_name(&e.condition);
    shared.stats.refused(&reason);
    debug!("Event Hubs stand-in: refusing link '{}': {reason}: {}", attach.name, e.description.as_deref().unwrap_or(""));
    match attach.role {
        Role::Receiver => attach.source = None,
        Role::Sender => attach.target = None,
    }
    match acceptor.accept_incoming_attach(attach, session).await {
        Ok(LinkEndpoint::Sender(sender)) => {
            tokio::spawn(async move {
                let _ = tokio::time::timeout(ANSWER_WAIT, sender.close_with_error(e)).await;
            });
        }
        Ok(LinkEndpoint::Receiver(receiver)) => {
            tokio::spawn(async move {
                let _ = tokio::time::timeout(ANSWER_WAIT, receiver.close_with_error(e)).await;
            });
        }
        Err(err) => debug!("Event Hubs stand-in: refused link not attached: {err}"),
    }
}

/// Answers a detach the client sent while we were not sending: in kind (closing or not), since a
/// closing answer to a non-closing detach makes fe2o3 re-attach and wait.
async fn answer_detach(sender: Sender, why: DetachError) {
    let answered = match why {
        DetachError::DetachedByRemote | DetachError::RemoteDetachedWithError(_) => {
            tokio::time::timeout(ANSWER_WAIT, sender.detach()).await.map(|r| r.map(|_| ()).map_err(|(_, e)| e))
        }
        DetachError::ClosedByRemote | DetachError::RemoteClosedWithError(_) => tokio::time::timeout(ANSWER_WAIT, sender.close()).await,
        // The session is gone: there is no one to answer.
        _ => Ok(Ok(())),
    };
    if let Ok(Err(e)) = answered {
        debug!("Event Hubs stand-in: answering a detach: {e}");
    }
}

/// Whether the client has detached (without waiting): a sender with credit and events to send
/// would otherwise notice only once it runs out of either.
async fn detach_pending(sender: &mut Sender) -> Option<DetachError> {
    tokio::select! {
        biased;
        why = sender.on_detach() => Some(why),
        _ = std::future::ready(()) => None,
    }
}

// -------------------------------------------------------------------------------------------------
// $cbs and $management.
// -------------------------------------------------------------------------------------------------

/// The client's receiver from `$cbs` or `$management`: replies go out on it.
async fn attach_reply_link(attach: Attach, node: Node, session: &mut ListenerSessionHandle, acceptor: &Acceptor, ctx: &SessionCtx) {
    let Some(address) = target_address(&attach) else {
        let e = error(AmqpError::InvalidField, format!("A receiver on {node:?} needs a target address, the requests' reply-to."));
        return refuse(attach, e, session, acceptor, &ctx.shared).await;
    };
    // The route exists before the attach is answered, so a request sent right after the client
    // sees its receiver attached finds it.
    let (tx, rx) = mpsc::channel::<ValueMessage>(64);
    let route_id = ctx.next_route.fetch_add(1, Ordering::Relaxed);
    lock(&ctx.routes).insert(address.clone(), (route_id, tx));
    match acceptor.accept_incoming_attach(attach, session).await {
        Ok(LinkEndpoint::Sender(sender)) => {
            tokio::spawn(serve_replies(sender, rx, ctx.routes.clone(), address, route_id));
        }
        Ok(LinkEndpoint::Receiver(_)) => unexpected_role(),
        Err(e) => {
            debug!("Event Hubs stand-in: {node:?} reply link not attached: {e}");
            remove_route(&ctx.routes, &address, route_id);
        }
    }
}

fn unexpected_role() {
    // The acceptor answers a receiving client with a sender and a sending one with a receiver.
    warn!("Event Hubs stand-in: fe2o3 attached a link of the unexpected role");
}

fn remove_route(routes: &ReplyRoutes, address: &str, route_id: u64) {
    let mut routes = lock(routes);
    if routes.get(address).is_some_and(|(id, _)| *id == route_id) {
        routes.remove(address);
    }
}

async fn serve_replies(mut sender: Sender, mut replies: mpsc::Receiver<ValueMessage>, routes: ReplyRoutes, address: String, route_id: u64) {
    loop {
        // Ok: a reply to send (None once no request link can reply any more); Err: a detach.
        let next = tokio::select! {
            reply = replies.recv() => Ok(reply),
            why = sender.on_detach() => Err(why),
        };
        match next {
            Ok(Some(reply)) => {
                // Batchable: the client settles when it reads the reply; nothing waits for that.
                // Waiting for credit here also notices (and answers) a detach.
                if let Err(e) = sender.send_batchable(reply).await {
                    debug!("Event Hubs stand-in: reply link '{address}' ended: {e}");
                    break;
                }
            }
            Ok(None) => break,
            Err(why) => {
                remove_route(&routes, &address, route_id);
                answer_detach(sender, why).await;
                return;
            }
        }
    }
    remove_route(&routes, &address, route_id);
}

/// The client's sender to `$cbs` or `$management`: requests come in on it.
async fn attach_request_link(attach: Attach, node: Node, session: &mut ListenerSessionHandle, acceptor: &Acceptor, ctx: &SessionCtx) {
    match acceptor.accept_incoming_attach(attach, session).await {
        Ok(LinkEndpoint::Receiver(receiver)) => {
            tokio::spawn(serve_requests(receiver, node, ctx.shared.clone(), ctx.connection.clone(), ctx.routes.clone()));
        }
        Ok(LinkEndpoint::Sender(_)) => unexpected_role(),
        Err(e) => debug!("Event Hubs stand-in: {node:?} request link not attached: {e}"),
    }
}

async fn serve_requests(mut receiver: Receiver, node: Node, shared: Arc<Shared>, connection: Arc<ConnectionCtx>, routes: ReplyRoutes) {
    loop {
        let delivery = match receiver.recv::<Body<Value>>().await {
            Ok(delivery) => delivery,
            // The client detached (fe2o3 answered it inside `recv`) or the session ended.
            Err(RecvError::LinkStateError(e)) => {
                debug!("Event Hubs stand-in: {node:?} request link ended: {e}");
                return;
            }
            Err(e) => {
                warn!("Event Hubs stand-in: {node:?} request not readable: {e}");
                continue;
            }
        };
        if let Err(e) = receiver.accept(&delivery).await {
            debug!("Event Hubs stand-in: {node:?} request not accepted: {e}");
            return;
        }
        let request = delivery.into_message();
        let reply = match node {
            Node::Cbs => put_token(&shared, &connection, &request),
            Node::Management => management(&shared, &connection, &request),
        };
        let reply_to = request.properties.as_ref().and_then(|p| p.reply_to.clone());
        let route = reply_to.as_ref().and_then(|to| lock(&routes).get(to).map(|(_, tx)| tx.clone()));
        match route {
            Some(tx) => {
                if tx.send(reply).await.is_err() {
                    debug!("Event Hubs stand-in: {node:?} reply link gone before the reply");
                }
            }
            None => warn!(
                "Event Hubs stand-in: {node:?} request with reply-to {reply_to:?}, and no link \
                 from {node:?} to it on this session: reply dropped"
            ),
        }
    }
}

fn app_property<'a>(message: &'a ValueMessage, key: &str) -> Option<&'a SimpleValue> {
    message.application_properties.as_ref()?.0.get(key)
}

fn app_string<'a>(message: &'a ValueMessage, key: &str) -> Option<&'a str> {
    match app_property(message, key)? {
        SimpleValue::String(s) => Some(s.as_str()),
        _ => None,
    }
}

/// A response of the management protocol: status in application properties, correlated with the
/// request's message-id.
fn response(request: &ValueMessage, status: i32, description: &str, body: Body<Value>) -> ValueMessage {
    let mut properties = Properties::default();
    if let Some(p) = &request.properties {
        properties.correlation_id = p.message_id.clone();
        properties.to = p.reply_to.clone();
    }
    let application_properties =
        ApplicationProperties::builder().insert("status-code", status).insert("status-description", description.to_string()).build();
    Message::builder().properties(properties).application_properties(application_properties).body(body).build()
}

/// An error response; the body is empty, which the SDK's decoder (an optional map for READ, any
/// value for put-token) accepts.
fn error_response(request: &ValueMessage, status: i32, condition: &str, description: &str) -> ValueMessage {
    let mut reply = response(request, status, description, Body::Empty);
    if let Some(ap) = reply.application_properties.as_mut() {
        ap.0.insert("error-condition".to_string(), SimpleValue::Symbol(Symbol::from(condition)));
    }
    reply
}

fn put_token(shared: &Shared, connection: &ConnectionCtx, request: &ValueMessage) -> ValueMessage {
    let refuse = |status: i32, condition: &str, description: String| {
        shared.stats.cbs_refused.fetch_add(1, Ordering::Relaxed);
        shared.stats.refused(&format!("cbs {status}"));
        debug!("Event Hubs stand-in: put-token refused: {status} {description}");
        error_response(request, status, condition, &description)
    };
    if app_string(request, "operation") != Some("put-token") {
        return refuse(400, "amqp:not-implemented", "The only CBS operation is put-token.".into());
    }
    let token_type = app_string(request, "type").unwrap_or_default();
    if token_type != "jwt" && token_type != "servicebus.windows.net:sastoken" {
        return refuse(400, "amqp:invalid-field", format!("Unsupported token type '{token_type}'."));
    }
    let Some(name) = app_string(request, "name").filter(|n| !n.is_empty()) else {
        return refuse(400, "amqp:invalid-field", "The put-token request has no audience ('name').".into());
    };
    let expires_ms = match app_property(request, "expiration") {
        Some(SimpleValue::Timestamp(t)) => Some(t.milliseconds()),
        None | Some(SimpleValue::Null) => None,
        Some(other) => {
            return refuse(400, "amqp:invalid-field", format!("The expiration {other:?} is not a timestamp."));
        }
    };
    let token = match &request.body {
        Body::Value(AmqpValue(Value::String(t))) if !t.is_empty() => t.clone(),
        _ => return refuse(401, "amqp:unauthorized-access", "InvalidSignature: The token is empty or not a string.".into()),
    };
    if expires_ms.is_some_and(|t| t <= now_ms()) {
        return refuse(401, "amqp:unauthorized-access", "ExpiredToken: The token is expired.".into());
    }
    let audience = normalize_path(name);
    if !path_covers(&shared.namespace, &audience) {
        return refuse(
            401,
            "amqp:unauthorized-access",
            format!("InvalidAudience: The audience '{name}' is not in namespace '{}'.", shared.namespace),
        );
    }
    {
        // A renewal replaces the previous token for the same audience.
        let mut grants = lock(&connection.grants);
        grants.retain(|g| g.audience != audience);
        grants.push(Grant { audience, token, expires_ms });
    }
    shared.stats.cbs_accepted.fetch_add(1, Ordering::Relaxed);
    debug!("Event Hubs stand-in: connection {}: token put for {name}", connection.id);
    response(request, 202, "Accepted", Body::Empty)
}

fn management(shared: &Shared, connection: &ConnectionCtx, request: &ValueMessage) -> ValueMessage {
    shared.stats.management.fetch_add(1, Ordering::Relaxed);
    let refuse = |status: i32, condition: &str, description: String| {
        shared.stats.refused(&format!("management {status}"));
        debug!("Event Hubs stand-in: management request refused: {status} {description}");
        error_response(request, status, condition, &description)
    };
    // The entity first: a client configured with the wrong hub gets a token for that hub's path,
    // and learns that the hub does not exist rather than that it may not see it.
    let name = app_string(request, "name").unwrap_or_default();
    if !name.eq_ignore_ascii_case(&shared.hub) {
        return refuse(
            404,
            "amqp:not-found",
            format!(
                "The messaging entity 'sb://{}/{}' could not be found. To know more visit \
                 https://aka.ms/sbResourceMgrExceptions.",
                shared.namespace, name
            ),
        );
    }
    if !connection.authorizes_management(&shared.hub_resource(), app_string(request, "security_token")) {
        return refuse(
            401,
            "amqp:unauthorized-access",
            format!(
                "Unauthorized access. 'Listen' claim(s) are required to perform this operation. \
                 Resource: 'sb://{}/{}'.",
                shared.namespace, shared.hub
            ),
        );
    }
    let operation = app_string(request, "operation").unwrap_or_default();
    if operation != "READ" {
        return refuse(400, "amqp:not-implemented", format!("The operation '{operation}' is not supported."));
    }
    let entity_type = app_string(request, "type").unwrap_or_default();
    let mut map: OrderedMap<Value, Value> = OrderedMap::new();
    let mut put = |k: &str, v: Value| {
        map.insert(Value::String(k.to_string()), v);
    };
    match entity_type {
        "com.microsoft:eventhub" => {
            let ids: Vec<Value> = (0..shared.partitions.len()).map(|i| Value::String(i.to_string())).collect();
            put("name", Value::String(shared.hub.clone()));
            put("type", Value::String(entity_type.to_string()));
            put("created_at", Value::Timestamp(Timestamp::from_milliseconds(shared.created_at_ms)));
            put("partition_count", Value::Int(shared.partitions.len() as i32));
            put("partition_ids", Value::Array(Array::from(ids)));
        }
        "com.microsoft:partition" => {
            let id = app_string(request, "partition").unwrap_or_default();
            let Some(index) = parse_partition_id(id, shared.partitions.len()) else {
                return refuse(400, "com.microsoft:argument-out-of-range", partition_out_of_range(shared.partitions.len()));
            };
            let log = lock(&shared.partitions[index].log);
            let empty = log.events.is_empty();
            let last_time = log.events.last().map_or(NO_TIME_MS, |e| e.enqueued_ms);
            put("name", Value::String(shared.hub.clone()));
            put("type", Value::String(entity_type.to_string()));
            put("partition", Value::String(index.to_string()));
            put("begin_sequence_number", Value::Long(if empty { -1 } else { 0 }));
            put("last_enqueued_sequence_number", Value::Long(log.last_sequence_number()));
            put("last_enqueued_offset", Value::String(log.last_offset().to_string()));
            put("last_enqueued_time_utc", Value::Timestamp(Timestamp::from_milliseconds(last_time)));
            put("is_partition_empty", Value::Bool(empty));
            put("last_enqueued_sequence_number_epoch", Value::Long(0));
        }
        other => {
            return refuse(400, "amqp:not-implemented", format!("The entity type '{other}' is not supported."));
        }
    }
    response(request, 200, "OK", Body::Value(AmqpValue(Value::Map(map))))
}

// -------------------------------------------------------------------------------------------------
// Partition receivers.
// -------------------------------------------------------------------------------------------------

/// A partition entity address, parsed: `[scheme://]namespace/hub/ConsumerGroups/g/Partitions/n`
/// or the same without the namespace.
#[derive(Debug, PartialEq, Eq)]
struct EntityAddress<'a> {
    namespace: Option<&'a str>,
    hub: &'a str,
    group: &'a str,
    partition: &'a str,
}

fn parse_address(address: &str) -> Option<EntityAddress<'_>> {
    let (has_scheme, rest) = match address.split_once("://") {
        Some((_, rest)) => (true, rest),
        None => (false, address),
    };
    let parts: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
    let (namespace, tail) = match (has_scheme, parts.len()) {
        (_, 6) => (Some(parts[0]), &parts[1..]),
        (false, 5) => (None, &parts[..]),
        _ => return None,
    };
    if !tail[1].eq_ignore_ascii_case("consumergroups") || !tail[3].eq_ignore_ascii_case("partitions") {
        return None;
    }
    Some(EntityAddress { namespace, hub: tail[0], group: tail[2], partition: tail[4] })
}

/// A partition id as the service takes it: the decimal number of an existing partition.
fn parse_partition_id(id: &str, partitions: usize) -> Option<usize> {
    if id.is_empty() || id.len() > 4 || !id.bytes().all(|b| b.is_ascii_digit()) || (id.len() > 1 && id.starts_with('0')) {
        return None;
    }
    id.parse::<usize>().ok().filter(|&n| n < partitions)
}

fn partition_out_of_range(partitions: usize) -> String {
    format!(
        "The specified partition is invalid for an EventHub partition sender or receiver. It \
         should be between 0 and {}.",
        partitions - 1
    )
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum StartField {
    Offset,
    SequenceNumber,
    EnqueuedTime,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum StartValue {
    Number(i64),
    Latest,
}

/// A selector filter on where a receiver starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct StartFilter {
    field: StartField,
    inclusive: bool,
    value: StartValue,
}

/// Parses `amqp.annotation.x-opt-offset > '123'` and its kin, as the SDKs write them (with or
/// without a space after the operator).
fn parse_selector(expression: &str) -> Result<StartFilter, String> {
    let e = expression.trim();
    let fields = [
        ("amqp.annotation.x-opt-offset", StartField::Offset),
        ("amqp.annotation.x-opt-sequence-number", StartField::SequenceNumber),
        ("amqp.annotation.x-opt-enqueued-time", StartField::EnqueuedTime),
    ];
    let (field, rest) = fields
        .iter()
        .find_map(|(name, field)| {
            let head = e.get(..name.len())?;
            head.eq_ignore_ascii_case(name).then(|| (*field, &e[name.len()..]))
        })
        .ok_or("it filters on none of x-opt-offset, x-opt-sequence-number, x-opt-enqueued-time")?;
    let rest = rest.trim_start();
    let (inclusive, rest) = if let Some(r) = rest.strip_prefix(">=") {
        (true, r)
    } else if let Some(r) = rest.strip_prefix('>') {
        (false, r)
    } else {
        return Err("the operator is not '>' or '>='".into());
    };
    let rest = rest.trim_start();
    let quoted = rest.strip_prefix('\'').ok_or("the value is not quoted")?;
    let (value, after) = quoted.split_once('\'').ok_or("the value's quote is not closed")?;
    if !after.trim().is_empty() {
        return Err(format!("unexpected '{}' after the value", after.trim()));
    }
    let value = if field == StartField::Offset && value == "@latest" {
        StartValue::Latest
    } else {
        StartValue::Number(value.parse::<i64>().map_err(|_| format!("'{value}' is not a number"))?)
    };
    Ok(StartFilter { field, inclusive, value })
}

/// Takes the selector out of a receiver's source filters. Filters of other types are removed
/// from the source we answer with, which is how AMQP says "not supported" (the client decides).
fn take_selector(source: &mut Source) -> Result<Option<String>, definitions::Error> {
    let Some(filters) = source.filter.as_mut() else {
        return Ok(None);
    };
    let mut selector = None;
    let mut unsupported = Vec::new();
    for (key, value) in filters.iter() {
        let expression = match value {
            Value::Described(d) => {
                let is_selector = match &d.descriptor {
                    Descriptor::Code(code) => *code == SELECTOR_FILTER_CODE,
                    Descriptor::Name(name) => name.as_str() == SELECTOR_FILTER_NAME,
                };
                match (&d.value, is_selector) {
                    (Value::String(s), true) => Some(s.clone()),
                    (_, true) => {
                        return Err(error(AmqpError::InvalidField, "The selector filter's value is not a string.".into()));
                    }
                    _ => None,
                }
            }
            // The legacy form: the expression itself under the selector's key.
            Value::String(s) if key.as_str() == SELECTOR_FILTER_NAME => Some(s.clone()),
            _ => None,
        };
        match expression {
            Some(_) if selector.is_some() => {
                return Err(error(AmqpError::InvalidField, "More than one selector filter.".into()));
            }
            Some(expression) => selector = Some(expression),
            None => unsupported.push(key.clone()),
        }
    }
    for key in unsupported {
        debug!("Event Hubs stand-in: filter '{}' not supported: left out of the answer", key.as_str());
        filters.swap_remove(&key);
    }
    Ok(selector)
}

/// Where a receiver starts in a partition log, or why it cannot.
fn start_index(log: &PartitionLog, filter: &StartFilter) -> Result<usize, definitions::Error> {
    let len = log.events.len();
    let n = match filter.value {
        StartValue::Latest => return Ok(len),
        StartValue::Number(n) => n,
    };
    let point = |key: fn(&StoredEvent) -> i64| log.events.partition_point(|e| if filter.inclusive { key(e) < n } else { key(e) <= n });
    match filter.field {
        StartField::SequenceNumber => {
            let last = log.last_sequence_number();
            // One past the end is where the next event lands: fine when inclusive.
            if (!filter.inclusive && n > last) || (filter.inclusive && n > last + 1) {
                return Err(error(
                    ErrorCondition::Custom(Symbol::from("com.microsoft:argument-error")),
                    format!(
                        "The supplied sequence number '{n}' is invalid. The last sequence number \
                         in the system is '{last}'"
                    ),
                ));
            }
            Ok(point(|e| e.sequence_number))
        }
        StartField::Offset => {
            let last = log.last_offset();
            if (!filter.inclusive && n > last) || (filter.inclusive && n > log.next_offset) {
                return Err(error(
                    ErrorCondition::Custom(Symbol::from("com.microsoft:argument-error")),
                    format!(
                        "The supplied offset '{n}' is invalid. The last offset in the system is \
                         '{last}'"
                    ),
                ));
            }
            Ok(point(|e| e.offset))
        }
        StartField::EnqueuedTime => Ok(point(|e| e.enqueued_ms)),
    }
}

fn epoch_of(properties: &Option<definitions::Fields>) -> Result<Option<i64>, definitions::Error> {
    let Some(value) = properties.as_ref().and_then(|p| p.get(&Symbol::from(EPOCH_PROPERTY))) else {
        return Ok(None);
    };
    match value {
        Value::Long(v) => Ok(Some(*v)),
        Value::Int(v) => Ok(Some(i64::from(*v))),
        Value::Short(v) => Ok(Some(i64::from(*v))),
        Value::Byte(v) => Ok(Some(i64::from(*v))),
        Value::Uint(v) => Ok(Some(i64::from(*v))),
        Value::Ulong(v) => i64::try_from(*v).map(Some).map_err(|_| bad_epoch(value)),
        Value::Null => Ok(None),
        _ => Err(bad_epoch(value)),
    }
}

fn bad_epoch(value: &Value) -> definitions::Error {
    error(AmqpError::InvalidField, format!("The {EPOCH_PROPERTY} property {value:?} is not an integer."))
}

struct AdmittedReader {
    partition: usize,
    key: (String, usize),
    id: u64,
    start: usize,
    kicked: oneshot::Receiver<definitions::Error>,
}

/// Checks a receiver's attach as the service would: the entity, the authorization, the filter,
/// then the owner level, which registers the receiver (and displaces others) only once the rest
/// is fine.
fn admit_reader(
    shared: &Shared,
    connection: &ConnectionCtx,
    source: &mut Source,
    properties: &Option<definitions::Fields>,
) -> Result<AdmittedReader, definitions::Error> {
    let address = source.address.clone().unwrap_or_default();
    let not_found = |entity: String| {
        error(
            AmqpError::NotFound,
            format!(
                "The messaging entity '{entity}' could not be found. To know more visit \
                 https://aka.ms/sbResourceMgrExceptions."
            ),
        )
    };
    let parsed = parse_address(&address).ok_or_else(|| not_found(address.clone()))?;
    if parsed.namespace.is_some_and(|ns| !ns.eq_ignore_ascii_case(&shared.namespace)) {
        return Err(not_found(address.clone()));
    }
    if !parsed.hub.eq_ignore_ascii_case(&shared.hub) {
        return Err(not_found(format!("sb://{}/{}", shared.namespace, parsed.hub)));
    }
    let group_key = parsed.group.to_ascii_lowercase();
    if !shared.groups.contains(&group_key) {
        return Err(not_found(format!("sb://{}/{}/consumergroups/{}", shared.namespace, shared.hub, parsed.group)));
    }
    let partitions = shared.partitions.len();
    let partition = parse_partition_id(parsed.partition, partitions).ok_or_else(|| {
        error(ErrorCondition::Custom(Symbol::from("com.microsoft:argument-out-of-range")), partition_out_of_range(partitions))
    })?;
    let resource =
        format!("{}/{}/consumergroups/{}/partitions/{}", shared.namespace, shared.hub.to_ascii_lowercase(), group_key, partition);
    if !connection.authorizes(&resource) {
        return Err(error(
            AmqpError::UnauthorizedAccess,
            format!(
                "Unauthorized access. 'Listen' claim(s) are required to perform this operation. \
                 Resource: 'sb://{resource}'."
            ),
        ));
    }
    let filter = match take_selector(source)? {
        // No filter: the start of the partition.
        None => StartFilter { field: StartField::Offset, inclusive: false, value: StartValue::Number(-1) },
        Some(expression) => parse_selector(&expression)
            .map_err(|why| error(AmqpError::InvalidField, format!("The filter expression '{expression}' is not valid: {why}.")))?,
    };
    let epoch = epoch_of(properties)?;
    let start = start_index(&lock(&shared.partitions[partition].log), &filter)?;
    let key = (group_key, partition);
    let (id, kicked) = lock(&shared.readers).admit(key.clone(), epoch)?;
    Ok(AdmittedReader { partition, key, id, start, kicked })
}

/// Unregisters a receiver and counts it closed when its task ends, however it ends.
struct ReaderGuard {
    shared: Arc<Shared>,
    key: (String, usize),
    id: u64,
}

impl Drop for ReaderGuard {
    fn drop(&mut self) {
        lock(&self.shared.readers).release(&self.key, self.id);
        if let Some(c) = self.shared.stats.partitions.get(self.key.1) {
            c.open.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

async fn attach_reader(attach: Attach, reader: AdmittedReader, session: &mut ListenerSessionHandle, acceptor: &Acceptor, ctx: &SessionCtx) {
    let counters = &ctx.shared.stats.partitions[reader.partition];
    // Counted open now, since the guard counts it closed however this ends.
    counters.open.fetch_add(1, Ordering::Relaxed);
    let guard = ReaderGuard { shared: ctx.shared.clone(), key: reader.key.clone(), id: reader.id };
    debug!(
        "Event Hubs stand-in: connection {}: receiver '{}' on partition {} from event {}",
        ctx.connection.id, attach.name, reader.partition, reader.start
    );
    match acceptor.accept_incoming_attach(attach, session).await {
        Ok(LinkEndpoint::Sender(sender)) => {
            counters.attached.fetch_add(1, Ordering::Relaxed);
            tokio::spawn(serve_reader(sender, reader, guard));
        }
        Ok(LinkEndpoint::Receiver(_)) => unexpected_role(),
        Err(e) => debug!("Event Hubs stand-in: receiver not attached: {e}"),
    }
}

async fn serve_reader(mut sender: Sender, reader: AdmittedReader, guard: ReaderGuard) {
    enum Idle {
        Appended,
        Detached(DetachError),
        Kicked(Option<definitions::Error>),
    }
    let AdmittedReader { partition, start, mut kicked, .. } = reader;
    let shared = guard.shared.clone();
    let log = &shared.partitions[partition];
    let delivered = &shared.stats.partitions[partition].delivered;
    let mut appended = log.appended.subscribe();
    let mut next = start;
    let mut pending: VecDeque<Arc<StoredEvent>> = VecDeque::new();
    let kick = loop {
        if pending.is_empty() {
            // Seen before the log is read, so an append after the read wakes the wait below.
            appended.borrow_and_update();
            pending.extend(log.read(next, READ_BATCH));
        }
        let Some(event) = pending.pop_front() else {
            let idle = tokio::select! {
                changed = appended.changed() => match changed {
                    Ok(()) => Idle::Appended,
                    Err(_) => Idle::Kicked(None),
                },
                why = sender.on_detach() => Idle::Detached(why),
                e = &mut kicked => Idle::Kicked(e.ok()),
            };
            match idle {
                Idle::Appended => continue,
                Idle::Detached(why) => {
                    drop(guard);
                    return answer_detach(sender, why).await;
                }
                Idle::Kicked(e) => break e,
            }
        };
        if let Some(why) = detach_pending(&mut sender).await {
            drop(guard);
            return answer_detach(sender, why).await;
        }
        // Counted before the transfer, so that a client holding an event always finds it in the
        // stats (one waiting for credit is counted too, and uncounted if it never goes out).
        delivered.fetch_add(1, Ordering::Relaxed);
        // Waits for credit (the client's prefetch is the only buffer) and answers a detach that
        // comes meanwhile; the delivery is settled by the client's accept, which nothing awaits.
        let sent = tokio::select! {
            sent = sender.send_batchable(event_message(&event)) => Ok(sent.map(drop)),
            e = &mut kicked => Err(e.ok()),
        };
        if !matches!(sent, Ok(Ok(()))) {
            delivered.fetch_sub(1, Ordering::Relaxed);
        }
        match sent {
            Ok(Ok(())) => next += 1,
            Ok(Err(e)) => {
                debug!("Event Hubs stand-in: receiver on partition {partition} ended: {e}");
                return;
            }
            Err(e) => break e,
        }
    };
    // Displaced by a receiver with a higher (or equal) owner level, or the stand-in is stopping.
    drop(guard);
    let e = kick.unwrap_or_else(|| error(LinkError::DetachForced, "The service is going away.".into()));
    debug!("Event Hubs stand-in: receiver on partition {partition} detached: {:?}", e.description);
    let _ = tokio::time::timeout(ANSWER_WAIT, sender.close_with_error(e)).await;
}

/// An event as the service delivers it.
fn event_message(event: &StoredEvent) -> Message<Data> {
    let annotations = MessageAnnotations::builder()
        .insert(Symbol::from("x-opt-sequence-number"), Value::Long(event.sequence_number))
        .insert(Symbol::from("x-opt-offset"), Value::String(event.offset.to_string()))
        .insert(Symbol::from("x-opt-enqueued-time"), Value::Timestamp(Timestamp::from_milliseconds(event.enqueued_ms)))
        .build();
    Message::builder().message_annotations(annotations).data(Data::from(event.body.clone())).build()
}

// -------------------------------------------------------------------------------------------------
// Small helpers.
// -------------------------------------------------------------------------------------------------

fn error(condition: impl Into<ErrorCondition>, description: String) -> definitions::Error {
    definitions::Error::new(condition.into(), Some(description), None)
}

fn condition_name(condition: &ErrorCondition) -> String {
    match condition {
        ErrorCondition::AmqpError(e) => Symbol::from(e).as_str().to_string(),
        ErrorCondition::ConnectionError(e) => Symbol::from(e).as_str().to_string(),
        ErrorCondition::SessionError(e) => Symbol::from(e).as_str().to_string(),
        ErrorCondition::LinkError(e) => Symbol::from(e).as_str().to_string(),
        ErrorCondition::Custom(s) => s.as_str().to_string(),
    }
}

/// "amqps://NS.servicebus.windows.net/Hub/" -> "ns.servicebus.windows.net/hub": entity paths are
/// case-insensitive in the service.
fn normalize_path(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    rest.trim_matches('/').to_ascii_lowercase()
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// Locks, and carries on after a panic elsewhere (the data are append-only logs and counters).
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log_of(bodies: &[usize]) -> PartitionLog {
        let p = Partition::new(PartitionLog::default());
        for &len in bodies {
            p.append(vec![0; len]);
        }
        let log = lock(&p.log).clone();
        log
    }

    #[test]
    fn selectors_parse_as_the_sdk_writes_them() {
        let f = parse_selector("amqp.annotation.x-opt-offset > '-1'").unwrap();
        assert_eq!((f.field, f.inclusive, f.value), (StartField::Offset, false, StartValue::Number(-1)));
        let f = parse_selector("amqp.annotation.x-opt-offset >='123'").unwrap();
        assert_eq!((f.field, f.inclusive, f.value), (StartField::Offset, true, StartValue::Number(123)));
        let f = parse_selector("amqp.annotation.x-opt-sequence-number >'5'").unwrap();
        assert_eq!((f.field, f.inclusive, f.value), (StartField::SequenceNumber, false, StartValue::Number(5)));
        let f = parse_selector("amqp.annotation.x-opt-enqueued-time >= '1700000000000'").unwrap();
        assert_eq!(f.field, StartField::EnqueuedTime);
        assert!(f.inclusive);
        let f = parse_selector("amqp.annotation.x-opt-offset > '@latest'").unwrap();
        assert_eq!(f.value, StartValue::Latest);
        for bad in [
            "amqp.annotation.x-opt-offset < '5'",
            "amqp.annotation.x-opt-offset > 5",
            "amqp.annotation.x-opt-offset > '5",
            "amqp.annotation.x-opt-offset > '5' and 1",
            "amqp.annotation.x-opt-sequence-number > '@latest'",
            "amqp.annotation.x-opt-partition-key > '5'",
            "amqp.annotation.x-opt-offset > 'abc'",
            "",
        ] {
            assert!(parse_selector(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn start_positions_are_exclusive_or_inclusive() {
        let log = log_of(&[10, 0, 5]); // offsets 0, 74, 138
        let at = |field, inclusive, n| start_index(&log, &StartFilter { field, inclusive, value: StartValue::Number(n) });
        assert_eq!(at(StartField::Offset, false, -1).unwrap(), 0);
        assert_eq!(at(StartField::Offset, false, 74).unwrap(), 2);
        assert_eq!(at(StartField::Offset, true, 74).unwrap(), 1);
        assert_eq!(at(StartField::Offset, false, 138).unwrap(), 3);
        assert!(at(StartField::Offset, false, 139).is_err());
        assert_eq!(at(StartField::SequenceNumber, false, 0).unwrap(), 1);
        assert_eq!(at(StartField::SequenceNumber, true, 0).unwrap(), 0);
        assert_eq!(at(StartField::SequenceNumber, true, 3).unwrap(), 3);
        assert!(at(StartField::SequenceNumber, true, 4).is_err());
        assert!(at(StartField::SequenceNumber, false, 3).is_err());
        let latest = StartFilter { field: StartField::Offset, inclusive: false, value: StartValue::Latest };
        assert_eq!(start_index(&log, &latest).unwrap(), 3);
        let t = log.events[1].enqueued_ms;
        assert!(at(StartField::EnqueuedTime, true, t).unwrap() <= 1);
        assert_eq!(at(StartField::EnqueuedTime, false, i64::MAX).unwrap(), 3);
    }

    #[test]
    fn addresses_with_or_without_scheme_and_host() {
        let a = parse_address("amqps://ns.example/hub/ConsumerGroups/$Default/Partitions/3").unwrap();
        assert_eq!(a, EntityAddress { namespace: Some("ns.example"), hub: "hub", group: "$Default", partition: "3" });
        let a = parse_address("hub/consumergroups/g/partitions/0").unwrap();
        assert_eq!(a.namespace, None);
        assert!(parse_address("amqps://ns/hub/Partitions/0").is_none());
        assert!(parse_address("$cbs").is_none());
        assert_eq!(parse_partition_id("0", 2), Some(0));
        assert_eq!(parse_partition_id("1", 2), Some(1));
        for bad in ["2", "01", "-1", "", "a", "99999"] {
            assert_eq!(parse_partition_id(bad, 2), None, "{bad}");
        }
    }

    #[test]
    fn owner_levels_follow_the_service() {
        // An epoch receiver displaces everyone, and an equal epoch displaces too.
        assert_eq!(admit_epoch(&[None, Some(0)], Some(0)).unwrap(), vec![0, 1]);
        assert!(admit_epoch(&[Some(5)], Some(4)).is_err());
        assert!(admit_epoch(&[Some(0)], None).is_err());
        let five = [None; 5];
        let e = admit_epoch(&five, None).unwrap_err();
        assert_eq!(condition_name(&e.condition), "amqp:resource-limit-exceeded");
        assert!(admit_epoch(&five[..4], None).unwrap().is_empty());

        let mut readers = Readers::default();
        let key = ("$default".to_string(), 0);
        let (_, mut first) = readers.admit(key.clone(), Some(1)).unwrap();
        let (second, _) = readers.admit(key.clone(), Some(1)).unwrap();
        let kicked = first.try_recv().unwrap();
        assert_eq!(condition_name(&kicked.condition), "amqp:link:stolen");
        readers.release(&key, second);
        assert!(readers.slots.is_empty());
    }

    #[test]
    fn audiences_cover_paths_below_them() {
        assert!(path_covers("ns/hub", "ns/hub/consumergroups/g/partitions/0"));
        assert!(path_covers("ns", "ns/hub"));
        assert!(!path_covers("ns/hu", "ns/hub"));
        assert!(!path_covers("ns/hub/consumergroups/g/partitions/1", "ns/hub/consumergroups/g/partitions/10"));
        assert_eq!(normalize_path("amqps://NS.example/Hub/"), "ns.example/hub");
    }
}
