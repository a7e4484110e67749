//! `lfs`: a Git LFS server through the batch API with the basic transfer
//! (what GitHub LFS, Hugging Face repositories, Gitea and giftless serve).
//!
//! Upload: `POST {endpoint}/objects/batch` (`operation: upload`); an object
//! without actions is already stored; otherwise `PUT` the bytes to the
//! action's `href` with its headers, call its `verify` action when there is
//! one, then ask again (`operation: download`) to confirm the server holds
//! it. Servers do not all check SHA-256 on upload (giftless does not), so the
//! upload stream is verified on our side ([`super::VerifyingReader`]) and
//! every download is verified again.
//!
//! Auth: Basic `x-access-token:TOKEN` (GitHub, Gitea), `Bearer TOKEN` for
//! Hugging Face. The token goes only to the endpoint's own host; actions on
//! other hosts (storage) get only the headers the server handed out.
//!
//! Garbage collection is not possible here: the batch API has no way to
//! list or delete objects, so [`BlobStore::list`] answers `None` and blobs
//! no snapshot refers to any more stay until the server's own retention
//! (e.g. GitHub's "delete LFS objects", a Hugging Face repository's storage
//! cleanup) removes them.

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::Duration;

use reqwest::blocking::{Client, RequestBuilder, Response};

use super::{open_verified, BlobError, BlobStore, Retry};
use crate::persist::pointer::Pointer;

/// The media type of the batch API.
const LFS_JSON: &str = "application/vnd.git-lfs+json";

/// A Git LFS server.
pub struct LfsStore {
    endpoint: String,
    host: Option<String>,
    token: Option<String>,
    client: Client,
    retry: Retry,
}

#[derive(serde::Serialize)]
struct BatchRequest<'a> {
    operation: &'a str,
    transfers: [&'a str; 1],
    objects: Vec<ObjectSpec>,
    hash_algo: &'a str,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct ObjectSpec {
    oid: String,
    size: u64,
}

#[derive(serde::Deserialize)]
struct BatchResponse {
    #[serde(default)]
    transfer: Option<String>,
    #[serde(default)]
    objects: Vec<ObjectResponse>,
}

#[derive(serde::Deserialize)]
struct ObjectResponse {
    oid: String,
    #[serde(default)]
    actions: Option<HashMap<String, Action>>,
    #[serde(default)]
    error: Option<ObjectError>,
}

#[derive(serde::Deserialize, Clone)]
struct Action {
    href: String,
    #[serde(default)]
    header: HashMap<String, String>,
}

#[derive(serde::Deserialize)]
struct ObjectError {
    code: u16,
    #[serde(default)]
    message: String,
}

/// What the server said about one object.
enum Answer {
    /// Stored already (upload) / nothing to do.
    Present,
    /// These actions to carry out.
    Actions(HashMap<String, Action>),
    /// Not there (download of a missing object).
    Missing,
}

/// A URL without its query (signed storage URLs carry secrets there).
pub(crate) fn shown(url: &str) -> String {
    url.split(['?', '#']).next().unwrap_or_default().to_string()
}

/// Map a transport error: connection and body problems are retryable.
pub(crate) fn net_err(url: &str, e: reqwest::Error) -> BlobError {
    BlobError::Network {
        url: shown(url),
        message: e.without_url().to_string(),
    }
}

/// Turn an error status into a [`BlobError`], reading a bit of the body.
pub(crate) fn status_err(url: &str, resp: Response) -> BlobError {
    let status = resp.status().as_u16();
    if status == 401 {
        return BlobError::Auth {
            url: shown(url),
            status,
        };
    }
    let body = resp.text().unwrap_or_default();
    let message: String = serde_json::from_str::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v.get("message").and_then(|m| m.as_str()).map(String::from))
        .unwrap_or(body)
        .chars()
        .take(300)
        .collect();
    if status == 403 {
        return BlobError::Auth {
            url: shown(url),
            status,
        };
    }
    BlobError::Http {
        url: shown(url),
        status,
        message,
    }
}

/// A generous whole-transfer timeout for `size` bytes (at least 64 KiB/s).
pub(crate) fn transfer_timeout(size: u64) -> Duration {
    Duration::from_secs(60 + size / (64 * 1024))
}

/// A blocking HTTP client for the stores: no global timeout (transfers set
/// their own), rustls, redirects followed (reqwest drops `Authorization`
/// when a redirect leaves the host).
pub(crate) fn client() -> Result<Client, BlobError> {
    Client::builder()
        .user_agent(concat!("stackctl/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(Duration::from_secs(20))
        .timeout(None)
        .build()
        .map_err(|e| BlobError::Unsupported(format!("cannot set up the HTTP client: {e}")))
}

fn host_of(url: &str) -> Option<String> {
    reqwest::Url::parse(url).ok().and_then(|u| {
        u.host_str()
            .map(|h| format!("{h}:{}", u.port_or_known_default().unwrap_or(0)))
    })
}

impl LfsStore {
    /// A store at `endpoint` (the `.../info/lfs` URL; batch at `{endpoint}/objects/batch`).
    pub fn new(endpoint: &str, token: Option<String>) -> Result<Self, BlobError> {
        let endpoint = endpoint.trim_end_matches('/').to_string();
        if reqwest::Url::parse(&endpoint).is_err() {
            return Err(BlobError::Unsupported(format!(
                "`persist.large_files.url` `{endpoint}` is not a URL: give the LFS endpoint, e.g. https://host/owner/repo.git/info/lfs"
            )));
        }
        Ok(Self {
            host: host_of(&endpoint),
            endpoint,
            token: token.filter(|t| !t.is_empty()),
            client: client()?,
            retry: Retry::default(),
        })
    }

    /// Use this retry policy (tests make it fast).
    pub fn with_retry(mut self, retry: Retry) -> Self {
        self.retry = retry;
        self
    }

    /// Add our credentials when `url` is on the endpoint's host.
    fn auth(&self, req: RequestBuilder, url: &str) -> RequestBuilder {
        let Some(token) = &self.token else { return req };
        if host_of(url) != self.host {
            return req;
        }
        if self
            .host
            .as_deref()
            .is_some_and(|h| h.starts_with("huggingface.co:"))
        {
            req.bearer_auth(token)
        } else {
            req.basic_auth("x-access-token", Some(token))
        }
    }

    fn batch(&self, operation: &str, p: &Pointer) -> Result<Answer, BlobError> {
        let url = format!("{}/objects/batch", self.endpoint);
        let body = BatchRequest {
            operation,
            transfers: ["basic"],
            objects: vec![ObjectSpec {
                oid: p.oid(),
                size: p.size,
            }],
            hash_algo: "sha256",
        };
        let body = serde_json::to_vec(&body).map_err(|e| BlobError::Protocol {
            url: url.clone(),
            message: e.to_string(),
        })?;
        let req = self
            .client
            .post(&url)
            .header("Accept", LFS_JSON)
            .header("Content-Type", LFS_JSON)
            .timeout(Duration::from_secs(60))
            .body(body);
        let resp = self.auth(req, &url).send().map_err(|e| net_err(&url, e))?;
        if !resp.status().is_success() {
            return Err(status_err(&url, resp));
        }
        let bad = |message: String| BlobError::Protocol {
            url: url.clone(),
            message,
        };
        let parsed: BatchResponse = resp
            .json()
            .map_err(|e| bad(format!("not a batch response: {e}")))?;
        if parsed.transfer.as_deref().is_some_and(|t| t != "basic") {
            return Err(bad(format!(
                "the server chose transfer `{}`, only `basic` is supported",
                parsed.transfer.unwrap_or_default()
            )));
        }
        let oid = p.oid();
        let obj = parsed
            .objects
            .into_iter()
            .find(|o| o.oid == oid)
            .ok_or_else(|| bad(format!("object {oid} missing from the answer")))?;
        if let Some(err) = obj.error {
            return match err.code {
                404 | 410 => Ok(Answer::Missing),
                401 | 403 => Err(BlobError::Auth {
                    url: url.clone(),
                    status: err.code,
                }),
                code => Err(BlobError::Http {
                    url: url.clone(),
                    status: code,
                    message: err.message,
                }),
            };
        }
        match obj.actions {
            Some(a) if !a.is_empty() => Ok(Answer::Actions(a)),
            _ => Ok(Answer::Present),
        }
    }

    fn request(&self, method: reqwest::Method, action: &Action) -> RequestBuilder {
        let mut req = self.client.request(method, &action.href);
        let mut has_auth = false;
        for (k, v) in &action.header {
            has_auth |= k.eq_ignore_ascii_case("authorization");
            req = req.header(k.as_str(), v.as_str());
        }
        if has_auth {
            req
        } else {
            self.auth(req, &action.href)
        }
    }

    fn upload(
        &self,
        p: &Pointer,
        src: &Path,
        actions: &HashMap<String, Action>,
    ) -> Result<(), BlobError> {
        let Some(up) = actions.get("upload") else {
            return Err(BlobError::Protocol {
                url: self.endpoint.clone(),
                message: "an upload answer without an `upload` action".into(),
            });
        };
        let (reader, changed) = open_verified(src, p)?;
        let body = reqwest::blocking::Body::sized(reader, p.size);
        let resp = self
            .request(reqwest::Method::PUT, up)
            .header("Content-Type", "application/octet-stream")
            .timeout(transfer_timeout(p.size))
            .body(body)
            .send();
        if changed.load(Ordering::SeqCst) {
            return Err(BlobError::Changed {
                path: src.to_path_buf(),
            });
        }
        let resp = resp.map_err(|e| net_err(&up.href, e))?;
        if !resp.status().is_success() {
            return Err(status_err(&up.href, resp));
        }
        if let Some(verify) = actions.get("verify") {
            let body = serde_json::to_vec(&ObjectSpec {
                oid: p.oid(),
                size: p.size,
            })
            .map_err(|e| BlobError::Protocol {
                url: shown(&verify.href),
                message: e.to_string(),
            })?;
            let resp = self
                .request(reqwest::Method::POST, verify)
                .header("Accept", LFS_JSON)
                .header("Content-Type", LFS_JSON)
                .timeout(Duration::from_secs(60))
                .body(body)
                .send()
                .map_err(|e| net_err(&verify.href, e))?;
            if !resp.status().is_success() {
                return Err(status_err(&verify.href, resp));
            }
        }
        Ok(())
    }
}

impl BlobStore for LfsStore {
    fn describe(&self) -> String {
        format!("lfs {}", shown(&self.endpoint))
    }

    fn has(&self, p: &Pointer) -> Result<bool, BlobError> {
        self.retry
            .run(|| Ok(matches!(self.batch("upload", p)?, Answer::Present)))
    }

    fn put(&self, p: &Pointer, src: &Path) -> Result<(), BlobError> {
        self.retry.run(|| match self.batch("upload", p)? {
            Answer::Present => Ok(()),
            Answer::Missing => Err(BlobError::Protocol {
                url: self.endpoint.clone(),
                message: "the server answered an upload with `not found`".into(),
            }),
            Answer::Actions(actions) => self.upload(p, src, &actions),
        })?;
        // Confirm: the server now offers it for download.
        match self.retry.run(|| self.batch("download", p))? {
            Answer::Actions(a) if a.contains_key("download") => Ok(()),
            _ => Err(BlobError::Protocol {
                url: self.endpoint.clone(),
                message: format!(
                    "blob {p} was uploaded but the server does not offer it for download"
                ),
            }),
        }
    }

    fn get(&self, p: &Pointer, out: &mut dyn Write) -> Result<(), BlobError> {
        let actions = match self.retry.run(|| self.batch("download", p))? {
            Answer::Actions(a) => a,
            Answer::Missing | Answer::Present => return Err(BlobError::Missing(*p)),
        };
        let Some(down) = actions.get("download") else {
            return Err(BlobError::Missing(*p));
        };
        let mut resp = self
            .request(reqwest::Method::GET, down)
            .timeout(transfer_timeout(p.size))
            .send()
            .map_err(|e| net_err(&down.href, e))?;
        if resp.status().as_u16() == 404 {
            return Err(BlobError::Missing(*p));
        }
        if !resp.status().is_success() {
            return Err(status_err(&down.href, resp));
        }
        resp.copy_to(out).map_err(|e| net_err(&down.href, e))?;
        Ok(())
    }

    /// The batch API cannot list objects: no garbage collection (module docs).
    fn list(&self) -> Result<Option<Vec<super::StoredBlob>>, BlobError> {
        Ok(None)
    }

    fn lfs_url(&self) -> Option<String> {
        Some(self.endpoint.clone())
    }
}
