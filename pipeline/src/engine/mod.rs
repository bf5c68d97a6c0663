//! The detection engine: every rule planned once at start-up, then evaluated batch by batch.
//!
//! Single-event rules are a compiled predicate and projection per batch. Windowed rules feed a
//! keyed window operator ([`window::WindowState`]) that fires when the watermark passes a
//! window's end. The watermark is the newest event time of each input stream (a Kafka
//! partition; all files are one stream), the minimum over streams that delivered data within
//! the idle timeout, minus the allowed lateness. The engine never sees where the bytes came
//! from, and never plans a query after start-up.

pub mod aggregates;
pub mod authors;
pub mod egress;
pub mod first_seen;
pub mod functions;
pub mod plan;
pub mod prepared_regex;
pub mod sequence;
mod state_file;
pub mod suppression;
pub mod window;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use datafusion::arrow::array::{Array, ArrayRef, AsArray, BooleanArray, RecordBatch, UInt32Array};
use datafusion::arrow::compute::filter_record_batch;
use datafusion::arrow::datatypes::{Schema, TimestampNanosecondType};
use datafusion::catalog::MemTable;
use datafusion::common::ScalarValue;
use datafusion::execution::session_state::SessionStateBuilder;
use datafusion::prelude::{SessionConfig, SessionContext};
use serde_json::{Map, Value};

use crate::alert::{alert_id, Alert};
use crate::decode::time::format_nanos;
use crate::decode::TableBatch;
use crate::rules::{Lists, Rule, RuleSet};
use crate::tables;
use first_seen::FirstSeen;
use functions::{ListFn, WindowFn};
use plan::{plan_rule, PhysExpr, RulePlan, Selection, Shape, SharedSelections};
use sequence::CompiledSequence;
use suppression::SuppressionMemo;
use window::{MetaColumns, WindowState};

#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// How far behind the newest event time an event may arrive and still count in its window.
    pub allowed_lateness: i64,
    /// A stream (partition) that delivered nothing for this long stops holding the watermark back.
    pub idle_timeout: Duration,
    /// Live (window, key) groups a windowed rule may hold (a rule's `max_groups` overrides it);
    /// beyond, the least recently active group is evicted and counted.
    pub max_groups_per_rule: usize,
    /// The least lateness every rule allows, its own setting included: a replay of an archive
    /// tree whose files cover the same hour (several clusters) sets it to that hour.
    pub min_lateness: i64,
}

impl EngineOptions {
    /// How late an event may arrive for `rule`.
    fn lateness_of(&self, rule: &crate::rules::Rule) -> i64 {
        rule.allowed_lateness.unwrap_or(self.allowed_lateness).max(self.min_lateness)
    }
}

/// The default cap on a windowed rule's live groups: some hundreds of MB at worst.
pub const DEFAULT_MAX_GROUPS: usize = 200_000;

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            allowed_lateness: 60_000_000_000,
            idle_timeout: Duration::from_secs(30),
            max_groups_per_rule: DEFAULT_MAX_GROUPS,
            min_lateness: 0,
        }
    }
}

/// The newest plausible event time of one input stream, and when it last delivered data.
struct StreamClock {
    newest: i64,
    seen: Instant,
    /// The source reported undelivered messages: the stream is slow, not quiet.
    backlog: bool,
}

/// A stream with a backlog stays active this many idle timeouts (it may be stuck for good).
const BACKLOG_PATIENCE: u32 = 10;

/// A DataFusion context with Crowsnest's tables (empty), the JSON functions, the window markers
/// and the list functions: what rules are planned against, and what hunts run in.
pub fn session_context(lists: Arc<Lists>, learned: &Learned) -> Result<SessionContext> {
    // Rules are planned, never optimized as whole queries: the optimizer would reshape the plan
    // (push filters into scans, rewrite aggregates) that the engine takes apart.
    // Identifiers keep their case: the Container Insights tables use Log Analytics' column
    // names (TimeGenerated, PodName), written in SQL as in KQL. Function names still match in
    // any case.
    let config = SessionConfig::new().set_bool("datafusion.sql_parser.enable_ident_normalization", false);
    let state = SessionStateBuilder::new().with_config(config).with_default_features().with_optimizer_rules(vec![]).build();
    let mut ctx = SessionContext::new_with_state(state);
    register_functions(&mut ctx, lists, learned)?;
    for table in tables::event_tables() {
        let schema = tables::schema_of(table.name).expect("known table");
        ctx.register_table(table.name, Arc::new(MemTable::try_new(schema, vec![vec![]])?))?;
    }
    Ok(ctx)
}

/// The functions rules may call (JSON, window markers, lists, what the engine learned), for a
/// context of the caller's (hunts build theirs with the optimizer on).
pub fn register_functions(ctx: &mut SessionContext, lists: Arc<Lists>, learned: &Learned) -> Result<()> {
    datafusion_functions_json::register_all(ctx)?;
    ctx.register_udf(WindowFn::tumble());
    ctx.register_udf(WindowFn::hop());
    ctx.register_udf(WindowFn::session());
    for f in ListFn::all(lists) {
        ctx.register_udf(f);
    }
    ctx.register_udf(egress::ClusterEgressFn::udf(learned.egress.clone()));
    ctx.register_udf(authors::WorkloadAuthorFn::udf(learned.authors.clone()));
    Ok(())
}

/// What the engine learns from every `kube_audit` batch before the rules see it, for rules to
/// ask through SQL functions: the clusters' own egress addresses, who is behind each workload.
#[derive(Debug, Clone)]
pub struct Learned {
    pub egress: Arc<egress::ClusterEgress>,
    pub authors: Arc<authors::WorkloadAuthors>,
}

impl Learned {
    pub fn new(lists: &Lists) -> Learned {
        Learned { egress: Arc::new(egress::ClusterEgress::new(lists)), authors: Arc::new(authors::WorkloadAuthors::new(lists)) }
    }

    fn learn(&self, audit: &RecordBatch) {
        self.egress.learn(audit);
        self.authors.learn(audit);
    }

    fn load(&self, dir: &std::path::Path) -> Result<()> {
        self.egress.load(dir)?;
        self.authors.load(dir)
    }

    fn save(&self, dir: &std::path::Path) -> Result<()> {
        self.egress.save(dir)?;
        self.authors.save(dir)
    }
}

/// Counters of one rule, for metrics and summaries.
#[derive(Debug, Clone, Default)]
pub struct RuleStats {
    pub matches: u64,
    pub alerts: u64,
    pub late_events: u64,
    pub errors: u64,
    pub last_error: Option<String>,
    pub live_groups: usize,
    /// Groups dropped because the rule reached its cap on live groups.
    pub evictions: u64,
    /// Approximate bytes of the rule's window state.
    pub state_bytes: usize,
    /// Time spent evaluating the rule.
    pub busy: Duration,
}

impl RuleStats {
    /// A rule failed on a batch: counted, kept for the summary, logged the first few times
    /// (the other rules still run).
    fn failed_on_batch(&mut self, rule_id: &str, rows: usize, e: anyhow::Error) {
        self.errors += 1;
        self.last_error = Some(format!("{e:#}"));
        if self.errors <= 3 {
            log::error!("rule {rule_id} failed on a batch of {rows} rows: {e:#}");
        }
    }
}

/// A row a single-event rule matched, with what its alert needs.
struct Match {
    t: i64,
    fields: Map<String, Value>,
    entities: Map<String, Value>,
    audit_id: Option<String>,
    cluster: Option<String>,
}

struct CompiledRule {
    rule: Rule,
    /// First-sighting rules: matches waiting for the watermark, to be decided in time order.
    pending: Vec<Match>,
    /// The table the rule reads: it runs on that table's batches only.
    table: &'static str,
    plan: RulePlan,
    window: Option<WindowState>,
    /// Single-event rules with `first_seen`: the histories that decide which matches alert.
    first_seen: Option<FirstSeen>,
    /// Where event_time, audit_id and cluster are in the rule's projected batch.
    meta: MetaColumns,
    /// Rules with `suppress`: a repeat is dropped before its alert is built.
    suppression: Option<SuppressionMemo>,
    lateness: i64,
    stats: RuleStats,
}

/// Events a windowed rule matched after every window they belong to had fired: counted, and
/// handed to the late-events output (stateless rules still saw them).
pub struct LateRows {
    pub rule_id: String,
    /// Windows ending at or before this had fired (the rule's watermark).
    pub closed_until: i64,
    /// The late events, every column.
    pub rows: RecordBatch,
}

pub struct Engine {
    rules: Vec<CompiledRule>,
    sequences: Vec<CompiledSequence>,
    /// Late events since the last [`Engine::take_late`].
    late: Vec<LateRows>,
    /// Newest event time seen over all streams (for metrics).
    max_event_time: i64,
    clocks: HashMap<Arc<str>, StreamClock>,
    /// The stream of inputs that name none (files, stdin).
    default_stream: Arc<str>,
    idle_timeout: Duration,
    /// The event time every rule's watermark is derived from (minus its lateness); never goes back.
    base: i64,
    /// Newest plausible event time of the last batch processed.
    last_batch_max: i64,
    /// Events stamped more than MAX_FUTURE_SKEW ahead of the wall clock (not used for the watermark).
    pub future_events: u64,
    /// What rules may ask about, learned from each batch before the rules run.
    learned: Learned,
}

/// How far ahead of the wall clock an event time may be and still advance the watermark.
pub const MAX_FUTURE_SKEW: i64 = 15 * 60 * 1_000_000_000;

impl Engine {
    /// Plans every rule. Fails with the list of every rule that does not plan, by file.
    pub fn new(set: &RuleSet, opts: &EngineOptions) -> Result<Engine> {
        let lists = Arc::new(set.lists.clone());
        let learned = Learned::new(&lists);
        let ctx = session_context(lists.clone(), &learned)?;
        let mut rules = Vec::new();
        let mut sequences = Vec::new();
        let mut problems = Vec::new();
        for rule in &set.rules {
            let compiled = match &rule.sequence {
                Some(spec) => {
                    let lateness = opts.lateness_of(rule);
                    CompiledSequence::compile(rule, spec, &ctx, &lists, lateness).map(|s| sequences.push(s))
                }
                None => Self::compile(rule, &ctx, &lists, opts).map(|r| rules.push(r)),
            };
            if let Err(e) = compiled {
                problems.push(format!("{} ({}): {e:#}", rule.id, rule.path.display()));
            }
        }
        if !problems.is_empty() {
            bail!("{} rule(s) do not plan:\n  {}", problems.len(), problems.join("\n  "));
        }
        Ok(Engine {
            rules,
            sequences,
            late: Vec::new(),
            max_event_time: i64::MIN,
            clocks: HashMap::new(),
            default_stream: Arc::from(""),
            idle_timeout: opts.idle_timeout,
            base: i64::MIN,
            last_batch_max: i64::MIN,
            future_events: 0,
            learned,
        })
    }

    fn compile(rule: &Rule, ctx: &SessionContext, lists: &Lists, opts: &EngineOptions) -> Result<CompiledRule> {
        let plan = plan_rule(rule, ctx, lists)?;
        let table = plan.table;
        let input = plan.input_schema.clone();
        if matches!(plan.shape, Shape::SingleEvent) && (rule.early || rule.max_groups.is_some()) {
            bail!("early and max_groups apply to windowed rules (GROUP BY … TUMBLE/HOP) only");
        }
        let window = match &plan.shape {
            Shape::Windowed(w) => Some(WindowState::new(w, &input, rule.max_groups.unwrap_or(opts.max_groups_per_rule), rule.early)?),
            Shape::SingleEvent => None,
        };
        let first_seen = match (&rule.first_seen, &plan.shape) {
            (None, _) => None,
            (Some(spec), Shape::SingleEvent) => {
                let columns: Vec<String> = plan.projection.iter().map(|(n, _)| n.clone()).collect();
                Some(FirstSeen::new(spec, &columns)?)
            }
            (Some(_), Shape::Windowed(_)) => bail!("first_seen applies to single-event rules and sequence steps"),
        };
        let meta = MetaColumns::of(&table, &input);
        let names: Vec<String> = plan.projection.iter().map(|(n, _)| n.clone()).collect();
        let suppression = if first_seen.is_none() { SuppressionMemo::of(rule, &names) } else { None };
        let mut compiled = CompiledRule {
            suppression,
            lateness: opts.lateness_of(rule),
            rule: rule.clone(),
            table: table.name,
            plan,
            window,
            first_seen,
            pending: Vec::new(),
            meta,
            stats: RuleStats::default(),
        };
        compiled.smoke_test(&input)?;
        Ok(compiled)
    }

    /// The planned rules, each with its kind: `event`, `windowed` or `sequence`.
    pub fn rules(&self) -> impl Iterator<Item = (&Rule, &'static str)> {
        let kind = |r: &CompiledRule| if matches!(r.plan.shape, Shape::Windowed(_)) { "windowed" } else { "event" };
        self.rules.iter().map(move |r| (&r.rule, kind(r))).chain(self.sequences.iter().map(|s| (&s.rule, "sequence")))
    }

    pub fn rule_count(&self) -> usize {
        self.rules.len() + self.sequences.len()
    }

    pub fn stats(&self) -> impl Iterator<Item = (&Rule, RuleStats)> {
        let sequences = self.sequences.iter().map(|s| (&s.rule, s.current_stats()));
        self.rules
            .iter()
            .map(|r| {
                let mut s = r.stats.clone();
                if let Some(w) = &r.window {
                    s.live_groups = w.live_groups();
                    s.late_events = w.late_events;
                    s.evictions = w.evictions;
                    s.state_bytes = w.state_bytes();
                }
                if let Some(f) = &r.first_seen {
                    s.live_groups = f.live_pairs();
                    s.state_bytes = f.bytes;
                    s.evictions = f.evictions;
                }
                (&r.rule, s)
            })
            .chain(sequences)
    }

    /// The newest event time seen so far (i64::MIN before any event).
    pub fn max_event_time(&self) -> i64 {
        self.max_event_time
    }

    /// Newest plausible event time of the last batch processed (i64::MIN if none): what the
    /// pipeline's checkpoints compare with [`Engine::oldest_open_window`].
    pub fn last_batch_max_time(&self) -> i64 {
        self.last_batch_max
    }

    /// The start of the oldest window that holds state (i64::MAX when none does): events older
    /// than this are no longer needed by any window.
    pub fn oldest_open_window(&self) -> i64 {
        self.rules
            .iter()
            .filter_map(|r| match (&r.plan.shape, &r.window) {
                (Shape::Windowed(_), Some(state)) => state.oldest_start(),
                _ => r.pending.iter().map(|m| m.t).min(),
            })
            .chain(self.sequences.iter().filter_map(CompiledSequence::oldest))
            .min()
            .unwrap_or(i64::MAX)
    }

    /// Runs the rules of `table` over a batch of it from files or stdin. See [`Engine::process_chunk`].
    pub fn process(&mut self, table: &str, batch: &RecordBatch) -> Vec<Alert> {
        self.process_from(table, batch, None)
    }

    /// [`Engine::process_chunk`] with one table's batch.
    pub fn process_from(&mut self, table: &str, batch: &RecordBatch, stream: Option<&Arc<str>>) -> Vec<Alert> {
        let Some(table) = tables::event_table(table) else {
            log::error!("a batch of {table}, which is not an event table, was skipped");
            return Vec::new();
        };
        self.process_chunk(&[TableBatch { table: table.name, batch: batch.clone() }], stream)
    }

    /// Runs every rule over the batches of one chunk of input from `stream` (a Kafka partition;
    /// None for files and stdin), each rule over its own table's batch, and returns the alerts
    /// that fired: single-event matches, and windows the advancing watermark closed.
    ///
    /// The batches of a chunk (one per table) arrived together, so all of them are taken in
    /// before the watermark moves to the chunk's newest time; otherwise one table's batch would
    /// carry the watermark past the events of the next, and make them late. A rule that fails
    /// on a batch is counted and logged; the others still run.
    pub fn process_chunk(&mut self, batches: &[TableBatch], stream: Option<&Arc<str>>) -> Vec<Alert> {
        self.observe(batches, stream);
        self.evaluate(batches)
    }

    /// Moves `stream`'s event-time clock to the newest plausible time in `batches`: every event
    /// that arrived counts, repeats included (a partition whose only recent traffic is a
    /// redelivery is not behind), even where only some are then [`evaluate`](Self::evaluate)d.
    pub fn observe(&mut self, batches: &[TableBatch], stream: Option<&Arc<str>>) {
        // An event stamped in the future (a skewed clock, a forged record) must not drag the
        // watermark ahead and close every open window: only plausible times advance it.
        let limit = chrono::Utc::now().timestamp_nanos_opt().unwrap_or(i64::MAX).saturating_add(MAX_FUTURE_SKEW);
        let mut future = 0;
        let mut newest = i64::MIN;
        for b in batches {
            let Some(time_column) = tables::event_table(b.table).and_then(|t| b.batch.schema().index_of(t.time_column).ok()) else {
                log::error!("a batch of {}, which is not an event table with a time column, was skipped", b.table);
                continue;
            };
            for &t in b.batch.column(time_column).as_primitive::<TimestampNanosecondType>().values() {
                if t > limit {
                    future += 1;
                } else if t > newest {
                    newest = t;
                }
            }
        }
        self.future_events += future;
        self.last_batch_max = newest;
        self.max_event_time = self.max_event_time.max(newest);
        if newest > i64::MIN {
            let key = stream.unwrap_or(&self.default_stream);
            let clock = self.clocks.entry(key.clone()).or_insert(StreamClock { newest, seen: Instant::now(), backlog: false });
            clock.newest = clock.newest.max(newest);
            clock.seen = Instant::now();
        }
    }

    /// Runs every rule over `batches` (one chunk, whose times [`observe`](Self::observe) took
    /// in), then moves the watermark and returns what fired.
    pub fn evaluate(&mut self, batches: &[TableBatch]) -> Vec<Alert> {
        let mut alerts = Vec::new();
        // Every batch in, with the windows and sequence state as the previous chunk left them…
        for TableBatch { table, batch } in batches {
            if *table == tables::KUBE_AUDIT {
                // Before any rule: a node's first call from a new egress address is not an alarm,
                // and the pods of a workload created in this batch already have its author.
                self.learned.learn(batch);
            }
            let mut shared = SharedSelections::default();
            for r in self.rules.iter_mut().filter(|r| r.table == *table) {
                let started = Instant::now();
                if let Err(e) = r.process(batch, &mut shared, &mut alerts, &mut self.late) {
                    r.stats.failed_on_batch(&r.rule.id, batch.num_rows(), e);
                }
                r.stats.busy += started.elapsed();
            }
            for s in &mut self.sequences {
                let started = Instant::now();
                if let Err(e) = s.process(table, batch, &mut shared, &mut alerts) {
                    s.stats.failed_on_batch(&s.rule.id, batch.num_rows(), e);
                }
                s.stats.busy += started.elapsed();
                let late = s.take_late_rows();
                if !late.is_empty() {
                    match datafusion::arrow::compute::take_record_batch(batch, &UInt32Array::from(late)) {
                        Ok(rows) => self.late.push(LateRows { rule_id: s.rule.id.clone(), closed_until: s.pruned_to(), rows }),
                        Err(e) => s.stats.failed_on_batch(&s.rule.id, batch.num_rows(), e.into()),
                    }
                }
            }
        }
        // …then the watermark moves, and what it closes fires.
        self.advance_base();
        alerts.extend(self.fire_windows(false));
        alerts
    }

    /// Every first-sighting history: its rule, its step (for sequences), the history.
    fn histories(&mut self) -> impl Iterator<Item = (&str, Option<usize>, &mut FirstSeen)> {
        let rules = self.rules.iter_mut().filter_map(|r| r.first_seen.as_mut().map(|f| (r.rule.id.as_str(), None, f)));
        let steps = self.sequences.iter_mut().flat_map(|s| s.histories().map(|(id, step, f)| (id, Some(step), f)));
        rules.chain(steps)
    }

    /// Loads the first-sighting histories saved in `dir` (see [`Engine::save_state`]).
    pub fn load_state(&mut self, dir: &std::path::Path) -> Result<()> {
        self.learned.load(dir)?;
        self.histories().try_for_each(|(id, step, f)| f.load(dir, id, step))
    }

    /// Saves the first-sighting histories to `dir`, so a restart keeps its baselines. Window
    /// and sequence state need no saving: a restart rebuilds them from the source offsets.
    pub fn save_state(&mut self, dir: &std::path::Path) -> Result<()> {
        self.learned.save(dir)?;
        self.histories().try_for_each(|(id, step, f)| f.save(dir, id, step))
    }

    /// The addresses learned as each cluster's own egress (see [`egress`]).
    pub fn cluster_egress(&self) -> std::collections::BTreeMap<String, std::collections::BTreeSet<std::net::IpAddr>> {
        self.learned.egress.snapshot()
    }

    /// Whether any rule keeps first-sighting history (worth a state directory).
    pub fn has_history(&mut self) -> bool {
        self.histories().next().is_some()
    }

    /// Alert candidates dropped since the last call because their rule had already alerted on
    /// the same entities in the same suppression period (see [`suppression`]): the router
    /// counts them with the ones it suppresses.
    pub fn take_suppressed(&mut self) -> u64 {
        self.rules.iter_mut().filter_map(|r| r.suppression.as_mut()).map(|m| std::mem::take(&mut m.suppressed)).sum()
    }

    /// The late events since the last call.
    pub fn take_late(&mut self) -> Vec<LateRows> {
        std::mem::take(&mut self.late)
    }

    /// A stream (partition) was assigned: until it delivers data or goes idle, it holds the
    /// watermark where it is.
    pub fn open_stream(&mut self, stream: &Arc<str>) {
        let clock = self.clocks.entry(stream.clone()).or_insert(StreamClock { newest: i64::MIN, seen: Instant::now(), backlog: false });
        clock.seen = Instant::now();
    }

    /// Which streams have messages their source has not delivered yet (a lagging partition):
    /// such a stream is slow, not idle, and keeps holding the watermark back — for up to ten
    /// idle timeouts, so a partition stuck for good cannot stall every alert.
    pub fn note_backlog(&mut self, streams: &[Arc<str>]) {
        for (name, clock) in self.clocks.iter_mut() {
            clock.backlog = streams.contains(name);
        }
    }

    /// The minimum newest time over active streams (over all streams when every one is idle);
    /// it never moves back. Active: heard from within the idle timeout, or with a backlog.
    fn advance_base(&mut self) {
        let now = Instant::now();
        let patience = self.idle_timeout * BACKLOG_PATIENCE;
        let active = self
            .clocks
            .values()
            .filter(|c| {
                let quiet = now.duration_since(c.seen);
                quiet < self.idle_timeout || (c.backlog && quiet < patience)
            })
            .map(|c| c.newest)
            .min();
        let candidate = active.or_else(|| self.clocks.values().map(|c| c.newest).max()).unwrap_or(i64::MIN);
        self.base = self.base.max(candidate);
    }

    /// Called when no input arrived for a while: a stream that went idle stops holding the
    /// watermark back, and the windows that lets close fire.
    pub fn tick(&mut self) -> Vec<Alert> {
        self.advance_base();
        self.fire_windows(false)
    }

    /// End of input: fires every open window.
    pub fn finish(&mut self) -> Vec<Alert> {
        self.fire_windows(true)
    }

    /// Fires the windows each rule's watermark (every window at the end of input) closes.
    fn fire_windows(&mut self, end_of_input: bool) -> Vec<Alert> {
        let mut alerts = Vec::new();
        for r in &mut self.rules {
            let started = Instant::now();
            let watermark = if end_of_input { i64::MAX } else { self.base.saturating_sub(r.lateness) };
            if let Err(e) = r.fire(watermark, &mut alerts) {
                r.stats.errors += 1;
                r.stats.last_error = Some(format!("{e:#}"));
                log::error!("rule {} failed while firing its windows: {e:#}", r.rule.id);
            }
            r.stats.busy += started.elapsed();
        }
        for s in &mut self.sequences {
            let started = Instant::now();
            let watermark = if end_of_input { i64::MAX } else { self.base.saturating_sub(s.lateness) };
            s.advance(watermark, &mut alerts);
            s.stats.busy += started.elapsed();
        }
        alerts
    }
}

impl CompiledRule {
    /// Evaluates the rule's expressions once on an empty batch, so an expression that plans but
    /// cannot run (a function DataFusion only supports after rewriting) fails at start-up
    /// rather than on every batch.
    fn smoke_test(&mut self, schema: &Schema) -> Result<()> {
        let empty = RecordBatch::new_empty(Arc::new(schema.clone()));
        if let Some(p) = &self.plan.predicate {
            p.check().context("evaluating the WHERE clause")?;
        }
        match &self.plan.shape {
            Shape::SingleEvent => {
                evaluate_all(&self.plan.projection, &empty).context("evaluating the SELECT list")?;
            }
            Shape::Windowed(w) => {
                for k in &w.keys {
                    k.evaluate(&empty).context("evaluating a GROUP BY key")?;
                }
                for a in &w.aggregates {
                    for e in &a.args {
                        e.evaluate(&empty).context("evaluating an aggregate's argument")?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Takes in a batch of the rule's table: single-event alerts now, window state updated
    /// (windows fire in [`Engine::fire_windows`], once the whole chunk is in).
    fn process(
        &mut self,
        full: &RecordBatch,
        shared: &mut SharedSelections,
        alerts: &mut Vec<Alert>,
        late: &mut Vec<LateRows>,
    ) -> Result<()> {
        let meta = self.meta;
        // Windowed rules may read their rows in place; single-event ones need just those rows.
        let in_place = matches!(&self.plan.shape, Shape::Windowed(w) if w.reads_in_place);
        let selected = match &self.plan.predicate {
            Some(p) => p.select(full, &self.plan.columns, &self.plan.input_schema, shared, in_place)?,
            None => Selection::all(full, &self.plan.columns)?,
        };
        let matches = selected.indices.len();
        self.stats.matches += matches as u64;
        match &self.plan.shape {
            Shape::SingleEvent => {
                if matches > 0 {
                    self.single_event_alerts(&selected.rows, meta, alerts)?;
                }
            }
            Shape::Windowed(plan) => {
                let state = self.window.as_mut().expect("windowed rules have state");
                if matches > 0 {
                    let late_rows = late_rows(state, &selected, meta.event_time);
                    if !late_rows.is_empty() {
                        let rows = datafusion::arrow::compute::take_record_batch(full, &UInt32Array::from(late_rows))?;
                        late.push(LateRows { rule_id: self.rule.id.clone(), closed_until: state.closed_until, rows });
                    }
                    let within = if selected.whole { Some(selected.indices.as_slice()) } else { None };
                    let evicted_before = state.evictions;
                    let touched = state.update(plan, &selected.rows, within, meta)?;
                    if state.evictions > evicted_before && shed_state_news(evicted_before, state.evictions) {
                        log::warn!(
                            "rule {} holds its max_groups cap of {} live groups and has evicted {} of the least recently active so far \
                             (crowsnest_window_evictions_total): events of those groups before the eviction no longer count toward an alert",
                            self.rule.id,
                            state.max_groups(),
                            state.evictions
                        );
                    }
                    if self.rule.early {
                        // Fire as soon as HAVING holds, once per window and key.
                        if let Some(crossed) = state.peek(plan, &touched)? {
                            self.alerts_from(crossed, true, alerts)?;
                        }
                    }
                }
            }
        }
        Ok(())
    }

    fn single_event_alerts(&mut self, rows: &RecordBatch, meta: MetaColumns, alerts: &mut Vec<Alert>) -> Result<()> {
        let columns = evaluate_all(&self.plan.projection, rows)?;
        let times = rows.column(meta.event_time).as_primitive::<TimestampNanosecondType>();
        let ids = meta.audit_id.map(|c| rows.column(c).as_string::<i32>().clone());
        let clusters = meta.cluster.map(|c| rows.column(c).as_string::<i32>().clone());
        let now = format_nanos(chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default());
        let names: Vec<String> = match self.first_seen {
            Some(_) => self.plan.projection.iter().map(|(n, _)| n.clone()).collect(),
            None => Vec::new(),
        };
        for i in 0..rows.num_rows() {
            let t = times.value(i);
            if self.first_seen.as_mut().is_some_and(|h| h.known_before(&names, &columns, i, t)) {
                continue; // a pair already seen before this row: never a first sighting
            }
            if let Some(memo) = self.suppression.as_mut() {
                if memo.repeats(&columns, i, t)? {
                    continue;
                }
            }
            let (fields, entities) = self.fields_and_entities(&columns, i)?;
            let row = Match {
                t,
                fields,
                entities,
                audit_id: ids.as_ref().filter(|a| a.is_valid(i)).map(|a| a.value(i).to_string()),
                cluster: clusters.as_ref().filter(|c| c.is_valid(i)).map(|c| c.value(i).to_string()),
            };
            if self.first_seen.is_some() {
                // Novelty is decided in event-time order once the watermark passes (see `fire`).
                self.pending.push(row);
            } else {
                alerts.push(self.single_event_alert(row, &now));
            }
        }
        Ok(())
    }

    fn single_event_alert(&mut self, m: Match, now: &str) -> Alert {
        // With suppression, one alert per entities and (aligned) period: its id names the
        // period, so whichever of its events arrives first, the id is the same.
        let anchor = match self.rule.suppress {
            Some(p) if p > 0 => format!("period:{}", m.t.div_euclid(p)),
            _ => m.audit_id.clone().unwrap_or_else(|| m.t.to_string()),
        };
        self.stats.alerts += 1;
        Alert {
            id: alert_id(&self.rule.id, &m.entities, &anchor),
            first_seen: format_nanos(m.t),
            last_seen: format_nanos(m.t),
            window_start: None,
            window_end: None,
            count: 1,
            cluster: m.cluster,
            audit_ids: m.audit_id.into_iter().collect(),
            last_seen_nanos: m.t,
            ..self.alert_header(m.entities, m.fields, now)
        }
    }

    /// First sightings: the matches the watermark has passed, in event-time order, through the
    /// history. Deciding in arrival order would make the outcome depend on how partitions
    /// interleave (a value seen at 08:00 on one partition and at 12:00 on another).
    fn decide_first_sightings(&mut self, watermark: i64, alerts: &mut Vec<Alert>) {
        if self.pending.is_empty() || self.pending.iter().all(|m| m.t > watermark) {
            return;
        }
        let (mut due, keep): (Vec<Match>, Vec<Match>) = std::mem::take(&mut self.pending).into_iter().partition(|m| m.t <= watermark);
        self.pending = keep;
        due.sort_by_key(|m| m.t); // stable: equal times keep their arrival order
        let now = format_nanos(chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default());
        for m in due {
            let novel = self.first_seen.as_mut().is_some_and(|h| h.observe(&m.fields, m.t));
            if novel {
                let alert = self.single_event_alert(m, &now);
                alerts.push(alert);
            }
        }
    }

    fn fire(&mut self, watermark: i64, alerts: &mut Vec<Alert>) -> Result<()> {
        self.decide_first_sightings(watermark, alerts);
        let (Shape::Windowed(plan), Some(state)) = (&self.plan.shape, self.window.as_mut()) else {
            return Ok(());
        };
        let Some(fired) = state.fire(plan, watermark)? else {
            return Ok(());
        };
        self.alerts_from(fired, false, alerts)
    }

    /// Alerts for the aggregate rows that pass HAVING. `early`: the windows are still open, and
    /// each group that alerts is marked so it does not alert again when its window closes.
    fn alerts_from(&mut self, fired: window::Fired, early: bool, alerts: &mut Vec<Alert>) -> Result<()> {
        let Shape::Windowed(plan) = &self.plan.shape else {
            return Ok(());
        };
        let keep: BooleanArray = match &plan.having {
            Some(h) => h.evaluate(&fired.batch)?.into_array(fired.batch.num_rows())?.as_boolean().clone(),
            None => BooleanArray::from(vec![true; fired.batch.num_rows()]),
        };
        let rows = filter_record_batch(&fired.batch, &keep)?;
        let columns = evaluate_all(&self.plan.projection, &rows)?;
        let width = plan.window.width;
        let kept: Vec<usize> = (0..keep.len()).filter(|&i| keep.is_valid(i) && keep.value(i)).collect();
        let now = format_nanos(chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default());
        for (row, &orig) in kept.iter().enumerate() {
            let meta = &fired.metas[orig];
            let start = fired.window_starts[orig];
            if early {
                self.window.as_mut().expect("windowed rules have state").mark_fired_early(start, &fired.keys[orig]);
            }
            if let Some(memo) = self.suppression.as_mut() {
                if memo.repeats(&columns, row, meta.first_seen)? {
                    continue;
                }
            }
            let (fields, entities) = self.fields_and_entities(&columns, row)?;
            // A session ends a gap after its newest event.
            let end = if plan.window.kind == plan::WindowKind::Session { meta.last_seen + width } else { start + width };
            alerts.push(Alert {
                id: alert_id(&self.rule.id, &entities, &format_nanos(start)),
                first_seen: format_nanos(meta.first_seen),
                last_seen: format_nanos(meta.last_seen),
                window_start: Some(format_nanos(start)),
                window_end: Some(format_nanos(end)),
                count: meta.count,
                cluster: meta.cluster.as_deref().map(str::to_string),
                audit_ids: meta.audit_ids.strings(),
                last_seen_nanos: meta.last_seen,
                ..self.alert_header(entities, fields, &now)
            });
            self.stats.alerts += 1;
        }
        Ok(())
    }

    fn alert_header(&self, entities: Map<String, Value>, fields: Map<String, Value>, now: &str) -> Alert {
        let r = &self.rule;
        Alert {
            id: String::new(),
            rule_id: r.id.clone(),
            rule_title: r.title.clone(),
            severity: r.severity.as_str().to_string(),
            mitre: r.mitre.clone(),
            tags: r.tags.clone(),
            first_seen: String::new(),
            last_seen: String::new(),
            window_start: None,
            window_end: None,
            count: 0,
            entities,
            cluster: None,
            audit_ids: Vec::new(),
            fields,
            detected_at: now.to_string(),
            last_seen_nanos: 0,
        }
    }

    fn fields_and_entities(&self, columns: &[ArrayRef], row: usize) -> Result<(Map<String, Value>, Map<String, Value>)> {
        let mut fields = Map::new();
        for ((name, _), col) in self.plan.projection.iter().zip(columns) {
            fields.insert(name.clone(), scalar_to_json(&ScalarValue::try_from_array(col, row)?));
        }
        let entities = self.rule.entities.iter().map(|e| (e.clone(), fields.get(e).cloned().unwrap_or(Value::Null))).collect();
        Ok((fields, entities))
    }
}

/// Whether a rule's evictions growing from `before` to `now` is worth a log line: the first
/// time, then at every power of ten, so a flood is reported without a line per batch.
fn shed_state_news(before: u64, now: u64) -> bool {
    before == 0 || before.ilog10() < now.ilog10()
}

/// Rows (of the input batch) the rule matched whose every window has already fired.
fn late_rows(state: &WindowState, selected: &Selection, time_col: usize) -> Vec<u32> {
    if state.closed_until == i64::MIN {
        return Vec::new();
    }
    let times = selected.rows.column(time_col).as_primitive::<TimestampNanosecondType>();
    selected.positions().zip(&selected.indices).filter(|(at, _)| state.is_late(times.value(*at))).map(|(_, &row)| row).collect()
}

fn evaluate_all(exprs: &[(String, PhysExpr)], batch: &RecordBatch) -> Result<Vec<ArrayRef>> {
    exprs.iter().map(|(_, e)| Ok(e.evaluate(batch)?.into_array(batch.num_rows())?)).collect()
}

/// An Arrow value as JSON: strings, numbers, booleans, RFC 3339 times, arrays; NULL as null.
pub fn scalar_to_json(v: &ScalarValue) -> Value {
    use ScalarValue as S;
    match v {
        S::Null => Value::Null,
        S::Boolean(b) => b.map_or(Value::Null, Value::Bool),
        S::Int8(x) => x.map_or(Value::Null, |x| x.into()),
        S::Int16(x) => x.map_or(Value::Null, |x| x.into()),
        S::Int32(x) => x.map_or(Value::Null, |x| x.into()),
        S::Int64(x) => x.map_or(Value::Null, |x| x.into()),
        S::UInt8(x) => x.map_or(Value::Null, |x| x.into()),
        S::UInt16(x) => x.map_or(Value::Null, |x| x.into()),
        S::UInt32(x) => x.map_or(Value::Null, |x| x.into()),
        S::UInt64(x) => x.map_or(Value::Null, |x| x.into()),
        S::Float32(x) => x.map_or(Value::Null, |x| serde_json::Number::from_f64(x as f64).map_or(Value::Null, Value::Number)),
        S::Float64(x) => x.map_or(Value::Null, |x| serde_json::Number::from_f64(x).map_or(Value::Null, Value::Number)),
        S::Utf8(s) | S::LargeUtf8(s) | S::Utf8View(s) => s.clone().map_or(Value::Null, Value::String),
        S::TimestampNanosecond(t, _) => t.map_or(Value::Null, |t| Value::String(format_nanos(t))),
        S::TimestampMicrosecond(t, _) => t.map_or(Value::Null, |t| Value::String(format_nanos(t.saturating_mul(1_000)))),
        S::TimestampMillisecond(t, _) => t.map_or(Value::Null, |t| Value::String(format_nanos(t.saturating_mul(1_000_000)))),
        S::TimestampSecond(t, _) => t.map_or(Value::Null, |t| Value::String(format_nanos(t.saturating_mul(1_000_000_000)))),
        S::List(arr) => list_to_json(arr.as_ref()),
        S::LargeList(arr) => list_to_json(arr.as_ref()),
        S::FixedSizeList(arr) => list_to_json(arr.as_ref()),
        other => Value::String(other.to_string()),
    }
}

fn list_to_json(arr: &dyn Array) -> Value {
    // A one-row list array: its single row's values.
    if arr.is_null(0) {
        return Value::Null;
    }
    let values = match arr.data_type() {
        datafusion::arrow::datatypes::DataType::List(_) => arr.as_list::<i32>().value(0),
        datafusion::arrow::datatypes::DataType::LargeList(_) => arr.as_list::<i64>().value(0),
        datafusion::arrow::datatypes::DataType::FixedSizeList(_, _) => arr.as_fixed_size_list().value(0),
        _ => return Value::Null,
    };
    Value::Array(
        (0..values.len()).map(|i| ScalarValue::try_from_array(&values, i).map(|v| scalar_to_json(&v)).unwrap_or(Value::Null)).collect(),
    )
}
