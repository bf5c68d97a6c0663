//! What the Kafka source and sink share: connection settings, the Azure Event Hubs preset, and
//! `kafka://` URLs for the command line.

use std::collections::BTreeMap;

use anyhow::{anyhow, bail, Result};
use rdkafka::ClientConfig;
use serde::Deserialize;

/// The environment variable the Event Hubs preset reads the connection string from, unless
/// `password_env` names another.
pub const EVENTHUBS_PASSWORD_ENV: &str = "EVENTHUBS_CONNECTION_STRING";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Preset {
    /// Azure Event Hubs' Kafka endpoint: NAMESPACE.servicebus.windows.net:9093, SASL_SSL/PLAIN,
    /// user `$ConnectionString`, Microsoft's recommended timeouts.
    Eventhubs,
}

/// Settings Microsoft recommends for librdkafka clients of Event Hubs
/// (learn.microsoft.com/azure/event-hubs/apache-kafka-configurations).
const EVENTHUBS_COMMON: &[(&str, &str)] = &[
    ("security.protocol", "SASL_SSL"),
    ("sasl.mechanism", "PLAIN"),
    ("sasl.username", "$ConnectionString"),
    ("socket.keepalive.enable", "true"),
    // Azure closes TCP connections idle for 240 s: refresh metadata and recycle before that.
    ("metadata.max.age.ms", "180000"),
    ("connections.max.idle.ms", "180000"),
];
const EVENTHUBS_CONSUMER: &[(&str, &str)] =
    &[("session.timeout.ms", "30000"), ("heartbeat.interval.ms", "3000"), ("max.poll.interval.ms", "300000")];
const EVENTHUBS_PRODUCER: &[(&str, &str)] =
    &[("request.timeout.ms", "60000"), ("message.max.bytes", "1000000"), ("partitioner", "consistent_random")];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Consumer,
    Producer,
}

/// Where a Kafka client connects, and how.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Connection {
    /// HOST:PORT[,HOST:PORT…]
    pub brokers: String,
    pub preset: Option<Preset>,
    /// With the eventhubs preset: the environment variable holding the connection string.
    pub password_env: Option<String>,
    /// librdkafka settings passed through as they are (SASL, TLS, timeouts…).
    #[serde(default)]
    pub librdkafka: BTreeMap<String, String>,
}

impl Connection {
    pub fn client_config(&self, role: Role) -> Result<ClientConfig> {
        if self.brokers.trim().is_empty() {
            bail!("no Kafka brokers given");
        }
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.brokers).set("client.id", "crowsnest");
        if self.preset == Some(Preset::Eventhubs) {
            let role_settings = if role == Role::Consumer { EVENTHUBS_CONSUMER } else { EVENTHUBS_PRODUCER };
            for (k, v) in EVENTHUBS_COMMON.iter().chain(role_settings) {
                c.set(*k, *v);
            }
            if !self.librdkafka.contains_key("sasl.password") {
                let var = self.password_env.as_deref().unwrap_or(EVENTHUBS_PASSWORD_ENV);
                let password = std::env::var(var)
                    .map_err(|_| anyhow!("the eventhubs preset reads the Event Hubs connection string from ${var}, which is not set"))?;
                c.set("sasl.password", password);
            }
        } else if self.password_env.is_some() {
            let var = self.password_env.as_deref().expect("checked");
            let password = std::env::var(var).map_err(|_| anyhow!("password_env names ${var}, which is not set"))?;
            c.set("sasl.password", password);
        }
        for (k, v) in &self.librdkafka {
            c.set(k, v);
        }
        Ok(c)
    }
}

/// Sets `key` unless the user's settings already did: Crowsnest's defaults never override them.
pub fn set_default(c: &mut ClientConfig, key: &str, value: &str) {
    if c.get(key).is_none() {
        c.set(key, value);
    }
}

/// Whether the n-th repeat of a client error is logged: the first few, then at powers of two,
/// so a broker that is away for an hour does not flood the log.
pub fn worth_logging(n: u64) -> bool {
    n <= 3 || n.is_power_of_two()
}

/// A parsed `kafka://HOST:PORT[,HOST:PORT]/TOPIC[,TOPIC]?key=value&…` URL.
#[derive(Debug, Clone)]
pub struct KafkaUrl {
    pub connection: Connection,
    pub topics: Vec<String>,
    /// Keys that are not librdkafka settings (`group`, `start`, …), for the caller to check.
    pub params: BTreeMap<String, String>,
}

/// Parses a `kafka://` URL. Query keys with a dot are librdkafka settings; `preset` and
/// `password_env` configure the connection; the rest go to `params`. A password in the URL is
/// refused: command lines are visible to every user of the machine.
pub fn parse_url(url: &str) -> Result<KafkaUrl> {
    let rest = url.strip_prefix("kafka://").ok_or_else(|| anyhow!("{url:?} is not a kafka:// URL"))?;
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    let (brokers, topics) = path.split_once('/').ok_or_else(|| anyhow!("{url:?}: expected kafka://HOST:PORT/TOPIC"))?;
    let topics: Vec<String> = topics.split(',').map(|t| t.trim().to_string()).filter(|t| !t.is_empty()).collect();
    if brokers.is_empty() || topics.is_empty() {
        bail!("{url:?}: expected kafka://HOST:PORT/TOPIC");
    }
    let mut connection = Connection { brokers: brokers.to_string(), ..Connection::default() };
    let mut params = BTreeMap::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').ok_or_else(|| anyhow!("{url:?}: query part {pair:?} is not key=value"))?;
        let (k, v) = (percent_decode(k)?, percent_decode(v)?);
        match k.as_str() {
            "preset" => {
                connection.preset = Some(match v.as_str() {
                    "eventhubs" => Preset::Eventhubs,
                    other => bail!("unknown preset {other:?} (known: eventhubs)"),
                })
            }
            "password_env" => connection.password_env = Some(v),
            k if k.contains("password") || k.contains("secret") => {
                bail!("{k} may not be given in a URL (command lines are visible to others); use password_env=VAR or the config file")
            }
            k if k.contains('.') => {
                connection.librdkafka.insert(k.to_string(), v);
            }
            _ => {
                params.insert(k, v);
            }
        }
    }
    Ok(KafkaUrl { connection, topics, params })
}

fn percent_decode(s: &str) -> Result<String> {
    crate::url::percent_decode(s, true).ok_or_else(|| anyhow!("bad %-escape in {s:?}, or not UTF-8 once decoded"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let u = parse_url("kafka://b1:9092,b2:9092/aks-audit,aks-ci?group=soc&start=earliest&fetch.max.bytes=1048576").unwrap();
        assert_eq!(u.connection.brokers, "b1:9092,b2:9092");
        assert_eq!(u.topics, ["aks-audit", "aks-ci"]);
        assert_eq!(u.params["group"], "soc");
        assert_eq!(u.connection.librdkafka["fetch.max.bytes"], "1048576");
        let eh = parse_url("kafka://ns.servicebus.windows.net:9093/hub?preset=eventhubs&password_env=EH_CONN").unwrap();
        assert_eq!(eh.connection.preset, Some(Preset::Eventhubs));
        assert!(parse_url("kafka://b:9092/t?sasl.password=hunter2").unwrap_err().to_string().contains("password_env"));
        assert!(parse_url("kafka://b:9092").is_err());
        assert!(parse_url("http://b:9092/t").is_err());
        assert_eq!(parse_url("kafka://b:9092/t?group=a%20b").unwrap().params["group"], "a b");
    }

    #[test]
    fn eventhubs_preset_reads_the_password_from_the_environment_only() {
        let conn = Connection {
            brokers: "ns.servicebus.windows.net:9093".into(),
            preset: Some(Preset::Eventhubs),
            password_env: Some("CROWSNEST_TEST_UNSET_VAR".into()),
            ..Connection::default()
        };
        let err = conn.client_config(Role::Consumer).unwrap_err().to_string();
        assert!(err.contains("CROWSNEST_TEST_UNSET_VAR"), "{err}");
        let mut with = conn.clone();
        with.librdkafka.insert("sasl.password".into(), "Endpoint=sb://x/;SharedAccessKey=k".into());
        let c = with.client_config(Role::Consumer).unwrap();
        assert_eq!(c.get("security.protocol"), Some("SASL_SSL"));
        assert_eq!(c.get("sasl.username"), Some("$ConnectionString"));
        assert_eq!(c.get("session.timeout.ms"), Some("30000"));
        let p = with.client_config(Role::Producer).unwrap();
        assert_eq!(p.get("request.timeout.ms"), Some("60000"));
    }
}
