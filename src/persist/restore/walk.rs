//! The first step of a restore: walk the snapshot's tree for each persisted
//! path into a [`Plan`], refusing every entry that could write outside the
//! declared paths.

use std::collections::HashMap;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use git2::{ObjectType, Oid, Repository, Tree};

use super::super::plan::{self, KEEP_MARKER, META_DIR};
use super::super::pointer::{self, OriginalPointer, Pointer};
use super::{Op, Plan, RestoreError};

/// Plan the restore of `paths` (absolute path, tree path) from `tree`.
pub fn plan(
    repo: &Repository,
    tree: &Tree,
    paths: &[(PathBuf, String)],
) -> Result<Plan, RestoreError> {
    let mut out = Plan::default();
    let mut text = |path: &str| -> Result<Option<String>, RestoreError> {
        Ok(match lookup(repo, tree, path)? {
            Ok(Some(e)) => e
                .to_object(repo)?
                .into_blob()
                .ok()
                .map(|b| String::from_utf8_lossy(b.content()).into_owned()),
            Ok(None) => None,
            Err(why) => {
                if !out.refused.contains(&why) {
                    out.refused.push(why);
                }
                None
            }
        })
    };
    let modes = text(&format!("{META_DIR}/modes"))?
        .map(|t| plan::parse_modes(&t))
        .unwrap_or_default();
    let lfs = text(".gitattributes")?
        .map(|t| pointer::lfs_patterns(&t))
        .unwrap_or_default();
    let ctx = Ctx {
        modes: &modes,
        lfs: &lfs,
    };
    for (abs, tree_path) in paths {
        out.roots.push(abs.clone());
        let entry = match lookup(repo, tree, tree_path)? {
            Ok(Some(e)) => e,
            Ok(None) => {
                out.absent.push(abs.clone());
                continue;
            }
            Err(why) => {
                if !out.refused.contains(&why) {
                    out.refused.push(why);
                }
                continue;
            }
        };
        match (entry.kind(), entry.filemode()) {
            (Some(ObjectType::Tree), _) => {
                let mode = modes.get(tree_path).copied().unwrap_or(0o755);
                out.ops.push(Op::Dir {
                    path: abs.clone(),
                    mode: plan::safe_mode(mode),
                });
                let sub = repo.find_tree(entry.id())?;
                walk(repo, &sub, abs, Path::new(""), tree_path, &ctx, &mut out)?;
            }
            (Some(ObjectType::Blob), m) if m != 0o120000 => {
                let mode = modes.get(tree_path).copied().unwrap_or(if m == 0o100755 {
                    0o755
                } else {
                    0o644
                });
                out.ops.push(file_op(
                    repo,
                    &ctx,
                    tree_path,
                    abs.clone(),
                    entry.id(),
                    plan::safe_mode(mode),
                )?);
            }
            _ => out.refused.push(format!(
                "`{tree_path}`: a persisted path must be a directory or a file"
            )),
        }
    }
    Ok(out)
}

/// Are `tree`'s entries in git's order: names strictly increasing, a
/// subtree's compared as if followed by `/`, none twice? libgit2 finds a
/// name by binary search, so a tree out of order (hostile or damaged)
/// would read as missing entries: "nothing for this path", and the gate
/// would open on empty data.
fn in_git_order(tree: &Tree) -> bool {
    let mut names = std::collections::HashSet::new();
    let mut prev: Option<Vec<u8>> = None;
    for e in tree.iter() {
        let mut key = e.name_bytes().to_vec();
        if !names.insert(key.clone()) {
            return false;
        }
        if e.kind() == Some(ObjectType::Tree) {
            key.push(b'/');
        }
        if prev.as_ref().is_some_and(|p| *p >= key) {
            return false;
        }
        prev = Some(key);
    }
    true
}

/// The entry at `tree_path` (`a/b/c`), checking each tree on the way is in
/// git's order: `Ok(None)` when it is not there, `Err(why)` for a tree out
/// of order.
fn lookup(
    repo: &Repository,
    tree: &Tree,
    tree_path: &str,
) -> Result<Result<Option<git2::TreeEntry<'static>>, String>, RestoreError> {
    let mut cur = tree.clone();
    let mut shown = "/";
    let parts: Vec<&str> = tree_path.split('/').collect();
    for (i, part) in parts.iter().enumerate() {
        if !in_git_order(&cur) {
            return Ok(Err(format!("`{shown}`: tree entries out of git's order")));
        }
        let Some(e) = cur
            .iter()
            .find(|e| e.name_bytes() == part.as_bytes())
            .map(|e| e.to_owned())
        else {
            return Ok(Ok(None));
        };
        if i + 1 == parts.len() {
            return Ok(Ok(Some(e)));
        }
        if e.kind() != Some(ObjectType::Tree) {
            return Ok(Ok(None));
        }
        cur = repo.find_tree(e.id())?;
        let end = parts[..=i].iter().map(|p| p.len() + 1).sum::<usize>() - 1;
        shown = &tree_path[..end];
    }
    Ok(Ok(None))
}

/// What the walk consults besides the tree.
struct Ctx<'a> {
    modes: &'a HashMap<String, u32>,
    /// `.gitattributes` patterns with `filter=lfs`.
    lfs: &'a std::collections::HashSet<String>,
}

/// A regular file entry: an LFS pointer the `.gitattributes` tracks becomes
/// [`Op::Large`], anything else [`Op::File`].
fn file_op(
    repo: &Repository,
    ctx: &Ctx,
    tree_path: &str,
    path: PathBuf,
    oid: Oid,
    mode: u32,
) -> Result<Op, RestoreError> {
    if pointer::is_lfs_tracked(ctx.lfs, tree_path) {
        let blob = repo.find_blob(oid)?;
        if let Some(p) = Pointer::parse(blob.content()) {
            return Ok(Op::Large {
                path,
                pointer: p,
                mode,
            });
        }
    }
    Ok(Op::File { path, oid, mode })
}

fn walk(
    repo: &Repository,
    tree: &Tree,
    root: &Path,
    rel: &Path,
    tree_prefix: &str,
    ctx: &Ctx,
    out: &mut Plan,
) -> Result<(), RestoreError> {
    let modes = ctx.modes;
    if !in_git_order(tree) {
        out.refused
            .push(format!("`{tree_prefix}`: tree entries out of git's order"));
        return Ok(());
    }
    for entry in tree.iter() {
        let name = entry.name_bytes();
        let shown = format!("{tree_prefix}/{}", String::from_utf8_lossy(name));
        if !plan::safe_entry_name(name) {
            out.refused.push(format!("`{shown}`: unsafe name"));
            continue;
        }
        let name = std::ffi::OsStr::from_bytes(name);
        let child_rel = rel.join(name);
        let path = root.join(&child_rel);
        match (entry.kind(), entry.filemode()) {
            (Some(ObjectType::Tree), _) => {
                let mode = modes.get(&shown).copied().unwrap_or(0o755);
                out.ops.push(Op::Dir {
                    path,
                    mode: plan::safe_mode(mode),
                });
                let sub = repo.find_tree(entry.id())?;
                walk(repo, &sub, root, &child_rel, &shown, ctx, out)?;
            }
            (Some(ObjectType::Blob), 0o120000) => {
                let blob = repo.find_blob(entry.id())?;
                let target = PathBuf::from(std::ffi::OsStr::from_bytes(blob.content()));
                if blob.content().contains(&0) || !plan::symlink_stays_inside(&child_rel, &target) {
                    out.refused.push(format!(
                        "`{shown}`: symlink to `{}` leaves the persisted path",
                        target.display()
                    ));
                } else {
                    out.ops.push(Op::Symlink { path, target });
                }
            }
            (Some(ObjectType::Blob), m) => {
                if name == KEEP_MARKER {
                    continue;
                }
                if plan::is_sqlite_sidecar(name) {
                    out.dropped_sidecars.push(path);
                    continue;
                }
                let mode =
                    modes
                        .get(&shown)
                        .copied()
                        .unwrap_or(if m == 0o100755 { 0o755 } else { 0o644 });
                let target = name.to_str().and_then(OriginalPointer::target_name);
                let original = match target {
                    // The original's pointer file, and no real file beside it.
                    Some(t)
                        if tree.get_name(t).is_none()
                            && entry
                                .to_object(repo)?
                                .as_blob()
                                .is_some_and(|b| b.size() <= 64 * 1024) =>
                    {
                        let blob = repo.find_blob(entry.id())?;
                        OriginalPointer::parse(blob.content()).map(|o| (t, o))
                    }
                    _ => None,
                };
                // The name it stands for comes from the repository too: the
                // same rule as a tree entry's (`...pointer` stands for `..`).
                let original = match original {
                    Some((t, _)) if !plan::safe_entry_name(t.as_bytes()) => {
                        out.refused.push(format!(
                            "`{shown}`: a large-file pointer for `{t}`, an unsafe name"
                        ));
                        continue;
                    }
                    Some((t, o)) => Some((root.join(rel.join(t)), o)),
                    None => None,
                };
                let mode = plan::safe_mode(mode);
                match original {
                    Some((target, (original, pointer))) => out.ops.push(Op::Original {
                        path: target,
                        original: Box::new(original),
                        pointer,
                        file: (path, entry.id(), mode),
                    }),
                    None => out
                        .ops
                        .push(file_op(repo, ctx, &shown, path, entry.id(), mode)?),
                }
            }
            _ => out
                .refused
                .push(format!("`{shown}`: submodules are not restored")),
        }
    }
    Ok(())
}
