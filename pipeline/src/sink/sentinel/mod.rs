//! Alerts into Microsoft Sentinel through the Azure Monitor Logs Ingestion API.
//!
//! ```text
//! send() ─rows─► Batcher ─batch (≤1 MB)─► Spool (fsynced) ─oldest first─► Sender ─gzip POST─► DCR stream
//!  engine thread          cut on size or batch_timeout       on disk          own thread, retries
//! ```
//!
//! A batch counts as delivered for checkpointing once it is in the spool ([`Sink::flush`] spools
//! the open batch), so a Kafka offset is committed only when every alert derived from it is on
//! disk or in Azure. The spool is bounded: when full, `send` waits, and the wait reaches the
//! source as back-pressure. Alert ids are deterministic, so a retry after an unknown outcome
//! repeats a row at worst (deploy/sentinel/dedup.kql drops repeats).
//!
//! Modules: [`config`] (settings, URL form), [`row`] (the alert as table columns), [`request`]
//! (bodies under the size limit, gzip), [`spool`], [`auth`] (Entra ID through azure_identity),
//! [`service`] (the sender and its retry policy), [`check`] (`crowsnest validate --check`).

pub mod asim_columns;
pub mod auth;
pub mod check;
pub mod config;
pub mod events;
pub mod request;
pub mod row;
pub mod service;
pub mod spool;
pub mod tactics;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

use crate::deadletter::{DeadLetter, Reason};
use crate::metrics::Metrics;

use self::config::SentinelConfig;
use self::request::{Batcher, Body};
use self::service::{Sender, Step};
use self::spool::Spool;
use super::{Record, Sink};

/// The streams the sink sends, as published in schemas/sentinel/: the alert row, and the
/// forwarded events' ASIM columns.
pub fn published_streams() -> Vec<(&'static str, serde_json::Value)> {
    use serde_json::json;
    let alert_columns: Vec<_> = row::COLUMNS.iter().map(|(n, t)| json!({"name": n, "type": t, "description": row::describe(n)})).collect();
    let asim_columns: Vec<_> = asim_columns::ASIM_AUDIT_COLUMNS.iter().map(|(n, t)| json!({"name": n, "type": t})).collect();
    vec![
        (
            config::DEFAULT_STREAM,
            json!({
                "stream": config::DEFAULT_STREAM,
                "table": "Crowsnest_Alerts_CL",
                "description": "One row per Crowsnest alert (the alert schema, schemas/alerts.json, flattened for Log Analytics)",
                "columns": alert_columns,
            }),
        ),
        (
            config::DEFAULT_EVENTS_STREAM,
            json!({
                "stream": config::DEFAULT_EVENTS_STREAM,
                "table": "ASimAuditEventLogs",
                "description": "One row per forwarded kube_audit event, ASIM Audit Event columns (mapping: pipeline/src/sink/sentinel/asim_audit.sql)",
                "columns": asim_columns,
            }),
        ),
    ]
}

/// Where the sink's own dead letters go (rows the service refused, rows too large for any
/// request): an output of its own, opened on the same destination as the pipeline's.
#[derive(Clone)]
pub struct DeadLetterOut(Arc<Mutex<Box<dyn Sink>>>);

impl DeadLetterOut {
    pub fn new(sink: Box<dyn Sink>) -> Self {
        DeadLetterOut(Arc::new(Mutex::new(sink)))
    }

    /// Writes and flushes: once this returns the letters are durable.
    pub fn write(&self, letters: &[DeadLetter]) -> Result<()> {
        if letters.is_empty() {
            return Ok(());
        }
        let records: Vec<Record> = letters.iter().map(|dl| Record::new(format!("{} {}", dl.source, dl.position), dl)).collect();
        let mut sink = self.0.lock().map_err(|_| anyhow!("dead-letter output poisoned"))?;
        sink.send(&records)?;
        sink.flush()
    }
}

/// What the sink's two threads share.
pub struct Shared {
    state: Mutex<State>,
    /// Signals the engine thread waiting for room in the spool or for the drain.
    changed: Condvar,
    /// Wakes the sender (a batch spooled, a stop).
    wake: tokio::sync::Notify,
    /// Cuts short a request in flight when the sink is dropped or its drain time is over.
    abandoned: tokio::sync::Notify,
    metrics: Metrics,
    stream: String,
}

struct State {
    batcher: Batcher,
    spool: Spool,
    /// The pipeline finished: send what is open, then the sender may stop when asked.
    finishing: bool,
    /// Stop now, leaving the spool for the next start.
    abandon: bool,
    last_error: Option<String>,
    /// Batches cut but not yet written to the spool (a write failed: a full disk); written
    /// first at the next attempt, and until then `flush` fails, so no offset is committed past
    /// them.
    unspooled: Vec<Body>,
}

impl State {
    /// Writes `body` (after any batch still waiting to be written) to the spool. On failure the
    /// batch is kept for the next attempt, never dropped.
    fn spool(&mut self, body: Option<Body>) -> Result<()> {
        self.unspooled.extend(body);
        while let Some(first) = self.unspooled.first() {
            self.spool.push(first)?;
            self.unspooled.remove(0);
        }
        Ok(())
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // The state holds no invariant a panic could break halfway: keep going.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn update_gauges(&self, st: &State) {
        self.metrics.sentinel_spool_bytes.with_label_values(&[&self.stream]).set(st.spool.bytes() as i64);
        self.metrics.sentinel_spool_oldest_seconds.with_label_values(&[&self.stream]).set(st.spool.oldest_age().as_secs() as i64);
    }

    /// The sender's next step; spools the open batch first when its time is up.
    fn next_to_send(&self, batch_timeout: Duration) -> Step {
        let mut st = self.lock();
        if st.abandon {
            return Step::Abandon;
        }
        let due = st.batcher.opened.is_some_and(|t| st.finishing || t.elapsed() >= batch_timeout);
        if due || !st.unspooled.is_empty() {
            let body = st.batcher.cut();
            if let Err(e) = st.spool(body) {
                // Kept in memory; flush reports it, so nothing past it is committed.
                log::error!("{e:#}");
                st.last_error = Some(format!("{e:#}"));
            }
        }
        self.update_gauges(&st);
        match st.spool.oldest() {
            Some(e) => Step::Send(e),
            None => {
                self.changed.notify_all();
                let wait = st.batcher.opened.map_or(Duration::from_secs(1), |t| batch_timeout.saturating_sub(t.elapsed()));
                Step::Idle(wait.max(Duration::from_millis(10)))
            }
        }
    }

    fn delivered(&self, seq: u64) {
        let mut st = self.lock();
        if let Err(e) = st.spool.remove(seq) {
            log::error!("{e:#}");
        }
        st.last_error = None;
        self.update_gauges(&st);
        self.changed.notify_all();
    }

    /// Puts `parts` in the place of batch `seq`: all of them, or none (a half written alone
    /// would be sent again with the whole at the next try).
    fn replace(&self, seq: u64, parts: &[Body]) -> Result<()> {
        let mut st = self.lock();
        let mut written = Vec::new();
        // The halves are durable before the whole goes.
        let halves = parts.iter().try_for_each(|p| st.spool.push(p).map(|e| written.push(e.seq))).and_then(|_| st.spool.sync());
        if let Err(e) = halves {
            for w in written {
                let _ = st.spool.remove(w);
            }
            return Err(e);
        }
        st.spool.remove(seq)?;
        self.update_gauges(&st);
        Ok(())
    }

    fn set_error(&self, e: String) {
        self.lock().last_error = Some(e);
    }

    fn last_error(&self) -> Option<String> {
        self.lock().last_error.clone()
    }
}

/// How long [`Sink::finish`] waits for the spool to drain.
#[derive(Debug, Clone)]
pub enum Drain {
    /// A replay: until everything is delivered (what is left when it is interrupted stays in
    /// the spool for the next run).
    Complete,
    /// A service stopping: at most this long, for every sink given a clone of this `Drain`
    /// together (the alerts' and the events' spools drain one after the other, within one
    /// `drain_timeout`, not one each: a pod's grace period is one).
    AtMost(Duration, Arc<std::sync::OnceLock<Instant>>),
}

impl Drain {
    pub fn at_most(d: Duration) -> Drain {
        Drain::AtMost(d, Arc::default())
    }
}

pub struct SentinelSink {
    label: String,
    cfg: SentinelConfig,
    shared: Arc<Shared>,
    sender: Option<JoinHandle<()>>,
    dead: DeadLetterOut,
    drain: Drain,
    last_wait_log: Option<Instant>,
    /// Records are alerts to map to rows (the alert stream), or rows already (forwarded events).
    prebuilt: bool,
    stop: Option<Arc<AtomicBool>>,
}

impl SentinelSink {
    /// Opens the spool (taking over what an earlier run left), builds the credential and starts
    /// the sender. Fails on what cannot work at all (no identity settings, unreadable CA file,
    /// spool in use); an unreachable or refusing service is retried, not an error here.
    pub fn new(cfg: &SentinelConfig, state_dir: Option<&Path>, dead: DeadLetterOut, metrics: Metrics, drain: Drain) -> Result<Self> {
        Self::with_slow_retry(cfg, state_dir, dead, metrics, drain, Duration::from_secs(30))
    }

    /// As [`SentinelSink::new`], with the first slow retry after a 401/403 given (tests).
    pub fn with_slow_retry(
        cfg: &SentinelConfig,
        state_dir: Option<&Path>,
        dead: DeadLetterOut,
        metrics: Metrics,
        drain: Drain,
        slow_retry: Duration,
    ) -> Result<Self> {
        cfg.validate()?;
        let http = auth::http_client(cfg)?;
        let auth = auth::Auth::new(cfg, http.clone())?;
        let dir = cfg.spool_dir(state_dir);
        let spool = Spool::open(&dir)?;
        if !spool.is_empty() {
            log::warn!(
                "{}: {} batches ({} alerts) left in the spool {} by an earlier run are sent first",
                cfg.describe(),
                spool.len(),
                spool.records(),
                dir.display()
            );
        }
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                batcher: Batcher::new(cfg.max_request_bytes),
                spool,
                finishing: false,
                abandon: false,
                last_error: None,
                unspooled: Vec::new(),
            }),
            changed: Condvar::new(),
            wake: tokio::sync::Notify::new(),
            abandoned: tokio::sync::Notify::new(),
            metrics: metrics.clone(),
            stream: cfg.stream.clone(),
        });
        let sender =
            Sender { cfg: cfg.clone(), shared: shared.clone(), http, auth, dead: dead.clone(), metrics, slow_retry, wire_bytes: 0 };
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting the sentinel sender")?;
        let handle = std::thread::Builder::new().name("cn-sentinel".into()).spawn(move || rt.block_on(sender.run()))?;
        Ok(SentinelSink {
            label: cfg.describe(),
            cfg: cfg.clone(),
            shared,
            sender: Some(handle),
            dead,
            drain,
            last_wait_log: None,
            prebuilt: false,
            stop: None,
        })
    }

    /// Records sent are rows already (the forwarded-events stream), not alerts.
    pub fn prebuilt_rows(mut self) -> Self {
        self.prebuilt = true;
        self
    }

    /// Gives the sink the service's stop flag: a pipeline waiting for room in a full spool
    /// stops waiting when the service is asked to stop.
    pub fn with_stop(mut self, stop: Arc<AtomicBool>) -> Self {
        self.stop = Some(stop);
        self
    }

    /// Waits while the spool is full (back-pressure: the pipeline, then the source, slow down).
    /// Fails when the service is stopping meanwhile: what was not spooled is not committed, and
    /// the next start reads it again.
    fn wait_for_room<'a>(&mut self, mut st: MutexGuard<'a, State>) -> Result<MutexGuard<'a, State>> {
        while st.spool.bytes() >= self.cfg.max_spool_bytes && !st.abandon {
            if self.stop.as_ref().is_some_and(|s| s.load(Ordering::Relaxed)) {
                bail!("{}: stopping while the spool is full; the alerts not yet spooled are not committed and are read again at the next start", self.label);
            }
            if self.last_wait_log.is_none_or(|t| t.elapsed() > Duration::from_secs(30)) {
                log::warn!(
                    "{}: the spool is full ({} bytes in {} batches, oldest {}s); waiting for Azure ({})",
                    self.label,
                    st.spool.bytes(),
                    st.spool.len(),
                    st.spool.oldest_age().as_secs(),
                    st.last_error.as_deref().unwrap_or("no error yet")
                );
                self.last_wait_log = Some(Instant::now());
            }
            st = self.shared.changed.wait_timeout(st, Duration::from_secs(1)).map(|(g, _)| g).unwrap_or_else(|p| p.into_inner().0);
        }
        Ok(st)
    }

    /// Waits until the spool is empty, or the drain time is up.
    fn drain(&mut self) -> Result<()> {
        let deadline = match &self.drain {
            Drain::Complete => None,
            // The first sink to drain starts the clock for all of them.
            Drain::AtMost(d, deadline) => Some(*deadline.get_or_init(|| Instant::now() + *d)),
        };
        let started = Instant::now();
        let mut last_log = Instant::now();
        let mut st = self.shared.lock();
        st.finishing = true;
        self.shared.wake.notify_one();
        loop {
            if st.spool.is_empty() && st.batcher.is_empty() && st.unspooled.is_empty() {
                return Ok(());
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                log::warn!(
                    "{}: stopping with {} batches ({} alerts) not yet accepted; they stay in {} and are sent first at the next start",
                    self.label,
                    st.spool.len(),
                    st.spool.records(),
                    st.spool.dir().display()
                );
                return Ok(());
            }
            if last_log.elapsed() >= Duration::from_secs(10) {
                log::warn!(
                    "{}: waiting {}s for Azure to accept {} batches ({} alerts){}",
                    self.label,
                    started.elapsed().as_secs(),
                    st.spool.len(),
                    st.spool.records(),
                    st.last_error.as_deref().map(|e| format!("; last answer: {e}")).unwrap_or_default()
                );
                last_log = Instant::now();
            }
            st = self.shared.changed.wait_timeout(st, Duration::from_millis(200)).map(|(g, _)| g).unwrap_or_else(|p| p.into_inner().0);
        }
    }

    fn stop_sender(&mut self) {
        self.shared.lock().abandon = true;
        self.shared.wake.notify_one();
        self.shared.abandoned.notify_one();
        self.shared.changed.notify_all();
        if let Some(h) = self.sender.take() {
            let _ = h.join();
        }
    }
}

impl Sink for SentinelSink {
    fn name(&self) -> &str {
        &self.label
    }

    fn send(&mut self, records: &[Record]) -> Result<()> {
        // Alerts become rows here; forwarded events are rows already (borrowed, not copied).
        let mut rows: Vec<std::borrow::Cow<'_, [u8]>> = Vec::with_capacity(records.len());
        let mut too_large = Vec::new();
        for r in records {
            let json: std::borrow::Cow<'_, [u8]> = if self.prebuilt {
                std::borrow::Cow::Borrowed(&r.json)
            } else {
                let alert: serde_json::Value = serde_json::from_slice(&r.json).context("an alert that is not JSON")?;
                let Some(row) = row::alert_row(&alert) else { continue };
                std::borrow::Cow::Owned(serde_json::to_vec(&row)?)
            };
            if json.len() + 2 > self.cfg.max_request_bytes {
                let mut dl = DeadLetter::new(
                    &format!("sentinel:{}", self.cfg.stream),
                    if r.key.is_empty() { "row".to_string() } else { format!("alert {}", r.key) },
                    Reason::TooLarge,
                    format!("the row is {} bytes; a request may hold {} (max_request_bytes)", json.len(), self.cfg.max_request_bytes),
                    &json,
                );
                dl.record = serde_json::from_slice(&json).ok();
                too_large.push(dl);
                continue;
            }
            rows.push(json);
        }
        if !too_large.is_empty() {
            self.shared.metrics.sentinel_dead_letters.with_label_values(&[&self.cfg.stream]).inc_by(too_large.len() as u64);
            self.dead.write(&too_large)?;
        }
        let shared = self.shared.clone();
        let mut st = shared.lock();
        for row in rows {
            st = self.wait_for_room(st)?;
            // Size checked above: push cannot refuse it.
            if let Ok(Some(full)) = st.batcher.push(&row) {
                st.spool(Some(full))?;
                shared.update_gauges(&st);
                shared.wake.notify_one();
            }
        }
        Ok(())
    }

    /// Spools the open batch: once this returns, every alert sent is on disk or in Azure.
    fn flush(&mut self) -> Result<()> {
        let mut st = self.shared.lock();
        let body = st.batcher.cut();
        let spooled = st.spool(body).and_then(|_| st.spool.sync());
        self.shared.update_gauges(&st);
        self.shared.wake.notify_one();
        spooled.with_context(|| format!("{}: the batch waits in memory until the spool takes it", self.label))
    }

    fn finish(&mut self) -> Result<()> {
        self.flush()?;
        let result = self.drain();
        self.stop_sender();
        result
    }
}

impl Drop for SentinelSink {
    fn drop(&mut self) {
        self.stop_sender();
    }
}
