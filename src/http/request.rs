//! Parsing one HTTP/1.1 request from the bytes a connection has received.
//!
//! The head is parsed by `httparse` (a push parser: it reports `Partial`
//! until the blank line arrives); this module adds what HTTP needs on top:
//! the size limits, the body by `Content-Length`, keep-alive, and the few
//! headers the API reads, compared case-insensitively. A [`Request`]
//! borrows from the caller's buffer; nothing is copied.

use super::percent;

/// Most headers accepted in one request (more is a 431).
const MAX_HEADERS: usize = 48;

/// The size limits for one request.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Request line and headers, up to and including the blank line.
    pub max_head: usize,
    /// The body, by `Content-Length`.
    pub max_body: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
    Post,
    Options,
    /// Any other method: routed to a 405.
    Other,
}

/// A complete request, borrowing from the receive buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request<'a> {
    pub method: Method,
    /// The path, not yet percent-decoded, without the query.
    pub path: &'a str,
    /// The query string after `?` (empty if none), not yet decoded.
    pub query: &'a str,
    /// Whether the connection stays open after the response: HTTP/1.1
    /// unless `Connection: close`, HTTP/1.0 only with `keep-alive`.
    pub keep_alive: bool,
    pub authorization: Option<&'a [u8]>,
    pub last_event_id: Option<&'a [u8]>,
    pub body: &'a [u8],
}

impl Request<'_> {
    /// The decoded value of query parameter `name`; `Err` if the query is
    /// badly encoded.
    pub fn param(&self, name: &str) -> Result<Option<String>, percent::BadEncoding> {
        for pair in percent::query_pairs(self.query) {
            let (key, value) = pair?;
            if key == name {
                return Ok(Some(value.into_owned()));
            }
        }
        Ok(None)
    }
}

/// What the buffer holds so far.
#[derive(Debug, PartialEq, Eq)]
pub enum Parse<'a> {
    /// The head is not complete yet.
    PartialHead,
    /// The head is complete; the body is not. `total` is the length of the
    /// whole request (head + body) to wait for; `expects_continue` asks for
    /// an interim `100 Continue` before the client sends the body.
    PartialBody { total: usize, expects_continue: bool },
    /// A whole request, and how many bytes of the buffer it used.
    Complete { request: Request<'a>, len: usize },
}

/// A request that cannot be served; each maps to one status code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestError {
    /// 400: not HTTP, or headers that contradict each other.
    Malformed(&'static str),
    /// 431: the head passed `max_head`, or had too many headers.
    HeadTooLarge,
    /// 413: `Content-Length` over `max_body`.
    BodyTooLarge,
    /// 411: a `Transfer-Encoding` body (chunked); only `Content-Length`
    /// bodies are accepted.
    LengthRequired,
}

impl RequestError {
    pub fn status(self) -> u16 {
        match self {
            RequestError::Malformed(_) => 400,
            RequestError::HeadTooLarge => 431,
            RequestError::BodyTooLarge => 413,
            RequestError::LengthRequired => 411,
        }
    }

    pub fn message(self) -> &'static str {
        match self {
            RequestError::Malformed(why) => why,
            RequestError::HeadTooLarge => "request head too large",
            RequestError::BodyTooLarge => "request body too large",
            RequestError::LengthRequired => "chunked request bodies are not supported: send Content-Length",
        }
    }
}

/// Parses the request at the start of `buf`.
pub fn parse(buf: &[u8], limits: Limits) -> Result<Parse<'_>, RequestError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let head_len = match req.parse(buf) {
        Ok(httparse::Status::Complete(len)) if len > limits.max_head => return Err(RequestError::HeadTooLarge),
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() > limits.max_head => return Err(RequestError::HeadTooLarge),
        Ok(httparse::Status::Partial) => return Ok(Parse::PartialHead),
        Err(httparse::Error::TooManyHeaders) => return Err(RequestError::HeadTooLarge),
        Err(_) => return Err(RequestError::Malformed("malformed request")),
    };
    // httparse guarantees these are present once the head is complete.
    let (Some(method), Some(target), Some(version)) = (req.method, req.path, req.version) else {
        return Err(RequestError::Malformed("malformed request"));
    };

    let mut content_length: Option<usize> = None;
    let mut connection_close = version == 0;
    let mut authorization = None;
    let mut last_event_id = None;
    let mut expects_continue = false;
    for header in req.headers.iter() {
        let name = header.name;
        if name.eq_ignore_ascii_case("content-length") {
            // Digits only (RFC 9110): `parse` alone would also take `+4`, and
            // a length two parsers read differently is how requests are smuggled.
            let digits = header.value.trim_ascii();
            let n = std::str::from_utf8(digits)
                .ok()
                .filter(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|d| d.parse::<usize>().ok())
                .ok_or(RequestError::Malformed("invalid Content-Length"))?;
            if content_length.is_some_and(|m| m != n) {
                return Err(RequestError::Malformed("conflicting Content-Length headers"));
            }
            content_length = Some(n);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(RequestError::LengthRequired);
        } else if name.eq_ignore_ascii_case("connection") {
            for token in header.value.split(|&b| b == b',') {
                let token = token.trim_ascii();
                if token.eq_ignore_ascii_case(b"close") {
                    connection_close = true;
                } else if token.eq_ignore_ascii_case(b"keep-alive") {
                    connection_close = false;
                }
            }
        } else if name.eq_ignore_ascii_case("authorization") {
            authorization = Some(header.value);
        } else if name.eq_ignore_ascii_case("last-event-id") {
            last_event_id = Some(header.value);
        } else if name.eq_ignore_ascii_case("expect") {
            expects_continue = header.value.eq_ignore_ascii_case(b"100-continue");
        }
    }

    let body_len = content_length.unwrap_or(0);
    if body_len > limits.max_body {
        return Err(RequestError::BodyTooLarge);
    }
    let total = head_len + body_len;
    if buf.len() < total {
        return Ok(Parse::PartialBody { total, expects_continue });
    }
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let method = match method {
        "GET" => Method::Get,
        "HEAD" => Method::Head,
        "POST" => Method::Post,
        "OPTIONS" => Method::Options,
        _ => Method::Other,
    };
    Ok(Parse::Complete {
        request: Request {
            method,
            path,
            query,
            keep_alive: !connection_close,
            authorization,
            last_event_id,
            body: &buf[head_len..total],
        },
        len: total,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits { max_head: 256, max_body: 16 };

    fn complete(buf: &[u8]) -> (Request<'_>, usize) {
        match parse(buf, LIMITS) {
            Ok(Parse::Complete { request, len }) => (request, len),
            other => panic!("expected a complete request, got {other:?}"),
        }
    }

    #[test]
    fn a_simple_get() {
        let buf = b"GET /devices/AA%3ABB?limit=5&x=1 HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\n";
        let (req, len) = complete(buf);
        assert_eq!(req.method, Method::Get);
        assert_eq!(req.path, "/devices/AA%3ABB");
        assert_eq!(req.query, "limit=5&x=1");
        assert_eq!(req.param("limit"), Ok(Some("5".into())));
        assert_eq!(req.param("missing"), Ok(None));
        assert!(req.keep_alive);
        assert_eq!(req.body, b"");
        assert_eq!(&buf[len..], b"GET / HTTP/1.1\r\n", "a pipelined request stays in the buffer");
    }

    #[test]
    fn headers_are_case_insensitive() {
        let buf = b"POST /x HTTP/1.1\r\ncOnTeNt-LeNgTh: 3\r\nCONNECTION: Close\r\nauthorization: Bearer t\r\nLast-Event-Id: 42\r\n\r\nabcNEXT";
        let (req, len) = complete(buf);
        assert_eq!(req.body, b"abc");
        assert!(!req.keep_alive);
        assert_eq!(req.authorization, Some(&b"Bearer t"[..]));
        assert_eq!(req.last_event_id, Some(&b"42"[..]));
        assert_eq!(&buf[len..], b"NEXT");
    }

    #[test]
    fn http_1_0_closes_unless_asked_to_keep_alive() {
        assert!(!complete(b"GET / HTTP/1.0\r\n\r\n").0.keep_alive);
        assert!(complete(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").0.keep_alive);
    }

    #[test]
    fn partial_head_and_body() {
        assert_eq!(parse(b"GET / HTTP/1.1\r\nHost:", LIMITS), Ok(Parse::PartialHead));
        let head = b"POST /x HTTP/1.1\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\nab";
        assert_eq!(parse(head, LIMITS), Ok(Parse::PartialBody { total: head.len() + 3, expects_continue: true }));
    }

    #[test]
    fn limits_give_their_status() {
        let long = format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(300));
        assert_eq!(parse(long.as_bytes(), LIMITS).unwrap_err().status(), 431);
        // Still partial but already over the limit: refused without waiting.
        assert_eq!(parse(&[b'G'; 300], LIMITS).unwrap_err().status(), 431);
        let big = b"POST /x HTTP/1.1\r\nContent-Length: 17\r\n\r\n";
        assert_eq!(parse(big, LIMITS).unwrap_err().status(), 413);
        let chunked = b"POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(parse(chunked, LIMITS).unwrap_err().status(), 411);
        let many: String = (0..60).map(|i| format!("h{i}: v\r\n")).collect();
        let many = format!("GET / HTTP/1.1\r\n{many}\r\n");
        let roomy = Limits { max_head: 4096, max_body: 16 };
        assert_eq!(parse(many.as_bytes(), roomy).unwrap_err().status(), 431);
    }

    #[test]
    fn malformed_requests_are_400() {
        for bad in [
            &b"NOT HTTP AT ALL\r\n\r\n"[..],
            b"GET / HTTP/1.1\r\nContent-Length: x\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: +4\r\n\r\nbeep",
            b"POST / HTTP/1.1\r\nContent-Length: -0\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: \r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n",
            b"GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            b"GET / HTTP/1.1\r\nBad Header\r\n\r\n",
            b"\x00\x01\x02\r\n\r\n",
        ] {
            assert_eq!(parse(bad, LIMITS).unwrap_err().status(), 400, "{:?}", bad.escape_ascii().to_string());
        }
    }

    #[test]
    fn other_methods_are_kept_for_a_405() {
        assert_eq!(complete(b"DELETE /devices HTTP/1.1\r\n\r\n").0.method, Method::Other);
    }
}
