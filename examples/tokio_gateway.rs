//! The collar protocol on tokio: the async-runtime model, kept for the
//! comparison in `scripts/models.sh`. tokio is a dev-dependency of tether
//! for this example only; the gateway itself has no async runtime.
//!
//! It reuses tether's sans-IO core unchanged (the `LineFramer`, the
//! protocol parser, the `Collar` rules); each connection is a task on a
//! single-threaded runtime (the same one core the gateway uses), written
//! the way async code usually is: a per-task read buffer, `timeout` around
//! each read for the deadlines, and a shared `Mutex` for the MAC index.
//!
//! Run: `cargo run --release --example tokio_gateway -- 127.0.0.1:3102`

use std::collections::HashMap;
use std::net::SocketAddr;
use std::ops::ControlFlow;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tether::close::CloseReason;
use tether::device::{Collar, Due, Line, LineFramer, Mac, Step, Timeouts, protocol};
use tether::time::{Millis, millis};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::Notify;
use tokio::time::Instant;

/// Online devices: MAC -> (connection id, how to tell it it was replaced).
type Online = Arc<Mutex<HashMap<Mac, (u64, Arc<Notify>)>>>;

const MAX_LINE: usize = 1024;

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::io::Result<()> {
    let addr: SocketAddr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:3102".into()).parse().unwrap();
    tether::net::raise_fd_limit()?;
    let socket = if addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    // The same backlog as the gateway, so connect storms compare fairly.
    let listener: TcpListener = socket.listen(4096)?;
    eprintln!("tokio: listening on {}", listener.local_addr()?);

    // The gateway's own defaults (handshake 10s, heartbeat 30s + 10s, idle 5m).
    let timeouts = tether::Config::default().timeouts();
    let online: Online = Arc::default();
    let ids = AtomicU64::new(0);
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let (online, id) = (Arc::clone(&online), ids.fetch_add(1, Ordering::Relaxed));
                tokio::spawn(async move { serve(stream, id, online, timeouts).await });
            }
            // Out of descriptors or similar: back off instead of spinning.
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// One connection, start to end, as one task.
async fn serve(mut stream: TcpStream, id: u64, online: Online, timeouts: Timeouts) {
    let _ = stream.set_nodelay(true);
    let start = Instant::now();
    let now = || -> Millis { millis(start.elapsed()) };
    let replaced = Arc::new(Notify::new());
    let mut session = Collar::new(now());
    let mut last_rx = now();
    let mut framer = LineFramer::default();
    let mut buf = vec![0u8; 4096];
    let mut replies = Vec::new();
    loop {
        let wait = session.next_deadline(last_rx, &timeouts).map(|at| at.saturating_sub(now()).max(1));
        let deadline = wait.map_or(Duration::from_secs(3600), Duration::from_millis);
        tokio::select! {
            read = tokio::time::timeout(deadline, stream.read(&mut buf)) => match read {
                Ok(Ok(0)) | Ok(Err(_)) => break,
                Ok(Ok(n)) => {
                    last_rx = now();
                    replies.clear();
                    let mut identified = None;
                    let framed = framer.feed(&buf[..n], MAX_LINE, |line| {
                        match session.on_command(protocol::parse(line), last_rx, None) {
                            Step::Reply(reply) => replies.extend_from_slice(reply.bytes()),
                            Step::Identified(mac) => {
                                identified = Some(mac);
                                replies.extend_from_slice(Line::Ok.bytes());
                            }
                            Step::Located | Step::Silent => {}
                            // Without device keys or mutual TLS there is no challenge, and
                            // no certificate to match.
                            Step::Challenge(_) | Step::AuthFailed(_) | Step::CertificateMismatch(_) => {}
                        }
                        ControlFlow::Continue(())
                    });
                    if let Some(mac) = identified {
                        take_over(&online, mac, id, &replaced);
                    }
                    if framed.is_err() {
                        replies.extend_from_slice(CloseReason::LineTooLong.bye().unwrap_or_default());
                    }
                    if stream.write_all(&replies).await.is_err() || framed.is_err() {
                        break;
                    }
                }
                Err(_elapsed) => match session.on_deadline(now(), last_rx, &timeouts) {
                    Due::Nothing => {}
                    Due::Ping => {
                        if stream.write_all(Line::Ping.bytes()).await.is_err() {
                            break;
                        }
                    }
                    Due::Close(reason) => {
                        let _ = stream.write_all(reason.bye().unwrap_or_default()).await;
                        break;
                    }
                },
            },
            () = replaced.notified() => {
                let _ = stream.write_all(CloseReason::Replaced.bye().unwrap_or_default()).await;
                break;
            }
        }
    }
    if let Some(mac) = session.mac {
        let mut online = online.lock().unwrap_or_else(|e| e.into_inner());
        if online.get(&mac).is_some_and(|(owner, _)| *owner == id) {
            online.remove(&mac);
        }
    }
}

/// Registers `mac` as this task's; an older task with the same MAC is told
/// to say `BYE replaced` and end.
fn take_over(online: &Online, mac: Mac, id: u64, replaced: &Arc<Notify>) {
    let old = online.lock().unwrap_or_else(|e| e.into_inner()).insert(mac, (id, Arc::clone(replaced)));
    if let Some((_, old)) = old {
        old.notify_one();
    }
}
