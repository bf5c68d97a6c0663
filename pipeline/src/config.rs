//! The service configuration (`crowsnest run -c crowsnest.toml`), with `${ENV}` interpolation
//! so secrets stay out of the file. See README.md, "Configuration", for every key.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{anyhow, bail, Context, Result};
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub source: SourceConfig,
    #[serde(default)]
    pub rules: RulesConfig,
    #[serde(default)]
    pub sinks: SinksConfig,
    #[serde(default)]
    pub dead_letters: DeadLetterConfig,
    #[serde(default)]
    pub metrics: MetricsConfig,
    #[serde(default)]
    pub limits: LimitsConfig,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case", tag = "kind")]
pub enum SourceConfig {
    /// Files (JSON lines or whole documents, gzip or not); `follow` tails them.
    File {
        paths: Vec<PathBuf>,
        #[serde(default)]
        follow: bool,
    },
    Stdin,
}

impl Default for SourceConfig {
    fn default() -> Self {
        SourceConfig::Stdin
    }
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RulesConfig {
    /// A rule directory (rules/ and lists/); the bundled rules when unset.
    pub dir: Option<PathBuf>,
    /// Global allowed lateness for windows, e.g. "1m".
    pub allowed_lateness: Option<String>,
    /// List overrides: `[rules.lists.allowed_registries] values = [...]`, `replace = true`.
    #[serde(default)]
    pub lists: BTreeMap<String, ListOverride>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListOverride {
    pub values: Vec<String>,
    #[serde(default)]
    pub replace: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinksConfig {
    #[serde(default = "yes")]
    pub stdout: bool,
    pub file: Option<PathBuf>,
}

fn yes() -> bool {
    true
}

impl Default for SinksConfig {
    fn default() -> Self {
        SinksConfig { stdout: true, file: None }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeadLetterConfig {
    pub file: PathBuf,
}

impl Default for DeadLetterConfig {
    fn default() -> Self {
        DeadLetterConfig { file: PathBuf::from("dead-letters.jsonl") }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    #[serde(default = "yes")]
    pub enabled: bool,
    /// HOST:PORT; 127.0.0.1 unless you mean to expose it.
    #[serde(default = "default_listen")]
    pub listen: String,
}

fn default_listen() -> String {
    "127.0.0.1:9464".into()
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig { enabled: true, listen: default_listen() }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// Largest line or document accepted, in bytes; larger ones are dead letters.
    #[serde(default = "default_max_doc")]
    pub max_document_bytes: usize,
    /// Decode threads (default: the number of cores, at most 8).
    pub workers: Option<usize>,
}

fn default_max_doc() -> usize {
    16 << 20
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig { max_document_bytes: default_max_doc(), workers: None }
    }
}

/// Replaces `${NAME}` with the environment variable NAME (`$${` writes a literal `${`). An unset
/// variable is an error naming the variable, never its would-be value.
pub fn interpolate(text: &str, env: impl Fn(&str) -> Option<String>) -> Result<String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(stripped) = after.strip_prefix("${") {
            out.push_str("${");
            rest = stripped;
        } else if let Some(body) = after.strip_prefix('{') {
            let end = body.find('}').ok_or_else(|| anyhow!("unclosed ${{ in the config"))?;
            let name = &body[..end];
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                bail!("${{{name}}}: environment variable names are letters, digits and _");
            }
            let value = env(name).ok_or_else(|| anyhow!("the config uses ${{{name}}}, but the environment variable {name} is not set"))?;
            out.push_str(&value);
            rest = &body[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}

fn interpolate_value(v: &mut toml::Value, env: &dyn Fn(&str) -> Option<String>) -> Result<()> {
    match v {
        toml::Value::String(s) => *s = interpolate(s, env)?,
        toml::Value::Array(a) => a.iter_mut().try_for_each(|x| interpolate_value(x, env))?,
        toml::Value::Table(t) => t.iter_mut().try_for_each(|(_, x)| interpolate_value(x, env))?,
        _ => {}
    }
    Ok(())
}

impl Config {
    pub fn load(path: &std::path::Path) -> Result<Config> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading config {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("config {}", path.display()))
    }

    /// Parses TOML, then interpolates `${ENV}` inside string values only: comments are left
    /// alone, and a secret containing quotes cannot change the TOML around it.
    pub fn parse(text: &str) -> Result<Config> {
        let mut value: toml::Value = toml::from_str(text)?;
        interpolate_value(&mut value, &|n| std::env::var(n).ok())?;
        let cfg: Config = value.try_into()?;
        cfg.validate()?;
        Ok(cfg)
    }

    fn validate(&self) -> Result<()> {
        if let SourceConfig::File { paths, .. } = &self.source {
            if paths.is_empty() {
                bail!("[source] kind = \"file\" needs at least one path");
            }
        }
        if let Some(l) = &self.rules.allowed_lateness {
            crate::rules::parse_duration(l).context("[rules] allowed_lateness")?;
        }
        if self.limits.max_document_bytes < 1024 {
            bail!("[limits] max_document_bytes must be at least 1024");
        }
        if self.metrics.enabled {
            self.metrics
                .listen
                .parse::<std::net::SocketAddr>()
                .with_context(|| format!("[metrics] listen = {:?} is not HOST:PORT", self.metrics.listen))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interpolation() {
        let env = |n: &str| (n == "TOKEN").then(|| "s3cret".to_string());
        assert_eq!(interpolate("a=${TOKEN} b=$${X} c=$5", env).unwrap(), "a=s3cret b=${X} c=$5");
        let err = interpolate("x=${MISSING}", env).unwrap_err().to_string();
        assert!(err.contains("MISSING") && !err.contains("s3cret"));
        assert!(interpolate("x=${OPEN", env).is_err());
    }

    #[test]
    fn full_config_parses_and_defaults_are_safe() {
        let c = Config::parse(
            r#"
            [source]
            kind = "file"
            paths = ["a.jsonl", "b.jsonl.gz"]
            follow = true
            [rules]
            allowed_lateness = "2m"
            [rules.lists.allowed_registries]
            values = ["myacr.azurecr.io/"]
            [sinks]
            file = "alerts.jsonl"
            [dead_letters]
            file = "dl.jsonl"
            "#,
        )
        .unwrap();
        assert!(matches!(c.source, SourceConfig::File { follow: true, .. }));
        assert_eq!(c.metrics.listen, "127.0.0.1:9464");
        assert!(c.sinks.stdout);
        assert!(Config::parse("[source]\nkind = \"file\"\npaths = []").is_err());
        assert!(Config::parse("[sinkz]\nstdout = true").is_err(), "unknown sections are errors, not ignored");
        assert!(Config::parse("[metrics]\nlisten = \"nowhere\"").is_err());
        // Comments are not interpolated; values are.
        assert!(Config::parse("# uses ${NOT_SET_ANYWHERE}\n[sinks]\nstdout = true").is_ok());
        assert!(Config::parse("[sinks]\nfile = \"${NOT_SET_ANYWHERE}/a\"").is_err());
    }
}
