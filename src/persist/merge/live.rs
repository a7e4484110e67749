//! The persister's side of a merge: put our snapshots on a remote head that
//! moved under us, take their side's changes into the live files, and
//! record the conflict copies for `status`.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use git2::{Oid, Repository, Tree};

use super::super::plan::KEEP_MARKER;
use super::super::PersistError;
use super::tree::files;
use super::tree::{live_holds, merged_tree, their_files};
use super::{decide, demote, tag, Action, Files};

/// What merging the remote's head into our snapshots did.
#[derive(Debug, Clone, Default)]
pub struct Merged {
    /// The new local head (our snapshots, merged, on top of theirs).
    pub head: Option<Oid>,
    /// Conflict copies made (live paths).
    pub conflicts: Vec<PathBuf>,
    /// Live files written or removed with their side's version.
    pub taken: usize,
}

impl super::Persister {
    /// The live path of `tree_path`, when it is in one of our persisted paths.
    fn live_path(&self, tree_path: &str) -> Option<PathBuf> {
        self.rules.iter().find_map(|r| {
            if tree_path == r.tree {
                Some(r.root.clone())
            } else {
                let rel = tree_path.strip_prefix(&format!("{}/", r.tree))?;
                Some(r.root.join(OsStr::from_bytes(rel.as_bytes())))
            }
        })
    }

    /// Put our local snapshots (from the last remote head we knew, `known`)
    /// on top of `theirs`, the remote head that moved under us, merging
    /// each tree file by file; apply their side's changes to the live
    /// files. Updates the local branch.
    pub(in crate::persist) fn merge_onto(
        &self,
        repo: &Repository,
        known: Option<Oid>,
        theirs: Oid,
    ) -> Result<Merged, PersistError> {
        let branch = self.remote.branch_ref();
        let tip = repo.refname_to_id(&branch)?;
        // The snapshot both sides grew from: the merge base when history
        // reaches it, else the remote head we last knew (our snapshots grew
        // from it); without either, every difference is a conflict.
        let base = repo
            .merge_base(tip, theirs)
            .ok()
            .or_else(|| known.filter(|k| super::is_ancestor(repo, *k, tip).unwrap_or(false)));
        let base_files = match base {
            Some(b) => files(&repo.find_commit(b)?.tree()?),
            None => Files::new(),
        };
        let their_commit = repo.find_commit(theirs)?;
        let their_files = their_files(repo, &their_commit, &base_files)?;
        let tag = tag(theirs);

        let mut walk = repo.revwalk()?;
        walk.push(tip)?;
        for hide in base.into_iter().chain([theirs]) {
            walk.hide(hide)?;
        }
        walk.set_sorting(git2::Sort::TOPOLOGICAL | git2::Sort::REVERSE)?;
        let ours: Vec<Oid> = walk.collect::<Result<_, _>>()?;
        let mut parent = their_commit;
        let mut out = Merged::default();
        let mut live = Vec::new();
        for (i, oid) in ours.iter().enumerate() {
            let c = repo.find_commit(*oid)?;
            let our_files = files(&c.tree()?);
            let actions = if i + 1 == ours.len() {
                // The tip must agree with the live files: the next snapshot
                // is taken from them.
                live = self.live_actions(repo, &base_files, &our_files, &their_files, &tag, None);
                live.clone()
            } else {
                decide(&base_files, &our_files, &their_files, &tag, None)
            };
            let tree = repo.find_tree(merged_tree(repo, &our_files, &their_files, &actions)?)?;
            let message = String::from_utf8_lossy(c.message_bytes()).into_owned();
            let committer = super::snapshot::signature()?;
            let new = repo.commit(None, &c.author(), &committer, &message, &tree, &[&parent])?;
            parent = repo.find_commit(new)?;
        }
        repo.reference_matching(&branch, parent.id(), true, tip, "stackctl merge")?;
        out.head = Some(parent.id());
        let merged_tree = parent.tree()?;
        self.apply_live(repo, &merged_tree, &live, &mut out)?;
        Ok(out)
    }

    /// Fold the snapshot `theirs` (not on our branch: a pending one) into
    /// `tip` as one new snapshot on top of it, merged per file. With
    /// `branch`, `tip` is that local branch's head: the branch moves to the
    /// new snapshot and their side's changes are written to the live files.
    /// Without, only the commit is made (a restore writes the files itself).
    pub(in crate::persist) fn merge_in(
        &self,
        repo: &Repository,
        tip: Oid,
        theirs: Oid,
        message: &str,
        branch: Option<&str>,
    ) -> Result<Merged, PersistError> {
        let mut out = Merged {
            head: Some(tip),
            ..Merged::default()
        };
        if super::is_ancestor(repo, theirs, tip)? {
            // Already in (our own parked snapshot, or folded before).
            return Ok(out);
        }
        let base_files = match repo.merge_base(tip, theirs) {
            Ok(b) => files(&repo.find_commit(b)?.tree()?),
            Err(_) => Files::new(),
        };
        let tip_commit = repo.find_commit(tip)?;
        let our_files = files(&tip_commit.tree()?);
        let their_files = their_files(repo, &repo.find_commit(theirs)?, &base_files)?;
        let tag = tag(theirs);
        // Newest wins the name: a pending snapshot taken after our tip.
        let ours_tag = super::tag(tip);
        let newer = (repo.find_commit(theirs)?.time().seconds() > tip_commit.time().seconds())
            .then_some(ours_tag.as_str());
        let actions = match branch {
            Some(_) => self.live_actions(repo, &base_files, &our_files, &their_files, &tag, newer),
            None => decide(&base_files, &our_files, &their_files, &tag, newer),
        };
        let tree = merged_tree(repo, &our_files, &their_files, &actions)?;
        if tree == tip_commit.tree_id() {
            return Ok(out);
        }
        let tree = repo.find_tree(tree)?;
        let sig = super::snapshot::signature()?;
        let new = repo.commit(None, &sig, &sig, message, &tree, &[&tip_commit])?;
        out.head = Some(new);
        if let Some(branch) = branch {
            repo.reference_matching(branch, new, true, tip, "stackctl fold")?;
            self.apply_live(repo, &tree, &actions, &mut out)?;
        }
        Ok(out)
    }

    /// [`decide`] for the tip, each action as the live file allows it.
    fn live_actions(
        &self,
        repo: &Repository,
        base: &Files,
        ours: &Files,
        theirs: &Files,
        tag: &str,
        newer: Option<&str>,
    ) -> Vec<Action> {
        decide(base, ours, theirs, tag, newer)
            .into_iter()
            .filter_map(|a| self.check_live(repo, ours, a, tag))
            .collect()
    }

    /// `action` as the live file allows it (see [`demote`]).
    fn check_live(
        &self,
        repo: &Repository,
        ours: &Files,
        action: Action,
        tag: &str,
    ) -> Option<Action> {
        let (Action::Take { path, .. } | Action::Newer { path, .. }) = &action else {
            return Some(action);
        };
        let name = path.rsplit('/').next().unwrap_or_default();
        match self.live_path(path) {
            // Not ours to write (another instance's paths) or no live file.
            None => Some(action),
            Some(_) if name == KEEP_MARKER => Some(action),
            Some(abs) if live_holds(repo, &abs, ours.get(path)) => Some(action),
            Some(_) => demote(action, tag),
        }
    }

    /// Write their side's files (and conflict copies) into the live paths,
    /// through the restore's writer; remove the files they deleted.
    fn apply_live(
        &self,
        repo: &Repository,
        tree: &Tree,
        actions: &[Action],
        out: &mut Merged,
    ) -> Result<(), PersistError> {
        let mut write = Vec::new();
        for a in actions {
            let (path, targets): (&String, Vec<&String>) = match a {
                Action::Take { path, theirs } => (path, theirs.iter().map(|_| path).collect()),
                Action::Conflict { path, copy, .. } => (path, vec![copy]),
                Action::Newer { path, copy, .. } => (path, vec![path, copy]),
            };
            if path.rsplit('/').next() == Some(KEEP_MARKER) {
                continue;
            }
            let Some(abs) = self.live_path(path) else {
                continue;
            };
            write.extend(
                targets
                    .iter()
                    .filter_map(|t| Some((self.live_path(t)?, t.to_string()))),
            );
            match a {
                Action::Take { theirs: None, .. } => {
                    // `check_live` saw it still holding our version.
                    let roots: Vec<PathBuf> = self.rules.iter().map(|r| r.root.clone()).collect();
                    if let Err(e) = super::restore::remove_live(&roots, &abs) {
                        tracing::warn!(path = %abs.display(), error = %e, "cannot remove a file the other instance deleted");
                    }
                    super::lock(&self.cache).forget(&abs);
                    out.taken += 1;
                }
                Action::Take { .. } => out.taken += 1,
                Action::Conflict { copy, .. } | Action::Newer { copy, .. } => {
                    let kept = if matches!(a, Action::Newer { .. }) {
                        "the newer version (theirs) kept, ours saved beside it"
                    } else {
                        "ours kept, theirs saved beside it"
                    };
                    tracing::warn!(path = %abs.display(), copy = %copy, snapshot = %tag_of(copy), kept,
                        "this instance and another both changed a file");
                    out.conflicts.push(self.live_path(copy).unwrap_or(abs));
                }
            }
        }
        if write.is_empty() {
            return Ok(());
        }
        let plan = super::restore::plan(repo, tree, &write)?;
        if !plan.refused.is_empty() {
            // Hostile or broken content of the other side must not block
            // our pushes for good: it stays in the history, unwritten here.
            tracing::warn!(refused = ?plan.refused, "files of another writer's snapshot not written to the live paths");
            return Ok(());
        }
        let blobs = super::restore::Blobs {
            store: self.blobs.as_deref(),
            retry: self.blob_retry(),
            transfer: None,
        };
        let mut cache = super::lock(&self.cache);
        super::restore::apply(repo, &plan, &blobs, &mut cache, &|_| {})?;
        self.save_cache(&cache);
        Ok(())
    }

    /// Note conflicts for `status`.
    pub(in crate::persist) fn record_conflicts(&self, conflicts: &[PathBuf]) {
        if conflicts.is_empty() {
            return;
        }
        let mut st = super::lock(&self.status);
        st.conflicts
            .extend(conflicts.iter().map(|c| c.display().to_string()));
        // The newest hundred are enough to point at the problem.
        let excess = st.conflicts.len().saturating_sub(100);
        st.conflicts.drain(..excess);
    }
}

/// The snapshot tag a conflict copy's name ends with.
fn tag_of(copy: &str) -> &str {
    copy.rsplit_once(".conflict-").map_or("", |(_, t)| t)
}
