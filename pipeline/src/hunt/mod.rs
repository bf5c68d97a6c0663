//! `crowsnest hunt`: ad hoc, read-only SQL over the lake or over raw input, the hunt library,
//! and an interactive shell.
//!
//! [`session`] builds the SQL session (tables, time range, functions, read-only options),
//! [`library`] reads the named hunts and [`table_functions`] makes them callable from SQL,
//! [`output`] prints results, [`shell`] is the prompt, and [`flight`] serves the same session
//! over Arrow Flight SQL.
//! Hunts sit above `engine` and `tables`: they use the engine's functions and the tables'
//! schemas, never the other way round.

pub mod flight;
pub mod library;
pub mod output;
pub mod session;
pub mod shell;
pub mod table_functions;

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use datafusion::arrow::array::RecordBatch;
use indicatif::{ProgressBar, ProgressStyle};

use crate::decode::Decoder;
use crate::lake::{LakeConfig, Store};
use crate::rules::lists::Lists;
use crate::source::file::{open_paths, FileSource};
use crate::source::{FramingLimits, Source};
pub use output::Format;
pub use session::{HuntSession, QueryResult, TimeRange};

/// Where a hunt reads.
pub enum Input {
    Lake(LakeConfig),
    Files(Vec<PathBuf>),
    /// The bundled sample (no lake, no files given).
    Sample,
}

/// Opens the session a hunt runs in.
pub fn open(input: &Input, range: TimeRange, lists: Arc<Lists>) -> Result<HuntSession> {
    match input {
        Input::Lake(cfg) => HuntSession::over_lake(&Store::open(cfg)?, range, lists),
        Input::Files(paths) => {
            let counter = Arc::default();
            let opened = open_paths(paths, &FramingLimits::default(), &counter)?;
            HuntSession::over_batches(decode_all(opened.sources)?, range, lists)
        }
        Input::Sample => {
            let source =
                FileSource::from_bytes("sample:aks-sample.jsonl.gz", crate::cli::SAMPLE, FramingLimits::default(), Arc::default())?;
            HuntSession::over_batches(decode_all(vec![Box::new(source)])?, range, lists)
        }
    }
}

/// Raw input through the pipeline's decoder (redaction included), table by table. Dead letters
/// are counted on stderr, not kept: a hunt is a look, not an ingestion.
pub fn decode_all(sources: Vec<Box<dyn Source>>) -> Result<HashMap<String, Vec<RecordBatch>>> {
    let mut tables: HashMap<String, Vec<RecordBatch>> = HashMap::new();
    let mut decoder = Decoder::new();
    let mut dead = 0;
    for mut source in sources {
        while let Some(chunk) = source.next_chunk().with_context(|| format!("reading {}", source.name()))? {
            let (batches, dl, _) = crate::pipeline::decode_chunk(&mut decoder, &chunk);
            dead += dl.len();
            for b in batches {
                tables.entry(b.table.to_string()).or_default().push(b.batch);
            }
        }
    }
    if dead > 0 {
        eprintln!("crowsnest: {dead} document(s) could not be decoded and are left out (crowsnest replay writes them as dead letters)");
    }
    Ok(tables)
}

/// How results are printed and what is said about them.
#[derive(Debug, Clone)]
pub struct Presentation {
    pub format: Format,
    pub max_rows: Option<usize>,
    /// Rows, bytes scanned and time on stderr.
    pub timing: bool,
    pub progress: bool,
}

impl Presentation {
    /// A table on a terminal, NDJSON when piped.
    pub fn default_for_stdout(format: Option<Format>, max_rows: Option<usize>) -> Presentation {
        let tty = std::io::stdout().is_terminal();
        Presentation {
            format: format.unwrap_or(if tty { Format::Table } else { Format::Ndjson }),
            max_rows,
            timing: true,
            progress: std::io::stderr().is_terminal(),
        }
    }
}

/// Runs one statement and prints its result.
pub fn run_and_print(session: &HuntSession, sql: &str, p: &Presentation, out: &mut dyn Write) -> Result<QueryResult> {
    let bar = p.progress.then(|| {
        let bar = ProgressBar::new_spinner()
            .with_style(ProgressStyle::with_template("{spinner} [{elapsed_precise}] {msg}").expect("valid template"));
        bar.enable_steady_tick(Duration::from_millis(200));
        bar.set_message("running");
        bar
    });
    // One row more than shown, to say that there were more.
    let limit = p.max_rows.map(|m| m + 1);
    let result = session.query(sql, limit, &mut |rows| {
        if let Some(b) = &bar {
            b.set_message(format!("{rows} rows"));
        }
    });
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    let mut result = result?;
    let more = p.max_rows.is_some_and(|m| result.rows > m);
    if let (true, Some(m)) = (more, p.max_rows) {
        let mut left = m;
        result.batches = result
            .batches
            .iter()
            .filter_map(|b| {
                let n = b.num_rows().min(left);
                left -= n;
                (n > 0).then(|| b.slice(0, n))
            })
            .collect();
        result.rows = m;
    }
    output::write(out, p.format, &result.schema, &result.batches)?;
    out.flush()?;
    if p.timing {
        let scanned =
            if result.bytes_scanned > 0 { format!(", {:.1} MB scanned", result.bytes_scanned as f64 / 1e6) } else { String::new() };
        let more = if more { " (more rows left out: --max-rows)" } else { "" };
        eprintln!("{} row(s){more} in {:.3}s{scanned}", result.rows, result.elapsed.as_secs_f64());
    }
    Ok(result)
}

/// The SQL that shows a rule's matching rows: its query, for rules that match single events.
pub fn rule_sql(set: &crate::rules::RuleSet, id: &str) -> Result<String> {
    let rule = set.rules.iter().find(|r| r.id == id).with_context(|| format!("no rule {id} (crowsnest rules list)"))?;
    let q = rule.query.to_ascii_lowercase();
    if ["tumble(", "hop(", "session("].iter().any(|w| q.contains(w)) || rule.first_seen.is_some() {
        bail!("{id} is a windowed or first-sighting rule: its matches are alerts; run `crowsnest rules backtest {id} --lake URL`");
    }
    Ok(rule.query.clone())
}
