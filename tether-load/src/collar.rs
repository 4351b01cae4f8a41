//! One simulated collar: what it says and when, from connect to close
//! (sans-IO).
//!
//! ```text
//!  Connecting --connected--> Identifying --OK--> Online
//!      |                         |                  |
//!      +--- error, timeout ------+--- BYE, EOF -----+--> Closed
//! ```
//!
//! With `--leave-after-identify` an `OK` leads straight to `Closed`: the
//! collar counts as established and as `left`, and its connection is
//! closed (a stream of short connections, to measure connects and TLS
//! handshakes rather than idle collars).
//!
//! With device keys (`--device-key-file`) the collar answers the gateway's
//! `CHALLENGE` with `AUTH:` while identifying, as a real collar holding its
//! own key would: the key is derived from the master key and the MAC, the
//! proof from the key and the nonce.
//!
//! The event loop tells a [`Collar`] what happened (connected, a line
//! arrived, its deadline passed, the socket failed) with the time, and the
//! collar appends what it wants sent to the caller's buffer and counts what
//! happened in [`Stats`]. It never touches a socket or a clock, so its
//! tests drive it with made-up times and lines.
//!
//! Time is in microseconds ([`Micros`]) since the run started: latencies on
//! loopback are tens of microseconds, too fine for the gateway's
//! millisecond clock.

use std::io::Write as _;

use tether::device::Mac;
use tether::device::auth::{self, DeviceKeys, Nonce};

use crate::outcome::{End, Failure, bye_reason};
use crate::plan::mac_of;
use crate::random::{self, PING_PHASE, REPORT_PHASE};
use crate::stats::Stats;

/// Microseconds since the start of the run.
pub type Micros = u64;

/// What every collar of a run does: the parts of the command line a
/// collar needs.
#[derive(Debug, Clone)]
pub struct Behaviour {
    pub mac_base: Mac,
    /// Limit on connecting, and again on the `OK` after `IDENTIFY` (0: none).
    pub connect_timeout: Micros,
    /// Period of our own `PING`s once online (0: none).
    pub ping_interval: Micros,
    /// Period of `LOCATION:` reports once online (0: none).
    pub report_interval: Micros,
    /// The gateway's master keys, to answer its `CHALLENGE` (`None`: it
    /// asks for no proof).
    pub keys: Option<DeviceKeys>,
    /// Close the connection as soon as `IDENTIFY` is answered `OK`
    /// (`--leave-after-identify`).
    pub leave_after_identify: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// The TCP connect is under way.
    Connecting,
    /// `IDENTIFY` sent, waiting for `OK`.
    Identifying,
    /// Identified; answering the gateway, and pinging or reporting if asked.
    Online,
    /// Ended; counted in [`Stats`] once, and nothing more will be counted.
    Closed,
}

/// What the event loop should do with the collar's socket next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    Continue,
    /// The collar has ended (and counted why): close the socket.
    Close,
}

#[derive(Debug)]
pub struct Collar {
    /// Global index over all processes of the run: the MAC and the home.
    index: u64,
    phase: Phase,
    /// When the current phase started (connect called, `IDENTIFY` sent, `OK`).
    since: Micros,
    /// When the next periodic `PING` and report are due (online only).
    next_ping: Option<Micros>,
    next_report: Option<Micros>,
    /// When our outstanding `PING` was sent; at most one is outstanding.
    ping_sent: Option<Micros>,
    /// Reports sent so far: the step of the collar's wander.
    reports: u64,
    /// In the closed RTT loop: a new `PING` as soon as the `PONG` arrives.
    active: bool,
}

impl Collar {
    /// A collar whose connect starts now.
    pub fn start(index: u64, now: Micros, stats: &mut Stats) -> Collar {
        stats.attempted += 1;
        stats.in_flight += 1;
        Collar {
            index,
            phase: Phase::Connecting,
            since: now,
            next_ping: None,
            next_report: None,
            ping_sent: None,
            reports: 0,
            active: false,
        }
    }

    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// The TCP connection is up: say who we are.
    pub fn on_connected(&mut self, now: Micros, how: &Behaviour, out: &mut Vec<u8>, stats: &mut Stats) {
        if self.phase != Phase::Connecting {
            return;
        }
        stats.connect_us.saturating_record(now.saturating_sub(self.since).max(1));
        self.phase = Phase::Identifying;
        self.since = now;
        // The CLI checked that every collar of the run has a MAC.
        let mac = mac_of(how.mac_base, self.index).expect("MAC range checked at start");
        let _ = writeln!(out, "IDENTIFY:{mac}");
        stats.lines_out += 1;
    }

    /// One line from the gateway, terminator removed.
    pub fn on_line(&mut self, line: &[u8], now: Micros, how: &Behaviour, out: &mut Vec<u8>, stats: &mut Stats) -> Flow {
        if matches!(self.phase, Phase::Connecting | Phase::Closed) {
            return Flow::Close;
        }
        stats.lines_in += 1;
        match line {
            b"OK" if self.phase == Phase::Identifying => {
                stats.handshake_us.saturating_record(now.saturating_sub(self.since).max(1));
                stats.in_flight -= 1;
                stats.online += 1;
                stats.established += 1;
                self.phase = Phase::Online;
                self.since = now;
                // Spread the first of each periodic line over its interval,
                // so that collars connected together do not fire together.
                let first =
                    |interval: Micros, salt| (interval > 0).then(|| now + random::below(self.index, salt, interval));
                self.next_ping = first(how.ping_interval, PING_PHASE);
                self.next_report = first(how.report_interval, REPORT_PHASE);
                if how.leave_after_identify {
                    stats.online -= 1;
                    stats.left += 1;
                    self.phase = Phase::Closed;
                    return Flow::Close;
                }
            }
            _ if self.phase == Phase::Identifying && line.starts_with(b"CHALLENGE ") => {
                let (Some(keys), Some(nonce)) = (&how.keys, Nonce::parse(&line[b"CHALLENGE ".len()..])) else {
                    // Challenged without keys, or garbled: never online.
                    stats.unexpected_lines += 1;
                    self.end(End::Failed(Failure::Other), stats);
                    return Flow::Close;
                };
                let mac = mac_of(how.mac_base, self.index).expect("MAC range checked at start");
                let proof = auth::prove(&keys.device_key(mac), &nonce);
                let mut line = [0; 5 + 2 * auth::PROOF_LEN + 1];
                line[..5].copy_from_slice(b"AUTH:");
                auth::encode_hex(&proof.0, &mut line[5..5 + 2 * auth::PROOF_LEN]);
                line[5 + 2 * auth::PROOF_LEN] = b'\n';
                out.extend_from_slice(&line);
                stats.lines_out += 1;
            }
            b"PONG" => match self.ping_sent.take() {
                Some(sent) => {
                    stats.pongs_received += 1;
                    stats.record_rtt(now.saturating_sub(sent));
                    if self.active {
                        self.send_ping(now, out, stats);
                    }
                }
                None => stats.unexpected_lines += 1,
            },
            b"PING" => {
                stats.heartbeats_received += 1;
                out.extend_from_slice(b"PONG\n");
                stats.lines_out += 1;
                stats.heartbeats_answered += 1;
            }
            b"location" => {
                stats.location_queries += 1;
                self.send_location(out, stats);
                stats.location_answers += 1;
            }
            _ if line == b"BYE" || line.starts_with(b"BYE ") => {
                let reason = line.get(4..).unwrap_or_default();
                self.end(End::Bye(bye_reason(reason)), stats);
                return Flow::Close;
            }
            _ if line == b"ERR" || line.starts_with(b"ERR ") => {
                stats.errors_received += 1;
                // Refused at the handshake: this collar will never be online.
                if self.phase == Phase::Identifying {
                    self.end(End::Failed(Failure::Other), stats);
                    return Flow::Close;
                }
            }
            _ => stats.unexpected_lines += 1,
        }
        Flow::Continue
    }

    /// The collar's timer fired (possibly early: then nothing is due yet).
    pub fn on_deadline(&mut self, now: Micros, how: &Behaviour, out: &mut Vec<u8>, stats: &mut Stats) -> Flow {
        match self.phase {
            Phase::Connecting | Phase::Identifying => {
                if how.connect_timeout > 0 && now >= self.since + how.connect_timeout {
                    self.end(End::Failed(Failure::Timeout), stats);
                    return Flow::Close;
                }
            }
            Phase::Online => {
                if let Some(due) = self.next_ping.filter(|&due| due <= now) {
                    // One PING outstanding at most, so every PONG has one
                    // send time; a gateway slower than the interval shows
                    // up as skipped pings and long RTTs.
                    if self.ping_sent.is_none() {
                        self.send_ping(now, out, stats);
                    } else {
                        stats.pings_skipped += 1;
                    }
                    self.next_ping = Some(next_period(due, how.ping_interval, now));
                }
                if let Some(due) = self.next_report.filter(|&due| due <= now) {
                    self.send_location(out, stats);
                    stats.reports_sent += 1;
                    self.next_report = Some(next_period(due, how.report_interval, now));
                }
            }
            Phase::Closed => return Flow::Close,
        }
        Flow::Continue
    }

    /// Joins the closed RTT loop: `PING` now, and again after every `PONG`.
    pub fn start_rtt(&mut self, now: Micros, out: &mut Vec<u8>, stats: &mut Stats) {
        if self.phase != Phase::Online {
            return;
        }
        self.active = true;
        if self.ping_sent.is_none() {
            self.send_ping(now, out, stats);
        }
    }

    /// The socket failed (or could not even be made).
    pub fn fail(&mut self, kind: Failure, stats: &mut Stats) {
        self.end(End::Failed(kind), stats);
    }

    /// The gateway closed the connection without a `BYE`.
    pub fn on_eof(&mut self, stats: &mut Stats) {
        self.end(End::WithoutBye, stats);
    }

    /// The run is over: count where the collar stood.
    pub fn finish(&mut self, stats: &mut Stats) {
        match self.phase {
            Phase::Connecting | Phase::Identifying => {
                stats.in_flight -= 1;
                stats.pending_at_end += 1;
            }
            Phase::Online => {
                stats.online -= 1;
                stats.open_at_end += 1;
            }
            Phase::Closed => {}
        }
        self.phase = Phase::Closed;
    }

    /// When [`Collar::on_deadline`] has something to do next.
    pub fn next_deadline(&self, how: &Behaviour) -> Option<Micros> {
        match self.phase {
            Phase::Connecting | Phase::Identifying => {
                (how.connect_timeout > 0).then(|| self.since + how.connect_timeout)
            }
            Phase::Online => match (self.next_ping, self.next_report) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            },
            Phase::Closed => None,
        }
    }

    fn send_ping(&mut self, now: Micros, out: &mut Vec<u8>, stats: &mut Stats) {
        out.extend_from_slice(b"PING\n");
        self.ping_sent = Some(now);
        stats.pings_sent += 1;
        stats.lines_out += 1;
    }

    fn send_location(&mut self, out: &mut Vec<u8>, stats: &mut Stats) {
        let (lat, lon) = random::position(self.index, self.reports);
        self.reports += 1;
        let _ = writeln!(out, "LOCATION:{lat:.5},{lon:.5}");
        stats.lines_out += 1;
    }

    /// Ends the collar once, moving it out of the in-flight or online gauge.
    fn end(&mut self, end: End, stats: &mut Stats) {
        let was_online = match self.phase {
            Phase::Connecting | Phase::Identifying => {
                stats.in_flight -= 1;
                false
            }
            Phase::Online => {
                stats.online -= 1;
                true
            }
            Phase::Closed => return,
        };
        self.phase = Phase::Closed;
        stats.ended(&end, was_online);
    }
}

/// The next time a periodic line is due after the one due at `due`: one
/// interval on, or one interval from `now` if the loop fell behind by more
/// than that (no burst of catch-up lines after a stall).
fn next_period(due: Micros, interval: Micros, now: Micros) -> Micros {
    let next = due + interval.max(1);
    if next <= now { now + interval.max(1) } else { next }
}

#[cfg(test)]
mod tests {
    use tether::device::Command;
    use tether::device::protocol::parse;

    use super::*;

    const MS: Micros = 1000;

    fn how() -> Behaviour {
        Behaviour {
            mac_base: "02:4C:00:00:00:00".parse().unwrap(),
            connect_timeout: 5000 * MS,
            ping_interval: 0,
            report_interval: 0,
            keys: None,
            leave_after_identify: false,
        }
    }

    /// A collar of index 7 taken online: connect at 0, connected at 1 ms,
    /// `OK` at 3 ms.
    fn online(how: &Behaviour, stats: &mut Stats) -> Collar {
        let mut out = Vec::new();
        let mut collar = Collar::start(7, 0, stats);
        collar.on_connected(MS, how, &mut out, stats);
        assert_eq!(collar.on_line(b"OK", 3 * MS, how, &mut out, stats), Flow::Continue);
        collar
    }

    fn text(out: &[u8]) -> &str {
        std::str::from_utf8(out).unwrap()
    }

    #[test]
    fn with_keys_it_answers_the_challenge_with_its_proof() {
        let keys = DeviceKeys::new(&[[0x21; 32]]).unwrap();
        let keyed = Behaviour { keys: Some(keys.clone()), ..how() };
        let (mut stats, mut out) = (Stats::default(), Vec::new());
        let mut collar = Collar::start(1, 0, &mut stats);
        collar.on_connected(MS, &keyed, &mut out, &mut stats);
        out.clear();
        let nonce = Nonce([0xAB; 16]);
        let line = format!("CHALLENGE {}", "ab".repeat(16));
        assert_eq!(collar.on_line(line.as_bytes(), 2 * MS, &keyed, &mut out, &mut stats), Flow::Continue);
        let mac = "02:4C:00:00:00:01".parse().unwrap();
        let proof = auth::prove(&keys.device_key(mac), &nonce);
        let hex: String = proof.0.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(text(&out), format!("AUTH:{hex}\n"));
        assert_eq!(collar.on_line(b"OK", 3 * MS, &keyed, &mut out, &mut stats), Flow::Continue);
        assert_eq!((collar.phase(), stats.handshake_us.max()), (Phase::Online, 2 * MS));
        // Challenged without keys: it cannot go online.
        let mut collar = Collar::start(2, 0, &mut stats);
        collar.on_connected(MS, &how(), &mut out, &mut stats);
        assert_eq!(collar.on_line(line.as_bytes(), 2 * MS, &how(), &mut out, &mut stats), Flow::Close);
    }

    #[test]
    fn leaving_after_identify_counts_it_established_and_left_and_closes() {
        let how = Behaviour { leave_after_identify: true, ..how() };
        let (mut stats, mut out) = (Stats::default(), Vec::new());
        let mut collar = Collar::start(3, 0, &mut stats);
        collar.on_connected(MS, &how, &mut out, &mut stats);
        out.clear();
        assert_eq!(collar.on_line(b"OK", 3 * MS, &how, &mut out, &mut stats), Flow::Close);
        assert!(out.is_empty());
        assert_eq!(collar.phase(), Phase::Closed);
        assert_eq!((stats.established, stats.left, stats.online, stats.in_flight, stats.lost), (1, 1, 0, 0, 0));
        assert_eq!(stats.handshake_us.max(), 2 * MS);
        // Nothing more is counted for it, at the end of the run either.
        collar.finish(&mut stats);
        collar.fail(Failure::Reset, &mut stats);
        assert_eq!((stats.open_at_end, stats.failed_total(), stats.left), (0, 0, 1));
    }

    #[test]
    fn connects_identifies_with_its_own_mac_and_goes_online() {
        let (how, mut stats, mut out) = (how(), Stats::default(), Vec::new());
        let mut collar = Collar::start(0x1_02, 0, &mut stats);
        assert_eq!((stats.attempted, stats.in_flight), (1, 1));
        assert_eq!(collar.next_deadline(&how), Some(5000 * MS));

        collar.on_connected(250, &how, &mut out, &mut stats);
        assert_eq!(text(&out), "IDENTIFY:02:4C:00:00:01:02\n");
        assert_eq!(collar.phase(), Phase::Identifying);
        assert_eq!(stats.connect_us.len(), 1);
        assert_eq!(stats.connect_us.max(), 250);
        // The timeout starts again for the handshake.
        assert_eq!(collar.next_deadline(&how), Some(250 + 5000 * MS));

        out.clear();
        assert_eq!(collar.on_line(b"OK", 1250, &how, &mut out, &mut stats), Flow::Continue);
        assert!(out.is_empty());
        assert_eq!(collar.phase(), Phase::Online);
        assert_eq!((stats.established, stats.online, stats.in_flight), (1, 1, 0));
        assert_eq!(stats.handshake_us.max(), 1000);
        assert_eq!(collar.next_deadline(&how), None, "nothing periodic asked for");
    }

    #[test]
    fn answers_heartbeats_and_location_queries() {
        let (how, mut stats, mut out) = (how(), Stats::default(), Vec::new());
        let mut collar = online(&how, &mut stats);
        assert_eq!(collar.on_line(b"PING", 10 * MS, &how, &mut out, &mut stats), Flow::Continue);
        assert_eq!(text(&out), "PONG\n");
        assert_eq!((stats.heartbeats_received, stats.heartbeats_answered), (1, 1));

        out.clear();
        collar.on_line(b"location", 11 * MS, &how, &mut out, &mut stats);
        assert_eq!((stats.location_queries, stats.location_answers), (1, 1));
        let line = text(&out).strip_suffix('\n').unwrap();
        // The gateway's own parser accepts the answer.
        assert!(matches!(parse(line.as_bytes()), Command::Location { .. }), "{line}");
        assert_eq!(stats.lines_in, 3, "OK, PING, location");
    }

    #[test]
    fn a_connect_or_handshake_that_takes_too_long_times_out() {
        let (how, mut out) = (how(), Vec::new());
        let mut stats = Stats::default();
        let mut collar = Collar::start(1, 0, &mut stats);
        // Early wake-up: nothing happens.
        assert_eq!(collar.on_deadline(4999 * MS, &how, &mut out, &mut stats), Flow::Continue);
        assert_eq!(collar.on_deadline(5000 * MS, &how, &mut out, &mut stats), Flow::Close);
        assert_eq!(stats.failed(Failure::Timeout), 1);
        assert_eq!((stats.in_flight, stats.lost), (0, 0));
        assert_eq!(collar.next_deadline(&how), None);

        let mut collar = Collar::start(2, 0, &mut stats);
        collar.on_connected(MS, &how, &mut out, &mut stats);
        assert_eq!(collar.on_deadline(5000 * MS, &how, &mut out, &mut stats), Flow::Continue);
        assert_eq!(collar.on_deadline(5001 * MS, &how, &mut out, &mut stats), Flow::Close);
        assert_eq!(stats.failed(Failure::Timeout), 2);
    }

    #[test]
    fn bye_and_end_of_file_count_as_closed_by_the_server() {
        let (how, mut out) = (how(), Vec::new());
        let mut stats = Stats::default();
        let mut collar = online(&how, &mut stats);
        assert_eq!(collar.on_line(b"BYE shutdown", 9 * MS, &how, &mut out, &mut stats), Flow::Close);
        assert_eq!(stats.bye["shutdown"], 1);
        assert_eq!((stats.online, stats.lost), (0, 1));
        // Whatever follows is not counted again.
        collar.on_eof(&mut stats);
        collar.fail(Failure::Reset, &mut stats);
        assert_eq!(stats.closed_by_server(), 1);
        assert_eq!(stats.failed_total(), 0);

        // A BYE before OK: closed by the server, not lost (never online).
        let mut collar = Collar::start(3, 0, &mut stats);
        collar.on_connected(MS, &how, &mut out, &mut stats);
        assert_eq!(collar.on_line(b"BYE server-full", 2 * MS, &how, &mut out, &mut stats), Flow::Close);
        assert_eq!((stats.bye["server-full"], stats.lost, stats.in_flight), (1, 1, 0));

        let mut collar = online(&how, &mut stats);
        collar.on_eof(&mut stats);
        assert_eq!((stats.without_bye, stats.lost, stats.online), (1, 2, 0));
    }

    #[test]
    fn an_error_answer_to_identify_fails_the_collar() {
        let (how, mut out) = (how(), Vec::new());
        let mut stats = Stats::default();
        let mut collar = Collar::start(1, 0, &mut stats);
        collar.on_connected(MS, &how, &mut out, &mut stats);
        assert_eq!(collar.on_line(b"ERR bad-mac", 2 * MS, &how, &mut out, &mut stats), Flow::Close);
        assert_eq!((stats.failed(Failure::Other), stats.errors_received, stats.established), (1, 1, 0));

        // Once online, an ERR is counted but the collar stays.
        let mut collar = online(&how, &mut stats);
        assert_eq!(collar.on_line(b"ERR unknown-command", 5 * MS, &how, &mut out, &mut stats), Flow::Continue);
        assert_eq!(stats.errors_received, 2);
    }

    #[test]
    fn unexpected_lines_are_counted_and_ignored() {
        let (how, mut out) = (how(), Vec::new());
        let mut stats = Stats::default();
        let mut collar = online(&how, &mut stats);
        for line in [&b"OK"[..], b"PONG", b"HELLO", b"", b"BYEBYE", b"\xff\xfe"] {
            assert_eq!(collar.on_line(line, 5 * MS, &how, &mut out, &mut stats), Flow::Continue, "{line:?}");
        }
        assert!(out.is_empty());
        assert_eq!(stats.unexpected_lines, 6);
        assert_eq!(collar.phase(), Phase::Online);
    }

    #[test]
    fn periodic_pings_and_reports_fire_in_their_spread_phase() {
        let how = Behaviour { ping_interval: 1000 * MS, report_interval: 500 * MS, ..how() };
        let (mut stats, mut out) = (Stats::default(), Vec::new());
        let mut collar = online(&how, &mut stats);
        let first = collar.next_deadline(&how).unwrap();
        assert!((3 * MS..3 * MS + 500 * MS).contains(&first), "{first}");

        // Run the timer for 10 s, as the event loop would.
        let mut now = first;
        while now < 10_003 * MS {
            collar.on_deadline(now, &how, &mut out, &mut stats);
            now = collar.next_deadline(&how).unwrap();
        }
        // Nobody answers the PINGs: one is sent, the other nine skipped.
        assert_eq!((stats.pings_sent, stats.pings_skipped), (1, 9));
        assert_eq!(stats.reports_sent, 20);
        let reports: Vec<&str> = text(&out).lines().filter(|l| l.starts_with("LOCATION:")).collect();
        assert_eq!(reports.len(), 20);
        assert!(reports.iter().all(|l| matches!(parse(l.as_bytes()), Command::Location { .. })));

        // A PONG is an RTT sample and frees the next periodic PING.
        collar.on_line(b"PONG", now + 2 * MS, &how, &mut out, &mut stats);
        assert_eq!(stats.rtt_us.len(), 1);
        collar.on_deadline(now + 1000 * MS, &how, &mut out, &mut stats);
        assert_eq!(stats.pings_sent, 2);
    }

    #[test]
    fn first_periodic_lines_are_spread_over_the_interval() {
        let how = Behaviour { ping_interval: 1000 * MS, ..how() };
        let mut stats = Stats::default();
        let mut buckets = [0u32; 10];
        for index in 0..2000 {
            let mut collar = Collar::start(index, 0, &mut stats);
            collar.on_connected(0, &how, &mut Vec::new(), &mut stats);
            collar.on_line(b"OK", 0, &how, &mut Vec::new(), &mut stats);
            let at = collar.next_deadline(&how).unwrap();
            buckets[(at / (100 * MS)) as usize] += 1;
        }
        assert!(buckets.iter().all(|&n| (120..280).contains(&n)), "{buckets:?}");
    }

    #[test]
    fn the_rtt_loop_pings_again_on_every_pong() {
        let (how, mut stats, mut out) = (how(), Stats::default(), Vec::new());
        let mut collar = online(&how, &mut stats);
        collar.start_rtt(10 * MS, &mut out, &mut stats);
        assert_eq!(text(&out), "PING\n");
        for i in 1..=3 {
            out.clear();
            collar.on_line(b"PONG", 10 * MS + i * 40, &how, &mut out, &mut stats);
            assert_eq!(text(&out), "PING\n");
        }
        assert_eq!((stats.pings_sent, stats.pongs_received), (4, 3));
        assert_eq!(stats.rtt_us.len(), 3);
        assert_eq!(stats.rtt_us.max(), 40);
        assert_eq!(stats.rtt_sum_us, 40 + 40 + 40);

        // A collar that is not online does not join.
        let mut connecting = Collar::start(9, 0, &mut stats);
        out.clear();
        connecting.start_rtt(10 * MS, &mut out, &mut stats);
        assert!(out.is_empty());
    }

    #[test]
    fn the_end_of_the_run_counts_open_and_pending_collars() {
        let (how, mut stats) = (how(), Stats::default());
        let mut open = online(&how, &mut stats);
        let mut pending = Collar::start(8, 0, &mut stats);
        let mut closed = online(&how, &mut stats);
        closed.on_eof(&mut stats);
        for collar in [&mut open, &mut pending, &mut closed] {
            collar.finish(&mut stats);
        }
        assert_eq!((stats.open_at_end, stats.pending_at_end), (1, 1));
        assert_eq!((stats.online, stats.in_flight), (0, 0));
        // Every attempt is accounted for exactly once.
        assert_eq!(
            stats.attempted,
            stats.failed_total() + stats.closed_by_server() + stats.open_at_end + stats.pending_at_end
        );
    }
}
