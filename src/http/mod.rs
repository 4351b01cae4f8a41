//! The app side's HTTP/1.1, sans-IO: request parsing, routing, the API's
//! decisions, responses, and the connection's state machine.
//!
//! Nothing here touches a socket. [`HttpSession`] is fed the bytes a
//! connection received and appends what it answers to the connection's
//! output, so keep-alive, pipelining, chunked bodies and every limit are
//! tested with byte strings.

pub mod api;
pub mod chunked;
pub mod dashboard;
pub mod json;
pub mod percent;
pub mod request;
pub mod response;
pub mod router;
pub mod session;

pub use request::{Head, Limits, Method, RequestError};
pub use response::Response;
pub use router::{Route, RouteError};
pub use session::{HttpSession, HttpSettings, HttpTimeouts};
