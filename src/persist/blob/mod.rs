//! Blob stores: where the bytes of large files go, named by SHA-256.
//!
//! - [`dir`]: a local or mounted directory (`dir:PATH`).
//! - [`lfs`]: a Git LFS server through the batch API (basic transfer).
//! - [`github`]: assets of GitHub releases.
//! - `stream`: the verifying readers and writers, byte counting and [`download_to`], shared by all three.
//!
//! Every store streams (memory stays flat in the file size) and verifies:
//! [`VerifyingReader`] feeds an upload and refuses to hand over the last
//! bytes of a file whose content no longer hashes to its pointer (a file
//! changed while it was uploaded never becomes a complete object under the
//! wrong name), and [`download_to`] checks size and SHA-256 of what it
//! received before anything is renamed into place.
//!
//! Both are also where byte progress is counted ([`ByteCounter`],
//! [`counting`]): every store moves its bytes through them, so a transfer
//! is measured the same way whatever the store.

pub mod dir;
pub mod github;
pub mod lfs;
mod stream;

pub use stream::{
    counting, download_to, hash_file, hash_reader, open_verified, start_counting, ByteCounter,
    HashingWriter, VerifyingReader,
};

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::deadline::{self, Stop};
use super::pointer::{OriginalPointer, Pointer};

/// Buffer for streaming hashes and copies: large enough for throughput,
/// small enough that memory stays flat.
pub const CHUNK: usize = 1 << 20;

/// Errors of the blob stores.
#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    /// A local file could not be read or written.
    #[error("cannot {what} `{path}`: {source}")]
    Io {
        /// What was being done (`read`, `write`, ...).
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// The server could not be reached, or the transfer broke off: retryable.
    #[error("cannot reach `{url}`: {message}; will retry, check the network")]
    Network {
        /// The URL (never with credentials).
        url: String,
        /// What failed.
        message: String,
    },
    /// The server answered with an error status.
    #[error("`{url}` answered {status}: {message}")]
    Http {
        /// The URL.
        url: String,
        /// The HTTP status.
        status: u16,
        /// The server's message.
        message: String,
    },
    /// The token was refused.
    #[error("the blob store refused the credentials at `{url}` ({status}): check `persist.token` (it needs write access to the repository's contents or LFS)")]
    Auth {
        /// The URL.
        url: String,
        /// The HTTP status.
        status: u16,
    },
    /// The server's answer does not follow the protocol.
    #[error("unexpected answer from `{url}`: {message}")]
    Protocol {
        /// The URL.
        url: String,
        /// What was wrong.
        message: String,
    },
    /// The file changed while it was hashed and uploaded.
    #[error("`{path}` changed while it was uploaded; the snapshot is not pushed and the next one will pick up the new content")]
    Changed {
        /// The file.
        path: PathBuf,
    },
    /// Received bytes do not match the pointer: the stored blob is damaged.
    #[error("blob {expected} is corrupt in the store (received {got_size} bytes with sha256:{got_oid}); it was not written. Restore an older snapshot, or take a new one from a machine that still has the file")]
    Corrupt {
        /// What the pointer promises.
        expected: Pointer,
        /// Size received.
        got_size: u64,
        /// SHA-256 received.
        got_oid: String,
    },
    /// The store does not hold the blob.
    #[error(
        "blob {0} is not in the store; restore an older snapshot, or check `persist.large_files`"
    )]
    Missing(Pointer),
    /// An original pointer without an asset id names an asset its release
    /// does not hold.
    #[error("the release `{tag}` of `{repo}` has no asset `{name}` (the original's pointer names no asset id: its upload had failed); restore an older snapshot")]
    NoSuchAsset {
        /// `owner/name`.
        repo: String,
        /// The release's tag.
        tag: String,
        /// The asset name looked for.
        name: String,
    },
    /// The store cannot hold a blob this large.
    #[error("blob {pointer} exceeds the store's limit of {limit} bytes per blob; use `store: lfs` or `store: dir:PATH` for files this large")]
    TooLarge {
        /// The blob.
        pointer: Pointer,
        /// The store's limit.
        limit: u64,
    },
    /// The store cannot do this at all.
    #[error("{0}")]
    Unsupported(String),
    /// The operation's deadline passed or it was cancelled ([`deadline`]).
    #[error("gave up on the blob store: {0}")]
    Stopped(Stop),
}

impl BlobError {
    /// Is trying again later likely to help?
    pub fn is_retryable(&self) -> bool {
        match self {
            BlobError::Network { .. } => true,
            BlobError::Http { status, .. } => *status >= 500 || *status == 429 || *status == 408,
            _ => false,
        }
    }
}

/// A blob as a store lists it, for garbage collection ([`crate::persist::gc`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoredBlob {
    /// SHA-256 of the content (the blob's name).
    pub sha256: [u8; 32],
    /// Size in bytes, as stored.
    pub size: u64,
    /// How long ago it was stored (zero when in the future or unknown).
    pub age: Duration,
}

/// A content-addressed store of large-file bytes.
pub trait BlobStore: Send + Sync {
    /// What the store is, for logs (`dir:/x`, `lfs https://...`).
    fn describe(&self) -> String;

    /// Does the store hold this blob completely?
    fn has(&self, p: &Pointer) -> Result<bool, BlobError>;

    /// Upload the file at `src` (whose content hashed to `p`), streaming,
    /// and return only once the store holds it verified. A file changed
    /// since it was hashed gives [`BlobError::Changed`].
    fn put(&self, p: &Pointer, src: &Path) -> Result<(), BlobError>;

    /// Stream the blob into `out`. The caller verifies what it received.
    fn get(&self, p: &Pointer, out: &mut dyn Write) -> Result<(), BlobError>;

    /// Stream the blob one of the original's `.pointer` files refers to.
    /// Stores other than `github-release` look it up by its SHA-256.
    fn get_original(
        &self,
        _orig: &OriginalPointer,
        p: &Pointer,
        out: &mut dyn Write,
    ) -> Result<(), BlobError> {
        self.get(p, out)
    }

    /// The LFS endpoint clones should use (written to `.lfsconfig`).
    fn lfs_url(&self) -> Option<String> {
        None
    }

    /// Every blob stackctl stored here (named by SHA-256), with its age, for
    /// garbage collection. `None`: the store cannot list (nor delete) blobs,
    /// so garbage collection does nothing there. Only stackctl's own blobs
    /// are listed: objects named otherwise (the original's release assets,
    /// temp files) are never candidates for deletion.
    fn list(&self) -> Result<Option<Vec<StoredBlob>>, BlobError> {
        Ok(None)
    }

    /// Delete the blob named `sha256` (already gone: not an error).
    fn delete(&self, sha256: &[u8; 32]) -> Result<(), BlobError> {
        Err(BlobError::Unsupported(format!(
            "{} cannot delete blob {}",
            self.describe(),
            hex::encode(sha256)
        )))
    }
}

/// How long ago `t` was, zero when it is in the future.
pub fn age_of(t: std::time::SystemTime) -> Duration {
    std::time::SystemTime::now()
        .duration_since(t)
        .unwrap_or(Duration::ZERO)
}

/// How often and how patiently to retry a transfer.
#[derive(Debug, Clone, Copy)]
pub struct Retry {
    /// Attempts in all.
    pub attempts: u32,
    /// First delay (doubles).
    pub initial: Duration,
    /// Longest delay.
    pub max: Duration,
}

impl Default for Retry {
    fn default() -> Self {
        Retry {
            attempts: 4,
            initial: Duration::from_millis(500),
            max: Duration::from_secs(20),
        }
    }
}

impl Retry {
    /// Run `op` until it succeeds, fails for good, or attempts run out, by
    /// the persistence retry policy ([`crate::persist::retry`]).
    pub fn run<T>(&self, mut op: impl FnMut() -> Result<T, BlobError>) -> Result<T, BlobError> {
        let mut attempt = 1u32;
        let policy = crate::persist::retry::Policy {
            attempts: self.attempts.max(1),
            initial: self.initial,
            max: self.max,
        };
        policy.run(
            BlobError::is_retryable,
            |e, _| {
                tracing::warn!(error = %e, attempt, "blob transfer failed; retrying");
                attempt += 1;
            },
            || {
                deadline::check().map_err(BlobError::Stopped)?;
                op()
            },
        )
    }
}

/// Sending a request within the current operation's deadline.
pub(crate) trait SendLimited {
    /// `send`, with the request's timeout (60 s when it set none) shortened
    /// to the time left ([`deadline::clamp`]): a server that accepts and
    /// never answers cannot hold a shutdown past its budget.
    fn send_limited(self) -> reqwest::Result<reqwest::blocking::Response>;
}

impl SendLimited for reqwest::blocking::RequestBuilder {
    fn send_limited(self) -> reqwest::Result<reqwest::blocking::Response> {
        let (client, request) = self.build_split();
        let mut request = request?;
        let timeout = request
            .timeout()
            .copied()
            .unwrap_or(Duration::from_secs(60));
        *request.timeout_mut() = Some(deadline::clamp(timeout));
        client.execute(request)
    }
}

/// What `persist.large_files.store` resolves to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreConfig {
    /// No store: large files are skipped with a warning.
    None,
    /// `dir:PATH`.
    Dir(PathBuf),
    /// A Git LFS server at this endpoint (`.../info/lfs`).
    Lfs {
        /// The endpoint (batch at `{url}/objects/batch`).
        url: String,
    },
    /// Release assets in `repo`.
    GithubRelease {
        /// `owner/repo`.
        repo: String,
        /// The release tag (further shards get `-2`, `-3`, ...).
        tag: String,
        /// The REST API root (`https://api.github.com`; a fake in tests).
        api: String,
    },
}

/// The LFS endpoint of a git remote URL: `https://host/o/r(.git)` →
/// `https://host/o/r.git/info/lfs` (what git-lfs derives by default).
pub fn lfs_endpoint(remote_url: &str) -> Option<String> {
    // A query (it may hold a token) belongs to the remote, not to its
    // endpoint: the endpoint is written into `.lfsconfig`.
    let u = remote_url.split(['?', '#']).next().unwrap_or_default();
    let u = u.trim_end_matches('/');
    if !(u.starts_with("https://") || u.starts_with("http://")) {
        return None;
    }
    let base = if u.ends_with(".git") {
        u.to_string()
    } else {
        format!("{u}.git")
    };
    Some(format!("{base}/info/lfs"))
}

/// `owner/repo` of a GitHub remote (`owner/repo`, `https://github.com/owner/repo(.git)`).
pub fn github_repo(remote: &str) -> Option<String> {
    let r = remote
        .strip_prefix("https://github.com/")
        .or_else(|| remote.strip_prefix("git@github.com:"))
        .unwrap_or(remote);
    let r = r.trim_end_matches('/').trim_end_matches(".git");
    let (o, n) = r.split_once('/')?;
    let ok = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    };
    (ok(o) && ok(n)).then(|| format!("{o}/{n}"))
}

/// Build the configured store. `token` authenticates `lfs` and `github-release`.
pub fn open(
    cfg: &StoreConfig,
    token: Option<String>,
) -> Result<Option<Arc<dyn BlobStore>>, BlobError> {
    Ok(match cfg {
        StoreConfig::None => None,
        StoreConfig::Dir(path) => Some(Arc::new(dir::DirStore::new(path.clone()))),
        StoreConfig::Lfs { url } => Some(Arc::new(lfs::LfsStore::new(url, token)?)),
        StoreConfig::GithubRelease { .. } => {
            Some(Arc::new(github::GithubStore::from_config(cfg, token)?))
        }
    })
}

#[cfg(test)]
mod tests;
