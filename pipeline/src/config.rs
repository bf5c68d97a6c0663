//! The service configuration (`crowsnest run -c crowsnest.toml`), with `${ENV}` interpolation
//! so secrets stay out of the file. See README.md, "Configuration", for every key.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{anyhow, bail, Context, Result};
use serde::Deserialize;

use crate::kafka::{parse_url, Connection, Preset};
use crate::sink::sentinel::config::{self as sentinel, SentinelConfig};
use crate::source::eventhubs::config::{self as eventhubs, EventHubsConfig};
use crate::source::kafka::StartPosition;

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
    pub late_events: LateEventsConfig,
    #[serde(default)]
    pub metrics: MetricsConfig,
    #[serde(default)]
    pub limits: LimitsConfig,
    #[serde(default)]
    pub state: StateConfig,
    /// Serve the lake over Flight SQL while running (`crowsnest serve-sql`'s options).
    pub hunt: Option<crate::hunt::flight::ServeConfig>,
}

/// Rule state that replaying input cannot rebuild: first-sighting histories.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct StateConfig {
    /// Loaded at start, saved at every checkpoint and on shutdown. Unset: kept in memory only.
    pub dir: Option<PathBuf>,
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
    /// A Kafka consumer group (or Azure Event Hubs through its Kafka endpoint).
    Kafka {
        /// HOST:PORT[,HOST:PORT…]; for Event Hubs NAMESPACE.servicebus.windows.net:9093.
        brokers: String,
        topics: Vec<String>,
        #[serde(default = "default_group")]
        group: String,
        /// Where a group with no committed offset starts: earliest (default) or latest.
        #[serde(default)]
        start: StartPosition,
        /// "eventhubs": SASL_SSL/PLAIN with the connection string from $password_env.
        preset: Option<Preset>,
        password_env: Option<String>,
        /// librdkafka settings passed through (security.protocol, ssl.ca.location, …).
        #[serde(default)]
        librdkafka: BTreeMap<String, String>,
        /// How often safe offsets are committed, e.g. "5s".
        commit_interval: Option<String>,
    },
    /// Azure Event Hubs over AMQP, with Blob checkpoints shared by every instance of a group.
    Eventhubs(Box<EventHubsConfig>),
}

fn default_group() -> String {
    "crowsnest".into()
}

/// A Kafka topic to write alerts or dead letters to. The connection keys repeat those of
/// [`Connection`] rather than `#[serde(flatten)]` it: flatten would switch off
/// `deny_unknown_fields`, and a typo in a sink's settings must stay an error.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSinkConfig {
    pub brokers: String,
    pub topic: String,
    pub preset: Option<Preset>,
    pub password_env: Option<String>,
    #[serde(default)]
    pub librdkafka: BTreeMap<String, String>,
}

impl KafkaSinkConfig {
    pub fn connection(&self) -> Connection {
        Connection {
            brokers: self.brokers.clone(),
            preset: self.preset,
            password_env: self.password_env.clone(),
            librdkafka: self.librdkafka.clone(),
        }
    }
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
    /// A partition silent this long stops holding the watermark back, e.g. "30s".
    pub idle_timeout: Option<String>,
    /// Live (window, key) groups one windowed rule may hold before it evicts the least recently
    /// active (200000 by default; a rule's `max_groups` overrides it).
    pub max_groups_per_rule: Option<usize>,
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
    /// Alerts to a Kafka topic, keyed by alert id.
    pub kafka: Option<KafkaSinkConfig>,
    /// Alerts to Microsoft Sentinel through the Logs Ingestion API.
    pub sentinel: Option<SentinelConfig>,
    /// Every decoded row and every alert as Parquet, for hunts (see `crate::lake`).
    pub lake: Option<crate::lake::LakeConfig>,
}

fn yes() -> bool {
    true
}

impl Default for SinksConfig {
    fn default() -> Self {
        SinksConfig { stdout: true, file: None, kafka: None, sentinel: None, lake: None }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeadLetterConfig {
    #[serde(default = "default_dead_letter_file")]
    pub file: PathBuf,
    /// Roll the file over past this many MiB (FILE.1 … FILE.keep_files kept); 0: never.
    #[serde(default = "default_max_file_mb")]
    pub max_file_mb: u64,
    #[serde(default = "default_keep_files")]
    pub keep_files: u32,
    /// Dead letters to a Kafka topic instead of the file.
    pub kafka: Option<KafkaSinkConfig>,
}

// Files the service keeps appending to (dead letters, late events) roll over, so a flood of bad
// or late input cannot fill the disk: at most (keep_files + 1) × max_file_mb.
fn default_max_file_mb() -> u64 {
    256
}

fn default_keep_files() -> u32 {
    3
}

/// `max_file_mb`/`keep_files` as the file sink takes them (0 MiB: never roll over).
pub fn rotation(max_file_mb: u64, keep_files: u32) -> Option<crate::sink::Rotation> {
    (max_file_mb > 0).then(|| crate::sink::Rotation { max_bytes: max_file_mb << 20, keep: keep_files })
}

fn default_dead_letter_file() -> PathBuf {
    PathBuf::from("dead-letters.jsonl")
}

impl Default for DeadLetterConfig {
    fn default() -> Self {
        DeadLetterConfig {
            file: default_dead_letter_file(),
            max_file_mb: default_max_file_mb(),
            keep_files: default_keep_files(),
            kafka: None,
        }
    }
}

/// Events a windowed rule matched after their windows fired, as JSON lines.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LateEventsConfig {
    #[serde(default = "default_late_events_file")]
    pub file: PathBuf,
    /// As for dead letters.
    #[serde(default = "default_max_file_mb")]
    pub max_file_mb: u64,
    #[serde(default = "default_keep_files")]
    pub keep_files: u32,
}

fn default_late_events_file() -> PathBuf {
    PathBuf::from("late-events.jsonl")
}

impl Default for LateEventsConfig {
    fn default() -> Self {
        LateEventsConfig { file: default_late_events_file(), max_file_mb: default_max_file_mb(), keep_files: default_keep_files() }
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

/// `--source URL`: `kafka://HOST:PORT/TOPIC[,TOPIC]?group=G&start=earliest`, `file:///PATH`
/// (`?follow=true` to tail it), `eventhubs://NAMESPACE/HUB?checkpoints=…&auth=…`, or `stdin`
/// (also `-`).
pub fn source_from_url(url: &str) -> Result<SourceConfig> {
    if url == "stdin" || url == "-" {
        return Ok(SourceConfig::Stdin);
    }
    if url.starts_with("eventhubs://") {
        return Ok(SourceConfig::Eventhubs(Box::new(eventhubs::from_url(url)?)));
    }
    if let Some(rest) = url.strip_prefix("file://") {
        let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
        let follow = match query {
            "" => false,
            "follow=true" => true,
            "follow=false" => false,
            q => bail!("{url:?}: unknown option {q:?} (file sources take follow=true)"),
        };
        return Ok(SourceConfig::File { paths: vec![PathBuf::from(path)], follow });
    }
    let mut u = parse_url(url).with_context(|| "--source takes kafka://…, eventhubs://…, file:///PATH or stdin".to_string())?;
    let group = u.params.remove("group").unwrap_or_else(default_group);
    let start = u.params.remove("start").map(|s| s.parse()).transpose()?.unwrap_or_default();
    let commit_interval = u.params.remove("commit_interval");
    if let Some(k) = u.params.keys().next() {
        bail!("{url:?}: unknown option {k:?} (kafka sources take group, start, commit_interval, preset, password_env and librdkafka settings)");
    }
    Ok(SourceConfig::Kafka {
        brokers: u.connection.brokers,
        topics: u.topics,
        group,
        start,
        preset: u.connection.preset,
        password_env: u.connection.password_env,
        librdkafka: u.connection.librdkafka,
        commit_interval,
    })
}

/// Where `--sink URL` / `--dead-letters URL` point.
#[derive(Debug, Clone)]
pub enum SinkTarget {
    Stdout,
    File(PathBuf),
    Kafka(KafkaSinkConfig),
    Sentinel(Box<SentinelConfig>),
}

/// `--sink URL`: `stdout`, `file:///PATH` (a bare path works too), `kafka://HOST:PORT/TOPIC`,
/// `sentinel://HOST?dcr=…&stream=…&auth=…`.
pub fn sink_from_url(url: &str) -> Result<SinkTarget> {
    if url == "stdout" || url == "-" {
        return Ok(SinkTarget::Stdout);
    }
    if url.starts_with("sentinel://") {
        return Ok(SinkTarget::Sentinel(Box::new(sentinel::from_url(url)?)));
    }
    if url.starts_with("kafka://") {
        let u = parse_url(url)?;
        if u.topics.len() != 1 {
            bail!("{url:?}: a Kafka sink writes to exactly one topic");
        }
        if let Some(k) = u.params.keys().next() {
            bail!("{url:?}: unknown option {k:?} (kafka sinks take preset, password_env and librdkafka settings)");
        }
        let c = u.connection;
        return Ok(SinkTarget::Kafka(KafkaSinkConfig {
            brokers: c.brokers,
            topic: u.topics[0].clone(),
            preset: c.preset,
            password_env: c.password_env,
            librdkafka: c.librdkafka,
        }));
    }
    if let Some(path) = url.strip_prefix("file://") {
        return Ok(SinkTarget::File(PathBuf::from(path)));
    }
    if url.contains("://") {
        bail!("{url:?}: sinks are stdout, file:///PATH, kafka://HOST:PORT/TOPIC or sentinel://HOST?dcr=…&stream=…&auth=…");
    }
    Ok(SinkTarget::File(PathBuf::from(url)))
}

impl Config {
    /// Replaces the configured source, sinks or dead-letter output with command-line URLs.
    pub fn override_with(&mut self, source: Option<&str>, sinks: &[String], dead_letters: Option<&str>) -> Result<()> {
        if let Some(url) = source {
            self.source = source_from_url(url)?;
        }
        if !sinks.is_empty() {
            // The lake is no alert sink: --sink URLs leave it as configured.
            self.sinks = SinksConfig { stdout: false, file: None, kafka: None, sentinel: None, lake: self.sinks.lake.take() };
            for url in sinks {
                match sink_from_url(url)? {
                    SinkTarget::Stdout => self.sinks.stdout = true,
                    SinkTarget::File(p) if self.sinks.file.is_none() => self.sinks.file = Some(p),
                    SinkTarget::Kafka(k) if self.sinks.kafka.is_none() => self.sinks.kafka = Some(k),
                    SinkTarget::Sentinel(c) if self.sinks.sentinel.is_none() => self.sinks.sentinel = Some(*c),
                    _ => bail!("--sink {url}: one file, one kafka and one sentinel sink at most"),
                }
            }
        }
        if let Some(url) = dead_letters {
            self.dead_letters = match sink_from_url(url)? {
                SinkTarget::File(p) => DeadLetterConfig { file: p, ..DeadLetterConfig::default() },
                SinkTarget::Kafka(k) => DeadLetterConfig { kafka: Some(k), ..DeadLetterConfig::default() },
                SinkTarget::Stdout => bail!("--dead-letters: stdout carries alerts; give a file or a kafka:// URL"),
                SinkTarget::Sentinel(_) => bail!("--dead-letters: give a file or a kafka:// URL (Sentinel takes alerts)"),
            };
        }
        self.validate()
    }

    pub fn load(path: &std::path::Path) -> Result<Config> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading config {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("config {}", path.display()))
    }

    /// Parses TOML, then interpolates `${ENV}` inside string values only: comments are left
    /// alone, and a secret containing quotes cannot change the TOML around it.
    pub fn parse(text: &str) -> Result<Config> {
        Self::parse_with_env(text, &|n| std::env::var(n).ok())
    }

    /// [`Config::parse`] with `env` for the environment. An error about a value that came from
    /// the environment (`enabled = "${TOKEN}"` is no boolean: serde quotes what it got) names
    /// the variable instead of showing its value.
    pub fn parse_with_env(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Config> {
        let mut value: toml::Value = toml::from_str(text)?;
        let used = std::cell::RefCell::new(Vec::new());
        let recording = |n: &str| {
            let v = env(n);
            if let Some(v) = &v {
                used.borrow_mut().push((n.to_string(), v.clone()));
            }
            v
        };
        interpolate_value(&mut value, &recording)?;
        let parsed = value.try_into::<Config>().map_err(anyhow::Error::from).and_then(|cfg| cfg.validate().map(|()| cfg));
        parsed.map_err(|e| {
            let mut msg = format!("{e:#}");
            // Longest first, so a value inside another is not half replaced.
            let mut used = used.into_inner();
            used.sort_by_key(|(_, v)| std::cmp::Reverse(v.len()));
            for (name, v) in used.iter().filter(|(_, v)| !v.is_empty()) {
                msg = msg.replace(v.as_str(), &format!("${{{name}}}"));
            }
            anyhow!(msg)
        })
    }

    pub fn validate(&self) -> Result<()> {
        if let SourceConfig::File { paths, .. } = &self.source {
            if paths.is_empty() {
                bail!("[source] kind = \"file\" needs at least one path");
            }
        }
        if let Some(l) = &self.rules.allowed_lateness {
            crate::rules::parse_duration(l).context("[rules] allowed_lateness")?;
        }
        if let Some(l) = &self.rules.idle_timeout {
            crate::rules::parse_duration(l).context("[rules] idle_timeout")?;
        }
        if let SourceConfig::Kafka { topics, commit_interval, .. } = &self.source {
            if topics.is_empty() {
                bail!("[source] kind = \"kafka\" needs at least one topic");
            }
            if let Some(i) = commit_interval {
                crate::rules::parse_duration(i).context("[source] commit_interval")?;
            }
        }
        if let SourceConfig::Eventhubs(e) = &self.source {
            e.validate()?;
        }
        if let Some(s) = &self.sinks.sentinel {
            s.validate()?;
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
    fn an_error_about_a_value_from_the_environment_names_the_variable_not_the_value() {
        let env = |n: &str| (n == "TOKEN").then(|| "s3cret-Xy9".to_string());
        for text in [
            "[metrics]\nenabled = \"${TOKEN}\"\n",        // not a boolean
            "[rules]\nallowed_lateness = \"${TOKEN}\"\n", // not a duration
            "[source]\nkind = \"${TOKEN}\"\n",            // not a source kind
        ] {
            let err = format!("{:#}", Config::parse_with_env(text, &env).unwrap_err());
            assert!(!err.contains("s3cret-Xy9") && err.contains("${TOKEN}"), "{text}: {err}");
        }
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

    #[test]
    fn kafka_in_the_config_and_on_the_command_line() {
        let c = Config::parse(
            r#"
            [source]
            kind = "kafka"
            brokers = "ns.servicebus.windows.net:9093"
            topics = ["insights-logs-kube-audit"]
            group = "crowsnest-prod"
            preset = "eventhubs"
            commit_interval = "10s"
            [source.librdkafka]
            "fetch.max.bytes" = "1048576"
            [sinks.kafka]
            brokers = "kafka:9092"
            topic = "crowsnest-alerts"
            [dead_letters.kafka]
            brokers = "kafka:9092"
            topic = "crowsnest-dead-letters"
            "#,
        )
        .unwrap();
        let SourceConfig::Kafka { group, preset, librdkafka, start, .. } = &c.source else { panic!("kafka source") };
        assert_eq!((group.as_str(), *preset, *start), ("crowsnest-prod", Some(Preset::Eventhubs), StartPosition::Earliest));
        assert_eq!(librdkafka["fetch.max.bytes"], "1048576");
        assert_eq!(c.sinks.kafka.as_ref().unwrap().topic, "crowsnest-alerts");
        assert!(Config::parse("[source]\nkind = \"kafka\"\nbrokers = \"b:9092\"\ntopics = []").is_err());

        // The native Event Hubs source: its table, typos refused, its own checks applied.
        let eh = r#"
            [source]
            kind = "eventhubs"
            namespace = "ns.servicebus.windows.net"
            hub = "insights-logs-kube-audit"
            group = "crowsnest"
            checkpoints = "https://acct.blob.core.windows.net/ckpt"
            auth = "workload_identity"
            instances = "share"
            commit_interval = "10s"
            "#;
        let c = Config::parse(eh).unwrap();
        let SourceConfig::Eventhubs(e) = &c.source else { panic!("event hubs source") };
        assert_eq!(
            (e.hub.as_str(), e.instances, e.commit_interval()),
            ("insights-logs-kube-audit", eventhubs::Instances::Share, Some(std::time::Duration::from_secs(10)))
        );
        assert!(Config::parse(&eh.replace("group =", "grup =")).is_err(), "typos are errors");
        assert!(Config::parse(&eh.replace("https://acct", "http://acct")).is_err(), "checkpoints in clear text are refused");

        let mut cli = Config::default();
        cli.override_with(
            Some("kafka://localhost:9092/audit,ci?group=g1&start=latest"),
            &["stdout".into(), "kafka://localhost:9092/alerts".into(), "file:///tmp/a.jsonl".into()],
            Some("kafka://localhost:9092/dead"),
        )
        .unwrap();
        let SourceConfig::Kafka { topics, group, start, .. } = &cli.source else { panic!("kafka source") };
        assert_eq!((topics.len(), group.as_str(), *start), (2, "g1", StartPosition::Latest));
        assert!(cli.sinks.stdout && cli.sinks.file.is_some() && cli.sinks.kafka.is_some());
        assert_eq!(cli.dead_letters.kafka.as_ref().unwrap().topic, "dead");
        assert!(Config::default().override_with(Some("kafka://b:9092/t?grup=x"), &[], None).is_err(), "typos are errors");
        assert!(Config::default().override_with(None, &["kafka://b:9092/a,b".into()], None).is_err());
        assert!(matches!(source_from_url("file:///var/log/a.jsonl?follow=true").unwrap(), SourceConfig::File { follow: true, .. }));
    }
}
