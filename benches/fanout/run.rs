//! One run against one server: the subscribers, the publisher and the
//! canary are set up first (blocking sockets with timeouts, one after the
//! other), then the measured part runs on one thread and one mio `Poll`
//! over every socket, non-blocking and edge-triggered.
//!
//! The measured window opens just before the first byte of the burst is
//! written and closes when the last reading subscriber receives its last
//! message (every reading subscriber has all `events`, or has been closed;
//! or the run timed out, and then it closes at the last message any reading
//! subscriber received).

use std::collections::VecDeque;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream as StdStream};
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};

use crate::server::{self, Server};
use crate::wire::{self, CANARY_MAC, PUBLISHER_MAC, Proto};

/// The parameters of a run.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// Subscribers that read everything.
    pub subscribers: usize,
    /// Subscribers that never read after subscribing.
    pub stuck: usize,
    /// Messages in the burst.
    pub events: usize,
    /// The canary's period.
    pub ping_every: Duration,
    /// The most the measured part may take.
    pub timeout: Duration,
}

const PUBLISHER: Token = Token(0);
const CANARY: Token = Token(1);
const FIRST_READER: usize = 2;
/// One read's buffer, shared by the subscribers (each keeps only its
/// unfinished frame).
const SCRATCH: usize = 256 * 1024;
/// The longest unfinished frame a subscriber may hold.
const MAX_PENDING: usize = 64 * 1024;
/// Period of the CPU and kernel-memory samples.
const SAMPLE_EVERY: Duration = Duration::from_millis(50);
/// The canary pings this long before the burst starts.
const WARM_UP: Duration = Duration::from_millis(200);
/// After the window, how long the pings still in flight may take.
const PING_GRACE: Duration = Duration::from_secs(10);
/// While draining subscribers, the canary is looked after this often.
const CANARY_CHECK: Duration = Duration::from_micros(100);

/// What one run measured.
#[derive(Debug)]
pub struct Measured {
    /// Time to open and subscribe every client, before the window.
    pub setup: Duration,
    /// First burst byte to last message of the last reading subscriber.
    pub window: Duration,
    /// Round trips (µs) of the pings sent in the window and answered.
    pub rtts_us: Vec<u64>,
    /// Pings sent in the window.
    pub pings: u64,
    /// Of those, the ones not answered before the run ended.
    pub pings_unanswered: u64,
    /// Their age (µs) when the run ended: lower bounds of their RTT.
    pub unanswered_age_us: Vec<u64>,
    /// Server CPU (user + system) over the window, in seconds.
    pub cpu_seconds: Option<f64>,
    /// This process's CPU over the window (the client thread, mostly).
    pub client_cpu_seconds: Option<f64>,
    /// Messages received by the reading subscribers, all together.
    pub delivered: u64,
    /// Bytes received by the reading subscribers in the measured part.
    pub delivered_bytes: u64,
    /// Reading subscribers that got every message.
    pub complete: usize,
    /// Reading subscribers closed (by the server, or on an error), with why.
    pub readers_closed: Vec<String>,
    /// Fewest messages any reading subscriber got.
    pub min_delivered: u64,
    /// How long writing the whole burst took (the socket's pace).
    pub burst_written: Option<Duration>,
    /// Whether the run hit `timeout` before the window closed.
    pub timed_out: bool,
    /// Kernel TCP memory before the clients connected, and its peak.
    pub tcp_mem_base: Option<u64>,
    pub tcp_mem_peak: Option<u64>,
    /// Server memory right after the window, and its peak so far.
    pub rss_end: Option<u64>,
    pub rss_peak: Option<u64>,
    /// Redis's answers to the first and the last `PUBLISH` (receivers).
    pub receivers_first: Option<i64>,
    pub receivers_last: Option<i64>,
    /// Oddities: errors, unexpected replies.
    pub notes: Vec<String>,
}

/// The client sockets, kept open after the run for the post-run queries.
pub struct Clients {
    proto: Proto,
    stuck: Vec<Stuck>,
    _readers: Vec<Reader>,
    _publisher: Publisher,
    _canary: Canary,
    _poll: Poll,
}

/// What the stuck subscribers had been sent, read once the run was over.
#[derive(Debug, Default)]
pub struct StuckReport {
    /// Stuck subscribers the server had closed.
    pub closed: usize,
    /// Fewest and most messages found on one of them.
    pub min: u64,
    pub max: u64,
}

/// Runs the scenario against `server`.
pub fn run(server: &Server, sc: &Scenario) -> Result<(Measured, Clients), String> {
    let proto = server.proto;
    let tcp_mem_base = server::tcp_mem_bytes();
    let setup_started = Instant::now();

    // Subscribers first, stuck ones spread evenly among the readers.
    let sub_addr = server.http.unwrap_or(server.addr);
    let total = sc.subscribers + sc.stuck;
    let (mut readers, mut stuck) = (Vec::with_capacity(sc.subscribers), Vec::with_capacity(sc.stuck));
    for i in 0..total {
        let (stream, pending) = subscribe(proto, sub_addr).map_err(|e| format!("subscriber {i}: {e}"))?;
        if (i + 1) * sc.stuck / total > i * sc.stuck / total {
            stuck.push(Stuck { stream, pending });
        } else {
            let stream = nonblocking(stream)?;
            readers.push(Reader { stream, pending, got: 0, bytes: 0, last_at: None, closed: None });
        }
    }
    // Then the publisher and the canary (on tether, identifying publishes a
    // `connected` event each, which the subscribers get and do not count).
    let (publisher, input) = device(proto, server.addr, PUBLISHER_MAC).map_err(|e| format!("publisher: {e}"))?;
    let burst = proto.burst(sc.events);
    let mut publisher = Publisher {
        stream: nonblocking(publisher)?,
        proto,
        burst_len: burst.len(),
        burst,
        written: 0,
        started: None,
        finished: None,
        input,
        receivers_first: None,
        receivers_last: None,
        notes: Vec::new(),
        error: None,
    };
    let (canary, input) = device(proto, server.addr, CANARY_MAC).map_err(|e| format!("canary: {e}"))?;
    let mut canary = Canary {
        stream: nonblocking(canary)?,
        proto,
        out: Vec::new(),
        input,
        inflight: VecDeque::new(),
        answered: Vec::new(),
        next: Instant::now(),
        interval: sc.ping_every,
        sending: false,
        last_check: Instant::now(),
        notes: Vec::new(),
        error: None,
    };
    let setup = setup_started.elapsed();

    let mut poll = Poll::new().map_err(|e| format!("poll: {e}"))?;
    let registry = poll.registry();
    let both = Interest::READABLE | Interest::WRITABLE;
    registry.register(&mut publisher.stream, PUBLISHER, both).map_err(|e| e.to_string())?;
    registry.register(&mut canary.stream, CANARY, both).map_err(|e| e.to_string())?;
    for (i, r) in readers.iter_mut().enumerate() {
        registry.register(&mut r.stream, Token(FIRST_READER + i), Interest::READABLE).map_err(|e| e.to_string())?;
    }

    let mut run =
        Loop { proto, pid: server.pid, events: sc.events as u64, readers, publisher, canary, samples: Vec::new() };
    let ends = run.measure(&mut poll, sc)?;
    let Loop { readers, publisher, canary, samples, .. } = run;

    // The window closes with the last reading subscriber's last message.
    let window_start = ends.window_start;
    let window_end = readers.iter().filter_map(|r| r.last_at).max().unwrap_or(ends.stopped).max(window_start);
    let end = samples.iter().find(|s| s.at >= window_end);
    let seconds =
        |start: Option<u64>, end: Option<u64>| Some(end?.saturating_sub(start?) as f64 / server::ticks_per_second());
    let cpu_seconds = seconds(ends.cpu_start, end.and_then(|s| s.cpu));
    let client_cpu_seconds = seconds(ends.client_cpu_start, end.and_then(|s| s.client_cpu));
    let in_window = |sent: &Instant| (window_start..=window_end).contains(sent);
    let micros = |d: Duration| u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1);
    let rtts_us: Vec<u64> =
        canary.answered.iter().filter(|(sent, _)| in_window(sent)).map(|&(_, rtt)| micros(rtt)).collect();
    let unanswered_age_us: Vec<u64> =
        canary.inflight.iter().filter(|s| in_window(s)).map(|&sent| micros(ends.stopped - sent)).collect();
    let pings_unanswered = unanswered_age_us.len() as u64;

    let mut notes = Vec::new();
    notes.extend(publisher.error.iter().map(|e| format!("publisher: {e}")));
    notes.extend(publisher.notes.iter().take(5).map(|n| format!("publisher got {n:?}")));
    notes.extend(canary.error.iter().map(|e| format!("canary: {e}")));
    notes.extend(canary.notes.iter().take(5).map(|n| format!("canary got {n:?}")));
    let readers_closed: Vec<String> = readers.iter().filter_map(|r| r.closed.clone()).collect();
    let measured = Measured {
        setup,
        window: window_end - window_start,
        pings: rtts_us.len() as u64 + pings_unanswered,
        rtts_us,
        pings_unanswered,
        unanswered_age_us,
        cpu_seconds,
        client_cpu_seconds,
        delivered: readers.iter().map(|r| r.got).sum(),
        delivered_bytes: readers.iter().map(|r| r.bytes).sum(),
        complete: readers.iter().filter(|r| r.got >= sc.events as u64).count(),
        readers_closed,
        min_delivered: readers.iter().map(|r| r.got).min().unwrap_or(0),
        burst_written: publisher.finished.zip(publisher.started).map(|(end, start)| end - start),
        timed_out: ends.timed_out,
        tcp_mem_base,
        tcp_mem_peak: samples.iter().filter_map(|s| s.tcp_mem).max(),
        rss_end: server::status_bytes(server.pid, "VmRSS:"),
        rss_peak: server::status_bytes(server.pid, "VmHWM:"),
        receivers_first: publisher.receivers_first,
        receivers_last: publisher.receivers_last,
        notes,
    };
    let clients = Clients { proto, stuck, _readers: readers, _publisher: publisher, _canary: canary, _poll: poll };
    Ok((measured, clients))
}

/// How the measured part ended.
struct Ends {
    window_start: Instant,
    cpu_start: Option<u64>,
    client_cpu_start: Option<u64>,
    stopped: Instant,
    timed_out: bool,
}

/// The measured part's state.
struct Loop {
    proto: Proto,
    pid: u32,
    events: u64,
    readers: Vec<Reader>,
    publisher: Publisher,
    canary: Canary,
    samples: Vec<Sample>,
}

/// The server's and the client's CPU time and the kernel's TCP memory at
/// one moment.
struct Sample {
    at: Instant,
    cpu: Option<u64>,
    client_cpu: Option<u64>,
    tcp_mem: Option<u64>,
}

impl Loop {
    /// Pings for a moment, writes the burst, and turns the poll until every
    /// reading subscriber is done (then waits for the pings in flight), or
    /// until the timeout.
    fn measure(&mut self, poll: &mut Poll, sc: &Scenario) -> Result<Ends, String> {
        let mut events = Events::with_capacity(1024);
        let mut scratch = vec![0u8; SCRATCH];
        let started = Instant::now();
        let deadline = started + sc.timeout;
        let burst_at = started + WARM_UP;
        let mut next_sample = started;
        let mut outstanding = self.readers.len();
        let (mut window_start, mut cpu_start, mut client_cpu_start, mut done_at) = (None, None, None, None);
        self.canary.next = started;
        self.canary.sending = true;
        let timed_out = loop {
            let now = Instant::now();
            if now >= next_sample {
                self.sample(now);
                next_sample = now + SAMPLE_EVERY;
            }
            if window_start.is_none() && now >= burst_at {
                cpu_start = server::cpu_ticks(self.pid);
                client_cpu_start = server::cpu_ticks(std::process::id());
                let at = Instant::now();
                window_start = Some(at);
                self.publisher.started = Some(at);
                self.publisher.flush();
            }
            self.canary.tick(now);
            let publisher_done = self.publisher.finished.is_some() || self.publisher.error.is_some();
            if done_at.is_none() && publisher_done && outstanding == 0 {
                done_at = Some(now);
                self.sample(now);
                self.canary.sending = false;
            }
            if let Some(done) = done_at
                && (self.canary.inflight.is_empty() || self.canary.error.is_some() || now >= done + PING_GRACE)
            {
                break false;
            }
            if now >= deadline {
                self.sample(now);
                break done_at.is_none();
            }

            let mut wake = deadline.min(next_sample);
            if self.canary.sending {
                wake = wake.min(self.canary.next);
            }
            if window_start.is_none() {
                wake = wake.min(burst_at);
            }
            if let Some(done) = done_at {
                wake = wake.min(done + PING_GRACE);
            }
            match poll.poll(&mut events, Some(wake.saturating_duration_since(now))) {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(format!("poll: {e}")),
            }
            // The canary first, so its replies are timed before the drain.
            if events.iter().any(|e| e.token() == CANARY) {
                self.canary.read();
                self.canary.flush();
            }
            for event in events.iter() {
                match event.token() {
                    CANARY => {}
                    PUBLISHER => {
                        self.publisher.read();
                        self.publisher.flush();
                    }
                    Token(t) => {
                        let Some(r) = self.readers.get_mut(t - FIRST_READER) else { continue };
                        if r.closed.is_some() {
                            continue;
                        }
                        // A subscriber that has everything is still read.
                        let was_done = r.done(self.events);
                        r.drain(self.proto, &mut scratch, &mut self.canary);
                        if !was_done && r.done(self.events) {
                            outstanding -= 1;
                        }
                        if r.closed.is_some() {
                            let _ = poll.registry().deregister(&mut r.stream);
                        }
                    }
                }
            }
        };
        Ok(Ends {
            window_start: window_start.unwrap_or(started),
            cpu_start,
            client_cpu_start,
            stopped: Instant::now(),
            timed_out,
        })
    }

    fn sample(&mut self, at: Instant) {
        let (cpu, client_cpu) = (server::cpu_ticks(self.pid), server::cpu_ticks(std::process::id()));
        self.samples.push(Sample { at, cpu, client_cpu, tcp_mem: server::tcp_mem_bytes() });
    }
}

/// A subscriber that reads everything.
struct Reader {
    stream: TcpStream,
    /// The unfinished frame at the end of the last read.
    pending: Vec<u8>,
    /// Messages received.
    got: u64,
    /// Bytes received in the measured part.
    bytes: u64,
    /// When the last message arrived.
    last_at: Option<Instant>,
    closed: Option<String>,
}

impl Reader {
    fn done(&self, events: u64) -> bool {
        self.got >= events || self.closed.is_some()
    }

    /// Reads until the socket is empty, counting whole messages; each read
    /// goes into `scratch` after the unfinished frame of the last one.
    fn drain(&mut self, proto: Proto, scratch: &mut [u8], canary: &mut Canary) {
        while self.closed.is_none() {
            let held = self.pending.len();
            scratch[..held].copy_from_slice(&self.pending);
            match self.stream.read(&mut scratch[held..]) {
                Ok(0) => self.closed = Some("closed by the server".to_string()),
                Ok(n) => {
                    let at = Instant::now();
                    self.bytes += n as u64;
                    let filled = &scratch[..held + n];
                    match proto.count_messages(filled) {
                        Ok((messages, used)) => {
                            if messages > 0 {
                                self.got += messages;
                                self.last_at = Some(at);
                            }
                            self.pending.clear();
                            self.pending.extend_from_slice(&filled[used..]);
                            if self.pending.len() > MAX_PENDING {
                                self.closed = Some(format!("frame too long: {:?}", wire::preview(&self.pending)));
                            }
                        }
                        Err(e) => self.closed = Some(e),
                    }
                    canary.look_after(at);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => self.closed = Some(e.to_string()),
            }
        }
    }
}

/// A subscriber that stopped reading once subscribed.
struct Stuck {
    stream: StdStream,
    pending: Vec<u8>,
}

/// The connection that writes the burst.
struct Publisher {
    stream: TcpStream,
    proto: Proto,
    /// The burst, and after it any heartbeat answers.
    burst: Vec<u8>,
    burst_len: usize,
    written: usize,
    started: Option<Instant>,
    finished: Option<Instant>,
    input: Vec<u8>,
    receivers_first: Option<i64>,
    receivers_last: Option<i64>,
    notes: Vec<String>,
    error: Option<String>,
}

impl Publisher {
    /// Writes as much of the burst as the socket takes (once started).
    fn flush(&mut self) {
        if self.started.is_none() || self.error.is_some() {
            return;
        }
        while self.written < self.burst.len() {
            match self.stream.write(&self.burst[self.written..]) {
                Ok(n) => self.written += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    self.error = Some(format!("write: {e}"));
                    return;
                }
            }
        }
        if self.written >= self.burst_len && self.finished.is_none() {
            self.finished = Some(Instant::now());
        }
    }

    /// Reads the server's answers: Redis's receiver counts, tether's
    /// heartbeats (answered) and anything unexpected (noted).
    fn read(&mut self) {
        if let Err(e) = read_all(&mut self.stream, &mut self.input) {
            self.error.get_or_insert(e);
        }
        match self.proto.replies(&self.input) {
            Ok(r) => {
                if let Some(&first) = r.receivers.first() {
                    self.receivers_first.get_or_insert(first);
                }
                self.receivers_last = r.receivers.last().copied().or(self.receivers_last);
                for _ in 0..r.heartbeats {
                    self.burst.extend_from_slice(self.proto.heartbeat_answer());
                }
                for _ in 0..r.pongs {
                    self.notes.push("PONG".to_string());
                }
                self.notes.extend(r.other.into_iter().take(5));
                self.input.drain(..r.consumed);
            }
            Err(e) => {
                self.error.get_or_insert(e);
            }
        }
    }
}

/// The connection that pings on a fixed schedule (open loop) and times the
/// answers, matched in order.
struct Canary {
    stream: TcpStream,
    proto: Proto,
    /// Pings not yet taken by the socket.
    out: Vec<u8>,
    input: Vec<u8>,
    /// When each unanswered ping was sent, oldest first.
    inflight: VecDeque<Instant>,
    /// (sent, round trip) of each answered ping.
    answered: Vec<(Instant, Duration)>,
    next: Instant,
    interval: Duration,
    sending: bool,
    last_check: Instant,
    notes: Vec<String>,
    error: Option<String>,
}

impl Canary {
    /// Sends the pings that are due. If the client itself fell behind
    /// by more than a period, the missed slots are skipped rather than sent
    /// as a salvo.
    fn tick(&mut self, now: Instant) {
        if !self.sending || self.error.is_some() || now < self.next {
            return;
        }
        while self.next <= now {
            if now - self.next > self.interval {
                self.next = now;
            }
            self.out.extend_from_slice(self.proto.ping());
            self.inflight.push_back(now);
            self.next += self.interval;
        }
        self.flush();
    }

    /// Between two subscriber reads: pings that are due, answers that came.
    fn look_after(&mut self, now: Instant) {
        if now - self.last_check >= CANARY_CHECK {
            self.last_check = now;
            self.tick(now);
            self.read();
        }
    }

    fn flush(&mut self) {
        while !self.out.is_empty() && self.error.is_none() {
            match self.stream.write(&self.out) {
                Ok(n) => drop(self.out.drain(..n)),
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => self.error = Some(format!("write: {e}")),
            }
        }
    }

    /// Reads the answers; each `PONG` answers the oldest ping in flight.
    fn read(&mut self) {
        if self.error.is_some() {
            return;
        }
        let mut chunk = [0u8; 4096];
        loop {
            match self.stream.read(&mut chunk) {
                Ok(0) => {
                    self.error = Some("closed by the server".to_string());
                    return;
                }
                Ok(n) => {
                    let at = Instant::now();
                    self.input.extend_from_slice(&chunk[..n]);
                    self.answers(at);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    self.error = Some(format!("read: {e}"));
                    return;
                }
            }
        }
    }

    fn answers(&mut self, at: Instant) {
        let r = match self.proto.replies(&self.input) {
            Ok(r) => r,
            Err(e) => {
                self.error = Some(e);
                return;
            }
        };
        self.input.drain(..r.consumed);
        for _ in 0..r.pongs {
            match self.inflight.pop_front() {
                Some(sent) => self.answered.push((sent, at - sent)),
                None => self.notes.push("PONG with no PING in flight".to_string()),
            }
        }
        for _ in 0..r.heartbeats {
            self.out.extend_from_slice(self.proto.heartbeat_answer());
        }
        if self.notes.len() < 10 {
            self.notes.extend(r.other.into_iter().take(10));
        }
        self.flush();
    }
}

impl Clients {
    /// Reads what the stuck subscribers were sent (they start reading only
    /// now), until nothing more comes for 200 ms, at most 10 s.
    pub fn drain_stuck(&mut self) -> StuckReport {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut scratch = vec![0u8; SCRATCH];
        let mut got = vec![0u64; self.stuck.len()];
        let mut closed = vec![false; self.stuck.len()];
        for s in &self.stuck {
            let _ = s.stream.set_nonblocking(true);
        }
        let mut quiet_since = Instant::now();
        while Instant::now() < deadline && quiet_since.elapsed() < Duration::from_millis(200) {
            let mut progress = false;
            for (i, s) in self.stuck.iter_mut().enumerate() {
                while !closed[i] {
                    let held = s.pending.len();
                    scratch[..held].copy_from_slice(&s.pending);
                    match s.stream.read(&mut scratch[held..]) {
                        Ok(0) => closed[i] = true,
                        Ok(n) => {
                            progress = true;
                            let filled = &scratch[..held + n];
                            match self.proto.count_messages(filled) {
                                Ok((messages, used)) if held + n - used <= MAX_PENDING => {
                                    got[i] += messages;
                                    s.pending.clear();
                                    s.pending.extend_from_slice(&filled[used..]);
                                }
                                _ => closed[i] = true,
                            }
                        }
                        Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == ErrorKind::Interrupted => {}
                        Err(_) => closed[i] = true,
                    }
                }
            }
            if progress {
                quiet_since = Instant::now();
            } else {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        StuckReport {
            closed: closed.iter().filter(|&&c| c).count(),
            min: got.iter().copied().min().unwrap_or(0),
            max: got.iter().copied().max().unwrap_or(0),
        }
    }
}

/// Opens a subscription and waits for its confirmation; returns the
/// stream and whatever came after the confirmation.
fn subscribe(proto: Proto, addr: SocketAddr) -> Result<(StdStream, Vec<u8>), String> {
    let mut s = server::connect(addr)?;
    s.write_all(&proto.subscribe_request()).map_err(|e| format!("send: {e}"))?;
    let mut buf = Vec::new();
    loop {
        if let Some(used) = proto.subscribed(&buf)? {
            buf.drain(..used);
            return Ok((s, buf));
        }
        server::read_more(&mut s, &mut buf)?;
    }
}

/// Opens a device connection: tether identifies it (`OK`), Redis answers
/// one `PING`. Returns the stream and whatever came after.
fn device(proto: Proto, addr: SocketAddr, mac: &str) -> Result<(StdStream, Vec<u8>), String> {
    let mut s = server::connect(addr)?;
    let (hello, want): (Vec<u8>, &[u8]) = match proto {
        Proto::Tether => (format!("IDENTIFY:{mac}\n").into_bytes(), b"OK\n"),
        Proto::Redis => (proto.ping().to_vec(), b"+PONG\r\n"),
    };
    s.write_all(&hello).map_err(|e| format!("send: {e}"))?;
    let mut buf = Vec::new();
    while buf.len() < want.len() {
        server::read_more(&mut s, &mut buf)?;
    }
    if !buf.starts_with(want) {
        return Err(format!("expected {:?}, got {:?}", wire::preview(want), wire::preview(&buf)));
    }
    buf.drain(..want.len());
    Ok((s, buf))
}

fn nonblocking(s: StdStream) -> Result<TcpStream, String> {
    s.set_nonblocking(true).map_err(|e| format!("set_nonblocking: {e}"))?;
    Ok(TcpStream::from_std(s))
}

/// Reads until the socket is empty; an error once it is closed.
fn read_all(stream: &mut TcpStream, into: &mut Vec<u8>) -> Result<(), String> {
    let mut chunk = [0u8; 4096];
    loop {
        match stream.read(&mut chunk) {
            Ok(0) => return Err("closed by the server".to_string()),
            Ok(n) => into.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("read: {e}")),
        }
    }
}
