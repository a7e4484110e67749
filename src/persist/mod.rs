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
//! - [`live`]: what the running stack saw (last push, lease, large files, next snapshot) for `GET /admin/persist`.
//! - [`retry`]: the one retry policy (backoff schedule, waits cut by the deadline).
//! - [`error`]: [`PersistError`], and which errors are worth retrying.
//! - [`tuning`]: [`Tuning`], the runtime knobs not in `persist:` (instance, lease TTL, retries), and the blob store `persist:` asks for.
//! - [`report`]: what restores and snapshots did, and [`PersistStatus`] for `status`.
//! - [`git`]: small helpers on the workdir repository (refs, ancestry, stale locks, the release anchor).
//! - [`persister`]: [`Persister`], in steps: restoring, backup (snapshot and lease), push.
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
pub mod deadline;
mod error;
pub mod gc;
mod git;
pub mod history;
pub mod holder;
pub mod lease;
pub mod lifecycle;
pub mod live;
pub mod merge;
pub mod pending;
mod persister;
pub mod plan;
pub mod pointer;
pub mod progress;
pub mod remote;
mod report;
pub mod restore;
pub mod retry;
pub mod schedule;
pub mod snapshot;
mod tuning;

pub use error::PersistError;
pub use persister::{at_arg, parse_date, read_date, Persister};
pub use report::{
    PersistStatus, Progress, RestoreOptions, RestoreReport, RestoreState, SnapshotInfo,
    SnapshotReport, Stage,
};
pub use tuning::{Tuning, DEFAULT_LEASE_TTL};

// For the steps that extend `Persister` from beside it (merge, pending).
use git::is_ancestor;
use persister::lock;
