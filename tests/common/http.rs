//! A raw HTTP/1.1 client on one TCP connection, for what a client library
//! hides: the exact bytes of a response, pipelined requests, malformed
//! ones, and event streams read frame by frame. Also the exact bytes the
//! gateway writes for a JSON answer ([`json_response`]) and the start of an
//! event stream ([`STREAM_START`]), so that tests compare whole responses.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use super::TIMEOUT;
use super::client::{Client, assert_eof};

/// One HTTP response as read off the wire.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    pub status: u16,
    /// The status line and headers, blank line included, exactly as sent.
    pub head: String,
    /// The headers in order, names as sent.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// The value of the header `name` (compared case-insensitively).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> &str {
        std::str::from_utf8(&self.body).expect("a UTF-8 body")
    }

    /// Head and body, as they came.
    pub fn raw(&self) -> String {
        format!("{}{}", self.head, String::from_utf8_lossy(&self.body))
    }
}

/// The exact head of a JSON response with `body`, as the gateway writes it
/// with the default CORS origin (`extra` headers go after it).
pub fn json_head(status: &str, body: &str, extra: &[&str], close: bool) -> String {
    let mut head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
         Cache-Control: no-store\r\nAccess-Control-Allow-Origin: *\r\n",
        body.len()
    );
    for header in extra {
        head.push_str(header);
        head.push_str("\r\n");
    }
    if close {
        head.push_str("Connection: close\r\n");
    }
    head.push_str("\r\n");
    head
}

/// The exact bytes of a JSON response (see [`json_head`]).
pub fn json_response(status: &str, body: &str, extra: &[&str], close: bool) -> String {
    json_head(status, body, extra, close) + body
}

/// The head of an event stream, then its `retry:` line.
pub const STREAM_START: &str = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n\
     Access-Control-Allow-Origin: *\r\nX-Accel-Buffering: no\r\nConnection: close\r\n\r\nretry: 3000\n\n";

/// A raw HTTP/1.1 client on one TCP connection. It keeps what it has
/// received and not yet consumed, so responses, event frames and exact
/// bytes can be read one after another on one socket.
pub struct HttpClient {
    pub stream: TcpStream,
    buf: Vec<u8>,
}

impl HttpClient {
    pub fn connect(addr: SocketAddr) -> HttpClient {
        HttpClient { stream: Client::connect(addr).stream, buf: Vec::new() }
    }

    /// Connects with a small `SO_RCVBUF`, for a client that reads slowly.
    pub fn connect_with_recv_buffer(addr: SocketAddr, bytes: usize) -> HttpClient {
        HttpClient { stream: Client::connect_with_recv_buffer(addr, bytes).stream, buf: Vec::new() }
    }

    /// A client on a connected stream (say, one from
    /// [`super::kernel::connect_from`]).
    pub fn from_stream(stream: TcpStream) -> HttpClient {
        HttpClient { stream: Client::from_stream(stream).stream, buf: Vec::new() }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("send");
    }

    /// Sends `GET <target>` (keep-alive) and reads the response.
    pub fn get(&mut self, target: &str) -> HttpResponse {
        self.send(format!("GET {target} HTTP/1.1\r\nHost: tether\r\n\r\n").as_bytes());
        self.read_response()
    }

    /// Sends `GET <target>` with `Connection: close` and reads the response.
    pub fn get_closing(&mut self, target: &str) -> HttpResponse {
        self.send(format!("GET {target} HTTP/1.1\r\nHost: tether\r\nConnection: close\r\n\r\n").as_bytes());
        self.read_response()
    }

    /// One read into the buffer; false at end of file.
    fn fill(&mut self, what: &str) -> bool {
        let mut chunk = vec![0u8; 64 * 1024];
        loop {
            match self.stream.read(&mut chunk) {
                Ok(0) => return false,
                Ok(n) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    return true;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => panic!("waiting for {what}: {e} after {:?}", String::from_utf8_lossy(&self.buf)),
            }
        }
    }

    /// Reads up to and including `delim`.
    fn read_until(&mut self, delim: &[u8], what: &str) -> Vec<u8> {
        let mut from = 0;
        loop {
            if let Some(i) = self.buf[from..].windows(delim.len()).position(|w| w == delim) {
                return self.buf.drain(..from + i + delim.len()).collect();
            }
            from = self.buf.len().saturating_sub(delim.len() - 1);
            if !self.fill(what) {
                panic!("waiting for {what}: end of file after {:?}", String::from_utf8_lossy(&self.buf));
            }
        }
    }

    /// Reads exactly `n` bytes.
    pub fn read_n(&mut self, n: usize, what: &str) -> Vec<u8> {
        while self.buf.len() < n {
            if !self.fill(what) {
                panic!("waiting for {what}: end of file after {:?}", String::from_utf8_lossy(&self.buf));
            }
        }
        self.buf.drain(..n).collect()
    }

    /// Reads a response's status line and headers (not its body: for HEAD).
    pub fn read_response_head(&mut self) -> HttpResponse {
        let head = String::from_utf8(self.read_until(b"\r\n\r\n", "a response head")).expect("a UTF-8 head");
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap();
        let status = status_line
            .strip_prefix("HTTP/1.1 ")
            .and_then(|rest| rest.get(..3))
            .and_then(|code| code.parse().ok())
            .unwrap_or_else(|| panic!("not a status line: {status_line:?}"));
        let headers = lines
            .filter(|l| !l.is_empty())
            .map(|l| {
                let (name, value) = l.split_once(": ").unwrap_or_else(|| panic!("not a header: {l:?}"));
                (name.to_string(), value.to_string())
            })
            .collect();
        HttpResponse { status, head, headers, body: Vec::new() }
    }

    /// Reads a whole response: the head, then `Content-Length` bytes of body
    /// (none for 1xx and 204; an event stream's body is left to read).
    pub fn read_response(&mut self) -> HttpResponse {
        let mut response = self.read_response_head();
        if response.status >= 200 && response.status != 204 {
            if let Some(len) = response.header("Content-Length") {
                let len: usize = len.parse().expect("a numeric Content-Length");
                response.body = self.read_n(len, "a response body");
            }
        }
        response
    }

    /// Like [`HttpClient::read_response`], but `None` if the connection
    /// ends before a response begins (for counting what came before).
    pub fn next_response(&mut self) -> Option<HttpResponse> {
        if self.buf.is_empty() && !self.fill("a response") {
            return None;
        }
        Some(self.read_response())
    }

    /// Reads exactly `expected.len()` bytes and asserts they are `expected`.
    pub fn expect(&mut self, expected: &[u8]) {
        let got = self.read_n(expected.len(), &String::from_utf8_lossy(expected));
        assert_eq!(String::from_utf8_lossy(&got), String::from_utf8_lossy(expected));
    }

    /// Reads one Server-Sent Events frame (or comment), up to and including
    /// its blank line.
    pub fn read_event(&mut self) -> String {
        String::from_utf8(self.read_until(b"\n\n", "an event")).expect("a UTF-8 event")
    }

    /// Like [`HttpClient::read_event`], but `None` if no whole frame has
    /// come within `window`.
    pub fn read_event_within(&mut self, window: Duration) -> Option<String> {
        let until = std::time::Instant::now() + window;
        let mut chunk = vec![0u8; 64 * 1024];
        loop {
            if let Some(i) = self.buf.windows(2).position(|w| w == b"\n\n") {
                let frame: Vec<u8> = self.buf.drain(..i + 2).collect();
                return Some(String::from_utf8(frame).expect("a UTF-8 event"));
            }
            let left = until.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return None;
            }
            self.stream.set_read_timeout(Some(left)).unwrap();
            let read = self.stream.read(&mut chunk);
            self.stream.set_read_timeout(Some(TIMEOUT)).unwrap();
            match read {
                Ok(0) => panic!("waiting for an event: end of file after {:?}", String::from_utf8_lossy(&self.buf)),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => return None,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => panic!("waiting for an event: {e} after {:?}", String::from_utf8_lossy(&self.buf)),
            }
        }
    }

    /// Reads everything up to end of file (each read bounded by `TIMEOUT`).
    pub fn read_to_eof(&mut self) -> Vec<u8> {
        let mut all = std::mem::take(&mut self.buf);
        if let Err(e) = self.stream.read_to_end(&mut all) {
            panic!("reading to end of file: {e} after {} bytes", all.len());
        }
        all
    }

    /// Asserts the gateway closed the connection with nothing more to say.
    pub fn expect_eof(&mut self) {
        assert!(self.buf.is_empty(), "expected end of file, got {:?}", String::from_utf8_lossy(&self.buf));
        assert_eof(&mut self.stream);
    }

    /// Asserts nothing arrives for `window` and the connection stays open.
    pub fn expect_silence(&mut self, window: Duration) {
        assert!(self.buf.is_empty(), "expected silence, got {:?}", String::from_utf8_lossy(&self.buf));
        self.stream.set_read_timeout(Some(window)).unwrap();
        let mut byte = [0u8; 256];
        let result = self.stream.read(&mut byte);
        self.stream.set_read_timeout(Some(TIMEOUT)).unwrap();
        match result {
            Ok(0) => panic!("expected silence, the connection was closed"),
            Ok(n) => panic!("expected silence, got {:?}", String::from_utf8_lossy(&byte[..n])),
            Err(e) => assert!(
                matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut),
                "expected silence: {e}"
            ),
        }
    }
}
