//! tether: a TCP gateway for connected pet collars, on one mio reactor.
//!
//! Each collar keeps one long-lived TCP connection and speaks a
//! newline-delimited text protocol (`IDENTIFY:<MAC>`, `PING`/`PONG`,
//! `LOCATION:<lat>,<lon>`). The gateway holds every connection on one
//! thread with epoll (through mio), finds dead peers with TCP keepalive and
//! an application heartbeat, and keeps per-connection memory small enough
//! for 100k+ sockets. See `ARCHITECTURE.md` for the map and its invariants.
//!
//! # Layout
//!
//! - [`reactor`]: the event loop: owns the poller, the slab of connections,
//!   the timing wheel and the two listeners (collars, HTTP); accepts,
//!   reads, writes, closes, and serves the app API and its pushes.
//! - [`connection`]: what the slab holds per connection: socket, output
//!   buffer, deadline, phase (open, closing, lingering) and protocol state.
//! - [`device`]: the collar protocol, sans-IO: MAC parsing, line parsing,
//!   replies, and the session rules (handshake, heartbeat, idle).
//! - [`http`]: the app side's HTTP/1.1, sans-IO: request parsing (on
//!   `httparse`), routing, responses, JSON, the per-connection state.
//! - [`events`]: the ring of device events behind SSE and long polling.
//! - [`line`]: the line framer, sans-IO: bytes in, lines out.
//! - [`wheel`]: the hashed timing wheel behind every deadline.
//! - [`io`]: the one place that calls `read`/`write` and names the outcome.
//! - [`net`]: listener setup with socket2, socket options, fd limits.
//! - [`close`]: why a connection ended, and the `BYE` line that says so.
//! - [`stats`]: every counter, and the periodic report line.
//! - [`metrics`]: the counters in Prometheus text format.
//! - [`config`]: every setting, which is also the command line.
//! - [`time`]: the reactor's millisecond clock.

pub mod close;
pub mod config;
pub mod connection;
pub mod device;
pub mod events;
pub mod http;
pub mod io;
pub mod line;
pub mod metrics;
pub mod net;
pub mod reactor;
pub mod stats;
pub mod time;
pub mod wheel;

pub use config::Config;
pub use reactor::{Exit, Handle, Reactor};
