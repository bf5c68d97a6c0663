//! Decoding: bytes of one input document (a line, a Kafka message, a whole file) into
//! `kube_audit` rows, detecting the shape on the way:
//!
//! - an AKS diagnostic-settings envelope `{"records":[…]}` whose audit records carry the Event
//!   as a JSON *string* in `properties.log` (categories kube-audit, kube-audit-admin, guard);
//!   records of other categories (kube-apiserver, cluster-autoscaler…) are counted and skipped;
//! - one audit.k8s.io/v1 Event, an EventList, or a JSON array of either.
//!
//! Nothing here fails the batch: a document or record that cannot become a row becomes a
//! [`DeadLetter`] with its reason.

pub mod audit;
pub mod builder;
pub mod dedup;
pub mod envelope;
pub mod time;

use std::collections::BTreeMap;

use datafusion::arrow::array::RecordBatch;

use crate::deadletter::{nests_deeper_than, DeadLetter, Reason, MAX_DEPTH};
use audit::AuditEvent;
use builder::{AuditBatchBuilder, EnvelopeContext};

/// The label under which events without an AKS envelope are counted.
pub const RAW_CATEGORY: &str = "raw";

/// Counters of one decode run.
#[derive(Debug, Default, Clone)]
pub struct DecodeStats {
    pub documents: u64,
    /// Events decoded, by category (`raw` for events without an envelope).
    pub events: BTreeMap<String, u64>,
    /// Envelope records skipped because their category holds no audit events.
    pub skipped: BTreeMap<String, u64>,
}

impl DecodeStats {
    pub fn merge(&mut self, other: &DecodeStats) {
        self.documents += other.documents;
        for (k, v) in &other.events {
            *self.events.entry(k.clone()).or_default() += v;
        }
        for (k, v) in &other.skipped {
            *self.skipped.entry(k.clone()).or_default() += v;
        }
    }

    pub fn total_events(&self) -> u64 {
        self.events.values().sum()
    }
}

/// Adds one to `key`'s count, allocating the key only the first time (this runs per event).
fn count(counts: &mut BTreeMap<String, u64>, key: &str) {
    match counts.get_mut(key) {
        Some(n) => *n += 1,
        None => {
            counts.insert(key.to_string(), 1);
        }
    }
}

/// Turns documents into rows; one per decode worker.
#[derive(Default)]
pub struct Decoder {
    builder: AuditBatchBuilder,
    pub stats: DecodeStats,
    pub dead_letters: Vec<DeadLetter>,
    /// Reused for unescaping `properties.log` on the serde path.
    scratch: Vec<u8>,
    /// Reused by the envelope fast path for the unescaped logs of one document.
    fast_logs: Vec<u8>,
    /// Skip the fast path (tests compare the two).
    serde_only: bool,
}

/// Where a document came from, for dead letters.
#[derive(Clone, Copy)]
pub struct Origin<'a> {
    pub source: &'a str,
    /// `line`, `offset`, `document`…
    pub unit: &'a str,
    pub index: u64,
}

impl Origin<'_> {
    fn position(&self) -> String {
        format!("{} {}", self.unit, self.index)
    }
    fn record(&self, r: usize) -> String {
        format!("{} {} record {}", self.unit, self.index, r + 1)
    }
}

impl Decoder {
    pub fn new() -> Self {
        Self::default()
    }

    fn dead(&mut self, origin: Origin<'_>, position: String, reason: Reason, detail: impl Into<String>, input: &[u8]) {
        // A document nested past the parser's limit fails as some other shape error first.
        let reason = if matches!(reason, Reason::WrongShape | Reason::InvalidJson) && nests_deeper_than(input, MAX_DEPTH) {
            Reason::TooDeep
        } else {
            reason
        };
        self.dead_letters.push(DeadLetter::new(origin.source, position, reason, detail, input));
    }

    /// Decodes one document. Blank input is ignored.
    pub fn decode(&mut self, origin: Origin<'_>, bytes: &[u8]) {
        // simdutf8's fast path only says yes or no; std's validator explains a failure.
        let text = match simdutf8::basic::from_utf8(bytes).map_err(|_| std::str::from_utf8(bytes).unwrap_err()) {
            Ok(t) => t,
            Err(e) => {
                return self.dead(
                    origin,
                    origin.position(),
                    Reason::InvalidUtf8,
                    format!("invalid UTF-8 at byte {}", e.valid_up_to()),
                    bytes,
                )
            }
        };
        let text = text.trim();
        if text.is_empty() {
            return;
        }
        self.stats.documents += 1;
        if text.starts_with('[') {
            match serde_json::from_str::<Vec<AuditEvent<'_>>>(text) {
                Ok(docs) => {
                    for (i, doc) in docs.iter().enumerate() {
                        self.dispatch(origin, Some(i), doc, bytes);
                    }
                }
                Err(e) => self.dead(origin, origin.position(), Reason::of_json_error(&e), e.to_string(), bytes),
            }
            return;
        }
        if text.starts_with('{') && !self.serde_only && self.fast_envelope(origin, text) {
            return;
        }
        match serde_json::from_str::<AuditEvent<'_>>(text) {
            Ok(doc) => self.dispatch(origin, None, &doc, bytes),
            Err(e) => self.dead(origin, origin.position(), Reason::of_json_error(&e), e.to_string(), bytes),
        }
    }

    fn dispatch(&mut self, origin: Origin<'_>, element: Option<usize>, doc: &AuditEvent<'_>, bytes: &[u8]) {
        let position = || match element {
            Some(i) => origin.record(i),
            None => origin.position(),
        };
        if let Some(records) = &doc.records {
            for (r, rec) in records.iter().enumerate() {
                self.envelope_record(origin, r, rec);
            }
        } else if doc.kind.as_deref() == Some("EventList") || doc.items.is_some() {
            for (i, ev) in doc.items.iter().flatten().enumerate() {
                self.event(origin, origin.record(i), ev, EnvelopeContext::default(), bytes);
            }
        } else if doc.audit_id.is_some() || doc.kind.as_deref() == Some("Event") {
            self.event(origin, position(), doc, EnvelopeContext::default(), bytes);
        } else {
            self.dead(
                origin,
                position(),
                Reason::WrongShape,
                "neither an AKS envelope (records), an audit Event (auditID) nor an EventList (items)",
                bytes,
            );
        }
    }

    fn event(&mut self, origin: Origin<'_>, position: String, ev: &AuditEvent<'_>, env: EnvelopeContext<'_>, input: &[u8]) {
        match self.builder.append(ev, env) {
            Ok(()) => {
                count(&mut self.stats.events, env.category.unwrap_or(RAW_CATEGORY));
            }
            Err((reason, detail)) => self.dead(origin, position, reason, detail, input),
        }
    }

    /// Whether a record of `category` holds an audit Event; counts it as skipped when not.
    /// properties.log holds the Event as a JSON string; guard also writes klog text.
    fn is_audit_record(&mut self, category: &str, log_is_json: bool) -> bool {
        let is_audit = match category {
            "kube-audit" | "kube-audit-admin" => true,
            "guard" | "" => log_is_json,
            _ => false,
        };
        if !is_audit {
            count(&mut self.stats.skipped, if category.is_empty() { "(none)" } else { category });
        }
        is_audit
    }

    /// An envelope record as serde read it (the fallback path).
    fn envelope_record(&mut self, origin: Origin<'_>, r: usize, rec: &audit::EnvelopeRecord<'_>) {
        let category = rec.category.as_deref().unwrap_or("");
        let raw = rec.properties.as_ref().and_then(|p| p.log).map(|l| l.get());
        if !self.is_audit_record(category, raw.is_some_and(|l| l.as_bytes().get(1) == Some(&b'{'))) {
            return;
        }
        let Some(raw) = raw else {
            return self.dead(origin, origin.record(r), Reason::MissingField, format!("{category} record without properties.log"), b"");
        };
        let mut log = std::mem::take(&mut self.scratch);
        log.clear();
        match envelope::unescape_literal(raw, &mut log) {
            // SAFETY: `raw` is part of a document already validated as UTF-8, and unescaping copies
            // runs of it cut at ASCII bytes, plus chars it encodes itself: the result is UTF-8.
            Some(()) => self.audit_log(origin, r, category, rec.resource_id.as_deref(), rec.time.as_deref(), unsafe {
                std::str::from_utf8_unchecked(&log)
            }),
            None => self.dead(origin, origin.record(r), Reason::WrongShape, "properties.log is not a valid JSON string", raw.as_bytes()),
        }
        self.scratch = log;
    }

    /// The audit Event of one envelope record, its log already unescaped.
    fn audit_log(&mut self, origin: Origin<'_>, r: usize, category: &str, resource_id: Option<&str>, time: Option<&str>, log: &str) {
        match serde_json::from_str::<AuditEvent<'_>>(log) {
            Ok(ev) => {
                let env = EnvelopeContext {
                    cluster: resource_id,
                    category: (!category.is_empty()).then_some(category),
                    time: time.and_then(time::parse_rfc3339_nanos),
                };
                self.event(origin, origin.record(r), &ev, env, log.as_bytes());
            }
            Err(e) => {
                let reason = Reason::of_json_error(&e);
                let detail = if reason == Reason::Truncated {
                    format!("properties.log ends mid-document after {} bytes (AKS cuts logs at 16 KiB): {e}", log.len())
                } else {
                    format!("properties.log: {e}")
                };
                self.dead(origin, origin.record(r), reason, detail, log.as_bytes());
            }
        }
    }

    /// The fast path for AKS envelopes (see [`envelope`]); false when the document needs serde.
    fn fast_envelope(&mut self, origin: Origin<'_>, text: &str) -> bool {
        let mut logs = std::mem::take(&mut self.fast_logs);
        logs.clear();
        let mut records = Vec::new();
        let ok = envelope::scan_envelope(text, &mut logs, &mut records).is_some();
        if ok {
            for (r, rec) in records.iter().enumerate() {
                // SAFETY: `text` is valid UTF-8 (checked in `decode`), and the scanner copies runs
                // of it cut only at ASCII bytes, plus chars it encodes itself: the result is UTF-8.
                let log = rec.log.clone().map(|range| unsafe { std::str::from_utf8_unchecked(&logs[range]) });
                let log_is_json = log.is_some_and(|l| l.starts_with('{'));
                let category = rec.category.unwrap_or("");
                if !self.is_audit_record(category, log_is_json) {
                    continue;
                }
                match log {
                    Some(log) => self.audit_log(origin, r, category, rec.resource_id, rec.time, log),
                    None => {
                        self.dead(origin, origin.record(r), Reason::MissingField, format!("{category} record without properties.log"), b"")
                    }
                }
            }
        }
        self.fast_logs = logs;
        ok
    }

    pub fn pending_rows(&self) -> usize {
        self.builder.len()
    }

    /// The rows decoded since the last call, if any.
    pub fn finish(&mut self) -> Option<RecordBatch> {
        (!self.builder.is_empty()).then(|| self.builder.finish())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The envelope fast path decodes exactly what the serde path decodes.
    #[test]
    fn fast_path_equals_serde_path() {
        let mut input = Vec::new();
        crate::gen::generate(&crate::gen::GenOptions { events: 3000, seed: 11, ..Default::default() }, &mut input).unwrap();
        // Lines the fast path must hand over to serde, and their dead letters.
        input.extend_from_slice(b"{\"records\":[{\"category\":\"kube-audit\",\"properties\":{\"log\":\"{\\\"auditID\\\":\"}}]}\n");
        input.extend_from_slice(b"{\"records\":[{\"category\":\"kube-audit\",\"category\":\"guard\"}]}\n");
        let run = |serde_only: bool| {
            let mut d = Decoder { serde_only, ..Decoder::new() };
            for (i, line) in input.split(|&b| b == b'\n').enumerate() {
                d.decode(Origin { source: "t", unit: "line", index: i as u64 + 1 }, line);
            }
            let dead: Vec<String> = d.dead_letters.iter().map(|x| format!("{:?} {} {}", x.reason, x.position, x.detail)).collect();
            (d.finish().unwrap(), format!("{:?}", d.stats), dead)
        };
        let (fast, fast_stats, fast_dead) = run(false);
        let (slow, slow_stats, slow_dead) = run(true);
        assert_eq!(fast.num_rows(), 3000);
        assert_eq!(fast, slow);
        assert_eq!(fast_stats, slow_stats);
        assert_eq!(fast_dead, slow_dead);
        assert_eq!(fast_dead.len(), 2, "{fast_dead:?}");
    }
}
