//! `crowsnest bench --flight-sql`: a hunt's 1M-row result streamed from `crowsnest serve-sql` to
//! Python's ADBC Flight SQL client (into a pyarrow Table), against `crowsnest hunt --format
//! parquet` writing the same query's result to a file, in one run on one lake. Both are timed
//! end to end from the outside (process or connection start to the last row), the fastest of
//! `--repeat` each.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context, Result};

use super::{ensure_generated, run_pipeline_with, BenchArgs, RateTable};
use crate::lake::LakeConfig;
use crate::rules::RuleSet;
use crate::sink::lake::LakeSink;

/// The columns a hunter pulls into a notebook: who did what to which object, from where.
const COLUMNS: &str =
    "event_time, audit_id, stage, verb, user_name, source_ip, user_agent, resource, subresource, namespace, name, response_code, request_uri";

/// Python with adbc-driver-flightsql: $CROWSNEST_PYTHON, the virtualenv .ci/run makes, python3.
fn python() -> PathBuf {
    if let Ok(p) = std::env::var("CROWSNEST_PYTHON") {
        return p.into();
    }
    let venv = PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache/crowsnest/venv/bin/python");
    if venv.exists() {
        venv
    } else {
        "python3".into()
    }
}

pub fn run(args: &BenchArgs, set: &RuleSet, workers: usize) -> Result<()> {
    let (path, _) = ensure_generated(args, args.events, "events.jsonl", false).context("generating the bench input")?;
    let dir = std::path::absolute(&args.dir)?;
    let lake = dir.join("lake-flight-sql");
    if lake.exists() {
        std::fs::remove_dir_all(&lake)?;
    }
    let url = format!("file://{}", lake.display());
    eprintln!("writing the lake {} …", lake.display());
    run_pipeline_with(&path, set, workers, Some(LakeSink::new(&LakeConfig::from_url(&url)?)?))?;
    let sql = format!("SELECT {COLUMNS} FROM kube_audit LIMIT {}", args.events);
    let repeat = args.repeat.max(1);
    let exe = std::env::current_exe()?;

    // crowsnest hunt --format parquet, to a file.
    let out_file = dir.join("flight-sql-hunt.parquet");
    let mut hunt_best = f64::MAX;
    for _ in 0..repeat {
        let t = Instant::now();
        let out = Command::new(&exe)
            .args(["hunt", &sql, "--lake", &url, "--format", "parquet"])
            .stdout(std::fs::File::create(&out_file)?)
            .stderr(Stdio::piped())
            .output()?;
        if !out.status.success() {
            bail!("crowsnest hunt failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        hunt_best = hunt_best.min(t.elapsed().as_secs_f64());
    }

    // serve-sql and the Python client.
    let mut server = Command::new(&exe)
        .args(["serve-sql", "--lake", &url, "--listen", "127.0.0.1:0"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting serve-sql")?;
    let stderr = server.stderr.take().expect("piped stderr");
    let mut lines = BufReader::new(stderr).lines();
    let uri = loop {
        let Some(line) = lines.next().transpose()? else { bail!("serve-sql exited before serving") };
        if let Some(rest) = line.split("serving Flight SQL on ").nth(1) {
            break rest.split_whitespace().next().unwrap_or_default().to_string();
        }
    };
    // The query log goes on; drain it so the server never blocks on a full pipe.
    std::thread::spawn(move || lines.for_each(drop));
    let client = client_runs(&uri, repeat, &sql);
    let _ = server.kill();
    let _ = server.wait();
    let (client_best, client_rows) = client?;

    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "crowsnest bench --flight-sql — one query's {client_rows}-row result ({} columns) from a lake of {} audit events",
        COLUMNS.split(',').count(),
        args.events
    )?;
    let rows = client_rows as f64;
    let table = RateTable::start_in(&mut out, rows / hunt_best, "rows/s")?;
    table.row(&mut out, "crowsnest hunt --format parquet > file (baseline)", hunt_best, rows)?;
    table.row(&mut out, "serve-sql → Python ADBC (Flight SQL) into a pyarrow Table", client_best, rows)?;
    writeln!(
        out,
        "each figure the fastest of {repeat} runs (--repeat), timed from process or connection start to the last row; SQL: {sql}"
    )?;
    Ok(())
}

/// The fastest of the client's runs, and its rows.
fn client_runs(uri: &str, repeat: usize, sql: &str) -> Result<(f64, u64)> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../bench/flight_sql_bench.py");
    let mut child = Command::new(python())
        .arg(&script)
        .arg(uri)
        .arg(repeat.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting the Python client (needs adbc-driver-flightsql: see .ci/run or set CROWSNEST_PYTHON)")?;
    child.stdin.take().expect("piped stdin").write_all(sql.as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!("the Python client failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let mut best = (f64::MAX, 0);
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let mut f = line.split_whitespace();
        let (Some(Ok(secs)), Some(Ok(rows))) = (f.next().map(str::parse::<f64>), f.next().map(str::parse::<u64>)) else { continue };
        if secs < best.0 {
            best = (secs, rows);
        }
    }
    if best.1 == 0 {
        bail!("the Python client read no rows");
    }
    Ok(best)
}
