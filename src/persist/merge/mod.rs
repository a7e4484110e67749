//! Merge per file when the remote branch moved under us (issue 17 item 2):
//! another writer (an old container still draining, a pending snapshot of
//! an instance that had no lease) pushed changes after the snapshot we grew
//! from. Replaying our full trees on top would drop them, so every file is
//! decided against the common base, like a three-way merge:
//!
//! - changed only on their side (added, modified, deleted): theirs;
//! - changed only on ours, or the same on both: ours;
//! - changed on both sides: ours stays at its name and theirs is saved
//!   beside it as `<name>.conflict-<snapshot>` (the first 12 hex digits of
//!   their snapshot, as `stackctl snapshots` shows it); a change wins over a
//!   deletion, so nothing a snapshot holds is lost. When folding in a
//!   pending snapshot newer than ours, the newer version takes the name and
//!   ours goes beside it instead (newest wins, both kept).
//!
//! What the merge takes from their side is also written to the live files
//! (as syncthing does): the next snapshot is built from the live files, so
//! a merged tree the live directory does not match would be undone one
//! snapshot later. A live file is only replaced while it still holds what
//! our snapshot recorded; one that changed since (or a database, which is
//! snapshotted through SQLite's backup API) is left alone and their version
//! goes beside it as a conflict copy instead.
//!
//! [`decide`] and [`demote`] are pure (this file); the I/O is beside it:
//!
//! - [`tree`]: snapshot trees as [`Files`] and back (git I/O).
//! - [`live`]: [`Merged`], and the persister's side: merge onto a moved
//!   remote head, write what is taken to the live files, record conflicts.

mod live;
#[cfg(test)]
mod tests;
mod tree;

pub use live::Merged;
pub use tree::{files, write_tree};

use std::collections::{BTreeMap, BTreeSet};

use git2::Oid;

use super::plan::{self, META_DIR};
use super::pointer;
// The steps beside this file name these through `super::`, as they did
// when they were part of it.
use super::{blob, is_ancestor, lock, restore, snapshot, Persister};

/// A file of a snapshot tree: its blob and git file mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    /// The blob.
    pub oid: Oid,
    /// `0o100644`, `0o100755` or `0o120000`.
    pub mode: i32,
}

/// Every file of a tree, by tree path.
pub type Files = BTreeMap<String, Entry>;

/// What the merge does to one path (paths it does not name keep ours).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Only their side changed `path`: take their version (`None`: they deleted it).
    Take {
        /// The tree path.
        path: String,
        /// Their entry.
        theirs: Option<Entry>,
    },
    /// Both sides changed `path`: ours stays, theirs is saved at `copy`.
    Conflict {
        /// The tree path.
        path: String,
        /// Where their version goes.
        copy: String,
        /// Their entry.
        theirs: Entry,
    },
    /// Both sides changed `path` and theirs is newer: theirs takes the
    /// name, ours is saved at `copy`.
    Newer {
        /// The tree path.
        path: String,
        /// Where our version goes.
        copy: String,
        /// Our entry.
        ours: Entry,
        /// Their entry.
        theirs: Entry,
    },
}

impl Action {
    /// The conflict copy this action makes, if any.
    fn copy(&self) -> Option<&str> {
        match self {
            Action::Conflict { copy, .. } | Action::Newer { copy, .. } => Some(copy),
            Action::Take { .. } => None,
        }
    }
}

/// `<name>.conflict-<tag>`.
pub fn conflict_name(path: &str, tag: &str) -> String {
    format!("{path}.conflict-{tag}")
}

/// The tag of a conflict copy: the snapshot's id as `stackctl snapshots` shows it.
pub fn tag(snapshot: Oid) -> String {
    snapshot.to_string()[..12].to_string()
}

/// Files stackctl derives at every snapshot (`.stackctl/`, `.gitattributes`,
/// `.lfsconfig`): not merged file by file.
fn is_derived(path: &str) -> bool {
    path.starts_with(&format!("{META_DIR}/")) || path == ".gitattributes" || path == ".lfsconfig"
}

/// Decide every path that differs between `ours` and `theirs`, given the
/// common `base` (empty when there is none: then every file both sides hold
/// differently is a conflict). `tag` names the copies of their files;
/// `newer` (our snapshot's tag) says their snapshot is the newer one, so
/// on a conflict theirs takes the name and ours goes beside it.
pub fn decide(
    base: &Files,
    ours: &Files,
    theirs: &Files,
    tag: &str,
    newer: Option<&str>,
) -> Vec<Action> {
    let paths: BTreeSet<&String> = ours.keys().chain(theirs.keys()).collect();
    let mut out = Vec::new();
    for path in paths {
        if is_derived(path) {
            continue;
        }
        let (b, o, t) = (base.get(path), ours.get(path), theirs.get(path));
        if o == t || t == b {
            continue;
        }
        let take = Action::Take {
            path: path.clone(),
            theirs: t.copied(),
        };
        out.push(match (o, t) {
            // Ours unchanged since the base, or deleted while they changed
            // it (a change wins over a deletion).
            _ if o == b => take,
            (None, Some(_)) => take,
            // They deleted what we changed: ours stays.
            (Some(_), None) => continue,
            (Some(o), Some(t)) if newer.is_some() => Action::Newer {
                path: path.clone(),
                copy: conflict_name(path, newer.unwrap_or_default()),
                ours: *o,
                theirs: *t,
            },
            (_, Some(t)) => Action::Conflict {
                path: path.clone(),
                copy: conflict_name(path, tag),
                theirs: *t,
            },
            (None, None) => continue,
        });
    }
    // A file of theirs where ours has a directory (or the reverse) cannot
    // take the name: it goes beside it, as a conflict copy.
    for a in &mut out {
        if let Action::Take {
            path,
            theirs: Some(t),
        } = a
        {
            if clashes(ours, path) {
                *a = Action::Conflict {
                    copy: conflict_name(path, tag),
                    path: path.clone(),
                    theirs: *t,
                };
            }
        }
    }
    out.retain(|a| !a.copy().is_some_and(|c| clashes(ours, c)));
    out
}

/// Would a file at `path` collide with a directory of `files`, or sit below one of its files?
fn clashes(files: &Files, path: &str) -> bool {
    let dir = format!("{path}/");
    let below = files
        .range(dir.clone()..)
        .next()
        .is_some_and(|(k, _)| k.starts_with(&dir));
    let mut above = false;
    let mut at = path;
    while let Some((parent, _)) = at.rsplit_once('/') {
        above |= files.contains_key(parent);
        at = parent;
    }
    below || above
}

/// `theirs` as far as it speaks: a file of `base` outside the paths their
/// side persists (`.stackctl/paths`: another configuration on the same
/// branch) is absent from their snapshot because they never looked, not
/// because they deleted it; it counts as unchanged. `None`: no record, every
/// path counts.
pub fn their_view(theirs: &Files, base: &Files, paths: Option<&[String]>) -> Files {
    let Some(paths) = paths else {
        return theirs.clone();
    };
    let owned = |p: &str| {
        paths.iter().any(|r| {
            p == r
                || p.strip_prefix(r.as_str())
                    .is_some_and(|x| x.starts_with('/'))
        })
    };
    let mut out = theirs.clone();
    for (p, e) in base {
        if !is_derived(p) && !owned(p) {
            out.entry(p.clone()).or_insert(*e);
        }
    }
    out
}

/// `action` for a live file that no longer holds what our snapshot
/// recorded: their version may not replace it. A take becomes a conflict
/// copy beside it; a deletion is dropped (the live file stays, and so does
/// ours in the tree).
pub fn demote(action: Action, tag: &str) -> Option<Action> {
    match action {
        Action::Take {
            path,
            theirs: Some(t),
        } => Some(Action::Conflict {
            copy: conflict_name(&path, tag),
            path,
            theirs: t,
        }),
        Action::Take { theirs: None, .. } => None,
        Action::Newer { path, theirs, .. } => Some(Action::Conflict {
            copy: conflict_name(&path, tag),
            path,
            theirs,
        }),
        c @ Action::Conflict { .. } => Some(c),
    }
}

/// `ours` with `actions` applied.
pub fn apply(ours: &Files, actions: &[Action]) -> Files {
    let mut out = ours.clone();
    for a in actions {
        match a {
            Action::Take {
                path,
                theirs: Some(t),
            } => {
                out.insert(path.clone(), *t);
            }
            Action::Take { path, theirs: None } => {
                out.remove(path);
            }
            Action::Conflict { copy, theirs, .. } => {
                out.insert(copy.clone(), *theirs);
            }
            Action::Newer {
                path,
                copy,
                ours,
                theirs,
            } => {
                out.insert(path.clone(), *theirs);
                out.insert(copy.clone(), *ours);
            }
        }
    }
    out
}

/// The merged `.gitattributes`: every LFS line of either side (a line for a
/// file the merged tree does not hold is harmless), plus one for each
/// conflict copy of a file its side tracks. `None` when neither has any.
pub fn gitattributes(
    ours: Option<&str>,
    theirs: Option<&str>,
    actions: &[Action],
) -> Option<String> {
    let patterns = |side: Option<&str>| side.map(pointer::lfs_patterns).unwrap_or_default();
    let (ours_patterns, theirs_patterns) = (patterns(ours), patterns(theirs));
    let mut lines: BTreeSet<String> = [ours, theirs]
        .into_iter()
        .flatten()
        .flat_map(str::lines)
        .filter(|l| !l.trim_start().starts_with('#') && l.contains("filter=lfs"))
        .map(|l| format!("{}\n", l.trim_end()))
        .collect();
    for a in actions {
        let (path, copy, side) = match a {
            Action::Conflict { path, copy, .. } => (path, copy, &theirs_patterns),
            Action::Newer { path, copy, .. } => (path, copy, &ours_patterns),
            Action::Take { .. } => continue,
        };
        if pointer::is_lfs_tracked(side, path) {
            lines.insert(format!(
                "{} {}\n",
                pointer::attribute_pattern(copy),
                pointer::LFS_ATTRIBUTES
            ));
        }
    }
    if lines.is_empty() {
        return None;
    }
    let ours_head = ours.and_then(|o| o.lines().next().filter(|l| l.starts_with('#')));
    let mut out = ours_head.map(|h| format!("{h}\n")).unwrap_or_default();
    out.extend(lines);
    Some(out)
}

/// The merged `.stackctl/modes`: ours, with their modes for what the merge
/// takes from them (a conflict copy gets the mode of the file it copies),
/// and their directories ours does not know.
pub fn modes(ours: &str, theirs: &str, their_files: &Files, actions: &[Action]) -> String {
    let theirs = plan::parse_modes(theirs);
    let ours = plan::parse_modes(ours);
    let mut out = ours.clone();
    for a in actions {
        match a {
            Action::Newer { path, copy, .. } => {
                if let Some(m) = theirs.get(path) {
                    out.insert(path.clone(), *m);
                }
                if let Some(m) = ours.get(path) {
                    out.insert(copy.clone(), *m);
                }
            }
            Action::Take { path, theirs: None } => {
                out.remove(path);
            }
            Action::Take { path, .. } | Action::Conflict { path, .. } => {
                let target = match a {
                    Action::Conflict { copy, .. } => copy,
                    _ => path,
                };
                if let Some(m) = theirs.get(path) {
                    out.insert(target.clone(), *m);
                }
            }
        }
    }
    for (path, m) in &theirs {
        if !their_files.contains_key(path) {
            out.entry(path.clone()).or_insert(*m);
        }
    }
    let list: Vec<(String, u32)> = out.into_iter().collect();
    plan::render_modes(&list)
}
