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

#[cfg(test)]
mod tests {
    use super::percent_decode;

    #[test]
    fn escapes_plus_and_bad_input() {
        assert_eq!(percent_decode("a%20b+c%2Cd", true).as_deref(), Some("a b c,d"));
        assert_eq!(percent_decode("a+b", false).as_deref(), Some("a+b"));
        assert_eq!(percent_decode("%E2%9C%93", false).as_deref(), Some("✓"));
        assert!(percent_decode("50%", true).is_none() && percent_decode("%zz", true).is_none() && percent_decode("%ff", true).is_none());
        assert!(percent_decode("a%+2c", true).is_none() && percent_decode("%-1", false).is_none());
    }
}
