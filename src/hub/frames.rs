//! Rendered event frames, so that a live event is rendered once for all
//! its subscribers.
//!
//! While at least one event stream is open, each published event's
//! Server-Sent Events frame is rendered into one growing byte buffer, back
//! to back with the frames before it. A stream at the head of the log then
//! takes its events as one contiguous slice (one copy, then one `write`),
//! however many subscribers there are. Frames leave with their events when
//! the log drops them; the dead prefix of the buffer is reclaimed once it
//! is more than half of it, so the cost stays O(1) per byte. With no
//! stream open the cache holds nothing.

use std::collections::VecDeque;

use crate::events::Event;

/// The dead prefix is reclaimed once it is at least this large (and more
/// than half the buffer).
const COMPACT_AT: usize = 64 * 1024;

/// The frames of a contiguous run of event ids.
#[derive(Debug, Default)]
pub struct Frames {
    bytes: Vec<u8>,
    /// Absolute position (bytes ever appended) of `bytes[0]`.
    offset: u64,
    /// Absolute start of the first frame held.
    start: u64,
    /// Id of the first frame held.
    first_id: u64,
    /// Absolute end of each frame held, in id order.
    ends: VecDeque<u64>,
}

impl Frames {
    /// Frames held.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// Bytes of memory held.
    pub fn capacity(&self) -> usize {
        self.bytes.capacity()
    }

    /// Renders `event`, which must follow the last frame held.
    pub fn push(&mut self, event: &Event) {
        if self.ends.is_empty() {
            self.first_id = event.id;
            self.start = self.offset + self.bytes.len() as u64;
        }
        debug_assert_eq!(event.id, self.first_id + self.ends.len() as u64, "frames are contiguous");
        event.write_sse(&mut self.bytes);
        self.ends.push_back(self.offset + self.bytes.len() as u64);
    }

    /// Drops the frames of events before `id`.
    pub fn evict_before(&mut self, id: u64) {
        while self.first_id < id
            && let Some(end) = self.ends.pop_front()
        {
            self.start = end;
            self.first_id += 1;
        }
        let dead = (self.start - self.offset) as usize;
        if dead >= COMPACT_AT && dead * 2 > self.bytes.len() {
            self.bytes.drain(..dead);
            self.offset = self.start;
        }
    }

    /// Drops everything and frees the memory.
    pub fn clear(&mut self) {
        let next = self.offset + self.bytes.len() as u64;
        *self = Frames { offset: next, start: next, ..Frames::default() };
    }

    /// The frames from `id` on, as one slice of at most `max` bytes (but at
    /// least one frame), and the id after the last one given; `None` when
    /// the frame of `id` is not held.
    pub fn run_from(&self, id: u64, max: usize) -> Option<(&[u8], u64)> {
        let i = usize::try_from(id.checked_sub(self.first_id)?).ok()?;
        if i >= self.ends.len() {
            return None;
        }
        let from = if i == 0 { self.start } else { self.ends[i - 1] };
        let limit = from.saturating_add(max as u64);
        let fitting = self.ends.partition_point(|&end| end <= limit);
        let last = fitting.max(i + 1) - 1;
        let slice = &self.bytes[(from - self.offset) as usize..(self.ends[last] - self.offset) as usize];
        Some((slice, self.first_id + last as u64 + 1))
    }

    /// The frame of event `id`, if held.
    pub fn get(&self, id: u64) -> Option<&[u8]> {
        self.run_from(id, 0).map(|(frame, _)| frame)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::Mac;
    use crate::events::EventKind;

    fn event(id: u64) -> Event {
        Event {
            id,
            ext: crate::events::PLAIN,
            at_unix_ms: 0,
            mac: Mac([0, 0, 0, 0, 0, id as u8]),
            kind: EventKind::Location { lat: 1.0, lon: 2.0 },
        }
    }

    fn frame(id: u64) -> Vec<u8> {
        let mut out = Vec::new();
        event(id).write_sse(&mut out);
        out
    }

    #[test]
    fn runs_of_frames_within_a_budget() {
        let mut frames = Frames::default();
        for id in 5..=8 {
            frames.push(&event(id));
        }
        let one = frame(5).len();
        let (run, next) = frames.run_from(5, 2 * one + 1).unwrap();
        assert_eq!(run, [frame(5), frame(6)].concat());
        assert_eq!(next, 7);
        let (run, next) = frames.run_from(7, 1).unwrap();
        assert_eq!((run, next), (&frame(7)[..], 8), "at least one frame, even over the budget");
        let (run, next) = frames.run_from(6, usize::MAX).unwrap();
        assert_eq!((run.len(), next), (3 * one, 9));
        assert_eq!(frames.run_from(4, 100), None, "before the first");
        assert_eq!(frames.run_from(9, 100), None, "not published yet");
        assert_eq!(frames.get(8), Some(&frame(8)[..]));
    }

    #[test]
    fn eviction_follows_the_log_and_reclaims_memory() {
        let mut frames = Frames::default();
        let one = frame(1).len();
        let n = (2 * COMPACT_AT / one) as u64 + 10;
        for id in 1..=n {
            frames.push(&event(id));
            frames.evict_before(id.saturating_sub(10));
        }
        assert_eq!(frames.len(), 11);
        assert!(frames.bytes.len() < 2 * COMPACT_AT + one, "dead frames are reclaimed: {}", frames.bytes.len());
        assert_eq!(frames.get(n - 10), Some(&frame(n - 10)[..]));
        assert_eq!(frames.get(n - 11), None);
        frames.clear();
        assert!(frames.is_empty() && frames.capacity() == 0);
        frames.push(&event(n + 5));
        assert_eq!(frames.get(n + 5), Some(&frame(n + 5)[..]), "starts again at any id after a clear");
    }
}
