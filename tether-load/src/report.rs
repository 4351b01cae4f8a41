//! The end-of-run report as text, for a person (`--json` is for scripts).

use std::fmt::Write as _;

use crate::summary::{Latency, Summary};

/// The report for `s`, several lines, each ending in `\n`.
pub fn text(s: &Summary) -> String {
    let mut out = String::new();
    let c = &s.connections;
    let processes = if s.processes == 1 { "1 process".to_owned() } else { format!("{} processes", s.processes) };
    let _ =
        writeln!(out, "tether-load: {} collars against {} ({processes}), {:.1} s", s.collars, s.target, s.elapsed_s);
    let _ = writeln!(
        out,
        "connections  attempted {}  established {}  failed {}  closed by server {}  lost {}",
        c.attempted, c.established, c.failed, c.closed_by_server, c.lost
    );
    let _ = writeln!(
        out,
        "             left {}  open at end {}  pending at end {}  not attempted {}",
        c.left, c.open_at_end, c.pending_at_end, c.not_attempted
    );
    if c.failed > 0 {
        let f = &s.failed;
        let _ = writeln!(
            out,
            "failed       refused {}  timeout {}  reset {}  addr-not-available {}  fd-limit {}  other {}",
            f.refused, f.timeout, f.reset, f.addr_not_available, f.fd_limit, f.other
        );
    }
    if c.closed_by_server > 0 {
        let mut line = String::from("closed       ");
        for (reason, n) in &s.closed_by_server.bye {
            let _ = write!(line, "BYE {reason} {n}  ");
        }
        let _ = write!(line, "without BYE {}", s.closed_by_server.without_bye);
        let _ = writeln!(out, "{line}");
    }
    let _ = writeln!(
        out,
        "connecting   {} established in {:.3} s: {:.0}/s",
        c.established, s.connect_phase_s, s.connects_per_s
    );
    let t = &s.tls_handshakes;
    let handshakes = t.full + t.full_with_hello_retry + t.resumed;
    if handshakes > 0 {
        let _ = writeln!(
            out,
            "tls          handshakes {handshakes}: full {}  full after HelloRetryRequest {}  resumed {} ({:.1}%)",
            t.full,
            t.full_with_hello_retry,
            t.resumed,
            t.resumed as f64 * 100.0 / handshakes as f64
        );
    }
    latency(&mut out, "connect", &s.connect_latency_us);
    latency(&mut out, "handshake", &s.handshake_latency_us);
    latency(&mut out, "rtt", &s.rtt_us);
    if s.rtt.active > 0 {
        let _ = writeln!(
            out,
            "rtt loop     {} collars: {:.0} round trips/s over {:.1} s",
            s.rtt.active, s.rtt.per_s, s.rtt.phase_s
        );
    }
    let _ = writeln!(
        out,
        "lines        in {} ({:.0}/s)  out {} ({:.0}/s)",
        s.lines.received, s.lines.in_per_s, s.lines.sent, s.lines.out_per_s
    );
    let _ = writeln!(
        out,
        "gateway      heartbeat PINGs {} answered {}  location queries {} answered {}",
        s.heartbeats.received, s.heartbeats.answered, s.location_queries.received, s.location_queries.answered
    );
    let _ = writeln!(
        out,
        "collars      PINGs {} PONGs {} skipped {}  reports {}  ERR received {}  unexpected lines {}",
        s.pings.sent, s.pings.pongs, s.pings.skipped, s.reports_sent, s.errors_received, s.unexpected_lines
    );
    out
}

fn latency(out: &mut String, name: &str, l: &Latency) {
    if l.count == 0 {
        let _ = writeln!(out, "{name:<12} no samples");
        return;
    }
    let _ = writeln!(
        out,
        "{name:<12} p50 {}  p90 {}  p99 {}  p99.9 {}  max {}  ({} samples)",
        us(l.p50),
        us(l.p90),
        us(l.p99),
        us(l.p999),
        us(l.max),
        l.count
    );
}

/// A duration in microseconds, in the unit that reads best.
pub fn us(us: u64) -> String {
    match us {
        0..1_000 => format!("{us}us"),
        1_000..1_000_000 => format!("{:.2}ms", us as f64 / 1e3),
        _ => format!("{:.2}s", us as f64 / 1e6),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::Stats;
    use crate::summary::Timing;

    #[test]
    fn durations_read_well() {
        assert_eq!(us(87), "87us");
        assert_eq!(us(1_234), "1.23ms");
        assert_eq!(us(2_500_000), "2.50s");
    }

    #[test]
    fn the_report_names_what_went_wrong_only_when_something_did() {
        let mut stats = Stats { attempted: 3, established: 3, open_at_end: 3, ..Stats::default() };
        stats.rtt_us.saturating_record(40);
        let timing = Timing { elapsed: 2_000_000, connect_phase: 1_000, ..Timing::default() };
        let report = text(&Summary::new("127.0.0.1:3001", 3, &stats, timing));
        assert!(report.contains("established 3"), "{report}");
        assert!(report.contains("rtt          p50 40us"), "{report}");
        assert!(report.contains("handshake    no samples"), "{report}");
        assert!(!report.contains("refused") && !report.contains("without BYE"), "{report}");
        assert!(!report.contains("tls "), "no TLS line without TLS handshakes: {report}");

        stats.ended(&crate::outcome::End::Bye("shutdown".into()), true);
        let report = text(&Summary::new("127.0.0.1:3001", 3, &stats, timing));
        assert!(report.contains("BYE shutdown 1  without BYE 0"), "{report}");

        stats.tls_handshakes = [1, 0, 3];
        let report = text(&Summary::new("127.0.0.1:3001", 3, &stats, timing));
        assert!(
            report.contains("tls          handshakes 4: full 1  full after HelloRetryRequest 0  resumed 3 (75.0%)"),
            "{report}"
        );
    }
}
