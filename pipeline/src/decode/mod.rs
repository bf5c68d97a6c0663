//! Decoding: bytes of one input document (a line, a Kafka message, a whole file) into rows of
//! `kube_audit` and of the Container Insights tables, detecting the shape on the way:
//!
//! - an AKS diagnostic-settings envelope `{"records":[…]}` whose audit records carry the Event
//!   as a JSON *string* in `properties.log` (categories kube-audit, kube-audit-admin, guard);
//!   records of other categories (kube-apiserver, cluster-autoscaler…) are counted and skipped;
//! - a Log Analytics data-export envelope `{"records":[…]}` of Container Insights records
//!   (their `Type` names the table; see [`insights`]) — one envelope may mix both kinds;
//! - one diagnostic record without the envelope, as diagnostic settings archive them to a
//!   storage account (`PT1H.json`, a record per line);
//! - audit events as Log Analytics keeps them: `AKSAudit`/`AKSAuditAdmin` rows and legacy
//!   `AzureDiagnostics` rows (see [`log_analytics`]);
//! - one audit.k8s.io/v1 Event, an EventList, one Container Insights record, or a JSON array
//!   of any of these.
//!
//! A UTF-8 byte-order mark before a document (Windows and Azure tools write one) is ignored.
//!
//! Nothing here fails the batch: a document or record that cannot become a row becomes a
//! [`DeadLetter`] with its reason.

pub mod audit;
pub mod builder;
pub mod dedup;
pub mod envelope;
mod escaped;
pub mod event_scan;
pub mod insights;
pub mod log_analytics;
mod scanner;
pub mod time;

pub use scanner::unescape_literal;

use std::collections::BTreeMap;

use datafusion::arrow::array::RecordBatch;

use crate::deadletter::{nests_deeper_than, DeadLetter, Reason, MAX_DEPTH};
use audit::AuditEvent;
use builder::{AuditBatchBuilder, EnvelopeContext};
use insights::InsightsDecoder;

/// A UTF-8 byte-order mark: files saved by Windows and Azure tools begin with one.
pub const BOM: char = '\u{feff}';

/// The label under which events without an AKS envelope are counted.
pub const RAW_CATEGORY: &str = "raw";

/// Counters of one decode run.
#[derive(Debug, Default, Clone)]
pub struct DecodeStats {
    pub documents: u64,
    /// Events decoded, by category (`raw` for audit events without an envelope; the Log
    /// Analytics table name for Container Insights records).
    pub events: BTreeMap<String, u64>,
    /// Events decoded, by table.
    pub tables: BTreeMap<String, u64>,
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
        for (k, v) in &other.tables {
            *self.tables.entry(k.clone()).or_default() += v;
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

/// What an AKS record adds to its Event.
fn envelope_context<'a>(category: &'a str, resource_id: Option<&'a str>, time: Option<&str>) -> EnvelopeContext<'a> {
    EnvelopeContext {
        cluster: resource_id,
        category: (!category.is_empty()).then_some(category),
        time: time.and_then(time::parse_rfc3339_nanos),
    }
}

/// Turns documents into rows; one per decode worker.
#[derive(Default)]
pub struct Decoder {
    builder: AuditBatchBuilder,
    insights: InsightsDecoder,
    pub stats: DecodeStats,
    pub dead_letters: Vec<DeadLetter>,
    /// Reused for unescaping `properties.log` on the serde path.
    scratch: Vec<u8>,
    /// Reused by the envelope fast path for the unescaped logs of one document.
    fast_logs: Vec<u8>,
    /// Skip the fast path (tests compare the two).
    serde_only: bool,
}

/// Rows of one table.
#[derive(Debug, Clone)]
pub struct TableBatch {
    pub table: &'static str,
    pub batch: RecordBatch,
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
    /// The document's position, or its element's (a record of an envelope, an item of a list).
    fn at(&self, element: Option<usize>) -> String {
        element.map_or_else(|| self.position(), |r| self.record(r))
    }
}

impl Decoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// A decoder that never takes the fast paths: the oracle the fuzz targets and tests compare
    /// the fast paths with.
    #[doc(hidden)]
    pub fn serde_only() -> Self {
        Decoder { serde_only: true, ..Self::default() }
    }

    fn dead(&mut self, origin: Origin<'_>, position: String, reason: Reason, detail: impl Into<String>, input: &[u8]) {
        // A document nested past the parser's limit may fail as another error first (skipping
        // a value as raw text has no depth limit: it runs into the end of an unclosed document).
        let reason =
            if matches!(reason, Reason::WrongShape | Reason::InvalidJson | Reason::Truncated) && nests_deeper_than(input, MAX_DEPTH) {
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
        let text = text.trim().trim_start_matches(BOM).trim_start();
        if text.is_empty() {
            return;
        }
        self.stats.documents += 1;
        if text.starts_with('[') {
            match serde_json::from_str::<Vec<&serde_json::value::RawValue>>(text) {
                Ok(docs) => {
                    for (i, doc) in docs.iter().enumerate() {
                        match self.parse(doc.get()) {
                            Ok(ev) => self.dispatch(origin, Some(i), &ev, doc.get()),
                            Err(e) => self.dead(origin, origin.record(i), Reason::of_json_error(&e), e.to_string(), doc.get().as_bytes()),
                        }
                    }
                }
                Err(e) => self.dead(origin, origin.position(), Reason::of_json_error(&e), e.to_string(), bytes),
            }
            return;
        }
        if text.starts_with('{') && !self.serde_only {
            // An Event line, then an envelope (the scanner gives up on an envelope at `records`).
            if let Some(ev) = event_scan::scan_event(text) {
                return self.dispatch(origin, None, &ev, text);
            }
            if self.fast_envelope(origin, text) {
                return;
            }
        }
        match serde_json::from_str::<AuditEvent<'_>>(text) {
            Ok(doc) => self.dispatch(origin, None, &doc, text),
            Err(e) => self.dead(origin, origin.position(), Reason::of_json_error(&e), e.to_string(), bytes),
        }
    }

    /// A top-level object: an audit Event by the scanner when it is sure of it (see
    /// [`event_scan`]), anything else by serde, which also explains what is wrong.
    fn parse<'a>(&self, text: &'a str) -> Result<AuditEvent<'a>, serde_json::Error> {
        match (!self.serde_only).then(|| event_scan::scan_event(text)).flatten() {
            Some(ev) => Ok(ev),
            None => serde_json::from_str(text),
        }
    }

    /// One document (or element of a top-level array) and its text.
    fn dispatch(&mut self, origin: Origin<'_>, element: Option<usize>, doc: &AuditEvent<'_>, text: &str) {
        let bytes = text.as_bytes();
        let position = || match element {
            Some(i) => origin.record(i),
            None => origin.position(),
        };
        if let Some(records) = &doc.records {
            for (r, rec) in records.iter().enumerate() {
                match serde_json::from_str::<audit::EnvelopeRecord<'_>>(rec.get()) {
                    Ok(parsed) => self.envelope_record(origin, Some(r), &parsed, rec.get()),
                    Err(e) => self.dead(origin, origin.record(r), Reason::of_json_error(&e), e.to_string(), rec.get().as_bytes()),
                }
            }
        } else if doc.la_type.is_some() || doc.time_generated.is_some() {
            self.insights_record(origin, element, doc.la_type.as_deref(), text);
        } else if doc.kind.as_deref() == Some("EventList") || doc.items.is_some() {
            // `"items": null` is how Go writes an empty list; no `items` at all is no list
            // (found by fuzzing: such a document vanished without a trace).
            if doc.items.is_none() && !has_key(text, "items") {
                return self.dead(origin, position(), Reason::MissingField, "an EventList without items", bytes);
            }
            for (i, ev) in doc.items.iter().flatten().enumerate() {
                self.event(origin, Some(i), ev, EnvelopeContext::default(), bytes);
            }
        } else if doc.audit_id.is_some() || doc.kind.as_deref() == Some("Event") {
            self.event(origin, element, doc, EnvelopeContext::default(), bytes);
        } else if self.bare_record(origin, element, text) {
            // A diagnostic record without its envelope (a storage-account archive line).
        } else {
            self.dead(
                origin,
                position(),
                Reason::WrongShape,
                "neither an envelope (records), a diagnostic record (category), an audit Event (auditID), an EventList (items) nor a Log Analytics record (Type, TimeGenerated)",
                bytes,
            );
        }
    }

    /// Appends an Event; `element`: which record or item of the document it is (named only in
    /// a dead letter: formatting it for every event cost more than some columns).
    fn event(&mut self, origin: Origin<'_>, element: Option<usize>, ev: &AuditEvent<'_>, env: EnvelopeContext<'_>, input: &[u8]) {
        self.event_with(origin, element, ev, env, || input.to_vec())
    }

    /// [`Decoder::event`], the input for a dead letter made only when one is written.
    fn event_with(
        &mut self,
        origin: Origin<'_>,
        element: Option<usize>,
        ev: &AuditEvent<'_>,
        env: EnvelopeContext<'_>,
        input: impl FnOnce() -> Vec<u8>,
    ) {
        match self.builder.append(ev, env) {
            Ok(()) => {
                count(&mut self.stats.events, env.category.unwrap_or(RAW_CATEGORY));
                count(&mut self.stats.tables, crate::tables::KUBE_AUDIT);
            }
            Err((reason, detail)) => self.dead(origin, origin.at(element), reason, detail, &input()),
        }
    }

    /// A Log Analytics record: `text` is its JSON object. Container Insights tables become their
    /// rows; audit events kept in Log Analytics (`AKSAudit`, `AzureDiagnostics`…) become
    /// `kube_audit` rows (see [`log_analytics`]).
    fn insights_record(&mut self, origin: Origin<'_>, element: Option<usize>, la_type: Option<&str>, text: &str) {
        if let Some(form) = log_analytics::form_of(la_type, text) {
            return self.log_analytics_audit(origin, element, form, text);
        }
        match self.insights.append(la_type, text) {
            Ok(table) => {
                count(&mut self.stats.events, table.la_name);
                count(&mut self.stats.tables, table.name);
            }
            Err((reason, detail)) => self.dead(origin, origin.at(element), reason, detail, text.as_bytes()),
        }
    }

    /// An audit event as a Log Analytics table row.
    fn log_analytics_audit(&mut self, origin: Origin<'_>, element: Option<usize>, form: log_analytics::Form, text: &str) {
        use log_analytics::Form;
        match form {
            Form::ControlPlane => count(&mut self.stats.skipped, "AKSControlPlane"),
            Form::ResourceSpecific { category } => match log_analytics::event_of_row(text) {
                Ok((event, ctx)) => self.audit_log(origin, element, category, ctx.cluster.as_deref(), ctx.time.as_deref(), &event),
                Err(e) => self.dead(origin, origin.at(element), Reason::WrongShape, format!("AKSAudit row: {e}"), text.as_bytes()),
            },
            Form::Diagnostics => match serde_json::from_str::<log_analytics::DiagnosticsRow<'_>>(text) {
                Ok(row) => {
                    let category = row.category.as_deref().unwrap_or("");
                    let log = row.log_s.as_deref();
                    if !self.is_audit_record(category, log.is_some_and(|l| l.trim_start().starts_with('{'))) {
                        return;
                    }
                    match log {
                        Some(log) => {
                            self.audit_log(origin, element, category, row.cluster().as_deref(), row.time_generated.as_deref(), log)
                        }
                        None => self.dead(
                            origin,
                            origin.at(element),
                            Reason::MissingField,
                            format!("AzureDiagnostics {category} row without log_s"),
                            text.as_bytes(),
                        ),
                    }
                }
                Err(e) => {
                    self.dead(origin, origin.at(element), Reason::of_json_error(&e), format!("AzureDiagnostics row: {e}"), text.as_bytes())
                }
            },
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

    /// A top-level object that is a diagnostic record without its envelope, as diagnostic
    /// settings archive them to a storage account (`PT1H.json`, one record per line). False
    /// when `text` is not one (it has no `category`).
    fn bare_record(&mut self, origin: Origin<'_>, element: Option<usize>, text: &str) -> bool {
        if !self.serde_only {
            let mut logs = std::mem::take(&mut self.fast_logs);
            logs.clear();
            let fast = envelope::scan_bare_record(text, &mut logs);
            let done = fast.is_some();
            if let Some(rec) = fast {
                self.fast_record(origin, element, &rec, &logs);
            }
            self.fast_logs = logs;
            if done {
                return true;
            }
        }
        match serde_json::from_str::<audit::EnvelopeRecord<'_>>(text) {
            Ok(rec) if rec.category.is_some() => {
                self.envelope_record(origin, element, &rec, text);
                true
            }
            _ => false,
        }
    }

    /// An envelope record as serde read it (the fallback path); `text` is the record's JSON.
    fn envelope_record(&mut self, origin: Origin<'_>, element: Option<usize>, rec: &audit::EnvelopeRecord<'_>, text: &str) {
        if rec.la_type.is_some() || (rec.time_generated.is_some() && rec.category.is_none()) {
            return self.insights_record(origin, element, rec.la_type.as_deref(), text);
        }
        let category = rec.category.as_deref().unwrap_or("");
        let raw = rec.properties.as_ref().and_then(|p| p.log).map(|l| l.get());
        if !self.is_audit_record(category, raw.is_some_and(|l| l.as_bytes().get(1) == Some(&b'{'))) {
            return;
        }
        let Some(raw) = raw else {
            return self.dead(origin, origin.at(element), Reason::MissingField, format!("{category} record without properties.log"), b"");
        };
        let mut log = std::mem::take(&mut self.scratch);
        log.clear();
        match scanner::unescape_literal(raw, &mut log) {
            // SAFETY: `raw` is part of a document already validated as UTF-8, and unescaping copies
            // runs of it cut at ASCII bytes, plus chars it encodes itself: the result is UTF-8.
            Some(()) => self.audit_log(origin, element, category, rec.resource_id.as_deref(), rec.time.as_deref(), unsafe {
                std::str::from_utf8_unchecked(&log)
            }),
            None => self.dead(origin, origin.at(element), Reason::WrongShape, "properties.log is not a valid JSON string", raw.as_bytes()),
        }
        self.scratch = log;
    }

    /// The audit Event of one envelope record (or Log Analytics row), its log already unescaped.
    fn audit_log(
        &mut self,
        origin: Origin<'_>,
        element: Option<usize>,
        category: &str,
        resource_id: Option<&str>,
        time: Option<&str>,
        log: &str,
    ) {
        match self.parse(log) {
            Ok(ev) => {
                let env = envelope_context(category, resource_id, time);
                self.event(origin, element, &ev, env, log.as_bytes());
            }
            Err(e) => {
                let reason = Reason::of_json_error(&e);
                let detail = if reason == Reason::Truncated {
                    format!("properties.log ends mid-document after {} bytes (AKS cuts logs at 16 KiB): {e}", log.len())
                } else {
                    format!("properties.log: {e}")
                };
                self.dead(origin, origin.at(element), reason, detail, log.as_bytes());
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
                self.fast_record(origin, Some(r), rec, &logs);
            }
        }
        self.fast_logs = logs;
        ok
    }

    /// One record the envelope scanner read; `logs` holds the logs it unescaped.
    fn fast_record(&mut self, origin: Origin<'_>, element: Option<usize>, rec: &envelope::FastRecord<'_>, logs: &[u8]) {
        if rec.la_type.is_some() || (rec.time_generated && rec.category.is_none()) {
            return self.insights_record(origin, element, rec.la_type, rec.text);
        }
        let category = rec.category.unwrap_or("");
        if let Some(ev) = &rec.event {
            if self.is_audit_record(category, true) {
                let env = envelope_context(category, rec.resource_id, rec.time);
                // A dead letter shows the log unescaped, as the other paths do.
                let unescaped = || {
                    let mut text = Vec::new();
                    scanner::unescape_content(rec.escaped_log, &mut text);
                    text
                };
                self.event_with(origin, element, ev, env, unescaped);
            }
            return;
        }
        // SAFETY: the document is valid UTF-8 (checked in `decode`), and the scanner copies runs
        // of it cut only at ASCII bytes, plus chars it encodes itself: the result is UTF-8.
        let log = rec.log.clone().map(|range| unsafe { std::str::from_utf8_unchecked(&logs[range]) });
        let log_is_json = log.is_some_and(|l| l.starts_with('{'));
        if !self.is_audit_record(category, log_is_json) {
            return;
        }
        match log {
            Some(log) => self.audit_log(origin, element, category, rec.resource_id, rec.time, log),
            None => self.dead(origin, origin.at(element), Reason::MissingField, format!("{category} record without properties.log"), b""),
        }
    }

    pub fn pending_rows(&self) -> usize {
        self.builder.len() + self.insights.len()
    }

    /// The rows decoded since the last call: a batch per table that has any, `kube_audit` first.
    pub fn finish(&mut self) -> Vec<TableBatch> {
        let audit = (!self.builder.is_empty()).then(|| TableBatch { table: crate::tables::KUBE_AUDIT, batch: self.builder.finish() });
        audit.into_iter().chain(self.insights.finish().into_iter().map(|(table, batch)| TableBatch { table, batch })).collect()
    }

    /// The `kube_audit` rows decoded since the last call, if any (tests and benchmarks of audit
    /// input; other tables' rows are dropped).
    pub fn finish_audit(&mut self) -> Option<RecordBatch> {
        self.finish().into_iter().find(|b| b.table == crate::tables::KUBE_AUDIT).map(|b| b.batch)
    }
}

/// Whether the JSON object `text` has `key` among its members (read only on rare paths).
fn has_key(text: &str, key: &str) -> bool {
    serde_json::from_str::<std::collections::HashMap<std::borrow::Cow<'_, str>, &serde_json::value::RawValue>>(text)
        .is_ok_and(|m| m.contains_key(key))
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
            (d.finish_audit().unwrap(), format!("{:?}", d.stats), dead)
        };
        let (fast, fast_stats, fast_dead) = run(false);
        let (slow, slow_stats, slow_dead) = run(true);
        assert_eq!(fast.num_rows(), 3000);
        assert_eq!(fast, slow);
        assert_eq!(fast_stats, slow_stats);
        assert_eq!(fast_dead, slow_dead);
        assert_eq!(fast_dead.len(), 2, "{fast_dead:?}");
    }

    /// One line decoded with the fast paths and with serde alone: the rows, the counts and the
    /// dead letters must be the same. Returns the rows.
    fn decodes_as_serde_does(line: &[u8]) -> usize {
        let run = |serde_only: bool| {
            let mut d = Decoder { serde_only, ..Decoder::new() };
            d.decode(Origin { source: "t", unit: "line", index: 1 }, line);
            let dead: Vec<String> =
                d.dead_letters.iter().map(|x| format!("{:?} {} {} {:?}", x.reason, x.position, x.detail, x.sample)).collect();
            (d.finish_audit(), format!("{:?}", d.stats), dead)
        };
        let (fast, slow) = (run(false), run(true));
        assert_eq!(fast, slow, "{}", String::from_utf8_lossy(line));
        fast.0.map_or(0, |b| b.num_rows())
    }

    /// The forms audit logs are kept in, broken: each becomes a dead letter with its reason,
    /// on the fast path and on serde alike, and a good line beside them still decodes.
    #[test]
    fn broken_archive_and_log_analytics_forms_are_dead_letters_with_reasons() {
        let event = r#"{"kind":"Event","auditID":"a1","stage":"ResponseComplete","verb":"get","user":{"username":"u"},"requestReceivedTimestamp":"2026-11-01T08:00:00Z"}"#;
        let cases: Vec<(String, Reason)> = vec![
            // A bare archive record whose Event AKS cut at 16 KiB.
            (
                serde_json::json!({"category": "kube-audit", "resourceId": "/C", "properties": {"log": &event[..60]}}).to_string(),
                Reason::Truncated,
            ),
            // A bare audit record without its log.
            (r#"{"category":"kube-audit","resourceId":"/C","properties":{"stream":"stdout"}}"#.into(), Reason::MissingField),
            // An AKSAudit row whose dynamic column is a string holding no JSON, one that would
            // splice fields into the Event, and one without any time.
            (r#"{"Type":"AKSAudit","AuditId":"a2","User":"{\"username\":"}"#.into(), Reason::WrongShape),
            (r#"{"Type":"AKSAudit","AuditId":"a3","User":"{\"username\":\"u\"},\"verb\":\"delete\""}"#.into(), Reason::WrongShape),
            (r#"{"Type":"AKSAudit","AuditId":"a4","Verb":"get"}"#.into(), Reason::MissingField),
            // AzureDiagnostics: an audit row without log_s, and one whose log_s is not JSON.
            (r#"{"Type":"AzureDiagnostics","Category":"kube-audit","ResourceId":"/C"}"#.into(), Reason::MissingField),
            (r#"{"Type":"AzureDiagnostics","Category":"kube-audit","log_s":"{\"auditID\": oops}"}"#.into(), Reason::InvalidJson),
        ];
        for serde_only in [false, true] {
            let mut d = Decoder { serde_only, ..Decoder::new() };
            for (i, (line, _)) in cases.iter().enumerate() {
                d.decode(Origin { source: "t", unit: "line", index: i as u64 + 1 }, line.as_bytes());
            }
            let good = serde_json::json!({"Type": "AzureDiagnostics", "Category": "kube-audit", "log_s": event}).to_string();
            d.decode(Origin { source: "t", unit: "line", index: 99 }, format!("\u{feff}{good}").as_bytes());
            let got: Vec<(String, Reason)> = d.dead_letters.iter().map(|x| (x.position.clone(), x.reason)).collect();
            let want: Vec<(String, Reason)> = cases.iter().enumerate().map(|(i, (_, r))| (format!("line {}", i + 1), *r)).collect();
            assert_eq!(got, want, "serde only: {serde_only}: {:?}", d.dead_letters.iter().map(|x| &x.detail).collect::<Vec<_>>());
            assert_eq!(d.finish_audit().map(|b| b.num_rows()), Some(1), "the good row beside them");
        }
    }

    #[test]
    fn mutated_envelopes_decode_as_serde_decodes_them() {
        // Generated AKS lines changed three ways: the Event inside a log edited and escaped
        // again (a valid envelope holding an odd Event), every `/` written `\/` (valid JSON
        // that Go and others write), and the raw line edited (anything at all).
        let mut input = Vec::new();
        crate::gen::generate(&crate::gen::GenOptions { events: 400, seed: 21, ..Default::default() }, &mut input).unwrap();
        let pieces =
            ["\"", "\\", "/", "\n", " ", "é", "\\\"", "\\\\", "\\u00e9", "\\n", "<", "{", "}", "[", "]", ",", ":", "0", "null", "x"];
        let mut seed = 0x7f4a_7c15_9e37_79b9u64;
        let mut next = |n: usize| {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (seed >> 33) as usize % n
        };
        let (mut lines, mut rows) = (0, 0);
        for line in input.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            rows += decodes_as_serde_does(line);
            rows += decodes_as_serde_does(String::from_utf8_lossy(line).replace('/', "\\/").as_bytes());
            for _ in 0..4 {
                let mut doc: serde_json::Value = serde_json::from_slice(line).unwrap();
                for rec in doc["records"].as_array_mut().into_iter().flatten() {
                    let Some(log) = rec["properties"]["log"].as_str() else { continue };
                    let mut log: Vec<char> = log.chars().collect();
                    for _ in 0..1 + next(2) {
                        let at = next(log.len() + 1);
                        match next(3) {
                            0 if at < log.len() => drop(log.remove(at)),
                            1 if at < log.len() => log[at] = pieces[next(pieces.len())].chars().next().unwrap(),
                            _ => pieces[next(pieces.len())].chars().rev().for_each(|c| log.insert(at, c)),
                        }
                    }
                    rec["properties"]["log"] = serde_json::Value::String(log.into_iter().collect());
                }
                rows += decodes_as_serde_does(doc.to_string().as_bytes());
                let mut raw = line.to_vec();
                let at = next(raw.len());
                raw[at] = pieces[next(pieces.len())].as_bytes()[0];
                rows += decodes_as_serde_does(&raw);
                lines += 2;
            }
        }
        assert!(lines > 500 && rows > lines / 2, "the edits should leave many readable events ({rows} rows from {lines} edited lines)");
    }
}
