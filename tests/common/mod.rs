//! Shared helpers for the integration tests, one module per kind of thing:
//!
//! - [`gateway`]: a gateway running on a thread of the test process (the
//!   test config, each gateway's own log records, the final counters);
//! - [`process`]: the real binary as a child process (signals, exit status,
//!   its log on stderr, what `/proc` says of it);
//! - [`client`]: a raw TCP client for the device protocol that asserts
//!   exact bytes;
//! - [`http`]: a raw HTTP/1.1 client ([`HttpClient`]) for what a client
//!   library hides (exact response bytes, pipelining, malformed requests,
//!   event streams), and the exact bytes of the gateway's JSON responses;
//! - [`api`]: a real HTTP client ([`Api`], on `ureq`);
//! - [`browser`]: headless Chromium through chromedriver ([`Browser`], on
//!   `fantoccini`), for the dashboard;
//! - [`auth`]: device keys from the collar's side: a key file, the
//!   `CHALLENGE`/`AUTH` exchange;
//! - [`kernel`]: what the kernel knows of a socket that the gateway does
//!   not say (`/proc/net/tcp`), and connecting from another loopback
//!   address;
//! - [`netns`]: a private network namespace per test thread, and packet
//!   loss in it with nftables (pulled cables, hosts that lost power);
//! - [`streams`]: many event streams at once, bursts of locations from one
//!   collar, and the frames they become;
//! - [`redis`]: a real `redis-server` on a free port, for the scale-out
//!   tests (killed and restarted at will);
//! - [`require`]: prerequisites beyond the toolchain (a program, root),
//!   which skip a test run by hand and fail one under `scripts/test.sh`;
//! - [`tls`]: a throwaway CA and its certificates (`rcgen`), and a
//!   blocking TLS client that asserts exact plaintext;
//! - [`matchers`]: JSON with timestamps ([`assert_like`]), Prometheus text
//!   ([`metric`]), numbers as the gateway's JSON writes them ([`num`]).
//!
//! Everything is re-exported here, so a test file says
//! `use common::{Gateway, HttpClient, ...}` whichever module holds it.
//!
//! Waiting is always a read with a timeout (or a channel receive with one),
//! never a sleep: a test waits exactly as long as the gateway needs, and a
//! broken gateway fails the test after [`TIMEOUT`] instead of hanging it.
//! When no client can observe an event yet (kernel buffers hide it), a test
//! waits for the gateway's log line instead: `Gateway::expect_log` for one
//! in-process (each gets the records logged on its own thread),
//! `Process::expect_log` for the binary.

// Each test file uses a different subset: of the helpers, and so of the
// re-exports below.
#![allow(dead_code, unused_imports)]

pub mod api;
pub mod auth;
pub mod browser;
pub mod client;
pub mod gateway;
pub mod http;
pub mod kernel;
pub mod matchers;
pub mod netns;
pub mod process;
pub mod redis;
pub mod require;
pub mod streams;
pub mod tls;

use std::time::Duration;

pub use api::{Api, Reply};
pub use auth::{KeyFile, auth_line, authenticate, challenge};
pub use browser::Browser;
pub use client::{Client, mac};
pub use gateway::{Gateway, assert_all_closed, closed, config};
pub use http::{HttpClient, HttpResponse, STREAM_START, json_head, json_response};
pub use kernel::{connect_from, data_segments_received, socket_inodes, socket_inodes_at, tcp_queues};
pub use matchers::{assert_like, metric, num};
pub use netns::Netns;
pub use process::{Process, tether_command};
pub use redis::RedisServer;
pub use require::{program, require};
pub use streams::{frames, location_frame, locations, subscribe_many};
pub use tls::{Pki, TlsClient};

/// How long any single wait may take before the test fails.
pub const TIMEOUT: Duration = Duration::from_secs(10);
