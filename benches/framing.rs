//! Line framing throughput: how many bytes per second `LineFramer::feed`
//! turns into lines, for realistic device traffic cut into reads of
//! different sizes.
//!
//! Run: `cargo bench --bench framing`

use std::hint::black_box;
use std::ops::ControlFlow;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use tether::device::LineFramer;

/// About 1 MiB of mixed device lines, as a fleet would send them.
fn traffic() -> Vec<u8> {
    let lines: [&[u8]; 4] = [b"PING\n", b"PONG\r\n", b"LOCATION:48.856613,2.352222\n", b"IDENTIFY:CE:96:C2:78:27:FC\n"];
    let mut out = Vec::with_capacity(1 << 20);
    let mut i = 0;
    while out.len() < 1 << 20 {
        out.extend_from_slice(lines[i % lines.len()]);
        i += 1;
    }
    out
}

fn framing(c: &mut Criterion) {
    let stream = traffic();
    let mut group = c.benchmark_group("framing");
    group.throughput(Throughput::Bytes(stream.len() as u64));
    // 64 KiB is the reactor's read size; 7 bytes splits almost every line.
    for read_size in [65536usize, 1500, 7] {
        group.bench_with_input(BenchmarkId::new("read_size", read_size), &read_size, |b, &size| {
            b.iter(|| {
                let mut framer = LineFramer::default();
                let mut lines = 0usize;
                for chunk in stream.chunks(size) {
                    framer
                        .feed(black_box(chunk), 1024, |line| {
                            lines += black_box(line).len();
                            ControlFlow::Continue(())
                        })
                        .unwrap();
                }
                lines
            })
        });
    }
    group.finish();
}

criterion_group!(benches, framing);
criterion_main!(benches);
