//! One connection as the reactor holds it: the socket, its output buffer,
//! its deadline, and the protocol state of whatever speaks on it.
//!
//! Connections live in the reactor's slab and are sized for 100k+ of them:
//! an idle identified collar costs about a hundred bytes here and owns no
//! heap memory (input is read into a buffer shared by all connections and
//! only an unfinished line is copied out; output that the kernel accepted
//! at once is never buffered, and the output buffer is a null pointer
//! until it is needed). A test pins the size.
//!
//! The closing [`Phase`]s implement a lingering close: after the last line
//! (a `BYE`) is written, the gateway shuts down its sending side and keeps
//! reading, discarding, until the peer closes too or a deadline passes.
//! Closing a socket that still has unread input makes the kernel send a
//! reset, which can destroy the `BYE` before the peer reads it.

use std::fmt;
use std::net::{SocketAddr, SocketAddrV6};

use mio::net::TcpStream;

use crate::device::Session;
use crate::http::HttpSession;
use crate::line::LineFramer;
use crate::time::Millis;
use crate::wheel::TimerId;

/// A connection in the slab.
#[derive(Debug)]
pub struct Connection {
    pub stream: TcpStream,
    /// The remote address, as `accept` returned it.
    pub peer: Peer,
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

impl Connection {
    /// Whether this is a device with a heartbeat PING not yet answered.
    pub fn heartbeat_outstanding(&self) -> bool {
        match &self.role {
            Role::Device(device) => device.session.awaiting_pong(self.last_rx),
            Role::Http(_) => false,
        }
    }
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
    /// Boxed: HTTP connections are few next to collars, and their state is
    /// larger; the box keeps every slab entry small.
    Http(Box<HttpSession>),
}

/// The two kinds of connection, for counting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Device = 0,
    Http = 1,
}

impl Kind {
    pub const ALL: [Kind; 2] = [Kind::Device, Kind::Http];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Device => "device",
            Kind::Http => "http",
        }
    }
}

impl Role {
    pub fn kind(&self) -> Kind {
        match self {
            Role::Device(_) => Kind::Device,
            Role::Http(_) => Kind::Http,
        }
    }
}

/// A peer address in 16 bytes instead of `SocketAddr`'s 32: IPv4 peers
/// (the common case) inline, IPv6 ones boxed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Peer {
    V4([u8; 4], u16),
    V6(Box<SocketAddrV6>),
}

impl From<SocketAddr> for Peer {
    fn from(addr: SocketAddr) -> Peer {
        match addr {
            SocketAddr::V4(v4) => Peer::V4(v4.ip().octets(), v4.port()),
            SocketAddr::V6(v6) => Peer::V6(Box::new(v6)),
        }
    }
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Peer::V4([a, b, c, d], port) => write!(f, "{a}.{b}.{c}.{d}:{port}"),
            Peer::V6(addr) => write!(f, "{addr}"),
        }
    }
}

/// A collar connection: its session and its partial input line.
#[derive(Debug)]
pub struct Device {
    pub session: Session,
    pub framer: LineFramer,
}

/// Output waiting for the socket to become writable. Most of the time
/// there is none (the kernel took every reply at once), so the buffer is
/// boxed: an empty `OutBuf` is one null pointer and owns no memory.
#[derive(Debug, Default)]
pub struct OutBuf {
    pending: Option<Box<Pending>>,
}

#[derive(Debug)]
struct Pending {
    buf: Vec<u8>,
    /// Bytes of `buf` already written; always `< buf.len()`.
    sent: usize,
    /// The bytes already on the wire end in the middle of a line, which the
    /// first unsent byte continues.
    mid_line: bool,
}

impl OutBuf {
    pub fn is_empty(&self) -> bool {
        self.pending.is_none()
    }

    /// Unsent bytes.
    pub fn len(&self) -> usize {
        self.pending.as_ref().map_or(0, |p| p.buf.len() - p.sent)
    }

    /// The unsent bytes, in order.
    pub fn pending(&self) -> &[u8] {
        self.pending.as_ref().map_or(&[], |p| &p.buf[p.sent..])
    }

    /// Queues `rest`, the part of a write the kernel did not take, into an
    /// empty buffer; `written` is the part it did take.
    pub fn queue_unwritten(&mut self, written: &[u8], rest: &[u8]) {
        debug_assert!(self.is_empty() && !rest.is_empty());
        let mid_line = written.last().is_some_and(|&b| b != b'\n');
        self.pending = Some(Box::new(Pending { buf: rest.to_vec(), sent: 0, mid_line }));
    }

    /// Queues bytes behind those already pending.
    pub fn push(&mut self, bytes: &[u8]) {
        let Some(p) = &mut self.pending else {
            if !bytes.is_empty() {
                self.queue_unwritten(&[], bytes);
            }
            return;
        };
        // Reclaim the sent prefix before growing, rather than growing
        // behind bytes that are already gone.
        if p.sent > 0 && p.buf.len() + bytes.len() > p.buf.capacity() {
            p.buf.drain(..p.sent);
            p.sent = 0;
        }
        p.buf.extend_from_slice(bytes);
    }

    /// Marks `n` more bytes as written; frees the buffer once all are.
    pub fn consume(&mut self, n: usize) {
        let Some(p) = &mut self.pending else { return };
        p.sent += n;
        debug_assert!(p.sent <= p.buf.len());
        if p.sent >= p.buf.len() {
            self.pending = None;
        } else if n > 0 {
            p.mid_line = p.buf[p.sent - 1] != b'\n';
        }
    }

    /// Drops every unsent line that has not started to go out, keeping the
    /// rest of a line the kernel has taken part of, so the peer never sees a
    /// torn line. Used before a last `BYE` to a peer that does not read.
    pub fn keep_started_line(&mut self) {
        let Some(p) = &mut self.pending else { return };
        if !p.mid_line {
            self.pending = None;
            return;
        }
        let end = memchr::memchr(b'\n', &p.buf[p.sent..]).map_or(p.buf.len(), |i| p.sent + i + 1);
        p.buf.truncate(end);
        p.buf.drain(..p.sent);
        p.buf.shrink_to_fit();
        p.sent = 0;
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
    fn peers_print_like_socket_addrs() {
        for text in ["127.0.0.1:3001", "[::1]:8080", "[fe80::1%2]:1"] {
            let addr: SocketAddr = text.parse().unwrap();
            assert_eq!(Peer::from(addr).to_string(), addr.to_string());
        }
        assert_eq!(size_of::<Peer>(), 16);
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
        assert!(out.pending.is_none(), "no allocation once flushed");
    }

    #[test]
    fn keep_started_line_after_a_partial_first_write() {
        // The kernel took "PONG\nPO" of a batch; the rest was queued.
        let mut out = OutBuf::default();
        let batch = b"PONG\nPONG\nPONG\n";
        out.queue_unwritten(&batch[..7], &batch[7..]);
        out.keep_started_line();
        assert_eq!(out.pending(), b"NG\n");

        // It took exactly one line: nothing is mid-line.
        let mut out = OutBuf::default();
        out.queue_unwritten(&batch[..5], &batch[5..]);
        out.keep_started_line();
        assert!(out.is_empty());
    }

    #[test]
    fn reclaiming_the_sent_prefix_remembers_a_started_line() {
        let mut out = OutBuf::default();
        out.queue_unwritten(b"", b"PONG\nPONG\n");
        out.consume(7); // "PONG\nPO" went out
        out.push(&[b'x'; 64]); // forces the sent prefix to be reclaimed
        out.keep_started_line();
        assert_eq!(out.pending(), b"NG\n");
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
