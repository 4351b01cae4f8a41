//! The collar side: identity, framing, protocol and per-connection rules.
//!
//! Everything here is sans-IO: bytes and times in, lines and effects out.
//! [`DeviceSession`] is the collar protocol as the reactor drives it: it
//! frames input into lines ([`line`](mod@line)), parses them ([`protocol`]), applies
//! the rules ([`rules`]), and answers on its own output.

pub mod auth;
pub mod line;
pub mod mac;
pub mod protocol;
pub mod rules;
pub mod session;

pub use auth::{DeviceKeys, Nonce, Proof};
pub use line::{LineFramer, LineTooLong};
pub use mac::Mac;
pub use protocol::{Command, ErrorCode, Line};
pub use rules::{Collar, Due, Fix, Step, Timeouts};
pub use session::{DeviceSession, DeviceSettings};
