//! `stackctl backup|snapshots|restore --url …` and the persistence part of
//! `stackctl status`: manual recovery of a stack that has no shell (a
//! Space, a free container host) through its admin API (issue 14). A local
//! `stackctl restore` while `up` runs takes the same path through the
//! control socket ([`restore_through_up`]).
//!
//! Output and exit codes are the local commands' (the printers are shared
//! with [`crate::cmd::progress`]); the server's `{"error"}` messages
//! already say what to do, so they are shown as sent, with the next step
//! for the cases only this side knows (which command to run again).

use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};
use serde_json::{json, Value};

use crate::cli::{AdminArgs, RestoreArgs};
use crate::client::{Admin, Response};
use crate::cmd::progress::{print_plan, print_report, print_restored, print_snapshot_table};
use crate::manifest::Manifest;

/// A backup answers when its snapshot is pushed, a restore when the
/// services run again: minutes for a large tree on a slow link. Progress
/// is shown meanwhile (see [`Watch`]), so a long wait is visible.
const LONG_CALL: Duration = Duration::from_secs(3 * 3600);
/// The most snapshots `snapshots` lists (as the local command).
const LIST_MAX: usize = 1000;
/// One page of the list (the API's maximum).
const PAGE: usize = 500;

/// `stackctl backup --url`.
pub fn backup(manifest: Option<&Manifest>, args: &AdminArgs) -> Result<()> {
    let mut admin = Admin::resolve(manifest, args)?;
    enabled_state(&mut admin)?;
    let watch = Watch::start(&admin);
    let res = admin.with_timeout(LONG_CALL).request(
        "POST",
        "/admin/persist/backup",
        Some(&json!({})),
        None,
    );
    drop(watch);
    let res = res?;
    if res.status != 200 {
        return Err(failure(&admin, &res, "backup"));
    }
    let answer = res.json().unwrap_or(Value::Null);
    print_report(&backup_report(&answer));
    Ok(())
}

/// The API's backup answer in the shape `backup` prints
/// ([`crate::control::report_json`]).
fn backup_report(answer: &Value) -> Value {
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

/// `stackctl snapshots --url`: every page, newest first, up to [`LIST_MAX`].
pub fn snapshots(manifest: Option<&Manifest>, args: &AdminArgs) -> Result<()> {
    let mut admin = Admin::resolve(manifest, args)?;
    let list = list_snapshots(&mut admin, LIST_MAX)?;
    print_snapshot_table(&list);
    Ok(())
}

fn list_snapshots(admin: &mut Admin, max: usize) -> Result<Vec<Value>> {
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
fn query(v: &str) -> String {
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

/// `stackctl restore --url`: a dry run lists what would change; a real
/// restore needs `--force` or the snapshot id typed at a terminal, and
/// the stack snapshots its current data first (the undo point it reports).
pub fn restore(manifest: Option<&Manifest>, args: &RestoreArgs) -> Result<()> {
    let mut admin = Admin::resolve(manifest, &args.remote.admin())?;
    enabled_state(&mut admin)?;
    restore_via(Via::Api(admin), args)
}

/// `stackctl restore` while `stackctl up` runs on `workdir`: the same
/// restore as [`restore`], through the control socket instead of the
/// admin API (no password: the socket is this user's alone).
pub fn restore_through_up(workdir: &Path, args: &RestoreArgs) -> Result<()> {
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
            Via::Up(workdir) => match ask_up(workdir, "snapshots")? {
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
    fn restore(&mut self, body: &Value, long: bool) -> Result<Value> {
        match self {
            Via::Api(admin) => {
                let watch = long.then(|| Watch::start(admin));
                if long {
                    admin.with_timeout(LONG_CALL);
                }
                let res = admin.request("POST", "/admin/persist/restore", Some(body), None);
                drop(watch);
                let res = res?;
                if res.status != 200 {
                    return Err(failure(admin, &res, "restore"));
                }
                Ok(res.json().unwrap_or(Value::Null))
            }
            Via::Up(workdir) => match ask_up(workdir, &format!("restore {body}"))? {
                Ok(v) => Ok(v["result"].clone()),
                Err((status, said)) => Err(refusal(&Place::Local, status, &said, "restore")),
            },
        }
    }
}

/// One request to the `up` on `workdir`: its answer, or the HTTP status
/// the API would have given and the error.
fn ask_up(workdir: &Path, cmd: &str) -> Result<std::result::Result<Value, (u16, String)>> {
    let socket = crate::control::socket_path(workdir);
    let answer = crate::control::request(workdir, cmd).map_err(|e| {
        anyhow!(
            "cannot talk to the running `stackctl up` through `{}`: {e}",
            socket.display()
        )
    })?;
    let Some(v) = answer else {
        bail!("`stackctl up` stopped meanwhile: run the restore again (without it, it restores on its own)");
    };
    if v["ok"] == Value::Bool(true) {
        return Ok(Ok(v));
    }
    let status = v["status"]
        .as_u64()
        .and_then(|s| u16::try_from(s).ok())
        .unwrap_or(502);
    let said = v["error"].as_str().unwrap_or_default().to_string();
    Ok(Err((status, said)))
}

/// The restore of [`restore`] and [`restore_through_up`].
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
            undo.get(..12).unwrap_or(undo)
        );
    }
    Ok(())
}

/// Where the stack a command talks to is, for messages and the commands
/// they suggest.
enum Place<'a> {
    /// Through its admin API at this URL.
    Url(&'a str),
    /// The `up` on this machine.
    Local,
}

impl Place<'_> {
    /// The option that reaches it again (` --url …`, or nothing).
    fn flag(&self) -> String {
        match self {
            Place::Url(u) => format!(" --url {u}"),
            Place::Local => String::new(),
        }
    }

    /// It, in a sentence.
    fn name(&self) -> String {
        match self {
            Place::Url(u) => u.to_string(),
            Place::Local => "the running stack".to_string(),
        }
    }
}

/// The dry run's files as the local plan lists them (deletions, the rest),
/// and a note for every path whose list the server cut.
fn plan_lists(plan: &Value) -> (Vec<PathBuf>, Vec<PathBuf>, Vec<String>) {
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
fn totals(paths: &Value) -> (u64, u64) {
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
fn restored_lines(done: &Value, place: &Place) -> Vec<String> {
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
    let short = full.get(..12).unwrap_or(full);
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

/// `GET /admin/persist`, which must say persistence is on.
fn enabled_state(admin: &mut Admin) -> Result<Value> {
    match persist_state(admin)? {
        Some(v) if v["enabled"] == Value::Bool(true) => Ok(v),
        Some(_) => bail!(
            "persistence is off on the stack at {}: add a `persist:` section to its stack.yaml",
            admin.base.display
        ),
        None => bail!("{}", no_api(admin)),
    }
}

/// The persistence state, or `None` from a gateway without the API.
pub(crate) fn persist_state(admin: &mut Admin) -> Result<Option<Value>> {
    let res = admin.request("GET", "/admin/persist", None, None)?;
    match res.status {
        200 => match res.json() {
            Some(v @ Value::Object(_)) => Ok(Some(v)),
            _ => bail!(
                "the gateway at {} answered /admin/persist with something that is not JSON",
                admin.base.display
            ),
        },
        404 => Ok(None),
        _ => Err(failure(admin, &res, "status")),
    }
}

fn no_api(admin: &Admin) -> String {
    format!(
        "the gateway at {} has no backup API (an older stackctl): update the stack's image, or run the command inside the container",
        admin.base.display
    )
}

/// An error answer as a message that says what to do next.
fn failure(admin: &Admin, res: &Response, op: &str) -> anyhow::Error {
    let said = res.error_message();
    let said = said.as_deref().unwrap_or("");
    if res.status == 404 && said.is_empty() {
        return anyhow!("{}", no_api(admin));
    }
    refusal(&Place::Url(&admin.base.display), res.status, said, op)
}

/// A refusal of the stack at `place` (the HTTP status and what it said)
/// as a message that says what to do next.
fn refusal(place: &Place, status: u16, said: &str, op: &str) -> anyhow::Error {
    let (url, flag) = (place.name(), place.flag());
    let said = said.trim_end_matches('.');
    match status {
        409 if said.contains("persistence is off") => anyhow!("{said}"),
        409 => anyhow!(
            "{}; wait for it to finish (`stackctl status{flag}` shows it), then run the {op} again",
            or(said, "another backup or restore is running")
        ),
        // A restore pushes its undo snapshot first; when that fails, nothing
        // was restored and the server's message says so.
        502 if op == "restore" => anyhow!(
            "{}; fix the remote (token, network), then run the restore again",
            or(said, "the snapshot of the current state could not be pushed; nothing was restored")
        ),
        502 => anyhow!(
            "{}; the snapshot stays queued on the stack and goes out with the next backup: fix the remote (token, network), then run `stackctl backup{flag}` again",
            or(said, "the push to the remote failed")
        ),
        400 | 404 if !said.is_empty() => anyhow!("{said}"),
        status => anyhow!(
            "{} answered {status} to the {op}{}{}",
            match place {
                Place::Url(_) => format!("the gateway at {url}"),
                Place::Local => "the running `stackctl up`".to_string(),
            },
            if said.is_empty() { "" } else { ": " },
            said
        ),
    }
}

fn or<'a>(said: &'a str, default: &'a str) -> &'a str {
    if said.is_empty() {
        default
    } else {
        said
    }
}

/// Shows the server's progress line on stderr while a long call runs (the
/// remote side of the local commands' plain progress lines): polls
/// `GET /admin/persist` and prints `running.progress` when it changes.
struct Watch {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Watch {
    fn start(admin: &Admin) -> Watch {
        let stop = Arc::new(AtomicBool::new(false));
        let mut poller = admin.clone();
        poller.with_timeout(Duration::from_secs(15));
        let flag = stop.clone();
        let every = crate::persist::progress::interval()
            .clamp(Duration::from_millis(500), Duration::from_secs(10));
        let thread = std::thread::spawn(move || {
            let mut last = String::new();
            while !flag.load(Ordering::Relaxed) {
                let next = Instant::now() + every;
                while Instant::now() < next {
                    if flag.load(Ordering::Relaxed) {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
                // Errors (a busy link) only cost a progress line.
                let Ok(res) = poller.request("GET", "/admin/persist", None, None) else {
                    continue;
                };
                let state = res.json().unwrap_or(Value::Null);
                if let Some(line) = running_line(&state["running"]) {
                    if line != last && !flag.load(Ordering::Relaxed) {
                        eprintln!("{line}");
                        last = line;
                    }
                }
            }
        });
        Watch {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// `running` as one progress line, or `None` when nothing runs.
fn running_line(running: &Value) -> Option<String> {
    let op = running["op"].as_str()?;
    Some(match running["progress"].as_str() {
        Some(p) if !p.is_empty() => format!("{op}: {p}"),
        _ => format!("{op}: running"),
    })
}

// ---------------------------------------------------------------- status (pure)

/// The persistence part of `stackctl status`, from `GET /admin/persist`.
/// Written defensively: missing fields are left out, never invented.
pub(crate) fn render_persist(v: &Value) -> String {
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
        let snap = r["snapshot"].as_str().map(|s| s.get(..12).unwrap_or(s));
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
                id.get(..12).unwrap_or(id),
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
        line("last push", format!("{}{at}", id.get(..12).unwrap_or(id)));
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

/// An RFC 3339 time as the snapshot table shows it, marked UTC.
fn time(v: &Value) -> String {
    match v.as_str() {
        Some(t) => {
            let shown = crate::cmd::progress::rfc3339_shown(t);
            if shown == t {
                shown
            } else {
                format!("{shown} UTC")
            }
        }
        None => "-".to_string(),
    }
}

fn count(v: &Value) -> String {
    v.as_u64()
        .map(|n| n.to_string())
        .unwrap_or_else(|| "-".into())
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;
