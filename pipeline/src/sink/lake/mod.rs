//! The lake sink: every decoded row of every table, and the alerts, as Parquet in the lake
//! (`crate::lake`), partitioned by event hour.
//!
//! Rows are grouped by *stream*: a Kafka partition, the files of a replay, or the alerts. A
//! stream's open files (one per table and hour) are flushed together, when one reaches
//! `roll_bytes`, when the first row has waited `roll_age`, or at the end; so a Kafka partition's
//! flush covers one offset range, and its files are named by it. Offsets are committed only up
//! to what the lake holds ([`LakeSink::hold_back`]); markers in the lake let a restart skip
//! what is already there ([`resume`]). Together: under at-least-once input, one copy of every
//! row.

pub mod file;
pub mod resume;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use datafusion::arrow::array::{Array, AsArray, RecordBatch, UInt32Array};
use datafusion::arrow::compute::take_record_batch;
use datafusion::arrow::datatypes::{DataType, TimeUnit};

use crate::alert::Alert;
use crate::lake::layout::{digest, kafka_file, partition_dir, HOUR_NANOS};
use crate::lake::{LakeConfig, Store};
use crate::metrics::Metrics;
use crate::source::SourceOffsets;
use crate::tables::{self, ALERTS};
use file::{lake_schema, Encoder, OpenFile};
pub use resume::Resume;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum StreamKey {
    Kafka(Arc<str>, i32),
    Files,
    Alerts,
}

#[derive(Default)]
struct Stream {
    /// Per (table, hour since the epoch).
    files: BTreeMap<(&'static str, i64), OpenFile>,
    /// Kafka: the offsets the open files cover.
    first: Option<i64>,
    next: i64,
    /// Kafka: the chunk whose tables are being written, until [`LakeSink::handled`].
    chunk: Option<(i64, i64)>,
    opened: Option<Instant>,
}

impl Stream {
    fn size(&self) -> usize {
        self.files.values().map(OpenFile::size).sum()
    }
}

/// What the lake sink wrote, for the summary and the metrics.
#[derive(Debug, Default, Clone)]
pub struct LakeStats {
    pub files: u64,
    pub rows: u64,
    pub bytes: u64,
    /// Files found already written (a replay of input the lake holds).
    pub existing: u64,
    /// Rows of Kafka chunks the lake already held (read again after a restart).
    pub skipped_rows: u64,
}

pub struct LakeSink {
    store: Arc<Store>,
    encoder: Arc<Encoder>,
    resume: Arc<Resume>,
    streams: HashMap<StreamKey, Stream>,
    roll_bytes: usize,
    roll_age: Duration,
    max_open_bytes: usize,
    /// Roll a replay's files by age too (a service reading a followed file or stdin); a replay
    /// does not, so the same input always gives the same files.
    age_rolls_files: bool,
    pub stats: LakeStats,
    metrics: Option<Metrics>,
}

impl LakeSink {
    pub fn new(cfg: &LakeConfig) -> Result<LakeSink> {
        let store = Arc::new(Store::open(cfg)?);
        Ok(LakeSink {
            resume: Arc::new(Resume::new(store.clone())),
            store,
            encoder: Encoder::start()?,
            streams: HashMap::new(),
            roll_bytes: cfg.roll_bytes.max(1) as usize,
            roll_age: cfg.roll_age()?,
            max_open_bytes: cfg.max_open_bytes.max(1) as usize,
            age_rolls_files: false,
            stats: LakeStats::default(),
            metrics: None,
        })
    }

    pub fn for_service(mut self, metrics: Metrics) -> Self {
        self.age_rolls_files = true;
        self.metrics = Some(metrics);
        self
    }

    pub fn name(&self) -> String {
        format!("lake:{}", self.store.display())
    }

    /// What the reader thread consults to cut chunks at the lake's resume points.
    pub fn resume(&self) -> Arc<Resume> {
        self.resume.clone()
    }

    /// Rows of one table from one chunk (`offsets`: a Kafka chunk's). A Kafka stream is not
    /// rolled here but in [`handled`](Self::handled), once every table of the chunk is in: a
    /// flush moves the partition's resume point to the chunk's end, and the chunk's other tables
    /// would then be taken for rows the lake already holds.
    pub fn write(&mut self, table: &'static str, batch: &RecordBatch, offsets: Option<&SourceOffsets>) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let key = match offsets {
            Some(o) => {
                self.note_rewind(o)?;
                if o.next <= self.resume.point(&o.topic, o.partition)? {
                    self.stats.skipped_rows += batch.num_rows() as u64;
                    return Ok(());
                }
                StreamKey::Kafka(o.topic.clone(), o.partition)
            }
            None => StreamKey::Files,
        };
        let time_col = tables::event_table(table).map_or("first_seen", |t| t.time_column);
        self.append(key.clone(), table, batch, time_col, offsets)?;
        if offsets.is_some() {
            return Ok(());
        }
        self.roll_if_large(&key)
    }

    /// A chunk from before the end of the partition's open stream: the partition is read again
    /// from a committed offset (assigned afresh after a rebalance), and the resume point is read
    /// again from the lake, where another member may have moved it. From at or before the
    /// stream's first offset (our own commit, which never passes it), every row of the open
    /// files is read again: they are dropped instead of held twice. From inside the stream
    /// (another member committed past its start), they are written first: a repeat in the
    /// lake is better than rows lost.
    fn note_rewind(&mut self, o: &SourceOffsets) -> Result<()> {
        let key = StreamKey::Kafka(o.topic.clone(), o.partition);
        let Some((first, next)) = self
            .streams
            .get(&key)
            .filter(|s| s.chunk != Some((o.first, o.next)))
            .and_then(|s| Some((s.first?, s.next)))
            .filter(|&(_, next)| o.first < next)
        else {
            return Ok(());
        };
        let (topic, partition) = (&o.topic, o.partition);
        if o.first <= first {
            self.streams.remove(&key);
            log::info!("lake: {topic}/{partition} is read again from offset {} (rebalance): the open files of offsets {first}..{next} are dropped, their rows follow", o.first);
        } else {
            log::info!("lake: {topic}/{partition} is read again from offset {} (rebalance), inside the open files of offsets {first}..{next}: they are written first", o.first);
            self.flush_stream(&key)?;
        }
        self.resume.forget(topic, partition);
        Ok(())
    }

    /// Drops the open files of Kafka partitions this consumer no longer owns (`owned` says which
    /// it does): their rows were never committed, so the partition's new owner reads and writes
    /// them; writing them here too, at the next age roll, would put them in the lake twice.
    pub fn release_unowned(&mut self, owned: impl Fn(&str, i32) -> bool) {
        let gone: Vec<StreamKey> = self.streams.keys().filter(|k| matches!(k, StreamKey::Kafka(t, p) if !owned(t, *p))).cloned().collect();
        for key in gone {
            let s = self.streams.remove(&key).expect("listed above");
            if let StreamKey::Kafka(topic, partition) = key {
                log::info!(
                    "lake: {topic}/{partition} was given up (rebalance): its open files of offsets {}..{} are left to its new owner",
                    s.first.unwrap_or_default(),
                    s.next
                );
                self.resume.forget(&topic, partition);
            }
        }
    }

    /// A Kafka chunk went through (rows or not): the partition's stream covers it, and may be
    /// rolled now that all of the chunk's rows are in it.
    pub fn handled(&mut self, o: &SourceOffsets) -> Result<()> {
        let key = StreamKey::Kafka(o.topic.clone(), o.partition);
        if let Some(s) = self.streams.get_mut(&key) {
            s.chunk = None;
            if s.first.is_some() {
                s.next = s.next.max(o.next);
            }
        }
        self.roll_if_large(&key)
    }

    /// Whether open files are also written when they grow old (a service), not only when they
    /// grow large or the input ends (a replay, whose files must be the same on every run).
    pub fn rolls_by_age(&self) -> bool {
        self.age_rolls_files
    }

    pub fn write_alerts(&mut self, alerts: &[Alert]) -> Result<()> {
        if alerts.is_empty() {
            return Ok(());
        }
        let batch = alert_batch(alerts)?;
        self.append(StreamKey::Alerts, ALERTS, &batch, "first_seen", None)?;
        self.roll_if_large(&StreamKey::Alerts)
    }

    fn append(
        &mut self,
        key: StreamKey,
        table: &'static str,
        batch: &RecordBatch,
        time_col: &str,
        offsets: Option<&SourceOffsets>,
    ) -> Result<()> {
        let times = batch.column_by_name(time_col).with_context(|| format!("{table} has no column {time_col}"))?;
        let hours: Vec<i64> = match times.data_type() {
            DataType::Timestamp(TimeUnit::Nanosecond, _) => {
                let t = times.as_primitive::<datafusion::arrow::datatypes::TimestampNanosecondType>();
                (0..t.len()).map(|i| if t.is_valid(i) { t.value(i).div_euclid(HOUR_NANOS) } else { 0 }).collect()
            }
            other => anyhow::bail!("{table}.{time_col} is {other}, not a nanosecond timestamp"),
        };
        let stream = self.streams.entry(key).or_default();
        if let Some(o) = offsets {
            stream.first.get_or_insert(o.first);
            stream.next = stream.next.max(o.next);
            stream.chunk = Some((o.first, o.next));
        }
        stream.opened.get_or_insert_with(Instant::now);
        let schema = lake_schema(&batch.schema());
        let first_hour = hours[0];
        if hours.iter().all(|&h| h == first_hour) {
            return open(stream, &self.encoder, table, first_hour, &schema)?.write(batch);
        }
        let mut by_hour: BTreeMap<i64, Vec<u32>> = BTreeMap::new();
        for (i, h) in hours.iter().enumerate() {
            by_hour.entry(*h).or_default().push(i as u32);
        }
        for (hour, rows) in by_hour {
            let part = take_record_batch(batch, &UInt32Array::from(rows))?;
            open(stream, &self.encoder, table, hour, &schema)?.write(&part)?;
        }
        Ok(())
    }

    fn roll_if_large(&mut self, key: &StreamKey) -> Result<()> {
        let big = self.streams.get(key).is_some_and(|s| s.files.values().any(|f| f.size() >= self.roll_bytes));
        if big {
            self.flush_stream(key)?;
        }
        // Memory: the open files of every stream together stay under max_open_bytes.
        while self.streams.values().map(Stream::size).sum::<usize>() > self.max_open_bytes {
            let largest = self.streams.iter().max_by_key(|(_, s)| s.size()).map(|(k, _)| k.clone()).expect("a stream is open");
            self.flush_stream(&largest)?;
        }
        Ok(())
    }

    /// Writes a stream's open files to the lake.
    fn flush_stream(&mut self, key: &StreamKey) -> Result<()> {
        let Some(stream) = self.streams.remove(key) else { return Ok(()) };
        if stream.files.is_empty() {
            return Ok(());
        }
        let mut encoded = Vec::with_capacity(stream.files.len());
        for ((table, hour), f) in stream.files {
            let rows = f.rows;
            encoded.push((table, hour, rows, f.finish()?));
        }
        let named: Vec<(String, usize, Vec<u8>)> = match key {
            StreamKey::Kafka(topic, partition) => {
                let first = stream.first.expect("a Kafka stream with files has offsets");
                let name = kafka_file(topic, *partition, first, stream.next);
                let named: Vec<_> =
                    encoded.into_iter().map(|(t, h, rows, bytes)| (format!("{}/{name}", partition_dir(t, h)), rows, bytes)).collect();
                let paths: Vec<String> = named.iter().map(|(p, _, _)| p.clone()).collect();
                self.resume.begin(topic, *partition, first, &paths)?;
                self.put_all(named)?;
                self.resume.done(topic, *partition, first, stream.next)?;
                return Ok(());
            }
            StreamKey::Files => encoded
                .into_iter()
                .map(|(t, h, rows, bytes)| (format!("{}/f-{}.parquet", partition_dir(t, h), digest(&[&bytes])), rows, bytes))
                .collect(),
            StreamKey::Alerts => encoded
                .into_iter()
                .map(|(t, h, rows, bytes)| {
                    // Named by the alert ids: `detected_at` differs on every run, the ids do not.
                    let ids = alert_ids(&bytes).unwrap_or_else(|_| vec![digest(&[&bytes])]);
                    let parts: Vec<&[u8]> = ids.iter().map(|s| s.as_bytes()).collect();
                    (format!("{}/a-{}.parquet", partition_dir(t, h), digest(&parts)), rows, bytes)
                })
                .collect(),
        };
        self.put_all(named)
    }

    fn put_all(&mut self, files: Vec<(String, usize, Vec<u8>)>) -> Result<()> {
        for (path, rows, bytes) in files {
            let len = bytes.len() as u64;
            if self.store.put_new(&path, bytes)? {
                self.stats.files += 1;
                self.stats.rows += rows as u64;
                self.stats.bytes += len;
                if let Some(m) = &self.metrics {
                    m.lake_files.inc();
                    m.lake_rows.inc_by(rows as u64);
                    m.lake_bytes.inc_by(len);
                }
            } else {
                self.stats.existing += 1;
                log::debug!("lake: {path} was already written");
            }
        }
        Ok(())
    }

    /// At a checkpoint: streams whose first row has waited `roll_age` are written, and the
    /// alerts always (they are few, and a commit must not outrun them).
    pub fn checkpoint(&mut self) -> Result<()> {
        let due: Vec<StreamKey> = self
            .streams
            .iter()
            .filter(|(k, s)| match k {
                StreamKey::Alerts => true,
                StreamKey::Files if !self.age_rolls_files => false,
                _ => s.opened.is_some_and(|t| t.elapsed() >= self.roll_age),
            })
            .map(|(k, _)| k.clone())
            .collect();
        for k in due {
            self.flush_stream(&k)?;
        }
        Ok(())
    }

    /// The offset a commit of this partition must not pass: the first one whose rows are
    /// still in an open file.
    pub fn hold_back(&self, topic: &Arc<str>, partition: i32) -> Option<i64> {
        self.streams.get(&StreamKey::Kafka(topic.clone(), partition)).and_then(|s| s.first)
    }

    /// Everything still open is written.
    pub fn finish(&mut self) -> Result<()> {
        let keys: Vec<StreamKey> = self.streams.keys().cloned().collect();
        for k in keys {
            self.flush_stream(&k).with_context(|| format!("writing to the lake {}", self.store.display()))?;
        }
        Ok(())
    }
}

fn open<'a>(
    stream: &'a mut Stream,
    encoder: &Arc<Encoder>,
    table: &'static str,
    hour: i64,
    schema: &datafusion::arrow::datatypes::SchemaRef,
) -> Result<&'a mut OpenFile> {
    use std::collections::btree_map::Entry;
    Ok(match stream.files.entry((table, hour)) {
        Entry::Occupied(e) => e.into_mut(),
        Entry::Vacant(e) => e.insert(OpenFile::new(encoder, schema.clone())?),
    })
}

/// Alerts as rows of the `alerts` table (its published schema).
pub fn alert_batch(alerts: &[Alert]) -> Result<RecordBatch> {
    let schema = tables::alert_schema();
    // `entities` and `fields` are JSON objects held as strings in the table.
    let rows: Vec<serde_json::Value> = alerts
        .iter()
        .map(|a| {
            let mut v = serde_json::to_value(a).expect("alerts serialize");
            for k in ["entities", "fields"] {
                v[k] = serde_json::Value::String(v[k].to_string());
            }
            v
        })
        .collect();
    let mut decoder = datafusion::arrow::json::ReaderBuilder::new(schema).build_decoder()?;
    decoder.serialize(&rows).context("alerts as Arrow rows")?;
    Ok(decoder.flush()?.expect("alerts were given"))
}

/// The ids in an alerts file, for its name.
fn alert_ids(parquet: &[u8]) -> Result<Vec<String>> {
    use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    let reader = ParquetRecordBatchReaderBuilder::try_new(bytes::Bytes::copy_from_slice(parquet))?.build()?;
    let mut ids = Vec::new();
    for batch in reader {
        let batch = batch?;
        let col = batch.column_by_name("id").context("alerts without ids")?.as_string::<i32>().clone();
        ids.extend(col.iter().flatten().map(str::to_string));
    }
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{StringArray, TimestampNanosecondArray};
    use datafusion::arrow::datatypes::{Field, Schema};
    use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

    const T0: i64 = 1_777_593_600_000_000_000; // 2026-05-01T00:00:00Z
    const CONTAINER_LOG: &str = tables::insights::CONTAINER_LOG.name;

    /// `n` rows of `table` (its time column and one more), all in the first hour.
    fn rows(table: &str, n: usize) -> RecordBatch {
        let time = tables::event_table(table).unwrap().time_column;
        let schema = Schema::new(vec![
            Field::new(time, DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into())), false),
            Field::new("v", DataType::Utf8, false),
        ]);
        let times = TimestampNanosecondArray::from_iter_values((0..n as i64).map(|i| T0 + i)).with_timezone("UTC");
        let values = StringArray::from_iter_values((0..n).map(|i| format!("{table}-{i}")));
        RecordBatch::try_new(Arc::new(schema), vec![Arc::new(times), Arc::new(values)]).unwrap()
    }

    fn offsets(first: i64, next: i64) -> SourceOffsets {
        SourceOffsets { topic: "audit".into(), partition: 0, first, next }
    }

    /// Rows in the lake's Parquet files, per table.
    fn lake_rows(dir: &std::path::Path) -> BTreeMap<String, usize> {
        let mut out = BTreeMap::new();
        for e in walk(dir) {
            let table = crate::lake::layout::table_of_path(e.to_str().unwrap()).unwrap().to_string();
            let reader = ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(&e).unwrap()).unwrap().build().unwrap();
            *out.entry(table).or_default() += reader.map(|b| b.unwrap().num_rows()).sum::<usize>();
        }
        out
    }

    fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
        let mut files = Vec::new();
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                files.extend(walk(&p));
            } else if p.extension().is_some_and(|x| x == "parquet") {
                files.push(p);
            }
        }
        files
    }

    fn sink(dir: &std::path::Path, roll_bytes: u64) -> LakeSink {
        let mut cfg = LakeConfig::from_url(&format!("file://{}", dir.display())).unwrap();
        cfg.roll_bytes = roll_bytes;
        LakeSink::new(&cfg).unwrap()
    }

    #[test]
    fn a_roll_inside_a_kafka_chunk_keeps_every_table_of_it() {
        let tmp = tempfile::tempdir().unwrap();
        // Every file is over the size at once: each chunk is its own flush.
        let mut lake = sink(tmp.path(), 1);
        for (first, next) in [(0, 10), (10, 20)] {
            lake.write(tables::KUBE_AUDIT, &rows(tables::KUBE_AUDIT, 3), Some(&offsets(first, next))).unwrap();
            lake.write(CONTAINER_LOG, &rows(CONTAINER_LOG, 2), Some(&offsets(first, next))).unwrap();
            lake.handled(&offsets(first, next)).unwrap();
        }
        lake.finish().unwrap();
        let want: BTreeMap<String, usize> = [(CONTAINER_LOG.to_string(), 4), (tables::KUBE_AUDIT.to_string(), 6)].into();
        assert_eq!(lake_rows(tmp.path()), want);
    }

    #[test]
    fn a_partition_read_again_from_its_commit_is_not_held_twice() {
        let tmp = tempfile::tempdir().unwrap();
        let mut lake = sink(tmp.path(), 1 << 30);
        lake.write(tables::KUBE_AUDIT, &rows(tables::KUBE_AUDIT, 3), Some(&offsets(0, 10))).unwrap();
        lake.handled(&offsets(0, 10)).unwrap();
        lake.write(tables::KUBE_AUDIT, &rows(tables::KUBE_AUDIT, 4), Some(&offsets(10, 20))).unwrap();
        lake.handled(&offsets(10, 20)).unwrap();
        // Assigned afresh (nothing committed): read again from 0.
        for (first, next, n) in [(0, 10, 3), (10, 20, 4)] {
            lake.write(tables::KUBE_AUDIT, &rows(tables::KUBE_AUDIT, n), Some(&offsets(first, next))).unwrap();
            lake.handled(&offsets(first, next)).unwrap();
        }
        lake.finish().unwrap();
        assert_eq!(lake_rows(tmp.path())[tables::KUBE_AUDIT], 7);

        // Given away: its open files are left to the new owner, nothing is written here.
        let tmp = tempfile::tempdir().unwrap();
        let mut lake = sink(tmp.path(), 1 << 30);
        lake.write(tables::KUBE_AUDIT, &rows(tables::KUBE_AUDIT, 3), Some(&offsets(0, 10))).unwrap();
        lake.handled(&offsets(0, 10)).unwrap();
        lake.release_unowned(|_, _| false);
        assert_eq!(lake.hold_back(&"audit".into(), 0), None);
        lake.finish().unwrap();
        assert!(lake_rows(tmp.path()).is_empty());
    }
}
