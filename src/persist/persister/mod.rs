//! [`Persister`]: the persistence engine for one `persist:` section, which
//! ties the modules of [`crate::persist`] together for `up` and the CLI.
//!
//! Its steps live beside this file: [`restoring`] (restore and the gate),
//! [`backup`] (snapshot, large-file uploads, the write lease) and [`push`]
//! (push, merge onto a moved remote, squash, blob garbage collection).
//! Merging and pending snapshots extend it from [`crate::persist::merge`]
//! and [`crate::persist::pending`].

mod backup;
mod push;
mod restoring;
#[cfg(test)]
pub(in crate::persist) mod tests;

pub use restoring::{at_arg, parse_date, read_date};

use std::collections::{HashMap, HashSet};
use std::fs;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use git2::{Oid, Repository};
use nix::fcntl::{Flock, FlockArg};

use super::blob::{self, BlobStore, StoreConfig};
use super::git::{ahead, ref_oid, remove_stale_git_locks, tag_anchor};
use super::plan::{self, PathRules, StatCache};
use super::pointer::Pointer;
use super::progress::{self, ProgressSink};
use super::remote::{self, Depth, Remote, RemoteError};
use super::report::parse_counts;
use super::tuning::store_config;
use super::{
    gc, history, holder, restore, PersistError, PersistStatus, RestoreState, SnapshotInfo, Tuning,
};
use crate::manifest::Persist;

/// The persistence engine for one `persist:` section.
pub struct Persister {
    /// The manifest's `persist:` section, as read.
    pub(super) cfg: Persist,
    /// The knobs the manifest does not hold (lease TTL, retries).
    pub(super) tuning: Tuning,
    pub(super) rules: Vec<PathRules>,
    pub(super) remote: Remote,
    // git2::Repository is Send but not Sync; one operation at a time anyway.
    pub(super) repo: Mutex<Repository>,
    pub(super) cache: Mutex<StatCache>,
    pub(super) state: Mutex<RestoreState>,
    pub(super) status: Mutex<PersistStatus>,
    /// This instance's id in the write lease.
    pub(super) instance: String,
    /// Our last lease commit and when it was pushed.
    pub(super) lease: Mutex<Option<(Oid, std::time::Instant)>>,
    /// Where large files' bytes go (`None`: they are skipped).
    pub(super) blobs: Option<Arc<dyn BlobStore>>,
    /// Binary files below the threshold go to `blobs` too (the remote
    /// refuses them outside LFS; `large_files.offload_binary`).
    pub(super) offload_binary: bool,
    /// Blobs known to be complete in the store (checked or uploaded by us).
    pub(super) stored: Mutex<HashSet<Pointer>>,
    /// Unreferenced blobs younger than this are kept ([`gc::DEFAULT_GRACE`]).
    pub(super) gc_grace: Duration,
    /// Hears the byte progress of large-file transfers.
    pub(super) sink: Arc<dyn ProgressSink>,
    /// Held for the persister's life: one process per workdir.
    pub(super) _workdir_lock: Flock<fs::File>,
    pub(in crate::persist) live: super::live::Live,
    /// The watch on the paths, from the end of the restore at start until
    /// the snapshot loop takes it over ([`super::lifecycle`]).
    pub(in crate::persist) watch: Mutex<Option<super::lifecycle::Watch>>,
}

pub(super) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding the lock leaves consistent data (refs are CAS-updated).
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Persister {
    /// Open from the manifest's `persist:` section.
    pub fn open(p: &Persist) -> Result<Self, PersistError> {
        let store = store_config(p)?;
        let offload_binary = p.large_files.offloads_binary(&p.remote);
        Ok(Self::with_store(p.clone(), Tuning::default(), &store)?
            .with_offload_binary(offload_binary))
    }

    /// Open with a blob store for large files, described by `store`.
    pub fn with_store(
        cfg: Persist,
        tuning: Tuning,
        store: &StoreConfig,
    ) -> Result<Self, PersistError> {
        let blobs: Option<Arc<dyn BlobStore>> = match store {
            StoreConfig::GithubRelease { .. } => {
                // A release tag pins a commit's whole tree forever: anchor it
                // on a tiny orphan commit, never on the data branch.
                let gh = blob::github::GithubStore::from_config(store, cfg.token.clone())
                    .map_err(PersistError::BlobStore)?
                    .with_anchor(tag_anchor(&cfg)?);
                Some(Arc::new(gh))
            }
            other => blob::open(other, cfg.token.clone()).map_err(PersistError::BlobStore)?,
        };
        Self::with_blob_store(cfg, tuning, blobs)
    }

    /// Open with this blob store (or none: large files are skipped).
    pub fn with_blob_store(
        cfg: Persist,
        tuning: Tuning,
        blobs: Option<Arc<dyn BlobStore>>,
    ) -> Result<Self, PersistError> {
        let mut p = Self::with_config(cfg, tuning)?;
        p.blobs = blobs;
        Ok(p)
    }

    /// Commit binary files below the threshold as LFS pointers too (with a
    /// blob store; without one this has no effect).
    pub fn with_offload_binary(mut self, on: bool) -> Self {
        self.offload_binary = on;
        self
    }

    /// Keep unreferenced blobs this long before garbage collection deletes
    /// them (default [`gc::DEFAULT_GRACE`]; tests use zero).
    pub fn with_blob_gc_grace(mut self, grace: Duration) -> Self {
        self.gc_grace = grace;
        self
    }

    /// Send the byte progress of large-file uploads and downloads to `sink`
    /// (default: [`progress::Lines::log`]).
    pub fn with_progress_sink(mut self, sink: Arc<dyn ProgressSink>) -> Self {
        self.sink = sink;
        self
    }

    /// Open with a `persist:` section and these knobs, without a blob store
    /// (`large_files.store` is not read: large files are skipped): validates
    /// paths and globs, creates the workdir repository (and a local bare
    /// remote if absent).
    pub fn with_config(cfg: Persist, tuning: Tuning) -> Result<Self, PersistError> {
        let roots: Vec<PathBuf> = cfg.paths.iter().map(|p| p.path.clone()).collect();
        plan::check_disjoint(&roots)?;
        let mut internal = vec![cfg.workdir.clone()];
        internal.extend(cfg.readiness_file.clone());
        let rules = cfg
            .paths
            .iter()
            .map(|p| {
                // A path inside the workdir (the gateway's state directory)
                // is persisted on purpose: only the rest of the workdir is
                // internal to it.
                let internal: Vec<PathBuf> = internal
                    .iter()
                    .filter(|i| !p.path.starts_with(i))
                    .cloned()
                    .collect();
                PathRules::new(&p.path, &p.exclude, &cfg.exclude, &internal)
            })
            .collect::<Result<Vec<_>, _>>()?;
        // libgit2 checks that every object a new tree or commit names
        // exists: one object read per file per snapshot (10 000 reads for
        // 5 000 files in `stackctl backup`). Snapshot trees only name blobs
        // just written, or cached ones whose existence `TreeBuilder` checks
        // itself. The option is process-wide; persistence is its only user.
        git2::opts::strict_object_creation(false);
        let url = remote::resolve_url(&cfg.remote)?;
        let remote = Remote::new(url, cfg.token.clone(), &cfg.branch);
        remote.ensure_local()?;
        let wd = |e: &dyn std::fmt::Display| PersistError::Workdir {
            path: cfg.workdir.clone(),
            message: e.to_string(),
        };
        fs::create_dir_all(&cfg.workdir).map_err(|e| wd(&e))?;
        let lock_file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(cfg.workdir.join("lock"))
            .map_err(|e| wd(&e))?;
        let workdir_lock =
            Flock::lock(lock_file, FlockArg::LockExclusiveNonblock).map_err(|(_, errno)| {
                if errno == nix::errno::Errno::EWOULDBLOCK {
                    PersistError::WorkdirBusy(cfg.workdir.clone())
                } else {
                    wd(&errno)
                }
            })?;
        let git_dir = cfg.workdir.join("repo.git");
        // We hold the workdir lock, so any git lock file left there is from a
        // process that died mid-write (kill -9): it would block every later
        // ref update.
        remove_stale_git_locks(&git_dir);
        let repo = match Repository::open_bare(&git_dir) {
            Ok(r) => r,
            Err(_) => Repository::init_bare(&git_dir).map_err(|e| wd(&e.message()))?,
        };
        let instance = if tuning.instance.is_empty() {
            // Kept in the workdir: a process restarted on the same workdir is
            // the same writer and need not wait for its own lease to expire.
            let path = cfg.workdir.join("instance-id");
            match fs::read_to_string(&path) {
                Ok(id) if !id.trim().is_empty() => id.trim().to_string(),
                _ => {
                    let id = default_instance_id();
                    fs::write(&path, format!("{id}\n")).map_err(|e| wd(&e))?;
                    id
                }
            }
        } else {
            tuning.instance.clone()
        };
        // A workdir of an earlier version has no restore marker; a branch
        // ref there was set by a completed restore (or a snapshot after one).
        if !restore::marker::exists(&cfg.workdir)
            && ref_oid(&repo, &format!("refs/heads/{}", cfg.branch)).is_ok_and(|r| r.is_some())
        {
            restore::marker::write(&cfg.workdir, "restored (recorded by an earlier version)")
                .map_err(|e| wd(&e))?;
        }
        let cache = fs::read(cfg.workdir.join("stat-cache.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        Ok(Self {
            cfg,
            tuning,
            rules,
            remote,
            repo: Mutex::new(repo),
            cache: Mutex::new(cache),
            state: Mutex::new(RestoreState::Pending),
            status: Mutex::new(PersistStatus::default()),
            instance,
            lease: Mutex::new(None),
            blobs: None,
            offload_binary: false,
            stored: Mutex::new(HashSet::new()),
            gc_grace: gc::DEFAULT_GRACE,
            // The log by default: `up` shows a long restore or upload moving
            // in the container's output; the CLI brings bars or plain lines.
            sink: Arc::new(progress::Lines::log(progress::interval())),
            _workdir_lock: workdir_lock,
            live: super::live::Live::default(),
            watch: Mutex::new(None),
        })
    }

    /// Where the restore gate stands.
    pub fn restore_state(&self) -> RestoreState {
        *lock(&self.state)
    }

    /// The remote URL (never with credentials).
    pub fn remote_url(&self) -> &str {
        self.remote.url()
    }

    pub(super) fn retry<T>(
        &self,
        op: impl FnMut() -> Result<T, RemoteError>,
    ) -> Result<T, RemoteError> {
        remote::with_retries(self.tuning.retry, op)
    }

    pub(super) fn blob_retry(&self) -> blob::Retry {
        blob::Retry {
            attempts: self.tuning.retry.attempts.max(1),
            initial: self.tuning.retry.initial,
            max: self.tuning.retry.max,
        }
    }

    pub(super) fn save_cache(&self, cache: &StatCache) {
        let path = self.cfg.workdir.join("stat-cache.json");
        let tmp = self.cfg.workdir.join("stat-cache.json.tmp");
        let ok = serde_json::to_vec(cache)
            .ok()
            .is_some_and(|b| fs::write(&tmp, b).is_ok() && fs::rename(&tmp, &path).is_ok());
        if !ok {
            // The cache only saves reads: losing it is harmless.
            tracing::debug!(path = %path.display(), "could not save the persist stat cache");
        }
    }

    /// Update [`PersistStatus`] after an operation.
    fn record(&self, repo: &Repository, error: Option<&PersistError>) {
        let mut st = lock(&self.status);
        st.last_error = error.map(|e| self.remote.scrub(&e.to_string()));
        if let Ok(Some(local)) = ref_oid(repo, &self.remote.branch_ref()) {
            if let Ok(c) = repo.find_commit(local) {
                st.last_snapshot = Some(c.id().to_string());
                st.last_snapshot_time = Some(c.time().seconds());
                let message = String::from_utf8_lossy(c.summary_bytes().unwrap_or_default());
                (st.last_snapshot_files, st.last_snapshot_bytes) = parse_counts(&message);
            }
            let remote = ref_oid(repo, &self.remote.tracking_ref()).ok().flatten();
            st.pending = ahead(repo, local, remote);
            if remote == Some(local) {
                st.last_push = Some(local.to_string());
            }
        }
    }

    /// Last snapshot, last push, queued snapshots, last error: for `status`.
    pub fn status(&self) -> PersistStatus {
        let mut st = lock(&self.status).clone();
        st.restore = match self.restore_state() {
            RestoreState::Pending => "pending".into(),
            RestoreState::Restored(o) => format!("restored {o}"),
            RestoreState::ConfirmedEmpty => "confirmed empty".into(),
            RestoreState::KeptLocal(o) => format!("kept local data newer than {o}"),
        };
        st
    }

    /// How deep to fetch: the tip is enough to restore, but squashing needs
    /// to see whether the branch grew past `keep` plus the slack.
    fn fetch_depth(&self) -> Depth {
        let keep = self.cfg.keep as usize;
        if keep == 0 {
            return Depth::Shallow(1);
        }
        let depth = keep + history::slack(keep) + 1;
        Depth::Shallow(i32::try_from(depth).unwrap_or(i32::MAX))
    }

    /// The size in the snapshot of each planned file (directories and
    /// symlinks are left out): what a restore of it writes, for the admin
    /// API's dry run. A blob that cannot be read counts as 0 bytes.
    pub fn planned_sizes(&self, ops: &[restore::Op]) -> HashMap<PathBuf, u64> {
        let repo = lock(&self.repo);
        let odb = repo.odb().ok();
        ops.iter()
            .filter_map(|op| {
                let size = match op {
                    restore::Op::File { oid, .. } => odb
                        .as_ref()
                        .and_then(|o| o.read_header(*oid).ok())
                        .map_or(0, |(size, _)| size as u64),
                    restore::Op::Large { pointer, .. } | restore::Op::Original { pointer, .. } => {
                        pointer.size
                    }
                    _ => return None,
                };
                Some((op.path().to_path_buf(), size))
            })
            .collect()
    }

    /// Snapshots in the branch, newest first, at most `limit`.
    pub fn list_snapshots(&self, limit: usize) -> Result<Vec<SnapshotInfo>, PersistError> {
        let repo = lock(&self.repo);
        let start = match ref_oid(&repo, &self.remote.branch_ref())? {
            Some(o) => Some(o),
            None => ref_oid(&repo, &self.remote.tracking_ref())?,
        };
        let Some(start) = start else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        let mut next = Some(repo.find_commit(start)?);
        while let Some(c) = next.take() {
            if out.len() >= limit {
                break;
            }
            let message =
                String::from_utf8_lossy(c.summary_bytes().unwrap_or_default()).into_owned();
            let (files, bytes) = parse_counts(&message);
            out.push(SnapshotInfo {
                id: c.id().to_string(),
                time: c.time().seconds(),
                files,
                bytes,
                message,
            });
            // First parents only; a shallow history simply ends.
            next = c.parent(0).ok();
        }
        Ok(out)
    }
}

/// `hostname-pid-random`: unique per container and process.
fn default_instance_id() -> String {
    let host = holder::hostname();
    format!(
        "{host}-{}-{:08x}",
        std::process::id(),
        rand::random::<u32>()
    )
}
