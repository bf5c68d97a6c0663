//! A directory of files replayed as one input, in time order: above all the tree diagnostic
//! settings write when they archive to a storage account,
//! `insights-logs-kube-audit/resourceId=/SUBSCRIPTIONS/…/MANAGEDCLUSTERS/NAME/y=2026/m=11/d=01/h=08/m=00/PT1H.json`
//! (downloaded with `az storage blob download-batch` or azcopy). Files are ordered by the time
//! their path names (`y=`, `m=`, `d=`, `h=`, then `m=` for minutes), then by path; a tree
//! without such names is read in path order. Each file is opened only when its turn comes, so
//! a year of hourly files does not hold a year of open files.

use std::io;
use std::path::{Path, PathBuf};

use super::file::FileSource;
use super::{ByteCounter, Chunk, FramingLimits, Source};

/// The files of a tree, in the order they are read.
#[derive(Debug, Default)]
pub struct Tree {
    pub files: Vec<PathBuf>,
    /// Files passed over (not JSON, JSON lines or gzip by their name; hidden files).
    pub skipped: usize,
    /// How much event time (ns) one file of the tree covers (from the finest of `y=`…`m=` in its
    /// path), when several files share one period: their events interleave, and a replay must
    /// allow that much lateness (see `crowsnest replay`).
    pub overlap: Option<i64>,
}

/// Whether a file name is one of the inputs a replay reads: JSON, JSON lines, logs, gzip.
fn is_input(name: &str) -> bool {
    let base = name.strip_suffix(".gz").unwrap_or(name);
    !name.starts_with('.') && (base.len() < name.len() || [".json", ".jsonl", ".ndjson", ".log"].iter().any(|e| base.ends_with(e)))
}

/// The time a path names through `y=YYYY/m=MM/d=DD/h=HH/m=MM` folders, as its parts (missing
/// ones 0), and how many parts it has.
fn time_key(path: &Path) -> ([u32; 5], usize) {
    let mut key = [0u32; 5];
    let mut depth = 0;
    for part in path.components().filter_map(|c| c.as_os_str().to_str()) {
        let Some((name, value)) = part.split_once('=') else { continue };
        let Ok(value) = value.parse::<u32>() else { continue };
        let slot = match (name, depth) {
            ("y", _) => 0,
            ("m", 1) => 1,
            ("d", _) => 2,
            ("h", _) => 3,
            ("m", 4) => 4,
            _ => continue,
        };
        key[slot] = value;
        depth = slot + 1;
    }
    (key, depth)
}

/// Event time (ns) one file covers when its path stops at `depth` parts.
fn period(depth: usize) -> i64 {
    const SEC: i64 = 1_000_000_000;
    SEC * match depth {
        0 | 1 => 366 * 86_400,
        2 => 31 * 86_400,
        3 => 86_400,
        // `m=00` under `h=`: AKS archives an hour per file (PT1H.json).
        _ => 3_600,
    }
}

/// Walks `dir` recursively.
pub fn walk(dir: &Path) -> io::Result<Tree> {
    let mut tree = Tree::default();
    let mut found: Vec<(([u32; 5], usize), PathBuf)> = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(d) = pending.pop() {
        let entries = std::fs::read_dir(&d).map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", d.display())))?;
        for entry in entries {
            let entry = entry?;
            let path = entry.path();
            let kind = entry.file_type()?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if kind.is_dir() {
                if !name.starts_with('.') {
                    pending.push(path);
                }
            } else if is_input(&name) {
                let rel = path.strip_prefix(dir).unwrap_or(&path).to_path_buf();
                found.push((time_key(&rel), path));
            } else {
                tree.skipped += 1;
            }
        }
    }
    found.sort_by(|a, b| (a.0 .0, &a.1).cmp(&(b.0 .0, &b.1)));
    // Several files for one period (clusters, or categories, side by side) interleave in time.
    let overlap = found.windows(2).filter(|w| w[0].0 == w[1].0 && w[0].0 .1 > 0).map(|w| period(w[0].0 .1)).max();
    tree.overlap = overlap;
    tree.files = found.into_iter().map(|(_, p)| p).collect();
    Ok(tree)
}

/// A file opened when its turn comes.
pub struct LazyFile {
    path: PathBuf,
    name: String,
    limits: FramingLimits,
    counter: ByteCounter,
    size: Option<u64>,
    open: Option<FileSource>,
}

impl LazyFile {
    pub fn new(path: PathBuf, limits: FramingLimits, counter: ByteCounter) -> LazyFile {
        let size = std::fs::metadata(&path).ok().map(|m| m.len());
        LazyFile { name: format!("file:{}", path.display()), path, limits, counter, size, open: None }
    }
}

impl Source for LazyFile {
    fn name(&self) -> &str {
        &self.name
    }

    fn next_chunk(&mut self) -> io::Result<Option<Chunk>> {
        if self.open.is_none() {
            self.open = Some(FileSource::open(&self.path, self.limits.clone(), self.counter.clone())?);
        }
        self.open.as_mut().expect("opened above").next_chunk()
    }

    fn size_hint(&self) -> Option<u64> {
        self.size
    }

    fn recycle(&mut self, buf: Vec<u8>) {
        if let Some(f) = &mut self.open {
            f.recycle(buf);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storage_archive_paths_sort_by_the_time_they_name() {
        let dir = tempfile::tempdir().unwrap();
        let cluster = |c: &str| {
            format!("insights-logs-kube-audit/resourceId=/SUBSCRIPTIONS/S/RESOURCEGROUPS/RG/PROVIDERS/MICROSOFT.CONTAINERSERVICE/MANAGEDCLUSTERS/{c}")
        };
        let files = [
            format!("{}/y=2026/m=11/d=01/h=10/m=00/PT1H.json", cluster("B")),
            format!("{}/y=2026/m=11/d=01/h=09/m=00/PT1H.json", cluster("B")),
            format!("{}/y=2026/m=11/d=01/h=09/m=00/PT1H.json", cluster("A")),
            format!("{}/y=2026/m=10/d=31/h=23/m=00/PT1H.json.gz", cluster("A")),
            format!("{}/y=2026/m=11/d=01/h=09/m=00/notes.txt", cluster("A")),
            format!("{}/y=2026/m=11/d=01/h=09/m=00/.PT1H.json.swp", cluster("A")),
        ];
        for f in &files {
            let p = dir.path().join(f);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, b"{}").unwrap();
        }
        let tree = walk(dir.path()).unwrap();
        let got: Vec<String> = tree.files.iter().map(|p| p.strip_prefix(dir.path()).unwrap().to_string_lossy().into_owned()).collect();
        assert_eq!(got, vec![files[3].clone(), files[2].clone(), files[1].clone(), files[0].clone()]);
        assert_eq!(tree.skipped, 2);
        // Two clusters share 09:00: their hours interleave.
        assert_eq!(tree.overlap, Some(3600 * 1_000_000_000));
    }

    #[test]
    fn one_file_per_period_needs_no_extra_lateness() {
        let dir = tempfile::tempdir().unwrap();
        for h in ["08", "09"] {
            let p = dir.path().join(format!("y=2026/m=11/d=01/h={h}/m=00/PT1H.json"));
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, b"{}").unwrap();
        }
        assert_eq!(walk(dir.path()).unwrap().overlap, None);
        assert_eq!(time_key(Path::new("y=2026/m=11/d=01/h=08/m=30/PT1H.json")), ([2026, 11, 1, 8, 30], 5));
    }
}
