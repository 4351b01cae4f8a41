//! A real HTTP client ([`Api`], on `ureq`): what the phone app would use,
//! with a pool of keep-alive connections, for tests about the API's
//! meaning rather than its bytes.

use std::net::SocketAddr;

use super::TIMEOUT;

/// A response from the real HTTP client.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: ureq::http::HeaderMap,
    pub body: String,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().expect("an ASCII header"))
    }
}

/// A real HTTP client: one `ureq` agent (with its pool of keep-alive
/// connections) that returns 4xx and 5xx answers instead of failing.
pub struct Api {
    agent: ureq::Agent,
    base: String,
}

impl Api {
    pub fn new(addr: SocketAddr) -> Api {
        let config = ureq::Agent::config_builder().http_status_as_error(false).timeout_global(Some(TIMEOUT)).build();
        Api { agent: config.into(), base: format!("http://{addr}") }
    }

    pub fn get(&self, path: &str) -> Reply {
        self.call("GET", path, &[], None)
    }

    pub fn post(&self, path: &str, body: &str) -> Reply {
        self.call("POST", path, &[], Some(body.as_bytes()))
    }

    /// Any method, with extra headers and an optional body.
    pub fn call(&self, method: &str, path: &str, headers: &[(&str, &str)], body: Option<&[u8]>) -> Reply {
        let mut request = ureq::http::Request::builder().method(method).uri(format!("{}{path}", self.base));
        for &(name, value) in headers {
            request = request.header(name, value);
        }
        let result = match body {
            None => self.agent.run(request.body(()).unwrap()),
            Some(body) => self.agent.run(request.body(body).unwrap()),
        };
        let mut response = result.unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let body = response.body_mut().read_to_string().unwrap_or_else(|e| panic!("{method} {path}: body: {e}"));
        Reply { status: response.status().as_u16(), headers: response.headers().clone(), body }
    }
}
