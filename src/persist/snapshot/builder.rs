//! [`TreeBuilder`]: walks the live files of the persisted paths into the
//! object database and builds the snapshot's tree.

use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, UNIX_EPOCH};

use git2::{Oid, Repository};

use super::super::blob;
use super::super::deadline;
use super::super::plan::{
    self, CacheEntry, Decision, FileType, PathRules, ScanClock, StatCache, KEEP_MARKER, META_DIR,
};
use super::super::pointer::{self, Pointer};
use super::sqlite::{remove_db_files, sqlite_copy};
use super::{
    file_type, now_ns, stat_key, wal_key, Built, LargeFile, SnapshotError, LARGE_COPY_PREFIX,
};

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
    /// Visible to the tests, which move the scan start past the racy window.
    pub(super) scan_start_ns: i128,
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
