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

#[derive(PartialEq)]
enum Mode {
    Unknown,
    Lines,
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
}

fn open_reader(
    raw: Box<dyn Read + Send>,
    counter: ByteCounter,
) -> io::Result<Box<dyn BufRead + Send>> {
    let mut buffered = BufReader::with_capacity(
        256 << 10,
        Counting {
            inner: raw,
            counter,
        },
    );
    let gz = buffered.fill_buf()?.starts_with(&[0x1f, 0x8b]);
    Ok(if gz {
        Box::new(BufReader::with_capacity(
            256 << 10,
            MultiGzDecoder::new(buffered),
        ))
    } else {
        Box::new(buffered)
    })
}

impl FileSource {
    pub fn open(
        path: &Path,
        limits: FramingLimits,
        counter: ByteCounter,
    ) -> io::Result<FileSource> {
        let file = File::open(path)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
        let size = file.metadata().ok().map(|m| m.len());
        let reader = open_reader(Box::new(file), counter)?;
        Ok(Self::with_reader(
            format!("file:{}", path.display()),
            reader,
            limits,
            size,
        ))
    }

    pub fn stdin(limits: FramingLimits, counter: ByteCounter) -> io::Result<FileSource> {
        let reader = open_reader(Box::new(io::stdin()), counter)?;
        Ok(Self::with_reader("stdin".into(), reader, limits, None))
    }

    /// Bytes already in memory (the bundled sample, tests).
    pub fn from_bytes(
        name: &str,
        bytes: &'static [u8],
        limits: FramingLimits,
        counter: ByteCounter,
    ) -> io::Result<FileSource> {
        let size = Some(bytes.len() as u64);
        let reader = open_reader(Box::new(bytes), counter)?;
        Ok(Self::with_reader(name.into(), reader, limits, size))
    }

    fn with_reader(
        name: String,
        reader: Box<dyn BufRead + Send>,
        limits: FramingLimits,
        size: Option<u64>,
    ) -> FileSource {
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
                if self.follow
                    && !self
                        .stop
                        .as_ref()
                        .is_some_and(|s| s.load(Ordering::Relaxed))
                {
                    std::thread::sleep(Duration::from_millis(if any { 50 } else { 250 }));
                    if any {
                        continue; // a partial last line: wait for the writer to finish it
                    }
                    return Ok(Some(IDLE)); // idle tick: lets the caller hand over a partial chunk
                }
                return Ok(any.then_some(total));
            }
            any = true;
            let (take, done) = match memchr(b'\n', buf) {
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
        let trimmed = first.trim_ascii();
        let starts_json = matches!(trimmed.first(), Some(b'{') | Some(b'['));
        let incomplete = starts_json
            && len as usize <= max
            && matches!(serde_json::from_slice::<serde::de::IgnoredAny>(trimmed), Err(e) if e.is_eof());
        if !incomplete {
            self.mode = Mode::Lines;
            self.pending = Some((first, (len as usize > max).then_some(len)));
            return self.next_lines();
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
        let end = buf.len();
        Ok(Some(Chunk {
            source: self.name.clone(),
            unit: "document starting at line",
            buf,
            docs: vec![DocRef {
                index: 1,
                start: 0,
                end,
                oversize,
            }],
        }))
    }

    fn next_lines(&mut self) -> io::Result<Option<Chunk>> {
        let mut chunk = Chunk {
            source: self.name.clone(),
            unit: "line",
            buf: Vec::with_capacity(self.limits.chunk_bytes + (64 << 10)),
            docs: Vec::new(),
        };
        let max = self.limits.max_document_bytes;
        if let Some((first, oversize)) = self.pending.take() {
            self.line += 1;
            let end = if oversize.is_some() {
                first.len().min(SAMPLE_BYTES)
            } else {
                first.len()
            };
            chunk.buf.extend_from_slice(&first[..end]);
            chunk.docs.push(DocRef {
                index: self.line,
                start: 0,
                end,
                oversize,
            });
        }
        while chunk.buf.len() < self.limits.chunk_bytes {
            let start = chunk.buf.len();
            match self.read_line(&mut chunk.buf, start + max)? {
                None => {
                    self.mode = Mode::Done;
                    break;
                }
                Some(IDLE) => {
                    if chunk.docs.is_empty() {
                        continue;
                    }
                    break; // following an idle file: hand over what we have
                }
                Some(len) => {
                    self.line += 1;
                    let oversize = (len as usize > max).then_some(len);
                    if oversize.is_some() {
                        chunk.buf.truncate(start + SAMPLE_BYTES);
                    }
                    chunk.docs.push(DocRef {
                        index: self.line,
                        start,
                        end: chunk.buf.len(),
                        oversize,
                    });
                }
            }
        }
        Ok((!chunk.docs.is_empty()).then_some(chunk))
    }
}

fn memchr(needle: u8, hay: &[u8]) -> Option<usize> {
    hay.iter().position(|&b| b == needle)
}

impl Source for FileSource {
    fn name(&self) -> &str {
        &self.name
    }

    fn next_chunk(&mut self) -> io::Result<Option<Chunk>> {
        match self.mode {
            Mode::Unknown => self.detect(),
            Mode::Lines => self.next_lines(),
            Mode::Done => Ok(None),
        }
    }

    fn size_hint(&self) -> Option<u64> {
        self.size
    }
}

/// Sources for paths, `-` meaning stdin.
pub fn open_paths(
    paths: &[PathBuf],
    limits: &FramingLimits,
    counter: &ByteCounter,
) -> io::Result<Vec<Box<dyn Source>>> {
    paths
        .iter()
        .map(|p| -> io::Result<Box<dyn Source>> {
            if p.as_os_str() == "-" {
                Ok(Box::new(FileSource::stdin(
                    limits.clone(),
                    counter.clone(),
                )?))
            } else {
                Ok(Box::new(FileSource::open(
                    p,
                    limits.clone(),
                    counter.clone(),
                )?))
            }
        })
        .collect()
}
