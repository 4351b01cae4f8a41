//! Regression tests for bugs found in review, each named for what went
//! wrong. The gateway runs in a debug build here, where the reactor also
//! checks after every expiry batch that the wheel holds exactly one timer
//! per connection that has one; a broken invariant panics the reactor
//! thread, and `Gateway::stop` then fails the test.

mod common;

use std::io::{BufRead, BufReader};
use std::time::Duration;

use common::{Gateway, HttpClient, config, mac, metric};
use socket2::SockRef;
use tether::Config;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// A `100 Continue` that could not be written (the client had reset the
/// connection) freed the connection, and the gateway then touched it again:
/// a panic any HTTP client could cause, before any token check.
#[test]
fn a_reset_before_100_continue_does_not_crash_the_gateway() {
    let gw = Gateway::start(config());
    for _ in 0..20 {
        let mut client = HttpClient::connect(gw.http);
        client.send(
            b"POST /devices/02-00-00-00-00-01/commands HTTP/1.1\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n",
        );
        // Close with a reset (linger 0) right behind the request.
        SockRef::from(&client.stream).set_linger(Some(Duration::ZERO)).unwrap();
        drop(client);
    }
    let mut client = HttpClient::connect(gw.http);
    assert_eq!(client.get("/health").status, 200);
    drop(client);
    gw.stop();
}

/// A device closing on its heartbeat timeout answers the location queries
/// waiting on it (502), which re-arms their timers; when such a query's own
/// timer had expired in the same batch, it used to be handled anyway and
/// the connection ended up with two timers in the wheel.
#[test]
fn location_waits_that_expire_with_their_device_keep_one_timer_each() {
    let mut config = config();
    config.heartbeat_interval = ms(100);
    config.heartbeat_timeout = ms(100);
    config.http_idle_timeout = ms(150);
    let gw = Gateway::start(config);
    for round in 0..3u32 {
        let mut device = gw.device(&mac(round));
        // Waits whose deadlines are staggered 2 ms apart across the moment
        // the silent device is dropped (about 200 ms after it identified).
        let mut waiters: Vec<HttpClient> = (0..60u64)
            .map(|i| {
                let mut client = HttpClient::connect(gw.http);
                let path = format!("/devices/{}/location?timeout={}ms", mac(round), 140 + 2 * i);
                client.send(format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes());
                client
            })
            .collect();
        device.expect(b"location\nPING\n");
        for waiter in &mut waiters {
            let status = waiter.read_response().status;
            assert!(status == 502 || status == 504, "status {status}");
        }
        // Their idle deadlines pass too, with the gateway checking the wheel.
        for waiter in &mut waiters {
            waiter.expect_eof();
        }
    }
    gw.stop();
}

/// A collar whose lines are each answered with more bytes than they took
/// (`HELLO`, 6 bytes, gets `ERR unknown-command`, 20): 10,000 of them in
/// one write are 60 KB, one read, and 200 KB of answers in one turn. The
/// collar reads every answer as it comes, so it must get every one.
///
/// This fails: it is told `BYE slow-consumer` after the first 64 KiB. The
/// flush writes a turn's worth (`--budget-write`), the kernel takes all of
/// it, and `Reactor::write_once` then judges the output limit on what is
/// left (`slow_consumer`, over `--max-output`) although the socket is not
/// blocked: the collar is dropped for what one turn made its session say,
/// not for failing to read. (The gateway before the second edition
/// answered all 10,000.)
#[test]
fn a_collar_that_reads_is_not_dropped_for_the_answers_to_one_read() {
    const LINES: usize = 10_000;
    let gw = Gateway::start(config());
    let mut dev = gw.device(&mac(1));
    dev.send(&b"HELLO\n".repeat(LINES));
    let mut answers = BufReader::new(dev.stream.try_clone().unwrap());
    for i in 0..LINES {
        let mut line = String::new();
        answers.read_line(&mut line).unwrap_or_else(|e| panic!("answer {i}: {e}"));
        assert_eq!(line, "ERR unknown-command\n", "answer {i} of {LINES}");
    }
    dev.send(b"PING\n");
    let mut line = String::new();
    answers.read_line(&mut line).unwrap();
    assert_eq!(line, "PONG\n");
}

/// With `--linger-timeout 0` a close frees the connection at once. A
/// pipelined request answered past the request budget (from the session's
/// `on_resume`) that closed the connection freed it inside the run phase,
/// which then read it again: a panic of the whole gateway any HTTP client
/// could cause.
#[test]
fn a_close_from_resumed_work_with_no_linger_does_not_kill_the_loop() {
    let gw = Gateway::start(Config { linger_timeout: Duration::ZERO, budget_requests: 1, ..config() });
    let mut client = gw.http_client();
    client.send(b"GET /nope HTTP/1.1\r\n\r\nGET /nope HTTP/1.1\r\nConnection: close\r\n\r\n");
    assert_eq!(client.read_response().status, 404);
    assert_eq!(client.read_response().status, 404);
    client.expect_eof();
    // The loop lives on.
    assert_eq!(gw.http_client().get("/health").status, 200);
    gw.stop_drained();
}

/// Requests already read were answered every turn whatever the unsent
/// output, so a client that pipelines and never reads made the gateway
/// hold megabytes of answers (2,500 `GET /metrics` held ~18 MB); now
/// buffered work waits, like input, while the output is past its limit.
#[test]
fn a_client_that_does_not_read_cannot_make_the_gateway_hold_its_answers() {
    let gw = Gateway::start(config());
    let mut stuck = HttpClient::connect_with_recv_buffer(gw.http, 4096);
    stuck.send("GET /metrics HTTP/1.1\r\n\r\n".repeat(2500).as_bytes());
    // Each scrape is at least one turn of the loop later: a gateway that
    // kept answering would grow by ~16 answers of ~8 KB a turn.
    let mut scrapes = gw.http_client();
    let mut most: f64 = 0.0;
    for _ in 0..20 {
        let page = scrapes.get("/metrics");
        most = most.max(metric(page.text(), "tether_unsent_bytes"));
    }
    // The pause limit (64 KiB) plus one call's answers (16 x ~8 KB), and
    // the scrapes' own.
    assert!(most < 320.0 * 1024.0, "{most} bytes held for a client that reads nothing");
    drop(stuck);
    gw.stop_drained();
}

/// A connection's effects were applied after the close its call asked
/// for: `IDENTIFY` and an over-long line in one read announced the collar
/// `connected` from `0.0.0.0:0` (and took its MAC over from a live
/// holder) for a connection already closed. Since the hub admits a collar
/// before the lines behind its `IDENTIFY` are framed, the `IDENTIFY` is
/// carried out whole first (the takeover, `OK`, `connected` from its real
/// address), and the over-long line then closes a collar that is online.
#[test]
fn a_collar_closed_in_the_read_that_identified_it_is_announced_in_order() {
    let gw = Gateway::start(config());
    let mut events = gw.http_client();
    events.send(b"GET /events HTTP/1.1\r\n\r\n");
    events.expect(common::STREAM_START.as_bytes());
    let mut holder = gw.device(&mac(1));
    assert!(events.read_event().contains("event: connected"));
    let mut impostor = gw.connect();
    let mut bytes = format!("IDENTIFY:{}\n", mac(1)).into_bytes();
    bytes.extend_from_slice(&[b'A'; 2000]);
    impostor.send(&bytes);
    impostor.expect(b"OK\nBYE line-too-long\n");
    holder.expect(b"BYE replaced\n");
    let replaced = events.read_event();
    assert!(replaced.contains("event: disconnected\n") && replaced.contains(r#""reason":"replaced""#), "{replaced}");
    let connected = events.read_event();
    let peer = impostor.stream.local_addr().unwrap().to_string();
    assert!(connected.contains(&format!(r#""peer":"{peer}""#)), "{connected}");
    let closed = events.read_event();
    assert!(closed.contains(r#""reason":"line-too-long""#), "{closed}");
}
