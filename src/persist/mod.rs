//! Persistence: the data directories that must survive a wiped disk, kept in
//! a git repository.
//!
//! - [`blob`]: blob stores for large files (`dir:PATH`, `lfs`, `github-release`), streamed and verified.
//! - [`deadline`]: deadlines and cancellation that reach libgit2 and the blob stores (shutdown budget).
//! - [`gc`]: delete blobs no kept snapshot refers to, after a grace period.
//! - [`history`]: bound the branch to `history.keep` snapshots (squash, pushed with a lease).
//! - [`lease`]: one writer per repository (a lease ref with a heartbeat), pure decisions.
//! - [`holder`]: this process as a lease holder; is a recorded holder gone from this host?
//! - [`pending`]: snapshots parked while another instance holds the lease, folded in later.
//! - [`merge`]: merge per file when the remote moved under us (conflict copies beside ours).
//! - [`plan`]: pure decisions: tree paths, excludes, file kinds, stat cache.
//! - [`pointer`](mod@pointer): Git LFS pointers, `.gitattributes` lines, the original's `*.pointer` JSON (pure).
//! - [`progress`]: byte progress of large-file uploads and downloads (bars, plain lines, log lines).
//! - [`snapshot`]: build a tree from the live files (SQLite via the backup API) and commit it.
//! - [`remote`]: fetch and push with git2; token only through the credentials callback.
//! - [`restore`]: write a snapshot back in place, refusing anything that escapes the paths.
//! - [`schedule`]: when to snapshot (debounce, ceiling, periodic scan), pure.
//! - [`lifecycle`]: the async shell `up` drives (restore at start, snapshot loop, final backup).
//! - [`commands`]: the `backup`, `restore` and `snapshots` commands.
//!
//! [`Persister`] ties them together for `up` and the CLI. It enforces the
//! restore gate: nothing is snapshotted or pushed until a restore completed or
//! the remote was confirmed empty, so a fresh container never overwrites a
//! good backup with empty data.
//!
//! Large files: with a blob store configured, each file at or above the
//! threshold is committed as a Git LFS pointer, and its bytes are uploaded
//! and verified in the store *before* the commit that refers to them is
//! made, so no commit that could be pushed ever refers to a missing blob.
//!
//! Workdir layout: `repo.git/` (bare repository, objects only, no remote or
//! token in its config), `tmp/` (SQLite copies), `stat-cache.json`,
//! `restored` (written only by a completed restore: see [`restore::marker`]),
//! `instance-id` (this writer's id in the lease), `lock` (flock: one process
//! per workdir).

pub mod blob;
pub mod commands;
pub mod deadline;
pub mod gc;
pub mod history;
pub mod holder;
pub mod lease;
pub mod lifecycle;
pub mod live;
pub mod merge;
pub mod pending;
pub mod plan;
pub mod pointer;
pub mod progress;
pub mod remote;
pub mod restore;
pub mod retry;
pub mod schedule;
pub mod snapshot;

use std::collections::{HashMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use git2::{Oid, Repository};
use nix::fcntl::{Flock, FlockArg};

use blob::{BlobError, BlobStore, StoreConfig};
use plan::{PathRules, PlanError, StatCache};
use pointer::Pointer;
use progress::{ProgressSink, Transfer};
use remote::{Depth, Remote, RemoteError, RemoteHead};
use restore::RestoreError;
use snapshot::SnapshotError;

/// Errors of the persistence layer.
#[derive(Debug, thiserror::Error)]
pub enum PersistError {
    /// The `persist:` section cannot be used as it is.
    #[error(transparent)]
    Plan(#[from] PlanError),
    /// Talking to the remote failed.
    #[error(transparent)]
    Remote(#[from] RemoteError),
    /// Taking a snapshot failed.
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    /// Restoring failed.
    #[error(transparent)]
    Restore(#[from] RestoreError),
    /// A large file could not be uploaded: the snapshot was not committed.
    #[error("cannot store large file `{path}` in the blob store: {source}; this snapshot was not committed or pushed (the previous one stays good)")]
    Blob {
        /// The live file.
        path: PathBuf,
        /// What the store said.
        source: BlobError,
    },
    /// The blob store cannot be set up.
    #[error("cannot use `persist.large_files`: {0}")]
    BlobStore(BlobError),
    /// The restore gate is closed.
    #[error("refusing to snapshot or push before the restore finished (or the remote was confirmed empty): a fresh container must not overwrite a good backup; run the restore first")]
    NotRestored,
    /// The workdir is unusable.
    #[error("cannot use workdir `{path}`: {message}; check `persist.workdir` is writable")]
    Workdir {
        /// The workdir path.
        path: PathBuf,
        /// What failed.
        message: String,
    },
    /// `--at` matched no snapshot.
    #[error("no snapshot matches `{0}`: give a commit id from `stackctl snapshots`, or a date like `2026-01-31 12:00`")]
    NoSuchSnapshot(String),
    /// `--path` names something outside `persist.paths`.
    #[error("`{0}` is not a persisted path or below one: see `persist.paths`")]
    NotPersisted(PathBuf),
    /// Local data changed after the last snapshot; restoring would lose it.
    #[error("local data changed after the last snapshot `{snapshot}`: restoring would overwrite it; run `stackctl backup` first, or pass `--force`")]
    LocalNewer {
        /// The last snapshot this workdir knows.
        snapshot: String,
    },
    /// Another instance holds the write lease on the repository.
    #[error("another stackctl (`{holder}`) holds the write lease on the repository; snapshots stay queued here and are pushed once it stops or its lease expires (in {expires_in}s without a heartbeat)")]
    LeaseHeld {
        /// The holder's instance id.
        holder: String,
        /// Seconds until the lease can be taken over.
        expires_in: i64,
    },
    /// Another process holds the workdir.
    #[error("workdir `{0}` is in use by another stackctl process: ask the running `stackctl up` (e.g. `stackctl backup`), or give this one its own `persist.workdir`")]
    WorkdirBusy(PathBuf),
    /// The remote kept moving while we pushed.
    #[error("the remote branch kept moving during {0} push attempts (another writer?); will retry at the next snapshot")]
    Contended(u32),
    /// A git operation in the workdir failed.
    #[error("git error in the workdir: {0}")]
    Git(String),
    /// Writing the readiness file failed.
    #[error("cannot write readiness file `{path}`: {source}")]
    Readiness {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

impl PersistError {
    /// Is trying again later likely to help (remote unreachable, lease held)?
    /// `up` keeps retrying the restore on these, with backoff, until shutdown.
    pub fn is_retryable(&self) -> bool {
        match self {
            PersistError::Remote(e) => e.is_retryable(),
            PersistError::Blob { source, .. } => {
                source.is_retryable() || matches!(source, BlobError::Changed { .. })
            }
            PersistError::Restore(RestoreError::Blobs { retryable, .. }) => *retryable,
            PersistError::LeaseHeld { .. } | PersistError::Contended(_) => true,
            _ => false,
        }
    }
}

impl From<git2::Error> for PersistError {
    fn from(e: git2::Error) -> Self {
        PersistError::Git(remote::reason(&e))
    }
}

/// Default write-lease TTL: a holder silent this long is taken over.
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(120);

/// One persisted path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathConfig {
    /// Absolute path of a directory or file.
    pub path: PathBuf,
    /// Excludes for this path only.
    pub exclude: Vec<String>,
}

/// What the persistence layer needs from `persist:` (plus tuning for tests).
#[derive(Debug, Clone)]
pub struct Config {
    /// `owner/repo`, a git URL, or a local path / `file://` URL.
    pub remote: String,
    /// Token for HTTPS (secret).
    pub token: Option<String>,
    /// Branch holding the snapshots.
    pub branch: String,
    /// Where git objects and state live (not a mirror of the data).
    pub workdir: PathBuf,
    /// Persisted paths.
    pub paths: Vec<PathConfig>,
    /// Global exclude globs.
    pub exclude: Vec<String>,
    /// Files at or above this size are skipped (0: no limit).
    pub threshold: u64,
    /// Snapshots kept in the branch (`history.keep`; 0: keep all).
    pub keep: u32,
    /// This instance's id in the write lease (empty: one generated and kept
    /// in the workdir, `hostname-pid-random`).
    pub instance: String,
    /// A lease not renewed for this long may be taken over (zero: no lease).
    pub lease_ttl: Duration,
    /// Written once restore finished (the original's READINESS_FILE).
    pub readiness_file: Option<PathBuf>,
    /// Attempts for each remote operation.
    pub retries: u32,
    /// First retry delay (doubles up to `retry_max`).
    pub retry_initial: Duration,
    /// Longest retry delay.
    pub retry_max: Duration,
}

impl From<&crate::manifest::Persist> for Config {
    fn from(p: &crate::manifest::Persist) -> Self {
        Config {
            remote: p.remote.clone(),
            token: p.token.clone(),
            branch: p.branch.clone(),
            workdir: p.workdir.clone(),
            paths: p
                .paths
                .iter()
                .map(|x| PathConfig {
                    path: x.path.clone(),
                    exclude: x.exclude.clone(),
                })
                .collect(),
            exclude: p.exclude.clone(),
            threshold: p.large_files.threshold,
            keep: p.keep,
            instance: String::new(),
            lease_ttl: DEFAULT_LEASE_TTL,
            readiness_file: p.readiness_file.clone(),
            retries: 5,
            retry_initial: retry::first_delay(),
            retry_max: Duration::from_secs(30),
        }
    }
}

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

/// What a push did.
#[derive(Debug, Clone, Default)]
struct Pushed {
    /// The commit the remote branch now points at.
    pushed: Option<Oid>,
    /// The remote had moved: our snapshots were merged onto it.
    reparented: bool,
    /// The pending ref the snapshot went to (another instance holds the lease).
    parked: Option<String>,
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

/// The persistence engine for one `persist:` section.
pub struct Persister {
    cfg: Config,
    rules: Vec<PathRules>,
    remote: Remote,
    // git2::Repository is Send but not Sync; one operation at a time anyway.
    repo: Mutex<Repository>,
    cache: Mutex<StatCache>,
    state: Mutex<RestoreState>,
    status: Mutex<PersistStatus>,
    /// This instance's id in the write lease.
    instance: String,
    /// Our last lease commit and when it was pushed.
    lease: Mutex<Option<(Oid, std::time::Instant)>>,
    /// Where large files' bytes go (`None`: they are skipped).
    blobs: Option<Arc<dyn BlobStore>>,
    /// Binary files below the threshold go to `blobs` too (the remote
    /// refuses them outside LFS; `large_files.offload_binary`).
    offload_binary: bool,
    /// Blobs known to be complete in the store (checked or uploaded by us).
    stored: Mutex<HashSet<Pointer>>,
    /// Unreferenced blobs younger than this are kept ([`gc::DEFAULT_GRACE`]).
    gc_grace: Duration,
    /// Hears the byte progress of large-file transfers.
    sink: Arc<dyn ProgressSink>,
    /// Held for the persister's life: one process per workdir.
    _workdir_lock: Flock<fs::File>,
    live: live::Live,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding the lock leaves consistent data (refs are CAS-updated).
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Persister {
    /// Open from the manifest's `persist:` section.
    pub fn open(p: &crate::manifest::Persist) -> Result<Self, PersistError> {
        let cfg = Config::from(p);
        let store = store_config(&cfg, &p.large_files)?;
        let offload_binary = p.large_files.offloads_binary(&p.remote);
        Ok(Self::with_store(cfg, &store)?.with_offload_binary(offload_binary))
    }

    /// Open with a blob store for large files, described by `store`.
    pub fn with_store(cfg: Config, store: &StoreConfig) -> Result<Self, PersistError> {
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
        Self::with_blob_store(cfg, blobs)
    }

    /// Open with this blob store (or none: large files are skipped).
    pub fn with_blob_store(
        cfg: Config,
        blobs: Option<Arc<dyn BlobStore>>,
    ) -> Result<Self, PersistError> {
        let mut p = Self::with_config(cfg)?;
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

    /// Open with an explicit configuration: validates paths and globs,
    /// creates the workdir repository (and a local bare remote if absent).
    pub fn with_config(cfg: Config) -> Result<Self, PersistError> {
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
        let instance = if cfg.instance.is_empty() {
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
            cfg.instance.clone()
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
            live: live::Live::default(),
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

    fn retry<T>(&self, op: impl FnMut() -> Result<T, RemoteError>) -> Result<T, RemoteError> {
        remote::with_retries(
            self.cfg.retries,
            self.cfg.retry_initial,
            self.cfg.retry_max,
            op,
        )
    }

    /// Fetch the branch and write its files in place. An absent branch is
    /// "confirmed empty". Opens the gate on success (not on a dry run).
    pub fn restore(&self, opts: &RestoreOptions) -> Result<RestoreReport, PersistError> {
        self.restore_with_progress(opts, &|_| {})
    }

    /// [`Persister::restore`], telling `progress` how the fetch and the
    /// writing go.
    pub fn restore_with_progress(
        &self,
        opts: &RestoreOptions,
        progress: &dyn Fn(Progress),
    ) -> Result<RestoreReport, PersistError> {
        let repo = lock(&self.repo);
        let depth = if opts.at.is_some() {
            Depth::Full
        } else {
            self.fetch_depth()
        };
        let fetch_progress = |done: usize, total: usize| {
            progress(Progress {
                stage: Stage::Fetching,
                done: done as u64,
                total: total as u64,
            })
        };
        let mut failed = 0;
        let head = self.retry(|| {
            // Not "fetching" while the remote cannot be reached (issue 17).
            if failed > 0 {
                progress(Progress {
                    stage: Stage::Waiting,
                    done: failed,
                    total: 0,
                });
            }
            failed += 1;
            self.remote
                .fetch_with_progress(&repo, depth, &fetch_progress)
        })?;
        let head = match head {
            RemoteHead::Missing if opts.at.is_some() => {
                return Err(PersistError::NoSuchSnapshot(
                    opts.at.clone().unwrap_or_default(),
                ))
            }
            RemoteHead::Missing => {
                if !opts.dry_run {
                    *lock(&self.state) = RestoreState::ConfirmedEmpty;
                    self.write_readiness()?;
                }
                tracing::info!(remote = %self.remote.url(), "persist remote has no snapshot yet: nothing to restore");
                return Ok(RestoreReport {
                    state: RestoreState::ConfirmedEmpty,
                    applied: restore::Applied::default(),
                    absent: self.cfg.paths.iter().map(|p| p.path.clone()).collect(),
                    ops: Vec::new(),
                    changes: Vec::new(),
                    deletions: Vec::new(),
                });
            }
            RemoteHead::At(oid) => oid,
        };
        // The newest state: pending snapshots parked after the head (their
        // writer had no lease, its holder stopped before folding them) too.
        let folded = match &opts.at {
            None if !opts.dry_run => self.pending_onto(&repo, head)?,
            _ => None,
        };
        let target = match &opts.at {
            Some(at) => resolve_at(&repo, head, at)?,
            None => folded.unwrap_or(head),
        };
        // First: a path that is not persisted is the answer, whatever the local data.
        let paths = self.restore_paths(&opts.paths)?;
        if !opts.force && !opts.dry_run {
            match self.refuse_newer_local_data(&repo) {
                Err(PersistError::LocalNewer { snapshot }) if opts.keep_newer_local => {
                    // The local data grew from a snapshot this workdir knows:
                    // it is the newest state; keep it and push it next.
                    let known = Oid::from_str(&snapshot)?;
                    *lock(&self.state) = RestoreState::KeptLocal(known);
                    self.write_readiness()?;
                    tracing::warn!(snapshot = %known, "local data is newer than the last snapshot: kept, not restored");
                    return Ok(RestoreReport {
                        state: RestoreState::KeptLocal(known),
                        applied: restore::Applied::default(),
                        absent: Vec::new(),
                        ops: Vec::new(),
                        changes: Vec::new(),
                        deletions: Vec::new(),
                    });
                }
                other => other?,
            }
        }
        let tree = repo.find_commit(target)?.tree()?;
        let mut plan = restore::plan(&repo, &tree, &paths)?;
        if !plan.refused.is_empty() {
            return Err(RestoreError::Unsafe(plan.refused).into());
        }
        if opts.force || opts.dry_run {
            plan.prune = restore::prune::extras(&plan, &self.rules);
        }
        let mut cache = lock(&self.cache);
        let (applied, changes) = if opts.dry_run {
            let changes = restore::changes(&repo, &plan, &mut cache)?;
            (restore::Applied::default(), changes)
        } else {
            // Only a forced restore deletes (a dry run only lists).
            if !opts.force {
                plan.prune.clear();
            }
            let (count, total) = plan.large_files();
            let transfer = Transfer::new("restore", total, count);
            let blobs = restore::Blobs {
                store: self.blobs.as_deref(),
                retry: self.blob_retry(),
                transfer: Some(&transfer),
            };
            let mut apply = || restore::apply(&repo, &plan, &blobs, &mut cache, progress);
            let applied = if count > 0 {
                progress::watch(&transfer, &*self.sink, apply)?
            } else {
                apply()?
            };
            let changes = applied.changed.clone();
            if opts.paths.is_empty() {
                self.saw_large(count as u64, total);
            }
            lock(&self.status).unrestored = applied
                .failed
                .iter()
                .map(|(p, why)| format!("{}: {why}", p.display()))
                .collect();
            (applied, changes)
        };
        // Only now (after `apply` synced what it wrote): the entries for the
        // restored files may be trusted by the next start too.
        self.save_cache(&cache);
        drop(cache);
        if !opts.dry_run {
            // Later snapshots build on the remote head, even after restoring
            // an older snapshot: history is never rewritten.
            repo.reference(
                &self.remote.branch_ref(),
                folded.unwrap_or(head),
                true,
                "stackctl restore",
            )?;
            *lock(&self.state) = RestoreState::Restored(target);
            self.write_readiness()?;
            tracing::info!(commit = %target, files = applied.files, bytes = applied.bytes,
                unchanged = applied.unchanged, "persist restore finished");
        }
        let deletions = if opts.dry_run {
            plan.prune
        } else {
            applied.deleted.clone()
        };
        Ok(RestoreReport {
            state: RestoreState::Restored(target),
            applied,
            absent: plan.absent,
            ops: plan.ops,
            changes,
            deletions,
        })
    }

    /// (absolute path, tree path) to restore: all persisted paths, or the
    /// requested ones, each of which must be a persisted path or below one.
    fn restore_paths(&self, wanted: &[PathBuf]) -> Result<Vec<(PathBuf, String)>, PersistError> {
        if wanted.is_empty() {
            return Ok(self
                .rules
                .iter()
                .map(|r| (r.root.clone(), r.tree.clone()))
                .collect());
        }
        wanted
            .iter()
            .map(|w| {
                if !self.rules.iter().any(|r| w.starts_with(&r.root)) {
                    return Err(PersistError::NotPersisted(w.clone()));
                }
                Ok((w.clone(), plan::tree_path(w)?))
            })
            .collect()
    }

    /// Refuse when the live data holds changes made after the last snapshot
    /// this workdir knows: the live tree differs from it *and* some file is
    /// newer than it. (Data that was wiped or never snapshotted is fine.)
    fn refuse_newer_local_data(&self, repo: &Repository) -> Result<(), PersistError> {
        let Some(known) = ref_oid(repo, &self.remote.branch_ref())? else {
            return Ok(());
        };
        let known = repo.find_commit(known)?;
        let mut cache = lock(&self.cache);
        let tmp = self.cfg.workdir.join("tmp");
        let built = self
            .tree_builder(repo, &tmp, &mut cache)
            .build(&self.rules)?;
        // Only the tree matters here: nothing is uploaded.
        snapshot::remove_copies(&built);
        if built.tree == Some(known.tree_id()) {
            return Ok(());
        }
        let newest = built.newest_mtime;
        // Commit times have one-second resolution: the same second counts as newer.
        if newest.is_some_and(|t| t >= known.time().seconds()) {
            return Err(PersistError::LocalNewer {
                snapshot: known.id().to_string(),
            });
        }
        Ok(())
    }

    /// Called once a restore completed (the state is set): the workdir's
    /// own record of it first, then the readiness file.
    fn write_readiness(&self) -> Result<(), PersistError> {
        restore::marker::write(&self.cfg.workdir, &self.status().restore).map_err(|e| {
            PersistError::Workdir {
                path: self.cfg.workdir.clone(),
                message: format!("cannot record the restore: {e}"),
            }
        })?;
        let Some(path) = &self.cfg.readiness_file else {
            return Ok(());
        };
        let err = |source| PersistError::Readiness {
            path: path.clone(),
            source,
        };
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).map_err(err)?;
        }
        fs::write(path, b"restored\n").map_err(err)
    }

    /// Take a snapshot into the workdir repository (no push). `None` commit
    /// when nothing changed.
    pub fn snapshot(&self) -> Result<SnapshotReport, PersistError> {
        if self.restore_state() == RestoreState::Pending {
            return Err(PersistError::NotRestored);
        }
        let repo = lock(&self.repo);
        let result = self.snapshot_locked(&repo, &|_| {});
        self.record(&repo, result.as_ref().err());
        result
    }

    fn snapshot_locked(
        &self,
        repo: &Repository,
        progress: &dyn Fn(Progress),
    ) -> Result<SnapshotReport, PersistError> {
        let mut cache = lock(&self.cache);
        let tmp = self.cfg.workdir.join("tmp");
        let previous = ref_oid(repo, &self.remote.branch_ref())?
            .and_then(|c| repo.find_commit(c).ok())
            .map(|c| c.tree_id());
        let built = self
            .tree_builder(repo, &tmp, &mut cache)
            .point_in_time(previous)
            .build(&self.rules)?;
        if built.deferred > 0 {
            tracing::debug!(
                entries = built.deferred,
                "entries created during the scan are left to the next snapshot"
            );
        }
        for (path, size) in &built.too_large {
            tracing::warn!(path = %path.display(), size, threshold = self.cfg.threshold,
                "file at or above `large_files.threshold` skipped: it is not backed up");
        }
        self.save_cache(&cache);
        drop(cache);
        // Every blob the new tree refers to is stored and verified before
        // the commit exists: a commit that could be pushed never refers to
        // a missing blob.
        let uploaded = self.store_blobs(&built.large, progress);
        snapshot::remove_copies(&built);
        let uploaded = uploaded?;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        let tree = built
            .tree
            .ok_or_else(|| PersistError::Git("tree missing".into()))?;
        let commit = snapshot::commit_if_changed(
            repo,
            &self.remote.branch_ref(),
            tree,
            &snapshot::message(now, &built),
        )?;
        self.saw_large(
            built.large.len() as u64,
            built.large.iter().map(|l| l.pointer.size).sum(),
        );
        Ok(SnapshotReport {
            commit,
            pushed: None,
            reparented: false,
            parked: None,
            squashed: 0,
            files: built.files,
            bytes: built.bytes,
            read: built.read,
            sqlite: built.sqlite,
            too_large: built.too_large,
            large: built.large.len() as u64,
            uploaded,
            blobs_collected: 0,
        })
    }

    fn tree_builder<'a>(
        &self,
        repo: &'a Repository,
        tmp: &'a Path,
        cache: &'a mut StatCache,
    ) -> snapshot::TreeBuilder<'a> {
        let b = snapshot::TreeBuilder::new(repo, self.cfg.threshold, tmp, cache);
        match &self.blobs {
            Some(store) => b
                .with_pointers(store.lfs_url())
                .with_offload_binary(self.offload_binary),
            None => b,
        }
    }

    fn blob_retry(&self) -> blob::Retry {
        blob::Retry {
            attempts: self.cfg.retries.max(1),
            initial: self.cfg.retry_initial,
            max: self.cfg.retry_max,
        }
    }

    /// Make sure the store holds every blob in `large`; returns how many
    /// were uploaded. `progress` hears the bytes uploaded so far.
    fn store_blobs(
        &self,
        large: &[snapshot::LargeFile],
        progress: &dyn Fn(Progress),
    ) -> Result<u64, PersistError> {
        let Some(store) = &self.blobs else {
            return Ok(0);
        };
        let mut missing = Vec::new();
        for f in large {
            if lock(&self.stored).contains(&f.pointer) {
                continue;
            }
            let err = |source| PersistError::Blob {
                path: f.path.clone(),
                source,
            };
            // Two files with the same content: one upload.
            if missing
                .iter()
                .any(|m: &&snapshot::LargeFile| m.pointer == f.pointer)
            {
                continue;
            }
            if store.has(&f.pointer).map_err(err)? {
                lock(&self.stored).insert(f.pointer);
            } else {
                missing.push(f);
            }
        }
        let total: u64 = missing.iter().map(|f| f.pointer.size).sum();
        if missing.is_empty() {
            return Ok(0);
        }
        let transfer = Transfer::new("backup", total, missing.len());
        progress::watch(&transfer, &*self.sink, || {
            blob::counting(transfer.counter(), || {
                self.upload(store.as_ref(), &missing, total, &transfer, progress)
            })
        })
    }

    /// Upload `missing` (`total` bytes), telling `transfer` and `progress`.
    fn upload(
        &self,
        store: &dyn BlobStore,
        missing: &[&snapshot::LargeFile],
        total: u64,
        transfer: &Transfer,
        progress: &dyn Fn(Progress),
    ) -> Result<u64, PersistError> {
        let mut uploaded = 0;
        let mut sent = 0;
        for &f in missing {
            let err = |source| PersistError::Blob {
                path: f.path.clone(),
                source,
            };
            progress(Progress {
                stage: Stage::Uploading,
                done: sent,
                total,
            });
            let started = std::time::Instant::now();
            transfer.begin_file(&f.path, f.pointer.size);
            let result = match (&f.copy, f.sqlite) {
                (Some(copy), _) => store.put(&f.pointer, copy),
                // A database served by the stat cache: copy it now (never
                // upload the live file); `put` checks the copy still hashes
                // to the pointer.
                (None, true) => self.put_sqlite_copy(store, f),
                (None, false) => store.put(&f.pointer, &f.path),
            };
            transfer.end_file();
            if let Err(BlobError::Changed { .. }) = &result {
                // The stat said unchanged but the bytes are not the pointer's:
                // make the next snapshot read the file again.
                lock(&self.cache).forget(&f.path);
            }
            result.map_err(err)?;
            uploaded += 1;
            sent += f.pointer.size;
            tracing::info!(path = %f.path.display(), size = f.pointer.size, oid = %f.pointer.oid(),
                store = %store.describe(), secs = started.elapsed().as_secs_f64(), "large file uploaded");
            lock(&self.stored).insert(f.pointer);
        }
        if total > 0 {
            progress(Progress {
                stage: Stage::Uploading,
                done: sent,
                total,
            });
        }
        Ok(uploaded)
    }

    /// Upload a fresh backup-API copy of the large database `f`.
    fn put_sqlite_copy(
        &self,
        store: &dyn BlobStore,
        f: &snapshot::LargeFile,
    ) -> Result<(), BlobError> {
        let tmp = self.cfg.workdir.join("tmp");
        let copy = tmp.join(format!("large-sqlite-{}-upload.db", std::process::id()));
        let io = |source| BlobError::Io {
            what: "copy",
            path: f.path.clone(),
            source,
        };
        fs::create_dir_all(&tmp).map_err(io)?;
        let result = snapshot::sqlite_copy(&f.path, &copy, Duration::from_secs(10))
            .map_err(|e| io(std::io::Error::other(e.to_string())))
            .and_then(|()| store.put(&f.pointer, &copy));
        let _ = fs::remove_file(&copy);
        result
    }

    fn save_cache(&self, cache: &StatCache) {
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

    /// Snapshot, then push every local snapshot not yet on the remote.
    /// A local snapshot that could not be pushed stays queued: the next
    /// call (or [`Persister::push`]) pushes it, in order.
    pub fn snapshot_and_push(&self) -> Result<SnapshotReport, PersistError> {
        self.snapshot_and_push_with_progress(&|_| {})
    }

    /// [`Persister::snapshot_and_push`], telling `progress` how the upload
    /// of large files goes.
    pub fn snapshot_and_push_with_progress(
        &self,
        progress: &dyn Fn(Progress),
    ) -> Result<SnapshotReport, PersistError> {
        if self.restore_state() == RestoreState::Pending {
            return Err(PersistError::NotRestored);
        }
        let repo = lock(&self.repo);
        let result = self.snapshot_locked(&repo, progress).and_then(|mut report| {
            let Pushed {
                pushed,
                reparented,
                parked,
            } = self.push_locked(&repo)?;
            report.pushed = pushed;
            report.reparented = reparented;
            report.parked = parked;
            if pushed.is_some() {
                // A failed squash loses nothing: the snapshot is pushed, and
                // the next push tries again.
                match self.squash_locked(&repo) {
                    Ok(Some((head, n))) => {
                        // The newest snapshot was replayed: it has a new id.
                        report.squashed = n;
                        report.pushed = Some(head);
                        report.commit = report.commit.map(|_| head);
                        // The squash is what leaves blobs unreferenced.
                        match self.collect_blobs(&repo, head) {
                            Ok(n) => report.blobs_collected = n,
                            Err(e) => tracing::warn!(error = %e, "blob garbage collection failed; will retry after the next squash"),
                        }
                    }
                    Ok(None) => {}
                    Err(e) => tracing::warn!(error = %e, "persist history squash failed; will retry after the next push"),
                }
            }
            Ok(report)
        });
        self.record(&repo, result.as_ref().err());
        result
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

    /// Push local snapshots (queued while the remote was down, in order).
    pub fn push(&self) -> Result<Option<Oid>, PersistError> {
        if self.restore_state() == RestoreState::Pending {
            return Err(PersistError::NotRestored);
        }
        let repo = lock(&self.repo);
        let result = self.push_locked(&repo).map(|p| p.pushed);
        self.record(&repo, result.as_ref().err());
        result
    }

    fn push_locked(&self, repo: &Repository) -> Result<Pushed, PersistError> {
        const ROUNDS: u32 = 3;
        let mut out = Pushed::default();
        for _ in 0..ROUNDS {
            let Some(local) = ref_oid(repo, &self.remote.branch_ref())? else {
                return Ok(out);
            };
            // One listing: the branch head and the pending snapshots.
            let refs = self.retry(|| self.remote.list_refs(repo, "refs/"))?;
            let branch = self.remote.branch_ref();
            let remote_head = refs
                .iter()
                .find(|(n, _)| *n == branch)
                .map_or(RemoteHead::Missing, |(_, o)| RemoteHead::At(*o));
            let pending: Vec<(String, Oid)> = refs
                .into_iter()
                .filter(|(n, _)| n.starts_with(pending::PREFIX))
                .collect();
            if let RemoteHead::At(h) = remote_head {
                if h == local && pending.is_empty() {
                    repo.reference(&self.remote.tracking_ref(), h, true, "stackctl push")?;
                    return Ok(out);
                }
                if !is_ancestor(repo, h, local)? {
                    // Someone else moved the branch: put our snapshots on top
                    // of theirs. Our snapshots are those after the last remote
                    // head we knew (read before the fetch moves it): in a
                    // shallow workdir, `h`'s history may not reach them.
                    let known = ref_oid(repo, &self.remote.tracking_ref())?;
                    self.retry(|| self.remote.fetch(repo, self.fetch_depth()))?;
                    // Never replay a full tree over their changes: merge per file.
                    let merged = self.merge_onto(repo, known, h)?;
                    self.record_conflicts(&merged.conflicts);
                    out.reparented = true;
                    tracing::info!(remote_head = %h, taken = merged.taken, conflicts = merged.conflicts.len(),
                        "persist remote moved: snapshots merged onto it file by file");
                    continue;
                }
            }
            let local = ref_oid(repo, &self.remote.branch_ref())?.unwrap_or(local);
            match self.ensure_lease(repo, false) {
                Ok(()) => {}
                // Nothing of ours to save: the holder folds the pending ones.
                Err(PersistError::LeaseHeld { .. }) if remote_head == RemoteHead::At(local) => {
                    return Ok(out)
                }
                Err(PersistError::LeaseHeld { holder, expires_in }) => {
                    // Never drop a snapshot because of the lease: park it
                    // where the holder folds it in.
                    let parked = self.park(repo, local)?;
                    tracing::warn!(holder = %holder, expires_in_s = expires_in, pending = %parked, commit = %local,
                        "another stackctl holds the write lease: snapshot parked for it to fold in");
                    out.parked = Some(parked);
                    return Ok(out);
                }
                Err(e) => return Err(e),
            }
            let folded = self.fold(repo, &pending)?;
            let local = ref_oid(repo, &self.remote.branch_ref())?.unwrap_or(local);
            if remote_head == RemoteHead::At(local) {
                // Every pending snapshot was already in the branch.
                self.drop_folded(repo, &folded);
                repo.reference(&self.remote.tracking_ref(), local, true, "stackctl push")?;
                return Ok(out);
            }
            match self.retry(|| self.remote.push(repo, local, None)) {
                Ok(()) => {
                    tracing::info!(commit = %local, "persist snapshot pushed");
                    self.drop_folded(repo, &folded);
                    out.pushed = Some(local);
                    return Ok(out);
                }
                // Lost a race: look again.
                Err(RemoteError::Rejected { .. }) if self.remote_moved(repo, local) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(PersistError::Contended(ROUNDS))
    }

    /// Hold the write lease before pushing: acquire, renew, or take over a
    /// stale one; refuse while another instance holds it.
    fn ensure_lease(&self, repo: &Repository, force: bool) -> Result<(), PersistError> {
        let ttl = self.cfg.lease_ttl;
        if ttl.is_zero() {
            return Ok(());
        }
        // Renewed recently: nobody may take it over before `ttl`.
        if !force && lock(&self.lease).is_some_and(|(_, at)| at.elapsed() < ttl / 4) {
            return Ok(());
        }
        let seen = "refs/stackctl/remote-lease";
        let current = self.retry(|| self.remote.fetch_ref(repo, lease::LEASE_REF, seen))?;
        let info = match current {
            RemoteHead::Missing => None,
            RemoteHead::At(o) => repo
                .find_commit(o)
                .ok()
                .and_then(|c| lease::parse(&String::from_utf8_lossy(c.message_bytes()))),
        };
        self.saw_lease(info.as_ref());
        let now = unix_now();
        let gone = info
            .as_ref()
            .and_then(|i| i.holder.as_ref())
            .is_some_and(holder::gone);
        let decision = lease::decide(info.as_ref(), &self.instance, now, ttl, gone);
        if !matches!(
            decision,
            lease::Decision::Renew | lease::Decision::Wait { .. }
        ) {
            // While we did not hold the lease another instance may have
            // garbage-collected blobs we remember as stored: forget them, so
            // the next snapshot checks the store again instead of committing
            // a pointer to a deleted blob.
            lock(&self.stored).clear();
        }
        match decision {
            lease::Decision::Wait { holder, expires_in } => {
                return Err(PersistError::LeaseHeld { holder, expires_in })
            }
            lease::Decision::TakeOver { from, age } => {
                tracing::warn!(previous = %from, silent_for_s = age, instance = %self.instance,
                    "taking over the write lease of a stackctl that stopped renewing it");
            }
            lease::Decision::Abandoned { from, pid } => {
                tracing::warn!(previous = %from, pid, instance = %self.instance,
                    "taking over the write lease of a stackctl whose process is gone from this host");
            }
            lease::Decision::Acquire => {
                tracing::info!(instance = %self.instance, "write lease acquired");
            }
            lease::Decision::Renew => {}
        }
        let info = lease::LeaseInfo {
            instance: self.instance.clone(),
            heartbeat: now,
            holder: Some(holder::me()),
        };
        let commit = lease_commit(repo, &info)?;
        match self.retry(|| {
            self.remote
                .push_to(repo, commit, lease::LEASE_REF, Some(current))
        }) {
            Ok(()) => {
                *lock(&self.lease) = Some((commit, std::time::Instant::now()));
                self.saw_lease(Some(&info));
                Ok(())
            }
            // Someone else changed it between our read and our push.
            Err(RemoteError::Rejected { .. }) => Err(PersistError::LeaseHeld {
                holder: "another instance".into(),
                expires_in: i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX),
            }),
            Err(e) => Err(e.into()),
        }
    }

    /// Renew the write lease now (the idle loop calls this so an instance
    /// with nothing to push keeps it).
    pub fn heartbeat(&self) -> Result<(), PersistError> {
        let repo = lock(&self.repo);
        self.ensure_lease(&repo, true)
    }

    /// Give the write lease up (after the final push at shutdown), so the
    /// next instance need not wait for it to expire.
    pub fn release_lease(&self) -> Result<(), PersistError> {
        let Some((ours, _)) = *lock(&self.lease) else {
            return Ok(());
        };
        let repo = lock(&self.repo);
        let info = lease::LeaseInfo {
            instance: String::new(),
            heartbeat: unix_now(),
            holder: None,
        };
        let commit = lease_commit(&repo, &info)?;
        self.retry(|| {
            self.remote
                .push_to(&repo, commit, lease::LEASE_REF, Some(RemoteHead::At(ours)))
        })?;
        *lock(&self.lease) = None;
        self.saw_lease(Some(&info));
        tracing::info!(instance = %self.instance, "write lease released");
        Ok(())
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

    /// Squash the branch to `keep` snapshots when it grew past the slack,
    /// and push the rewrite with a lease on the head it replaces. Returns how
    /// many snapshots were dropped, and the new head.
    fn squash_locked(&self, repo: &Repository) -> Result<Option<(Oid, usize)>, PersistError> {
        let keep = self.cfg.keep as usize;
        let Some(head) = ref_oid(repo, &self.remote.branch_ref())? else {
            return Ok(None);
        };
        let limit = keep + history::slack(keep) + 1;
        if !history::squash_due(history::first_parent_chain(repo, head, limit)?.len(), keep) {
            return Ok(None);
        }
        // A shallow workdir holds at least the `keep` newest snapshots (see
        // `fetch_depth`): enough to rewrite, the dropped ones are not needed.
        let Some((new_head, dropped)) = history::squash(repo, head, keep)? else {
            return Ok(None);
        };
        let lease = RemoteHead::At(head);
        self.retry(|| self.remote.push(repo, new_head, Some(lease)))?;
        repo.reference_matching(
            &self.remote.branch_ref(),
            new_head,
            true,
            head,
            "stackctl squash",
        )?;
        tracing::info!(dropped, keep, head = %new_head, "persist history squashed");
        Ok(Some((new_head, dropped)))
    }

    /// Delete the blobs no snapshot in the branch from `head` (just
    /// squashed: it ends at a root) refers to, once older than the grace
    /// period. Returns how many were deleted. A store that cannot list
    /// blobs (`lfs`) is left alone.
    fn collect_blobs(&self, repo: &Repository, head: Oid) -> Result<usize, PersistError> {
        let Some(store) = &self.blobs else {
            return Ok(0);
        };
        let blob_err = |source| PersistError::BlobStore(source);
        let Some(stored) = store.list().map_err(blob_err)? else {
            tracing::debug!(store = %store.describe(), "blob store cannot list blobs: no garbage collection");
            return Ok(0);
        };
        let Some(referenced) = gc::referenced(repo, head)? else {
            tracing::warn!("history does not reach its root here: blob garbage collection skipped");
            return Ok(0);
        };
        let doomed = gc::decide(&referenced, &stored, self.gc_grace);
        let mut deleted = 0;
        let mut first_err = None;
        for b in &doomed {
            // Forget it first: a later snapshot of the same content uploads it again.
            lock(&self.stored).retain(|p| p.sha256 != b.sha256);
            match store.delete(&b.sha256) {
                Ok(()) => {
                    deleted += 1;
                    tracing::info!(oid = %hex::encode(b.sha256), size = b.size, age_s = b.age.as_secs(),
                        store = %store.describe(), "unreferenced blob deleted");
                }
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        match first_err {
            Some(e) => Err(blob_err(e)),
            None => Ok(deleted),
        }
    }

    fn remote_moved(&self, repo: &Repository, local: Oid) -> bool {
        matches!(self.remote.head(repo), Ok(RemoteHead::At(h)) if !is_ancestor(repo, h, local).unwrap_or(false))
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

/// The blob store `persist.large_files` asks for.
fn store_config(
    cfg: &Config,
    lf: &crate::manifest::LargeFiles,
) -> Result<StoreConfig, PersistError> {
    use crate::manifest::BlobStore as M;
    Ok(match &lf.store {
        M::None => StoreConfig::None,
        M::Dir(p) => StoreConfig::Dir(p.clone()),
        M::Lfs => {
            let url = match &lf.url {
                Some(u) => u.clone(),
                None => {
                    let remote = remote::resolve_url(&cfg.remote)?;
                    blob::lfs_endpoint(&remote.url).ok_or_else(|| {
                        PersistError::BlobStore(BlobError::Unsupported(format!(
                            "the remote `{}` has no LFS endpoint: set `persist.large_files.url`",
                            crate::redact::url(&remote.url)
                        )))
                    })?
                }
            };
            StoreConfig::Lfs { url }
        }
        M::GithubRelease => StoreConfig::GithubRelease {
            repo: blob::github_repo(&cfg.remote).ok_or_else(|| {
                PersistError::BlobStore(BlobError::Unsupported(format!(
                    "`github-release` needs a GitHub remote (owner/repo), not `{}`",
                    crate::redact::url(&cfg.remote)
                )))
            })?,
            tag: lf.tag.clone(),
            api: blob::github::API.to_string(),
        },
    })
}

/// Pushes a tiny orphan commit as `refs/tags/<tag>` to the backup remote,
/// for a release to hang on (the GitHub store calls it before creating one).
fn tag_anchor(cfg: &Config) -> Result<blob::github::Anchor, PersistError> {
    let url = remote::resolve_url(&cfg.remote)?;
    let token = cfg.token.clone();
    let branch = cfg.branch.clone();
    let git_dir = cfg.workdir.join("repo.git");
    Ok(Box::new(move |tag: &str| -> Result<(), String> {
        let remote = Remote::new(url.clone(), token.clone(), &branch);
        let repo = Repository::open_bare(&git_dir).map_err(|e| e.message().to_string())?;
        let text = format!("Anchor of the release `{tag}` holding stackctl's large-file blobs.\nNo data here: a tag pins its commit's tree forever.\n");
        let commit = (|| -> Result<Oid, git2::Error> {
            let blob = repo.blob(text.as_bytes())?;
            let mut tb = repo.treebuilder(None)?;
            tb.insert("README", blob, 0o100644)?;
            let tree = repo.find_tree(tb.write()?)?;
            let sig = snapshot::signature()?;
            repo.commit(
                None,
                &sig,
                &sig,
                &format!("stackctl blob release {tag}"),
                &tree,
                &[],
            )
        })()
        .map_err(|e| e.message().to_string())?;
        match remote.push_to(
            &repo,
            commit,
            &format!("refs/tags/{tag}"),
            Some(RemoteHead::Missing),
        ) {
            // Already there (an earlier attempt, another instance): fine.
            Ok(()) | Err(RemoteError::Rejected { .. }) => Ok(()),
            Err(e) => Err(remote.scrub(&e.to_string())),
        }
    }))
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// An orphan commit with an empty tree whose message is the lease.
fn lease_commit(repo: &Repository, info: &lease::LeaseInfo) -> Result<Oid, git2::Error> {
    let tree = repo.treebuilder(None)?.write()?;
    let tree = repo.find_tree(tree)?;
    let sig = snapshot::signature()?;
    repo.commit(None, &sig, &sig, &lease::render(info), &tree, &[])
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

/// Remove `*.lock` files under a git directory (refs, packed-refs, HEAD,
/// config, shallow). Only call while holding the workdir lock.
fn remove_stale_git_locks(git_dir: &Path) {
    fn walk(dir: &Path, depth: usize) {
        let Ok(rd) = fs::read_dir(dir) else { return };
        for e in rd.flatten() {
            let p = e.path();
            let is_dir = e.file_type().is_ok_and(|t| t.is_dir());
            // Objects are written under temp names and renamed: no locks there.
            if is_dir && depth < 16 && e.file_name() != "objects" {
                walk(&p, depth + 1);
            } else if p.extension().is_some_and(|x| x == "lock") {
                tracing::warn!(path = %p.display(), "removing a stale git lock file left by an interrupted stackctl");
                let _ = fs::remove_file(&p);
            }
        }
    }
    walk(git_dir, 0);
}

/// Commits on `local` not reachable from `remote` (all of them without one).
fn ahead(repo: &Repository, local: Oid, remote: Option<Oid>) -> usize {
    let count = || -> Result<usize, git2::Error> {
        let mut walk = repo.revwalk()?;
        walk.push(local)?;
        if let Some(r) = remote.filter(|r| repo.find_commit(*r).is_ok()) {
            walk.hide(r)?;
        }
        Ok(walk.count())
    };
    count().unwrap_or(0)
}

fn ref_oid(repo: &Repository, name: &str) -> Result<Option<Oid>, git2::Error> {
    match repo.refname_to_id(name) {
        Ok(o) => Ok(Some(o)),
        Err(e) if e.code() == git2::ErrorCode::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Is `ancestor` reachable from `of` (or equal to it)? Unknown objects: no.
fn is_ancestor(repo: &Repository, ancestor: Oid, of: Oid) -> Result<bool, git2::Error> {
    if ancestor == of {
        return Ok(true);
    }
    if repo.find_commit(ancestor).is_err() || repo.find_commit(of).is_err() {
        return Ok(false);
    }
    repo.graph_descendant_of(of, ancestor)
}

/// The snapshot `at` names, searching first parents from `head`: a commit id
/// (or unique prefix), or a UTC date for the newest snapshot at or before it.
fn resolve_at(repo: &Repository, head: Oid, at: &str) -> Result<Oid, PersistError> {
    let missing = || PersistError::NoSuchSnapshot(at.to_string());
    if let Some(limit) = parse_date(at) {
        let mut next = Some(repo.find_commit(head)?);
        while let Some(c) = next.take() {
            if c.time().seconds() <= limit {
                return Ok(c.id());
            }
            next = c.parent(0).ok();
        }
        return Err(missing());
    }
    if at.len() < 4 || !at.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(missing());
    }
    let obj = repo.revparse_single(at).map_err(|_| missing())?;
    let commit = obj.peel_to_commit().map_err(|_| missing())?;
    // Only snapshots of this branch: no arbitrary objects of the repository.
    if commit.id() == head || repo.graph_descendant_of(head, commit.id()).unwrap_or(false) {
        Ok(commit.id())
    } else {
        Err(missing())
    }
}

/// `YYYY-mm-dd`, `YYYY-mm-dd HH:MM`, `YYYY-mm-ddTHH:MM:SS` (UTC, optional `Z`)
/// → seconds since the epoch (a bare date means its last second).
pub fn parse_date(s: &str) -> Option<i64> {
    read_date(s).ok()
}

/// [`parse_date`], saying what is wrong: `2026-02-31` is an error, not
/// 3 March (issue 12 item 7).
pub fn read_date(s: &str) -> Result<i64, String> {
    const FORM: &str =
        "give a date like `2026-01-31`, `2026-01-31 12:00` or `2026-01-31T12:00:00Z` (UTC)";
    let bad = || format!("`{s}` is not a date: {FORM}");
    let s = s.trim().trim_end_matches('Z').trim_end_matches(" UTC");
    let (date, time) = match s.split_once([' ', 'T']) {
        Some((d, t)) => (d, Some(t)),
        None => (s, None),
    };
    let num = |p: Option<&str>| -> Result<i64, String> {
        match p {
            Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => {
                p.parse().map_err(|_| bad())
            }
            _ => Err(bad()),
        }
    };
    let mut d = date.split('-');
    let (y, m, day) = (num(d.next())?, num(d.next())?, num(d.next())?);
    if d.next().is_some() || date.len() != 10 {
        return Err(bad());
    }
    if !(1..=12).contains(&m) {
        return Err(format!("`{s}`: there is no month {m}; {FORM}"));
    }
    let leap = y % 4 == 0 && (y % 100 != 0 || y % 400 == 0);
    let month_days = match m {
        2 if leap => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    };
    if !(1..=month_days).contains(&day) {
        return Err(format!(
            "`{s}` is not a date: month {m} of {y} has {month_days} days"
        ));
    }
    let (hh, mm, ss) = match time {
        None => (23, 59, 59),
        Some(t) => {
            let mut p = t.split(':');
            let hh = num(p.next())?;
            let mm = num(p.next())?;
            let ss = match p.next() {
                Some(x) => num(Some(x))?,
                None => 0,
            };
            if p.next().is_some() || hh > 23 || mm > 59 || ss > 60 {
                return Err(format!(
                    "`{s}`: `{t}` is not a time of day (HH:MM or HH:MM:SS)"
                ));
            }
            (hh, mm, ss)
        }
    };
    // Days from civil (Howard Hinnant).
    let y2 = if m <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Ok(days * 86_400 + hh * 3600 + mm * 60 + ss)
}

/// `restore --at`: a snapshot id (hex, at least 4 digits) or a date that
/// [`read_date`] accepts; anything else is a usage error (exit 2) before
/// any work starts.
pub fn at_arg(s: &str) -> Result<String, String> {
    let t = s.trim();
    if t.len() >= 4 && t.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Ok(t.to_string());
    }
    read_date(t)
        .map(|_| t.to_string())
        .map_err(|e| format!("{e}; or give a snapshot id from `stackctl snapshots`"))
}

/// `files` and `bytes` from a stackctl snapshot message.
fn parse_counts(message: &str) -> (Option<u64>, Option<u64>) {
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

/// Is `path` one of the persisted roots or below one? (For callers deciding
/// whether a change event matters.)
pub fn is_persisted(cfg: &Config, path: &Path) -> bool {
    cfg.paths.iter().any(|p| path.starts_with(&p.path))
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    /// A persister on `data` with a local bare remote, no lease.
    fn config(root: &Path, threshold: u64) -> Config {
        let remote = root.join("remote.git");
        if !remote.exists() {
            Repository::init_bare(&remote).unwrap();
        }
        Config {
            remote: format!("file://{}", remote.display()),
            token: None,
            branch: "main".into(),
            workdir: root.join("work"),
            paths: vec![PathConfig {
                path: root.join("data"),
                exclude: vec![],
            }],
            exclude: vec![],
            threshold,
            keep: 0,
            instance: "test".into(),
            lease_ttl: Duration::ZERO,
            readiness_file: None,
            retries: 1,
            retry_initial: Duration::from_millis(10),
            retry_max: Duration::from_millis(10),
        }
    }

    /// (inode, mtime ns, ctime ns) of every entry under `dir`.
    fn stamps(dir: &Path) -> std::collections::BTreeMap<PathBuf, (u64, i64, i64, i64, i64)> {
        let mut out = std::collections::BTreeMap::new();
        let mut todo = vec![dir.to_path_buf()];
        while let Some(d) = todo.pop() {
            for e in fs::read_dir(&d).unwrap() {
                let p = e.unwrap().path();
                let m = fs::symlink_metadata(&p).unwrap();
                if m.is_dir() {
                    todo.push(p.clone());
                }
                out.insert(
                    p,
                    (
                        m.ino(),
                        m.mtime(),
                        m.mtime_nsec(),
                        m.ctime(),
                        m.ctime_nsec(),
                    ),
                );
            }
        }
        out
    }

    /// Backdate every file so the stat cache may trust it (as it would
    /// data written more than a moment before a snapshot).
    fn backdate(dir: &Path) {
        let old = SystemTime::now() - Duration::from_secs(3600);
        for (p, _) in stamps(dir) {
            if fs::symlink_metadata(&p).unwrap().is_file() {
                fs::File::options()
                    .write(true)
                    .open(&p)
                    .unwrap()
                    .set_modified(old)
                    .unwrap();
            }
        }
    }

    // Issue 4 (benchmark): a restore over files that already match must not
    // rewrite (and fdatasync) every one of them.
    #[test]
    fn a_restore_over_identical_files_writes_nothing_and_the_next_snapshot_reads_nothing() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().canonicalize().unwrap();
        let data = root.join("data");
        fs::create_dir_all(data.join("sub/deeper")).unwrap();
        for i in 0..20 {
            fs::write(
                data.join(format!("sub/f{i}.json")),
                format!("{{\"n\":{i}}}"),
            )
            .unwrap();
        }
        fs::write(data.join("sub/deeper/run.sh"), "#!/bin/sh\n").unwrap();
        fs::set_permissions(
            data.join("sub/deeper/run.sh"),
            fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        std::os::unix::fs::symlink("sub/f1.json", data.join("link")).unwrap();
        let db = rusqlite::Connection::open(data.join("app.db")).unwrap();
        db.execute_batch("create table t(x); insert into t values (1),(2);")
            .unwrap();
        drop(db);
        backdate(&data);
        let cfg = config(&root, 1 << 20);
        let p = Persister::with_config(cfg.clone()).unwrap();
        p.restore(&RestoreOptions::default()).unwrap();
        p.snapshot_and_push().unwrap().commit.unwrap();
        // The live database differs from its snapshot copy byte for byte:
        // the first restore puts the copy in place, and only that.
        let r = p.restore(&RestoreOptions::default()).unwrap();
        assert_eq!(r.changes, vec![data.join("app.db")]);
        assert_eq!(r.applied.files, 1, "{:?}", r.applied);
        backdate(&data);
        drop(p);

        let files = 22;
        for wiped_workdir in [false, true] {
            if wiped_workdir {
                // No stat cache: every file is hashed, still none written.
                fs::remove_dir_all(&cfg.workdir).unwrap();
            }
            let before = stamps(&data);
            let p = Persister::with_config(cfg.clone()).unwrap();
            let r = p.restore(&RestoreOptions::default()).unwrap();
            assert!(matches!(r.state, RestoreState::Restored(_)), "{r:?}");
            assert!(r.changes.is_empty(), "{:?}", r.changes);
            assert_eq!(
                (r.applied.files, r.applied.symlinks, r.applied.unchanged),
                (0, 0, files + 1),
                "{:?}",
                r.applied
            );
            assert_eq!(stamps(&data), before, "nothing was rewritten or touched");
            let s = p.snapshot_and_push().unwrap();
            assert_eq!((s.read, s.commit), (0, None), "{s:?}");
        }

        // Into a wiped data directory: every file written, and the snapshot
        // right after the restore trusts their stat (reads nothing).
        fs::remove_dir_all(&data).unwrap();
        let p = Persister::with_config(cfg.clone()).unwrap();
        let r = p.restore(&RestoreOptions::default()).unwrap();
        assert_eq!((r.applied.files, r.applied.symlinks), (files, 1));
        let s = p.snapshot_and_push().unwrap();
        assert_eq!((s.read, s.commit), (0, None), "{s:?}");
        assert_eq!(
            fs::metadata(data.join("sub/deeper/run.sh")).unwrap().mode() & 0o777,
            0o755
        );
        // A file changed after the restore is seen, even within the same second.
        fs::write(data.join("sub/f3.json"), "{\"n\":9}").unwrap();
        let s = p.snapshot_and_push().unwrap();
        assert_eq!(s.read, 1, "{s:?}");
        assert!(s.commit.is_some());
    }

    // Issue 5: a database at or above the threshold is copied with the
    // backup API like a small one; its live file is never uploaded.
    #[test]
    fn a_large_sqlite_database_written_during_snapshots_restores_consistent() {
        use std::sync::atomic::{AtomicBool, Ordering};
        let d = tempfile::tempdir().unwrap();
        let root = d.path().canonicalize().unwrap();
        let data = root.join("data");
        fs::create_dir_all(&data).unwrap();
        let path = data.join("big.db");
        let db = rusqlite::Connection::open(&path).unwrap();
        db.pragma_update(None, "journal_mode", "WAL").unwrap();
        // Committed rows stay in the -wal file: a raw copy of the database
        // file alone would miss them.
        db.pragma_update(None, "wal_autocheckpoint", 0).unwrap();
        db.execute_batch("create table t(x blob);").unwrap();
        for _ in 0..40 {
            db.execute("insert into t values (randomblob(4000))", [])
                .unwrap();
        }
        // The file itself is above the threshold...
        db.execute_batch("pragma wal_checkpoint(truncate);")
            .unwrap();
        // ...and these rows are only in the WAL.
        for _ in 0..10 {
            db.execute("insert into t values (randomblob(4000))", [])
                .unwrap();
        }
        let cfg = config(&root, 64 * 1024);
        let store = StoreConfig::Dir(root.join("blobs"));
        let p = Persister::with_store(cfg.clone(), &store).unwrap();
        p.restore(&RestoreOptions::default()).unwrap();

        let stop = Arc::new(AtomicBool::new(false));
        let writer = {
            let stop = stop.clone();
            let path = path.clone();
            std::thread::spawn(move || {
                let c = rusqlite::Connection::open(&path).unwrap();
                c.busy_timeout(Duration::from_secs(5)).unwrap();
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    c.execute_batch(
                        "begin; insert into t values (randomblob(3000)); \
                         update t set x = randomblob(2000) where rowid % 7 = 0; commit;",
                    )
                    .unwrap();
                    n += 1;
                }
                n
            })
        };
        let mut commits = 0;
        for _ in 0..3 {
            let r = p.snapshot_and_push().unwrap();
            assert_eq!(r.large, 1, "{r:?}");
            assert!(r.sqlite >= 1, "{r:?}");
            commits += usize::from(r.commit.is_some());
        }
        stop.store(true, Ordering::Relaxed);
        assert!(writer.join().unwrap() > 0);
        assert!(commits >= 1);
        // No copies left behind in the workdir.
        let left: Vec<_> = fs::read_dir(cfg.workdir.join("tmp"))
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert!(left.is_empty(), "{left:?}");
        drop(db);
        drop(p);

        fs::remove_dir_all(&data).unwrap();
        fs::remove_dir_all(&cfg.workdir).unwrap();
        let p = Persister::with_store(cfg, &store).unwrap();
        let r = p.restore(&RestoreOptions::default()).unwrap();
        assert_eq!(r.applied.large_files, 1, "{:?}", r.applied);
        let c = rusqlite::Connection::open(&path).unwrap();
        let ok: String = c
            .query_row("pragma integrity_check", [], |r| r.get(0))
            .unwrap();
        assert_eq!(ok, "ok");
        let rows: i64 = c
            .query_row("select count(*) from t", [], |r| r.get(0))
            .unwrap();
        assert!(
            rows >= 50,
            "rows committed to the WAL before the snapshot: {rows}"
        );
    }

    #[test]
    fn progress_reads_as_status_text() {
        assert_eq!(
            Progress::restoring(12, 40).to_string(),
            "restoring (12 of 40 files)"
        );
        let up = Progress {
            stage: Stage::Uploading,
            done: 3 << 20,
            total: 12 << 20,
        };
        assert_eq!(up.to_string(), "uploading large files (3.0 of 12.0 MiB)");
    }

    #[test]
    fn a_persister_can_be_shared_across_threads() {
        fn shareable<T: Send + Sync>() {}
        shareable::<Persister>();
    }

    #[test]
    fn dates_parse_as_utc() {
        let table: &[(&str, Option<i64>)] = &[
            ("1970-01-01 00:00", Some(0)),
            ("1970-01-01", Some(86_399)),
            ("2000-02-29T00:00:00Z", Some(951_782_400)),
            ("2026-09-21 14:13:20 UTC", Some(1_790_000_000)),
            ("2026-13-01", None),
            ("2026-1-1", None),
            ("abc", None),
            ("2026-01-01 25:00", None),
            // Issue 12 item 7: was read as 3 March.
            ("2026-02-31", None),
            ("2026-02-29", None),
            ("2024-02-29", Some(1_709_251_199)),
            ("2026-04-31", None),
            ("2026-00-10", None),
            ("+026-01-01", None),
            ("2026-01-01 -1:00", None),
        ];
        for (input, want) in table {
            assert_eq!(parse_date(input), *want, "{input}");
            if let Some(secs) = want {
                if input.len() > 10 {
                    assert!(snapshot::format_utc(*secs).starts_with(&input[..16].replace('T', " ")));
                }
            }
        }
    }

    #[test]
    fn a_bad_at_says_what_is_wrong() {
        assert_eq!(at_arg("2026-01-31").as_deref(), Ok("2026-01-31"));
        assert_eq!(at_arg("abc1234").as_deref(), Ok("abc1234"));
        assert_eq!(
            at_arg("2026-02-31").unwrap_err(),
            "`2026-02-31` is not a date: month 2 of 2026 has 28 days; or give a snapshot id from `stackctl snapshots`"
        );
        assert!(at_arg("yesterday").unwrap_err().contains("is not a date"));
    }

    #[test]
    fn counts_are_read_back_from_messages() {
        assert_eq!(
            parse_counts("snapshot 2026-01-01 00:00:00 UTC: 3 files, 42 bytes"),
            (Some(3), Some(42))
        );
        assert_eq!(parse_counts("auto: 2025-01-01 00:00:00"), (None, None));
    }
}
