//! The reaper: the one place that calls `waitpid`.
//!
//! stackctl is PID 1 in a container, so every orphan in the container ends up
//! as its child and must be reaped or it stays a zombie forever. Outside a
//! container it sets `PR_SET_CHILD_SUBREAPER` so the same holds for its own
//! subtree (tests rely on that).
//!
//! Reaping uses `waitpid(-1, WNOHANG)`, which takes *any* child's status. A
//! second waiter (`tokio::process::Child`, `std::process::Child::wait`,
//! `duct`) would race it and lose statuses, so every process stackctl starts
//! goes through [`Reaper::spawn`], which registers the pid in the table under
//! the same lock the reaper holds around `waitpid`. A child that exits before
//! `spawn` returns is therefore found in the table, never taken for an orphan;
//! pids not in the table are adopted orphans, reaped and logged at debug.

use std::collections::HashMap;
use std::io;
use std::process::{Child, Command};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::sync::oneshot;

use super::exit::Exit;
use crate::shutdown::{catch_panic, describe_panic};

/// Most statuses collected per lock hold, so a fork bomb of orphans cannot
/// keep the lock (and a runtime worker) forever; the loop yields and goes on.
const REAP_BATCH: usize = 1024;

/// Handle to the process reaper; cheap to clone.
#[derive(Debug, Clone)]
pub struct Reaper {
    table: Arc<Mutex<Table>>,
    /// The first panic of the reaping task, described where it happened
    /// (see [`Reaper::panicked`]).
    panic: Arc<tokio::sync::watch::Sender<Option<String>>>,
}

/// Pids stackctl started and who waits for each.
#[derive(Debug, Default)]
struct Table {
    waiters: HashMap<i32, oneshot::Sender<Exit>>,
}

/// A process started through [`Reaper::spawn`].
#[derive(Debug)]
pub struct Spawned {
    /// The `std` child, for its pipes only: never `wait` on it (the reaper
    /// owns the status).
    pub child: Child,
    /// Resolves once the reaper has collected the process's status.
    pub exit: oneshot::Receiver<Exit>,
}

impl Spawned {
    /// The process id.
    pub fn pid(&self) -> i32 {
        // Linux pids fit in i32 (pid_max is at most 2^22).
        self.child.id() as i32
    }
}

impl Reaper {
    /// Become a child subreaper and start reaping on SIGCHLD. Call once,
    /// first thing in `up`, from inside the tokio runtime.
    pub fn start() -> io::Result<Reaper> {
        // Not fatal: as PID 1 orphans come to us anyway; elsewhere (an old
        // kernel, a seccomp profile) we only lose reaping of grandchildren.
        if let Err(e) = nix::sys::prctl::set_child_subreaper(true) {
            tracing::warn!(error = %e, "cannot become a child subreaper; orphans of services may stay zombies");
        }
        super::fds::seal_inherited_fds();
        let mut sigchld = signal(SignalKind::child())?;
        let reaper = Reaper {
            table: Arc::new(Mutex::new(Table::default())),
            panic: Arc::new(tokio::sync::watch::Sender::new(None)),
        };
        let r = reaper.clone();
        tokio::spawn(async move {
            // A panic (a bug) is recorded for the supervisor, which stops
            // the stack; reaping goes on meanwhile, or no group of a
            // stopping service would ever be empty (its zombies stay).
            while let Err(payload) = catch_panic(r.reap_on(&mut sigchld)).await {
                let at = describe_panic(payload.as_ref());
                r.panic.send_if_modified(|first| {
                    let new = first.is_none();
                    first.get_or_insert_with(|| format!("the reaper panicked at {at}"));
                    new
                });
            }
        });
        Ok(reaper)
    }

    /// Reap on every SIGCHLD until the signal stream ends.
    async fn reap_on(&self, sigchld: &mut Signal) {
        loop {
            // Statuses that arrived before the handler existed, and any
            // batch left over, are collected here too.
            while self.reap_batch() {
                tokio::task::yield_now().await;
            }
            if sigchld.recv().await.is_none() {
                break;
            }
        }
    }

    /// Resolves with the first panic of the reaping task (`the reaper
    /// panicked at FILE:LINE:COL: message`); never if there is none.
    pub async fn panicked(&self) -> String {
        let mut seen = self.panic.subscribe();
        let first = seen
            .wait_for(Option::is_some)
            .await
            .ok()
            .and_then(|p| p.clone());
        match first {
            Some(panic) => panic,
            // The sender lives as long as this handle: not reached.
            None => std::future::pending().await,
        }
    }

    /// Spawn `cmd` with its pid registered before anyone can reap it.
    ///
    /// The lock is held across `Command::spawn`: besides registration, this
    /// keeps `waitpid(-1)` away while std itself waits for a child whose
    /// `exec` failed (std asserts that wait succeeds).
    pub fn spawn(&self, cmd: &mut Command) -> io::Result<Spawned> {
        let mut table = self.lock();
        let child = cmd.spawn()?;
        let (tx, rx) = oneshot::channel();
        table.waiters.insert(child.id() as i32, tx);
        Ok(Spawned { child, exit: rx })
    }

    fn lock(&self) -> MutexGuard<'_, Table> {
        // A poisoned lock means a panic elsewhere while holding it; the table
        // is still consistent (inserts and removes are single operations),
        // and PID 1 must keep reaping.
        match self.table.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// Collect up to [`REAP_BATCH`] statuses; `true` if there may be more.
    fn reap_batch(&self) -> bool {
        let mut table = self.lock();
        for _ in 0..REAP_BATCH {
            let mut status: libc::c_int = 0;
            // SAFETY: waitpid only writes the status int we pass it.
            let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
            if pid == 0 {
                return false; // children exist, none has changed state
            }
            if pid < 0 {
                let err = io::Error::last_os_error();
                match err.raw_os_error() {
                    Some(libc::EINTR) => continue,
                    Some(libc::ECHILD) => return false,
                    _ => {
                        tracing::warn!(error = %err, "waitpid failed");
                        return false;
                    }
                }
            }
            let Some(exit) = Exit::from_wait_status(status) else {
                continue; // stopped/continued: we did not ask, nothing ended
            };
            match table.waiters.remove(&pid) {
                // The receiver may be gone (a probe that timed out); fine.
                Some(tx) => {
                    let _ = tx.send(exit);
                    // The test hook: a reaper that panics (holding the
                    // table's lock) right after it handed a status over.
                    crate::fault::panic_once("reaper");
                }
                None => tracing::debug!(pid, exit = %exit, "reaped adopted orphan"),
            }
        }
        true
    }
}
