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
use std::time::Duration;

use http::uri::PathAndQuery;
use http::{header, HeaderValue, Method, Request, Response, StatusCode, Uri, Version};
use http_body_util::Limited;
use hyper::body::{Body as _, Incoming};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::gateway::body::Body;
use crate::gateway::front::{self, BodyOut};
use crate::gateway::h1::{self, RequestFraming};
use crate::gateway::headers::{self, Forwarded};
use crate::gateway::router::{self, Target};
use crate::gateway::tunnel::spawn_tunnel;
use crate::gateway::upstream::{self, Outgoing, Pool, UpstreamBody};

/// How forwarding failed, before it is turned into a status (which also
/// depends on the backend's service state).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ForwardError {
    /// Could not connect (refused, unreachable).
    #[error("connection refused")]
    Connect,
    /// Connecting, waiting for the response head, or a backend that
    /// stopped reading the request took too long.
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    /// The connection broke (reset, closed early, bad response).
    #[error("connection broken")]
    Broken,
    /// The client's request body was malformed (a bad chunk) or cut off.
    #[error("malformed or cut request body")]
    ClientBody,
    /// The client sent nothing of its request body for this long.
    #[error("the client's request body stalled for {0:?}")]
    ClientStalled(Duration),
    /// The request body passed `max_body`.
    #[error("request body over {0} bytes")]
    TooLarge(u64),
    /// The backend had its cap of connections open for the whole queue
    /// time (see [`super::fanout`]).
    #[error("all {0} connections to the backend stayed busy")]
    Busy(usize),
}

impl ForwardError {
    /// Whether the client caused it (its body), not the backend.
    pub fn is_client_fault(self) -> bool {
        matches!(
            self,
            ForwardError::ClientBody | ForwardError::ClientStalled(_) | ForwardError::TooLarge(_)
        )
    }
}

/// Upstream timing and limits.
#[derive(Debug, Clone, Copy)]
pub struct UpstreamConfig {
    /// Connect timeout.
    pub connect: Duration,
    /// Time until the response head once the request is sent; also the
    /// longest pause allowed while the request body is being sent.
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
    /// A tunnel that passes nothing either way for this long is closed
    /// (`timeouts.send`; nginx closes one after `proxy_read_timeout`).
    pub idle: Duration,
}

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
        Ok(resp.map(upstream::boxed_incoming))
    }

    /// The same client with at most `cap.max` connections per backend,
    /// shared by every path (see [`super::fanout`]).
    pub fn with_cap(mut self, cap: super::fanout::Cap) -> Self {
        self.pool = Arc::new(Pool::capped(self.cfg.pool_idle, cap));
        self
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
/// [`router::backend_target`]); the client's URI is reused as is when it
/// already says exactly that, so nothing is parsed or allocated.
fn origin_form(client: &Uri, path: &str) -> Option<Uri> {
    let raw = match (client.scheme(), client.authority()) {
        (None, None) => client.path_and_query().map_or("", |pq| pq.as_str()),
        _ => "",
    };
    match router::backend_target(raw, path, client.query()) {
        Cow::Borrowed(t) if !raw.is_empty() && t == raw => Some(client.clone()),
        t => PathAndQuery::try_from(t.as_ref()).ok().map(Uri::from),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use std::borrow::Cow;
    use std::sync::atomic::{AtomicUsize, Ordering};

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
            idle: Duration::from_secs(60),
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

    /// What a scripted backend saw of one request.
    struct Seen {
        head: String,
        body: Vec<u8>,
    }

    /// Read one request (head and body, by its framing) off `s`.
    async fn read_request(s: &mut tokio::net::TcpStream, buf: &mut Vec<u8>) -> Option<Seen> {
        let mut chunk = [0u8; 4096];
        let end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..end]).to_lowercase();
        buf.drain(..end);
        let length = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
            .map(|v| v.trim().parse::<usize>().unwrap());
        let done = |b: &[u8]| match length {
            Some(n) => b.len() >= n,
            None if head.contains("transfer-encoding: chunked") => b.ends_with(b"0\r\n\r\n"),
            None => true,
        };
        while !done(buf) {
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let take = length.unwrap_or(buf.len());
        let body = buf.drain(..take).collect();
        Some(Seen { head, body })
    }

    /// When a scripted backend answers.
    #[derive(Clone, Copy, PartialEq)]
    enum Mode {
        /// After reading the whole request.
        AfterBody,
        /// Right after the head, then it reads nothing more.
        EarlyThenStall,
        /// Right after the head, then it reads the body and drops it, as
        /// nginx's `return` does.
        EarlyThenDiscard,
    }

    /// A backend that answers each request with `answer(request)`: the
    /// bytes to write and whether to close afterwards.
    async fn scripted(
        mode: Mode,
        answer: fn(&Seen) -> (Vec<u8>, bool),
    ) -> (SocketAddr, Arc<AtomicUsize>) {
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
                    loop {
                        let seen = if mode == Mode::AfterBody {
                            match read_request(&mut s, &mut buf).await {
                                Some(r) => r,
                                None => return,
                            }
                        } else {
                            let mut chunk = [0u8; 4096];
                            while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                                match s.read(&mut chunk).await {
                                    Ok(0) | Err(_) => return,
                                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                                }
                            }
                            Seen {
                                head: String::from_utf8_lossy(&buf).to_lowercase(),
                                body: Vec::new(),
                            }
                        };
                        let (bytes, close) = answer(&seen);
                        if s.write_all(&bytes).await.is_err() || close {
                            return;
                        }
                        match mode {
                            Mode::AfterBody => {}
                            // Keep the connection open without reading on.
                            Mode::EarlyThenStall => std::future::pending::<()>().await,
                            Mode::EarlyThenDiscard => {
                                if read_request(&mut s, &mut buf).await.is_none() {
                                    return;
                                }
                            }
                        }
                    }
                });
            }
        });
        (addr, accepted)
    }

    /// Send raw requests one after another on one client connection; each
    /// response's status line and decoded body, read with hyper's client.
    async fn send_all(gw: SocketAddr, reqs: Vec<Request<Body>>) -> Vec<(u16, String, String)> {
        let s = tokio::net::TcpStream::connect(gw).await.unwrap();
        let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s))
            .await
            .unwrap();
        tokio::spawn(conn);
        let mut out = Vec::new();
        for r in reqs {
            let resp = tokio::time::timeout(Duration::from_secs(5), tx.send_request(r))
                .await
                .unwrap()
                .unwrap();
            let status = resp.status().as_u16();
            let cl = resp
                .headers()
                .get(header::CONTENT_LENGTH)
                .map(|v| v.to_str().unwrap().to_string())
                .unwrap_or_default();
            let body = resp.into_body().collect().await.unwrap().to_bytes();
            out.push((status, cl, String::from_utf8_lossy(&body).to_string()));
        }
        out
    }

    fn req(method: &str, body: Body) -> Request<Body> {
        Request::builder()
            .method(method)
            .uri("/x")
            .header(header::HOST, "t")
            .body(body)
            .unwrap()
    }

    /// A body of unknown length (sent chunked).
    fn streamed(data: &'static str) -> Body {
        let frames = futures_util::stream::iter(vec![Ok::<_, BoxErr>(hyper::body::Frame::data(
            bytes::Bytes::from(data),
        ))]);
        http_body_util::StreamBody::new(frames)
            .boxed_unsync()
            .into()
    }
    type BoxErr = crate::gateway::body::BoxError;

    /// `n` MiB streamed in 1 MiB frames: far more than socket buffers hold,
    /// so a backend's early answer comes while most of it is still unsent.
    fn mebibytes(n: usize) -> Body {
        let frames = futures_util::stream::iter((0..n).map(|_| {
            Ok::<_, BoxErr>(hyper::body::Frame::data(bytes::Bytes::from(vec![
                b'x';
                1 << 20
            ])))
        }));
        http_body_util::StreamBody::new(frames)
            .boxed_unsync()
            .into()
    }

    #[tokio::test]
    async fn chunked_responses_stream_and_keep_the_connection() {
        let (b, accepted) = scripted(Mode::AfterBody, |_| {
            (
                b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\n3\r\n!!!\r\n0\r\n\r\n".to_vec(),
                false,
            )
        })
        .await;
        let gw = front(upstream(), b).await;
        let empty = || crate::gateway::body::empty();
        let got = send_all(gw, vec![req("GET", empty()), req("GET", empty())]).await;
        assert_eq!(got, vec![(200, String::new(), "ok!!!".to_string()); 2]);
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn request_bodies_keep_their_length_or_go_chunked() {
        fn echo(r: &Seen) -> (Vec<u8>, bool) {
            let framing = if r.head.contains("content-length: 5\r\n") {
                "length"
            } else if r.head.contains("transfer-encoding: chunked\r\n") {
                "chunked"
            } else {
                "none"
            };
            let text = format!("{framing} {}", String::from_utf8_lossy(&r.body));
            let mut out =
                format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n", text.len()).into_bytes();
            out.extend_from_slice(text.as_bytes());
            (out, false)
        }
        let (b, accepted) = scripted(Mode::AfterBody, echo).await;
        let gw = front(upstream(), b).await;
        let got = send_all(
            gw,
            vec![
                req("POST", crate::gateway::body::full("hello")),
                req("POST", streamed("hello")),
                req("GET", crate::gateway::body::empty()),
            ],
        )
        .await;
        let bodies: Vec<&str> = got.iter().map(|(_, _, b)| b.as_str()).collect();
        assert_eq!(
            bodies,
            ["length hello", "chunked 5\r\nhello\r\n0\r\n\r\n", "none "]
        );
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn an_early_answer_is_relayed_and_its_connection_not_reused() {
        let (b, accepted) = scripted(Mode::EarlyThenStall, |_| {
            (
                b"HTTP/1.1 413 Payload Too Large\r\ncontent-length: 3\r\n\r\nbig".to_vec(),
                false,
            )
        })
        .await;
        let gw = front(upstream(), b).await;
        // A body the backend never reads.
        let body = mebibytes(64);
        let got = send_all(gw, vec![req("POST", body)]).await;
        assert_eq!((got[0].0, got[0].2.as_str()), (413, "big"));
        let got = send_all(gw, vec![req("GET", crate::gateway::body::empty())]).await;
        assert_eq!(got[0].0, 413);
        assert_eq!(
            accepted.load(Ordering::SeqCst),
            2,
            "the cut-short connection was not reused"
        );
    }

    #[tokio::test]
    async fn an_early_success_keeps_the_upload_going() {
        let (b, accepted) = scripted(Mode::EarlyThenDiscard, |_| {
            (
                b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nok\n".to_vec(),
                false,
            )
        })
        .await;
        let gw = front(upstream(), b).await;
        // With a length this time.
        let body = mebibytes(64);
        let upload = Request::builder()
            .method("POST")
            .uri("/upload")
            .header(header::HOST, "t")
            .header(header::CONTENT_LENGTH, (64u64 << 20).to_string())
            .body(body)
            .unwrap();
        let got = send_all(gw, vec![upload, req("GET", crate::gateway::body::empty())]).await;
        assert_eq!(got[0], (200, "3".to_string(), "ok\n".to_string()));
        assert_eq!(got[1].0, 200, "the client connection survived the upload");
        assert_eq!(
            accepted.load(Ordering::SeqCst),
            1,
            "the upload completed: connection reused"
        );
    }

    #[tokio::test]
    async fn bytes_past_the_body_or_no_length_mean_no_reuse() {
        let (b, accepted) = scripted(Mode::AfterBody, |r| {
            if r.head.starts_with("get") {
                (
                    b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nokEXTRA".to_vec(),
                    false,
                )
            } else {
                (b"HTTP/1.1 200 OK\r\n\r\nuntil close".to_vec(), true)
            }
        })
        .await;
        let gw = front(upstream(), b).await;
        let e = crate::gateway::body::empty;
        let got = send_all(gw, vec![req("GET", e()), req("GET", e()), req("PUT", e())]).await;
        let bodies: Vec<&str> = got.iter().map(|(_, _, b)| b.as_str()).collect();
        assert_eq!(bodies, ["ok", "ok", "until close"]);
        assert_eq!(accepted.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn head_answers_keep_their_length_and_the_connection() {
        let (b, accepted) = scripted(Mode::AfterBody, |r| {
            if r.head.starts_with("head") {
                (
                    b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n".to_vec(),
                    false,
                )
            } else {
                (b"HTTP/1.1 204 No Content\r\n\r\n".to_vec(), false)
            }
        })
        .await;
        let gw = front(upstream(), b).await;
        let e = crate::gateway::body::empty;
        let got = send_all(
            gw,
            vec![req("HEAD", e()), req("GET", e()), req("HEAD", e())],
        )
        .await;
        assert_eq!(got[0], (200, "10".to_string(), String::new()));
        assert_eq!((got[1].0, got[1].2.as_str()), (204, ""));
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_post_never_goes_out_on_a_connection_the_backend_closed() {
        let (b, accepted) = backend(true).await;
        let gw = front(upstream(), b).await;
        let posts = (0..4)
            .map(|_| req("POST", crate::gateway::body::full("data")))
            .collect();
        let got = send_all(gw, posts).await;
        assert!(
            got.iter().all(|(s, _, b)| *s == 200 && b == "ok"),
            "{got:?}"
        );
        assert_eq!(accepted.load(Ordering::SeqCst), 4);
    }

    #[tokio::test]
    async fn the_response_timeout_holds_on_a_reused_connection() {
        // Answers the first request, then never the second.
        let (b, accepted) = scripted(Mode::AfterBody, |r| {
            if r.head.contains("x-slow") {
                (Vec::new(), false)
            } else {
                (
                    b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok".to_vec(),
                    false,
                )
            }
        })
        .await;
        let up = Upstream::new(UpstreamConfig {
            connect: Duration::from_secs(5),
            response: Duration::from_millis(300),
            pool_idle: Duration::from_secs(4),
            max_body: 0,
        });
        let gw = front(up, b).await;
        let mut slow = req("GET", crate::gateway::body::empty());
        slow.headers_mut()
            .insert("x-slow", HeaderValue::from_static("1"));
        let got = send_all(gw, vec![req("GET", crate::gateway::body::empty()), slow]).await;
        assert_eq!((got[0].0, got[0].2.as_str()), (200, "ok"));
        assert_eq!(
            got[1].0, 502,
            "the test front answers every failure with 502"
        );
        assert!(got[1].2.starts_with("timed out"), "{:?}", got[1]);
        assert_eq!(
            accepted.load(Ordering::SeqCst),
            1,
            "the second went on the pooled connection"
        );
    }
}
