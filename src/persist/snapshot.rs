//! Snapshot: build a git tree straight from the live files (no mirror copy,
//! no symlinks into the data) and commit it only when it changed.
//!
//! Regular files go into the object database as they are, reusing the stat
//! cache so an unchanged file is not read again; SQLite databases are copied
//! with SQLite's online backup API into a temp file first, so a database being
//! written is never read raw (the original's defect 6). Empty directories keep
//! a [`KEEP_MARKER`] file; modes, persisted paths and skipped large files are
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

use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use git2::{Oid, Repository};

use super::deadline::{self, Stop};
use super::pointer::{self, Pointer};

use super::blob;
use super::plan::{
    self, CacheEntry, Decision, FileType, PathRules, ScanClock, StatCache, StatKey, KEEP_MARKER,
    META_DIR,
};

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
    /// The operation's deadline passed or it was cancelled ([`deadline`]).
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

/// Remove a database file and any side files SQLite left beside it.
fn remove_db_files(db: &Path) {
    for suffix in ["", "-journal", "-wal", "-shm"] {
        let mut p = db.as_os_str().to_os_string();
        p.push(suffix);
        let _ = fs::remove_file(PathBuf::from(p));
    }
}

/// A node of the tree under construction.
enum Node {
    Leaf { oid: Oid, mode: i32 },
    Dir(BTreeMap<Vec<u8>, Node>),
}

/// Walks live files into the object database.
pub struct TreeBuilder<'a> {
    repo: &'a Repository,
    threshold: u64,
    tmp_dir: &'a Path,
    cache: &'a mut StatCache,
    scan_start_ns: i128,
    /// The filesystem clock at the start of the build (when it could be probed).
    clock: Option<ScanClock>,
    seen: HashSet<PathBuf>,
    modes: Vec<(String, u32)>,
    built: Built,
    sqlite_busy_timeout: Duration,
    /// Large files become LFS pointers (a blob store is configured).
    pointers: bool,
    /// The LFS endpoint written to `.lfsconfig`, if any.
    lfs_url: Option<String>,
    /// Binary files below the threshold become LFS pointers too (only with
    /// `pointers`).
    offload_binary: bool,
    /// The previous snapshot's tree, when new files created during the scan
    /// are left to the next snapshot ([`TreeBuilder::point_in_time`]).
    previous: Option<PointInTime<'a>>,
}

/// What [`TreeBuilder::point_in_time`] needs: the tree of the previous
/// snapshot (none for the first one).
struct PointInTime<'a> {
    tree: Option<git2::Tree<'a>>,
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

fn read_err(path: &Path) -> impl FnOnce(io::Error) -> SnapshotError + '_ {
    move |source| SnapshotError::Read {
        path: path.to_path_buf(),
        source,
    }
}

fn git_mode(mode: u32) -> i32 {
    if mode & 0o111 != 0 {
        0o100755
    } else {
        0o100644
    }
}

impl<'a> TreeBuilder<'a> {
    /// A builder writing into `repo`, copying SQLite databases via `tmp_dir`.
    pub fn new(
        repo: &'a Repository,
        threshold: u64,
        tmp_dir: &'a Path,
        cache: &'a mut StatCache,
    ) -> Self {
        Self {
            repo,
            threshold,
            tmp_dir,
            cache,
            scan_start_ns: now_ns(),
            clock: None,
            seen: HashSet::new(),
            modes: Vec::new(),
            built: Built::default(),
            sqlite_busy_timeout: Duration::from_secs(10),
            pointers: false,
            lfs_url: None,
            offload_binary: false,
            previous: None,
        }
    }

    /// Make the snapshot point-in-time across files (issue 17): an entry
    /// created after the scan began, and not in `previous` (the last
    /// snapshot's tree), is left to the next snapshot.
    ///
    /// Why this and not rescanning until nothing changes: under a steady
    /// writer (hundreds of files a second) the directories never settle,
    /// so a bounded rescan still ends with a gap, and the walk reads
    /// directories in an order unrelated to creation. With a cutoff, every
    /// file created before it exists when the walk starts and is found,
    /// and every file left out was created after it: never a newer file
    /// without an older one. The cutoff is the filesystem's own clock (a
    /// probe file's timestamp one tick after the build began, from the
    /// same coarse kernel clock as the files'), compared with birth time,
    /// not mtime: a database written all the time keeps its old birth
    /// time and is never starved. A name
    /// the previous snapshot had is read as it is now (a file replaced by
    /// rename is born anew): leaving it out would drop it from this
    /// snapshot. Without birth times (old kernels, some filesystems)
    /// entries are taken as found, as before.
    pub fn point_in_time(mut self, previous: Option<Oid>) -> Self {
        let tree = previous.and_then(|t| self.repo.find_tree(t).ok());
        self.previous = Some(PointInTime { tree });
        self
    }

    /// Leave this entry to the next snapshot ([`TreeBuilder::point_in_time`])?
    fn born_during_scan(&self, rules: &PathRules, rel: &Path, meta: &fs::Metadata) -> bool {
        let (Some(pit), Some(clock)) = (&self.previous, self.clock) else {
            return false;
        };
        let Ok(born) = meta.created() else {
            return false;
        };
        let born_ns = born
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as i128);
        if clock.predates(born_ns) {
            return false;
        }
        let tree_path = Path::new(&rules.tree).join(rel);
        pit.tree
            .as_ref()
            .is_none_or(|t| t.get_path(&tree_path).is_err())
    }

    /// Commit files at or above the threshold as LFS pointers (a blob store
    /// takes their bytes); `lfs_url` goes to `.lfsconfig` so clones find it.
    pub fn with_pointers(mut self, lfs_url: Option<String>) -> Self {
        self.pointers = true;
        self.lfs_url = lfs_url;
        self
    }

    /// Also commit binary files below the threshold as LFS pointers. Has an
    /// effect only with [`with_pointers`](Self::with_pointers): without a
    /// blob store such files would have nowhere to go but the skipped list.
    pub fn with_offload_binary(mut self, on: bool) -> Self {
        self.offload_binary = on;
        self
    }

    /// Is the binary rule in force for this build?
    fn binary_rule(&self) -> bool {
        self.pointers && self.offload_binary
    }

    /// Build the tree of all `paths` plus `.stackctl/` metadata.
    pub fn build(mut self, paths: &[PathRules]) -> Result<Built, SnapshotError> {
        fs::create_dir_all(self.tmp_dir).map_err(|source| SnapshotError::Temp {
            path: self.tmp_dir.to_path_buf(),
            source,
        })?;
        self.clock = probe_clock(self.tmp_dir);
        if self.previous.is_some() {
            // A file written just before the snapshot may share the probe's
            // clock tick, and an equal stamp cannot tell which came first:
            // wait for the next tick, so everything created before the
            // build began is older than the cutoff.
            self.clock = next_tick(self.tmp_dir, self.clock);
        }
        // Copies left by a build that was interrupted (kill -9) or whose
        // caller failed before cleaning up: only one build runs per workdir.
        if let Ok(rd) = fs::read_dir(self.tmp_dir) {
            for e in rd.flatten() {
                if e.file_name()
                    .as_bytes()
                    .starts_with(LARGE_COPY_PREFIX.as_bytes())
                {
                    let _ = fs::remove_file(e.path());
                }
            }
        }
        let mut root: BTreeMap<Vec<u8>, Node> = BTreeMap::new();
        let mut tree_paths = Vec::new();
        for rules in paths {
            tree_paths.push(rules.tree.clone());
            // The declared path itself may be a symlink the user set up: follow it.
            let meta = match fs::metadata(&rules.root) {
                Ok(m) => m,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(read_err(&rules.root)(e)),
            };
            let node = if meta.is_dir() {
                self.modes.push((rules.tree.clone(), meta.mode() & 0o7777));
                match self.walk_dir(rules, &rules.root, Path::new(""))? {
                    Some(n) => n,
                    None => continue,
                }
            } else {
                match self.file_node(rules, &rules.root, Path::new(""), &meta)? {
                    Some(n) => n,
                    None => continue,
                }
            };
            insert_at(&mut root, &rules.tree, node);
        }
        let mut meta = BTreeMap::new();
        let paths_text: String = tree_paths.iter().map(|p| format!("{p}\n")).collect();
        let mut skipped: Vec<String> = self
            .built
            .too_large
            .iter()
            .filter_map(|(p, _)| plan::tree_path(p).ok())
            .map(|p| format!("{p}\n"))
            .collect();
        skipped.sort();
        for (name, text) in [
            ("format", "1\n".to_string()),
            ("paths", paths_text),
            ("modes", plan::render_modes(&self.modes)),
            ("skipped-large", skipped.concat()),
        ] {
            let oid = self.repo.blob(text.as_bytes())?;
            meta.insert(
                name.as_bytes().to_vec(),
                Node::Leaf {
                    oid,
                    mode: 0o100644,
                },
            );
        }
        root.insert(META_DIR.as_bytes().to_vec(), Node::Dir(meta));
        if !self.built.large.is_empty() {
            let tracked: Vec<String> = self.built.large.iter().map(|l| l.tree.clone()).collect();
            let mut top = vec![(".gitattributes", pointer::render_gitattributes(&tracked))];
            if let Some(url) = &self.lfs_url {
                top.push((".lfsconfig", pointer::render_lfsconfig(url)));
            }
            for (name, text) in top {
                let oid = self.repo.blob(text.as_bytes())?;
                root.insert(
                    name.as_bytes().to_vec(),
                    Node::Leaf {
                        oid,
                        mode: 0o100644,
                    },
                );
            }
        }
        let tree = write_tree(self.repo, &root)?;
        self.cache.retain_seen(&self.seen);
        self.built.tree = Some(tree);
        Ok(self.built)
    }

    /// Walk a directory; `None` when it vanished mid-scan.
    fn walk_dir(
        &mut self,
        rules: &PathRules,
        abs: &Path,
        rel: &Path,
    ) -> Result<Option<Node>, SnapshotError> {
        let rd = match fs::read_dir(abs) {
            Ok(rd) => rd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(read_err(abs)(e)),
        };
        let mut map = BTreeMap::new();
        for entry in rd {
            let entry = entry.map_err(read_err(abs))?;
            let name = entry.file_name();
            let child_abs = abs.join(&name);
            let child_rel = rel.join(&name);
            let meta = match fs::symlink_metadata(&child_abs) {
                Ok(m) => m,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(read_err(&child_abs)(e)),
            };
            if self.born_during_scan(rules, &child_rel, &meta) {
                self.built.deferred += 1;
                continue;
            }
            let node = if meta.is_dir() {
                match rules.decide(&child_rel, FileType::Dir, 0, None, self.threshold, false) {
                    Decision::Dir => {
                        let n = self.walk_dir(rules, &child_abs, &child_rel)?;
                        if n.is_some() {
                            self.push_mode(rules, &child_rel, meta.mode());
                        }
                        n
                    }
                    _ => None,
                }
            } else {
                self.file_node(rules, &child_abs, &child_rel, &meta)?
            };
            if let Some(n) = node {
                map.insert(name.as_bytes().to_vec(), n);
            }
        }
        // Empty, or everything in it excluded: keep the directory itself, a
        // service may expect it to exist.
        if map.is_empty() {
            let oid = self.repo.blob(b"")?;
            map.insert(
                KEEP_MARKER.as_bytes().to_vec(),
                Node::Leaf {
                    oid,
                    mode: 0o100644,
                },
            );
        }
        Ok(Some(Node::Dir(map)))
    }

    fn push_mode(&mut self, rules: &PathRules, rel: &Path, mode: u32) {
        let tree = if rel.as_os_str().is_empty() {
            rules.tree.clone()
        } else {
            format!("{}/{}", rules.tree, rel.to_string_lossy())
        };
        self.modes.push((tree, mode & 0o7777));
    }

    /// A non-directory entry; `None` when skipped.
    fn file_node(
        &mut self,
        rules: &PathRules,
        abs: &Path,
        rel: &Path,
        meta: &fs::Metadata,
    ) -> Result<Option<Node>, SnapshotError> {
        // Between files: a snapshot that must give way stops here.
        deadline::check().map_err(SnapshotError::Stopped)?;
        let ty = file_type(meta);
        let size = meta.len();
        let key = stat_key(meta);
        let excluded = rules.excluded(rel, ty).is_some();
        if !excluded {
            self.built.newest_mtime = self.built.newest_mtime.max(Some(meta.mtime()));
        }
        // A cached blob needs neither the header nor the content.
        let wal = if ty == FileType::File {
            wal_key(abs)
        } else {
            None
        };
        let large = self.threshold > 0 && size >= self.threshold;
        let binary_rule = self.binary_rule();
        if ty == FileType::File && !excluded && (!large || self.pointers) {
            if let Some(entry) = self.cache.entry(abs, key, wal).cloned() {
                if let Some(hit) = self.cached(&entry, size)? {
                    let (oid, pointer) = hit;
                    if let Some(pointer) = pointer {
                        // No copy now: the caller makes one only if the
                        // store turns out not to hold the blob yet.
                        let sqlite = entry.copy
                            || read_header(abs).is_ok_and(|h| plan::is_sqlite_header(&h));
                        self.push_large(rules, rel, abs, pointer, sqlite, None);
                    }
                    self.seen.insert(abs.to_path_buf());
                    self.count_file(rules, rel, meta);
                    return Ok(Some(Node::Leaf {
                        oid,
                        mode: git_mode(meta.mode()),
                    }));
                }
            }
        }
        let want = if ty == FileType::File {
            plan::head_len(size, self.threshold, binary_rule)
        } else {
            0
        };
        let head = if want > 0 {
            match read_head(abs, want) {
                Ok(h) => Some(h),
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(read_err(abs)(e)),
            }
        } else {
            None
        };
        // Recorded only when the whole window was read: a 16-byte header
        // says nothing about byte 17.
        let binary = head
            .as_deref()
            .filter(|_| want == plan::SNIFF_LEN)
            .map(plan::looks_binary);
        let decision = rules.decide(rel, ty, size, head.as_deref(), self.threshold, binary_rule);
        let node = match decision {
            Decision::Blob | Decision::Sqlite => {
                let oid = if decision == Decision::Sqlite {
                    self.built.sqlite += 1;
                    self.sqlite_blob(abs)?
                } else {
                    match self.repo.blob_path(abs) {
                        Ok(oid) => oid,
                        // libgit2 gives up on a file that changes size while
                        // it streams it: read it whole instead (it is below
                        // the threshold), and take what is there now.
                        Err(_) => match fs::read(abs) {
                            Ok(bytes) => self.repo.blob(&bytes)?,
                            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
                            Err(e) => return Err(read_err(abs)(e)),
                        },
                    }
                };
                let entry = CacheEntry {
                    key,
                    wal,
                    oid: oid.to_string(),
                    copy: decision == Decision::Sqlite,
                    binary,
                };
                self.record_read(abs, meta, entry, false);
                self.count_file(rules, rel, meta);
                Node::Leaf {
                    oid,
                    mode: git_mode(meta.mode()),
                }
            }
            Decision::Symlink => {
                let target = match fs::read_link(abs) {
                    Ok(t) => t,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
                    Err(e) => return Err(read_err(abs)(e)),
                };
                let oid = self.repo.blob(target.as_os_str().as_bytes())?;
                Node::Leaf {
                    oid,
                    mode: 0o120000,
                }
            }
            Decision::Offload { size } if !self.pointers => {
                self.built.too_large.push((abs.to_path_buf(), size));
                return Ok(None);
            }
            Decision::Offload { .. }
                if match &head {
                    Some(h) => plan::is_sqlite_header(h),
                    None => read_header(abs).is_ok_and(|h| plan::is_sqlite_header(&h)),
                } =>
            {
                // An offloaded database (large, or binary under the rule)
                // gets what a small one gets: a consistent copy through the
                // backup API; the copy is hashed and later uploaded, never
                // the live file.
                self.built.sqlite += 1;
                let copy = self.tmp_dir.join(format!(
                    "{LARGE_COPY_PREFIX}{}-{}.db",
                    std::process::id(),
                    self.built.large.len()
                ));
                remove_db_files(&copy);
                let hashed = sqlite_copy(abs, &copy, self.sqlite_busy_timeout).and_then(|()| {
                    blob::hash_file(&copy).map_err(|source| SnapshotError::Read {
                        path: copy.clone(),
                        source,
                    })
                });
                let pointer = match hashed {
                    Ok(p) => p,
                    Err(e) => {
                        remove_db_files(&copy);
                        return Err(e);
                    }
                };
                let oid = self.repo.blob(pointer.render().as_bytes())?;
                let entry = CacheEntry {
                    key,
                    wal,
                    oid: oid.to_string(),
                    copy: true,
                    binary: Some(true),
                };
                self.record_read(abs, meta, entry, false);
                self.push_large(rules, rel, abs, pointer, true, Some(copy));
                self.count_file(rules, rel, meta);
                Node::Leaf {
                    oid,
                    mode: git_mode(meta.mode()),
                }
            }
            Decision::Offload { .. } => {
                // Streamed: memory stays flat whatever the size.
                let pointer = match blob::hash_file(abs) {
                    Ok(p) => p,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
                    Err(e) => return Err(read_err(abs)(e)),
                };
                let oid = self.repo.blob(pointer.render().as_bytes())?;
                let entry = CacheEntry {
                    key,
                    wal,
                    oid: oid.to_string(),
                    copy: false,
                    binary,
                };
                // Hashed straight from the live file: the stat must be the
                // one the hash saw.
                self.record_read(abs, meta, entry, true);
                self.push_large(rules, rel, abs, pointer, false, None);
                self.count_file(rules, rel, meta);
                Node::Leaf {
                    oid,
                    mode: git_mode(meta.mode()),
                }
            }
            Decision::Special => {
                self.built.warnings.push(format!(
                    "skipped `{}`: not a regular file, directory or symlink",
                    abs.display()
                ));
                return Ok(None);
            }
            Decision::Excluded(_) | Decision::Dir => return Ok(None),
        };
        Ok(Some(node))
    }

    /// The cached blob `entry` names, if it still is what this file of
    /// `size` bytes should become: its id and, for an LFS pointer, the
    /// pointer. Only the object database is read, never the file.
    fn cached(
        &self,
        entry: &CacheEntry,
        size: u64,
    ) -> Result<Option<(Oid, Option<Pointer>)>, SnapshotError> {
        let Ok(oid) = Oid::from_str(&entry.oid) else {
            return Ok(None);
        };
        // Missing (a pruned object database): read the file again.
        let Ok((blob_size, git2::ObjectType::Blob)) = self.repo.odb()?.read_header(oid) else {
            return Ok(None);
        };
        // Only a small blob can be a pointer: larger ones are not loaded.
        let pointer = if blob_size <= pointer::MAX_POINTER_SIZE {
            self.repo
                .find_blob(oid)
                .ok()
                .and_then(|b| Pointer::parse(b.content()))
        } else {
            None
        };
        let kind = plan::cached_kind(entry.copy, size, blob_size as u64, pointer.map(|p| p.size));
        if !plan::reuse_cached(kind, size, self.threshold, self.binary_rule(), entry.binary) {
            return Ok(None);
        }
        Ok(Some((
            oid,
            pointer.filter(|_| kind == plan::Cached::Pointer),
        )))
    }

    /// `abs` (lstat `meta`) was read into the snapshot: count it, keep its
    /// cache entry through this build, and cache `entry`. With `restat`,
    /// only if the file's stat still is `entry.key` (the content was read
    /// from the live file, which may have moved meanwhile).
    fn record_read(&mut self, abs: &Path, meta: &fs::Metadata, entry: CacheEntry, restat: bool) {
        self.built.read += 1;
        self.seen.insert(abs.to_path_buf());
        if !restat || fs::symlink_metadata(abs).is_ok_and(|m| stat_key(&m) == entry.key) {
            self.remember(abs, entry, meta.dev());
        }
    }

    /// Cache `entry` for `abs` (device `dev`): at once when the filesystem
    /// clock had moved past the file (and its WAL) at the start of the scan,
    /// else only outside the racy window.
    fn remember(&mut self, abs: &Path, entry: CacheEntry, dev: u64) {
        let settled = self.clock.is_some_and(|c| {
            c.settled(dev, entry.key.mtime_ns)
                && entry.wal.is_none_or(|w| c.settled(dev, w.mtime_ns))
        });
        if settled {
            self.cache.store_settled(abs, entry);
        } else {
            self.cache.store(abs, entry, self.scan_start_ns);
        }
    }

    fn push_large(
        &mut self,
        rules: &PathRules,
        rel: &Path,
        abs: &Path,
        pointer: Pointer,
        sqlite: bool,
        copy: Option<PathBuf>,
    ) {
        let tree = if rel.as_os_str().is_empty() {
            rules.tree.clone()
        } else {
            format!("{}/{}", rules.tree, rel.to_string_lossy())
        };
        self.built.large.push(LargeFile {
            path: abs.to_path_buf(),
            tree,
            pointer,
            sqlite,
            copy,
        });
    }

    fn count_file(&mut self, rules: &PathRules, rel: &Path, meta: &fs::Metadata) {
        self.built.files += 1;
        self.built.bytes += meta.len();
        self.push_mode(rules, rel, meta.mode());
    }

    /// Copy a live database with the backup API and store the copy.
    fn sqlite_blob(&mut self, abs: &Path) -> Result<Oid, SnapshotError> {
        let tmp = self
            .tmp_dir
            .join(format!("sqlite-copy-{}.db", std::process::id()));
        let _ = fs::remove_file(&tmp);
        let result = sqlite_copy(abs, &tmp, self.sqlite_busy_timeout)
            .and_then(|()| Ok(self.repo.blob_path(&tmp)?));
        remove_db_files(&tmp);
        result
    }
}

/// Probe the clock of the filesystem holding `dir` (see [`ScanClock`]).
fn probe_clock(dir: &Path) -> Option<ScanClock> {
    let probe = dir.join(format!(".clock-probe-{}", std::process::id()));
    let meta = fs::File::create(&probe).and_then(|f| f.metadata());
    let _ = fs::remove_file(&probe);
    let meta = meta.ok()?;
    Some(ScanClock {
        dev: meta.dev(),
        mtime_ns: stat_key(&meta).mtime_ns,
    })
}

/// A probe of the filesystem clock one tick after `first` (at most 50 ms
/// later: a coarse clock keeps the last probe, and files of its tick wait
/// for the next snapshot).
fn next_tick(dir: &Path, first: Option<ScanClock>) -> Option<ScanClock> {
    let first = first?;
    let give_up = Instant::now() + Duration::from_millis(50);
    loop {
        match probe_clock(dir) {
            Some(c) if c.mtime_ns > first.mtime_ns => return Some(c),
            Some(c) if Instant::now() >= give_up => return Some(c),
            None => return Some(first),
            Some(_) => std::thread::sleep(Duration::from_millis(1)),
        }
    }
}

/// Stat of `<db>-wal`, part of a database's cache key.
pub(crate) fn wal_key(db: &Path) -> Option<StatKey> {
    let mut p = db.as_os_str().to_os_string();
    p.push("-wal");
    fs::symlink_metadata(PathBuf::from(p))
        .ok()
        .map(|m| stat_key(&m))
}

fn read_header(path: &Path) -> io::Result<Vec<u8>> {
    read_head(path, plan::SQLITE_HEADER.len())
}

/// At most the first `len` bytes of a file.
fn read_head(path: &Path, len: usize) -> io::Result<Vec<u8>> {
    let mut buf = Vec::with_capacity(len);
    fs::File::open(path)?
        .take(len as u64)
        .read_to_end(&mut buf)?;
    Ok(buf)
}

/// Copy the database at `src` to `dst` with SQLite's online backup API, in
/// one step (a consistent read transaction), retrying while a writer holds a
/// lock, up to `busy` in total.
pub fn sqlite_copy(src: &Path, dst: &Path, busy: Duration) -> Result<(), SnapshotError> {
    use rusqlite::backup::{Backup, StepResult};
    use rusqlite::{Connection, OpenFlags};
    let err = |e: rusqlite::Error| SnapshotError::Sqlite {
        path: src.to_path_buf(),
        reason: e.to_string(),
    };
    let source = Connection::open_with_flags(
        src,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(err)?;
    source.busy_timeout(busy).map_err(err)?;
    let mut dest = Connection::open(dst).map_err(err)?;
    let deadline = Instant::now() + busy;
    {
        let backup = Backup::new(&source, &mut dest).map_err(err)?;
        loop {
            match backup.step(-1).map_err(err)? {
                StepResult::Done => break,
                StepResult::More => {}
                StepResult::Busy | StepResult::Locked => {
                    if Instant::now() >= deadline {
                        return Err(SnapshotError::Sqlite {
                            path: src.to_path_buf(),
                            reason: format!("still locked by a writer after {}s", busy.as_secs()),
                        });
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                // rusqlite's StepResult is non-exhaustive.
                _ => {}
            }
        }
    }
    // A restored copy must open on its own: no WAL file travels with it.
    dest.pragma_update(None, "journal_mode", "DELETE")
        .map_err(err)?;
    dest.close().map_err(|(_, e)| err(e))?;
    normalise_header(dst).map_err(|e| SnapshotError::Read {
        path: dst.to_path_buf(),
        source: e,
    })
}

/// Offsets of the header's "file change counter" and "version-valid-for"
/// fields (big-endian u32 each).
const CHANGE_COUNTER_AT: u64 = 24;
const VERSION_VALID_FOR_AT: u64 = 92;

/// Set the change counter and version-valid-for of a copy to 1. They count
/// writes to the *file*, so two copies of the same content would otherwise
/// differ (the backup's own write transaction bumps them) and every snapshot
/// after a restore would commit an unchanged database. Setting both to the
/// same value keeps the header's page count valid; the copy is a new file
/// (restore renames it into place), so no reader has the old counter cached.
fn normalise_header(db: &Path) -> io::Result<()> {
    use std::os::unix::fs::FileExt;
    let f = fs::OpenOptions::new().write(true).open(db)?;
    f.write_all_at(&1u32.to_be_bytes(), CHANGE_COUNTER_AT)?;
    f.write_all_at(&1u32.to_be_bytes(), VERSION_VALID_FOR_AT)?;
    f.sync_all()
}

fn insert_at(root: &mut BTreeMap<Vec<u8>, Node>, tree_path: &str, node: Node) {
    let mut parts: Vec<&str> = tree_path.split('/').collect();
    let last = parts.pop().unwrap_or_default();
    let mut cur = root;
    for p in parts {
        let entry = cur
            .entry(p.as_bytes().to_vec())
            .or_insert_with(|| Node::Dir(BTreeMap::new()));
        if let Node::Leaf { .. } = entry {
            // Disjoint persisted paths (checked at open) cannot get here.
            *entry = Node::Dir(BTreeMap::new());
        }
        cur = match entry {
            Node::Dir(m) => m,
            Node::Leaf { .. } => return,
        };
    }
    cur.insert(last.as_bytes().to_vec(), node);
}

fn write_tree(repo: &Repository, map: &BTreeMap<Vec<u8>, Node>) -> Result<Oid, git2::Error> {
    let mut tb = repo.treebuilder(None)?;
    for (name, node) in map {
        let (oid, mode) = match node {
            Node::Leaf { oid, mode } => (*oid, *mode),
            Node::Dir(m) => (write_tree(repo, m)?, 0o040000),
        };
        tb.insert(std::ffi::OsStr::from_bytes(name), oid, mode)?;
    }
    tb.write()
}

/// Commit `tree` on `refname` unless it equals the tip's tree. Returns the
/// new commit, or `None` when nothing changed.
pub fn commit_if_changed(
    repo: &Repository,
    refname: &str,
    tree: Oid,
    message: &str,
) -> Result<Option<Oid>, git2::Error> {
    let parent = match repo.find_reference(refname) {
        Ok(r) => Some(r.peel_to_commit()?),
        Err(e) if e.code() == git2::ErrorCode::NotFound => None,
        Err(e) => return Err(e),
    };
    if parent.as_ref().is_some_and(|p| p.tree_id() == tree) {
        return Ok(None);
    }
    let tree = repo.find_tree(tree)?;
    let sig = signature()?;
    let parents: Vec<&git2::Commit> = parent.iter().collect();
    let oid = repo.commit(None, &sig, &sig, message, &tree, &parents)?;
    // Compare-and-swap on the ref: a concurrent writer in this workdir fails here.
    match &parent {
        Some(p) => repo.reference_matching(refname, oid, true, p.id(), "stackctl snapshot")?,
        None => repo.reference(refname, oid, false, "stackctl snapshot")?,
    };
    Ok(Some(oid))
}

/// The identity snapshots are committed with.
pub fn signature() -> Result<git2::Signature<'static>, git2::Error> {
    git2::Signature::now("stackctl", "stackctl@localhost")
}

/// `YYYY-mm-dd HH:MM:SS` (UTC) of a unix time, for commit messages.
pub fn format_utc(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Howard Hinnant's days-from-civil inverse.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// The message of a snapshot commit.
pub fn message(now_secs: i64, built: &Built) -> String {
    format!(
        "snapshot {} UTC: {} files, {} bytes",
        format_utc(now_secs),
        built.files,
        built.bytes
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_formatting() {
        for (secs, want) in [
            (0, "1970-01-01 00:00:00"),
            (951_782_400, "2000-02-29 00:00:00"),
            (1_790_000_000, "2026-09-21 14:13:20"),
            (-1, "1969-12-31 23:59:59"),
        ] {
            assert_eq!(format_utc(secs), want);
        }
    }

    fn repo() -> (tempfile::TempDir, Repository) {
        let d = tempfile::tempdir().unwrap();
        let r = Repository::init_bare(d.path().join("repo.git")).unwrap();
        (d, r)
    }

    #[test]
    fn unchanged_tree_commits_nothing_and_cache_skips_reads() {
        let (d, repo) = repo();
        let data = d.path().join("data");
        fs::create_dir_all(data.join("empty")).unwrap();
        fs::write(data.join("a.txt"), "hello").unwrap();
        let rules = vec![PathRules::new(&data, &[], &[], &[]).unwrap()];
        let mut cache = StatCache::default();
        let tmp = d.path().join("tmp");
        let b1 = TreeBuilder::new(&repo, 0, &tmp, &mut cache)
            .build(&rules)
            .unwrap();
        assert_eq!((b1.files, b1.read), (1, 1));
        let c1 = commit_if_changed(&repo, "refs/heads/main", b1.tree.unwrap(), "one").unwrap();
        assert!(c1.is_some());
        // Pretend the scan happened long after the write: the cache may be trusted.
        let mut cache = StatCache::default();
        let mut tb = TreeBuilder::new(&repo, 0, &tmp, &mut cache);
        tb.scan_start_ns += 10 * plan::RACY_WINDOW_NS;
        tb.build(&rules).unwrap();
        let mut tb = TreeBuilder::new(&repo, 0, &tmp, &mut cache);
        tb.scan_start_ns += 10 * plan::RACY_WINDOW_NS;
        let b2 = tb.build(&rules).unwrap();
        assert_eq!((b2.files, b2.read), (1, 0), "second scan served from cache");
        assert_eq!(b2.tree, b1.tree);
        assert_eq!(
            commit_if_changed(&repo, "refs/heads/main", b2.tree.unwrap(), "two").unwrap(),
            None
        );
        // The empty dir is kept with a marker.
        let tree = repo.find_tree(b1.tree.unwrap()).unwrap();
        let rel = format!("{}/empty/{KEEP_MARKER}", plan::tree_path(&data).unwrap());
        assert!(tree.get_path(Path::new(&rel)).is_ok(), "{rel}");
        assert!(tree.get_path(Path::new(".stackctl/modes")).is_ok());
    }

    #[test]
    fn small_binary_files_become_pointers_and_unchanged_ones_are_not_read_again() {
        let (d, repo) = repo();
        let data = d.path().join("data");
        fs::create_dir_all(&data).unwrap();
        fs::write(data.join("a.bin"), b"ab\0cd").unwrap();
        fs::write(data.join("a.txt"), "hello").unwrap();
        let rules = vec![PathRules::new(&data, &[], &[], &[]).unwrap()];
        let tmp = d.path().join("tmp");
        let mut cache = StatCache::default();
        let build = |cache: &mut StatCache, rule: bool| {
            let mut tb = TreeBuilder::new(&repo, 1 << 20, &tmp, cache)
                .with_pointers(None)
                .with_offload_binary(rule);
            // As if the scan came long after the writes: the cache may be trusted.
            tb.scan_start_ns += 10 * plan::RACY_WINDOW_NS;
            tb.build(&rules).unwrap()
        };
        let b1 = build(&mut cache, true);
        assert_eq!((b1.files, b1.read), (2, 2));
        let large: Vec<_> = b1.large.iter().map(|l| l.path.clone()).collect();
        assert_eq!(large, [data.join("a.bin")]);
        let b2 = build(&mut cache, true);
        assert_eq!((b2.files, b2.read), (2, 0), "served from the cache");
        assert_eq!(b2.tree, b1.tree);
        // Still listed: its blob must be in the store before a commit names it.
        assert_eq!(b2.large, b1.large);
        // Without the rule the cached pointer no longer fits: read again.
        let b3 = build(&mut cache, false);
        assert_eq!((b3.read, b3.large.len()), (1, 0));
        assert_ne!(b3.tree, b1.tree);
    }

    #[test]
    fn sqlite_copy_is_a_valid_database() {
        let d = tempfile::tempdir().unwrap();
        let src = d.path().join("src.db");
        let c = rusqlite::Connection::open(&src).unwrap();
        c.pragma_update(None, "journal_mode", "WAL").unwrap();
        c.execute_batch("create table t(x); insert into t values (1),(2),(3);")
            .unwrap();
        let dst = d.path().join("dst.db");
        sqlite_copy(&src, &dst, Duration::from_secs(2)).unwrap();
        let copy = rusqlite::Connection::open(&dst).unwrap();
        let n: i64 = copy
            .query_row("select count(*) from t", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 3);
        let ok: String = copy
            .query_row("pragma integrity_check", [], |r| r.get(0))
            .unwrap();
        assert_eq!(ok, "ok");
        drop(copy);
        // A copy of the copy (what a snapshot after a restore takes) is byte-identical.
        let again = d.path().join("again.db");
        sqlite_copy(&dst, &again, Duration::from_secs(2)).unwrap();
        assert_eq!(fs::read(&dst).unwrap(), fs::read(&again).unwrap());
    }
}
