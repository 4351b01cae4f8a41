//! The HTTP API's endpoints about the gateway and its collars: `/health`
//! (and its 503 while draining), `/metrics` (Prometheus text whose
//! counters move with what happens), `/devices` (sorted, paged, with a
//! cursor), `/devices/{mac}` in every spelling of a MAC, the location query
//! that asks the collar and waits (200, 504, 404, 502, and one query on
//! the wire for concurrent requests), and commands written to a collar
//! (202, the 400s, 404, and 503 when its output buffer is full).

mod common;

use std::net::SocketAddr;
use std::thread;
use std::time::{Duration, Instant};

use common::{Client, Gateway, assert_like, config, json_response, mac, metric};
use tether::Exit;
use tether::close::CloseReason;
use tether::reactor::Kind;

const MAC: &str = "CE:96:C2:78:27:FC";

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// The JSON of an online device connected from `peer`, with the fix
/// `location` (`lat,lon`) if it reported one.
fn device_json(mac: &str, peer: SocketAddr, location: Option<&str>) -> String {
    let location = match location {
        Some(fix) => {
            let (lat, lon) = fix.split_once(',').unwrap();
            let (lat, lon) = (common::num(lat), common::num(lon));
            format!(r#"{{"lat":{lat},"lon":{lon},"at":"<TIME>"}}"#)
        }
        None => "null".into(),
    };
    format!(r#"{{"mac":"{mac}","peer":"{peer}","connected_at":"<TIME>","last_seen":"<TIME>","location":{location}}}"#)
}

fn peer(dev: &Client) -> SocketAddr {
    dev.stream.local_addr().unwrap()
}

#[test]
fn health_reports_uptime_devices_online_and_connections() {
    let gw = Gateway::start(config());
    let api = gw.api();
    let reply = api.get("/health");
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("content-type"), Some("application/json"));
    assert_eq!(reply.header("cache-control"), Some("no-store"));
    assert_like(&reply.body, r#"{"status":"ok","uptime_s":<INT>,"devices_online":0,"connections":1}"#);
    let _a = gw.device(&mac(1));
    let _b = gw.device(&mac(2));
    let _unidentified = {
        let mut client = gw.connect();
        client.send(b"PING\n");
        client.expect(b"PONG\n");
        client
    };
    let reply = api.get("/health");
    assert_like(&reply.body, r#"{"status":"ok","uptime_s":<INT>,"devices_online":2,"connections":4}"#);
}

#[test]
fn health_answers_503_draining_while_the_gateway_drains() {
    let mut config = config();
    // The device holds its connection after its BYE, so the drain lasts.
    config.linger_timeout = common::TIMEOUT;
    config.drain_timeout = common::TIMEOUT;
    let gw = Gateway::start(config);
    let mut dev = gw.device(&mac(1));
    let mut idle = gw.http_client();
    assert_eq!(idle.get("/health").status, 200);
    // A whole request and the start of the next in one write: once the
    // first is answered, the second is in the gateway's hands.
    let mut partial = gw.http_client();
    partial.send(b"GET /health HTTP/1.1\r\n\r\nGET /health HTTP/1.1\r\n");
    assert_eq!(partial.read_response().status, 200);
    gw.begin_stop();
    dev.expect(b"BYE shutdown\n");
    dev.expect_eof();
    // An idle keep-alive connection is closed by the drain.
    idle.expect_eof();
    // A request in progress is answered when it completes, and the
    // connection closed after it.
    partial.send(b"\r\n");
    assert_eq!(
        partial.read_response().raw(),
        json_response("503 Service Unavailable", r#"{"status":"draining"}"#, &[], true)
    );
    partial.expect_eof();
    // The HTTP listener stays open: a new connection hears the gateway is
    // draining, and is not kept alive.
    for _ in 0..2 {
        let mut client = gw.http_client();
        let response = client.get("/health");
        assert_eq!(response.raw(), json_response("503 Service Unavailable", r#"{"status":"draining"}"#, &[], true));
        client.expect_eof();
    }
    let reply = gw.api().get("/health");
    assert_eq!((reply.status, reply.body.as_str()), (503, r#"{"status":"draining"}"#));
    // Other endpoints still answer, then close.
    let mut client = gw.http_client();
    assert_eq!(
        client.get("/devices").raw(),
        json_response("200 OK", r#"{"total":0,"offset":0,"limit":100,"devices":[]}"#, &[], true)
    );
    client.expect_eof();
    drop((dev, idle, partial, client));
    let (exit, stats) = gw.wait_stopped();
    assert_eq!(exit, Exit::Drained);
    common::assert_all_closed(&stats);
}

#[test]
fn metrics_are_prometheus_text_that_moves_with_what_happens() {
    let mut config = config();
    // A replaced device lingers until it closes: its count is predictable.
    config.linger_timeout = common::TIMEOUT;
    let gw = Gateway::start(config);
    // One keep-alive connection for every request, so the HTTP counts are
    // exact.
    let mut client = gw.http_client();
    let first = client.get("/metrics");
    assert_eq!(first.status, 200);
    assert_eq!(first.header("Content-Type"), Some("text/plain; version=0.0.4; charset=utf-8"));
    let text = first.text();
    for (series, value) in [
        (r#"tether_connections{kind="device"}"#, 0.0),
        (r#"tether_connections{kind="http"}"#, 1.0),
        ("tether_devices_online", 0.0),
        (r#"tether_accepted_total{kind="device"}"#, 0.0),
        (r#"tether_accepted_total{kind="http"}"#, 1.0),
        ("tether_events_published_total", 0.0),
        ("tether_max_http_connections", 1024.0),
    ] {
        assert_eq!(metric(text, series), value, "{series}");
    }
    assert!(!text.contains("tether_http_responses_total{"), "no response was sent yet:\n{text}");

    let mut a = gw.device(&mac(1));
    let b = gw.device(&mac(2));
    a.send(b"PING\n");
    a.expect(b"PONG\n");
    a.send(b"LOCATION:1.5,2\nHELLO\n\nPING\n");
    a.expect(b"ERR unknown-command\nERR unknown-command\nPONG\n");
    // Takeover: `a` is replaced by `c`, and lingers until it closes.
    let mut c = gw.device(&mac(1));
    a.expect(b"BYE replaced\n");
    a.expect_eof();
    drop(b);
    gw.expect_log("closing: peer-closed");
    c.send(b"PING\n");
    c.expect(b"PONG\n");
    assert_eq!(client.get("/nope").status, 404);

    let page = client.get("/metrics");
    let text = page.text();
    for (series, value) in [
        (r#"tether_connections{kind="device"}"#, 2.0),
        (r#"tether_connections{kind="http"}"#, 1.0),
        ("tether_devices_online", 1.0),
        (r#"tether_accepted_total{kind="device"}"#, 3.0),
        (r#"tether_accepted_total{kind="http"}"#, 1.0),
        (r#"tether_closed_total{kind="device",reason="replaced"}"#, 1.0),
        (r#"tether_closed_total{kind="device",reason="peer-closed"}"#, 1.0),
        (r#"tether_closed_total{kind="device",reason="idle"}"#, 0.0),
        (r#"tether_closed_total{kind="http",reason="peer-closed"}"#, 0.0),
        (r#"tether_rejected_total{reason="server-full"}"#, 0.0),
        (r#"tether_rejected_total{reason="emfile"}"#, 0.0),
        ("tether_accept_errors_total", 0.0),
        (r#"tether_lines_received_total{type="identify"}"#, 3.0),
        (r#"tether_lines_received_total{type="ping"}"#, 3.0),
        (r#"tether_lines_received_total{type="pong"}"#, 0.0),
        (r#"tether_lines_received_total{type="location"}"#, 1.0),
        (r#"tether_lines_received_total{type="invalid"}"#, 2.0),
        // OK x3, PONG x3, ERR x2, BYE replaced.
        ("tether_lines_sent_total", 9.0),
        ("tether_takeovers_total", 1.0),
        ("tether_heartbeat_pings_total", 0.0),
        ("tether_heartbeat_timeouts_total", 0.0),
        // Connected a, b; location a; disconnected a; connected c;
        // disconnected b.
        ("tether_events_published_total", 6.0),
        ("tether_events_held", 6.0),
        ("tether_sse_subscribers", 0.0),
        ("tether_long_polls", 0.0),
        (r#"tether_http_responses_total{status="200"}"#, 1.0),
        (r#"tether_http_responses_total{status="404"}"#, 1.0),
    ] {
        assert_eq!(metric(text, series), value, "{series}");
    }
    assert!(metric(text, "tether_bytes_received_total") > 0.0);
    assert!(metric(text, "tether_bytes_sent_total") > 0.0);
    assert!(metric(text, "process_resident_memory_bytes") > 1e6);
    assert!(metric(text, "tether_uptime_seconds") >= 0.0);
    assert!(metric(text, "tether_fd_limit") >= metric(text, "tether_max_connections"));

    // The loop histogram: cumulative buckets, ending in +Inf == count.
    let buckets: Vec<f64> = text
        .lines()
        .filter(|l| l.starts_with("tether_loop_iteration_seconds_bucket{"))
        .map(|l| l.rsplit(' ').next().unwrap().parse().unwrap())
        .collect();
    assert_eq!(buckets.len(), 11, "{text}");
    assert!(buckets.windows(2).all(|w| w[0] <= w[1]), "{buckets:?}");
    let count = metric(text, "tether_loop_iteration_seconds_count");
    assert_eq!(metric(text, r#"tether_loop_iteration_seconds_bucket{le="+Inf"}"#), count);
    assert!(count >= 1.0 && count <= metric(text, "tether_loop_iterations_total"), "{count}");
    assert!(metric(text, "tether_loop_iteration_seconds_sum") <= metric(text, "tether_loop_busy_seconds_total"));
    assert!(text.contains("# TYPE tether_loop_iteration_seconds histogram\n"));
    assert!(text.contains("# TYPE tether_accepted_total counter\n"));
    assert!(text.contains("# TYPE tether_devices_online gauge\n"));
    // Every sample line is `name[{labels}] value`.
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let (_, value) = line.rsplit_once(' ').unwrap();
        assert!(value.parse::<f64>().is_ok(), "{line}");
    }
    drop((a, c, client));
    gw.stop_drained();
}

#[test]
fn metrics_count_heartbeat_pings() {
    let mut config = config();
    config.heartbeat_interval = ms(50);
    // Never presumed dead: exactly one PING per silence.
    config.heartbeat_timeout = Duration::ZERO;
    let gw = Gateway::start(config);
    let mut dev = gw.device(&mac(1));
    dev.expect(b"PING\n");
    let text = gw.metrics();
    assert_eq!(metric(&text, "tether_heartbeat_pings_total"), 1.0);
    assert_eq!(metric(&text, "tether_lines_sent_total"), 2.0);
    dev.send(b"PONG\n");
    dev.expect(b"PING\n");
    let text = gw.metrics();
    assert_eq!(metric(&text, "tether_heartbeat_pings_total"), 2.0);
    assert_eq!(metric(&text, r#"tether_lines_received_total{type="pong"}"#), 1.0);
}

#[test]
fn devices_are_listed_sorted_by_mac() {
    let gw = Gateway::start(config());
    let mut devices: Vec<(u32, Client)> = [5, 1, 4, 2, 3].into_iter().map(|n| (n, gw.device(&mac(n)))).collect();
    devices.sort_by_key(|(n, _)| *n);
    let json: Vec<String> = devices.iter().map(|(n, dev)| device_json(&mac(*n), peer(dev), None)).collect();
    let page = |items: &[String]| items.join(",");
    let api = gw.api();
    let reply = api.get("/devices");
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("content-type"), Some("application/json"));
    assert_like(&reply.body, &format!(r#"{{"total":5,"offset":0,"limit":100,"devices":[{}]}}"#, page(&json)));

    // A fix shows in the listing once reported.
    let dev = &mut devices[2].1;
    dev.send(b"LOCATION:-33.8688,151.2093\nPING\n");
    dev.expect(b"PONG\n");
    let with_fix = device_json(&mac(3), peer(dev), Some("-33.8688,151.2093"));
    let reply = api.get("/devices?offset=2&limit=1");
    assert_like(&reply.body, &format!(r#"{{"total":5,"offset":2,"limit":1,"devices":[{with_fix}]}}"#));

    // A device that goes away leaves the list.
    let (_, gone) = devices.remove(0);
    drop(gone);
    gw.expect_log("closing: peer-closed");
    let reply = api.get("/devices?limit=1");
    assert_like(&reply.body, &format!(r#"{{"total":4,"offset":0,"limit":1,"devices":[{}]}}"#, json[1]));
}

#[test]
fn devices_are_paged_by_limit_and_offset_or_by_an_after_cursor() {
    let gw = Gateway::start(config());
    let devices: Vec<Client> = (1..=5).map(|n| gw.device(&mac(n))).collect();
    let json: Vec<String> = (1..=5).map(|n| device_json(&mac(n), peer(&devices[n as usize - 1]), None)).collect();
    let api = gw.api();
    for (query, offset, limit, items) in [
        ("limit=2", 0, 2, &json[0..2]),
        ("limit=2&offset=2", 2, 2, &json[2..4]),
        ("offset=4&limit=2", 4, 2, &json[4..]),
        ("offset=5", 5, 100, &json[5..]),
        ("offset=99", 99, 100, &json[5..]),
        ("limit=0", 0, 0, &json[0..0]),
        // Larger than the largest page: capped at 1000.
        ("limit=5000", 0, 1000, &json[..]),
        // The cursor: devices after that MAC, in either spelling, encoded
        // or not.
        ("after=02:00:00:00:00:02&limit=2", 0, 2, &json[2..4]),
        ("after=02-00-00-00-00-02", 0, 100, &json[2..]),
        ("after=02%3A00%3A00%3A00%3A00%3A04", 0, 100, &json[4..]),
        ("after=02:00:00:00:00:03&offset=1", 1, 100, &json[4..]),
        ("after=02:00:00:00:00:00", 0, 100, &json[..]),
        ("after=ff:ff:ff:ff:ff:ff", 0, 100, &json[0..0]),
        // Query values are percent-decoded.
        ("limit=%32", 0, 2, &json[0..2]),
        ("other=x&limit=1", 0, 1, &json[0..1]),
    ] {
        let reply = api.get(&format!("/devices?{query}"));
        assert_eq!(reply.status, 200, "{query}: {}", reply.body);
        let expected = format!(r#"{{"total":5,"offset":{offset},"limit":{limit},"devices":[{}]}}"#, items.join(","));
        assert_like(&reply.body, &expected);
    }
}

#[test]
fn devices_paging_rejects_bad_numbers_with_400() {
    let gw = Gateway::start(config());
    let mut client = gw.http_client();
    for (query, error) in [
        ("limit=abc", "limit must be a non-negative integer"),
        ("limit=-1", "limit must be a non-negative integer"),
        ("limit=", "limit must be a non-negative integer"),
        ("limit=1.5", "limit must be a non-negative integer"),
        ("offset=x", "offset must be a non-negative integer"),
        ("offset=99999999999999999999999", "offset must be a non-negative integer"),
        ("after=nope", "after is not a MAC address"),
        ("after=02:00:00:00:00", "after is not a MAC address"),
        ("limit=%zz", "badly encoded query"),
    ] {
        let response = client.get(&format!("/devices?{query}"));
        let body = format!(r#"{{"error":"{error}"}}"#);
        assert_eq!(response.raw(), json_response("400 Bad Request", &body, &[], false), "{query}");
    }
}

#[test]
fn a_device_is_found_by_any_spelling_of_its_mac() {
    let gw = Gateway::start(config());
    let mut dev = gw.device("ce-96-c2-78-27-fc");
    let api = gw.api();
    let expected = device_json(MAC, peer(&dev), None);
    let mut client = gw.http_client();
    for path in [
        "/devices/CE:96:C2:78:27:FC",
        "/devices/ce:96:c2:78:27:fc",
        "/devices/CE-96-C2-78-27-FC",
        "/devices/ce-96-c2-78-27-fc",
        "/devices/CE%3A96%3AC2%3A78%3A27%3AFC",
        "/devices/ce%3a96%3ac2%3a78%3a27%3afc",
        "/devices/%43%45%2D96%2DC2%2D78%2D27%2DFC",
        "/devices/CE:96:C2:78:27:FC/",
    ] {
        let response = client.get(path);
        assert_eq!(response.status, 200, "{path}: {}", response.raw());
        assert_like(response.text(), &expected);
    }
    dev.send(b"LOCATION:48.8566,2.3522\nPING\n");
    dev.expect(b"PONG\n");
    let reply = api.get("/devices/CE%3A96%3AC2%3A78%3A27%3AFC");
    assert_eq!(reply.status, 200);
    assert_like(&reply.body, &device_json(MAC, peer(&dev), Some("48.8566,2.3522")));
}

#[test]
fn an_offline_device_is_404_and_an_invalid_mac_in_a_path_is_400() {
    let gw = Gateway::start(config());
    let _dev = gw.device(MAC);
    let mut client = gw.http_client();
    let offline = json_response("404 Not Found", r#"{"error":"device not online"}"#, &[], false);
    for path in ["/devices/CE:96:C2:78:27:FD", "/devices/00-00-00-00-00-00", "/devices/CE:96:C2:78:27:FD/location"] {
        assert_eq!(client.get(path).raw(), offline, "{path}");
    }
    let invalid = json_response("400 Bad Request", r#"{"error":"invalid MAC in path"}"#, &[], false);
    for path in [
        "/devices/nope",
        "/devices/CE:96:C2:78:27",
        "/devices/CE:96:C2:78:27:FC:00",
        "/devices/CE:96-C2:78:27:FC",
        "/devices/CE.96.C2.78.27.FC",
        "/devices/CE96C27827FC",
        "/devices/CE%3A96%3AC2%3A78%3A27%3AFG",
        "/devices/CE:96:C2:78:27:FC%20",
        "/devices/nope/location",
        "/devices/nope/commands",
    ] {
        assert_eq!(client.get(path).raw(), invalid, "{path}");
    }
    let encoding = json_response("400 Bad Request", r#"{"error":"badly encoded path"}"#, &[], false);
    for path in ["/devices/%zz", "/devices/CE%3", "/devices/%ff"] {
        assert_eq!(client.get(path).raw(), encoding, "{path}");
    }
}

#[test]
fn a_location_query_asks_the_collar_and_returns_its_answer() {
    let gw = Gateway::start(config());
    let mut dev = gw.device(MAC);
    let api = gw.api();
    let query = thread::spawn(move || {
        let reply = api.get("/devices/ce-96-c2-78-27-fc/location");
        (api, reply)
    });
    dev.expect(b"location\n");
    dev.send(b"LOCATION:48.8566,2.3522\n");
    let (api, reply) = query.join().unwrap();
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.header("content-type"), Some("application/json"));
    assert_like(&reply.body, r#"{"mac":"CE:96:C2:78:27:FC","location":{"lat":48.8566,"lon":2.3522,"at":"<TIME>"}}"#);
    // The answer is also the device's last known location.
    let reply = api.get("/devices/CE:96:C2:78:27:FC");
    assert_like(&reply.body, &device_json(MAC, peer(&dev), Some("48.8566,2.3522")));
}

#[test]
fn a_location_query_the_collar_does_not_answer_in_time_is_504_and_the_next_asks_again() {
    let gw = Gateway::start(config());
    let mut dev = gw.device(MAC);
    let mut client = gw.http_client();
    let started = Instant::now();
    client.send(b"GET /devices/CE:96:C2:78:27:FC/location?timeout=150ms HTTP/1.1\r\n\r\n");
    dev.expect(b"location\n");
    let late = json_response("504 Gateway Timeout", r#"{"error":"the device did not answer in time"}"#, &[], false);
    client.expect(late.as_bytes());
    assert!(started.elapsed() >= ms(140), "504 after {:?}", started.elapsed());
    // A late answer goes nowhere; the next query asks the collar again.
    dev.send(b"LOCATION:1,2\nPING\n");
    dev.expect(b"PONG\n");
    client.send(b"GET /devices/CE:96:C2:78:27:FC/location?timeout=5s HTTP/1.1\r\n\r\n");
    dev.expect(b"location\n");
    dev.send(b"LOCATION:3,4\n");
    let response = client.read_response();
    assert_eq!(response.status, 200);
    assert_like(response.text(), r#"{"mac":"CE:96:C2:78:27:FC","location":{"lat":3.0,"lon":4.0,"at":"<TIME>"}}"#);
}

#[test]
fn a_location_query_for_an_offline_device_is_404() {
    let gw = Gateway::start(config());
    let reply = gw.api().get("/devices/CE:96:C2:78:27:FC/location");
    assert_eq!((reply.status, reply.body.as_str()), (404, r#"{"error":"device not online"}"#));
}

#[test]
fn a_location_query_gets_502_when_the_collar_goes_away() {
    let gw = Gateway::start(config());
    let gone = json_response("502 Bad Gateway", r#"{"error":"the device disconnected before answering"}"#, &[], false);
    // The collar disconnects.
    let mut dev = gw.device(MAC);
    let mut client = gw.http_client();
    client.send(b"GET /devices/CE:96:C2:78:27:FC/location HTTP/1.1\r\n\r\n");
    dev.expect(b"location\n");
    drop(dev);
    client.expect(gone.as_bytes());
    // The collar is taken over by a new connection.
    let mut dev = gw.device(MAC);
    client.send(b"GET /devices/CE:96:C2:78:27:FC/location HTTP/1.1\r\n\r\n");
    dev.expect(b"location\n");
    let _new = gw.device(MAC);
    dev.expect(b"BYE replaced\n");
    client.expect(gone.as_bytes());
}

#[test]
fn concurrent_location_queries_share_one_query_on_the_wire() {
    let gw = Gateway::start(config());
    let mut dev = gw.device(MAC);
    let mut clients: Vec<_> = (0..3).map(|_| gw.http_client()).collect();
    for client in &mut clients {
        client.send(b"GET /devices/CE:96:C2:78:27:FC/location HTTP/1.1\r\n\r\n");
    }
    // Every query is waiting before the collar answers.
    for _ in &clients {
        gw.expect_log("HTTP Get /devices/CE:96:C2:78:27:FC/location");
    }
    assert_eq!(metric(&gw.metrics(), "tether_long_polls"), 3.0);
    dev.expect(b"location\n");
    dev.send(b"LOCATION:10.5,-20.25\n");
    let mut bodies = Vec::new();
    for client in &mut clients {
        let response = client.read_response();
        assert_eq!(response.status, 200);
        bodies.push(response.text().to_string());
    }
    assert_like(&bodies[0], r#"{"mac":"CE:96:C2:78:27:FC","location":{"lat":10.5,"lon":-20.25,"at":"<TIME>"}}"#);
    assert!(bodies.iter().all(|b| *b == bodies[0]), "{bodies:?}");
    // One `location` went out: the OK and it are the only lines sent.
    let text = gw.metrics();
    assert_eq!(metric(&text, "tether_lines_sent_total"), 2.0);
    assert_eq!(metric(&text, "tether_long_polls"), 0.0);
    // The next query is a new one.
    clients[0].send(b"GET /devices/CE:96:C2:78:27:FC/location HTTP/1.1\r\n\r\n");
    dev.expect(b"location\n");
    dev.send(b"LOCATION:1,1\n");
    assert_eq!(clients[0].read_response().status, 200);
}

#[test]
fn a_location_query_whose_client_goes_away_leaves_no_query_behind() {
    let gw = Gateway::start(config());
    let mut dev = gw.device(MAC);
    let mut first = gw.http_client();
    first.send(b"GET /devices/CE:96:C2:78:27:FC/location HTTP/1.1\r\n\r\n");
    dev.expect(b"location\n");
    drop(first);
    gw.expect_log("closing: peer-closed");
    assert_eq!(metric(&gw.metrics(), "tether_long_polls"), 0.0);
    // With nobody waiting on the first query, the next asks again.
    let mut second = gw.http_client();
    second.send(b"GET /devices/CE:96:C2:78:27:FC/location HTTP/1.1\r\n\r\n");
    dev.expect(b"location\n");
    dev.send(b"LOCATION:5,6\n");
    assert_eq!(second.read_response().status, 200);
}

#[test]
fn a_bad_timeout_is_400() {
    let gw = Gateway::start(config());
    let _dev = gw.device(MAC);
    let mut client = gw.http_client();
    let response = client.get("/devices/CE:96:C2:78:27:FC/location?timeout=soon");
    let body = r#"{"error":"\"soon\" is not a duration like 250ms, 10s, 5m or 1h"}"#;
    assert_eq!(response.raw(), json_response("400 Bad Request", body, &[], false));
    let response = client.get("/devices/CE:96:C2:78:27:FC/location?timeout=%zz");
    assert_eq!(response.raw(), json_response("400 Bad Request", r#"{"error":"badly encoded query"}"#, &[], false));
}

#[test]
fn a_command_is_written_to_the_collar_as_one_line() {
    let gw = Gateway::start(config());
    let mut dev = gw.device(MAC);
    let api = gw.api();
    let reply = api.post("/devices/ce-96-c2-78-27-fc/commands", "beep 3");
    assert_eq!(reply.status, 202);
    assert_eq!(reply.header("content-type"), Some("application/json"));
    assert_eq!(reply.body, r#"{"mac":"CE:96:C2:78:27:FC","accepted":true,"bytes":7}"#);
    dev.expect(b"beep 3\n");
    // The longest line --max-line (1024 with its newline) allows.
    let longest = "x".repeat(1023);
    let reply = api.post("/devices/CE%3A96%3AC2%3A78%3A27%3AFC/commands", &longest);
    assert_eq!(
        (reply.status, reply.body.as_str()),
        (202, r#"{"mac":"CE:96:C2:78:27:FC","accepted":true,"bytes":1024}"#)
    );
    dev.expect(format!("{longest}\n").as_bytes());
    // Commands go out in order, between the collar's own exchanges.
    for i in 0..5 {
        assert_eq!(api.post("/devices/CE:96:C2:78:27:FC/commands", &format!("led {i}")).status, 202);
    }
    dev.send(b"PING\n");
    dev.expect(b"led 0\nled 1\nled 2\nled 3\nled 4\nPONG\n");
    let text = gw.metrics();
    // OK, 7 commands, PONG.
    assert_eq!(metric(&text, "tether_lines_sent_total"), 9.0);
    assert_eq!(metric(&text, r#"tether_http_responses_total{status="202"}"#), 7.0);
}

#[test]
fn a_command_that_is_not_one_printable_line_is_400() {
    let gw = Gateway::start(config());
    let mut dev = gw.device(MAC);
    let mut client = gw.http_client();
    let not_a_line = "a command is one line of printable ASCII (no control characters)";
    let too_long = "x".repeat(1024);
    for (body, error) in [
        (&b""[..], "empty command"),
        (b"beep\n", not_a_line),
        (b"beep\r\n", not_a_line),
        (b"a\nb", not_a_line),
        (b"\tbeep", not_a_line),
        (b"be\0ep", not_a_line),
        (b"be\x1bep", not_a_line),
        (b"be\x7fep", not_a_line),
        ("café".as_bytes(), not_a_line),
        (too_long.as_bytes(), "command longer than --max-line"),
    ] {
        let head =
            format!("POST /devices/CE:96:C2:78:27:FC/commands HTTP/1.1\r\nContent-Length: {}\r\n\r\n", body.len());
        client.send(&[head.as_bytes(), body].concat());
        let expected = json_response("400 Bad Request", &format!(r#"{{"error":"{error}"}}"#), &[], false);
        assert_eq!(client.read_response().raw(), expected, "{:?}", String::from_utf8_lossy(body));
    }
    // No Content-Length at all: an empty body.
    client.send(b"POST /devices/CE:96:C2:78:27:FC/commands HTTP/1.1\r\n\r\n");
    assert_eq!(
        client.read_response().raw(),
        json_response("400 Bad Request", r#"{"error":"empty command"}"#, &[], false)
    );
    // Nothing reached the collar.
    dev.send(b"PING\n");
    dev.expect(b"PONG\n");
}

#[test]
fn a_command_for_an_offline_device_is_404() {
    let gw = Gateway::start(config());
    let _other = gw.device(&mac(1));
    let reply = gw.api().post("/devices/CE:96:C2:78:27:FC/commands", "beep");
    assert_eq!((reply.status, reply.body.as_str()), (404, r#"{"error":"device not online"}"#));
}

/// A collar that does not read: commands fill the kernel's buffers, then
/// its output buffer; one that would pass `--max-output` is refused with
/// 503 rather than dropping the collar. The accepted ones all arrive whole
/// once it reads.
#[test]
fn a_command_is_refused_with_503_when_the_collars_output_buffer_is_full() {
    let mut config = config();
    config.max_output = 100_000;
    config.max_line = 64 * 1024;
    let gw = Gateway::start(config);
    let mut dev = Client::connect_with_recv_buffer(gw.addr, 4096);
    dev.identify(MAC);
    let command = "x".repeat(60_000);
    let request = format!(
        "POST /devices/CE:96:C2:78:27:FC/commands HTTP/1.1\r\nContent-Length: {}\r\n\r\n{command}",
        command.len()
    );
    let mut client = gw.http_client();
    let mut accepted = 0;
    let refused = loop {
        client.send(request.as_bytes());
        let response = client.read_response();
        match response.status {
            202 => accepted += 1,
            503 => break response,
            _ => panic!("{}", response.raw()),
        }
        assert!(accepted < 2000, "{accepted} commands of 60 kB accepted for a collar that does not read");
    };
    assert_eq!(
        refused.raw(),
        json_response("503 Service Unavailable", r#"{"error":"the device's output buffer is full"}"#, &[], false)
    );
    // The collar was not dropped: it gets every accepted command, whole.
    dev.expect(format!("{command}\n").repeat(accepted).as_bytes());
    client.send(b"POST /devices/CE:96:C2:78:27:FC/commands HTTP/1.1\r\nContent-Length: 4\r\n\r\nbeep");
    assert_eq!(client.read_response().status, 202);
    dev.expect(b"beep\n");
    dev.send(b"PING\n");
    dev.expect(b"PONG\n");
    drop((dev, client));
    let stats = gw.stop_drained();
    assert_eq!(stats.closed(Kind::Device, CloseReason::SlowConsumer), 0);
    assert_eq!(stats.http_responses.get(&503), Some(&1));
}
