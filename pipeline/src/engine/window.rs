//! The keyed window operator of a windowed rule: DataFusion accumulators per (window, key),
//! fed batch by batch, fired when the watermark passes the window's end.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use anyhow::{Context, Result};
use datafusion::arrow::array::{Array, ArrayRef, AsArray, RecordBatch, RecordBatchOptions, TimestampNanosecondArray, UInt32Array};
use datafusion::arrow::compute::take;
use datafusion::arrow::datatypes::{Field, Schema, TimestampNanosecondType};
use datafusion::arrow::row::{RowConverter, SortField};
use datafusion::common::ScalarValue;
use datafusion::logical_expr::Accumulator;

use super::plan::{WindowKind, WindowedPlan};
use crate::alert::MAX_SAMPLE_IDS;

/// What the alert needs besides the rule's own aggregates.
#[derive(Clone)]
pub struct GroupMeta {
    pub first_seen: i64,
    pub last_seen: i64,
    pub count: u64,
    pub audit_ids: Vec<String>,
    pub cluster: Option<String>,
}

struct Group {
    accumulators: Vec<Box<dyn Accumulator>>,
    meta: GroupMeta,
    /// Its place in `by_recency`: newest event time, then a tie-breaking sequence number.
    recency: (i64, u64),
    /// Approximate bytes held (accumulators, key, metadata), for the state-size metric.
    bytes: usize,
    /// Fired early (the rule's `early: true`): it does not fire again when the window closes.
    fired_early: bool,
}

type GroupKey = (i64, Box<[u8]>);
/// aHash: the keys are row-encoded bytes hashed for every matching event; SipHash's DoS
/// resistance is kept by aHash's random keys at a fraction of the cost.
type Hasher = ahash::RandomState;

/// A window that fired: the aggregate row (group columns then aggregates) and its metadata.
pub struct Fired {
    pub batch: RecordBatch,
    pub window_starts: Vec<i64>,
    /// The group keys (row-encoded), parallel to `window_starts`.
    pub keys: Vec<Box<[u8]>>,
    pub metas: Vec<GroupMeta>,
}

pub struct WindowState {
    converter: RowConverter,
    groups: HashMap<GroupKey, Group, Hasher>,
    /// Window end → the groups ending then, so firing pops in order without a scan. An evicted
    /// group's entry stays until its window ends and is skipped then (removing it would mean
    /// a scan per eviction).
    by_end: BTreeMap<i64, Vec<GroupKey>>,
    /// SESSION rules: per key, the open sessions (start → newest event time).
    sessions: HashMap<Box<[u8]>, BTreeMap<i64, i64>, Hasher>,
    /// Groups by newest event time: the first one is evicted when the cap is reached.
    by_recency: BTreeMap<(i64, u64), GroupKey>,
    next_seq: u64,
    /// At most this many live groups; beyond, the least recently active one is dropped.
    max_groups: usize,
    pub evictions: u64,
    /// Sum of the groups' approximate sizes.
    pub bytes: usize,
    /// Windows ending at or before this have fired; their events arrive too late.
    pub closed_until: i64,
    pub late_events: u64,
    scratch: Vec<i64>,
}

/// Column positions in the input table of the values every alert carries.
#[derive(Clone, Copy)]
pub struct MetaColumns {
    pub event_time: usize,
    /// The table's event id (audit_id), if it has one.
    pub audit_id: Option<usize>,
    pub cluster: Option<usize>,
}

impl MetaColumns {
    /// Where `table`'s time, id and cluster columns are in `schema` (a rule's projected input,
    /// which always has the time column).
    pub fn of(table: &crate::tables::Table, schema: &Schema) -> MetaColumns {
        let idx = |n: &str| schema.index_of(n).ok();
        MetaColumns {
            event_time: idx(table.time_column).expect("every rule reads its table's time column"),
            audit_id: table.id_column.and_then(idx),
            cluster: idx(table.cluster_column),
        }
    }
}

/// Each aggregate's argument columns for `rows`, with its FILTER applied.
fn aggregate_inputs(args: &[Vec<ArrayRef>], filters: &[Option<ArrayRef>], rows: &[u32]) -> Result<Vec<Vec<ArrayRef>>> {
    let idx = UInt32Array::from(rows.to_vec());
    args.iter()
        .zip(filters)
        .map(|(args, f)| {
            let cols = args.iter().map(|a| take(a.as_ref(), &idx, None)).collect::<std::result::Result<Vec<_>, _>>()?;
            Ok(match f {
                Some(f) => {
                    let f = take(f.as_ref(), &idx, None)?;
                    let f = f.as_boolean();
                    cols.iter().map(|c| datafusion::arrow::compute::filter(c.as_ref(), f)).collect::<std::result::Result<Vec<_>, _>>()?
                }
                None => cols,
            })
        })
        .collect()
}

impl WindowState {
    pub fn new(plan: &WindowedPlan, input_schema: &Schema, max_groups: usize) -> Result<Self> {
        let fields = plan.keys.iter().map(|k| Ok(SortField::new(k.data_type(input_schema)?))).collect::<Result<Vec<_>>>()?;
        Ok(WindowState {
            converter: RowConverter::new(fields)?,
            groups: HashMap::default(),
            by_end: BTreeMap::new(),
            by_recency: BTreeMap::new(),
            sessions: HashMap::default(),
            next_seq: 0,
            max_groups: max_groups.max(1),
            evictions: 0,
            bytes: 0,
            closed_until: i64::MIN,
            late_events: 0,
            scratch: Vec::new(),
        })
    }

    /// The start of the oldest window holding state, if any.
    pub fn oldest_start(&self, plan: &WindowedPlan) -> Option<i64> {
        if plan.window.kind == WindowKind::Session {
            // Checked once per checkpoint, not per event: a scan over live keys is fine.
            return self.sessions.values().filter_map(|s| s.keys().next().copied()).min();
        }
        self.by_end.keys().next().map(|end| end - plan.window.width)
    }

    /// Whether an event at `t` comes after every window it belongs to has fired: the newest
    /// TUMBLE/HOP window holding `t` ends last, and a session holding `t` fires no later than
    /// `t` + gap.
    pub fn is_late(&self, plan: &WindowedPlan, t: i64) -> bool {
        let w = plan.window;
        let last_end = match w.kind {
            WindowKind::Session => t.saturating_add(w.width),
            WindowKind::Tumble | WindowKind::Hop => t - t.rem_euclid(w.slide) + w.width,
        };
        last_end <= self.closed_until
    }

    pub fn live_groups(&self) -> usize {
        self.groups.len()
    }

    /// Adds the rows of `batch` that passed the WHERE predicate (`mask`); returns the groups
    /// it touched.
    /// Takes in the rows `within` names of `batch` (every row when None): each row goes into
    /// its key's windows. Returns the groups it touched.
    pub fn update(
        &mut self,
        plan: &WindowedPlan,
        batch: &RecordBatch,
        within: Option<&[u32]>,
        meta_cols: MetaColumns,
    ) -> Result<Vec<GroupKey>> {
        let n = batch.num_rows();
        let every_row: Vec<u32>;
        let selected: &[u32] = match within {
            Some(rows) => rows,
            None => {
                every_row = (0..n as u32).collect();
                &every_row
            }
        };
        if selected.is_empty() {
            return Ok(Vec::new());
        }
        let keys = plan.keys.iter().map(|k| k.evaluate(batch)?.into_array(n)).collect::<datafusion::common::Result<Vec<_>>>()?;
        let rows = self.converter.convert_columns(&keys)?;
        let args: Vec<Vec<ArrayRef>> = plan
            .aggregates
            .iter()
            .map(|a| a.args.iter().map(|e| e.evaluate(batch)?.into_array(n)).collect::<datafusion::common::Result<Vec<_>>>())
            .collect::<datafusion::common::Result<_>>()?;
        let agg_filters: Vec<Option<ArrayRef>> = plan
            .aggregates
            .iter()
            .map(|a| a.filter.as_ref().map(|f| f.evaluate(batch)?.into_array(n)).transpose())
            .collect::<datafusion::common::Result<_>>()?;
        let times = batch.column(meta_cols.event_time).as_primitive::<TimestampNanosecondType>().clone();
        let ids = meta_cols.audit_id.map(|c| batch.column(c).as_string::<i32>().clone());
        let clusters = meta_cols.cluster.map(|c| batch.column(c).as_string::<i32>().clone());

        // Rows of this batch per group, in arrival order.
        let mut touched: HashMap<GroupKey, Vec<u32>, Hasher> = HashMap::default();
        if plan.window.kind == WindowKind::Session {
            self.place_in_sessions(plan, &times, &rows, selected, &mut touched)?;
        } else {
            // Rows by key first (borrowed keys, no allocation per row), then each key's rows
            // into their windows.
            let mut by_key: HashMap<&[u8], Vec<u32>, Hasher> = HashMap::default();
            for &i in selected {
                if self.is_late(plan, times.value(i as usize)) {
                    self.late_events += 1;
                    continue;
                }
                by_key.entry(rows.row(i as usize).data()).or_default().push(i);
            }
            for (key, key_rows) in by_key {
                let mut windows: Vec<(i64, Vec<u32>)> = Vec::new();
                for &i in &key_rows {
                    plan.window.starts(times.value(i as usize), &mut self.scratch);
                    for &start in &self.scratch {
                        // Older windows of a HOP may have fired while newer ones are still open.
                        if start + plan.window.width > self.closed_until {
                            match windows.iter_mut().find(|(s, _)| *s == start) {
                                Some((_, w)) => w.push(i),
                                None => windows.push((start, vec![i])),
                            }
                        }
                    }
                }
                for (start, w) in windows {
                    touched.insert((start, key.into()), w);
                }
            }
        }
        // A key's rows usually fall in the same overlapping HOP windows: their aggregate inputs
        // are taken once and fed to each of those windows.
        let mut inputs: HashMap<&[u32], Vec<Vec<ArrayRef>>, Hasher> = HashMap::default();
        let mut keys_touched = Vec::with_capacity(touched.len());
        for (key, indices) in &touched {
            if !self.groups.contains_key(key) {
                if self.groups.len() >= self.max_groups {
                    self.evict_one();
                }
                let accumulators = plan.aggregates.iter().map(new_accumulator).collect::<datafusion::common::Result<Vec<_>>>()?;
                if plan.window.kind != WindowKind::Session {
                    // Sessions are indexed by place_in_sessions: their end moves.
                    self.by_end.entry(key.0 + plan.window.width).or_default().push(key.clone());
                }
                let meta = GroupMeta { first_seen: i64::MAX, last_seen: i64::MIN, count: 0, audit_ids: Vec::new(), cluster: None };
                let group = Group { accumulators, meta, recency: (i64::MIN, 0), bytes: 0, fired_early: false };
                self.groups.insert(key.clone(), group);
            }
            let group = self.groups.get_mut(key).expect("inserted above");
            let cols = match inputs.entry(indices.as_slice()) {
                std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::hash_map::Entry::Vacant(e) => e.insert(aggregate_inputs(&args, &agg_filters, indices)?),
            };
            for (acc, cols) in group.accumulators.iter_mut().zip(cols.iter()) {
                acc.update_batch(cols)?;
            }
            let m = &mut group.meta;
            for &i in indices {
                let i = i as usize;
                let t = times.value(i);
                m.first_seen = m.first_seen.min(t);
                m.last_seen = m.last_seen.max(t);
                m.count += 1;
                if let Some(ids) = &ids {
                    if m.audit_ids.len() < MAX_SAMPLE_IDS && ids.is_valid(i) {
                        let id = ids.value(i);
                        if !m.audit_ids.iter().any(|x| x == id) {
                            m.audit_ids.push(id.to_string());
                        }
                    }
                }
                if m.cluster.is_none() {
                    m.cluster = clusters.as_ref().filter(|c| c.is_valid(i)).map(|c| c.value(i).to_string());
                }
            }
            // Re-rank by newest event time, and re-measure.
            self.by_recency.remove(&group.recency);
            group.recency = (m.last_seen, self.next_seq);
            self.next_seq += 1;
            self.by_recency.insert(group.recency, key.clone());
            let bytes = group_bytes(group, key);
            self.bytes = self.bytes + bytes - group.bytes;
            group.bytes = bytes;
            keys_touched.push(key.clone());
        }
        Ok(keys_touched)
    }

    /// SESSION rules: puts each row in its key's session (an event within the gap of a session
    /// joins it; one that bridges two merges them), merges the groups of sessions that became
    /// one, and re-indexes the sessions' firing times (newest event + gap).
    fn place_in_sessions(
        &mut self,
        plan: &WindowedPlan,
        times: &TimestampNanosecondArray,
        rows: &datafusion::arrow::row::Rows,
        selected: &[u32],
        touched: &mut HashMap<GroupKey, Vec<u32>, Hasher>,
    ) -> Result<()> {
        let gap = plan.window.width;
        let mut by_key: HashMap<Box<[u8]>, Vec<u32>, Hasher> = HashMap::default();
        for &i in selected {
            if self.is_late(plan, times.value(i as usize)) {
                self.late_events += 1;
                continue;
            }
            by_key.entry(rows.row(i as usize).as_ref().into()).or_default().push(i);
        }
        for (key, indices) in by_key {
            let sessions = self.sessions.entry(key.clone()).or_default();
            let before: Vec<(i64, i64)> = sessions.iter().map(|(&s, &e)| (s, e)).collect();
            for &i in &indices {
                let t = times.value(i as usize);
                // Sessions t joins: start - gap <= t <= end + gap. They are disjoint and more
                // than a gap apart, so they are the ones starting at or before t + gap whose
                // end reaches t - gap.
                let joins: Vec<(i64, i64)> = sessions
                    .range(..=t.saturating_add(gap))
                    .rev()
                    .take_while(|(_, &e)| e.saturating_add(gap) >= t)
                    .map(|(&s, &e)| (s, e))
                    .collect();
                let (mut start, mut end) = (t, t);
                for (s, e) in joins {
                    sessions.remove(&s);
                    start = start.min(s);
                    end = end.max(e);
                }
                sessions.insert(start, end);
            }
            let after: Vec<(i64, i64)> = sessions.iter().map(|(&s, &e)| (s, e)).collect();
            // Re-index firing times, and fold groups of sessions that merged (or whose start
            // moved earlier) into the session that holds them now.
            for &(s, e) in &before {
                if let Some(v) = self.by_end.get_mut(&e.saturating_add(gap)) {
                    v.retain(|k| !(k.0 == s && k.1 == key));
                    if v.is_empty() {
                        self.by_end.remove(&e.saturating_add(gap));
                    }
                }
                let Some(&(target, _)) = after.iter().rev().find(|(start, _)| *start <= s) else {
                    continue;
                };
                if target != s {
                    if let Some(group) = self.groups.remove(&(s, key.clone())) {
                        self.by_recency.remove(&group.recency);
                        self.bytes -= group.bytes;
                        self.absorb((target, key.clone()), group)?;
                    }
                }
            }
            for &(s, e) in &after {
                self.by_end.entry(e.saturating_add(gap)).or_default().push((s, key.clone()));
            }
            for &i in &indices {
                let t = times.value(i as usize);
                if let Some(&(start, _)) = after.iter().rev().find(|(start, _)| *start <= t) {
                    touched.entry((start, key.clone())).or_default().push(i);
                }
            }
        }
        Ok(())
    }

    /// Moves `group` under `key`, merging it into the group there if there is one.
    fn absorb(&mut self, key: GroupKey, mut group: Group) -> Result<()> {
        let Some(dst) = self.groups.get_mut(&key) else {
            group.recency = (group.meta.last_seen, self.next_seq);
            self.next_seq += 1;
            self.by_recency.insert(group.recency, key.clone());
            self.bytes += group.bytes;
            self.groups.insert(key, group);
            return Ok(());
        };
        for (d, src) in dst.accumulators.iter_mut().zip(group.accumulators.iter_mut()) {
            let state = src.state()?.iter().map(|v| v.to_array()).collect::<datafusion::common::Result<Vec<_>>>()?;
            d.merge_batch(&state)?;
        }
        let (m, o) = (&mut dst.meta, group.meta);
        m.first_seen = m.first_seen.min(o.first_seen);
        m.last_seen = m.last_seen.max(o.last_seen);
        m.count += o.count;
        for id in o.audit_ids {
            if m.audit_ids.len() < MAX_SAMPLE_IDS && !m.audit_ids.contains(&id) {
                m.audit_ids.push(id);
            }
        }
        m.cluster = m.cluster.take().or(o.cluster);
        dst.fired_early |= group.fired_early;
        let bytes = group_bytes(dst, &key);
        self.bytes = self.bytes + bytes - dst.bytes;
        dst.bytes = bytes;
        Ok(())
    }

    /// Forgets the session a fired or evicted group stood for.
    fn forget_session(&mut self, key: &GroupKey) {
        if let Some(s) = self.sessions.get_mut(&key.1) {
            s.remove(&key.0);
            if s.is_empty() {
                self.sessions.remove(&key.1);
            }
        }
    }

    /// Drops the group whose newest event is oldest: state stays bounded, at the price of
    /// that group's alert (counted in `evictions`).
    fn evict_one(&mut self) {
        if let Some((_, key)) = self.by_recency.pop_first() {
            if let Some(g) = self.groups.remove(&key) {
                self.bytes -= g.bytes;
            }
            self.forget_session(&key);
            self.evictions += 1;
        }
    }

    /// The aggregate rows of `keys` (groups still open and not yet fired early), without
    /// removing them: for rules that fire as soon as HAVING holds.
    pub fn peek(&mut self, plan: &WindowedPlan, keys: &[GroupKey]) -> Result<Option<Fired>> {
        let mut items = Vec::with_capacity(keys.len());
        for key in keys {
            let Some(group) = self.groups.get_mut(key).filter(|g| !g.fired_early) else {
                continue;
            };
            let values = group.accumulators.iter_mut().map(|a| a.evaluate()).collect::<datafusion::common::Result<Vec<_>>>()?;
            items.push((key.clone(), values, group.meta.clone()));
        }
        self.assemble(plan, items)
    }

    /// Marks a group as fired early: it will not fire again when its window closes.
    pub fn mark_fired_early(&mut self, window_start: i64, key: &[u8]) {
        if let Some(g) = self.groups.get_mut(&(window_start, key.into())) {
            g.fired_early = true;
        }
    }

    /// Fires every window ending at or before `watermark` (all of them for `i64::MAX`).
    pub fn fire(&mut self, plan: &WindowedPlan, watermark: i64) -> Result<Option<Fired>> {
        if watermark > self.closed_until {
            self.closed_until = watermark;
        }
        let mut due = Vec::new();
        while let Some(entry) = self.by_end.first_entry() {
            if *entry.key() > watermark {
                break;
            }
            let mut keys = entry.remove();
            keys.sort();
            due.extend(keys);
        }
        let mut items = Vec::with_capacity(due.len());
        for key in due {
            let Some(mut group) = self.groups.remove(&key) else {
                continue; // evicted
            };
            self.forget_session(&key);
            self.by_recency.remove(&group.recency);
            self.bytes -= group.bytes;
            if group.fired_early {
                continue;
            }
            let values = group.accumulators.iter_mut().map(|a| a.evaluate()).collect::<datafusion::common::Result<Vec<_>>>()?;
            items.push((key, values, group.meta));
        }
        self.assemble(plan, items)
    }

    /// The aggregate batch (group columns then aggregates, as HAVING and SELECT expect) of
    /// evaluated groups.
    fn assemble(&self, plan: &WindowedPlan, items: Vec<(GroupKey, Vec<ScalarValue>, GroupMeta)>) -> Result<Option<Fired>> {
        if items.is_empty() {
            return Ok(None);
        }
        let parser = self.converter.parser();
        let mut window_starts = Vec::with_capacity(items.len());
        let mut values: Vec<Vec<ScalarValue>> = vec![Vec::with_capacity(items.len()); plan.aggregates.len()];
        let mut metas = Vec::with_capacity(items.len());
        let mut owned_keys = Vec::with_capacity(items.len());
        for ((start, key), vals, meta) in items {
            for (j, v) in vals.into_iter().enumerate() {
                values[j].push(v);
            }
            window_starts.push(start);
            metas.push(meta);
            owned_keys.push(key);
        }
        let key_rows: Vec<_> = owned_keys.iter().map(|k| parser.parse(k)).collect();
        let key_columns = self.converter.convert_rows(key_rows)?;
        let n = window_starts.len();
        let starts: ArrayRef = Arc::new(TimestampNanosecondArray::from(window_starts.clone()).with_timezone("UTC"));
        let mut columns: Vec<ArrayRef> = Vec::new();
        let mut keys_iter = key_columns.into_iter();
        let groups = plan.keys.len() + 1;
        for g in 0..groups {
            if g == plan.window_pos {
                columns.push(starts.clone());
            } else {
                columns.push(keys_iter.next().context("key column count")?);
            }
        }
        for v in values {
            columns.push(ScalarValue::iter_to_array(v)?);
        }
        // Names from the aggregate's schema; types from the values (accumulators may return a
        // type with other nullability than the logical schema says).
        let fields: Vec<Field> =
            plan.aggregate_schema.fields().iter().zip(&columns).map(|(f, c)| Field::new(f.name(), c.data_type().clone(), true)).collect();
        let batch =
            RecordBatch::try_new_with_options(Arc::new(Schema::new(fields)), columns, &RecordBatchOptions::new().with_row_count(Some(n)))?;
        Ok(Some(Fired { batch, window_starts, keys: owned_keys, metas }))
    }
}

/// Approximate bytes a group holds: its accumulators, its key, its sampled audit ids.
fn group_bytes(g: &Group, key: &GroupKey) -> usize {
    let ids: usize = g.meta.audit_ids.iter().map(|id| id.len() + 24).sum();
    std::mem::size_of::<Group>() + key.1.len() + ids + g.accumulators.iter().map(|a| a.size()).sum::<usize>()
}

fn new_accumulator(a: &super::plan::Aggregate) -> datafusion::common::Result<Box<dyn Accumulator>> {
    if a.distinct_strings {
        return Ok(Box::new(super::functions::DistinctStrings::default()));
    }
    if let Some((distinct, t)) = &a.bounded_array_agg {
        return Ok(Box::new(super::functions::BoundedArrayAgg::new(*distinct, t.clone())));
    }
    a.expr.create_accumulator()
}
