//! Restore: write a snapshot's files back in place, with their modes.
//!
//! Two steps. [`plan`](fn@plan) walks the commit's tree for each persisted path and
//! turns it into operations, refusing every entry that could write outside
//! the declared paths (`..`, `/` or NUL in a name, absolute or escaping
//! symlinks, submodules, and the same for names derived from entries: the
//! file an original `*.pointer` stands for): a hostile or damaged repository
//! must not reach `/etc`. If anything is refused, nothing is written. Every
//! removal and write then goes through one check (`guard`): the path is a
//! persisted root or below one by plain names. [`apply`] then writes
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

use std::collections::HashMap;
use std::fs;
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use git2::{ObjectType, Oid, Repository, Tree};

use super::blob::{self, BlobStore, Retry};
use super::plan::{self, CacheEntry, OnDisk, StatCache, KEEP_MARKER, META_DIR, SQLITE_SIDECARS};
use super::pointer::{self, OriginalPointer, Pointer};
use super::progress::Transfer;
use super::snapshot::{now_ns, stat_key, wal_key};
use super::Progress;

mod guard;
pub mod marker;
pub mod prune;
use guard::{Guard, Inside};

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

/// Plan the restore of `paths` (absolute path, tree path) from `tree`.
pub fn plan(
    repo: &Repository,
    tree: &Tree,
    paths: &[(PathBuf, String)],
) -> Result<Plan, RestoreError> {
    let mut out = Plan::default();
    let mut text = |path: &str| -> Result<Option<String>, RestoreError> {
        Ok(match lookup(repo, tree, path)? {
            Ok(Some(e)) => e
                .to_object(repo)?
                .into_blob()
                .ok()
                .map(|b| String::from_utf8_lossy(b.content()).into_owned()),
            Ok(None) => None,
            Err(why) => {
                if !out.refused.contains(&why) {
                    out.refused.push(why);
                }
                None
            }
        })
    };
    let modes = text(&format!("{META_DIR}/modes"))?
        .map(|t| plan::parse_modes(&t))
        .unwrap_or_default();
    let lfs = text(".gitattributes")?
        .map(|t| pointer::lfs_patterns(&t))
        .unwrap_or_default();
    let ctx = Ctx {
        modes: &modes,
        lfs: &lfs,
    };
    for (abs, tree_path) in paths {
        out.roots.push(abs.clone());
        let entry = match lookup(repo, tree, tree_path)? {
            Ok(Some(e)) => e,
            Ok(None) => {
                out.absent.push(abs.clone());
                continue;
            }
            Err(why) => {
                if !out.refused.contains(&why) {
                    out.refused.push(why);
                }
                continue;
            }
        };
        match (entry.kind(), entry.filemode()) {
            (Some(ObjectType::Tree), _) => {
                let mode = modes.get(tree_path).copied().unwrap_or(0o755);
                out.ops.push(Op::Dir {
                    path: abs.clone(),
                    mode: plan::safe_mode(mode),
                });
                let sub = repo.find_tree(entry.id())?;
                walk(repo, &sub, abs, Path::new(""), tree_path, &ctx, &mut out)?;
            }
            (Some(ObjectType::Blob), m) if m != 0o120000 => {
                let mode = modes.get(tree_path).copied().unwrap_or(if m == 0o100755 {
                    0o755
                } else {
                    0o644
                });
                out.ops.push(file_op(
                    repo,
                    &ctx,
                    tree_path,
                    abs.clone(),
                    entry.id(),
                    plan::safe_mode(mode),
                )?);
            }
            _ => out.refused.push(format!(
                "`{tree_path}`: a persisted path must be a directory or a file"
            )),
        }
    }
    Ok(out)
}

/// Are `tree`'s entries in git's order: names strictly increasing, a
/// subtree's compared as if followed by `/`, none twice? libgit2 finds a
/// name by binary search, so a tree out of order (hostile or damaged)
/// would read as missing entries: "nothing for this path", and the gate
/// would open on empty data.
fn in_git_order(tree: &Tree) -> bool {
    let mut names = std::collections::HashSet::new();
    let mut prev: Option<Vec<u8>> = None;
    for e in tree.iter() {
        let mut key = e.name_bytes().to_vec();
        if !names.insert(key.clone()) {
            return false;
        }
        if e.kind() == Some(ObjectType::Tree) {
            key.push(b'/');
        }
        if prev.as_ref().is_some_and(|p| *p >= key) {
            return false;
        }
        prev = Some(key);
    }
    true
}

/// The entry at `tree_path` (`a/b/c`), checking each tree on the way is in
/// git's order: `Ok(None)` when it is not there, `Err(why)` for a tree out
/// of order.
fn lookup(
    repo: &Repository,
    tree: &Tree,
    tree_path: &str,
) -> Result<Result<Option<git2::TreeEntry<'static>>, String>, RestoreError> {
    let mut cur = tree.clone();
    let mut shown = "/";
    let parts: Vec<&str> = tree_path.split('/').collect();
    for (i, part) in parts.iter().enumerate() {
        if !in_git_order(&cur) {
            return Ok(Err(format!("`{shown}`: tree entries out of git's order")));
        }
        let Some(e) = cur
            .iter()
            .find(|e| e.name_bytes() == part.as_bytes())
            .map(|e| e.to_owned())
        else {
            return Ok(Ok(None));
        };
        if i + 1 == parts.len() {
            return Ok(Ok(Some(e)));
        }
        if e.kind() != Some(ObjectType::Tree) {
            return Ok(Ok(None));
        }
        cur = repo.find_tree(e.id())?;
        let end = parts[..=i].iter().map(|p| p.len() + 1).sum::<usize>() - 1;
        shown = &tree_path[..end];
    }
    Ok(Ok(None))
}

/// What the walk consults besides the tree.
struct Ctx<'a> {
    modes: &'a HashMap<String, u32>,
    /// `.gitattributes` patterns with `filter=lfs`.
    lfs: &'a std::collections::HashSet<String>,
}

/// A regular file entry: an LFS pointer the `.gitattributes` tracks becomes
/// [`Op::Large`], anything else [`Op::File`].
fn file_op(
    repo: &Repository,
    ctx: &Ctx,
    tree_path: &str,
    path: PathBuf,
    oid: Oid,
    mode: u32,
) -> Result<Op, RestoreError> {
    if pointer::is_lfs_tracked(ctx.lfs, tree_path) {
        let blob = repo.find_blob(oid)?;
        if let Some(p) = Pointer::parse(blob.content()) {
            return Ok(Op::Large {
                path,
                pointer: p,
                mode,
            });
        }
    }
    Ok(Op::File { path, oid, mode })
}

fn walk(
    repo: &Repository,
    tree: &Tree,
    root: &Path,
    rel: &Path,
    tree_prefix: &str,
    ctx: &Ctx,
    out: &mut Plan,
) -> Result<(), RestoreError> {
    let modes = ctx.modes;
    if !in_git_order(tree) {
        out.refused
            .push(format!("`{tree_prefix}`: tree entries out of git's order"));
        return Ok(());
    }
    for entry in tree.iter() {
        let name = entry.name_bytes();
        let shown = format!("{tree_prefix}/{}", String::from_utf8_lossy(name));
        if !plan::safe_entry_name(name) {
            out.refused.push(format!("`{shown}`: unsafe name"));
            continue;
        }
        let name = std::ffi::OsStr::from_bytes(name);
        let child_rel = rel.join(name);
        let path = root.join(&child_rel);
        match (entry.kind(), entry.filemode()) {
            (Some(ObjectType::Tree), _) => {
                let mode = modes.get(&shown).copied().unwrap_or(0o755);
                out.ops.push(Op::Dir {
                    path,
                    mode: plan::safe_mode(mode),
                });
                let sub = repo.find_tree(entry.id())?;
                walk(repo, &sub, root, &child_rel, &shown, ctx, out)?;
            }
            (Some(ObjectType::Blob), 0o120000) => {
                let blob = repo.find_blob(entry.id())?;
                let target = PathBuf::from(std::ffi::OsStr::from_bytes(blob.content()));
                if blob.content().contains(&0) || !plan::symlink_stays_inside(&child_rel, &target) {
                    out.refused.push(format!(
                        "`{shown}`: symlink to `{}` leaves the persisted path",
                        target.display()
                    ));
                } else {
                    out.ops.push(Op::Symlink { path, target });
                }
            }
            (Some(ObjectType::Blob), m) => {
                if name == KEEP_MARKER {
                    continue;
                }
                if plan::is_sqlite_sidecar(name) {
                    out.dropped_sidecars.push(path);
                    continue;
                }
                let mode =
                    modes
                        .get(&shown)
                        .copied()
                        .unwrap_or(if m == 0o100755 { 0o755 } else { 0o644 });
                let target = name.to_str().and_then(OriginalPointer::target_name);
                let original = match target {
                    // The original's pointer file, and no real file beside it.
                    Some(t)
                        if tree.get_name(t).is_none()
                            && entry
                                .to_object(repo)?
                                .as_blob()
                                .is_some_and(|b| b.size() <= 64 * 1024) =>
                    {
                        let blob = repo.find_blob(entry.id())?;
                        OriginalPointer::parse(blob.content()).map(|o| (t, o))
                    }
                    _ => None,
                };
                // The name it stands for comes from the repository too: the
                // same rule as a tree entry's (`...pointer` stands for `..`).
                let original = match original {
                    Some((t, _)) if !plan::safe_entry_name(t.as_bytes()) => {
                        out.refused.push(format!(
                            "`{shown}`: a large-file pointer for `{t}`, an unsafe name"
                        ));
                        continue;
                    }
                    Some((t, o)) => Some((root.join(rel.join(t)), o)),
                    None => None,
                };
                let mode = plan::safe_mode(mode);
                match original {
                    Some((target, (original, pointer))) => out.ops.push(Op::Original {
                        path: target,
                        original: Box::new(original),
                        pointer,
                        file: (path, entry.id(), mode),
                    }),
                    None => out
                        .ops
                        .push(file_op(repo, ctx, &shown, path, entry.id(), mode)?),
                }
            }
            _ => out
                .refused
                .push(format!("`{shown}`: submodules are not restored")),
        }
    }
    Ok(())
}

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
enum State {
    /// Already as in the snapshot: nothing to write.
    Same,
    /// The right content, another mode: only `chmod`.
    Mode,
    /// Missing, another type, or other content: write it.
    Content,
}

/// Compare one planned operation with what is on disk.
fn on_disk(repo: &Repository, op: &Op, cache: &mut StatCache) -> Result<State, RestoreError> {
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
fn pointer_oid(p: &Pointer) -> Oid {
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

/// Make sure every directory from `root` (exclusive) down to `dir` is a real
/// directory, not a symlink, so no write can be redirected.
fn check_real_dirs(root: &Path, dir: &Path) -> Result<(), RestoreError> {
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
fn write_blob(
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
pub(super) fn remove_live(roots: &[PathBuf], path: &Path) -> Result<(), String> {
    let inside = Guard::new(roots)?.check(path)?;
    match fs::remove_file(inside.path()) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.to_string()),
        _ => Ok(()),
    }
}

fn set_mode(at: &Inside, mode: u32) -> Result<(), RestoreError> {
    fs::set_permissions(at.path(), fs::Permissions::from_mode(mode)).map_err(werr(at.path()))
}

/// Remove whatever is at `at` unless it is a real directory.
fn ensure_dir(at: &Inside) -> Result<(), RestoreError> {
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
fn clear_dir_at(at: &Inside) -> Result<(), RestoreError> {
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
fn delete(at: &Inside) -> Result<bool, RestoreError> {
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

/// Why one large file could not be written.
#[derive(Debug)]
enum HydrateError {
    Blob(blob::BlobError),
    Io(io::Error),
    NoStore,
}

impl HydrateError {
    fn is_retryable(&self) -> bool {
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
fn hydrate(
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

#[cfg(test)]
mod tests {
    use super::*;

    fn no_blobs() -> Blobs<'static> {
        Blobs {
            store: None,
            retry: Retry::default(),
            transfer: None,
        }
    }

    #[test]
    fn a_merge_removes_only_inside_the_roots() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("data");
        fs::create_dir(&root).unwrap();
        fs::write(root.join("gone.txt"), "x").unwrap();
        fs::write(d.path().join("outside.txt"), "keep").unwrap();
        let roots = [root.clone()];
        remove_live(&roots, &root.join("../outside.txt")).unwrap_err();
        assert!(d.path().join("outside.txt").exists());
        remove_live(&roots, &root.join("gone.txt")).unwrap();
        assert!(!root.join("gone.txt").exists());
        // Already gone is fine: the other writer's deletion holds.
        remove_live(&roots, &root.join("gone.txt")).unwrap();
    }

    fn hostile_repo() -> (tempfile::TempDir, Repository, Oid) {
        let d = tempfile::tempdir().unwrap();
        let repo = Repository::init_bare(d.path().join("r.git")).unwrap();
        let ok = repo.blob(b"fine").unwrap();
        let evil = repo.blob(b"pwned").unwrap();
        let link_etc = repo.blob(b"/etc").unwrap();
        let link_up = repo.blob(b"../../../etc/passwd").unwrap();
        let data = {
            let mut b = repo.treebuilder(None).unwrap();
            b.insert("ok.txt", ok, 0o100644).unwrap();
            b.insert("etc", link_etc, 0o120000).unwrap();
            b.insert("up", link_up, 0o120000).unwrap();
            b.write().unwrap()
        };
        // Names with `..` or `/` cannot be made with TreeBuilder::insert: write
        // the raw tree object, as a hostile server could.
        let mut raw = Vec::new();
        for (mode, name, oid) in [("100644", "..", evil), ("40000", "data", data)] {
            raw.extend_from_slice(format!("{mode} {name}\0").as_bytes());
            raw.extend_from_slice(oid.as_bytes());
        }
        let odb = repo.odb().unwrap();
        let inner = odb.write(ObjectType::Tree, &raw).unwrap();
        let top = {
            let mut b = repo.treebuilder(None).unwrap();
            b.insert("srv", inner, 0o040000).unwrap();
            b.write().unwrap()
        };
        drop(odb);
        (d, repo, top)
    }

    #[test]
    fn hostile_entries_are_refused_and_nothing_is_written() {
        let (d, repo, top) = hostile_repo();
        let tree = repo.find_tree(top).unwrap();
        let root = d.path().join("srv/data");
        let p = plan(&repo, &tree, &[(root.clone(), "srv/data".into())]).unwrap();
        assert_eq!(p.refused.len(), 2, "{:?}", p.refused);
        assert!(
            p.refused.iter().any(|r| r.contains("`srv/data/etc`")),
            "{:?}",
            p.refused
        );
        let e = apply(&repo, &p, &no_blobs(), &mut StatCache::default(), &|_| {}).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("refusing to restore: the snapshot holds 2 unsafe entries"),
            "{e}"
        );
        assert!(!root.exists());
        // The `..` entry sits beside `data`, in `srv`: refused when `srv` is the root.
        let p = plan(&repo, &tree, &[(d.path().join("srv"), "srv".into())]).unwrap();
        assert!(
            p.refused
                .iter()
                .any(|r| r.contains("`srv/..`: unsafe name")),
            "{:?}",
            p.refused
        );
    }

    /// The original's release-asset JSON, for a blob of `size` bytes.
    fn original_json(size: u64) -> String {
        let sha = "ab".repeat(32);
        format!(
            r#"{{"type":"release-asset","repo":"o/r","release_tag":"blobs","asset_name":"{sha}-x","asset_id":1,"size":{size},"sha256":"{sha}"}}"#
        )
    }

    /// `srv/data` holding `...pointer` and `sub/..pointer` (the original's
    /// pointer JSON): stripping `.pointer` gives `..` and `.` (issue 17).
    fn hostile_pointer_repo() -> (tempfile::TempDir, Repository, Oid) {
        let d = tempfile::tempdir().unwrap();
        let repo = Repository::init_bare(d.path().join("r.git")).unwrap();
        let json = repo.blob(original_json(5).as_bytes()).unwrap();
        let ok = repo.blob(b"fine").unwrap();
        let mut sub_b = repo.treebuilder(None).unwrap();
        sub_b.insert("..pointer", json, 0o100644).unwrap();
        let sub = sub_b.write().unwrap();
        let mut data_b = repo.treebuilder(None).unwrap();
        data_b.insert("...pointer", json, 0o100644).unwrap();
        data_b.insert("ok.txt", ok, 0o100644).unwrap();
        data_b.insert("sub", sub, 0o040000).unwrap();
        let data = data_b.write().unwrap();
        let mut srv_b = repo.treebuilder(None).unwrap();
        srv_b.insert("data", data, 0o040000).unwrap();
        let srv = srv_b.write().unwrap();
        let top = {
            let mut top = repo.treebuilder(None).unwrap();
            top.insert("srv", srv, 0o040000).unwrap();
            top.write().unwrap()
        };
        drop((sub_b, data_b, srv_b));
        (d, repo, top)
    }

    #[test]
    fn a_pointer_named_to_climb_out_is_refused_and_nothing_is_removed() {
        let (d, repo, top) = hostile_pointer_repo();
        let tree = repo.find_tree(top).unwrap();
        let root = d.path().join("srv/data");
        let sibling = d.path().join("srv/app/keep.txt");
        fs::create_dir_all(root.join("sub")).unwrap();
        fs::create_dir_all(sibling.parent().unwrap()).unwrap();
        fs::write(&sibling, b"mine").unwrap();
        fs::write(root.join("sub/local.txt"), b"mine").unwrap();
        let p = plan(&repo, &tree, &[(root.clone(), "srv/data".into())]).unwrap();
        assert_eq!(
            p.refused,
            [
                "`srv/data/...pointer`: a large-file pointer for `..`, an unsafe name",
                "`srv/data/sub/..pointer`: a large-file pointer for `.`, an unsafe name",
            ]
        );
        assert!(apply(&repo, &p, &no_blobs(), &mut StatCache::default(), &|_| {}).is_err());
        assert_eq!(fs::read(&sibling).unwrap(), b"mine");
        assert_eq!(fs::read(root.join("sub/local.txt")).unwrap(), b"mine");
    }

    #[test]
    fn apply_removes_and_writes_nothing_outside_the_roots_whatever_the_plan_says() {
        let d = tempfile::tempdir().unwrap();
        let repo = Repository::init_bare(d.path().join("r.git")).unwrap();
        let root = d.path().join("srv/data");
        let sibling = d.path().join("srv/app/keep.txt");
        fs::create_dir_all(root.join("sub")).unwrap();
        fs::create_dir_all(sibling.parent().unwrap()).unwrap();
        fs::write(&sibling, b"mine").unwrap();
        let (_, pointer) = OriginalPointer::parse(original_json(5).as_bytes()).unwrap();
        let blob = repo.blob(b"x").unwrap();
        // Plans no planner makes: each path climbs out of (or is) a root by a
        // name that `Path::starts_with` lets through.
        for path in [
            root.join(".."),
            root.join("sub/.."),
            root.join("sub/../.."),
            root.join("."),
        ] {
            for op in [
                Op::Original {
                    path: path.clone(),
                    file: (root.join("x.pointer"), blob, 0o644),
                    original: Box::new(
                        OriginalPointer::parse(original_json(5).as_bytes())
                            .unwrap()
                            .0,
                    ),
                    pointer,
                },
                Op::File {
                    path: path.clone(),
                    oid: blob,
                    mode: 0o644,
                },
                Op::Dir {
                    path: path.clone(),
                    mode: 0o755,
                },
            ] {
                let p = Plan {
                    ops: vec![op],
                    roots: vec![root.clone()],
                    ..Plan::default()
                };
                let e =
                    apply(&repo, &p, &no_blobs(), &mut StatCache::default(), &|_| {}).unwrap_err();
                assert!(
                    e.to_string().contains("is outside the persisted paths"),
                    "{}: {e}",
                    path.display()
                );
                assert_eq!(fs::read(&sibling).unwrap(), b"mine");
                assert!(root.join("sub").is_dir());
            }
        }
    }

    /// A raw tree object with these entries, in this order (as a hostile
    /// or broken server could send it).
    fn raw_tree(repo: &Repository, entries: &[(&str, &str, Oid)]) -> Oid {
        let mut raw = Vec::new();
        for (mode, name, oid) in entries {
            raw.extend_from_slice(format!("{mode} {name}\0").as_bytes());
            raw.extend_from_slice(oid.as_bytes());
        }
        repo.odb().unwrap().write(ObjectType::Tree, &raw).unwrap()
    }

    #[test]
    fn a_tree_out_of_git_order_is_refused_not_read_as_empty() {
        let d = tempfile::tempdir().unwrap();
        let repo = Repository::init_bare(d.path().join("r.git")).unwrap();
        let f = repo.blob(b"x").unwrap();
        let sorted = raw_tree(&repo, &[("100644", "a", f), ("100644", "b", f)]);
        let unsorted = raw_tree(&repo, &[("100644", "b", f), ("100644", "a", f)]);
        let root = d.path().join("srv");
        // Out of order at the top: `srv` sorts last but comes first, so a
        // binary search for it lands in the wrong half.
        let top = raw_tree(
            &repo,
            &[
                ("40000", "srv", sorted),
                ("100644", "b", f),
                ("100644", "c", f),
                ("100644", "d", f),
                ("100644", "e", f),
            ],
        );
        let tree = repo.find_tree(top).unwrap();
        let p = plan(&repo, &tree, &[(root.clone(), "srv".into())]).unwrap();
        assert_eq!(p.refused, ["`/`: tree entries out of git's order"]);
        assert!(p.absent.is_empty());
        // Out of order below the path.
        let top = raw_tree(&repo, &[("40000", "srv", unsorted)]);
        let tree = repo.find_tree(top).unwrap();
        let p = plan(&repo, &tree, &[(root.clone(), "srv".into())]).unwrap();
        assert_eq!(p.refused, ["`srv`: tree entries out of git's order"]);
        // A name twice.
        let twice = raw_tree(&repo, &[("100644", "a", f), ("100644", "a", f)]);
        let top = raw_tree(&repo, &[("40000", "srv", twice)]);
        let tree = repo.find_tree(top).unwrap();
        let p = plan(&repo, &tree, &[(root, "srv".into())]).unwrap();
        assert_eq!(p.refused, ["`srv`: tree entries out of git's order"]);
    }

    #[test]
    fn a_symlinked_directory_on_disk_is_never_written_through() {
        let d = tempfile::tempdir().unwrap();
        let repo = Repository::init_bare(d.path().join("r.git")).unwrap();
        let blob = repo.blob(b"x").unwrap();
        let mut sub = repo.treebuilder(None).unwrap();
        sub.insert("f", blob, 0o100644).unwrap();
        let sub = sub.write().unwrap();
        let mut top = repo.treebuilder(None).unwrap();
        top.insert("sub", sub, 0o040000).unwrap();
        let top = top.write().unwrap();
        let root = d.path().join("data");
        let outside = d.path().join("outside");
        fs::create_dir_all(&root).unwrap();
        fs::create_dir_all(&outside).unwrap();
        std::os::unix::fs::symlink(&outside, root.join("sub")).unwrap();
        let _ = top;
        // A plan that forgot the directory op must still not write through the link.
        let ops = vec![
            Op::Dir {
                path: root.clone(),
                mode: 0o755,
            },
            Op::File {
                path: root.join("sub/f"),
                oid: blob,
                mode: 0o644,
            },
        ];
        let p = Plan {
            ops,
            roots: vec![root.clone()],
            ..Plan::default()
        };
        assert!(apply(&repo, &p, &no_blobs(), &mut StatCache::default(), &|_| {}).is_err());
        assert!(!outside.join("f").exists());
        // With the directory op first, the planted symlink is replaced by a real dir.
        let ops = vec![
            Op::Dir {
                path: root.clone(),
                mode: 0o755,
            },
            Op::Dir {
                path: root.join("sub"),
                mode: 0o755,
            },
            Op::File {
                path: root.join("sub/f"),
                oid: blob,
                mode: 0o644,
            },
        ];
        let p = Plan {
            ops,
            roots: vec![root.clone()],
            ..Plan::default()
        };
        apply(&repo, &p, &no_blobs(), &mut StatCache::default(), &|_| {}).unwrap();
        assert!(!outside.join("f").exists());
        assert_eq!(fs::read(root.join("sub/f")).unwrap(), b"x");
    }
}
