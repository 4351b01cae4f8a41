#!/usr/bin/env bash
# The README's test command: every test of the workspace, i.e. the gateway
# (unit, property and integration tests, doc tests) and tether-load (its
# unit tests, and tether-load/tests/fleet.rs, which runs the binary against
# an in-process gateway). Arguments are passed on to `cargo test`, e.g.
# `scripts/test.sh --release` or `scripts/test.sh -- --nocapture`.
set -euo pipefail
cd "$(dirname "$0")/.."
exec cargo test --workspace "$@"
