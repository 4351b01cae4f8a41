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

/// `unix_ms` as an RFC 3339 UTC timestamp with milliseconds, e.g.
/// `2026-11-26T08:51:22.123Z` (years 0 to 9999), written digit by digit:
/// every event carries one, and formatting machinery would cost more than
/// the rest of the event.
pub fn rfc3339(unix_ms: u64) -> [u8; 24] {
    let secs = unix_ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(days as i64);
    let mut out = *b"0000-00-00T00:00:00.000Z";
    let mut digits = |at: usize, width: usize, mut value: u64| {
        for i in (at..at + width).rev() {
            out[i] = b'0' + (value % 10) as u8;
            value /= 10;
        }
    };
    digits(0, 4, year.clamp(0, 9999) as u64);
    digits(5, 2, u64::from(month));
    digits(8, 2, u64::from(day));
    digits(11, 2, rem / 3600);
    digits(14, 2, rem % 3600 / 60);
    digits(17, 2, rem % 60);
    digits(20, 3, unix_ms % 1000);
    out
}

/// Days since 1970-01-01 to a (year, month, day) in the proleptic
/// Gregorian calendar (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // day of era, [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365]
    let mp = (5 * doy + 2) / 153; // [0, 11], March-based
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(unix_ms: u64) -> String {
        String::from_utf8(rfc3339(unix_ms).to_vec()).unwrap()
    }

    #[test]
    fn formats_rfc3339() {
        assert_eq!(text(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(text(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(text(1_795_683_082_123), "2026-11-26T08:51:22.123Z");
        assert_eq!(text(4_102_444_799_999), "2099-12-31T23:59:59.999Z");
        assert_eq!(text(253_402_300_799_999), "9999-12-31T23:59:59.999Z");
    }

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
