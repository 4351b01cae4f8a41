//! The reactor driven with a made-up protocol, over real loopback sockets.
//!
//! The reactor knows no protocol, so it is tested with the smallest one
//! that exercises every call of [`Session`] and [`App`]: [`Echo`] answers
//! each `\n`-terminated line with itself, and a few lines ask for more
//! (an effect, a question to the app, a message to another connection, a
//! close, a fed stream of bytes). [`TestApp`] gives the effects their
//! meaning through [`Ops`] and reports what it saw: closes as they happen
//! (a channel the test waits on), the rest when the reactor has stopped.
//!
//! Each test runs its own reactor on 127.0.0.1:0 in a thread and talks to
//! it with std `TcpStream`s whose reads time out: a test waits exactly as
//! long as the reactor needs and never sleeps to synchronize. Where a test
//! needs bytes to be in the kernel before the reactor looks (so that one
//! turn sees them together with an accept or a deadline), it connects and
//! writes before `run` starts: the connection waits in the listener's
//! queue with its bytes already in its receive buffer, and the first turn
//! accepts and reads it. The wheel's first tick is 0, so a deadline at 0
//! fires in that same first turn.

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::mpsc::{self, Receiver, Sender};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use mio::Token;

use super::*;
use crate::config::TcpKeepalive;
use crate::net::ListenOptions;

/// Longest any single wait may take before the test fails.
const TIMEOUT: Duration = Duration::from_secs(10);

/// The protocol's settings.
#[derive(Debug, Clone)]
struct Config {
    limit: OutputLimit,
    /// The deadline every session has until it has handled one (absolute).
    deadline: Option<Millis>,
    /// At its deadline, a session that has not received a line closes.
    strict: bool,
}

/// What an [`Echo`] asks of the app.
#[derive(Debug)]
enum Fx {
    /// `name N`: the app knows this connection as `N` from now on.
    Name(String),
    /// `fx W`: only recorded, with the lines the session had read by then.
    Note(String),
    /// `ask W`: the app replies `re W`.
    Ask(String),
    /// `send N T`: the app writes `T\n` to `N` and tells the sender how that went.
    Send(String, String),
    /// `reply N T`: the app delivers `T` to `N` as a reply.
    Reply(String, String),
    /// `close N` (a lingering close, with last words), `kill N` (presumed
    /// dead: reset at once) or `abort N` (presumed dead: reset after last
    /// words).
    Close(String, CloseReason),
    /// `feed K`: the app produces `K` bytes for this connection.
    Feed(usize),
    /// `stats`: the app answers with the reactor's counters.
    Stats,
    /// From `on_close`.
    Closed(CloseReason),
    /// `on_input` left the output over its limit.
    OverLimit,
    /// `on_input` was called while the output was over its limit.
    ReadWhileOverLimit,
}

/// The made-up protocol: one line in, one line out.
#[derive(Debug)]
struct Echo {
    /// The unfinished line.
    partial: Vec<u8>,
    lines: usize,
    last_line_at: Millis,
    /// Said `busy`: not idle, whatever the time.
    busy: bool,
    /// Set by `deadline N`: N ms after that line (else the config's).
    deadline_at: Option<Millis>,
    /// The deadline was handled (it fires once).
    judged: bool,
    /// Times `on_deadline` said `Close` and was asked again: a diagnostic
    /// count, not protocol state (the decision itself changes nothing).
    vetoes: usize,
}

impl Echo {
    fn on_line(&mut self, line: &str, cx: &mut CxOf<'_, Echo>) -> Next {
        let words: Vec<&str> = line.splitn(3, ' ').collect();
        match words[..] {
            ["name", name] => {
                cx.effects.push(Fx::Name(name.into()));
                cx.send(format!("named {name}\n").as_bytes());
            }
            ["fx", what] => cx.effects.push(Fx::Note(what.into())),
            ["ask", what] => cx.effects.push(Fx::Ask(what.into())),
            ["send", to, text] => cx.effects.push(Fx::Send(to.into(), text.into())),
            ["reply", to, text] => cx.effects.push(Fx::Reply(to.into(), text.into())),
            ["close", who] => cx.effects.push(Fx::Close(who.into(), CloseReason::Replaced)),
            ["kill", who] => cx.effects.push(Fx::Close(who.into(), CloseReason::HeartbeatTimeout)),
            ["abort", who] => cx.effects.push(Fx::Close(who.into(), CloseReason::Idle)),
            ["feed", n] => cx.effects.push(Fx::Feed(n.parse().unwrap())),
            ["deadline", ms] => self.deadline_at = Some(cx.now + ms.parse::<Millis>().unwrap()),
            ["stats"] => cx.effects.push(Fx::Stats),
            ["busy"] => {
                self.busy = true;
                cx.send(b"busy\n");
            }
            ["quit"] => return Next::Close(CloseReason::Completed),
            _ => {
                cx.send(line.as_bytes());
                cx.send(b"\n");
            }
        }
        Next::Continue
    }
}

impl Session for Echo {
    type Config = Config;
    type Effect = Fx;
    type Reply = String;

    fn on_input(&mut self, input: &[u8], cx: &mut CxOf<'_, Self>) -> Next {
        let limit = cx.config.limit.bytes();
        if cx.out.len() > limit {
            cx.effects.push(Fx::ReadWhileOverLimit);
        }
        self.partial.extend_from_slice(input);
        let mut next = Next::Continue;
        while next == Next::Continue
            && let Some(end) = memchr::memchr(b'\n', &self.partial)
        {
            let line: Vec<u8> = self.partial.drain(..=end).collect();
            self.lines += 1;
            self.last_line_at = cx.now;
            next = self.on_line(&String::from_utf8_lossy(&line[..end]), cx);
        }
        if cx.out.len() > limit {
            cx.effects.push(Fx::OverLimit);
        }
        next
    }

    fn on_reply(&mut self, reply: String, cx: &mut CxOf<'_, Self>) -> Next {
        cx.send(format!("{reply}\n").as_bytes());
        Next::Continue
    }

    fn on_deadline(&mut self, cx: &mut CxOf<'_, Self>) -> Next {
        if self.deadline(cx.config, cx.last_rx).is_some_and(|at| cx.now < at) {
            return Next::Continue; // early (the deadline moved later)
        }
        if cx.config.strict && self.lines == 0 {
            self.vetoes += 1;
            return Next::Close(CloseReason::HandshakeTimeout);
        }
        self.judged = true;
        cx.send(format!("deadline after {} lines, {} vetoed\n", self.lines, self.vetoes).as_bytes());
        Next::Continue
    }

    fn on_drain(&mut self, _cx: &mut CxOf<'_, Self>) -> Next {
        Next::Close(CloseReason::Shutdown)
    }

    fn on_close(&mut self, reason: CloseReason, cx: &mut CxOf<'_, Self>) {
        match reason {
            CloseReason::SlowConsumer => cx.out.clear(cx.pool),
            CloseReason::Replaced | CloseReason::Shutdown | CloseReason::Idle => {
                cx.send(format!("bye {}\n", reason.as_str()).as_bytes());
            }
            _ => {}
        }
        cx.effects.push(Fx::Closed(reason));
    }

    fn deadline(&self, config: &Config, _last_rx: Millis) -> Option<Millis> {
        if self.judged { None } else { self.deadline_at.or(config.deadline) }
    }

    fn idle_since(&self) -> Option<Millis> {
        (!self.busy).then_some(self.last_line_at)
    }

    fn output_limit(&self, config: &Config) -> OutputLimit {
        config.limit
    }
}

/// What the app tells the test while the reactor runs.
#[derive(Debug, Clone, PartialEq)]
enum Note {
    /// A connection closed: its name, if it gave one, and why.
    Closed(Option<String>, CloseReason),
    /// A session's output went over its limit.
    OverLimit,
}

/// A fed connection's production: bytes of [`pattern`] from `sent` on.
#[derive(Debug)]
struct Feeding {
    sent: usize,
    left: usize,
}

/// Byte `i` of what a fed connection is sent.
fn pattern(i: usize) -> u8 {
    b'a' + (i % 26) as u8
}

/// The application: effects to [`Ops`], with a record of what it saw.
#[derive(Debug)]
struct TestApp {
    notes: Sender<Note>,
    names: HashMap<String, Token>,
    feeds: HashMap<Token, Feeding>,
    /// `fx` notes in the order applied: origin, word, and how many lines
    /// the origin's session had read when the note was applied.
    applied: Vec<(Token, String, usize)>,
    /// The budget of every `produce` call.
    produce_budgets: Vec<usize>,
    over_limit: usize,
    read_while_over_limit: usize,
}

impl TestApp {
    fn name_of(&self, token: Token) -> Option<String> {
        self.names.iter().find(|&(_, &t)| t == token).map(|(name, _)| name.clone())
    }
}

impl App for TestApp {
    type Session = Echo;

    fn open(&mut self, _kind: Kind, _peer: &Peer, now: Millis) -> Echo {
        Echo {
            partial: Vec::new(),
            lines: 0,
            last_line_at: now,
            busy: false,
            deadline_at: None,
            judged: false,
            vetoes: 0,
        }
    }

    fn refusal(&mut self, _kind: Kind, reason: CloseReason, out: &mut Vec<u8>, _stats: &mut Stats) {
        out.extend_from_slice(format!("refused {}\n", reason.as_str()).as_bytes());
    }

    fn apply(&mut self, origin: Token, effect: Fx, ops: &mut Ops<'_, Echo>) {
        match effect {
            Fx::Name(name) => {
                self.names.insert(name, origin);
            }
            Fx::Note(what) => {
                let lines = ops.session(origin).map_or(0, |s| s.lines);
                self.applied.push((origin, what, lines));
            }
            Fx::Ask(what) => ops.reply(origin, format!("re {what}")),
            Fx::Send(to, text) => {
                let result = match self.names.get(&to) {
                    Some(&token) => ops.send(token, format!("{text}\n").as_bytes()),
                    None => Err(SendError::Gone),
                };
                let _ = ops.send(origin, format!("sent {result:?}\n").as_bytes());
            }
            Fx::Reply(to, text) => {
                if let Some(&token) = self.names.get(&to) {
                    ops.reply(token, text);
                }
                let _ = ops.send(origin, b"replied\n");
            }
            Fx::Close(who, reason) => {
                if let Some(&token) = self.names.get(&who) {
                    ops.close(token, reason);
                }
            }
            Fx::Feed(bytes) => {
                self.feeds.insert(origin, Feeding { sent: 0, left: bytes });
                ops.feed(origin);
                ops.wake(origin);
            }
            Fx::Stats => {
                let stats = ops.stats();
                let line = format!("writes {} reads {}\n", stats.writes, stats.reads);
                let _ = ops.send(origin, line.as_bytes());
            }
            Fx::Closed(reason) => {
                let _ = self.notes.send(Note::Closed(self.name_of(origin), reason));
            }
            Fx::OverLimit => {
                self.over_limit += 1;
                let _ = self.notes.send(Note::OverLimit);
            }
            Fx::ReadWhileOverLimit => self.read_while_over_limit += 1,
        }
    }

    fn produce(
        &mut self,
        token: Token,
        out: &mut OutBuf,
        pool: &mut Pool,
        budget: usize,
        _stats: &mut Stats,
    ) -> Produce<String> {
        self.produce_budgets.push(budget);
        let Some(feeding) = self.feeds.get_mut(&token) else { return Produce::Idle };
        let n = budget.min(feeding.left);
        out.append_with(pool, |buf| buf.extend((feeding.sent..feeding.sent + n).map(pattern)));
        feeding.sent += n;
        feeding.left -= n;
        if feeding.left > 0 {
            return Produce::More;
        }
        self.feeds.remove(&token);
        Produce::Reply("fed".into())
    }
}

/// How a test reactor is set up: one listener of collars on 127.0.0.1:0.
struct Setup {
    config: Config,
    budgets: Budgets,
    cap: usize,
    per_ip: Option<usize>,
    evict_idle: bool,
    /// `SO_SNDBUF` of accepted sockets.
    send_buffer: Option<usize>,
}

impl Setup {
    fn new() -> Setup {
        Setup {
            config: Config { limit: OutputLimit::PauseAbove(1 << 20), deadline: None, strict: false },
            budgets: Budgets::default(),
            cap: 64,
            per_ip: None,
            evict_idle: false,
            send_buffer: None,
        }
    }

    /// Binds the listener. Connections made before [`Bound::run`] wait in
    /// its queue, their bytes in the kernel.
    fn bind(self) -> Bound {
        let spec = Spec {
            kind: Kind::Device,
            addr: "127.0.0.1:0".parse().unwrap(),
            options: ListenOptions {
                backlog: 1024,
                keepalive: TcpKeepalive::Off,
                user_timeout: None,
                send_buffer: self.send_buffer,
                reuse_port: false,
            },
            cap: self.cap,
            per_ip: self.per_ip,
            evict_idle: self.evict_idle,
            open_while_draining: false,
            tls: None,
            tls_files: None,
        };
        let settings = Settings {
            budgets: self.budgets,
            linger_timeout: Duration::from_millis(500),
            drain_timeout: TIMEOUT,
            stats_interval: Duration::ZERO,
            fd_limit: 1024,
        };
        let reactor = Reactor::new(vec![spec], self.config, settings).unwrap();
        let addr = reactor.local_addr(Kind::Device).unwrap();
        let (notes_tx, notes) = mpsc::channel();
        let app = TestApp {
            notes: notes_tx,
            names: HashMap::new(),
            feeds: HashMap::new(),
            applied: Vec::new(),
            produce_budgets: Vec::new(),
            over_limit: 0,
            read_while_over_limit: 0,
        };
        Bound { reactor, app, notes, addr }
    }

    fn run(self) -> Server {
        self.bind().run()
    }
}

/// A reactor bound and not running yet.
struct Bound {
    reactor: Reactor<TestApp>,
    app: TestApp,
    notes: Receiver<Note>,
    addr: SocketAddr,
}

impl Bound {
    fn connect(&self) -> Client {
        Client::connect(self.addr)
    }

    fn run(self) -> Server {
        let Bound { mut reactor, mut app, notes, addr } = self;
        let handle = reactor.handle();
        let thread = thread::spawn(move || {
            let exit = reactor.run(&mut app).unwrap();
            Finished { stats: reactor.stats().clone(), app, exit }
        });
        Server { addr, handle, notes, thread }
    }
}

/// A reactor running in its thread.
struct Server {
    addr: SocketAddr,
    handle: Handle,
    notes: Receiver<Note>,
    thread: JoinHandle<Finished>,
}

/// A reactor's final counters and its app, once `run` returned.
struct Finished {
    stats: Stats,
    app: TestApp,
    exit: Exit,
}

impl Server {
    fn connect(&self) -> Client {
        Client::connect(self.addr)
    }

    /// A client that has named its session `name` (and been answered).
    fn named(&self, name: &str) -> Client {
        let mut client = self.connect();
        client.send(format!("name {name}\n"));
        client.expect(format!("named {name}\n"));
        client
    }

    /// The next close the app was told of.
    fn closed(&self) -> (Option<String>, CloseReason) {
        loop {
            match self.notes.recv_timeout(TIMEOUT).expect("no close in time") {
                Note::Closed(name, reason) => return (name, reason),
                Note::OverLimit => {}
            }
        }
    }

    /// Waits until a session's output has gone over its limit.
    fn over_limit(&self) {
        loop {
            if self.notes.recv_timeout(TIMEOUT).expect("never over the limit") == Note::OverLimit {
                return;
            }
        }
    }

    /// Stops at once (two stop requests) and returns what the reactor saw.
    fn stop(self) -> Finished {
        self.handle.shutdown();
        self.handle.shutdown();
        self.thread.join().expect("the reactor thread panicked")
    }

    /// One stop request: `run` returns once every connection has closed.
    fn drain(self) -> Finished {
        self.handle.shutdown();
        self.thread.join().expect("the reactor thread panicked")
    }
}

/// A blocking client whose reads time out.
struct Client {
    stream: TcpStream,
    /// Bytes read and not yet taken.
    pending: Vec<u8>,
}

impl Client {
    fn connect(addr: SocketAddr) -> Client {
        Client::from(TcpStream::connect(addr).unwrap())
    }

    /// A client with small kernel buffers, so that a reactor it does not
    /// read from backs up quickly.
    fn connect_small(addr: SocketAddr) -> Client {
        let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        socket.set_send_buffer_size(4096).unwrap();
        socket.connect(&addr.into()).unwrap();
        Client::from(TcpStream::from(socket))
    }

    fn from(stream: TcpStream) -> Client {
        stream.set_read_timeout(Some(TIMEOUT)).unwrap();
        stream.set_nodelay(true).unwrap();
        Client { stream, pending: Vec::new() }
    }

    fn send(&mut self, bytes: impl AsRef<[u8]>) {
        self.stream.write_all(bytes.as_ref()).unwrap();
    }

    /// The next `n` bytes.
    fn take(&mut self, n: usize) -> Vec<u8> {
        let mut buf = vec![0; 64 * 1024];
        while self.pending.len() < n {
            match self.stream.read(&mut buf) {
                Ok(0) => panic!("end of file after {:?}", self.pending.escape_ascii().to_string()),
                Ok(got) => self.pending.extend_from_slice(&buf[..got]),
                Err(e) => panic!("{e} waiting for {n} bytes, got {:?}", self.pending.escape_ascii().to_string()),
            }
        }
        self.pending.drain(..n).collect()
    }

    /// The next bytes are exactly `expected`.
    fn expect(&mut self, expected: impl AsRef<[u8]>) {
        let expected = expected.as_ref();
        let got = self.take(expected.len());
        if got != expected {
            let at = got.iter().zip(expected).position(|(a, b)| a != b).unwrap_or(0);
            let show = |bytes: &[u8]| bytes[at..bytes.len().min(at + 80)].escape_ascii().to_string();
            panic!("differs at byte {at} of {}: got {:?}, expected {:?}", expected.len(), show(&got), show(expected));
        }
    }

    /// The reactor closed the connection (nothing more came before).
    /// The connection ends with a FIN: end of file, not a reset.
    fn expect_fin(&mut self) {
        assert!(self.pending.is_empty(), "unread: {:?}", self.pending.escape_ascii().to_string());
        let mut buf = [0; 1024];
        match self.stream.read(&mut buf) {
            Ok(0) => {}
            Ok(n) => panic!("more bytes instead of the end: {:?}", buf[..n].escape_ascii().to_string()),
            Err(e) => panic!("{e} instead of end of file"),
        }
    }

    /// The connection ends with a reset (`SO_LINGER` 0 on the other side).
    fn expect_reset(&mut self) {
        assert!(self.pending.is_empty(), "unread: {:?}", self.pending.escape_ascii().to_string());
        let mut buf = [0; 1024];
        match self.stream.read(&mut buf) {
            Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
            Ok(0) => panic!("end of file instead of a reset"),
            Ok(n) => panic!("more bytes instead of a reset: {:?}", buf[..n].escape_ascii().to_string()),
            Err(e) => panic!("{e} instead of a reset"),
        }
    }

    fn expect_closed(&mut self) {
        assert!(self.pending.is_empty(), "unread: {:?}", self.pending.escape_ascii().to_string());
        let mut buf = [0; 1024];
        match self.stream.read(&mut buf) {
            Ok(0) => {}
            Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
            Ok(n) => panic!("more bytes instead of the end: {:?}", buf[..n].escape_ascii().to_string()),
            Err(e) => panic!("{e} waiting for the end of the connection"),
        }
    }
}

/// `count` lines of `width` (at least 16) bytes each, newline included,
/// all different.
fn lines(count: usize, width: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(count * width);
    for i in 0..count {
        let line = format!("line {i:09} ");
        out.extend_from_slice(line.as_bytes());
        out.extend(std::iter::repeat_n(b'.', width - line.len() - 1));
        out.push(b'\n');
    }
    out
}

// (a) Writes are batched.

mod caps;
mod deadlines;
mod effects;
mod lifecycle;
mod output;
mod turns;
