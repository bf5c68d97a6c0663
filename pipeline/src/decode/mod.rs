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

/// Turns documents into rows; one per decode worker.
#[derive(Default)]
pub struct Decoder {
    builder: AuditBatchBuilder,
    pub stats: DecodeStats,
    pub dead_letters: Vec<DeadLetter>,
    /// Reused for unescaping `properties.log`, so a record costs no allocation for it.
    scratch: String,
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
        let text = match std::str::from_utf8(bytes) {
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
                let category = env.category.unwrap_or(RAW_CATEGORY);
                // Counted without allocating a key for every event.
                match self.stats.events.get_mut(category) {
                    Some(n) => *n += 1,
                    None => {
                        self.stats.events.insert(category.to_string(), 1);
                    }
                }
            }
            Err((reason, detail)) => self.dead(origin, position, reason, detail, input),
        }
    }

    fn envelope_record(&mut self, origin: Origin<'_>, r: usize, rec: &audit::EnvelopeRecord<'_>) {
        let category = rec.category.as_deref().unwrap_or("");
        let raw = rec.properties.as_ref().and_then(|p| p.log).map(|l| l.get());
        // properties.log holds the Event as a JSON string: `"{…"`. guard also writes klog text.
        let log_is_json = raw.is_some_and(|l| l.as_bytes().get(1) == Some(&b'{'));
        let is_audit = match category {
            "kube-audit" | "kube-audit-admin" => true,
            "guard" | "" => log_is_json,
            _ => false,
        };
        if !is_audit {
            let label = if category.is_empty() { "(none)" } else { category };
            *self.stats.skipped.entry(label.to_string()).or_default() += 1;
            return;
        }
        let Some(raw) = raw else {
            return self.dead(origin, origin.record(r), Reason::MissingField, format!("{category} record without properties.log"), b"");
        };
        let mut log = std::mem::take(&mut self.scratch);
        if let Err(e) = audit::unescape_json_string(raw, &mut log) {
            self.scratch = log;
            return self.dead(
                origin,
                origin.record(r),
                Reason::WrongShape,
                format!("properties.log is not a JSON string: {e}"),
                raw.as_bytes(),
            );
        }
        match serde_json::from_str::<AuditEvent<'_>>(&log) {
            Ok(ev) => {
                let env = EnvelopeContext {
                    cluster: rec.resource_id.as_deref(),
                    category: (!category.is_empty()).then_some(category),
                    time: rec.time.as_deref().and_then(time::parse_rfc3339_nanos),
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
        self.scratch = log;
    }

    pub fn pending_rows(&self) -> usize {
        self.builder.len()
    }

    /// The rows decoded since the last call, if any.
    pub fn finish(&mut self) -> Option<RecordBatch> {
        (!self.builder.is_empty()).then(|| self.builder.finish())
    }
}
