//! TLS as one more layer the reactor drives, between the socket and the
//! session: no thread, no runtime, no protocol changed.
//!
//! rustls is sans-IO, and its unbuffered API leaves every buffer to the
//! caller. On a connection accepted by a TLS listener the reactor reads
//! records into its shared scratch buffer (through [`io::read`], so
//! `io.rs` stays the only code that reads), has rustls open them
//! (`Tls::open`), and hands the session all the plaintext of a read at
//! once, as a plain read hands over all its bytes. The session appends
//! plaintext to the connection's [`OutBuf`](super::OutBuf) as always; the
//! flush phase seals up to one write budget of it into the scratch buffer
//! and writes the records from there. So every limit keeps its meaning:
//! `--max-line` and `--max-output` count plaintext, the output limits
//! judge what the kernel has not taken (the plaintext not yet sealed and
//! the records not yet written), and the session's deadlines run from the
//! TCP connect, so the handshake timeout covers the TLS handshake too.
//!
//! What a connection keeps of its own is rustls's state (keys, the
//! handshake's progress) and two byte strings that are empty, and own no
//! memory, while it is idle: `Tls::received`, the start of a record
//! whose end has not arrived, and `Tls::sealed`, records the kernel has
//! not taken yet (a handshake flight, or what a full socket left of one
//! write). rustls's state is about 3.3 KB against 7.4 KB for its buffered
//! connection, which keeps a 4 KiB receive buffer of its own
//! (`cargo bench --bench tls_memory`).
//!
//! Plaintext waiting in the `OutBuf` is sealed only once the records
//! before it are written, so `sealed` holds at most one write budget of
//! application data. Every whole record a read completes is opened, so
//! what is carried to the next read is never more than the start of one
//! (or of a handshake message).
//!
//! When the handshake completes with a client certificate (mutual TLS),
//! the session is told whom the certificate names ([`PeerIdentity`],
//! [`Session::on_peer_identity`]) before any input: the protocol decides
//! what that means.
//!
//! A TLS failure (plain text to a TLS port, a refused certificate, a
//! record that does not decrypt) closes the connection as `tls-error`,
//! after the alert rustls has for it; a close before the handshake
//! completes says nothing in clear text (the session's last words are
//! dropped); after it, the last words are sealed a write budget at a time
//! like any output, and followed by a `close_notify`.
//!
//! [`io::read`]: super::io::read
//! [`Session::on_peer_identity`]: super::Session::on_peer_identity

use std::sync::Arc;

use log::debug;
use rustls::ServerConfig;
use rustls::server::{ServerConnectionData, UnbufferedServerConnection};
use rustls::unbuffered::{ConnectionState, EncodeError, EncodeTlsData, EncryptError, WriteTraffic};

use super::Reactor;
use super::app::App;
use super::budget::Budget;
use super::io::{self, Io, ReadEnd};
use super::session::{Next, Session as _};
use crate::close::CloseReason;

/// Room kept in the scratch buffer beyond the plaintext sealed into it:
/// a record's header, tag and content type (29 bytes at most) for each
/// of up to four records, and a key update rustls may put in front.
const SEAL_SLACK: usize = 512;

/// A connection's TLS state, boxed, so a plain connection pays one null
/// pointer for it.
pub struct Tls {
    conn: UnbufferedServerConnection,
    /// Received bytes that are not a whole record yet (or the records of
    /// a handshake message not yet whole), which go in front of the next
    /// read. rustls may have opened part of them in place: they are
    /// handed back exactly as it left them.
    received: Vec<u8>,
    /// Records sealed and not yet taken by the kernel, in order.
    sealed: Vec<u8>,
    /// The handshake completed and the session was told.
    secured: bool,
    /// The connection is closing: a `close_notify` follows the last words.
    close_notify: bool,
    /// rustls reported a failure: it is not asked again (a second call
    /// would process the input again and report, and alert, the same
    /// failure twice).
    failed: bool,
    /// Some bytes of a handshake arrived: an end of file before it
    /// completes is a truncated handshake, not a peer that just hung up.
    started: bool,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("secured", &self.secured)
            .field("received", &self.received.len())
            .field("sealed", &self.sealed.len())
            .finish_non_exhaustive()
    }
}

/// Whom the peer's client certificate names, as the reactor hands it to
/// the session after a mutual-TLS handshake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerIdentity {
    /// The subject's common name (CN), if it has one that is UTF-8.
    pub common_name: Option<String>,
}

/// Where opening the received records stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Opened {
    /// Every whole record is open; the rest needs more bytes.
    NeedMore,
    /// The peer sent its `close_notify`: nothing more will come.
    PeerClosed,
}

impl Tls {
    /// The TLS state of a new connection on a listener with `config`.
    pub fn accept(config: &Arc<ServerConfig>) -> Result<Box<Tls>, rustls::Error> {
        let conn = UnbufferedServerConnection::new(Arc::clone(config))?;
        Ok(Box::new(Tls {
            conn,
            received: Vec::new(),
            sealed: Vec::new(),
            secured: false,
            close_notify: false,
            failed: false,
            started: false,
        }))
    }

    /// Whether there is something to write, with `plaintext` waiting or
    /// not: records, or (once the handshake completed) plaintext to seal
    /// or the `close_notify` owed at a close.
    pub fn has_output(&self, plaintext: bool) -> bool {
        !self.sealed.is_empty() || (self.is_secured() && (plaintext || self.close_notify))
    }

    /// The bytes of records waiting to be written that count against the
    /// output limits: once the handshake completed (a large certificate
    /// chain the peer is slow to take is the handshake timeout's matter).
    pub fn unsent(&self) -> usize {
        if self.is_secured() { self.sealed.len() } else { 0 }
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

    /// Puts what was carried of a record at the front of `buf`, for a
    /// read to append to. Returns its length.
    fn resume(&mut self, buf: &mut [u8]) -> usize {
        let carried = std::mem::take(&mut self.received);
        buf[..carried.len()].copy_from_slice(&carried);
        carried.len()
    }

    /// Opens the records in `buf` (see [`Tls::open`]) and moves what is
    /// left, the start of a record, to its front. Returns the length of
    /// that start and where opening stopped.
    fn receive(
        &mut self,
        buf: &mut [u8],
        plaintext: &mut Vec<u8>,
        on_secured: &mut dyn FnMut(&Tls),
    ) -> (usize, Result<Opened, rustls::Error>) {
        let (done, opened) = self.open(buf, plaintext, on_secured);
        buf.copy_within(done.., 0);
        (buf.len() - done, opened)
    }

    /// Keeps `start`, the start of a record, until the next read; nothing
    /// when the records ended with the read.
    fn keep(&mut self, start: &[u8]) {
        if !start.is_empty() {
            self.received = start.to_vec();
        }
    }

    /// Has rustls process the records at the start of `incoming` (the
    /// bytes carried from before, then those just read): handshake
    /// messages move the handshake on, and what it has to send is sealed
    /// into [`Tls::sealed`]; `on_secured` is called when the handshake
    /// completes, before any application record is opened; application
    /// records are opened and their plaintext appended to `plaintext`.
    /// Every whole record is processed. Returns how many bytes of
    /// `incoming` are done with (the rest must be handed back, from its
    /// start, next time) and where it stopped. After a failure, the alert
    /// rustls has for the peer is sealed too.
    fn open(
        &mut self,
        incoming: &mut [u8],
        plaintext: &mut Vec<u8>,
        on_secured: &mut dyn FnMut(&Tls),
    ) -> (usize, Result<Opened, rustls::Error>) {
        if self.failed {
            return (0, Err(failed_before()));
        }
        let mut done = 0;
        loop {
            if !self.secured && !self.conn.is_handshaking() {
                self.secured = true;
                on_secured(self);
            }
            let status = self.conn.process_tls_records(&mut incoming[done..]);
            let discard = status.discard;
            let step = match status.state {
                Ok(ConnectionState::ReadTraffic(mut records)) => loop {
                    match records.next_record() {
                        None => break None,
                        Some(Ok(record)) => plaintext.extend_from_slice(record.payload),
                        Some(Err(e)) => break Some(Err(e)),
                    }
                },
                Ok(ConnectionState::EncodeTlsData(data)) => {
                    encode_sealed(data, &mut self.sealed);
                    None
                }
                // The records are in `sealed`, which goes out before
                // anything sealed later: as good as transmitted.
                Ok(ConnectionState::TransmitTlsData(sent)) => {
                    sent.done();
                    None
                }
                Ok(ConnectionState::BlockedHandshake | ConnectionState::WriteTraffic(_)) => Some(Ok(Opened::NeedMore)),
                Ok(ConnectionState::PeerClosed | ConnectionState::Closed) => Some(Ok(Opened::PeerClosed)),
                // The listeners accept no early data; anything else is a
                // state this layer does not know.
                Ok(state) => Some(Err(rustls::Error::General(format!("unexpected TLS state {state:?}")))),
                Err(e) => Some(Err(e)),
            };
            done += discard;
            match step {
                None => continue,
                Some(Err(e)) => {
                    self.failed = true;
                    self.seal_alert(&mut incoming[done..]);
                    return (done, Err(e));
                }
                Some(Ok(opened)) => return (done, Ok(opened)),
            }
        }
    }

    /// After a failure, rustls hands over the alert it queued for the
    /// peer, ahead of anything else, on the next call. That call is the
    /// last: one more would process the input again and report (and try
    /// to alert) the same failure twice. (So when a key update of ours
    /// was queued in front of the alert, the key update goes and the
    /// alert does not; the connection is closed either way.)
    fn seal_alert(&mut self, incoming: &mut [u8]) {
        if let Ok(ConnectionState::EncodeTlsData(data)) = self.conn.process_tls_records(incoming).state {
            encode_sealed(data, &mut self.sealed);
        }
    }

    /// Seals with `write` into `target` from `at` on, once rustls may send
    /// application data, after any handshake record it queued first (a
    /// key update). `target` grows if rustls asks for more room. Returns
    /// where the sealed records end.
    fn seal(
        &mut self,
        target: &mut Vec<u8>,
        at: usize,
        mut write: impl FnMut(&mut WriteTraffic<'_, ServerConnectionData>, &mut [u8]) -> Result<usize, EncryptError>,
    ) -> Result<usize, rustls::Error> {
        if self.failed {
            return Err(failed_before());
        }
        let mut end = at;
        loop {
            let status = self.conn.process_tls_records(&mut self.received);
            let discard = status.discard;
            let step = match status.state {
                Ok(ConnectionState::EncodeTlsData(data)) => {
                    end = encode(data, target, end);
                    None
                }
                Ok(ConnectionState::TransmitTlsData(sent)) => {
                    sent.done();
                    None
                }
                Ok(ConnectionState::WriteTraffic(mut traffic)) => loop {
                    match write(&mut traffic, &mut target[end..]) {
                        Ok(n) => break Some(Ok(end + n)),
                        Err(EncryptError::InsufficientSize(room)) => target.resize(end + room.required_size, 0),
                        Err(e) => break Some(Err(rustls::Error::General(e.to_string()))),
                    }
                },
                // Bytes carried in `received` are never a whole record
                // ([`Tls::open`] processes every whole one), so this is a
                // connection that may not send: closed, or not yet
                // secured.
                Ok(state) => Some(Err(rustls::Error::General(format!("cannot send in TLS state {state:?}")))),
                Err(e) => Some(Err(e)),
            };
            self.received.drain(..discard);
            if let Some(result) = step {
                self.failed = result.is_err();
                return result;
            }
        }
    }
}

/// What a connection that failed before says when asked again.
fn failed_before() -> rustls::Error {
    rustls::Error::General("the TLS connection failed before".into())
}

/// Writes the handshake record rustls hands over into `target` at `at`,
/// growing `target` if it lacks the room rustls asks for. Returns where
/// the record ends.
fn encode(mut data: EncodeTlsData<'_, ServerConnectionData>, target: &mut Vec<u8>, at: usize) -> usize {
    loop {
        match data.encode(&mut target[at..]) {
            Ok(n) => return at + n,
            Err(EncodeError::InsufficientSize(e)) => target.resize(at + e.required_size, 0),
            Err(EncodeError::AlreadyEncoded) => return at,
        }
    }
}

/// Appends the handshake record rustls hands over to `sealed`.
fn encode_sealed(data: EncodeTlsData<'_, ServerConnectionData>, sealed: &mut Vec<u8>) {
    let end = encode(data, sealed, sealed.len());
    sealed.truncate(end);
}

/// How reading a TLS connection ended: as a plain read may, or two more.
enum End {
    Read(ReadEnd),
    /// The peer's `close_notify`: bytes may still follow it in the socket.
    Notified,
    Tls(rustls::Error),
}

impl<A: App> Reactor<A> {
    /// [`Reactor::read_input`] for a TLS connection: up to `budget` reads,
    /// each appended to what was carried of a record, with every record
    /// it completes opened and handed to the session.
    pub(super) fn read_tls_input(&mut self, app: &mut A, key: usize, budget: usize) {
        let now = self.now;
        let conn = &mut self.conns[key];
        let token = conn.token(key);
        let tls = conn.tls.as_mut().expect("a TLS connection");
        let mut filled = tls.resume(&mut self.scratch);
        let mut cx = cx!(self, conn, token);
        let session = &mut conn.session;
        let mut next = Next::Continue;
        let mut got = false;
        let mut reads = 0;
        let end = loop {
            if reads == budget {
                break End::Read(ReadEnd::Budget);
            }
            reads += 1;
            let room = self.scratch.len() - filled;
            if room == 0 {
                break End::Tls(rustls::Error::General("a record larger than the read buffer".into()));
            }
            let n = match io::read(&conn.stream, &mut self.scratch[filled..]) {
                Io::Done(n) => n,
                Io::WouldBlock => break End::Read(ReadEnd::Drained),
                Io::Closed if tls.started && !tls.secured => {
                    break End::Tls(rustls::Error::General("the handshake was cut short".into()));
                }
                Io::Closed => break End::Read(ReadEnd::Closed),
                Io::Failed(e) => break End::Read(ReadEnd::Failed(e)),
            };
            got = true;
            tls.started = true;
            cx.stats.bytes_in += n as u64;
            cx.stats.reads += 1;
            filled += n;
            let plaintext = &mut self.plaintext;
            // Whom the certificate names goes to the session before any
            // input; a session that refuses it gets none (the records are
            // still opened, so that none is carried).
            let (left, opened) = tls.receive(&mut self.scratch[..filled], plaintext, &mut |tls: &Tls| {
                let resumed = tls.conn.handshake_kind() == Some(rustls::HandshakeKind::Resumed);
                cx.stats.tls_handshakes[usize::from(resumed)] += 1;
                if let Some(identity) = tls.peer_identity() {
                    next = session.on_peer_identity(&identity, &mut cx);
                }
            });
            filled = left;
            // All the read's plaintext at once, as a plain read hands over
            // all its bytes.
            if !plaintext.is_empty() && next == Next::Continue {
                log::trace!("#{key} <- \"{}\" (TLS)", plaintext.escape_ascii());
                next = session.on_input(plaintext, &mut cx);
            }
            plaintext.clear();
            match opened {
                Ok(Opened::NeedMore) => {}
                Ok(Opened::PeerClosed) => break End::Notified,
                Err(e) => break End::Tls(e),
            }
            // Output past the limit stops reading, as for a plain read.
            let backed_up = cx.out.len() + tls.unsent() > session.output_limit(cx.config).bytes();
            if next != Next::Continue || backed_up || !session.wants_input(cx.config) {
                break End::Read(ReadEnd::Stopped);
            }
            if n < room && !conn.read_closed {
                break End::Read(ReadEnd::Drained);
            }
        };
        tls.keep(&self.scratch[..filled]);
        if got {
            conn.last_rx = now;
        }
        self.take_effects(token);
        match end {
            End::Read(end) => self.after_read(app, key, end, next),
            // The peer said it is done, as an end of file does, but the
            // socket stays readable: the close drains what follows.
            End::Notified => {
                self.after_read(app, key, ReadEnd::Stopped, next);
                self.on_peer_closed(app, key);
            }
            End::Tls(e) => {
                // Once per peer: the connection ends here.
                debug!("#{key} TLS from {}: {e}", self.conns[key].peer);
                self.close(key, CloseReason::TlsError);
                self.settle(app);
            }
        }
    }

    /// [`Reactor::write_once`] for a TLS connection: one write of the
    /// records sealed before, followed by up to `budget` bytes of
    /// plaintext (and, at a close, the `close_notify`) sealed behind them
    /// in the scratch buffer. What the kernel does not take is kept
    /// sealed. Returns the bytes written.
    pub(super) fn write_tls_once(&mut self, app: &mut A, key: usize, budget: usize) -> usize {
        let conn = &mut self.conns[key];
        let tls = conn.tls.as_mut().expect("a TLS connection");
        let scratch = &mut self.scratch;
        // Records from before go first. Past half the scratch buffer (a
        // budget sealed when the socket was already full), they go alone,
        // straight from where they are.
        let direct = tls.sealed.len() > scratch.len() / 2;
        let mut len = 0;
        if !direct {
            len = tls.sealed.len();
            scratch[..len].copy_from_slice(&tls.sealed);
            tls.sealed = Vec::new();
        }
        let mut cut = false;
        if !direct && tls.is_secured() && len < budget {
            let pending = conn.out.pending();
            let most = (budget - len).min(scratch.len() - len - SEAL_SLACK);
            let chunk = &pending[..pending.len().min(most)];
            cut = chunk.len() < pending.len();
            let last = !cut && tls.close_notify;
            let sealed = match (chunk.is_empty(), last) {
                (true, false) => Ok(len),
                (true, true) => tls.seal(scratch, len, |traffic, buf| traffic.queue_close_notify(buf)),
                (false, _) => {
                    log::trace!("#{key} -> \"{}\" (TLS)", chunk.escape_ascii());
                    tls.seal(scratch, len, |traffic, buf| traffic.encrypt(chunk, buf)).and_then(|end| {
                        if last {
                            tls.seal(scratch, end, |traffic, buf| traffic.queue_close_notify(buf))
                        } else {
                            Ok(end)
                        }
                    })
                }
            };
            match sealed {
                Ok(end) => {
                    len = end;
                    tls.close_notify &= !last;
                    conn.out.consume(chunk.len(), &mut self.pool);
                }
                Err(e) => {
                    debug!("#{key} TLS: {e}");
                    tls.sealed = scratch[..len].to_vec();
                    tls.close_notify = false;
                    conn.out.clear(&mut self.pool);
                    if conn.phase == super::Phase::Open {
                        self.close(key, CloseReason::TlsError);
                        self.settle(app);
                    }
                    return 0;
                }
            }
        }
        if direct && tls.sealed.len() > budget {
            cut = true;
        }
        let records = if direct { &tls.sealed[..budget.min(tls.sealed.len())] } else { &scratch[..len] };
        if records.is_empty() {
            // Plaintext waits for the handshake to complete; it has no
            // output until then.
            if !conn.has_output() {
                self.on_flushed(key);
            }
            return 0;
        }
        let written = match io::write(&conn.stream, records) {
            Io::Done(n) => n,
            Io::WouldBlock => 0,
            Io::Closed => {
                self.on_io_error(app, key, &std::io::ErrorKind::WriteZero.into());
                return 0;
            }
            Io::Failed(e) => {
                self.on_io_error(app, key, &e);
                return 0;
            }
        };
        let partial = written < records.len();
        if written > 0 {
            self.stats.bytes_out += written as u64;
            self.stats.writes += 1;
        }
        if direct {
            tls.sealed.drain(..written);
        } else if partial {
            tls.sealed = scratch[written..len].to_vec();
        }
        if tls.sealed.is_empty() {
            // Idle, it keeps no buffer.
            tls.sealed = Vec::new();
        }
        if partial {
            // The kernel's buffer is full: wait for the WRITABLE edge.
            conn.blocked = true;
        } else if cut {
            self.stats.budget_spent(Budget::WriteBytes);
        }
        let conn = &self.conns[key];
        if !conn.has_output() {
            self.on_flushed(key);
        } else if conn.blocked && conn.phase == super::Phase::Open && self.slow_consumer(key) {
            // As for a plain write, only a peer whose kernel took less than
            // it was given is judged.
            self.close(key, CloseReason::SlowConsumer);
            self.settle(app);
        } else {
            self.resume_reading(key);
        }
        written
    }

    /// A TLS connection is closing: once the handshake completed, its last
    /// words stay in its output, to be sealed by the flush a budget at a
    /// time, and a `close_notify` follows them; before that, nothing may
    /// be said in clear text, so they are dropped (a TLS alert rustls
    /// sealed still goes out).
    pub(super) fn close_tls(&mut self, key: usize, reason: CloseReason) {
        let conn = &mut self.conns[key];
        let Some(tls) = conn.tls.as_mut() else { return };
        if reason != CloseReason::TlsError && tls.is_secured() {
            tls.close_notify = true;
        } else {
            conn.out.clear(&mut self.pool);
        }
    }
}

#[cfg(test)]
mod tests;
