//! The sender: takes the oldest spooled batch, posts it, and decides by the answer. One request
//! at a time per sink, oldest first (the service's limits are per DCR, and a backlog drains
//! in order).
//!
//! | answer                          | what happens                                              |
//! |---------------------------------|-----------------------------------------------------------|
//! | 2xx (204)                       | delivered: removed from the spool                         |
//! | 408, 429, 5xx, no answer        | retried: exponential backoff with jitter, or Retry-After  |
//! | 413                             | split in halves, each spooled; a single row: dead letter  |
//! | 400, 404, other 4xx             | every row to the dead-letter output with the error code   |
//! | 401                             | a fresh token at once; refused again: slow retries        |
//! | 403                             | slow retries (a new role assignment takes ~30 min)        |

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use serde_json::value::RawValue;

use crate::deadletter::{DeadLetter, Reason};
use crate::metrics::Metrics;

use super::auth::{explain_refusal, Auth};
use super::config::SentinelConfig;
use super::request::Body;
use super::spool::{self, Entry};
use super::{DeadLetterOut, Shared};

/// How the service answered one request.
#[derive(Debug, PartialEq)]
pub enum Outcome {
    Accepted,
    Retry { after: Option<Duration>, reason: &'static str },
    Split,
    Rejected { status: u16, code: String, message: String },
    Refused { status: u16 },
}

/// The outcome of an HTTP status (`None`: no answer at all).
pub fn classify(status: Option<u16>, retry_after: Option<Duration>) -> Outcome {
    match status {
        None => Outcome::Retry { after: None, reason: "connection" },
        Some(200..=299) => Outcome::Accepted,
        Some(413) => Outcome::Split,
        Some(429) => Outcome::Retry { after: retry_after, reason: "throttled" },
        Some(408) => Outcome::Retry { after: retry_after, reason: "timeout" },
        Some(s @ (401 | 403)) => Outcome::Refused { status: s },
        Some(500..=599) => Outcome::Retry { after: retry_after, reason: "server" },
        Some(s @ 400..=499) => Outcome::Rejected { status: s, code: String::new(), message: String::new() },
        Some(_) => Outcome::Retry { after: retry_after, reason: "server" },
    }
}

/// `Retry-After`: delay-seconds or an HTTP date. Capped at an hour: a broken header must not
/// park the sink for days.
pub fn parse_retry_after(v: &str, now: SystemTime) -> Option<Duration> {
    let v = v.trim();
    let d = if let Ok(secs) = v.parse::<u64>() {
        Duration::from_secs(secs)
    } else {
        let at = chrono::DateTime::parse_from_rfc2822(v).ok()?;
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(at.timestamp().max(0) as u64);
        at.duration_since(now).unwrap_or_default()
    };
    Some(d.min(Duration::from_secs(3600)))
}

/// Exponential backoff with jitter: 1 s, 2 s, 4 s … capped at `cap`, each drawn in [d/2, d].
pub fn backoff(attempt: u32, base: Duration, cap: Duration, jitter: f64) -> Duration {
    let d = base.saturating_mul(1u32 << attempt.min(16)).min(cap);
    d.mul_f64(0.5 + 0.5 * jitter.clamp(0.0, 1.0))
}

/// A cheap jitter source (no cryptographic need): xorshift seeded from the clock.
pub(super) struct Jitter(u64);
impl Jitter {
    pub(super) fn new() -> Self {
        Jitter(SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64) | 1)
    }
    fn next(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
    /// A random request id in UUID form (`x-ms-client-request-id`).
    pub(super) fn request_id(&mut self) -> String {
        let (a, b) = ((self.next() * u64::MAX as f64) as u64, (self.next() * u64::MAX as f64) as u64 ^ self.0);
        format!("{:08x}-{:04x}-4{:03x}-a{:03x}-{:012x}", a >> 32, (a >> 16) & 0xffff, a & 0xfff, b >> 52, b & 0xffff_ffff_ffff)
    }
}

/// Logs a repeating condition once, then at most once a minute.
struct Quiet(Option<Instant>);
impl Quiet {
    fn due(&mut self) -> bool {
        if self.0.is_some_and(|t| t.elapsed() < Duration::from_secs(60)) {
            return false;
        }
        self.0 = Some(Instant::now());
        true
    }
}

pub struct Sender {
    pub cfg: SentinelConfig,
    pub shared: Arc<Shared>,
    pub http: reqwest::Client,
    pub auth: Auth,
    pub dead: DeadLetterOut,
    pub metrics: Metrics,
    /// The first slow retry after a 401/403 (30 s in service; tests shorten it).
    pub slow_retry: Duration,
    /// The compressed size of the last request.
    pub wire_bytes: u64,
}

impl Sender {
    pub async fn run(mut self) {
        let url = self.cfg.ingestion_url();
        let stream = self.cfg.stream.clone();
        let (mut attempt, mut refusals) = (0u32, 0u32);
        let mut not_before: Option<Instant> = None;
        let mut jitter = Jitter::new();
        let (mut quiet_retry, mut quiet_refused) = (Quiet(None), Quiet(None));
        loop {
            let next = match self.shared.next_to_send(self.cfg.batch_timeout()) {
                Step::Abandon => return,
                Step::Idle(wait) => {
                    let _ = tokio::time::timeout(wait, self.shared.wake.notified()).await;
                    continue;
                }
                Step::Send(e) => e,
            };
            if let Some(t) = not_before {
                let now = Instant::now();
                if now < t {
                    // Woken early by a new batch or a stop: look again (a stop ends the loop).
                    let _ = tokio::time::timeout(t - now, self.shared.wake.notified()).await;
                    if Instant::now() < t {
                        continue;
                    }
                }
                not_before = None;
            }
            // A drop or the end of the drain time cuts a request in flight short.
            let shared = self.shared.clone();
            let outcome = tokio::select! {
                o = self.post(&url, &next, &mut jitter) => o,
                _ = shared.abandoned.notified() => return,
            };
            let m = &self.metrics;
            match outcome {
                Outcome::Accepted => {
                    attempt = 0;
                    refusals = 0;
                    m.sentinel_records.with_label_values(&[&stream]).inc_by(next.records as u64);
                    m.sentinel_bytes.with_label_values(&[&stream, "raw"]).inc_by(next.bytes);
                    m.sentinel_bytes.with_label_values(&[&stream, "gzip"]).inc_by(self.wire_bytes);
                    self.shared.delivered(next.seq);
                }
                Outcome::Retry { after, reason } => {
                    m.sentinel_retries.with_label_values(&[&stream, reason]).inc();
                    if reason == "throttled" {
                        m.sentinel_throttled.with_label_values(&[&stream]).inc();
                    }
                    // Retry-After wins over the backoff, but never below a second: a proxy's
                    // "Retry-After: 0" must not turn into a request loop.
                    let delay = after
                        .map(|a| a.max(Duration::from_secs(1)))
                        .unwrap_or_else(|| backoff(attempt, Duration::from_secs(1), Duration::from_secs(60), jitter.next()));
                    attempt += 1;
                    let why = self.shared.last_error().unwrap_or_default();
                    if quiet_retry.due() {
                        log::warn!(
                            "{}: {why}; retrying in {:.1}s (the batch stays in the spool)",
                            self.cfg.describe(),
                            delay.as_secs_f64()
                        );
                    }
                    not_before = Some(Instant::now() + delay);
                }
                Outcome::Refused { status } => {
                    m.sentinel_retries.with_label_values(&[&stream, "auth"]).inc();
                    refusals += 1;
                    if let Err(e) = self.auth.forget() {
                        log::error!("{e:#}");
                    }
                    // A 401 is most often a token revoked or expired early: one fresh token at
                    // once. Refused again, or a 403 (a missing role), waits longer each time.
                    let delay = if status == 401 && refusals == 1 {
                        Duration::from_millis(200)
                    } else {
                        backoff(refusals.saturating_sub(1), self.slow_retry, Duration::from_secs(300), jitter.next())
                    };
                    self.shared.set_error(explain_refusal(status, &self.cfg));
                    if quiet_refused.due() || refusals == 2 {
                        log::error!("{}: {}", self.cfg.describe(), explain_refusal(status, &self.cfg));
                    }
                    not_before = Some(Instant::now() + delay);
                }
                Outcome::Split => {
                    m.sentinel_retries.with_label_values(&[&stream, "split"]).inc();
                    if !self.split(&next) {
                        not_before = Some(Instant::now() + Duration::from_secs(5));
                    }
                }
                Outcome::Rejected { status, code, message } => {
                    let detail = format!("{status} {code}: {message}");
                    log::error!(
                        "{}: the service refused a batch of {} rows ({detail}); they go to the dead-letter output",
                        self.cfg.describe(),
                        next.records
                    );
                    if !self.reject(&next, Reason::Rejected, &detail) {
                        // The dead-letter output is down too: try again later, not in a loop.
                        not_before = Some(Instant::now() + Duration::from_secs(5));
                    }
                    attempt = 0;
                }
            }
        }
    }

    async fn post(&mut self, url: &str, e: &Entry, jitter: &mut Jitter) -> Outcome {
        let stream = self.cfg.stream.clone();
        let gz = match spool::read_body(e) {
            // Compressed here, on the sender's thread, not on the engine's.
            Ok(b) => b.gzip(),
            Err(err) => {
                self.shared.set_error(format!("reading {} from the spool: {err}", e.path.display()));
                return Outcome::Retry { after: Some(Duration::from_secs(5)), reason: "spool" };
            }
        };
        self.wire_bytes = gz.len() as u64;
        let bearer = match self.auth.bearer().await {
            Ok(b) => b,
            Err(err) => {
                self.metrics.sentinel_token_failures.with_label_values(&[&stream]).inc();
                self.shared.set_error(format!("{err:#}"));
                return Outcome::Retry { after: None, reason: "auth" };
            }
        };
        if bearer.refreshed {
            self.metrics.sentinel_token_refreshes.with_label_values(&[&stream]).inc();
        }
        let request_id = jitter.request_id();
        let sent = super::request::post(&self.http, url, bearer.header, gz, &request_id).send().await;
        let resp = match sent {
            Ok(r) => r,
            Err(err) => {
                self.metrics.sentinel_requests.with_label_values(&[&stream, "0"]).inc();
                // reqwest's error names the URL and the cause, never the headers.
                self.shared.set_error(format!("no answer from {} ({})", self.cfg.endpoint, error_chain(&err)));
                return classify(None, None);
            }
        };
        let status = resp.status().as_u16();
        self.metrics.sentinel_requests.with_label_values(&[&stream, &status.to_string()]).inc();
        let header = |name: &str| resp.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
        let retry_after = header("retry-after").and_then(|v| parse_retry_after(&v, SystemTime::now()));
        let code = header("x-ms-error-code").unwrap_or_default();
        let mut outcome = classify(Some(status), retry_after);
        if !matches!(outcome, Outcome::Accepted) {
            let body = resp.bytes().await.map(|b| b.to_vec()).unwrap_or_default();
            let (body_code, message) = error_body(&body);
            let code = if code.is_empty() { body_code } else { code };
            self.shared.set_error(format!("{status} {code}: {message} (request {request_id})"));
            if let Outcome::Rejected { code: c, message: m, .. } = &mut outcome {
                *c = code;
                *m = format!("{message} (request {request_id})");
            }
        }
        outcome
    }

    /// A 413: the batch becomes two (a lower `max_request_bytes` than the service's real limit
    /// would be the only cause, or a service that changed its limit). False when nothing
    /// changed (the spool or the dead-letter output failed): try again later.
    fn split(&mut self, e: &Entry) -> bool {
        let body = match spool::read_body(e) {
            Ok(b) => b,
            Err(err) => return self.unreadable(e, err),
        };
        match body.halves() {
            Ok(Some((a, b))) => match self.shared.replace(e.seq, &[a, b]) {
                Ok(()) => true,
                Err(err) => {
                    self.shared.set_error(format!("{err:#}"));
                    false
                }
            },
            Ok(None) => self.reject(e, Reason::TooLarge, "413: the service refused a single row as too large"),
            Err(err) => self.reject(e, Reason::Rejected, &format!("413, and the spooled batch is not a JSON array: {err}")),
        }
    }

    /// A spooled batch that cannot be read (an I/O error): it stays, and is tried again later.
    fn unreadable(&mut self, e: &Entry, err: std::io::Error) -> bool {
        self.shared.set_error(format!("reading {} from the spool: {err}", e.path.display()));
        false
    }

    /// Every row of a batch to the dead-letter output (whole, so it can be sent again), then
    /// the batch out of the spool, in that order: a crash in between repeats dead letters at
    /// worst, never loses a row. False when the dead-letter output could not take them.
    fn reject(&mut self, e: &Entry, reason: Reason, detail: &str) -> bool {
        let source = format!("sentinel:{}", self.cfg.stream);
        let body = match spool::read_body(e) {
            Ok(b) => b,
            Err(err) => return self.unreadable(e, err),
        };
        let letters: Vec<DeadLetter> = match Body::rows(&body.json) {
            Ok(rows) => rows.iter().enumerate().map(|(i, r)| row_letter(&source, e.seq, i, reason, detail, r)).collect(),
            // Not an array of rows (this sink wrote it, so only a damaged file): the whole text
            // goes into the dead letter.
            Err(err) => {
                let mut dl = DeadLetter::new(&source, format!("batch {}", e.seq), reason, format!("{detail}; not rows: {err}"), &body.json);
                dl.record = Some(serde_json::Value::String(String::from_utf8_lossy(&body.json).into_owned()));
                vec![dl]
            }
        };
        self.metrics.sentinel_dead_letters.with_label_values(&[&self.cfg.stream]).inc_by(letters.len() as u64);
        for dl in &letters {
            self.metrics.dead_letters.with_label_values(&[dl.reason.as_str()]).inc();
        }
        match self.dead.write(&letters) {
            Ok(()) => {
                self.shared.delivered(e.seq);
                true
            }
            Err(err) => {
                log::error!("{}: writing dead letters: {err:#}; the batch stays in the spool", self.cfg.describe());
                false
            }
        }
    }
}

fn row_letter(source: &str, seq: u64, i: usize, reason: Reason, detail: &str, row: &RawValue) -> DeadLetter {
    let mut dl = DeadLetter::new(source, format!("batch {seq} row {i}"), reason, detail, row.get().as_bytes());
    dl.record = serde_json::from_str(row.get()).ok();
    dl
}

/// `{"error":{"code":"…","message":"…"}}`, the service's error shape; else the text itself.
fn error_body(body: &[u8]) -> (String, String) {
    let v: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    let e = v.get("error");
    let code = e.and_then(|e| e.get("code")).and_then(|c| c.as_str()).unwrap_or_default().to_string();
    let message = e.and_then(|e| e.get("message")).and_then(|c| c.as_str()).map(str::to_string);
    let message = message.unwrap_or_else(|| String::from_utf8_lossy(&body[..body.len().min(512)]).trim().to_string());
    (code, message)
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        s.push_str(": ");
        s.push_str(&c.to_string());
        src = c.source();
    }
    s
}

/// What the sender does next.
pub enum Step {
    Send(Entry),
    Idle(Duration),
    Abandon,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_retry_after_and_backoff() {
        assert_eq!(classify(Some(204), None), Outcome::Accepted);
        assert_eq!(classify(Some(413), None), Outcome::Split);
        assert_eq!(
            classify(Some(429), Some(Duration::from_secs(7))),
            Outcome::Retry { after: Some(Duration::from_secs(7)), reason: "throttled" }
        );
        assert!(matches!(classify(Some(503), None), Outcome::Retry { reason: "server", .. }));
        assert!(matches!(classify(Some(408), None), Outcome::Retry { reason: "timeout", .. }));
        assert!(matches!(classify(None, None), Outcome::Retry { reason: "connection", .. }));
        assert!(matches!(classify(Some(400), None), Outcome::Rejected { status: 400, .. }));
        assert!(matches!(classify(Some(404), None), Outcome::Rejected { status: 404, .. }));
        assert_eq!(classify(Some(403), None), Outcome::Refused { status: 403 });

        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_445_412_480); // 2015-10-21T07:28:00Z
        assert_eq!(parse_retry_after("12", now), Some(Duration::from_secs(12)));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:30 GMT", now), Some(Duration::from_secs(30)));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:00:00 GMT", now), Some(Duration::ZERO), "a date past is now");
        assert_eq!(parse_retry_after("999999", now), Some(Duration::from_secs(3600)));
        assert_eq!(parse_retry_after("soon", now), None);

        let b = |a, j| backoff(a, Duration::from_secs(1), Duration::from_secs(60), j);
        assert_eq!((b(0, 1.0), b(3, 1.0), b(20, 1.0)), (Duration::from_secs(1), Duration::from_secs(8), Duration::from_secs(60)));
        assert_eq!(b(3, 0.0), Duration::from_secs(4), "jitter keeps at least half");
        let mut j = Jitter::new();
        let (a, c) = (j.request_id(), j.request_id());
        assert!(a != c && a.len() == 36 && a.as_bytes()[14] == b'4');
    }
}
