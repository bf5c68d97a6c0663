//! What the fuzz targets (`fuzz/`) check on each input, kept here so that the normal test
//! suite replays every input they ever found (`fuzz/regressions/TARGET/`) through the very same
//! checks (`tests/integration/fuzz_regressions.rs`).
//!
//! Each check panics when a promise breaks: a panic in our code, the fast JSON paths reading
//! anything differently from serde_json, a document that vanishes without a row or a dead
//! letter, framing that depends on block size or compression, an importer writing a rule that
//! does not load, an error that echoes a secret.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::decode::audit::AuditEvent;
use crate::decode::builder::{AuditBatchBuilder, EnvelopeContext};
use crate::decode::{Decoder, Origin};
use crate::source::file::FileSource;
use crate::source::{FramingLimits, Source};

/// The fuzz targets by name, for the regression replay.
pub const TARGETS: &[(&str, fn(&[u8]))] =
    &[("decoder", decoder), ("scanner", scanner), ("framing", framing), ("config", config), ("rules", rules), ("urls", urls)];

/// One document through the decoder, with its fast paths and with serde alone: the same rows,
/// counts and dead letters; every dead letter explains itself; a document that is not blank
/// becomes rows, dead letters or skipped records, unless it is an empty container.
pub fn decoder(data: &[u8]) {
    let (rows, dead, skipped) = decode_both_ways(data);
    // Blank as the decoder means it: whitespace (Unicode's) and byte-order marks only.
    let blank = std::str::from_utf8(data).is_ok_and(|t| t.trim_matches(|c: char| c.is_whitespace() || c == crate::decode::BOM).is_empty());
    if !blank && rows + dead == 0 && skipped == 0 && !is_empty_container(data) {
        panic!("a document vanished without a row or a dead letter: {:?}", String::from_utf8_lossy(data));
    }
}

/// Decodes `data` both ways, asserts they agree, and returns (rows, dead letters, skipped).
fn decode_both_ways(data: &[u8]) -> (usize, usize, u64) {
    let run = |mut d: Decoder| {
        d.decode(Origin { source: "fuzz", unit: "document", index: 1 }, data);
        let dead: Vec<String> =
            d.dead_letters.iter().map(|x| format!("{:?} {} {} {:?}", x.reason, x.position, x.detail, x.sample)).collect();
        for x in &d.dead_letters {
            assert!(!x.detail.trim().is_empty(), "a dead letter without a reason: {x:?}");
        }
        let stats = format!("{:?}", d.stats);
        let skipped = d.stats.skipped.values().sum::<u64>();
        let tables: Vec<_> = d.finish().into_iter().map(|t| (t.table, t.batch)).collect();
        (tables, stats, dead, skipped)
    };
    let fast = run(Decoder::new());
    let slow = run(Decoder::serde_only());
    assert_eq!(fast, slow, "the fast path and serde disagree on {:?}", String::from_utf8_lossy(data));
    let rows = fast.0.iter().map(|(_, b)| b.num_rows()).sum();
    (rows, fast.2.len(), fast.3)
}

/// `{"records":[]}`, `{"kind":"EventList","items":[]}` (or `"items":null`, as Go writes an
/// empty list), a top-level array of none or only such: nothing to decode, rightly.
fn is_empty_container(data: &[u8]) -> bool {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(crate::source::strip_bom(data)) else { return false };
    let empty = |v: &serde_json::Value| {
        let no = |k: &str| v.get(k).and_then(|x| x.as_array()).is_some_and(|a| a.is_empty());
        no("records") || no("items") || (v["kind"] == "EventList" && v.get("items").is_some_and(|x| x.is_null()))
    };
    v.as_array().map_or_else(|| empty(&v), |docs| docs.iter().all(empty))
}

/// The hand-written JSON readers against serde_json: an audit Event read by the scanner is the
/// Event serde reads, to the same row (what serde refuses, the scanner refuses); a string
/// literal unescapes exactly as serde unescapes it, or is refused by both; and the Event
/// escaped inside an AKS envelope's `properties.log` (the escaped-string reader) decodes as
/// serde decodes it.
pub fn scanner(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Some(fast) = crate::decode::event_scan::scan_event(text) {
        let slow: AuditEvent<'_> =
            serde_json::from_str(text).unwrap_or_else(|e| panic!("the scanner took what serde refuses ({e}): {text:?}"));
        assert_eq!(fast.kind, slow.kind, "{text:?}");
        assert_eq!(audit_row(&fast), audit_row(&slow), "the scanner and serde read different rows from {text:?}");
    }
    let mut ours = Vec::new();
    let ours = crate::decode::unescape_literal(text, &mut ours).map(|()| ours);
    let theirs = serde_json::from_str::<String>(text).ok().filter(|_| text.starts_with('"') && text.ends_with('"'));
    assert_eq!(ours.as_deref(), theirs.as_deref().map(str::as_bytes), "unescaping {text:?}");
    let envelope = serde_json::json!({"records": [{"category": "kube-audit", "resourceId": "/C", "properties": {"log": text}}]});
    decode_both_ways(envelope.to_string().as_bytes());
}

fn audit_row(ev: &AuditEvent<'_>) -> Result<datafusion::arrow::array::RecordBatch, (crate::deadletter::Reason, String)> {
    let mut b = AuditBatchBuilder::new();
    b.append(ev, EnvelopeContext::default())?;
    Ok(b.finish())
}

/// A file's bytes framed into documents: the same documents whatever the block size, and the
/// same again when the bytes come gzip-compressed, in one member or two. The first byte picks
/// the block size and the document limit.
pub fn framing(data: &[u8]) {
    let Some((&knob, input)) = data.split_first() else { return };
    let chunk = 1 + (knob & 0x3f) as usize;
    let max = [64, 4096, 16 << 20][(knob >> 6) as usize % 3];
    let plain = frame(input.to_vec(), chunk, max);
    let big = frame(input.to_vec(), 4 << 20, max);
    assert_eq!(plain, big, "framing depends on the block size ({chunk} bytes)");
    if input.starts_with(&[0x1f, 0x8b]) {
        return; // already gzip (or claims to be): no plain text to compare with
    }
    let gz = |parts: &[&[u8]]| {
        let mut out = Vec::new();
        for p in parts {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(p).unwrap();
            out.extend(e.finish().unwrap());
        }
        out
    };
    assert_eq!(frame(gz(&[input]), chunk, max), plain, "gzip framing differs from plain");
    let mid = input.len() / 2;
    assert_eq!(frame(gz(&[&input[..mid], &input[mid..]]), chunk, max), plain, "two gzip members differ from one");
}

type Framed = Result<Vec<(u64, Vec<u8>, Option<u64>)>, String>;

/// The documents (index, bytes, oversize) a file source cuts `bytes` into, or its error.
fn frame(bytes: Vec<u8>, chunk_bytes: usize, max_document_bytes: usize) -> Framed {
    let limits = FramingLimits { max_document_bytes, chunk_bytes };
    let size = Some(bytes.len() as u64);
    let mut src = FileSource::from_reader("fuzz", Box::new(std::io::Cursor::new(bytes)), size, limits, Default::default())
        .map_err(|e| e.kind().to_string())?;
    let mut out = Vec::new();
    while let Some(c) = src.next_chunk().map_err(|e| e.kind().to_string())? {
        for d in &c.docs {
            assert!(d.start <= d.end && d.end <= c.buf.len(), "a document outside its chunk");
            out.push((d.index, c.buf[d.start..d.end].to_vec(), d.oversize));
        }
        src.recycle(c.buf);
    }
    Ok(out)
}

/// A secret an environment variable holds, that no error may show.
const ENV_SECRET: &str = "fuzz-env-value-7f3a";

/// The config file: parsed with every `${VAR}` set to a secret, then validated. Whatever is
/// wrong, no error shows the secret.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if text.contains(ENV_SECRET) {
        return;
    }
    let env = |_: &str| Some(ENV_SECRET.to_string());
    let outcome = crate::config::Config::parse_with_env(text, &env).and_then(|c| c.validate().map(|()| c));
    if let Err(e) = outcome {
        let shown = format!("{e:#} {e:?}");
        assert!(!shown.contains(ENV_SECRET), "an error shows an environment variable's value: {shown}");
    }
}

/// Rule and list files, and the Sigma importer: no panic on any text, and whatever the importer
/// converts loads as a rule whose query is one SQL SELECT (a Sigma value cannot break out of
/// its quotes into the SQL).
pub fn rules(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let file = |name: &str| vec![(PathBuf::from(name), text.to_string())];
    let _ = crate::rules::RuleSet::from_texts(Path::new("fuzz"), file("rule.yaml"), vec![]);
    let _ = crate::rules::Lists::from_texts(file("list.yaml"));
    let Ok((id, yaml)) = crate::rules::sigma::convert(text) else { return };
    let set = crate::rules::RuleSet::from_texts(Path::new("fuzz"), vec![(PathBuf::from(format!("{id}.yaml")), yaml.clone())], vec![])
        .unwrap_or_else(|e| panic!("the importer wrote a rule that does not load ({e:#}):\n{yaml}"));
    for rule in &set.rules {
        use datafusion::sql::sqlparser::{ast::Statement, dialect::GenericDialect, parser::Parser};
        let parsed = Parser::parse_sql(&GenericDialect {}, &rule.query);
        assert!(
            matches!(parsed.as_deref(), Ok([Statement::Query(_)])),
            "the importer wrote a query that is not one SELECT ({parsed:?}):\n{}",
            rule.query
        );
    }
}

/// Source, sink and lake URLs: no panic; percent-decoding agrees with the `url` crate's form
/// decoding wherever ours accepts; a lake URL carrying a secret is refused without showing it.
pub fn urls(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let _ = crate::config::source_from_url(text);
    let _ = crate::config::sink_from_url(text);
    if let Some(ours) = crate::url::percent_decode(text, true) {
        if !text.contains('&') {
            let form = format!("x={text}");
            let theirs = url::form_urlencoded::parse(form.as_bytes()).next().map(|(_, v)| v.into_owned()).unwrap_or_default();
            assert_eq!(ours, theirs, "percent-decoding {text:?}");
        }
    }
    let secret = "fuzzsig0123456789";
    if text.contains(secret) {
        return; // the fuzzer learns the secret from the comparison below; then any echo would show it
    }
    let with_secret = format!("{text}{}sig={secret}", if text.contains('?') { "&" } else { "?" });
    match crate::lake::config::LakeConfig::from_url(&with_secret) {
        Ok(_) => panic!("a lake URL carrying a signature was taken: {with_secret:?}"),
        Err(e) => assert!(!format!("{e:#}").contains(secret), "a lake URL error shows its signature: {e:#}"),
    }
}
