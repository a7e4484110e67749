//! The filesystem steps of [`apply`](super::apply()), each on a path the guard
//! has checked: atomic file writes, real directories, deletions.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use git2::{Oid, Repository};

use super::super::plan::{self, CacheEntry, SQLITE_SIDECARS};
use super::super::snapshot::{stat_key, wal_key};
use super::guard::{Guard, Inside};
use super::{werr, Applied, RestoreError};

/// Make sure every directory from `root` (exclusive) down to `dir` is a real
/// directory, not a symlink, so no write can be redirected.
pub(super) fn check_real_dirs(root: &Path, dir: &Path) -> Result<(), RestoreError> {
    let Ok(rel) = dir.strip_prefix(root) else {
        return Err(RestoreError::Unsafe(vec![format!(
            "`{}` is outside `{}`",
            dir.display(),
            root.display()
        )]));
    };
    let mut cur = root.to_path_buf();
    for c in rel.components() {
        cur.push(c);
        let m = fs::symlink_metadata(&cur).map_err(werr(&cur))?;
        if !m.is_dir() {
            return Err(RestoreError::Unsafe(vec![format!(
                "`{}` is not a real directory",
                cur.display()
            )]));
        }
    }
    Ok(())
}

/// Write git blob `oid` at `at` with `mode` (temp file + rename), removing
/// stale SQLite side files beside a database. Returns its stat-cache entry.
pub(super) fn write_blob(
    repo: &Repository,
    at: &Inside,
    oid: Oid,
    mode: u32,
    done: &mut Applied,
) -> Result<(PathBuf, CacheEntry), RestoreError> {
    let path = at.path();
    let blob = repo.find_blob(oid)?;
    clear_dir_at(at)?;
    let tmp = at.temp();
    let tmp = tmp.path();
    let _ = fs::remove_file(tmp);
    // No fdatasync per file: one `syncfs` at the end (see `sync_roots`).
    let write = || -> io::Result<fs::Metadata> {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(tmp)?;
        f.write_all(blob.content())?;
        f.set_permissions(fs::Permissions::from_mode(mode))?;
        let meta = f.metadata()?;
        fs::rename(tmp, at.path())?;
        Ok(meta)
    };
    let meta = match write() {
        Ok(m) => m,
        Err(e) => {
            let _ = fs::remove_file(tmp);
            return Err(werr(path)(e));
        }
    };
    if plan::is_sqlite_header(blob.content()) {
        for s in SQLITE_SIDECARS {
            let side = at.with_suffix(s);
            if fs::symlink_metadata(side.path()).is_ok() {
                fs::remove_file(side.path()).map_err(werr(side.path()))?;
                done.removed_sidecars.push(side.path().to_path_buf());
            }
        }
    }
    let entry = (
        path.to_path_buf(),
        CacheEntry {
            key: stat_key(&meta),
            wal: wal_key(path),
            oid: oid.to_string(),
            copy: false,
            // The bytes are at hand: the next snapshot keeps
            // this blob without sniffing the file.
            binary: Some(plan::looks_binary(blob.content())),
        },
    );
    done.files += 1;
    done.bytes += blob.size() as u64;
    Ok(entry)
}

/// Set the permission bits of `at`.
/// Remove the live file `path` another writer deleted, through the same
/// guard as a restore: a name from a hostile tree (`..`) that maps outside
/// `roots` is refused, never removed.
pub(in crate::persist) fn remove_live(roots: &[PathBuf], path: &Path) -> Result<(), String> {
    let inside = Guard::new(roots)?.check(path)?;
    match fs::remove_file(inside.path()) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.to_string()),
        _ => Ok(()),
    }
}

pub(super) fn set_mode(at: &Inside, mode: u32) -> Result<(), RestoreError> {
    fs::set_permissions(at.path(), fs::Permissions::from_mode(mode)).map_err(werr(at.path()))
}

/// Remove whatever is at `at` unless it is a real directory.
pub(super) fn ensure_dir(at: &Inside) -> Result<(), RestoreError> {
    let path = at.path();
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => return Ok(()),
        Ok(_) => fs::remove_file(path).map_err(werr(path))?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(werr(path)(e)),
    }
    fs::create_dir(path).map_err(werr(path))
}

/// Make room for a non-directory at `at`: a directory there goes (the snapshot wins).
pub(super) fn clear_dir_at(at: &Inside) -> Result<(), RestoreError> {
    let path = at.path();
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path).map_err(werr(path)),
        _ => Ok(()),
    }
}

/// Delete the entry at `at` that the snapshot does not hold: a file or
/// symlink (with a file's SQLite side files), or a directory that is empty
/// by now. False when there was nothing to delete, or the directory still
/// holds something (written meanwhile: kept).
pub(super) fn delete(at: &Inside) -> Result<bool, RestoreError> {
    let path = at.path();
    let gone = |r: io::Result<()>| match r {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) if e.kind() == io::ErrorKind::DirectoryNotEmpty => Ok(false),
        Err(e) => Err(werr(path)(e)),
    };
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => gone(fs::remove_dir(path)),
        Ok(_) => {
            for s in SQLITE_SIDECARS {
                gone(fs::remove_file(at.with_suffix(s).path()))?;
            }
            gone(fs::remove_file(path))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(werr(path)(e)),
    }
}
