//! Why a connection ended.
//!
//! Every close goes through one [`CloseReason`], so the stats can count
//! closes by reason and a device that the gateway drops on purpose is told
//! why with a `BYE <reason>` line (see [`CloseReason::bye`]).

/// The reason a connection was closed. The variants are counted in
/// [`crate::stats::Stats`]; `ALL` lists them in a stable order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CloseReason {
    /// The peer closed its side (read returned end of file).
    PeerClosed,
    /// A read or write failed (reset by peer, broken pipe, ...).
    IoError,
    /// Another connection identified with the same MAC (takeover).
    Replaced,
    /// Nothing was received for `--idle-timeout`.
    Idle,
    /// No successful IDENTIFY within `--handshake-timeout`.
    HandshakeTimeout,
    /// No answer to a heartbeat PING within `--heartbeat-timeout`; the peer is
    /// presumed dead, so no BYE is sent.
    HeartbeatTimeout,
    /// A line exceeded `--max-line`.
    LineTooLong,
    /// The gateway was at `--max-connections` when the connection arrived.
    ServerFull,
    /// The gateway is shutting down.
    Shutdown,
    /// The peer did not read its output and the buffer passed its limit
    /// (`--max-output`, or `--sse-max-backlog` for an event stream).
    SlowConsumer,
    /// HTTP: the exchange ended as asked (`Connection: close`, HTTP/1.0).
    Completed,
    /// HTTP: keep-alive connection idle for `--http-idle-timeout`.
    HttpIdle,
    /// HTTP: a request not complete within `--http-request-timeout` (408).
    RequestTimeout,
    /// HTTP: a request that cannot be read on from (400, 413, 431, 501).
    BadRequest,
    /// HTTP: an idle keep-alive connection closed to make room for a new
    /// one at `--max-http-connections`.
    Evicted,
    /// Turned away: its address already held `--http-max-per-ip`
    /// connections.
    PeerLimit,
    /// A link (Redis): a reply overdue by `--redis-timeout`.
    LinkTimeout,
    /// A link (Redis): the peer sent what its protocol does not allow.
    ProtocolError,
    /// The collar's `AUTH` did not prove its key (`--device-key-file`).
    AuthFailed,
    /// The collar's MAC is quarantined for flapping (`--flap-limit`).
    Flapping,
    /// The kernel gave up on the peer (`ETIMEDOUT`): keepalive probes went
    /// unanswered, or written data stayed unacknowledged for
    /// `--tcp-user-timeout`.
    TcpTimeout,
    /// TLS failed: the peer spoke something other than TLS to a TLS port,
    /// its handshake or client certificate was refused, or a record did
    /// not decrypt. Nothing more can be said to it but a TLS alert.
    TlsError,
}

impl CloseReason {
    pub const ALL: [CloseReason; 22] = [
        CloseReason::PeerClosed,
        CloseReason::IoError,
        CloseReason::Replaced,
        CloseReason::Idle,
        CloseReason::HandshakeTimeout,
        CloseReason::HeartbeatTimeout,
        CloseReason::LineTooLong,
        CloseReason::ServerFull,
        CloseReason::Shutdown,
        CloseReason::SlowConsumer,
        CloseReason::Completed,
        CloseReason::HttpIdle,
        CloseReason::RequestTimeout,
        CloseReason::BadRequest,
        CloseReason::Evicted,
        CloseReason::PeerLimit,
        CloseReason::LinkTimeout,
        CloseReason::ProtocolError,
        CloseReason::AuthFailed,
        CloseReason::Flapping,
        CloseReason::TcpTimeout,
        CloseReason::TlsError,
    ];

    /// The reason's name in logs, stats and `BYE` lines.
    pub fn as_str(self) -> &'static str {
        match self {
            CloseReason::PeerClosed => "peer-closed",
            CloseReason::IoError => "io-error",
            CloseReason::Replaced => "replaced",
            CloseReason::Idle => "idle",
            CloseReason::HandshakeTimeout => "handshake-timeout",
            CloseReason::HeartbeatTimeout => "heartbeat-timeout",
            CloseReason::LineTooLong => "line-too-long",
            CloseReason::ServerFull => "server-full",
            CloseReason::Shutdown => "shutdown",
            CloseReason::SlowConsumer => "slow-consumer",
            CloseReason::Completed => "completed",
            CloseReason::HttpIdle => "http-idle",
            CloseReason::RequestTimeout => "request-timeout",
            CloseReason::BadRequest => "bad-request",
            CloseReason::Evicted => "evicted",
            CloseReason::PeerLimit => "per-ip-limit",
            CloseReason::LinkTimeout => "link-timeout",
            CloseReason::ProtocolError => "protocol-error",
            CloseReason::AuthFailed => "auth-failed",
            CloseReason::Flapping => "flapping",
            CloseReason::TcpTimeout => "tcp-timeout",
            CloseReason::TlsError => "tls-error",
        }
    }

    /// Whether the connection lingers after this decision (flush, then shut
    /// down the write side and wait for the peer's FIN). Not when the peer
    /// is already gone or presumed dead, nor for an idle connection closed
    /// to free its descriptor at once.
    pub fn lingers(self) -> bool {
        !matches!(
            self,
            CloseReason::PeerClosed | CloseReason::IoError | CloseReason::Evicted | CloseReason::LinkTimeout
        ) && !self.aborts()
    }

    /// Whether the peer is presumed dead, so the connection is closed
    /// abortively (`SO_LINGER` 0: a reset, the socket freed at once, and
    /// whatever the kernel still held for the peer discarded rather than
    /// delivered should it come back). Last words (`BYE idle`) get one
    /// flush first. Every close on purpose that tells the peer why and
    /// expects it alive stays graceful.
    pub fn aborts(self) -> bool {
        matches!(self, CloseReason::HeartbeatTimeout | CloseReason::Idle | CloseReason::TcpTimeout)
    }

    /// The line sent to a device just before the gateway closes it on
    /// purpose; `None` when the peer is gone or presumed dead, and for the
    /// HTTP-only reasons.
    pub fn bye(self) -> Option<&'static [u8]> {
        Some(match self {
            CloseReason::PeerClosed
            | CloseReason::IoError
            | CloseReason::HeartbeatTimeout
            | CloseReason::TcpTimeout
            | CloseReason::Completed
            | CloseReason::HttpIdle
            | CloseReason::RequestTimeout
            | CloseReason::BadRequest
            | CloseReason::Evicted
            | CloseReason::LinkTimeout
            | CloseReason::ProtocolError
            | CloseReason::TlsError => return None,
            CloseReason::Replaced => b"BYE replaced\n",
            CloseReason::Idle => b"BYE idle\n",
            CloseReason::HandshakeTimeout => b"BYE handshake-timeout\n",
            CloseReason::LineTooLong => b"BYE line-too-long\n",
            CloseReason::ServerFull => b"BYE server-full\n",
            CloseReason::Shutdown => b"BYE shutdown\n",
            CloseReason::SlowConsumer => b"BYE slow-consumer\n",
            CloseReason::PeerLimit => b"BYE per-ip-limit\n",
            CloseReason::AuthFailed => b"BYE auth-failed\n",
            CloseReason::Flapping => b"BYE flapping\n",
        })
    }

    /// Position in [`CloseReason::ALL`], for counter arrays.
    pub fn index(self) -> usize {
        self as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_is_in_index_order() {
        for (i, reason) in CloseReason::ALL.iter().enumerate() {
            assert_eq!(reason.index(), i);
        }
    }

    #[test]
    fn a_presumed_dead_peer_is_reset_not_lingered_for() {
        let aborted: Vec<_> = CloseReason::ALL.into_iter().filter(|r| r.aborts()).collect();
        assert_eq!(aborted, [CloseReason::Idle, CloseReason::HeartbeatTimeout, CloseReason::TcpTimeout]);
        assert!(aborted.iter().all(|r| !r.lingers()));
        assert!(CloseReason::Replaced.lingers() && CloseReason::Shutdown.lingers());
    }

    #[test]
    fn bye_names_the_reason() {
        for reason in CloseReason::ALL {
            if let Some(bye) = reason.bye() {
                assert_eq!(bye, format!("BYE {}\n", reason.as_str()).as_bytes());
            }
        }
    }
}
