//! A gateway running on a thread of the test process: the config tests
//! start from, the log records of each gateway (tests run in parallel in
//! one process, so each gets the records logged on its own thread), and
//! checks on the final counters.
//!
//! In-process, a test sees the gateway's [`Stats`] when it stops and its
//! debug log as it runs, and can connect before the loop starts
//! ([`Gateway::start_with`]); the real binary ([`super::process`]) is for
//! what only a process has (signals, exit status, file-descriptor limits).

use std::cell::RefCell;
use std::net::SocketAddr;
use std::sync::{Once, mpsc};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use tether::close::CloseReason;
use tether::reactor::Kind;
use tether::stats::Stats;
use tether::{Config, Exit, Handle};

use super::TIMEOUT;
use super::api::Api;
use super::client::Client;
use super::http::HttpClient;

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
    /// The TLS device listener, if `--device-tls-listen` is set.
    pub tls: Option<SocketAddr>,
    handle: Handle,
    thread: Option<JoinHandle<(Exit, Stats)>>,
    /// The gateway's log records (debug and up), as they are logged.
    log: mpsc::Receiver<String>,
}

impl Gateway {
    pub fn start(config: Config) -> Gateway {
        Gateway::start_with(config, |_| ()).0
    }

    /// Binds, calls `before_run` with the gateway (its addresses known, its
    /// loop not running yet), then runs the loop. Clients that connect in
    /// `before_run` are all waiting in the accept queue when the first turn
    /// begins, and their deadlines all start in that turn: a way to make a
    /// turn face many connections at once without racing the loop.
    pub fn start_with<T>(config: Config, before_run: impl FnOnce(&Gateway) -> T) -> (Gateway, T) {
        install_logger();
        tether::net::raise_fd_limit().unwrap();
        let mut reactor = tether::Gateway::bind(config).expect("bind");
        let addr = reactor.device_addr().unwrap();
        let http = reactor.http_addr().unwrap();
        let handle = reactor.handle();
        let (sink, log) = mpsc::channel();
        let tls = reactor.device_tls_addr();
        let mut gateway = Gateway { addr, http, tls, handle, thread: None, log };
        let prepared = before_run(&gateway);
        let thread = thread::Builder::new()
            .name(format!("gateway {addr}"))
            .spawn(move || {
                LOG_SINK.with(|s| *s.borrow_mut() = Some(sink));
                let exit = reactor.run().expect("run");
                (exit, reactor.stats().clone())
            })
            .unwrap();
        gateway.thread = Some(thread);
        (gateway, prepared)
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
        Client::identified(self.addr, mac)
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
