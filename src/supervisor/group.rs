//! One run's process group, from spawn until it is really empty.
//!
//! A run is over only when its whole group is gone, not when the leader
//! exits: process-compose #520 cancelled the SIGKILL escalation once the
//! leader died, leaving children that ignored SIGTERM running forever. Here:
//!
//! - a stop sends the signal to the group, SIGKILLs the group at the
//!   deadline, and waits until `kill(-pgid, 0)` says ESRCH;
//! - a leader that exits on its own while others of its group live on gets
//!   the same treatment for the survivors (stop_signal, then SIGKILL), so a
//!   restart never runs beside the remains of the previous run.
//!
//! Processes that left the group (`setsid`, `setpgid`) are out of reach, as
//! with any supervisor; when stackctl is PID 1 they die with the container.

use std::sync::Arc;
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::exit::{signal_name, Exit};

/// How long to wait for a SIGKILLed group to disappear before reporting it
/// and moving on (processes stuck in uninterruptible sleep cannot die).
const KILL_GRACE: Duration = Duration::from_secs(2);

/// Longest pause between checks that the group is empty.
const MAX_POLL: Duration = Duration::from_millis(50);

/// An order for a running group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ctl {
    /// Send `signal` to the group; SIGKILL it after `timeout`.
    Stop {
        /// The signal number.
        signal: i32,
        /// Time before SIGKILL (an earlier deadline already set stays).
        timeout: Duration,
    },
    /// SIGKILL the group now.
    Kill,
}

/// What a group needs to know about its service.
#[derive(Debug, Clone)]
pub struct GroupCfg {
    /// The service name, for logs.
    pub name: Arc<str>,
    /// The group id (the leader's pid).
    pub pgid: i32,
    /// `stop_signal`, used for survivors of the leader.
    pub stop_signal: i32,
    /// `stop_timeout`, used for survivors of the leader.
    pub stop_timeout: Duration,
}

/// Watch the group until it is empty; returns how the leader ended.
///
/// The channels are borrowed, not taken: if this panics (a bug), the
/// caller still holds them and can watch the group again, and the
/// supervisor sends its order again (the one being carried out may be
/// lost with the panic), so the ordered stop still reaches the group
/// ([`crate::supervisor::run()`]).
pub async fn supervise(
    cfg: GroupCfg,
    leader: &mut oneshot::Receiver<Exit>,
    ctl: &mut mpsc::UnboundedReceiver<Ctl>,
) -> Exit {
    let GroupCfg { name, pgid, .. } = &cfg;
    let mut exit: Option<Exit> = None;
    let mut kill_at: Option<Instant> = None;
    let mut killed_at: Option<Instant> = None;
    let mut ctl_open = true;
    let mut poll = Duration::from_millis(1);
    loop {
        if let Some(e) = exit {
            if group_gone(*pgid) {
                return e;
            }
            if kill_at.is_none() && killed_at.is_none() {
                tracing::warn!(service = %name, pgid, "leader exited but its process group lives on; stopping the rest");
                signal_group(&cfg, cfg.stop_signal);
                kill_at = Some(Instant::now() + cfg.stop_timeout);
            }
            if let Some(t) = killed_at {
                if t.elapsed() > KILL_GRACE {
                    tracing::error!(service = %name, pgid, "process group survives SIGKILL (uninterruptible sleep?); giving up on it");
                    return e;
                }
            }
        }
        tokio::select! {
            r = &mut *leader, if exit.is_none() => {
                exit = Some(r.unwrap_or_else(|_| {
                    // Only if the reaper dropped our entry, which it does
                    // not; assume the worst rather than wait forever.
                    tracing::warn!(service = %name, "exit status lost");
                    Exit::Signaled(libc::SIGKILL)
                }));
                poll = Duration::from_millis(1);
            }
            c = ctl.recv(), if ctl_open => match c {
                Some(Ctl::Stop { signal, timeout }) if killed_at.is_none() => {
                    // The test hooks: a watcher that panics on its stop
                    // order, once or every time.
                    crate::fault::panic_once("group");
                    crate::fault::panic_always("group-always");
                    signal_group(&cfg, signal);
                    let at = Instant::now() + timeout;
                    kill_at = Some(kill_at.map_or(at, |k| k.min(at)));
                }
                Some(Ctl::Stop { .. }) => {}
                Some(Ctl::Kill) => {
                    if killed_at.is_none() {
                        signal_group(&cfg, libc::SIGKILL);
                        killed_at = Some(Instant::now());
                    }
                }
                None => ctl_open = false,
            },
            _ = sleep_until(kill_at), if kill_at.is_some() && killed_at.is_none() => {
                tracing::warn!(service = %name, pgid, "did not stop in time; sending SIGKILL to its process group");
                signal_group(&cfg, libc::SIGKILL);
                killed_at = Some(Instant::now());
            }
            _ = tokio::time::sleep(poll), if exit.is_some() => {
                poll = (poll * 2).min(MAX_POLL);
            }
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Send `sig` to the group (`ESRCH`, an empty group, is no error).
pub fn signal_group(cfg: &GroupCfg, sig: i32) {
    let signal = match Signal::try_from(sig) {
        Ok(s) => s,
        Err(_) => {
            // The manifest only accepts named signals; fall back to TERM.
            tracing::warn!(service = %cfg.name, signal = sig, "unknown stop signal; using SIGTERM");
            Signal::SIGTERM
        }
    };
    match killpg(Pid::from_raw(cfg.pgid), signal) {
        Ok(()) => {
            tracing::debug!(service = %cfg.name, pgid = cfg.pgid, signal = %signal_name(sig), "signalled process group")
        }
        Err(Errno::ESRCH) => {}
        Err(e) => {
            tracing::warn!(service = %cfg.name, pgid = cfg.pgid, error = %e, "cannot signal process group")
        }
    }
}

/// No process (zombies included) is left in group `pgid`.
pub fn group_gone(pgid: i32) -> bool {
    // Signal 0 checks existence without sending anything; EPERM means
    // someone is there that we may not signal (it still counts).
    matches!(killpg(Pid::from_raw(pgid), None), Err(Errno::ESRCH))
}
