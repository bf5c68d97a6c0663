//! The aggregate state of many groups at once, column by column.
//!
//! A windowed rule's groups are slots (`u32`) into these columns, fed once per batch with
//! `(row, slot)` pairs: the shape of DataFusion's `GroupsAccumulator`, with no allocation, no
//! `take` and no dynamic call per group. Unlike `GroupsAccumulator`, any slot can be evaluated,
//! merged into another and freed on its own, which firing windows one at a time, combining the
//! panes of a HOP window and merging sessions need.
//!
//! `count`, `sum`, `min`, `max`, `avg` over integers, times, floats and strings,
//! `count(DISTINCT string)` and `array_agg([DISTINCT] string)` are native; any other aggregate
//! keeps one DataFusion `Accumulator` per slot (correct, slower).

use std::collections::HashSet;
use std::hash::BuildHasherDefault;
use std::sync::Arc;

use anyhow::Result;
use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Float64Array, Int64Array, ListBuilder, StringArray, StringBuilder, UInt32Array,
};
use datafusion::arrow::compute::{cast, take};
use datafusion::arrow::datatypes::{ArrowPrimitiveType, DataType, Field, Float64Type, Int64Type};
use datafusion::common::ScalarValue;
use datafusion::logical_expr::Accumulator;

use super::functions::{hash128, BoundedArrayAgg, ARRAY_AGG_LIMIT};
use super::plan::Aggregate;
use crate::decode::dedup::AlreadyHashed;

/// Rows of a batch paired with the slot each goes into.
pub type Pairs = [(u32, u32)];

/// One aggregate of a rule, for every slot.
pub struct AggColumn {
    state: State,
    /// Approximate heap bytes held beyond the fixed per-slot size (strings, sets, boxed
    /// accumulators), for the state-size metric.
    pub heap: usize,
}

enum State {
    /// `count(x)` (`count(*)` is `count(1)`): rows where x is not NULL.
    Count(Vec<i64>),
    /// `sum` of signed integers (Int64 out, wrapping as DataFusion's does not: it errors; a
    /// sum past 2^63 is not a realistic rule).
    SumInt {
        sum: Vec<i64>,
        seen: Vec<bool>,
    },
    SumFloat {
        sum: Vec<f64>,
        seen: Vec<bool>,
    },
    Avg {
        sum: Vec<f64>,
        n: Vec<u64>,
    },
    /// `min`/`max` of integers and times, kept as i64 and cast back to `out` at the end.
    MinMaxInt {
        v: Vec<i64>,
        seen: Vec<bool>,
        max: bool,
        out: DataType,
    },
    MinMaxFloat {
        v: Vec<f64>,
        seen: Vec<bool>,
        max: bool,
        out: DataType,
    },
    MinMaxStr {
        v: Vec<Option<Box<str>>>,
        max: bool,
        out: DataType,
    },
    /// `count(DISTINCT string)`: 128-bit hashes of the values, as [`hash128`] explains.
    Distinct(Vec<DistinctSet>),
    /// `array_agg([DISTINCT] string)`: the first [`ARRAY_AGG_LIMIT`] values in arrival order.
    ArrayAggStr {
        v: Vec<Vec<Box<str>>>,
        distinct: bool,
        item: DataType,
    },
    /// Anything else: one DataFusion accumulator per slot, made on first use.
    Boxed {
        aggregate: Arc<dyn Fn() -> datafusion::common::Result<Box<dyn Accumulator>> + Send + Sync>,
        v: Vec<Option<Box<dyn Accumulator>>>,
    },
}

/// A group's distinct values (as hashes): inline while small, a hash set once large.
#[derive(Default, Clone)]
pub enum DistinctSet {
    #[default]
    Empty,
    One(u128),
    Few(Vec<u128>),
    Many(HashSet<u128, BuildHasherDefault<AlreadyHashed>>),
}

/// Past this many values a set is hashed rather than scanned.
const FEW: usize = 16;

impl DistinctSet {
    /// Adds `h`; returns the heap bytes it grew by.
    fn insert(&mut self, h: u128) -> usize {
        match self {
            DistinctSet::Empty => {
                *self = DistinctSet::One(h);
                0
            }
            DistinctSet::One(x) if *x == h => 0,
            DistinctSet::One(x) => {
                let v = vec![*x, h];
                let bytes = v.capacity() * 16;
                *self = DistinctSet::Few(v);
                bytes
            }
            DistinctSet::Few(v) => {
                if v.contains(&h) {
                    return 0;
                }
                let before = v.capacity();
                if v.len() < FEW {
                    v.push(h);
                    return (v.capacity() - before) * 16;
                }
                let mut set: HashSet<u128, BuildHasherDefault<AlreadyHashed>> = v.iter().copied().collect();
                set.insert(h);
                let bytes = set.capacity() * 17;
                *self = DistinctSet::Many(set);
                bytes.saturating_sub(before * 16)
            }
            DistinctSet::Many(s) => {
                let before = s.capacity();
                s.insert(h);
                (s.capacity() - before) * 17
            }
        }
    }

    fn len(&self) -> usize {
        match self {
            DistinctSet::Empty => 0,
            DistinctSet::One(_) => 1,
            DistinctSet::Few(v) => v.len(),
            DistinctSet::Many(s) => s.len(),
        }
    }

    fn heap(&self) -> usize {
        match self {
            DistinctSet::Empty | DistinctSet::One(_) => 0,
            DistinctSet::Few(v) => v.capacity() * 16,
            DistinctSet::Many(s) => s.capacity() * 17,
        }
    }

    fn for_each(&self, mut f: impl FnMut(u128)) {
        match self {
            DistinctSet::Empty => {}
            DistinctSet::One(x) => f(*x),
            DistinctSet::Few(v) => v.iter().copied().for_each(f),
            DistinctSet::Many(s) => s.iter().copied().for_each(f),
        }
    }
}

fn is_int(t: &DataType) -> bool {
    use DataType::*;
    matches!(t, Int8 | Int16 | Int32 | Int64 | UInt8 | UInt16 | UInt32 | Timestamp(_, _))
}

fn is_float(t: &DataType) -> bool {
    matches!(t, DataType::Float32 | DataType::Float64)
}

/// Whether the filter (if any) lets `row` through.
#[inline]
fn passes(filter: Option<&BooleanArray>, row: usize) -> bool {
    filter.is_none_or(|f| f.is_valid(row) && f.value(row))
}

impl AggColumn {
    /// The column for one of a rule's aggregates, given its argument types.
    pub fn new(a: &Aggregate, arg_types: &[DataType]) -> AggColumn {
        let name = a.expr.fun().name();
        let distinct = a.expr.is_distinct();
        let one = arg_types.len() == 1;
        let t = arg_types.first().cloned().unwrap_or(DataType::Null);
        let state = match name {
            "count" if !distinct => State::Count(Vec::new()),
            "count" if a.distinct_strings => State::Distinct(Vec::new()),
            "sum" if one && !distinct && is_int(&t) && !matches!(t, DataType::Timestamp(_, _)) && !t.is_unsigned_integer() => {
                State::SumInt { sum: Vec::new(), seen: Vec::new() }
            }
            "sum" if one && !distinct && is_float(&t) => State::SumFloat { sum: Vec::new(), seen: Vec::new() },
            "avg" if one && !distinct && (is_float(&t) || (is_int(&t) && !matches!(t, DataType::Timestamp(_, _)))) => {
                State::Avg { sum: Vec::new(), n: Vec::new() }
            }
            "min" | "max" if one && is_int(&t) => State::MinMaxInt { v: Vec::new(), seen: Vec::new(), max: name == "max", out: t },
            "min" | "max" if one && is_float(&t) => State::MinMaxFloat { v: Vec::new(), seen: Vec::new(), max: name == "max", out: t },
            "min" | "max" if one && t == DataType::Utf8 => State::MinMaxStr { v: Vec::new(), max: name == "max", out: t },
            "array_agg" if one && t == DataType::Utf8 => State::ArrayAggStr { v: Vec::new(), distinct, item: t },
            _ => {
                let (expr, array_agg) = (a.expr.clone(), a.bounded_array_agg.clone());
                let make = move || boxed_accumulator(&expr, &array_agg);
                State::Boxed { aggregate: Arc::new(make), v: Vec::new() }
            }
        };
        AggColumn { state, heap: 0 }
    }

    /// Whether this aggregate has a native column (for tests and the bench's report).
    pub fn is_native(&self) -> bool {
        !matches!(self.state, State::Boxed { .. })
    }

    /// Makes room for slots up to `len`.
    pub fn resize(&mut self, len: usize) {
        match &mut self.state {
            State::Count(v) => v.resize(len, 0),
            State::SumInt { sum, seen } => {
                sum.resize(len, 0);
                seen.resize(len, false);
            }
            State::SumFloat { sum, seen } => {
                sum.resize(len, 0.0);
                seen.resize(len, false);
            }
            State::Avg { sum, n } => {
                sum.resize(len, 0.0);
                n.resize(len, 0);
            }
            State::MinMaxInt { v, seen, .. } => {
                v.resize(len, 0);
                seen.resize(len, false);
            }
            State::MinMaxFloat { v, seen, .. } => {
                v.resize(len, 0.0);
                seen.resize(len, false);
            }
            State::MinMaxStr { v, .. } => v.resize(len, None),
            State::Distinct(v) => v.resize(len, DistinctSet::Empty),
            State::ArrayAggStr { v, .. } => v.resize_with(len, Vec::new),
            State::Boxed { v, .. } => v.resize_with(len, || None),
        }
    }

    /// Bytes each slot takes in this column, besides `heap`.
    pub fn slot_bytes(&self) -> usize {
        match &self.state {
            State::Count(_) => 8,
            State::SumInt { .. } | State::SumFloat { .. } | State::MinMaxInt { .. } | State::MinMaxFloat { .. } => 9,
            State::Avg { .. } => 16,
            State::MinMaxStr { .. } => 16,
            State::Distinct(_) => std::mem::size_of::<DistinctSet>(),
            State::ArrayAggStr { .. } => 24,
            State::Boxed { .. } => 16,
        }
    }

    /// Takes in the `pairs` of a batch whose argument columns are `args` (full batch length),
    /// where `filter` (the aggregate's FILTER clause) holds.
    pub fn update(&mut self, pairs: &Pairs, args: &[ArrayRef], filter: Option<&BooleanArray>) -> Result<()> {
        let arg = args.first();
        match &mut self.state {
            State::Count(counts) => {
                for &(row, slot) in pairs {
                    let row = row as usize;
                    if passes(filter, row) && args.iter().all(|a| a.is_valid(row)) {
                        counts[slot as usize] += 1;
                    }
                }
            }
            State::SumInt { sum, seen } => each_primitive::<Int64Type>(arg, pairs, filter, |s, x| {
                sum[s] = sum[s].wrapping_add(x);
                seen[s] = true;
            })?,
            State::SumFloat { sum, seen } => each_primitive::<Float64Type>(arg, pairs, filter, |s, x| {
                sum[s] += x;
                seen[s] = true;
            })?,
            State::Avg { sum, n } => each_primitive::<Float64Type>(arg, pairs, filter, |s, x| {
                sum[s] += x;
                n[s] += 1;
            })?,
            State::MinMaxInt { v, seen, max, .. } => each_primitive::<Int64Type>(arg, pairs, filter, |s, x| {
                if !seen[s] || (*max && x > v[s]) || (!*max && x < v[s]) {
                    v[s] = x;
                    seen[s] = true;
                }
            })?,
            State::MinMaxFloat { v, seen, max, .. } => each_primitive::<Float64Type>(arg, pairs, filter, |s, x| {
                if !seen[s] || better_float(*max, x, v[s]) {
                    v[s] = x;
                    seen[s] = true;
                }
            })?,
            State::MinMaxStr { v, max, .. } => {
                let heap = &mut self.heap;
                each_str(arg, pairs, filter, |s, x| {
                    let replace = match &v[s] {
                        None => true,
                        Some(cur) => (*max && x > cur.as_ref()) || (!*max && x < cur.as_ref()),
                    };
                    if replace {
                        *heap = *heap + x.len() - v[s].as_ref().map_or(0, |s| s.len());
                        v[s] = Some(x.into());
                    }
                })
            }
            State::Distinct(sets) => {
                let heap = &mut self.heap;
                each_str(arg, pairs, filter, |s, x| *heap += sets[s].insert(hash128(x)))
            }
            State::ArrayAggStr { v, distinct, .. } => {
                let heap = &mut self.heap;
                each_str(arg, pairs, filter, |s, x| *heap += push_bounded(&mut v[s], *distinct, x))
            }
            State::Boxed { aggregate, v } => {
                // Rows of each slot together, in arrival order, taken once per slot.
                let mut sorted = pairs.to_vec();
                sorted.sort_by_key(|&(_, slot)| slot);
                for run in sorted.chunk_by(|a, b| a.1 == b.1) {
                    let slot = run[0].1 as usize;
                    let rows: Vec<u32> = run.iter().map(|&(r, _)| r).filter(|&r| passes(filter, r as usize)).collect();
                    if rows.is_empty() {
                        continue;
                    }
                    let idx = UInt32Array::from(rows);
                    let cols = args.iter().map(|a| take(a.as_ref(), &idx, None)).collect::<std::result::Result<Vec<_>, _>>()?;
                    let acc = match &mut v[slot] {
                        Some(acc) => acc,
                        empty => empty.insert(aggregate()?),
                    };
                    let before = acc.size();
                    acc.update_batch(&cols)?;
                    self.heap = (self.heap + acc.size()).saturating_sub(before);
                }
            }
        }
        Ok(())
    }

    /// Folds slot `src` into slot `dst` (`src` keeps its state; free it after).
    pub fn merge(&mut self, dst: u32, src: u32) -> Result<()> {
        let (d, s) = (dst as usize, src as usize);
        match &mut self.state {
            State::Count(c) => c[d] += c[s],
            State::SumInt { sum, seen } => {
                if seen[s] {
                    sum[d] = sum[d].wrapping_add(sum[s]);
                    seen[d] = true;
                }
            }
            State::SumFloat { sum, seen } => {
                if seen[s] {
                    sum[d] += sum[s];
                    seen[d] = true;
                }
            }
            State::Avg { sum, n } => {
                sum[d] += sum[s];
                n[d] += n[s];
            }
            State::MinMaxInt { v, seen, max, .. } => {
                if seen[s] && (!seen[d] || (*max && v[s] > v[d]) || (!*max && v[s] < v[d])) {
                    v[d] = v[s];
                    seen[d] = true;
                }
            }
            State::MinMaxFloat { v, seen, max, .. } => {
                if seen[s] && (!seen[d] || better_float(*max, v[s], v[d])) {
                    v[d] = v[s];
                    seen[d] = true;
                }
            }
            State::MinMaxStr { v, max, .. } => {
                if let Some(x) = v[s].clone() {
                    let replace = match &v[d] {
                        None => true,
                        Some(cur) => (*max && x > *cur) || (!*max && x < *cur),
                    };
                    if replace {
                        self.heap = self.heap + x.len() - v[d].as_ref().map_or(0, |s| s.len());
                        v[d] = Some(x);
                    }
                }
            }
            State::Distinct(sets) => {
                let src = std::mem::take(&mut sets[s]);
                src.for_each(|h| self.heap += sets[d].insert(h));
                sets[s] = src;
            }
            State::ArrayAggStr { v, distinct, .. } => {
                let src = std::mem::take(&mut v[s]);
                for x in &src {
                    self.heap += push_bounded(&mut v[d], *distinct, x);
                }
                v[s] = src;
            }
            State::Boxed { aggregate, v } => {
                let Some(src) = v[s].as_mut() else {
                    return Ok(());
                };
                let state = src.state()?.iter().map(|x| x.to_array()).collect::<datafusion::common::Result<Vec<_>>>()?;
                let acc = match &mut v[d] {
                    Some(acc) => acc,
                    empty => empty.insert(aggregate()?),
                };
                let before = acc.size();
                acc.merge_batch(&state)?;
                self.heap = (self.heap + acc.size()).saturating_sub(before);
            }
        }
        Ok(())
    }

    /// Empties `slot` for reuse.
    pub fn clear(&mut self, slot: u32) {
        let i = slot as usize;
        match &mut self.state {
            State::Count(c) => c[i] = 0,
            State::SumInt { sum, seen } => {
                sum[i] = 0;
                seen[i] = false;
            }
            State::SumFloat { sum, seen } => {
                sum[i] = 0.0;
                seen[i] = false;
            }
            State::Avg { sum, n } => {
                sum[i] = 0.0;
                n[i] = 0;
            }
            State::MinMaxInt { seen, .. } | State::MinMaxFloat { seen, .. } => seen[i] = false,
            State::MinMaxStr { v, .. } => {
                self.heap = self.heap.saturating_sub(v[i].take().map_or(0, |s| s.len()));
            }
            State::Distinct(sets) => {
                self.heap = self.heap.saturating_sub(sets[i].heap());
                sets[i] = DistinctSet::Empty;
            }
            State::ArrayAggStr { v, .. } => {
                self.heap = self.heap.saturating_sub(v[i].iter().map(|s| s.len() + 16).sum::<usize>());
                v[i] = Vec::new();
            }
            State::Boxed { v, .. } => {
                self.heap = self.heap.saturating_sub(v[i].take().map_or(0, |a| a.size()));
            }
        }
    }

    /// The values of `slots`, in order, as one array.
    pub fn evaluate(&mut self, slots: &[u32]) -> Result<ArrayRef> {
        let at = |s: &u32| *s as usize;
        Ok(match &mut self.state {
            State::Count(c) => Arc::new(Int64Array::from_iter_values(slots.iter().map(|s| c[at(s)]))),
            State::SumInt { sum, seen } => Arc::new(slots.iter().map(|s| seen[at(s)].then(|| sum[at(s)])).collect::<Int64Array>()),
            State::SumFloat { sum, seen } => Arc::new(slots.iter().map(|s| seen[at(s)].then(|| sum[at(s)])).collect::<Float64Array>()),
            State::Avg { sum, n } => {
                Arc::new(slots.iter().map(|s| (n[at(s)] > 0).then(|| sum[at(s)] / n[at(s)] as f64)).collect::<Float64Array>())
            }
            State::MinMaxInt { v, seen, out, .. } => {
                let a: ArrayRef = Arc::new(slots.iter().map(|s| seen[at(s)].then(|| v[at(s)])).collect::<Int64Array>());
                cast(&a, out)?
            }
            State::MinMaxFloat { v, seen, out, .. } => {
                let a: ArrayRef = Arc::new(slots.iter().map(|s| seen[at(s)].then(|| v[at(s)])).collect::<Float64Array>());
                cast(&a, out)?
            }
            State::MinMaxStr { v, out, .. } => {
                let a: ArrayRef = Arc::new(slots.iter().map(|s| v[at(s)].as_deref()).collect::<StringArray>());
                cast(&a, out)?
            }
            State::Distinct(sets) => Arc::new(Int64Array::from_iter_values(slots.iter().map(|s| sets[at(s)].len() as i64))),
            State::ArrayAggStr { v, item, .. } => {
                let mut b = ListBuilder::new(StringBuilder::new()).with_field(Arc::new(Field::new_list_field(item.clone(), true)));
                for s in slots {
                    let values = &v[at(s)];
                    if values.is_empty() {
                        // As DataFusion's array_agg: NULL for a group without values.
                        b.append(false);
                    } else {
                        for x in values {
                            b.values().append_value(x);
                        }
                        b.append(true);
                    }
                }
                Arc::new(b.finish())
            }
            State::Boxed { aggregate, v } => {
                let mut values = Vec::with_capacity(slots.len());
                for s in slots {
                    values.push(match &mut v[at(s)] {
                        Some(acc) => acc.evaluate()?,
                        None => aggregate()?.evaluate()?,
                    });
                }
                ScalarValue::iter_to_array(values)?
            }
        })
    }
}

/// Calls `f(slot, value)` for each of `pairs` whose row passes the FILTER and has a value, the
/// argument cast to `T` once for the batch.
fn each_primitive<T: ArrowPrimitiveType>(
    arg: Option<&ArrayRef>,
    pairs: &Pairs,
    filter: Option<&BooleanArray>,
    mut f: impl FnMut(usize, T::Native),
) -> Result<()> {
    let a = cast(arg.expect("one argument").as_ref(), &T::DATA_TYPE)?;
    let a = a.as_primitive::<T>();
    for &(row, slot) in pairs {
        let row = row as usize;
        if passes(filter, row) && a.is_valid(row) {
            f(slot as usize, a.value(row));
        }
    }
    Ok(())
}

/// [`each_primitive`] for a string argument (read in place).
fn each_str(arg: Option<&ArrayRef>, pairs: &Pairs, filter: Option<&BooleanArray>, mut f: impl FnMut(usize, &str)) {
    let a = arg.expect("one argument").as_string::<i32>();
    for &(row, slot) in pairs {
        let row = row as usize;
        if passes(filter, row) && a.is_valid(row) {
            f(slot as usize, a.value(row));
        }
    }
}

/// `min`/`max` of floats as DataFusion orders them: NaN above every number.
fn better_float(max: bool, x: f64, cur: f64) -> bool {
    match x.total_cmp(&cur) {
        std::cmp::Ordering::Greater => max,
        std::cmp::Ordering::Less => !max,
        std::cmp::Ordering::Equal => false,
    }
}

/// Appends `x` to an array_agg sample unless full (or a repeat, with DISTINCT); returns the
/// bytes it grew by.
fn push_bounded(v: &mut Vec<Box<str>>, distinct: bool, x: &str) -> usize {
    if v.len() >= ARRAY_AGG_LIMIT || (distinct && v.iter().any(|s| s.as_ref() == x)) {
        return 0;
    }
    v.push(x.into());
    x.len() + 16
}

/// The per-group DataFusion accumulator of an aggregate without a native column
/// (`count(DISTINCT string)` always has one).
fn boxed_accumulator(
    expr: &datafusion::physical_expr::aggregate::AggregateFunctionExpr,
    array_agg: &Option<(bool, DataType)>,
) -> datafusion::common::Result<Box<dyn Accumulator>> {
    if let Some((distinct, t)) = array_agg {
        return Ok(Box::new(BoundedArrayAgg::new(*distinct, t.clone())));
    }
    expr.create_accumulator()
}
