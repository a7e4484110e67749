//! Garbage collection of large-file blobs: a blob no snapshot in the kept
//! history refers to is deleted from the store once it is older than a
//! grace period; a blob a kept snapshot refers to never is.
//!
//! It runs after a history squash (what makes blobs unreferenced), best
//! effort: a failure is logged and never fails the snapshot.
//!
//! - [`referenced`] walks every commit still in the branch (after the
//!   squash: the kept snapshots down to the new root) and collects the
//!   SHA-256 of every Git LFS pointer and of every one of the original's
//!   `*.pointer` files in their trees. It takes every blob that parses as a
//!   pointer, tracked by a `.gitattributes` line or not: a superset of what
//!   restore hydrates, so nothing restore could need is ever left out.
//!   The snapshots parked for the lease holder since its fold
//!   ([`add_snapshot`]) count too: the next fold takes them in.
//! - [`decide`] (pure) picks the blobs to delete: unreferenced **and** at
//!   least the grace period old. The grace period covers blobs uploaded for
//!   a snapshot that is not in the branch yet (another writer's upload in
//!   flight, a snapshot queued while the remote was down).
//!
//! Stores: `dir:` and `github-release` list and delete; `lfs` cannot (the
//! batch API has neither), so nothing happens there and the server's own
//! retention applies.

use std::collections::HashSet;
use std::time::Duration;

use git2::{ObjectType, Oid, Repository};

use super::blob::StoredBlob;
use super::pointer::{OriginalPointer, Pointer, MAX_POINTER_SIZE, ORIGINAL_SUFFIX};

/// Default grace period: an unreferenced blob is kept 7 days after it was
/// stored, so an upload for a snapshot not yet in the branch is never lost.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(7 * 24 * 3600);

/// The blobs to delete: those no kept snapshot refers to and at least
/// `grace` old, in the order listed.
pub fn decide(
    referenced: &HashSet<[u8; 32]>,
    stored: &[StoredBlob],
    grace: Duration,
) -> Vec<StoredBlob> {
    stored
        .iter()
        .filter(|b| !referenced.contains(&b.sha256) && b.age >= grace)
        .copied()
        .collect()
}

/// The SHA-256 of every blob the commits on the first-parent chain from
/// `head` refer to. `None` when the chain does not end at a root commit (a
/// shallow history cut it off): older snapshots may refer to more blobs,
/// so nothing may be collected.
pub fn referenced(repo: &Repository, head: Oid) -> Result<Option<HashSet<[u8; 32]>>, git2::Error> {
    let odb = repo.odb()?;
    let mut out = HashSet::new();
    let mut seen_trees = HashSet::new();
    let mut seen_blobs = HashSet::new();
    let mut next = Some(repo.find_commit(head)?);
    while let Some(c) = next.take() {
        walk_tree(
            repo,
            &odb,
            c.tree_id(),
            &mut seen_trees,
            &mut seen_blobs,
            &mut out,
        )?;
        if c.parent_count() == 0 {
            return Ok(Some(out));
        }
        match c.parent(0) {
            Ok(p) => next = Some(p),
            // Shallow: the parent is not here.
            Err(_) => return Ok(None),
        }
    }
    Ok(None)
}

/// Add to `out` the SHA-256 of every blob the tree of `snapshot` refers
/// to: for a snapshot parked for the lease holder (not in the branch yet),
/// whose own tree is what the fold takes in.
pub fn add_snapshot(
    repo: &Repository,
    snapshot: Oid,
    out: &mut HashSet<[u8; 32]>,
) -> Result<(), git2::Error> {
    let tree = repo.find_commit(snapshot)?.tree_id();
    let (mut seen_trees, mut seen_blobs) = (HashSet::new(), HashSet::new());
    walk_tree(
        repo,
        &repo.odb()?,
        tree,
        &mut seen_trees,
        &mut seen_blobs,
        out,
    )
}

fn walk_tree(
    repo: &Repository,
    odb: &git2::Odb,
    tree: Oid,
    seen_trees: &mut HashSet<Oid>,
    seen_blobs: &mut HashSet<Oid>,
    out: &mut HashSet<[u8; 32]>,
) -> Result<(), git2::Error> {
    if !seen_trees.insert(tree) {
        return Ok(());
    }
    let t = repo.find_tree(tree)?;
    for e in t.iter() {
        match e.kind() {
            Some(ObjectType::Tree) => walk_tree(repo, odb, e.id(), seen_trees, seen_blobs, out)?,
            Some(ObjectType::Blob) => {
                if !seen_blobs.insert(e.id()) {
                    continue;
                }
                let original = e.name_bytes().ends_with(ORIGINAL_SUFFIX.as_bytes());
                let limit = if original {
                    64 * 1024
                } else {
                    MAX_POINTER_SIZE
                };
                // Read only small blobs (a pointer is tiny; data may be huge).
                let (size, _) = odb.read_header(e.id())?;
                if size > limit {
                    continue;
                }
                let blob = repo.find_blob(e.id())?;
                if let Some(p) = Pointer::parse(blob.content()) {
                    out.insert(p.sha256);
                } else if original {
                    if let Some((_, p)) = OriginalPointer::parse(blob.content()) {
                        out.insert(p.sha256);
                    }
                }
            }
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: Duration = Duration::from_secs(24 * 3600);

    fn blob(n: u8, age: Duration) -> StoredBlob {
        StoredBlob {
            sha256: [n; 32],
            size: u64::from(n),
            age,
        }
    }

    #[test]
    fn only_unreferenced_blobs_past_the_grace_period_are_deleted() {
        let referenced: HashSet<[u8; 32]> = [[1; 32], [2; 32]].into_iter().collect();
        // (blob, grace, deleted?)
        let table = [
            // Referenced: never, however old, whatever the grace.
            (blob(1, 365 * DAY), DEFAULT_GRACE, false),
            (blob(2, 365 * DAY), Duration::ZERO, false),
            (blob(1, Duration::ZERO), Duration::ZERO, false),
            // Unreferenced: only once the grace period has passed.
            (blob(3, 8 * DAY), DEFAULT_GRACE, true),
            (blob(3, 7 * DAY), DEFAULT_GRACE, true),
            (
                blob(3, 7 * DAY - Duration::from_secs(1)),
                DEFAULT_GRACE,
                false,
            ),
            (blob(3, Duration::ZERO), DEFAULT_GRACE, false),
            (blob(3, Duration::ZERO), Duration::ZERO, true),
            (blob(4, DAY), Duration::from_secs(3600), true),
        ];
        for (b, grace, deleted) in table {
            let got = decide(&referenced, &[b], grace);
            assert_eq!(got == vec![b], deleted, "{b:?} grace {grace:?}");
            assert!(deleted || got.is_empty());
        }
        let all = [blob(1, 30 * DAY), blob(3, 30 * DAY), blob(4, DAY)];
        assert_eq!(decide(&referenced, &all, DEFAULT_GRACE), vec![all[1]]);
        assert_eq!(decide(&referenced, &all, Duration::ZERO), all[1..].to_vec());
        assert!(decide(&referenced, &[], Duration::ZERO).is_empty());
        assert_eq!(DEFAULT_GRACE, 7 * DAY);
    }

    fn commit(repo: &Repository, files: &[(&str, &[u8])], parent: Option<Oid>) -> Oid {
        let mut b = repo.treebuilder(None).unwrap();
        for (name, content) in files {
            let blob = repo.blob(content).unwrap();
            b.insert(name, blob, 0o100644).unwrap();
        }
        // Nested once, to walk subtrees too.
        let sub = b.write().unwrap();
        let mut top = repo.treebuilder(None).unwrap();
        top.insert("d", sub, 0o040000).unwrap();
        let tree = repo.find_tree(top.write().unwrap()).unwrap();
        let sig = git2::Signature::now("t", "t@example.org").unwrap();
        let parents: Vec<git2::Commit> = parent
            .iter()
            .map(|p| repo.find_commit(*p).unwrap())
            .collect();
        let refs: Vec<&git2::Commit> = parents.iter().collect();
        repo.commit(None, &sig, &sig, "s", &tree, &refs).unwrap()
    }

    #[test]
    fn every_pointer_in_every_commit_down_to_the_root_is_referenced() {
        let d = tempfile::tempdir().unwrap();
        let repo = Repository::init_bare(d.path()).unwrap();
        let p = |n: u8| Pointer {
            sha256: [n; 32],
            size: 100,
        };
        let orig = format!(
            r#"{{"type":"release-asset","asset_id":1,"size":5,"sha256":"{}"}}"#,
            hex::encode([9u8; 32])
        );
        let c1 = commit(
            &repo,
            &[
                ("a.bin", p(1).render().as_bytes()),
                ("m.bin.pointer", orig.as_bytes()),
            ],
            None,
        );
        let c2 = commit(
            &repo,
            &[
                ("a.bin", p(2).render().as_bytes()),
                ("small.txt", b"hello"),
                // Not a pointer: a near miss and a big file.
                ("near.txt", format!("x{}", p(7).render()).as_bytes()),
                ("big.bin", &vec![0u8; 4096]),
            ],
            Some(c1),
        );
        let got = referenced(&repo, c2).unwrap().unwrap();
        let want: HashSet<[u8; 32]> = [[1; 32], [2; 32], [9; 32]].into_iter().collect();
        assert_eq!(got, want);
        let only_root = referenced(&repo, c1).unwrap().unwrap();
        assert_eq!(only_root, [[1; 32], [9; 32]].into_iter().collect());
        // A parked snapshot adds its own tree's pointers, not its parents'.
        let parked = commit(&repo, &[("new.bin", p(5).render().as_bytes())], Some(c1));
        let mut with_parked = HashSet::new();
        add_snapshot(&repo, parked, &mut with_parked).unwrap();
        assert_eq!(with_parked, [[5; 32]].into_iter().collect());
    }
}
