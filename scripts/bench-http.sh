#!/usr/bin/env bash
# GET /health under wrk with keep-alive: requests/s and latency percentiles.
#
# Usage: scripts/bench-http.sh [connections] [seconds]   (default 64, 10)
# Needs wrk (Debian: apt-get install wrk). Traffic stays on 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."
conns=${1:-64}
secs=${2:-10}
command -v wrk >/dev/null || { echo "wrk not found (apt-get install wrk)" >&2; exit 1; }

cargo build --release --quiet
port=$((20000 + RANDOM % 20000))
log=$(mktemp)
RUST_LOG=warn target/release/tether --device-listen 127.0.0.1:0 --http-listen "127.0.0.1:$port" \
    --stats-interval 0 --max-http-connections $((conns + 16)) 2>"$log" &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -f "$log"' EXIT
for _ in $(seq 50); do
    curl -sf "http://127.0.0.1:$port/health" >/dev/null 2>&1 && break
    sleep 0.1
done

echo "tether pid $pid, $(nproc) cores; wrk: 1 thread, $conns keep-alive connections, ${secs}s"
wrk -t1 -c"$conns" -d"${secs}s" --latency "http://127.0.0.1:$port/health"
echo "gateway CPU: $(ps -o times= -p $pid) s; RSS: $(ps -o rss= -p $pid) KiB"
