//! Drops repeats of the same (auditID, stage): Event Hubs and Kafka deliver at least once, and
//! AKS may export a record twice. Memory is bounded: two generations of hashes, the older one
//! dropped when the newer fills, so a repeat is caught within the last 1–2 × `capacity` events.

use std::collections::HashSet;
use std::hash::{BuildHasher, BuildHasherDefault, Hash, Hasher};

use datafusion::arrow::array::{Array, AsArray, BooleanArray, RecordBatch};
use datafusion::arrow::compute::filter_record_batch;

/// The set's keys are already randomly keyed aHash values: hashing them again is wasted work.
#[derive(Default)]
struct AlreadyHashed(u64);

impl Hasher for AlreadyHashed {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Only u64 keys are stored; this path is not taken, but stays correct if it were.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ b as u64;
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

type HashSeen = HashSet<u64, BuildHasherDefault<AlreadyHashed>>;

pub struct Deduplicator {
    current: HashSeen,
    previous: HashSeen,
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
            // Sized once: growing by rehashing would copy the set again and again.
            current: HashSeen::with_capacity_and_hasher(capacity.max(1), Default::default()),
            previous: HashSeen::default(),
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
                // The old generation's allocation becomes the new current one.
                std::mem::swap(&mut self.previous, &mut self.current);
                self.current.clear();
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

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::StringArray;
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use std::sync::Arc;

    fn batch(ids: &[&str], stages: &[&str]) -> RecordBatch {
        let schema = Schema::new(vec![Field::new("id", DataType::Utf8, false), Field::new("stage", DataType::Utf8, true)]);
        RecordBatch::try_new(
            Arc::new(schema),
            vec![Arc::new(StringArray::from(ids.to_vec())), Arc::new(StringArray::from(stages.to_vec()))],
        )
        .unwrap()
    }

    #[test]
    fn drops_repeats_within_two_generations() {
        let mut d = Deduplicator::new(3, 0, 1);
        let out =
            d.apply(batch(&["a", "a", "b", "a"], &["ResponseStarted", "ResponseComplete", "ResponseComplete", "ResponseStarted"])).unwrap();
        assert_eq!(out.num_rows(), 3, "same id at another stage is kept, the repeat dropped");
        // The first generation rotated out after 3 keys; "a"/ResponseStarted is in the previous one.
        assert_eq!(d.apply(batch(&["c", "a"], &["x", "ResponseStarted"])).unwrap().num_rows(), 1);
        assert_eq!(d.dropped, 2);
        // Two generations later it is forgotten: memory stays bounded.
        d.apply(batch(&["f", "g", "h", "i", "j", "k", "l"], &["x"; 7])).unwrap();
        assert_eq!(d.apply(batch(&["a"], &["ResponseStarted"])).unwrap().num_rows(), 1);
    }
}
