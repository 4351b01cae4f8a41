//! The gateway: the reactor serving the hub, with the two listeners the
//! configuration asks for.
//!
//! [`Gateway::bind`] splits the file descriptors between collars and the
//! app's HTTP clients (each listener has its own cap, so neither can lock
//! the other out), binds both listeners, and builds the hub; [`Gateway::run`]
//! runs the loop until a stop request has drained it.

use std::io;
use std::net::SocketAddr;

use log::{info, warn};

use crate::config::Config;
use crate::device::protocol::AUTH_LINE_MAX;
use crate::hub::Hub;
use crate::hub::cluster::ClusterSettings;
use crate::net::{self, ListenOptions};
use crate::reactor::{Exit, Handle, Kind, Reactor, Settings, Spec};
use crate::stats::Stats;

/// A bound gateway, ready to run.
pub struct Gateway {
    reactor: Reactor<Hub>,
    hub: Hub,
    /// The TLS collar listener requires client certificates.
    mutual_tls: bool,
}

impl Gateway {
    /// Binds the listeners and prepares the loop. Call
    /// [`net::raise_fd_limit`] first: the connection caps are derived from
    /// the current limit.
    pub fn bind(config: Config) -> io::Result<Gateway> {
        if config.device_key_file.is_some() && config.max_line < AUTH_LINE_MAX {
            let why = format!("--max-line {} is too short for AUTH lines ({AUTH_LINE_MAX} bytes)", config.max_line);
            return Err(io::Error::new(io::ErrorKind::InvalidInput, why));
        }
        let fd_limit = net::fd_limit()?.soft;
        let (devices, http) = connection_caps(&config, fd_limit);
        let options = ListenOptions {
            backlog: config.backlog,
            keepalive: config.tcp_keepalive,
            user_timeout: config.tcp_user_timeout(),
            send_buffer: None,
            // A worker shares both ports with the others (see `supervisor`).
            reuse_port: config.worker_index.is_some(),
        };
        let device_tls = config.device_tls().map(|files| files.load().map(|tls| (tls, files))).transpose()?;
        let (http_tls, http_tls_files) = match config.http_tls() {
            Some(files) => (Some(files.load()?), Some(files)),
            None => (None, None),
        };
        let mut specs = vec![
            Spec {
                kind: Kind::Device,
                addr: config.device_listen,
                options,
                cap: devices,
                per_ip: None,
                evict_idle: false,
                open_while_draining: false,
                tls: None,
                tls_files: None,
            },
            Spec {
                kind: Kind::Http,
                addr: config.http_listen,
                options: ListenOptions { send_buffer: Some(config.http_send_buffer()), ..options },
                cap: http,
                per_ip: (config.http_max_per_ip > 0).then_some(config.http_max_per_ip),
                evict_idle: true,
                open_while_draining: true,
                tls: http_tls,
                tls_files: http_tls_files,
            },
        ];
        // The TLS collar listener, beside the plain one (which stays the
        // first device listener): each has the collar cap.
        if let (Some(addr), Some((tls, files))) = (config.device_tls_listen, device_tls) {
            specs.push(Spec { addr, tls: Some(tls), tls_files: Some(files), ..specs[0].clone() });
        }
        let settings = Settings {
            budgets: config.budgets(),
            linger_timeout: config.linger_timeout,
            drain_timeout: config.drain_timeout,
            stats_interval: config.stats_interval,
            fd_limit,
        };
        let mutual_tls = config.device_tls_client_ca.is_some();
        let reactor = Reactor::new(specs, config.settings(), settings)?;
        let cluster = config.redis.clone().map(|url| ClusterSettings {
            url,
            gateway_id: gateway_id(reactor.clock().unix_ms(0)),
            ttl: config.redis_ttl,
            timeout: config.redis_timeout,
            reconnect_max: config.redis_reconnect_max,
            remote_wait: config.max_wait,
        });
        let hub = Hub::new(reactor.clock(), config.event_history, config.cors_origin.clone(), cluster)
            .with_flap_guard(config.flap());
        let hub = match config.worker_index {
            Some(index) => hub.as_worker(index, config.worker_restarts),
            None => hub,
        };
        Ok(Gateway { reactor, hub, mutual_tls })
    }

    /// The address the collars connect to (useful after binding port 0).
    pub fn device_addr(&self) -> io::Result<SocketAddr> {
        self.reactor.local_addr(Kind::Device)
    }

    /// The address of the TLS collar listener, if there is one.
    pub fn device_tls_addr(&self) -> Option<SocketAddr> {
        self.reactor.local_addr_where(|spec| spec.kind == Kind::Device && spec.tls.is_some())
    }

    /// The address of the HTTP API.
    pub fn http_addr(&self) -> io::Result<SocketAddr> {
        self.reactor.local_addr(Kind::Http)
    }

    /// The collar connection cap in force.
    pub fn max_connections(&self) -> usize {
        self.cap(Kind::Device)
    }

    /// The HTTP connection cap in force.
    pub fn max_http_connections(&self) -> usize {
        self.cap(Kind::Http)
    }

    fn cap(&self, kind: Kind) -> usize {
        self.reactor.specs().find(|s| s.kind == kind).map_or(0, |s| s.cap)
    }

    /// The counters so far (after [`Gateway::run`] returns: the final ones).
    pub fn stats(&self) -> &Stats {
        self.reactor.stats()
    }

    /// Number of connections held, open or closing.
    pub fn connections(&self) -> usize {
        self.reactor.connections()
    }

    pub fn handle(&self) -> Handle {
        self.reactor.handle()
    }

    /// Treats SIGINT and SIGTERM as stop requests (see [`Handle::shutdown`]).
    pub fn watch_signals(&mut self) -> io::Result<()> {
        self.reactor.watch_signals()
    }

    /// Runs the loop until a stop request has been carried out.
    pub fn run(&mut self) -> io::Result<Exit> {
        // Logged here rather than in `bind`: once these lines are out, the
        // loop is serving and (if asked) watching for signals.
        match &self.reactor.config().device.keys {
            Some(keys) => info!(
                "devices: collars must prove their key (AUTH) under {} master key{}",
                keys.len(),
                if keys.len() == 1 { "" } else { "s" }
            ),
            None => warn!("devices: no --device-key-file: any client can claim any MAC"),
        }
        info!(
            "devices: listening on {} (backlog {}), at most {} connections",
            self.device_addr()?,
            self.reactor.specs().next().map_or(0, |s| s.options.backlog),
            self.max_connections()
        );
        if let Some(addr) = self.device_tls_addr() {
            let mutual = self.mutual_tls;
            info!(
                "devices: TLS on {addr}{}",
                if mutual { ", client certificates required (the CN is the MAC)" } else { "" }
            );
        }
        let http = self.reactor.specs().find(|s| s.kind == Kind::Http).cloned();
        if let Some(http) = http {
            info!(
                "http: listening on {}{}, at most {} connections ({} per address){}",
                self.http_addr()?,
                if http.tls.is_some() { " (HTTPS)" } else { "" },
                http.cap,
                http.per_ip.map_or("no limit".into(), |n| n.to_string()),
                if self.reactor.config().http.api_token.is_some() { ", bearer token required" } else { "" }
            );
        }
        self.reactor.run(&mut self.hub)
    }
}

/// A gateway id unique to this process's life: host name, process id and
/// start time, so that a restarted process never inherits the directory
/// entries of its previous life (they are swept once its liveness key
/// expires).
fn gateway_id(started_unix_ms: u64) -> String {
    let mut host = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname writes at
    // most that many bytes.
    let ok = unsafe { libc::gethostname(host.as_mut_ptr().cast(), host.len()) } == 0;
    let end = host.iter().position(|&b| b == 0).unwrap_or(host.len());
    let host = if ok { String::from_utf8_lossy(&host[..end]).into_owned() } else { "host".into() };
    let host: String =
        host.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '.' { c } else { '_' }).collect();
    format!("{host}-{}-{started_unix_ms:x}", std::process::id())
}

/// The collar and HTTP caps: `--max-http-connections` for HTTP, and what
/// the file-descriptor limit leaves (after the reserve) for collars, or
/// `--max-connections` if that is lower.
fn connection_caps(config: &Config, fd_limit: u64) -> (usize, usize) {
    let allowed = usize::try_from(fd_limit).unwrap_or(usize::MAX).saturating_sub(config.fd_reserve);
    let mut http = config.max_http_connections;
    if http >= allowed {
        http = allowed / 2;
        warn!(
            "--max-http-connections {} leaves no descriptors for collars under the limit of {fd_limit}; \
             capping it at {http}",
            config.max_http_connections
        );
    }
    let left = allowed - http;
    let devices = match config.max_connections {
        Some(asked) if asked > left => {
            warn!(
                "--max-connections {asked} needs more file descriptors than the limit allows ({fd_limit}, \
                 minus a reserve of {} and {http} for HTTP); capping at {left}",
                config.fd_reserve
            );
            left
        }
        Some(asked) => asked,
        None => left,
    };
    (devices, http)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_descriptors_are_shared_out_between_collars_and_http() {
        let config = Config::default();
        assert_eq!(connection_caps(&config, 20_000), (20_000 - 32 - 1024, 1024));
        let config = Config { max_connections: Some(60), ..Config::default() };
        assert_eq!(connection_caps(&config, 20_000), (60, 1024));
        let config = Config { max_connections: Some(1_000_000), ..Config::default() };
        assert_eq!(connection_caps(&config, 20_000), (20_000 - 32 - 1024, 1024), "capped at the limit");
        assert_eq!(connection_caps(&Config::default(), 1056), (512, 512), "a tiny limit is halved");
    }
}
