//! Fairness of the loop under a burst of events: one collar reporting many
//! locations at once while many event streams are open must not hold up
//! anyone else, nor make deadlines judge input that arrived in time.
//!
//! The gateway runs as the real binary, with flags an operator has, and
//! the test counts its writes from outside: on loopback with
//! `TCP_NODELAY`, each `write` of a frame reaches the stream as one
//! segment with data, which `TCP_INFO` counts on the client's socket.
//!
//! Timings are not asserted (a slow machine must not fail these tests),
//! but for a check that the test's own input went out well within the
//! deadline it is judged by. What is asserted is the mechanism (writes
//! batched per connection and turn, every event delivered in order) and
//! the outcome that a long turn used to spoil (an answer instead of a 408
//! or a `BYE`).

mod common;

use std::thread;
use std::time::{Duration, Instant};

use common::{
    HttpClient, Process, assert_like, data_segments_received, location_frame, locations, mac, metric, subscribe_many,
};

const MAC: &str = "CE:96:C2:78:27:FC";

/// A burst of E events with S streams open: every stream that reads gets
/// all E, in order, and the gateway makes far fewer than S×E writes (it
/// made exactly S×E, one per event per stream, when each event was written
/// to every stream inside the collar's handler). A collar's `PING` is
/// answered meanwhile, with streams open that read nothing.
///
/// The writes are counted twice: by the segments with data that the
/// streams received, and by the gateway's `tether_socket_writes_total`.
#[test]
fn a_burst_of_events_reaches_every_stream_in_a_few_writes_each() {
    const READING: usize = 20;
    const STUCK: usize = 20;
    const STREAMS: usize = READING + STUCK;
    const EVENTS: usize = 400;
    let tether = Process::start(&[], None);
    let mut publisher = tether.device(MAC);
    let mut canary = tether.device(&mac(1));
    let streams = subscribe_many(tether.http, READING, None);
    // With a 4 KiB receive buffer, and never read: the gateway soon cannot
    // write to them at all.
    let stuck = subscribe_many(tether.http, STUCK, Some(4096));
    let segments = |streams: &[&HttpClient]| -> u64 { streams.iter().map(|s| data_segments_received(&s.stream)).sum() };
    let segments_before = segments(&streams.iter().chain(&stuck).collect::<Vec<_>>());
    let metrics_before = tether.metrics();

    let readers: Vec<_> = streams
        .into_iter()
        .map(|mut stream| {
            thread::spawn(move || {
                // Event 1 is the publisher's `connected`, and 2 the canary's.
                for i in 0..EVENTS {
                    assert_like(&stream.read_event(), &location_frame(3 + i as u64, MAC, i));
                }
                stream
            })
        })
        .collect();
    publisher.send(locations(0, EVENTS).as_bytes());
    canary.send(b"PING\n");
    canary.expect(b"PONG\n");
    let streams: Vec<HttpClient> = readers.into_iter().map(|r| r.join().expect("a reader failed")).collect();
    let writes = segments(&streams.iter().chain(&stuck).collect::<Vec<_>>()) - segments_before;
    assert!(
        writes < (STREAMS * EVENTS / 10) as u64,
        "{writes} writes (segments received) for {EVENTS} events to {STREAMS} streams: not batched"
    );

    // The gateway's own counters agree.
    let metrics = tether.metrics();
    let delta = |series: &str| metric(&metrics, series) - metric(&metrics_before, series);
    let counted = delta("tether_socket_writes_total");
    assert!(
        counted < (STREAMS * EVENTS / 10) as f64,
        "{counted} writes counted for {EVENTS} events to {STREAMS} streams"
    );
    let delivered = delta("tether_events_delivered_total");
    assert!(
        delivered >= (READING * EVENTS) as f64 && delivered <= (STREAMS * EVENTS) as f64,
        "{delivered} events delivered"
    );
    assert_eq!(metric(&metrics, "tether_sse_subscribers"), STREAMS as f64);
    drop((streams, stuck));
}

/// A burst of events to many streams that read nothing (3,000 events to
/// 200 streams), and while it is being written out, a collar and an HTTP
/// client, both connected before it, send what their 1 s deadlines wait
/// for: `IDENTIFY` and a `PING`, and a whole `GET /health`. Both are
/// answered. When the burst was written out inside one handler (600,000
/// writes), the loop stalled for seconds, and the deadlines that fired
/// after the stall were judged before the input that had arrived during it
/// was read: `BYE handshake-timeout` and a 408.
#[test]
fn input_that_arrives_during_a_burst_is_read_before_its_deadline_is_judged() {
    const STREAMS: usize = 200;
    const EVENTS: usize = 3000;
    let tether = Process::start(&["--handshake-timeout", "1s", "--http-request-timeout", "1s"], None);
    let mut publisher = tether.device(MAC);
    // Each can take the whole burst without reading: every event a stream
    // is written is one `write` that succeeds.
    let mut streams = subscribe_many(tether.http, STREAMS, Some(4 << 20));
    // Connected, and so accepted, before the burst: their deadlines run
    // from now. The PING shows the collar's connection was accepted (and
    // does not count as a handshake); the `/metrics` request, which comes
    // later in the same accept queue, shows the HTTP client's was.
    let connected = Instant::now();
    let mut collar = tether.connect();
    collar.send(b"PING\n");
    collar.expect(b"PONG\n");
    let mut probe = HttpClient::connect(tether.http);
    tether.metrics();

    publisher.send(locations(0, EVENTS).as_bytes());
    // The burst is being written out: what the collar and the client send
    // now arrives while the gateway is busy with it.
    assert_like(&streams[0].read_event(), &location_frame(2, MAC, 0));
    collar.send(format!("IDENTIFY:{}\nPING\n", mac(1)).as_bytes());
    probe.send(b"GET /health HTTP/1.1\r\nHost: tether\r\n\r\n");
    let sent = connected.elapsed();
    assert!(sent < Duration::from_millis(500), "the input was sent {sent:?} after the connects: not in time");

    // Both answered, in whichever order the loop served them.
    let identified = collar.read_line();
    let health = probe.read_response();
    assert_eq!((identified.as_str(), health.status), ("OK\n", 200), "{}", health.raw());
    assert_like(health.text(), r#"{"status":"ok","uptime_s":<INT>,"devices_online":<INT>,"connections":<INT>}"#);
    collar.expect(b"PONG\n");
}
