//! `crowsnest bench --lake`: what the lake sink costs and what hunts over the lake cost, in one
//! run on one generated file (audit events with Container Insights records beside them, so
//! container_log has rows):
//!
//! 1. replay without and with the lake sink (a fresh lake each run), the fastest of `--repeat`
//!    each: the ratio of the rates (target ≥ 0.7);
//! 2. the lake's size: bytes per event, and the raw JSON's size over it;
//! 3. five hunts over that lake, each SQL text run by Crowsnest's hunt session and by DuckDB
//!    (`bench/duckdb_lake_bench.py`) on the same Parquet files (target: Crowsnest within 1.5×
//!    of DuckDB on each, faster on the partition-pruned ones).

use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use datafusion::arrow::util::display::array_value_to_string;

use super::{ensure_generated, run_pipeline, run_pipeline_with, BenchArgs, PipelineRun, RateTable};
use crate::hunt::{HuntSession, TimeRange};
use crate::lake::{LakeConfig, Store};
use crate::rules::RuleSet;
use crate::sink::lake::LakeSink;

/// One hunt, its SQL written once for both engines.
struct Hunt {
    /// Also DuckDB's name for it: no spaces.
    name: &'static str,
    /// Its `date` condition lets both engines skip whole partitions.
    pruned: bool,
    sql: String,
}

/// What one engine's fastest run of a hunt gave.
struct Timed {
    secs: f64,
    rows: usize,
}

pub fn run(args: &BenchArgs, set: &RuleSet, workers: usize) -> Result<()> {
    let (path, size) = ensure_generated(args, args.events, "events-insights.jsonl", true).context("generating the bench input")?;
    let repeat = args.repeat.max(1);
    // LakeConfig takes an absolute file:// URL; --dir is usually relative.
    let dir = std::path::absolute(&args.dir)?;
    for e in std::fs::read_dir(&dir)? {
        let e = e?;
        if e.file_name().to_string_lossy().starts_with("lake-") && e.file_type()?.is_dir() {
            std::fs::remove_dir_all(e.path())?; // an earlier run's
        }
    }
    eprintln!("input: {} ({:.1} MB), {} bundled rules, {workers} decode workers", path.display(), size as f64 / 1e6, set.rules.len());
    std::io::copy(&mut File::open(&path)?, &mut std::io::sink())?;

    // Alternating runs, so a neighbour's busy spell does not fall on one side only.
    let (mut plain, mut with_lake): (Option<PipelineRun>, Option<PipelineRun>) = (None, None);
    let mut lake = PathBuf::new();
    for i in 0..repeat {
        let run = run_pipeline(&path, set, workers)?;
        if plain.as_ref().is_none_or(|b| run.secs < b.secs) {
            plain = Some(run);
        }
        let previous = std::mem::replace(&mut lake, dir.join(format!("lake-{i}")));
        if i > 0 {
            std::fs::remove_dir_all(&previous)?;
        }
        let sink = LakeSink::new(&LakeConfig::from_url(&format!("file://{}", lake.display()))?)?;
        let run = run_pipeline_with(&path, set, workers, Some(sink))?;
        if with_lake.as_ref().is_none_or(|b| run.secs < b.secs) {
            with_lake = Some(run);
        }
    }
    let (plain, with_lake) = (plain.expect("repeat >= 1"), with_lake.expect("repeat >= 1"));
    let (files, lake_bytes) = parquet_files(&lake)?;

    let store = Store::open(&LakeConfig::from_url(&format!("file://{}", lake.display()))?)?;
    let session = HuntSession::over_lake(&store, TimeRange::default(), Arc::new(set.lists.clone()))?;
    let hunts = hunts(&session)?;
    let mut ours = Vec::new();
    for h in &hunts {
        let (mut best, mut rows, mut scanned) = (f64::MAX, 0, 0);
        for _ in 0..repeat {
            let r = session.query(&h.sql, None, &mut |_| {}).with_context(|| format!("hunt {}: {}", h.name, h.sql))?;
            if r.elapsed.as_secs_f64() < best {
                (best, rows, scanned) = (r.elapsed.as_secs_f64(), r.rows, r.bytes_scanned);
            }
        }
        ours.push((Timed { secs: best, rows }, scanned));
    }
    // The same thread count as the hunt session's partitions: the machine's cores.
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let duck = if args.no_duckdb { None } else { duckdb(&lake, threads, repeat, &hunts) };

    let mut out = std::io::stdout().lock();
    let ev = plain.events as f64;
    writeln!(
        out,
        "crowsnest bench --lake — {} events decoded ({} audit events and the Container Insights records beside them), {:.1} MB, {} rules, {workers} decode workers",
        plain.events,
        args.events,
        size as f64 / 1e6,
        set.rules.len()
    )?;
    let table = RateTable::start(&mut out, ev / plain.secs)?;
    table.row(&mut out, "crowsnest replay, all rules (baseline)", plain.secs, ev)?;
    table.row(&mut out, "crowsnest replay, all rules, lake sink on (target ≥ 0.7)", with_lake.secs, ev)?;
    if with_lake.events != plain.events {
        writeln!(out, "WARNING: {} events decoded without the lake, {} with it", plain.events, with_lake.events)?;
    }
    writeln!(
        out,
        "lake: {:.1} MB in {files} Parquet files, {:.1} bytes per event; raw JSON / lake = {:.1}× ({})",
        lake_bytes as f64 / 1e6,
        lake_bytes as f64 / ev,
        size as f64 / lake_bytes.max(1) as f64,
        lake.display()
    )?;
    writeln!(out)?;
    writeln!(out, "{:<24} {:>12} {:>12} {:>8} {:>18} {:>14}", "hunt", "crowsnest s", "duckdb s", "ratio", "rows", "scanned (cn)")?;
    let mut mismatches = Vec::new();
    for (h, (cn, scanned)) in hunts.iter().zip(&ours) {
        let name = format!("{}{}", h.name, if h.pruned { " *" } else { "" });
        let (duck_s, ratio, rows) = match duck.as_ref().and_then(|d| d.get(h.name)) {
            Some(Ok(d)) => {
                let rows = if d.rows == cn.rows {
                    cn.rows.to_string()
                } else {
                    mismatches.push(h.name);
                    format!("{} ≠ {} !!", cn.rows, d.rows)
                };
                (format!("{:.4}", d.secs), format!("{:.2}", cn.secs / d.secs), rows)
            }
            Some(Err(e)) => {
                mismatches.push(h.name);
                eprintln!("DuckDB failed on {}: {e}", h.name);
                ("error".into(), "-".into(), cn.rows.to_string())
            }
            None => ("-".into(), "-".into(), cn.rows.to_string()),
        };
        writeln!(out, "{name:<24} {:>12.4} {duck_s:>12} {ratio:>8} {rows:>18} {:>11.1} MB", cn.secs, *scanned as f64 / 1e6)?;
    }
    writeln!(out, "ratio = Crowsnest seconds / DuckDB seconds (target ≤ 1.5 on each, below 1 on the partition-pruned, marked *)")?;
    writeln!(out, "DuckDB: {threads} threads; Crowsnest: the hunt session's {threads} partitions; each figure the fastest of {repeat} runs (--repeat)")?;
    for h in &hunts {
        writeln!(out, "  {}: {}", h.name, h.sql)?;
    }
    if !mismatches.is_empty() {
        writeln!(out, "WARNING: same SQL, same files, but not the same rows (or DuckDB failed) on: {}", mismatches.join(", "))?;
    }
    Ok(())
}

/// The five hunts, with values picked from the lake so the lookups find rows. They query the
/// session's inner tables (`__lake_…`, which keep the `date` and `hour` partition columns the
/// hunt views hide), and DuckDB's script makes views of the same names.
fn hunts(session: &HuntSession) -> Result<Vec<Hunt>> {
    // A person (not a node or a service account) with the fewest events, on their busiest day:
    // a point lookup that returns a handful of rows, as "what did mallory do that day" does.
    let user = first_row(
        session,
        "SELECT user_name, COUNT(*) AS n FROM __lake_kube_audit WHERE user_name LIKE '%@%' GROUP BY user_name ORDER BY n, user_name LIMIT 1",
    )?
    .context("no user name with an @ in the lake")?
    .remove(0);
    let day = first_row(
        session,
        &format!(
            "SELECT \"date\", COUNT(*) AS n FROM __lake_kube_audit WHERE user_name = {} GROUP BY \"date\" ORDER BY n DESC, \"date\" LIMIT 1",
            lit(&user)
        ),
    )?
    .context("the user's day")?
    .remove(0);
    // The pod with the most audit events among those with container logs (the crypto-miner
    // scenario's: exec'd into, then its logs show the download and the miner).
    let pod = first_row(
        session,
        "SELECT a.namespace, a.name, COUNT(*) AS n FROM __lake_kube_audit a \
         JOIN (SELECT DISTINCT PodNamespace, PodName FROM __lake_container_log) l ON a.namespace = l.PodNamespace AND a.name = l.PodName \
         WHERE a.resource = 'pods' GROUP BY a.namespace, a.name ORDER BY n DESC, a.namespace, a.name LIMIT 1",
    )?
    .context("no pod with both audit events and container logs in the lake")?;
    Ok(vec![
        Hunt {
            name: "user-day",
            pruned: true,
            sql: format!(
                "SELECT event_time, verb, resource, subresource, namespace, name, source_ip, response_code FROM __lake_kube_audit \
                 WHERE \"date\" = {} AND user_name = {} ORDER BY event_time",
                lit(&day),
                lit(&user)
            ),
        },
        Hunt {
            name: "per-namespace",
            pruned: false,
            sql: "SELECT namespace, COUNT(*) AS events, COUNT(DISTINCT user_name) AS users FROM __lake_kube_audit \
                  GROUP BY namespace ORDER BY events DESC"
                .into(),
        },
        Hunt {
            name: "pod-timeline",
            pruned: false,
            // Each audit event on the pod with the pod's log lines of the ten minutes after it.
            sql: format!(
                "SELECT a.event_time, a.user_name, a.verb, a.subresource, l.TimeGenerated, l.LogMessage \
                 FROM __lake_kube_audit a JOIN __lake_container_log l ON l.PodNamespace = a.namespace AND l.PodName = a.name \
                 WHERE a.resource = 'pods' AND a.namespace = {} AND a.name = {} \
                 AND l.TimeGenerated >= a.event_time AND l.TimeGenerated < a.event_time + INTERVAL '10 minutes' \
                 ORDER BY a.event_time, l.TimeGenerated",
                lit(&pod[0]),
                lit(&pod[1])
            ),
        },
        Hunt {
            name: "top-source-ips",
            pruned: false,
            sql: "SELECT source_ip, COUNT(*) AS events FROM __lake_kube_audit GROUP BY source_ip ORDER BY events DESC, source_ip LIMIT 10"
                .into(),
        },
        Hunt {
            name: "log-like",
            pruned: false,
            sql: "SELECT TimeGenerated, PodNamespace, PodName, LogMessage FROM __lake_container_log \
                  WHERE LogMessage LIKE '%stratum+tcp://%' ORDER BY TimeGenerated"
                .into(),
        },
    ])
}

/// The first row of a query's result, each column as text; `None` when it has no row.
fn first_row(session: &HuntSession, sql: &str) -> Result<Option<Vec<String>>> {
    let r = session.query(sql, Some(1), &mut |_| {}).with_context(|| sql.to_string())?;
    let Some(b) = r.batches.iter().find(|b| b.num_rows() > 0) else { return Ok(None) };
    Ok(Some(b.columns().iter().map(|c| array_value_to_string(c, 0)).collect::<Result<Vec<String>, _>>()?))
}

/// A SQL string literal.
fn lit(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// The Parquet files under `dir`: how many, and their bytes.
fn parquet_files(dir: &Path) -> Result<(u64, u64)> {
    let (mut files, mut bytes) = (0, 0);
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        if e.file_type()?.is_dir() {
            let (f, b) = parquet_files(&e.path())?;
            (files, bytes) = (files + f, bytes + b);
        } else if e.path().extension().is_some_and(|x| x == "parquet") {
            (files, bytes) = (files + 1, bytes + e.metadata()?.len());
        }
    }
    Ok((files, bytes))
}

/// Each hunt through DuckDB on the same files (`bench/duckdb_lake_bench.py`), by name: the
/// fastest of `repeat` runs and its rows, or DuckDB's error. `None`: no python3 or no duckdb.
fn duckdb(lake: &Path, threads: usize, repeat: usize, hunts: &[Hunt]) -> Option<HashMap<String, Result<Timed, String>>> {
    use std::process::{Command, Stdio};
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../bench/duckdb_lake_bench.py");
    let queries: Vec<serde_json::Value> = hunts.iter().map(|h| serde_json::json!({ "name": h.name, "sql": h.sql })).collect();
    let run = || -> std::io::Result<std::process::Output> {
        let mut child = Command::new("python3")
            .arg(&script)
            .arg(lake)
            .arg(threads.to_string())
            .arg(repeat.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        // The script reads all of stdin before it writes anything, so this cannot deadlock.
        child.stdin.take().expect("piped stdin").write_all(&serde_json::to_vec(&queries)?)?;
        child.wait_with_output()
    };
    let out = match run() {
        Ok(o) if o.status.success() => o,
        Ok(o) => {
            eprintln!("(DuckDB comparison skipped: {})", String::from_utf8_lossy(&o.stderr).lines().last().unwrap_or("python3 failed"));
            return None;
        }
        Err(e) => {
            eprintln!("(DuckDB comparison skipped: python3: {e})");
            return None;
        }
    };
    let parsed = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| {
            let mut f = line.splitn(3, ' ');
            let (name, secs, rest) = (f.next()?, f.next()?, f.next().unwrap_or_default());
            let result = match (secs.parse(), rest.trim().parse()) {
                (Ok(secs), Ok(rows)) => Ok(Timed { secs, rows }),
                _ => Err(format!("{secs} {rest}")),
            };
            Some((name.to_string(), result))
        })
        .collect();
    Some(parsed)
}
