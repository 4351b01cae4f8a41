//! The application on top of the reactor: what sessions' effects do, and
//! how an application reaches other connections ([`Ops`]).
//!
//! The reactor moves bytes and knows no protocol; an [`App`] holds what
//! connections share (for tether: which collar is online, the event log,
//! who waits for what) and gives effects their meaning. The reactor calls
//! it at four points: a connection opens ([`App::open`]) or is turned away
//! ([`App::refusal`]), a session returned an effect ([`App::apply`]), and a
//! connection whose output the application produces is about to be
//! written ([`App::produce`]). An application with work of its own (links
//! it dials, such as the Redis link, and their timers) also gets
//! [`App::start`] once and [`App::on_deadline`] at its own
//! [`App::deadline`]. While applying an effect the application
//! acts on other connections only through [`Ops`], which queues work for
//! the reactor (append output, deliver a reply, close) rather than running
//! any handler: nothing re-enters a session from inside another.

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;

use mio::{Interest, Registry, Token};
use slab::Slab;

use super::conn::{Conn, Peer, Phase};
use super::listener::Kind;
use super::outbuf::{OutBuf, Pool};
use super::session::Session;
use super::token;
use crate::close::CloseReason;
use crate::stats::Stats;
use crate::time::Millis;

/// What the application produced for a fed connection.
#[derive(Debug)]
pub enum Produce<R> {
    /// Caught up: nothing more until [`Ops::wake`].
    Idle,
    /// The budget ran out with more to produce: flush again next turn.
    More,
    /// Deliver this reply to the session; the connection is no longer fed.
    Reply(R),
    /// The feed cannot go on: close the connection.
    Close(CloseReason),
}

/// An application on the reactor. See the module documentation.
pub trait App {
    type Session: Session;

    /// A new connection on a listener of `kind`: its session.
    fn open(&mut self, kind: Kind, peer: &Peer, now: Millis) -> Self::Session;

    /// Appends to `out` what a connection turned away for `reason` is told
    /// (`ServerFull`, `PeerLimit`) before it is closed.
    fn refusal(&mut self, kind: Kind, reason: CloseReason, out: &mut Vec<u8>, stats: &mut Stats);

    /// Applies one effect returned by the session on `origin`.
    fn apply(&mut self, origin: Token, effect: Effect<Self>, ops: &mut Ops<'_, Self::Session>);

    /// Appends up to about `budget` bytes of the output of a fed
    /// connection (see [`Ops::feed`]).
    fn produce(
        &mut self,
        token: Token,
        out: &mut OutBuf,
        pool: &mut Pool,
        budget: usize,
        stats: &mut Stats,
    ) -> Produce<Reply<Self>>;

    /// Appends the application's figures to the periodic stats line.
    fn report(&self, _line: &mut String) {}

    /// The loop is about to start: the application may dial its links.
    fn start(&mut self, _ops: &mut Ops<'_, Self::Session>) {}

    /// When the application's own work is due (a link to redial, a key to
    /// refresh, a request to give up on); `None`: nothing. Asked every
    /// turn, so it must be cheap.
    fn deadline(&self) -> Option<Millis> {
        None
    }

    /// [`App::deadline`] has passed (timer phase).
    fn on_deadline(&mut self, _ops: &mut Ops<'_, Self::Session>) {}
}

/// The effect type of an application's sessions.
pub type Effect<A> = <<A as App>::Session as Session>::Effect;
/// The reply type of an application's sessions.
pub type Reply<A> = <<A as App>::Session as Session>::Reply;

/// Levels the reactor keeps that an application may report.
#[derive(Debug, Clone, Copy, Default)]
pub struct Levels {
    /// Connections held (open or closing), by [`Kind`].
    pub held: [usize; 2],
    /// Connection caps, by [`Kind`].
    pub caps: [usize; 2],
    /// The soft file-descriptor limit.
    pub fd_limit: u64,
    /// The gateway is shutting down.
    pub draining: bool,
    /// Output buffers kept for reuse.
    pub pooled_buffers: usize,
}

/// Why [`Ops::send`] did not queue the bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendError {
    /// No open connection has that token.
    Gone,
    /// The connection's output would pass its limit.
    Full,
}

/// The application's handle on the reactor while it applies an effect.
pub struct Ops<'a, S: Session> {
    pub(super) now: Millis,
    pub(super) config: &'a S::Config,
    pub(super) conns: &'a mut Slab<Conn<S>>,
    pub(super) pool: &'a mut Pool,
    pub(super) flush_queue: &'a mut VecDeque<Token>,
    pub(super) produce_queue: &'a mut VecDeque<Token>,
    pub(super) replies: &'a mut VecDeque<(Token, S::Reply)>,
    pub(super) closes: &'a mut VecDeque<(Token, CloseReason)>,
    pub(super) stats: &'a mut Stats,
    pub(super) levels: Levels,
    pub(super) registry: &'a Registry,
    pub(super) generations: &'a mut token::Generations,
    /// Links dialed while applying: their deadlines are filed after.
    pub(super) dialed: &'a mut Vec<usize>,
}

impl<S: Session> Ops<'_, S> {
    pub fn now(&self) -> Millis {
        self.now
    }

    pub fn stats(&mut self) -> &mut Stats {
        self.stats
    }

    pub fn levels(&self) -> Levels {
        self.levels
    }

    /// The open connection `token` names, if it still does.
    fn open(&self, token: Token) -> Option<&Conn<S>> {
        let (key, generation) = token::unpack(token);
        self.conns.get(key).filter(|c| c.generation == generation && c.phase == Phase::Open)
    }

    fn open_mut(&mut self, token: Token) -> Option<&mut Conn<S>> {
        let (key, generation) = token::unpack(token);
        self.conns.get_mut(key).filter(|c| c.generation == generation && c.phase == Phase::Open)
    }

    /// Output accepted for sending that the kernel has not taken yet, all
    /// connections together (a walk over the slab: for `/metrics`, not for
    /// every effect).
    pub fn unsent_bytes(&self) -> usize {
        self.conns.iter().map(|(_, c)| c.unsent()).sum()
    }

    /// The session of an open connection.
    pub fn session(&self, token: Token) -> Option<&S> {
        self.open(token).map(|c| &c.session)
    }

    /// The peer address of an open connection.
    pub fn peer(&self, token: Token) -> Option<&Peer> {
        self.open(token).map(|c| &c.peer)
    }

    /// When bytes last arrived on an open connection.
    pub fn last_rx(&self, token: Token) -> Option<Millis> {
        self.open(token).map(|c| c.last_rx)
    }

    /// Appends `bytes` to an open connection's output and schedules the
    /// flush; refused when the output would pass the session's limit.
    pub fn send(&mut self, token: Token, bytes: &[u8]) -> Result<(), SendError> {
        let (key, generation) = token::unpack(token);
        let conn = self
            .conns
            .get_mut(key)
            .filter(|c| c.generation == generation && c.phase == Phase::Open)
            .ok_or(SendError::Gone)?;
        if conn.unsent() + bytes.len() > conn.session.output_limit(self.config).bytes() {
            return Err(SendError::Full);
        }
        conn.out.push(bytes, self.pool);
        conn.queue_flush(key, self.flush_queue);
        Ok(())
    }

    /// Marks an open connection as fed: its output is produced by
    /// [`App::produce`] when it is flushed (see [`Ops::wake`]), from now on
    /// until `produce` says otherwise.
    pub fn feed(&mut self, token: Token) {
        if let Some(conn) = self.open_mut(token) {
            conn.fed = true;
        }
    }

    /// Schedules a fed connection's production: there is something new.
    /// Waking a connection that is waiting for its socket to drain costs
    /// nothing: the WRITABLE edge brings it back.
    pub fn wake(&mut self, token: Token) {
        let (key, generation) = token::unpack(token);
        if let Some(conn) = self.conns.get_mut(key).filter(|c| c.generation == generation) {
            conn.queue_produce(key, self.produce_queue);
        }
    }

    /// Delivers `reply` to the session on `token`, after this effect.
    pub fn reply(&mut self, token: Token, reply: S::Reply) {
        if self.open(token).is_some() {
            self.replies.push_back((token, reply));
        }
    }

    /// Opens an outbound link to `addr` spoken by `session` (a connection
    /// of [`Kind::Link`]). The connect is non-blocking: output sent before
    /// it completes waits for it (the connection starts out `blocked`, and
    /// the WRITABLE edge of the completed connect flushes it), and a connect
    /// that fails arrives as an I/O error, which closes the connection like
    /// any other (`Session::on_close`). Only an error the kernel reports at
    /// once (no route, no descriptor) is returned here.
    pub fn dial(&mut self, addr: SocketAddr, session: S) -> io::Result<Token> {
        let mut stream = mio::net::TcpStream::connect(addr)?;
        // Requests and replies are small and pipelined: no Nagle delay.
        stream.set_nodelay(true)?;
        let entry = self.conns.vacant_entry();
        let key = entry.key();
        let generation = self.generations.take();
        let token = token::pack(key, generation);
        self.registry.register(&mut stream, token, Interest::READABLE | Interest::WRITABLE)?;
        entry.insert(Conn {
            stream,
            generation,
            timer: None,
            last_rx: self.now,
            out: OutBuf::default(),
            peer: Peer::from(addr),
            kind: Kind::Link,
            phase: Phase::Open,
            readable: false,
            read_closed: false,
            // Not connected yet: the first write waits for the WRITABLE
            // edge instead of spending a syscall on EAGAIN.
            blocked: true,
            fed: false,
            in_run_queue: false,
            in_flush_queue: false,
            in_produce_queue: false,
            listener: super::conn::NO_LISTENER,
            tls: None,
            session,
        });
        self.dialed.push(key);
        Ok(token)
    }

    /// Closes the open connection on `token` for `reason`, after this
    /// effect.
    pub fn close(&mut self, token: Token, reason: CloseReason) {
        if self.open(token).is_some() {
            self.closes.push_back((token, reason));
        }
    }
}
