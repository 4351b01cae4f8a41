//! libFuzzer on `tether::fuzz::http_session` (see src/fuzz.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tether::fuzz::http_session(data));
