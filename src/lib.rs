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
//! - [`reactor`]: the event loop, which knows no protocol: the poller, the
//!   slab of connections and their tokens, reads, output buffers and the
//!   flush phase, the timing wheel, closing and lingering, the per-turn
//!   budgets; and the two traits the rest plugs in with, [`reactor::Session`]
//!   (a protocol) and [`reactor::App`] (what connections share).
//! - [`device`]: the collar protocol, sans-IO: framing, parsing, the rules
//!   (handshake, heartbeat, idle), and its session.
//! - [`http`]: the app's HTTP/1.1, sans-IO: request heads (on `httparse`),
//!   chunked bodies, routing and the API's decisions, responses, and its
//!   session (pipelining, long polls, streams).
//! - [`proto`]: the two protocols as the one session type of the reactor.
//! - [`effect`]: what sessions ask of the hub, and its replies.
//! - [`hub`]: the shared state (collars online, the event log and its
//!   subscribers, waiting location queries) and what effects do to it.
//! - [`events`]: the event log, and the JSON of an event.
//! - [`redis`]: the Redis link (`--redis`), sans-IO: RESP through a codec
//!   crate, the link's session, and the function library that keeps the
//!   fleet's directory; the hub's side of it is `hub::cluster`.
//! - [`gateway`]: the reactor serving the hub, set up from the [`Config`].
//! - [`wheel`]: the hashed timing wheel behind every deadline.
//! - [`net`]: listener setup with socket2, socket options, fd limits.
//! - [`close`]: why a connection ended, and the `BYE` line that says so.
//! - [`stats`], [`metrics`]: every counter, the periodic report line, and
//!   `/metrics` in Prometheus text format; [`stats_json`]: the same figures
//!   as JSON (`/stats`).
//! - [`config`]: every setting, which is also the command line.
//! - [`checkhost`]: `tether check-host`: the host's limits against N
//!   connections (sans-IO checks, and reading them from `/proc`).
//! - [`time`]: the reactor's millisecond clock.
//! - [`tls`]: a TLS listener's certificate, key and client CA, loaded
//!   into a rustls configuration (the reactor drives rustls itself).
//! - [`supervisor`]: `--workers N`: worker processes sharing the ports,
//!   restarted when they die, drained together.
//! - [`logfmt`]: the binary's log lines, as text or one JSON object a line.

pub mod checkhost;
pub mod close;
pub mod config;
pub mod device;
pub mod effect;
pub mod events;
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzz;
pub mod gateway;
pub mod http;
pub mod hub;
pub mod logfmt;
pub mod metrics;
pub mod net;
pub mod proto;
pub mod reactor;
pub mod redis;
pub mod stats;
pub mod stats_json;
pub mod supervisor;
pub mod time;
pub mod tls;
pub mod wheel;

pub use config::Config;
pub use gateway::Gateway;
pub use reactor::{Exit, Handle};
