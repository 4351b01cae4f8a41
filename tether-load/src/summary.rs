//! The end-of-run summary: what `--json` prints, what a worker process
//! sends its parent, and how the parent merges them (sans-IO).
//!
//! One format serves all three, so a summary from one process, from a
//! parent of several, or from several machines merged by a script, reads
//! the same. Histograms travel as `[value, count]` pairs, so merging keeps
//! real percentiles (not an average of percentiles).
//!
//! # Fields
//!
//! These names are stable: scripts parse them. New fields may be added;
//! existing ones keep their name and meaning (`version` changes if not).
//! Times are in seconds (`_s`) or microseconds (`_us`); rates per second.
//!
//! | field | meaning |
//! |---|---|
//! | `version` | format version, `1` |
//! | `target` | the gateway address |
//! | `processes` | processes that ran collars |
//! | `collars` | collars asked for (`--collars`) |
//! | `elapsed_s` | length of the run (the longest process) |
//! | `connect_phase_s` | start until every collar was connected or had failed (the run's length if that never happened) |
//! | `connects_per_s` | `connections.established / connect_phase_s` |
//! | `connections.attempted` | connects started |
//! | `connections.established` | collars that got `OK` to `IDENTIFY` |
//! | `connections.failed` | ended on an error or a timeout (see `failed`) |
//! | `connections.closed_by_server` | ended by the gateway (see `closed_by_server`) |
//! | `connections.lost` | established, then failed or closed before the end |
//! | `connections.left` | closed by the collar itself once identified (`--leave-after-identify`) |
//! | `connections.open_at_end` | online when the run ended |
//! | `connections.pending_at_end` | still connecting or identifying when the run ended |
//! | `connections.not_attempted` | never started (the run ended first) |
//! | `failed.{refused,timeout,reset,addr_not_available,fd_limit,other}` | failures by kind; `other` includes an `ERR` answer to `IDENTIFY` |
//! | `closed_by_server.bye.<reason>` | closes announced by `BYE <reason>` |
//! | `closed_by_server.without_bye` | the gateway closed without a `BYE` |
//! | `lines.{in,out}`, `lines.{in,out}_per_s` | protocol lines received and sent |
//! | `heartbeats.{received,answered}` | the gateway's `PING`s, and our `PONG`s |
//! | `location_queries.{received,answered}` | the gateway's `location`s, and our `LOCATION:` answers |
//! | `pings.{sent,pongs,skipped}` | our `PING`s, their `PONG`s, and periodic ones skipped while one was unanswered |
//! | `reports_sent` | periodic `LOCATION:` reports |
//! | `errors_received` | `ERR` lines |
//! | `unexpected_lines` | lines with no meaning in their place |
//! | `tls_handshakes.{full,full_with_hello_retry,resumed}` | `--tls`: completed handshakes by how they went, as the client saw them: full, full after a `HelloRetryRequest`, resumed from a ticket of an earlier connection (all 0 without `--tls`) |
//! | `rtt.active` | collars in the closed RTT loop (`--rtt`) |
//! | `rtt.phase_s` | how long the RTT loop ran |
//! | `rtt.per_s` | RTT-loop `PING`/`PONG` round trips per second |
//! | `connect_latency_us`, `handshake_latency_us`, `rtt_us` | latency (see below): connect call to connected; `IDENTIFY` sent to `OK`; `PING` sent to `PONG` (all our `PING`s, periodic and RTT loop) |
//!
//! A latency is `{"count","min","mean","p50","p90","p99","p999","max",
//! "histogram"}`, in microseconds, with `histogram` the recorded values as
//! `[value, count]` pairs (each value the top of its bucket, 3 significant
//! digits). With no samples every figure is 0.
//!
//! Every attempted collar ends up in exactly one place:
//! `attempted = failed + closed_by_server + left + open_at_end + pending_at_end`.

use std::collections::BTreeMap;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::collar::Micros;
use crate::outcome::Failure;
use crate::stats::{Stats, TlsHandshake, histogram};

pub const VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub version: u32,
    pub target: String,
    pub processes: u32,
    pub collars: u64,
    pub elapsed_s: f64,
    pub connect_phase_s: f64,
    pub connects_per_s: f64,
    pub connections: Connections,
    pub failed: Failed,
    pub closed_by_server: Closed,
    pub lines: Lines,
    pub heartbeats: Exchange,
    pub location_queries: Exchange,
    pub pings: Pings,
    pub reports_sent: u64,
    pub errors_received: u64,
    pub unexpected_lines: u64,
    #[serde(default)]
    pub tls_handshakes: TlsHandshakes,
    pub rtt: Rtt,
    pub connect_latency_us: Latency,
    pub handshake_latency_us: Latency,
    pub rtt_us: Latency,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Connections {
    pub attempted: u64,
    pub established: u64,
    pub failed: u64,
    pub closed_by_server: u64,
    pub lost: u64,
    #[serde(default)]
    pub left: u64,
    pub open_at_end: u64,
    pub pending_at_end: u64,
    pub not_attempted: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Failed {
    pub refused: u64,
    pub timeout: u64,
    pub reset: u64,
    pub addr_not_available: u64,
    pub fd_limit: u64,
    pub other: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Closed {
    pub bye: BTreeMap<String, u64>,
    pub without_bye: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Lines {
    #[serde(rename = "in")]
    pub received: u64,
    #[serde(rename = "out")]
    pub sent: u64,
    pub in_per_s: f64,
    pub out_per_s: f64,
}

/// Something the gateway asked, and how often we answered.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Exchange {
    pub received: u64,
    pub answered: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Pings {
    pub sent: u64,
    pub pongs: u64,
    pub skipped: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TlsHandshakes {
    pub full: u64,
    pub full_with_hello_retry: u64,
    pub resumed: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Rtt {
    pub active: u64,
    pub phase_s: f64,
    pub per_s: f64,
}

/// Latency figures in microseconds, and the histogram they came from.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    pub count: u64,
    pub min: u64,
    pub mean: f64,
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
    pub histogram: Vec<(u64, u64)>,
}

impl Latency {
    pub fn of(h: &Histogram<u64>) -> Latency {
        if h.is_empty() {
            return Latency::default();
        }
        Latency {
            count: h.len(),
            min: h.min(),
            mean: round(h.mean()),
            p50: h.value_at_quantile(0.5),
            p90: h.value_at_quantile(0.9),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
            histogram: h.iter_recorded().map(|v| (v.value_iterated_to(), v.count_at_value())).collect(),
        }
    }

    /// The histogram back from its pairs. Values are clamped into range,
    /// so a summary edited by hand cannot make this fail.
    pub fn to_histogram(&self) -> Histogram<u64> {
        let mut h = histogram();
        for &(value, count) in &self.histogram {
            h.saturating_record_n(value.max(1), count);
        }
        h
    }
}

/// How long the phases of a process's run took.
#[derive(Debug, Clone, Copy, Default)]
pub struct Timing {
    pub elapsed: Micros,
    /// Until every collar was connected or had failed (or the whole run).
    pub connect_phase: Micros,
    pub rtt_phase: Micros,
    /// Collars in the RTT loop, and the round trips they made.
    pub rtt_active: u64,
    pub rtt_round_trips: u64,
}

impl Summary {
    /// The summary of one process that ran `collars` collars against `target`.
    pub fn new(target: &str, collars: u64, stats: &Stats, timing: Timing) -> Summary {
        let failed = |kind| stats.failed(kind);
        let rtt_phase_s = secs(timing.rtt_phase);
        let mut summary = Summary {
            version: VERSION,
            target: target.to_owned(),
            processes: 1,
            collars,
            elapsed_s: secs(timing.elapsed),
            connect_phase_s: secs(timing.connect_phase),
            connects_per_s: 0.0,
            connections: Connections {
                attempted: stats.attempted,
                established: stats.established,
                failed: stats.failed_total(),
                closed_by_server: stats.closed_by_server(),
                lost: stats.lost,
                left: stats.left,
                open_at_end: stats.open_at_end,
                pending_at_end: stats.pending_at_end,
                not_attempted: collars.saturating_sub(stats.attempted),
            },
            failed: Failed {
                refused: failed(Failure::Refused),
                timeout: failed(Failure::Timeout),
                reset: failed(Failure::Reset),
                addr_not_available: failed(Failure::AddrNotAvailable),
                fd_limit: failed(Failure::FdLimit),
                other: failed(Failure::Other),
            },
            closed_by_server: Closed { bye: stats.bye.clone(), without_bye: stats.without_bye },
            lines: Lines { received: stats.lines_in, sent: stats.lines_out, ..Lines::default() },
            heartbeats: Exchange { received: stats.heartbeats_received, answered: stats.heartbeats_answered },
            location_queries: Exchange { received: stats.location_queries, answered: stats.location_answers },
            pings: Pings { sent: stats.pings_sent, pongs: stats.pongs_received, skipped: stats.pings_skipped },
            reports_sent: stats.reports_sent,
            errors_received: stats.errors_received,
            unexpected_lines: stats.unexpected_lines,
            tls_handshakes: TlsHandshakes {
                full: stats.tls_handshakes(TlsHandshake::Full),
                full_with_hello_retry: stats.tls_handshakes(TlsHandshake::FullWithHelloRetry),
                resumed: stats.tls_handshakes(TlsHandshake::Resumed),
            },
            rtt: Rtt {
                active: timing.rtt_active,
                phase_s: rtt_phase_s,
                per_s: if rtt_phase_s > 0.0 { round(timing.rtt_round_trips as f64 / rtt_phase_s) } else { 0.0 },
            },
            connect_latency_us: Latency::of(&stats.connect_us),
            handshake_latency_us: Latency::of(&stats.handshake_us),
            rtt_us: Latency::of(&stats.rtt_us),
        };
        summary.derive_rates();
        summary
    }

    /// Collars that failed or were closed by the gateway: what
    /// `--fail-on-loss` fails on.
    pub fn losses(&self) -> u64 {
        self.connections.failed + self.connections.closed_by_server
    }

    /// When no collar connected (none got `OK` to its `IDENTIFY`:
    /// `connections.established` is 0), what became of them, as the line
    /// that explains exit status 1; `None` when at least one did. Such a run
    /// measured nothing: a wrong `--target`, a gateway that is down, or one
    /// that turns every collar away.
    pub fn none_connected(&self) -> Option<String> {
        let c = &self.connections;
        if c.established > 0 {
            return None;
        }
        let mut parts = Vec::new();
        if c.failed > 0 {
            let f = &self.failed;
            let kinds = [
                ("refused", f.refused),
                ("timeout", f.timeout),
                ("reset", f.reset),
                ("addr-not-available", f.addr_not_available),
                ("fd-limit", f.fd_limit),
                ("other", f.other),
            ];
            let kinds: Vec<String> =
                kinds.iter().filter(|(_, n)| *n > 0).map(|(kind, n)| format!("{kind} {n}")).collect();
            parts.push(format!("{} failed: {}", c.failed, kinds.join(", ")));
        }
        if c.closed_by_server > 0 {
            let closed = &self.closed_by_server;
            let mut how: Vec<String> = closed.bye.iter().map(|(reason, n)| format!("BYE {reason} {n}")).collect();
            if closed.without_bye > 0 {
                how.push(format!("without BYE {}", closed.without_bye));
            }
            parts.push(format!("{} closed by the gateway: {}", c.closed_by_server, how.join(", ")));
        }
        if c.pending_at_end > 0 {
            parts.push(format!("{} still connecting or identifying at the end", c.pending_at_end));
        }
        if c.not_attempted > 0 {
            parts.push(format!("{} not attempted", c.not_attempted));
        }
        Some(format!("no collar connected ({})", parts.join("; ")))
    }

    /// The summary of a run whose processes produced `parts`: counts add,
    /// histograms merge (percentiles are recomputed from the merged
    /// histogram), the run lasts as long as its longest process, and the
    /// processes' RTT-loop rates add up (each ran its own loop over about
    /// the same time). `None` when there are no parts.
    pub fn merge(parts: &[Summary]) -> Option<Summary> {
        let (first, rest) = parts.split_first()?;
        let mut total = first.clone();
        let mut connect = first.connect_latency_us.to_histogram();
        let mut handshake = first.handshake_latency_us.to_histogram();
        let mut rtt = first.rtt_us.to_histogram();
        for part in rest {
            total.add(part);
            // Same bounds on both sides, so adding cannot fail.
            let _ = connect.add(part.connect_latency_us.to_histogram());
            let _ = handshake.add(part.handshake_latency_us.to_histogram());
            let _ = rtt.add(part.rtt_us.to_histogram());
        }
        total.connect_latency_us = Latency::of(&connect);
        total.handshake_latency_us = Latency::of(&handshake);
        total.rtt_us = Latency::of(&rtt);
        total.derive_rates();
        Some(total)
    }

    /// Adds `other`'s counts to these (not the latencies).
    fn add(&mut self, other: &Summary) {
        self.processes += other.processes;
        self.collars += other.collars;
        self.elapsed_s = self.elapsed_s.max(other.elapsed_s);
        self.connect_phase_s = self.connect_phase_s.max(other.connect_phase_s);

        let (c, o) = (&mut self.connections, &other.connections);
        c.attempted += o.attempted;
        c.established += o.established;
        c.failed += o.failed;
        c.closed_by_server += o.closed_by_server;
        c.lost += o.lost;
        c.left += o.left;
        c.open_at_end += o.open_at_end;
        c.pending_at_end += o.pending_at_end;
        c.not_attempted += o.not_attempted;

        let (f, o) = (&mut self.failed, &other.failed);
        f.refused += o.refused;
        f.timeout += o.timeout;
        f.reset += o.reset;
        f.addr_not_available += o.addr_not_available;
        f.fd_limit += o.fd_limit;
        f.other += o.other;

        for (reason, n) in &other.closed_by_server.bye {
            *self.closed_by_server.bye.entry(reason.clone()).or_default() += n;
        }
        self.closed_by_server.without_bye += other.closed_by_server.without_bye;

        self.lines.received += other.lines.received;
        self.lines.sent += other.lines.sent;
        self.heartbeats.received += other.heartbeats.received;
        self.heartbeats.answered += other.heartbeats.answered;
        self.location_queries.received += other.location_queries.received;
        self.location_queries.answered += other.location_queries.answered;
        self.pings.sent += other.pings.sent;
        self.pings.pongs += other.pings.pongs;
        self.pings.skipped += other.pings.skipped;
        self.reports_sent += other.reports_sent;
        self.errors_received += other.errors_received;
        self.unexpected_lines += other.unexpected_lines;
        let (t, o) = (&mut self.tls_handshakes, &other.tls_handshakes);
        t.full += o.full;
        t.full_with_hello_retry += o.full_with_hello_retry;
        t.resumed += o.resumed;

        self.rtt.active += other.rtt.active;
        self.rtt.phase_s = self.rtt.phase_s.max(other.rtt.phase_s);
        self.rtt.per_s = round(self.rtt.per_s + other.rtt.per_s);
    }

    /// The rates that follow from the counts and times.
    fn derive_rates(&mut self) {
        let per_s = |n: u64, s: f64| if s > 0.0 { round(n as f64 / s) } else { 0.0 };
        self.connects_per_s = per_s(self.connections.established, self.connect_phase_s);
        self.lines.in_per_s = per_s(self.lines.received, self.elapsed_s);
        self.lines.out_per_s = per_s(self.lines.sent, self.elapsed_s);
    }
}

pub fn secs(us: Micros) -> f64 {
    round(us as f64 / 1e6)
}

/// Three decimals are plenty for a report, and keep the JSON readable.
fn round(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outcome::End;

    /// A process's stats: `n` collars of which `lost` were closed with a
    /// BYE, RTT samples `rtts`.
    fn stats(n: u64, bye: u64, failed: u64, rtts: impl IntoIterator<Item = u64>) -> Stats {
        let mut s = Stats { attempted: n, established: n - failed, open_at_end: n - bye - failed, ..Stats::default() };
        for _ in 0..bye {
            s.ended(&End::Bye("shutdown".into()), true);
        }
        for _ in 0..failed {
            s.ended(&End::Failed(Failure::Refused), false);
        }
        for us in rtts {
            s.record_rtt(us);
            s.pongs_received += 1;
        }
        s.lines_in = 10 * n;
        s.heartbeats_received = n;
        s.connect_us.saturating_record(100);
        s
    }

    /// A run of `elapsed_s` seconds whose RTT loop ran for all but the
    /// first second and made `trips` round trips.
    fn timing(elapsed_s: u64, trips: u64) -> Timing {
        Timing {
            elapsed: elapsed_s * 1_000_000,
            connect_phase: 500_000,
            rtt_phase: (elapsed_s - 1) * 1_000_000,
            rtt_active: 5,
            rtt_round_trips: trips,
        }
    }

    #[test]
    fn one_process_summary_accounts_for_every_collar() {
        let s = Summary::new("127.0.0.1:3001", 120, &stats(100, 3, 2, [10, 20, 30]), timing(2, 3));
        let c = &s.connections;
        assert_eq!((c.attempted, c.established, c.failed, c.closed_by_server, c.lost), (100, 98, 2, 3, 3));
        assert_eq!(c.not_attempted, 20);
        assert_eq!(c.attempted, c.failed + c.closed_by_server + c.open_at_end + c.pending_at_end);
        assert_eq!(s.failed.refused, 2);
        assert_eq!(s.closed_by_server.bye["shutdown"], 3);
        assert_eq!(s.losses(), 5);
        assert_eq!(s.connects_per_s, 196.0);
        assert_eq!(s.lines.in_per_s, 500.0);
        assert_eq!(s.rtt.per_s, 3.0);
        assert_eq!((s.rtt_us.count, s.rtt_us.min, s.rtt_us.p50, s.rtt_us.max), (3, 10, 20, 30));
        assert_eq!(s.rtt_us.histogram, vec![(10, 1), (20, 1), (30, 1)]);
    }

    #[test]
    fn a_run_where_no_collar_connected_says_what_became_of_them() {
        let s = Summary::new("127.0.0.1:3001", 3, &stats(3, 0, 0, []), timing(2, 0));
        assert_eq!(s.none_connected(), None, "all three connected");
        let s = Summary::new("127.0.0.1:3001", 20, &stats(20, 0, 20, []), timing(2, 0));
        assert_eq!(s.none_connected().as_deref(), Some("no collar connected (20 failed: refused 20)"));

        let mut st = Stats { attempted: 8, ..Stats::default() };
        st.ended(&End::Failed(Failure::Refused), false);
        st.ended(&End::Failed(Failure::Timeout), false);
        st.ended(&End::Failed(Failure::Timeout), false);
        st.ended(&End::Bye("server-full".into()), false);
        st.ended(&End::WithoutBye, false);
        st.pending_at_end = 3;
        let s = Summary::new("127.0.0.1:3001", 10, &st, timing(2, 0));
        assert_eq!(
            s.none_connected().as_deref(),
            Some(
                "no collar connected (3 failed: refused 1, timeout 2; 2 closed by the gateway: \
                 BYE server-full 1, without BYE 1; 3 still connecting or identifying at the end; 2 not attempted)"
            )
        );
    }

    #[test]
    fn merging_adds_counts_and_keeps_real_percentiles() {
        // Process A saw fast round trips, process B slow ones: the merged
        // median is neither process's median, and not their average.
        let a = Summary::new("t", 1000, &stats(1000, 1, 0, (1..=900).map(|i| i * 10)), timing(3, 900));
        let b = Summary::new("t", 1000, &stats(1000, 0, 4, (1..=100).map(|i| 100_000 + i * 1000)), timing(4, 100));
        let merged = Summary::merge(&[a.clone(), b.clone()]).unwrap();

        assert_eq!(merged.processes, 2);
        assert_eq!(merged.collars, 2000);
        assert_eq!(merged.connections.attempted, 2000);
        assert_eq!(merged.connections.established, 1996);
        assert_eq!(merged.connections.failed, 4);
        assert_eq!(merged.connections.closed_by_server, 1);
        assert_eq!(merged.failed.refused, 4);
        assert_eq!(merged.closed_by_server.bye["shutdown"], 1);
        assert_eq!(merged.heartbeats.received, 2000);
        assert_eq!(merged.lines.received, 20_000);
        assert_eq!(merged.elapsed_s, 4.0, "the longest process");
        assert_eq!(merged.lines.in_per_s, 5000.0);
        assert_eq!(merged.rtt.active, 10);
        assert_eq!((a.rtt.per_s, b.rtt.per_s), (450.0, 33.333));
        assert_eq!(merged.rtt.per_s, 483.333, "each process's loop rate, added");

        // The merged percentiles are those of all samples together.
        let mut all = histogram();
        (1..=900).for_each(|i| all.saturating_record(i * 10));
        (1..=100).for_each(|i| all.saturating_record(100_000 + i * 1000));
        let rtt = &merged.rtt_us;
        assert_eq!(rtt.count, 1000);
        assert_eq!(rtt.p50, all.value_at_quantile(0.5));
        assert_eq!(rtt.p99, all.value_at_quantile(0.99));
        assert_eq!(rtt.p999, all.value_at_quantile(0.999));
        assert_eq!((rtt.min, rtt.max), (all.min(), all.max()));
        // p50 is sample 500 of 1000: 5000 µs (to 3 significant digits).
        assert!((4995..=5005).contains(&rtt.p50), "{}", rtt.p50);
        assert!(rtt.p99 > 100_000, "{}", rtt.p99);
        assert_eq!(merged.connect_latency_us.count, 2);
    }

    #[test]
    fn left_collars_and_tls_handshakes_are_counted_and_merged() {
        let part = |full, resumed, left| {
            let mut st = Stats { attempted: left + 1, established: left + 1, left, open_at_end: 1, ..Stats::default() };
            st.tls_handshakes = [full, 1, resumed];
            Summary::new("t", left + 1, &st, timing(2, 0))
        };
        let (a, b) = (part(1, 9, 10), part(2, 30, 33));
        assert_eq!(a.tls_handshakes, TlsHandshakes { full: 1, full_with_hello_retry: 1, resumed: 9 });
        let c = &a.connections;
        assert_eq!(c.attempted, c.failed + c.closed_by_server + c.left + c.open_at_end + c.pending_at_end);
        let merged = Summary::merge(&[a, b]).unwrap();
        assert_eq!(merged.tls_handshakes, TlsHandshakes { full: 3, full_with_hello_retry: 2, resumed: 39 });
        assert_eq!((merged.connections.left, merged.losses()), (43, 0));
        let json = serde_json::to_string(&merged).unwrap();
        assert!(json.contains("\"tls_handshakes\":{\"full\":3,\"full_with_hello_retry\":2,\"resumed\":39}"), "{json}");
        assert!(json.contains("\"lost\":0,\"left\":43,"), "{json}");
    }

    #[test]
    fn merging_one_part_changes_nothing_and_none_gives_none() {
        let a = Summary::new("t", 10, &stats(10, 0, 0, [5, 7]), timing(2, 2));
        assert_eq!(Summary::merge(std::slice::from_ref(&a)), Some(a));
        assert_eq!(Summary::merge(&[]), None);
    }

    #[test]
    fn a_summary_survives_json_with_its_field_names() {
        let s = Summary::new("127.0.0.1:3001", 10, &stats(10, 1, 1, [5, 7, 1_000_000]), timing(2, 3));
        let json = serde_json::to_string(&s).unwrap();
        for field in [
            "\"version\":1",
            "\"connections\":{\"attempted\":10,",
            "\"lines\":{\"in\":100,\"out\":0,",
            "\"closed_by_server\":{\"bye\":{\"shutdown\":1},\"without_bye\":0}",
            "\"addr_not_available\":0",
            "\"rtt_us\":{\"count\":3,",
            "\"histogram\":[[5,1],[7,1],",
        ] {
            assert!(json.contains(field), "{field} in {json}");
        }
        let back: Summary = serde_json::from_str(&json).unwrap();
        assert_eq!(back, s);
    }

    #[test]
    fn empty_latencies_are_all_zero() {
        let l = Latency::of(&histogram());
        assert_eq!(l, Latency::default());
        assert!(l.to_histogram().is_empty());
    }
}
