//! The bytes each server is spoken to in: the subscription handshake, the
//! message frames counted on the subscribers, the publisher's burst, the
//! canary's `PING`, and a minimal RESP reader for the control queries.
//!
//! Everything is hand-written and incremental: a parser is given the bytes
//! received so far and says how many it consumed; the rest waits for the
//! next read.

use std::fmt::Write as _;

use memchr::memchr;

/// Which server a connection talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    /// tether: SSE on the HTTP port, the line protocol on the device port.
    Tether,
    /// Redis: RESP, `SUBSCRIBE` / `PUBLISH` on one channel.
    Redis,
}

/// The collar that reports the burst of locations.
pub const PUBLISHER_MAC: &str = "02:00:00:00:00:01";
/// The collar that pings.
pub const CANARY_MAC: &str = "02:00:00:00:00:02";
/// The Redis channel.
pub const CHANNEL: &str = "locations";

/// What a tether stream sends once subscribed, before any event.
const SSE_RETRY: &[u8] = b"retry: 3000\n\n";
/// How a Redis push frame carrying a published message starts.
const RESP_MESSAGE: &[u8] = b"*3\r\n$7\r\nmessage\r\n";
/// How Redis confirms a `SUBSCRIBE`.
const RESP_SUBSCRIBED: &[u8] = b"*3\r\n$9\r\nsubscribe\r\n";

/// The `i`-th fix of the burst, as the decimal strings the collar sends
/// (four decimals, so every line is a valid `LOCATION:`), varying per message.
pub fn fix(i: usize) -> (String, String) {
    let lat = 480_000 + (i % 9_000); // 48.0000 ..= 48.8999
    let lon = 20_000 + (i * 7 % 10_000); // 2.0000 ..= 2.9999
    (format!("{}.{:04}", lat / 10_000, lat % 10_000), format!("{}.{:04}", lon / 10_000, lon % 10_000))
}

/// The JSON a tether `location` event carries for fix `i`, as Redis's
/// payload: numbers printed the way tether prints an `f64` (shortest form),
/// and a timestamp of the same shape, so a delivery is the same size.
pub fn location_json(i: usize) -> String {
    let (lat, lon) = fix(i);
    let (lat, lon): (f64, f64) = (lat.parse().unwrap(), lon.parse().unwrap());
    let ms = i as u64;
    let s = ms / 1000;
    format!(
        "{{\"mac\":\"{PUBLISHER_MAC}\",\"lat\":{lat},\"lon\":{lon},\"at\":\"2026-11-29T{:02}:{:02}:{:02}.{:03}Z\"}}",
        (4 + s / 3600) % 24,
        s / 60 % 60,
        s % 60,
        ms % 1000
    )
}

/// A RESP command (an array of bulk strings).
pub fn command(args: &[&str]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len());
    for arg in args {
        let _ = write!(out, "${}\r\n{arg}\r\n", arg.len());
    }
    out.into_bytes()
}

/// What the canary or the publisher found in the bytes it read.
#[derive(Debug, Default)]
pub struct Replies {
    /// Bytes consumed; the rest is an incomplete reply.
    pub consumed: usize,
    /// `PONG` answers to the canary's pings.
    pub pongs: u64,
    /// Heartbeat `PING`s from the gateway, to be answered with `PONG`.
    pub heartbeats: u64,
    /// Redis's answers to `PUBLISH` (the number of receivers), in order.
    pub receivers: Vec<i64>,
    /// Anything else, as text (errors, unexpected lines).
    pub other: Vec<String>,
}

impl Proto {
    pub fn name(self) -> &'static str {
        match self {
            Proto::Tether => "tether",
            Proto::Redis => "redis",
        }
    }

    /// What a subscriber sends once.
    pub fn subscribe_request(self) -> Vec<u8> {
        match self {
            Proto::Tether => b"GET /events HTTP/1.1\r\nHost: bench\r\n\r\n".to_vec(),
            Proto::Redis => command(&["SUBSCRIBE", CHANNEL]),
        }
    }

    /// Once `buf` holds the whole answer to the subscription, how many
    /// bytes it took; `None` while incomplete; an error if it was refused.
    pub fn subscribed(self, buf: &[u8]) -> Result<Option<usize>, String> {
        match self {
            Proto::Tether => {
                let Some(head) = memchr::memmem::find(buf, b"\r\n\r\n") else { return Ok(None) };
                if !buf.starts_with(b"HTTP/1.1 200 ") {
                    return Err(format!("GET /events answered {:?}", preview(&buf[..head])));
                }
                // The frames are counted on the raw bytes: a transfer coding
                // would have to be decoded first, so say so rather than miscount.
                let head_text = String::from_utf8_lossy(&buf[..head]).to_ascii_lowercase();
                if head_text.contains("\r\ntransfer-encoding:") {
                    return Err(format!(
                        "the event stream has a transfer coding, which this bench does not decode: {:?}",
                        preview(&buf[..head])
                    ));
                }
                let body = &buf[head + 4..];
                if body.len() < SSE_RETRY.len() {
                    return Ok(None);
                }
                if !body.starts_with(SSE_RETRY) {
                    return Err(format!("event stream began {:?}", preview(body)));
                }
                Ok(Some(head + 4 + SSE_RETRY.len()))
            }
            Proto::Redis => match frame_len(buf)? {
                None => Ok(None),
                Some(n) if buf.starts_with(RESP_SUBSCRIBED) => Ok(Some(n)),
                Some(n) => Err(format!("SUBSCRIBE answered {:?}", preview(&buf[..n]))),
            },
        }
    }

    /// Counts the complete messages at the start of `buf`: tether SSE frames
    /// with an `event: location` line, Redis `message` push frames. Returns
    /// (messages, bytes consumed); the rest is an incomplete frame.
    pub fn count_messages(self, buf: &[u8]) -> Result<(u64, usize), String> {
        let mut messages = 0;
        match self {
            Proto::Tether => {
                // A frame is lines ended by an empty line; comments
                // (`: keepalive`) and other events are frames too.
                let (mut line, mut consumed, mut location) = (0, 0, false);
                while let Some(nl) = memchr(b'\n', &buf[line..]) {
                    let text = &buf[line..line + nl];
                    if text.is_empty() {
                        messages += u64::from(location);
                        location = false;
                        consumed = line + 1;
                    } else if text == b"event: location" {
                        location = true;
                    }
                    line += nl + 1;
                }
                Ok((messages, consumed))
            }
            Proto::Redis => {
                let mut pos = 0;
                while let Some(n) = frame_len(&buf[pos..])? {
                    messages += u64::from(buf[pos..].starts_with(RESP_MESSAGE));
                    pos += n;
                }
                Ok((messages, pos))
            }
        }
    }

    /// The canary's ping.
    pub fn ping(self) -> &'static [u8] {
        match self {
            Proto::Tether => b"PING\n",
            Proto::Redis => b"*1\r\n$4\r\nPING\r\n",
        }
    }

    /// The answer to a gateway heartbeat (tether only).
    pub fn heartbeat_answer(self) -> &'static [u8] {
        b"PONG\n"
    }

    /// The whole burst: `events` location reports (tether) or `PUBLISH`
    /// commands (Redis), back to back.
    pub fn burst(self, events: usize) -> Vec<u8> {
        let mut out = String::with_capacity(events * 128);
        for i in 0..events {
            match self {
                Proto::Tether => {
                    let (lat, lon) = fix(i);
                    let _ = writeln!(out, "LOCATION:{lat},{lon}");
                }
                Proto::Redis => {
                    let payload = location_json(i);
                    let _ = write!(
                        out,
                        "*3\r\n$7\r\nPUBLISH\r\n${}\r\n{CHANNEL}\r\n${}\r\n{payload}\r\n",
                        CHANNEL.len(),
                        payload.len()
                    );
                }
            }
        }
        out.into_bytes()
    }

    /// Parses what the server sent to the canary or the publisher.
    pub fn replies(self, buf: &[u8]) -> Result<Replies, String> {
        let mut r = Replies::default();
        match self {
            Proto::Tether => {
                while let Some(nl) = memchr(b'\n', &buf[r.consumed..]) {
                    let line = &buf[r.consumed..r.consumed + nl];
                    let line = line.strip_suffix(b"\r").unwrap_or(line);
                    match line {
                        b"PONG" => r.pongs += 1,
                        b"PING" => r.heartbeats += 1,
                        _ => r.other.push(String::from_utf8_lossy(line).into_owned()),
                    }
                    r.consumed += nl + 1;
                }
            }
            Proto::Redis => {
                while let Some(n) = frame_len(&buf[r.consumed..])? {
                    let frame = &buf[r.consumed..r.consumed + n];
                    if frame == b"+PONG\r\n" {
                        r.pongs += 1;
                    } else if let Some(int) = frame.strip_prefix(b":") {
                        r.receivers.push(parse_int(&int[..int.len() - 2])?);
                    } else {
                        r.other.push(preview(frame));
                    }
                    r.consumed += n;
                }
            }
        }
        Ok(r)
    }
}

/// The length of the first complete RESP2 value in `buf`, without building
/// it; `None` while incomplete.
pub fn frame_len(buf: &[u8]) -> Result<Option<usize>, String> {
    let Some(&kind) = buf.first() else { return Ok(None) };
    let Some(nl) = memchr(b'\n', buf) else { return Ok(None) };
    if nl == 0 || buf[nl - 1] != b'\r' {
        return Err(format!("not RESP: {:?}", preview(buf)));
    }
    let body = nl + 1;
    match kind {
        b'+' | b'-' | b':' => Ok(Some(body)),
        b'$' => {
            let Ok(len) = usize::try_from(parse_int(&buf[1..nl - 1])?) else { return Ok(Some(body)) }; // $-1: nil
            let end = body + len + 2;
            if buf.len() < end {
                Ok(None)
            } else if &buf[end - 2..end] != b"\r\n" {
                Err(format!("bulk string not ended by CRLF: {:?}", preview(buf)))
            } else {
                Ok(Some(end))
            }
        }
        b'*' => {
            let items = parse_int(&buf[1..nl - 1])?;
            let mut pos = body;
            for _ in 0..items.max(0) {
                match frame_len(&buf[pos..])? {
                    Some(n) => pos += n,
                    None => return Ok(None),
                }
            }
            Ok(Some(pos))
        }
        _ => Err(format!("not RESP: {:?}", preview(buf))),
    }
}

/// A RESP2 value, for the few control queries (not the hot path).
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Text(String),
    Error(String),
    Int(i64),
    Nil,
    Array(Vec<Value>),
}

impl Value {
    /// Reads the first complete value of `buf`, if there is one.
    pub fn parse(buf: &[u8]) -> Result<Option<Value>, String> {
        let Some(n) = frame_len(buf)? else { return Ok(None) };
        Ok(Some(Value::read(&buf[..n]).0))
    }

    /// Builds the value at the start of a buffer known to hold it whole;
    /// returns it and its length.
    fn read(buf: &[u8]) -> (Value, usize) {
        let nl = memchr(b'\n', buf).unwrap();
        let line = String::from_utf8_lossy(&buf[1..nl - 1]).into_owned();
        let body = nl + 1;
        match buf[0] {
            b'+' => (Value::Text(line), body),
            b'-' => (Value::Error(line), body),
            b':' => (Value::Int(line.parse().unwrap_or(0)), body),
            b'$' => match line.parse::<usize>() {
                Ok(len) => (Value::Text(String::from_utf8_lossy(&buf[body..body + len]).into_owned()), body + len + 2),
                Err(_) => (Value::Nil, body),
            },
            _ => {
                let mut pos = body;
                let mut items = Vec::new();
                for _ in 0..line.parse::<usize>().unwrap_or(0) {
                    let (item, n) = Value::read(&buf[pos..]);
                    items.push(item);
                    pos += n;
                }
                (Value::Array(items), pos)
            }
        }
    }
}

fn parse_int(digits: &[u8]) -> Result<i64, String> {
    std::str::from_utf8(digits)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad RESP length {:?}", preview(digits)))
}

/// The start of some bytes, escaped, for error messages.
pub fn preview(bytes: &[u8]) -> String {
    let cut = &bytes[..bytes.len().min(120)];
    let mut text: String = cut.escape_ascii().to_string();
    if bytes.len() > cut.len() {
        text.push('…');
    }
    text
}

/// A few checks of the parsers, run by `FANOUT_SELF_TEST=1` (a bench
/// target has no test harness).
pub fn self_test() {
    let frame =
        b"id: 7\nevent: location\ndata: {}\n\n: keepalive\n\nid: 8\nevent: connected\ndata: {}\n\nid: 9\nevent: loc";
    let (n, used) = Proto::Tether.count_messages(frame).unwrap();
    assert_eq!((n, &frame[used..]), (1, &b"id: 9\nevent: loc"[..]));

    let payload = location_json(1);
    let one = format!("*3\r\n$7\r\nmessage\r\n$9\r\nlocations\r\n${}\r\n{payload}\r\n", payload.len());
    let two = format!("{one}{one}");
    for cut in 0..two.len() {
        let (n, used) = Proto::Redis.count_messages(&two.as_bytes()[..cut]).unwrap();
        assert_eq!(n, if cut == two.len() { 2 } else { (cut >= one.len()) as u64 });
        assert!(used <= cut);
    }
    assert_eq!(Proto::Redis.count_messages(two.as_bytes()).unwrap(), (2, two.len()));

    let sub = b"*3\r\n$9\r\nsubscribe\r\n$9\r\nlocations\r\n:1\r\n";
    assert_eq!(Proto::Redis.subscribed(sub).unwrap(), Some(sub.len()));
    assert_eq!(Proto::Redis.subscribed(&sub[..sub.len() - 1]).unwrap(), None);
    let head = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\nretry: 3000\n\nid: 1";
    assert_eq!(Proto::Tether.subscribed(head).unwrap(), Some(head.len() - 5));
    assert!(Proto::Tether.subscribed(b"HTTP/1.1 503 Service Unavailable\r\n\r\n").is_err());
    assert!(
        Proto::Tether
            .subscribed(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nd\r\nretry: 3000\n\n\r\n")
            .is_err()
    );

    let r = Proto::Redis.replies(b":550\r\n+PONG\r\n:549\r\n-ERR x\r\n:1").unwrap();
    assert_eq!((r.pongs, r.receivers, r.other.len(), r.consumed), (1, vec![550, 549], 1, 27));
    let r = Proto::Tether.replies(b"PONG\nPING\nERR bad-location\nPO").unwrap();
    assert_eq!((r.pongs, r.heartbeats, r.other, r.consumed), (1, 1, vec!["ERR bad-location".to_string()], 27));

    let latency = b"*1\r\n*4\r\n$7\r\ncommand\r\n:1700000000\r\n:3\r\n:12\r\n";
    let v = Value::parse(latency).unwrap().unwrap();
    let want = Value::Array(vec![Value::Array(vec![
        Value::Text("command".into()),
        Value::Int(1_700_000_000),
        Value::Int(3),
        Value::Int(12),
    ])]);
    assert_eq!(v, want);

    // The payload has the size of tether's event data for the same fix.
    assert_eq!(location_json(0), r#"{"mac":"02:00:00:00:00:01","lat":48,"lon":2,"at":"2026-11-29T04:00:00.000Z"}"#);
    assert_eq!(fix(12_345), ("48.3345".to_string(), "2.6415".to_string()));
    let burst = Proto::Tether.burst(3);
    assert_eq!(burst, b"LOCATION:48.0000,2.0000\nLOCATION:48.0001,2.0007\nLOCATION:48.0002,2.0014\n");
    println!("self-test passed");
}
