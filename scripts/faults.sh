#!/usr/bin/env bash
# How long the gateway takes to find a dead peer, per fault scenario of
# tests/faults.rs, with short timings (those of the test suite: heartbeat
# 400 ms + 1 s, keepalive 1s,1s,2 and so a 3 s user timeout, event-stream
# keepalive 300 ms) and with the gateway's defaults (heartbeat 30 s + 10 s,
# keepalive 60s,10s,3 and so a 90 s user timeout, event-stream keepalive
# 15 s). Prints a Markdown table (the one in docs/BENCHMARKS.md, "Dead
# peers"): the time from the fault (the cable pulled, the host or process
# crashed, the takeover; for output pending, the command) to the collar's
# `disconnected` event, or for the event stream to its socket being freed.
#
# Each scenario runs in a network namespace of its own, all at once, and
# both timings side by side, so the run takes as long as the slowest
# scenario with the defaults (about two minutes). Needs what the tests need:
# root, `nft` and `ip` (scripts/test.sh installs them). Every scenario also
# asserts its bound, as in the test suite: a run that breaks one fails.
#
# `scripts/faults.sh control` measures instead what the user timeout
# prevents, with the real binary: the heartbeat and idle timeout off,
# keepalive 1s,1s,2 and `--tcp-user-timeout 0`, a collar's cable pulled
# and a command sent to it.
# Keepalive sends no probe while the command is unacknowledged, so the
# collar stays online until the kernel's retransmissions give up
# (`net.ipv4.tcp_retries2`, some 15 minutes).
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ ${1:-} == control ]]; then
    cargo build -q
    exec unshare -n bash -s <<'EOF'
set -euo pipefail
ip link set lo up
nft -f - <<'RULES'
table inet faults {
    set cut { type inet_service; }
    chain prerouting {
        type filter hook prerouting priority raw; policy accept;
        tcp sport @cut drop
        tcp dport @cut drop
    }
}
RULES
target/debug/tether --device-listen 127.0.0.1:3001 --http-listen 127.0.0.1:3000 --stats-interval 0 \
    --heartbeat-interval 0 --idle-timeout 0 --tcp-keepalive 1s,1s,2 --tcp-user-timeout 0 2>/dev/null &
tether=$!
trap 'kill $tether' EXIT
until curl -sf localhost:3000/health >/dev/null; do sleep 0.1; done
mac=CE:96:C2:78:27:FC
exec 3<>/dev/tcp/127.0.0.1/3001
printf 'IDENTIFY:%s\n' $mac >&3
read -r ok <&3
port=$(ss -Htn state established '( dport = :3001 )' | awk '{ split($3, a, ":"); print a[2] }')
nft add element inet faults cut "{ $port }"
start=$(date +%s.%N)
curl -sf -X POST --data REBOOT localhost:3000/devices/$mac/commands >/dev/null
while curl -sf localhost:3000/devices/$mac >/dev/null; do sleep 0.5; done
echo "cable pulled, a command pending, no heartbeat, no idle timeout, keepalive 1s,1s,2, --tcp-user-timeout 0:" \
    "offline after $(echo "$(date +%s.%N) - $start" | bc) s," \
    "closed as $(curl -sf localhost:3000/metrics | awk -F'"' '/^tether_closed_total\{kind="device"/ && !/ 0$/ { print $4 }')"
EOF
fi

# The runs' whole output stays there, for a look at a failure;
# `scripts/faults.sh table` prints the table of the last run again.
out=target/faults
if [[ ${1:-} != table ]]; then
    export TETHER_TEST_REQUIRE_ALL=1
    cargo test --test faults --no-run 2>/dev/null
    mkdir -p "$out"
    pids=()
    for timings in short defaults; do
        TETHER_FAULT_TIMINGS=$timings cargo test -q --test faults -- --nocapture --test-threads 64 \
            >"$out/$timings.log" 2>&1 &
        pids+=($!)
    done
    status=0
    for pid in "${pids[@]}"; do
        wait "$pid" || status=$?
    done
    if ((status)); then
        grep -h -B2 -A8 panicked "$out"/*.log >&2 || true
        echo "scripts/faults.sh: a scenario failed (see above)" >&2
        exit "$status"
    fi
fi

# fault-detection: <timings> | <test> | <scenario> | <reason> | <N> ms | bound <M> ms
awk -F' [|] ' '
    /^fault-detection: / {
        timings = substr($1, length("fault-detection: ") + 1)
        key = $2
        if (!(key in scenario)) { order[++n] = key; scenario[key] = $3; reason[key] = $4 }
        sub(/ ms$/, "", $5); sub(/^bound /, "", $6); sub(/ ms$/, "", $6)
        took[key, timings] = $5; bound[key, timings] = $6
    }
    function secs(ms) { return sprintf("%.2f s", ms / 1000) }
    END {
        # The four ways a peer disappears, in that order; a test not listed
        # comes after them.
        m = split("graceful_close process_crash_fin process_crash_rst host_crash_heartbeat " \
            "host_crash_keepalive host_crash_user_timeout ping_user_timeout host_reboot_before_ping " \
            "host_reboot_after_ping cable_never_back takeover_cable_out idle_cable_out sse_cable_out", listed, " ")
        for (i = 1; i <= m; i++) if (listed[i] in scenario) { rows[++r] = listed[i]; done[listed[i]] = 1 }
        for (i = 1; i <= n; i++) if (!(order[i] in done)) rows[++r] = order[i]
        print "| scenario | closed as | short timings (bound) | defaults (bound) |"
        print "|---|---|---|---|"
        for (i = 1; i <= r; i++) {
            k = rows[i]
            printf "| %s | `%s` | %s (%s) | %s (%s) |\n", scenario[k], reason[k],
                secs(took[k, "short"]), secs(bound[k, "short"]),
                secs(took[k, "defaults"]), secs(bound[k, "defaults"])
        }
    }
' <(grep -ho 'fault-detection: .*' "$out/short.log") <(grep -ho 'fault-detection: .*' "$out/defaults.log")
