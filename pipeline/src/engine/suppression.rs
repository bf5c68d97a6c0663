//! Suppression decided before an alert is built.
//!
//! The alert router (`sink::router`) is the authority on suppression: one alert per rule,
//! entities and aligned period. But building an alert (its fields as JSON, its id, its header)
//! costs far more than deciding it will be dropped, and a noisy rule can produce tens of
//! thousands of candidates for every alert it keeps. So a rule with `suppress` remembers here
//! the (entities, period) pairs it already alerted on, and a repeat costs a hash lookup.
//!
//! Equivalent to the router: a pair seen here was handed to the router, which remembered it
//! before anything else, so it would have suppressed every repeat too. The memory here is
//! bounded and may forget (the router then still suppresses); it never suppresses what the
//! router would not, barring a 128-bit hash collision.

use std::collections::HashSet;
use std::hash::{BuildHasher, Hash, Hasher};

use anyhow::Result;
use datafusion::arrow::array::{Array, ArrayRef, AsArray};
use datafusion::common::ScalarValue;

use super::functions::hash128_seeds;
use crate::rules::Rule;

/// Pairs remembered per rule before the older periods are forgotten.
const CAPACITY: usize = 1 << 16;

pub struct SuppressionMemo {
    period: i64,
    /// Positions of the rule's entities in its SELECT list.
    entity_columns: Vec<usize>,
    seen: HashSet<(u128, i64), ahash::RandomState>,
    newest_period: i64,
    /// Candidates dropped here (the router never saw them).
    pub suppressed: u64,
}

impl SuppressionMemo {
    /// The memo of `rule`, if it suppresses; `names` is its SELECT list.
    pub fn of(rule: &Rule, names: &[String]) -> Option<SuppressionMemo> {
        let period = rule.suppress.filter(|&p| p > 0)?;
        let entity_columns = rule.entities.iter().map(|e| names.iter().position(|n| n == e)).collect::<Option<Vec<_>>>()?;
        Some(SuppressionMemo { period, entity_columns, seen: HashSet::default(), newest_period: i64::MIN, suppressed: 0 })
    }

    /// Whether the alert of `row` (of the SELECT list's `columns`), first seen at `first_seen`,
    /// repeats one already made for the same entities and period. If not, it is remembered:
    /// the caller builds that alert.
    pub fn repeats(&mut self, columns: &[ArrayRef], row: usize, first_seen: i64) -> Result<bool> {
        let start = first_seen - first_seen.rem_euclid(self.period);
        let key = (self.entities_hash(columns, row)?, start);
        if self.seen.contains(&key) {
            self.suppressed += 1;
            return Ok(true);
        }
        if self.seen.len() >= CAPACITY {
            // Keep the newest two periods: out-of-order repeats from older ones are still
            // suppressed by the router.
            let keep_from = self.newest_period.saturating_sub(self.period);
            self.seen.retain(|&(_, p)| p >= keep_from);
            if self.seen.len() >= CAPACITY {
                self.seen.clear();
            }
        }
        self.newest_period = self.newest_period.max(start);
        self.seen.insert(key);
        Ok(false)
    }

    fn entities_hash(&self, columns: &[ArrayRef], row: usize) -> Result<u128> {
        // Hashed as count(DISTINCT) hashes its values: two independent 64-bit hashes.
        let seeds = hash128_seeds();
        let (mut a, mut b) = (seeds.0.build_hasher(), seeds.1.build_hasher());
        for &c in &self.entity_columns {
            let col = &columns[c];
            match col.as_string_opt::<i32>() {
                // Strings, most entities: no value built.
                Some(s) => {
                    let v = s.is_valid(row).then(|| s.value(row));
                    v.hash(&mut a);
                    v.hash(&mut b);
                }
                None => {
                    let v = ScalarValue::try_from_array(col, row)?;
                    v.hash(&mut a);
                    v.hash(&mut b);
                }
            }
        }
        Ok(((a.finish() as u128) << 64) | b.finish() as u128)
    }
}
