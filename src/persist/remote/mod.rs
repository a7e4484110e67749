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
use std::time::Duration;

use git2::{
    Cred, CredentialType, Direction, FetchOptions, Oid, PushOptions, RemoteCallbacks,
    RemoteRedirect, Repository,
};

use super::deadline::{self, Stop};

mod error;
mod url;

pub use error::{is_storage_problem, reason, RemoteError};
pub use url::{is_ssh, resolve_url, RemoteUrl};

/// Marks the credentials callback's refusal of another host, so
/// [`Remote::classify`] can tell it from a network error.
const OFFSITE: &str = "refusing to send credentials to another host";

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

    /// Options for one push: our callbacks, no redirect followed, and the
    /// first ref the server refuses (name, reason) kept in `rejected`.
    fn push_options<'a>(
        &'a self,
        tries: &'a Cell<u32>,
        rejected: &'a RefCell<Option<(String, String)>>,
    ) -> PushOptions<'a> {
        let mut cb = self.callbacks(tries);
        cb.push_update_reference(|refname, status| {
            if let Some(msg) = status {
                rejected
                    .borrow_mut()
                    .get_or_insert_with(|| (refname.to_string(), msg.to_string()));
            }
            Ok(())
        });
        let mut po = PushOptions::new();
        po.remote_callbacks(cb);
        po.follow_redirects(RemoteRedirect::None);
        po
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
        // operation whose limit is spent stopped because of it; its timeout
        // may fire a few milliseconds early ([`deadline::check_with_slack`]).
        if let Err(stop) = deadline::check_with_slack(Duration::from_millis(50)) {
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
        let mut po = self.push_options(&tries, &rejected);
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
        let rejected: RefCell<Option<(String, String)>> = RefCell::new(None);
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
        let mut po = self.push_options(&push_tries, &rejected);
        let res = conn
            .remote()
            .push(&[format!(":{dst}").as_str()], Some(&mut po));
        drop(po);
        if let Some((refname, message)) = rejected.into_inner() {
            return Err(RemoteError::Rejected {
                refname,
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
mod tests;
