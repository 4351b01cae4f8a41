//! Every setting of the gateway, and how the command line spells it.
//!
//! [`Config`] is both the library's configuration and the binary's CLI
//! (through clap's derive), so each default is written exactly once, in the
//! attribute beside its field. `Config::default()` is the CLI with no flags
//! and reads nothing else: the binary alone looks at the environment
//! (`TETHER_API_TOKEN`).

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::device::{DeviceKeys, DeviceSettings, Mac, Timeouts};
use crate::http::{HttpSettings, HttpTimeouts, Limits};
use crate::hub::flap::FlapSettings;
use crate::proto::Settings;
use crate::reactor::Budgets;
use crate::redis::{RedisSettings, RedisUrl};
use crate::tls::TlsFiles;

/// tether: a single-threaded TCP gateway for connected pet collars.
#[derive(Debug, Clone, Parser)]
#[command(name = "tether", version, about, long_about = None)]
pub struct Config {
    /// Address the collars connect to (a host name is resolved).
    #[arg(long, default_value = "0.0.0.0:3001", value_name = "ADDR", value_parser = parse_addr)]
    pub device_listen: SocketAddr,

    /// Longest accepted device line in bytes, `\n` included.
    #[arg(long, default_value = "1024", value_name = "BYTES", value_parser = parse_size)]
    pub max_line: usize,

    /// Time from connect to a successful IDENTIFY (0 disables).
    #[arg(long, default_value = "10s", value_name = "DURATION", value_parser = parse_duration)]
    pub handshake_timeout: Duration,

    /// Silence after which a device is sent a heartbeat PING (0 disables).
    #[arg(long, default_value = "30s", value_name = "DURATION", value_parser = parse_duration)]
    pub heartbeat_interval: Duration,

    /// Further silence after the PING before the device is presumed dead and
    /// closed without a BYE (0: never).
    #[arg(long, default_value = "10s", value_name = "DURATION", value_parser = parse_duration)]
    pub heartbeat_timeout: Duration,

    /// Silence after which a device is sent `BYE idle` and closed (0 disables).
    #[arg(long, default_value = "5m", value_name = "DURATION", value_parser = parse_duration)]
    pub idle_timeout: Duration,

    /// Listen backlog (the kernel caps it at net.core.somaxconn).
    #[arg(long, default_value = "4096", value_name = "N")]
    pub backlog: u32,

    /// TCP keepalive for accepted sockets as IDLE,INTERVAL,PROBES (0 disables).
    #[arg(long, default_value = "60s,10s,3", value_name = "IDLE,INTERVAL,PROBES", value_parser = parse_keepalive)]
    pub tcp_keepalive: TcpKeepalive,

    /// Longest time written data may stay unacknowledged before the kernel
    /// drops the connection (TCP_USER_TIMEOUT), so that a peer gone while
    /// output is pending is found as soon as an idle one. Default: the
    /// keepalive's IDLE + INTERVAL x PROBES (none with keepalive off); 0
    /// disables.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub tcp_user_timeout: Option<Duration>,

    /// Most collar connections held at once; more are told `BYE
    /// server-full`. Default: the file-descriptor limit minus --fd-reserve
    /// minus --max-http-connections. Capped there.
    #[arg(long, value_name = "N")]
    pub max_connections: Option<usize>,

    /// File descriptors kept back from the connection caps for listeners,
    /// the poller and files the gateway opens itself.
    #[arg(long, default_value = "32", value_name = "N")]
    pub fd_reserve: usize,

    /// Most unsent output held per connection before it is dropped as a
    /// slow consumer (e.g. 65536, 64KiB, 1MiB).
    #[arg(long, default_value = "64KiB", value_name = "BYTES", value_parser = parse_size)]
    pub max_output: usize,

    /// After a BYE, how long to wait for the peer to close before closing
    /// anyway (a lingering close, so the BYE is not lost to a reset).
    #[arg(long, default_value = "2s", value_name = "DURATION", value_parser = parse_duration)]
    pub linger_timeout: Duration,

    /// On SIGINT/SIGTERM, how long to wait for connections to close after
    /// `BYE shutdown` before closing the rest and exiting.
    #[arg(long, default_value = "5s", value_name = "DURATION", value_parser = parse_duration)]
    pub drain_timeout: Duration,

    /// How often the stats line is logged at info level (0 disables).
    #[arg(long, default_value = "10s", value_name = "DURATION", value_parser = parse_duration)]
    pub stats_interval: Duration,

    /// Address of the HTTP API for the phone app (a host name is resolved).
    #[arg(long, default_value = "127.0.0.1:3000", value_name = "ADDR", value_parser = parse_addr, help_heading = "App API (HTTP)")]
    pub http_listen: SocketAddr,

    /// Most HTTP connections (event streams included) held at once, a share
    /// of the descriptors of their own that collars cannot take. When full,
    /// the longest-idle keep-alive connection is closed to admit a new one;
    /// with none idle, the new one is answered 503.
    #[arg(long, default_value = "1024", value_name = "N", help_heading = "App API (HTTP)")]
    pub max_http_connections: usize,

    /// Most HTTP connections from one IP address (0: no limit); more are
    /// answered 429.
    #[arg(long, default_value = "64", value_name = "N", help_heading = "App API (HTTP)")]
    pub http_max_per_ip: usize,

    /// Time for a request's head and body to arrive, from its first byte
    /// (408 after).
    #[arg(long, default_value = "10s", value_name = "DURATION", value_parser = parse_duration, help_heading = "App API (HTTP)")]
    pub http_request_timeout: Duration,

    /// Keep-alive connections idle for this long are closed.
    #[arg(long, default_value = "60s", value_name = "DURATION", value_parser = parse_duration, help_heading = "App API (HTTP)")]
    pub http_idle_timeout: Duration,

    /// Largest request head (request line and headers); 431 above.
    #[arg(long, default_value = "8KiB", value_name = "BYTES", value_parser = parse_size, help_heading = "App API (HTTP)")]
    pub http_max_head: usize,

    /// Largest request body; 413 above.
    #[arg(long, default_value = "64KiB", value_name = "BYTES", value_parser = parse_size, help_heading = "App API (HTTP)")]
    pub http_max_body: usize,

    /// Value of Access-Control-Allow-Origin on every response.
    #[arg(long, default_value = "*", value_name = "ORIGIN", help_heading = "App API (HTTP)")]
    pub cors_origin: String,

    /// Require `Authorization: Bearer <token>` (or `?access_token=`) on every
    /// endpoint but /health. The binary also reads it from TETHER_API_TOKEN,
    /// which keeps it out of the process list.
    #[arg(long, value_name = "TOKEN", help_heading = "App API (HTTP)")]
    pub api_token: Option<String>,

    /// Recent device events kept for replay (Last-Event-ID, since=).
    #[arg(long, default_value = "10000", value_name = "N", help_heading = "App API (HTTP)")]
    pub event_history: usize,

    /// Most memory an HTTP client that does not read may cost: the kernel's
    /// send buffer (SO_SNDBUF is set to fit) and one turn's output. An
    /// event stream that falls behind further than --event-history is
    /// dropped as a slow consumer.
    #[arg(long, default_value = "1MiB", value_name = "BYTES", value_parser = parse_size, help_heading = "App API (HTTP)")]
    pub sse_max_backlog: usize,

    /// Period of the `: keepalive` comment on an otherwise quiet event stream.
    #[arg(long, default_value = "15s", value_name = "DURATION", value_parser = parse_duration, help_heading = "App API (HTTP)")]
    pub sse_keepalive: Duration,

    /// Longest `timeout=` a long poll may ask for; longer ones are capped.
    #[arg(long, default_value = "5m", value_name = "DURATION", value_parser = parse_duration, help_heading = "App API (HTTP)")]
    pub max_wait: Duration,

    /// Reads of 64 KiB per connection per turn of the loop.
    #[arg(long, default_value = "1", value_name = "N", value_parser = parse_count, help_heading = "Loop budgets (per turn)")]
    pub budget_reads: usize,

    /// HTTP requests answered per connection per turn.
    #[arg(long, default_value = "16", value_name = "N", value_parser = parse_count, help_heading = "Loop budgets (per turn)")]
    pub budget_requests: usize,

    /// Connections accepted per listener per turn.
    #[arg(long, default_value = "256", value_name = "N", value_parser = parse_count, help_heading = "Loop budgets (per turn)")]
    pub budget_accepts: usize,

    /// Deadlines handled per turn.
    #[arg(long, default_value = "1024", value_name = "N", value_parser = parse_count, help_heading = "Loop budgets (per turn)")]
    pub budget_timers: usize,

    /// Bytes written to one connection per turn.
    #[arg(long, default_value = "64KiB", value_name = "BYTES", value_parser = parse_size, help_heading = "Loop budgets (per turn)")]
    pub budget_write: usize,

    /// Bytes of event streams produced per turn, all streams together.
    #[arg(long, default_value = "1MiB", value_name = "BYTES", value_parser = parse_size, help_heading = "Loop budgets (per turn)")]
    pub budget_turn_write: usize,

    /// Time spent reading and answering per turn, all connections together
    /// (the rest wait, first in line, for the next turn).
    #[arg(long, default_value = "2ms", value_name = "DURATION", value_parser = parse_turn_time, help_heading = "Loop budgets (per turn)")]
    pub budget_turn_time: Duration,

    /// Redis for the fleet's directory and the bus between gateways, as
    /// redis://HOST:PORT[/DB] (see README "Scaling out"). Without it the
    /// gateway stands alone.
    #[arg(long, value_name = "URL", help_heading = "Scale-out (Redis)")]
    pub redis: Option<RedisUrl>,

    /// Lifetime of this gateway's liveness key in Redis (refreshed every
    /// third of it): a gateway that dies leaves the directory within it.
    #[arg(long, default_value = "5s", value_name = "DURATION", value_parser = parse_duration, help_heading = "Scale-out (Redis)")]
    pub redis_ttl: Duration,

    /// Longest wait for a Redis reply (then the link is closed and
    /// redialed) and for another gateway's answer to a command (then 504).
    #[arg(long, default_value = "5s", value_name = "DURATION", value_parser = parse_duration, help_heading = "Scale-out (Redis)")]
    pub redis_timeout: Duration,

    /// Longest wait between attempts to reconnect to Redis (the wait starts
    /// at 100 ms and doubles).
    #[arg(long, default_value = "5s", value_name = "DURATION", value_parser = parse_duration, help_heading = "Scale-out (Redis)")]
    pub redis_reconnect_max: Duration,

    /// Longest Redis reply accepted; a longer one closes the link.
    #[arg(long, default_value = "64MiB", value_name = "BYTES", value_parser = parse_size, help_heading = "Scale-out (Redis)")]
    pub redis_max_reply: usize,

    /// Most unsent commands held for Redis; past it, requests that need
    /// Redis get 503.
    #[arg(long, default_value = "64MiB", value_name = "BYTES", value_parser = parse_size, help_heading = "Scale-out (Redis)")]
    pub redis_max_output: usize,

    /// Worker processes sharing the two ports (SO_REUSEPORT), each a loop of
    /// its own under a small supervisor; `auto`: enough to hold
    /// --max-connections under the fd limit. 1: one process, no supervisor.
    /// With more, --max-connections, --max-http-connections and
    /// --http-max-per-ip are totals, shared out between the workers (see
    /// --worker-headroom).
    #[arg(long, default_value = "1", value_name = "N|auto", value_parser = parse_workers, help_heading = "Workers")]
    pub workers: Workers,

    /// Room each worker gets above its even share of --max-connections,
    /// --max-http-connections and --http-max-per-ip, in percent of that
    /// share (the kernel spreads connections between workers by a hash, not
    /// exactly evenly).
    #[arg(long, default_value = "10", value_name = "PERCENT", help_heading = "Workers")]
    pub worker_headroom: usize,

    /// Delay before a worker that died is started again; doubled at each
    /// further death, up to --worker-restart-max-delay.
    #[arg(long, default_value = "100ms", value_name = "DURATION", value_parser = parse_turn_time, help_heading = "Workers")]
    pub worker_restart_delay: Duration,

    /// The longest delay before a worker is started again.
    #[arg(long, default_value = "10s", value_name = "DURATION", value_parser = parse_turn_time, help_heading = "Workers")]
    pub worker_restart_max_delay: Duration,

    /// A worker that stayed up this long is restarted after
    /// --worker-restart-delay again when it dies (its back-off starts over).
    #[arg(long, default_value = "30s", value_name = "DURATION", value_parser = parse_duration, help_heading = "Workers")]
    pub worker_stable_after: Duration,

    /// Set by the supervisor on each worker it starts: its index, from 0.
    /// Makes this process a worker: SO_REUSEPORT on both listeners, and
    /// log lines that say `worker I:`.
    #[arg(long, hide = true, value_name = "I")]
    pub worker_index: Option<usize>,

    /// Set by the supervisor: how many times this worker was restarted.
    #[arg(long, hide = true, default_value = "0", value_name = "N")]
    pub worker_restarts: u64,

    /// Require collars to prove their key: IDENTIFY is answered with a
    /// CHALLENGE that the collar must answer with AUTH. FILE lists master
    /// keys, 64 hex digits a line (`#` comments and blank lines allowed);
    /// the first one keys new collars (`tether device-key`), any one is
    /// accepted. Without it, any client can claim any MAC.
    #[arg(long, value_name = "FILE", value_parser = DeviceKeys::load, help_heading = "Device security")]
    pub device_key_file: Option<DeviceKeys>,

    /// Takeovers of one MAC within --flap-window above which it is
    /// quarantined (0 disables the guard).
    #[arg(long, default_value = "10", value_name = "N", help_heading = "Device security")]
    pub flap_limit: u32,

    /// The sliding window over which takeovers are counted.
    #[arg(long, default_value = "60s", value_name = "DURATION", value_parser = parse_nonzero_duration, help_heading = "Device security")]
    pub flap_window: Duration,

    /// How long a flapping MAC's IDENTIFYs are refused (`ERR flapping`).
    #[arg(long, default_value = "60s", value_name = "DURATION", value_parser = parse_nonzero_duration, help_heading = "Device security")]
    pub flap_quarantine: Duration,

    /// Most MACs whose takeovers are tracked at once (about 200 bytes
    /// each); past it the least recently taken over is forgotten.
    #[arg(long, default_value = "10000", value_name = "N", value_parser = parse_count, help_heading = "Device security")]
    pub flap_max_tracked: usize,

    /// A second collar listener, speaking the same protocol inside TLS
    /// (off by default); the plain one stays, so a fleet can move over
    /// collar by collar. Needs --device-tls-cert and --device-tls-key.
    #[arg(long, value_name = "ADDR", requires_all = ["device_tls_cert", "device_tls_key"], help_heading = "TLS")]
    pub device_tls_listen: Option<SocketAddr>,

    /// The device TLS listener's certificate chain, leaf first (PEM).
    #[arg(long, value_name = "PEM", requires = "device_tls_listen", help_heading = "TLS")]
    pub device_tls_cert: Option<PathBuf>,

    /// The device TLS listener's private key (PEM).
    #[arg(long, value_name = "PEM", requires = "device_tls_listen", help_heading = "TLS")]
    pub device_tls_key: Option<PathBuf>,

    /// Mutual TLS: require a client certificate issued by this CA (PEM)
    /// on the device TLS listener; its subject's common name is the one
    /// MAC the collar may IDENTIFY as, and no AUTH challenge is asked.
    #[arg(long, value_name = "PEM", requires = "device_tls_listen", help_heading = "TLS")]
    pub device_tls_client_ca: Option<PathBuf>,

    /// Serve the HTTP API over HTTPS on --http-listen with this
    /// certificate chain (PEM); needs --http-tls-key.
    #[arg(long, value_name = "PEM", requires = "http_tls_key", help_heading = "TLS")]
    pub http_tls_cert: Option<PathBuf>,

    /// The HTTPS private key (PEM); needs --http-tls-cert.
    #[arg(long, value_name = "PEM", requires = "http_tls_cert", help_heading = "TLS")]
    pub http_tls_key: Option<PathBuf>,

    /// Accept TLS 1.2 as well as TLS 1.3 on every TLS listener.
    #[arg(long, help_heading = "TLS")]
    pub tls12: bool,

    /// Shape of the log lines on stderr: `text`, or `json` (one object a
    /// line: time, level, target, message) for a log shipper.
    #[arg(long, value_enum, default_value = "text", value_name = "FORMAT")]
    pub log_format: crate::logfmt::LogFormat,

    /// A command other than running the gateway (none: run it).
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// What the binary does instead of serving.
#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Print the key to provision on the collar with this MAC (64 hex
    /// digits): HMAC-SHA256 of the MAC, written upper-case with `:`, under
    /// the first master key of the file.
    DeviceKey {
        /// The gateway's key file.
        #[arg(long, value_name = "FILE", value_parser = DeviceKeys::load)]
        device_key_file: DeviceKeys,
        /// The collar's MAC (`CE:96:C2:78:27:FC` or `ce-96-c2-78-27-fc`).
        #[arg(value_parser = parse_mac)]
        mac: Mac,
    },
    /// Read this host's limits (fd limits, fs.nr_open, fs.file-max,
    /// somaxconn, the port range, conntrack, memory, TCP memory) and say
    /// which would stop N collar connections and how to fix each; exits 1
    /// if one would. Changes nothing. The gateway's flags before it
    /// (--max-http-connections, --fd-reserve, --backlog, the listen
    /// addresses) are taken into account.
    CheckHost {
        /// Collar connections to check for (default: --max-connections if
        /// given, else 100000).
        #[arg(long, value_name = "N")]
        connections: Option<u64>,
    },
}

impl Default for Config {
    fn default() -> Config {
        Config::parse_from(["tether"])
    }
}

impl Config {
    /// The device deadlines as the session rules take them.
    pub fn timeouts(&self) -> Timeouts {
        Timeouts {
            handshake: self.handshake_timeout,
            heartbeat_interval: self.heartbeat_interval,
            heartbeat_timeout: self.heartbeat_timeout,
            idle: self.idle_timeout,
        }
    }

    /// `TCP_USER_TIMEOUT` for accepted sockets: `--tcp-user-timeout`, by
    /// default the time keepalive takes to give up on an idle peer; `None`
    /// when off.
    pub fn tcp_user_timeout(&self) -> Option<Duration> {
        match (self.tcp_user_timeout, self.tcp_keepalive) {
            (Some(timeout), _) => (!timeout.is_zero()).then_some(timeout),
            (None, TcpKeepalive::Off) => None,
            (None, TcpKeepalive::On { idle, interval, probes }) => Some(idle + interval * probes),
        }
    }

    /// The HTTP deadlines.
    pub fn http_timeouts(&self) -> HttpTimeouts {
        HttpTimeouts {
            request: self.http_request_timeout,
            idle: self.http_idle_timeout,
            sse_keepalive: self.sse_keepalive,
        }
    }

    /// The HTTP request size limits.
    pub fn http_limits(&self) -> Limits {
        Limits { max_head: self.http_max_head, max_body: self.http_max_body }
    }

    /// The per-turn budgets of the loop.
    pub fn budgets(&self) -> Budgets {
        Budgets {
            reads: self.budget_reads,
            requests: self.budget_requests,
            accepts: self.budget_accepts,
            timers: self.budget_timers,
            write_bytes: self.budget_write,
            turn_write_bytes: self.budget_turn_write,
            turn_time: self.budget_turn_time,
        }
    }

    /// What the protocols read.
    pub fn settings(&self) -> Settings {
        Settings {
            device: DeviceSettings {
                max_line: self.max_line,
                max_output: self.max_output,
                timeouts: self.timeouts(),
                keys: self.device_key_file.clone(),
            },
            http: HttpSettings {
                limits: self.http_limits(),
                timeouts: self.http_timeouts(),
                cors_origin: self.cors_origin.clone(),
                api_token: self.api_token.clone(),
                max_wait: self.max_wait,
                max_command: self.max_line.saturating_sub(1),
                pause_above: self.budget_write,
            },
            redis: RedisSettings { max_reply: self.redis_max_reply, max_output: self.redis_max_output },
        }
    }

    /// The device TLS listener's files, if it is on.
    pub fn device_tls(&self) -> Option<TlsFiles> {
        self.device_tls_listen?;
        Some(TlsFiles {
            cert: self.device_tls_cert.clone()?,
            key: self.device_tls_key.clone()?,
            client_ca: self.device_tls_client_ca.clone(),
            tls12: self.tls12,
        })
    }

    /// The HTTPS files, if HTTPS is on.
    pub fn http_tls(&self) -> Option<TlsFiles> {
        Some(TlsFiles {
            cert: self.http_tls_cert.clone()?,
            key: self.http_tls_key.clone()?,
            client_ca: None,
            tls12: self.tls12,
        })
    }

    /// The flapping guard's settings.
    pub fn flap(&self) -> FlapSettings {
        FlapSettings {
            limit: self.flap_limit,
            window: self.flap_window,
            quarantine: self.flap_quarantine,
            max_tracked: self.flap_max_tracked,
        }
    }

    /// `SO_SNDBUF` for HTTP sockets: the kernel doubles the value for its
    /// bookkeeping, and a turn's output (`--budget-write`) waits in user
    /// space, so that a client that does not read costs at most
    /// `--sse-max-backlog` in all.
    pub fn http_send_buffer(&self) -> usize {
        (self.sse_max_backlog.saturating_sub(self.budget_write) / 2).max(MIN_SEND_BUFFER)
    }
}

/// The smallest `SO_SNDBUF` set on HTTP sockets (the kernel's own floor is
/// about 4.5 KiB).
const MIN_SEND_BUFFER: usize = 8 * 1024;

/// How many worker processes `--workers` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workers {
    /// This many (at least 1, at most [`MAX_WORKERS`]).
    Count(usize),
    /// Enough for `--max-connections` under the fd limit.
    Auto,
}

/// The most workers `--workers` (or `auto`) may start.
pub const MAX_WORKERS: usize = 256;

/// Parses `auto` or a count from 1 to [`MAX_WORKERS`].
pub fn parse_workers(text: &str) -> Result<Workers, String> {
    if text == "auto" {
        return Ok(Workers::Auto);
    }
    match text.parse::<usize>() {
        Ok(n @ 1..=MAX_WORKERS) => Ok(Workers::Count(n)),
        _ => Err(format!("{text:?} is not `auto` or a number of workers from 1 to {MAX_WORKERS}")),
    }
}

/// Kernel keepalive probes for accepted sockets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TcpKeepalive {
    Off,
    On {
        /// Idle time before the first probe.
        idle: Duration,
        /// Time between probes.
        interval: Duration,
        /// Unanswered probes before the kernel drops the connection.
        probes: u32,
    },
}

/// Parses `250ms`, `10s`, `5m`, `1h`, or a bare `0`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let err = || format!("{text:?} is not a duration like 250ms, 10s, 5m or 1h");
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    let split = text.find(|c: char| !c.is_ascii_digit()).ok_or_else(err)?;
    let (number, unit) = text.split_at(split);
    let n: u64 = number.parse().map_err(|_| err())?;
    let seconds = |factor: u64| n.checked_mul(factor).map(Duration::from_secs).ok_or_else(err);
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "s" => seconds(1),
        "m" => seconds(60),
        "h" => seconds(3600),
        _ => Err(err()),
    }
}

/// Parses a byte count: `4096`, `64KiB`, `1MiB` (also `K`/`KB`, `M`/`MB`,
/// all powers of 1024).
pub fn parse_size(text: &str) -> Result<usize, String> {
    let err = || format!("{text:?} is not a size like 4096, 64KiB or 1MiB");
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let n: usize = number.parse().map_err(|_| err())?;
    let factor = match unit {
        "" | "B" => 1,
        "K" | "KB" | "KiB" => 1 << 10,
        "M" | "MB" | "MiB" => 1 << 20,
        _ => return Err(err()),
    };
    match n.checked_mul(factor) {
        Some(0) | None => Err(err()),
        Some(bytes) => Ok(bytes),
    }
}

/// Parses a listening address: `IP:PORT` or `HOST:PORT` (resolved, the
/// first address wins).
pub fn parse_addr(text: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = text.parse() {
        return Ok(addr);
    }
    let mut addrs = text.to_socket_addrs().map_err(|e| format!("{text:?} is not HOST:PORT ({e})"))?;
    addrs.next().ok_or_else(|| format!("{text:?} resolves to no address"))
}

/// Parses a turn's time budget: a duration of at least 1 ms (each turn
/// serves at least one connection whatever it is).
pub fn parse_turn_time(text: &str) -> Result<Duration, String> {
    match parse_duration(text)? {
        d if d < Duration::from_millis(1) => Err(format!("{text:?}: a turn needs at least 1ms")),
        d => Ok(d),
    }
}

/// Parses a duration that is not zero.
pub fn parse_nonzero_duration(text: &str) -> Result<Duration, String> {
    match parse_duration(text)? {
        Duration::ZERO => Err(format!("{text:?}: must be more than 0")),
        d => Ok(d),
    }
}

/// Parses a MAC as collars write it.
pub fn parse_mac(text: &str) -> Result<Mac, String> {
    Mac::parse(text.as_bytes()).map_err(|_| format!("{text:?} is not a MAC like CE:96:C2:78:27:FC"))
}

/// Parses a count of at least 1.
pub fn parse_count(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(0) | Err(_) => Err(format!("{text:?} is not a count of at least 1")),
        Ok(n) => Ok(n),
    }
}

/// Parses `IDLE,INTERVAL,PROBES` (e.g. `60s,10s,3`), or `0`/`off`.
pub fn parse_keepalive(text: &str) -> Result<TcpKeepalive, String> {
    if text == "0" || text == "off" {
        return Ok(TcpKeepalive::Off);
    }
    let err = |why: String| format!("{text:?}: expected IDLE,INTERVAL,PROBES like 60s,10s,3 ({why})");
    let parts: Vec<&str> = text.split(',').collect();
    let [idle, interval, probes] = parts[..] else {
        return Err(err("three parts".into()));
    };
    let idle = parse_duration(idle).map_err(err)?;
    let interval = parse_duration(interval).map_err(err)?;
    let probes: u32 = probes.parse().map_err(|_| err(format!("{probes:?} is not a count")))?;
    if idle < Duration::from_secs(1) || interval < Duration::from_secs(1) || probes == 0 {
        // The kernel counts keepalive times in whole seconds.
        return Err(err("times of at least 1s and at least one probe".into()));
    }
    Ok(TcpKeepalive::On { idle, interval, probes })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_readme() {
        let c = Config::default();
        assert_eq!(c.device_listen, "0.0.0.0:3001".parse().unwrap());
        assert_eq!(c.max_line, 1024);
        assert_eq!(c.handshake_timeout, Duration::from_secs(10));
        assert_eq!(c.heartbeat_interval, Duration::from_secs(30));
        assert_eq!(c.heartbeat_timeout, Duration::from_secs(10));
        assert_eq!(c.idle_timeout, Duration::from_secs(300));
        assert_eq!(c.backlog, 4096);
        assert_eq!(
            c.tcp_keepalive,
            TcpKeepalive::On { idle: Duration::from_secs(60), interval: Duration::from_secs(10), probes: 3 }
        );
        assert_eq!(c.tcp_user_timeout(), Some(Duration::from_secs(90)), "60 s + 3 x 10 s");
        assert_eq!(c.max_connections, None);
        assert_eq!(c.max_output, 64 * 1024);
        assert_eq!(c.drain_timeout, Duration::from_secs(5));
        assert_eq!(c.stats_interval, Duration::from_secs(10));
        assert_eq!(c.http_listen, "127.0.0.1:3000".parse().unwrap());
        assert_eq!(c.http_request_timeout, Duration::from_secs(10));
        assert_eq!(c.http_idle_timeout, Duration::from_secs(60));
        assert_eq!(c.http_max_head, 8 * 1024);
        assert_eq!(c.http_max_body, 64 * 1024);
        assert_eq!(c.cors_origin, "*");
        assert_eq!(c.event_history, 10_000);
        assert_eq!(c.sse_max_backlog, 1 << 20);
        assert_eq!(c.sse_keepalive, Duration::from_secs(15));
        assert_eq!(c.http_max_per_ip, 64);
        assert_eq!(c.budgets(), Budgets::default());
        assert_eq!(c.http_send_buffer(), (1024 - 64) * 1024 / 2);
        assert!(c.device_key_file.is_none() && c.command.is_none());
        assert_eq!(c.flap(), FlapSettings::default());
    }

    #[test]
    fn device_security_flags() {
        let dir = std::env::temp_dir().join(format!("tether-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("keys");
        std::fs::write(&file, format!("# current\n{}\n", "0f".repeat(32))).unwrap();
        let path = file.to_str().unwrap();
        let c = Config::try_parse_from(["tether", "--device-key-file", path, "--flap-limit", "3"]).unwrap();
        assert_eq!(c.device_key_file.as_ref().map(DeviceKeys::len), Some(1));
        assert_eq!(c.flap().limit, 3);
        let c =
            Config::try_parse_from(["tether", "device-key", "--device-key-file", path, "ce-96-c2-78-27-fc"]).unwrap();
        let Some(Command::DeviceKey { mac, .. }) = c.command else { panic!("{:?}", c.command) };
        assert_eq!(mac, Mac([0xCE, 0x96, 0xC2, 0x78, 0x27, 0xFC]));
        std::fs::write(&file, "not a key\n").unwrap();
        let e = Config::try_parse_from(["tether", "--device-key-file", path]).unwrap_err().to_string();
        assert!(e.contains(&format!("{path}: line 1: expected a key of 64 hex digits")), "{e}");
        assert!(!e.contains("not a key"), "the line is not echoed: {e}");
        assert!(Config::try_parse_from(["tether", "device-key", "--device-key-file", path, "CE:96"]).is_err());
        assert!(Config::try_parse_from(["tether", "--flap-quarantine", "0"]).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn addresses_may_name_a_host() {
        assert_eq!(parse_addr("127.0.0.1:3001"), Ok("127.0.0.1:3001".parse().unwrap()));
        let local = parse_addr("localhost:3001").unwrap();
        assert!(local.ip().is_loopback() && local.port() == 3001, "{local}");
        assert!(parse_addr("localhost").is_err(), "a port is needed");
        assert!(parse_count("0").is_err() && parse_count("x").is_err());
        assert_eq!(parse_count("3"), Ok(3));
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
        for bad in ["", "10", "s", "1.5s", "-1s", "10 s", "10sec", "99999999999999999999s"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("64KiB"), Ok(65536));
        assert_eq!(parse_size("1MiB"), Ok(1 << 20));
        assert_eq!(parse_size("2K"), Ok(2048));
        for bad in ["", "0", "KiB", "1GiB", "-1", "1.5K"] {
            assert!(parse_size(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn keepalive() {
        assert_eq!(parse_keepalive("0"), Ok(TcpKeepalive::Off));
        assert_eq!(parse_keepalive("off"), Ok(TcpKeepalive::Off));
        assert_eq!(
            parse_keepalive("2m,5s,9"),
            Ok(TcpKeepalive::On { idle: Duration::from_secs(120), interval: Duration::from_secs(5), probes: 9 })
        );
        for bad in ["60s", "60s,10s", "60s,10s,0", "500ms,10s,3", "60s,10s,x", "60s,10s,3,4"] {
            assert!(parse_keepalive(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn workers() {
        assert_eq!(Config::default().workers, Workers::Count(1));
        assert_eq!(Config::default().worker_index, None);
        assert_eq!(parse_workers("auto"), Ok(Workers::Auto));
        assert_eq!(parse_workers("4"), Ok(Workers::Count(4)));
        assert_eq!(parse_workers("256"), Ok(Workers::Count(MAX_WORKERS)));
        for bad in ["0", "257", "-1", "", "Auto", "2.5"] {
            assert!(parse_workers(bad).is_err(), "{bad:?}");
        }
        assert!(Config::try_parse_from(["tether", "--worker-restart-delay", "0"]).is_err(), "a crash loop would spin");
    }

    #[test]
    fn the_user_timeout_follows_keepalive_unless_given() {
        let parse = |args: &[&str]| Config::try_parse_from([&["tether"], args].concat()).unwrap().tcp_user_timeout();
        assert_eq!(parse(&["--tcp-keepalive", "1s,1s,2"]), Some(Duration::from_secs(3)));
        assert_eq!(parse(&["--tcp-keepalive", "off"]), None);
        assert_eq!(parse(&["--tcp-keepalive", "off", "--tcp-user-timeout", "750ms"]), Some(Duration::from_millis(750)));
        assert_eq!(parse(&["--tcp-user-timeout", "20s"]), Some(Duration::from_secs(20)));
        assert_eq!(parse(&["--tcp-user-timeout", "0"]), None);
        assert!(Config::try_parse_from(["tether", "--tcp-user-timeout", "soon"]).is_err());
    }

    #[test]
    fn command_line_overrides() {
        let c = Config::try_parse_from([
            "tether",
            "--device-listen",
            "127.0.0.1:0",
            "--max-connections",
            "10",
            "--idle-timeout",
            "0",
        ])
        .unwrap();
        assert_eq!(c.device_listen.port(), 0);
        assert_eq!(c.max_connections, Some(10));
        assert_eq!(c.idle_timeout, Duration::ZERO);
        assert!(Config::try_parse_from(["tether", "--max-line", "big"]).is_err());
    }

    #[test]
    fn subcommands_and_the_log_format() {
        let c = Config::default();
        assert!(c.command.is_none());
        assert_eq!(c.log_format, crate::logfmt::LogFormat::Text);
        let c = Config::try_parse_from(["tether", "--log-format", "json", "--fd-reserve", "8", "check-host"]).unwrap();
        assert!(matches!(c.command, Some(Command::CheckHost { connections: None })), "{:?}", c.command);
        assert_eq!((c.fd_reserve, c.log_format), (8, crate::logfmt::LogFormat::Json));
        let c = Config::try_parse_from(["tether", "check-host", "--connections", "5"]).unwrap();
        assert!(matches!(c.command, Some(Command::CheckHost { connections: Some(5) })), "{:?}", c.command);
    }
}
