//! The one place that calls `read` and `write` on a socket, and the
//! budgeted read loop that every connection is read with.
//!
//! A non-blocking socket answers in more ways than `io::Result` makes
//! obvious: `WouldBlock` means "try again after the next readiness event",
//! `Interrupted` means "try again now", and a zero-length read means the
//! peer closed its side. [`read`] and [`write()`] fold those into an [`Io`]
//! outcome so callers match on what happened rather than on error kinds.
//!
//! [`read_budgeted`] is the loop around [`read`] for an edge-triggered
//! socket: read until the receive queue is empty, the peer closes, the
//! consumer has had enough, or the turn's budget of reads is spent (then
//! the caller must come back, since no new edge will announce the bytes
//! left behind). The gateway and `tether-load` both read this way.

use std::io::{self, Read, Write};
use std::ops::ControlFlow;

use mio::net::TcpStream;

/// What one read or write did.
#[derive(Debug)]
pub enum Io {
    /// This many bytes were transferred (never zero).
    Done(usize),
    /// The socket is not ready; wait for its next event.
    WouldBlock,
    /// The peer closed its sending side (a read returned end of file).
    Closed,
    /// The connection failed (reset, broken pipe, ...).
    Failed(io::Error),
}

/// Reads once into `buf`, retrying only when interrupted by a signal.
pub fn read(mut stream: &TcpStream, buf: &mut [u8]) -> Io {
    loop {
        return match stream.read(buf) {
            Ok(0) => Io::Closed,
            Ok(n) => Io::Done(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Io::WouldBlock,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => Io::Failed(e),
        };
    }
}

/// Writes once from `buf`, retrying only when interrupted by a signal.
pub fn write(mut stream: &TcpStream, buf: &[u8]) -> Io {
    loop {
        return match stream.write(buf) {
            Ok(0) => Io::Failed(io::ErrorKind::WriteZero.into()),
            Ok(n) => Io::Done(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Io::WouldBlock,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => Io::Failed(e),
        };
    }
}

/// A socket as `std::io::Read` and `Write`, through [`read`] and
/// [`write()`], for a layer that moves the bytes itself: `tether-load`'s
/// buffered rustls client reads records with `read_tls` and writes them
/// with `write_tls` (the gateway's TLS layer reads into the scratch buffer
/// with [`read`] instead). `WouldBlock` and end of file come back as the
/// `io` results std readers expect.
pub struct Wire<'a>(pub &'a TcpStream);

impl Read for Wire<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match read(self.0, buf) {
            Io::Done(n) => Ok(n),
            Io::WouldBlock => Err(io::ErrorKind::WouldBlock.into()),
            Io::Closed => Ok(0),
            Io::Failed(e) => Err(e),
        }
    }
}

impl Write for Wire<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match write(self.0, buf) {
            Io::Done(n) => Ok(n),
            Io::WouldBlock => Err(io::ErrorKind::WouldBlock.into()),
            Io::Closed => Ok(0),
            Io::Failed(e) => Err(e),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// How a [`read_budgeted`] loop ended.
#[derive(Debug)]
pub enum ReadEnd {
    /// The receive queue is empty (a short read, or `WouldBlock`): any
    /// byte arriving later raises a new readiness edge.
    Drained,
    /// `budget` reads were made and more input may be waiting: read again
    /// later, since no new edge will announce it.
    Budget,
    /// The consumer broke off; input may be left in the socket.
    Stopped,
    /// The peer closed its sending side.
    Closed,
    /// The read failed.
    Failed(io::Error),
}

/// Reads `stream` into `scratch` and hands each chunk to `on_bytes`, at
/// most `budget` times.
///
/// A read shorter than `scratch` means the receive queue was emptied, so
/// the read that would only say `WouldBlock` is skipped, unless `to_eof`
/// asks to read on: when the readiness event already reported the peer's
/// FIN, no further edge will announce the end of file.
pub fn read_budgeted(
    stream: &TcpStream,
    scratch: &mut [u8],
    budget: usize,
    to_eof: bool,
    mut on_bytes: impl FnMut(&[u8]) -> ControlFlow<()>,
) -> ReadEnd {
    for _ in 0..budget {
        let n = match read(stream, scratch) {
            Io::Done(n) => n,
            Io::WouldBlock => return ReadEnd::Drained,
            Io::Closed => return ReadEnd::Closed,
            Io::Failed(e) => return ReadEnd::Failed(e),
        };
        if on_bytes(&scratch[..n]).is_break() {
            return ReadEnd::Stopped;
        }
        if n < scratch.len() && !to_eof {
            return ReadEnd::Drained;
        }
    }
    ReadEnd::Budget
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{TcpListener, TcpStream as StdStream};

    /// A connected pair: the std client and the accepted mio end.
    fn pair() -> (StdStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = StdStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        server.set_nonblocking(true).unwrap();
        (client, TcpStream::from_std(server))
    }

    /// Waits until the server end has `n` bytes queued (loopback delivers
    /// within microseconds, but not synchronously with `write`).
    fn wait_for(server: &TcpStream, n: usize) {
        let mut buf = vec![0; n];
        for _ in 0..10_000 {
            if server.peek(&mut buf).unwrap_or(0) >= n {
                return;
            }
            std::thread::yield_now();
        }
        panic!("{n} bytes never arrived");
    }

    #[test]
    fn a_short_read_ends_the_loop_without_a_second_read() {
        let (mut client, server) = pair();
        client.write_all(b"PING\n").unwrap();
        wait_for(&server, 5);
        let mut scratch = [0u8; 64];
        let mut chunks = Vec::new();
        let end = read_budgeted(&server, &mut scratch, 4, false, |bytes| {
            chunks.push(bytes.to_vec());
            ControlFlow::Continue(())
        });
        assert!(matches!(end, ReadEnd::Drained), "{end:?}");
        assert_eq!(chunks, vec![b"PING\n".to_vec()]);
    }

    #[test]
    fn the_budget_stops_a_long_input_and_the_rest_waits() {
        let (mut client, server) = pair();
        client.write_all(&[b'x'; 40]).unwrap();
        wait_for(&server, 40);
        let mut scratch = [0u8; 8];
        let mut got = 0;
        let end = read_budgeted(&server, &mut scratch, 3, false, |bytes| {
            got += bytes.len();
            ControlFlow::Continue(())
        });
        assert!(matches!(end, ReadEnd::Budget), "{end:?}");
        assert_eq!(got, 24, "three full reads of eight bytes");
        let end = read_budgeted(&server, &mut scratch, 10, false, |bytes| {
            got += bytes.len();
            ControlFlow::Continue(())
        });
        assert!(matches!(end, ReadEnd::Drained), "{end:?}");
        assert_eq!(got, 40);
    }

    #[test]
    fn to_eof_reads_past_a_short_read_to_the_end_of_file() {
        let (mut client, server) = pair();
        client.write_all(b"BYE").unwrap();
        client.shutdown(std::net::Shutdown::Write).unwrap();
        wait_for(&server, 3);
        let mut scratch = [0u8; 64];
        let end = read_budgeted(&server, &mut scratch, 4, true, |_| ControlFlow::Continue(()));
        assert!(matches!(end, ReadEnd::Closed), "{end:?}");
    }

    #[test]
    fn the_consumer_can_stop_the_loop() {
        let (mut client, server) = pair();
        client.write_all(&[b'x'; 20]).unwrap();
        wait_for(&server, 20);
        let mut scratch = [0u8; 8];
        let end = read_budgeted(&server, &mut scratch, 4, false, |_| ControlFlow::Break(()));
        assert!(matches!(end, ReadEnd::Stopped), "{end:?}");
    }
}
