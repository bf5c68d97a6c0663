//! `crowsnest bench --sentinel`: alerts through the Sentinel sink into the local stand-in of the
//! Logs Ingestion API (HTTPS, gzip, the real token exchange), in one process.
//!
//! Two figures: end to end (until the stand-in accepted every row; the stand-in's own work —
//! TLS, gunzip, checking every row against the stream declaration — shares the cores), and the
//! CPU the engine thread spends in the sink (row mapping, batching, spool writes and syncs; its
//! own thread's CPU time, so not the time it waited for a core), against the JSON-lines file
//! sink on the same alerts in the same run: that is what the pipeline's pace pays.
//!
//! Then the normalized-events stream: `--events` generated audit events decoded first (not
//! timed), then every kube_audit row mapped to ASIM and forwarded, with the added CPU per
//! 100,000 events (the engine thread's exactly; the whole process's, stand-in included, as an
//! upper bound).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use serde_json::Value;

use crate::metrics::Metrics;
use crate::sink::sentinel::asim_columns::ASIM_AUDIT_COLUMNS;
use crate::sink::sentinel::config::{AuthMethod, SentinelConfig, DEFAULT_EVENTS_STREAM, DEFAULT_STREAM};
use crate::sink::sentinel::events::EventForwarder;
use crate::sink::sentinel::row::COLUMNS;
use crate::sink::sentinel::{DeadLetterOut, Drain, SentinelSink};
use crate::sink::{JsonLinesFile, MemorySink, Record, Sink};
use crate::standin::logs_ingestion::{ColumnType, Standin, StandinConfig};
use crate::standin::pki::test_pki;

/// A checkpoint (flush: spool synced) every 100,000 rows: a pipeline at ~300,000 events/s
/// checkpoints every 5 s, so this is more often than in service, not less.
const CHECKPOINT_CHUNKS: usize = 100;

pub fn run(alerts: u64, events: u64) -> Result<()> {
    let dir = tempfile_dir()?;
    let sample = sample_alerts()?;
    let records: Vec<Record> = (0..alerts)
        .map(|i| {
            let mut a = sample[i as usize % sample.len()].clone();
            a["id"] = Value::String(format!("cn-bench-{i:012}"));
            Record::new(a["id"].as_str().unwrap_or_default().to_string(), &a)
        })
        .collect();
    let alert_bytes: usize = records.iter().map(|r| r.json.len()).sum();

    // The yardstick: the JSON-lines file sink on the same alerts (CPU of this thread, as below).
    let file_secs = {
        let mut f = JsonLinesFile::new(&dir.join("alerts.jsonl"), "file");
        let t = thread_cpu();
        for chunk in records.chunks(1000) {
            f.send(chunk)?;
        }
        f.finish()?;
        thread_cpu() - t
    };

    let pki = test_pki();
    let ca = dir.join("ca.pem");
    std::fs::write(&ca, &pki.ca_pem)?;
    let declare = |cols: &[(&str, &str)]| cols.iter().filter_map(|(n, t)| Some((n.to_string(), ColumnType::parse(t)?))).collect();
    let mut scfg = StandinConfig::new(BTreeMap::from([
        (DEFAULT_STREAM.to_string(), declare(COLUMNS)),
        (DEFAULT_EVENTS_STREAM.to_string(), declare(ASIM_AUDIT_COLUMNS)),
    ]));
    scfg.tls = Some((pki.cert_pem, pki.key_pem));
    let (tenant, client, secret) = (scfg.tenant_id.clone(), scfg.client_id.clone(), scfg.client_secret.clone());
    let dcr = scfg.dcr_immutable_id.clone();
    let standin = Standin::start(scfg)?;
    let mut cfg = crate::sink::sentinel::config::from_url(&format!(
        "sentinel://{}?dcr={dcr}&auth=client_secret&tenant_id={tenant}&client_id={client}&authority_host={}",
        standin.addr(),
        standin.base_url()
    ))?;
    cfg.auth = AuthMethod::ClientSecret;
    cfg.client_secret = secret;
    cfg.ca_file = Some(ca);
    cfg.spool_dir = Some(dir.join("spool"));
    let dead = MemorySink::default();
    let metrics = Metrics::new();
    let mut sink = SentinelSink::new(&cfg, None, DeadLetterOut::new(Box::new(dead.clone())), metrics.clone(), Drain::Complete)?;
    let started = Instant::now();
    let cpu0 = thread_cpu();
    for (i, chunk) in records.chunks(1000).enumerate() {
        sink.send(chunk)?;
        if i % CHECKPOINT_CHUNKS == CHECKPOINT_CHUNKS - 1 {
            sink.flush()?; // a checkpoint: the open batch to the spool, and the spool synced
        }
    }
    sink.flush()?;
    let engine_side = Duration::from_secs_f64(thread_cpu() - cpu0);
    sink.finish()?;
    let secs = started.elapsed().as_secs_f64();
    let accepted = standin.accepted_rows(DEFAULT_STREAM).len();
    if accepted as u64 != alerts || !dead.records.lock().map(|d| d.is_empty()).unwrap_or(false) {
        bail!("the stand-in accepted {accepted} of {alerts} alerts");
    }
    let requests = standin.requests();
    let raw: usize = requests.iter().map(|r| r.raw_bytes).sum();
    let wire: usize = requests.iter().map(|r| r.wire_bytes).sum();
    println!(
        "sentinel sink: {alerts} alerts ({:.1} MB as JSON) in {secs:.2} s end to end: {:.0} alerts/s, {} requests ({:.0} KB raw each, gzip {:.1}×)",
        alert_bytes as f64 / 1e6,
        alerts as f64 / secs,
        requests.len(),
        raw as f64 / requests.len().max(1) as f64 / 1e3,
        raw as f64 / wire.max(1) as f64
    );
    println!(
        "  on the engine thread: {:.1} µs per alert (row, batch, spool write, a sync per 100,000) = {:.1}× the file sink's {:.1} µs",
        engine_side.as_secs_f64() * 1e6 / alerts as f64,
        engine_side.as_secs_f64() / file_secs.max(1e-9),
        file_secs * 1e6 / alerts as f64
    );
    asim(events, &cfg, &standin, &metrics)?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// Every kube_audit row of `events` generated events, mapped to ASIM and forwarded.
fn asim(events: u64, alerts_cfg: &SentinelConfig, standin: &Standin, metrics: &Metrics) -> Result<()> {
    let mut text = Vec::new();
    crate::gen::generate(&crate::gen::GenOptions { events, insights: false, ..Default::default() }, &mut text)?;
    let mut decoder = crate::decode::Decoder::new();
    let mut batches = Vec::new();
    for (i, line) in text.split(|&b| b == b'\n').filter(|l| !l.is_empty()).enumerate() {
        decoder.decode(crate::decode::Origin { source: "bench", unit: "line", index: i as u64 }, line);
        if i % 8192 == 8191 {
            batches.extend(decoder.finish().into_iter().filter(|b| b.table == crate::tables::KUBE_AUDIT).map(|b| b.batch));
        }
    }
    batches.extend(decoder.finish().into_iter().filter(|b| b.table == crate::tables::KUBE_AUDIT).map(|b| b.batch));
    let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
    let mut cfg = alerts_cfg.clone();
    cfg.forward_events = Some(crate::sink::sentinel::config::ForwardEvents::Asim);
    let events_cfg = cfg.events_config().expect("forward_events is set");
    let lists = std::sync::Arc::new(crate::rules::RuleSet::bundled()?.lists);
    let sink = SentinelSink::new(&events_cfg, None, DeadLetterOut::new(Box::new(MemorySink::default())), metrics.clone(), Drain::Complete)?
        .prebuilt_rows();
    let mut forwarder = EventForwarder::new(None, lists.clone(), Box::new(sink))?;
    // The mapping alone (filter, SQL projection, JSON rows), on the same batches.
    let mapping = {
        let probe = EventForwarder::new(None, lists, Box::new(MemorySink::default()))?;
        let t = thread_cpu();
        for b in &batches {
            probe.rows(b)?;
        }
        thread_cpu() - t
    };
    let cpu0 = process_cpu();
    let started = Instant::now();
    let thread0 = thread_cpu();
    let mut since_checkpoint = 0;
    for b in &batches {
        forwarder.forward(b)?;
        since_checkpoint += b.num_rows();
        if since_checkpoint >= CHECKPOINT_CHUNKS * 1000 {
            forwarder.sink.flush()?;
            since_checkpoint = 0;
        }
    }
    forwarder.sink.flush()?;
    let engine_side = Duration::from_secs_f64(thread_cpu() - thread0);
    forwarder.sink.finish()?;
    let secs = started.elapsed().as_secs_f64();
    let cpu = process_cpu() - cpu0;
    let accepted = standin.accepted_rows(DEFAULT_EVENTS_STREAM).len();
    if accepted != rows {
        bail!("the stand-in accepted {accepted} of {rows} forwarded events");
    }
    let per_100k = |s: f64| s * 100_000.0 / rows as f64;
    println!(
        "ASIM events: {rows} kube_audit rows forwarded in {secs:.2} s end to end: {:.0} events/s; per 100,000 events: {:.2} s on the engine thread ({:.2} s of it the mapping: filter, SQL projection, JSON rows; the rest batching, spool write, a sync per 100,000), {:.2} s of CPU in the whole process (sender thread, gzip, TLS and the stand-in's own checking included)",
        rows as f64 / secs,
        per_100k(engine_side.as_secs_f64()),
        per_100k(mapping),
        per_100k(cpu)
    );
    Ok(())
}

/// User + system CPU seconds of this process so far (Linux; 0 elsewhere).
fn process_cpu() -> f64 {
    cpu_of("/proc/self/stat")
}

/// User + system CPU seconds of the calling thread so far: the engine thread's own work, not
/// the wall time it spent waiting for a core the sender and the stand-in were using.
fn thread_cpu() -> f64 {
    cpu_of("/proc/thread-self/stat")
}

fn cpu_of(stat_file: &str) -> f64 {
    let Ok(stat) = std::fs::read_to_string(stat_file) else { return 0.0 };
    // Fields after the command name (which may hold spaces): utime and stime are 14 and 15.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

/// The alerts of the bundled sample, as the pipeline emits them.
fn sample_alerts() -> Result<Vec<Value>> {
    let set = crate::rules::RuleSet::bundled()?;
    let engine = crate::engine::Engine::new(&set, &crate::engine::EngineOptions::default())?;
    let control = crate::pipeline::Control::default();
    let source = crate::source::file::FileSource::from_bytes(
        "sample",
        crate::cli::SAMPLE,
        crate::source::FramingLimits::default(),
        control.bytes_read.clone(),
    )?;
    let memory = MemorySink::default();
    let mut outputs =
        crate::pipeline::Outputs { sinks: vec![Box::new(memory.clone())], dead_letters: None, late_events: None, events: None, lake: None };
    let router = crate::sink::router::AlertRouter::new(set.suppression_periods(), 1 << 20);
    crate::pipeline::run(vec![Box::new(source)], engine, router, &mut outputs, &Metrics::new(), &control)?;
    let alerts: Vec<Value> =
        memory.records.lock().map(|r| r.iter().filter_map(|j| serde_json::from_slice(j).ok()).collect()).unwrap_or_default();
    if alerts.is_empty() {
        bail!("the sample raised no alert");
    }
    Ok(alerts)
}

fn tempfile_dir() -> Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("crowsnest-bench-sentinel-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
