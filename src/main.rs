//! The `tether` binary: parse the command line, raise the fd limit, run
//! the gateway until SIGINT/SIGTERM has drained it.
//!
//! With `--workers N` (N > 1) this process is the supervisor of N workers
//! instead (`tether::supervisor`); each worker is this binary again, with
//! `--worker-index I`, and runs the gateway as above.
//!
//! `tether check-host` reads the host's limits instead (`tether::checkhost`).

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use clap::{CommandFactory, Parser};
use log::{error, info, warn};

use tether::checkhost::{self, Readings, Want};
use tether::config::{Command, Workers};
use tether::supervisor::{self, Shares};
use tether::{Config, Exit, Gateway, logfmt, net};

/// Where the binary (never the library) looks for the API token, so that
/// it stays out of the process list.
const TOKEN_VARIABLE: &str = "TETHER_API_TOKEN";

fn main() -> ExitCode {
    let mut config = Config::parse();
    if let Some(Command::DeviceKey { device_key_file, mac }) = &config.command {
        let key = device_key_file.device_key(*mac);
        println!("{}", key.iter().map(|b| format!("{b:02x}")).collect::<String>());
        return ExitCode::SUCCESS;
    }
    if let Some(Command::CheckHost { connections }) = &config.command {
        return check_host(&config, *connections);
    }
    // A worker was given its share by the supervisor; anyone else works
    // out how many workers there are, and each one's share.
    let shares = match config.worker_index {
        Some(_) => None,
        None => {
            let ceiling = net::fd_limit().map(net::fd_ceiling).unwrap_or(u64::MAX);
            let shares = Shares::of(&config, ceiling);
            Some(shares.unwrap_or_else(|e| Config::command().error(clap::error::ErrorKind::ValueValidation, e).exit()))
        }
    };
    let supervising = shares.is_some_and(|s| s.workers > 1);
    if let Some(shares) = shares.filter(|_| supervising && config.redis.is_none()) {
        let why = format!(
            "--workers {} needs --redis: the workers share the fleet's directory, bus and events through it \
             (without it, each would know only its own collars)",
            shares.workers
        );
        Config::command().error(clap::error::ErrorKind::MissingRequiredArgument, why).exit();
    }
    let prefix = match config.worker_index {
        Some(index) => Some(format!("worker {index}: ")),
        None if supervising => Some("supervisor: ".into()),
        None => None,
    };
    logfmt::init(config.log_format, prefix);
    if let Some(shares) = shares {
        if supervising {
            return supervisor::run(&config, shares);
        }
        if config.workers == Workers::Auto {
            info!("--workers auto: one process holds --max-connections under its descriptor limit");
        }
    }
    if config.worker_index.is_some() {
        match config.worker_restarts {
            0 => info!("pid {}", std::process::id()),
            n => info!("pid {}, restart {n} of this worker", std::process::id()),
        }
    }
    if config.api_token.is_none() {
        config.api_token = std::env::var(TOKEN_VARIABLE).ok().filter(|token| !token.is_empty());
    }

    let who = config.worker_index.map_or("tether".into(), |index| format!("tether worker {index}"));
    match net::raise_fd_limit() {
        Ok((before, after)) if after.soft > before.soft => {
            info!("file descriptors: soft limit raised from {} to {} (the hard limit)", before.soft, after.soft)
        }
        Ok((_, limit)) => {
            info!("file descriptors: soft limit {} (the hard limit is {})", limit.soft, limit.hard)
        }
        Err(e) => warn!("cannot raise the file-descriptor limit: {e}"),
    }

    let listen = config.device_listen;
    let worker = config.worker_index.is_some();
    let mut gateway = match Gateway::bind(config) {
        Ok(gateway) => gateway,
        Err(e) => {
            error!("cannot start on {listen}: {e}");
            // A worker's supervisor gives up rather than start it again.
            return if worker { ExitCode::from(supervisor::CANNOT_START) } else { ExitCode::FAILURE };
        }
    };
    if let Err(e) = gateway.watch_signals() {
        error!("cannot watch for signals: {e}");
        return ExitCode::FAILURE;
    }
    // Only now that the loop watches for signals: a handler installed
    // before would take a stop signal that comes while starting (a worker
    // started as its supervisor is stopped) and leave the loop unaware of
    // it. Before this point, a stop signal ends the process at once, when
    // it holds no connection yet.
    if let Err(e) = exit_on_second_signal(&who) {
        warn!("cannot install the second-signal handler: {e}");
    }
    match gateway.run() {
        Ok(Exit::Drained | Exit::DrainTimedOut) => ExitCode::SUCCESS,
        Ok(Exit::Forced) => ExitCode::from(130),
        Err(e) => {
            error!("event loop failed: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `tether check-host`: this host's limits against `connections` collars
/// of a gateway started with `config`, on stdout; status 1 if a limit
/// would stop them. It reads and changes nothing else.
fn check_host(config: &Config, connections: Option<u64>) -> ExitCode {
    let ceiling = net::fd_limit().map(net::fd_ceiling).unwrap_or(u64::MAX);
    let want = match Want::new(config, connections, ceiling) {
        Ok(want) => want,
        Err(e) => {
            eprintln!("tether check-host: {e}");
            return ExitCode::FAILURE;
        }
    };
    let findings = checkhost::check(&Readings::read(), &want);
    print!("{}", checkhost::render(&findings, &want));
    if checkhost::stops(&findings) { ExitCode::FAILURE } else { ExitCode::SUCCESS }
}

/// The first SIGINT/SIGTERM starts a graceful drain (the gateway watches
/// for it); a second one exits at once, from the signal handler itself,
/// even if the loop were stuck: with status 130 after SIGINT, 143 after
/// SIGTERM, and a line on stderr saying so.
/// `who` starts the line: `tether`, or `tether worker 2` in a worker.
fn exit_on_second_signal(who: &str) -> std::io::Result<()> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let signalled = Arc::new(AtomicBool::new(false));
    for (signal, status, name) in [(SIGINT, 130, "SIGINT"), (SIGTERM, 143, "SIGTERM")] {
        // Written out now: the handler may not allocate.
        let message =
            format!("{who}: a second stop signal ({name}) while draining: exiting now with status {status}\n");
        let signalled = Arc::clone(&signalled);
        // SAFETY: the action runs inside the signal handler and only does
        // what is async-signal-safe there: an atomic swap, write(2) and
        // _exit(2). It allocates nothing and takes no lock.
        unsafe {
            signal_hook::low_level::register(signal, move || {
                if signalled.swap(true, Ordering::SeqCst) {
                    let _ = libc::write(libc::STDERR_FILENO, message.as_ptr().cast(), message.len());
                    libc::_exit(status);
                }
            })?;
        }
    }
    Ok(())
}
