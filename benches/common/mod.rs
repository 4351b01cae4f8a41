//! What the benches share: the real `tether` binary on loopback ports,
//! the process figures read from `/proc`, a bounded blocking connection,
//! and numbers written for the tables.

#![allow(dead_code)] // each bench uses a different subset

use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The gateway binary, running with both listeners on free loopback ports.
pub struct Gateway {
    pub child: Child,
    pub pid: u32,
    pub devices: SocketAddr,
    pub http: SocketAddr,
}

impl Gateway {
    /// Starts `tether` with `args` after the loopback listeners, and waits
    /// until it logs both addresses (it is serving from then on). The
    /// binary is the one cargo built, or `TETHER_BIN` (to measure another
    /// build the same way).
    pub fn start(args: &[&str]) -> Gateway {
        let bin = std::env::var("TETHER_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_tether").to_string());
        let mut child = Command::new(bin)
            .args(["--device-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0", "--stats-interval", "0"])
            .args(args)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn tether");
        let mut log = BufReader::new(child.stderr.take().unwrap());
        let (mut devices, mut http) = (None, None);
        while devices.is_none() || http.is_none() {
            let mut line = String::new();
            assert!(log.read_line(&mut line).unwrap() > 0, "tether exited");
            let addr = |prefix: &str| -> Option<SocketAddr> {
                line.split(prefix).nth(1)?.split([' ', ',']).next()?.trim().parse().ok()
            };
            devices = devices.or(addr("devices: listening on "));
            http = http.or(addr("http: listening on "));
        }
        // Keep draining the log so the gateway never blocks on stderr.
        std::thread::spawn(move || std::io::copy(&mut log, &mut std::io::sink()));
        Gateway { pid: child.id(), child, devices: devices.unwrap(), http: http.unwrap() }
    }

    /// Resident set size, from `/proc/<pid>/status` (kB granularity).
    pub fn rss_bytes(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid)).unwrap();
        let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
        line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 1024
    }

    /// User + system CPU time in clock ticks, from `/proc/<pid>/stat`.
    pub fn cpu_ticks(&self) -> u64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid)).unwrap();
        // Fields after the parenthesised command name; utime and stime are
        // the 14th and 15th fields of the whole line.
        let rest = &stat[stat.rfind(')').unwrap() + 2..];
        let fields: Vec<&str> = rest.split_whitespace().collect();
        fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Reads exactly `want.len()` bytes and asserts they are `want`.
pub fn expect(s: &mut TcpStream, want: &[u8]) {
    let mut got = vec![0; want.len()];
    s.read_exact(&mut got).expect("read reply");
    assert_eq!(got, want);
}

/// A blocking loopback connection whose connect, reads and writes each
/// give up after `timeout`, without Nagle's delay.
pub fn connect(addr: SocketAddr, timeout: Duration) -> Result<TcpStream, String> {
    let s = TcpStream::connect_timeout(&addr, timeout).map_err(|e| format!("connect {addr}: {e}"))?;
    s.set_read_timeout(Some(timeout)).map_err(|e| e.to_string())?;
    s.set_write_timeout(Some(timeout)).map_err(|e| e.to_string())?;
    s.set_nodelay(true).map_err(|e| e.to_string())?;
    Ok(s)
}

/// `1234567` as `1,234,567`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}
