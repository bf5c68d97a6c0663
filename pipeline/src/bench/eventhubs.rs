//! `crowsnest bench --eventhubs`: the generated events through the native Event Hubs source —
//! the Azure SDK over AMQP from the local stand-in ([`crate::standin::eventhubs`], 4 partitions,
//! messages batched as a diagnostic setting batches them), ownership and checkpoints in Azurite
//! — and through every rule, against a file replay of the same events in the same run; and the
//! checkpoint writes per minute per partition that cost.

use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use super::{counter_total, ensure_file, run_pipeline, run_until_decoded, BenchArgs, CountingSink, RateTable};
use crate::engine::{Engine, EngineOptions};
use crate::metrics::Metrics;
use crate::pipeline::{Control, Outputs};
use crate::rules::RuleSet;
use crate::source::eventhubs::config::EventHubsConfig;
use crate::source::eventhubs::EventHubsSource;
use crate::source::FramingLimits;
use crate::standin::azurite::Azurite;
use crate::standin::eventhubs::{EventHubsStandin, StandinOptions};
use crate::standin::serve::publish_records;

const PARTITIONS: usize = 4;
/// The variable the bench hands the checkpoint SAS in (its own process only).
const SAS_ENV: &str = "CROWSNEST_BENCH_CHECKPOINT_SAS";

pub fn run(args: &BenchArgs, set: &RuleSet, workers: usize) -> Result<()> {
    let (path, size) = ensure_file(args, args.events, "events.jsonl")?;
    let file = run_pipeline(&path, set, workers)?;

    let dir = args.dir.join("eventhubs");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let azurite = Azurite::start(&dir).context("bench --eventhubs keeps checkpoints in Azurite")?;
    azurite.create_container("checkpoints")?;
    let standin = EventHubsStandin::start(StandinOptions::new("crowsnest-bench.servicebus.windows.net", "aks-audit", PARTITIONS))?;
    eprintln!("loading {} into the stand-in (not timed) …", path.display());
    let message_count = publish_records(&standin, [std::fs::read(&path)?.as_slice()], PARTITIONS);
    // Only this process reads it, before any thread of ours looks at the environment.
    std::env::set_var(SAS_ENV, azurite.account_sas());

    let cfg: EventHubsConfig = crate::source::eventhubs::config::from_url(&format!(
        "eventhubs://{}/{}?checkpoints={}/checkpoints&auth=emulator&checkpoint_auth=sas&checkpoint_sas_env={SAS_ENV}&endpoint={}&commit_interval=5s",
        standin.namespace(),
        standin.hub(),
        azurite.endpoint(),
        standin.endpoint()
    ))?;
    let engine = Engine::new(set, &EngineOptions::default())?;
    let control = Control { workers, checkpoint_interval: cfg.commit_interval().unwrap_or(Duration::from_secs(5)), ..Control::default() };
    let metrics = Metrics::new();
    let limits = FramingLimits { chunk_bytes: 1 << 20, ..FramingLimits::default() };
    let source = EventHubsSource::new(&cfg, limits, control.bytes_read.clone(), control.stop.clone(), metrics.clone())?;
    let mut outputs = Outputs { sinks: vec![Box::new(CountingSink(0))], dead_letters: None, late_events: None, events: None, lake: None };
    let started = Instant::now();
    let (summary, (total_secs, hub_secs, hub_events)) = run_until_decoded(
        Box::new(source),
        engine,
        set,
        &mut outputs,
        (&metrics, &control),
        "crowsnest_eventhubs_messages_received_total",
        file.events,
    )?;
    let wall = started.elapsed().as_secs_f64();
    let writes = counter_total(&metrics, "crowsnest_offset_commits_total");

    let mut out = std::io::stdout().lock();
    let ev = file.events as f64;
    writeln!(
        out,
        "crowsnest bench (event hubs stand-in, {PARTITIONS} partitions, checkpoints in Azurite) — {} events, {:.1} MB in {message_count} messages, {} rules, {workers} decode workers",
        file.events,
        size as f64 / 1e6,
        set.rules.len()
    )?;
    let table = RateTable::start(&mut out, ev / file.secs)?;
    table.row(&mut out, "file replay (baseline)", file.secs, ev)?;
    table.row(&mut out, "event hubs (AMQP, SDK 0.15) → rules", hub_secs, hub_events as f64)?;
    writeln!(
        out,
        "(timed from the first message received to the last event decoded; {:.2} s more from start-up: connection, ownership claims)",
        total_secs - hub_secs
    )?;
    let stats = standin.stats();
    writeln!(out, "messages: {message_count} published, {} delivered by the stand-in", stats.delivered())?;
    if hub_events < file.events {
        writeln!(out, "WARNING: only {hub_events} of {} events arrived; the rate covers those", file.events)?;
    }
    writeln!(
        out,
        "checkpoint writes: {writes} in {wall:.1} s over {PARTITIONS} partitions = {:.1} per minute per partition (commit interval 5 s; at most 12)",
        writes as f64 / (wall / 60.0) / PARTITIONS as f64
    )?;
    writeln!(out, "alerts: file {}; event hubs {}", file.alerts, summary.alerts)?;
    Ok(())
}
