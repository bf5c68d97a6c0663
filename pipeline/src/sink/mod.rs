//! Sinks: where alerts and dead letters go. A sink only sees alerts (or dead letters), never
//! where they came from.

pub mod router;

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::Serialize;

use crate::alert::Alert;

pub trait AlertSink: Send {
    fn name(&self) -> &str;
    /// Delivers alerts; returns only once they are written (not necessarily synced).
    fn send(&mut self, alerts: &[Alert]) -> Result<()>;
    /// Makes everything sent so far durable.
    fn flush(&mut self) -> Result<()>;
}

/// JSON lines on stdout, flushed per batch so `| jq` sees alerts as they fire.
pub struct StdoutSink;

impl AlertSink for StdoutSink {
    fn name(&self) -> &str {
        "stdout"
    }
    fn send(&mut self, alerts: &[Alert]) -> Result<()> {
        let stdout = io::stdout();
        let mut out = stdout.lock();
        for a in alerts {
            serde_json::to_writer(&mut out, a)?;
            out.write_all(b"\n")?;
        }
        match out.flush() {
            // The reader went away (`| head`): not an error of ours.
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
            r => Ok(r?),
        }
    }
    fn flush(&mut self) -> Result<()> {
        Ok(())
    }
}

/// JSON lines appended to a file; created lazily, so an empty run leaves no file.
pub struct JsonLinesFile {
    path: PathBuf,
    out: Option<BufWriter<File>>,
    label: String,
}

impl JsonLinesFile {
    pub fn new(path: &Path, label: &str) -> Self {
        JsonLinesFile { path: path.to_path_buf(), out: None, label: format!("{label}:{}", path.display()) }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn written(&self) -> bool {
        self.out.is_some()
    }

    pub fn write_all<T: Serialize>(&mut self, items: &[T]) -> Result<()> {
        if items.is_empty() {
            return Ok(());
        }
        if self.out.is_none() {
            if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            }
            let f = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)
                .with_context(|| format!("opening {}", self.path.display()))?;
            self.out = Some(BufWriter::new(f));
        }
        let out = self.out.as_mut().expect("opened above");
        for i in items {
            serde_json::to_writer(&mut *out, i)?;
            out.write_all(b"\n")?;
        }
        out.flush().with_context(|| format!("writing {}", self.path.display()))?;
        Ok(())
    }

    pub fn sync(&mut self) -> Result<()> {
        if let Some(out) = self.out.as_mut() {
            out.flush()?;
            out.get_ref().sync_data().with_context(|| format!("syncing {}", self.path.display()))?;
        }
        Ok(())
    }
}

impl AlertSink for JsonLinesFile {
    fn name(&self) -> &str {
        &self.label
    }
    fn send(&mut self, alerts: &[Alert]) -> Result<()> {
        self.write_all(alerts)
    }
    fn flush(&mut self) -> Result<()> {
        self.sync()
    }
}
