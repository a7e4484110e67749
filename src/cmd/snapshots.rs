//! `stackctl snapshots`: the list through the running `up` when there is
//! one, from the remote otherwise, or with `--url` from a stack's admin
//! API (every page).

use anyhow::{anyhow, bail, Result};
use serde_json::Value;

use super::api::failure;
use super::local::{ask, open, persist};
use super::print::{print_snapshot_table, shorten};
use super::{with_admin, with_manifest};
use crate::cli::{AdminArgs, Cli, RemoteArgs};
use crate::client::Admin;
use crate::control;
use crate::manifest::{Manifest, ManifestError};
use crate::persist::RestoreOptions;

/// Runs `stackctl snapshots`; returns the exit code.
pub fn run(cli: &Cli, m: Result<Manifest, ManifestError>, args: &RemoteArgs) -> u8 {
    match &args.url {
        Some(_) => with_admin(cli, m, &args.url, |m| remote(m, &args.admin())),
        None => with_manifest(m, local),
    }
}

/// The most snapshots `snapshots` lists (local or `--url`).
const LIST_MAX: usize = 1000;
/// One page of the list (the API's maximum).
const PAGE: usize = 500;

/// `stackctl snapshots` on this machine.
pub fn local(m: &Manifest) -> Result<()> {
    let p = persist(m)?;
    let mut pending = Vec::new();
    let list = match ask(p, "snapshots", None)? {
        Some(v) => v["snapshots"].clone(),
        None => {
            let persister = open(p)?;
            // A dry-run restore fetches the branch without writing anything.
            persister
                .restore(&RestoreOptions {
                    dry_run: true,
                    ..RestoreOptions::default()
                })
                .map_err(|e| anyhow!("{e}"))?;
            let list = persister
                .list_snapshots(LIST_MAX)
                .map_err(|e| anyhow!("{e}"))?;
            pending = persister.pending_snapshots().map_err(|e| anyhow!("{e}"))?;
            control::snapshots_json(&list)
        }
    };
    let list = list.as_array().cloned().unwrap_or_default();
    print_pending(&pending);
    print_snapshot_table(&list);
    Ok(())
}

/// `stackctl snapshots --url`: every page, newest first, up to [`LIST_MAX`].
pub fn remote(manifest: Option<&Manifest>, args: &AdminArgs) -> Result<()> {
    let mut admin = Admin::resolve(manifest, args)?;
    let list = list_snapshots(&mut admin, LIST_MAX)?;
    print_snapshot_table(&list);
    Ok(())
}

/// Up to `max` snapshots from the admin API, newest first.
pub(super) fn list_snapshots(admin: &mut Admin, max: usize) -> Result<Vec<Value>> {
    let mut list: Vec<Value> = Vec::new();
    let mut after: Option<String> = None;
    while list.len() < max {
        let limit = PAGE.min(max - list.len());
        let path = match &after {
            Some(a) => format!("/admin/persist/snapshots?limit={limit}&after={}", query(a)),
            None => format!("/admin/persist/snapshots?limit={limit}"),
        };
        let res = admin.request("GET", &path, None, None)?;
        if res.status != 200 {
            return Err(failure(admin, &res, "snapshots"));
        }
        let page = res.json().unwrap_or(Value::Null);
        let Some(items) = page["snapshots"].as_array() else {
            bail!(
                "the gateway at {} answered the snapshot list with something that is not one",
                admin.base.display
            );
        };
        list.extend(items.iter().take(max - list.len()).cloned());
        match page["next"].as_str() {
            // A cursor that does not move would loop for ever.
            Some(n) if !items.is_empty() && after.as_deref() != Some(n) => {
                after = Some(n.to_string())
            }
            _ => break,
        }
    }
    Ok(list)
}

/// A query value: ids and dates are hex, digits and a few marks; anything
/// else is percent-encoded.
pub(super) fn query(v: &str) -> String {
    let mut out = String::new();
    for b in v.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b':') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Snapshots parked in `refs/stackctl/pending/*` (instance, commit, time).
fn print_pending(pending: &[(String, git2::Oid, i64)]) {
    if pending.is_empty() {
        return;
    }
    println!("pending (taken while another stackctl held the write lease; it folds them into the branch at its next push, and a restore takes newer ones into account):");
    for (instance, oid, time) in pending {
        println!(
            "  {}  {}  from `{instance}`",
            shorten(&oid.to_string()),
            crate::persist::snapshot::format_utc(*time)
        );
    }
}
