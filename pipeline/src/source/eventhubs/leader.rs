//! Standby mode: one reading instance per consumer group, the others waiting to take over.
//!
//! Why not share the partitions by default: AKS diagnostic settings spread records over the
//! partitions with no key, so every user's, pod's and address's events land on all of them.
//! Instances that split the partitions each see a share of every key's events, and a rule
//! counting 15 denials in 10 minutes would count a fraction of them in each. The instance
//! holding a Blob lease reads every partition; the others renew nothing and try for the lease
//! every few seconds. When the reader dies its lease runs out (`ownership_expiry`, 15–60 s), a
//! standby takes it, and its processor resumes every partition from the checkpoints with fresh
//! windows: what a restart does, so the same alert ids come out.
//!
//! A leader that loses its lease (storage unreachable for longer than the lease) stops reading
//! with an error instead of resuming later: its windows would have missed what the other
//! instance read meanwhile. Its supervisor (Kubernetes) restarts it as a standby.

use std::time::Duration;

use anyhow::{anyhow, Result};
use azure_core::http::{NoFormat, RequestContent, StatusCode};
use azure_storage_blob::models::{BlobClientAcquireLeaseOptions, BlockBlobClientUploadOptions};
use azure_storage_blob::BlobClient;

use super::config::EventHubsConfig;

pub(super) struct Lease {
    blob: BlobClient,
    id: String,
    /// Seconds the service keeps the lease without renewal.
    seconds: i32,
}

impl Lease {
    pub(super) fn new(cfg: &EventHubsConfig, instance: &str) -> Result<Lease> {
        let container = super::container_client(cfg)?;
        let blob = container.blob_client(&format!("{}/{}/{}/crowsnest-reader", cfg.namespace, cfg.hub, cfg.group));
        // Blob leases last 15 to 60 seconds.
        let seconds = cfg.ownership_expiry().as_secs().clamp(15, 60) as i32;
        Ok(Lease { blob, id: lease_id(instance), seconds })
    }

    /// How long the service keeps the lease without a renewal.
    pub(super) fn duration(&self) -> Duration {
        Duration::from_secs(self.seconds as u64)
    }

    /// How often a held lease is renewed: three times per lease, so one failed renewal is
    /// survived.
    pub(super) fn renew_every(&self) -> Duration {
        Duration::from_secs((self.seconds / 3).max(1) as u64)
    }

    /// Takes the lease if nobody holds it: true when it is ours.
    pub(super) async fn acquire(&self, cfg: &EventHubsConfig) -> Result<bool> {
        // The lease needs its blob: created once, by whichever instance comes first.
        let create = BlockBlobClientUploadOptions { if_none_match: Some("*".into()), ..Default::default() };
        match self.blob.upload(RequestContent::<azure_core::Bytes, NoFormat>::from(Vec::new()), Some(create)).await {
            Ok(_) => {}
            Err(e) if matches!(e.http_status(), Some(StatusCode::Conflict) | Some(StatusCode::PreconditionFailed)) => {}
            Err(e) => return Err(anyhow!("creating the reader lease blob: {}", super::validate::explain_storage(&e, cfg))),
        }
        let options = BlobClientAcquireLeaseOptions { proposed_lease_id: Some(self.id.clone()), ..Default::default() };
        match self.blob.acquire_lease(self.seconds, Some(options)).await {
            Ok(_) => Ok(true),
            Err(e) if e.http_status() == Some(StatusCode::Conflict) => Ok(false),
            Err(e) => Err(anyhow!("taking the reader lease: {}", super::validate::explain_storage(&e, cfg))),
        }
    }

    /// Renews the lease: false when another instance holds it now.
    pub(super) async fn renew(&self, cfg: &EventHubsConfig) -> Result<bool> {
        match self.blob.renew_lease(self.id.clone(), None).await {
            Ok(_) => Ok(true),
            Err(e) if e.http_status() == Some(StatusCode::Conflict) => Ok(false),
            Err(e) => Err(anyhow!("renewing the reader lease: {}", super::validate::explain_storage(&e, cfg))),
        }
    }

    /// Gives the lease up at a clean stop, so a standby takes over at once.
    pub(super) async fn release(&self) {
        if let Err(e) = self.blob.release_lease(self.id.clone(), None).await {
            log::debug!("event hubs: releasing the reader lease: {}", crate::url::hide_signatures(&e.to_string()));
        }
    }
}

/// A lease id is a GUID: this instance's name hashed into one (stable for the process, so a
/// renewal after a reconnect is still ours).
fn lease_id(instance: &str) -> String {
    use sha2::{Digest, Sha256};
    let h = Sha256::digest(instance.as_bytes());
    let hex: String = h.iter().take(16).map(|b| format!("{b:02x}")).collect();
    format!("{}-{}-4{}-8{}-{}", &hex[0..8], &hex[8..12], &hex[13..16], &hex[17..20], &hex[20..32])
}

#[cfg(test)]
mod tests {
    #[test]
    fn lease_ids_are_guids_and_differ_per_instance() {
        let a = super::lease_id("crowsnest-pod-a-1-0000");
        let b = super::lease_id("crowsnest-pod-b-1-0000");
        assert_ne!(a, b);
        let parts: Vec<usize> = a.split('-').map(str::len).collect();
        assert_eq!(parts, [8, 4, 4, 4, 12], "{a}");
        assert!(a.chars().all(|c| c == '-' || c.is_ascii_hexdigit()));
    }
}
