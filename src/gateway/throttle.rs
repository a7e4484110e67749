//! One log line per interval for a failure that can repeat many times a
//! second (a failing `accept`, requests refused at a backend's connection
//! cap): the first of a streak is logged at once, the rest once per
//! [`LOG_EVERY`] with the count of those left out. Pure: the caller says
//! what time it is.

use std::time::{Duration, Instant};

/// At most one log line per failure streak and interval.
pub const LOG_EVERY: Duration = Duration::from_secs(10);

/// Counts failures and says when one is worth a log line: the first of a
/// streak, then one per [`LOG_EVERY`].
#[derive(Debug, Default)]
pub struct Throttle {
    last_logged: Option<Instant>,
    /// Failures since the last line.
    unlogged: u64,
    /// Failures in the current streak.
    streak: u64,
}

impl Throttle {
    /// A failure at `now`: `Some(n)` to log it, with `n` failures since
    /// the previous line (this one included).
    pub fn failed(&mut self, now: Instant) -> Option<u64> {
        self.unlogged += 1;
        self.streak += 1;
        let due = self
            .last_logged
            .is_none_or(|t| now.saturating_duration_since(t) >= LOG_EVERY);
        if !due {
            return None;
        }
        self.last_logged = Some(now);
        Some(std::mem::take(&mut self.unlogged))
    }

    /// What failed worked again (an `accept` succeeded): `Some(n)` when
    /// it ends a streak of `n` failures (worth one line saying so).
    pub fn recovered(&mut self) -> Option<u64> {
        if self.streak == 0 {
            return None;
        }
        self.unlogged = 0;
        self.last_logged = None;
        Some(std::mem::take(&mut self.streak))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_streak_of_failures_is_logged_once_per_interval() {
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let mut t = Throttle::default();
        assert_eq!(t.recovered(), None);
        assert_eq!(t.failed(at(0)), Some(1));
        // Every 500 ms for 10 s: silent until the interval has passed.
        for ms in (500..10_000).step_by(500) {
            assert_eq!(t.failed(at(ms)), None, "{ms}");
        }
        assert_eq!(t.failed(at(10_000)), Some(20));
        assert_eq!(t.failed(at(10_500)), None);
        assert_eq!(t.recovered(), Some(22));
        assert_eq!(t.recovered(), None);
        // A new streak is logged at once.
        assert_eq!(t.failed(at(11_000)), Some(1));
    }
}
