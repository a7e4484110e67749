//! `stackctl backup`: through the running `up` when there is one, on its
//! own otherwise, or with `--url` through a stack's admin API.

use anyhow::{anyhow, bail, Result};
use serde_json::{json, Value};

use super::api::{enabled_state, post};
use super::local::{ask, open, persist, restored_here};
use super::print::print_report;
use super::progress::ProgressView;
use super::{with_admin, with_manifest};
use crate::cli::{AdminArgs, Cli, RemoteArgs};
use crate::client::Admin;
use crate::control;
use crate::manifest::{Manifest, ManifestError};
use crate::persist::{RestoreOptions, RestoreState};

/// Runs `stackctl backup`; returns the exit code.
pub fn run(cli: &Cli, m: Result<Manifest, ManifestError>, args: &RemoteArgs) -> u8 {
    match &args.url {
        Some(_) => with_admin(cli, m, &args.url, |m| remote(m, &args.admin())),
        None => with_manifest(m, local),
    }
}

/// `stackctl backup` on this machine.
pub fn local(m: &Manifest) -> Result<()> {
    let p = persist(m)?;
    // Through the running `up`, its progress shows as a backup without it
    // does; the view goes (its bars cleared) before the report is printed.
    let view = ProgressView::new();
    let answer = ask(p, "backup", Some(&mut |e| view.apply("backup", e)))?;
    drop(view);
    if let Some(v) = answer {
        print_report(&v["report"]);
        return Ok(());
    }
    // No `up` runs: do it here, but never push over the remote from a
    // workdir that has not seen it (that is how a fresh container would
    // overwrite a good backup with empty data, or roll newer local files
    // back to the remote's). Opened first: it records a restore that an
    // earlier version completed.
    let view = ProgressView::new();
    let persister = open(p)?.with_progress_sink(view.clone());
    if !restored_here(p) {
        bail!(
            "no `stackctl up` is running and workdir `{}` has never restored: run `stackctl restore` first (or `stackctl up`)",
            p.workdir.display()
        );
    }
    let restored = persister
        .restore_with_progress(
            &RestoreOptions {
                keep_newer_local: true,
                ..RestoreOptions::default()
            },
            &|pr| view.show(pr),
        )
        .map_err(|e| anyhow!("{e}"))?;
    for (path, why) in &restored.applied.failed {
        eprintln!("warning: not restored: {}: {why}", path.display());
    }
    if restored.state != RestoreState::ConfirmedEmpty && !restored.changes.is_empty() {
        eprintln!(
            "restored {} newer file(s) from the remote before the snapshot",
            restored.changes.len()
        );
    }
    let report = persister.snapshot_and_push_with_progress(&|pr| view.show(pr));
    // A one-shot command gives the lease up at once: a container starting
    // next (a wiped disk, a new instance) must not wait for it to expire.
    if let Err(e) = persister.release_lease() {
        eprintln!(
            "warning: cannot release the write lease ({e}); the next writer waits for it to expire"
        );
    }
    let report = report.map_err(|e| anyhow!("{e}"))?;
    // The persister holds the view too: both go before the report is
    // printed, so the bars are cleared first.
    drop(persister);
    drop(view);
    print_report(&control::report_json(&report));
    if report.commit.is_some() && report.pushed.is_none() && report.parked.is_none() {
        bail!("the snapshot was taken but not pushed; it is queued in the workdir and goes out with the next backup");
    }
    Ok(())
}

/// `stackctl backup --url`.
pub fn remote(manifest: Option<&Manifest>, args: &AdminArgs) -> Result<()> {
    let mut admin = Admin::resolve(manifest, args)?;
    enabled_state(&mut admin)?;
    let answer = post(
        &mut admin,
        "/admin/persist/backup",
        &json!({}),
        "backup",
        true,
    )?;
    print_report(&backup_report(&answer));
    Ok(())
}

/// The API's backup answer in the shape `backup` prints
/// ([`crate::control::report_json`]).
pub(super) fn backup_report(answer: &Value) -> Value {
    let snap = &answer["snapshot"];
    match snap["id"].as_str() {
        Some(id) if answer["unchanged"] != Value::Bool(true) => json!({
            "commit": id,
            "files": snap["files"],
            "bytes": snap["bytes"],
            // `pushed` holds the pushed commit locally; any string says so.
            "pushed": if snap["pushed"] == Value::Bool(true) { json!(id) } else { Value::Null },
        }),
        _ => json!({ "commit": null }),
    }
}
