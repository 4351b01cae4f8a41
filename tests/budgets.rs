//! The per-turn budgets of the loop, each set to a tiny value: the work
//! still completes exactly (every reply, every event, in order), spread
//! over more turns, and `/metrics` counts the turns in which the budget ran
//! out with work left (`tether_budget_spent_total{budget="…"}`).
//!
//! Where a budget can only run out when work piles up within one turn
//! (accepts, timers, requests, reads), the clients connect and send before
//! the loop starts ([`Gateway::start_with`]): the first turn then faces
//! all of it at once, whatever the speed of the machine.

mod common;

use std::time::Duration;

use common::{
    Client, Gateway, HttpClient, STREAM_START, assert_like, config, json_response, location_frame, locations, mac,
    metric, subscribe_many,
};
use tether::Config;

const MAC: &str = "CE:96:C2:78:27:FC";

/// The turns in which budget `name` ran out with work left.
fn spent(gw: &Gateway, name: &str) -> f64 {
    metric(&gw.metrics(), &format!("tether_budget_spent_total{{budget=\"{name}\"}}"))
}

/// The body of `GET /devices?limit=0&offset=<offset>` with `total` collars
/// online: an answer that names the request it answers.
fn page(total: usize, offset: usize) -> String {
    format!(r#"{{"total":{total},"offset":{offset},"limit":0,"devices":[]}}"#)
}

/// `--budget-reads 1` (one read of 64 KiB per connection per turn, the
/// default): 800 KB of lines sent at once are read over many turns, and
/// every line is handled, in order: each location is published (the last
/// one is the one stored), and the `PING` after every hundredth line is
/// answered.
#[test]
fn the_reads_budget_spreads_a_large_input_over_turns() {
    const LINES: usize = 40_000;
    let gw = Gateway::start(Config { budget_reads: 1, ..config() });
    let mut dev = gw.device(MAC);
    let input: String = (0..LINES / 100).map(|batch| locations(batch * 100, (batch + 1) * 100) + "PING\n").collect();
    assert!(input.len() > 8 * 64 * 1024, "{} bytes", input.len());
    // Locations have no answer: only the PONGs come back, and the gateway
    // reads on as fast as it may.
    dev.send(input.as_bytes());
    dev.expect("PONG\n".repeat(LINES / 100).as_bytes());

    let metrics = gw.metrics();
    assert_eq!(metric(&metrics, r#"tether_lines_received_total{type="location"}"#), LINES as f64);
    assert_eq!(metric(&metrics, "tether_events_published_total"), (1 + LINES) as f64);
    assert!(metric(&metrics, r#"tether_budget_spent_total{budget="reads"}"#) >= 1.0);
    let last = LINES - 1;
    let device = gw.http_client().get(&format!("/devices/{MAC}"));
    let fix = format!(r#""location":{{"lat":{}.5,"lon":{}.25,"at":"<TIME>"}}}}"#, last % 90, last % 180);
    assert_like(
        device.text(),
        &format!(r#"{{"mac":"{MAC}","peer":"<PEER>","connected_at":"<TIME>","last_seen":"<TIME>",{fix}"#),
    );
}

/// `--budget-requests 1`: 50 pipelined requests that the session answers
/// itself (a 404, a 405) arrive in one read and are answered one per turn,
/// all of them, in order.
#[test]
fn the_requests_budget_answers_pipelined_requests_one_per_turn() {
    const REQUESTS: usize = 50;
    let (gw, mut client) = Gateway::start_with(Config { budget_requests: 1, ..config() }, |gw| {
        let mut client = gw.http_client();
        let requests: String = (0..REQUESTS)
            .map(|i| if i % 2 == 0 { "GET /nope HTTP/1.1\r\n\r\n" } else { "DELETE /health HTTP/1.1\r\n\r\n" })
            .collect();
        client.send(requests.as_bytes());
        client
    });
    let not_found = json_response("404 Not Found", r#"{"error":"no such endpoint"}"#, &[], false);
    let not_allowed = json_response(
        "405 Method Not Allowed",
        r#"{"error":"method not allowed"}"#,
        &["Allow: GET, HEAD, OPTIONS"],
        false,
    );
    let expected: String =
        (0..REQUESTS).map(|i| if i % 2 == 0 { not_found.clone() } else { not_allowed.clone() }).collect();
    client.expect(expected.as_bytes());
    assert!(spent(&gw, "requests") >= (REQUESTS - 1) as f64);
}

/// The same for requests that the hub answers (every endpoint of the API
/// but the refusals): 50 pipelined `GET /devices` that arrive in one read
/// are answered in order, and no more than one per turn.
///
/// This fails: the hub's reply to one request makes the session go on to
/// the next one (`HttpSession::on_reply` calls `process`, whose count of
/// requests answered starts again from zero), so all 50 are answered in the
/// first turn, and the budget is never spent.
#[test]
fn the_requests_budget_holds_for_requests_the_hub_answers() {
    const REQUESTS: usize = 50;
    let (gw, mut client) = Gateway::start_with(Config { budget_requests: 1, ..config() }, |gw| {
        let mut client = gw.http_client();
        let requests: String =
            (0..REQUESTS).map(|i| format!("GET /devices?limit=0&offset={i} HTTP/1.1\r\nHost: t\r\n\r\n")).collect();
        client.send(requests.as_bytes());
        client
    });
    let expected: String = (0..REQUESTS).map(|i| json_response("200 OK", &page(0, i), &[], false)).collect();
    client.expect(expected.as_bytes());
    let spent = spent(&gw, "requests");
    assert!(spent >= (REQUESTS - 1) as f64, "{REQUESTS} requests in one read, budget 1: spent {spent} times");
}

/// `--budget-accepts 1`: 20 collars waiting in the accept queue are taken
/// one per turn, and each is answered.
#[test]
fn the_accepts_budget_takes_waiting_connections_one_per_turn() {
    const COLLARS: u32 = 20;
    let (gw, mut collars) = Gateway::start_with(Config { budget_accepts: 1, ..config() }, |gw| {
        (0..COLLARS)
            .map(|i| {
                let mut dev = gw.connect();
                dev.send(format!("IDENTIFY:{}\nPING\n", mac(i)).as_bytes());
                dev
            })
            .collect::<Vec<Client>>()
    });
    for dev in &mut collars {
        dev.expect(b"OK\nPONG\n");
    }
    assert!(spent(&gw, "accepts") >= f64::from(COLLARS - 1));
    let metrics = gw.metrics();
    assert_eq!(metric(&metrics, "tether_devices_online"), f64::from(COLLARS));
}

/// `--budget-timers 1`: 20 handshake deadlines due at the same moment are
/// handled one per turn, and every one of those connections is told.
#[test]
fn the_timers_budget_handles_deadlines_due_together_one_per_turn() {
    const CLIENTS: usize = 20;
    let config = Config {
        budget_timers: 1,
        handshake_timeout: Duration::from_millis(100),
        heartbeat_interval: Duration::ZERO,
        idle_timeout: Duration::ZERO,
        ..config()
    };
    // Accepted in the first turn, all of them: the same deadline.
    let (gw, mut clients) = Gateway::start_with(config, |gw| (0..CLIENTS).map(|_| gw.connect()).collect::<Vec<_>>());
    for client in &mut clients {
        client.expect(b"BYE handshake-timeout\n");
        client.expect_eof();
    }
    assert!(spent(&gw, "timers") >= (CLIENTS - 1) as f64);
}

/// `--budget-write 100`: answers and event frames longer than 100 bytes go
/// out 100 bytes per turn, whole and in order.
#[test]
fn the_write_budget_cuts_long_output_into_turns_without_losing_a_byte() {
    let gw = Gateway::start(Config { budget_write: 100, ..config() });
    let mut stream = gw.http_client();
    stream.send(b"GET /events HTTP/1.1\r\n\r\n");
    stream.expect(STREAM_START.as_bytes());
    let mut dev = gw.device(MAC);
    assert_like(
        &stream.read_event(),
        &format!("id: 1\nevent: connected\ndata: {{\"mac\":\"{MAC}\",\"peer\":\"<PEER>\",\"at\":\"<TIME>\"}}\n\n"),
    );
    dev.send(locations(0, 30).as_bytes());
    for i in 0..30 {
        assert_like(&stream.read_event(), &location_frame(2 + i as u64, MAC, i));
    }
    // Pipelined answers of about 150 bytes each.
    let mut client = gw.http_client();
    let requests: String = (0..20).map(|i| format!("GET /devices?limit=0&offset={i} HTTP/1.1\r\n\r\n")).collect();
    client.send(requests.as_bytes());
    let expected: String = (0..20).map(|i| json_response("200 OK", &page(1, i), &[], false)).collect();
    client.expect(expected.as_bytes());
    assert!(spent(&gw, "write-bytes") >= 1.0);
}

/// `--budget-turn-write 512`: four streams owed 30 events each share 512
/// bytes of output per turn, round robin; each gets every event, in order.
#[test]
fn the_turn_write_budget_shares_a_turn_between_streams() {
    const STREAMS: usize = 4;
    const EVENTS: usize = 30;
    let gw = Gateway::start(Config { budget_turn_write: 512, ..config() });
    let mut dev = gw.device(MAC);
    let mut streams: Vec<HttpClient> = subscribe_many(gw.http, STREAMS, None);
    dev.send(locations(0, EVENTS).as_bytes());
    for stream in &mut streams {
        for i in 0..EVENTS {
            assert_like(&stream.read_event(), &location_frame(2 + i as u64, MAC, i));
        }
    }
    assert!(spent(&gw, "turn-write-bytes") >= 1.0);
}

/// `--budget-turn-time 1ms`: 20 clients, each with 16 `GET /metrics`
/// pipelined (each answer renders the whole exposition), arrive in one
/// turn. Served one after the other, they would make a turn of many
/// milliseconds; the run phase stops once it has taken its time and the
/// rest are served first in the next turns. Every client gets all its
/// answers.
#[test]
fn the_turn_time_budget_spreads_a_crowd_of_costly_requests_over_turns() {
    const CLIENTS: usize = 20;
    const REQUESTS: usize = 16;
    let config = Config { budget_turn_time: Duration::from_millis(1), http_max_per_ip: 0, ..config() };
    let (gw, mut clients) = Gateway::start_with(config, |gw| {
        (0..CLIENTS)
            .map(|_| {
                let mut client = gw.http_client();
                client.send("GET /metrics HTTP/1.1\r\n\r\n".repeat(REQUESTS).as_bytes());
                client
            })
            .collect::<Vec<HttpClient>>()
    });
    for client in &mut clients {
        for _ in 0..REQUESTS {
            assert_eq!(client.read_response().status, 200);
        }
    }
    assert!(spent(&gw, "turn-time") >= 1.0, "{CLIENTS} x {REQUESTS} costly requests in one turn's time");
}
