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

use anyhow::{bail, Result};
use datafusion::arrow::array::{Array, ArrayRef, AsArray};
use datafusion::common::ScalarValue;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::scalar_to_json;
use crate::rules::FirstSeenSpec;

/// aHash, not SipHash: every row of a first-sighting rule looks up its entity and value.
type FastMap<V> = HashMap<String, V, ahash::RandomState>;

/// Per entity: value → newest event time it was seen at.
type History = FastMap<i64>;

pub struct FirstSeen {
    spec: FirstSeenSpec,
    /// Entity key (the `by` values as JSON) → its history.
    seen: FastMap<History>,
    /// With `learn`: entity key → event time its learning period ends (dropped once over).
    learning: FastMap<i64>,
    pairs: usize,
    /// Approximate heap bytes of `seen`.
    pub bytes: usize,
    pub evictions: u64,
    /// Reused for the entity key of each row.
    key_buf: Vec<u8>,
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
    seen: FastMap<History>,
    #[serde(default)]
    learning: FastMap<i64>,
}

/// Bytes one (entity, value) pair costs besides its strings: hash-map slots and the time.
const PAIR_OVERHEAD: usize = 48;

/// The entity key of row `row` (its `by` values as a JSON array, the text
/// [`FirstSeen::observe`] makes from JSON values) written into `key`, and its value, when every
/// column is a string. None: a column of another type; Some(None): no pair (a null value, or
/// every `by` value null).
fn string_pair<'c>(
    spec: &FirstSeenSpec,
    names: &[String],
    columns: &'c [ArrayRef],
    row: usize,
    key: &mut Vec<u8>,
) -> Option<Option<&'c str>> {
    let strings = |name: &String| names.iter().position(|n| n == name).and_then(|i| columns[i].as_string_opt::<i32>());
    let value = strings(&spec.value)?;
    key.clear();
    key.push(b'[');
    let mut any = false;
    for (n, by) in spec.by.iter().enumerate() {
        let column = strings(by)?;
        if n > 0 {
            key.push(b',');
        }
        if column.is_valid(row) {
            serde_json::to_writer(&mut *key, column.value(row)).expect("writing to a Vec");
            any = true;
        } else {
            key.extend_from_slice(b"null");
        }
    }
    key.push(b']');
    Some((value.is_valid(row) && any).then(|| value.value(row)))
}

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
        Ok(FirstSeen {
            spec: spec.clone(),
            seen: FastMap::default(),
            learning: FastMap::default(),
            pairs: 0,
            bytes: 0,
            evictions: 0,
            key_buf: Vec::new(),
            dirty: false,
        })
    }

    /// [`FirstSeen::observe`] on row `row` of a rule's evaluated SELECT list (`names` gives the
    /// output names of `columns`). Only the columns it needs are read: a first-sighting rule
    /// passes few of the rows it sees, and most rows repeat a known pair.
    pub fn observe_row(&mut self, names: &[String], columns: &[ArrayRef], row: usize, t: i64) -> datafusion::common::Result<bool> {
        if let Some(novel) = self.observe_string_row(names, columns, row, t) {
            return Ok(novel);
        }
        let mut fields = Map::new();
        for c in self.spec.by.iter().chain([&self.spec.value]) {
            if let Some(i) = names.iter().position(|n| n == c) {
                fields.insert(c.clone(), scalar_to_json(&ScalarValue::try_from_array(&columns[i], row)?));
            }
        }
        Ok(self.observe(&fields, t))
    }

    /// The common case, every column a string: the entity key is written straight into a
    /// reused buffer, the same text [`FirstSeen::observe`] makes from JSON values, and a known
    /// pair allocates nothing. None when a column is of another type.
    fn observe_string_row(&mut self, names: &[String], columns: &[ArrayRef], row: usize, t: i64) -> Option<bool> {
        let mut key = std::mem::take(&mut self.key_buf);
        let Some(pair) = string_pair(&self.spec, names, columns, row, &mut key) else {
            self.key_buf = key;
            return None;
        };
        let novel = match pair {
            // SAFETY: `string_pair` writes UTF-8 (serde_json's, and ASCII).
            Some(value) => self.observe_pair(unsafe { std::str::from_utf8_unchecked(&key) }, value, t),
            None => false,
        };
        self.key_buf = key;
        Some(novel)
    }

    /// Whether row `row`'s (entity, value) pair was seen at or before `t` and not forgotten
    /// since: then the row cannot be a first sighting whatever order the rows are decided in,
    /// and it is recorded here (its time refines `forget`) instead of waiting for the watermark.
    /// A single-event rule skips building such rows (most rows of a first-sighting rule repeat
    /// a known pair). False for anything else, non-string columns included.
    pub fn known_before(&mut self, names: &[String], columns: &[ArrayRef], row: usize, t: i64) -> bool {
        let mut key = std::mem::take(&mut self.key_buf);
        let forget = self.spec.forget;
        let known = match string_pair(&self.spec, names, columns, row, &mut key) {
            // SAFETY: `string_pair` writes UTF-8 (serde_json's, and ASCII).
            Some(Some(value)) => {
                self.seen.get_mut(unsafe { std::str::from_utf8_unchecked(&key) }).and_then(|h| h.get_mut(value)).is_some_and(|last| {
                    let fresh = *last <= t && !forget.is_some_and(|f| t.saturating_sub(*last) > f);
                    if fresh {
                        *last = t;
                    }
                    fresh
                })
            }
            _ => false,
        };
        self.key_buf = key;
        known
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
        self.observe_pair(&key, &value, t)
    }

    /// Records `value` for the entity `key` (its `by` values as a JSON array) at time `t`.
    fn observe_pair(&mut self, key: &str, value: &str, t: i64) -> bool {
        let forget = self.spec.forget;
        let is_new_entity = !self.seen.contains_key(key);
        let learning = match self.spec.learn {
            Some(learn) if is_new_entity => {
                self.learning.insert(key.to_string(), t.saturating_add(learn));
                true
            }
            Some(_) => match self.learning.get(key) {
                Some(&until) if t < until => true,
                Some(_) => {
                    self.learning.remove(key);
                    false
                }
                None => false,
            },
            None => false,
        };
        if is_new_entity {
            self.bytes += key.len() + PAIR_OVERHEAD;
            self.seen.insert(key.to_string(), History::default());
        }
        let history = self.seen.get_mut(key).expect("inserted above");
        let novel = match history.get_mut(value) {
            Some(last) => {
                let stale = forget.is_some_and(|f| t.saturating_sub(*last) > f);
                *last = (*last).max(t);
                stale
            }
            None => {
                // New for this entity: an anomaly only if the entity has a baseline.
                let had_history = !history.is_empty() && !learning;
                self.bytes += value.len() + PAIR_OVERHEAD;
                history.insert(value.to_string(), t);
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
        let saved = Saved {
            version: 1,
            rule: rule_id.to_string(),
            by: self.spec.by.clone(),
            value: self.spec.value.clone(),
            seen: self.seen.clone(),
            learning: self.learning.clone(),
        };
        super::state_file::write(&path, &saved)?;
        self.dirty = false;
        Ok(())
    }

    /// Loads a history saved by [`FirstSeen::save`], if there is one for this rule and spec.
    /// A file written for another `by`/`value` is ignored with a warning (the rule changed).
    pub fn load(&mut self, dir: &Path, rule_id: &str, step: Option<usize>) -> Result<()> {
        let path = Self::file(dir, rule_id, step);
        let Some(saved) = super::state_file::read::<Saved>(&path, "first-sighting")? else {
            return Ok(());
        };
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
        self.pairs = saved.seen.values().map(|h| h.len()).sum();
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
    fn only_a_pair_seen_before_and_not_forgotten_is_known_before() {
        use datafusion::arrow::array::StringArray;
        use std::sync::Arc;
        let mut f = FirstSeen::new(&spec(Some(100), 100), &["account".into(), "ip".into()]).unwrap();
        f.observe(&row("sa", "10.0.0.1"), 1000);
        let names = ["account".to_string(), "ip".to_string()];
        let columns: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from(vec!["sa", "sa", "sa", "other"])),
            Arc::new(StringArray::from(vec!["10.0.0.1", "10.0.0.2", "10.0.0.1", "10.0.0.1"])),
        ];
        assert!(!f.known_before(&names, &columns, 0, 999), "seen only after this row");
        assert!(f.known_before(&names, &columns, 0, 1050), "seen before");
        assert!(!f.known_before(&names, &columns, 1, 1060), "a new value");
        assert!(!f.known_before(&names, &columns, 3, 1060), "a new entity");
        assert!(f.known_before(&names, &columns, 2, 1140), "its time moved to 1050 above: not forgotten");
        assert!(!f.known_before(&names, &columns, 2, 1300), "unseen for longer than forget");
        assert!(f.observe(&row("sa", "10.0.0.1"), 1300), "and the pipeline decides it: new again");
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

    #[test]
    fn string_columns_are_read_as_their_json_values_are() {
        use datafusion::arrow::array::StringArray;
        use std::sync::Arc;
        // Two `by` columns, nulls, and text JSON must escape: the fast path must build the same
        // entity keys as the JSON path (state files hold them), and pass the same rows.
        let two = FirstSeenSpec { by: vec!["account".into(), "ns".into()], value: "ip".into(), forget: None, max_pairs: 100, learn: None };
        let names: Vec<String> = ["account", "ns", "ip"].map(String::from).to_vec();
        let accounts = [Some("sa"), Some("sa"), Some("q\"uote"), None, Some("sa"), None, Some("sa")];
        let namespaces = [Some("web"), Some("web"), Some("x"), None, Some("web"), Some("n"), Some("web")];
        let ips = [Some("10.0.0.1"), Some("10.0.0.2"), Some("é"), Some("1.1.1.1"), None, Some("2.2.2.2"), Some("10.0.0.3")];
        let columns: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from(accounts.to_vec())),
            Arc::new(StringArray::from(namespaces.to_vec())),
            Arc::new(StringArray::from(ips.to_vec())),
        ];
        let mut fast = FirstSeen::new(&two, &names).unwrap();
        let mut slow = FirstSeen::new(&two, &names).unwrap();
        for row in 0..accounts.len() {
            let mut fields = Map::new();
            for (name, v) in names.iter().zip([accounts[row], namespaces[row], ips[row]]) {
                fields.insert(name.clone(), v.map_or(Value::Null, |s| Value::String(s.into())));
            }
            let t = row as i64;
            assert_eq!(fast.observe_row(&names, &columns, row, t).unwrap(), slow.observe(&fields, t), "row {row}");
        }
        assert_eq!(fast.seen, slow.seen);
        assert_eq!((fast.pairs, fast.bytes), (slow.pairs, slow.bytes));
        assert!(fast.seen.contains_key(r#"["q\"uote","x"]"#) && fast.seen.contains_key(r#"[null,"n"]"#), "{:?}", fast.seen.keys());
    }
}
