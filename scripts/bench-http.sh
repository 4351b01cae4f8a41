#!/usr/bin/env bash
# GET /health under wrk with keep-alive: requests/s and latency percentiles.
#
# Usage: scripts/bench-http.sh [connections] [seconds]   (default 64, 10)
# Environment: TETHER_BIN, the gateway binary (default target/release/tether,
# built here): set it to measure another build the same way.
# Needs wrk (Debian: apt-get install wrk). Traffic stays on 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."
conns=${1:-64}
secs=${2:-10}
command -v wrk >/dev/null || { echo "wrk not found (apt-get install wrk)" >&2; exit 1; }

tether_bin=${TETHER_BIN:-target/release/tether}
[[ -n "${TETHER_BIN:-}" ]] || cargo build --release --quiet
# wrk's connections all come from 127.0.0.1; a build that limits HTTP
# connections per address (--http-max-per-ip) is told not to.
per_ip=()
[[ "$("$tether_bin" --help)" == *--http-max-per-ip* ]] && per_ip=(--http-max-per-ip 0)
port=$((20000 + RANDOM % 20000))
log=$(mktemp)
RUST_LOG=warn "$tether_bin" --device-listen 127.0.0.1:0 --http-listen "127.0.0.1:$port" \
    --stats-interval 0 --max-http-connections $((conns + 16)) "${per_ip[@]}" 2>"$log" &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -f "$log" "$log.wrk"' EXIT
for _ in $(seq 50); do
    curl -sf "http://127.0.0.1:$port/health" >/dev/null 2>&1 && break
    sleep 0.1
done

echo "$tether_bin pid $pid ${per_ip[*]}, $(nproc) cores; wrk: 1 thread, $conns keep-alive connections, ${secs}s"
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
cpu0=$(cpu_ticks "$pid")
wrk -t1 -c"$conns" -d"${secs}s" --latency "http://127.0.0.1:$port/health" | tee "$log.wrk"
cpu1=$(cpu_ticks "$pid")
requests=$(awk '/requests in/ {print $1}' "$log.wrk")
rm -f "$log.wrk"
awk -v t=$((cpu1 - cpu0)) -v hz="$(getconf CLK_TCK)" -v r="$requests" -v rss="$(ps -o rss= -p "$pid")" \
    'BEGIN { printf "gateway CPU during the run: %.2f s = %.2f us per request; RSS: %d KiB\n", t / hz, t / hz * 1e6 / r, rss }'
