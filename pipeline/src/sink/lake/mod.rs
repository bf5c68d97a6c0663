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
use file::{lake_schema, OpenFile};
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

    /// Rows of one table from one chunk (`offsets`: a Kafka chunk's).
    pub fn write(&mut self, table: &'static str, batch: &RecordBatch, offsets: Option<&SourceOffsets>) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let key = match offsets {
            Some(o) => {
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
        self.roll_if_large(&key)
    }

    /// A Kafka chunk went through (rows or not): the partition's stream covers it.
    pub fn handled(&mut self, o: &SourceOffsets) {
        if let Some(s) = self.streams.get_mut(&StreamKey::Kafka(o.topic.clone(), o.partition)) {
            if s.first.is_some() {
                s.next = s.next.max(o.next);
            }
        }
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
        }
        stream.opened.get_or_insert_with(Instant::now);
        let schema = lake_schema(&batch.schema());
        let first_hour = hours[0];
        if hours.iter().all(|&h| h == first_hour) {
            return open(stream, table, first_hour, &schema)?.write(batch);
        }
        let mut by_hour: BTreeMap<i64, Vec<u32>> = BTreeMap::new();
        for (i, h) in hours.iter().enumerate() {
            by_hour.entry(*h).or_default().push(i as u32);
        }
        for (hour, rows) in by_hour {
            let part = take_record_batch(batch, &UInt32Array::from(rows))?;
            open(stream, table, hour, &schema)?.write(&part)?;
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
    table: &'static str,
    hour: i64,
    schema: &datafusion::arrow::datatypes::SchemaRef,
) -> Result<&'a mut OpenFile> {
    use std::collections::btree_map::Entry;
    Ok(match stream.files.entry((table, hour)) {
        Entry::Occupied(e) => e.into_mut(),
        Entry::Vacant(e) => e.insert(OpenFile::new(schema.clone())?),
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
