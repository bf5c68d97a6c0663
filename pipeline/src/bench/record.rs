//! `bench --record FILE`: every figure a bench run prints, appended to a JSON lines file with
//! the commit it measured, so tables (the README's among them) are made from measurements.
//!
//! A line: `{"at": RFC 3339, "commit": "abc1234", "dirty": false, "mode": "windows",
//! "args": "...", "figures": [{"name": …, "value": …, "unit": …}, …]}`.
//! `bench/history_table.py FILE` prints the figures of the latest run of each mode as Markdown.

use std::io::Write;
use std::path::Path;
use std::sync::Mutex;

use anyhow::{Context, Result};
use serde_json::json;

static FIGURES: Mutex<Vec<(String, f64, String)>> = Mutex::new(Vec::new());

/// Notes one figure of this run (printed anyway; recorded with --record).
pub fn figure(name: &str, value: f64, unit: &str) {
    if let Ok(mut f) = FIGURES.lock() {
        f.push((name.to_string(), value, unit.to_string()));
    }
}

/// The commit measured, and whether the tree had changes beside it (besides `record`, the file
/// being appended to, which a tracked history changes with every run).
fn commit(record: &Path) -> (String, bool) {
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let id = git(&["rev-parse", "--short=12", "HEAD"]).unwrap_or_else(|| "unknown".to_string());
    // Changes to tracked files only: bench output directories are not the code measured.
    let top = git(&["rev-parse", "--show-toplevel"]).map(std::path::PathBuf::from);
    let record = record.canonicalize().ok();
    // A porcelain line is "XY path", the path relative to the top of the tree.
    let is_record = |changed: &str| record.is_some() && top.as_ref().and_then(|t| t.join(changed).canonicalize().ok()) == record;
    let dirty = git(&["status", "--porcelain", "--untracked-files=no"])
        .is_some_and(|s| s.lines().filter_map(|l| l.trim_start().split_once(' ')).any(|(_, changed)| !is_record(changed.trim())));
    (id, dirty)
}

/// Appends this run's figures to `path` as one line; `args` is the command line (its
/// `--record FILE` is left out).
pub fn append(path: &Path, mode: &str, args: &[String]) -> Result<()> {
    let mut kept = Vec::new();
    let mut skip = false;
    for a in args {
        if std::mem::take(&mut skip) || a.starts_with("--record=") {
            continue;
        }
        if a == "--record" {
            skip = true;
            continue;
        }
        kept.push(a.as_str());
    }
    let args = kept.join(" ");
    let figures: Vec<_> = FIGURES
        .lock()
        .map(|f| f.iter().map(|(name, value, unit)| json!({"name": name, "value": value, "unit": unit})).collect())
        .unwrap_or_default();
    let (commit, dirty) = commit(path);
    let line = json!({
        "at": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "commit": commit,
        "dirty": dirty,
        "mode": mode,
        "args": args,
        "cores": std::thread::available_parallelism().map_or(0, |n| n.get()),
        "figures": figures,
    });
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(path).with_context(|| format!("opening {}", path.display()))?;
    writeln!(f, "{line}").with_context(|| format!("appending to {}", path.display()))?;
    eprintln!(
        "recorded {} figures in {} (commit {commit}{})",
        figures.len(),
        path.display(),
        if dirty { ", with uncommitted changes" } else { "" }
    );
    Ok(())
}
