//! How a planned path on disk compares with the snapshot: what a restore
//! can leave alone (the stat cache answers, or the file's hash does).

use std::fs;
use std::path::{Path, PathBuf};

use git2::{ObjectType, Oid, Repository};

use super::super::blob;
use super::super::plan::{self, CacheEntry, OnDisk, StatCache};
use super::super::pointer::Pointer;
use super::super::snapshot::{now_ns, stat_key, wal_key};
use super::{Op, Plan, RestoreError};

/// The planned paths that differ on disk: missing, another type, other
/// content, another mode or link target. Reads a file only when the stat
/// cache cannot answer for it (and remembers what hashing found).
pub fn changes(
    repo: &Repository,
    plan: &Plan,
    cache: &mut StatCache,
) -> Result<Vec<PathBuf>, RestoreError> {
    let mut out = Vec::new();
    for op in &plan.ops {
        if on_disk(repo, op, cache)? != State::Same {
            out.push(op.path().to_path_buf());
        }
    }
    Ok(out)
}

/// How a planned path on disk compares with the snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum State {
    /// Already as in the snapshot: nothing to write.
    Same,
    /// The right content, another mode: only `chmod`.
    Mode,
    /// Missing, another type, or other content: write it.
    Content,
}

/// Compare one planned operation with what is on disk.
pub(super) fn on_disk(
    repo: &Repository,
    op: &Op,
    cache: &mut StatCache,
) -> Result<State, RestoreError> {
    use std::os::unix::fs::MetadataExt;
    let path = op.path();
    let Ok(meta) = fs::symlink_metadata(path) else {
        return Ok(State::Content);
    };
    let mode_state = |want: u32| {
        if meta.mode() & 0o777 == want {
            State::Same
        } else {
            State::Mode
        }
    };
    Ok(match op {
        Op::Dir { mode, .. } if meta.is_dir() => mode_state(*mode),
        Op::Dir { .. } => State::Content,
        Op::File { oid, mode, .. } => {
            if holds(repo, path, &meta, &Want::Blob(*oid), cache)? {
                mode_state(*mode)
            } else {
                State::Content
            }
        }
        Op::Large { pointer, mode, .. } => {
            if holds(repo, path, &meta, &Want::Large(pointer), cache)? {
                mode_state(*mode)
            } else {
                State::Content
            }
        }
        Op::Original { pointer, .. } => {
            if holds(repo, path, &meta, &Want::Large(pointer), cache)? {
                State::Same
            } else {
                State::Content
            }
        }
        Op::Symlink { target, .. } => {
            if fs::read_link(path).ok().as_ref() == Some(target) {
                State::Same
            } else {
                State::Content
            }
        }
    })
}

/// The content a restored regular file must have.
enum Want<'a> {
    /// A git blob.
    Blob(Oid),
    /// A large file: its LFS pointer.
    Large(&'a Pointer),
}

impl Want<'_> {
    /// The blob id a snapshot of the right file caches: the blob itself, or
    /// the pointer's blob for a large file.
    fn cache_oid(&self) -> Oid {
        match self {
            Want::Blob(oid) => *oid,
            Want::Large(p) => pointer_oid(p),
        }
    }
}

/// The git blob id of a pointer's text (what the tree holds for a large file).
pub(super) fn pointer_oid(p: &Pointer) -> Oid {
    Oid::hash_object(ObjectType::Blob, p.render().as_bytes()).unwrap_or(Oid::ZERO_SHA1)
}

/// Does the entry at `path` (lstat `meta`) hold `want`? The stat cache
/// answers where it may (an entry of the file's raw bytes whose size, mtime
/// and inode still match; not one of a SQLite backup copy); otherwise the
/// file is hashed (the git blob id, or SHA-256 for a large file), and a
/// match is remembered in the cache so the next snapshot need not read it.
fn holds(
    repo: &Repository,
    path: &Path,
    meta: &fs::Metadata,
    want: &Want,
    cache: &mut StatCache,
) -> Result<bool, RestoreError> {
    if !meta.is_file() {
        return Ok(false);
    }
    let key = stat_key(meta);
    let wal = wal_key(path);
    let oid = want.cache_oid();
    let cached = cache
        .entry(path, key, wal)
        .filter(|e| !e.copy)
        .map(|e| Oid::from_str(&e.oid).ok() == Some(oid));
    // A hit needs no blob read: the entry's key holds the file's size, and
    // that is the size of the blob it names.
    if cached == Some(true) {
        return Ok(true);
    }
    let size = match want {
        Want::Blob(oid) => repo.odb()?.read_header(*oid)?.0 as u64,
        Want::Large(p) => p.size,
    };
    Ok(match plan::compare_local(Some(meta.len()), size, cached) {
        OnDisk::Same => true,
        OnDisk::Differs => false,
        OnDisk::Hash => {
            let same = match want {
                Want::Blob(oid) => Oid::hash_file(ObjectType::Blob, path).ok() == Some(*oid),
                Want::Large(p) => blob::hash_file(path).is_ok_and(|got| got == **p),
            };
            // Cache only what the hash saw: the stat must not have moved.
            if same && fs::symlink_metadata(path).is_ok_and(|m| stat_key(&m) == key) {
                cache.store(
                    path,
                    CacheEntry {
                        key,
                        wal,
                        oid: oid.to_string(),
                        copy: false,
                        binary: None,
                    },
                    now_ns(),
                );
            }
            same
        }
    })
}
