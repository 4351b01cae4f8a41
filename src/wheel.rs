//! A hashed timing wheel (Varghese & Lauck, scheme 6) for connection deadlines.
//!
//! Time is cut into ticks of `tick` milliseconds. A timer due at tick `t`
//! sits in slot `t % slots`, in an intrusive doubly linked list threaded
//! through one node arena, so [`Wheel::insert`] and [`Wheel::cancel`] are
//! O(1) whatever the number of timers. Timers further away than one
//! revolution share a slot with nearer ones and are simply skipped until
//! their own turn comes (the node keeps its absolute tick).
//!
//! An occupancy bitmap (one bit per slot) lets [`Wheel::next_expiry`] find
//! the next non-empty slot with a few word scans, so the reactor sleeps in
//! `epoll_wait` until something is due instead of ticking through empty
//! slots: a gateway with 19k idle connections and no due timer uses no CPU.
//!
//! The wheel never reads a clock. Callers pass `now`, which makes it
//! deterministic and lets its tests run without sleeping. A timer fires on
//! the first call to [`Wheel::expire`] at or after the start of the first
//! tick that begins at or after its deadline: never early, at most one tick
//! late.

use std::num::NonZeroU32;
use std::time::Duration;

use crate::time::{Millis, millis};

/// End of a list, or "no node".
const NIL: u32 = u32::MAX;

/// A handle to a pending timer. It goes stale once the timer fires or is
/// cancelled; cancelling a stale handle does nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimerId {
    index: u32,
    generation: NonZeroU32,
}

#[derive(Debug)]
struct Node<T> {
    /// The tick at which the timer fires; the slot is `tick & mask`.
    tick: u64,
    prev: u32,
    /// Next node in the slot's list, or in the free list for a free node.
    next: u32,
    /// Bumped each time the node is freed, so old [`TimerId`]s stop matching.
    generation: NonZeroU32,
    live: bool,
    payload: T,
}

/// The wheel. `T` is what a timer carries back when it fires (the reactor
/// uses the connection's token).
#[derive(Debug)]
pub struct Wheel<T> {
    tick_ms: u64,
    /// `slots - 1`; the slot count is a power of two.
    mask: u64,
    /// Head node of each slot's list, or `NIL`.
    heads: Box<[u32]>,
    /// Bit `s` is set exactly when slot `s` is non-empty.
    occupied: Box<[u64]>,
    nodes: Vec<Node<T>>,
    /// Head of the free-node list threaded through `Node::next`.
    free: u32,
    len: usize,
    /// The first tick that [`Wheel::expire`] has not processed yet. Every
    /// pending timer's tick is at or after it.
    next_tick: u64,
}

impl<T: Copy> Wheel<T> {
    /// A wheel of `slots` slots (a power of two, at least 64) of `tick` each.
    /// One revolution should cover the common timeouts so that most timers
    /// are visited once.
    pub fn new(tick: Duration, slots: usize) -> Wheel<T> {
        assert!(slots.is_power_of_two() && slots >= 64, "slots must be a power of two >= 64");
        let tick_ms = millis(tick).max(1);
        Wheel {
            tick_ms,
            mask: slots as u64 - 1,
            heads: vec![NIL; slots].into_boxed_slice(),
            occupied: vec![0; slots / 64].into_boxed_slice(),
            nodes: Vec::new(),
            free: NIL,
            len: 0,
            next_tick: 0,
        }
    }

    /// Reserves room for `additional` more timers so that growing does not
    /// reallocate the arena in the middle of a connection storm.
    pub fn reserve(&mut self, additional: usize) {
        self.nodes.reserve(additional);
    }

    /// Number of pending timers.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Files a timer that fires at `deadline` (or at the next tick when the
    /// deadline has already passed).
    pub fn insert(&mut self, deadline: Millis, payload: T) -> TimerId {
        let tick = deadline.div_ceil(self.tick_ms).max(self.next_tick);
        let slot = self.slot(tick);
        let head = self.heads[slot];
        let index = match self.free {
            NIL => {
                let index = u32::try_from(self.nodes.len()).ok().filter(|&i| i != NIL).expect("timer arena is full");
                self.nodes.push(Node { tick, prev: NIL, next: head, generation: NonZeroU32::MIN, live: true, payload });
                index
            }
            index => {
                let node = &mut self.nodes[index as usize];
                self.free = node.next;
                node.tick = tick;
                node.prev = NIL;
                node.next = head;
                node.live = true;
                node.payload = payload;
                index
            }
        };
        if head != NIL {
            self.nodes[head as usize].prev = index;
        }
        self.heads[slot] = index;
        self.occupied[slot / 64] |= 1 << (slot % 64);
        self.len += 1;
        TimerId { index, generation: self.nodes[index as usize].generation }
    }

    /// Removes a pending timer and returns its payload; `None` when the
    /// handle is stale (the timer already fired or was cancelled).
    pub fn cancel(&mut self, id: TimerId) -> Option<T> {
        let node = self.nodes.get(id.index as usize)?;
        if !node.live || node.generation != id.generation {
            return None;
        }
        let payload = node.payload;
        self.unlink(id.index);
        Some(payload)
    }

    /// When a timer filed now for `deadline` would fire (see
    /// [`Wheel::due_at`]).
    pub fn fires_at(&self, deadline: Millis) -> Millis {
        deadline.div_ceil(self.tick_ms).max(self.next_tick).saturating_mul(self.tick_ms)
    }

    /// When a pending timer fires: the start of its tick, which is at or
    /// after the deadline it was filed with and less than one tick later.
    /// `None` when the handle is stale.
    pub fn due_at(&self, id: TimerId) -> Option<Millis> {
        let node = self.nodes.get(id.index as usize)?;
        (node.live && node.generation == id.generation).then(|| node.tick.saturating_mul(self.tick_ms))
    }

    /// The earliest time at which [`Wheel::expire`] may have work: the start
    /// of the next non-empty slot's tick. It can be early (that slot may hold
    /// only timers for a later revolution) but never late.
    pub fn next_expiry(&self) -> Option<Millis> {
        if self.len == 0 {
            return None;
        }
        let distance = self.distance_to_occupied(self.slot(self.next_tick))?;
        Some((self.next_tick + distance as u64).saturating_mul(self.tick_ms))
    }

    /// Removes every timer due at or before `now` and appends its handle and
    /// payload to `expired` (not in deadline order). The handle lets the
    /// caller tell a timer it still wants from one it has replaced since:
    /// handling one expiry may re-arm another owner's timer within the same
    /// batch.
    pub fn expire(&mut self, now: Millis, expired: &mut Vec<(TimerId, T)>) {
        let now_tick = now / self.tick_ms;
        if now_tick < self.next_tick {
            return;
        }
        // Visit the non-empty slots between the last processed tick and now,
        // each at most once even when more than a revolution has passed.
        let last = now_tick.min(self.next_tick + self.mask);
        let mut tick = self.next_tick;
        while self.len > 0 && tick <= last {
            let Some(distance) = self.distance_to_occupied(self.slot(tick)) else {
                break;
            };
            tick += distance as u64;
            if tick > last {
                break;
            }
            self.expire_slot(self.slot(tick), now_tick, expired);
            tick += 1;
        }
        self.next_tick = now_tick + 1;
    }

    fn expire_slot(&mut self, slot: usize, now_tick: u64, expired: &mut Vec<(TimerId, T)>) {
        let mut index = self.heads[slot];
        while index != NIL {
            let node = &self.nodes[index as usize];
            let next = node.next;
            if node.tick <= now_tick {
                expired.push((TimerId { index, generation: node.generation }, node.payload));
                self.unlink(index);
            }
            index = next;
        }
    }

    /// Detaches a live node from its slot and returns it to the free list.
    fn unlink(&mut self, index: u32) {
        let node = &mut self.nodes[index as usize];
        let (prev, next, tick) = (node.prev, node.next, node.tick);
        node.live = false;
        node.generation = node.generation.checked_add(1).unwrap_or(NonZeroU32::MIN);
        node.next = self.free;
        self.free = index;
        self.len -= 1;

        if next != NIL {
            self.nodes[next as usize].prev = prev;
        }
        if prev != NIL {
            self.nodes[prev as usize].next = next;
        } else {
            let slot = self.slot(tick);
            self.heads[slot] = next;
            if next == NIL {
                self.occupied[slot / 64] &= !(1 << (slot % 64));
            }
        }
    }

    fn slot(&self, tick: u64) -> usize {
        (tick & self.mask) as usize
    }

    /// How many slots forward from `start` (0 = `start` itself) the first
    /// non-empty slot is, wrapping around the wheel.
    fn distance_to_occupied(&self, start: usize) -> Option<usize> {
        let slots = self.heads.len();
        let words = self.occupied.len();
        let mut word_index = start / 64;
        let mut word = self.occupied[word_index] & (!0u64 << (start % 64));
        // One pass over every word, plus the low bits of the first word.
        for _ in 0..=words {
            if word != 0 {
                let slot = word_index * 64 + word.trailing_zeros() as usize;
                return Some((slot + slots - start) % slots);
            }
            word_index = (word_index + 1) % words;
            word = self.occupied[word_index];
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TICK: Duration = Duration::from_millis(10);

    fn wheel() -> Wheel<u32> {
        Wheel::new(TICK, 64)
    }

    fn expire(w: &mut Wheel<u32>, now: Millis) -> Vec<u32> {
        let mut fired = Vec::new();
        w.expire(now, &mut fired);
        let mut out: Vec<u32> = fired.into_iter().map(|(_, payload)| payload).collect();
        out.sort_unstable();
        out
    }

    #[test]
    fn expiry_hands_back_the_handle_it_was_filed_under() {
        let mut w = wheel();
        let a = w.insert(20, 1);
        let b = w.insert(20, 2);
        let mut fired = Vec::new();
        w.expire(20, &mut fired);
        fired.sort_by_key(|&(_, p)| p);
        assert_eq!(fired, vec![(a, 1), (b, 2)]);
    }

    #[test]
    fn fires_at_the_first_tick_at_or_after_the_deadline() {
        let mut w = wheel();
        w.insert(25, 1);
        assert_eq!(w.next_expiry(), Some(30));
        assert_eq!(expire(&mut w, 29), Vec::<u32>::new());
        assert_eq!(expire(&mut w, 30), vec![1]);
        assert!(w.is_empty());
        assert_eq!(w.next_expiry(), None);
    }

    #[test]
    fn never_fires_early_on_an_exact_tick_boundary() {
        let mut w = wheel();
        w.insert(30, 7);
        assert_eq!(expire(&mut w, 29), Vec::<u32>::new());
        assert_eq!(expire(&mut w, 30), vec![7]);
    }

    #[test]
    fn a_past_deadline_fires_on_the_next_expire() {
        let mut w = wheel();
        assert_eq!(expire(&mut w, 100), Vec::<u32>::new());
        w.insert(5, 1);
        assert_eq!(w.next_expiry(), Some(110));
        assert_eq!(expire(&mut w, 110), vec![1]);
    }

    #[test]
    fn cancel_removes_and_stale_handles_are_ignored() {
        let mut w = wheel();
        let a = w.insert(50, 1);
        let b = w.insert(50, 2);
        assert_eq!(w.cancel(a), Some(1));
        assert_eq!(w.cancel(a), None, "second cancel of the same handle");
        assert_eq!(w.len(), 1);
        // The freed node is reused; the old handle must not reach the new timer.
        let c = w.insert(70, 3);
        assert_eq!(c.index, a.index);
        assert_eq!(w.cancel(a), None);
        assert_eq!(expire(&mut w, 50), vec![2]);
        assert_eq!(w.cancel(b), None, "handle of a fired timer");
        assert_eq!(w.cancel(c), Some(3));
        assert!(w.is_empty());
    }

    #[test]
    fn due_at_rounds_up_to_the_tick_and_forgets_stale_handles() {
        let mut w = wheel();
        let a = w.insert(45, 1);
        assert_eq!(w.due_at(a), Some(50), "10 ms ticks: 45 fires at the start of tick 5");
        let b = w.insert(60, 2);
        assert_eq!(w.due_at(b), Some(60));
        assert_eq!((w.fires_at(45), w.fires_at(60)), (50, 60), "what due_at would say, before filing");
        w.cancel(a);
        assert_eq!(w.due_at(a), None);
    }

    #[test]
    fn cancelling_the_middle_of_a_slot_keeps_the_rest() {
        let mut w = wheel();
        let ids: Vec<_> = (0..5).map(|i| w.insert(40, i)).collect();
        w.cancel(ids[2]);
        w.cancel(ids[0]);
        w.cancel(ids[4]);
        assert_eq!(expire(&mut w, 40), vec![1, 3]);
        assert_eq!(w.next_expiry(), None);
    }

    #[test]
    fn timers_beyond_one_revolution_wait_for_their_round() {
        let mut w = wheel(); // 64 slots * 10 ms = 640 ms per revolution
        w.insert(100, 1);
        w.insert(100 + 640, 2); // same slot, next revolution
        w.insert(100 + 3 * 640, 3);
        assert_eq!(expire(&mut w, 100), vec![1]);
        // The slot is still occupied, so the wheel may wake early, never late.
        assert!(w.next_expiry().unwrap() <= 740);
        assert_eq!(expire(&mut w, 739), Vec::<u32>::new());
        assert_eq!(expire(&mut w, 740), vec![2]);
        assert_eq!(expire(&mut w, 100 + 3 * 640), vec![3]);
    }

    #[test]
    fn a_long_gap_expires_everything_due_exactly_once() {
        let mut w = wheel();
        for i in 0..200 {
            w.insert(u64::from(i) * 37, i);
        }
        // Jump forward by more than three revolutions in one call.
        let due: Vec<u32> = (0..200).filter(|&i| u64::from(i) * 37 <= 2_000).collect();
        assert_eq!(expire(&mut w, 2_000), due);
        assert_eq!(w.len(), 200 - due.len());
        let rest: Vec<u32> = (0..200).filter(|&i| u64::from(i) * 37 > 2_000).collect();
        assert_eq!(expire(&mut w, 10_000), rest);
        assert!(w.is_empty());
    }

    #[test]
    fn next_expiry_skips_empty_slots_and_wraps() {
        let mut w = wheel();
        assert_eq!(expire(&mut w, 600), Vec::<u32>::new()); // next_tick = 61, near the end
        w.insert(650, 1); // tick 65 -> slot 1, after the wrap
        assert_eq!(w.next_expiry(), Some(650));
        w.insert(615, 2); // tick 62 -> slot 62, before the wrap
        assert_eq!(w.next_expiry(), Some(620));
        assert_eq!(expire(&mut w, 620), vec![2]);
        assert_eq!(w.next_expiry(), Some(650));
    }

    #[test]
    fn matches_a_naive_model_under_random_operations() {
        // A small deterministic xorshift drives inserts, cancels and clock jumps.
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        let mut rand = move |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        let mut w = wheel();
        let mut model: Vec<(u32, Millis, TimerId)> = Vec::new();
        let mut now = 0;
        for step in 0..5_000u32 {
            match rand(4) {
                0 | 1 => {
                    let deadline = now + rand(3_000);
                    // It fires at its deadline rounded up to a tick, but never
                    // in a tick that has already been processed.
                    let fires = deadline.div_ceil(10).max(w.next_tick) * 10;
                    let id = w.insert(deadline, step);
                    model.push((step, fires, id));
                }
                2 if !model.is_empty() => {
                    let (payload, _, id) = model.swap_remove(rand(model.len() as u64) as usize);
                    assert_eq!(w.cancel(id), Some(payload));
                }
                _ => {
                    let next = w.next_expiry();
                    now += rand(400);
                    let fired = expire(&mut w, now);
                    let mut due: Vec<u32> =
                        model.iter().filter(|&&(_, fires, _)| fires <= now).map(|&(p, _, _)| p).collect();
                    due.sort_unstable();
                    assert_eq!(fired, due, "step {step} at {now}");
                    if let Some(next) = next {
                        // Nothing fired before the promised next expiry.
                        assert!(fired.is_empty() || next <= now);
                    }
                    model.retain(|(p, _, _)| !due.contains(p));
                }
            }
            assert_eq!(w.len(), model.len());
        }
    }
}
