//! Upload: one `PUT`, or the parts of a Hugging Face multipart upload.

use super::*;

impl LfsStore {
    pub(super) fn upload(
        &self,
        p: &Pointer,
        src: &Path,
        actions: &HashMap<String, Action>,
    ) -> Result<(), BlobError> {
        self.upload_raw(p, src, actions).map_err(|e| self.scrub(e))
    }

    pub(super) fn upload_raw(
        &self,
        p: &Pointer,
        src: &Path,
        actions: &HashMap<String, Action>,
    ) -> Result<(), BlobError> {
        let Some(up) = actions.get("upload") else {
            return Err(protocol(
                &self.endpoint,
                "an upload answer without an `upload` action",
            ));
        };
        match Multipart::parse(&up.header, p.size).map_err(|m| {
            protocol(
                &up.href,
                format!("a multipart upload plan that cannot be followed: {m}"),
            )
        })? {
            Some(plan) => self.upload_parts(p, src, up, &plan)?,
            None => self.upload_single(p, src, up)?,
        }
        if let Some(verify) = actions.get("verify") {
            let body = serde_json::to_vec(&ObjectSpec {
                oid: p.oid(),
                size: p.size,
            })
            .map_err(|e| protocol(&verify.href, e.to_string()))?;
            // Verifying twice is harmless: retried on its own, so a
            // transient error here does not cost the upload again.
            self.retry.run(|| {
                let resp = self
                    .request(reqwest::Method::POST, verify)
                    .header("Accept", LFS_JSON)
                    .header("Content-Type", LFS_JSON)
                    .timeout(Duration::from_secs(60))
                    .body(body.clone())
                    .send_limited()
                    .map_err(|e| self.scrub(net_err(&verify.href, e)))?;
                if !resp.status().is_success() {
                    return Err(self.scrub(status_err(&verify.href, resp)));
                }
                Ok(())
            })?;
        }
        Ok(())
    }

    /// The basic transfer: one `PUT` of the whole file.
    pub(super) fn upload_single(
        &self,
        p: &Pointer,
        src: &Path,
        up: &Action,
    ) -> Result<(), BlobError> {
        let (reader, changed) = open_verified(src, p)?;
        let body = reqwest::blocking::Body::sized(reader, p.size);
        let resp = self
            .request(reqwest::Method::PUT, up)
            .header("Content-Type", "application/octet-stream")
            .timeout(transfer_timeout(p.size))
            .body(body)
            .send_limited();
        if changed.load(Ordering::SeqCst) {
            return Err(BlobError::Changed {
                path: src.to_path_buf(),
            });
        }
        let resp = resp.map_err(|e| net_err(&up.href, e))?;
        if !resp.status().is_success() {
            return Err(status_err(&up.href, resp));
        }
        Ok(())
    }

    /// Hugging Face's multipart transfer (module docs): every part, each
    /// retried on its own, then the completion request.
    pub(super) fn upload_parts(
        &self,
        p: &Pointer,
        src: &Path,
        up: &Action,
        plan: &Multipart,
    ) -> Result<(), BlobError> {
        // One handle for the whole upload: every part reads the same file
        // even if it is replaced by a rename meanwhile.
        let file = Arc::new(File::open(src).map_err(|source| BlobError::Io {
            what: "read",
            path: src.to_path_buf(),
            source,
        })?);
        let changed = Arc::new(AtomicBool::new(false));
        let mut hashed = Sha256::new();
        let mut etags = Vec::with_capacity(plan.urls.len());
        let counter = super::super::start_counting();
        for (i, url) in plan.urls.iter().enumerate() {
            let last = i + 1 == plan.urls.len();
            let range = plan.range(i, p.size);
            let part = || {
                self.put_part(
                    PartReader {
                        file: file.clone(),
                        pos: range.0,
                        end: range.1,
                        hasher: hashed.clone(),
                        expected: last.then_some(*p),
                        done: Arc::new(Mutex::new(None)),
                        changed: changed.clone(),
                        counter: counter.clone(),
                    },
                    url,
                    src,
                )
                .map_err(|e| self.scrub(e))
            };
            let (etag, state) = self.retry.run(part)?;
            hashed = state;
            etags.push(etag);
        }
        let body = serde_json::to_vec(&completion(p.oid(), &etags))
            .map_err(|e| protocol(&up.href, e.to_string()))?;
        self.retry.run(|| {
            let req = self
                .client
                .post(&up.href)
                .header("Accept", LFS_JSON)
                .header("Content-Type", LFS_JSON)
                .timeout(Duration::from_secs(120))
                .body(body.clone());
            let req = self.with_headers(req, plan.headers.iter().map(|(k, v)| (k, v)), &up.href);
            let resp = req
                .send_limited()
                .map_err(|e| self.scrub(net_err(&up.href, e)))?;
            if !resp.status().is_success() {
                return Err(self.scrub(status_err(&up.href, resp)));
            }
            Ok(())
        })
    }

    /// `PUT` one part to its presigned URL: nothing but the bytes (no
    /// credentials, no content type: the URL's signature is the auth, and
    /// storage may refuse anything it did not sign). Returns the part's
    /// `ETag` and the running hash after it.
    pub(super) fn put_part(
        &self,
        reader: PartReader,
        url: &str,
        src: &Path,
    ) -> Result<(String, Sha256), BlobError> {
        let len = reader.end - reader.pos;
        let done = reader.done.clone();
        let changed = reader.changed.clone();
        let resp = self
            .client
            .put(url)
            .timeout(transfer_timeout(len))
            .body(reqwest::blocking::Body::sized(reader, len))
            .send_limited();
        if changed.load(Ordering::SeqCst) {
            return Err(BlobError::Changed {
                path: src.to_path_buf(),
            });
        }
        let resp = resp.map_err(|e| net_err(url, e))?;
        if !resp.status().is_success() {
            return Err(storage_err(url, resp));
        }
        let etag = resp
            .headers()
            .get(reqwest::header::ETAG)
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty())
            .map(String::from)
            .ok_or_else(|| protocol(url, "the storage answered a part without an `ETag`"))?;
        let state = done
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
            .ok_or_else(|| protocol(url, "the storage answered before it had the whole part"))?;
        Ok((etag, state))
    }
}
