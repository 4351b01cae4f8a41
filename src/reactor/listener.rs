//! Accepting connections: the listening sockets, their caps, and backing
//! off when the process runs out of file descriptors.
//!
//! Each listener has its own share of the descriptors ([`Spec::cap`]), so
//! collars at their cap cannot lock the app's API out, nor the other way
//! round. A full listener turns a newcomer away with a word of explanation
//! (written by the application: `BYE server-full`, a 503), or, where
//! [`Spec::evict_idle`] allows, closes its longest-idle connection to make
//! room, as nginx does with keep-alive connections. [`Spec::per_ip`] stops
//! one address from holding a listener's whole share.
//!
//! A listener is edge-triggered, so an event only says "something
//! arrived". `Listener::backlog` remembers that the kernel's accept queue
//! may still hold connections until `accept` answers `WouldBlock`: the
//! queue is drained across turns (at most [`super::Budgets::accepts`] per
//! turn), and nothing is left behind when a turn stops early. A connection
//! accepted in a turn is read in that turn.
//!
//! When `accept` fails with EMFILE/ENFILE the connection stays in the
//! kernel's queue. Retrying at once would spin (the error repeats until a
//! descriptor is freed) and giving up would strand it, so accepting pauses
//! for [`ACCEPT_BACKOFF`] (`poll` wakes up for it) with the backlog still
//! marked pending.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use log::{debug, warn};
use mio::net::{TcpListener, TcpStream};
use mio::{Interest, Registry, Token};

use super::app::App;
use super::budget::Budget;
use super::conn::{Conn, Peer, Phase};
use super::io as sock;
use super::outbuf::OutBuf;
use super::session::Session as _;
use super::tls::Tls;
use super::token;
use super::{Reactor, plural};
use crate::close::CloseReason;
use crate::net::ListenOptions;
use crate::time::{Millis, millis};

/// How long accepting pauses after running out of file descriptors.
pub const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// At most one warning per this many milliseconds per kind of trouble.
const WARN_EVERY_MS: u64 = 1000;

/// What a listener's connections speak, for counting and for the order of
/// a shutdown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Device = 0,
    Http = 1,
    /// An outbound link the application dialed ([`super::Ops::dial`]), e.g.
    /// to Redis: no listener, no share, no drain of its own (it is told to
    /// finish once every other connection has closed).
    Link = 2,
}

impl Kind {
    /// The kinds that have a listener.
    pub const ALL: [Kind; 2] = [Kind::Device, Kind::Http];
    /// The order in which a shutdown tells connections to finish: the app's
    /// pending answers first, so that the devices' goodbyes do not answer
    /// them as if nothing happened.
    pub const DRAIN_ORDER: [Kind; 2] = [Kind::Http, Kind::Device];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Device => "device",
            Kind::Http => "http",
            Kind::Link => "link",
        }
    }
}

/// How to listen, and whom to let in.
#[derive(Debug, Clone)]
pub struct Spec {
    pub kind: Kind,
    pub addr: SocketAddr,
    pub options: ListenOptions,
    /// Most connections held at once, closing ones included (each holds a
    /// descriptor).
    pub cap: usize,
    /// Most connections held at once from one IP address.
    pub per_ip: Option<usize>,
    /// At the cap, close the longest-idle connection (see
    /// [`Session::idle_since`](super::Session::idle_since)) to admit a new one.
    pub evict_idle: bool,
    /// Stays open during a shutdown (so a load balancer sees `/health`
    /// answer "draining" rather than a refused connection).
    pub open_while_draining: bool,
    /// Speak TLS with this configuration on every connection accepted
    /// (see [`super::tls`]); replaced on a reload.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Where `tls` was loaded from, to load it again on SIGHUP.
    pub tls_files: Option<crate::tls::TlsFiles>,
}

/// A listener and what the reactor knows about its queue and its share.
#[derive(Debug)]
pub(super) struct Listener {
    /// `None` once closed for shutdown.
    socket: Option<TcpListener>,
    pub spec: Spec,
    /// The accept queue may hold connections: set by a readiness event,
    /// cleared only when `accept` says `WouldBlock`.
    pub backlog: bool,
    /// Accepting is paused until then, after running out of descriptors.
    pub paused_until: Option<Millis>,
    /// Connections held, open or closing.
    pub held: usize,
    /// Connections held per address, when [`Spec::per_ip`] is set.
    per_ip: HashMap<IpAddr, usize>,
    /// Connections that may be closed to make room, when
    /// [`Spec::evict_idle`] is set: each entry is a connection and the time
    /// it became idle, in the order they became idle. Entries are not taken
    /// out when a connection gets busy or closes (a request costs one
    /// `push_back`, not a search): an entry whose connection is gone, or is
    /// no longer idle since that time, is stale and skipped. The queue is
    /// compacted when it holds more than twice the connections held.
    idle: VecDeque<(Token, Millis)>,
}

impl Listener {
    pub fn new(socket: TcpListener, spec: Spec) -> Listener {
        Listener {
            socket: Some(socket),
            spec,
            backlog: false,
            paused_until: None,
            held: 0,
            per_ip: HashMap::new(),
            idle: VecDeque::new(),
        }
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        match &self.socket {
            Some(socket) => socket.local_addr(),
            None => Err(io::Error::new(io::ErrorKind::NotConnected, "listener closed")),
        }
    }

    /// Whether accepting now would find work.
    pub fn can_accept(&self, now: Millis) -> bool {
        self.socket.is_some() && self.backlog && self.paused_until.is_none_or(|until| now >= until)
    }

    /// Closes the listening socket: new connects are refused from now on.
    pub fn close(&mut self, registry: &Registry) {
        if let Some(mut socket) = self.socket.take() {
            let _ = registry.deregister(&mut socket);
        }
        self.paused_until = None;
    }

    /// A connection from `ip` was admitted.
    fn hold(&mut self, ip: IpAddr) {
        self.held += 1;
        if self.spec.per_ip.is_some() {
            *self.per_ip.entry(ip).or_default() += 1;
        }
    }

    /// A connection from `ip` was freed.
    pub fn release(&mut self, ip: IpAddr) {
        self.held -= 1;
        if self.spec.per_ip.is_some()
            && let Some(n) = self.per_ip.get_mut(&ip)
        {
            *n -= 1;
            if *n == 0 {
                self.per_ip.remove(&ip);
            }
        }
    }

    fn held_from(&self, ip: IpAddr) -> usize {
        self.per_ip.get(&ip).copied().unwrap_or(0)
    }
}

/// Takes the connection idle the longest from `queue` (see
/// [`Listener::idle`]) for which `still_idle` gives a slab key, dropping
/// the stale entries in front of it.
fn take_idle(
    queue: &mut VecDeque<(Token, Millis)>,
    still_idle: impl Fn(Token, Millis) -> Option<usize>,
) -> Option<usize> {
    while let Some((token, since)) = queue.pop_front() {
        if let Some(key) = still_idle(token, since) {
            return Some(key);
        }
    }
    None
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

impl<A: App> Reactor<A> {
    /// Accepts what is waiting on every listener, each within its budget.
    pub(super) fn accept_phase(&mut self, app: &mut A) {
        for i in 0..self.listeners.len() {
            if !self.listeners[i].can_accept(self.now) {
                continue;
            }
            self.listeners[i].paused_until = None;
            let mut accepted = 0;
            loop {
                if accepted == self.settings.budgets.accepts {
                    // The queue may hold more: the next turn goes on.
                    self.stats.budget_spent(Budget::Accepts);
                    break;
                }
                let Some(socket) = &self.listeners[i].socket else { break };
                match socket.accept() {
                    Ok((stream, peer)) => {
                        accepted += 1;
                        self.admit(app, i, stream, peer);
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        self.listeners[i].backlog = false;
                        break;
                    }
                    Err(e) if connection_specific(&e) => {
                        // That connection is gone; the queue may hold
                        // others. It counts against the budget all the same.
                        accepted += 1;
                        self.stats.accept_failed += 1;
                        debug!("accept: {e} (skipped)");
                    }
                    Err(e) => {
                        self.accept_failed(i, &e);
                        break;
                    }
                }
            }
        }
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
                "accept failed: {e}{hint}; pausing accepts for {ACCEPT_BACKOFF:?} with {} open \
                 ({suppressed} more since the last warning)",
                plural(self.conns.len(), "connection")
            );
        }
    }

    /// Takes an accepted socket into the slab, or turns it away.
    fn admit(&mut self, app: &mut A, i: usize, mut stream: TcpStream, peer: SocketAddr) {
        let kind = self.listeners[i].spec.kind;
        self.stats.accepted[kind as usize] += 1;
        let listener = &self.listeners[i];
        if let Some(limit) = listener.spec.per_ip
            && listener.held_from(peer.ip()) >= limit
        {
            return self.refuse(app, i, stream, peer, CloseReason::PeerLimit);
        }
        if self.listeners[i].held >= self.listeners[i].spec.cap {
            // Make room by closing the connection idle the longest, if the
            // listener allows it and one is idle (input that arrived and is
            // not read yet is not idleness); else turn the new one away.
            let mut queue = std::mem::take(&mut self.listeners[i].idle);
            let idle = take_idle(&mut queue, |token, since| self.idle_since(token, since));
            self.listeners[i].idle = queue;
            match idle {
                Some(idle) => {
                    debug!("#{idle} closed to make room for a connection from {peer}");
                    self.close(idle, CloseReason::Evicted);
                    self.settle(app);
                }
                _ => return self.refuse(app, i, stream, peer, CloseReason::ServerFull),
            }
        }
        let entry = self.conns.vacant_entry();
        let key = entry.key();
        let generation = self.generations.take();
        let token = token::pack(key, generation);
        // Readiness in both directions, edge-triggered, registered once:
        // WRITABLE edges arrive only after a write could not take
        // everything, so watching for them costs nothing in steady state
        // and saves an `epoll_ctl` per backlog.
        if let Err(e) = self.poll.registry().register(&mut stream, token, Interest::READABLE | Interest::WRITABLE) {
            warn!("cannot register the connection from {peer}: {e}");
            self.stats.close(kind, CloseReason::IoError);
            return;
        }
        let tls = match &self.listeners[i].spec.tls {
            None => None,
            Some(config) => match Tls::accept(config) {
                Ok(tls) => Some(tls),
                Err(e) => {
                    warn!("cannot start TLS with {peer}: {e}");
                    self.stats.close(kind, CloseReason::TlsError);
                    return;
                }
            },
        };
        let peer = Peer::from(peer);
        let session = app.open(kind, &peer, self.now);
        self.listeners[i].hold(peer.ip());
        debug!("#{key} {} connection accepted from {peer}", kind.as_str());
        entry.insert(Conn {
            stream,
            generation,
            timer: None,
            last_rx: self.now,
            out: OutBuf::default(),
            peer,
            kind,
            phase: Phase::Open,
            // Read in this turn: a collar usually sends IDENTIFY with its
            // connect, and a deadline must not beat input that arrived.
            readable: true,
            read_closed: false,
            blocked: false,
            fed: false,
            in_run_queue: false,
            in_flush_queue: false,
            in_produce_queue: false,
            listener: i as u8,
            tls,
            session,
        });
        self.rearm(key);
        self.schedule_run(key);
    }

    /// Turns a connection away with the application's word of explanation
    /// (`BYE server-full`, a 503) and closes it at once.
    fn refuse(&mut self, app: &mut A, i: usize, stream: TcpStream, peer: SocketAddr, reason: CloseReason) {
        let kind = self.listeners[i].spec.kind;
        self.stats.close(kind, reason);
        let listener = &self.listeners[i];
        if let Some(suppressed) = self.warn_refused.allow(self.now, WARN_EVERY_MS) {
            warn!(
                "{} ({} of at most {} held): turning away a connection from {peer} ({suppressed} more since \
                 the last warning)",
                reason.as_str(),
                plural(listener.held, &format!("{} connection", kind.as_str())),
                listener.spec.cap,
            );
        }
        // A TLS listener's peer expects a handshake, not clear text: it is
        // turned away without a word.
        if listener.spec.tls.is_none() {
            let mut farewell = std::mem::take(&mut self.farewell);
            farewell.clear();
            app.refusal(kind, reason, &mut farewell, &mut self.stats);
            if let sock::Io::Done(n) = sock::write(&stream, &farewell) {
                self.stats.bytes_out += n as u64;
                self.stats.writes += 1;
            }
            self.farewell = farewell;
        }
        // Discard anything the client already sent: closing with unread
        // input would make the kernel reset the connection, and the reset
        // can overtake the farewell.
        let _ = sock::read(&stream, &mut self.scratch);
    }

    /// Files the connection with its listener if it is idle (see
    /// [`Listener::idle`]).
    pub(super) fn track_idle(&mut self, key: usize) {
        let conn = &self.conns[key];
        let i = conn.listener as usize;
        if i >= self.listeners.len()
            || !self.listeners[i].spec.evict_idle
            || conn.phase != Phase::Open
            || !conn.out.is_empty()
        {
            return;
        }
        let Some(since) = conn.session.idle_since() else { return };
        let token = conn.token(key);
        let listener = &mut self.listeners[i];
        if listener.idle.back() == Some(&(token, since)) {
            return;
        }
        listener.idle.push_back((token, since));
        if listener.idle.len() > 2 * listener.held + 64 {
            let mut idle = std::mem::take(&mut self.listeners[i].idle);
            idle.retain(|&(token, since)| self.idle_since(token, since).is_some());
            self.listeners[i].idle = idle;
        }
    }

    /// The slab key of the connection `token`, if it is open, has nothing
    /// to send and no input waiting, and has been idle since `since`.
    fn idle_since(&self, token: Token, since: Millis) -> Option<usize> {
        let key = self.live_key(token)?;
        let conn = &self.conns[key];
        let idle = conn.phase == Phase::Open
            && !conn.readable
            && conn.out.is_empty()
            && conn.session.idle_since() == Some(since);
        idle.then_some(key)
    }
}

/// The index of the listener of `kind`.
pub(super) fn kind_index(listeners: &[Listener], kind: Kind) -> usize {
    listener_of(listeners, kind).expect("a listener of every listening kind held")
}

/// The index of the listener of `kind`, if it has one (a link has none).
pub(super) fn listener_of(listeners: &[Listener], kind: Kind) -> Option<usize> {
    listeners.iter().position(|l| l.spec.kind == kind)
}
