//! libFuzzer on `tether::fuzz::percent_decoding` (see src/fuzz.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tether::fuzz::percent_decoding(data));
