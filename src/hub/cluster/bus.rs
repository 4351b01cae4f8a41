//! The bus link: what other gateways publish on this gateway's channel,
//! `tether:gw:<id>`.
//!
//! Another gateway's claim of one of our MACs (`replaced MAC EPOCH`), a
//! command or a location query for one of our collars (`cmd`, `loc`),
//! served here and answered on the asker's channel, and the answers to
//! ours (`ans`).

use log::debug;

use super::Hub;
use super::remote::Waiter;
use crate::device::Mac;
use crate::effect::{Answer, Reply};
use crate::proto::Proto;
use crate::reactor::Ops;
use crate::redis::codec::{Frame, OwnedFrame};
use crate::time::millis;

impl Hub {
    /// A frame on the bus link: a subscription confirmed, or a message.
    pub(super) fn bus_frame(&mut self, frame: OwnedFrame, ops: &mut Ops<'_, Proto>) {
        let items = frame.items();
        match items.first().and_then(Frame::bytes) {
            Some(b"subscribe") => {
                let cluster = self.cluster_mut();
                cluster.bus.ready = true;
                if cluster.up() {
                    self.links_up(ops);
                }
            }
            Some(b"message") => {
                if let Some(payload) = items.get(2).and_then(Frame::bytes) {
                    let payload = payload.to_vec();
                    self.bus_message(&payload, ops);
                }
            }
            _ => debug!("redis: unexpected on the bus: {frame:?}"),
        }
    }

    /// `replaced MAC EPOCH`, `cmd FROM RPC MAC LINE`, `loc FROM RPC MAC`,
    /// `ans RPC STATUS BODY`. Anything else is logged and dropped.
    fn bus_message(&mut self, payload: &[u8], ops: &mut Ops<'_, Proto>) {
        let mut parts = payload.splitn(5, |&b| b == b' ');
        let verb = parts.next().unwrap_or_default();
        let text = |p: Option<&[u8]>| p.and_then(|p| std::str::from_utf8(p).ok()).map(str::to_string);
        match verb {
            b"replaced" => {
                let (Some(mac), Some(epoch)) = (text(parts.next()), text(parts.next())) else { return };
                let (Ok(mac), Ok(epoch)) = (mac.parse::<Mac>(), epoch.parse::<u64>()) else { return };
                let cluster = self.cluster_mut();
                let Some(claim) = cluster.claims.get_mut(&mac) else { return };
                match claim.epoch {
                    Some(ours) if ours < epoch => self.lost_to_remote(mac, ops),
                    Some(_) => {}
                    None => claim.fence = claim.fence.max(epoch),
                }
            }
            b"cmd" | b"loc" => {
                let (Some(from), Some(rpc), Some(mac)) = (text(parts.next()), text(parts.next()), text(parts.next()))
                else {
                    return;
                };
                let (Ok(rpc), Ok(mac)) = (rpc.parse::<u64>(), mac.parse::<Mac>()) else { return };
                debug!("bus: {} {rpc} from {from} for {mac}", String::from_utf8_lossy(verb));
                self.cluster_mut().stats.rpc_served += 1;
                if verb == b"cmd" {
                    let line = parts.next().unwrap_or_default().to_vec();
                    let answer = self.command(mac, line, ops);
                    self.answer_remote(&from, rpc, &answer, ops);
                } else {
                    let waiter = Waiter::Remote { gateway: from.clone(), rpc };
                    match self.locate(waiter.clone(), mac, ops) {
                        Some(answer) => self.answer_remote(&from, rpc, &answer, ops),
                        None => {
                            let device = self.device(mac, ops).expect("locate found it");
                            let cluster = self.cluster_mut();
                            let at = ops.now() + millis(cluster.settings.remote_wait);
                            let serial = cluster.next_rpc;
                            cluster.next_rpc += 1;
                            cluster.remote_waits.insert((at, serial), (device, waiter));
                        }
                    }
                }
            }
            b"ans" => {
                let (Some(rpc), Some(status)) = (text(parts.next()), text(parts.next())) else { return };
                let (Ok(rpc), Ok(status)) = (rpc.parse::<u64>(), status.parse::<u16>()) else { return };
                let mut body = parts.next().unwrap_or_default().to_vec();
                if let Some(rest) = parts.next() {
                    body.push(b' ');
                    body.extend_from_slice(rest);
                }
                if let Some(entry) = self.cluster_mut().take_rpc(rpc) {
                    ops.reply(entry.origin, Reply::Answer(Answer::json(status, body)));
                }
            }
            _ => debug!("redis: unknown bus message {:?}", payload.escape_ascii().to_string()),
        }
    }
}
