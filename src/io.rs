//! The one place that calls `read` and `write` on a connection.
//!
//! A non-blocking socket answers in more ways than `io::Result` makes
//! obvious: `WouldBlock` means "try again after the next readiness event",
//! `Interrupted` means "try again now", and a zero-length read means the
//! peer closed its side. [`read`] and [`write`] fold those into an [`Io`]
//! outcome so the reactor matches on what happened rather than on error
//! kinds.

use std::io::{self, Read, Write};

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
