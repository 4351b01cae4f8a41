//! Shared helpers for the integration tests: a gateway running in a thread
//! of the test process, a gateway running as the real binary, and a raw TCP
//! client that asserts exact bytes.
//!
//! Waiting is always a read with a timeout (or a channel receive with one),
//! never a sleep: a test waits exactly as long as the gateway needs, and a
//! broken gateway fails the test after `TIMEOUT` instead of hanging it.

#![allow(dead_code)] // each test file uses a different subset

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use tether::stats::Stats;
use tether::{Config, Exit, Handle, Reactor};

/// How long any single wait may take before the test fails.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// A config for tests: loopback, port 0, and the production defaults but
/// a short linger, so that stopping a gateway whose test clients are still
/// connected does not wait the full two seconds for them.
pub fn config() -> Config {
    let mut config = Config::default();
    config.device_listen = "127.0.0.1:0".parse().unwrap();
    config.http_listen = "127.0.0.1:0".parse().unwrap();
    config.stats_interval = Duration::ZERO;
    config.linger_timeout = Duration::from_millis(200);
    config
}

/// A gateway running on a thread of the test process.
pub struct Gateway {
    pub addr: SocketAddr,
    handle: Handle,
    thread: Option<JoinHandle<(Exit, Stats)>>,
}

impl Gateway {
    pub fn start(config: Config) -> Gateway {
        let _ = env_logger::builder().is_test(true).try_init();
        tether::net::raise_fd_limit().unwrap();
        let mut reactor = Reactor::bind(config).expect("bind");
        let addr = reactor.device_addr().unwrap();
        let handle = reactor.handle();
        let thread = thread::spawn(move || {
            let exit = reactor.run().expect("run");
            (exit, reactor.stats().clone())
        });
        Gateway { addr, handle, thread: Some(thread) }
    }

    pub fn connect(&self) -> Client {
        Client::connect(self.addr)
    }

    /// A connected client that has identified as `mac` and read its `OK`.
    pub fn device(&self, mac: &str) -> Client {
        let mut client = self.connect();
        client.send(format!("IDENTIFY:{mac}\n").as_bytes());
        client.expect(b"OK\n");
        client
    }

    /// Asks for a graceful stop and returns how the loop ended and the final
    /// counters.
    pub fn stop(mut self) -> (Exit, Stats) {
        self.handle.shutdown();
        self.join()
    }

    fn join(&mut self) -> (Exit, Stats) {
        let thread = self.thread.take().expect("joined once");
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || tx.send(thread.join()));
        rx.recv_timeout(TIMEOUT).expect("gateway did not stop in time").expect("gateway thread panicked")
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if self.thread.is_some() {
            // Two requests: drain, then exit at once.
            self.handle.shutdown();
            self.handle.shutdown();
            if !thread::panicking() {
                self.join();
            }
        }
    }
}

/// A raw TCP client with a read timeout.
pub struct Client {
    pub stream: TcpStream,
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).expect("connect");
        stream.set_read_timeout(Some(TIMEOUT)).unwrap();
        stream.set_nodelay(true).unwrap();
        Client { stream }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("send");
    }

    /// Reads exactly `expected.len()` bytes and asserts they are `expected`.
    pub fn expect(&mut self, expected: &[u8]) {
        let mut got = vec![0; expected.len()];
        if let Err(e) = self.stream.read_exact(&mut got) {
            panic!("waiting for {:?}: {e}", String::from_utf8_lossy(expected));
        }
        assert_eq!(String::from_utf8_lossy(&got), String::from_utf8_lossy(expected));
    }

    /// Asserts the gateway closed the connection: end of file (or a reset)
    /// with no further bytes.
    pub fn expect_eof(&mut self) {
        let mut byte = [0u8; 64];
        match self.stream.read(&mut byte) {
            Ok(0) => {}
            Ok(n) => panic!("expected end of file, got {:?}", String::from_utf8_lossy(&byte[..n])),
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {}
            Err(e) => panic!("expected end of file: {e}"),
        }
    }

    /// Asserts nothing arrives for `window` (a read that times out).
    pub fn expect_silence(&mut self, window: Duration) {
        self.stream.set_read_timeout(Some(window)).unwrap();
        let mut byte = [0u8; 64];
        match self.stream.read(&mut byte) {
            Ok(0) => panic!("expected silence, the connection was closed"),
            Ok(n) => panic!("expected silence, got {:?}", String::from_utf8_lossy(&byte[..n])),
            Err(e) => assert!(
                matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut),
                "expected silence: {e}"
            ),
        }
        self.stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    }
}

/// The `tether` binary running as a child process.
pub struct Process {
    pid: i32,
    pub addr: SocketAddr,
    /// The log lines after the one naming the address, as they arrive.
    pub log: mpsc::Receiver<String>,
    /// The exit status, sent by a thread that waits on the child.
    exit: mpsc::Receiver<ExitStatus>,
    exited: bool,
}

impl Process {
    /// Starts the binary with `args` (the device address is forced to a free
    /// loopback port). `limit` sets its RLIMIT_NOFILE, soft and hard.
    pub fn start(args: &[&str], limit: Option<u64>) -> Process {
        let mut command = Command::new(env!("CARGO_BIN_EXE_tether"));
        command
            .args(["--device-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0", "--stats-interval", "0"])
            .args(args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if let Some(limit) = limit {
            use std::os::unix::process::CommandExt;
            // SAFETY: setrlimit is async-signal-safe; the closure touches
            // nothing else between fork and exec.
            unsafe {
                command.pre_exec(move || {
                    let rl = libc::rlimit { rlim_cur: limit, rlim_max: limit };
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &rl) != 0 {
                        return Err(io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let mut child: Child = command.spawn().expect("spawn tether");
        let pid = child.id() as i32;
        let stderr = BufReader::new(child.stderr.take().unwrap());
        let (exit_tx, exit) = mpsc::channel();
        thread::spawn(move || exit_tx.send(child.wait().expect("wait")));
        let (tx, log) = mpsc::channel();
        thread::spawn(move || {
            for line in stderr.lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let addr = loop {
            let line = log.recv_timeout(TIMEOUT).expect("tether printed no listening address");
            if let Some(rest) = line.split("devices: listening on ").nth(1) {
                break rest.split_whitespace().next().unwrap().parse().unwrap();
            }
        };
        Process { pid, addr, log, exit, exited: false }
    }

    pub fn connect(&self) -> Client {
        Client::connect(self.addr)
    }

    pub fn signal(&self, signal: i32) {
        // SAFETY: kill has no memory-safety preconditions.
        let rc = unsafe { libc::kill(self.pid, signal) };
        assert_eq!(rc, 0, "kill: {}", io::Error::last_os_error());
    }

    /// Waits for the process to exit, failing the test after `TIMEOUT`.
    pub fn wait(&mut self) -> ExitStatus {
        let status = self.exit.recv_timeout(TIMEOUT).expect("tether did not exit in time");
        self.exited = true;
        status
    }

    /// Waits for a log line containing `needle`; returns it.
    pub fn expect_log(&self, needle: &str) -> String {
        loop {
            let line = self.log.recv_timeout(TIMEOUT).unwrap_or_else(|_| panic!("no log line with {needle:?}"));
            if line.contains(needle) {
                return line;
            }
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if !self.exited {
            // SAFETY: kill has no memory-safety preconditions; the waiter
            // thread reaps the child.
            unsafe { libc::kill(self.pid, libc::SIGKILL) };
        }
    }
}
