//! Push: local snapshots to the remote under the write lease, merged onto a
//! remote head moved by someone else, parked while another instance holds
//! the lease; then the history squash and blob garbage collection it allows.

use git2::{Oid, Repository};

use super::super::git::{is_ancestor, ref_oid};
use super::super::remote::{RemoteError, RemoteHead};
use super::super::{gc, history, pending, PersistError, Progress, RestoreState, SnapshotReport};
use super::{lock, Persister};

/// What a push did.
#[derive(Debug, Clone, Default)]
struct Pushed {
    /// The commit the remote branch now points at.
    pushed: Option<Oid>,
    /// The remote had moved: our snapshots were merged onto it.
    reparented: bool,
    /// The pending ref the snapshot went to (another instance holds the lease).
    parked: Option<String>,
}

impl Persister {
    /// Snapshot, then push every local snapshot not yet on the remote.
    /// A local snapshot that could not be pushed stays queued: the next
    /// call (or [`Persister::push`]) pushes it, in order.
    pub fn snapshot_and_push(&self) -> Result<SnapshotReport, PersistError> {
        self.snapshot_and_push_with_progress(&|_| {})
    }

    /// [`Persister::snapshot_and_push`], telling `progress` how the upload
    /// of large files goes.
    pub fn snapshot_and_push_with_progress(
        &self,
        progress: &dyn Fn(Progress),
    ) -> Result<SnapshotReport, PersistError> {
        if self.restore_state() == RestoreState::Pending {
            return Err(PersistError::NotRestored);
        }
        let repo = lock(&self.repo);
        let result = self.snapshot_locked(&repo, progress).and_then(|mut report| {
            let Pushed {
                pushed,
                reparented,
                parked,
            } = self.push_locked(&repo)?;
            report.pushed = pushed;
            report.reparented = reparented;
            report.parked = parked;
            if pushed.is_some() {
                // A failed squash loses nothing: the snapshot is pushed, and
                // the next push tries again.
                match self.squash_locked(&repo) {
                    Ok(Some((head, n))) => {
                        // The newest snapshot was replayed: it has a new id.
                        report.squashed = n;
                        report.pushed = Some(head);
                        report.commit = report.commit.map(|_| head);
                        // The squash is what leaves blobs unreferenced.
                        match self.collect_blobs(&repo, head) {
                            Ok(n) => report.blobs_collected = n,
                            Err(e) => tracing::warn!(error = %e, "blob garbage collection failed; will retry after the next squash"),
                        }
                    }
                    Ok(None) => {}
                    Err(e) => tracing::warn!(error = %e, "persist history squash failed; will retry after the next push"),
                }
            }
            Ok(report)
        });
        self.record(&repo, result.as_ref().err());
        result
    }

    /// Push local snapshots (queued while the remote was down, in order).
    pub fn push(&self) -> Result<Option<Oid>, PersistError> {
        if self.restore_state() == RestoreState::Pending {
            return Err(PersistError::NotRestored);
        }
        let repo = lock(&self.repo);
        let result = self.push_locked(&repo).map(|p| p.pushed);
        self.record(&repo, result.as_ref().err());
        result
    }

    fn push_locked(&self, repo: &Repository) -> Result<Pushed, PersistError> {
        const ROUNDS: u32 = 3;
        let mut out = Pushed::default();
        for _ in 0..ROUNDS {
            let Some(local) = ref_oid(repo, &self.remote.branch_ref())? else {
                return Ok(out);
            };
            // One listing: the branch head and the pending snapshots.
            let refs = self.retry(|| self.remote.list_refs(repo, "refs/"))?;
            let branch = self.remote.branch_ref();
            let remote_head = refs
                .iter()
                .find(|(n, _)| *n == branch)
                .map_or(RemoteHead::Missing, |(_, o)| RemoteHead::At(*o));
            let pending: Vec<(String, Oid)> = refs
                .into_iter()
                .filter(|(n, _)| n.starts_with(pending::PREFIX))
                .collect();
            if let RemoteHead::At(h) = remote_head {
                if h == local && pending.is_empty() {
                    repo.reference(&self.remote.tracking_ref(), h, true, "stackctl push")?;
                    return Ok(out);
                }
                if !is_ancestor(repo, h, local)? {
                    // Someone else moved the branch: put our snapshots on top
                    // of theirs. Our snapshots are those after the last remote
                    // head we knew (read before the fetch moves it): in a
                    // shallow workdir, `h`'s history may not reach them.
                    let known = ref_oid(repo, &self.remote.tracking_ref())?;
                    self.retry(|| self.remote.fetch(repo, self.fetch_depth()))?;
                    // Never replay a full tree over their changes: merge per file.
                    let merged = self.merge_onto(repo, known, h)?;
                    self.record_conflicts(&merged.conflicts);
                    out.reparented = true;
                    tracing::info!(remote_head = %h, taken = merged.taken, conflicts = merged.conflicts.len(),
                        "persist remote moved: snapshots merged onto it file by file");
                    continue;
                }
            }
            let local = ref_oid(repo, &self.remote.branch_ref())?.unwrap_or(local);
            match self.ensure_lease(repo, false) {
                Ok(()) => {}
                // Nothing of ours to save: the holder folds the pending ones.
                Err(PersistError::LeaseHeld { .. }) if remote_head == RemoteHead::At(local) => {
                    return Ok(out)
                }
                Err(PersistError::LeaseHeld { holder, expires_in }) => {
                    // Never drop a snapshot because of the lease: park it
                    // where the holder folds it in.
                    let parked = self.park(repo, local)?;
                    tracing::warn!(holder = %holder, expires_in_s = expires_in, pending = %parked, commit = %local,
                        "another stackctl holds the write lease: snapshot parked for it to fold in");
                    out.parked = Some(parked);
                    return Ok(out);
                }
                Err(e) => return Err(e),
            }
            let folded = self.fold(repo, &pending)?;
            let local = ref_oid(repo, &self.remote.branch_ref())?.unwrap_or(local);
            if remote_head == RemoteHead::At(local) {
                // Every pending snapshot was already in the branch.
                self.drop_folded(repo, &folded);
                repo.reference(&self.remote.tracking_ref(), local, true, "stackctl push")?;
                return Ok(out);
            }
            match self.retry(|| self.remote.push(repo, local, None)) {
                Ok(()) => {
                    tracing::info!(commit = %local, "persist snapshot pushed");
                    self.drop_folded(repo, &folded);
                    out.pushed = Some(local);
                    return Ok(out);
                }
                // Lost a race: look again.
                Err(RemoteError::Rejected { .. }) if self.remote_moved(repo, local) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(PersistError::Contended(ROUNDS))
    }

    /// Squash the branch to `keep` snapshots when it grew past the slack,
    /// and push the rewrite with a lease on the head it replaces. Returns how
    /// many snapshots were dropped, and the new head.
    fn squash_locked(&self, repo: &Repository) -> Result<Option<(Oid, usize)>, PersistError> {
        let keep = self.cfg.keep as usize;
        let Some(head) = ref_oid(repo, &self.remote.branch_ref())? else {
            return Ok(None);
        };
        let limit = keep + history::slack(keep) + 1;
        if !history::squash_due(history::first_parent_chain(repo, head, limit)?.len(), keep) {
            return Ok(None);
        }
        // A shallow workdir holds at least the `keep` newest snapshots (see
        // `fetch_depth`): enough to rewrite, the dropped ones are not needed.
        let Some((new_head, dropped)) = history::squash(repo, head, keep)? else {
            return Ok(None);
        };
        let lease = RemoteHead::At(head);
        self.retry(|| self.remote.push(repo, new_head, Some(lease)))?;
        repo.reference_matching(
            &self.remote.branch_ref(),
            new_head,
            true,
            head,
            "stackctl squash",
        )?;
        tracing::info!(dropped, keep, head = %new_head, "persist history squashed");
        Ok(Some((new_head, dropped)))
    }

    /// Delete the blobs no snapshot in the branch from `head` (just
    /// squashed: it ends at a root) nor a parked one refers to, once older
    /// than the grace period. Returns how many were deleted. A store that
    /// cannot list blobs (`lfs`) is left alone.
    fn collect_blobs(&self, repo: &Repository, head: Oid) -> Result<usize, PersistError> {
        let Some(store) = &self.blobs else {
            return Ok(0);
        };
        let blob_err = |source| PersistError::BlobStore(source);
        let Some(stored) = store.list().map_err(blob_err)? else {
            tracing::debug!(store = %store.describe(), "blob store cannot list blobs: no garbage collection");
            return Ok(0);
        };
        let Some(mut referenced) = gc::referenced(repo, head)? else {
            tracing::warn!("history does not reach its root here: blob garbage collection skipped");
            return Ok(0);
        };
        // Snapshots parked since our fold are not in the branch yet; the
        // next fold takes them in with the blobs they point at.
        for (_, parked, _) in self.fetch_pending(repo)? {
            gc::add_snapshot(repo, parked, &mut referenced)?;
        }
        let doomed = gc::decide(&referenced, &stored, self.gc_grace);
        let mut deleted = 0;
        let mut first_err = None;
        for b in &doomed {
            // Forget it first: a later snapshot of the same content uploads it again.
            lock(&self.stored).retain(|p| p.sha256 != b.sha256);
            match store.delete(&b.sha256) {
                Ok(()) => {
                    deleted += 1;
                    tracing::info!(oid = %hex::encode(b.sha256), size = b.size, age_s = b.age.as_secs(),
                        store = %store.describe(), "unreferenced blob deleted");
                }
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        match first_err {
            Some(e) => Err(blob_err(e)),
            None => Ok(deleted),
        }
    }

    fn remote_moved(&self, repo: &Repository, local: Oid) -> bool {
        matches!(self.remote.head(repo), Ok(RemoteHead::At(h)) if !is_ancestor(repo, h, local).unwrap_or(false))
    }
}
