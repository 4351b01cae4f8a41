//! The supervisor of `--workers N`: N worker processes sharing the two
//! ports, each one the whole gateway on one thread, started again when they
//! die, and drained together on SIGINT/SIGTERM.
//!
//! One process holds at most as many connections as its file-descriptor
//! limit allows; workers multiply that without sharing anything in memory.
//! Each worker is the same binary with the same flags and a hidden
//! `--worker-index I`: it binds both listeners with `SO_REUSEPORT` (the
//! kernel spreads new connections between the workers' accept queues by a
//! hash of their addresses, see `net`), raises its own fd limit, and says
//! `worker I:` at the start of each log line. The supervisor serves no
//! connection itself.
//!
//! This file holds the decisions, written as a plain state machine with
//! `now` passed in so that the tests run no process: which worker to start
//! and when ([`Supervisor::due`]), the restart back-off
//! ([`Supervisor::ended`]), what a stop signal does ([`Supervisor::signal`])
//! and when to exit, with which status ([`Supervisor::exit_status`]).
//! [`shares`] says how many workers `auto` means and what each may hold;
//! `process` does the rest with real processes (spawning, reaping,
//! passing signals on), in a loop that sleeps until a signal (a child's
//! exit is SIGCHLD) or the next restart is due, never polling.

mod process;
pub mod shares;

use std::time::{Duration, Instant};

pub use process::{run, worker_args};
pub use shares::{Shares, share};

use crate::config::Config;

/// The status a worker exits with when it cannot start at all (it cannot
/// bind, say): `EX_CONFIG` of sysexits.h. Starting it again would not help,
/// so the first time it happens the supervisor gives up.
pub const CANNOT_START: u8 = 78;

/// When a worker that died is started again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// The delay after a first death; each further death doubles it.
    pub first_delay: Duration,
    /// The longest delay.
    pub max_delay: Duration,
    /// A worker that was up this long before it died starts over at
    /// `first_delay`.
    pub stable_after: Duration,
}

impl Policy {
    pub fn of(config: &Config) -> Policy {
        Policy {
            first_delay: config.worker_restart_delay,
            max_delay: config.worker_restart_max_delay.max(config.worker_restart_delay),
            stable_after: config.worker_stable_after,
        }
    }
}

/// How a worker process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// It exited with this status.
    Exited(i32),
    /// This signal killed it.
    Killed(i32),
    /// It could not be spawned (fork or exec failed).
    NotSpawned,
}

/// What becomes of a worker that ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// It is started again after `after`. `restarts` counts this worker's
    /// restarts, `total` those of all workers, this one included.
    Restart { after: Duration, restarts: u64, total: u64 },
    /// The workers are stopping: it is not started again. `drained` says
    /// whether it ended as a drained worker does (status 0).
    Stopped { drained: bool },
    /// It could not start the first time: the others are to be stopped
    /// (SIGTERM), and the supervisor exits with status 1.
    GiveUp,
}

/// What to do with a stop signal: pass it on to every running worker in
/// both cases, which then drains or, at its second signal, exits at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Relay {
    /// The first: every worker drains.
    Drain,
    /// A second one: every worker exits now, and so does the supervisor.
    Force,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Running since then.
    Up { since: Instant },
    /// To be started at that time.
    Waiting { until: Instant },
    /// Ended and not to be started again (only while stopping).
    Gone,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stopping {
    /// The first stop signal: the workers drain.
    Drain,
    /// A second stop signal (its number): the workers exit at once.
    Force(i32),
    /// A worker could not start: the others are stopped.
    GaveUp,
}

#[derive(Debug, Clone, Copy)]
struct Worker {
    state: State,
    /// The delay before its next restart.
    delay: Duration,
    /// Times it was started (spawning counts, even if exec then failed).
    starts: u64,
}

/// The supervisor's state: each worker's, and whether they are stopping.
#[derive(Debug)]
pub struct Supervisor {
    policy: Policy,
    workers: Vec<Worker>,
    stopping: Option<Stopping>,
    /// Restarts of all workers so far.
    restarts: u64,
    /// Workers that ended while draining other than as a drained worker.
    undrained: usize,
}

impl Supervisor {
    /// `count` workers, all due at `now`.
    pub fn new(count: usize, policy: Policy, now: Instant) -> Supervisor {
        let worker = Worker { state: State::Waiting { until: now }, delay: policy.first_delay, starts: 0 };
        Supervisor { policy, workers: vec![worker; count], stopping: None, restarts: 0, undrained: 0 }
    }

    /// The workers to start now (each then reported to [`started`]).
    ///
    /// [`started`]: Supervisor::started
    pub fn due(&self, now: Instant) -> Vec<usize> {
        let due = |w: &Worker| matches!(w.state, State::Waiting { until } if until <= now);
        self.workers.iter().enumerate().filter(|(_, w)| due(w)).map(|(i, _)| i).collect()
    }

    /// When the next worker is due, if one is waiting: how long the
    /// supervisor may sleep when no signal comes.
    pub fn next_start(&self) -> Option<Instant> {
        self.workers
            .iter()
            .filter_map(|w| match w.state {
                State::Waiting { until } => Some(until),
                _ => None,
            })
            .min()
    }

    /// Worker `index` was started at `now`.
    pub fn started(&mut self, index: usize, now: Instant) {
        let worker = &mut self.workers[index];
        worker.state = State::Up { since: now };
        worker.starts += 1;
    }

    /// Worker `index` ended at `now`, as `how`.
    pub fn ended(&mut self, index: usize, how: Ending, now: Instant) -> Verdict {
        let policy = self.policy;
        let worker = &mut self.workers[index];
        let State::Up { since } = worker.state else {
            unreachable!("worker {index} ended but was not running");
        };
        if let Some(stopping) = self.stopping {
            worker.state = State::Gone;
            // A worker killed by the stop signal passed on to it was still
            // starting (the binary watches for signals once it has bound
            // its listeners), so it was not serving anyone: it had nothing
            // to drain.
            let drained = matches!(
                (how, stopping),
                (Ending::Exited(0), _) | (Ending::Killed(libc::SIGTERM | libc::SIGINT), Stopping::Drain)
            );
            if !drained {
                self.undrained += 1;
            }
            return Verdict::Stopped { drained };
        }
        if how == Ending::Exited(i32::from(CANNOT_START)) && worker.starts == 1 {
            worker.state = State::Gone;
            self.stop(Stopping::GaveUp);
            return Verdict::GiveUp;
        }
        if now.saturating_duration_since(since) >= policy.stable_after {
            worker.delay = policy.first_delay;
        }
        let after = worker.delay;
        worker.delay = (worker.delay * 2).min(policy.max_delay);
        worker.state = State::Waiting { until: now + after };
        self.restarts += 1;
        Verdict::Restart { after, restarts: worker.starts, total: self.restarts }
    }

    /// A stop signal (SIGINT or SIGTERM) came; pass it on to every running
    /// worker.
    pub fn signal(&mut self, signal: i32) -> Relay {
        match self.stopping {
            None => {
                self.stop(Stopping::Drain);
                Relay::Drain
            }
            Some(_) => {
                self.stopping = Some(Stopping::Force(signal));
                Relay::Force
            }
        }
    }

    fn stop(&mut self, why: Stopping) {
        self.stopping = Some(why);
        // A worker waiting for its restart is not started again.
        for worker in &mut self.workers {
            if let State::Waiting { .. } = worker.state {
                worker.state = State::Gone;
            }
        }
    }

    /// Once every worker has ended for good, the supervisor's exit status:
    /// 0 if all drained, 1 if one did not (or one could not start), 128 +
    /// the signal after a second stop signal (130, 143: as a single
    /// process).
    pub fn exit_status(&self) -> Option<u8> {
        if self.workers.iter().any(|w| w.state != State::Gone) {
            return None;
        }
        Some(match self.stopping {
            Some(Stopping::Force(signal)) => u8::try_from(128 + signal).unwrap_or(1),
            Some(Stopping::Drain) if self.undrained == 0 => 0,
            _ => 1,
        })
    }

    /// How many times worker `index` was restarted (its starts after the
    /// first).
    pub fn restarts_of(&self, index: usize) -> u64 {
        self.workers[index].starts.saturating_sub(1)
    }

    /// Restarts of all workers so far.
    pub fn restarts(&self) -> u64 {
        self.restarts
    }

    /// Whether a stop signal came or the supervisor gave up.
    pub fn stopping(&self) -> bool {
        self.stopping.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn policy() -> Policy {
        Policy { first_delay: 100 * MS, max_delay: 1000 * MS, stable_after: 5000 * MS }
    }

    /// A supervisor of `count` workers, all started at `t0`.
    fn running(count: usize) -> (Supervisor, Instant) {
        let t0 = Instant::now();
        let mut sup = Supervisor::new(count, policy(), t0);
        assert_eq!(sup.due(t0), (0..count).collect::<Vec<_>>());
        for i in 0..count {
            sup.started(i, t0);
        }
        assert_eq!(sup.due(t0), Vec::<usize>::new());
        assert_eq!(sup.next_start(), None, "nothing to wake up for");
        (sup, t0)
    }

    fn restart_after(verdict: Verdict) -> Duration {
        match verdict {
            Verdict::Restart { after, .. } => after,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_worker_that_dies_is_started_again_after_a_delay_that_doubles_up_to_the_cap() {
        let (mut sup, t0) = running(2);
        let mut now = t0 + 10 * MS;
        let mut delays = Vec::new();
        for n in 1..=6 {
            let verdict = sup.ended(1, Ending::Killed(libc::SIGKILL), now);
            let after = restart_after(verdict);
            assert_eq!(verdict, Verdict::Restart { after, restarts: n, total: n });
            delays.push(after.as_millis());
            // Not before its time, and only that one.
            assert_eq!(sup.next_start(), Some(now + after));
            assert_eq!(sup.due(now + after - MS), Vec::<usize>::new());
            now += after;
            assert_eq!(sup.due(now), vec![1]);
            sup.started(1, now);
            now += 10 * MS;
        }
        assert_eq!(delays, [100, 200, 400, 800, 1000, 1000]);
        assert_eq!(sup.restarts(), 6);
    }

    #[test]
    fn the_back_off_starts_over_once_a_worker_stayed_up_long_enough() {
        let (mut sup, t0) = running(1);
        assert_eq!(restart_after(sup.ended(0, Ending::Exited(101), t0 + MS)), 100 * MS);
        sup.started(0, t0 + 101 * MS);
        assert_eq!(restart_after(sup.ended(0, Ending::Exited(101), t0 + 102 * MS)), 200 * MS);
        let since = t0 + 302 * MS;
        sup.started(0, since);
        // Just short of stable: the back-off goes on.
        assert_eq!(restart_after(sup.ended(0, Ending::Exited(101), since + 4999 * MS)), 400 * MS);
        let since = since + 5399 * MS;
        sup.started(0, since);
        assert_eq!(restart_after(sup.ended(0, Ending::Killed(libc::SIGSEGV), since + 5000 * MS)), 100 * MS);
    }

    #[test]
    fn each_worker_has_its_own_back_off_and_the_total_counts_them_all() {
        let (mut sup, t0) = running(3);
        let v = sup.ended(2, Ending::Exited(1), t0 + MS);
        assert_eq!(v, Verdict::Restart { after: 100 * MS, restarts: 1, total: 1 });
        let v = sup.ended(0, Ending::Exited(0), t0 + 2 * MS);
        assert_eq!(v, Verdict::Restart { after: 100 * MS, restarts: 1, total: 2 }, "exit 0 unasked is a death too");
        // Both due at their own times; the supervisor sleeps until the first.
        assert_eq!(sup.next_start(), Some(t0 + 101 * MS));
        assert_eq!(sup.due(t0 + 101 * MS), vec![2]);
        assert_eq!(sup.due(t0 + 102 * MS), vec![0, 2]);
    }

    #[test]
    fn a_failed_spawn_is_retried_with_the_back_off() {
        let (mut sup, t0) = running(1);
        assert_eq!(restart_after(sup.ended(0, Ending::NotSpawned, t0)), 100 * MS);
    }

    #[test]
    fn the_first_signal_drains_every_worker_and_exit_is_zero_when_all_drained() {
        let (mut sup, t0) = running(3);
        // One is waiting for its restart when the signal comes.
        sup.ended(1, Ending::Killed(libc::SIGKILL), t0 + MS);
        assert_eq!(sup.signal(libc::SIGTERM), Relay::Drain);
        assert!(sup.stopping());
        assert_eq!(sup.next_start(), None, "not started again");
        assert_eq!(sup.due(t0 + 1000 * MS), Vec::<usize>::new());
        assert_eq!(sup.ended(0, Ending::Exited(0), t0 + 2 * MS), Verdict::Stopped { drained: true });
        assert_eq!(sup.exit_status(), None, "one still draining");
        assert_eq!(sup.ended(2, Ending::Exited(0), t0 + 3 * MS), Verdict::Stopped { drained: true });
        assert_eq!(sup.exit_status(), Some(0));
        assert_eq!(sup.restarts(), 1);
    }

    #[test]
    fn a_worker_that_does_not_drain_makes_the_exit_status_one() {
        let (mut sup, t0) = running(2);
        sup.signal(libc::SIGINT);
        assert_eq!(sup.ended(0, Ending::Killed(libc::SIGSEGV), t0), Verdict::Stopped { drained: false });
        assert_eq!(sup.ended(1, Ending::Exited(0), t0), Verdict::Stopped { drained: true });
        assert_eq!(sup.exit_status(), Some(1));
    }

    #[test]
    fn a_worker_killed_by_the_stop_signal_before_it_set_up_its_handler_had_nothing_to_drain() {
        let (mut sup, t0) = running(2);
        sup.signal(libc::SIGTERM);
        assert_eq!(sup.ended(0, Ending::Killed(libc::SIGTERM), t0), Verdict::Stopped { drained: true });
        assert_eq!(sup.ended(1, Ending::Exited(0), t0), Verdict::Stopped { drained: true });
        assert_eq!(sup.exit_status(), Some(0));
    }

    #[test]
    fn a_second_signal_forces_and_the_status_says_which() {
        for (signal, status) in [(libc::SIGINT, 130), (libc::SIGTERM, 143)] {
            let (mut sup, t0) = running(2);
            assert_eq!(sup.signal(signal), Relay::Drain);
            assert_eq!(sup.signal(signal), Relay::Force);
            assert_eq!(sup.ended(0, Ending::Exited(status), t0), Verdict::Stopped { drained: false });
            assert_eq!(sup.exit_status(), None);
            sup.ended(1, Ending::Exited(status), t0);
            assert_eq!(sup.exit_status(), Some(status as u8));
        }
    }

    #[test]
    fn a_worker_that_cannot_start_the_first_time_stops_everything() {
        let (mut sup, t0) = running(3);
        let cannot = Ending::Exited(i32::from(CANNOT_START));
        // The others' first start succeeded; one of them dies as usual.
        assert_eq!(restart_after(sup.ended(0, Ending::Killed(libc::SIGKILL), t0)), 100 * MS);
        assert_eq!(sup.ended(1, cannot, t0), Verdict::GiveUp);
        assert!(sup.stopping());
        assert_eq!(sup.next_start(), None, "the dead one is not restarted");
        assert_eq!(sup.ended(2, Ending::Exited(0), t0), Verdict::Stopped { drained: true });
        assert_eq!(sup.exit_status(), Some(1), "gave up");
    }

    #[test]
    fn a_restarted_worker_that_cannot_start_is_retried() {
        let (mut sup, t0) = running(1);
        sup.ended(0, Ending::Killed(libc::SIGKILL), t0);
        sup.started(0, t0 + 100 * MS);
        let cannot = Ending::Exited(i32::from(CANNOT_START));
        assert_eq!(restart_after(sup.ended(0, cannot, t0 + 101 * MS)), 200 * MS, "descriptors may come back");
    }

    #[test]
    fn the_max_delay_is_at_least_the_first() {
        let config = Config {
            worker_restart_delay: Duration::from_secs(5),
            worker_restart_max_delay: Duration::from_secs(1),
            ..Config::default()
        };
        let policy = Policy::of(&config);
        assert_eq!((policy.first_delay, policy.max_delay), (Duration::from_secs(5), Duration::from_secs(5)));
    }
}
