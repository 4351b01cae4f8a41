//! What device authentication costs the gateway per connect, computation
//! only: a fresh nonce (one `getrandom` call), and verifying a proof with
//! one and with two master keys (every listed key is tried). The rest of
//! its cost is one more round trip per handshake, which
//! `AUTH=1 scripts/loadtest.sh` measures.
//!
//! Run: `cargo bench --bench auth`

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use tether::device::Mac;
use tether::device::auth::{DeviceKeys, Nonce, prove};

fn auth(c: &mut Criterion) {
    let mac = Mac([0xCE, 0x96, 0xC2, 0x78, 0x27, 0xFC]);
    let one = DeviceKeys::new(&[[1; 32]]).unwrap();
    let two = DeviceKeys::new(&[[2; 32], [1; 32]]).unwrap();
    let nonce = Nonce([7; 16]);
    let proof = prove(&one.device_key(mac), &nonce);
    let mut group = c.benchmark_group("device_auth");
    group.bench_function("nonce", |b| b.iter(|| black_box(Nonce::fresh())));
    group.bench_function("verify_one_key", |b| b.iter(|| black_box(one.verify(black_box(mac), &nonce, &proof))));
    group.bench_function("verify_two_keys", |b| b.iter(|| black_box(two.verify(black_box(mac), &nonce, &proof))));
    group.finish();
}

criterion_group!(benches, auth);
criterion_main!(benches);
