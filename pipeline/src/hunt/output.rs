//! How hunt results are printed: a table for people, CSV, JSON, NDJSON or Parquet for tools.

use std::io::Write;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use datafusion::arrow::array::{ArrayRef, RecordBatch};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Csv,
    Json,
    Ndjson,
    Parquet,
}

impl Format {
    pub fn parse(s: &str) -> Result<Format> {
        <Format as clap::ValueEnum>::from_str(s, true).map_err(|_| anyhow::anyhow!("format {s:?}: table, csv, json, ndjson or parquet"))
    }
}

/// Nested columns (lists, maps) as their text, for the formats that hold only scalars.
fn flatten(schema: &SchemaRef, batches: &[RecordBatch]) -> Result<(SchemaRef, Vec<RecordBatch>)> {
    let nested = |t: &DataType| matches!(t, DataType::List(_) | DataType::LargeList(_) | DataType::Map(_, _) | DataType::Struct(_));
    if !schema.fields().iter().any(|f| nested(f.data_type())) {
        return Ok((schema.clone(), batches.to_vec()));
    }
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| if nested(f.data_type()) { Field::new(f.name(), DataType::Utf8, true) } else { f.as_ref().clone() })
        .collect();
    let flat = Arc::new(Schema::new(fields));
    let out = batches
        .iter()
        .map(|b| {
            let cols: Vec<ArrayRef> = b
                .columns()
                .iter()
                .zip(flat.fields())
                .map(|(c, f)| if c.data_type() == f.data_type() { Ok(c.clone()) } else { cast(c, f.data_type()) })
                .collect::<std::result::Result<_, _>>()?;
            Ok(RecordBatch::try_new(flat.clone(), cols)?)
        })
        .collect::<Result<Vec<_>>>()?;
    Ok((flat, out))
}

/// Writes `batches` in `format`. Parquet goes to stdout only when it is not a terminal.
pub fn write(out: &mut dyn Write, format: Format, schema: &SchemaRef, batches: &[RecordBatch]) -> Result<()> {
    use datafusion::arrow::{csv, json};
    match format {
        Format::Table => {
            let (_, flat) = flatten(schema, batches)?;
            if flat.iter().all(|b| b.num_rows() == 0) {
                let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
                writeln!(out, "(no rows; columns: {})", names.join(", "))?;
            } else {
                writeln!(out, "{}", datafusion::arrow::util::pretty::pretty_format_batches(&flat)?)?;
            }
        }
        Format::Csv => {
            let (_, flat) = flatten(schema, batches)?;
            let mut w = csv::WriterBuilder::new().with_header(true).build(out);
            if flat.is_empty() {
                w.write(&RecordBatch::new_empty(flatten(schema, &[])?.0))?;
            }
            for b in &flat {
                w.write(b)?;
            }
        }
        Format::Json => {
            let mut w = json::ArrayWriter::new(out);
            for b in batches {
                w.write(b)?;
            }
            // An empty result is still an array: finish writes `[]`.
            w.finish()?;
        }
        Format::Ndjson => {
            let mut w = json::LineDelimitedWriter::new(out);
            for b in batches {
                w.write(b)?;
            }
            w.finish()?;
        }
        Format::Parquet => {
            if std::io::IsTerminal::is_terminal(&std::io::stdout()) {
                bail!("Parquet is binary: redirect stdout to a file (> result.parquet)");
            }
            let mut buf = Vec::new();
            let mut w = datafusion::parquet::arrow::ArrowWriter::try_new(
                &mut buf,
                schema.clone(),
                Some(crate::sink::lake::file::writer_properties(schema)),
            )?;
            for b in batches {
                w.write(b)?;
            }
            w.close()?;
            out.write_all(&buf).context("writing Parquet")?;
        }
    }
    Ok(())
}
