#!/usr/bin/env bash
# Hold N collars on this host when one gateway process cannot (N above what
# its file-descriptor limit allows): Redis, `tether --workers auto
# --redis`, and tether-load over several processes and source IPs. Then
# drop every collar's link at once, silently, and reconnect them all: a
# reconnect storm in which each new connection takes over the old one.
#
# Usage: scripts/loadtest-fleet.sh N     (scripts/loadtest.sh N runs it when
#                                         N is beyond one process)
#
# 1. Starts `redis-server` (no persistence) and `tether --workers auto
#    --max-connections 2N` (room for the storm, when old and new
#    connections of the same collars are held at once).
# 2. Connects N-ACTIVE idle collars, holds them HOLD seconds (longer than
#    the heartbeat interval: each is PINGed and answers), then runs ACTIVE
#    more in a closed PING/PONG loop for RTT_SECS.
# 3. The storm: the idle fleet is stopped (SIGSTOP: its sockets stay open
#    and silent, as after a NAT or a balancer lost its state), and a new
#    fleet with the same MACs connects from other source addresses. Each
#    new IDENTIFY claims its MAC, and the old connection is closed with
#    `BYE replaced`, on whichever worker holds it. Done when Redis has
#    given N-ACTIVE new claims.
# It prints one table and exits non-zero if a collar was lost (failed, or
# closed by the gateway other than by a takeover), or the storm did not
# re-identify every collar.
#
# It writes an HTML report of each tether-load run (tether-load --html):
# REPORTS/loadtest-N-{fleet,rtt,storm}.html.
#
# Environment: HOLD (s, 35), RTT_SECS (10), ACTIVE (100), HEARTBEAT (30s),
# STORM_SECS (the storm's time limit, 120), WORKERS (auto; a number to
# try the script with a small N), REPORTS (target/loadtest). Traffic stays
# on 127.0.0.0/8.
set -euo pipefail
cd "$(dirname "$0")/.."

n=${1:?usage: scripts/loadtest-fleet.sh N}
hold=${HOLD:-35}
rtt_secs=${RTT_SECS:-10}
active=${ACTIVE:-100}
heartbeat=${HEARTBEAT:-30s}
storm_secs=${STORM_SECS:-120}
workers_flag=${WORKERS:-auto}
reports=${REPORTS:-target/loadtest}
mkdir -p "$reports"

command -v redis-server >/dev/null || { echo "redis-server is needed (apt-get install redis-server)" >&2; exit 1; }
hard=$(ulimit -Hn)
ulimit -n "$hard"
idle=$((n - active))
read -r port_lo port_hi < /proc/sys/net/ipv4/ip_local_port_range
# Each source IP kept under half its port range (see loadtest.sh).
usable_ports=$(( (port_hi - port_lo + 1) / 2 ))
ips=$(( (n + usable_ports - 1) / usable_ports ))
(( ips <= 250 )) || { echo "N=$n needs more than 250 source IPs" >&2; exit 1; }
sources="127.0.0.2-127.0.0.$((1 + ips))"
storm_sources="127.0.1.2-127.0.1.$((1 + ips))"
per_process=$((hard - 128))
procs=$(( (idle + per_process - 1) / per_process ))
(( procs < 2 )) && procs=2
# The host's own limits: both ends of every connection are on this host,
# twice over during the storm, and a storm of connects needs deep accept
# and SYN queues. As root the script raises what is too low, the way
# scripts/tune-host.sh --apply does (and says so); otherwise it stops.
sysctl_of() { cat "/proc/sys/${1//.//}" 2>/dev/null || echo 0; }
conntrack_max=$(sysctl_of net.netfilter.nf_conntrack_max)
if (( $(sysctl_of net.core.somaxconn) < 16384 || $(sysctl_of net.ipv4.tcp_max_syn_backlog) < 16384 )) \
    || (( conntrack_max > 0 && conntrack_max < 2 * n + 10000 )); then
    if (( EUID == 0 )); then
        echo "tuning the host for $((2 * n)) connections (scripts/tune-host.sh --apply):"
        scripts/tune-host.sh --apply $((2 * n)) | sed -n '/^Applying:/,$p'
    else
        echo "this host's queues or conntrack table are too small for N=$n:" \
             "run scripts/tune-host.sh --apply $((2 * n)) as root first" >&2
        exit 1
    fi
fi

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
redis_port=$(free_port)
device_port=$(free_port)
http_port=$(free_port)
work=$(mktemp -d)
redis=""; gateway=""; fleet=""; storm=""
cleanup() {
    for group in "$fleet" "$storm"; do
        [[ -n "$group" ]] && { kill -CONT -- "-$group" 2>/dev/null; kill -KILL -- "-$group" 2>/dev/null; } || true
    done
    [[ -n "$gateway" ]] && kill -TERM "$gateway" 2>/dev/null || true
    [[ -n "$redis" ]] && kill -KILL "$redis" 2>/dev/null || true
    wait 2>/dev/null || true
    # The logs of the last run stay for a look (Redis's, the gateway's,
    # tether-load's).
    rm -rf target/loadtest-fleet
    mv "$work" target/loadtest-fleet 2>/dev/null || rm -rf "$work"
}
trap cleanup EXIT

echo "building release binaries..."
cargo build --release --quiet --workspace --bins

rcli() { redis-cli -p "$redis_port" "$@"; }
http_get() { python3 -c 'import sys, urllib.request; print(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode())' "http://127.0.0.1:$http_port$1"; }
kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
ticks() { awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0; }
workers_of() { pgrep -P "$gateway" || true; }
sum_over_workers() { local f=$1 total=0 pid; for pid in $(workers_of); do total=$((total + $($f "$pid"))); done; echo "$total"; }
# Waits (up to $2 s) until `$1` (a shell expression) is true.
wait_for() { local deadline=$((SECONDS + $2)); until eval "$1"; do (( SECONDS < deadline )) || return 1; sleep 0.25; done; }

# --- Redis and the gateway -------------------------------------------------
redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no --maxclients 10000 \
    >"$work/redis.log" 2>&1 &
redis=$!
wait_for 'grep -qs "Ready to accept connections" "$work/redis.log"' 10 || { cat "$work/redis.log"; exit 1; }
RUST_LOG=info target/release/tether --workers "$workers_flag" --max-connections $((2 * n)) --max-http-connections 512 \
    --redis "redis://127.0.0.1:$redis_port" --device-listen "127.0.0.1:$device_port" \
    --http-listen "127.0.0.1:$http_port" --heartbeat-interval "$heartbeat" --stats-interval 10s \
    2>"$work/gateway.log" &
gateway=$!
wait_for 'grep -qs "supervisor: .* workers" "$work/gateway.log"' 10 || { cat "$work/gateway.log"; exit 1; }
workers=$(sed -n 's/.*supervisor: \([0-9]*\) workers.*/\1/p' "$work/gateway.log" | head -1)
wait_for '(( $(grep -c "redis: connected to" "$work/gateway.log") >= workers ))' 30 \
    || { tail -20 "$work/gateway.log"; echo "the workers did not all reach Redis" >&2; exit 1; }
base_kib=$(sum_over_workers kib)
sup_kib=$(kib "$gateway")
redis_base=$(rcli INFO memory | awk -F: '/^used_memory:/ {print $2}' | tr -d '\r')
echo "gateway: $workers workers (supervisor pid $gateway) on 127.0.0.1:$device_port, Redis on $redis_port;" \
     "workers' RSS $base_kib KiB at start"
echo "fleet: $idle idle collars in $procs processes from $sources, then $active in an RTT loop"

# --- Connect and hold -------------------------------------------------------
online() { rcli ZCARD tether:devices | tr -d '\r'; }
started=$(date +%s.%N)
setsid target/release/tether-load --target "127.0.0.1:$device_port" -n "$idle" --processes "$procs" \
    --source-ips "$sources" --duration 1800s --json --mac-base 02:4C:00:00:00:00 \
    --html "$reports/loadtest-$n-fleet.html" >"$work/fleet.json" 2>"$work/fleet.log" &
fleet=$!
if ! wait_for '(( $(online) >= idle )) || ! kill -0 "$fleet" 2>/dev/null' 600 || (( $(online) < idle )); then
    echo "only $(online) of $idle collars came online" >&2
    tail -5 "$work/fleet.log" >&2
    exit 1
fi
connect_s=$(python3 -c "import time; print(f'{time.time() - $started:.1f}')")
held_kib=$(sum_over_workers kib)
redis_held=$(rcli INFO memory | awk -F: '/^used_memory:/ {print $2}' | tr -d '\r')
echo "all $idle collars online in the directory after ${connect_s}s; holding them ${hold}s (heartbeat every $heartbeat)..."
sleep "$hold"

# --- Round trips --------------------------------------------------------------
cpu_before=$(sum_over_workers ticks)
rtt_status=0
target/release/tether-load --target "127.0.0.1:$device_port" -n "$active" --rtt --active "$active" \
    --duration "${rtt_secs}s" --json --fail-on-loss --mac-base 02:4D:00:00:00:00 \
    --html "$reports/loadtest-$n-rtt.html" >"$work/rtt.json" 2>"$work/rtt.log" || rtt_status=$?
cpu_after=$(sum_over_workers ticks)
still_online=$(online)
end_kib=$(sum_over_workers kib)

# --- The storm ------------------------------------------------------------------
echo "storm: every idle collar's link dropped silently at once; $idle collars reconnect with the same MACs..."
kill -STOP -- "-$fleet"
epoch_before=$(rcli GET tether:epoch | tr -d '\r')
storm_started=$(date +%s.%N)
setsid target/release/tether-load --target "127.0.0.1:$device_port" -n "$idle" --processes "$procs" \
    --source-ips "$storm_sources" --duration "${storm_secs}s" --json --mac-base 02:4C:00:00:00:00 \
    --html "$reports/loadtest-$n-storm.html" >"$work/storm.json" 2>"$work/storm.log" &
storm=$!
claims() { echo $(( $(rcli GET tether:epoch | tr -d '\r') - epoch_before )); }
storm_ok=1
wait_for '(( $(claims) >= idle ))' "$storm_secs" || storm_ok=0
storm_s=$(python3 -c "import time; print(f'{time.time() - $storm_started:.1f}')")
storm_claims=$(claims)
after_storm=$(online)
echo "storm: $storm_claims new claims in ${storm_s}s; $after_storm collars in the directory"

# The closes by reason, summed over the workers (each /metrics comes from
# one worker, by the kernel's hash).
python3 - "$http_port" "$workers" >"$work/closes.json" <<'EOF'
import json, sys, urllib.request
port, workers = int(sys.argv[1]), int(sys.argv[2])
seen = {}
for _ in range(400):
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    index = next(int(float(l.split()[-1])) for l in text.splitlines() if l.startswith("tether_worker_index "))
    seen[index] = text
    if len(seen) == workers:
        break
closes, takeovers = {}, 0
for text in seen.values():
    for line in text.splitlines():
        if line.startswith('tether_closed_total{kind="device"'):
            reason = line.split('reason="')[1].split('"')[0]
            closes[reason] = closes.get(reason, 0) + int(float(line.split()[-1]))
        elif line.startswith("tether_takeovers_total "):
            takeovers += int(float(line.split()[-1]))
print(json.dumps({"workers_seen": len(seen), "closes": {k: v for k, v in closes.items() if v}, "takeovers": takeovers}))
EOF

# Old fleet: let it read what it was told, and report; then the rest.
kill -CONT -- "-$fleet"
kill -INT "$fleet"
wait "$fleet" || true
fleet=""
kill -INT "$storm"
storm_status=0
wait "$storm" || storm_status=$?
storm=""
kill -TERM "$gateway"
wait "$gateway" || true
gateway=""

echo "reports: $reports/loadtest-$n-{fleet,rtt,storm}.html"
hz=$(getconf CLK_TCK)
python3 - "$work" "$n" "$idle" "$active" "$workers" "$base_kib" "$sup_kib" "$held_kib" "$end_kib" \
    "$redis_base" "$redis_held" "$cpu_before" "$cpu_after" "$hz" "$still_online" "$rtt_status" \
    "$connect_s" "$storm_s" "$storm_claims" "$after_storm" "$storm_ok" "$storm_status" <<'EOF'
import json, sys
(work, n, idle, active, workers, base, sup, held, end, rbase, rheld, cpu0, cpu1, hz, still, rs,
 connect_s, storm_s, storm_claims, after_storm, storm_ok, ss) = sys.argv[1:]
n, idle, active, workers, base, sup, held, end = map(int, (n, idle, active, workers, base, sup, held, end))
rbase, rheld = int(rbase), int(rheld)
cpu_s = (int(cpu1) - int(cpu0)) / int(hz)
fleet = json.load(open(f"{work}/fleet.json"))
rtt = json.load(open(f"{work}/rtt.json"))
storm = json.load(open(f"{work}/storm.json"))
closes = json.load(open(f"{work}/closes.json"))
trips = rtt["rtt_us"]["count"]
# The old fleet was replaced by design: each of its connections must have
# been told `BYE replaced`, or (a PING in flight when its link dropped, and
# the storm slower than the heartbeat timeout) closed as presumed dead: a
# reset, as the gateway closes those abortively, or a close without a BYE.
# Nothing else, and no more of those than the gateway counted.
old = fleet["connections"]
replaced = fleet["closed_by_server"]["bye"].get("replaced", 0)
presumed_dead = fleet["closed_by_server"]["without_bye"] + fleet["failed"]["reset"]
dead_closes = sum(closes["closes"].get(r, 0) for r in ("heartbeat-timeout", "tcp-timeout"))
old_lost = old["failed"] + old["closed_by_server"] - replaced - min(presumed_dead, dead_closes)
new_lost = storm["connections"]["failed"] + storm["connections"]["closed_by_server"]
rtt_lost = rtt["connections"]["failed"] + rtt["connections"]["closed_by_server"]
rows = [
    ("connections held", f"{idle + active} ({idle} idle + {active} in the RTT loop) on {workers} workers"),
    ("gateway RSS (workers summed)", f"{base} KiB at start, {held} KiB holding {idle}, {end} KiB after the RTT phase (supervisor {sup} KiB)"),
    ("server bytes per connection", f"{(held - base) * 1024 / idle:.0f} (workers' RSS)"),
    ("Redis used_memory", f"{rbase / 1048576:.1f} MiB at start, {rheld / 1048576:.1f} MiB holding {idle}: {(rheld - rbase) / idle:.0f} B per online collar"),
    ("connect rate", f"{fleet['connects_per_s']:.0f} connections/s (tether-load); all {idle} in the directory after {connect_s} s"),
    ("connect latency p50 / p99", f"{fleet['connect_latency_us']['p50']} / {fleet['connect_latency_us']['p99']} us"),
    ("handshake (IDENTIFY->OK) p50 / p99", f"{fleet['handshake_latency_us']['p50']} / {fleet['handshake_latency_us']['p99']} us"),
    ("heartbeats received / answered", f"{fleet['heartbeats']['received']} / {fleet['heartbeats']['answered']}"),
    ("round trips", f"{trips} in {rtt['rtt']['phase_s']:.1f} s = {rtt['rtt']['per_s']:.0f}/s"),
    ("RTT p50 / p99 / p99.9", f"{rtt['rtt_us']['p50']} / {rtt['rtt_us']['p99']} / {rtt['rtt_us']['p999']} us"),
    ("server CPU per round trip", f"{cpu_s * 1e6 / trips:.1f} us ({cpu_s:.2f} s CPU, all workers)" if trips else "n/a"),
    ("idle collars in the directory after the RTT phase", f"{still} of {idle}"),
    ("storm: re-identified", f"{storm_claims} claims in {storm_s} s ({storm['connects_per_s']:.0f} connections/s); {after_storm} in the directory"),
    ("storm: handshake p50 / p99", f"{storm['handshake_latency_us']['p50']} / {storm['handshake_latency_us']['p99']} us"),
    ("storm: old connections ended", f"{replaced} told BYE replaced, {presumed_dead} closed as presumed dead (a PING unanswered), of {idle}; takeovers counted by the workers: {closes['takeovers']}"),
    ("closes by reason (all workers)", ", ".join(f"{k}={v}" for k, v in closes["closes"].items()) or "none"),
    ("collars failed or lost", f"hold {old_lost}, RTT {rtt_lost}, storm {new_lost}"),
]
width = max(len(k) for k, _ in rows)
print()
print(f"loadtest N={n} ({workers} workers, Redis)")
for key, value in rows:
    print(f"  {key:<{width}}  {value}")
ok = (old_lost == 0 and rtt_lost == 0 and new_lost == 0 and int(still) == idle and rs == "0"
      and storm_ok == "1" and int(storm_claims) >= idle and int(after_storm) == idle and ss == "0"
      and replaced + presumed_dead == idle)
print("  result:", "every collar held, and every one re-identified after the storm" if ok else "COLLARS LOST")
sys.exit(0 if ok else 1)
EOF
