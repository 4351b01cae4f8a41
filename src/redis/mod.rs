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
/// so that a gateway always runs the functions it was built with: its
/// name and its functions' carry [`LIBRARY`], so that gateways of two
/// versions (a fleet being upgraded one by one) each keep their own.
pub const FUNCTIONS: &str = include_str!("tether.lua");

/// The library's name and version; each function is `LIBRARY_<name>`.
pub const LIBRARY: &str = "tether_v1";

/// The functions the gateway calls.
pub const FUNCTION_NAMES: [&str; 9] =
    ["claim", "reclaim", "release", "event", "alive", "sweep", "page", "get", "owned"];

/// The full name of function `name` of this version of the library.
pub fn function(name: &str) -> String {
    format!("{LIBRARY}_{name}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_library_registers_every_function_the_gateway_calls_under_its_version() {
        assert!(FUNCTIONS.starts_with(&format!("#!lua name={LIBRARY}\n")));
        for name in FUNCTION_NAMES {
            let quoted = format!("'{}'", function(name));
            assert_eq!(FUNCTIONS.matches(&quoted).count(), 1, "{quoted} registered once");
        }
        let registered = FUNCTIONS.matches("redis.register_function").count();
        assert_eq!(registered, FUNCTION_NAMES.len(), "no function the gateway does not call");
    }
}
