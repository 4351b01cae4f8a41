//! The HTTP API's transport, over real sockets: keep-alive (raw and with a
//! real client's connection pool), pipelining (in order, past the output
//! high-water mark, behind a long poll), HTTP/1.0 and `Connection: close`,
//! case-insensitive headers, every request limit with its status and JSON
//! error (411 chunked, 431 head, 413 body, 400 malformed, 408 request
//! timeout) and the close that follows, the keep-alive idle timeout, CORS
//! and preflights, the bearer token, 404/405, HEAD, `Expect: 100-continue`
//! and `--max-http-connections`.

mod common;

use std::io::Write;
use std::thread;
use std::time::{Duration, Instant};

use common::{Gateway, STREAM_START, config, json_head, json_response, mac, metric};
use tether::Config;
use tether::close::CloseReason;
use tether::reactor::Kind;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// The body of `GET /devices?offset=<offset>&limit=0` on a gateway with no
/// devices: a response that names the request it answers.
fn empty_page(offset: usize) -> String {
    format!(r#"{{"total":0,"offset":{offset},"limit":0,"devices":[]}}"#)
}

const NO_DEVICES: &str = r#"{"total":0,"offset":0,"limit":100,"devices":[]}"#;

#[test]
fn keep_alive_answers_request_after_request_on_one_connection() {
    let gw = Gateway::start(config());
    let mut client = gw.http_client();
    for _ in 0..3 {
        client.send(b"GET /devices HTTP/1.1\r\nHost: tether\r\n\r\n");
        client.expect(json_response("200 OK", NO_DEVICES, &[], false).as_bytes());
    }
    drop(client);
    let stats = gw.stop_drained();
    assert_eq!(stats.accepted, [0, 1]);
    assert_eq!(stats.http_responses.get(&200), Some(&3));
}

#[test]
fn a_real_client_reuses_one_keep_alive_connection() {
    let gw = Gateway::start(config());
    let api = gw.api();
    for _ in 0..5 {
        let reply = api.get("/devices");
        assert_eq!(reply.status, 200);
        assert_eq!(reply.body, NO_DEVICES);
    }
    let metrics = api.get("/metrics").body;
    assert_eq!(metric(&metrics, r#"tether_accepted_total{kind="http"}"#), 1.0, "one connection for all");
    assert_eq!(metric(&metrics, r#"tether_http_responses_total{status="200"}"#), 5.0);
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let gw = Gateway::start(config());
    let mut client = gw.http_client();
    client.send(
        b"GET /devices?offset=1&limit=0 HTTP/1.1\r\nHost: t\r\n\r\n\
          GET /nope HTTP/1.1\r\nHost: t\r\n\r\n\
          GET /devices?offset=3&limit=0 HTTP/1.1\r\nHost: t\r\n\r\n",
    );
    let expected = [
        json_response("200 OK", &empty_page(1), &[], false),
        json_response("404 Not Found", r#"{"error":"no such endpoint"}"#, &[], false),
        json_response("200 OK", &empty_page(3), &[], false),
    ]
    .concat();
    client.expect(expected.as_bytes());
    // Still open for more.
    client.send(b"GET /devices HTTP/1.1\r\n\r\n");
    client.expect(json_response("200 OK", NO_DEVICES, &[], false).as_bytes());
}

/// Hundreds of pipelined requests whose answers (the metrics page is a few
/// KiB) far exceed the output high-water mark: reading pauses while the
/// output drains, and every request is answered, in order.
#[test]
fn pipelined_requests_past_the_output_high_water_mark_are_all_answered_in_order() {
    const PAIRS: usize = 300;
    let gw = Gateway::start(config());
    let mut client = gw.http_client();
    let requests: String = (0..PAIRS)
        .map(|i| format!("GET /metrics HTTP/1.1\r\n\r\nGET /devices?limit=0&offset={i} HTTP/1.1\r\n\r\n"))
        .collect();
    client.send(requests.as_bytes());
    let mut bytes = 0;
    for i in 0..PAIRS {
        let metrics = client.read_response();
        assert_eq!(metrics.status, 200, "{}", metrics.head);
        assert!(metrics.text().starts_with("# HELP "), "{}", metrics.text());
        let page = client.read_response();
        assert_eq!(page.text(), empty_page(i));
        bytes += metrics.body.len() + page.body.len();
    }
    assert!(bytes > 1 << 20, "only {bytes} bytes of answers: the high-water mark was never reached");
    client.send(b"GET /devices HTTP/1.1\r\n\r\n");
    assert_eq!(client.read_response().text(), NO_DEVICES);
}

#[test]
fn a_request_pipelined_behind_a_long_poll_is_answered_after_it() {
    let gw = Gateway::start(config());
    let mut client = gw.http_client();
    client.send(b"GET /events/poll?timeout=100ms HTTP/1.1\r\n\r\nGET /devices?limit=0&offset=7 HTTP/1.1\r\n\r\n");
    let poll = r#"{"events":[],"next":0,"reset":false}"#;
    let expected = json_response("200 OK", poll, &[], false) + &json_response("200 OK", &empty_page(7), &[], false);
    client.expect(expected.as_bytes());
}

#[test]
fn connection_close_and_http_1_0_end_the_connection_after_the_response() {
    let gw = Gateway::start(config());
    for request in [
        "GET /devices HTTP/1.1\r\nConnection: close\r\n\r\n",
        "GET /devices HTTP/1.1\r\nConnection: keep-alive, close\r\n\r\n",
        "GET /devices HTTP/1.0\r\n\r\n",
    ] {
        let mut client = gw.http_client();
        client.send(request.as_bytes());
        client.expect(json_response("200 OK", NO_DEVICES, &[], true).as_bytes());
        client.expect_eof();
    }
    // HTTP/1.0 asking for keep-alive gets it.
    let mut client = gw.http_client();
    for _ in 0..2 {
        client.send(b"GET /devices HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
        client.expect(json_response("200 OK", NO_DEVICES, &[], false).as_bytes());
    }
    drop(client);
    let stats = gw.stop_drained();
    assert_eq!(stats.closed(Kind::Http, CloseReason::Completed), 3);
}

#[test]
fn header_names_are_case_insensitive() {
    let mut config = config();
    config.api_token = Some("s3cret".into());
    let gw = Gateway::start(config);
    let mut dev = gw.device(&mac(1));
    let mut client = gw.http_client();
    client.send(
        b"POST /devices/02-00-00-00-00-01/commands HTTP/1.1\r\ncOnTeNt-LeNgTh: 4\r\n\
          AUTHORIZATION: Bearer s3cret\r\nconnection: CLOSE\r\n\r\nbeep",
    );
    let body = r#"{"mac":"02:00:00:00:00:01","accepted":true,"bytes":5}"#;
    client.expect(json_response("202 Accepted", body, &[], true).as_bytes());
    client.expect_eof();
    dev.expect(b"beep\n");
}

#[test]
fn a_chunked_request_body_is_decoded() {
    let gw = Gateway::start(config());
    let mut dev = gw.device(&mac(1));
    let mut client = gw.http_client();
    client.send(b"POST /devices/02:00:00:00:00:01/commands HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nbe");
    client.send(b"\r\n2;note=x\r\nep\r\n0\r\nX-Trailer: 1\r\n\r\n");
    let body = r#"{"mac":"02:00:00:00:00:01","accepted":true,"bytes":5}"#;
    client.expect(json_response("202 Accepted", body, &[], false).as_bytes());
    dev.expect(b"beep\n");
    // The connection goes on with the next request.
    assert_eq!(client.get("/health").status, 200);
}

#[test]
fn a_transfer_coding_other_than_chunked_is_501_and_a_chunked_body_over_the_limit_413() {
    let gw = Gateway::start(Config { http_max_body: 8, ..config() });
    let mut client = gw.http_client();
    client.send(b"POST /devices/02:00:00:00:00:01/commands HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n");
    let body = r#"{"error":"only the chunked transfer coding is supported"}"#;
    client.expect(json_response("501 Not Implemented", body, &[], true).as_bytes());
    client.expect_eof();
    let mut client = gw.http_client();
    client.send(
        b"POST /devices/02:00:00:00:00:01/commands HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n12345\r\n5\r\n",
    );
    client
        .expect(json_response("413 Content Too Large", r#"{"error":"request body too large"}"#, &[], true).as_bytes());
    client.expect_eof();
    let stats = gw.stop_drained();
    assert_eq!(stats.closed(Kind::Http, CloseReason::BadRequest), 2);
}

/// `GET /devices` with an `X-Pad` header making the head exactly `len`
/// bytes long, blank line included.
fn request_with_head_of(len: usize) -> String {
    let bare = "GET /devices HTTP/1.1\r\nX-Pad: \r\n\r\n".len();
    format!("GET /devices HTTP/1.1\r\nX-Pad: {}\r\n\r\n", "a".repeat(len - bare))
}

#[test]
fn a_head_over_max_head_is_refused_with_431_and_the_connection_closed() {
    let gw = Gateway::start(config());
    // The default --http-max-head is 8 KiB: exactly that is fine.
    let mut client = gw.http_client();
    client.send(request_with_head_of(8192).as_bytes());
    client.expect(json_response("200 OK", NO_DEVICES, &[], false).as_bytes());

    let too_large =
        json_response("431 Request Header Fields Too Large", r#"{"error":"request head too large"}"#, &[], true);
    client.send(request_with_head_of(8193).as_bytes());
    client.expect(too_large.as_bytes());
    client.expect_eof();

    // A head that never ends is refused as soon as it passes the limit.
    let mut client = gw.http_client();
    client.send(format!("GET /devices HTTP/1.1\r\nX-Pad: {}", "a".repeat(9000)).as_bytes());
    client.expect(too_large.as_bytes());
    client.expect_eof();

    // So are too many headers.
    let mut client = gw.http_client();
    let headers: String = (0..100).map(|i| format!("X-H{i}: v\r\n")).collect();
    client.send(format!("GET /devices HTTP/1.1\r\n{headers}\r\n").as_bytes());
    client.expect(too_large.as_bytes());
    client.expect_eof();
    drop(client);
    let stats = gw.stop_drained();
    assert_eq!(stats.http_responses.get(&431), Some(&3));
    assert_eq!(stats.closed(Kind::Http, CloseReason::BadRequest), 3);
}

#[test]
fn a_body_over_max_body_is_refused_with_413_and_the_connection_closed() {
    let gw = Gateway::start(config());
    let path = "/devices/02:00:00:00:00:01/commands";
    // Refused on the head alone: the client need not send the body.
    let mut client = gw.http_client();
    client.send(format!("POST {path} HTTP/1.1\r\nContent-Length: 65537\r\n\r\n").as_bytes());
    let too_large = json_response("413 Content Too Large", r#"{"error":"request body too large"}"#, &[], true);
    client.expect(too_large.as_bytes());
    client.expect_eof();

    // Exactly --http-max-body (64 KiB) is read, and refused by the endpoint.
    let mut client = gw.http_client();
    client.send(format!("POST {path} HTTP/1.1\r\nContent-Length: 65536\r\n\r\n").as_bytes());
    client.send(&[b'x'; 65536]);
    let body = r#"{"error":"command longer than --max-line"}"#;
    client.expect(json_response("400 Bad Request", body, &[], false).as_bytes());

    // A real client sending a large body gets the 413.
    let reply = gw.api().post(path, &"x".repeat(100_000));
    assert_eq!(reply.status, 413);
    assert_eq!(reply.header("connection"), Some("close"));
    assert_eq!(reply.body, r#"{"error":"request body too large"}"#);
}

#[test]
fn a_smaller_max_head_and_max_body_apply() {
    let mut config = config();
    config.http_max_head = 256;
    config.http_max_body = 16;
    let gw = Gateway::start(config);
    let mut client = gw.http_client();
    client.send(request_with_head_of(257).as_bytes());
    client.expect(
        json_response("431 Request Header Fields Too Large", r#"{"error":"request head too large"}"#, &[], true)
            .as_bytes(),
    );
    let mut client = gw.http_client();
    client.send(b"POST /devices/02:00:00:00:00:01/commands HTTP/1.1\r\nContent-Length: 17\r\n\r\n");
    client
        .expect(json_response("413 Content Too Large", r#"{"error":"request body too large"}"#, &[], true).as_bytes());
}

#[test]
fn malformed_requests_are_refused_with_400_and_the_connection_closed() {
    let gw = Gateway::start(config());
    for (request, error) in [
        ("GARBAGE\r\n\r\n", "malformed request"),
        ("GET /health HTTP/9.9\r\n\r\n", "malformed request"),
        ("GET /health HTTP/1.1\r\nNo colon here\r\n\r\n", "malformed request"),
        ("GET\t/health HTTP/1.1\r\n\r\n", "malformed request"),
        ("GET /health HTTP/1.1\r\nContent-Length: ten\r\n\r\n", "invalid Content-Length"),
        ("GET /health HTTP/1.1\r\nContent-Length: -1\r\n\r\n", "invalid Content-Length"),
        (
            "POST /health HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
            "conflicting Content-Length headers",
        ),
    ] {
        let mut client = gw.http_client();
        client.send(request.as_bytes());
        let body = format!(r#"{{"error":"{error}"}}"#);
        let response = client.read_response();
        assert_eq!(response.raw(), json_response("400 Bad Request", &body, &[], true), "{request:?}");
        client.expect_eof();
    }
    // A malformed request after a good one on the same connection.
    let mut client = gw.http_client();
    client.send(b"GET /devices HTTP/1.1\r\n\r\n\x01\x02\x03\r\n\r\n");
    client.expect(json_response("200 OK", NO_DEVICES, &[], false).as_bytes());
    client.expect(json_response("400 Bad Request", r#"{"error":"malformed request"}"#, &[], true).as_bytes());
    client.expect_eof();
}

/// `Content-Length` is `1*DIGIT` (RFC 9110, 8.6): a sign is malformed, as
/// in any parser that a proxy in front might disagree with about where the
/// body ends.
#[test]
fn a_content_length_with_a_sign_is_400() {
    let gw = Gateway::start(config());
    let mut dev = gw.device(&mac(1));
    let mut client = gw.http_client();
    client.send(b"POST /devices/02:00:00:00:00:01/commands HTTP/1.1\r\nContent-Length: +4\r\n\r\nbeep");
    let response = client.read_response();
    let body = r#"{"error":"invalid Content-Length"}"#;
    assert_eq!(response.raw(), json_response("400 Bad Request", body, &[], true));
    client.expect_eof();
    dev.send(b"PING\n");
    dev.expect(b"PONG\n");
}

fn short_request_timeout() -> Config {
    let mut config = config();
    config.http_request_timeout = ms(200);
    config
}

#[test]
fn a_request_not_complete_within_the_request_timeout_is_answered_408_and_closed() {
    let gw = Gateway::start(short_request_timeout());
    let started = Instant::now();
    let mut silent = gw.http_client();
    let mut partial_head = gw.http_client();
    partial_head.send(b"GET /devices HTTP/1.1\r\nHost: t");
    let mut partial_body = gw.http_client();
    partial_body.send(b"POST /devices/02:00:00:00:00:01/commands HTTP/1.1\r\nContent-Length: 10\r\n\r\nbee");
    let timeout = json_response("408 Request Timeout", r#"{"error":"request not received in time"}"#, &[], true);
    for client in [&mut silent, &mut partial_head, &mut partial_body] {
        client.expect(timeout.as_bytes());
        client.expect_eof();
    }
    assert!(started.elapsed() >= ms(190), "408 after {:?}", started.elapsed());

    // The clock runs from the request's first byte, not from the last one.
    let mut trickle = gw.http_client();
    trickle.send(b"GET /devices HTTP/1.1\r\n");
    let started = Instant::now();
    // A header line every 40 ms for 800 ms: had each byte restarted the
    // clock, no 408 would come while it lasts.
    let mut stream = trickle.stream.try_clone().unwrap();
    let trickler = thread::spawn(move || {
        for _ in 0..20 {
            thread::sleep(ms(40));
            if stream.write_all(b"X: y\r\n").is_err() {
                break;
            }
        }
    });
    trickle.expect(timeout.as_bytes());
    assert!(started.elapsed() < ms(700), "408 after {:?}", started.elapsed());
    trickler.join().unwrap();
    drop((silent, partial_head, partial_body, trickle));
    let stats = gw.stop_drained();
    assert_eq!(stats.closed(Kind::Http, CloseReason::RequestTimeout), 4);
}

#[test]
fn a_keep_alive_connection_idle_past_the_idle_timeout_is_closed_without_a_response() {
    let mut config = config();
    config.http_idle_timeout = ms(400);
    let gw = Gateway::start(config);
    let mut client = gw.http_client();
    // Requests within the idle timeout keep the connection.
    for _ in 0..3 {
        client.send(b"GET /devices HTTP/1.1\r\n\r\n");
        client.expect(json_response("200 OK", NO_DEVICES, &[], false).as_bytes());
        client.expect_silence(ms(100));
    }
    let idle_from = Instant::now();
    client.expect_eof();
    assert!(idle_from.elapsed() >= ms(290), "closed {:?} after the 100 ms of silence", idle_from.elapsed());
    drop(client);
    let stats = gw.stop_drained();
    assert_eq!(stats.closed(Kind::Http, CloseReason::HttpIdle), 1);
    assert_eq!(stats.closed(Kind::Http, CloseReason::RequestTimeout), 0);
}

/// The idle timeout runs between requests: from the end of a response.
/// A long poll that outlasts the idle timeout must leave a connection the
/// client can go on using.
#[test]
fn the_idle_timeout_counts_from_the_end_of_a_long_poll() {
    let mut config = config();
    config.http_idle_timeout = ms(300);
    let gw = Gateway::start(config);
    let mut client = gw.http_client();
    client.send(b"GET /events/poll?timeout=500ms HTTP/1.1\r\n\r\n");
    client.expect(json_response("200 OK", r#"{"events":[],"next":0,"reset":false}"#, &[], false).as_bytes());
    // Well within the idle timeout of the answer.
    client.expect_silence(ms(100));
    client.send(b"GET /devices HTTP/1.1\r\n\r\n");
    client.expect(json_response("200 OK", NO_DEVICES, &[], false).as_bytes());
}

#[test]
fn cors_origin_is_on_every_response() {
    let mut config = config();
    config.cors_origin = "https://app.example".into();
    config.http_request_timeout = ms(100);
    let gw = Gateway::start(config);
    let api = gw.api();
    for (method, path, body, status) in [
        ("GET", "/health", None, 200),
        ("GET", "/nope", None, 404),
        ("POST", "/health", Some(&b"x"[..]), 405),
        ("OPTIONS", "/devices", None, 204),
    ] {
        let reply = api.call(method, path, &[], body);
        assert_eq!(reply.status, status, "{method} {path}");
        assert_eq!(reply.header("access-control-allow-origin"), Some("https://app.example"), "{method} {path}");
    }
    let mut stream = gw.http_client();
    stream.send(b"GET /events HTTP/1.1\r\n\r\n");
    let head = stream.read_response_head();
    assert_eq!(head.header("Access-Control-Allow-Origin"), Some("https://app.example"));
    assert_eq!(head.head, STREAM_START.replace('*', "https://app.example").replace("retry: 3000\n\n", ""));
    let mut slow = gw.http_client();
    let timeout = slow.read_response();
    assert_eq!(timeout.status, 408);
    assert_eq!(timeout.header("Access-Control-Allow-Origin"), Some("https://app.example"));
}

#[test]
fn a_preflight_is_answered_204_with_the_cors_headers_without_a_token() {
    let mut config = config();
    config.api_token = Some("s3cret".into());
    let gw = Gateway::start(config);
    let mut client = gw.http_client();
    for (path, methods) in [
        ("/devices", "GET, HEAD, OPTIONS"),
        ("/devices/02-00-00-00-00-01/commands", "POST, OPTIONS"),
        ("/events", "GET, OPTIONS"),
    ] {
        client.send(
            format!(
                "OPTIONS {path} HTTP/1.1\r\nOrigin: https://app.example\r\nAccess-Control-Request-Method: GET\r\n\
                 Access-Control-Request-Headers: authorization\r\n\r\n"
            )
            .as_bytes(),
        );
        let expected = format!(
            "HTTP/1.1 204 No Content\r\nCache-Control: no-store\r\nAccess-Control-Allow-Origin: *\r\n\
             Allow: {methods}\r\nAccess-Control-Allow-Methods: {methods}\r\n\
             Access-Control-Allow-Headers: Authorization, Content-Type, Last-Event-ID\r\n\
             Access-Control-Max-Age: 86400\r\n\r\n"
        );
        client.expect(expected.as_bytes());
    }
    // An unknown path has nothing to preflight.
    client.send(b"OPTIONS /nope HTTP/1.1\r\n\r\n");
    assert_eq!(client.read_response().status, 404);
}

#[test]
fn the_api_token_is_required_by_every_endpoint_but_health() {
    let mut config = config();
    config.api_token = Some("s3cret".into());
    let gw = Gateway::start(config);
    let _dev = gw.device(&mac(1));
    let mut client = gw.http_client();
    let unauthorized = json_response(
        "401 Unauthorized",
        r#"{"error":"missing or wrong bearer token"}"#,
        &["WWW-Authenticate: Bearer"],
        false,
    );
    for target in [
        "/metrics",
        "/devices",
        "/devices/02:00:00:00:00:01",
        "/devices/02:00:00:00:00:01/location",
        "/events",
        "/events/poll",
        "/devices?access_token=wrong",
        "/devices?access_token=",
    ] {
        client.send(format!("GET {target} HTTP/1.1\r\n\r\n").as_bytes());
        client.expect(unauthorized.as_bytes());
    }
    for authorization in ["Bearer wrong", "Basic czNjcmV0", "Bearer", "s3cret", "Bearer s3cret2"] {
        client.send(format!("GET /devices HTTP/1.1\r\nAuthorization: {authorization}\r\n\r\n").as_bytes());
        client.expect(unauthorized.as_bytes());
    }
    client.send(b"POST /devices/02:00:00:00:00:01/commands HTTP/1.1\r\nContent-Length: 4\r\n\r\nbeep");
    client.expect(unauthorized.as_bytes());

    // /health needs no token.
    assert_eq!(client.get("/health").status, 200);
    // The token in the header, in any case of the scheme, or in the query
    // (percent-encoded or not).
    for (target, authorization) in [
        ("/devices", Some("Bearer s3cret")),
        ("/devices", Some("bearer s3cret")),
        ("/devices", Some("BEARER   s3cret")),
        ("/devices?access_token=s3cret", None),
        ("/devices?limit=5&access_token=s3%63ret", None),
        ("/devices?access_token=s3cret", Some("Basic czNjcmV0")),
    ] {
        let header = authorization.map(|a| format!("Authorization: {a}\r\n")).unwrap_or_default();
        client.send(format!("GET {target} HTTP/1.1\r\n{header}\r\n").as_bytes());
        let response = client.read_response();
        assert_eq!(response.status, 200, "{target} {authorization:?}: {}", response.raw());
    }
    // A real client with the header.
    let api = gw.api();
    let reply = api.call("GET", "/devices/02:00:00:00:00:01", &[("Authorization", "Bearer s3cret")], None);
    assert_eq!(reply.status, 200, "{}", reply.body);
    let reply = api.get("/metrics");
    assert_eq!(reply.status, 401);
    assert_eq!(reply.header("www-authenticate"), Some("Bearer"));
    // An event stream, which browsers open without headers, takes the query.
    let mut stream = gw.http_client();
    stream.send(b"GET /events?access_token=s3cret HTTP/1.1\r\n\r\n");
    stream.expect(STREAM_START.as_bytes());
}

#[test]
fn an_unknown_path_is_404() {
    let gw = Gateway::start(config());
    let mut client = gw.http_client();
    let not_found = json_response("404 Not Found", r#"{"error":"no such endpoint"}"#, &[], false);
    // (`/` is the dashboard's page: tests/dashboard.rs.)
    for target in [
        "/nope",
        "/dashboard/nope.js",
        "/health/more",
        "/devices/02:00:00:00:00:01/other",
        "/devices/02:00:00:00:00:01/location/more",
        "/events/other",
        "//health",
        "/HEALTH",
    ] {
        client.send(format!("GET {target} HTTP/1.1\r\n\r\n").as_bytes());
        let response = client.read_response();
        assert_eq!(response.raw(), not_found, "{target}");
    }
    // A trailing slash is ignored.
    assert_eq!(client.get("/devices/").text(), NO_DEVICES);
    // And through a real client.
    let reply = gw.api().get("/nope");
    assert_eq!((reply.status, reply.body.as_str()), (404, r#"{"error":"no such endpoint"}"#));
}

#[test]
fn a_known_path_with_the_wrong_method_is_405_with_allow() {
    let gw = Gateway::start(config());
    let mut client = gw.http_client();
    let not_allowed = r#"{"error":"method not allowed"}"#;
    for (request, allow) in [
        ("POST /health HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc", "GET, HEAD, OPTIONS"),
        ("DELETE /devices HTTP/1.1\r\n\r\n", "GET, HEAD, OPTIONS"),
        ("PUT /devices/02:00:00:00:00:01 HTTP/1.1\r\nContent-Length: 0\r\n\r\n", "GET, HEAD, OPTIONS"),
        ("GET /devices/02:00:00:00:00:01/commands HTTP/1.1\r\n\r\n", "POST, OPTIONS"),
        ("POST /devices/02:00:00:00:00:01/location HTTP/1.1\r\n\r\n", "GET, OPTIONS"),
        ("POST /events HTTP/1.1\r\n\r\n", "GET, OPTIONS"),
        ("PATCH /events/poll HTTP/1.1\r\n\r\n", "GET, OPTIONS"),
    ] {
        client.send(request.as_bytes());
        let expected = json_response("405 Method Not Allowed", not_allowed, &[&format!("Allow: {allow}")], false);
        assert_eq!(client.read_response().raw(), expected, "{request:?}");
    }
    // The body of the refused POST was consumed: the connection goes on.
    assert_eq!(client.get("/devices").text(), NO_DEVICES);
    let reply = gw.api().post("/metrics", "x");
    assert_eq!(reply.status, 405);
    assert_eq!(reply.header("allow"), Some("GET, HEAD, OPTIONS"));
}

#[test]
fn head_gets_the_headers_of_get_without_the_body() {
    let gw = Gateway::start(config());
    let _dev = gw.device(&mac(1));
    let mut client = gw.http_client();
    // Pipelined: had the HEAD answer carried a body, the GET's status line
    // would not come next.
    client.send(b"HEAD /devices?limit=0 HTTP/1.1\r\n\r\nGET /devices?limit=0 HTTP/1.1\r\n\r\n");
    let body = r#"{"total":1,"offset":0,"limit":0,"devices":[]}"#;
    client.expect(json_head("200 OK", body, &[], false).as_bytes());
    client.expect(json_response("200 OK", body, &[], false).as_bytes());
    for path in ["/health", "/metrics", "/devices/02:00:00:00:00:01"] {
        client.send(format!("HEAD {path} HTTP/1.1\r\n\r\n").as_bytes());
        let head = client.read_response_head();
        assert_eq!(head.status, 200, "{path}");
        let len: usize = head.header("Content-Length").unwrap().parse().unwrap();
        assert!(len > 0, "{path}");
        // The same headers as GET (whose body, and so its length, may have
        // moved on since: the counters, the uptime).
        let get = client.get(path);
        let mask = |head: &str| {
            head.split("\r\n")
                .map(|l| if l.starts_with("Content-Length: ") { "Content-Length: N" } else { l })
                .collect::<Vec<_>>()
                .join("\r\n")
        };
        assert_eq!(mask(&head.head), mask(&get.head), "{path}");
    }
    // Errors too: a HEAD for an unknown device is a 404 without a body.
    client.send(b"HEAD /devices/02:00:00:00:00:99 HTTP/1.1\r\n\r\n");
    client.expect(json_head("404 Not Found", r#"{"error":"device not online"}"#, &[], false).as_bytes());
    client.send(b"GET /devices HTTP/1.1\r\n\r\n");
    assert_eq!(client.read_response().status, 200);

    let reply = gw.api().call("HEAD", "/devices", &[], None);
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("content-type"), Some("application/json"));
    assert_eq!(reply.body, "");
}

#[test]
fn expect_100_continue_gets_an_interim_response_before_the_body() {
    let gw = Gateway::start(config());
    let mut dev = gw.device(&mac(1));
    let mut client = gw.http_client();
    client.send(
        b"POST /devices/02:00:00:00:00:01/commands HTTP/1.1\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n",
    );
    client.expect(b"HTTP/1.1 100 Continue\r\n\r\n");
    client.send(b"beep");
    let body = r#"{"mac":"02:00:00:00:00:01","accepted":true,"bytes":5}"#;
    client.expect(json_response("202 Accepted", body, &[], false).as_bytes());
    dev.expect(b"beep\n");
    // The next request on the connection gets its own 100 Continue.
    client.send(
        b"POST /devices/02:00:00:00:00:01/commands HTTP/1.1\r\nContent-Length: 4\r\nexpect: 100-Continue\r\n\r\n",
    );
    client.expect(b"HTTP/1.1 100 Continue\r\n\r\n");
    client.send(b"boop");
    client.expect(json_response("202 Accepted", body, &[], false).as_bytes());
    dev.expect(b"boop\n");
    // With the body already there, the final answer is all there is to say.
    client.send(
        b"POST /devices/02:00:00:00:00:01/commands HTTP/1.1\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\nblip",
    );
    client.expect(json_response("202 Accepted", body, &[], false).as_bytes());
    dev.expect(b"blip\n");
    // A body over the limit is refused instead of invited.
    client.send(
        b"POST /devices/02:00:00:00:00:01/commands HTTP/1.1\r\nContent-Length: 70000\r\nExpect: 100-continue\r\n\r\n",
    );
    let too_large = json_response("413 Content Too Large", r#"{"error":"request body too large"}"#, &[], true);
    client.expect(too_large.as_bytes());
    client.expect_eof();
}

#[test]
fn at_the_http_cap_the_longest_idle_keep_alive_connection_makes_room() {
    let mut config = config();
    config.max_http_connections = 2;
    let gw = Gateway::start(config);
    let mut a = gw.http_client();
    let mut b = gw.http_client();
    // Served, so both are held and idle; `a` the longer (idleness is told
    // in milliseconds: the pause makes it strictly longer).
    assert_eq!(a.get("/devices").status, 200);
    std::thread::sleep(Duration::from_millis(3));
    assert_eq!(b.get("/devices").status, 200);
    let mut c = gw.http_client();
    assert_eq!(c.get("/devices").status, 200);
    a.expect_eof();
    assert_eq!(b.get("/devices").status, 200, "the one idle for less time stays");
    drop((a, b, c));
    let stats = gw.stop_drained();
    assert_eq!(stats.accepted, [0, 3]);
    assert_eq!(stats.closed(Kind::Http, CloseReason::Evicted), 1);
    assert_eq!(stats.closed(Kind::Http, CloseReason::ServerFull), 0);
}

#[test]
fn at_the_http_cap_with_none_idle_a_new_connection_gets_503_and_is_closed() {
    let mut config = config();
    config.max_http_connections = 2;
    let gw = Gateway::start(config);
    let mut a = gw.http_client();
    let mut b = gw.http_client();
    // Each is in the middle of a request: neither may be closed for room.
    a.send(b"GET /devices HTTP/1.1\r\n");
    b.send(b"GET /health HTTP/1.1\r\n");
    let mut c = gw.http_client();
    c.expect(json_response("503 Service Unavailable", r#"{"error":"server full"}"#, &[], true).as_bytes());
    c.expect_eof();
    // Devices do not count against the HTTP cap, nor HTTP against theirs.
    let mut dev = gw.device(&mac(1));
    dev.send(b"PING\n");
    dev.expect(b"PONG\n");
    a.send(b"\r\n");
    assert_eq!(a.read_response().status, 200);
    b.send(b"\r\n");
    assert_eq!(b.read_response().status, 200);
    let metrics = b.get("/metrics");
    let text = String::from_utf8(metrics.body).unwrap();
    assert_eq!(metric(&text, r#"tether_rejected_total{reason="server-full"}"#), 1.0);
    assert_eq!(metric(&text, r#"tether_closed_total{kind="http",reason="server-full"}"#), 1.0);
    assert_eq!(metric(&text, r#"tether_http_responses_total{status="503"}"#), 1.0);
    assert_eq!(metric(&text, "tether_max_http_connections"), 2.0);
    drop((a, b, c, dev));
    let stats = gw.stop_drained();
    assert_eq!(stats.accepted, [1, 3]);
    assert_eq!(stats.closed(Kind::Http, CloseReason::ServerFull), 1);
    assert_eq!(stats.http_responses.get(&503), Some(&1));
}
