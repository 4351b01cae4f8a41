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
//! no async runtime, and reuses the gateway library's line framer, timing
//! wheel, socket I/O outcomes, MAC type and duration parser. Past one
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
//! - `workers`: `--processes`: starting workers and collecting from them.
//! - `plan`: MACs, and each worker's share of the run (sans-IO).
//! - `sources`: parsing and sharing `--source-ips` (sans-IO).
//! - `random`: per-collar phases and positions from the collar's index.
//!
//! # Exit status
//!
//! 0 when the run completed (whatever it measured), 1 when it could not run
//! (bad flags, a worker that failed), 2 with `--fail-on-loss` when any
//! collar failed or was closed by the gateway before the end.

mod cli;
mod collar;
mod connect;
mod fleet;
mod outcome;
mod pacing;
mod plan;
mod progress;
mod random;
mod report;
mod sources;
mod stats;
mod summary;
mod workers;

use std::io::{self, Write};
use std::process::ExitCode;

use clap::Parser;

use cli::Args;
use fleet::{Fleet, Setup};
use progress::{Printer, Progress};
use summary::Summary;

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
    let summary = if args.processes > 1 { workers::run(&args) } else { run_alone(&args) };
    let summary = match summary {
        Ok(summary) => summary,
        Err(e) => {
            eprintln!("tether-load: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Err(e) = print(&args, &summary) {
        eprintln!("tether-load: cannot write the summary: {e}");
        return ExitCode::FAILURE;
    }
    if args.fail_on_loss && summary.losses() > 0 { ExitCode::from(2) } else { ExitCode::SUCCESS }
}

/// The whole run in this process, progress lines on stderr.
fn run_alone(args: &Args) -> Result<Summary, String> {
    let fleet = Fleet::new(Setup::from_args(args)).map_err(|e| format!("cannot start: {e}"))?;
    let mut printer = Printer::new(args.collars);
    let (stats, timing) = fleet
        .run(|at, stats| {
            // A progress line that cannot be shown is no reason to stop.
            let _ = writeln!(io::stderr(), "{}", printer.line(at, Progress::of(stats)));
            Ok(())
        })
        .map_err(|e| format!("event loop failed: {e}"))?;
    Ok(Summary::new(&args.target.to_string(), args.collars, &stats, timing))
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
