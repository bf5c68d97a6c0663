//! Cuts a pretty-printed top-level JSON array into its elements as the bytes arrive, so a file
//! of a hundred thousand rows (`az monitor log-analytics query -o json`, PowerShell's
//! `ConvertTo-Json`, a portal export) is read an element at a time, never held whole: each
//! element is a document of its own, under the document size limit on its own.
//!
//! It only tracks strings, escapes and nesting; whether an element is valid JSON is the
//! decoder's to say.

use std::ops::Range;

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Before the opening `[` (a byte-order mark, white space).
    #[default]
    Before,
    Inside,
    Done,
}

#[derive(Debug, Default)]
pub struct ArraySplitter {
    state: State,
    depth: u32,
    in_string: bool,
    escape: bool,
}

/// What one [`ArraySplitter::step`] found in a block of bytes.
#[derive(Debug, PartialEq, Eq)]
pub struct Step {
    /// The bytes of the block that belong to the current element.
    pub take: Range<usize>,
    /// How many bytes of the block were looked at (the next step starts after them).
    pub consumed: usize,
    /// The current element ended (at a top-level `,`, or at the closing `]`, then `Some(true)`).
    pub cut: Option<bool>,
}

impl ArraySplitter {
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Scans `bytes` up to the end of the current element or of the block.
    pub fn step(&mut self, bytes: &[u8]) -> Step {
        let mut i = 0;
        if self.state == State::Before {
            match bytes.iter().position(|&b| b == b'[') {
                Some(open) => {
                    i = open + 1;
                    self.state = State::Inside;
                    self.depth = 1;
                }
                None => return Step { take: 0..0, consumed: bytes.len(), cut: None },
            }
        }
        if self.state == State::Done {
            return Step { take: 0..0, consumed: 0, cut: None };
        }
        let start = i;
        while i < bytes.len() {
            let b = bytes[i];
            if self.in_string {
                if self.escape {
                    self.escape = false;
                } else if b == b'\\' {
                    self.escape = true;
                } else if b == b'"' {
                    self.in_string = false;
                }
            } else {
                match b {
                    b'"' => self.in_string = true,
                    b'[' | b'{' => self.depth += 1,
                    b']' | b'}' => {
                        self.depth = self.depth.saturating_sub(1);
                        if self.depth == 0 {
                            self.state = State::Done;
                            return Step { take: start..i, consumed: i + 1, cut: Some(true) };
                        }
                    }
                    b',' if self.depth == 1 => return Step { take: start..i, consumed: i + 1, cut: Some(false) },
                    _ => {}
                }
            }
            i += 1;
        }
        Step { take: start..i, consumed: i, cut: None }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The elements of `text`, fed in blocks of `block` bytes.
    fn elements(text: &str, block: usize) -> Vec<String> {
        let mut s = ArraySplitter::default();
        let (mut out, mut current) = (Vec::new(), Vec::new());
        for chunk in text.as_bytes().chunks(block) {
            let mut at = 0;
            while at < chunk.len() && !s.is_done() {
                let step = s.step(&chunk[at..]);
                current.extend_from_slice(&chunk[at..][step.take]);
                if step.cut.is_some() {
                    out.push(String::from_utf8(std::mem::take(&mut current)).unwrap().trim().to_string());
                }
                at += step.consumed;
            }
        }
        out
    }

    #[test]
    fn elements_whatever_the_blocks() {
        let text = "\u{feff}[\n  {\"a\": \"x,]}\\\"[{\", \"b\": [1, 2, {\"c\": 3}]},\n  {\"d\": \"\\\\\"},\n  [4, 5],\n  6\n]\n";
        let want = vec![r#"{"a": "x,]}\"[{", "b": [1, 2, {"c": 3}]}"#, r#"{"d": "\\"}"#, "[4, 5]", "6"];
        for block in [1, 2, 3, 7, 64, 4096] {
            assert_eq!(elements(text, block), want, "block {block}");
        }
        assert_eq!(elements("[]", 1), vec![""]);
    }
}
