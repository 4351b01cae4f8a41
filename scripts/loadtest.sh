#!/usr/bin/env bash
# Hold N collar connections on one tether gateway, measure it, and check
# that no collar was lost.
#
# Usage: scripts/loadtest.sh [N] [--tls | --mtls]  (default 100000)
#
# --tls: every collar speaks TLS 1.3 to the gateway's TLS listener.
# --mtls: the same with mutual TLS: the gateway requires a client
# certificate from a collar CA (--device-tls-client-ca) whose CN is the
# MAC, and each collar presents its own, made by tether-load from that CA
# (--client-ca-cert/--client-ca-key).
#
# Builds release, starts `tether` on loopback, opens N-ACTIVE idle collars
# with `tether-load` (as many processes and source IPs as the host needs),
# holds them for HOLD seconds (longer than the heartbeat interval, so every
# collar is PINGed and answers), then runs an RTT phase with ACTIVE more
# collars in a closed PING/PONG loop. It samples the gateway's RSS and CPU
# time, prints one summary table, and exits non-zero if any collar failed
# or was closed by the gateway. Where the host's limits make N impossible
# it says why and runs the largest N the host allows.
#
# It writes two HTML reports (tether-load --html), one per tether-load
# run: REPORTS/loadtest-N-fleet.html (the idle fleet: connecting, holding,
# heartbeats) and REPORTS/loadtest-N-rtt.html (the round-trip phase).
#
# Environment: HOLD (s, default 35), RTT_SECS (default 10), ACTIVE
# (default 100), HEARTBEAT (default 30s), AUTH (1: the gateway requires
# device keys, --device-key-file with a fresh random master key, and every
# collar answers its CHALLENGE; default 0), REPORTS (default
# target/loadtest). Traffic stays on 127.0.0.0/8.
set -euo pipefail
cd "$(dirname "$0")/.."

want=${1:-100000}
hold=${HOLD:-35}
rtt_secs=${RTT_SECS:-10}
active=${ACTIVE:-100}
heartbeat=${HEARTBEAT:-30s}
auth=${AUTH:-0}
reports=${REPORTS:-target/loadtest}
mkdir -p "$reports"

# --- What this host allows ---------------------------------------------
hard=$(ulimit -Hn)
ulimit -n "$hard"
# The gateway keeps 32 descriptors in reserve (--fd-reserve) and a share
# for HTTP (this script asks for 16: it only reads /metrics); collars get
# the rest.
http_share=16
gateway_max=$((hard - 32 - http_share))
n=$want
if (( n > gateway_max )); then
    # Past one process: workers sharing the ports, and Redis between them,
    # as a fleet grows past one process or one host.
    echo "N=$want is more than one gateway process may hold here ($hard files, the hard RLIMIT_NOFILE):" \
         "running it on tether --workers auto with Redis (scripts/loadtest-fleet.sh)."
    exec scripts/loadtest-fleet.sh "$want"
fi
(( active > n / 2 )) && active=$(( n / 2 > 0 ? n / 2 : 1 ))
idle=$((n - active))
# One source IP has one ephemeral port range toward the gateway's port, and
# the kernel's search for a free port slows down as the range fills (at 70%
# full, connects ran 7x slower here), so each source IP is kept under half.
read -r port_lo port_hi < /proc/sys/net/ipv4/ip_local_port_range
usable_ports=$(( (port_hi - port_lo + 1) / 2 ))
ips=$(( (n + usable_ports - 1) / usable_ports ))
sources="127.0.0.2-127.0.0.$((1 + ips))"
per_process=$((hard - 128))
procs=$(( (idle + per_process - 1) / per_process ))
# Two cores or more: at least two load processes for a large fleet.
(( idle >= 10000 && procs < 2 )) && procs=2

work=$(mktemp -d)
gateway=""; fleet=""
cleanup() {
    [[ -n "$fleet" ]] && kill "$fleet" 2>/dev/null || true
    [[ -n "$gateway" ]] && kill "$gateway" 2>/dev/null || true
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

# Device authentication: one random master key, for the gateway and the
# fleet alike.
auth_args=()
if [[ "$auth" == 1 ]]; then
    od -An -tx1 -N32 /dev/urandom | tr -d ' \n' >"$work/device.keys"
    echo >>"$work/device.keys"
    auth_args=(--device-key-file "$work/device.keys")
fi

# --- TLS (issue 10): `--tls` holds every collar over TLS 1.3 ------------
# A throwaway CA and an ECDSA P-256 certificate for 127.0.0.1 (openssl);
# the gateway opens its TLS collar listener, and the fleets connect there.
tls=0; mtls=0
for arg in "$@"; do
    [[ "$arg" == --tls ]] && tls=1
    [[ "$arg" == --mtls ]] && tls=1 && mtls=1
done
tls_gateway_args=(); tls_load_args=()
if [[ "$tls" == 1 ]]; then
    ec=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes)
    openssl req -x509 "${ec[@]}" -keyout "$work/ca.key" -out "$work/ca.pem" -days 2 \
        -subj "/CN=loadtest CA" 2>/dev/null
    openssl req "${ec[@]}" -keyout "$work/tls.key" -out "$work/tls.csr" -subj "/CN=localhost" 2>/dev/null
    printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n' >"$work/tls.ext"
    openssl x509 -req -in "$work/tls.csr" -CA "$work/ca.pem" -CAkey "$work/ca.key" -CAcreateserial \
        -days 2 -extfile "$work/tls.ext" -out "$work/tls.pem" 2>/dev/null
    tls_gateway_args=(--device-tls-listen 127.0.0.1:0 --device-tls-cert "$work/tls.pem" --device-tls-key "$work/tls.key")
    tls_load_args=(--tls --tls-ca "$work/ca.pem")
    if [[ "$mtls" == 1 ]]; then
        openssl req -x509 "${ec[@]}" -keyout "$work/collar-ca.key" -out "$work/collar-ca.pem" -days 2 \
            -subj "/CN=loadtest collar CA" 2>/dev/null
        tls_gateway_args+=(--device-tls-client-ca "$work/collar-ca.pem")
        tls_load_args+=(--client-ca-cert "$work/collar-ca.pem" --client-ca-key "$work/collar-ca.key")
    fi
fi

echo "building release binaries..."
cargo build --release --quiet --workspace --bins

rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
http_get() { python3 -c 'import sys, urllib.request; print(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode())' "http://$http_addr$1"; }

# --- The gateway ---------------------------------------------------------
RUST_LOG=info target/release/tether --device-listen 127.0.0.1:0 --http-listen 127.0.0.1:0 \
    --max-http-connections "$http_share" --heartbeat-interval "$heartbeat" --stats-interval 10s \
    "${auth_args[@]}" "${tls_gateway_args[@]}" 2>"$work/gateway.log" &
gateway=$!
for _ in $(seq 100); do
    grep -q "http: listening on" "$work/gateway.log" && break
    sleep 0.1
done
device_addr=$(sed -n 's/.*devices: listening on \([^ ]*\).*/\1/p' "$work/gateway.log")
http_addr=$(sed -n 's/.*http: listening on \([^ ,]*\).*/\1/p' "$work/gateway.log")
[[ -n "$device_addr" && -n "$http_addr" ]] || { cat "$work/gateway.log"; echo "the gateway did not start" >&2; exit 1; }
if [[ "$tls" == 1 ]]; then
    device_addr=$(sed -n 's/.*devices: TLS on \([^ ,]*\).*/\1/p' "$work/gateway.log")
    echo "TLS: every collar speaks TLS 1.3 (ECDSA P-256) to $device_addr"
    [[ "$mtls" == 1 ]] && echo "mutual TLS: each collar presents its own certificate (CN = its MAC) from the collar CA"
fi
http_get /health >/dev/null
base_rss=$(rss_kib "$gateway")
echo "gateway pid $gateway on $device_addr (http $http_addr), RSS $base_rss KiB"
echo "fleet: $idle idle collars in $procs process(es) from $sources, then $active in an RTT loop"

# --- Phase 1: connect and hold -------------------------------------------
cpu_connect0=$(cpu_ticks "$gateway")
target/release/tether-load --target "$device_addr" -n "$idle" --processes "$procs" \
    --source-ips "$sources" --duration 900s --json --fail-on-loss "${auth_args[@]}" "${tls_load_args[@]}" \
    --mac-base 02:4C:00:00:00:00 --html "$reports/loadtest-$n-fleet.html" >"$work/fleet.json" 2>"$work/fleet.log" &
fleet=$!
online=0
for _ in $(seq 600); do
    online=$(http_get /health | python3 -c 'import json,sys; print(json.load(sys.stdin)["devices_online"])')
    (( online >= idle )) && break
    kill -0 "$fleet" 2>/dev/null || break
    sleep 0.5
done
if (( online < idle )); then
    echo "only $online of $idle collars came online" >&2
    tail -5 "$work/fleet.log" >&2
    exit 1
fi
cpu_connect1=$(cpu_ticks "$gateway")
sleep 2
held_rss=$(rss_kib "$gateway")
# The fleet's own memory: the parent and its workers, if any.
fleet_rss=0
for pid in "$fleet" $(pgrep -P "$fleet" || true); do fleet_rss=$((fleet_rss + $(rss_kib "$pid"))); done
echo "all $idle collars online; holding them ${hold}s (heartbeat every $heartbeat)..."
sleep "$hold"

# --- Phase 2: round trips ------------------------------------------------
cpu_before=$(cpu_ticks "$gateway")
rtt_status=0
target/release/tether-load --target "$device_addr" -n "$active" --rtt --active "$active" \
    --duration "${rtt_secs}s" --json --fail-on-loss --mac-base 02:4D:00:00:00:00 "${auth_args[@]}" "${tls_load_args[@]}" \
    --html "$reports/loadtest-$n-rtt.html" >"$work/rtt.json" 2>"$work/rtt.log" || rtt_status=$?
cpu_after=$(cpu_ticks "$gateway")
still_online=$(http_get /health | python3 -c 'import json,sys; print(json.load(sys.stdin)["devices_online"])')
http_get /metrics >"$work/metrics.txt"
rss_end=$(rss_kib "$gateway")

kill -INT "$fleet"
fleet_status=0
wait "$fleet" || fleet_status=$?
fleet=""
kill -TERM "$gateway"
wait "$gateway" || true
gateway=""

# --- Report --------------------------------------------------------------
hz=$(getconf CLK_TCK)
python3 - "$work" "$n" "$idle" "$active" "$base_rss" "$held_rss" "$rss_end" "$cpu_before" "$cpu_after" \
    "$hz" "$still_online" "$fleet_status" "$rtt_status" "$auth" "$cpu_connect0" "$cpu_connect1" "$reports" \
    "$tls" "$mtls" "$fleet_rss" <<'EOF'
import json, sys
work, n, idle, active, base, held, end, cpu0, cpu1, hz, still, fs, rs, auth, cc0, cc1, reports, tls, mtls, fleet_rss = sys.argv[1:]
n, idle, active, base, held, end = map(int, (n, idle, active, base, held, end))
cpu_s = (int(cpu1) - int(cpu0)) / int(hz)
# Gateway CPU while the fleet connected (polled every 0.5 s, so it includes
# up to half a second of idle time, which costs next to nothing).
connect_cpu_s = (int(cc1) - int(cc0)) / int(hz)
fleet = json.load(open(f"{work}/fleet.json"))
rtt = json.load(open(f"{work}/rtt.json"))
closes = {}
for line in open(f"{work}/metrics.txt"):
    if line.startswith('tether_closed_total{kind="device"'):
        reason = line.split('reason="')[1].split('"')[0]
        count = int(float(line.split()[-1]))
        if count:
            closes[reason] = count
trips = rtt["rtt_us"]["count"]
lost = sum(s["connections"]["failed"] + s["connections"]["closed_by_server"] for s in (fleet, rtt))
rows = [
    ("device authentication", "on (CHALLENGE/AUTH)" if auth == "1" else "off"),
    ("transport", "TLS 1.3, mutual: a certificate per collar" if mtls == "1" else "TLS 1.3" if tls == "1" else "plain"),
    ("connections held", f"{idle + active} ({idle} idle + {active} in the RTT loop)"),
    ("gateway RSS", f"{base} KiB at start, {held} KiB holding {idle}, {end} KiB at the end"),
    ("server bytes per connection", f"{(held - base) * 1024 / idle:.0f}"),
    ("client RSS (all of tether-load) / connections", f"{int(fleet_rss) * 1024 / idle:.0f} B ({fleet_rss} KiB holding {idle})"),
    ("connect rate", f"{fleet['connects_per_s']:.0f} connections/s ({fleet['connect_phase_s']:.2f} s for {idle})"),
    ("server CPU per connect", f"{connect_cpu_s * 1e6 / idle:.1f} us ({connect_cpu_s:.2f} s CPU for {idle})"),
    ("connect latency p50 / p99", f"{fleet['connect_latency_us']['p50']} / {fleet['connect_latency_us']['p99']} us"),
    ("handshake (IDENTIFY->OK) p50 / p99" if auth != "1" else "handshake (IDENTIFY->AUTH->OK) p50 / p99", f"{fleet['handshake_latency_us']['p50']} / {fleet['handshake_latency_us']['p99']} us"),
    ("TLS handshakes (client side)",
     ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in fleet["tls_handshakes"].items()) if tls == "1" else "n/a"),
    ("heartbeats received / answered", f"{fleet['heartbeats']['received']} / {fleet['heartbeats']['answered']}"),
    ("round trips", f"{trips} in {rtt['rtt']['phase_s']:.1f} s = {rtt['rtt']['per_s']:.0f}/s"),
    ("RTT p50 / p99 / p99.9", f"{rtt['rtt_us']['p50']} / {rtt['rtt_us']['p99']} / {rtt['rtt_us']['p999']} us"),
    ("server CPU per round trip", f"{cpu_s * 1e6 / trips:.1f} us ({cpu_s:.2f} s CPU)" if trips else "n/a"),
    ("devices online after the RTT phase", f"{still} of {idle}"),
    ("closes by reason (gateway)", ", ".join(f"{k}={v}" for k, v in closes.items()) or "none"),
    ("collars failed or lost", str(lost)),
]
width = max(len(k) for k, _ in rows)
print()
print(f"loadtest N={n}")
for key, value in rows:
    print(f"  {key:<{width}}  {value}")
ok = lost == 0 and int(still) == idle and fs == "0" and rs == "0"
print("  result:", "every collar held, none lost" if ok else "COLLARS LOST")
print(f"  reports: {reports}/loadtest-{n}-fleet.html, {reports}/loadtest-{n}-rtt.html")
sys.exit(0 if ok else 1)
EOF
