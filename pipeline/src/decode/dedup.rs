//! Drops repeats of the same (auditID, stage): Event Hubs and Kafka deliver at least once, and
//! AKS may export a record twice. Memory is bounded: two generations of hashes, the older one
//! dropped when the newer fills, so a repeat is caught within the last 1–2 × `capacity` events.

use std::collections::HashSet;
use std::hash::{BuildHasher, Hash, Hasher};

use datafusion::arrow::array::{Array, AsArray, BooleanArray, RecordBatch};
use datafusion::arrow::compute::filter_record_batch;

pub struct Deduplicator {
    current: HashSet<u64>,
    previous: HashSet<u64>,
    capacity: usize,
    /// aHash: several times faster than SipHash here, and still randomly keyed.
    hasher: ahash::RandomState,
    audit_id_col: usize,
    stage_col: usize,
    pub dropped: u64,
}

impl Deduplicator {
    pub fn new(capacity: usize, audit_id_col: usize, stage_col: usize) -> Self {
        Deduplicator {
            current: HashSet::new(),
            previous: HashSet::new(),
            capacity: capacity.max(1),
            hasher: Default::default(),
            audit_id_col,
            stage_col,
            dropped: 0,
        }
    }

    /// The batch without rows already seen.
    pub fn apply(&mut self, batch: RecordBatch) -> datafusion::common::Result<RecordBatch> {
        let ids = batch.column(self.audit_id_col).as_string::<i32>();
        let stages = batch.column(self.stage_col).as_string::<i32>();
        let mut keep = Vec::with_capacity(batch.num_rows());
        let mut dropped = 0;
        for i in 0..batch.num_rows() {
            let mut h = self.hasher.build_hasher();
            ids.value(i).hash(&mut h);
            (stages.is_valid(i).then(|| stages.value(i))).hash(&mut h);
            let key = h.finish();
            let seen = self.previous.contains(&key) || !self.current.insert(key);
            if seen {
                dropped += 1;
            } else if self.current.len() >= self.capacity {
                self.previous = std::mem::take(&mut self.current);
            }
            keep.push(!seen);
        }
        self.dropped += dropped;
        if dropped == 0 {
            return Ok(batch);
        }
        Ok(filter_record_batch(&batch, &BooleanArray::from(keep))?)
    }
}
