//! How a local `backup`, `restore` or `snapshots` reaches the workdir: the
//! manifest's `persist:` section, the running `up` through the control
//! socket when there is one (it owns the workdir), the persister otherwise.

use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value;

use crate::control;
use crate::manifest::{Manifest, Persist};
use crate::persist::Persister;

/// The manifest's `persist:` section, or the error that says how to add it.
pub(super) fn persist(m: &Manifest) -> Result<&Persist> {
    m.persist.as_ref().ok_or_else(|| {
        anyhow!("persistence is off in `{}`: set `persist.remote` (e.g. GITHUB_REPO) and `persist.paths`", m.file.display())
    })
}

/// Ask the running `up`, if any; with `on`, the progress it sends
/// meanwhile goes there (see [`ask_up`]).
pub(super) fn ask(p: &Persist, cmd: &str, on: Option<Progress<'_>>) -> Result<Option<Value>> {
    match request(&p.workdir, cmd, on)? {
        None => Ok(None),
        Some(v) if v["ok"] == Value::Bool(true) => Ok(Some(v)),
        Some(v) => bail!(
            "{}",
            v["error"]
                .as_str()
                .unwrap_or("the running `stackctl up` refused")
        ),
    }
}

/// Open the workdir for a command run without `up`.
pub(super) fn open(p: &Persist) -> Result<Persister> {
    Persister::open(p).map_err(|e| anyhow!("{e}"))
}

/// Whether a restore into the workdir completed (its marker; not merely a
/// `repo.git` that opening it or a look at the remote created).
pub(super) fn restored_here(p: &Persist) -> bool {
    crate::persist::restore::marker::exists(&p.workdir)
}

/// One request to the `up` on `workdir` that must be running (a restore
/// through it): its answer, or the HTTP status the API would have given
/// and the error. Unlike [`ask`], an `up` that is gone is an error. With
/// `on`, the progress it sends meanwhile goes there.
pub(super) fn ask_up(
    workdir: &Path,
    cmd: &str,
    on: Option<Progress<'_>>,
) -> Result<std::result::Result<Value, (u16, String)>> {
    let Some(v) = request(workdir, cmd, on)? else {
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

/// Where the progress the running `up` streams goes ([`control::request_with_progress`]).
pub(super) type Progress<'a> = &'a mut dyn FnMut(crate::persist::lifecycle::Event);

/// One request through the control socket of `workdir` (`None`: no `up`
/// listens there), in protocol 2 when there is `on` for its progress.
fn request(workdir: &Path, cmd: &str, on: Option<Progress<'_>>) -> Result<Option<Value>> {
    match on {
        Some(on) => control::request_with_progress(workdir, cmd, on),
        None => control::request(workdir, cmd),
    }
    .with_context(|| talk(workdir))
}

/// The context of a failed request through the control socket.
fn talk(workdir: &Path) -> String {
    format!(
        "cannot talk to the running `stackctl up` through `{}`",
        control::socket_path(workdir).display()
    )
}
