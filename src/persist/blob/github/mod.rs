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

mod api;
mod index;
mod parts;
mod releases;
#[cfg(test)]
mod tests;
mod transfer;

use index::*;
pub use parts::*;

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
