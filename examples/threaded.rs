//! The collar protocol served with one OS thread per connection: the model
//! that an event loop replaces, kept for the comparison in
//! `scripts/models.sh`.
//!
//! It reuses tether's sans-IO core unchanged (the `LineFramer`, the
//! protocol parser, the `Collar` rules), so the only difference from the
//! gateway is the concurrency model: `accept` in a loop, a thread per
//! connection blocked in `read`, the next deadline as the read timeout.
//! Each connection costs a thread (its stack, a kernel task) and a wake-up
//! per read through the scheduler; a shared `Mutex` guards the MAC index.
//! A takeover cannot simply write to another thread's socket while that
//! thread may be writing too, so it flags the old connection and shuts
//! down its read side; the old thread wakes with end of file, sees the
//! flag, and says `BYE replaced` itself.
//!
//! Run: `cargo run --release --example threaded -- 127.0.0.1:3101`

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::ops::ControlFlow;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use socket2::{Domain, SockRef, Socket, Type};
use tether::close::CloseReason;
use tether::device::{Collar, Due, Line, LineFramer, Mac, Step, Timeouts, protocol};
use tether::time::{Millis, millis};

/// Online devices by MAC.
type Online = Arc<Mutex<HashMap<Mac, Owner>>>;

/// The connection a MAC is online on.
struct Owner {
    id: u64,
    /// Its socket. Valid while the entry exists: a thread removes its entry
    /// (or finds it replaced) under the lock before it closes its socket.
    fd: RawFd,
    /// Set when another connection takes the MAC over.
    replaced: Arc<AtomicBool>,
}

const MAX_LINE: usize = 1024;

fn main() -> io::Result<()> {
    let addr: SocketAddr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:3101".into()).parse().unwrap();
    tether::net::raise_fd_limit()?;
    // The same backlog as the gateway, so connect storms compare fairly.
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(4096)?;
    let listener: TcpListener = socket.into();
    eprintln!("threaded: listening on {}", listener.local_addr()?);

    // The gateway's own defaults (handshake 10s, heartbeat 30s + 10s, idle 5m).
    let timeouts = tether::Config::default().timeouts();
    let online: Online = Arc::default();
    let ids = AtomicU64::new(0);
    for stream in listener.incoming() {
        let stream = match stream {
            Ok(stream) => stream,
            // Out of descriptors or similar: back off instead of spinning.
            Err(e) => {
                eprintln!("threaded: accept: {e}");
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        let (online, id) = (Arc::clone(&online), ids.fetch_add(1, Ordering::Relaxed));
        // A thread that fails to start (out of memory or tasks) costs only
        // its connection.
        let spawned = std::thread::Builder::new().spawn(move || serve(stream, id, &online, &timeouts));
        if let Err(e) = spawned {
            eprintln!("threaded: cannot spawn a thread: {e}");
        }
    }
    Ok(())
}

/// One connection, start to end, on its own thread.
fn serve(mut stream: TcpStream, id: u64, online: &Online, timeouts: &Timeouts) {
    let _ = stream.set_nodelay(true);
    let start = Instant::now();
    let now = || -> Millis { millis(start.elapsed()) };
    let mut session = Collar::new(now());
    let mut last_rx = now();
    let mut framer = LineFramer::default();
    let mut buf = [0u8; 4096];
    let mut replies = Vec::new();
    let replaced = Arc::new(AtomicBool::new(false));
    loop {
        let wait = session.next_deadline(last_rx, timeouts).map(|at| at.saturating_sub(now()).max(1));
        if stream.set_read_timeout(wait.map(Duration::from_millis)).is_err() {
            break;
        }
        match stream.read(&mut buf) {
            Ok(0) => {
                if replaced.load(Ordering::Acquire) {
                    let _ = stream.write_all(CloseReason::Replaced.bye().unwrap_or_default());
                }
                break;
            }
            Ok(n) => {
                last_rx = now();
                replies.clear();
                let framed = framer.feed(&buf[..n], MAX_LINE, |line| {
                    match session.on_command(protocol::parse(line), last_rx, None) {
                        Step::Reply(reply) => replies.extend_from_slice(reply.bytes()),
                        Step::Identified(mac) => {
                            take_over(online, mac, id, &stream, &replaced);
                            replies.extend_from_slice(Line::Ok.bytes());
                        }
                        Step::Located | Step::Silent => {}
                        // Without device keys or mutual TLS there is no challenge, and
                        // no certificate to match.
                        Step::Challenge(_) | Step::AuthFailed(_) | Step::CertificateMismatch(_) => {}
                    }
                    ControlFlow::Continue(())
                });
                if framed.is_err() {
                    replies.extend_from_slice(CloseReason::LineTooLong.bye().unwrap_or_default());
                }
                if stream.write_all(&replies).is_err() || framed.is_err() {
                    break;
                }
            }
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                match session.on_deadline(now(), last_rx, timeouts) {
                    Due::Nothing => {}
                    Due::Ping => {
                        if stream.write_all(Line::Ping.bytes()).is_err() {
                            break;
                        }
                    }
                    Due::Close(reason) => {
                        let _ = stream.write_all(reason.bye().unwrap_or_default());
                        break;
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    if let Some(mac) = session.mac {
        let mut online = online.lock().unwrap_or_else(|e| e.into_inner());
        if online.get(&mac).is_some_and(|owner| owner.id == id) {
            online.remove(&mac);
        }
    }
}

/// Registers `mac` as this connection's; an older connection with the same
/// MAC is flagged and its read side shut down, so its thread wakes up and
/// says `BYE replaced`.
fn take_over(online: &Online, mac: Mac, id: u64, stream: &TcpStream, replaced: &Arc<AtomicBool>) {
    let owner = Owner { id, fd: stream.as_raw_fd(), replaced: Arc::clone(replaced) };
    let mut online = online.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(old) = online.insert(mac, owner) {
        old.replaced.store(true, Ordering::Release);
        // SAFETY: the lock is held and the entry existed, so the old thread
        // has not closed its socket yet (see `Owner::fd`).
        let fd = unsafe { BorrowedFd::borrow_raw(old.fd) };
        let _ = SockRef::from(&fd).shutdown(Shutdown::Read);
    }
}
