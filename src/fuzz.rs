//! Fuzz targets: every sans-IO parser and session, each one function over
//! arbitrary bytes that must never panic, and that checks what must hold
//! whatever the bytes (the same lines however the input is split, output
//! bounded, requests answered one at a time).
//!
//! Two drivers share these functions: cargo-fuzz (`fuzz/`, libFuzzer, on
//! a nightly toolchain), and a proptest driver (`src/fuzz/tests.rs`) that
//! runs with the unit tests for a few hundred cases each, and for a given
//! time each under `scripts/fuzz.sh SECONDS` (`TETHER_FUZZ_SECS`). A crash
//! either finds becomes a named regression test in `src/fuzz/tests.rs`.
//!
//! The sessions' targets read their input as a small program, so that a
//! fuzzer reaches deep states with plain protocol text: the first byte
//! picks the settings, and the rest is input for the session, cut into
//! reads by control bytes (0xF8 and up, which no protocol line needs; a
//! literal one is `0xFF` followed by it):
//!
//! | byte | does |
//! |---|---|
//! | `0xFF b` | byte `b` is input |
//! | `0xFE` | the input so far is one read |
//! | `0xFD t` | `t × 8` ms pass; a deadline that passed fires |
//! | `0xFC r` | the hub's reply to what the session asked (`r` picks which) |
//! | `0xFB` | the peer reads all the output |
//! | `0xFA` | the gateway starts draining |
//! | `0xF9` | the collar answers its challenge correctly (device only) |
//! | `0xF8` | the session's put-off work runs (`on_resume`) |
//! | other | input |
//!
//! Only with the `fuzzing` feature (cargo-fuzz turns it on) or in tests.

use std::ops::ControlFlow;
use std::time::Duration;

use crate::close::CloseReason;
use crate::device::auth::{self, DeviceKeys, Nonce};
use crate::device::{DeviceSession, DeviceSettings, LineFramer, Timeouts};
use crate::effect::{Answer, Effect, Query, Reply};
use crate::http::request::{self, Body, Limits};
use crate::http::session::{HttpSettings, HttpTimeouts};
use crate::http::{HttpSession, chunked::Chunked, percent};
use crate::reactor::{Budgets, Cx, Next, OutBuf, Pool, Session};
use crate::redis::{RedisSession, RedisSettings};
use crate::stats::Stats;
use crate::time::Millis;

/// A fuzz target: any bytes in, a panic for a bug.
pub type Target = fn(&[u8]);

/// Every target by name, for the drivers.
pub const TARGETS: &[(&str, Target)] = &[
    ("line_framer", line_framer),
    ("device_session", device_session),
    ("http_request", http_request),
    ("http_session", http_session),
    ("percent", percent_decoding),
    ("redis_session", redis_session),
];

/// The line framer: the same lines, and the same verdict on an over-long
/// one, however the input is split into reads and wherever the consumer
/// stops and resumes.
pub fn line_framer(data: &[u8]) {
    let Some((&setup, input)) = data.split_first() else { return };
    let max_line = usize::from(setup % 64) + 1;
    let whole = frame_all(input, max_line, &[input.len()], u64::MAX);
    // Reads end after each byte that is a multiple of 7 (a split anywhere,
    // chosen by the data), and the consumer stops after every third line.
    let cuts: Vec<usize> = input.iter().enumerate().filter(|(_, b)| **b % 7 == 0).map(|(i, _)| i + 1).collect();
    let split = frame_all(input, max_line, &cuts, 3);
    assert_eq!(whole, split, "max_line {max_line}, reads ending at {cuts:?}");
    for line in &whole.0 {
        assert!(line.len() < max_line && !line.contains(&b'\n'), "{line:?} from max_line {max_line}");
    }
}

/// Lines framed from `input` read in pieces ending at `cuts` (then the
/// rest), stopping after every `stop_every`-th line; the lines and whether
/// one was too long.
fn frame_all(input: &[u8], max_line: usize, cuts: &[usize], stop_every: u64) -> (Vec<Vec<u8>>, bool) {
    let mut framer = LineFramer::default();
    let mut lines = Vec::new();
    let mut count = 0u64;
    let mut on_line = |line: &[u8]| {
        lines.push(line.to_vec());
        count += 1;
        if count % stop_every == 0 { ControlFlow::Break(()) } else { ControlFlow::Continue(()) }
    };
    let mut start = 0;
    for end in cuts.iter().copied().chain([input.len()]) {
        if end < start {
            continue;
        }
        while framer.holds_lines() {
            if framer.resume(max_line, &mut on_line).is_err() {
                return (lines, true);
            }
        }
        if framer.feed(&input[start..end], max_line, &mut on_line).is_err() {
            return (lines, true);
        }
        assert!(framer.holds_lines() || framer.pending() < max_line, "a partial line held past max_line");
        start = end;
    }
    while framer.holds_lines() {
        if framer.resume(max_line, &mut on_line).is_err() {
            return (lines, true);
        }
    }
    (lines, false)
}

/// One control step of a session's program (see the module docs).
enum Step<'a> {
    Read(&'a [u8]),
    Time(u8),
    Reply(u8),
    PeerReads,
    Drain,
    Answer,
    Resume,
}

/// Splits a program into steps; literal bytes are collected into `scratch`
/// reads.
fn program(data: &[u8], mut step: impl FnMut(Step<'_>) -> ControlFlow<()>) {
    let mut read = Vec::new();
    let mut i = 0;
    while i < data.len() {
        let (byte, arg) = (data[i], data.get(i + 1).copied().unwrap_or(0));
        let control = match byte {
            0xFF => {
                read.push(arg);
                i += 2;
                continue;
            }
            0xFE => None,
            0xFD => Some(Step::Time(arg)),
            0xFC => Some(Step::Reply(arg)),
            0xFB => Some(Step::PeerReads),
            0xFA => Some(Step::Drain),
            0xF9 => Some(Step::Answer),
            0xF8 => Some(Step::Resume),
            _ => {
                read.push(byte);
                i += 1;
                continue;
            }
        };
        i += if matches!(control, Some(Step::Time(_) | Step::Reply(_))) { 2 } else { 1 };
        if !read.is_empty() && step(Step::Read(&read)).is_break() {
            return;
        }
        read.clear();
        if let Some(control) = control
            && step(control).is_break()
        {
            return;
        }
    }
    if !read.is_empty() {
        let _ = step(Step::Read(&read));
    }
}

/// What a session call borrows, owned here (the reactor owns it in the
/// gateway).
#[derive(Default)]
struct Call {
    out: OutBuf,
    pool: Pool,
    effects: Vec<Effect>,
    stats: Stats,
    budgets: Budgets,
    draining: bool,
    now: Millis,
    last_rx: Millis,
}

impl Call {
    fn cx<'a, C>(&'a mut self, config: &'a C) -> Cx<'a, C, Effect> {
        self.stats.loop_iterations += 1;
        Cx {
            now: self.now,
            token: mio::Token(1),
            last_rx: self.last_rx,
            draining: self.draining,
            config,
            out: &mut self.out,
            pool: &mut self.pool,
            effects: &mut self.effects,
            stats: &mut self.stats,
            budgets: &self.budgets,
        }
    }
}

/// The master key of the device target.
const FUZZ_KEY: [u8; 32] = [0x46; 32];

/// The collar protocol: line framer, parser, rules (handshake, challenge,
/// heartbeat, idle) and session, driven as the reactor would, with the
/// hub's admission played by the program. Checks that the output stays
/// bounded, that a collar asks to be admitted once at most and leaves only
/// if it was, and that nothing happens after a close.
pub fn device_session(data: &[u8]) {
    run_device(data);
}

/// What a session said over a program, and why it closed (if it did).
#[derive(Debug, Default)]
struct Transcript {
    output: Vec<u8>,
    closed: Option<CloseReason>,
}

fn run_device(data: &[u8]) -> Transcript {
    let mut transcript = Transcript::default();
    let Some((&setup, rest)) = data.split_first() else { return transcript };
    let settings = DeviceSettings {
        max_line: 72 + usize::from(setup & 0x1F),
        max_output: 64 + usize::from(setup & 0x60),
        timeouts: Timeouts {
            handshake: Duration::from_millis(100),
            heartbeat_interval: Duration::from_millis(300),
            heartbeat_timeout: Duration::from_millis(50),
            idle: Duration::from_millis(1000),
        },
        keys: (setup & 0x80 != 0).then(|| DeviceKeys::new(&[FUZZ_KEY]).expect("a key")),
    };
    // The longest thing one call may add past the limit: a CHALLENGE line
    // (43 bytes) and a BYE (at most 25).
    let bound = settings.max_output + 43 + 25;
    let mut session = DeviceSession::new(0);
    let mut call = Call::default();
    let mut awaiting = false;
    let mut identified = 0;
    program(rest, |step| {
        let next = match step {
            Step::Read(bytes) => {
                if !session.wants_input(&settings) || call.out.len() > settings.max_output {
                    return ControlFlow::Continue(());
                }
                call.last_rx = call.now;
                session.on_input(bytes, &mut call.cx(&settings))
            }
            Step::Answer => {
                let Some(line) = answer_challenge(call.out.pending(), &session) else {
                    return ControlFlow::Continue(());
                };
                if !session.wants_input(&settings) || call.out.len() > settings.max_output {
                    return ControlFlow::Continue(());
                }
                call.last_rx = call.now;
                session.on_input(&line, &mut call.cx(&settings))
            }
            Step::Time(t) => {
                call.now += u64::from(t) * 8;
                match session.deadline(&settings, call.last_rx) {
                    Some(at) if at <= call.now => session.on_deadline(&mut call.cx(&settings)),
                    _ => Next::Continue,
                }
            }
            Step::Reply(r) if awaiting => {
                awaiting = false;
                let reply = if r % 4 == 0 { Reply::Refused(CloseReason::Flapping) } else { Reply::Admitted };
                session.on_reply(reply, &mut call.cx(&settings))
            }
            Step::Reply(_) => Next::Continue,
            Step::PeerReads => {
                transcript.output.extend_from_slice(call.out.pending());
                call.out.clear(&mut call.pool);
                Next::Continue
            }
            Step::Drain => {
                call.draining = true;
                session.on_drain(&mut call.cx(&settings))
            }
            Step::Resume if session.has_work() && call.out.len() <= settings.max_output => {
                session.on_resume(&mut call.cx(&settings))
            }
            Step::Resume => Next::Continue,
        };
        for effect in call.effects.drain(..) {
            match effect {
                Effect::Identified { mac } => {
                    assert!(!awaiting && identified == 0, "a second IDENTIFY went to the hub");
                    assert_eq!(session.collar.mac, Some(mac));
                    awaiting = true;
                    identified += 1;
                }
                Effect::Located { mac, .. } => assert_eq!(Some(mac), session.collar.mac),
                other => panic!("a collar asked {other:?}"),
            }
        }
        assert!(call.out.len() <= bound, "{} bytes of output over a limit of {}", call.out.len(), settings.max_output);
        assert!(call.stats.device_auth_failures <= 1);
        let Next::Close(reason) = next else { return ControlFlow::Continue(()) };
        session.on_close(reason, &mut call.cx(&settings));
        for effect in call.effects.drain(..) {
            let Effect::Offline { mac, .. } = effect else { panic!("on close: {effect:?}") };
            assert!(identified == 1, "{mac} left without having identified");
        }
        transcript.closed = Some(reason);
        ControlFlow::Break(())
    });
    transcript.output.extend_from_slice(call.out.pending());
    transcript
}

/// The `AUTH:` line that answers the last `CHALLENGE` in `out`, with the
/// key of the MAC the session is being challenged for (the fuzzer cannot
/// compute an HMAC; this lets it past the handshake).
fn answer_challenge(out: &[u8], session: &DeviceSession) -> Option<Vec<u8>> {
    let at = out.windows(10).rposition(|w| w == b"CHALLENGE ")?;
    let nonce = Nonce::parse(out.get(at + 10..at + 42)?)?;
    let mac = session.collar.challenged()?;
    let key = DeviceKeys::new(&[FUZZ_KEY]).ok()?.device_key(mac);
    let proof = auth::prove(&key, &nonce);
    let mut line = vec![0; 5 + 64 + 1];
    line[..5].copy_from_slice(b"AUTH:");
    auth::encode_hex(&proof.0, &mut line[5..69]);
    line[69] = b'\n';
    Some(line)
}

/// The HTTP request head parser and the chunked body decoder: a head is
/// within its limit and inside the input; its parameters decode or fail
/// cleanly; a chunked body decodes to the same bytes and verdict whether it
/// arrives whole or a byte at a time, within its limits.
pub fn http_request(data: &[u8]) {
    let Some((&setup, wire)) = data.split_first() else { return };
    let limits = Limits { max_head: 16 + usize::from(setup) * 4, max_body: usize::from(setup % 64) };
    let head = match request::parse_head(wire, limits) {
        Ok(Some(head)) => head,
        Ok(None) => {
            assert!(wire.len() <= limits.max_head, "an incomplete head past its limit is waited for");
            return;
        }
        Err(e) => {
            assert!((400..=505).contains(&e.status()), "{e:?}");
            return;
        }
    };
    assert!(head.len <= wire.len() && head.len <= limits.max_head);
    for name in ["since", "timeout", "limit", "offset", "after", "mac", "access_token"] {
        let _ = head.param(name);
    }
    let _ = percent::decode(head.path);
    if head.body == Body::Chunked {
        let body = &wire[head.len..];
        let mut whole = Chunked::default();
        let at_once = whole.feed(body, limits);
        let mut trickle = Chunked::default();
        let mut by_byte = Ok(None);
        for end in 0..=body.len() {
            by_byte = trickle.feed(&body[..end], limits);
            if !matches!(by_byte, Ok(None)) {
                break;
            }
        }
        assert_eq!(at_once, by_byte, "a chunked body split into bytes");
        if let Ok(Some(n)) = at_once {
            assert!(n <= body.len());
            assert_eq!(whole.body, trickle.body);
        }
        assert!(whole.body.len() <= limits.max_body);
    }
}

/// The HTTP session: pipelined requests, bodies, long polls, streams and
/// deadlines, with the hub's answers played by the program. Checks that a
/// request is answered before the next is parsed (one question to the hub
/// at a time), that the output is HTTP, and that nothing happens after a
/// close.
pub fn http_session(data: &[u8]) {
    run_http(data);
}

fn run_http(data: &[u8]) -> Transcript {
    let mut transcript = Transcript::default();
    let Some((&setup, rest)) = data.split_first() else { return transcript };
    let settings = HttpSettings {
        limits: Limits { max_head: 64 + usize::from(setup & 0x3F) * 8, max_body: usize::from(setup & 0x3F) },
        timeouts: HttpTimeouts {
            request: Duration::from_millis(100),
            idle: Duration::from_millis(1000),
            sse_keepalive: Duration::from_millis(500),
        },
        cors_origin: "*".into(),
        api_token: (setup & 0x40 != 0).then(|| "secret".into()),
        max_wait: Duration::from_secs(5),
        max_command: 16,
        pause_above: 512,
    };
    let mut session = HttpSession::new(0);
    let mut call = Call::default();
    let mut asked: Option<Query> = None;
    let mut streaming = false;
    let mut sent = 0usize;
    program(rest, |step| {
        let next = match step {
            Step::Read(bytes) => {
                if !session.wants_input(&settings) {
                    return ControlFlow::Continue(());
                }
                call.last_rx = call.now;
                session.on_input(bytes, &mut call.cx(&settings))
            }
            Step::Time(t) => {
                call.now += u64::from(t) * 8;
                match session.deadline(&settings, call.last_rx) {
                    Some(at) if at <= call.now => session.on_deadline(&mut call.cx(&settings)),
                    _ => Next::Continue,
                }
            }
            Step::Reply(r) => match asked.take() {
                Some(query) => {
                    let reply = match (query, r % 4) {
                        (Query::Stream { .. }, 0) => {
                            streaming = true;
                            Reply::Stream
                        }
                        (_, 1) => Reply::Answer(Answer::error(404, "device not online")),
                        (_, 2) => Reply::Answer(Answer::error(504, "the device did not answer in time")),
                        _ => Reply::Answer(Answer::json(200, b"{}".to_vec())),
                    };
                    session.on_reply(reply, &mut call.cx(&settings))
                }
                None => Next::Continue,
            },
            Step::PeerReads => {
                sent += call.out.len();
                transcript.output.extend_from_slice(call.out.pending());
                call.out.clear(&mut call.pool);
                Next::Continue
            }
            Step::Drain => {
                call.draining = true;
                session.on_drain(&mut call.cx(&settings))
            }
            Step::Answer => Next::Continue,
            Step::Resume if session.has_work() => session.on_resume(&mut call.cx(&settings)),
            Step::Resume => Next::Continue,
        };
        for effect in call.effects.drain(..) {
            match effect {
                // A wait that timed out asks for its final answer instead.
                Effect::Ask(Query::Expired) => {
                    assert!(asked.is_some(), "a wait expired with nothing asked");
                    asked = Some(Query::Expired);
                }
                Effect::Ask(query) => {
                    assert!(asked.is_none(), "asked {query:?} while {asked:?} is unanswered");
                    assert!(!streaming, "a stream asked {query:?}");
                    asked = Some(query);
                }
                // The wait ended: the hub forgets it.
                Effect::Withdraw => asked = None,
                other => panic!("an HTTP session asked {other:?}"),
            }
        }
        if sent == 0 && !call.out.is_empty() {
            let out = call.out.pending();
            assert!(out.starts_with(&b"HTTP/1.1 "[..out.len().min(9)]), "{:?}", String::from_utf8_lossy(out));
        }
        let Next::Close(reason) = next else { return ControlFlow::Continue(()) };
        session.on_close(reason, &mut call.cx(&settings));
        for effect in call.effects.drain(..) {
            assert_eq!(effect, Effect::Withdraw, "on close");
        }
        transcript.closed = Some(reason);
        ControlFlow::Break(())
    });
    transcript.output.extend_from_slice(call.out.pending());
    transcript
}

/// Percent-decoding: a decoded path segment or query component is never
/// longer than its text, text without escapes is returned as it is, and a
/// query's pairs decode or fail one by one.
pub fn percent_decoding(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    for (decoded, special) in [(percent::decode(&text), &b"%"[..]), (percent::decode_query(&text), &b"%+"[..])] {
        match decoded {
            Ok(decoded) => {
                assert!(decoded.len() <= text.len());
                if !text.bytes().any(|b| special.contains(&b)) {
                    assert_eq!(decoded, text);
                }
            }
            Err(percent::BadEncoding) => assert!(text.contains('%'), "{text:?}"),
        }
    }
    for (key, value) in percent::query_pairs(&text).flatten() {
        assert!(key.len() + value.len() <= text.len());
    }
}

/// The Redis link's session (RESP replies through `redis-protocol`): the
/// same replies, in order, however the input is split into reads; a reply
/// past the limit or bytes that are not RESP close the link, and what the
/// session holds stays within the limit and one read.
pub fn redis_session(data: &[u8]) {
    let Some((&setup, input)) = data.split_first() else { return };
    let settings = RedisSettings { max_reply: usize::from(setup) * 4 + 1, max_output: 1 };
    let whole = redis_replies(input, &settings, &[input.len()]);
    let cuts: Vec<usize> = input.iter().enumerate().filter(|(_, b)| **b % 5 == 0).map(|(i, _)| i + 1).collect();
    let split = redis_replies(input, &settings, &cuts);
    // Split reads may close a little earlier (a partial reply over the
    // limit is seen before the bytes that would have made it whole), never
    // later, and never with other replies.
    assert!(whole.0.starts_with(&split.0) || split.0.starts_with(&whole.0), "{whole:?} vs {split:?}");
    if whole.1.is_none() {
        assert!(split.1.is_none() || split.1 == Some(CloseReason::ProtocolError), "{split:?}");
    }
}

/// The replies the Redis session hands on from `input` read in pieces
/// ending at `cuts` (then the rest), and the close it asked for.
fn redis_replies(
    input: &[u8],
    settings: &RedisSettings,
    cuts: &[usize],
) -> (Vec<crate::redis::codec::OwnedFrame>, Option<CloseReason>) {
    let mut session = RedisSession::new();
    let (mut out, mut pool, mut stats, budgets) =
        (OutBuf::default(), Pool::default(), Stats::default(), Budgets::default());
    let mut effects = Vec::new();
    let mut replies = Vec::new();
    let mut start = 0;
    for &end in cuts.iter().chain([&input.len()]) {
        let end = end.min(input.len());
        if end < start {
            continue;
        }
        let mut cx = Cx {
            now: 0,
            token: mio::Token(1),
            last_rx: 0,
            draining: false,
            config: settings,
            out: &mut out,
            pool: &mut pool,
            effects: &mut effects,
            stats: &mut stats,
            budgets: &budgets,
        };
        let next = session.on_input(&input[start..end], &mut cx);
        start = end;
        for effect in effects.drain(..) {
            if let Effect::Link(crate::effect::LinkEvent::Frame(frame)) = effect {
                replies.push(frame);
            }
        }
        if let Next::Close(reason) = next {
            return (replies, Some(reason));
        }
        assert!(session.held() <= settings.max_reply + input.len(), "held {}", session.held());
    }
    (replies, None)
}

#[cfg(test)]
mod tests;
