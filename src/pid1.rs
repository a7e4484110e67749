//! When stackctl is PID 1, it splits in two, the way tini runs an app: a
//! tiny PID 1 that only forwards signals and reaps, and the real stackctl as
//! its only child.
//!
//! Why: PID 1 lives as long as the container, and whatever it touched stays
//! resident; forking before anything else runs keeps PID 1 at the size of
//! the C runtime (the bench's PID-1 memory), while the stack's own work —
//! gateway, git, SQLite — happens in a process that can grow and shrink. The
//! child sets `PR_SET_CHILD_SUBREAPER` (see the supervisor's reaper), so the
//! services' orphans still reparent to stackctl and are reaped there; PID 1
//! reaps only what escapes that, and exits with the child's status (128+n
//! for a signal), which is what `docker` reports.
//!
//! `STACKCTL_NO_PID1_SPLIT=1` keeps a single process.

use nix::sys::signal::{kill, SigSet, SigmaskHow, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{fork, ForkResult, Pid};

/// Signals PID 1 passes on to stackctl.
const FORWARDED: &[Signal] = &[
    Signal::SIGTERM,
    Signal::SIGINT,
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
];

/// In PID 1: fork. Returns `Some(exit code)` in the PID-1 parent once the
/// child has exited, and `None` in the child (or when not PID 1, or when the
/// split is off or fails), which then runs stackctl as usual.
pub fn split() -> Option<u8> {
    if std::process::id() != 1 || std::env::var_os("STACKCTL_NO_PID1_SPLIT").is_some() {
        return None;
    }
    let mut set = SigSet::empty();
    for s in FORWARDED {
        set.add(*s);
    }
    set.add(Signal::SIGCHLD);
    // Blocked before the fork, so a signal that arrives in between waits
    // for `sigwait` instead of taking the default action (PID 1 ignores
    // unhandled signals, and a lost SIGTERM would hang `docker stop`).
    let mut old = SigSet::empty();
    if nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&set), Some(&mut old)).is_err()
    {
        return None;
    }
    // SAFETY: called first thing in `main`, while the process has a single
    // thread, so the child may run any code after the fork.
    match unsafe { fork() } {
        Ok(ForkResult::Child) => {
            let _ = nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&old), None);
            None
        }
        Ok(ForkResult::Parent { child }) => Some(forward_and_reap(child, &set)),
        Err(_) => {
            // Could not fork: run unsplit.
            let _ = nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&old), None);
            None
        }
    }
}

/// PID 1's whole life: pass signals on, reap, and return the child's status.
fn forward_and_reap(child: Pid, set: &SigSet) -> u8 {
    loop {
        let Ok(sig) = set.wait() else {
            continue;
        };
        if sig != Signal::SIGCHLD {
            let _ = kill(child, sig);
            continue;
        }
        loop {
            match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) if pid == child => return code as u8,
                Ok(WaitStatus::Signaled(pid, sig, _)) if pid == child => {
                    return 128u8.wrapping_add(sig as u8)
                }
                Ok(WaitStatus::StillAlive) => break,
                // An orphan that escaped the subreaper: reaped, nothing else.
                Ok(_) => continue,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(_) => break,
            }
        }
    }
}
