//! `stackctl status`: the running stack's services from its admin API,
//! then its persistence state when the gateway has that API.

use anyhow::{anyhow, Result};
use serde_json::Value;

use super::api::persist_state;
use super::print::{count, print_out, running_line, shorten, time};
use crate::cli::AdminArgs;
use crate::client::{render_status, Admin};
use crate::manifest::Manifest;

/// Runs `stackctl status`: the running stack's services and backup state as a table.
/// Then the persistence state, when the gateway has that API.
pub fn run(manifest: Option<&Manifest>, args: &AdminArgs) -> Result<()> {
    let mut admin = Admin::resolve(manifest, args)?;
    let res = admin.call("GET", "/admin/status", None, None)?;
    let mut value = res.json().ok_or_else(|| {
        anyhow!(
            "the gateway at {} answered /admin/status with something that is not JSON",
            admin.base.display
        )
    })?;
    // The services are shown even when the backup state cannot be read.
    let (persist, problem) = match persist_state(&mut admin) {
        Ok(p) => (p, None),
        Err(e) => (None, Some(e)),
    };
    let mut text = String::new();
    if let Some(p) = &persist {
        if p["enabled"] != Value::Bool(true) {
            // Nothing is restored without persistence: `restored: yes`
            // would claim a restore that never happened.
            if let Value::Object(m) = &mut value {
                m.remove("restored");
            }
        }
    }
    text.push_str(&render_status(&value));
    if let Some(p) = &persist {
        text.push_str(&render_persist(p));
    }
    if let Some(e) = problem {
        text.push_str(&format!("persistence: cannot read its state: {e:#}\n"));
    }
    print_out(text.trim_end())
}

/// The persistence part of `stackctl status`, from `GET /admin/persist`.
/// Written defensively: missing fields are left out, never invented.
pub(super) fn render_persist(v: &Value) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    if v["enabled"] != Value::Bool(true) {
        out.push_str("persistence: off (no `persist:` section in the manifest)\n");
        return out;
    }
    out.push_str("persistence:\n");
    let mut line = |k: &str, text: String| {
        let _ = writeln!(out, "  {k}: {text}");
    };
    if let Some(remote) = v["remote"].as_str() {
        let branch = v["branch"]
            .as_str()
            .map(|b| format!(" (branch {b})"))
            .unwrap_or_default();
        line("remote", format!("{remote}{branch}"));
    }
    let r = &v["restore"];
    if let Some(state) = r["state"].as_str() {
        let snap = r["snapshot"].as_str().map(shorten);
        let text = match (state, snap) {
            ("restored", Some(s)) => format!("from snapshot {s}"),
            ("fresh", _) => "fresh start (the remote had no snapshot)".to_string(),
            ("kept-local", Some(s)) => format!("kept newer local data (remote at {s})"),
            ("restoring", _) => match r["progress"].as_str() {
                Some(p) => format!("restoring: {p}"),
                None => "restoring".to_string(),
            },
            (other, Some(s)) => format!("{other} ({s})"),
            (other, None) => other.to_string(),
        };
        line("restored", text);
    }
    for u in r["unrestored"].as_array().into_iter().flatten() {
        if let Some(u) = u.as_str() {
            line("not restored", u.to_string());
        }
    }
    let last = &v["last_snapshot"];
    match last["id"].as_str() {
        Some(id) => line(
            "last snapshot",
            format!(
                "{} at {} ({} files, {} bytes, {})",
                shorten(id),
                time(&last["time"]),
                count(&last["files"]),
                count(&last["bytes"]),
                if last["pushed"] == Value::Bool(true) {
                    "pushed"
                } else {
                    "queued"
                }
            ),
        ),
        None if last.is_null() => line("last snapshot", "none yet".to_string()),
        None => {}
    }
    if let Some(n) = v["pending"].as_u64().filter(|n| *n > 0) {
        line("pending", format!("{n} snapshot(s) not pushed yet"));
    }
    match (&v["changes"]["dirty"], &v["changes"]["since"]) {
        (Value::Bool(true), since @ Value::String(_)) => line(
            "changes",
            format!("not snapshotted yet, since {}", time(since)),
        ),
        (Value::Bool(true), _) => line("changes", "not snapshotted yet".to_string()),
        (Value::Bool(false), _) => line("changes", "none since the last snapshot".to_string()),
        _ => {}
    }
    let push = &v["last_push"];
    if let Some(id) = push["snapshot"].as_str() {
        let at = if push["time"].is_string() {
            format!(" at {}", time(&push["time"]))
        } else {
            String::new()
        };
        line("last push", format!("{}{at}", shorten(id)));
    }
    if let Some(e) = v["last_error"].as_str() {
        line("last error", e.to_string());
    }
    let lease = &v["lease"];
    if let Some(holder) = lease["holder"].as_str() {
        let mine = if lease["mine"] == Value::Bool(true) {
            " (this stack)"
        } else {
            ""
        };
        let host = lease["host"]
            .as_str()
            .map(|h| format!(" on {h}"))
            .unwrap_or_default();
        let mut times = String::new();
        for key in ["since", "renewed", "expires"] {
            if lease[key].is_string() {
                times.push_str(&format!(", {key} {}", time(&lease[key])));
            }
        }
        line("write lease", format!("{holder}{host}{mine}{times}"));
    }
    let large = &v["large_files"];
    if let Some(store) = large["store"].as_str() {
        line(
            "large files",
            format!(
                "{} files, {} bytes in {store}",
                count(&large["files"]),
                count(&large["bytes"])
            ),
        );
    }
    let next = &v["next_snapshot"];
    if next["time"].is_string() {
        let why = next["reason"]
            .as_str()
            .map(|r| format!(" ({r})"))
            .unwrap_or_default();
        line("next snapshot", format!("{}{why}", time(&next["time"])));
    }
    let conflicts: Vec<&str> = v["conflicts"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    if !conflicts.is_empty() {
        line("conflicts", conflicts.join(", "));
    }
    if let Some(running) = running_line(&v["running"]) {
        let since = if v["running"]["started"].is_string() {
            format!(" (since {})", time(&v["running"]["started"]))
        } else {
            String::new()
        };
        line("running", format!("{running}{since}"));
    }
    out
}
