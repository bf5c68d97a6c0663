//! The small HTTP server for /metrics, /healthz and /readyz. Bound to 127.0.0.1 unless the
//! config says otherwise. It answers GET requests only and reads at most 8 KiB of a request.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::metrics::Metrics;

/// Process state the probes report.
#[derive(Default)]
pub struct Health {
    /// Sources open and the engine planned.
    pub ready: AtomicBool,
    /// Shutting down: not ready any more.
    pub stopping: AtomicBool,
}

pub async fn bind(addr: &str) -> Result<TcpListener> {
    let addr: SocketAddr = addr.parse().with_context(|| format!("metrics address {addr:?} is not HOST:PORT"))?;
    TcpListener::bind(addr).await.with_context(|| format!("binding the metrics server to {addr}"))
}

pub async fn serve(listener: TcpListener, metrics: Arc<Metrics>, health: Arc<Health>) {
    loop {
        let Ok((mut sock, _)) = listener.accept().await else {
            continue;
        };
        let metrics = metrics.clone();
        let health = health.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 8192];
            let mut n = 0;
            // Read until the end of the request head, a full buffer, or a slow client's timeout.
            let read = tokio::time::timeout(Duration::from_secs(5), async {
                while n < buf.len() {
                    let m = sock.read(&mut buf[n..]).await?;
                    if m == 0 {
                        break;
                    }
                    n += m;
                    if buf[..n].windows(4).any(|w| w == b"\r\n\r\n") {
                        break;
                    }
                }
                Ok::<_, std::io::Error>(())
            })
            .await;
            if !matches!(read, Ok(Ok(()))) {
                return;
            }
            let head = String::from_utf8_lossy(&buf[..n]);
            let mut parts = head.split_whitespace();
            let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
            let path = path.split('?').next().unwrap_or("");
            let (status, ctype, body) = match (method, path) {
                ("GET", "/metrics") => ("200 OK", "text/plain; version=0.0.4", metrics.render()),
                ("GET", "/healthz") => ("200 OK", "text/plain", "ok\n".to_string()),
                ("GET", "/readyz") => {
                    if health.ready.load(Ordering::Relaxed) && !health.stopping.load(Ordering::Relaxed) {
                        ("200 OK", "text/plain", "ready\n".to_string())
                    } else {
                        ("503 Service Unavailable", "text/plain", "not ready\n".to_string())
                    }
                }
                ("GET", _) => ("404 Not Found", "text/plain", "not found: try /metrics, /healthz, /readyz\n".to_string()),
                _ => ("405 Method Not Allowed", "text/plain", "only GET\n".to_string()),
            };
            let resp =
                format!("HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
            let _ = sock.write_all(resp.as_bytes()).await;
            let _ = sock.shutdown().await;
        });
    }
}
