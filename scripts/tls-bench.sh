#!/usr/bin/env bash
# TLS cost, side by side with nginx in the same run (issue 10).
#
# Usage: scripts/tls-bench.sh [N]   (default 19000 idle TLS collars)
#
# Builds release, makes a throwaway CA and an ECDSA P-256 certificate for
# 127.0.0.1 (openssl), and starts, each pinned to CPU 0 (one core each,
# one at a time on it):
#   - tether with its plain collar listener and its TLS one;
#   - nginx (the Debian package, installed here if missing), one worker, a
#     `stream` server terminating TLS 1.3 with the same certificate and
#     proxying to tether's plain port, so the collars speak the same
#     protocol through it.
# Then it measures, for each (handshakes and round trips first: the
# memory phase leaves tens of thousands of loopback ports in TIME_WAIT):
#   1. user-space memory per idle TLS collar: RSS growth of the process
#      terminating TLS (tether; nginx's worker) while N collars
#      (tether-load --tls, on CPU 1) are online and idle;
#   2. full TLS 1.3 handshakes/s and resumed ones (`openssl s_time -new`
#      and `-reuse` on CPU 1 for SECS seconds; the server's one core);
#   3. server CPU per PING round trip, ACTIVE collars in a closed loop for
#      SECS seconds: tether plain, tether TLS, and nginx + tether.
# and prints one table. Environment: SECS (default 10), ACTIVE (default 100).
# The figures are only as quiet as the host: other processes' CPU shows.
set -euo pipefail
cd "$(dirname "$0")/.."

n=${1:-19000}
secs=${SECS:-10}
active=${ACTIVE:-100}

if ! command -v nginx >/dev/null || [[ ! -e /usr/lib/nginx/modules/ngx_stream_module.so ]]; then
    echo "installing nginx and its stream module..."
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q nginx-light libnginx-mod-stream >/dev/null
fi
command -v openssl >/dev/null || { echo "openssl is needed (s_time, certificates)" >&2; exit 1; }
ulimit -n "$(ulimit -Hn)"

work=$(mktemp -d)
chmod 755 "$work"
gateway=""; nginx_master=""; fleet=""
cleanup() {
    [[ -n "$fleet" ]] && kill "$fleet" 2>/dev/null || true
    [[ -n "$nginx_master" ]] && kill "$nginx_master" 2>/dev/null || true
    [[ -n "$gateway" ]] && kill "$gateway" 2>/dev/null || true
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

echo "building release binaries..."
cargo build --release --quiet --workspace --bins

# --- Certificates: one CA, one ECDSA P-256 server certificate ------------
ec=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes)
openssl req -x509 "${ec[@]}" -keyout "$work/ca.key" -out "$work/ca.pem" -days 2 -subj "/CN=bench CA" 2>/dev/null
openssl req "${ec[@]}" -keyout "$work/tls.key" -out "$work/tls.csr" -subj "/CN=localhost" 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n' >"$work/tls.ext"
openssl x509 -req -in "$work/tls.csr" -CA "$work/ca.pem" -CAkey "$work/ca.key" -CAcreateserial -days 2 \
    -extfile "$work/tls.ext" -out "$work/tls.pem" 2>/dev/null
chmod 644 "$work"/*

rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
http_get() { python3 -c 'import sys, urllib.request; print(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode())' "http://$http_addr$1"; }
online() { http_get /health | python3 -c 'import json,sys; print(json.load(sys.stdin).get("devices_online", 0))'; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# --- tether, on CPU 0 ---------------------------------------------------------
RUST_LOG=info taskset -c 0 target/release/tether --device-listen 127.0.0.1:0 --http-listen 127.0.0.1:0 \
    --device-tls-listen 127.0.0.1:0 --device-tls-cert "$work/tls.pem" --device-tls-key "$work/tls.key" \
    --max-http-connections 16 --stats-interval 0 2>"$work/gateway.log" &
gateway=$!
for _ in $(seq 100); do grep -q "http: listening on" "$work/gateway.log" && break; sleep 0.1; done
plain_addr=$(sed -n 's/.*devices: listening on \([^ ]*\).*/\1/p' "$work/gateway.log")
tls_addr=$(sed -n 's/.*devices: TLS on \([^ ,]*\).*/\1/p' "$work/gateway.log")
http_addr=$(sed -n 's/.*http: listening on \([^ ,]*\).*/\1/p' "$work/gateway.log")
[[ -n "$tls_addr" && -n "$http_addr" ]] || { cat "$work/gateway.log"; echo "tether did not start" >&2; exit 1; }

# --- nginx: one worker, stream TLS proxy to tether's plain port, CPU 0 -------
nginx_port=$(free_port)
cat >"$work/nginx.conf" <<EOF
load_module /usr/lib/nginx/modules/ngx_stream_module.so;
worker_processes 1;
worker_cpu_affinity 01;
worker_rlimit_nofile $((2 * n + 1024));
pid $work/nginx.pid;
error_log $work/nginx.log warn;
events { worker_connections $((2 * n + 512)); }
stream {
    server {
        listen 127.0.0.1:$nginx_port ssl backlog=4096;
        ssl_certificate $work/tls.pem;
        ssl_certificate_key $work/tls.key;
        ssl_protocols TLSv1.3;
        ssl_session_cache shared:TLS:10m;
        ssl_session_tickets on;
        proxy_pass $plain_addr;
        proxy_timeout 1h;
    }
}
EOF
taskset -c 0 nginx -c "$work/nginx.conf" -p "$work" -g 'daemon off;' &
nginx_master=$!
for _ in $(seq 100); do nginx_worker=$(pgrep -P "$nginx_master" | head -1 || true); [[ -n "$nginx_worker" ]] && break; sleep 0.1; done
[[ -n "$nginx_worker" ]] || { cat "$work/nginx.log"; echo "nginx did not start" >&2; exit 1; }
echo "tether pid $gateway (TLS $tls_addr, plain $plain_addr); nginx worker $nginx_worker on 127.0.0.1:$nginx_port"

load() { taskset -c 1 target/release/tether-load --tls --tls-ca "$work/ca.pem" "$@"; }

# --- 2. Handshakes per second ---------------------------------------------------
s_time() { # s_time ADDR -new|-reuse -> connections per second
    taskset -c 1 openssl s_time -connect "$1" "$2" -time "$secs" -tls1_3 2>/dev/null \
        | awk '/connections in .* real seconds/ { rate = $1 / $4 } END { printf "%.0f", rate }' || true
}
echo "handshakes: openssl s_time, ${secs}s each..."
t_cpu0=$(cpu_ticks "$gateway"); t_full=$(s_time "$tls_addr" -new); t_cpu1=$(cpu_ticks "$gateway")
t_resumed=$(s_time "$tls_addr" -reuse)
n_cpu0=$(cpu_ticks "$nginx_worker"); n_full=$(s_time "127.0.0.1:$nginx_port" -new); n_cpu1=$(cpu_ticks "$nginx_worker")
n_resumed=$(s_time "127.0.0.1:$nginx_port" -reuse)
http_get /metrics >"$work/metrics.txt"

# --- 3. CPU per PING round trip ----------------------------------------------------
rtt() { # rtt NAME ADDR TLS(0/1) PIDS...: sets $trips and $ticks (CPU ticks of each pid); no subshell
    local name=$1 addr=$2 tls=$3; shift 3
    local before=() after=() args=()
    (( tls )) && args=(--tls --tls-ca "$work/ca.pem")
    for pid in "$@"; do before+=("$(cpu_ticks "$pid")"); done
    taskset -c 1 target/release/tether-load --target "$addr" -n "$active" --rtt --active "$active" \
        --duration "${secs}s" --json --mac-base 02:4D:00:00:00:00 "${args[@]}" >"$work/rtt-$name.json" 2>/dev/null || true
    for pid in "$@"; do after+=("$(cpu_ticks "$pid")"); done
    trips=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["rtt_us"]["count"])' "$work/rtt-$name.json")
    ticks=()
    for i in "${!before[@]}"; do ticks+=("$(( after[i] - before[i] ))"); done
}
echo "round trips: $active collars in a closed loop, ${secs}s each..."
rtt plain "$plain_addr" 0 "$gateway"; p_trips=$trips; p_cpu=${ticks[0]}
rtt tls "$tls_addr" 1 "$gateway"; t_trips=$trips; t_cpu=${ticks[0]}
rtt nginx "127.0.0.1:$nginx_port" 1 "$gateway" "$nginx_worker"; x_trips=$trips; x_tether=${ticks[0]}; x_nginx=${ticks[1]}

# --- 1. Memory per idle TLS collar ---------------------------------------------
# N collars online and idle through the server, then its RSS growth over N.
hold() { # hold NAME ADDR PID: sets $before and $after (KiB); no subshell
    local name=$1 addr=$2 pid=$3 cpu0
    before=$(rss_kib "$pid")
    cpu0=$(cpu_ticks "$pid")
    load --target "$addr" -n "$n" --source-ips 127.0.0.2-127.0.0.3 --duration 900s --json \
        --mac-base 02:4C:00:00:00:00 >"$work/hold-$name.json" 2>"$work/hold-$name.log" &
    fleet=$!
    for _ in $(seq 240); do
        (( $(online) >= n )) && break
        kill -0 "$fleet" 2>/dev/null || break
        sleep 0.5
    done
    (( $(online) >= n )) || { cat "$work/hold-$name.log" >&2; online >&2; echo "$name: not all collars came online" >&2; exit 1; }
    connect_cpu=$(( $(cpu_ticks "$pid") - cpu0 ))
    sleep 2
    after=$(rss_kib "$pid")
    kill -TERM "$fleet"; wait "$fleet" || true; fleet=""
    [[ -n "${KEEP:-}" ]] && cp "$work/hold-$name.log" "/tmp/tls-bench-hold-$name.log"
    for _ in $(seq 100); do (( $(online) == 0 )) && break; sleep 0.2; done
}
http_get /metrics >"$work/metrics-before-hold.txt"
echo "holding $n idle TLS collars on tether..."
hold tether "$tls_addr" "$gateway"; t_before=$before; t_held=$after; t_connect=$connect_cpu
http_get /metrics >"$work/metrics-hold.txt"
echo "holding $n idle TLS collars through nginx..."
hold nginx "127.0.0.1:$nginx_port" "$nginx_worker"; n_before=$before; n_held=$after; n_connect=$connect_cpu

# --- Report -------------------------------------------------------------------------
python3 - "$n" "$t_before" "$t_held" "$n_before" "$n_held" "$t_full" "$t_resumed" "$n_full" "$n_resumed" \
    "$p_trips" "$p_cpu" "$t_trips" "$t_cpu" "$x_trips" "$x_tether" "$x_nginx" "$(getconf CLK_TCK)" \
    "$((t_cpu1 - t_cpu0))" "$((n_cpu1 - n_cpu0))" "$secs" "$t_connect" "$n_connect" "$work/metrics.txt" \
    "$work/metrics-hold.txt" "$work/metrics-before-hold.txt" <<'EOF'
import sys
a = sys.argv[1:]
n, tb, th, nb, nh, tf, tr, nf, nr, pt, pc, tt, tc, xt, xtc, xnc, hz, tfc, nfc, secs, tcc, ncc = map(float, a[:22])
def handshakes(path):
    counts = {}
    for line in open(path):
        if line.startswith('tether_tls_handshakes_total{kind="'):
            counts[line.split('"')[1]] = int(float(line.split()[-1]))
    return counts.get("full", 0), counts.get("resumed", 0)
full, resumed = handshakes(a[22])
# The hold's own handshakes: the counters after it, less those before it.
hold_full, hold_resumed = [after - before for after, before in zip(handshakes(a[23]), handshakes(a[24]))]
per_core = lambda rate, ticks: f"{rate * secs / (ticks / hz):.0f}/s per core" if ticks else "n/a"
us = lambda ticks, trips: f"{ticks / hz * 1e6 / trips:.1f} us" if trips else "n/a"
rows = [
    ("", "tether (rustls)", "nginx 1 worker (OpenSSL)"),
    (f"user-space memory per idle TLS collar ({int(n)})",
     f"{(th - tb) * 1024 / n:.0f} B", f"{(nh - nb) * 1024 / n:.0f} B (client and upstream sides)"),
    ("full TLS 1.3 handshakes/s (s_time -new)", f"{tf:.0f} ({tfc / hz / secs * 100:.0f}% of a core)",
     f"{nf:.0f} ({nfc / hz / secs * 100:.0f}% of a core)"),
    ("  the same per core of server CPU", per_core(tf, tfc), per_core(nf, nfc)),
    (f"server CPU per collar connect, {int(n)} tether-load --tls",
     f"{tcc / hz * 1e6 / n:.0f} us ({hold_full} full, {hold_resumed} resumed)", f"{ncc / hz * 1e6 / n:.0f} us"),
    ("resumed handshakes/s (s_time -reuse)", f"{tr:.0f}", f"{nr:.0f}"),
    ("server CPU per PING round trip, plain", us(pc, pt) + f" ({pt:.0f} trips)", ""),
    ("server CPU per PING round trip, TLS", us(tc, tt) + f" ({tt:.0f} trips)",
     us(xnc, xt) + " nginx + " + us(xtc, xt) + f" tether ({xt:.0f} trips)"),
]
w = [max(len(r[i]) for r in rows) for i in range(3)]
for r in rows:
    print(f"  {r[0]:<{w[0]}}  {r[1]:<{w[1]}}  {r[2]}")
print(f"  tether counted {full} full and {resumed} resumed handshakes in all")
EOF
