//! One log line per interval for a failure that can repeat many times a
//! second (a failing `accept`, requests refused at a backend's connection
//! cap): the first of a streak is logged at once, the rest once per
//! [`LOG_EVERY`] with the count of those left out. [`Throttle`] is the
//! pure count (the caller says what time it is); [`Throttled`] shares one
//! between the tasks that fail and logs what was left out when the
//! interval ends, even if no later failure comes to carry the count.

use std::sync::{Arc, Mutex, PoisonError};
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

    /// When failures left out since the last line are due to be logged
    /// without a new one (`None`: none are left out).
    fn flush_at(&self) -> Option<Instant> {
        let last = self.last_logged?;
        (self.unlogged > 0).then(|| last + LOG_EVERY)
    }

    /// At `now`: `Some(n)` to log the `n` failures left out, once their
    /// interval has ended (that line counts as the interval's).
    fn flush(&mut self, now: Instant) -> Option<u64> {
        if self.flush_at()? > now {
            return None;
        }
        self.last_logged = Some(now);
        Some(std::mem::take(&mut self.unlogged))
    }
}

/// A [`Throttle`] shared by the tasks whose failures it counts, which also
/// logs (through `report`) the failures left out of the log when their
/// interval ends with no later failure to carry the count. The wait for
/// that is one timer task per interval that left failures out, started
/// by the first of them: never one per failure, and none while each
/// failure is logged as it comes.
pub struct Throttled {
    inner: Arc<Inner>,
}

struct Inner {
    state: Mutex<State>,
    /// Logs `n` failures left out since the last line.
    report: Box<dyn Fn(u64) + Send + Sync>,
}

#[derive(Debug)]
struct State {
    throttle: Throttle,
    /// A timer task waits to flush the count.
    timer: bool,
}

impl Throttled {
    pub fn new(report: impl Fn(u64) + Send + Sync + 'static) -> Self {
        Throttled {
            inner: Arc::new(Inner {
                state: Mutex::new(State {
                    throttle: Throttle::default(),
                    timer: false,
                }),
                report: Box::new(report),
            }),
        }
    }

    /// A failure at `now` (see [`Throttle::failed`]). Left out of the log,
    /// it is logged with the interval's count when the interval ends.
    pub fn failed(&self, now: Instant) -> Option<u64> {
        let mut s = self.inner.lock();
        let logged = s.throttle.failed(now);
        // Outside a runtime (a unit test's plain call) nothing can wait:
        // the count goes out with the next line, as it always did.
        if logged.is_none() && !s.timer {
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                s.timer = true;
                rt.spawn(flush_when_due(self.inner.clone()));
            }
        }
        logged
    }

    /// See [`Throttle::recovered`].
    pub fn recovered(&self) -> Option<u64> {
        self.inner.lock().throttle.recovered()
    }
}

impl Inner {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl std::fmt::Debug for Throttled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Throttled")
            .field("state", &*self.inner.lock())
            .finish_non_exhaustive()
    }
}

/// The timer task of a [`Throttled`]: log the count left out when its
/// interval ends, and end once nothing is left out. The count may have
/// gone out meanwhile with a failure logged as it came, or a recovery may
/// have begun a new streak (a later interval): it looks again each time.
async fn flush_when_due(inner: Arc<Inner>) {
    loop {
        let at = {
            let mut s = inner.lock();
            let Some(at) = s.throttle.flush_at() else {
                s.timer = false;
                return;
            };
            at
        };
        // tokio's clock, so that a unit test's paused clock drives it.
        tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await;
        let now = tokio::time::Instant::now().into_std();
        let flushed = inner.lock().throttle.flush(now);
        if let Some(n) = flushed {
            (inner.report)(n);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::time::Instant as TokioInstant;

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

    /// The count left out of the log reaches it when the interval ends,
    /// with no later failure to carry it, from one timer task for the
    /// whole interval, which ends once the count is out. The clock is
    /// paused: the line comes at the interval's exact end.
    #[tokio::test(start_paused = true)]
    async fn left_out_failures_are_logged_when_their_interval_ends() {
        let lines = Arc::new(Mutex::new(Vec::new()));
        let seen = lines.clone();
        let t = Throttled::new(move |n| seen.lock().unwrap().push((n, TokioInstant::now())));
        let t0 = TokioInstant::now();
        let at = |ms| (t0 + Duration::from_millis(ms)).into_std();
        assert_eq!(t.failed(at(0)), Some(1));
        for ms in [100, 200, 300] {
            tokio::time::sleep_until(t0 + Duration::from_millis(ms)).await;
            assert_eq!(t.failed(at(ms)), None);
        }
        // One timer for the three left out (the test holds the other
        // reference).
        assert_eq!(Arc::strong_count(&t.inner), 2);
        tokio::time::sleep_until(t0 + LOG_EVERY - Duration::from_millis(1)).await;
        assert!(
            lines.lock().unwrap().is_empty(),
            "logged before the interval ended"
        );
        tokio::time::sleep_until(t0 + LOG_EVERY + Duration::from_millis(1)).await;
        assert_eq!(*lines.lock().unwrap(), [(3, t0 + LOG_EVERY)]);
        // Nothing is left out: the timer task is gone, and no more lines.
        assert_eq!(Arc::strong_count(&t.inner), 1);
        tokio::time::sleep(3 * LOG_EVERY).await;
        assert_eq!(lines.lock().unwrap().len(), 1);
        // The flush was the interval's line: the next failure, an
        // interval later, is logged at once.
        let later = LOG_EVERY.as_millis() as u64 * 4;
        assert_eq!(t.failed(at(later)), Some(1));
    }

    /// A count carried by a failure logged as it came leaves the timer
    /// nothing to flush.
    #[tokio::test(start_paused = true)]
    async fn a_count_logged_with_a_failure_is_not_flushed_again() {
        let lines = Arc::new(Mutex::new(Vec::new()));
        let seen = lines.clone();
        let t = Throttled::new(move |n| seen.lock().unwrap().push(n));
        let t0 = TokioInstant::now();
        assert_eq!(t.failed(t0.into_std()), Some(1));
        assert_eq!(t.failed(t0.into_std()), None);
        // The next failure comes when the interval ends, before the timer
        // task runs (the caller's clock may be ahead of the timer's), and
        // carries the count itself.
        assert_eq!(t.failed((t0 + LOG_EVERY).into_std()), Some(2));
        tokio::time::sleep(2 * LOG_EVERY).await;
        assert_eq!(*lines.lock().unwrap(), Vec::<u64>::new());
        assert_eq!(Arc::strong_count(&t.inner), 1);
    }
}
