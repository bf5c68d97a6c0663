//! Which source offsets are safe to commit (DESIGN.md, "Time and delivery").
//!
//! An offset may be committed once (1) every chunk before it went through the engine, (2) the
//! sinks confirmed the alerts and dead letters that came of them, and (3) no open window still
//! holds events from them — otherwise a crash would lose that window, since a restart reads
//! only from the committed offset. (3) is checked by event time: a chunk is released when its
//! newest event is older than the oldest window that still holds state, because then every
//! window its events fell into has fired (or never held state).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use crate::source::SourceOffsets;

struct Handled {
    first: i64,
    next: i64,
    /// Newest plausible event time in the chunk (i64::MIN when it held no event).
    newest: i64,
}

#[derive(Default)]
pub struct Checkpoints {
    /// Per (topic, partition): chunks handled but not yet released, in offset order.
    handled: HashMap<(Arc<str>, i32), VecDeque<Handled>>,
    /// Per (topic, partition): the newest offset released.
    safe: HashMap<(Arc<str>, i32), i64>,
}

impl Checkpoints {
    /// Notes a chunk that went through the engine.
    pub fn handled(&mut self, o: &SourceOffsets, newest_event: i64) {
        let key = (o.topic.clone(), o.partition);
        let q = self.handled.entry(key.clone()).or_default();
        if q.back().is_some_and(|b| o.first < b.next) || self.safe.get(&key).is_some_and(|&s| o.first < s) {
            // The partition is being read again from an earlier offset (it came back after a
            // rebalance): what was noted of it belongs to the earlier reading.
            q.clear();
            self.safe.remove(&key);
        }
        q.push_back(Handled { first: o.first, next: o.next, newest: newest_event });
    }

    /// Releases the chunks no open window needs (`oldest_open_window`: see
    /// `Engine::oldest_open_window`) and returns the safe offset of every partition. Call it
    /// only after the sinks confirmed everything handled so far.
    pub fn release(&mut self, oldest_open_window: i64) -> Vec<SourceOffsets> {
        for (key, q) in self.handled.iter_mut() {
            while let Some(front) = q.front() {
                if front.newest >= oldest_open_window {
                    break;
                }
                self.safe.insert(key.clone(), front.next);
                q.pop_front();
            }
        }
        let mut out: Vec<SourceOffsets> = self
            .safe
            .iter()
            .map(|((topic, partition), &next)| SourceOffsets { topic: topic.clone(), partition: *partition, first: next, next })
            .collect();
        out.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
        out
    }

    /// Chunks handled but still held back by open windows.
    pub fn held(&self) -> usize {
        self.handled.values().map(VecDeque::len).sum()
    }

    /// The first offset still held back per partition, for logs.
    pub fn describe_held(&self) -> String {
        let mut v: Vec<String> =
            self.handled.iter().filter_map(|((t, p), q)| q.front().map(|h| format!("{t}/{p} from offset {}", h.first))).collect();
        v.sort();
        v.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offs(p: i32, first: i64, next: i64) -> SourceOffsets {
        SourceOffsets { topic: "t".into(), partition: p, first, next }
    }

    #[test]
    fn a_chunk_is_released_only_when_no_open_window_needs_it_and_in_order() {
        let mut c = Checkpoints::default();
        c.handled(&offs(0, 0, 10), 100);
        c.handled(&offs(0, 10, 20), 300);
        c.handled(&offs(0, 20, 30), 150);
        c.handled(&offs(1, 0, 5), 50);
        // The oldest open window starts at 200: the chunk with events at 300 holds back itself
        // and the one after it (offsets are committed in order).
        let safe = c.release(200);
        assert_eq!(safe.iter().map(|o| (o.partition, o.next)).collect::<Vec<_>>(), [(0, 10), (1, 5)]);
        assert_eq!(c.held(), 2);
        assert_eq!(c.release(i64::MAX).iter().map(|o| (o.partition, o.next)).collect::<Vec<_>>(), [(0, 30), (1, 5)]);
        // A partition read again from an earlier offset starts over.
        c.handled(&offs(0, 12, 20), 100);
        assert_eq!(c.release(i64::MAX).iter().map(|o| (o.partition, o.next)).collect::<Vec<_>>(), [(0, 20), (1, 5)]);
    }
}
