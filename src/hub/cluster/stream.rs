//! The fleet's event stream, `tether:events`: appending to it, and the
//! tail that follows it into the local event log.
//!
//! Every gateway appends its events to the stream (`tether_v1_event`:
//! `XADD`, capped near `--event-history`) instead of to its own log, and
//! the tail link reads them all back (`XREAD BLOCK`) with the stream's
//! ids, so every log holds the whole fleet's events in one order. A
//! gateway that starts loads the stream's recent history first
//! (`XREVRANGE`), so `Last-Event-ID` replays across gateways and restarts.
//! After a reconnect, or a full batch read, the tail first checks that
//! the last entry it saw is still there: if it was trimmed with newer
//! entries left, some were never seen (a gap), and event clients start
//! over.

use log::{debug, warn};

use super::pipeline::Pending;
use super::{Cluster, Hub};
use crate::close::CloseReason;
use crate::device::Mac;
use crate::events::{EventId, EventKind, pack_stream_id};
use crate::proto::Proto;
use crate::reactor::{Ops, Peer};
use crate::redis::codec::{Frame, OwnedFrame};
use crate::redis::function;
use crate::time::{Millis, millis};

/// Key of the fleet's event stream.
const EVENTS: &str = "tether:events";
/// Entries taken per read of the stream.
const TAIL_BATCH: usize = 1000;
/// Longest `XREAD BLOCK`: a quiet stream still answers this often, which
/// is how a dead tail link is noticed.
const TAIL_BLOCK: Millis = 2000;

/// What the tail link's replies answer, in the order sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum TailRequest {
    /// `CLIENT SETNAME`, and `SELECT`.
    Setup,
    /// `XREVRANGE`: the recent history, at start.
    History,
    /// `XREAD BLOCK`.
    Read,
    /// `XRANGE <last seen> + COUNT 1`, on a reconnect: whether the last
    /// entry seen is still there (trimming takes the oldest first, so then
    /// nothing after it was lost), or was trimmed with newer entries left
    /// (some of which may never have been seen: a gap).
    Check,
}

impl Cluster {
    /// When a tail request sent at `sent` is overdue: a blocking read may
    /// take its block time first.
    pub(super) fn tail_due(&self, sent: Millis, request: TailRequest) -> Millis {
        sent + millis(self.settings.timeout) + if request == TailRequest::Read { TAIL_BLOCK } else { 0 }
    }
}

impl Hub {
    /// Writes one command on the tail link.
    pub(super) fn tail_request(&mut self, args: &[&[u8]], request: TailRequest, ops: &mut Ops<'_, Proto>) {
        let cluster = self.cluster_mut();
        if cluster.write(cluster.tail.token, args, ops) {
            cluster.tail_pending.push_back((ops.now(), request));
        }
    }

    /// After a reconnect: asks whether the stream lost entries we did not
    /// see, then goes on reading.
    pub(super) fn tail_resume(&mut self, ops: &mut Ops<'_, Proto>) {
        if let Some(seen) = self.cluster_mut().tail_from {
            let seen = EventId { local: 0, ext: seen }.to_string();
            let args: [&[u8]; 6] = [b"XRANGE", EVENTS.as_bytes(), seen.as_bytes(), b"+", b"COUNT", b"1"];
            self.tail_request(&args, TailRequest::Check, ops);
        } else {
            self.tail_next(ops);
        }
    }

    /// Asks for what comes next on the stream: its recent history if the
    /// log has nothing from it yet, else what follows the last id seen.
    fn tail_next(&mut self, ops: &mut Ops<'_, Proto>) {
        let cluster = self.cluster_mut();
        match cluster.tail_from {
            None => {
                let count = cluster.history.to_string();
                let args: [&[u8]; 6] = [b"XREVRANGE", EVENTS.as_bytes(), b"+", b"-", b"COUNT", count.as_bytes()];
                self.tail_request(&args, TailRequest::History, ops);
            }
            Some(from) => {
                let from = EventId { local: 0, ext: from }.to_string();
                let (count, block) = (TAIL_BATCH.to_string(), TAIL_BLOCK.to_string());
                let args: [&[u8]; 8] = [
                    b"XREAD",
                    b"COUNT",
                    count.as_bytes(),
                    b"BLOCK",
                    block.as_bytes(),
                    b"STREAMS",
                    EVENTS.as_bytes(),
                    from.as_bytes(),
                ];
                self.tail_request(&args, TailRequest::Read, ops);
            }
        }
    }

    /// A reply on the tail link.
    pub(super) fn tail_reply(&mut self, frame: OwnedFrame, ops: &mut Ops<'_, Proto>) {
        let cluster = self.cluster_mut();
        let Some((_, request)) = cluster.tail_pending.pop_front() else { return };
        if let Some(error) = frame.error() {
            warn!("redis: the event stream's {request:?} failed: {error}");
            if let Some(token) = cluster.tail.token {
                ops.close(token, CloseReason::ProtocolError);
            }
            return;
        }
        match request {
            TailRequest::Setup => {
                if cluster.tail_pending.iter().all(|&(_, r)| r != TailRequest::Setup) && !cluster.tail.ready {
                    cluster.tail.ready = true;
                    if cluster.up() {
                        self.links_up(ops);
                    }
                }
            }
            TailRequest::History => {
                // Newest first: appended oldest first.
                let entries: Vec<&OwnedFrame> = frame.items().iter().rev().collect();
                for entry in entries {
                    self.stream_entry(entry, ops);
                }
                let cluster = self.cluster_mut();
                // An empty stream: read it from its start (`0-1`, as `0-0`
                // packs to nothing).
                cluster.tail_from.get_or_insert(1);
                self.tail_next(ops);
            }
            TailRequest::Check => {
                let first = frame.items().first().and_then(|e| e.items().first()).and_then(Frame::text);
                if let (Some(first), Some(seen)) = (first.and_then(parse_stream_id), cluster.tail_from)
                    && first > seen
                {
                    self.events_gap(ops);
                }
                self.tail_next(ops);
            }
            TailRequest::Read => {
                // Null: the block timed out with nothing new.
                let mut read = 0;
                for stream in frame.items() {
                    for entry in stream.items().get(1).map(Frame::items).unwrap_or_default() {
                        self.stream_entry(entry, ops);
                        read += 1;
                    }
                }
                // A full batch: this gateway may be falling behind a stream
                // trimmed as it goes; see that the last entry read is still
                // there before reading on.
                if read >= TAIL_BATCH {
                    self.tail_resume(ops);
                } else {
                    self.tail_next(ops);
                }
            }
        }
    }

    /// The stream dropped entries this gateway never saw (trimmed while the
    /// link was down): the log cannot be followed on as if nothing was
    /// missed. It is cleared, event streams are closed (their clients
    /// reconnect with `Last-Event-ID`, which no longer resolves, and get
    /// `event: reset`), and waiting long polls are answered with
    /// `"reset":true`.
    fn events_gap(&mut self, ops: &mut Ops<'_, Proto>) {
        warn!("redis: the event stream was trimmed past the last event seen: event clients start over");
        self.log.clear();
        let (streams, polls) = self.feeds.tokens();
        for token in streams {
            ops.close(token, CloseReason::SlowConsumer);
        }
        for token in polls {
            ops.wake(token);
        }
    }

    /// One stream entry `[id, [field, value, ...]]` into the local log.
    fn stream_entry(&mut self, entry: &OwnedFrame, ops: &mut Ops<'_, Proto>) {
        let items = entry.items();
        let Some(packed) = items.first().and_then(Frame::text).and_then(parse_stream_id) else { return };
        self.cluster_mut().tail_from = Some(packed);
        let fields = items.get(1).map(Frame::items).unwrap_or_default();
        match decode_event(fields) {
            Some((mac, kind, at)) => self.append(mac, kind, at, packed, ops),
            None => debug!("redis: an event stream entry tether cannot read: {entry:?}"),
        }
    }

    /// Appends an event to the fleet's stream (`tether_v1_event`, which also
    /// keeps a location from the collar's holder as its last fix in the
    /// directory); `false` if it could not be sent (the caller keeps it
    /// locally).
    pub(in crate::hub) fn append_to_stream(
        &mut self,
        mac: Mac,
        kind: &EventKind,
        at: u64,
        ops: &mut Ops<'_, Proto>,
    ) -> bool {
        let cluster = self.cluster_mut();
        let history = cluster.history.to_string();
        let epoch = cluster.claims.get(&mac).and_then(|c| c.epoch).map(|e| e.to_string()).unwrap_or_default();
        let (mac_text, at_text) = (mac.to_string(), at.to_string());
        let detail: Vec<(&[u8], String)> = match kind {
            EventKind::Connected { peer } => vec![(b"peer", peer.to_string())],
            EventKind::Disconnected { reason } => vec![(b"reason", reason.as_str().to_string())],
            EventKind::Location { lat, lon } => vec![(b"lat", lat.to_string()), (b"lon", lon.to_string())],
            EventKind::Flapping { takeovers, until_unix_ms } => {
                vec![(b"takeovers", takeovers.to_string()), (b"until", until_unix_ms.to_string())]
            }
        };
        let event_fn = function("event");
        let mut args: Vec<&[u8]> = vec![
            b"FCALL",
            event_fn.as_bytes(),
            b"0",
            history.as_bytes(),
            epoch.as_bytes(),
            b"mac",
            mac_text.as_bytes(),
            b"event",
            kind.name().as_bytes(),
            b"at",
            at_text.as_bytes(),
        ];
        for (name, value) in &detail {
            args.push(name);
            args.push(value.as_bytes());
        }
        self.redis(&args, Pending::Event(Box::new((mac, kind.clone(), at))), ops)
    }
}

/// `MS-SEQ`, packed.
fn parse_stream_id(text: &str) -> Option<u64> {
    let (ms, seq) = text.split_once('-')?;
    pack_stream_id(ms.parse().ok()?, seq.parse().ok()?)
}

/// A stream entry's fields as an event: `mac`, `event`, `at`, and the
/// details of its kind.
fn decode_event(fields: &[OwnedFrame]) -> Option<(Mac, EventKind, u64)> {
    let field =
        |name: &str| fields.chunks_exact(2).find(|pair| pair[0].text() == Some(name)).and_then(|pair| pair[1].text());
    let mac: Mac = field("mac")?.parse().ok()?;
    let at = field("at")?.parse().ok()?;
    let kind = match field("event")? {
        "connected" => EventKind::Connected { peer: Peer::from(field("peer")?.parse::<std::net::SocketAddr>().ok()?) },
        "disconnected" => {
            let reason = field("reason")?;
            EventKind::Disconnected { reason: CloseReason::ALL.into_iter().find(|r| r.as_str() == reason)? }
        }
        "location" => EventKind::Location { lat: field("lat")?.parse().ok()?, lon: field("lon")?.parse().ok()? },
        "flapping" => EventKind::Flapping {
            takeovers: field("takeovers")?.parse().ok()?,
            until_unix_ms: field("until")?.parse().ok()?,
        },
        _ => return None,
    };
    Some((mac, kind, at))
}
