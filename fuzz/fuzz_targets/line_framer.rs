//! libFuzzer on `tether::fuzz::line_framer` (see src/fuzz.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tether::fuzz::line_framer(data));
