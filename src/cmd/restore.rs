//! `stackctl restore`: on its own when no `up` runs; through the running
//! `up`'s control socket when one does (it owns the workdir); with `--url`
//! through a stack's admin API, for a stack that has no shell (a Space, a
//! free container host; issue 14). The last two restore the same way: a
//! dry run lists what would change; a real restore needs `--force` or the
//! snapshot id typed at a terminal, and the stack snapshots its current
//! data first (the undo point it reports).

use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Result};
use serde_json::{json, Value};

use super::api::{enabled_state, post, refusal, Place};
use super::local::{ask_up, open, persist, restored_here};
use super::print::{print_plan, print_restored, shorten};
use super::progress::ProgressView;
use super::snapshots::list_snapshots;
use super::{with_admin, with_manifest};
use crate::cli::{Cli, RestoreArgs};
use crate::client::Admin;
use crate::control;
use crate::manifest::{Manifest, ManifestError};
use crate::persist::{RestoreOptions, RestoreState};

/// Runs `stackctl restore`; returns the exit code.
pub fn run(cli: &Cli, m: Result<Manifest, ManifestError>, args: &RestoreArgs) -> u8 {
    match &args.remote.url {
        Some(_) => with_admin(cli, m, &args.remote.url, |m| remote(m, args)),
        None => with_manifest(m, |m| local(m, args)),
    }
}

/// `stackctl restore` on this machine.
pub fn local(m: &Manifest, args: &RestoreArgs) -> Result<()> {
    let p = persist(m)?;
    if control::request(&p.workdir, "snapshots")
        .ok()
        .flatten()
        .is_some()
    {
        // The running `up` owns the workdir: it restores as the admin API
        // does (undo snapshot first, the services using the paths stopped).
        return through_up(&p.workdir, args);
    }
    let view = ProgressView::new();
    let persister = open(p)?.with_progress_sink(view.clone());
    let mut opts = RestoreOptions {
        dry_run: args.dry_run,
        at: args.at.clone(),
        paths: args.paths.clone(),
        force: args.force,
        keep_newer_local: false,
    };
    // A workdir that has never seen these files cannot tell newer local data
    // from old: look first, and ask for --force before overwriting.
    if !args.force && !args.dry_run && !restored_here(p) {
        opts.dry_run = true;
        let plan = persister.restore(&opts).map_err(|e| anyhow!("{e}"))?;
        let clobbered: Vec<_> = plan.changes.iter().filter(|c| c.exists()).collect();
        if !clobbered.is_empty() {
            let list: Vec<String> = clobbered
                .iter()
                .take(10)
                .map(|c| format!("  {}", c.display()))
                .collect();
            bail!(
                "{} local file(s) differ from the snapshot and this workdir has no record of them:\n{}\npass --force to overwrite them, or --dry-run to list all",
                clobbered.len(),
                list.join("\n")
            );
        }
        opts.dry_run = false;
    }
    let report = persister
        .restore_with_progress(&opts, &|pr| view.show(pr))
        .map_err(|e| anyhow!("{e}"))?;
    drop(persister);
    drop(view);
    if args.dry_run {
        let with = if args.force { "" } else { " (with --force)" };
        print_plan(&report.deletions, &report.changes, with);
        return Ok(());
    }
    for d in &report.deletions {
        println!("deleted {} (not in the snapshot)", d.display());
    }
    match report.state {
        RestoreState::ConfirmedEmpty => {
            println!("the remote has no snapshot yet: nothing to restore")
        }
        RestoreState::Restored(oid) | RestoreState::KeptLocal(oid) => {
            print_restored(&oid.to_string(), report.applied.files, report.applied.bytes)
        }
        RestoreState::Pending => {}
    }
    for a in &report.absent {
        println!("note: the snapshot has nothing for {}", a.display());
    }
    unrestored(&report.applied.failed)
}

/// Name every large file a restore left absent; an error if there is one.
fn unrestored(failed: &[(PathBuf, String)]) -> Result<()> {
    for (path, why) in failed {
        eprintln!("not restored: {}: {why}", path.display());
    }
    if !failed.is_empty() {
        bail!(
            "{} large file(s) could not be restored (their blob is missing or corrupt in the store); everything else was restored. Check `persist.large_files`, or restore an older snapshot",
            failed.len()
        );
    }
    Ok(())
}

/// `stackctl restore --url`: a dry run lists what would change; a real
/// restore needs `--force` or the snapshot id typed at a terminal, and
/// the stack snapshots its current data first (the undo point it reports).
pub fn remote(manifest: Option<&Manifest>, args: &RestoreArgs) -> Result<()> {
    let mut admin = Admin::resolve(manifest, &args.remote.admin())?;
    enabled_state(&mut admin)?;
    restore_via(Via::Api(admin), args)
}

/// `stackctl restore` while `stackctl up` runs on `workdir`: the same
/// restore as [`remote`], through the control socket instead of the
/// admin API (no password: the socket is this user's alone).
fn through_up(workdir: &Path, args: &RestoreArgs) -> Result<()> {
    restore_via(Via::Up(workdir.to_path_buf()), args)
}

/// How a restore reaches the stack.
enum Via {
    /// The admin API (`--url`, or the manifest's gateway).
    Api(Admin),
    /// The control socket of the `up` on this machine's workdir.
    Up(PathBuf),
}

impl Via {
    fn place(&self) -> Place<'_> {
        match self {
            Via::Api(admin) => Place::Url(&admin.base.display),
            Via::Up(_) => Place::Local,
        }
    }

    /// The newest snapshot's id (`None`: there is none).
    fn newest(&mut self) -> Result<Option<String>> {
        let list = match self {
            Via::Api(admin) => list_snapshots(admin, 1)?,
            Via::Up(workdir) => match ask_up(workdir, "snapshots", None)? {
                Ok(v) => v["snapshots"].as_array().cloned().unwrap_or_default(),
                Err((status, said)) => {
                    return Err(refusal(&Place::Local, status, &said, "restore"))
                }
            },
        };
        Ok(list
            .first()
            .map(|s| s["id"].as_str().unwrap_or_default().to_string()))
    }

    /// `POST /admin/persist/restore` with `body` (or the socket's
    /// `restore <body>`); `long`: a real restore, which may take minutes.
    /// Through the socket, the progress of a dry run (fetching the
    /// snapshot may take long too) and of a restore is shown meanwhile.
    fn restore(&mut self, body: &Value, long: bool) -> Result<Value> {
        match self {
            Via::Api(admin) => post(admin, "/admin/persist/restore", body, "restore", long),
            Via::Up(workdir) => {
                let cmd = format!("restore {body}");
                let answer = {
                    // Dropped before the result is printed: the bars go.
                    let view = ProgressView::new();
                    ask_up(workdir, &cmd, Some(&mut |u| view.apply("restore", u)))?
                };
                match answer {
                    Ok(v) => Ok(v["result"].clone()),
                    Err((status, said)) => Err(refusal(&Place::Local, status, &said, "restore")),
                }
            }
        }
    }
}

/// The restore of [`remote`] and [`through_up`].
fn restore_via(mut via: Via, args: &RestoreArgs) -> Result<()> {
    let at = match &args.at {
        Some(at) => at.clone(),
        None => match via.newest()? {
            Some(id) => id,
            None => {
                println!("the remote has no snapshot yet: nothing to restore");
                return Ok(());
            }
        },
    };
    let mut body = json!({ "at": at });
    if !args.paths.is_empty() {
        // The API takes absolute paths; on this machine a relative one
        // means what it means here.
        let absolute = |p: &PathBuf| match &via {
            Via::Up(_) => std::path::absolute(p).unwrap_or_else(|_| p.clone()),
            Via::Api(_) => p.clone(),
        };
        body["paths"] = json!(args
            .paths
            .iter()
            .map(|p| absolute(p).to_string_lossy().into_owned())
            .collect::<Vec<_>>());
    }

    if args.dry_run || !args.force {
        body["dry_run"] = json!(true);
        let plan = via.restore(&body, false)?;
        let (deletions, changes, cut) = plan_lists(&plan);
        // Through the API a restore always makes the paths equal to the
        // snapshot (like `restore --force`): deletions are not optional.
        print_plan(&deletions, &changes, "");
        for note in cut {
            println!("{note}");
        }
        if args.dry_run {
            return Ok(());
        }
        let full = plan["at"].as_str().unwrap_or(&at).to_string();
        confirm(&via.place(), &at, &full)?;
        body["dry_run"] = json!(false);
    }
    body["confirm"] = json!(at);

    let done = via.restore(&body, true)?;
    let place = via.place();
    for line in restored_lines(&done, &place) {
        println!("{line}");
    }
    let (files, bytes) = totals(&done["paths"]);
    print_restored(done["at"].as_str().unwrap_or(&at), files, bytes);
    if let Some(undo) = done["undo"].as_str() {
        println!(
            "undo: stackctl restore{} --at {} --force",
            place.flag(),
            shorten(undo)
        );
    }
    Ok(())
}

/// The dry run's files as the local plan lists them (deletions, the rest),
/// and a note for every path whose list the server cut.
pub(super) fn plan_lists(plan: &Value) -> (Vec<PathBuf>, Vec<PathBuf>, Vec<String>) {
    let (mut deletions, mut changes, mut cut) = (Vec::new(), Vec::new(), Vec::new());
    for p in plan["paths"].as_array().into_iter().flatten() {
        for f in p["files"].as_array().into_iter().flatten() {
            let Some(path) = f["path"].as_str() else {
                continue;
            };
            match f["change"].as_str() {
                Some("removed") => deletions.push(PathBuf::from(path)),
                _ => changes.push(PathBuf::from(path)),
            }
        }
        if p["truncated"] == Value::Bool(true) {
            cut.push(format!(
                "… the list for {} is cut: {} added, {} changed, {} removed in all",
                p["path"].as_str().unwrap_or("?"),
                p["added"],
                p["changed"],
                p["removed"]
            ));
        }
    }
    (deletions, changes, cut)
}

/// Files written (added + changed) and bytes over every path's summary.
pub(super) fn totals(paths: &Value) -> (u64, u64) {
    let mut files = 0u64;
    let mut bytes = 0u64;
    for p in paths.as_array().into_iter().flatten() {
        let n = |k: &str| p[k].as_u64().unwrap_or(0);
        files = files
            .saturating_add(n("added"))
            .saturating_add(n("changed"));
        bytes = bytes.saturating_add(n("bytes"));
    }
    (files, bytes)
}

/// What a real restore did besides writing files: deletions per path and
/// the services it stopped and started again.
pub(super) fn restored_lines(done: &Value, place: &Place) -> Vec<String> {
    let mut lines = Vec::new();
    for p in done["paths"].as_array().into_iter().flatten() {
        let removed = p["removed"].as_u64().unwrap_or(0);
        if removed > 0 {
            lines.push(format!(
                "deleted {removed} file(s) under {} (not in the snapshot)",
                p["path"].as_str().unwrap_or("?")
            ));
        }
    }
    let names = |k: &str| -> Vec<String> {
        done[k]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| s.as_str().map(str::to_string))
            .collect()
    };
    let (stopped, restarted) = (names("stopped"), names("restarted"));
    if !stopped.is_empty() {
        lines.push(format!("stopped: {}", stopped.join(", ")));
    }
    if !restarted.is_empty() {
        lines.push(format!("started again: {}", restarted.join(", ")));
    }
    let missing: Vec<&String> = stopped.iter().filter(|s| !restarted.contains(s)).collect();
    if !missing.is_empty() {
        let list: Vec<&str> = missing.iter().map(|s| s.as_str()).collect();
        lines.push(format!(
            "warning: not running again: {} (see `stackctl status{}`)",
            list.join(", "),
            place.flag()
        ));
    }
    lines
}

/// A real restore through the API overwrites live data: `--force`, or the
/// snapshot id typed at a terminal.
fn confirm(place: &Place, at: &str, full: &str) -> Result<()> {
    let url = place.name();
    let short = shorten(full);
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        bail!(
            "restoring {short} on {url} replaces the data above (the stack snapshots its current data first, so it can be undone): pass --force to do it"
        );
    }
    eprint!("the stack snapshots its current data first (the undo point). Type the snapshot id `{short}` to restore it: ");
    // The prompt is a courtesy; failing to flush it changes nothing.
    let _ = std::io::stderr().flush();
    let mut line = String::new();
    stdin.lock().read_line(&mut line)?;
    let typed = line.trim();
    if typed.is_empty() || !(full.starts_with(typed) && typed.len() >= 7 || typed == at) {
        bail!("not confirmed: nothing was restored (type the id shown, or pass --force)");
    }
    Ok(())
}
