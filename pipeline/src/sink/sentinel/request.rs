//! Request bodies: rows gathered into JSON arrays cut on serialized size, so no request is over
//! the service's 1 MB limit (which applies before and after compression: cutting the raw JSON
//! keeps both under it), then gzipped.

use std::io::Write;
use std::time::Instant;

use flate2::write::GzEncoder;
use flate2::Compression;
use serde_json::value::RawValue;

/// The request the Logs Ingestion API takes: a gzipped JSON array, the bearer token, a fresh
/// `x-ms-client-request-id` (what the service's logs find it by). Built here once, for the
/// sender and for `validate --check`.
pub fn post(http: &reqwest::Client, url: &str, authorization: String, gz: Vec<u8>, request_id: &str) -> reqwest::RequestBuilder {
    http.post(url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header(reqwest::header::CONTENT_ENCODING, "gzip")
        .header(reqwest::header::AUTHORIZATION, authorization)
        .header("x-ms-client-request-id", request_id)
        .body(gz)
}

/// One request body: a JSON array of rows.
#[derive(Debug, Clone, PartialEq)]
pub struct Body {
    pub json: Vec<u8>,
    pub records: usize,
}

impl Body {
    /// The body from its rows (each a JSON object).
    pub fn of_rows<'a>(rows: impl IntoIterator<Item = &'a [u8]>) -> Body {
        let mut json = vec![b'['];
        let mut records = 0;
        for r in rows {
            if records > 0 {
                json.push(b',');
            }
            json.extend_from_slice(r);
            records += 1;
        }
        json.push(b']');
        Body { json, records }
    }

    pub fn gzip(&self) -> Vec<u8> {
        // Level 1: JSON rows still shrink ~8×, and the sink stays cheap on a busy pipeline.
        let mut gz = GzEncoder::new(Vec::with_capacity(self.json.len() / 6), Compression::fast());
        gz.write_all(&self.json).expect("writing to memory");
        gz.finish().expect("writing to memory")
    }

    /// The rows of a body, for splitting it or dead-lettering them one by one.
    pub fn rows(json: &[u8]) -> serde_json::Result<Vec<Box<RawValue>>> {
        serde_json::from_slice(json)
    }

    /// Two bodies of half the rows each (the answer to a 413); `None` for a single row.
    pub fn halves(&self) -> serde_json::Result<Option<(Body, Body)>> {
        let rows = Self::rows(&self.json)?;
        if rows.len() < 2 {
            return Ok(None);
        }
        let (a, b) = rows.split_at(rows.len() / 2);
        let body = |part: &[Box<RawValue>]| Body::of_rows(part.iter().map(|r| r.get().as_bytes()));
        Ok(Some((body(a), body(b))))
    }
}

/// Gathers rows until the next would push the body over `max_bytes`.
pub struct Batcher {
    max_bytes: usize,
    json: Vec<u8>,
    records: usize,
    /// When the first row of the open batch arrived (the batch timeout counts from it).
    pub opened: Option<Instant>,
}

/// A row that cannot fit any request.
#[derive(Debug)]
pub struct TooLarge(pub usize);

impl Batcher {
    pub fn new(max_bytes: usize) -> Batcher {
        Batcher { max_bytes, json: Vec::new(), records: 0, opened: None }
    }

    /// Adds a row (a JSON object); returns the batch it closed when the row did not fit.
    pub fn push(&mut self, row: &[u8]) -> Result<Option<Body>, TooLarge> {
        // "[" + row + "]"
        if row.len() + 2 > self.max_bytes {
            return Err(TooLarge(row.len()));
        }
        let closed = if self.records > 0 && self.json.len() + 1 + row.len() + 1 > self.max_bytes { self.cut() } else { None };
        if self.records == 0 {
            // A batch is usually filled: one allocation instead of a dozen growing copies.
            self.json.reserve(self.max_bytes);
            self.json.push(b'[');
            self.opened = Some(Instant::now());
        } else {
            self.json.push(b',');
        }
        self.json.extend_from_slice(row);
        self.records += 1;
        Ok(closed)
    }

    /// Closes the open batch, if it holds a row.
    pub fn cut(&mut self) -> Option<Body> {
        if self.records == 0 {
            return None;
        }
        let mut json = std::mem::take(&mut self.json);
        json.push(b']');
        let records = std::mem::replace(&mut self.records, 0);
        self.opened = None;
        Some(Body { json, records })
    }

    pub fn is_empty(&self) -> bool {
        self.records == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_are_cut_under_the_limit_and_stay_valid_json() {
        let mut b = Batcher::new(100);
        let row = br#"{"TimeGenerated":"2026-11-01T08:00:00Z","AlertId":"x"}"#; // 51 bytes
        assert!(b.push(row).unwrap().is_none());
        let first = b.push(row).unwrap().expect("two rows do not fit in 100 bytes");
        assert_eq!(first.records, 1);
        assert!(first.json.len() <= 100);
        let v: serde_json::Value = serde_json::from_slice(&first.json).unwrap();
        assert_eq!(v.as_array().unwrap().len(), 1);
        let last = b.cut().unwrap();
        assert_eq!(last.records, 1);
        assert!(b.cut().is_none() && b.is_empty());
        assert!(matches!(b.push(&[b' '; 99]), Err(TooLarge(99))), "a row over the limit is refused, not queued");

        let mut b = Batcher::new(1_000_000);
        for _ in 0..100_000 {
            if let Some(body) = b.push(row).unwrap() {
                assert!(body.json.len() <= 1_000_000);
                assert_eq!(Body::rows(&body.json).unwrap().len(), body.records);
            }
        }
    }

    #[test]
    fn halves_and_gzip() {
        let rows: Vec<String> = (0..5).map(|i| format!(r#"{{"n":{i}}}"#)).collect();
        let body = Body::of_rows(rows.iter().map(|r| r.as_bytes()));
        let (a, b) = body.halves().unwrap().unwrap();
        assert_eq!((a.records, b.records), (2, 3));
        assert_eq!(a.json, br#"[{"n":0},{"n":1}]"#);
        assert!(Body::of_rows([&b"{}"[..]]).halves().unwrap().is_none());
        let gz = body.gzip();
        let mut out = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&gz[..]), &mut out).unwrap();
        assert_eq!(out, body.json);
    }
}
