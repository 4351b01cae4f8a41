//! The event loop: one thread, one `mio::Poll`, every connection: collars
//! and the app's HTTP clients alike.
//!
//! [`Reactor::run`] is the whole program once set up: wait in `poll` until a
//! socket is ready or the next deadline is due, handle the ready sockets,
//! accept what is waiting, fire due timers, and go round again. Each turn
//! reads the clock once and passes `now` down.
//!
//! Both protocols share everything below the protocol: the slab, the read
//! scratch buffer, the write path, the close path and the timing wheel. A
//! connection's [`Role`] says which protocol its bytes go to.
//!
//! Tokens: a connection's token is its slab key in the low 32 bits and the
//! connection's generation in the high 32. The slab hands a freed key
//! straight back to the next connection; the generation makes any event or
//! timer still in flight for the old one miss (see [`Reactor::live_key`]).
//! The listeners, the waker and the signal pipe have fixed tokens at the
//! top of the range, which no slab key reaches.
//!
//! Submodules: `accept` (the listeners), `conn` (reading, writing and
//! closing any connection), `device` (what collar input does), `http`
//! (requests in, responses out), `api` (the endpoints), `push` (events,
//! event streams and long polls).

mod accept;
mod api;
mod conn;
mod device;
mod http;
mod push;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use log::{info, warn};
use mio::{Events, Interest, Poll, Token, Waker};
use signal_hook_mio::v1_0::Signals;
use slab::Slab;

use crate::close::CloseReason;
use crate::config::Config;
use crate::connection::{Connection, Kind, Phase, Role};
use crate::device::{Mac, Timeouts};
use crate::events::EventLog;
use crate::http::{HttpTimeouts, Limits};
use crate::net::{self, ListenOptions};
use crate::stats::{Gauges, Stats, Throttle};
use crate::time::{Clock, Millis, deadline, millis};
use crate::wheel::{TimerId, Wheel};

use accept::Listener;

const DEVICE_LISTENER: Token = Token(usize::MAX);
const HTTP_LISTENER: Token = Token(usize::MAX - 1);
const WAKER: Token = Token(usize::MAX - 2);
const SIGNALS: Token = Token(usize::MAX - 3);

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

/// The gateway: the poller, the listeners, the connections and their timers.
pub struct Reactor {
    config: Config,
    timeouts: Timeouts,
    http_timeouts: HttpTimeouts,
    http_limits: Limits,
    max_connections: usize,
    fd_limit: u64,
    poll: Poll,
    clock: Clock,
    /// The current turn's time, read once per turn.
    now: Millis,
    conns: Slab<Connection>,
    /// Connections held, by [`Kind`].
    open: [usize; 2],
    /// The generation given to the most recent connection.
    generation: u32,
    /// Identified devices that are online (phase `Open`), by MAC.
    devices: BTreeMap<Mac, Token>,
    wheel: Wheel<Token>,
    /// Timers that fired this turn (kept to reuse its allocation).
    expired: Vec<(TimerId, Token)>,
    /// The device and HTTP listeners, indexed by [`Kind`].
    listeners: [Listener; 2],
    /// Connections whose read budget ran out with input left; read again
    /// next turn, since no new edge will announce it.
    ready: Vec<Token>,
    /// HTTP connections whose pipelined requests can go on (a long poll was
    /// answered, or output drained below the high-water mark); handled
    /// after the current event, never from inside another connection's.
    resume: Vec<Token>,
    /// The read buffer shared by all connections.
    scratch: Vec<u8>,
    /// Replies being batched for the device in hand, written in one go.
    replies: Vec<u8>,
    /// An HTTP response or event frame being built.
    http_out: Vec<u8>,
    /// Recent device events, for replay.
    events: EventLog,
    /// HTTP connections streaming events.
    subscribers: HashSet<Token>,
    /// HTTP connections holding `/events/poll`.
    pollers: HashSet<Token>,
    /// Device connection -> HTTP connections waiting for its `LOCATION:`.
    /// A device with an entry has been sent `location` already.
    location_waits: HashMap<Token, Vec<Token>>,
    /// Reused list of tokens for fan-out.
    fanout: Vec<Token>,
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
    /// Binds the listeners and prepares the loop. Call
    /// [`net::raise_fd_limit`] first: the connection cap is derived from the
    /// current limit.
    pub fn bind(config: Config) -> io::Result<Reactor> {
        let poll = Poll::new()?;
        let options = ListenOptions { backlog: config.backlog, keepalive: config.tcp_keepalive };
        let mut devices = net::listen(config.device_listen, options)?;
        poll.registry().register(&mut devices, DEVICE_LISTENER, Interest::READABLE)?;
        let mut http = net::listen(config.http_listen, options)?;
        poll.registry().register(&mut http, HTTP_LISTENER, Interest::READABLE)?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);

        let fd_limit = net::fd_limit()?.soft;
        let max_connections = connection_cap(&config, fd_limit);
        let clock = Clock::new();
        let mut wheel = Wheel::new(TICK, WHEEL_SLOTS);
        // Pre-size, so growing to the cap never pauses the loop to copy. The
        // memory is only reserved; pages are touched as connections arrive.
        wheel.reserve(max_connections);
        Ok(Reactor {
            timeouts: config.timeouts(),
            http_timeouts: config.http_timeouts(),
            http_limits: config.http_limits(),
            next_report: deadline(0, config.stats_interval),
            events: EventLog::new(config.event_history),
            config,
            max_connections,
            fd_limit,
            poll,
            clock,
            now: 0,
            conns: Slab::with_capacity(max_connections),
            open: [0; 2],
            generation: 0,
            devices: BTreeMap::new(),
            wheel,
            expired: Vec::new(),
            listeners: [Listener::new(devices, Kind::Device), Listener::new(http, Kind::Http)],
            ready: Vec::new(),
            resume: Vec::new(),
            scratch: vec![0; SCRATCH],
            replies: Vec::new(),
            http_out: Vec::new(),
            subscribers: HashSet::new(),
            pollers: HashSet::new(),
            location_waits: HashMap::new(),
            fanout: Vec::new(),
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
        self.listeners[Kind::Device as usize].local_addr()
    }

    /// The address of the HTTP API.
    pub fn http_addr(&self) -> io::Result<SocketAddr> {
        self.listeners[Kind::Http as usize].local_addr()
    }

    /// The connection cap in force.
    pub fn max_connections(&self) -> usize {
        self.max_connections
    }

    /// The counters so far (after [`Reactor::run`] returns: the final ones).
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Number of connections held, open or closing.
    pub fn connections(&self) -> usize {
        self.conns.len()
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
        info!(
            "http: listening on {}, at most {} connections{}",
            self.http_addr()?,
            self.config.max_http_connections,
            if self.config.api_token.is_some() { ", bearer token required" } else { "" }
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
                    DEVICE_LISTENER => self.listeners[Kind::Device as usize].ready = true,
                    HTTP_LISTENER => self.listeners[Kind::Http as usize].ready = true,
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
            self.resume_http();
            self.now = self.clock.now();
            self.fire_timers();
            self.maybe_report();
            self.check_drain();
            self.stats.loop_turn(woke.elapsed());
            if let Some(exit) = self.exit {
                return Ok(exit);
            }
        }
    }

    /// How long `poll` may sleep: until the earliest deadline, or not at all
    /// when work is already known to be waiting.
    fn poll_timeout(&self) -> Option<Duration> {
        let now = self.clock.now();
        if !self.ready.is_empty() || !self.resume.is_empty() || self.listeners.iter().any(|l| l.can_accept(now)) {
            return Some(Duration::ZERO);
        }
        let paused = self.listeners.iter().filter_map(|l| l.paused_until);
        [self.wheel.next_expiry(), self.next_report, self.drain_deadline]
            .into_iter()
            .flatten()
            .chain(paused)
            .min()
            .map(|at| Duration::from_millis(at.saturating_sub(now)))
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
        #[cfg(debug_assertions)]
        let fired = !expired.is_empty();
        for (id, token) in expired.drain(..) {
            // Handling one connection's deadline can free another connection
            // or re-arm its timer (a device's close answers HTTP waiters);
            // either way, that connection's expiry in this batch is void.
            let Some(key) = self.live_key(token) else { continue };
            let conn = &mut self.conns[key];
            if conn.timer != Some(id) {
                continue;
            }
            conn.timer = None;
            match (conn.phase, &conn.role) {
                (Phase::Open, Role::Device(_)) => self.device_deadline(key),
                (Phase::Open, Role::Http(_)) => self.http_deadline(key),
                // The linger deadline of a closing connection.
                (Phase::Closing { .. } | Phase::Lingering, _) => self.free(key),
            }
        }
        self.expired = expired;
        #[cfg(debug_assertions)]
        if fired {
            let armed = self.conns.iter().filter(|(_, c)| c.timer.is_some()).count();
            debug_assert_eq!(self.wheel.len(), armed, "a timer is filed that no connection holds");
        }
    }

    fn gauges(&self) -> Gauges {
        Gauges { connections: self.conns.len(), devices: self.devices.len(), http: self.open[Kind::Http as usize] }
    }

    fn maybe_report(&mut self) {
        let Some(due) = self.next_report else { return };
        if self.now < due {
            return;
        }
        let (at, prev) = &self.last_report;
        let elapsed = Duration::from_millis(self.now - at);
        info!("stats: {}", self.stats.report(prev, elapsed, self.gauges()));
        self.stats.slowest_handler = Duration::ZERO;
        self.last_report = (self.now, self.stats.clone());
        self.next_report = deadline(self.now, self.config.stats_interval);
    }

    fn on_signals(&mut self) {
        let Some(signals) = &mut self.signals else { return };
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

    fn draining(&self) -> bool {
        self.drain_deadline.is_some()
    }

    /// Stops accepting devices, tells every device `BYE shutdown`, ends
    /// event streams, long polls and idle HTTP connections, and waits for
    /// them all to close, up to the drain timeout. The HTTP listener stays
    /// open meanwhile, so a load balancer polling `/health` sees 503
    /// `draining` rather than a refused connection.
    fn begin_drain(&mut self) {
        info!(
            "draining: device listener closed, {} connections to close, waiting up to {:?}",
            self.conns.len(),
            self.config.drain_timeout
        );
        self.listeners[Kind::Device as usize].close(self.poll.registry());
        self.drain_deadline = Some(self.now.saturating_add(millis(self.config.drain_timeout)));
        // HTTP first: the devices' goodbyes publish `disconnected` events,
        // which would otherwise answer parked polls as if nothing happened.
        for kind in [Kind::Http, Kind::Device] {
            let keys: Vec<usize> =
                self.conns.iter().filter(|(_, c)| c.role.kind() == kind).map(|(key, _)| key).collect();
            for key in keys {
                if self.conns.contains(key) {
                    self.drain_conn(key);
                }
            }
        }
    }

    fn check_drain(&mut self) {
        let Some(deadline) = self.drain_deadline else { return };
        if self.conns.is_empty() {
            info!("drained: every connection closed");
            self.exit.get_or_insert(Exit::Drained);
        } else if self.now >= deadline {
            warn!("drain timeout: closing the {} connections still open", self.conns.len());
            let keys: Vec<usize> = self.conns.iter().map(|(key, _)| key).collect();
            for key in keys {
                if self.conns[key].phase == Phase::Open {
                    self.leave_open(key, CloseReason::Shutdown);
                }
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
fn connection_cap(config: &Config, fd_limit: u64) -> usize {
    let allowed = usize::try_from(fd_limit).unwrap_or(usize::MAX).saturating_sub(config.fd_reserve);
    match config.max_connections {
        Some(asked) if asked > allowed => {
            warn!(
                "--max-connections {asked} needs more file descriptors than the limit allows \
                 ({fd_limit} minus a reserve of {}); capping at {allowed}",
                config.fd_reserve
            );
            allowed
        }
        Some(asked) => asked,
        None => allowed,
    }
}
