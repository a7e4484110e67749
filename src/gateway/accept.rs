//! What the accept loop does when `accept` fails (pure). Out of file
//! descriptors (or kernel memory), every retry fails at once: accepting
//! pauses for [`EXHAUSTED_PAUSE`] (nginx's 500 ms) while open connections
//! go on being served, and the failure is logged once per [`LOG_EVERY`]
//! with a count, not once per try.

use std::io;
use std::time::{Duration, Instant};

/// How long accepting pauses after running out of descriptors.
pub const EXHAUSTED_PAUSE: Duration = Duration::from_millis(500);
/// How long a pause after any other failure that is not the client's.
pub const OTHER_PAUSE: Duration = Duration::from_millis(50);
/// At most one log line per failure streak and interval.
pub const LOG_EVERY: Duration = Duration::from_secs(10);

/// What to do after a failed `accept`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The process or the system is out of descriptors or memory: pause.
    Exhausted,
    /// One would-be client's problem (it reset the connection before it
    /// was accepted): go on at once, not worth a warning.
    Client,
    /// Anything else: pause briefly, so a lasting error cannot spin.
    Other,
}

/// Sort an `accept` error.
pub fn classify(e: &io::Error) -> Failure {
    match e.raw_os_error() {
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM) => Failure::Exhausted,
        Some(libc::ECONNABORTED | libc::ECONNRESET | libc::EPROTO | libc::EPERM | libc::EINTR) => {
            Failure::Client
        }
        _ => Failure::Other,
    }
}

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

    /// An `accept` succeeded: `Some(n)` when it ends a streak of `n`
    /// failures (worth one line saying so).
    pub fn accepted(&mut self) -> Option<u64> {
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
    fn running_out_of_descriptors_pauses_and_a_reset_does_not() {
        let e = |n| io::Error::from_raw_os_error(n);
        assert_eq!(classify(&e(libc::EMFILE)), Failure::Exhausted);
        assert_eq!(classify(&e(libc::ENFILE)), Failure::Exhausted);
        assert_eq!(classify(&e(libc::ECONNABORTED)), Failure::Client);
        assert_eq!(classify(&e(libc::EBADF)), Failure::Other);
        assert_eq!(classify(&io::Error::other("x")), Failure::Other);
    }

    #[test]
    fn a_streak_of_failures_is_logged_once_per_interval() {
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let mut t = Throttle::default();
        assert_eq!(t.accepted(), None);
        assert_eq!(t.failed(at(0)), Some(1));
        // Every 500 ms for 10 s: silent until the interval has passed.
        for ms in (500..10_000).step_by(500) {
            assert_eq!(t.failed(at(ms)), None, "{ms}");
        }
        assert_eq!(t.failed(at(10_000)), Some(20));
        assert_eq!(t.failed(at(10_500)), None);
        assert_eq!(t.accepted(), Some(22));
        assert_eq!(t.accepted(), None);
        // A new streak is logged at once.
        assert_eq!(t.failed(at(11_000)), Some(1));
    }
}
