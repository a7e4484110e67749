//! Forwarding one request to a backend (the I/O half of the data plane).
//!
//! Bodies are streamed both ways frame by frame: hyper writes each frame as
//! it arrives, so Server-Sent Events reach the client one by one and a
//! 200 MB upload never sits in memory. Upstream connections are pooled with
//! an idle timeout below uvicorn's 5 s keep-alive, so a pooled connection is
//! never reused just as the backend closes it.
//!
//! WebSocket (any `Upgrade`): the client's upgrade future is taken before
//! the request is forwarded; when the backend answers 101, both upgraded
//! connections are joined with `copy_bidirectional` in a task that has no
//! read timeout and is tracked and cancelled at shutdown.

use std::error::Error as StdError;
use std::time::Duration;

use http::{header, HeaderValue, Request, Response, StatusCode, Uri, Version};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::gateway::body::{Body, BoxError};
use crate::gateway::headers::{self, Forwarded};
use crate::gateway::router::Target;

/// How forwarding failed, before it is turned into a status (which also
/// depends on the backend's service state).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ForwardError {
    /// Could not connect (refused, unreachable).
    #[error("connection refused")]
    Connect,
    /// Connecting or waiting for the response head took too long.
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    /// The connection broke (reset, closed early, bad response).
    #[error("connection broken")]
    Broken,
    /// The request body passed `max_body`.
    #[error("request body over {0} bytes")]
    TooLarge(u64),
}

/// Upstream timing and limits.
#[derive(Debug, Clone, Copy)]
pub struct UpstreamConfig {
    /// Connect timeout.
    pub connect: Duration,
    /// Time until the response head.
    pub response: Duration,
    /// Idle pooled connections are closed after this.
    pub pool_idle: Duration,
    /// Request body limit in bytes (0: none).
    pub max_body: u64,
}

/// Where upgraded connections are tracked for shutdown.
#[derive(Debug, Clone)]
pub struct Tunnels {
    /// Tasks the gateway waits for when draining.
    pub tracker: TaskTracker,
    /// Cancelled at shutdown: tunnels close.
    pub stop: CancellationToken,
}

/// The pooled HTTP/1.1 client to backends.
#[derive(Debug, Clone)]
pub struct Upstream {
    client: Client<HttpConnector, Body>,
    cfg: UpstreamConfig,
}

impl Upstream {
    /// A client with `cfg`.
    pub fn new(cfg: UpstreamConfig) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(cfg.connect));
        connector.enforce_http(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(cfg.pool_idle)
            .pool_timer(TokioTimer::new())
            // A request that never left because its pooled connection had
            // just closed is retried on a new one (never a sent request).
            .retry_canceled_requests(true)
            .build(connector);
        Upstream { client, cfg }
    }

    /// Forward `req` to `target`; on success the response streams from the
    /// backend, and an accepted upgrade has its tunnel spawned on `tunnels`.
    pub async fn forward(
        &self,
        mut req: Request<Incoming>,
        target: &Target<'_>,
        fwd: &Forwarded,
        tunnels: &Tunnels,
    ) -> Result<Response<Body>, ForwardError> {
        let limit = self.cfg.max_body;
        if limit > 0 {
            let declared = req
                .headers()
                .get(header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok());
            if declared.is_some_and(|n| n > limit) {
                return Err(ForwardError::TooLarge(limit));
            }
        }
        let upgrade = headers::upgrade_protocol(req.headers());
        let client_upgrade = upgrade.as_ref().map(|_| hyper::upgrade::on(&mut req));

        let (mut parts, body) = req.into_parts();
        // HTTP/2 requests carry the host in the URI only; the backend needs
        // a Host header.
        if !parts.headers.contains_key(header::HOST) {
            if let Some(a) = parts.uri.authority() {
                if let Ok(v) = HeaderValue::from_str(a.as_str()) {
                    parts.headers.insert(header::HOST, v);
                }
            }
        }
        let query = parts
            .uri
            .query()
            .map(|q| format!("?{q}"))
            .unwrap_or_default();
        parts.uri = Uri::try_from(format!(
            "http://{}{}{query}",
            target.backend.addr, target.path
        ))
        .map_err(|_| ForwardError::Broken)?;
        parts.version = Version::HTTP_11;
        headers::prepare_request(
            &mut parts.headers,
            upgrade.as_ref(),
            fwd,
            target.forwarded_prefix,
            target.set_headers,
        );
        let body: Body = if limit > 0 {
            Limited::new(body, limit as usize).boxed_unsync()
        } else {
            body.map_err(BoxError::from).boxed_unsync()
        };
        let outgoing = Request::from_parts(parts, body);

        let mut resp =
            match tokio::time::timeout(self.cfg.response, self.client.request(outgoing)).await {
                Err(_) => return Err(ForwardError::Timeout(self.cfg.response)),
                Ok(Err(e)) => return Err(classify(&e, self.cfg.connect, limit)),
                Ok(Ok(r)) => r,
            };

        let switching = resp.status() == StatusCode::SWITCHING_PROTOCOLS;
        if switching {
            match client_upgrade {
                Some(client_side) => {
                    let backend_side = hyper::upgrade::on(&mut resp);
                    spawn_tunnel(tunnels, client_side, backend_side, target.backend.addr);
                }
                // A 101 to a request that did not ask for it cannot be
                // relayed: the client would not speak the new protocol.
                None => return Err(ForwardError::Broken),
            }
        }
        headers::prepare_response(resp.headers_mut(), switching);
        Ok(resp.map(|b| b.map_err(BoxError::from).boxed_unsync()))
    }
}

fn spawn_tunnel(
    tunnels: &Tunnels,
    client_side: hyper::upgrade::OnUpgrade,
    backend_side: hyper::upgrade::OnUpgrade,
    backend: std::net::SocketAddr,
) {
    let stop = tunnels.stop.clone();
    tunnels.tracker.spawn(async move {
        let (client_io, backend_io) = match tokio::try_join!(client_side, backend_side) {
            Ok(pair) => pair,
            Err(e) => {
                tracing::debug!(%backend, error = %e, "upgrade did not complete");
                return;
            }
        };
        let mut client_io = TokioIo::new(client_io);
        let mut backend_io = TokioIo::new(backend_io);
        tokio::select! {
            r = tokio::io::copy_bidirectional(&mut client_io, &mut backend_io) => match r {
                Ok((up, down)) => tracing::debug!(%backend, up, down, "tunnel closed"),
                Err(e) => tracing::debug!(%backend, error = %e, "tunnel ended with an error"),
            },
            () = stop.cancelled() => tracing::debug!(%backend, "tunnel closed for shutdown"),
        }
    });
}

/// Sort a client error into refused / timed out / broken / too large.
fn classify(
    e: &hyper_util::client::legacy::Error,
    connect_timeout: Duration,
    limit: u64,
) -> ForwardError {
    let mut source: Option<&(dyn StdError + 'static)> = e.source();
    while let Some(s) = source {
        if s.downcast_ref::<http_body_util::LengthLimitError>()
            .is_some()
        {
            return ForwardError::TooLarge(limit);
        }
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::TimedOut {
                return ForwardError::Timeout(connect_timeout);
            }
        }
        source = s.source();
    }
    if e.is_connect() {
        ForwardError::Connect
    } else {
        ForwardError::Broken
    }
}
