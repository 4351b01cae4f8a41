//! How a collar's connection can end before the run does, and the error
//! kinds the report counts.
//!
//! A load test against a struggling gateway meets every kind of failure:
//! refused connects when the backlog overflows, timeouts, resets, a
//! client host out of ports, a process out of descriptors. Each is counted
//! under one [`Failure`] kind instead of stopping the tool. A close the
//! gateway chose (a `BYE <reason>`, or an end of file without one) is an
//! [`End`] of its own: it is the server's decision, not a network failure.

use std::io;

/// Why an attempt or a connection failed, as the report groups them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// `ECONNREFUSED`: nothing listening, or the backlog overflowed.
    Refused,
    /// No connect, or no `OK` after `IDENTIFY`, within `--connect-timeout`
    /// (or the kernel gave up: `ETIMEDOUT`).
    Timeout,
    /// The connection was reset or aborted (`ECONNRESET`, `EPIPE`, ...).
    Reset,
    /// `EADDRNOTAVAIL`/`EADDRINUSE`: the source address has no free port
    /// toward the target (or is not an address of this host).
    AddrNotAvailable,
    /// `EMFILE`/`ENFILE`/`ENOBUFS`/`ENOMEM`: no descriptor or memory for a
    /// socket.
    FdLimit,
    /// Anything else, including a gateway that answered `IDENTIFY` with
    /// `ERR`, or sent a line longer than any it should.
    Other,
}

impl Failure {
    pub const ALL: [Failure; 6] = [
        Failure::Refused,
        Failure::Timeout,
        Failure::Reset,
        Failure::AddrNotAvailable,
        Failure::FdLimit,
        Failure::Other,
    ];

    /// The kind of a socket error.
    pub fn of(error: &io::Error) -> Failure {
        match error.raw_os_error() {
            Some(libc::ECONNREFUSED) => Failure::Refused,
            Some(libc::ETIMEDOUT) => Failure::Timeout,
            Some(libc::ECONNRESET | libc::ECONNABORTED | libc::EPIPE) => Failure::Reset,
            Some(libc::EADDRNOTAVAIL | libc::EADDRINUSE) => Failure::AddrNotAvailable,
            Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM) => Failure::FdLimit,
            Some(_) => Failure::Other,
            // Errors made up by std (e.g. `WriteZero`) carry only a kind.
            None => match error.kind() {
                io::ErrorKind::ConnectionRefused => Failure::Refused,
                io::ErrorKind::TimedOut => Failure::Timeout,
                io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted | io::ErrorKind::BrokenPipe => {
                    Failure::Reset
                }
                io::ErrorKind::AddrNotAvailable | io::ErrorKind::AddrInUse => Failure::AddrNotAvailable,
                _ => Failure::Other,
            },
        }
    }
}

/// How a collar's connection ended before the end of the run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    /// A socket error or a timeout on our side.
    Failed(Failure),
    /// The gateway said `BYE <reason>`; the reason as sent (see
    /// [`bye_reason`]).
    Bye(String),
    /// The gateway closed the connection without a `BYE`.
    WithoutBye,
}

/// Longest `BYE` reason kept as it is; longer or odd ones count as `other`.
const MAX_REASON: usize = 32;

/// The reason of a `BYE` line (`line` without the `BYE ` prefix), kept only
/// if it looks like one (lower-case letters, digits, `-`; short), so a
/// misbehaving server cannot make the report grow without bound.
pub fn bye_reason(text: &[u8]) -> String {
    let plausible = !text.is_empty()
        && text.len() <= MAX_REASON
        && text.iter().all(|&b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if plausible { String::from_utf8_lossy(text).into_owned() } else { "other".to_owned() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_socket_errors() {
        let os = io::Error::from_raw_os_error;
        assert_eq!(Failure::of(&os(libc::ECONNREFUSED)), Failure::Refused);
        assert_eq!(Failure::of(&os(libc::ETIMEDOUT)), Failure::Timeout);
        assert_eq!(Failure::of(&os(libc::ECONNRESET)), Failure::Reset);
        assert_eq!(Failure::of(&os(libc::EPIPE)), Failure::Reset);
        assert_eq!(Failure::of(&os(libc::EADDRNOTAVAIL)), Failure::AddrNotAvailable);
        assert_eq!(Failure::of(&os(libc::EMFILE)), Failure::FdLimit);
        assert_eq!(Failure::of(&os(libc::ENFILE)), Failure::FdLimit);
        assert_eq!(Failure::of(&os(libc::ENETUNREACH)), Failure::Other);
        assert_eq!(Failure::of(&io::ErrorKind::WriteZero.into()), Failure::Other);
        assert_eq!(Failure::of(&io::ErrorKind::ConnectionReset.into()), Failure::Reset);
    }

    #[test]
    fn bye_reasons_are_kept_only_when_plausible() {
        assert_eq!(bye_reason(b"shutdown"), "shutdown");
        assert_eq!(bye_reason(b"server-full"), "server-full");
        assert_eq!(bye_reason(b""), "other");
        assert_eq!(bye_reason(b"Shutdown"), "other");
        assert_eq!(bye_reason(b"a b"), "other");
        assert_eq!(bye_reason(&[b'x'; 33]), "other");
        assert_eq!(bye_reason(&[0xff, 0x00]), "other");
    }
}
