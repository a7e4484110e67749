//! The live state of the stack, shared by the supervisor (writer), the
//! gateway (`/admin/status`, `/admin/healthz`, 503 "starting" pages) and
//! `stackctl status` (through the admin API).

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use serde::Serialize;

/// Where a service is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Switched off by `enabled:`.
    Disabled,
    /// Waiting for its dependencies (or for restore).
    Waiting,
    /// Started, readiness not yet passed.
    Starting,
    /// Running and ready.
    Ready,
    /// Waiting out its backoff before a restart.
    Backoff,
    /// Exited and will not be restarted (`restart: no`, or success with on-failure).
    Exited,
    /// Restarted too often: given up.
    Failed,
    /// Being stopped.
    Stopping,
    /// Stopped by shutdown.
    Stopped,
}

/// What `status` shows of one service.
#[derive(Debug, Clone, Serialize)]
pub struct ServiceStatus {
    /// The phase.
    pub phase: Phase,
    /// PID of the process group leader while running.
    pub pid: Option<u32>,
    /// Restarts so far.
    pub restarts: u32,
    /// How the last run ended (`exited 1`, `killed by SIGKILL`), if any.
    pub last_exit: Option<String>,
    /// Unix time (seconds) of the last start.
    pub started_at: Option<u64>,
}

impl Default for ServiceStatus {
    fn default() -> Self {
        ServiceStatus {
            phase: Phase::Waiting,
            pid: None,
            restarts: 0,
            last_exit: None,
            started_at: None,
        }
    }
}

/// A snapshot of the whole stack.
#[derive(Debug, Clone, Default, Serialize)]
pub struct StackStatus {
    /// Restore has finished (or there is nothing to restore).
    pub restored: bool,
    /// Restore progress while it runs, e.g. "restoring (12 of 40 files)".
    pub restore_progress: Option<String>,
    /// While large files are downloaded during the restore, their bytes,
    /// e.g. "large files: 412 MiB of 1.0 GiB (41%)".
    pub restore_large_files: Option<String>,
    /// Services by name.
    pub services: BTreeMap<String, ServiceStatus>,
    /// Persistence state, filled by the persist subsystem.
    pub backup: Option<serde_json::Value>,
}

impl StackStatus {
    /// The restore's progress as the public 503 page shows it: files, and
    /// the bytes of large files while those move (a restore of one big
    /// database would otherwise sit at "0 of 1 files" for minutes).
    pub fn restore_line(&self) -> Option<String> {
        match (&self.restore_progress, &self.restore_large_files) {
            (Some(p), Some(b)) => Some(format!("{p}, {b}")),
            (p, _) => p.clone(),
        }
    }

    /// Healthy: restored and every enabled service is ready (or finished its
    /// one-shot job successfully).
    pub fn healthy(&self) -> bool {
        self.restored
            && self.services.values().all(|s| {
                matches!(s.phase, Phase::Ready | Phase::Disabled)
                    || (s.phase == Phase::Exited && s.last_exit.as_deref() == Some("exited 0"))
            })
    }
}

/// A cheap, cloneable handle to the shared status.
#[derive(Debug, Clone, Default)]
pub struct StatusBoard {
    inner: Arc<RwLock<StackStatus>>,
}

impl StatusBoard {
    /// An empty board.
    pub fn new() -> Self {
        Self::default()
    }

    /// A copy of the current state.
    pub fn snapshot(&self) -> StackStatus {
        // A poisoned lock only means a writer panicked mid-update; the data
        // is plain values and still usable, and PID 1 must not panic.
        match self.inner.read() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// Change the state under the lock.
    pub fn update<R>(&self, f: impl FnOnce(&mut StackStatus) -> R) -> R {
        match self.inner.write() {
            Ok(mut g) => f(&mut g),
            Err(p) => f(&mut p.into_inner()),
        }
    }

    /// Change one service's state (creating its entry).
    pub fn service<R>(&self, name: &str, f: impl FnOnce(&mut ServiceStatus) -> R) -> R {
        self.update(|s| f(s.services.entry(name.to_string()).or_default()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_restore_line_adds_large_file_bytes_while_they_move() {
        let mut s = StackStatus::default();
        assert_eq!(s.restore_line(), None);
        s.restore_progress = Some("restoring (0 of 1 files)".into());
        assert_eq!(
            s.restore_line().as_deref(),
            Some("restoring (0 of 1 files)")
        );
        s.restore_large_files = Some("large files: 3 MiB of 9 MiB (33%)".into());
        assert_eq!(
            s.restore_line().as_deref(),
            Some("restoring (0 of 1 files), large files: 3 MiB of 9 MiB (33%)")
        );
    }
}
