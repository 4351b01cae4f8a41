//! `tether check-host`: could this host hold N collar connections, and if
//! not, what stops it and how to fix that.
//!
//! The checks are sans-IO: [`check`] is a pure function from [`Readings`]
//! (the limits as read from the kernel, made up in the tests) and [`Want`]
//! (the connections asked for and the gateway's own settings) to a list of
//! [`Finding`]s, and [`render`] turns them into the text the command
//! prints. Reading the limits is [`read`]'s job, beside this file; nothing
//! here changes any of them.
//!
//! With `--workers`, each worker is a process of its own: the descriptor
//! limits are checked against one worker's share (as the supervisor gives
//! it), the system-wide ones (file handles, conntrack, memory, TCP memory)
//! against the whole gateway, and `tcp_migrate_req` is checked too.
//!
//! A finding is [`Level::Stop`] when the limit would keep N connections
//! from being held at all (descriptors, conntrack entries, memory), and
//! [`Level::Warn`] when N would be held but something around it degrades
//! (a reconnect storm losing SYNs to a short accept queue, socket buffers
//! squeezed under memory pressure, a listening port an outgoing connection
//! may take). The command exits non-zero when any finding is a `Stop`.

pub mod read;

use std::fmt::Write as _;

use crate::Config;
use crate::supervisor::Shares;

/// What one idle collar connection costs in memory: about 3.9 KB of
/// kernel slab per established loopback TCP socket (socket, inode, dentry,
/// file: measured as the rise of `Slab` in `/proc/meminfo` over 4,000
/// connected pairs on Linux 6.18), its epoll item, and the gateway's own
/// ~210 bytes (`cargo bench --bench idle_memory`). Rounded up to 4.5 KiB.
pub const BYTES_PER_CONNECTION: u64 = 4608;

/// The connections asked for when `--connections` is not given and the
/// gateway's command line sets no `--max-connections`.
pub const DEFAULT_CONNECTIONS: u64 = 100_000;

/// The kernel's limits as read on a host (`None`: could not be read).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Readings {
    /// `RLIMIT_NOFILE` of the process that reads them (soft, hard);
    /// `u64::MAX` is "unlimited".
    pub fd_limit: Option<(u64, u64)>,
    /// `fs.nr_open`: the ceiling of any process's hard fd limit.
    pub nr_open: Option<u64>,
    /// `fs.file-max`: file handles, system-wide.
    pub file_max: Option<u64>,
    /// The first figure of `fs.file-nr`: file handles allocated now.
    pub files_open: Option<u64>,
    pub somaxconn: Option<u64>,
    pub syn_backlog: Option<u64>,
    /// `net.ipv4.tcp_syncookies` (1: cookies when the SYN queue is full).
    pub syncookies: Option<u64>,
    /// `net.ipv4.tcp_migrate_req` (1: a closed listener's queued
    /// connections move to another on the port).
    pub migrate_req: Option<u64>,
    /// `net.ipv4.ip_local_port_range`, both ends included.
    pub port_range: Option<(u16, u16)>,
    /// `net.ipv4.ip_local_reserved_ports`, as ranges (both ends included).
    pub reserved_ports: Option<Vec<(u16, u16)>>,
    /// `nf_conntrack_max` and `nf_conntrack_count`; `None` when conntrack
    /// is not loaded (then there is no table to fill).
    pub conntrack: Option<(u64, u64)>,
    /// `MemAvailable` in bytes.
    pub mem_available: Option<u64>,
    /// The page size, the unit of `tcp_mem`.
    pub page_size: u64,
    /// `net.ipv4.tcp_mem` in pages: low, pressure, max.
    pub tcp_mem: Option<[u64; 3]>,
    /// `net.ipv4.tcp_rmem` and `tcp_wmem` in bytes: min, default, max.
    pub tcp_rmem: Option<[u64; 3]>,
    pub tcp_wmem: Option<[u64; 3]>,
}

/// What the gateway would ask of the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Want {
    /// Collar connections to hold, over all workers.
    pub connections: u64,
    /// `--fd-reserve`, per process.
    pub fd_reserve: u64,
    /// `--max-http-connections`, the HTTP share of the descriptors, over
    /// all workers.
    pub http_connections: u64,
    /// `--backlog`.
    pub backlog: u64,
    /// The ports tether listens on.
    pub ports: Vec<u16>,
    /// Processes holding the connections (`--workers`; 1 without it).
    pub workers: u64,
    /// Each worker's caps: its share of the collars and of the HTTP
    /// connections, `--worker-headroom` included (the totals with one
    /// process).
    pub worker_connections: u64,
    pub worker_http: u64,
    /// `--worker-headroom`, in percent.
    pub headroom: u64,
}

impl Want {
    /// `connections` collars for a gateway started with `config`; `None`
    /// takes `--max-connections` if set, else [`DEFAULT_CONNECTIONS`].
    /// With `--workers`, each worker's share is the one the supervisor
    /// would give it; `fd_ceiling` (what a process may raise its
    /// descriptor limit to) sizes `--workers auto`, which fails when no
    /// number of workers fits.
    pub fn new(config: &Config, connections: Option<u64>, fd_ceiling: u64) -> Result<Want, String> {
        let from_config = config.max_connections.map(|n| n as u64);
        let n = connections.or(from_config).unwrap_or(DEFAULT_CONNECTIONS);
        let sized = Config { max_connections: Some(usize::try_from(n).unwrap_or(usize::MAX)), ..config.clone() };
        let shares = Shares::of(&sized, fd_ceiling)?;
        Ok(Want {
            connections: n,
            fd_reserve: config.fd_reserve as u64,
            http_connections: config.max_http_connections as u64,
            backlog: u64::from(config.backlog),
            ports: vec![config.device_listen.port(), config.http_listen.port()],
            workers: shares.workers as u64,
            worker_connections: shares.devices.map_or(n, |d| d as u64),
            worker_http: shares.http as u64,
            headroom: config.worker_headroom as u64,
        })
    }

    /// Descriptors one process needs: its collars, its HTTP share and the
    /// reserve (the same sum that sets its connection caps).
    pub fn descriptors(&self) -> u64 {
        self.worker_connections + self.overhead()
    }

    fn overhead(&self) -> u64 {
        self.worker_http + self.fd_reserve
    }

    /// The collars the gateway may hold when each process may hold `per`:
    /// one process holds them all; a worker's cap is its even share plus
    /// the headroom, so the total is `per` less the headroom, times the
    /// workers (the inverse of [`crate::supervisor::share`]).
    fn total_for(&self, per: u64) -> u64 {
        if self.workers <= 1 {
            return per;
        }
        let total = u128::from(per) * 100 / u128::from(100 + self.headroom) * u128::from(self.workers);
        u64::try_from(total).unwrap_or(u64::MAX)
    }

    /// What the descriptors are for, in words.
    fn needs(&self) -> String {
        let d = self.descriptors();
        if self.workers <= 1 {
            return format!(
                "{d} descriptors needed ({} collars + {} HTTP + {} reserved)",
                self.connections, self.worker_http, self.fd_reserve
            );
        }
        format!(
            "{d} descriptors needed in each of {} workers ({} collars + {} HTTP + {} reserved)",
            self.workers, self.worker_connections, self.worker_http, self.fd_reserve
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Ok,
    /// Worth knowing; no effect on the gateway (e.g. what a load test from
    /// this host would need).
    Note,
    /// N connections would be held, but something degrades.
    Warn,
    /// This limit keeps N connections from being held.
    Stop,
}

impl Level {
    fn label(self) -> &'static str {
        match self {
            Level::Ok => "ok",
            Level::Note => "note",
            Level::Warn => "WARN",
            Level::Stop => "STOP",
        }
    }
}

/// What one limit means for N connections.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub level: Level,
    /// The limit, as the kernel names it.
    pub name: &'static str,
    /// Its value and what N connections need of it.
    pub text: String,
    /// How to change it, when it is not fine as it is.
    pub fix: Option<String>,
    /// The most collar connections this limit allows, when it bounds them.
    pub allows: Option<u64>,
}

fn finding(level: Level, name: &'static str, text: String) -> Finding {
    Finding { level, name, text, fix: None, allows: None }
}

impl Finding {
    fn fix(mut self, fix: String) -> Finding {
        self.fix = Some(fix);
        self
    }

    fn allows(mut self, n: u64) -> Finding {
        self.allows = Some(n);
        self
    }
}

/// Where the sysctl settings are kept for boot (see the README).
const SYSCTL_FILE: &str = "contrib/sysctl.d/90-tether.conf";

fn persist() -> String {
    format!("; to keep it across reboots, install {SYSCTL_FILE} in /etc/sysctl.d/")
}

/// `n` rounded up to a power of two, which is how these limits are
/// usually written.
fn round_up(n: u64) -> u64 {
    n.checked_next_power_of_two().unwrap_or(n)
}

/// Every finding for `want` on a host with `r`, in a fixed order.
pub fn check(r: &Readings, want: &Want) -> Vec<Finding> {
    let mut out = Vec::new();
    let (n, d, overhead) = (want.connections, want.descriptors(), want.overhead());
    let needs = want.needs();
    // Descriptors over all processes, for the system-wide limits.
    let all = d * want.workers.max(1);

    out.push(match r.fd_limit {
        None => finding(Level::Warn, "RLIMIT_NOFILE", "cannot be read".into()),
        Some((soft, hard)) => {
            // An unlimited hard limit is still capped by fs.nr_open.
            let hard = if hard == u64::MAX { r.nr_open.unwrap_or(hard) } else { hard };
            let text = format!("soft {soft}, hard {hard} (this shell's; a systemd unit sets its own): {needs}");
            if hard < d {
                finding(Level::Stop, "RLIMIT_NOFILE", text)
                    .fix(format!(
                        "raise the hard limit where tether starts: LimitNOFILE={d} in its systemd unit \
                         (contrib/systemd/tether.service), `ulimit -Hn {d}` in a root shell (needs \
                         CAP_SYS_RESOURCE), or nofile in /etc/security/limits.conf; or lower \
                         --max-http-connections"
                    ))
                    .allows(want.total_for(hard.saturating_sub(overhead)))
            } else if soft < d {
                finding(Level::Ok, "RLIMIT_NOFILE", format!("{text}; tether raises its soft limit to the hard one"))
                    .allows(want.total_for(hard.saturating_sub(overhead)))
            } else {
                finding(Level::Ok, "RLIMIT_NOFILE", text).allows(want.total_for(hard.saturating_sub(overhead)))
            }
        }
    });

    out.push(match r.nr_open {
        None => finding(Level::Warn, "fs.nr_open", "cannot be read".into()),
        Some(nr_open) => {
            let f = finding(
                if nr_open < d { Level::Stop } else { Level::Ok },
                "fs.nr_open",
                format!("{nr_open}, the ceiling of any hard fd limit: {d} needed"),
            )
            .allows(want.total_for(nr_open.saturating_sub(overhead)));
            if nr_open < d { f.fix(format!("sysctl -w fs.nr_open={}{}", round_up(d), persist())) } else { f }
        }
    });

    out.push(match r.file_max {
        None => finding(Level::Warn, "fs.file-max", "cannot be read".into()),
        Some(max) => {
            let open = r.files_open.unwrap_or(0);
            let free = max.saturating_sub(open);
            let text = format!("{max} file handles system-wide, {open} in use: {all} more needed");
            let per = (free / want.workers.max(1)).saturating_sub(overhead);
            let f = finding(if free < all { Level::Stop } else { Level::Ok }, "fs.file-max", text)
                .allows(want.total_for(per));
            if free < all {
                f.fix(format!("sysctl -w fs.file-max={}{}", round_up(open + 2 * all), persist()))
            } else {
                f
            }
        }
    });

    out.push(match r.somaxconn {
        None => finding(Level::Warn, "net.core.somaxconn", "cannot be read".into()),
        Some(v) if v < want.backlog => finding(
            Level::Warn,
            "net.core.somaxconn",
            format!(
                "{v}, below --backlog {}: when {n} collars reconnect at once (a restart, a network blip) \
                 the accept queue overflows and connects wait seconds for SYN retries",
                want.backlog
            ),
        )
        .fix(format!("sysctl -w net.core.somaxconn={}{}", want.backlog, persist())),
        Some(v) => finding(Level::Ok, "net.core.somaxconn", format!("{v}, at least --backlog {}", want.backlog)),
    });

    // Past the SYN queue the kernel answers with cookies, unless they are
    // off; then the SYNs are dropped like an overflowing accept queue's.
    out.push(match (r.syn_backlog, r.syncookies) {
        (None, _) => finding(Level::Warn, "net.ipv4.tcp_max_syn_backlog", "cannot be read".into()),
        (Some(v), _) if v >= want.backlog => {
            finding(Level::Ok, "net.ipv4.tcp_max_syn_backlog", format!("{v}, at least --backlog {}", want.backlog))
        }
        (Some(v), Some(1)) => finding(
            Level::Note,
            "net.ipv4.tcp_max_syn_backlog",
            format!(
                "{v}, below --backlog {}: past it the kernel answers with SYN cookies (tcp_syncookies=1)",
                want.backlog
            ),
        )
        .fix(format!("sysctl -w net.ipv4.tcp_max_syn_backlog={}{}", want.backlog, persist())),
        (Some(v), _) => finding(
            Level::Warn,
            "net.ipv4.tcp_max_syn_backlog",
            format!(
                "{v}, below --backlog {}, and no SYN cookies: a reconnect storm of {n} collars loses SYNs \
                 to retries that take seconds",
                want.backlog
            ),
        )
        .fix(format!(
            "sysctl -w net.ipv4.tcp_max_syn_backlog={} (or net.ipv4.tcp_syncookies=1){}",
            want.backlog,
            persist()
        )),
    });

    // A worker that restarts closes its listener: without tcp_migrate_req
    // the connections waiting in its accept queue are reset.
    if want.workers > 1 {
        out.push(match r.migrate_req {
            None => finding(Level::Warn, "net.ipv4.tcp_migrate_req", "cannot be read (before Linux 5.14)".into()),
            Some(0) => finding(
                Level::Warn,
                "net.ipv4.tcp_migrate_req",
                format!(
                    "0: when one of the {} workers restarts, the connections in its accept queue are reset",
                    want.workers
                ),
            )
            .fix(format!("sysctl -w net.ipv4.tcp_migrate_req=1{}", persist())),
            Some(v) => finding(
                Level::Ok,
                "net.ipv4.tcp_migrate_req",
                format!("{v}: a restarting worker's queued connections move to another"),
            ),
        });
    }

    match r.port_range {
        None => out.push(finding(Level::Warn, "net.ipv4.ip_local_port_range", "cannot be read".into())),
        Some((lo, hi)) => {
            let reserved = r.reserved_ports.as_deref().unwrap_or(&[]);
            let exposed: Vec<u16> = want
                .ports
                .iter()
                .copied()
                .filter(|&p| p != 0 && (lo..=hi).contains(&p))
                .filter(|&p| !reserved.iter().any(|&(a, b)| (a..=b).contains(&p)))
                .collect();
            let ports = u64::from(hi.saturating_sub(lo)) + 1;
            let sources = n.div_ceil(ports);
            let load = format!(
                "{lo}-{hi} ({ports} ports): incoming connections take no local port; a load generator on \
                 this host needs {sources} source address(es) toward one port"
            );
            out.push(if exposed.is_empty() {
                finding(if sources > 1 { Level::Note } else { Level::Ok }, "net.ipv4.ip_local_port_range", load)
            } else {
                let list: Vec<String> = exposed.iter().map(u16::to_string).collect();
                finding(
                    Level::Warn,
                    "net.ipv4.ip_local_port_range",
                    format!(
                        "{load}; it holds tether's port(s) {}: an outgoing connection may take one while \
                         tether restarts, which then cannot bind it",
                        list.join(", ")
                    ),
                )
                .fix(format!(
                    "sysctl -w net.ipv4.ip_local_reserved_ports={}{}",
                    list.join(","),
                    persist()
                ))
            });
        }
    }

    out.push(match r.conntrack {
        None => finding(Level::Ok, "net.netfilter.nf_conntrack_max", "conntrack not loaded: no table to fill".into()),
        Some((max, count)) => {
            let free = max.saturating_sub(count);
            let need = n + want.http_connections;
            let text = format!(
                "{max} entries, {count} in use: {need} needed (one per connection); a full table drops new connections"
            );
            let f = finding(if free < need { Level::Stop } else { Level::Ok }, "net.netfilter.nf_conntrack_max", text)
                .allows(free.saturating_sub(want.http_connections));
            if free < need {
                f.fix(format!(
                    "sysctl -w net.netfilter.nf_conntrack_max={}{}; or exempt tether's ports from tracking \
                     (nftables: `notrack` in a chain of priority raw)",
                    round_up(count + 2 * need),
                    persist()
                ))
            } else {
                f
            }
        }
    });

    out.push(match r.mem_available {
        None => finding(Level::Warn, "MemAvailable", "cannot be read".into()),
        Some(available) => {
            let need = n * BYTES_PER_CONNECTION;
            let text = format!(
                "{} available: {n} idle connections take about {} ({} each, kernel and gateway)",
                bytes(available),
                bytes(need),
                bytes(BYTES_PER_CONNECTION)
            );
            let allows = available / BYTES_PER_CONNECTION;
            if need > available {
                finding(Level::Stop, "MemAvailable", text)
                    .fix("more memory, or fewer collars per gateway".into())
                    .allows(allows)
            } else if need > available / 2 {
                finding(Level::Warn, "MemAvailable", format!("{text}, over half of it: little is left for bursts"))
                    .fix("more memory, or fewer collars per gateway".into())
                    .allows(allows)
            } else {
                finding(Level::Ok, "MemAvailable", text).allows(allows)
            }
        }
    });

    out.push(match r.tcp_mem {
        None => finding(Level::Warn, "net.ipv4.tcp_mem", "cannot be read".into()),
        Some([low, pressure, max]) => {
            let text = format!(
                "{low} {pressure} {max} pages of {} B: when every collar has a line in flight at once (a \
                 heartbeat round) each socket holds at least a page, {n} pages",
                r.page_size
            );
            let fix = || {
                format!("sysctl -w net.ipv4.tcp_mem=\"{low} {} {}\"{}", pressure.max(n), max.max(n + n / 2), persist())
            };
            if n > max {
                finding(Level::Stop, "net.ipv4.tcp_mem", format!("{text}: past the max the kernel drops what arrives"))
                    .fix(fix())
                    .allows(max)
            } else if n > pressure {
                finding(
                    Level::Warn,
                    "net.ipv4.tcp_mem",
                    format!("{text}: past the pressure mark the kernel shrinks every socket's buffers"),
                )
                .fix(fix())
                .allows(max)
            } else {
                finding(Level::Ok, "net.ipv4.tcp_mem", text).allows(max)
            }
        }
    });

    out.push(match (r.tcp_rmem, r.tcp_wmem, r.tcp_mem) {
        (Some(rmem), Some(wmem), Some([_, _, max])) => {
            let floor = n * (rmem[0] + wmem[0]);
            let max_bytes = max * r.page_size;
            let text = format!(
                "min {} + {} B per socket, default {} + {} B (grown only when used; collars send short lines)",
                rmem[0], wmem[0], rmem[1], wmem[1]
            );
            if floor > max_bytes {
                finding(
                    Level::Warn,
                    "net.ipv4.tcp_rmem/tcp_wmem",
                    format!(
                        "{text}: the minimums, which the kernel keeps for each socket under pressure, come to {} \
                         for {n}, more than tcp_mem's max ({})",
                        bytes(floor),
                        bytes(max_bytes)
                    ),
                )
                .fix(format!("raise net.ipv4.tcp_mem's max to at least {} pages", floor.div_ceil(r.page_size.max(1))))
            } else {
                finding(Level::Ok, "net.ipv4.tcp_rmem/tcp_wmem", text)
            }
        }
        _ => finding(Level::Warn, "net.ipv4.tcp_rmem/tcp_wmem", "cannot be read".into()),
    });
    out
}

/// The most collar connections the findings allow, and the limit that
/// binds first; `None` when no limit could be read.
pub fn capacity(findings: &[Finding]) -> Option<(u64, &'static str)> {
    findings.iter().filter_map(|f| Some((f.allows?, f.name))).min_by_key(|&(n, _)| n)
}

/// Whether any finding stops N connections (the command's exit status).
pub fn stops(findings: &[Finding]) -> bool {
    findings.iter().any(|f| f.level == Level::Stop)
}

/// The report `tether check-host` prints.
pub fn render(findings: &[Finding], want: &Want) -> String {
    let n = want.connections;
    let mut out = if want.workers <= 1 {
        format!(
            "tether check-host: can this host hold {n} collar connections? ({} descriptors with {} HTTP \
             (--max-http-connections) and {} reserved (--fd-reserve); nothing is changed)\n\n",
            want.descriptors(),
            want.http_connections,
            want.fd_reserve
        )
    } else {
        format!(
            "tether check-host: can this host hold {n} collar connections in {} workers? (each holds up to {} \
             collars and {} HTTP connections, --worker-headroom {}% included, and keeps {} descriptors in \
             reserve: {} descriptors a process; nothing is changed)\n\n",
            want.workers,
            want.worker_connections,
            want.worker_http,
            want.headroom,
            want.fd_reserve,
            want.descriptors()
        )
    };

    let width = findings.iter().map(|f| f.name.len()).max().unwrap_or(0);
    for f in findings {
        let _ = writeln!(out, "{:<4}  {:<width$}  {}", f.level.label(), f.name, f.text);
        if let Some(fix) = &f.fix {
            let _ = writeln!(out, "{:<4}  {:<width$}  fix: {fix}", "", "");
        }
    }
    out.push('\n');
    if let Some((most, limit)) = capacity(findings) {
        let _ = writeln!(out, "At most {most} collar connections fit here; {limit} is the first limit.");
    }
    let count = |level| findings.iter().filter(|f| f.level == level).count();
    let (stop, warn) = (count(Level::Stop), count(Level::Warn));
    if stop > 0 {
        let _ = writeln!(out, "{stop} limit(s) stop {n} connections (STOP above), {warn} warning(s).");
    } else {
        let _ = writeln!(out, "Nothing here stops {n} connections; {warn} warning(s).");
    }
    out
}

/// Bytes in the unit that reads best (powers of 1024).
fn bytes(n: u64) -> String {
    match n {
        0..1024 => format!("{n} B"),
        1024..1_048_576 => format!("{:.1} KiB", n as f64 / 1024.0),
        1_048_576..1_073_741_824 => format!("{:.1} MiB", n as f64 / 1_048_576.0),
        _ => format!("{:.1} GiB", n as f64 / 1_073_741_824.0),
    }
}

#[cfg(test)]
mod tests;
