//! HTTP connections in the reactor: requests in, responses out, in order.
//!
//! Received bytes accumulate in the connection's `inbuf` until a whole
//! request is there (see [`crate::http::request::parse`]); each is answered
//! before the next is parsed, which keeps pipelined answers in order. A
//! long poll parks the connection (`State::Waiting`) and the requests
//! behind it wait in `inbuf` until it is answered.
//!
//! Fairness: at most [`REQUESTS_PER_TURN`] requests of one connection are
//! answered before the loop moves on; the rest follow in the next turn.
//!
//! Back-pressure: no further request is read while the connection's unsent
//! output is above [`HIGH_WATER`]; parsing resumes when it drains. A client
//! that keeps sending requests without reading the answers is dropped as a
//! slow consumer once its unanswered input passes twice the request size
//! limits.

use std::mem;

use log::debug;

use super::Reactor;
use crate::close::CloseReason;
use crate::connection::{Phase, Role};
use crate::http::response::CONTINUE;
use crate::http::{HttpDue, Parse, Request, Response, State, Wait, json, request};

/// Requests are not read while more than this much output is unsent.
const HIGH_WATER: usize = 64 * 1024;
/// Requests answered per connection before the others get a turn, so a
/// client pipelining costly requests cannot hold the loop.
const REQUESTS_PER_TURN: usize = 16;

/// How one request is to be answered.
#[derive(Debug, Clone, Copy)]
pub(super) struct Exchange {
    /// The connection stays open after the answer.
    pub keep_alive: bool,
    /// A HEAD request: headers only.
    pub head_only: bool,
}

impl Reactor {
    /// Takes one read's bytes for an HTTP connection.
    pub(super) fn http_input(&mut self, key: usize, bytes: &[u8]) {
        // Room for a largest request and as much again pipelined behind it.
        let cap = 2 * (self.http_limits.max_head + self.http_limits.max_body);
        let Role::Http(http) = &mut self.conns[key].role else { return };
        if matches!(http.state, State::Streaming { .. }) {
            // An event stream has nothing to say back; its input is dropped.
            return;
        }
        if http.inbuf.len() + bytes.len() > cap {
            // Requests pile up behind a long poll or unread answers.
            debug!("#{key}: {} bytes of unanswered requests", http.inbuf.len() + bytes.len());
            return self.begin_close(key, CloseReason::SlowConsumer);
        }
        http.received(bytes, self.now);
        self.http_process(key);
    }

    /// Answers the complete requests in `inbuf`, in order, until one is
    /// incomplete, the connection starts waiting or streaming, or its
    /// output is above the high-water mark.
    pub(super) fn http_process(&mut self, key: usize) {
        for answered in 0.. {
            if answered == REQUESTS_PER_TURN {
                // More may be waiting: go on after the other connections.
                let token = self.token_of(key);
                self.resume.push(token);
                break;
            }
            let Some(conn) = self.conns.get_mut(key) else { return };
            let out_len = conn.out.len();
            let Role::Http(http) = &mut conn.role else { return };
            if conn.phase != Phase::Open || http.state != State::Ready || http.inbuf.is_empty() {
                break;
            }
            if out_len > HIGH_WATER || http.awaiting.is_some_and(|total| http.inbuf.len() < total) {
                break;
            }
            // Taken out so the request can borrow it while the handler
            // borrows the reactor; put back (minus the request) after.
            let inbuf = mem::take(&mut http.inbuf);
            match request::parse(&inbuf, self.http_limits) {
                Ok(Parse::PartialHead) => {
                    http.inbuf = inbuf;
                    break;
                }
                Ok(Parse::PartialBody { total, expects_continue }) => {
                    http.inbuf = inbuf;
                    http.awaiting = Some(total);
                    if expects_continue
                        && !mem::replace(&mut http.continue_sent, true)
                        && self.send(key, CONTINUE).is_break()
                    {
                        return;
                    }
                    break;
                }
                Err(e) => {
                    let body = json::error(e.message());
                    return self.respond_closing(key, Response::json(e.status(), &body), CloseReason::BadRequest);
                }
                Ok(Parse::Complete { request, len }) => {
                    self.handle_request(key, &request);
                    let Some(conn) = self.conns.get_mut(key) else { return };
                    let Role::Http(http) = &mut conn.role else { return };
                    http.inbuf = inbuf;
                    http.consumed(len, self.now);
                }
            }
        }
        self.rearm_http(key);
    }

    /// Writes a response, and starts closing the connection if the
    /// exchange does not keep it alive.
    pub(super) fn respond(&mut self, key: usize, exchange: Exchange, response: Response<'_>) {
        self.write_response(key, exchange, response);
        if !exchange.keep_alive && self.conns.contains(key) {
            self.begin_close(key, CloseReason::Completed);
        }
    }

    /// Writes a last response (`Connection: close`) and closes for `reason`.
    pub(super) fn respond_closing(&mut self, key: usize, response: Response<'_>, reason: CloseReason) {
        self.write_response(key, Exchange { keep_alive: false, head_only: false }, response);
        if self.conns.contains(key) {
            self.begin_close(key, reason);
        }
    }

    fn write_response(&mut self, key: usize, exchange: Exchange, response: Response<'_>) {
        let mut buf = mem::take(&mut self.http_out);
        buf.clear();
        response.write(&mut buf, &self.config.cors_origin, exchange.keep_alive, exchange.head_only);
        self.stats.http_response(response.status);
        debug!("#{key} -> HTTP {}", response.status);
        let _ = self.send(key, &buf);
        self.http_out = buf;
    }

    /// A JSON error response: `{"error": message}`.
    pub(super) fn respond_error(&mut self, key: usize, exchange: Exchange, status: u16, message: &str) {
        let body = json::error(message);
        self.respond(key, exchange, Response::json(status, &body));
    }

    /// Ends a long poll with `response` and lets the connection go on with
    /// any requests pipelined behind it.
    pub(super) fn finish_wait(&mut self, key: usize, response: Response<'_>) {
        let Role::Http(http) = &mut self.conns[key].role else { return };
        let State::Waiting { keep_alive, .. } = http.state else { return };
        http.wait_over(self.now);
        // A poll parked before the drain began still closes after its answer.
        let keep_alive = keep_alive && !self.draining();
        self.respond(key, Exchange { keep_alive, head_only: false }, response);
        if self.conns.get(key).is_some_and(|c| c.phase == Phase::Open) {
            self.rearm_http(key);
            let token = self.token_of(key);
            self.resume.push(token);
        }
    }

    /// Goes on with the connections whose pipelined requests were held up.
    pub(super) fn resume_http(&mut self) {
        let mut tokens = mem::take(&mut self.resume);
        for token in tokens.drain(..) {
            if let Some(key) = self.live_key(token) {
                self.http_process(key);
            }
        }
        if self.resume.is_empty() {
            self.resume = tokens;
        }
    }

    /// The connection's output drained: requests held up by the high-water
    /// mark may go on.
    pub(super) fn http_output_drained(&mut self, key: usize) {
        if let Role::Http(http) = &self.conns[key].role
            && http.state == State::Ready
            && !http.inbuf.is_empty()
        {
            let token = self.token_of(key);
            self.resume.push(token);
        }
    }

    /// Files the open connection's next deadline (a closing one keeps its
    /// linger deadline).
    pub(super) fn rearm_http(&mut self, key: usize) {
        let Some(conn) = self.conns.get(key) else { return };
        let Role::Http(http) = &conn.role else { return };
        if conn.phase != Phase::Open {
            return;
        }
        let at = http.next_deadline(&self.http_timeouts);
        self.set_timer(key, at);
    }

    /// The connection's timer fired.
    pub(super) fn http_deadline(&mut self, key: usize) {
        let Role::Http(http) = &mut self.conns[key].role else { return };
        match http.on_deadline(self.now, &self.http_timeouts) {
            HttpDue::Nothing => self.rearm_http(key),
            HttpDue::RequestTimeout => {
                let body = json::error("request not received in time");
                self.respond_closing(key, Response::json(408, &body), CloseReason::RequestTimeout);
            }
            HttpDue::Idle => self.begin_close(key, CloseReason::HttpIdle),
            HttpDue::WaitExpired(Wait::Location { device, .. }) => {
                self.forget_location_wait(device, self.token_of(key));
                let body = json::error("the device did not answer in time");
                self.finish_wait(key, Response::json(504, &body));
            }
            HttpDue::WaitExpired(Wait::Events { since, filter }) => {
                self.pollers.remove(&self.token_of(key));
                self.answer_poll(key, since, filter);
            }
            HttpDue::Keepalive => {
                if let State::Streaming { last_sent, .. } = &mut http.state {
                    *last_sent = self.now;
                }
                if self.send(key, b": keepalive\n\n").is_continue() {
                    self.rearm_http(key);
                }
            }
        }
    }

    /// The connection is leaving `Open`: withdraw its subscription or wait.
    pub(super) fn http_offline(&mut self, key: usize) {
        let token = self.token_of(key);
        let Role::Http(http) = &self.conns[key].role else { return };
        match http.state {
            State::Ready => {}
            State::Streaming { .. } => {
                self.subscribers.remove(&token);
            }
            State::Waiting { wait: Wait::Events { .. }, .. } => {
                self.pollers.remove(&token);
            }
            State::Waiting { wait: Wait::Location { device, .. }, .. } => self.forget_location_wait(device, token),
        }
    }

    /// Shutdown: idle connections and streams close now, long polls are
    /// answered 503, a request in progress is answered (with `Connection:
    /// close`, since the gateway is draining) when it completes.
    pub(super) fn drain_http(&mut self, key: usize) {
        let Role::Http(http) = &self.conns[key].role else { return };
        match http.state {
            State::Ready if http.inbuf.is_empty() => self.begin_close(key, CloseReason::Shutdown),
            State::Ready => {}
            State::Streaming { .. } => self.begin_close(key, CloseReason::Shutdown),
            State::Waiting { .. } => {
                self.http_offline(key);
                if let Role::Http(http) = &mut self.conns[key].role {
                    http.state = State::Ready;
                }
                let body = json::error("the gateway is shutting down");
                self.respond_closing(key, Response::json(503, &body), CloseReason::Shutdown);
            }
        }
    }

    /// Whether `request` carries the API token (always, when none is set).
    pub(super) fn authorized(&self, request: &Request<'_>) -> bool {
        let Some(token) = &self.config.api_token else { return true };
        let from_header = request.authorization.and_then(|value| {
            let (scheme, credentials) = value.split_at(value.iter().position(|&b| b == b' ')?);
            scheme.eq_ignore_ascii_case(b"bearer").then(|| credentials.trim_ascii().to_vec())
        });
        let presented = match from_header {
            Some(credentials) => credentials,
            None => match request.param("access_token") {
                Ok(Some(value)) => value.into_bytes(),
                _ => return false,
            },
        };
        constant_time_eq(&presented, token.as_bytes())
    }
}

/// Compares two secrets in time that depends only on their lengths, so the
/// response time does not reveal how much of a guessed token was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::constant_time_eq;

    #[test]
    fn constant_time_eq_compares() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
        assert!(constant_time_eq(b"", b""));
    }
}
