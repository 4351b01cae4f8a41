//! What one process counts and measures while it runs.
//!
//! The collars ([`crate::collar`]) and the event loop bump plain integers
//! here (one thread, no atomics) and record latencies in HDR histograms,
//! whose percentiles are exact to three significant digits whatever the
//! number of samples, in a fixed amount of memory. At the end the whole
//! struct becomes a [`crate::summary::Summary`], which is what leaves the
//! process.
//!
//! Invariant: every attempted collar is, at any moment, in exactly one of
//! `in_flight`, `online`, or ended (`failed`, `closed_by_server`, `left`);
//! at the end of the run the first two are moved to `pending_at_end` and
//! `open_at_end`.

use std::collections::BTreeMap;

use hdrhistogram::Histogram;

use crate::outcome::{End, Failure};

/// Latencies are recorded in microseconds from 1 µs to one hour; longer
/// ones are recorded as one hour.
pub const HISTOGRAM_MAX_US: u64 = 3_600_000_000;
/// Significant digits the histograms keep.
pub const HISTOGRAM_DIGITS: u8 = 3;
/// Distinct `BYE` reasons counted by name; any further ones count as `other`.
const MAX_BYE_REASONS: usize = 32;

/// An empty latency histogram with the tool's bounds.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, HISTOGRAM_MAX_US, HISTOGRAM_DIGITS).expect("valid histogram bounds")
}

/// How a TLS handshake ended, from the client's side (rustls's
/// `HandshakeKind`): the server certificate checked and a key exchanged
/// (full), the same after the server asked for another key share (a
/// `HelloRetryRequest`: one more round trip), or a session resumed from a
/// ticket of an earlier connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsHandshake {
    Full,
    FullWithHelloRetry,
    Resumed,
}

impl TlsHandshake {
    pub const ALL: [TlsHandshake; 3] = [TlsHandshake::Full, TlsHandshake::FullWithHelloRetry, TlsHandshake::Resumed];
}

#[derive(Debug, Clone)]
pub struct Stats {
    /// Connects started (a socket was asked for).
    pub attempted: u64,
    /// Collars that got `OK` to their `IDENTIFY`.
    pub established: u64,
    /// Connecting or identifying now.
    pub in_flight: u64,
    /// Identified and connected now.
    pub online: u64,
    /// Ends on an error, by [`Failure`] (indexed like [`Failure::ALL`]).
    pub failed: [u64; Failure::ALL.len()],
    /// Closed by the gateway with `BYE <reason>`, by reason.
    pub bye: BTreeMap<String, u64>,
    /// Closed by the gateway without a `BYE`.
    pub without_bye: u64,
    /// Established collars that ended before the run did (a subset of the
    /// failed and closed ones).
    pub lost: u64,
    /// Collars that closed their connection themselves once identified
    /// (`--leave-after-identify`).
    pub left: u64,
    /// Online when the run ended.
    pub open_at_end: u64,
    /// Still connecting or identifying when the run ended.
    pub pending_at_end: u64,
    pub lines_in: u64,
    pub lines_out: u64,
    /// Heartbeat `PING`s from the gateway, and the `PONG`s sent back.
    pub heartbeats_received: u64,
    pub heartbeats_answered: u64,
    /// `location` queries from the gateway, and the `LOCATION:` answers.
    pub location_queries: u64,
    pub location_answers: u64,
    /// Our `PING`s, the `PONG`s that answered them, and periodic `PING`s
    /// not sent because the previous one was still unanswered.
    pub pings_sent: u64,
    pub pongs_received: u64,
    pub pings_skipped: u64,
    /// Periodic `LOCATION:` reports sent.
    pub reports_sent: u64,
    /// `ERR …` lines received.
    pub errors_received: u64,
    /// Lines we have no use for (`OK` when identified, a `PONG` to no
    /// `PING`, anything unknown).
    pub unexpected_lines: u64,
    /// `--tls`: completed handshakes by how they went, as the client saw
    /// them (indexed like [`TlsHandshake::ALL`]).
    pub tls_handshakes: [u64; TlsHandshake::ALL.len()],
    /// Sum of the RTT samples, for the progress line's mean.
    pub rtt_sum_us: u64,
    /// Connect start to connected.
    pub connect_us: Histogram<u64>,
    /// `IDENTIFY` sent to `OK` received.
    pub handshake_us: Histogram<u64>,
    /// `PING` sent to `PONG` received.
    pub rtt_us: Histogram<u64>,
}

impl Default for Stats {
    fn default() -> Stats {
        Stats {
            attempted: 0,
            established: 0,
            in_flight: 0,
            online: 0,
            failed: [0; Failure::ALL.len()],
            bye: BTreeMap::new(),
            without_bye: 0,
            lost: 0,
            left: 0,
            open_at_end: 0,
            pending_at_end: 0,
            lines_in: 0,
            lines_out: 0,
            heartbeats_received: 0,
            heartbeats_answered: 0,
            location_queries: 0,
            location_answers: 0,
            pings_sent: 0,
            pongs_received: 0,
            pings_skipped: 0,
            reports_sent: 0,
            errors_received: 0,
            unexpected_lines: 0,
            tls_handshakes: [0; TlsHandshake::ALL.len()],
            rtt_sum_us: 0,
            connect_us: histogram(),
            handshake_us: histogram(),
            rtt_us: histogram(),
        }
    }
}

impl Stats {
    pub fn failed(&self, kind: Failure) -> u64 {
        self.failed[kind as usize]
    }

    pub fn failed_total(&self) -> u64 {
        self.failed.iter().sum()
    }

    pub fn closed_by_server(&self) -> u64 {
        self.bye.values().sum::<u64>() + self.without_bye
    }

    /// Counts how a collar's connection ended; `was_online` when it had
    /// been established.
    pub fn ended(&mut self, end: &End, was_online: bool) {
        match end {
            End::Failed(kind) => self.failed[*kind as usize] += 1,
            End::Bye(reason) => {
                let key = if self.bye.contains_key(reason) || self.bye.len() < MAX_BYE_REASONS {
                    reason.as_str()
                } else {
                    "other"
                };
                *self.bye.entry(key.to_owned()).or_default() += 1;
            }
            End::WithoutBye => self.without_bye += 1,
        }
        if was_online {
            self.lost += 1;
        }
    }

    pub fn tls_handshakes(&self, kind: TlsHandshake) -> u64 {
        self.tls_handshakes[kind as usize]
    }

    pub fn record_rtt(&mut self, us: u64) {
        self.rtt_us.saturating_record(us.max(1));
        self.rtt_sum_us += us;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_ends_by_kind_and_reason() {
        let mut stats = Stats::default();
        stats.ended(&End::Failed(Failure::Refused), false);
        stats.ended(&End::Failed(Failure::Reset), true);
        stats.ended(&End::Bye("shutdown".into()), true);
        stats.ended(&End::Bye("shutdown".into()), false);
        stats.ended(&End::WithoutBye, true);
        assert_eq!(stats.failed(Failure::Refused), 1);
        assert_eq!(stats.failed(Failure::Reset), 1);
        assert_eq!(stats.failed_total(), 2);
        assert_eq!(stats.bye["shutdown"], 2);
        assert_eq!(stats.closed_by_server(), 3);
        assert_eq!(stats.lost, 3);
    }

    #[test]
    fn bye_reasons_are_bounded() {
        let mut stats = Stats::default();
        for i in 0..100 {
            stats.ended(&End::Bye(format!("r{i}")), false);
        }
        stats.ended(&End::Bye("r0".into()), false);
        assert!(stats.bye.len() <= MAX_BYE_REASONS + 1);
        assert_eq!(stats.bye["r0"], 2);
        assert_eq!(stats.closed_by_server(), 101);
    }
}
