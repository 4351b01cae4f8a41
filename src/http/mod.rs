//! The app side's HTTP/1.1, sans-IO: parsing requests, routing paths,
//! writing responses and JSON.
//!
//! Nothing here touches a socket. The reactor (`crate::reactor::http` and
//! `crate::reactor::api`) feeds these functions the bytes a connection has
//! received and writes out the bytes they produce, so keep-alive,
//! pipelining and every limit can be tested with byte strings.

pub mod json;
pub mod percent;
pub mod request;
pub mod response;
pub mod router;
pub mod session;

pub use request::{Limits, Method, Parse, Request, RequestError};
pub use response::Response;
pub use router::{Route, RouteError};
pub use session::{HttpDue, HttpSession, HttpTimeouts, State, Wait};
