//! The command link's pipeline: the calls written on it, and what each
//! reply answers.
//!
//! Redis answers a connection's commands in order, so the link keeps one
//! queue of [`Pending`] entries, oldest first, each saying what the call
//! was for; a reply pops the oldest and is handed to the part that asked
//! (a claim, a page, a route, ...). A call that will get no reply (its
//! link went down, or Redis refused it) fails its entry instead: whoever
//! waited is answered 503, a claim is tried again, an event is kept
//! locally.

use log::warn;
use mio::Token;

use super::remote::Ask;
use super::{Cluster, Hub};
use crate::close::CloseReason;
use crate::device::Mac;
use crate::effect::{Answer, Reply};
use crate::events::{EventKind, LOCAL_ONLY};
use crate::http::json;
use crate::hub::views::DevicesPage;
use crate::proto::Proto;
use crate::reactor::Ops;
use crate::redis::codec::{Frame, OwnedFrame};
use crate::redis::function;
use crate::time::{Millis, millis};

/// Wait before claiming again after a claim failed.
const CLAIM_RETRY: Millis = 1000;

/// What a reply on the command link answers, in the order sent.
#[derive(Debug)]
pub(super) enum Pending {
    /// `SELECT`, `CLIENT SETNAME`: an error closes the link.
    Setup,
    /// `FUNCTION LOAD`: the command link is ready.
    Loaded,
    /// Fire and forget (liveness, release, fix, a bus answer): an error is
    /// logged.
    Quiet(&'static str),
    Claim {
        mac: Mac,
        token: Token,
    },
    Page {
        origin: Token,
        offset: usize,
        limit: usize,
    },
    Get {
        origin: Token,
    },
    /// Where `mac` is, to carry `ask` there, for request `rpc` (registered
    /// already, so that its origin's timeout or departure forgets it).
    Route {
        rpc: u64,
        mac: Mac,
        ask: Ask,
    },
    /// This gateway's entries in the directory, after a reconnect: those
    /// of collars no longer here are released.
    Owned,
    /// A request published to another gateway: with no subscriber, no
    /// gateway holds that channel any more.
    Publish {
        rpc: u64,
    },
    /// An event appended to the stream: if that fails, it is kept locally.
    Event(Box<(Mac, EventKind, u64)>),
}

impl Cluster {
    /// When the command link is overdue, if it owes replies.
    pub(super) fn overdue_at(&self) -> Option<Millis> {
        let &(sent, _) = self.pending.front()?;
        Some(sent.max(self.last_reply) + millis(self.settings.timeout))
    }
}

impl Hub {
    /// Writes one command on the command link; `false` if it could not
    /// (link down, or its output full), and then `pending` was not queued.
    pub(super) fn redis(&mut self, args: &[&[u8]], pending: Pending, ops: &mut Ops<'_, Proto>) -> bool {
        let cluster = self.cluster_mut();
        let Some(token) = cluster.command.token else { return false };
        if !cluster.write(Some(token), args, ops) {
            warn!("redis: the command link's output is full; a command was dropped");
            return false;
        }
        cluster.pending.push_back((ops.now(), pending));
        true
    }

    /// Calls function `name` of this version of the library (`function`).
    pub(super) fn fcall(&mut self, name: &str, args: &[&[u8]], pending: Pending, ops: &mut Ops<'_, Proto>) -> bool {
        let name = function(name);
        let mut all: Vec<&[u8]> = Vec::with_capacity(args.len() + 3);
        all.extend_from_slice(&[b"FCALL", name.as_bytes(), b"0"]);
        all.extend_from_slice(args);
        self.redis(&all, pending, ops)
    }

    /// A command that will get no reply: answer whoever waited on it.
    pub(super) fn failed(&mut self, pending: Pending, ops: &mut Ops<'_, Proto>) {
        match pending {
            Pending::Page { origin, .. } | Pending::Get { origin, .. } => {
                ops.reply(origin, Reply::Answer(Answer::error(503, "the directory (redis) is unavailable")));
            }
            Pending::Route { rpc, .. } | Pending::Publish { rpc } => {
                if let Some(entry) = self.cluster_mut().take_rpc(rpc) {
                    ops.reply(entry.origin, Reply::Answer(Answer::error(503, "the directory (redis) is unavailable")));
                }
            }
            Pending::Claim { mac, token } => {
                // Not claimed: try again soon (a claim is idempotent), so
                // that the collar is not left out of the directory.
                let cluster = self.cluster_mut();
                if cluster.claims.get(&mac).is_some_and(|c| c.token == token && c.epoch.is_none()) {
                    cluster.claims_due.get_or_insert(ops.now() + CLAIM_RETRY);
                }
            }
            Pending::Event(event) => {
                let (mac, kind, at) = *event;
                self.append(mac, kind, at, LOCAL_ONLY, ops);
            }
            _ => {}
        }
    }

    pub(super) fn command_reply(&mut self, frame: OwnedFrame, ops: &mut Ops<'_, Proto>) {
        let cluster = self.cluster_mut();
        cluster.last_reply = ops.now();
        let Some((_, pending)) = cluster.pending.pop_front() else {
            warn!("redis: a reply to nothing asked; closing the link");
            if let Some(token) = cluster.command.token {
                ops.close(token, CloseReason::ProtocolError);
            }
            return;
        };
        if cluster.draining
            && cluster.pending.is_empty()
            && let Some(token) = cluster.command.token
        {
            ops.close(token, CloseReason::Shutdown);
        }
        if let Some(error) = frame.error() {
            match &pending {
                Pending::Quiet(what) => warn!("redis: {what} failed: {error}"),
                other => warn!("redis: {other:?} failed: {error}"),
            }
            if matches!(pending, Pending::Setup | Pending::Loaded)
                && let Some(token) = self.cluster_mut().command.token
            {
                ops.close(token, CloseReason::ProtocolError);
            }
            return self.failed(pending, ops);
        }
        match pending {
            Pending::Setup | Pending::Quiet(_) | Pending::Event(_) => {}
            Pending::Loaded => {
                let cluster = self.cluster_mut();
                cluster.command.ready = true;
                if cluster.up() {
                    self.links_up(ops);
                }
            }
            Pending::Claim { mac, token } => self.claimed(mac, token, &frame, ops),
            Pending::Page { origin, offset, limit } => {
                let items = frame.items();
                let total = items.first().and_then(Frame::int).unwrap_or(0).max(0) as usize;
                let devices = items.iter().skip(1).filter_map(|e| self.entry_view(e, ops)).collect();
                let page = DevicesPage { total, offset, limit, devices };
                ops.reply(origin, Reply::Answer(Answer::json(200, json::to_vec(&page))));
            }
            Pending::Get { origin } => {
                let answer = match self.entry_view(&frame, ops) {
                    Some(view) => Answer::json(200, json::to_vec(&view)),
                    None => Answer::error(404, "device not online"),
                };
                ops.reply(origin, Reply::Answer(answer));
            }
            Pending::Route { rpc, mac, ask } => self.route(rpc, mac, ask, &frame, ops),
            Pending::Owned => self.reconcile(&frame, ops),
            Pending::Publish { rpc } => {
                if frame.int() == Some(0)
                    && let Some(entry) = self.cluster_mut().take_rpc(rpc)
                {
                    // Nobody listens on that gateway's channel: it is gone,
                    // and its entries will be swept.
                    ops.reply(entry.origin, Reply::Answer(Answer::error(404, "device not online")));
                }
            }
        }
    }
}
