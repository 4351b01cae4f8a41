//! What bounds the HTTP side, and what must not: pipelining far past what
//! one read or the output high-water mark holds (back-pressure by not
//! reading, never by dropping), the collars' and the HTTP clients' shares
//! of the descriptors (`--max-connections`, `--max-http-connections`),
//! idle connections making room at the HTTP cap (closed as `evicted`),
//! and the per-address cap (`--http-max-per-ip`, 429).

mod common;

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr};
use std::thread;

use common::{Gateway, HttpClient, Process, TIMEOUT, assert_like, config, connect_from, json_response, mac, metric};

/// The body of `GET /devices?limit=0&offset=<offset>` with no collar
/// online: an answer that names the request it answers.
fn empty_page(offset: usize) -> String {
    format!(r#"{{"total":0,"offset":{offset},"limit":0,"devices":[]}}"#)
}

/// `/health` of a gateway that is not draining.
const HEALTH: &str = r#"{"status":"ok","uptime_s":<INT>,"devices_online":<INT>,"connections":<INT>}"#;

/// 5,000 requests in one write (236 KiB, far more than one read or
/// one request's worth of input), `GET /health` and `GET /devices` in
/// turn: every one is answered, in order, on a connection that stays open.
/// The client writes from a thread while it reads, as a pipelining client
/// must: the gateway stops reading while answers wait to be read, and the
/// writer waits for it. (Past about 144 KiB of pipelined input, the
/// gateway once answered 32 requests and closed the connection.)
#[test]
fn thousands_of_pipelined_requests_are_all_answered_in_order() {
    const REQUESTS: usize = 5000;
    let gw = Gateway::start(config());
    let mut client = gw.http_client();
    let requests: String = (0..REQUESTS)
        .map(|i| match i % 2 {
            0 => "GET /health HTTP/1.1\r\nHost: tether\r\n\r\n".to_string(),
            _ => format!("GET /devices?limit=0&offset={i} HTTP/1.1\r\nHost: tether\r\n\r\n"),
        })
        .collect();
    assert!(requests.len() > 200 * 1024, "{} bytes", requests.len());
    let mut stream = client.stream.try_clone().unwrap();
    stream.set_write_timeout(Some(TIMEOUT)).unwrap();
    let writer = thread::spawn(move || stream.write_all(requests.as_bytes()));
    for i in 0..REQUESTS {
        let Some(response) = client.next_response() else { panic!("end of file after {i} answers of {REQUESTS}") };
        if i % 2 == 0 {
            assert_eq!(response.status, 200, "answer {i}: {}", response.raw());
            assert_like(response.text(), HEALTH);
        } else {
            assert_eq!(response.raw(), json_response("200 OK", &empty_page(i), &[], false), "answer {i}");
        }
    }
    writer.join().unwrap().expect("the requests were all sent");
    // Still open.
    assert_eq!(client.get("/devices?limit=0&offset=7").text(), empty_page(7));
}

/// Collars at their cap take nothing from the HTTP clients: 70 collars
/// against `--max-connections 60` (ten are told `BYE server-full`), and
/// `/health` still answers 200. (The caps were once one, shared: the app's
/// API answered 503 "server full" as soon as the collars filled it.)
#[test]
fn collars_at_their_cap_leave_the_api_its_own_share() {
    let gw = Gateway::start(tether::Config { max_connections: Some(60), ..config() });
    let mut devices: Vec<_> = (0..60).map(|i| gw.device(&mac(i))).collect();
    for _ in 0..10 {
        let mut refused = gw.connect();
        refused.expect(b"BYE server-full\n");
        refused.expect_eof();
    }
    let mut client = gw.http_client();
    let response = client.get("/health");
    assert_eq!(response.status, 200, "{}", response.raw());
    assert_like(response.text(), r#"{"status":"ok","uptime_s":<INT>,"devices_online":60,"connections":<INT>}"#);
    let metrics = gw.metrics();
    assert_eq!(metric(&metrics, "tether_max_connections"), 60.0);
    assert_eq!(metric(&metrics, r#"tether_closed_total{kind="device",reason="server-full"}"#), 10.0);
    assert_eq!(metric(&metrics, r#"tether_closed_total{kind="http",reason="server-full"}"#), 0.0);
    // And the collars held are untouched.
    for dev in &mut devices {
        dev.send(b"PING\n");
        dev.expect(b"PONG\n");
    }
}

/// At the HTTP cap, connections that hold it without using it, silent ones
/// that never sent a request and keep-alive ones between requests, make
/// room for newcomers: the one idle the longest is closed (`evicted`),
/// oldest first, and the newcomer is served. (They once locked every other
/// client out with 503 until they went away.)
#[test]
fn at_the_http_cap_silent_and_idle_connections_make_room_oldest_first() {
    let gw = Gateway::start(tether::Config { max_http_connections: 4, ..config() });
    // Idle keep-alive, since its answer.
    let mut served = gw.http_client();
    assert_eq!(served.get("/health").status, 200);
    // Silent since they connected.
    let (mut silent_1, mut silent_2) = (gw.http_client(), gw.http_client());
    // Served after the silent ones were accepted (and seen to be silent):
    // the accept queue is first in, first out.
    let mut recent = gw.http_client();
    assert_eq!(recent.get("/health").status, 200);

    // Three newcomers, each served in turn: the oldest idle is closed for
    // each, `served` first, then the silent ones in the order they came.
    let mut newcomers = Vec::new();
    for evicted in [&mut served, &mut silent_1, &mut silent_2] {
        let mut newcomer = gw.http_client();
        let response = newcomer.get("/health");
        assert_eq!(response.status, 200, "{}", response.raw());
        evicted.expect_eof();
        newcomers.push(newcomer);
    }
    // The most recently served of the first four is still open.
    assert_eq!(recent.get("/health").status, 200);
    let metrics = recent.get("/metrics");
    let text = String::from_utf8(metrics.body).unwrap();
    assert_eq!(metric(&text, r#"tether_closed_total{kind="http",reason="evicted"}"#), 3.0);
    assert_eq!(metric(&text, r#"tether_rejected_total{reason="server-full"}"#), 0.0);
    drop((served, silent_1, silent_2, recent, newcomers));
    let stats = gw.stop_drained();
    assert_eq!(stats.accepted, [0, 7]);
}

/// `--http-max-per-ip 2`: a third connection from one address is answered
/// 429 and closed, and counted as `per-ip-limit`; another address is
/// served, and once one of the first two leaves, the first address is
/// served again.
#[test]
fn a_third_connection_from_one_address_is_429_with_http_max_per_ip_2() {
    let tether = Process::start(&["--http-max-per-ip", "2"], None);
    let mut first = HttpClient::connect(tether.http);
    let mut second = HttpClient::connect(tether.http);
    assert_eq!(first.get("/health").status, 200);
    assert_eq!(second.get("/health").status, 200);

    let mut third = HttpClient::connect(tether.http);
    let too_many = r#"{"error":"too many connections from this address"}"#;
    third.expect(json_response("429 Too Many Requests", too_many, &[], true).as_bytes());
    third.expect_eof();

    let other = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
    let mut elsewhere = HttpClient::from_stream(connect_from(other, tether.http, None));
    assert_eq!(elsewhere.get("/health").status, 200);

    // `first` leaves; by the time `second` is answered, its close was read.
    drop(first);
    assert_eq!(second.get("/health").status, 200);
    let mut again = HttpClient::connect(tether.http);
    let metrics = again.get_closing("/metrics");
    assert_eq!(metrics.status, 200, "{}", metrics.raw());
    let text = metrics.text();
    assert_eq!(metric(text, r#"tether_closed_total{kind="http",reason="per-ip-limit"}"#), 1.0);
    assert_eq!(metric(text, r#"tether_http_responses_total{status="429"}"#), 1.0);
    assert_eq!(metric(text, r#"tether_rejected_total{reason="server-full"}"#), 0.0);
}
