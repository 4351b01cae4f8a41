//! The collar side: identity, protocol and per-connection session rules.
//!
//! Everything here is sans-IO: it turns lines into decisions and never
//! touches a socket. The reactor (`crate::reactor::device`) does the I/O
//! and applies those decisions.

pub mod mac;
pub mod protocol;
pub mod session;

pub use mac::Mac;
pub use protocol::{Command, ErrorCode, Reply};
pub use session::{Due, Fix, Session, Step, Timeouts};
