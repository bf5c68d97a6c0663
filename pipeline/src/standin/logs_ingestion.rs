//! A stand-in for Microsoft Sentinel's way in: the Entra ID token endpoint and the Azure Monitor
//! Logs Ingestion API, in one HTTP/1.1 server (plain or TLS) on a loopback port, for the tests and
//! the bench. The base URL serves both, so it is the SDK's authority host and the ingestion
//! endpoint at once.
//!
//! What it checks, as strictly as the service or more:
//! - HTTP/1.1 framing: keep-alive, `Content-Length` and chunked bodies, heads up to 64 KiB, a
//!   `Host` header; a body is never read past `max_body_bytes + 1` bytes (413, then the
//!   connection is closed after the rest is drained and thrown away, as nginx does, so the client
//!   reads the answer instead of a reset).
//! - `POST /{tenant}/oauth2/v2.0/token`: a form with `grant_type=client_credentials`, the client
//!   id, a `…/.default` scope and either the client secret or a `jwt-bearer` client assertion
//!   (the federated token). Errors in Entra's shape (`error`, `error_description`, `error_codes`,
//!   `timestamp`, `trace_id`, `correlation_id`, `error_uri`). A scope for another well-known Azure
//!   resource (ARM, Graph, …) gets a token, as from Entra, which ingestion then refuses (401).
//! - `POST /dataCollectionRules/{dcr}/streams/{stream}?api-version=2023-01-01`: api-version,
//!   bearer token (unknown, revoked, expired past `token_valid_for`, other audience: 401),
//!   `Content-Type: application/json`, optional `Content-Encoding: gzip`, 1 MB on the wire and
//!   decompressed (413 `ContentLengthLimitExceeded`), the DCR and the stream (404), a JSON array
//!   of objects whose keys are declared columns, a non-null `TimeGenerated` when the stream
//!   declares it, values of the declared types (null always allowed). 204 with `x-ms-request-id`.
//!
//! Stricter than the service, on purpose: the service answers 204 to a body that is not an array
//! and drops the data (azure-sdk-for-python#32562), and it drops undeclared columns and mistyped
//! values during its transformation instead of refusing the call; here all of those are a 400
//! naming the row and column, so a sink bug fails a test instead of losing rows. An empty body is
//! a 400 here; the service answers 500 without an error code (Azure.Monitor.Ingestion live tests).
//!
//! What it does not model: 429 and 5xx only when scripted ([`Standin::script`]), no rate limits;
//! no RBAC (the service's 403 `OperationFailed` when the app lacks Monitoring Metrics Publisher,
//! and its up to 30-minute role propagation); no transformation KQL, no output tables, no
//! ingestion latency (accepted rows are visible at once); tokens are opaque strings, not JWTs;
//! the federated token is compared as a string (no signature, issuer, audience or expiry checks);
//! the service's 30-minute `TimeGenerated` span limit for Auxiliary tables.
//!
//! Error codes: `ContentLengthLimitExceeded` (413) is the service's (the .NET SDK's live test
//! `GreaterThan1MbData`; the service's limit is 1,048,576 bytes, `max_body_bytes` defaults to the
//! stricter 1,000,000); the AADSTS codes and Entra's body are the real ones. The ingestion 401
//! codes (`AuthenticationFailed`, `InvalidAuthenticationToken`, `ExpiredAuthenticationToken`,
//! `InvalidAuthenticationTokenAudience`) are the ones Azure Resource Manager and the Log Analytics
//! query API document; the ingestion endpoint's own could not be confirmed. Also assumed: 404
//! `NotFound` (DCR) and `InvalidStream` (stream), 400 `MissingApiVersionParameter`,
//! `UnsupportedApiVersion` and `InvalidPayload`, 415 `UnsupportedMediaType` and
//! `UnsupportedContentEncoding`.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::hash::{BuildHasher, Hasher};
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use serde_json::{json, Value};

/// A column type of a DCR stream declaration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ColumnType {
    String,
    Int,
    Long,
    Real,
    Boolean,
    DateTime,
    Dynamic,
}

impl ColumnType {
    /// The type as a DCR's `streamDeclarations` names it ("string", "int", "long", "real",
    /// "boolean", "datetime", "dynamic"; any case).
    pub fn parse(dcr_type: &str) -> Option<ColumnType> {
        let t = dcr_type.to_ascii_lowercase();
        Some(match t.as_str() {
            "string" => ColumnType::String,
            "int" => ColumnType::Int,
            "long" => ColumnType::Long,
            "real" => ColumnType::Real,
            "boolean" => ColumnType::Boolean,
            "datetime" => ColumnType::DateTime,
            "dynamic" => ColumnType::Dynamic,
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            ColumnType::String => "string",
            ColumnType::Int => "int",
            ColumnType::Long => "long",
            ColumnType::Real => "real",
            ColumnType::Boolean => "boolean",
            ColumnType::DateTime => "datetime",
            ColumnType::Dynamic => "dynamic",
        }
    }

    /// Whether a non-null JSON value fits the column.
    fn accepts(self, v: &Value) -> bool {
        match self {
            ColumnType::String => v.is_string(),
            ColumnType::Int => v.as_i64().is_some_and(|n| i32::try_from(n).is_ok()),
            ColumnType::Long => v.as_i64().is_some(),
            ColumnType::Real => v.is_number(),
            ColumnType::Boolean => v.is_boolean(),
            ColumnType::DateTime => v.as_str().is_some_and(|s| chrono::DateTime::parse_from_rfc3339(s).is_ok()),
            ColumnType::Dynamic => true,
        }
    }
}

/// What the stand-in accepts: one tenant, one app, one scope, one DCR with its streams.
#[derive(Clone, Debug)]
pub struct StandinConfig {
    pub tenant_id: String,
    pub client_id: String,
    /// The client secret accepted (client-credentials grant with `client_secret`).
    pub client_secret: Option<String>,
    /// The client assertion accepted (workload identity: the federated token file's content).
    pub federated_token: Option<String>,
    /// The one scope that gets a token ingestion accepts, e.g. "https://monitor.azure.com//.default".
    pub scope: String,
    /// Advertised `expires_in`.
    pub token_lifetime: Duration,
    /// Enforced validity (default: `token_lifetime`); shorter makes tokens expire before the SDK
    /// refreshes them.
    pub token_valid_for: Option<Duration>,
    pub dcr_immutable_id: String,
    /// Stream name -> declared columns.
    pub streams: BTreeMap<String, Vec<(String, ColumnType)>>,
    /// Largest body, on the wire and decompressed (the service: 1 MB).
    pub max_body_bytes: usize,
    /// (certificate chain PEM, PKCS#8 key PEM); None serves plain HTTP.
    pub tls: Option<(Vec<u8>, Vec<u8>)>,
}

impl StandinConfig {
    pub fn new(streams: BTreeMap<String, Vec<(String, ColumnType)>>) -> Self {
        StandinConfig {
            tenant_id: "00000000-0000-0000-0000-000000000001".to_string(),
            client_id: "00000000-0000-0000-0000-000000000002".to_string(),
            client_secret: Some("test-secret".to_string()),
            federated_token: None,
            scope: "https://monitor.azure.com//.default".to_string(),
            token_lifetime: Duration::from_secs(3600),
            token_valid_for: None,
            dcr_immutable_id: "dcr-0123456789abcdef0123456789abcdef".to_string(),
            streams,
            max_body_bytes: 1_000_000,
            tls: None,
        }
    }
}

/// An answer given to an ingestion request instead of handling it.
#[derive(Clone, Debug)]
pub enum Scripted {
    /// This status with the service's error body and `x-ms-error-code` (a default code for the
    /// status when None) and `Retry-After` when given. A 2xx has no body and stores nothing.
    Status { status: u16, retry_after: Option<String>, error_code: Option<String> },
    /// Read the request, wait this long, close the connection without answering.
    Hang(Duration),
}

/// One ingestion request, whatever its answer.
#[derive(Clone, Debug)]
pub struct RequestLog {
    pub stream: String,
    /// 0: no answer (a scripted hang).
    pub status: u16,
    /// Body bytes on the wire (the declared or counted size when too large to read).
    pub wire_bytes: usize,
    /// Body bytes after decompression (0 when it could not be decompressed).
    pub raw_bytes: usize,
    pub gzip: bool,
    /// The `x-ms-client-request-id` header.
    pub client_request_id: Option<String>,
    /// Elements of the body's array, when it is one.
    pub rows: usize,
    /// The `x-ms-error-code` answered.
    pub error_code: Option<String>,
    pub at: Instant,
}

/// One token request.
#[derive(Clone, Debug)]
pub struct TokenLog {
    /// "client_secret" | "client_assertion" | "other"
    pub grant: String,
    pub status: u16,
    pub at: Instant,
}

/// The running stand-in. Stopped (listener closed, threads joined) by [`Standin::stop`] or drop.
pub struct Standin {
    shared: Arc<Shared>,
    addr: SocketAddr,
    accept: Option<JoinHandle<()>>,
}

const MAX_HEAD: usize = 64 * 1024;
/// Read timeout of every socket: how soon a connection thread sees stop and down.
const POLL: Duration = Duration::from_millis(50);
/// A kept-alive connection with no request for this long is closed (Azure's load balancers: 4 min).
const IDLE_LIMIT: Duration = Duration::from_secs(240);
/// A request (or TLS handshake) that stops arriving for this long is abandoned.
const STALL_LIMIT: Duration = Duration::from_secs(30);
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// After a refused body: how long and how much of the rest is read and thrown away before closing.
const LINGER: Duration = Duration::from_secs(3);
const LINGER_BYTES: usize = 64 << 20;
const API_VERSIONS: &[&str] = &["2023-01-01", "2021-11-01-preview", "2023-04-01-preview"];
const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
/// Resources Entra issues app tokens for in any tenant: a scope for one of these gets a token
/// (ingestion refuses it); any other unknown resource is AADSTS500011.
const OTHER_RESOURCES: &[&str] = &[
    "https://management.azure.com",
    "https://management.core.windows.net",
    "https://graph.microsoft.com",
    "https://storage.azure.com",
    "https://vault.azure.net",
    "https://api.loganalytics.io",
    "https://monitor.azure.com",
];

struct Shared {
    cfg: StandinConfig,
    tls: Option<native_tls::TlsAcceptor>,
    stop: AtomicBool,
    down: AtomicBool,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    tokens: HashMap<String, Issued>,
    accepted: BTreeMap<String, Vec<Value>>,
    requests: Vec<RequestLog>,
    token_log: Vec<TokenLog>,
    script: VecDeque<Scripted>,
    conns: Vec<JoinHandle<()>>,
}

struct Issued {
    valid_until: Instant,
    resource: String,
    revoked: bool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
    fn closing(&self) -> bool {
        self.stop.load(Ordering::SeqCst) || self.down.load(Ordering::SeqCst)
    }
}

impl Standin {
    /// Serves on 127.0.0.1 on a free port.
    pub fn start(cfg: StandinConfig) -> Result<Standin> {
        Self::start_on(cfg, "127.0.0.1:0")
    }

    /// Serves on this address (the same port again after a stop, to model a restart).
    pub fn start_on(cfg: StandinConfig, addr: &str) -> Result<Standin> {
        let tls = match &cfg.tls {
            None => None,
            Some((chain, key)) => {
                let identity = native_tls::Identity::from_pkcs8(chain, key).context("stand-in TLS certificate or PKCS#8 key")?;
                let acceptor = native_tls::TlsAcceptor::builder(identity)
                    .min_protocol_version(Some(native_tls::Protocol::Tlsv12))
                    .build()
                    .context("stand-in TLS acceptor")?;
                Some(acceptor)
            }
        };
        let listener = TcpListener::bind(addr).with_context(|| format!("binding the stand-in to {addr}"))?;
        listener.set_nonblocking(true).context("stand-in listener")?;
        let addr = listener.local_addr().context("stand-in listener")?;
        let shared =
            Arc::new(Shared { cfg, tls, stop: AtomicBool::new(false), down: AtomicBool::new(false), state: Mutex::new(State::default()) });
        let s = shared.clone();
        let accept = std::thread::Builder::new()
            .name("standin-accept".into())
            .spawn(move || accept_loop(listener, s))
            .context("starting the stand-in's accept thread")?;
        Ok(Standin { shared, addr, accept: Some(accept) })
    }

    /// "https://127.0.0.1:PORT" (or http): the authority host and the ingestion endpoint.
    pub fn base_url(&self) -> String {
        let scheme = if self.shared.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Rows of the requests answered 204, in arrival order.
    pub fn accepted_rows(&self, stream: &str) -> Vec<Value> {
        self.shared.lock().accepted.get(stream).cloned().unwrap_or_default()
    }

    pub fn requests(&self) -> Vec<RequestLog> {
        self.shared.lock().requests.clone()
    }

    pub fn tokens(&self) -> Vec<TokenLog> {
        self.shared.lock().token_log.clone()
    }

    /// Every access token issued so far (tests check none of them leaks into logs or files).
    pub fn issued_tokens(&self) -> Vec<String> {
        self.shared.lock().tokens.keys().cloned().collect()
    }

    /// The next ingestion requests get these answers, in order, instead of being handled.
    pub fn script(&self, answers: Vec<Scripted>) {
        self.shared.lock().script.extend(answers);
    }

    /// While down, connections are accepted and closed at once, and open ones are closed
    /// without an answer: the client sees a connection error.
    pub fn set_down(&self, down: bool) {
        self.shared.down.store(down, Ordering::SeqCst);
    }

    /// Every token issued so far is refused from now on.
    pub fn revoke_tokens(&self) {
        for t in self.shared.lock().tokens.values_mut() {
            t.revoked = true;
        }
    }

    pub fn stop(self) {}

    fn shutdown(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.accept.take() {
            let _ = h.join();
        }
        let conns = std::mem::take(&mut self.shared.lock().conns);
        for h in conns {
            let _ = h.join();
        }
    }
}

impl Drop for Standin {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    while !shared.stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((tcp, _)) => {
                if shared.down.load(Ordering::SeqCst) {
                    drop(tcp);
                    continue;
                }
                let s = shared.clone();
                match std::thread::Builder::new().name("standin-conn".into()).spawn(move || serve_connection(tcp, &s)) {
                    Ok(h) => {
                        let mut st = shared.lock();
                        st.conns.retain(|h| !h.is_finished());
                        st.conns.push(h);
                    }
                    Err(e) => log::warn!("stand-in: no thread for a connection: {e}"),
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::sleep(Duration::from_millis(5)),
            Err(e) => {
                log::debug!("stand-in: accept: {e}");
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    }
}

enum Stream {
    Plain(TcpStream),
    Tls(Box<native_tls::TlsStream<TcpStream>>),
}

impl Stream {
    fn tcp(&mut self) -> &mut TcpStream {
        match self {
            Stream::Plain(s) => s,
            Stream::Tls(s) => s.get_mut(),
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf),
            Stream::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write(buf),
            Stream::Tls(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(s) => s.flush(),
            Stream::Tls(s) => s.flush(),
        }
    }
}

fn serve_connection(tcp: TcpStream, shared: &Shared) {
    let setup = tcp
        .set_nonblocking(false)
        .and_then(|_| tcp.set_nodelay(true))
        .and_then(|_| tcp.set_read_timeout(Some(POLL)))
        .and_then(|_| tcp.set_write_timeout(Some(WRITE_TIMEOUT)));
    if let Err(e) = setup {
        log::debug!("stand-in: socket setup: {e}");
        return;
    }
    let stream = match &shared.tls {
        None => Stream::Plain(tcp),
        Some(acceptor) => match handshake(acceptor, tcp, shared) {
            Some(s) => Stream::Tls(Box::new(s)),
            None => return,
        },
    };
    let mut conn = Conn { stream, buf: Vec::new(), shared };
    loop {
        let head = match conn.read_head() {
            Ok(Some(head)) => head,
            Ok(None) => break,
            Err(reply) => {
                conn.send(&reply, true);
                conn.linger();
                break;
            }
        };
        if !handle(&mut conn, head) {
            break;
        }
    }
}

fn handshake(acceptor: &native_tls::TlsAcceptor, tcp: TcpStream, shared: &Shared) -> Option<native_tls::TlsStream<TcpStream>> {
    let deadline = Instant::now() + STALL_LIMIT;
    let mut attempt = acceptor.accept(tcp);
    loop {
        match attempt {
            Ok(s) => return Some(s),
            Err(native_tls::HandshakeError::WouldBlock(mid)) => {
                if shared.closing() || Instant::now() > deadline {
                    return None;
                }
                attempt = mid.handshake();
            }
            Err(native_tls::HandshakeError::Failure(e)) => {
                log::debug!("stand-in: TLS handshake: {e}");
                return None;
            }
        }
    }
}

struct Head {
    method: String,
    path: String,
    query: String,
    http10: bool,
    headers: Vec<(String, String)>,
}

impl Head {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
    fn wants_close(&self) -> bool {
        let tokens = |v: &str, t: &str| v.split(',').any(|x| x.trim().eq_ignore_ascii_case(t));
        let conn = self.header("connection").unwrap_or("");
        if self.http10 {
            !tokens(conn, "keep-alive")
        } else {
            tokens(conn, "close")
        }
    }
    fn media_type(&self) -> String {
        self.header("content-type").unwrap_or("").split(';').next().unwrap_or("").trim().to_ascii_lowercase()
    }
}

enum Body {
    Complete(Vec<u8>),
    /// Larger than the limit: not read (or read only in part); this many bytes declared or seen.
    TooLarge(usize),
}

/// A request that cannot be read on: close quietly, or answer and close.
enum Fail {
    Close,
    Reply(Reply),
}

struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Reply {
    fn empty(status: u16) -> Reply {
        Reply { status, headers: Vec::new(), body: Vec::new() }
    }
    fn json(status: u16, v: &Value) -> Reply {
        let r = Reply { status, headers: Vec::new(), body: v.to_string().into_bytes() };
        r.with("Content-Type", "application/json; charset=utf-8")
    }
    fn with(mut self, name: &str, value: &str) -> Reply {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// The Azure error body (`{"error":{"code","message"}}`) with `x-ms-error-code`.
fn azure_error(status: u16, code: &str, message: &str) -> Reply {
    Reply::json(status, &json!({"error": {"code": code, "message": message}})).with("x-ms-error-code", code)
}

fn bad_request(message: &str) -> Reply {
    azure_error(400, "BadRequest", message)
}

struct Conn<'a> {
    stream: Stream,
    buf: Vec<u8>,
    shared: &'a Shared,
}

impl Conn<'_> {
    /// Reads more into `buf`; None on end of stream, error, stop, down or nothing for `limit`.
    fn fill(&mut self, limit: Duration) -> Option<usize> {
        let start = Instant::now();
        let mut chunk = [0u8; 16 * 1024];
        loop {
            if self.shared.closing() {
                return None;
            }
            match self.stream.read(&mut chunk) {
                Ok(0) => return None,
                Ok(n) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    return Some(n);
                }
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted) => {
                    if start.elapsed() > limit {
                        return None;
                    }
                }
                Err(_) => return None,
            }
        }
    }

    fn read_head(&mut self) -> Result<Option<Head>, Reply> {
        loop {
            // Empty lines before a request line are ignored (RFC 9112 §2.2).
            while self.buf.starts_with(b"\r\n") {
                self.buf.drain(..2);
            }
            if let Some(end) = find(&self.buf, b"\r\n\r\n") {
                if end + 4 > MAX_HEAD {
                    return Err(azure_error(431, "RequestHeaderFieldsTooLarge", "The request head is over 64 KiB."));
                }
                let head: Vec<u8> = self.buf.drain(..end + 4).collect();
                return parse_head(&head[..end]).map(Some);
            }
            if self.buf.len() > MAX_HEAD {
                return Err(azure_error(431, "RequestHeaderFieldsTooLarge", "The request head is over 64 KiB."));
            }
            let limit = if self.buf.is_empty() { IDLE_LIMIT } else { STALL_LIMIT };
            if self.fill(limit).is_none() {
                return Ok(None);
            }
        }
    }

    fn take(&mut self, n: usize, out: &mut Vec<u8>) -> Result<(), Fail> {
        while self.buf.len() < n {
            if self.fill(STALL_LIMIT).is_none() {
                return Err(Fail::Close);
            }
        }
        out.extend(self.buf.drain(..n));
        Ok(())
    }

    fn line(&mut self, limit: usize) -> Result<String, Fail> {
        loop {
            if let Some(end) = find(&self.buf, b"\r\n") {
                let line: Vec<u8> = self.buf.drain(..end + 2).take(end).collect();
                return String::from_utf8(line).map_err(|_| Fail::Reply(bad_request("A chunk line is not UTF-8.")));
            }
            if self.buf.len() > limit + 2 {
                return Err(Fail::Reply(bad_request("A chunk line is too long or a chunk does not end with CRLF.")));
            }
            if self.fill(STALL_LIMIT).is_none() {
                return Err(Fail::Close);
            }
        }
    }

    /// The request body, never more than `max + 1` bytes of it.
    fn read_body(&mut self, head: &Head, max: usize) -> Result<Body, Fail> {
        let te = head.header("transfer-encoding");
        let lengths: Vec<&str> =
            head.headers.iter().filter(|(k, _)| k.eq_ignore_ascii_case("content-length")).map(|(_, v)| v.as_str()).collect();
        if te.is_some() && !lengths.is_empty() {
            return Err(Fail::Reply(bad_request("Both Transfer-Encoding and Content-Length.")));
        }
        let expect_continue = head.header("expect").is_some_and(|v| v.eq_ignore_ascii_case("100-continue"));
        if let Some(te) = te {
            if !te.trim().eq_ignore_ascii_case("chunked") {
                return Err(Fail::Reply(azure_error(501, "NotImplemented", "Only the chunked transfer coding is supported.")));
            }
            if expect_continue {
                self.continue_100()?;
            }
            return self.read_chunked(max);
        }
        let Some(first) = lengths.first() else { return Ok(Body::Complete(Vec::new())) };
        if lengths.iter().any(|l| l.trim() != first.trim()) {
            return Err(Fail::Reply(bad_request("Conflicting Content-Length headers.")));
        }
        let digits = first.trim();
        let len = match digits.parse::<usize>() {
            Ok(n) if digits.bytes().all(|b| b.is_ascii_digit()) => n,
            Ok(_) | Err(_) => return Err(Fail::Reply(bad_request("Content-Length is not a number."))),
        };
        if len > max {
            return Ok(Body::TooLarge(len));
        }
        if expect_continue && len > 0 {
            self.continue_100()?;
        }
        let mut body = Vec::with_capacity(len);
        self.take(len, &mut body)?;
        Ok(Body::Complete(body))
    }

    fn continue_100(&mut self) -> Result<(), Fail> {
        self.stream.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").and_then(|_| self.stream.flush()).map_err(|_| Fail::Close)
    }

    fn read_chunked(&mut self, max: usize) -> Result<Body, Fail> {
        let mut body = Vec::new();
        loop {
            let line = self.line(4096)?;
            let size = line.split(';').next().unwrap_or("").trim();
            let size = match usize::from_str_radix(size, 16) {
                Ok(n) if !size.is_empty() && size.bytes().all(|b| b.is_ascii_hexdigit()) => n,
                _ => return Err(Fail::Reply(bad_request("A chunk size is not hexadecimal."))),
            };
            if size == 0 {
                let mut trailers = 0;
                loop {
                    let t = self.line(MAX_HEAD)?;
                    if t.is_empty() {
                        return Ok(Body::Complete(body));
                    }
                    trailers += t.len() + 2;
                    if trailers > MAX_HEAD {
                        return Err(Fail::Reply(azure_error(431, "RequestHeaderFieldsTooLarge", "The trailers are over 64 KiB.")));
                    }
                }
            }
            if body.len().saturating_add(size) > max {
                return Ok(Body::TooLarge(body.len().saturating_add(size)));
            }
            self.take(size, &mut body)?;
            if !self.line(0)?.is_empty() {
                return Err(Fail::Reply(bad_request("A chunk does not end with CRLF.")));
            }
        }
    }

    fn send(&mut self, reply: &Reply, close: bool) -> bool {
        let mut head = format!("HTTP/1.1 {} {}\r\n", reply.status, reason(reply.status));
        head.push_str(&format!("Date: {}\r\n", chrono::Utc::now().format("%a, %d %b %Y %H:%M:%S GMT")));
        if reply.status != 204 && reply.status >= 200 {
            head.push_str(&format!("Content-Length: {}\r\n", reply.body.len()));
        }
        for (k, v) in &reply.headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        if close {
            head.push_str("Connection: close\r\n");
        }
        head.push_str("\r\n");
        let mut out = head.into_bytes();
        if reply.status != 204 {
            out.extend_from_slice(&reply.body);
        }
        self.stream.write_all(&out).and_then(|_| self.stream.flush()).is_ok()
    }

    /// After answering a request whose body was not read: no more writing, then read and throw
    /// away what the client is still sending (bounded), so it reads the answer, not a reset.
    fn linger(&mut self) {
        if let Stream::Tls(s) = &mut self.stream {
            let _ = s.shutdown();
        }
        let tcp = self.stream.tcp();
        let _ = tcp.shutdown(Shutdown::Write);
        let start = Instant::now();
        let mut seen = 0usize;
        let mut chunk = [0u8; 16 * 1024];
        while start.elapsed() < LINGER && seen < LINGER_BYTES && !self.shared.stop.load(Ordering::SeqCst) {
            match tcp.read(&mut chunk) {
                Ok(0) => return,
                Ok(n) => seen += n,
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted) => {}
                Err(_) => return,
            }
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn parse_head(bytes: &[u8]) -> Result<Head, Reply> {
    let text = std::str::from_utf8(bytes).map_err(|_| bad_request("The request head is not UTF-8."))?;
    let mut lines = text.split("\r\n");
    let request_line = lines.next().unwrap_or("");
    let parts: Vec<&str> = request_line.split(' ').collect();
    let [method, target, version] = parts[..] else { return Err(bad_request("Malformed request line.")) };
    if method.is_empty() || !method.bytes().all(is_tchar) {
        return Err(bad_request("Malformed method."));
    }
    let http10 = match version {
        "HTTP/1.1" => false,
        "HTTP/1.0" => true,
        _ => return Err(azure_error(505, "HttpVersionNotSupported", "Only HTTP/1.1 and HTTP/1.0 are served.")),
    };
    if !target.starts_with('/') {
        return Err(bad_request("The request target must be a path."));
    }
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let mut headers = Vec::new();
    for line in lines {
        if line.starts_with([' ', '\t']) {
            return Err(bad_request("Folded header lines are not allowed."));
        }
        let Some((name, value)) = line.split_once(':') else { return Err(bad_request("A header line has no colon.")) };
        if name.is_empty() || !name.bytes().all(is_tchar) {
            return Err(bad_request("Malformed header name."));
        }
        headers.push((name.to_string(), value.trim_matches([' ', '\t']).to_string()));
    }
    let head = Head { method: method.to_string(), path: path.to_string(), query: query.to_string(), http10, headers };
    if !http10 && head.header("host").is_none() {
        return Err(bad_request("An HTTP/1.1 request needs a Host header."));
    }
    Ok(head)
}

fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        413 => "Payload Too Large",
        415 => "Unsupported Media Type",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        _ => "Status",
    }
}

/// `a=b&c=d` decoded; None when any part does not decode. The first of a repeated key wins.
fn parse_pairs(s: &str) -> Option<HashMap<String, String>> {
    let mut map = HashMap::new();
    for pair in s.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        map.entry(crate::url::percent_decode(k, true)?).or_insert(crate::url::percent_decode(v, true)?);
    }
    Some(map)
}

fn random_u64() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.write_u128(SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0));
    h.finish()
}

fn new_uuid() -> String {
    let (a, b) = (random_u64(), random_u64());
    format!(
        "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xfff,
        0x8000 | ((b >> 48) & 0x3fff),
        b & 0xffff_ffff_ffff
    )
}

/// A scope's resource: the scope without "/.default" and trailing slashes (Entra reads
/// "https://monitor.azure.com//.default" and "https://monitor.azure.com/.default" alike).
fn scope_resource(scope: &str) -> Option<String> {
    scope.strip_suffix("/.default").map(|r| r.trim_end_matches('/').to_ascii_lowercase())
}

/// Keeps echoed request values plain: the Azure SDK (azure_identity 1.0) reads
/// `error_description` as a borrowed string, so a JSON escape in it fails its parse.
fn plain(s: &str) -> String {
    s.chars().filter(|c| !c.is_control() && *c != '"' && *c != '\\').take(200).collect()
}

enum Route {
    Token(String),
    Ingest { dcr: String, stream: String },
    WrongMethod,
    NotFound,
}

fn route(head: &Head) -> Route {
    let segments: Vec<&str> = head.path.split('/').collect();
    let decode = |s: &str| crate::url::percent_decode(s, false);
    match segments[..] {
        ["", tenant, o, v, t] if o == "oauth2" && v == "v2.0" && t == "token" => match decode(tenant) {
            Some(tenant) if head.method == "POST" => Route::Token(tenant),
            Some(_) => Route::WrongMethod,
            None => Route::NotFound,
        },
        ["", d, dcr, s, stream] if d.eq_ignore_ascii_case("dataCollectionRules") && s.eq_ignore_ascii_case("streams") => {
            match (decode(dcr), decode(stream)) {
                (Some(dcr), Some(stream)) if head.method == "POST" => Route::Ingest { dcr, stream },
                (Some(_), Some(_)) => Route::WrongMethod,
                _ => Route::NotFound,
            }
        }
        _ => Route::NotFound,
    }
}

enum Outcome {
    Reply(Reply),
    Hang(Duration),
}

/// Handles one request; false: close the connection.
fn handle(conn: &mut Conn<'_>, head: Head) -> bool {
    let shared = conn.shared;
    let body = match conn.read_body(&head, shared.cfg.max_body_bytes) {
        Ok(body) => body,
        Err(Fail::Close) => return false,
        Err(Fail::Reply(reply)) => {
            conn.send(&reply, true);
            conn.linger();
            return false;
        }
    };
    if shared.closing() {
        return false;
    }
    let outcome = match route(&head) {
        Route::Token(tenant) => Outcome::Reply(token(shared, &head, &tenant, &body)),
        Route::Ingest { dcr, stream } => ingest(shared, &head, &dcr, &stream, &body),
        Route::WrongMethod => Outcome::Reply(
            azure_error(405, "MethodNotAllowed", &format!("The method {} is not allowed here.", plain(&head.method))).with("Allow", "POST"),
        ),
        Route::NotFound => Outcome::Reply(azure_error(404, "NotFound", "No such resource on this endpoint.")),
    };
    let reply = match outcome {
        Outcome::Reply(r) => r,
        Outcome::Hang(d) => {
            let until = Instant::now() + d;
            while Instant::now() < until && !shared.stop.load(Ordering::SeqCst) {
                std::thread::sleep(POLL.min(until.saturating_duration_since(Instant::now())));
            }
            return false;
        }
    };
    if shared.closing() {
        return false;
    }
    let complete = matches!(body, Body::Complete(_));
    let close = head.wants_close() || !complete;
    let sent = conn.send(&reply, close);
    if !complete {
        conn.linger();
    }
    sent && !close
}

/// Entra's error body; `code` is the AADSTS number.
fn entra_error(status: u16, error: &str, code: u32, message: &str, correlation: &str) -> Reply {
    let trace = new_uuid();
    let now = chrono::Utc::now().format("%Y-%m-%d %H:%M:%SZ").to_string();
    let description = format!("AADSTS{code}: {message} Trace ID: {trace} Correlation ID: {correlation} Timestamp: {now}");
    Reply::json(
        status,
        &json!({
            "error": error,
            "error_description": description,
            "error_codes": [code],
            "timestamp": now,
            "trace_id": trace,
            "correlation_id": correlation,
            "error_uri": format!("https://login.microsoftonline.com/error?code={code}"),
        }),
    )
    .with("Cache-Control", "no-store, no-cache")
}

fn token(shared: &Shared, head: &Head, tenant: &str, body: &Body) -> Reply {
    let form = match body {
        Body::Complete(b) if head.media_type() == "application/x-www-form-urlencoded" => std::str::from_utf8(b).ok().and_then(parse_pairs),
        _ => None,
    };
    let grant = match &form {
        Some(f) if f.contains_key("client_assertion") => "client_assertion",
        Some(f) if f.contains_key("client_secret") => "client_secret",
        _ => "other",
    };
    let correlation = head.header("client-request-id").map(plain).unwrap_or_else(new_uuid);
    let reply = token_reply(shared, tenant, form.as_ref(), &correlation);
    shared.lock().token_log.push(TokenLog { grant: grant.to_string(), status: reply.status, at: Instant::now() });
    reply
}

fn token_reply(shared: &Shared, tenant: &str, form: Option<&HashMap<String, String>>, correlation: &str) -> Reply {
    let cfg = &shared.cfg;
    let err = |status, error, code, message: &str| entra_error(status, error, code, message, correlation);
    let missing = |p: &str| err(400, "invalid_request", 900144, &format!("The request body must contain the following parameter: '{p}'."));
    if tenant != cfg.tenant_id {
        return err(400, "invalid_request", 90002, &format!(
            "Tenant '{}' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud. Check with your subscription administrator, this may happen if there are no active subscriptions for the tenant.",
            plain(tenant)
        ));
    }
    let Some(form) = form else { return missing("grant_type") };
    let get = |k: &str| form.get(k).map(String::as_str).filter(|v| !v.is_empty());
    let Some(grant_type) = get("grant_type") else { return missing("grant_type") };
    if grant_type != "client_credentials" {
        return err(400, "unsupported_grant_type", 70003, &format!("The app requested an unsupported grant type '{}'.", plain(grant_type)));
    }
    let Some(client_id) = get("client_id") else { return missing("client_id") };
    if client_id != cfg.client_id {
        return err(400, "unauthorized_client", 700016, &format!(
            "Application with identifier '{}' was not found in the directory '{}'. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You may have sent your authentication request to the wrong tenant.",
            plain(client_id), plain(tenant)
        ));
    }
    let Some(scope) = get("scope") else { return missing("scope") };
    let neither = "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.";
    match (get("client_secret"), get("client_assertion_type"), get("client_assertion")) {
        (Some(_), _, Some(_)) => {
            return err(
                401,
                "invalid_client",
                7000218,
                "The request body must contain only one of the following parameters: 'client_assertion' or 'client_secret'.",
            )
        }
        (Some(secret), _, None) => {
            if cfg.client_secret.as_deref() != Some(secret) {
                return err(401, "invalid_client", 7000215, &format!(
                    "Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '{}'.",
                    plain(client_id)
                ));
            }
        }
        (None, Some(JWT_BEARER), Some(assertion)) => {
            if cfg.federated_token.as_deref() != Some(assertion) {
                return err(401, "invalid_client", 700211, "No matching federated identity record found for presented assertion issuer. Please check your federated identity credential Subject, Audience and Issuer against the presented assertion.");
            }
        }
        (None, _, _) => return err(401, "invalid_client", 7000218, neither),
    }
    if scope.split(' ').filter(|s| !s.is_empty()).count() != 1 {
        return err(
            400,
            "invalid_scope",
            70011,
            &format!("The provided value for the input parameter 'scope' is not valid. The scope {} is not valid.", plain(scope)),
        );
    }
    let Some(resource) = scope_resource(scope) else {
        return err(400, "invalid_scope", 1002012, &format!(
            "The provided value for scope {} is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier (application ID URI).",
            plain(scope)
        ));
    };
    let ours = scope_resource(&cfg.scope).unwrap_or_default();
    if resource != ours && !OTHER_RESOURCES.contains(&resource.as_str()) {
        return err(400, "invalid_resource", 500011, &format!(
            "The resource principal named {} was not found in the tenant named {}. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You might have sent your authentication request to the wrong tenant.",
            plain(&resource), plain(tenant)
        ));
    }
    let access_token = format!("{:016x}{:016x}{:016x}{:016x}", random_u64(), random_u64(), random_u64(), random_u64());
    let valid_for = cfg.token_valid_for.unwrap_or(cfg.token_lifetime);
    shared.lock().tokens.insert(access_token.clone(), Issued { valid_until: Instant::now() + valid_for, resource, revoked: false });
    let secs = cfg.token_lifetime.as_secs();
    Reply::json(200, &json!({"token_type": "Bearer", "expires_in": secs, "ext_expires_in": secs, "access_token": access_token}))
        .with("Cache-Control", "no-store, no-cache")
}

/// Handles an ingestion request and records it.
fn ingest(shared: &Shared, head: &Head, dcr: &str, stream: &str, body: &Body) -> Outcome {
    let gzip = head.header("content-encoding").is_some_and(|v| v.trim().eq_ignore_ascii_case("gzip"));
    let mut log = RequestLog {
        stream: stream.to_string(),
        status: 0,
        wire_bytes: match body {
            Body::Complete(b) => b.len(),
            Body::TooLarge(n) => *n,
        },
        raw_bytes: 0,
        gzip,
        client_request_id: head.header("x-ms-client-request-id").map(str::to_string),
        rows: 0,
        error_code: None,
        at: Instant::now(),
    };
    let (outcome, accepted) = ingest_outcome(shared, head, dcr, stream, body, gzip, &mut log);
    if let Outcome::Reply(r) = &outcome {
        log.status = r.status;
        log.error_code = r.header("x-ms-error-code").map(str::to_string);
    }
    let mut st = shared.lock();
    if let Some(rows) = accepted {
        st.accepted.entry(stream.to_string()).or_default().extend(rows);
    }
    st.requests.push(log);
    outcome
}

/// The body decompressed, never past `max + 1` bytes. Err: not gzip.
fn decode(wire: &[u8], gzip: bool, max: usize) -> Result<Vec<u8>, String> {
    if !gzip {
        return Ok(wire.to_vec());
    }
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(wire).take(max as u64 + 1).read_to_end(&mut out).map_err(|e| e.to_string())?;
    Ok(out)
}

fn scripted_reply(status: u16, retry_after: Option<&str>, error_code: Option<&str>) -> Reply {
    let mut reply = if (200..300).contains(&status) {
        Reply::empty(status)
    } else {
        let (code, message) = match status {
            400 => ("InvalidPayload", "The request is not valid."),
            401 => ("InvalidAuthenticationToken", "The access token is invalid."),
            403 => {
                ("OperationFailed", "The authentication token provided does not have access to ingest data for the data collection rule.")
            }
            413 => ("ContentLengthLimitExceeded", "Maximum allowed content length: 1048576 bytes (1 MB)."),
            429 => ("TooManyRequests", "Too many requests. Retry after the time in the Retry-After header."),
            500 => ("InternalServerError", "An internal server error occurred."),
            503 => ("ServiceUnavailable", "The service is temporarily unavailable."),
            _ => ("ServiceError", "The service answered with an error."),
        };
        azure_error(status, error_code.unwrap_or(code), message)
    };
    if let Some(r) = retry_after {
        reply = reply.with("Retry-After", r);
    }
    reply.with("x-ms-request-id", &new_uuid())
}

fn check_token(shared: &Shared, head: &Head) -> Result<(), Reply> {
    let refuse = |code: &str, message: &str, challenge: &str| Err(azure_error(401, code, message).with("WWW-Authenticate", challenge));
    let invalid =
        |code: &str, message: &str| refuse(code, message, &format!("Bearer error=\"invalid_token\", error_description=\"{message}\""));
    let bearer = head
        .header("authorization")
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim())
        .filter(|t| !t.is_empty());
    let Some(token) = bearer else {
        return refuse(
            "AuthenticationFailed",
            "Authentication failed. The 'Authorization' header is missing or is not a Bearer token.",
            "Bearer",
        );
    };
    let st = shared.lock();
    let Some(issued) = st.tokens.get(token) else { return invalid("InvalidAuthenticationToken", "The access token is invalid.") };
    if issued.revoked {
        return invalid("InvalidAuthenticationToken", "The access token has been revoked.");
    }
    if Instant::now() >= issued.valid_until {
        return invalid("ExpiredAuthenticationToken", "The access token has expired.");
    }
    if Some(&issued.resource) != scope_resource(&shared.cfg.scope).as_ref() {
        return invalid(
            "InvalidAuthenticationTokenAudience",
            &format!("The access token has been obtained for the wrong audience or resource '{}'.", issued.resource),
        );
    }
    Ok(())
}

fn ingest_outcome(
    shared: &Shared,
    head: &Head,
    dcr: &str,
    stream: &str,
    body: &Body,
    gzip: bool,
    log: &mut RequestLog,
) -> (Outcome, Option<Vec<Value>>) {
    let cfg = &shared.cfg;
    let max = cfg.max_body_bytes;
    let reply = |r: Reply| (Outcome::Reply(r), None);
    let scripted = shared.lock().script.pop_front();
    if let Some(answer) = scripted {
        if let Body::Complete(wire) = body {
            if let Ok(raw) = decode(wire, gzip, max) {
                log.raw_bytes = raw.len();
                log.rows = serde_json::from_slice::<Value>(&raw).ok().and_then(|v| v.as_array().map(Vec::len)).unwrap_or(0);
            }
        }
        return match answer {
            Scripted::Status { status, retry_after, error_code } => {
                reply(scripted_reply(status, retry_after.as_deref(), error_code.as_deref()))
            }
            Scripted::Hang(d) => (Outcome::Hang(d), None),
        };
    }
    let query = parse_pairs(&head.query).unwrap_or_default();
    match query.get("api-version").map(String::as_str) {
        None | Some("") => {
            return reply(azure_error(
                400,
                "MissingApiVersionParameter",
                "The api-version query parameter (?api-version=) is required for all requests.",
            ))
        }
        Some(v) if !API_VERSIONS.contains(&v) => {
            return reply(azure_error(400, "UnsupportedApiVersion", &format!("The api-version '{}' is not supported.", plain(v))))
        }
        Some(_) => {}
    }
    if let Err(r) = check_token(shared, head) {
        return reply(r);
    }
    let too_large = || azure_error(413, "ContentLengthLimitExceeded", &format!("Maximum allowed content length: {max} bytes."));
    let Body::Complete(wire) = body else { return reply(too_large()) };
    if head.media_type() != "application/json" {
        return reply(azure_error(415, "UnsupportedMediaType", "The Content-Type must be application/json."));
    }
    if dcr != cfg.dcr_immutable_id {
        return reply(azure_error(404, "NotFound", &format!("Data collection rule with immutable Id '{}' not found.", plain(dcr))));
    }
    let Some(columns) = cfg.streams.get(stream) else {
        return reply(azure_error(
            404,
            "InvalidStream",
            &format!("Stream '{}' is not declared in data collection rule '{}'.", plain(stream), plain(dcr)),
        ));
    };
    match head.header("content-encoding").map(str::trim) {
        None => {}
        Some(e) if e.eq_ignore_ascii_case("gzip") || e.eq_ignore_ascii_case("identity") => {}
        Some(e) => {
            return reply(azure_error(
                415,
                "UnsupportedContentEncoding",
                &format!("Content-Encoding '{}' is not supported; use gzip.", plain(e)),
            ))
        }
    }
    let raw = match decode(wire, gzip, max) {
        Ok(raw) => raw,
        Err(e) => return reply(azure_error(400, "InvalidPayload", &format!("The body is not valid gzip: {}", plain(&e)))),
    };
    log.raw_bytes = raw.len();
    if raw.len() > max {
        return reply(too_large());
    }
    if raw.is_empty() {
        return reply(azure_error(400, "InvalidPayload", "The body is empty; it must be a JSON array of objects."));
    }
    let parsed: Value = match serde_json::from_slice(&raw) {
        Ok(v) => v,
        Err(e) => return reply(azure_error(400, "InvalidPayload", &format!("The body is not valid JSON: {}", plain(&e.to_string())))),
    };
    let Value::Array(rows) = parsed else {
        return reply(azure_error(400, "InvalidPayload", "The body must be a JSON array of objects."));
    };
    log.rows = rows.len();
    if let Err((target, message)) = validate(&rows, columns, stream) {
        let r = Reply::json(400, &json!({"error": {"code": "InvalidPayload", "message": message, "target": target}}))
            .with("x-ms-error-code", "InvalidPayload");
        return reply(r);
    }
    let mut ok = Reply::empty(204).with("x-ms-request-id", &new_uuid());
    if let Some(id) = head.header("x-ms-client-request-id") {
        ok = ok.with("x-ms-client-request-id", &plain(id));
    }
    (Outcome::Reply(ok), Some(rows))
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(n) if n.is_f64() => "a fractional number",
        Value::Number(_) => "an integer",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Every row an object of declared columns with values of their types; a non-null
/// TimeGenerated when the stream declares it. Err: (column, message).
fn validate(rows: &[Value], columns: &[(String, ColumnType)], stream: &str) -> Result<(), (String, String)> {
    let declared: HashMap<&str, ColumnType> = columns.iter().map(|(n, t)| (n.as_str(), *t)).collect();
    let needs_time = declared.contains_key("TimeGenerated");
    for (i, row) in rows.iter().enumerate() {
        let Value::Object(obj) = row else {
            return Err((String::new(), format!("Element {i} of the body is {}, not a JSON object.", json_kind(row))));
        };
        for (name, value) in obj {
            let Some(t) = declared.get(name.as_str()) else {
                return Err((name.clone(), format!("Row {i}: column '{}' is not declared in stream '{}'.", plain(name), plain(stream))));
            };
            if !value.is_null() && !t.accepts(value) {
                let what = if *t == ColumnType::DateTime && value.is_string() { "a string that is not RFC 3339" } else { json_kind(value) };
                return Err((name.clone(), format!("Row {i}: column '{}' is declared {} but holds {what}.", plain(name), t.name())));
            }
        }
        if needs_time && obj.get("TimeGenerated").is_none_or(Value::is_null) {
            return Err(("TimeGenerated".to_string(), format!("Row {i}: column 'TimeGenerated' is missing or null.")));
        }
    }
    Ok(())
}
