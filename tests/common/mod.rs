//! Shared helpers for the integration tests: a gateway running in a thread
//! of the test process, a gateway running as the real binary, a raw TCP
//! client that asserts exact bytes, a raw HTTP/1.1 client ([`HttpClient`])
//! for what a client library hides (exact response bytes, pipelining,
//! malformed requests, event streams), a real HTTP client ([`Api`], on
//! `ureq`), and matchers for JSON with timestamps ([`assert_like`]) and for
//! Prometheus text ([`metric`]).
//!
//! Waiting is always a read with a timeout (or a channel receive with one),
//! never a sleep: a test waits exactly as long as the gateway needs, and a
//! broken gateway fails the test after `TIMEOUT` instead of hanging it.
//! When no client can observe an event yet (kernel buffers hide it), a test
//! waits for the gateway's log line instead: `Gateway::expect_log` for one
//! in-process (each gets the records logged on its own thread),
//! `Process::expect_log` for the binary.

#![allow(dead_code)] // each test file uses a different subset

use std::cell::RefCell;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Once, mpsc};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use tether::close::CloseReason;
use tether::reactor::Kind;
use tether::stats::Stats;
use tether::{Config, Exit, Handle};

/// How long any single wait may take before the test fails.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// A config for tests: loopback, port 0, and the production defaults but
/// a short linger, so that stopping a gateway whose test clients are still
/// connected does not wait the full two seconds for them.
pub fn config() -> Config {
    Config {
        device_listen: "127.0.0.1:0".parse().unwrap(),
        http_listen: "127.0.0.1:0".parse().unwrap(),
        stats_interval: Duration::ZERO,
        linger_timeout: Duration::from_millis(200),
        ..Config::default()
    }
}

/// A valid MAC address unique to `n`, spelled upper-case with `:`.
pub fn mac(n: u32) -> String {
    let [a, b, c, d] = n.to_be_bytes();
    format!("02:00:{a:02X}:{b:02X}:{c:02X}:{d:02X}")
}

/// A coordinate as the gateway's JSON writes it: `3` is `3.0`.
pub fn num(text: &str) -> String {
    serde_json::to_string(&text.parse::<f64>().expect("a number")).unwrap()
}

/// Device connections closed for `reason`.
pub fn closed(stats: &Stats, reason: CloseReason) -> u64 {
    stats.closed(Kind::Device, reason)
}

/// The stats invariant once every connection is gone: each accepted socket
/// was closed for exactly one reason.
pub fn assert_all_closed(stats: &Stats) {
    for kind in Kind::ALL {
        let accepted = stats.accepted[kind as usize];
        assert_eq!(accepted, stats.closed_total(kind), "{kind:?}: accepted != sum(closed): {stats:?}");
    }
}

thread_local! {
    /// Where the log records of the gateway running on this thread go.
    static LOG_SINK: RefCell<Option<mpsc::Sender<String>>> = const { RefCell::new(None) };
}

/// The test binary's logger. Tests run in parallel in one process, so each
/// in-process gateway gets the records logged on its own thread (debug
/// level and up) through [`Gateway::expect_log`]; info and up are also
/// printed, which the test harness shows for a failing test.
struct TestLogger;

impl log::Log for TestLogger {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        metadata.level() <= log::Level::Debug
    }

    fn log(&self, record: &log::Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        LOG_SINK.with(|sink| {
            if let Some(sink) = &*sink.borrow() {
                let _ = sink.send(format!("{} {}: {}", record.level(), record.target(), record.args()));
            }
        });
        if record.level() <= log::Level::Info {
            println!("[{} {}] {}", record.level(), record.target(), record.args());
        }
    }

    fn flush(&self) {}
}

fn install_logger() {
    static LOGGER: TestLogger = TestLogger;
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        log::set_logger(&LOGGER).expect("no other logger");
        log::set_max_level(log::LevelFilter::Debug);
    });
}

/// A gateway running on a thread of the test process.
pub struct Gateway {
    /// The device listener.
    pub addr: SocketAddr,
    /// The HTTP API listener.
    pub http: SocketAddr,
    handle: Handle,
    thread: Option<JoinHandle<(Exit, Stats)>>,
    /// The gateway's log records (debug and up), as they are logged.
    log: mpsc::Receiver<String>,
}

impl Gateway {
    pub fn start(config: Config) -> Gateway {
        install_logger();
        tether::net::raise_fd_limit().unwrap();
        let mut reactor = tether::Gateway::bind(config).expect("bind");
        let addr = reactor.device_addr().unwrap();
        let http = reactor.http_addr().unwrap();
        let handle = reactor.handle();
        let (sink, log) = mpsc::channel();
        let thread = thread::Builder::new()
            .name(format!("gateway {addr}"))
            .spawn(move || {
                LOG_SINK.with(|s| *s.borrow_mut() = Some(sink));
                let exit = reactor.run().expect("run");
                (exit, reactor.stats().clone())
            })
            .unwrap();
        Gateway { addr, http, handle, thread: Some(thread), log }
    }

    /// Waits for a log record of this gateway containing `needle`; returns it.
    /// For waiting on an event that no client can observe yet.
    pub fn expect_log(&self, needle: &str) -> String {
        loop {
            let line = self.log.recv_timeout(TIMEOUT).unwrap_or_else(|_| panic!("no log line with {needle:?}"));
            if line.contains(needle) {
                return line;
            }
        }
    }

    pub fn connect(&self) -> Client {
        Client::connect(self.addr)
    }

    /// A connected client that has identified as `mac` and read its `OK`.
    pub fn device(&self, mac: &str) -> Client {
        let mut client = self.connect();
        client.identify(mac);
        client
    }

    /// A raw HTTP connection to the API.
    pub fn http_client(&self) -> HttpClient {
        HttpClient::connect(self.http)
    }

    /// A real HTTP client (one `ureq` agent, so one pool of connections).
    pub fn api(&self) -> Api {
        Api::new(self.http)
    }

    /// `GET /metrics` on a connection of its own; the Prometheus text.
    pub fn metrics(&self) -> String {
        let mut client = self.http_client();
        let response = client.get_closing("/metrics");
        assert_eq!(response.status, 200, "{}", response.raw());
        String::from_utf8(response.body).unwrap()
    }

    /// Asks for a graceful stop without waiting for it: the drain begins.
    pub fn begin_stop(&self) {
        self.handle.shutdown();
    }

    /// Waits for the loop to end (after [`Gateway::begin_stop`]); how it
    /// ended and the final counters.
    pub fn wait_stopped(mut self) -> (Exit, Stats) {
        self.join()
    }

    /// Asks for a graceful stop and returns how the loop ended and the final
    /// counters.
    pub fn stop(mut self) -> (Exit, Stats) {
        self.handle.shutdown();
        self.join()
    }

    /// Stops gracefully and asserts the drain completed with every accepted
    /// connection accounted for; returns the final counters.
    pub fn stop_drained(self) -> Stats {
        let (exit, stats) = self.stop();
        assert_eq!(exit, Exit::Drained, "{stats:?}");
        assert_all_closed(&stats);
        stats
    }

    fn join(&mut self) -> (Exit, Stats) {
        let thread = self.thread.take().expect("joined once");
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            let _ = tx.send(thread.join());
        });
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
        Client::from_stream(TcpStream::connect(addr).expect("connect"))
    }

    /// Connects with `SO_RCVBUF` set to `bytes` before the handshake (so the
    /// advertised window stays small), for a client that reads slowly.
    pub fn connect_with_recv_buffer(addr: SocketAddr, bytes: usize) -> Client {
        use socket2::{Domain, Protocol, Socket, Type};
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP)).unwrap();
        socket.set_recv_buffer_size(bytes).unwrap();
        socket.connect(&addr.into()).expect("connect");
        Client::from_stream(socket.into())
    }

    fn from_stream(stream: TcpStream) -> Client {
        stream.set_read_timeout(Some(TIMEOUT)).unwrap();
        stream.set_nodelay(true).unwrap();
        Client { stream }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("send");
    }

    /// Sends `IDENTIFY:<mac>` and expects `OK`.
    pub fn identify(&mut self, mac: &str) {
        self.send(format!("IDENTIFY:{mac}\n").as_bytes());
        self.expect(b"OK\n");
    }

    /// Reads exactly `expected.len()` bytes and asserts they are `expected`.
    pub fn expect(&mut self, expected: &[u8]) {
        self.expect_within(expected, TIMEOUT);
    }

    /// Like [`Client::expect`], but fails unless all of `expected` has
    /// arrived within `window` (for events that must not come late).
    pub fn expect_within(&mut self, expected: &[u8], window: Duration) {
        let deadline = Instant::now() + window;
        let mut got = Vec::with_capacity(expected.len());
        let mut buf = vec![0; expected.len()];
        while got.len() < expected.len() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                panic!(
                    "waiting for {:?}: not there within {window:?}, got {:?}",
                    String::from_utf8_lossy(expected),
                    String::from_utf8_lossy(&got)
                );
            }
            self.stream.set_read_timeout(Some(left)).unwrap();
            match self.stream.read(&mut buf[..expected.len() - got.len()]) {
                Ok(0) => panic!(
                    "waiting for {:?}: end of file after {:?}",
                    String::from_utf8_lossy(expected),
                    String::from_utf8_lossy(&got)
                ),
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => panic!(
                    "waiting for {:?}: {e} after {:?}",
                    String::from_utf8_lossy(expected),
                    String::from_utf8_lossy(&got)
                ),
            }
        }
        self.stream.set_read_timeout(Some(TIMEOUT)).unwrap();
        assert_eq!(String::from_utf8_lossy(&got), String::from_utf8_lossy(expected));
    }

    /// Reads one line, terminator included.
    pub fn read_line(&mut self) -> String {
        let mut line = Vec::new();
        let mut byte = [0u8];
        while line.last() != Some(&b'\n') {
            match self.stream.read(&mut byte) {
                Ok(0) => panic!("end of file inside a line after {:?}", String::from_utf8_lossy(&line)),
                Ok(_) => line.push(byte[0]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => panic!("reading a line: {e} after {:?}", String::from_utf8_lossy(&line)),
            }
        }
        String::from_utf8_lossy(&line).into_owned()
    }

    /// Reads everything up to end of file (each read bounded by `TIMEOUT`).
    pub fn read_to_eof(&mut self) -> Vec<u8> {
        let mut all = Vec::new();
        if let Err(e) = self.stream.read_to_end(&mut all) {
            panic!("reading to end of file: {e} after {} bytes", all.len());
        }
        all
    }

    /// Asserts the gateway closed the connection: end of file (or a reset)
    /// with no further bytes.
    pub fn expect_eof(&mut self) {
        assert_eof(&mut self.stream);
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

    /// Asserts nothing has arrived so far and the connection is not closed
    /// (a non-blocking read), without waiting.
    pub fn expect_nothing_yet(&mut self) {
        self.stream.set_nonblocking(true).unwrap();
        let mut byte = [0u8; 64];
        let result = self.stream.read(&mut byte);
        self.stream.set_nonblocking(false).unwrap();
        match result {
            Ok(0) => panic!("expected nothing yet, the connection was closed"),
            Ok(n) => panic!("expected nothing yet, got {:?}", String::from_utf8_lossy(&byte[..n])),
            Err(e) => assert_eq!(e.kind(), io::ErrorKind::WouldBlock, "expected nothing yet: {e}"),
        }
    }
}

/// The `tether` binary, for runs that are not a gateway (`--help`, bad flags).
pub fn tether_command() -> Command {
    Command::new(env!("CARGO_BIN_EXE_tether"))
}

/// The `tether` binary running as a child process.
pub struct Process {
    pid: i32,
    pub addr: SocketAddr,
    /// The HTTP API's address.
    pub http: SocketAddr,
    /// The log line naming the address (it also gives the connection cap).
    pub banner: String,
    /// The log lines after the banner, as they arrive.
    pub log: mpsc::Receiver<String>,
    /// The exit status, sent by a thread that waits on the child.
    exit: mpsc::Receiver<ExitStatus>,
    exited: bool,
}

impl Process {
    /// Starts the binary with `args` (the device address is forced to a free
    /// loopback port). `limit` sets its RLIMIT_NOFILE, soft and hard.
    pub fn start(args: &[&str], limit: Option<u64>) -> Process {
        Process::start_with_env(args, &[], limit)
    }

    /// Like [`Process::start`], with extra environment variables.
    pub fn start_with_env(args: &[&str], env: &[(&str, &str)], limit: Option<u64>) -> Process {
        let mut command = tether_command();
        command
            .args(["--device-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0", "--stats-interval", "0"])
            .args(args)
            .envs(env.iter().copied())
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
        let (addr, banner) = loop {
            let line = log.recv_timeout(TIMEOUT).expect("tether printed no listening address");
            if let Some(rest) = line.split("devices: listening on ").nth(1) {
                break (rest.split_whitespace().next().unwrap().parse().unwrap(), line);
            }
        };
        // The HTTP banner comes right after the devices one.
        let http = loop {
            let line = log.recv_timeout(TIMEOUT).expect("tether printed no HTTP address");
            if let Some(rest) = line.split("http: listening on ").nth(1) {
                break rest.split([',', ' ']).next().unwrap().parse().unwrap();
            }
        };
        Process { pid, addr, http, banner, log, exit, exited: false }
    }

    pub fn connect(&self) -> Client {
        Client::connect(self.addr)
    }

    /// A connected client that has identified as `mac` and read its `OK`.
    /// Once it returns, the event loop is running (and watching signals).
    pub fn device(&self, mac: &str) -> Client {
        let mut client = self.connect();
        client.identify(mac);
        client
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

    /// The file descriptors the process has open, by number.
    pub fn open_fds(&self) -> Vec<usize> {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid))
            .expect("read /proc/<pid>/fd")
            .map(|entry| entry.unwrap().file_name().to_str().unwrap().parse().unwrap())
            .collect()
    }

    /// The process's command line, arguments separated by spaces.
    pub fn cmdline(&self) -> String {
        let raw = std::fs::read(format!("/proc/{}/cmdline", self.pid)).expect("read /proc/<pid>/cmdline");
        String::from_utf8_lossy(&raw).replace('\0', " ")
    }

    /// CPU time (user + system) the process has used so far.
    pub fn cpu_time(&self) -> Duration {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid)).expect("read /proc/<pid>/stat");
        // The fields after the command name (which may hold spaces) start
        // with the state, field 3; utime and stime are fields 14 and 15.
        let fields: Vec<&str> = stat.rsplit_once(')').expect("stat format").1.split_whitespace().collect();
        let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
        // SAFETY: sysconf has no memory-safety preconditions.
        let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
        Duration::from_millis(ticks * 1000 / per_second)
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

/// One HTTP response as read off the wire.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    pub status: u16,
    /// The status line and headers, blank line included, exactly as sent.
    pub head: String,
    /// The headers in order, names as sent.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// The value of the header `name` (compared case-insensitively).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> &str {
        std::str::from_utf8(&self.body).expect("a UTF-8 body")
    }

    /// Head and body, as they came.
    pub fn raw(&self) -> String {
        format!("{}{}", self.head, String::from_utf8_lossy(&self.body))
    }
}

/// The exact head of a JSON response with `body`, as the gateway writes it
/// with the default CORS origin (`extra` headers go after it).
pub fn json_head(status: &str, body: &str, extra: &[&str], close: bool) -> String {
    let mut head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
         Cache-Control: no-store\r\nAccess-Control-Allow-Origin: *\r\n",
        body.len()
    );
    for header in extra {
        head.push_str(header);
        head.push_str("\r\n");
    }
    if close {
        head.push_str("Connection: close\r\n");
    }
    head.push_str("\r\n");
    head
}

/// The exact bytes of a JSON response (see [`json_head`]).
pub fn json_response(status: &str, body: &str, extra: &[&str], close: bool) -> String {
    json_head(status, body, extra, close) + body
}

/// The head of an event stream, then its `retry:` line.
pub const STREAM_START: &str = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n\
     Access-Control-Allow-Origin: *\r\nX-Accel-Buffering: no\r\nConnection: close\r\n\r\nretry: 3000\n\n";

/// A raw HTTP/1.1 client on one TCP connection. It keeps what it has
/// received and not yet consumed, so responses, event frames and exact
/// bytes can be read one after another on one socket.
pub struct HttpClient {
    pub stream: TcpStream,
    buf: Vec<u8>,
}

impl HttpClient {
    pub fn connect(addr: SocketAddr) -> HttpClient {
        HttpClient { stream: Client::connect(addr).stream, buf: Vec::new() }
    }

    /// Connects with a small `SO_RCVBUF`, for a client that reads slowly.
    pub fn connect_with_recv_buffer(addr: SocketAddr, bytes: usize) -> HttpClient {
        HttpClient { stream: Client::connect_with_recv_buffer(addr, bytes).stream, buf: Vec::new() }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("send");
    }

    /// Sends `GET <target>` (keep-alive) and reads the response.
    pub fn get(&mut self, target: &str) -> HttpResponse {
        self.send(format!("GET {target} HTTP/1.1\r\nHost: tether\r\n\r\n").as_bytes());
        self.read_response()
    }

    /// Sends `GET <target>` with `Connection: close` and reads the response.
    pub fn get_closing(&mut self, target: &str) -> HttpResponse {
        self.send(format!("GET {target} HTTP/1.1\r\nHost: tether\r\nConnection: close\r\n\r\n").as_bytes());
        self.read_response()
    }

    /// One read into the buffer; false at end of file.
    fn fill(&mut self, what: &str) -> bool {
        let mut chunk = vec![0u8; 64 * 1024];
        loop {
            match self.stream.read(&mut chunk) {
                Ok(0) => return false,
                Ok(n) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    return true;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => panic!("waiting for {what}: {e} after {:?}", String::from_utf8_lossy(&self.buf)),
            }
        }
    }

    /// Reads up to and including `delim`.
    fn read_until(&mut self, delim: &[u8], what: &str) -> Vec<u8> {
        let mut from = 0;
        loop {
            if let Some(i) = self.buf[from..].windows(delim.len()).position(|w| w == delim) {
                return self.buf.drain(..from + i + delim.len()).collect();
            }
            from = self.buf.len().saturating_sub(delim.len() - 1);
            if !self.fill(what) {
                panic!("waiting for {what}: end of file after {:?}", String::from_utf8_lossy(&self.buf));
            }
        }
    }

    /// Reads exactly `n` bytes.
    pub fn read_n(&mut self, n: usize, what: &str) -> Vec<u8> {
        while self.buf.len() < n {
            if !self.fill(what) {
                panic!("waiting for {what}: end of file after {:?}", String::from_utf8_lossy(&self.buf));
            }
        }
        self.buf.drain(..n).collect()
    }

    /// Reads a response's status line and headers (not its body: for HEAD).
    pub fn read_response_head(&mut self) -> HttpResponse {
        let head = String::from_utf8(self.read_until(b"\r\n\r\n", "a response head")).expect("a UTF-8 head");
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap();
        let status = status_line
            .strip_prefix("HTTP/1.1 ")
            .and_then(|rest| rest.get(..3))
            .and_then(|code| code.parse().ok())
            .unwrap_or_else(|| panic!("not a status line: {status_line:?}"));
        let headers = lines
            .filter(|l| !l.is_empty())
            .map(|l| {
                let (name, value) = l.split_once(": ").unwrap_or_else(|| panic!("not a header: {l:?}"));
                (name.to_string(), value.to_string())
            })
            .collect();
        HttpResponse { status, head, headers, body: Vec::new() }
    }

    /// Reads a whole response: the head, then `Content-Length` bytes of body
    /// (none for 1xx and 204; an event stream's body is left to read).
    pub fn read_response(&mut self) -> HttpResponse {
        let mut response = self.read_response_head();
        if response.status >= 200 && response.status != 204 {
            if let Some(len) = response.header("Content-Length") {
                let len: usize = len.parse().expect("a numeric Content-Length");
                response.body = self.read_n(len, "a response body");
            }
        }
        response
    }

    /// Reads exactly `expected.len()` bytes and asserts they are `expected`.
    pub fn expect(&mut self, expected: &[u8]) {
        let got = self.read_n(expected.len(), &String::from_utf8_lossy(expected));
        assert_eq!(String::from_utf8_lossy(&got), String::from_utf8_lossy(expected));
    }

    /// Reads one Server-Sent Events frame (or comment), up to and including
    /// its blank line.
    pub fn read_event(&mut self) -> String {
        String::from_utf8(self.read_until(b"\n\n", "an event")).expect("a UTF-8 event")
    }

    /// Reads everything up to end of file (each read bounded by `TIMEOUT`).
    pub fn read_to_eof(&mut self) -> Vec<u8> {
        let mut all = std::mem::take(&mut self.buf);
        if let Err(e) = self.stream.read_to_end(&mut all) {
            panic!("reading to end of file: {e} after {} bytes", all.len());
        }
        all
    }

    /// Asserts the gateway closed the connection with nothing more to say.
    pub fn expect_eof(&mut self) {
        assert!(self.buf.is_empty(), "expected end of file, got {:?}", String::from_utf8_lossy(&self.buf));
        assert_eof(&mut self.stream);
    }

    /// Asserts nothing arrives for `window` and the connection stays open.
    pub fn expect_silence(&mut self, window: Duration) {
        assert!(self.buf.is_empty(), "expected silence, got {:?}", String::from_utf8_lossy(&self.buf));
        self.stream.set_read_timeout(Some(window)).unwrap();
        let mut byte = [0u8; 256];
        let result = self.stream.read(&mut byte);
        self.stream.set_read_timeout(Some(TIMEOUT)).unwrap();
        match result {
            Ok(0) => panic!("expected silence, the connection was closed"),
            Ok(n) => panic!("expected silence, got {:?}", String::from_utf8_lossy(&byte[..n])),
            Err(e) => assert!(
                matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut),
                "expected silence: {e}"
            ),
        }
    }
}

/// A response from the real HTTP client.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: ureq::http::HeaderMap,
    pub body: String,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().expect("an ASCII header"))
    }
}

/// A real HTTP client: one `ureq` agent (with its pool of keep-alive
/// connections) that returns 4xx and 5xx answers instead of failing.
pub struct Api {
    agent: ureq::Agent,
    base: String,
}

impl Api {
    pub fn new(addr: SocketAddr) -> Api {
        let config = ureq::Agent::config_builder().http_status_as_error(false).timeout_global(Some(TIMEOUT)).build();
        Api { agent: config.into(), base: format!("http://{addr}") }
    }

    pub fn get(&self, path: &str) -> Reply {
        self.call("GET", path, &[], None)
    }

    pub fn post(&self, path: &str, body: &str) -> Reply {
        self.call("POST", path, &[], Some(body.as_bytes()))
    }

    /// Any method, with extra headers and an optional body.
    pub fn call(&self, method: &str, path: &str, headers: &[(&str, &str)], body: Option<&[u8]>) -> Reply {
        let mut request = ureq::http::Request::builder().method(method).uri(format!("{}{path}", self.base));
        for &(name, value) in headers {
            request = request.header(name, value);
        }
        let result = match body {
            None => self.agent.run(request.body(()).unwrap()),
            Some(body) => self.agent.run(request.body(body).unwrap()),
        };
        let mut response = result.unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let body = response.body_mut().read_to_string().unwrap_or_else(|e| panic!("{method} {path}: body: {e}"));
        Reply { status: response.status().as_u16(), headers: response.headers().clone(), body }
    }
}

/// The value of one Prometheus sample, `series` written as in the text
/// (`name` or `name{label="value",...}`).
pub fn metric(text: &str, series: &str) -> f64 {
    let line = text
        .lines()
        .find(|l| l.strip_prefix(series).is_some_and(|rest| rest.starts_with(' ')))
        .unwrap_or_else(|| panic!("no sample {series:?} in\n{text}"));
    let value = &line[series.len() + 1..];
    value.parse().unwrap_or_else(|_| panic!("not a number: {line:?}"))
}

/// Asserts `got` is `template`, where the template may hold placeholders:
/// `<TIME>` (an RFC 3339 UTC time in milliseconds, within two minutes of
/// now), `<PEER>` (`127.0.0.1:<port>`), `<INT>` (digits).
pub fn assert_like(got: &str, template: &str) {
    if let Err(why) = like(got, template) {
        panic!("{why}\n     got: {got}\ntemplate: {template}");
    }
}

fn like(got: &str, template: &str) -> Result<(), String> {
    const TOKENS: [&str; 3] = ["<TIME>", "<PEER>", "<INT>"];
    let (mut g, mut t) = (got, template);
    loop {
        let next = TOKENS.iter().filter_map(|tok| t.find(tok).map(|i| (i, *tok))).min();
        let Some((i, token)) = next else {
            return if g == t { Ok(()) } else { Err(format!("expected {t:?}, got {g:?}")) };
        };
        let literal = &t[..i];
        let Some(rest) = g.strip_prefix(literal) else {
            return Err(format!("expected {literal:?}, got {g:?}"));
        };
        g = rest;
        t = &t[i + token.len()..];
        let digits = |s: &str| s.bytes().take_while(u8::is_ascii_digit).count();
        let used = match token {
            "<INT>" => digits(g),
            "<PEER>" => match g.strip_prefix("127.0.0.1:") {
                Some(port) if digits(port) > 0 => "127.0.0.1:".len() + digits(port),
                _ => 0,
            },
            _ => check_time(g)?,
        };
        if used == 0 {
            return Err(format!("expected {token}, got {g:?}"));
        }
        g = &g[used..];
    }
}

/// Checks `text` starts with `YYYY-MM-DDTHH:MM:SS.mmmZ` close to now.
fn check_time(text: &str) -> Result<usize, String> {
    let bad = || format!("expected a time like 2025-01-31T12:34:56.789Z, got {text:?}");
    let t = text.get(..24).ok_or_else(bad)?.as_bytes();
    let shape = b"dddd-dd-ddTdd:dd:dd.dddZ";
    if !t.iter().zip(shape).all(|(&c, &s)| if s == b'd' { c.is_ascii_digit() } else { c == s }) {
        return Err(bad());
    }
    let n = |from: usize, to: usize| std::str::from_utf8(&t[from..to]).unwrap().parse::<i64>().unwrap();
    let (y, m, d) = (n(0, 4), n(5, 7), n(8, 10));
    // Days from 1970-01-01 to y-m-d (Howard Hinnant's days_from_civil).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + n(11, 13) * 3600 + n(14, 16) * 60 + n(17, 19);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    if (now - secs).abs() > 120 {
        return Err(format!("{} is not close to now", String::from_utf8_lossy(t)));
    }
    Ok(24)
}

/// Asserts the peer closed `stream`: end of file (or a reset) with no
/// further bytes.
fn assert_eof(stream: &mut TcpStream) {
    let mut byte = [0u8; 256];
    match stream.read(&mut byte) {
        Ok(0) => {}
        Ok(n) => panic!("expected end of file, got {:?}", String::from_utf8_lossy(&byte[..n])),
        Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {}
        Err(e) => panic!("expected end of file: {e}"),
    }
}
