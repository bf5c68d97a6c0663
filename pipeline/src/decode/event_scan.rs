//! An audit Event read by the [`Scanner`] instead of serde: the same [`AuditEvent`], made
//! without serde's per-field machinery (key matching through a visitor, an `Option` wrapper
//! per value, a second pass over every borrowed string). serde took about a third of the
//! decoding time here.
//!
//! Like every use of the scanner, this returns None for anything it is not sure of, and the
//! caller then asks serde, which decides and explains errors: the other top-level shapes
//! (`records`, `items`, `Type`, `TimeGenerated`), a declared field that is null, of another
//! type or given twice (serde refuses duplicates), an escaped key. So it changes speed, never
//! results; tests compare the two on generated Events and on thousands of mutations of them.

use super::audit::{Annotations, AuditEvent, ObjectRef, Status, UserInfo};
use super::scanner::{Json, Scanner};

/// Reads one whole text as an audit Event; None: ask serde.
pub fn scan_event(text: &str) -> Option<AuditEvent<'_>> {
    let mut sc = Scanner::new(text);
    let ev = event(&mut sc)?;
    sc.ws();
    (sc.i == text.len()).then_some(ev)
}

/// One Event, from a document as it lies (plain, or escaped inside a string).
pub(super) fn event<'a>(sc: &mut impl Json<'a>) -> Option<AuditEvent<'a>> {
    let mut ev = AuditEvent::default();
    sc.object(|sc, key| match key {
        "kind" => set(&mut ev.kind, sc.string()),
        "level" => set(&mut ev.level, sc.string()),
        "auditID" => set(&mut ev.audit_id, sc.string()),
        "stage" => set(&mut ev.stage, sc.string()),
        "requestURI" => set(&mut ev.request_uri, sc.string()),
        "verb" => set(&mut ev.verb, sc.string()),
        "user" => set(&mut ev.user, user(sc)),
        "impersonatedUser" => set(&mut ev.impersonated_user, user(sc)),
        "sourceIPs" => set(&mut ev.source_ips, sc.strings()),
        "userAgent" => set(&mut ev.user_agent, sc.string()),
        "objectRef" => set(&mut ev.object_ref, object_ref(sc)),
        "responseStatus" => set(&mut ev.response_status, status(sc)),
        "requestObject" => set(&mut ev.request_object, sc.raw()),
        "responseObject" => set(&mut ev.response_object, sc.raw()),
        "requestReceivedTimestamp" => set(&mut ev.request_received_timestamp, sc.string()),
        "stageTimestamp" => set(&mut ev.stage_timestamp, sc.string()),
        "annotations" => set(&mut ev.annotations, annotations(sc)),
        // The keys that make a document an envelope, a list or a Log Analytics record.
        "records" | "items" | "Type" | "TimeGenerated" => None,
        _ => sc.skip_value(),
    })?;
    Some(ev)
}

/// Fills a field once. A second occurrence is an error to serde, so it is None here; a null
/// value (no `Some`) is None too, which makes `slot.is_some()` a complete duplicate check.
fn set<T>(slot: &mut Option<T>, value: Option<T>) -> Option<()> {
    if slot.is_some() {
        return None;
    }
    *slot = Some(value?);
    Some(())
}

fn user<'a>(sc: &mut impl Json<'a>) -> Option<UserInfo<'a>> {
    let mut u = UserInfo::default();
    sc.object(|sc, key| match key {
        "username" => set(&mut u.username, sc.string()),
        "uid" => set(&mut u.uid, sc.string()),
        "groups" => set(&mut u.groups, sc.strings()),
        "extra" => set(&mut u.extra, sc.raw()),
        _ => sc.skip_value(),
    })?;
    Some(u)
}

fn object_ref<'a>(sc: &mut impl Json<'a>) -> Option<ObjectRef<'a>> {
    let mut o = ObjectRef::default();
    sc.object(|sc, key| match key {
        "resource" => set(&mut o.resource, sc.string()),
        "subresource" => set(&mut o.subresource, sc.string()),
        "namespace" => set(&mut o.namespace, sc.string()),
        "name" => set(&mut o.name, sc.string()),
        "apiGroup" => set(&mut o.api_group, sc.string()),
        "apiVersion" => set(&mut o.api_version, sc.string()),
        _ => sc.skip_value(),
    })?;
    Some(o)
}

fn status<'a>(sc: &mut impl Json<'a>) -> Option<Status<'a>> {
    let mut s = Status::default();
    sc.object(|sc, key| match key {
        // Plain digits only; a sign, a fraction, an exponent or overflow is serde's to judge.
        "code" => set(&mut s.code, sc.number().filter(|n| n.bytes().all(|b| b.is_ascii_digit())).and_then(|n| n.parse().ok())),
        "reason" => set(&mut s.reason, sc.string()),
        _ => sc.skip_value(),
    })?;
    Some(s)
}

fn annotations<'a>(sc: &mut impl Json<'a>) -> Option<Annotations<'a>> {
    let mut a = Annotations::default();
    sc.object(|sc, key| match key {
        "authorization.k8s.io/decision" => set(&mut a.decision, sc.string()),
        "authorization.k8s.io/reason" => set(&mut a.reason, sc.string()),
        _ => sc.skip_value(),
    })?;
    Some(a)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deadletter::Reason;
    use crate::decode::builder::{AuditBatchBuilder, EnvelopeContext};
    use datafusion::arrow::array::RecordBatch;

    /// The row an Event becomes, or why it cannot be one.
    fn row(ev: &AuditEvent<'_>) -> Result<RecordBatch, (Reason, String)> {
        let mut b = AuditBatchBuilder::new();
        b.append(ev, EnvelopeContext::default())?;
        Ok(b.finish())
    }

    /// Whether the scanner took `text`; when it did, serde must take it too, to the same row.
    fn agrees_with_serde(text: &str) -> bool {
        let Some(fast) = scan_event(text) else { return false };
        let slow: AuditEvent<'_> =
            serde_json::from_str(text).unwrap_or_else(|e| panic!("the scanner took what serde refuses ({e}): {text}"));
        assert_eq!(fast.kind, slow.kind, "{text}");
        assert_eq!(row(&fast), row(&slow), "{text}");
        true
    }

    /// The audit Events (properties.log) of generated envelope lines.
    fn generated_events(n: u64, seed: u64) -> Vec<String> {
        let mut out = Vec::new();
        crate::gen::generate(&crate::gen::GenOptions { events: n, seed, ..Default::default() }, &mut out).unwrap();
        let mut events = Vec::new();
        for line in out.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            let doc: serde_json::Value = serde_json::from_slice(line).unwrap();
            for rec in doc["records"].as_array().into_iter().flatten() {
                if let Some(log) = rec["properties"]["log"].as_str().filter(|l| l.starts_with('{')) {
                    events.push(log.to_string());
                }
            }
        }
        events
    }

    #[test]
    fn generated_events_read_as_serde_reads_them() {
        let events = generated_events(3000, 5);
        assert!(events.len() >= 3000);
        for ev in &events {
            assert!(agrees_with_serde(ev), "the scanner should take every generated Event: {ev}");
        }
    }

    #[test]
    fn unusual_events_are_left_to_serde() {
        let left = [
            r#"{"auditID":"a","verb":null}"#,
            r#"{"auditID":"a","auditID":"b"}"#,
            r#"{"auditID":"a","user":{"username":"x","username":"y"}}"#,
            r#"{"audit\u0049D":"a"}"#,
            r#"{"auditID":"a","responseStatus":{"code":200.0}}"#,
            r#"{"auditID":"a","responseStatus":{"code":-1}}"#,
            r#"{"auditID":"a","responseStatus":{"code":99999999999}}"#,
            r#"{"auditID":"a","sourceIPs":["1.2.3.4",null]}"#,
            r#"{"auditID":"a","requestObject":null}"#,
            r#"{"auditID":"a","verb":5}"#,
            r#"{"records":[]}"#,
            r#"{"kind":"EventList","items":[]}"#,
            r#"{"Type":"KubeEvents"}"#,
            r#"{"auditID":"a"} {}"#,
            r#"{"auditID":"a\ud800"}"#,
        ];
        for text in left {
            assert!(scan_event(text).is_none(), "{text}");
        }
        // Escapes in values, unknown members of every kind, and whitespace are the scanner's.
        for text in [
            r#"{"auditID":"a\"b\u00e9","x":[1,-2.5e3,true,null,{"y":{}}],"annotations":{"authorization.k8s.io/reason":"RBAC: \"x\"","other":1}}"#,
            " { \"auditID\" : \"a\" , \"user\" : { \"extra\" : {\"oid\":[\"o\"]} } , \"responseStatus\":{\"code\":403,\"metadata\":{}} }\n",
        ] {
            assert!(agrees_with_serde(text), "{text}");
        }
    }

    #[test]
    fn mutated_events_never_read_differently_from_serde() {
        // Random edits of real Events (a byte dropped, doubled or replaced by JSON punctuation):
        // whatever the scanner still takes, serde must take, to the same row.
        let punctuation = b"{}[]:,\"\\ 0-.eEnul";
        let mut seed = 0x51_7cc1_b727_220au64;
        let mut next = |n: usize| {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (seed >> 33) as usize % n
        };
        let (mut taken, mut tried) = (0, 0);
        for ev in generated_events(400, 9).iter().take(400) {
            for _ in 0..25 {
                let mut bytes = ev.clone().into_bytes();
                for _ in 0..1 + next(2) {
                    let at = next(bytes.len());
                    match next(3) {
                        0 => drop(bytes.remove(at)),
                        1 => bytes.insert(at, bytes[at]),
                        _ => bytes[at] = punctuation[next(punctuation.len())],
                    }
                }
                let Ok(text) = String::from_utf8(bytes) else { continue };
                tried += 1;
                taken += agrees_with_serde(&text) as usize;
            }
        }
        assert!(tried > 9000 && taken > tried / 10, "the mutations should leave many valid Events ({taken} of {tried})");
    }
}
