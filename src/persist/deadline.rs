//! Deadlines and cancellation for blocking persistence work.
//!
//! `up` must exit inside `shutdown_timeout` even when the remote accepts
//! connections and never answers (issue 12). libgit2, the blob stores'
//! blocking HTTP client and file I/O cannot be interrupted from outside, so
//! the blocking work carries its own [`Limit`] (an optional deadline and a
//! cancel flag), entered with [`Limit::enter`] on the thread that does the
//! work. Every network step reads it there: libgit2's connect and read
//! timeouts are clamped to the time left before each connection opens
//! ([`clamp`]), transfer callbacks abort once it is spent ([`check`]),
//! retry sleeps end early ([`sleep`]), blob-store requests get their
//! timeouts clamped, and a snapshot checks between files.
//!
//! A thread-local rather than a parameter, like [`super::blob::counting`]:
//! the limit has to reach libgit2 callbacks and the blob stores' requests
//! several layers down, and each blocking operation runs on one thread.
//! What cannot be interrupted (a read already waiting on a silent socket
//! with the timeout it opened with) is bounded by that timeout, and the
//! async shell stops waiting at its own deadline anyway.

use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Why a limited operation gave up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Stop {
    /// [`Limit::cancel`] was called: another operation must run now.
    #[error("cancelled because stackctl is stopping")]
    Cancelled,
    /// The deadline passed.
    #[error("the shutdown budget (`shutdown_timeout`) ran out")]
    OutOfTime,
}

#[derive(Debug, Default)]
struct Inner {
    deadline: Option<Instant>,
    cancelled: AtomicBool,
}

/// A deadline (or none) and a cancel flag, shared between the async shell
/// that may cancel and the blocking thread that checks.
#[derive(Debug, Clone, Default)]
pub struct Limit(Arc<Inner>);

impl Limit {
    /// No deadline; stopped only by [`Limit::cancel`].
    pub fn new() -> Self {
        Self::default()
    }

    /// Spent at `deadline` (or when cancelled before).
    pub fn until(deadline: Instant) -> Self {
        Limit(Arc::new(Inner {
            deadline: Some(deadline),
            cancelled: AtomicBool::new(false),
        }))
    }

    /// Ask the work to stop at its next check.
    pub fn cancel(&self) {
        // Relaxed: the flag orders nothing else; the worker only reads it.
        self.0.cancelled.store(true, Ordering::Relaxed);
    }

    /// Whether the work should stop, at `now`.
    pub fn stopped(&self, now: Instant) -> Option<Stop> {
        if self.0.cancelled.load(Ordering::Relaxed) {
            return Some(Stop::Cancelled);
        }
        match self.0.deadline {
            Some(d) if now >= d => Some(Stop::OutOfTime),
            _ => None,
        }
    }

    /// Run `f` on this thread with this limit in force (the previous one,
    /// if any, comes back afterwards, also on unwind).
    pub fn enter<T>(&self, f: impl FnOnce() -> T) -> T {
        struct Restore(Option<Limit>);
        impl Drop for Restore {
            fn drop(&mut self) {
                let previous = self.0.take();
                CURRENT.with(|c| *c.borrow_mut() = previous);
            }
        }
        let previous = CURRENT.with(|c| c.borrow_mut().replace(self.clone()));
        let _restore = Restore(previous);
        f()
    }
}

thread_local! {
    /// The limit of the operation running on this thread.
    static CURRENT: RefCell<Option<Limit>> = const { RefCell::new(None) };
}

fn current() -> Option<Limit> {
    CURRENT.with(|c| c.borrow().clone())
}

/// `Err` when the current operation should stop (no limit: never).
pub fn check() -> Result<(), Stop> {
    match current().and_then(|l| l.stopped(Instant::now())) {
        Some(stop) => Err(stop),
        None => Ok(()),
    }
}

/// [`check`], counting a deadline due within `slack` as passed. A timeout
/// [`clamp`]ed to the deadline is handed to libgit2 in whole milliseconds
/// (rounded down) and run by its own clock, so it can fire a moment before
/// the deadline: the failure it causes is still the deadline's.
pub fn check_with_slack(slack: Duration) -> Result<(), Stop> {
    match current().and_then(|l| l.stopped(Instant::now() + slack)) {
        Some(stop) => Err(stop),
        None => Ok(()),
    }
}

/// `timeout`, shortened to what is left of the current deadline.
pub fn clamp(timeout: Duration) -> Duration {
    let deadline = current().and_then(|l| l.0.deadline);
    clamp_at(timeout, Instant::now(), deadline)
}

/// [`clamp`] at `now`, pure. Never zero: libgit2 reads 0 as "no timeout".
pub fn clamp_at(timeout: Duration, now: Instant, deadline: Option<Instant>) -> Duration {
    let left = deadline.map_or(timeout, |d| d.saturating_duration_since(now));
    timeout.min(left).max(Duration::from_millis(1))
}

/// Sleep `d` before a retry, unless the current operation must stop first:
/// then return at once (a retry that cannot start before the deadline is
/// not worth waiting for) or as soon as it is cancelled.
pub fn sleep(d: Duration) -> Result<(), Stop> {
    check()?;
    let Some(limit) = current() else {
        std::thread::sleep(d);
        return Ok(());
    };
    let until = Instant::now() + d;
    if limit.0.deadline.is_some_and(|dl| until >= dl) {
        return Err(Stop::OutOfTime);
    }
    // Short slices: a cancel is seen within one.
    loop {
        let now = Instant::now();
        if let Some(stop) = limit.stopped(now) {
            return Err(stop);
        }
        if now >= until {
            return Ok(());
        }
        std::thread::sleep((until - now).min(Duration::from_millis(50)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn timeouts_shrink_to_the_time_left_and_never_reach_zero() {
        let t0 = Instant::now();
        let table = [
            // (timeout, deadline after t0, expected)
            (ms(60_000), None, ms(60_000)),
            (ms(60_000), Some(ms(2_000)), ms(2_000)),
            (ms(500), Some(ms(2_000)), ms(500)),
            (ms(60_000), Some(ms(0)), ms(1)),
        ];
        for (timeout, deadline, want) in table {
            let got = clamp_at(timeout, t0, deadline.map(|d| t0 + d));
            assert_eq!(got, want, "{timeout:?} {deadline:?}");
        }
        // A deadline already past is as short as it gets.
        assert_eq!(clamp_at(ms(60_000), t0 + ms(5), Some(t0)), ms(1));
    }

    #[test]
    fn a_limit_is_spent_when_cancelled_or_past_its_deadline() {
        let t0 = Instant::now();
        let l = Limit::until(t0 + ms(100));
        assert_eq!(l.stopped(t0), None);
        assert_eq!(l.stopped(t0 + ms(100)), Some(Stop::OutOfTime));
        let l = Limit::new();
        assert_eq!(l.stopped(t0 + ms(1_000_000)), None);
        l.clone().cancel();
        assert_eq!(l.stopped(t0), Some(Stop::Cancelled));
    }

    #[test]
    fn a_deadline_due_within_the_slack_counts_as_passed() {
        let l = Limit::until(Instant::now() + Duration::from_secs(2));
        assert_eq!(l.enter(|| check_with_slack(ms(50))), Ok(()));
        assert_eq!(
            l.enter(|| check_with_slack(Duration::from_secs(3))),
            Err(Stop::OutOfTime)
        );
        // No limit: never stopped, whatever the slack.
        assert_eq!(check_with_slack(Duration::from_secs(3600)), Ok(()));
    }

    #[test]
    fn the_limit_holds_only_inside_enter() {
        let l = Limit::new();
        l.cancel();
        assert_eq!(check(), Ok(()));
        assert_eq!(l.enter(check), Err(Stop::Cancelled));
        assert_eq!(check(), Ok(()));
        // Nested: the inner limit, then the outer one again.
        let outer = Limit::new();
        outer.enter(|| {
            assert_eq!(l.enter(check), Err(Stop::Cancelled));
            assert_eq!(check(), Ok(()));
        });
    }

    #[test]
    fn a_retry_sleep_past_the_deadline_returns_at_once() {
        let l = Limit::until(Instant::now() + Duration::from_secs(1));
        let started = Instant::now();
        assert_eq!(
            l.enter(|| sleep(Duration::from_secs(5))),
            Err(Stop::OutOfTime)
        );
        assert!(started.elapsed() < ms(500));
        assert_eq!(l.enter(|| sleep(ms(1))), Ok(()));
    }

    #[test]
    fn a_retry_sleep_ends_when_cancelled() {
        let l = Limit::new();
        let other = l.clone();
        let canceller = std::thread::spawn(move || {
            std::thread::sleep(ms(100));
            other.cancel();
        });
        let started = Instant::now();
        assert_eq!(
            l.enter(|| sleep(Duration::from_secs(30))),
            Err(Stop::Cancelled)
        );
        assert!(started.elapsed() < Duration::from_secs(5));
        canceller.join().unwrap();
    }
}
