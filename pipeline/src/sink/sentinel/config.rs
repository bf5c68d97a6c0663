//! `[sinks.sentinel]` and `--sink sentinel://…`: where the Logs Ingestion API is, which identity
//! posts to it, and how the sink batches, spools and retries.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde::Deserialize;

/// The stream the bundled templates declare for alerts (deploy/sentinel/).
pub const DEFAULT_STREAM: &str = "Custom-CrowsnestAlert";
/// The service refuses a request body above 1 MB, compressed or not.
pub const MAX_REQUEST_BYTES: usize = 1_000_000;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SentinelConfig {
    /// The DCR's own logs-ingestion endpoint or a DCE: https://NAME.REGION-1.ingest.monitor.azure.com
    pub endpoint: String,
    /// The DCR's immutable id (dcr-…; not its resource name).
    pub dcr: String,
    #[serde(default = "default_stream")]
    pub stream: String,
    /// Which identity posts: chosen explicitly, never guessed from the environment.
    pub auth: AuthMethod,
    /// Default: $AZURE_TENANT_ID (client_secret, workload_identity).
    pub tenant_id: Option<String>,
    /// Default: $AZURE_CLIENT_ID; for managed_identity, a user-assigned identity's client id.
    pub client_id: Option<String>,
    /// client_secret only. Default: $AZURE_CLIENT_SECRET; write "${VAR}" to read another
    /// variable, never the secret itself.
    pub client_secret: Option<String>,
    /// workload_identity only. Default: $AZURE_FEDERATED_TOKEN_FILE (the AKS webhook sets it).
    pub federated_token_file: Option<PathBuf>,
    /// public (default), usgov or china: picks the Entra ID host and the token scope.
    #[serde(default)]
    pub cloud: Cloud,
    /// The Entra ID endpoint. Default: $AZURE_AUTHORITY_HOST, else the cloud's.
    pub authority_host: Option<String>,
    /// Default: the cloud's monitor scope (https://monitor.azure.com//.default).
    pub scope: Option<String>,
    /// A PEM bundle trusted besides the system's (a TLS-inspecting proxy's CA); $SSL_CERT_FILE
    /// replaces the system bundle as in every OpenSSL program.
    pub ca_file: Option<PathBuf>,
    /// A partly filled batch is sent after this long, e.g. "5s".
    pub batch_timeout: Option<String>,
    /// Largest request body, bytes (at most 1,000,000).
    #[serde(default = "default_max_request")]
    pub max_request_bytes: usize,
    /// Batches wait here (fsynced) until Azure accepts them. Default: STATE_DIR/sentinel/STREAM,
    /// or ./crowsnest-spool/sentinel/STREAM without a state directory.
    pub spool_dir: Option<PathBuf>,
    /// When the spool holds this much, the pipeline waits (back-pressure to the source).
    #[serde(default = "default_max_spool")]
    pub max_spool_bytes: u64,
    /// One request's time limit, e.g. "30s".
    pub request_timeout: Option<String>,
    /// How long a stopping service waits for the spool to drain before leaving the rest for
    /// the next start, e.g. "30s". A replay waits until everything is delivered.
    pub drain_timeout: Option<String>,
    /// "asim": also send decoded audit events, as ASIM Audit Events, to `events_stream`.
    pub forward_events: Option<ForwardEvents>,
    #[serde(default = "default_events_stream")]
    pub events_stream: String,
    /// A SQL condition over kube_audit's columns choosing the events forwarded (default: all),
    /// e.g. "verb NOT IN ('get', 'list', 'watch')".
    pub events_where: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ForwardEvents {
    /// The ASIM Audit Event schema (the ASimAuditEventLogs table).
    Asim,
}

/// The stream deploy/sentinel declares for forwarded events (flowing to ASimAuditEventLogs).
pub const DEFAULT_EVENTS_STREAM: &str = "Custom-CrowsnestAuditEvents";

fn default_events_stream() -> String {
    DEFAULT_EVENTS_STREAM.to_string()
}

fn default_stream() -> String {
    DEFAULT_STREAM.to_string()
}
fn default_max_request() -> usize {
    MAX_REQUEST_BYTES
}
fn default_max_spool() -> u64 {
    1 << 30
}

pub use crate::azure::{AuthMethod, Cloud};

/// The Logs Ingestion API's token scope per cloud.
fn monitor_scope(cloud: Cloud) -> &'static str {
    match cloud {
        Cloud::Public => "https://monitor.azure.com//.default",
        Cloud::Usgov => "https://monitor.azure.us//.default",
        Cloud::China => "https://monitor.azure.cn//.default",
    }
}

impl SentinelConfig {
    pub fn validate(&self) -> Result<()> {
        let url =
            reqwest::Url::parse(&self.endpoint).with_context(|| format!("[sinks.sentinel] endpoint {:?} is not a URL", self.endpoint))?;
        if url.scheme() != "https" {
            bail!("[sinks.sentinel] endpoint {:?}: the Logs Ingestion API is HTTPS only", self.endpoint);
        }
        if !self.dcr.starts_with("dcr-") {
            bail!(
                "[sinks.sentinel] dcr {:?}: give the rule's immutable id (dcr-…, the template's dcrImmutableId output), not its name",
                self.dcr
            );
        }
        for (key, s) in [("stream", &self.stream), ("events_stream", &self.events_stream)] {
            if s.is_empty() || s.contains('/') || s.contains('?') {
                bail!("[sinks.sentinel] {key} {s:?} is not a stream name (Custom-…)");
            }
        }
        if self.forward_events.is_some() && self.events_stream == self.stream {
            bail!("[sinks.sentinel] events_stream must differ from stream (alerts and events are different tables)");
        }
        if self.max_request_bytes > MAX_REQUEST_BYTES || self.max_request_bytes < 1024 {
            bail!("[sinks.sentinel] max_request_bytes must be between 1024 and {MAX_REQUEST_BYTES} (the service's limit)");
        }
        if let Some(h) = &self.authority_host {
            if !h.starts_with("https://") {
                bail!("[sinks.sentinel] authority_host {h:?} must be an https:// URL");
            }
        }
        for (name, v) in
            [("batch_timeout", &self.batch_timeout), ("request_timeout", &self.request_timeout), ("drain_timeout", &self.drain_timeout)]
        {
            if let Some(v) = v {
                crate::rules::parse_duration(v).with_context(|| format!("[sinks.sentinel] {name}"))?;
            }
        }
        if self.client_secret.is_some() && self.auth != AuthMethod::ClientSecret {
            bail!("[sinks.sentinel] client_secret is set but auth is not \"client_secret\"");
        }
        Ok(())
    }

    /// `POST {endpoint}/dataCollectionRules/{dcr}/streams/{stream}?api-version=2023-01-01`.
    pub fn ingestion_url(&self) -> String {
        format!("{}/dataCollectionRules/{}/streams/{}?api-version=2023-01-01", self.endpoint.trim_end_matches('/'), self.dcr, self.stream)
    }

    pub fn batch_timeout(&self) -> Duration {
        duration_or(&self.batch_timeout, Duration::from_secs(5))
    }
    pub fn request_timeout(&self) -> Duration {
        duration_or(&self.request_timeout, Duration::from_secs(30))
    }
    pub fn drain_timeout(&self) -> Duration {
        duration_or(&self.drain_timeout, Duration::from_secs(30))
    }

    /// The authority host in force: the config's, else $AZURE_AUTHORITY_HOST, else the cloud's.
    pub fn authority_host(&self) -> String {
        crate::azure::authority_host(&self.authority_host, self.cloud)
    }

    /// The identity that posts.
    pub fn identity(&self) -> crate::azure::Identity {
        crate::azure::Identity {
            section: "[sinks.sentinel]",
            auth: self.auth,
            tenant_id: self.tenant_id.clone(),
            client_id: self.client_id.clone(),
            client_secret: self.client_secret.clone(),
            federated_token_file: self.federated_token_file.clone(),
            authority_host: self.authority_host(),
        }
    }

    pub fn scope(&self) -> String {
        self.scope.clone().unwrap_or_else(|| monitor_scope(self.cloud).to_string())
    }

    /// The settings of the forwarded-events stream, when `forward_events` asks for it: the same
    /// endpoint, rule and identity, its own stream, and its own spool, named after its stream
    /// (beside the alerts' one by default, inside `spool_dir` when that is set, so it stays on
    /// the volume given).
    pub fn events_config(&self) -> Option<SentinelConfig> {
        self.forward_events?;
        let mut c = self.clone();
        c.spool_dir = self.spool_dir.as_ref().map(|d| d.join(&self.events_stream));
        c.stream = self.events_stream.clone();
        c.forward_events = None;
        Some(c)
    }

    pub fn spool_dir(&self, state_dir: Option<&Path>) -> PathBuf {
        match (&self.spool_dir, state_dir) {
            (Some(d), _) => d.clone(),
            (None, Some(s)) => s.join("sentinel").join(&self.stream),
            (None, None) => PathBuf::from("crowsnest-spool").join("sentinel").join(&self.stream),
        }
    }

    /// What logs and errors may say about this sink: never a secret.
    pub fn describe(&self) -> String {
        format!("sentinel {} at {} (dcr {}, auth {:?})", self.stream, self.endpoint, self.dcr, self.auth)
    }
}

fn duration_or(v: &Option<String>, default: Duration) -> Duration {
    v.as_deref().and_then(|s| crate::rules::parse_duration(s).ok()).map_or(default, |n| Duration::from_nanos(n.max(0) as u64))
}

/// `sentinel://HOST[:PORT]?dcr=dcr-…&stream=Custom-…&auth=workload_identity[&cloud=…][&ca_file=…]`:
/// the endpoint is https://HOST[:PORT].
pub fn from_url(url: &str) -> Result<SentinelConfig> {
    let rest = url.strip_prefix("sentinel://").context("a sentinel sink URL starts with sentinel://")?;
    let (host, query) = rest.split_once('?').unwrap_or((rest, ""));
    let host = host.trim_end_matches('/');
    if host.is_empty() || host.contains('/') {
        bail!("--sink sentinel://…: the form is sentinel://HOST?dcr=…&stream=…&auth=… (HOST is the ingestion endpoint's host name)");
    }
    let mut cfg = SentinelConfig {
        endpoint: format!("https://{host}"),
        dcr: String::new(),
        stream: default_stream(),
        auth: AuthMethod::WorkloadIdentity,
        tenant_id: None,
        client_id: None,
        client_secret: None,
        federated_token_file: None,
        cloud: Cloud::Public,
        authority_host: None,
        scope: None,
        ca_file: None,
        batch_timeout: None,
        max_request_bytes: MAX_REQUEST_BYTES,
        spool_dir: None,
        max_spool_bytes: default_max_spool(),
        request_timeout: None,
        drain_timeout: None,
        forward_events: None,
        events_stream: default_events_stream(),
        events_where: None,
    };
    // Errors name the sink by its host only, never the query: it may hold a secret pasted by
    // mistake, under any spelling.
    let url = format!("sentinel://{host}");
    let decode = |s: &str| crate::url::percent_decode(s, true);
    if query.split('&').any(|p| decode(p.split('=').next().unwrap_or_default()).unwrap_or_default().to_ascii_lowercase().contains("secret"))
    {
        bail!("{url}: a secret never goes in a URL; set AZURE_CLIENT_SECRET, or client_secret = \"${{VAR}}\" in the config");
    }
    let mut auth = None;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').with_context(|| format!("{url}: an option is not KEY=VALUE"))?;
        let v = decode(v).with_context(|| format!("{url}: option {k}: a bad %-escape"))?;
        match k {
            "dcr" => cfg.dcr = v,
            "stream" => cfg.stream = v,
            "auth" => auth = Some(v.parse()?),
            "tenant_id" => cfg.tenant_id = Some(v),
            "client_id" => cfg.client_id = Some(v),
            "cloud" => cfg.cloud = v.parse().with_context(|| format!("{url}: cloud"))?,
            "authority_host" => cfg.authority_host = Some(v),
            "scope" => cfg.scope = Some(v),
            "ca_file" => cfg.ca_file = Some(PathBuf::from(v)),
            "batch_timeout" => cfg.batch_timeout = Some(v),
            "max_request_bytes" => cfg.max_request_bytes = v.parse().with_context(|| format!("{url}: max_request_bytes"))?,
            "spool_dir" => cfg.spool_dir = Some(PathBuf::from(v)),
            "max_spool_bytes" => cfg.max_spool_bytes = v.parse().with_context(|| format!("{url}: max_spool_bytes"))?,
            "drain_timeout" => cfg.drain_timeout = Some(v),
            "request_timeout" => cfg.request_timeout = Some(v),
            "forward_events" => {
                cfg.forward_events = match v.as_str() {
                    "asim" => Some(ForwardEvents::Asim),
                    _ => bail!("{url}: forward_events=asim is the one form"),
                }
            }
            "events_stream" => cfg.events_stream = v,
            "events_where" => cfg.events_where = Some(v),
            _ => bail!(
                "{url}: unknown option {k:?} (sentinel sinks take dcr, stream, auth, tenant_id, client_id, cloud, authority_host, scope, ca_file, batch_timeout, max_request_bytes, request_timeout, spool_dir, max_spool_bytes, drain_timeout, forward_events, events_stream, events_where)"
            ),
        }
    }
    cfg.auth = auth.with_context(|| {
        format!("{url}: say which identity posts: auth=workload_identity, client_secret, managed_identity or azure_cli")
    })?;
    if cfg.dcr.is_empty() {
        bail!("{url}: dcr=… (the data collection rule's immutable id) is required");
    }
    cfg.validate()?;
    Ok(cfg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_form() {
        let c = from_url("sentinel://crowsnest-abcd.westeurope-1.ingest.monitor.azure.com?dcr=dcr-0123&stream=Custom-CrowsnestAlert&auth=workload_identity").unwrap();
        assert_eq!(
            c.ingestion_url(),
            "https://crowsnest-abcd.westeurope-1.ingest.monitor.azure.com/dataCollectionRules/dcr-0123/streams/Custom-CrowsnestAlert?api-version=2023-01-01"
        );
        assert_eq!(c.auth, AuthMethod::WorkloadIdentity);
        assert_eq!(c.scope(), "https://monitor.azure.com//.default");
        let gov = from_url(
            "sentinel://h.usgovvirginia-1.ingest.monitor.azure.us?dcr=dcr-1&auth=client_secret&cloud=usgov&ca_file=%2Fetc%2Fca.pem",
        )
        .unwrap();
        assert_eq!(
            (gov.scope().as_str(), gov.cloud.authority_host()),
            ("https://monitor.azure.us//.default", "https://login.microsoftonline.us")
        );
        assert_eq!(gov.ca_file.as_deref(), Some(Path::new("/etc/ca.pem")));
        assert!(from_url("sentinel://h?dcr=dcr-1").unwrap_err().to_string().contains("auth="), "the identity is chosen explicitly");
        // The events stream spools on its own: beside the alerts by default, inside spool_dir when set.
        let ev = from_url("sentinel://h?dcr=dcr-1&auth=azure_cli&forward_events=asim").unwrap();
        assert!(from_url("sentinel://h?dcr=dcr-1&auth=azure_cli").unwrap().events_config().is_none());
        let e = ev.events_config().unwrap();
        assert_eq!(e.stream, DEFAULT_EVENTS_STREAM);
        assert_eq!(e.spool_dir(Some(Path::new("/state"))), Path::new("/state/sentinel/Custom-CrowsnestAuditEvents"));
        assert_eq!(ev.spool_dir(Some(Path::new("/state"))), Path::new("/state/sentinel/Custom-CrowsnestAlert"));
        let mounted = from_url("sentinel://h?dcr=dcr-1&auth=azure_cli&forward_events=asim&spool_dir=/spool").unwrap();
        assert_eq!(mounted.events_config().unwrap().spool_dir(None), Path::new("/spool/Custom-CrowsnestAuditEvents"));
        assert!(from_url("sentinel://h?auth=azure_cli").is_err(), "dcr is required");
        assert!(from_url("sentinel://h?dcr=my-rule&auth=azure_cli").is_err(), "a name is not an immutable id");
        assert!(from_url("sentinel://h?dcr=dcr-1&auth=azure_cli&strem=x").is_err(), "typos are errors");
        for url in [
            "sentinel://h?dcr=dcr-1&auth=client_secret&client_secret=hunter2",
            "sentinel://h?cloud=nowhere&client_secret=hunter2",
            "sentinel://h?dcr=dcr-1&Client_Secret=hunter2&auth=client_secret",
            "sentinel://h?dcr=dcr-1&client%5Fsecret=hunter2&auth=client_secret",
            "sentinel://h?max_request_bytes=x&dcr=dcr-1&auth=azure_cli&x=hunter2",
        ] {
            let e = format!("{:#}", from_url(url).unwrap_err());
            assert!(!e.contains("hunter2"), "{e}");
        }
        assert!(from_url("sentinel://h?dcr=dcr-1&auth=client_secret&client_secret=hunter2")
            .unwrap_err()
            .to_string()
            .contains("never goes in a URL"));
    }
}
