//! What the accept loop does when `accept` fails (pure). Out of file
//! descriptors (or kernel memory), every retry fails at once: accepting
//! pauses for [`EXHAUSTED_PAUSE`] (nginx's 500 ms) while open connections
//! go on being served, and the failure is logged once per
//! [`LOG_EVERY`](super::throttle::LOG_EVERY) with a count, not once per
//! try (see [`super::throttle`]).

use std::io;
use std::time::Duration;

/// How long accepting pauses after running out of descriptors.
pub const EXHAUSTED_PAUSE: Duration = Duration::from_millis(500);
/// How long a pause after any other failure that is not the client's.
pub const OTHER_PAUSE: Duration = Duration::from_millis(50);

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
}
