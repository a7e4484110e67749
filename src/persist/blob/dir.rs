//! `dir:PATH`: blobs as files in a local or mounted directory,
//! content-addressed: `PATH/ab/abcdef…` (SHA-256 hex). A blob is written to
//! `PATH/tmp/` first, verified while it is copied, synced, then renamed into
//! place: a crash leaves only a temp file, never a partial blob under its name.
//!
//! Garbage collection: [`BlobStore::list`] gives every `PATH/ab/ab…` blob
//! with its mtime as its age (an upload of content already present refreshes
//! the mtime, so a blob in use again is young again); `PATH/tmp/` and any
//! file not named by its SHA-256 are never listed, so never deleted.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use super::{age_of, open_verified, BlobError, BlobStore, StoredBlob, CHUNK};
use crate::persist::pointer::{parse_sha256, Pointer};

/// A directory of blobs.
#[derive(Debug, Clone)]
pub struct DirStore {
    root: PathBuf,
}

impl DirStore {
    /// The store at `root` (created on first upload).
    pub fn new(root: PathBuf) -> Self {
        Self { root }
    }

    /// Where blob `p` lives.
    pub fn path_of(&self, p: &Pointer) -> PathBuf {
        let oid = p.oid();
        self.root.join(&oid[..2]).join(oid)
    }

    fn io<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> BlobError + 'a {
        move |source| BlobError::Io {
            what,
            path: path.to_path_buf(),
            source,
        }
    }
}

impl BlobStore for DirStore {
    fn describe(&self) -> String {
        format!("dir:{}", self.root.display())
    }

    fn has(&self, p: &Pointer) -> Result<bool, BlobError> {
        let path = self.path_of(p);
        match fs::metadata(&path) {
            Ok(m) => Ok(m.is_file() && m.len() == p.size),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(Self::io("read", &path)(e)),
        }
    }

    fn put(&self, p: &Pointer, src: &Path) -> Result<(), BlobError> {
        if self.has(p)? {
            // In use again: restart its grace period (best effort).
            let path = self.path_of(p);
            if let Ok(f) = fs::OpenOptions::new().write(true).open(&path) {
                let _ = f.set_modified(std::time::SystemTime::now());
            }
            return Ok(());
        }
        let dest = self.path_of(p);
        let tmp_dir = self.root.join("tmp");
        for d in [&tmp_dir, &self.root.join(&p.oid()[..2])] {
            fs::create_dir_all(d).map_err(Self::io("create", d))?;
        }
        let tmp = tmp_dir.join(format!(
            "{}.{}.{:08x}",
            p.oid(),
            std::process::id(),
            rand::random::<u32>()
        ));
        let (mut reader, changed) = open_verified(src, p)?;
        let mut copy = || -> io::Result<()> {
            let f = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o644)
                .open(&tmp)?;
            let mut w = io::BufWriter::with_capacity(CHUNK, f);
            io::copy(&mut reader, &mut w)?;
            w.flush()?;
            let f = w.into_inner().map_err(|e| e.into_error())?;
            f.sync_all()?;
            fs::rename(&tmp, &dest)?;
            // The rename is durable once the directory is synced.
            if let Some(parent) = dest.parent() {
                fs::File::open(parent)?.sync_all()?;
            }
            Ok(())
        };
        match copy() {
            Ok(()) => Ok(()),
            Err(e) => {
                let _ = fs::remove_file(&tmp);
                if changed.load(Ordering::SeqCst) {
                    Err(BlobError::Changed {
                        path: src.to_path_buf(),
                    })
                } else {
                    Err(Self::io("store blob", &dest)(e))
                }
            }
        }
    }

    fn get(&self, p: &Pointer, out: &mut dyn Write) -> Result<(), BlobError> {
        let path = self.path_of(p);
        let mut f = match fs::File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(BlobError::Missing(*p)),
            Err(e) => return Err(Self::io("read", &path)(e)),
        };
        io::copy(&mut f, out).map_err(Self::io("read", &path))?;
        Ok(())
    }

    fn list(&self) -> Result<Option<Vec<StoredBlob>>, BlobError> {
        let mut out = Vec::new();
        let top = match fs::read_dir(&self.root) {
            Ok(d) => d,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Some(out)),
            Err(e) => return Err(Self::io("list", &self.root)(e)),
        };
        for sub in top {
            let sub = sub.map_err(Self::io("list", &self.root))?;
            let prefix = sub.file_name().to_string_lossy().into_owned();
            if prefix.len() != 2 || !sub.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            let dir = sub.path();
            for e in fs::read_dir(&dir).map_err(Self::io("list", &dir))? {
                let e = e.map_err(Self::io("list", &dir))?;
                let name = e.file_name().to_string_lossy().into_owned();
                let Some(sha256) = parse_sha256(&name).filter(|_| name.starts_with(&prefix)) else {
                    continue;
                };
                let m = e.metadata().map_err(Self::io("read", &e.path()))?;
                if !m.is_file() {
                    continue;
                }
                out.push(StoredBlob {
                    sha256,
                    size: m.len(),
                    age: m.modified().map(age_of).unwrap_or_default(),
                });
            }
        }
        out.sort_by_key(|b| b.sha256);
        Ok(Some(out))
    }

    fn delete(&self, sha256: &[u8; 32]) -> Result<(), BlobError> {
        let oid = hex::encode(sha256);
        let path = self.root.join(&oid[..2]).join(&oid);
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Self::io("delete", &path)(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::persist::blob::hash_file;

    #[test]
    fn put_then_get_round_trips_and_a_changed_file_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let store = DirStore::new(d.path().join("blobs"));
        let src = d.path().join("big");
        fs::write(&src, vec![9u8; 3 << 20]).unwrap();
        let p = hash_file(&src).unwrap();
        assert!(!store.has(&p).unwrap());
        store.put(&p, &src).unwrap();
        assert!(store.has(&p).unwrap());
        let mut out = Vec::new();
        store.get(&p, &mut out).unwrap();
        assert_eq!(out.len(), 3 << 20);
        // Nothing left in tmp.
        assert_eq!(fs::read_dir(d.path().join("blobs/tmp")).unwrap().count(), 0);

        fs::write(&src, vec![8u8; 3 << 20]).unwrap();
        let other = Pointer {
            sha256: [1; 32],
            size: 3 << 20,
        };
        let e = store.put(&other, &src).unwrap_err();
        assert!(matches!(e, BlobError::Changed { .. }), "{e}");
        assert!(!store.has(&other).unwrap());
        assert_eq!(fs::read_dir(d.path().join("blobs/tmp")).unwrap().count(), 0);
    }

    #[test]
    fn list_gives_only_blobs_and_delete_removes_one() {
        let d = tempfile::tempdir().unwrap();
        let store = DirStore::new(d.path().join("blobs"));
        assert_eq!(store.list().unwrap(), Some(vec![]));
        let src = d.path().join("big");
        fs::write(&src, b"content").unwrap();
        let p = hash_file(&src).unwrap();
        store.put(&p, &src).unwrap();
        // Not blobs: a temp file, a stray file.
        fs::write(d.path().join("blobs/tmp/x"), b"t").unwrap();
        fs::write(
            d.path().join("blobs").join(&p.oid()[..2]).join("junk"),
            b"j",
        )
        .unwrap();
        let listed = store.list().unwrap().unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!((listed[0].sha256, listed[0].size), (p.sha256, p.size));
        assert!(listed[0].age < std::time::Duration::from_secs(60));
        store.delete(&p.sha256).unwrap();
        assert!(!store.has(&p).unwrap());
        store.delete(&p.sha256).unwrap();
        assert_eq!(store.list().unwrap(), Some(vec![]));
    }
}
