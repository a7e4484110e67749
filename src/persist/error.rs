//! [`PersistError`], the errors of the persistence layer, and which of them
//! are worth retrying.

use std::path::PathBuf;

use super::blob::BlobError;
use super::plan::PlanError;
use super::remote::{self, RemoteError};
use super::restore::RestoreError;
use super::snapshot::SnapshotError;

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
