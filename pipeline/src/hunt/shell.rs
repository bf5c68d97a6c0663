//! The interactive hunt shell: statements end with `;` and may span lines; `\d`, `\d TABLE`,
//! `\timing`, `\format FMT`, `\max N`, `\q`, as in psql and datafusion-cli. On a terminal it
//! edits lines and keeps a history (`~/.crowsnest_history`); fed from a pipe it reads the
//! statements one after another, so scripts and tests drive it the same way.

use std::io::{BufRead, Write};

use anyhow::Result;

use super::{output, run_and_print, HuntSession, Presentation};
use crate::tables::{schema_text, TABLE_NAMES};

const PROMPT: &str = "crowsnest> ";
const MORE: &str = "        -> ";

enum Lines {
    Editor(Box<rustyline::DefaultEditor>, Option<std::path::PathBuf>),
    Piped(std::io::StdinLock<'static>),
}

impl Lines {
    fn next(&mut self, continuing: bool) -> Option<String> {
        match self {
            Lines::Editor(ed, _) => match ed.readline(if continuing { MORE } else { PROMPT }) {
                Ok(l) => Some(l),
                // Ctrl-C drops the statement being typed; Ctrl-D ends.
                Err(rustyline::error::ReadlineError::Interrupted) => Some("\\reset".to_string()),
                Err(_) => None,
            },
            Lines::Piped(input) => {
                let mut l = String::new();
                match input.read_line(&mut l) {
                    Ok(0) | Err(_) => None,
                    Ok(_) => Some(l.trim_end_matches(['\n', '\r']).to_string()),
                }
            }
        }
    }

    fn remember(&mut self, statement: &str) {
        if let Lines::Editor(ed, _) = self {
            let _ = ed.add_history_entry(statement);
        }
    }

    fn save(&mut self) {
        if let Lines::Editor(ed, Some(path)) = self {
            let _ = ed.save_history(path);
        }
    }
}

pub fn run(session: &HuntSession, mut p: Presentation) -> Result<()> {
    let interactive = std::io::IsTerminal::is_terminal(&std::io::stdin());
    let mut lines = if interactive {
        let mut ed = rustyline::DefaultEditor::new()?;
        let history = std::env::var_os("HOME").map(|h| std::path::Path::new(&h).join(".crowsnest_history"));
        if let Some(h) = &history {
            let _ = ed.load_history(h);
        }
        eprintln!("crowsnest hunt shell: SQL ending with ;  \\d tables  \\d TABLE columns  \\timing  \\format table|csv|json|ndjson  \\max N  \\q");
        Lines::Editor(Box::new(ed), history)
    } else {
        Lines::Piped(std::io::stdin().lock())
    };
    // Piped output is for tools: a table only when someone reads it.
    if !interactive {
        p.progress = false;
    }
    let stdout = std::io::stdout();
    let mut statement = String::new();
    let mut failed = false;
    while let Some(line) = lines.next(!statement.is_empty()) {
        let trimmed = line.trim();
        if statement.is_empty() && trimmed.starts_with('\\') {
            let mut words = trimmed.split_whitespace();
            let cmd = words.next().unwrap_or_default();
            let arg = words.next();
            let mut out = stdout.lock();
            match (cmd, arg) {
                ("\\q" | "\\quit", _) => break,
                ("\\reset", _) => statement.clear(),
                ("\\d", None) => {
                    for t in TABLE_NAMES {
                        writeln!(out, "{t}")?;
                    }
                }
                ("\\d", Some(t)) => match session.schema(t) {
                    Ok(s) => write!(out, "{}", schema_text(&s))?,
                    Err(e) => eprintln!("error: {e:#}"),
                },
                ("\\timing", _) => {
                    p.timing = !p.timing;
                    eprintln!("timing {}", if p.timing { "on" } else { "off" });
                }
                ("\\format", Some(f)) => match output::Format::parse(f) {
                    Ok(f) => p.format = f,
                    Err(e) => eprintln!("error: {e:#}"),
                },
                ("\\max", Some(n)) => match n.parse::<usize>() {
                    Ok(0) => p.max_rows = None,
                    Ok(n) => p.max_rows = Some(n),
                    Err(_) => eprintln!("error: \\max takes a number (0: no limit)"),
                },
                _ => eprintln!("error: unknown command {trimmed:?}: \\d [TABLE], \\timing, \\format FMT, \\max N, \\q"),
            }
            continue;
        }
        if trimmed.is_empty() && statement.is_empty() {
            continue;
        }
        statement.push_str(&line);
        statement.push('\n');
        if !trimmed.ends_with(';') {
            continue;
        }
        let sql = std::mem::take(&mut statement);
        lines.remember(sql.trim());
        let mut out = stdout.lock();
        if let Err(e) = run_and_print(session, sql.trim().trim_end_matches(';'), &p, &mut out) {
            eprintln!("error: {e:#}");
            failed = true;
        }
    }
    lines.save();
    if !statement.trim().is_empty() {
        eprintln!("error: the last statement has no closing ; and was not run");
        failed = true;
    }
    if failed && !interactive {
        anyhow::bail!("a statement failed");
    }
    Ok(())
}
