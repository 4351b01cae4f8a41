//! The run over time, for the HTML report (`--html`): the counters and the
//! round-trip percentiles sampled at a fixed interval, in bounded memory
//! (sans-IO).
//!
//! Each process has a [`Sampler`]: at the once-a-second progress tick it
//! takes a [`Sample`] when a sample time has come (the counters so far,
//! and the RTT histogram of the interval alone, as `[value, count]`
//! pairs). A worker sends its samples to the parent; the parent, or a
//! process running alone, adds them to a [`Timeline`], which merges the
//! samples of one interval from every process into one [`Point`]: counters
//! add up, and the interval's histograms merge, so the percentiles are
//! exact over all processes rather than an average of each one's.
//!
//! Memory: the interval is at least `--sample-interval` and long enough
//! that the run's `--duration` needs at most `--max-samples` points; a
//! point is a few dozen numbers. Samples waiting for a slower process are
//! held for a few intervals at most.

use std::collections::BTreeMap;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::collar::Micros;
use crate::progress::Progress;
use crate::stats::{Stats, histogram};

/// Intervals a sample may wait for the other processes' before its point
/// is made without them.
const MAX_PENDING: usize = 4;

/// The sample interval for a run of `duration`: `min_interval` (whole
/// seconds, at least one: samples are taken at the progress tick), or
/// longer so that at most `max_samples` cover the run.
pub fn interval(min_interval: Micros, duration: Micros, max_samples: u64) -> Micros {
    let second = 1_000_000;
    let floor = min_interval.div_ceil(second).max(1) * second;
    let spread = duration.div_ceil(max_samples.max(1)).div_ceil(second) * second;
    floor.max(spread)
}

/// One process's counters at the end of interval `index` (the interval
/// `((index-1)·interval, index·interval]`; the last one may be shorter),
/// and the round trips measured in it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    pub index: u64,
    pub at_us: Micros,
    pub counts: Progress,
    /// The interval's RTT histogram as `[value, count]` pairs.
    pub rtt: Vec<(u64, u64)>,
}

/// Takes a process's samples.
#[derive(Debug)]
pub struct Sampler {
    interval: Micros,
    next: u64,
    /// The RTT histogram at the previous sample, subtracted from the
    /// current one to get the interval's.
    before: Histogram<u64>,
}

impl Sampler {
    pub fn new(interval: Micros) -> Sampler {
        Sampler { interval: interval.max(1), next: 1, before: histogram() }
    }

    /// At a progress tick `at` into the run: the sample, if one is due.
    pub fn tick(&mut self, at: Micros, stats: &Stats) -> Option<Sample> {
        if at < self.next * self.interval {
            return None;
        }
        let index = self.next;
        self.next = at / self.interval + 1;
        Some(self.take(index, at, Progress::of(stats), stats))
    }

    /// At the end of the run (`stats` as the run returned them): the last
    /// sample, for the interval the run ended in.
    pub fn finish(&mut self, at: Micros, stats: &Stats) -> Sample {
        // The end of the run moves the online and connecting collars to
        // `open_at_end` and `pending_at_end`; the last point still shows
        // them as they were.
        let counts = Progress {
            online: stats.online + stats.open_at_end,
            in_flight: stats.in_flight + stats.pending_at_end,
            ..Progress::of(stats)
        };
        let index = self.next;
        self.next += 1;
        self.take(index, at, counts, stats)
    }

    fn take(&mut self, index: u64, at: Micros, counts: Progress, stats: &Stats) -> Sample {
        let mut interval = stats.rtt_us.clone();
        // Both come from the same histogram, recorded into only since.
        let _ = interval.subtract(&self.before);
        self.before = stats.rtt_us.clone();
        let rtt = interval.iter_recorded().map(|v| (v.value_iterated_to(), v.count_at_value())).collect();
        Sample { index, at_us: at, counts, rtt }
    }
}

/// The run at one sample time, over all processes. Counters are running
/// totals (rates are differences between points), except `online` and
/// `in_flight`, which are gauges; the RTT figures are the interval's own,
/// in microseconds (0 with no round trips in it).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Point {
    pub t_s: f64,
    pub attempted: u64,
    pub established: u64,
    pub online: u64,
    pub in_flight: u64,
    pub failed: u64,
    pub closed: u64,
    pub heartbeats: u64,
    pub lines_in: u64,
    pub lines_out: u64,
    pub rtt_count: u64,
    pub rtt_p50: u64,
    pub rtt_p90: u64,
    pub rtt_p99: u64,
    pub rtt_max: u64,
}

/// A sample time's samples so far.
#[derive(Debug)]
struct Pending {
    at_us: Micros,
    counts: Vec<Option<Progress>>,
    rtt: Vec<(u64, u64)>,
}

/// The points of a run, built from the samples of `sources` processes.
#[derive(Debug)]
pub struct Timeline {
    pub interval_us: Micros,
    pub points: Vec<Point>,
    /// Most points kept; points past it are dropped (and counted).
    max_points: usize,
    pub dropped: u64,
    /// Each process's latest counters (for a point it sent nothing to, as
    /// when it finished early).
    latest: Vec<Progress>,
    done: Vec<bool>,
    pending: BTreeMap<u64, Pending>,
    /// Scratch histogram for a point's percentiles.
    scratch: Histogram<u64>,
}

impl Timeline {
    pub fn new(interval_us: Micros, sources: usize, max_points: usize) -> Timeline {
        Timeline {
            interval_us,
            points: Vec::new(),
            max_points,
            dropped: 0,
            latest: vec![Progress::default(); sources],
            done: vec![false; sources],
            pending: BTreeMap::new(),
            scratch: histogram(),
        }
    }

    /// A sample from process `source`.
    pub fn add(&mut self, source: usize, sample: Sample) {
        if source >= self.latest.len() {
            return;
        }
        let sources = self.latest.len();
        let pending = self.pending.entry(sample.index).or_insert_with(|| Pending {
            at_us: 0,
            counts: vec![None; sources],
            rtt: Vec::new(),
        });
        pending.at_us = pending.at_us.max(sample.at_us);
        pending.counts[source] = Some(sample.counts);
        pending.rtt.extend(sample.rtt);
        self.settle(false);
    }

    /// Process `source` sends no more samples.
    pub fn done(&mut self, source: usize) {
        if let Some(done) = self.done.get_mut(source) {
            *done = true;
        }
        self.settle(false);
    }

    /// Every sample is in: the points still waiting are made.
    pub fn finish(mut self) -> Timeline {
        self.settle(true);
        self
    }

    /// Makes the points whose samples are all in (every process still
    /// running sent one), in order; with `all`, or when too many wait, the
    /// oldest regardless.
    fn settle(&mut self, all: bool) {
        loop {
            let waiting = self.pending.len();
            let Some(entry) = self.pending.first_entry() else { break };
            let complete = entry.get().counts.iter().zip(&self.done).all(|(c, &done)| c.is_some() || done);
            if !(all || complete || waiting > MAX_PENDING) {
                break;
            }
            let pending = entry.remove();
            let mut sum = Progress::default();
            for (latest, counts) in self.latest.iter_mut().zip(pending.counts) {
                if let Some(counts) = counts {
                    *latest = counts;
                }
                sum.add(latest);
            }
            self.scratch.reset();
            for (value, count) in pending.rtt {
                self.scratch.saturating_record_n(value.max(1), count);
            }
            let h = &self.scratch;
            let q = |q: f64| if h.is_empty() { 0 } else { h.value_at_quantile(q) };
            if self.points.len() >= self.max_points {
                self.dropped += 1;
                continue;
            }
            self.points.push(Point {
                t_s: pending.at_us as f64 / 1e6,
                attempted: sum.attempted,
                established: sum.established,
                online: sum.online,
                in_flight: sum.in_flight,
                failed: sum.failed,
                closed: sum.closed_by_server,
                heartbeats: sum.heartbeats,
                lines_in: sum.lines_in,
                lines_out: sum.lines_out,
                rtt_count: h.len(),
                rtt_p50: q(0.5),
                rtt_p90: q(0.9),
                rtt_p99: q(0.99),
                rtt_max: if h.is_empty() { 0 } else { h.max() },
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Micros = 1_000_000;

    #[test]
    fn the_interval_is_whole_seconds_and_bounds_the_points() {
        assert_eq!(interval(S, 10 * S, 3600), S);
        assert_eq!(interval(S / 2, 10 * S, 3600), S, "at least a second");
        assert_eq!(interval(2 * S + 1, 10 * S, 3600), 3 * S);
        assert_eq!(interval(S, 7200 * S, 3600), 2 * S);
        assert_eq!(interval(S, 7201 * S, 3600), 3 * S);
        assert_eq!(interval(S, 10 * S, 0), 10 * S, "no division by zero");
    }

    fn stats_with_rtts(rtts: &[u64], established: u64) -> Stats {
        let mut stats = Stats { established, online: established, ..Stats::default() };
        rtts.iter().for_each(|&us| stats.record_rtt(us));
        stats
    }

    #[test]
    fn a_sample_holds_the_intervals_round_trips_alone() {
        let mut sampler = Sampler::new(2 * S);
        let mut stats = stats_with_rtts(&[100, 200], 5);
        assert_eq!(sampler.tick(S, &stats), None, "not yet");
        let first = sampler.tick(2 * S + 300, &stats).expect("due");
        assert_eq!((first.index, first.at_us, first.counts.online), (1, 2 * S + 300, 5));
        assert_eq!(first.rtt, vec![(100, 1), (200, 1)]);
        stats.record_rtt(300);
        assert_eq!(sampler.tick(3 * S, &stats), None);
        let second = sampler.tick(4 * S + 10, &stats).expect("due");
        assert_eq!((second.index, second.rtt.clone()), (2, vec![(300, 1)]));
        // A late tick skips the interval it missed rather than bunching up.
        let third = sampler.tick(8 * S + 10, &stats).expect("due");
        assert_eq!((third.index, third.rtt.len()), (3, 0));
        assert_eq!(sampler.tick(9 * S, &stats), None);

        // At the end, the collars moved to open_at_end still count as online.
        stats.open_at_end = stats.online;
        stats.online = 0;
        let last = sampler.finish(9 * S + 500, &stats);
        assert_eq!((last.index, last.counts.online), (5, 5));
    }

    fn sample(index: u64, at_s: u64, established: u64, rtt: Vec<(u64, u64)>) -> Sample {
        let counts = Progress { established, online: established, ..Progress::default() };
        Sample { index, at_us: at_s * S, counts, rtt }
    }

    #[test]
    fn one_process_makes_one_point_a_sample() {
        let mut t = Timeline::new(S, 1, 100);
        t.add(0, sample(1, 1, 10, vec![(100, 98), (1000, 2)]));
        t.add(0, sample(2, 2, 20, vec![]));
        let t = t.finish();
        assert_eq!(t.points.len(), 2);
        let p = &t.points[0];
        assert_eq!((p.t_s, p.established, p.online), (1.0, 10, 10));
        assert_eq!((p.rtt_count, p.rtt_p50, p.rtt_p90, p.rtt_p99, p.rtt_max), (100, 100, 100, 1000, 1000));
        assert_eq!((t.points[1].rtt_count, t.points[1].rtt_p99), (0, 0));
    }

    #[test]
    fn processes_add_up_and_their_histograms_merge() {
        let mut t = Timeline::new(S, 2, 100);
        // Process 0: 99 fast round trips; process 1: one slow one (5003 is
        // the top of the bucket 5000 falls in, as the pairs give it). The
        // merged p99 is the 99th of 100, not an average of the two p99s.
        t.add(0, sample(1, 1, 10, vec![(100, 99)]));
        assert!(t.points.is_empty(), "waits for process 1");
        t.add(1, sample(1, 1, 7, vec![(5003, 1)]));
        assert_eq!(t.points.len(), 1);
        let p = &t.points[0];
        assert_eq!((p.established, p.rtt_count, p.rtt_p99, p.rtt_max), (17, 100, 100, 5003));

        // Process 1 finishes; the next points use its last counts.
        t.add(1, sample(2, 2, 8, vec![]));
        t.done(1);
        t.add(0, sample(2, 2, 12, vec![]));
        t.add(0, sample(3, 3, 13, vec![]));
        let t = t.finish();
        let established: Vec<u64> = t.points.iter().map(|p| p.established).collect();
        assert_eq!(established, [17, 20, 21]);
    }

    #[test]
    fn a_stalled_process_holds_back_only_a_few_points_and_memory_is_bounded() {
        let mut t = Timeline::new(S, 2, 6);
        for i in 1..=10 {
            t.add(0, sample(i, i, i, vec![]));
        }
        // Process 1 never reported: points are made without it once more
        // than MAX_PENDING wait, and never more than max_points.
        assert_eq!(t.points.len(), 10 - MAX_PENDING);
        let t = t.finish();
        assert_eq!(t.points.len(), 6);
        assert_eq!(t.dropped, 4);
    }
}
