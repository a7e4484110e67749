use std::fs;

use git2::{ObjectType, Repository};

use super::super::blob::Retry;
use super::super::plan::StatCache;
use super::*;

fn no_blobs() -> Blobs<'static> {
    Blobs {
        store: None,
        retry: Retry::default(),
        transfer: None,
    }
}

#[test]
fn a_merge_removes_only_inside_the_roots() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("data");
    fs::create_dir(&root).unwrap();
    fs::write(root.join("gone.txt"), "x").unwrap();
    fs::write(d.path().join("outside.txt"), "keep").unwrap();
    let roots = [root.clone()];
    remove_live(&roots, &root.join("../outside.txt")).unwrap_err();
    assert!(d.path().join("outside.txt").exists());
    remove_live(&roots, &root.join("gone.txt")).unwrap();
    assert!(!root.join("gone.txt").exists());
    // Already gone is fine: the other writer's deletion holds.
    remove_live(&roots, &root.join("gone.txt")).unwrap();
}

fn hostile_repo() -> (tempfile::TempDir, Repository, Oid) {
    let d = tempfile::tempdir().unwrap();
    let repo = Repository::init_bare(d.path().join("r.git")).unwrap();
    let ok = repo.blob(b"fine").unwrap();
    let evil = repo.blob(b"pwned").unwrap();
    let link_etc = repo.blob(b"/etc").unwrap();
    let link_up = repo.blob(b"../../../etc/passwd").unwrap();
    let data = {
        let mut b = repo.treebuilder(None).unwrap();
        b.insert("ok.txt", ok, 0o100644).unwrap();
        b.insert("etc", link_etc, 0o120000).unwrap();
        b.insert("up", link_up, 0o120000).unwrap();
        b.write().unwrap()
    };
    // Names with `..` or `/` cannot be made with TreeBuilder::insert: write
    // the raw tree object, as a hostile server could.
    let mut raw = Vec::new();
    for (mode, name, oid) in [("100644", "..", evil), ("40000", "data", data)] {
        raw.extend_from_slice(format!("{mode} {name}\0").as_bytes());
        raw.extend_from_slice(oid.as_bytes());
    }
    let odb = repo.odb().unwrap();
    let inner = odb.write(ObjectType::Tree, &raw).unwrap();
    let top = {
        let mut b = repo.treebuilder(None).unwrap();
        b.insert("srv", inner, 0o040000).unwrap();
        b.write().unwrap()
    };
    drop(odb);
    (d, repo, top)
}

#[test]
fn hostile_entries_are_refused_and_nothing_is_written() {
    let (d, repo, top) = hostile_repo();
    let tree = repo.find_tree(top).unwrap();
    let root = d.path().join("srv/data");
    let p = plan(&repo, &tree, &[(root.clone(), "srv/data".into())]).unwrap();
    assert_eq!(p.refused.len(), 2, "{:?}", p.refused);
    assert!(
        p.refused.iter().any(|r| r.contains("`srv/data/etc`")),
        "{:?}",
        p.refused
    );
    let e = apply(&repo, &p, &no_blobs(), &mut StatCache::default(), &|_| {}).unwrap_err();
    assert!(
        e.to_string()
            .starts_with("refusing to restore: the snapshot holds 2 unsafe entries"),
        "{e}"
    );
    assert!(!root.exists());
    // The `..` entry sits beside `data`, in `srv`: refused when `srv` is the root.
    let p = plan(&repo, &tree, &[(d.path().join("srv"), "srv".into())]).unwrap();
    assert!(
        p.refused
            .iter()
            .any(|r| r.contains("`srv/..`: unsafe name")),
        "{:?}",
        p.refused
    );
}

/// The original's release-asset JSON, for a blob of `size` bytes.
fn original_json(size: u64) -> String {
    let sha = "ab".repeat(32);
    format!(
        r#"{{"type":"release-asset","repo":"o/r","release_tag":"blobs","asset_name":"{sha}-x","asset_id":1,"size":{size},"sha256":"{sha}"}}"#
    )
}

/// `srv/data` holding `...pointer` and `sub/..pointer` (the original's
/// pointer JSON): stripping `.pointer` gives `..` and `.` (issue 17).
fn hostile_pointer_repo() -> (tempfile::TempDir, Repository, Oid) {
    let d = tempfile::tempdir().unwrap();
    let repo = Repository::init_bare(d.path().join("r.git")).unwrap();
    let json = repo.blob(original_json(5).as_bytes()).unwrap();
    let ok = repo.blob(b"fine").unwrap();
    let mut sub_b = repo.treebuilder(None).unwrap();
    sub_b.insert("..pointer", json, 0o100644).unwrap();
    let sub = sub_b.write().unwrap();
    let mut data_b = repo.treebuilder(None).unwrap();
    data_b.insert("...pointer", json, 0o100644).unwrap();
    data_b.insert("ok.txt", ok, 0o100644).unwrap();
    data_b.insert("sub", sub, 0o040000).unwrap();
    let data = data_b.write().unwrap();
    let mut srv_b = repo.treebuilder(None).unwrap();
    srv_b.insert("data", data, 0o040000).unwrap();
    let srv = srv_b.write().unwrap();
    let top = {
        let mut top = repo.treebuilder(None).unwrap();
        top.insert("srv", srv, 0o040000).unwrap();
        top.write().unwrap()
    };
    drop((sub_b, data_b, srv_b));
    (d, repo, top)
}

#[test]
fn a_pointer_named_to_climb_out_is_refused_and_nothing_is_removed() {
    let (d, repo, top) = hostile_pointer_repo();
    let tree = repo.find_tree(top).unwrap();
    let root = d.path().join("srv/data");
    let sibling = d.path().join("srv/app/keep.txt");
    fs::create_dir_all(root.join("sub")).unwrap();
    fs::create_dir_all(sibling.parent().unwrap()).unwrap();
    fs::write(&sibling, b"mine").unwrap();
    fs::write(root.join("sub/local.txt"), b"mine").unwrap();
    let p = plan(&repo, &tree, &[(root.clone(), "srv/data".into())]).unwrap();
    assert_eq!(
        p.refused,
        [
            "`srv/data/...pointer`: a large-file pointer for `..`, an unsafe name",
            "`srv/data/sub/..pointer`: a large-file pointer for `.`, an unsafe name",
        ]
    );
    assert!(apply(&repo, &p, &no_blobs(), &mut StatCache::default(), &|_| {}).is_err());
    assert_eq!(fs::read(&sibling).unwrap(), b"mine");
    assert_eq!(fs::read(root.join("sub/local.txt")).unwrap(), b"mine");
}

#[test]
fn apply_removes_and_writes_nothing_outside_the_roots_whatever_the_plan_says() {
    let d = tempfile::tempdir().unwrap();
    let repo = Repository::init_bare(d.path().join("r.git")).unwrap();
    let root = d.path().join("srv/data");
    let sibling = d.path().join("srv/app/keep.txt");
    fs::create_dir_all(root.join("sub")).unwrap();
    fs::create_dir_all(sibling.parent().unwrap()).unwrap();
    fs::write(&sibling, b"mine").unwrap();
    let (_, pointer) = OriginalPointer::parse(original_json(5).as_bytes()).unwrap();
    let blob = repo.blob(b"x").unwrap();
    // Plans no planner makes: each path climbs out of (or is) a root by a
    // name that `Path::starts_with` lets through.
    for path in [
        root.join(".."),
        root.join("sub/.."),
        root.join("sub/../.."),
        root.join("."),
    ] {
        for op in [
            Op::Original {
                path: path.clone(),
                file: (root.join("x.pointer"), blob, 0o644),
                original: Box::new(
                    OriginalPointer::parse(original_json(5).as_bytes())
                        .unwrap()
                        .0,
                ),
                pointer,
            },
            Op::File {
                path: path.clone(),
                oid: blob,
                mode: 0o644,
            },
            Op::Dir {
                path: path.clone(),
                mode: 0o755,
            },
        ] {
            let p = Plan {
                ops: vec![op],
                roots: vec![root.clone()],
                ..Plan::default()
            };
            let e = apply(&repo, &p, &no_blobs(), &mut StatCache::default(), &|_| {}).unwrap_err();
            assert!(
                e.to_string().contains("is outside the persisted paths"),
                "{}: {e}",
                path.display()
            );
            assert_eq!(fs::read(&sibling).unwrap(), b"mine");
            assert!(root.join("sub").is_dir());
        }
    }
}

/// A raw tree object with these entries, in this order (as a hostile
/// or broken server could send it).
fn raw_tree(repo: &Repository, entries: &[(&str, &str, Oid)]) -> Oid {
    let mut raw = Vec::new();
    for (mode, name, oid) in entries {
        raw.extend_from_slice(format!("{mode} {name}\0").as_bytes());
        raw.extend_from_slice(oid.as_bytes());
    }
    repo.odb().unwrap().write(ObjectType::Tree, &raw).unwrap()
}

#[test]
fn a_tree_out_of_git_order_is_refused_not_read_as_empty() {
    let d = tempfile::tempdir().unwrap();
    let repo = Repository::init_bare(d.path().join("r.git")).unwrap();
    let f = repo.blob(b"x").unwrap();
    let sorted = raw_tree(&repo, &[("100644", "a", f), ("100644", "b", f)]);
    let unsorted = raw_tree(&repo, &[("100644", "b", f), ("100644", "a", f)]);
    let root = d.path().join("srv");
    // Out of order at the top: `srv` sorts last but comes first, so a
    // binary search for it lands in the wrong half.
    let top = raw_tree(
        &repo,
        &[
            ("40000", "srv", sorted),
            ("100644", "b", f),
            ("100644", "c", f),
            ("100644", "d", f),
            ("100644", "e", f),
        ],
    );
    let tree = repo.find_tree(top).unwrap();
    let p = plan(&repo, &tree, &[(root.clone(), "srv".into())]).unwrap();
    assert_eq!(p.refused, ["`/`: tree entries out of git's order"]);
    assert!(p.absent.is_empty());
    // Out of order below the path.
    let top = raw_tree(&repo, &[("40000", "srv", unsorted)]);
    let tree = repo.find_tree(top).unwrap();
    let p = plan(&repo, &tree, &[(root.clone(), "srv".into())]).unwrap();
    assert_eq!(p.refused, ["`srv`: tree entries out of git's order"]);
    // A name twice.
    let twice = raw_tree(&repo, &[("100644", "a", f), ("100644", "a", f)]);
    let top = raw_tree(&repo, &[("40000", "srv", twice)]);
    let tree = repo.find_tree(top).unwrap();
    let p = plan(&repo, &tree, &[(root, "srv".into())]).unwrap();
    assert_eq!(p.refused, ["`srv`: tree entries out of git's order"]);
}

#[test]
fn a_symlinked_directory_on_disk_is_never_written_through() {
    let d = tempfile::tempdir().unwrap();
    let repo = Repository::init_bare(d.path().join("r.git")).unwrap();
    let blob = repo.blob(b"x").unwrap();
    let mut sub = repo.treebuilder(None).unwrap();
    sub.insert("f", blob, 0o100644).unwrap();
    let sub = sub.write().unwrap();
    let mut top = repo.treebuilder(None).unwrap();
    top.insert("sub", sub, 0o040000).unwrap();
    let top = top.write().unwrap();
    let root = d.path().join("data");
    let outside = d.path().join("outside");
    fs::create_dir_all(&root).unwrap();
    fs::create_dir_all(&outside).unwrap();
    std::os::unix::fs::symlink(&outside, root.join("sub")).unwrap();
    let _ = top;
    // A plan that forgot the directory op must still not write through the link.
    let ops = vec![
        Op::Dir {
            path: root.clone(),
            mode: 0o755,
        },
        Op::File {
            path: root.join("sub/f"),
            oid: blob,
            mode: 0o644,
        },
    ];
    let p = Plan {
        ops,
        roots: vec![root.clone()],
        ..Plan::default()
    };
    assert!(apply(&repo, &p, &no_blobs(), &mut StatCache::default(), &|_| {}).is_err());
    assert!(!outside.join("f").exists());
    // With the directory op first, the planted symlink is replaced by a real dir.
    let ops = vec![
        Op::Dir {
            path: root.clone(),
            mode: 0o755,
        },
        Op::Dir {
            path: root.join("sub"),
            mode: 0o755,
        },
        Op::File {
            path: root.join("sub/f"),
            oid: blob,
            mode: 0o644,
        },
    ];
    let p = Plan {
        ops,
        roots: vec![root.clone()],
        ..Plan::default()
    };
    apply(&repo, &p, &no_blobs(), &mut StatCache::default(), &|_| {}).unwrap();
    assert!(!outside.join("f").exists());
    assert_eq!(fs::read(root.join("sub/f")).unwrap(), b"x");
}
