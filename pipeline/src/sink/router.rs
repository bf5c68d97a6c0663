//! Between the engine and the sinks: drops alerts already delivered (same deterministic id:
//! an exec logged at two stages, a replay) and alerts suppressed by their rule's `suppress`
//! period for the same entities.
//!
//! Suppression periods are aligned to multiples of the period in event time (UTC): one alert
//! per rule, entities and period. Aligned, the outcome does not depend on arrival order (a Kafka
//! topic's partitions interleave differently on every run), and neither does the alert id,
//! which for single-event rules is derived from the period (see the engine).

use std::collections::{HashMap, HashSet, VecDeque};

use crate::alert::{entity_key, Alert};

pub struct AlertRouter {
    recent_ids: HashSet<String>,
    order: VecDeque<String>,
    capacity: usize,
    /// Per rule id, the suppression period in nanoseconds of event time.
    periods: HashMap<String, i64>,
    /// (entity key, start of the aligned period) pairs that already alerted.
    alerted: HashSet<(String, i64)>,
    pub duplicates: u64,
    pub suppressed: u64,
}

impl AlertRouter {
    pub fn new(periods: HashMap<String, i64>, capacity: usize) -> Self {
        AlertRouter {
            recent_ids: HashSet::new(),
            order: VecDeque::new(),
            capacity,
            periods,
            alerted: HashSet::new(),
            duplicates: 0,
            suppressed: 0,
        }
    }

    /// Counts `n` candidates the engine suppressed before building them (see
    /// `engine::suppression`), so the figures cover both.
    pub fn count_suppressed_upstream(&mut self, n: u64) {
        self.suppressed += n;
    }

    /// The alerts to deliver, in order.
    pub fn route(&mut self, alerts: Vec<Alert>) -> Vec<Alert> {
        let mut out = Vec::with_capacity(alerts.len());
        for a in alerts {
            if let Some(&period) = self.periods.get(&a.rule_id) {
                let first = parse_time(&a.first_seen).unwrap_or(a.last_seen_nanos);
                let period_start = first - first.rem_euclid(period.max(1));
                if !self.alerted.insert((entity_key(&a.rule_id, &a.entities), period_start)) {
                    self.suppressed += 1;
                    continue;
                }
            }
            if self.recent_ids.contains(&a.id) {
                self.duplicates += 1;
                continue;
            }
            self.remember(a.id.clone());
            out.push(a);
        }
        // Periods long past are dead weight: past the cap, drop the older half.
        if self.alerted.len() > self.capacity {
            let mut starts: Vec<i64> = self.alerted.iter().map(|(_, p)| *p).collect();
            let mid = starts.len() / 2;
            let (_, &mut cutoff, _) = starts.select_nth_unstable(mid);
            self.alerted.retain(|(_, p)| *p > cutoff);
        }
        out
    }

    fn remember(&mut self, id: String) {
        if self.order.len() >= self.capacity {
            if let Some(old) = self.order.pop_front() {
                self.recent_ids.remove(&old);
            }
        }
        self.recent_ids.insert(id.clone());
        self.order.push_back(id);
    }
}

fn parse_time(s: &str) -> Option<i64> {
    crate::decode::time::parse_rfc3339_nanos(s)
}
