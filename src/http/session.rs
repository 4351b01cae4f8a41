//! One HTTP/1.1 connection as the reactor drives it (sans-IO): request
//! sequencing, keep-alive, pipelining, `100 Continue`, long polls, event
//! streams and the HTTP deadlines.
//!
//! Received bytes accumulate in `inbuf` until a whole request is there
//! (head by `httparse`, body by `Content-Length` or chunked); requests are
//! answered strictly in order, at most [`crate::reactor::Budgets::requests`]
//! per call, the rest on the next turn ([`Session::has_work`]). A request
//! [`api::decide`]d to need the hub's state is asked as an [`Effect::Ask`], and
//! the connection waits (`Awaiting`) for the [`Reply`]: at once for most,
//! later for a long poll. Requests pipelined behind it stay in `inbuf`, so
//! answers go out in order. `GET /events` turns the connection into a
//! `Streaming` one for good: the hub produces its events.
//!
//! Input is bounded by one request: while `inbuf` holds a whole request's
//! worth (`2 * max_head + max_body`: a chunked body's framing may take
//! another `max_head`), the session takes no more input, and
//! while its output is backed up past `pause_above` the reactor does not
//! read: a client that pipelines a million requests and reads the answers
//! gets every answer, in order, in bounded memory.
//!
//! The connection has one deadline, derived from its state
//! ([`HttpSession::deadline`]): the request timeout while a request is
//! incomplete, the keep-alive idle timeout between requests, the long
//! poll's own deadline while awaiting, the keepalive comment while
//! streaming.

use std::mem;
use std::time::Duration;

use log::debug;

use super::api::{self, Decision};
use super::chunked::Chunked;
use super::request::{self, Body, Head, Limits, RequestError};
use super::response::{self, Response};
use crate::close::CloseReason;
use crate::effect::{Answer, Effect, Query, Reply};
use crate::reactor::Budget;
use crate::reactor::{CxOf, Next, OutputLimit, Session};
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
    /// An event stream gets a `: keepalive` comment this often.
    pub sse_keepalive: Duration,
}

/// The HTTP side's settings.
#[derive(Debug, Clone)]
pub struct HttpSettings {
    pub limits: Limits,
    pub timeouts: HttpTimeouts,
    /// `Access-Control-Allow-Origin` on every response.
    pub cors_origin: String,
    /// The bearer token every endpoint but `/health` requires.
    pub api_token: Option<String>,
    /// Longest `timeout=` of a long poll.
    pub max_wait: Duration,
    /// Longest command line (the collars' `--max-line` minus its `\n`).
    pub max_command: usize,
    /// Input is not read while more than this much output is unsent.
    pub pause_above: usize,
}

/// How one request is to be answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Exchange {
    /// The connection stays open after the answer.
    keep_alive: bool,
    /// A HEAD request: headers only.
    head_only: bool,
}

#[derive(Debug, PartialEq, Eq)]
enum State {
    /// Reading and answering requests.
    Reading,
    /// Waiting for the hub's reply to a request; a long poll until `until`.
    Awaiting { exchange: Exchange, until: Option<Millis> },
    /// An event stream: the rest of the connection belongs to the hub's
    /// events.
    Streaming,
}

/// Bytes received and not yet consumed by a complete request: the request
/// in progress and any pipelined after it. Answered requests are skipped
/// over rather than drained one by one (which would move the rest of the
/// buffer for every request of a pipeline); the dead prefix is reclaimed
/// when more arrives, and the buffer freed once it is all consumed, so an
/// idle keep-alive connection holds none.
#[derive(Debug, Default)]
struct InBuf {
    bytes: Vec<u8>,
    /// Where the unconsumed bytes start.
    start: usize,
}

impl InBuf {
    fn unread(&self) -> &[u8] {
        &self.bytes[self.start..]
    }

    fn len(&self) -> usize {
        self.bytes.len() - self.start
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn push(&mut self, input: &[u8]) {
        if self.start > 0 {
            self.bytes.drain(..self.start);
            self.start = 0;
        }
        self.bytes.extend_from_slice(input);
    }

    fn consume(&mut self, n: usize) {
        self.start += n;
        if self.start >= self.bytes.len() {
            *self = InBuf::default();
        }
    }
}

/// The request at the front of `inbuf`, once its head is parsed.
#[derive(Debug)]
enum Front {
    /// A `Content-Length` body: the whole request is this long.
    Length { total: usize },
    /// A chunked body being decoded after a head of `head_len` bytes.
    Chunked { head_len: usize, body: Box<Chunked> },
}

/// One HTTP connection's state.
#[derive(Debug)]
pub struct HttpSession {
    /// Bytes received and not yet consumed by a complete request.
    inbuf: InBuf,
    /// What is known of the request at the front of `inbuf`, so that its
    /// head is not parsed again for each piece of the body.
    front: Option<Front>,
    /// Whether `100 Continue` went out for the request in progress.
    continue_sent: bool,
    /// When the request in progress started (its first byte, or the
    /// connection's accept), or, between requests, when the connection
    /// became idle; while streaming, when the last keepalive went out.
    mark: Millis,
    /// Requests answered on this connection.
    served: u64,
    state: State,
    /// The request budget ran out with requests left in `inbuf`.
    more: bool,
    /// The turn in which `answered` requests were answered.
    turn: u64,
    answered: usize,
}

impl HttpSession {
    pub fn new(now: Millis) -> HttpSession {
        HttpSession {
            inbuf: InBuf::default(),
            front: None,
            continue_sent: false,
            mark: now,
            served: 0,
            state: State::Reading,
            more: false,
            turn: 0,
            answered: 0,
        }
    }

    /// Between requests: nothing received of the next one, at least one
    /// answered. (A new connection is not idle: it owes its first request.)
    fn idle(&self) -> bool {
        self.state == State::Reading && self.inbuf.is_empty() && self.served > 0
    }

    /// Answers the complete requests in `inbuf`, in order, until one is
    /// incomplete, the connection awaits a reply or streams, or the budget
    /// is spent.
    fn process(&mut self, cx: &mut CxOf<'_, Self>) -> Next {
        // The budget is per turn, not per call: a reply from the hub comes
        // back in the same turn and goes on with what is left of it.
        if self.turn != cx.turn() {
            self.turn = cx.turn();
            self.answered = 0;
        }
        loop {
            self.more = false;
            if self.state != State::Reading || self.inbuf.is_empty() {
                return Next::Continue;
            }
            if self.answered >= cx.budgets.requests {
                self.more = true;
                cx.stats.budget_spent(Budget::Requests);
                return Next::Continue;
            }
            // Taken out so the request can borrow it while the session
            // changes; put back, minus the request, after.
            let inbuf = mem::take(&mut self.inbuf);
            let (len, next) = match self.front(inbuf.unread(), cx) {
                Ok(Some((head, len))) => (len, self.handle(&head, &inbuf.unread()[head.len..len], cx)),
                Ok(None) => (0, Next::Continue),
                Err(e) => {
                    let exchange = Exchange { keep_alive: false, head_only: false };
                    self.respond(cx, exchange, &Answer::error(e.status(), e.message()), &[]);
                    (0, Next::Close(CloseReason::BadRequest))
                }
            };
            self.inbuf = inbuf;
            if len == 0 {
                return next;
            }
            self.answered += 1;
            self.consumed(len, cx.now);
            if next != Next::Continue {
                return next;
            }
        }
    }

    /// The complete request at the front of `buf` (the unread input): its
    /// head and its whole length; `None` while it is incomplete. A request
    /// that arrives whole is parsed once; one whose body arrives later has
    /// its head parsed again when the body is complete.
    fn front<'b>(&mut self, buf: &'b [u8], cx: &mut CxOf<'_, Self>) -> Result<Option<(Head<'b>, usize)>, RequestError> {
        let limits = cx.config.limits;
        let len = match &mut self.front {
            Some(Front::Length { total }) => (buf.len() >= *total).then_some(*total),
            Some(Front::Chunked { head_len, body }) => body.feed(&buf[*head_len..], limits)?.map(|n| *head_len + n),
            None => {
                let Some(head) = request::parse_head(buf, limits)? else { return Ok(None) };
                let complete = match head.body {
                    Body::Length(n) => {
                        let total = head.len + n;
                        self.front = Some(Front::Length { total });
                        (buf.len() >= total).then_some(total)
                    }
                    Body::Chunked => {
                        let mut body = Box::<Chunked>::default();
                        let done = body.feed(&buf[head.len..], limits)?.map(|n| head.len + n);
                        self.front = Some(Front::Chunked { head_len: head.len, body });
                        done
                    }
                };
                if complete.is_none() && head.expects_continue && !mem::replace(&mut self.continue_sent, true) {
                    cx.send(response::CONTINUE);
                }
                return Ok(complete.map(|len| (head, len)));
            }
        };
        let Some(len) = len else { return Ok(None) };
        // The head parsed before; it parses the same way again.
        let head = request::parse_head(buf, limits)?.ok_or(RequestError::Malformed("malformed request"))?;
        Ok(Some((head, len)))
    }

    /// Handles a complete request: its head, and its body as sent.
    fn handle(&mut self, head: &Head<'_>, sent: &[u8], cx: &mut CxOf<'_, Self>) -> Next {
        let body: &[u8] = match &self.front {
            Some(Front::Chunked { body, .. }) => &body.body,
            _ => sent,
        };
        if log::log_enabled!(log::Level::Debug) {
            debug!("{:?} HTTP {:?} {}{}", cx.token, head.method, head.path, api::redacted_query(head.query));
        }
        let exchange =
            Exchange { keep_alive: head.keep_alive && !cx.draining, head_only: head.method == request::Method::Head };
        match api::decide(head, body, cx.config, cx.now, cx.draining) {
            Decision::Respond(answer, headers) => self.answer(cx, exchange, &answer, &headers),
            Decision::Ask(query, until) => {
                cx.effects.push(Effect::Ask(query));
                self.state = State::Awaiting { exchange, until };
                Next::Continue
            }
        }
    }

    /// Drops a handled request from `inbuf`; the next one is timed from now.
    fn consumed(&mut self, len: usize, now: Millis) {
        self.inbuf.consume(len);
        self.front = None;
        self.continue_sent = false;
        self.served += 1;
        self.mark = now;
    }

    /// Writes a response and closes the connection after it unless the
    /// exchange keeps it alive.
    fn answer(
        &mut self,
        cx: &mut CxOf<'_, Self>,
        exchange: Exchange,
        answer: &Answer,
        headers: &[(&'static str, &'static str)],
    ) -> Next {
        self.respond(cx, exchange, answer, headers);
        if exchange.keep_alive { Next::Continue } else { Next::Close(CloseReason::Completed) }
    }

    fn respond(
        &self,
        cx: &mut CxOf<'_, Self>,
        exchange: Exchange,
        answer: &Answer,
        headers: &[(&'static str, &'static str)],
    ) {
        let response =
            Response { status: answer.status, content_type: answer.content_type, body: &answer.body, headers };
        let cors = &cx.config.cors_origin;
        cx.out.append_with(cx.pool, |buf| response.write(buf, cors, exchange.keep_alive, exchange.head_only));
        cx.stats.http_response(answer.status);
        debug!("{:?} -> HTTP {}", cx.token, answer.status);
    }
}

impl Session for HttpSession {
    type Config = HttpSettings;
    type Effect = Effect;
    type Reply = Reply;

    fn on_input(&mut self, input: &[u8], cx: &mut CxOf<'_, Self>) -> Next {
        if self.state == State::Streaming {
            // An event stream has nothing to say back; its input is dropped.
            return Next::Continue;
        }
        if self.inbuf.is_empty() && self.served > 0 && self.state == State::Reading {
            // The first byte of a new request starts its clock.
            self.mark = cx.now;
        }
        self.inbuf.push(input);
        self.process(cx)
    }

    fn on_resume(&mut self, cx: &mut CxOf<'_, Self>) -> Next {
        self.process(cx)
    }

    fn on_reply(&mut self, reply: Reply, cx: &mut CxOf<'_, Self>) -> Next {
        let State::Awaiting { exchange, .. } = self.state else { return Next::Continue };
        match reply {
            // Only a collar is admitted or refused.
            Reply::Admitted | Reply::Refused(_) => Next::Continue,
            Reply::Stream => {
                // The connection belongs to the stream: whatever was sent
                // behind the request will never be read.
                self.inbuf = InBuf::default();
                self.front = None;
                cx.send_with(|buf| response::write_stream_head(buf, &cx.config.cors_origin));
                cx.send(b"retry: 3000\n\n");
                cx.stats.http_response(200);
                self.state = State::Streaming;
                self.mark = cx.now;
                Next::Continue
            }
            Reply::Answer(answer) => {
                // A wait that began before the drain still closes after it.
                let exchange = Exchange { keep_alive: exchange.keep_alive && !cx.draining, ..exchange };
                self.state = State::Reading;
                // The idle clock (or a pipelined request's) starts now, not
                // when the request came in.
                self.mark = cx.now;
                match self.answer(cx, exchange, &answer, &[]) {
                    Next::Continue => self.process(cx),
                    close => close,
                }
            }
        }
    }

    fn on_deadline(&mut self, cx: &mut CxOf<'_, Self>) -> Next {
        let passed = |at: Option<Millis>| at.is_some_and(|at| cx.now >= at);
        match self.state {
            State::Reading if self.idle() && passed(deadline(self.mark, cx.config.timeouts.idle)) => {
                Next::Close(CloseReason::HttpIdle)
            }
            State::Reading if !self.idle() && passed(deadline(self.mark, cx.config.timeouts.request)) => {
                Next::Close(CloseReason::RequestTimeout)
            }
            State::Awaiting { exchange, until } if passed(until) => {
                // The hub gives the final answer (504, or an empty list).
                self.state = State::Awaiting { exchange, until: None };
                cx.effects.push(Effect::Ask(Query::Expired));
                Next::Continue
            }
            State::Streaming if passed(deadline(self.mark, cx.config.timeouts.sse_keepalive)) => {
                self.mark = cx.now;
                if cx.out.is_empty() {
                    cx.send(b": keepalive\n\n");
                }
                Next::Continue
            }
            _ => Next::Continue,
        }
    }

    fn on_drain(&mut self, cx: &mut CxOf<'_, Self>) -> Next {
        match self.state {
            // A request in progress is answered (with `Connection: close`).
            State::Reading if !self.inbuf.is_empty() => Next::Continue,
            State::Reading | State::Streaming => Next::Close(CloseReason::Shutdown),
            State::Awaiting { .. } => {
                cx.effects.push(Effect::Withdraw);
                self.state = State::Reading;
                let exchange = Exchange { keep_alive: false, head_only: false };
                self.respond(cx, exchange, &Answer::error(503, "the gateway is shutting down"), &[]);
                Next::Close(CloseReason::Shutdown)
            }
        }
    }

    fn on_close(&mut self, reason: CloseReason, cx: &mut CxOf<'_, Self>) {
        match reason {
            CloseReason::RequestTimeout => {
                let exchange = Exchange { keep_alive: false, head_only: false };
                self.respond(cx, exchange, &Answer::error(408, "request not received in time"), &[]);
            }
            // The peer is not reading: what it has not read is dropped.
            CloseReason::SlowConsumer => cx.out.clear(cx.pool),
            _ => {}
        }
        if matches!(self.state, State::Awaiting { .. } | State::Streaming) {
            cx.effects.push(Effect::Withdraw);
        }
    }

    fn deadline(&self, config: &HttpSettings, _last_rx: Millis) -> Option<Millis> {
        let t = &config.timeouts;
        match self.state {
            State::Reading if self.idle() => deadline(self.mark, t.idle),
            State::Reading => deadline(self.mark, t.request),
            State::Awaiting { until, .. } => until,
            State::Streaming => deadline(self.mark, t.sse_keepalive),
        }
    }

    fn wants_input(&self, config: &HttpSettings) -> bool {
        match self.state {
            State::Streaming => true,
            // One request's worth: what is sent beyond it waits in the
            // kernel until the requests ahead are answered. A request takes
            // up to `max_head` for its head, as much again for a chunked
            // body's framing (size lines, CRLFs, trailers), and `max_body`.
            _ => self.inbuf.len() < 2 * config.limits.max_head + config.limits.max_body,
        }
    }

    fn has_work(&self) -> bool {
        self.more
    }

    fn idle_since(&self) -> Option<Millis> {
        // Idle between requests, or a new connection that has sent nothing.
        (self.state == State::Reading && self.inbuf.is_empty()).then_some(self.mark)
    }

    fn output_limit(&self, config: &HttpSettings) -> OutputLimit {
        OutputLimit::PauseAbove(config.pause_above)
    }
}

#[cfg(test)]
mod tests;
