//! The four ways a collar disappears, made for real in a private network
//! namespace per test (see `common::netns`): a graceful close (FIN), its
//! process crashing (FIN, or RST when input was left unread), its host
//! losing power (loss, then a reset that is lost too), and its cable pulled
//! (loss), with the variants that matter: found by the heartbeat, by
//! keepalive, or by `TCP_USER_TIMEOUT` with output pending; the host back
//! before or after the heartbeat's `PING`; the cable back before the
//! `PING`, after it, or never; commands and a location query pending
//! through the outage; a takeover while the old cable is out; and a pulled
//! event-stream subscriber. The gateway and its clients run in the test's
//! namespace; each test asserts the close reason, the SSE events, the HTTP
//! answers and a bound on the time to detection, which it prints as a
//! `fault-detection:` line.
//!
//! Timings come from `TETHER_FAULT_TIMINGS`: `short` (the default, for the
//! test suite: a few hundred milliseconds of heartbeat, keepalive and user
//! timeout of 3 s) or `defaults` (the gateway's defaults: 30 s + 10 s of
//! heartbeat, 90 s of keepalive and user timeout), which
//! `scripts/faults.sh` runs to measure detection with the defaults.
//!
//! The tests need root, `ip` and `nft` (`scripts/test.sh` installs them);
//! without them they skip by hand and fail under the test script. The last
//! two tests (the user timeout inherited by accepted sockets, and a stream
//! that reads nothing dropped by it) need nothing.

mod common;

use std::net::{Shutdown, SocketAddr};
use std::os::fd::{BorrowedFd, RawFd};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{
    Client, Gateway, HttpClient, Netns, STREAM_START, assert_like, closed, config, json_response, tcp_queues,
};
use socket2::SockRef;
use tether::Config;
use tether::close::CloseReason;
use tether::config::TcpKeepalive;

const MAC: &str = "CE:96:C2:78:27:FC";

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// When the kernel first retransmits lost data, at the latest: its initial
/// retransmission timeout (`TCP_TIMEOUT_INIT`; on loopback, with a measured
/// round trip, it is the 200 ms floor). `TCP_USER_TIMEOUT` runs from that
/// first retransmission, so a peer gone with output pending is dropped up
/// to this much after the user timeout.
const FIRST_RETRANSMISSION: Duration = Duration::from_secs(1);

/// The timings a run uses: its heartbeat, keepalive and event-stream
/// keepalive, and the slack allowed on top of what a mechanism should take.
#[derive(Debug, Clone, Copy)]
struct Timings {
    profile: &'static str,
    heartbeat_interval: Duration,
    heartbeat_timeout: Duration,
    keepalive: (Duration, Duration, u32),
    sse_keepalive: Duration,
    slack: Duration,
}

impl Timings {
    fn from_env() -> Timings {
        match std::env::var("TETHER_FAULT_TIMINGS").as_deref() {
            Err(_) | Ok("short") => Timings {
                profile: "short",
                heartbeat_interval: ms(400),
                heartbeat_timeout: ms(1000),
                // The kernel counts keepalive in whole seconds: 1 s idle,
                // then 2 probes 1 s apart, so 3 s (and the user timeout).
                keepalive: (ms(1000), ms(1000), 2),
                sse_keepalive: ms(300),
                slack: ms(700),
            },
            Ok("defaults") => {
                let d = Config::default();
                let TcpKeepalive::On { idle, interval, probes } = d.tcp_keepalive else { panic!("keepalive is on") };
                Timings {
                    profile: "defaults",
                    heartbeat_interval: d.heartbeat_interval,
                    heartbeat_timeout: d.heartbeat_timeout,
                    keepalive: (idle, interval, probes),
                    sse_keepalive: d.sse_keepalive,
                    // Kernel timers of a minute fire up to a few seconds late
                    // (the timer wheel rounds long timeouts up).
                    slack: Duration::from_secs(5),
                }
            }
            Ok(other) => panic!("TETHER_FAULT_TIMINGS={other:?}: expected short or defaults"),
        }
    }

    /// What keepalive takes to give up on an idle peer, and so the default
    /// `--tcp-user-timeout`.
    fn keepalive_limit(&self) -> Duration {
        let (idle, interval, probes) = self.keepalive;
        idle + interval * probes
    }

    fn heartbeat(&self) -> Duration {
        self.heartbeat_interval + self.heartbeat_timeout
    }
}

/// One test's world: its namespace, a gateway in it with the run's
/// timings, and an event stream for the collar's MAC.
struct Scene {
    test: &'static str,
    net: Netns,
    t: Timings,
    gw: Gateway,
    events: HttpClient,
}

impl Scene {
    /// Enters a namespace and starts the gateway, its config made from the
    /// run's timings (heartbeat, keepalive and user timeout on; idle off)
    /// and then `configure`d; `None` when the test must skip.
    fn start(test: &'static str, configure: impl FnOnce(&mut Config, &Timings)) -> Option<Scene> {
        let net = Netns::enter(test)?;
        let t = Timings::from_env();
        let mut config = config();
        config.heartbeat_interval = t.heartbeat_interval;
        config.heartbeat_timeout = t.heartbeat_timeout;
        let (idle, interval, probes) = t.keepalive;
        config.tcp_keepalive = TcpKeepalive::On { idle, interval, probes };
        config.idle_timeout = Duration::ZERO;
        configure(&mut config, &t);
        let gw = Gateway::start(config);
        let mut events = gw.http_client();
        events.send(format!("GET /events?mac={MAC} HTTP/1.1\r\nHost: tether\r\n\r\n").as_bytes());
        events.expect(STREAM_START.as_bytes());
        Some(Scene { test, net, t, gw, events })
    }

    /// A collar identified as [`MAC`], its `connected` event read.
    fn collar(&mut self) -> Client {
        let collar = self.gw.device(MAC);
        let peer = collar.stream.local_addr().unwrap();
        self.expect_event("connected", &format!(r#"{{"mac":"{MAC}","peer":"{peer}","at":"<TIME>"}}"#), self.t.slack);
        collar
    }

    /// Reads the next event (skipping `: keepalive` comments) within
    /// `within` and asserts its kind and data (an `assert_like` template).
    fn expect_event(&mut self, kind: &str, data: &str, within: Duration) -> String {
        let frame = self.next_event(within).unwrap_or_else(|| panic!("no {kind} event within {within:?}"));
        assert_like(&frame, &format!("id: <INT>\nevent: {kind}\ndata: {data}\n\n"));
        frame
    }

    /// The next event within `within`, comments skipped; `None` if none came.
    fn next_event(&mut self, within: Duration) -> Option<String> {
        let until = Instant::now() + within;
        loop {
            let frame = self.events.read_event_within(until.saturating_duration_since(Instant::now()))?;
            if !frame.starts_with(':') {
                return Some(frame);
            }
        }
    }

    /// Asserts no event (comments aside) arrives for `window`.
    fn expect_no_event(&mut self, window: Duration) {
        if let Some(frame) = self.next_event(window) {
            panic!("expected no event for {window:?}, got {frame:?}");
        }
    }

    /// Waits for the collar's `disconnected` event with `reason`, at most
    /// `bound` after `since` (the fault); prints and returns the time taken.
    fn expect_gone(&mut self, scenario: &str, reason: &str, since: Instant, bound: Duration) -> Duration {
        // Waits past the bound, so that a late detection fails on the bound
        // with its time rather than on a read timeout.
        let wait = (since + bound + self.t.slack * 4).saturating_duration_since(Instant::now());
        self.expect_event("disconnected", &format!(r#"{{"mac":"{MAC}","reason":"{reason}","at":"<TIME>"}}"#), wait);
        let took = since.elapsed();
        println!(
            "fault-detection: {} | {} | {scenario} | {reason} | {} ms | bound {} ms",
            self.t.profile,
            self.test,
            took.as_millis(),
            bound.as_millis()
        );
        assert!(took <= bound, "{scenario}: detected after {took:?}, more than {bound:?}");
        took
    }

    /// The gateway's send and receive queues for the connection of `peer`
    /// (a collar's local address); `None` once the kernel freed it.
    fn gateway_socket(&self, peer: SocketAddr) -> Option<(u64, u64)> {
        tcp_queues(self.gw.addr, peer)
    }

    /// Asserts the kernel freed the gateway's socket of `peer` at once (an
    /// abortive close: no FIN-WAIT socket left retransmitting).
    fn expect_socket_freed(&self, peer: SocketAddr) {
        wait_until("the gateway's socket to be freed", ms(100), || self.gateway_socket(peer).is_none());
    }

    /// Waits until the gateway has at least `bytes` written to `peer` and
    /// not acknowledged (they are lost, or about to be).
    fn expect_in_flight(&self, peer: SocketAddr, bytes: u64, within: Duration) {
        wait_until(&format!("{bytes} bytes in flight"), within, || {
            self.gateway_socket(peer).is_some_and(|(tx, _)| tx >= bytes)
        });
    }

    /// `POST /devices/MAC/commands` with `line`: accepted (202).
    fn command(&self, line: &str) {
        let reply = self.gw.api().post(&format!("/devices/{MAC}/commands"), line);
        let body = format!(r#"{{"mac":"{MAC}","accepted":true,"bytes":{}}}"#, line.len() + 1);
        assert_eq!((reply.status, reply.body.as_str()), (202, body.as_str()));
    }

    /// Starts a location query for the collar on a connection of its own.
    fn ask_location(&self) -> HttpClient {
        let mut query = self.gw.http_client();
        query.send(format!("GET /devices/{MAC}/location?timeout=5m HTTP/1.1\r\nHost: tether\r\n\r\n").as_bytes());
        query
    }
}

/// The answer to a location query whose collar was closed meanwhile.
fn bad_gateway() -> String {
    json_response("502 Bad Gateway", r#"{"error":"the device disconnected before answering"}"#, &[], false)
}

/// Polls `done` until it holds (for kernel state that nothing announces),
/// every millisecond at first and every 20 ms at most (a table of sockets
/// is not free to read); panics after `within`. How long it took.
fn wait_until(what: &str, within: Duration, mut done: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    let mut pause = ms(1);
    while !done() {
        assert!(start.elapsed() < within, "waited {within:?} for {what}");
        std::thread::sleep(pause);
        pause = (pause * 2).min(ms(20));
    }
    start.elapsed()
}

/// The local address of a collar's connection.
fn local(collar: &Client) -> SocketAddr {
    collar.stream.local_addr().unwrap()
}

/// The collar's host loses power: its kernel would answer with a reset,
/// but the cable is cut first, so the reset is lost and the socket gone.
fn crash_host(net: &Netns, collar: Client) {
    net.cut(local(&collar).port());
    SockRef::from(&collar.stream).set_linger(Some(Duration::ZERO)).unwrap();
    drop(collar);
}

/// Reads lines until `expected`, answering heartbeat `PING`s on the way.
fn read_answering_pings(collar: &mut Client, expected: &str) {
    loop {
        match collar.read_line() {
            line if line == expected => return,
            line if line == "PING\n" => collar.send(b"PONG\n"),
            line => panic!("expected {expected:?}, got {line:?}"),
        }
    }
}

/// Answers the heartbeat's `PING`s until `until`; nothing else may come.
fn answer_pings_until(collar: &mut Client, until: Instant) {
    let mut buf = [0u8; 5];
    loop {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return collar.stream.set_read_timeout(Some(common::TIMEOUT)).unwrap();
        }
        collar.stream.set_read_timeout(Some(left)).unwrap();
        match std::io::Read::read_exact(&mut collar.stream, &mut buf) {
            Ok(()) => {
                assert_eq!(&buf, b"PING\n");
                collar.send(b"PONG\n");
            }
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(e) => panic!("answering PINGs: {e}"),
        }
    }
}

#[test]
fn a_graceful_close_is_seen_at_once_and_fails_the_waiting_location_query() {
    let Some(mut s) = Scene::start("graceful_close", |c, _| c.heartbeat_interval = Duration::ZERO) else { return };
    let mut collar = s.collar();
    let mut query = s.ask_location();
    collar.expect(b"location\n");
    let since = Instant::now();
    collar.stream.shutdown(Shutdown::Write).unwrap();
    s.expect_gone("FIN", "peer-closed", since, s.t.slack);
    query.expect(bad_gateway().as_bytes());
    collar.expect_eof();
    drop(collar);
    let stats = s.gw.stop_drained();
    assert_eq!(closed(&stats, CloseReason::PeerClosed), 1);
}

/// A collar in a process of its own (bash with a `/dev/tcp` socket): it
/// identifies, reads its `OK`, says `ready` on its standard output, and
/// sleeps holding the socket.
fn collar_process(gw: SocketAddr) -> Child {
    let script = format!(
        "exec 3<>/dev/tcp/{}/{}; printf 'IDENTIFY:{MAC}\\n' >&3; read -r ok <&3; \
         [ \"$ok\" = OK ] || exit 1; echo ready; exec sleep 600",
        gw.ip(),
        gw.port()
    );
    let mut child =
        Command::new("bash").args(["-c", &script]).stdin(Stdio::null()).stdout(Stdio::piped()).spawn().expect("bash");
    // Once it has read everything it was sent: its crash then sends a FIN.
    let mut ready = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(child.stdout.as_mut().unwrap()), &mut ready).unwrap();
    assert_eq!(ready, "ready\n", "the collar process failed");
    child
}

/// Starts a collar process and reads its `connected` event; its address.
fn start_collar_process(s: &mut Scene) -> (Child, SocketAddr) {
    let child = collar_process(s.gw.addr);
    let frame = s.expect_event("connected", &format!(r#"{{"mac":"{MAC}","peer":"<PEER>","at":"<TIME>"}}"#), ms(5000));
    let peer = frame.split(r#""peer":""#).nth(1).and_then(|rest| rest.split('"').next()).unwrap();
    (child, peer.parse().unwrap())
}

#[test]
fn a_crashed_process_closes_with_a_fin_when_it_had_read_everything() {
    let Some(mut s) = Scene::start("process_crash_fin", |c, _| c.heartbeat_interval = Duration::ZERO) else { return };
    if !common::require(s.test, common::program("bash")) {
        return;
    }
    let (mut child, _) = start_collar_process(&mut s);
    let since = Instant::now();
    child.kill().unwrap();
    child.wait().unwrap();
    s.expect_gone("process crash, FIN", "peer-closed", since, s.t.slack);
    let stats = s.gw.stop_drained();
    assert_eq!(closed(&stats, CloseReason::PeerClosed), 1);
}

#[test]
fn a_crashed_process_with_unread_input_resets_and_is_closed_at_once() {
    let Some(mut s) = Scene::start("process_crash_rst", |c, _| c.heartbeat_interval = Duration::ZERO) else { return };
    if !common::require(s.test, common::program("bash")) {
        return;
    }
    let (mut child, peer) = start_collar_process(&mut s);
    s.command("REBOOT");
    // The command waits unread in the collar's socket: its close resets.
    wait_until("the command in the collar's receive queue", ms(2000), || {
        tcp_queues(peer, s.gw.addr).is_some_and(|(_, rx)| rx == 7)
    });
    let since = Instant::now();
    child.kill().unwrap();
    child.wait().unwrap();
    s.expect_gone("process crash, RST", "io-error", since, s.t.slack);
    s.expect_socket_freed(peer);
    let stats = s.gw.stop_drained();
    assert_eq!(closed(&stats, CloseReason::IoError), 1);
}

#[test]
fn a_crashed_host_is_found_by_the_heartbeat_and_reset() {
    let Some(mut s) = Scene::start("host_crash_heartbeat", |_, _| ()) else { return };
    let collar = s.collar();
    let peer = local(&collar);
    let since = Instant::now();
    crash_host(&s.net, collar);
    let bound = s.t.heartbeat() + s.t.slack;
    s.expect_gone("host crash, heartbeat", "heartbeat-timeout", since, bound);
    s.expect_socket_freed(peer);
    let stats = s.gw.stop_drained();
    assert_eq!(closed(&stats, CloseReason::HeartbeatTimeout), 1);
    assert_eq!(stats.heartbeat_pings, 1);
}

#[test]
fn a_crashed_host_is_found_by_keepalive_alone() {
    let Some(mut s) = Scene::start("host_crash_keepalive", |c, _| {
        c.heartbeat_interval = Duration::ZERO;
        // Keepalive alone: no user timeout.
        c.tcp_user_timeout = Some(Duration::ZERO);
    }) else {
        return;
    };
    let collar = s.collar();
    let peer = local(&collar);
    let since = Instant::now();
    crash_host(&s.net, collar);
    let bound = s.t.keepalive_limit() + s.t.slack;
    s.expect_gone("host crash, keepalive", "tcp-timeout", since, bound);
    s.expect_socket_freed(peer);
    let stats = s.gw.stop_drained();
    assert_eq!(closed(&stats, CloseReason::TcpTimeout), 1);
}

#[test]
fn a_crashed_host_with_output_pending_is_found_by_the_user_timeout() {
    // Keepalive sends no probe while the command is unacknowledged: only
    // TCP_USER_TIMEOUT (by default keepalive's own limit) finds this peer.
    let Some(mut s) = Scene::start("host_crash_user_timeout", |c, _| c.heartbeat_interval = Duration::ZERO) else {
        return;
    };
    let collar = s.collar();
    let peer = local(&collar);
    crash_host(&s.net, collar);
    let since = Instant::now();
    s.command("REBOOT");
    let bound = s.t.keepalive_limit() + FIRST_RETRANSMISSION + s.t.slack;
    s.expect_gone("host crash, output pending, user timeout", "tcp-timeout", since, bound);
    s.expect_socket_freed(peer);
    let stats = s.gw.stop_drained();
    assert_eq!(closed(&stats, CloseReason::TcpTimeout), 1);
}

#[test]
fn an_unanswered_ping_with_no_heartbeat_timeout_is_found_by_the_user_timeout() {
    // `--heartbeat-timeout 0`: the PING itself is the output pending.
    let Some(mut s) = Scene::start("ping_user_timeout", |c, _| c.heartbeat_timeout = Duration::ZERO) else {
        return;
    };
    let collar = s.collar();
    let since = Instant::now();
    crash_host(&s.net, collar);
    let bound = s.t.heartbeat_interval + s.t.keepalive_limit() + FIRST_RETRANSMISSION + s.t.slack;
    s.expect_gone("host crash, PING pending, user timeout", "tcp-timeout", since, bound);
    let stats = s.gw.stop_drained();
    assert_eq!(closed(&stats, CloseReason::TcpTimeout), 1);
}

#[test]
fn a_host_rebooted_before_the_ping_resets_it_and_is_closed_at_once() {
    let Some(mut s) = Scene::start("host_reboot_before_ping", |_, _| ()) else { return };
    let collar = s.collar();
    let port = local(&collar).port();
    let since = Instant::now();
    crash_host(&s.net, collar);
    // Back up, with no socket for the old connection: the PING gets a reset.
    s.net.restore(port);
    let bound = s.t.heartbeat_interval + s.t.slack;
    s.expect_gone("host reboot before the PING", "io-error", since, bound);
    let stats = s.gw.stop_drained();
    assert_eq!(closed(&stats, CloseReason::IoError), 1);
    assert_eq!(stats.heartbeat_pings, 1);
}

#[test]
fn a_host_rebooted_after_the_ping_resets_its_retransmission() {
    let Some(mut s) = Scene::start("host_reboot_after_ping", |_, _| ()) else { return };
    let collar = s.collar();
    let peer = local(&collar);
    let since = Instant::now();
    crash_host(&s.net, collar);
    s.expect_in_flight(peer, b"PING\n".len() as u64, s.t.heartbeat_interval + s.t.slack);
    s.net.restore(peer.port());
    // The PING is retransmitted (after 200 ms on loopback), reaches the
    // rebooted host and is answered with a reset, before the heartbeat
    // timeout.
    let bound = s.t.heartbeat() + s.t.slack;
    s.expect_gone("host reboot after the PING", "io-error", since, bound);
    let stats = s.gw.stop_drained();
    assert_eq!(closed(&stats, CloseReason::IoError), 1);
}

#[test]
fn a_cable_back_before_the_ping_delivers_what_waited_and_the_collar_stays() {
    let Some(mut s) = Scene::start("cable_back_before_ping", |_, _| ()) else { return };
    let mut collar = s.collar();
    let peer = local(&collar);
    s.net.cut(peer.port());
    s.command("REBOOT");
    let mut query = s.ask_location();
    // Both are stuck in flight; then the cable is back.
    s.expect_in_flight(peer, (b"REBOOT\n".len() + b"location\n".len()) as u64, s.t.slack);
    s.net.restore(peer.port());
    read_answering_pings(&mut collar, "REBOOT\n");
    read_answering_pings(&mut collar, "location\n");
    collar.send(b"LOCATION:1.5,2.5\n");
    let answer = query.read_response();
    assert_eq!(answer.status, 200, "{}", answer.raw());
    assert_like(answer.text(), &format!(r#"{{"mac":"{MAC}","location":{{"lat":1.5,"lon":2.5,"at":"<TIME>"}}}}"#));
    s.expect_event("location", &format!(r#"{{"mac":"{MAC}","lat":1.5,"lon":2.5,"at":"<TIME>"}}"#), s.t.slack);
    assert_eq!(s.gw.api().get(&format!("/devices/{MAC}")).status, 200);
    drop(collar);
    let stats = s.gw.stop_drained();
    assert_eq!(closed(&stats, CloseReason::HeartbeatTimeout), 0);
}

#[test]
fn a_cable_back_after_the_ping_in_time_keeps_the_collar() {
    let Some(mut s) = Scene::start("cable_back_after_ping", |_, _| ()) else { return };
    let mut collar = s.collar();
    let peer = local(&collar);
    s.net.cut(peer.port());
    s.expect_in_flight(peer, b"PING\n".len() as u64, s.t.heartbeat_interval + s.t.slack);
    let ping = Instant::now();
    s.net.restore(peer.port());
    // The PING arrives retransmitted; its answer comes within the timeout,
    // and so do those of the PINGs after it, until well past the timeout.
    collar.expect(b"PING\n");
    collar.send(b"PONG\n");
    answer_pings_until(&mut collar, ping + s.t.heartbeat_timeout + s.t.slack);
    // A close would have been announced by now: one more read to see.
    s.expect_no_event(ms(100));
    assert_eq!(s.gw.api().get(&format!("/devices/{MAC}")).status, 200);
    drop(collar);
    let stats = s.gw.stop_drained();
    assert_eq!(closed(&stats, CloseReason::HeartbeatTimeout), 0);
}

#[test]
fn a_cable_never_back_is_found_by_the_heartbeat_and_nothing_queued_reaches_it_later() {
    let Some(mut s) = Scene::start("cable_never_back", |_, _| ()) else { return };
    let mut collar = s.collar();
    let peer = local(&collar);
    let since = Instant::now();
    s.net.cut(peer.port());
    s.command("REBOOT");
    let mut query = s.ask_location();
    let bound = s.t.heartbeat() + s.t.slack;
    s.expect_gone("cable pulled, never back", "heartbeat-timeout", since, bound);
    query.expect(bad_gateway().as_bytes());
    // Closed abortively: the kernel dropped the socket and what it held.
    s.expect_socket_freed(peer);
    s.net.restore(peer.port());
    // The collar's next line finds no connection: a reset, and neither the
    // command nor the query it never received.
    collar.send(b"PING\n");
    collar.expect_reset();
    drop(collar);
    let stats = s.gw.stop_drained();
    assert_eq!(closed(&stats, CloseReason::HeartbeatTimeout), 1);
}

#[test]
fn a_collar_idle_with_its_cable_out_is_reset_and_never_sees_its_bye() {
    let Some(mut s) = Scene::start("idle_cable_out", |c, _| {
        c.heartbeat_interval = Duration::ZERO;
        c.idle_timeout = ms(300);
    }) else {
        return;
    };
    let mut collar = s.collar();
    let peer = local(&collar);
    let since = Instant::now();
    s.net.cut(peer.port());
    s.expect_gone("idle (300 ms in both), cable pulled", "idle", since, ms(300) + s.t.slack);
    s.expect_socket_freed(peer);
    s.net.restore(peer.port());
    collar.send(b"PING\n");
    // The `BYE idle` went into the kernel and was dropped with the socket.
    collar.expect_reset();
    drop(collar);
    let stats = s.gw.stop_drained();
    assert_eq!(closed(&stats, CloseReason::Idle), 1);
}

#[test]
fn a_new_connection_takes_over_while_the_old_cable_is_out() {
    let Some(mut s) = Scene::start("takeover_cable_out", |_, _| ()) else { return };
    let old = s.collar();
    s.net.cut(local(&old).port());
    let mut query = s.ask_location();
    s.expect_in_flight(local(&old), b"location\n".len() as u64, s.t.slack);
    let since = Instant::now();
    let mut new = s.gw.device(MAC);
    s.expect_gone("takeover, old cable pulled", "replaced", since, s.t.slack);
    let peer = local(&new);
    s.expect_event("connected", &format!(r#"{{"mac":"{MAC}","peer":"{peer}","at":"<TIME>"}}"#), s.t.slack);
    query.expect(bad_gateway().as_bytes());
    // The new connection gets what is sent from now on.
    s.command("REBOOT");
    read_answering_pings(&mut new, "REBOOT\n");
    drop((old, new));
    let stats = s.gw.stop_drained();
    assert_eq!(closed(&stats, CloseReason::Replaced), 1);
}

#[test]
fn an_event_stream_whose_cable_is_pulled_is_dropped_by_the_user_timeout() {
    let Some(s) = Scene::start("sse_cable_out", |c, t| c.sse_keepalive = t.sse_keepalive) else { return };
    let mut stream = s.gw.http_client();
    stream.send(b"GET /events HTTP/1.1\r\nHost: tether\r\n\r\n");
    stream.expect(STREAM_START.as_bytes());
    let peer = stream.stream.local_addr().unwrap();
    let http = s.gw.http;
    s.net.cut(peer.port());
    // Its `: keepalive` comments stay unacknowledged until the user timeout.
    let bound = s.t.sse_keepalive + s.t.keepalive_limit() + FIRST_RETRANSMISSION + s.t.slack;
    let waited = wait_until("the stream to be dropped", bound, || tcp_queues(http, peer).is_none());
    println!(
        "fault-detection: {} | {} | event stream, cable pulled, user timeout | tcp-timeout | {} ms | bound {} ms",
        s.t.profile,
        s.test,
        waited.as_millis(),
        bound.as_millis()
    );
    let metrics = s.gw.metrics();
    assert_eq!(common::metric(&metrics, r#"tether_closed_total{kind="http",reason="tcp-timeout"}"#), 1.0);
    // The scene's own stream is the one left.
    assert_eq!(common::metric(&metrics, "tether_sse_subscribers"), 1.0);
    drop(stream);
}

/// `TCP_USER_TIMEOUT` of the gateway's own accepted socket whose local
/// address is `local` and peer `peer`, found among this process's
/// descriptors (the gateway runs on a thread of it); `None` if there is no
/// such socket.
fn accepted_user_timeout(local: SocketAddr, peer: SocketAddr) -> Option<Option<Duration>> {
    for entry in std::fs::read_dir("/proc/self/fd").unwrap().flatten() {
        let Ok(fd) = entry.file_name().to_string_lossy().parse::<RawFd>() else { continue };
        if !std::fs::read_link(entry.path()).is_ok_and(|link| link.to_string_lossy().starts_with("socket:")) {
            continue;
        }
        // SAFETY: the descriptor is only asked for its addresses and one
        // option. Another test's thread may close it meanwhile: the calls
        // then fail, or describe another socket, whose addresses do not
        // match.
        let fd = unsafe { BorrowedFd::borrow_raw(fd) };
        let socket = SockRef::from(&fd);
        let addr = |a: std::io::Result<socket2::SockAddr>| a.ok().and_then(|a| a.as_socket());
        if addr(socket.local_addr()) == Some(local) && addr(socket.peer_addr()) == Some(peer) {
            return Some(socket.tcp_user_timeout().unwrap());
        }
    }
    None
}

#[test]
fn accepted_sockets_carry_the_user_timeout_of_both_listeners() {
    let cases = [
        // The default: keepalive's idle + interval x probes.
        (None, Some(Duration::from_secs(7 + 3 * 4))),
        (Some(ms(1500)), Some(ms(1500))),
        (Some(Duration::ZERO), None),
    ];
    for (flag, expected) in cases {
        let mut config = config();
        config.tcp_keepalive =
            TcpKeepalive::On { idle: Duration::from_secs(7), interval: Duration::from_secs(3), probes: 4 };
        config.tcp_user_timeout = flag;
        let gw = Gateway::start(config);
        let mut collar = gw.device(MAC);
        let mut http = gw.http_client();
        assert_eq!(http.get("/health").status, 200);
        assert_eq!(
            accepted_user_timeout(gw.addr, local(&collar)),
            Some(expected),
            "collar, --tcp-user-timeout {flag:?}"
        );
        let peer = http.stream.local_addr().unwrap();
        assert_eq!(accepted_user_timeout(gw.http, peer), Some(expected), "HTTP, --tcp-user-timeout {flag:?}");
        collar.send(b"PING\n");
        collar.expect(b"PONG\n");
    }
}

#[test]
fn an_event_stream_that_reads_nothing_is_dropped_by_the_user_timeout() {
    // Alive, but its window shut: the kernel's zero-window probes are
    // answered, and still the user timeout ends it, as it would a peer gone.
    let mut config = config();
    config.tcp_keepalive = TcpKeepalive::Off;
    config.tcp_user_timeout = Some(ms(1000));
    config.heartbeat_interval = Duration::ZERO;
    let gw = Gateway::start(config);
    let mut stuck = HttpClient::connect_with_recv_buffer(gw.http, 4096);
    stuck.send(b"GET /events HTTP/1.1\r\nHost: tether\r\n\r\n");
    let peer = stuck.stream.local_addr().unwrap();
    let mut collar = gw.device(MAC);
    // Far more frames than its receive buffer holds.
    collar.send(common::locations(0, 500).as_bytes());
    // The kernel checks the user timeout only when a window probe is due,
    // and probes back off from the retransmission timeout: measured here,
    // 2.2-3.3 s for a 1 s user timeout on a quiet machine, over 5 s with
    // 30 fault tests at once. The point is that it ends at all: without the
    // user timeout it would be held as long as it answers the probes.
    let bound = ms(1000) + Duration::from_secs(14);
    wait_until("the stuck stream to be dropped", bound, || tcp_queues(gw.http, peer).is_none());
    let metrics = gw.metrics();
    assert_eq!(common::metric(&metrics, r#"tether_closed_total{kind="http",reason="tcp-timeout"}"#), 1.0);
    assert_eq!(common::metric(&metrics, r#"tether_closed_total{kind="http",reason="slow-consumer"}"#), 0.0);
    collar.send(b"PING\n");
    collar.expect(b"PONG\n");
}
