//! The processes of the scale-out bench: one `redis-server` and a few
//! gateways on it, on free loopback ports, killed when dropped; and a
//! Redis client for the bench's own questions, which counts what it asks
//! so that its commands can be taken out of Redis's command counts.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use tether::redis::codec::{self, Frame, OwnedFrame};

/// How long a process may take to start, and one control request.
pub const CONTROL_TIMEOUT: Duration = Duration::from_secs(15);

/// A child process, killed and reaped when dropped.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `redis-server` without persistence.
pub struct RedisProcess {
    _child: Killed,
    pub addr: SocketAddr,
    pub version: String,
}

/// Why Redis did not start.
pub enum RedisStart {
    /// Not installed: nothing can be measured.
    Missing,
    Failed(String),
}

impl RedisProcess {
    pub fn start() -> Result<RedisProcess, RedisStart> {
        let port = free_port().map_err(RedisStart::Failed)?;
        let spawned = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--daemonize", "no"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let child = match spawned {
            Ok(child) => Killed(child),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(RedisStart::Missing),
            Err(e) => return Err(RedisStart::Failed(format!("cannot run redis-server: {e}"))),
        };
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let deadline = Instant::now() + CONTROL_TIMEOUT;
        let mut probe = loop {
            if let Ok(mut probe) = Probe::connect(addr)
                && probe.call(&["PING"]).is_ok()
            {
                break probe;
            }
            if Instant::now() > deadline {
                return Err(RedisStart::Failed(format!("redis-server did not answer on {addr}")));
            }
            // Polling a port that is not listening yet: nothing to wait on.
            std::thread::sleep(Duration::from_millis(20));
        };
        let version = probe.info("server").ok().and_then(|i| field(&i, "redis_version")).unwrap_or("?".into());
        Ok(RedisProcess { _child: child, addr, version })
    }

    pub fn url(&self) -> String {
        format!("redis://{}", self.addr)
    }
}

/// A tether gateway started with `--redis`.
pub struct GatewayProcess {
    child: Killed,
    pub devices: SocketAddr,
    pub http: SocketAddr,
    /// Its id in the directory (`tether:gw:<id>:devs`).
    pub id: String,
    log: Receiver<String>,
}

impl GatewayProcess {
    /// Starts `bin` on free loopback ports with `--redis url` and `args`,
    /// and waits until it logs its listeners and its Redis links are up.
    pub fn start(bin: &str, url: &str, args: &[&str]) -> Result<GatewayProcess, String> {
        let mut child = Command::new(bin)
            .args(["--device-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0", "--stats-interval", "0"])
            .args(["--redis", url])
            .args(args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot run {bin}: {e}"))?;
        // A thread drains the log so the gateway never blocks on stderr.
        let stderr = child.stderr.take().expect("piped");
        let child = Killed(child);
        let (tx, log) = mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stderr);
            let mut line = String::new();
            while lines.read_line(&mut line).is_ok_and(|n| n > 0) {
                let _ = tx.send(std::mem::take(&mut line));
            }
        });
        let (mut devices, mut http, mut id, mut seen) = (None, None, None, String::new());
        let deadline = Instant::now() + CONTROL_TIMEOUT;
        while devices.is_none() || http.is_none() || id.is_none() {
            let line = match log.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(line) => line,
                Err(RecvTimeoutError::Timeout) => return Err(format!("{bin} did not come up in time:\n{seen}")),
                Err(RecvTimeoutError::Disconnected) => return Err(format!("{bin} exited:\n{seen}")),
            };
            let addr = |prefix: &str| -> Option<SocketAddr> {
                line.split(prefix).nth(1)?.split([' ', ',']).next()?.trim().parse().ok()
            };
            devices = devices.or(addr("devices: listening on "));
            http = http.or(addr("http: listening on "));
            if line.contains("redis: connected to") {
                id = line.rsplit("as gateway ").next().map(|s| s.trim().to_string());
            }
            seen.push_str(&line);
        }
        Ok(GatewayProcess { child, devices: devices.unwrap(), http: http.unwrap(), id: id.unwrap(), log })
    }

    /// The log lines at `WARN` or `ERROR` so far.
    pub fn warnings(&self) -> Vec<String> {
        self.log.try_iter().filter(|l| l.contains(" WARN ") || l.contains(" ERROR ")).map(|l| l.trim().into()).collect()
    }

    pub fn pid(&self) -> u32 {
        self.child.0.id()
    }

    /// The gateway's `/metrics`, as `name{labels}` → value.
    pub fn metrics(&self) -> Result<BTreeMap<String, f64>, String> {
        let body = http_get(self.http, "/metrics")?;
        Ok(body
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| {
                let (key, value) = l.rsplit_once(' ')?;
                Some((key.to_string(), value.parse().ok()?))
            })
            .collect())
    }
}

/// A Redis connection of the bench's own. Every command it sends is
/// counted under the name `INFO commandstats` gives it, so the bench's
/// questions can be subtracted from what it measures.
pub struct Probe {
    stream: TcpStream,
    buf: Vec<u8>,
    pub sent: BTreeMap<String, u64>,
}

impl Probe {
    pub fn connect(addr: SocketAddr) -> Result<Probe, String> {
        let stream = connect(addr)?;
        Ok(Probe { stream, buf: Vec::new(), sent: BTreeMap::new() })
    }

    pub fn call(&mut self, args: &[&str]) -> Result<OwnedFrame, String> {
        let mut out = Vec::new();
        let bytes: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
        codec::command(&mut out, &bytes);
        self.stream.write_all(&out).map_err(|e| format!("{args:?}: {e}"))?;
        *self.sent.entry(stat_name(args)).or_default() += 1;
        loop {
            if let Some((frame, used)) = codec::decode(&self.buf)? {
                self.buf.drain(..used);
                if let Some(error) = frame.error() {
                    return Err(format!("{args:?}: {error}"));
                }
                return Ok(frame);
            }
            read_more(&mut self.stream, &mut self.buf).map_err(|e| format!("{args:?}: {e}"))?;
        }
    }

    pub fn int(&mut self, args: &[&str]) -> Result<i64, String> {
        let frame = self.call(args)?;
        frame.int().ok_or_else(|| format!("{args:?}: not an integer: {frame:?}"))
    }

    /// One section of `INFO`.
    pub fn info(&mut self, section: &str) -> Result<String, String> {
        let frame = self.call(&["INFO", section])?;
        frame.text().map(str::to_string).ok_or_else(|| format!("INFO {section}: {frame:?}"))
    }

    /// `used_memory`, in bytes.
    pub fn used_memory(&mut self) -> Result<u64, String> {
        let info = self.info("memory")?;
        field(&info, "used_memory").and_then(|v| v.parse().ok()).ok_or_else(|| "no used_memory".to_string())
    }

    /// Calls per command since start (`INFO commandstats`), without the
    /// bench's own.
    pub fn commandstats(&mut self) -> Result<BTreeMap<String, u64>, String> {
        let info = self.info("commandstats")?;
        let mut calls: BTreeMap<String, u64> = info
            .lines()
            .filter_map(|l| {
                let (name, stats) = l.strip_prefix("cmdstat_")?.split_once(':')?;
                let n = stats.split(',').find_map(|kv| kv.strip_prefix("calls="))?.parse().ok()?;
                Some((name.to_string(), n))
            })
            .collect();
        // This INFO is not in its own answer; the ones before it are.
        let mut own = self.sent.clone();
        *own.entry("info".to_string()).or_default() -= 1;
        for (name, n) in own {
            if let Some(c) = calls.get_mut(&name) {
                *c = c.saturating_sub(n);
            }
        }
        calls.retain(|_, n| *n > 0);
        Ok(calls)
    }

    /// `MEMORY USAGE key SAMPLES 0` (every element counted), or `None`
    /// for a missing key.
    pub fn memory_usage(&mut self, key: &str) -> Result<Option<u64>, String> {
        let frame = self.call(&["MEMORY", "USAGE", key, "SAMPLES", "0"])?;
        Ok(frame.int().map(|n| n.max(0) as u64))
    }

    /// `entries-added` of a stream (Redis 7): how many entries were ever
    /// appended; 0 if the stream does not exist.
    pub fn stream_added(&mut self, key: &str) -> Result<u64, String> {
        if self.int(&["EXISTS", key])? == 0 {
            return Ok(0);
        }
        let frame = self.call(&["XINFO", "STREAM", key])?;
        let items = frame.items();
        items
            .chunks_exact(2)
            .find(|kv| kv[0].text() == Some("entries-added"))
            .and_then(|kv| kv[1].int())
            .map(|n| n.max(0) as u64)
            .ok_or_else(|| "XINFO STREAM has no entries-added (Redis 7 or later needed)".to_string())
    }

    /// Clients blocked in a command (the gateways' stream tails, waiting in
    /// `XREAD BLOCK` once they have read everything).
    pub fn blocked_clients(&mut self) -> Result<u64, String> {
        let info = self.info("clients")?;
        field(&info, "blocked_clients").and_then(|v| v.parse().ok()).ok_or_else(|| "no blocked_clients".to_string())
    }
}

/// The name `INFO commandstats` gives a command: `memory|usage` for a
/// subcommand of a container command, else the lower-case name.
fn stat_name(args: &[&str]) -> String {
    let name = args[0].to_ascii_lowercase();
    let containers = ["memory", "client", "xinfo", "config", "function", "object", "command", "latency"];
    match args.get(1) {
        Some(sub) if containers.contains(&name.as_str()) => format!("{name}|{}", sub.to_ascii_lowercase()),
        _ => name,
    }
}

/// A `name:value` line of `INFO`.
pub fn field(info: &str, name: &str) -> Option<String> {
    info.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(':')).map(|v| v.trim().to_string())
}

/// A port free on loopback now.
pub fn free_port() -> Result<u16, String> {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).map_err(|e| e.to_string())
}

/// A blocking loopback connection with bounded connect, read and write.
pub fn connect(addr: SocketAddr) -> Result<TcpStream, String> {
    crate::common::connect(addr, CONTROL_TIMEOUT)
}

/// Appends one read's worth to `buf`; an error at end of stream.
pub fn read_more(s: &mut TcpStream, buf: &mut Vec<u8>) -> Result<(), String> {
    let mut chunk = [0u8; 16 * 1024];
    match s.read(&mut chunk) {
        Ok(0) => Err("connection closed".to_string()),
        Ok(n) => {
            buf.extend_from_slice(&chunk[..n]);
            Ok(())
        }
        Err(e) => Err(e.to_string()),
    }
}

/// `GET path` on a new connection (`Connection: close`); the body of a 200.
fn http_get(addr: SocketAddr, path: &str) -> Result<String, String> {
    let mut s = connect(addr)?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n");
    s.write_all(request.as_bytes()).map_err(|e| format!("GET {path}: {e}"))?;
    let mut buf = Vec::new();
    // Connection: close: the body runs to the end of the stream.
    while read_more(&mut s, &mut buf).is_ok() {}
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").ok_or_else(|| format!("GET {path}: no answer"))?;
    if !head.starts_with("HTTP/1.1 200") {
        return Err(format!("GET {path}: {}", head.lines().next().unwrap_or("")));
    }
    Ok(body.to_string())
}
