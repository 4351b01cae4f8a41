//! The timing wheel with 100k timers: insert, cancel, and expire, the
//! three operations the reactor performs per connection deadline.
//!
//! Run: `cargo bench --bench wheel`

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tether::wheel::Wheel;

const TIMERS: usize = 100_000;
const TICK: Duration = Duration::from_millis(10);
const SLOTS: usize = 4096;

/// Deadlines spread over 60 s, as connections accepted over a minute.
fn deadlines() -> Vec<u64> {
    (0..TIMERS as u64).map(|i| (i * 7919) % 60_000).collect()
}

fn wheel(c: &mut Criterion) {
    let deadlines = deadlines();
    let mut group = c.benchmark_group("wheel_100k");
    group.throughput(Throughput::Elements(TIMERS as u64));

    group.bench_function("insert", |b| {
        b.iter(|| {
            let mut wheel = Wheel::new(TICK, SLOTS);
            wheel.reserve(TIMERS);
            for (i, &at) in deadlines.iter().enumerate() {
                black_box(wheel.insert(at, i));
            }
            wheel
        })
    });

    group.bench_function("cancel", |b| {
        b.iter_batched(
            || {
                let mut wheel = Wheel::new(TICK, SLOTS);
                let ids: Vec<_> = deadlines.iter().enumerate().map(|(i, &at)| wheel.insert(at, i)).collect();
                (wheel, ids)
            },
            |(mut wheel, ids)| {
                for id in ids {
                    black_box(wheel.cancel(id));
                }
                wheel
            },
            criterion::BatchSize::LargeInput,
        )
    });

    // Expire everything by advancing the clock in 10 ms steps, as the
    // reactor does when it wakes for each due tick.
    group.bench_function("expire", |b| {
        b.iter_batched(
            || {
                let mut wheel = Wheel::new(TICK, SLOTS);
                for (i, &at) in deadlines.iter().enumerate() {
                    wheel.insert(at, i);
                }
                wheel
            },
            |mut wheel| {
                let mut fired = Vec::with_capacity(64);
                let mut now = 0;
                while !wheel.is_empty() {
                    now += 10;
                    wheel.expire(now, &mut fired);
                    fired.clear();
                }
                wheel
            },
            criterion::BatchSize::LargeInput,
        )
    });

    // The lazy re-file the reactor does on every expiry of a live device:
    // the timer fires, is found not due, and is filed again further on.
    group.bench_function("expire_and_refile", |b| {
        let mut wheel = Wheel::new(TICK, SLOTS);
        for (i, &at) in deadlines.iter().enumerate() {
            wheel.insert(at, i);
        }
        let mut fired = Vec::with_capacity(4096);
        let mut now = 0u64;
        b.iter(|| {
            // One minute of wall time in 10 ms steps: each of the 100k
            // timers fires once and is re-filed 60 s later.
            for _ in 0..6000 {
                now += 10;
                wheel.expire(now, &mut fired);
                for &(_, i) in &fired {
                    wheel.insert(now + 60_000, i);
                }
                fired.clear();
            }
        })
    });
    group.finish();
}

criterion_group!(benches, wheel);
criterion_main!(benches);
