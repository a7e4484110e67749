//! `stackctl routes get|set|rm|default|password`: edits of the running
//! gateway's route table and admin password through its admin API. The
//! table is handled as JSON, so fields this version does not know survive
//! a `routes set`.

use std::io::{BufRead, IsTerminal, Write};

use anyhow::{bail, Context, Result};
use serde_json::Value;

use super::print::print_out;
use crate::cli::{RoutesAction, RoutesArgs};
use crate::client::{
    id_from_prefix, prefix_rule, remove, rules_mut, simple_prefix_rule, upsert, Admin,
};
use crate::manifest::Manifest;

/// Runs `stackctl routes get|set|rm|default|password` against the running gateway.
pub fn run(manifest: Option<&Manifest>, args: &RoutesArgs) -> Result<()> {
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
