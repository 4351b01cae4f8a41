//! Process memory per open Server-Sent Events subscriber, and the cost of
//! fanning one event out to all of them.
//!
//! Starts the real `tether` binary, opens N `GET /events` streams from this
//! process (each reads the response head and `retry: 3000`), and compares
//! the gateway's RSS before and after. Then one collar reports a location
//! and every subscriber must receive that event.
//!
//! Run: `cargo bench --bench sse_memory` (1,000 subscribers), or
//! `TETHER_SSE_SUBSCRIBERS=5000 cargo bench --bench sse_memory`.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Instant;

fn main() {
    let n: usize = std::env::var("TETHER_SSE_SUBSCRIBERS").ok().and_then(|v| v.parse().ok()).unwrap_or(1000);
    tether::net::raise_fd_limit().expect("raise fd limit");

    // Every stream comes from 127.0.0.1: no per-address cap.
    let gateway = common::Gateway::start(&["--max-http-connections", &(n + 16).to_string(), "--http-max-per-ip", "0"]);
    let (pid, devices, http) = (gateway.pid, gateway.devices, gateway.http);

    // Warm up with one stream and one event, so the baseline has touched
    // the shared buffers.
    let mut collar = TcpStream::connect(devices).unwrap();
    collar.write_all(b"IDENTIFY:02:00:00:00:00:01\n").unwrap();
    common::expect(&mut collar, b"OK\n");
    let warm = subscribe(http);
    drop(warm);
    let base = gateway.rss_bytes();

    let started = Instant::now();
    let mut streams: Vec<TcpStream> = (0..n).map(|_| subscribe(http)).collect();
    let opened = started.elapsed();
    let rss = gateway.rss_bytes();
    println!("tether pid {pid}: baseline RSS {} KiB", base / 1024);
    println!(
        "{n} event streams open (in {opened:.2?}): RSS {} KiB, {:.0} bytes per subscriber",
        rss / 1024,
        rss.saturating_sub(base) as f64 / n as f64
    );

    // One event, fanned out to every stream.
    let sent = Instant::now();
    collar.write_all(b"LOCATION:48.8566,2.3522\n").unwrap();
    for s in &mut streams {
        let mut buf = [0u8; 512];
        let got = s.read(&mut buf).unwrap();
        let text = String::from_utf8_lossy(&buf[..got]);
        assert!(text.contains("event: location"), "{text:?}");
    }
    println!("one location event reached all {n} subscribers in {:.2?}", sent.elapsed());

    drop(streams);
}

/// Opens `GET /events` and reads up to the `retry:` line.
fn subscribe(http: SocketAddr) -> TcpStream {
    let mut s = TcpStream::connect(http).unwrap();
    s.write_all(b"GET /events HTTP/1.1\r\nHost: bench\r\n\r\n").unwrap();
    let mut got = Vec::new();
    let mut byte = [0u8; 1];
    while !got.ends_with(b"retry: 3000\n\n") {
        assert_eq!(s.read(&mut byte).unwrap(), 1, "stream closed: {:?}", String::from_utf8_lossy(&got));
        got.push(byte[0]);
    }
    s
}
