//! How the `--url` commands (and a restore through the control socket)
//! talk to a stack: the long calls with their progress lines, the
//! persistence state they check first, and the refusals turned into
//! messages that say what to do next. The server's `{"error"}` messages
//! already say it, so they are shown as sent, with the next step for the
//! cases only this side knows (which command to run again).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};
use serde_json::Value;

use super::print::running_line;
use crate::client::{Admin, Response};
use crate::control::LONG_CALL;

/// Where the stack a command talks to is, for messages and the commands
/// they suggest.
pub(super) enum Place<'a> {
    /// Through its admin API at this URL.
    Url(&'a str),
    /// The `up` on this machine.
    Local,
}

impl Place<'_> {
    /// The option that reaches it again (` --url …`, or nothing).
    pub(super) fn flag(&self) -> String {
        match self {
            Place::Url(u) => format!(" --url {u}"),
            Place::Local => String::new(),
        }
    }

    /// It, in a sentence.
    pub(super) fn name(&self) -> String {
        match self {
            Place::Url(u) => u.to_string(),
            Place::Local => "the running stack".to_string(),
        }
    }
}

/// `POST path` with `body` for the command `op`: the answer (`null` if it
/// is no JSON), or the refusal as a message that says what to do next.
/// `long`: a backup or a real restore, which may take minutes and shows
/// the server's progress meanwhile.
pub(super) fn post(
    admin: &mut Admin,
    path: &str,
    body: &Value,
    op: &str,
    long: bool,
) -> Result<Value> {
    let watch = long.then(|| Watch::start(admin));
    if long {
        admin.with_timeout(LONG_CALL);
    }
    let res = admin.request("POST", path, Some(body), None);
    drop(watch);
    let res = res?;
    if res.status != 200 {
        return Err(failure(admin, &res, op));
    }
    Ok(res.json().unwrap_or(Value::Null))
}

/// `GET /admin/persist`, which must say persistence is on.
pub(super) fn enabled_state(admin: &mut Admin) -> Result<Value> {
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
pub(super) fn persist_state(admin: &mut Admin) -> Result<Option<Value>> {
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
pub(super) fn failure(admin: &Admin, res: &Response, op: &str) -> anyhow::Error {
    let said = res.error_message();
    let said = said.as_deref().unwrap_or("");
    if res.status == 404 && said.is_empty() {
        return anyhow!("{}", no_api(admin));
    }
    refusal(&Place::Url(&admin.base.display), res.status, said, op)
}

/// A refusal of the stack at `place` (the HTTP status and what it said)
/// as a message that says what to do next.
pub(super) fn refusal(place: &Place, status: u16, said: &str, op: &str) -> anyhow::Error {
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
