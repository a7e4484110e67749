//! Bounded history: the branch keeps `history.keep` snapshots; older ones are
//! squashed into a new root commit so the repository does not grow without
//! end (the original's defect 7). The rewrite is local; the caller pushes it
//! with a lease (compare-and-swap against the remote head it replaces).

use git2::{Oid, Repository};

/// Extra snapshots allowed past `keep` before squashing: each squash rewrites
/// `keep` commits and force-pushes, so it should not happen at every snapshot.
pub fn slack(keep: usize) -> usize {
    (keep / 2).max(1)
}

/// Is a squash due for a first-parent chain of `len` commits?
pub fn squash_due(len: usize, keep: usize) -> bool {
    keep > 0 && len > keep + slack(keep)
}

/// First-parent chain from `head`, newest first, at most `limit` commits;
/// it ends at a root or where a shallow history stops.
pub fn first_parent_chain(
    repo: &Repository,
    head: Oid,
    limit: usize,
) -> Result<Vec<Oid>, git2::Error> {
    let mut out = Vec::new();
    let mut next = Some(repo.find_commit(head)?);
    while let Some(c) = next.take() {
        if out.len() >= limit {
            break;
        }
        out.push(c.id());
        next = c.parent(0).ok();
    }
    Ok(out)
}

/// Rewrite the chain ending at `head` to its newest `keep` snapshots: the
/// oldest kept one becomes a root commit (same tree, noted in its message),
/// the others are replayed on it unchanged. Returns the new head and how many
/// snapshots were dropped, or `None` when the chain is not longer than `keep`.
pub fn squash(
    repo: &Repository,
    head: Oid,
    keep: usize,
) -> Result<Option<(Oid, usize)>, git2::Error> {
    let chain = first_parent_chain(repo, head, usize::MAX)?;
    if keep == 0 || chain.len() <= keep {
        return Ok(None);
    }
    let dropped = chain.len() - keep;
    let base = repo.find_commit(chain[keep - 1])?;
    let message = format!(
        "{}\n\nstackctl: {dropped} older snapshot(s) squashed into this one (history.keep = {keep})\n",
        String::from_utf8_lossy(base.message_bytes()).trim_end()
    );
    let committer = super::snapshot::signature()?;
    let root = repo.commit(
        None,
        &base.author(),
        &committer,
        &message,
        &base.tree()?,
        &[],
    )?;
    let mut parent = repo.find_commit(root)?;
    for oid in chain[..keep - 1].iter().rev() {
        let c = repo.find_commit(*oid)?;
        let msg = String::from_utf8_lossy(c.message_bytes()).into_owned();
        let new = repo.commit(None, &c.author(), &committer, &msg, &c.tree()?, &[&parent])?;
        parent = repo.find_commit(new)?;
    }
    Ok(Some((parent.id(), dropped)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn squash_waits_for_some_slack() {
        for (len, keep, due) in [
            (10, 0, false),
            (50, 50, false),
            (75, 50, false),
            (76, 50, true),
            (2, 1, false),
            (3, 1, true),
        ] {
            assert_eq!(squash_due(len, keep), due, "len {len} keep {keep}");
        }
    }

    #[test]
    fn squash_keeps_the_newest_trees_and_drops_the_rest() {
        let d = tempfile::tempdir().unwrap();
        let repo = Repository::init_bare(d.path()).unwrap();
        let sig = git2::Signature::now("t", "t@example.org").unwrap();
        let mut parent: Option<Oid> = None;
        let mut trees = Vec::new();
        for i in 0..6 {
            let blob = repo.blob(format!("v{i}").as_bytes()).unwrap();
            let tree = {
                let mut b = repo.treebuilder(None).unwrap();
                b.insert("f", blob, 0o100644).unwrap();
                b.write().unwrap()
            };
            trees.push(tree);
            let t = repo.find_tree(tree).unwrap();
            let parents: Vec<git2::Commit> = parent
                .iter()
                .map(|p| repo.find_commit(*p).unwrap())
                .collect();
            let refs: Vec<&git2::Commit> = parents.iter().collect();
            parent = Some(
                repo.commit(None, &sig, &sig, &format!("s{i}"), &t, &refs)
                    .unwrap(),
            );
        }
        let head = parent.unwrap();
        let (new, dropped) = squash(&repo, head, 3).unwrap().unwrap();
        assert_eq!(dropped, 3);
        let chain = first_parent_chain(&repo, new, 100).unwrap();
        let got: Vec<Oid> = chain
            .iter()
            .map(|c| repo.find_commit(*c).unwrap().tree_id())
            .collect();
        assert_eq!(got, vec![trees[5], trees[4], trees[3]]);
        let root = repo.find_commit(chain[2]).unwrap();
        assert_eq!(root.parent_count(), 0);
        assert!(root
            .message()
            .unwrap()
            .starts_with("s3\n\nstackctl: 3 older snapshot(s) squashed"));
        assert_eq!(squash(&repo, new, 3).unwrap(), None);
    }
}
