//! TLS as one more layer the reactor drives, between the socket and the
//! session: no thread, no runtime, no protocol changed.
//!
//! rustls is sans-IO. On a connection accepted by a TLS listener the
//! reactor hands what the socket has to rustls (`read_tls`, through
//! [`io::Wire`], so `io.rs` stays the only code that reads), lets it
//! decrypt (`process_new_packets`), and gives the session the plaintext
//! as if it had been read from the socket. The session appends plaintext
//! to the connection's [`OutBuf`](super::OutBuf) as always; the flush
//! phase seals it into records (`writer`) and writes them (`write_tls`).
//! So every limit keeps its meaning: `--max-line` and `--max-output`
//! count plaintext, the slow-consumer check judges the plaintext not yet
//! sealed, and the session's deadlines run from the TCP connect, so the
//! handshake timeout covers the TLS handshake too.
//!
//! The plaintext waiting in the connection's `OutBuf` is sealed only once
//! the records before it are written: rustls holds at most one write
//! budget of records, and the `OutBuf` stays the measure of what the peer
//! has not taken. Decrypted input the session did not take (its output is
//! backed up, or it awaits a reply) stays in rustls, and the connection
//! stays `readable`, so it is handed over before the socket is read again.
//!
//! When the handshake completes with a client certificate (mutual TLS),
//! the session is told whom the certificate names ([`PeerIdentity`],
//! [`Session::on_peer_identity`]): the protocol decides what that means.
//!
//! A TLS failure (plain text to a TLS port, a refused certificate, a
//! record that does not decrypt) closes the connection as `tls-error`; a
//! close before the handshake completes says nothing in clear text (the
//! session's last words are dropped); after it, the last words are sealed
//! and followed by a `close_notify`.

use std::io::{ErrorKind, Read as _, Write as _};
use std::sync::Arc;

use log::debug;
use rustls::{ServerConfig, ServerConnection};

use super::Reactor;
use super::app::App;
use super::budget::Budget;
use super::io::Wire;
use super::session::{Next, Session as _};
use crate::close::CloseReason;

/// Most records rustls holds unsent besides those being written; the
/// reactor seals no more than one write budget at a time anyway.
const SEND_LIMIT: usize = 64 * 1024;

/// A connection's TLS state: rustls's, boxed, so a plain connection pays
/// one null pointer for it.
pub struct Tls {
    conn: ServerConnection,
    /// The handshake completed and the session was told.
    secured: bool,
    /// Some bytes of a handshake arrived: an end of file before it
    /// completes is a truncated handshake, not a peer that just hung up.
    started: bool,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls").field("secured", &self.secured).finish_non_exhaustive()
    }
}

/// Whom the peer's client certificate names, as the reactor hands it to
/// the session after a mutual-TLS handshake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerIdentity {
    /// The subject's common name (CN), if it has one that is UTF-8.
    pub common_name: Option<String>,
}

impl Tls {
    /// The TLS state of a new connection on a listener with `config`.
    pub fn accept(config: &Arc<ServerConfig>) -> Result<Box<Tls>, rustls::Error> {
        let mut conn = ServerConnection::new(Arc::clone(config))?;
        conn.set_buffer_limit(Some(SEND_LIMIT));
        Ok(Box::new(Tls { conn, secured: false, started: false }))
    }

    /// Records are waiting to be written.
    pub fn has_output(&self) -> bool {
        self.conn.wants_write()
    }

    /// The handshake completed.
    pub fn is_secured(&self) -> bool {
        !self.conn.is_handshaking()
    }

    /// The identity the client certificate names, if one was presented.
    fn peer_identity(&self) -> Option<PeerIdentity> {
        let cert = self.conn.peer_certificates()?.first()?;
        let common_name = x509_parser::parse_x509_certificate(cert.as_ref()).ok().and_then(|(_, cert)| {
            cert.subject().iter_common_name().next().and_then(|cn| cn.as_str().ok()).map(str::to_owned)
        });
        Some(PeerIdentity { common_name })
    }
}

/// How reading a TLS connection ended.
enum End {
    Drained,
    Budget,
    Stopped,
    Closed,
    Failed(std::io::Error),
    Tls(rustls::Error),
}

impl<A: App> Reactor<A> {
    /// [`Reactor::read_input`] for a TLS connection: decrypted input
    /// rustls holds first, then up to `budget` reads of records, each
    /// decrypted and handed to the session.
    pub(super) fn read_tls_input(&mut self, app: &mut A, key: usize, budget: usize) {
        let now = self.now;
        let mut next = Next::Continue;
        let mut reads = 0;
        let end = 'reading: loop {
            // Hand over what rustls decrypted, as long as the session takes it.
            loop {
                if next != Next::Continue || !self.may_read(key) {
                    break 'reading End::Stopped;
                }
                let conn = &mut self.conns[key];
                let tls = conn.tls.as_mut().expect("a TLS connection");
                let n = match tls.conn.reader().read(&mut self.scratch) {
                    Ok(0) => break 'reading End::Closed,
                    Ok(n) => n,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {
                        // Records rustls has not opened yet (it stops at its
                        // plaintext limit) are opened now.
                        match tls.conn.process_new_packets() {
                            Ok(state) if state.plaintext_bytes_to_read() > 0 => continue,
                            Ok(_) => break,
                            Err(e) => break 'reading End::Tls(e),
                        }
                    }
                    // The peer closed without a close_notify: a truncation
                    // attack or a peer that just hung up; either way, gone.
                    Err(_) => break 'reading End::Closed,
                };
                let token = conn.token(key);
                let mut cx = cx!(self, conn, token);
                log::trace!("#{key} <- \"{}\" (TLS)", self.scratch[..n].escape_ascii());
                next = conn.session.on_input(&self.scratch[..n], &mut cx);
                self.take_effects(token);
            }
            if reads == budget {
                break End::Budget;
            }
            reads += 1;
            let conn = &mut self.conns[key];
            let tls = conn.tls.as_mut().expect("a TLS connection");
            match tls.conn.read_tls(&mut Wire(&conn.stream)) {
                Ok(0) if tls.started && !tls.is_secured() => {
                    break End::Tls(rustls::Error::General("the handshake was cut short".into()));
                }
                Ok(0) => break End::Closed,
                Ok(n) => {
                    tls.started = true;
                    conn.last_rx = now;
                    self.stats.bytes_in += n as u64;
                    self.stats.reads += 1;
                    if let Err(e) = tls.conn.process_new_packets() {
                        break End::Tls(e);
                    }
                    if !tls.secured && tls.is_secured() {
                        tls.secured = true;
                        let resumed = tls.conn.handshake_kind() == Some(rustls::HandshakeKind::Resumed);
                        self.stats.tls_handshakes[usize::from(resumed)] += 1;
                        if let Some(identity) = tls.peer_identity() {
                            next = self.call(key, |s, cx| s.on_peer_identity(&identity, cx));
                        }
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break End::Drained,
                Err(e) => break End::Failed(e),
            }
        };
        match end {
            End::Drained => self.conns[key].readable = false,
            End::Budget => self.stats.budget_spent(Budget::Reads),
            End::Stopped => {}
            End::Closed => {
                self.conns[key].readable = false;
                self.after_call(key, next);
                self.settle(app);
                return self.on_peer_closed(app, key);
            }
            End::Failed(e) => {
                self.after_call(key, next);
                self.settle(app);
                return self.on_io_error(app, key, &e);
            }
            End::Tls(e) => {
                // Once per peer: the connection ends here.
                debug!("#{key} TLS from {}: {e}", self.conns[key].peer);
                self.close(key, CloseReason::TlsError);
                return self.settle(app);
            }
        }
        self.after_call(key, next);
        self.settle(app);
    }

    /// [`Reactor::write_once`] for a TLS connection: seals up to `budget`
    /// bytes of plaintext once the records before are out, then writes
    /// records until the kernel takes no more. Returns the bytes written.
    pub(super) fn write_tls_once(&mut self, app: &mut A, key: usize, budget: usize) -> usize {
        let conn = &mut self.conns[key];
        let tls = conn.tls.as_mut().expect("a TLS connection");
        if !tls.conn.wants_write() && !conn.out.is_empty() && tls.is_secured() {
            let pending = conn.out.pending();
            let chunk = &pending[..pending.len().min(budget)];
            log::trace!("#{key} -> \"{}\" (TLS)", chunk.escape_ascii());
            match tls.conn.writer().write(chunk) {
                Ok(n) => {
                    if n < pending.len() {
                        self.stats.budget_spent(Budget::WriteBytes);
                    }
                    conn.out.consume(n, &mut self.pool);
                }
                Err(e) => {
                    debug!("#{key} TLS: {e}");
                    if conn.phase == super::Phase::Open {
                        self.close(key, CloseReason::TlsError);
                        self.settle(app);
                    }
                    return 0;
                }
            }
        }
        let conn = &mut self.conns[key];
        let tls = conn.tls.as_mut().expect("a TLS connection");
        let mut written = 0;
        while tls.conn.wants_write() {
            match tls.conn.write_tls(&mut Wire(&conn.stream)) {
                Ok(0) => {
                    self.on_io_error(app, key, &ErrorKind::WriteZero.into());
                    return written;
                }
                Ok(n) => {
                    written += n;
                    self.stats.bytes_out += n as u64;
                    self.stats.writes += 1;
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    conn.blocked = true;
                    break;
                }
                Err(e) => {
                    self.on_io_error(app, key, &e);
                    return written;
                }
            }
        }
        if self.conns[key].blocked {
            if self.conns[key].phase == super::Phase::Open && self.slow_consumer(key) {
                self.close(key, CloseReason::SlowConsumer);
                self.settle(app);
            }
        } else if !self.conns[key].has_output() {
            self.on_flushed(key);
        } else {
            self.resume_reading(key);
        }
        written
    }

    /// A TLS connection is closing: its last words are sealed and followed
    /// by a `close_notify` once the handshake completed; before that,
    /// nothing may be said in clear text, so they are dropped (a TLS alert
    /// rustls queued still goes out).
    pub(super) fn close_tls(&mut self, key: usize, reason: CloseReason) {
        let conn = &mut self.conns[key];
        let Some(tls) = conn.tls.as_mut() else { return };
        if reason != CloseReason::TlsError && tls.is_secured() {
            let pending = conn.out.pending();
            // The last words are bounded by the session's output limit.
            tls.conn.set_buffer_limit(None);
            if let Err(e) = tls.conn.writer().write_all(pending) {
                debug!("#{key} TLS: {e}");
            }
            tls.conn.send_close_notify();
        }
        conn.out.clear(&mut self.pool);
    }
}
