//! `crowsnest lake compact` and `crowsnest lake prune`: fewer, larger files for closed hours,
//! and retention.
//!
//! Compaction is idempotent without a log of its own: a compacted file (`c-…`) records in its
//! Parquet metadata which files it replaced, and a compaction that stopped after writing it
//! but before deleting them finishes the job the next time it sees the partition. While it
//! merges, it drops rows the lake holds twice (same audit id and stage, same alert id), which
//! an interrupted run of several consumers in a rebalance can leave.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use anyhow::{Context, Result};
use datafusion::arrow::array::{AsArray, BooleanArray, RecordBatch};
use datafusion::arrow::compute::filter_record_batch;
use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::file::metadata::KeyValue;

use super::layout::{digest, hour_of_path, table_dir};
use super::store::{Listed, Store};
use crate::tables::TABLE_NAMES;

/// Metadata key of a compacted file: the names it replaced, comma-separated.
const COMPACTED_FROM: &str = "crowsnest.compacted_from";

#[derive(Debug, Default)]
pub struct CompactReport {
    pub partitions: usize,
    pub files_in: usize,
    pub files_out: usize,
    pub rows: u64,
    pub duplicates_dropped: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
}

/// Partitions (directories holding Parquet files) of `table`, with their files.
fn partitions(store: &Store, table: &str) -> Result<BTreeMap<String, Vec<Listed>>> {
    let mut out: BTreeMap<String, Vec<Listed>> = BTreeMap::new();
    for l in store.list(&format!("{}/", table_dir(table)))? {
        if let Some((dir, name)) = l.path.rsplit_once('/') {
            if name.ends_with(".parquet") {
                out.entry(dir.to_string()).or_default().push(l);
            }
        }
    }
    Ok(out)
}

fn file_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// Merges the small files of every hour that closed at least `min_age_hours` ago.
pub fn compact(store: &Store, target_bytes: u64, min_age_hours: i64, progress: &dyn Fn(&str)) -> Result<CompactReport> {
    let now_hour = chrono::Utc::now().timestamp() / 3600;
    let mut report = CompactReport::default();
    for table in TABLE_NAMES {
        for (dir, mut files) in partitions(store, table)? {
            let Some(hour) = hour_of_path(&dir) else { continue };
            if hour + 1 + min_age_hours > now_hour {
                continue;
            }
            // Finish what an interrupted compaction left: files a compacted file replaced (or
            // written again since, by a replay of the same input). Only an hour that holds files
            // other than compacted ones can have any, so the others are not read.
            let present: HashSet<String> = files.iter().map(|f| file_name(&f.path).to_string()).collect();
            let mut replaced = HashSet::new();
            let uncompacted = present.iter().any(|n| !n.starts_with("c-"));
            for c in files.iter().filter(|f| uncompacted && file_name(&f.path).starts_with("c-")) {
                for name in compacted_from(store, &c.path)? {
                    if present.contains(&name) {
                        store.delete(&format!("{dir}/{name}"))?;
                        replaced.insert(name);
                    }
                }
            }
            files.retain(|f| !replaced.contains(file_name(&f.path)));
            let small: Vec<&Listed> = files.iter().filter(|f| f.size < target_bytes / 2).collect();
            if small.len() < 2 {
                continue;
            }
            progress(&dir);
            report.partitions += 1;
            // Groups of small files up to the target size, each merged into one file.
            let mut groups: Vec<Vec<&Listed>> = vec![vec![]];
            let mut size = 0;
            for f in small {
                if size + f.size > target_bytes && !groups.last().expect("a group").is_empty() {
                    groups.push(vec![]);
                    size = 0;
                }
                size += f.size;
                groups.last_mut().expect("a group").push(f);
            }
            for group in groups.into_iter().filter(|g| g.len() >= 2) {
                merge(store, table, &dir, &group, &mut report)?;
            }
        }
    }
    Ok(report)
}

fn compacted_from(store: &Store, path: &str) -> Result<Vec<String>> {
    let bytes = store.get(path)?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(bytes).with_context(|| format!("reading {path}"))?;
    Ok(replaced_by(builder.metadata()))
}

/// The names a compacted file's footer says it replaced.
fn replaced_by(metadata: &datafusion::parquet::file::metadata::ParquetMetaData) -> Vec<String> {
    let kv = metadata.file_metadata().key_value_metadata();
    kv.and_then(|kv| kv.iter().find(|k| k.key == COMPACTED_FROM))
        .and_then(|k| k.value.as_deref())
        .map(|v| v.split(',').map(str::to_string).collect())
        .unwrap_or_default()
}

/// The key that makes a row a duplicate of another, for the tables that have one.
fn row_keys(table: &str, batch: &RecordBatch) -> Option<Vec<String>> {
    let (a, b) = match table {
        crate::tables::KUBE_AUDIT => ("audit_id", Some("stage")),
        crate::tables::ALERTS => ("id", None),
        _ => return None,
    };
    let a = batch.column_by_name(a)?.as_string_opt::<i32>()?.clone();
    let b = b.and_then(|b| batch.column_by_name(b)).and_then(|c| c.as_string_opt::<i32>().cloned());
    Some((0..batch.num_rows()).map(|i| format!("{}\u{0}{}", a.value(i), b.as_ref().map_or("", |b| b.value(i)))).collect())
}

fn merge(store: &Store, table: &str, dir: &str, group: &[&Listed], report: &mut CompactReport) -> Result<()> {
    let mut names: Vec<&str> = group.iter().map(|f| file_name(&f.path)).collect();
    names.sort();
    let out_name = format!("c-{}.parquet", digest(&names.iter().map(|n| n.as_bytes()).collect::<Vec<_>>()));
    // What the new file replaces: the merged files and what each of them replaced, so a file
    // written again later (a replay of the same input) is still known for a repeat.
    let mut lineage: BTreeSet<String> = names.iter().map(|n| n.to_string()).collect();
    let mut writer: Option<(ArrowWriter<Vec<u8>>, datafusion::arrow::datatypes::SchemaRef)> = None;
    let mut seen: HashSet<String> = HashSet::new();
    let mut rows = 0u64;
    for f in group {
        let bytes = store.get(&f.path)?;
        report.bytes_in += f.size;
        let builder = ParquetRecordBatchReaderBuilder::try_new(bytes).with_context(|| format!("reading {}", f.path))?;
        lineage.extend(replaced_by(builder.metadata()));
        let reader = builder.build()?;
        for batch in reader {
            let mut batch = batch.with_context(|| format!("reading {}", f.path))?;
            if let Some(keys) = row_keys(table, &batch) {
                let keep: BooleanArray = keys.into_iter().map(|k| Some(seen.insert(k))).collect();
                let before = batch.num_rows();
                batch = filter_record_batch(&batch, &keep)?;
                report.duplicates_dropped += (before - batch.num_rows()) as u64;
            }
            let w = match writer.as_mut() {
                Some((w, schema)) => {
                    // Files written by an older schema are read as they are; a group whose
                    // files differ in their columns is left uncompacted rather than guessed at.
                    if schema != &batch.schema() {
                        log::warn!("lake compact: {} has other columns than the rest of {dir}; left as it is", f.path);
                        return Ok(());
                    }
                    w
                }
                None => {
                    let props = crate::sink::lake::file::writer_properties(&batch.schema());
                    &mut writer.insert((ArrowWriter::try_new(Vec::new(), batch.schema(), Some(props))?, batch.schema())).0
                }
            };
            rows += batch.num_rows() as u64;
            w.write(&batch)?;
        }
    }
    let Some((mut writer, _)) = writer else { return Ok(()) };
    writer.append_key_value_metadata(KeyValue::new(COMPACTED_FROM.to_string(), lineage.into_iter().collect::<Vec<_>>().join(",")));
    let bytes = writer.into_inner()?;
    report.bytes_out += bytes.len() as u64;
    store.put_new(&format!("{dir}/{out_name}"), bytes)?;
    for f in group {
        store.delete(&f.path)?;
    }
    report.files_in += group.len();
    report.files_out += 1;
    report.rows += rows;
    Ok(())
}

#[derive(Debug, Default)]
pub struct PruneReport {
    pub files: usize,
    pub bytes: u64,
}

/// Deletes every file of an hour that ended more than `older_than_hours` ago.
pub fn prune(store: &Store, older_than_hours: i64, dry_run: bool) -> Result<PruneReport> {
    let now_hour = chrono::Utc::now().timestamp() / 3600;
    let mut report = PruneReport::default();
    for table in TABLE_NAMES {
        for (dir, files) in partitions(store, table)? {
            let Some(hour) = hour_of_path(&dir) else { continue };
            if hour + 1 + older_than_hours > now_hour {
                continue;
            }
            for f in files {
                report.files += 1;
                report.bytes += f.size;
                if !dry_run {
                    store.delete(&f.path)?;
                }
            }
        }
    }
    Ok(report)
}

/// Files and bytes per table, for `crowsnest lake stats`.
pub fn stats(store: &Store) -> Result<Vec<(String, usize, u64, Option<(i64, i64)>)>> {
    let mut out = Vec::new();
    for table in TABLE_NAMES {
        let parts = partitions(store, table)?;
        let files = parts.values().map(Vec::len).sum();
        let bytes = parts.values().flatten().map(|f| f.size).sum();
        let hours: Vec<i64> = parts.keys().filter_map(|d| hour_of_path(d)).collect();
        let range = hours.iter().min().zip(hours.iter().max()).map(|(a, b)| (*a, *b));
        out.push((table.to_string(), files, bytes, range));
    }
    Ok(out)
}
