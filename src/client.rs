//! `stackctl routes …` and `stackctl status`: a small blocking client for the
//! running gateway's admin API (see the spec's admin API table).
//!
//! These commands send one or two requests and exit, so they use a tiny
//! HTTP/1.1 client over [`std::net::TcpStream`] (one request per connection,
//! `Connection: close`, timeouts on connect and I/O) instead of starting an
//! async runtime. Route tables are handled as JSON values, so fields this
//! version does not know survive a `routes set`.

use std::fmt::Write as _;
use std::io::{BufRead, BufReader, IsTerminal, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use serde_json::{json, Map, Value};

use crate::cli::{AdminArgs, RoutesAction, RoutesArgs};
use crate::manifest::Manifest;

/// Connecting to the gateway on loopback is instant when it runs.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Reading or writing one request; the admin API answers from memory (the
/// password check is a deliberately slow hash, still well under this).
const IO_TIMEOUT: Duration = Duration::from_secs(15);
/// Admin answers are small; anything bigger is not the admin API.
const MAX_BODY: usize = 16 << 20;
const MAX_HEAD_LINE: usize = 16 << 10;
/// Header (or trailer) lines accepted in one answer.
const MAX_HEADERS: usize = 100;
/// Interim (1xx) answers skipped before the final one.
const MAX_INTERIM: usize = 10;
/// Attempts of a read-modify-write when someone else changes the table meanwhile (412).
const STALE_ATTEMPTS: usize = 3;

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
    let (persist, problem) = match crate::recovery_client::persist_state(&mut admin) {
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
        text.push_str(&crate::recovery_client::render_persist(p));
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

// ---------------------------------------------------------------- the admin connection

/// Where the admin password came from, to say what to fix when it is wrong
/// and whether a password change should update the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Source {
    /// `--password` or `$STACKCTL_ADMIN_PASSWORD`.
    Flag,
    /// The password file `up` wrote.
    File(PathBuf),
    /// `gateway.admin.password` in the manifest.
    Manifest,
}

/// The running gateway's admin API, with the credentials to use it.
#[derive(Debug, Clone)]
pub(crate) struct Admin {
    pub(crate) base: BaseUrl,
    /// Passwords to try, best first; a 403 moves on to the next one (at most
    /// the password file and then the manifest's password).
    candidates: Vec<(String, Source)>,
    /// The password file named in hints.
    password_file: Option<PathBuf>,
    /// Bounds each read and write of a call (a backup answers when pushed:
    /// see [`Admin::with_timeout`]).
    timeout: Duration,
}

impl Admin {
    /// The gateway `args` name, with its password. `manifest` is `None`
    /// only with `--url` and no manifest on this machine.
    pub(crate) fn resolve(manifest: Option<&Manifest>, args: &AdminArgs) -> Result<Admin> {
        let gateway = manifest.and_then(|m| m.gateway.as_ref());
        let base = match (&args.url, manifest) {
            (Some(url), _) => BaseUrl::parse(url)?,
            (None, Some(m)) => match gateway {
                Some(g) => BaseUrl::from_listen(g.listen),
                None => bail!(
                    "`{}` has no `gateway:` section, so there is no admin API to talk to; pass --url to reach a gateway elsewhere",
                    m.file.display()
                ),
            },
            (None, None) => bail!("no manifest and no --url: pass --url to reach a gateway"),
        };
        let password_file = gateway.map(|g| g.admin.password_file.clone());
        let mut candidates = Vec::new();
        if let Some(p) = args.password.as_deref().filter(|p| !p.is_empty()) {
            candidates.push((p.to_string(), Source::Flag));
        } else {
            // The file of earlier versions, until `up` has moved it.
            let legacy = gateway.and_then(|g| g.admin.legacy_password_file.clone());
            for file in password_file.iter().chain(legacy.iter()) {
                if let Some(p) = read_password_file(file)? {
                    candidates.push((p, Source::File(file.clone())));
                    break;
                }
            }
            if let Some(p) = gateway
                .and_then(|g| g.admin.password.clone())
                .filter(|p| !p.is_empty())
            {
                if !candidates.iter().any(|(c, _)| *c == p) {
                    candidates.push((p, Source::Manifest));
                }
            }
        }
        if candidates.is_empty() {
            let file = match &password_file {
                Some(f) => format!(
                    ", or start `stackctl up` once so it writes `{}`",
                    f.display()
                ),
                None => String::new(),
            };
            bail!("no admin password: pass --password or set STACKCTL_ADMIN_PASSWORD{file}");
        }
        Ok(Admin {
            base,
            candidates,
            password_file,
            timeout: IO_TIMEOUT,
        })
    }

    /// The same gateway with each read and write bounded by `timeout`.
    pub(crate) fn with_timeout(&mut self, timeout: Duration) -> &mut Self {
        self.timeout = timeout;
        self
    }

    /// The password in use and where it came from.
    fn current(&self) -> Result<&(String, Source)> {
        self.candidates.first().ok_or_else(|| {
            anyhow!("no admin password: pass --password or set STACKCTL_ADMIN_PASSWORD")
        })
    }

    /// One API call. 2xx and 412 are returned; every other status becomes an
    /// error that says what to do.
    pub(crate) fn call(
        &mut self,
        method: &str,
        path: &str,
        body: Option<&Value>,
        if_match: Option<&str>,
    ) -> Result<Response> {
        let res = self.request(method, path, body, if_match)?;
        match res.status {
            200..=299 | 412 => Ok(res),
            400 => bail!(
                "{}",
                res.error_message()
                    .unwrap_or_else(|| "the gateway refused the request (400)".into())
            ),
            status => {
                let detail = res.error_message().unwrap_or_else(|| {
                    String::from_utf8_lossy(&res.body)
                        .chars()
                        .take(200)
                        .collect()
                });
                bail!(
                    "the gateway at {} answered {status} to {method} {path}{}{}",
                    self.base.display,
                    if detail.is_empty() { "" } else { ": " },
                    detail.trim()
                );
            }
        }
    }

    /// One API call with the password handled (a wrong one tries the next
    /// candidate, then is an error; so is 429); any other answer is returned.
    pub(crate) fn request(
        &mut self,
        method: &str,
        path: &str,
        body: Option<&Value>,
        if_match: Option<&str>,
    ) -> Result<Response> {
        let body = body
            .map(serde_json::to_vec)
            .transpose()
            .context("cannot encode the request")?;
        loop {
            let password = self.current()?.0.as_str();
            let mut headers = vec![("X-Admin-Password", password)];
            if body.is_some() {
                headers.push(("Content-Type", "application/json"));
            }
            if let Some(tag) = if_match {
                headers.push(("If-Match", tag));
            }
            let res = send(
                &self.base,
                method,
                path,
                &headers,
                body.as_deref(),
                self.timeout,
            )
            .map_err(|e| e.explain(&self.base, self.timeout))?;
            match res.status {
                403 if self.candidates.len() > 1 => {
                    // Wrong password, and another candidate exists: nothing was
                    // changed by this request, so trying the next one is safe.
                    self.candidates.remove(0);
                }
                403 => {
                    let file = match &self.password_file {
                        Some(f) => format!(", or check `{}`", f.display()),
                        None => String::new(),
                    };
                    bail!(
                        "wrong admin password: pass --password, set STACKCTL_ADMIN_PASSWORD{file}"
                    );
                }
                429 => {
                    let wait = match res
                        .header("retry-after")
                        .and_then(|v| v.trim().parse::<u64>().ok())
                    {
                        Some(s) => format!("{s} s"),
                        None => "a while".to_string(),
                    };
                    bail!("too many wrong passwords; retry in {wait}");
                }
                _ => return Ok(res),
            }
        }
    }

    /// The route table and its ETag.
    fn table(&mut self) -> Result<(Value, Option<String>)> {
        let res = self.call("GET", "/admin/routes.json", None, None)?;
        let etag = res.header("etag").map(str::to_string);
        match res.json() {
            Some(table @ Value::Object(_)) => Ok((table, etag)),
            _ => bail!(
                "the gateway at {} answered /admin/routes.json with something that is not a route table",
                self.base.display
            ),
        }
    }

    /// Read the table, change it with `edit`, write it back with `If-Match`;
    /// start over when someone else changed it in between.
    fn modify(&mut self, mut edit: impl FnMut(&mut Value) -> Result<()>) -> Result<()> {
        for _ in 0..STALE_ATTEMPTS {
            let (mut table, etag) = self.table()?;
            edit(&mut table)?;
            let res = self.call(
                "POST",
                "/admin/routes.json",
                Some(&post_body(&table)),
                etag.as_deref(),
            )?;
            if res.status != 412 {
                return Ok(());
            }
        }
        bail!("the route table kept changing while stackctl tried to update it; run the command again")
    }

    /// Change the password; returns a note for the user (which copy was updated).
    fn change_password(&mut self, new: &str) -> Result<String> {
        self.call(
            "POST",
            "/admin/password",
            Some(&json!({ "new_password": new })),
            None,
        )?;
        let note = match &self.current()?.1 {
            Source::File(path) => {
                write_password_file(path, new).with_context(|| {
                    format!(
                        "the password was changed, but `{}` could not be updated; write the new password there yourself",
                        path.display()
                    )
                })?;
                format!("; updated `{}`", path.display())
            }
            Source::Flag => {
                "; pass the new one with --password or STACKCTL_ADMIN_PASSWORD from now on"
                    .to_string()
            }
            Source::Manifest => {
                "; `gateway.admin.password` in the manifest still holds the old one, update it"
                    .to_string()
            }
        };
        Ok(note)
    }
}

/// The password `up` wrote, if the file exists (trailing newline removed).
fn read_password_file(path: &Path) -> Result<Option<String>> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let p = text.trim_end_matches(['\r', '\n']).to_string();
            Ok(if p.is_empty() { None } else { Some(p) })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e)
            .with_context(|| format!("cannot read the admin password file `{}`", path.display())),
    }
}

/// Replace the password file atomically, readable by its owner only.
fn write_password_file(path: &Path, password: &str) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    let result = (|| -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(password.as_bytes())?;
        f.write_all(b"\n")?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        // Best effort: do not leave a stray copy of the password behind.
        let _ = std::fs::remove_file(&tmp);
    }
    Ok(result?)
}

// ---------------------------------------------------------------- route table edits (pure)

/// The table's `rules` list (created if absent).
fn rules_mut(table: &mut Value) -> Result<&mut Vec<Value>> {
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
fn post_body(table: &Value) -> Value {
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
fn id_from_prefix(prefix: &str) -> String {
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
fn simple_prefix_rule(rules: &[Value], prefix: &str) -> Option<String> {
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
fn prefix_rule(id: &str, prefix: &str, backend: &str, strip_prefix: bool, priority: i64) -> Value {
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
fn upsert(rules: &mut Vec<Value>, rule: Value) -> bool {
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
fn remove(rules: &mut Vec<Value>, key: &str) -> Result<String> {
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
fn render_status(status: &Value) -> String {
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

// ---------------------------------------------------------------- a tiny HTTP/1.1 client

/// The gateway's base URL: `http(s)://host:port[/prefix]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BaseUrl {
    /// `host:port` for resolving.
    authority: String,
    /// The Host header: the authority as given (no default port added).
    host: String,
    /// `https://`: TLS, with the host name checked against the web's roots.
    tls: bool,
    /// A path prefix without a trailing slash (usually empty).
    path: String,
    /// How the URL is shown in messages.
    pub(crate) display: String,
}

impl BaseUrl {
    /// The loopback URL of a listen address (`0.0.0.0:P` → `http://127.0.0.1:P`).
    fn from_listen(listen: SocketAddr) -> BaseUrl {
        let mut addr = listen;
        if addr.ip().is_unspecified() {
            addr.set_ip(match addr {
                SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
                SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
            });
        }
        let authority = addr.to_string();
        BaseUrl {
            display: format!("http://{authority}"),
            host: authority.clone(),
            authority,
            tls: false,
            path: String::new(),
        }
    }

    /// `--url`: `http(s)://host[:port][/prefix]`, or just `host:port`.
    fn parse(url: &str) -> Result<BaseUrl> {
        let (tls, rest) = if let Some(r) = url.strip_prefix("http://") {
            (false, r)
        } else if let Some(r) = url.strip_prefix("https://") {
            (true, r)
        } else if url.contains("://") {
            bail!("`{url}` is not an http:// or https:// URL");
        } else {
            (false, url)
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        // No user:password@ (a secret in argv and in messages), nothing a
        // Host header cannot carry.
        if authority.is_empty()
            || authority.contains(['@', '?', '#'])
            || authority
                .chars()
                .any(|c| c.is_whitespace() || c.is_control())
        {
            bail!("`{url}` is not a usable gateway URL; expected e.g. http://127.0.0.1:7860 or https://user-space.hf.space");
        }
        let has_port = match authority.rfind(']') {
            Some(close) => authority[close..].contains(':'),
            None => authority.contains(':'),
        };
        let host = authority.to_string();
        let authority = if has_port {
            let port = authority.rsplit(':').next().unwrap_or("");
            if port.parse::<u16>().is_err() {
                bail!("`{url}`: `{port}` is not a port number");
            }
            authority.to_string()
        } else {
            format!("{authority}:{}", if tls { 443 } else { 80 })
        };
        let path = path.trim_end_matches('/').to_string();
        let scheme = if tls { "https" } else { "http" };
        Ok(BaseUrl {
            display: format!("{scheme}://{host}{path}"),
            authority,
            host,
            tls,
            path,
        })
    }

    /// The host name a TLS certificate must be valid for (no port, no brackets).
    fn server_name(&self) -> &str {
        let h = match self.host.rfind(']') {
            Some(close) => &self.host[..=close],
            None => self.host.rsplit_once(':').map_or(&*self.host, |(h, _)| h),
        };
        h.trim_start_matches('[').trim_end_matches(']')
    }
}

/// An HTTP response, body read in full.
#[derive(Debug)]
pub(crate) struct Response {
    pub(crate) status: u16,
    /// Header names lowercased.
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Response {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub(crate) fn json(&self) -> Option<Value> {
        serde_json::from_slice(&self.body).ok()
    }

    /// The `{"error": "…"}` message of an error answer.
    pub(crate) fn error_message(&self) -> Option<String> {
        match self.json()?.get("error")? {
            Value::String(s) if !s.is_empty() => Some(s.clone()),
            _ => None,
        }
    }
}

/// Why a request got no HTTP answer.
#[derive(Debug)]
enum HttpError {
    /// Nothing accepted the connection.
    Unreachable(std::io::Error),
    /// Connected, but no (complete) answer in time.
    Timeout,
    /// The connection broke.
    Io(std::io::Error),
    /// The answer was not HTTP/1.x as expected.
    Malformed(String),
    /// A header value cannot be sent (line break in it).
    BadHeader(&'static str),
    /// The TLS handshake or session failed (certificate, protocol).
    Tls(String),
}

impl HttpError {
    fn explain(self, base: &BaseUrl, timeout: Duration) -> anyhow::Error {
        let url = &base.display;
        match self {
            HttpError::Unreachable(e) => {
                // "Connection refused" is the common case and says nothing new;
                // other reasons (name not found, unreachable network) do.
                let why = match e.kind() {
                    std::io::ErrorKind::ConnectionRefused => String::new(),
                    _ => format!(" ({e})"),
                };
                anyhow!("no gateway answers at {url}{why} — is `stackctl up` running? (use --url to point elsewhere)")
            }
            HttpError::Timeout => anyhow!(
                "the gateway at {url} did not answer within {} s",
                timeout.as_secs()
            ),
            HttpError::Io(e) => anyhow!("the connection to the gateway at {url} failed: {e}"),
            HttpError::Malformed(what) => {
                anyhow!("the answer from {url} is not the stackctl admin API: {what}")
            }
            HttpError::BadHeader(name) => {
                anyhow!("the {name} contains a line break, which cannot be sent")
            }
            HttpError::Tls(why) => anyhow!(
                "TLS with {url} failed: {why} — is it an https server with a valid certificate? (a gateway reached directly speaks plain http://)"
            ),
        }
    }
}

impl From<std::io::Error> for HttpError {
    fn from(e: std::io::Error) -> Self {
        match e.kind() {
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => HttpError::Timeout,
            std::io::ErrorKind::UnexpectedEof => {
                HttpError::Malformed("the connection closed before the answer was complete".into())
            }
            _ => HttpError::Io(e),
        }
    }
}

/// Send one request and read the whole answer; `timeout` bounds each read
/// and write (not the whole exchange).
fn send(
    base: &BaseUrl,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
    timeout: Duration,
) -> Result<Response, HttpError> {
    let mut head = format!(
        "{method} {}{path} HTTP/1.1\r\nHost: {}\r\nUser-Agent: stackctl/{}\r\nAccept: application/json\r\nConnection: close\r\n",
        base.path,
        base.host,
        env!("CARGO_PKG_VERSION")
    );
    for (name, value) in headers {
        if value.contains(['\r', '\n']) {
            return Err(HttpError::BadHeader(
                if name.eq_ignore_ascii_case("x-admin-password") {
                    "admin password"
                } else {
                    "request header"
                },
            ));
        }
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    if let Some(b) = body {
        head.push_str(&format!("Content-Length: {}\r\n", b.len()));
    }
    head.push_str("\r\n");

    let tcp = connect(&base.authority)?;
    tcp.set_read_timeout(Some(timeout))?;
    tcp.set_write_timeout(Some(timeout))?;
    let mut stream = if base.tls {
        Stream::Tls(Box::new(
            crate::client_tls::wrap(base.server_name(), tcp).map_err(HttpError::Tls)?,
        ))
    } else {
        Stream::Plain(tcp)
    };
    stream.write_all(head.as_bytes())?;
    if let Some(b) = body {
        stream.write_all(b)?;
    }
    stream.flush()?;
    read_response(BufReader::new(stream), method == "HEAD")
}

/// A connection to the gateway, plain or TLS.
enum Stream {
    Plain(TcpStream),
    Tls(Box<native_tls::TlsStream<TcpStream>>),
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf),
            Stream::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write(buf),
            Stream::Tls(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Stream::Plain(s) => s.flush(),
            Stream::Tls(s) => s.flush(),
        }
    }
}

fn connect(authority: &str) -> Result<TcpStream, HttpError> {
    let addrs: Vec<SocketAddr> = authority
        .to_socket_addrs()
        .map_err(HttpError::Unreachable)?
        .collect();
    let mut last = std::io::Error::new(std::io::ErrorKind::NotFound, "no address");
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT) {
            Ok(s) => {
                // Best effort: the request is small and written at once anyway.
                let _ = s.set_nodelay(true);
                return Ok(s);
            }
            Err(e) => last = e,
        }
    }
    Err(HttpError::Unreachable(last))
}

/// Parse an HTTP/1.x response (skipping `1xx` interim answers). Whatever
/// the peer sends, this ends with a response or an error: every count and
/// size taken from the wire is bounded before it is used, and sums are
/// checked (issue 11: a hostile chunk size used to panic here).
fn read_response(mut r: impl BufRead, head_only: bool) -> Result<Response, HttpError> {
    for _ in 0..=MAX_INTERIM {
        let status_line = read_line(&mut r)?;
        let mut parts = status_line.splitn(3, ' ');
        let version = parts.next().unwrap_or("");
        let status = parts.next().and_then(parse_status);
        let status = match status {
            Some(s) if version.starts_with("HTTP/1.") => s,
            _ => {
                return Err(HttpError::Malformed(format!(
                    "status line {:?}",
                    truncate(&status_line)
                )))
            }
        };
        let mut headers = Vec::new();
        loop {
            let line = read_line(&mut r)?;
            if line.is_empty() {
                break;
            }
            if headers.len() == MAX_HEADERS {
                return Err(HttpError::Malformed(format!(
                    "more than {MAX_HEADERS} header lines"
                )));
            }
            let (k, v) = line.split_once(':').ok_or_else(|| {
                HttpError::Malformed(format!("header line {:?}", truncate(&line)))
            })?;
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
        if (100..200).contains(&status) {
            continue;
        }
        let mut res = Response {
            status,
            headers,
            body: Vec::new(),
        };
        if head_only || status == 204 || status == 304 {
            return Ok(res);
        }
        let chunked = res
            .header("transfer-encoding")
            .is_some_and(|te| te.to_ascii_lowercase().contains("chunked"));
        if chunked {
            res.body = read_chunked(&mut r)?;
        } else if let Some(len) = res.header("content-length") {
            let len = parse_length(len, 10).ok_or_else(|| {
                HttpError::Malformed(format!("content-length {:?}", truncate(len)))
            })?;
            res.body = vec![0; len];
            r.read_exact(&mut res.body)?;
        } else {
            r.take(MAX_BODY as u64 + 1).read_to_end(&mut res.body)?;
            if res.body.len() > MAX_BODY {
                return Err(HttpError::Malformed("an oversized body".into()));
            }
        }
        return Ok(res);
    }
    Err(HttpError::Malformed(format!(
        "more than {MAX_INTERIM} interim (1xx) answers"
    )))
}

/// A three-digit status code.
fn parse_status(s: &str) -> Option<u16> {
    if s.len() != 3 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok().filter(|s| *s >= 100)
}

/// A body or chunk length in `radix` (10 or 16): digits only (no sign, no
/// space inside), and at most [`MAX_BODY`].
fn parse_length(text: &str, radix: u32) -> Option<usize> {
    if text.is_empty() || !text.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    u64::from_str_radix(text, radix)
        .ok()
        .and_then(|n| usize::try_from(n).ok())
        .filter(|n| *n <= MAX_BODY)
}

fn read_chunked(r: &mut impl BufRead) -> Result<Vec<u8>, HttpError> {
    let mut body = Vec::new();
    loop {
        let line = read_line(r)?;
        let size_text = line.split(';').next().unwrap_or("").trim();
        let size = parse_length(size_text, 16)
            .ok_or_else(|| HttpError::Malformed(format!("chunk size {:?}", truncate(&line))))?;
        if size == 0 {
            // Trailers, then the empty line.
            for _ in 0..=MAX_HEADERS {
                if read_line(r)?.is_empty() {
                    return Ok(body);
                }
            }
            return Err(HttpError::Malformed(format!(
                "more than {MAX_HEADERS} trailer lines"
            )));
        }
        let start = body.len();
        let end = start
            .checked_add(size)
            .filter(|end| *end <= MAX_BODY)
            .ok_or_else(|| HttpError::Malformed("an oversized body".into()))?;
        body.resize(end, 0);
        r.read_exact(&mut body[start..])?;
        if !read_line(r)?.is_empty() {
            return Err(HttpError::Malformed("a chunk without its CRLF".into()));
        }
    }
}

/// One CRLF- (or LF-) terminated line, without the terminator.
fn read_line(r: &mut impl BufRead) -> Result<String, HttpError> {
    let mut buf = Vec::new();
    let n = r.take(MAX_HEAD_LINE as u64).read_until(b'\n', &mut buf)?;
    if n == 0 {
        return Err(HttpError::Malformed(
            "the connection closed before the answer was complete".into(),
        ));
    }
    if buf.last() != Some(&b'\n') {
        return Err(HttpError::Malformed(
            "a line that is too long or cut off".into(),
        ));
    }
    buf.pop();
    if buf.last() == Some(&b'\r') {
        buf.pop();
    }
    String::from_utf8(buf).map_err(|_| HttpError::Malformed("a line that is not UTF-8".into()))
}

fn truncate(s: &str) -> String {
    s.chars().take(80).collect()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::net::TcpListener;
    use std::sync::mpsc;
    use std::thread;

    // ------------------------------------------------------------ URLs

    #[test]
    fn unspecified_listen_addresses_become_loopback() {
        let v4 = BaseUrl::from_listen("0.0.0.0:7860".parse().unwrap());
        assert_eq!(v4.display, "http://127.0.0.1:7860");
        let v6 = BaseUrl::from_listen("[::]:7860".parse().unwrap());
        assert_eq!(v6.display, "http://[::1]:7860");
        let specific = BaseUrl::from_listen("10.1.2.3:80".parse().unwrap());
        assert_eq!(specific.authority, "10.1.2.3:80");
    }

    #[test]
    fn url_flag_accepts_urls_and_host_port() {
        let u = BaseUrl::parse("http://localhost:9000/").unwrap();
        assert_eq!(
            (u.authority.as_str(), u.path.as_str()),
            ("localhost:9000", "")
        );
        let u = BaseUrl::parse("127.0.0.1:7860").unwrap();
        assert_eq!(u.display, "http://127.0.0.1:7860");
        let u = BaseUrl::parse("http://example.org/sub/").unwrap();
        assert_eq!(
            (u.authority.as_str(), u.path.as_str()),
            ("example.org:80", "/sub")
        );
        let u = BaseUrl::parse("http://[::1]:8080").unwrap();
        assert_eq!(u.authority, "[::1]:8080");
        let u = BaseUrl::parse("http://[::1]").unwrap();
        assert_eq!(u.authority, "[::1]:80");
    }

    /// Issue 14: a Space is reached through its host's HTTPS proxy.
    #[test]
    fn https_urls_use_tls_on_443_with_the_bare_host() {
        let u = BaseUrl::parse("https://user-space.hf.space/").unwrap();
        assert!(u.tls);
        assert_eq!(
            (u.authority.as_str(), u.host.as_str(), u.server_name()),
            (
                "user-space.hf.space:443",
                "user-space.hf.space",
                "user-space.hf.space"
            )
        );
        assert_eq!(u.display, "https://user-space.hf.space");
        let u = BaseUrl::parse("https://example.org:8443/x").unwrap();
        assert_eq!(
            (
                u.authority.as_str(),
                u.host.as_str(),
                u.server_name(),
                u.path.as_str()
            ),
            ("example.org:8443", "example.org:8443", "example.org", "/x")
        );
        let u = BaseUrl::parse("https://[::1]:8443").unwrap();
        assert_eq!(u.server_name(), "::1");
        assert!(!BaseUrl::parse("http://example.org").unwrap().tls);
    }

    #[test]
    fn url_flag_refuses_userinfo_odd_schemes_and_bad_ports() {
        let err = |u: &str| BaseUrl::parse(u).unwrap_err().to_string();
        assert!(err("http://user:pw@host:1").contains("not a usable gateway URL"));
        assert!(err("https://user:pw@host").contains("not a usable gateway URL"));
        assert!(err("https://host?x=1").contains("not a usable gateway URL"));
        assert_eq!(
            err("http://host:port"),
            "`http://host:port`: `port` is not a port number"
        );
        assert!(err("ftp://host").contains("not an http:// or https:// URL"));
    }

    /// TLS to something that is not TLS fails with a message, not a hang or
    /// a panic.
    #[test]
    fn https_to_a_plain_http_server_says_so() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        thread::spawn(move || {
            if let Ok((mut s, _)) = listener.accept() {
                let mut buf = [0u8; 512];
                let _ = s.read(&mut buf);
                let _ = s.write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n");
            }
        });
        let mut a = admin(
            &format!("https://127.0.0.1:{port}"),
            vec![("pw", Source::Flag)],
        );
        let err = a
            .call("GET", "/admin/status", None, None)
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with(&format!("TLS with https://127.0.0.1:{port} failed: "))
                && err.contains("is it an https server"),
            "{err}"
        );
    }

    // ------------------------------------------------------------ table edits

    #[test]
    fn ids_derive_from_prefixes() {
        for (prefix, id) in [
            ("/gemini/", "gemini"),
            ("/api/ws/", "api-ws"),
            ("/", "root"),
            ("/WebUI", "webui"),
            ("/a__b/c.d/", "a-b-c-d"),
        ] {
            assert_eq!(id_from_prefix(prefix), id, "{prefix}");
        }
    }

    fn table() -> Value {
        json!({
            "default_backend": "http://127.0.0.1:6185",
            "rules": [
                { "id": "ws", "priority": 0, "action": "proxy", "backend": "http://127.0.0.1:6099",
                  "match": { "path_prefix": "/api/ws/" } },
                { "id": "webui-assets", "priority": 190, "action": "proxy", "backend": "http://127.0.0.1:6099",
                  "match": { "referer_substr": "/webui/" } },
                { "id": "gemini", "priority": 0, "backend": "http://127.0.0.1:8000", "strip_prefix": true,
                  "set_headers": { "X-A": "1" }, "match": { "path_prefix": "/gemini/" } }
            ]
        })
    }

    #[test]
    fn set_replaces_the_plain_rule_for_the_same_prefix_in_place() {
        let mut t = table();
        let rules = rules_mut(&mut t).unwrap();
        let id = simple_prefix_rule(rules, "/api/ws/").unwrap();
        assert_eq!(id, "ws");
        assert!(upsert(
            rules,
            prefix_rule(&id, "/api/ws/", "http://127.0.0.1:7000", false, 0)
        ));
        assert_eq!(rules.len(), 3);
        assert_eq!(rules[0]["backend"], "http://127.0.0.1:7000");
    }

    #[test]
    fn set_appends_a_new_rule_without_empty_fields() {
        let mut t = table();
        let rules = rules_mut(&mut t).unwrap();
        assert_eq!(simple_prefix_rule(rules, "/new/"), None);
        assert!(!upsert(
            rules,
            prefix_rule("new", "/new/", "http://127.0.0.1:1", false, 5)
        ));
        assert_eq!(
            rules[3],
            json!({ "id": "new", "priority": 5, "action": "proxy", "backend": "http://127.0.0.1:1",
                    "match": { "path_prefix": "/new/" } })
        );
        let with_strip = prefix_rule("s", "/s/", "http://127.0.0.1:1", true, 0);
        assert_eq!(with_strip["strip_prefix"], true);
    }

    #[test]
    fn rm_takes_an_id_or_a_unique_prefix() {
        let mut t = table();
        let rules = rules_mut(&mut t).unwrap();
        assert_eq!(remove(rules, "webui-assets").unwrap(), "webui-assets");
        assert_eq!(remove(rules, "/gemini/").unwrap(), "gemini");
        assert_eq!(rules.len(), 1);
    }

    #[test]
    fn rm_of_an_unknown_rule_lists_the_ids() {
        let mut t = table();
        let err = remove(rules_mut(&mut t).unwrap(), "/nope/")
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "no rule has the id or path prefix `/nope/`; the ids are `ws`, `webui-assets`, `gemini`"
        );
        let mut empty = json!({ "rules": [] });
        let err = remove(rules_mut(&mut empty).unwrap(), "x")
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "no rule has the id or path prefix `x`: the table has no rules"
        );
    }

    #[test]
    fn rm_of_an_ambiguous_prefix_asks_for_an_id() {
        let mut t = json!({ "rules": [
            { "id": "a", "match": { "path_prefix": "/x/" } },
            { "id": "b", "match": { "path_prefix": "/x/", "method": "POST" } }
        ]});
        let err = remove(rules_mut(&mut t).unwrap(), "/x/")
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "several rules have the path prefix `/x/` (`a`, `b`); remove one by its id"
        );
    }

    #[test]
    fn post_body_keeps_rules_and_a_non_empty_default() {
        assert_eq!(
            post_body(&json!({ "default_backend": "", "rules": [] })),
            json!({ "rules": [] })
        );
        let body = post_body(&table());
        assert_eq!(body["default_backend"], "http://127.0.0.1:6185");
        assert_eq!(body["rules"].as_array().map(Vec::len), Some(3));
    }

    // ------------------------------------------------------------ status

    #[test]
    fn status_renders_a_service_table_and_the_rest() {
        let text = render_status(&json!({
            "restored": true,
            "services": {
                "web": { "phase": "ready", "pid": 1234, "restarts": 0, "last_exit": null },
                "bot": { "phase": "backoff", "pid": null, "restarts": 12, "last_exit": "exited 1" }
            },
            "backup": { "last_snapshot": "abc123", "pending": false }
        }));
        assert_eq!(
            text,
            "SERVICE  PHASE    PID   RESTARTS  LAST EXIT\n\
             bot      backoff  -     12        exited 1\n\
             web      ready    1234  0         -\n\
             \n\
             restored: yes\n\
             backup:\n  last_snapshot: abc123\n  pending: false\n"
        );
    }

    #[test]
    fn status_survives_odd_shapes() {
        let text = render_status(
            &json!({ "services": "?", "backup": null, "gateway": { "listen": "0.0.0.0:1" } }),
        );
        assert_eq!(
            text,
            "no services\n\ngateway:\n  listen: 0.0.0.0:1\nbackup: not configured\n"
        );
        assert_eq!(
            render_status(&json!([])),
            "no services\n\nbackup: not configured\n"
        );
    }

    // ------------------------------------------------------------ HTTP parsing

    #[test]
    fn responses_with_length_chunks_or_close_are_read() {
        let raw = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nETag: \"v1\"\r\nContent-Length: 2\r\n\r\n{}";
        let res = read_response(&raw[..], false).unwrap();
        assert_eq!(
            (res.status, res.header("etag"), &res.body[..]),
            (200, Some("\"v1\""), &b"{}"[..])
        );

        let raw = b"HTTP/1.1 400 Bad Request\r\ntransfer-encoding: chunked\r\n\r\n5\r\n{\"err\r\nE;x=1\r\nor\":\"bad id\"}\r\n0\r\nX-T: 1\r\n\r\n";
        let res = read_response(&raw[..], false).unwrap();
        assert_eq!(res.error_message().as_deref(), Some("bad id"));

        let raw = b"HTTP/1.0 200 OK\nContent-Type: text/plain\n\nuntil close";
        assert_eq!(read_response(&raw[..], false).unwrap().body, b"until close");
    }

    #[test]
    fn broken_responses_are_malformed() {
        for raw in [
            &b"SSH-2.0-OpenSSH\r\n"[..],
            b"HTTP/1.1 200 OK\r\nno colon\r\n\r\n",
            b"HTTP/1.1 200 OK\r\n",
            b"",
        ] {
            assert!(
                matches!(read_response(raw, false), Err(HttpError::Malformed(_))),
                "{raw:?}"
            );
        }
    }

    /// Issue 11: whatever answers on the admin port, the client returns an
    /// error and never panics or grows without bound.
    #[test]
    fn hostile_responses_are_errors_not_panics() {
        let chunked = |rest: &str| {
            format!("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n{rest}").into_bytes()
        };
        let mut cases = vec![
            // A chunk size that overflows the body length's arithmetic.
            chunked("1\r\na\r\nffffffffffffffff\r\n"),
            chunked("ffffffffffffffff\r\n"),
            chunked("7fffffffffffffff\r\nab"),
            chunked("10000000000000000\r\n"),
            chunked("-1\r\n"),
            chunked("+5\r\nhello\r\n0\r\n\r\n"),
            chunked(" \r\n"),
            chunked("\r\n"),
            chunked("5\r\nhelloXX0\r\n\r\n"),
            chunked("5\r\nhel"),
            b"HTTP/1.1 200 OK\r\nContent-Length: 18446744073709551615\r\n\r\n".to_vec(),
            b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n".to_vec(),
            b"HTTP/1.1 200 OK\r\nContent-Length: +2\r\n\r\n{}".to_vec(),
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nab".to_vec(),
            b"HTTP/1.1 99999 OK\r\n\r\n".to_vec(),
            b"HTTP/1.1 \r\n\r\n".to_vec(),
            b"HTTP/1.1 200 OK\r\n\xff: \xfe\r\n\r\n".to_vec(),
        ];
        // Without end: headers, interim answers, trailers, long lines.
        let endless = |start: &str, line: &str| {
            let mut v = start.as_bytes().to_vec();
            while v.len() < 4 << 20 {
                v.extend_from_slice(line.as_bytes());
            }
            v
        };
        cases.push(endless("HTTP/1.1 200 OK\r\n", "X-A: b\r\n"));
        cases.push(endless("", "HTTP/1.1 100 Continue\r\n\r\n"));
        cases.push(endless(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n",
            "X-T: 1\r\n",
        ));
        cases.push(endless(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            "1\r\na\r\n",
        ));
        cases.push(endless("HTTP/1.1 200 OK\r\nX: ", "a"));
        for raw in cases {
            let shown = String::from_utf8_lossy(&raw[..raw.len().min(80)]).into_owned();
            let got = std::panic::catch_unwind(|| read_response(&raw[..], false));
            match got {
                Ok(Err(HttpError::Malformed(_))) => {}
                Ok(other) => panic!("{shown:?}: {other:?}"),
                Err(_) => panic!("{shown:?}: panicked"),
            }
        }
    }

    // ------------------------------------------------------------ against a fake gateway

    /// A one-shot fake gateway: answers each accepted connection with the next
    /// canned response and reports the requests it saw.
    pub(crate) fn fake_gateway(answers: Vec<String>) -> (String, mpsc::Receiver<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            for answer in answers {
                let (stream, _) = listener.accept().unwrap();
                let mut r = BufReader::new(stream);
                let mut request = String::new();
                let mut len = 0;
                loop {
                    let mut line = String::new();
                    r.read_line(&mut line).unwrap();
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        len = v.trim().parse().unwrap();
                    }
                    request.push_str(&line);
                    if line == "\r\n" {
                        break;
                    }
                }
                let mut body = vec![0; len];
                r.read_exact(&mut body).unwrap();
                request.push_str(&String::from_utf8(body).unwrap());
                tx.send(request).unwrap();
                r.get_mut().write_all(answer.as_bytes()).unwrap();
            }
        });
        (url, rx)
    }

    pub(crate) fn answer(status: &str, extra: &str, body: &str) -> String {
        format!(
            "HTTP/1.1 {status}\r\nContent-Type: application/json\r\n{extra}Content-Length: {}\r\n\r\n{body}",
            body.len()
        )
    }

    pub(crate) fn admin(url: &str, passwords: Vec<(&str, Source)>) -> Admin {
        Admin {
            base: BaseUrl::parse(url).unwrap(),
            candidates: passwords
                .into_iter()
                .map(|(p, s)| (p.to_string(), s))
                .collect(),
            password_file: Some(PathBuf::from(
                "/home/u/.config/stackctl/demo.admin-password",
            )),
            timeout: IO_TIMEOUT,
        }
    }

    #[test]
    fn modify_sends_if_match_and_the_password_header() {
        let table = r#"{"default_backend":"http://127.0.0.1:1","rules":[]}"#;
        let (url, seen) = fake_gateway(vec![
            answer("200 OK", "ETag: \"t1\"\r\n", table),
            answer("200 OK", "", r#"{"ok":true}"#),
        ]);
        let mut a = admin(&url, vec![("secret-pass-1", Source::Flag)]);
        a.modify(|t| {
            upsert(
                rules_mut(t)?,
                prefix_rule("x", "/x/", "http://127.0.0.1:2", false, 0),
            );
            Ok(())
        })
        .unwrap();
        let get = seen.recv().unwrap();
        assert!(
            get.starts_with("GET /admin/routes.json HTTP/1.1\r\n"),
            "{get}"
        );
        assert!(get.contains("X-Admin-Password: secret-pass-1\r\n"));
        let post = seen.recv().unwrap();
        assert!(
            post.starts_with("POST /admin/routes.json HTTP/1.1\r\n"),
            "{post}"
        );
        assert!(post.contains("If-Match: \"t1\"\r\n"));
        assert!(post.contains("Content-Type: application/json\r\n"));
        assert!(post.ends_with(
            r#"{"default_backend":"http://127.0.0.1:1","rules":[{"action":"proxy","backend":"http://127.0.0.1:2","id":"x","match":{"path_prefix":"/x/"},"priority":0}]}"#
        ));
    }

    #[test]
    fn modify_starts_over_on_412() {
        let table = r#"{"rules":[]}"#;
        let (url, seen) = fake_gateway(vec![
            answer("200 OK", "ETag: \"t1\"\r\n", table),
            answer("412 Precondition Failed", "", r#"{"error":"stale"}"#),
            answer("200 OK", "ETag: \"t2\"\r\n", table),
            answer("200 OK", "", r#"{"ok":true}"#),
        ]);
        let mut a = admin(&url, vec![("pw", Source::Flag)]);
        a.modify(|_| Ok(())).unwrap();
        let requests: Vec<String> = seen.iter().take(4).collect();
        assert!(requests[3].contains("If-Match: \"t2\"\r\n"));
    }

    #[test]
    fn errors_teach_the_fix() {
        let (url, _seen) = fake_gateway(vec![
            answer("403 Forbidden", "", r#"{"error":"forbidden"}"#),
            answer(
                "429 Too Many Requests",
                "Retry-After: 17\r\n",
                r#"{"error":"slow down"}"#,
            ),
            answer(
                "400 Bad Request",
                "",
                r#"{"error":"rule `x`: backend: not allowed"}"#,
            ),
            answer("404 Not Found", "", "nothing here"),
        ]);
        let mut a = admin(&url, vec![("pw", Source::Flag)]);
        let mut err = || {
            a.call("GET", "/admin/status", None, None)
                .unwrap_err()
                .to_string()
        };
        assert_eq!(
            err(),
            "wrong admin password: pass --password, set STACKCTL_ADMIN_PASSWORD, or check `/home/u/.config/stackctl/demo.admin-password`"
        );
        assert_eq!(err(), "too many wrong passwords; retry in 17 s");
        assert_eq!(err(), "rule `x`: backend: not allowed");
        assert_eq!(
            err(),
            format!("the gateway at {url} answered 404 to GET /admin/status: nothing here")
        );
    }

    #[test]
    fn a_wrong_file_password_falls_back_to_the_manifest_one() {
        let (url, seen) = fake_gateway(vec![
            answer("403 Forbidden", "", r#"{"error":"forbidden"}"#),
            answer("200 OK", "", r#"{"ok":true}"#),
        ]);
        let mut a = admin(
            &url,
            vec![
                ("old-file-pw", Source::File(PathBuf::from("/x"))),
                ("manifest-pw", Source::Manifest),
            ],
        );
        assert_eq!(
            a.call("GET", "/admin/status", None, None).unwrap().status,
            200
        );
        assert!(seen
            .recv()
            .unwrap()
            .contains("X-Admin-Password: old-file-pw\r\n"));
        assert!(seen
            .recv()
            .unwrap()
            .contains("X-Admin-Password: manifest-pw\r\n"));
    }

    #[test]
    fn no_gateway_says_how_to_start_one() {
        // Bind then drop, so the port is (almost certainly) closed.
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let url = format!("http://127.0.0.1:{port}");
        let mut a = admin(&url, vec![("pw", Source::Flag)]);
        let err = a
            .call("GET", "/admin/status", None, None)
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            format!("no gateway answers at {url} — is `stackctl up` running? (use --url to point elsewhere)")
        );
    }

    #[test]
    fn a_password_with_a_line_break_is_never_sent() {
        let mut a = admin(
            "http://127.0.0.1:9",
            vec![("pw\r\nX-Evil: 1", Source::Flag)],
        );
        let err = a
            .call("GET", "/admin/status", None, None)
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "the admin password contains a line break, which cannot be sent"
        );
    }

    #[test]
    fn password_change_updates_the_file_it_came_from() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("demo.admin-password");
        std::fs::write(&file, "old-password-1\n").unwrap();
        assert_eq!(
            read_password_file(&file).unwrap().as_deref(),
            Some("old-password-1")
        );
        let (url, seen) = fake_gateway(vec![answer("200 OK", "", r#"{"ok":true}"#)]);
        let mut a = admin(&url, vec![("old-password-1", Source::File(file.clone()))]);
        let note = a.change_password("new-password-2").unwrap();
        assert_eq!(note, format!("; updated `{}`", file.display()));
        assert!(seen
            .recv()
            .unwrap()
            .ends_with(r#"{"new_password":"new-password-2"}"#));
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "new-password-2\n");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(
            read_password_file(&dir.path().join("missing")).unwrap(),
            None
        );
    }
}
