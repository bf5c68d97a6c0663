//! Running a client's statement safely: read-only planning, a memory pool and a deadline of its
//! own, a bounded number running at once, results streamed as they come, and one log line per
//! query (user, SHA-256 of the text, rows, bytes, time, outcome; never the token).

use std::sync::Arc;
use std::time::{Duration, Instant};

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::common::ScalarValue;
use datafusion::error::DataFusionError;
use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
use datafusion::execution::memory_pool::{GreedyMemoryPool, TrackConsumersPool};
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::execution::session_state::SessionStateBuilder;
use datafusion::prelude::{DataFrame, SessionContext};
use futures::{FutureExt, Stream, StreamExt};
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, Semaphore};
use tonic::Status;

use crate::hunt::session::read_only;

/// Per-query bounds.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Memory one query may hold for sorts, joins and aggregations. Nothing spills to disk: a
    /// query that needs more fails with RESOURCE_EXHAUSTED and the server serves on.
    pub memory_bytes: usize,
    /// Wall-clock time from the moment a query has its slot to the last row sent.
    pub timeout: Duration,
    /// Queries executing at once; more wait (up to `timeout`) for a slot.
    pub max_concurrent: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { memory_bytes: 512 << 20, timeout: Duration::from_secs(300), max_concurrent: 4 }
    }
}

pub struct Executor {
    base: SessionContext,
    limits: Limits,
    slots: Arc<Semaphore>,
}

/// The first 16 hex digits of the text's SHA-256: enough to match a log line to a query a
/// user shows you, without writing what may hold names or indicators into the log.
pub fn text_hash(sql: &str) -> String {
    Sha256::digest(sql.as_bytes()).iter().take(8).map(|b| format!("{b:02x}")).collect()
}

impl Executor {
    pub fn new(base: SessionContext, limits: Limits) -> Executor {
        let slots = Arc::new(Semaphore::new(limits.max_concurrent.max(1)));
        Executor { base, limits, slots }
    }

    pub fn context(&self) -> &SessionContext {
        &self.base
    }

    /// Plans a statement without running it (its schema, its parameters), refusing anything
    /// that is not a read.
    pub async fn plan(&self, sql: &str, params: Option<&[ScalarValue]>) -> Result<DataFrame, Status> {
        plan_in(&self.base, sql, params).await
    }

    /// Runs a statement; its rows stream out through the returned channel. The query's task
    /// ends (and its plan is dropped, stopping every operator) when the client goes away.
    pub async fn execute(
        &self,
        user: &str,
        sql: &str,
        params: Option<Vec<ScalarValue>>,
    ) -> Result<(SchemaRef, impl Stream<Item = Result<RecordBatch, Status>> + Send + 'static), Status> {
        let log = QueryLog::start(user, sql);
        let permit = match tokio::time::timeout(self.limits.timeout, self.slots.clone().acquire_owned()).await {
            Ok(Ok(p)) => p,
            _ => {
                let status = Status::resource_exhausted(format!(
                    "{} queries are running and none finished within {:?}: try again later",
                    self.limits.max_concurrent, self.limits.timeout
                ));
                log.finish(0, 0, &Err(status.clone()));
                return Err(status);
            }
        };
        // The time limit runs from the moment the query has its slot: planning (a hunt table
        // function plans inside its scan), execution, and every send to the client.
        let limits = self.limits.clone();
        let deadline = tokio::time::Instant::now() + limits.timeout;
        let late = move |rows: u64| {
            Status::deadline_exceeded(format!(
                "the query ran past its time limit of {:?} (serve-sql --query-timeout) after {rows} rows",
                limits.timeout
            ))
        };
        let prepared = async {
            let ctx = self.limited_context().map_err(|e| Status::internal(e.to_string()))?;
            let df = plan_in(&ctx, sql, params.as_deref()).await?;
            df.execute_stream().await.map_err(|e| status_of(e, &self.limits))
        };
        let mut stream = match tokio::time::timeout_at(deadline, prepared).await.unwrap_or_else(|_| Err(late(0))) {
            Ok(s) => s,
            Err(status) => {
                log.finish(0, 0, &Err(status.clone()));
                return Err(status);
            }
        };
        let schema = stream.schema();
        let (tx, rx) = mpsc::channel::<Result<RecordBatch, Status>>(2);
        let limits = self.limits.clone();
        let fail = tx.clone();
        let stream_rows = async move {
            let (mut rows, mut bytes) = (0u64, 0u64);
            // A send waits for the client to read; one that stops reading runs into the deadline
            // like a slow query, and its slot and memory are given back.
            let send = |tx: &mpsc::Sender<_>, item| {
                let tx = tx.clone();
                async move {
                    match tokio::time::timeout_at(deadline, tx.send(item)).await {
                        Ok(Ok(())) => Ok(()),
                        Ok(Err(_)) => Err(Status::cancelled("the client went away")),
                        Err(_) => Err(Status::deadline_exceeded("the client did not read the result within the query's time limit")),
                    }
                }
            };
            let outcome = loop {
                let next = tokio::select! {
                    n = tokio::time::timeout_at(deadline, stream.next()) => n,
                    _ = tx.closed() => break Err(Status::cancelled("the client went away")),
                };
                let failed = match next {
                    Err(_) => late(rows),
                    Ok(None) => break Ok(()),
                    Ok(Some(Err(e))) => status_of(e, &limits),
                    Ok(Some(Ok(batch))) => {
                        rows += batch.num_rows() as u64;
                        bytes += batch.get_array_memory_size() as u64;
                        match send(&tx, Ok(batch)).await {
                            Ok(()) => continue,
                            Err(s) => break Err(s),
                        }
                    }
                };
                let _ = send(&tx, Err(failed.clone())).await;
                break Err(failed);
            };
            (rows, bytes, outcome)
        };
        tokio::spawn(async move {
            let _permit = permit;
            // A panic inside an operator must not look like a short, complete result.
            let (rows, bytes, outcome) = match std::panic::AssertUnwindSafe(stream_rows).catch_unwind().await {
                Ok(done) => done,
                Err(_) => {
                    let s = Status::internal("the query failed inside the engine (a bug: the server log has the panic)");
                    let _ = fail.try_send(Err(s.clone()));
                    (0, 0, Err(s))
                }
            };
            log.finish(rows, bytes, &outcome);
        });
        let rows = futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) });
        Ok((schema, rows))
    }

    /// A session over the same catalog with this query's own memory pool; no spilling.
    fn limited_context(&self) -> datafusion::error::Result<SessionContext> {
        let pool = TrackConsumersPool::new(GreedyMemoryPool::new(self.limits.memory_bytes), std::num::NonZeroUsize::new(3).expect("3"));
        let runtime = RuntimeEnvBuilder::from_runtime_env(&self.base.runtime_env())
            .with_memory_pool(Arc::new(pool))
            .with_disk_manager_builder(DiskManagerBuilder::default().with_mode(DiskManagerMode::Disabled))
            .build_arc()?;
        let state = SessionStateBuilder::new_from_existing(self.base.state()).with_runtime_env(runtime).build();
        Ok(SessionContext::new_with_state(state))
    }
}

async fn plan_in(ctx: &SessionContext, sql: &str, params: Option<&[ScalarValue]>) -> Result<DataFrame, Status> {
    let df = ctx.sql_with_options(sql, read_only()).await.map_err(refusal)?;
    match params {
        Some(p) if !p.is_empty() => df.with_param_values(p.to_vec()).map_err(|e| Status::invalid_argument(e.to_string())),
        _ => Ok(df),
    }
}

/// A planning error: a write is refused as such, anything else is the statement's fault.
fn refusal(e: DataFusionError) -> Status {
    let msg = e.to_string();
    if msg.contains("not supported") && (msg.contains("DDL") || msg.contains("DML") || msg.contains("Statement")) {
        Status::permission_denied(format!("crowsnest serves read-only SQL: {msg}"))
    } else {
        Status::invalid_argument(msg)
    }
}

/// An execution error, with the memory limit named when it is the cause.
fn status_of(e: DataFusionError, limits: &Limits) -> Status {
    let msg = e.to_string();
    if matches!(e.find_root(), DataFusionError::ResourcesExhausted(_)) || msg.contains("Resources exhausted") {
        Status::resource_exhausted(format!(
            "the query needs more than its memory limit of {} MiB (serve-sql --memory-limit-mb): {msg}",
            limits.memory_bytes >> 20
        ))
    } else {
        Status::internal(msg)
    }
}

/// The log line of one statement, written when it ends (or is refused before it runs).
pub struct QueryLog {
    user: String,
    hash: String,
    started: Instant,
}

impl QueryLog {
    pub fn start(user: &str, sql: &str) -> QueryLog {
        QueryLog { user: user.to_string(), hash: text_hash(sql), started: Instant::now() }
    }

    pub fn finish(&self, rows: u64, bytes: u64, outcome: &Result<(), Status>) {
        let ms = self.started.elapsed().as_millis();
        match outcome {
            Ok(()) => {
                log::info!(target: "crowsnest::sql", "query user={} sql_sha256={} rows={rows} bytes={bytes} ms={ms} outcome=ok", self.user, self.hash)
            }
            // The code only: an error's message may quote the statement (names, indicators).
            Err(s) => log::warn!(
                target: "crowsnest::sql",
                "query user={} sql_sha256={} rows={rows} bytes={bytes} ms={ms} outcome={:?}",
                self.user,
                self.hash,
                s.code()
            ),
        }
    }
}
