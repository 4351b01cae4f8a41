//! The flapping guard: a MAC taken over too often is quarantined.
//!
//! The newest connection to identify as a MAC wins it, so two collars that
//! share a MAC (a cloned firmware image, a collar and a stale test rig) or
//! a collar and an impostor knock each other off for ever, thousands of
//! times a second. The guard counts each MAC's takeovers over a sliding
//! window (`--flap-window`, a minute by default); the takeover that makes
//! them more than `--flap-limit` puts the MAC in quarantine for
//! `--flap-quarantine`. The winner of that takeover stays online, and
//! every other `IDENTIFY` for the MAC is refused (`ERR flapping`, `BYE
//! flapping`) until the quarantine ends, so the two settle.
//!
//! Memory is bounded whatever the peers do: a MAC is tracked only from its
//! first takeover, only for as long as its window or quarantine can still
//! matter, and at most `--flap-max-tracked` MACs at once. Past that, the
//! MAC tracked longest without a takeover is forgotten first, so a peer
//! cycling through MACs can make the guard forget (fail open), never grow.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use crate::device::Mac;
use crate::time::Millis;

/// The guard's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlapSettings {
    /// Most takeovers of one MAC within `window` (0 turns the guard off).
    pub limit: u32,
    pub window: Duration,
    pub quarantine: Duration,
    /// Most MACs tracked at once.
    pub max_tracked: usize,
}

impl Default for FlapSettings {
    /// As the command line's defaults.
    fn default() -> FlapSettings {
        FlapSettings {
            limit: 10,
            window: Duration::from_secs(60),
            quarantine: Duration::from_secs(60),
            max_tracked: 10_000,
        }
    }
}

/// The takeover history of the MACs taken over lately.
#[derive(Debug, Default)]
pub struct FlapGuard {
    settings: FlapSettings,
    macs: HashMap<Mac, Track>,
    /// `(touched, mac)` each time a MAC is touched, oldest first. An entry
    /// whose time is not its MAC's `touched` any more is stale and skipped.
    /// Pruned from the front as MACs expire, and compacted when stale
    /// entries outnumber the MACs, so it stays within a few times
    /// `max_tracked` entries.
    order: VecDeque<(Millis, Mac)>,
}

/// One MAC's history.
#[derive(Debug)]
struct Track {
    /// Its takeovers within the window, oldest first; at most `limit + 1`.
    times: VecDeque<Millis>,
    /// Quarantined until then (0: not quarantined).
    until: Millis,
    /// Its last takeover: the MAC is forgotten `retention` after it.
    touched: Millis,
}

/// A takeover that put its MAC in quarantine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quarantine {
    /// Takeovers within the window, this one included.
    pub takeovers: u32,
    pub until: Millis,
}

impl FlapGuard {
    pub fn new(settings: FlapSettings) -> FlapGuard {
        FlapGuard { settings, macs: HashMap::new(), order: VecDeque::new() }
    }

    /// MACs tracked now.
    pub fn tracked(&self) -> usize {
        self.macs.len()
    }

    /// The guard's settings.
    pub fn settings(&self) -> FlapSettings {
        self.settings
    }

    /// Quarantines `mac` until `until` (the fleet's guard, in Redis, found
    /// it flapping), so that this gateway refuses it at once too.
    pub fn quarantine(&mut self, mac: Mac, now: Millis, until: Millis) {
        if self.settings.limit == 0 {
            return;
        }
        self.expire(now);
        if !self.macs.contains_key(&mac) && self.macs.len() >= self.settings.max_tracked {
            self.evict_oldest();
        }
        let limit = self.settings.limit as usize;
        let track = self.macs.entry(mac).or_insert_with(|| Track {
            times: VecDeque::with_capacity(limit + 1),
            until: 0,
            touched: now,
        });
        track.touched = now;
        track.until = track.until.max(until);
        self.order.push_back((now, mac));
    }

    /// Whether an `IDENTIFY` for `mac` is refused at `now`.
    pub fn quarantined(&self, mac: Mac, now: Millis) -> bool {
        self.macs.get(&mac).is_some_and(|track| now < track.until)
    }

    /// Counts a takeover of `mac` at `now`; the quarantine it starts, if it
    /// is one too many.
    pub fn taken_over(&mut self, mac: Mac, now: Millis) -> Option<Quarantine> {
        let limit = self.settings.limit as usize;
        if limit == 0 || self.settings.max_tracked == 0 {
            return None;
        }
        self.expire(now);
        if !self.macs.contains_key(&mac) && self.macs.len() >= self.settings.max_tracked {
            self.evict_oldest();
        }
        let window = millis(self.settings.window);
        let track = self.macs.entry(mac).or_insert_with(|| Track {
            times: VecDeque::with_capacity(limit + 1),
            until: 0,
            touched: now,
        });
        track.touched = now;
        while track.times.front().is_some_and(|&at| at.saturating_add(window) <= now) {
            track.times.pop_front();
        }
        track.times.push_back(now);
        let quarantine = (track.times.len() > limit).then(|| {
            track.until = now.saturating_add(millis(self.settings.quarantine));
            let takeovers = track.times.len() as u32;
            track.times.clear();
            Quarantine { takeovers, until: track.until }
        });
        self.order.push_back((now, mac));
        if self.order.len() > 2 * self.macs.len() + 64 {
            let macs = &self.macs;
            self.order.retain(|(at, mac)| macs.get(mac).is_some_and(|t| t.touched == *at));
        }
        quarantine
    }

    /// How long after its last takeover a MAC may still matter: its window,
    /// or the quarantine that takeover started.
    fn retention(&self) -> Millis {
        millis(self.settings.window).max(millis(self.settings.quarantine))
    }

    /// Forgets the MACs whose last takeover is past the retention.
    fn expire(&mut self, now: Millis) {
        let retention = self.retention();
        while let Some(&(at, mac)) = self.order.front() {
            if at.saturating_add(retention) > now {
                break;
            }
            self.order.pop_front();
            if self.macs.get(&mac).is_some_and(|t| t.touched == at) {
                self.macs.remove(&mac);
            }
        }
    }

    /// Forgets the MAC whose last takeover is the oldest.
    fn evict_oldest(&mut self) {
        while let Some((at, mac)) = self.order.pop_front() {
            if self.macs.get(&mac).is_some_and(|t| t.touched == at) {
                self.macs.remove(&mac);
                return;
            }
        }
    }
}

fn millis(d: Duration) -> Millis {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: Mac = Mac([1, 2, 3, 4, 5, 6]);

    fn guard(limit: u32, max_tracked: usize) -> FlapGuard {
        FlapGuard::new(FlapSettings {
            limit,
            window: Duration::from_millis(1000),
            quarantine: Duration::from_millis(500),
            max_tracked,
        })
    }

    #[test]
    fn more_than_the_limit_within_the_window_quarantines() {
        let mut g = guard(3, 100);
        for at in [0, 10, 20] {
            assert_eq!(g.taken_over(MAC, at), None);
            assert!(!g.quarantined(MAC, at));
        }
        assert_eq!(g.taken_over(MAC, 999), Some(Quarantine { takeovers: 4, until: 1499 }));
        assert!(g.quarantined(MAC, 999) && g.quarantined(MAC, 1498));
        assert!(!g.quarantined(MAC, 1499), "the quarantine ends");
        assert!(!g.quarantined(Mac([9; 6]), 1000), "for that MAC only");
        // The count starts over after a quarantine.
        for at in [1500, 1501, 1502] {
            assert_eq!(g.taken_over(MAC, at), None);
        }
        assert_eq!(g.taken_over(MAC, 1503).map(|q| q.takeovers), Some(4));
    }

    #[test]
    fn the_window_slides() {
        let mut g = guard(3, 100);
        for at in [0, 400, 800] {
            assert_eq!(g.taken_over(MAC, at), None);
        }
        // The first one left the window at 1000: three within it, not four.
        assert_eq!(g.taken_over(MAC, 1000), None);
        assert_eq!(g.taken_over(MAC, 1400), None, "400 left at 1400");
        assert_eq!(g.taken_over(MAC, 1401).map(|q| q.takeovers), Some(4), "800, 1000, 1400, 1401");
    }

    #[test]
    fn a_limit_of_zero_turns_the_guard_off() {
        let mut g = guard(0, 100);
        for at in 0..100 {
            assert_eq!(g.taken_over(MAC, at), None);
        }
        assert_eq!(g.tracked(), 0);
    }

    #[test]
    fn macs_are_forgotten_after_their_window_and_quarantine() {
        let mut g = guard(1, 100);
        g.taken_over(MAC, 0);
        assert!(g.taken_over(MAC, 1).is_some());
        g.taken_over(Mac([7; 6]), 500);
        assert_eq!(g.tracked(), 2);
        g.taken_over(Mac([8; 6]), 1001);
        assert_eq!(g.tracked(), 2, "MAC's last takeover at 1 is past the window of 1000 ms");
        assert!(!g.quarantined(MAC, 1001));
    }

    #[test]
    fn memory_is_bounded_when_macs_cycle() {
        let mut g = guard(3, 50);
        for i in 0..10_000u32 {
            let mac = Mac([0, 0, (i >> 16) as u8, (i >> 8) as u8, i as u8, 1]);
            // Each MAC twice, as an attacker fighting over fresh MACs does,
            // all within one window.
            g.taken_over(mac, u64::from(i / 100));
            g.taken_over(mac, u64::from(i / 100));
            assert!(g.tracked() <= 50);
            assert!(g.order.len() <= 2 * 50 + 64 + 1, "{} entries in the order", g.order.len());
        }
        // The newest MACs are the ones remembered.
        let newest = Mac([0, 0, 0, (9_999u32 >> 8) as u8, 9_999u32 as u8, 1]);
        assert!(g.macs.contains_key(&newest));
    }

    #[test]
    fn eviction_forgets_the_least_recently_taken_over() {
        let mut g = guard(2, 2);
        let (a, b, c) = (Mac([0xA; 6]), Mac([0xB; 6]), Mac([0xC; 6]));
        g.taken_over(a, 0);
        g.taken_over(b, 1);
        g.taken_over(a, 2); // a is now the most recent
        g.taken_over(c, 3); // b is evicted
        assert!(g.macs.contains_key(&a) && g.macs.contains_key(&c) && !g.macs.contains_key(&b));
        assert_eq!(g.taken_over(a, 4).map(|q| q.takeovers), Some(3), "a kept its history");
    }
}
