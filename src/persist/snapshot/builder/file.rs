//! One non-directory entry of the walk: the stat cache, SQLite copies,
//! large files as LFS pointers, and what the snapshot records of each.

use std::io::Read;

// A part of the builder split off for size: it sees the builder's fields
// and imports as the builder itself does.
use super::*;

impl TreeBuilder<'_> {
    /// A non-directory entry; `None` when skipped.
    pub(super) fn file_node(
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
