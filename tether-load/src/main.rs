//! `tether-load`: the load generator for tether. It simulates a fleet of
//! collars against a gateway and reports how the gateway held up.
//!
//! Each simulated collar connects to `--target`, sends `IDENTIFY:<MAC>`
//! with a MAC of its own, answers the gateway's heartbeat `PING` with
//! `PONG` and its `location` query with a plausible `LOCATION:`, and if
//! asked sends its own `PING`s and `LOCATION:` reports on a period. With
//! `--rtt`, once the fleet is connected, `--active` collars ping in a
//! closed loop to measure round-trip times and throughput. After
//! `--duration` everything is closed and the report printed: connection
//! counts, failures by kind, closes by the gateway by reason, connect,
//! handshake and round-trip latency percentiles, line rates, heartbeats.
//! A progress line goes to stderr every second.
//!
//! Like the gateway, a process is one thread around one mio `Poll`, with
//! no async runtime, and reuses the gateway library's connection tokens,
//! budgeted read loop, socket I/O outcomes, line framer, timing wheel, MAC
//! type and duration parser. Past one
//! process's descriptor limit, `--processes` runs several, and past one
//! source address's ports, `--source-ips` spreads connections over several.
//!
//! # Layout
//!
//! - `cli`: the flags, and the checks between them.
//! - `fleet`: the event loop: slab, tokens, timers, pacing, reads, writes.
//! - `collar`: one collar's state machine (sans-IO).
//! - `connect`: the non-blocking connect, bound to a source address.
//! - `pacing`: how many connects may start now (sans-IO).
//! - `outcome`: how a connection can end; error kinds.
//! - `stats`: the counters and histograms of one process.
//! - `summary`: the end-of-run summary, its JSON fields, merging.
//! - `report`: the summary as text.
//! - `progress`: the once-a-second progress line, summable over processes.
//! - `timeline`: the run sampled over time for the report (sans-IO).
//! - `html`: the self-contained HTML report (`--html`), its script and style
//!   in `html/`.
//! - `workers`: `--processes`: starting workers and collecting from them.
//! - `plan`: MACs, and each worker's share of the run (sans-IO).
//! - `sources`: parsing and sharing `--source-ips` (sans-IO).
//! - `random`: per-collar phases and positions from the collar's index.
//!
//! # Exit status
//!
//! - 0: the run completed and at least one collar connected (got `OK` to
//!   its `IDENTIFY`), whatever else it measured;
//! - 1: the run could not start or finish (bad flags, a worker that
//!   failed), or no collar connected, whatever the other flags: such a run
//!   measured nothing (a wrong `--target`, a gateway that is down or turns
//!   every collar away). The summary is still printed, and a line on stderr
//!   says what became of the collars (`tether-load: no collar connected
//!   (20 failed: refused 20)`);
//! - 2: with `--fail-on-loss`, some collar connected but at least one
//!   failed or was closed by the gateway before the end.
//!
//! The same text ends `--help` (`cli::EXIT_STATUS`).

mod cli;
mod collar;
mod connect;
mod fleet;
mod html;
mod outcome;
mod pacing;
mod plan;
mod progress;
mod random;
mod report;
mod sources;
mod stats;
mod summary;
mod timeline;
mod tls;
mod workers;

use std::io::{self, Write};
use std::process::ExitCode;

use clap::Parser;

use cli::Args;
use fleet::{Fleet, Setup};
use progress::{Printer, Progress};
use summary::Summary;
use timeline::{Sampler, Timeline};

/// Descriptors a process keeps for itself beyond its collars' sockets
/// (stdio, the poller, the signal pipe, a few spare).
const FD_RESERVE: u64 = 16;

fn main() -> ExitCode {
    let args = match Args::try_parse() {
        Ok(args) => args,
        Err(e) => {
            let _ = e.print();
            // Not clap's usual 2: that status means "collars were lost".
            return if e.use_stderr() { ExitCode::FAILURE } else { ExitCode::SUCCESS };
        }
    };
    if let Err(e) = args.check() {
        eprintln!("tether-load: {e}");
        return ExitCode::FAILURE;
    }
    match tether::net::raise_fd_limit() {
        Ok((_, limit)) => {
            let per_process = args.collars.div_ceil(u64::from(args.processes));
            if !args.worker && per_process + FD_RESERVE > limit.soft {
                eprintln!(
                    "tether-load: warning: {per_process} collars per process, but a process may open only {} \
                     files; the rest will fail with fd_limit (use more --processes)",
                    limit.soft
                );
            }
        }
        Err(e) => eprintln!("tether-load: cannot raise the file-descriptor limit: {e}"),
    }

    if args.worker {
        return match workers::work(&args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("tether-load worker: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let run = if args.processes > 1 { workers::run(&args) } else { run_alone(&args) };
    let (summary, timeline) = match run {
        Ok(run) => run,
        Err(e) => {
            eprintln!("tether-load: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Err(e) = print(&args, &summary) {
        eprintln!("tether-load: cannot write the summary: {e}");
        return ExitCode::FAILURE;
    }
    if let (Some(path), Some(timeline)) = (&args.html, timeline) {
        let command: Vec<String> = std::env::args().collect();
        let page = html::render(&args, &command.join(" "), &summary, &timeline);
        if let Err(e) = std::fs::write(path, page) {
            eprintln!("tether-load: cannot write the report to {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
    }
    let (status, why) = exit_status(&summary, args.fail_on_loss);
    if let Some(why) = why {
        eprintln!("tether-load: {why}");
    }
    ExitCode::from(status)
}

/// The exit status of a run that completed (see the module docs), and the
/// line that explains a failure, if any.
fn exit_status(summary: &Summary, fail_on_loss: bool) -> (u8, Option<String>) {
    if let Some(why) = summary.none_connected() {
        return (1, Some(why));
    }
    if fail_on_loss && summary.losses() > 0 { (2, None) } else { (0, None) }
}

/// The whole run in this process, progress lines on stderr; with
/// `--html`, its timeline too.
fn run_alone(args: &Args) -> Result<(Summary, Option<Timeline>), String> {
    let fleet = Fleet::new(Setup::from_args(args)?).map_err(|e| format!("cannot start: {e}"))?;
    let mut printer = Printer::new(args.collars);
    let (mut sampler, mut timeline) = sampling(args, 1);
    let (stats, timing) = fleet
        .run(|at, stats| {
            // A progress line that cannot be shown is no reason to stop.
            let _ = writeln!(io::stderr(), "{}", printer.line(at, Progress::of(stats)));
            if let (Some(sampler), Some(timeline)) = (&mut sampler, &mut timeline)
                && let Some(sample) = sampler.tick(at, stats)
            {
                timeline.add(0, sample);
            }
            Ok(())
        })
        .map_err(|e| format!("event loop failed: {e}"))?;
    let timeline = timeline.zip(sampler.as_mut()).map(|(mut timeline, sampler)| {
        timeline.add(0, sampler.finish(timing.elapsed, &stats));
        timeline.finish()
    });
    Ok((Summary::new(&args.target.to_string(), args.collars, &stats, timing), timeline))
}

/// With `--html`, a sampler for this process and a timeline for the
/// samples of `sources` processes, at the interval the flags give.
pub fn sampling(args: &Args, sources: usize) -> (Option<Sampler>, Option<Timeline>) {
    if args.html.is_none() {
        return (None, None);
    }
    let micros = |d: std::time::Duration| u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
    let interval = timeline::interval(micros(args.sample_interval), micros(args.duration), args.max_samples);
    // The run fits in --max-samples intervals; its end adds the last one.
    let points = usize::try_from(args.max_samples).unwrap_or(usize::MAX).saturating_add(1);
    (Some(Sampler::new(interval)), Some(Timeline::new(interval, sources, points)))
}

/// The summary on stdout: JSON with `--json`, else the text report. An
/// error (stdout closed) is returned, not a panic as `println!` would.
fn print(args: &Args, summary: &Summary) -> io::Result<()> {
    let mut out = io::stdout().lock();
    if args.json {
        serde_json::to_writer_pretty(&mut out, summary)?;
        writeln!(out)?;
    } else {
        out.write_all(report::text(summary).as_bytes())?;
    }
    out.flush()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outcome::{End, Failure};
    use crate::stats::Stats;
    use crate::summary::Timing;

    /// A run of `n` collars, of which `failed` were refused and `closed`
    /// were told `BYE shutdown` once online.
    fn summary(n: u64, failed: u64, closed: u64) -> Summary {
        let mut stats =
            Stats { attempted: n, established: n - failed, open_at_end: n - failed - closed, ..Stats::default() };
        (0..failed).for_each(|_| stats.ended(&End::Failed(Failure::Refused), false));
        (0..closed).for_each(|_| stats.ended(&End::Bye("shutdown".into()), true));
        Summary::new("127.0.0.1:3001", n, &stats, Timing { elapsed: 1_000_000, ..Timing::default() })
    }

    #[test]
    fn no_collar_connected_fails_whatever_the_flags_and_losses_fail_only_when_asked() {
        for fail_on_loss in [false, true] {
            let (status, why) = exit_status(&summary(20, 20, 0), fail_on_loss);
            assert_eq!(status, 1, "--fail-on-loss {fail_on_loss}");
            assert_eq!(why.as_deref(), Some("no collar connected (20 failed: refused 20)"));
        }
        assert_eq!(exit_status(&summary(20, 0, 0), false), (0, None));
        assert_eq!(exit_status(&summary(20, 0, 0), true), (0, None));
        assert_eq!(exit_status(&summary(20, 19, 0), false), (0, None), "one connected");
        assert_eq!(exit_status(&summary(20, 19, 0), true), (2, None));
        assert_eq!(exit_status(&summary(20, 0, 1), true), (2, None));
    }
}
