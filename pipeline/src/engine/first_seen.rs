//! First sightings: "a source IP never seen for this account", "an image never seen in this
//! cluster". A rule (or a sequence step) names the entity whose history is kept (`by`) and the
//! value that must be new for it (`value`); a matched row passes only when its value is new for
//! an entity that already has a history.
//!
//! An entity seen for the first time passes nothing: its first value is its baseline, not an
//! anomaly. That is what keeps a cold start (a new deployment, a restart without saved state)
//! from alerting on everything. Where an entity has many normal values from the start (the
//! images of a cluster), `learn` extends the baseline to every value seen within that long of
//! the entity's first sighting. `forget` lets a value
//! not seen for that long count as new again. State is bounded by `max_pairs`: beyond it the
//! pairs seen least recently are dropped (and counted). With a state directory the history is
//! saved at every checkpoint and loaded at start-up.
//!
//! A single-event rule decides novelty in event-time order, for the matches the watermark has
//! passed (so within the allowed lateness, how partitions interleave does not change what is
//! new); a sequence step decides in arrival order.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use datafusion::arrow::array::ArrayRef;
use datafusion::common::ScalarValue;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::scalar_to_json;
use crate::rules::FirstSeenSpec;

/// (entity, value) pairs a rule keeps by default.
pub const DEFAULT_MAX_PAIRS: usize = 1_000_000;

/// Per entity: value → newest event time it was seen at.
type History = HashMap<String, i64>;

pub struct FirstSeen {
    spec: FirstSeenSpec,
    /// Entity key (the `by` values as JSON) → its history.
    seen: HashMap<String, History>,
    /// With `learn`: entity key → event time its learning period ends (dropped once over).
    learning: HashMap<String, i64>,
    pairs: usize,
    /// Approximate heap bytes of `seen`.
    pub bytes: usize,
    pub evictions: u64,
    /// Pairs were added or dropped since the last save (newer times alone do not count: they
    /// only refine `forget` and eviction order, not worth rewriting the file every checkpoint).
    dirty: bool,
}

/// What a state file holds.
#[derive(Serialize, Deserialize)]
struct Saved {
    version: u32,
    rule: String,
    by: Vec<String>,
    value: String,
    seen: HashMap<String, History>,
    #[serde(default)]
    learning: HashMap<String, i64>,
}

/// Bytes one (entity, value) pair costs besides its strings: hash-map slots and the time.
const PAIR_OVERHEAD: usize = 48;

impl FirstSeen {
    pub fn new(spec: &FirstSeenSpec, columns: &[String]) -> Result<FirstSeen> {
        if spec.by.is_empty() {
            bail!("first_seen needs `by`: the entity whose history is kept (an account, a cluster…)");
        }
        if let Some(missing) = spec.by.iter().chain([&spec.value]).find(|c| !columns.contains(c)) {
            bail!("first_seen column {missing:?} is not in the SELECT list");
        }
        if spec.by.contains(&spec.value) {
            bail!("first_seen: the value {:?} cannot also be in `by`", spec.value);
        }
        Ok(FirstSeen { spec: spec.clone(), seen: HashMap::new(), learning: HashMap::new(), pairs: 0, bytes: 0, evictions: 0, dirty: false })
    }

    /// [`FirstSeen::observe`] on row `row` of a rule's evaluated SELECT list (`names` gives the
    /// output names of `columns`). Only the columns it needs are converted: a first-sighting
    /// rule passes few of the rows it sees.
    pub fn observe_row(&mut self, names: &[String], columns: &[ArrayRef], row: usize, t: i64) -> datafusion::common::Result<bool> {
        let mut fields = Map::new();
        for c in self.spec.by.iter().chain([&self.spec.value]) {
            if let Some(i) = names.iter().position(|n| n == c) {
                fields.insert(c.clone(), scalar_to_json(&ScalarValue::try_from_array(&columns[i], row)?));
            }
        }
        Ok(self.observe(&fields, t))
    }

    pub fn live_pairs(&self) -> usize {
        self.pairs
    }

    /// Records the row's (entity, value) at event time `t`; true when the value is new for an
    /// entity that already had a history (or was forgotten for longer than `forget`).
    pub fn observe(&mut self, fields: &Map<String, Value>, t: i64) -> bool {
        let value = match fields.get(&self.spec.value) {
            None | Some(Value::Null) => return false,
            Some(Value::String(s)) => s.clone(),
            Some(v) => v.to_string(),
        };
        let key: Vec<&Value> = self.spec.by.iter().map(|b| fields.get(b).unwrap_or(&Value::Null)).collect();
        if key.iter().all(|v| v.is_null()) {
            return false;
        }
        let key = serde_json::to_string(&key).expect("JSON values serialize");
        let forget = self.spec.forget;
        let is_new_entity = !self.seen.contains_key(&key);
        let key_len = key.len();
        let learning = match self.spec.learn {
            Some(learn) if is_new_entity => {
                self.learning.insert(key.clone(), t.saturating_add(learn));
                true
            }
            Some(_) => match self.learning.get(&key) {
                Some(&until) if t < until => true,
                Some(_) => {
                    self.learning.remove(&key);
                    false
                }
                None => false,
            },
            None => false,
        };
        let history = self.seen.entry(key).or_default();
        if is_new_entity {
            self.bytes += key_len + PAIR_OVERHEAD;
        }
        let novel = match history.get_mut(&value) {
            Some(last) => {
                let stale = forget.is_some_and(|f| t.saturating_sub(*last) > f);
                *last = (*last).max(t);
                stale
            }
            None => {
                // New for this entity: an anomaly only if the entity has a baseline.
                let had_history = !history.is_empty() && !learning;
                self.bytes += value.len() + PAIR_OVERHEAD;
                history.insert(value, t);
                self.pairs += 1;
                self.dirty = true;
                had_history
            }
        };
        if self.pairs > self.spec.max_pairs {
            self.evict();
        }
        novel
    }

    /// Drops the tenth of pairs seen least recently: amortized, so observing stays O(1).
    fn evict(&mut self) {
        let mut times: Vec<i64> = self.seen.values().flat_map(|h| h.values().copied()).collect();
        let drop = (times.len() / 10).max(1);
        let (_, &mut cutoff, _) = times.select_nth_unstable(drop - 1);
        let mut dropped = 0usize;
        let mut freed = 0usize;
        self.seen.retain(|key, history| {
            history.retain(|value, t| {
                let keep = *t > cutoff || dropped >= drop;
                if !keep {
                    dropped += 1;
                    freed += value.len() + PAIR_OVERHEAD;
                }
                keep
            });
            if history.is_empty() {
                freed += key.len() + PAIR_OVERHEAD;
            }
            !history.is_empty()
        });
        let seen = &self.seen;
        self.learning.retain(|key, _| seen.contains_key(key));
        self.pairs -= dropped;
        self.evictions += dropped as u64;
        self.dirty = true;
        self.bytes = self.bytes.saturating_sub(freed);
    }

    fn file(dir: &Path, rule_id: &str, step: Option<usize>) -> PathBuf {
        let name = match step {
            Some(s) => format!("{rule_id}.step{}.json", s + 1),
            None => format!("{rule_id}.json"),
        };
        dir.join("first-seen").join(name)
    }

    /// Writes the history to `DIR/first-seen/RULE[.stepN].json` (whole, then renamed, so a
    /// crash leaves the previous file).
    pub fn save(&mut self, dir: &Path, rule_id: &str, step: Option<usize>) -> Result<()> {
        if !self.dirty {
            return Ok(());
        }
        let path = Self::file(dir, rule_id, step);
        let parent = path.parent().expect("has a folder");
        std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
        let saved = Saved {
            version: 1,
            rule: rule_id.to_string(),
            by: self.spec.by.clone(),
            value: self.spec.value.clone(),
            seen: self.seen.clone(),
            learning: self.learning.clone(),
        };
        let tmp = path.with_extension("json.tmp");
        let file = std::fs::File::create(&tmp).with_context(|| format!("writing {}", tmp.display()))?;
        serde_json::to_writer(std::io::BufWriter::new(file), &saved).with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, &path).with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))?;
        self.dirty = false;
        Ok(())
    }

    /// Loads a history saved by [`FirstSeen::save`], if there is one for this rule and spec.
    /// A file written for another `by`/`value` is ignored with a warning (the rule changed).
    pub fn load(&mut self, dir: &Path, rule_id: &str, step: Option<usize>) -> Result<()> {
        let path = Self::file(dir, rule_id, step);
        let text = match std::fs::read(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        let saved: Saved =
            serde_json::from_slice(&text).with_context(|| format!("{} is not a first-sighting state file", path.display()))?;
        if saved.by != self.spec.by || saved.value != self.spec.value {
            log::warn!(
                "{}: written for by {:?} / value {:?}, the rule now uses {:?} / {:?}: starting afresh",
                path.display(),
                saved.by,
                saved.value,
                self.spec.by,
                self.spec.value
            );
            return Ok(());
        }
        self.pairs = saved.seen.values().map(HashMap::len).sum();
        self.bytes =
            saved.seen.iter().map(|(k, h)| k.len() + PAIR_OVERHEAD + h.keys().map(|v| v.len() + PAIR_OVERHEAD).sum::<usize>()).sum();
        self.seen = saved.seen;
        self.learning = saved.learning;
        log::info!("rule {rule_id}: loaded {} first-sighting pairs from {}", self.pairs, path.display());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(forget: Option<i64>, max_pairs: usize) -> FirstSeenSpec {
        FirstSeenSpec { by: vec!["account".into()], value: "ip".into(), forget, max_pairs, learn: None }
    }

    fn row(account: &str, ip: &str) -> Map<String, Value> {
        serde_json::json!({"account": account, "ip": ip}).as_object().unwrap().clone()
    }

    #[test]
    fn a_new_value_of_a_known_entity_is_novel_and_a_first_entity_is_its_baseline() {
        let mut f = FirstSeen::new(&spec(None, 100), &["account".into(), "ip".into()]).unwrap();
        assert!(!f.observe(&row("sa", "10.0.0.1"), 1), "the first sighting of an entity is its baseline");
        assert!(!f.observe(&row("sa", "10.0.0.1"), 2));
        assert!(f.observe(&row("sa", "198.51.100.7"), 3), "a new IP for a known account");
        assert!(!f.observe(&row("sa", "198.51.100.7"), 4), "only once");
        assert!(!f.observe(&row("other", "198.51.100.7"), 5));
        assert_eq!(f.live_pairs(), 3);
    }

    #[test]
    fn values_within_the_learning_period_are_baseline() {
        let learn = FirstSeenSpec { learn: Some(100), ..spec(None, 100) };
        let mut f = FirstSeen::new(&learn, &["account".into(), "ip".into()]).unwrap();
        assert!(!f.observe(&row("sa", "a"), 1000));
        assert!(!f.observe(&row("sa", "b"), 1050), "still learning");
        assert!(f.observe(&row("sa", "c"), 1101), "learning is over");
        assert!(!f.observe(&row("sa", "b"), 1200), "learnt");
        assert!(f.learning.is_empty(), "an entity's learning period is dropped once over");
    }

    #[test]
    fn forget_makes_an_old_value_new_again() {
        let mut f = FirstSeen::new(&spec(Some(100), 100), &["account".into(), "ip".into()]).unwrap();
        f.observe(&row("sa", "a"), 0);
        f.observe(&row("sa", "b"), 10);
        assert!(!f.observe(&row("sa", "a"), 50));
        assert!(f.observe(&row("sa", "a"), 200), "not seen for longer than forget");
    }

    #[test]
    fn the_cap_evicts_the_least_recently_seen_pairs_and_counts_them() {
        let mut f = FirstSeen::new(&spec(None, 50), &["account".into(), "ip".into()]).unwrap();
        for i in 0..200 {
            f.observe(&row(&format!("sa{}", i % 7), &format!("10.0.0.{i}")), i);
        }
        assert!(f.live_pairs() <= 50, "{}", f.live_pairs());
        assert_eq!(f.evictions as usize + f.live_pairs(), 200);
        // The newest pair survived eviction.
        assert!(f.seen.values().any(|h| h.contains_key("10.0.0.199")));
    }

    #[test]
    fn state_survives_a_save_and_load_and_a_changed_spec_starts_afresh() {
        let dir = tempfile::tempdir().unwrap();
        let cols = ["account".to_string(), "ip".to_string()];
        let mut f = FirstSeen::new(&spec(None, 100), &cols).unwrap();
        f.observe(&row("sa", "10.0.0.1"), 1);
        f.save(dir.path(), "R-1", None).unwrap();
        let mut g = FirstSeen::new(&spec(None, 100), &cols).unwrap();
        g.load(dir.path(), "R-1", None).unwrap();
        assert!(g.observe(&row("sa", "10.9.9.9"), 2), "the loaded history is the baseline");
        let other = FirstSeenSpec { by: vec!["ip".into()], value: "account".into(), forget: None, max_pairs: 100, learn: None };
        let mut h = FirstSeen::new(&other, &cols).unwrap();
        h.load(dir.path(), "R-1", None).unwrap();
        assert_eq!(h.live_pairs(), 0);
    }
}
