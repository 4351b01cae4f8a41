//! The event log: what happened to devices, in order, for the app's live
//! pushes (sans-IO).
//!
//! Every change the app may want pushed (a device connected, disconnected,
//! reported a location, was quarantined for flapping) becomes an [`Event`] with an id one higher than the
//! last. The most recent `--event-history` events stay in a ring, so a
//! client that reconnects with `Last-Event-ID` (Server-Sent Events) or
//! `since=` (long polling) gets what it missed. Ids are contiguous, so
//! finding where a client left off is an index computation, not a search.
//!
//! Those local ids are positions. What a client sees is the event's
//! [`EventId`]: the local id itself on a gateway that stands alone; with
//! `--redis`, where every event goes through one Redis stream shared by
//! the fleet, the stream's id (`1764398400000-3`), which means the same on
//! every gateway and after a restart; and `L<id>` for an event published
//! while Redis was unreachable (known to this gateway only). A client's
//! `Last-Event-ID` or `since=` is mapped back to a position by
//! [`EventLog::resolve`].
//!
//! Events are stored as typed fields, 64 bytes each with no heap
//! allocation, and rendered (JSON through `serde_json`) when they are sent:
//! 10,000 of them cost about half a megabyte, which matters next to collars
//! that cost about 200 bytes each. While event streams are open the hub
//! also keeps each event's rendered frame, so that a live event is
//! rendered once for all its subscribers (`crate::hub::frames`).

use std::collections::VecDeque;
use std::fmt;

use serde::Serialize;
use serde::ser::{SerializeStruct, Serializer};

use crate::close::CloseReason;
use crate::device::Mac;
use crate::reactor::Peer;
use crate::time::rfc3339;

/// What happened, with its details.
#[derive(Debug, Clone, PartialEq)]
pub enum EventKind {
    Connected {
        peer: Peer,
    },
    Disconnected {
        reason: CloseReason,
    },
    Location {
        lat: f64,
        lon: f64,
    },
    /// The MAC was taken over more than `--flap-limit` times within a
    /// minute: its `IDENTIFY`s are refused until `until_unix_ms`.
    Flapping {
        takeovers: u32,
        until_unix_ms: u64,
    },
}

impl EventKind {
    /// The SSE `event:` name and the long-poll `event` field.
    pub fn name(&self) -> &'static str {
        match self {
            EventKind::Connected { .. } => "connected",
            EventKind::Disconnected { .. } => "disconnected",
            EventKind::Location { .. } => "location",
            EventKind::Flapping { .. } => "flapping",
        }
    }
}

/// One published event.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// 1 for the first event; each next one is one higher.
    pub id: u64,
    /// How clients know it: [`PLAIN`], [`LOCAL_ONLY`] or a stream id packed
    /// by [`pack_stream_id`].
    pub ext: u64,
    /// When it happened, as Unix time in milliseconds.
    pub at_unix_ms: u64,
    pub mac: Mac,
    pub kind: EventKind,
}

/// [`Event::ext`] of an event known by its local id (no `--redis`).
pub const PLAIN: u64 = 0;
/// [`Event::ext`] of an event published while Redis was unreachable: shown
/// as `L<id>`.
pub const LOCAL_ONLY: u64 = u64::MAX;
/// Bits of a packed stream id given to the sequence number within one
/// millisecond (Redis counts from 0 for each millisecond; a million
/// events in one millisecond is far beyond what one stream takes).
const SEQ_BITS: u32 = 20;

/// A Redis stream id `MS-SEQ` as one ordered `u64`; `None` when it does
/// not fit (then it cannot be ours).
pub fn pack_stream_id(ms: u64, seq: u64) -> Option<u64> {
    let packed = (ms.checked_shl(SEQ_BITS)?) | seq;
    (seq < 1 << SEQ_BITS && ms < 1 << (64 - SEQ_BITS) && packed != PLAIN && packed != LOCAL_ONLY).then_some(packed)
}

/// How a client names an event (`Last-Event-ID`, `since=`): what
/// [`EventId`] printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventRef {
    /// `42` or `L42`: a local id.
    Local(u64),
    /// `1764398400000-3`, packed ([`pack_stream_id`]).
    Stream(u64),
}

impl EventRef {
    pub fn parse(text: &str) -> Option<EventRef> {
        let text = text.trim();
        if let Some((ms, seq)) = text.split_once('-') {
            let (ms, seq) = (ms.parse().ok()?, seq.parse().ok()?);
            // A well-formed id too large to be ours still names an event
            // we do not have.
            return Some(EventRef::Stream(pack_stream_id(ms, seq).unwrap_or(LOCAL_ONLY - 1)));
        }
        text.strip_prefix('L').unwrap_or(text).parse().ok().map(EventRef::Local)
    }
}

/// An event's id as clients see it (see the module documentation):
/// printed, and serialized as a JSON number (plain) or string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventId {
    pub local: u64,
    pub ext: u64,
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.ext {
            PLAIN => write!(f, "{}", self.local),
            LOCAL_ONLY => write!(f, "L{}", self.local),
            packed => write!(f, "{}-{}", packed >> SEQ_BITS, packed & ((1 << SEQ_BITS) - 1)),
        }
    }
}

impl Serialize for EventId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.ext {
            PLAIN => serializer.serialize_u64(self.local),
            _ => serializer.collect_str(self),
        }
    }
}

/// A Unix time in milliseconds, serialized as an RFC 3339 string.
#[derive(Debug, Clone, Copy)]
pub struct Rfc3339(pub u64);

impl fmt::Display for Rfc3339 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(std::str::from_utf8(&rfc3339(self.0)).map_err(|_| fmt::Error)?)
    }
}

impl Serialize for Rfc3339 {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let text = rfc3339(self.0);
        // Digits and punctuation only: always UTF-8.
        serializer.serialize_str(std::str::from_utf8(&text).unwrap_or_default())
    }
}

/// The event's payload: `{"mac":…, <details>, "at":…}`.
pub struct Data<'a>(pub &'a Event);

impl Serialize for Data<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let event = self.0;
        let mut s = serializer.serialize_struct("Data", 4)?;
        s.serialize_field("mac", &event.mac)?;
        match &event.kind {
            EventKind::Connected { peer } => s.serialize_field("peer", &peer.to_string())?,
            EventKind::Disconnected { reason } => s.serialize_field("reason", reason.as_str())?,
            EventKind::Location { lat, lon } => {
                s.serialize_field("lat", lat)?;
                s.serialize_field("lon", lon)?;
            }
            EventKind::Flapping { takeovers, until_unix_ms } => {
                s.serialize_field("takeovers", takeovers)?;
                s.serialize_field("until", &Rfc3339(*until_unix_ms))?;
            }
        }
        s.serialize_field("at", &Rfc3339(event.at_unix_ms))?;
        s.end()
    }
}

/// The event as a long-poll list entry: `{"id":…,"event":…,"data":{…}}`.
impl Serialize for Event {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut s = serializer.serialize_struct("Event", 3)?;
        s.serialize_field("id", &self.event_id())?;
        s.serialize_field("event", self.kind.name())?;
        s.serialize_field("data", &Data(self))?;
        s.end()
    }
}

impl Event {
    /// The id clients see.
    pub fn event_id(&self) -> EventId {
        EventId { local: self.id, ext: self.ext }
    }

    /// Appends the event in Server-Sent Events framing.
    pub fn write_sse(&self, out: &mut Vec<u8>) {
        use std::io::Write as _;
        let _ = write!(out, "id: {}\nevent: {}\ndata: ", self.event_id(), self.kind.name());
        // Serializing plain fields into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *out, &Data(self));
        out.extend_from_slice(b"\n\n");
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
    /// What an id not held is shown as ([`PLAIN`], or [`LOCAL_ONLY`] when
    /// events come from a Redis stream).
    missing: u64,
}

impl EventLog {
    /// A log keeping the last `capacity` events (at least one, so a long
    /// poll woken by an event can find it).
    pub fn new(capacity: usize) -> EventLog {
        EventLog { ring: VecDeque::new(), capacity: capacity.max(1), last_id: 0, missing: PLAIN }
    }

    /// A log whose events come from a Redis stream (`--redis`).
    pub fn with_stream_ids(capacity: usize) -> EventLog {
        EventLog { missing: LOCAL_ONLY, ..EventLog::new(capacity) }
    }

    /// How clients see the local id `id` (which may be 0, or gone).
    pub fn external(&self, id: u64) -> EventId {
        match self.get(id) {
            Some(event) => event.event_id(),
            None => EventId { local: id, ext: self.missing },
        }
    }

    /// The local id of what a client names: the event itself, the last id
    /// when it names one newer than any held (nothing missed), or
    /// `u64::MAX` (an id never given out here: start over) when it names an
    /// event no longer held or unknown.
    pub fn resolve(&self, named: EventRef) -> u64 {
        match named {
            EventRef::Local(id) => id,
            EventRef::Stream(packed) => {
                let mut newest = None;
                for event in self.ring.iter().rev() {
                    if event.ext == packed {
                        return event.id;
                    }
                    if event.ext != PLAIN && event.ext != LOCAL_ONLY {
                        newest = newest.max(Some(event.ext));
                        if event.ext < packed {
                            break;
                        }
                    }
                }
                if newest.is_some_and(|newest| packed > newest) { self.last_id } else { u64::MAX }
            }
        }
    }

    /// Forgets every event held (ids go on from the last one): what was
    /// held cannot be trusted to be followed by what comes next.
    pub fn clear(&mut self) {
        self.ring.clear();
    }

    /// The newest stream id held, packed.
    pub fn last_stream_id(&self) -> Option<u64> {
        self.ring.iter().rev().map(|e| e.ext).find(|&ext| ext != PLAIN && ext != LOCAL_ONLY)
    }

    /// The id of the most recent event, 0 if none was ever published.
    pub fn last_id(&self) -> u64 {
        self.last_id
    }

    /// The id of the oldest event held (the next one to come when none is).
    pub fn first_id(&self) -> u64 {
        self.ring.front().map_or(self.last_id + 1, |e| e.id)
    }

    /// Events still held in the ring.
    pub fn len(&self) -> usize {
        self.ring.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ring.is_empty()
    }

    /// The most recent event, if any is held.
    pub fn latest(&self) -> Option<&Event> {
        self.ring.back()
    }

    /// The event with this id, if still held.
    pub fn get(&self, id: u64) -> Option<&Event> {
        let index = id.checked_sub(self.first_id())?;
        self.ring.get(usize::try_from(index).ok()?)
    }

    /// Appends an event, dropping the oldest if the ring is full.
    pub fn publish(&mut self, mac: Mac, kind: EventKind, at_unix_ms: u64) -> &Event {
        let ext = self.missing;
        self.publish_as(mac, kind, at_unix_ms, ext)
    }

    /// Appends an event that clients know as `ext` (see [`Event::ext`]).
    pub fn publish_as(&mut self, mac: Mac, kind: EventKind, at_unix_ms: u64, ext: u64) -> &Event {
        self.last_id += 1;
        if self.ring.len() == self.capacity {
            self.ring.pop_front();
        }
        self.ring.push_back(Event { id: self.last_id, ext, at_unix_ms, mac, kind });
        self.ring.back().expect("just pushed")
    }

    /// The events held from `id` on, oldest first (`id` itself included).
    pub fn from(&self, id: u64) -> std::collections::vec_deque::Iter<'_, Event> {
        let skip = usize::try_from(id.saturating_sub(self.first_id())).unwrap_or(usize::MAX);
        self.ring.range(skip.min(self.ring.len())..)
    }

    /// The events with an id greater than `id`, oldest first. An id the log
    /// never gave out (from before a restart of the gateway) counts as lost
    /// history: everything held is returned.
    pub fn since(&self, id: u64) -> Since<'_> {
        if id > self.last_id {
            return Since { lost: true, events: self.ring.range(..) };
        }
        Since { lost: id + 1 < self.first_id(), events: self.from(id + 1) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: Mac = Mac([1, 2, 3, 4, 5, 6]);
    const HERE: EventKind = EventKind::Location { lat: 1.5, lon: -2.25 };

    fn ids(since: Since<'_>) -> (bool, Vec<u64>) {
        (since.lost, since.events.map(|e| e.id).collect())
    }

    #[test]
    fn ids_start_at_one_and_are_contiguous() {
        let mut log = EventLog::new(10);
        assert_eq!((log.last_id(), log.first_id()), (0, 1));
        assert_eq!(log.publish(MAC, HERE, 0).id, 1);
        assert_eq!(log.publish(MAC, HERE, 0).id, 2);
        assert_eq!(log.last_id(), 2);
        assert_eq!(ids(log.since(0)), (false, vec![1, 2]));
        assert_eq!(ids(log.since(1)), (false, vec![2]));
        assert_eq!(ids(log.since(2)), (false, vec![]));
        assert_eq!(ids(log.since(99)), (true, vec![1, 2]), "an id from before a restart: start over");
        assert_eq!(log.get(2).map(|e| e.id), Some(2));
        assert_eq!(log.get(3), None);
        assert_eq!(log.from(2).map(|e| e.id).collect::<Vec<_>>(), vec![2]);
    }

    #[test]
    fn the_ring_keeps_the_newest_and_reports_loss() {
        let mut log = EventLog::new(3);
        for _ in 0..5 {
            log.publish(MAC, HERE, 0);
        }
        assert_eq!((log.len(), log.first_id()), (3, 3));
        assert_eq!(ids(log.since(0)), (true, vec![3, 4, 5]));
        assert_eq!(ids(log.since(1)), (true, vec![3, 4, 5]));
        assert_eq!(ids(log.since(2)), (false, vec![3, 4, 5]), "2 seen, 3 onwards held: nothing lost");
        assert_eq!(ids(log.since(4)), (false, vec![5]));
        assert_eq!(log.get(2), None, "gone");
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
        assert!(std::mem::size_of::<Event>() <= 64, "Event is {} bytes", std::mem::size_of::<Event>());
    }

    #[test]
    fn renders_every_kind() {
        let peer = Peer::from("10.0.0.7:4242".parse::<std::net::SocketAddr>().unwrap());
        let cases = [
            (
                EventKind::Connected { peer },
                r#"{"mac":"01:02:03:04:05:06","peer":"10.0.0.7:4242","at":"1970-01-01T00:00:01.500Z"}"#,
            ),
            (
                EventKind::Disconnected { reason: CloseReason::Idle },
                r#"{"mac":"01:02:03:04:05:06","reason":"idle","at":"1970-01-01T00:00:01.500Z"}"#,
            ),
            (HERE, r#"{"mac":"01:02:03:04:05:06","lat":1.5,"lon":-2.25,"at":"1970-01-01T00:00:01.500Z"}"#),
            (
                EventKind::Location { lat: 90.0, lon: -180.0 },
                r#"{"mac":"01:02:03:04:05:06","lat":90.0,"lon":-180.0,"at":"1970-01-01T00:00:01.500Z"}"#,
            ),
            (
                EventKind::Flapping { takeovers: 11, until_unix_ms: 61_500 },
                r#"{"mac":"01:02:03:04:05:06","takeovers":11,"until":"1970-01-01T00:01:01.500Z","at":"1970-01-01T00:00:01.500Z"}"#,
            ),
        ];
        for (kind, data) in cases {
            let event = Event { id: 7, ext: PLAIN, at_unix_ms: 1500, mac: MAC, kind };
            assert_eq!(serde_json::to_string(&Data(&event)).unwrap(), data);
        }
    }

    #[test]
    fn sse_and_json_framing() {
        let event = Event {
            id: 7,
            ext: PLAIN,
            at_unix_ms: 0,
            mac: MAC,
            kind: EventKind::Disconnected { reason: CloseReason::Idle },
        };
        let data = r#"{"mac":"01:02:03:04:05:06","reason":"idle","at":"1970-01-01T00:00:00.000Z"}"#;
        let mut sse = Vec::new();
        event.write_sse(&mut sse);
        assert_eq!(String::from_utf8(sse).unwrap(), format!("id: 7\nevent: disconnected\ndata: {data}\n\n"));
        let json = serde_json::to_string(&event).unwrap();
        assert_eq!(json, format!(r#"{{"id":7,"event":"disconnected","data":{data}}}"#));
    }
}
