//! The on-disk spool: every batch is written here (fsynced, renamed into place) before it counts
//! as delivered, and deleted once Azure answered 204. What a crash or an outage leaves is sent
//! first at the next start. One process at a time: the directory is locked.
//!
//! Batches are kept as JSON, not gzip: compressing is the sender thread's work, off the engine
//! thread that writes the spool (it was most of the sink's cost there). A file is
//! `SEQ.ROWS.json`, so a restart knows what it holds without reading it.
//!
//! Durability is group-committed: [`Spool::push`] writes and renames a batch into place, and
//! [`Spool::sync`] (what the sink's `flush`, hence every checkpoint, calls) fsyncs every batch
//! written since, then the directory. A batch counts as delivered only after `sync`, so a crash
//! can only cut short one that was never acknowledged: at the next start a file that is not a
//! whole JSON array is such a batch, and is dropped (its input is read again).

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::{bail, Context, Result};

use super::request::Body;

#[derive(Debug, Clone)]
pub struct Entry {
    pub seq: u64,
    pub path: PathBuf,
    /// The JSON on disk (sent gzipped).
    pub bytes: u64,
    pub records: usize,
    pub created: SystemTime,
}

pub struct Spool {
    dir: PathBuf,
    _lock: File,
    entries: BTreeMap<u64, Entry>,
    next_seq: u64,
    bytes: u64,
    /// Written since the last sync.
    unsynced: Vec<PathBuf>,
}

impl Spool {
    /// Opens (creating) the spool directory and takes what an earlier run left in it.
    pub fn open(dir: &Path) -> Result<Spool> {
        fs::create_dir_all(dir).with_context(|| format!("creating the spool directory {}", dir.display()))?;
        let lock_path = dir.join("spool.lock");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .with_context(|| format!("opening {}", lock_path.display()))?;
        if lock.try_lock().is_err() {
            bail!("the spool {} is in use by another crowsnest process (give each its own spool_dir)", dir.display());
        }
        let mut spool =
            Spool { dir: dir.to_path_buf(), _lock: lock, entries: BTreeMap::new(), next_seq: 0, bytes: 0, unsynced: Vec::new() };
        for item in fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
            let item = item?;
            let name = item.file_name().to_string_lossy().into_owned();
            if name.ends_with(".tmp") {
                // A write cut short by a crash: it never counted as spooled.
                let _ = fs::remove_file(item.path());
                continue;
            }
            let Some(e) = parse_name(&name).map(|(seq, records)| {
                let meta = item.metadata().ok();
                Entry {
                    seq,
                    path: item.path(),
                    bytes: meta.as_ref().map_or(0, |m| m.len()),
                    records,
                    created: meta.and_then(|m| m.modified().ok()).unwrap_or_else(SystemTime::now),
                }
            }) else {
                continue;
            };
            if !whole_array(&e.path) {
                log::warn!(
                    "{}: a batch cut short by a crash before it was acknowledged; dropped (its input is read again)",
                    e.path.display()
                );
                let _ = fs::remove_file(&e.path);
                continue;
            }
            spool.bytes += e.bytes;
            spool.next_seq = spool.next_seq.max(e.seq + 1);
            spool.entries.insert(e.seq, e);
        }
        Ok(spool)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Writes a batch; it is durable after the next [`Spool::sync`].
    pub fn push(&mut self, body: &Body) -> Result<Entry> {
        let seq = self.next_seq;
        self.next_seq += 1;
        let name = format!("{seq:016}.{}.json", body.records);
        let path = self.dir.join(&name);
        let tmp = self.dir.join(format!("{name}.tmp"));
        let write = || -> std::io::Result<()> {
            let mut f = File::create(&tmp)?;
            f.write_all(&body.json)?;
            fs::rename(&tmp, &path)
        };
        if let Err(e) = write() {
            // Leave no half-written file to fill the disk further.
            let _ = fs::remove_file(&tmp);
            return Err(anyhow::Error::from(e).context(format!("writing {} to the spool", path.display())));
        }
        let e = Entry { seq, path, bytes: body.json.len() as u64, records: body.records, created: SystemTime::now() };
        self.unsynced.push(e.path.clone());
        self.bytes += e.bytes;
        self.entries.insert(seq, e.clone());
        Ok(e)
    }

    /// Makes every batch pushed so far durable: their data, then the directory (the renames).
    pub fn sync(&mut self) -> Result<()> {
        if self.unsynced.is_empty() {
            return Ok(());
        }
        for path in &self.unsynced {
            match File::open(path) {
                Ok(f) => f.sync_all().with_context(|| format!("syncing {}", path.display()))?,
                // Sent and removed already: nothing left to make durable.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(anyhow::Error::from(e).context(format!("syncing {}", path.display()))),
            }
        }
        File::open(&self.dir)?.sync_all().with_context(|| format!("syncing {}", self.dir.display()))?;
        self.unsynced.clear();
        Ok(())
    }

    pub fn oldest(&self) -> Option<Entry> {
        self.entries.values().next().cloned()
    }

    /// Deletes a batch Azure accepted (or the dead-letter output took).
    pub fn remove(&mut self, seq: u64) -> Result<()> {
        if let Some(e) = self.entries.remove(&seq) {
            self.bytes -= e.bytes;
            fs::remove_file(&e.path).with_context(|| format!("removing {} from the spool", e.path.display()))?;
        }
        Ok(())
    }

    pub fn bytes(&self) -> u64 {
        self.bytes
    }
    pub fn len(&self) -> usize {
        self.entries.len()
    }
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
    pub fn records(&self) -> usize {
        self.entries.values().map(|e| e.records).sum()
    }
    pub fn oldest_age(&self) -> Duration {
        self.entries.values().next().and_then(|e| e.created.elapsed().ok()).unwrap_or_default()
    }
}

/// The JSON of a spooled batch: to send, split, or dead-letter its rows.
pub fn read_body(e: &Entry) -> std::io::Result<Body> {
    Ok(Body { json: fs::read(&e.path)?, records: e.records })
}

/// Whether a spooled file holds a whole JSON array (what every push writes).
fn whole_array(path: &Path) -> bool {
    fs::read(path).is_ok_and(|b| serde_json::from_slice::<Vec<&serde_json::value::RawValue>>(&b).is_ok())
}

fn parse_name(name: &str) -> Option<(u64, usize)> {
    let (seq, records) = name.strip_suffix(".json")?.split_once('.')?;
    Some((seq.parse().ok()?, records.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_survive_a_restart_in_order_and_the_directory_is_exclusive() {
        let dir = tempfile::tempdir().unwrap();
        let body = |n: usize| Body::of_rows((0..n).map(|_| &br#"{"a":1}"#[..]));
        {
            let mut s = Spool::open(dir.path()).unwrap();
            assert!(Spool::open(dir.path()).is_err(), "a second process cannot share the spool");
            let a = s.push(&body(2)).unwrap();
            s.push(&body(3)).unwrap();
            assert_eq!((s.len(), s.records()), (2, 5));
            assert_eq!(read_body(&a).unwrap(), body(2));
            s.sync().unwrap();
            fs::write(dir.path().join("0000000000000009.1.json.tmp"), b"cut short").unwrap();
            // Renamed into place but never synced, and cut short by the crash.
            fs::write(dir.path().join("0000000000000008.2.json"), br#"[{"a":1},{"#).unwrap();
        }
        let mut s = Spool::open(dir.path()).unwrap();
        assert_eq!((s.len(), s.records()), (2, 5));
        let first = s.oldest().unwrap();
        assert_eq!((first.records, first.bytes), (2, body(2).json.len() as u64));
        s.remove(first.seq).unwrap();
        assert_eq!(s.oldest().unwrap().records, 3);
        assert_eq!(s.push(&body(1)).unwrap().seq, 2, "sequence numbers continue after a restart");
        assert!(!dir.path().join("0000000000000009.1.json.tmp").exists(), "half-written files are dropped");
        assert!(!dir.path().join("0000000000000008.2.json").exists(), "so are batches cut short after their rename");
        assert_eq!(
            s.bytes(),
            fs::read_dir(dir.path())
                .unwrap()
                .filter_map(|e| e.ok())
                .filter(|e| e.file_name().to_string_lossy().ends_with(".json"))
                .map(|e| e.metadata().unwrap().len())
                .sum::<u64>()
        );
    }
}
