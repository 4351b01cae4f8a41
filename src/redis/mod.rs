//! The Redis link: how tether talks to Redis, the engine that lets a fleet
//! outgrow one process and one host (see README "Scaling out").
//!
//! - `codec`: RESP on byte slices, through the `redis-protocol` crate;
//! - `session`: a Redis connection as a reactor session, sans-IO: bytes in,
//!   replies out as effects;
//! - `url`: `redis://HOST:PORT[/DB]`;
//! - `tether.lua`: the server-side functions (a Redis 7 function library)
//!   that keep the directory consistent: claim, release, sweep, page.
//!
//! What the replies mean, and what is sent when, is the hub's
//! (`crate::hub::cluster`): the reactor dials the links, the hub speaks on
//! them, and no thread or blocking client is involved.

pub mod codec;
pub mod session;
pub mod url;

pub use session::{RedisSession, RedisSettings};
pub use url::RedisUrl;

/// The function library loaded on every connect (`FUNCTION LOAD REPLACE`),
/// so that a gateway always runs the functions it was built with.
pub const FUNCTIONS: &str = include_str!("tether.lua");
