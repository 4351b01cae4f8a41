//! Claims: this gateway's collars as the directory knows them, and the
//! epochs that fence them.
//!
//! Claims are fenced by epochs: a claim takes the next epoch of a
//! fleet-wide counter, so a MAC's epochs only grow; an owner is
//! told of a newer claim and closes its connection (`BYE replaced`) only
//! if its own epoch is older, so a slow old owner never closes the new
//! one, and its release (compare-and-delete) never removes the new entry.
//!
//! A collar that identifies is claimed (counted as a takeover for the
//! fleet-wide flapping guard). When the links come back, when the liveness
//! key was found expired, and after a claim failed, every local collar is
//! claimed again: with the epoch it held, if any (`tether_v1_reclaim`:
//! kept if still ours, lost if another gateway claimed it meanwhile).
//! After a reconnect, the entries this gateway left behind while cut off
//! are released ([`Hub::reconcile`]).

use log::{debug, info};
use mio::Token;

use super::Hub;
use super::pipeline::Pending;
use crate::close::CloseReason;
use crate::device::Mac;
use crate::events::EventKind;
use crate::proto::Proto;
use crate::reactor::Ops;
use crate::redis::codec::{Frame, OwnedFrame};
use crate::time::millis;

/// A collar of this gateway as the directory knows it.
#[derive(Debug)]
pub(super) struct Claim {
    pub(super) token: Token,
    /// The epoch Redis gave the claim (`None` while the claim is on the way).
    pub(super) epoch: Option<u64>,
    /// The highest epoch another gateway announced while ours was unknown:
    /// if ours turns out older, we lost.
    pub(super) fence: u64,
}

impl Hub {
    /// Claims every local collar again (see `claim`): not takeovers, so
    /// not counted for flapping.
    pub(super) fn claim_all(&mut self, ops: &mut Ops<'_, Proto>) {
        self.cluster_mut().claims_due = None;
        let local: Vec<(Mac, Token)> = self.registry.iter().map(|(&mac, &token)| (mac, token)).collect();
        for (mac, token) in local {
            self.claim_as(mac, token, false, ops);
        }
    }

    /// Releases the directory's entries of this gateway whose collar is not
    /// here any more (`{mac, epoch, ...}`), by compare-and-delete on the
    /// epoch each has.
    pub(super) fn reconcile(&mut self, owned: &OwnedFrame, ops: &mut Ops<'_, Proto>) {
        let id = self.cluster_mut().settings.gateway_id.clone();
        let mut stale = 0;
        for pair in owned.items().chunks_exact(2) {
            let (Some(mac_text), Some(epoch)) = (pair[0].text(), pair[1].text()) else { continue };
            let Ok(mac) = mac_text.parse::<Mac>() else { continue };
            if self.cluster_mut().claims.contains_key(&mac) {
                continue;
            }
            stale += 1;
            let args: [&[u8]; 3] = [mac_text.as_bytes(), id.as_bytes(), epoch.as_bytes()];
            self.fcall("release", &args, Pending::Quiet("release"), ops);
        }
        if stale > 0 {
            info!("redis: released {stale} directory entries of collars that left while the links were down");
        }
    }

    /// Claims `mac` for the collar on `token` (it identified here).
    /// With the epoch its claim held already (the links came back), claims
    /// it again (`tether_v1_reclaim`): kept if still ours, lost if another
    /// gateway claimed it meanwhile.
    pub(in crate::hub) fn claim(&mut self, mac: Mac, token: Token, ops: &mut Ops<'_, Proto>) {
        self.claim_as(mac, token, true, ops);
    }

    /// `claim`, counted for flapping in Redis if `takeover` (a new
    /// `IDENTIFY`, not a claim made again).
    fn claim_as(&mut self, mac: Mac, token: Token, takeover: bool, ops: &mut Ops<'_, Proto>) {
        let held = self.cluster_mut().claims.get(&mac).filter(|c| c.token == token).and_then(|c| c.epoch);
        let peer = ops.peer(token).map(ToString::to_string).unwrap_or_default();
        let since = match ops.session(token) {
            Some(Proto::Device(d)) => self.clock.unix_ms(d.collar.connected_at),
            _ => self.clock.unix_ms(ops.now()),
        };
        let cluster = self.cluster_mut();
        cluster.claims.insert(mac, Claim { token, epoch: None, fence: 0 });
        if !cluster.up() {
            return;
        }
        cluster.stats.claims += 1;
        let id = cluster.settings.gateway_id.clone();
        let (mac_text, since) = (mac.to_string(), since.to_string());
        let args: [&[u8]; 4] = [mac_text.as_bytes(), id.as_bytes(), peer.as_bytes(), since.as_bytes()];
        match held {
            Some(epoch) => {
                let epoch = epoch.to_string();
                let args: Vec<&[u8]> = args.iter().copied().chain([epoch.as_bytes()]).collect();
                self.fcall("reclaim", &args, Pending::Claim { mac, token }, ops)
            }
            None => {
                // The fleet-wide flapping guard counts takeovers in Redis
                // with the same settings as this gateway's own.
                let flap = self.flap.settings();
                let limit = if takeover { flap.limit } else { 0 };
                let (limit, window, quarantine) =
                    (limit.to_string(), millis(flap.window).to_string(), millis(flap.quarantine).to_string());
                let args: Vec<&[u8]> =
                    args.iter().copied().chain([limit.as_bytes(), window.as_bytes(), quarantine.as_bytes()]).collect();
                self.fcall("claim", &args, Pending::Claim { mac, token }, ops)
            }
        };
    }

    /// Redis answered our claim of `mac`: `{epoch, previous gateway,
    /// previous epoch}`; epoch 0 from a re-claim: another gateway claimed
    /// it while we were cut off.
    pub(super) fn claimed(&mut self, mac: Mac, token: Token, reply: &OwnedFrame, ops: &mut Ops<'_, Proto>) {
        let Some(epoch) = reply.items().first().and_then(Frame::int) else { return };
        if epoch < 0 {
            // The MAC is quarantined fleet-wide for flapping: nothing was
            // claimed, and the collar (admitted here before Redis answered)
            // is closed with the word; this gateway refuses it at once from
            // now on too.
            let left = reply.items().get(1).and_then(Frame::int).unwrap_or(0).max(0) as u64;
            let now = ops.now();
            self.flap.quarantine(mac, now, now + left);
            if self.cluster_mut().claims.get(&mac).is_some_and(|c| c.token == token) {
                self.cluster_mut().claims.remove(&mac);
                ops.stats().flap_refusals += 1;
                debug!("{mac}: quarantined for flapping, fleet-wide: refused");
                ops.close(token, CloseReason::Flapping);
            }
            return;
        }
        let epoch = epoch as u64;
        if let Some(takeovers) = reply.items().get(3).and_then(Frame::int).filter(|&n| n > 0) {
            // This takeover was one too many, fleet-wide: it stands, and the
            // MAC is quarantined.
            let flap = self.flap.settings();
            let now = ops.now();
            let until = now + millis(flap.quarantine);
            self.flap.quarantine(mac, now, until);
            ops.stats().flap_quarantines += 1;
            debug!("{mac}: taken over {takeovers} times across the fleet, quarantined");
            let kind = EventKind::Flapping { takeovers: takeovers as u32, until_unix_ms: self.clock.unix_ms(until) };
            self.publish(mac, kind, ops);
        }
        if epoch == 0 {
            if self.cluster_mut().claims.get(&mac).is_some_and(|c| c.token == token) {
                debug!("{mac}: claimed by another gateway while this one was cut off from Redis");
                self.lost_to_remote(mac, ops);
            }
            return;
        }
        let cluster = self.cluster_mut();
        let Some(claim) = cluster.claims.get_mut(&mac).filter(|c| c.token == token) else {
            // The collar left (or was replaced here) meanwhile: let go of the
            // entry we just made, unless a newer claim took it.
            let (id, mac_text, epoch) = (cluster.settings.gateway_id.clone(), mac.to_string(), epoch.to_string());
            let args: [&[u8]; 3] = [mac_text.as_bytes(), id.as_bytes(), epoch.as_bytes()];
            self.fcall("release", &args, Pending::Quiet("release"), ops);
            return;
        };
        claim.epoch = Some(epoch);
        match reply.items().get(1).and_then(Frame::text) {
            Some(previous) if previous != cluster.settings.gateway_id => {
                debug!("{mac}: claimed with epoch {epoch}, from gateway {previous}")
            }
            _ => debug!("{mac}: claimed with epoch {epoch}"),
        }
        if claim.fence > epoch {
            // Another gateway claimed it after us, before we knew our epoch.
            self.lost_to_remote(mac, ops);
        }
    }

    /// Another gateway claimed `mac` with a newer epoch: our collar was
    /// replaced.
    pub(super) fn lost_to_remote(&mut self, mac: Mac, ops: &mut Ops<'_, Proto>) {
        let cluster = self.cluster_mut();
        let Some(claim) = cluster.claims.remove(&mac) else { return };
        cluster.stats.lost_to_remote += 1;
        if self.registry.get(&mac) == Some(&claim.token) {
            self.registry.remove(&mac);
            ops.stats().takeovers += 1;
            debug!("{mac}: taken over by another gateway");
            self.publish(mac, EventKind::Disconnected { reason: CloseReason::Replaced }, ops);
        }
        ops.close(claim.token, CloseReason::Replaced);
    }

    /// Our collar on `token` left: release its entry (compare-and-delete).
    pub(in crate::hub) fn release(&mut self, mac: Mac, token: Token, ops: &mut Ops<'_, Proto>) {
        let cluster = self.cluster_mut();
        if cluster.claims.get(&mac).is_none_or(|c| c.token != token) {
            return;
        }
        let claim = cluster.claims.remove(&mac).expect("just checked");
        let Some(epoch) = claim.epoch else {
            // Unknown yet: the claim's reply finds the collar gone and
            // releases then.
            return;
        };
        let (id, mac_text, epoch) = (cluster.settings.gateway_id.clone(), mac.to_string(), epoch.to_string());
        let args: [&[u8]; 3] = [mac_text.as_bytes(), id.as_bytes(), epoch.as_bytes()];
        self.fcall("release", &args, Pending::Quiet("release"), ops);
    }
}
