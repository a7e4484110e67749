//! Large files during a restore: each blob from the store downloaded once,
//! streamed beside its target, verified, then renamed into place.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::super::blob::{self, Retry};
use super::super::plan::CacheEntry;
use super::super::pointer::{OriginalPointer, Pointer};
use super::super::progress::Transfer;
use super::super::snapshot::{stat_key, wal_key};
use super::compare::{pointer_oid, State};
use super::guard::Inside;
use super::write::clear_dir_at;
use super::Blobs;
use super::{Applied, RestoreError};

/// Why one large file could not be written.
#[derive(Debug)]
pub(super) enum HydrateError {
    Blob(blob::BlobError),
    Io(io::Error),
    NoStore,
}

impl HydrateError {
    pub(super) fn is_retryable(&self) -> bool {
        matches!(self, HydrateError::Blob(e) if e.is_retryable())
    }
}

impl std::fmt::Display for HydrateError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HydrateError::Blob(e) => write!(f, "{e}"),
            HydrateError::Io(e) => write!(f, "{e}"),
            HydrateError::NoStore => write!(
                f,
                "it is a large-file pointer but no blob store is configured: set `persist.large_files.store`"
            ),
        }
    }
}

/// Is the regular file at `path` exactly blob `p`? (Size first: cheap.)
fn has_content(path: &Path, p: &Pointer) -> bool {
    fs::symlink_metadata(path).is_ok_and(|m| m.is_file() && m.len() == p.size)
        && blob::hash_file(path).is_ok_and(|got| got == *p)
}

/// Put blob `p` at `path`: keep a file that already has it (`state`),
/// copy from a file written earlier in this restore, or download it
/// (verified). Returns the stat-cache entry of a file it wrote.
#[allow(clippy::too_many_arguments)]
pub(super) fn hydrate(
    at: &Inside,
    p: &Pointer,
    mode: Option<u32>,
    original: Option<&OriginalPointer>,
    state: State,
    blobs: &Blobs,
    hydrated: &mut HashMap<Pointer, PathBuf>,
    done: &mut Applied,
) -> Result<Option<CacheEntry>, HydrateError> {
    let path = at.path();
    if state != State::Content {
        if let Some(t) = blobs.transfer {
            t.skip_file(p.size);
        }
        if let (State::Mode, Some(m)) = (state, mode) {
            fs::set_permissions(path, fs::Permissions::from_mode(m)).map_err(HydrateError::Io)?;
        }
        done.already_present += 1;
        hydrated.insert(*p, path.to_path_buf());
        return Ok(None);
    }
    clear_dir_at(at).map_err(|e| match e {
        RestoreError::Write { source, .. } => HydrateError::Io(source),
        other => HydrateError::Io(io::Error::other(other.to_string())),
    })?;
    let tmp = at.temp();
    let tmp = tmp.path();
    let local = hydrated.get(p).filter(|src| has_content(src, p)).cloned();
    // Without a caller's transfer the bytes are counted into one nobody
    // reads: one code path either way.
    let quiet = Transfer::new("restore", 0, 0);
    let transfer = blobs.transfer.unwrap_or(&quiet);
    transfer.begin_file(path, p.size);
    let fetched = blob::counting(transfer.counter(), || match (&local, blobs.store) {
        (Some(src), _) => {
            let retry = Retry {
                attempts: 1,
                ..blobs.retry
            };
            blob::download_to(&retry, p, tmp, |w| {
                let mut f = fs::File::open(src).map_err(|source| blob::BlobError::Io {
                    what: "read",
                    path: src.clone(),
                    source,
                })?;
                io::copy(&mut f, w).map_err(|source| blob::BlobError::Io {
                    what: "copy",
                    path: src.clone(),
                    source,
                })?;
                Ok(())
            })
            .map_err(HydrateError::Blob)
        }
        (None, Some(store)) => blob::download_to(&blobs.retry, p, tmp, |w| match original {
            Some(o) => store.get_original(o, p, w),
            None => store.get(p, w),
        })
        .map_err(HydrateError::Blob),
        (None, None) => Err(HydrateError::NoStore),
    });
    transfer.end_file();
    fetched?;
    let finish = || -> io::Result<fs::Metadata> {
        fs::set_permissions(tmp, fs::Permissions::from_mode(mode.unwrap_or(0o644)))?;
        let meta = fs::symlink_metadata(tmp)?;
        fs::rename(tmp, path)?;
        Ok(meta)
    };
    let meta = match finish() {
        Ok(m) => m,
        Err(e) => {
            let _ = fs::remove_file(tmp);
            return Err(HydrateError::Io(e));
        }
    };
    if local.is_none() {
        done.downloaded += 1;
    }
    done.large_files += 1;
    done.bytes += p.size;
    hydrated.insert(*p, path.to_path_buf());
    Ok(Some(CacheEntry {
        key: stat_key(&meta),
        wal: wal_key(path),
        oid: pointer_oid(p).to_string(),
        copy: false,
        binary: None,
    }))
}
