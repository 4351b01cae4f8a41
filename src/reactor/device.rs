//! What collar input does: framing, the session rules, takeover, and the
//! device deadlines, applied to the connection in the reactor's hands.
//!
//! The rules themselves live in [`crate::device`] and never see a socket;
//! this file is the glue that feeds them bytes and carries out their
//! answers. Replies to one read are batched and written with one `write`.
//! What the app should hear of (a device connecting, disconnecting or
//! reporting a fix) is published as an event (see `push`).

use std::mem;
use std::ops::ControlFlow;

use log::debug;

use super::Reactor;
use crate::close::CloseReason;
use crate::connection::{Phase, Role};
use crate::device::{Due, Mac, Reply, Step, protocol};
use crate::events::What;
use crate::stats::LineKind;

/// Replies are written once this many bytes are batched, so that a peer
/// pipelining many short lines cannot grow the batch without bound.
const REPLY_BATCH: usize = 16 * 1024;

impl Reactor {
    /// Frames one read's bytes into lines and applies each.
    pub(super) fn device_input(&mut self, key: usize, bytes: &[u8]) {
        let Role::Device(device) = &mut self.conns[key].role else { return };
        // Taken out for the duration, so the line handler may borrow the
        // whole reactor; an idle framer owns no memory, so this is free.
        let mut framer = mem::take(&mut device.framer);
        let framed = framer.feed(bytes, self.config.max_line, |line| self.device_line(key, line));
        let _ = self.flush_replies(key);
        match framed {
            Err(_too_long) => {
                if self.conns.contains(key) {
                    self.begin_close(key, CloseReason::LineTooLong);
                }
            }
            Ok(_) => {
                if let Some(conn) = self.conns.get_mut(key)
                    && conn.phase == Phase::Open
                    && let Role::Device(device) = &mut conn.role
                {
                    device.framer = framer;
                }
            }
        }
    }

    fn device_line(&mut self, key: usize, line: &[u8]) -> ControlFlow<()> {
        let command = protocol::parse(line);
        self.stats.line_in(LineKind::of(&command));
        let Role::Device(device) = &mut self.conns[key].role else { return ControlFlow::Break(()) };
        match device.session.on_command(command, self.now) {
            Step::Reply(reply) => self.reply(key, reply),
            Step::Silent => ControlFlow::Continue(()),
            Step::Located => {
                self.device_located(key);
                ControlFlow::Continue(())
            }
            Step::Identified(mac) => {
                self.identified(key, mac);
                self.reply(key, Reply::Ok)
            }
        }
    }

    fn reply(&mut self, key: usize, reply: Reply) -> ControlFlow<()> {
        self.replies.extend_from_slice(reply.bytes());
        self.stats.lines_out += 1;
        if self.replies.len() >= REPLY_BATCH {
            return self.flush_replies(key);
        }
        ControlFlow::Continue(())
    }

    /// Writes the batched replies; drops them if the connection is closing.
    fn flush_replies(&mut self, key: usize) -> ControlFlow<()> {
        if self.replies.is_empty() {
            return ControlFlow::Continue(());
        }
        let mut replies = mem::take(&mut self.replies);
        let flow = match self.conns.get(key) {
            Some(conn) if conn.phase == Phase::Open => self.send(key, &replies),
            _ => ControlFlow::Break(()),
        };
        replies.clear();
        self.replies = replies;
        flow
    }

    /// Puts the device online under `mac`. A connection already online with
    /// that MAC is replaced: told `BYE replaced` and closed.
    fn identified(&mut self, key: usize, mac: Mac) {
        let token = self.token_of(key);
        if let Some(old) = self.devices.insert(mac, token)
            && let Some(old_key) = self.live_key(old)
        {
            self.stats.takeovers += 1;
            debug!("{mac}: #{key} takes over from #{old_key}");
            self.begin_close(old_key, CloseReason::Replaced);
        }
        debug!("#{key} identified as {mac}");
        let peer = self.conns[key].peer.clone();
        self.publish(mac, What::Connected { peer });
        // The handshake deadline gives way to the heartbeat and idle ones.
        self.rearm_device(key);
    }

    /// A device reported a fix: publish it and answer whoever waits for it.
    fn device_located(&mut self, key: usize) {
        let Role::Device(device) = &self.conns[key].role else { return };
        let (Some(mac), Some(fix)) = (device.session.mac, device.session.location.as_deref().copied()) else {
            return;
        };
        self.publish(mac, What::Location { lat: fix.lat, lon: fix.lon });
        self.answer_location_waiters(key, mac, Some(fix));
    }

    /// Takes a closing connection's MAC out of the online index, unless a
    /// newer connection has taken it over already, and tells the app.
    pub(super) fn device_offline(&mut self, key: usize, reason: CloseReason) {
        let token = self.token_of(key);
        let Role::Device(device) = &self.conns[key].role else { return };
        let Some(mac) = device.session.mac else { return };
        // Whoever waits for this connection's answer will not get one.
        self.answer_location_waiters(key, mac, None);
        if self.devices.get(&mac) == Some(&token) {
            self.devices.remove(&mac);
            debug!("{mac} offline");
        }
        self.publish(mac, What::Disconnected { reason });
    }

    /// A device's timer fired: apply the deadlines, then re-file the timer
    /// at the next one (it may have moved since bytes arrived).
    pub(super) fn device_deadline(&mut self, key: usize) {
        let conn = &mut self.conns[key];
        let Role::Device(device) = &mut conn.role else { return };
        match device.session.on_deadline(self.now, conn.last_rx, &self.timeouts) {
            Due::Close(reason) => self.begin_close(key, reason),
            Due::Ping => {
                self.stats.heartbeat_pings += 1;
                self.stats.lines_out += 1;
                if self.send(key, Reply::Ping.bytes()).is_continue() {
                    self.rearm_device(key);
                }
            }
            Due::Nothing => self.rearm_device(key),
        }
    }

    /// Files the open connection's next deadline (a closing one keeps its
    /// linger deadline).
    pub(super) fn rearm_device(&mut self, key: usize) {
        let Some(conn) = self.conns.get(key) else { return };
        let Role::Device(device) = &conn.role else { return };
        if conn.phase != Phase::Open {
            return;
        }
        let at = device.session.next_deadline(conn.last_rx, &self.timeouts);
        self.set_timer(key, at);
    }
}
