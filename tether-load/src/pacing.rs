//! How many connects may start now, and when the next one may (sans-IO).
//!
//! Three limits apply: `--connect-rate` (connect k, from 0, is due k/rate
//! seconds into the run, so a loop that wakes late catches up at once
//! rather than losing the slots), `--max-in-flight` (connecting plus
//! identifying, so a storm never holds more half-open connections than the
//! gateway's backlog), and a per-turn batch, so the event loop still reads
//! between batches of a storm.

use crate::collar::Micros;

/// Connects started per loop turn at most.
pub const PER_TURN: u64 = 64;

/// The connects to start now, and when to come back for more if time (the
/// rate, or the per-turn batch) holds them back rather than the in-flight
/// cap (an event frees a place in flight). `rate` 0 means no pacing.
pub fn allowed(now: Micros, started: u64, left: u64, room: u64, rate: f64) -> (u64, Option<Micros>) {
    let mut allowed = left.min(room).min(PER_TURN);
    let mut next = None;
    if rate > 0.0 {
        let due = (now as f64 / 1e6 * rate).floor() as u64 + 1;
        let paced = due.saturating_sub(started);
        if paced <= allowed {
            allowed = paced;
            if allowed < left {
                next = Some(((started + allowed) as f64 / rate * 1e6).ceil() as Micros);
            }
        }
    }
    if allowed == PER_TURN && allowed < left {
        // Cut short by the batch size, not by time: come straight back.
        next = Some(now);
    }
    (allowed, next)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unpaced_connects_are_bounded_by_what_is_left_the_cap_and_the_batch() {
        assert_eq!(allowed(0, 0, 10, 1024, 0.0), (10, None));
        assert_eq!(allowed(0, 0, 10_000, 1024, 0.0), (PER_TURN, Some(0)));
        assert_eq!(allowed(5, 100, 10_000, 3, 0.0), (3, None), "the cap: wait for an event");
        assert_eq!(allowed(5, 100, 10_000, 0, 0.0), (0, None));
        assert_eq!(allowed(5, 100, 0, 1024, 0.0), (0, None), "nothing left");
    }

    #[test]
    fn paced_connects_follow_the_rate() {
        // 1000/s: one at once, the next due at 1 ms.
        assert_eq!(allowed(0, 0, 100, 1024, 1000.0), (1, Some(1000)));
        assert_eq!(allowed(999, 1, 99, 1024, 1000.0), (0, Some(1000)));
        assert_eq!(allowed(1000, 1, 99, 1024, 1000.0), (1, Some(2000)));
        // A loop that woke 10.5 ms in catches up on the slots it missed.
        assert_eq!(allowed(10_500, 1, 99, 1024, 1000.0), (10, Some(11_000)));
        // The last one: nothing to come back for.
        assert_eq!(allowed(99_000, 99, 1, 1024, 1000.0), (1, None));
    }

    #[test]
    fn pacing_still_respects_the_cap_and_the_batch() {
        // 40 due but only 5 places in flight: wait for events, not time.
        assert_eq!(allowed(39_000, 0, 100, 5, 1000.0), (5, None));
        // 1000 due at once: a batch now, the rest straight after.
        assert_eq!(allowed(999_000, 0, 10_000, 1024, 1000.0), (PER_TURN, Some(999_000)));
    }

    #[test]
    fn a_slow_rate_spaces_connects_out() {
        assert_eq!(allowed(0, 0, 5, 1024, 0.5), (1, Some(2_000_000)));
        assert_eq!(allowed(1_999_999, 1, 4, 1024, 0.5), (0, Some(2_000_000)));
    }
}
