//! The supervisor with real processes: it holds the two ports, starts the
//! workers, reaps them, and passes stop signals on; the decisions are
//! [`Supervisor`]'s.
//!
//! The loop sleeps in `epoll_wait` (a `mio::Poll`) on one source, the
//! signals (SIGCHLD, SIGINT, SIGTERM through signal-hook's self-pipe), with
//! a timeout only while a restart is waiting for its back-off. So it costs
//! nothing between events, and a child's exit is noticed at once.
//!
//! Each worker is spawned from `/proc/self/exe` (the binary the supervisor
//! runs, even if the file on disk was replaced by an upgrade meanwhile),
//! with these settings made between fork and exec:
//! - its own process group, so that a Ctrl-C in a terminal (SIGINT to the
//!   foreground group) reaches the supervisor only, which passes it on
//!   once; otherwise each worker would get it twice, and the second would
//!   force it to exit without draining. (Likewise, run it under systemd
//!   with `KillMode=mixed`, so that only the supervisor is sent SIGTERM.)
//! - `PR_SET_PDEATHSIG` = SIGTERM: if the supervisor dies without passing a
//!   signal on (`kill -9`, a crash), the kernel sends each worker SIGTERM,
//!   and it drains and exits instead of lingering as an orphan. (The
//!   setting survives exec; a supervisor that died before it was made is
//!   caught by comparing the parent's pid.)

use std::ffi::OsString;
use std::io;
use std::net::SocketAddr;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command, ExitCode, ExitStatus, Stdio};
use std::time::Instant;

use log::{error, info, warn};
use mio::{Events, Interest, Poll, Token};
use signal_hook_mio::v1_0::Signals;

use super::{Ending, Policy, Relay, Shares, Supervisor, Verdict};
use crate::config::{Config, Workers};
use crate::net;

/// The flags the supervisor sets for each worker itself: the user's own
/// are taken out of the worker's command line, and the worker's values
/// added at its end.
const SET_PER_WORKER: [&str; 8] = [
    "--workers",
    "--device-listen",
    "--http-listen",
    "--max-connections",
    "--max-http-connections",
    "--http-max-per-ip",
    "--worker-index",
    "--worker-restarts",
];

/// A worker's command line, but for `--worker-index` and
/// `--worker-restarts`: the supervisor's own arguments (`args`, without the
/// program name) without `SET_PER_WORKER`, then the addresses (with the
/// ports the supervisor holds) and the worker's caps.
pub fn worker_args(args: &[OsString], device: SocketAddr, http: SocketAddr, shares: &Shares) -> Vec<OsString> {
    let mut kept = Vec::with_capacity(args.len() + 8);
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        let text = arg.to_string_lossy();
        if SET_PER_WORKER.contains(&text.as_ref()) {
            // Its value follows. Clap takes no value that starts with `--`
            // for these flags, so this cannot swallow another flag.
            rest.next();
            continue;
        }
        if SET_PER_WORKER.iter().any(|flag| text.strip_prefix(flag).is_some_and(|value| value.starts_with('='))) {
            continue;
        }
        kept.push(arg.clone());
    }
    let mut add = |flag: &str, value: String| kept.extend([flag.into(), value.into()]);
    add("--device-listen", device.to_string());
    add("--http-listen", http.to_string());
    if let Some(devices) = shares.devices {
        add("--max-connections", devices.to_string());
    }
    add("--max-http-connections", shares.http.to_string());
    add("--http-max-per-ip", shares.per_ip.to_string());
    kept
}

/// Runs `shares.workers` workers of the gateway `config` describes until a
/// stop signal has drained them all; returns the supervisor's exit status.
pub fn run(config: &Config, shares: Shares) -> ExitCode {
    // Held until the supervisor returns (see `net::reserve`), with the
    // address each one is bound to (its port chosen if it asked for 0).
    let mut reserved = Vec::new();
    let mut held = Vec::new();
    for addr in [config.device_listen, config.http_listen] {
        match net::reserve(addr).and_then(|socket| Ok((socket.local_addr()?, socket))) {
            Ok((bound, socket)) => {
                held.push(bound.as_socket().unwrap_or(addr));
                reserved.push(socket);
            }
            Err(e) => {
                error!("cannot start on {addr}: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    let args = worker_args(&args, held[0], held[1], &shares);
    let argv0 = std::env::args_os().next().unwrap_or_else(|| "tether".into());
    let auto = match config.workers {
        Workers::Auto => " (--workers auto: the fewest whose caps fit under the descriptor limit)",
        Workers::Count(_) => "",
    };
    info!(
        "{} workers{auto} on {} and {}, supervised by pid {}; each holds {} {} HTTP connections ({} per \
         address){}",
        shares.workers,
        held[0],
        held[1],
        std::process::id(),
        match shares.devices {
            Some(n) => format!("at most {n} collars and"),
            None => "as many collars as its descriptors allow, and at most".into(),
        },
        shares.http,
        if shares.per_ip == 0 { "no limit".into() } else { shares.per_ip.to_string() },
        share_note(config)
    );
    let status = match Children::new(shares.workers, Policy::of(config), args, argv0) {
        Ok(mut workers) => workers.run(),
        Err(e) => {
            error!("cannot watch for signals: {e}");
            ExitCode::FAILURE
        }
    };
    drop(reserved);
    status
}

/// What the start-up line says of the caps' origin.
fn share_note(config: &Config) -> String {
    let collars = config.max_connections.map_or(String::new(), |n| format!("--max-connections {n}, "));
    format!(
        " (a share of {collars}--max-http-connections {} and --http-max-per-ip {} plus {}% headroom: these are \
         totals for all workers)",
        config.max_http_connections, config.http_max_per_ip, config.worker_headroom
    )
}

/// The worker processes and the loop that minds them.
struct Children {
    supervisor: Supervisor,
    /// The running child of each worker.
    children: Vec<Option<Child>>,
    poll: Poll,
    signals: Signals,
    args: Vec<OsString>,
    argv0: OsString,
}

const SIGNALS: Token = Token(0);

impl Children {
    fn new(count: usize, policy: Policy, args: Vec<OsString>, argv0: OsString) -> io::Result<Children> {
        let poll = Poll::new()?;
        // Before the first child: one that exits at once still wakes us.
        let mut signals = Signals::new([libc::SIGCHLD, libc::SIGINT, libc::SIGTERM, libc::SIGHUP])?;
        poll.registry().register(&mut signals, SIGNALS, Interest::READABLE)?;
        let supervisor = Supervisor::new(count, policy, Instant::now());
        Ok(Children { supervisor, children: (0..count).map(|_| None).collect(), poll, signals, args, argv0 })
    }

    fn run(&mut self) -> ExitCode {
        let mut events = Events::with_capacity(4);
        loop {
            for index in self.supervisor.due(Instant::now()) {
                self.start(index);
            }
            if let Some(status) = self.supervisor.exit_status() {
                let restarts = self.supervisor.restarts();
                info!("every worker has exited ({restarts} restarts in all); exiting with status {status}");
                return ExitCode::from(status);
            }
            let timeout = self.supervisor.next_start().map(|at| at.saturating_duration_since(Instant::now()));
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                // The workers drain on their own once the supervisor is gone
                // (their death signal).
                error!("supervisor loop failed: {e}");
                return ExitCode::FAILURE;
            }
            let signals: Vec<i32> = self.signals.pending().collect();
            for signal in signals {
                match signal {
                    libc::SIGCHLD => {}
                    // Not a stop: each worker reloads its TLS certificates.
                    libc::SIGHUP => {
                        info!("SIGHUP: passing it on to the workers, which reload their TLS certificates");
                        self.kill_all(signal);
                    }
                    _ => self.relay(signal),
                }
            }
            // A SIGCHLD may stand for several exits; checking each child is
            // cheap and misses none.
            self.reap();
        }
    }

    fn start(&mut self, index: usize) {
        let now = Instant::now();
        self.supervisor.started(index, now);
        match self.spawn(index) {
            Ok(child) => {
                info!("worker {index} started (pid {})", child.id());
                self.children[index] = Some(child);
            }
            Err(e) => {
                error!("cannot start worker {index}: {e}");
                let verdict = self.supervisor.ended(index, Ending::NotSpawned, now);
                self.follow(index, None, verdict);
            }
        }
    }

    fn spawn(&self, index: usize) -> io::Result<Child> {
        let restarts = self.supervisor.restarts_of(index);
        let supervisor = libc::pid_t::try_from(std::process::id()).unwrap_or(0);
        let mut command = Command::new("/proc/self/exe");
        command
            .arg0(&self.argv0)
            .args(&self.args)
            .args(["--worker-index", &index.to_string(), "--worker-restarts", &restarts.to_string()])
            .stdin(Stdio::null())
            .process_group(0);
        // SAFETY: between fork and exec the closure only makes two system
        // calls, which are async-signal-safe, and allocates nothing.
        unsafe {
            command.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                    return Err(io::Error::last_os_error());
                }
                // Died before the setting was made: it would never fire.
                if libc::getppid() != supervisor {
                    return Err(io::Error::from_raw_os_error(libc::ESRCH));
                }
                Ok(())
            });
        }
        command.spawn()
    }

    /// Passes a stop signal on to every running worker.
    fn relay(&mut self, signal: i32) {
        let name = signal_name(signal);
        let running = self.children.iter().flatten().count();
        match self.supervisor.signal(signal) {
            Relay::Drain => info!("{name}: passing it on to {running} workers, which drain"),
            Relay::Force => warn!("a second stop signal ({name}): passing it on, and the workers exit now"),
        }
        self.kill_all(signal);
    }

    fn kill_all(&self, signal: i32) {
        for child in self.children.iter().flatten() {
            let pid = libc::pid_t::try_from(child.id()).unwrap_or(0);
            // SAFETY: kill has no memory-safety preconditions. The child is
            // not reaped yet, so its pid cannot name another process.
            unsafe { libc::kill(pid, signal) };
        }
    }

    /// Collects every worker that has exited, and acts on the verdict.
    fn reap(&mut self) {
        for index in 0..self.children.len() {
            let Some(child) = &mut self.children[index] else { continue };
            let status = match child.try_wait() {
                Ok(Some(status)) => status,
                Ok(None) => continue,
                Err(e) => {
                    error!("cannot wait for worker {index}: {e}");
                    continue;
                }
            };
            let pid = child.id();
            self.children[index] = None;
            let verdict = self.supervisor.ended(index, ending(status), Instant::now());
            self.follow(index, Some((pid, status)), verdict);
        }
    }

    fn follow(&mut self, index: usize, exit: Option<(u32, ExitStatus)>, verdict: Verdict) {
        let what = match exit {
            Some((pid, status)) => format!("worker {index} (pid {pid}) {}", describe(status)),
            None => format!("worker {index} could not be spawned"),
        };
        match verdict {
            Verdict::Restart { after, restarts, total } => warn!(
                "{what}; restarting it in {} ms (restart {restarts} of this worker, {total} in all)",
                after.as_millis()
            ),
            Verdict::Stopped { drained: true } => info!("{what}: drained"),
            Verdict::Stopped { drained: false } => warn!("{what} while stopping"),
            Verdict::GiveUp => {
                error!("{what}: it cannot start, so neither can the gateway; stopping the others");
                self.kill_all(libc::SIGTERM);
            }
        }
    }
}

fn ending(status: ExitStatus) -> Ending {
    match (status.code(), status.signal()) {
        (Some(code), _) => Ending::Exited(code),
        (None, Some(signal)) => Ending::Killed(signal),
        (None, None) => Ending::Exited(-1),
    }
}

fn describe(status: ExitStatus) -> String {
    match ending(status) {
        Ending::Killed(signal) => format!("was killed by {}", signal_name(signal)),
        Ending::Exited(code) => format!("exited with status {code}"),
        Ending::NotSpawned => "was not spawned".into(),
    }
}

/// The usual name of a signal a worker may die of or be sent.
fn signal_name(signal: i32) -> String {
    let name = match signal {
        libc::SIGHUP => "SIGHUP",
        libc::SIGINT => "SIGINT",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGILL => "SIGILL",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGKILL => "SIGKILL",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGTERM => "SIGTERM",
        _ => return format!("signal {signal}"),
    };
    format!("{name} ({signal})")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(args: &[OsString]) -> Vec<String> {
        args.iter().map(|a| a.to_string_lossy().into_owned()).collect()
    }

    #[test]
    fn a_worker_gets_the_same_flags_with_its_own_addresses_and_caps() {
        let args: Vec<OsString> = [
            "--workers",
            "3",
            "--device-listen=0.0.0.0:0",
            "--max-line",
            "512",
            "--http-listen",
            "127.0.0.1:0",
            "--max-connections=900",
            "--api-token",
            "secret",
            "--max-http-connections",
            "30",
            "--http-max-per-ip=12",
        ]
        .iter()
        .map(OsString::from)
        .collect();
        let device = "0.0.0.0:4001".parse().unwrap();
        let http = "127.0.0.1:4000".parse().unwrap();
        let shares = Shares { workers: 3, devices: Some(330), http: 11, per_ip: 5 };
        assert_eq!(
            strings(&worker_args(&args, device, http, &shares)),
            [
                "--max-line",
                "512",
                "--api-token",
                "secret",
                "--device-listen",
                "0.0.0.0:4001",
                "--http-listen",
                "127.0.0.1:4000",
                "--max-connections",
                "330",
                "--max-http-connections",
                "11",
                "--http-max-per-ip",
                "5"
            ]
        );
        // Without a total, each worker's collar cap comes from its limit.
        let shares = Shares { workers: 3, devices: None, http: 11, per_ip: 5 };
        let args: Vec<OsString> = ["--workers=auto", "--max-line", "512"].iter().map(OsString::from).collect();
        assert_eq!(
            strings(&worker_args(&args, device, http, &shares)),
            [
                "--max-line",
                "512",
                "--device-listen",
                "0.0.0.0:4001",
                "--http-listen",
                "127.0.0.1:4000",
                "--max-http-connections",
                "11",
                "--http-max-per-ip",
                "5"
            ]
        );
    }

    #[test]
    fn a_flag_that_only_starts_like_one_of_ours_is_kept() {
        let args: Vec<OsString> = ["--workers-x", "--max-connectionsy=1"].iter().map(OsString::from).collect();
        let shares = Shares { workers: 2, devices: None, http: 1, per_ip: 0 };
        let addr = "127.0.0.1:1".parse().unwrap();
        let kept = strings(&worker_args(&args, addr, addr, &shares));
        assert_eq!(kept[..2], ["--workers-x", "--max-connectionsy=1"]);
    }

    #[test]
    fn signals_are_named() {
        assert_eq!(signal_name(libc::SIGKILL), "SIGKILL (9)");
        assert_eq!(signal_name(64), "signal 64");
        assert_eq!(describe(ExitStatus::from_raw(libc::SIGKILL)), "was killed by SIGKILL (9)");
        assert_eq!(describe(ExitStatus::from_raw(3 << 8)), "exited with status 3");
    }
}
