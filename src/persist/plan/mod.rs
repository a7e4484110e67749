//! Snapshot planning, pure: where a persisted path lives in the tree, what is
//! excluded, what each file becomes (blob, SQLite copy, skipped), and the stat
//! cache that lets an unchanged file be reused without reading it.
//!
//! No I/O here: the snapshot and restore shells feed facts in (names, sizes,
//! the first bytes of a file) and act on the decisions that come out.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};

/// The 16-byte header every SQLite 3 database file starts with.
pub const SQLITE_HEADER: &[u8; 16] = b"SQLite format 3\0";

/// Suffixes of SQLite's side files: never committed, removed on restore.
pub const SQLITE_SIDECARS: [&str; 3] = ["-wal", "-shm", "-journal"];

/// Name of the empty file that keeps an empty directory in the tree.
pub const KEEP_MARKER: &str = ".stackctl-keep";

/// Top-level tree directory holding stackctl's metadata.
pub const META_DIR: &str = ".stackctl";

/// How many leading bytes git looks at to call a file binary (its
/// `buffer_is_binary`: a NUL among the first 8000 bytes). Hosts that refuse
/// binary files outside LFS apply git's notion, so the sniff uses the same.
pub const SNIFF_LEN: usize = 8000;

/// Errors of snapshot planning.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum PlanError {
    /// A persisted path is not absolute or not normalised.
    #[error(
        "persisted path `{0}` must be absolute and contain no `.` or `..`: fix `persist.paths`"
    )]
    NotAbsolute(PathBuf),
    /// `/` itself cannot be persisted.
    #[error("persisted path `/` would back up the whole disk: name the data directories in `persist.paths`")]
    Root,
    /// A tree path must be UTF-8 so the repository stays readable everywhere.
    #[error("persisted path `{0}` is not valid UTF-8: rename it or persist its parent")]
    NotUtf8(PathBuf),
    /// Two persisted paths overlap; the tree would hold one file twice.
    #[error("persisted paths `{0}` and `{1}` overlap: keep only the outer one and use `exclude:`")]
    Overlap(PathBuf, PathBuf),
    /// An exclude glob does not parse.
    #[error("exclude glob `{glob}` is invalid: {reason}")]
    BadGlob {
        /// The glob as written.
        glob: String,
        /// What the glob parser said.
        reason: String,
    },
}

/// Tree path of a persisted absolute path: `/a/b` → `a/b` (the original's layout).
pub fn tree_path(abs: &Path) -> Result<String, PlanError> {
    let mut parts = Vec::new();
    let mut comps = abs.components();
    if comps.next() != Some(Component::RootDir) {
        return Err(PlanError::NotAbsolute(abs.to_path_buf()));
    }
    for c in comps {
        match c {
            Component::Normal(s) => match s.to_str() {
                Some(s) => parts.push(s),
                None => return Err(PlanError::NotUtf8(abs.to_path_buf())),
            },
            _ => return Err(PlanError::NotAbsolute(abs.to_path_buf())),
        }
    }
    // `Path::components` silently drops `.` in the middle; refuse it anyway.
    let bytes = abs.as_os_str().as_bytes();
    if bytes.windows(3).any(|w| w == b"/./") || bytes.ends_with(b"/.") {
        return Err(PlanError::NotAbsolute(abs.to_path_buf()));
    }
    if parts.is_empty() {
        return Err(PlanError::Root);
    }
    Ok(parts.join("/"))
}

/// Is this one tree-entry name safe to create inside a directory?
/// Refuses empty names, `.`, `..`, and names holding `/` or NUL (a hostile
/// repository can write such entries with low-level tools).
pub fn safe_entry_name(name: &[u8]) -> bool {
    !name.is_empty() && name != b"." && name != b".." && !name.contains(&b'/') && !name.contains(&0)
}

/// Does the symlink at `link_rel` (relative to a persisted root) with
/// `target` stay inside that root? Absolute targets never do, and `..` is
/// allowed only at the start: after a name it would climb out of wherever
/// that name (maybe another symlink) leads, which no lexical check can follow.
pub fn symlink_stays_inside(link_rel: &Path, target: &Path) -> bool {
    if target.is_absolute() {
        return false;
    }
    // Depth of the directory holding the link, below the root.
    let mut depth: usize = link_rel.components().count().saturating_sub(1);
    let mut named = false;
    for c in target.components() {
        match c {
            Component::Normal(_) => {
                depth += 1;
                named = true;
            }
            Component::CurDir => {}
            Component::ParentDir => {
                if depth == 0 || named {
                    return false;
                }
                depth -= 1;
            }
            Component::RootDir | Component::Prefix(_) => return false,
        }
    }
    true
}

/// Is this file name one of SQLite's side files (`-wal`, `-shm`, `-journal`)?
pub fn is_sqlite_sidecar(name: &OsStr) -> bool {
    let b = name.as_bytes();
    SQLITE_SIDECARS
        .iter()
        .any(|s| b.len() > s.len() && b.ends_with(s.as_bytes()))
}

/// Does this file start with the SQLite 3 header?
pub fn is_sqlite_header(first_bytes: &[u8]) -> bool {
    first_bytes.len() >= SQLITE_HEADER.len() && &first_bytes[..16] == SQLITE_HEADER
}

/// Would git call a file starting with `head` binary? A NUL in its first
/// [`SNIFF_LEN`] bytes; bytes past that are ignored, as git ignores them.
pub fn looks_binary(head: &[u8]) -> bool {
    head.iter().take(SNIFF_LEN).any(|&b| b == 0)
}

/// Should a regular file go to the blob store as an LFS pointer? At or
/// above `threshold` (0: no size limit) always; below it only when it is
/// `binary` and `binary_rule` holds (the remote refuses binary files outside
/// LFS whatever their size, see [`offloads_binary`](crate::manifest::LargeFiles::offloads_binary)).
pub fn offload(size: u64, threshold: u64, binary: bool, binary_rule: bool) -> bool {
    (threshold > 0 && size >= threshold) || (binary_rule && binary)
}

/// Why a path is left out of the snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Excluded {
    /// Matched an `exclude:` glob (the glob as written).
    Glob(String),
    /// SQLite `-wal`/`-shm`/`-journal`: the database copy already holds it.
    SqliteSidecar,
    /// stackctl's own files (its workdir, the readiness file).
    Internal,
}

/// What the snapshot does with one directory entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Store the bytes as they are.
    Blob,
    /// Copy with SQLite's backup API, then store the copy.
    Sqlite,
    /// Goes to the blob store (see [`offload`]): an LFS pointer when a blob
    /// store is configured, else (only at or above `large_files.threshold`)
    /// skipped with a warning.
    Offload {
        /// The file's size in bytes.
        size: u64,
    },
    /// Store as a symlink entry (restore checks it stays inside).
    Symlink,
    /// Walk into it.
    Dir,
    /// Sockets, FIFOs, devices: not data, skipped.
    Special,
    /// Left out.
    Excluded(Excluded),
}

/// File type as seen by `lstat`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileType {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link (never followed).
    Symlink,
    /// Anything else.
    Other,
}

/// The exclusion rules of one persisted path (its globs plus the global ones).
#[derive(Debug, Clone)]
pub struct PathRules {
    /// The persisted absolute path.
    pub root: PathBuf,
    /// Its tree path (`a/b` for `/a/b`).
    pub tree: String,
    globs: GlobSet,
    patterns: Vec<String>,
    internal: Vec<PathBuf>,
}

impl PathRules {
    /// Rules for `root`, with `own` globs, the `global` ones, and stackctl's
    /// `internal` absolute paths (never snapshotted).
    pub fn new(
        root: &Path,
        own: &[String],
        global: &[String],
        internal: &[PathBuf],
    ) -> Result<Self, PlanError> {
        let tree = tree_path(root)?;
        let mut b = GlobSetBuilder::new();
        let mut patterns = Vec::new();
        for g in own.iter().chain(global) {
            let glob = GlobBuilder::new(g)
                .literal_separator(true)
                .build()
                .map_err(|e| PlanError::BadGlob {
                    glob: g.clone(),
                    reason: e.kind().to_string(),
                })?;
            b.add(glob);
            patterns.push(g.clone());
        }
        let globs = b.build().map_err(|e| PlanError::BadGlob {
            glob: patterns.join(", "),
            reason: e.to_string(),
        })?;
        Ok(Self {
            root: root.to_path_buf(),
            tree,
            globs,
            patterns,
            internal: internal.to_vec(),
        })
    }

    /// Is `rel` (relative to the root) excluded? A glob matches either the
    /// path relative to the persisted root or its full tree path, so both
    /// `cache/**` and `**/cache/**` work.
    pub fn excluded(&self, rel: &Path, ty: FileType) -> Option<Excluded> {
        let abs = self.root.join(rel);
        if self.internal.iter().any(|p| abs.starts_with(p)) {
            return Some(Excluded::Internal);
        }
        if ty != FileType::Dir {
            if let Some(name) = rel.file_name() {
                if is_sqlite_sidecar(name) {
                    return Some(Excluded::SqliteSidecar);
                }
            }
        }
        if rel.as_os_str().is_empty() {
            return None;
        }
        let full = Path::new(&self.tree).join(rel);
        let mut hits = self.globs.matches(rel);
        if hits.is_empty() {
            hits = self.globs.matches(&full);
        }
        hits.first()
            .map(|&i| Excluded::Glob(self.patterns[i].clone()))
    }

    /// Decide what to do with the entry at `rel`. `head` is the first bytes
    /// of a regular file, as many as [`head_len`] asks for (none when it
    /// asks for none); `binary_rule` as in [`offload`].
    pub fn decide(
        &self,
        rel: &Path,
        ty: FileType,
        size: u64,
        head: Option<&[u8]>,
        threshold: u64,
        binary_rule: bool,
    ) -> Decision {
        if let Some(why) = self.excluded(rel, ty) {
            return Decision::Excluded(why);
        }
        match ty {
            FileType::Dir => Decision::Dir,
            FileType::Symlink => Decision::Symlink,
            FileType::Other => Decision::Special,
            FileType::File => {
                let sqlite = head.is_some_and(is_sqlite_header);
                // A SQLite database is binary by definition (its header
                // holds a NUL), whatever the sniff saw.
                let binary = sqlite || head.is_some_and(looks_binary);
                if offload(size, threshold, binary, binary_rule) {
                    Decision::Offload { size }
                } else if sqlite {
                    Decision::Sqlite
                } else {
                    Decision::Blob
                }
            }
        }
    }
}

/// How many leading bytes deciding on a regular file of this size needs
/// (0: none). At or above the threshold nothing: it is offloaded anyway.
/// Below it, the SQLite header, or with `binary_rule` the whole sniff
/// window, in the same single read.
pub fn head_len(size: u64, threshold: u64, binary_rule: bool) -> usize {
    if size == 0 || (threshold > 0 && size >= threshold) {
        0
    } else if binary_rule {
        SNIFF_LEN
    } else if size >= SQLITE_HEADER.len() as u64 {
        SQLITE_HEADER.len()
    } else {
        0
    }
}

/// Check that no persisted path contains another.
pub fn check_disjoint(paths: &[PathBuf]) -> Result<(), PlanError> {
    for (i, a) in paths.iter().enumerate() {
        for b in &paths[i + 1..] {
            if a.starts_with(b) || b.starts_with(a) {
                return Err(PlanError::Overlap(a.clone(), b.clone()));
            }
        }
    }
    Ok(())
}

/// What identifies a file's content without reading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StatKey {
    /// Size in bytes.
    pub size: u64,
    /// Modification time, nanoseconds since the epoch.
    pub mtime_ns: i128,
    /// Inode number.
    pub ino: u64,
}

/// One cache entry: the stat of the file (and, for SQLite, of its `-wal`)
/// when its blob was written.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CacheEntry {
    /// Stat of the file.
    pub key: StatKey,
    /// Stat of the `-wal` file for a SQLite database (None: no WAL file).
    pub wal: Option<StatKey>,
    /// Blob id (hex).
    pub oid: String,
    /// The blob is of a SQLite backup-API copy, not of the file's raw bytes:
    /// a snapshot may reuse it, but it says nothing about the bytes on disk
    /// (restore hashes such a file rather than trust it).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub copy: bool,
    /// What the binary sniff said about the file when this entry was made
    /// (`None`: not sniffed). Lets an unchanged file below the threshold keep
    /// its offload decision without being read again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub binary: Option<bool>,
}

/// What a cached blob id holds for a file, as far as the object database
/// can tell without reading the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cached {
    /// The file's bytes (or, for a SQLite database, a backup-API copy).
    Raw,
    /// An LFS pointer to them.
    Pointer,
    /// Cannot tell, or it does not fit the file: read the file again.
    Unsure,
}

/// Classify a cached blob of `blob_size` bytes (`pointer_size`: the size an
/// LFS pointer in it names, if it parses as one) for a file of `file_size`
/// bytes. `copy`: the entry is of a SQLite backup-API copy, whose size may
/// differ from the live file's, but which never parses as a pointer (it
/// starts with the SQLite header). Otherwise sizes decide: a raw blob has the
/// file's size, a pointer names it. Both at once (a pointer text the size it
/// names, ~130 bytes) is ambiguous, and only reading the file can tell.
pub fn cached_kind(
    copy: bool,
    file_size: u64,
    blob_size: u64,
    pointer_size: Option<u64>,
) -> Cached {
    match pointer_size {
        _ if copy => match pointer_size {
            Some(_) => Cached::Pointer,
            None => Cached::Raw,
        },
        Some(p) if p == file_size && blob_size != file_size => Cached::Pointer,
        Some(p) if p == file_size => Cached::Unsure,
        _ if blob_size == file_size => Cached::Raw,
        _ => Cached::Unsure,
    }
}

/// May an unchanged file reuse its cached blob of kind `kind`? Only if that
/// is what [`offload`] would choose now. Below the threshold with
/// `binary_rule`, the sniff recorded in the entry (`binary`) answers; when
/// there is none, a pointer is kept (offloading is always accepted by the
/// remote, and the file was offloaded while being what it still is) and a
/// raw blob is not (it may be a binary file the remote refuses: read it).
pub fn reuse_cached(
    kind: Cached,
    size: u64,
    threshold: u64,
    binary_rule: bool,
    binary: Option<bool>,
) -> bool {
    let large = threshold > 0 && size >= threshold;
    match kind {
        Cached::Unsure => false,
        Cached::Pointer if large => true,
        Cached::Raw if large => false,
        Cached::Pointer => binary_rule && binary != Some(false),
        Cached::Raw => !binary_rule || binary == Some(false),
    }
}

/// A file whose mtime is this close to the scan may still be changing within
/// the filesystem's timestamp granularity ("racy" in git's words): its blob
/// is not cached.
pub const RACY_WINDOW_NS: i128 = 2_000_000_000;

/// The filesystem clock at the start of a scan: the device and mtime of a
/// probe file created then. A file on that device with an older mtime can
/// only change by a write stamped at least the probe's mtime, which changes
/// its stat: it may be cached at once, whatever the timestamp granularity,
/// instead of waiting out [`RACY_WINDOW_NS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScanClock {
    /// Device of the probe.
    pub dev: u64,
    /// The probe's mtime, nanoseconds since the epoch.
    pub mtime_ns: i128,
}

impl ScanClock {
    /// May a file on `dev` last modified at `mtime_ns` be cached at once?
    pub fn settled(&self, dev: u64, mtime_ns: i128) -> bool {
        dev == self.dev && mtime_ns < self.mtime_ns
    }

    /// Was a file born at `born_ns` certainly created before the probe? A
    /// stamp equal to the probe's is not: both may fall in one clock tick.
    pub fn predates(&self, born_ns: i128) -> bool {
        born_ns < self.mtime_ns
    }
}

/// Stat cache: absolute path → the blob it had at a given (size, mtime, inode).
#[derive(Debug, Default, Clone, serde::Serialize, serde::Deserialize)]
pub struct StatCache {
    entries: HashMap<PathBuf, CacheEntry>,
}

impl StatCache {
    /// The cached blob id for `path`, if its stat (and WAL stat) still match.
    pub fn lookup(&self, path: &Path, key: StatKey, wal: Option<StatKey>) -> Option<&str> {
        self.entries
            .get(path)
            .filter(|e| e.key == key && e.wal == wal)
            .map(|e| e.oid.as_str())
    }

    /// The whole entry for `path`, if its stat (and WAL stat) still match.
    pub fn entry(&self, path: &Path, key: StatKey, wal: Option<StatKey>) -> Option<&CacheEntry> {
        self.entries
            .get(path)
            .filter(|e| e.key == key && e.wal == wal)
    }

    /// Remember `oid` for `path`, unless the file is racy relative to
    /// `scan_start_ns` (then a later scan reads it again).
    pub fn store(&mut self, path: &Path, entry: CacheEntry, scan_start_ns: i128) {
        let racy = |k: &StatKey| k.mtime_ns + RACY_WINDOW_NS >= scan_start_ns;
        if racy(&entry.key) || entry.wal.as_ref().is_some_and(racy) {
            self.entries.remove(path);
        } else {
            self.entries.insert(path.to_path_buf(), entry);
        }
    }

    /// Remember `oid` for `path` with no racy check: the caller knows the
    /// filesystem clock had moved past the file's mtime when it saw the file
    /// (see [`ScanClock`]), so any later write changes the stat.
    pub fn store_settled(&mut self, path: &Path, entry: CacheEntry) {
        self.entries.insert(path.to_path_buf(), entry);
    }

    /// Forget `path` (its cached blob turned out not to be reproducible).
    pub fn forget(&mut self, path: &Path) {
        self.entries.remove(path);
    }

    /// Drop entries for paths not seen in the last scan.
    pub fn retain_seen(&mut self, seen: &std::collections::HashSet<PathBuf>) {
        self.entries.retain(|p, _| seen.contains(p));
    }

    /// Number of cached files.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Is the cache empty?
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// What restore concludes about a path on disk before writing it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnDisk {
    /// It already holds the wanted content: nothing to read or write.
    Same,
    /// It cannot hold it (missing, another type or size, or the stat cache
    /// says it holds another blob): write it.
    Differs,
    /// Only its bytes can tell: hash it.
    Hash,
}

/// Compare a path on disk with a wanted blob of `want_size` bytes, without
/// reading it. `local_size` is the size of a regular file there (`None`: no
/// regular file); `cached` is whether the stat cache, where it may be trusted
/// and still matches (size, mtime, inode), says the file holds the wanted
/// blob (`None`: no such entry).
pub fn compare_local(local_size: Option<u64>, want_size: u64, cached: Option<bool>) -> OnDisk {
    match (local_size, cached) {
        (None, _) => OnDisk::Differs,
        (Some(s), _) if s != want_size => OnDisk::Differs,
        (Some(_), Some(true)) => OnDisk::Same,
        (Some(_), Some(false)) => OnDisk::Differs,
        (Some(_), None) => OnDisk::Hash,
    }
}

/// Restore-side: the metadata line of one entry in `.stackctl/modes`:
/// `<octal mode> <tree path>`; unknown lines are ignored.
pub fn parse_modes(text: &str) -> HashMap<String, u32> {
    text.lines()
        .filter_map(|l| {
            let (m, p) = l.split_once(' ')?;
            Some((p.to_string(), u32::from_str_radix(m, 8).ok()?))
        })
        .collect()
}

/// Render `.stackctl/modes` from (tree path, mode) pairs, sorted.
pub fn render_modes(modes: &[(String, u32)]) -> String {
    let mut v: Vec<_> = modes.iter().collect();
    v.sort();
    v.iter()
        .map(|(p, m)| format!("{:04o} {p}\n", m & 0o7777))
        .collect()
}

/// Mode bits restore may apply: permissions only, never setuid/setgid/sticky
/// from a repository.
pub fn safe_mode(mode: u32) -> u32 {
    mode & 0o777
}

#[cfg(test)]
mod tests;
