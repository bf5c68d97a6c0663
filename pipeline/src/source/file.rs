//! Files and stdin: JSON lines (one envelope, Event or EventList per line) or one whole JSON
//! document (for example a pretty-printed EventList), plain or gzip, detected by content.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use flate2::read::MultiGzDecoder;

use crate::deadletter::SAMPLE_BYTES;

use super::{ByteCounter, Chunk, DocRef, FramingLimits, Source};

/// Counts the bytes that go through, before any decompression.
struct Counting<R> {
    inner: R,
    counter: ByteCounter,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.counter.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// What `read_line` returns when a followed file has nothing new yet.
const IDLE: u64 = u64::MAX;

/// How long a followed file's reader waits at its end before looking again. Every wait is
/// latency added to an alert whose event was just written (`bench --latency`): a stat-free
/// read of a few bytes 100 times a second costs nothing measurable, 250 ms waits cost a
/// quarter second at p99.
const FOLLOW_POLL: Duration = Duration::from_millis(10);

#[derive(PartialEq)]
enum Mode {
    Unknown,
    Lines,
    /// A pretty-printed top-level array, read an element at a time.
    Array,
    Done,
}

pub struct FileSource {
    name: Arc<str>,
    reader: Box<dyn BufRead + Send>,
    limits: FramingLimits,
    mode: Mode,
    line: u64,
    size: Option<u64>,
    /// Keep reading at end of file (tail -f) instead of ending.
    follow: bool,
    stop: Option<Arc<std::sync::atomic::AtomicBool>>,
    /// A first line already read while detecting the mode.
    pending: Option<(Vec<u8>, Option<u64>)>,
    /// The start of a line the last block ended in the middle of.
    carry: Vec<u8>,
    /// Buffers of chunks already decoded, to read the next blocks into.
    spare: Vec<Vec<u8>>,
    /// In `Mode::Array`: where the array's elements end, and how many were cut.
    array: super::json_array::ArraySplitter,
    elements: u64,
}

fn open_reader(raw: Box<dyn Read + Send>, counter: ByteCounter) -> io::Result<Box<dyn BufRead + Send>> {
    let mut buffered = BufReader::with_capacity(256 << 10, Counting { inner: raw, counter });
    let gz = buffered.fill_buf()?.starts_with(&[0x1f, 0x8b]);
    Ok(if gz { Box::new(BufReader::with_capacity(256 << 10, MultiGzDecoder::new(buffered))) } else { Box::new(buffered) })
}

impl FileSource {
    pub fn open(path: &Path, limits: FramingLimits, counter: ByteCounter) -> io::Result<FileSource> {
        let file = File::open(path).map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
        let size = file.metadata().ok().map(|m| m.len());
        let reader = open_reader(Box::new(file), counter)?;
        Ok(Self::with_reader(format!("file:{}", path.display()), reader, limits, size))
    }

    pub fn stdin(limits: FramingLimits, counter: ByteCounter) -> io::Result<FileSource> {
        let reader = open_reader(Box::new(io::stdin()), counter)?;
        Ok(Self::with_reader("stdin".into(), reader, limits, None))
    }

    /// Bytes already in memory (the bundled sample, tests).
    pub fn from_bytes(name: &str, bytes: &'static [u8], limits: FramingLimits, counter: ByteCounter) -> io::Result<FileSource> {
        Self::from_reader(name, Box::new(bytes), Some(bytes.len() as u64), limits, counter)
    }

    /// Any reader, plain or gzip (detected by content), of `size` bytes when known.
    pub fn from_reader(
        name: &str,
        raw: Box<dyn Read + Send>,
        size: Option<u64>,
        limits: FramingLimits,
        counter: ByteCounter,
    ) -> io::Result<FileSource> {
        let reader = open_reader(raw, counter)?;
        Ok(Self::with_reader(name.into(), reader, limits, size))
    }

    fn with_reader(name: String, reader: Box<dyn BufRead + Send>, limits: FramingLimits, size: Option<u64>) -> FileSource {
        FileSource {
            name: name.into(),
            reader,
            limits,
            mode: Mode::Unknown,
            line: 0,
            size,
            follow: false,
            stop: None,
            pending: None,
            carry: Vec::new(),
            spare: Vec::new(),
            array: Default::default(),
            elements: 0,
        }
    }

    /// Tail the file: at its end, wait for more until `stop` is set.
    pub fn follow(mut self, stop: Arc<std::sync::atomic::AtomicBool>) -> Self {
        self.follow = true;
        self.stop = Some(stop);
        self
    }

    /// Reads one line into `out` (without the newline), keeping at most `max` bytes; returns
    /// the full length, or None at end of input.
    fn read_line(&mut self, out: &mut Vec<u8>, max: usize) -> io::Result<Option<u64>> {
        let mut total: u64 = 0;
        let mut any = false;
        loop {
            let buf = match self.reader.fill_buf() {
                Ok(b) => b,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if buf.is_empty() {
                if self.follow && !self.stop.as_ref().is_some_and(|s| s.load(Ordering::Relaxed)) {
                    std::thread::sleep(FOLLOW_POLL);
                    if any {
                        continue; // a partial last line: wait for the writer to finish it
                    }
                    return Ok(Some(IDLE)); // idle tick: lets the caller hand over a partial chunk
                }
                return Ok(any.then_some(total));
            }
            any = true;
            let (take, done) = match memchr::memchr(b'\n', buf) {
                Some(i) => (i, true),
                None => (buf.len(), false),
            };
            let room = max.saturating_sub(out.len());
            out.extend_from_slice(&buf[..take.min(room)]);
            total += take as u64;
            self.reader.consume(if done { take + 1 } else { take });
            if done {
                if out.last() == Some(&b'\r') {
                    out.pop();
                }
                return Ok(Some(total));
            }
        }
    }

    /// Decides between JSON lines and one whole document from the first line.
    fn detect(&mut self) -> io::Result<Option<Chunk>> {
        let mut first = Vec::new();
        let max = self.limits.max_document_bytes;
        let len = loop {
            match self.read_line(&mut first, max)? {
                None => {
                    self.mode = Mode::Done;
                    return Ok(None);
                }
                Some(IDLE) => continue,
                Some(len) => break len,
            }
        };
        let incomplete = len as usize <= max && super::starts_multiline_document(&first);
        if !incomplete {
            self.mode = Mode::Lines;
            self.pending = Some((first, (len as usize > max).then_some(len)));
            return self.next_lines();
        }
        if super::strip_bom(first.trim_ascii_start()).trim_ascii_start().starts_with(b"[") {
            // An array spread over lines: its elements, one at a time (it may be any size).
            self.mode = Mode::Array;
            self.carry = first;
            self.carry.push(b'\n');
            return self.next_array();
        }
        // A document spread over lines: read the rest, up to the limit.
        let mut buf = first;
        buf.push(b'\n');
        let room = (max + 1).saturating_sub(buf.len());
        let mut limited = (&mut self.reader).take(room as u64);
        limited.read_to_end(&mut buf)?;
        let mut oversize = None;
        if buf.len() > max {
            let rest = io::copy(&mut self.reader, &mut io::sink())?;
            oversize = Some(buf.len() as u64 + rest);
            buf.truncate(SAMPLE_BYTES);
        }
        self.mode = Mode::Done;
        self.line = 1;
        // Several pretty-printed documents may follow one another (records saved one by one).
        let docs = if oversize.is_some() {
            vec![DocRef { index: 1, start: 0, end: buf.len(), oversize }]
        } else {
            let mut line = 1u64;
            let mut counted = 0;
            super::split_documents(&buf)
                .into_iter()
                .map(|(start, end)| {
                    // Name the line the document's first character is on.
                    let first = start + buf[start..end].iter().position(|b| !b.is_ascii_whitespace()).unwrap_or(0);
                    line += memchr::memchr_iter(b'\n', &buf[counted..first]).count() as u64;
                    counted = first;
                    DocRef { index: line, start, end, oversize: None }
                })
                .collect()
        };
        Ok(Some(Chunk { source: self.name.clone(), unit: "document starting at line", buf, docs, offsets: None, opens_stream: false }))
    }

    /// A chunk with no documents yet, its buffer one a decoded chunk gave back (see `recycle`).
    fn empty_chunk(&mut self, unit: &'static str) -> Chunk {
        let mut buf = self.spare.pop().unwrap_or_default();
        buf.clear();
        Chunk { source: self.name.clone(), unit, buf, docs: Vec::new(), offsets: None, opens_stream: false }
    }

    /// Reads the next block of whole lines straight into the chunk's buffer (no per-line
    /// copy), keeping a partial last line for the next call. A line longer than the limit is
    /// not buffered: its first bytes become the sample of a `too_large` document and the rest is
    /// skipped.
    fn next_lines(&mut self) -> io::Result<Option<Chunk>> {
        let mut chunk = self.empty_chunk("line");
        chunk.buf.extend_from_slice(&self.carry);
        self.carry.clear();
        let max = self.limits.max_document_bytes;
        if let Some((first, oversize)) = self.pending.take() {
            // The first line, read while detecting the mode.
            self.line += 1;
            let end = if oversize.is_some() { first.len().min(SAMPLE_BYTES) } else { first.len() };
            let mut buf = first;
            buf.truncate(end);
            buf.push(b'\n');
            buf.extend_from_slice(&chunk.buf);
            chunk.buf = buf;
            chunk.docs.push(DocRef { index: self.line, start: 0, end, oversize });
        }
        let first_line_end = chunk.docs.first().map_or(0, |d| d.end + 1);
        let mut scanned = first_line_end;
        let mut eof = false;
        // Fill to the chunk size, and on until a newline ends the buffer (or the line is too long).
        loop {
            let have_newline = memchr::memrchr(b'\n', &chunk.buf[scanned..]).is_some();
            if (chunk.buf.len() >= self.limits.chunk_bytes && have_newline) || eof {
                break;
            }
            let partial_start = memchr::memrchr(b'\n', &chunk.buf[first_line_end..]).map_or(first_line_end, |i| first_line_end + i + 1);
            if chunk.buf.len() - partial_start > max {
                // The line being read is over the limit: cut it off and skip the rest of it.
                let seen = (chunk.buf.len() - partial_start) as u64;
                chunk.buf.truncate(partial_start + SAMPLE_BYTES);
                let skipped = self.skip_line()?;
                self.line_numbers_and_docs(&mut chunk, first_line_end, partial_start);
                self.line += 1;
                let end = chunk.buf.len();
                chunk.docs.push(DocRef { index: self.line, start: partial_start, end, oversize: Some(seen + skipped) });
                return Ok(Some(chunk));
            }
            scanned = partial_start;
            let want = (self.limits.chunk_bytes.max(chunk.buf.len() + (64 << 10)) - chunk.buf.len()) as u64;
            // Room for the whole block up front: read_to_end would otherwise grow the buffer
            // by doubling, copying each chunk about twice over.
            chunk.buf.reserve(want as usize);
            let n = (&mut self.reader).take(want).read_to_end(&mut chunk.buf)?;
            if n == 0 {
                if self.follow && !self.stop.as_ref().is_some_and(|s| s.load(Ordering::Relaxed)) {
                    if memchr::memchr(b'\n', &chunk.buf[first_line_end..]).is_some() || !chunk.docs.is_empty() {
                        break; // hand over the whole lines we have; wait for more next time
                    }
                    std::thread::sleep(FOLLOW_POLL);
                    continue;
                }
                eof = true;
            }
        }
        // Everything after the last newline waits for the next block (unless the input ended).
        let cut = if eof { chunk.buf.len() } else { memchr::memrchr(b'\n', &chunk.buf).map_or(0, |i| i + 1).max(first_line_end) };
        self.carry.extend_from_slice(&chunk.buf[cut..]);
        chunk.buf.truncate(cut);
        if eof {
            self.mode = Mode::Done;
        }
        let len = chunk.buf.len();
        self.line_numbers_and_docs(&mut chunk, first_line_end, len);
        Ok((!chunk.docs.is_empty()).then_some(chunk))
    }

    /// The next elements of a pretty-printed top-level array (see [`super::json_array`]), each a
    /// document of its own; an element over the limit is not buffered: its first bytes become
    /// the sample of a `too_large` document. What follows the array's end is read as one more
    /// document, for the decoder to explain, unless it is blank.
    fn next_array(&mut self) -> io::Result<Option<Chunk>> {
        let mut chunk = self.empty_chunk("array element");
        let max = self.limits.max_document_bytes;
        let mut start = 0;
        let mut seen: u64 = 0;
        loop {
            let from_carry = !self.carry.is_empty();
            let block: &[u8] = if from_carry { &self.carry } else { self.reader.fill_buf()? };
            if block.is_empty() || self.array.is_done() {
                break;
            }
            let step = self.array.step(block);
            let take = &block[step.take.clone()];
            seen += take.len() as u64;
            let room = (max + 1).saturating_sub(chunk.buf.len() - start);
            chunk.buf.extend_from_slice(&take[..take.len().min(room)]);
            let consumed = step.consumed;
            if from_carry {
                self.carry.drain(..consumed);
            } else {
                self.reader.consume(consumed);
            }
            if step.cut.is_some() {
                self.push_element(&mut chunk, start, seen);
                start = chunk.buf.len();
                seen = 0;
                if chunk.buf.len() >= self.limits.chunk_bytes {
                    return Ok(Some(chunk));
                }
            }
        }
        if !self.array.is_done() {
            // The input ended inside the array: what was read of the last element is a document
            // too (the decoder says it is cut short).
            if seen > 0 {
                self.push_element(&mut chunk, start, seen);
            }
        } else {
            // Anything after the closing bracket other than white space.
            let mut rest = std::mem::take(&mut self.carry);
            (&mut self.reader).take((max + 1) as u64).read_to_end(&mut rest)?;
            if !rest.trim_ascii().is_empty() {
                let from = chunk.buf.len();
                let over = (rest.len() > max).then(|| rest.len() as u64 + io::copy(&mut self.reader, &mut io::sink()).unwrap_or(0));
                rest.truncate(if over.is_some() { SAMPLE_BYTES } else { rest.len() });
                chunk.buf.extend_from_slice(&rest);
                self.elements += 1;
                chunk.docs.push(DocRef { index: self.elements, start: from, end: chunk.buf.len(), oversize: over });
            }
        }
        self.mode = Mode::Done;
        Ok((!chunk.docs.is_empty()).then_some(chunk))
    }

    /// Closes the element at `chunk.buf[start..]`, `seen` bytes long in the input.
    fn push_element(&mut self, chunk: &mut Chunk, start: usize, seen: u64) {
        self.elements += 1;
        let oversize = (seen > self.limits.max_document_bytes as u64).then_some(seen);
        if oversize.is_some() {
            chunk.buf.truncate(start + SAMPLE_BYTES);
        }
        chunk.docs.push(DocRef { index: self.elements, start, end: chunk.buf.len(), oversize });
    }

    /// Adds a document per line of `chunk.buf[from..to]`.
    fn line_numbers_and_docs(&mut self, chunk: &mut Chunk, from: usize, to: usize) {
        let mut start = from;
        while start < to {
            let end = memchr::memchr(b'\n', &chunk.buf[start..to]).map_or(to, |i| start + i);
            self.line += 1;
            let line_end = if end > start && chunk.buf[end - 1] == b'\r' { end - 1 } else { end };
            // A whole line over the limit that happened to fit in the block is refused all the same.
            let len = line_end - start;
            let (line_end, oversize) =
                if len > self.limits.max_document_bytes { (start + SAMPLE_BYTES.min(len), Some(len as u64)) } else { (line_end, None) };
            chunk.docs.push(DocRef { index: self.line, start, end: line_end, oversize });
            start = end + 1;
        }
    }

    /// Skips to the end of the current line; returns the bytes skipped.
    fn skip_line(&mut self) -> io::Result<u64> {
        let mut skipped = 0u64;
        loop {
            let buf = self.reader.fill_buf()?;
            if buf.is_empty() {
                return Ok(skipped);
            }
            match memchr::memchr(b'\n', buf) {
                Some(i) => {
                    skipped += i as u64;
                    self.reader.consume(i + 1);
                    return Ok(skipped);
                }
                None => {
                    let n = buf.len();
                    skipped += n as u64;
                    self.reader.consume(n);
                }
            }
        }
    }
}

impl Source for FileSource {
    fn name(&self) -> &str {
        &self.name
    }

    fn next_chunk(&mut self) -> io::Result<Option<Chunk>> {
        match self.mode {
            Mode::Unknown => self.detect(),
            Mode::Lines => self.next_lines(),
            Mode::Array => self.next_array(),
            Mode::Done => Ok(None),
        }
    }

    fn size_hint(&self) -> Option<u64> {
        self.size
    }

    fn recycle(&mut self, buf: Vec<u8>) {
        // A few suffice: the pipeline holds only so many chunks at once.
        if self.spare.len() < 4 {
            self.spare.push(buf);
        }
    }
}

/// What `open_paths` opened: the sources in reading order, and what walking directories found.
#[derive(Default)]
pub struct Opened {
    pub sources: Vec<Box<dyn Source>>,
    /// Files passed over in directories (not JSON, JSON lines or gzip by their name).
    pub skipped: usize,
    /// Several files of one directory cover the same period (see [`super::archive::Tree`]).
    pub overlap: Option<i64>,
}

impl Opened {
    /// The lateness a replay needs: where several files of a directory cover the same period
    /// (the clusters of one archive side by side), their events interleave by that much.
    pub fn lateness(&self) -> i64 {
        self.overlap.unwrap_or(0)
    }

    /// What a person replaying the directories should know.
    pub fn notices(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.skipped > 0 {
            out.push(format!("{} files in the directories are not JSON, JSON lines or gzip by their names: passed over", self.skipped));
        }
        if let Some(overlap) = self.overlap {
            let hours = overlap / 3_600_000_000_000;
            out.push(format!(
                "several files cover the same {hours} h (clusters or categories side by side): windows wait that long for late events"
            ));
        }
        out
    }
}

/// Sources for paths, `-` meaning stdin; a directory stands for every input file below it, in
/// the time order its folder names give (see [`super::archive`]).
pub fn open_paths(paths: &[PathBuf], limits: &FramingLimits, counter: &ByteCounter) -> io::Result<Opened> {
    let mut opened = Opened::default();
    for p in paths {
        if p.as_os_str() == "-" {
            opened.sources.push(Box::new(FileSource::stdin(limits.clone(), counter.clone())?));
        } else if p.is_dir() {
            let tree = super::archive::walk(p)?;
            if tree.files.is_empty() {
                return Err(io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("{}: no JSON, JSON lines or gzip files below it", p.display()),
                ));
            }
            opened.skipped += tree.skipped;
            opened.overlap = opened.overlap.max(tree.overlap);
            for f in tree.files {
                opened.sources.push(Box::new(super::archive::LazyFile::new(f, limits.clone(), counter.clone())));
            }
        } else {
            opened.sources.push(Box::new(FileSource::open(p, limits.clone(), counter.clone())?));
        }
    }
    Ok(opened)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The documents a file source cuts `input` into.
    fn frame(input: &'static [u8], chunk_bytes: usize, max: usize) -> Vec<(u64, String, Option<u64>)> {
        let limits = FramingLimits { max_document_bytes: max, chunk_bytes };
        let mut src = FileSource::from_bytes("t", input, limits, Default::default()).unwrap();
        let mut out = Vec::new();
        while let Some(c) = src.next_chunk().unwrap() {
            for d in &c.docs {
                out.push((d.index, String::from_utf8_lossy(&c.buf[d.start..d.end]).into_owned(), d.oversize));
            }
            // Every buffer comes back, as the pipeline returns them, with stale bytes in it.
            let mut used = c.buf;
            used.fill(b'#');
            src.recycle(used);
        }
        out
    }

    #[test]
    fn lines_survive_any_block_size() {
        let text: &'static str = Box::leak(
            (0..200).map(|i| format!("{{\"n\":{i},\"pad\":\"{}\"}}", "x".repeat(i % 37))).collect::<Vec<_>>().join("\n").into_boxed_str(),
        );
        for chunk in [1, 7, 64, 1000, 1 << 20] {
            let got = frame(text.as_bytes(), chunk, 1 << 20);
            assert_eq!(got.len(), 200, "chunk {chunk}");
            for (i, (line, doc, over)) in got.iter().enumerate() {
                assert_eq!(*line, i as u64 + 1);
                assert!(doc.starts_with(&format!("{{\"n\":{i},")) && doc.ends_with('}'), "chunk {chunk}: {doc}");
                assert!(over.is_none());
            }
        }
    }

    #[test]
    fn a_pretty_printed_array_is_read_an_element_at_a_time() {
        let rows: Vec<String> =
            (0..300).map(|i| format!("  {{\n    \"n\": {i},\n    \"pad\": \"{}\"\n  }}", "x,]".repeat(i % 40))).collect();
        let big = format!("  {{\"big\": \"{}\"}}", "y".repeat(5000));
        let text: &'static str = Box::leak(format!("\u{feff}[\n{},\n{big}\n]\n", rows.join(",\n")).into_boxed_str());
        for chunk in [64, 1000, 1 << 20] {
            // Each element is under the 1,000-byte limit but the whole array is far over it.
            let got = frame(text.as_bytes(), chunk, 1000);
            assert_eq!(got.len(), 301, "chunk {chunk}");
            for (i, (index, doc, over)) in got.iter().take(300).enumerate() {
                assert_eq!(*index, i as u64 + 1);
                let v: serde_json::Value = serde_json::from_str(doc).unwrap_or_else(|e| panic!("element {i}: {e}: {doc}"));
                assert_eq!(v["n"], i);
                assert!(over.is_none());
            }
            assert_eq!(got[300].2, Some(big.len() as u64 + 2), "the oversize element is cut, its length (with its line breaks) counted");
        }
        // Cut short: the last element is still handed over, for the decoder to explain.
        let cut: &'static str = "[\n {\"a\": 1},\n {\"b\": ";
        let got = frame(cut.as_bytes(), 1 << 20, 1000);
        assert_eq!(got.iter().map(|d| d.1.trim().to_string()).collect::<Vec<_>>(), ["{\"a\": 1}", "{\"b\":"]);
    }

    #[test]
    fn crlf_and_oversize_lines() {
        let long: &'static str = Box::leak(format!("{{\"a\":\"{}\"}}", "y".repeat(5000)).into_boxed_str());
        let input: &'static str = Box::leak(format!("{{\"n\":1}}\r\n{long}\n{{\"n\":3}}\n{long}").into_boxed_str());
        for chunk in [16, 100_000] {
            let got = frame(input.as_bytes(), chunk, 1000);
            assert_eq!(got.len(), 4, "chunk {chunk}: {got:?}");
            assert_eq!(got[0], (1, "{\"n\":1}".to_string(), None));
            assert_eq!(got[1].2, Some(long.len() as u64), "chunk {chunk}");
            assert!(got[1].1.len() <= SAMPLE_BYTES);
            assert_eq!(got[2], (3, "{\"n\":3}".to_string(), None));
            assert_eq!((got[3].0, got[3].2), (4, Some(long.len() as u64)));
        }
    }
}
