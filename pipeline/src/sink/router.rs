//! Between the engine and the sinks: drops alerts already delivered (same deterministic id:
//! an exec logged at two stages, a replay) and alerts suppressed by their rule's `suppress`
//! period for the same entities.

use std::collections::{HashMap, HashSet, VecDeque};

use crate::alert::{entity_key, Alert};

pub struct AlertRouter {
    recent_ids: HashSet<String>,
    order: VecDeque<String>,
    capacity: usize,
    /// Per rule id, the suppression period in nanoseconds of event time.
    periods: HashMap<String, i64>,
    /// Entity key → event time until which alerts are suppressed.
    suppressed_until: HashMap<String, i64>,
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
            suppressed_until: HashMap::new(),
            duplicates: 0,
            suppressed: 0,
        }
    }

    /// The alerts to deliver, in order.
    pub fn route(&mut self, alerts: Vec<Alert>) -> Vec<Alert> {
        let mut out = Vec::with_capacity(alerts.len());
        for a in alerts {
            if self.recent_ids.contains(&a.id) {
                self.duplicates += 1;
                continue;
            }
            if let Some(&period) = self.periods.get(&a.rule_id) {
                let key = entity_key(&a.rule_id, &a.entities);
                let first = parse_time(&a.first_seen).unwrap_or(a.last_seen_nanos);
                if self.suppressed_until.get(&key).is_some_and(|&until| first < until) {
                    self.suppressed += 1;
                    continue;
                }
                self.suppressed_until.insert(key, a.last_seen_nanos.saturating_add(period));
            }
            self.remember(a.id.clone());
            out.push(a);
        }
        // Suppression entries of the past are dead weight: drop them now and then.
        if self.suppressed_until.len() > self.capacity {
            let newest = self.suppressed_until.values().copied().max().unwrap_or(i64::MIN);
            let horizon = self.periods.values().copied().max().unwrap_or(0);
            self.suppressed_until.retain(|_, until| *until > newest.saturating_sub(horizon));
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
