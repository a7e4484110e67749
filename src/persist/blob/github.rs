//! `github-release`: blobs as assets of GitHub releases in the backup
//! repository, each named by its SHA-256 hex (GitHub renames names with
//! other characters: the original's defect 10).
//!
//! What GitHub really does, and how it is handled:
//! - asset lists are paginated: `per_page=100`, following `Link: rel="next"`;
//! - a release holds at most 1000 assets: shards `tag`, `tag-2`, `tag-3`, ...
//!   (a new shard is made before the cap is reached);
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
//! - 2 GiB per asset at most.
//!
//! Garbage collection lists the assets named by a SHA-256 (hex, nothing
//! else: the original's `<sha256>-<name>` assets are never listed, so never
//! deleted) in every shard, aged by their `created_at`, and deletes one
//! through `DELETE /repos/{repo}/releases/assets/{id}`.

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reqwest::blocking::{Client, RequestBuilder, Response};

use super::lfs::{client, net_err, shown, transfer_timeout};
use super::{open_verified, BlobError, BlobStore, Retry, StoreConfig, StoredBlob};
use crate::persist::pointer::{parse_sha256, OriginalPointer, Pointer};

/// GitHub's REST API root.
pub const API: &str = "https://api.github.com";

/// Largest asset GitHub accepts.
pub const MAX_ASSET_SIZE: u64 = 2 << 30;

/// Assets per release (GitHub's cap).
pub const MAX_ASSETS: usize = 1000;

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
        })
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
            let resp = make()?.send().map_err(|e| net_err(url, e))?;
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
            std::thread::sleep(wait);
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
        let mut out = Vec::new();
        let mut url = Some(format!(
            "{}/repos/{}/releases/{release}/assets?per_page=100",
            self.api, self.repo
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
            let open = idx
                .releases
                .iter()
                .find(|r| idx.assets.get(&r.id).map_or(0, Vec::len) < MAX_ASSETS)
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

    /// One upload attempt. `Ok(true)`: stored and verified.
    fn upload_once(&self, p: &Pointer, src: &Path, release: &Release) -> Result<bool, BlobError> {
        let name = p.oid();
        let base = release
            .upload_url
            .split('{')
            .next()
            .unwrap_or_default()
            .to_string();
        let url = format!("{base}?name={name}");
        let changed_seen = std::cell::Cell::new(None);
        let resp = self.send(&url, || {
            let (reader, changed) = open_verified(src, p)?;
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
            self.clean_partial(&name)?;
            return Err(BlobError::Changed {
                path: src.to_path_buf(),
            });
        }
        let resp = match resp {
            Ok(r) => r,
            Err(e) => {
                // The connection broke: a `starter` asset may be left.
                self.clean_partial(&name)?;
                return Err(e);
            }
        };
        let status = resp.status().as_u16();
        if status == 422 {
            // `already_exists` (or the cap, if another writer filled the
            // shard): look again.
            let existing = self.with_index(true, |idx| idx.find(&name).map(|(_, a)| a.clone()))?;
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
            self.clean_partial(&name)?;
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
            idx.find(&name).is_some_and(|(_, a)| a.holds(p))
        })
    }

    fn put(&self, p: &Pointer, src: &Path) -> Result<(), BlobError> {
        if p.size >= MAX_ASSET_SIZE {
            return Err(BlobError::TooLarge {
                pointer: *p,
                limit: MAX_ASSET_SIZE - 1,
            });
        }
        let name = p.oid();
        // Present already (another instance, an earlier run)?
        let existing = self.with_index(false, |idx| idx.find(&name).map(|(_, a)| a.clone()))?;
        match existing {
            Some(a) if a.holds(p) => return Ok(()),
            Some(a) => self.delete_asset(a.id)?,
            None => {}
        }
        let mut attempts = 0;
        self.retry.run(|| loop {
            attempts += 1;
            let release = self.shard_for_upload()?;
            if self.upload_once(p, src, &release)? {
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

    fn get(&self, p: &Pointer, out: &mut dyn Write) -> Result<(), BlobError> {
        let name = p.oid();
        let mut found = self.with_index(false, |idx| idx.find(&name).map(|(_, a)| a.clone()))?;
        if found.is_none() {
            found = self.with_index(true, |idx| idx.find(&name).map(|(_, a)| a.clone()))?;
        }
        match found {
            Some(a) if a.state == "uploaded" => self.download(&self.repo, a.id, out, p.size),
            _ => Err(BlobError::Missing(*p)),
        }
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
        self.download(&repo, orig.asset_id, out, p.size)
    }

    fn list(&self) -> Result<Option<Vec<StoredBlob>>, BlobError> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let mut out = self.with_index(true, |idx| {
            idx.assets
                .values()
                .flatten()
                .filter(|a| a.state == "uploaded")
                .filter_map(|a| {
                    let sha256 = parse_sha256(&a.name)?;
                    // Unknown creation time: age zero (kept unless the grace is zero).
                    let created = a
                        .created_at
                        .as_deref()
                        .and_then(crate::persist::parse_date)
                        .and_then(|t| u64::try_from(t).ok())
                        .unwrap_or(now);
                    Some(StoredBlob {
                        sha256,
                        size: a.size,
                        age: Duration::from_secs(now.saturating_sub(created)),
                    })
                })
                .collect::<Vec<_>>()
        })?;
        out.sort_by_key(|b| b.sha256);
        Ok(Some(out))
    }

    fn delete(&self, sha256: &[u8; 32]) -> Result<(), BlobError> {
        let name = hex::encode(sha256);
        let ids = self.with_index(false, |idx| {
            idx.assets
                .values()
                .flatten()
                .filter(|a| a.name == name)
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
    fn shards_are_tag_then_tag_2() {
        let s = GithubStore::new(API, "o/r", "blobs", None).unwrap();
        assert_eq!(s.shard_tag(0), "blobs");
        assert_eq!(s.shard_tag(1), "blobs-2");
    }
}
