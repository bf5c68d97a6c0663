//! `crowsnest bench --sentinel`: alerts through the Sentinel sink into the local stand-in of the
//! Logs Ingestion API (HTTPS, gzip, the real token exchange), in one process.
//!
//! Two figures: end to end (until the stand-in accepted every row; the stand-in's own work —
//! TLS, gunzip, checking every row against the stream declaration — shares the cores), and the
//! cost on the engine thread (row mapping, batching, gzip, spool fsync), against the JSON-lines
//! file sink on the same alerts in the same run, which is what sets the pipeline's pace.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use serde_json::Value;

use crate::metrics::Metrics;
use crate::sink::sentinel::config::{AuthMethod, DEFAULT_STREAM};
use crate::sink::sentinel::row::COLUMNS;
use crate::sink::sentinel::{DeadLetterOut, Drain, SentinelSink};
use crate::sink::{JsonLinesFile, MemorySink, Record, Sink};
use crate::standin::logs_ingestion::{ColumnType, Standin, StandinConfig};
use crate::standin::pki::test_pki;

pub fn run(alerts: u64) -> Result<()> {
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

    // The yardstick: the JSON-lines file sink on the same alerts.
    let file_secs = {
        let mut f = JsonLinesFile::new(&dir.join("alerts.jsonl"), "file");
        let t = Instant::now();
        for chunk in records.chunks(1000) {
            f.send(chunk)?;
        }
        f.finish()?;
        t.elapsed().as_secs_f64()
    };

    let pki = test_pki();
    let ca = dir.join("ca.pem");
    std::fs::write(&ca, &pki.ca_pem)?;
    let columns = COLUMNS.iter().filter_map(|(n, t)| Some((n.to_string(), ColumnType::parse(t)?))).collect();
    let mut scfg = StandinConfig::new(BTreeMap::from([(DEFAULT_STREAM.to_string(), columns)]));
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
    let mut engine_side = Duration::ZERO;
    for chunk in records.chunks(1000) {
        let t = Instant::now();
        sink.send(chunk)?;
        sink.flush()?; // as at a checkpoint: the open batch goes to the spool
        engine_side += t.elapsed();
    }
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
        "  on the engine thread: {:.1} µs per alert (row, batch, gzip, fsync) = {:.1}× the file sink's {:.1} µs",
        engine_side.as_secs_f64() * 1e6 / alerts as f64,
        engine_side.as_secs_f64() / file_secs.max(1e-9),
        file_secs * 1e6 / alerts as f64
    );
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
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
    let mut outputs = crate::pipeline::Outputs { sinks: vec![Box::new(memory.clone())], dead_letters: None, late_events: None };
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
