//! One client connection. Plain requests (see [`super::front`]) are served
//! by the front end's own loop; at the first request that is not plain,
//! the connection, with every byte read so far, is handed to hyper, which
//! serves it from then on.
//!
//! Timeouts on the front end's side: the first request head must arrive
//! within `timeouts.header_read` of the connection's start; between
//! requests a connection may sit idle for `timeouts.idle`, and once a
//! later request has begun its head must be complete within
//! `timeouts.header_read`. When they pass, the connection is closed
//! without an answer (as nginx does). The same holds on hyper's side,
//! timed by the connection's reads (see `clocks`): hyper's own
//! header timer starts as soon as a response is written, which would make
//! `header_read` the idle timeout. At shutdown, idle connections are
//! closed at once and busy ones after their current response.
//!
//! Writes to the client, on both sides and in WebSocket tunnels, may each
//! wait for room at most `timeouts.send` (nginx's `send_timeout`; see
//! `clocks`): a client that takes nothing of its response is closed,
//! and with it the backend connection relaying that response.

use std::future::{poll_fn, Future};
use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use http::{Method, Response};
use hyper::body::Body as _;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio_util::sync::WaitForCancellationFuture;

use crate::gateway::body::Body;
use crate::gateway::clocks::{Activity, InFlight, ReadClock, SendClock, Tracked};
use crate::gateway::deadline::Deadline;
use crate::gateway::error::HttpError;
use crate::gateway::front::{self, BodyOut, Parsed};
use crate::gateway::h1::{self, RequestFraming};
use crate::gateway::headers::{self, HeadersRef, Peer, RequestHeaders};
use crate::gateway::limits;
use crate::gateway::path::{self, normalize_path};
use crate::gateway::router::{Decision, RequestHead};
use crate::gateway::Shared;
use crate::shutdown::CancellationToken;

/// How long a refused client's remaining bytes are read and dropped
/// before its connection is closed (nginx's `lingering_timeout`).
const LINGER: Duration = Duration::from_secs(5);
/// Room kept free in the read buffer before each read.
const READ_SPACE: usize = 4096;
/// Room for a request or response head, reserved before writing one.
const HEAD_SPACE: usize = 1024;
/// Body frames up to this size are copied behind the head (or the chunk
/// size line) into one write; larger ones are written from where they are.
const COALESCE: usize = 16 * 1024;

/// What every connection of one listener shares.
pub(super) struct Ctx {
    pub shared: Arc<Shared>,
    pub builder: auto::Builder<TokioExecutor>,
    pub stop: CancellationToken,
    /// Set just before `stop` fires. `CancellationToken::is_cancelled`
    /// takes a lock; connections ask after every request.
    pub stopping: AtomicBool,
}

impl Ctx {
    /// Begin the shutdown: connections finish their request and close.
    pub fn begin_stop(&self) {
        self.stopping.store(true, Ordering::Release);
        self.stop.cancel();
    }

    fn stopping(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }
}

/// Serve one accepted connection until it closes.
pub(super) async fn serve(ctx: Arc<Ctx>, stream: TcpStream, peer: SocketAddr) {
    crate::fault::panic_once("conn");
    let origin = Arc::new(Peer::new(peer.ip(), ctx.shared.listen().port()));
    let timeouts = ctx.shared.client_timeouts;
    let mut conn = Front {
        io: stream,
        buf: BytesMut::new(),
        out: Vec::new(),
        req_head: Vec::new(),
        timer: Deadline::after(timeouts.header_read),
        armed: false,
        sending: SendClock::new(timeouts.send, peer),
    };
    let mut stop = Stop::new(&ctx);
    if let End::HandOver = conn.run(&ctx, &origin, &mut stop).await {
        let activity = Arc::new(Activity::default());
        // HTTP/2 has no heads between idle spells to time: only its
        // writes are.
        let h2 = conn.buf.starts_with(H2_PREFACE);
        let reads = (!h2).then(|| ReadClock::new(conn.timer, timeouts, activity.clone()));
        let io = Prefixed {
            prefix: conn.buf.freeze(),
            io: conn.io,
            linger: None,
            ctx: Some(ctx.clone()),
            reads,
            sending: conn.sending,
        };
        // Boxed: hyper's connection state is large, and this future is
        // the task of every connection, idle ones included.
        Box::pin(hyper_serve(&ctx, io, origin, peer, &mut stop, activity)).await;
    }
}

/// How an HTTP/2 connection begins (RFC 9113 §3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n";

/// The timeouts of client connections.
#[derive(Debug, Clone, Copy)]
pub(super) struct ClientTimeouts {
    pub header_read: Duration,
    pub idle: Duration,
    pub send: Duration,
}

/// How the front end's loop ended.
enum End {
    /// The connection is done with (closed, broken, timed out, shut down).
    Closed,
    /// A request the front end does not serve is at the start of `buf`.
    HandOver,
}

/// The gateway-wide stop signal, as one connection watches it. Polled
/// once, the token keeps this task's waker (the same for the task's whole
/// life) to wake it at shutdown; after that an atomic load says whether it
/// fired, instead of a lock on the token at every wake-up.
struct Stop<'a> {
    ctx: &'a Ctx,
    wait: Pin<Box<WaitForCancellationFuture<'a>>>,
    armed: bool,
}

impl<'a> Stop<'a> {
    fn new(ctx: &'a Ctx) -> Self {
        Stop {
            ctx,
            wait: Box::pin(ctx.stop.cancelled()),
            armed: false,
        }
    }

    fn poll_fired(&mut self, cx: &mut Context<'_>) -> bool {
        if self.armed {
            self.ctx.stopping()
        } else {
            self.armed = true;
            self.wait.as_mut().poll(cx).is_ready()
        }
    }
}

/// The front end's side of a connection.
struct Front {
    io: TcpStream,
    /// Bytes from the client not yet used: the next request's head, or
    /// what has arrived of it.
    buf: BytesMut,
    /// The response head being written (reused from request to request).
    out: Vec<u8>,
    /// The backend's request head being written (reused too).
    req_head: Vec<u8>,
    /// The header-read or idle deadline; armed only when a read has to
    /// wait, so a request that is already there costs no timer work.
    timer: Deadline,
    armed: bool,
    /// The send timeout of writes to the client.
    sending: SendClock,
}

/// Why a wait for the client ended early.
struct Gone;

impl Front {
    async fn run(&mut self, ctx: &Ctx, origin: &Peer, stop: &mut Stop<'_>) -> End {
        let timeouts = ctx.shared.client_timeouts;
        let mut first = true;
        loop {
            // Wait until a whole head is buffered.
            self.armed = false;
            let mut idle = !first && self.buf.is_empty();
            while !h1::head_complete(&self.buf) {
                if let Some(over) = limits::partial(&self.buf) {
                    self.refuse(over).await;
                    return End::Closed;
                }
                let limit = if idle {
                    timeouts.idle
                } else {
                    timeouts.header_read
                };
                if !self.fill(limit, stop).await {
                    return End::Closed;
                }
                if idle {
                    // The next request has begun: its head now has
                    // `header_read` to arrive in full.
                    idle = false;
                    self.armed = false;
                }
            }
            first = false;
            // Boxed, and so allocated per request: the state of forwarding
            // a request is several KiB, which an idle connection's task
            // would otherwise keep (issue 11: memory per idle connection).
            match Box::pin(self.one_request(ctx, origin)).await {
                Ok(true) if !ctx.stopping() => {}
                Ok(_) => {
                    let _ = self.io.shutdown().await;
                    return End::Closed;
                }
                Err(Served::HandOver) => return End::HandOver,
                Err(Served::Broken) => return End::Closed,
                // The body did not all come with the head: take what has
                // arrived since, without waiting. Still short, hyper takes
                // the request and streams its body, as for any other body
                // on its way (its timeouts and answers, unchanged).
                Err(Served::BodyPending(want)) => {
                    if !self.read_now(want) {
                        return End::HandOver;
                    }
                }
            }
        }
    }

    /// Read what the client has already sent, without waiting, until `buf`
    /// holds `want` bytes. Whether anything came.
    fn read_now(&mut self, want: usize) -> bool {
        let mut got = false;
        while self.buf.len() < want {
            self.buf.reserve(want - self.buf.len());
            match self.io.try_read_buf(&mut self.buf) {
                Ok(n) if n > 0 => got = true,
                _ => break,
            }
        }
        got
    }

    /// Answer a head that passed a limit before its end arrived (see
    /// [`limits`]) and close the connection; what the client still sends
    /// is read and dropped for a moment first, so that closing with unread
    /// bytes does not reset the connection before the answer is read.
    async fn refuse(&mut self, over: limits::Exceeded) {
        let resp = HttpError::from(over).response(&http::HeaderMap::new());
        if self.respond(resp, false, true).await.is_err() {
            return;
        }
        let _ = self.io.shutdown().await;
        let drain = async {
            let mut sink = [0u8; 4096];
            while matches!(self.io.read(&mut sink).await, Ok(n) if n > 0) {}
        };
        let _ = tokio::time::timeout(LINGER, drain).await;
    }

    /// Read more from the client within `limit` (counted from the first
    /// time this wait had to block). `false`: closed, broken, timed out,
    /// or the gateway is stopping.
    ///
    /// With nothing of a request buffered, the connection waits for one
    /// holding no buffers: they are allocated when the client sends, so an
    /// idle kept-alive connection costs little more than its task.
    async fn fill(&mut self, limit: Duration, stop: &mut Stop<'_>) -> bool {
        poll_fn(|cx| {
            let waiting = self.buf.is_empty() && {
                match self.io.poll_read_ready(cx) {
                    Poll::Ready(Ok(())) => false,
                    Poll::Ready(Err(_)) => return Poll::Ready(false),
                    Poll::Pending => true,
                }
            };
            if !waiting {
                if self.buf.capacity() - self.buf.len() < READ_SPACE {
                    self.buf.reserve(READ_SPACE);
                }
                match tokio_util::io::poll_read_buf(Pin::new(&mut self.io), cx, &mut self.buf) {
                    Poll::Ready(Ok(n)) => return Poll::Ready(n > 0),
                    Poll::Ready(Err(_)) => return Poll::Ready(false),
                    Poll::Pending => {}
                }
            }
            if self.buf.is_empty() {
                self.release();
            }
            if stop.poll_fired(cx) {
                return Poll::Ready(false);
            }
            if !self.armed {
                self.armed = true;
                self.timer.reset(limit);
            }
            if self.timer.poll_passed(cx) {
                return Poll::Ready(false);
            }
            Poll::Pending
        })
        .await
    }

    /// Let go of the buffers while no request is under way.
    fn release(&mut self) {
        if self.buf.capacity() > 0 {
            self.buf = BytesMut::new();
        }
        if self.out.capacity() > 0 {
            self.out = Vec::new();
        }
        if self.req_head.capacity() > 0 {
            self.req_head = Vec::new();
        }
    }

    /// Serve the request whose head is at the start of `buf`. `Ok(keep)`:
    /// answered, and whether the connection stays open.
    async fn one_request(&mut self, ctx: &Ctx, origin: &Peer) -> Result<bool, Served> {
        let shared = &ctx.shared;
        let started = tracing::enabled!(tracing::Level::DEBUG).then(Instant::now);
        let router = shared.router.load_full();
        // Both were let go of if the connection was idle: one allocation
        // each, not a string of small ones as the heads are written.
        self.req_head.reserve(HEAD_SPACE);
        self.out.reserve(HEAD_SPACE);
        // Everything taken from the head is copied out in this block, so
        // that the buffer is free again (for a pipelined request, and for
        // noticing the client leave) while the backend answers.
        let (len, body_len, method, close, html, log_path, client_ip, target) = {
            let mut slots = front::header_slots();
            let Parsed::Plain(req) = front::parse(&self.buf, &mut slots) else {
                return Err(Served::HandOver);
            };
            // A small body goes out with the head once it is all here. One
            // over the body limit is hyper's, whose 413 every other body
            // gets too.
            let body_len = match req.content_length {
                Some(n) if shared.upstream.body_allowed(n) => {
                    usize::try_from(n).map_err(|_| Served::HandOver)?
                }
                Some(_) => return Err(Served::HandOver),
                None => 0,
            };
            if self.buf.len() < req.len + body_len {
                return Err(Served::BodyPending(req.len + body_len));
            }
            let Ok(path) = normalize_path(req.path()) else {
                return Err(Served::HandOver);
            };
            let headers = HeadersRef::Raw(req.headers);
            let decision = router.route(&RequestHead {
                method: req.method,
                path: &path,
                query: req.query(),
                host: Some(req.host),
                headers,
            });
            // Redirects, the admin API, "no route" and the restoring page
            // are hyper's (they are rare and not worth a second copy).
            let Decision::Proxy(target) = decision else {
                return Err(Served::HandOver);
            };
            if !shared.is_restored() {
                return Err(Served::HandOver);
            }
            let Ok(method) = Method::from_bytes(req.method.as_bytes()) else {
                return Err(Served::HandOver);
            };
            let fwd = headers::forwarded(headers, None, origin, &shared.trusted);
            let view =
                RequestHeaders::new(headers, &fwd, target.forwarded_prefix, target.set_headers);
            let upstream_target = path::backend_target(req.target, &target.path, req.query());
            h1::encode_request_head(
                &mut self.req_head,
                req.method,
                &upstream_target,
                view.iter(),
                req.content_length
                    .map_or(RequestFraming::None, RequestFraming::Length),
            );
            let log_path = started.map(|_| path.to_string());
            (
                req.len,
                body_len,
                method,
                req.close,
                req.html,
                log_path,
                fwd.client_ip,
                (target.rule_id, target.backend),
            )
        };
        self.buf.advance(len);
        // The body follows the head in the same write.
        self.req_head.extend_from_slice(&self.buf[..body_len]);
        self.buf.advance(body_len);
        let head_request = method == Method::HEAD;
        let log_method = started.map(|_| method.clone());
        let (rule_id, backend) = target;

        let forwarding = shared.upstream.forward_plain(
            method,
            &self.req_head,
            backend.addr,
            &mut self.out,
            close,
        );
        let status = match watching(&self.io, &mut self.buf, forwarding).await {
            Err(Gone) => return Err(Served::Broken),
            Ok(Ok((status, mode, mut body))) => {
                let written =
                    if mode == BodyOut::Length && body.take_whole_into(&mut self.out, COALESCE) {
                        self.send_out().await
                    } else {
                        self.send_body(mode, body).await
                    };
                written.map(|()| status)
            }
            Ok(Err(f)) => {
                let resp = shared.forward_failed(f, backend, rule_id, html);
                let status = resp.status();
                self.respond(resp, head_request, close)
                    .await
                    .map(|()| status)
            }
        };
        if let (Some(t), Some(m), Some(p), Ok(status)) = (started, log_method, log_path, &status) {
            super::log_request(client_ip, &m, &p, rule_id, *status, t);
        }
        status.map_err(|Gone| Served::Broken)?;
        Ok(!close)
    }

    /// Write a response the gateway made itself (an error page).
    async fn respond(
        &mut self,
        resp: Response<Body>,
        head_request: bool,
        close: bool,
    ) -> Result<(), Gone> {
        let (parts, body) = resp.into_parts();
        let exact = body.size_hint().exact();
        let mode = front::encode_response_head(
            &mut self.out,
            parts.status,
            &parts.headers,
            head_request,
            exact,
            close,
        );
        self.send_body(mode, body).await
    }

    /// Write the head waiting in `out` and then `body`, framed as `mode`
    /// says. The head and as much of the body as is already at hand go out
    /// in one write; the rest is passed on frame by frame as it arrives.
    async fn send_body<B>(&mut self, mode: BodyOut, mut body: B) -> Result<(), Gone>
    where
        B: hyper::body::Body<Data = Bytes> + Unpin,
    {
        if mode == BodyOut::None {
            return self.send_out().await;
        }
        let chunked = mode == BodyOut::Chunked;
        let mut done = false;
        while self.out.len() < COALESCE {
            let polled = poll_fn(|cx| Poll::Ready(Pin::new(&mut body).poll_frame(cx))).await;
            match polled {
                Poll::Ready(Some(Ok(frame))) => {
                    if let Ok(data) = frame.into_data() {
                        frame_into(&mut self.out, &data, chunked);
                    }
                }
                Poll::Ready(Some(Err(_))) => return Err(Gone),
                Poll::Ready(None) => {
                    done = true;
                    break;
                }
                Poll::Pending => break,
            }
        }
        if done && chunked {
            self.out.extend_from_slice(h1::CHUNKED_END);
        }
        self.send_out().await?;
        if done {
            return Ok(());
        }
        loop {
            let next = poll_fn(|cx| Pin::new(&mut body).poll_frame(cx));
            match watching(&self.io, &mut self.buf, next).await? {
                Some(Ok(frame)) => {
                    let Ok(data) = frame.into_data() else {
                        continue;
                    };
                    if data.is_empty() {
                        continue;
                    }
                    if data.len() < COALESCE {
                        self.out.clear();
                        frame_into(&mut self.out, &data, chunked);
                        self.send_out().await?;
                    } else if chunked {
                        let size = h1::chunk_header(data.len());
                        let mut parts = [
                            IoSlice::new(size.as_bytes()),
                            IoSlice::new(&data),
                            IoSlice::new(b"\r\n"),
                        ];
                        send_all(&mut self.io, &mut self.sending, &mut parts).await?;
                    } else {
                        send_all(&mut self.io, &mut self.sending, &mut [IoSlice::new(&data)])
                            .await?;
                    }
                }
                // The backend broke off: so must we, or the client would
                // take a cut body for a whole one.
                Some(Err(_)) => return Err(Gone),
                None => {
                    if chunked {
                        let end = &mut [IoSlice::new(h1::CHUNKED_END)];
                        send_all(&mut self.io, &mut self.sending, end).await?;
                    }
                    return Ok(());
                }
            }
        }
    }

    /// Write what is in `out` to the client.
    async fn send_out(&mut self) -> Result<(), Gone> {
        send_all(
            &mut self.io,
            &mut self.sending,
            &mut [IoSlice::new(&self.out)],
        )
        .await
    }
}

/// How serving one request ended, when not with an answer.
enum Served {
    /// Not the front end's request: hyper takes the connection.
    HandOver,
    /// A small body is not all in the buffer yet: the request ends at
    /// this many bytes of it.
    BodyPending(usize),
    /// The client left, or a write failed.
    Broken,
}

/// Append one body frame to `out`: as it is, or as a chunk.
fn frame_into(out: &mut Vec<u8>, data: &[u8], chunked: bool) {
    if data.is_empty() {
        // An empty chunk would end the body.
        return;
    }
    if chunked {
        out.extend_from_slice(h1::chunk_header(data.len()).as_bytes());
        out.extend_from_slice(data);
        out.extend_from_slice(b"\r\n");
    } else {
        out.extend_from_slice(data);
    }
}

/// Drive `fut` while watching the client: bytes it sends meanwhile (a
/// pipelined request) are kept in `buf`, and if it closes the connection
/// the wait ends with [`Gone`] (dropping `fut`, which drops the backend
/// connection: the backend sees the abort too).
async fn watching<F: Future>(
    io: &TcpStream,
    buf: &mut BytesMut,
    fut: F,
) -> Result<F::Output, Gone> {
    let mut fut = std::pin::pin!(fut);
    poll_fn(|cx| {
        if let Poll::Ready(out) = fut.as_mut().poll(cx) {
            return Poll::Ready(Ok(out));
        }
        // Past MAX_HEAD of pipelined bytes, stop reading: the client
        // waits, and a close is noticed at the next write instead.
        while buf.len() < front::MAX_HEAD {
            match io.poll_read_ready(cx) {
                Poll::Pending => break,
                Poll::Ready(Err(_)) => return Poll::Ready(Err(Gone)),
                Poll::Ready(Ok(())) => {}
            }
            if buf.capacity() - buf.len() < READ_SPACE {
                buf.reserve(READ_SPACE);
            }
            match io.try_read_buf(buf) {
                Ok(0) => return Poll::Ready(Err(Gone)),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(_) => return Poll::Ready(Err(Gone)),
            }
        }
        Poll::Pending
    })
    .await
}

/// Write all of `parts` to the client, each wait for room limited by
/// `sending` (the send timeout).
async fn send_all(
    io: &mut TcpStream,
    sending: &mut SendClock,
    mut parts: &mut [IoSlice<'_>],
) -> Result<(), Gone> {
    let mut left: usize = parts.iter().map(|p| p.len()).sum();
    poll_fn(|cx| {
        while left > 0 {
            let polled = Pin::new(&mut *io).poll_write_vectored(cx, parts);
            match sending.watch(cx, polled) {
                Poll::Ready(Ok(n)) if n > 0 => {
                    left -= n;
                    IoSlice::advance_slices(&mut parts, n);
                }
                Poll::Ready(_) => return Poll::Ready(Err(Gone)),
                Poll::Pending => return Poll::Pending,
            }
        }
        Poll::Ready(Ok(()))
    })
    .await
}

/// Serve the rest of a connection with hyper: HTTP/1 with upgrades, or
/// HTTP/2 when it starts with the preface.
async fn hyper_serve(
    ctx: &Arc<Ctx>,
    io: Prefixed,
    origin: Arc<Peer>,
    peer: SocketAddr,
    stop: &mut Stop<'_>,
    activity: Arc<Activity>,
) {
    let shared = ctx.shared.clone();
    let svc = service_fn(move |req| {
        let shared = shared.clone();
        let origin = origin.clone();
        // Counted from the call: the head is complete.
        let open = InFlight::new(&activity);
        async move {
            let resp = shared.handle(req, &origin).await;
            if resp.status() == http::StatusCode::SWITCHING_PROTOCOLS {
                open.upgraded();
            }
            Ok::<_, std::convert::Infallible>(resp.map(|body| Tracked::new(body, open)))
        }
    });
    let conn = ctx
        .builder
        .serve_connection_with_upgrades(TokioIo::new(io), svc);
    tokio::pin!(conn);
    // At shutdown the connection is asked to finish its request and close.
    let mut draining = false;
    let ended = poll_fn(|cx| {
        if !draining && stop.poll_fired(cx) {
            draining = true;
            conn.as_mut().graceful_shutdown();
        }
        conn.as_mut().poll(cx)
    })
    .await;
    if let Err(e) = ended {
        tracing::debug!(%peer, error = %e, draining, "gateway: connection ended with an error");
    }
}

/// A connection handed to hyper: the bytes the front end already read
/// come first, then the socket. Closing it lingers (see `poll_shutdown`).
struct Prefixed {
    prefix: Bytes,
    io: TcpStream,
    /// Set once our side is shut down: until then, what the client still
    /// sends is read and dropped.
    linger: Option<Pin<Box<tokio::time::Sleep>>>,
    /// While the gateway stops, closing does not linger: a client that
    /// keeps its end open must not hold up the shutdown.
    ctx: Option<Arc<Ctx>>,
    /// The idle and head timeouts (`None`: reads are not timed).
    reads: Option<ReadClock>,
    sending: SendClock,
}

impl AsyncRead for Prefixed {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.prefix.is_empty() {
            let Some(clock) = this.reads.as_mut() else {
                return Pin::new(&mut this.io).poll_read(cx, buf);
            };
            clock.refresh();
            let before = buf.filled().len();
            match Pin::new(&mut this.io).poll_read(cx, buf) {
                Poll::Ready(r) => {
                    if buf.filled().len() > before {
                        clock.got_bytes();
                    }
                    return Poll::Ready(r);
                }
                Poll::Pending if clock.poll_expired(cx) => {
                    return Poll::Ready(Err(io::ErrorKind::TimedOut.into()));
                }
                Poll::Pending => return Poll::Pending,
            }
        }
        let n = this.prefix.len().min(buf.remaining());
        buf.put_slice(&this.prefix[..n]);
        this.prefix.advance(n);
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Prefixed {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.io).poll_write(cx, buf);
        this.sending.watch(cx, polled)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        this.sending.watch(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    /// A lingering close, as nginx's `lingering_close`: send our FIN, then
    /// read and drop what the client still sends until it closes or
    /// [`LINGER`] passes. Closing a socket with unread bytes resets the
    /// connection, and a client still uploading (a 413 for an over-limit
    /// body) would then see "connection reset" instead of the answer.
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.linger.is_none() {
            std::task::ready!(Pin::new(&mut this.io).poll_shutdown(cx))?;
            this.linger = Some(Box::pin(tokio::time::sleep(LINGER)));
        }
        let mut sink = [0u8; 4096];
        loop {
            if this.ctx.as_ref().is_some_and(|c| c.stopping()) {
                return Poll::Ready(Ok(()));
            }
            if let Some(t) = this.linger.as_mut() {
                if t.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Ok(()));
                }
            }
            let mut buf = ReadBuf::new(&mut sink);
            match Pin::new(&mut this.io).poll_read(cx, &mut buf) {
                Poll::Ready(Ok(())) if !buf.filled().is_empty() => continue,
                // EOF or an error: the client is done.
                Poll::Ready(_) => return Poll::Ready(Ok(())),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn bytes_read_before_the_hand_over_come_first() {
        use tokio::io::AsyncReadExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let client = tokio::spawn(async move {
            let mut s = TcpStream::connect(addr).await.unwrap();
            s.write_all(b" world").await.unwrap();
        });
        let (io, _) = listener.accept().await.unwrap();
        let mut p = Prefixed {
            linger: None,
            ctx: None,
            prefix: Bytes::from_static(b"hello"),
            io,
            reads: None,
            sending: SendClock::new(Duration::from_secs(60), addr),
        };
        let mut got = String::new();
        p.read_to_string(&mut got).await.unwrap();
        assert_eq!(got, "hello world");
        client.await.unwrap();
    }
}
