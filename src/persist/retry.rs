//! The one retry policy of persistence: remote operations (fetch, push,
//! lease), blob transfers (GitHub Releases, Git LFS) and the restore at
//! start all wait by the same schedule, an exponential backoff from
//! `backon`: the first delay, doubling, capped at the longest delay.
//!
//! Blocking retries sleep through [`deadline::sleep`], so a shutdown cuts a
//! wait short; the error returned then is the last one the operation hit
//! (what the user must fix), never a bare "stopped".
//!
//! The first delay is [`FIRST_DELAY_ENV`] when set (`STACKCTL_RETRY_DELAY=100ms`),
//! else one second: a test of an unreachable remote need not wait seconds
//! per attempt.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};

use super::deadline;

/// Overrides the first retry delay of every persistence retry.
pub const FIRST_DELAY_ENV: &str = "STACKCTL_RETRY_DELAY";
/// The first retry delay without [`FIRST_DELAY_ENV`].
pub const DEFAULT_FIRST_DELAY: Duration = Duration::from_secs(1);

/// The first retry delay: [`FIRST_DELAY_ENV`] when set and valid, else
/// [`DEFAULT_FIRST_DELAY`].
pub fn first_delay() -> Duration {
    std::env::var(FIRST_DELAY_ENV)
        .ok()
        .and_then(|v| crate::manifest::units::parse_duration(v.trim()).ok())
        .unwrap_or(DEFAULT_FIRST_DELAY)
}

/// How often and how long to retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Attempts in all (the first one included); `u32::MAX`: no end.
    pub attempts: u32,
    /// The first delay (doubles).
    pub initial: Duration,
    /// The longest delay.
    pub max: Duration,
}

impl Policy {
    /// The delays between attempts: `attempts - 1` of them.
    pub fn delays(&self) -> impl Iterator<Item = Duration> {
        let builder = ExponentialBuilder::new()
            .with_factor(2.0)
            .with_min_delay(self.initial.min(self.max))
            .with_max_delay(self.max);
        let builder = match self.attempts {
            u32::MAX => builder.without_max_times(),
            n => builder.with_max_times(n.saturating_sub(1) as usize),
        };
        builder.build()
    }

    /// Run `op` until it succeeds, fails with an error `retryable` refuses,
    /// or the attempts run out; `warn` is told of each failure retried and
    /// the delay before the next attempt. A sleep cut short by the current
    /// operation's deadline or cancel ends the retries with the last error.
    pub fn run<T, E>(
        &self,
        retryable: impl Fn(&E) -> bool,
        mut warn: impl FnMut(&E, Duration),
        mut op: impl FnMut() -> Result<T, E>,
    ) -> Result<T, E> {
        let mut delays = self.delays();
        loop {
            match op() {
                Err(e) if retryable(&e) => match delays.next() {
                    Some(d) => {
                        warn(&e, d);
                        if deadline::sleep(d).is_err() {
                            return Err(e);
                        }
                    }
                    None => return Err(e),
                },
                other => return other,
            }
        }
    }
}

/// Waits `d` unless `stop` fires first; `false` when it did (the async
/// side of the policy, for the restore at start).
pub async fn sleep_or_stop(d: Duration, stop: &tokio_util::sync::CancellationToken) -> bool {
    tokio::select! {
        () = stop.cancelled() => false,
        () = tokio::time::sleep(d) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    fn policy(attempts: u32, initial_ms: u64, max_ms: u64) -> Policy {
        Policy {
            attempts,
            initial: Duration::from_millis(initial_ms),
            max: Duration::from_millis(max_ms),
        }
    }

    fn ms(p: Policy) -> Vec<u128> {
        p.delays().take(10).map(|d| d.as_millis()).collect()
    }

    #[test]
    fn delays_double_up_to_the_cap_one_fewer_than_attempts() {
        assert_eq!(ms(policy(5, 1000, 30_000)), [1000, 2000, 4000, 8000]);
        assert_eq!(ms(policy(6, 500, 3000)), [500, 1000, 2000, 3000, 3000]);
        assert_eq!(ms(policy(3, 5000, 1000)), [1000, 1000]);
        assert!(ms(policy(1, 1000, 1000)).is_empty());
        assert!(ms(policy(0, 1000, 1000)).is_empty());
        assert_eq!(ms(policy(u32::MAX, 1, 4)), [1, 2, 4, 4, 4, 4, 4, 4, 4, 4]);
    }

    #[test]
    fn run_retries_only_what_may_pass_and_returns_the_last_error() {
        let calls = Cell::new(0);
        let warned = Cell::new(0);
        let r: Result<(), u32> = policy(3, 0, 0).run(
            |e| *e < 10,
            |_, _| warned.set(warned.get() + 1),
            || {
                calls.set(calls.get() + 1);
                Err(calls.get())
            },
        );
        assert_eq!((r, calls.get(), warned.get()), (Err(3), 3, 2));
        calls.set(0);
        let r: Result<(), u32> = policy(3, 0, 0).run(|e| *e < 10, |_, _| {}, || Err(10));
        assert_eq!(r, Err(10));
        let r: Result<u32, u32> = policy(3, 0, 0).run(|_| true, |_, _| {}, || Ok(7));
        assert_eq!(r, Ok(7));
    }

    /// A cancelled operation stops retrying at once and says why the last
    /// attempt failed, not "stopped".
    #[test]
    fn a_cut_sleep_ends_with_the_last_error() {
        let limit = deadline::Limit::new();
        limit.cancel();
        let calls = Cell::new(0);
        let r: Result<(), &str> = limit.enter(|| {
            policy(5, 60_000, 60_000).run(
                |_| true,
                |_, _| {},
                || {
                    calls.set(calls.get() + 1);
                    Err("the remote refused the token")
                },
            )
        });
        assert_eq!((r, calls.get()), (Err("the remote refused the token"), 1));
    }

    #[tokio::test(start_paused = true)]
    async fn the_async_wait_sleeps_its_delay_or_ends_at_stop() {
        let stop = tokio_util::sync::CancellationToken::new();
        let start = tokio::time::Instant::now();
        assert!(sleep_or_stop(Duration::from_secs(30), &stop).await);
        assert_eq!(start.elapsed(), Duration::from_secs(30));
        let start = tokio::time::Instant::now();
        let canceller = stop.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(2)).await;
            canceller.cancel();
        });
        assert!(!sleep_or_stop(Duration::from_secs(60), &stop).await);
        assert_eq!(start.elapsed(), Duration::from_secs(2));
    }
}
