//! The audit Event of an AKS record read where it lies: escaped inside `properties.log`, a JSON
//! string. Every quote of the Event is `\"` there; the scanner takes `\"` as the quote token,
//! so the Event's strings are borrowed from the document as they are, and no unescaped copy of
//! the whole log is made. Unescaping it first cost about a seventh of the decoding time.
//!
//! Inside the Event's own strings, an escape is escaped again (`\\\"` is the Event's `\"`);
//! such a string, rare, is unescaped twice into its own copy. Anything this scanner is not sure
//! of returns None, and the caller unescapes the log and reads it as before: escapes of the
//! holding string other than `\"`, `\\`, `\/` and whitespace (`\u003c`, as Go writes `<`, for
//! instance), and everything [`super::event_scan`] leaves to serde.

use std::borrow::Cow;

use super::audit::{AuditEvent, RawJson};
use super::scanner::{number_at, skip_plain, unescape_content, unescape_literal, Json};

pub(super) struct Escaped<'a> {
    src: &'a str,
    s: &'a [u8],
    i: usize,
}

/// Reads the audit Event held by the JSON string whose opening quote is at `quote` in `doc`.
/// Returns it and the position of the string's closing quote; None when the string does not
/// hold exactly one Event this scanner is sure of.
pub(super) fn event_in_string(doc: &str, quote: usize) -> Option<(AuditEvent<'_>, usize)> {
    let mut sc = Escaped { src: doc, s: doc.as_bytes(), i: quote + 1 };
    if sc.peek()? != b'{' {
        return None;
    }
    let ev = super::event_scan::event(&mut sc)?;
    sc.ws();
    (sc.s.get(sc.i) == Some(&b'"')).then_some((ev, sc.i))
}

impl Escaped<'_> {
    /// The Event's whitespace: spaces, and newlines and tabs, which the holding string escapes.
    fn ws(&mut self) {
        loop {
            match self.s.get(self.i) {
                Some(b' ') => self.i += 1,
                Some(b'\\') if matches!(self.s.get(self.i + 1), Some(b'n' | b'r' | b't')) => self.i += 2,
                _ => return,
            }
        }
    }
}

impl<'a> Json<'a> for Escaped<'a> {
    fn peek(&mut self) -> Option<u8> {
        self.ws();
        match *self.s.get(self.i)? {
            b'\\' => (self.s.get(self.i + 1) == Some(&b'"')).then_some(b'"'),
            b'"' => None, // the holding string ends inside the Event
            c => Some(c),
        }
    }

    fn bump(&mut self) {
        self.i += 1;
    }

    fn eat(&mut self, c: u8) -> Option<()> {
        (self.peek()? == c).then(|| self.i += if c == b'"' { 2 } else { 1 })
    }

    fn plain_str(&mut self) -> Option<&'a str> {
        self.eat(b'"')?;
        let start = self.i;
        loop {
            self.i = skip_plain(self.s, self.i);
            match *self.s.get(self.i)? {
                // `\"` closes the string; any other escape is not plain.
                b'\\' if self.s.get(self.i + 1) == Some(&b'"') => {
                    self.i += 2;
                    return self.src.get(start..self.i - 2);
                }
                b'\\' | b'"' => return None,
                c if c < 0x20 => return None,
                _ => self.i += 1, // skip_plain's last step stops at a word, not a byte
            }
        }
    }

    fn string(&mut self) -> Option<Cow<'a, str>> {
        self.ws();
        let open = self.i;
        if let Some(plain) = self.plain_str() {
            return Some(Cow::Borrowed(plain));
        }
        self.i = open;
        self.skip_string_raw()?;
        let inside = self.s.get(open + 2..self.i - 2)?;
        if let Some(text) = unescape_twice_common(inside) {
            return String::from_utf8(text).ok().map(Cow::Owned);
        }
        // Twice: the holding string's escapes give the Event's literal, whose own give the text.
        let mut literal = Vec::new();
        unescape_content(self.src.get(open..self.i)?, &mut literal)?;
        let mut text = Vec::new();
        unescape_literal(std::str::from_utf8(&literal).ok()?, &mut text)?;
        String::from_utf8(text).ok().map(Cow::Owned)
    }

    fn skip_string_raw(&mut self) -> Option<()> {
        self.eat(b'"')?;
        loop {
            self.i = skip_plain(self.s, self.i);
            match *self.s.get(self.i)? {
                b'\\' => match *self.s.get(self.i + 1)? {
                    b'"' => {
                        self.i += 2;
                        return Some(());
                    }
                    // `\\`: an escape of the Event's string. What it escapes follows, itself
                    // escaped when a quote or a backslash. Checked as serde_json checks escapes.
                    b'\\' => match *self.s.get(self.i + 2)? {
                        b'\\' if matches!(self.s.get(self.i + 3), Some(b'"' | b'\\')) => self.i += 4,
                        b'/' | b'b' | b'f' | b'n' | b'r' | b't' => self.i += 3,
                        b'u' if self.s.get(self.i + 3..self.i + 7)?.iter().all(u8::is_ascii_hexdigit) => self.i += 7,
                        _ => return None,
                    },
                    b'/' => self.i += 2, // `\/`: a plain slash
                    _ => return None,    // \n (not allowed in a string), \u…: the slow path decides
                },
                b'"' => return None, // the holding string ends inside the Event
                c if c < 0x20 => return None,
                _ => self.i += 1,
            }
        }
    }

    fn number(&mut self) -> Option<&'a str> {
        self.ws();
        number_at(self.src, &mut self.i)
    }

    fn literal(&mut self, word: &[u8]) -> Option<()> {
        (self.s.get(self.i..self.i + word.len())? == word).then(|| self.i += word.len())
    }

    fn raw(&mut self) -> Option<RawJson<'a>> {
        if self.peek()? == b'n' {
            return None;
        }
        let start = self.i;
        self.skip_value()?;
        // The value's text as serde would see it in the unescaped log.
        let mut text = Vec::new();
        unescape_content(self.src.get(start..self.i)?, &mut text)?;
        String::from_utf8(text).ok().map(RawJson::owned)
    }
}

/// The inside of one of the Event's strings, unescaped in one pass when its escapes are the
/// common ones (an authorization reason quotes its binding: `\\\"name\\\"`); None for any
/// other (`\u…`), which the general path handles.
fn unescape_twice_common(inside: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(inside.len());
    let mut k = 0;
    while let Some(&c) = inside.get(k) {
        if c != b'\\' {
            out.push(c);
            k += 1;
            continue;
        }
        let (c, len) = match (inside.get(k + 1), inside.get(k + 2), inside.get(k + 3)) {
            (Some(b'/'), ..) => (b'/', 2),
            // `\\` and a quote or backslash escaped again: the Event's `\"` or `\\`.
            (Some(b'\\'), Some(b'\\'), Some(&c @ (b'"' | b'\\'))) => (c, 4),
            (Some(b'\\'), Some(b'/'), _) => (b'/', 3),
            (Some(b'\\'), Some(b'b'), _) => (8, 3),
            (Some(b'\\'), Some(b'f'), _) => (12, 3),
            (Some(b'\\'), Some(b'n'), _) => (b'\n', 3),
            (Some(b'\\'), Some(b'r'), _) => (b'\r', 3),
            (Some(b'\\'), Some(b't'), _) => (b'\t', 3),
            _ => return None,
        };
        out.push(c);
        k += len;
    }
    Some(out)
}
