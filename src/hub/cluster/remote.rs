//! Queries about collars that are not on this gateway, and the requests
//! carried to the gateway that holds them.
//!
//! A device is looked up in the directory (`tether_v1_get`), the fleet's
//! page of devices read from it (`tether_v1_page`). A command or a location
//! query is a request of ours ([`Rpc`]): the directory says which gateway
//! holds the collar, the request is published on that gateway's channel
//! (`cmd`, `loc`) and its answer comes back on ours (`ans`). A command
//! waits at most `--redis-timeout` for it; a location query is bounded by
//! its HTTP session's own wait. Location queries of other gateways that
//! wait on one of our collars are [`Waiter::Remote`]s, answered on the
//! asker's channel, or given up after `--max-wait`.

use mio::Token;

use super::pipeline::Pending;
use super::{Cluster, Hub};
use crate::device::Mac;
use crate::effect::{Answer, Reply};
use crate::events::Rfc3339;
use crate::hub::views::{DeviceView, FixView};
use crate::proto::Proto;
use crate::reactor::Ops;
use crate::redis::codec::{Frame, OwnedFrame};
use crate::time::{Millis, millis};

/// A request carried to the gateway that holds the collar.
#[derive(Debug, Clone)]
pub(super) enum Ask {
    Command(Vec<u8>),
    Location,
}

/// A request of ours that another gateway answers.
#[derive(Debug)]
pub(super) struct Rpc {
    pub(super) origin: Token,
    /// `None` for a location query, which the HTTP session's own wait
    /// bounds (`Query::Expired`).
    deadline: Option<Millis>,
}

/// Someone waiting for a collar's location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Waiter {
    /// An HTTP request on this gateway.
    Local(Token),
    /// A request on another gateway: answer on its channel.
    Remote { gateway: String, rpc: u64 },
}

/// What `Hub::remote` is asked for.
#[derive(Debug)]
pub enum Remote {
    Device,
    Command(Vec<u8>),
    Location,
}

impl Cluster {
    pub(super) fn take_rpc(&mut self, rpc: u64) -> Option<Rpc> {
        let entry = self.rpcs.remove(&rpc)?;
        if self.rpc_of.get(&entry.origin) == Some(&rpc) {
            self.rpc_of.remove(&entry.origin);
        }
        if let Some(at) = entry.deadline {
            self.rpc_deadlines.remove(&(at, rpc));
        }
        Some(entry)
    }

    /// Registers a request of `origin` to be carried to another gateway.
    fn new_rpc(&mut self, origin: Token) -> u64 {
        let rpc = self.next_rpc;
        self.next_rpc += 1;
        self.rpcs.insert(rpc, Rpc { origin, deadline: None });
        self.rpc_of.insert(origin, rpc);
        rpc
    }

    /// Forgets the request `origin` is waiting for (it timed out or left);
    /// whether there was one.
    pub fn forget(&mut self, origin: Token) -> bool {
        match self.rpc_of.get(&origin).copied() {
            Some(rpc) => self.take_rpc(rpc).is_some(),
            None => false,
        }
    }
}

impl Hub {
    /// A directory entry `{mac, gw, peer, since, lat, lon, fix_at}` as the
    /// API shows a device; our own collars from the registry (fresher).
    pub(super) fn entry_view(&self, entry: &OwnedFrame, ops: &Ops<'_, Proto>) -> Option<DeviceView> {
        let f = entry.items();
        let mac: Mac = f.first()?.text()?.parse().ok()?;
        if f.get(1).and_then(Frame::text) == Some(self.cluster.as_ref()?.gateway_id())
            && let Some(token) = self.device(mac, ops)
        {
            return Some(self.view(mac, token, ops));
        }
        let since = f.get(3).and_then(Frame::int).unwrap_or(0).max(0) as u64;
        let fix_at = f.get(6).and_then(Frame::int).map(|at| at.max(0) as u64);
        let location = match (f.get(4).and_then(Frame::text), f.get(5).and_then(Frame::text), fix_at) {
            (Some(lat), Some(lon), Some(at)) => {
                Some(FixView { lat: lat.parse().ok()?, lon: lon.parse().ok()?, at: Rfc3339(at) })
            }
            _ => None,
        };
        Some(DeviceView {
            mac,
            peer: f.get(2).and_then(Frame::text).unwrap_or_default().to_string(),
            connected_at: Rfc3339(since),
            last_seen: Rfc3339(fix_at.unwrap_or(since).max(since)),
            location,
        })
    }

    /// `GET /devices` over the whole fleet; `None` when Redis is down (the
    /// caller serves the local page).
    pub(in crate::hub) fn fleet_page(
        &mut self,
        origin: Token,
        after: Option<Mac>,
        offset: usize,
        limit: usize,
        ops: &mut Ops<'_, Proto>,
    ) -> Option<()> {
        if !self.cluster.as_ref()?.up() {
            return None;
        }
        let after = after.map(|m| m.to_string()).unwrap_or_default();
        let (offset_text, limit_text) = (offset.to_string(), limit.to_string());
        let args: [&[u8]; 3] = [after.as_bytes(), offset_text.as_bytes(), limit_text.as_bytes()];
        self.fcall("page", &args, Pending::Page { origin, offset, limit }, ops).then_some(())
    }

    /// A query about a collar that is not ours: look it up (a device), or
    /// carry it to the gateway that holds it (a command, a location). The
    /// answer to give at once when that cannot be done.
    pub(in crate::hub) fn remote(
        &mut self,
        origin: Token,
        mac: Mac,
        what: Remote,
        ops: &mut Ops<'_, Proto>,
    ) -> Option<Answer> {
        let unavailable =
            || Some(Answer::error(503, "device not on this gateway, and the directory (redis) is unavailable"));
        if !self.cluster.as_ref().is_some_and(Cluster::up) {
            return unavailable();
        }
        let mac_text = mac.to_string();
        let pending = match what {
            Remote::Device => Pending::Get { origin },
            Remote::Command(line) => {
                Pending::Route { rpc: self.cluster_mut().new_rpc(origin), mac, ask: Ask::Command(line) }
            }
            Remote::Location => Pending::Route { rpc: self.cluster_mut().new_rpc(origin), mac, ask: Ask::Location },
        };
        let rpc = match &pending {
            Pending::Route { rpc, .. } => Some(*rpc),
            _ => None,
        };
        if self.fcall("get", &[mac_text.as_bytes()], pending, ops) {
            return None;
        }
        if let Some(rpc) = rpc {
            self.cluster_mut().take_rpc(rpc);
        }
        unavailable()
    }

    /// The directory says where `mac` is: carry the request there.
    pub(super) fn route(&mut self, rpc: u64, mac: Mac, ask: Ask, entry: &OwnedFrame, ops: &mut Ops<'_, Proto>) {
        let now = ops.now();
        let cluster = self.cluster_mut();
        // Its request timed out or went away during the lookup: nothing to
        // carry, and nobody to answer.
        let Some(origin) = cluster.rpcs.get(&rpc).map(|r| r.origin) else { return };
        let gateway = entry.items().get(1).and_then(Frame::text).map(str::to_string);
        let Some(gateway) = gateway.filter(|g| *g != cluster.settings.gateway_id) else {
            // Not in the directory, or ours by it but not in the registry
            // (it is leaving).
            cluster.take_rpc(rpc);
            return ops.reply(origin, Reply::Answer(Answer::error(404, "device not online")));
        };
        let me = cluster.settings.gateway_id.clone();
        let mut message = match &ask {
            Ask::Command(_) => format!("cmd {me} {rpc} {mac} ").into_bytes(),
            Ask::Location => format!("loc {me} {rpc} {mac}").into_bytes(),
        };
        let deadline = match ask {
            Ask::Command(line) => {
                message.extend_from_slice(&line);
                Some(now + millis(cluster.settings.timeout))
            }
            Ask::Location => None,
        };
        if let Some(at) = deadline {
            cluster.rpcs.insert(rpc, Rpc { origin, deadline });
            cluster.rpc_deadlines.insert((at, rpc));
        }
        cluster.stats.rpc_sent += 1;
        let channel = Cluster::channel(&gateway);
        if !self.redis(&[b"PUBLISH", channel.as_bytes(), &message], Pending::Publish { rpc }, ops) {
            self.cluster_mut().take_rpc(rpc);
            ops.reply(origin, Reply::Answer(Answer::error(503, "the directory (redis) is unavailable")));
        }
    }

    /// Publishes `ans RPC STATUS BODY` to `gateway`.
    pub(super) fn answer_remote(&mut self, gateway: &str, rpc: u64, answer: &Answer, ops: &mut Ops<'_, Proto>) {
        let mut message = format!("ans {rpc} {} ", answer.status).into_bytes();
        message.extend_from_slice(&answer.body);
        let channel = Cluster::channel(gateway);
        self.redis(&[b"PUBLISH", channel.as_bytes(), &message], Pending::Quiet("answer"), ops);
    }

    /// Answers the location waiters of another gateway.
    pub(in crate::hub) fn answer_waiter(&mut self, waiter: &Waiter, answer: &Answer, ops: &mut Ops<'_, Proto>) {
        match waiter {
            Waiter::Local(token) => ops.reply(*token, Reply::Answer(answer.clone())),
            Waiter::Remote { gateway, rpc } => self.answer_remote(gateway, *rpc, answer, ops),
        }
    }
}
