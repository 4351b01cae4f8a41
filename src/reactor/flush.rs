//! The flush phase, and the end of a connection's life.
//!
//! Once per turn, just before `poll`, each connection with output is
//! written once: whatever number of replies, events or responses it was
//! owed this turn, one `write`. A fed connection (an event stream, a
//! waiting long poll) has its output produced by the application first,
//! up to its budget, straight from the shared event log: a subscriber is a
//! cursor, not a copy. A write that does not take everything marks the
//! connection `blocked` until the WRITABLE edge; the byte budgets carry the
//! rest to the next turn.
//!
//! Closing is a small state machine (see [`Phase`]): a connection closed on
//! purpose says its last words (the session's [`Session::on_close`](super::Session::on_close)),
//! flushes, shuts down its write side, and lingers reading until the peer
//! closes or the linger deadline passes; one that failed is freed at once;
//! one whose peer is presumed dead ([`CloseReason::aborts`]) is set to
//! reset on close (`SO_LINGER` 0), gets one flush of its last words, and
//! is freed. The reason is counted once, when the connection leaves
//! `Open`.

use std::time::Duration;

use log::debug;

use super::app::{App, Produce};
use super::budget::Budget;
use super::conn::Phase;
use super::io::{self, Io};
use super::session::Session as _;
use super::{Reactor, TICK};
use crate::close::CloseReason;
use crate::net;
use crate::time::{deadline, millis};

impl<A: App> Reactor<A> {
    /// Produces the output of fed connections, round robin, until the
    /// turn's byte budget is spent; then writes every connection queued
    /// when the phase began, once each, within its own byte budget. Small
    /// writes (a collar's `PONG`) never wait behind big ones: the turn's
    /// budget bounds what is produced, not who is written.
    pub(super) fn flush_phase(&mut self, app: &mut A) {
        let mut left = self.settings.budgets.turn_write_bytes;
        for _ in 0..self.produce_queue.len() {
            if left == 0 {
                self.stats.budget_spent(Budget::TurnWriteBytes);
                break;
            }
            let Some(token) = self.produce_queue.pop_front() else { break };
            let Some(key) = self.live_key(token) else { continue };
            self.conns[key].in_produce_queue = false;
            let budget = self.settings.budgets.write_bytes.min(left);
            let before = self.conns[key].out.len();
            let more = self.produce(app, key, budget);
            let Some(conn) = self.conns.get(key) else { continue };
            left -= conn.out.len().saturating_sub(before).min(left);
            if !conn.out.is_empty() {
                self.schedule_flush(key);
            }
            if more {
                self.schedule_produce(key);
            }
        }
        for _ in 0..self.flush_queue.len() {
            let Some(token) = self.flush_queue.pop_front() else { break };
            let Some(key) = self.live_key(token) else { continue };
            let conn = &mut self.conns[key];
            conn.in_flush_queue = false;
            if conn.blocked {
                continue;
            }
            self.write_once(app, key, self.settings.budgets.write_bytes);
            if let Some(conn) = self.conns.get(key)
                && !conn.blocked
                && conn.has_output()
            {
                self.schedule_flush(key);
            }
        }
    }

    /// Asks the application for a fed connection's output, up to `budget`
    /// bytes of unsent output in all. Whether it has more to give.
    fn produce(&mut self, app: &mut A, key: usize, budget: usize) -> bool {
        let conn = &mut self.conns[key];
        if !conn.fed || conn.phase != Phase::Open || conn.blocked {
            return false;
        }
        if conn.out.len() >= budget {
            return true;
        }
        let token = conn.token(key);
        let room = budget - conn.out.len();
        match app.produce(token, &mut conn.out, &mut self.pool, room, &mut self.stats) {
            Produce::Idle => false,
            Produce::More => {
                self.stats.budget_spent(Budget::WriteBytes);
                true
            }
            Produce::Reply(reply) => {
                conn.fed = false;
                self.replies.push_back((token, reply));
                self.settle(app);
                false
            }
            Produce::Close(reason) => {
                conn.fed = false;
                self.close(key, reason);
                self.settle(app);
                false
            }
        }
    }

    /// One `write` of up to `budget` bytes of the connection's output.
    /// Returns the bytes written.
    fn write_once(&mut self, app: &mut A, key: usize, budget: usize) -> usize {
        if self.conns[key].tls.is_some() {
            return self.write_tls_once(app, key, budget);
        }
        let conn = &mut self.conns[key];
        if conn.out.is_empty() {
            self.on_flushed(key);
            return 0;
        }
        let pending = conn.out.pending();
        let chunk = &pending[..pending.len().min(budget)];
        let cut = chunk.len() < pending.len();
        log::trace!("#{key} -> \"{}\"", chunk.escape_ascii());
        match io::write(&conn.stream, chunk) {
            Io::Done(n) => {
                self.stats.bytes_out += n as u64;
                self.stats.writes += 1;
                if n < chunk.len() {
                    // The kernel's buffer is full: wait for the WRITABLE edge.
                    conn.blocked = true;
                } else if cut {
                    self.stats.budget_spent(Budget::WriteBytes);
                }
                conn.out.consume(n, &mut self.pool);
                if conn.out.is_empty() {
                    self.on_flushed(key);
                } else if conn.blocked && conn.phase == Phase::Open && self.slow_consumer(key) {
                    // Only a peer whose kernel took less than it was given
                    // is judged: what the byte budget held back for the
                    // next turn says nothing about the peer.
                    self.close(key, CloseReason::SlowConsumer);
                    self.settle(app);
                } else {
                    self.resume_reading(key);
                }
                n
            }
            Io::WouldBlock => {
                conn.blocked = true;
                if conn.phase == Phase::Open && self.slow_consumer(key) {
                    self.close(key, CloseReason::SlowConsumer);
                    self.settle(app);
                }
                0
            }
            Io::Closed => {
                self.on_io_error(app, key, &std::io::ErrorKind::WriteZero.into());
                0
            }
            Io::Failed(e) => {
                self.on_io_error(app, key, &e);
                0
            }
        }
    }

    /// Everything queued went out: move a closing connection to its next
    /// step, and let a paused one read again.
    pub(super) fn on_flushed(&mut self, key: usize) {
        let conn = &mut self.conns[key];
        match conn.phase {
            Phase::Closing { peer_done: true } => self.free(key),
            Phase::Closing { peer_done: false } => {
                // FIN after the last words; keep reading until the peer's FIN.
                match net::shutdown_write(&conn.stream) {
                    Ok(()) => conn.phase = Phase::Lingering,
                    Err(e) => {
                        debug!("#{key}: {e}");
                        self.free(key);
                    }
                }
            }
            Phase::Open => {
                self.resume_reading(key);
                self.track_idle(key);
            }
            Phase::Lingering => {}
        }
    }

    /// Input held back while the output was over its limit may be read
    /// again once it is under.
    pub(super) fn resume_reading(&mut self, key: usize) {
        let conn = &self.conns[key];
        if conn.phase == Phase::Open
            && (conn.readable || conn.session.has_work())
            && conn.unsent() <= conn.session.output_limit(&self.config).bytes()
        {
            self.schedule_run(key);
        }
    }

    /// Closes an open connection for `reason`: counts the reason, lets the
    /// session say its last words and withdraw from what it registered
    /// (its effects are applied by the caller's `settle`), then lingers or
    /// frees.
    pub(super) fn close(&mut self, key: usize, reason: CloseReason) {
        let conn = &self.conns[key];
        if conn.phase != Phase::Open {
            return;
        }
        self.stats.close(conn.kind, reason);
        debug!("#{key} closing: {}", reason.as_str());
        self.call(key, |s, cx| s.on_close(reason, cx));
        self.close_tls(key, reason);
        let conn = &mut self.conns[key];
        conn.phase = Phase::Closing { peer_done: false };
        conn.fed = false;
        if conn.readable {
            // Input held back (a budget, back-pressure) is read and dropped
            // from now on: closing with unread input would reset the
            // connection and could destroy the last words.
            self.schedule_run(key);
        }
        if reason.aborts()
            && let Err(e) = net::reset_on_close(&self.conns[key].stream)
        {
            debug!("#{key}: {e}");
        }
        if reason.lingers() {
            return self.linger(key, self.settings.linger_timeout);
        }
        let flush_for = match reason {
            // Half-closed: the peer may still read what is queued.
            CloseReason::PeerClosed => self.settings.linger_timeout,
            // Presumed dead: the last words get this turn's flush, not a
            // wait for a peer that may never take them.
            _ if reason.aborts() => Duration::ZERO,
            _ => return self.free(key),
        };
        if !self.conns[key].has_output() {
            return self.free(key);
        }
        self.conns[key].phase = Phase::Closing { peer_done: true };
        self.linger(key, flush_for);
    }

    /// Bounds a closing connection's remaining life by `timeout` (the
    /// `--linger-timeout`), and moves it on at once if its output is
    /// already flushed.
    ///
    /// With no linger (`--linger-timeout 0`, or a peer presumed dead) the
    /// last words still get this turn's flush, bounded by one tick, and the
    /// connection is freed once they are out, without waiting for the peer.
    fn linger(&mut self, key: usize, timeout: Duration) {
        let at = match deadline(self.now, timeout) {
            Some(at) => at,
            None if !self.conns[key].has_output() => return self.free(key),
            None => {
                self.conns[key].phase = Phase::Closing { peer_done: true };
                self.now.saturating_add(millis(TICK))
            }
        };
        self.set_timer(key, Some(at));
        if !self.conns[key].has_output() {
            self.on_flushed(key);
        } else {
            self.schedule_flush(key);
        }
    }

    pub(super) fn on_peer_closed(&mut self, app: &mut A, key: usize) {
        let Some(conn) = self.conns.get_mut(key) else { return };
        match conn.phase {
            Phase::Open => {
                self.close(key, CloseReason::PeerClosed);
                self.settle(app);
            }
            Phase::Closing { .. } => conn.phase = Phase::Closing { peer_done: true },
            Phase::Lingering => self.free(key),
        }
    }

    pub(super) fn on_io_error(&mut self, app: &mut A, key: usize, e: &std::io::Error) {
        debug!("#{key}: {e}");
        let Some(conn) = self.conns.get(key) else { return };
        if conn.phase == Phase::Open {
            // ETIMEDOUT: the kernel gave up on the peer (keepalive, or
            // TCP_USER_TIMEOUT with output pending); counted apart from
            // resets and other failures.
            let timed_out = e.kind() == std::io::ErrorKind::TimedOut;
            self.close(key, if timed_out { CloseReason::TcpTimeout } else { CloseReason::IoError });
            self.settle(app);
        }
        if self.conns.contains(key) {
            self.free(key);
        }
    }

    /// Removes the connection: cancels its timer and closes the socket,
    /// which also removes it from the poller (closing the last descriptor
    /// of a file drops its epoll registration, so no `deregister` call).
    pub(super) fn free(&mut self, key: usize) {
        let mut conn = self.conns.remove(key);
        if let Some(timer) = conn.timer {
            self.wheel.cancel(timer);
        }
        conn.out.clear(&mut self.pool);
        if let Some(listener) = self.listeners.get_mut(conn.listener as usize) {
            listener.release(conn.peer.ip());
        }
        debug!("#{key} closed");
    }
}
