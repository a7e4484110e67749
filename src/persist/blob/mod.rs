//! Blob stores: where the bytes of large files go, named by SHA-256.
//!
//! - [`dir`]: a local or mounted directory (`dir:PATH`).
//! - [`lfs`]: a Git LFS server through the batch API (basic transfer).
//! - [`github`]: assets of GitHub releases.
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

use std::cell::RefCell;
use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};

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

/// Bytes of the large file being transferred now, for progress: the only
/// cost on the transfer's path is one relaxed atomic add per chunk; a
/// reporter thread reads it at its own pace ([`crate::persist::progress`]).
#[derive(Debug, Default)]
pub struct ByteCounter(AtomicU64);

impl ByteCounter {
    /// Count `n` more bytes.
    pub fn add(&self, n: u64) {
        // Relaxed: the value is only displayed; nothing is ordered by it.
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    /// Bytes counted since the last [`ByteCounter::reset`].
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }

    /// Start again from zero: a retried transfer reads its file again.
    pub fn reset(&self) {
        self.0.store(0, Ordering::Relaxed);
    }
}

thread_local! {
    /// The counter uploads and downloads opened on this thread report to.
    static COUNTER: RefCell<Option<Arc<ByteCounter>>> = const { RefCell::new(None) };
}

/// Run `f` with `counter` counting the bytes of every upload
/// ([`open_verified`]) and download ([`download_to`]) opened on this thread
/// meanwhile. A thread-local rather than a parameter because
/// [`BlobStore::put`] only takes a path: each store opens the file itself
/// through [`open_verified`], which picks the counter up here. The reader
/// keeps its own handle, so it counts even when an HTTP client reads the
/// body on another thread.
pub fn counting<T>(counter: &Arc<ByteCounter>, f: impl FnOnce() -> T) -> T {
    struct Restore(Option<Arc<ByteCounter>>);
    impl Drop for Restore {
        fn drop(&mut self) {
            let previous = self.0.take();
            COUNTER.with(|c| *c.borrow_mut() = previous);
        }
    }
    let previous = COUNTER.with(|c| c.borrow_mut().replace(counter.clone()));
    // Restored on unwind too: a panic must not leave a stale counter behind.
    let _restore = Restore(previous);
    f()
}

/// The counter of the enclosing [`counting`], reset for a new transfer.
/// Stores that upload a file in parts call it once per file and hand the
/// counter to each part's reader ([`VerifyingReader::counted`]).
pub fn start_counting() -> Option<Arc<ByteCounter>> {
    let counter = COUNTER.with(|c| c.borrow().clone());
    if let Some(c) = &counter {
        c.reset();
    }
    counter
}

/// SHA-256 and size of everything `r` yields, streaming.
pub fn hash_reader(mut r: impl Read) -> io::Result<Pointer> {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    let mut size = 0u64;
    loop {
        let n = match r.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        h.update(&buf[..n]);
        size += n as u64;
    }
    Ok(Pointer {
        sha256: h.finalize().into(),
        size,
    })
}

/// The pointer of the file at `path` (streamed: flat memory).
pub fn hash_file(path: &Path) -> io::Result<Pointer> {
    hash_reader(fs::File::open(path)?)
}

/// Reads exactly `p.size` bytes from a file while hashing them, and fails
/// instead of returning the last bytes when the content does not hash to
/// `p`: the consumer (an upload) never sees a complete wrong object.
pub struct VerifyingReader<R> {
    inner: R,
    expected: Pointer,
    left: u64,
    hasher: Sha256,
    changed: Arc<AtomicBool>,
    counter: Option<Arc<ByteCounter>>,
}

impl<R: Read> VerifyingReader<R> {
    /// Wrap `inner`; `changed` is set when the content did not match.
    pub fn new(inner: R, expected: Pointer, changed: Arc<AtomicBool>) -> Self {
        Self {
            inner,
            expected,
            left: expected.size,
            hasher: Sha256::new(),
            changed,
            counter: None,
        }
    }

    /// Count what is read into `counter` (one part of a file uploaded in
    /// parts: the counter spans the whole file).
    pub fn counted(mut self, counter: Option<Arc<ByteCounter>>) -> Self {
        self.counter = counter;
        self
    }

    fn mismatch(&self) -> io::Error {
        self.changed.store(true, Ordering::SeqCst);
        io::Error::new(
            io::ErrorKind::InvalidData,
            "file changed while it was uploaded",
        )
    }
}

impl<R: Read> Read for VerifyingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        // An upload ends at the next chunk once its operation must stop.
        deadline::check().map_err(io::Error::other)?;
        if self.left == 0 || buf.is_empty() {
            if self.left == 0 && self.hasher.clone().finalize()[..] != self.expected.sha256 {
                return Err(self.mismatch());
            }
            return Ok(0);
        }
        let want = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        if n == 0 {
            // Shrunk since it was hashed.
            return Err(self.mismatch());
        }
        self.hasher.update(&buf[..n]);
        self.left -= n as u64;
        if let Some(c) = &self.counter {
            c.add(n as u64);
        }
        if self.left == 0 && self.hasher.clone().finalize()[..] != self.expected.sha256 {
            return Err(self.mismatch());
        }
        Ok(n)
    }
}

/// Open `src` for an upload of `p`: a verifying reader, and the flag it
/// sets when the file no longer matches.
pub fn open_verified(
    src: &Path,
    p: &Pointer,
) -> Result<(VerifyingReader<fs::File>, Arc<AtomicBool>), BlobError> {
    let f = fs::File::open(src).map_err(|source| BlobError::Io {
        what: "read",
        path: src.to_path_buf(),
        source,
    })?;
    let flag = Arc::new(AtomicBool::new(false));
    let reader = VerifyingReader::new(f, *p, flag.clone()).counted(start_counting());
    Ok((reader, flag))
}

/// A writer that hashes and counts what passes through.
pub struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    size: u64,
    counter: Option<Arc<ByteCounter>>,
}

impl<W: Write> HashingWriter<W> {
    /// Wrap `inner`.
    pub fn new(inner: W) -> Self {
        Self {
            inner,
            hasher: Sha256::new(),
            size: 0,
            counter: None,
        }
    }

    /// What was written, and the inner writer.
    pub fn finish(self) -> (Pointer, W) {
        (
            Pointer {
                sha256: self.hasher.finalize().into(),
                size: self.size,
            },
            self.inner,
        )
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        // A download ends at the next chunk once its operation must stop.
        deadline::check().map_err(io::Error::other)?;
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.size += n as u64;
        if let Some(c) = &self.counter {
            c.add(n as u64);
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Download blob `p` into a new file `tmp` (mode 0600), verifying size and
/// SHA-256; on any failure `tmp` is removed. `fetch` does the transfer
/// (`store.get` or `store.get_original`); it is retried on network errors.
pub fn download_to(
    retry: &Retry,
    p: &Pointer,
    tmp: &Path,
    mut fetch: impl FnMut(&mut dyn Write) -> Result<(), BlobError>,
) -> Result<(), BlobError> {
    let io_err = |source| BlobError::Io {
        what: "write",
        path: tmp.to_path_buf(),
        source,
    };
    let result = retry.run(|| {
        let _ = fs::remove_file(tmp);
        let f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(tmp)
            .map_err(io_err)?;
        let mut w = HashingWriter::new(io::BufWriter::with_capacity(CHUNK, f));
        w.counter = start_counting();
        fetch(&mut w)?;
        let (got, buf) = w.finish();
        let f = buf.into_inner().map_err(|e| io_err(e.into_error()))?;
        if got != *p {
            return Err(BlobError::Corrupt {
                expected: *p,
                got_size: got.size,
                got_oid: got.oid(),
            });
        }
        f.sync_all().map_err(io_err)
    });
    if result.is_err() {
        let _ = fs::remove_file(tmp);
    }
    result
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
mod tests {
    use super::*;

    fn ptr(bytes: &[u8]) -> Pointer {
        hash_reader(bytes).unwrap()
    }

    #[test]
    fn hashing_matches_sha256sum_of_known_input() {
        let p = ptr(b"abc");
        assert_eq!(
            p.oid(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(p.size, 3);
    }

    #[test]
    fn a_verifying_reader_withholds_the_last_bytes_of_changed_content() {
        let good = vec![5u8; 3 * CHUNK + 7];
        let p = ptr(&good);
        let flag = Arc::new(AtomicBool::new(false));
        let mut out = Vec::new();
        VerifyingReader::new(&good[..], p, flag.clone())
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, good);
        assert!(!flag.load(Ordering::SeqCst));

        let mut bad = good.clone();
        let last = bad.len() - 1;
        bad[last] = 6;
        let mut out = Vec::new();
        let mut r = VerifyingReader::new(&bad[..], p, flag.clone());
        let mut buf = vec![0u8; 4096];
        let err = loop {
            match r.read(&mut buf) {
                Ok(n) => out.extend_from_slice(&buf[..n]),
                Err(e) => break e,
            }
        };
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert!(out.len() < bad.len(), "the last bytes were withheld");
        assert!(flag.load(Ordering::SeqCst));

        // Shrunk: fails too.
        let flag = Arc::new(AtomicBool::new(false));
        let mut out = Vec::new();
        assert!(VerifyingReader::new(&good[..10], p, flag.clone())
            .read_to_end(&mut out)
            .is_err());
        assert!(flag.load(Ordering::SeqCst));
    }

    #[test]
    fn remotes_map_to_lfs_endpoints_and_github_repos() {
        assert_eq!(
            lfs_endpoint("https://huggingface.co/datasets/u/d").as_deref(),
            Some("https://huggingface.co/datasets/u/d.git/info/lfs")
        );
        assert_eq!(
            lfs_endpoint("https://github.com/o/r.git").as_deref(),
            Some("https://github.com/o/r.git/info/lfs")
        );
        assert_eq!(lfs_endpoint("/srv/repo.git"), None);
        assert_eq!(
            lfs_endpoint("https://h/o/r.git?access_token=x").as_deref(),
            Some("https://h/o/r.git/info/lfs")
        );
        assert_eq!(github_repo("o/r").as_deref(), Some("o/r"));
        assert_eq!(
            github_repo("https://github.com/o/r.git").as_deref(),
            Some("o/r")
        );
        assert_eq!(github_repo("https://example.org/o/r"), None);
    }

    #[test]
    fn downloads_are_verified_and_nothing_is_left_on_failure() {
        let d = tempfile::tempdir().unwrap();
        let tmp = d.path().join("t");
        let p = ptr(b"hello");
        let retry = Retry {
            attempts: 2,
            initial: Duration::ZERO,
            max: Duration::ZERO,
        };
        download_to(&retry, &p, &tmp, |w| {
            w.write_all(b"hello").map_err(|e| BlobError::Io {
                what: "write",
                path: PathBuf::new(),
                source: e,
            })
        })
        .unwrap();
        assert_eq!(fs::read(&tmp).unwrap(), b"hello");
        fs::remove_file(&tmp).unwrap();
        let e = download_to(&retry, &p, &tmp, |w| {
            w.write_all(b"hellO").map_err(|e| BlobError::Io {
                what: "write",
                path: PathBuf::new(),
                source: e,
            })
        })
        .unwrap_err();
        assert!(matches!(e, BlobError::Corrupt { .. }), "{e}");
        assert!(!tmp.exists());
    }
}
