//! [`resolve_url`]: where `persist.remote` points (GitHub, an HTTP(S) URL, a
//! local path), refusing SSH and credentials in the URL.

use std::path::PathBuf;

use super::RemoteError;

/// Where the repository lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteUrl {
    /// The URL handed to libgit2 (never holds credentials).
    pub url: String,
    /// A local path (plain path or `file://`): created as a bare repository if absent.
    pub local: Option<PathBuf>,
    /// Does the transport support shallow fetches? (libgit2's local transport does not.)
    pub shallow_ok: bool,
}

/// Resolve `persist.remote`: `owner/repo` → GitHub over HTTPS; URLs as they
/// are (credentials in them are refused, use `persist.token`); an absolute
/// path or `file://` URL → a local repository.
pub fn resolve_url(remote: &str) -> Result<RemoteUrl, RemoteError> {
    let r = remote.trim();
    let bad = || RemoteError::BadRemote(crate::redact::url(r));
    if r.is_empty() {
        return Err(bad());
    }
    if let Some(path) = r.strip_prefix("file://") {
        if !path.starts_with('/') {
            return Err(bad());
        }
        return Ok(RemoteUrl {
            url: r.to_string(),
            local: Some(PathBuf::from(path)),
            shallow_ok: false,
        });
    }
    if r.starts_with('/') {
        return Ok(RemoteUrl {
            url: r.to_string(),
            local: Some(PathBuf::from(r)),
            shallow_ok: false,
        });
    }
    if r.contains("://") {
        if is_ssh(r) {
            return Err(RemoteError::Unsupported {
                url: crate::redact::url(r),
                message: "SSH remotes are not supported".into(),
            });
        }
        // A token in the URL would end up in logs and errors: refused, as
        // are other schemes, no host and a bad port.
        if crate::weburl::check_remote(r).is_err() {
            return Err(bad());
        }
        return Ok(RemoteUrl {
            url: r.to_string(),
            local: None,
            shallow_ok: true,
        });
    }
    let ok_part = |s: &str| {
        !s.is_empty()
            && s != "."
            && s != ".."
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    };
    match r.split_once('/') {
        Some((owner, repo)) if ok_part(owner) && ok_part(repo) => {
            let repo = repo.strip_suffix(".git").unwrap_or(repo);
            Ok(RemoteUrl {
                url: format!("https://github.com/{owner}/{repo}.git"),
                local: None,
                shallow_ok: true,
            })
        }
        _ => Err(bad()),
    }
}

/// Is `remote` an SSH URL (`ssh://`, `git+ssh://`, or scp-like
/// `user@host:path`)? libgit2 is built here without SSH.
pub fn is_ssh(remote: &str) -> bool {
    let r = remote.trim();
    match r.split_once("://") {
        Some((scheme, _)) => {
            let scheme = scheme.to_ascii_lowercase();
            scheme == "ssh" || scheme == "git+ssh" || scheme == "ssh+git"
        }
        None => {
            // scp-like: `user@host:path` (a colon before any slash).
            let head = r.split('/').next().unwrap_or_default();
            !r.starts_with('/') && head.contains('@') && head.contains(':')
        }
    }
}
