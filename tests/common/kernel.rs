//! What the kernel knows of a connection that the gateway does not say,
//! and connections from other loopback addresses.
//!
//! [`tcp_queues`] reads a socket's send and receive queues from
//! `/proc/net/tcp`: the bytes a client that does not read really costs the
//! gateway's side, whatever user space counts. [`data_segments_received`]
//! counts the segments that carried data to a client: on loopback, with
//! `TCP_NODELAY`, each `write` of the gateway that fits in one segment is
//! one, so it counts the gateway's writes to that client whichever build
//! (and whichever counters) the gateway has. [`connect_from`] binds a
//! client to another address of 127.0.0.0/8 (all of it is loopback on
//! Linux), for tests that need more connections than one address may hold
//! (`--http-max-per-ip`), or several addresses. [`socket_inodes_at`] and
//! [`socket_inodes`] tell which process holds the gateway's end of a
//! connection (with workers: which worker it landed on).

use std::net::{IpAddr, SocketAddr, TcpStream};

/// The send queue (`tx_queue`: bytes written and not yet acknowledged by
/// the peer) and receive queue (`rx_queue`: bytes received and not yet
/// read) of the IPv4 TCP socket whose local address is `local` and remote
/// address `remote`; `None` if there is no such socket.
///
/// The table is that of the calling thread's network namespace
/// (`/proc/thread-self`): a fault test runs in a namespace of its own.
pub fn tcp_queues(local: SocketAddr, remote: SocketAddr) -> Option<(u64, u64)> {
    let table = std::fs::read_to_string("/proc/thread-self/net/tcp").expect("read /proc/thread-self/net/tcp");
    let (local, remote) = (proc_address(local), proc_address(remote));
    // `sl local_address rem_address st tx_queue:rx_queue ...`, in hex.
    table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.get(1) != Some(&local.as_str()) || fields.get(2) != Some(&remote.as_str()) {
            return None;
        }
        let (tx, rx) = fields[4].split_once(':').expect("tx_queue:rx_queue");
        Some((u64::from_str_radix(tx, 16).unwrap(), u64::from_str_radix(rx, 16).unwrap()))
    })
}

/// The inodes of the IPv4 TCP sockets whose local address is `local`, by
/// their remote address (0 while one waits in an accept queue): read once
/// for many connections. With [`socket_inodes`], it tells which process
/// holds a connection's end.
pub fn socket_inodes_at(local: SocketAddr) -> std::collections::HashMap<SocketAddr, u64> {
    let table = std::fs::read_to_string("/proc/net/tcp").expect("read /proc/net/tcp");
    let local = proc_address(local);
    // `sl local rem st tx:rx tr:when retrnsmt uid timeout inode ...`
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            (fields.get(1) == Some(&local.as_str())).then(|| (from_proc_address(fields[2]), fields[9].parse().unwrap()))
        })
        .collect()
}

/// The inodes of the sockets process `pid` holds open.
pub fn socket_inodes(pid: i32) -> std::collections::HashSet<u64> {
    let entries = std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap_or_else(|e| panic!("/proc/{pid}/fd: {e}"));
    entries
        .filter_map(|entry| std::fs::read_link(entry.ok()?.path()).ok())
        .filter_map(|target| target.to_str()?.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok())
        .collect()
}

/// The address `proc_address` wrote.
fn from_proc_address(text: &str) -> SocketAddr {
    let (ip, port) = text.split_once(':').expect("ADDR:PORT");
    let ip = u32::from_str_radix(ip, 16).expect("hex address").to_ne_bytes();
    SocketAddr::from((ip, u16::from_str_radix(port, 16).expect("hex port")))
}

/// An address as `/proc/net/tcp` writes it: the IPv4 address as one 32-bit
/// number in the host's byte order, then the port, both in hex.
fn proc_address(addr: SocketAddr) -> String {
    let SocketAddr::V4(v4) = addr else { panic!("{addr}: /proc/net/tcp holds IPv4 sockets only") };
    format!("{:08X}:{:04X}", u32::from_ne_bytes(v4.ip().octets()), v4.port())
}

/// Segments with data that `stream` has received so far
/// (`tcpi_data_segs_in` of `TCP_INFO`).
pub fn data_segments_received(stream: &TcpStream) -> u64 {
    use std::os::fd::AsRawFd;
    // SAFETY: tcp_info is plain integers, for which all zeroes is a value.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `info`, which is
    // that large, and sets `len` to what it wrote.
    let rc = unsafe {
        libc::getsockopt(stream.as_raw_fd(), libc::IPPROTO_TCP, libc::TCP_INFO, (&raw mut info).cast(), &mut len)
    };
    assert_eq!(rc, 0, "TCP_INFO: {}", std::io::Error::last_os_error());
    u64::from(info.tcpi_data_segs_in)
}

/// A TCP connection to `addr` from the address `source` (any port), with
/// `SO_RCVBUF` set to `recv_buffer` before the handshake if given (the
/// window a client advertises is fixed then: a large one lets the gateway
/// write a lot to a client that does not read, a small one very little).
pub fn connect_from(source: IpAddr, addr: SocketAddr, recv_buffer: Option<usize>) -> TcpStream {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP)).unwrap();
    if let Some(bytes) = recv_buffer {
        socket.set_recv_buffer_size(bytes).unwrap();
    }
    socket.bind(&SocketAddr::new(source, 0).into()).unwrap_or_else(|e| panic!("bind {source}: {e}"));
    socket.connect(&addr.into()).unwrap_or_else(|e| panic!("connect to {addr} from {source}: {e}"));
    socket.into()
}
