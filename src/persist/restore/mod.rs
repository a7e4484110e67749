//! Restore: write a snapshot's files back in place, with their modes.
//!
//! Two steps. [`plan`](fn@plan) walks the commit's tree for each persisted path and
//! turns it into operations, refusing every entry that could write outside
//! the declared paths (`..`, `/` or NUL in a name, absolute or escaping
//! symlinks, submodules, and the same for names derived from entries: the
//! file an original `*.pointer` stands for): a hostile or damaged repository
//! must not reach `/etc`. If anything is refused, nothing is written. Every
//! removal and write then goes through one check (`guard`): the path is a
//! persisted root or below one by plain names. [`apply()`] then writes
//! each file atomically (temp file + rename, so a symlink planted at the
//! destination is replaced, never followed), never writes through a symlinked
//! directory, and removes stale SQLite `-wal`/`-shm`/`-journal` files next to
//! each restored database. A path that already holds its snapshot content is
//! left alone (the stat cache says so, or its hash does), so a restore over
//! identical data writes nothing; what is written is made durable by one
//! `syncfs` at the end rather than an fdatasync per file, and gets a
//! stat-cache entry so the next snapshot does not read it back.
//!
//! Large files (LFS pointers tracked by the snapshot's `.gitattributes`, and
//! the original's `*.pointer` JSON files) are hydrated from the blob store:
//! each blob downloaded once, streamed to a temp file beside its target,
//! size and SHA-256 verified, then renamed into place. A file already on
//! disk with the right content is left as it is. Failures are collected by
//! path; everything else is still restored.

use std::io;
use std::path::{Path, PathBuf};

use git2::Oid;

use super::pointer::{OriginalPointer, Pointer};

mod apply;
mod compare;
mod guard;
mod hydrate;
pub mod marker;
pub mod prune;
mod walk;
mod write;

pub use apply::{apply, Blobs};
pub use compare::changes;
pub use walk::plan;
pub(super) use write::remove_live;

/// Errors while restoring.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// The snapshot holds entries that would write outside the persisted paths.
    #[error("refusing to restore: the snapshot holds {} unsafe entr{} ({}); nothing was written. Inspect the repository, or restore an older snapshot", .0.len(), if .0.len() == 1 { "y" } else { "ies" }, .0.iter().take(5).cloned().collect::<Vec<_>>().join("; "))]
    Unsafe(Vec<String>),
    /// Writing a restored file failed.
    #[error("cannot write `{path}` during restore: {source}; check permissions and free space, then run `stackctl restore` again")]
    Write {
        /// The path.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// Some large files could not be fetched from the blob store.
    #[error("could not restore {} large file{} from the blob store: {}; everything else was restored. {}", .failed.len(), if .failed.len() == 1 { "" } else { "s" }, .failed.iter().take(5).map(|(p, e)| format!("`{}`: {e}", p.display())).collect::<Vec<_>>().join("; "), if *.retryable { "Will retry; check the network" } else { "Check `persist.large_files`, or restore an older snapshot" })]
    Blobs {
        /// Each failed path and why.
        failed: Vec<(PathBuf, String)>,
        /// Would trying again help some of them (network errors)?
        retryable: bool,
    },
    /// Reading the snapshot from the workdir's repository failed.
    #[error("cannot read the snapshot from the workdir repository: {0}; delete the workdir and restore again")]
    Git(#[from] git2::Error),
}

/// One thing restore will do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Make sure a real directory exists (mode applied at the end).
    Dir {
        /// Absolute path.
        path: PathBuf,
        /// Permission bits.
        mode: u32,
    },
    /// Write a file from a blob.
    File {
        /// Absolute path.
        path: PathBuf,
        /// The blob.
        oid: Oid,
        /// Permission bits.
        mode: u32,
    },
    /// Write a large file from the blob store (an LFS pointer in the tree).
    Large {
        /// Absolute path.
        path: PathBuf,
        /// The blob.
        pointer: Pointer,
        /// Permission bits.
        mode: u32,
    },
    /// Hydrate the file one of the original's `*.pointer` files stands for.
    /// Once hydrated the pointer file goes from the live directory (and so
    /// from the branch at the next snapshot, which holds the file); if the
    /// blob cannot be had, the pointer file is written instead, so the
    /// next snapshot still refers to it.
    Original {
        /// Absolute path of the file (the pointer's name without `.pointer`).
        path: PathBuf,
        /// The pointer file's content.
        original: Box<OriginalPointer>,
        /// The blob.
        pointer: Pointer,
        /// The pointer file: absolute path, git blob, permission bits.
        file: (PathBuf, Oid, u32),
    },
    /// Create a symlink (already checked to stay inside).
    Symlink {
        /// Absolute path.
        path: PathBuf,
        /// Link target as stored.
        target: PathBuf,
    },
}

/// The operations for a snapshot, and what was refused.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    /// Operations, parents before children.
    pub ops: Vec<Op>,
    /// Unsafe entries (tree path and reason).
    pub refused: Vec<String>,
    /// Persisted paths that the snapshot does not hold.
    pub absent: Vec<PathBuf>,
    /// Persisted roots (each operation is below one of them).
    pub roots: Vec<PathBuf>,
    /// Entries the snapshot does not hold, deleted after the operations
    /// (children first; see [`prune::extras`]). Empty unless asked for.
    pub prune: Vec<PathBuf>,
    /// SQLite `-wal`/`-shm`/`-journal` files in the snapshot (the original
    /// deployment committed them raw), not restored: a side file copied
    /// apart from its database cannot be trusted to match it, and stackctl
    /// snapshots a database whole through SQLite's backup API.
    pub dropped_sidecars: Vec<PathBuf>,
}

impl Plan {
    /// How many large files the plan writes, and their bytes in all (an
    /// upper bound of what is downloaded: some may already be in place).
    pub fn large_files(&self) -> (usize, u64) {
        self.ops
            .iter()
            .filter_map(|op| match op {
                Op::Large { pointer, .. } | Op::Original { pointer, .. } => Some(pointer.size),
                _ => None,
            })
            .fold((0, 0), |(n, bytes), size| (n + 1, bytes + size))
    }
}

/// What a restore did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Applied {
    /// Files written.
    pub files: u64,
    /// Bytes written.
    pub bytes: u64,
    /// Directories made sure of.
    pub dirs: u64,
    /// Symlinks created.
    pub symlinks: u64,
    /// Stale SQLite side files removed.
    pub removed_sidecars: Vec<PathBuf>,
    /// Large files written from the blob store (or copied from one that was).
    pub large_files: u64,
    /// Blobs actually downloaded.
    pub downloaded: u64,
    /// Large files already on disk with the right content: not downloaded.
    pub already_present: u64,
    /// Files and symlinks already as in the snapshot: not written.
    pub unchanged: u64,
    /// Paths whose content, type or mode was changed.
    pub changed: Vec<PathBuf>,
    /// Entries deleted because the snapshot does not hold them ([`Plan::prune`]).
    pub deleted: Vec<PathBuf>,
    /// SQLite side files in the snapshot, not restored ([`Plan::dropped_sidecars`]).
    pub dropped_sidecars: Vec<PathBuf>,
    /// Large files left absent because their blob is missing or corrupt in
    /// the store (retrying would not help), and why: everything else was
    /// restored.
    pub failed: Vec<(PathBuf, String)>,
}

impl Op {
    /// The absolute path the operation writes.
    pub fn path(&self) -> &Path {
        match self {
            Op::Dir { path, .. }
            | Op::File { path, .. }
            | Op::Large { path, .. }
            | Op::Original { path, .. }
            | Op::Symlink { path, .. } => path,
        }
    }
}

fn werr(path: &Path) -> impl FnOnce(io::Error) -> RestoreError + '_ {
    move |source| RestoreError::Write {
        path: path.to_path_buf(),
        source,
    }
}

#[cfg(test)]
mod tests;
