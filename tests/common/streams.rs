//! Event streams in bulk, for the tests of fan-out: many subscribers at once
//! (from several loopback addresses, so that `--http-max-per-ip` does not
//! turn them away), bursts of location lines from one collar, and the
//! exact frame each line becomes.
//!
//! The coordinates of a burst all have a fractional part (`12.5`,
//! `7.25`), whose JSON is the same whichever way a build writes numbers:
//! a test about delivery then fails on delivery, not on number format.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use super::http::{HttpClient, STREAM_START};
use super::kernel::connect_from;

/// Streams opened per source address by [`subscribe_many`]: within the
/// default `--http-max-per-ip` (64).
pub const STREAMS_PER_ADDRESS: usize = 50;

/// Opens `n` event streams (`GET /events`) to the API at `http`, from
/// 127.0.1.1, 127.0.1.2, … ([`STREAMS_PER_ADDRESS`] each) and with
/// `SO_RCVBUF` set to `recv_buffer` if given, and reads the start of each.
pub fn subscribe_many(http: SocketAddr, n: usize, recv_buffer: Option<usize>) -> Vec<HttpClient> {
    (0..n)
        .map(|i| {
            let source = IpAddr::V4(Ipv4Addr::new(127, 0, 1, 1 + (i / STREAMS_PER_ADDRESS) as u8));
            let mut stream = HttpClient::from_stream(connect_from(source, http, recv_buffer));
            stream.send(b"GET /events HTTP/1.1\r\nHost: tether\r\n\r\n");
            stream.expect(STREAM_START.as_bytes());
            stream
        })
        .collect()
}

/// Location lines `from..to`: the `i`-th at `i % 90 + 0.5`,
/// `i % 180 + 0.25`.
pub fn locations(from: usize, to: usize) -> String {
    (from..to).map(|i| format!("LOCATION:{}.5,{}.25\n", i % 90, i % 180)).collect()
}

/// The frame of the `i`-th line of [`locations`] from `mac`, published as
/// event `id`: a template for `assert_like`.
pub fn location_frame(id: u64, mac: &str, i: usize) -> String {
    let (lat, lon) = (i % 90, i % 180);
    format!(
        "id: {id}\nevent: location\ndata: {{\"mac\":\"{mac}\",\"lat\":{lat}.5,\"lon\":{lon}.25,\"at\":\"<TIME>\"}}\n\n"
    )
}

/// The whole frames in `received` (a stream cut off may end inside one),
/// each with its id.
pub fn frames(received: &[u8]) -> Vec<(u64, String)> {
    let text = String::from_utf8_lossy(received);
    text.split_inclusive("\n\n")
        .filter(|frame| frame.ends_with("\n\n"))
        .map(|frame| {
            let id = frame.strip_prefix("id: ").and_then(|rest| rest.split('\n').next()).and_then(|id| id.parse().ok());
            (id.unwrap_or_else(|| panic!("a frame without an id: {frame:?}")), frame.to_string())
        })
        .collect()
}
