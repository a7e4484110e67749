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

#[derive(serde::Serialize)]
struct BatchRequest<'a> {
    operation: &'a str,
    transfers: [&'a str; 2],
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

#[derive(serde::Deserialize, Clone, Debug)]
struct Action {
    href: String,
    #[serde(default, deserialize_with = "header_map")]
    header: HashMap<String, String>,
}

/// An action's `header`, tolerating `null` and numbers (Hugging Face's own
/// client accepts `chunk_size` as a number too) so one odd value does not
/// make the whole answer unreadable.
fn header_map<'de, D: serde::Deserializer<'de>>(d: D) -> Result<HashMap<String, String>, D::Error> {
    use serde::Deserialize;
    let raw: Option<HashMap<String, serde_json::Value>> = Option::deserialize(d)?;
    Ok(raw
        .unwrap_or_default()
        .into_iter()
        .filter_map(|(k, v)| match v {
            serde_json::Value::String(s) => Some((k, s)),
            serde_json::Value::Number(n) => Some((k, n.to_string())),
            _ => None,
        })
        .collect())
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

/// Hugging Face's plan for a multipart upload, read from the `upload`
/// action's `header`.
#[derive(Debug, PartialEq, Eq)]
struct Multipart {
    chunk_size: u64,
    /// The presigned part URLs, part 1 first.
    urls: Vec<String>,
    /// The other entries of `header`: real headers, for the completion.
    headers: Vec<(String, String)>,
}

impl Multipart {
    /// The plan for a `size`-byte object, `None` without `chunk_size` (a
    /// single `PUT`). Part URLs are ordered by their number, not by the
    /// order of the JSON keys, and there must be exactly one per chunk.
    fn parse(header: &HashMap<String, String>, size: u64) -> Result<Option<Multipart>, String> {
        let Some(cs) = header.get("chunk_size") else {
            return Ok(None);
        };
        let chunk_size = cs
            .trim()
            .parse::<u64>()
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| format!("`chunk_size` `{cs}` is not a positive number of bytes"))?;
        let mut numbered = Vec::new();
        let mut headers = Vec::new();
        for (k, v) in header {
            if k == "chunk_size" {
                continue;
            }
            if !k.is_empty() && k.bytes().all(|b| b.is_ascii_digit()) {
                let n: u64 = k
                    .parse()
                    .map_err(|_| format!("part number `{k}` is out of range"))?;
                numbered.push((n, v.clone()));
            } else {
                headers.push((k.clone(), v.clone()));
            }
        }
        numbered.sort_by_key(|(n, _)| *n);
        if let Some(w) = numbered.windows(2).find(|w| w[0].0 == w[1].0) {
            return Err(format!("part number {} is given twice", w[0].0));
        }
        let want = size.div_ceil(chunk_size);
        if numbered.len() as u64 != want {
            return Err(format!(
                "{} part URLs for {size} bytes in chunks of {chunk_size} ({want} expected)",
                numbered.len()
            ));
        }
        headers.sort();
        Ok(Some(Multipart {
            chunk_size,
            urls: numbered.into_iter().map(|(_, u)| u).collect(),
            headers,
        }))
    }

    /// Bytes `[start, end)` of part `index` (0-based) of a `size`-byte object.
    fn range(&self, index: usize, size: u64) -> (u64, u64) {
        let start = (index as u64).saturating_mul(self.chunk_size).min(size);
        (start, start.saturating_add(self.chunk_size).min(size))
    }
}

/// The body that assembles the parts (`partNumber` counts from 1, in order).
#[derive(serde::Serialize)]
struct Completion<'a> {
    oid: String,
    parts: Vec<CompletedPart<'a>>,
}

#[derive(serde::Serialize)]
struct CompletedPart<'a> {
    #[serde(rename = "partNumber")]
    part_number: usize,
    etag: &'a str,
}

fn completion(oid: String, etags: &[String]) -> Completion<'_> {
    Completion {
        oid,
        parts: etags
            .iter()
            .enumerate()
            .map(|(i, etag)| CompletedPart {
                part_number: i + 1,
                etag,
            })
            .collect(),
    }
}

/// Streams one part (`[pos, end)` of the file) into a request body, hashing
/// it on top of the hash of all parts before it. When the range is done the
/// running hash is handed back through `done`, so the next part (or a
/// retry of this one, which starts again from the same state) continues it.
/// On the last part the final bytes are withheld, and `changed` set, unless
/// the whole object hashes to `expected`: the server never receives a
/// complete last part of the wrong content, and we never assemble it.
struct PartReader {
    file: Arc<File>,
    pos: u64,
    end: u64,
    hasher: Sha256,
    /// Set on the last part only.
    expected: Option<Pointer>,
    done: Arc<Mutex<Option<Sha256>>>,
    changed: Arc<AtomicBool>,
    /// Byte progress of the whole file (`None` when nobody watches).
    counter: Option<Arc<super::ByteCounter>>,
}

impl PartReader {
    fn mismatch(&self) -> io::Error {
        self.changed.store(true, Ordering::SeqCst);
        io::Error::new(
            io::ErrorKind::InvalidData,
            "file changed while it was uploaded",
        )
    }
}

impl Read for PartReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.pos >= self.end || buf.is_empty() {
            return Ok(0);
        }
        let want = buf
            .len()
            .min(usize::try_from(self.end - self.pos).unwrap_or(usize::MAX));
        // Positioned reads: a retry never depends on where the last attempt
        // left a shared file offset.
        let n = loop {
            match self.file.read_at(&mut buf[..want], self.pos) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => break other?,
            }
        };
        if n == 0 {
            // Shrunk since it was hashed.
            return Err(self.mismatch());
        }
        self.hasher.update(&buf[..n]);
        self.pos += n as u64;
        if let Some(c) = &self.counter {
            c.add(n as u64);
        }
        if self.pos == self.end {
            if let Some(p) = self.expected {
                if self.hasher.clone().finalize()[..] != p.sha256 {
                    return Err(self.mismatch());
                }
            }
            *self.done.lock().unwrap_or_else(|e| e.into_inner()) = Some(self.hasher.clone());
        }
        Ok(n)
    }
}

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
    reqwest::Url::parse(url).ok().and_then(|u| {
        u.host_str()
            .map(|h| format!("{h}:{}", u.port_or_known_default().unwrap_or(0)))
    })
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

    fn batch(&self, operation: &str, p: &Pointer) -> Result<Answer, BlobError> {
        self.batch_raw(operation, p).map_err(|e| self.scrub(e))
    }

    fn batch_raw(&self, operation: &str, p: &Pointer) -> Result<Answer, BlobError> {
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
    fn with_headers<'a>(
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

    fn request(&self, method: reqwest::Method, action: &Action) -> RequestBuilder {
        let req = self.client.request(method, &action.href);
        self.with_headers(req, &action.header, &action.href)
    }

    fn upload(
        &self,
        p: &Pointer,
        src: &Path,
        actions: &HashMap<String, Action>,
    ) -> Result<(), BlobError> {
        self.upload_raw(p, src, actions).map_err(|e| self.scrub(e))
    }

    fn upload_raw(
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
    fn upload_single(&self, p: &Pointer, src: &Path, up: &Action) -> Result<(), BlobError> {
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
    fn upload_parts(
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
        let counter = super::start_counting();
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
    fn put_part(
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

#[cfg(test)]
mod tests {
    use super::*;

    fn header(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn part_urls_are_ordered_by_their_number_and_counted_against_the_chunks() {
        // Keys as Hugging Face writes them, out of order; 10 parts so that
        // "00010" must sort after "00009" by number.
        let mut pairs: Vec<(String, String)> = (1..=10)
            .rev()
            .map(|n| (format!("{n:05}"), format!("https://s3.example/part?n={n}")))
            .collect();
        pairs.push(("chunk_size".into(), "4".into()));
        pairs.push(("X-Extra".into(), "yes".into()));
        let h: HashMap<String, String> = pairs.into_iter().collect();
        let plan = Multipart::parse(&h, 38).unwrap().unwrap();
        assert_eq!(plan.chunk_size, 4);
        let want: Vec<String> = (1..=10)
            .map(|n| format!("https://s3.example/part?n={n}"))
            .collect();
        assert_eq!(plan.urls, want);
        assert_eq!(plan.headers, vec![("X-Extra".into(), "yes".into())]);

        // Too few or too many parts for the size: refused before any upload.
        let e = Multipart::parse(&h, 41).unwrap_err();
        assert!(
            e.contains("10 part URLs") && e.contains("11 expected"),
            "{e}"
        );
        assert!(Multipart::parse(&h, 36).is_err());
        // Exactly full chunks.
        assert!(Multipart::parse(&h, 40).unwrap().is_some());
    }

    #[test]
    fn a_bad_plan_is_refused_and_no_chunk_size_means_a_single_put() {
        assert_eq!(
            Multipart::parse(&header(&[("Authorization", "x")]), 9).unwrap(),
            None
        );
        for bad in ["0", "-5", "ten", ""] {
            let h = header(&[("chunk_size", bad), ("00001", "u")]);
            assert!(Multipart::parse(&h, 9).is_err(), "chunk_size {bad:?}");
        }
        let h = header(&[("chunk_size", "5"), ("1", "a"), ("01", "b")]);
        let e = Multipart::parse(&h, 10).unwrap_err();
        assert!(e.contains("twice"), "{e}");
    }

    #[test]
    fn chunk_ranges_cover_the_object_exactly() {
        let plan = Multipart {
            chunk_size: 4,
            urls: vec![String::new(); 3],
            headers: vec![],
        };
        let ranges: Vec<_> = (0..3).map(|i| plan.range(i, 10)).collect();
        assert_eq!(ranges, vec![(0, 4), (4, 8), (8, 10)]);
        // One byte over a chunk boundary.
        assert_eq!(plan.range(2, 9), (8, 9));
    }

    #[test]
    fn the_completion_payload_numbers_parts_from_one_in_order() {
        let etags = vec!["\"a1\"".to_string(), "\"b2\"".to_string()];
        let v = serde_json::to_value(completion("ab".repeat(32), &etags)).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "oid": "ab".repeat(32),
                "parts": [
                    {"partNumber": 1, "etag": "\"a1\""},
                    {"partNumber": 2, "etag": "\"b2\""},
                ],
            })
        );
    }

    #[test]
    fn an_action_header_with_a_numeric_chunk_size_or_null_is_read() {
        let a: Action = serde_json::from_str(
            r#"{"href": "https://hf.example/complete", "header": {"chunk_size": 8, "00001": "u1"}}"#,
        )
        .unwrap();
        assert_eq!(a.header.get("chunk_size").map(String::as_str), Some("8"));
        let plan = Multipart::parse(&a.header, 8).unwrap().unwrap();
        assert_eq!(plan.urls, vec!["u1".to_string()]);
        let a: Action = serde_json::from_str(r#"{"href": "h", "header": null}"#).unwrap();
        assert!(a.header.is_empty());
    }

    /// Read parts of `path` like the upload does; `attempts[i]` reads part
    /// `i` that many times (a retry restarts from the same hash state).
    fn read_parts(
        path: &Path,
        p: Pointer,
        chunk: u64,
        attempts: &[usize],
    ) -> (Vec<u8>, io::Result<()>, bool) {
        let file = Arc::new(File::open(path).unwrap());
        let changed = Arc::new(AtomicBool::new(false));
        let parts = p.size.div_ceil(chunk) as usize;
        let plan = Multipart {
            chunk_size: chunk,
            urls: vec![String::new(); parts],
            headers: vec![],
        };
        let mut hashed = Sha256::new();
        let mut sent = Vec::new();
        for i in 0..parts {
            let (pos, end) = plan.range(i, p.size);
            for attempt in 0..attempts.get(i).copied().unwrap_or(1) {
                let done = Arc::new(Mutex::new(None));
                let mut r = PartReader {
                    file: file.clone(),
                    pos,
                    end,
                    hasher: hashed.clone(),
                    expected: (i + 1 == parts).then_some(p),
                    done: done.clone(),
                    changed: changed.clone(),
                    counter: None,
                };
                let mut buf = Vec::new();
                let res = r.read_to_end(&mut buf).map(|_| ());
                if attempt + 1 == attempts.get(i).copied().unwrap_or(1) {
                    sent.extend_from_slice(&buf);
                }
                if let Err(e) = res {
                    return (sent, Err(e), changed.load(Ordering::SeqCst));
                }
                if attempt + 1 == attempts.get(i).copied().unwrap_or(1) {
                    hashed = done.lock().unwrap().take().expect("whole part read");
                }
            }
        }
        (sent, Ok(()), changed.load(Ordering::SeqCst))
    }

    #[test]
    fn parts_stream_the_file_verified_across_parts_and_retries() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("f");
        let bytes: Vec<u8> = (0..10_000u32).map(|i| (i * 7 % 251) as u8).collect();
        std::fs::write(&path, &bytes).unwrap();
        let p = super::super::hash_reader(&bytes[..]).unwrap();

        let (sent, res, changed) = read_parts(&path, p, 3000, &[1, 3, 1, 2]);
        res.unwrap();
        assert_eq!(sent, bytes);
        assert!(!changed);

        // Changed after hashing: the last bytes of the last part are withheld.
        let mut other = bytes.clone();
        other[9_999] ^= 1;
        std::fs::write(&path, &other).unwrap();
        let (sent, res, changed) = read_parts(&path, p, 3000, &[1, 1, 1, 1]);
        assert_eq!(res.unwrap_err().kind(), io::ErrorKind::InvalidData);
        assert!(changed);
        assert!(sent.len() < bytes.len(), "the last bytes were withheld");

        // Shrunk: fails too.
        std::fs::write(&path, &bytes[..7000]).unwrap();
        let (_, res, changed) = read_parts(&path, p, 3000, &[1, 1, 1, 1]);
        assert!(res.is_err() && changed);
    }

    /// Issue 17 item 7: credentials in the endpoint are refused, and a
    /// query string never reaches `.lfsconfig`.
    #[test]
    fn credentials_in_the_endpoint_never_reach_a_file() {
        let e = LfsStore::new("https://u:TOKEN_in_url@h/o/r.git/info/lfs", None)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("holds credentials"), "{e}");
        assert!(!e.contains("TOKEN_in_url"), "{e}");
        let s = LfsStore::new("https://h/o/r.git/info/lfs?t=TOKEN_q", None).unwrap();
        assert_eq!(s.lfs_url(), None);
        let s = LfsStore::new("https://h/o/r.git/info/lfs", None).unwrap();
        assert_eq!(s.lfs_url().as_deref(), Some("https://h/o/r.git/info/lfs"));
    }

    #[test]
    fn urls_in_errors_lose_query_and_user_info() {
        assert_eq!(
            shown("https://s3.example/b/o?X-Amz-Signature=secret#f"),
            "https://s3.example/b/o?***"
        );
        assert_eq!(
            shown("https://user:hf_secret@huggingface.co/datasets/u/d.git/info/lfs"),
            "https://***@huggingface.co/datasets/u/d.git/info/lfs"
        );
        assert_eq!(shown("http://127.0.0.1:9/a@b"), "http://127.0.0.1:9/a@b");
    }

    fn auth_header(store: &LfsStore, url: &str) -> Option<String> {
        let req = store.auth(store.client.get(url), url).build().unwrap();
        req.headers()
            .get(reqwest::header::AUTHORIZATION)
            .map(|v| v.to_str().unwrap().to_string())
    }

    #[test]
    fn each_host_gets_the_auth_it_documents_and_other_hosts_none() {
        let tok = Some("hf_secret".to_string());
        let hf = LfsStore::new(
            "https://huggingface.co/datasets/u/d.git/info/lfs",
            tok.clone(),
        )
        .unwrap();
        assert_eq!(
            auth_header(
                &hf,
                "https://huggingface.co/datasets/u/d.git/info/lfs/objects/batch"
            )
            .as_deref(),
            Some("Bearer hf_secret")
        );
        // Presigned storage on another host: nothing of ours.
        assert_eq!(auth_header(&hf, "https://s3.example/part?sig=1"), None);
        let short = LfsStore::new("https://hf.co/datasets/u/d.git/info/lfs", tok.clone()).unwrap();
        assert!(short.bearer);

        // GitHub and Gitea: Basic, the token as the password.
        let gh = LfsStore::new("https://github.com/o/r.git/info/lfs", tok.clone()).unwrap();
        let basic = auth_header(&gh, "https://github.com/o/r.git/info/lfs/objects/batch").unwrap();
        // base64("x-access-token:hf_secret")
        assert_eq!(basic, "Basic eC1hY2Nlc3MtdG9rZW46aGZfc2VjcmV0");
        assert_eq!(
            auth_header(&gh, "https://github-cloud.s3.amazonaws.com/x"),
            None
        );
        let none = LfsStore::new("https://github.com/o/r.git/info/lfs", None).unwrap();
        assert_eq!(
            auth_header(&none, "https://github.com/o/r.git/info/lfs/objects/batch"),
            None
        );
    }

    #[test]
    fn errors_never_carry_the_token() {
        let s = LfsStore::new(
            "https://git.example/o/r.git/info/lfs",
            Some("tok123".into()),
        )
        .unwrap();
        let e = s.scrub(BlobError::Http {
            url: "https://git.example/x".into(),
            status: 500,
            message: "bad header Basic tok123 here".into(),
        });
        assert!(!e.to_string().contains("tok123"), "{e}");
        assert!(e.is_retryable());
    }
}
