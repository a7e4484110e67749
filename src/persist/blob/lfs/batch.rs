//! The batch request and the requests of its actions, with their headers
//! and the token where it may go.

use super::*;

impl LfsStore {
    pub(super) fn batch(&self, operation: &str, p: &Pointer) -> Result<Answer, BlobError> {
        self.batch_raw(operation, p).map_err(|e| self.scrub(e))
    }

    pub(super) fn batch_raw(&self, operation: &str, p: &Pointer) -> Result<Answer, BlobError> {
        let url = format!("{}/objects/batch", self.endpoint);
        let body = BatchRequest {
            operation,
            transfers: TRANSFERS,
            objects: vec![ObjectSpec {
                oid: p.oid(),
                size: p.size,
            }],
            hash_algo: "sha256",
        };
        let body = serde_json::to_vec(&body).map_err(|e| protocol(&url, e.to_string()))?;
        let req = self
            .client
            .post(&url)
            .header("Accept", LFS_JSON)
            .header("Content-Type", LFS_JSON)
            .timeout(Duration::from_secs(60))
            .body(body);
        let resp = self
            .auth(req, &url)
            .send_limited()
            .map_err(|e| net_err(&url, e))?;
        if !resp.status().is_success() {
            return Err(status_err(&url, resp));
        }
        let parsed: BatchResponse = resp
            .json()
            .map_err(|e| protocol(&url, format!("not a batch response: {e}")))?;
        let transfer = parsed.transfer.unwrap_or_else(|| "basic".into());
        if !TRANSFERS.contains(&transfer.as_str()) {
            return Err(protocol(
                &url,
                format!(
                    "the server chose transfer `{transfer}`, only `basic` and Hugging Face's `multipart` are supported"
                ),
            ));
        }
        let oid = p.oid();
        let obj = parsed
            .objects
            .into_iter()
            .find(|o| o.oid == oid)
            .ok_or_else(|| protocol(&url, format!("object {oid} missing from the answer")))?;
        if let Some(err) = obj.error {
            return match err.code {
                404 | 410 => Ok(Answer::Missing),
                401 | 403 => Err(BlobError::Auth {
                    url: shown(&url),
                    status: err.code,
                }),
                code => Err(BlobError::Http {
                    url: shown(&url),
                    status: code,
                    message: err.message,
                }),
            };
        }
        match obj.actions {
            Some(a) if !a.is_empty() => {
                // Another server's `multipart` (giftless has one) looks
                // different: say so rather than PUT to the wrong place.
                let hf_shape = a
                    .get("upload")
                    .is_none_or(|up| up.header.contains_key("chunk_size"));
                if transfer == "multipart" && operation == "upload" && !hf_shape {
                    return Err(protocol(
                        &url,
                        "the server chose transfer `multipart` but not in Hugging Face's form (`chunk_size` and numbered part URLs)",
                    ));
                }
                Ok(Answer::Actions(a))
            }
            _ => Ok(Answer::Present),
        }
    }

    /// `req` with `headers` verbatim, and our credentials when the action
    /// brings none and is on the endpoint's host.
    pub(super) fn with_headers<'a>(
        &self,
        mut req: RequestBuilder,
        headers: impl IntoIterator<Item = (&'a String, &'a String)>,
        url: &str,
    ) -> RequestBuilder {
        let mut has_auth = false;
        for (k, v) in headers {
            has_auth |= k.eq_ignore_ascii_case("authorization");
            req = req.header(k.as_str(), v.as_str());
        }
        if has_auth {
            req
        } else {
            self.auth(req, url)
        }
    }

    pub(super) fn request(&self, method: reqwest::Method, action: &Action) -> RequestBuilder {
        let req = self.client.request(method, &action.href);
        self.with_headers(req, &action.header, &action.href)
    }
}
