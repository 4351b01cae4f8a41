//! What sessions ask of the hub, and what the hub answers: the vocabulary
//! between the protocols and the state they share.
//!
//! A session never touches another connection. A collar that identifies,
//! reports a fix or goes away returns an [`Effect`] saying so; an HTTP
//! request that needs the fleet's state returns [`Effect::Ask`] with a
//! [`Query`] and waits for the [`Reply`]. The reactor hands each effect to
//! the hub after the session's call (`crate::hub::Hub::apply`), and
//! delivers replies to the session that asked.

use crate::close::CloseReason;
use crate::device::{Fix, Mac};
use crate::events::EventRef;
use crate::redis::codec::OwnedFrame;

/// Work for the hub, from the session on one connection (its origin).
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// The collar identified as `mac`: it goes online, replacing an older
    /// connection with that MAC, unless the MAC is quarantined. Answered
    /// with [`Reply::Admitted`] or [`Reply::Refused`].
    Identified { mac: Mac },
    /// The collar reported a fix.
    Located { mac: Mac, fix: Fix },
    /// The identified collar is leaving, for `reason`.
    Offline { mac: Mac, reason: CloseReason },
    /// An HTTP request the hub must answer; a [`Reply`] follows.
    Ask(Query),
    /// The origin's wait or event stream ends (it was answered, timed out,
    /// or its connection is closing): forget it.
    Withdraw,
    /// News from a link the hub dialed (Redis).
    Link(LinkEvent),
}

/// What a link's session reports.
#[derive(Debug, Clone, PartialEq)]
pub enum LinkEvent {
    /// A whole reply or message, in the order received.
    Frame(OwnedFrame),
    /// Every other connection has closed (shutdown): finish.
    Drain,
    /// The link is closing for this reason.
    Closed(CloseReason),
}

/// A request that needs the shared state.
#[derive(Debug, Clone, PartialEq)]
pub enum Query {
    /// `GET /health`.
    Health,
    /// `GET /metrics`.
    Metrics,
    /// `GET /stats`: the figures of `/metrics` as JSON.
    Stats,
    /// `GET /devices`.
    Devices { after: Option<Mac>, offset: usize, limit: usize },
    /// `GET /devices/{mac}`.
    Device(Mac),
    /// `POST /devices/{mac}/commands`: write `line` (no terminator) to the
    /// collar.
    Command { mac: Mac, line: Vec<u8> },
    /// `GET /devices/{mac}/location`: ask the collar and wait for its fix.
    Location(Mac),
    /// `GET /events`: turn the connection into an event stream.
    Stream { filter: Option<Mac>, last_event_id: Option<EventRef> },
    /// `GET /events/poll`: the events after `since` (`None`: from now), or
    /// wait for the first; `wait: false` answers at once either way.
    Poll { since: Option<EventRef>, filter: Option<Mac>, wait: bool },
    /// The origin's wait timed out: its final answer (504 for a location,
    /// an empty list for a poll).
    Expired,
}

/// The hub's answer to a [`Query`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// The response: status, content type and body.
    Answer(Answer),
    /// The connection is an event stream from now on; the hub produces its
    /// events.
    Stream,
    /// To a collar that identified: it is online (answer `OK`).
    Admitted,
    /// To a collar that identified: it may not go online, and is closed
    /// for this reason (`flapping`).
    Refused(CloseReason),
}

/// A response's status and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Vec<u8>,
}

impl Answer {
    pub const JSON: &'static str = "application/json";
    pub const PROMETHEUS: &'static str = "text/plain; version=0.0.4; charset=utf-8";

    /// A JSON answer.
    pub fn json(status: u16, body: Vec<u8>) -> Answer {
        Answer { status, content_type: Answer::JSON, body }
    }

    /// A JSON error answer: `{"error":"<message>"}`.
    pub fn error(status: u16, message: &str) -> Answer {
        Answer::json(status, crate::http::json::error(message))
    }
}
