//! Pending snapshots: a snapshot is never dropped because another instance
//! holds the write lease (issue 12 item 1). It is pushed to a ref of its
//! own, `refs/stackctl/pending/<instance>` (compare-and-swap, so only its
//! instance moves it), and whoever pushes to the branch next with the lease
//! folds every pending snapshot in first (per file, as [`super::merge`]
//! does: their changes kept, both versions kept on conflict), then deletes
//! the pending refs it folded. A restore takes pending snapshots newer than
//! the branch into account the same way.

use git2::{Oid, Repository};

use super::remote::RemoteHead;
use super::{PersistError, Persister};

/// Where pending snapshots live on the remote.
pub const PREFIX: &str = "refs/stackctl/pending/";

/// The pending ref of `instance` (its id made a valid ref name component).
pub fn ref_for(instance: &str) -> String {
    let mut name: String = instance
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '-'
            }
        })
        .collect();
    while name.contains("..") {
        name = name.replace("..", "-");
    }
    let name = name.trim_start_matches('.').trim_end_matches(".lock");
    let name = name.trim_end_matches('.');
    if name.is_empty() {
        format!("{PREFIX}unnamed")
    } else {
        format!("{PREFIX}{name}")
    }
}

/// The instance a pending ref belongs to.
pub fn instance_of(refname: &str) -> &str {
    refname.strip_prefix(PREFIX).unwrap_or(refname)
}

impl Persister {
    /// Push `local` to this instance's pending ref; returns the ref.
    pub(super) fn park(&self, repo: &Repository, local: Oid) -> Result<String, PersistError> {
        let dst = ref_for(&self.instance);
        let current = self.retry(|| self.remote.advertised(repo, &dst))?;
        if current == RemoteHead::At(local) {
            return Ok(dst);
        }
        self.retry(|| self.remote.push_to(repo, local, &dst, Some(current)))?;
        Ok(dst)
    }

    /// Fold the `pending` snapshots (ref, commit) into the local branch:
    /// each is merged file by file on top of it, their side's changes also
    /// written to the live files. Returns those folded.
    pub(super) fn fold(
        &self,
        repo: &Repository,
        pending: &[(String, Oid)],
    ) -> Result<Vec<(String, Oid)>, PersistError> {
        let mut folded = Vec::new();
        for (name, oid) in pending {
            let local = format!("refs/stackctl/fold/{}", instance_of(name));
            self.retry(|| self.remote.fetch_ref(repo, name, &local))?;
            let message = format!(
                "stackctl: fold in the snapshot {} that `{}` parked while another instance held the write lease\n",
                super::merge::tag(*oid),
                instance_of(name)
            );
            let branch = self.remote.branch_ref();
            let tip = repo.refname_to_id(&branch)?;
            let merged = self.merge_in(repo, tip, *oid, &message, Some(&branch))?;
            self.record_conflicts(&merged.conflicts);
            tracing::info!(pending = %name, snapshot = %oid, taken = merged.taken,
                conflicts = merged.conflicts.len(), "pending snapshot folded in");
            let _ = repo.find_reference(&local).and_then(|mut r| r.delete());
            folded.push((name.clone(), *oid));
        }
        Ok(folded)
    }

    /// `head` (the branch's head on the remote, about to be restored) with
    /// every pending snapshot newer than it folded in, oldest first, as
    /// new local snapshots on top of it; `None` when there is none. The
    /// first push with the lease publishes them and deletes the refs.
    pub(super) fn pending_onto(
        &self,
        repo: &Repository,
        head: Oid,
    ) -> Result<Option<Oid>, PersistError> {
        let head_time = repo.find_commit(head)?.time().seconds();
        let mut newer = Vec::new();
        for (name, oid, time) in self.fetch_pending(repo)? {
            if time >= head_time && !super::is_ancestor(repo, oid, head)? {
                newer.push((time, name, oid));
            }
        }
        newer.sort();
        let mut tip = head;
        for (_, name, oid) in &newer {
            let message = format!(
                "stackctl: restore with the snapshot {} that `{}` parked folded in\n",
                super::merge::tag(*oid),
                instance_of(name)
            );
            tip = self
                .merge_in(repo, tip, *oid, &message, None)?
                .head
                .unwrap_or(tip);
            tracing::info!(pending = %name, snapshot = %oid,
                "a pending snapshot newer than the branch is restored with it");
        }
        Ok((tip != head).then_some(tip))
    }

    /// Delete the pending refs `folded` (now in the pushed branch), each
    /// only if nobody parked a newer snapshot there meanwhile.
    pub(super) fn drop_folded(&self, repo: &Repository, folded: &[(String, Oid)]) {
        for (name, oid) in folded {
            if let Err(e) = self.retry(|| self.remote.delete_ref(repo, name, *oid)) {
                // Harmless: folding it again changes nothing.
                tracing::warn!(pending = %name, error = %e, "cannot delete a folded pending snapshot; the next push tries again");
            }
        }
    }

    /// Pending snapshots on the remote, newest first: (instance, commit, time).
    pub fn pending_snapshots(&self) -> Result<Vec<(String, Oid, i64)>, PersistError> {
        let repo = super::lock(&self.repo);
        let mut out: Vec<_> = self
            .fetch_pending(&repo)?
            .into_iter()
            .map(|(name, oid, time)| (instance_of(&name).to_string(), oid, time))
            .collect();
        out.sort_by_key(|(_, _, t)| std::cmp::Reverse(*t));
        Ok(out)
    }

    /// Fetch every pending snapshot: (ref, commit, commit time).
    pub(super) fn fetch_pending(
        &self,
        repo: &Repository,
    ) -> Result<Vec<(String, Oid, i64)>, PersistError> {
        let mut out = Vec::new();
        for (name, oid) in self.retry(|| self.remote.list_refs(repo, PREFIX))? {
            let local = format!("refs/stackctl/fold/{}", instance_of(&name));
            self.retry(|| self.remote.fetch_ref(repo, &name, &local))?;
            let time = repo.find_commit(oid)?.time().seconds();
            out.push((name, oid, time));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instance_ids_become_valid_ref_names() {
        for (id, want) in [
            ("box-12-0badf00d", "box-12-0badf00d"),
            ("a b/c", "a-b-c"),
            ("..x..", "-x-"),
            ("name.lock", "name"),
            ("", "unnamed"),
            ("日本", "--"),
        ] {
            let r = ref_for(id);
            assert_eq!(r, format!("{PREFIX}{want}"), "{id}");
            assert!(git2::Reference::is_valid_name(&r), "{r}");
            assert_eq!(instance_of(&r), want);
        }
    }
}
