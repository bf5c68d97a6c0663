//! Container Insights records (ContainerLogV2, KubeEvents, KubePodInventory, …) into their
//! Arrow tables. A record is a flat JSON object of Log Analytics columns, as Log Analytics data
//! export writes it inside `{"records":[…]}`, or alone on a line. Its `Type` names the table;
//! without one, the columns it has decide (see [`InsightsTable::by_signature`]).
//!
//! Values are read leniently where Log Analytics itself is (a number sent as a string, a
//! dynamic column sent as JSON or as a string holding JSON) and strictly where a rule depends
//! on it: a record without a valid TimeGenerated is a dead letter.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayRef, BooleanBuilder, Float64Builder, Int32Builder, Int64Builder, RecordBatch, StringBuilder, TimestampNanosecondBuilder,
};
use datafusion::arrow::datatypes::SchemaRef;
use serde_json::value::RawValue;

use super::time::parse_rfc3339_nanos;
use crate::deadletter::Reason;
use crate::tables::insights::{InsightsTable, LaType, ALL, TIME_GENERATED};

enum Column {
    Str(StringBuilder),
    Time(TimestampNanosecondBuilder),
    I32(Int32Builder),
    I64(Int64Builder),
    F64(Float64Builder),
    Bool(BooleanBuilder),
}

impl Column {
    fn new(t: LaType) -> Column {
        match t {
            LaType::String | LaType::Dynamic => Column::Str(StringBuilder::new()),
            LaType::DateTime => Column::Time(TimestampNanosecondBuilder::new().with_timezone("UTC")),
            LaType::Int => Column::I32(Int32Builder::new()),
            LaType::Long => Column::I64(Int64Builder::new()),
            LaType::Real => Column::F64(Float64Builder::new()),
            LaType::Bool => Column::Bool(BooleanBuilder::new()),
        }
    }

    fn finish(&mut self) -> ArrayRef {
        match self {
            Column::Str(b) => Arc::new(b.finish()),
            Column::Time(b) => Arc::new(b.finish()),
            Column::I32(b) => Arc::new(b.finish()),
            Column::I64(b) => Arc::new(b.finish()),
            Column::F64(b) => Arc::new(b.finish()),
            Column::Bool(b) => Arc::new(b.finish()),
        }
    }
}

/// One JSON value, as what it is.
enum Json<'a> {
    Null,
    Str(Cow<'a, str>),
    /// A number, true/false, an object or an array: its JSON text.
    Other(&'a str),
}

fn json<'a>(raw: Option<&'a RawValue>) -> Json<'a> {
    let Some(raw) = raw else { return Json::Null };
    let text = raw.get();
    match text.as_bytes().first() {
        Some(b'n') => Json::Null,
        Some(b'"') => match serde_json::from_str::<Cow<'a, str>>(text) {
            Ok(s) => Json::Str(s),
            Err(_) => Json::Other(text),
        },
        _ => Json::Other(text),
    }
}

/// The rows of one table decoded so far.
struct TableRows {
    table: &'static InsightsTable,
    schema: SchemaRef,
    columns: Vec<Column>,
    names: Vec<&'static str>,
    rows: usize,
}

impl TableRows {
    fn new(table: &'static InsightsTable) -> TableRows {
        TableRows {
            table,
            schema: table.schema(),
            columns: table.all_columns().map(|c| Column::new(c.1)).collect(),
            names: table.all_columns().map(|c| c.0).collect(),
            rows: 0,
        }
    }

    /// Appends one record, or says why it cannot be a row (nothing is appended then).
    fn append(&mut self, record: &HashMap<Cow<'_, str>, &RawValue>) -> Result<(), (Reason, String)> {
        // Checked before anything is appended, so a failure leaves the columns aligned.
        let time = match json(record.get(TIME_GENERATED).copied()) {
            Json::Str(s) => parse_rfc3339_nanos(&s)
                .ok_or_else(|| (Reason::InvalidTimestamp, format!("{} TimeGenerated is not RFC 3339: {s:.40}", self.table.la_name)))?,
            Json::Null => return Err((Reason::MissingField, format!("{} record without TimeGenerated", self.table.la_name))),
            Json::Other(v) => {
                return Err((Reason::InvalidTimestamp, format!("{} TimeGenerated is not a string: {v:.40}", self.table.la_name)))
            }
        };
        for (col, name) in self.columns.iter_mut().zip(&self.names) {
            let value = json(record.get(*name).copied());
            match col {
                Column::Time(b) if *name == TIME_GENERATED => b.append_value(time),
                Column::Time(b) => b.append_option(match value {
                    Json::Str(s) => parse_rfc3339_nanos(&s),
                    _ => None,
                }),
                Column::Str(b) => match value {
                    Json::Null => b.append_null(),
                    Json::Str(s) => b.append_value(s),
                    // A dynamic column sent as JSON, or a scalar where a string was expected.
                    Json::Other(text) => b.append_value(text),
                },
                Column::I32(b) => b.append_option(number(&value).and_then(|n| i32::try_from(n as i64).ok().filter(|_| n.fract() == 0.0))),
                Column::I64(b) => b.append_option(number(&value).filter(|n| n.fract() == 0.0 && n.abs() < 9.0e15).map(|n| n as i64)),
                Column::F64(b) => b.append_option(number(&value)),
                Column::Bool(b) => b.append_option(match value {
                    Json::Other("true") => Some(true),
                    Json::Other("false") => Some(false),
                    Json::Str(s) if s.eq_ignore_ascii_case("true") => Some(true),
                    Json::Str(s) if s.eq_ignore_ascii_case("false") => Some(false),
                    _ => None,
                }),
            }
        }
        self.rows += 1;
        Ok(())
    }

    fn finish(&mut self) -> RecordBatch {
        let columns: Vec<ArrayRef> = self.columns.iter_mut().map(Column::finish).collect();
        self.rows = 0;
        RecordBatch::try_new(self.schema.clone(), columns).expect("Container Insights builders match the schema")
    }
}

/// A number, or a string holding one (Log Analytics exports some numbers as strings).
fn number(v: &Json<'_>) -> Option<f64> {
    let text = match v {
        Json::Str(s) => s.as_ref(),
        Json::Other(t) => t,
        Json::Null => return None,
    };
    text.trim().parse::<f64>().ok().filter(|n| n.is_finite())
}

/// Rows of every Container Insights table, decoded so far.
#[derive(Default)]
pub struct InsightsDecoder {
    tables: Vec<TableRows>,
}

impl InsightsDecoder {
    /// Decodes one record (a JSON object's text). `la_type`: the record's `Type` when the
    /// caller already read it. Returns the Log Analytics table it went to.
    pub fn append(&mut self, la_type: Option<&str>, text: &str) -> Result<&'static InsightsTable, (Reason, String)> {
        let record: HashMap<Cow<'_, str>, &RawValue> =
            serde_json::from_str(text).map_err(|e| (Reason::of_json_error(&e), format!("Container Insights record: {e}")))?;
        let la_type = match la_type {
            Some(t) => Some(Cow::Borrowed(t)),
            None => match json(record.get("Type").copied()) {
                Json::Str(s) => Some(s),
                Json::Null => None,
                Json::Other(v) => return Err((Reason::WrongShape, format!("Type is not a string: {v:.40}"))),
            },
        };
        let table = match la_type {
            Some(t) => InsightsTable::by_la_name(&t).ok_or_else(|| {
                let known: Vec<&str> = ALL.iter().map(|t| t.la_name).collect();
                (Reason::UnknownTable, format!("Type {t:.60?} is not a table Crowsnest decodes ({})", known.join(", ")))
            })?,
            None => InsightsTable::by_signature(|c| record.contains_key(c)).ok_or_else(|| {
                (
                    Reason::WrongShape,
                    "a record with TimeGenerated but no Type, and not the columns of any Container Insights table".to_string(),
                )
            })?,
        };
        let rows = match self.tables.iter().position(|r| std::ptr::eq(r.table, table)) {
            Some(i) => &mut self.tables[i],
            None => {
                self.tables.push(TableRows::new(table));
                self.tables.last_mut().expect("just pushed")
            }
        };
        rows.append(&record)?;
        Ok(table)
    }

    pub fn len(&self) -> usize {
        self.tables.iter().map(|t| t.rows).sum()
    }

    /// The rows decoded since the last call, a batch per table that has any.
    pub fn finish(&mut self) -> Vec<(&'static str, RecordBatch)> {
        self.tables.iter_mut().filter(|t| t.rows > 0).map(|t| (t.table.name, t.finish())).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Array, AsArray};
    use datafusion::arrow::datatypes::{Float64Type, Int32Type};

    #[test]
    fn decodes_each_type_leniently_and_time_strictly() {
        let mut d = InsightsDecoder::default();
        let pod = r#"{"Type":"KubePodInventory","TimeGenerated":"2026-11-01T08:00:00.0000000Z","Name":"web-1","Namespace":"shop",
            "PodRestartCount":"3","ContainerRestartCount":2.0,"PodLabel":[{"app":"web"}],"PodCreationTimeStamp":"bad","Extra":1}"#;
        assert_eq!(d.append(None, pod).unwrap().name, "kube_pod_inventory");
        let metric = r#"{"TimeGenerated":"2026-11-01T08:00:00Z","Namespace":"container.azm.ms/gpu","Name":"gpuUsage","Val":"0.5","Tags":"{\"a\":1}"}"#;
        assert_eq!(d.append(None, metric).unwrap().name, "insights_metrics");
        let errs = [
            (r#"{"Type":"ContainerLogV2","LogMessage":"x"}"#, Reason::MissingField),
            (r#"{"Type":"ContainerLogV2","TimeGenerated":"yesterday"}"#, Reason::InvalidTimestamp),
            (r#"{"Type":"Heartbeat","TimeGenerated":"2026-11-01T08:00:00Z"}"#, Reason::UnknownTable),
            (r#"{"TimeGenerated":"2026-11-01T08:00:00Z","Foo":1}"#, Reason::WrongShape),
            (r#"{"Type":"KubeEvents","#, Reason::Truncated),
        ];
        for (text, reason) in errs {
            assert_eq!(d.append(None, text).unwrap_err().0, reason, "{text}");
        }
        let batches = d.finish();
        assert_eq!(batches.len(), 2);
        let (name, pods) = &batches[0];
        assert_eq!(*name, "kube_pod_inventory");
        assert_eq!(pods.num_rows(), 1);
        let col = |n: &str| pods.column_by_name(n).unwrap().clone();
        assert_eq!(col("PodRestartCount").as_primitive::<Int32Type>().value(0), 3);
        assert_eq!(col("ContainerRestartCount").as_primitive::<Int32Type>().value(0), 2);
        assert_eq!(col("PodLabel").as_string::<i32>().value(0), r#"[{"app":"web"}]"#);
        assert!(col("PodCreationTimeStamp").is_null(0), "an unreadable optional time is null, not a failure");
        let metrics = &batches[1].1;
        assert_eq!(metrics.column_by_name("Val").unwrap().as_primitive::<Float64Type>().value(0), 0.5);
        assert_eq!(metrics.column_by_name("Tags").unwrap().as_string::<i32>().value(0), r#"{"a":1}"#);
        assert!(d.finish().is_empty());
    }
}
