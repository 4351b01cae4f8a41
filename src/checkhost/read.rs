//! Reading what [`super::check`] judges: the process's fd limit and the
//! kernel's settings under `/proc`. Each reading that fails (a file that
//! is missing or holds something unexpected) is `None`, never an error:
//! the report says it could not be read and goes on.
//!
//! The `/proc` root is a parameter so the parsing can be tried on a made-up
//! tree; the binary reads the real one ([`Readings::read`]).

use std::fs;
use std::path::Path;

use super::Readings;

impl Readings {
    /// This host's readings.
    pub fn read() -> Readings {
        let fd_limit = crate::net::fd_limit().ok().map(|l| {
            let unlimited = |v: u64| if v == libc::RLIM_INFINITY { u64::MAX } else { v };
            (unlimited(l.soft), unlimited(l.hard))
        });
        // SAFETY: sysconf has no memory-safety preconditions.
        let page_size = u64::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096);
        Readings { fd_limit, page_size, ..Readings::from_proc(Path::new("/proc")) }
    }

    /// The readings found under `proc` (a `/proc` tree); the fd limit is
    /// not among them, and the page size is 4096.
    pub fn from_proc(proc: &Path) -> Readings {
        let sys = |key: &str| fs::read_to_string(proc.join("sys").join(key.replace('.', "/"))).ok();
        let number = |key: &str| sys(key).and_then(|s| s.trim().parse::<u64>().ok());
        let three = |key: &str| sys(key).and_then(|s| numbers::<3>(&s));
        let conntrack = number("net.netfilter.nf_conntrack_max")
            .map(|max| (max, number("net.netfilter.nf_conntrack_count").unwrap_or(0)));
        Readings {
            fd_limit: None,
            nr_open: number("fs.nr_open"),
            file_max: number("fs.file-max"),
            files_open: sys("fs.file-nr").and_then(|s| numbers::<3>(&s)).map(|[open, _, _]| open),
            somaxconn: number("net.core.somaxconn"),
            syn_backlog: number("net.ipv4.tcp_max_syn_backlog"),
            syncookies: number("net.ipv4.tcp_syncookies"),
            migrate_req: number("net.ipv4.tcp_migrate_req"),
            port_range: sys("net.ipv4.ip_local_port_range").and_then(|s| {
                let [lo, hi] = numbers::<2>(&s)?;
                Some((u16::try_from(lo).ok()?, u16::try_from(hi).ok()?))
            }),
            reserved_ports: sys("net.ipv4.ip_local_reserved_ports").and_then(|s| port_ranges(&s)),
            conntrack,
            mem_available: fs::read_to_string(proc.join("meminfo")).ok().and_then(|s| mem_available(&s)),
            page_size: 4096,
            tcp_mem: three("net.ipv4.tcp_mem"),
            tcp_rmem: three("net.ipv4.tcp_rmem"),
            tcp_wmem: three("net.ipv4.tcp_wmem"),
        }
    }
}

/// Exactly `N` whitespace-separated numbers.
fn numbers<const N: usize>(text: &str) -> Option<[u64; N]> {
    let mut out = [0; N];
    let mut words = text.split_whitespace();
    for slot in &mut out {
        *slot = words.next()?.parse().ok()?;
    }
    words.next().is_none().then_some(out)
}

/// `ip_local_reserved_ports`: a comma list of ports and `A-B` ranges, or
/// nothing.
fn port_ranges(text: &str) -> Option<Vec<(u16, u16)>> {
    text.trim()
        .split(',')
        .filter(|part| !part.is_empty())
        .map(|part| match part.split_once('-') {
            Some((a, b)) => Some((a.parse().ok()?, b.parse().ok()?)),
            None => part.parse().ok().map(|p| (p, p)),
        })
        .collect()
}

/// `MemAvailable` from `/proc/meminfo`, in bytes.
fn mem_available(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find_map(|line| line.strip_prefix("MemAvailable:"))?;
    let kib: u64 = line.trim().strip_suffix("kB")?.trim().parse().ok()?;
    kib.checked_mul(1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_made_up_proc_tree_is_read() {
        let root = std::env::temp_dir().join(format!("tether-checkhost-{}", std::process::id()));
        let files = [
            ("sys/fs/nr_open", "1048576\n"),
            ("sys/fs/file-max", "9223372036854775807\n"),
            ("sys/fs/file-nr", "1504\t0\t9223372036854775807\n"),
            ("sys/net/core/somaxconn", "4096\n"),
            ("sys/net/ipv4/tcp_max_syn_backlog", "not a number\n"),
            ("sys/net/ipv4/tcp_syncookies", "1\n"),
            ("sys/net/ipv4/tcp_migrate_req", "0\n"),
            ("sys/net/ipv4/ip_local_port_range", "32768\t60999\n"),
            ("sys/net/ipv4/ip_local_reserved_ports", "3000-3001,8080\n"),
            ("sys/net/ipv4/tcp_mem", "287898\t383867\t575796\n"),
            ("sys/net/ipv4/tcp_rmem", "4096\t131072\t33554432\n"),
            ("sys/net/ipv4/tcp_wmem", "4096\t16384\n"),
            ("meminfo", "MemTotal:       24684084 kB\nMemFree:        19433540 kB\nMemAvailable:   24169228 kB\n"),
        ];
        for (path, text) in files {
            let path = root.join(path);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, text).unwrap();
        }
        let r = Readings::from_proc(&root);
        fs::remove_dir_all(&root).unwrap();
        assert_eq!(r.nr_open, Some(1_048_576));
        assert_eq!(r.file_max, Some(9_223_372_036_854_775_807));
        assert_eq!(r.files_open, Some(1504));
        assert_eq!(r.somaxconn, Some(4096));
        assert_eq!(r.syn_backlog, None, "unreadable");
        assert_eq!((r.syncookies, r.migrate_req), (Some(1), Some(0)));
        assert_eq!(r.port_range, Some((32768, 60999)));
        assert_eq!(r.reserved_ports, Some(vec![(3000, 3001), (8080, 8080)]));
        assert_eq!(r.conntrack, None, "no nf_conntrack_max: not loaded");
        assert_eq!(r.mem_available, Some(24_169_228 * 1024));
        assert_eq!(r.tcp_mem, Some([287_898, 383_867, 575_796]));
        assert_eq!(r.tcp_rmem, Some([4096, 131_072, 33_554_432]));
        assert_eq!(r.tcp_wmem, None, "two numbers where three belong");
    }

    #[test]
    fn small_parsers() {
        assert_eq!(numbers::<2>("1024 65535\n"), Some([1024, 65535]));
        assert_eq!(numbers::<2>("1024"), None);
        assert_eq!(numbers::<2>("1 2 3"), None);
        assert_eq!(port_ranges("\n"), Some(vec![]));
        assert_eq!(port_ranges("3001"), Some(vec![(3001, 3001)]));
        assert_eq!(port_ranges("3001,x"), None);
        assert_eq!(mem_available("MemAvailable: 10 kB\n"), Some(10_240));
        assert_eq!(mem_available("MemFree: 10 kB\n"), None);
    }

    #[test]
    fn this_host_reads_without_failing() {
        let r = Readings::read();
        let (soft, hard) = r.fd_limit.expect("getrlimit works");
        assert!(soft <= hard);
        assert!(r.page_size >= 4096);
    }
}
