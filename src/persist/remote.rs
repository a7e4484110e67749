//! The git remote: URL resolution, fetch and push with git2.
//!
//! The token only ever reaches libgit2 through the credentials callback (user
//! `x-access-token`, as GitHub expects): it is never in a URL, in the
//! workdir's `.git/config` (remotes are anonymous, nothing is saved), in a log
//! line or in an error message (messages are scrubbed anyway). A push checks
//! every ref's status, because `Remote::push` returns `Ok` on a rejected ref.
//!
//! Credentials never leave the remote's host (issue 12 item 4): libgit2 is
//! told to follow no redirect to another host, and the credentials callback
//! refuses any URL whose host and port are not the remote's, whatever
//! libgit2 decided about the redirect.

use std::cell::{Cell, RefCell};
use std::path::PathBuf;
use std::time::Duration;

use git2::{
    Cred, CredentialType, Direction, FetchOptions, Oid, PushOptions, RemoteCallbacks,
    RemoteRedirect, Repository,
};

use super::deadline::{self, Stop};

/// Marks the credentials callback's refusal of another host, so
/// [`Remote::classify`] can tell it from a network error.
const OFFSITE: &str = "refusing to send credentials to another host";

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
    /// The operation's deadline passed or it was cancelled ([`deadline`]).
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

/// Age past which a ref lock in a local-path remote is taken as left by a
/// dead process.
pub const STALE_LOCK: Duration = Duration::from_secs(5);

/// How long libgit2 may take to connect (shortened by the operation's
/// deadline).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

/// Make the next connection libgit2 opens use `connect` and `read` as its
/// timeouts. libgit2 reads these process-wide options when it opens a
/// socket, so they are set right before each network step, from the
/// current operation's deadline. Without them libgit2 waits forever on a
/// server that accepts and never answers.
fn set_git_timeouts(connect: Duration, read: Duration) {
    static SET: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let ms = |d: Duration| i32::try_from(d.as_millis()).unwrap_or(i32::MAX).max(1);
    let _one_at_a_time = SET.lock().unwrap_or_else(|p| p.into_inner());
    // SAFETY: the options are two ints in libgit2's globals, written under
    // `SET`; persistence is their only user. Another persister in the same
    // process (tests) may open its socket with this operation's values:
    // only a timeout's length, never memory safety, is at stake.
    unsafe {
        let _ = git2::opts::set_server_connect_timeout_in_milliseconds(ms(connect));
        let _ = git2::opts::set_server_timeout_in_milliseconds(ms(read));
    }
}

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

/// How much history a fetch brings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Depth {
    /// The last `n` commits (restore needs only the tip).
    Shallow(i32),
    /// All of it (older snapshots, `restore --at`).
    Full,
}

/// The connection to one remote branch.
pub struct Remote {
    url: RemoteUrl,
    /// The URL as messages, logs and files show it (credentials redacted).
    shown: String,
    token: Option<String>,
    branch: String,
    /// How long libgit2 waits for the server to answer a read (shortened by
    /// the operation's deadline, [`deadline::clamp`]).
    pub timeout: Duration,
}

/// What the remote advertises for our branch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RemoteHead {
    /// The branch does not exist: the remote is confirmed empty for us.
    Missing,
    /// The branch points at this commit.
    At(Oid),
}

impl Remote {
    /// A remote for `branch` at `url`, authenticating with `token` if any.
    pub fn new(url: RemoteUrl, token: Option<String>, branch: &str) -> Self {
        let token = token.filter(|t| !t.is_empty());
        Self {
            shown: crate::redact::url(&url.url),
            url,
            token,
            branch: branch.to_string(),
            timeout: Duration::from_secs(60),
        }
    }

    /// The URL as users see it (user-info and query redacted).
    pub fn url(&self) -> &str {
        &self.shown
    }

    /// `refs/heads/<branch>`.
    pub fn branch_ref(&self) -> String {
        format!("refs/heads/{}", self.branch)
    }

    /// `refs/remotes/origin/<branch>`: where fetched heads land in the workdir.
    pub fn tracking_ref(&self) -> String {
        format!("refs/remotes/origin/{}", self.branch)
    }

    /// For a local path remote: create an empty bare repository if nothing is there.
    pub fn ensure_local(&self) -> Result<(), RemoteError> {
        let Some(path) = &self.url.local else {
            return Ok(());
        };
        if Repository::open_bare(path).is_ok() || Repository::open(path).is_ok() {
            return Ok(());
        }
        let mut opts = git2::RepositoryInitOptions::new();
        opts.bare(true).initial_head(&self.branch);
        Repository::init_opts(path, &opts)
            .map(|_| ())
            .map_err(|e| RemoteError::CreateLocal {
                path: path.clone(),
                message: e.message().to_string(),
            })
    }

    /// For a local-path remote: a ref lock left by a pusher killed mid-update
    /// (kill -9, power loss) blocks every later push. A ref update holds its
    /// lock for milliseconds, so one older than [`STALE_LOCK`] is removed;
    /// a younger one is waited for.
    fn clear_stale_local_lock(&self, refname: &str) {
        let Some(path) = &self.url.local else { return };
        let locks = [
            path.join(format!("{refname}.lock")),
            path.join("packed-refs.lock"),
        ];
        let deadline = std::time::Instant::now() + STALE_LOCK + Duration::from_secs(1);
        for lock in locks {
            while let Ok(meta) = std::fs::symlink_metadata(&lock) {
                let age = meta.modified().ok().and_then(|m| m.elapsed().ok());
                if age.is_some_and(|a| a >= STALE_LOCK) || std::time::Instant::now() >= deadline {
                    tracing::warn!(path = %lock.display(), "removing a stale lock in the local backup repository");
                    let _ = std::fs::remove_file(&lock);
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }

    fn callbacks<'a>(&'a self, tries: &'a Cell<u32>) -> RemoteCallbacks<'a> {
        let mut cb = RemoteCallbacks::new();
        let token = self.token.as_deref();
        let home = crate::weburl::origin(&self.url.url);
        cb.credentials(move |url, _user, allowed| {
            // libgit2 asks with the URL it is talking to, which after a
            // redirect may be another server: it gets nothing from us.
            let there = crate::weburl::origin(url);
            if there != home {
                let host = there.map_or_else(|| crate::redact::url(url), |(h, _)| h);
                return Err(git2::Error::from_str(&format!("{OFFSITE} `{host}`")));
            }
            // libgit2 calls again after a refusal: give up after one try
            // instead of looping forever on a wrong token.
            let n = tries.get();
            tries.set(n + 1);
            match token {
                Some(t) if n == 0 && allowed.contains(CredentialType::USER_PASS_PLAINTEXT) => {
                    Cred::userpass_plaintext("x-access-token", t)
                }
                _ => Err(git2::Error::from_str("no usable credentials")),
            }
        });
        // Cancelled or out of time: abort at the next sign of life.
        cb.transfer_progress(|_| deadline::check().is_ok());
        cb.sideband_progress(|_| deadline::check().is_ok());
        cb.push_negotiation(|_| {
            deadline::check().map_err(|stop| git2::Error::from_str(&stop.to_string()))
        });
        cb
    }

    /// Before a step that opens a connection: stop if the operation's limit
    /// is spent, else give libgit2 timeouts that end by its deadline.
    fn begin_network(&self) -> Result<(), RemoteError> {
        deadline::check().map_err(|stop| self.stopped(stop))?;
        set_git_timeouts(
            deadline::clamp(CONNECT_TIMEOUT),
            deadline::clamp(self.timeout),
        );
        Ok(())
    }

    fn stopped(&self, stop: Stop) -> RemoteError {
        RemoteError::Stopped {
            url: self.shown.clone(),
            stop,
        }
    }

    /// An anonymous remote for our URL (nothing saved in `.git/config`).
    /// Connections opened with `connect_auth` take their redirect policy
    /// from the repository's configuration, not from options: say there,
    /// once, that no redirect to another host is followed.
    fn anonymous<'r>(&self, repo: &'r Repository) -> Result<git2::Remote<'r>, git2::Error> {
        // Earlier versions let libgit2 write FETCH_HEAD, with the URL in it.
        let _ = std::fs::remove_file(repo.path().join("FETCH_HEAD"));
        let mut config = repo.config()?;
        if !matches!(config.get_bool("http.followRedirects"), Ok(false)) {
            config.set_bool("http.followRedirects", false)?;
        }
        repo.remote_anonymous(&self.url.url)
    }

    fn classify(&self, e: &git2::Error, tries: &Cell<u32>) -> RemoteError {
        // Whatever libgit2 made of it (a timeout, an aborted callback), an
        // operation whose limit is spent stopped because of it.
        if let Err(stop) = deadline::check() {
            return self.stopped(stop);
        }
        let message = self.scrub(&reason(e));
        let url = self.shown.clone();
        if e.code() == git2::ErrorCode::Auth
            || e.class() == git2::ErrorClass::Http && message.contains("401")
            || tries.get() > 0 && message.contains("credentials")
        {
            return RemoteError::Auth { url, message };
        }
        if message.contains(OFFSITE) || message.contains("cannot redirect") {
            return RemoteError::Redirect { url, message };
        }
        if message.contains("unsupported URL protocol") {
            return RemoteError::Unsupported { url, message };
        }
        if is_storage_problem(&message) {
            return RemoteError::Storage { url, message };
        }
        if e.class() == git2::ErrorClass::Http && message.contains("404") {
            return RemoteError::NotFound { url, message };
        }
        match e.class() {
            git2::ErrorClass::Net
            | git2::ErrorClass::Http
            | git2::ErrorClass::Ssl
            | git2::ErrorClass::Os
            | git2::ErrorClass::Ssh => RemoteError::Network { url, message },
            // A local path that vanished is as good as unreachable.
            _ if self.url.local.is_some() => RemoteError::Network { url, message },
            _ => RemoteError::Local(message),
        }
    }

    /// Remove the token, and credentials in any URL, from text that may
    /// reach a user, a log line or a file.
    pub fn scrub(&self, text: &str) -> String {
        let text = crate::redact::text(text);
        match &self.token {
            Some(t) if t.len() >= 4 => text.replace(t.as_str(), "***"),
            _ => text,
        }
    }

    /// Ask the remote where our branch is.
    pub fn head(&self, repo: &Repository) -> Result<RemoteHead, RemoteError> {
        self.advertised(repo, &self.branch_ref())
    }

    /// Fetch one remote ref (`src`) into the local ref `dst`; returns where it is.
    pub fn fetch_ref(
        &self,
        repo: &Repository,
        src: &str,
        dst: &str,
    ) -> Result<RemoteHead, RemoteError> {
        let head = self.advertised(repo, src)?;
        let RemoteHead::At(oid) = head else {
            return Ok(head);
        };
        if repo.find_commit(oid).is_err() {
            self.begin_network()?;
            let tries = Cell::new(0);
            let mut remote = self
                .anonymous(repo)
                .map_err(|e| self.classify(&e, &tries))?;
            let mut fo = FetchOptions::new();
            fo.remote_callbacks(self.callbacks(&tries));
            fo.download_tags(git2::AutotagOption::None);
            fo.follow_redirects(RemoteRedirect::None);
            // FETCH_HEAD would hold the URL, query and all; we keep our own refs.
            fo.update_fetchhead(false);
            let spec = format!("+{src}:{dst}");
            remote
                .fetch(&[spec.as_str()], Some(&mut fo), None)
                .map_err(|e| self.classify(&e, &tries))?;
        }
        repo.reference(dst, oid, true, "stackctl fetch")
            .map_err(|e| RemoteError::Local(self.scrub(&reason(&e))))?;
        Ok(head)
    }

    /// Ask the remote where the ref `want` is.
    pub fn advertised(&self, repo: &Repository, want: &str) -> Result<RemoteHead, RemoteError> {
        Ok(self
            .list_refs(repo, want)?
            .into_iter()
            .find(|(name, _)| name == want)
            .map_or(RemoteHead::Missing, |(_, oid)| RemoteHead::At(oid)))
    }

    /// Fetch our branch into [`Remote::tracking_ref`]; shallow where the
    /// transport allows it and `depth` asks for it. Returns where the branch is.
    pub fn fetch(&self, repo: &Repository, depth: Depth) -> Result<RemoteHead, RemoteError> {
        self.fetch_with_progress(repo, depth, &|_, _| {})
    }

    /// [`Remote::fetch`], telling `progress` (objects received, objects in
    /// all) as the pack comes in.
    pub fn fetch_with_progress(
        &self,
        repo: &Repository,
        depth: Depth,
        progress: &dyn Fn(usize, usize),
    ) -> Result<RemoteHead, RemoteError> {
        let head = self.head(repo)?;
        let RemoteHead::At(oid) = head else {
            return Ok(head);
        };
        let deepen = depth == Depth::Full && repo.is_shallow();
        if deepen || repo.find_commit(oid).is_err() {
            self.begin_network()?;
            let tries = Cell::new(0);
            let mut remote = self
                .anonymous(repo)
                .map_err(|e| self.classify(&e, &tries))?;
            let mut fo = FetchOptions::new();
            let mut cb = self.callbacks(&tries);
            cb.transfer_progress(|stats| {
                progress(stats.received_objects(), stats.total_objects());
                deadline::check().is_ok()
            });
            fo.remote_callbacks(cb);
            fo.download_tags(git2::AutotagOption::None);
            fo.follow_redirects(RemoteRedirect::None);
            // FETCH_HEAD would hold the URL, query and all; we keep our own refs.
            fo.update_fetchhead(false);
            if self.url.shallow_ok {
                match depth {
                    Depth::Shallow(d) => {
                        fo.depth(d);
                    }
                    // libgit2's GIT_FETCH_DEPTH_UNSHALLOW.
                    Depth::Full if deepen => {
                        fo.depth(i32::MAX);
                    }
                    Depth::Full => {}
                }
            }
            let spec = format!("+{}:{}", self.branch_ref(), self.tracking_ref());
            remote
                .fetch(&[spec.as_str()], Some(&mut fo), None)
                .map_err(|e| self.classify(&e, &tries))?;
        }
        repo.reference(&self.tracking_ref(), oid, true, "stackctl fetch")
            .map_err(|e| RemoteError::Local(self.scrub(&reason(&e))))?;
        Ok(RemoteHead::At(oid))
    }

    /// Push local `commit` to the remote branch. Without a `lease` only a
    /// fast-forward is accepted. With one, the branch must still be at the
    /// leased head, checked on the very connection that pushes (so the
    /// server's own old-value check enforces it), and the update is forced:
    /// compare-and-swap, for rewriting history safely. A ref the remote
    /// rejects is an error.
    pub fn push(
        &self,
        repo: &Repository,
        commit: Oid,
        lease: Option<RemoteHead>,
    ) -> Result<(), RemoteError> {
        self.push_to(repo, commit, &self.branch_ref(), lease)?;
        repo.reference(&self.tracking_ref(), commit, true, "stackctl push")
            .map_err(|e| RemoteError::Local(self.scrub(&reason(&e))))?;
        Ok(())
    }

    /// Push `commit` to the remote ref `dst`; see [`Remote::push`].
    pub fn push_to(
        &self,
        repo: &Repository,
        commit: Oid,
        dst: &str,
        lease: Option<RemoteHead>,
    ) -> Result<(), RemoteError> {
        self.clear_stale_local_lock(dst);
        self.begin_network()?;
        // Pushes go from a ref: point a private one at the commit.
        let src = "refs/stackctl/push";
        repo.reference(src, commit, true, "stackctl push")
            .map_err(|e| RemoteError::Local(self.scrub(&reason(&e))))?;
        let tries = Cell::new(0);
        let connect_tries = Cell::new(0);
        let rejected: RefCell<Option<(String, String)>> = RefCell::new(None);
        let mut remote = self
            .anonymous(repo)
            .map_err(|e| self.classify(&e, &tries))?;
        let mut cb = self.callbacks(&tries);
        cb.push_update_reference(|refname, status| {
            if let Some(msg) = status {
                *rejected.borrow_mut() = Some((refname.to_string(), msg.to_string()));
            }
            Ok(())
        });
        let mut po = PushOptions::new();
        po.remote_callbacks(cb);
        po.follow_redirects(RemoteRedirect::None);
        let res = match lease {
            None => {
                let spec = format!("{src}:{dst}");
                remote.push(&[spec.as_str()], Some(&mut po))
            }
            Some(expected) => {
                let mut conn = remote
                    .connect_auth(Direction::Push, Some(self.callbacks(&connect_tries)), None)
                    .map_err(|e| self.classify(&e, &connect_tries))?;
                let want = dst.to_string();
                let found = conn
                    .list()
                    .map_err(|e| self.classify(&e, &connect_tries))?
                    .iter()
                    .find(|h| h.name() == want)
                    .map_or(RemoteHead::Missing, |h| RemoteHead::At(h.oid()));
                if found != expected {
                    return Err(RemoteError::Rejected {
                        refname: want,
                        message: format!(
                            "expected it at {}, found {}",
                            head_text(expected),
                            head_text(found)
                        ),
                    });
                }
                let spec = format!("+{src}:{want}");
                conn.remote().push(&[spec.as_str()], Some(&mut po))
            }
        };
        drop(po);
        if let Some((refname, message)) = rejected.into_inner() {
            return Err(RemoteError::Rejected {
                refname,
                message: self.scrub(&message),
            });
        }
        match res {
            Ok(()) => {}
            Err(e)
                if e.class() == git2::ErrorClass::Reference
                    || e.code() == git2::ErrorCode::NotFastForward =>
            {
                return Err(RemoteError::Rejected {
                    refname: dst.to_string(),
                    message: self.scrub(&reason(&e)),
                })
            }
            Err(e) => return Err(self.classify(&e, &tries)),
        }
        Ok(())
    }

    /// The remote refs whose names start with `prefix`, as advertised.
    pub fn list_refs(
        &self,
        repo: &Repository,
        prefix: &str,
    ) -> Result<Vec<(String, Oid)>, RemoteError> {
        self.begin_network()?;
        let tries = Cell::new(0);
        let mut remote = self
            .anonymous(repo)
            .map_err(|e| self.classify(&e, &tries))?;
        let conn = remote
            .connect_auth(Direction::Fetch, Some(self.callbacks(&tries)), None)
            .map_err(|e| self.classify(&e, &tries))?;
        let heads = conn.list().map_err(|e| self.classify(&e, &tries))?;
        Ok(heads
            .iter()
            .filter(|h| h.name().starts_with(prefix))
            .map(|h| (h.name().to_string(), h.oid()))
            .collect())
    }

    /// Delete the remote ref `dst` if it still points at `expected`
    /// (checked on the connection that deletes, like a leased push).
    pub fn delete_ref(
        &self,
        repo: &Repository,
        dst: &str,
        expected: Oid,
    ) -> Result<(), RemoteError> {
        self.clear_stale_local_lock(dst);
        self.begin_network()?;
        let tries = Cell::new(0);
        let rejected: RefCell<Option<String>> = RefCell::new(None);
        let mut remote = self
            .anonymous(repo)
            .map_err(|e| self.classify(&e, &tries))?;
        let mut conn = remote
            .connect_auth(Direction::Push, Some(self.callbacks(&tries)), None)
            .map_err(|e| self.classify(&e, &tries))?;
        let found = conn
            .list()
            .map_err(|e| self.classify(&e, &tries))?
            .iter()
            .find(|h| h.name() == dst)
            .map(|h| h.oid());
        if found != Some(expected) {
            // Gone already, or moved on (a newer snapshot parked there): keep it.
            return Ok(());
        }
        let push_tries = Cell::new(0);
        let mut cb = self.callbacks(&push_tries);
        cb.push_update_reference(|_, status| {
            if let Some(msg) = status {
                *rejected.borrow_mut() = Some(msg.to_string());
            }
            Ok(())
        });
        let mut po = PushOptions::new();
        po.remote_callbacks(cb);
        let res = conn
            .remote()
            .push(&[format!(":{dst}").as_str()], Some(&mut po));
        drop(po);
        if let Some(message) = rejected.into_inner() {
            return Err(RemoteError::Rejected {
                refname: dst.to_string(),
                message: self.scrub(&message),
            });
        }
        res.map_err(|e| self.classify(&e, &push_tries))
    }
}

fn head_text(h: RemoteHead) -> String {
    match h {
        RemoteHead::Missing => "no branch".into(),
        RemoteHead::At(o) => o.to_string(),
    }
}

/// Run `op` up to `policy.attempts` times while it fails with a retryable error,
/// waiting by the persistence retry policy ([`super::retry`]) in between.
pub fn with_retries<T>(
    policy: super::retry::Policy,
    op: impl FnMut() -> Result<T, RemoteError>,
) -> Result<T, RemoteError> {
    policy.run(
        RemoteError::is_retryable,
        |e, d| tracing::warn!(error = %e, retry_in_ms = d.as_millis() as u64, "persist remote operation failed"),
        op,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remotes_resolve() {
        let gh = |s: &str| Some(s.to_string());
        let table: &[(&str, Option<String>, bool)] = &[
            ("owner/repo", gh("https://github.com/owner/repo.git"), false),
            (
                "MoYang-king/astr_bot.backup",
                gh("https://github.com/MoYang-king/astr_bot.backup.git"),
                false,
            ),
            (
                "owner/repo.git",
                gh("https://github.com/owner/repo.git"),
                false,
            ),
            (
                "https://example.org/x/y.git",
                gh("https://example.org/x/y.git"),
                false,
            ),
            ("ssh://git@example.org/x/y.git", None, false),
            ("git@github.com:o/r.git", None, false),
            ("/srv/backup.git", gh("/srv/backup.git"), true),
            ("file:///srv/backup.git", gh("file:///srv/backup.git"), true),
            (
                "https://x-access-token:ghp_secret@github.com/o/r.git",
                None,
                false,
            ),
            ("ftp://x/y", None, false),
            ("owner/repo/extra", None, false),
            ("../x", None, false),
            ("", None, false),
            ("file://relative", None, false),
        ];
        for (input, want, local) in table {
            let got = resolve_url(input);
            assert_eq!(got.as_ref().ok().map(|u| u.url.clone()), *want, "{input}");
            if let Ok(u) = got {
                assert_eq!(u.local.is_some(), *local, "{input}");
                assert_eq!(u.shallow_ok, !local, "{input}");
            }
        }
    }

    #[test]
    fn a_refused_url_does_not_echo_its_token() {
        let e = resolve_url("https://x-access-token:ghp_secret@github.com/o/r.git").unwrap_err();
        assert!(!e.to_string().contains("ghp_secret"), "{e}");
    }

    /// Issue 12 item 5: a query-string token or an ssh password is in no
    /// message about the remote.
    #[test]
    fn messages_about_the_remote_hide_credentials_in_its_url() {
        for (url, secret) in [
            ("https://h/o/r.git?access_token=ghp_query", "ghp_query"),
            ("ssh://git:hunter2pw@h/o/r.git", "hunter2pw"),
        ] {
            // (SSH is refused by resolve_url now; the message still hides it.)
            let remote = RemoteUrl {
                url: url.into(),
                local: None,
                shallow_ok: true,
            };
            let r = Remote::new(remote, None, "main");
            assert!(!r.url().contains(secret), "{}", r.url());
            let e = git2::Error::new(
                git2::ErrorCode::GenericError,
                git2::ErrorClass::Net,
                format!("failed to connect to '{url}': refused"),
            );
            let shown = r.classify(&e, &Cell::new(0)).to_string();
            assert!(!shown.contains(secret), "{shown}");
            assert!(shown.contains("h/o/r.git"), "{shown}");
        }
    }

    /// Issue 17 item 8: SSH is refused up front; a full disk, a permission
    /// problem or an unknown protocol is not a network error.
    #[test]
    fn errors_are_classified_by_what_they_are() {
        let e = resolve_url("ssh://git:pw@example.org/x/y.git").unwrap_err();
        assert!(matches!(e, RemoteError::Unsupported { .. }), "{e:?}");
        assert!(e.to_string().contains("not SSH") && !e.to_string().contains("pw@"));
        assert!(is_ssh("git@github.com:o/r.git"));
        assert!(!is_ssh("https://github.com/o/r.git") && !is_ssh("/srv/a:b@c"));
        let r = Remote::new(resolve_url("/srv/backup.git").unwrap(), None, "main");
        let class = |class, msg: &str| {
            let e = git2::Error::new(git2::ErrorCode::GenericError, class, msg);
            r.classify(&e, &Cell::new(0))
        };
        use git2::ErrorClass as C;
        for (c, msg) in [
            (
                C::Os,
                "failed to write '/w/objects/ab': No space left on device",
            ),
            (C::Os, "could not open '/w/x.lock': Permission denied"),
            (C::Odb, "no error"),
            (
                C::Filesystem,
                "failed to make directory: Read-only file system",
            ),
        ] {
            let e = class(c, msg);
            assert!(matches!(e, RemoteError::Storage { .. }), "{msg}: {e:?}");
            assert!(!e.is_retryable());
            assert!(!e.to_string().contains(": no error"), "{e}");
        }
        let e = class(C::Net, "unsupported URL protocol");
        assert!(matches!(e, RemoteError::Unsupported { .. }), "{e:?}");
        let e = class(C::Os, "failed to connect to 127.0.0.1: Connection refused");
        assert!(e.is_retryable(), "{e:?}");
    }

    #[test]
    fn scrub_hides_the_token() {
        let r = Remote::new(
            resolve_url("owner/repo").unwrap(),
            Some("tok-123456".into()),
            "main",
        );
        assert_eq!(r.scrub("failed for tok-123456 at x"), "failed for *** at x");
    }

    #[test]
    fn retries_only_retryable_errors() {
        let quick = crate::persist::retry::Policy {
            attempts: 3,
            initial: Duration::ZERO,
            max: Duration::ZERO,
        };
        let mut n = 0;
        let r: Result<(), _> = with_retries(quick, || {
            n += 1;
            Err(RemoteError::Network {
                url: "u".into(),
                message: "down".into(),
            })
        });
        assert!(r.is_err());
        assert_eq!(n, 3);
        let mut n = 0;
        let r: Result<(), _> = with_retries(quick, || {
            n += 1;
            Err(RemoteError::Rejected {
                refname: "r".into(),
                message: "m".into(),
            })
        });
        assert!(r.is_err());
        assert_eq!(n, 1);
    }
}
