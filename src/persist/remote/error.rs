//! [`RemoteError`], and what libgit2's messages say about a failure.

use std::path::PathBuf;

use crate::persist::deadline::Stop;

/// Errors talking to the remote.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    /// `persist.remote` is not something we can reach.
    #[error("`persist.remote` `{0}` is not `owner/repo`, a git URL, or an absolute path: fix it in stack.yaml")]
    BadRemote(String),
    /// Authentication failed.
    #[error("authentication to `{url}` failed: {message}; check `persist.token` (it needs read/write access to contents)")]
    Auth {
        /// The remote URL (never with credentials).
        url: String,
        /// What the transport said.
        message: String,
    },
    /// The server answered that the repository does not exist (HTTP 404).
    /// Not retried: a misspelled repository would otherwise keep a Space
    /// "restoring" forever. GitHub also says 404 for a private repository
    /// the token cannot see.
    #[error("the backup repository `{url}` was not found: {message}; check `persist.remote` (GITHUB_REPO / github_project) and that the token can read it, and create the repository first if it is new")]
    NotFound {
        /// The remote URL (never with credentials).
        url: String,
        /// What the transport said.
        message: String,
    },
    /// The remote could not be reached or the transfer failed: retryable.
    #[error("cannot reach `{url}`: {message}; will retry, check the network or the URL")]
    Network {
        /// The remote URL.
        url: String,
        /// What the transport said.
        message: String,
    },
    /// The URL's protocol is not built in (SSH: libgit2 here has none).
    #[error("`persist.remote` `{url}`: {message}; this stackctl speaks https, http, git:// and local paths, not SSH: use the repository's https URL (or `owner/repo` for GitHub) with the token in `persist.token`")]
    Unsupported {
        /// The remote URL (never with credentials).
        url: String,
        /// What is not supported.
        message: String,
    },
    /// The disk is full or a directory is not writable (the workdir, or a
    /// local-path remote): not a network problem, so not retried.
    #[error("cannot write while talking to `{url}`: {message}; free disk space or fix the permissions of `persist.workdir` (and of a local-path remote), then try again")]
    Storage {
        /// The remote URL (never with credentials).
        url: String,
        /// What the system said.
        message: String,
    },
    /// The server redirected to another host: not followed, never retried.
    #[error("the backup repository `{url}` redirected to another host ({message}); credentials are only sent to the remote's own host: set `persist.remote` to the repository's real URL")]
    Redirect {
        /// The remote URL (never with credentials).
        url: String,
        /// What the transport said.
        message: String,
    },
    /// The remote refused the update of a ref.
    #[error("the remote rejected the update of `{refname}`: {message}; it may have moved (another writer) or protect the branch")]
    Rejected {
        /// The ref.
        refname: String,
        /// The remote's reason.
        message: String,
    },
    /// A local git operation failed.
    #[error("git error in the workdir: {0}")]
    Local(String),
    /// Creating the local bare repository for a path remote failed.
    #[error("cannot create a bare repository at `{path}`: {message}; check that the directory is writable")]
    CreateLocal {
        /// The path.
        path: PathBuf,
        /// What git said.
        message: String,
    },
    /// The operation's deadline passed or it was cancelled ([`deadline`](crate::persist::deadline)).
    #[error("gave up on `{url}`: {stop}")]
    Stopped {
        /// The remote URL.
        url: String,
        /// Why.
        stop: Stop,
    },
}

impl RemoteError {
    /// Is a retry likely to help?
    pub fn is_retryable(&self) -> bool {
        matches!(self, RemoteError::Network { .. })
    }
}

/// What libgit2 said, or, when it set no message (it answers "no error"
/// after some failed writes, e.g. on a full disk), what usually causes that.
pub fn reason(e: &git2::Error) -> String {
    let m = e.message().trim();
    if m.is_empty() || m == "no error" || m == "an unknown git error occurred" {
        "git gave no reason (usually a full disk or a directory it cannot write)".into()
    } else {
        m.to_string()
    }
}

/// Does `message` (any case) say the local disk is full or not writable?
/// Those are not network errors: retrying does not help.
pub fn is_storage_problem(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    [
        "no space left on device",
        "disk quota exceeded",
        "read-only file system",
        "permission denied",
        "operation not permitted",
        "git gave no reason",
    ]
    .iter()
    .any(|p| m.contains(p))
}
