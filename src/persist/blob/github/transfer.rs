//! Upload and download of assets, and of a blob as one asset or as parts.

use super::*;

impl GithubStore {
    /// One upload of asset `name`, whose content must be `expect` (the blob,
    /// or one part of it), read from `src` through `open`. `Ok(true)`: stored
    /// and verified; `Ok(false)`: try again (in another shard if this one
    /// turned out full).
    pub(super) fn upload_once(
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
    pub(super) fn clean_partial(&self, name: &str) -> Result<(), BlobError> {
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

    pub(super) fn download(
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

    /// Make sure asset `name` holds `expect` (read from `src` through
    /// `open`): kept when an asset of that name already does, replaced when
    /// it holds something else, else uploaded to a shard with room.
    pub(super) fn store_asset(
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
    pub(super) fn put_parts(&self, p: &Pointer, src: &Path) -> Result<(), BlobError> {
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
        let counter = super::super::start_counting();
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
