//! The running gateway's admin API, with the password to use it: where the
//! password comes from, what a wrong one says, and the calls the commands
//! make.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use serde_json::{json, Value};

use super::http::{BaseUrl, Response, Transport};
use super::table::post_body;
use crate::cli::AdminArgs;
use crate::manifest::Manifest;

/// One admin call; the API answers from memory (the password check is a
/// deliberately slow hash, still well under this).
pub(super) const IO_TIMEOUT: Duration = Duration::from_secs(15);
/// Attempts of a read-modify-write when someone else changes the table meanwhile (412).
const STALE_ATTEMPTS: usize = 3;

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
    pub(super) candidates: Vec<(String, Source)>,
    /// The password file named in hints.
    pub(super) password_file: Option<PathBuf>,
    /// Bounds each call (a backup answers when pushed: see
    /// [`Admin::with_timeout`]).
    pub(super) timeout: Duration,
    pub(super) transport: Transport,
}

impl Admin {
    /// The gateway `args` name, with its password. `manifest` is `None`
    /// only with `--url` and no manifest on this machine.
    pub(crate) fn resolve(manifest: Option<&Manifest>, args: &AdminArgs) -> Result<Admin> {
        let gateway = manifest.and_then(|m| m.gateway.as_ref());
        let base = match (&args.url, manifest) {
            (Some(url), _) => BaseUrl::parse(url)?,
            (None, Some(m)) => match gateway {
                Some(g) => BaseUrl::from_listen(g.listen)?,
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
            transport: Transport::new()?,
            base,
            candidates,
            password_file,
            timeout: IO_TIMEOUT,
        })
    }

    /// The same gateway with each call bounded by `timeout`.
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
            let res = self
                .transport
                .send(
                    &self.base,
                    method,
                    path,
                    password,
                    body.as_deref(),
                    if_match,
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
                300..=399 => {
                    // Never followed: the password header would go along to
                    // wherever the answer points.
                    let to = match res.header("location") {
                        Some(l) => format!(" to {}", l.chars().take(200).collect::<String>()),
                        None => String::new(),
                    };
                    bail!(
                        "the gateway at {} answered {} (a redirect{to}) to {method} {path}; stackctl never follows redirects, so the admin password is not sent elsewhere: pass the address the stack answers on with --url",
                        self.base.display,
                        res.status
                    );
                }
                _ => return Ok(res),
            }
        }
    }

    /// The route table and its ETag.
    pub(crate) fn table(&mut self) -> Result<(Value, Option<String>)> {
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
    pub(crate) fn modify(&mut self, mut edit: impl FnMut(&mut Value) -> Result<()>) -> Result<()> {
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
    pub(crate) fn change_password(&mut self, new: &str) -> Result<String> {
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
pub(super) fn read_password_file(path: &Path) -> Result<Option<String>> {
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
