//! `[source] kind = "eventhubs"` and `--source eventhubs://NAMESPACE/HUB?…`: which hub, which
//! consumer group, where ownership and checkpoints live, and which identity reads them.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde::Deserialize;

use crate::azure::{AuthMethod, Cloud, Identity};
use crate::source::kafka::StartPosition;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventHubsConfig {
    /// The namespace's host name: NAMESPACE.servicebus.windows.net.
    pub namespace: String,
    /// The event hub the AKS diagnostic setting sends to.
    pub hub: String,
    /// The consumer group; every Crowsnest instance of one deployment uses the same one.
    #[serde(default = "default_group")]
    pub group: String,
    /// The Blob container holding ownership and checkpoints (the processor convention every
    /// Azure SDK shares): https://ACCOUNT.blob.core.windows.net/CONTAINER, or az://CONTAINER
    /// with the account in `checkpoint_account` or $AZURE_STORAGE_ACCOUNT_NAME.
    pub checkpoints: String,
    pub checkpoint_account: Option<String>,
    /// The identity reading the hub: workload_identity, managed_identity, client_secret,
    /// azure_cli, or "emulator" (a fixed token, only for a local stand-in or emulator on a
    /// loopback `endpoint`).
    pub auth: String,
    /// The identity writing checkpoints: the same as `auth` by default, or "sas": an account or
    /// container SAS token read from the environment variable `checkpoint_sas_env`.
    pub checkpoint_auth: Option<String>,
    /// Default AZURE_STORAGE_SAS_KEY (what the lake reads too).
    pub checkpoint_sas_env: Option<String>,
    pub tenant_id: Option<String>,
    pub client_id: Option<String>,
    /// client_secret only. Default: $AZURE_CLIENT_SECRET; write "${VAR}", never the secret.
    pub client_secret: Option<String>,
    pub federated_token_file: Option<PathBuf>,
    #[serde(default)]
    pub cloud: Cloud,
    pub authority_host: Option<String>,
    /// Another AMQP endpoint than amqps://NAMESPACE:5671 (a private endpoint's address, or a
    /// local stand-in: amqp://127.0.0.1:PORT).
    pub endpoint: Option<String>,
    /// Where a partition with no checkpoint starts: earliest (default) or latest.
    #[serde(default)]
    pub start: StartPosition,
    /// Messages each partition's receiver may hold ahead of the pipeline (AMQP link credit).
    #[serde(default = "default_prefetch")]
    pub prefetch: u32,
    /// How often safe positions are written as checkpoints, e.g. "10s".
    pub commit_interval: Option<String>,
    /// standby (default): one instance reads every partition, the others wait to take over;
    /// share: the instances split the partitions (windows then see a share of each key's
    /// events: README, "Instances and partitions").
    #[serde(default)]
    pub instances: Instances,
    /// How often the processor balances partitions with the other instances, e.g. "10s".
    pub balance_interval: Option<String>,
    /// After this long without renewal an instance's partitions may be taken, e.g. "60s".
    pub ownership_expiry: Option<String>,
}

fn default_group() -> String {
    "$Default".into()
}

/// How several instances of one consumer group divide the hub.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Instances {
    /// One reads every partition (it holds a Blob lease); the others stand by.
    #[default]
    Standby,
    /// They split the partitions between them.
    Share,
}

impl std::str::FromStr for Instances {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "standby" => Ok(Instances::Standby),
            "share" => Ok(Instances::Share),
            _ => bail!("instances {s:?}: standby or share"),
        }
    }
}
fn default_prefetch() -> u32 {
    300
}

/// How a client proves who it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Auth {
    Entra(AuthMethod),
    /// A fixed token: local stand-ins and the Event Hubs emulator accept any.
    Emulator,
    /// Blob Storage only: a SAS token from the environment.
    Sas,
}

fn parse_auth(s: &str, key: &str) -> Result<Auth> {
    match s {
        "emulator" => Ok(Auth::Emulator),
        "sas" if key == "checkpoint_auth" => Ok(Auth::Sas),
        other => other.parse().map(Auth::Entra).with_context(|| {
            format!(
                "[source] {key} {other:?}: one of workload_identity, managed_identity, client_secret, azure_cli, emulator{}",
                if key == "checkpoint_auth" { ", sas" } else { "" }
            )
        }),
    }
}

fn is_loopback(url: &url::Url) -> bool {
    match url.host() {
        // amqp:// is not a scheme the URL standard knows, so its host stays a string.
        Some(url::Host::Domain(d)) => {
            d == "localhost" || d.trim_matches(['[', ']']).parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
        }
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

impl EventHubsConfig {
    pub fn validate(&self) -> Result<()> {
        if self.namespace.is_empty() || self.namespace.contains('/') || self.namespace.contains(':') {
            bail!("[source] namespace {:?}: give the host name, NAMESPACE.servicebus.windows.net", self.namespace);
        }
        if self.hub.is_empty() || self.hub.contains('/') {
            bail!("[source] hub {:?} is not an event hub name", self.hub);
        }
        let auth = self.hub_auth()?;
        if auth == Auth::Emulator {
            let loopback = self.endpoint.as_deref().and_then(|e| url::Url::parse(e).ok()).is_some_and(|u| is_loopback(&u));
            if !loopback {
                bail!("[source] auth = \"emulator\" sends no real credential: it is only for a stand-in or emulator on a loopback endpoint (endpoint = \"amqp://127.0.0.1:PORT\")");
            }
        }
        if let Some(e) = &self.endpoint {
            let u = url::Url::parse(e).with_context(|| format!("[source] endpoint {e:?} is not a URL"))?;
            if !matches!(u.scheme(), "amqp" | "amqps") {
                bail!("[source] endpoint {e:?}: amqps://HOST[:PORT] (or amqp:// for a local stand-in)");
            }
            if u.scheme() == "amqp" && !is_loopback(&u) {
                bail!("[source] endpoint {e:?}: plain amqp:// would send tokens in clear; it is only for a loopback stand-in");
            }
        }
        self.checkpoint_auth()?;
        self.checkpoint_url()?;
        if self.prefetch == 0 {
            bail!("[source] prefetch must be at least 1");
        }
        if self.client_secret.is_some() && auth != Auth::Entra(AuthMethod::ClientSecret) {
            bail!("[source] client_secret is set but auth is not \"client_secret\"");
        }
        for (name, v) in [
            ("commit_interval", &self.commit_interval),
            ("balance_interval", &self.balance_interval),
            ("ownership_expiry", &self.ownership_expiry),
        ] {
            if let Some(v) = v {
                crate::rules::parse_duration(v).with_context(|| format!("[source] {name}"))?;
            }
        }
        if self.ownership_expiry() <= self.balance_interval() {
            bail!("[source] ownership_expiry must be longer than balance_interval (twice as long is sensible): otherwise every instance's ownership lapses between two balancing rounds and partitions change hands forever");
        }
        Ok(())
    }

    pub fn hub_auth(&self) -> Result<Auth> {
        parse_auth(&self.auth, "auth")
    }

    pub fn checkpoint_auth(&self) -> Result<Auth> {
        match &self.checkpoint_auth {
            Some(s) => parse_auth(s, "checkpoint_auth"),
            None => match self.hub_auth()? {
                Auth::Emulator => bail!("[source] auth = \"emulator\" does not sign in to Blob Storage: set checkpoint_auth (\"sas\" for Azurite, with the SAS token in {})", self.sas_env()),
                a => Ok(a),
            },
        }
    }

    pub fn sas_env(&self) -> &str {
        self.checkpoint_sas_env.as_deref().unwrap_or("AZURE_STORAGE_SAS_KEY")
    }

    /// The checkpoint container's URL, without credentials.
    pub fn checkpoint_url(&self) -> Result<url::Url> {
        let raw = &self.checkpoints;
        let url = if let Some(container) = raw.strip_prefix("az://") {
            let container = container.trim_end_matches('/');
            if container.is_empty() || container.contains('/') {
                bail!("[source] checkpoints {raw:?}: az://CONTAINER names one container (the account comes from checkpoint_account or AZURE_STORAGE_ACCOUNT_NAME)");
            }
            let account = self
                .checkpoint_account
                .clone()
                .or_else(|| std::env::var("AZURE_STORAGE_ACCOUNT_NAME").ok())
                .filter(|a| !a.is_empty())
                .with_context(|| {
                    format!("[source] checkpoints {raw:?}: which storage account? set checkpoint_account or AZURE_STORAGE_ACCOUNT_NAME")
                })?;
            format!("https://{account}.blob.core.windows.net/{container}")
        } else {
            raw.clone()
        };
        // A SAS token pasted into the URL would end up in logs: refused without echoing it.
        let Ok(u) = url::Url::parse(&url) else {
            bail!("[source] checkpoints: not a URL (https://ACCOUNT.blob.core.windows.net/CONTAINER or az://CONTAINER)");
        };
        if u.query().is_some() || !u.username().is_empty() || u.password().is_some() {
            bail!(
                "[source] checkpoints: give the container URL without ?… (a SAS token belongs in {}, with checkpoint_auth = \"sas\")",
                self.sas_env()
            );
        }
        match u.scheme() {
            "https" => {}
            "http" if is_loopback(&u) => {}
            _ => bail!("[source] checkpoints {url:?}: Blob Storage is https:// (http:// only for Azurite on a loopback address)"),
        }
        let segments: Vec<&str> = u.path_segments().map(|s| s.filter(|p| !p.is_empty()).collect()).unwrap_or_default();
        if segments.is_empty() {
            bail!("[source] checkpoints {url:?}: the URL must name a container (…/CONTAINER)");
        }
        Ok(u)
    }

    pub fn identity(&self, auth: AuthMethod) -> Identity {
        Identity {
            section: "[source]",
            auth,
            tenant_id: self.tenant_id.clone(),
            client_id: self.client_id.clone(),
            client_secret: self.client_secret.clone(),
            federated_token_file: self.federated_token_file.clone(),
            authority_host: crate::azure::authority_host(&self.authority_host, self.cloud),
        }
    }

    pub fn commit_interval(&self) -> Option<Duration> {
        self.commit_interval.as_deref().map(duration)
    }
    pub fn balance_interval(&self) -> Duration {
        self.balance_interval.as_deref().map_or(Duration::from_secs(10), duration)
    }
    pub fn ownership_expiry(&self) -> Duration {
        self.ownership_expiry.as_deref().map_or(Duration::from_secs(60), duration)
    }

    /// The source's name in logs and dead letters.
    pub fn name(&self) -> String {
        format!("eventhubs:{}", self.hub)
    }

    /// What logs may say: never a secret.
    pub fn describe(&self) -> String {
        format!(
            "event hub {} in {} as group {} (auth {}), checkpoints in {}",
            self.hub,
            self.namespace,
            self.group,
            self.auth,
            self.checkpoint_url().map(|u| u.to_string()).unwrap_or_else(|_| "?".into())
        )
    }
}

fn duration(s: &str) -> Duration {
    Duration::from_nanos(crate::rules::parse_duration(s).unwrap_or(0).max(1) as u64)
}

/// `eventhubs://NAMESPACE/HUB?checkpoints=URL&auth=…[&group=G][&endpoint=…][&start=…]…`.
pub fn from_url(url: &str) -> Result<EventHubsConfig> {
    let rest = url.strip_prefix("eventhubs://").context("an Event Hubs source URL starts with eventhubs://")?;
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    let (namespace, hub) = path.trim_end_matches('/').split_once('/').unwrap_or((path, ""));
    // Errors name the source by namespace and hub only: the query may hold a secret pasted by
    // mistake.
    let shown = format!("eventhubs://{namespace}/{hub}");
    let decode = |s: &str| crate::url::percent_decode(s, true);
    let mut cfg = EventHubsConfig {
        namespace: namespace.to_string(),
        hub: hub.to_string(),
        group: default_group(),
        checkpoints: String::new(),
        checkpoint_account: None,
        auth: String::new(),
        checkpoint_auth: None,
        checkpoint_sas_env: None,
        tenant_id: None,
        client_id: None,
        client_secret: None,
        federated_token_file: None,
        cloud: Cloud::Public,
        authority_host: None,
        endpoint: None,
        start: StartPosition::Earliest,
        prefetch: default_prefetch(),
        instances: Instances::Standby,
        commit_interval: None,
        balance_interval: None,
        ownership_expiry: None,
    };
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').with_context(|| format!("{shown}: an option is not KEY=VALUE"))?;
        let k = decode(k).unwrap_or_default();
        let lower = k.to_ascii_lowercase();
        if ["secret", "sig", "key", "token", "password"].iter().any(|s| lower.contains(s)) {
            bail!("{shown}: a secret never goes in a URL; set it in the environment (AZURE_CLIENT_SECRET, AZURE_STORAGE_SAS_KEY)");
        }
        let v = decode(v).with_context(|| format!("{shown}: option {k}: a bad %-escape"))?;
        match k.as_str() {
            "group" => cfg.group = v,
            "checkpoints" => cfg.checkpoints = v,
            "checkpoint_account" => cfg.checkpoint_account = Some(v),
            "auth" => cfg.auth = v,
            "checkpoint_auth" => cfg.checkpoint_auth = Some(v),
            "checkpoint_sas_env" => cfg.checkpoint_sas_env = Some(v),
            "tenant_id" => cfg.tenant_id = Some(v),
            "client_id" => cfg.client_id = Some(v),
            "cloud" => cfg.cloud = v.parse().with_context(|| format!("{shown}: cloud"))?,
            "authority_host" => cfg.authority_host = Some(v),
            "endpoint" => cfg.endpoint = Some(v),
            "start" => cfg.start = v.parse()?,
            "prefetch" => cfg.prefetch = v.parse().with_context(|| format!("{shown}: prefetch"))?,
            "commit_interval" => cfg.commit_interval = Some(v),
            "instances" => cfg.instances = v.parse().with_context(|| format!("{shown}: instances"))?,
            "balance_interval" => cfg.balance_interval = Some(v),
            "ownership_expiry" => cfg.ownership_expiry = Some(v),
            _ => bail!(
                "{shown}: unknown option {k:?} (Event Hubs sources take group, checkpoints, checkpoint_account, auth, checkpoint_auth, checkpoint_sas_env, tenant_id, client_id, cloud, authority_host, endpoint, start, prefetch, commit_interval, instances, balance_interval, ownership_expiry)"
            ),
        }
    }
    if hub.is_empty() {
        bail!("{shown}: the form is eventhubs://NAMESPACE.servicebus.windows.net/HUB?checkpoints=…&auth=…");
    }
    if cfg.checkpoints.is_empty() {
        bail!("{shown}: checkpoints=… (the Blob container for ownership and checkpoints) is required");
    }
    if cfg.auth.is_empty() {
        bail!("{shown}: say which identity reads the hub: auth=workload_identity, managed_identity, client_secret or azure_cli");
    }
    cfg.validate()?;
    Ok(cfg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_gives_every_setting_and_refuses_secrets_and_clear_text() {
        let c = from_url("eventhubs://ns.servicebus.windows.net/aks-audit?group=crowsnest&checkpoints=az://ckpt&checkpoint_account=acct&auth=workload_identity&start=latest").unwrap();
        assert_eq!((c.namespace.as_str(), c.hub.as_str(), c.group.as_str()), ("ns.servicebus.windows.net", "aks-audit", "crowsnest"));
        assert_eq!(c.checkpoint_url().unwrap().as_str(), "https://acct.blob.core.windows.net/ckpt");
        assert_eq!(c.hub_auth().unwrap(), Auth::Entra(AuthMethod::WorkloadIdentity));
        assert_eq!(c.checkpoint_auth().unwrap(), Auth::Entra(AuthMethod::WorkloadIdentity));
        assert_eq!(c.start, StartPosition::Latest);

        let local = "eventhubs://ns.servicebus.windows.net/h?checkpoints=http://127.0.0.1:10000/devstoreaccount1/c&auth=emulator&checkpoint_auth=sas&endpoint=amqp://127.0.0.1:5672";
        assert_eq!(from_url(local).unwrap().checkpoint_auth().unwrap(), Auth::Sas);

        for (bad, says) in [
            ("eventhubs://ns/h?checkpoints=az://c&checkpoint_account=a&auth=client_secret&client_secret=hunter2", "never goes in a URL"),
            ("eventhubs://ns/h?checkpoints=https://a.blob.core.windows.net/c?sv=1%26sig=hunter2&auth=azure_cli", "without ?"),
            ("eventhubs://ns/h?checkpoints=az://c&checkpoint_account=a&auth=emulator", "loopback"),
            ("eventhubs://ns/h?checkpoints=az://c&checkpoint_account=a&auth=azure_cli&endpoint=amqp://10.0.0.4:5672", "in clear"),
            ("eventhubs://ns/h?checkpoints=http://blob.example.com/c&auth=azure_cli", "https"),
            ("eventhubs://ns/h?checkpoints=az://c&checkpoint_account=a", "which identity"),
            ("eventhubs://ns/h?checkpoints=az://c&checkpoint_account=a&auth=azure_cli&balance_interval=60s", "ownership_expiry"),
            ("eventhubs://ns/h?auth=azure_cli&grup=x", "unknown option"),
        ] {
            let e = from_url(bad).unwrap_err().to_string();
            assert!(e.contains(says), "{bad}: {e}");
            assert!(!e.contains("hunter2"), "{e}");
        }
    }
}
