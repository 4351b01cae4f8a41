//! Running as several processes: the parent's side (start the workers, add
//! up their progress, merge their summaries) and the worker's (report as
//! JSON lines on stdout).
//!
//! One process may hold only `RLIMIT_NOFILE` sockets, and the hard limit
//! may be out of reach, so `--processes P` runs this same binary P times,
//! each with its share of the collars, MACs, source addresses and rates
//! (see [`Share`]): the parent's own arguments, then the share's, which
//! override them.
//!
//! A worker writes one JSON [`Message`] per line on stdout: a
//! `{"type":"progress",…}` snapshot once a second, with `--html` a
//! `{"type":"sample",…}` at each sample time (see [`crate::timeline`]), and
//! one `{"type":"summary",…}` at the end. Its stderr is the parent's, so its
//! errors reach the user directly. The parent prints the sum of the latest
//! snapshots once a second, and merges the summaries at the end
//! ([`Summary::merge`]).
//!
//! SIGINT or SIGTERM stops the run early, not the report: the parent passes
//! the signal on and keeps collecting, and each worker stops, closes its
//! connections and sends its summary. A worker that has not reported by
//! the end of the run plus a grace period is killed, and the run fails.

use std::env;
use std::ffi::OsString;
use std::io::{self, BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::cli::Args;
use crate::fleet::{Fleet, Setup};
use crate::plan::Share;
use crate::progress::{Printer, Progress};
use crate::summary::Summary;
use crate::timeline::{Sample, Timeline};

/// How long after the end of the run the parent waits for the summaries.
const GRACE: Duration = Duration::from_secs(10);
/// A progress line waits for every worker's snapshot at most this long.
const LATE_LINE: Duration = Duration::from_millis(1500);

/// One line of a worker's stdout.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Message {
    Progress(Progress),
    /// With `--html`: a sample of the run for the report's timeline.
    Sample(Sample),
    Summary(Box<Summary>),
}

/// The worker's side: runs its share and reports on stdout.
pub fn work(args: &Args) -> Result<(), String> {
    let fleet = Fleet::new(Setup::from_args(args)?).map_err(|e| format!("cannot start: {e}"))?;
    let mut stdout = io::stdout().lock();
    let (mut sampler, _) = crate::sampling(args, 1);
    // A failed write means the parent is gone: the run stops.
    let (stats, timing) = fleet
        .run(|at, stats| {
            send(&mut stdout, &Message::Progress(Progress::of(stats)))?;
            match sampler.as_mut().and_then(|sampler| sampler.tick(at, stats)) {
                Some(sample) => send(&mut stdout, &Message::Sample(sample)),
                None => Ok(()),
            }
        })
        .map_err(|e| format!("event loop failed: {e}"))?;
    if let Some(sampler) = &mut sampler {
        let last = sampler.finish(timing.elapsed, &stats);
        send(&mut stdout, &Message::Sample(last)).map_err(|e| format!("cannot report: {e}"))?;
    }
    let summary = Summary::new(&args.target.to_string(), args.collars, &stats, timing);
    send(&mut stdout, &Message::Summary(Box::new(summary))).map_err(|e| format!("cannot report: {e}"))
}

fn send(out: &mut impl Write, message: &Message) -> io::Result<()> {
    serde_json::to_writer(&mut *out, message)?;
    out.write_all(b"\n")?;
    out.flush()
}

/// The parent's side: runs `args.processes` workers and returns the merged
/// summary, and with `--html` the timeline of their samples.
pub fn run(args: &Args) -> Result<(Summary, Option<Timeline>), String> {
    let interrupted = Arc::new(AtomicBool::new(false));
    for signal in [libc::SIGINT, libc::SIGTERM] {
        signal_hook::flag::register(signal, Arc::clone(&interrupted))
            .map_err(|e| format!("cannot watch for signals: {e}"))?;
    }
    let exe = env::current_exe().map_err(|e| format!("cannot find this program to start workers: {e}"))?;
    let own: Vec<OsString> = env::args_os().skip(1).collect();

    let (tx, rx) = mpsc::channel();
    let mut workers: Vec<Child> = Vec::new();
    for w in 0..args.processes {
        let share = Share::of(args, w);
        let spawned = Command::new(&exe)
            .args(&own)
            .args(share.worker_args())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn();
        let mut child = match spawned {
            Ok(child) => child,
            Err(e) => {
                stop(&mut workers);
                return Err(format!("cannot start worker {w}: {e}"));
            }
        };
        let stdout = child.stdout.take().expect("stdout is piped");
        let tx = tx.clone();
        // Blocking reads on a pipe per worker: a thread each is the
        // simplest correct way, and there are only a few.
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send((w as usize, Some(line))).is_err() {
                    return;
                }
            }
            let _ = tx.send((w as usize, None));
        });
        workers.push(child);
    }
    drop(tx);

    let (_, mut timeline) = crate::sampling(args, workers.len());
    let summaries = collect(args, &rx, &workers, &interrupted, &mut timeline);
    // Whatever happened, no worker outlives the parent: those that did not
    // report are killed (the others are exiting by themselves).
    for (child, summary) in workers.iter_mut().zip(&summaries) {
        if summary.is_none() {
            let _ = child.kill();
        }
    }
    let statuses: Vec<_> = workers.iter_mut().map(|child| child.wait()).collect();
    let mut parts = Vec::new();
    for (w, (summary, status)) in summaries.into_iter().zip(statuses).enumerate() {
        match (summary, status) {
            (Some(summary), _) => parts.push(summary),
            (None, Ok(status)) => return Err(format!("worker {w} ended ({status}) without a summary")),
            (None, Err(e)) => return Err(format!("worker {w} ended without a summary ({e})")),
        }
    }
    let summary = Summary::merge(&parts).ok_or_else(|| "no worker reported".to_owned())?;
    Ok((summary, timeline.map(Timeline::finish)))
}

/// Reads the workers' lines until each has closed its stdout (or time is
/// up). A progress line is printed once every running worker has sent a
/// new snapshot (they tick once a second on their own clocks), or when one
/// is late by more than a second.
fn collect(
    args: &Args,
    rx: &mpsc::Receiver<(usize, Option<String>)>,
    workers: &[Child],
    interrupted: &AtomicBool,
    timeline: &mut Option<Timeline>,
) -> Vec<Option<Summary>> {
    let n = workers.len();
    let started = Instant::now();
    // `None`: a run so long that its end is past what an Instant can hold.
    let give_up = started.checked_add(args.duration.saturating_add(GRACE));
    let mut latest = vec![Progress::default(); n];
    // Which workers sent a snapshot since the last line.
    let mut fresh = vec![false; n];
    let mut summaries: Vec<Option<Summary>> = vec![None; n];
    let mut open = n;
    let mut printer = Printer::new(args.collars);
    let mut last_line = started;
    let mut passed_on = false;
    while open > 0 {
        let now = Instant::now();
        if give_up.is_some_and(|give_up| now >= give_up) {
            eprintln!("tether-load: workers did not report within {GRACE:?} of the end of the run");
            break;
        }
        let overdue = last_line + LATE_LINE;
        let wake = give_up.map_or(overdue.max(now), |give_up| overdue.max(now).min(give_up));
        match rx.recv_timeout(wake - now) {
            Ok((w, Some(line))) => match serde_json::from_str(&line) {
                Ok(Message::Progress(p)) => {
                    latest[w] = p;
                    fresh[w] = true;
                }
                Ok(Message::Sample(sample)) => {
                    if let Some(timeline) = timeline {
                        timeline.add(w, sample);
                    }
                }
                Ok(Message::Summary(s)) => {
                    summaries[w] = Some(*s);
                    // A worker's last sample comes before its summary.
                    if let Some(timeline) = timeline {
                        timeline.done(w);
                    }
                }
                Err(e) => eprintln!("tether-load: worker {w} wrote an unreadable line ({e}): {line}"),
            },
            Ok((w, None)) => {
                open -= 1;
                if let Some(timeline) = timeline {
                    timeline.done(w);
                }
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break,
        }
        if interrupted.load(Ordering::Relaxed) && !passed_on {
            // A terminal's Ctrl-C reached the workers already; a SIGTERM
            // sent to the parent alone did not.
            passed_on = true;
            for child in workers {
                // SAFETY: kill has no memory-safety preconditions; the pid
                // is our own child's, not yet reaped.
                unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
            }
        }
        let running = summaries.iter().filter(|s| s.is_none()).count();
        let all_fresh = fresh.iter().zip(&summaries).all(|(&fresh, summary)| fresh || summary.is_some());
        let now = Instant::now();
        if running > 0 && fresh.contains(&true) && (all_fresh || now >= overdue) {
            let mut sum = Progress::default();
            latest.iter().for_each(|p| sum.add(p));
            let at = u64::try_from((now - started).as_micros()).unwrap_or(u64::MAX);
            let _ = writeln!(io::stderr(), "{}", printer.line(at, sum));
            fresh.fill(false);
            last_line = now;
        }
    }
    summaries
}

/// Kills the workers still running (they are our children, by pid).
fn stop(workers: &mut [Child]) {
    for child in workers {
        if let Ok(None) = child.try_wait() {
            let _ = child.kill();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_tagged_json_lines() {
        let line = serde_json::to_string(&Message::Progress(Progress { online: 4, ..Progress::default() })).unwrap();
        assert!(line.starts_with("{\"type\":\"progress\","), "{line}");
        assert!(!line.contains('\n'));
        match serde_json::from_str(&line).unwrap() {
            Message::Progress(p) => assert_eq!(p.online, 4),
            other => panic!("{other:?}"),
        }
    }
}
