//! One Parquet file being written: the rows of one table and one hour, encoded as they come
//! (zstd), so an open file costs its compressed size in memory, not its Arrow size.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, SyncSender};
use std::sync::Arc;

use anyhow::{Context, Result};
use datafusion::arrow::array::{ArrayRef, RecordBatch};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::basic::{Compression, ZstdLevel};
use datafusion::parquet::file::properties::WriterProperties;

/// Rows per row group: small enough that a point lookup skips most of a file by its
/// statistics, large enough that zstd and dictionaries work well.
const ROW_GROUP_ROWS: usize = 128 * 1024;

/// The lake's form of a table: event times in microseconds (UTC). Kubernetes and Log Analytics
/// stamp microseconds at most, and Spark, Synapse and ADX read microsecond Parquet timestamps
/// where some refuse nanoseconds.
pub fn lake_schema(schema: &Schema) -> SchemaRef {
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| match f.data_type() {
            DataType::Timestamp(TimeUnit::Nanosecond, tz) => {
                f.as_ref().clone().with_data_type(DataType::Timestamp(TimeUnit::Microsecond, tz.clone()))
            }
            _ => f.as_ref().clone(),
        })
        .collect();
    Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()))
}

/// A batch cast to `schema` (the lake's form, or back from it).
pub fn conform(batch: &RecordBatch, schema: &SchemaRef) -> Result<RecordBatch> {
    let columns: Vec<ArrayRef> = batch
        .columns()
        .iter()
        .zip(schema.fields())
        .map(|(c, f)| if c.data_type() == f.data_type() { Ok(c.clone()) } else { cast(c, f.data_type()) })
        .collect::<std::result::Result<_, _>>()?;
    Ok(RecordBatch::try_new(schema.clone(), columns)?)
}

/// Columns nearly unique per row: a dictionary would only be built to be abandoned.
const UNIQUE_COLUMNS: [&str; 6] = ["audit_id", "request_uri", "request_object", "response_object", "user_extra", "LogMessage"];
/// Columns whose statistics let a reader skip row groups (and, for times, pages): times, and
/// what hunts look rows up by. Others get none: the min/max of a random column's row group skip
/// nothing, and computing them costs encoding time.
const LOOKUP_COLUMNS: [&str; 12] = [
    "audit_id",
    "user_name",
    "source_ip",
    "namespace",
    "name",
    "resource",
    "verb",
    "PodNamespace",
    "PodName",
    "ContainerName",
    "rule_id",
    "id",
];

/// Who and what a hunt looks up by name: a bloom filter per row group lets a lookup skip the
/// row groups that do not hold the name (min/max cannot: names are spread over every group).
const BLOOM_COLUMNS: [&str; 3] = ["user_name", "name", "PodName"];

/// The lake's writer properties for files of `schema` (compaction adds its footer metadata on
/// the writer). Encoding runs on the pipeline's own cores, so it is kept cheap: zstd level 1,
/// no dictionary where values are unique (times, ids, bodies), statistics only where a reader
/// can use them.
pub fn writer_properties(schema: &Schema) -> WriterProperties {
    use datafusion::parquet::file::properties::EnabledStatistics;
    use datafusion::parquet::schema::types::ColumnPath;
    let mut b = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(1).expect("zstd level 1")))
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        // A fixed creator: the same rows give the same bytes, whatever the build.
        .set_created_by("crowsnest".to_string())
        .set_statistics_enabled(EnabledStatistics::None);
    for f in schema.fields() {
        let path = ColumnPath::from(f.name().as_str());
        let time = matches!(f.data_type(), DataType::Timestamp(..));
        if time || UNIQUE_COLUMNS.contains(&f.name().as_str()) {
            b = b.set_column_dictionary_enabled(path.clone(), false);
        }
        if time {
            b = b.set_column_statistics_enabled(path.clone(), EnabledStatistics::Page);
        } else if LOOKUP_COLUMNS.contains(&f.name().as_str()) {
            b = b.set_column_statistics_enabled(path.clone(), EnabledStatistics::Chunk);
        }
        if BLOOM_COLUMNS.contains(&f.name().as_str()) {
            b = b
                .set_column_bloom_filter_enabled(path.clone(), true)
                .set_column_bloom_filter_max_ndv(path.clone(), 20_000)
                .set_column_bloom_filter_fpp(path, 0.01);
        }
    }
    b.build()
}

/// Encodes the lake's open files on a thread of its own ("cn-lake-encode"): Parquet encoding
/// costs about as much as all the rules, and the engine thread, which would otherwise do it,
/// is the pipeline's bottleneck while a decode core has room. Bounded: when the encoder falls
/// behind, writers wait.
pub struct Encoder {
    tx: SyncSender<Job>,
    next_id: AtomicU64,
}

enum Job {
    Open(u64, SchemaRef, Arc<AtomicUsize>),
    Write(u64, RecordBatch),
    Finish(u64, mpsc::Sender<Result<Vec<u8>>>),
    Discard(u64),
}

/// Batches in flight to the encoder at most.
const QUEUE: usize = 32;

impl Encoder {
    pub fn start() -> Result<Arc<Encoder>> {
        let (tx, rx) = mpsc::sync_channel(QUEUE);
        std::thread::Builder::new().name("cn-lake-encode".into()).spawn(move || encode(rx)).context("starting the lake's encoder")?;
        Ok(Arc::new(Encoder { tx, next_id: AtomicU64::new(0) }))
    }

    fn send(&self, job: Job) -> Result<()> {
        self.tx.send(job).map_err(|_| anyhow::anyhow!("the lake's encoder stopped"))
    }
}

/// The encoder thread: one Parquet writer per open file; a file whose encoding failed keeps its
/// error for `Finish`.
fn encode(rx: mpsc::Receiver<Job>) {
    let mut files: HashMap<u64, (Result<ArrowWriter<Vec<u8>>>, SchemaRef, Arc<AtomicUsize>)> = HashMap::new();
    for job in rx {
        match job {
            Job::Open(id, schema, size) => {
                let w =
                    ArrowWriter::try_new(Vec::new(), schema.clone(), Some(writer_properties(&schema))).context("starting a Parquet file");
                files.insert(id, (w, schema, size));
            }
            Job::Write(id, batch) => {
                let Some((w, schema, size)) = files.get_mut(&id) else { continue };
                if let Ok(writer) = w {
                    match conform(&batch, schema).and_then(|b| Ok(writer.write(&b)?)) {
                        Ok(()) => size.store(writer.bytes_written() + writer.in_progress_size(), Ordering::Relaxed),
                        Err(e) => *w = Err(e.context("encoding rows as Parquet")),
                    }
                }
            }
            Job::Finish(id, reply) => {
                let result = match files.remove(&id) {
                    Some((w, _, _)) => w.and_then(|w| w.into_inner().context("finishing a Parquet file")),
                    None => Err(anyhow::anyhow!("no open file {id}")),
                };
                let _ = reply.send(result);
            }
            Job::Discard(id) => {
                files.remove(&id);
            }
        }
    }
}

/// One Parquet file being written, encoded by the [`Encoder`].
pub struct OpenFile {
    id: u64,
    encoder: Arc<Encoder>,
    /// What the file weighs (compressed pages plus the row group in progress), as of the last
    /// batch encoded: it lags by the batches in flight.
    size: Arc<AtomicUsize>,
    pub rows: usize,
    finished: bool,
}

impl OpenFile {
    pub fn new(encoder: &Arc<Encoder>, schema: SchemaRef) -> Result<OpenFile> {
        let id = encoder.next_id.fetch_add(1, Ordering::Relaxed);
        let size = Arc::new(AtomicUsize::new(0));
        encoder.send(Job::Open(id, schema, size.clone()))?;
        Ok(OpenFile { id, encoder: encoder.clone(), size, rows: 0, finished: false })
    }

    pub fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        self.encoder.send(Job::Write(self.id, batch.clone()))?;
        self.rows += batch.num_rows();
        Ok(())
    }

    pub fn size(&self) -> usize {
        self.size.load(Ordering::Relaxed)
    }

    /// The file's bytes, once every batch sent is encoded.
    pub fn finish(mut self) -> Result<Vec<u8>> {
        self.finished = true;
        let (tx, rx) = mpsc::channel();
        self.encoder.send(Job::Finish(self.id, tx))?;
        rx.recv().map_err(|_| anyhow::anyhow!("the lake's encoder stopped"))?
    }
}

impl Drop for OpenFile {
    /// A file dropped unfinished (its rows are left to another writer) frees its encoder state.
    fn drop(&mut self) {
        if !self.finished {
            let _ = self.encoder.send(Job::Discard(self.id));
        }
    }
}
