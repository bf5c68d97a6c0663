//! The small HTTP server for /metrics, /healthz and /readyz. Bound to 127.0.0.1 unless the
//! config says otherwise. It answers GET requests of its three routes only, reads at most 8 KiB
//! of a request head within 5 s, serves at most 128 clients at once and gives up on one that
//! does not read its answer within 10 s: a tested answer to slow and oversized clients, kept
//! instead of a framework for three fixed routes.

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

/// Connections served at once; more are answered 503 and closed at once, so a flood of idle
/// or slow clients cannot take every file descriptor (a scraper needs one).
const MAX_CONNECTIONS: usize = 128;
/// A request head must arrive whole within this, and fit in [`MAX_HEAD`].
const HEAD_TIMEOUT: Duration = Duration::from_secs(5);
const MAX_HEAD: usize = 8192;
/// A client that does not take its answer within this is dropped.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

pub async fn serve(listener: TcpListener, metrics: Arc<Metrics>, health: Arc<Health>) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let mut sock = match listener.accept().await {
            Ok((sock, _)) => sock,
            // Out of descriptors (EMFILE) and the like: wait instead of spinning on accept.
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tokio::spawn(async move {
                let _ = tokio::time::timeout(WRITE_TIMEOUT, respond(&mut sock, "503 Service Unavailable", "text/plain", "busy\n")).await;
            });
            continue;
        };
        let metrics = metrics.clone();
        let health = health.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let mut buf = vec![0u8; MAX_HEAD];
            let mut n = 0;
            let mut complete = false;
            // Read until the end of the request head, a full buffer, or a slow client's timeout.
            let read = tokio::time::timeout(HEAD_TIMEOUT, async {
                while n < buf.len() {
                    let m = sock.read(&mut buf[n..]).await?;
                    if m == 0 {
                        break;
                    }
                    // Only the new bytes (and the three before them) can complete the head.
                    let from = n.saturating_sub(3);
                    n += m;
                    if buf[from..n].windows(4).any(|w| w == b"\r\n\r\n") {
                        complete = true;
                        break;
                    }
                }
                Ok::<_, std::io::Error>(())
            })
            .await;
            if !matches!(read, Ok(Ok(()))) {
                return;
            }
            if !complete {
                if n == buf.len() {
                    let _ = tokio::time::timeout(
                        WRITE_TIMEOUT,
                        respond(&mut sock, "431 Request Header Fields Too Large", "text/plain", "request head over 8 KiB\n"),
                    )
                    .await;
                }
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
                // Exact routes only: nothing is read from disk, so no path can reach a file.
                ("GET", _) => ("404 Not Found", "text/plain", "not found: try /metrics, /healthz, /readyz\n".to_string()),
                _ => ("405 Method Not Allowed", "text/plain", "only GET\n".to_string()),
            };
            let _ = tokio::time::timeout(WRITE_TIMEOUT, respond(&mut sock, status, ctype, &body)).await;
        });
    }
}

async fn respond(sock: &mut tokio::net::TcpStream, status: &str, ctype: &str, body: &str) -> std::io::Result<()> {
    let resp = format!("HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
    sock.write_all(resp.as_bytes()).await?;
    sock.shutdown().await
}
