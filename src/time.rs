//! The reactor's clock: milliseconds since the gateway started.
//!
//! Every deadline in tether is a [`Millis`], a plain `u64` counted from the
//! moment the reactor was built. Reading the clock once per loop turn and
//! passing `now` down keeps the protocol code and the timing wheel free of
//! hidden clock reads, so their tests inject time instead of sleeping.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Milliseconds since the reactor's epoch ([`Clock::new`]).
pub type Millis = u64;

/// A monotonic clock with a fixed epoch, and the wall-clock time of that
/// epoch so that reported timestamps can be given as Unix time.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    epoch: Instant,
    /// Unix time of `epoch`, in milliseconds.
    epoch_unix_ms: u64,
}

impl Clock {
    pub fn new() -> Clock {
        let unix = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        Clock { epoch: Instant::now(), epoch_unix_ms: millis(unix) }
    }

    /// Milliseconds elapsed since the epoch.
    pub fn now(&self) -> Millis {
        millis(self.epoch.elapsed())
    }

    /// The instant `at` expressed as Unix time in milliseconds.
    pub fn unix_ms(&self, at: Millis) -> u64 {
        self.epoch_unix_ms + at
    }
}

impl Default for Clock {
    fn default() -> Clock {
        Clock::new()
    }
}

/// A duration in whole milliseconds, saturating far beyond any real timeout.
pub fn millis(d: Duration) -> Millis {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// `at + d`, or `None` when `d` is zero: a zero duration disables a deadline.
/// A duration below one millisecond counts as one, so that a deadline is
/// always strictly after the moment it is measured from.
pub fn deadline(at: Millis, d: Duration) -> Option<Millis> {
    (!d.is_zero()).then(|| at.saturating_add(millis(d).max(1)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_duration_disables_a_deadline() {
        assert_eq!(deadline(100, Duration::ZERO), None);
        assert_eq!(deadline(100, Duration::from_millis(250)), Some(350));
        assert_eq!(deadline(100, Duration::from_micros(10)), Some(101));
    }

    #[test]
    fn millis_saturates() {
        assert_eq!(millis(Duration::MAX), u64::MAX);
        assert_eq!(deadline(u64::MAX - 1, Duration::from_secs(1)), Some(u64::MAX));
    }
}
