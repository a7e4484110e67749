//! Snapshot trees as [`Files`] and back, and the reads of blobs and live
//! files a merge decides with (the git I/O of [`super`]).

use std::collections::BTreeMap;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use git2::{ObjectType, Oid, Repository, Tree, TreeWalkMode, TreeWalkResult};

use super::super::plan::META_DIR;
use super::super::pointer::Pointer;
use super::{apply, gitattributes, modes, their_view, Action, Entry, Files};

/// Can `path` name a file in a tree (no empty, `.`, `..` or `.git` part)?
/// Another writer's tree is repository content: a name that is not is
/// left out of the merge.
pub(super) fn valid_path(path: &str) -> bool {
    path.split('/')
        .all(|p| !p.is_empty() && p != "." && p != ".." && p != ".git" && !p.contains('\0'))
}

/// Every blob of `tree` by tree path (invalid names left out).
pub fn files(tree: &Tree) -> Files {
    let mut out = Files::new();
    let _ = tree.walk(TreeWalkMode::PreOrder, |dir, e| {
        let name = String::from_utf8_lossy(e.name_bytes());
        let path = format!("{dir}{name}");
        if e.kind() == Some(ObjectType::Blob) && valid_path(&path) {
            out.insert(
                path,
                Entry {
                    oid: e.id(),
                    mode: e.filemode(),
                },
            );
        }
        TreeWalkResult::Ok
    });
    out
}

/// Write `files` as a tree.
pub fn write_tree(repo: &Repository, files: &Files) -> Result<Oid, git2::Error> {
    #[derive(Default)]
    struct Dir<'a> {
        files: Vec<(&'a str, Entry)>,
        dirs: BTreeMap<&'a str, Dir<'a>>,
    }
    fn write(repo: &Repository, d: &Dir) -> Result<Oid, git2::Error> {
        let mut tb = repo.treebuilder(None)?;
        for (name, e) in &d.files {
            tb.insert(name, e.oid, e.mode)?;
        }
        for (name, sub) in &d.dirs {
            tb.insert(name, write(repo, sub)?, 0o040000)?;
        }
        tb.write()
    }
    let mut root = Dir::default();
    for (path, e) in files {
        let mut parts: Vec<&str> = path.split('/').collect();
        let name = parts.pop().unwrap_or_default();
        let mut d = &mut root;
        for p in parts {
            d = d.dirs.entry(p).or_default();
        }
        d.files.push((name, *e));
    }
    write(repo, &root)
}

/// The persisted paths a snapshot records in `.stackctl/paths`.
fn persisted_paths(repo: &Repository, files: &Files) -> Option<Vec<String>> {
    let text = text(repo, files.get(&format!("{META_DIR}/paths")))?;
    Some(
        text.lines()
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect(),
    )
}

/// Their side's files as [`their_view`] reads them.
pub(super) fn their_files(
    repo: &Repository,
    commit: &git2::Commit,
    base: &Files,
) -> Result<Files, git2::Error> {
    let theirs = files(&commit.tree()?);
    Ok(their_view(
        &theirs,
        base,
        persisted_paths(repo, &theirs).as_deref(),
    ))
}

/// The blob's text, if it is one.
fn text(repo: &Repository, e: Option<&Entry>) -> Option<String> {
    let blob = repo.find_blob(e?.oid).ok()?;
    Some(String::from_utf8_lossy(blob.content()).into_owned())
}

/// The merged tree of `ours` and `theirs` after `actions`.
pub(super) fn merged_tree(
    repo: &Repository,
    ours: &Files,
    theirs: &Files,
    actions: &[Action],
) -> Result<Oid, git2::Error> {
    let mut merged = apply(ours, actions);
    let attrs = gitattributes(
        text(repo, ours.get(".gitattributes")).as_deref(),
        text(repo, theirs.get(".gitattributes")).as_deref(),
        actions,
    );
    if let Some(attrs) = attrs {
        let oid = repo.blob(attrs.as_bytes())?;
        merged.insert(
            ".gitattributes".into(),
            Entry {
                oid,
                mode: 0o100644,
            },
        );
    }
    let modes_path = format!("{META_DIR}/modes");
    if let Some(ours_modes) = text(repo, ours.get(&modes_path)) {
        let theirs_modes = text(repo, theirs.get(&modes_path)).unwrap_or_default();
        let merged_modes = modes(&ours_modes, &theirs_modes, theirs, actions);
        let oid = repo.blob(merged_modes.as_bytes())?;
        merged.insert(
            modes_path,
            Entry {
                oid,
                mode: 0o100644,
            },
        );
    }
    if !merged.contains_key(".lfsconfig") {
        if let Some(e) = theirs.get(".lfsconfig") {
            merged.insert(".lfsconfig".into(), *e);
        }
    }
    write_tree(repo, &merged)
}

/// Does the live file at `abs` still hold what `ours` recorded?
pub(super) fn live_holds(repo: &Repository, abs: &Path, ours: Option<&Entry>) -> bool {
    let meta = std::fs::symlink_metadata(abs);
    let Some(e) = ours else {
        return meta.is_err();
    };
    let Ok(meta) = meta else { return false };
    let Ok(blob) = repo.find_blob(e.oid) else {
        return false;
    };
    if e.mode == 0o120000 {
        return meta.file_type().is_symlink()
            && std::fs::read_link(abs).is_ok_and(|t| t.as_os_str().as_bytes() == blob.content());
    }
    if !meta.is_file() {
        return false;
    }
    match Pointer::parse(blob.content()) {
        Some(p) => super::blob::hash_file(abs).is_ok_and(|h| h == p),
        None => Oid::hash_file(ObjectType::Blob, abs).is_ok_and(|h| h == e.oid),
    }
}
