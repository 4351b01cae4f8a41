//! Pushing device events to the app: publishing into the event ring,
//! Server-Sent Events streams, `/events/poll` long polls, and location
//! queries waiting on a collar.
//!
//! Publishing is synchronous and never blocks: each event is rendered once,
//! then written to every matching stream with the ordinary write path. A
//! stream that cannot keep up queues the frame; past `--sse-max-backlog`
//! it is dropped as a slow consumer, and nobody else waits for it. Long
//! polls woken by the event are answered at once.

use std::fmt::Write as _;
use std::io::Write as _;
use std::mem;

use mio::Token;

use super::Reactor;
use crate::connection::Role;
use crate::device::{Fix, Mac};
use crate::events::What;
use crate::http::{Response, State, Wait, json};
use crate::time::write_rfc3339;

/// Most events in one long-poll answer; `next` tells the client where to
/// continue.
const POLL_BATCH: usize = 1000;

impl Reactor {
    /// Records an event and delivers it to every event stream and waiting
    /// long poll that it matches.
    pub(super) fn publish(&mut self, mac: Mac, what: What) {
        let at = self.clock.unix_ms(self.now);
        let event = self.events.publish(mac, what, at);
        self.stats.events_published += 1;
        if self.subscribers.is_empty() && self.pollers.is_empty() {
            return;
        }
        // Rendered once, whatever the number of subscribers.
        let mut frame = String::with_capacity(160);
        event.write_sse(&mut frame);
        let mut targets = mem::take(&mut self.fanout);
        targets.extend(self.subscribers.iter().chain(self.pollers.iter()).copied());
        for token in targets.drain(..) {
            let Some(key) = self.live_key(token) else { continue };
            let Role::Http(http) = &mut self.conns[key].role else { continue };
            match &mut http.state {
                State::Streaming { filter, last_sent } if filter.is_none_or(|f| f == mac) => {
                    *last_sent = self.now;
                    let _ = self.send(key, frame.as_bytes());
                }
                &mut State::Waiting { wait: Wait::Events { since, filter }, .. } if filter.is_none_or(|f| f == mac) => {
                    self.pollers.remove(&token);
                    self.answer_poll(key, since, filter);
                }
                _ => {}
            }
        }
        self.fanout = targets;
    }

    /// Starts an event stream: the head, the reconnect delay, and the
    /// events after `last_event_id` if the client is resuming.
    pub(super) fn start_stream(&mut self, key: usize, filter: Option<Mac>, last_event_id: Option<u64>) {
        let mut buf = Vec::with_capacity(256);
        crate::http::response::write_stream_head(&mut buf, &self.config.cors_origin);
        buf.extend_from_slice(b"retry: 3000\n\n");
        self.stats.http_response(200);
        if let Some(id) = last_event_id {
            let since = self.events.since(id);
            let mut lost = since.lost;
            let mut replay = String::new();
            for event in since.events.filter(|e| filter.is_none_or(|f| f == e.mac)) {
                event.write_sse(&mut replay);
            }
            // A replay larger than half the backlog a stream may hold would
            // only get the client dropped: send the newest part, and a reset.
            let budget = self.config.sse_max_backlog / 2;
            if replay.len() > budget {
                let cut = replay.len() - budget;
                let start =
                    memchr::memmem::find(&replay.as_bytes()[cut..], b"\n\nid: ").map_or(replay.len(), |i| cut + i + 2);
                replay.drain(..start);
                lost = true;
            }
            if lost {
                let latest = self.events.last_id();
                let _ = write!(buf, "event: reset\ndata: {{\"last_event_id\":{id},\"latest\":{latest}}}\n\n");
            }
            buf.extend_from_slice(replay.as_bytes());
        }
        let Role::Http(http) = &mut self.conns[key].role else { return };
        http.state = State::Streaming { filter, last_sent: self.now };
        let token = self.token_of(key);
        self.subscribers.insert(token);
        let _ = self.send(key, &buf);
    }

    /// Answers a waiting long poll with the events after `since` (possibly
    /// none, when its time is up).
    pub(super) fn answer_poll(&mut self, key: usize, since: u64, filter: Option<Mac>) {
        let body = self.poll_body(since, filter);
        self.finish_wait(key, Response::json(200, &body));
    }

    /// Whether a long poll from `since` has something to return now.
    pub(super) fn poll_has_news(&self, since: u64, filter: Option<Mac>) -> bool {
        let since = self.events.since(since);
        since.lost || since.events.clone().any(|e| filter.is_none_or(|f| f == e.mac))
    }

    /// `{"events":[…],"next":N,"reset":bool}`.
    pub(super) fn poll_body(&self, since: u64, filter: Option<Mac>) -> String {
        let found = self.events.since(since);
        let mut body = String::from("{\"events\":[");
        let mut next = self.events.last_id();
        let mut count = 0;
        for event in found.events.filter(|e| filter.is_none_or(|f| f == e.mac)) {
            if count == POLL_BATCH {
                break;
            }
            if count > 0 {
                body.push(',');
            }
            event.write_json(&mut body);
            count += 1;
            next = event.id;
        }
        if count < POLL_BATCH {
            next = self.events.last_id();
        }
        let _ = write!(body, "],\"next\":{next},\"reset\":{}}}", found.lost);
        body
    }

    /// Parks a location query on device connection `device`; sends the
    /// device `location` unless a query is already on the wire.
    pub(super) fn wait_for_location(&mut self, key: usize, device: usize) {
        let waiter = self.token_of(key);
        let device_token = self.token_of(device);
        let waiters = self.location_waits.entry(device_token).or_default();
        waiters.push(waiter);
        // Concurrent queries for one device share the one on the wire.
        if waiters.len() == 1 {
            self.stats.lines_out += 1;
            let _ = self.send(device, crate::device::Reply::LocationQuery.bytes());
        }
    }

    /// Answers every query waiting on device connection `key`: with the new
    /// fix, or 502 when the device went away (`fix` is `None`).
    pub(super) fn answer_location_waiters(&mut self, key: usize, mac: Mac, fix: Option<Fix>) {
        let Some(waiters) = self.location_waits.remove(&self.token_of(key)) else { return };
        let (status, body) = match fix {
            Some(fix) => {
                let mut body = format!("{{\"mac\":\"{mac}\",\"location\":");
                self.write_fix(&mut body, &fix);
                body.push('}');
                (200, body)
            }
            None => (502, json::error("the device disconnected before answering")),
        };
        for waiter in waiters {
            if let Some(waiter) = self.live_key(waiter) {
                self.finish_wait(waiter, Response::json(status, &body));
            }
        }
    }

    /// Drops one waiter from a device's list (it timed out or went away).
    pub(super) fn forget_location_wait(&mut self, device: Token, waiter: Token) {
        if let Some(waiters) = self.location_waits.get_mut(&device) {
            waiters.retain(|&w| w != waiter);
            // With nobody left waiting, the next request asks the device
            // again rather than wait on a query it may never answer.
            if waiters.is_empty() {
                self.location_waits.remove(&device);
            }
        }
    }

    /// `{"lat":…,"lon":…,"at":"…"}`.
    pub(super) fn write_fix(&self, out: &mut String, fix: &Fix) {
        let _ = write!(out, "{{\"lat\":{},\"lon\":{},\"at\":\"", fix.lat, fix.lon);
        write_rfc3339(out, self.clock.unix_ms(fix.at));
        out.push_str("\"}");
    }
}

/// Parses a `Last-Event-ID` header value (ignored if not a number).
pub(super) fn parse_event_id(value: Option<&[u8]>) -> Option<u64> {
    std::str::from_utf8(value?).ok()?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::parse_event_id;

    #[test]
    fn event_ids() {
        assert_eq!(parse_event_id(Some(b" 42 ")), Some(42));
        assert_eq!(parse_event_id(Some(b"x")), None);
        assert_eq!(parse_event_id(None), None);
    }
}
