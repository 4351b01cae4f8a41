//! The `tether` binary: parse the command line, raise the fd limit, run
//! the gateway until SIGINT/SIGTERM has drained it; or, with a
//! subcommand, `check-host`.

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use clap::Parser;
use log::{error, info, warn};

use tether::checkhost::{self, Readings, Want};
use tether::config::Command;
use tether::{Config, Exit, Gateway, logfmt, net};

/// Where the binary (never the library) looks for the API token, so that
/// it stays out of the process list.
const TOKEN_VARIABLE: &str = "TETHER_API_TOKEN";

fn main() -> ExitCode {
    let mut config = Config::parse();
    if let Some(Command::CheckHost { connections }) = config.command {
        return check_host(&config, connections);
    }
    logfmt::init(config.log_format);
    if config.api_token.is_none() {
        config.api_token = std::env::var(TOKEN_VARIABLE).ok().filter(|token| !token.is_empty());
    }

    if let Err(e) = exit_on_second_signal() {
        warn!("cannot install the second-signal handler: {e}");
    }
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
    let mut gateway = match Gateway::bind(config) {
        Ok(gateway) => gateway,
        Err(e) => {
            error!("cannot start on {listen}: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Err(e) = gateway.watch_signals() {
        error!("cannot watch for signals: {e}");
        return ExitCode::FAILURE;
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
    let want = Want::new(config, connections);
    let findings = checkhost::check(&Readings::read(), &want);
    print!("{}", checkhost::render(&findings, &want));
    if checkhost::stops(&findings) { ExitCode::FAILURE } else { ExitCode::SUCCESS }
}

/// The first SIGINT/SIGTERM starts a graceful drain (the gateway watches
/// for it); a second one exits at once, from the signal handler itself,
/// even if the loop were stuck: with status 130 after SIGINT, 143 after
/// SIGTERM, and a line on stderr saying so.
fn exit_on_second_signal() -> std::io::Result<()> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let signalled = Arc::new(AtomicBool::new(false));
    let handlers: [(i32, i32, &'static [u8]); 2] = [
        (SIGINT, 130, b"tether: a second stop signal (SIGINT) while draining: exiting now with status 130\n"),
        (SIGTERM, 143, b"tether: a second stop signal (SIGTERM) while draining: exiting now with status 143\n"),
    ];
    for (signal, status, message) in handlers {
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
