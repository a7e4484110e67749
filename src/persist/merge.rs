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
//! [`decide`] and [`demote`] are pure; the git and file I/O is at the bottom.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use git2::{ObjectType, Oid, Repository, Tree, TreeWalkMode, TreeWalkResult};

use super::plan::{self, KEEP_MARKER, META_DIR};
use super::pointer::{self, Pointer};
use super::PersistError;

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

// ---- git I/O ----

/// Can `path` name a file in a tree (no empty, `.`, `..` or `.git` part)?
/// Another writer's tree is repository content: a name that is not is
/// left out of the merge.
fn valid_path(path: &str) -> bool {
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
fn their_files(
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
fn merged_tree(
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
fn live_holds(repo: &Repository, abs: &Path, ours: Option<&Entry>) -> bool {
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
    pub(super) fn merge_onto(
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
    pub(super) fn merge_in(
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
        let ours_tag = super::merge::tag(tip);
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
    pub(super) fn record_conflicts(&self, conflicts: &[PathBuf]) {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn e(n: u8) -> Entry {
        Entry {
            oid: Oid::from_bytes(&[n; 20]).unwrap(),
            mode: 0o100644,
        }
    }

    fn files(list: &[(&str, u8)]) -> Files {
        list.iter().map(|(p, n)| (p.to_string(), e(*n))).collect()
    }

    fn take(p: &str, n: Option<u8>) -> Action {
        Action::Take {
            path: p.into(),
            theirs: n.map(e),
        }
    }

    fn conflict(p: &str, n: u8) -> Action {
        Action::Conflict {
            path: p.into(),
            copy: format!("{p}.conflict-abc"),
            theirs: e(n),
        }
    }

    #[test]
    fn each_file_is_decided_against_the_base() {
        let base = files(&[("d/same", 1), ("d/theirs", 1), ("d/both", 1), ("d/del", 1)]);
        // `base` with files set to new contents and others removed.
        let edit = |set: &[(&str, u8)], del: &[&str]| {
            let mut f = base.clone();
            f.extend(files(set));
            f.retain(|p, _| !del.contains(&p.as_str()));
            f
        };
        let table: &[(&str, Files, Files, Vec<Action>)] = &[
            ("nothing moved", edit(&[], &[]), edit(&[], &[]), vec![]),
            (
                "only theirs changed a file: theirs",
                edit(&[], &[]),
                edit(&[("d/theirs", 2)], &[]),
                vec![take("d/theirs", Some(2))],
            ),
            (
                "only ours changed: ours",
                edit(&[("d/same", 3)], &[]),
                edit(&[], &[]),
                vec![],
            ),
            (
                "both changed differently: ours stays, theirs beside it",
                edit(&[("d/both", 3)], &[]),
                edit(&[("d/both", 4)], &[]),
                vec![conflict("d/both", 4)],
            ),
            (
                "both made the same change: nothing to do",
                edit(&[("d/both", 5)], &[]),
                edit(&[("d/both", 5)], &[]),
                vec![],
            ),
            (
                "they added a file and deleted an unchanged one",
                edit(&[], &[]),
                edit(&[("d/new", 9)], &["d/del"]),
                vec![take("d/del", None), take("d/new", Some(9))],
            ),
            (
                "they deleted what we changed: ours stays",
                edit(&[("d/del", 7)], &[]),
                edit(&[], &["d/del"]),
                vec![],
            ),
            (
                "we deleted what they changed: their change comes back",
                edit(&[], &["d/del"]),
                edit(&[("d/del", 8)], &[]),
                vec![take("d/del", Some(8))],
            ),
        ];
        for (what, ours, theirs, want) in table {
            assert_eq!(&decide(&base, ours, theirs, "abc", None), want, "{what}");
        }
    }

    #[test]
    fn without_a_base_only_files_both_hold_differently_conflict() {
        let ours = files(&[("a", 1), ("b", 2), ("c", 3)]);
        let theirs = files(&[("b", 2), ("c", 4), ("d", 5)]);
        assert_eq!(
            decide(&Files::new(), &ours, &theirs, "abc", None),
            vec![conflict("c", 4), take("d", Some(5))]
        );
    }

    #[test]
    fn names_a_tree_cannot_hold_are_left_out() {
        for (p, ok) in [
            ("a/b", true),
            ("a/../b", false),
            ("..", false),
            ("a/.git/x", false),
            ("a//b", false),
            (".stackctl/modes", true),
        ] {
            assert_eq!(valid_path(p), ok, "{p}");
        }
    }

    #[test]
    fn files_outside_their_persisted_paths_are_not_their_deletions() {
        let base = files(&[("a/x", 1), ("b/y", 1), ("bb/z", 1)]);
        let theirs = files(&[("a/x", 2)]);
        let paths = ["a".to_string(), "b".to_string()];
        let view = their_view(&theirs, &base, Some(&paths));
        assert_eq!(view, files(&[("a/x", 2), ("bb/z", 1)]));
        // `b/y` they persist and deleted; `bb/z` they never saw.
        assert_eq!(
            decide(&base, &base, &view, "abc", None),
            vec![take("a/x", Some(2)), take("b/y", None)]
        );
        assert_eq!(their_view(&theirs, &base, None), theirs);
    }

    #[test]
    fn derived_files_are_not_merged_and_clashing_names_go_beside() {
        let base = files(&[(".stackctl/modes", 1), ("x/f", 1)]);
        let ours = files(&[(".stackctl/modes", 2), ("x/f", 1), ("x/dir/inner", 1)]);
        let theirs = files(&[
            (".stackctl/modes", 3),
            (".gitattributes", 3),
            ("x/f", 1),
            ("x/dir", 6),
        ]);
        assert_eq!(
            decide(&base, &ours, &theirs, "abc", None),
            vec![conflict("x/dir", 6)]
        );
    }

    #[test]
    fn a_changed_live_file_turns_a_take_into_a_conflict_copy() {
        assert_eq!(demote(take("a", Some(2)), "abc"), Some(conflict("a", 2)));
        assert_eq!(demote(take("a", None), "abc"), None);
        assert_eq!(demote(conflict("a", 2), "abc"), Some(conflict("a", 2)));
        let merged = apply(
            &files(&[("a", 1), ("b", 1)]),
            &[conflict("a", 2), take("b", None), take("c", Some(3))],
        );
        assert_eq!(merged, files(&[("a", 1), ("a.conflict-abc", 2), ("c", 3)]));
    }

    #[test]
    fn a_newer_snapshot_of_theirs_takes_the_name_and_ours_goes_beside_it() {
        let base = files(&[("a", 1), ("b", 1)]);
        let ours = files(&[("a", 2), ("b", 1)]);
        let theirs = files(&[("a", 3), ("b", 4)]);
        let got = decide(&base, &ours, &theirs, "abc", Some("def"));
        let newer = Action::Newer {
            path: "a".into(),
            copy: "a.conflict-def".into(),
            ours: e(2),
            theirs: e(3),
        };
        assert_eq!(got, vec![newer.clone(), take("b", Some(4))]);
        assert_eq!(
            apply(&ours, &got),
            files(&[("a", 3), ("a.conflict-def", 2), ("b", 4)])
        );
        assert_eq!(
            modes("0644 a\n", "0600 a\n", &theirs, &got),
            "0600 a\n0644 a.conflict-def\n"
        );
        // A live file changed since our snapshot keeps the name after all.
        assert_eq!(demote(newer, "abc"), Some(conflict("a", 3)));
    }

    #[test]
    fn modes_follow_the_files_taken_from_their_side() {
        let ours = "0755 d\n0644 d/a\n0600 d/gone\n";
        let theirs = "0755 d\n0700 d/a\n0640 d/new\n0750 d/sub\n0644 d/sub/x\n";
        let their_files = files(&[("d/a", 2), ("d/new", 3), ("d/sub/x", 4)]);
        let actions = [
            conflict("d/a", 2),
            take("d/gone", None),
            take("d/new", Some(3)),
        ];
        assert_eq!(
            modes(ours, theirs, &their_files, &actions),
            "0755 d\n0644 d/a\n0700 d/a.conflict-abc\n0640 d/new\n0750 d/sub\n"
        );
    }

    #[test]
    fn gitattributes_keep_both_sides_lines_and_track_conflict_copies() {
        let ours = "# written by stackctl\n/a filter=lfs diff=lfs merge=lfs -text\n";
        let theirs = "# x\nbig filter=lfs diff=lfs merge=lfs -text\n/a filter=lfs diff=lfs merge=lfs -text\n";
        let got = gitattributes(Some(ours), Some(theirs), &[conflict("big", 1)]).unwrap();
        assert_eq!(
            got,
            "# written by stackctl\n\
             /a filter=lfs diff=lfs merge=lfs -text\n\
             /big.conflict-abc filter=lfs diff=lfs merge=lfs -text\n\
             big filter=lfs diff=lfs merge=lfs -text\n"
        );
        assert_eq!(gitattributes(None, None, &[]), None);
    }
}
