#!/usr/bin/env bash
# The README's test command: every test of the workspace, i.e. the gateway
# (unit, property and integration tests, doc tests) and tether-load (its
# unit tests, and tether-load/tests/fleet.rs, which runs the binary against
# an in-process gateway). Arguments are passed on to `cargo test`, e.g.
# `scripts/test.sh --release` or `scripts/test.sh -- --nocapture`.
#
# Some tests need programs beyond the toolchain (see `PACKAGES` below). This
# script installs the missing ones with apt-get, and sets
# TETHER_TEST_REQUIRE_ALL=1, under which such a test fails instead of
# printing that it skipped: a green run here never hides a skip. Run by hand
# (`cargo test`) without a package, the test says so and skips.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian package, and a program of it that must be on PATH.
PACKAGES=(
    "redis-server redis-server"   # scale-out: the directory, bus and history
    "nftables nft"                # dead peers: packet loss in namespaces
    "iproute2 ip"                 # dead peers: bringing up lo in a namespace
    "chromium chromium"           # the dashboard, in a real browser
    "chromium-driver chromedriver"
    "systemd systemd-analyze"       # the service unit, checked by systemd-analyze verify
)

missing=()
for entry in "${PACKAGES[@]}"; do
    read -r package program <<<"$entry"
    command -v "$program" >/dev/null 2>&1 || missing+=("$package")
done
if ((${#missing[@]})); then
    if [[ $(id -u) -ne 0 ]]; then
        echo "scripts/test.sh: missing packages (${missing[*]}) and not root to install them" >&2
        exit 1
    fi
    echo "scripts/test.sh: installing ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

export TETHER_TEST_REQUIRE_ALL=1
exec cargo test --workspace "$@"
