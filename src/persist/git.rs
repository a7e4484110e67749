//! Small helpers on the workdir repository: refs, ancestry, stale lock
//! files, and the orphan commit a GitHub release hangs on.

use std::fs;
use std::path::Path;

use git2::{Oid, Repository};

use super::blob;
use super::remote::{self, Remote, RemoteError, RemoteHead};
use super::snapshot;
use super::PersistError;
use crate::manifest::Persist;

/// Pushes a tiny orphan commit as `refs/tags/<tag>` to the backup remote,
/// for a release to hang on (the GitHub store calls it before creating one).
pub(super) fn tag_anchor(cfg: &Persist) -> Result<blob::github::Anchor, PersistError> {
    let url = remote::resolve_url(&cfg.remote)?;
    let token = cfg.token.clone();
    let branch = cfg.branch.clone();
    let git_dir = cfg.workdir.join("repo.git");
    Ok(Box::new(move |tag: &str| -> Result<(), String> {
        let remote = Remote::new(url.clone(), token.clone(), &branch);
        let repo = Repository::open_bare(&git_dir).map_err(|e| e.message().to_string())?;
        let text = format!("Anchor of the release `{tag}` holding stackctl's large-file blobs.\nNo data here: a tag pins its commit's tree forever.\n");
        let commit = (|| -> Result<Oid, git2::Error> {
            let blob = repo.blob(text.as_bytes())?;
            let mut tb = repo.treebuilder(None)?;
            tb.insert("README", blob, 0o100644)?;
            let tree = repo.find_tree(tb.write()?)?;
            let sig = snapshot::signature()?;
            repo.commit(
                None,
                &sig,
                &sig,
                &format!("stackctl blob release {tag}"),
                &tree,
                &[],
            )
        })()
        .map_err(|e| e.message().to_string())?;
        match remote.push_to(
            &repo,
            commit,
            &format!("refs/tags/{tag}"),
            Some(RemoteHead::Missing),
        ) {
            // Already there (an earlier attempt, another instance): fine.
            Ok(()) | Err(RemoteError::Rejected { .. }) => Ok(()),
            Err(e) => Err(remote.scrub(&e.to_string())),
        }
    }))
}

/// Remove `*.lock` files under a git directory (refs, packed-refs, HEAD,
/// config, shallow). Only call while holding the workdir lock.
pub(super) fn remove_stale_git_locks(git_dir: &Path) {
    fn walk(dir: &Path, depth: usize) {
        let Ok(rd) = fs::read_dir(dir) else { return };
        for e in rd.flatten() {
            let p = e.path();
            let is_dir = e.file_type().is_ok_and(|t| t.is_dir());
            // Objects are written under temp names and renamed: no locks there.
            if is_dir && depth < 16 && e.file_name() != "objects" {
                walk(&p, depth + 1);
            } else if p.extension().is_some_and(|x| x == "lock") {
                tracing::warn!(path = %p.display(), "removing a stale git lock file left by an interrupted stackctl");
                let _ = fs::remove_file(&p);
            }
        }
    }
    walk(git_dir, 0);
}

/// Commits on `local` not reachable from `remote` (all of them without one).
pub(super) fn ahead(repo: &Repository, local: Oid, remote: Option<Oid>) -> usize {
    let count = || -> Result<usize, git2::Error> {
        let mut walk = repo.revwalk()?;
        walk.push(local)?;
        if let Some(r) = remote.filter(|r| repo.find_commit(*r).is_ok()) {
            walk.hide(r)?;
        }
        Ok(walk.count())
    };
    count().unwrap_or(0)
}

pub(super) fn ref_oid(repo: &Repository, name: &str) -> Result<Option<Oid>, git2::Error> {
    match repo.refname_to_id(name) {
        Ok(o) => Ok(Some(o)),
        Err(e) if e.code() == git2::ErrorCode::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Is `ancestor` reachable from `of` (or equal to it)? Unknown objects: no.
pub(super) fn is_ancestor(repo: &Repository, ancestor: Oid, of: Oid) -> Result<bool, git2::Error> {
    if ancestor == of {
        return Ok(true);
    }
    if repo.find_commit(ancestor).is_err() || repo.find_commit(of).is_err() {
        return Ok(false);
    }
    repo.graph_descendant_of(of, ancestor)
}
