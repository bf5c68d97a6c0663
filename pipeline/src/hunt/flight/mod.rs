//! Hunts over Arrow Flight SQL (`crowsnest serve-sql`, or `[hunt] listen` inside `run`): the
//! catalog `crowsnest hunt` sees, served to notebooks (ADBC), DBeaver (JDBC) and Grafana.
//!
//! Built on arrow-flight's own `FlightSqlService` rather than the datafusion-flight-sql-server
//! crate: that crate answers neither the handshake (ADBC's and JDBC's username/password) nor
//! SqlInfo (asked by every client on connect), has no per-query limits, and brings
//! datafusion-substrait, a large build for prepared statements we plan from SQL anyway.
//!
//! [`auth`] decides who calls, [`query`] runs statements within limits and logs them,
//! [`service`] speaks the protocol, [`metadata`] answers catalog questions, [`wire`] keeps
//! result types readable by every client.

pub mod auth;
pub mod metadata;
pub mod query;
pub mod service;
pub mod wire;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use arrow_flight::flight_service_server::FlightServiceServer;
use datafusion::prelude::SessionContext;
use serde::Deserialize;
use tonic::transport::{Identity, Server, ServerTlsConfig};

pub use auth::Authenticator;
pub use query::Limits;

/// The port Flight SQL servers usually take.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:50051";
/// The largest message a client may send (parameters of a prepared statement); results are
/// cut into messages of about 2 MiB, under every client's 16 MiB default.
const MAX_REQUEST_BYTES: usize = 16 << 20;

/// `[hunt]` in the config, and `crowsnest serve-sql`'s flags.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServeConfig {
    /// IP:PORT. Anything but loopback needs tokens and TLS (or `allow_plaintext`).
    #[serde(default = "default_listen")]
    pub listen: String,
    /// Lines `USER:TOKEN`; the token is also the user's password for the Basic handshake.
    pub tokens_file: Option<PathBuf>,
    /// PEM certificate chain and private key: serve over TLS (grpc+tls://).
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// Serve clear text beyond loopback (behind a TLS-terminating proxy or mesh only).
    #[serde(default)]
    pub allow_plaintext: bool,
    /// Memory one query may hold, MiB.
    #[serde(default = "default_memory_mb")]
    pub memory_limit_mb: usize,
    /// Longest a query may run, e.g. 5m.
    #[serde(default = "default_timeout")]
    pub query_timeout: String,
    /// Queries running at once.
    #[serde(default = "default_concurrent")]
    pub max_concurrent: usize,
}

fn default_listen() -> String {
    DEFAULT_LISTEN.into()
}
fn default_memory_mb() -> usize {
    512
}
fn default_timeout() -> String {
    "5m".into()
}
fn default_concurrent() -> usize {
    4
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            listen: default_listen(),
            tokens_file: None,
            tls_cert: None,
            tls_key: None,
            allow_plaintext: false,
            memory_limit_mb: default_memory_mb(),
            query_timeout: default_timeout(),
            max_concurrent: default_concurrent(),
        }
    }
}

impl ServeConfig {
    pub fn limits(&self) -> Result<Limits> {
        let timeout = crate::rules::parse_duration(&self.query_timeout)
            .map_err(|_| anyhow::anyhow!("query_timeout {:?}: give a duration such as 30s or 5m", self.query_timeout))?;
        if self.memory_limit_mb == 0 || self.max_concurrent == 0 {
            bail!("memory_limit_mb and max_concurrent must be at least 1");
        }
        Ok(Limits {
            memory_bytes: self.memory_limit_mb << 20,
            timeout: std::time::Duration::from_nanos(timeout.max(1) as u64),
            max_concurrent: self.max_concurrent,
        })
    }

    /// The users, from the token file and `$CROWSNEST_SQL_TOKEN`.
    pub fn authenticator(&self) -> Result<Authenticator> {
        Authenticator::load(self.tokens_file.as_deref(), std::env::var(auth::TOKEN_ENV).ok())
    }

    /// The address, once what would expose hunts is refused: no tokens beyond loopback, clear
    /// text beyond loopback, half a TLS pair.
    pub fn checked_addr(&self, auth: &Authenticator) -> Result<SocketAddr> {
        let addr: SocketAddr =
            self.listen.parse().with_context(|| format!("listen {:?}: give IP:PORT, e.g. {DEFAULT_LISTEN}", self.listen))?;
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            bail!("TLS needs both a certificate (tls_cert) and its key (tls_key)");
        }
        if !addr.ip().is_loopback() {
            if !auth.required() {
                bail!(
                    "serving SQL on {addr} (beyond this machine) needs tokens: give a token file (--tokens FILE, lines USER:TOKEN) or ${}",
                    auth::TOKEN_ENV
                );
            }
            if self.tls_cert.is_none() && !self.allow_plaintext {
                bail!("serving SQL on {addr} (beyond this machine) sends tokens and results: give --tls-cert and --tls-key, or --allow-plaintext behind a TLS proxy");
            }
        }
        Ok(addr)
    }

    /// The certificate chain and key, checked here (rustls would only say so at the first
    /// client): PEM, a key that is the certificate's.
    fn tls(&self) -> Result<Option<ServerTlsConfig>> {
        let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) else { return Ok(None) };
        let cert_pem = std::fs::read(cert).with_context(|| format!("reading the TLS certificate {}", cert.display()))?;
        let key_pem = std::fs::read(key).with_context(|| format!("reading the TLS key {}", key.display()))?;
        let chain = openssl::x509::X509::stack_from_pem(&cert_pem).ok().filter(|c| !c.is_empty());
        let Some(leaf) = chain.as_ref().and_then(|c| c.first()) else {
            bail!("{} holds no PEM certificate", cert.display());
        };
        let private = openssl::pkey::PKey::private_key_from_pem(&key_pem)
            .map_err(|_| anyhow::anyhow!("{} holds no PEM private key", key.display()))?;
        if !leaf.public_key().is_ok_and(|public| public.public_eq(&private)) {
            bail!("the key {} is not the key of the certificate {}", key.display(), cert.display());
        }
        Ok(Some(ServerTlsConfig::new().identity(Identity::from_pem(cert_pem, key_pem))))
    }

    /// Everything `bind` checks, without taking the port (`crowsnest validate`).
    pub fn check(&self) -> Result<String> {
        let auth = self.authenticator()?;
        let addr = self.checked_addr(&auth)?;
        self.limits()?;
        let tls = self.tls()?.is_some();
        Ok(format!("{}://{addr}, {} user(s) with tokens", if tls { "grpc+tls" } else { "grpc" }, auth.users()))
    }
}

/// A server with its port taken, not yet serving.
pub struct Bound {
    listener: tokio::net::TcpListener,
    pub addr: SocketAddr,
    pub tls: bool,
    tls_config: Option<ServerTlsConfig>,
    auth: Arc<Authenticator>,
    limits: Limits,
}

impl Bound {
    /// `grpc://` or `grpc+tls://` and the address, as clients take it.
    pub fn url(&self) -> String {
        format!("{}://{}", if self.tls { "grpc+tls" } else { "grpc" }, self.addr)
    }

    pub fn auth(&self) -> &Authenticator {
        &self.auth
    }
}

/// Checks the configuration and takes the port (must run inside a Tokio runtime).
pub async fn bind(cfg: &ServeConfig) -> Result<Bound> {
    let auth = cfg.authenticator()?;
    let addr = cfg.checked_addr(&auth)?;
    let limits = cfg.limits()?;
    let tls_config = cfg.tls()?;
    let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("binding the SQL server to {addr}"))?;
    let addr = listener.local_addr()?;
    Ok(Bound { listener, addr, tls: tls_config.is_some(), tls_config, auth: Arc::new(auth), limits })
}

/// Serves `ctx` until `shutdown` completes; running queries are then cut off.
pub async fn serve(bound: Bound, ctx: SessionContext, shutdown: impl Future<Output = ()>) -> Result<()> {
    let service = service::FlightSqlServer::new(query::Executor::new(ctx, bound.limits), bound.auth);
    let service = FlightServiceServer::new(service).max_decoding_message_size(MAX_REQUEST_BYTES);
    let mut server = Server::builder();
    if let Some(tls) = bound.tls_config {
        // Other crates enable both of rustls' providers, so none is implied: name one (an
        // earlier call's choice stands).
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        server = server.tls_config(tls).context("the TLS certificate and key")?;
    }
    let incoming = tonic::transport::server::TcpIncoming::from(bound.listener).with_nodelay(Some(true));
    server.add_service(service).serve_with_incoming_shutdown(incoming, shutdown).await.context("the SQL server")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn beyond_loopback_needs_tokens_and_tls_or_an_explicit_plaintext() {
        let open = Authenticator::open();
        let cfg = |listen: &str| ServeConfig { listen: listen.into(), ..ServeConfig::default() };
        assert!(cfg("127.0.0.1:0").checked_addr(&open).is_ok());
        assert!(cfg("0.0.0.0:50051").checked_addr(&open).unwrap_err().to_string().contains("needs tokens"));
        let with_token = Authenticator::load(None, Some("ann:0123456789abcdef0123".into())).unwrap();
        assert!(cfg("0.0.0.0:50051").checked_addr(&with_token).unwrap_err().to_string().contains("--tls-cert"));
        let plain = ServeConfig { allow_plaintext: true, ..cfg("0.0.0.0:50051") };
        assert!(plain.checked_addr(&with_token).is_ok());
        let half = ServeConfig { tls_cert: Some("c.pem".into()), ..cfg("127.0.0.1:0") };
        assert!(half.checked_addr(&open).unwrap_err().to_string().contains("both"));
        assert!(cfg("localhost").checked_addr(&open).is_err());
    }
}
