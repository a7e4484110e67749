//! Forwarding one request to a backend (the I/O half of the data plane).
//!
//! Bodies are streamed both ways frame by frame: hyper writes each frame as
//! it arrives, so Server-Sent Events reach the client one by one and a
//! 200 MB upload never sits in memory.
//!
//! Upstream connections are pooled per backend address by [`Pool`]: a stack
//! of idle HTTP/1.1 `SendRequest` handles. A connection goes back to the
//! pool when its response body has been read to the end, and is reused at
//! most `pool_idle` after that (below uvicorn's 5 s keep-alive), so a pooled
//! connection is never reused just as the backend closes it. A request that
//! hyper could not even start writing (its pooled connection had closed
//! meanwhile) is retried on another connection; a request that was sent is
//! never retried.
//!
//! WebSocket (any `Upgrade`): the client's upgrade future is taken before
//! the request is forwarded; when the backend answers 101, both upgraded
//! connections are joined with `copy_bidirectional` in a task that has no
//! read timeout and is tracked and cancelled at shutdown.

use std::error::Error as StdError;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::uri::PathAndQuery;
use http::{header, HeaderValue, Request, Response, StatusCode, Uri, Version};
use http_body_util::{BodyExt, Limited};
use hyper::body::{Body as _, Frame, Incoming, SizeHint};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::gateway::body::{Body, BoxError};
use crate::gateway::headers::{self, Forwarded};
use crate::gateway::router::Target;

/// Idle connections kept per backend; more are closed when they come back.
/// Matches a generous nginx `keepalive` setting: enough for every client
/// connection of a busy container to find a warm backend connection.
const MAX_IDLE_PER_BACKEND: usize = 256;

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

/// The body sent upstream: the client's, streamed, counted against
/// `max_body`. One concrete type, so the request is not boxed.
type UpBody = Limited<Incoming>;

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
            pool: Arc::new(Pool {
                idle: Mutex::new(Vec::new()),
                max_idle_age: cfg.pool_idle,
                sweeper: AtomicBool::new(false),
            }),
            cfg,
        }
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

        let (mut resp, sender) =
            match tokio::time::timeout(self.cfg.response, self.send(addr, outgoing)).await {
                Err(_) => return Err(ForwardError::Timeout(self.cfg.response)),
                Ok(Err(e)) => return Err(e.into_forward_error(self.cfg.connect, limit)),
                Ok(Ok(pair)) => pair,
            };

        let switching = resp.status() == StatusCode::SWITCHING_PROTOCOLS;
        if switching {
            match client_upgrade {
                Some(client_side) => {
                    let backend_side = hyper::upgrade::on(&mut resp);
                    spawn_tunnel(tunnels, client_side, backend_side, addr);
                }
                // A 101 to a request that did not ask for it cannot be
                // relayed: the client would not speak the new protocol.
                None => return Err(ForwardError::Broken),
            }
        }
        headers::prepare_response(resp.headers_mut(), switching);
        // An upgraded connection belongs to its tunnel, never to the pool.
        let lease = (!switching).then(|| Lease {
            pool: self.pool.clone(),
            addr,
            sender,
        });
        Ok(resp.map(|inner| PooledBody { inner, lease }.boxed_unsync()))
    }

    /// Send on a pooled connection, or a new one. A request that never left
    /// (its pooled connection closed before hyper wrote a byte) is retried
    /// on the next connection; one that was sent is not, since the backend
    /// may have acted on it.
    async fn send(
        &self,
        addr: SocketAddr,
        mut req: Request<UpBody>,
    ) -> Result<(Response<Incoming>, SendRequest<UpBody>), SendError> {
        loop {
            let (mut sender, pooled) = match self.pool.take(addr) {
                Some(s) => (s, true),
                None => (self.connect(addr).await?, false),
            };
            match sender.try_send_request(req).await {
                Ok(resp) => return Ok((resp, sender)),
                Err(mut e) => match e.take_message() {
                    // `pooled` bounds the loop: a fresh connection that
                    // fails is an answer, and the idle stack only shrinks.
                    Some(unsent) if pooled => {
                        tracing::debug!(%addr, error = %e.error(), "pooled connection closed before the request was sent; retrying");
                        req = unsent;
                    }
                    _ => return Err(SendError::Http(e.into_error())),
                },
            }
        }
    }

    /// Open a new HTTP/1.1 connection to `addr` and start its task.
    async fn connect(&self, addr: SocketAddr) -> Result<SendRequest<UpBody>, SendError> {
        self.pool.start_sweeper();
        let stream = match tokio::time::timeout(self.cfg.connect, TcpStream::connect(addr)).await {
            Err(_) => return Err(SendError::ConnectTimeout),
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::TimedOut => {
                return Err(SendError::ConnectTimeout)
            }
            Ok(Err(_)) => return Err(SendError::Connect),
            Ok(Ok(s)) => s,
        };
        // Small requests and SSE events must not wait for Nagle.
        let _ = stream.set_nodelay(true);
        let (sender, conn) = http1::Builder::new()
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|_| SendError::Connect)?;
        tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!(%addr, error = %e, "gateway: upstream connection ended with an error");
            }
        });
        Ok(sender)
    }
}

/// Why [`Upstream::send`] failed, before classification.
#[derive(Debug)]
enum SendError {
    Connect,
    ConnectTimeout,
    Http(hyper::Error),
}

impl SendError {
    /// Sort into refused / timed out / broken / too large.
    fn into_forward_error(self, connect_timeout: Duration, limit: u64) -> ForwardError {
        let e = match self {
            SendError::Connect => return ForwardError::Connect,
            SendError::ConnectTimeout => return ForwardError::Timeout(connect_timeout),
            SendError::Http(e) => e,
        };
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
}

/// The request target for the backend: origin-form `path?query`. The
/// client's URI is reused as is when it already says exactly that (the
/// common case), so nothing is parsed or allocated.
fn origin_form(client: &Uri, path: &str) -> Option<Uri> {
    if client.scheme().is_none() && client.authority().is_none() && client.path() == path {
        return Some(client.clone());
    }
    let pq = match client.query() {
        Some(q) => {
            let mut s = String::with_capacity(path.len() + 1 + q.len());
            s.push_str(path);
            s.push('?');
            s.push_str(q);
            PathAndQuery::try_from(s)
        }
        None => PathAndQuery::try_from(path),
    }
    .ok()?;
    Some(Uri::from(pq))
}

/// Idle connections per backend address.
#[derive(Debug)]
struct Pool {
    /// A short list: one entry per backend address, each a stack (most
    /// recently used on top, so the warmest connection is reused first).
    idle: Mutex<Vec<(SocketAddr, Vec<Idle>)>>,
    max_idle_age: Duration,
    /// The idle sweeper task has been started.
    sweeper: AtomicBool,
}

#[derive(Debug)]
struct Idle {
    sender: SendRequest<UpBody>,
    since: Instant,
}

impl Pool {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(SocketAddr, Vec<Idle>)>> {
        // The lock is held only for pushes and pops that cannot panic
        // half-way; a poisoned list is still consistent.
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A ready idle connection to `addr`, if any. Expired or closed ones
    /// met on the way are dropped, which closes them.
    fn take(&self, addr: SocketAddr) -> Option<SendRequest<UpBody>> {
        let now = Instant::now();
        let mut idle = self.lock();
        let stack = &mut idle.iter_mut().find(|(a, _)| *a == addr)?.1;
        while let Some(c) = stack.pop() {
            if now.saturating_duration_since(c.since) < self.max_idle_age && c.sender.is_ready() {
                return Some(c.sender);
            }
        }
        None
    }

    /// Return a connection whose exchange is complete.
    fn put(self: &Arc<Self>, addr: SocketAddr, mut sender: SendRequest<UpBody>) {
        if sender.is_closed() {
            return;
        }
        if !sender.is_ready() {
            // The connection task has not caught up yet with the end of the
            // response (another worker thread), or the request body is
            // still streaming after an early response: wait for it in a
            // small task instead of handing out a busy connection.
            // A body dropped while the runtime shuts down has no runtime
            // to wait on: the connection just closes (never a panic).
            let Ok(rt) = tokio::runtime::Handle::try_current() else {
                return;
            };
            let pool = Arc::downgrade(self);
            let wait = self.max_idle_age;
            rt.spawn(async move {
                if let Ok(Ok(())) = tokio::time::timeout(wait, sender.ready()).await {
                    if let Some(pool) = pool.upgrade() {
                        pool.push(addr, sender);
                    }
                }
            });
            return;
        }
        self.push(addr, sender);
    }

    fn push(&self, addr: SocketAddr, sender: SendRequest<UpBody>) {
        let c = Idle {
            sender,
            since: Instant::now(),
        };
        let mut idle = self.lock();
        match idle.iter_mut().find(|(a, _)| *a == addr) {
            Some((_, stack)) if stack.len() >= MAX_IDLE_PER_BACKEND => {
                // Full: the oldest connection (bottom) gives way.
                stack.remove(0);
                stack.push(c);
            }
            Some((_, stack)) => stack.push(c),
            None => idle.push((addr, vec![c])),
        }
    }

    /// Close connections idle for longer than `max_idle_age`, and forget
    /// backends without idle connections.
    fn sweep(&self) {
        let now = Instant::now();
        let mut idle = self.lock();
        for (_, stack) in idle.iter_mut() {
            stack.retain(|c| {
                now.saturating_duration_since(c.since) < self.max_idle_age && !c.sender.is_closed()
            });
        }
        idle.retain(|(_, stack)| !stack.is_empty());
    }

    /// Start the task that sweeps idle connections, once, from inside the
    /// runtime. It ends when the pool is dropped.
    fn start_sweeper(self: &Arc<Self>) {
        if self.sweeper.swap(true, Ordering::Relaxed) {
            return;
        }
        let pool: Weak<Pool> = Arc::downgrade(self);
        let every = self.max_idle_age.max(Duration::from_millis(100));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                match pool.upgrade() {
                    Some(p) => p.sweep(),
                    None => return,
                }
            }
        });
    }
}

/// A pooled connection on loan to one response.
struct Lease {
    pool: Arc<Pool>,
    addr: SocketAddr,
    sender: SendRequest<UpBody>,
}

/// A backend response body that gives its connection back to the pool once
/// read to the end. Dropped early (the client went away), it takes the
/// connection with it: hyper closes a connection whose response was not
/// read out, so it could not be reused anyway.
struct PooledBody {
    inner: Incoming,
    lease: Option<Lease>,
}

impl PooledBody {
    fn release(&mut self) {
        if let Some(l) = self.lease.take() {
            l.pool.put(l.addr, l.sender);
        }
    }
}

impl hyper::body::Body for PooledBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            // hyper stops polling a body whose length says it is complete,
            // so the end is also noticed right after the last frame.
            Poll::Ready(None) => this.release(),
            Poll::Ready(Some(Ok(_))) if this.inner.is_end_stream() => this.release(),
            Poll::Ready(Some(Err(_))) => this.lease = None,
            _ => {}
        }
        polled.map(|f| f.map(|r| r.map_err(BoxError::from)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for PooledBody {
    fn drop(&mut self) {
        // An empty body (204, 304, HEAD, `Content-Length: 0`) is complete
        // without ever being polled.
        if self.inner.is_end_stream() {
            self.release();
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::borrow::Cow;
    use std::sync::atomic::AtomicUsize;

    use crate::gateway::headers::Peer;
    use crate::gateway::rules::Backend;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    #[test]
    fn origin_form_reuses_or_rebuilds_the_target() {
        let cases = [
            ("/a/b?x=1", "/a/b", "/a/b?x=1"),
            ("/gemini/v1?x=1", "/v1", "/v1?x=1"),
            ("/gemini/", "/", "/"),
            ("http://h:1/a?q", "/a", "/a?q"),
            ("/a//b", "/a/b", "/a/b"),
        ];
        for (client, path, want) in cases {
            let u: Uri = client.parse().unwrap();
            assert_eq!(origin_form(&u, path).unwrap().to_string(), want, "{client}");
        }
    }

    /// A backend answering `ok` to each request; with `close_after_each`
    /// it closes the connection after the response without saying so, as
    /// a backend whose keep-alive timer fired would. Returns its address
    /// and a count of accepted connections.
    async fn backend(close_after_each: bool) -> (SocketAddr, Arc<AtomicUsize>) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            loop {
                let (mut s, _) = l.accept().await.unwrap();
                count.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 1024];
                    loop {
                        while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                            match s.read(&mut chunk).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            }
                        }
                        buf.clear();
                        let resp = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                        if s.write_all(resp).await.is_err() || close_after_each {
                            return;
                        }
                    }
                });
            }
        });
        (addr, accepted)
    }

    /// The gateway's data path alone: a server whose every request is
    /// forwarded to `to` through `up`.
    async fn front(up: Upstream, to: SocketAddr) -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let backend: &'static Backend = Box::leak(Box::new(Backend { addr: to }));
        let tunnels = Tunnels {
            tracker: TaskTracker::new(),
            stop: CancellationToken::new(),
        };
        tokio::spawn(async move {
            loop {
                let (s, peer) = l.accept().await.unwrap();
                let (up, tunnels) = (up.clone(), tunnels.clone());
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let (up, tunnels) = (up.clone(), tunnels.clone());
                        async move {
                            let fwd = headers::forwarded(
                                req.headers(),
                                None,
                                &Peer::new(peer.ip(), 80),
                                &[],
                            );
                            let path = req.uri().path().to_string();
                            let target = Target {
                                rule_id: None,
                                backend,
                                path: Cow::Owned(path),
                                forwarded_prefix: None,
                                set_headers: &[],
                            };
                            let r = up.forward(req, &target, &fwd, &tunnels).await;
                            Ok::<_, std::convert::Infallible>(r.unwrap_or_else(|e| {
                                let mut r =
                                    Response::new(crate::gateway::body::full(e.to_string()));
                                *r.status_mut() = StatusCode::BAD_GATEWAY;
                                r
                            }))
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(s), svc)
                        .await;
                });
            }
        });
        addr
    }

    fn upstream_idle(pool_idle: Duration) -> Upstream {
        Upstream::new(UpstreamConfig {
            connect: Duration::from_secs(5),
            response: Duration::from_secs(5),
            pool_idle,
            max_body: 0,
        })
    }

    fn upstream() -> Upstream {
        upstream_idle(Duration::from_secs(4))
    }

    /// Send `n` requests one after another on one client connection;
    /// returns each response's status line and body.
    async fn get_n(gw: SocketAddr, n: usize) -> Vec<String> {
        let mut s = tokio::net::TcpStream::connect(gw).await.unwrap();
        let mut out = Vec::new();
        for _ in 0..n {
            s.write_all(b"GET /x HTTP/1.1\r\nhost: t\r\n\r\n")
                .await
                .unwrap();
            let mut buf = Vec::new();
            let mut chunk = [0u8; 1024];
            while !(buf.windows(4).any(|w| w == b"\r\n\r\n")
                && String::from_utf8_lossy(&buf).ends_with("ok")
                || String::from_utf8_lossy(&buf).contains("502"))
            {
                let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut chunk))
                    .await
                    .unwrap()
                    .unwrap();
                assert!(n > 0, "gateway closed: {}", String::from_utf8_lossy(&buf));
                buf.extend_from_slice(&chunk[..n]);
            }
            let text = String::from_utf8_lossy(&buf).to_string();
            let status = text.lines().next().unwrap_or("").to_string();
            out.push(format!(
                "{status} {}",
                text.rsplit("\r\n").next().unwrap_or("")
            ));
        }
        out
    }

    #[tokio::test]
    async fn one_backend_connection_serves_requests_in_turn() {
        let (b, accepted) = backend(false).await;
        let gw = front(upstream(), b).await;
        let got = get_n(gw, 5).await;
        assert_eq!(got, vec!["HTTP/1.1 200 OK ok"; 5]);
        assert_eq!(
            accepted.load(Ordering::SeqCst),
            1,
            "the connection is pooled and reused"
        );
    }

    #[tokio::test]
    async fn a_pooled_connection_the_backend_closed_is_not_a_failure() {
        let (b, accepted) = backend(true).await;
        let gw = front(upstream(), b).await;
        let got = get_n(gw, 5).await;
        assert_eq!(got, vec!["HTTP/1.1 200 OK ok"; 5]);
        assert_eq!(accepted.load(Ordering::SeqCst), 5);
    }

    #[tokio::test]
    async fn connections_idle_past_pool_idle_are_not_reused() {
        let (b, accepted) = backend(false).await;
        let gw = front(upstream_idle(Duration::from_millis(50)), b).await;
        assert_eq!(get_n(gw, 1).await, vec!["HTTP/1.1 200 OK ok"]);
        // Outlive the idle limit (the crate has no paused test clock).
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert_eq!(get_n(gw, 1).await, vec!["HTTP/1.1 200 OK ok"]);
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }
}
