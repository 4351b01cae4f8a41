//! The little of a test harness these tests need: a gateway running on a
//! thread of the test process, on loopback, and [`require`] for a program
//! beyond the toolchain. The gateway's own tests have a fuller harness in
//! the root's `tests/common`; this package keeps its own gateway harness,
//! and shares that harness's `require.rs` (one rule for skipping, one
//! file).

// Each test file uses a different part.
#![allow(dead_code)]

#[path = "../../../tests/common/require.rs"]
pub mod require;

use std::net::SocketAddr;
use std::sync::mpsc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use tether::close::CloseReason;
use tether::reactor::Kind;
use tether::stats::Stats;
use tether::{Config, Exit, Handle};

/// Longest a gateway may take to stop.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// A gateway running on a thread of the test process.
pub struct Gateway {
    /// The device listener.
    pub addr: SocketAddr,
    /// The TLS device listener, with `--device-tls-listen`.
    pub tls: Option<SocketAddr>,
    handle: Handle,
    thread: Option<JoinHandle<(Exit, Stats)>>,
}

impl Gateway {
    pub fn start(config: Config) -> Gateway {
        tether::net::raise_fd_limit().expect("raise the fd limit");
        let mut gateway = tether::Gateway::bind(config).expect("bind");
        let addr = gateway.device_addr().expect("device address");
        let tls = gateway.device_tls_addr();
        let handle = gateway.handle();
        let thread = thread::Builder::new()
            .name(format!("gateway {addr}"))
            .spawn(move || {
                let exit = gateway.run().expect("run");
                (exit, gateway.stats().clone())
            })
            .expect("spawn the gateway's thread");
        Gateway { addr, tls, handle, thread: Some(thread) }
    }

    /// Stops gracefully, asserts that the drain completed and that every
    /// accepted connection was closed for exactly one reason, and returns
    /// the final counters.
    pub fn stop_drained(mut self) -> Stats {
        self.handle.shutdown();
        let (exit, stats) = self.join();
        assert_eq!(exit, Exit::Drained, "{stats:?}");
        for kind in Kind::ALL {
            assert_eq!(stats.accepted[kind as usize], stats.closed_total(kind), "{kind:?}: {stats:?}");
        }
        stats
    }

    /// Waits for the gateway's thread, at most [`STOP_TIMEOUT`].
    fn join(&mut self) -> (Exit, Stats) {
        let thread = self.thread.take().expect("joined once");
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            let _ = tx.send(thread.join());
        });
        rx.recv_timeout(STOP_TIMEOUT).expect("gateway did not stop in time").expect("gateway thread panicked")
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

/// A gateway on loopback (port 0) with the production defaults, but no
/// stats line and a short linger, so stopping it does not wait long for
/// collars that are still connected.
pub fn config() -> Config {
    Config {
        device_listen: "127.0.0.1:0".parse().unwrap(),
        http_listen: "127.0.0.1:0".parse().unwrap(),
        stats_interval: Duration::ZERO,
        linger_timeout: Duration::from_millis(200),
        ..Config::default()
    }
}

/// Collar connections the gateway closed for `reason`.
pub fn closed(stats: &Stats, reason: CloseReason) -> u64 {
    stats.closed(Kind::Device, reason)
}
