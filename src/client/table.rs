//! The pure parts: edits of a route table (as JSON, so fields this version
//! does not know survive) and the human view of `GET /admin/status`.

use std::fmt::Write as _;

use anyhow::{anyhow, bail, Result};
use serde_json::{json, Map, Value};

/// The table's `rules` list (created if absent).
pub(crate) fn rules_mut(table: &mut Value) -> Result<&mut Vec<Value>> {
    let map = table.as_object_mut().ok_or_else(|| {
        anyhow!("unexpected answer from the gateway: the route table is not an object")
    })?;
    match map
        .entry("rules")
        .or_insert_with(|| Value::Array(Vec::new()))
    {
        Value::Array(rules) => Ok(rules),
        _ => bail!("unexpected answer from the gateway: `rules` is not a list"),
    }
}

/// What `POST /admin/routes.json` gets: the rules and, if set, the default backend.
pub(super) fn post_body(table: &Value) -> Value {
    let mut body = Map::new();
    body.insert(
        "rules".into(),
        table
            .get("rules")
            .cloned()
            .unwrap_or_else(|| Value::Array(Vec::new())),
    );
    if let Some(Value::String(d)) = table.get("default_backend") {
        if !d.is_empty() {
            body.insert("default_backend".into(), Value::String(d.clone()));
        }
    }
    Value::Object(body)
}

/// The id `routes set` gives a prefix: `/gemini/` → `gemini`, `/api/ws/` → `api-ws`, `/` → `root`.
pub(crate) fn id_from_prefix(prefix: &str) -> String {
    let mut id = String::new();
    for c in prefix.chars().flat_map(char::to_lowercase) {
        if c.is_ascii_alphanumeric() {
            id.push(c);
        } else if !id.is_empty() && !id.ends_with('-') {
            id.push('-');
        }
    }
    let id = id.trim_end_matches('-');
    if id.is_empty() {
        "root".to_string()
    } else {
        id.to_string()
    }
}

/// The id of an existing plain prefix rule for `prefix` (only a `path_prefix`
/// condition, proxying), so `routes set` replaces it rather than adding a twin.
pub(crate) fn simple_prefix_rule(rules: &[Value], prefix: &str) -> Option<String> {
    rules.iter().find_map(|r| {
        let m = r.get("match")?.as_object()?;
        let proxy = r.get("action").and_then(Value::as_str).unwrap_or("proxy") == "proxy";
        let only_prefix =
            m.len() == 1 && m.get("path_prefix").and_then(Value::as_str) == Some(prefix);
        if proxy && only_prefix {
            r.get("id").and_then(Value::as_str).map(str::to_string)
        } else {
            None
        }
    })
}

/// A proxy rule for a path prefix, without empty fields.
pub(crate) fn prefix_rule(
    id: &str,
    prefix: &str,
    backend: &str,
    strip_prefix: bool,
    priority: i64,
) -> Value {
    let mut rule = json!({
        "id": id,
        "priority": priority,
        "action": "proxy",
        "backend": backend,
        "match": { "path_prefix": prefix },
    });
    if strip_prefix {
        rule["strip_prefix"] = Value::Bool(true);
    }
    rule
}

/// Put `rule` in place of the rule with its id (keeping its position), or
/// append it; true when it replaced one.
pub(crate) fn upsert(rules: &mut Vec<Value>, rule: Value) -> bool {
    let id = rule.get("id").cloned();
    match rules.iter_mut().find(|r| r.get("id") == id.as_ref()) {
        Some(slot) => {
            *slot = rule;
            true
        }
        None => {
            rules.push(rule);
            false
        }
    }
}

/// Remove the rule with id `key`, or else the one rule whose path prefix is
/// `key`; returns the removed rule's id.
pub(crate) fn remove(rules: &mut Vec<Value>, key: &str) -> Result<String> {
    let id_of = |r: &Value| {
        r.get("id")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    if let Some(i) = rules
        .iter()
        .position(|r| r.get("id").and_then(Value::as_str) == Some(key))
    {
        rules.remove(i);
        return Ok(key.to_string());
    }
    let by_prefix: Vec<usize> = rules
        .iter()
        .enumerate()
        .filter(|(_, r)| r.pointer("/match/path_prefix").and_then(Value::as_str) == Some(key))
        .map(|(i, _)| i)
        .collect();
    match by_prefix.as_slice() {
        [i] => Ok(id_of(&rules.remove(*i))),
        [] => {
            if rules.is_empty() {
                bail!("no rule has the id or path prefix `{key}`: the table has no rules");
            }
            let ids: Vec<String> = rules.iter().map(|r| format!("`{}`", id_of(r))).collect();
            bail!(
                "no rule has the id or path prefix `{key}`; the ids are {}",
                ids.join(", ")
            );
        }
        several => {
            let ids: Vec<String> = several
                .iter()
                .map(|i| format!("`{}`", id_of(&rules[*i])))
                .collect();
            bail!(
                "several rules have the path prefix `{key}` ({}); remove one by its id",
                ids.join(", ")
            );
        }
    }
}

// ---------------------------------------------------------------- status rendering (pure)

/// The human view of `GET /admin/status`: a service table, then the rest.
/// Written defensively: unknown or missing fields are shown as they come.
pub(crate) fn render_status(status: &Value) -> String {
    let mut out = String::new();
    let mut rows = vec![["SERVICE", "PHASE", "PID", "RESTARTS", "LAST EXIT"].map(String::from)];
    let mut services: Vec<(String, &Value)> = match status.get("services") {
        Some(Value::Object(map)) => map.iter().map(|(k, v)| (k.clone(), v)).collect(),
        Some(Value::Array(list)) => list.iter().map(|v| (scalar(v.get("name")), v)).collect(),
        _ => Vec::new(),
    };
    services.sort_by(|a, b| a.0.cmp(&b.0));
    for (name, s) in &services {
        rows.push([
            name.clone(),
            scalar(s.get("phase")),
            scalar(s.get("pid")),
            scalar(s.get("restarts")),
            scalar(s.get("last_exit")),
        ]);
    }
    if services.is_empty() {
        out.push_str("no services\n");
    } else {
        let widths: Vec<usize> = (0..5)
            .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
            .collect();
        for row in &rows {
            let mut line = String::new();
            for (c, cell) in row.iter().enumerate() {
                if c + 1 == row.len() {
                    line.push_str(cell);
                } else {
                    let _ = write!(line, "{cell:<w$}  ", w = widths[c]);
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
    }
    out.push('\n');
    if let Some(restored) = status.get("restored") {
        let text = match restored {
            Value::Bool(true) => "yes".to_string(),
            Value::Bool(false) => "not yet".to_string(),
            other => scalar(Some(other)),
        };
        let _ = writeln!(out, "restored: {text}");
    }
    if let Some(obj) = status.as_object() {
        for (key, value) in obj {
            if matches!(key.as_str(), "services" | "restored" | "backup") || value.is_null() {
                continue;
            }
            render_field(&mut out, key, value);
        }
    }
    match status.get("backup") {
        None | Some(Value::Null) => out.push_str("backup: not configured\n"),
        Some(b) => render_field(&mut out, "backup", b),
    }
    out
}

fn render_field(out: &mut String, key: &str, value: &Value) {
    match value {
        Value::Object(map) if !map.is_empty() => {
            let _ = writeln!(out, "{key}:");
            for (k, v) in map {
                let _ = writeln!(out, "  {k}: {}", scalar(Some(v)));
            }
        }
        other => {
            let _ = writeln!(out, "{key}: {}", scalar(Some(other)));
        }
    }
}

/// One JSON value as a table cell: strings bare, absent/null as `-`.
fn scalar(v: Option<&Value>) -> String {
    match v {
        None | Some(Value::Null) => "-".to_string(),
        Some(Value::String(s)) if s.is_empty() => "-".to_string(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}
