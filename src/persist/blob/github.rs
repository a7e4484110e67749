//! `github-release`: blobs as assets of GitHub releases in the backup
//! repository, each named by its SHA-256 hex (GitHub renames names with
//! other characters: the original's defect 10).
//!
//! What GitHub really does, and how it is handled:
//! - asset lists are paginated: `per_page=100`, following `Link: rel="next"`;
//! - a release holds at most 1000 assets: shards `tag`, `tag-2`, `tag-3`, ...
//!   (a new shard is made before the cap is reached). An upload beyond the
//!   cap is answered `422` with the validation error `file_count`: the store
//!   then takes the shard's asset count as the cap from there on, so a lower
//!   cap than ours (GitHub introduced this one without notice) costs one
//!   refused upload, not a failed snapshot;
//! - a release is created on a tag anchored on a tiny orphan commit, pushed
//!   by the caller's [`Anchor`] (never the data branch: a tag pins its tree);
//! - uploads go to the release's `upload_url` (`uploads.github.com`) with
//!   `Content-Length`; `422 already_exists` → the existing asset is checked
//!   and kept, or deleted and replaced; a 5xx may leave a `starter` asset
//!   behind → delete it and retry;
//! - `403`/`429` rate limits: wait for `Retry-After` or `x-ratelimit-reset`;
//! - an asset's `digest` (`sha256:…`) verifies an upload without a download;
//! - downloads go through `GET /repos/{repo}/releases/assets/{id}` with
//!   `Accept: application/octet-stream` (works for private repositories,
//!   unlike `browser_download_url`: defect 11), answered by a 302 to another
//!   host, to which the `Authorization` header is not forwarded;
//! - an asset must be under 2 GiB: a blob of 2 GiB or more is stored as
//!   parts `<sha256>.part-001-of-003`, ... (at most [`MAX_PARTS`], each at
//!   most half the asset limit, sizes as even as possible: see
//!   [`part_sizes`]). The layout follows from the blob's size and the part
//!   count in the names alone, so a store with another part size still
//!   reads them. Before uploading, the file is read once to hash every
//!   part; each part is uploaded through a reader that verifies it against
//!   that hash, and checked against the `digest` GitHub answers. So a part
//!   under the blob's name always holds its share of the blob's content: a
//!   broken upload resumes with the parts still missing, and a file changed
//!   meanwhile never completes the set. On restore the parts are streamed
//!   in order into the same verifying writer as a whole asset, which checks
//!   the whole file's size and SHA-256.
//!
//! Garbage collection lists the assets named by a SHA-256 (hex, nothing
//! else: the original's `<sha256>-<name>` assets are never listed, so never
//! deleted) or by a part of one, in every shard, aged by their `created_at`
//! (a blob's age is that of its youngest asset), and deletes a blob with
//! all its assets through `DELETE /repos/{repo}/releases/assets/{id}`.

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reqwest::blocking::{Client, RequestBuilder, Response};
use sha2::{Digest, Sha256};

use super::lfs::{client, net_err, shown, transfer_timeout};
use super::SendLimited;
use super::{
    open_verified, BlobError, BlobStore, Retry, StoreConfig, StoredBlob, VerifyingReader, CHUNK,
};
use crate::persist::deadline;
use crate::persist::pointer::{parse_sha256, OriginalPointer, Pointer};

/// GitHub's REST API root.
pub const API: &str = "https://api.github.com";

/// An asset must be smaller than this (GitHub: "under 2 GiB"). A blob this
/// large or larger is stored as parts of at most half of it.
pub const MAX_ASSET_SIZE: u64 = 2 << 30;

/// Assets per release (GitHub's cap).
pub const MAX_ASSETS: usize = 1000;

/// Most parts a blob is split into: three digits in the part names. With
/// the default limits that is a blob of 999 GiB.
pub const MAX_PARTS: u64 = 999;

/// An upload the store reads its file from afresh for each attempt, and
/// the flag that reader sets when the content is not what was hashed.
type Opened = (Box<dyn Read + Send>, Arc<AtomicBool>);

/// Pushes an anchor commit as `refs/tags/<tag>` (see the module docs).
pub type Anchor = Box<dyn Fn(&str) -> Result<(), String> + Send + Sync>;

#[derive(Debug, Clone, serde::Deserialize)]
struct Release {
    id: u64,
    tag_name: String,
    upload_url: String,
}

#[derive(Debug, Clone, serde::Deserialize)]
struct Asset {
    id: u64,
    name: String,
    size: u64,
    #[serde(default)]
    state: String,
    #[serde(default)]
    digest: Option<String>,
    /// `2024-01-02T03:04:05Z`.
    #[serde(default)]
    created_at: Option<String>,
}

impl Asset {
    /// Complete and matching `p` (by digest when GitHub gave one).
    fn holds(&self, p: &Pointer) -> bool {
        self.state == "uploaded"
            && self.size == p.size
            && self
                .digest
                .as_deref()
                .is_none_or(|d| d.eq_ignore_ascii_case(&format!("sha256:{}", p.oid())))
    }
}

/// The shards and their assets, as last listed.
#[derive(Default)]
struct Index {
    releases: Vec<Release>,
    /// Release id → its assets.
    assets: HashMap<u64, Vec<Asset>>,
}

impl Index {
    fn find(&self, name: &str) -> Option<(u64, &Asset)> {
        self.assets
            .iter()
            .find_map(|(rid, v)| v.iter().find(|a| a.name == name).map(|a| (*rid, a)))
    }

    /// The assets of a complete set of parts of `p`, in order: every part
    /// of one layout uploaded with the size the layout gives it. A set
    /// with a part missing, half-uploaded or of another size is not one.
    /// (Per-part digests cannot be checked here: the pointer only knows the
    /// whole file's hash. Each part was checked against its own hash when
    /// it was uploaded, and a restore checks the whole file.)
    fn complete_parts(&self, p: &Pointer) -> Option<Vec<Asset>> {
        let mut layouts: BTreeMap<u64, Vec<Option<&Asset>>> = BTreeMap::new();
        for a in self.assets.values().flatten() {
            let Some((sha, i, n)) = parse_part_name(&a.name) else {
                continue;
            };
            if sha != p.sha256 || n > p.size || a.state != "uploaded" {
                continue;
            }
            if a.size == part_len(p.size, n, i - 1) {
                // `i <= n <= MAX_PARTS`: small indexes.
                let slots = layouts.entry(n).or_insert_with(|| vec![None; n as usize]);
                slots[(i - 1) as usize] = Some(a);
            }
        }
        layouts
            .into_values()
            .find_map(|slots| slots.into_iter().map(|a| a.cloned()).collect())
    }

    /// Where the bytes of `p` can be read from: a whole asset that holds
    /// it, else a complete set of parts, else (as before parts existed) an
    /// uploaded asset of its name, whose bytes the restore will verify.
    fn locate(&self, p: &Pointer) -> Option<Vec<Asset>> {
        let whole = self.find(&p.oid()).map(|(_, a)| a);
        if let Some(a) = whole.filter(|a| a.holds(p)) {
            return Some(vec![a.clone()]);
        }
        self.complete_parts(p).or_else(|| {
            whole
                .filter(|a| a.state == "uploaded")
                .map(|a| vec![a.clone()])
        })
    }
}

/// The name of part `i` (1-based) of `n` of the blob `oid`.
pub fn part_name(oid: &str, i: u64, n: u64) -> String {
    format!("{oid}.part-{i:03}-of-{n:03}")
}

/// `(sha256, i, n)` of a part's name, written exactly as [`part_name`]
/// writes it (so one part has one name).
pub fn parse_part_name(name: &str) -> Option<([u8; 32], u64, u64)> {
    let (oid, rest) = name.split_once(".part-")?;
    let sha = parse_sha256(oid)?;
    let (i, n) = rest.split_once("-of-")?;
    let (i, n): (u64, u64) = (i.parse().ok()?, n.parse().ok()?);
    ((1..=n).contains(&i) && n <= MAX_PARTS && part_name(oid, i, n) == name).then_some((sha, i, n))
}

/// The sizes of the `n` parts of a blob of `size` bytes: as even as
/// possible (the first `size % n` parts one byte longer). A function of the
/// blob's size and the part count alone, so any store finds the layout
/// from the names, whatever part size it would choose itself.
pub fn part_sizes(size: u64, n: u64) -> Vec<u64> {
    (0..n).map(|i| part_len(size, n, i)).collect()
}

/// The size of part `i` (0-based) of [`part_sizes`]`(size, n)`.
fn part_len(size: u64, n: u64, i: u64) -> u64 {
    let n = n.max(1);
    size / n + u64::from(i < size % n)
}

/// SHA-256 of each part of the file at `src`, read once; the file must
/// hash to `p` as a whole, or it changed since it was hashed.
fn hash_parts(src: &Path, p: &Pointer, sizes: &[u64]) -> Result<Vec<Pointer>, BlobError> {
    let io = |source| BlobError::Io {
        what: "read",
        path: src.to_path_buf(),
        source,
    };
    let changed = || BlobError::Changed {
        path: src.to_path_buf(),
    };
    let mut f = std::fs::File::open(src).map_err(io)?;
    let mut whole = Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    let mut out = Vec::with_capacity(sizes.len());
    for &size in sizes {
        let mut part = Sha256::new();
        let mut left = size;
        while left > 0 {
            let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
            let n = match f.read(&mut buf[..want]) {
                Ok(0) => return Err(changed()),
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(io(e)),
            };
            part.update(&buf[..n]);
            whole.update(&buf[..n]);
            left -= n as u64;
        }
        out.push(Pointer {
            sha256: part.finalize().into(),
            size,
        });
    }
    let grown = f.read(&mut buf[..1]).map_err(io)? > 0;
    if grown || whole.finalize()[..] != p.sha256 {
        return Err(changed());
    }
    Ok(out)
}

/// Release assets of one repository.
pub struct GithubStore {
    api: String,
    repo: String,
    tag: String,
    token: Option<String>,
    client: Client,
    retry: Retry,
    /// Longest wait for a rate limit to reset before giving up (retryable).
    max_rate_wait: Duration,
    anchor: Option<Anchor>,
    index: Mutex<Option<Index>>,
    /// Assets per shard: [`MAX_ASSETS`], lowered by tests, or to what GitHub
    /// turns out to allow (a `file_count` refusal).
    max_assets: AtomicUsize,
    /// Blobs of this size or more are stored as parts ([`MAX_ASSET_SIZE`]).
    max_asset_size: u64,
}

impl GithubStore {
    /// A store in `repo` (`owner/repo`) under release `tag`, through the API at `api`.
    pub fn new(api: &str, repo: &str, tag: &str, token: Option<String>) -> Result<Self, BlobError> {
        Ok(Self {
            api: api.trim_end_matches('/').to_string(),
            repo: repo.to_string(),
            tag: tag.to_string(),
            token: token.filter(|t| !t.is_empty()),
            client: client()?,
            retry: Retry::default(),
            max_rate_wait: Duration::from_secs(900),
            anchor: None,
            index: Mutex::new(None),
            max_assets: AtomicUsize::new(MAX_ASSETS),
            max_asset_size: MAX_ASSET_SIZE,
        })
    }

    /// Tests only: shard after `max_assets` assets, and split blobs of
    /// `max_asset_size` bytes or more into parts, so that sharding and
    /// parts can be exercised with a few small files. Not reachable from a
    /// manifest, an environment variable or [`StoreConfig`]; and it can
    /// only lower GitHub's limits, never raise them, so even a mistaken
    /// call makes more shards or parts than needed, never an asset GitHub
    /// would refuse.
    #[doc(hidden)]
    pub fn with_lower_limits(mut self, max_assets: usize, max_asset_size: u64) -> Self {
        self.max_assets = AtomicUsize::new(max_assets.clamp(1, MAX_ASSETS));
        self.max_asset_size = max_asset_size.clamp(2, MAX_ASSET_SIZE);
        self
    }

    /// The largest part a blob is split into.
    fn part_size(&self) -> u64 {
        // Half the limit: a broken connection costs at most that much, and
        // no part comes near the exact limit, where GitHub has been seen to
        // fail uploads it documents as allowed.
        self.max_asset_size / 2
    }

    /// From a [`StoreConfig::GithubRelease`].
    pub fn from_config(cfg: &StoreConfig, token: Option<String>) -> Result<Self, BlobError> {
        match cfg {
            StoreConfig::GithubRelease { repo, tag, api } => Self::new(api, repo, tag, token),
            _ => Err(BlobError::Unsupported("not a github-release store".into())),
        }
    }

    /// Push tags for new releases with `anchor`.
    pub fn with_anchor(mut self, anchor: Anchor) -> Self {
        self.anchor = Some(anchor);
        self
    }

    /// Use this retry policy and rate-limit patience (tests make them short).
    pub fn with_retry(mut self, retry: Retry, max_rate_wait: Duration) -> Self {
        self.retry = retry;
        self.max_rate_wait = max_rate_wait;
        self
    }

    fn authed(&self, req: RequestBuilder) -> RequestBuilder {
        let req = req
            .header("Accept", "application/vnd.github+json")
            .header("X-GitHub-Api-Version", "2022-11-28");
        match &self.token {
            Some(t) => req.bearer_auth(t),
            None => req,
        }
    }

    /// How long a rate-limited answer asks us to wait, if it is one.
    fn rate_limit_wait(resp: &Response) -> Option<Duration> {
        let status = resp.status().as_u16();
        let h = |name: &str| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let retry_after = h("retry-after").and_then(|v| v.trim().parse::<u64>().ok());
        let remaining = h("x-ratelimit-remaining");
        let reset = h("x-ratelimit-reset").and_then(|v| v.trim().parse::<u64>().ok());
        if status != 429
            && !(status == 403 && (retry_after.is_some() || remaining.as_deref() == Some("0")))
        {
            return None;
        }
        if let Some(s) = retry_after {
            return Some(Duration::from_secs(s));
        }
        if remaining.as_deref() == Some("0") {
            if let Some(reset) = reset {
                let now = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs());
                return Some(Duration::from_secs(reset.saturating_sub(now) + 1));
            }
        }
        // A secondary limit without headers: GitHub asks for at least a minute.
        Some(Duration::from_secs(60))
    }

    /// Send, waiting out rate limits. `make` builds the request afresh for
    /// each attempt (a streamed body cannot be sent twice).
    fn send(
        &self,
        url: &str,
        mut make: impl FnMut() -> Result<RequestBuilder, BlobError>,
    ) -> Result<Response, BlobError> {
        let mut waited = Duration::ZERO;
        loop {
            let resp = make()?.send_limited().map_err(|e| net_err(url, e))?;
            let Some(wait) = Self::rate_limit_wait(&resp) else {
                return Ok(resp);
            };
            if waited + wait > self.max_rate_wait {
                return Err(BlobError::Http {
                    url: shown(url),
                    status: 429,
                    message: format!(
                        "rate limited by GitHub for {}s more; will retry later",
                        wait.as_secs()
                    ),
                });
            }
            tracing::warn!(url = %shown(url), wait_s = wait.as_secs(), "GitHub rate limit: waiting");
            if let Err(stop) = deadline::sleep(wait) {
                return Err(BlobError::Stopped(stop));
            }
            waited += wait;
        }
    }

    fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        url: &str,
    ) -> Result<Option<(T, Option<String>)>, BlobError> {
        let resp = self.send(url, || {
            Ok(self
                .authed(self.client.get(url))
                .timeout(Duration::from_secs(60)))
        })?;
        if resp.status().as_u16() == 404 {
            return Ok(None);
        }
        if !resp.status().is_success() {
            return Err(self.status_err(url, resp));
        }
        let next = resp
            .headers()
            .get("link")
            .and_then(|v| v.to_str().ok())
            .and_then(next_link);
        let v = resp.json().map_err(|e| BlobError::Protocol {
            url: shown(url),
            message: format!("unexpected JSON: {e}"),
        })?;
        Ok(Some((v, next)))
    }

    fn status_err(&self, url: &str, resp: Response) -> BlobError {
        let status = resp.status().as_u16();
        let message: String = resp.text().unwrap_or_default().chars().take(300).collect();
        match status {
            401 | 403 => BlobError::Auth {
                url: shown(url),
                status,
            },
            _ => BlobError::Http {
                url: shown(url),
                status,
                message,
            },
        }
    }

    fn shard_tag(&self, n: usize) -> String {
        if n == 0 {
            self.tag.clone()
        } else {
            format!("{}-{}", self.tag, n + 1)
        }
    }

    fn list_assets(&self, release: u64) -> Result<Vec<Asset>, BlobError> {
        self.list_assets_of(&self.repo, release)
    }

    /// Every asset of release `release` of `repo`, all pages.
    fn list_assets_of(&self, repo: &str, release: u64) -> Result<Vec<Asset>, BlobError> {
        let mut out = Vec::new();
        let mut url = Some(format!(
            "{}/repos/{repo}/releases/{release}/assets?per_page=100",
            self.api
        ));
        while let Some(u) = url.take() {
            match self.get_json::<Vec<Asset>>(&u)? {
                Some((page, next)) => {
                    out.extend(page);
                    url = next;
                }
                None => break,
            }
        }
        Ok(out)
    }

    /// The id of the asset an original pointer without one stands for: by
    /// its `asset_name` (else `<sha256>-<file name>`) in its release, every
    /// page of the asset list (issue 17).
    fn asset_by_name(
        &self,
        repo: &str,
        orig: &OriginalPointer,
        p: &Pointer,
    ) -> Result<u64, BlobError> {
        let tag = if orig.release_tag.is_empty() {
            &self.tag
        } else {
            &orig.release_tag
        };
        let name = if orig.asset_name.is_empty() {
            let file = orig.original_path.rsplit('/').next().unwrap_or_default();
            format!("{}-{file}", p.oid())
        } else {
            orig.asset_name.clone()
        };
        let missing = || BlobError::NoSuchAsset {
            repo: repo.to_string(),
            tag: tag.to_string(),
            name: name.clone(),
        };
        let url = format!("{}/repos/{repo}/releases/tags/{tag}", self.api);
        let Some((rel, _)) = self.get_json::<Release>(&url)? else {
            return Err(missing());
        };
        self.list_assets_of(repo, rel.id)?
            .into_iter()
            .find(|a| a.name == name && (a.state.is_empty() || a.state == "uploaded"))
            .map(|a| a.id)
            .ok_or_else(missing)
    }

    /// List every shard and its assets.
    fn load_index(&self) -> Result<Index, BlobError> {
        let mut idx = Index::default();
        for n in 0.. {
            let url = format!(
                "{}/repos/{}/releases/tags/{}",
                self.api,
                self.repo,
                self.shard_tag(n)
            );
            let Some((rel, _)) = self.get_json::<Release>(&url)? else {
                break;
            };
            let assets = self.list_assets(rel.id)?;
            idx.assets.insert(rel.id, assets);
            idx.releases.push(rel);
        }
        Ok(idx)
    }

    fn with_index<T>(
        &self,
        refresh: bool,
        f: impl FnOnce(&mut Index) -> T,
    ) -> Result<T, BlobError> {
        let mut guard = self.index.lock().unwrap_or_else(|p| p.into_inner());
        if refresh || guard.is_none() {
            *guard = Some(self.retry.run(|| self.load_index())?);
        }
        match guard.as_mut() {
            Some(idx) => Ok(f(idx)),
            None => Err(BlobError::Unsupported("asset index unavailable".into())),
        }
    }

    fn create_release(&self, tag: &str) -> Result<Release, BlobError> {
        match &self.anchor {
            Some(anchor) => anchor(tag).map_err(|message| BlobError::Protocol {
                url: format!("refs/tags/{tag}"),
                message: format!("cannot push the release's anchor tag: {message}"),
            })?,
            None => {
                return Err(BlobError::Unsupported(format!(
                    "release `{tag}` does not exist and no anchor tag can be pushed: create the release on GitHub"
                )))
            }
        }
        let url = format!("{}/repos/{}/releases", self.api, self.repo);
        let body = serde_json::json!({
            "tag_name": tag,
            "name": tag,
            "body": "Large-file blobs of stackctl backups, named by SHA-256. Do not edit.",
            "draft": false,
            "prerelease": true,
            "make_latest": "false",
        });
        let resp = self.send(&url, || {
            Ok(self
                .authed(self.client.post(&url))
                .timeout(Duration::from_secs(60))
                .json(&body))
        })?;
        let status = resp.status().as_u16();
        if status == 422 {
            // Made meanwhile by another instance.
            let by_tag = format!("{}/repos/{}/releases/tags/{tag}", self.api, self.repo);
            return match self.get_json::<Release>(&by_tag)? {
                Some((r, _)) => Ok(r),
                None => Err(self.status_err(&url, resp)),
            };
        }
        if !resp.status().is_success() {
            return Err(self.status_err(&url, resp));
        }
        resp.json().map_err(|e| BlobError::Protocol {
            url: shown(&url),
            message: format!("unexpected release JSON: {e}"),
        })
    }

    /// The shard a new asset goes to, creating one when all are full.
    fn shard_for_upload(&self) -> Result<Release, BlobError> {
        let (open, count) = self.with_index(false, |idx| {
            let cap = self.max_assets.load(Ordering::Relaxed);
            let open = idx
                .releases
                .iter()
                .find(|r| idx.assets.get(&r.id).map_or(0, Vec::len) < cap)
                .cloned();
            (open, idx.releases.len())
        })?;
        if let Some(r) = open {
            return Ok(r);
        }
        let rel = self.create_release(&self.shard_tag(count))?;
        tracing::info!(tag = %rel.tag_name, "blob release created");
        self.with_index(false, |idx| {
            idx.assets.entry(rel.id).or_default();
            idx.releases.push(rel.clone());
        })?;
        Ok(rel)
    }

    fn delete_asset(&self, id: u64) -> Result<(), BlobError> {
        let url = format!("{}/repos/{}/releases/assets/{id}", self.api, self.repo);
        let resp = self.send(&url, || {
            Ok(self
                .authed(self.client.delete(&url))
                .timeout(Duration::from_secs(60)))
        })?;
        if resp.status().is_success() || resp.status().as_u16() == 404 {
            self.with_index(false, |idx| {
                for v in idx.assets.values_mut() {
                    v.retain(|a| a.id != id);
                }
            })?;
            Ok(())
        } else {
            Err(self.status_err(&url, resp))
        }
    }

    /// One upload of asset `name`, whose content must be `expect` (the blob,
    /// or one part of it), read from `src` through `open`. `Ok(true)`: stored
    /// and verified; `Ok(false)`: try again (in another shard if this one
    /// turned out full).
    fn upload_once(
        &self,
        name: &str,
        expect: &Pointer,
        src: &Path,
        open: &dyn Fn() -> Result<Opened, BlobError>,
        release: &Release,
    ) -> Result<bool, BlobError> {
        let p = expect;
        let base = release
            .upload_url
            .split('{')
            .next()
            .unwrap_or_default()
            .to_string();
        let url = format!("{base}?name={name}");
        let changed_seen = std::cell::Cell::new(None);
        let resp = self.send(&url, || {
            let (reader, changed) = open()?;
            changed_seen.set(Some(changed));
            Ok(self
                .authed(self.client.post(&url))
                .header("Content-Type", "application/octet-stream")
                .timeout(transfer_timeout(p.size))
                .body(reqwest::blocking::Body::sized(reader, p.size)))
        });
        if changed_seen
            .take()
            .is_some_and(|c| c.load(Ordering::SeqCst))
        {
            self.clean_partial(name)?;
            return Err(BlobError::Changed {
                path: src.to_path_buf(),
            });
        }
        let resp = match resp {
            Ok(r) => r,
            Err(e) => {
                // The connection broke: a `starter` asset may be left.
                self.clean_partial(name)?;
                return Err(e);
            }
        };
        let status = resp.status().as_u16();
        if status == 422 {
            let body = resp.text().unwrap_or_default();
            if body.contains("file_count") {
                // The shard is full by GitHub's count: what it holds now is
                // the cap from here on (never raised again), and the next
                // attempt goes to another shard.
                let held =
                    self.with_index(true, |idx| idx.assets.get(&release.id).map_or(0, Vec::len))?;
                let cap = held.max(1);
                if self.max_assets.fetch_min(cap, Ordering::Relaxed) > cap {
                    tracing::warn!(tag = %release.tag_name, assets = held,
                        "GitHub refused an asset: release full; using another release from now on");
                }
                return Ok(false);
            }
            // `already_exists`: another writer stored it meanwhile; look again.
            let existing = self.with_index(true, |idx| idx.find(name).map(|(_, a)| a.clone()))?;
            return match existing {
                Some(a) if a.holds(p) => Ok(true),
                Some(a) => {
                    self.delete_asset(a.id)?;
                    Ok(false)
                }
                None => Ok(false),
            };
        }
        if status >= 500 {
            self.clean_partial(name)?;
            return Err(self.status_err(&url, resp));
        }
        if !resp.status().is_success() {
            return Err(self.status_err(&url, resp));
        }
        let asset: Asset = resp.json().map_err(|e| BlobError::Protocol {
            url: shown(&url),
            message: format!("unexpected asset JSON: {e}"),
        })?;
        if !asset.holds(p) {
            let got = asset.digest.clone().unwrap_or_default();
            self.delete_asset(asset.id)?;
            return Err(BlobError::Protocol {
                url: shown(&url),
                message: format!(
                    "the uploaded asset does not match {p} (state `{}`, {} bytes, digest `{got}`); deleted, will retry",
                    asset.state, asset.size
                ),
            });
        }
        self.with_index(false, |idx| {
            idx.assets.entry(release.id).or_default().push(asset)
        })?;
        Ok(true)
    }

    /// Delete a half-uploaded asset of this name, if GitHub left one.
    fn clean_partial(&self, name: &str) -> Result<(), BlobError> {
        let partial = self.with_index(true, |idx| {
            idx.find(name)
                .filter(|(_, a)| a.state != "uploaded")
                .map(|(_, a)| a.id)
        })?;
        if let Some(id) = partial {
            tracing::warn!(asset = %name, "deleting a half-uploaded release asset");
            self.delete_asset(id)?;
        }
        Ok(())
    }

    fn download(
        &self,
        repo: &str,
        id: u64,
        out: &mut dyn Write,
        size: u64,
    ) -> Result<(), BlobError> {
        let url = format!("{}/repos/{repo}/releases/assets/{id}", self.api);
        let mut resp = self.send(&url, || {
            let req = self
                .client
                .get(&url)
                .header("Accept", "application/octet-stream")
                .header("X-GitHub-Api-Version", "2022-11-28")
                .timeout(transfer_timeout(size));
            // reqwest drops this header when the 302 leads to another host.
            Ok(match &self.token {
                Some(t) => req.bearer_auth(t),
                None => req,
            })
        })?;
        if !resp.status().is_success() {
            return Err(self.status_err(&url, resp));
        }
        resp.copy_to(out).map_err(|e| net_err(&url, e))?;
        Ok(())
    }
}

impl GithubStore {
    /// Make sure asset `name` holds `expect` (read from `src` through
    /// `open`): kept when an asset of that name already does, replaced when
    /// it holds something else, else uploaded to a shard with room.
    fn store_asset(
        &self,
        name: &str,
        expect: &Pointer,
        src: &Path,
        open: &dyn Fn() -> Result<Opened, BlobError>,
    ) -> Result<(), BlobError> {
        // Present already (another instance, an earlier run)?
        let existing = self.with_index(false, |idx| idx.find(name).map(|(_, a)| a.clone()))?;
        match existing {
            Some(a) if a.holds(expect) => return Ok(()),
            Some(a) => self.delete_asset(a.id)?,
            None => {}
        }
        let mut attempts = 0;
        self.retry.run(|| loop {
            attempts += 1;
            let release = self.shard_for_upload()?;
            if self.upload_once(name, expect, src, open, &release)? {
                return Ok(());
            }
            if attempts > 3 {
                return Err(BlobError::Protocol {
                    url: shown(&release.upload_url),
                    message: format!(
                        "asset `{name}` kept conflicting; will retry at the next snapshot"
                    ),
                });
            }
        })
    }

    /// Store `p` as parts (see the module docs): parts already stored with
    /// the content the file has now are kept, so a broken upload resumes.
    fn put_parts(&self, p: &Pointer, src: &Path) -> Result<(), BlobError> {
        let part = self.part_size();
        let n = p.size.div_ceil(part);
        if n > MAX_PARTS {
            return Err(BlobError::TooLarge {
                pointer: *p,
                limit: MAX_PARTS * part,
            });
        }
        let sizes = part_sizes(p.size, n);
        let hashes = hash_parts(src, p, &sizes)?;
        let oid = p.oid();
        let counter = super::start_counting();
        let mut offset = 0;
        for (i, expect) in (1..=n).zip(&hashes) {
            let name = part_name(&oid, i, n);
            let start = offset;
            let open = || -> Result<Opened, BlobError> {
                let io = |source| BlobError::Io {
                    what: "read",
                    path: src.to_path_buf(),
                    source,
                };
                let mut f = std::fs::File::open(src).map_err(io)?;
                f.seek(SeekFrom::Start(start)).map_err(io)?;
                let changed = Arc::new(AtomicBool::new(false));
                let reader = VerifyingReader::new(f.take(expect.size), *expect, changed.clone())
                    .counted(counter.clone());
                Ok((Box::new(reader), changed))
            };
            self.store_asset(&name, expect, src, &open)?;
            offset += expect.size;
        }
        Ok(())
    }
}

/// The `rel="next"` URL of a `Link` header.
pub fn next_link(link: &str) -> Option<String> {
    link.split(',').find_map(|part| {
        let (url, params) = part.split_once(';')?;
        params
            .split(';')
            .any(|p| p.trim() == "rel=\"next\"")
            .then(|| {
                url.trim()
                    .trim_start_matches('<')
                    .trim_end_matches('>')
                    .to_string()
            })
    })
}

impl BlobStore for GithubStore {
    fn describe(&self) -> String {
        format!("github-release {} tag {}", self.repo, self.tag)
    }

    fn has(&self, p: &Pointer) -> Result<bool, BlobError> {
        let name = p.oid();
        self.with_index(false, |idx| {
            idx.find(&name).is_some_and(|(_, a)| a.holds(p)) || idx.complete_parts(p).is_some()
        })
    }

    fn put(&self, p: &Pointer, src: &Path) -> Result<(), BlobError> {
        if p.size >= self.max_asset_size {
            if self.has(p)? {
                return Ok(());
            }
            return self.put_parts(p, src);
        }
        let open = || -> Result<Opened, BlobError> {
            let (reader, changed) = open_verified(src, p)?;
            Ok((Box::new(reader), changed))
        };
        self.store_asset(&p.oid(), p, src, &open)
    }

    fn get(&self, p: &Pointer, out: &mut dyn Write) -> Result<(), BlobError> {
        let mut found = self.with_index(false, |idx| idx.locate(p))?;
        if found.is_none() {
            found = self.with_index(true, |idx| idx.locate(p))?;
        }
        let Some(assets) = found else {
            return Err(BlobError::Missing(*p));
        };
        // Parts in order into the same writer: the caller verifies the
        // whole file's size and SHA-256 as for a single asset.
        for a in &assets {
            self.download(&self.repo, a.id, out, a.size)?;
        }
        Ok(())
    }

    fn get_original(
        &self,
        orig: &OriginalPointer,
        p: &Pointer,
        out: &mut dyn Write,
    ) -> Result<(), BlobError> {
        let repo = if orig.repo.is_empty() {
            self.repo.clone()
        } else {
            orig.repo.clone()
        };
        let id = match orig.asset_id {
            Some(id) => id,
            None => self.retry.run(|| self.asset_by_name(&repo, orig, p))?,
        };
        self.download(&repo, id, out, p.size)
    }

    fn list(&self) -> Result<Option<Vec<StoredBlob>>, BlobError> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let blobs = self.with_index(true, |idx| {
            let mut blobs: BTreeMap<[u8; 32], StoredBlob> = BTreeMap::new();
            for a in idx.assets.values().flatten() {
                if a.state != "uploaded" {
                    continue;
                }
                let Some(sha256) =
                    parse_sha256(&a.name).or_else(|| parse_part_name(&a.name).map(|(s, _, _)| s))
                else {
                    continue;
                };
                // Unknown creation time: age zero (kept unless the grace is zero).
                let created = a
                    .created_at
                    .as_deref()
                    .and_then(crate::persist::parse_date)
                    .and_then(|t| u64::try_from(t).ok())
                    .unwrap_or(now);
                let age = Duration::from_secs(now.saturating_sub(created));
                // A blob is as young as its youngest asset: a part uploaded
                // again restarts the whole blob's grace period.
                let b = blobs.entry(sha256).or_insert(StoredBlob {
                    sha256,
                    size: 0,
                    age,
                });
                b.size += a.size;
                b.age = b.age.min(age);
            }
            blobs.into_values().collect::<Vec<_>>()
        })?;
        Ok(Some(blobs))
    }

    fn delete(&self, sha256: &[u8; 32]) -> Result<(), BlobError> {
        let name = hex::encode(sha256);
        // The blob and every part of it, half-uploaded ones too.
        let ids = self.with_index(false, |idx| {
            idx.assets
                .values()
                .flatten()
                .filter(|a| {
                    a.name == name || parse_part_name(&a.name).is_some_and(|(s, _, _)| s == *sha256)
                })
                .map(|a| a.id)
                .collect::<Vec<_>>()
        })?;
        for id in ids {
            self.delete_asset(id)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_links_are_found_among_others() {
        let link = r#"<https://api.github.com/x?page=1>; rel="prev", <https://api.github.com/x?page=3>; rel="next", <https://api.github.com/x?page=9>; rel="last""#;
        assert_eq!(
            next_link(link).as_deref(),
            Some("https://api.github.com/x?page=3")
        );
        assert_eq!(next_link(r#"<https://x>; rel="last""#), None);
    }

    #[test]
    fn part_names_round_trip_and_only_the_canonical_spelling_parses() {
        let oid = "ab".repeat(32);
        let name = part_name(&oid, 2, 3);
        assert_eq!(name, format!("{oid}.part-002-of-003"));
        assert_eq!(parse_part_name(&name), Some(([0xab; 32], 2, 3)));
        assert_eq!(
            parse_part_name(&part_name(&oid, 999, 999)),
            Some(([0xab; 32], 999, 999))
        );
        for bad in [
            format!("{oid}.part-2-of-3"),
            format!("{oid}.part-000-of-003"),
            format!("{oid}.part-004-of-003"),
            format!("{oid}.part-001-of-1000"),
            format!("{oid}.part-001-of-003.tmp"),
            format!("{}.part-001-of-003", oid.to_uppercase()),
            format!("{oid}-model.bin"),
            oid.clone(),
        ] {
            assert_eq!(parse_part_name(&bad), None, "{bad}");
        }
    }

    #[test]
    fn parts_are_even_cover_the_blob_and_stay_under_the_part_size() {
        for (size, part) in [
            (10u64, 4u64),
            (12, 4),
            (13, 4),
            (4 << 30, 1 << 30),
            ((5 << 30) + 7, 1 << 30),
        ] {
            let n = size.div_ceil(part);
            let sizes = part_sizes(size, n);
            assert_eq!(sizes.len() as u64, n);
            assert_eq!(sizes.iter().sum::<u64>(), size, "{size}/{part}");
            let (min, max) = (sizes.iter().min().unwrap(), sizes.iter().max().unwrap());
            assert!(max - min <= 1 && *max <= part && *min > 0, "{sizes:?}");
            for (i, s) in sizes.iter().enumerate() {
                assert_eq!(part_len(size, n, i as u64), *s);
            }
        }
    }

    fn asset(id: u64, name: String, size: u64, state: &str) -> Asset {
        Asset {
            id,
            name,
            size,
            state: state.into(),
            digest: None,
            created_at: None,
        }
    }

    #[test]
    fn only_a_complete_set_of_parts_of_the_right_sizes_holds_a_blob() {
        let p = Pointer {
            sha256: [7; 32],
            size: 10,
        };
        let oid = p.oid();
        // 10 bytes in 3 parts: 4, 3, 3.
        let set = |skip: u64, bad_size: u64, state: &str| {
            let mut idx = Index::default();
            let v: Vec<Asset> = (1..=3)
                .filter(|i| *i != skip)
                .map(|i| {
                    let size = if i == bad_size {
                        9
                    } else {
                        part_len(10, 3, i - 1)
                    };
                    // Listed out of order, and across two shards.
                    asset(
                        10 - i,
                        part_name(&oid, i, 3),
                        size,
                        if i == 2 { state } else { "uploaded" },
                    )
                })
                .collect();
            idx.assets.insert(1, v[..1].to_vec());
            idx.assets.insert(2, v[1..].to_vec());
            idx
        };
        let whole = set(0, 0, "uploaded");
        let got: Vec<_> = whole
            .complete_parts(&p)
            .unwrap()
            .iter()
            .map(|a| a.id)
            .collect();
        assert_eq!(got, vec![9, 8, 7], "in part order");
        assert!(whole.locate(&p).is_some());
        assert!(
            set(2, 0, "uploaded").complete_parts(&p).is_none(),
            "a part missing"
        );
        assert!(
            set(0, 3, "uploaded").complete_parts(&p).is_none(),
            "a wrong size"
        );
        assert!(
            set(0, 0, "starter").complete_parts(&p).is_none(),
            "half-uploaded"
        );
        assert!(set(2, 0, "uploaded").locate(&p).is_none());
        // Another blob's parts never count.
        let other = Pointer {
            sha256: [8; 32],
            size: 10,
        };
        assert!(whole.complete_parts(&other).is_none());
        // An incomplete layout next to a complete one: the complete one.
        let mut mixed = set(0, 0, "uploaded");
        mixed
            .assets
            .get_mut(&1)
            .unwrap()
            .push(asset(50, part_name(&oid, 1, 2), 5, "uploaded"));
        assert_eq!(mixed.complete_parts(&p).unwrap().len(), 3);
    }

    #[test]
    fn limits_can_only_be_lowered() {
        let s = GithubStore::new(API, "o/r", "blobs", None)
            .unwrap()
            .with_lower_limits(usize::MAX, u64::MAX);
        assert_eq!(s.max_assets.load(Ordering::Relaxed), MAX_ASSETS);
        assert_eq!(s.max_asset_size, MAX_ASSET_SIZE);
        assert_eq!(s.part_size(), 1 << 30);
        let s = s.with_lower_limits(0, 0);
        assert_eq!(s.max_assets.load(Ordering::Relaxed), 1);
        assert_eq!(s.part_size(), 1);
    }

    #[test]
    fn shards_are_tag_then_tag_2() {
        let s = GithubStore::new(API, "o/r", "blobs", None).unwrap();
        assert_eq!(s.shard_tag(0), "blobs");
        assert_eq!(s.shard_tag(1), "blobs-2");
    }
}
