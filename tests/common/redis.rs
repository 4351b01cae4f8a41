//! A real `redis-server` for the scale-out tests: started on a free
//! loopback port with no persistence, killed with the test, restartable on
//! the same port (to test a gateway riding out a Redis outage).
//!
//! `redis-server` must be on `PATH`: `scripts/test.sh` installs Debian's
//! package; by hand without it a test skips ([`RedisServer::start`] returns
//! `None` after [`super::require`] said why).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;

use tether::redis::codec::{self, Frame, OwnedFrame};

use super::TIMEOUT;
use super::require::{program, require};

pub struct RedisServer {
    pub port: u16,
    child: Option<Child>,
}

impl RedisServer {
    /// A fresh server, or `None` (the test skips) without `redis-server`.
    pub fn start(test: &str) -> Option<RedisServer> {
        if !require(test, program("redis-server")) {
            return None;
        }
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut server = RedisServer { port, child: None };
        server.restart();
        Some(server)
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts the server (again) on its port, and waits for it to say it
    /// accepts connections.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "running already");
        let mut child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.contains("Ready to accept connections") {
                    let _ = tx.send(());
                }
            }
        });
        rx.recv_timeout(TIMEOUT).expect("redis-server did not start");
        self.child = Some(child);
    }

    /// Kills the server at once (SIGKILL): its links see a reset or EOF.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Runs one command and returns its reply.
    pub fn cmd(&self, args: &[&str]) -> OwnedFrame {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        stream.set_read_timeout(Some(TIMEOUT)).unwrap();
        let mut out = Vec::new();
        let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
        codec::command(&mut out, &args);
        stream.write_all(&out).unwrap();
        let mut buf = Vec::new();
        loop {
            if let Some((frame, _)) = codec::decode(&buf).unwrap() {
                return frame;
            }
            let mut chunk = [0u8; 4096];
            let n = stream.read(&mut chunk).expect("redis reply");
            assert!(n > 0, "redis closed the connection");
            buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// A command whose reply is an integer.
    pub fn int(&self, args: &[&str]) -> i64 {
        let reply = self.cmd(args);
        reply.int().unwrap_or_else(|| panic!("{args:?}: {reply:?}"))
    }

    /// A command whose reply is a string (or nil: `None`).
    pub fn text(&self, args: &[&str]) -> Option<String> {
        self.cmd(args).text().map(str::to_string)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}
