//! Snapshot: build a git tree straight from the live files (no mirror copy,
//! no symlinks into the data) and commit it only when it changed.
//!
//! Regular files go into the object database as they are, reusing the stat
//! cache so an unchanged file is not read again; SQLite databases are copied
//! with SQLite's online backup API into a temp file first, so a database being
//! written is never read raw (the original's defect 6). Empty directories keep
//! a [`KEEP_MARKER`](crate::persist::plan::KEEP_MARKER) file; modes, persisted paths and skipped large files are
//! recorded under `.stackctl/`.
//!
//! With a blob store, a file at or above the threshold is committed as a Git
//! LFS pointer (hashed streaming, the live file untouched) plus a root
//! `.gitattributes` line; [`Built::large`] lists the blobs the caller must
//! upload before it commits. A large SQLite database is copied with the
//! backup API first, like a small one, and the copy is what gets hashed and
//! uploaded.
//!
//! With [`TreeBuilder::with_offload_binary`], a binary file below the
//! threshold (git's test: a NUL in the first 8000 bytes; every SQLite
//! database) takes the same path as a large one, for remotes that refuse
//! binary files outside LFS (Hugging Face).
//!
//! - [`builder`]: [`TreeBuilder`], the walk of the live files into a tree.
//! - [`sqlite`]: the SQLite backup-API copy ([`sqlite_copy`]).
//! - [`commit`]: the snapshot commit, its identity and its message.

mod builder;
mod commit;
mod sqlite;
#[cfg(test)]
mod tests;

pub use builder::TreeBuilder;
pub use commit::{commit_if_changed, format_utc, message, signature};
pub use sqlite::sqlite_copy;

use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use git2::Oid;

use super::deadline::Stop;
use super::plan::{FileType, StatKey};
use super::pointer::Pointer;
use sqlite::remove_db_files;

/// Errors while taking a snapshot.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// A file or directory could not be read.
    #[error("cannot read `{path}` for the snapshot: {source}; check its permissions or exclude it in `persist.exclude`")]
    Read {
        /// The path.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// SQLite's backup API failed.
    #[error("cannot copy SQLite database `{path}` with the backup API: {reason}; check that it is a valid database or exclude it")]
    Sqlite {
        /// The database.
        path: PathBuf,
        /// What SQLite said.
        reason: String,
    },
    /// The object database refused a write.
    #[error("cannot write the snapshot to the git repository in the workdir: {}; check free disk space and that `persist.workdir` is writable", crate::persist::remote::reason(.0))]
    Git(#[from] git2::Error),
    /// The operation's deadline passed or it was cancelled ([`deadline`](crate::persist::deadline)).
    #[error("snapshot stopped: {0}")]
    Stopped(Stop),
    /// The temp directory for SQLite copies is not usable.
    #[error("cannot use temp directory `{path}`: {source}")]
    Temp {
        /// The directory.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
}

/// What a tree build found.
#[derive(Debug, Clone, Default)]
pub struct Built {
    /// The root tree.
    pub tree: Option<Oid>,
    /// Regular files and SQLite databases in the snapshot.
    pub files: u64,
    /// Their total size in bytes.
    pub bytes: u64,
    /// Files actually read (not served by the stat cache).
    pub read: u64,
    /// SQLite databases copied with the backup API.
    pub sqlite: u64,
    /// Files skipped because they reached `large_files.threshold` (absolute path, size).
    pub too_large: Vec<(PathBuf, u64)>,
    /// Non-fatal oddities (special files skipped, files that vanished mid-scan).
    pub warnings: Vec<String>,
    /// Files committed as LFS pointers: their bytes must be in the blob
    /// store before the commit is pushed.
    pub large: Vec<LargeFile>,
    /// The newest modification time (seconds) of any entry that is not a
    /// directory and not excluded; `None` when there is none.
    pub newest_mtime: Option<i64>,
    /// New entries created after the scan began, left to the next snapshot
    /// ([`TreeBuilder::point_in_time`]).
    pub deferred: u64,
}

/// A file committed as an LFS pointer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LargeFile {
    /// The live file.
    pub path: PathBuf,
    /// Its tree path.
    pub tree: String,
    /// Its content's SHA-256 and size.
    pub pointer: Pointer,
    /// A SQLite database: its bytes must come from a backup-API copy, never
    /// from the live file (which a writer may be changing).
    pub sqlite: bool,
    /// The backup-API copy the pointer was hashed from (in the workdir's
    /// `tmp/`; [`remove_copies`] deletes it), when one was made.
    pub copy: Option<PathBuf>,
}

/// Name prefix of the large SQLite copies in the workdir's `tmp/`.
const LARGE_COPY_PREFIX: &str = "large-sqlite-";

/// Delete the backup-API copies of large databases a build made.
pub fn remove_copies(built: &Built) {
    for f in &built.large {
        if let Some(copy) = &f.copy {
            remove_db_files(copy);
        }
    }
}

pub(crate) fn stat_key(m: &fs::Metadata) -> StatKey {
    StatKey {
        size: m.len(),
        mtime_ns: i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
        ino: m.ino(),
    }
}

/// The kind of entry `lstat` saw.
pub(crate) fn file_type(m: &fs::Metadata) -> FileType {
    let t = m.file_type();
    if t.is_symlink() {
        FileType::Symlink
    } else if t.is_dir() {
        FileType::Dir
    } else if t.is_file() {
        FileType::File
    } else {
        FileType::Other
    }
}

pub(crate) fn now_ns() -> i128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i128)
}

/// Stat of `<db>-wal`, part of a database's cache key.
pub(crate) fn wal_key(db: &Path) -> Option<StatKey> {
    let mut p = db.as_os_str().to_os_string();
    p.push("-wal");
    fs::symlink_metadata(PathBuf::from(p))
        .ok()
        .map(|m| stat_key(&m))
}
