//! The keyed window operator of a windowed rule, built for many groups.
//!
//! Every group is a slot (`u32`) into columns: its key and metadata in [`Slots`], its aggregates
//! in one [`AggColumn`] per aggregate. A batch is placed row by row (a hash lookup per row,
//! no allocation unless a group is new), then each aggregate column takes the whole batch's
//! `(row, slot)` pairs in one call.
//!
//! - TUMBLE and HOP keep **panes**: each event goes into exactly one pane (the greatest common
//!   divisor of width and slide wide), so a HOP event is counted once, not once per overlapping
//!   window. A window fires by combining its panes (every aggregate here merges exactly: counts
//!   and sums add, min/max compare, distinct sets unite), and a pane is dropped once no window
//!   still to fire holds it. For TUMBLE a window is a single pane, fired as is.
//! - SESSION keeps per key a list of open sessions (slots linked through `Slots::next`); an event
//!   joins the session within the gap, and one that bridges two merges them in place.
//!
//! Fired in order of window end, then key: the output does not depend on hash order.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, HashSet};
use std::sync::Arc;

use anyhow::{Context, Result};
use datafusion::arrow::array::{Array, ArrayRef, AsArray, RecordBatch, RecordBatchOptions, StringArray, TimestampNanosecondArray};
use datafusion::arrow::datatypes::{Field, Schema, TimestampNanosecondType};
use datafusion::arrow::row::{RowConverter, SortField};
use hashbrown::HashTable;

use super::aggregates::AggColumn;
use super::plan::{WindowKind, WindowedPlan};
use crate::alert::MAX_SAMPLE_IDS;

/// No slot (ends a session list).
const NONE: u32 = u32::MAX;

/// aHash: keys are row-encoded bytes hashed for every matching event; SipHash's DoS resistance
/// is kept by aHash's random keys at a fraction of the cost.
type Hasher = ahash::RandomState;

/// What the alert needs besides the rule's own aggregates.
#[derive(Clone, Debug)]
pub struct GroupMeta {
    pub first_seen: i64,
    pub last_seen: i64,
    pub count: u64,
    pub audit_ids: IdSample,
    pub cluster: Option<Arc<str>>,
}

/// The first [`MAX_SAMPLE_IDS`] distinct event ids of a group. Most groups hold one id, and
/// audit ids are UUIDs: one is kept inline as 16 bytes, not as a 36-byte string on the heap,
/// and samples merge (HOP panes, sessions) without formatting them.
#[derive(Clone, Debug, Default)]
pub enum IdSample {
    #[default]
    Empty,
    One(Id),
    Many(Box<Vec<Id>>),
}

/// An event id: a UUID as its 16 bytes, anything else as text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Id {
    Uuid([u8; 16]),
    Text(Box<str>),
}

impl Id {
    fn heap(&self) -> usize {
        match self {
            Id::Uuid(_) => 0,
            Id::Text(t) => t.len(),
        }
    }

    fn to_text(&self) -> String {
        match self {
            Id::Uuid(u) => format_uuid(u),
            Id::Text(t) => t.to_string(),
        }
    }
}

impl IdSample {
    /// An id as it came in the event (parsed once; a repeat is never copied).
    fn push(&mut self, id: &str) {
        let uuid = parse_uuid(id);
        let same = |x: &Id| match x {
            Id::Uuid(u) => uuid == Some(*u),
            Id::Text(t) => t.as_ref() == id,
        };
        self.add(same, || uuid.map_or_else(|| Id::Text(id.into()), Id::Uuid));
    }

    /// An id from another sample.
    fn push_id(&mut self, id: &Id) {
        self.add(|x| x == id, || id.clone());
    }

    /// Adds the id `make` builds unless the sample is full or holds one that is `same`.
    fn add(&mut self, same: impl Fn(&Id) -> bool, make: impl FnOnce() -> Id) {
        match self {
            IdSample::Empty => *self = IdSample::One(make()),
            IdSample::One(x) if same(x) => {}
            IdSample::One(x) => {
                let first = std::mem::replace(x, Id::Uuid([0; 16]));
                *self = IdSample::Many(Box::new(vec![first, make()]));
            }
            IdSample::Many(v) => {
                if v.len() < MAX_SAMPLE_IDS && !v.iter().any(same) {
                    v.push(make());
                }
            }
        }
    }

    fn merge(&mut self, other: &IdSample) {
        match other {
            IdSample::Empty => {}
            IdSample::One(id) => self.push_id(id),
            IdSample::Many(v) => v.iter().for_each(|id| self.push_id(id)),
        }
    }

    fn is_full(&self) -> bool {
        matches!(self, IdSample::Many(v) if v.len() >= MAX_SAMPLE_IDS)
    }

    fn heap(&self) -> usize {
        match self {
            IdSample::Empty => 0,
            IdSample::One(id) => id.heap(),
            IdSample::Many(v) => 24 + v.capacity() * std::mem::size_of::<Id>() + v.iter().map(Id::heap).sum::<usize>(),
        }
    }

    /// The ids, as they came.
    pub fn strings(&self) -> Vec<String> {
        match self {
            IdSample::Empty => Vec::new(),
            IdSample::One(id) => vec![id.to_text()],
            IdSample::Many(v) => v.iter().map(Id::to_text).collect(),
        }
    }
}

/// A lowercase, hyphenated UUID (as Kubernetes writes audit ids) as 16 bytes; anything else
/// (upper case included, so the text comes back exactly) is None.
fn parse_uuid(s: &str) -> Option<[u8; 16]> {
    let b = s.as_bytes();
    if b.len() != 36 || b[8] != b'-' || b[13] != b'-' || b[18] != b'-' || b[23] != b'-' {
        return None;
    }
    let nibble = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    let mut out = [0u8; 16];
    let mut n = 0;
    let mut i = 0;
    while i < 36 {
        if matches!(i, 8 | 13 | 18 | 23) {
            i += 1;
            continue;
        }
        out[n] = nibble(b[i])? << 4 | nibble(b[i + 1])?;
        n += 1;
        i += 2;
    }
    Some(out)
}

fn format_uuid(u: &[u8; 16]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(36);
    for (i, b) in u.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            out.push('-');
        }
        out.push(HEX[(b >> 4) as usize] as char);
        out.push(HEX[(b & 15) as usize] as char);
    }
    out
}

/// What a group holds besides its key and aggregates, in one place: a batch touches a slot's
/// fields together, and with hundreds of thousands of groups each separate vector would cost a
/// cache miss of its own.
struct SlotInfo {
    first_seen: i64,
    last_seen: i64,
    count: u64,
    /// SESSION: when the session fires, as last queued (stale queue entries are skipped).
    due_at: i64,
    ids: IdSample,
    cluster: Option<Arc<str>>,
    /// SESSION: the key's next open session (NONE ends the list).
    next: u32,
    /// Bumped when a slot is freed or merged away: queued firing times of the old group no
    /// longer match.
    generation: u32,
    alive: bool,
    /// SESSION: fired early (the rule's `early: true`); it does not fire again when it closes.
    fired_early: bool,
}

impl SlotInfo {
    fn fresh(generation: u32) -> SlotInfo {
        SlotInfo {
            first_seen: i64::MAX,
            last_seen: i64::MIN,
            count: 0,
            due_at: i64::MIN,
            ids: IdSample::Empty,
            cluster: None,
            next: NONE,
            generation,
            alive: true,
            fired_early: false,
        }
    }
}

/// Every group's key and [`SlotInfo`], indexed by slot.
#[derive(Default)]
struct Slots {
    keys: Vec<Box<[u8]>>,
    info: Vec<SlotInfo>,
    free: Vec<u32>,
    live: usize,
    /// Heap bytes of keys and id samples.
    heap: usize,
}

/// Bytes a slot takes in [`Slots`], besides its heap.
const SLOT_BYTES: usize = std::mem::size_of::<Box<[u8]>>() + std::mem::size_of::<SlotInfo>();

impl Slots {
    fn alloc(&mut self, key: Box<[u8]>, aggs: &mut [AggColumn]) -> u32 {
        self.live += 1;
        self.heap += key.len() + 16;
        if let Some(s) = self.free.pop() {
            let i = s as usize;
            self.keys[i] = key;
            self.info[i] = SlotInfo::fresh(self.info[i].generation);
            return s;
        }
        let s = self.keys.len() as u32;
        assert!(s < NONE, "more than 4 billion groups");
        self.keys.push(key);
        self.info.push(SlotInfo::fresh(0));
        for a in aggs.iter_mut() {
            a.resize(self.keys.len());
        }
        s
    }

    fn release(&mut self, s: u32, aggs: &mut [AggColumn]) {
        let i = s as usize;
        if !self.info[i].alive {
            return;
        }
        self.info[i].alive = false;
        self.info[i].generation = self.info[i].generation.wrapping_add(1);
        self.heap = self.heap.saturating_sub(self.keys[i].len() + 16 + self.info[i].ids.heap());
        self.keys[i] = Box::default();
        self.info[i].ids = IdSample::Empty;
        self.info[i].cluster = None;
        for a in aggs.iter_mut() {
            a.clear(s);
        }
        self.live -= 1;
        self.free.push(s);
    }

    fn observe(&mut self, s: u32, t: i64, id: Option<&str>) {
        let i = s as usize;
        self.info[i].first_seen = self.info[i].first_seen.min(t);
        self.info[i].last_seen = self.info[i].last_seen.max(t);
        self.info[i].count += 1;
        if let Some(id) = id {
            if !self.info[i].ids.is_full() {
                let before = self.info[i].ids.heap();
                self.info[i].ids.push(id);
                self.heap = (self.heap + self.info[i].ids.heap()).saturating_sub(before);
            }
        }
    }

    fn merge_meta(&mut self, dst: u32, src: u32) {
        let (d, s) = (dst as usize, src as usize);
        self.info[d].first_seen = self.info[d].first_seen.min(self.info[s].first_seen);
        self.info[d].last_seen = self.info[d].last_seen.max(self.info[s].last_seen);
        self.info[d].count += self.info[s].count;
        if !matches!(self.info[s].ids, IdSample::Empty) {
            let ids = std::mem::take(&mut self.info[s].ids);
            let before = self.info[d].ids.heap();
            self.info[d].ids.merge(&ids);
            self.heap = (self.heap + self.info[d].ids.heap()).saturating_sub(before);
            self.info[s].ids = ids;
        }
        if self.info[d].cluster.is_none() {
            self.info[d].cluster = self.info[s].cluster.clone();
        }
        self.info[d].fired_early |= self.info[s].fired_early;
    }

    fn meta(&self, s: u32) -> GroupMeta {
        let i = s as usize;
        GroupMeta {
            first_seen: self.info[i].first_seen,
            last_seen: self.info[i].last_seen,
            count: self.info[i].count,
            audit_ids: self.info[i].ids.clone(),
            cluster: self.info[i].cluster.clone(),
        }
    }

    fn take_meta(&mut self, s: u32) -> GroupMeta {
        let i = s as usize;
        self.heap = self.heap.saturating_sub(self.info[i].ids.heap());
        GroupMeta {
            first_seen: self.info[i].first_seen,
            last_seen: self.info[i].last_seen,
            count: self.info[i].count,
            audit_ids: std::mem::take(&mut self.info[i].ids),
            cluster: self.info[i].cluster.take(),
        }
    }
}

/// A window that fired: the aggregate row (group columns then aggregates) and its metadata.
pub struct Fired {
    pub batch: RecordBatch,
    pub window_starts: Vec<i64>,
    /// The group keys (row-encoded), parallel to `window_starts`: for marking early alerts.
    pub keys: Vec<Box<[u8]>>,
    pub metas: Vec<GroupMeta>,
}

pub struct WindowState {
    converter: RowConverter,
    hasher: Hasher,
    kind: WindowKind,
    width: i64,
    slide: i64,
    /// TUMBLE/HOP: each event goes into one pane this wide (gcd of width and slide).
    pane: i64,
    slots: Slots,
    aggs: Vec<AggColumn>,
    /// TUMBLE/HOP: pane start → its groups, found by key.
    panes: BTreeMap<i64, HashTable<u32>>,
    /// TUMBLE/HOP: the start of the next window to fire.
    next_window: i64,
    /// TUMBLE/HOP: windows (start, key) that fired early.
    early: HashSet<(i64, Box<[u8]>)>,
    /// SESSION: key → its newest open session (the others follow `Slots::next`).
    sessions: HashTable<u32>,
    /// SESSION: (fires at, slot, generation), soonest first.
    due: BinaryHeap<Reverse<(i64, u32, u32)>>,
    /// Cluster names, shared by the groups that carry them.
    clusters: HashMap<Box<str>, Arc<str>>,
    /// At most this many live groups; beyond, the least recently active ones are dropped.
    max_groups: usize,
    /// The rule fires as soon as HAVING holds: [`WindowState::update`] returns what it touched.
    early_rule: bool,
    pub evictions: u64,
    /// Windows ending at or before this have fired; their events arrive too late.
    pub closed_until: i64,
    pub late_events: u64,
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

fn gcd(a: i64, b: i64) -> i64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// The least multiple of `step` at or above `t`.
fn ceil_to(t: i64, step: i64) -> i64 {
    let r = t.rem_euclid(step);
    if r == 0 {
        t
    } else {
        t - r + step
    }
}

impl WindowState {
    pub fn new(plan: &WindowedPlan, input_schema: &Schema, max_groups: usize, early_rule: bool) -> Result<Self> {
        let fields = plan.keys.iter().map(|k| Ok(SortField::new(k.data_type(input_schema)?))).collect::<Result<Vec<_>>>()?;
        let aggs = plan
            .aggregates
            .iter()
            .map(|a| {
                let types = a.args.iter().map(|e| e.data_type(input_schema)).collect::<datafusion::common::Result<Vec<_>>>()?;
                Ok(AggColumn::new(a, &types))
            })
            .collect::<Result<Vec<_>>>()?;
        let w = plan.window;
        Ok(WindowState {
            converter: RowConverter::new(fields)?,
            hasher: Hasher::new(),
            kind: w.kind,
            width: w.width,
            slide: w.slide,
            pane: if w.kind == WindowKind::Session { w.width } else { gcd(w.width, w.slide).max(1) },
            slots: Slots::default(),
            aggs,
            panes: BTreeMap::new(),
            next_window: i64::MIN,
            early: HashSet::new(),
            sessions: HashTable::new(),
            due: BinaryHeap::new(),
            clusters: HashMap::new(),
            max_groups: max_groups.max(1),
            early_rule,
            evictions: 0,
            closed_until: i64::MIN,
            late_events: 0,
        })
    }

    /// Whether every aggregate of the rule has a native column (else some keep one DataFusion
    /// accumulator per group).
    pub fn all_native(&self) -> bool {
        self.aggs.iter().all(AggColumn::is_native)
    }

    /// The start of the oldest pane or session holding state, if any: events older than this
    /// are in no open window.
    pub fn oldest_start(&self) -> Option<i64> {
        if self.kind == WindowKind::Session {
            // Checked once per checkpoint, not per event: a scan over live slots is fine.
            return (0..self.slots.info.len()).filter(|&i| self.slots.info[i].alive).map(|i| self.slots.info[i].first_seen).min();
        }
        self.panes.keys().next().copied()
    }

    /// Whether an event at `t` comes after every window it belongs to has fired: the newest
    /// TUMBLE/HOP window holding `t` ends last, and a session holding `t` fires no later than
    /// `t` + gap.
    pub fn is_late(&self, t: i64) -> bool {
        let last_end = match self.kind {
            WindowKind::Session => t.saturating_add(self.width),
            WindowKind::Tumble | WindowKind::Hop => t - t.rem_euclid(self.slide) + self.width,
        };
        last_end <= self.closed_until
    }

    /// The cap on live groups.
    pub fn max_groups(&self) -> usize {
        self.max_groups
    }

    pub fn live_groups(&self) -> usize {
        self.slots.live
    }

    /// Approximate bytes of state: slots, keys, aggregates, and the indexes over them.
    pub fn state_bytes(&self) -> usize {
        let per_slot = SLOT_BYTES + self.aggs.iter().map(AggColumn::slot_bytes).sum::<usize>();
        let index = self.panes.values().map(|t| t.capacity() * 5).sum::<usize>() + self.sessions.capacity() * 5 + self.due.len() * 16;
        self.slots.keys.len() * per_slot + self.slots.heap + self.aggs.iter().map(|a| a.heap).sum::<usize>() + index
    }

    fn hash(&self, key: &[u8]) -> u64 {
        self.hasher.hash_one(key)
    }

    /// Takes in the rows `within` names of `batch` (every row when None): each row goes into
    /// its key's pane or session. Returns the groups it touched.
    pub fn update(&mut self, plan: &WindowedPlan, batch: &RecordBatch, within: Option<&[u32]>, meta_cols: MetaColumns) -> Result<Vec<u32>> {
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
        let times = batch.column(meta_cols.event_time).as_primitive::<TimestampNanosecondType>();
        let ids = meta_cols.audit_id.map(|c| batch.column(c).as_string::<i32>());
        let clusters = meta_cols.cluster.map(|c| batch.column(c).as_string::<i32>());

        let mut pairs: Vec<(u32, u32)> = Vec::with_capacity(selected.len());
        let mut merged_away = Vec::new();
        let mut redirect: HashMap<u32, u32> = HashMap::new();
        for &i in selected {
            let row = i as usize;
            let t = times.value(row);
            if self.is_late(t) {
                self.late_events += 1;
                continue;
            }
            let key = rows.row(row).data();
            let slot = match self.kind {
                WindowKind::Session => self.place_in_session(key, t, &mut merged_away, &mut redirect)?,
                _ => self.place_in_pane(key, t),
            };
            let id = ids.filter(|a| a.is_valid(row)).map(|a| a.value(row));
            self.slots.observe(slot, t, id);
            if self.slots.info[slot as usize].cluster.is_none() {
                if let Some(c) = clusters.filter(|c| c.is_valid(row)) {
                    self.slots.info[slot as usize].cluster = Some(self.intern_cluster(c, row));
                }
            }
            pairs.push((i, slot));
        }
        // Rows of sessions merged into another during this batch go to the one that holds them now.
        if !redirect.is_empty() {
            for p in &mut pairs {
                while let Some(&to) = redirect.get(&p.1) {
                    p.1 = to;
                }
            }
        }
        for (agg, plan_agg) in self.aggs.iter_mut().zip(&plan.aggregates) {
            let args = plan_agg.args.iter().map(|e| e.evaluate(batch)?.into_array(n)).collect::<datafusion::common::Result<Vec<_>>>()?;
            let filter = plan_agg.filter.as_ref().map(|f| f.evaluate(batch)?.into_array(n)).transpose()?;
            agg.update(&pairs, &args, filter.as_ref().map(|f| f.as_boolean()))?;
        }
        for s in merged_away {
            self.slots.release(s, &mut self.aggs);
        }
        if !self.early_rule && self.kind != WindowKind::Session {
            if self.slots.live > self.max_groups {
                self.evict();
            }
            return Ok(Vec::new());
        }
        let mut touched: Vec<u32> = pairs.iter().map(|p| p.1).collect();
        touched.sort_unstable();
        touched.dedup();
        if self.kind == WindowKind::Session {
            for &s in &touched {
                let at = self.slots.info[s as usize].last_seen.saturating_add(self.width);
                if self.slots.info[s as usize].due_at != at {
                    self.slots.info[s as usize].due_at = at;
                    self.due.push(Reverse((at, s, self.slots.info[s as usize].generation)));
                }
            }
        }
        if self.slots.live > self.max_groups {
            self.evict();
            touched.retain(|&s| self.slots.info[s as usize].alive);
        }
        Ok(touched)
    }

    fn intern_cluster(&mut self, clusters: &StringArray, row: usize) -> Arc<str> {
        let c = clusters.value(row);
        if let Some(a) = self.clusters.get(c) {
            return a.clone();
        }
        let a: Arc<str> = Arc::from(c);
        // Clusters are few; a flood of names must not grow the table without end.
        if self.clusters.len() < 4096 {
            self.clusters.insert(c.into(), a.clone());
        }
        a
    }

    /// The group of `key` in the pane holding `t`, made if new.
    fn place_in_pane(&mut self, key: &[u8], t: i64) -> u32 {
        let h = self.hash(key);
        let p = t - t.rem_euclid(self.pane);
        let WindowState { panes, slots, aggs, hasher, .. } = self;
        if !panes.contains_key(&p) {
            // Sized like the newest pane before it: panes of a steady stream hold as many
            // groups, and growing a table from empty rehashes it a dozen times.
            let hint = panes.range(..p).next_back().map_or(0, |(_, t)| t.len());
            panes.insert(p, HashTable::with_capacity(hint));
        }
        let table = panes.get_mut(&p).expect("inserted above");
        if let Some(&s) = table.find(h, |&s| &*slots.keys[s as usize] == key) {
            return s;
        }
        let s = slots.alloc(key.into(), aggs);
        table.insert_unique(h, s, |&s| hasher.hash_one(&*slots.keys[s as usize]));
        s
    }

    /// SESSION: the session of `key` that `t` joins (start - gap <= t <= end + gap), made if
    /// none; sessions `t` bridges are merged into the first, which is kept.
    fn place_in_session(&mut self, key: &[u8], t: i64, merged_away: &mut Vec<u32>, redirect: &mut HashMap<u32, u32>) -> Result<u32> {
        let gap = self.width;
        let h = self.hash(key);
        let head = self.sessions.find(h, |&s| &*self.slots.keys[s as usize] == key).copied();
        let (mut target, mut prev, mut cur) = (NONE, NONE, head.unwrap_or(NONE));
        while cur != NONE {
            let c = cur as usize;
            let next = self.slots.info[c].next;
            let joins = self.slots.info[c].first_seen.saturating_sub(gap) <= t && t <= self.slots.info[c].last_seen.saturating_add(gap);
            if joins && target == NONE {
                target = cur;
                prev = cur;
            } else if joins {
                // Bridged: fold this session into the target and unlink it.
                for a in self.aggs.iter_mut() {
                    a.merge(target, cur)?;
                }
                self.slots.merge_meta(target, cur);
                self.slots.info[prev as usize].next = next;
                self.slots.info[c].generation = self.slots.info[c].generation.wrapping_add(1);
                merged_away.push(cur);
                redirect.insert(cur, target);
            } else {
                prev = cur;
            }
            cur = next;
        }
        if target != NONE {
            return Ok(target);
        }
        let WindowState { sessions, slots, aggs, hasher, .. } = self;
        let s = slots.alloc(key.into(), aggs);
        match head {
            Some(old) => {
                slots.info[s as usize].next = old;
                if let Some(entry) = sessions.find_mut(h, |&x| x == old) {
                    *entry = s;
                }
            }
            None => {
                sessions.insert_unique(h, s, |&x| hasher.hash_one(&*slots.keys[x as usize]));
            }
        }
        Ok(s)
    }

    /// SESSION: takes `s` out of its key's list of open sessions.
    fn unlink_session(&mut self, s: u32) {
        let key = &self.slots.keys[s as usize];
        let h = self.hasher.hash_one(&**key);
        let Ok(entry) = self.sessions.find_entry(h, |&x| self.slots.keys[x as usize] == *key) else {
            return;
        };
        let head = *entry.get();
        let next = self.slots.info[s as usize].next;
        if head == s {
            if next == NONE {
                entry.remove();
            } else {
                *entry.into_mut() = next;
            }
            return;
        }
        let mut cur = head;
        while cur != NONE {
            if self.slots.info[cur as usize].next == s {
                self.slots.info[cur as usize].next = next;
                return;
            }
            cur = self.slots.info[cur as usize].next;
        }
    }

    /// Drops the least recently active groups (by newest event time) until a sixteenth below
    /// the cap, so the scan that finds them runs once per many new groups.
    fn evict(&mut self) {
        let target = self.max_groups - self.max_groups / 16;
        let excess = self.slots.live.saturating_sub(target);
        if excess == 0 {
            return;
        }
        let mut live: Vec<(i64, u32)> =
            (0..self.slots.info.len()).filter(|&i| self.slots.info[i].alive).map(|i| (self.slots.info[i].last_seen, i as u32)).collect();
        if excess < live.len() {
            live.select_nth_unstable(excess);
        }
        for &(_, s) in &live[..excess.min(live.len())] {
            if self.kind == WindowKind::Session {
                self.unlink_session(s);
            } else {
                let i = s as usize;
                let p = self.slots.info[i].first_seen - self.slots.info[i].first_seen.rem_euclid(self.pane);
                let h = self.hasher.hash_one(&*self.slots.keys[i]);
                if let Some(table) = self.panes.get_mut(&p) {
                    if let Ok(e) = table.find_entry(h, |&x| x == s) {
                        e.remove();
                    }
                }
            }
            self.slots.release(s, &mut self.aggs);
            self.evictions += 1;
        }
    }

    /// The windows (start, key) the `touched` groups belong to that are still open and have
    /// not fired early, evaluated without removing anything: for rules that fire as soon as
    /// HAVING holds.
    pub fn peek(&mut self, plan: &WindowedPlan, touched: &[u32]) -> Result<Option<Fired>> {
        if self.kind == WindowKind::Session {
            let slots: Vec<u32> =
                touched.iter().copied().filter(|&s| !self.slots.info[s as usize].fired_early && self.could_pass(plan, s)).collect();
            let starts = slots.iter().map(|&s| self.slots.info[s as usize].first_seen).collect();
            let metas = slots.iter().map(|&s| self.slots.meta(s)).collect();
            return self.assemble(plan, starts, &slots, &slots, metas, true);
        }
        // Each (window start, key) once, oldest window first.
        let mut windows: Vec<(i64, Box<[u8]>)> = Vec::new();
        for &s in touched {
            let i = s as usize;
            let p = self.slots.info[i].first_seen - self.slots.info[i].first_seen.rem_euclid(self.pane);
            let mut start = ceil_to(p + self.pane - self.width, self.slide);
            while start <= p {
                let key = (start, self.slots.keys[i].clone());
                if start + self.width > self.closed_until && !self.early.contains(&key) {
                    windows.push(key);
                }
                start += self.slide;
            }
        }
        windows.sort();
        windows.dedup();
        let mut starts = Vec::with_capacity(windows.len());
        let mut combined = Vec::with_capacity(windows.len());
        for (start, key) in &windows {
            let h = self.hash(key);
            let mut into = NONE;
            let sources: Vec<u32> = self
                .panes
                .range(*start..start + self.width)
                .filter_map(|(_, table)| table.find(h, |&s| self.slots.keys[s as usize] == *key).copied())
                .collect();
            // Too few events in the window for HAVING: not worth combining.
            if sources.iter().map(|&s| self.slots.info[s as usize].count).sum::<u64>() < plan.min_events {
                continue;
            }
            for src in sources {
                if into == NONE {
                    into = self.slots.alloc(key.clone(), &mut self.aggs);
                }
                self.combine(into, src)?;
            }
            if into != NONE {
                starts.push(*start);
                combined.push(into);
            }
        }
        let metas = combined.iter().map(|&s| self.slots.meta(s)).collect();
        let fired = self.assemble(plan, starts, &combined, &combined, metas, true);
        for s in combined {
            self.slots.release(s, &mut self.aggs);
        }
        fired
    }

    /// Whether group `s` holds enough events for HAVING to be true (see
    /// [`WindowedPlan::min_events`]); the others are dropped without building their row.
    fn could_pass(&self, plan: &WindowedPlan, s: u32) -> bool {
        self.slots.info[s as usize].count >= plan.min_events
    }

    /// Folds group `src` (aggregates and metadata) into `dst`.
    fn combine(&mut self, dst: u32, src: u32) -> Result<()> {
        for a in self.aggs.iter_mut() {
            a.merge(dst, src)?;
        }
        self.slots.merge_meta(dst, src);
        Ok(())
    }

    /// Marks a window (its start, the group key) as fired early: it will not fire again when
    /// it closes.
    pub fn mark_fired_early(&mut self, window_start: i64, key: &[u8]) {
        if self.kind != WindowKind::Session {
            self.early.insert((window_start, key.into()));
            return;
        }
        let h = self.hash(key);
        let mut cur = self.sessions.find(h, |&s| &*self.slots.keys[s as usize] == key).copied().unwrap_or(NONE);
        while cur != NONE {
            if self.slots.info[cur as usize].first_seen == window_start {
                self.slots.info[cur as usize].fired_early = true;
            }
            cur = self.slots.info[cur as usize].next;
        }
    }

    /// Fires every window ending at or before `watermark` (all of them for `i64::MAX`).
    pub fn fire(&mut self, plan: &WindowedPlan, watermark: i64) -> Result<Option<Fired>> {
        if watermark > self.closed_until {
            self.closed_until = watermark;
        }
        match self.kind {
            WindowKind::Session => self.fire_sessions(plan, watermark),
            _ => self.fire_windows(plan, watermark),
        }
    }

    fn fire_windows(&mut self, plan: &WindowedPlan, watermark: i64) -> Result<Option<Fired>> {
        let (width, slide, pane) = (self.width, self.slide, self.pane);
        let mut starts = Vec::new();
        let mut emit = Vec::new();
        let mut release = Vec::new();
        while let Some(&oldest) = self.panes.keys().next() {
            // The first window still to fire that holds the oldest pane.
            let start = self.next_window.max(ceil_to(oldest + pane - width, slide));
            if start.saturating_add(width) > watermark {
                break;
            }
            // (group holding the window's values, slot whose key it is)
            let mut window: Vec<(u32, u32)> = if width == pane {
                // TUMBLE (or a HOP whose slide is its width): the window is one pane.
                self.panes.get(&start).map(|t| t.iter().map(|&s| (s, s)).collect()).unwrap_or_default()
            } else {
                // A key found in one pane of the window is that pane's group as it is (most
                // keys, when keys are many); a key found in several gets a group of its own
                // (keyless: the key is read from a pane's group) that combines them.
                // Groups are combined only where the window's events are enough for HAVING.
                let mut out: Vec<(u32, u32)> = Vec::new();
                let mut events: Vec<u64> = Vec::new();
                let mut later: Vec<(u32, u32)> = Vec::new();
                let mut index: HashTable<u32> = HashTable::new();
                let panes: Vec<u32> = self.panes.range(start..start + width).flat_map(|(_, t)| t.iter().copied()).collect();
                index.reserve(panes.len(), |_| 0);
                for src in panes {
                    let key = &self.slots.keys[src as usize];
                    let h = self.hasher.hash_one(&**key);
                    let found = index.find(h, |&at| self.slots.keys[out[at as usize].1 as usize] == *key).copied();
                    let n = self.slots.info[src as usize].count;
                    match found {
                        None => {
                            out.push((src, src));
                            events.push(n);
                            let WindowState { slots, hasher, .. } = &*self;
                            index
                                .insert_unique(h, (out.len() - 1) as u32, |&at| hasher.hash_one(&*slots.keys[out[at as usize].1 as usize]));
                        }
                        Some(at) => {
                            events[at as usize] += n;
                            later.push((at, src));
                        }
                    }
                }
                for (at, src) in later {
                    if events[at as usize] < plan.min_events {
                        continue;
                    }
                    let (group, first) = out[at as usize];
                    let dst = if group == first {
                        let d = self.slots.alloc(Box::default(), &mut self.aggs);
                        self.combine(d, first)?;
                        release.push(d);
                        out[at as usize].0 = d;
                        d
                    } else {
                        group
                    };
                    self.combine(dst, src)?;
                }
                out.into_iter().zip(events).filter(|&(_, n)| n >= plan.min_events).map(|(g, _)| g).collect()
            };
            if width == pane {
                window.retain(|&(v, _)| self.could_pass(plan, v));
            }
            if !self.early.is_empty() {
                window.retain(|&(_, k)| !self.early.contains(&(start, self.slots.keys[k as usize].clone())));
            }
            window.sort_unstable_by(|&(_, a), &(_, b)| self.slots.keys[a as usize].cmp(&self.slots.keys[b as usize]));
            starts.extend(std::iter::repeat_n(start, window.len()));
            emit.extend(window);
            self.next_window = start + slide;
            // Panes no later window holds.
            while let Some(entry) = self.panes.first_entry() {
                if *entry.key() >= self.next_window {
                    break;
                }
                release.extend(entry.remove().iter().copied());
            }
        }
        if watermark > i64::MIN + width {
            // Every window ending by the watermark has fired, with state or without.
            let past = watermark - width;
            self.next_window = self.next_window.max((past - past.rem_euclid(slide)).saturating_add(slide));
        }
        let next = self.next_window;
        self.early.retain(|(s, _)| *s >= next);
        // A pane's own group (value slot = key slot) may be in later windows: its metadata is
        // copied, not taken.
        let metas = emit.iter().map(|&(s, k)| if s == k && width != pane { self.slots.meta(s) } else { self.slots.take_meta(s) }).collect();
        let (values, keys): (Vec<u32>, Vec<u32>) = emit.into_iter().unzip();
        let fired = self.assemble(plan, starts, &values, &keys, metas, false);
        for s in release {
            self.slots.release(s, &mut self.aggs);
        }
        fired
    }

    fn fire_sessions(&mut self, plan: &WindowedPlan, watermark: i64) -> Result<Option<Fired>> {
        let mut due: Vec<(i64, i64, u32)> = Vec::new();
        while let Some(&Reverse((at, s, generation))) = self.due.peek() {
            if at > watermark {
                break;
            }
            self.due.pop();
            let i = s as usize;
            if self.slots.info[i].alive && self.slots.info[i].generation == generation && self.slots.info[i].due_at == at {
                self.slots.info[i].due_at = i64::MIN;
                due.push((at, self.slots.info[i].first_seen, s));
            }
        }
        due.sort_by(|a, b| (a.0, a.1, &self.slots.keys[a.2 as usize]).cmp(&(b.0, b.1, &self.slots.keys[b.2 as usize])));
        for &(_, _, s) in &due {
            self.unlink_session(s);
        }
        // Not emitted: sessions that fired early, and those too small for HAVING.
        let (emit, dropped): (Vec<_>, Vec<_>) =
            due.into_iter().partition(|&(_, _, s)| !self.slots.info[s as usize].fired_early && self.could_pass(plan, s));
        let starts = emit.iter().map(|d| d.1).collect();
        let slots: Vec<u32> = emit.iter().map(|d| d.2).collect();
        let metas = slots.iter().map(|&s| self.slots.take_meta(s)).collect();
        let fired = self.assemble(plan, starts, &slots, &slots, metas, false);
        for s in slots.into_iter().chain(dropped.into_iter().map(|d| d.2)) {
            self.slots.release(s, &mut self.aggs);
        }
        fired
    }

    /// The aggregate batch (group columns then aggregates, as HAVING and SELECT expect) of
    /// `slots`, whose windows start at `starts` and whose keys are those of `key_slots`.
    fn assemble(
        &mut self,
        plan: &WindowedPlan,
        starts: Vec<i64>,
        slots: &[u32],
        key_slots: &[u32],
        metas: Vec<GroupMeta>,
        with_keys: bool,
    ) -> Result<Option<Fired>> {
        if slots.is_empty() {
            return Ok(None);
        }
        let parser = self.converter.parser();
        let key_columns = self.converter.convert_rows(key_slots.iter().map(|&s| parser.parse(&self.slots.keys[s as usize])))?;
        let n = slots.len();
        let starts_array: ArrayRef = Arc::new(TimestampNanosecondArray::from(starts.clone()).with_timezone("UTC"));
        let mut columns: Vec<ArrayRef> = Vec::new();
        let mut keys_iter = key_columns.into_iter();
        for g in 0..plan.keys.len() + 1 {
            if g == plan.window_pos {
                columns.push(starts_array.clone());
            } else {
                columns.push(keys_iter.next().context("key column count")?);
            }
        }
        for a in self.aggs.iter_mut() {
            columns.push(a.evaluate(slots)?);
        }
        // Names from the aggregate's schema; types from the values (accumulators may return a
        // type with other nullability than the logical schema says).
        let fields: Vec<Field> =
            plan.aggregate_schema.fields().iter().zip(&columns).map(|(f, c)| Field::new(f.name(), c.data_type().clone(), true)).collect();
        let batch =
            RecordBatch::try_new_with_options(Arc::new(Schema::new(fields)), columns, &RecordBatchOptions::new().with_row_count(Some(n)))?;
        let keys = if with_keys { key_slots.iter().map(|&s| self.slots.keys[s as usize].clone()).collect() } else { Vec::new() };
        Ok(Some(Fired { batch, window_starts: starts, keys, metas }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuids_round_trip_and_others_stay_text() {
        let id = "b0000000-0000-4000-8000-0000000000af";
        assert_eq!(parse_uuid(id).map(|u| format_uuid(&u)).as_deref(), Some(id));
        assert_eq!(parse_uuid("B0000000-0000-4000-8000-0000000000AF"), None);
        assert_eq!(parse_uuid("not-a-uuid"), None);
        let mut s = IdSample::default();
        s.push(id);
        s.push(id);
        s.push("other");
        assert_eq!(s.strings(), vec![id.to_string(), "other".to_string()]);
        for i in 0..20 {
            s.push(&format!("x{i}"));
        }
        assert_eq!(s.strings().len(), MAX_SAMPLE_IDS);
    }

    #[test]
    fn ceil_and_gcd() {
        assert_eq!(ceil_to(7, 5), 10);
        assert_eq!(ceil_to(10, 5), 10);
        assert_eq!(ceil_to(-7, 5), -5);
        assert_eq!(gcd(300, 120), 60);
    }
}
