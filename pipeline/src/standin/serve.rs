//! `crowsnest standin eventhubs`: the Event Hubs stand-in as a program of its own, serving
//! recorded AKS records (the bundled sample by default) over AMQP on a loopback port, with
//! Azurite for the checkpoint container when asked, so `crowsnest run --source eventhubs://…`
//! can be tried on a laptop with no Azure. It prints the commands to run against it.

use std::io::Read;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;

use super::azurite::Azurite;
use super::eventhubs::{EventHubsStandin, StandinOptions};

#[derive(Args)]
pub struct StandinArgs {
    /// Files of AKS records to serve (envelopes or JSON lines, gzip or not); the bundled sample
    /// when none.
    files: Vec<PathBuf>,
    #[arg(long, default_value_t = 4)]
    partitions: usize,
    /// The loopback port to listen on.
    #[arg(long, default_value_t = 5672)]
    port: u16,
    #[arg(long, default_value = "crowsnest-local.servicebus.windows.net")]
    namespace: String,
    #[arg(long, default_value = "aks-audit")]
    hub: String,
    /// A consumer group besides $Default.
    #[arg(long, default_value = "crowsnest")]
    group: String,
    /// Also start Azurite's blob service (installed with npm; AZURITE_BIN points at another)
    /// with its data in DIR, for the checkpoint container.
    #[arg(long, value_name = "DIR")]
    azurite: Option<PathBuf>,
}

/// Messages of up to 256 KiB, as a busy cluster's diagnostic setting sends them (the service
/// takes up to 1 MB).
const MESSAGE_BYTES: usize = 256 << 10;

/// Publishes the records of `texts` (AKS envelopes or JSON lines) batched into messages as a
/// diagnostic setting batches them, round-robin over the stand-in's `partitions`; returns how
/// many messages.
pub fn publish_records<'a>(standin: &EventHubsStandin, texts: impl IntoIterator<Item = &'a [u8]>, partitions: usize) -> usize {
    let lines = texts.into_iter().flat_map(|t| t.split(|&b| b == b'\n')).filter(|l| !l.trim_ascii().is_empty());
    let messages = crate::gen::rebatch(lines, MESSAGE_BYTES);
    let count = messages.len();
    for (i, m) in messages.into_iter().enumerate() {
        standin.publish(i % partitions, m);
    }
    count
}

pub fn run(a: &StandinArgs) -> Result<()> {
    let mut texts = Vec::new();
    if a.files.is_empty() {
        texts.push(gunzip_if_needed(crate::cli::SAMPLE.to_vec())?);
    }
    for f in &a.files {
        texts.push(gunzip_if_needed(std::fs::read(f).with_context(|| format!("reading {}", f.display()))?)?);
    }
    let opts = StandinOptions { consumer_groups: vec![a.group.clone()], ..StandinOptions::new(&a.namespace, &a.hub, a.partitions.max(1)) };
    let standin = EventHubsStandin::start_on(opts, a.port).with_context(|| format!("listening on 127.0.0.1:{}", a.port))?;
    let count = publish_records(&standin, texts.iter().map(Vec::as_slice), a.partitions.max(1));
    let azurite = match &a.azurite {
        Some(dir) => {
            std::fs::create_dir_all(dir)?;
            let az = Azurite::start(dir)?;
            az.create_container("checkpoints")?;
            Some(az)
        }
        None => None,
    };
    let checkpoints = azurite
        .as_ref()
        .map_or("https://ACCOUNT.blob.core.windows.net/CONTAINER".to_string(), |az| format!("{}/checkpoints", az.endpoint()));
    eprintln!(
        "Event Hubs stand-in (local, not Azure) on {}: hub {} in {}, {} partitions, {count} messages; Ctrl-C stops it.",
        standin.endpoint(),
        a.hub,
        a.namespace,
        a.partitions.max(1)
    );
    if let Some(az) = &azurite {
        // Signed with Azurite's published development key: nothing secret.
        eprintln!("Azurite's blob service on {} (container \"checkpoints\"). In another shell:\n", az.endpoint());
        eprintln!("  export AZURE_STORAGE_SAS_KEY='{}'", az.account_sas());
    } else {
        eprintln!("Checkpoints need a Blob container (--azurite DIR starts a local one). In another shell:\n");
    }
    eprintln!(
        "  crowsnest run --source 'eventhubs://{}/{}?group={}&checkpoints={checkpoints}&auth=emulator&checkpoint_auth=sas&endpoint={}' --sink stdout\n",
        a.namespace,
        a.hub,
        a.group,
        standin.endpoint()
    );
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(tokio::signal::ctrl_c())?;
    let stats = standin.stats();
    eprintln!("delivered {} messages over {} connections", stats.delivered(), stats.connections);
    Ok(())
}

fn gunzip_if_needed(bytes: Vec<u8>) -> Result<Vec<u8>> {
    if !bytes.starts_with(&[0x1f, 0x8b]) {
        return Ok(bytes);
    }
    let mut out = Vec::new();
    flate2::read::MultiGzDecoder::new(&bytes[..]).read_to_end(&mut out).context("decompressing")?;
    Ok(out)
}
