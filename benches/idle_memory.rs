//! Memory per idle identified connection, and CPU while idle.
//!
//! Starts the real `tether` binary, opens N collar connections from this
//! process (each identifies with its own MAC and reports a location, as a
//! real collar does), and
//! reads the gateway's resident memory from `/proc/<pid>/status` before
//! and after. The difference divided by N is what one idle device costs
//! the process: slab entry, MAC index, timer node and allocator overhead.
//! Kernel socket buffers are not process memory and are not counted.
//!
//! It then watches the gateway's CPU time while the connections sit idle:
//! with no deadline due, the reactor should sleep in `epoll_wait` and use
//! none.
//!
//! Run: `cargo bench --bench idle_memory` (19,000 connections), or
//! `TETHER_IDLE_CONNS=5000 cargo bench --bench idle_memory`.
//! The gateway and this process each need N file descriptors.

mod common;

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// Connection counts at which memory is sampled; the last is the target.
fn steps(n: usize) -> Vec<usize> {
    let mut steps: Vec<usize> = [1000, 5000, 10_000].into_iter().filter(|&s| s < n).collect();
    steps.push(n);
    steps
}

fn main() {
    // `cargo bench` passes `--bench`; there are no options of our own.
    let n: usize = std::env::var("TETHER_IDLE_CONNS").ok().and_then(|v| v.parse().ok()).unwrap_or(19_000);
    tether::net::raise_fd_limit().expect("raise fd limit");

    // This client does not answer heartbeats; without these off, a slow run
    // would see its collars dropped while it measures them. The HTTP share
    // of the descriptors is cut to what the bench needs, so collars get the
    // rest of the 20,000 this host allows.
    let gateway =
        common::Gateway::start(&["--heartbeat-interval", "0", "--idle-timeout", "0", "--max-http-connections", "16"]);
    let (pid, addr) = (gateway.pid, gateway.devices);

    // Warm up: one connection touches the shared buffers, so the baseline
    // is a gateway that has served, not a blank one.
    let mut warm = connect(addr, 0xFFFF_FFFF);
    warm.write_all(b"PING\n").unwrap();
    common::expect(&mut warm, b"PONG\n");
    let base = gateway.rss_bytes();
    println!("tether pid {pid} on {addr}: baseline RSS {} KiB", base / 1024);
    println!("{:>12} {:>12} {:>16} {:>18}", "connections", "RSS KiB", "bytes/conn", "marginal bytes/conn");

    let mut clients = Vec::with_capacity(n);
    let mut last = (0usize, base);
    let started = Instant::now();
    for step in steps(n) {
        while clients.len() < step {
            clients.push(connect(addr, clients.len() as u32));
        }
        let rss = gateway.rss_bytes();
        let per = (rss.saturating_sub(base)) as f64 / step as f64;
        let marginal = (rss.saturating_sub(last.1)) as f64 / (step - last.0) as f64;
        println!("{step:>12} {:>12} {per:>16.1} {marginal:>18.1}", rss / 1024);
        last = (step, rss);
    }
    println!("opened and identified {n} connections in {:.2?}", started.elapsed());

    let window = Duration::from_secs(5);
    let cpu_before = gateway.cpu_ticks();
    std::thread::sleep(window);
    let cpu = gateway.cpu_ticks() - cpu_before;
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    println!(
        "idle for {window:?} holding {n} connections: gateway CPU {:.0} ms ({cpu} ticks)",
        cpu as f64 * 1000.0 / hz
    );

    drop(clients);
}

/// Connects, identifies as a MAC derived from `i`, and reports a location
/// as a real collar does, so the gateway holds a stored fix for it too. The
/// PING makes sure the LOCATION line (which has no answer) was handled.
fn connect(addr: SocketAddr, i: u32) -> TcpStream {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_nodelay(true).unwrap();
    let [a, b, c, d] = i.to_be_bytes();
    let lat = f64::from(i % 180_000) / 1000.0 - 90.0;
    // One write: `write!` would issue one per formatted piece.
    let lines = format!("IDENTIFY:02:00:{a:02X}:{b:02X}:{c:02X}:{d:02X}\nLOCATION:{lat:.4},2.3522\nPING\n");
    s.write_all(lines.as_bytes()).unwrap();
    common::expect(&mut s, b"OK\nPONG\n");
    s
}
