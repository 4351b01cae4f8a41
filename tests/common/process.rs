//! The `tether` binary as a child process: started on free loopback ports,
//! its log lines (stderr) read as they come, signalled, waited for with a
//! timeout, and observed through `/proc` (descriptors, command line, CPU
//! time). For what only the real binary has: signal handling and exit
//! statuses, the file-descriptor limit, the environment, start-up logging,
//! and a gateway with no test threads beside it.

use std::io::{self, BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use super::TIMEOUT;
use super::client::Client;
use super::http::HttpClient;

/// The `tether` binary, for runs that are not a gateway (`--help`, bad flags).
pub fn tether_command() -> Command {
    Command::new(env!("CARGO_BIN_EXE_tether"))
}

/// The `tether` binary running as a child process.
pub struct Process {
    pid: i32,
    pub addr: SocketAddr,
    /// The HTTP API's address.
    pub http: SocketAddr,
    /// The log line naming the address (it also gives the connection cap).
    pub banner: String,
    /// The log lines before the banner (start-up: the fd limit, warnings),
    /// and those between it and the HTTP banner (another worker's).
    pub preamble: Vec<String>,
    /// The log line naming the HTTP address.
    pub http_banner: String,
    /// The log lines after the banner, as they arrive.
    pub log: mpsc::Receiver<String>,
    /// The exit status, sent by a thread that waits on the child.
    exit: mpsc::Receiver<ExitStatus>,
    exited: bool,
}

impl Process {
    /// Starts the binary with `args` (the device and HTTP addresses are
    /// free loopback ports unless `args` name them). `limit` sets its
    /// RLIMIT_NOFILE, soft and hard.
    pub fn start(args: &[&str], limit: Option<u64>) -> Process {
        Process::start_with_env(args, &[], limit)
    }

    /// Like [`Process::start`], with extra environment variables.
    pub fn start_with_env(args: &[&str], env: &[(&str, &str)], limit: Option<u64>) -> Process {
        Process::spawn(args, env, limit.map(|n| (n, n)))
    }

    /// Like [`Process::start`], with RLIMIT_NOFILE set to `soft` and `hard`
    /// (which the binary raises soft to).
    pub fn start_with_fd_limits(args: &[&str], soft: u64, hard: u64) -> Process {
        Process::spawn(args, &[], Some((soft, hard)))
    }

    fn spawn(args: &[&str], env: &[(&str, &str)], limits: Option<(u64, u64)>) -> Process {
        let mut command = tether_command();
        for flag in ["--device-listen", "--http-listen"] {
            if !args.contains(&flag) {
                command.args([flag, "127.0.0.1:0"]);
            }
        }
        command
            .args(["--stats-interval", "0"])
            .args(args)
            .envs(env.iter().copied())
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if let Some((soft, hard)) = limits {
            use std::os::unix::process::CommandExt;
            // SAFETY: setrlimit is async-signal-safe; the closure touches
            // nothing else between fork and exec.
            unsafe {
                command.pre_exec(move || {
                    let rl = libc::rlimit { rlim_cur: soft, rlim_max: hard };
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &rl) != 0 {
                        return Err(io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let mut child: Child = command.spawn().expect("spawn tether");
        let pid = child.id() as i32;
        let stderr = BufReader::new(child.stderr.take().unwrap());
        let (exit_tx, exit) = mpsc::channel();
        thread::spawn(move || exit_tx.send(child.wait().expect("wait")));
        let (tx, log) = mpsc::channel();
        thread::spawn(move || {
            for line in stderr.lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut preamble = Vec::new();
        let (addr, banner) = loop {
            let line = log
                .recv_timeout(TIMEOUT)
                .unwrap_or_else(|e| panic!("tether printed no listening address ({e}) after {preamble:#?}"));
            if let Some(rest) = line.split("devices: listening on ").nth(1) {
                break (rest.split_whitespace().next().unwrap().parse().unwrap(), line);
            }
            preamble.push(line);
        };
        // The HTTP banner comes right after the devices one (of the same
        // process; with workers, another's lines may come in between).
        let (http, http_banner) = loop {
            let line = log.recv_timeout(TIMEOUT).expect("tether printed no HTTP address");
            if let Some(rest) = line.split("http: listening on ").nth(1) {
                break (rest.split([',', ' ']).next().unwrap().parse().unwrap(), line);
            }
            preamble.push(line);
        };
        Process { pid, addr, http, banner, preamble, http_banner, log, exit, exited: false }
    }

    pub fn connect(&self) -> Client {
        Client::connect(self.addr)
    }

    /// A connected client that has identified as `mac` and read its `OK`.
    /// Once it returns, the event loop is running (and watching signals).
    pub fn device(&self, mac: &str) -> Client {
        Client::identified(self.addr, mac)
    }

    pub fn pid(&self) -> i32 {
        self.pid
    }

    pub fn signal(&self, signal: i32) {
        // SAFETY: kill has no memory-safety preconditions.
        let rc = unsafe { libc::kill(self.pid, signal) };
        assert_eq!(rc, 0, "kill: {}", io::Error::last_os_error());
    }

    /// Waits for the process to exit, failing the test after `TIMEOUT`.
    pub fn wait(&mut self) -> ExitStatus {
        let status = self.exit.recv_timeout(TIMEOUT).expect("tether did not exit in time");
        self.exited = true;
        status
    }

    /// Waits for a log line containing `needle`; returns it.
    pub fn expect_log(&self, needle: &str) -> String {
        loop {
            let line = self.log.recv_timeout(TIMEOUT).unwrap_or_else(|_| panic!("no log line with {needle:?}"));
            if line.contains(needle) {
                return line;
            }
        }
    }

    /// The file descriptors the process has open, by number.
    pub fn open_fds(&self) -> Vec<usize> {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid))
            .expect("read /proc/<pid>/fd")
            .map(|entry| entry.unwrap().file_name().to_str().unwrap().parse().unwrap())
            .collect()
    }

    /// The process's command line, arguments separated by spaces.
    pub fn cmdline(&self) -> String {
        let raw = std::fs::read(format!("/proc/{}/cmdline", self.pid)).expect("read /proc/<pid>/cmdline");
        String::from_utf8_lossy(&raw).replace('\0', " ")
    }

    /// `GET /metrics` on a connection of its own; the Prometheus text.
    pub fn metrics(&self) -> String {
        let mut client = HttpClient::connect(self.http);
        let response = client.get_closing("/metrics");
        assert_eq!(response.status, 200, "{}", response.raw());
        String::from_utf8(response.body).unwrap()
    }

    /// CPU time (user + system) the process has used so far.
    pub fn cpu_time(&self) -> Duration {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid)).expect("read /proc/<pid>/stat");
        // The fields after the command name (which may hold spaces) start
        // with the state, field 3; utime and stime are fields 14 and 15.
        let fields: Vec<&str> = stat.rsplit_once(')').expect("stat format").1.split_whitespace().collect();
        let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
        // SAFETY: sysconf has no memory-safety preconditions.
        let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
        Duration::from_millis(ticks * 1000 / per_second)
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if !self.exited {
            // SAFETY: kill has no memory-safety preconditions; the waiter
            // thread reaps the child.
            unsafe { libc::kill(self.pid, libc::SIGKILL) };
        }
    }
}
