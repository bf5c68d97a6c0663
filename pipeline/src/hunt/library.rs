//! The hunt library (`detections/hunts/*.yaml`): named, parameterized queries for incident
//! response, each with its own tests over the bundled sample.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Param {
    pub name: String,
    pub description: String,
    /// A parameter without a default must be given.
    pub default: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HuntTest {
    #[serde(default)]
    pub params: BTreeMap<String, String>,
    /// Exactly this many rows over the bundled sample.
    pub rows: Option<usize>,
    /// Rows that must be among the result (only the columns given are compared, as text).
    #[serde(default)]
    pub contains: Vec<BTreeMap<String, serde_yaml::Value>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hunt {
    pub name: String,
    pub title: String,
    pub description: String,
    #[serde(default)]
    pub params: Vec<Param>,
    pub sql: String,
    #[serde(default)]
    pub tests: Vec<HuntTest>,
    #[serde(skip)]
    pub path: PathBuf,
}

impl Hunt {
    /// The SQL with every `{{param}}` replaced by a string literal (quotes doubled, so a value
    /// can never end the literal). Unknown or missing parameters are errors.
    pub fn render(&self, given: &BTreeMap<String, String>) -> Result<String> {
        for k in given.keys() {
            if !self.params.iter().any(|p| &p.name == k) {
                let known: Vec<&str> = self.params.iter().map(|p| p.name.as_str()).collect();
                bail!(
                    "hunt {}: no parameter {k:?} (it takes: {})",
                    self.name,
                    if known.is_empty() { "none".into() } else { known.join(", ") }
                );
            }
        }
        // One pass over the template: a value is never read again as template, so one holding
        // `{{other}}` or quotes stays inside its own literal.
        let mut sql = String::with_capacity(self.sql.len());
        let mut rest = self.sql.as_str();
        while let Some(i) = rest.find("{{") {
            sql.push_str(&rest[..i]);
            let after = &rest[i + 2..];
            let Some(end) = after.find("}}") else { bail!("hunt {}: an unclosed {{{{ in its SQL", self.name) };
            let name = &after[..end];
            let Some(p) = self.params.iter().find(|p| p.name == name) else {
                bail!("hunt {}: {{{{{name}}}}} is not a declared parameter", self.name);
            };
            let value = given
                .get(&p.name)
                .or(p.default.as_ref())
                .ok_or_else(|| anyhow!("hunt {} needs --param {}=… ({})", self.name, p.name, p.description.trim()))?;
            sql.push('\'');
            sql.push_str(&value.replace('\'', "''"));
            sql.push('\'');
            rest = &after[end + 2..];
        }
        sql.push_str(rest);
        Ok(sql)
    }
}

pub struct Library {
    pub hunts: Vec<Hunt>,
}

impl Library {
    pub fn from_texts(files: Vec<(PathBuf, String)>) -> Result<Library> {
        let mut hunts: Vec<Hunt> = Vec::new();
        for (path, text) in files {
            let mut h: Hunt = serde_yaml::from_str(&text).with_context(|| format!("hunt file {}", path.display()))?;
            h.path = path;
            if hunts.iter().any(|o| o.name == h.name) {
                bail!("{}: a second hunt named {}", h.path.display(), h.name);
            }
            hunts.push(h);
        }
        hunts.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(Library { hunts })
    }

    /// The hunts compiled in from `detections/hunts`.
    pub fn bundled() -> Result<Library> {
        Self::from_texts(crate::rules::bundled::HUNTS.iter().map(|(p, t)| (PathBuf::from(p), t.to_string())).collect())
    }

    /// The hunts of a rule directory (`DIR/hunts/*.yaml`), or the bundled ones.
    pub fn load(rules_dir: Option<&Path>) -> Result<Library> {
        let Some(dir) = rules_dir.map(|d| d.join("hunts")).filter(|d| d.is_dir()) else { return Self::bundled() };
        let mut files = Vec::new();
        for e in std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))? {
            let p = e?.path();
            if matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")) {
                let text = std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?;
                files.push((p, text));
            }
        }
        Self::from_texts(files)
    }

    pub fn get(&self, name: &str) -> Option<&Hunt> {
        self.hunts.iter().find(|h| h.name == name)
    }

    /// `crowsnest hunt --list`.
    pub fn render_list(&self) -> String {
        let mut s = String::new();
        for h in &self.hunts {
            let params: Vec<String> = h
                .params
                .iter()
                .map(|p| match &p.default {
                    Some(d) => format!("{}={d}", p.name),
                    None => format!("{}=…", p.name),
                })
                .collect();
            s.push_str(&format!("{:<26} {}\n", h.name, h.title));
            if !params.is_empty() {
                s.push_str(&format!("{:<26} --param {}\n", "", params.join(" --param ")));
            }
        }
        s
    }
}

/// `k=v` from `--param k=v`.
pub fn parse_params(pairs: &[String]) -> Result<BTreeMap<String, String>> {
    pairs
        .iter()
        .map(|p| {
            p.split_once('=').map(|(k, v)| (k.trim().to_string(), v.to_string())).ok_or_else(|| anyhow!("--param {p:?}: give NAME=VALUE"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_become_quoted_literals_and_mistakes_are_named() {
        let h: Hunt = serde_yaml::from_str(
            "name: t\ntitle: T\ndescription: d\nparams:\n  - {name: user, description: who}\n  - {name: ns, description: where, default: kube-system}\nsql: SELECT 1 WHERE u = {{user}} AND n = {{ns}}\n",
        )
        .unwrap();
        let given = parse_params(&["user=o'brien".to_string()]).unwrap();
        assert_eq!(h.render(&given).unwrap(), "SELECT 1 WHERE u = 'o''brien' AND n = 'kube-system'");
        assert!(h.render(&BTreeMap::new()).unwrap_err().to_string().contains("--param user="));
        assert!(h.render(&parse_params(&["usr=x".to_string()]).unwrap()).unwrap_err().to_string().contains("no parameter \"usr\""));
        assert!(parse_params(&["novalue".to_string()]).is_err());
        // A value is not template: `{{ns}}` in it stays text inside its own literal.
        let sneaky = parse_params(&["user={{ns}}' OR '1'='1".to_string()]).unwrap();
        assert_eq!(h.render(&sneaky).unwrap(), "SELECT 1 WHERE u = '{{ns}}'' OR ''1''=''1' AND n = 'kube-system'");
    }

    #[test]
    fn the_bundled_library_parses() {
        let lib = Library::bundled().unwrap();
        assert!(lib.hunts.len() >= 10, "{} hunts", lib.hunts.len());
        for h in &lib.hunts {
            assert!(!h.tests.is_empty(), "hunt {} has no test", h.name);
        }
    }
}
