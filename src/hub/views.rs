//! The JSON shapes of the API's answers, written by `serde_json`.
//!
//! Each view is a plain struct borrowing what it shows; field order is the
//! order on the wire. Times are RFC 3339 strings ([`Rfc3339`]).

use serde::Serialize;

use crate::device::{Fix, Mac};
use crate::events::{Event, EventId, Rfc3339};
use crate::http::json;

/// `{"lat":…,"lon":…,"at":"…"}`.
#[derive(Debug, Serialize)]
pub struct FixView {
    pub lat: f64,
    pub lon: f64,
    pub at: Rfc3339,
}

impl FixView {
    /// `fix`, with its time (`Millis` since the gateway started) as Unix
    /// time in milliseconds given by `unix_ms`.
    pub fn new(fix: &Fix, unix_ms: impl Fn(u64) -> u64) -> FixView {
        FixView { lat: fix.lat, lon: fix.lon, at: Rfc3339(unix_ms(fix.at)) }
    }
}

/// `GET /devices/{mac}` and each entry of `GET /devices`.
#[derive(Debug, Serialize)]
pub struct DeviceView {
    pub mac: Mac,
    pub peer: String,
    pub connected_at: Rfc3339,
    pub last_seen: Rfc3339,
    pub location: Option<FixView>,
}

/// `GET /devices`.
#[derive(Debug, Serialize)]
pub struct DevicesPage {
    pub total: usize,
    pub offset: usize,
    pub limit: usize,
    pub devices: Vec<DeviceView>,
}

/// `GET /devices/{mac}/location`.
#[derive(Debug, Serialize)]
pub struct LocationView {
    pub mac: Mac,
    pub location: FixView,
}

/// `POST /devices/{mac}/commands`.
#[derive(Debug, Serialize)]
pub struct CommandAccepted {
    pub mac: Mac,
    pub accepted: bool,
    pub bytes: usize,
}

/// `GET /health`.
#[derive(Debug, Serialize)]
pub struct Health {
    pub status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uptime_s: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub devices_online: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connections: Option<usize>,
    /// With `--redis`: `up` or `down`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis: Option<&'static str>,
}

/// `GET /events/poll`: `{"events":[…],"next":N,"reset":bool}`.
pub fn poll_body(events: &[&Event], next: EventId, reset: bool) -> Vec<u8> {
    #[derive(Serialize)]
    struct Poll<'a> {
        events: &'a [&'a Event],
        next: EventId,
        reset: bool,
    }
    json::to_vec(&Poll { events, next, reset })
}

/// The `event: reset` frame of a stream whose client missed events after
/// `last_event_id` (`None`: one this gateway does not know): reload the
/// state; `latest` is the newest event id.
pub fn write_reset(out: &mut Vec<u8>, last_event_id: Option<EventId>, latest: EventId) {
    #[derive(Serialize)]
    struct Reset {
        last_event_id: Option<EventId>,
        latest: EventId,
    }
    out.extend_from_slice(b"event: reset\ndata: ");
    out.extend_from_slice(&json::to_vec(&Reset { last_event_id, latest }));
    out.extend_from_slice(b"\n\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::PLAIN;

    #[test]
    fn views_serialize_in_field_order() {
        let fix = Fix { lat: 48.8566, lon: 2.3522, at: 1500 };
        let device = DeviceView {
            mac: Mac([0xCE, 0x96, 0xC2, 0x78, 0x27, 0xFC]),
            peer: "10.0.0.7:4242".into(),
            connected_at: Rfc3339(0),
            last_seen: Rfc3339(2000),
            location: Some(FixView::new(&fix, |at| at)),
        };
        assert_eq!(
            json::to_vec(&device),
            br#"{"mac":"CE:96:C2:78:27:FC","peer":"10.0.0.7:4242","connected_at":"1970-01-01T00:00:00.000Z","last_seen":"1970-01-01T00:00:02.000Z","location":{"lat":48.8566,"lon":2.3522,"at":"1970-01-01T00:00:01.500Z"}}"#
        );
        let draining =
            Health { status: "draining", uptime_s: None, devices_online: None, connections: None, redis: None };
        assert_eq!(json::to_vec(&draining), br#"{"status":"draining"}"#);
        let id = |local| EventId { local, ext: PLAIN };
        assert_eq!(poll_body(&[], id(7), true), br#"{"events":[],"next":7,"reset":true}"#);
        let mut reset = Vec::new();
        write_reset(&mut reset, Some(id(3)), id(9));
        assert_eq!(reset, b"event: reset\ndata: {\"last_event_id\":3,\"latest\":9}\n\n");
    }
}
