//! A read-only SQL session over the lake (or over raw input decoded on the fly): every table
//! under its rule name, limited to the time range asked for, with the rules' functions.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::datasource::file_format::parquet::{transform_schema_to_view, ParquetFormat};
use datafusion::datasource::listing::{ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl};
use datafusion::datasource::MemTable;
use datafusion::execution::cache::cache_manager::CacheManagerConfig;
use datafusion::execution::context::SQLOptions;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::execution::session_state::SessionStateBuilder;
use datafusion::physical_plan::{execute_stream, ExecutionPlan};
use datafusion::prelude::{SessionConfig, SessionContext};
use futures::StreamExt;

use crate::decode::time::format_nanos;
use crate::engine::{register_functions, Learned};
use crate::lake::layout::HOUR_NANOS;
use crate::lake::store::DATAFUSION_URL;
use crate::lake::Store;
use crate::rules::lists::Lists;
use crate::sink::lake::file::lake_schema;
use crate::tables::{self, TABLE_NAMES};

/// Event times `[since, until)`, nanoseconds; `None`: open.
#[derive(Debug, Clone, Copy, Default)]
pub struct TimeRange {
    pub since: Option<i64>,
    pub until: Option<i64>,
}

impl TimeRange {
    /// `--since 24h` (back from now) or an RFC 3339 time; `--until` likewise.
    pub fn parse(since: Option<&str>, until: Option<&str>) -> Result<TimeRange> {
        let now = chrono::Utc::now().timestamp_nanos_opt().unwrap_or(i64::MAX);
        let at = |s: &str, what: &str| -> Result<i64> {
            if let Some(t) = crate::decode::time::parse_rfc3339_nanos(s) {
                return Ok(t);
            }
            let d = crate::rules::parse_duration(s)
                .map_err(|_| anyhow!("{what} {s:?}: give a duration back from now (24h, 7d) or an RFC 3339 time"))?;
            Ok(now - d)
        };
        let r = TimeRange { since: since.map(|s| at(s, "--since")).transpose()?, until: until.map(|s| at(s, "--until")).transpose()? };
        if let (Some(a), Some(b)) = (r.since, r.until) {
            if a >= b {
                bail!("--since {} is not before --until {}", format_nanos(a), format_nanos(b));
            }
        }
        Ok(r)
    }

    /// SQL conditions on a table's time column and, for the lake, its `date`/`hour` partitions
    /// (so whole hours are never listed or opened).
    fn conditions(&self, time_col: &str, partitioned: bool) -> Vec<String> {
        let mut c = Vec::new();
        let ts = |ns: i64| format!("to_timestamp_nanos({ns})");
        let part = |ns: i64| {
            let hour = ns.div_euclid(HOUR_NANOS);
            let dir = crate::lake::layout::partition_dir("x", hour);
            let date = dir.split("date=").nth(1).and_then(|d| d.get(..10)).unwrap_or_default().to_string();
            (date, format!("{:02}", hour.rem_euclid(24)))
        };
        if let Some(s) = self.since {
            c.push(format!("\"{time_col}\" >= {}", ts(s)));
            if partitioned {
                let (d, h) = part(s);
                c.push(format!("(\"date\" > '{d}' OR (\"date\" = '{d}' AND \"hour\" >= '{h}'))"));
            }
        }
        if let Some(u) = self.until {
            c.push(format!("\"{time_col}\" < {}", ts(u)));
            if partitioned {
                let (d, h) = part(u - 1);
                c.push(format!("(\"date\" < '{d}' OR (\"date\" = '{d}' AND \"hour\" <= '{h}'))"));
            }
        }
        c
    }
}

/// What a query returned, and what it cost.
pub struct QueryResult {
    pub schema: SchemaRef,
    pub batches: Vec<RecordBatch>,
    pub rows: usize,
    pub elapsed: Duration,
    /// Bytes read from Parquet files (0 for raw input, which is in memory).
    pub bytes_scanned: u64,
}

/// Where the tables sit, as Flight SQL clients see them: `crowsnest.public.kube_audit`.
pub const CATALOG: &str = "crowsnest";
pub const SCHEMA: &str = "public";

/// Hunts read; they never write, define, or change settings.
pub fn read_only() -> SQLOptions {
    SQLOptions::new().with_allow_ddl(false).with_allow_dml(false).with_allow_statements(false)
}

pub struct HuntSession {
    ctx: SessionContext,
    pub tables: Vec<String>,
    rt: tokio::runtime::Runtime,
}

fn context(lists: Arc<Lists>) -> Result<SessionContext> {
    // As in the rules: identifiers keep their case (Container Insights' TimeGenerated, PodName).
    // The catalog is named for clients that list it (Flight SQL navigators, information_schema).
    let config = SessionConfig::new()
        .with_default_catalog_and_schema(CATALOG, SCHEMA)
        .with_information_schema(true)
        .set_bool("datafusion.sql_parser.enable_ident_normalization", false)
        // Filters read their own columns first and decode the others only for the rows that
        // pass (a lookup by user or pod reads a sliver of each file), cheapest filter first.
        .set_bool("datafusion.execution.parquet.pushdown_filters", true)
        .set_bool("datafusion.execution.parquet.reorder_filters", true)
        .with_target_partitions(std::thread::available_parallelism().map_or(2, |n| n.get()));
    // No cache of file listings: a lake being written (serve-sql, `[hunt]` in run) gains files
    // and compaction removes some, and DataFusion would keep the first listing for good.
    let runtime = RuntimeEnvBuilder::new()
        .with_cache_manager(CacheManagerConfig::default().with_list_files_cache_limit(0))
        .build_arc()
        .context("the query runtime")?;
    let state = SessionStateBuilder::new().with_config(config).with_runtime_env(runtime).with_default_features().build();
    let mut ctx = SessionContext::new_with_state(state);
    register_functions(&mut ctx, lists.clone(), &Learned::new(&lists))?;
    Ok(ctx)
}

/// The view a hunt sees: the table's own columns (not the lake's partition columns), in range.
fn view_sql(name: &str, inner: &str, schema: &SchemaRef, time_col: &str, range: &TimeRange, partitioned: bool) -> String {
    let cols: Vec<String> = schema.fields().iter().map(|f| format!("\"{}\"", f.name())).collect();
    let conds = range.conditions(time_col, partitioned);
    let filter = if conds.is_empty() { String::new() } else { format!(" WHERE {}", conds.join(" AND ")) };
    format!("CREATE VIEW \"{name}\" AS SELECT {} FROM \"{inner}\"{filter}", cols.join(", "))
}

fn time_column(table: &str) -> &'static str {
    tables::event_table(table).map_or("first_seen", |t| t.time_column)
}

impl HuntSession {
    fn new(lists: Arc<Lists>) -> Result<HuntSession> {
        let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the query runtime")?;
        Ok(HuntSession { ctx: context(lists)?, tables: Vec::new(), rt })
    }

    /// Every table of the lake, as it is in `range`.
    pub fn over_lake(store: &Store, range: TimeRange, lists: Arc<Lists>) -> Result<HuntSession> {
        let mut s = Self::new(lists)?;
        let url = url::Url::parse(DATAFUSION_URL).expect("a valid URL");
        s.ctx.register_object_store(&url, store.object_store());
        for table in TABLE_NAMES {
            // Text as Utf8View, as DataFusion's Parquet reader makes it (views of a file's strings,
            // no copy): a table declared Utf8 would have every string cast back on every scan.
            let schema = Arc::new(transform_schema_to_view(&lake_schema(&tables::schema_of(table).expect("known table"))));
            let options =
                ListingOptions::new(Arc::new(ParquetFormat::default())).with_file_extension(".parquet").with_table_partition_cols(vec![
                    ("date".to_string(), datafusion::arrow::datatypes::DataType::Utf8),
                    ("hour".to_string(), datafusion::arrow::datatypes::DataType::Utf8),
                ]);
            let table_url = ListingTableUrl::parse(store.table_url(table))?;
            let config = ListingTableConfig::new(table_url).with_listing_options(options).with_schema(schema.clone());
            let inner = format!("__lake_{table}");
            s.ctx.register_table(inner.as_str(), Arc::new(ListingTable::try_new(config)?))?;
            s.create_view(table, &inner, &schema, &range, true)?;
        }
        Ok(s)
    }

    /// Raw input already decoded (`crowsnest hunt SQL FILE…`), as it is in `range`.
    pub fn over_batches(batches: HashMap<String, Vec<RecordBatch>>, range: TimeRange, lists: Arc<Lists>) -> Result<HuntSession> {
        let mut s = Self::new(lists)?;
        for table in TABLE_NAMES {
            let schema = tables::schema_of(table).expect("known table");
            let rows = batches.get(*table).cloned().unwrap_or_default();
            let inner = format!("__raw_{table}");
            s.ctx.register_table(inner.as_str(), Arc::new(MemTable::try_new(schema.clone(), vec![rows])?))?;
            s.create_view(table, &inner, &schema, &range, false)?;
        }
        Ok(s)
    }

    fn create_view(&mut self, table: &str, inner: &str, schema: &SchemaRef, range: &TimeRange, partitioned: bool) -> Result<()> {
        let sql = view_sql(table, inner, schema, time_column(table), range, partitioned);
        self.rt.block_on(async { self.ctx.sql(&sql).await?.collect().await }).with_context(|| format!("registering {table}"))?;
        self.tables.push(table.to_string());
        Ok(())
    }

    /// The named hunts as table functions (`SELECT * FROM exec_sessions()`).
    pub fn register_hunts(&self, lib: &super::library::Library) -> Result<()> {
        self.rt.block_on(super::table_functions::register(&self.ctx, lib))
    }

    /// The session's catalog, for serving it (`crowsnest serve-sql`).
    pub fn context(&self) -> &SessionContext {
        &self.ctx
    }

    /// Runs `f` on the session's runtime.
    pub fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }

    /// Runs one read-only statement. `on_batch` sees the rows as they come (progress).
    pub fn query(&self, sql: &str, max_rows: Option<usize>, on_batch: &mut dyn FnMut(usize)) -> Result<QueryResult> {
        let started = Instant::now();
        self.rt.block_on(async {
            let df = self.ctx.sql_with_options(sql, read_only()).await.map_err(explain_refusal)?;
            let plan = df.create_physical_plan().await?;
            let schema = plan.schema();
            let mut stream = execute_stream(plan.clone(), self.ctx.task_ctx())?;
            let mut batches = Vec::new();
            let mut rows = 0;
            while let Some(b) = stream.next().await {
                let mut b = b?;
                if let Some(max) = max_rows {
                    if rows + b.num_rows() > max {
                        b = b.slice(0, max - rows);
                    }
                }
                rows += b.num_rows();
                on_batch(rows);
                batches.push(b);
                if max_rows.is_some_and(|m| rows >= m) {
                    break;
                }
            }
            let bytes_scanned = scanned(plan.as_ref());
            Ok(QueryResult { schema, batches, rows, elapsed: started.elapsed(), bytes_scanned })
        })
    }

    /// The schema of a table (`\d TABLE`).
    pub fn schema(&self, table: &str) -> Result<SchemaRef> {
        self.rt.block_on(async {
            Ok(self.ctx.table(table).await.map_err(|_| anyhow!("no table {table:?}: \\d lists them"))?.schema().inner().clone())
        })
    }
}

/// A refused statement says why hunts refuse it.
fn explain_refusal(e: datafusion::error::DataFusionError) -> anyhow::Error {
    let msg = e.to_string();
    if msg.contains("not supported") && (msg.contains("DDL") || msg.contains("DML") || msg.contains("Statement")) {
        anyhow!("hunts are read-only: {msg}")
    } else {
        anyhow::Error::new(e)
    }
}

/// Bytes the plan's Parquet scans read.
fn scanned(plan: &dyn ExecutionPlan) -> u64 {
    let own = plan.metrics().and_then(|m| m.sum_by_name("bytes_scanned")).map_or(0, |v| v.as_usize() as u64);
    own + plan.children().iter().map(|c| scanned(c.as_ref())).sum::<u64>()
}
