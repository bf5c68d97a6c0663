//! Sources: where documents come from. A source cuts its input into [`Chunk`]s of documents
//! (lines of a file, messages of a topic) and knows nothing of what they contain.

pub mod file;

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
