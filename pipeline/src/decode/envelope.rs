//! A fast path for the common input: an AKS diagnostic-settings envelope. It finds each
//! record's `category`, `resourceId`, `time` and `properties.log`, unescaping the log (the
//! audit Event as a JSON string) in the same pass that finds its end.
//!
//! With serde, that string is scanned once to skip it and again to unescape it, and its escape
//! every few bytes made those scans most of the decoding time. Like every use of the
//! [`Scanner`], this returns None for anything unusual (other shapes included); the caller then
//! takes the serde path. So the fast path changes speed, never results.

use std::ops::Range;

use super::audit::AuditEvent;
use super::escaped;
use super::scanner::{Json, Scanner};

/// One record of an envelope. Its log is either an audit Event read where it lies (`event`,
/// `escaped_log` its text, still escaped) or a range of the unescaped-log buffer (`log`).
pub struct FastRecord<'a> {
    pub category: Option<&'a str>,
    pub resource_id: Option<&'a str>,
    pub time: Option<&'a str>,
    pub log: Option<Range<usize>>,
    pub event: Option<AuditEvent<'a>>,
    pub escaped_log: &'a str,
    /// `Type`: a Log Analytics (Container Insights) record; `TimeGenerated` marks one too.
    pub la_type: Option<&'a str>,
    pub time_generated: bool,
    /// The record's own text: a Container Insights record is decoded from it.
    pub text: &'a str,
}

/// One record of the `records` array.
fn record<'a>(sc: &mut Scanner<'a>, logs: &mut Vec<u8>) -> Option<FastRecord<'a>> {
    let mut rec = FastRecord {
        category: None,
        resource_id: None,
        time: None,
        log: None,
        event: None,
        escaped_log: "",
        la_type: None,
        time_generated: false,
        text: "",
    };
    let mut seen_properties = false;
    sc.ws();
    let start = sc.i;
    sc.eat(b'{')?;
    let text = |sc: &Scanner<'a>| sc.src.get(start..sc.i);
    if sc.peek()? == b'}' {
        sc.i += 1;
        rec.text = text(sc)?;
        return Some(rec);
    }
    loop {
        let key = sc.plain_str()?;
        sc.eat(b':')?;
        match key {
            "category" if rec.category.is_none() => rec.category = Some(sc.plain_str()?),
            "resourceId" if rec.resource_id.is_none() => rec.resource_id = Some(sc.plain_str()?),
            "time" if rec.time.is_none() => rec.time = Some(sc.plain_str()?),
            "properties" if !seen_properties => {
                seen_properties = true;
                sc.eat(b'{')?;
                if sc.peek()? == b'}' {
                    sc.i += 1;
                } else {
                    loop {
                        let k = sc.plain_str()?;
                        sc.eat(b':')?;
                        if k == "log" && rec.log.is_none() && rec.event.is_none() {
                            if sc.peek()? != b'"' {
                                return None;
                            }
                            if let Some((event, close)) = escaped::event_in_string(sc.src, sc.i) {
                                rec.escaped_log = sc.src.get(sc.i + 1..close)?;
                                rec.event = Some(event);
                                sc.i = close + 1;
                            } else {
                                let start = logs.len();
                                sc.string_into(logs)?;
                                rec.log = Some(start..logs.len());
                            }
                        } else if k == "log" {
                            return None;
                        } else {
                            sc.skip_value()?;
                        }
                        if !sc.more(b'}')? {
                            break;
                        }
                    }
                }
            }
            "Type" if rec.la_type.is_none() => rec.la_type = Some(sc.plain_str()?),
            "TimeGenerated" if !rec.time_generated => {
                rec.time_generated = true;
                sc.skip_value()?
            }
            // A duplicate of a field serde reads: let serde say so (found by fuzzing).
            "category" | "resourceId" | "time" | "Type" | "TimeGenerated" | "properties" => return None,
            _ => sc.skip_value()?,
        }
        if !sc.more(b'}')? {
            rec.text = text(sc)?;
            return Some(rec);
        }
    }
}

/// Scans one diagnostic record standing alone (a storage-account archive line). None: not a
/// record with a category this scanner is sure of; use serde.
pub fn scan_bare_record<'a>(doc: &'a str, logs: &mut Vec<u8>) -> Option<FastRecord<'a>> {
    let mut sc = Scanner::new(doc);
    let rec = record(&mut sc, logs)?;
    sc.ws();
    (sc.i == sc.s.len() && rec.category.is_some() && rec.la_type.is_none() && !rec.time_generated).then_some(rec)
}

/// Scans `{"records":[…]}` (the key may sit among other keys). Appends each record's unescaped
/// log to `logs`. None: not an envelope this scanner is sure of; use serde.
pub fn scan_envelope<'a>(doc: &'a str, logs: &mut Vec<u8>, out: &mut Vec<FastRecord<'a>>) -> Option<()> {
    let mut sc = Scanner::new(doc);
    let mut seen_records = false;
    sc.eat(b'{')?;
    loop {
        let key = sc.plain_str()?;
        sc.eat(b':')?;
        if key == "records" && !seen_records {
            seen_records = true;
            sc.eat(b'[')?;
            if sc.peek()? == b']' {
                sc.i += 1;
            } else {
                loop {
                    out.push(record(&mut sc, logs)?);
                    if !sc.more(b']')? {
                        break;
                    }
                }
            }
        } else if key == "records" {
            return None;
        } else {
            sc.skip_value()?;
        }
        if !sc.more(b'}')? {
            break;
        }
    }
    sc.ws();
    (sc.i == sc.s.len() && seen_records).then_some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan(doc: &str) -> Option<Vec<(Option<String>, Option<String>)>> {
        let mut logs = Vec::new();
        let mut out = Vec::new();
        scan_envelope(doc, &mut logs, &mut out)?;
        Some(
            out.iter()
                .map(|r| {
                    // A log read in place is compared by its unescaped text.
                    let in_place = r.event.as_ref().map(|_| {
                        let mut text = Vec::new();
                        super::super::scanner::unescape_content(r.escaped_log, &mut text).unwrap();
                        String::from_utf8(text).unwrap()
                    });
                    (r.category.map(str::to_string), r.log.clone().map(|l| String::from_utf8(logs[l].to_vec()).unwrap()).or(in_place))
                })
                .collect(),
        )
    }

    #[test]
    fn scans_what_serde_reads() {
        let log = r#"{"kind":"Event","auditID":"a\"b","x":"é😀\n"}"#;
        let doc = serde_json::json!({"records": [
            {"time": "2026-11-01T08:00:00.1234567Z", "resourceId": "/SUBS/X", "category": "kube-audit",
             "operationName": "op", "extra": [1, -2.5e3, true, null, {"a": [{}, []]}, "s\"q"],
             "properties": {"log": log, "stream": "stdout", "pod": "p", "n": 1}},
            {"category": "kube-apiserver", "properties": {"log": "I1101 text"}}
        ], "other": {"k": "v"}})
        .to_string();
        let got = scan(&doc).unwrap();
        assert_eq!(got[0], (Some("kube-audit".into()), Some(log.into())));
        assert_eq!(got[1], (Some("kube-apiserver".into()), Some("I1101 text".into())));
        // Unicode escapes, surrogate pairs.
        assert_eq!(scan(r#"{"records":[{"properties":{"log":"\u00e9\ud83d\ude00\/"}}]}"#).unwrap()[0].1.as_deref(), Some("é😀/"));
    }

    #[test]
    fn hands_anything_unusual_to_serde() {
        for doc in [
            r#"{"kind":"Event","auditID":"x"}"#,
            r#"{"records":[{"category":"kube-audit","category":"guard"}]}"#,
            r#"{"records":[{"properties":{"log":"a","log":"b"}}]}"#,
            r#"{"records":[{"cat\u0065gory":"kube-audit"}]}"#,
            r#"{"records":[{"properties":{"log":{"not":"a string"}}}]}"#,
            r#"{"records":[{"category":1}]}"#,
            r#"{"records":[{"x":tru}]}"#,
            r#"{"records":[{"x":1.2.3}]}"#,
            r#"{"records":[{"x":["a":1]}]}"#,
            r#"{"records":[{"x":{"a" 1}}]}"#,
            r#"{"records":[{"x":[1,]}]}"#,
            r#"{"records":[]} trailing"#,
            r#"{"records":[{"properties":{"log":"raw
newline"}}]}"#,
            r#"{"records":[{"properties":{"log":"\ud83d"}}]}"#,
            r#"{"records":[{"properties":{"log":"cut"#,
            r#"{"records":"nope"}"#,
            r#"[{"records":[]}]"#,
        ] {
            assert!(scan(doc).is_none(), "{doc}");
        }
        let deep = format!(r#"{{"records":[{{"x":{}1{}}}]}}"#, "[".repeat(200), "]".repeat(200));
        assert!(scan(&deep).is_none());
        let ok_deep = format!(r#"{{"records":[{{"x":{}1{}}}]}}"#, "[".repeat(100), "]".repeat(100));
        assert!(scan(&ok_deep).is_some());
    }
}
