//! Device events pushed to the app: the Server-Sent Events stream
//! (`GET /events`: its exact framing, replay by `Last-Event-ID` with
//! `event: reset` when history was lost, keepalive comments, the `mac`
//! filter, and a slow subscriber dropped without holding up the others),
//! long polling (`GET /events/poll`: answered at once, woken by an event,
//! timed out, filtered, reset, batched), and what shutdown does to both.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use common::{Client, Gateway, HttpClient, STREAM_START, TIMEOUT, assert_like, config, json_response, mac, metric};
use tether::Exit;
use tether::close::CloseReason;
use tether::reactor::Kind;

const MAC: &str = "CE:96:C2:78:27:FC";

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn peer(dev: &Client) -> SocketAddr {
    dev.stream.local_addr().unwrap()
}

/// Opens `GET <target>` as an event stream and reads its start.
fn subscribe(gw: &Gateway, target: &str) -> HttpClient {
    let mut stream = gw.http_client();
    stream.send(format!("GET {target} HTTP/1.1\r\nHost: tether\r\n\r\n").as_bytes());
    stream.expect(STREAM_START.as_bytes());
    stream
}

// The `data` of each kind of event.
fn connected_data(mac: &str, peer: SocketAddr) -> String {
    format!(r#"{{"mac":"{mac}","peer":"{peer}","at":"<TIME>"}}"#)
}

fn location_data(mac: &str, lat: &str, lon: &str) -> String {
    let (lat, lon) = (common::num(lat), common::num(lon));
    format!(r#"{{"mac":"{mac}","lat":{lat},"lon":{lon},"at":"<TIME>"}}"#)
}

fn disconnected_data(mac: &str, reason: &str) -> String {
    format!(r#"{{"mac":"{mac}","reason":"{reason}","at":"<TIME>"}}"#)
}

/// An SSE frame, as a template for [`assert_like`].
fn frame(id: u64, kind: &str, data: &str) -> String {
    format!("id: {id}\nevent: {kind}\ndata: {data}\n\n")
}

/// A long-poll event, as a template for [`assert_like`].
fn polled(id: u64, kind: &str, data: &str) -> String {
    format!(r#"{{"id":{id},"event":"{kind}","data":{data}}}"#)
}

fn poll_body(events: &[String], next: u64, reset: bool) -> String {
    format!(r#"{{"events":[{}],"next":{next},"reset":{reset}}}"#, events.join(","))
}

/// Sends `LOCATION:` lines for each fix and a PING, and reads the PONG: the
/// fixes have been published when it returns.
fn report(dev: &mut Client, fixes: &[(&str, &str)]) {
    let lines: String = fixes.iter().map(|(lat, lon)| format!("LOCATION:{lat},{lon}\n")).collect();
    dev.send(format!("{lines}PING\n").as_bytes());
    dev.expect(b"PONG\n");
}

#[test]
fn an_event_stream_frames_each_event_with_increasing_ids() {
    let gw = Gateway::start(config());
    let mut stream = subscribe(&gw, "/events");
    let mut dev = gw.device(MAC);
    assert_like(&stream.read_event(), &frame(1, "connected", &connected_data(MAC, peer(&dev))));
    dev.send(b"LOCATION:48.8566,2.3522\n");
    assert_like(&stream.read_event(), &frame(2, "location", &location_data(MAC, "48.8566", "2.3522")));
    dev.send(b"LOCATION:-1.5,+180\n");
    assert_like(&stream.read_event(), &frame(3, "location", &location_data(MAC, "-1.5", "180")));
    // Refused lines are no events.
    dev.send(b"LOCATION:91,0\n");
    dev.expect(b"ERR bad-location\n");
    drop(dev);
    assert_like(&stream.read_event(), &frame(4, "disconnected", &disconnected_data(MAC, "peer-closed")));
    // A takeover: the old connection leaves (replaced), the new one arrives.
    let first = gw.device(MAC);
    let second = gw.device(MAC);
    assert_like(&stream.read_event(), &frame(5, "connected", &connected_data(MAC, peer(&first))));
    assert_like(&stream.read_event(), &frame(6, "disconnected", &disconnected_data(MAC, "replaced")));
    assert_like(&stream.read_event(), &frame(7, "connected", &connected_data(MAC, peer(&second))));
    // Unidentified connections are not devices: no events.
    let mut anonymous = gw.connect();
    anonymous.send(b"PING\n");
    anonymous.expect(b"PONG\n");
    drop(anonymous);
    let mut other = gw.device(&mac(1));
    assert_like(&stream.read_event(), &frame(8, "connected", &connected_data(&mac(1), peer(&other))));
    report(&mut other, &[("0", "0")]);
    assert_like(&stream.read_event(), &frame(9, "location", &location_data(&mac(1), "0", "0")));
    assert_eq!(metric(&gw.metrics(), "tether_sse_subscribers"), 1.0);
}

#[test]
fn every_subscriber_gets_every_event() {
    let gw = Gateway::start(config());
    let mut streams: Vec<HttpClient> = (0..3).map(|_| subscribe(&gw, "/events")).collect();
    let mut dev = gw.device(MAC);
    report(&mut dev, &[("1", "2")]);
    for stream in &mut streams {
        assert_like(&stream.read_event(), &frame(1, "connected", &connected_data(MAC, peer(&dev))));
        assert_like(&stream.read_event(), &frame(2, "location", &location_data(MAC, "1", "2")));
    }
    assert_eq!(metric(&gw.metrics(), "tether_sse_subscribers"), 3.0);
}

#[test]
fn last_event_id_replays_what_the_client_missed() {
    let gw = Gateway::start(config());
    let mut dev = gw.device(MAC);
    report(&mut dev, &[("1", "1"), ("2", "2")]);
    let mut stream = gw.http_client();
    stream.send(b"GET /events HTTP/1.1\r\nLast-Event-ID: 1\r\n\r\n");
    stream.expect(STREAM_START.as_bytes());
    assert_like(&stream.read_event(), &frame(2, "location", &location_data(MAC, "1", "1")));
    assert_like(&stream.read_event(), &frame(3, "location", &location_data(MAC, "2", "2")));
    // Then live.
    dev.send(b"LOCATION:3,3\n");
    assert_like(&stream.read_event(), &frame(4, "location", &location_data(MAC, "3", "3")));

    // Up to date: nothing replayed, straight to the next live event. The
    // header's name is case-insensitive.
    let mut current = gw.http_client();
    current.send(b"GET /events HTTP/1.1\r\nlast-event-id: 4\r\n\r\n");
    current.expect(STREAM_START.as_bytes());
    // A value that is not an id is ignored: a fresh stream.
    let mut fresh = gw.http_client();
    fresh.send(b"GET /events HTTP/1.1\r\nLast-Event-ID: yesterday\r\n\r\n");
    fresh.expect(STREAM_START.as_bytes());
    dev.send(b"LOCATION:5,5\n");
    for stream in [&mut current, &mut fresh] {
        assert_like(&stream.read_event(), &frame(5, "location", &location_data(MAC, "5", "5")));
    }
}

#[test]
fn last_event_id_older_than_the_history_sends_a_reset_first() {
    let mut config = config();
    config.event_history = 3;
    let gw = Gateway::start(config);
    let mut dev = gw.device(MAC);
    report(&mut dev, &[("2", "0"), ("3", "0"), ("4", "0"), ("5", "0")]);
    // Events 3, 4, 5 are held; 1 and 2 are gone.
    let held: Vec<String> = (3..=5).map(|i| frame(i, "location", &location_data(MAC, &i.to_string(), "0"))).collect();
    let mut stream = gw.http_client();
    stream.send(b"GET /events HTTP/1.1\r\nLast-Event-ID: 1\r\n\r\n");
    stream.expect(STREAM_START.as_bytes());
    stream.expect(b"event: reset\ndata: {\"last_event_id\":1,\"latest\":5}\n\n");
    for expected in &held {
        assert_like(&stream.read_event(), expected);
    }
    // Seen up to 2, and 3 onwards are held: nothing was lost, no reset.
    let mut stream = gw.http_client();
    stream.send(b"GET /events HTTP/1.1\r\nLast-Event-ID: 2\r\n\r\n");
    stream.expect(STREAM_START.as_bytes());
    for expected in &held {
        assert_like(&stream.read_event(), expected);
    }
}

#[test]
fn last_event_id_newer_than_the_newest_sends_a_reset_and_everything_held() {
    let gw = Gateway::start(config());
    let mut dev = gw.device(MAC);
    report(&mut dev, &[("1", "1")]);
    // An id from before a restart of the gateway.
    let mut stream = gw.http_client();
    stream.send(b"GET /events HTTP/1.1\r\nLast-Event-ID: 99\r\n\r\n");
    stream.expect(STREAM_START.as_bytes());
    stream.expect(b"event: reset\ndata: {\"last_event_id\":99,\"latest\":2}\n\n");
    assert_like(&stream.read_event(), &frame(1, "connected", &connected_data(MAC, peer(&dev))));
    assert_like(&stream.read_event(), &frame(2, "location", &location_data(MAC, "1", "1")));
    dev.send(b"LOCATION:2,2\n");
    assert_like(&stream.read_event(), &frame(3, "location", &location_data(MAC, "2", "2")));
}

/// A replay is paced, not cut: a stream resuming far behind gets every
/// event it missed that the log still holds, a budget's worth per turn,
/// even when the replay is larger than `--sse-max-backlog`; a subscriber
/// is a cursor into the log, not a private copy.
#[test]
fn a_replay_larger_than_the_backlog_is_sent_whole_a_budget_per_turn() {
    let mut config = config();
    config.sse_max_backlog = 4096;
    config.budget_write = 1024;
    let gw = Gateway::start(config);
    let mut dev = gw.device(MAC);
    let fixes: Vec<(String, String)> = (1..=60).map(|i| (format!("{}", i % 90), "0".to_string())).collect();
    let fixes: Vec<(&str, &str)> = fixes.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    report(&mut dev, &fixes);
    let mut stream = gw.http_client();
    stream.send(b"GET /events HTTP/1.1\r\nLast-Event-ID: 1\r\n\r\n");
    stream.expect(STREAM_START.as_bytes());
    let mut bytes = 0;
    for id in 2..=61 {
        let event = stream.read_event();
        assert_like(&event, &frame(id, "location", &location_data(MAC, &((id - 1) % 90).to_string(), "0")));
        bytes += event.len();
    }
    assert!(bytes > 4096, "the replay ({bytes} bytes) is larger than the backlog");
    let spent = metric(&gw.metrics(), "tether_budget_spent_total{budget=\"write-bytes\"}");
    assert!(spent >= 4.0, "paced over several turns: {spent}");
    // The stream lives on.
    dev.send(b"LOCATION:1,1\n");
    assert_like(&stream.read_event(), &frame(62, "location", &location_data(MAC, "1", "1")));
}

#[test]
fn a_quiet_stream_gets_keepalive_comments() {
    let mut config = config();
    config.sse_keepalive = ms(100);
    let gw = Gateway::start(config);
    let started = Instant::now();
    let mut stream = subscribe(&gw, "/events");
    stream.expect(b": keepalive\n\n");
    assert!(started.elapsed() >= ms(90), "first keepalive after {:?}", started.elapsed());
    stream.expect(b": keepalive\n\n");
    // An event in between is sent as usual; keepalives go on after it.
    let dev = gw.device(MAC);
    let event = stream.read_event();
    let event = if event == ": keepalive\n\n" { stream.read_event() } else { event };
    assert_like(&event, &frame(1, "connected", &connected_data(MAC, peer(&dev))));
    stream.expect(b": keepalive\n\n");
    assert!(started.elapsed() < ms(2000), "{:?}", started.elapsed());
}

#[test]
fn the_mac_filter_keeps_other_devices_events_off_the_stream() {
    let gw = Gateway::start(config());
    let mut filtered = subscribe(&gw, "/events?mac=ce-96-c2-78-27-fc");
    let mut encoded = subscribe(&gw, "/events?mac=CE%3A96%3AC2%3A78%3A27%3AFC");
    let mut all = subscribe(&gw, "/events");
    let mut other = gw.device(&mac(1));
    report(&mut other, &[("1", "1")]);
    let mut dev = gw.device(MAC);
    report(&mut dev, &[("2", "2")]);
    let other_peer = peer(&other);
    drop(other);
    assert_like(&all.read_event(), &frame(1, "connected", &connected_data(&mac(1), other_peer)));
    assert_like(&all.read_event(), &frame(2, "location", &location_data(&mac(1), "1", "1")));
    assert_like(&all.read_event(), &frame(3, "connected", &connected_data(MAC, peer(&dev))));
    assert_like(&all.read_event(), &frame(4, "location", &location_data(MAC, "2", "2")));
    assert_like(&all.read_event(), &frame(5, "disconnected", &disconnected_data(&mac(1), "peer-closed")));
    drop(dev);
    assert_like(&all.read_event(), &frame(6, "disconnected", &disconnected_data(MAC, "peer-closed")));
    // The filtered streams got only that collar's events: their first
    // frame is id 3, and 5 was skipped.
    for stream in [&mut filtered, &mut encoded] {
        assert!(stream.read_event().starts_with("id: 3\nevent: connected\n"));
        assert_like(&stream.read_event(), &frame(4, "location", &location_data(MAC, "2", "2")));
        assert_like(&stream.read_event(), &frame(6, "disconnected", &disconnected_data(MAC, "peer-closed")));
    }
    // A resumed filtered stream replays only that collar's events.
    let mut resumed = gw.http_client();
    resumed.send(b"GET /events?mac=CE-96-C2-78-27-FC HTTP/1.1\r\nLast-Event-ID: 0\r\n\r\n");
    resumed.expect(STREAM_START.as_bytes());
    for id in [3, 4, 6] {
        assert!(resumed.read_event().starts_with(&format!("id: {id}\n")));
    }
    // A filter that is not a MAC is refused, not streamed.
    let mut client = gw.http_client();
    let response = client.get("/events?mac=nope");
    assert_eq!(response.raw(), json_response("400 Bad Request", r#"{"error":"mac is not a MAC address"}"#, &[], false));
}

/// One subscriber with a tiny receive buffer reads nothing after the
/// stream's start; another reads everything. Events are published until
/// the slow one's backlog passes `--sse-max-backlog` and it is dropped;
/// the other gets every event, before and after.
#[test]
fn a_slow_subscriber_is_dropped_while_the_others_get_every_event() {
    const BATCH: u64 = 200;
    let mut config = config();
    config.sse_max_backlog = 64 * 1024;
    // The slow client reads only after the gateway has given up on it.
    config.linger_timeout = TIMEOUT;
    let gw = Gateway::start(config);
    let mut slow = HttpClient::connect_with_recv_buffer(gw.http, 4096);
    slow.send(b"GET /events HTTP/1.1\r\n\r\n");
    slow.expect(STREAM_START.as_bytes());
    let mut fast = subscribe(&gw, "/events");
    let dev = gw.device(MAC);
    assert_like(&fast.read_event(), &frame(1, "connected", &connected_data(MAC, peer(&dev))));

    // Publishes in batches, each read in full by the fast subscriber before
    // the next: its backlog stays small, the slow one's only grows.
    let stop = Arc::new(AtomicBool::new(false));
    let publisher = thread::spawn({
        let stop = Arc::clone(&stop);
        move || {
            let (mut dev, mut fast) = (dev, fast);
            let mut next = 2;
            while !stop.load(Ordering::Relaxed) && next < 1_000_000 {
                let batch: String =
                    (next..next + BATCH).map(|i| format!("LOCATION:{},{}\n", i % 90, i % 180)).collect();
                dev.send(batch.as_bytes());
                for id in next..next + BATCH {
                    let event = fast.read_event();
                    let lat = common::num(&(id % 90).to_string());
                    let expected = format!("id: {id}\nevent: location\ndata: {{\"mac\":\"{MAC}\",\"lat\":{lat},");
                    assert!(event.starts_with(&expected), "expected {expected:?}, got {event:?}");
                }
                next += BATCH;
            }
            (dev, fast, next - 1)
        }
    });
    gw.expect_log("closing: slow-consumer");
    stop.store(true, Ordering::Relaxed);
    let (mut dev, mut fast, last) = publisher.join().unwrap();

    // The fast subscriber goes on receiving.
    dev.send(b"LOCATION:1,1\n");
    assert_like(&fast.read_event(), &frame(last + 1, "location", &location_data(MAC, "1", "1")));
    let text = gw.metrics();
    assert_eq!(metric(&text, "tether_sse_subscribers"), 1.0);
    assert_eq!(metric(&text, r#"tether_closed_total{kind="http",reason="slow-consumer"}"#), 1.0);

    // The slow one finds what had reached it, in order, then the end.
    let received = slow.read_to_eof();
    let text = String::from_utf8(received).unwrap();
    let frames: Vec<&str> = text.split_inclusive("\n\n").filter(|f| f.ends_with("\n\n")).collect();
    for (i, frame) in frames.iter().enumerate() {
        assert!(frame.starts_with(&format!("id: {}\n", i + 1)), "frame {i}: {frame:?}");
    }
    assert!((frames.len() as u64) < last, "{} of {last} events reached the slow subscriber", frames.len());
    drop((slow, fast, dev));
    let stats = gw.stop_drained();
    assert_eq!(stats.closed(Kind::Http, CloseReason::SlowConsumer), 1);
}

#[test]
fn a_poll_with_since_returns_newer_events_at_once() {
    let gw = Gateway::start(config());
    let mut dev = gw.device(MAC);
    report(&mut dev, &[("1", "2")]);
    let connected = polled(1, "connected", &connected_data(MAC, peer(&dev)));
    let located = polled(2, "location", &location_data(MAC, "1", "2"));
    let api = gw.api();
    for (query, events, next) in [
        ("since=0", vec![connected.clone(), located.clone()], 2),
        ("since=0&timeout=30s", vec![connected.clone(), located.clone()], 2),
        ("since=1", vec![located.clone()], 2),
        // Nothing newer and no time to wait.
        ("since=2&timeout=0", vec![], 2),
    ] {
        let started = Instant::now();
        let reply = api.get(&format!("/events/poll?{query}"));
        assert_eq!(reply.status, 200, "{query}");
        assert_eq!(reply.header("content-type"), Some("application/json"));
        assert_like(&reply.body, &poll_body(&events, next, false));
        assert!(started.elapsed() < ms(1000), "{query}: answered after {:?}", started.elapsed());
    }
}

#[test]
fn a_held_poll_is_answered_the_moment_a_device_reports() {
    let gw = Gateway::start(config());
    let mut dev = gw.device(MAC);
    // Without `since`: only what happens from now on (not the connect).
    let mut client = gw.http_client();
    client.send(b"GET /events/poll?timeout=30s HTTP/1.1\r\n\r\n");
    gw.expect_log("HTTP Get /events/poll");
    assert_eq!(metric(&gw.metrics(), "tether_long_polls"), 1.0);
    let started = Instant::now();
    dev.send(b"LOCATION:7,8\n");
    let response = client.read_response();
    assert!(started.elapsed() < ms(1000), "answered after {:?}", started.elapsed());
    assert_eq!(response.status, 200);
    assert_like(response.text(), &poll_body(&[polled(2, "location", &location_data(MAC, "7", "8"))], 2, false));
    assert_eq!(metric(&gw.metrics(), "tether_long_polls"), 0.0);

    // With `since`, from a real client: a disconnect wakes it too.
    let api = gw.api();
    let poll = thread::spawn(move || api.get("/events/poll?since=2&timeout=30s"));
    gw.expect_log("HTTP Get /events/poll");
    drop(dev);
    let reply = poll.join().unwrap();
    assert_eq!(reply.status, 200);
    assert_like(
        &reply.body,
        &poll_body(&[polled(3, "disconnected", &disconnected_data(MAC, "peer-closed"))], 3, false),
    );
}

#[test]
fn a_poll_with_nothing_new_is_answered_with_an_empty_list_when_its_time_is_up() {
    let mut config = config();
    config.max_wait = ms(300);
    let gw = Gateway::start(config);
    let mut dev = gw.device(MAC);
    report(&mut dev, &[("1", "1")]);
    let mut client = gw.http_client();
    for (query, at_least) in [
        ("timeout=100ms", ms(90)),
        ("since=2&timeout=100ms", ms(90)),
        // Longer than --max-wait: capped.
        ("since=2&timeout=1h", ms(290)),
        // The default (30 s) is capped too.
        ("since=2", ms(290)),
    ] {
        let started = Instant::now();
        let response = client.get(&format!("/events/poll?{query}"));
        let took = started.elapsed();
        assert_eq!(response.raw(), json_response("200 OK", &poll_body(&[], 2, false), &[], false), "{query}");
        assert!(took >= at_least && took < at_least + ms(700), "{query}: answered after {took:?}");
    }
}

#[test]
fn a_poll_filtered_by_mac_waits_for_that_collar() {
    let gw = Gateway::start(config());
    let mut other = gw.device(&mac(1));
    let mut dev = gw.device(MAC);
    let mut client = gw.http_client();
    client.send(b"GET /events/poll?since=2&mac=CE%3A96%3AC2%3A78%3A27%3AFC&timeout=30s HTTP/1.1\r\n\r\n");
    gw.expect_log("HTTP Get /events/poll");
    // Event 3 is the other collar's: the poll keeps waiting.
    report(&mut other, &[("1", "1")]);
    // Event 4 is this one's.
    dev.send(b"LOCATION:2,2\n");
    let response = client.read_response();
    assert_like(response.text(), &poll_body(&[polled(4, "location", &location_data(MAC, "2", "2"))], 4, false));
    // Filtered history.
    let response = client.get(&format!("/events/poll?since=0&mac={}", mac(1)));
    let events = [
        polled(1, "connected", &connected_data(&mac(1), peer(&other))),
        polled(3, "location", &location_data(&mac(1), "1", "1")),
    ];
    assert_like(response.text(), &poll_body(&events, 4, false));
}

#[test]
fn a_poll_from_before_the_history_or_a_restart_is_told_to_reset() {
    let mut config = config();
    config.event_history = 2;
    let gw = Gateway::start(config);
    let mut dev = gw.device(MAC);
    report(&mut dev, &[("2", "0"), ("3", "0"), ("4", "0")]);
    let held =
        [polled(3, "location", &location_data(MAC, "3", "0")), polled(4, "location", &location_data(MAC, "4", "0"))];
    let api = gw.api();
    for (since, reset) in [(0, true), (1, true), (2, false), (99, true)] {
        let reply = api.get(&format!("/events/poll?since={since}&timeout=0"));
        assert_like(&reply.body, &poll_body(&held, 4, reset));
    }
    // Up to date: nothing, no reset.
    let reply = api.get("/events/poll?since=4&timeout=0");
    assert_eq!(reply.body, poll_body(&[], 4, false));
}

#[test]
fn a_poll_returns_at_most_a_thousand_events_and_next_continues_from_there() {
    let gw = Gateway::start(config());
    let mut dev = gw.device(MAC);
    let lines: String = (2..=1500).map(|i| format!("LOCATION:{},0\n", i % 90)).collect();
    dev.send(format!("{lines}PING\n").as_bytes());
    dev.expect(b"PONG\n");
    let api = gw.api();
    let ids = |body: &str| -> Vec<u64> {
        body.split(r#"{"id":"#).skip(1).map(|s| s.split(',').next().unwrap().parse().unwrap()).collect()
    };
    let first = api.get("/events/poll?since=0").body;
    assert_eq!(ids(&first), (1..=1000).collect::<Vec<_>>());
    assert!(first.ends_with(r#"],"next":1000,"reset":false}"#), "{}", &first[first.len() - 60..]);
    let second = api.get("/events/poll?since=1000").body;
    assert_eq!(ids(&second), (1001..=1500).collect::<Vec<_>>());
    assert!(second.ends_with(r#"],"next":1500,"reset":false}"#));
}

#[test]
fn a_poll_with_bad_parameters_is_400() {
    let gw = Gateway::start(config());
    let mut client = gw.http_client();
    for (query, error) in [
        ("since=x", "since must be an event id"),
        ("since=-1", "since must be an event id"),
        ("mac=nope", "mac is not a MAC address"),
        ("timeout=5", r#"\"5\" is not a duration like 250ms, 10s, 5m or 1h"#),
        ("since=%zz", "badly encoded query"),
    ] {
        let response = client.get(&format!("/events/poll?{query}"));
        let body = format!(r#"{{"error":"{error}"}}"#);
        assert_eq!(response.raw(), json_response("400 Bad Request", &body, &[], false), "{query}");
    }
}

#[test]
fn a_poller_that_goes_away_is_forgotten() {
    let gw = Gateway::start(config());
    let mut dev = gw.device(MAC);
    let mut client = gw.http_client();
    client.send(b"GET /events/poll?timeout=30s HTTP/1.1\r\n\r\n");
    gw.expect_log("HTTP Get /events/poll");
    drop(client);
    gw.expect_log("closing: peer-closed");
    assert_eq!(metric(&gw.metrics(), "tether_long_polls"), 0.0);
    // Publishing finds nobody to answer; all is well.
    report(&mut dev, &[("1", "1")]);
    let reply = gw.api().get("/events/poll?since=1&timeout=0");
    assert_like(&reply.body, &poll_body(&[polled(2, "location", &location_data(MAC, "1", "1"))], 2, false));
}

/// Held long polls are answered 503 on shutdown, whether their connection
/// came before or after the devices' (the drain visits connections in
/// slab order, and closing a device publishes a `disconnected` event).
#[test]
fn shutdown_answers_long_polls_503_closes_event_streams_and_drains() {
    let mut config = config();
    config.linger_timeout = TIMEOUT;
    config.drain_timeout = TIMEOUT;
    let gw = Gateway::start(config);
    let mut stream = subscribe(&gw, "/events");
    let mut early_poll = gw.http_client();
    early_poll.send(b"GET /events/poll?timeout=30s HTTP/1.1\r\n\r\n");
    gw.expect_log("HTTP Get /events/poll");
    let mut dev = gw.device(MAC);
    assert_like(&stream.read_event(), &frame(1, "connected", &connected_data(MAC, peer(&dev))));
    assert_like(
        early_poll.read_response().text(),
        &poll_body(&[polled(1, "connected", &connected_data(MAC, peer(&dev)))], 1, false),
    );
    early_poll.send(b"GET /events/poll?since=1&timeout=30s HTTP/1.1\r\n\r\n");
    gw.expect_log("HTTP Get /events/poll");
    let mut late_poll = gw.http_client();
    late_poll.send(b"GET /events/poll?since=1&timeout=30s HTTP/1.1\r\n\r\n");
    gw.expect_log("HTTP Get /events/poll");
    assert_eq!(metric(&gw.metrics(), "tether_long_polls"), 2.0);

    gw.begin_stop();
    dev.expect(b"BYE shutdown\n");
    dev.expect_eof();
    let shutting_down = r#"{"error":"the gateway is shutting down"}"#;
    for (name, poll) in
        [("the poll opened before the device", &mut early_poll), ("the poll opened after it", &mut late_poll)]
    {
        let response = poll.read_response();
        assert_eq!(response.raw(), json_response("503 Service Unavailable", shutting_down, &[], true), "{name}");
        poll.expect_eof();
    }
    // The stream ends; all it may still carry is the device leaving.
    let rest = String::from_utf8(stream.read_to_eof()).unwrap();
    if !rest.is_empty() {
        assert_like(&rest, &frame(2, "disconnected", &disconnected_data(MAC, "shutdown")));
    }
    // No new stream while draining.
    let mut refused = gw.http_client();
    let response = refused.get("/events");
    assert_eq!(response.raw(), json_response("503 Service Unavailable", shutting_down, &[], true));
    refused.expect_eof();

    drop((stream, dev, early_poll, late_poll, refused));
    let (exit, stats) = gw.wait_stopped();
    assert_eq!(exit, Exit::Drained);
    common::assert_all_closed(&stats);
    assert_eq!(stats.http_responses.get(&503), Some(&3));
}
