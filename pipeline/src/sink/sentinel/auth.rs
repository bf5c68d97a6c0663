//! Entra ID tokens for the Logs Ingestion API, through the Azure SDK (`azure_identity`, see
//! [`crate::azure`]). The identity is chosen explicitly in the config; the SDK caches tokens and
//! refreshes them five minutes before they expire. Every credential talks through the sink's own HTTP client, so a
//! custom CA and HTTPS_PROXY apply to the token endpoint as to the ingestion endpoint.
//!
//! Tokens never leave this module except as the Authorization header: no log line, error,
//! metric or dead letter carries one.

use std::sync::Arc;

use anyhow::{anyhow, Context, Result};
use azure_core::credentials::{Secret, TokenCredential};

use super::config::SentinelConfig;

/// The HTTP client for both Entra ID and the ingestion endpoint: timeouts, the extra CA, and
/// the environment's proxy settings (reqwest reads HTTPS_PROXY / NO_PROXY).
pub fn http_client(cfg: &SentinelConfig) -> Result<reqwest::Client> {
    let mut b = reqwest::Client::builder()
        .timeout(cfg.request_timeout())
        .connect_timeout(std::time::Duration::from_secs(10))
        .user_agent(concat!("crowsnest/", env!("CARGO_PKG_VERSION")));
    if let Some(path) = &cfg.ca_file {
        let pem = std::fs::read(path).with_context(|| format!("[sinks.sentinel] ca_file {}", path.display()))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .with_context(|| format!("[sinks.sentinel] ca_file {} holds no PEM certificate", path.display()))?;
        if certs.is_empty() {
            anyhow::bail!("[sinks.sentinel] ca_file {} holds no PEM certificate", path.display());
        }
        for c in certs {
            b = b.add_root_certificate(c);
        }
    }
    b.build().context("building the HTTP client")
}

pub struct Auth {
    cfg: SentinelConfig,
    http: reqwest::Client,
    credential: Arc<dyn TokenCredential>,
    scope: String,
    /// The last token handed out, to count refreshes (the SDK's cache decides them).
    last: Option<Secret>,
}

/// What a caller learns from a fresh token, besides the header.
pub struct Bearer {
    pub header: String,
    /// A token the SDK had not handed out before.
    pub refreshed: bool,
}

impl Auth {
    pub fn new(cfg: &SentinelConfig, http: reqwest::Client) -> Result<Auth> {
        let credential = credential(cfg, &http)?;
        Ok(Auth { cfg: cfg.clone(), http, credential, scope: cfg.scope(), last: None })
    }

    pub async fn bearer(&mut self) -> Result<Bearer> {
        let token = self.credential.get_token(&[self.scope.as_str()], None).await.map_err(|e| {
            anyhow!("getting an Entra ID token ({:?}, scope {}, authority {}): {e}", self.cfg.auth, self.scope, self.cfg.authority_host())
        })?;
        let refreshed = self.last.as_ref().is_none_or(|t| t.secret() != token.token.secret());
        let header = format!("Bearer {}", token.token.secret());
        self.last = Some(token.token);
        Ok(Bearer { header, refreshed })
    }

    /// After a 401: the SDK would hand back the same cached token, so the credential (and its
    /// cache) is built afresh and the next request asks Entra ID again.
    pub fn forget(&mut self) -> Result<()> {
        self.credential = credential(&self.cfg, &self.http)?;
        self.last = None;
        Ok(())
    }
}

fn credential(cfg: &SentinelConfig, http: &reqwest::Client) -> Result<Arc<dyn TokenCredential>> {
    crate::azure::credential(&cfg.identity(), Some(http))
}

/// What a 401 or 403 means, for a person.
pub fn explain_refusal(status: u16, cfg: &SentinelConfig) -> String {
    match status {
        401 => format!(
            "401: the ingestion endpoint refused the token. Usually it was issued for another audience or cloud (scope in use: {}; \
             set cloud = \"usgov\"/\"china\" or scope for sovereign clouds), or by another tenant than the DCR's (authority {}). \
             Retrying with a fresh token.",
            cfg.scope(),
            cfg.authority_host()
        ),
        403 => format!(
            "403: the identity may not write to this data collection rule. Assign it the \"Monitoring Metrics Publisher\" role on \
             the DCR ({}, e.g. with deploy/sentinel/crowsnest-sentinel.json); a new role assignment takes up to 30 minutes to \
             apply, so the sink keeps retrying slowly.",
            cfg.dcr
        ),
        404 => format!(
            "404: no data collection rule {} with stream {} at {}. Check dcr (the rule's immutableId, not its name), stream \
             (Custom-…, as declared in the DCR) and that the endpoint is the DCR's own logs-ingestion endpoint or a DCE it is \
             associated with.",
            cfg.dcr, cfg.stream, cfg.endpoint
        ),
        s => format!("{s}: unexpected answer from the ingestion endpoint"),
    }
}
