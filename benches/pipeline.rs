//! Pipelined PINGs: server CPU per PING when lines arrive in batches.
//!
//! C connections (each identified first) each write a batch of B `PING\n`
//! lines in one write, read the B `PONG\n` answers, and write the next
//! batch, for T seconds; then no new batch is sent and the ones in flight
//! are read to the end. Every connection lives on this one thread and one
//! mio `Poll`. It reports PINGs per second and the server's CPU time
//! (utime + stime from `/proc/<pid>/stat`) per PING and per batch.
//!
//! The server is the `tether` gateway (cargo's build, or `TETHER_BIN`), or
//! with `PIPELINE_TARGET=echo` the floor, `examples/echo.rs`, so one run of
//! each puts the two side by side.
//!
//! Run: `cargo bench --bench pipeline`, and for the floor
//! `cargo build --release --example echo && PIPELINE_TARGET=echo cargo bench --bench pipeline`.
//! Environment: `PIPELINE_CONNS` (C, default 50), `PIPELINE_BATCH` (B,
//! default 100), `PIPELINE_SECS` (T, default 5), `PIPELINE_TARGET`
//! (`tether` or `echo`), `ECHO_BIN` (default `target/release/examples/echo`).
//! Client and server share the machine's cores.

mod common;

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream as StdStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};

const PING: &[u8] = b"PING\n";
const PONG: &[u8] = b"PONG\n";

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().map_or(default, |v| v.parse().unwrap_or_else(|_| panic!("{name}={v}: not a number")))
}

/// The server under test, stopped when dropped.
struct Server {
    pid: u32,
    addr: SocketAddr,
    /// Held for its `Drop`, which stops the gateway.
    _gateway: Option<common::Gateway>,
    echo: Option<Child>,
}

impl Server {
    fn start(target: &str) -> Server {
        match target {
            "tether" => {
                let gateway = common::Gateway::start(&[]);
                Server { pid: gateway.pid, addr: gateway.devices, _gateway: Some(gateway), echo: None }
            }
            "echo" => {
                let bin = std::env::var("ECHO_BIN")
                    .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/target/release/examples/echo").into());
                let mut child = Command::new(&bin)
                    .arg("127.0.0.1:0")
                    .stdout(Stdio::null())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap_or_else(|e| panic!("{bin}: {e} (cargo build --release --example echo)"));
                let mut log = BufReader::new(child.stderr.take().unwrap());
                let mut line = String::new();
                log.read_line(&mut line).unwrap();
                let addr = line.split("listening on ").nth(1).and_then(|a| a.trim().parse().ok());
                let addr = addr.unwrap_or_else(|| panic!("echo said {line:?}"));
                std::thread::spawn(move || io::copy(&mut log, &mut io::sink()));
                Server { pid: child.id(), addr, _gateway: None, echo: Some(child) }
            }
            other => panic!("PIPELINE_TARGET={other}: expected tether or echo"),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(child) = &mut self.echo {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// User and system CPU time of `pid` in seconds (utime and stime from
/// `/proc/<pid>/stat`, counted in clock ticks).
fn cpu_times(pid: u32) -> [f64; 2] {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split_whitespace().collect();
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    [11, 12].map(|i| fields[i].parse::<u64>().unwrap() as f64 / hz)
}

/// User + system CPU time of this process.
fn own_cpu() -> Duration {
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `usage` is a valid rusage for the call to fill in.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// Connects and identifies (blocking), then hands the socket to mio.
fn identify(addr: SocketAddr, i: u64) -> TcpStream {
    let mut s = StdStream::connect(addr).expect("connect");
    s.set_nodelay(true).unwrap();
    let [.., a, b] = i.to_be_bytes();
    s.write_all(format!("IDENTIFY:02:50:00:00:{a:02X}:{b:02X}\n").as_bytes()).unwrap();
    common::expect(&mut s, b"OK\n");
    s.set_nonblocking(true).unwrap();
    TcpStream::from_std(s)
}

/// One connection's place in its batch.
struct Conn {
    stream: TcpStream,
    /// Bytes of the current batch written so far.
    sent: usize,
    /// Bytes of the current batch's answers read so far.
    received: usize,
    /// A batch is out and not fully answered.
    busy: bool,
}

impl Conn {
    /// Writes what the socket takes of the current batch.
    fn send(&mut self, batch: &[u8]) {
        while self.sent < batch.len() {
            match self.stream.write(&batch[self.sent..]) {
                Ok(n) => self.sent += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => panic!("write: {e}"),
            }
        }
    }

    /// Reads the answers that arrived; true when the batch is complete.
    fn receive(&mut self, buf: &mut [u8], want: usize) -> bool {
        loop {
            let n = match self.stream.read(buf) {
                Ok(0) => panic!("the server closed a connection"),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => panic!("read: {e}"),
            };
            let got = &buf[..n];
            assert!(self.received + n <= want, "more than the PONGs asked for: {:?}", String::from_utf8_lossy(got));
            let start = self.received;
            let wrong = got.iter().enumerate().any(|(k, &byte)| byte != PONG[(start + k) % PONG.len()]);
            assert!(!wrong, "not a PONG: {:?}", String::from_utf8_lossy(got));
            self.received += n;
            if n < buf.len() {
                break; // a short read emptied the receive queue
            }
        }
        self.received == want
    }
}

fn main() {
    // `cargo bench` passes `--bench`; the options are environment variables.
    let conns = env_or("PIPELINE_CONNS", 50);
    let per_batch = env_or("PIPELINE_BATCH", 100) as usize;
    let secs = env_or("PIPELINE_SECS", 5);
    let target = std::env::var("PIPELINE_TARGET").unwrap_or_else(|_| "tether".into());
    let server = Server::start(&target);
    let (pid, addr) = (server.pid, server.addr);

    let batch = PING.repeat(per_batch);
    let want = PONG.len() * per_batch;
    let mut poll = Poll::new().unwrap();
    let mut conns: Vec<Conn> = (0..conns)
        .map(|i| {
            let mut stream = identify(addr, i);
            let interest = Interest::READABLE | Interest::WRITABLE;
            poll.registry().register(&mut stream, Token(i as usize), interest).unwrap();
            Conn { stream, sent: 0, received: 0, busy: false }
        })
        .collect();
    println!(
        "pipeline: {target} (pid {pid}) on {addr}: {} connections, {per_batch} PINGs per write, {secs} s",
        conns.len()
    );

    let mut events = Events::with_capacity(1024);
    let mut buf = vec![0u8; 64 * 1024];
    let (mut batches, mut in_flight) = (0u64, 0usize);
    let (cpu_before, own_before, started) = (cpu_times(pid), own_cpu(), Instant::now());
    let deadline = started + Duration::from_secs(secs);
    for conn in &mut conns {
        conn.busy = true;
        conn.send(&batch);
        in_flight += 1;
    }
    while in_flight > 0 {
        poll.poll(&mut events, Some(Duration::from_secs(5))).unwrap();
        assert!(!events.is_empty(), "{in_flight} batches in flight and no answer for 5 s");
        let sending = Instant::now() < deadline;
        for event in events.iter() {
            let conn = &mut conns[event.token().0];
            if !conn.busy {
                continue;
            }
            conn.send(&batch);
            if !conn.receive(&mut buf, want) {
                continue;
            }
            batches += 1;
            (conn.sent, conn.received) = (0, 0);
            if sending {
                conn.send(&batch);
            } else {
                conn.busy = false;
                in_flight -= 1;
            }
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let cpu_after = cpu_times(pid);
    let [user, sys] = [0, 1].map(|i| cpu_after[i] - cpu_before[i]);
    let cpu = user + sys;
    let own = (own_cpu() - own_before).as_secs_f64();
    drop(server);

    let pings = batches * per_batch as u64;
    let per_s = pings as f64 / elapsed;
    let server_cpu = format!("{target} CPU");
    println!("  {:<14} {pings} in {elapsed:.2} s = {per_s:.0}/s ({:.0} batches/s)", "PINGs", batches as f64 / elapsed);
    println!(
        "  {server_cpu:<14} {cpu:.2} s ({:.0}% of one core) = {:.3} us per PING, {:.1} us per batch of {per_batch}",
        cpu * 100.0 / elapsed,
        cpu * 1e6 / pings as f64,
        cpu * 1e6 / batches as f64,
    );
    println!(
        "  {:<14} user {:.1} us + system {:.1} us per batch",
        "",
        user * 1e6 / batches as f64,
        sys * 1e6 / batches as f64
    );
    println!("  {:<14} {own:.2} s ({:.0}% of one core), on the same cores", "bench CPU", own * 100.0 / elapsed);
}
