//! The event log: what happened to devices, in order, for the app's live
//! pushes (sans-IO).
//!
//! Every change the app may want pushed (a device connected, disconnected,
//! reported a location) becomes an [`Event`] with an id one higher than the
//! last. The most recent `--event-history` events stay in a ring, so a
//! client that reconnects with `Last-Event-ID` (Server-Sent Events) or
//! `since=` (long polling) gets what it missed. Ids are contiguous, so
//! finding where a client left off is an index computation, not a search.
//!
//! An event's JSON payload is rendered once, when it is published, and
//! shared by every subscriber and replay.

use std::collections::VecDeque;

use crate::device::Mac;

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Connected,
    Disconnected,
    Location,
}

impl Kind {
    /// The SSE `event:` name and the long-poll `event` field.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Connected => "connected",
            Kind::Disconnected => "disconnected",
            Kind::Location => "location",
        }
    }
}

/// One published event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// 1 for the first event; each next one is one higher.
    pub id: u64,
    pub mac: Mac,
    pub kind: Kind,
    /// The payload as a JSON object.
    pub data: Box<str>,
}

/// The events after a client's last seen id.
#[derive(Debug)]
pub struct Since<'a> {
    /// Some events after the client's id have already left the ring; the
    /// client's view is incomplete and it should start over.
    pub lost: bool,
    pub events: std::collections::vec_deque::Iter<'a, Event>,
}

/// A ring of recent events.
#[derive(Debug)]
pub struct EventLog {
    ring: VecDeque<Event>,
    capacity: usize,
    /// The id of the most recent event (0 before the first).
    last_id: u64,
}

impl EventLog {
    /// A log keeping the last `capacity` events (at least one, so a long
    /// poll woken by an event can find it).
    pub fn new(capacity: usize) -> EventLog {
        EventLog { ring: VecDeque::new(), capacity: capacity.max(1), last_id: 0 }
    }

    /// The id of the most recent event, 0 if none was ever published.
    pub fn last_id(&self) -> u64 {
        self.last_id
    }

    /// Events still held in the ring.
    pub fn len(&self) -> usize {
        self.ring.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ring.is_empty()
    }

    /// Appends an event, dropping the oldest if the ring is full.
    pub fn publish(&mut self, mac: Mac, kind: Kind, data: String) -> &Event {
        self.last_id += 1;
        if self.ring.len() == self.capacity {
            self.ring.pop_front();
        }
        self.ring.push_back(Event { id: self.last_id, mac, kind, data: data.into_boxed_str() });
        self.ring.back().expect("just pushed")
    }

    /// The events with an id greater than `id`, oldest first. An id the log
    /// never gave out (from before a restart of the gateway) counts as lost
    /// history: everything held is returned.
    pub fn since(&self, id: u64) -> Since<'_> {
        if id > self.last_id {
            return Since { lost: true, events: self.ring.range(..) };
        }
        // The first id still held (or the next one, if the ring is empty).
        let oldest = self.ring.front().map_or(self.last_id + 1, |e| e.id);
        let skip = usize::try_from((id + 1).saturating_sub(oldest)).unwrap_or(usize::MAX);
        Since { lost: id + 1 < oldest, events: self.ring.range(skip.min(self.ring.len())..) }
    }
}

/// Appends one event in Server-Sent Events framing.
pub fn write_sse(out: &mut Vec<u8>, event: &Event) {
    use std::io::Write as _;
    let _ = write!(out, "id: {}\nevent: {}\ndata: {}\n\n", event.id, event.kind.as_str(), event.data);
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: Mac = Mac([1, 2, 3, 4, 5, 6]);

    fn ids(since: Since<'_>) -> (bool, Vec<u64>) {
        (since.lost, since.events.map(|e| e.id).collect())
    }

    #[test]
    fn ids_start_at_one_and_are_contiguous() {
        let mut log = EventLog::new(10);
        assert_eq!(log.last_id(), 0);
        assert_eq!(log.publish(MAC, Kind::Connected, "{}".into()).id, 1);
        assert_eq!(log.publish(MAC, Kind::Location, "{}".into()).id, 2);
        assert_eq!(log.last_id(), 2);
        assert_eq!(ids(log.since(0)), (false, vec![1, 2]));
        assert_eq!(ids(log.since(1)), (false, vec![2]));
        assert_eq!(ids(log.since(2)), (false, vec![]));
        assert_eq!(ids(log.since(99)), (true, vec![1, 2]), "an id from before a restart: start over");
    }

    #[test]
    fn the_ring_keeps_the_newest_and_reports_loss() {
        let mut log = EventLog::new(3);
        for _ in 0..5 {
            log.publish(MAC, Kind::Location, "{}".into());
        }
        assert_eq!(log.len(), 3);
        assert_eq!(ids(log.since(0)), (true, vec![3, 4, 5]));
        assert_eq!(ids(log.since(1)), (true, vec![3, 4, 5]));
        assert_eq!(ids(log.since(2)), (false, vec![3, 4, 5]), "2 seen, 3 onwards held: nothing lost");
        assert_eq!(ids(log.since(4)), (false, vec![5]));
    }

    #[test]
    fn the_smallest_ring_still_holds_the_latest_event() {
        let mut log = EventLog::new(0);
        log.publish(MAC, Kind::Connected, "{}".into());
        assert_eq!(log.publish(MAC, Kind::Location, "{}".into()).id, 2);
        assert_eq!(ids(log.since(1)), (false, vec![2]));
        assert_eq!(ids(log.since(0)), (true, vec![2]));
    }

    #[test]
    fn sse_framing() {
        let mut out = Vec::new();
        let event = Event { id: 7, mac: MAC, kind: Kind::Disconnected, data: r#"{"reason":"idle"}"#.into() };
        write_sse(&mut out, &event);
        assert_eq!(out, b"id: 7\nevent: disconnected\ndata: {\"reason\":\"idle\"}\n\n");
    }
}
