//! Sinks: where alerts and dead letters go. A sink sees serialized records (one JSON document
//! and a key each), never where they came from, so every sink serves both outputs.

pub mod kafka;
pub mod lake;
pub mod router;
pub mod sentinel;

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::Serialize;

/// Each row of a batch as one JSON object (nulls left out), in row order: what late events and
/// forwarded audit events write.
pub fn json_rows(batch: &datafusion::arrow::array::RecordBatch) -> Result<Vec<Vec<u8>>> {
    let mut writer = datafusion::arrow::json::LineDelimitedWriter::new(Vec::with_capacity(batch.num_rows() * 512));
    writer.write(batch)?;
    writer.finish()?;
    // The writer escapes newlines inside strings: every line is one row.
    Ok(writer.into_inner().split(|&b| b == b'\n').filter(|l| !l.is_empty()).map(<[u8]>::to_vec).collect())
}

/// One output document, serialized once for every sink.
pub struct Record {
    /// What a keyed sink (Kafka) keys by: the alert id, or a dead letter's source and position.
    pub key: String,
    /// One JSON document, without a trailing newline.
    pub json: Vec<u8>,
}

impl Record {
    pub fn new<T: Serialize>(key: String, item: &T) -> Record {
        // Alerts and dead letters are plain structs of strings and numbers: always serializable.
        Record { key, json: serde_json::to_vec(item).expect("alerts and dead letters serialize") }
    }
}

pub trait Sink: Send {
    fn name(&self) -> &str;
    /// Hands records over, in order; they may not be durable until [`Sink::flush`]. An error
    /// means the sink cannot take them: the pipeline stops rather than lose them.
    fn send(&mut self, records: &[Record]) -> Result<()>;
    /// Returns once everything sent so far is durable (synced to disk, acknowledged by the
    /// broker). Source offsets are committed only after every sink flushed.
    fn flush(&mut self) -> Result<()>;
    /// The run is over: make everything durable and deliver what can be delivered before the
    /// process exits (a sink with a spool drains it, for as long as it is allowed to).
    fn finish(&mut self) -> Result<()> {
        self.flush()
    }
}

/// JSON lines on stdout, flushed per batch so `| jq` sees alerts as they fire.
pub struct StdoutSink;

impl Sink for StdoutSink {
    fn name(&self) -> &str {
        "stdout"
    }
    fn send(&mut self, records: &[Record]) -> Result<()> {
        let stdout = io::stdout();
        let mut out = stdout.lock();
        let written = records.iter().try_for_each(|r| {
            out.write_all(&r.json)?;
            out.write_all(b"\n")
        });
        match written.and_then(|_| out.flush()) {
            // The reader went away (`| head`): not an error of ours.
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
            r => Ok(r?),
        }
    }
    fn flush(&mut self) -> Result<()> {
        Ok(())
    }
}

/// JSON lines appended to a file; created lazily, so an empty run leaves no file. Each `send`
/// is one append of whole lines, so two writers of the same file (the pipeline's dead letters
/// and a sink's own) never interleave within a line.
pub struct JsonLinesFile {
    path: PathBuf,
    out: Option<File>,
    /// A regular file, which `flush` syncs; `/dev/null`, a FIFO or a terminal cannot be.
    syncs: bool,
    buf: Vec<u8>,
    label: String,
    rotation: Option<Rotation>,
    /// Bytes in the open file (a regular one).
    size: u64,
}

/// When a file a service keeps appending to (dead letters, late events) rolls over: past
/// `max_bytes`, FILE becomes FILE.1, FILE.1 becomes FILE.2 …, and what was FILE.`keep` is gone.
/// A flood of bad input then costs at most (keep + 1) × max_bytes of disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rotation {
    pub max_bytes: u64,
    pub keep: u32,
}

impl JsonLinesFile {
    pub fn new(path: &Path, label: &str) -> Self {
        JsonLinesFile {
            path: path.to_path_buf(),
            out: None,
            syncs: false,
            buf: Vec::new(),
            label: format!("{label}:{}", path.display()),
            rotation: None,
            size: 0,
        }
    }

    /// Rolls the file over as `rotation` says (None: it grows as long as it is written).
    pub fn rotating(mut self, rotation: Option<Rotation>) -> Self {
        self.rotation = rotation;
        self
    }

    /// Whether the path no longer names the open file: another writer of it rolled it over
    /// (the pipeline's dead letters and a sink's own share one file), or logrotate moved it.
    /// Writing on would append to a renamed file, and once that is replaced, to nothing.
    fn moved(&self) -> bool {
        use std::os::unix::fs::MetadataExt;
        let Some(out) = self.out.as_ref().filter(|_| self.syncs) else { return false };
        match (out.metadata(), std::fs::metadata(&self.path)) {
            (Ok(open), Ok(named)) => (open.dev(), open.ino()) != (named.dev(), named.ino()),
            (Ok(_), Err(_)) => true,
            _ => false,
        }
    }

    /// FILE → FILE.1 → FILE.2 … (the last one replaced), after syncing what FILE holds.
    fn roll_over(&mut self, keep: u32) -> Result<()> {
        self.flush()?;
        self.out = None;
        let numbered = |i: u32| PathBuf::from(format!("{}.{i}", self.path.display()));
        for i in (1..keep).rev() {
            match std::fs::rename(numbered(i), numbered(i + 1)) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => {
                    return Err(e).with_context(|| format!("rolling over {}", self.path.display()))
                }
                _ => {}
            }
        }
        if keep == 0 { std::fs::remove_file(&self.path) } else { std::fs::rename(&self.path, numbered(1)) }
            .with_context(|| format!("rolling over {}", self.path.display()))?;
        log::info!("{}: rolled over at {} bytes (keeping {keep} older files)", self.label, self.size);
        self.size = 0;
        Ok(())
    }

    fn open(&mut self) -> Result<&mut File> {
        if self.out.is_none() {
            if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            }
            let f = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)
                .with_context(|| format!("opening {}", self.path.display()))?;
            let meta = f.metadata().ok().filter(|m| m.is_file());
            self.syncs = meta.is_some();
            self.size = meta.map_or(0, |m| m.len());
            self.out = Some(f);
        }
        Ok(self.out.as_mut().expect("opened above"))
    }
}

impl Sink for JsonLinesFile {
    fn name(&self) -> &str {
        &self.label
    }
    fn send(&mut self, records: &[Record]) -> Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        for r in records {
            buf.extend_from_slice(&r.json);
            buf.push(b'\n');
        }
        let path = self.path.display().to_string();
        if self.moved() {
            self.flush()?;
            self.out = None;
        }
        self.open()?;
        if let Some(r) = self.rotation.filter(|r| self.syncs && self.size > 0 && self.size + buf.len() as u64 > r.max_bytes) {
            self.roll_over(r.keep)?;
        }
        let written = self.open()?.write_all(&buf).with_context(|| format!("writing {path}"));
        self.size += buf.len() as u64;
        self.buf = buf;
        written
    }
    fn flush(&mut self) -> Result<()> {
        if let Some(out) = self.out.as_mut().filter(|_| self.syncs) {
            out.sync_data().with_context(|| format!("syncing {}", self.path.display()))?;
        }
        Ok(())
    }
}

/// Keeps what it is sent, for commands that look at the alerts after the run (backtest).
#[derive(Default, Clone)]
pub struct MemorySink {
    pub records: std::sync::Arc<std::sync::Mutex<Vec<Vec<u8>>>>,
}

impl Sink for MemorySink {
    fn name(&self) -> &str {
        "memory"
    }
    fn send(&mut self, records: &[Record]) -> Result<()> {
        self.records.lock().expect("memory sink lock").extend(records.iter().map(|r| r.json.clone()));
        Ok(())
    }
    fn flush(&mut self) -> Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(i: usize) -> Record {
        Record { key: String::new(), json: format!("{{\"n\":{i:04}}}").into_bytes() }
    }

    #[test]
    fn a_file_rolls_over_and_keeps_only_the_newest_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("late.jsonl");
        let mut f = JsonLinesFile::new(&path, "late-events").rotating(Some(Rotation { max_bytes: 40, keep: 2 }));
        for i in 0..20 {
            f.send(&[record(i)]).unwrap(); // 11 bytes a line: three to a file
        }
        f.flush().unwrap();
        let read = |p: &Path| std::fs::read_to_string(p).unwrap();
        let (newest, older, oldest) = (read(&path), read(&dir.path().join("late.jsonl.1")), read(&dir.path().join("late.jsonl.2")));
        assert!(!dir.path().join("late.jsonl.3").exists());
        for text in [&newest, &older, &oldest] {
            assert!(text.len() <= 40, "{text}");
        }
        // The newest lines, in order, across the files: nothing lost but what rolled off the end.
        let kept: Vec<String> = [oldest, older, newest].concat().lines().map(String::from).collect();
        let want: Vec<String> = (20 - kept.len()..20).map(|i| format!("{{\"n\":{i:04}}}")).collect();
        assert_eq!(kept, want);
        assert_eq!(kept.len(), 8, "three files: 2 + 3 + 3 lines");
    }

    #[test]
    fn a_second_writer_follows_the_file_when_the_first_rolls_it_over() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dead.jsonl");
        let mut rolling = JsonLinesFile::new(&path, "dead-letters").rotating(Some(Rotation { max_bytes: 25, keep: 1 }));
        let mut other = JsonLinesFile::new(&path, "dead-letters");
        for i in 0..6 {
            rolling.send(&[record(i)]).unwrap();
            other.send(&[record(100 + i)]).unwrap();
        }
        // What the files keep is both writers' newest lines, each writer's in order: none went
        // to a file rolled away after its rename.
        let read = |p: &Path| std::fs::read_to_string(p).unwrap();
        let kept = read(&dir.path().join("dead.jsonl.1")) + &read(&path);
        let (ours, theirs): (Vec<&str>, Vec<&str>) = kept.lines().partition(|l| l.contains(":00"));
        assert_eq!(ours, ["{\"n\":0002}", "{\"n\":0003}", "{\"n\":0004}", "{\"n\":0005}"], "{kept}");
        assert_eq!(theirs, ["{\"n\":0102}", "{\"n\":0103}", "{\"n\":0104}", "{\"n\":0105}"], "{kept}");
    }
}
