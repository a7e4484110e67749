//! Backup: a snapshot of the live files into the workdir repository (large
//! files stored in the blob store first), and the write lease held before
//! pushing.

use std::fs;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use git2::{Oid, Repository};

use super::super::blob::{self, BlobError, BlobStore};
use super::super::git::ref_oid;
use super::super::plan::StatCache;
use super::super::progress::{self, Transfer};
use super::super::remote::{RemoteError, RemoteHead};
use super::super::{
    holder, lease, snapshot, PersistError, Progress, RestoreState, SnapshotReport, Stage,
};
use super::{lock, Persister};

impl Persister {
    /// Take a snapshot into the workdir repository (no push). `None` commit
    /// when nothing changed.
    pub fn snapshot(&self) -> Result<SnapshotReport, PersistError> {
        if self.restore_state() == RestoreState::Pending {
            return Err(PersistError::NotRestored);
        }
        let repo = lock(&self.repo);
        let result = self.snapshot_locked(&repo, &|_| {});
        self.record(&repo, result.as_ref().err());
        result
    }

    pub(super) fn snapshot_locked(
        &self,
        repo: &Repository,
        progress: &dyn Fn(Progress),
    ) -> Result<SnapshotReport, PersistError> {
        let mut cache = lock(&self.cache);
        let tmp = self.cfg.workdir.join("tmp");
        let previous = ref_oid(repo, &self.remote.branch_ref())?
            .and_then(|c| repo.find_commit(c).ok())
            .map(|c| c.tree_id());
        let built = self
            .tree_builder(repo, &tmp, &mut cache)
            .point_in_time(previous)
            .build(&self.rules)?;
        if built.deferred > 0 {
            tracing::debug!(
                entries = built.deferred,
                "entries created during the scan are left to the next snapshot"
            );
        }
        for (path, size) in &built.too_large {
            tracing::warn!(path = %path.display(), size, threshold = self.cfg.large_files.threshold,
                "file at or above `large_files.threshold` skipped: it is not backed up");
        }
        self.save_cache(&cache);
        drop(cache);
        // Every blob the new tree refers to is stored and verified before
        // the commit exists: a commit that could be pushed never refers to
        // a missing blob.
        let uploaded = self.store_blobs(&built.large, progress);
        snapshot::remove_copies(&built);
        let uploaded = uploaded?;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        let tree = built
            .tree
            .ok_or_else(|| PersistError::Git("tree missing".into()))?;
        let commit = snapshot::commit_if_changed(
            repo,
            &self.remote.branch_ref(),
            tree,
            &snapshot::message(now, &built),
        )?;
        self.saw_large(
            built.large.len() as u64,
            built.large.iter().map(|l| l.pointer.size).sum(),
        );
        Ok(SnapshotReport {
            commit,
            pushed: None,
            reparented: false,
            parked: None,
            squashed: 0,
            files: built.files,
            bytes: built.bytes,
            read: built.read,
            sqlite: built.sqlite,
            too_large: built.too_large,
            large: built.large.len() as u64,
            uploaded,
            blobs_collected: 0,
        })
    }

    pub(super) fn tree_builder<'a>(
        &self,
        repo: &'a Repository,
        tmp: &'a Path,
        cache: &'a mut StatCache,
    ) -> snapshot::TreeBuilder<'a> {
        let b = snapshot::TreeBuilder::new(repo, self.cfg.large_files.threshold, tmp, cache);
        match &self.blobs {
            Some(store) => b
                .with_pointers(store.lfs_url())
                .with_offload_binary(self.offload_binary),
            None => b,
        }
    }

    /// Make sure the store holds every blob in `large`; returns how many
    /// were uploaded. `progress` hears the bytes uploaded so far.
    fn store_blobs(
        &self,
        large: &[snapshot::LargeFile],
        progress: &dyn Fn(Progress),
    ) -> Result<u64, PersistError> {
        let Some(store) = &self.blobs else {
            return Ok(0);
        };
        // What we remember as stored holds only while we hold the write
        // lease: whoever holds it may collect blobs (after a squash), and a
        // snapshot parked with a pointer to one of them would lose the file.
        let remembered = self.holds_lease();
        let mut missing = Vec::new();
        for f in large {
            if remembered && lock(&self.stored).contains(&f.pointer) {
                continue;
            }
            let err = |source| PersistError::Blob {
                path: f.path.clone(),
                source,
            };
            // Two files with the same content: one upload.
            if missing
                .iter()
                .any(|m: &&snapshot::LargeFile| m.pointer == f.pointer)
            {
                continue;
            }
            if store.has(&f.pointer).map_err(err)? {
                lock(&self.stored).insert(f.pointer);
            } else {
                missing.push(f);
            }
        }
        let total: u64 = missing.iter().map(|f| f.pointer.size).sum();
        if missing.is_empty() {
            return Ok(0);
        }
        let transfer = Transfer::new("backup", total, missing.len());
        progress::watch(&transfer, &*self.sink, || {
            blob::counting(transfer.counter(), || {
                self.upload(store.as_ref(), &missing, total, &transfer, progress)
            })
        })
    }

    /// Upload `missing` (`total` bytes), telling `transfer` and `progress`.
    fn upload(
        &self,
        store: &dyn BlobStore,
        missing: &[&snapshot::LargeFile],
        total: u64,
        transfer: &Transfer,
        progress: &dyn Fn(Progress),
    ) -> Result<u64, PersistError> {
        let mut uploaded = 0;
        let mut sent = 0;
        for &f in missing {
            let err = |source| PersistError::Blob {
                path: f.path.clone(),
                source,
            };
            progress(Progress {
                stage: Stage::Uploading,
                done: sent,
                total,
            });
            let started = std::time::Instant::now();
            transfer.begin_file(&f.path, f.pointer.size);
            let result = match (&f.copy, f.sqlite) {
                (Some(copy), _) => store.put(&f.pointer, copy),
                // A database served by the stat cache: copy it now (never
                // upload the live file); `put` checks the copy still hashes
                // to the pointer.
                (None, true) => self.put_sqlite_copy(store, f),
                (None, false) => store.put(&f.pointer, &f.path),
            };
            transfer.end_file();
            if let Err(BlobError::Changed { .. }) = &result {
                // The stat said unchanged but the bytes are not the pointer's:
                // make the next snapshot read the file again.
                lock(&self.cache).forget(&f.path);
            }
            result.map_err(err)?;
            uploaded += 1;
            sent += f.pointer.size;
            tracing::info!(path = %f.path.display(), size = f.pointer.size, oid = %f.pointer.oid(),
                store = %store.describe(), secs = started.elapsed().as_secs_f64(), "large file uploaded");
            lock(&self.stored).insert(f.pointer);
        }
        if total > 0 {
            progress(Progress {
                stage: Stage::Uploading,
                done: sent,
                total,
            });
        }
        Ok(uploaded)
    }

    /// Upload a fresh backup-API copy of the large database `f`.
    fn put_sqlite_copy(
        &self,
        store: &dyn BlobStore,
        f: &snapshot::LargeFile,
    ) -> Result<(), BlobError> {
        let tmp = self.cfg.workdir.join("tmp");
        let copy = tmp.join(format!("large-sqlite-{}-upload.db", std::process::id()));
        let io = |source| BlobError::Io {
            what: "copy",
            path: f.path.clone(),
            source,
        };
        fs::create_dir_all(&tmp).map_err(io)?;
        let result = snapshot::sqlite_copy(&f.path, &copy, Duration::from_secs(10))
            .map_err(|e| io(std::io::Error::other(e.to_string())))
            .and_then(|()| store.put(&f.pointer, &copy));
        let _ = fs::remove_file(&copy);
        result
    }

    /// Whether no other instance can hold the write lease now: there is
    /// none (`lease_ttl: 0`), or ours was renewed less than half a TTL ago
    /// (a takeover waits for it to expire; the half is a margin for the
    /// other host's clock, by which it judges our heartbeat's age).
    fn holds_lease(&self) -> bool {
        let ttl = self.tuning.lease_ttl;
        ttl.is_zero() || lock(&self.lease).is_some_and(|(_, at)| at.elapsed() < ttl / 2)
    }

    /// Hold the write lease before pushing: acquire, renew, or take over a
    /// stale one; refuse while another instance holds it.
    pub(super) fn ensure_lease(&self, repo: &Repository, force: bool) -> Result<(), PersistError> {
        let ttl = self.tuning.lease_ttl;
        if ttl.is_zero() {
            return Ok(());
        }
        // Renewed recently: nobody may take it over before `ttl`.
        if !force && lock(&self.lease).is_some_and(|(_, at)| at.elapsed() < ttl / 4) {
            return Ok(());
        }
        let seen = "refs/stackctl/remote-lease";
        let current = self.retry(|| self.remote.fetch_ref(repo, lease::LEASE_REF, seen))?;
        let info = match current {
            RemoteHead::Missing => None,
            RemoteHead::At(o) => repo
                .find_commit(o)
                .ok()
                .and_then(|c| lease::parse(&String::from_utf8_lossy(c.message_bytes()))),
        };
        self.saw_lease(info.as_ref());
        let now = unix_now();
        let gone = info
            .as_ref()
            .and_then(|i| i.holder.as_ref())
            .is_some_and(holder::gone);
        let decision = lease::decide(info.as_ref(), &self.instance, now, ttl, gone);
        if !matches!(
            decision,
            lease::Decision::Renew | lease::Decision::Wait { .. }
        ) {
            // While we did not hold the lease another instance may have
            // garbage-collected blobs we remember as stored: forget them, so
            // the next snapshot checks the store again instead of committing
            // a pointer to a deleted blob. (While we do not hold it,
            // `store_blobs` asks the store anyway: see `holds_lease`.)
            lock(&self.stored).clear();
        }
        match decision {
            lease::Decision::Wait { holder, expires_in } => {
                return Err(PersistError::LeaseHeld { holder, expires_in })
            }
            lease::Decision::TakeOver { from, age } => {
                tracing::warn!(previous = %from, silent_for_s = age, instance = %self.instance,
                    "taking over the write lease of a stackctl that stopped renewing it");
            }
            lease::Decision::Abandoned { from, pid } => {
                tracing::warn!(previous = %from, pid, instance = %self.instance,
                    "taking over the write lease of a stackctl whose process is gone from this host");
            }
            lease::Decision::Acquire => {
                tracing::info!(instance = %self.instance, "write lease acquired");
            }
            lease::Decision::Renew => {}
        }
        let info = lease::LeaseInfo {
            instance: self.instance.clone(),
            heartbeat: now,
            holder: Some(holder::me()),
        };
        let commit = lease_commit(repo, &info)?;
        match self.retry(|| {
            self.remote
                .push_to(repo, commit, lease::LEASE_REF, Some(current))
        }) {
            Ok(()) => {
                *lock(&self.lease) = Some((commit, std::time::Instant::now()));
                self.saw_lease(Some(&info));
                Ok(())
            }
            // Someone else changed it between our read and our push.
            Err(RemoteError::Rejected { .. }) => Err(PersistError::LeaseHeld {
                holder: "another instance".into(),
                expires_in: i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX),
            }),
            Err(e) => Err(e.into()),
        }
    }

    /// Renew the write lease now (the idle loop calls this so an instance
    /// with nothing to push keeps it).
    pub fn heartbeat(&self) -> Result<(), PersistError> {
        let repo = lock(&self.repo);
        self.ensure_lease(&repo, true)
    }

    /// Give the write lease up (after the final push at shutdown), so the
    /// next instance need not wait for it to expire.
    pub fn release_lease(&self) -> Result<(), PersistError> {
        let Some((ours, _)) = *lock(&self.lease) else {
            return Ok(());
        };
        let repo = lock(&self.repo);
        let info = lease::LeaseInfo {
            instance: String::new(),
            heartbeat: unix_now(),
            holder: None,
        };
        let commit = lease_commit(&repo, &info)?;
        self.retry(|| {
            self.remote
                .push_to(&repo, commit, lease::LEASE_REF, Some(RemoteHead::At(ours)))
        })?;
        *lock(&self.lease) = None;
        self.saw_lease(Some(&info));
        tracing::info!(instance = %self.instance, "write lease released");
        Ok(())
    }
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// An orphan commit with an empty tree whose message is the lease.
fn lease_commit(repo: &Repository, info: &lease::LeaseInfo) -> Result<Oid, git2::Error> {
    let tree = repo.treebuilder(None)?.write()?;
    let tree = repo.find_tree(tree)?;
    let sig = snapshot::signature()?;
    repo.commit(None, &sig, &sig, &lease::render(info), &tree, &[])
}
