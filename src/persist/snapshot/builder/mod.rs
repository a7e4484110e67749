//! [`TreeBuilder`]: walks the live files of the persisted paths into the
//! object database and builds the snapshot's tree.

use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::io;
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
mod file;

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
