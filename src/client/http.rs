//! The admin client's transport: reqwest's blocking client over the TLS
//! setup of [`crate::client_tls`], and the errors of a request that got no
//! HTTP answer, each saying what to check.
//!
//! Two rules hold for every call: redirects are never followed (the
//! `X-Admin-Password` header would go along to wherever a `Location`
//! points), and `HTTP_PROXY` / `HTTPS_PROXY` are ignored (the client has
//! always connected directly: a proxy would see the password of a plain
//! `http://` gateway).

use std::io::Read;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{anyhow, bail, Result};
use reqwest::header::HeaderMap;
use serde_json::Value;

/// Connecting to the gateway on loopback is instant when it runs.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Admin answers are small; anything bigger is not the admin API.
const MAX_BODY: u64 = 16 << 20;

/// The gateway's base URL: `http(s)://host:port[/prefix]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BaseUrl {
    pub(super) url: url::Url,
    /// How the URL is shown in messages (no trailing slash).
    pub(crate) display: String,
}

impl BaseUrl {
    /// The loopback URL of a listen address (`0.0.0.0:P` → `http://127.0.0.1:P`).
    pub(super) fn from_listen(listen: SocketAddr) -> Result<BaseUrl> {
        let mut addr = listen;
        if addr.ip().is_unspecified() {
            addr.set_ip(match addr {
                SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
                SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
            });
        }
        let display = format!("http://{addr}");
        let url = url::Url::parse(&display)
            .map_err(|e| anyhow!("`gateway.listen` {listen} makes no URL ({e}); pass --url"))?;
        Ok(BaseUrl { url, display })
    }

    /// `--url`: `http(s)://host[:port][/prefix]`, or just `host:port`.
    pub(super) fn parse(text: &str) -> Result<BaseUrl> {
        let unusable = || {
            anyhow!("`{text}` is not a usable gateway URL; expected e.g. http://127.0.0.1:7860 or https://user-space.hf.space")
        };
        let with_scheme = if text.contains("://") {
            text.to_string()
        } else {
            format!("http://{text}")
        };
        // The URL parser drops tabs and line breaks silently; here they are
        // a typo to show, not to guess around.
        if text.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(unusable());
        }
        let url = match crate::weburl::WebUrl::parse(&with_scheme) {
            Ok(u) => u.into_url(),
            Err(crate::weburl::Problem::Scheme) => {
                bail!("`{text}` is not an http:// or https:// URL")
            }
            Err(crate::weburl::Problem::Port(port)) => {
                bail!("`{text}`: `{port}` is not a port number")
            }
            Err(_) => return Err(unusable()),
        };
        // No user:password@ (a secret in argv and in messages), nothing a
        // request path cannot carry.
        if !url.username().is_empty()
            || url.password().is_some()
            || url.query().is_some()
            || url.fragment().is_some()
        {
            return Err(unusable());
        }
        let display = url.as_str().trim_end_matches('/').to_string();
        Ok(BaseUrl { url, display })
    }

    /// The URL of `path` (which starts with `/` and may carry a query) under the base.
    fn join(&self, path: &str) -> Result<url::Url, HttpError> {
        url::Url::parse(&format!("{}{path}", self.display))
            .map_err(|e| HttpError::Malformed(format!("the request path `{path}`: {e}")))
    }
}

/// An HTTP response, body read in full.
#[derive(Debug)]
pub(crate) struct Response {
    pub(crate) status: u16,
    pub(super) headers: HeaderMap,
    pub(super) body: Vec<u8>,
}

impl Response {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub(crate) fn json(&self) -> Option<Value> {
        serde_json::from_slice(&self.body).ok()
    }

    /// The `{"error": "…"}` message of an error answer.
    pub(crate) fn error_message(&self) -> Option<String> {
        match self.json()?.get("error")? {
            Value::String(s) if !s.is_empty() => Some(s.clone()),
            _ => None,
        }
    }
}

/// Why a request got no HTTP answer.
#[derive(Debug)]
pub(super) enum HttpError {
    /// Nothing accepted the connection; the reason when it says more than
    /// "connection refused".
    Unreachable(Option<String>),
    /// Connected, but no (complete) answer in time.
    Timeout,
    /// The connection broke.
    Io(String),
    /// The answer was not HTTP/1.x as expected.
    Malformed(String),
    /// A header value cannot be sent (line break in it).
    BadHeader(&'static str),
    /// The TLS handshake or session failed (certificate, protocol).
    Tls(String),
    /// The client itself could not be set up.
    Setup(String),
}

impl HttpError {
    pub(super) fn explain(self, base: &BaseUrl, timeout: Duration) -> anyhow::Error {
        let url = &base.display;
        match self {
            HttpError::Unreachable(why) => {
                let why = why.map(|w| format!(" ({w})")).unwrap_or_default();
                anyhow!("no gateway answers at {url}{why} — is `stackctl up` running? (use --url to point elsewhere)")
            }
            HttpError::Timeout => anyhow!(
                "the gateway at {url} did not answer within {} s",
                timeout.as_secs()
            ),
            HttpError::Io(e) => anyhow!("the connection to the gateway at {url} failed: {e}"),
            HttpError::Malformed(what) => {
                anyhow!("the answer from {url} is not the stackctl admin API: {what}")
            }
            HttpError::BadHeader(name) => {
                anyhow!("the {name} contains a line break, which cannot be sent")
            }
            HttpError::Tls(why) => anyhow!(
                "TLS with {url} failed: {why} — is it an https server with a valid certificate? (a gateway reached directly speaks plain http://)"
            ),
            HttpError::Setup(why) => anyhow!("cannot set up the HTTP client: {why}"),
        }
    }

    /// Sorts a reqwest error by what the user can do about it.
    fn from_reqwest(e: &reqwest::Error) -> HttpError {
        if e.is_timeout() || find::<std::io::Error>(e).is_some_and(is_timeout) {
            return HttpError::Timeout;
        }
        if let Some(tls) = find::<native_tls::Error>(e) {
            return HttpError::Tls(tls.to_string());
        }
        if e.is_connect() {
            // "Connection refused" is the common case and says nothing new;
            // other reasons (name not found, unreachable network) do.
            let refused = find::<std::io::Error>(e)
                .is_some_and(|io| io.kind() == std::io::ErrorKind::ConnectionRefused);
            return HttpError::Unreachable((!refused).then(|| innermost(e)));
        }
        if let Some(h) = find::<hyper::Error>(e) {
            if h.is_parse() || h.is_incomplete_message() || h.is_parse_too_large() {
                return HttpError::Malformed(innermost(e));
            }
        }
        HttpError::Io(innermost(e))
    }
}

fn is_timeout(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock
    )
}

/// The first error of type `T` in `e`'s source chain.
fn find<T: std::error::Error + 'static>(e: &reqwest::Error) -> Option<&T> {
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = next {
        if let Some(t) = err.downcast_ref::<T>() {
            return Some(t);
        }
        next = err.source();
    }
    None
}

/// The most specific message of a chain (reqwest's own top line names the
/// URL, which the caller's message already does).
fn innermost(e: &reqwest::Error) -> String {
    let mut last: &(dyn std::error::Error + 'static) = e;
    while let Some(s) = last.source() {
        last = s;
    }
    last.to_string()
}

/// A blocking HTTP client for the admin API; cheap to clone (one pool).
#[derive(Debug, Clone)]
pub(crate) struct Transport {
    client: reqwest::blocking::Client,
}

impl Transport {
    pub(super) fn new() -> Result<Transport> {
        Self::build().map_err(|e| anyhow!("cannot set up the HTTP client: {e}"))
    }

    fn build() -> Result<Transport, String> {
        let client = reqwest::blocking::Client::builder()
            .use_preconfigured_tls(crate::client_tls::connector()?)
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .connect_timeout(CONNECT_TIMEOUT)
            // One request per connection, as the commands make one or two
            // calls: a gateway that closes an idle connection never turns
            // into a failed call.
            .pool_max_idle_per_host(0)
            .user_agent(concat!("stackctl/", env!("CARGO_PKG_VERSION")))
            // Header names as earlier versions wrote them (`X-Admin-Password`),
            // for whatever sits in front of a gateway and matches them so.
            .http1_title_case_headers()
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Transport { client })
    }

    /// Send one request with the admin password and read the whole answer;
    /// `timeout` bounds the whole exchange.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn send(
        &self,
        base: &BaseUrl,
        method: &str,
        path: &str,
        password: &str,
        body: Option<&[u8]>,
        if_match: Option<&str>,
        timeout: Duration,
    ) -> Result<Response, HttpError> {
        // Checked here so the message names the password, not "a header".
        if password.contains(['\r', '\n']) {
            return Err(HttpError::BadHeader("admin password"));
        }
        if if_match.is_some_and(|t| t.contains(['\r', '\n'])) {
            return Err(HttpError::BadHeader("request header"));
        }
        let method = reqwest::Method::from_bytes(method.as_bytes())
            .map_err(|_| HttpError::Setup(format!("`{method}` is not an HTTP method")))?;
        let mut req = self
            .client
            .request(method, base.join(path)?)
            .timeout(timeout)
            .header("Accept", "application/json")
            .header("X-Admin-Password", password);
        if let Some(b) = body {
            req = req
                .header("Content-Type", "application/json")
                .body(b.to_vec());
        }
        if let Some(tag) = if_match {
            req = req.header("If-Match", tag);
        }
        let res = req.send().map_err(|e| HttpError::from_reqwest(&e))?;
        let status = res.status().as_u16();
        let headers = res.headers().clone();
        let mut body = Vec::new();
        res.take(MAX_BODY + 1).read_to_end(&mut body).map_err(|e| {
            if is_timeout(&e) {
                HttpError::Timeout
            } else {
                HttpError::Malformed(format!("the body broke off: {e}"))
            }
        })?;
        if body.len() as u64 > MAX_BODY {
            return Err(HttpError::Malformed("an oversized body".into()));
        }
        Ok(Response {
            status,
            headers,
            body,
        })
    }
}
