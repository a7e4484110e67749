//! How a process ended, kept exactly as the kernel reported it.
//!
//! House habit 11: a signal death stays a signal death (`Signaled(9)`), it is
//! never folded into a fake exit code like -137 or 137; turning it into
//! `128 + n` is left to whoever needs a shell-style number.

use std::fmt;

use nix::sys::signal::Signal;

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// It called `exit(code)`.
    Exited(i32),
    /// It was killed by this signal number.
    Signaled(i32),
}

impl Exit {
    /// Decode a raw `waitpid` status; `None` for stop/continue reports.
    pub fn from_wait_status(status: libc::c_int) -> Option<Exit> {
        if libc::WIFEXITED(status) {
            Some(Exit::Exited(libc::WEXITSTATUS(status)))
        } else if libc::WIFSIGNALED(status) {
            Some(Exit::Signaled(libc::WTERMSIG(status)))
        } else {
            None
        }
    }

    /// `exit 0`.
    pub fn success(self) -> bool {
        self == Exit::Exited(0)
    }
}

/// The conventional name of a signal number (`SIGKILL`), or `signal 42` for
/// numbers nix has no name for (real-time signals).
pub fn signal_name(sig: i32) -> String {
    match Signal::try_from(sig) {
        Ok(s) => s.as_str().to_string(),
        Err(_) => format!("signal {sig}"),
    }
}

impl fmt::Display for Exit {
    /// `exited 1` / `killed by SIGKILL`: the text `status` shows.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Exit::Exited(code) => write!(f, "exited {code}"),
            Exit::Signaled(sig) => write!(f, "killed by {}", signal_name(*sig)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_and_signals_are_shown_as_status_text() {
        let cases = [
            (Exit::Exited(0), "exited 0"),
            (Exit::Exited(1), "exited 1"),
            (Exit::Signaled(9), "killed by SIGKILL"),
            (Exit::Signaled(15), "killed by SIGTERM"),
            (Exit::Signaled(40), "killed by signal 40"),
        ];
        for (exit, text) in cases {
            assert_eq!(exit.to_string(), text);
        }
    }

    #[test]
    fn raw_wait_statuses_decode_without_losing_the_signal() {
        // Linux encoding: exit code in bits 8..16, signal in bits 0..7.
        assert_eq!(Exit::from_wait_status(3 << 8), Some(Exit::Exited(3)));
        assert_eq!(Exit::from_wait_status(9), Some(Exit::Signaled(9)));
        // A core dump flag does not change the signal.
        assert_eq!(Exit::from_wait_status(11 | 0x80), Some(Exit::Signaled(11)));
        // Stopped (0x7f in the low byte) is not an ending.
        assert_eq!(Exit::from_wait_status((19 << 8) | 0x7f), None);
    }

    #[test]
    fn only_exit_zero_is_success() {
        assert!(Exit::Exited(0).success());
        assert!(!Exit::Exited(1).success());
        assert!(!Exit::Signaled(15).success());
    }
}
