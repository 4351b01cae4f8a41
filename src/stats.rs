//! Counters for everything the gateway does, in one struct.
//!
//! The reactor owns one [`Stats`] and bumps plain integers (it is single
//! threaded, so no atomics). The periodic report line and the `/metrics`
//! endpoint read the same struct. Counters only grow; rates are
//! differences between two snapshots.
//!
//! One invariant ties them together, per kind of connection: `accepted ==
//! connections still open + sum(closed)`, since every accepted socket is
//! either open or was closed for exactly one reason (a `server-full`
//! rejection counts as a close; a connection lingering after its last
//! words already counts as closed).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use crate::close::CloseReason;
use crate::device::Command;
use crate::reactor::{Budget, Kind};
use crate::time::Millis;

/// Upper bounds (seconds) of the loop-iteration histogram buckets; one more
/// bucket counts everything slower.
pub const LOOP_BUCKETS: [f64; 10] = [1e-5, 5e-5, 1e-4, 5e-4, 1e-3, 5e-3, 1e-2, 5e-2, 0.1, 1.0];

/// Kinds of device lines, for `lines_in`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineKind {
    Identify,
    Ping,
    Pong,
    Location,
    Invalid,
    Auth,
}

impl LineKind {
    pub const ALL: [LineKind; 6] =
        [LineKind::Identify, LineKind::Ping, LineKind::Pong, LineKind::Location, LineKind::Invalid, LineKind::Auth];

    pub fn of(command: &Command) -> LineKind {
        match command {
            Command::Identify(_) => LineKind::Identify,
            Command::Ping => LineKind::Ping,
            Command::Pong => LineKind::Pong,
            Command::Location { .. } => LineKind::Location,
            Command::Invalid(_) => LineKind::Invalid,
            Command::Auth(_) => LineKind::Auth,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            LineKind::Identify => "identify",
            LineKind::Ping => "ping",
            LineKind::Pong => "pong",
            LineKind::Location => "location",
            LineKind::Invalid => "invalid",
            LineKind::Auth => "auth",
        }
    }
}

/// Every counter of the gateway.
#[derive(Debug, Clone, Default)]
pub struct Stats {
    /// Sockets returned by `accept`, including those rejected as
    /// server-full, indexed by [`Kind`].
    pub accepted: [u64; 2],
    /// Closed connections by [`Kind`] (links included), then by
    /// [`CloseReason::index`].
    pub closed: [[u64; CloseReason::ALL.len()]; 3],
    /// `accept` failures for lack of file descriptors (EMFILE/ENFILE).
    pub accept_fd_exhausted: u64,
    /// Other `accept` failures (ECONNABORTED, ENOBUFS, ...).
    pub accept_failed: u64,
    /// Device lines received, indexed like [`LineKind::ALL`].
    pub lines_in: [u64; LineKind::ALL.len()],
    /// Lines sent to devices.
    pub lines_out: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// Identifications that replaced a connection with the same MAC.
    pub takeovers: u64,
    /// Heartbeat PINGs sent by the gateway.
    pub heartbeat_pings: u64,
    /// Turns of the event loop.
    pub loop_iterations: u64,
    /// Time spent handling events and timers.
    pub loop_busy: Duration,
    /// Time spent waiting in `poll`.
    pub loop_wait: Duration,
    /// The longest turn of the loop since the last report.
    pub longest_turn: Duration,
    /// The longest turn of the loop since the start.
    pub longest_turn_ever: Duration,
    /// `read` calls that returned bytes.
    pub reads: u64,
    /// `write` calls that wrote bytes.
    pub writes: u64,
    /// Times each per-turn budget ran out with work left, indexed like
    /// [`Budget::ALL`].
    pub budget_spent: [u64; Budget::ALL.len()],
    /// Events sent on event streams (one per event per subscriber).
    pub events_delivered: u64,
    /// Busy time of each loop turn, bucketed by [`LOOP_BUCKETS`] (the last
    /// bucket counts the slower ones).
    pub loop_histogram: [u64; LOOP_BUCKETS.len() + 1],
    /// HTTP responses sent, by status code.
    pub http_responses: BTreeMap<u16, u64>,
    /// Device events published (connected, disconnected, location).
    pub events_published: u64,
    /// Collars that proved their key (`--device-key-file`).
    pub device_auths: u64,
    /// `AUTH` lines that did not prove the key (the collar is closed).
    pub device_auth_failures: u64,
    /// MACs put in quarantine for flapping (`--flap-limit`).
    pub flap_quarantines: u64,
    /// Identifications refused because the MAC was quarantined.
    pub flap_refusals: u64,
    /// TLS handshakes completed: full ones, then resumed ones (a session
    /// ticket or the session cache).
    pub tls_handshakes: [u64; 2],
}

impl Stats {
    pub fn close(&mut self, kind: Kind, reason: CloseReason) {
        self.closed[kind as usize][reason.index()] += 1;
    }

    pub fn closed(&self, kind: Kind, reason: CloseReason) -> u64 {
        self.closed[kind as usize][reason.index()]
    }

    pub fn line_in(&mut self, kind: LineKind) {
        self.lines_in[kind as usize] += 1;
    }

    /// Every close of connections of this kind.
    pub fn closed_total(&self, kind: Kind) -> u64 {
        self.closed[kind as usize].iter().sum()
    }

    /// Counts a budget that ran out with work left.
    pub fn budget_spent(&mut self, budget: Budget) {
        self.budget_spent[budget as usize] += 1;
    }

    /// Records one loop turn's busy time.
    pub fn loop_turn(&mut self, busy: Duration) {
        self.loop_busy += busy;
        self.longest_turn = self.longest_turn.max(busy);
        self.longest_turn_ever = self.longest_turn_ever.max(busy);
        let secs = busy.as_secs_f64();
        let bucket = LOOP_BUCKETS.iter().position(|&le| secs <= le).unwrap_or(LOOP_BUCKETS.len());
        self.loop_histogram[bucket] += 1;
    }

    pub fn http_response(&mut self, status: u16) {
        *self.http_responses.entry(status).or_default() += 1;
    }

    /// The periodic info line: what happened since `prev`, `elapsed` ago,
    /// with `held` connections by [`Kind`].
    pub fn report(&self, prev: &Stats, elapsed: Duration, held: [usize; 2]) -> String {
        let secs = elapsed.as_secs_f64().max(1e-3);
        let rate = |now: u64, then: u64| (now - then) as f64 / secs;
        let busy = self.loop_busy - prev.loop_busy;
        let wait = self.loop_wait - prev.loop_wait;
        let busy_pct = 100.0 * busy.as_secs_f64() / (busy + wait).as_secs_f64().max(1e-9);
        let accepted = |s: &Stats| s.accepted.iter().sum::<u64>();
        let mut line = format!(
            "connections={} http={} accepts/s={:.1} lines_in/s={:.1} lines_out/s={:.1} \
             in={}B out={}B writes={} loop_busy={busy_pct:.1}% longest_turn={:?} iterations={}",
            held.iter().sum::<usize>(),
            held[Kind::Http as usize],
            rate(accepted(self), accepted(prev)),
            rate(self.lines_in.iter().sum(), prev.lines_in.iter().sum()),
            rate(self.lines_out, prev.lines_out),
            self.bytes_in - prev.bytes_in,
            self.bytes_out - prev.bytes_out,
            self.writes - prev.writes,
            self.longest_turn,
            self.loop_iterations - prev.loop_iterations,
        );
        let mut closes = String::new();
        for reason in CloseReason::ALL {
            let n: u64 = Kind::ALL.iter().map(|&k| self.closed(k, reason) - prev.closed(k, reason)).sum();
            if n > 0 {
                let _ = write!(closes, "{}{}={n}", if closes.is_empty() { "" } else { "," }, reason.as_str());
            }
        }
        let _ = write!(line, " closes={{{closes}}}");
        let fd = self.accept_fd_exhausted - prev.accept_fd_exhausted;
        if fd > 0 {
            let _ = write!(line, " accept_emfile={fd}");
        }
        // Device authentication and the flapping guard, when they acted.
        for (name, now, then) in [
            ("auth_failures", self.device_auth_failures, prev.device_auth_failures),
            ("flap_quarantines", self.flap_quarantines, prev.flap_quarantines),
            ("flap_refusals", self.flap_refusals, prev.flap_refusals),
        ] {
            if now > then {
                let _ = write!(line, " {name}={}", now - then);
            }
        }
        let mut spent = String::new();
        for budget in Budget::ALL {
            let n = self.budget_spent[budget as usize] - prev.budget_spent[budget as usize];
            if n > 0 {
                let _ = write!(spent, "{}{}={n}", if spent.is_empty() { "" } else { "," }, budget.as_str());
            }
        }
        if !spent.is_empty() {
            let _ = write!(line, " budgets_spent={{{spent}}}");
        }
        line
    }
}

/// Lets a warning through at most once per interval and counts the rest,
/// so a flood of rejections cannot flood the log.
#[derive(Debug, Default)]
pub struct Throttle {
    last: Option<Millis>,
    suppressed: u64,
}

impl Throttle {
    /// Returns `Some(suppressed since the last one)` when a warning may be
    /// logged now.
    pub fn allow(&mut self, now: Millis, interval_ms: u64) -> Option<u64> {
        match self.last {
            Some(last) if now < last + interval_ms => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_gives_rates_and_closes_by_reason() {
        let prev = Stats::default();
        let mut now = prev.clone();
        now.accepted = [45, 5];
        now.close(Kind::Device, CloseReason::Idle);
        now.close(Kind::Device, CloseReason::Idle);
        now.close(Kind::Device, CloseReason::Replaced);
        now.lines_in[LineKind::Ping as usize] = 20;
        now.lines_out = 20;
        now.loop_busy = Duration::from_millis(250);
        now.loop_wait = Duration::from_millis(750);
        now.budget_spent(Budget::Requests);
        now.loop_turn(Duration::from_millis(3));
        let line = now.report(&prev, Duration::from_secs(10), [42, 5]);
        assert!(!line.contains("auth_failures") && !line.contains("flap_"), "{line}");
        let mut guarded = now.clone();
        guarded.device_auth_failures = 3;
        guarded.flap_refusals = 2;
        let guarded = guarded.report(&prev, Duration::from_secs(10), [42, 5]);
        assert!(
            guarded.contains("closes={replaced=1,idle=2} auth_failures=3 flap_refusals=2 budgets_spent="),
            "{guarded}"
        );
        assert!(line.starts_with("connections=47 http=5 accepts/s=5.0 lines_in/s=2.0 lines_out/s=2.0"), "{line}");
        assert!(line.contains("loop_busy=25.2%"), "{line}");
        assert!(line.contains("longest_turn=3ms"), "{line}");
        assert!(line.ends_with("closes={replaced=1,idle=2} budgets_spent={requests=1}"), "{line}");
    }

    #[test]
    fn loop_turns_land_in_their_bucket() {
        let mut stats = Stats::default();
        stats.loop_turn(Duration::from_micros(5));
        stats.loop_turn(Duration::from_micros(10));
        stats.loop_turn(Duration::from_millis(3));
        stats.loop_turn(Duration::from_secs(2));
        assert_eq!(stats.loop_histogram, [2, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1]);
        assert_eq!(stats.loop_busy, Duration::from_micros(2_003_015));
        assert_eq!(stats.longest_turn_ever, Duration::from_secs(2));
    }

    #[test]
    fn throttle_counts_what_it_suppresses() {
        let mut t = Throttle::default();
        assert_eq!(t.allow(0, 1000), Some(0));
        assert_eq!(t.allow(10, 1000), None);
        assert_eq!(t.allow(999, 1000), None);
        assert_eq!(t.allow(1000, 1000), Some(2));
        assert_eq!(t.allow(1001, 1000), None);
    }
}
