//! Named lists (allowed registries, system identities, sensitive paths, authorized ranges,
//! suspicious log patterns…) that rules use through the `in_list`, `starts_with_any`,
//! `path_under`, `ip_in_list`, `matches_any` and `first_match` functions. Lists come from `detections/lists/*.yaml`; a config may add or replace entries.

use std::collections::BTreeMap;

/// aHash: list lookups run once per row of every batch for rules that use them.
type HashSet<T> = std::collections::HashSet<T, ahash::RandomState>;
use std::net::IpAddr;

use anyhow::{bail, Context, Result};
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListFile {
    name: String,
    #[serde(default)]
    description: String,
    values: Vec<String>,
}

/// One list, with the lookups the list functions need precomputed.
#[derive(Debug, Clone, Default)]
pub struct List {
    pub description: String,
    pub values: Vec<String>,
    exact: HashSet<String>,
    cidrs: Vec<(IpAddr, u8)>,
    /// The values as regular expressions, compiled on first use (only some lists are patterns).
    patterns: std::sync::OnceLock<Result<regex::RegexSet, String>>,
}

impl List {
    pub fn new(description: String, values: Vec<String>) -> List {
        let exact = values.iter().cloned().collect();
        let cidrs = values.iter().filter_map(|v| parse_cidr(v)).collect();
        List { description, values, exact, cidrs, patterns: Default::default() }
    }

    /// The values as one set of regular expressions; an error names the first that is not one.
    pub fn patterns(&self) -> Result<&regex::RegexSet, &str> {
        self.patterns
            .get_or_init(|| {
                for (i, v) in self.values.iter().enumerate() {
                    if let Err(e) = regex::Regex::new(v) {
                        return Err(format!("entry {} ({v:?}) is not a regular expression: {e}", i + 1));
                    }
                }
                regex::RegexSet::new(&self.values).map_err(|e| e.to_string())
            })
            .as_ref()
            .map_err(String::as_str)
    }

    /// The first entry (in list order) that, as a regular expression, matches `s`.
    pub fn first_match(&self, s: &str) -> Option<&str> {
        let set = self.patterns().ok()?;
        set.matches(s).iter().next().map(|i| self.values[i].as_str())
    }

    pub fn contains(&self, s: &str) -> bool {
        self.exact.contains(s)
    }

    pub fn any_prefix_of(&self, s: &str) -> bool {
        self.values.iter().any(|p| s.starts_with(p.as_str()))
    }

    /// `s` is an entry or a path below one; `/` only matches `/` itself (everything is below it).
    pub fn path_under(&self, s: &str) -> bool {
        let s = if s.len() > 1 { s.trim_end_matches('/') } else { s };
        self.values.iter().any(|p| {
            let p = if p.len() > 1 { p.trim_end_matches('/') } else { p.as_str() };
            s == p || (p != "/" && s.len() > p.len() && s.starts_with(p) && s.as_bytes()[p.len()] == b'/')
        })
    }

    pub fn contains_ip(&self, s: &str) -> bool {
        let Ok(ip) = s.trim().parse::<IpAddr>() else {
            return false;
        };
        self.cidrs.iter().any(|(net, bits)| ip_in_cidr(ip, *net, *bits))
    }
}

fn parse_cidr(s: &str) -> Option<(IpAddr, u8)> {
    let (ip, bits) = match s.split_once('/') {
        Some((ip, bits)) => (ip.parse::<IpAddr>().ok()?, bits.parse::<u8>().ok()?),
        None => {
            let ip = s.parse::<IpAddr>().ok()?;
            (ip, if ip.is_ipv4() { 32 } else { 128 })
        }
    };
    let max = if ip.is_ipv4() { 32 } else { 128 };
    (bits <= max).then_some((ip, bits))
}

fn ip_in_cidr(ip: IpAddr, net: IpAddr, bits: u8) -> bool {
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let mask = if bits == 0 { 0 } else { u32::MAX << (32 - bits) };
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let mask = if bits == 0 { 0 } else { u128::MAX << (128 - bits) };
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

/// All lists by name.
#[derive(Debug, Clone, Default)]
pub struct Lists {
    pub lists: BTreeMap<String, List>,
}

impl Lists {
    /// Parses list files already read.
    pub fn from_texts(files: Vec<(std::path::PathBuf, String)>) -> Result<Lists> {
        let mut lists = BTreeMap::new();
        for (path, text) in files {
            let f: ListFile = serde_yaml::from_str(&text).with_context(|| format!("list file {}", path.display()))?;
            if lists.contains_key(&f.name) {
                bail!("{}: list {} is defined twice", path.display(), f.name);
            }
            lists.insert(f.name, List::new(f.description, f.values));
        }
        Ok(Lists { lists })
    }

    pub fn get(&self, name: &str) -> Option<&List> {
        self.lists.get(name)
    }

    /// Applies a config override: `replace` swaps the entries, otherwise they are added.
    pub fn set(&mut self, name: &str, values: Vec<String>, replace: bool) {
        let entry = self.lists.entry(name.to_string()).or_default();
        let mut all = if replace { Vec::new() } else { entry.values.clone() };
        all.extend(values);
        *entry = List::new(entry.description.clone(), all);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookups() {
        let l = List::new(String::new(), vec!["/".into(), "/etc".into(), "/var/run/docker.sock".into()]);
        assert!(l.path_under("/") && l.path_under("/etc") && l.path_under("/etc/kubernetes/") && l.path_under("/var/run/docker.sock"));
        assert!(!l.path_under("/etcd") && !l.path_under("/data") && !l.path_under("/run/xtables.lock"));
        let ips = List::new(String::new(), vec!["10.0.0.0/8".into(), "2001:db8::/32".into(), "198.51.100.7".into()]);
        assert!(ips.contains_ip("10.1.2.3") && ips.contains_ip("2001:db8::1") && ips.contains_ip("198.51.100.7"));
        assert!(!ips.contains_ip("11.0.0.1") && !ips.contains_ip("198.51.100.8") && !ips.contains_ip("junk"));
        let pats = List::new(String::new(), vec![r"(?i)stratum\+tcp://".into(), r"xmrig".into()]);
        assert_eq!(pats.first_match("xmrig -o stratum+TCP://pool:3333"), Some(r"(?i)stratum\+tcp://"));
        assert_eq!(pats.first_match("GET /health 200"), None);
        let bad = List::new(String::new(), vec!["ok".into(), "(unclosed".into()]);
        assert!(bad.patterns().unwrap_err().starts_with("entry 2"));
        let reg = List::new(String::new(), vec!["mcr.microsoft.com/".into()]);
        assert!(reg.any_prefix_of("mcr.microsoft.com/oss/kube-proxy:v1") && !reg.any_prefix_of("docker.io/x"));
    }
}
