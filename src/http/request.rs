//! Parsing the head of one HTTP/1.1 request from the bytes a connection has
//! received (sans-IO).
//!
//! The request line and headers are parsed by `httparse` (a push parser: it
//! reports `Partial` until the blank line arrives); this module adds what
//! HTTP needs on top: the size limit, how the body is delimited
//! (`Content-Length`, or `Transfer-Encoding: chunked`, see
//! [`super::chunked`]), keep-alive, the request target in origin or
//! absolute form, and the few headers the API reads, compared
//! case-insensitively. A [`Head`] borrows from the caller's buffer; nothing
//! is copied.

use super::percent;

/// Most headers accepted in one request (more is a 431).
const MAX_HEADERS: usize = 48;

/// The size limits for one request.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Request line and headers, up to and including the blank line; also
    /// bounds a chunked body's chunk-size lines and trailers.
    pub max_head: usize,
    /// The body (decoded, for a chunked one).
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

/// How the body of a request is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Body {
    /// `Content-Length: n` (no header and no `Transfer-Encoding`: 0).
    Length(usize),
    /// `Transfer-Encoding: chunked`.
    Chunked,
}

/// A request head, borrowing from the receive buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head<'a> {
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
    /// `If-None-Match`: the entity tags of a cached copy (the dashboard's
    /// files answer 304 when one matches).
    pub if_none_match: Option<&'a [u8]>,
    /// `Expect: 100-continue`: the client waits for an interim response
    /// before it sends the body.
    pub expects_continue: bool,
    pub body: Body,
    /// Length of the head, blank line included: the body starts here.
    pub len: usize,
}

impl Head<'_> {
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

/// A request that cannot be served; each maps to one status code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestError {
    /// 400: not HTTP, or headers that contradict each other.
    Malformed(&'static str),
    /// 431: the head passed `max_head`, or had too many headers.
    HeadTooLarge,
    /// 413: a body over `max_body`.
    BodyTooLarge,
    /// 501: a transfer coding other than `chunked`.
    NotImplemented,
}

impl RequestError {
    pub fn status(self) -> u16 {
        match self {
            RequestError::Malformed(_) => 400,
            RequestError::HeadTooLarge => 431,
            RequestError::BodyTooLarge => 413,
            RequestError::NotImplemented => 501,
        }
    }

    pub fn message(self) -> &'static str {
        match self {
            RequestError::Malformed(why) => why,
            RequestError::HeadTooLarge => "request head too large",
            RequestError::BodyTooLarge => "request body too large",
            RequestError::NotImplemented => "only the chunked transfer coding is supported",
        }
    }
}

/// Parses the request head at the start of `buf`: `Ok(None)` while it is
/// incomplete (and within the limit).
pub fn parse_head(buf: &[u8], limits: Limits) -> Result<Option<Head<'_>>, RequestError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let len = match req.parse(buf) {
        Ok(httparse::Status::Complete(len)) if len > limits.max_head => return Err(RequestError::HeadTooLarge),
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() > limits.max_head => return Err(RequestError::HeadTooLarge),
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(RequestError::HeadTooLarge),
        Err(_) => return Err(RequestError::Malformed("malformed request")),
    };
    // httparse guarantees these are present once the head is complete.
    let (Some(method), Some(target), Some(version)) = (req.method, req.path, req.version) else {
        return Err(RequestError::Malformed("malformed request"));
    };

    let mut content_length: Option<usize> = None;
    let mut chunked = false;
    let mut keep_alive = version == 1;
    let mut authorization = None;
    let mut last_event_id = None;
    let mut if_none_match = None;
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
            // RFC 9112 6.1: codings apply in order, and chunked must be the
            // last one, once. We decode only chunked; any other is a 501.
            for coding in header.value.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
                if coding.is_empty() {
                    continue;
                }
                if chunked {
                    return Err(RequestError::Malformed("chunked must be the last transfer coding"));
                }
                if !coding.eq_ignore_ascii_case(b"chunked") {
                    return Err(RequestError::NotImplemented);
                }
                chunked = true;
            }
        } else if name.eq_ignore_ascii_case("connection") {
            for token in header.value.split(|&b| b == b',') {
                let token = token.trim_ascii();
                if token.eq_ignore_ascii_case(b"close") {
                    keep_alive = false;
                } else if token.eq_ignore_ascii_case(b"keep-alive") && version == 0 {
                    keep_alive = true;
                }
            }
        } else if name.eq_ignore_ascii_case("authorization") {
            authorization = Some(header.value);
        } else if name.eq_ignore_ascii_case("last-event-id") {
            last_event_id = Some(header.value);
        } else if name.eq_ignore_ascii_case("if-none-match") {
            if_none_match = Some(header.value);
        } else if name.eq_ignore_ascii_case("expect") {
            expects_continue = header.value.eq_ignore_ascii_case(b"100-continue");
        }
    }
    let body = match (chunked, content_length) {
        // RFC 9112 6.1: a request with both is a smuggling attempt or a
        // broken client; either way its length cannot be trusted.
        (true, Some(_)) => return Err(RequestError::Malformed("both Transfer-Encoding and Content-Length")),
        (true, None) if version == 0 => return Err(RequestError::Malformed("Transfer-Encoding in HTTP/1.0")),
        (true, None) => Body::Chunked,
        (false, Some(n)) if n > limits.max_body => return Err(RequestError::BodyTooLarge),
        (false, n) => Body::Length(n.unwrap_or(0)),
    };
    let (path, query) = split_target(target)?;
    let method = match method {
        "GET" => Method::Get,
        "HEAD" => Method::Head,
        "POST" => Method::Post,
        "OPTIONS" => Method::Options,
        _ => Method::Other,
    };
    Ok(Some(Head {
        method,
        path,
        query,
        keep_alive,
        authorization,
        last_event_id,
        if_none_match,
        expects_continue,
        body,
        len,
    }))
}

/// The path and query of a request target in origin form (`/health?x`)
/// or absolute form (`http://host/health?x`, which RFC 9112 3.2.2 says a
/// server must accept; the authority is ignored, as `Host` is).
fn split_target(target: &str) -> Result<(&str, &str), RequestError> {
    let origin = if target.starts_with('/') {
        target
    } else if let Some((scheme, rest)) = target.split_once("://")
        && (scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https"))
    {
        // Skip the authority; an empty path is "/".
        rest.find(['/', '?']).map_or("/", |at| &rest[at..])
    } else {
        // The asterisk form (`OPTIONS *`) names no resource here.
        target
    };
    let (path, query) = origin.split_once('?').unwrap_or((origin, ""));
    let path = if path.is_empty() { "/" } else { path };
    if path.contains('#') {
        return Err(RequestError::Malformed("a fragment in the request target"));
    }
    Ok((path, query))
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits { max_head: 256, max_body: 16 };

    fn head(buf: &[u8]) -> Head<'_> {
        match parse_head(buf, LIMITS) {
            Ok(Some(head)) => head,
            other => panic!("expected a complete head, got {other:?}"),
        }
    }

    fn status(buf: &[u8]) -> u16 {
        parse_head(buf, LIMITS).unwrap_err().status()
    }

    #[test]
    fn a_simple_get() {
        let buf = b"GET /devices/AA%3ABB?limit=5&x=1 HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\n";
        let h = head(buf);
        assert_eq!(h.method, Method::Get);
        assert_eq!(h.path, "/devices/AA%3ABB");
        assert_eq!(h.query, "limit=5&x=1");
        assert_eq!(h.param("limit"), Ok(Some("5".into())));
        assert_eq!(h.param("missing"), Ok(None));
        assert!(h.keep_alive);
        assert_eq!(h.body, Body::Length(0));
        assert_eq!(&buf[h.len..], b"GET / HTTP/1.1\r\n", "a pipelined request stays in the buffer");
    }

    #[test]
    fn headers_are_case_insensitive() {
        let buf = b"POST /x HTTP/1.1\r\ncOnTeNt-LeNgTh: 3\r\nCONNECTION: Close\r\nauthorization: Bearer t\r\nLast-Event-Id: 42\r\nEXPECT: 100-Continue\r\nif-none-match: \"x\"\r\n\r\nabc";
        let h = head(buf);
        assert_eq!(h.body, Body::Length(3));
        assert!(!h.keep_alive);
        assert!(h.expects_continue);
        assert_eq!(h.authorization, Some(&b"Bearer t"[..]));
        assert_eq!(h.last_event_id, Some(&b"42"[..]));
        assert_eq!(h.if_none_match, Some(&b"\"x\""[..]));
        assert_eq!(&buf[h.len..], b"abc");
    }

    #[test]
    fn http_1_0_closes_unless_asked_to_keep_alive() {
        assert!(!head(b"GET / HTTP/1.0\r\n\r\n").keep_alive);
        assert!(head(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").keep_alive);
        assert!(head(b"GET / HTTP/1.1\r\nConnection: keep-alive\r\n\r\n").keep_alive);
    }

    #[test]
    fn a_partial_head_waits() {
        assert_eq!(parse_head(b"GET / HTTP/1.1\r\nHost:", LIMITS), Ok(None));
    }

    #[test]
    fn the_absolute_form_names_the_same_resource() {
        for (target, path, query) in [
            ("http://x/health", "/health", ""),
            ("HTTP://example.com:3000/devices?limit=2", "/devices", "limit=2"),
            ("https://x", "/", ""),
            ("http://x?y=1", "/", "y=1"),
            ("/health", "/health", ""),
        ] {
            let buf = format!("GET {target} HTTP/1.1\r\n\r\n");
            let h = head(buf.as_bytes());
            assert_eq!((h.path, h.query), (path, query), "{target}");
        }
        assert_eq!(head(b"OPTIONS * HTTP/1.1\r\n\r\n").path, "*");
    }

    #[test]
    fn transfer_codings() {
        let chunked = b"POST /x HTTP/1.1\r\nTransfer-Encoding: Chunked\r\n\r\n";
        assert_eq!(head(chunked).body, Body::Chunked);
        assert_eq!(status(b"POST /x HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"), 501);
        assert_eq!(status(b"POST /x HTTP/1.1\r\nTransfer-Encoding: identity\r\n\r\n"), 501);
        assert_eq!(status(b"POST /x HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\n\r\n"), 400);
        assert_eq!(
            status(b"POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n"),
            400
        );
        assert_eq!(status(b"POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n"), 400);
        assert_eq!(status(b"POST /x HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n"), 400);
    }

    #[test]
    fn limits_give_their_status() {
        let long = format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(300));
        assert_eq!(status(long.as_bytes()), 431);
        // Still partial but already over the limit: refused without waiting.
        assert_eq!(status(&[b'G'; 300]), 431);
        assert_eq!(status(b"POST /x HTTP/1.1\r\nContent-Length: 17\r\n\r\n"), 413);
        let many: String = (0..60).map(|i| format!("h{i}: v\r\n")).collect();
        let many = format!("GET / HTTP/1.1\r\n{many}\r\n");
        let roomy = Limits { max_head: 4096, max_body: 16 };
        assert_eq!(parse_head(many.as_bytes(), roomy).unwrap_err().status(), 431);
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
            b"GET /a#b HTTP/1.1\r\n\r\n",
            b"\x00\x01\x02\r\n\r\n",
        ] {
            assert_eq!(status(bad), 400, "{:?}", bad.escape_ascii().to_string());
        }
    }

    #[test]
    fn other_methods_are_kept_for_a_405() {
        assert_eq!(head(b"DELETE /devices HTTP/1.1\r\n\r\n").method, Method::Other);
    }
}
