//! Forwarding one request to a backend (the I/O half of the data plane).
//!
//! Bodies are streamed both ways frame by frame: each frame is written as
//! it arrives, so Server-Sent Events reach the client one by one and a
//! 200 MB upload never sits in memory.
//!
//! Ordinary requests go through [`super::upstream`]: pooled HTTP/1.1
//! connections driven from the client connection's own task. WebSocket
//! (the one upgrade passed on: see [`headers::upgrade_protocol`]): the client's upgrade future is taken before the request
//! is forwarded on a fresh connection with hyper's client; when the backend
//! answers 101, both upgraded connections are joined with
//! `copy_bidirectional` in a task that is tracked and cancelled at
//! shutdown (see `tunnel`).

use std::borrow::Cow;
use std::error::Error as StdError;
use std::net::SocketAddr;
use std::sync::Arc;

use http::uri::PathAndQuery;
use http::{header, HeaderValue, Method, Request, Response, StatusCode, Uri, Version};
use http_body_util::Limited;
use hyper::body::{Body as _, Incoming};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;

use crate::gateway::body::Body;
use crate::gateway::front::{self, BodyOut};
use crate::gateway::h1::{self, RequestFraming};
use crate::gateway::headers::{self, Forwarded};
use crate::gateway::path;
use crate::gateway::router::Target;
use crate::gateway::tunnel::{spawn_tunnel, Tunnels};
use crate::gateway::upstream::{self, ForwardError, Outgoing, Pool, UpstreamBody, UpstreamConfig};

/// The pooled HTTP/1.1 client to backends.
#[derive(Debug, Clone)]
pub struct Upstream {
    pool: Arc<Pool>,
    cfg: UpstreamConfig,
}

impl Upstream {
    /// A client with `cfg`.
    pub fn new(cfg: UpstreamConfig) -> Self {
        Upstream {
            pool: Arc::new(Pool::new(cfg.pool_idle)),
            cfg,
        }
    }

    /// Forward `req` to `target`; on success the response streams from the
    /// backend, and an accepted upgrade has its tunnel spawned on `tunnels`.
    pub async fn forward(
        &self,
        mut req: Request<Incoming>,
        target: &Target<'_, '_>,
        fwd: &Forwarded,
        tunnels: &Tunnels,
    ) -> Result<Response<Body>, ForwardError> {
        let limit = self.cfg.max_body;
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .map(|v| v.to_str().ok().and_then(|v| v.parse::<u64>().ok()));
        if limit > 0 && declared.flatten().is_some_and(|n| n > limit) {
            return Err(ForwardError::TooLarge(limit));
        }
        let upgrade = headers::upgrade_protocol(req.headers());
        let client_upgrade = upgrade.as_ref().map(|_| hyper::upgrade::on(&mut req));

        let addr = target.backend.addr;
        let (mut parts, body) = req.into_parts();
        // The backend needs a Host header: HTTP/2 requests carry the host
        // in the URI only, HTTP/1.0 ones may have none at all.
        if !parts.headers.contains_key(header::HOST) {
            let host = match parts.uri.authority() {
                Some(a) => HeaderValue::from_str(a.as_str()),
                None => HeaderValue::from_str(&addr.to_string()),
            };
            if let Ok(v) = host {
                parts.headers.insert(header::HOST, v);
            }
        }
        parts.uri = origin_form(&parts.uri, &target.path).ok_or(ForwardError::Broken)?;
        parts.version = Version::HTTP_11;

        let Some(client_side) = client_upgrade else {
            // The body is streamed right after the head, so the client's
            // `Expect: 100-continue` is answered by our server side (hyper
            // sends 100 when the body is first read) and not passed on: a
            // backend's 100 would only be skipped.
            let forwarded = headers::RequestHeaders::new(
                &parts.headers,
                fwd,
                target.forwarded_prefix,
                target.set_headers,
            );
            let framing = RequestFraming::for_body(body.size_hint().exact(), declared.is_some());
            let target = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
            let mut head = Vec::with_capacity(512);
            h1::encode_request_head(
                &mut head,
                parts.method.as_str(),
                target,
                forwarded
                    .iter()
                    .filter(|(n, _)| !n.eq_ignore_ascii_case(b"expect")),
                framing,
            );
            // Nothing of the client's request head is needed any more:
            // letting go of it now, before waiting for the backend, leaves
            // hyper's read buffer unshared, so reading the next request
            // reuses it instead of allocating a new one.
            drop(forwarded);
            drop(parts.headers);
            drop(parts.uri);
            let out = Outgoing {
                method: parts.method,
                head: &head,
                framing,
                body: Some(body),
            };
            return self.send(out, addr).await;
        };

        headers::prepare_request(
            &mut parts.headers,
            upgrade.as_ref(),
            fwd,
            target.forwarded_prefix,
            target.set_headers,
        );
        let limit_bytes = match limit {
            0 => usize::MAX,
            n => usize::try_from(n).unwrap_or(usize::MAX),
        };
        let outgoing = Request::from_parts(parts, Limited::new(body, limit_bytes));
        let mut resp = match tokio::time::timeout(
            self.cfg.response,
            self.send_upgrade(addr, outgoing),
        )
        .await
        {
            Err(_) => return Err(ForwardError::Timeout(self.cfg.response)),
            Ok(Err(e)) => return Err(e),
            Ok(Ok(resp)) => resp,
        };
        let switching = resp.status() == StatusCode::SWITCHING_PROTOCOLS;
        if switching {
            let backend_side = hyper::upgrade::on(&mut resp);
            spawn_tunnel(tunnels, client_side, backend_side, addr);
        }
        headers::prepare_response(resp.headers_mut(), switching);
        Ok(resp.map(crate::gateway::body::boxed_incoming))
    }

    /// The same client with at most `cap.max` connections per backend,
    /// shared by every path (see [`super::fanout`]).
    pub fn with_cap(mut self, cap: super::fanout::Cap) -> Self {
        self.pool = Arc::new(Pool::capped(self.cfg.pool_idle, cap));
        self
    }

    /// A request to `addr` was refused at the cap: `Some(n)` when that is
    /// worth a log line, with `n` refusals since the previous one.
    pub fn refused(&self, addr: std::net::SocketAddr) -> Option<u64> {
        self.pool.refused(addr)
    }

    /// Whether a request body of `len` bytes is within the body limit.
    pub fn body_allowed(&self, len: u64) -> bool {
        self.cfg.max_body == 0 || len <= self.cfg.max_body
    }

    /// Forward a request whose head (`head`, for the backend) is already
    /// encoded, followed by its whole body if it has one: the gateway's
    /// own front end. The
    /// client's response head is written into `out` straight from the
    /// backend's (see [`front::encode_relayed_head`]); returned are the
    /// status, how the body is framed for the client, and the body.
    pub async fn forward_plain(
        &self,
        method: Method,
        head: &[u8],
        addr: SocketAddr,
        out: &mut Vec<u8>,
        close: bool,
    ) -> Result<(StatusCode, BodyOut, UpstreamBody), ForwardError> {
        let req = Outgoing {
            method,
            head,
            framing: RequestFraming::None,
            body: None,
        };
        let ((status, mode), body) =
            upstream::exchange(&self.pool, &self.cfg, addr, req, |raw, decided| {
                let mode = front::encode_relayed_head(out, raw, decided, close);
                Ok((raw.status, mode))
            })
            .await?;
        Ok((status, mode, body))
    }

    /// Exchange `req` with the backend at `addr` (pooled connections), for
    /// hyper's server: the relayed headers become a `HeaderMap`.
    async fn send(
        &self,
        req: Outgoing<'_>,
        addr: SocketAddr,
    ) -> Result<Response<Body>, ForwardError> {
        let ((status, headers), body) =
            upstream::exchange(&self.pool, &self.cfg, addr, req, |raw, _| {
                Ok((raw.status, raw.header_map()?))
            })
            .await?;
        let mut resp = Response::new(Body::Upstream(body));
        *resp.status_mut() = status;
        *resp.version_mut() = Version::HTTP_11;
        *resp.headers_mut() = headers;
        Ok(resp)
    }

    /// Send an upgrade request on a new connection of its own (an upgraded
    /// connection is never pooled).
    async fn send_upgrade(
        &self,
        addr: SocketAddr,
        req: Request<Limited<Incoming>>,
    ) -> Result<Response<Incoming>, ForwardError> {
        let stream = upstream::connect_held(&self.pool, addr, self.cfg.connect).await?;
        let (mut sender, conn) = http1::Builder::new()
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|_| ForwardError::Connect)?;
        tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!(%addr, error = %e, "gateway: upstream connection ended with an error");
            }
        });
        sender
            .send_request(req)
            .await
            .map_err(|e| classify(&e, self.cfg.max_body))
    }
}

/// Sort a hyper client error into too large / broken.
fn classify(e: &hyper::Error, limit: u64) -> ForwardError {
    let mut source: Option<&(dyn StdError + 'static)> = e.source();
    while let Some(s) = source {
        if s.downcast_ref::<http_body_util::LengthLimitError>()
            .is_some()
        {
            return ForwardError::TooLarge(limit);
        }
        source = s.source();
    }
    ForwardError::Broken
}

/// The request target for the backend as a URI (see
/// [`path::backend_target`]); the client's URI is reused as is when it
/// already says exactly that, so nothing is parsed or allocated.
fn origin_form(client: &Uri, path: &str) -> Option<Uri> {
    let raw = match (client.scheme(), client.authority()) {
        (None, None) => client.path_and_query().map_or("", |pq| pq.as_str()),
        _ => "",
    };
    match path::backend_target(raw, path, client.query()) {
        Cow::Borrowed(t) if !raw.is_empty() && t == raw => Some(client.clone()),
        t => PathAndQuery::try_from(t.as_ref()).ok().map(Uri::from),
    }
}

#[cfg(test)]
mod tests;
