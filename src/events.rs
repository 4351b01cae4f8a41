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
//! Events are stored as typed fields, about 56 bytes each with no heap
//! allocation, and rendered to JSON when they are sent: 10,000 of them
//! cost about half a megabyte, which matters next to collars that cost
//! about 200 bytes each. A live event is rendered once for all its
//! subscribers.

use std::collections::VecDeque;
use std::fmt::Write as _;

use crate::close::CloseReason;
use crate::connection::Peer;
use crate::device::Mac;
use crate::http::json;
use crate::time::write_rfc3339;

/// What happened, with its details.
#[derive(Debug, Clone, PartialEq)]
pub enum What {
    Connected { peer: Peer },
    Disconnected { reason: CloseReason },
    Location { lat: f64, lon: f64 },
}

impl What {
    /// The SSE `event:` name and the long-poll `event` field.
    pub fn name(&self) -> &'static str {
        match self {
            What::Connected { .. } => "connected",
            What::Disconnected { .. } => "disconnected",
            What::Location { .. } => "location",
        }
    }
}

/// One published event.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// 1 for the first event; each next one is one higher.
    pub id: u64,
    /// When it happened, as Unix time in milliseconds.
    pub at_unix_ms: u64,
    pub mac: Mac,
    pub what: What,
}

impl Event {
    /// Appends the payload: `{"mac":…, <details>, "at":…}`.
    pub fn write_data(&self, out: &mut String) {
        let _ = write!(out, "{{\"mac\":\"{}\",", self.mac);
        match &self.what {
            What::Connected { peer } => {
                out.push_str("\"peer\":");
                json::string(out, &peer.to_string());
            }
            What::Disconnected { reason } => {
                let _ = write!(out, "\"reason\":\"{}\"", reason.as_str());
            }
            What::Location { lat, lon } => {
                let _ = write!(out, "\"lat\":{lat},\"lon\":{lon}");
            }
        }
        out.push_str(",\"at\":\"");
        write_rfc3339(out, self.at_unix_ms);
        out.push_str("\"}");
    }

    /// Appends the event in Server-Sent Events framing.
    pub fn write_sse(&self, out: &mut String) {
        let _ = write!(out, "id: {}\nevent: {}\ndata: ", self.id, self.what.name());
        self.write_data(out);
        out.push_str("\n\n");
    }

    /// Appends the event as a long-poll list entry:
    /// `{"id":…,"event":…,"data":{…}}`.
    pub fn write_json(&self, out: &mut String) {
        let _ = write!(out, "{{\"id\":{},\"event\":\"{}\",\"data\":", self.id, self.what.name());
        self.write_data(out);
        out.push('}');
    }
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
    pub fn publish(&mut self, mac: Mac, what: What, at_unix_ms: u64) -> &Event {
        self.last_id += 1;
        if self.ring.len() == self.capacity {
            self.ring.pop_front();
        }
        self.ring.push_back(Event { id: self.last_id, at_unix_ms, mac, what });
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

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: Mac = Mac([1, 2, 3, 4, 5, 6]);
    const HERE: What = What::Location { lat: 1.5, lon: -2.25 };

    fn ids(since: Since<'_>) -> (bool, Vec<u64>) {
        (since.lost, since.events.map(|e| e.id).collect())
    }

    #[test]
    fn ids_start_at_one_and_are_contiguous() {
        let mut log = EventLog::new(10);
        assert_eq!(log.last_id(), 0);
        assert_eq!(log.publish(MAC, HERE, 0).id, 1);
        assert_eq!(log.publish(MAC, HERE, 0).id, 2);
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
            log.publish(MAC, HERE, 0);
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
        log.publish(MAC, HERE, 0);
        assert_eq!(log.publish(MAC, HERE, 0).id, 2);
        assert_eq!(ids(log.since(1)), (false, vec![2]));
        assert_eq!(ids(log.since(0)), (true, vec![2]));
    }

    #[test]
    fn an_event_is_small_and_owns_no_heap() {
        assert!(std::mem::size_of::<Event>() <= 56, "Event is {} bytes", std::mem::size_of::<Event>());
    }

    #[test]
    fn renders_every_kind() {
        let peer = Peer::from("10.0.0.7:4242".parse::<std::net::SocketAddr>().unwrap());
        let cases = [
            (
                What::Connected { peer },
                r#"{"mac":"01:02:03:04:05:06","peer":"10.0.0.7:4242","at":"1970-01-01T00:00:01.500Z"}"#,
            ),
            (
                What::Disconnected { reason: CloseReason::Idle },
                r#"{"mac":"01:02:03:04:05:06","reason":"idle","at":"1970-01-01T00:00:01.500Z"}"#,
            ),
            (HERE, r#"{"mac":"01:02:03:04:05:06","lat":1.5,"lon":-2.25,"at":"1970-01-01T00:00:01.500Z"}"#),
        ];
        for (what, data) in cases {
            let event = Event { id: 7, at_unix_ms: 1500, mac: MAC, what };
            let mut out = String::new();
            event.write_data(&mut out);
            assert_eq!(out, data);
        }
    }

    #[test]
    fn sse_and_json_framing() {
        let event = Event { id: 7, at_unix_ms: 0, mac: MAC, what: What::Disconnected { reason: CloseReason::Idle } };
        let data = r#"{"mac":"01:02:03:04:05:06","reason":"idle","at":"1970-01-01T00:00:00.000Z"}"#;
        let mut sse = String::new();
        event.write_sse(&mut sse);
        assert_eq!(sse, format!("id: 7\nevent: disconnected\ndata: {data}\n\n"));
        let mut json = String::new();
        event.write_json(&mut json);
        assert_eq!(json, format!(r#"{{"id":7,"event":"disconnected","data":{data}}}"#));
    }
}
