//! Socket setup and process limits: the listeners, their options, and the
//! file-descriptor limit.
//!
//! Options that every accepted connection needs (`TCP_NODELAY`, keepalive
//! and its timings, `TCP_USER_TIMEOUT`) are set once on the listening
//! socket: Linux copies them into each socket that `accept` returns, which
//! saves six `setsockopt` calls per connection. A test below checks that
//! the kernel still does so.
//!
//! [`reset_on_close`] is the one option set on a connection later: a peer
//! presumed dead is closed abortively.
//!
//! Workers (`--workers N`) each bind both ports with `SO_REUSEPORT`: the
//! kernel then keeps one accept queue per worker and hands each new
//! connection to one of them by a hash of its addresses. Only sockets that
//! all set the option, under the same user, may share a port, so a port
//! held by any other program still fails to bind with `EADDRINUSE`.

use std::fs;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use log::warn;
use socket2::{Domain, Protocol, SockRef, Socket, TcpKeepalive as Ka, Type};

use crate::config::TcpKeepalive;

/// How a listening socket is set up.
#[derive(Debug, Clone, Copy)]
pub struct ListenOptions {
    pub backlog: u32,
    pub keepalive: TcpKeepalive,
    /// `TCP_USER_TIMEOUT`: how long written data may stay unacknowledged
    /// before the kernel drops the connection (`None`: the kernel's own
    /// retransmission limit, `tcp_retries2`, some 15 minutes).
    pub user_timeout: Option<Duration>,
    /// `SO_SNDBUF` for accepted sockets (`None`: the kernel's autotuning).
    pub send_buffer: Option<usize>,
    /// `SO_REUSEPORT`: share the port with the other workers.
    pub reuse_port: bool,
}

/// Binds a non-blocking listener with `SO_REUSEADDR` (so a restart does not
/// wait for old connections in TIME_WAIT), `TCP_NODELAY`, the keepalive
/// settings, the user timeout and the send buffer, all inherited by
/// accepted sockets.
pub fn listen(addr: SocketAddr, options: ListenOptions) -> io::Result<mio::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.set_tcp_nodelay(true)?;
    if options.reuse_port {
        socket.set_reuse_port(true)?;
    }
    set_keepalive(&socket, options.keepalive)?;
    // Keepalive sends no probe while data is unacknowledged, so without this
    // a peer gone with output pending is retransmitted to for minutes.
    socket.set_tcp_user_timeout(options.user_timeout)?;
    if let Some(bytes) = options.send_buffer {
        // Fixing it also turns off the kernel's autotuning, which would
        // otherwise grow a stuck client's buffer to tcp_wmem's maximum.
        socket.set_send_buffer_size(bytes)?;
    }
    socket.bind(&addr.into())?;
    let backlog = i32::try_from(options.backlog).unwrap_or(i32::MAX);
    socket.listen(backlog)?;
    if let Some(somaxconn) = somaxconn()
        && somaxconn < options.backlog
    {
        warn!(
            "listen backlog {} on {addr} is capped by net.core.somaxconn = {somaxconn}; \
             raise it (sysctl -w net.core.somaxconn={}) or connect storms will see SYN retries",
            options.backlog, options.backlog
        );
    }
    Ok(mio::net::TcpListener::from_std(socket.into()))
}

fn set_keepalive(socket: &Socket, keepalive: TcpKeepalive) -> io::Result<()> {
    match keepalive {
        TcpKeepalive::Off => socket.set_keepalive(false),
        TcpKeepalive::On { idle, interval, probes } => {
            let params = Ka::new().with_time(idle).with_interval(interval).with_retries(probes);
            socket.set_tcp_keepalive(&params)
        }
    }
}

/// Holds `addr` for workers that will listen on it with `SO_REUSEPORT`: a
/// socket bound with the same options but not listening, so it takes no
/// connection. The supervisor keeps it for its whole life: it learns the
/// port when `addr` asks for any (port 0), it fails at once when another
/// program holds the port, and no other program can take the port while a
/// worker restarts.
pub fn reserve(addr: SocketAddr) -> io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.bind(&addr.into())?;
    Ok(socket)
}

/// `net.core.somaxconn`, the kernel's cap on any listen backlog.
pub fn somaxconn() -> Option<u32> {
    fs::read_to_string("/proc/sys/net/core/somaxconn").ok()?.trim().parse().ok()
}

/// The process's open-file limit (`RLIMIT_NOFILE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FdLimit {
    pub soft: u64,
    pub hard: u64,
}

/// The current open-file limit.
pub fn fd_limit() -> io::Result<FdLimit> {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes into the struct we pass and reads nothing else.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(FdLimit { soft: limit.rlim_cur, hard: limit.rlim_max })
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit (the most an
/// unprivileged process may ask for) and returns the limit before and
/// after (the same when it was there already). Raising the hard limit itself needs `CAP_SYS_RESOURCE`; that is
/// the operator's job (see the README).
pub fn raise_fd_limit() -> io::Result<(FdLimit, FdLimit)> {
    let before = fd_limit()?;
    let target = fd_ceiling(before);
    if before.soft >= target {
        return Ok((before, before));
    }
    let raised = libc::rlimit { rlim_cur: target, rlim_max: before.hard };
    // SAFETY: setrlimit only reads the struct we pass.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((before, FdLimit { soft: target, hard: before.hard }))
}

/// The most descriptors a process under `limit` may raise its soft limit
/// to: the hard limit, or `fs.nr_open` when that is "unlimited" (Linux
/// caps every limit there).
pub fn fd_ceiling(limit: FdLimit) -> u64 {
    match limit.hard {
        libc::RLIM_INFINITY => nr_open().unwrap_or(1 << 20),
        hard => hard,
    }
}

fn nr_open() -> Option<u64> {
    fs::read_to_string("/proc/sys/fs/nr_open").ok()?.trim().parse().ok()
}

/// Shuts down the sending side of a connection (a FIN after the bytes
/// already queued) while still reading what the peer sends.
pub fn shutdown_write(stream: &mio::net::TcpStream) -> io::Result<()> {
    SockRef::from(stream).shutdown(std::net::Shutdown::Write)
}

/// Makes the coming `close` of the socket abortive (`SO_LINGER` 0): the
/// kernel discards what is unsent, sends a reset instead of a FIN, and
/// frees the socket at once, so nothing queued for a peer presumed dead
/// reaches it later, and no FIN-WAIT socket outlives the connection.
pub fn reset_on_close(stream: &mio::net::TcpStream) -> io::Result<()> {
    SockRef::from(stream).set_linger(Some(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A listener with `options`, one client connected to it, and the
    /// accepted end of that connection.
    fn accept_one(options: ListenOptions) -> (mio::net::TcpStream, std::net::TcpStream) {
        let listener = listen("127.0.0.1:0".parse().unwrap(), options).unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        loop {
            match listener.accept() {
                Ok((accepted, _)) => return (accepted, client),
                // The connection is already established: accept succeeds
                // within a few retries on loopback.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::yield_now(),
                Err(e) => panic!("accept: {e}"),
            }
        }
    }

    #[test]
    fn accepted_sockets_inherit_the_listener_options() {
        let keepalive =
            TcpKeepalive::On { idle: Duration::from_secs(61), interval: Duration::from_secs(11), probes: 4 };
        let user_timeout = Some(Duration::from_millis(91_500));
        let options =
            ListenOptions { backlog: 16, keepalive, user_timeout, send_buffer: Some(64 * 1024), reuse_port: false };
        let (accepted, _client) = accept_one(options);
        let sock = SockRef::from(&accepted);
        // Linux reports twice the value set (its bookkeeping overhead).
        assert_eq!(sock.send_buffer_size().unwrap(), 128 * 1024);
        assert!(sock.tcp_nodelay().unwrap());
        assert!(sock.keepalive().unwrap());
        assert_eq!(sock.tcp_keepalive_time().unwrap(), Duration::from_secs(61));
        assert_eq!(sock.tcp_keepalive_interval().unwrap(), Duration::from_secs(11));
        assert_eq!(sock.tcp_keepalive_retries().unwrap(), 4);
        assert_eq!(sock.tcp_user_timeout().unwrap(), user_timeout);
    }

    #[test]
    fn keepalive_off_is_inherited_too() {
        let (accepted, _client) = accept_one(ListenOptions {
            backlog: 16,
            keepalive: TcpKeepalive::Off,
            user_timeout: None,
            send_buffer: None,
            reuse_port: false,
        });
        assert!(!SockRef::from(&accepted).keepalive().unwrap());
        assert_eq!(SockRef::from(&accepted).tcp_user_timeout().unwrap(), None);
    }

    fn options(reuse_port: bool) -> ListenOptions {
        // Room in each queue for all the test's clients before any accept.
        ListenOptions { backlog: 128, keepalive: TcpKeepalive::Off, user_timeout: None, send_buffer: None, reuse_port }
    }

    #[test]
    fn workers_share_a_reserved_port_and_each_takes_connections() {
        let reserved = reserve("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = reserved.local_addr().unwrap().as_socket().unwrap();
        assert_ne!(addr.port(), 0);
        let a = listen(addr, options(true)).unwrap();
        let b = listen(addr, options(true)).unwrap();
        // The kernel picks a listener by a hash of the client's address and
        // port: with 64 clients, both get some (all on one would have a
        // chance of 2^-63).
        let clients: Vec<_> = (0..64).map(|_| std::net::TcpStream::connect(addr).unwrap()).collect();
        let (mut on_a, mut on_b) = (0, 0);
        while on_a + on_b < clients.len() {
            let mut accepted = false;
            for (listener, count) in [(&a, &mut on_a), (&b, &mut on_b)] {
                match listener.accept() {
                    Ok(_) => {
                        *count += 1;
                        accepted = true;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => panic!("accept: {e}"),
                }
            }
            if !accepted {
                std::thread::yield_now();
            }
        }
        assert!(on_a > 0 && on_b > 0, "{on_a} and {on_b}");
    }

    #[test]
    fn a_port_held_by_another_program_still_fails_to_bind() {
        // A listener that did not set SO_REUSEPORT, as most programs.
        let other = listen("127.0.0.1:0".parse().unwrap(), options(false)).unwrap();
        let addr = other.local_addr().unwrap();
        let err = listen(addr, options(true)).map(|_| ()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse, "{err}");
        let err = reserve(addr).map(|_| ()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse, "{err}");
        // And the other way round: a worker's port is not open to a program
        // that does not ask to share it.
        let shared = listen("127.0.0.1:0".parse().unwrap(), options(true)).unwrap();
        let err = listen(shared.local_addr().unwrap(), options(false)).map(|_| ()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse, "{err}");
    }

    #[test]
    fn fd_limit_is_raised_to_the_hard_limit() {
        let (before, after) = raise_fd_limit().unwrap();
        assert!(after.soft >= before.soft);
        assert!(after.soft <= after.hard);
        assert_eq!(fd_limit().unwrap(), after);
    }
}
