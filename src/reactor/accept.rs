//! Accepting connections on both listeners: draining the accept queue, the
//! connection caps, and backing off when the process runs out of file
//! descriptors.
//!
//! The listener is edge-triggered, so an event only says "something
//! arrived". [`Listener::ready`] remembers that the queue may still hold
//! connections until `accept` answers `WouldBlock`: the queue is drained
//! across turns (at most [`ACCEPT_BUDGET`] per turn, so a storm of 20k
//! connects does not starve the connections already open), and nothing is
//! left behind when a turn stops early.
//!
//! When `accept` fails with EMFILE/ENFILE the connection stays in the
//! kernel's queue. Retrying at once would spin (the error repeats until a
//! descriptor is freed) and giving up would strand it, so accepting pauses
//! for [`ACCEPT_BACKOFF`] and resumes from a timer with the listener still
//! marked ready.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use log::{debug, warn};
use mio::net::{TcpListener, TcpStream};
use mio::{Interest, Registry};

use super::Reactor;
use crate::close::CloseReason;
use crate::connection::{Connection, Device, Kind, OutBuf, Phase, Role};
use crate::device::Session;
use crate::http::{HttpSession, Response, json};
use crate::io as sock;
use crate::time::{Millis, deadline, millis};

/// Connections accepted per turn before other work gets a go.
const ACCEPT_BUDGET: usize = 1024;
/// Pause after `accept` fails for lack of descriptors or memory.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// At most one warning per this many milliseconds per kind of trouble.
const WARN_EVERY_MS: u64 = 1000;

/// A listener and what the reactor knows about its queue.
#[derive(Debug)]
pub(super) struct Listener {
    /// `None` once closed for shutdown.
    socket: Option<TcpListener>,
    /// What the accepted connections speak.
    kind: Kind,
    /// The accept queue may hold connections: set by a readiness event,
    /// cleared only when `accept` says `WouldBlock`.
    pub ready: bool,
    /// Accepting is paused until then, after running out of descriptors.
    pub paused_until: Option<Millis>,
}

impl Listener {
    pub fn new(socket: TcpListener, kind: Kind) -> Listener {
        Listener { socket: Some(socket), kind, ready: false, paused_until: None }
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        match &self.socket {
            Some(socket) => socket.local_addr(),
            None => Err(io::Error::new(io::ErrorKind::NotConnected, "listener closed")),
        }
    }

    /// Whether accepting now would find work.
    pub fn can_accept(&self, now: Millis) -> bool {
        self.socket.is_some() && self.ready && self.paused_until.is_none_or(|until| now >= until)
    }

    /// Closes the listening socket: new connects are refused from now on.
    pub fn close(&mut self, registry: &Registry) {
        if let Some(mut socket) = self.socket.take() {
            let _ = registry.deregister(&mut socket);
        }
        self.paused_until = None;
    }
}

impl Reactor {
    /// Accepts what is waiting on either listener.
    pub(super) fn accept(&mut self) {
        for i in 0..self.listeners.len() {
            self.accept_from(i);
        }
    }

    /// Accepts what is waiting on one listener, up to the per-turn budget.
    fn accept_from(&mut self, i: usize) {
        if !self.listeners[i].can_accept(self.now) {
            return;
        }
        self.listeners[i].paused_until = None;
        let kind = self.listeners[i].kind;
        for _ in 0..ACCEPT_BUDGET {
            let Some(socket) = &self.listeners[i].socket else { return };
            match socket.accept() {
                Ok((stream, peer)) => self.admit(stream, peer, kind),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.listeners[i].ready = false;
                    return;
                }
                Err(e) if connection_specific(&e) => {
                    // That connection is gone; the queue may hold others.
                    self.stats.accept_failed += 1;
                    debug!("accept: {e} (skipped)");
                }
                Err(e) => {
                    self.accept_failed(i, &e);
                    return;
                }
            }
        }
        // Budget spent with the listener still ready: the next turn goes on.
    }

    /// Backs off after an error that retrying at once would only repeat.
    fn accept_failed(&mut self, i: usize, e: &io::Error) {
        let out_of_fds = matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE));
        if out_of_fds {
            self.stats.accept_fd_exhausted += 1;
        } else {
            self.stats.accept_failed += 1;
        }
        self.listeners[i].paused_until = Some(self.now + millis(ACCEPT_BACKOFF));
        if let Some(suppressed) = self.warn_accept.allow(self.now, WARN_EVERY_MS) {
            let hint =
                if out_of_fds { " (out of file descriptors: raise the limit or lower --max-connections)" } else { "" };
            warn!(
                "accept failed: {e}{hint}; pausing accepts for {ACCEPT_BACKOFF:?} with {} connections open \
                 ({suppressed} more since the last warning)",
                self.conns.len()
            );
        }
    }

    /// Takes an accepted socket into the slab, or turns it away when full.
    fn admit(&mut self, mut stream: TcpStream, peer: SocketAddr, kind: Kind) {
        self.stats.accepted[kind as usize] += 1;
        let full = self.conns.len() >= self.max_connections
            || (kind == Kind::Http && self.open[Kind::Http as usize] >= self.config.max_http_connections);
        if full {
            self.reject_full(stream, peer, kind);
            return;
        }
        let entry = self.conns.vacant_entry();
        let key = entry.key();
        self.generation = self.generation.wrapping_add(1);
        let token = super::conn_token(key, self.generation);
        // Registered for reading only: WRITABLE is added while output waits.
        if let Err(e) = self.poll.registry().register(&mut stream, token, Interest::READABLE) {
            warn!("cannot register the connection from {peer}: {e}");
            self.stats.close(kind, CloseReason::IoError);
            return;
        }
        let (role, first_deadline) = match kind {
            Kind::Device => (
                Role::Device(Device { session: Session::new(self.now), framer: Default::default() }),
                deadline(self.now, self.config.handshake_timeout),
            ),
            Kind::Http => {
                (Role::Http(Box::new(HttpSession::new(self.now))), deadline(self.now, self.config.http_request_timeout))
            }
        };
        let timer = first_deadline.map(|at| self.wheel.insert(at, token));
        entry.insert(Connection {
            stream,
            peer: peer.into(),
            generation: self.generation,
            timer,
            last_rx: self.now,
            out: OutBuf::default(),
            writable_interest: false,
            phase: Phase::Open,
            role,
        });
        self.open[kind as usize] += 1;
        debug!("#{key} {} connection accepted from {peer}", kind.as_str());
    }

    /// Over the cap: say so (`BYE server-full`, or a 503) and close at
    /// once, so the client learns why instead of waiting in the backlog.
    fn reject_full(&mut self, stream: TcpStream, peer: SocketAddr, kind: Kind) {
        self.stats.close(kind, CloseReason::ServerFull);
        if let Some(suppressed) = self.warn_server_full.allow(self.now, WARN_EVERY_MS) {
            warn!(
                "server full ({} connections, {} http): rejecting {} connection from {peer} \
                 ({suppressed} more since the last warning)",
                self.conns.len(),
                self.open[Kind::Http as usize],
                kind.as_str()
            );
        }
        let mut farewell = Vec::new();
        match kind {
            Kind::Device => farewell.extend_from_slice(CloseReason::ServerFull.bye().unwrap_or_default()),
            Kind::Http => {
                let body = json::error("server full");
                Response::json(503, &body).write(&mut farewell, &self.config.cors_origin, false, false);
                self.stats.http_response(503);
            }
        }
        if let sock::Io::Done(n) = sock::write(&stream, &farewell) {
            self.stats.bytes_out += n as u64;
            self.stats.lines_out += u64::from(kind == Kind::Device);
        }
        // Discard anything the client already sent: closing with unread
        // input would make the kernel reset the connection, and the reset
        // can overtake the BYE.
        let _ = sock::read(&stream, &mut self.scratch);
    }
}

/// Errors that concern one connection in the queue, not the listener.
/// Linux reports a pending network error of the new socket from `accept`;
/// accept(2) says to treat these like `EAGAIN` and carry on.
fn connection_specific(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset | io::ErrorKind::Interrupted)
        || matches!(
            e.raw_os_error(),
            Some(
                libc::EPROTO
                    | libc::ENOPROTOOPT
                    | libc::ENETDOWN
                    | libc::ENONET
                    | libc::EHOSTDOWN
                    | libc::EHOSTUNREACH
                    | libc::ENETUNREACH
                    | libc::EOPNOTSUPP
                    | libc::EPERM
            )
        )
}
