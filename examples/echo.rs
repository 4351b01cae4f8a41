//! The floor: the least a mio loop must do to answer collars, kept as the
//! figure the gateway's CPU per round trip is compared with
//! (`scripts/models.sh`, `benches/pipeline.rs`). It is not a server to run.
//!
//! One thread, one `Poll`, a `Slab` of `TcpStream`s registered once,
//! edge-triggered, for reading and writing. A readiness event reads the
//! socket into one buffer shared by all connections until it is drained,
//! and answers each read with one `write`: `PONG\n` for every complete
//! `PING\n` line, `OK\n` for every `IDENTIFY:...\n` (so `tether-load`'s
//! collars get online), nothing for any other line. What it keeps per
//! connection is only what correctness needs: the bytes of an unfinished
//! line, and answers the socket would not take yet (while any wait, the
//! connection is not read, so a peer that does not read stops being read).
//!
//! Everything else the gateway does is left out on purpose: no protocol
//! core, no MAC index, no timers or heartbeats, no line or connection
//! limits, no HTTP, no metrics. The difference between the two is what
//! those cost.
//!
//! Run: `target/release/examples/echo 127.0.0.1:0` (it prints the address
//! it listens on).

use std::io::{self, Read, Write};
use std::net::SocketAddr;

use memchr::memchr;
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use slab::Slab;
use socket2::{Domain, Protocol, Socket, Type};

/// The listener's token; connections are their slab keys, never this high.
const LISTENER: Token = Token(usize::MAX);

struct Conn {
    stream: TcpStream,
    /// An unfinished line, kept until its `\n` arrives.
    partial: Vec<u8>,
    /// Answers the socket did not take yet.
    unsent: Vec<u8>,
}

fn main() -> io::Result<()> {
    let addr: SocketAddr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:3103".into()).parse().unwrap();
    tether::net::raise_fd_limit()?;
    // The gateway's backlog and TCP_NODELAY (accepted sockets inherit it).
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.set_tcp_nodelay(true)?;
    socket.bind(&addr.into())?;
    socket.listen(4096)?;
    let mut listener = TcpListener::from_std(socket.into());
    eprintln!("echo: listening on {}", listener.local_addr()?);

    let mut poll = Poll::new()?;
    poll.registry().register(&mut listener, LISTENER, Interest::READABLE)?;
    let mut events = Events::with_capacity(1024);
    let mut conns: Slab<Conn> = Slab::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut out = Vec::new();
    loop {
        match poll.poll(&mut events, None) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            result => result?,
        }
        for event in events.iter() {
            if event.token() == LISTENER {
                accept(&listener, &poll, &mut conns);
                continue;
            }
            // An event for a connection closed (and its key perhaps reused)
            // earlier in this batch costs at most one read that would block.
            let key = event.token().0;
            let Some(conn) = conns.get_mut(key) else { continue };
            if serve(conn, &mut buf, &mut out, event.is_read_closed()).is_err() {
                // Closing the socket also drops its epoll registration.
                conns.remove(key);
            }
        }
    }
}

/// Accepts every connection waiting in the backlog.
fn accept(listener: &TcpListener, poll: &Poll, conns: &mut Slab<Conn>) {
    loop {
        match listener.accept() {
            Ok((mut stream, _)) => {
                let entry = conns.vacant_entry();
                let interest = Interest::READABLE | Interest::WRITABLE;
                if poll.registry().register(&mut stream, Token(entry.key()), interest).is_ok() {
                    entry.insert(Conn { stream, partial: Vec::new(), unsent: Vec::new() });
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
            Err(e) if matches!(e.kind(), io::ErrorKind::Interrupted | io::ErrorKind::ConnectionAborted) => {}
            // Out of descriptors: the rest wait for the next connection's edge.
            Err(e) => {
                eprintln!("echo: accept: {e}");
                return;
            }
        }
    }
}

/// One readiness event: sends what waits, then reads until the socket is
/// drained, answering each read with one write. `to_eof`: the event saw
/// the peer's FIN, so a short read is not the end (no edge will follow).
/// An error means the connection is over.
fn serve(conn: &mut Conn, buf: &mut [u8], out: &mut Vec<u8>, to_eof: bool) -> io::Result<()> {
    loop {
        while !conn.unsent.is_empty() {
            let n = write(&mut conn.stream, &conn.unsent)?;
            if n == 0 {
                return Ok(()); // the next writable edge resumes here
            }
            conn.unsent.drain(..n);
        }
        let n = match conn.stream.read(buf) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        out.clear();
        answer(&mut conn.partial, &buf[..n], out);
        if !out.is_empty() {
            let sent = write(&mut conn.stream, out)?;
            conn.unsent.extend_from_slice(&out[sent..]);
        }
        // A short read emptied the receive queue: new bytes raise a new edge.
        if n < buf.len() && !to_eof {
            return Ok(());
        }
    }
}

/// Writes once; 0 when the socket takes nothing now.
fn write(stream: &mut TcpStream, bytes: &[u8]) -> io::Result<usize> {
    loop {
        match stream.write(bytes) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(0),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            result => return result,
        }
    }
}

/// Answers the complete lines in `input`, the first of which continues
/// `partial`, and keeps the unfinished end in `partial`.
fn answer(partial: &mut Vec<u8>, mut input: &[u8], out: &mut Vec<u8>) {
    if !partial.is_empty() {
        let Some(end) = memchr(b'\n', input) else {
            partial.extend_from_slice(input);
            return;
        };
        partial.extend_from_slice(&input[..end]);
        reply(partial, out);
        *partial = Vec::new();
        input = &input[end + 1..];
    }
    while let Some(end) = memchr(b'\n', input) {
        reply(&input[..end], out);
        input = &input[end + 1..];
    }
    partial.extend_from_slice(input);
}

fn reply(line: &[u8], out: &mut Vec<u8>) {
    if line == b"PING" {
        out.extend_from_slice(b"PONG\n");
    } else if line.starts_with(b"IDENTIFY:") {
        out.extend_from_slice(b"OK\n");
    }
}
