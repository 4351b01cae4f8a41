//! libFuzzer on `tether::fuzz::redis_session` (see src/fuzz.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tether::fuzz::redis_session(data));
