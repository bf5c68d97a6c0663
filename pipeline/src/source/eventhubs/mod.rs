//! Azure Event Hubs over AMQP, natively (`azure_messaging_eventhubs`): the SDK's
//! `EventProcessor` shares the hub's partitions among every Crowsnest instance of one consumer
//! group, with ownership and checkpoints in a Blob container (the convention every Azure SDK,
//! Azure Functions and Falco's k8saudit-aks plugin share).
//!
//! The SDK is async and the pipeline's sources are not: the processor runs on a thread of its
//! own with a single-threaded runtime (the SDK's receive streams are not `Send`), where
//! [`reader`] cuts each partition's messages into chunks and hands them over through a bounded
//! channel. A full pipeline therefore stops the readers, and the SDK's link credit
//! (`prefetch`) bounds what waits in memory (back-pressure, as with Kafka).
//!
//! Checkpoints follow the rule Kafka offsets follow ([`crate::checkpoint`]): per partition, the
//! position before which no open window still needs an event and every sink has confirmed,
//! written at the commit interval by [`committer`], never per message. Chunks carry sequence
//! numbers as their offsets; a checkpoint stores the sequence number and the service's offset
//! of the last message it covers, so a restart resumes right after it.
//!
//! Known limits of SDK 0.15, and what this module does about them:
//! - the owner level (`epoch`) does not make the service disconnect a reader whose partition
//!   was taken, so two instances may read one partition for a balancing round: the same alerts
//!   come out with the same ids (dedup downstream), and only the owner writes checkpoints;
//! - `EventProcessor::run` returns on its first failed round (storage or service away): the
//!   reader supervises it and starts a fresh processor with backoff;
//! - the partition list is read once when a processor starts: a restart (or a reconnect) reads
//!   it again.

pub mod committer;
pub mod config;
mod leader;
mod ownership;
mod reader;
pub mod validate;

use std::collections::{HashMap, VecDeque};
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::RecvTimeoutError;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use azure_core::credentials::{AccessToken, TokenCredential, TokenRequestOptions};
use azure_storage_blob::{BlobContainerClient, BlobContainerClientOptions};

use crate::metrics::Metrics;

use super::{ByteCounter, Chunk, FramingLimits, OffsetCommitter, Source};
use config::{Auth, EventHubsConfig};

/// The Blob REST API version the checkpoint store speaks. azure_storage_blob 1.1 defaults to
/// 2026-04-06, which Azurite 3.35 (the newest for Node 18/20) refuses; every version since
/// 2019 has what the store needs (metadata, conditional writes), and Azure serves them all.
pub const BLOB_API_VERSION: &str = "2025-11-05";

/// What a partition's reader and the committer share about it.
#[derive(Debug)]
pub(crate) struct PartitionState {
    /// Which reading of the partition this is: a partition lost and claimed again gets a new
    /// reader, and the old one must not remove the new one's entry.
    generation: u64,
    /// Per chunk handed over, in order: the sequence number after it and the service's offset
    /// of its last message (what a checkpoint needs).
    ends: VecDeque<(i64, String)>,
    /// The newest sequence number received.
    last_sequence: Option<i64>,
    /// Messages enqueued after it, from the partition's properties.
    lag: i64,
    /// The sequence number after the last checkpoint written.
    committed: Option<i64>,
}

/// State shared by the async readers, the source and the committer.
pub(crate) struct Shared {
    cfg: EventHubsConfig,
    /// Who this instance is to the other instances: SDK 0.15 names its connection, and with it
    /// the owner of the partitions it claims, after the application id. Unique per process
    /// (two instances under one name would each take the other's partitions for its own), and
    /// kept across reconnects, so a new connection renews the ownerships the last one held
    /// instead of waiting for them to expire.
    instance: String,
    hub: Arc<str>,
    partitions: Mutex<HashMap<i32, PartitionState>>,
    generation: AtomicU64,
    metrics: Metrics,
    limits: FramingLimits,
    linger: Duration,
    bytes: ByteCounter,
    stop: Arc<AtomicBool>,
    /// Why reading stopped for good (the reader lease went to another instance).
    fatal: Mutex<Option<String>>,
}

impl Shared {
    fn partitions(&self) -> std::sync::MutexGuard<'_, HashMap<i32, PartitionState>> {
        self.partitions.lock().expect("partition state lock")
    }
}

/// `crowsnest-HOST-PID-NONCE`: HOST is the pod's name on Kubernetes, the nonce tells apart
/// two processes that reuse a PID (containers restarted on one host).
fn instance_name() -> String {
    let host = std::env::var("HOSTNAME").ok().filter(|h| !h.is_empty()).unwrap_or_else(|| "host".into());
    let nonce = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    format!("crowsnest-{host}-{}-{nonce:08x}", std::process::id())
}

/// A fixed token for local stand-ins and the Event Hubs emulator, which accept any: nothing
/// secret, and refused by configuration unless the endpoint is a loopback address.
#[derive(Debug)]
struct EmulatorCredential;

#[async_trait::async_trait]
impl TokenCredential for EmulatorCredential {
    async fn get_token(&self, _scopes: &[&str], _options: Option<TokenRequestOptions<'_>>) -> azure_core::Result<AccessToken> {
        Ok(AccessToken::new("crowsnest-emulator", azure_core::time::OffsetDateTime::now_utc() + azure_core::time::Duration::hours(1)))
    }
}

/// The credential reading the hub.
fn hub_credential(cfg: &EventHubsConfig) -> Result<Arc<dyn TokenCredential>> {
    Ok(match cfg.hub_auth()? {
        Auth::Entra(method) => crate::azure::credential(&cfg.identity(method), None)?,
        Auth::Emulator => Arc::new(EmulatorCredential),
        Auth::Sas => anyhow::bail!("[source] auth = \"sas\" is for checkpoint_auth only: Event Hubs reads need an Entra identity"),
    })
}

/// The checkpoint container's client, signed in as `checkpoint_auth` says.
pub(crate) fn container_client(cfg: &EventHubsConfig) -> Result<BlobContainerClient> {
    let mut url = cfg.checkpoint_url()?;
    let credential = match cfg.checkpoint_auth()? {
        Auth::Sas => {
            let var = cfg.sas_env();
            let sas = std::env::var(var).ok().filter(|s| !s.is_empty()).with_context(|| {
                format!("[source] checkpoint_auth = \"sas\": set {var} to an account or container SAS token (sv=…&sig=…)")
            })?;
            url.set_query(Some(sas.trim_start_matches('?')));
            None
        }
        Auth::Entra(method) => Some(crate::azure::credential(&cfg.identity(method), None)?),
        Auth::Emulator => anyhow::bail!("[source] checkpoint_auth = \"emulator\": Blob Storage takes \"sas\" or an Entra identity"),
    };
    #[allow(clippy::field_reassign_with_default)] // a non-exhaustive option struct
    let options = {
        let mut o = BlobContainerClientOptions::default();
        o.version = BLOB_API_VERSION.to_string();
        o
    };
    BlobContainerClient::new(url, credential, Some(options))
        .map_err(|e| anyhow::anyhow!("[source] checkpoints: {}", crate::url::hide_signatures(&e.to_string())))
}

pub struct EventHubsSource {
    name: String,
    shared: Arc<Shared>,
    chunks: std::sync::mpsc::Receiver<Chunk>,
    writer: committer::Writer,
}

/// Chunks waiting between the readers and the pipeline: enough to keep the decoders busy, few
/// enough that a stalled pipeline stops the readers soon.
const CHANNEL_CHUNKS: usize = 8;

impl EventHubsSource {
    /// Starts reading: the processor connects in the background (failures are logged and
    /// retried, as a service must); configuration errors fail here.
    pub fn new(cfg: &EventHubsConfig, limits: FramingLimits, bytes: ByteCounter, stop: Arc<AtomicBool>, metrics: Metrics) -> Result<Self> {
        cfg.validate()?;
        let credential = hub_credential(cfg)?;
        let container = container_client(cfg)?;
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting the Event Hubs runtime")?;
        let shared = Arc::new(Shared {
            cfg: cfg.clone(),
            instance: instance_name(),
            hub: cfg.hub.as_str().into(),
            partitions: Mutex::new(HashMap::new()),
            generation: AtomicU64::new(0),
            metrics,
            limits,
            linger: Duration::from_millis(100),
            bytes,
            stop,
            fatal: Mutex::new(None),
        });
        let lease = match cfg.instances {
            config::Instances::Standby => Some(leader::Lease::new(cfg, &shared.instance)?),
            config::Instances::Share => None,
        };
        let store = azure_messaging_eventhubs_checkpointstore_blob::BlobCheckpointStore::new(container);
        let (tx, chunks) = std::sync::mpsc::sync_channel(CHANNEL_CHUNKS);
        let (writer, checkpoints) = committer::Writer::new();
        let (s, st) = (shared.clone(), store.clone());
        // The thread lives until the pipeline stopped and the last checkpoint is written: the
        // writer ends when the source and its committer are both gone.
        std::thread::Builder::new()
            .name("cn-eventhubs".into())
            .spawn(move || {
                let local = tokio::task::LocalSet::new();
                local.block_on(&runtime, async move {
                    let reading = tokio::task::spawn_local(reader::supervise(s.clone(), credential, st.clone(), tx, lease));
                    committer::write(checkpoints, s, st).await;
                    // The reader gives its lease back on the way out, so a standby need not
                    // wait for it to run out; not forever, though.
                    let _ = tokio::time::timeout(Duration::from_secs(10), reading).await;
                });
            })
            .context("starting the Event Hubs thread")?;
        log::info!("event hubs: {}", cfg.describe());
        Ok(EventHubsSource { name: cfg.name(), shared, chunks, writer })
    }
}

impl Source for EventHubsSource {
    fn name(&self) -> &str {
        &self.name
    }

    fn next_chunk(&mut self) -> io::Result<Option<Chunk>> {
        loop {
            if self.shared.stop.load(Ordering::Relaxed) {
                // What was received but not handed over is not checkpointed: read again later.
                return Ok(None);
            }
            match self.chunks.recv_timeout(Duration::from_millis(200)) {
                Ok(chunk) => return Ok(Some(chunk)),
                Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) if self.shared.stop.load(Ordering::Relaxed) => return Ok(None),
                Err(RecvTimeoutError::Disconnected) => {
                    let why = self.shared.fatal.lock().expect("fatal lock").clone();
                    return Err(io::Error::other(why.unwrap_or_else(|| "event hubs: the reader stopped".into())));
                }
            }
        }
    }

    fn committer(&self) -> Option<Box<dyn OffsetCommitter>> {
        Some(Box::new(committer::EventHubsCommitter { shared: self.shared.clone(), writer: self.writer.clone() }))
    }
}
