//! Sequence rules: ordered steps by the same key within a time span ("a privileged pod is
//! created, then exec'd into within 10 minutes"), and absence ("A not followed by B within T").
//!
//! Each step is a single-event query planned like any rule, over any table: "exec into a pod
//! (kube_audit), then a miner's name in that pod's log (container_log)" is one sequence whose
//! steps select the same key columns under the same names. Per key the operator keeps the
//! recent occurrences of each step (a few per step, never the events themselves), so events may
//! arrive in any order within the allowed lateness: a chain is looked for whenever a step
//! occurs, in event-time order. Occurrences older than the watermark minus the span can no
//! longer be part of a chain and are dropped.

use std::collections::HashMap;

use anyhow::{bail, Context, Result};
use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::arrow::datatypes::TimestampNanosecondType;
use datafusion::common::ScalarValue;
use datafusion::prelude::SessionContext;
use serde_json::{Map, Value};

use super::first_seen::FirstSeen;
use super::plan::{plan_rule, RulePlan, Shape, SharedSelections};
use super::window::MetaColumns;
use super::{evaluate_all, scalar_to_json, RuleStats};
use crate::alert::{alert_id, Alert};
use crate::decode::time::format_nanos;
use crate::rules::{Lists, Rule, SequenceSpec};

/// Occurrences kept per step and key: enough for bursts, bounded whatever the input.
const MAX_OCCURRENCES: usize = 16;

#[derive(Clone)]
struct Occurrence {
    time: i64,
    audit_id: Option<String>,
    cluster: Option<String>,
    fields: Map<String, Value>,
}

struct Step {
    plan: RulePlan,
    /// Only rows whose value is new for their entity are occurrences of this step.
    first_seen: Option<FirstSeen>,
}

pub struct CompiledSequence {
    pub rule: Rule,
    spec: SequenceSpec,
    steps: Vec<Step>,
    pub lateness: i64,
    /// Key (the `by` values as JSON) → occurrences per step.
    state: HashMap<String, Vec<Vec<Occurrence>>>,
    /// The earliest `time + within` held: until the watermark reaches it, `advance` has nothing
    /// to do (so it does not scan every key on every batch).
    next_due: i64,
    /// The watermark state was last pruned to: an occurrence older than this arrived too late
    /// to be sure of its partners (they may have been dropped).
    pruned_to: i64,
    /// Late occurrences: counted in `stats.late_events`, rows kept for the late-events output.
    late_rows: Vec<u32>,
    pub stats: RuleStats,
}

impl CompiledSequence {
    pub fn compile(rule: &Rule, spec: &SequenceSpec, ctx: &SessionContext, lists: &Lists, lateness: i64) -> Result<Self> {
        if spec.steps.len() < 2 || spec.steps.len() > 3 {
            bail!("a sequence has 2 or 3 steps (got {})", spec.steps.len());
        }
        if spec.absent && spec.steps.len() != 2 {
            bail!("absent: true takes exactly 2 steps: the first, and the one that must follow it");
        }
        if spec.by.is_empty() {
            bail!("a sequence needs `by`: the columns every step shares (the same pod, the same user…)");
        }
        let mut steps = Vec::new();
        for (i, step) in spec.steps.iter().enumerate() {
            // Each step must give the key columns; planned as a single-event rule.
            let step_rule = Rule { query: step.query().to_string(), entities: spec.by.clone(), ..rule.clone() };
            let plan = plan_rule(&step_rule, ctx, lists).with_context(|| format!("step {}", i + 1))?;
            if !matches!(plan.shape, Shape::SingleEvent) {
                bail!("step {}: a step is a single-event query (no GROUP BY)", i + 1);
            }
            let columns: Vec<String> = plan.projection.iter().map(|(n, _)| n.clone()).collect();
            let first_seen =
                step.first_seen().map(|f| FirstSeen::new(f, &columns)).transpose().with_context(|| format!("step {}", i + 1))?;
            steps.push(Step { plan, first_seen });
        }
        let names: Vec<String> = steps.iter().flat_map(|s| s.plan.projection.iter().map(|(n, _)| n.clone())).collect();
        if let Some(missing) = rule.entities.iter().find(|e| !names.contains(e)) {
            bail!("entity {missing:?} is not a column of any step's SELECT list");
        }
        Ok(CompiledSequence {
            rule: rule.clone(),
            spec: spec.clone(),
            steps,
            lateness,
            state: HashMap::new(),
            next_due: i64::MAX,
            pruned_to: i64::MIN,
            late_rows: Vec::new(),
            stats: RuleStats::default(),
        })
    }

    /// The first-sighting histories of the steps that have one: rule id, step index, history.
    pub fn histories(&mut self) -> impl Iterator<Item = (&str, usize, &mut FirstSeen)> + '_ {
        let id = self.rule.id.as_str();
        self.steps.iter_mut().enumerate().filter_map(move |(i, s)| s.first_seen.as_mut().map(|f| (id, i, f)))
    }

    /// Counters, with the live keys and the first-sighting state included.
    pub fn current_stats(&self) -> RuleStats {
        let mut st = self.stats.clone();
        st.live_groups = self.state.len();
        for f in self.steps.iter().filter_map(|s| s.first_seen.as_ref()) {
            st.live_groups += f.live_pairs();
            st.state_bytes += f.bytes;
            st.evictions += f.evictions;
        }
        st
    }

    /// The watermark state was last pruned to.
    pub fn pruned_to(&self) -> i64 {
        self.pruned_to
    }

    /// Rows (of the last batch processed) that arrived too late; see `pruned_to`.
    pub fn take_late_rows(&mut self) -> Vec<u32> {
        std::mem::take(&mut self.late_rows)
    }

    /// The oldest occurrence still held: events before it are no longer needed.
    pub fn oldest(&self) -> Option<i64> {
        self.state.values().flatten().flatten().map(|o| o.time).min()
    }

    /// Adds the batch's occurrences of every step that reads `table` and emits the chains they
    /// complete. [`CompiledSequence::advance`] then drops what the watermark made useless.
    ///
    /// An occurrence older than the watermark state was pruned to is late: it is counted and
    /// its row kept for the late-events output. A late occurrence still completes chains (a
    /// chain found is real; one may be missed), but a late first step of an absence rule is
    /// not held: its second step may have come and gone, and alerting on it could be false.
    pub fn process(&mut self, table: &str, batch: &RecordBatch, shared: &mut SharedSelections, alerts: &mut Vec<Alert>) -> Result<()> {
        self.late_rows.clear();
        for k in 0..self.steps.len() {
            if self.steps[k].plan.table.name != table {
                continue;
            }
            for (row, key, occ) in self.occurrences(k, batch, shared)? {
                self.stats.matches += 1;
                let late = occ.time < self.pruned_to;
                if late {
                    self.stats.late_events += 1;
                    self.late_rows.push(row);
                    if self.spec.absent && k == 0 {
                        continue;
                    }
                }
                self.add(key, k, occ, alerts);
            }
        }
        self.late_rows.sort_unstable();
        self.late_rows.dedup();
        Ok(())
    }

    /// The step's occurrences in the batch: row index, key and occurrence.
    fn occurrences(&mut self, k: usize, full: &RecordBatch, shared: &mut SharedSelections) -> Result<Vec<(u32, String, Occurrence)>> {
        let Step { plan, first_seen } = &mut self.steps[k];
        let (rows, indices) = match &plan.predicate {
            Some(p) => {
                let s = p.select(full, &plan.columns, &plan.input_schema, shared, false)?;
                (s.rows, s.indices)
            }
            None => (full.project(&plan.columns)?, (0..full.num_rows() as u32).collect()),
        };
        if rows.num_rows() == 0 {
            return Ok(Vec::new());
        }
        let columns = evaluate_all(&plan.projection, &rows)?;
        let meta = MetaColumns::of(&plan.table, &plan.input_schema);
        let times = rows.column(meta.event_time).as_primitive::<TimestampNanosecondType>();
        let ids = meta.audit_id.map(|c| rows.column(c).as_string::<i32>().clone());
        let clusters = meta.cluster.map(|c| rows.column(c).as_string::<i32>().clone());
        let names: Vec<String> = plan.projection.iter().map(|(n, _)| n.clone()).collect();
        let mut out = Vec::with_capacity(rows.num_rows());
        for i in 0..rows.num_rows() {
            if let Some(history) = first_seen.as_mut() {
                if !history.observe_row(&names, &columns, i, times.value(i))? {
                    continue;
                }
            }
            let mut fields = Map::new();
            for ((name, _), col) in plan.projection.iter().zip(&columns) {
                fields.insert(name.clone(), scalar_to_json(&ScalarValue::try_from_array(col, i)?));
            }
            let key: Vec<&Value> = self.spec.by.iter().map(|b| fields.get(b).unwrap_or(&Value::Null)).collect();
            if key.iter().all(|v| v.is_null()) {
                continue; // nothing to correlate on
            }
            let key = serde_json::to_string(&key)?;
            let valid =
                |a: &Option<datafusion::arrow::array::StringArray>| a.as_ref().filter(|a| a.is_valid(i)).map(|a| a.value(i).to_string());
            out.push((indices[i], key, Occurrence { time: times.value(i), audit_id: valid(&ids), cluster: valid(&clusters), fields }));
        }
        Ok(out)
    }

    fn add(&mut self, key: String, k: usize, occ: Occurrence, alerts: &mut Vec<Alert>) {
        let steps = self.steps.len();
        let within = self.spec.within;
        self.next_due = self.next_due.min(occ.time.saturating_add(within));
        let per_step = self.state.entry(key).or_insert_with(|| vec![Vec::new(); steps]);
        if self.spec.absent {
            if k == 0 {
                // Already followed (the second step arrived first)? Then nothing is pending.
                if !per_step[1].iter().any(|b| b.time >= occ.time && b.time - occ.time <= within) {
                    push_bounded(&mut per_step[0], occ);
                }
            } else {
                per_step[0].retain(|a| !(occ.time >= a.time && occ.time - a.time <= within));
                push_bounded(&mut per_step[1], occ);
            }
            return;
        }
        // A chain with this occurrence at step k: earlier steps before it, later ones after,
        // all within `within` of the first step.
        let found = chain(per_step, k, &occ, within);
        if let Some(chain) = &found {
            // The first step's occurrence is used up: the same start does not alert twice.
            let first = &chain[0];
            per_step[0].retain(|o| !(o.time == first.time && o.audit_id == first.audit_id));
        }
        if found.is_none() || k != 0 {
            push_bounded(&mut per_step[k], occ);
        }
        if let Some(chain) = found {
            let alert = self.alert(&chain);
            alerts.push(alert);
        }
    }

    /// Drops occurrences the watermark made useless; for absence, alerts on first steps whose
    /// span has passed without the second.
    pub fn advance(&mut self, watermark: i64, alerts: &mut Vec<Alert>) {
        self.pruned_to = self.pruned_to.max(watermark);
        if watermark < self.next_due {
            return;
        }
        let within = self.spec.within;
        let mut expired_firsts = Vec::new();
        self.state.retain(|_, per_step| {
            if self.spec.absent {
                per_step[0].retain(|a| {
                    let due = a.time.saturating_add(within) <= watermark;
                    if due {
                        expired_firsts.push(a.clone());
                    }
                    !due
                });
                per_step[1].retain(|b| b.time.saturating_add(within) > watermark);
            } else {
                // A new event is no older than the watermark, and a chain spans at most
                // `within`: anything older than that can no longer be in one.
                for occs in per_step.iter_mut() {
                    occs.retain(|o| o.time.saturating_add(within) >= watermark);
                }
            }
            per_step.iter().any(|o| !o.is_empty())
        });
        self.next_due = self.state.values().flatten().flatten().map(|o| o.time.saturating_add(within)).min().unwrap_or(i64::MAX);
        expired_firsts.sort_by_key(|a| a.time);
        for a in expired_firsts {
            let alert = self.alert(&[a]);
            alerts.push(alert);
        }
    }

    fn alert(&mut self, chain: &[Occurrence]) -> Alert {
        let mut fields = Map::new();
        for o in chain {
            for (k, v) in &o.fields {
                fields.entry(k.clone()).or_insert_with(|| v.clone());
            }
        }
        let entities: Map<String, Value> =
            self.rule.entities.iter().map(|e| (e.clone(), fields.get(e).cloned().unwrap_or(Value::Null))).collect();
        let first = &chain[0];
        let last = chain.last().expect("a chain has a step");
        let anchor = first.audit_id.clone().unwrap_or_else(|| first.time.to_string());
        self.stats.alerts += 1;
        let r = &self.rule;
        Alert {
            id: alert_id(&r.id, &entities, &anchor),
            rule_id: r.id.clone(),
            rule_title: r.title.clone(),
            severity: r.severity.as_str().to_string(),
            mitre: r.mitre.clone(),
            tags: r.tags.clone(),
            first_seen: format_nanos(first.time),
            last_seen: format_nanos(last.time),
            window_start: None,
            // For absence, the end of the span in which the second step never came.
            window_end: self.spec.absent.then(|| format_nanos(first.time.saturating_add(self.spec.within))),
            count: chain.len() as u64,
            entities,
            cluster: chain.iter().find_map(|o| o.cluster.clone()),
            audit_ids: chain.iter().filter_map(|o| o.audit_id.clone()).collect(),
            fields,
            detected_at: format_nanos(chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default()),
            last_seen_nanos: last.time,
        }
    }
}

/// Keeps the newest `MAX_OCCURRENCES` by event time.
fn push_bounded(occs: &mut Vec<Occurrence>, occ: Occurrence) {
    occs.push(occ);
    if occs.len() > MAX_OCCURRENCES {
        let oldest = (0..occs.len()).min_by_key(|&i| occs[i].time).expect("not empty");
        occs.remove(oldest);
    }
}

/// A chain of occurrences, one per step in order of event time, with `occ` at step `k` and the
/// last no more than `within` after the first. Prefers, for the first step, the latest start
/// (the tightest chain).
fn chain(per_step: &[Vec<Occurrence>], k: usize, occ: &Occurrence, within: i64) -> Option<Vec<Occurrence>> {
    let n = per_step.len();
    let mut best: Option<Vec<Occurrence>> = None;
    let mut current: Vec<Occurrence> = Vec::with_capacity(n);
    fn walk(
        per_step: &[Vec<Occurrence>],
        k: usize,
        occ: &Occurrence,
        within: i64,
        i: usize,
        current: &mut Vec<Occurrence>,
        best: &mut Option<Vec<Occurrence>>,
    ) {
        if i == per_step.len() {
            let span = current.last().expect("steps").time - current[0].time;
            if span <= within && best.as_ref().is_none_or(|b| current[0].time > b[0].time) {
                *best = Some(current.clone());
            }
            return;
        }
        let after = current.last().map_or(i64::MIN, |o| o.time);
        let candidates: Vec<&Occurrence> = if i == k { vec![occ] } else { per_step[i].iter().collect() };
        for c in candidates {
            if c.time >= after {
                current.push(c.clone());
                walk(per_step, k, occ, within, i + 1, current, best);
                current.pop();
            }
        }
    }
    walk(per_step, k, occ, within, 0, &mut current, &mut best);
    debug_assert!(best.as_ref().is_none_or(|b| b.len() == n));
    best
}
