//! Restart pacing: exponential backoff with jitter, and the sliding window
//! that decides when a crash-looping service is given up. Pure: time and
//! randomness come in as arguments, so the tables below are exact.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::manifest::{Backoff, MaxRestarts};

/// Jitter removes up to this fraction of a delay. Taking away (rather than
/// adding) keeps every delay within `backoff.max`, and since 2 × 0.8 > 1 each
/// delay is still longer than the one before until the ceiling.
const JITTER: f64 = 0.2;

/// The shortest run that counts as stable: after it, the next failure starts
/// over at `backoff.initial`. `max(10 s, backoff.max)`: a service that lives
/// longer than the longest pause we would impose is not crash-looping, and
/// 10 s keeps a small `max` from resetting on every quick crash.
pub fn stable_after(b: &Backoff) -> Duration {
    b.max.max(Duration::from_secs(10))
}

/// The pause before restart number `attempt` (0 for the first restart after
/// a stable run): `initial × 2^attempt`, at most `max`, minus up to 20 %
/// jitter. `jitter` is a uniform sample from [0, 1).
pub fn delay(b: &Backoff, attempt: u32, jitter: f64) -> Duration {
    // 2^31 × any initial already saturates; cap the shift to stay defined.
    let factor = 1u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX);
    let base = b.initial.saturating_mul(factor).min(b.max);
    let keep = 1.0 - JITTER * jitter.clamp(0.0, 1.0);
    base.mul_f64(keep)
}

/// Restarts within the last `max_restarts.within`.
#[derive(Debug, Clone, Default)]
pub struct RestartWindow {
    times: VecDeque<Instant>,
}

impl RestartWindow {
    /// An empty window.
    pub fn new() -> Self {
        Self::default()
    }

    /// Record a restart at `now` unless that would make more than
    /// `limit.count` restarts within `limit.within`; `false` means give up.
    pub fn try_restart(&mut self, limit: &MaxRestarts, now: Instant) -> bool {
        while let Some(&t) = self.times.front() {
            if now.saturating_duration_since(t) >= limit.within {
                self.times.pop_front();
            } else {
                break;
            }
        }
        if self.times.len() >= limit.count as usize {
            return false;
        }
        self.times.push_back(now);
        true
    }

    /// Restarts currently inside the window (as of the last call).
    pub fn len(&self) -> usize {
        self.times.len()
    }

    /// No restart inside the window.
    pub fn is_empty(&self) -> bool {
        self.times.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    const B: Backoff = Backoff {
        initial: Duration::from_secs(1),
        max: Duration::from_secs(60),
    };

    #[test]
    fn delay_doubles_from_initial_up_to_max() {
        let table = [
            (0, ms(1000)),
            (1, ms(2000)),
            (2, ms(4000)),
            (5, ms(32000)),
            (6, ms(60000)),
            (7, ms(60000)),
            (40, ms(60000)),
            (u32::MAX, ms(60000)),
        ];
        for (attempt, want) in table {
            assert_eq!(delay(&B, attempt, 0.0), want, "attempt {attempt}");
        }
    }

    #[test]
    fn jitter_only_shortens_by_at_most_a_fifth() {
        assert_eq!(delay(&B, 0, 0.5), ms(900));
        assert_eq!(delay(&B, 6, 1.0), ms(48000));
        // Out-of-range samples are clamped, never lengthen a delay.
        assert_eq!(delay(&B, 0, -3.0), ms(1000));
        assert_eq!(delay(&B, 0, 7.0), ms(800));
    }

    #[test]
    fn delays_grow_whatever_the_jitter_until_the_ceiling() {
        for attempt in 0..5 {
            let longest_now = delay(&B, attempt, 0.0);
            let shortest_next = delay(&B, attempt + 1, 1.0);
            assert!(shortest_next > longest_now, "attempt {attempt}");
        }
    }

    #[test]
    fn a_run_is_stable_after_the_longer_of_ten_seconds_and_max() {
        assert_eq!(stable_after(&B), Duration::from_secs(60));
        let short = Backoff {
            initial: ms(100),
            max: ms(2000),
        };
        assert_eq!(stable_after(&short), Duration::from_secs(10));
    }

    #[test]
    fn the_window_gives_up_past_count_restarts_within_the_period() {
        let limit = MaxRestarts {
            count: 3,
            within: Duration::from_secs(60),
        };
        let t0 = Instant::now();
        let mut w = RestartWindow::new();
        // (seconds after t0, allowed?)
        let table = [
            (0, true),
            (10, true),
            (20, true),
            (30, false), // a 4th within 60 s
            (59, false),
            (60, true), // the restart at 0 s has left the window
            (65, false),
            (70, true), // the one at 10 s left too
        ];
        for (s, allowed) in table {
            assert_eq!(
                w.try_restart(&limit, t0 + Duration::from_secs(s)),
                allowed,
                "restart at {s}s"
            );
        }
    }

    #[test]
    fn count_zero_allows_no_restart() {
        let limit = MaxRestarts {
            count: 0,
            within: Duration::from_secs(60),
        };
        let mut w = RestartWindow::new();
        assert!(!w.try_restart(&limit, Instant::now()));
        assert!(w.is_empty());
    }
}
