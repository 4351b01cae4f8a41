//! The run phase: reading input and calling sessions, then applying what
//! they asked for, one connection at a time, in queue order.
//!
//! Every session call goes through [`Reactor::call`], which lends the
//! session its connection's output, the shared settings and a place for
//! effects, and [`Reactor::after_call`], which carries out what the call
//! decided: close, re-file the deadline, schedule the flush, enforce the
//! output limit. [`Reactor::settle`] then applies the effects, delivers
//! replies and closes connections until nothing is left: the one place
//! where one connection's handler affects another.

use std::ops::ControlFlow;
use std::time::Instant;

use log::{debug, trace};

use super::Reactor;
use super::app::{App, Ops};
use super::budget::Budget;
use super::conn::Phase;
use super::io::{self, ReadEnd};
use super::session::{CxOf, Next, OutputLimit, Session};
use crate::close::CloseReason;

impl<A: App> Reactor<A> {
    /// Serves the connections queued when the phase began; those queued
    /// meanwhile (a budget ran out, a reply arrived) wait for the next turn.
    ///
    /// The phase also stops once it has taken `--budget-turn-time` (after
    /// one connection at least): the connections not served yet stay at the
    /// front of the queue, first in the next turn.
    pub(super) fn run_phase(&mut self, app: &mut A) {
        let until = Instant::now() + self.settings.budgets.turn_time;
        for served in 0..self.run_queue.len() {
            if served > 0 && Instant::now() >= until {
                self.stats.budget_spent(Budget::TurnTime);
                return;
            }
            let Some(token) = self.run_queue.pop_front() else { break };
            let Some(key) = self.live_key(token) else { continue };
            self.conns[key].in_run_queue = false;
            self.serve(app, key);
        }
    }

    /// One connection's turn: buffered work first, then input. Work left
    /// over (a budget ran out) puts the connection back in the queue, after
    /// the others (`after_call`).
    fn serve(&mut self, app: &mut A, key: usize) {
        if self.conns[key].phase != Phase::Open {
            return self.discard_input(key);
        }
        if self.may_work(key) && self.conns[key].session.has_work() {
            let next = self.call(key, |s, cx| s.on_resume(cx));
            self.after_call(key, next);
            self.settle(app);
        }
        // The work may have closed (even freed) the connection.
        if self.is_open(key) {
            self.read_input(app, key, self.settings.budgets.reads, false);
        }
    }

    pub(super) fn is_open(&self, key: usize) -> bool {
        self.conns.get(key).is_some_and(|c| c.phase == Phase::Open)
    }

    /// Whether the connection may be given more work now: it is open and
    /// its unsent output is within its limit. Buffered work is not done,
    /// nor input read, while the output is backed up: what one turn makes a
    /// session say is bounded by its limit plus one call's worth.
    fn may_work(&self, key: usize) -> bool {
        let conn = &self.conns[key];
        conn.phase == Phase::Open && conn.unsent() <= conn.session.output_limit(&self.config).bytes()
    }

    /// Whether the connection's input should be read now: it may work, and
    /// the session wants input.
    pub(super) fn may_read(&self, key: usize) -> bool {
        self.may_work(key) && self.conns[key].session.wants_input(&self.config)
    }

    /// Reads up to `budget` times and hands the bytes to the session. A
    /// `last_chance` read is tried even when no readiness event said the
    /// socket had input (see [`Reactor::deadline_passed`]).
    pub(super) fn read_input(&mut self, app: &mut A, key: usize, budget: usize, last_chance: bool) {
        if !(self.conns[key].readable || last_chance) || !self.may_read(key) {
            return;
        }
        if self.conns[key].tls.is_some() {
            return self.read_tls_input(app, key, budget);
        }
        let now = self.now;
        let conn = &mut self.conns[key];
        let token = conn.token(key);
        let mut cx = cx!(self, conn, token);
        let session = &mut conn.session;
        let mut next = Next::Continue;
        let mut got = false;
        let end = io::read_budgeted(&conn.stream, &mut self.scratch, budget, conn.read_closed, |bytes| {
            got = true;
            cx.last_rx = now;
            cx.stats.bytes_in += bytes.len() as u64;
            cx.stats.reads += 1;
            trace!("#{key} <- \"{}\"", bytes.escape_ascii());
            next = session.on_input(bytes, &mut cx);
            // Output past the limit stops reading: what a read can make a
            // session say is bounded, and the flush decides what happens.
            let backed_up = cx.out.len() > session.output_limit(cx.config).bytes();
            if next != Next::Continue || backed_up || !session.wants_input(cx.config) {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        });
        if got {
            conn.last_rx = now;
        }
        self.take_effects(token);
        self.after_read(app, key, end, next);
    }

    /// What the end of a read means, plain or TLS, once the session was
    /// called (`next`): the socket drained, the budget spent, the peer
    /// gone, or the read failed.
    pub(super) fn after_read(&mut self, app: &mut A, key: usize, end: ReadEnd, next: Next) {
        match end {
            ReadEnd::Drained => self.conns[key].readable = false,
            ReadEnd::Budget => self.stats.budget_spent(Budget::Reads),
            ReadEnd::Stopped => {}
            ReadEnd::Closed => {
                self.conns[key].readable = false;
                self.after_call(key, next);
                self.settle(app);
                return self.on_peer_closed(app, key);
            }
            ReadEnd::Failed(e) => {
                self.after_call(key, next);
                self.settle(app);
                return self.on_io_error(app, key, &e);
            }
        }
        self.after_call(key, next);
        self.settle(app);
    }

    /// Reads and drops the input of a closing connection, to see the peer's
    /// FIN (then the lingering close is over).
    fn discard_input(&mut self, key: usize) {
        let conn = &mut self.conns[key];
        let end = io::read_budgeted(&conn.stream, &mut self.scratch, self.settings.budgets.reads, true, |bytes| {
            self.stats.bytes_in += bytes.len() as u64;
            ControlFlow::Continue(())
        });
        match end {
            ReadEnd::Drained => conn.readable = false,
            ReadEnd::Budget | ReadEnd::Stopped => self.schedule_run(key),
            ReadEnd::Closed => match conn.phase {
                Phase::Closing { .. } => {
                    conn.readable = false;
                    conn.phase = Phase::Closing { peer_done: true };
                }
                _ => self.free(key),
            },
            ReadEnd::Failed(e) => {
                debug!("#{key}: {e}");
                self.free(key);
            }
        }
    }

    /// Calls the session of connection `key` with a [`Cx`](super::Cx) for it, and
    /// queues the effects it returns.
    pub(super) fn call<R>(&mut self, key: usize, f: impl FnOnce(&mut A::Session, &mut CxOf<'_, A::Session>) -> R) -> R {
        let conn = &mut self.conns[key];
        let token = conn.token(key);
        let mut cx = cx!(self, conn, token);
        let result = f(&mut conn.session, &mut cx);
        self.take_effects(token);
        result
    }

    /// Whether the connection's unsent output passed a `CloseAbove` limit.
    /// Asked only when the kernel takes no more (the socket is blocked): a
    /// peer that reads is never dropped for what one turn made the session
    /// say.
    pub(super) fn slow_consumer(&self, key: usize) -> bool {
        let conn = &self.conns[key];
        match conn.session.output_limit(&self.config) {
            OutputLimit::CloseAbove(limit) if conn.unsent() > limit => {
                debug!("#{key}: {} bytes unsent, over the output limit", conn.unsent());
                true
            }
            _ => false,
        }
    }

    pub(super) fn take_effects(&mut self, origin: mio::Token) {
        self.effects.extend(self.new_effects.drain(..).map(|e| (origin, e)));
    }

    /// Carries out what a session call decided, for an open connection:
    /// close it, or enforce its output limit, schedule its flush and its
    /// next run, re-file its deadline.
    pub(super) fn after_call(&mut self, key: usize, next: Next) {
        let Some(conn) = self.conns.get(key) else { return };
        if conn.phase != Phase::Open {
            return;
        }
        if let Next::Close(reason) = next {
            return self.close(key, reason);
        }
        if conn.blocked && self.slow_consumer(key) {
            return self.close(key, CloseReason::SlowConsumer);
        }
        // Buffered work, or input held back that may be read now (the
        // session took its reply and wants input again): serve it next.
        let output = conn.has_output();
        let work = (conn.session.has_work() && self.may_work(key)) || (conn.readable && self.may_read(key));
        if output {
            self.schedule_flush(key);
        }
        if work {
            self.schedule_run(key);
        }
        self.rearm(key);
        self.track_idle(key);
    }

    /// Applies queued effects, delivers queued replies and carries out
    /// queued closes, until none is left. Effects are applied in the order
    /// they were returned; a close or reply queued by one is carried out
    /// before the next effect, so that an effect never sees a connection
    /// that another effect has just closed as still open.
    pub(super) fn settle(&mut self, app: &mut A) {
        loop {
            if let Some((token, reason)) = self.closes.pop_front() {
                if let Some(key) = self.live_key(token)
                    && self.conns[key].phase == Phase::Open
                {
                    self.close(key, reason);
                }
            } else if let Some((token, reply)) = self.replies.pop_front() {
                if let Some(key) = self.live_key(token)
                    && self.conns[key].phase == Phase::Open
                {
                    let next = self.call(key, |s, cx| s.on_reply(reply, cx));
                    self.after_call(key, next);
                }
            } else if let Some((origin, effect)) = self.effects.pop_front() {
                self.with_ops(app, |app, ops| app.apply(origin, effect, ops));
            } else {
                return;
            }
        }
    }

    /// Lends the application an [`Ops`] for one call, then files the
    /// deadlines of the links it dialed. The caller settles.
    pub(super) fn with_ops(&mut self, app: &mut A, f: impl FnOnce(&mut A, &mut Ops<'_, A::Session>)) {
        let levels = self.levels();
        let mut dialed = std::mem::take(&mut self.dialed);
        let mut ops = Ops {
            now: self.now,
            config: &self.config,
            conns: &mut self.conns,
            pool: &mut self.pool,
            flush_queue: &mut self.flush_queue,
            produce_queue: &mut self.produce_queue,
            replies: &mut self.replies,
            closes: &mut self.closes,
            stats: &mut self.stats,
            levels,
            registry: self.poll.registry(),
            generations: &mut self.generations,
            dialed: &mut dialed,
        };
        f(app, &mut ops);
        for key in dialed.drain(..) {
            self.rearm(key);
        }
        self.dialed = dialed;
    }

    /// The connection's deadline passed. If the session would close it,
    /// its socket is read once more first: input that arrived before the
    /// deadline (say, during a long turn) is judged before the deadline is.
    pub(super) fn deadline_passed(&mut self, app: &mut A, key: usize) {
        let mut next = self.call(key, |s, cx| s.on_deadline(cx));
        if matches!(next, Next::Close(_)) {
            self.read_input(app, key, 1, true);
            if !self.is_open(key) {
                return;
            }
            next = self.call(key, |s, cx| s.on_deadline(cx));
        }
        self.after_call(key, next);
        self.settle(app);
    }
}
