//! The reactor: one thread, one `mio::Poll`, every connection, and no
//! protocol.
//!
//! [`Reactor::run`] is the whole program once set up. Each turn of the
//! loop has the same phases, in this order:
//!
//! 1. **poll**: sleep in `epoll_wait` until a socket is ready, a deadline
//!    is due, or work is already queued; read the clock once;
//! 2. **events**: note what is ready (a readable connection joins the run
//!    queue, a writable one the flush queue, a listener is marked);
//! 3. **accept**: take new connections, each within the listener's share;
//!    every new connection joins the run queue, so it is read this turn;
//! 4. **run**: for each connection in the run queue, read its input (within
//!    the read budget) and hand it to its [`Session`], then apply the
//!    effects the session returned ([`App::apply`]);
//! 5. **timers**: fire due deadlines (within the timer budget); a deadline
//!    that would close a connection first reads what arrived;
//! 6. **flush**: ask the application to produce the output of fed
//!    connections (event streams), round robin within the turn's byte
//!    budget; then write each connection with output once (one `write`
//!    per connection per turn, within the connection's byte budget).
//!
//! Handlers only append to output; nothing is written before the flush
//! phase, so a connection owed a hundred replies and events in one turn
//! gets one `write`. Every phase has a budget ([`Budgets`]); what is left
//! over waits in the run, flush or timer queue for the next turn, in order,
//! which makes `poll` return at once. So no peer, and no mix of peers, can
//! make one turn long.
//!
//! Deadlines judge input that arrived: timers fire after the run phase
//! has read the sockets the poll reported, against the time the poll
//! returned, and a deadline that would close a connection reads its socket
//! once more before it does (see [`Session::on_deadline`]).
//!
//! Submodules: `listener` (accepting, caps), `run` (reading and session
//! calls, applying effects), `flush` (writing, closing), `app` (the
//! application's side), `session` (the protocol's side), `conn`,
//! `outbuf`, `budget`, `token`, `io`.

/// A [`Cx`] for one call on `$conn` (a `&mut Conn` of `$self.conns`),
/// lending it the reactor's shared parts. A macro rather than a method:
/// the borrows of `$self`'s fields must stay apart from `$conn`'s.
macro_rules! cx {
    ($self:ident, $conn:ident, $token:expr) => {
        $crate::reactor::Cx {
            now: $self.now,
            token: $token,
            last_rx: $conn.last_rx,
            draining: $self.drain_deadline.is_some(),
            config: &$self.config,
            out: &mut $conn.out,
            pool: &mut $self.pool,
            effects: &mut $self.new_effects,
            stats: &mut $self.stats,
            budgets: &$self.settings.budgets,
        }
    };
}

pub mod app;
pub mod budget;
pub mod conn;
mod flush;
pub mod io;
pub mod listener;
pub mod outbuf;
mod run;
pub mod session;
#[cfg(test)]
mod tests;
pub mod tls;
pub mod token;

use std::collections::VecDeque;
use std::io as stdio;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use log::{info, warn};
use mio::{Events, Interest, Poll, Token, Waker};
use signal_hook_mio::v1_0::Signals;
use slab::Slab;

pub use app::{App, Levels, Ops, Produce, SendError};
pub use budget::{Budget, Budgets};
pub use conn::{Conn, Peer, Phase};
pub use listener::{Kind, Spec};
pub use outbuf::{OutBuf, Pool};
pub use session::{Cx, CxOf, Next, OutputLimit, Session};
pub use tls::PeerIdentity;

use crate::close::CloseReason;
use crate::stats::{Stats, Throttle};
use crate::time::{Clock, Millis, deadline, millis};
use crate::wheel::{TimerId, Wheel};
use listener::Listener;
use token::Generations;

const WAKER: Token = Token(usize::MAX);
const SIGNALS: Token = Token(usize::MAX - 1);
/// Listener `i` has token `LISTENERS - i`.
const LISTENERS: usize = usize::MAX - 2;

/// Timer resolution: deadlines fire at most this late.
const TICK: Duration = Duration::from_millis(10);
/// 4096 ticks of 10 ms: one revolution (41 s) covers the default heartbeat.
const WHEEL_SLOTS: usize = 4096;
/// Size of the read buffer shared by all connections.
const SCRATCH: usize = 64 * 1024;
/// Readiness events taken from the kernel per `poll`.
const EVENTS: usize = 1024;

/// How [`Reactor::run`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Every connection closed within the drain timeout.
    Drained,
    /// The drain timeout passed; the remaining connections were closed.
    DrainTimedOut,
    /// A second stop request arrived while draining.
    Forced,
}

/// Asks a running reactor to stop, from any thread. The first call starts a
/// graceful drain; a second makes [`Reactor::run`] return at once.
#[derive(Debug, Clone)]
pub struct Handle {
    requests: Arc<AtomicU32>,
    waker: Arc<Waker>,
}

impl Handle {
    pub fn shutdown(&self) {
        self.requests.fetch_add(1, Ordering::SeqCst);
        // Waking can only fail if the poller is gone, i.e. run() returned.
        let _ = self.waker.wake();
    }
}

/// The reactor's own settings (the protocols have theirs).
#[derive(Debug, Clone)]
pub struct Settings {
    pub budgets: Budgets,
    /// After last words, how long to wait for the peer to close.
    pub linger_timeout: Duration,
    /// On a stop request, how long to wait for connections to close.
    pub drain_timeout: Duration,
    /// Period of the stats log line (zero: never).
    pub stats_interval: Duration,
    /// The soft file-descriptor limit, for reporting.
    pub fd_limit: u64,
}

/// The event loop, generic over the application it serves.
pub struct Reactor<A: App> {
    settings: Settings,
    /// The sessions' settings, lent to every session call.
    config: <A::Session as Session>::Config,
    poll: Poll,
    clock: Clock,
    /// The current turn's time: when `poll` returned.
    now: Millis,
    conns: Slab<Conn<A::Session>>,
    generations: Generations,
    listeners: Vec<Listener>,
    wheel: Wheel<Token>,
    /// Timers that are due and not fired yet (the timer budget ran out).
    due: VecDeque<(TimerId, Token)>,
    /// Reused buffer for the wheel's expiries.
    expired: Vec<(TimerId, Token)>,
    /// Connections with input to read or buffered work, in turn order.
    run_queue: VecDeque<Token>,
    /// Connections with output to write, in turn order.
    flush_queue: VecDeque<Token>,
    /// Fed connections with output to produce, in turn order.
    produce_queue: VecDeque<Token>,
    /// Effects waiting to be applied, with the connection they came from.
    effects: VecDeque<(Token, <A::Session as Session>::Effect)>,
    /// Where a session call puts its effects (reused).
    new_effects: Vec<<A::Session as Session>::Effect>,
    /// Replies waiting to be delivered to sessions.
    replies: VecDeque<(Token, <A::Session as Session>::Reply)>,
    /// Connections the application asked to close.
    closes: VecDeque<(Token, CloseReason)>,
    /// Links the application dialed in the current call (reused).
    dialed: Vec<usize>,
    /// While draining: the links were told to finish (after every other
    /// connection had closed).
    links_drained: bool,
    /// The read buffer shared by all connections.
    scratch: Vec<u8>,
    /// The plaintext of the records one TLS read completed, handed to the
    /// session at once (see [`tls`]); empty until a TLS connection reads.
    plaintext: Vec<u8>,
    /// Reused buffer for a refused connection's farewell.
    farewell: Vec<u8>,
    pool: Pool,
    stats: Stats,
    last_report: (Millis, Stats),
    next_report: Option<Millis>,
    warn_refused: Throttle,
    warn_accept: Throttle,
    stop_requests: Arc<AtomicU32>,
    stops_seen: u32,
    waker: Arc<Waker>,
    signals: Option<Signals>,
    /// Set while draining for shutdown: when to give up waiting.
    drain_deadline: Option<Millis>,
    exit: Option<Exit>,
}

impl<A: App> Reactor<A> {
    /// Binds the listeners and prepares the loop.
    pub fn new(
        specs: Vec<Spec>,
        config: <A::Session as Session>::Config,
        settings: Settings,
    ) -> stdio::Result<Reactor<A>> {
        let poll = Poll::new()?;
        let mut listeners = Vec::with_capacity(specs.len());
        for (i, spec) in specs.into_iter().enumerate() {
            let mut socket = crate::net::listen(spec.addr, spec.options)?;
            poll.registry().register(&mut socket, Token(LISTENERS - i), Interest::READABLE)?;
            listeners.push(Listener::new(socket, spec));
        }
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let capacity: usize = listeners.iter().map(|l| l.spec.cap).sum();
        let mut wheel = Wheel::new(TICK, WHEEL_SLOTS);
        // Pre-size, so growing to the caps never pauses the loop to copy.
        // The memory is only reserved; pages are touched as connections
        // arrive.
        wheel.reserve(capacity);
        Ok(Reactor {
            next_report: deadline(0, settings.stats_interval),
            settings,
            config,
            poll,
            clock: Clock::new(),
            now: 0,
            conns: Slab::with_capacity(capacity),
            generations: Generations::default(),
            listeners,
            wheel,
            due: VecDeque::new(),
            expired: Vec::new(),
            run_queue: VecDeque::new(),
            flush_queue: VecDeque::new(),
            produce_queue: VecDeque::new(),
            effects: VecDeque::new(),
            new_effects: Vec::new(),
            replies: VecDeque::new(),
            closes: VecDeque::new(),
            dialed: Vec::new(),
            links_drained: false,
            scratch: vec![0; SCRATCH],
            plaintext: Vec::new(),
            farewell: Vec::new(),
            pool: Pool::default(),
            stats: Stats::default(),
            last_report: (0, Stats::default()),
            warn_refused: Throttle::default(),
            warn_accept: Throttle::default(),
            stop_requests: Arc::new(AtomicU32::new(0)),
            stops_seen: 0,
            waker,
            signals: None,
            drain_deadline: None,
            exit: None,
        })
    }

    /// The address the listener of `kind` is bound to.
    pub fn local_addr(&self, kind: Kind) -> stdio::Result<SocketAddr> {
        self.listeners[listener::kind_index(&self.listeners, kind)].local_addr()
    }

    /// The address of the first listener whose spec passes `which`.
    pub fn local_addr_where(&self, which: impl Fn(&Spec) -> bool) -> Option<SocketAddr> {
        self.listeners.iter().find(|l| which(&l.spec)).and_then(|l| l.local_addr().ok())
    }

    /// The listeners' specs, in the order given.
    pub fn specs(&self) -> impl Iterator<Item = &Spec> {
        self.listeners.iter().map(|l| &l.spec)
    }

    /// The counters so far (after [`Reactor::run`] returns: the final ones).
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Number of connections held, open or closing.
    pub fn connections(&self) -> usize {
        self.conns.len()
    }

    /// The sessions' settings.
    pub fn config(&self) -> &<A::Session as Session>::Config {
        &self.config
    }

    pub fn handle(&self) -> Handle {
        Handle { requests: Arc::clone(&self.stop_requests), waker: Arc::clone(&self.waker) }
    }

    /// The reactor's clock, which the application may need to turn a
    /// [`Millis`] into wall-clock time.
    pub fn clock(&self) -> Clock {
        self.clock
    }

    /// Treats SIGINT and SIGTERM as stop requests (see [`Handle::shutdown`]),
    /// and SIGHUP as a request to reload the TLS certificates.
    pub fn watch_signals(&mut self) -> stdio::Result<()> {
        let mut signals = Signals::new([libc::SIGINT, libc::SIGTERM, libc::SIGHUP])?;
        self.poll.registry().register(&mut signals, SIGNALS, Interest::READABLE)?;
        self.signals = Some(signals);
        Ok(())
    }

    fn levels(&self) -> Levels {
        levels(&self.listeners, self.settings.fd_limit, self.draining(), &self.pool)
    }

    /// Runs the loop until a stop request has been carried out.
    pub fn run(&mut self, app: &mut A) -> stdio::Result<Exit> {
        let mut events = Events::with_capacity(EVENTS);
        self.now = self.clock.now();
        self.with_ops(app, |app, ops| app.start(ops));
        self.settle(app);
        loop {
            let timeout = self.poll_timeout(app);
            let waiting = Instant::now();
            if let Err(e) = self.poll.poll(&mut events, timeout)
                && e.kind() != stdio::ErrorKind::Interrupted
            {
                return Err(e);
            }
            let woke = Instant::now();
            self.stats.loop_wait += woke - waiting;
            self.stats.loop_iterations += 1;
            self.now = self.clock.now();

            for event in events.iter() {
                match event.token() {
                    WAKER => self.check_stop_requests(app),
                    SIGNALS => self.on_signals(app),
                    Token(t) if t > LISTENERS - self.listeners.len() => {
                        self.listeners[LISTENERS - t].backlog = true;
                    }
                    token => self.on_ready(token, event),
                }
            }
            self.accept_phase(app);
            self.run_phase(app);
            self.timer_phase(app);
            self.flush_phase(app);
            self.maybe_report(app);
            self.check_drain(app);
            self.stats.loop_turn(woke.elapsed());
            if let Some(exit) = self.exit {
                return Ok(exit);
            }
        }
    }

    /// How long `poll` may sleep: until the earliest deadline, or not at all
    /// when work is already waiting.
    fn poll_timeout(&self, app: &A) -> Option<Duration> {
        let now = self.clock.now();
        let queued = !self.run_queue.is_empty()
            || !self.flush_queue.is_empty()
            || !self.produce_queue.is_empty()
            || !self.due.is_empty();
        if queued || self.listeners.iter().any(|l| l.can_accept(now)) {
            return Some(Duration::ZERO);
        }
        let paused = self.listeners.iter().filter_map(|l| l.paused_until);
        [self.wheel.next_expiry(), self.next_report, self.drain_deadline, app.deadline()]
            .into_iter()
            .flatten()
            .chain(paused)
            .min()
            .map(|at| Duration::from_millis(at.saturating_sub(now)))
    }

    /// The slab key for `token` if it names a live connection, `None` for a
    /// stale token whose connection is gone (its slot may be reused).
    fn live_key(&self, token: Token) -> Option<usize> {
        let (key, generation) = token::unpack(token);
        self.conns.get(key).filter(|c| c.generation == generation).map(|_| key)
    }

    fn token_of(&self, key: usize) -> Token {
        self.conns[key].token(key)
    }

    /// A readiness event for a connection: note it; the phases act on it.
    fn on_ready(&mut self, token: Token, event: &mio::event::Event) {
        // A stale token: its connection was freed earlier in this batch.
        let Some(key) = self.live_key(token) else { return };
        let conn = &mut self.conns[key];
        if event.is_writable() && conn.blocked {
            conn.blocked = false;
            self.schedule_flush(key);
            self.schedule_produce(key);
        }
        let conn = &mut self.conns[key];
        if event.is_readable() || event.is_read_closed() || event.is_error() {
            conn.readable = true;
            // With the peer's FIN already reported, read on past a short
            // read to see the end of file: no further edge will announce it.
            conn.read_closed |= event.is_read_closed() || event.is_error();
            self.schedule_run(key);
        }
    }

    /// Puts a connection in the run queue (once).
    fn schedule_run(&mut self, key: usize) {
        self.conns[key].queue_run(key, &mut self.run_queue);
    }

    /// Puts a connection in the flush queue (once), unless it waits for a
    /// WRITABLE edge.
    fn schedule_flush(&mut self, key: usize) {
        self.conns[key].queue_flush(key, &mut self.flush_queue);
    }

    /// Puts a fed connection in the produce queue (once), unless it waits
    /// for a WRITABLE edge.
    fn schedule_produce(&mut self, key: usize) {
        self.conns[key].queue_produce(key, &mut self.produce_queue);
    }

    /// Files the connection's deadline. Deadlines move later on their own
    /// (bytes arriving), and a timer that fires early is simply re-filed
    /// then, so resetting a deadline on activity costs nothing here; only a
    /// deadline that moved earlier than the one filed is re-filed now, and
    /// one that went away is cancelled (so an idle connection with no
    /// deadline holds no timer and never wakes the loop).
    fn rearm(&mut self, key: usize) {
        let conn = &self.conns[key];
        if conn.phase != Phase::Open {
            return;
        }
        let want = conn.session.deadline(&self.config, conn.last_rx);
        let filed = conn.timer.and_then(|id| self.wheel.due_at(id));
        match (filed, want) {
            // Compared as the wheel rounds: a deadline that did not move is
            // not filed again.
            (Some(filed), Some(at)) if filed <= self.wheel.fires_at(at) => {}
            (None, None) => {}
            _ => self.set_timer(key, want),
        }
    }

    /// Files the connection's one timer at `at`, replacing any pending one.
    fn set_timer(&mut self, key: usize, at: Option<Millis>) {
        let token = self.token_of(key);
        let conn = &mut self.conns[key];
        if let Some(old) = conn.timer.take() {
            self.wheel.cancel(old);
        }
        conn.timer = at.map(|at| self.wheel.insert(at, token));
    }

    /// Fires due timers, within the timer budget; the rest wait for the
    /// next turn. Timers are judged at the time the poll returned, after
    /// the sockets it reported were read.
    fn timer_phase(&mut self, app: &mut A) {
        let mut expired = std::mem::take(&mut self.expired);
        self.wheel.expire(self.now, &mut expired);
        self.due.extend(expired.drain(..));
        self.expired = expired;
        for _ in 0..self.settings.budgets.timers {
            let Some((id, token)) = self.due.pop_front() else { break };
            // Handling one deadline can free another connection or re-arm
            // its timer; either way, that connection's expiry is void.
            let Some(key) = self.live_key(token) else { continue };
            let conn = &mut self.conns[key];
            if conn.timer != Some(id) {
                continue;
            }
            conn.timer = None;
            match conn.phase {
                Phase::Open => self.deadline_passed(app, key),
                // The linger deadline of a closing connection.
                Phase::Closing { .. } | Phase::Lingering => self.free(key),
            }
        }
        if !self.due.is_empty() {
            self.stats.budget_spent(Budget::Timers);
        }
        if app.deadline().is_some_and(|at| at <= self.now) {
            self.with_ops(app, |app, ops| app.on_deadline(ops));
            self.settle(app);
        }
    }

    fn maybe_report(&mut self, app: &A) {
        let Some(due) = self.next_report else { return };
        if self.now < due {
            return;
        }
        let (at, prev) = &self.last_report;
        let elapsed = Duration::from_millis(self.now - at);
        let mut line = self.stats.report(prev, elapsed, self.levels().held);
        app.report(&mut line);
        info!("stats: {line}");
        self.stats.longest_turn = Duration::ZERO;
        self.last_report = (self.now, self.stats.clone());
        self.next_report = deadline(self.now, self.settings.stats_interval);
    }

    fn on_signals(&mut self, app: &mut A) {
        let Some(signals) = &mut self.signals else { return };
        let mut received = 0;
        let mut reload = false;
        for signal in signals.pending() {
            match signal {
                libc::SIGHUP => reload = true,
                _ => received += 1,
            }
        }
        if reload {
            self.reload_tls();
        }
        if received > 0 {
            info!("received a stop signal");
            self.stop_requests.fetch_add(received, Ordering::SeqCst);
            self.check_stop_requests(app);
        }
    }

    /// Loads every TLS listener's files again: connections accepted from
    /// now on get the new certificate, open ones keep theirs (each holds
    /// its configuration). A file that does not load keeps the
    /// configuration in force, and says why. Session tickets and the
    /// session cache carry over, so collars still resume after a reload.
    pub fn reload_tls(&mut self) {
        for listener in &mut self.listeners {
            let (Some(files), Some(old)) = (&listener.spec.tls_files, &listener.spec.tls) else { continue };
            let addr = listener.local_addr().map_or_else(|_| listener.spec.addr.to_string(), |a| a.to_string());
            match files.load() {
                Ok(new) => {
                    let mut new = Arc::unwrap_or_clone(new);
                    new.ticketer = Arc::clone(&old.ticketer);
                    new.session_storage = Arc::clone(&old.session_storage);
                    listener.spec.tls = Some(Arc::new(new));
                    info!("tls: reloaded the certificate of {addr} from {}", files.cert.display());
                }
                Err(e) => warn!("tls: {e}; {addr} keeps the certificate in force"),
            }
        }
    }

    /// Acts on new stop requests: the first drains, the next one forces.
    fn check_stop_requests(&mut self, app: &mut A) {
        let requests = self.stop_requests.load(Ordering::SeqCst);
        if requests == self.stops_seen {
            return;
        }
        if self.stops_seen == 0 {
            self.begin_drain(app);
        }
        if requests >= 2 {
            warn!("second stop request: exiting now with {} open", plural(self.conns.len(), "connection"));
            self.exit = Some(Exit::Forced);
        }
        self.stops_seen = requests;
    }

    fn draining(&self) -> bool {
        self.drain_deadline.is_some()
    }

    /// Closes the listeners that do not stay open while draining, tells
    /// every session the gateway is shutting down (kinds in
    /// [`Kind::DRAIN_ORDER`]), and waits for the connections to close, up
    /// to the drain timeout.
    fn begin_drain(&mut self, app: &mut A) {
        info!(
            "draining: {} to close, waiting up to {:?}",
            plural(self.conns.len(), "connection"),
            self.settings.drain_timeout
        );
        for listener in &mut self.listeners {
            if !listener.spec.open_while_draining {
                listener.close(self.poll.registry());
            }
        }
        self.drain_deadline = Some(self.now.saturating_add(millis(self.settings.drain_timeout)));
        for kind in Kind::DRAIN_ORDER {
            let keys: Vec<usize> = self.conns.iter().filter(|(_, c)| c.kind == kind).map(|(key, _)| key).collect();
            for key in keys {
                if self.conns.get(key).is_some_and(|c| c.phase == Phase::Open) {
                    let next = self.call(key, |s, cx| s.on_drain(cx));
                    self.after_call(key, next);
                    self.settle(app);
                }
            }
        }
    }

    fn check_drain(&mut self, app: &mut A) {
        let Some(deadline) = self.drain_deadline else { return };
        if !self.links_drained && self.conns.iter().all(|(_, c)| c.kind == Kind::Link) {
            // Links last: what the closing connections made the application
            // say on them (a directory entry to release) goes out first.
            self.links_drained = true;
            let keys: Vec<usize> = self.conns.iter().map(|(key, _)| key).collect();
            for key in keys {
                if self.is_open(key) {
                    let next = self.call(key, |s, cx| s.on_drain(cx));
                    self.after_call(key, next);
                    self.settle(app);
                }
            }
        }
        if self.conns.is_empty() {
            info!("drained: every connection closed");
            self.exit.get_or_insert(Exit::Drained);
        } else if self.now >= deadline {
            warn!("drain timeout: closing the {} still open", plural(self.conns.len(), "connection"));
            let keys: Vec<usize> = self.conns.iter().map(|(key, _)| key).collect();
            for key in keys {
                if self.conns.get(key).is_some_and(|c| c.phase == Phase::Open) {
                    self.close(key, CloseReason::Shutdown);
                    self.settle(app);
                }
                if self.conns.contains(key) {
                    self.free(key);
                }
            }
            self.exit.get_or_insert(Exit::DrainTimedOut);
        }
    }
}

fn levels(listeners: &[Listener], fd_limit: u64, draining: bool, pool: &Pool) -> Levels {
    let mut levels = Levels { fd_limit, draining, pooled_buffers: pool.len(), ..Levels::default() };
    for listener in listeners {
        levels.held[listener.spec.kind as usize] += listener.held;
        levels.caps[listener.spec.kind as usize] += listener.spec.cap;
    }
    levels
}

/// `1 connection`, `2 connections`.
pub fn plural(n: usize, noun: &str) -> String {
    if n == 1 { format!("1 {noun}") } else { format!("{n} {noun}s") }
}
