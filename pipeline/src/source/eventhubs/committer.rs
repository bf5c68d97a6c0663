//! Checkpoints: the pipeline's safe positions written to the Blob checkpoint store, one blob per
//! partition, at the commit interval. Writes go through one task, in order, so a slow write
//! can never be overtaken by an older position.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Result};
use azure_messaging_eventhubs::models::Checkpoint;
use azure_messaging_eventhubs::CheckpointStore;
use azure_messaging_eventhubs_checkpointstore_blob::BlobCheckpointStore;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

use super::Shared;
use crate::source::{OffsetCommitter, SourceOffsets};

/// How long a final (shutdown) commit waits for Blob Storage.
const FINAL_WAIT: Duration = Duration::from_secs(30);

/// One round of checkpoints: (partition, the sequence number after the last message handled,
/// the checkpoint to write).
pub(super) struct Round {
    checkpoints: Vec<(i32, i64, Checkpoint)>,
    done: Option<std::sync::mpsc::Sender<Result<()>>>,
}

/// The handle to the writer task.
#[derive(Clone)]
pub struct Writer {
    tx: UnboundedSender<Round>,
}

impl Writer {
    pub(super) fn new() -> (Writer, UnboundedReceiver<Round>) {
        let (tx, rx) = unbounded_channel::<Round>();
        (Writer { tx }, rx)
    }
}

/// The writer task: rounds in order until every [`Writer`] is dropped.
pub(super) async fn write(mut rounds: UnboundedReceiver<Round>, shared: Arc<Shared>, store: Arc<BlobCheckpointStore>) {
    while let Some(round) = rounds.recv().await {
        let mut failures = Vec::new();
        for (partition, next, checkpoint) in round.checkpoints {
            match store.update_checkpoint(checkpoint).await {
                Ok(()) => {
                    shared.metrics.offset_commits.with_label_values(&["ok"]).inc();
                    if let Some(o) = shared.partitions().get_mut(&partition) {
                        o.committed = Some(o.committed.map_or(next, |c| c.max(next)));
                    }
                }
                Err(e) => {
                    shared.metrics.offset_commits.with_label_values(&["error"]).inc();
                    failures.push(format!("partition {partition}: {}", super::validate::explain_storage(&e, &shared.cfg)));
                }
            }
        }
        let result = if failures.is_empty() {
            Ok(())
        } else {
            Err(anyhow!("event hubs: writing checkpoints failed ({}); the next checkpoint writes again", failures.join("; ")))
        };
        match round.done {
            Some(done) => {
                let _ = done.send(result);
            }
            None => {
                if let Err(e) = result {
                    log::warn!("{e:#}");
                }
            }
        }
    }
}

pub struct EventHubsCommitter {
    pub(super) shared: Arc<Shared>,
    pub(super) writer: Writer,
}

impl OffsetCommitter for EventHubsCommitter {
    fn owns(&self, topic: &str, partition: i32) -> bool {
        *topic == *self.shared.hub && self.shared.partitions().contains_key(&partition)
    }

    fn streams_with_backlog(&self) -> Vec<Arc<str>> {
        self.shared
            .partitions()
            .iter()
            .filter(|(_, o)| o.lag > 0)
            .map(|(p, _)| Arc::from(format!("eventhubs:{}/{p}", self.shared.hub)))
            .collect()
    }

    fn commit(&self, offsets: &[SourceOffsets], wait: bool) -> Result<()> {
        let cfg = &self.shared.cfg;
        let mut checkpoints = Vec::new();
        {
            let mut parts = self.shared.partitions();
            for o in offsets.iter().filter(|o| *o.topic == *self.shared.hub) {
                // A partition given up is checkpointed by its new owner.
                let Some(owned) = parts.get_mut(&o.partition) else { continue };
                // The end of the chunk the safe position closes: its last message's offset.
                while owned.ends.front().is_some_and(|(next, _)| *next < o.next) {
                    owned.ends.pop_front();
                }
                let Some((next, offset)) = owned.ends.front().cloned() else { continue };
                if next != o.next || owned.committed.is_some_and(|c| c >= next) {
                    continue;
                }
                checkpoints.push((
                    o.partition,
                    next,
                    Checkpoint {
                        fully_qualified_namespace: cfg.namespace.clone(),
                        event_hub_name: cfg.hub.clone(),
                        consumer_group: cfg.group.clone(),
                        partition_id: o.partition.to_string(),
                        offset: (!offset.is_empty()).then_some(offset),
                        sequence_number: Some(next - 1),
                    },
                ));
            }
        }
        if checkpoints.is_empty() {
            return Ok(());
        }
        if !wait {
            let _ = self.writer.tx.send(Round { checkpoints, done: None });
            return Ok(());
        }
        let (done, result) = std::sync::mpsc::channel();
        self.writer.tx.send(Round { checkpoints, done: Some(done) }).map_err(|_| anyhow!("event hubs: the checkpoint writer stopped"))?;
        result
            .recv_timeout(FINAL_WAIT)
            .map_err(|_| anyhow!("event hubs: Blob Storage did not confirm the final checkpoints within {} s", FINAL_WAIT.as_secs()))?
    }
}
