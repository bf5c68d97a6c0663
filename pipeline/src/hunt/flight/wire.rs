//! Results as every client can read them. The lake is read with Arrow's view types (`Utf8View`,
//! `BinaryView`), which clients built on older Arrow releases cannot decode (Grafana's Flight
//! SQL plugin, older JDBC drivers): they leave as `Utf8`/`Binary`. The copy costs little next
//! to the network, and a client never meets a type it does not know.

use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, Schema, SchemaRef};
use datafusion::arrow::error::ArrowError;

fn classic(t: &DataType) -> DataType {
    match t {
        DataType::Utf8View => DataType::Utf8,
        DataType::BinaryView => DataType::Binary,
        DataType::List(f) => DataType::List(field(f)),
        DataType::LargeList(f) => DataType::LargeList(field(f)),
        DataType::ListView(f) => DataType::List(field(f)),
        DataType::LargeListView(f) => DataType::LargeList(field(f)),
        DataType::FixedSizeList(f, n) => DataType::FixedSizeList(field(f), *n),
        DataType::Struct(fs) => DataType::Struct(fs.iter().map(field).collect()),
        DataType::RunEndEncoded(r, v) => DataType::RunEndEncoded(r.clone(), field(v)),
        DataType::Map(f, sorted) => DataType::Map(field(f), *sorted),
        DataType::Dictionary(k, v) => DataType::Dictionary(k.clone(), Box::new(classic(v))),
        other => other.clone(),
    }
}

fn field(f: &FieldRef) -> FieldRef {
    Arc::new(Field::new(f.name(), classic(f.data_type()), f.is_nullable()).with_metadata(f.metadata().clone()))
}

/// The schema as sent.
pub fn schema(s: &Schema) -> SchemaRef {
    Arc::new(Schema::new_with_metadata(s.fields().iter().map(field).collect::<Vec<_>>(), s.metadata().clone()))
}

/// A batch as sent: view columns cast, the others shared.
pub fn batch(b: &RecordBatch) -> Result<RecordBatch, ArrowError> {
    let target = schema(b.schema_ref());
    if target.fields() == b.schema_ref().fields() {
        return Ok(b.clone());
    }
    let columns = b
        .columns()
        .iter()
        .zip(target.fields())
        .map(|(c, f)| if c.data_type() == f.data_type() { Ok(c.clone()) } else { cast(c, f.data_type()) })
        .collect::<Result<Vec<_>, _>>()?;
    RecordBatch::try_new(target, columns)
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Array, Int64Array, StringViewArray};

    #[test]
    fn view_columns_leave_as_classic_types_and_others_are_untouched() {
        let s = Arc::new(Schema::new(vec![Field::new("a", DataType::Utf8View, true), Field::new("n", DataType::Int64, false)]));
        let b =
            RecordBatch::try_new(s, vec![Arc::new(StringViewArray::from(vec![Some("x"), None])), Arc::new(Int64Array::from(vec![1, 2]))])
                .unwrap();
        let out = batch(&b).unwrap();
        assert_eq!(out.schema().field(0).data_type(), &DataType::Utf8);
        assert_eq!(out.column(0).null_count(), 1);
        assert_eq!(out.schema().field(1).data_type(), &DataType::Int64);
    }
}
