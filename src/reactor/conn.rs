//! One connection as the reactor holds it: the socket, its unsent output,
//! its timer, where it is in its life, and the protocol session that
//! speaks on it.
//!
//! Connections live in the reactor's slab and are sized for 100k+ of them:
//! the reactor's part is a few words, and it owns no heap memory while the
//! connection is idle (input is read into one buffer shared by all
//! connections; output that the kernel took at once is never kept).
//!
//! The closing [`Phase`]s implement a lingering close: after its last words
//! (a `BYE`, a last response) the connection shuts down its sending side
//! and keeps reading, discarding, until the peer closes too or a deadline
//! passes. Closing a socket that still has unread input makes the kernel
//! send a reset, which can destroy those last words before the peer reads
//! them.

use std::collections::VecDeque;
use std::fmt;
use std::net::{IpAddr, SocketAddr, SocketAddrV6};

use mio::Token;
use mio::net::TcpStream;

use super::listener::Kind;
use super::outbuf::OutBuf;
use super::tls::Tls;
use super::token;
use crate::time::Millis;
use crate::wheel::TimerId;

/// A connection in the slab.
#[derive(Debug)]
pub struct Conn<S> {
    pub stream: TcpStream,
    /// Bumped for every connection that reuses a slab slot and carried in
    /// the token (see [`super::token`]).
    pub generation: u32,
    /// The one pending timer, if any: the session's deadline while open,
    /// the linger deadline while closing. Cancelled when the connection is
    /// freed.
    pub timer: Option<TimerId>,
    /// When the last byte arrived. Storing this is all a read does to keep
    /// the connection alive: deadlines are derived from it when they fire.
    pub last_rx: Millis,
    /// Bytes accepted for sending that the kernel has not taken yet.
    pub out: OutBuf,
    /// The remote address, as `accept` returned it.
    pub peer: Peer,
    pub kind: Kind,
    /// The index of the listener that accepted it ([`NO_LISTENER`] for a
    /// link): a kind may have two listeners, plain and TLS.
    pub listener: u8,
    pub phase: Phase,
    /// The socket may hold unread input: set by a readiness event, cleared
    /// by a read that drained it. With edge-triggered readiness this is the
    /// only memory of input left behind by a budget or by back-pressure.
    pub readable: bool,
    /// The readiness event reported the peer's FIN or an error: read on to
    /// the end of file.
    pub read_closed: bool,
    /// The last write did not take everything: wait for a WRITABLE edge
    /// before writing again.
    pub blocked: bool,
    /// The application produces this connection's output when it is
    /// flushed (an event stream, a waiting long poll).
    pub fed: bool,
    /// In the run queue (input or buffered work to handle).
    pub in_run_queue: bool,
    /// In the flush queue (output to write).
    pub in_flush_queue: bool,
    /// In the produce queue (a fed connection with output to produce).
    pub in_produce_queue: bool,
    /// The TLS layer between the socket and the session, on a connection
    /// accepted by a TLS listener (see [`super::tls`]); boxed, so a plain
    /// connection pays one null pointer.
    pub tls: Option<Box<Tls>>,
    pub session: S,
}

/// [`Conn::listener`] of a connection no listener accepted (a link).
pub const NO_LISTENER: u8 = u8::MAX;

impl<S> Conn<S> {
    /// This connection's token, given its slab key.
    pub fn token(&self, key: usize) -> Token {
        token::pack(key, self.generation)
    }

    /// Bytes accepted for sending that the kernel has not taken: the
    /// plaintext not yet sealed and, on a TLS connection, the records
    /// sealed and not yet written (see [`Tls::unsent`]). This is what
    /// output limits judge.
    pub fn unsent(&self) -> usize {
        self.out.len() + self.tls.as_ref().map_or(0, |tls| tls.unsent())
    }

    /// Whether it has bytes to write: unsent plaintext (on a TLS
    /// connection, once the handshake completed), or sealed TLS records.
    pub fn has_output(&self) -> bool {
        match &self.tls {
            None => !self.out.is_empty(),
            Some(tls) => tls.has_output(!self.out.is_empty()),
        }
    }

    /// Puts it in the run queue, once.
    pub(super) fn queue_run(&mut self, key: usize, queue: &mut VecDeque<Token>) {
        if !self.in_run_queue {
            self.in_run_queue = true;
            queue.push_back(self.token(key));
        }
    }

    /// Puts it in the flush queue, once, unless it waits for a WRITABLE
    /// edge (which will bring it back).
    pub(super) fn queue_flush(&mut self, key: usize, queue: &mut VecDeque<Token>) {
        if !self.in_flush_queue && !self.blocked {
            self.in_flush_queue = true;
            queue.push_back(self.token(key));
        }
    }

    /// Puts an open fed connection in the produce queue, once, unless it
    /// waits for a WRITABLE edge.
    pub(super) fn queue_produce(&mut self, key: usize, queue: &mut VecDeque<Token>) {
        if self.fed && self.phase == Phase::Open && !self.in_produce_queue && !self.blocked {
            self.in_produce_queue = true;
            queue.push_back(self.token(key));
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

/// A peer address in 16 bytes instead of `SocketAddr`'s 32: IPv4 peers
/// (the common case) inline, IPv6 ones boxed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Peer {
    V4([u8; 4], u16),
    V6(Box<SocketAddrV6>),
}

impl Peer {
    pub fn ip(&self) -> IpAddr {
        match self {
            Peer::V4(octets, _) => IpAddr::from(*octets),
            Peer::V6(addr) => IpAddr::V6(*addr.ip()),
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::size_of;

    #[test]
    fn the_reactors_part_of_a_connection_stays_small() {
        // With a device session this must stay within 128 bytes (a test in
        // `crate::proto` pins the whole); grow it only with a reason. The
        // socket is 4 bytes in a release build (mio adds a registration
        // check in debug builds). TLS took 8 bytes: the null pointer of a
        // plain connection's `tls` (the listener's index sits in padding).
        let own = size_of::<Conn<()>>() - size_of::<TcpStream>();
        assert!(own <= 64, "the reactor's part of a connection is {own} bytes besides the socket");
    }

    #[test]
    fn peers_print_like_socket_addrs() {
        for text in ["127.0.0.1:3001", "[::1]:8080", "[fe80::1%2]:1"] {
            let addr: SocketAddr = text.parse().unwrap();
            assert_eq!(Peer::from(addr).to_string(), addr.to_string());
            assert_eq!(Peer::from(addr).ip(), addr.ip());
        }
        assert_eq!(size_of::<Peer>(), 16);
    }
}
