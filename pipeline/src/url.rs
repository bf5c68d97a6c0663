//! Percent-decoding, for what Crowsnest reads in URL form: source and sink URLs, and the
//! stand-ins' form posts.

/// `%XX` escapes decoded, and `+` read as a space when `plus_is_space` (query strings and
/// forms). None: a bad escape, or bytes that are not UTF-8 once decoded.
pub fn percent_decode(s: &str, plus_is_space: bool) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                // Two hex digits: from_str_radix alone also takes `+1` (found by fuzzing).
                let hex = b.get(i + 1..i + 3).filter(|h| h.iter().all(u8::is_ascii_hexdigit))?;
                out.push(u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?);
                i += 3;
            }
            b'+' if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// `text` with the value of every SAS signature (`sig=…`) replaced: for errors from HTTP
/// clients that quote the request URL, so a SAS token never reaches a log.
pub fn hide_signatures(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.to_ascii_lowercase().find("sig=") {
        out.push_str(&rest[..i + 4]);
        out.push_str("REDACTED");
        let value = &rest[i + 4..];
        let end = value.find(|c: char| c == '&' || c == '"' || c == '\'' || c == ')' || c.is_whitespace()).unwrap_or(value.len());
        rest = &value[end..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::{hide_signatures, percent_decode};

    #[test]
    fn signatures_are_hidden() {
        assert_eq!(
            hide_signatures("error sending request for url (http://h/c?sv=1&SIG=abc%2F&se=2) and sig=x"),
            "error sending request for url (http://h/c?sv=1&SIG=REDACTED&se=2) and sig=REDACTED"
        );
    }

    #[test]
    fn escapes_plus_and_bad_input() {
        assert_eq!(percent_decode("a%20b+c%2Cd", true).as_deref(), Some("a b c,d"));
        assert_eq!(percent_decode("a+b", false).as_deref(), Some("a+b"));
        assert_eq!(percent_decode("%E2%9C%93", false).as_deref(), Some("✓"));
        assert!(percent_decode("50%", true).is_none() && percent_decode("%zz", true).is_none() && percent_decode("%ff", true).is_none());
        assert!(percent_decode("a%+2c", true).is_none() && percent_decode("%-1", false).is_none());
    }
}
