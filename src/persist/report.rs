//! What the persistence layer reports: the restore gate, what a restore or
//! a snapshot did, how far a long operation got, and the status shown by
//! `stackctl status` and `/admin/status`.

use std::path::PathBuf;

use git2::Oid;

use super::restore;

/// Where the restore gate stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestoreState {
    /// No restore yet: snapshots and pushes are refused.
    Pending,
    /// Restored from this commit.
    Restored(Oid),
    /// The remote has no such branch: nothing to restore, pushing is safe.
    ConfirmedEmpty,
    /// Local data was newer than this snapshot (which the workdir knows it
    /// grew from) and was kept (`keep_newer_local`).
    KeptLocal(Oid),
}

/// Options of a restore.
#[derive(Debug, Clone, Default)]
pub struct RestoreOptions {
    /// Only plan; write nothing (the gate stays as it is).
    pub dry_run: bool,
    /// An older snapshot: a commit id (or unique prefix), or a UTC date
    /// (`2026-01-31`, `2026-01-31 12:00[:00]`) for the newest snapshot at or before it.
    pub at: Option<String>,
    /// Restore only these paths (each a persisted path or below one); empty: all.
    pub paths: Vec<PathBuf>,
    /// Overwrite local data changed since the last snapshot, and delete
    /// what the snapshot does not hold (excluded files stay): the paths
    /// become equal to the snapshot. A dry run lists those deletions.
    pub force: bool,
    /// Instead of refusing over newer local data, keep it and open the gate
    /// (what `up` wants on a machine whose disk survived).
    pub keep_newer_local: bool,
}

/// What a restore did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoreReport {
    /// The gate after the restore.
    pub state: RestoreState,
    /// Files, bytes, dirs, symlinks written; side files removed.
    pub applied: restore::Applied,
    /// Persisted paths the snapshot does not hold.
    pub absent: Vec<PathBuf>,
    /// Planned operations, all of them.
    pub ops: Vec<restore::Op>,
    /// Paths whose content, type or mode on disk differs from the snapshot
    /// (what `--dry-run` lists; after a real restore, what was changed).
    pub changes: Vec<PathBuf>,
    /// Entries the snapshot does not hold: deleted by a forced restore
    /// (what a dry run would delete with `force`).
    pub deletions: Vec<PathBuf>,
}

/// How far a long operation got: for `status`, a progress bar, or log lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// What is being done.
    pub stage: Stage,
    /// Units done so far (see [`Stage`]).
    pub done: u64,
    /// Units in all (0: not known yet).
    pub total: u64,
}

/// The stages of a restore or backup that can take long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Receiving the snapshot's git objects (units: objects).
    Fetching,
    /// The remote could not be reached; trying again (`done`: failed attempts).
    Waiting,
    /// Writing files in place (units: files).
    Restoring,
    /// Uploading large files to the blob store (units: bytes).
    Uploading,
}

impl Progress {
    /// `done` of `total` files restored.
    pub fn restoring(done: u64, total: u64) -> Self {
        Progress {
            stage: Stage::Restoring,
            done,
            total,
        }
    }
}

impl std::fmt::Display for Progress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (done, total) = (self.done, self.total);
        match self.stage {
            Stage::Fetching => write!(f, "fetching the last snapshot ({done} of {total} objects)"),
            Stage::Waiting => write!(
                f,
                "waiting for the backup repository (attempt {})",
                done + 1
            ),
            Stage::Restoring => write!(f, "restoring ({done} of {total} files)"),
            Stage::Uploading => {
                let mib = |b: u64| b as f64 / f64::from(1 << 20);
                write!(
                    f,
                    "uploading large files ({:.1} of {:.1} MiB)",
                    mib(done),
                    mib(total)
                )
            }
        }
    }
}

/// What a snapshot (and push) did.
#[derive(Debug, Clone, Default)]
pub struct SnapshotReport {
    /// The new local commit; `None` when nothing changed. (After a squash,
    /// its replayed id: the branch head.)
    pub commit: Option<Oid>,
    /// The commit the remote branch now points at, when a push happened.
    pub pushed: Option<Oid>,
    /// Local snapshots were re-parented on a remote head moved by someone else.
    pub reparented: bool,
    /// Another instance holds the write lease: the snapshot went to this
    /// pending ref instead (`refs/stackctl/pending/<instance>`), and the
    /// holder folds it into the branch at its next push.
    pub parked: Option<String>,
    /// Older snapshots squashed away after the push (`history.keep`).
    pub squashed: usize,
    /// Files in the snapshot.
    pub files: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Files actually read (cache misses).
    pub read: u64,
    /// SQLite databases copied with the backup API.
    pub sqlite: u64,
    /// Skipped files at or above the threshold (path, size): only without a blob store.
    pub too_large: Vec<(PathBuf, u64)>,
    /// Files committed as LFS pointers.
    pub large: u64,
    /// Blobs uploaded to the store for this snapshot.
    pub uploaded: u64,
    /// Blobs deleted from the store after a squash (no kept snapshot
    /// refers to them and they were older than the grace period).
    pub blobs_collected: usize,
}

/// The persistence state shown by `stackctl status` and `/admin/status`.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct PersistStatus {
    /// `pending`, `restored <commit>` or `confirmed empty`.
    pub restore: String,
    /// Newest local snapshot (commit id).
    pub last_snapshot: Option<String>,
    /// Its time, seconds since the epoch.
    pub last_snapshot_time: Option<i64>,
    /// Its files and bytes, as its message records them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_snapshot_files: Option<u64>,
    /// See `last_snapshot_files`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_snapshot_bytes: Option<u64>,
    /// Newest snapshot known to be on the remote.
    pub last_push: Option<String>,
    /// Local snapshots not yet pushed.
    pub pending: usize,
    /// The last operation's error (token scrubbed), `None` after a success.
    pub last_error: Option<String>,
    /// Large files the last restore left absent (`<path>: <why>`): their
    /// blob is missing or corrupt in the store.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unrestored: Vec<String>,
    /// Conflict copies made by merges with another writer's snapshots
    /// (`<name>.conflict-<snapshot>` beside the file we kept), newest last.
    pub conflicts: Vec<String>,
}

/// One snapshot in the branch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotInfo {
    /// Commit id (hex).
    pub id: String,
    /// Commit time, seconds since the epoch.
    pub time: i64,
    /// Files, when stackctl wrote the snapshot.
    pub files: Option<u64>,
    /// Bytes, when stackctl wrote the snapshot.
    pub bytes: Option<u64>,
    /// First line of the message.
    pub message: String,
}

/// `files` and `bytes` from a stackctl snapshot message.
pub(super) fn parse_counts(message: &str) -> (Option<u64>, Option<u64>) {
    let after = message.split_once(": ").map(|(_, r)| r).unwrap_or_default();
    let mut files = None;
    let mut bytes = None;
    for part in after.split(", ") {
        match part.split_once(' ') {
            Some((n, "files")) => files = n.parse().ok(),
            Some((n, "bytes")) => bytes = n.parse().ok(),
            _ => {}
        }
    }
    (files, bytes)
}
