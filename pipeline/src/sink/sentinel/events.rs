//! Normalized audit events, the optional second stream: every decoded `kube_audit` row that the
//! user's WHERE keeps (most teams forward writes only), mapped to the ASIM Audit Event schema by
//! one SQL SELECT ([`ASIM_AUDIT_SQL`]) and sent through a Sentinel sink of its own (its own stream
//! and spool, the same batching, retries and checkpoint promise as alerts).
//!
//! The SELECT and the WHERE are planned once at start, as rules are (same functions and lists),
//! and evaluated on each batch as physical expressions: no query planning per batch.

use std::sync::Arc;

use anyhow::{anyhow, bail, Context, Result};
use datafusion::arrow::array::{AsArray, RecordBatch};
use datafusion::arrow::compute::filter_record_batch;
use datafusion::arrow::datatypes::{DataType, Schema, SchemaRef};
use datafusion::logical_expr::LogicalPlan;

use crate::engine::plan::{check_list_args, physical, PhysExpr};
use crate::engine::{session_context, Learned};
use crate::rules::Lists;
use crate::sink::{Record, Sink};

/// kube_audit → ASimAuditEventLogs columns (deploy/sentinel declares the same columns).
pub const ASIM_AUDIT_SQL: &str = include_str!("asim_audit.sql");

pub struct EventForwarder {
    filter: Option<PhysExpr>,
    projection: Vec<PhysExpr>,
    schema: SchemaRef,
    /// The Sentinel sink of the events stream (rows prebuilt).
    pub sink: Box<dyn Sink>,
    pub forwarded: u64,
    /// Batches the filter or the mapping failed on (a value the WHERE cannot take): their
    /// events are not forwarded; the pipeline goes on, as it does when a rule fails.
    pub failed_batches: u64,
    errors: Option<prometheus::IntCounter>,
}

impl EventForwarder {
    /// `where_sql`: a WHERE over kube_audit's columns (None: every row).
    pub fn new(where_sql: Option<&str>, lists: Arc<Lists>, sink: Box<dyn Sink>) -> Result<Self> {
        let (projection, filter, schema) = plan(where_sql, lists)?;
        Ok(EventForwarder { filter, projection, schema, sink, forwarded: 0, failed_batches: 0, errors: None })
    }

    /// Counts failed batches in this counter too.
    pub fn counting_errors_in(mut self, counter: prometheus::IntCounter) -> Self {
        self.errors = Some(counter);
        self
    }

    /// The output columns and their Log Analytics types (what the stream must declare).
    pub fn columns(&self) -> Vec<(String, &'static str)> {
        self.schema.fields().iter().map(|f| (f.name().clone(), log_analytics_type(f.data_type()))).collect()
    }

    /// The rows a batch gives, without sending them (the bench measures the mapping alone).
    pub fn rows(&self, batch: &RecordBatch) -> Result<Vec<Record>> {
        rows_of(batch, self.filter.as_ref(), &self.projection, &self.schema)
    }

    /// Maps and sends the rows of one kube_audit batch that the filter keeps. Only the sink
    /// can fail it (its spool cannot be written): a batch the filter or the mapping fails on is
    /// counted, logged and passed over.
    pub fn forward(&mut self, batch: &RecordBatch) -> Result<()> {
        let rows = match rows_of(batch, self.filter.as_ref(), &self.projection, &self.schema) {
            Ok(rows) => rows,
            Err(e) => {
                self.failed_batches += 1;
                if let Some(c) = &self.errors {
                    c.inc();
                }
                if self.failed_batches == 1 || self.failed_batches.is_power_of_two() {
                    log::error!(
                        "forwarding audit events: {e:#}; the {} events of this batch are not forwarded ({} batches so far)",
                        batch.num_rows(),
                        self.failed_batches
                    );
                }
                return Ok(());
            }
        };
        if rows.is_empty() {
            return Ok(());
        }
        self.forwarded += rows.len() as u64;
        self.sink.send(&rows)
    }
}

/// Checks that `where_sql` plans over kube_audit (for `crowsnest validate`).
pub fn check(where_sql: Option<&str>, lists: Arc<Lists>) -> Result<()> {
    plan(where_sql, lists).map(|_| ())
}

/// The JSON rows for a batch: filtered, projected, each a JSON object without nulls.
pub fn rows_of(batch: &RecordBatch, filter: Option<&PhysExpr>, projection: &[PhysExpr], schema: &SchemaRef) -> Result<Vec<Record>> {
    let kept = match filter {
        Some(f) => {
            let mask = f.evaluate(batch)?.into_array(batch.num_rows())?;
            let mask = mask.as_boolean_opt().ok_or_else(|| anyhow!("events_where is not a boolean condition"))?;
            filter_record_batch(batch, mask)?
        }
        None => batch.clone(),
    };
    if kept.num_rows() == 0 {
        return Ok(Vec::new());
    }
    let columns =
        projection.iter().map(|e| e.evaluate(&kept)?.into_array(kept.num_rows())).collect::<datafusion::common::Result<Vec<_>>>()?;
    let out = RecordBatch::try_new(schema.clone(), columns)?;
    Ok(crate::sink::json_rows(&out)?.into_iter().map(|json| Record { key: String::new(), json }).collect())
}

type Planned = (Vec<PhysExpr>, Option<PhysExpr>, SchemaRef);

fn plan(where_sql: Option<&str>, lists: Arc<Lists>) -> Result<Planned> {
    let learned = Learned::new(&lists);
    let ctx = session_context(lists.clone(), &learned)?;
    // DataFusion plans one statement only: "1; DROP …" is refused there, not by a check of ours
    // that would also refuse `user_agent LIKE '%;%'`.
    let sql = match where_sql.map(str::trim).filter(|w| !w.is_empty()) {
        Some(w) => format!("{}\nWHERE {w}", ASIM_AUDIT_SQL.trim().trim_end_matches(';')),
        None => ASIM_AUDIT_SQL.trim().trim_end_matches(';').to_string(),
    };
    let state = ctx.state();
    let logical = futures::executor::block_on(state.create_logical_plan(&sql))
        .context("[sinks.sentinel] events_where does not plan over kube_audit")?;
    // The analyzer's type coercion (no optimizer rules run: the context has none).
    let logical = state.optimize(&logical).context("[sinks.sentinel] events_where does not type-check")?;
    let LogicalPlan::Projection(proj) = &logical else { bail!("the ASIM mapping is not a SELECT") };
    let mut node = proj.input.as_ref();
    let mut filter = None;
    if let LogicalPlan::Filter(f) = node {
        filter = Some(&f.predicate);
        node = f.input.as_ref();
    }
    if let LogicalPlan::SubqueryAlias(a) = node {
        node = a.input.as_ref();
    }
    let LogicalPlan::TableScan(_) = node else { bail!("events_where must be a plain condition on kube_audit's columns (no subqueries)") };
    let table_schema = node.schema();
    // A list that does not exist fails here, at start, not on every batch.
    for e in proj.expr.iter().chain(filter) {
        check_list_args(e, &lists).context("[sinks.sentinel] events_where")?;
    }
    let projection = proj.expr.iter().map(|e| physical(e, table_schema, &ctx)).collect::<Result<Vec<_>>>()?;
    let filter = filter.map(|f| physical(f, table_schema, &ctx)).transpose().context("[sinks.sentinel] events_where")?;
    let schema: SchemaRef = Arc::new(Schema::new(proj.schema.as_arrow().fields().clone()));
    // And what fails on any batch fails on an empty one.
    let empty = RecordBatch::new_empty(Arc::new(table_schema.as_arrow().clone()));
    for e in filter.iter().chain(&projection) {
        e.evaluate(&empty).context("[sinks.sentinel] events_where or the ASIM mapping")?;
    }
    Ok((projection, filter, schema))
}

/// How an Arrow type is declared in a DCR stream / Log Analytics table.
pub fn log_analytics_type(t: &DataType) -> &'static str {
    match t {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => "string",
        DataType::Boolean => "boolean",
        DataType::Int8 | DataType::Int16 | DataType::Int32 | DataType::UInt8 | DataType::UInt16 => "int",
        DataType::Int64 | DataType::UInt32 | DataType::UInt64 => "long",
        DataType::Float16 | DataType::Float32 | DataType::Float64 => "real",
        DataType::Timestamp(..) | DataType::Date32 | DataType::Date64 => "datetime",
        _ => "dynamic",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::{Decoder, Origin};
    use datafusion::arrow::array::Array;

    #[test]
    fn the_mapping_plans_and_a_filter_keeps_what_it_says() {
        let lists = Arc::new(crate::rules::RuleSet::bundled().unwrap().lists);
        let (projection, filter, schema) = plan(Some("verb NOT IN ('get', 'list', 'watch')"), lists.clone()).unwrap();
        let cols: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        assert_eq!(cols.as_slice(), super::super::asim_columns::ASIM_AUDIT_COLUMNS.iter().map(|(n, _)| *n).collect::<Vec<_>>().as_slice());
        for (f, (_, t)) in schema.fields().iter().zip(super::super::asim_columns::ASIM_AUDIT_COLUMNS) {
            assert_eq!(log_analytics_type(f.data_type()), *t, "column {}", f.name());
        }
        let mut d = Decoder::new();
        let mut sample = Vec::new();
        crate::gen::generate(&crate::gen::GenOptions { events: 500, insights: false, ..Default::default() }, &mut sample).unwrap();
        for (i, line) in sample.split(|&b| b == b'\n').filter(|l| !l.is_empty()).enumerate() {
            d.decode(Origin { source: "test", unit: "line", index: i as u64 }, line);
        }
        let batches = d.finish();
        let audit = batches.iter().find(|b| b.table == crate::tables::KUBE_AUDIT).unwrap();
        let rows = rows_of(&audit.batch, filter.as_ref(), &projection, &schema).unwrap();
        let verbs = audit.batch.column_by_name("verb").unwrap().as_string::<i32>();
        let writes = (0..verbs.len()).filter(|&i| !["get", "list", "watch"].contains(&verbs.value(i))).count();
        assert_eq!(rows.len(), writes);
        assert!(writes > 0 && writes < audit.batch.num_rows());
        let first: serde_json::Value = serde_json::from_slice(&rows[0].json).unwrap();
        assert!(first["TimeGenerated"].as_str().unwrap().starts_with("20"), "{first}");
        assert!(plan(Some("no_such_column = 1"), lists.clone()).is_err());
        // A condition that plans but fails on the values of a batch: the batch is counted and
        // passed over, the forwarder (and the pipeline) go on.
        let sink = crate::sink::MemorySink::default();
        let mut f = EventForwarder::new(Some("CAST(name AS INT) > 0"), lists.clone(), Box::new(sink.clone())).unwrap();
        f.forward(&audit.batch).unwrap();
        assert_eq!((f.failed_batches, f.forwarded), (1, 0));
        assert!(sink.records.lock().unwrap().is_empty());
        assert!(plan(Some("1; DROP TABLE x"), lists).is_err());
    }
}
