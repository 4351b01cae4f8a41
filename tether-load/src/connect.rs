//! Opening a collar's connection without blocking: the socket, the source
//! address, the connect, and finding out when it is done.
//!
//! With `--source-ips`, the socket is bound to its source address before
//! the connect. A plain `bind(ip:0)` would pick the port at bind time,
//! unique per address *for every destination*, so one address would run
//! out after ~28k sockets whatever the target. `IP_BIND_ADDRESS_NO_PORT`
//! (Linux 4.2+) defers the choice to `connect`, which only needs the whole
//! 4-tuple to be unique: each source address then has its full port range
//! toward the one target.
//!
//! The connect is non-blocking: it returns `EINPROGRESS` and the socket
//! turns writable when it completes, or fails with the error in `SO_ERROR`.
//! [`check`] reads which, as mio's documentation prescribes.

use std::io;
use std::net::{IpAddr, SocketAddr};

use mio::net::TcpStream;
use socket2::{Domain, Protocol, Socket, Type};

/// Starts a connect from `source` (any local address if `None`) to `target`.
pub fn start(target: SocketAddr, source: Option<IpAddr>) -> io::Result<TcpStream> {
    let socket = Socket::new(Domain::for_address(target), Type::STREAM.nonblocking(), Some(Protocol::TCP))?;
    // Lines are small and each one is a message: send them at once.
    socket.set_tcp_nodelay(true)?;
    if let Some(ip) = source {
        bind_address_no_port(&socket)?;
        socket.bind(&SocketAddr::new(ip, 0).into())?;
    }
    match socket.connect(&target.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(e),
    }
    Ok(TcpStream::from_std(socket.into()))
}

#[cfg(target_os = "linux")]
fn bind_address_no_port(socket: &Socket) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let on: libc::c_int = 1;
    // SAFETY: the descriptor is open (we own `socket`), and the option value
    // is a live c_int whose size we pass.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            (&on as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
}

/// Elsewhere the port is chosen at bind time: fewer ports per address.
#[cfg(not(target_os = "linux"))]
fn bind_address_no_port(_socket: &Socket) -> io::Result<()> {
    Ok(())
}

/// Where a pending connect stands.
#[derive(Debug)]
pub enum Status {
    Connected,
    /// Not yet (a spurious wake-up); wait for the next event.
    Pending,
    Failed(io::Error),
}

/// Whether the connect started by [`start`] has completed, after an event
/// on its socket.
pub fn check(stream: &TcpStream) -> Status {
    match stream.take_error() {
        Ok(Some(e)) | Err(e) => return Status::Failed(e),
        Ok(None) => {}
    }
    match stream.peer_addr() {
        Ok(_) => Status::Connected,
        Err(e) if e.kind() == io::ErrorKind::NotConnected || e.raw_os_error() == Some(libc::EINPROGRESS) => {
            Status::Pending
        }
        Err(e) => Status::Failed(e),
    }
}

#[cfg(test)]
mod tests {
    use std::net::TcpListener;
    use std::time::{Duration, Instant};

    use super::*;

    /// Polls `check` until it is no longer pending (on loopback this takes
    /// microseconds; the bound only keeps a broken kernel from hanging us).
    fn settle(stream: &TcpStream) -> Status {
        let until = Instant::now() + Duration::from_secs(10);
        loop {
            match check(stream) {
                Status::Pending if Instant::now() < until => std::thread::yield_now(),
                status => return status,
            }
        }
    }

    #[test]
    fn connects_from_the_given_source_address() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let target = listener.local_addr().unwrap();
        let source: IpAddr = "127.0.0.3".parse().unwrap();
        let stream = start(target, Some(source)).unwrap();
        assert!(matches!(settle(&stream), Status::Connected));
        let (_accepted, peer) = listener.accept().unwrap();
        assert_eq!(peer.ip(), source);
        assert_eq!(stream.local_addr().unwrap().ip(), source);
        assert_ne!(stream.local_addr().unwrap().port(), 0);
    }

    #[test]
    fn a_refused_connect_is_reported_as_such() {
        // A port that was just free: nothing listens there.
        let target = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let status = match start(target, None) {
            Ok(stream) => settle(&stream),
            Err(e) => Status::Failed(e),
        };
        match status {
            Status::Failed(e) => assert_eq!(e.raw_os_error(), Some(libc::ECONNREFUSED), "{e}"),
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn a_source_address_of_another_host_is_refused_at_bind() {
        let err = start("127.0.0.1:1".parse().unwrap(), Some("192.0.2.1".parse().unwrap())).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EADDRNOTAVAIL), "{err}");
    }
}
