//! A strict, borrowing JSON scanner for the shapes Crowsnest reads most: it finds values
//! without building anything, unescapes strings 16 bytes at a time, and returns None for
//! anything it is not sure of (escaped keys, duplicate fields, deep nesting, malformed values).
//! Its callers ([`super::envelope`], [`super::event_scan`]) then take the serde path, which
//! decides and explains errors: a scanner changes speed, never results. So it must never accept
//! what serde_json refuses.

use std::borrow::Cow;

use super::audit::RawJson;

/// Nesting allowed inside a skipped value; with the envelope's own levels this stays under
/// serde_json's limit of 128, so the fast path never accepts what serde would refuse as too deep.
const MAX_DEPTH: usize = 120;

/// Whether any byte of `w` is `"`, `\\` or below 0x20 (SWAR: the classic has-zero-byte and
/// has-byte-less-than tricks; false positives are impossible, misses too).
#[inline]
fn needs_attention(w: u64) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let has_zero = |x: u64| x.wrapping_sub(ONES) & !x & HIGH;
    let quote = has_zero(w ^ (ONES * b'"' as u64));
    let backslash = has_zero(w ^ (ONES * b'\\' as u64));
    let control = w.wrapping_sub(ONES * 0x20) & !w & HIGH;
    (quote | backslash | control) != 0
}

/// Bit i set when byte i of `v` is a quote, a backslash or a control byte (below 0x20).
///
/// # Safety
/// SSE2 (in the x86_64 baseline).
#[cfg(target_arch = "x86_64")]
#[inline]
unsafe fn special_bytes(v: std::arch::x86_64::__m128i) -> u32 {
    use std::arch::x86_64::*;
    let quote = _mm_set1_epi8(b'"' as i8);
    let backslash = _mm_set1_epi8(b'\\' as i8);
    // Bytes below 0x20: compare as signed after flipping the sign bit.
    let flip = _mm_set1_epi8(i8::MIN);
    let limit = _mm_set1_epi8((0x20u8 ^ 0x80) as i8);
    let hits =
        _mm_or_si128(_mm_or_si128(_mm_cmpeq_epi8(v, quote), _mm_cmpeq_epi8(v, backslash)), _mm_cmplt_epi8(_mm_xor_si128(v, flip), limit));
    _mm_movemask_epi8(hits) as u32
}

/// The first position at or after `i` that may hold a quote, a backslash or a control byte.
/// SSE2 (part of every x86_64) looks at 16 bytes at once; elsewhere, 8 bytes of SWAR.
#[inline]
pub(super) fn skip_plain(s: &[u8], mut i: usize) -> usize {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::*;
        // SAFETY: SSE2 is in the x86_64 baseline; loads are unaligned and stay inside `s`.
        unsafe {
            while i + 16 <= s.len() {
                let mask = special_bytes(_mm_loadu_si128(s.as_ptr().add(i) as *const __m128i));
                if mask != 0 {
                    return i + mask.trailing_zeros() as usize;
                }
                i += 16;
            }
        }
    }
    while let Some(word) = s.get(i..i + 8) {
        if needs_attention(u64::from_le_bytes(word.try_into().expect("8 bytes"))) {
            break;
        }
        i += 8;
    }
    i
}

/// For each 8-bit mask of bytes to drop, the positions of the bytes kept (in order), for
/// `pshufb`; unused lanes read position 0 (their bytes land past what is committed).
#[cfg(target_arch = "x86_64")]
const KEEP: [[u8; 8]; 256] = {
    let mut table = [[0u8; 8]; 256];
    let mut m = 0;
    while m < 256 {
        let (mut j, mut k) = (0, 0);
        while j < 8 {
            if m & (1 << j) == 0 {
                table[m][k] = j as u8;
                k += 1;
            }
            j += 1;
        }
        m += 1;
    }
    table
};

/// The log string escapes every quote of the Event inside it: `{\"kind\":\"Event\",…`.
/// Copies 16-byte blocks whose only specials are such `\"` pairs (and, at the block's end, the
/// backslash of a pair the next block finishes), dropping the backslashes with one shuffle.
/// Stops at the first block with anything else (an end quote, `\\`, `\n`, `\u…`, a control
/// byte) and returns where it got to in `s` and in the output, for the general loop.
///
/// # Safety
/// SSSE3 must be available; `dst` must have room for `o + (s.len() - i) + 16` bytes.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "ssse3")]
unsafe fn skip_escaped_quotes_ssse3(s: &[u8], mut i: usize, dst: *mut u8, mut o: usize) -> (usize, usize) {
    use std::arch::x86_64::*;
    let quote = _mm_set1_epi8(b'"' as i8);
    let backslash = _mm_set1_epi8(b'\\' as i8);
    let flip = _mm_set1_epi8(i8::MIN);
    let limit = _mm_set1_epi8((0x20u8 ^ 0x80) as i8);
    while i + 16 <= s.len() {
        let v = _mm_loadu_si128(s.as_ptr().add(i) as *const __m128i);
        let bs = _mm_movemask_epi8(_mm_cmpeq_epi8(v, backslash)) as u32;
        let q = _mm_movemask_epi8(_mm_cmpeq_epi8(v, quote)) as u32;
        let ctl = _mm_movemask_epi8(_mm_cmplt_epi8(_mm_xor_si128(v, flip), limit)) as u32;
        // A backslash in the last byte starts a pair the next block holds: leave it there.
        let take = if bs & 0x8000 != 0 { 15 } else { 16 };
        let lim = (1u32 << take) - 1;
        let pairs = bs & 0x7fff;
        // The quotes in reach are exactly the bytes after the backslashes: every quote escaped,
        // every backslash escaping a quote in reach (so none escapes a backslash).
        if ctl & lim != 0 || q & lim != pairs << 1 {
            break;
        }
        let (lo, hi) = ((pairs & 0xff) as usize, (pairs >> 8) as usize);
        let shuffle = _mm_set_epi64x(i64::from_le_bytes(KEEP[hi]) + 0x0808_0808_0808_0808, i64::from_le_bytes(KEEP[lo]));
        let packed = _mm_shuffle_epi8(v, shuffle);
        let kept_lo = 8 - lo.count_ones() as usize;
        std::ptr::write_unaligned(dst.add(o) as *mut i64, _mm_cvtsi128_si64(packed));
        std::ptr::write_unaligned(dst.add(o + kept_lo) as *mut i64, _mm_cvtsi128_si64(_mm_srli_si128(packed, 8)));
        i += take;
        o += take - pairs.count_ones() as usize;
    }
    (i, o)
}

pub(super) struct Scanner<'a> {
    /// The document, valid UTF-8: a slice of it cut at ASCII bytes is a `str` without
    /// checking it again.
    pub(super) src: &'a str,
    pub(super) s: &'a [u8],
    pub(super) i: usize,
}

/// What reading a JSON document takes, for the two places a document can lie: as plain text
/// ([`Scanner`]) and escaped inside a JSON string ([`super::escaped::Escaped`]). The structure
/// (objects, arrays, skipping) is written once, here, on top of the token-level methods.
pub(super) trait Json<'a>: Sized {
    /// The next byte after whitespace; a quote token (plain `"` or escaped `\"`) reads as `"`.
    fn peek(&mut self) -> Option<u8>;
    /// Past a one-byte token (`{`, `[`, `,`, `:`…) just peeked.
    fn bump(&mut self);
    fn eat(&mut self, c: u8) -> Option<()>;
    /// A string without escapes, borrowed (keys and most values).
    fn plain_str(&mut self) -> Option<&'a str>;
    /// A string: borrowed when it has no escapes, else unescaped into its own.
    fn string(&mut self) -> Option<Cow<'a, str>>;
    fn skip_string_raw(&mut self) -> Option<()>;
    fn number(&mut self) -> Option<&'a str>;
    /// `true`, `false` or `null`, already peeked.
    fn literal(&mut self, word: &[u8]) -> Option<()>;
    /// Any value but null, as its (unescaped) text.
    fn raw(&mut self) -> Option<RawJson<'a>>;

    /// An object's members: `member` reads each value (its key already read, escape-free).
    fn object(&mut self, mut member: impl FnMut(&mut Self, &'a str) -> Option<()>) -> Option<()> {
        self.eat(b'{')?;
        if self.peek()? == b'}' {
            self.bump();
            return Some(());
        }
        loop {
            let key = self.plain_str()?;
            self.eat(b':')?;
            member(self, key)?;
            if !self.more(b'}')? {
                return Some(());
            }
        }
    }

    /// An array of strings.
    fn strings(&mut self) -> Option<Vec<Cow<'a, str>>> {
        self.eat(b'[')?;
        let mut out = Vec::new();
        if self.peek()? == b']' {
            self.bump();
            return Some(out);
        }
        loop {
            out.push(self.string()?);
            if !self.more(b']')? {
                return Some(out);
            }
        }
    }

    /// Skips one value of any kind, without recursion. Bit d of `objects` says whether the
    /// container at depth d is an object (keys expected) or an array.
    fn skip_value(&mut self) -> Option<()> {
        let mut objects: u128 = 0;
        let mut depth = 0usize;
        loop {
            match self.peek()? {
                open @ (b'{' | b'[') => {
                    if depth == MAX_DEPTH {
                        return None;
                    }
                    let obj = open == b'{';
                    self.bump();
                    if obj {
                        objects |= 1 << depth;
                    } else {
                        objects &= !(1 << depth);
                    }
                    depth += 1;
                    if self.peek()? == (if obj { b'}' } else { b']' }) {
                        self.bump();
                        depth -= 1;
                    } else {
                        if obj {
                            self.key()?;
                        }
                        continue;
                    }
                }
                b'"' => self.skip_string_raw()?,
                b't' => self.literal(b"true")?,
                b'f' => self.literal(b"false")?,
                b'n' => self.literal(b"null")?,
                b'-' | b'0'..=b'9' => {
                    self.number()?;
                }
                _ => return None,
            }
            // After a value: close containers, or go on to the next element.
            loop {
                if depth == 0 {
                    return Some(());
                }
                let obj = objects & (1 << (depth - 1)) != 0;
                match self.peek()? {
                    b',' => {
                        self.bump();
                        if obj {
                            self.key()?;
                        }
                        break;
                    }
                    b'}' if obj => {
                        self.bump();
                        depth -= 1;
                    }
                    b']' if !obj => {
                        self.bump();
                        depth -= 1;
                    }
                    _ => return None,
                }
            }
        }
    }

    /// A key and its colon, inside a skipped object.
    fn key(&mut self) -> Option<()> {
        self.skip_string_raw()?;
        self.eat(b':')
    }

    /// After a member of an object or array closed by `close`: true when a comma says another
    /// follows, false when the container closes here.
    fn more(&mut self, close: u8) -> Option<bool> {
        match self.peek()? {
            b',' => {
                self.bump();
                Some(true)
            }
            c if c == close => {
                self.bump();
                Some(false)
            }
            _ => None,
        }
    }
}

/// A number at `*i`, by JSON's grammar exactly (`-? (0 | [1-9][0-9]*) (.[0-9]+)? ([eE][+-]?[0-9]+)?`):
/// Rust's float parser also takes `01`, `1.` and `.5`, which serde_json refuses.
pub(super) fn number_at<'a>(src: &'a str, i: &mut usize) -> Option<&'a str> {
    let s = src.as_bytes();
    let start = *i;
    let digits = |i: &mut usize| {
        let from = *i;
        while let Some(b'0'..=b'9') = s.get(*i) {
            *i += 1;
        }
        (*i > from).then_some(())
    };
    if s.get(*i) == Some(&b'-') {
        *i += 1;
    }
    match s.get(*i)? {
        b'0' => *i += 1,
        b'1'..=b'9' => digits(i)?,
        _ => return None,
    }
    if s.get(*i) == Some(&b'.') {
        *i += 1;
        digits(i)?;
    }
    if let Some(b'e' | b'E') = s.get(*i) {
        *i += 1;
        if let Some(b'+' | b'-') = s.get(*i) {
            *i += 1;
        }
        digits(i)?;
    }
    src.get(start..*i)
}

impl<'a> Scanner<'a> {
    pub(super) fn new(src: &'a str) -> Self {
        Scanner { src, s: src.as_bytes(), i: 0 }
    }

    pub(super) fn ws(&mut self) {
        while let Some(b' ' | b'\n' | b'\r' | b'\t') = self.s.get(self.i) {
            self.i += 1;
        }
    }

    /// Any one value, as its text.
    pub(super) fn raw_value(&mut self) -> Option<&'a str> {
        self.ws();
        let start = self.i;
        self.skip_value()?;
        self.src.get(start..self.i)
    }

    /// A string, unescaped onto `out`.
    ///
    /// Runs without escapes are copied 16 bytes at a time, stored ahead of the length and
    /// committed up to the first special byte (the unescaped text is never longer than the
    /// escaped one, so reserving the rest of the input bounds every store). A log string
    /// escapes every quote of the audit Event inside it, so runs are short and this loop,
    /// not the copying, is what costs.
    pub(super) fn string_into(&mut self, out: &mut Vec<u8>) -> Option<()> {
        self.eat(b'"')?;
        self.unescape_into(out, false)
    }

    /// Unescapes from here up to a closing quote (consumed), or with `to_end`, up to the end of
    /// the input, where a quote is not allowed.
    fn unescape_into(&mut self, out: &mut Vec<u8>, to_end: bool) -> Option<()> {
        let s = self.s;
        out.reserve(s.len() - self.i + 16);
        let base = out.len();
        let mut o = 0usize; // bytes written after `base`
        let dst = out.as_mut_ptr();
        #[cfg(target_arch = "x86_64")]
        let ssse3 = std::is_x86_feature_detected!("ssse3");
        let result = loop {
            #[cfg(target_arch = "x86_64")]
            if ssse3 {
                // SAFETY: SSSE3 was detected; the same bounds as the stores below.
                (self.i, o) = unsafe { skip_escaped_quotes_ssse3(s, self.i, dst.add(base), o) };
            }
            // Plain bytes up to the next special one.
            #[cfg(target_arch = "x86_64")]
            // SAFETY: SSE2 is in the x86_64 baseline. Loads stay inside `s` (16 bytes left);
            // stores go to `dst + base + o`, with o <= bytes consumed since the opening quote,
            // and the capacity reserved above covers base + all remaining input + 16.
            unsafe {
                use std::arch::x86_64::*;
                while self.i + 16 <= s.len() {
                    let v = _mm_loadu_si128(s.as_ptr().add(self.i) as *const __m128i);
                    _mm_storeu_si128(dst.add(base + o) as *mut __m128i, v);
                    let mask = special_bytes(v);
                    if mask != 0 {
                        let k = mask.trailing_zeros() as usize;
                        self.i += k;
                        o += k;
                        break;
                    }
                    self.i += 16;
                    o += 16;
                }
            }
            // The last bytes (and other targets): one at a time.
            while let Some(&c) = s.get(self.i) {
                if c == b'"' || c == b'\\' || c < 0x20 {
                    break;
                }
                // SAFETY: as above, o <= consumed input < reserved capacity.
                unsafe { *dst.add(base + o) = c };
                self.i += 1;
                o += 1;
            }
            let Some(&c) = s.get(self.i) else { break to_end.then_some(()) };
            let mut put = |bytes: &[u8]| {
                // SAFETY: an escape of n input bytes writes at most n output bytes.
                unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), dst.add(base + o), bytes.len()) };
                o += bytes.len();
            };
            match c {
                b'"' if !to_end => {
                    self.i += 1;
                    break Some(());
                }
                b'\\' => {
                    let Some(&esc) = s.get(self.i + 1) else { break None };
                    self.i += 2;
                    match esc {
                        b'"' => put(b"\""),
                        b'\\' => put(b"\\"),
                        b'/' => put(b"/"),
                        b'b' => put(&[8]),
                        b'f' => put(&[12]),
                        b'n' => put(b"\n"),
                        b'r' => put(b"\r"),
                        b't' => put(b"\t"),
                        b'u' => {
                            let hex = |at: usize| -> Option<u32> { u32::from_str_radix(self.src.get(at..at + 4)?, 16).ok() };
                            let Some(hi) = hex(self.i) else { break None };
                            self.i += 4;
                            let c = if (0xD800..0xDC00).contains(&hi) {
                                if s.get(self.i..self.i + 2) != Some(b"\\u") {
                                    break None;
                                }
                                let Some(lo) = hex(self.i + 2) else { break None };
                                self.i += 6;
                                if !(0xDC00..0xE000).contains(&lo) {
                                    break None;
                                }
                                0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00)
                            } else {
                                hi
                            };
                            // 6 (or 12) input bytes make at most 4 output bytes.
                            let Some(ch) = char::from_u32(c) else { break None };
                            let mut buf = [0u8; 4];
                            put(ch.encode_utf8(&mut buf).as_bytes());
                        }
                        _ => break None,
                    }
                }
                _ => break None, // a raw control character: not JSON
            }
        };
        // SAFETY: bytes base..base + o were all written above.
        unsafe { out.set_len(base + o) };
        result
    }
}

impl<'a> Json<'a> for Scanner<'a> {
    fn peek(&mut self) -> Option<u8> {
        self.ws();
        self.s.get(self.i).copied()
    }

    fn bump(&mut self) {
        self.i += 1;
    }

    fn eat(&mut self, c: u8) -> Option<()> {
        self.ws();
        (self.s.get(self.i) == Some(&c)).then(|| self.i += 1)
    }

    fn plain_str(&mut self) -> Option<&'a str> {
        self.eat(b'"')?;
        let start = self.i;
        self.i = skip_plain(self.s, self.i);
        while let Some(&c) = self.s.get(self.i) {
            match c {
                b'"' => {
                    self.i += 1;
                    // Cut at ASCII quotes: char boundaries (`get` checks, in constant time).
                    return self.src.get(start..self.i - 1);
                }
                b'\\' => return None,
                c if c < 0x20 => return None,
                _ => self.i += 1,
            }
        }
        None
    }

    fn string(&mut self) -> Option<Cow<'a, str>> {
        self.ws();
        let quote = self.i;
        if let Some(plain) = self.plain_str() {
            return Some(Cow::Borrowed(plain));
        }
        // Escapes (or not a string at all): find the end first, so the copy is sized to it.
        self.i = quote;
        self.skip_string_raw()?;
        let mut out = Vec::new();
        unescape_literal(self.src.get(quote..self.i)?, &mut out)?;
        // SAFETY: unescaping copies runs of valid UTF-8 cut at ASCII bytes, plus chars it encodes.
        Some(Cow::Owned(unsafe { String::from_utf8_unchecked(out) }))
    }

    fn skip_string_raw(&mut self) -> Option<()> {
        self.eat(b'"')?;
        loop {
            self.i = skip_plain(self.s, self.i);
            let &c = self.s.get(self.i)?;
            match c {
                b'"' => {
                    self.i += 1;
                    return Some(());
                }
                b'\\' => {
                    // Escapes are checked as serde_json checks them when it skips a string.
                    match self.s.get(self.i + 1)? {
                        b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => self.i += 2,
                        b'u' if self.s.get(self.i + 2..self.i + 6)?.iter().all(u8::is_ascii_hexdigit) => self.i += 6,
                        _ => return None,
                    }
                }
                // skip_plain's last 8-byte step stops at the word, not the byte: step on.
                c if c >= 0x20 => self.i += 1,
                _ => return None, // a control byte
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
        // Null reads as absent to serde: left to it.
        if self.peek()? == b'n' {
            return None;
        }
        self.raw_value().map(RawJson::borrowed)
    }
}

/// Unescapes one JSON string literal (quotes included) onto `out`; None unless `literal` is
/// exactly one valid string. The serde path uses it for `properties.log` too.
pub fn unescape_literal(literal: &str, out: &mut Vec<u8>) -> Option<()> {
    if !literal.starts_with('"') {
        return None; // the scanner would skip whitespace before it (found by fuzzing)
    }
    let mut sc = Scanner::new(literal);
    sc.string_into(out)?;
    (sc.i == literal.len()).then_some(())
}

/// Unescapes the inside of a JSON string literal (no quotes around it) onto `out`; None unless
/// it is valid as one.
pub(super) fn unescape_content(content: &str, out: &mut Vec<u8>) -> Option<()> {
    Scanner::new(content).unescape_into(out, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn swar_check_matches_the_byte_check() {
        let bytes: Vec<u8> = (0u8..=255).collect();
        for b in 0u8..=255 {
            for pos in 0..8 {
                let mut w = [b'a'; 8];
                w[pos] = b;
                let expect = b == b'"' || b == b'\\' || b < 0x20;
                assert_eq!(needs_attention(u64::from_le_bytes(w)), expect, "byte {b:#x} at {pos}");
            }
        }
        // Mixed words of high bytes (UTF-8) and ASCII.
        for w in bytes.chunks(8) {
            let expect = w.iter().any(|&b| b == b'"' || b == b'\\' || b < 0x20);
            assert_eq!(needs_attention(u64::from_le_bytes(w.try_into().unwrap())), expect, "{w:?}");
        }
    }

    #[test]
    fn skip_plain_stops_at_the_first_special_byte() {
        for len in [0usize, 1, 7, 8, 15, 16, 17, 31, 33, 64] {
            for special in [b'"', b'\\', b'\n', 0u8, 0x1f] {
                for pos in 0..len {
                    let mut v = vec![b'x'; len];
                    v[pos] = special;
                    // High (non-ASCII) bytes are plain.
                    if pos > 0 {
                        v[pos - 1] = 0xC3;
                    }
                    let got = skip_plain(&v, 0);
                    assert!(
                        got <= pos && v[got..pos].iter().all(|&b| b != b'"' && b != b'\\' && b >= 0x20),
                        "len {len} pos {pos} got {got}"
                    );
                    // The byte loop after it finishes the job exactly.
                    let mut i = got;
                    while v[i] != special {
                        i += 1;
                    }
                    assert_eq!(i, pos);
                }
            }
        }
    }

    #[test]
    fn unescaping_long_strings_agrees_with_serde_json_at_every_offset() {
        // The copy runs 16 bytes at a time: put each kind of escape at every position of
        // strings around and beyond that width, and check against serde_json.
        let pieces = ["\"", "\\", "\n", "é", "中", "😀", "\u{1}"];
        let mut buf = Vec::new();
        for len in [0usize, 1, 15, 16, 17, 31, 32, 33, 47, 100] {
            for at in 0..=len {
                for piece in pieces {
                    let mut original: String = "abcdefghijklmnopqrstuvwxyz".chars().cycle().take(len).collect();
                    original.insert_str(at, piece);
                    original.push_str(piece);
                    let literal = serde_json::to_string(&original).unwrap();
                    buf.clear();
                    buf.extend_from_slice(b"prefix");
                    unescape_literal(&literal, &mut buf).unwrap();
                    assert_eq!(std::str::from_utf8(&buf[6..]).unwrap(), original, "len {len} at {at} piece {piece:?}");
                }
            }
        }
        // \u escapes, and a string cut off inside a long run.
        buf.clear();
        unescape_literal(&format!("\"{}\\u00e9{}\"", "x".repeat(40), "y".repeat(20)), &mut buf).unwrap();
        assert_eq!(std::str::from_utf8(&buf).unwrap(), format!("{}é{}", "x".repeat(40), "y".repeat(20)));
        assert!(unescape_literal(&format!("\"{}", "x".repeat(40)), &mut Vec::new()).is_none(), "no closing quote");
        assert!(unescape_literal(&format!("\"{}\n{}\"", "x".repeat(20), "y".repeat(20)), &mut Vec::new()).is_none(), "raw newline");
    }

    #[test]
    fn unescaping_mixes_of_quotes_and_backslashes_agrees_with_serde_json() {
        // The escaped-quote fast path drops backslashes 16 bytes at a time: mixes of quotes,
        // backslashes and other escapes, at every alignment, must come out as serde_json says.
        let alphabet = ['a', 'b', '"', '"', '\\', '\n', 'é', ':', '{'];
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut buf = Vec::new();
        for _ in 0..5000 {
            let mut original = String::new();
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let len = (seed >> 33) as usize % 90;
            for _ in 0..len {
                seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                original.push(alphabet[(seed >> 33) as usize % alphabet.len()]);
            }
            let literal = serde_json::to_string(&original).unwrap();
            buf.clear();
            unescape_literal(&literal, &mut buf).unwrap();
            assert_eq!(std::str::from_utf8(&buf).unwrap(), original, "{literal}");
        }
    }

    #[test]
    fn unescaping_agrees_with_serde_json() {
        let mut buf = Vec::new();
        for original in ["plain", "", "q\"uote\\back/slash", "tab\tnl\ncr\r\u{8}\u{c}", "é ü 中 😀", "{\"auditID\":\"x\"}"] {
            buf.clear();
            unescape_literal(&serde_json::to_string(original).unwrap(), &mut buf).unwrap();
            assert_eq!(std::str::from_utf8(&buf).unwrap(), original);
        }
        buf.clear();
        unescape_literal("\"\\ud83d\\ude00 \\u00e9\"", &mut buf).unwrap();
        assert_eq!(std::str::from_utf8(&buf).unwrap(), "😀 é");
        for bad in ["nope", "\"\\ud83d\"", "\"\\x\"", "\"\\u12\"", "\"a\" \"b\""] {
            assert!(unescape_literal(bad, &mut Vec::new()).is_none(), "{bad}");
        }
    }

    /// Whether the scanner takes `text` as exactly one value.
    fn skips(text: &str) -> bool {
        let mut sc = Scanner::new(text);
        sc.skip_value().is_some() && {
            sc.ws();
            sc.i == text.len()
        }
    }

    fn serde_takes(text: &str) -> bool {
        serde_json::from_str::<serde::de::IgnoredAny>(text).is_ok()
    }

    #[test]
    fn skipping_takes_what_serde_takes() {
        for good in ["0", "-0", "12", "-1.5", "1e5", "1E+5", "2.5e-3", "\"a\\\"b\\u00e9\\/\"", "[1,{\"a\":null}]", " true ", "{}"] {
            assert!(skips(good), "the scanner refused {good}");
            assert!(serde_takes(good), "serde refused {good}");
        }
        for bad in ["01", "1.", ".5", "-", "+1", "1e", "1e+", "--1", "0x10", "\"\\x\"", "\"\\u12g4\"", "\"\\u12\"", "[1,]", "tru"] {
            assert!(!skips(bad), "the scanner took {bad}");
            assert!(!serde_takes(bad), "serde took {bad}");
        }
    }

    #[test]
    fn skipping_never_takes_what_serde_refuses() {
        // Random short texts over JSON's punctuation: whatever the scanner takes, serde must take.
        let alphabet: Vec<char> = "01-+.eE\"\\u{}[],:aftrnl x".chars().collect();
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let (mut taken, mut text) = (0, String::new());
        for _ in 0..200_000 {
            text.clear();
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let len = 1 + (seed >> 33) as usize % 8;
            for _ in 0..len {
                seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                text.push(alphabet[(seed >> 33) as usize % alphabet.len()]);
            }
            if skips(&text) {
                assert!(serde_takes(&text), "the scanner took {text:?}, serde refuses it");
                taken += 1;
            }
        }
        assert!(taken > 1000, "the texts should include many valid ones ({taken})");
    }
}
