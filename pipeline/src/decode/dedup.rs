//! Drops repeats: Event Hubs and Kafka deliver at least once, AKS may export an audit record
//! twice, and Log Analytics data export may redeliver records for hours. An audit event is a
//! repeat when its (auditID, stage) was seen; a Container Insights record, which has no id, when
//! a record of the same table had every column equal. Memory is bounded: two generations of
//! hashes, the older one dropped when the newer fills, so a repeat is caught within the last
//! 1–2 × `capacity` events.

use std::collections::HashSet;
use std::hash::{BuildHasher, BuildHasherDefault, Hash, Hasher};

use datafusion::arrow::array::{Array, AsArray, BooleanArray, RecordBatch};
use datafusion::arrow::compute::filter_record_batch;

/// For sets whose keys are hash values already (aHash here, 128-bit hashes in count(DISTINCT)):
/// hashing them again is wasted work.
#[derive(Default)]
pub struct AlreadyHashed(u64);

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
    fn write_u128(&mut self, n: u128) {
        self.0 = (n as u64) ^ ((n >> 64) as u64);
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

    /// The batch of `table` without rows already seen.
    pub fn apply(&mut self, table: &str, batch: RecordBatch) -> datafusion::common::Result<RecordBatch> {
        let mut keys = vec![0u64; batch.num_rows()];
        if table == crate::tables::KUBE_AUDIT {
            let ids = batch.column(self.audit_id_col).as_string::<i32>();
            let stages = batch.column(self.stage_col).as_string::<i32>();
            for (i, key) in keys.iter_mut().enumerate() {
                let mut h = self.hasher.build_hasher();
                ids.value(i).hash(&mut h);
                (stages.is_valid(i).then(|| stages.value(i))).hash(&mut h);
                *key = h.finish();
            }
        } else {
            // DataFusion's row hashing, seeded from this run's random aHash keys.
            let state = datafusion::common::hash_utils::RandomState::with_seed(self.hasher.hash_one(table));
            datafusion::common::hash_utils::create_hashes(batch.columns(), &state, &mut keys)?;
            let salt = self.hasher.hash_one(table);
            for key in keys.iter_mut() {
                *key = key.rotate_left(17) ^ salt;
            }
        }
        let mut keep = Vec::with_capacity(batch.num_rows());
        let mut dropped = 0;
        for key in keys {
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
        let out = d
            .apply(
                "kube_audit",
                batch(&["a", "a", "b", "a"], &["ResponseStarted", "ResponseComplete", "ResponseComplete", "ResponseStarted"]),
            )
            .unwrap();
        assert_eq!(out.num_rows(), 3, "same id at another stage is kept, the repeat dropped");
        // The first generation rotated out after 3 keys; "a"/ResponseStarted is in the previous one.
        assert_eq!(d.apply("kube_audit", batch(&["c", "a"], &["x", "ResponseStarted"])).unwrap().num_rows(), 1);
        assert_eq!(d.dropped, 2);
        // Two generations later it is forgotten: memory stays bounded.
        d.apply("kube_audit", batch(&["f", "g", "h", "i", "j", "k", "l"], &["x"; 7])).unwrap();
        assert_eq!(d.apply("kube_audit", batch(&["a"], &["ResponseStarted"])).unwrap().num_rows(), 1);
    }

    #[test]
    fn other_tables_drop_rows_equal_in_every_column() {
        let mut d = Deduplicator::new(100, 0, 1);
        let out = d.apply("container_log", batch(&["a", "a", "a"], &["x", "y", "x"])).unwrap();
        assert_eq!(out.num_rows(), 2, "the third row repeats the first in every column");
        // The same values in another table are another record.
        assert_eq!(d.apply("kube_events", batch(&["a"], &["x"])).unwrap().num_rows(), 1);
        assert_eq!(d.dropped, 1);
    }
}
