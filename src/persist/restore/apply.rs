//! The second step of a restore: carry out a [`Plan`], then make what was
//! written durable (one `syncfs` per filesystem) and settle the stat cache.

use std::collections::HashMap;
use std::fs;
use std::io::{self};
use std::path::{Path, PathBuf};

use git2::Repository;

use super::super::blob::{BlobStore, Retry};
use super::super::plan::{CacheEntry, StatCache};
use super::super::pointer::Pointer;
use super::super::progress::Transfer;
use super::super::snapshot::stat_key;
use super::super::Progress;
use super::compare::{on_disk, State};
use super::guard::{self, Guard, Inside};
use super::hydrate::hydrate;
use super::write::{check_real_dirs, clear_dir_at, delete, ensure_dir, set_mode, write_blob};
use super::{werr, Applied, Op, Plan, RestoreError};

/// Where large files come from during [`apply`].
pub struct Blobs<'a> {
    /// The configured store (`None`: large files fail with a hint).
    pub store: Option<&'a dyn BlobStore>,
    /// Retry policy for each download.
    pub retry: Retry,
    /// Counts the bytes of each large file as it is written, for progress.
    pub transfer: Option<&'a Transfer>,
}

/// Carry out a plan. Refuses to run a plan with refused entries.
///
/// A path that already holds its snapshot content is not written (at most
/// `chmod`ed): a restore over identical data writes nothing, and the stat
/// cache answers for most files so they are not even read. Files that are
/// written get a stat-cache entry, so the snapshot after a restore reads
/// nothing either. `progress` hears about every file.
pub fn apply(
    repo: &Repository,
    plan: &Plan,
    blobs: &Blobs,
    cache: &mut StatCache,
    progress: &dyn Fn(Progress),
) -> Result<Applied, RestoreError> {
    if !plan.refused.is_empty() {
        return Err(RestoreError::Unsafe(plan.refused.clone()));
    }
    let mut done = Applied::default();
    let mut dir_modes = Vec::new();
    // Blobs already written in this restore: a second file with the same
    // content is copied from the first, not downloaded again.
    let mut hydrated: HashMap<Pointer, PathBuf> = HashMap::new();
    let mut failed: Vec<(PathBuf, String)> = Vec::new();
    // Some failure that trying again may fix (the network)?
    let mut retryable = false;
    // Stat-cache entries of the files written here; trusted only once they
    // are durable and the clock has moved on (see `settle`).
    let mut written: Vec<(PathBuf, CacheEntry)> = Vec::new();
    let total = plan
        .ops
        .iter()
        .filter(|op| !matches!(op, Op::Dir { .. }))
        .count() as u64;
    let mut files_done = 0u64;
    let mut real_dirs: std::collections::HashSet<PathBuf> = std::collections::HashSet::new();
    // Every path is checked before anything is touched: a plan with one
    // path outside the roots is refused whole (see `guard`).
    let unsafe_plan = |r: guard::Refusal| RestoreError::Unsafe(vec![r]);
    let guard = Guard::new(&plan.roots).map_err(unsafe_plan)?;
    let checked = plan
        .ops
        .iter()
        .map(|op| guard.check(op.path()))
        .collect::<Result<Vec<Inside>, _>>()
        .map_err(unsafe_plan)?;
    let pointer_files = plan.ops.iter().filter_map(|op| match op {
        Op::Original { file, .. } => Some(&file.0),
        _ => None,
    });
    for path in pointer_files.chain(&plan.prune) {
        guard.check(path).map_err(unsafe_plan)?;
    }
    for path in &plan.dropped_sidecars {
        tracing::warn!(path = %path.display(), "SQLite side file in the snapshot not restored: its database is restored as committed, without it");
    }
    done.dropped_sidecars = plan.dropped_sidecars.clone();
    progress(Progress::restoring(0, total));
    for (op, at) in plan.ops.iter().zip(&checked) {
        let path = at.path();
        match at.parent() {
            // The declared path's own parents are made as the user declared them.
            None => {
                if let Some(parent) = path.parent() {
                    fs::create_dir_all(parent).map_err(werr(parent))?;
                }
            }
            Some(parent) => {
                // Once per directory: nothing else writes here during a restore,
                // and no later operation of the plan can turn a checked
                // directory into something else and still write below it.
                if !real_dirs.contains(parent.path()) {
                    check_real_dirs(at.root(), parent.path())?;
                    real_dirs.insert(parent.path().to_path_buf());
                }
            }
        }
        let state = on_disk(repo, op, cache)?;
        if state != State::Same {
            done.changed.push(path.to_path_buf());
        }
        match op {
            Op::Dir { mode, .. } => {
                // The declared path may be a symlink the user set up: follow it.
                if !(at.is_root() && path.is_dir()) {
                    ensure_dir(at)?;
                }
                if state != State::Same {
                    dir_modes.push((at.clone(), *mode));
                }
                done.dirs += 1;
            }
            Op::File { mode, .. } if state != State::Content => {
                if state == State::Mode {
                    set_mode(at, *mode)?;
                }
                done.unchanged += 1;
            }
            Op::File { oid, mode, .. } => {
                written.push(write_blob(repo, at, *oid, *mode, &mut done)?);
            }
            Op::Large {
                path,
                pointer,
                mode,
            } => {
                let mode = Some(*mode);
                match hydrate(
                    at,
                    pointer,
                    mode,
                    None,
                    state,
                    blobs,
                    &mut hydrated,
                    &mut done,
                ) {
                    Ok(Some(entry)) => written.push((path.clone(), entry)),
                    Ok(None) => {}
                    Err(e) => {
                        retryable |= e.is_retryable();
                        failed.push((path.clone(), e.to_string()));
                    }
                }
            }
            Op::Original {
                path,
                original,
                pointer,
                file: (file, oid, mode),
            } => {
                let orig = Some(&**original);
                let file = guard.check(file).map_err(unsafe_plan)?;
                match hydrate(
                    at,
                    pointer,
                    None,
                    orig,
                    state,
                    blobs,
                    &mut hydrated,
                    &mut done,
                ) {
                    // Not in the tree under this path: nothing to cache.
                    Ok(_) => {
                        if fs::symlink_metadata(file.path()).is_ok_and(|m| m.is_file()) {
                            fs::remove_file(file.path()).map_err(werr(file.path()))?;
                        }
                    }
                    Err(e) => {
                        retryable |= e.is_retryable();
                        failed.push((path.clone(), e.to_string()));
                        written.push(write_blob(repo, &file, *oid, *mode, &mut done)?);
                    }
                }
            }
            Op::Symlink { .. } if state == State::Same => done.unchanged += 1,
            Op::Symlink { path, target } => {
                clear_dir_at(at)?;
                let tmp = at.temp();
                let tmp = tmp.path();
                let _ = fs::remove_file(tmp);
                std::os::unix::fs::symlink(target, tmp).map_err(werr(path))?;
                if let Err(e) = fs::rename(tmp, at.path()) {
                    let _ = fs::remove_file(tmp);
                    return Err(werr(path)(e));
                }
                done.symlinks += 1;
            }
        }
        if !matches!(op, Op::Dir { .. }) {
            files_done += 1;
            progress(Progress::restoring(files_done, total));
        }
    }
    for path in &plan.prune {
        let at = guard.check(path).map_err(unsafe_plan)?;
        if delete(&at)? {
            done.deleted.push(path.clone());
        }
    }
    // Directory modes last, deepest first, so a read-only directory does not
    // block writing its own files.
    for (at, mode) in dir_modes.iter().rev() {
        set_mode(at, *mode)?;
    }
    if !done.changed.is_empty() || !done.removed_sidecars.is_empty() || !done.deleted.is_empty() {
        // Why one `syncfs` instead of an fdatasync per file is safe: the
        // restore gate lives in memory only, and the caller opens it (and
        // moves the workdir's branch, writes the readiness file, saves the
        // stat cache) only after this returns. A crash before this point
        // leaves files old, new or (on a disk that survived) torn, but
        // nothing records the restore as done: the next start restores
        // again, and as the entries for the files written here were never
        // saved, it hashes those files rather than trusting their stat.
        sync_roots(&plan.roots)
            .map_err(|e| werr(plan.roots.first().map_or(Path::new("/"), |p| p.as_path()))(e))?;
        for (root, entries) in by_root(&plan.roots, written) {
            let newest = entries.iter().map(|(_, e)| e.key.mtime_ns).max();
            // Cache a written file only once the filesystem's clock has moved
            // past its mtime: a later write (by a service, once the gate is
            // open) then always changes the stat. Before the gate opens
            // nothing else writes here.
            if newest.is_some_and(|n| settle(&root, n)) {
                for (path, entry) in entries {
                    cache.store_settled(&path, entry);
                }
            }
        }
    }
    for (path, error) in &failed {
        tracing::error!(path = %path.display(), %error, "large file not restored");
    }
    // Trying again may help one of them (the network): fail, the caller
    // retries (files already in place are not fetched again). Else (missing
    // or corrupt in the store) one file must not keep everything else down
    // (issue 17): done, with the failures named.
    if retryable {
        return Err(RestoreError::Blobs { failed, retryable });
    }
    done.failed = failed;
    Ok(done)
}

/// Flush everything written under `roots` to disk: one `syncfs` per
/// filesystem (a root that is a file: its directory's).
fn sync_roots(roots: &[PathBuf]) -> io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let mut synced = std::collections::HashSet::new();
    for root in roots {
        let dir = if root.is_dir() {
            root.as_path()
        } else {
            root.parent().unwrap_or(Path::new("/"))
        };
        let Ok(f) = fs::File::open(dir) else { continue };
        if synced.insert(f.metadata()?.dev()) {
            nix::unistd::syncfs(&f).map_err(io::Error::from)?;
        }
    }
    Ok(())
}

/// Group written entries by the directory their root's filesystem clock is
/// probed in (the root, or a file root's directory).
fn by_root(
    roots: &[PathBuf],
    written: Vec<(PathBuf, CacheEntry)>,
) -> Vec<(PathBuf, Vec<(PathBuf, CacheEntry)>)> {
    let mut out: Vec<(PathBuf, Vec<(PathBuf, CacheEntry)>)> = Vec::new();
    for (path, entry) in written {
        let Some(root) = roots.iter().find(|r| path.starts_with(r)) else {
            continue;
        };
        let dir = if root == &path {
            root.parent().unwrap_or(Path::new("/")).to_path_buf()
        } else {
            root.clone()
        };
        match out.iter_mut().find(|(d, _)| *d == dir) {
            Some((_, v)) => v.push((path, entry)),
            None => out.push((dir, vec![(path, entry)])),
        }
    }
    out
}

/// Wait (briefly) until a file created in `dir` gets an mtime after
/// `newest`: from then on, any write there is stamped later than the files
/// written so far. Timestamps are coarse (a few ms, a second or two on some
/// filesystems), so this usually takes one probe. False if it gave up.
fn settle(dir: &Path, newest: i128) -> bool {
    let probe = dir.join(format!(".stackctl-clock-{}", std::process::id()));
    let deadline = std::time::Instant::now() + std::time::Duration::from_millis(2500);
    loop {
        let now = fs::File::create(&probe).and_then(|f| f.metadata());
        let _ = fs::remove_file(&probe);
        match now {
            Ok(m) if stat_key(&m).mtime_ns > newest => return true,
            Ok(_) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
            _ => return false,
        }
    }
}
