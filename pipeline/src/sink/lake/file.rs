//! One Parquet file being written: the rows of one table and one hour, encoded as they come
//! (zstd), so an open file costs its compressed size in memory, not its Arrow size.

use std::sync::Arc;
use std::time::Instant;

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

/// The lake's writer properties (compaction adds its footer metadata on the writer).
pub fn writer_properties() -> WriterProperties {
    WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(3).expect("zstd level 3")))
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        // A fixed creator: the same rows give the same bytes, whatever the build.
        .set_created_by("crowsnest".to_string())
        .build()
}

pub struct OpenFile {
    writer: ArrowWriter<Vec<u8>>,
    pub schema: SchemaRef,
    pub rows: usize,
    pub opened: Instant,
}

impl OpenFile {
    pub fn new(schema: SchemaRef) -> Result<OpenFile> {
        let writer = ArrowWriter::try_new(Vec::new(), schema.clone(), Some(writer_properties())).context("starting a Parquet file")?;
        Ok(OpenFile { writer, schema, rows: 0, opened: Instant::now() })
    }

    pub fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        self.writer.write(&conform(batch, &self.schema)?).context("encoding rows as Parquet")?;
        self.rows += batch.num_rows();
        Ok(())
    }

    /// What the file would weigh if closed now (compressed pages plus the row group in progress).
    pub fn size(&self) -> usize {
        self.writer.bytes_written() + self.writer.in_progress_size()
    }

    pub fn finish(self) -> Result<Vec<u8>> {
        self.writer.into_inner().context("finishing a Parquet file")
    }
}
