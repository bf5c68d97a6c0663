//! Where the lake stands for each Kafka partition, kept in the lake itself so a restart (or a
//! new pod) finds it without local state:
//!
//! ```text
//! _crowsnest/kafka/TOPIC/P/intent-FIRST.json   written before a flush's files: their paths
//! _crowsnest/kafka/TOPIC/P/done-NEXT           written after them: offsets < NEXT are in the lake
//! ```
//!
//! A restart reads the partition again from its committed offset, which may be behind NEXT
//! (open windows hold commits back): rows below NEXT are already in the lake and are not
//! written again, and a chunk that straddles NEXT is cut there (`split_chunk`). A flush that
//! was cut short by a crash left an intent without its `done`: its files are removed, since
//! the rows they hold are read and written again.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};

use crate::lake::layout::{sanitize, STATE_DIR};
use crate::lake::Store;
use crate::source::{Chunk, SourceOffsets};

pub struct Resume {
    store: Arc<Store>,
    /// Per (topic, partition): offsets below this are in the lake.
    points: Mutex<HashMap<(Arc<str>, i32), i64>>,
}

pub fn partition_dir(topic: &str, partition: i32) -> String {
    format!("{STATE_DIR}/kafka/{}/{partition}", sanitize(topic))
}

impl Resume {
    pub fn new(store: Arc<Store>) -> Resume {
        Resume { store, points: Mutex::default() }
    }

    /// Offsets of the partition below the returned one are in the lake (0: none). The first
    /// call for a partition reads its markers and removes what an interrupted flush left.
    pub fn point(&self, topic: &Arc<str>, partition: i32) -> Result<i64> {
        let key = (topic.clone(), partition);
        if let Some(&p) = self.points.lock().expect("resume lock").get(&key) {
            return Ok(p);
        }
        let dir = partition_dir(topic, partition);
        let listed = self.store.list(&dir)?;
        let name = |p: &str| p.rsplit('/').next().unwrap_or_default().to_string();
        let done = listed.iter().filter_map(|l| name(&l.path).strip_prefix("done-").and_then(|n| n.parse::<i64>().ok())).max().unwrap_or(0);
        for l in &listed {
            let n = name(&l.path);
            let Some(first) = n.strip_prefix("intent-").and_then(|n| n.strip_suffix(".json")).and_then(|n| n.parse::<i64>().ok()) else {
                continue;
            };
            if first >= done {
                let body = self.store.get(&l.path)?;
                let files: Vec<String> = serde_json::from_slice(&body).with_context(|| format!("reading {}", l.path))?;
                log::warn!("lake: {topic}/{partition}: a flush from offset {first} was interrupted; removing its {} file(s), they are written again", files.len());
                for f in &files {
                    self.store.delete(f)?;
                }
            }
            self.store.delete(&l.path)?;
        }
        self.points.lock().expect("resume lock").insert(key, done);
        Ok(done)
    }

    /// Forgets what is known of a partition: the next [`point`](Self::point) reads the lake
    /// again (another consumer may have written it meanwhile).
    pub fn forget(&self, topic: &Arc<str>, partition: i32) {
        self.points.lock().expect("resume lock").remove(&(topic.clone(), partition));
    }

    /// Notes a flush's files before they are written.
    pub fn begin(&self, topic: &str, partition: i32, first: i64, files: &[String]) -> Result<()> {
        let path = format!("{}/intent-{first:020}.json", partition_dir(topic, partition));
        // An intent left from an earlier attempt at the same flush names the same files.
        self.store.put_new(&path, serde_json::to_vec(files)?)?;
        Ok(())
    }

    /// The flush's files are all written: offsets below `next` are in the lake.
    pub fn done(&self, topic: &Arc<str>, partition: i32, first: i64, next: i64) -> Result<()> {
        let dir = partition_dir(topic, partition);
        self.store.put_new(&format!("{dir}/done-{next:020}"), Vec::new())?;
        self.points.lock().expect("resume lock").insert((topic.clone(), partition), next);
        // Tidying: the intent is fulfilled, and older markers say less than this one.
        if let Err(e) = self.store.delete(&format!("{dir}/intent-{first:020}.json")) {
            log::warn!("lake: {e:#}");
        }
        if let Ok(listed) = self.store.list(&dir) {
            for l in listed
                .iter()
                .filter(|l| l.path.rsplit('/').next().is_some_and(|n| n.starts_with("done-") && *n < *format!("done-{next:020}")))
            {
                let _ = self.store.delete(&l.path);
            }
        }
        Ok(())
    }
}

/// Cuts a Kafka chunk at offset `at` when it straddles it: the part below is already in the
/// lake, the part from `at` is not. Both still go through the engine.
pub fn split_chunk(chunk: Chunk, at: i64) -> Vec<Chunk> {
    let Some(o) = chunk.offsets.clone() else { return vec![chunk] };
    if !(o.first < at && at < o.next) {
        return vec![chunk];
    }
    let (below, above): (Vec<_>, Vec<_>) = chunk.docs.iter().cloned().partition(|d| (d.index as i64) < at);
    let part = |docs, first, next| Chunk {
        source: chunk.source.clone(),
        unit: chunk.unit,
        buf: chunk.buf.clone(),
        docs,
        offsets: Some(SourceOffsets { topic: o.topic.clone(), partition: o.partition, first, next }),
        opens_stream: false,
    };
    vec![part(below, o.first, at), part(above, at, o.next)]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::DocRef;

    #[test]
    fn a_chunk_straddling_the_lake_point_is_cut_there_and_others_pass_whole() {
        let docs = (10..15).map(|i| DocRef { index: i, start: 0, end: 0, oversize: None }).collect();
        let chunk = Chunk {
            source: "kafka:t/0".into(),
            unit: "offset",
            buf: Vec::new(),
            docs,
            offsets: Some(SourceOffsets { topic: "t".into(), partition: 0, first: 10, next: 15 }),
            opens_stream: false,
        };
        let parts = split_chunk(chunk, 12);
        let spans: Vec<(i64, i64, Vec<u64>)> = parts
            .iter()
            .map(|c| {
                let o = c.offsets.as_ref().unwrap();
                (o.first, o.next, c.docs.iter().map(|d| d.index).collect())
            })
            .collect();
        assert_eq!(spans, [(10, 12, vec![10, 11]), (12, 15, vec![12, 13, 14])]);
        for at in [0, 10, 15, 99] {
            let whole = split_chunk(parts[1].clone_for_test(), at);
            assert_eq!(whole.len(), 1, "{at}");
        }
    }

    impl Chunk {
        fn clone_for_test(&self) -> Chunk {
            Chunk {
                source: self.source.clone(),
                unit: self.unit,
                buf: self.buf.clone(),
                docs: self.docs.clone(),
                offsets: self.offsets.clone(),
                opens_stream: self.opens_stream,
            }
        }
    }
}
