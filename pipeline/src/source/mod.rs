//! Sources: where documents come from. A source cuts its input into [`Chunk`]s of documents
//! (lines of a file, messages of a topic) and knows nothing of what they contain.

pub mod archive;
pub mod eventhubs;
pub mod file;
pub mod json_array;
pub mod kafka;

use std::sync::atomic::AtomicU64;
use std::sync::Arc;

/// One document inside a chunk's buffer.
#[derive(Debug, Clone)]
pub struct DocRef {
    /// Line number, message offset…: what `Origin::index` reports.
    pub index: u64,
    pub start: usize,
    pub end: usize,
    /// The document was larger than the limit: only its first bytes are in the buffer.
    pub oversize: Option<u64>,
}

/// A unit of work for the decoders: documents from one source, in order.
pub struct Chunk {
    pub source: Arc<str>,
    /// `line`, `offset`, `document`.
    pub unit: &'static str,
    pub buf: Vec<u8>,
    pub docs: Vec<DocRef>,
    /// For sources that can resume (Kafka): the offsets this chunk covers. The pipeline commits
    /// them once the chunk's alerts are durable and no open window needs its events.
    pub offsets: Option<SourceOffsets>,
    /// An empty chunk announcing a newly assigned partition (`source` names it): until it
    /// delivers data or goes idle, it holds the watermark back, so a partition read first
    /// cannot make the others' events late.
    pub opens_stream: bool,
}

/// A run of consecutive offsets of one partition: `first..next`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceOffsets {
    pub topic: Arc<str>,
    pub partition: i32,
    pub first: i64,
    /// The offset after the chunk's last message: what a commit stores.
    pub next: i64,
}

/// Commits source positions on behalf of the pipeline (Kafka: the consumer group offsets).
pub trait OffsetCommitter: Send {
    /// Commits, per (topic, partition), the offset from which a restart must read again.
    /// Partitions this consumer no longer owns are left alone. `wait`: block until the broker
    /// confirms (at shutdown); otherwise the commit is sent in the background.
    fn commit(&self, offsets: &[SourceOffsets], wait: bool) -> anyhow::Result<()>;
    /// Streams (partitions) known to hold messages not yet delivered: slow, not idle, so they
    /// keep holding the watermark back (see `Engine::note_backlog`).
    fn streams_with_backlog(&self) -> Vec<Arc<str>> {
        Vec::new()
    }
    /// Whether this consumer still reads the partition (a rebalance may have given it away).
    fn owns(&self, _topic: &str, _partition: i32) -> bool {
        true
    }
}

pub trait Source: Send {
    /// A name for logs and dead letters: `file:PATH`, `stdin`, `kafka:TOPIC`.
    fn name(&self) -> &str;
    /// The next chunk, or None at the end of input.
    fn next_chunk(&mut self) -> std::io::Result<Option<Chunk>>;
    /// Total size in bytes, when known (for progress).
    fn size_hint(&self) -> Option<u64> {
        None
    }
    /// Called instead of `next_chunk` while the pipeline is full: a source that must keep
    /// talking to its server (Kafka heartbeats, rebalances) pauses fetching and serves it here.
    fn wait_while_full(&mut self) {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    /// A chunk buffer the decoders are done with, for a source that reads into fresh buffers to
    /// fill again: its pages are mapped already, where the kernel zeroes every page of a new one.
    fn recycle(&mut self, _buf: Vec<u8>) {}
    /// For sources whose positions can be committed: the committer, taken once before reading.
    fn committer(&self) -> Option<Box<dyn OffsetCommitter>> {
        None
    }
}

/// Whether a first line that starts a JSON value leaves it unfinished (a pretty-printed
/// document spread over lines) rather than being one complete document (JSON lines).
pub fn starts_multiline_document(first_line: &[u8]) -> bool {
    let trimmed = strip_bom(first_line.trim_ascii()).trim_ascii();
    matches!(trimmed.first(), Some(b'{') | Some(b'['))
        && matches!(serde_json::from_slice::<serde::de::IgnoredAny>(trimmed), Err(e) if e.is_eof())
}

/// `bytes` without a leading UTF-8 byte-order mark (Windows and Azure tools write one).
pub fn strip_bom(bytes: &[u8]) -> &[u8] {
    bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes)
}

/// Where each JSON document of a text holding several one after another starts and ends
/// (pretty-printed records concatenated in one file). Whatever follows the last complete
/// document (a truncated or invalid one) is one more range, for the decoder to explain.
pub fn split_documents(text: &[u8]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut start = 0;
    while start < text.len() {
        let rest = &text[start..];
        let skip = rest.len() - strip_bom(rest.trim_ascii_start()).len();
        if skip == rest.len() {
            break;
        }
        let from = start + skip;
        let mut it = serde_json::Deserializer::from_slice(&text[from..]).into_iter::<serde::de::IgnoredAny>();
        match it.next() {
            Some(Ok(_)) => {
                let end = from + it.byte_offset();
                out.push((start, end));
                start = end;
            }
            _ => {
                out.push((start, text.len()));
                break;
            }
        }
    }
    out
}

/// Limits every source applies while framing.
#[derive(Debug, Clone)]
pub struct FramingLimits {
    /// A line or document above this becomes a `too_large` dead letter (not buffered).
    pub max_document_bytes: usize,
    /// Target size of a chunk.
    pub chunk_bytes: usize,
}

impl Default for FramingLimits {
    fn default() -> Self {
        FramingLimits { max_document_bytes: 16 << 20, chunk_bytes: 4 << 20 }
    }
}

/// Bytes read by all sources (before decompression), for progress and metrics.
pub type ByteCounter = Arc<AtomicU64>;
