//! The control link: this gateway's liveness key, refreshed every third
//! of `--redis-ttl`, and, every `--redis-ttl`, the sweep of the directory
//! entries of gateways whose key expired.
//!
//! They have a connection of their own so that no pipeline of claims (a
//! reconnect storm) can hold them back past `--redis-ttl`: Redis serves
//! its clients in turn, so a short queue is answered however long another
//! is. A refresh that finds the key expired (the gateway was too slow, or
//! cut off, and may have been swept) makes it claim its collars again.

use log::{info, warn};

use super::Hub;
use crate::close::CloseReason;
use crate::proto::Proto;
use crate::reactor::Ops;
use crate::redis::codec::{Frame, OwnedFrame};
use crate::redis::function;
use crate::time::millis;

/// What the control link's replies answer, in the order sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ControlRequest {
    /// `SELECT`, `CLIENT SETNAME`.
    Setup,
    /// `tether_v1_alive`: 1 if the liveness key was still there.
    Alive,
    /// `tether_v1_sweep`: the MACs taken off the directory.
    Sweep,
}

impl Hub {
    /// Writes one command on the control link.
    pub(super) fn control_request(&mut self, args: &[&[u8]], request: ControlRequest, ops: &mut Ops<'_, Proto>) {
        let cluster = self.cluster_mut();
        if cluster.write(cluster.control.token, args, ops) {
            cluster.control_pending.push_back((ops.now(), request));
        }
    }

    /// A reply on the control link.
    pub(super) fn control_reply(&mut self, frame: OwnedFrame, ops: &mut Ops<'_, Proto>) {
        let cluster = self.cluster_mut();
        let Some((_, request)) = cluster.control_pending.pop_front() else { return };
        if let Some(error) = frame.error() {
            warn!("redis: {request:?} failed: {error}");
            if let Some(token) = cluster.control.token.filter(|_| request == ControlRequest::Setup) {
                ops.close(token, CloseReason::ProtocolError);
            }
            return;
        }
        match request {
            ControlRequest::Setup => {
                if cluster.control_pending.iter().all(|&(_, r)| r != ControlRequest::Setup) && !cluster.control.ready {
                    cluster.control.ready = true;
                    if cluster.up() {
                        self.links_up(ops);
                    }
                }
            }
            ControlRequest::Alive => {
                let expired = frame.int() == Some(0) && cluster.alive_confirmed;
                cluster.alive_confirmed = true;
                if expired {
                    // Other gateways may have swept our collars off the
                    // directory meanwhile: claim them again (each is kept
                    // if still ours, claimed afresh if gone).
                    warn!("redis: this gateway's liveness key had expired: claiming every local collar again");
                    cluster.stats.expired += 1;
                    self.claim_all(ops);
                }
            }
            ControlRequest::Sweep => {
                let swept = frame.items().len();
                if swept > 0 {
                    info!("redis: swept {swept} devices of gateways that stopped refreshing their liveness key");
                    self.cluster_mut().stats.swept += swept as u64;
                }
            }
        }
    }

    /// Refreshes this gateway's liveness key.
    pub(super) fn refresh(&mut self, ops: &mut Ops<'_, Proto>) {
        let cluster = self.cluster_mut();
        let id = cluster.settings.gateway_id.clone();
        let ttl = millis(cluster.settings.ttl).to_string();
        cluster.refresh_at = Some(ops.now() + millis(cluster.settings.ttl) / 3);
        let alive = function("alive");
        let args: [&[u8]; 5] = [b"FCALL", alive.as_bytes(), b"0", id.as_bytes(), ttl.as_bytes()];
        self.control_request(&args, ControlRequest::Alive, ops);
    }
}
