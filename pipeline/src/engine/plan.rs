//! Turns a rule's SQL into physical expressions, once, at start-up.
//!
//! DataFusion parses the SQL and plans it against the table schema (type coercion included, no
//! optimizer rewrites), and the plan is taken apart into the pieces a streaming operator needs:
//!
//! ```text
//! Projection (SELECT list)        -> output columns of the alert
//!   Filter (HAVING)               -> threshold on each fired window
//!     Aggregate (GROUP BY …, TUMBLE/HOP) -> keys, window, DataFusion accumulators
//!       Filter (WHERE)            -> per-batch predicate
//!         TableScan (kube_audit, container_log, …)
//! ```
//!
//! Single-event rules are Projection → Filter → TableScan. Anything else (joins, subqueries,
//! ORDER BY, LIMIT, GROUP BY without a window) is refused with a message naming the rule.

use std::collections::HashMap;
use std::sync::Arc;

use anyhow::{anyhow, bail, Context, Result};
use datafusion::arrow::array::{Array, ArrayRef, AsArray, RecordBatch, RecordBatchOptions, UInt32Array};
use datafusion::arrow::compute::take;
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::common::{DFSchema, ScalarValue, TableReference};
use datafusion::execution::context::SessionContext;
use datafusion::logical_expr::physical_planning_context::PhysicalPlanningContext;
use datafusion::logical_expr::simplify::SimplifyContext;
use datafusion::logical_expr::utils::split_conjunction;
use datafusion::logical_expr::{Expr, ExprSchemable, LogicalPlan, Operator};
use datafusion::optimizer::simplify_expressions::ExprSimplifier;
use datafusion::physical_expr::aggregate::AggregateFunctionExpr;
use datafusion::physical_expr::{create_physical_expr, PhysicalExpr};
// Deprecated in favour of LoweredAggregateBuilder, which is not re-exported by `datafusion`;
// this wrapper does the same with the default planning context.
#[allow(deprecated)]
use datafusion::physical_planner::create_aggregate_expr_and_maybe_filter;

use super::functions::{interval_nanos, LIST_FUNCTIONS, PATTERN_FUNCTIONS};
use crate::rules::{Lists, Rule};
use crate::tables::{self, Table};

pub type PhysExpr = Arc<dyn PhysicalExpr>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowKind {
    Tumble,
    Hop,
    /// Per key, events no more than `width` (the gap) apart, however long that runs.
    Session,
}

/// A window of event time: `width` long, a new one every `slide` (= width for TUMBLE). For
/// SESSION, `width` = `slide` = the gap.
#[derive(Debug, Clone, Copy)]
pub struct WindowSpec {
    pub kind: WindowKind,
    pub width: i64,
    pub slide: i64,
}

impl WindowSpec {
    /// Starts of the windows containing `t`, oldest first.
    pub fn starts(&self, t: i64, out: &mut Vec<i64>) {
        out.clear();
        let newest = t - t.rem_euclid(self.slide);
        let mut s = newest;
        while s > t - self.width {
            out.push(s);
            s -= self.slide;
        }
        out.reverse();
    }
}

pub struct Aggregate {
    pub expr: Arc<AggregateFunctionExpr>,
    /// `count(DISTINCT string)`: counted by the window operator's own column of 128-bit hashes
    /// (`engine::aggregates`), a few bytes per value where DataFusion's accumulator
    /// preallocates ~8 KB per group.
    pub distinct_strings: bool,
    /// `array_agg(x)`: kept with [`super::functions::BoundedArrayAgg`] (DISTINCT or not, and
    /// the element type), at most ARRAY_AGG_LIMIT values per group.
    pub bounded_array_agg: Option<(bool, datafusion::arrow::datatypes::DataType)>,
    /// Arguments, evaluated on the filtered input.
    pub args: Vec<PhysExpr>,
    /// `FILTER (WHERE …)` of this aggregate, if any.
    pub filter: Option<PhysExpr>,
}

pub struct WindowedPlan {
    pub window: WindowSpec,
    /// Position of the window among the GROUP BY expressions (the aggregate's output columns).
    pub window_pos: usize,
    /// The other GROUP BY expressions: the key.
    pub keys: Vec<PhysExpr>,
    pub aggregates: Vec<Aggregate>,
    /// Output of the aggregate: group columns, then aggregates (what HAVING and SELECT see).
    pub aggregate_schema: SchemaRef,
    pub having: Option<PhysExpr>,
    /// The fewest events a group needs for HAVING to hold, from a `count(…) >= N` conjunct
    /// (every count, DISTINCT or FILTERed, is at most the group's events): groups below it are
    /// dropped when their window fires without being evaluated. 0 when HAVING sets no bound.
    pub min_events: u64,
    /// The keys, aggregate arguments and FILTERs cannot fail on any row, so they may be
    /// evaluated on a whole batch whose rows the WHERE mostly kept (see [`Selection::whole`]).
    pub reads_in_place: bool,
}

pub enum Shape {
    SingleEvent,
    Windowed(WindowedPlan),
}

/// A WHERE clause as its conjuncts, cheapest first, applied one after another to the rows the
/// previous ones kept. Most rules start with a selective comparison (`verb = 'create' AND
/// resource = 'pods'`), so their regular expressions, JSON functions and list lookups run on a
/// handful of rows instead of the whole batch. Each conjunct is planned over only the columns
/// it reads, and sees only those, taken for the surviving rows: a request body is copied only
/// for the conjunct that reads it, and only for the rows still in the running.
///
/// Rules whose WHERE clauses start alike share that start through [`SharedSelections`]: each
/// prefix of conjuncts is evaluated once per batch, whichever rule gets there first.
pub struct Predicate {
    conjuncts: Vec<Conjunct>,
}

struct Conjunct {
    expr: PhysExpr,
    /// The table columns it reads, and their schema (what `expr` was planned against).
    table_columns: Vec<usize>,
    schema: SchemaRef,
    /// Whether it may run on the whole batch when most rows are still in the running: cheap,
    /// and unable to fail on the rows earlier conjuncts ruled out (see [`cannot_fail`]).
    in_place: InPlace,
    /// Names this conjunct and every one before it: equal ids select equal rows (see
    /// [`prefix_id`]).
    prefix: u64,
}

/// The rows of a batch a predicate kept, and where they were in it.
pub struct Selection {
    /// The rule's input columns for the kept rows; or, when `whole`, for every row of the batch.
    pub rows: RecordBatch,
    /// Row numbers in the input batch, ascending.
    pub indices: Vec<u32>,
    /// `rows` is the whole batch (`indices` says which rows were kept): copying most of a
    /// batch would cost more than reading past the few rows that failed.
    pub whole: bool,
}

impl Selection {
    /// Every row of `batch` (table columns `columns`) kept.
    pub fn all(full: &RecordBatch, columns: &[usize]) -> Result<Selection> {
        Ok(Selection { rows: full.project(columns)?, indices: (0..full.num_rows() as u32).collect(), whole: true })
    }

    /// The kept rows' positions in `rows`.
    pub fn positions(&self) -> impl Iterator<Item = usize> + '_ {
        let whole = self.whole;
        self.indices.iter().enumerate().map(move |(i, &row)| if whole { row as usize } else { i })
    }
}

/// What the rules reading one table batch share while it goes through them: the rows each
/// WHERE prefix kept, and the columns already taken for those rows. Dropped with the batch.
#[derive(Default)]
pub struct SharedSelections {
    /// Rows kept after a prefix of conjuncts (by [`prefix_id`]); None: every row.
    kept: HashMap<u64, Option<Arc<UInt32Array>>, ahash::RandomState>,
    /// Columns taken for a set of kept rows (by the address of its indices, which `kept`
    /// holds alive) and a table column.
    taken: HashMap<(usize, usize), ArrayRef, ahash::RandomState>,
}

impl SharedSelections {
    /// Table column `column` of `full`, for the rows `rows` (all when None).
    fn column(&mut self, full: &RecordBatch, rows: Option<&Arc<UInt32Array>>, column: usize) -> Result<ArrayRef> {
        let Some(rows) = rows else {
            return Ok(full.column(column).clone());
        };
        let key = (Arc::as_ptr(rows) as usize, column);
        if let Some(a) = self.taken.get(&key) {
            return Ok(a.clone());
        }
        let a = take(full.column(column), rows.as_ref(), None)?;
        self.taken.insert(key, a.clone());
        Ok(a)
    }

    /// `columns` of `full` for the rows `rows`, as a batch of `schema`.
    fn batch(&mut self, full: &RecordBatch, rows: Option<&Arc<UInt32Array>>, columns: &[usize], schema: &SchemaRef) -> Result<RecordBatch> {
        let arrays = columns.iter().map(|&c| self.column(full, rows, c)).collect::<Result<Vec<_>>>()?;
        let n = rows.map_or(full.num_rows(), |r| r.len());
        Ok(RecordBatch::try_new_with_options(schema.clone(), arrays, &RecordBatchOptions::new().with_row_count(Some(n)))?)
    }
}

/// A number for a prefix of conjuncts, written as the simplified logical expressions (which
/// name table columns and carry literal types): equal texts, equal numbers, in this process.
/// The texts can be long (a list function's text holds its list), so batches look up numbers.
fn prefix_id(text: &str) -> u64 {
    static IDS: std::sync::Mutex<Option<HashMap<String, u64>>> = std::sync::Mutex::new(None);
    let mut ids = IDS.lock().unwrap_or_else(|e| e.into_inner());
    let ids = ids.get_or_insert_with(HashMap::new);
    let next = ids.len() as u64;
    *ids.entry(text.to_string()).or_insert(next)
}

impl Predicate {
    /// `schema`: the rule's input (the table projected to `columns`, table column numbers).
    fn plan(e: &Expr, schema: &DFSchema, columns: &[usize], table: &TableReference, ctx: &SessionContext) -> Result<Predicate> {
        let mut parts: Vec<(usize, &Expr)> = split_conjunction(e).into_iter().map(|c| (cost(c), c)).collect();
        // Stable: among equally cheap conjuncts the author's order stands.
        parts.sort_by_key(|(c, _)| *c);
        let mut conjuncts = Vec::new();
        let mut prefix = String::new();
        for (cost, c) in parts {
            let in_place = match (cannot_fail(c, schema), cost < EXPENSIVE) {
                (false, _) => InPlace::Never,
                (true, true) => InPlace::IfHalfRemain,
                (true, false) => InPlace::IfNearlyAllRemain,
            };
            let mut used: Vec<usize> =
                c.column_refs().into_iter().map(|col| schema.index_of_column(col)).collect::<datafusion::common::Result<_>>()?;
            used.sort_unstable();
            used.dedup();
            let sub = Arc::new(schema.as_arrow().project(&used)?);
            let sub_df = DFSchema::try_from_qualified_schema(table.clone(), &sub)?;
            let simplified = simplify(c, &sub_df)?;
            prefix.push_str(&format!("{simplified:?}\n"));
            let id = prefix_id(&prefix);
            conjuncts.push(Conjunct {
                expr: physical_simplified(&simplified, &sub_df, ctx)?,
                table_columns: used.iter().map(|&i| columns[i]).collect(),
                schema: sub,
                in_place,
                prefix: id,
            });
        }
        Ok(Predicate { conjuncts })
    }

    /// Evaluates every conjunct on an empty batch (start-up checks).
    pub fn check(&self) -> Result<()> {
        for c in &self.conjuncts {
            c.expr.evaluate(&RecordBatch::new_empty(c.schema.clone()))?;
        }
        Ok(())
    }

    /// The rows of the table batch `full` for which every conjunct is true (NULL counts as
    /// false, as in WHERE), as the rule's input: table `columns`, in `schema`. With
    /// `whole_if_most`, when at least half the rows are kept the whole batch is handed over
    /// rather than a copy of those rows (see [`Selection::whole`]).
    pub fn select(
        &self,
        full: &RecordBatch,
        columns: &[usize],
        schema: &SchemaRef,
        shared: &mut SharedSelections,
        whole_if_most: bool,
    ) -> Result<Selection> {
        let mut rows: Option<Arc<UInt32Array>> = None;
        for c in &self.conjuncts {
            if let Some(kept) = shared.kept.get(&c.prefix) {
                rows = kept.clone();
            } else {
                let all = full.num_rows();
                let n = rows.as_ref().map_or(all, |r| r.len());
                // When most rows are still in the running, a cheap conjunct reads the batch's
                // own columns and its answer is looked up for those rows: copying them out
                // would cost more than testing the few rows already ruled out.
                let in_place = rows.is_some()
                    && match c.in_place {
                        InPlace::Never => false,
                        InPlace::IfHalfRemain => 2 * n >= all,
                        InPlace::IfNearlyAllRemain => 10 * n >= 9 * all,
                    };
                let kept = if n == 0 {
                    rows.clone()
                } else {
                    let (input_rows, evaluated) = if in_place { (None, all) } else { (rows.as_ref(), n) };
                    let input = shared.batch(full, input_rows, &c.table_columns, &c.schema)?;
                    let mask = c.expr.evaluate(&input)?.into_array(evaluated)?;
                    let mask = mask.as_boolean();
                    if mask.null_count() == 0 && mask.true_count() == evaluated {
                        rows.clone()
                    } else {
                        // NULL is false: only valid true bits count.
                        let bits = match mask.nulls() {
                            Some(nulls) => mask.values() & nulls.inner(),
                            None => mask.values().clone(),
                        };
                        Some(Arc::new(match &rows {
                            None => bits.set_indices().map(|i| i as u32).collect(),
                            Some(prev) if in_place => prev.values().iter().copied().filter(|&i| bits.value(i as usize)).collect(),
                            Some(prev) => bits.set_indices().map(|i| prev.value(i)).collect(),
                        }))
                    }
                };
                shared.kept.insert(c.prefix, kept.clone());
                rows = kept;
            }
            if rows.as_ref().is_some_and(|r| r.is_empty()) {
                break;
            }
        }
        let whole = rows.as_ref().is_none_or(|r| whole_if_most && 2 * r.len() >= full.num_rows());
        let batch = if whole { full.project(columns)? } else { shared.batch(full, rows.as_ref(), columns, schema)? };
        let indices = match rows {
            None => (0..full.num_rows() as u32).collect(),
            Some(r) => r.values().to_vec(),
        };
        Ok(Selection { rows: batch, indices, whole })
    }
}

/// The [`cost`] from which a conjunct is a function call or a pattern match.
const EXPENSIVE: usize = 20;

/// When a conjunct may be evaluated on the whole batch rather than on the rows still in the
/// running (see [`Predicate::select`]).
#[derive(Clone, Copy)]
enum InPlace {
    /// It could fail on a row an earlier conjunct ruled out (`x <> 0 AND 100 / x > 1`).
    Never,
    IfHalfRemain,
    /// Costly: only when the copy would cover nearly every row anyway.
    IfNearlyAllRemain,
}

/// Whether evaluating `e` cannot fail, whatever the row: comparisons, boolean logic, NULL
/// tests, IN lists, LIKE, CASE, and the list, pattern and string functions that return a
/// value for any input. Arithmetic and casts can fail (division by zero, a string that is not
/// a number), so an expression with them runs only on the rows a rule's guards let through.
fn cannot_fail(e: &Expr, schema: &DFSchema) -> bool {
    // Total functions: a value (or NULL) for any input. A regular expression's pattern is a
    // literal in rules: if it is invalid, it fails on every row, kept or not.
    const SAFE_FUNCTIONS: &[&str] = &[
        "coalesce",
        "nvl",
        "starts_with",
        "ends_with",
        "upper",
        "lower",
        "array_has",
        "array_length",
        "cardinality",
        "array_to_string",
        "string_to_array",
        "regexp_like",
        "regexp_match",
        "regexp_replace",
        "json_get_str",
        "json_get_int",
        "json_get_bool",
        "json_contains",
        "tumble",
        "hop",
        "session",
    ];
    let mut ok = true;
    let _ = e.apply(|node| {
        ok &= match node {
            Expr::Column(_)
            | Expr::Literal(..)
            | Expr::Alias(_)
            | Expr::Not(_)
            | Expr::IsNull(_)
            | Expr::IsNotNull(_)
            | Expr::IsTrue(_)
            | Expr::IsFalse(_)
            | Expr::IsNotTrue(_)
            | Expr::IsNotFalse(_)
            | Expr::IsUnknown(_)
            | Expr::IsNotUnknown(_)
            | Expr::InList(_)
            | Expr::Like(_)
            | Expr::Between(_)
            | Expr::Case(_)
            | Expr::AggregateFunction(_)
            | Expr::TryCast(_) => true,
            // Widening a number, or anything to a string, cannot fail; a string to a number can.
            Expr::Cast(c) => c.expr.get_type(schema).is_ok_and(|from| {
                let to = c.field.data_type();
                from == *to
                    || matches!(to, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View) && from.is_primitive()
                    || from.is_integer() && matches!(to, DataType::Int64 | DataType::Float64)
            }),
            Expr::BinaryExpr(b) => matches!(
                b.op,
                Operator::Eq
                    | Operator::NotEq
                    | Operator::Lt
                    | Operator::LtEq
                    | Operator::Gt
                    | Operator::GtEq
                    | Operator::And
                    | Operator::Or
                    | Operator::IsDistinctFrom
                    | Operator::IsNotDistinctFrom
                    | Operator::RegexMatch
                    | Operator::RegexIMatch
                    | Operator::RegexNotMatch
                    | Operator::RegexNotIMatch
                    | Operator::LikeMatch
                    | Operator::ILikeMatch
                    | Operator::NotLikeMatch
                    | Operator::NotILikeMatch
            ),
            Expr::ScalarFunction(f) => {
                let name = f.name();
                LIST_FUNCTIONS.contains(&name) || PATTERN_FUNCTIONS.contains(&name) || SAFE_FUNCTIONS.contains(&name)
            }
            _ => false,
        };
        Ok(if ok { TreeNodeRecursion::Continue } else { TreeNodeRecursion::Stop })
    });
    ok
}

/// A rough cost of evaluating `e` per row: function calls (JSON, regular expressions, lists,
/// string functions) and pattern matches cost far more than comparing a column to a constant.
fn cost(e: &Expr) -> usize {
    let mut cost = 0;
    let _ = e.apply(|node| {
        cost += match node {
            Expr::ScalarFunction(_) | Expr::Like(_) | Expr::SimilarTo(_) => 20,
            Expr::BinaryExpr(b)
                if matches!(b.op, Operator::RegexMatch | Operator::RegexIMatch | Operator::RegexNotMatch | Operator::RegexNotIMatch) =>
            {
                20
            }
            Expr::InList(l) => 1 + l.list.len() / 8,
            _ => 1,
        };
        Ok(TreeNodeRecursion::Continue)
    });
    cost
}

/// A rule, planned.
pub struct RulePlan {
    /// The table it reads; every rule reads that table's time, id and cluster columns too,
    /// because every alert carries them.
    pub table: Table,
    /// The table columns the rule reads, in table order: each batch is projected to these.
    pub columns: Vec<usize>,
    /// The schema of the projected batch, which every expression below is planned against.
    pub input_schema: SchemaRef,
    /// WHERE, on the table's rows.
    pub predicate: Option<Predicate>,
    pub shape: Shape,
    /// The SELECT list: output name and expression (on table rows for single-event rules, on
    /// aggregate rows for windowed ones).
    pub projection: Vec<(String, PhysExpr)>,
}

/// Applies DataFusion's expression simplifier. The planner leaves some functions to it
/// (`coalesce`, `nvl`… become CASE) and, since rules are not run through the whole-plan
/// optimizer, the engine does it expression by expression.
fn simplify(e: &Expr, schema: &DFSchema) -> Result<Expr> {
    let info = SimplifyContext::builder().with_schema(Arc::new(schema.clone())).build();
    ExprSimplifier::new(info).simplify(e.clone()).with_context(|| format!("simplifying {e}"))
}

/// A logical expression as a physical one over `schema`, simplified first (also used by the
/// Sentinel sink's event forwarder, which plans its SELECT the way rules are planned).
pub fn physical(e: &Expr, schema: &DFSchema, ctx: &SessionContext) -> Result<PhysExpr> {
    physical_simplified(&simplify(e, schema)?, schema, ctx)
}

fn physical_simplified(e: &Expr, schema: &DFSchema, ctx: &SessionContext) -> Result<PhysExpr> {
    let e = &super::prepared_regex::prepare(e, schema)?;
    create_physical_expr(e, schema, ctx.state().execution_props(), &PhysicalPlanningContext::default())
        .with_context(|| format!("planning expression {e}"))
}

/// Checks that every list function names a list that exists, so a typo fails at start-up.
pub fn check_list_args(e: &Expr, lists: &Lists) -> Result<()> {
    let mut problem = None;
    e.apply(|node| {
        if let Expr::ScalarFunction(f) = node {
            if LIST_FUNCTIONS.contains(&f.func.name()) {
                match f.args.get(1) {
                    Some(Expr::Literal(ScalarValue::Utf8(Some(name)), _)) if lists.get(name).is_some() => {
                        if PATTERN_FUNCTIONS.contains(&f.func.name()) {
                            if let Err(e) = lists.get(name).expect("checked").patterns() {
                                problem = Some(anyhow!("{}(): list {name:?}: {e}", f.func.name()));
                            }
                        }
                    }
                    Some(Expr::Literal(ScalarValue::Utf8(Some(name)), _)) => {
                        let known: Vec<&str> = lists.lists.keys().map(String::as_str).collect();
                        problem = Some(anyhow!("{}(): there is no list {name:?} (lists: {})", f.func.name(), known.join(", ")));
                    }
                    _ => problem = Some(anyhow!("{}(): the second argument must be a list name in quotes", f.func.name())),
                }
            }
        }
        Ok(TreeNodeRecursion::Continue)
    })?;
    problem.map_or(Ok(()), Err)
}

/// The fewest events a group must hold for `having` to be true: the largest N of its
/// `count(…) >= N` (or `> N - 1`, `= N`, mirrored) conjuncts. Any count, DISTINCT or FILTERed,
/// is at most the number of events in the group, so a group with fewer cannot pass.
fn min_events(having: &Expr, schema: &DFSchema, groups: usize, aggregates: &[Aggregate]) -> u64 {
    let is_count = |e: &Expr| {
        let e = match e {
            Expr::Cast(c) if c.field.data_type().is_numeric() => c.expr.as_ref(),
            e => e,
        };
        let Expr::Column(c) = e else { return false };
        schema
            .index_of_column(c)
            .ok()
            .and_then(|i| i.checked_sub(groups))
            .and_then(|j| aggregates.get(j))
            .is_some_and(|a| a.expr.fun().name() == "count")
    };
    let number = |e: &Expr| match e {
        Expr::Literal(v, _) => match v.cast_to(&DataType::Float64).ok()? {
            ScalarValue::Float64(Some(n)) if n.is_finite() => Some(n),
            _ => None,
        },
        _ => None,
    };
    let bound = |c: &Expr| -> Option<f64> {
        let Expr::BinaryExpr(b) = c else { return None };
        // Written as count(…) <op> N, or N <op> count(…) turned around.
        let (op, n) = if is_count(&b.left) {
            (b.op, number(&b.right)?)
        } else if is_count(&b.right) {
            (b.op.swap()?, number(&b.left)?)
        } else {
            return None;
        };
        match op {
            Operator::GtEq | Operator::Eq => Some(n.ceil()),
            Operator::Gt => Some(n.floor() + 1.0),
            _ => None,
        }
    };
    split_conjunction(having).into_iter().filter_map(bound).fold(0.0, f64::max).clamp(0.0, u64::MAX as f64) as u64
}

fn window_of(e: &Expr, time_column: &str) -> Result<Option<WindowSpec>> {
    let Expr::ScalarFunction(f) = e else {
        return Ok(None);
    };
    let lit = |i: usize| -> Result<i64> {
        match f.args.get(i) {
            Some(Expr::Literal(v, _)) => Ok(interval_nanos(v)?),
            Some(other) => bail!("{}(): window sizes must be INTERVAL literals, got {other}", f.func.name()),
            None => bail!("{}(): missing window size", f.func.name()),
        }
    };
    let is_event_time = matches!(f.args.first(), Some(Expr::Column(c)) if c.name == time_column);
    match f.func.name() {
        "tumble" | "hop" | "session" if !is_event_time => {
            bail!("{}() windows are over the table's event time: write {}({time_column}, …)", f.func.name(), f.func.name())
        }
        "tumble" => {
            let w = lit(1)?;
            Ok(Some(WindowSpec { kind: WindowKind::Tumble, width: w, slide: w }))
        }
        "session" => {
            let gap = lit(1)?;
            if gap <= 0 {
                bail!("SESSION(event_time, gap): the gap must be positive");
            }
            Ok(Some(WindowSpec { kind: WindowKind::Session, width: gap, slide: gap }))
        }
        "hop" => {
            let (slide, width) = (lit(1)?, lit(2)?);
            if slide > width {
                bail!("HOP(event_time, slide, width): the slide ({slide} ns) is longer than the width ({width} ns)");
            }
            if width / slide > 1000 {
                bail!("HOP(event_time, slide, width): width/slide above 1000 would put every event in too many windows");
            }
            Ok(Some(WindowSpec { kind: WindowKind::Hop, width, slide }))
        }
        _ => Ok(None),
    }
}

/// Plans one rule. `ctx` has the tables and functions registered.
#[allow(deprecated)] // create_aggregate_expr_and_maybe_filter, see the import
pub fn plan_rule(rule: &Rule, ctx: &SessionContext, lists: &Lists) -> Result<RulePlan> {
    let state = ctx.state();
    let logical = futures::executor::block_on(state.create_logical_plan(&rule.query)).context("SQL does not plan")?;
    let logical = state.optimize(&logical).context("SQL does not type-check")?;

    let LogicalPlan::Projection(proj) = &logical else {
        bail!("a rule must be a SELECT … FROM table [WHERE …] [GROUP BY … HAVING …]; ORDER BY, LIMIT, DISTINCT and set operations are not supported (got {})", logical.display());
    };
    for e in &proj.expr {
        check_list_args(e, lists)?;
    }
    let mut node = proj.input.as_ref();
    let mut having_expr = None;
    let mut aggregate = None;
    if let LogicalPlan::Filter(f) = node {
        if let LogicalPlan::Aggregate(a) = f.input.as_ref() {
            having_expr = Some(f);
            aggregate = Some(a);
            node = a.input.as_ref();
        }
    }
    if aggregate.is_none() {
        if let LogicalPlan::Aggregate(a) = node {
            aggregate = Some(a);
            node = a.input.as_ref();
        }
    }
    let mut where_expr = None;
    if let LogicalPlan::Filter(f) = node {
        where_expr = Some(f);
        node = f.input.as_ref();
    }
    if let LogicalPlan::SubqueryAlias(a) = node {
        node = a.input.as_ref();
    }
    let LogicalPlan::TableScan(scan) = node else {
        bail!("a rule reads one table directly: joins, subqueries and nested SELECTs are not supported (found {})", node.display());
    };
    let table = tables::event_table(scan.table_name.table())
        .ok_or_else(|| anyhow!("{} is not an event table rules can read", scan.table_name.table()))?;
    let full_schema = node.schema();

    // Plan against only the columns the rule reads (plus those every alert carries): DataFusion
    // may filter its input batch while evaluating AND/OR, and copying the large body columns of
    // every row for every rule would cost more than the rule itself.
    let mut exprs_over_table: Vec<&Expr> = where_expr.map(|f| &f.predicate).into_iter().collect();
    match aggregate {
        Some(a) => exprs_over_table.extend(a.group_expr.iter().chain(&a.aggr_expr)),
        None => exprs_over_table.extend(&proj.expr),
    }
    let always_read = [Some(table.time_column), table.id_column, Some(table.cluster_column)];
    let mut used: std::collections::BTreeSet<usize> =
        always_read.iter().flatten().filter_map(|n| full_schema.as_arrow().index_of(n).ok()).collect();
    for e in &exprs_over_table {
        for c in e.column_refs() {
            used.insert(full_schema.index_of_column(c).with_context(|| format!("column {c}"))?);
        }
    }
    let columns: Vec<usize> = used.into_iter().collect();
    let input_schema = Arc::new(full_schema.as_arrow().project(&columns)?);
    let projected = DFSchema::try_from_qualified_schema(scan.table_name.clone(), &input_schema)?;
    let table_schema = &projected;

    let predicate = match where_expr {
        Some(f) => {
            check_list_args(&f.predicate, lists)?;
            Some(Predicate::plan(&f.predicate, table_schema, &columns, &scan.table_name, ctx)?)
        }
        None => None,
    };
    let output_names = || proj.schema.fields().iter().map(|f| f.name().clone());

    let shape = match aggregate {
        None => Shape::SingleEvent,
        Some(a) => {
            let mut window = None;
            let mut keys = Vec::new();
            for (i, g) in a.group_expr.iter().enumerate() {
                if matches!(g, Expr::GroupingSet(_)) {
                    bail!("GROUPING SETS, CUBE and ROLLUP are not supported in rules");
                }
                match window_of(g, table.time_column)? {
                    Some(w) if window.is_some() => {
                        bail!("only one TUMBLE, HOP or SESSION per GROUP BY (second at position {i}: {w:?})")
                    }
                    Some(w) => window = Some((i, w)),
                    None => {
                        check_list_args(g, lists)?;
                        keys.push(physical(g, table_schema, ctx)?);
                    }
                }
            }
            let Some((window_pos, window)) = window else {
                let t = table.time_column;
                bail!("a GROUP BY rule needs a window over event time: add TUMBLE({t}, INTERVAL '5 minutes'), HOP({t}, slide, width) or SESSION({t}, gap) to the GROUP BY");
            };
            let mut aggregates = Vec::new();
            for e in &a.aggr_expr {
                check_list_args(e, lists)?;
                #[allow(deprecated)]
                let e = &simplify(e, table_schema)?;
                let (expr, filter, _order) =
                    create_aggregate_expr_and_maybe_filter(e, table_schema, table_schema.as_arrow(), state.execution_props())
                        .with_context(|| format!("planning aggregate {e}"))?;
                let args = expr.expressions();
                let distinct_strings = expr.fun().name() == "count"
                    && expr.is_distinct()
                    && args.len() == 1
                    && args[0].data_type(table_schema.as_arrow())? == datafusion::arrow::datatypes::DataType::Utf8;
                let bounded_array_agg = (expr.fun().name() == "array_agg" && args.len() == 1)
                    .then(|| args[0].data_type(table_schema.as_arrow()).map(|t| (expr.is_distinct(), t)))
                    .transpose()?;
                aggregates.push(Aggregate { expr, distinct_strings, bounded_array_agg, args, filter });
            }
            let having = match having_expr {
                Some(f) => {
                    check_list_args(&f.predicate, lists)?;
                    Some(physical(&f.predicate, &a.schema, ctx)?)
                }
                None => None,
            };
            let min_events = having_expr.map_or(0, |f| min_events(&f.predicate, &a.schema, a.group_expr.len(), &aggregates));
            Shape::Windowed(WindowedPlan {
                window,
                window_pos,
                keys,
                aggregates,
                aggregate_schema: Arc::new(a.schema.as_arrow().clone()),
                having,
                min_events,
                reads_in_place: a.group_expr.iter().chain(&a.aggr_expr).all(|e| cannot_fail(e, a.input.schema())),
            })
        }
    };
    let projection_input = if matches!(shape, Shape::SingleEvent) { table_schema } else { proj.input.schema().as_ref() };
    let projection =
        output_names().zip(&proj.expr).map(|(name, e)| Ok((name, physical(e, projection_input, ctx)?))).collect::<Result<Vec<_>>>()?;
    let names: Vec<String> = output_names().collect();
    if let Some(missing) = rule.entities.iter().find(|e| !names.contains(e)) {
        bail!("entity {missing:?} is not a column of the SELECT list ({})", names.join(", "));
    }
    Ok(RulePlan { table, columns, input_schema, predicate, shape, projection })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_starts() {
        let s = |kind, width, slide, t| {
            let mut v = Vec::new();
            WindowSpec { kind, width, slide }.starts(t, &mut v);
            v
        };
        assert_eq!(s(WindowKind::Tumble, 10, 10, 25), vec![20]);
        assert_eq!(s(WindowKind::Tumble, 10, 10, 20), vec![20]);
        assert_eq!(s(WindowKind::Hop, 10, 5, 25), vec![20, 25]);
        assert_eq!(s(WindowKind::Hop, 10, 5, 24), vec![15, 20]);
        assert_eq!(s(WindowKind::Tumble, 10, 10, -5), vec![-10]);
    }

    /// The fewest events HAVING needs, for a rule grouping by user over 5-minute windows.
    fn min_events_of(having: &str) -> u64 {
        let sql = format!("SELECT user_name FROM kube_audit GROUP BY user_name, TUMBLE(event_time, INTERVAL '5 minutes') HAVING {having}");
        let text = format!("id: T-1\ntitle: t\nseverity: low\nquery: \"{sql}\"\n");
        let set = crate::rules::RuleSet::from_texts(&std::path::PathBuf::from("t"), vec![("r.yaml".into(), text)], vec![]).unwrap();
        let lists = Arc::new(set.lists.clone());
        let ctx = super::super::session_context(lists.clone(), &super::super::Learned::new(&lists)).unwrap();
        match plan_rule(&set.rules[0], &ctx, &lists).unwrap().shape {
            Shape::Windowed(w) => w.min_events,
            Shape::SingleEvent => panic!("windowed"),
        }
    }

    #[test]
    fn having_bounds_the_events_a_group_needs_only_through_a_conjunct_on_a_count() {
        assert_eq!(min_events_of("count(*) >= 12"), 12);
        assert_eq!(min_events_of("count(*) > 25"), 26);
        assert_eq!(min_events_of("5 < count(DISTINCT namespace) AND sum(response_code) > 3"), 6);
        assert_eq!(min_events_of("count(*) FILTER (WHERE response_code = 403) >= 6 AND count(*) >= 2"), 6);
        assert_eq!(min_events_of("avg(response_code) > 350 AND count(*) >= 5"), 5);
        assert_eq!(min_events_of("count(verb) = 3"), 3);
        // No bound: an OR, a bound from above, a sum, a lower bound below one.
        assert_eq!(min_events_of("count(*) >= 12 OR max(response_code) > 500"), 0);
        assert_eq!(min_events_of("count(*) <= 12"), 0);
        assert_eq!(min_events_of("sum(response_code) >= 1000"), 0);
        assert_eq!(min_events_of("count(*) > -3"), 0);
    }
}
