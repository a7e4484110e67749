//! A reusable deadline for a connection that waits again and again: the
//! client side between requests (`timeouts.idle`, `header_read`) and a
//! backend connection for each response head (`timeouts.response`).
//!
//! A new `Sleep` per wait costs a registration and a removal under the
//! timer's lock; moving one `Sleep` later is a lock-free update in tokio,
//! but still a visible share of a proxied request's cost when done twice
//! per request. So, as nginx does (it leaves a timer alone when it would
//! move by less than 300 ms), a deadline that would move later by less
//! than a small slack stays where it is: the wait ends at most that slack
//! early. An earlier deadline is always set. Whether to move is decided on
//! the coarse monotonic clock, which is several times cheaper to read
//! than the precise one.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::{Instant, Sleep};

/// The most a deadline may end early (see the module docs).
const MAX_SLACK: Duration = Duration::from_millis(500);

/// Now, on the coarse monotonic clock (a few milliseconds of resolution,
/// plenty for limits of seconds).
#[cfg(not(test))]
pub fn coarse_now() -> Duration {
    kernel_coarse_now()
}

/// The kernel's coarse monotonic clock, since boot.
fn kernel_coarse_now() -> Duration {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC_COARSE)
        .map(Duration::from)
        .unwrap_or_default()
}

/// Under the crate's unit tests, tokio's clock instead, so that what
/// reads the coarse clock (deadline slack, tunnel and pool idleness) runs
/// on tokio's paused clock in tests whose subject is time. Only `cfg(test)`
/// builds take this path: the binary and the integration tests keep the
/// cheap kernel read, with no branch added.
#[cfg(test)]
pub fn coarse_now() -> Duration {
    use std::sync::OnceLock;
    // Roughly boot time, the kernel clock's origin: earlier than any
    // instant a paused clock in this process can show.
    static ORIGIN: OnceLock<std::time::Instant> = OnceLock::new();
    let origin = ORIGIN.get_or_init(|| {
        let now = std::time::Instant::now();
        now.checked_sub(kernel_coarse_now()).unwrap_or(now)
    });
    Instant::now().into_std().saturating_duration_since(*origin)
}

/// One timer, moved from wait to wait.
#[derive(Debug)]
pub struct Deadline {
    sleep: Pin<Box<Sleep>>,
    /// Where `sleep` ends, on the coarse clock.
    at: Duration,
}

impl Deadline {
    /// A deadline `limit` from now.
    pub fn after(limit: Duration) -> Self {
        Deadline {
            sleep: Box::pin(tokio::time::sleep(limit)),
            at: coarse_now() + limit,
        }
    }

    /// End the wait `limit` from now, give or take the slack: at most
    /// `limit / 16`, at most [`MAX_SLACK`].
    pub fn reset(&mut self, limit: Duration) {
        let want = coarse_now() + limit;
        let slack = (limit / 16).min(MAX_SLACK);
        if want < self.at || want > self.at + slack {
            self.at = want;
            self.sleep.as_mut().reset(Instant::now() + limit);
        }
    }

    /// Whether the deadline has passed (registering the waker if not).
    pub fn poll_passed(&mut self, cx: &mut Context<'_>) -> bool {
        self.sleep.as_mut().poll(cx).is_ready()
    }
}

impl Future for Deadline {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        self.sleep.as_mut().poll(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// Whether `d` has passed, looked at once.
    async fn passed(d: &mut Deadline) -> bool {
        std::future::poll_fn(|cx| Poll::Ready(d.poll_passed(cx))).await
    }

    // tokio's clock is paused (it moves only when advanced), so where the
    // timer ends is exact, and the coarse clock that decides whether to
    // move it follows it (see `coarse_now`).
    #[tokio::test(start_paused = true)]
    async fn a_deadline_moves_later_only_past_the_slack_and_earlier_always() {
        let start = Instant::now();
        let mut d = Deadline::after(ms(60_000));
        assert_eq!(d.sleep.deadline(), start + ms(60_000));
        // Asked again 100 ms later: within the slack, left alone.
        tokio::time::advance(ms(100)).await;
        d.reset(ms(60_000));
        assert_eq!(d.sleep.deadline(), start + ms(60_000));
        // Earlier: always moved.
        d.reset(ms(1_000));
        assert_eq!(d.sleep.deadline(), start + ms(1_100));
        // Later by more than the slack: moved.
        d.reset(ms(60_000));
        assert_eq!(d.sleep.deadline(), start + ms(60_100));
    }

    #[tokio::test(start_paused = true)]
    async fn a_deadline_passes_at_its_limit_and_not_before() {
        let mut d = Deadline::after(ms(5_000));
        d.reset(ms(2_000));
        tokio::time::advance(ms(1_999)).await;
        assert!(!passed(&mut d).await, "passed early");
        tokio::time::advance(ms(1)).await;
        assert!(passed(&mut d).await, "did not pass at its limit");
    }
}
