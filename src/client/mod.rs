//! `stackctl routes …` and `stackctl status`: a small blocking client for the
//! running gateway's admin API (see the spec's admin API table).
//!
//! These commands send one or two requests and exit, so they use reqwest's
//! blocking client (no async runtime of their own to start). Route tables
//! are handled as JSON values, so fields this version does not know survive
//! a `routes set`.
//!
//! - [`http`]: the transport: the base URL, one request, errors that say
//!   what to check (also used by [`crate::cmd::restore`]).
//! - [`admin`]: the admin API with its password sources.
//! - [`table`]: route table edits and the status table (pure).

mod admin;
mod http;
mod table;
#[cfg(test)]
pub(crate) mod tests;

use std::io::{BufRead, IsTerminal, Write};

use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value;

use crate::cli::{AdminArgs, RoutesAction, RoutesArgs};
use crate::manifest::Manifest;

pub(crate) use admin::Admin;
#[cfg(test)]
pub(crate) use admin::Source;
pub(crate) use http::Response;
use table::{
    id_from_prefix, prefix_rule, remove, render_status, rules_mut, simple_prefix_rule, upsert,
};

/// Runs `stackctl routes get|set|rm|default|password` against the running gateway.
pub fn routes(manifest: Option<&Manifest>, args: &RoutesArgs) -> Result<()> {
    let mut admin = Admin::resolve(manifest, &args.admin)?;
    match &args.action {
        RoutesAction::Get => {
            let (table, _) = admin.table()?;
            let text =
                serde_json::to_string_pretty(&table).context("cannot print the route table")?;
            print_out(&text)
        }
        RoutesAction::Set {
            prefix,
            backend,
            strip_prefix,
            priority,
            id,
        } => {
            if !prefix.starts_with('/') {
                bail!("the prefix `{prefix}` must start with `/`, e.g. `/gemini/`");
            }
            let mut done = None;
            admin.modify(|table| {
                let rules = rules_mut(table)?;
                let id = id
                    .clone()
                    .or_else(|| simple_prefix_rule(rules, prefix))
                    .unwrap_or_else(|| id_from_prefix(prefix));
                let rule = prefix_rule(&id, prefix, backend, *strip_prefix, *priority);
                let replaced = upsert(rules, rule);
                done = Some((id, replaced));
                Ok(())
            })?;
            if let Some((id, replaced)) = done {
                let verb = if replaced { "replaced" } else { "added" };
                let strip = if *strip_prefix {
                    " (prefix stripped)"
                } else {
                    ""
                };
                print_out(&format!("{verb} route `{id}`: {prefix} → {backend}{strip}"))?;
            }
            Ok(())
        }
        RoutesAction::Rm { id_or_prefix } => {
            let mut removed = String::new();
            admin.modify(|table| {
                removed = remove(rules_mut(table)?, id_or_prefix)?;
                Ok(())
            })?;
            print_out(&format!("removed route `{removed}`"))
        }
        RoutesAction::Default { backend } => {
            admin.modify(|table| {
                if let Value::Object(map) = table {
                    map.insert("default_backend".into(), Value::String(backend.clone()));
                }
                Ok(())
            })?;
            print_out(&format!("default backend is now {backend}"))
        }
        RoutesAction::Password { new } => {
            let new = match new {
                Some(p) => p.clone(),
                None => read_new_password()?,
            };
            if new.is_empty() {
                bail!("no new password given: type it on stdin or pass --new");
            }
            // The gateway refuses it too; saying so here spares a round trip
            // and names the flag.
            if let Some(problem) = crate::gateway::auth::password_problem(&new) {
                bail!("the new password {problem}");
            }
            let note = admin.change_password(&new)?;
            print_out(&format!("admin password changed{note}"))
        }
    }
}

/// Runs `stackctl status`: the running stack's services and backup state as a table.
/// Then the persistence state, when the gateway has that API.
pub fn status(manifest: Option<&Manifest>, args: &AdminArgs) -> Result<()> {
    let mut admin = Admin::resolve(manifest, args)?;
    let res = admin.call("GET", "/admin/status", None, None)?;
    let mut value = res.json().ok_or_else(|| {
        anyhow!(
            "the gateway at {} answered /admin/status with something that is not JSON",
            admin.base.display
        )
    })?;
    // The services are shown even when the backup state cannot be read.
    let (persist, problem) = match crate::cmd::restore::persist_state(&mut admin) {
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
        text.push_str(&crate::cmd::restore::render_persist(p));
    }
    if let Some(e) = problem {
        text.push_str(&format!("persistence: cannot read its state: {e:#}\n"));
    }
    print_out(text.trim_end())
}

/// Writes a line to stdout; a closed pipe (`stackctl routes get | head`) is not an error.
pub(crate) fn print_out(text: &str) -> Result<()> {
    let mut out = std::io::stdout().lock();
    match writeln!(out, "{text}").and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(e).context("cannot write to stdout")
        }
        _ => Ok(()),
    }
}

fn read_new_password() -> Result<String> {
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        eprint!("new admin password (at least 10 characters; it is echoed): ");
        // The prompt is a courtesy; failing to flush it changes nothing.
        let _ = std::io::stderr().flush();
    }
    let mut line = String::new();
    stdin
        .lock()
        .read_line(&mut line)
        .context("cannot read the new password from stdin")?;
    Ok(line.trim_end_matches(['\r', '\n']).to_string())
}
