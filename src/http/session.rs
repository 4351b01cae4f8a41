//! The state of one HTTP connection between reads, and its deadlines
//! (sans-IO).
//!
//! An HTTP connection is `Ready` while it reads and answers requests one
//! after another (keep-alive, pipelining). A long poll puts it in
//! `Waiting` until its answer is known or its timeout passes; requests
//! pipelined behind it stay in `inbuf` until then, so answers go out in
//! order. `GET /events` turns it into a `Streaming` connection for good.
//!
//! Like the device session, the connection has one timer, and
//! [`HttpSession::next_deadline`] derives it from the state: the request
//! timeout while a request is incomplete, the keep-alive idle timeout
//! between requests, the poll's own deadline while waiting, and the next
//! keepalive comment while streaming.

use std::time::Duration;

use mio::Token;

use crate::device::Mac;
use crate::time::{Millis, deadline};

/// The HTTP deadlines.
#[derive(Debug, Clone, Copy)]
pub struct HttpTimeouts {
    /// A request (head and body) must be complete this long after its first
    /// byte (or after the connection opened, for the first request).
    pub request: Duration,
    /// A keep-alive connection with no request in progress is closed after
    /// this long.
    pub idle: Duration,
    /// An event stream with nothing to send gets a `: keepalive` comment
    /// this often.
    pub sse_keepalive: Duration,
}

/// A long poll in progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// `GET /devices/{mac}/location`: waiting for that device connection's
    /// `LOCATION:` line.
    Location { device: Token, mac: Mac },
    /// `GET /events/poll`: waiting for an event after `since`.
    Events { since: u64, filter: Option<Mac> },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Reading and answering requests.
    Ready,
    /// Holding a long poll until `until`.
    Waiting {
        wait: Wait,
        until: Millis,
        /// Whether the connection stays open after the answer.
        keep_alive: bool,
    },
    /// Sending Server-Sent Events; the connection belongs to the stream.
    Streaming {
        filter: Option<Mac>,
        /// When bytes last went out, for the keepalive comment.
        last_sent: Millis,
    },
}

/// What a deadline check found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpDue {
    Nothing,
    /// A request did not arrive in full in time: answer 408 and close.
    RequestTimeout,
    /// Keep-alive idle for too long: close without a word.
    Idle,
    /// The long poll's time is up: answer it (504, or an empty event list).
    WaitExpired(Wait),
    /// Send the event stream's keepalive comment.
    Keepalive,
}

/// One HTTP connection's state.
#[derive(Debug)]
pub struct HttpSession {
    /// Bytes received and not yet consumed by a complete request:
    /// the request in progress and any pipelined after it.
    pub inbuf: Vec<u8>,
    /// Once the head of the request in progress has been parsed, its total
    /// length (head + body), so the head is not parsed again for each
    /// piece of the body.
    pub awaiting: Option<usize>,
    /// Whether `100 Continue` went out for the request in progress.
    pub continue_sent: bool,
    /// When the request in progress started (its first byte, or the
    /// connection's accept), or, with `inbuf` empty after a response, when
    /// the connection became idle.
    pub mark: Millis,
    /// Requests answered on this connection.
    pub served: u64,
    pub state: State,
}

impl HttpSession {
    pub fn new(now: Millis) -> HttpSession {
        HttpSession {
            inbuf: Vec::new(),
            awaiting: None,
            continue_sent: false,
            mark: now,
            served: 0,
            state: State::Ready,
        }
    }

    /// Between requests: nothing received of the next one, at least one
    /// answered. (A new connection is not idle: it owes its first request.)
    fn idle(&self) -> bool {
        self.inbuf.is_empty() && self.served > 0
    }

    /// Appends received bytes, starting the request clock if they begin a
    /// new request.
    pub fn received(&mut self, bytes: &[u8], now: Millis) {
        if self.inbuf.is_empty() && self.served > 0 && self.state == State::Ready {
            self.mark = now;
        }
        self.inbuf.extend_from_slice(bytes);
    }

    /// Ends a long poll: back to reading requests, with the keep-alive idle
    /// clock (or the clock of a pipelined request) starting now rather
    /// than when the poll began.
    pub fn wait_over(&mut self, now: Millis) {
        self.state = State::Ready;
        self.mark = now;
    }

    /// Drops a complete request of `len` bytes from the front of `inbuf`
    /// and readies for the next one.
    pub fn consumed(&mut self, len: usize, now: Millis) {
        self.inbuf.drain(..len);
        if self.inbuf.is_empty() {
            // Free the buffer: an idle keep-alive connection owns nothing.
            self.inbuf = Vec::new();
        }
        self.awaiting = None;
        self.continue_sent = false;
        self.served += 1;
        self.mark = now;
    }

    pub fn next_deadline(&self, t: &HttpTimeouts) -> Option<Millis> {
        match self.state {
            State::Ready if self.idle() => deadline(self.mark, t.idle),
            State::Ready => deadline(self.mark, t.request),
            State::Waiting { until, .. } => Some(until),
            State::Streaming { last_sent, .. } => deadline(last_sent, t.sse_keepalive),
        }
    }

    pub fn on_deadline(&self, now: Millis, t: &HttpTimeouts) -> HttpDue {
        let passed = self.next_deadline(t).is_some_and(|at| now >= at);
        if !passed {
            return HttpDue::Nothing;
        }
        match self.state {
            State::Ready if self.idle() => HttpDue::Idle,
            State::Ready => HttpDue::RequestTimeout,
            State::Waiting { wait, .. } => HttpDue::WaitExpired(wait),
            State::Streaming { .. } => HttpDue::Keepalive,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: HttpTimeouts = HttpTimeouts {
        request: Duration::from_millis(100),
        idle: Duration::from_millis(1000),
        sse_keepalive: Duration::from_millis(500),
    };

    #[test]
    fn a_new_connection_owes_a_request() {
        let s = HttpSession::new(10);
        assert_eq!(s.next_deadline(&T), Some(110));
        assert_eq!(s.on_deadline(109, &T), HttpDue::Nothing);
        assert_eq!(s.on_deadline(110, &T), HttpDue::RequestTimeout);
    }

    #[test]
    fn keep_alive_idle_then_a_new_request_restarts_the_clock() {
        let mut s = HttpSession::new(0);
        s.received(b"GET / HTTP/1.1\r\n\r\n", 5);
        s.consumed(18, 20);
        assert_eq!(s.next_deadline(&T), Some(1020), "idle between requests");
        assert_eq!(s.on_deadline(1020, &T), HttpDue::Idle);
        s.received(b"GET", 500);
        assert_eq!(s.next_deadline(&T), Some(600), "a partial request has the request timeout");
        s.received(b" / HTTP/1.1", 550);
        assert_eq!(s.next_deadline(&T), Some(600), "more bytes of the same request do not extend it");
        assert_eq!(s.on_deadline(600, &T), HttpDue::RequestTimeout);
    }

    #[test]
    fn consumed_keeps_pipelined_bytes_and_frees_when_empty() {
        let mut s = HttpSession::new(0);
        s.received(b"AAAABBB", 1);
        s.awaiting = Some(4);
        s.consumed(4, 2);
        assert_eq!(s.inbuf, b"BBB");
        assert_eq!(s.awaiting, None);
        assert_eq!(s.next_deadline(&T), Some(102), "the pipelined request is timed from now");
        s.consumed(3, 3);
        assert_eq!(s.inbuf.capacity(), 0);
        assert_eq!(s.served, 2);
    }

    #[test]
    fn the_idle_clock_restarts_when_a_long_poll_ends() {
        let mut s = HttpSession::new(0);
        s.received(b"GET /events/poll HTTP/1.1\r\n\r\n", 1);
        s.consumed(s.inbuf.len(), 2);
        s.state = State::Waiting { wait: Wait::Events { since: 0, filter: None }, until: 5000, keep_alive: true };
        s.wait_over(4000);
        assert_eq!(s.next_deadline(&T), Some(5000), "idle from the answer, not from the request");
    }

    #[test]
    fn waiting_and_streaming_deadlines() {
        let mut s = HttpSession::new(0);
        let wait = Wait::Events { since: 3, filter: None };
        s.state = State::Waiting { wait, until: 700, keep_alive: true };
        assert_eq!(s.next_deadline(&T), Some(700));
        assert_eq!(s.on_deadline(700, &T), HttpDue::WaitExpired(wait));
        s.state = State::Streaming { filter: None, last_sent: 100 };
        assert_eq!(s.next_deadline(&T), Some(600));
        assert_eq!(s.on_deadline(599, &T), HttpDue::Nothing);
        assert_eq!(s.on_deadline(600, &T), HttpDue::Keepalive);
    }
}
