//! One connection as the reactor holds it: the socket, its output buffer,
//! its deadline, and the protocol state of whatever speaks on it.
//!
//! Connections live in the reactor's slab and are sized for 100k+ of them:
//! an idle identified collar costs about a hundred bytes here and owns no
//! heap memory (input is read into a buffer shared by all connections and
//! only an unfinished line is copied out; output that the kernel accepted
//! at once is never buffered). A test pins the size.
//!
//! The closing [`Phase`]s implement a lingering close: after the last line
//! (a `BYE`) is written, the gateway shuts down its sending side and keeps
//! reading, discarding, until the peer closes too or a deadline passes.
//! Closing a socket that still has unread input makes the kernel send a
//! reset, which can destroy the `BYE` before the peer reads it.

use mio::net::TcpStream;

use crate::device::Session;
use crate::line::LineFramer;
use crate::time::Millis;
use crate::wheel::TimerId;

/// A connection in the slab.
#[derive(Debug)]
pub struct Connection {
    pub stream: TcpStream,
    /// Bumped for every connection that reuses a slab slot and carried in the
    /// token, so that an event or timer for a closed connection is recognized
    /// as stale instead of reaching its successor.
    pub generation: u32,
    /// The pending deadline, if any; cancelled when the connection is freed.
    pub timer: Option<TimerId>,
    /// When the last byte arrived. Storing this is all a read does to keep
    /// the connection alive: deadlines are derived from it when they fire.
    pub last_rx: Millis,
    /// Bytes accepted for sending that the kernel has not taken yet.
    pub out: OutBuf,
    /// Whether the poller is watching for WRITABLE; true exactly while
    /// `out` holds bytes (changing it costs an `epoll_ctl`).
    pub writable_interest: bool,
    pub phase: Phase,
    pub role: Role,
}

/// Where a connection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Speaking its protocol.
    Open,
    /// Decided to close (reason already counted); flushing `out`, then
    /// shutting down the write side. `peer_done` records that the peer has
    /// closed its side already, so the connection can be freed once flushed.
    Closing { peer_done: bool },
    /// Our side is shut down; reading and discarding until the peer closes or
    /// the linger deadline passes.
    Lingering,
}

/// What speaks on the connection.
#[derive(Debug)]
pub enum Role {
    Device(Device),
}

/// A collar connection: its session and its partial input line.
#[derive(Debug)]
pub struct Device {
    pub session: Session,
    pub framer: LineFramer,
}

/// Output waiting for the socket to become writable: a byte vector and how
/// much of it has been sent. Invariant: it holds no allocation when empty.
#[derive(Debug, Default)]
pub struct OutBuf {
    buf: Vec<u8>,
    /// Bytes of `buf` already written; `sent < buf.len()` unless both are 0.
    sent: usize,
}

impl OutBuf {
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// Unsent bytes.
    pub fn len(&self) -> usize {
        self.buf.len() - self.sent
    }

    /// The unsent bytes, in order.
    pub fn pending(&self) -> &[u8] {
        &self.buf[self.sent..]
    }

    pub fn push(&mut self, bytes: &[u8]) {
        // Reclaim the sent prefix before growing, rather than growing
        // behind bytes that are already gone.
        if self.sent > 0 && self.buf.len() + bytes.len() > self.buf.capacity() {
            self.buf.drain(..self.sent);
            self.sent = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// Marks `n` more bytes as written; frees the buffer once all are.
    pub fn consume(&mut self, n: usize) {
        self.sent += n;
        debug_assert!(self.sent <= self.buf.len());
        if self.sent == self.buf.len() {
            *self = OutBuf::default();
        }
    }

    /// Drops every unsent line that has not started to go out, keeping the
    /// rest of a line the kernel has taken part of, so the peer never sees a
    /// torn line. Used before a last `BYE` to a peer that does not read.
    pub fn keep_started_line(&mut self) {
        if self.sent == 0 || self.buf[self.sent - 1] == b'\n' {
            *self = OutBuf::default();
            return;
        }
        let end = memchr::memchr(b'\n', self.pending()).map_or(self.buf.len(), |i| self.sent + i + 1);
        self.buf.truncate(end);
        self.buf.drain(..self.sent);
        self.buf.shrink_to_fit();
        self.sent = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::size_of;

    #[test]
    fn a_connection_stays_small() {
        // The idle-memory target is 256 bytes of RSS per identified device
        // with the slab entry, the MAC index and the timer node together.
        // Grow this only with a reason.
        assert!(size_of::<Connection>() <= 128, "Connection is {} bytes", size_of::<Connection>());
    }

    #[test]
    fn out_buf_tracks_what_was_sent_and_frees_when_done() {
        let mut out = OutBuf::default();
        out.push(b"PONG\nPONG\n");
        out.consume(3);
        assert_eq!(out.pending(), b"G\nPONG\n");
        assert_eq!(out.len(), 7);
        out.push(b"OK\n");
        assert_eq!(out.pending(), b"G\nPONG\nOK\n");
        out.consume(10);
        assert!(out.is_empty());
        assert_eq!(out.buf.capacity(), 0, "no allocation once flushed");
    }

    #[test]
    fn keep_started_line_drops_only_unstarted_lines() {
        let mut out = OutBuf::default();
        out.push(b"PONG\nPONG\nPONG\n");
        out.consume(7); // "PONG\nPO" went out
        out.keep_started_line();
        assert_eq!(out.pending(), b"NG\n");

        let mut out = OutBuf::default();
        out.push(b"PONG\nPONG\n");
        out.consume(5); // a whole line went out
        out.keep_started_line();
        assert!(out.is_empty());

        let mut out = OutBuf::default();
        out.push(b"PONG\n");
        out.keep_started_line();
        assert!(out.is_empty(), "nothing started");
    }
}
