//! The session driven by hand, as the reactor would drive it: bytes in,
//! a made-up `now`, and the exact bytes it appends to its output. No
//! socket and no hub: effects are read off the harness and replies are
//! handed in with `on_reply`.

use super::*;
use crate::device::Mac;
use crate::http::request::Limits;
use crate::reactor::session::Parts;

const MAC: Mac = Mac([0xCE, 0x96, 0xC2, 0x78, 0x27, 0xFC]);
/// A request with a `Content-Length` body that the hub must answer.
const COMMAND: &str = "POST /devices/CE:96:C2:78:27:FC/commands HTTP/1.1\r\nContent-Length: 6\r\n\r\nREBOOT";
/// The same request with a chunked body, a chunk extension and a trailer.
const CHUNKED: &str = "POST /devices/CE:96:C2:78:27:FC/commands HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n\
                       3\r\nREB\r\n3;ext=1\r\nOOT\r\n0\r\nX-Trailer: 1\r\n\r\n";
/// A request answered at once, without the hub (22 bytes).
const NOPE: &str = "GET /nope HTTP/1.1\r\n\r\n";
const HEALTH: &str = "GET /health HTTP/1.1\r\n\r\n";
const REQUEST_MS: Millis = 100;
const IDLE_MS: Millis = 1000;
const KEEPALIVE_MS: Millis = 500;

fn settings() -> HttpSettings {
    HttpSettings {
        limits: Limits { max_head: 256, max_body: 16 },
        timeouts: HttpTimeouts {
            request: Duration::from_millis(REQUEST_MS),
            idle: Duration::from_millis(IDLE_MS),
            sse_keepalive: Duration::from_millis(KEEPALIVE_MS),
        },
        cors_origin: "*".into(),
        api_token: None,
        max_wait: Duration::from_secs(60),
        max_command: 16,
        pause_above: 1024,
    }
}

/// A session with its own output, effects and stats, driven by hand.
struct Harness {
    session: HttpSession,
    settings: HttpSettings,
    parts: Parts<Effect>,
}

impl Harness {
    /// A connection accepted at `now`.
    fn new(now: Millis) -> Harness {
        Harness { session: HttpSession::new(now), settings: settings(), parts: Parts::default() }
    }

    /// One call at `now`, which is also the turn: calls at the same
    /// time share a turn's request budget.
    fn with<R>(&mut self, now: Millis, f: impl FnOnce(&mut HttpSession, &mut CxOf<'_, HttpSession>) -> R) -> R {
        self.parts.stats.loop_iterations = now + 1;
        f(&mut self.session, &mut self.parts.cx(&self.settings, now, now))
    }

    fn input(&mut self, now: Millis, bytes: &str) -> Next {
        self.with(now, |s, cx| s.on_input(bytes.as_bytes(), cx))
    }

    fn resume(&mut self, now: Millis) -> Next {
        self.with(now, |s, cx| s.on_resume(cx))
    }

    fn reply(&mut self, now: Millis, reply: Reply) -> Next {
        self.with(now, |s, cx| s.on_reply(reply, cx))
    }

    fn deadline_passed(&mut self, now: Millis) -> Next {
        self.with(now, |s, cx| s.on_deadline(cx))
    }

    fn drain(&mut self, now: Millis) -> Next {
        self.with(now, |s, cx| s.on_drain(cx))
    }

    fn close(&mut self, now: Millis, reason: CloseReason) {
        self.with(now, |s, cx| s.on_close(reason, cx));
    }

    /// The session's deadline, as the reactor files it.
    fn deadline(&self) -> Option<Millis> {
        self.session.deadline(&self.settings, 0)
    }

    fn wants_input(&self) -> bool {
        self.session.wants_input(&self.settings)
    }

    /// The output so far, taken.
    fn sent(&mut self) -> String {
        let text = String::from_utf8(self.parts.out.pending().to_vec()).unwrap();
        self.parts.out.clear(&mut self.parts.pool);
        text
    }

    /// The effects so far, taken.
    fn effects(&mut self) -> Vec<Effect> {
        mem::take(&mut self.parts.effects)
    }
}

/// A JSON response as `Response::write` lays it out.
fn json(status: u16, body: &str, close: bool) -> String {
    format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
         Cache-Control: no-store\r\nAccess-Control-Allow-Origin: *\r\n{}\r\n{body}",
        response::reason(status),
        body.len(),
        if close { "Connection: close\r\n" } else { "" }
    )
}

/// An error response: `{"error":"<message>"}`.
fn error(status: u16, message: &str, close: bool) -> String {
    json(status, &format!("{{\"error\":\"{message}\"}}"), close)
}

fn not_found() -> String {
    error(404, "no such endpoint", false)
}

fn answer(status: u16, body: &str) -> Reply {
    Reply::Answer(Answer::json(status, body.as_bytes().to_vec()))
}

fn command_query() -> Effect {
    Effect::Ask(Query::Command { mac: MAC, line: b"REBOOT".to_vec() })
}

#[test]
fn the_response_layout_is_pinned() {
    // `json` above is checked once against literal bytes, so that every
    // other test's expectation is the wire format and not a copy of it.
    assert_eq!(
        json(200, "{}", false),
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\
         Cache-Control: no-store\r\nAccess-Control-Allow-Origin: *\r\n\r\n{}"
    );
    let mut h = Harness::new(0);
    assert_eq!(h.input(1, NOPE), Next::Continue);
    assert_eq!(
        h.sent(),
        "HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\nContent-Length: 28\r\n\
         Cache-Control: no-store\r\nAccess-Control-Allow-Origin: *\r\n\r\n{\"error\":\"no such endpoint\"}"
    );
    assert_eq!(h.parts.stats.http_responses.get(&404), Some(&1));
}

#[test]
fn a_content_length_request_split_anywhere_is_asked_once_whole() {
    let wire = COMMAND.as_bytes();
    for a in 1..wire.len() {
        for b in a..wire.len() {
            let mut h = Harness::new(0);
            for piece in [&COMMAND[..a], &COMMAND[a..b]] {
                assert_eq!(h.input(1, piece), Next::Continue);
                assert!(h.parts.effects.is_empty(), "asked before the whole request (cuts {a}, {b})");
            }
            assert_eq!(h.input(2, &COMMAND[b..]), Next::Continue);
            assert_eq!(h.effects(), vec![command_query()], "cuts {a}, {b}");
            assert_eq!(h.sent(), "", "nothing is said before the hub answers");
        }
    }
}

#[test]
fn a_chunked_request_split_anywhere_is_asked_once_whole_and_the_next_one_survives() {
    // The chunked request with a request pipelined behind it: each split
    // into three pieces yields the same query, and the bytes after the
    // body are the next request, not part of it.
    let wire = format!("{CHUNKED}{NOPE}");
    for a in 1..wire.len() {
        for b in (a..wire.len()).step_by(3) {
            let mut h = Harness::new(0);
            for piece in [&wire[..a], &wire[a..b], &wire[b..]] {
                assert_eq!(h.input(1, piece), Next::Continue, "cuts {a}, {b}");
            }
            assert_eq!(h.effects(), vec![command_query()], "cuts {a}, {b}");
            assert_eq!(h.sent(), "");
            assert_eq!(h.reply(2, answer(202, "{}")), Next::Continue);
            assert_eq!(h.sent(), json(202, "{}", false) + &not_found(), "cuts {a}, {b}");
        }
    }
    // One byte at a time.
    let mut h = Harness::new(0);
    for i in 0..CHUNKED.len() {
        assert_eq!(h.input(1, &CHUNKED[i..=i]), Next::Continue);
    }
    assert_eq!(h.effects(), vec![command_query()]);
}

#[test]
fn expect_100_continue_gets_one_interim_response_before_the_body() {
    let head = "POST /devices/CE:96:C2:78:27:FC/commands HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 6\r\n\r\n";
    let mut h = Harness::new(0);
    assert_eq!(h.input(1, &head[..20]), Next::Continue);
    assert_eq!(h.sent(), "", "not before the head is whole");
    assert_eq!(h.input(2, &head[20..]), Next::Continue);
    assert_eq!(h.sent(), "HTTP/1.1 100 Continue\r\n\r\n");
    assert_eq!(h.input(3, "RE"), Next::Continue);
    assert_eq!(h.input(4, "BO"), Next::Continue);
    assert_eq!(h.sent(), "", "once per request");
    assert_eq!(h.input(5, "OT"), Next::Continue);
    assert_eq!(h.effects(), vec![command_query()]);
    assert_eq!(h.reply(6, answer(202, "{}")), Next::Continue);
    assert_eq!(h.sent(), json(202, "{}", false));

    // The next request on the connection gets its own.
    assert_eq!(h.input(7, head), Next::Continue);
    assert_eq!(h.sent(), "HTTP/1.1 100 Continue\r\n\r\n");
    assert_eq!(h.input(8, "REBOOT"), Next::Continue);
    assert_eq!(h.effects(), vec![command_query()]);

    // A client that sent the body with the head is not told to send it.
    let mut h = Harness::new(0);
    assert_eq!(h.input(1, &format!("{head}REBOOT")), Next::Continue);
    assert_eq!(h.sent(), "");
    assert_eq!(h.effects(), vec![command_query()]);

    // A chunked body the same way.
    let chunked = "POST /devices/CE:96:C2:78:27:FC/commands HTTP/1.1\r\nExpect: 100-continue\r\n\
                   Transfer-Encoding: chunked\r\n\r\n";
    let mut h = Harness::new(0);
    assert_eq!(h.input(1, chunked), Next::Continue);
    assert_eq!(h.sent(), "HTTP/1.1 100 Continue\r\n\r\n");
    assert_eq!(h.input(2, "6\r\nREBOOT\r\n"), Next::Continue);
    assert_eq!(h.input(3, "0\r\n\r\n"), Next::Continue);
    assert_eq!(h.sent(), "");
    assert_eq!(h.effects(), vec![command_query()]);
}

#[test]
fn an_interim_response_for_a_pipelined_request_waits_for_the_answers_ahead_of_it() {
    let head = "POST /devices/CE:96:C2:78:27:FC/commands HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 6\r\n\r\n";
    let mut h = Harness::new(0);
    assert_eq!(h.input(1, &format!("{HEALTH}{head}")), Next::Continue);
    assert_eq!(h.effects(), vec![Effect::Ask(Query::Health)]);
    assert_eq!(h.sent(), "", "the request behind is not looked at while the first waits");
    assert_eq!(h.reply(2, answer(200, "{}")), Next::Continue);
    assert_eq!(h.sent(), json(200, "{}", false) + "HTTP/1.1 100 Continue\r\n\r\n");
}

#[test]
fn pipelined_requests_are_answered_in_order_each_ask_waiting_for_its_reply() {
    let mut h = Harness::new(0);
    let pipeline = format!("{HEALTH}{NOPE}GET /metrics HTTP/1.1\r\n\r\n");
    assert_eq!(h.input(1, &pipeline), Next::Continue);
    assert_eq!(h.effects(), vec![Effect::Ask(Query::Health)], "one question at a time");
    assert_eq!(h.sent(), "");
    // More requests while waiting are kept, not parsed.
    assert_eq!(h.input(2, "GET /devices/CE:96:C2:78:27:FC HTTP/1.1\r\n\r\n"), Next::Continue);
    assert!(h.parts.effects.is_empty());
    assert_eq!(h.sent(), "");

    assert_eq!(h.reply(3, answer(200, r#"{"status":"ok"}"#)), Next::Continue);
    assert_eq!(h.sent(), json(200, r#"{"status":"ok"}"#, false) + &not_found());
    assert_eq!(h.effects(), vec![Effect::Ask(Query::Metrics)]);

    let metrics = Answer { status: 200, content_type: Answer::PROMETHEUS, body: b"up 1\n".to_vec() };
    assert_eq!(h.reply(4, Reply::Answer(metrics)), Next::Continue);
    assert_eq!(
        h.sent(),
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\nContent-Length: 5\r\n\
         Cache-Control: no-store\r\nAccess-Control-Allow-Origin: *\r\n\r\nup 1\n"
    );
    assert_eq!(h.effects(), vec![Effect::Ask(Query::Device(MAC))]);

    assert_eq!(h.reply(5, Reply::Answer(Answer::error(404, "device not online"))), Next::Continue);
    assert_eq!(h.sent(), error(404, "device not online", false));
    assert!(h.parts.effects.is_empty());
    assert_eq!(h.session.served, 4);
    // A reply nobody waits for is dropped.
    assert_eq!(h.reply(6, answer(200, "{}")), Next::Continue);
    assert_eq!(h.sent(), "");
}

#[test]
fn the_request_budget_stops_a_pipeline_and_resume_goes_on() {
    let mut h = Harness::new(0);
    h.parts.budgets.requests = 2;
    assert!(!h.session.has_work());
    assert_eq!(h.input(1, &NOPE.repeat(5)), Next::Continue);
    assert_eq!(h.sent(), not_found().repeat(2));
    assert!(h.session.has_work(), "three requests are left for the next turn");
    assert_eq!(h.parts.stats.budget_spent[Budget::Requests as usize], 1);
    assert_eq!(h.resume(2), Next::Continue);
    assert_eq!(h.sent(), not_found().repeat(2));
    assert!(h.session.has_work());
    assert_eq!(h.resume(3), Next::Continue);
    assert_eq!(h.sent(), not_found());
    assert!(!h.session.has_work());
    assert_eq!(h.parts.stats.budget_spent[Budget::Requests as usize], 2);
    assert_eq!(h.resume(4), Next::Continue);
    assert_eq!(h.sent(), "", "nothing left");

    // Questions to the hub count against the budget too.
    let mut h = Harness::new(0);
    h.parts.budgets.requests = 1;
    assert_eq!(h.input(1, &format!("{NOPE}{HEALTH}")), Next::Continue);
    assert_eq!(h.sent(), not_found());
    assert!(h.parts.effects.is_empty() && h.session.has_work());
    assert_eq!(h.resume(2), Next::Continue);
    assert_eq!(h.effects(), vec![Effect::Ask(Query::Health)]);
    assert!(!h.session.has_work(), "awaiting is not work the reactor can resume");

    // The budget is per turn: a reply in the same turn goes on with
    // what is left of it, one in the next turn with a new one.
    let mut h = Harness::new(0);
    h.parts.budgets.requests = 2;
    assert_eq!(h.input(1, &HEALTH.repeat(4)), Next::Continue);
    assert_eq!(h.effects(), vec![Effect::Ask(Query::Health)]);
    assert_eq!(h.reply(1, Reply::Answer(Answer::json(200, b"{}".to_vec()))), Next::Continue);
    assert_eq!(h.effects(), vec![Effect::Ask(Query::Health)], "the second of the turn's two");
    assert_eq!(h.reply(1, Reply::Answer(Answer::json(200, b"{}".to_vec()))), Next::Continue);
    assert!(h.effects().is_empty() && h.session.has_work(), "the third waits for the next turn");
    assert_eq!(h.resume(2), Next::Continue);
    assert_eq!(h.effects(), vec![Effect::Ask(Query::Health)]);
}

#[test]
fn connection_close_and_http_1_0_end_the_connection_after_the_response() {
    let mut h = Harness::new(0);
    let close = "GET /nope HTTP/1.1\r\nConnection: close\r\n\r\n";
    assert_eq!(h.input(1, &format!("{close}{NOPE}")), Next::Close(CloseReason::Completed));
    assert_eq!(h.sent(), error(404, "no such endpoint", true), "the request behind it is not answered");

    let mut h = Harness::new(0);
    assert_eq!(h.input(1, "GET /nope HTTP/1.0\r\n\r\n"), Next::Close(CloseReason::Completed));
    assert_eq!(h.sent(), error(404, "no such endpoint", true));

    let mut h = Harness::new(0);
    assert_eq!(h.input(1, "GET /nope HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"), Next::Continue);
    assert_eq!(h.sent(), not_found());

    // The same through the hub: the close follows the reply.
    let mut h = Harness::new(0);
    assert_eq!(h.input(1, "GET /health HTTP/1.1\r\nConnection: close\r\n\r\n"), Next::Continue);
    assert_eq!(h.effects(), vec![Effect::Ask(Query::Health)]);
    assert_eq!(h.reply(2, answer(200, "{}")), Next::Close(CloseReason::Completed));
    assert_eq!(h.sent(), json(200, "{}", true));

    // HEAD: the same headers, no body.
    let mut h = Harness::new(0);
    assert_eq!(h.input(1, "HEAD /health HTTP/1.1\r\n\r\n"), Next::Continue);
    assert_eq!(h.effects(), vec![Effect::Ask(Query::Health)]);
    assert_eq!(h.reply(2, answer(200, r#"{"status":"ok"}"#)), Next::Continue);
    assert_eq!(h.sent(), json(200, "", false).replace("Content-Length: 0", "Content-Length: 15"));
}

#[test]
fn unreadable_requests_are_answered_with_their_status_and_closed() {
    let long = format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(300));
    let cases = [
        (long.as_str(), 431, "request head too large"),
        ("POST /x HTTP/1.1\r\nContent-Length: 17\r\n\r\n", 413, "request body too large"),
        ("POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n11\r\n", 413, "request body too large"),
        ("NOT HTTP AT ALL\r\n\r\n", 400, "malformed request"),
        (
            "POST /x HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            400,
            "conflicting Content-Length headers",
        ),
        ("POST /x HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n", 501, "only the chunked transfer coding is supported"),
    ];
    for (request, status, message) in cases {
        let mut h = Harness::new(0);
        assert_eq!(h.input(1, request), Next::Close(CloseReason::BadRequest), "{request}");
        assert_eq!(h.sent(), error(status, message, true), "{request}");
        assert_eq!(h.parts.stats.http_responses.get(&status), Some(&1));
        assert!(h.parts.effects.is_empty());
    }
    // A head that grows past the limit before it is whole is refused
    // without waiting for its end.
    let mut h = Harness::new(0);
    assert_eq!(h.input(1, "GET /"), Next::Continue);
    assert_eq!(h.input(2, &"a".repeat(300)), Next::Close(CloseReason::BadRequest));
    assert_eq!(h.sent(), error(431, "request head too large", true));

    // A good request ahead of a bad one is answered first.
    let mut h = Harness::new(0);
    assert_eq!(h.input(1, &format!("{NOPE}BAD\r\n\r\n")), Next::Close(CloseReason::BadRequest));
    assert_eq!(h.sent(), not_found() + &error(400, "malformed request", true));
}

#[test]
fn input_stops_at_one_requests_worth() {
    let mut h = Harness::new(0);
    h.parts.budgets.requests = 100; // (the budget has its own test)
    assert!(h.wants_input());
    assert_eq!(h.input(1, HEALTH), Next::Continue);
    assert_eq!(h.effects(), vec![Effect::Ask(Query::Health)]);
    // Requests pipelined behind a question pile up in `inbuf` until it
    // holds a whole request's worth.
    let worth = 2 * settings().limits.max_head + settings().limits.max_body;
    let mut held = 0;
    while held + NOPE.len() < worth {
        assert_eq!(h.input(2, NOPE), Next::Continue);
        held += NOPE.len();
        assert!(h.wants_input(), "{held} bytes held");
    }
    assert_eq!(h.input(2, NOPE), Next::Continue);
    held += NOPE.len();
    assert!(held >= worth);
    assert!(!h.wants_input(), "{held} bytes held");
    assert_eq!(h.reply(3, answer(200, "{}")), Next::Continue);
    assert_eq!(h.sent(), json(200, "{}", false) + &not_found().repeat(held / NOPE.len()));
    assert!(h.wants_input(), "answered: room again");
}

#[test]
fn a_chunked_request_within_every_limit_is_read_whole_however_it_is_framed() {
    // The reactor stops reading when `wants_input` says no. A chunked
    // body's framing (size lines, CRLFs, trailers) may take up to
    // `max_head` besides the head and the body, so a valid request can
    // be longer on the wire than `max_head + max_body`: the session must
    // still take it in, or the request stalls until it times out (408).
    let pad = "p".repeat(60);
    let head = format!(
        "POST /devices/CE:96:C2:78:27:FC/commands HTTP/1.1\r\nX-Pad: {pad}\r\nTransfer-Encoding: chunked\r\n\r\n"
    );
    let chunks: String = "REBOOTREBOOT".chars().map(|c| format!("1;ext=123456\r\n{c}\r\n")).collect();
    let wire = format!("{head}{chunks}0\r\n\r\n");
    let limits = settings().limits;
    assert!(wire.len() > limits.max_head + limits.max_body, "{} bytes on the wire", wire.len());
    let asked = vec![Effect::Ask(Query::Command { mac: MAC, line: b"REBOOTREBOOT".to_vec() })];
    // Valid: taken in one piece, it is asked.
    let mut h = Harness::new(0);
    assert_eq!(h.input(1, &wire), Next::Continue);
    assert_eq!(h.effects(), asked);
    let mut h = Harness::new(0);
    let mut fed = 0;
    while fed < wire.len() && h.wants_input() {
        // Fed the way the reactor reads: while the session wants input.
        let end = (fed + 32).min(wire.len());
        assert_eq!(h.input(1, &wire[fed..end]), Next::Continue);
        fed = end;
    }
    assert_eq!(fed, wire.len(), "the session stopped taking input in the middle of a valid request");
    assert_eq!(h.effects(), asked);
}

#[test]
fn the_token_is_asked_for_with_www_authenticate_and_preflights_need_none() {
    let mut h = Harness::new(0);
    h.settings.api_token = Some("s3cret".into());
    assert_eq!(h.input(1, "GET /devices HTTP/1.1\r\n\r\n"), Next::Continue, "a 401 keeps the connection");
    let body = r#"{"error":"missing or wrong bearer token"}"#;
    assert_eq!(
        h.sent(),
        format!(
            "HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
             Cache-Control: no-store\r\nAccess-Control-Allow-Origin: *\r\nWWW-Authenticate: Bearer\r\n\r\n{body}",
            body.len()
        )
    );
    assert_eq!(h.input(2, "OPTIONS /devices HTTP/1.1\r\n\r\n"), Next::Continue);
    assert_eq!(
        h.sent(),
        "HTTP/1.1 204 No Content\r\nCache-Control: no-store\r\nAccess-Control-Allow-Origin: *\r\n\
         Allow: GET, HEAD, OPTIONS\r\nAccess-Control-Allow-Methods: GET, HEAD, OPTIONS\r\n\
         Access-Control-Allow-Headers: Authorization, Content-Type, Last-Event-ID\r\n\
         Access-Control-Max-Age: 86400\r\n\r\n"
    );
    assert!(h.parts.effects.is_empty());
    assert_eq!(h.input(3, "GET /devices HTTP/1.1\r\nAuthorization: Bearer s3cret\r\n\r\n"), Next::Continue);
    assert_eq!(h.effects(), vec![Effect::Ask(Query::Devices { after: None, offset: 0, limit: 100 })]);
    assert_eq!(h.reply(4, answer(200, "{}")), Next::Continue);
    h.sent();
    assert_eq!(h.input(5, HEALTH), Next::Continue);
    assert_eq!(h.effects(), vec![Effect::Ask(Query::Health)], "/health needs no token");
}

#[test]
fn a_request_not_whole_in_time_is_closed_with_a_408_and_input_that_arrived_first_is_judged() {
    let mut h = Harness::new(0);
    assert_eq!(h.deadline(), Some(REQUEST_MS), "the first request is timed from the accept");
    assert_eq!(h.input(30, "GET /health HT"), Next::Continue);
    assert_eq!(h.deadline(), Some(REQUEST_MS), "bytes do not restart the request's clock");
    assert_eq!(h.deadline_passed(REQUEST_MS - 1), Next::Continue, "early: nothing");
    assert_eq!(h.deadline_passed(REQUEST_MS), Next::Close(CloseReason::RequestTimeout));
    // Deciding to close changed nothing: the reactor may read what
    // arrived and ask again.
    assert_eq!((h.sent(), h.effects(), h.deadline()), (String::new(), vec![], Some(REQUEST_MS)));
    assert_eq!(h.deadline_passed(REQUEST_MS), Next::Close(CloseReason::RequestTimeout));
    assert_eq!(h.input(REQUEST_MS, "TP/1.1\r\n\r\n"), Next::Continue);
    assert_eq!(h.effects(), vec![Effect::Ask(Query::Health)]);
    assert_eq!(h.deadline_passed(REQUEST_MS), Next::Continue, "the request arrived in time after all");

    // Closed for it: the 408 is the last word.
    let mut h = Harness::new(0);
    assert_eq!(h.input(30, "GET /health HT"), Next::Continue);
    assert_eq!(h.deadline_passed(REQUEST_MS), Next::Close(CloseReason::RequestTimeout));
    h.close(REQUEST_MS, CloseReason::RequestTimeout);
    assert_eq!(h.sent(), error(408, "request not received in time", true));
    assert!(h.parts.effects.is_empty());

    // A later request is timed from its first byte.
    let mut h = Harness::new(0);
    assert_eq!(h.input(10, NOPE), Next::Continue);
    h.sent();
    assert_eq!(h.input(500, "GET /"), Next::Continue);
    assert_eq!(h.deadline(), Some(500 + REQUEST_MS));
    assert_eq!(h.input(550, "nope HTTP/1.1\r\n"), Next::Continue);
    assert_eq!(h.deadline(), Some(500 + REQUEST_MS));
    assert_eq!(h.deadline_passed(500 + REQUEST_MS), Next::Close(CloseReason::RequestTimeout));
}

#[test]
fn a_keep_alive_connection_idle_too_long_is_closed_without_a_word() {
    let mut h = Harness::new(0);
    assert_eq!(h.input(10, NOPE), Next::Continue);
    h.sent();
    assert_eq!(h.deadline(), Some(10 + IDLE_MS));
    assert_eq!(h.deadline_passed(10 + IDLE_MS - 1), Next::Continue);
    assert_eq!(h.deadline_passed(10 + IDLE_MS), Next::Close(CloseReason::HttpIdle));
    h.close(10 + IDLE_MS, CloseReason::HttpIdle);
    assert_eq!(h.sent(), "");

    // After a reply, the idle clock starts at the reply, not the request.
    let mut h = Harness::new(0);
    assert_eq!(h.input(10, HEALTH), Next::Continue);
    assert_eq!(h.deadline(), None, "a question to the hub has no deadline of its own");
    assert_eq!(h.reply(50, answer(200, "{}")), Next::Continue);
    assert_eq!(h.deadline(), Some(50 + IDLE_MS));
}

#[test]
fn a_long_poll_that_runs_out_of_time_asks_for_its_final_answer_once() {
    let mut h = Harness::new(0);
    assert_eq!(h.input(100, "GET /events/poll?timeout=2s HTTP/1.1\r\n\r\n"), Next::Continue);
    assert_eq!(h.effects(), vec![Effect::Ask(Query::Poll { since: None, filter: None, wait: true })]);
    assert_eq!(h.deadline(), Some(2100));
    assert_eq!(h.deadline_passed(2099), Next::Continue);
    assert!(h.parts.effects.is_empty());
    assert_eq!(h.deadline_passed(2100), Next::Continue);
    assert_eq!(h.effects(), vec![Effect::Ask(Query::Expired)]);
    assert_eq!(h.deadline(), None, "asked once; the hub answers");
    assert_eq!(h.deadline_passed(5000), Next::Continue);
    assert!(h.parts.effects.is_empty());
    let body = r#"{"events":[],"next":0,"reset":false}"#;
    assert_eq!(h.reply(5001, answer(200, body)), Next::Continue);
    assert_eq!(h.sent(), json(200, body, false));
    assert_eq!(h.deadline(), Some(5001 + IDLE_MS));

    let mut h = Harness::new(0);
    assert_eq!(h.input(7, "GET /devices/CE:96:C2:78:27:FC/location?timeout=1s HTTP/1.1\r\n\r\n"), Next::Continue);
    assert_eq!(h.effects(), vec![Effect::Ask(Query::Location(MAC))]);
    assert_eq!(h.deadline(), Some(1007));
}

#[test]
fn an_event_stream_gets_its_head_then_keepalive_comments_when_quiet() {
    let mut h = Harness::new(0);
    assert_eq!(h.input(1, "GET /events?mac=ce-96-c2-78-27-fc HTTP/1.1\r\nLast-Event-ID: 7\r\n\r\n"), Next::Continue);
    assert_eq!(
        h.effects(),
        vec![Effect::Ask(Query::Stream { filter: Some(MAC), last_event_id: Some(crate::events::EventRef::Local(7)) })]
    );
    assert_eq!(h.reply(10, Reply::Stream), Next::Continue);
    assert_eq!(
        h.sent(),
        "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n\
         Access-Control-Allow-Origin: *\r\nX-Accel-Buffering: no\r\nConnection: close\r\n\r\nretry: 3000\n\n"
    );
    assert_eq!(h.parts.stats.http_responses.get(&200), Some(&1));
    assert_eq!(h.deadline(), Some(10 + KEEPALIVE_MS));
    assert_eq!(h.deadline_passed(10 + KEEPALIVE_MS - 1), Next::Continue);
    assert_eq!(h.sent(), "");
    assert_eq!(h.deadline_passed(10 + KEEPALIVE_MS), Next::Continue);
    assert_eq!(h.sent(), ": keepalive\n\n");
    assert_eq!(h.deadline(), Some(10 + 2 * KEEPALIVE_MS));
    // Output already waiting says the stream is alive: no comment.
    h.parts.out.push(b"id: 1\n", &mut h.parts.pool);
    assert_eq!(h.deadline_passed(10 + 2 * KEEPALIVE_MS), Next::Continue);
    assert_eq!(h.sent(), "id: 1\n");
    assert_eq!(h.deadline(), Some(10 + 3 * KEEPALIVE_MS));
    // What the client sends on a stream is dropped.
    assert_eq!(h.input(2000, NOPE), Next::Continue);
    assert_eq!(h.sent(), "");
    assert!(h.wants_input() && h.parts.effects.is_empty());
    assert_eq!(h.session.idle_since(), None);
}

#[test]
fn idle_since_is_a_new_connection_or_between_requests_never_mid_request() {
    let mut h = Harness::new(5);
    assert_eq!(h.session.idle_since(), Some(5), "a new connection that sent nothing");
    assert_eq!(h.input(7, "GET /no"), Next::Continue);
    assert_eq!(h.session.idle_since(), None, "a request in progress");
    assert_eq!(h.input(8, "pe HTTP/1.1\r\n\r\n"), Next::Continue);
    assert_eq!(h.session.idle_since(), Some(8), "answered at 8");
    assert_eq!(h.input(9, HEALTH), Next::Continue);
    assert_eq!(h.session.idle_since(), None, "waiting for the hub");
    assert_eq!(h.reply(20, answer(200, "{}")), Next::Continue);
    assert_eq!(h.session.idle_since(), Some(20));
    assert_eq!(h.input(21, "GET /events HTTP/1.1\r\n\r\n"), Next::Continue);
    assert_eq!(h.reply(22, Reply::Stream), Next::Continue);
    assert_eq!(h.session.idle_since(), None, "a stream is never idle");
}

#[test]
fn draining_in_each_state() {
    // Idle: closed at once, silently.
    let mut h = Harness::new(0);
    assert_eq!(h.drain(1), Next::Close(CloseReason::Shutdown));
    assert_eq!((h.sent(), h.effects()), (String::new(), vec![]));

    // A request in progress is answered, with `Connection: close`.
    let mut h = Harness::new(0);
    assert_eq!(h.input(1, "GET /nope HTTP/1.1\r\n"), Next::Continue);
    assert_eq!(h.drain(2), Next::Continue);
    h.parts.draining = true;
    assert_eq!(h.input(3, "\r\n"), Next::Close(CloseReason::Completed));
    assert_eq!(h.sent(), error(404, "no such endpoint", true));

    // Awaiting the hub: told 503, the wait withdrawn, closed.
    let mut h = Harness::new(0);
    assert_eq!(h.input(1, "GET /events/poll HTTP/1.1\r\n\r\n"), Next::Continue);
    h.effects();
    assert_eq!(h.drain(2), Next::Close(CloseReason::Shutdown));
    assert_eq!(h.sent(), error(503, "the gateway is shutting down", true));
    assert_eq!(h.effects(), vec![Effect::Withdraw]);
    assert_eq!(h.reply(3, answer(200, "{}")), Next::Continue, "a late reply is dropped");
    assert_eq!(h.sent(), "");
    h.close(3, CloseReason::Shutdown);
    assert_eq!(h.effects(), vec![], "withdrawn once");

    // Streaming: closed; the close withdraws it.
    let mut h = Harness::new(0);
    assert_eq!(h.input(1, "GET /events HTTP/1.1\r\n\r\n"), Next::Continue);
    assert_eq!(h.reply(2, Reply::Stream), Next::Continue);
    h.sent();
    h.effects();
    assert_eq!(h.drain(3), Next::Close(CloseReason::Shutdown));
    assert_eq!(h.sent(), "");
    h.close(3, CloseReason::Shutdown);
    assert_eq!(h.effects(), vec![Effect::Withdraw]);

    // A wait that began before the drain still ends the connection.
    let mut h = Harness::new(0);
    assert_eq!(h.input(1, HEALTH), Next::Continue);
    h.parts.draining = true;
    assert_eq!(h.reply(2, answer(503, r#"{"status":"draining"}"#)), Next::Close(CloseReason::Completed));
    assert_eq!(h.sent(), json(503, r#"{"status":"draining"}"#, true));
}

#[test]
fn closing_withdraws_a_wait_or_a_stream_and_drops_what_a_slow_consumer_did_not_read() {
    let mut h = Harness::new(0);
    assert_eq!(h.input(1, "GET /devices/CE:96:C2:78:27:FC/location HTTP/1.1\r\n\r\n"), Next::Continue);
    h.effects();
    h.close(2, CloseReason::PeerClosed);
    assert_eq!(h.effects(), vec![Effect::Withdraw]);

    let mut h = Harness::new(0);
    assert_eq!(h.input(1, "GET /events HTTP/1.1\r\n\r\n"), Next::Continue);
    assert_eq!(h.reply(2, Reply::Stream), Next::Continue);
    h.effects();
    h.close(3, CloseReason::SlowConsumer);
    assert_eq!(h.sent(), "", "the unread backlog is dropped");
    assert_eq!(h.effects(), vec![Effect::Withdraw]);

    let mut h = Harness::new(0);
    assert_eq!(h.input(1, NOPE), Next::Continue);
    h.close(2, CloseReason::PeerClosed);
    assert_eq!(h.sent(), not_found(), "other reasons keep what is queued");
    assert_eq!(h.effects(), vec![], "nothing registered, nothing withdrawn");
}
