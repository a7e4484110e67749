//! What a forced restore deletes so the paths become equal to the snapshot
//! (issue 17: `restore --at OLD --force` used to leave newer files behind,
//! and the next backup pushed a mix).
//!
//! Only what a snapshot would hold is a candidate: entries the path's
//! excludes (or stackctl's internal files, or SQLite side files) keep out
//! of snapshots are never deleted, and a directory goes only when
//! everything under it goes. A persisted path the snapshot holds nothing
//! for is left alone (it was probably added to `persist.paths` later).
//! Symlinks are deleted as links, never followed.

use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};

use super::{Op, Plan};
use crate::persist::plan::{FileType, PathRules};
use crate::persist::snapshot::file_type;

/// The entries below the plan's directory roots that the snapshot does not
/// hold and a snapshot would: children before their directory, in name order.
pub fn extras(plan: &Plan, rules: &[PathRules]) -> Vec<PathBuf> {
    let planned: HashSet<&Path> = plan.ops.iter().map(|op| op.path()).collect();
    let mut out = Vec::new();
    for root in &plan.roots {
        let is_dir_root = plan
            .ops
            .iter()
            .any(|op| matches!(op, Op::Dir { path, .. } if path == root));
        let Some(rule) = rules.iter().find(|r| root.starts_with(&r.root)) else {
            continue;
        };
        if !is_dir_root || plan.absent.contains(root) {
            continue;
        }
        let Ok(base) = root.strip_prefix(&rule.root) else {
            continue;
        };
        walk(root, base, rule, &planned, &mut out);
    }
    out
}

/// Collect the extras under `dir` (at `rel` below the rule's root). True
/// when everything under it is collected (so `dir` itself may go).
fn walk(
    dir: &Path,
    rel: &Path,
    rule: &PathRules,
    planned: &HashSet<&Path>,
    out: &mut Vec<PathBuf>,
) -> bool {
    let Ok(entries) = fs::read_dir(dir) else {
        return false;
    };
    let mut names: Vec<_> = entries.flatten().map(|e| e.file_name()).collect();
    names.sort();
    let mut all = true;
    for name in names {
        let path = dir.join(&name);
        let child_rel = rel.join(&name);
        let Ok(meta) = fs::symlink_metadata(&path) else {
            all = false;
            continue;
        };
        let ty = file_type(&meta);
        // Sockets, FIFOs and devices are never snapshotted: not ours to delete.
        if ty == FileType::Other || rule.excluded(&child_rel, ty).is_some() {
            all = false;
            continue;
        }
        let held = planned.contains(path.as_path());
        if ty == FileType::Dir {
            let emptied = walk(&path, &child_rel, rule, planned, out);
            if held || !emptied {
                all = false;
            } else {
                out.push(path);
            }
        } else if held {
            all = false;
        } else {
            out.push(path);
        }
    }
    all
}
