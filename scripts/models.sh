#!/usr/bin/env bash
# The same collar load against servers of the same protocol, one per
# concurrency model, side by side, above a floor:
#
#   echo      the floor, not a model: a bare mio loop that answers PING and
#             IDENTIFY and nothing else (examples/echo.rs): no protocol
#             core, timers or limits. What the others cost above it is
#             what their protocol handling and bookkeeping cost.
#   threaded  one OS thread per connection, blocking std I/O (examples/threaded.rs)
#   tether    the gateway: one thread, one epoll reactor (mio)
#   tokio     one task per connection on a single-threaded tokio runtime
#             (examples/tokio_gateway.rs; tokio is a dev-dependency only)
#
# The three models run tether's sans-IO protocol core, so what differs
# between them is only how connections are multiplexed. For each server and
# each size (default 1000, 5000, 15000 connections) it holds N-ACTIVE idle
# collars, then runs ACTIVE collars in a closed PING/PONG loop for RTT_SECS,
# and reports process memory per connection, server CPU per round trip, and
# RTT percentiles.
#
# It writes, in REPORTS (default target/models): an HTML report of each
# tether-load run (MODEL-N-fleet.html, MODEL-N-rtt.html), the figures
# (results.tsv), and the three models compared against the number of
# connections (memory per connection, CPU per round trip, RTT p99) as
# models.svg and models.html (scripts/models-chart.py), all self-contained.
#
# Usage: scripts/models.sh [N ...]
# Environment: ACTIVE (default 50), RTT_SECS (default 5), TETHER_BIN (the
# gateway binary, default target/release/tether: set it to measure another
# build the same way), REPORTS. Loopback only.
set -euo pipefail
cd "$(dirname "$0")/.."

sizes=("$@")
(( ${#sizes[@]} )) || sizes=(1000 5000 15000)
active=${ACTIVE:-50}
rtt_secs=${RTT_SECS:-5}
tether_bin=${TETHER_BIN:-target/release/tether}
reports=${REPORTS:-target/models}
mkdir -p "$reports"
hard=$(ulimit -Hn)
ulimit -n "$hard"
for n in "${sizes[@]}"; do
    if (( n + 64 > hard )); then
        echo "N=$n needs $((n + 64)) descriptors per process; the hard limit here is $hard" >&2
        exit 1
    fi
done

echo "building release binaries..."
cargo build --release --quiet --workspace --bins --example echo --example threaded --example tokio_gateway
[[ -x "$tether_bin" ]] || { echo "TETHER_BIN=$tether_bin is not an executable" >&2; exit 1; }
echo "gateway binary: $tether_bin"

work=$(mktemp -d)
server=""; fleet=""
cleanup() {
    [[ -n "$fleet" ]] && kill "$fleet" 2>/dev/null || true
    [[ -n "$server" ]] && kill "$server" 2>/dev/null || true
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
sockets() { find "/proc/$1/fd" -lname 'socket:*' 2>/dev/null | wc -l; }

# Starts model $1 on a free loopback port; sets $server and $addr.
start_server() {
    local log="$work/server.log"
    case "$1" in
        echo) target/release/examples/echo 127.0.0.1:0 2>"$log" & ;;
        threaded) target/release/examples/threaded 127.0.0.1:0 2>"$log" & ;;
        tokio) target/release/examples/tokio_gateway 127.0.0.1:0 2>"$log" & ;;
        # Collars get the descriptors left after --fd-reserve (32) and the
        # HTTP share (--max-http-connections, 1024 by default); 16 is all
        # this script needs, so 15,000 collars fit under a 20,000 limit.
        # Older builds log their listening line from tether::reactor.
        tether) RUST_LOG=warn,tether::gateway=info,tether::reactor=info "$tether_bin" --device-listen 127.0.0.1:0 \
                    --http-listen 127.0.0.1:0 --stats-interval 0 --max-http-connections 16 2>"$log" & ;;
    esac
    server=$!
    addr=""
    for _ in $(seq 100); do
        addr=$(sed -n 's/.*listening on \([0-9.]*:[0-9]*\).*/\1/p' "$log" | head -1)
        [[ -n "$addr" ]] && return 0
        sleep 0.1
    done
    cat "$log" >&2
    echo "model $1 did not start" >&2
    exit 1
}

results="$work/results.tsv"
for n in "${sizes[@]}"; do
    act=$(( active < n / 2 ? active : n / 2 ))
    idle=$((n - act))
    for model in echo threaded tether tokio; do
        start_server "$model"
        sleep 0.5
        base_rss=$(rss_kib "$server")
        base_sockets=$(sockets "$server")
        target/release/tether-load --target "$addr" -n "$idle" --duration 600s --json \
            --source-ips 127.0.0.2-127.0.0.3 --mac-base 02:4C:00:00:00:00 \
            --html "$reports/$model-$n-fleet.html" >"$work/fleet.json" 2>"$work/fleet.log" &
        fleet=$!
        for _ in $(seq 600); do
            (( $(sockets "$server") - base_sockets >= idle )) && break
            kill -0 "$server" 2>/dev/null && kill -0 "$fleet" 2>/dev/null || break
            sleep 0.2
        done
        sleep 2
        if ! kill -0 "$server" 2>/dev/null || ! kill -0 "$fleet" 2>/dev/null; then
            echo "model $model at $n: the server or the idle fleet stopped while connecting" >&2
            tail -n 5 "$work/server.log" "$work/fleet.log" >&2
            exit 1
        fi
        held_rss=$(rss_kib "$server")
        cpu0=$(cpu_ticks "$server")
        target/release/tether-load --target "$addr" -n "$act" --rtt --active "$act" \
            --duration "${rtt_secs}s" --json --mac-base 02:4D:00:00:00:00 \
            --html "$reports/$model-$n-rtt.html" >"$work/rtt.json" 2>"$work/rtt.log" || {
            echo "model $model at $n: the RTT fleet failed" >&2
            tail -n 5 "$work/server.log" "$work/rtt.log" >&2
            exit 1
        }
        cpu1=$(cpu_ticks "$server")
        kill -INT "$fleet"; wait "$fleet" || true; fleet=""
        kill "$server"; wait "$server" 2>/dev/null || true; server=""
        python3 - "$model" "$n" "$idle" "$base_rss" "$held_rss" "$cpu0" "$cpu1" "$(getconf CLK_TCK)" \
            "$work/fleet.json" "$work/rtt.json" >>"$results" <<'EOF'
import json, sys
model, n, idle, base, held, cpu0, cpu1, hz, fleet, rtt = sys.argv[1:]
fleet, rtt = json.load(open(fleet)), json.load(open(rtt))
trips = rtt["rtt_us"]["count"]
cpu_us = (int(cpu1) - int(cpu0)) / int(hz) * 1e6
established = fleet["connections"]["established"] + rtt["connections"]["established"]
print("\t".join(map(str, [
    model, n, established, round((int(held) - int(base)) * 1024 / int(idle)),
    round(cpu_us / trips, 2) if trips else "n/a", round(rtt["rtt"]["per_s"]),
    rtt["rtt_us"]["p50"], rtt["rtt_us"]["p99"],
])))
EOF
        echo "  $model at $n connections: done"
    done
done

echo
printf '%-12s %8s %8s %12s %12s %12s %10s %10s\n' model conns held bytes/conn "CPU us/RT" "round trips/s" "p50 us" "p99 us"
while IFS=$'\t' read -r model n held bytes cpu rate p50 p99; do
    [[ "$model" == echo ]] && model="echo/floor"
    printf '%-12s %8s %8s %12s %12s %12s %10s %10s\n' "$model" "$n" "$held" "$bytes" "$cpu" "$rate" "$p50" "$p99"
done <"$results"
echo
echo "echo/floor: examples/echo.rs, a bare mio loop with no protocol core, timers or limits; not a model."
echo "bytes/conn: the server's RSS growth while holding the idle collars, per collar."
echo "CPU us/RT: the server's user+system CPU during the RTT phase per PING/PONG round trip."
echo "round trips/s and RTT from $active collars in a closed loop on loopback; client and server share the cores."
cp "$results" "$reports/results.tsv"
python3 scripts/models-chart.py "$results" "$reports/models"
echo "charts: $reports/models.html, $reports/models.svg; a report per run: $reports/MODEL-N-{fleet,rtt}.html"
