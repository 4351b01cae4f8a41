//! The event loop: one thread, one `mio::Poll`, every connection.
//!
//! [`Reactor::run`] is the whole program once set up: wait in `poll` until a
//! socket is ready or the next deadline is due, handle the ready sockets,
//! accept what is waiting, fire due timers, and go round again. Each turn
//! reads the clock once and passes `now` down.
//!
//! Tokens: a connection's token is its slab key in the low 32 bits and the
//! connection's generation in the high 32. The slab hands a freed key
//! straight back to the next connection; the generation makes any event or
//! timer still in flight for the old one miss (see [`Reactor::live_key`]).
//! The listener, the waker and the signal pipe have fixed tokens at the top
//! of the range, which no slab key reaches.
//!
//! Submodules: `accept` (the listener), `conn` (reading, writing and closing
//! any connection), `device` (what collar input does).

mod accept;
mod conn;
mod device;

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use log::{info, warn};
use mio::{Events, Interest, Poll, Token, Waker};
use signal_hook_mio::v1_0::Signals;
use slab::Slab;

use crate::config::Config;
use crate::connection::{Connection, Phase, Role};
use crate::device::{Mac, Timeouts};
use crate::net::{self, ListenOptions};
use crate::stats::{Gauges, Stats, Throttle};
use crate::time::{Clock, Millis, deadline, millis};
use crate::wheel::Wheel;

use accept::Listener;

const DEVICE_LISTENER: Token = Token(usize::MAX);
const WAKER: Token = Token(usize::MAX - 1);
const SIGNALS: Token = Token(usize::MAX - 2);

/// Timer resolution: deadlines fire at most this late.
const TICK: Duration = Duration::from_millis(10);
/// 4096 ticks of 10 ms: one revolution (41 s) covers the default heartbeat.
const WHEEL_SLOTS: usize = 4096;
/// Size of the read buffer shared by all connections.
const SCRATCH: usize = 64 * 1024;
/// Readiness events taken from the kernel per `poll`.
const EVENTS: usize = 1024;

const _: () = assert!(usize::BITS == 64, "tokens pack a 32-bit key and a 32-bit generation");

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

/// The gateway: the poller, the listener, the connections and their timers.
pub struct Reactor {
    config: Config,
    timeouts: Timeouts,
    max_connections: usize,
    poll: Poll,
    clock: Clock,
    /// The current turn's time, read once per turn.
    now: Millis,
    conns: Slab<Connection>,
    /// The generation given to the most recent connection.
    generation: u32,
    /// Identified devices that are online (phase `Open`), by MAC.
    devices: BTreeMap<Mac, Token>,
    wheel: Wheel<Token>,
    /// Tokens of timers that fired this turn (kept to reuse its allocation).
    expired: Vec<Token>,
    listener: Listener,
    /// Connections whose read budget ran out with input left; read again
    /// next turn, since no new edge will announce it.
    ready: Vec<Token>,
    /// The read buffer shared by all connections.
    scratch: Vec<u8>,
    /// Replies being batched for the connection in hand, written in one go.
    replies: Vec<u8>,
    stats: Stats,
    last_report: (Millis, Stats),
    next_report: Option<Millis>,
    warn_server_full: Throttle,
    warn_accept: Throttle,
    stop_requests: Arc<AtomicU32>,
    stops_seen: u32,
    waker: Arc<Waker>,
    signals: Option<Signals>,
    /// Set while draining for shutdown: when to give up waiting.
    drain_deadline: Option<Millis>,
    exit: Option<Exit>,
}

impl Reactor {
    /// Binds the listener and prepares the loop. Call [`net::raise_fd_limit`]
    /// first: the connection cap is derived from the current limit.
    pub fn bind(config: Config) -> io::Result<Reactor> {
        let poll = Poll::new()?;
        let options = ListenOptions { backlog: config.backlog, keepalive: config.tcp_keepalive };
        let mut socket = net::listen(config.device_listen, options)?;
        poll.registry().register(&mut socket, DEVICE_LISTENER, Interest::READABLE)?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);

        let max_connections = connection_cap(&config)?;
        let clock = Clock::new();
        let mut wheel = Wheel::new(TICK, WHEEL_SLOTS);
        // Pre-size, so growing to the cap never pauses the loop to copy. The
        // memory is only reserved; pages are touched as connections arrive.
        wheel.reserve(max_connections);
        Ok(Reactor {
            timeouts: config.timeouts(),
            next_report: deadline(0, config.stats_interval),
            config,
            max_connections,
            poll,
            clock,
            now: 0,
            conns: Slab::with_capacity(max_connections),
            generation: 0,
            devices: BTreeMap::new(),
            wheel,
            expired: Vec::new(),
            listener: Listener::new(socket),
            ready: Vec::new(),
            scratch: vec![0; SCRATCH],
            replies: Vec::new(),
            stats: Stats::default(),
            last_report: (0, Stats::default()),
            warn_server_full: Throttle::default(),
            warn_accept: Throttle::default(),
            stop_requests: Arc::new(AtomicU32::new(0)),
            stops_seen: 0,
            waker,
            signals: None,
            drain_deadline: None,
            exit: None,
        })
    }

    /// The address the collars connect to (useful after binding port 0).
    pub fn device_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The connection cap in force.
    pub fn max_connections(&self) -> usize {
        self.max_connections
    }

    pub fn handle(&self) -> Handle {
        Handle { requests: Arc::clone(&self.stop_requests), waker: Arc::clone(&self.waker) }
    }

    /// Treats SIGINT and SIGTERM as stop requests (see [`Handle::shutdown`]).
    pub fn watch_signals(&mut self) -> io::Result<()> {
        let mut signals = Signals::new([libc::SIGINT, libc::SIGTERM])?;
        self.poll.registry().register(&mut signals, SIGNALS, Interest::READABLE)?;
        self.signals = Some(signals);
        Ok(())
    }

    /// The counters so far (after [`Reactor::run`] returns: the final ones).
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Number of connections held, open or closing.
    pub fn connections(&self) -> usize {
        self.conns.len()
    }

    /// Runs the loop until a stop request has been carried out.
    pub fn run(&mut self) -> io::Result<Exit> {
        // Logged here rather than in `bind`: once this line is out, the loop
        // is serving and (if asked) watching for signals.
        info!(
            "devices: listening on {} (backlog {}), at most {} connections",
            self.device_addr()?,
            self.config.backlog,
            self.max_connections
        );
        let mut events = Events::with_capacity(EVENTS);
        loop {
            let timeout = self.poll_timeout();
            let waiting = Instant::now();
            if let Err(e) = self.poll.poll(&mut events, timeout)
                && e.kind() != io::ErrorKind::Interrupted
            {
                return Err(e);
            }
            let woke = Instant::now();
            self.stats.loop_wait += woke - waiting;
            self.stats.loop_iterations += 1;
            self.now = self.clock.now();

            let mut mark = woke;
            for event in events.iter() {
                match event.token() {
                    DEVICE_LISTENER => self.listener.ready = true,
                    WAKER => self.check_stop_requests(),
                    SIGNALS => self.on_signals(),
                    token => self.on_conn_event(token, event),
                }
                let done = Instant::now();
                self.stats.handler_took(done - mark);
                mark = done;
            }
            self.accept();
            self.read_leftovers();
            self.now = self.clock.now();
            self.fire_timers();
            self.maybe_report();
            self.check_drain();
            self.stats.loop_busy += woke.elapsed();
            if let Some(exit) = self.exit {
                return Ok(exit);
            }
        }
    }

    /// How long `poll` may sleep: until the earliest deadline, or not at all
    /// when work is already known to be waiting.
    fn poll_timeout(&self) -> Option<Duration> {
        if !self.ready.is_empty() || self.listener.can_accept(self.now) {
            return Some(Duration::ZERO);
        }
        [self.wheel.next_expiry(), self.listener.paused_until, self.next_report, self.drain_deadline]
            .into_iter()
            .flatten()
            .min()
            .map(|at| Duration::from_millis(at.saturating_sub(self.clock.now())))
    }

    /// The slab key for `token` if it names a live connection, `None` for a
    /// stale token whose connection is gone (its slot may be reused).
    fn live_key(&self, token: Token) -> Option<usize> {
        let key = token.0 & 0xFFFF_FFFF;
        let generation = (token.0 >> 32) as u32;
        self.conns.get(key).filter(|c| c.generation == generation).map(|_| key)
    }

    fn token_of(&self, key: usize) -> Token {
        conn_token(key, self.conns[key].generation)
    }

    /// Files the connection's next deadline, replacing any pending one.
    fn set_timer(&mut self, key: usize, at: Option<Millis>) {
        let token = self.token_of(key);
        let conn = &mut self.conns[key];
        if let Some(old) = conn.timer.take() {
            self.wheel.cancel(old);
        }
        conn.timer = at.map(|at| self.wheel.insert(at, token));
    }

    fn fire_timers(&mut self) {
        let mut expired = std::mem::take(&mut self.expired);
        self.wheel.expire(self.now, &mut expired);
        for token in expired.drain(..) {
            let Some(key) = self.live_key(token) else {
                debug_assert!(false, "timers are cancelled when their connection is freed");
                continue;
            };
            let conn = &mut self.conns[key];
            conn.timer = None;
            match (conn.phase, &conn.role) {
                (Phase::Open, Role::Device(_)) => self.device_deadline(key),
                // The linger deadline of a closing connection.
                (Phase::Closing { .. } | Phase::Lingering, _) => self.free(key),
            }
        }
        self.expired = expired;
    }

    fn maybe_report(&mut self) {
        let Some(due) = self.next_report else { return };
        if self.now < due {
            return;
        }
        let (at, prev) = &self.last_report;
        let gauges = Gauges { connections: self.conns.len(), devices: self.devices.len() };
        let elapsed = Duration::from_millis(self.now - at);
        info!("stats: {}", self.stats.report(prev, elapsed, gauges));
        self.stats.slowest_handler = Duration::ZERO;
        self.last_report = (self.now, self.stats.clone());
        self.next_report = deadline(self.now, self.config.stats_interval);
    }

    fn on_signals(&mut self) {
        let Some(signals) = &mut self.signals else {
            return;
        };
        let received = signals.pending().count() as u32;
        if received > 0 {
            info!("received a stop signal");
            self.stop_requests.fetch_add(received, Ordering::SeqCst);
            self.check_stop_requests();
        }
    }

    /// Acts on new stop requests: the first drains, the next one forces.
    fn check_stop_requests(&mut self) {
        let requests = self.stop_requests.load(Ordering::SeqCst);
        if requests == self.stops_seen {
            return;
        }
        if self.stops_seen == 0 {
            self.begin_drain();
        }
        if requests >= 2 {
            warn!("second stop request: exiting now with {} connections open", self.conns.len());
            self.exit = Some(Exit::Forced);
        }
        self.stops_seen = requests;
    }

    /// Stops accepting, tells every connection `BYE shutdown`, and waits
    /// for them to close, up to the drain timeout.
    fn begin_drain(&mut self) {
        info!(
            "draining: listener closed, {} connections told BYE shutdown, waiting up to {:?}",
            self.conns.len(),
            self.config.drain_timeout
        );
        self.listener.close(self.poll.registry());
        self.drain_deadline = Some(self.now + millis(self.config.drain_timeout));
        let keys: Vec<usize> = self.conns.iter().map(|(key, _)| key).collect();
        for key in keys {
            if self.conns.contains(key) {
                self.begin_close(key, crate::close::CloseReason::Shutdown);
            }
        }
    }

    fn check_drain(&mut self) {
        let Some(deadline) = self.drain_deadline else {
            return;
        };
        if self.conns.is_empty() {
            info!("drained: every connection closed");
            self.exit.get_or_insert(Exit::Drained);
        } else if self.now >= deadline {
            warn!("drain timeout: closing the {} connections still open", self.conns.len());
            let keys: Vec<usize> = self.conns.iter().map(|(key, _)| key).collect();
            for key in keys {
                self.free(key);
            }
            self.exit.get_or_insert(Exit::DrainTimedOut);
        }
    }
}

/// A connection's token: slab key low, generation high.
fn conn_token(key: usize, generation: u32) -> Token {
    debug_assert!(key < 0xFFFF_FFF0, "slab keys stay below the fixed tokens");
    Token(key | (generation as usize) << 32)
}

/// `--max-connections`, or what the file-descriptor limit allows after the
/// reserve, whichever is lower.
fn connection_cap(config: &Config) -> io::Result<usize> {
    let limit = net::fd_limit()?;
    let allowed = usize::try_from(limit.soft).unwrap_or(usize::MAX).saturating_sub(config.fd_reserve);
    Ok(match config.max_connections {
        Some(asked) if asked > allowed => {
            warn!(
                "--max-connections {asked} needs more file descriptors than the limit allows \
                 ({} minus a reserve of {}); capping at {allowed}",
                limit.soft, config.fd_reserve
            );
            allowed
        }
        Some(asked) => asked,
        None => allowed,
    })
}
