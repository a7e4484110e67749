//! Releases and their assets: listing, the index, shards, deletion.

use super::*;

impl GithubStore {
    pub(super) fn shard_tag(&self, n: usize) -> String {
        if n == 0 {
            self.tag.clone()
        } else {
            format!("{}-{}", self.tag, n + 1)
        }
    }

    pub(super) fn list_assets(&self, release: u64) -> Result<Vec<Asset>, BlobError> {
        self.list_assets_of(&self.repo, release)
    }

    /// Every asset of release `release` of `repo`, all pages.
    pub(super) fn list_assets_of(&self, repo: &str, release: u64) -> Result<Vec<Asset>, BlobError> {
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
    pub(super) fn asset_by_name(
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
    pub(super) fn load_index(&self) -> Result<Index, BlobError> {
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

    pub(super) fn with_index<T>(
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

    pub(super) fn create_release(&self, tag: &str) -> Result<Release, BlobError> {
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
    pub(super) fn shard_for_upload(&self) -> Result<Release, BlobError> {
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

    pub(super) fn delete_asset(&self, id: u64) -> Result<(), BlobError> {
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
}
