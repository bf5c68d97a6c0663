//! Which partitions this instance owns, as the processor's own balancing decides it.
//!
//! Every balancing round ends with one `claim_ownership` call holding every partition the
//! processor keeps (renewals) or takes, and its answer is what it now owns: the processor
//! revokes any other partition it reads. SDK 0.15 revokes by asking the partition's receiver to
//! close, which does not end a receive already waiting for a message, so on a quiet partition
//! the old reader — and its link, one of the five a consumer group may hold per partition —
//! would live on. The readers therefore watch the answers here and stop on their own.

use std::collections::HashSet;
use std::sync::Arc;

use azure_core::Result;
use azure_messaging_eventhubs::models::{Checkpoint, Ownership};
use azure_messaging_eventhubs::CheckpointStore;
use azure_messaging_eventhubs_checkpointstore_blob::BlobCheckpointStore;
use tokio::sync::watch;

/// The partitions owned after the last balancing round; None before the first one.
pub(super) type Owned = watch::Receiver<Option<HashSet<String>>>;

/// The Blob checkpoint store, with every ownership answer published to the readers.
pub(super) struct WatchedStore {
    inner: Arc<BlobCheckpointStore>,
    owned: watch::Sender<Option<HashSet<String>>>,
}

impl WatchedStore {
    pub(super) fn new(inner: Arc<BlobCheckpointStore>) -> (Arc<WatchedStore>, Owned) {
        let (owned, rx) = watch::channel(None);
        (Arc::new(WatchedStore { inner, owned }), rx)
    }
}

#[async_trait::async_trait]
impl CheckpointStore for WatchedStore {
    async fn claim_ownership(&self, ownerships: &[Ownership]) -> Result<Vec<Ownership>> {
        let claimed = self.inner.claim_ownership(ownerships).await?;
        self.owned.send_replace(Some(claimed.iter().map(|o| o.partition_id.clone()).collect()));
        Ok(claimed)
    }

    async fn list_checkpoints(&self, namespace: &str, event_hub_name: &str, consumer_group: &str) -> Result<Vec<Checkpoint>> {
        self.inner.list_checkpoints(namespace, event_hub_name, consumer_group).await
    }

    async fn list_ownerships(&self, namespace: &str, event_hub_name: &str, consumer_group: &str) -> Result<Vec<Ownership>> {
        self.inner.list_ownerships(namespace, event_hub_name, consumer_group).await
    }

    async fn update_checkpoint(&self, checkpoint: Checkpoint) -> Result<()> {
        self.inner.update_checkpoint(checkpoint).await
    }
}

/// Whether `partition` is still owned (true until the first answer).
pub(super) fn still_owned(owned: &Owned, partition: &str) -> bool {
    owned.borrow().as_ref().is_none_or(|set| set.contains(partition))
}
