//! What a restore changes, per requested path: files added, changed and
//! removed, and the bytes it writes (pure; the admin API's dry run and the
//! report of a real restore).
//!
//! The I/O shell gathers the facts ([`Facts`]: what existed on disk before,
//! which entries are directories, snapshot sizes); this module only sorts
//! them. Directories are not counted: a restore makes the directories its
//! files need, and counting those as "added" would only add noise.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

/// The most files listed per path in a dry run (the counts stay exact).
pub const MAX_FILES: usize = 1000;

/// How one entry changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Not on disk: the restore writes it.
    Added,
    /// On disk with other content, type or mode: the restore rewrites it.
    Changed,
    /// Not in the snapshot: the restore deletes it.
    Removed,
}

impl Change {
    /// The word the API uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Change::Added => "added",
            Change::Changed => "changed",
            Change::Removed => "removed",
        }
    }
}

/// What the shell found out before the restore.
#[derive(Debug, Clone, Default)]
pub struct Facts {
    /// Entries that existed on disk (any type).
    pub existed: HashSet<PathBuf>,
    /// Entries that are directories (in the snapshot or on disk).
    pub dirs: HashSet<PathBuf>,
    /// Snapshot sizes of files the restore writes.
    pub sizes: HashMap<PathBuf, u64>,
}

/// The summary of one requested path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathSummary {
    /// The requested path (or persisted root).
    pub path: PathBuf,
    /// Files the restore writes that are not on disk.
    pub added: u64,
    /// Files on disk it rewrites.
    pub changed: u64,
    /// Files and symlinks it deletes.
    pub removed: u64,
    /// Bytes it writes (snapshot sizes of the added and changed files).
    pub bytes: u64,
    /// The entries, at most [`MAX_FILES`].
    pub files: Vec<(PathBuf, Change)>,
    /// More entries changed than `files` holds.
    pub truncated: bool,
}

/// Sort `changes` (entries that differ from the snapshot) and `deletions`
/// (entries the snapshot does not hold) under `roots`, in the order given.
/// An entry below no root is left out (it cannot happen: the restore plans
/// only below the roots).
pub fn summarize(
    roots: &[PathBuf],
    changes: &[PathBuf],
    deletions: &[PathBuf],
    facts: &Facts,
) -> Vec<PathSummary> {
    let mut out: Vec<PathSummary> = roots
        .iter()
        .map(|r| PathSummary {
            path: r.clone(),
            added: 0,
            changed: 0,
            removed: 0,
            bytes: 0,
            files: Vec::new(),
            truncated: false,
        })
        .collect();
    let entries = changes
        .iter()
        .map(|p| {
            let change = if facts.existed.contains(p) {
                Change::Changed
            } else {
                Change::Added
            };
            (p, change)
        })
        .chain(deletions.iter().map(|p| (p, Change::Removed)));
    for (path, change) in entries {
        if facts.dirs.contains(path) {
            continue;
        }
        let Some(s) = out.iter_mut().find(|s| under(path, &s.path)) else {
            continue;
        };
        match change {
            Change::Added => s.added += 1,
            Change::Changed => s.changed += 1,
            Change::Removed => s.removed += 1,
        }
        if change != Change::Removed {
            s.bytes += facts.sizes.get(path).copied().unwrap_or(0);
        }
        if s.files.len() < MAX_FILES {
            s.files.push((path.clone(), change));
        } else {
            s.truncated = true;
        }
    }
    out
}

fn under(path: &Path, root: &Path) -> bool {
    path.starts_with(root)
}

/// The API's JSON for `summaries`; `with_files` for a dry run.
pub fn to_json(summaries: &[PathSummary], with_files: bool) -> Value {
    Value::Array(
        summaries
            .iter()
            .map(|s| {
                let mut v = json!({
                    "path": s.path.display().to_string(),
                    "added": s.added,
                    "changed": s.changed,
                    "removed": s.removed,
                    "bytes": s.bytes,
                });
                if with_files {
                    v["files"] = s
                        .files
                        .iter()
                        .map(
                            |(p, c)| json!({"path": p.display().to_string(), "change": c.as_str()}),
                        )
                        .collect();
                    if s.truncated {
                        v["truncated"] = json!(true);
                    }
                }
                v
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> PathBuf {
        PathBuf::from(s)
    }

    fn facts() -> Facts {
        Facts {
            existed: [p("/data/a/old.txt"), p("/data/a/sub"), p("/data/b/x")]
                .into_iter()
                .collect(),
            dirs: [p("/data/a/sub"), p("/data/a/new-dir")]
                .into_iter()
                .collect(),
            sizes: [(p("/data/a/old.txt"), 10), (p("/data/a/sub/new.txt"), 5)]
                .into_iter()
                .collect(),
        }
    }

    #[test]
    fn entries_are_counted_per_root_and_directories_are_not() {
        let roots = [p("/data/a"), p("/data/b")];
        let changes = [
            p("/data/a/new-dir"),
            p("/data/a/old.txt"),
            p("/data/a/sub/new.txt"),
        ];
        let deletions = [p("/data/a/extra.log"), p("/data/b/x")];
        let got = summarize(&roots, &changes, &deletions, &facts());
        assert_eq!(
            got[0],
            PathSummary {
                path: p("/data/a"),
                added: 1,
                changed: 1,
                removed: 1,
                bytes: 15,
                files: vec![
                    (p("/data/a/old.txt"), Change::Changed),
                    (p("/data/a/sub/new.txt"), Change::Added),
                    (p("/data/a/extra.log"), Change::Removed),
                ],
                truncated: false,
            }
        );
        assert_eq!((got[1].added, got[1].changed, got[1].removed), (0, 0, 1));
        assert_eq!(got[1].bytes, 0, "deleting writes nothing");
    }

    #[test]
    fn a_root_with_nothing_to_do_is_listed_with_zeros() {
        let got = summarize(&[p("/data/c")], &[], &[], &Facts::default());
        assert_eq!(got.len(), 1);
        assert_eq!((got[0].added, got[0].bytes), (0, 0));
        let v = to_json(&got, true);
        assert_eq!(v[0]["files"], json!([]));
        assert!(v[0].get("truncated").is_none());
        assert!(to_json(&got, false)[0].get("files").is_none());
    }

    #[test]
    fn a_long_list_is_cut_but_the_counts_stay_exact() {
        let changes: Vec<PathBuf> = (0..MAX_FILES + 5).map(|i| p(&format!("/d/f{i}"))).collect();
        let got = summarize(&[p("/d")], &changes, &[], &Facts::default());
        assert_eq!(got[0].added, (MAX_FILES + 5) as u64);
        assert_eq!(got[0].files.len(), MAX_FILES);
        assert!(got[0].truncated);
        assert_eq!(to_json(&got, true)[0]["truncated"], json!(true));
    }

    #[test]
    fn a_root_is_not_a_prefix_of_its_sibling() {
        // `/data/a` must not collect `/data/ab/x`.
        let got = summarize(
            &[p("/data/a"), p("/data/ab")],
            &[p("/data/ab/x")],
            &[],
            &Facts::default(),
        );
        assert_eq!((got[0].added, got[1].added), (0, 1));
    }
}
