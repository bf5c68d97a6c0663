//! `crowsnest validate --check`: gets a token and posts an empty batch (`[]`), which the
//! service answers like any other request (204 when the endpoint, DCR, stream, token and role
//! are all right) without adding a row. Each failure is explained the way a person needs it.

use anyhow::{bail, Result};

use super::auth::{explain_refusal, http_client, Auth};
use super::config::SentinelConfig;
use super::request::Body;
use super::service::Jitter;

pub async fn check(cfg: &SentinelConfig) -> Result<String> {
    let http = http_client(cfg)?;
    let mut auth = Auth::new(cfg, http.clone())?;
    let bearer = match auth.bearer().await {
        Ok(b) => b,
        Err(e) => bail!(
            "{}: no token: {e:#}\n  check the identity settings ({:?}: tenant and client ids, secret or federated token file), \
             and that authority_host / cloud match your tenant's cloud",
            cfg.describe(),
            cfg.auth
        ),
    };
    let body = Body::of_rows(std::iter::empty::<&[u8]>()).gzip();
    let resp = super::request::post(&http, &cfg.ingestion_url(), bearer.header, body, &Jitter::new().request_id()).send().await;
    let resp = match resp {
        Ok(r) => r,
        Err(e) => bail!(
            "{}: no answer from {} ({e}); check the endpoint, DNS, HTTPS_PROXY/NO_PROXY, and ca_file or SSL_CERT_FILE when a proxy inspects TLS",
            cfg.describe(),
            cfg.endpoint
        ),
    };
    let status = resp.status().as_u16();
    let code = resp.headers().get("x-ms-error-code").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    let text = resp.text().await.unwrap_or_default();
    match status {
        200..=299 => Ok(format!("{}: OK (an empty batch was accepted: endpoint, DCR, stream, token and role are right)", cfg.describe())),
        401 | 403 | 404 => bail!("{}: {}\n  service said: {code} {}", cfg.describe(), explain_refusal(status, cfg), text.trim()),
        _ => bail!("{}: {status} {code}: {}", cfg.describe(), text.trim()),
    }
}
