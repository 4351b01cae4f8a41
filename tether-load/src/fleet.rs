//! The event loop of one process: every collar's socket on one mio `Poll`,
//! shaped like the gateway's reactor.
//!
//! [`Fleet::run`] starts connects at the pace asked for, waits in `poll`
//! until a socket is ready or something is due (a timer, the next paced
//! connect, the progress line, the end of the run), feeds what arrived to
//! the collars, writes what they answer, and fires due timers. When the
//! run's time is up (or every collar has ended, or SIGINT/SIGTERM
//! arrived), it counts where each collar stands and closes everything.
//!
//! Like the gateway, and with the gateway library's code: a slab of
//! connections whose tokens carry a generation ([`token`]), so an event or
//! timer for a freed slot is recognized as stale; one timer per connection
//! in the library's hashed timing wheel, filed at [`Collar::next_deadline`]
//! and re-filed lazily (a timer that fires early just finds nothing due);
//! input read by the library's budgeted read loop ([`read_budgeted`]) into
//! one shared scratch buffer and cut into lines by its line framer; writes
//! go straight to the socket and only what the kernel refuses is queued,
//! with WRITABLE interest registered exactly while it is.
//!
//! Connecting is bounded by `--connect-rate` and by `--max-in-flight`
//! (connecting plus identifying; see [`pacing`]), so that even "as fast as
//! possible" never has more half-open connections than the gateway's
//! backlog can hold.

use std::io;
use std::mem;
use std::net::{IpAddr, SocketAddr};
use std::ops::ControlFlow;
use std::time::{Duration, Instant};

use mio::event::Event;
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use rustls::{ClientConnection, HandshakeKind};
use signal_hook_mio::v1_0::Signals;
use slab::Slab;
use tether::device::LineFramer;
use tether::reactor::io::{self as sock, Io, ReadEnd, Wire, read_budgeted};
use tether::reactor::token::{self, Generations};
use tether::wheel::{TimerId, Wheel};

use crate::cli::Args;
use crate::collar::{Behaviour, Collar, Flow, Micros, Phase};
use crate::connect::{self, Status};
use crate::outcome::Failure;
use crate::pacing;
use crate::plan::mac_of;
use crate::stats::{Stats, TlsHandshake};
use crate::summary::Timing;
use crate::tls::ClientTls;

const SIGNALS: Token = Token(usize::MAX);
/// Timer resolution: a periodic line or a timeout is at most this late.
const TICK: Duration = Duration::from_millis(10);
/// 4096 ticks of 10 ms: one revolution (41 s) covers the usual intervals.
const WHEEL_SLOTS: usize = 4096;
/// The read buffer shared by all connections.
const SCRATCH: usize = 64 * 1024;
const EVENTS: usize = 1024;
/// Reads per connection per turn (the budget given to [`read_budgeted`]),
/// so one chatty socket cannot starve the rest.
const READS_PER_TURN: usize = 4;
/// Longest line accepted from the gateway; its longest is far shorter.
const MAX_LINE: usize = 1024;
/// Unsent output a collar may queue before it is failed: the gateway is
/// not reading, and memory must stay bounded.
const MAX_QUEUED: usize = 64 * 1024;
const PROGRESS_EVERY: Micros = 1_000_000;

/// What one process's run does.
#[derive(Debug, Clone)]
pub struct Setup {
    pub target: SocketAddr,
    /// Source addresses, used round-robin; empty: let the kernel choose.
    pub sources: Vec<IpAddr>,
    pub collars: u64,
    /// Global index of the first collar (its MAC offset).
    pub first_index: u64,
    /// Connects per second; 0: no pacing.
    pub connect_rate: f64,
    pub max_in_flight: u64,
    pub duration: Micros,
    /// Collars in the closed RTT loop (0: no loop).
    pub rtt_active: u64,
    pub behaviour: Behaviour,
    /// `--tls`: what each connection's TLS client is made with.
    pub tls: Option<ClientTls>,
}

impl Setup {
    /// This process's part of the run, from its (possibly worker's) flags.
    pub fn from_args(args: &Args) -> Result<Setup, String> {
        let us = |d: Duration| u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        Ok(Setup {
            target: args.target,
            sources: args.source_ips.as_ref().map(|ips| ips.as_slice().to_vec()).unwrap_or_default(),
            collars: args.collars,
            first_index: args.mac_offset,
            connect_rate: args.connect_rate,
            max_in_flight: args.max_in_flight,
            duration: us(args.duration),
            rtt_active: if args.rtt { args.active } else { 0 },
            behaviour: Behaviour {
                mac_base: args.mac_base,
                connect_timeout: us(args.connect_timeout),
                ping_interval: us(args.ping_interval),
                report_interval: us(args.report_interval),
                keys: args.device_key_file.clone(),
                leave_after_identify: args.leave_after_identify,
            },
            tls: crate::tls::from_args(args)?,
        })
    }
}

/// A collar's connection in the slab.
#[derive(Debug)]
struct Conn {
    stream: TcpStream,
    /// Carried in the token: an event or timer with another one is stale.
    generation: u32,
    collar: Collar,
    framer: LineFramer,
    /// Bytes the kernel has not taken yet. Once connected, WRITABLE
    /// interest is registered exactly while this is non-empty.
    out: Vec<u8>,
    /// The pending timer and the deadline it was filed for.
    timer: Option<(TimerId, Micros)>,
    /// `--tls`: the connection's TLS client, between the socket and the
    /// collar. Its records wait in rustls, not in `out`; WRITABLE interest
    /// is registered while `blocked`.
    tls: Option<Box<ClientConnection>>,
    blocked: bool,
    /// The TLS handshake has been counted (by its kind) once done.
    handshake_counted: bool,
}

impl Conn {
    /// Inside TLS, sends a close_notify before the socket is closed, as a
    /// well-behaved client does, so the gateway sees a clean close rather
    /// than a truncated stream (best effort: the socket may be gone, or
    /// full).
    fn close_notify(&mut self) {
        if let Some(tls) = &mut self.tls {
            tls.send_close_notify();
            let _ = tls.write_tls(&mut Wire(&self.stream));
        }
    }
}

pub struct Fleet {
    setup: Setup,
    poll: Poll,
    epoch: Instant,
    /// The time of the event being handled, read from the clock per event
    /// (latencies on loopback are tens of microseconds: a per-turn clock
    /// would blur them).
    now: Micros,
    conns: Slab<Conn>,
    generations: Generations,
    wheel: Wheel<Token>,
    expired: Vec<(TimerId, Token)>,
    /// Connections whose read budget ran out with input left.
    ready: Vec<Token>,
    scratch: Vec<u8>,
    /// What the collar in hand wants sent, written in one go.
    batch: Vec<u8>,
    stats: Stats,
    /// Collars started so far.
    started: u64,
    /// When every collar had been connected or had failed.
    connect_phase: Option<Micros>,
    /// When the RTT loop started, and the PONGs counted before it.
    rtt_start: Option<(Micros, u64)>,
    rtt_active: u64,
    signals: Signals,
    stop: bool,
}

impl Fleet {
    pub fn new(setup: Setup) -> io::Result<Fleet> {
        let poll = Poll::new()?;
        let mut signals = Signals::new([libc::SIGINT, libc::SIGTERM])?;
        poll.registry().register(&mut signals, SIGNALS, Interest::READABLE)?;
        let capacity = usize::try_from(setup.collars).unwrap_or(usize::MAX).min(1 << 20);
        let mut wheel = Wheel::new(TICK, WHEEL_SLOTS);
        wheel.reserve(capacity);
        Ok(Fleet {
            setup,
            poll,
            epoch: Instant::now(),
            now: 0,
            conns: Slab::with_capacity(capacity),
            generations: Generations::default(),
            wheel,
            expired: Vec::new(),
            ready: Vec::new(),
            scratch: vec![0; SCRATCH],
            batch: Vec::new(),
            stats: Stats::default(),
            started: 0,
            connect_phase: None,
            rtt_start: None,
            rtt_active: 0,
            signals,
            stop: false,
        })
    }

    /// Runs until the time is up, every collar has ended, a stop signal
    /// arrives, or `progress` fails (a worker whose parent is gone).
    /// `progress` gets the time and the counters once a second.
    pub fn run(mut self, mut progress: impl FnMut(Micros, &Stats) -> io::Result<()>) -> io::Result<(Stats, Timing)> {
        let end = self.setup.duration;
        let mut next_progress = PROGRESS_EVERY;
        let mut events = Events::with_capacity(EVENTS);
        loop {
            self.tick();
            if self.stop || self.now >= end || self.all_ended() {
                break;
            }
            let next_connect = self.start_connects();
            self.check_phases();
            if self.now >= next_progress {
                if progress(self.now, &self.stats).is_err() {
                    break;
                }
                next_progress = (self.now / PROGRESS_EVERY + 1) * PROGRESS_EVERY;
            }

            let mut wake = end.min(next_progress);
            if let Some(at) = next_connect {
                wake = wake.min(at);
            }
            if let Some(ms) = self.wheel.next_expiry() {
                wake = wake.min(ms.saturating_mul(1000));
            }
            if !self.ready.is_empty() {
                wake = self.now;
            }
            let timeout = Duration::from_micros(wake.saturating_sub(self.now));
            if let Err(e) = self.poll.poll(&mut events, Some(timeout))
                && e.kind() != io::ErrorKind::Interrupted
            {
                return Err(e);
            }
            for event in events.iter() {
                match event.token() {
                    SIGNALS => self.on_signals(),
                    token => self.on_event(token, event),
                }
            }
            self.read_leftovers();
            self.fire_timers();
        }
        Ok(self.finish())
    }

    fn tick(&mut self) {
        self.now = u64::try_from(self.epoch.elapsed().as_micros()).unwrap_or(u64::MAX);
    }

    /// Every collar was started and none is left: nothing more can happen.
    fn all_ended(&self) -> bool {
        self.started == self.setup.collars && self.conns.is_empty()
    }

    /// Starts the connects allowed now (see [`pacing`]); returns when to
    /// come back for more, if time is what holds them back.
    fn start_connects(&mut self) -> Option<Micros> {
        let left = self.setup.collars - self.started;
        let room = self.setup.max_in_flight.saturating_sub(self.stats.in_flight);
        let (allowed, next) = pacing::allowed(self.now, self.started, left, room, self.setup.connect_rate);
        for _ in 0..allowed {
            self.start_one();
        }
        next
    }

    fn start_one(&mut self) {
        let n = self.started;
        self.started += 1;
        let sources = &self.setup.sources;
        let source = (!sources.is_empty()).then(|| sources[(n % sources.len() as u64) as usize]);
        let index = self.setup.first_index + n;
        // The TLS client first: with --client-ca-cert it makes the collar's
        // key and certificate, which is not part of its connect time.
        let tls = self.setup.tls.as_ref().map(|tls| {
            let mac = mac_of(self.setup.behaviour.mac_base, index).expect("MAC range checked at start");
            tls.connect(mac)
        });
        if tls.is_some() {
            self.tick();
        }
        let mut collar = Collar::start(index, self.now, &mut self.stats);
        let tls = match tls {
            None => None,
            Some(Ok(conn)) => Some(Box::new(conn)),
            // The CA was tried at start (one certificate issued), so this
            // is not expected; counted if it happens all the same.
            Some(Err(_)) => return collar.fail(Failure::Other, &mut self.stats),
        };
        let mut stream = match connect::start(self.setup.target, source) {
            Ok(stream) => stream,
            Err(e) => return collar.fail(Failure::of(&e), &mut self.stats),
        };
        let entry = self.conns.vacant_entry();
        let key = entry.key();
        let generation = self.generations.take();
        let token = token::pack(key, generation);
        // Writable announces the end of the connect (failed or not).
        if let Err(e) = self.poll.registry().register(&mut stream, token, Interest::READABLE | Interest::WRITABLE) {
            return collar.fail(Failure::of(&e), &mut self.stats);
        }
        entry.insert(Conn {
            stream,
            generation,
            collar,
            framer: LineFramer::default(),
            out: Vec::new(),
            timer: None,
            tls,
            blocked: false,
            handshake_counted: false,
        });
        self.arm(key);
    }

    /// Marks the end of the connect phase, and starts the RTT loop then.
    fn check_phases(&mut self) {
        if self.connect_phase.is_none() && self.started == self.setup.collars && self.stats.in_flight == 0 {
            self.connect_phase = Some(self.now);
        }
        if self.connect_phase.is_some() && self.rtt_start.is_none() && self.setup.rtt_active > 0 {
            self.rtt_start = Some((self.now, self.stats.pongs_received));
            let keys: Vec<usize> = self
                .conns
                .iter()
                .filter(|(_, conn)| conn.collar.phase() == Phase::Online)
                .map(|(key, _)| key)
                .take(usize::try_from(self.setup.rtt_active).unwrap_or(usize::MAX))
                .collect();
            for key in keys {
                self.rtt_active += 1;
                self.conns[key].collar.start_rtt(self.now, &mut self.batch, &mut self.stats);
                let _ = self.send_batch(key);
            }
        }
    }

    fn on_signals(&mut self) {
        for _ in self.signals.pending() {
            self.stop = true;
        }
    }

    /// The slab key of a token, if its connection is still the same one.
    fn live_key(&self, token: Token) -> Option<usize> {
        let (key, generation) = token::unpack(token);
        self.conns.get(key).filter(|conn| conn.generation == generation).map(|_| key)
    }

    fn on_event(&mut self, token: Token, event: &Event) {
        let Some(key) = self.live_key(token) else {
            return;
        };
        self.tick();
        if self.conns[key].collar.phase() == Phase::Connecting {
            match connect::check(&self.conns[key].stream) {
                Status::Pending => return,
                Status::Failed(e) => return self.fail(key, Failure::of(&e)),
                Status::Connected => {
                    if self.on_connected(key).is_break() {
                        return;
                    }
                }
            }
        } else if event.is_writable() && self.flush(key).is_break() {
            return;
        }
        if event.is_readable() || event.is_read_closed() || event.is_error() {
            // With the peer's FIN already reported, read on past a short
            // read to the end of file: no further edge will announce it.
            self.read(key, event.is_read_closed() || event.is_error());
        }
    }

    fn on_connected(&mut self, key: usize) -> ControlFlow<()> {
        let token = self.token_of(key);
        let conn = &mut self.conns[key];
        // Nothing is queued yet: stop watching for writability.
        if let Err(e) = self.poll.registry().reregister(&mut conn.stream, token, Interest::READABLE) {
            self.fail(key, Failure::of(&e));
            return ControlFlow::Break(());
        }
        conn.collar.on_connected(self.now, &self.setup.behaviour, &mut self.batch, &mut self.stats);
        self.send_batch(key)?;
        self.arm(key);
        ControlFlow::Continue(())
    }

    /// Reads until the socket is drained or this turn's budget is spent
    /// ([`read_budgeted`]; with `to_eof`, on past a short read to see the
    /// end of file), hands the bytes to the collar line by line, then sends
    /// what it answered. A connection whose budget ran out is read again
    /// next turn: no new edge will announce the input left behind.
    fn read(&mut self, key: usize, to_eof: bool) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        if conn.tls.is_some() {
            return self.read_tls(key);
        }
        let Conn { stream, framer, collar, .. } = conn;
        let (now, how, batch, stats) = (self.now, &self.setup.behaviour, &mut self.batch, &mut self.stats);
        let mut got = false;
        let end = read_budgeted(stream, &mut self.scratch, READS_PER_TURN, to_eof, |bytes| {
            got = true;
            match hand_lines(framer, collar, bytes, now, how, batch, stats) {
                Flow::Close => ControlFlow::Break(()),
                Flow::Continue => ControlFlow::Continue(()),
            }
        });
        // A failed write means the connection is gone.
        if self.send_batch(key).is_break() {
            return;
        }
        self.after_read(key, end, got);
    }

    /// What a read's end means for the collar, plain or TLS: its deadline
    /// re-filed if bytes came (`got`), another read next turn if the
    /// budget ran out, or its end.
    fn after_read(&mut self, key: usize, end: ReadEnd, got: bool) {
        match end {
            ReadEnd::Drained => {
                if got {
                    self.arm(key);
                }
            }
            // Input may be left: read again next turn.
            ReadEnd::Budget => {
                self.arm(key);
                let token = self.token_of(key);
                self.ready.push(token);
            }
            // The collar closed (a BYE, an ERR to IDENTIFY, a line it could
            // not frame): it has counted how it ended.
            ReadEnd::Stopped => self.free(key),
            ReadEnd::Closed => {
                self.conns[key].collar.on_eof(&mut self.stats);
                self.free(key);
            }
            ReadEnd::Failed(e) => self.fail(key, Failure::of(&e)),
        }
    }

    /// [`Fleet::read`] inside TLS: records are read from the socket into
    /// rustls (through the library's [`Wire`]), opened, and the plaintext
    /// handed to the collar line by line; then the answers (and whatever
    /// the handshake needs to send) are written.
    fn read_tls(&mut self, key: usize) {
        let mut end = ReadEnd::Budget;
        for _ in 0..READS_PER_TURN {
            let Conn { stream, framer, collar, tls, handshake_counted, .. } = &mut self.conns[key];
            let tls = tls.as_mut().expect("a TLS connection");
            match tls.read_tls(&mut Wire(stream)) {
                Ok(0) => {
                    end = ReadEnd::Closed;
                    break;
                }
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    end = ReadEnd::Drained;
                    break;
                }
                Err(e) => {
                    end = ReadEnd::Failed(e);
                    break;
                }
            }
            if tls.process_new_packets().is_err() {
                // Refused by the gateway, or not TLS: the collar cannot talk.
                return self.fail(key, Failure::Other);
            }
            if !*handshake_counted && !tls.is_handshaking() {
                *handshake_counted = true;
                let kind = match tls.handshake_kind() {
                    Some(HandshakeKind::Resumed) => TlsHandshake::Resumed,
                    Some(HandshakeKind::FullWithHelloRetryRequest) => TlsHandshake::FullWithHelloRetry,
                    Some(HandshakeKind::Full) | None => TlsHandshake::Full,
                };
                self.stats.tls_handshakes[kind as usize] += 1;
            }
            let (now, how, batch, stats) = (self.now, &self.setup.behaviour, &mut self.batch, &mut self.stats);
            let mut flow = Flow::Continue;
            loop {
                use io::Read as _;
                let n = match tls.reader().read(&mut self.scratch) {
                    Ok(0) => {
                        end = ReadEnd::Closed;
                        break;
                    }
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(_) => {
                        end = ReadEnd::Closed;
                        break;
                    }
                };
                flow = hand_lines(framer, collar, &self.scratch[..n], now, how, batch, stats);
                if flow == Flow::Close {
                    break;
                }
            }
            if flow == Flow::Close {
                end = ReadEnd::Stopped;
                break;
            }
            if matches!(end, ReadEnd::Closed) {
                break;
            }
        }
        if self.send_batch(key).is_break() {
            return;
        }
        // Inside TLS the deadline is re-filed after every read, whatever
        // the plaintext (a record may carry none).
        self.after_read(key, end, true);
    }

    /// Writes the records rustls holds until the kernel takes no more,
    /// watching for writability exactly while some wait. `Break` when the
    /// connection is gone.
    fn flush_tls(&mut self, key: usize) -> ControlFlow<()> {
        let token = self.token_of(key);
        let conn = &mut self.conns[key];
        let tls = conn.tls.as_mut().expect("a TLS connection");
        let mut blocked = false;
        while tls.wants_write() {
            match tls.write_tls(&mut Wire(&conn.stream)) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    blocked = true;
                    break;
                }
                Err(e) => {
                    self.fail(key, Failure::of(&e));
                    return ControlFlow::Break(());
                }
            }
        }
        if blocked != conn.blocked {
            conn.blocked = blocked;
            let interest = if blocked { Interest::READABLE | Interest::WRITABLE } else { Interest::READABLE };
            if let Err(e) = self.poll.registry().reregister(&mut conn.stream, token, interest) {
                self.fail(key, Failure::of(&e));
                return ControlFlow::Break(());
            }
        }
        ControlFlow::Continue(())
    }

    /// Reads again the connections whose budget ran out last turn.
    fn read_leftovers(&mut self) {
        let mut tokens = mem::take(&mut self.ready);
        for token in tokens.drain(..) {
            if let Some(key) = self.live_key(token) {
                self.tick();
                self.read(key, true);
            }
        }
        if self.ready.is_empty() {
            self.ready = tokens;
        }
    }

    /// Sends the batch: written at once when nothing is queued, the rest
    /// queued until the socket is writable. `Break` when the write failed
    /// (the connection is then gone).
    fn send_batch(&mut self, key: usize) -> ControlFlow<()> {
        let conn = &mut self.conns[key];
        if let Some(tls) = &mut conn.tls {
            // Sealed into records (held by rustls until the handshake is
            // done), then written with whatever the handshake has to send.
            use io::Write as _;
            let sealed = tls.writer().write_all(&self.batch);
            self.batch.clear();
            if sealed.is_err() {
                self.fail(key, Failure::Other);
                return ControlFlow::Break(());
            }
            return self.flush_tls(key);
        }
        if self.batch.is_empty() {
            return ControlFlow::Continue(());
        }
        let result = if conn.out.is_empty() {
            match sock::write(&conn.stream, &self.batch) {
                Io::Done(n) if n == self.batch.len() => Ok(()),
                Io::Done(n) => {
                    conn.out.extend_from_slice(&self.batch[n..]);
                    Ok(())
                }
                Io::WouldBlock => {
                    conn.out.extend_from_slice(&self.batch);
                    Ok(())
                }
                Io::Closed => Err(Failure::Reset),
                Io::Failed(e) => Err(Failure::of(&e)),
            }
            .and_then(|()| {
                if conn.out.is_empty() {
                    return Ok(());
                }
                let token = token::pack(key, conn.generation);
                let interest = Interest::READABLE | Interest::WRITABLE;
                self.poll.registry().reregister(&mut conn.stream, token, interest).map_err(|e| Failure::of(&e))
            })
        } else if conn.out.len() + self.batch.len() > MAX_QUEUED {
            Err(Failure::Other)
        } else {
            conn.out.extend_from_slice(&self.batch);
            Ok(())
        };
        self.batch.clear();
        match result {
            Ok(()) => ControlFlow::Continue(()),
            Err(kind) => {
                self.fail(key, kind);
                ControlFlow::Break(())
            }
        }
    }

    /// Writes what was queued; once it is all out, stops watching for
    /// writability and frees the buffer. `Break` when the connection is gone.
    fn flush(&mut self, key: usize) -> ControlFlow<()> {
        if self.conns[key].tls.is_some() {
            return self.flush_tls(key);
        }
        let token = self.token_of(key);
        let conn = &mut self.conns[key];
        if conn.out.is_empty() {
            return ControlFlow::Continue(());
        }
        while !conn.out.is_empty() {
            match sock::write(&conn.stream, &conn.out) {
                Io::Done(n) => {
                    conn.out.drain(..n);
                }
                Io::WouldBlock => return ControlFlow::Continue(()),
                Io::Closed => {
                    self.fail(key, Failure::Reset);
                    return ControlFlow::Break(());
                }
                Io::Failed(e) => {
                    self.fail(key, Failure::of(&e));
                    return ControlFlow::Break(());
                }
            }
        }
        conn.out = Vec::new();
        if let Err(e) = self.poll.registry().reregister(&mut conn.stream, token, Interest::READABLE) {
            self.fail(key, Failure::of(&e));
            return ControlFlow::Break(());
        }
        ControlFlow::Continue(())
    }

    fn fire_timers(&mut self) {
        self.tick();
        let mut expired = mem::take(&mut self.expired);
        self.wheel.expire(self.now / 1000, &mut expired);
        for (id, token) in expired.drain(..) {
            let Some(key) = self.live_key(token) else {
                continue;
            };
            let conn = &mut self.conns[key];
            // A timer replaced since it was filed is void.
            if conn.timer.is_none_or(|(current, _)| current != id) {
                continue;
            }
            conn.timer = None;
            let flow = conn.collar.on_deadline(self.now, &self.setup.behaviour, &mut self.batch, &mut self.stats);
            if flow == Flow::Close {
                self.batch.clear();
                self.free(key);
                continue;
            }
            if self.send_batch(key).is_continue() {
                self.arm(key);
            }
        }
        self.expired = expired;
    }

    /// Files the connection's timer for its collar's next deadline, unless
    /// the pending one fires no later (then it is re-filed when it fires).
    fn arm(&mut self, key: usize) {
        let token = self.token_of(key);
        let conn = &mut self.conns[key];
        let want = conn.collar.next_deadline(&self.setup.behaviour);
        if let (Some((_, filed)), Some(want)) = (conn.timer, want)
            && filed <= want
        {
            return;
        }
        if let Some((id, _)) = conn.timer.take() {
            self.wheel.cancel(id);
        }
        conn.timer = want.map(|at| (self.wheel.insert(at.div_ceil(1000), token), at));
    }

    fn fail(&mut self, key: usize, kind: Failure) {
        self.conns[key].collar.fail(kind, &mut self.stats);
        self.free(key);
    }

    /// Drops a connection: its timer is cancelled, its close announced
    /// inside TLS, and closing the socket takes it out of the poller.
    fn free(&mut self, key: usize) {
        let mut conn = self.conns.remove(key);
        if let Some((id, _)) = conn.timer {
            self.wheel.cancel(id);
        }
        conn.close_notify();
    }

    fn token_of(&self, key: usize) -> Token {
        token::pack(key, self.conns[key].generation)
    }

    /// Counts where every collar stands and closes every connection.
    fn finish(mut self) -> (Stats, Timing) {
        self.tick();
        for (_, conn) in self.conns.iter_mut() {
            conn.collar.finish(&mut self.stats);
            conn.close_notify();
        }
        self.conns.clear();
        let now = self.now;
        let (rtt_phase, rtt_round_trips) = match self.rtt_start {
            Some((at, pongs)) => (now - at, self.stats.pongs_received - pongs),
            None => (0, 0),
        };
        let timing = Timing {
            elapsed: now,
            connect_phase: self.connect_phase.unwrap_or(now),
            rtt_phase,
            rtt_active: self.rtt_active,
            rtt_round_trips,
        };
        (self.stats, timing)
    }
}

/// Hands the bytes of one read to `collar` line by line, its answers
/// appended to `batch`. On `Close` (the collar closed, or the bytes are
/// not lines it can frame: not a gateway it knows how to talk to) the
/// answers to this read's lines are dropped; those of earlier reads are
/// still sent.
fn hand_lines(
    framer: &mut LineFramer,
    collar: &mut Collar,
    bytes: &[u8],
    now: Micros,
    how: &Behaviour,
    batch: &mut Vec<u8>,
    stats: &mut Stats,
) -> Flow {
    let answered = batch.len();
    let mut flow = Flow::Continue;
    let framed = framer.feed(bytes, MAX_LINE, |line| {
        flow = collar.on_line(line, now, how, batch, stats);
        if flow == Flow::Close { ControlFlow::Break(()) } else { ControlFlow::Continue(()) }
    });
    if framed.is_err() {
        collar.fail(Failure::Other, stats);
        flow = Flow::Close;
    }
    if flow == Flow::Close {
        batch.truncate(answered);
    }
    flow
}
