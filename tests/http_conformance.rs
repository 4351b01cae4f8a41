//! HTTP/1.1 as RFC 9112 has it, where a client may rightly send what the
//! API's own clients do not: a request target in absolute form (which a
//! server must accept, RFC 9112 3.2.2: proxies and some clients send it),
//! and a request body in the chunked transfer coding (decoded, whatever
//! the chunk sizes, extensions, trailers and TCP splits; bounded by
//! `--http-max-body`), with 501 for the codings the gateway does not
//! decode and 400 for framing it cannot trust.
//!
//! Once, the absolute form was a 404 and any `Transfer-Encoding` a 411.

mod common;

use common::{Gateway, assert_like, config, json_response, mac};
use tether::Config;

const HEALTH: &str = r#"{"status":"ok","uptime_s":<INT>,"devices_online":<INT>,"connections":<INT>}"#;

/// The body of `GET /devices?limit=0&offset=<offset>` with `total`
/// collars online: an answer that names the request it answers.
fn empty_page(total: usize, offset: usize) -> String {
    format!(r#"{{"total":{total},"offset":{offset},"limit":0,"devices":[]}}"#)
}

/// What accepting a command for `mac(1)` answers, the command being
/// `bytes` long with its newline.
fn accepted(bytes: usize) -> String {
    let body = format!(r#"{{"mac":"{}","accepted":true,"bytes":{bytes}}}"#, mac(1));
    json_response("202 Accepted", &body, &[], false)
}

#[test]
fn a_target_in_absolute_form_names_the_same_resource_as_its_path() {
    let gw = Gateway::start(config());
    let mut client = gw.http_client();
    let response = client.get("http://x/health");
    assert_eq!(response.status, 200, "{}", response.raw());
    assert_like(response.text(), HEALTH);
    // Any authority (it is ignored, as `Host` is), a port, either scheme in
    // any case, and the query.
    for (target, offset) in [
        ("http://tether.example:3000/devices?limit=0&offset=4", 4),
        ("HTTP://x/devices?limit=0&offset=5", 5),
        ("https://127.0.0.1/devices?limit=0&offset=6", 6),
    ] {
        let response = client.get(target);
        assert_eq!(response.raw(), json_response("200 OK", &empty_page(0, offset), &[], false), "{target}");
    }
    // No path at all is the root: the dashboard's page.
    let response = client.get("http://x");
    assert_eq!(response.status, 200, "{}", response.raw());
    assert_eq!(response.header("Content-Type"), Some("text/html; charset=utf-8"));
    let response = client.get("http://x/nope");
    assert_eq!(response.raw(), json_response("404 Not Found", r#"{"error":"no such endpoint"}"#, &[], false));
    // A POST in absolute form reaches the collar.
    let mut dev = gw.device(&mac(1));
    client.send(
        format!("POST http://x/devices/{}/commands HTTP/1.1\r\nContent-Length: 4\r\n\r\nbeep", mac(1)).as_bytes(),
    );
    client.expect(accepted(5).as_bytes());
    dev.expect(b"beep\n");
}

/// A chunked body sent one byte at a time, with upper-case hex sizes, a
/// chunk extension and a trailer, is the same body; the request pipelined
/// behind it is answered next.
#[test]
fn a_chunked_body_trickling_in_is_decoded_and_the_next_request_follows() {
    let gw = Gateway::start(config());
    let mut dev = gw.device(&mac(1));
    let mut client = gw.http_client();
    let request = format!(
        "POST /devices/{}/commands HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n\
         A;name=value\r\nREBOOT-NOW\r\n1\r\n!\r\n0\r\nX-Checksum: none\r\n\r\n\
         GET /devices?limit=0&offset=9 HTTP/1.1\r\n\r\n",
        mac(1)
    );
    for byte in request.as_bytes() {
        client.send(&[*byte]);
    }
    client.expect(accepted(12).as_bytes());
    dev.expect(b"REBOOT-NOW!\n");
    client.expect(json_response("200 OK", &empty_page(1, 9), &[], false).as_bytes());
}

/// `--http-max-body` bounds the decoded body: exactly the limit is
/// accepted, one byte more is 413 and the connection closed, whether the
/// chunk that passes the limit has arrived or only its size line.
#[test]
fn a_chunked_body_is_bounded_by_max_body() {
    let gw = Gateway::start(Config { http_max_body: 8, ..config() });
    let mut dev = gw.device(&mac(1));
    let path = format!("/devices/{}/commands", mac(1));
    let mut client = gw.http_client();
    client.send(
        format!("POST {path} HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nABCD\r\n4\r\nEFGH\r\n0\r\n\r\n")
            .as_bytes(),
    );
    client.expect(accepted(9).as_bytes());
    dev.expect(b"ABCDEFGH\n");

    let too_large = json_response("413 Content Too Large", r#"{"error":"request body too large"}"#, &[], true);
    client.send(format!("POST {path} HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nABCD\r\n5\r\n").as_bytes());
    client.expect(too_large.as_bytes());
    client.expect_eof();
    // Nothing of it reached the collar.
    dev.send(b"PING\n");
    dev.expect(b"PONG\n");
}

/// Codings the gateway does not decode are 501; framing it cannot trust
/// (both `Content-Length` and `Transfer-Encoding`, `chunked` not last, a
/// chunk size that is not hex, data not ended by CRLF) is 400. Each closes
/// the connection: the rest of its bytes cannot be framed.
#[test]
fn other_codings_are_501_and_untrustworthy_framing_400() {
    let gw = Gateway::start(config());
    let path = format!("/devices/{}/commands", mac(1));
    let not_implemented = r#"{"error":"only the chunked transfer coding is supported"}"#;
    for coding in ["gzip", "identity", "gzip, chunked", "deflate,chunked"] {
        let mut client = gw.http_client();
        client.send(format!("POST {path} HTTP/1.1\r\nTransfer-Encoding: {coding}\r\n\r\n").as_bytes());
        client.expect(json_response("501 Not Implemented", not_implemented, &[], true).as_bytes());
        client.expect_eof();
    }
    for (framing, error) in [
        (
            "Transfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n4\r\nbeep\r\n0\r\n\r\n",
            "both Transfer-Encoding and Content-Length",
        ),
        ("Transfer-Encoding: chunked, chunked\r\n\r\n", "chunked must be the last transfer coding"),
        ("Transfer-Encoding: chunked\r\n\r\nzz\r\n", "invalid chunk size"),
        ("Transfer-Encoding: chunked\r\n\r\n2\r\nbeep\r\n", "chunk data not followed by CRLF"),
    ] {
        let mut client = gw.http_client();
        client.send(format!("POST {path} HTTP/1.1\r\n{framing}").as_bytes());
        let body = format!(r#"{{"error":"{error}"}}"#);
        client.expect(json_response("400 Bad Request", &body, &[], true).as_bytes());
        client.expect_eof();
    }
    // The others are served as ever.
    assert_eq!(gw.http_client().get("/health").status, 200);
}
