//! A raw TCP client for the device protocol: it sends bytes as given and
//! asserts the exact bytes that come back, with a read timeout on every
//! wait, so a test states what is on the wire rather than what a parser
//! made of it. The HTTP client ([`super::http`]) and the binary's
//! ([`super::process`]) connect through it.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use super::TIMEOUT;

/// A valid MAC address unique to `n`, spelled upper-case with `:`.
pub fn mac(n: u32) -> String {
    let [a, b, c, d] = n.to_be_bytes();
    format!("02:00:{a:02X}:{b:02X}:{c:02X}:{d:02X}")
}

/// A raw TCP client with a read timeout.
pub struct Client {
    pub stream: TcpStream,
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Client {
        Client::from_stream(TcpStream::connect(addr).expect("connect"))
    }

    /// Connects with `SO_RCVBUF` set to `bytes` before the handshake (so the
    /// advertised window stays small), for a client that reads slowly.
    pub fn connect_with_recv_buffer(addr: SocketAddr, bytes: usize) -> Client {
        use socket2::{Domain, Protocol, Socket, Type};
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP)).unwrap();
        socket.set_recv_buffer_size(bytes).unwrap();
        socket.connect(&addr.into()).expect("connect");
        Client::from_stream(socket.into())
    }

    /// A client on a connected stream (say, one from
    /// [`super::kernel::connect_from`]), with the read timeout set.
    pub fn from_stream(stream: TcpStream) -> Client {
        stream.set_read_timeout(Some(TIMEOUT)).unwrap();
        stream.set_nodelay(true).unwrap();
        Client { stream }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("send");
    }

    /// Sends `IDENTIFY:<mac>` and expects `OK`.
    /// A client connected to `addr` that has identified as `mac` and read
    /// its `OK`.
    pub fn identified(addr: SocketAddr, mac: &str) -> Client {
        let mut client = Client::connect(addr);
        client.identify(mac);
        client
    }

    pub fn identify(&mut self, mac: &str) {
        self.send(format!("IDENTIFY:{mac}\n").as_bytes());
        self.expect(b"OK\n");
    }

    /// Reads exactly `expected.len()` bytes and asserts they are `expected`.
    pub fn expect(&mut self, expected: &[u8]) {
        self.expect_within(expected, TIMEOUT);
    }

    /// Like [`Client::expect`], but fails unless all of `expected` has
    /// arrived within `window` (for events that must not come late).
    pub fn expect_within(&mut self, expected: &[u8], window: Duration) {
        let deadline = Instant::now() + window;
        let mut got = Vec::with_capacity(expected.len());
        let mut buf = vec![0; expected.len()];
        while got.len() < expected.len() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                panic!(
                    "waiting for {:?}: not there within {window:?}, got {:?}",
                    String::from_utf8_lossy(expected),
                    String::from_utf8_lossy(&got)
                );
            }
            self.stream.set_read_timeout(Some(left)).unwrap();
            match self.stream.read(&mut buf[..expected.len() - got.len()]) {
                Ok(0) => panic!(
                    "waiting for {:?}: end of file after {:?}",
                    String::from_utf8_lossy(expected),
                    String::from_utf8_lossy(&got)
                ),
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => panic!(
                    "waiting for {:?}: {e} after {:?}",
                    String::from_utf8_lossy(expected),
                    String::from_utf8_lossy(&got)
                ),
            }
        }
        self.stream.set_read_timeout(Some(TIMEOUT)).unwrap();
        assert_eq!(String::from_utf8_lossy(&got), String::from_utf8_lossy(expected));
    }

    /// Reads one line, terminator included.
    pub fn read_line(&mut self) -> String {
        let mut line = Vec::new();
        let mut byte = [0u8];
        while line.last() != Some(&b'\n') {
            match self.stream.read(&mut byte) {
                Ok(0) => panic!("end of file inside a line after {:?}", String::from_utf8_lossy(&line)),
                Ok(_) => line.push(byte[0]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => panic!("reading a line: {e} after {:?}", String::from_utf8_lossy(&line)),
            }
        }
        String::from_utf8_lossy(&line).into_owned()
    }

    /// Reads everything up to end of file (each read bounded by `TIMEOUT`).
    pub fn read_to_eof(&mut self) -> Vec<u8> {
        let mut all = Vec::new();
        if let Err(e) = self.stream.read_to_end(&mut all) {
            panic!("reading to end of file: {e} after {} bytes", all.len());
        }
        all
    }

    /// Asserts the gateway closed the connection: end of file (or a reset)
    /// with no further bytes.
    pub fn expect_eof(&mut self) {
        assert_eof(&mut self.stream);
    }

    /// Asserts the gateway closed gracefully: end of file (its FIN), not a
    /// reset.
    pub fn expect_fin(&mut self) {
        let mut byte = [0u8; 256];
        match self.stream.read(&mut byte) {
            Ok(0) => {}
            Ok(n) => panic!("expected end of file, got {:?}", String::from_utf8_lossy(&byte[..n])),
            Err(e) => panic!("expected end of file: {e}"),
        }
    }

    /// Asserts the gateway closed abortively (`SO_LINGER` 0): a reset, with
    /// no further bytes.
    pub fn expect_reset(&mut self) {
        let mut byte = [0u8; 256];
        match self.stream.read(&mut byte) {
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {}
            Ok(0) => panic!("expected a reset, got end of file"),
            Ok(n) => panic!("expected a reset, got {:?}", String::from_utf8_lossy(&byte[..n])),
            Err(e) => panic!("expected a reset: {e}"),
        }
    }

    /// Asserts nothing arrives for `window` (a read that times out).
    pub fn expect_silence(&mut self, window: Duration) {
        self.stream.set_read_timeout(Some(window)).unwrap();
        let mut byte = [0u8; 64];
        match self.stream.read(&mut byte) {
            Ok(0) => panic!("expected silence, the connection was closed"),
            Ok(n) => panic!("expected silence, got {:?}", String::from_utf8_lossy(&byte[..n])),
            Err(e) => assert!(
                matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut),
                "expected silence: {e}"
            ),
        }
        self.stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    }

    /// Asserts nothing has arrived so far and the connection is not closed
    /// (a non-blocking read), without waiting.
    pub fn expect_nothing_yet(&mut self) {
        self.stream.set_nonblocking(true).unwrap();
        let mut byte = [0u8; 64];
        let result = self.stream.read(&mut byte);
        self.stream.set_nonblocking(false).unwrap();
        match result {
            Ok(0) => panic!("expected nothing yet, the connection was closed"),
            Ok(n) => panic!("expected nothing yet, got {:?}", String::from_utf8_lossy(&byte[..n])),
            Err(e) => assert_eq!(e.kind(), io::ErrorKind::WouldBlock, "expected nothing yet: {e}"),
        }
    }
}

/// Asserts the peer closed `stream`: end of file (or a reset) with no
/// further bytes.
pub(super) fn assert_eof(stream: &mut TcpStream) {
    let mut byte = [0u8; 256];
    match stream.read(&mut byte) {
        Ok(0) => {}
        Ok(n) => panic!("expected end of file, got {:?}", String::from_utf8_lossy(&byte[..n])),
        Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {}
        Err(e) => panic!("expected end of file: {e}"),
    }
}
