//! `lfs`: a Git LFS server through the batch API with the basic transfer
//! (what GitHub LFS, Hugging Face repositories, Gitea and giftless serve),
//! and Hugging Face's multipart variant of it.
//!
//! Upload: `POST {endpoint}/objects/batch` (`operation: upload`); an object
//! without actions is already stored; otherwise `PUT` the bytes to the
//! action's `href` with its headers, call its `verify` action when there is
//! one, then ask again (`operation: download`) to confirm the server holds
//! it. Servers do not all check SHA-256 on upload (giftless does not), so the
//! upload stream is verified on our side ([`super::VerifyingReader`]) and
//! every download is verified again.
//!
//! Hugging Face multipart: for a large object Hugging Face answers with an
//! `upload` action whose `header` is no header at all but the plan of an
//! S3 multipart upload: `chunk_size` (bytes, a decimal string) and one
//! presigned URL per part under its zero-padded part number (`"00001"`,
//! `"00002"`, ...). Chunk *i* (bytes `[(i-1)·chunk_size, i·chunk_size)`) is
//! `PUT` to its URL with nothing but the bytes, each answer's `ETag` is
//! collected, and `{"oid": ..., "parts": [{"partNumber": i, "etag": ...}]}`
//! is `POST`ed to the action's `href` to assemble the object; `verify`
//! follows as usual. Each part streams from the file (memory stays flat)
//! and is retried on its own; the hash runs across the parts, and the last
//! bytes of the last part are withheld when the whole no longer hashes to
//! the pointer, so a file changed during the upload is never assembled.
//! Hugging Face's own client offers the transfers `basic` and `multipart`
//! and reads `chunk_size` whichever the server names; so do we.
//!
//! Auth: Basic `x-access-token:TOKEN` (GitHub and Gitea take a token as the
//! password with any user name), `Bearer TOKEN` for Hugging Face (what its
//! own client sends). The token goes only to the endpoint's own host, and
//! never to a presigned part URL; actions on other hosts (storage) get only
//! the headers the server handed out. Errors never carry it.
//!
//! Garbage collection is not possible here: the batch API has no way to
//! list or delete objects, so [`BlobStore::list`] answers `None` and blobs
//! no snapshot refers to any more stay until the server's own retention
//! (e.g. GitHub's "delete LFS objects", a Hugging Face repository's storage
//! cleanup) removes them.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::blocking::{Client, RequestBuilder, Response};
use sha2::{Digest, Sha256};

use super::{open_verified, BlobError, BlobStore, Retry, SendLimited};
use crate::persist::pointer::Pointer;

/// The media type of the batch API.
const LFS_JSON: &str = "application/vnd.git-lfs+json";

/// The transfers we offer, in this order. `multipart` is Hugging Face's
/// (the `basic` action shape, with the part plan in `header`). Servers take
/// the first one of the list they know (giftless does so even with its own,
/// different, `multipart` adapter configured); GitHub and Gitea know only
/// `basic`.
const TRANSFERS: [&str; 2] = ["basic", "multipart"];

/// Hugging Face's hosts: their own client authenticates with `Bearer`.
const HF_HOSTS: [&str; 2] = ["huggingface.co", "hf.co"];

/// A Git LFS server.
pub struct LfsStore {
    endpoint: String,
    host: Option<String>,
    /// Send `Bearer` rather than Basic (Hugging Face).
    bearer: bool,
    token: Option<String>,
    client: Client,
    retry: Retry,
}

mod batch;
mod multipart;
#[cfg(test)]
mod tests;
mod upload;
mod wire;

use multipart::*;
use wire::*;

/// A URL with its query (signed storage URLs carry secrets there) and
/// user info (`https://user:token@host/...`) hidden: the crate's one
/// redaction, [`crate::redact::url`].
pub(crate) fn shown(url: &str) -> String {
    crate::redact::url(url)
}

/// Map a transport error: connection and body problems are retryable.
pub(crate) fn net_err(url: &str, e: reqwest::Error) -> BlobError {
    BlobError::Network {
        url: shown(url),
        message: e.without_url().to_string(),
    }
}

/// A bit of an error answer's body: its JSON `message`, or the text.
fn body_message(resp: Response) -> String {
    let body = resp.text().unwrap_or_default();
    serde_json::from_str::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v.get("message").and_then(|m| m.as_str()).map(String::from))
        .unwrap_or(body)
        .chars()
        .take(300)
        .collect()
}

/// Turn an error status into a [`BlobError`], reading a bit of the body.
pub(crate) fn status_err(url: &str, resp: Response) -> BlobError {
    let status = resp.status().as_u16();
    if status == 401 || status == 403 {
        return BlobError::Auth {
            url: shown(url),
            status,
        };
    }
    BlobError::Http {
        url: shown(url),
        status,
        message: body_message(resp),
    }
}

/// An error status from a presigned storage URL: our token was not sent
/// there, so a 401/403 means the URL itself was refused (e.g. it expired),
/// not the credentials; the next snapshot asks for fresh URLs.
fn storage_err(url: &str, resp: Response) -> BlobError {
    let status = resp.status().as_u16();
    let mut message = body_message(resp);
    if status == 401 || status == 403 {
        message = format!("the storage refused the presigned URL (expired?): {message}");
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
/// their own), the system's OpenSSL and trust store like libgit2's (so one
/// custom CA, e.g. in `SSL_CERT_FILE`, serves pushes and blobs alike),
/// redirects followed (reqwest drops `Authorization` when a redirect leaves
/// the host).
pub(crate) fn client() -> Result<Client, BlobError> {
    Client::builder()
        .user_agent(concat!("stackctl/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(Duration::from_secs(20))
        .timeout(None)
        .build()
        .map_err(|e| BlobError::Unsupported(format!("cannot set up the HTTP client: {e}")))
}

fn host_of(url: &str) -> Option<String> {
    crate::weburl::origin(url).map(|(h, p)| format!("{h}:{p}"))
}

fn protocol(url: &str, message: impl Into<String>) -> BlobError {
    BlobError::Protocol {
        url: shown(url),
        message: message.into(),
    }
}

impl LfsStore {
    /// A store at `endpoint` (the `.../info/lfs` URL; batch at `{endpoint}/objects/batch`).
    pub fn new(endpoint: &str, token: Option<String>) -> Result<Self, BlobError> {
        let endpoint = endpoint.trim_end_matches('/').to_string();
        let Ok(parsed) = reqwest::Url::parse(&endpoint) else {
            return Err(BlobError::Unsupported(format!(
                "`persist.large_files.url` `{}` is not a URL: give the LFS endpoint, e.g. https://host/owner/repo.git/info/lfs",
                shown(&endpoint)
            )));
        };
        // Credentials in the URL would be sent as they are and written into
        // `.lfsconfig`, which is pushed (issue 17 item 7): refused, as in
        // `persist.remote`.
        if crate::redact::has_userinfo(&endpoint) {
            return Err(BlobError::Unsupported(format!(
                "`persist.large_files.url` `{}` holds credentials (`user:password@`): remove them and put the token in `persist.token`",
                shown(&endpoint)
            )));
        }
        let bearer = parsed
            .host_str()
            .is_some_and(|h| HF_HOSTS.iter().any(|hf| h.eq_ignore_ascii_case(hf)));
        Ok(Self {
            host: host_of(&endpoint),
            bearer,
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
        if self.bearer {
            req.bearer_auth(token)
        } else {
            req.basic_auth("x-access-token", Some(token))
        }
    }

    /// Mask the token wherever a server might have echoed it into an error,
    /// before the error reaches a log line (retries log every failure).
    fn scrub(&self, e: BlobError) -> BlobError {
        let Some(token) = &self.token else { return e };
        let m = |s: String| crate::check::mask(&s, std::slice::from_ref(token));
        match e {
            BlobError::Network { url, message } => BlobError::Network {
                url: m(url),
                message: m(message),
            },
            BlobError::Http {
                url,
                status,
                message,
            } => BlobError::Http {
                url: m(url),
                status,
                message: m(message),
            },
            BlobError::Auth { url, status } => BlobError::Auth {
                url: m(url),
                status,
            },
            BlobError::Protocol { url, message } => BlobError::Protocol {
                url: m(url),
                message: m(message),
            },
            other => other,
        }
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
        // The outer result is retried (batch and single PUT); the inner one
        // is not: a multipart upload already retried each part, and doing
        // it all again would send every part once more per attempt.
        self.retry.run(|| match self.batch("upload", p)? {
            Answer::Present => Ok(Ok(())),
            Answer::Missing => Err(protocol(
                &self.endpoint,
                "the server answered an upload with `not found`",
            )),
            Answer::Actions(actions) => {
                let multipart = actions
                    .get("upload")
                    .is_some_and(|up| up.header.contains_key("chunk_size"));
                let result = self.upload(p, src, &actions);
                if multipart {
                    Ok(result)
                } else {
                    result.map(Ok)
                }
            }
        })??;
        // Confirm: the server now offers it for download.
        match self.retry.run(|| self.batch("download", p))? {
            Answer::Actions(a) if a.contains_key("download") => Ok(()),
            _ => Err(protocol(
                &self.endpoint,
                format!("blob {p} was uploaded but the server does not offer it for download"),
            )),
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
        let mut fetch = || -> Result<(), BlobError> {
            let mut resp = self
                .request(reqwest::Method::GET, down)
                .timeout(transfer_timeout(p.size))
                .send_limited()
                .map_err(|e| net_err(&down.href, e))?;
            if resp.status().as_u16() == 404 {
                return Err(BlobError::Missing(*p));
            }
            if !resp.status().is_success() {
                return Err(status_err(&down.href, resp));
            }
            resp.copy_to(out).map_err(|e| net_err(&down.href, e))?;
            Ok(())
        };
        fetch().map_err(|e| self.scrub(e))
    }

    /// The batch API cannot list objects: no garbage collection (module docs).
    fn list(&self) -> Result<Option<Vec<super::StoredBlob>>, BlobError> {
        Ok(None)
    }

    /// Never with credentials: a query string (which may carry a token)
    /// keeps the endpoint out of `.lfsconfig`, a file of the repository.
    fn lfs_url(&self) -> Option<String> {
        (!crate::redact::has_query(&self.endpoint)).then(|| self.endpoint.clone())
    }
}
