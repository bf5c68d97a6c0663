//! Dead letters: input that could not become a row, kept with the reason so nothing is lost
//! silently. Written as JSON lines (a file, or a topic later) and counted by reason.

use serde::Serialize;

/// Why an input was rejected. The string form is the metric label and the `reason` field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// Not JSON at all.
    InvalidJson,
    /// JSON cut short (AKS cuts `properties.log` at 16 KiB; a file may end mid-document).
    Truncated,
    /// Valid JSON, but not an envelope, Event or EventList.
    WrongShape,
    /// Bytes that are not UTF-8.
    InvalidUtf8,
    /// An Event without auditID or any timestamp, an envelope record without properties.log.
    MissingField,
    /// A timestamp that is not RFC 3339.
    InvalidTimestamp,
    /// A line or document larger than the configured maximum.
    TooLarge,
    /// Nesting deeper than the parser's limit.
    TooDeep,
    /// A Log Analytics record whose `Type` is not a table Crowsnest decodes.
    UnknownTable,
    /// A destination refused the record (the Logs Ingestion API's 400 or 404).
    Rejected,
}

impl Reason {
    pub const ALL: [Reason; 10] = [
        Reason::InvalidJson,
        Reason::Truncated,
        Reason::WrongShape,
        Reason::InvalidUtf8,
        Reason::MissingField,
        Reason::InvalidTimestamp,
        Reason::TooLarge,
        Reason::TooDeep,
        Reason::UnknownTable,
        Reason::Rejected,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::InvalidJson => "invalid_json",
            Reason::Truncated => "truncated",
            Reason::WrongShape => "wrong_shape",
            Reason::InvalidUtf8 => "invalid_utf8",
            Reason::MissingField => "missing_field",
            Reason::InvalidTimestamp => "invalid_timestamp",
            Reason::TooLarge => "too_large",
            Reason::TooDeep => "too_deep",
            Reason::UnknownTable => "unknown_table",
            Reason::Rejected => "rejected",
        }
    }

    /// Classifies a serde_json error.
    pub fn of_json_error(e: &serde_json::Error) -> Reason {
        if e.is_eof() {
            Reason::Truncated
        } else if e.to_string().starts_with("recursion limit exceeded") {
            Reason::TooDeep
        } else if e.is_data() {
            Reason::WrongShape
        } else {
            Reason::InvalidJson
        }
    }
}

/// serde_json's recursion limit: input nested deeper cannot be decoded.
pub const MAX_DEPTH: usize = 128;

/// Whether JSON text nests arrays/objects deeper than `limit` (strings are skipped). Only
/// called on input that already failed to decode, to name the reason precisely.
pub fn nests_deeper_than(bytes: &[u8], limit: usize) -> bool {
    let (mut depth, mut in_str, mut escaped) = (0usize, false, false);
    for &b in bytes {
        if in_str {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_str = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_str = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > limit {
                    return true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

/// How many bytes of the offending input a dead letter keeps.
pub const SAMPLE_BYTES: usize = 512;

#[derive(Debug, Clone, Serialize)]
pub struct DeadLetter {
    /// Where the input came from: `file:PATH`, `stdin`, `kafka:TOPIC/PARTITION`…
    pub source: String,
    /// Where in that source: `line 12`, `line 12 record 3`, `offset 4711`.
    pub position: String,
    pub reason: Reason,
    /// The parser's message or what was missing.
    pub detail: String,
    /// The first bytes of the input (lossy UTF-8).
    pub sample: String,
    /// The whole record, when it is one a sink refused (so it can be sent again).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub record: Option<serde_json::Value>,
}

impl DeadLetter {
    pub fn new(source: &str, position: String, reason: Reason, detail: impl Into<String>, input: &[u8]) -> Self {
        let cut = input.len().min(SAMPLE_BYTES);
        DeadLetter {
            source: source.to_string(),
            position,
            reason,
            detail: detail.into(),
            sample: safe_sample(&String::from_utf8_lossy(&input[..cut])),
            record: None,
        }
    }
}

/// Where a sample of input that may bear secrets is cut: the first of these (in any case) and
/// all after it are left out. Input that failed to decode was never redacted, so the sample is
/// the only place a Secret's value could leave by.
const SECRET_BEARING: [&str; 8] =
    ["requestobject", "responseobject", "stringdata", "data\"", "data\\\"", "last-applied", "token", "authorization"];
/// What makes a sample suspect at all (in any case).
const SECRET_HINTS: [&str; 4] = ["secret", "token", "last-applied", "authorization"];

/// `sample`, or its part before anything that could hold secret material when it mentions
/// secrets, tokens or credentials at all.
pub fn safe_sample(sample: &str) -> String {
    let lower = sample.to_ascii_lowercase();
    if !SECRET_HINTS.iter().any(|h| lower.contains(h)) {
        return sample.to_string();
    }
    let cut = SECRET_BEARING.iter().filter_map(|k| lower.find(k)).min().unwrap_or(sample.len());
    // `lower` has the same byte offsets as `sample` (ASCII case only changes).
    let keep = sample.get(..cut).unwrap_or_default();
    format!("{keep}{CUT_MARK}")
}

/// Ends a sample cut by [`safe_sample`].
pub const CUT_MARK: &str = "…[cut: the rest may hold secret material]";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sample_that_may_bear_secrets_stops_before_them() {
        let plain = r#"{"kind":"Event","verb":"get","objectRef":{"resource":"pods"}"#;
        assert_eq!(safe_sample(plain), plain);
        let secret = r#"{"kind":"Event","objectRef":{"resource":"secrets"},"requestObject":{"kind":"Secret","data":{"p":"c2VjcmV0"}"#;
        let s = safe_sample(secret);
        assert!(s.starts_with(r#"{"kind":"Event","objectRef":{"resource":"secrets"},""#) && s.ends_with(CUT_MARK), "{s}");
        assert!(!s.contains("c2VjcmV0"));
        // Escaped inside an AKS envelope's properties.log, and a bare data object.
        let escaped = r#"{"properties":{"log":"{"kind":"Secret","data":{"p":"c2VjcmV0"}"#;
        assert!(!safe_sample(escaped).contains("c2VjcmV0"), "{}", safe_sample(escaped));
        let header = r#"{"headers":{"Authorization":"Bearer eyJhbGciOi"}"#;
        assert!(!safe_sample(header).contains("eyJhbGciOi"));
    }
}
