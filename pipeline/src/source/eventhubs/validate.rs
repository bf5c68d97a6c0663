//! What went wrong with Event Hubs or the checkpoint container, in a person's words, and the
//! checks `crowsnest validate` runs before a deployment: the hub answers, the consumer group
//! exists, the container can be listed and written.

use std::time::Duration;

use anyhow::{bail, Result};
use azure_messaging_eventhubs::{EventHubsError, OpenReceiverOptions, StartLocation, StartPosition};
use futures::StreamExt;

use super::config::EventHubsConfig;

/// The AMQP or HTTP error in `e`'s chain, rendered once for matching.
fn render(e: &dyn std::error::Error) -> String {
    let mut s = format!("{e} {e:?}");
    let mut source = e.source();
    while let Some(inner) = source {
        s.push_str(&format!(" | {inner} {inner:?}"));
        source = inner.source();
    }
    s
}

/// An Event Hubs error with what it most likely means.
pub fn explain(e: &EventHubsError, cfg: &EventHubsConfig) -> String {
    let text = render(e);
    let hint = if text.contains("UnauthorizedAccess") || text.contains("unauthorized-access") || text.contains("Unauthorized") {
        format!(
            " — the identity may not read {}: assign it the \"Azure Event Hubs Data Receiver\" role on the hub or namespace (a new role assignment takes minutes to apply)",
            cfg.hub
        )
    } else if text.contains("NotFound") || text.contains("not-found") || text.contains("could not be found") {
        format!(
            " — no event hub {:?} with consumer group {:?} in {}: check the hub name and that the consumer group exists (az eventhubs eventhub consumer-group list)",
            cfg.hub, cfg.group, cfg.namespace
        )
    } else if text.contains("ArgumentOutOfRange") || text.contains("argument-out-of-range") {
        " — the service refused a partition or position (was the hub recreated with fewer partitions?)".to_string()
    } else if text.contains("dns error") || text.contains("failed to lookup") || text.contains("Name or service not known") {
        format!(" — the namespace {} does not resolve (NAMESPACE.servicebus.windows.net)", cfg.namespace)
    } else if text.contains("Connection refused") || text.contains("ConnectionRefused") {
        " — nothing listens at the endpoint".to_string()
    } else {
        String::new()
    };
    crate::url::hide_signatures(&format!("{e}{hint}"))
}

/// A Blob Storage error (checkpoint store) with what it most likely means.
pub fn explain_storage(e: &azure_core::Error, cfg: &EventHubsConfig) -> String {
    let hint = match e.http_status().map(u16::from) {
        Some(401) | Some(403) => format!(
            " — the identity may not use the checkpoint container: assign it \"Storage Blob Data Contributor\" on the container or account{}",
            if cfg.checkpoint_auth.as_deref() == Some("sas") { " (or the SAS token is expired, lacks read/write/list permissions, or its signature is wrong)" } else { "" }
        ),
        Some(404) => " — the checkpoint container does not exist (create it: az storage container create)".to_string(),
        _ => String::new(),
    };
    crate::url::hide_signatures(&format!("{e}{hint}"))
}

/// `crowsnest validate`: opens the hub, reads its partitions, attaches a reader to the first one
/// (which is where a wrong consumer group shows), and lists and writes the checkpoint
/// container. Returns what it found, one line per check.
pub fn check(cfg: &EventHubsConfig) -> Result<Vec<String>> {
    cfg.validate()?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async {
        let mut found = Vec::new();
        let credential = super::hub_credential(cfg)?;
        let client = super::reader::open_consumer(cfg, &super::instance_name(), &credential).await?;
        let props = client.get_eventhub_properties().await.map_err(|e| anyhow::anyhow!("reading hub {}: {}", cfg.hub, explain(&e, cfg)))?;
        found.push(format!("event hub {} in {}: {} partitions", cfg.hub, cfg.namespace, props.partition_ids.len()));
        let Some(first) = props.partition_ids.first() else { bail!("event hub {} has no partitions", cfg.hub) };
        // The consumer group is checked when a reader attaches: open one at the end of a
        // partition and wait briefly; an attach refusal arrives as the stream's first item.
        let receiver = client
            .open_receiver_on_partition(
                first.clone(),
                Some(OpenReceiverOptions {
                    start_position: Some(StartPosition { location: StartLocation::Latest, inclusive: false }),
                    prefetch: Some(1),
                    ..Default::default()
                }),
            )
            .await
            .map_err(|e| anyhow::anyhow!("opening a reader: {}", explain(&e, cfg)))?;
        {
            let stream = receiver.stream_events();
            futures::pin_mut!(stream);
            if let Ok(Some(Err(e))) = tokio::time::timeout(Duration::from_secs(3), stream.next()).await {
                bail!("reading partition {first} as group {}: {}", cfg.group, explain(&e, cfg));
            }
        }
        let _ = receiver.close().await;
        let _ = client.close().await;
        found.push(format!("consumer group {}: a reader attached", cfg.group));

        let container = super::container_client(cfg)?;
        let store = azure_messaging_eventhubs_checkpointstore_blob::BlobCheckpointStore::new(super::container_client(cfg)?);
        use azure_messaging_eventhubs::CheckpointStore;
        let checkpoints = store.list_checkpoints(&cfg.namespace, &cfg.hub, &cfg.group).await.map_err(|e| {
            anyhow::anyhow!(
                "listing checkpoints in {}: {}",
                cfg.checkpoint_url().map(|u| u.to_string()).unwrap_or_default(),
                explain_storage(&e, cfg)
            )
        })?;
        found.push(format!("checkpoint container: readable, {} partition checkpoints for this group", checkpoints.len()));
        // Writing is what ownership needs: a probe blob, beside the processor's own blobs.
        let probe = container.blob_client(&format!("{}/{}/{}/crowsnest-validate", cfg.namespace, cfg.hub, cfg.group));
        probe
            .upload(azure_core::http::RequestContent::<azure_core::Bytes, azure_core::http::NoFormat>::from(b"ok".to_vec()), None)
            .await
            .map_err(|e| anyhow::anyhow!("writing to the checkpoint container: {}", explain_storage(&e, cfg)))?;
        let _ = probe.delete(None).await;
        found.push("checkpoint container: writable".to_string());
        Ok(found)
    })
}
