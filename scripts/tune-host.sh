#!/usr/bin/env bash
# What limits the number of sockets on this host, and (with --apply, as
# root) raise what can be raised.
#
# Usage: scripts/tune-host.sh [--apply] [TARGET]     (TARGET default 100000)
#
# It prints each limit next to what TARGET connections need, and says plainly
# what cannot be changed here and what to do instead. Without --apply it
# changes nothing; with --apply it applies contrib/sysctl.d/90-tether.conf
# (the file to install in /etc/sysctl.d for boot), never lowering a value.
# `tether check-host --connections TARGET` judges the same limits for the
# gateway alone (and memory, TCP memory), and exits 1 if one stops it.
set -euo pipefail

apply=0
target=100000
for arg in "$@"; do
    case "$arg" in
        --apply) apply=1 ;;
        -h|--help) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *[!0-9]*) echo "unknown argument: $arg" >&2; exit 1 ;;
        *) target=$arg ;;
    esac
done

sysctl_get() { cat "/proc/sys/${1//.//}" 2>/dev/null || echo "n/a"; }
# Whether this process has CAP_SYS_RESOURCE (bit 24), which raising a hard
# RLIMIT_NOFILE needs even for root.
cap_sys_resource() {
    local eff
    eff=$(awk '/^CapEff/ {print $2}' /proc/self/status)
    (( (16#$eff >> 24) & 1 ))
}

soft=$(ulimit -Sn)
hard=$(ulimit -Hn)
nr_open=$(sysctl_get fs.nr_open)
file_max=$(sysctl_get fs.file-max)
somaxconn=$(sysctl_get net.core.somaxconn)
syn_backlog=$(sysctl_get net.ipv4.tcp_max_syn_backlog)
read -r port_lo port_hi < /proc/sys/net/ipv4/ip_local_port_range
ports=$((port_hi - port_lo + 1))
conntrack_max=$(sysctl_get net.netfilter.nf_conntrack_max)
pid_max=$(sysctl_get kernel.pid_max)
# With `tether --workers N`, each worker has its own accept queue on the
# shared port (SO_REUSEPORT). When a worker dies or is restarted, 1 moves
# the connections still waiting in its queue (and its half-open ones) to
# another worker; 0, the default, resets them. Linux 5.14 and later.
migrate_req=$(sysctl_get net.ipv4.tcp_migrate_req)

# One gateway process holds every connection; the load generator's side of
# each connection is another socket (spread over processes if need be).
need_fds=$((target + 64))
need_ips=$(( (target + ports - 1) / ports ))

printf '%-34s %-22s %s\n' "limit" "value" "needed for $target connections"
printf '%-34s %-22s %s\n' "RLIMIT_NOFILE soft / hard" "$soft / $hard" "$need_fds per gateway process (tether raises soft to hard itself)"
printf '%-34s %-22s %s\n' "fs.nr_open (hard limit ceiling)" "$nr_open" ">= $need_fds"
printf '%-34s %-22s %s\n' "fs.file-max (system-wide)" "$file_max" ">= $((2 * target + 10000)) (both ends on one host)"
printf '%-34s %-22s %s\n' "net.core.somaxconn" "$somaxconn" ">= 4096 (tether's --backlog), more for storms"
printf '%-34s %-22s %s\n' "net.ipv4.tcp_max_syn_backlog" "$syn_backlog" ">= 4096"
printf '%-34s %-22s %s\n' "net.ipv4.ip_local_port_range" "$port_lo-$port_hi ($ports)" "$need_ips source IP(s) toward one server port at this range"
printf '%-34s %-22s %s\n' "net.netfilter.nf_conntrack_max" "$conntrack_max" "n/a = no conntrack; else >= $((2 * target))"
printf '%-34s %-22s %s\n' "net.ipv4.tcp_migrate_req" "$migrate_req" "1, so a worker's restart resets no queued connection (tether --workers)"
printf '%-34s %-22s %s\n' "kernel.pid_max (threads)" "$pid_max" "only for the thread-per-connection model in models.sh"
echo

problems=0
if (( hard < need_fds )); then
    problems=1
    if cap_sys_resource; then
        echo "* The hard fd limit ($hard) is below $need_fds; this process could raise it: ulimit -Hn $need_fds"
    else
        echo "* The hard fd limit ($hard) is below $need_fds, and this process lacks CAP_SYS_RESOURCE,"
        echo "  so it cannot be raised from here (not even as root). One gateway process holds at most"
        echo "  about $((hard - 64)) connections on this host. Instead: run several workers"
        echo "  (tether --workers auto --max-connections $target), or run the gateway where the limit"
        echo "  can be set (systemd LimitNOFILE=$need_fds, limits.conf nofile, a container's --ulimit),"
        echo "  and spread the load generator over processes (tether-load --processes)."
    fi
fi
if [[ "$nr_open" != n/a ]] && (( nr_open < need_fds )); then
    problems=1; echo "* fs.nr_open ($nr_open) caps every hard fd limit below $need_fds: sysctl -w fs.nr_open=$((need_fds * 2))"
fi
if (( somaxconn < 4096 )); then
    problems=1; echo "* net.core.somaxconn ($somaxconn) truncates the listen backlog: connect storms will see SYN retries"
fi
if (( syn_backlog < 4096 )); then
    problems=1; echo "* net.ipv4.tcp_max_syn_backlog ($syn_backlog) limits half-open connections during a storm"
fi
if (( need_ips > 1 )); then
    echo "* One source IP gives $ports ports toward one server port: use $need_ips or more source addresses"
    echo "  (tether-load --source-ips 127.0.0.2-127.0.0.$((1 + need_ips)); all of 127.0.0.0/8 reaches loopback),"
    echo "  or widen the range: sysctl -w net.ipv4.ip_local_port_range=\"1024 65535\""
fi
if [[ "$migrate_req" == 0 ]]; then
    problems=1; echo "* net.ipv4.tcp_migrate_req is 0: when a worker of tether --workers restarts, connections in its accept queue are reset"
fi
if [[ "$conntrack_max" != n/a ]] && (( conntrack_max < 2 * target )); then
    problems=1; echo "* conntrack tracks every connection and drops new ones when full: sysctl -w net.netfilter.nf_conntrack_max=$((2 * target))"
fi
(( problems == 0 )) && echo "Nothing here stands in the way of $target connections."

if (( apply == 0 )); then
    echo
    echo "Run with --apply as root to raise the sysctls above (the fd hard limit needs CAP_SYS_RESOURCE)."
    exit 0
fi
if (( EUID != 0 )); then
    echo "--apply needs root" >&2
    exit 1
fi

# The settings applied are those of contrib/sysctl.d/90-tether.conf, the
# file a host installs in /etc/sysctl.d to keep them across reboots: the
# two never disagree.
conf="$(cd "$(dirname "$0")/.." && pwd)/contrib/sysctl.d/90-tether.conf"
echo
echo "Applying $conf (a value already higher is kept):"
# Whether every port of the list $2 (ports and A-B ranges) is in list $1.
ports_within() { # have want
    local want range lo hi p ok r a b
    IFS=, read -ra want <<<"$2"
    for range in "${want[@]}"; do
        lo=${range%-*}; hi=${range#*-}
        for ((p = lo; p <= hi; p++)); do
            ok=0
            IFS=, read -ra have <<<"$1"
            for r in "${have[@]}"; do
                a=${r%-*}; b=${r#*-}
                (( p >= a && p <= b )) && { ok=1; break; }
            done
            (( ok )) || return 1
        done
    done
}
apply_setting() { # name value
    local name=$1 value=$2 current
    current=$(sysctl_get "$name" | xargs)
    if [[ "$current" == n/a ]]; then
        echo "  $name: not present here, skipped"
    elif [[ "$name" == net.ipv4.ip_local_reserved_ports ]] && ports_within "$current" "$value"; then
        echo "  $name: $value already reserved ($current)"
    elif [[ "$value" =~ ^[0-9]+$ && "$current" =~ ^[0-9]+$ ]] && (( current >= value )); then
        echo "  $name: $current already >= $value"
    elif [[ "$current" == "$value" ]]; then
        echo "  $name: already $value"
    else
        # Reserved ports add to the ones reserved already.
        [[ "$name" == net.ipv4.ip_local_reserved_ports && -n "$current" ]] && value="$current,$value"
        if sysctl -qw "$name=$value" 2>/dev/null; then
            echo "  $name: ${current:-(empty)} -> $value"
        else
            echo "  $name: could not be set (read-only here)"
        fi
    fi
}
while IFS= read -r line; do
    line=${line%%#*}
    [[ -z "${line//[[:space:]]/}" ]] && continue
    line=${line#-}
    apply_setting "$(xargs <<<"${line%%=*}")" "$(xargs <<<"${line#*=}")"
done <"$conf"
for need in "fs.nr_open $need_fds" "fs.file-max $((2 * target + 10000))" "net.netfilter.nf_conntrack_max $((2 * target))"; do
    read -r name value <<<"$need"
    current=$(sysctl_get "$name")
    if [[ "$current" != n/a ]] && (( current < value )); then
        echo "  $name: $current is still below the $value that $target connections need:"
        echo "    sysctl -w $name=$value (and raise it in $conf to keep it)"
    fi
done
if (( hard < need_fds )); then
    if cap_sys_resource; then
        echo "  RLIMIT_NOFILE hard: a process limit, not a sysctl; raise it where the gateway starts:"
        echo "    ulimit -Hn $need_fds in its shell, LimitNOFILE=$need_fds in its systemd unit"
    else
        echo "  RLIMIT_NOFILE hard: stays $hard (no CAP_SYS_RESOURCE); see above for what to do instead"
    fi
fi
