//! Every setting of the gateway, and how the command line spells it.
//!
//! [`Config`] is both the library's configuration and the binary's CLI
//! (through clap's derive), so each default is written exactly once, in the
//! attribute beside its field. `Config::default()` is the CLI with no flags
//! and reads nothing else: the binary alone looks at the environment
//! (`TETHER_API_TOKEN`).

use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use clap::Parser;

use crate::device::{DeviceSettings, Timeouts};
use crate::http::{HttpSettings, HttpTimeouts, Limits};
use crate::proto::Settings;
use crate::reactor::Budgets;

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

    /// Shape of the log lines on stderr: `text`, or `json` (one object a
    /// line: time, level, target, message) for a log shipper.
    #[arg(long, value_enum, default_value = "text", value_name = "FORMAT")]
    pub log_format: crate::logfmt::LogFormat,

    /// A command other than running the gateway (none: run it).
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// What the binary does instead of running the gateway.
#[derive(Debug, Clone, PartialEq, Eq, clap::Subcommand)]
pub enum Command {
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
            device: DeviceSettings { max_line: self.max_line, max_output: self.max_output, timeouts: self.timeouts() },
            http: HttpSettings {
                limits: self.http_limits(),
                timeouts: self.http_timeouts(),
                cors_origin: self.cors_origin.clone(),
                api_token: self.api_token.clone(),
                max_wait: self.max_wait,
                max_command: self.max_line.saturating_sub(1),
                pause_above: self.budget_write,
            },
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
        assert_eq!((c.command, c.log_format), (None, crate::logfmt::LogFormat::Text));
        let c = Config::try_parse_from(["tether", "--log-format", "json", "--fd-reserve", "8", "check-host"]).unwrap();
        assert_eq!((c.command, c.fd_reserve), (Some(Command::CheckHost { connections: None }), 8));
        assert_eq!(c.log_format, crate::logfmt::LogFormat::Json);
        let c = Config::try_parse_from(["tether", "check-host", "--connections", "5"]).unwrap();
        assert_eq!(c.command, Some(Command::CheckHost { connections: Some(5) }));
    }
}
