//! Writing HTTP/1.1 responses.
//!
//! Every response carries `Content-Length` (so keep-alive and pipelining
//! work; not a 204 or 304, which have no body), the CORS origin,
//! `Cache-Control: no-store` unless the extra headers say otherwise (the
//! dashboard's files are revalidated by their `ETag` instead), and
//! `Connection: close` when the connection ends after it. The event stream is the one response without a length:
//! it runs until the connection closes.

use std::io::Write as _;

/// A response to write: status, body and any extra headers.
#[derive(Debug, Clone, Copy)]
pub struct Response<'a> {
    pub status: u16,
    pub content_type: &'static str,
    pub body: &'a [u8],
    /// Extra headers such as `Allow` or `WWW-Authenticate`.
    pub headers: &'a [(&'static str, &'a str)],
}

impl<'a> Response<'a> {
    /// A JSON response.
    pub fn json(status: u16, body: &'a str) -> Response<'a> {
        Response { status, content_type: "application/json", body: body.as_bytes(), headers: &[] }
    }

    /// Appends the response to `out`. `head_only` answers a HEAD request:
    /// the same headers, no body.
    pub fn write(&self, out: &mut Vec<u8>, cors_origin: &str, keep_alive: bool, head_only: bool) {
        let _ = write!(out, "HTTP/1.1 {} {}\r\n", self.status, reason(self.status));
        if self.status != 204 && self.status != 304 {
            let _ = write!(out, "Content-Type: {}\r\nContent-Length: {}\r\n", self.content_type, self.body.len());
        }
        if !self.headers.iter().any(|(name, _)| name.eq_ignore_ascii_case("cache-control")) {
            out.extend_from_slice(b"Cache-Control: no-store\r\n");
        }
        let _ = write!(out, "Access-Control-Allow-Origin: {cors_origin}\r\n");
        for (name, value) in self.headers {
            let _ = write!(out, "{name}: {value}\r\n");
        }
        if !keep_alive {
            out.extend_from_slice(b"Connection: close\r\n");
        }
        out.extend_from_slice(b"\r\n");
        if !head_only {
            out.extend_from_slice(self.body);
        }
    }
}

/// The head of a Server-Sent Events stream. It has no length: the stream
/// is the rest of the connection.
pub fn write_stream_head(out: &mut Vec<u8>, cors_origin: &str) {
    let _ = write!(
        out,
        "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n\
         Access-Control-Allow-Origin: {cors_origin}\r\nX-Accel-Buffering: no\r\nConnection: close\r\n\r\n"
    );
}

/// The interim response that tells a client to send its body.
pub const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// The reason phrase of each status the API uses.
pub fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        202 => "Accepted",
        204 => "No Content",
        304 => "Not Modified",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        413 => "Content Too Large",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_json_response_with_keep_alive() {
        let mut out = Vec::new();
        Response::json(200, "{}").write(&mut out, "*", true, false);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\
             Cache-Control: no-store\r\nAccess-Control-Allow-Origin: *\r\n\r\n{}"
        );
    }

    #[test]
    fn extra_headers_close_and_head_only() {
        let mut out = Vec::new();
        let r = Response { headers: &[("Allow", "GET, HEAD")], ..Response::json(405, "{\"error\":\"x\"}") };
        r.write(&mut out, "https://app.example", false, true);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "HTTP/1.1 405 Method Not Allowed\r\nContent-Type: application/json\r\nContent-Length: 13\r\n\
             Cache-Control: no-store\r\nAccess-Control-Allow-Origin: https://app.example\r\nAllow: GET, HEAD\r\n\
             Connection: close\r\n\r\n"
        );
    }

    #[test]
    fn not_modified_has_no_length_and_may_set_its_caching() {
        let mut out = Vec::new();
        let headers = [("Cache-Control", "no-cache"), ("ETag", "\"1\"")];
        Response { headers: &headers, ..Response::json(304, "") }.write(&mut out, "*", true, false);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "HTTP/1.1 304 Not Modified\r\nAccess-Control-Allow-Origin: *\r\nCache-Control: no-cache\r\nETag: \"1\"\r\n\r\n"
        );
    }

    #[test]
    fn no_content_has_no_length() {
        let mut out = Vec::new();
        Response::json(204, "").write(&mut out, "*", true, false);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "HTTP/1.1 204 No Content\r\nCache-Control: no-store\r\nAccess-Control-Allow-Origin: *\r\n\r\n"
        );
    }
}
