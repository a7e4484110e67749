//! Manual recovery of a running stack (issue 14): the state of persistence,
//! a backup now, the snapshot list, and a restore — for the admin API (and
//! through it the page and `--url`), where there is no shell.
//!
//! - [`request`]: the request bodies and query strings, checked (pure).
//! - [`summary`]: what a restore changes per path (pure).
//! - [`users`]: which services use the restored paths (pure).
//!
//! This module is the shell around them. Everything that touches the
//! repository goes through the snapshot loop's request channel
//! ([`Request`]), the same one `stackctl backup` uses, so a backup or
//! restore never races the periodic snapshots. One backup or restore runs
//! at a time: a second one is refused at once ([`Error::Conflict`], 409) rather
//! than queued behind it, so two people restoring from two browsers learn
//! of each other.
//!
//! A real restore: snapshot the current state first (the undo point;
//! pushed, or queued when the remote is down), stop the services that use
//! the paths (reverse dependency order), restore them as `restore --force`
//! does (the paths become equal to the snapshot), start the services
//! again. It runs in its own task: a client that goes away does not leave
//! the services stopped halfway.

pub mod request;
pub mod summary;
pub mod users;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot};

use crate::manifest::Service;
use crate::persist::lifecycle::{Event, Feed, Request, Sizes};
use crate::persist::snapshot::format_utc;
use crate::persist::{
    PersistError, Persister, RestoreOptions, RestoreReport, RestoreState, SnapshotReport,
};
use crate::status::StatusBoard;
use crate::supervisor::control::Control;

/// Why a recovery request was not done; each maps to one HTTP status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// Another backup or restore runs, or persistence is off (409).
    #[error("{0}")]
    Conflict(String),
    /// The request is malformed or names a path that is not persisted (400).
    #[error("{0}")]
    BadRequest(String),
    /// No snapshot matches `at` (404).
    #[error("{0}")]
    NotFound(String),
    /// The backup or the remote failed (502); the message says what stays queued.
    #[error("{0}")]
    Failed(String),
    /// The stack is stopping (503).
    #[error("the stack is stopping; retry once it is up again")]
    Stopping,
}

/// A backup or restore in progress.
#[derive(Debug, Clone)]
struct Running {
    op: &'static str,
    started: SystemTime,
    progress: Option<String>,
}

type Slot = Arc<Mutex<Option<Running>>>;

/// The one backup or restore running; cleared when dropped. Its steps
/// also go to the feed (the control socket streams them).
struct Busy(Slot, Feed);

impl Busy {
    fn progress(&self, line: &str) {
        if let Some(r) = lock(&self.0).as_mut() {
            r.progress = Some(line.to_string());
        }
        // No subscriber: nobody to tell.
        let _ = self.1.send(Event::Step(line.to_string()));
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        *lock(&self.0) = None;
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// What the admin API needs of a stack with persistence on.
pub struct Recovery {
    persister: Arc<Persister>,
    requests: mpsc::Sender<Request>,
    control: Control,
    services: Vec<Service>,
    /// The persisted roots, in manifest order.
    roots: Vec<PathBuf>,
    branch: String,
    status: StatusBoard,
    running: Slot,
    feed: Feed,
}

impl std::fmt::Debug for Recovery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recovery")
            .field("remote", &self.persister.remote_url())
            .field("branch", &self.branch)
            .finish_non_exhaustive()
    }
}

/// An RFC 3339 UTC time from seconds since the epoch.
pub fn rfc3339(secs: i64) -> String {
    format!("{}Z", format_utc(secs).replacen(' ', "T", 1))
}

fn unix(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

impl Recovery {
    /// Recovery for the stack whose snapshot loop listens on `requests`
    /// and whose supervisor obeys `control`; the steps go to `feed` too.
    pub fn new(
        persister: Arc<Persister>,
        requests: mpsc::Sender<Request>,
        control: Control,
        manifest: &crate::manifest::Manifest,
        status: StatusBoard,
        feed: Feed,
    ) -> Self {
        let (roots, branch) = match &manifest.persist {
            Some(p) => (
                p.paths.iter().map(|pp| pp.path.clone()).collect(),
                p.branch.clone(),
            ),
            None => (Vec::new(), String::new()),
        };
        Recovery {
            persister,
            requests,
            control,
            services: manifest.services.clone(),
            roots,
            branch,
            status,
            running: Arc::new(Mutex::new(None)),
            feed,
        }
    }

    /// Take the one slot for a backup or restore, or say who holds it.
    fn begin(&self, op: &'static str) -> Result<Busy, Error> {
        let mut slot = lock(&self.running);
        if let Some(r) = slot.as_ref() {
            return Err(Error::Conflict(format!(
                "a {} is running (started {}); wait until it finished, then try again",
                r.op,
                rfc3339(unix(r.started))
            )));
        }
        *slot = Some(Running {
            op,
            started: SystemTime::now(),
            progress: None,
        });
        Ok(Busy(self.running.clone(), self.feed.clone()))
    }

    /// What the running backup or restore does now (the `running.progress`
    /// of [`Recovery::state`]), for the control socket to stream.
    pub fn step(&self) -> Option<String> {
        lock(&self.running)
            .as_ref()
            .and_then(|r| r.progress.clone())
    }

    /// `GET /admin/persist`.
    pub fn state(&self) -> Value {
        let st = self.persister.status();
        let (state, snapshot) = match self.persister.restore_state() {
            RestoreState::Pending => ("restoring", None),
            RestoreState::Restored(o) => ("restored", Some(o.to_string())),
            RestoreState::ConfirmedEmpty => ("fresh", None),
            RestoreState::KeptLocal(o) => ("kept-local", Some(o.to_string())),
        };
        let board = self.status.snapshot();
        let last_snapshot = st.last_snapshot.as_ref().map(|id| {
            json!({
                "id": id,
                "time": st.last_snapshot_time.map(rfc3339),
                "files": st.last_snapshot_files,
                "bytes": st.last_snapshot_bytes,
                "pushed": st.last_push.as_ref() == Some(id),
            })
        });
        let seen = self.persister.live().seen();
        // The push time this stack saw; a snapshot it found already pushed
        // (or pushed by an earlier run) carries its own time.
        let last_push = st.last_push.as_ref().map(|id| {
            let time = match &seen.last_push {
                Some(p) if &p.snapshot == id => Some(p.time),
                _ => st
                    .last_snapshot_time
                    .filter(|_| st.last_snapshot.as_ref() == Some(id)),
            };
            json!({"snapshot": id, "time": time.map(rfc3339)})
        });
        let running = lock(&self.running).as_ref().map(|r| {
            json!({
                "op": r.op,
                "started": rfc3339(unix(r.started)),
                "progress": r.progress,
            })
        });
        json!({
            "enabled": true,
            "remote": crate::redact::url(self.persister.remote_url()),
            "branch": self.branch,
            "restore": {
                "state": state,
                "snapshot": snapshot,
                "progress": board.restore_progress,
                "unrestored": st.unrestored,
            },
            "last_snapshot": last_snapshot,
            "pending": st.pending,
            "changes": seen.changes.map(|c| json!({
                "dirty": c.dirty,
                "since": c.since.map(rfc3339),
            })),
            "last_push": last_push,
            "last_error": st.last_error,
            "lease": seen.lease.map(|l| json!({
                "holder": l.holder,
                "host": l.host,
                "mine": l.mine,
                "since": rfc3339(l.since),
                "renewed": rfc3339(l.renewed),
                "expires": rfc3339(l.expires),
            })),
            "large_files": seen.large_files.map(|l| json!({
                "store": l.store,
                "files": l.files,
                "bytes": l.bytes,
            })),
            "next_snapshot": seen.next_snapshot.map(|n| json!({
                "time": rfc3339(n.time),
                "reason": n.reason.as_str(),
            })),
            "conflicts": st.conflicts,
            "running": running,
        })
    }

    /// `POST /admin/persist/backup`: snapshot and push now.
    pub async fn backup(self: &Arc<Self>) -> Result<Value, Error> {
        let busy = self.begin("backup")?;
        busy.progress("taking a snapshot");
        let me = self.clone();
        // Its own task: the snapshot finishes even if the client leaves.
        let task = tokio::spawn(async move {
            let _busy = busy;
            let report = me.snapshot().await?;
            let snapshot = me.snapshot_json(&report);
            match (&report.commit, &report.pushed, &report.parked) {
                (Some(_), None, None) => Err(Error::Failed(format!(
                    "the snapshot was taken but could not be pushed{}; it stays queued and is pushed with the next snapshot",
                    me.persister
                        .status()
                        .last_error
                        .map(|e| format!(": {e}"))
                        .unwrap_or_default()
                ))),
                _ => Ok(json!({
                    "ok": true,
                    "snapshot": snapshot,
                    "unchanged": report.commit.is_none(),
                })),
            }
        });
        task.await.unwrap_or(Err(Error::Stopping))
    }

    /// One snapshot and push through the snapshot loop.
    async fn snapshot(&self) -> Result<SnapshotReport, Error> {
        let (tx, rx) = oneshot::channel();
        self.requests
            .send(Request::Backup(tx))
            .await
            .map_err(|_| Error::Stopping)?;
        match rx.await {
            Ok(Ok(report)) => Ok(report),
            Ok(Err(e)) => Err(Error::Failed(format!("the backup failed: {e}"))),
            Err(_) => Err(Error::Stopping),
        }
    }

    fn snapshot_json(&self, r: &SnapshotReport) -> Value {
        match r.commit {
            Some(c) => json!({
                "id": c.to_string(),
                "time": rfc3339(
                    self.persister
                        .status()
                        .last_snapshot_time
                        .unwrap_or_else(|| unix(SystemTime::now()))
                ),
                "files": r.files,
                "bytes": r.bytes,
                "pushed": r.pushed.is_some(),
            }),
            None => Value::Null,
        }
    }

    /// `GET /admin/persist/snapshots`: newest first, one page.
    pub async fn snapshots(&self, page: request::Page) -> Result<Value, Error> {
        let p = self.persister.clone();
        let pending = p.status().pending;
        // The branch is bounded by `history.keep`: the whole list is small.
        let list = tokio::task::spawn_blocking(move || p.list_snapshots(usize::MAX))
            .await
            .map_err(|_| Error::Stopping)?
            .map_err(|e| Error::Failed(e.to_string()))?;
        let start = match &page.after {
            None => 0,
            Some(after) => {
                list.iter()
                    .position(|s| s.id.starts_with(after.as_str()))
                    .ok_or_else(|| {
                        Error::NotFound(format!(
                            "no snapshot `{after}` in the list (it may have been squashed away); start again without `after`"
                        ))
                    })?
                    + 1
            }
        };
        let items: Vec<Value> = list
            .iter()
            .enumerate()
            .skip(start)
            .take(page.limit)
            .map(|(i, s)| {
                json!({
                    "id": s.id,
                    "time": rfc3339(s.time),
                    "files": s.files,
                    "bytes": s.bytes,
                    "message": s.message,
                    // The newest `pending` snapshots are the unpushed ones.
                    "pending": i < pending,
                })
            })
            .collect();
        let end = start + items.len();
        let next = (end < list.len() && !items.is_empty()).then(|| list[end - 1].id.clone());
        Ok(json!({"snapshots": items, "next": next}))
    }

    /// `POST /admin/persist/restore`: a dry run, or the real thing.
    pub async fn restore(self: &Arc<Self>, req: request::Restore) -> Result<Value, Error> {
        let busy = self.begin("restore")?;
        let me = self.clone();
        let task = tokio::spawn(async move { me.restore_task(req, busy).await });
        task.await.unwrap_or(Err(Error::Stopping))
    }

    async fn restore_task(&self, req: request::Restore, busy: Busy) -> Result<Value, Error> {
        let roots = if req.paths.is_empty() {
            self.roots.clone()
        } else {
            req.paths.clone()
        };
        // The plan first, even for a real restore: a wrong `at` or path is
        // refused before anything is stopped or snapshotted.
        busy.progress("planning the restore");
        let (plan, sizes) = self.run_restore(&req, true).await?;
        let at = match plan.state {
            RestoreState::Restored(o) => o.to_string(),
            _ => req.at.clone(),
        };
        if req.dry_run {
            let facts = gather(&plan, sizes).await;
            let summary = summary::summarize(&roots, &plan.changes, &plan.deletions, &facts);
            return Ok(json!({
                "dry_run": true,
                "at": at,
                "paths": summary::to_json(&summary, true),
            }));
        }

        busy.progress("taking a snapshot of the current state (the undo point)");
        let undo = self.snapshot().await.map_err(|e| match e {
            Error::Failed(m) => Error::Failed(format!(
                "{m}; nothing was restored (a restore always takes a snapshot to return to first)"
            )),
            other => other,
        })?;
        // A restore resets the branch to the remote's head: an undo point
        // that is only queued here would drop out of the list. So it must
        // be pushed (with everything queued before it) first.
        let queued = self.persister.status().pending;
        if undo.parked.is_some() || queued > 0 {
            return Err(Error::Failed(format!(
                "the snapshot of the current state could not be pushed{}; nothing was restored: try again once the remote answers",
                self.persister
                    .status()
                    .last_error
                    .map(|e| format!(" ({e})"))
                    .unwrap_or_default()
            )));
        }
        let undo = match undo.commit {
            Some(c) => c.to_string(),
            // Nothing changed since the last snapshot: that one is the undo point.
            None => self.newest_snapshot().await?,
        };

        let users = users::services_using(&self.services, &roots);
        busy.progress(&format!("stopping {}", users.join(", ")));
        let stopped = self
            .control
            .stop(users)
            .await
            .map_err(|_| Error::Stopping)?;

        // What is on disk now decides "added" or "changed" in the report.
        busy.progress("restoring");
        let facts = gather(&plan, sizes).await;
        let restored = self.run_restore(&req, false).await;

        busy.progress("starting the services again");
        let restarted = self
            .control
            .start(stopped.clone())
            .await
            .map_err(|_| Error::Stopping)?;
        let (report, _) = restored.map_err(|e| match e {
            Error::Failed(m) => Error::Failed(format!(
                "{m}; the services were started again; to return to the state before, restore `{undo}`"
            )),
            other => other,
        })?;
        tracing::info!(at = %at, undo = %undo, stopped = ?stopped, "restored through the admin API");
        let summary = summary::summarize(
            &roots,
            &report.applied.changed,
            &report.applied.deleted,
            &facts,
        );
        Ok(json!({
            "ok": true,
            "at": at,
            "undo": undo,
            "stopped": stopped,
            "restarted": restarted,
            "paths": summary::to_json(&summary, false),
        }))
    }

    /// A restore through the snapshot loop: `dry` only plans. Forced like
    /// `restore --force`: the paths become equal to the snapshot.
    async fn run_restore(
        &self,
        req: &request::Restore,
        dry: bool,
    ) -> Result<(RestoreReport, Sizes), Error> {
        let opts = RestoreOptions {
            dry_run: dry,
            at: Some(req.at.clone()),
            paths: req.paths.clone(),
            force: true,
            keep_newer_local: false,
        };
        let (tx, rx) = oneshot::channel();
        self.requests
            .send(Request::Restore(opts, tx))
            .await
            .map_err(|_| Error::Stopping)?;
        match rx.await {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(e)) => Err(restore_error(e)),
            Err(_) => Err(Error::Stopping),
        }
    }

    async fn newest_snapshot(&self) -> Result<String, Error> {
        let p = self.persister.clone();
        let list = tokio::task::spawn_blocking(move || p.list_snapshots(1))
            .await
            .map_err(|_| Error::Stopping)?
            .map_err(|e| Error::Failed(e.to_string()))?;
        list.into_iter().next().map(|s| s.id).ok_or_else(|| {
            Error::Failed("there is no snapshot to return to; nothing was restored".into())
        })
    }
}

fn restore_error(e: PersistError) -> Error {
    match e {
        PersistError::NoSuchSnapshot(at) => Error::NotFound(format!(
            "no snapshot matches `{at}`: give an id from GET /admin/persist/snapshots, or a date like \"2026-01-31 12:00\""
        )),
        e @ PersistError::NotPersisted(_) => Error::BadRequest(e.to_string()),
        e => Error::Failed(format!("the restore failed: {e}")),
    }
}

/// What is on disk now for every entry of `plan` (existence, directories),
/// plus the snapshot sizes.
async fn gather(plan: &RestoreReport, sizes: Sizes) -> summary::Facts {
    let mut entries: Vec<(PathBuf, bool)> = plan
        .ops
        .iter()
        .map(|op| {
            let dir = matches!(op, crate::persist::restore::Op::Dir { .. });
            (op.path().to_path_buf(), dir)
        })
        .collect();
    entries.extend(plan.deletions.iter().map(|p| (p.clone(), false)));
    tokio::task::spawn_blocking(move || {
        let mut facts = summary::Facts {
            sizes,
            ..summary::Facts::default()
        };
        for (path, dir) in entries {
            let meta = std::fs::symlink_metadata(&path).ok();
            if dir || meta.as_ref().is_some_and(|m| m.is_dir()) {
                facts.dirs.insert(path.clone());
            }
            if meta.is_some() {
                facts.existed.insert(path);
            }
        }
        facts
    })
    .await
    .unwrap_or_default()
}
