//! Reading, writing and closing a connection, whatever speaks on it.
//!
//! Reads go into the reactor's shared scratch buffer and are handed to the
//! connection's protocol; a connection keeps no read buffer of its own.
//! Writes go straight to the socket; only what the kernel does not take is
//! queued in the connection's [`crate::connection::OutBuf`], and only then
//! is WRITABLE interest registered, to be dropped again once it drains.
//!
//! Closing is a small state machine (see [`Phase`]): a connection told
//! `BYE` flushes, shuts down its write side, and lingers reading until the
//! peer closes or the linger deadline passes; one that failed or whose peer
//! is presumed dead is freed at once. The reason is counted once, when the
//! connection leaves `Open`.

use std::mem;
use std::ops::ControlFlow;

use log::{debug, error, trace};
use mio::event::Event;
use mio::{Interest, Token};

use super::Reactor;
use crate::close::CloseReason;
use crate::connection::{Kind, Phase, Role};
use crate::http::State;
use crate::io::{self as sock, Io};
use crate::net;
use crate::time::deadline;

/// Reads of the scratch buffer per connection per turn, so that one busy
/// peer cannot starve the others (4 x 64 KiB).
const READS_PER_TURN: usize = 4;

impl Reactor {
    pub(super) fn on_conn_event(&mut self, token: Token, event: &Event) {
        // A stale token: its connection was freed earlier in this batch.
        let Some(key) = self.live_key(token) else {
            return;
        };
        if event.is_writable() {
            self.on_writable(key);
        }
        if (event.is_readable() || event.is_read_closed() || event.is_error()) && self.live_key(token).is_some() {
            // With the peer's FIN already reported, read on past a short read
            // to see the end of file: no further edge will announce it.
            self.on_readable(key, event.is_read_closed() || event.is_error());
        }
    }

    /// Reads until the socket is drained or this turn's budget is spent.
    ///
    /// A short read means the receive queue is empty; any byte arriving
    /// later raises a new edge, so the read that would only say
    /// `WouldBlock` is skipped. `to_eof` asks to read on regardless.
    pub(super) fn on_readable(&mut self, key: usize, to_eof: bool) {
        let mut scratch = mem::take(&mut self.scratch);
        for reads in 1..=READS_PER_TURN {
            let Some(conn) = self.conns.get_mut(key) else {
                break;
            };
            let n = match sock::read(&conn.stream, &mut scratch) {
                Io::Done(n) => n,
                Io::WouldBlock => break,
                Io::Closed => {
                    self.on_peer_closed(key);
                    break;
                }
                Io::Failed(e) => {
                    self.on_io_error(key, &e);
                    break;
                }
            };
            // Activity only moves deadlines later, and the timer finds that
            // out when it fires. The exception is an answer to a heartbeat
            // PING: the next one is due an interval after it, which may be
            // before the pending heartbeat-timeout deadline, so the timer is
            // re-filed (once per heartbeat round, not per read).
            let answered = conn.heartbeat_outstanding();
            conn.last_rx = self.now;
            self.stats.bytes_in += n as u64;
            trace!("#{key} <- \"{}\"", scratch[..n].escape_ascii());
            // A closing connection's input is read only to be discarded.
            if conn.phase == Phase::Open {
                match conn.role {
                    Role::Device(_) => self.device_input(key, &scratch[..n]),
                    Role::Http(_) => self.http_input(key, &scratch[..n]),
                }
            }
            if answered && self.conns.get(key).is_some_and(|c| c.phase == Phase::Open) {
                self.rearm_device(key);
            }
            if n < scratch.len() && !to_eof {
                break;
            }
            if reads == READS_PER_TURN && self.conns.contains(key) {
                let token = self.token_of(key);
                self.ready.push(token);
            }
        }
        self.scratch = scratch;
    }

    /// Reads again the connections whose budget ran out last turn.
    pub(super) fn read_leftovers(&mut self) {
        let mut tokens = mem::take(&mut self.ready);
        for token in tokens.drain(..) {
            if let Some(key) = self.live_key(token) {
                self.on_readable(key, true);
            }
        }
        if self.ready.is_empty() {
            self.ready = tokens;
        }
    }

    /// Sends `bytes`: written at once when nothing is queued, the rest
    /// queued for when the socket is writable. An open connection whose
    /// queue would pass its limit (see [`Reactor::output_limit`]) is closed
    /// as a slow consumer; the farewell of a closing one is always queued.
    /// `Break` means the connection is no longer open.
    pub(super) fn send(&mut self, key: usize, bytes: &[u8]) -> ControlFlow<()> {
        trace!("#{key} -> \"{}\"", bytes.escape_ascii());
        let conn = &mut self.conns[key];
        if conn.out.is_empty() {
            let written = match sock::write(&conn.stream, bytes) {
                Io::Done(n) => n,
                Io::WouldBlock => 0,
                Io::Closed => {
                    self.on_io_error(key, &std::io::ErrorKind::WriteZero.into());
                    return ControlFlow::Break(());
                }
                Io::Failed(e) => {
                    self.on_io_error(key, &e);
                    return ControlFlow::Break(());
                }
            };
            self.stats.bytes_out += written as u64;
            if written == bytes.len() {
                return ControlFlow::Continue(());
            }
            conn.out.queue_unwritten(&bytes[..written], &bytes[written..]);
        } else {
            conn.out.push(bytes);
        }
        // Queued first, then checked: a slow consumer's started line must
        // be in the buffer for `keep_started_line` to finish it.
        let open = conn.phase == Phase::Open;
        let queued = conn.out.len();
        if open && self.output_limit(key).is_some_and(|limit| queued > limit) {
            debug!("#{key}: {queued} bytes unsent, over the output limit");
            self.begin_close(key, CloseReason::SlowConsumer);
            return ControlFlow::Break(());
        }
        self.watch_writable(key, true);
        if open { ControlFlow::Continue(()) } else { ControlFlow::Break(()) }
    }

    /// How much unsent output an open connection may hold before it is
    /// dropped as a slow consumer: `--max-output` for a device,
    /// `--sse-max-backlog` for an event stream. HTTP responses have no such
    /// limit: they are bounded by construction (one response per request,
    /// and no request is read while output is above the high-water mark).
    fn output_limit(&self, key: usize) -> Option<usize> {
        match &self.conns[key].role {
            Role::Device(_) => Some(self.config.max_output),
            Role::Http(http) if matches!(http.state, State::Streaming { .. }) => Some(self.config.sse_max_backlog),
            Role::Http(_) => None,
        }
    }

    fn on_writable(&mut self, key: usize) {
        let conn = &mut self.conns[key];
        while !conn.out.is_empty() {
            match sock::write(&conn.stream, conn.out.pending()) {
                Io::Done(n) => {
                    self.stats.bytes_out += n as u64;
                    conn.out.consume(n);
                }
                Io::WouldBlock => return,
                Io::Closed => return self.on_io_error(key, &std::io::ErrorKind::WriteZero.into()),
                Io::Failed(e) => return self.on_io_error(key, &e),
            }
        }
        self.on_flushed(key);
    }

    /// Everything queued went out: stop watching for writability, and move
    /// a closing connection to its next step.
    fn on_flushed(&mut self, key: usize) {
        let conn = &mut self.conns[key];
        match conn.phase {
            Phase::Closing { peer_done: true } => return self.free(key),
            Phase::Closing { peer_done: false } => {
                // FIN after the last line; keep reading until the peer's FIN.
                if let Err(e) = net::shutdown_write(&conn.stream) {
                    return self.on_io_error(key, &e);
                }
                conn.phase = Phase::Lingering;
            }
            Phase::Open => self.http_output_drained(key),
            Phase::Lingering => {}
        }
        self.watch_writable(key, false);
    }

    /// Adds or drops WRITABLE interest, skipping the syscall when it is
    /// already as asked.
    fn watch_writable(&mut self, key: usize, on: bool) {
        let token = self.token_of(key);
        let conn = &mut self.conns[key];
        if conn.writable_interest == on {
            return;
        }
        let interest = if on { Interest::READABLE | Interest::WRITABLE } else { Interest::READABLE };
        match self.poll.registry().reregister(&mut conn.stream, token, interest) {
            Ok(()) => conn.writable_interest = on,
            // Only a kernel out of memory refuses this; the connection's
            // deadlines still bound its life.
            Err(e) => error!("#{key}: cannot change interest: {e}"),
        }
    }

    /// Closes an open connection on purpose. Unless the peer is gone or
    /// presumed dead, it lingers: a device is told why (`BYE <reason>`), an
    /// HTTP client gets what is queued (its last response), then a FIN.
    pub(super) fn begin_close(&mut self, key: usize, reason: CloseReason) {
        if self.conns[key].phase != Phase::Open {
            return;
        }
        self.leave_open(key, reason);
        if !reason.lingers() {
            return self.free(key);
        }
        let conn = &mut self.conns[key];
        conn.phase = Phase::Closing { peer_done: false };
        let is_device = matches!(conn.role, Role::Device(_));
        if reason == CloseReason::SlowConsumer {
            // The peer is not reading: drop the backlog (not the reason). A
            // device keeps the rest of a line already started, so it never
            // sees a torn line before its BYE.
            if is_device {
                conn.out.keep_started_line();
            } else {
                conn.out = Default::default();
            }
        }
        if is_device && let Some(bye) = reason.bye() {
            self.stats.lines_out += 1;
            let _ = self.send(key, bye);
        }
        if self.conns.contains(key) {
            self.linger(key);
        }
    }

    /// Starts closing a connection for shutdown: devices are told `BYE
    /// shutdown`; HTTP connections finish what they are doing first.
    pub(super) fn drain_conn(&mut self, key: usize) {
        match &self.conns[key].role {
            Role::Device(_) => self.begin_close(key, CloseReason::Shutdown),
            Role::Http(_) => self.drain_http(key),
        }
    }

    /// Bounds a closing connection's remaining life by `--linger-timeout`,
    /// and moves it on at once if its output is already flushed.
    fn linger(&mut self, key: usize) {
        match deadline(self.now, self.config.linger_timeout) {
            None => self.free(key),
            at => {
                self.set_timer(key, at);
                if self.conns[key].out.is_empty() {
                    self.on_flushed(key);
                }
            }
        }
    }

    fn on_peer_closed(&mut self, key: usize) {
        let conn = &mut self.conns[key];
        match conn.phase {
            Phase::Open => {
                self.leave_open(key, CloseReason::PeerClosed);
                let conn = &mut self.conns[key];
                if conn.out.is_empty() {
                    self.free(key);
                } else {
                    // Half-closed: the peer may still read what is queued.
                    conn.phase = Phase::Closing { peer_done: true };
                    self.linger(key);
                }
            }
            Phase::Closing { .. } => conn.phase = Phase::Closing { peer_done: true },
            Phase::Lingering => self.free(key),
        }
    }

    fn on_io_error(&mut self, key: usize, e: &std::io::Error) {
        debug!("#{key}: {e}");
        if self.conns[key].phase == Phase::Open {
            self.leave_open(key, CloseReason::IoError);
        }
        self.free(key);
    }

    /// The one place a connection stops being `Open`: counts the reason and
    /// undoes what being open registered (a device's place online, an HTTP
    /// connection's subscription or wait).
    pub(super) fn leave_open(&mut self, key: usize, reason: CloseReason) {
        let kind = self.conns[key].role.kind();
        self.stats.close(kind, reason);
        debug!("#{key} closing: {}", reason.as_str());
        match kind {
            Kind::Device => self.device_offline(key, reason),
            Kind::Http => self.http_offline(key),
        }
    }

    /// Removes the connection: cancels its timer and closes the socket,
    /// which also removes it from the poller (closing the last descriptor
    /// of a file drops its epoll registration, so no `deregister` call).
    pub(super) fn free(&mut self, key: usize) {
        let conn = self.conns.remove(key);
        if let Some(timer) = conn.timer {
            self.wheel.cancel(timer);
        }
        self.open[conn.role.kind() as usize] -= 1;
        debug!("#{key} closed");
    }
}
