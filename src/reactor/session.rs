//! The one small trait every protocol implements to plug into the reactor.
//!
//! A [`Session`] is the protocol state of one connection, written sans-IO:
//! it is handed bytes and the time, appends what it has to say to its own
//! output ([`Cx::out`]), and returns what it wants done elsewhere as
//! values ([`Cx::effects`]): publish an event, answer a waiter, take over a
//! MAC. It never sees a socket, the poller, another connection or the
//! clock, so every protocol is tested with byte strings and a made-up
//! `now`. The reactor calls it; it never calls back.
//!
//! The calls, and when the reactor makes them:
//! - [`Session::on_input`]: bytes arrived (read phase);
//! - [`Session::on_resume`]: go on with work left from an earlier call
//!   ([`Session::has_work`]), e.g. pipelined requests past the turn's
//!   budget (read phase, next turn);
//! - [`Session::on_reply`]: the answer to an effect that asked for one;
//! - [`Session::on_deadline`]: the deadline from [`Session::deadline`] has
//!   passed (timer phase);
//! - [`Session::on_peer_identity`]: a mutual-TLS handshake completed, and
//!   this is whom the client certificate names (read phase, once);
//! - [`Session::on_drain`]: the gateway is shutting down;
//! - [`Session::on_close`]: the connection is leaving `Open` for `reason`:
//!   last words, and effects that undo what being open registered.

use mio::Token;

use super::budget::Budgets;
use super::outbuf::{OutBuf, Pool};
use crate::close::CloseReason;
use crate::stats::Stats;
use crate::time::Millis;

/// What the reactor does after a session call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum Next {
    Continue,
    /// Close the connection for this reason (the reactor then calls
    /// [`Session::on_close`]).
    Close(CloseReason),
}

/// How much unsent output a session tolerates, and what happens past it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputLimit {
    /// Past this many bytes left after a write the peer is dropped as a
    /// slow consumer.
    CloseAbove(usize),
    /// Past this many bytes the connection's input is not read until its
    /// output drains: back-pressure by interest, not by dropping.
    PauseAbove(usize),
}

impl OutputLimit {
    /// The number of unsent bytes past which input is not read (either way).
    pub fn bytes(self) -> usize {
        match self {
            OutputLimit::CloseAbove(n) | OutputLimit::PauseAbove(n) => n,
        }
    }
}

/// What a session call may use. Everything here belongs to this one
/// connection except `config`, `stats` and `budgets`, which are shared.
/// `C` is the protocol's settings and `E` its effect type.
pub struct Cx<'a, C, E> {
    /// The turn's time.
    pub now: Millis,
    /// This connection's token, for effects that name it.
    pub token: Token,
    /// When bytes last arrived on this connection.
    pub last_rx: Millis,
    /// The gateway is shutting down.
    pub draining: bool,
    pub config: &'a C,
    /// This connection's unsent output: append, never write.
    pub out: &'a mut OutBuf,
    /// Where emptied output buffers go and new ones come from.
    pub pool: &'a mut Pool,
    /// What the session wants done beyond its own connection, applied by
    /// the reactor after the call returns, in order.
    pub effects: &'a mut Vec<E>,
    pub stats: &'a mut Stats,
    pub budgets: &'a Budgets,
}

impl<'a, C, E> Cx<'a, C, E> {
    /// Appends bytes to this connection's output.
    pub fn send(&mut self, bytes: &[u8]) {
        self.out.push(bytes, self.pool);
    }

    /// Which turn of the loop this call is in (turns are numbered from
    /// 1), so that a session can spread its per-turn budget over several
    /// calls in one turn.
    pub fn turn(&self) -> u64 {
        self.stats.loop_iterations
    }

    /// Appends whatever `write` writes to this connection's output.
    pub fn send_with<T>(&mut self, write: impl FnOnce(&mut Vec<u8>) -> T) -> T {
        self.out.append_with(self.pool, write)
    }

    /// The same call seen with other settings: a session made of several
    /// protocols hands each its own part of the settings.
    pub fn with_config<'b, D>(&'b mut self, config: &'b D) -> Cx<'b, D, E> {
        Cx {
            now: self.now,
            token: self.token,
            last_rx: self.last_rx,
            draining: self.draining,
            config,
            out: &mut *self.out,
            pool: &mut *self.pool,
            effects: &mut *self.effects,
            stats: &mut *self.stats,
            budgets: self.budgets,
        }
    }
}

/// What a session call borrows besides its settings, owned: for driving a
/// session by hand in the protocols' unit tests, where there is no reactor.
#[cfg(test)]
#[derive(Debug)]
pub struct Parts<E> {
    pub out: OutBuf,
    pub pool: Pool,
    pub effects: Vec<E>,
    pub stats: Stats,
    pub budgets: Budgets,
    pub draining: bool,
}

#[cfg(test)]
impl<E> Default for Parts<E> {
    fn default() -> Parts<E> {
        Parts {
            out: OutBuf::default(),
            pool: Pool::default(),
            effects: Vec::new(),
            stats: Stats::default(),
            budgets: Budgets::default(),
            draining: false,
        }
    }
}

#[cfg(test)]
impl<E> Parts<E> {
    /// A call at `now` on connection 1, whose last bytes arrived at
    /// `last_rx`.
    pub fn cx<'a, C>(&'a mut self, config: &'a C, now: Millis, last_rx: Millis) -> Cx<'a, C, E> {
        Cx {
            now,
            token: Token(1),
            last_rx,
            draining: self.draining,
            config,
            out: &mut self.out,
            pool: &mut self.pool,
            effects: &mut self.effects,
            stats: &mut self.stats,
            budgets: &self.budgets,
        }
    }
}

/// The call context of session type `S`.
pub type CxOf<'a, S> = Cx<'a, <S as Session>::Config, <S as Session>::Effect>;

/// A protocol, as the reactor drives it. See the module documentation.
pub trait Session: Sized {
    /// The settings the protocol reads (owned by the reactor, shared by
    /// every session).
    type Config;
    /// Work for other connections, applied by the application.
    type Effect;
    /// The application's answer to an effect that asked for one.
    type Reply;

    /// Bytes arrived.
    fn on_input(&mut self, input: &[u8], cx: &mut CxOf<'_, Self>) -> Next;

    /// Goes on with buffered work (see [`Session::has_work`]).
    fn on_resume(&mut self, _cx: &mut CxOf<'_, Self>) -> Next {
        Next::Continue
    }

    /// The answer to an effect of this session's.
    fn on_reply(&mut self, reply: Self::Reply, cx: &mut CxOf<'_, Self>) -> Next;

    /// The deadline passed. A session that returns `Close` here must not
    /// have changed its state: the reactor first reads whatever input is
    /// waiting (so a deadline never beats input that had arrived), then
    /// asks again.
    fn on_deadline(&mut self, cx: &mut CxOf<'_, Self>) -> Next;

    /// The connection's TLS handshake completed with a client certificate
    /// the listener's CA vouches for, naming `identity` (see
    /// [`super::tls`]). Called once, before any input.
    fn on_peer_identity(&mut self, _identity: &super::PeerIdentity, _cx: &mut CxOf<'_, Self>) -> Next {
        Next::Continue
    }

    /// The gateway started shutting down.
    fn on_drain(&mut self, cx: &mut CxOf<'_, Self>) -> Next;

    /// The connection leaves `Open`: append last words (a `BYE`, a final
    /// response), and return effects that undo what being open registered.
    fn on_close(&mut self, reason: CloseReason, cx: &mut CxOf<'_, Self>);

    /// When [`Session::on_deadline`] may next have work, given when bytes
    /// last arrived; `None` for never. Deadlines may only move later on
    /// their own (bytes arriving); a session whose deadline moves earlier
    /// is re-filed after the call that moved it.
    fn deadline(&self, config: &Self::Config, last_rx: Millis) -> Option<Millis>;

    /// Whether the session takes more input now. When it says no, the
    /// reactor stops reading (the kernel's buffers and then TCP flow
    /// control hold the peer back) until it says yes again.
    fn wants_input(&self, _config: &Self::Config) -> bool {
        true
    }

    /// Whether [`Session::on_resume`] has work to do.
    fn has_work(&self) -> bool {
        false
    }

    /// Since when the connection has been idle and owes nothing, so that it
    /// may be closed to make room for a new one when its listener is full.
    fn idle_since(&self) -> Option<Millis> {
        None
    }

    /// The output limit in force.
    fn output_limit(&self, config: &Self::Config) -> OutputLimit;
}
