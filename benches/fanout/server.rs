//! The servers under test, as child processes on loopback ports, and what
//! `/proc` says about them (and about the kernel's TCP memory).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use crate::wire::{self, Proto, Value};

/// How long a server may take to start, and a control query to answer.
const CONTROL_TIMEOUT: Duration = Duration::from_secs(10);

/// A running server; killed when dropped.
pub struct Server {
    child: Child,
    pub pid: u32,
    pub proto: Proto,
    /// What was started: the binary (tether) or the version (Redis).
    pub label: String,
    /// tether's device port, or Redis's port.
    pub addr: SocketAddr,
    /// tether's HTTP port.
    pub http: Option<SocketAddr>,
    /// tether's log lines (after the start-up ones).
    log: Option<Receiver<String>>,
}

/// Why a server did not start.
pub enum StartError {
    /// Not installed: the row is skipped.
    Missing(String),
    Failed(String),
}

impl Server {
    /// Starts the tether binary at `bin` on free loopback ports with the
    /// flags `benches/common` passes plus `--max-http-connections` (and,
    /// where the build has a per-address cap, `--http-max-per-ip 0`: every
    /// subscriber comes from 127.0.0.1), nothing else (an older build may
    /// not know newer flags), and waits until it logs both listening
    /// addresses.
    pub fn tether(bin: &str, max_http_connections: usize) -> Result<Server, StartError> {
        let help = Command::new(bin)
            .arg("--help")
            .output()
            .map_err(|e| StartError::Failed(format!("cannot run {bin}: {e}")))?;
        let per_ip: &[&str] = if String::from_utf8_lossy(&help.stdout).contains("--http-max-per-ip") {
            &["--http-max-per-ip", "0"]
        } else {
            &[]
        };
        let mut child = Command::new(bin)
            .args(["--device-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0", "--stats-interval", "0"])
            .args(["--max-http-connections", &max_http_connections.to_string()])
            .args(per_ip)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| StartError::Failed(format!("cannot run {bin}: {e}")))?;
        // A thread keeps draining the log, so the gateway never blocks on
        // stderr; the lines come here until the receiver is dropped.
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut log = BufReader::new(stderr);
            let mut line = String::new();
            while log.read_line(&mut line).is_ok_and(|n| n > 0) {
                let _ = tx.send(std::mem::take(&mut line));
            }
        });
        let pid = child.id();
        let (mut devices, mut http, mut seen) = (None, None, String::new());
        let deadline = Instant::now() + CONTROL_TIMEOUT;
        while devices.is_none() || http.is_none() {
            let line = match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(line) => line,
                Err(RecvTimeoutError::Timeout) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(StartError::Failed(format!("{bin} did not log its addresses in time:\n{seen}")));
                }
                Err(RecvTimeoutError::Disconnected) => {
                    let status = child.wait().map(|s| s.to_string()).unwrap_or_default();
                    return Err(StartError::Failed(format!("{bin} exited ({status}):\n{seen}")));
                }
            };
            let addr = |prefix: &str| -> Option<SocketAddr> {
                line.split(prefix).nth(1)?.split([' ', ',']).next()?.trim().parse().ok()
            };
            devices = devices.or(addr("devices: listening on "));
            http = http.or(addr("http: listening on "));
            seen.push_str(&line);
        }
        Ok(Server {
            child,
            pid,
            proto: Proto::Tether,
            label: bin.to_string(),
            addr: devices.unwrap(),
            http,
            log: Some(rx),
        })
    }

    /// Starts `redis-server` on a free loopback port, without persistence,
    /// with the latency monitor on from 1 ms, and waits until it answers
    /// `PING`.
    pub fn redis() -> Result<Server, StartError> {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| StartError::Failed(format!("no free port: {e}")))?
            .port();
        let spawned = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--daemonize", "no", "--latency-monitor-threshold", "1"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let mut child = match spawned {
            Ok(child) => child,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(StartError::Missing(
                    "redis-server is not installed (apt-get install redis-server)".to_string(),
                ));
            }
            Err(e) => return Err(StartError::Failed(format!("cannot run redis-server: {e}"))),
        };
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let deadline = Instant::now() + CONTROL_TIMEOUT;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(StartError::Failed(format!("redis-server exited at start ({status})")));
            }
            if let Ok(Value::Text(pong)) = query(addr, &["PING"])
                && pong == "PONG"
            {
                break;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(StartError::Failed(format!("redis-server did not answer on {addr}")));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let version = match query(addr, &["INFO", "server"]) {
            Ok(Value::Text(info)) => info_field(&info, "redis_version").unwrap_or("?").to_string(),
            _ => "?".to_string(),
        };
        let pid = child.id();
        Ok(Server {
            child,
            pid,
            proto: Proto::Redis,
            label: format!("redis-server {version}"),
            addr,
            http: None,
            log: None,
        })
    }

    /// The log lines at `WARN` or `ERROR` since start-up (tether).
    pub fn warnings(&self) -> Vec<String> {
        let Some(rx) = &self.log else { return Vec::new() };
        rx.try_iter().filter(|l| l.contains(" WARN ") || l.contains(" ERROR ")).map(|l| l.trim().to_string()).collect()
    }

    /// Kills the server and reaps it.
    pub fn stop(mut self) {
        self.kill();
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// User + system CPU time of `pid`, in clock ticks (`/proc/<pid>/stat`).
pub fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The fields after the parenthesised command name; utime and stime are
    // the 14th and 15th of the whole line.
    let rest = stat.get(stat.rfind(')')? + 2..)?;
    let mut fields = rest.split_whitespace().skip(11);
    Some(fields.next()?.parse::<u64>().ok()? + fields.next()?.parse::<u64>().ok()?)
}

/// Clock ticks per second, for [`cpu_ticks`].
pub fn ticks_per_second() -> f64 {
    // SAFETY: sysconf only reads its argument.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz > 0 { hz as f64 } else { 100.0 }
}

/// A `kB` line of `/proc/<pid>/status` (`VmRSS:`, `VmHWM:`), in bytes.
pub fn status_bytes(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    Some(line.split_whitespace().nth(1)?.parse::<u64>().ok()? * 1024)
}

/// The kernel's TCP buffer memory, system-wide, in bytes: `mem` (pages) of
/// the `TCP:` line of `/proc/net/sockstat`.
pub fn tcp_mem_bytes() -> Option<u64> {
    let sockstat = std::fs::read_to_string("/proc/net/sockstat").ok()?;
    let line = sockstat.lines().find(|l| l.starts_with("TCP:"))?;
    let mut words = line.split_whitespace();
    words.find(|&w| w == "mem")?;
    // SAFETY: sysconf only reads its argument.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Some(words.next()?.parse::<u64>().ok()? * u64::try_from(page).unwrap_or(4096))
}

/// Sockets in use system-wide (`TCP: inuse`), to see the last run's go.
pub fn tcp_in_use() -> Option<u64> {
    let sockstat = std::fs::read_to_string("/proc/net/sockstat").ok()?;
    let line = sockstat.lines().find(|l| l.starts_with("TCP:"))?;
    let mut words = line.split_whitespace();
    words.find(|&w| w == "inuse")?;
    words.next()?.parse().ok()
}

/// Sends one RESP command on a new connection and reads the answer.
pub fn query(addr: SocketAddr, args: &[&str]) -> Result<Value, String> {
    let mut s = connect(addr)?;
    s.write_all(&wire::command(args)).map_err(|e| format!("{args:?}: {e}"))?;
    let mut buf = Vec::new();
    loop {
        if let Some(value) = Value::parse(&buf)? {
            return Ok(value);
        }
        read_more(&mut s, &mut buf).map_err(|e| format!("{args:?}: {e}"))?;
    }
}

/// `GET path` on a new connection (`Connection: close`); the body of a 200.
pub fn http_get(addr: SocketAddr, path: &str) -> Result<String, String> {
    let mut s = connect(addr)?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n");
    s.write_all(request.as_bytes()).map_err(|e| format!("GET {path}: {e}"))?;
    let mut buf = Vec::new();
    let head = loop {
        if let Some(end) = memchr::memmem::find(&buf, b"\r\n\r\n") {
            break end + 4;
        }
        read_more(&mut s, &mut buf).map_err(|e| format!("GET {path}: {e}"))?;
    };
    let head_text = String::from_utf8_lossy(&buf[..head]).into_owned();
    if !head_text.starts_with("HTTP/1.1 200") {
        return Err(format!("GET {path}: {}", head_text.lines().next().unwrap_or("")));
    }
    let length = head_text.lines().find_map(|l| {
        let (name, value) = l.split_once(':')?;
        name.trim().eq_ignore_ascii_case("content-length").then(|| value.trim().parse::<usize>().ok())?
    });
    loop {
        if length.is_some_and(|n| buf.len() >= head + n) {
            break;
        }
        match read_more(&mut s, &mut buf) {
            Ok(()) => {}
            Err(_) if length.is_none() => break, // closed: the body is what came
            Err(e) => return Err(format!("GET {path}: {e}")),
        }
    }
    Ok(String::from_utf8_lossy(&buf[head..]).into_owned())
}

/// A blocking loopback connection with bounded connect, read and write.
pub fn connect(addr: SocketAddr) -> Result<TcpStream, String> {
    crate::common::connect(addr, CONTROL_TIMEOUT)
}

/// Appends one read's worth to `buf`; an error at end of stream.
pub fn read_more(s: &mut TcpStream, buf: &mut Vec<u8>) -> Result<(), String> {
    let mut chunk = [0u8; 16 * 1024];
    match s.read(&mut chunk) {
        Ok(0) => Err(format!("connection closed after {:?}", wire::preview(buf))),
        Ok(n) => {
            buf.extend_from_slice(&chunk[..n]);
            Ok(())
        }
        Err(e) => Err(format!("{e} after {:?}", wire::preview(buf))),
    }
}

/// A `name:value` line of Redis's `INFO` text.
pub fn info_field<'a>(info: &'a str, name: &str) -> Option<&'a str> {
    info.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(':')).map(str::trim)
}

/// Raises the soft open-file limit to the hard one (about 560 sockets are
/// needed; the servers inherit the raised limit).
pub fn raise_fd_limit() {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes into the struct we pass; setrlimit reads it.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max {
            // An unlimited hard limit still stops at fs.nr_open.
            limit.rlim_cur = if limit.rlim_max == libc::RLIM_INFINITY { 1 << 20 } else { limit.rlim_max };
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}
