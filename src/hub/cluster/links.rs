//! The links' life: dialing the four links and sending their set-up,
//! coming up, going down, and the deadline turn.
//!
//! All four links are dialed together and judged together: once every one
//! answered its set-up ([`Cluster::up`]) the local collars are claimed
//! again and the liveness refresh and the sweep start; when any one closes,
//! or owes a reply past `--redis-timeout` (after one more turn's grace),
//! all are closed, what waited on them fails, and they are dialed again
//! after a back-off that doubles up to `--redis-reconnect-max`.
//!
//! The deadline turn ([`Hub::cluster_deadline`]) is where every timer of
//! the Redis side fires: the redial, the overdue links, the remote
//! location waiters given up, the claims retried, the requests of ours
//! that went unanswered, the refresh and the sweep.

use log::{debug, info, warn};

use super::control::ControlRequest;
use super::pipeline::Pending;
use super::remote::Waiter;
use super::stream::TailRequest;
use super::{Cluster, FIRST_BACKOFF, Hub, Link, Role};
use crate::close::CloseReason;
use crate::effect::{Answer, Reply};
use crate::proto::Proto;
use crate::reactor::Ops;
use crate::redis::codec;
use crate::redis::{FUNCTIONS, RedisSession, function};
use crate::time::{Millis, millis};

/// How long a link found overdue gets before it is judged dead: two ticks
/// of the wheel, so at least one more turn reads it.
const GRACE: Millis = 20;

impl Hub {
    /// Dials the four links and sends their set-up.
    fn dial(&mut self, ops: &mut Ops<'_, Proto>) {
        let cluster = self.cluster_mut();
        cluster.retry_at = None;
        let addr = cluster.settings.url.addr;
        let db = cluster.settings.url.db.to_string();
        let name = format!("tether:{}", cluster.settings.gateway_id);
        let channel = Cluster::channel(&cluster.settings.gateway_id);
        for role in [Role::Command, Role::Bus, Role::Tail, Role::Control] {
            match ops.dial(addr, Proto::Redis(Box::new(RedisSession::new()))) {
                Ok(token) => match role {
                    Role::Command => self.cluster_mut().command = Link { token: Some(token), ready: false },
                    Role::Bus => self.cluster_mut().bus = Link { token: Some(token), ready: false },
                    Role::Tail => self.cluster_mut().tail = Link { token: Some(token), ready: false },
                    Role::Control => self.cluster_mut().control = Link { token: Some(token), ready: false },
                },
                Err(e) => {
                    warn!("redis: cannot connect to {addr}: {e}");
                    return self.link_down(ops);
                }
            }
        }
        if db != "0" {
            self.redis(&[b"SELECT", db.as_bytes()], Pending::Setup, ops);
        }
        self.redis(&[b"CLIENT", b"SETNAME", name.as_bytes()], Pending::Setup, ops);
        self.redis(&[b"FUNCTION", b"LOAD", b"REPLACE", FUNCTIONS.as_bytes()], Pending::Loaded, ops);
        // The bus link only subscribes; its confirmation marks it ready.
        let cluster = self.cluster_mut();
        cluster.buf.clear();
        codec::command(&mut cluster.buf, &[b"SUBSCRIBE", channel.as_bytes()]);
        if let Some(token) = cluster.bus.token {
            let _ = ops.send(token, &cluster.buf);
        }
        // The tail link: its set-up, then the history or the rest of the
        // stream.
        let tail_name = format!("{name}:tail");
        if db != "0" {
            self.tail_request(&[b"SELECT", db.as_bytes()], TailRequest::Setup, ops);
        }
        self.tail_request(&[b"CLIENT", b"SETNAME", tail_name.as_bytes()], TailRequest::Setup, ops);
        self.tail_resume(ops);
        let control_name = format!("{name}:control");
        if db != "0" {
            self.control_request(&[b"SELECT", db.as_bytes()], ControlRequest::Setup, ops);
        }
        self.control_request(&[b"CLIENT", b"SETNAME", control_name.as_bytes()], ControlRequest::Setup, ops);
    }

    /// Every link answered its set-up: claim every local collar again,
    /// refresh liveness, sweep.
    pub(super) fn links_up(&mut self, ops: &mut Ops<'_, Proto>) {
        let now = ops.now();
        let cluster = self.cluster_mut();
        cluster.backoff = FIRST_BACKOFF;
        if cluster.was_down {
            cluster.stats.reconnects += 1;
        }
        info!(
            "redis: connected to {} as gateway {}{}",
            cluster.settings.url,
            cluster.settings.gateway_id,
            if cluster.was_down { " (again: claiming every local collar)" } else { "" }
        );
        cluster.refresh_at = Some(now);
        cluster.sweep_at = Some(now + millis(cluster.settings.ttl));
        cluster.alive_confirmed = false;
        self.refresh(ops);
        self.claim_all(ops);
        // Entries this gateway made and can no longer release by itself:
        // collars that left while the links were down (their release could
        // not be sent), claims whose reply was lost with the link. Asked
        // after the claims above, which Redis carries out first.
        let id = self.cluster_mut().settings.gateway_id.clone();
        self.fcall("owned", &[id.as_bytes()], Pending::Owned, ops);
    }

    /// A link closed: fail what waited on it, close the others, and dial
    /// again after the back-off.
    pub(super) fn link_down(&mut self, ops: &mut Ops<'_, Proto>) {
        let now = ops.now();
        let cluster = self.cluster_mut();
        let was_up = cluster.up();
        for link in [&mut cluster.command, &mut cluster.bus, &mut cluster.tail, &mut cluster.control] {
            if let Some(token) = link.token.take() {
                ops.close(token, CloseReason::Shutdown);
            }
            link.ready = false;
        }
        cluster.tail_pending.clear();
        cluster.control_pending.clear();
        cluster.refresh_at = None;
        cluster.sweep_at = None;
        let failed: Vec<Pending> = cluster.pending.drain(..).map(|(_, p)| p).collect();
        // Requests on other gateways are answered there and cannot come
        // back now: give up on them.
        let rpcs: Vec<u64> = cluster.rpcs.keys().copied().collect();
        let mut lost = Vec::new();
        for rpc in rpcs {
            if let Some(entry) = cluster.take_rpc(rpc) {
                lost.push(entry.origin);
            }
        }
        if !cluster.draining {
            cluster.retry_at = Some(now + cluster.backoff);
            if was_up || !cluster.was_down {
                warn!(
                    "redis: link to {} down; serving local devices only, retrying in {} ms (then backing off up to {:?})",
                    cluster.settings.url, cluster.backoff, cluster.settings.reconnect_max
                );
            }
            cluster.backoff = (cluster.backoff * 2).min(millis(cluster.settings.reconnect_max).max(FIRST_BACKOFF));
        }
        cluster.was_down = true;
        for pending in failed {
            self.failed(pending, ops);
        }
        for origin in lost {
            ops.reply(origin, Reply::Answer(Answer::error(503, "the directory (redis) is unavailable")));
        }
    }

    /// The reactor's `App::start`: dial Redis.
    pub(in crate::hub) fn cluster_start(&mut self, ops: &mut Ops<'_, Proto>) {
        self.dial(ops);
    }

    /// The Redis side's deadline passed: redial, refresh, sweep, or give
    /// up on what is overdue.
    pub(in crate::hub) fn cluster_deadline(&mut self, ops: &mut Ops<'_, Proto>) {
        let now = ops.now();
        let draining = ops.levels().draining;
        let cluster = self.cluster_mut();
        if cluster.retry_at.is_some_and(|at| at <= now) {
            if draining {
                cluster.retry_at = None;
            } else {
                return self.dial(ops);
            }
        }
        let cluster = self.cluster_mut();
        let overdue = [
            (cluster.overdue_at(), cluster.command.token, "the command link"),
            (
                cluster.tail_pending.front().map(|&(sent, r)| cluster.tail_due(sent, r)),
                cluster.tail.token,
                "the event stream",
            ),
            (
                cluster.control_pending.front().map(|&(sent, _)| sent + millis(cluster.settings.timeout)),
                cluster.control.token,
                "the liveness refresh",
            ),
        ]
        .into_iter()
        .find(|(at, _, _)| at.is_some_and(|at| at <= now));
        match (overdue, cluster.grace_until) {
            (None, _) => cluster.grace_until = None,
            // One more turn first: the run phase reads what arrived (a
            // reply may wait unread behind a turn's budget) before a link
            // is judged dead.
            (Some(_), None) => cluster.grace_until = Some(now + GRACE),
            (Some(_), Some(at)) if at > now => {}
            (Some((_, token, what)), Some(_)) => {
                warn!("redis: no progress on {what} within {:?}: closing the links", cluster.settings.timeout);
                cluster.grace_until = None;
                if let Some(token) = token {
                    ops.close(token, CloseReason::LinkTimeout);
                }
                return self.link_down(ops);
            }
        }
        let waits = &mut self.cluster.as_mut().expect("with --redis").remote_waits;
        while let Some((&(at, serial), _)) = waits.first_key_value() {
            if at > now {
                break;
            }
            let Some((device, waiter)) = waits.remove(&(at, serial)) else { break };
            if let Waiter::Remote { gateway, rpc } = &waiter {
                debug!("redis: location query {rpc} of gateway {gateway} given up");
            }
            // Given up: the asker answered 504 by now. With nobody left
            // waiting, the next query asks the collar again.
            if let Some(waiters) = self.locating.get_mut(&device) {
                waiters.retain(|w| *w != waiter);
                if waiters.is_empty() {
                    self.locating.remove(&device);
                }
            }
        }
        let cluster = self.cluster_mut();
        if cluster.claims_due.is_some_and(|at| at <= now) && cluster.up() {
            self.claim_all(ops);
        }
        let cluster = self.cluster_mut();
        while let Some(&(at, rpc)) = cluster.rpc_deadlines.first() {
            if at > now {
                break;
            }
            let Some(entry) = cluster.take_rpc(rpc) else {
                // Entries and deadlines are added and taken together; one
                // without the other must still leave the loop.
                cluster.rpc_deadlines.remove(&(at, rpc));
                continue;
            };
            cluster.stats.rpc_timeouts += 1;
            ops.reply(
                entry.origin,
                Reply::Answer(Answer::error(504, "the gateway holding the device did not answer in time")),
            );
        }
        if cluster.refresh_at.is_some_and(|at| at <= now) {
            self.refresh(ops);
        }
        let cluster = self.cluster_mut();
        if cluster.sweep_at.is_some_and(|at| at <= now) {
            cluster.sweep_at = Some(now + millis(cluster.settings.ttl));
            let sweep = function("sweep");
            self.control_request(&[b"FCALL", sweep.as_bytes(), b"0"], ControlRequest::Sweep, ops);
        }
    }
}
