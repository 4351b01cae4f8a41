//! The `tether` binary: parse the command line, raise the fd limit, run
//! the reactor until SIGINT/SIGTERM has drained it.

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use clap::Parser;
use log::{error, info, warn};

use tether::{Config, Exit, Reactor, net};

fn main() -> ExitCode {
    let config = Config::parse();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();

    if let Err(e) = exit_on_second_signal() {
        warn!("cannot install the second-signal handler: {e}");
    }
    match net::raise_fd_limit() {
        Ok((before, after)) => info!(
            "file descriptors: soft limit {} (raised from {}), hard limit {}",
            after.soft, before.soft, after.hard
        ),
        Err(e) => warn!("cannot raise the file-descriptor limit: {e}"),
    }

    let listen = config.device_listen;
    let mut reactor = match Reactor::bind(config) {
        Ok(reactor) => reactor,
        Err(e) => {
            error!("cannot start on {listen}: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Err(e) = reactor.watch_signals() {
        error!("cannot watch for signals: {e}");
        return ExitCode::FAILURE;
    }
    match reactor.run() {
        Ok(Exit::Drained | Exit::DrainTimedOut) => ExitCode::SUCCESS,
        Ok(Exit::Forced) => ExitCode::from(130),
        Err(e) => {
            error!("event loop failed: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The first SIGINT/SIGTERM starts a graceful drain (the reactor watches for
/// it); a second one exits at once, from the signal handler itself, even if
/// the loop were stuck. Exit status 130 after SIGINT, 143 after SIGTERM.
fn exit_on_second_signal() -> std::io::Result<()> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    use signal_hook::flag;
    let signalled = Arc::new(AtomicBool::new(false));
    for (signal, status) in [(SIGINT, 130), (SIGTERM, 143)] {
        // Order matters: the conditional exit sees the flag before this
        // signal sets it, so only a second signal exits.
        flag::register_conditional_shutdown(signal, status, Arc::clone(&signalled))?;
        flag::register(signal, Arc::clone(&signalled))?;
    }
    Ok(())
}
