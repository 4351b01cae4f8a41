//! The progress line, once a second while a run goes on.
//!
//! A process takes a [`Progress`] snapshot of its counters every second.
//! Alone, it prints it as a line on stderr; as a worker, it sends it to its
//! parent as JSON, and the parent adds up the latest snapshot of every
//! worker and prints the same line. Every field is a running total or a
//! current gauge, so the sum over processes means what one process's own
//! does, and rates are differences between consecutive sums.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::collar::Micros;
use crate::stats::Stats;

#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    pub attempted: u64,
    pub established: u64,
    pub in_flight: u64,
    pub online: u64,
    pub failed: u64,
    pub closed_by_server: u64,
    pub lines_in: u64,
    pub lines_out: u64,
    pub heartbeats: u64,
    pub rtt_count: u64,
    pub rtt_sum_us: u64,
}

impl Progress {
    pub fn of(stats: &Stats) -> Progress {
        Progress {
            attempted: stats.attempted,
            established: stats.established,
            in_flight: stats.in_flight,
            online: stats.online,
            failed: stats.failed_total(),
            closed_by_server: stats.closed_by_server(),
            lines_in: stats.lines_in,
            lines_out: stats.lines_out,
            heartbeats: stats.heartbeats_received,
            rtt_count: stats.rtt_us.len(),
            rtt_sum_us: stats.rtt_sum_us,
        }
    }

    pub fn add(&mut self, other: &Progress) {
        self.attempted += other.attempted;
        self.established += other.established;
        self.in_flight += other.in_flight;
        self.online += other.online;
        self.failed += other.failed;
        self.closed_by_server += other.closed_by_server;
        self.lines_in += other.lines_in;
        self.lines_out += other.lines_out;
        self.heartbeats += other.heartbeats;
        self.rtt_count += other.rtt_count;
        self.rtt_sum_us += other.rtt_sum_us;
    }
}

/// Turns snapshots into lines, remembering the previous one for rates.
#[derive(Debug)]
pub struct Printer {
    collars: u64,
    last: (Micros, Progress),
}

impl Printer {
    /// A printer for a run of `collars` collars (all processes).
    pub fn new(collars: u64) -> Printer {
        Printer { collars, last: (0, Progress::default()) }
    }

    /// The line for `now`, taken `at` microseconds into the run.
    pub fn line(&mut self, at: Micros, now: Progress) -> String {
        let (then_at, then) = std::mem::replace(&mut self.last, (at, now));
        let secs = at.saturating_sub(then_at) as f64 / 1e6;
        let rate = |now: u64, then: u64| if secs > 0.0 { now.saturating_sub(then) as f64 / secs } else { 0.0 };
        let mut line = format!(
            "[{:>6.1}s] online {}/{} (+{:.0}/s) in-flight {} failed {} closed {} | lines in {:.0}/s out {:.0}/s",
            at as f64 / 1e6,
            now.online,
            self.collars,
            rate(now.established, then.established),
            now.in_flight,
            now.failed,
            now.closed_by_server,
            rate(now.lines_in, then.lines_in),
            rate(now.lines_out, then.lines_out),
        );
        let rtts = now.rtt_count.saturating_sub(then.rtt_count);
        if let Some(mean) = now.rtt_sum_us.saturating_sub(then.rtt_sum_us).checked_div(rtts) {
            let _ = write!(line, " | rtt {:.0}/s mean {mean}us", rate(now.rtt_count, then.rtt_count));
        }
        if now.heartbeats > 0 {
            let _ = write!(line, " | heartbeats {}", now.heartbeats);
        }
        line
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_and_rates() {
        let a = Progress {
            established: 100,
            online: 90,
            lines_in: 1000,
            rtt_count: 10,
            rtt_sum_us: 500,
            ..Default::default()
        };
        let b = Progress { established: 50, online: 50, in_flight: 7, failed: 1, ..Default::default() };
        let mut sum = a;
        sum.add(&b);
        assert_eq!((sum.established, sum.online, sum.in_flight, sum.failed), (150, 140, 7, 1));

        let mut printer = Printer::new(200);
        let line = printer.line(500_000, sum);
        assert!(line.starts_with("[   0.5s] online 140/200 (+300/s) in-flight 7 failed 1 closed 0"), "{line}");
        assert!(line.contains("lines in 2000/s") && line.contains("rtt 20/s mean 50us"), "{line}");
        assert!(!line.contains("heartbeats"), "{line}");

        let mut later = sum;
        later.established += 10;
        later.heartbeats = 3;
        let line = printer.line(1_500_000, later);
        assert!(line.contains("(+10/s)") && line.contains("lines in 0/s"), "{line}");
        assert!(!line.contains("rtt"), "no samples this second: {line}");
        assert!(line.ends_with("| heartbeats 3"), "{line}");
    }

    #[test]
    fn the_snapshot_travels_as_json() {
        let p = Progress { online: 3, rtt_sum_us: 7, ..Default::default() };
        let json = serde_json::to_string(&p).unwrap();
        assert_eq!(serde_json::from_str::<Progress>(&json).unwrap(), p);
    }
}
