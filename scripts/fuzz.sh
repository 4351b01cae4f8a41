#!/usr/bin/env bash
# Fuzz every sans-IO parser and session for SECONDS each (default 60).
#
# Usage: scripts/fuzz.sh [SECONDS] [TARGET ...]
#
# The targets are the functions of src/fuzz.rs (line_framer,
# device_session, http_request, http_session, percent, redis_session). With a nightly
# toolchain and cargo-fuzz installed, each runs under libFuzzer
# (fuzz/, `cargo +nightly fuzz run`), its corpus kept in fuzz/corpus/;
# otherwise the same functions are driven by proptest with inputs built
# from each protocol's tokens and arbitrary bytes (src/fuzz/tests.rs),
# in a release build. Either way it prints, per target, how long it ran
# and what it found, and exits non-zero on the first failure (the input
# is printed: make it a named regression test in src/fuzz/tests.rs).
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${1:-60}
shift || true
# Every target of src/fuzz.rs.
all=(line_framer device_session http_request http_session percent redis_session)
if [[ $# -gt 0 ]]; then targets=("$@"); else targets=("${all[@]}"); fi

if cargo +nightly fuzz --version >/dev/null 2>&1; then
    echo "cargo-fuzz on nightly: libFuzzer, ${seconds}s per target"
    for target in "${targets[@]}"; do
        start=$(date +%s)
        cargo +nightly fuzz run "$target" -- -max_total_time="$seconds" -print_final_stats=1
        echo "fuzz $target: ran $(( $(date +%s) - start )) s under libFuzzer, no crash"
    done
else
    echo "no nightly toolchain with cargo-fuzz: the proptest driver, ${seconds}s per target (release build)"
    log=$(mktemp)
    trap 'rm -f "$log"' EXIT
    for target in "${targets[@]}"; do
        status=0
        TETHER_FUZZ_SECS="$seconds" cargo test --release --quiet --lib "fuzz::tests::fuzz_${target}" \
            -- --exact --nocapture --test-threads 1 >"$log" 2>&1 || status=$?
        grep -E "^fuzz " "$log" || true
        if (( status != 0 )); then
            grep -A3 -E "panicked|input:" "$log" || tail -30 "$log"
            echo "fuzz $target: FAILED (the input above)" >&2
            exit "$status"
        fi
    done
fi
