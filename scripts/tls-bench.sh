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
#      terminating TLS (tether; nginx's workers: a second instance with as
#      many workers as the per-process descriptor limit needs, two per
#      proxied collar) while N collars
#      (tether-load --tls, on CPU 1) are online and idle;
#   2. TLS 1.3 handshakes per second of server CPU, full and resumed: K
#      collars (tether-load --tls --leave-after-identify, on CPU 1, at most
#      INFLIGHT connecting at once) connect, identify and leave, once with
#      --tls-no-resume (every handshake full) and once keeping the tickets
#      (every collar but the first INFLIGHT resumes; tether-load counts how
#      each handshake went); the server's CPU ticks over each run. Through
#      nginx a connect also costs nginx its upstream connect to tether's
#      plain port and the proxying of IDENTIFY and OK; tether's own CPU
#      behind nginx is not counted. (`openssl s_time -reuse` is not used:
#      it resumes no TLS 1.3 session against either server, as it never
#      reads the tickets that arrive after the handshake.)
#   3. server CPU per PING round trip, ACTIVE collars in a closed loop for
#      SECS seconds: tether plain, tether TLS, and nginx + tether.
# and prints one table, each figure with the tool that made it.
# Environment: SECS (default 10), ACTIVE (default 100), K (default 5000),
# INFLIGHT (default 4), NGINX_PROXY_BUFFER (nginx's proxy_buffer_size;
# default nginx's own, 16k).
# The figures are only as quiet as the host: other processes' CPU shows.
set -euo pipefail
cd "$(dirname "$0")/.."

n=${1:-19000}
secs=${SECS:-10}
active=${ACTIVE:-100}
k=${K:-5000}
inflight=${INFLIGHT:-4}

if ! command -v nginx >/dev/null || [[ ! -e /usr/lib/nginx/modules/ngx_stream_module.so ]]; then
    echo "installing nginx and its stream module..."
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q nginx-light libnginx-mod-stream >/dev/null
fi
command -v openssl >/dev/null || { echo "openssl is needed (certificates)" >&2; exit 1; }
ulimit -n "$(ulimit -Hn)"

work=$(mktemp -d)
chmod 755 "$work"
gateway=""; nginx_masters=(); fleet=""
cleanup() {
    [[ -n "$fleet" ]] && kill "$fleet" 2>/dev/null || true
    for master in "${nginx_masters[@]}"; do kill "$master" 2>/dev/null || true; done
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

# --- nginx: stream TLS proxy to tether's plain port, on CPU 0 ----------------
# start_nginx NAME WORKERS: an instance with its own port, config and pid
# file; sets $nginx_port and $nginx_workers (the worker pids). One worker
# for the handshake and round-trip runs; for the memory hold, as many as
# the descriptors need: a proxied collar takes two (its side and the
# upstream one) and a process may have $fd_limit, so one worker holds
# fewer than half of 20,000 here. `reuseport` spreads the collars over
# the workers.
fd_limit=$(ulimit -Hn)
nginx_masters=()
proxy_buffer=""
[[ -n "${NGINX_PROXY_BUFFER:-}" ]] && proxy_buffer=$'\n'"        proxy_buffer_size $NGINX_PROXY_BUFFER;"
start_nginx() {
    local name=$1 workers=$2 master
    nginx_port=$(free_port)
    cat >"$work/nginx-$name.conf" <<EOF
load_module /usr/lib/nginx/modules/ngx_stream_module.so;
worker_processes $workers;
worker_rlimit_nofile $fd_limit;
pid $work/nginx-$name.pid;
error_log $work/nginx-$name.log warn;
events { worker_connections $((fd_limit - 64)); }
stream {
    server {
        listen 127.0.0.1:$nginx_port ssl backlog=4096 reuseport;
        ssl_certificate $work/tls.pem;
        ssl_certificate_key $work/tls.key;
        ssl_protocols TLSv1.3;
        ssl_session_cache shared:TLS-$name:10m;
        ssl_session_tickets on;
        proxy_pass $plain_addr;
        proxy_timeout 1h;$proxy_buffer
    }
}
EOF
    taskset -c 0 nginx -c "$work/nginx-$name.conf" -p "$work" -g 'daemon off;' &
    master=$!
    nginx_masters+=("$master")
    nginx_workers=()
    for _ in $(seq 100); do
        mapfile -t nginx_workers < <(pgrep -P "$master" || true)
        (( ${#nginx_workers[@]} == workers )) && break
        sleep 0.1
    done
    (( ${#nginx_workers[@]} == workers )) || { cat "$work/nginx-$name.log"; echo "nginx did not start" >&2; exit 1; }
}
start_nginx bench 1
nginx_worker=${nginx_workers[0]}
echo "tether pid $gateway (TLS $tls_addr, plain $plain_addr); nginx worker $nginx_worker on 127.0.0.1:$nginx_port"

load() { taskset -c 1 target/release/tether-load --tls --tls-ca "$work/ca.pem" "$@"; }

# --- 2. Handshakes per second of server CPU ----------------------------------
handshakes() { # handshakes NAME ADDR PID MAC_BASE [FLAGS...]: writes hs-NAME.{json,ticks}
    local name=$1 addr=$2 pid=$3 mac=$4 cpu0; shift 4
    cpu0=$(cpu_ticks "$pid")
    load --target "$addr" -n "$k" --max-in-flight "$inflight" --leave-after-identify --duration 300s --json \
        --source-ips 127.0.0.4-127.0.0.5 --mac-base "$mac" "$@" >"$work/hs-$name.json" 2>"$work/hs-$name.log" || true
    echo $(( $(cpu_ticks "$pid") - cpu0 )) >"$work/hs-$name.ticks"
}
echo "handshakes: $k collars connect, identify and leave, $inflight at a time, full then resumed..."
http_get /metrics >"$work/metrics-hs0.txt"
handshakes tether-full "$tls_addr" "$gateway" 02:4E:00:00:00:00 --tls-no-resume
http_get /metrics >"$work/metrics-hs1.txt"
handshakes tether-resumed "$tls_addr" "$gateway" 02:4E:01:00:00:00
http_get /metrics >"$work/metrics-hs2.txt"
handshakes nginx-full "127.0.0.1:$nginx_port" "$nginx_worker" 02:4E:02:00:00:00 --tls-no-resume
handshakes nginx-resumed "127.0.0.1:$nginx_port" "$nginx_worker" 02:4E:03:00:00:00

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
rss_sum() { local total=0 pid; for pid in "$@"; do total=$(( total + $(rss_kib "$pid") )); done; echo "$total"; }
cpu_sum() { local total=0 pid; for pid in "$@"; do total=$(( total + $(cpu_ticks "$pid") )); done; echo "$total"; }
hold() { # hold NAME ADDR PID...: sets $before and $after (KiB, over the PIDs); no subshell
    local name=$1 addr=$2 cpu0
    shift 2
    before=$(rss_sum "$@")
    cpu0=$(cpu_sum "$@")
    # Not through load(): $! must be tether-load itself (taskset execs it),
    # so that the TERM below ends the fleet and has it print its summary.
    taskset -c 1 target/release/tether-load --tls --tls-ca "$work/ca.pem" --target "$addr" -n "$n" \
        --source-ips 127.0.0.2-127.0.0.3 --duration 900s --json --mac-base 02:4C:00:00:00:00 \
        >"$work/hold-$name.json" 2>"$work/hold-$name.log" &
    fleet=$!
    for _ in $(seq 240); do
        (( $(online) >= n )) && break
        kill -0 "$fleet" 2>/dev/null || break
        sleep 0.5
    done
    (( $(online) >= n )) || { cat "$work/hold-$name.log" >&2; online >&2; echo "$name: not all collars came online" >&2; exit 1; }
    connect_cpu=$(( $(cpu_sum "$@") - cpu0 ))
    sleep 2
    after=$(rss_sum "$@")
    kill -TERM "$fleet"; wait "$fleet" || true; fleet=""
    [[ -n "${KEEP:-}" ]] && cp "$work/hold-$name.log" "/tmp/tls-bench-hold-$name.log"
    for _ in $(seq 100); do (( $(online) == 0 )) && break; sleep 0.2; done
}
echo "holding $n idle TLS collars on tether..."
hold tether "$tls_addr" "$gateway"; t_before=$before; t_held=$after; t_connect=$connect_cpu
http_get /metrics >"$work/metrics-hold.txt"
hold_workers=$(( (2 * n * 11 / 10 + fd_limit - 257) / (fd_limit - 256) ))
start_nginx hold "$hold_workers"
echo "holding $n idle TLS collars through nginx ($hold_workers workers, $fd_limit descriptors each)..."
hold nginx "127.0.0.1:$nginx_port" "${nginx_workers[@]}"; n_before=$before; n_held=$after; n_connect=$connect_cpu

# --- Report -------------------------------------------------------------------------
python3 - "$n" "$t_before" "$t_held" "$n_before" "$n_held" \
    "$p_trips" "$p_cpu" "$t_trips" "$t_cpu" "$x_trips" "$x_tether" "$x_nginx" "$(getconf CLK_TCK)" \
    "$t_connect" "$n_connect" "$k" "$work" "$hold_workers" <<'EOF'
import json, sys
a = sys.argv[1:]
n, tb, th, nb, nh, pt, pc, tt, tc, xt, xtc, xnc, hz, tcc, ncc, k = map(float, a[:16])
work, hold_workers = a[16], int(a[17])
def handshakes(name):
    """tether's own count of its handshakes (full, resumed) in a metrics dump."""
    counts = {}
    for line in open(f"{work}/{name}.txt"):
        if line.startswith('tether_tls_handshakes_total{kind="'):
            counts[line.split('"')[1]] = int(float(line.split()[-1]))
    return counts.get("full", 0), counts.get("resumed", 0)
def client(name):
    """A tether-load summary, and the full and resumed handshakes it saw."""
    s = json.load(open(f"{work}/{name}.json"))
    t = s["tls_handshakes"]
    return s, t["full"] + t["full_with_hello_retry"], t["resumed"]
def rate(name):
    """Handshakes per second of server CPU in one run, and what backs it."""
    s, full, resumed = client(f"hs-{name}")
    ticks = int(open(f"{work}/hs-{name}.ticks").read())
    done, secs = s["connections"]["left"], s["connect_phase_s"]
    if not ticks or not done:
        return "n/a", f"{done} of {int(k)} connects done"
    core = ticks / hz / secs * 100 if secs else 0
    return (f"{done / (ticks / hz):,.0f}/s",
            f"{done:,} in {secs:.1f} s, {core:.0f}% of a core; client saw {full:,} full, {resumed:,} resumed")
us = lambda ticks, trips: f"{ticks / hz * 1e6 / trips:.1f} us" if trips else "n/a"
hold = {name: client(f"hold-{name}") for name in ("tether", "nginx")}
load = "tether-load --tls"
rows = [("", "tether (rustls)", "nginx 1 worker (OpenSSL), with its upstream connect"),
        (f"user-space memory per idle TLS collar, {int(n):,} held ({load}; RSS growth / N)",
         f"{(th - tb) * 1024 / n:.0f} B", f"{(nh - nb) * 1024 / n:.0f} B (client and upstream sides; {hold_workers} workers for the descriptors)")]
for kind, how in (("full", "--tls-no-resume"), ("resumed", "tickets kept")):
    t, x = rate(f"tether-{kind}"), rate(f"nginx-{kind}")
    rows.append((f"{kind} TLS 1.3 handshakes per second of server CPU ({load} {how})", t[0], x[0]))
    rows.append(("", "  " + t[1], "  " + x[1]))
rows += [
    (f"server CPU per collar connect, {int(n):,} held ({load}, 1024 in flight)",
     f"{tcc / hz * 1e6 / n:.0f} us ({hold['tether'][1]:,} full, {hold['tether'][2]:,} resumed)",
     f"{ncc / hz * 1e6 / n:.0f} us ({hold['nginx'][1]:,} full, {hold['nginx'][2]:,} resumed)"),
    ("server CPU per PING round trip, plain (tether-load --rtt)", us(pc, pt) + f" ({pt:.0f} trips)", ""),
    ("server CPU per PING round trip, TLS (tether-load --tls --rtt)", us(tc, tt) + f" ({tt:.0f} trips)",
     us(xnc, xt) + " nginx + " + us(xtc, xt) + f" tether ({xt:.0f} trips)"),
]
w = [max(len(r[i]) for r in rows) for i in range(3)]
for r in rows:
    print(f"  {r[0]:<{w[0]}}  {r[1]:<{w[1]}}  {r[2]}")
runs = [("full run", "metrics-hs0", "metrics-hs1"), ("resumed run", "metrics-hs1", "metrics-hs2")]
counted = []
for what, before, after in runs:
    full, resumed = [x - y for x, y in zip(handshakes(after), handshakes(before))]
    counted.append(f"{what} {full:,} full, {resumed:,} resumed")
print("  tether's own count (tether_tls_handshakes_total) of its handshake runs: " + "; ".join(counted))
full, resumed = handshakes("metrics-hold")
print(f"  tether counted {full:,} full and {resumed:,} resumed handshakes in all")
EOF
