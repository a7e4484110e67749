//! Restoring: fetch the branch and write a snapshot back in place, which
//! opens the restore gate; and `restore --at`, which names an older snapshot
//! by id or date.

use std::fs;
use std::path::PathBuf;

use git2::{Oid, Repository};

use super::super::git::ref_oid;
use super::super::progress::{self, Transfer};
use super::super::remote::{Depth, RemoteHead};
use super::super::restore::{self, RestoreError};
use super::super::{
    plan, snapshot, PersistError, Progress, RestoreOptions, RestoreReport, RestoreState, Stage,
};
use super::{lock, Persister};

impl Persister {
    /// Fetch the branch and write its files in place. An absent branch is
    /// "confirmed empty". Opens the gate on success (not on a dry run).
    pub fn restore(&self, opts: &RestoreOptions) -> Result<RestoreReport, PersistError> {
        self.restore_with_progress(opts, &|_| {})
    }

    /// [`Persister::restore`], telling `progress` how the fetch and the
    /// writing go.
    pub fn restore_with_progress(
        &self,
        opts: &RestoreOptions,
        progress: &dyn Fn(Progress),
    ) -> Result<RestoreReport, PersistError> {
        let repo = lock(&self.repo);
        let depth = if opts.at.is_some() {
            Depth::Full
        } else {
            self.fetch_depth()
        };
        let fetch_progress = |done: usize, total: usize| {
            progress(Progress {
                stage: Stage::Fetching,
                done: done as u64,
                total: total as u64,
            })
        };
        let mut failed = 0;
        let head = self.retry(|| {
            // Not "fetching" while the remote cannot be reached (issue 17).
            if failed > 0 {
                progress(Progress {
                    stage: Stage::Waiting,
                    done: failed,
                    total: 0,
                });
            }
            failed += 1;
            self.remote
                .fetch_with_progress(&repo, depth, &fetch_progress)
        })?;
        let head = match head {
            RemoteHead::Missing if opts.at.is_some() => {
                return Err(PersistError::NoSuchSnapshot(
                    opts.at.clone().unwrap_or_default(),
                ))
            }
            RemoteHead::Missing => {
                if !opts.dry_run {
                    *lock(&self.state) = RestoreState::ConfirmedEmpty;
                    self.write_readiness()?;
                }
                tracing::info!(remote = %self.remote.url(), "persist remote has no snapshot yet: nothing to restore");
                return Ok(RestoreReport {
                    state: RestoreState::ConfirmedEmpty,
                    applied: restore::Applied::default(),
                    absent: self.cfg.paths.iter().map(|p| p.path.clone()).collect(),
                    ops: Vec::new(),
                    changes: Vec::new(),
                    deletions: Vec::new(),
                });
            }
            RemoteHead::At(oid) => oid,
        };
        // The newest state: pending snapshots parked after the head (their
        // writer had no lease, its holder stopped before folding them) too.
        let folded = match &opts.at {
            None if !opts.dry_run => self.pending_onto(&repo, head)?,
            _ => None,
        };
        let target = match &opts.at {
            Some(at) => resolve_at(&repo, head, at)?,
            None => folded.unwrap_or(head),
        };
        // First: a path that is not persisted is the answer, whatever the local data.
        let paths = self.restore_paths(&opts.paths)?;
        if !opts.force && !opts.dry_run {
            match self.refuse_newer_local_data(&repo) {
                Err(PersistError::LocalNewer { snapshot }) if opts.keep_newer_local => {
                    // The local data grew from a snapshot this workdir knows:
                    // it is the newest state; keep it and push it next.
                    let known = Oid::from_str(&snapshot)?;
                    *lock(&self.state) = RestoreState::KeptLocal(known);
                    self.write_readiness()?;
                    tracing::warn!(snapshot = %known, "local data is newer than the last snapshot: kept, not restored");
                    return Ok(RestoreReport {
                        state: RestoreState::KeptLocal(known),
                        applied: restore::Applied::default(),
                        absent: Vec::new(),
                        ops: Vec::new(),
                        changes: Vec::new(),
                        deletions: Vec::new(),
                    });
                }
                other => other?,
            }
        }
        let tree = repo.find_commit(target)?.tree()?;
        let mut plan = restore::plan(&repo, &tree, &paths)?;
        if !plan.refused.is_empty() {
            return Err(RestoreError::Unsafe(plan.refused).into());
        }
        if opts.force || opts.dry_run {
            plan.prune = restore::prune::extras(&plan, &self.rules);
        }
        let mut cache = lock(&self.cache);
        let (applied, changes) = if opts.dry_run {
            let changes = restore::changes(&repo, &plan, &mut cache)?;
            (restore::Applied::default(), changes)
        } else {
            // Only a forced restore deletes (a dry run only lists).
            if !opts.force {
                plan.prune.clear();
            }
            let (count, total) = plan.large_files();
            let transfer = Transfer::new("restore", total, count);
            let blobs = restore::Blobs {
                store: self.blobs.as_deref(),
                retry: self.blob_retry(),
                transfer: Some(&transfer),
            };
            let mut apply = || restore::apply(&repo, &plan, &blobs, &mut cache, progress);
            let applied = if count > 0 {
                progress::watch(&transfer, &*self.sink, apply)?
            } else {
                apply()?
            };
            let changes = applied.changed.clone();
            if opts.paths.is_empty() {
                self.saw_large(count as u64, total);
            }
            lock(&self.status).unrestored = applied
                .failed
                .iter()
                .map(|(p, why)| format!("{}: {why}", p.display()))
                .collect();
            (applied, changes)
        };
        // Only now (after `apply` synced what it wrote): the entries for the
        // restored files may be trusted by the next start too.
        self.save_cache(&cache);
        drop(cache);
        if !opts.dry_run {
            // Later snapshots build on the remote head, even after restoring
            // an older snapshot: history is never rewritten.
            repo.reference(
                &self.remote.branch_ref(),
                folded.unwrap_or(head),
                true,
                "stackctl restore",
            )?;
            *lock(&self.state) = RestoreState::Restored(target);
            self.write_readiness()?;
            // Not "restore finished": under `up` that line means the
            // snapshot loop watches the paths (see `lifecycle`), which it
            // does not yet here.
            tracing::info!(commit = %target, files = applied.files, bytes = applied.bytes,
                unchanged = applied.unchanged, "persisted paths restored");
        }
        let deletions = if opts.dry_run {
            plan.prune
        } else {
            applied.deleted.clone()
        };
        Ok(RestoreReport {
            state: RestoreState::Restored(target),
            applied,
            absent: plan.absent,
            ops: plan.ops,
            changes,
            deletions,
        })
    }

    /// (absolute path, tree path) to restore: all persisted paths, or the
    /// requested ones, each of which must be a persisted path or below one.
    fn restore_paths(&self, wanted: &[PathBuf]) -> Result<Vec<(PathBuf, String)>, PersistError> {
        if wanted.is_empty() {
            return Ok(self
                .rules
                .iter()
                .map(|r| (r.root.clone(), r.tree.clone()))
                .collect());
        }
        wanted
            .iter()
            .map(|w| {
                if !self.rules.iter().any(|r| w.starts_with(&r.root)) {
                    return Err(PersistError::NotPersisted(w.clone()));
                }
                Ok((w.clone(), plan::tree_path(w)?))
            })
            .collect()
    }

    /// Refuse when the live data holds changes made after the last snapshot
    /// this workdir knows: the live tree differs from it *and* some file is
    /// newer than it. (Data that was wiped or never snapshotted is fine.)
    fn refuse_newer_local_data(&self, repo: &Repository) -> Result<(), PersistError> {
        let Some(known) = ref_oid(repo, &self.remote.branch_ref())? else {
            return Ok(());
        };
        let known = repo.find_commit(known)?;
        let mut cache = lock(&self.cache);
        let tmp = self.cfg.workdir.join("tmp");
        let built = self
            .tree_builder(repo, &tmp, &mut cache)
            .build(&self.rules)?;
        // Only the tree matters here: nothing is uploaded.
        snapshot::remove_copies(&built);
        if built.tree == Some(known.tree_id()) {
            return Ok(());
        }
        let newest = built.newest_mtime;
        // Commit times have one-second resolution: the same second counts as newer.
        if newest.is_some_and(|t| t >= known.time().seconds()) {
            return Err(PersistError::LocalNewer {
                snapshot: known.id().to_string(),
            });
        }
        Ok(())
    }

    /// Called once a restore completed (the state is set): the workdir's
    /// own record of it first, then the readiness file.
    fn write_readiness(&self) -> Result<(), PersistError> {
        restore::marker::write(&self.cfg.workdir, &self.status().restore).map_err(|e| {
            PersistError::Workdir {
                path: self.cfg.workdir.clone(),
                message: format!("cannot record the restore: {e}"),
            }
        })?;
        let Some(path) = &self.cfg.readiness_file else {
            return Ok(());
        };
        let err = |source| PersistError::Readiness {
            path: path.clone(),
            source,
        };
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).map_err(err)?;
        }
        fs::write(path, b"restored\n").map_err(err)
    }
}

/// The snapshot `at` names, searching first parents from `head`: a commit id
/// (or unique prefix), or a UTC date for the newest snapshot at or before it.
fn resolve_at(repo: &Repository, head: Oid, at: &str) -> Result<Oid, PersistError> {
    let missing = || PersistError::NoSuchSnapshot(at.to_string());
    if let Some(limit) = parse_date(at) {
        let mut next = Some(repo.find_commit(head)?);
        while let Some(c) = next.take() {
            if c.time().seconds() <= limit {
                return Ok(c.id());
            }
            next = c.parent(0).ok();
        }
        return Err(missing());
    }
    if at.len() < 4 || !at.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(missing());
    }
    let obj = repo.revparse_single(at).map_err(|_| missing())?;
    let commit = obj.peel_to_commit().map_err(|_| missing())?;
    // Only snapshots of this branch: no arbitrary objects of the repository.
    if commit.id() == head || repo.graph_descendant_of(head, commit.id()).unwrap_or(false) {
        Ok(commit.id())
    } else {
        Err(missing())
    }
}

/// `YYYY-mm-dd`, `YYYY-mm-dd HH:MM`, `YYYY-mm-ddTHH:MM:SS` (UTC, optional `Z`)
/// → seconds since the epoch (a bare date means its last second).
pub fn parse_date(s: &str) -> Option<i64> {
    read_date(s).ok()
}

/// [`parse_date`], saying what is wrong: `2026-02-31` is an error, not
/// 3 March (issue 12 item 7).
pub fn read_date(s: &str) -> Result<i64, String> {
    const FORM: &str =
        "give a date like `2026-01-31`, `2026-01-31 12:00` or `2026-01-31T12:00:00Z` (UTC)";
    let bad = || format!("`{s}` is not a date: {FORM}");
    let s = s.trim().trim_end_matches('Z').trim_end_matches(" UTC");
    let (date, time) = match s.split_once([' ', 'T']) {
        Some((d, t)) => (d, Some(t)),
        None => (s, None),
    };
    let num = |p: Option<&str>| -> Result<i64, String> {
        match p {
            Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => {
                p.parse().map_err(|_| bad())
            }
            _ => Err(bad()),
        }
    };
    let mut d = date.split('-');
    let (y, m, day) = (num(d.next())?, num(d.next())?, num(d.next())?);
    if d.next().is_some() || date.len() != 10 {
        return Err(bad());
    }
    if !(1..=12).contains(&m) {
        return Err(format!("`{s}`: there is no month {m}; {FORM}"));
    }
    let leap = y % 4 == 0 && (y % 100 != 0 || y % 400 == 0);
    let month_days = match m {
        2 if leap => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    };
    if !(1..=month_days).contains(&day) {
        return Err(format!(
            "`{s}` is not a date: month {m} of {y} has {month_days} days"
        ));
    }
    let (hh, mm, ss) = match time {
        None => (23, 59, 59),
        Some(t) => {
            let mut p = t.split(':');
            let hh = num(p.next())?;
            let mm = num(p.next())?;
            let ss = match p.next() {
                Some(x) => num(Some(x))?,
                None => 0,
            };
            if p.next().is_some() || hh > 23 || mm > 59 || ss > 60 {
                return Err(format!(
                    "`{s}`: `{t}` is not a time of day (HH:MM or HH:MM:SS)"
                ));
            }
            (hh, mm, ss)
        }
    };
    // Days from civil (Howard Hinnant).
    let y2 = if m <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Ok(days * 86_400 + hh * 3600 + mm * 60 + ss)
}

/// `restore --at`: a snapshot id (hex, at least 4 digits) or a date that
/// [`read_date`] accepts; anything else is a usage error (exit 2) before
/// any work starts.
pub fn at_arg(s: &str) -> Result<String, String> {
    let t = s.trim();
    if t.len() >= 4 && t.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Ok(t.to_string());
    }
    read_date(t)
        .map(|_| t.to_string())
        .map_err(|e| format!("{e}; or give a snapshot id from `stackctl snapshots`"))
}
