//! Rule files (`detections/rules/*.yaml`) and named lists (`detections/lists/*.yaml`):
//! loading, validation and the durations they are written with. Planning the SQL is the
//! engine's job; this module only knows the file formats.

pub mod catalog;
pub mod coverage;
pub mod lists;
pub mod sigma;
pub mod test_case;

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};

pub use lists::{List, Lists};

/// `detections/` as compiled in by build.rs.
pub(crate) mod bundled {
    include!(concat!(env!("OUT_DIR"), "/bundled_detections.rs"));
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Informational,
    Low,
    Medium,
    High,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Informational => "informational",
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }
}

/// One rule file, as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    pub id: String,
    pub title: String,
    #[serde(default)]
    pub description: String,
    pub severity: Severity,
    #[serde(default)]
    pub mitre: Vec<String>,
    /// Cells of Microsoft's Threat Matrix for Kubernetes ("Tactic - Technique"; see catalog).
    #[serde(default)]
    pub threat_matrix: Vec<String>,
    /// The hardening controls (catalog::CONTROLS ids) this rule watches.
    #[serde(default)]
    pub controls: Vec<String>,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub false_positives: String,
    #[serde(default)]
    pub entities: Vec<String>,
    #[serde(default, deserialize_with = "de_opt_duration")]
    pub suppress: Option<i64>,
    #[serde(default, deserialize_with = "de_opt_duration")]
    pub allowed_lateness: Option<i64>,
    /// Windowed rules: alert as soon as HAVING holds inside an open window (once per window
    /// and key), instead of when the window closes.
    #[serde(default)]
    pub early: bool,
    /// Windowed rules: at most this many live (window, key) groups; the least recently active
    /// is evicted beyond. Default: `[rules] max_groups_per_rule`.
    #[serde(default)]
    pub max_groups: Option<usize>,
    /// The rule's SQL (single-event or windowed); empty for sequence rules.
    #[serde(default)]
    pub query: String,
    /// Single-event rules: alert only when a value is new for its entity ("an IP never seen
    /// for this account").
    #[serde(default)]
    pub first_seen: Option<FirstSeenSpec>,
    /// A sequence rule instead of `query`: ordered steps by the same key within a span.
    #[serde(default)]
    pub sequence: Option<SequenceSpec>,
    #[serde(default)]
    pub tests: Vec<test_case::TestCase>,
    /// Where the rule was read from (set by the loader).
    #[serde(skip)]
    pub path: PathBuf,
}

/// Ordered steps by the same key within a span, or (`absent`) a first step not followed by the
/// second within the span.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SequenceSpec {
    /// Output columns every step gives: the key the steps must share.
    pub by: Vec<String>,
    #[serde(deserialize_with = "de_duration")]
    pub within: i64,
    #[serde(default)]
    pub absent: bool,
    /// Single-event queries, in the order they must occur.
    pub steps: Vec<StepSpec>,
}

/// A sequence step: its SQL, or its SQL and a first-sighting condition.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum StepSpec {
    Query(String),
    Full {
        query: String,
        #[serde(default)]
        first_seen: Option<FirstSeenSpec>,
    },
}

impl StepSpec {
    pub fn query(&self) -> &str {
        match self {
            StepSpec::Query(q) | StepSpec::Full { query: q, .. } => q,
        }
    }

    pub fn first_seen(&self) -> Option<&FirstSeenSpec> {
        match self {
            StepSpec::Query(_) => None,
            StepSpec::Full { first_seen, .. } => first_seen.as_ref(),
        }
    }
}

/// A row passes only when `value` is new for the entity `by` names, and that entity already
/// had a history (see engine::first_seen).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FirstSeenSpec {
    /// Output columns naming the entity whose history is kept.
    pub by: Vec<String>,
    /// The output column whose value must be new for the entity.
    pub value: String,
    /// A value not seen for this long counts as new again.
    #[serde(default, deserialize_with = "de_opt_duration")]
    pub forget: Option<i64>,
    /// For this long after an entity is first seen, its new values are baseline too (a cluster
    /// runs dozens of images from the start; only those after the first hour are news).
    #[serde(default, deserialize_with = "de_opt_duration")]
    pub learn: Option<i64>,
    /// (entity, value) pairs kept at most; the least recently seen go first.
    #[serde(default = "default_max_pairs")]
    pub max_pairs: usize,
}

/// (entity, value) pairs a first-sighting rule keeps by default.
pub const DEFAULT_MAX_PAIRS: usize = 1_000_000;

fn default_max_pairs() -> usize {
    DEFAULT_MAX_PAIRS
}

fn de_duration<'de, D: serde::Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    let s = String::deserialize(d)?;
    parse_duration(&s).map_err(serde::de::Error::custom)
}

/// Parses `30s`, `5m`, `1h`, `2d`, `250ms` into nanoseconds.
pub fn parse_duration(s: &str) -> Result<i64> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).ok_or_else(|| anyhow!("duration {s:?} has no unit (use ms, s, m, h or d)"))?;
    let (num, unit) = s.split_at(split);
    let n: i64 = num.parse().with_context(|| format!("duration {s:?} does not start with a whole number"))?;
    let unit_ns: i64 = match unit.trim() {
        "ms" => 1_000_000,
        "s" => 1_000_000_000,
        "m" => 60_000_000_000,
        "h" => 3_600_000_000_000,
        "d" => 86_400_000_000_000,
        u => bail!("duration {s:?} has unknown unit {u:?} (use ms, s, m, h or d)"),
    };
    n.checked_mul(unit_ns).ok_or_else(|| anyhow!("duration {s:?} is too long"))
}

fn de_opt_duration<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    let s: Option<String> = Option::deserialize(d)?;
    s.map(|s| parse_duration(&s).map_err(serde::de::Error::custom)).transpose()
}

/// A loaded rule directory: `rules/` and `lists/` side by side (or rule files directly in DIR).
#[derive(Debug, Clone)]
pub struct RuleSet {
    pub rules: Vec<Rule>,
    pub lists: Lists,
    pub dir: PathBuf,
}

impl RuleSet {
    /// Each rule's `suppress` period, by rule id: what the alert router suppresses by.
    pub fn suppression_periods(&self) -> std::collections::HashMap<String, i64> {
        self.rules.iter().filter_map(|r| r.suppress.map(|p| (r.id.clone(), p))).collect()
    }

    /// Loads `DIR/rules/*.yaml` (or `DIR/*.yaml` when there is no rules/ folder) and
    /// `DIR/lists/*.yaml`. Every problem is reported with its file; nothing is skipped silently.
    pub fn load(dir: &Path) -> Result<RuleSet> {
        if !dir.is_dir() {
            bail!("rule directory {} does not exist", dir.display());
        }
        let rules_dir = if dir.join("rules").is_dir() { dir.join("rules") } else { dir.to_path_buf() };
        crate::permissions::refuse_world_writable(dir, "rule directory")?;
        crate::permissions::refuse_world_writable_dir(&rules_dir, "rule directory")?;
        crate::permissions::refuse_world_writable_dir(&dir.join("lists"), "list directory")?;
        let read = |files: Vec<PathBuf>| -> Result<Vec<(PathBuf, String)>> {
            files
                .into_iter()
                .map(|p| Ok((p.clone(), std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?)))
                .collect()
        };
        Self::from_texts(dir, read(yaml_files(&rules_dir)?)?, read(yaml_files(&dir.join("lists"))?)?)
    }

    /// The rules and lists compiled into the binary from `detections/`.
    pub fn bundled() -> Result<RuleSet> {
        let texts = |files: &[(&str, &str)]| files.iter().map(|(p, t)| (PathBuf::from(p), t.to_string())).collect::<Vec<_>>();
        Self::from_texts(Path::new("(bundled)"), texts(bundled::RULES), texts(bundled::LISTS))
    }

    /// Parses rule and list files already read.
    pub fn from_texts(dir: &Path, rule_files: Vec<(PathBuf, String)>, list_files: Vec<(PathBuf, String)>) -> Result<RuleSet> {
        let mut rules = Vec::new();
        for (path, text) in rule_files {
            let mut rule: Rule = serde_yaml::from_str(&text).with_context(|| format!("rule file {}", path.display()))?;
            rule.path = path;
            rules.push(rule);
        }
        let lists = Lists::from_texts(list_files)?;
        let set = RuleSet { rules, lists, dir: dir.to_path_buf() };
        set.check_metadata()?;
        Ok(set)
    }

    /// Checks what can be checked without planning the SQL.
    pub fn check_metadata(&self) -> Result<()> {
        let mut seen = HashSet::new();
        for r in &self.rules {
            let at = r.path.display();
            if r.id.trim().is_empty() || r.title.trim().is_empty() {
                bail!("{at}: id and title are required");
            }
            if r.query.trim().is_empty() == r.sequence.is_none() {
                bail!("{at}: a rule has either a query or a sequence (exactly one)");
            }
            if r.first_seen.is_some() && r.sequence.is_some() {
                bail!("{at}: in a sequence, first_seen belongs to a step");
            }
            if !seen.insert(r.id.as_str()) {
                bail!("{at}: rule id {} is used by two rules", r.id);
            }
            if let Some(bad) = r.mitre.iter().find(|m| !is_mitre_id(m)) {
                bail!("{at}: {bad:?} is not a MITRE ATT&CK technique id (T1234 or T1234.001)");
            }
        }
        Ok(())
    }

    /// Keeps only the rules whose id is in `ids` (for `rules test RULE…`).
    pub fn retain_ids(&mut self, ids: &[String]) -> Result<()> {
        if let Some(missing) = ids.iter().find(|id| !self.rules.iter().any(|r| &r.id == *id)) {
            bail!("no rule with id {missing}");
        }
        self.rules.retain(|r| ids.contains(&r.id));
        Ok(())
    }

    pub fn by_severity(&self) -> BTreeMap<Severity, usize> {
        let mut m = BTreeMap::new();
        for r in &self.rules {
            *m.entry(r.severity).or_default() += 1;
        }
        m
    }
}

fn is_mitre_id(s: &str) -> bool {
    let b = s.as_bytes();
    let base = b.len() >= 5 && b[0] == b'T' && b[1..5].iter().all(u8::is_ascii_digit);
    base && (b.len() == 5 || (b.len() == 9 && b[5] == b'.' && b[6..].iter().all(u8::is_ascii_digit)))
}

/// The `.yaml`/`.yml` files of a directory, sorted so load order is stable.
pub fn yaml_files(dir: &Path) -> Result<Vec<PathBuf>> {
    if !dir.is_dir() {
        return Ok(Vec::new());
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && matches!(p.extension().and_then(|e| e.to_str()), Some("yaml") | Some("yml")))
        .collect();
    files.sort();
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s").unwrap(), 30_000_000_000);
        assert_eq!(parse_duration("5m").unwrap(), 300_000_000_000);
        assert_eq!(parse_duration("250ms").unwrap(), 250_000_000);
        assert!(parse_duration("5").is_err());
        assert!(parse_duration("5 weeks").is_err());
        assert!(parse_duration("m").is_err());
    }

    #[test]
    fn mitre_ids() {
        assert!(is_mitre_id("T1611") && is_mitre_id("T1552.007"));
        assert!(!is_mitre_id("t1611") && !is_mitre_id("T16") && !is_mitre_id("T1552.7"));
    }
}
