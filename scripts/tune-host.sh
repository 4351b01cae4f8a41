#!/usr/bin/env bash
# What limits the number of sockets on this host, and (with --apply, as
# root) raise what can be raised.
#
# Usage: scripts/tune-host.sh [--apply] [TARGET]     (TARGET default 100000)
#
# It prints each limit next to what TARGET connections need, and says plainly
# what cannot be changed here and what to do instead. Without --apply it
# changes nothing.
set -euo pipefail

apply=0
target=100000
for arg in "$@"; do
    case "$arg" in
        --apply) apply=1 ;;
        -h|--help) sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
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

echo
echo "Applying:"
set_if_lower() { # name value
    local current
    current=$(sysctl_get "$1")
    if [[ "$current" == n/a ]]; then
        echo "  $1: not present here, skipped"
    elif (( current < $2 )); then
        if sysctl -qw "$1=$2" 2>/dev/null; then echo "  $1: $current -> $2"; else echo "  $1: could not be set (read-only here)"; fi
    else
        echo "  $1: $current already >= $2"
    fi
}
set_if_lower fs.nr_open $(( need_fds > 1048576 ? need_fds : 1048576 ))
set_if_lower fs.file-max $((2 * target + 10000))
set_if_lower net.core.somaxconn 65535
set_if_lower net.ipv4.tcp_max_syn_backlog 65535
set_if_lower net.netfilter.nf_conntrack_max $((2 * target))
# Queued connections of a worker that goes away move to another (see above).
set_if_lower net.ipv4.tcp_migrate_req 1
if (( port_lo > 1024 )); then
    sysctl -qw net.ipv4.ip_local_port_range="1024 65535" && echo "  net.ipv4.ip_local_port_range: $port_lo-$port_hi -> 1024-65535"
fi
if (( hard < need_fds )); then
    if cap_sys_resource; then
        echo "  RLIMIT_NOFILE hard: a process limit, not a sysctl; raise it where the gateway starts:"
        echo "    ulimit -Hn $need_fds in its shell, LimitNOFILE=$need_fds in its systemd unit"
    else
        echo "  RLIMIT_NOFILE hard: stays $hard (no CAP_SYS_RESOURCE); see above for what to do instead"
    fi
fi
