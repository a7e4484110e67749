//! The front end's own loop: plain HTTP/1.1 requests, answered without
//! hyper, until the connection closes or a request needs hyper.

use std::future::{poll_fn, Future};
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::Poll;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use http::{Method, Response};
use hyper::body::Body as _;
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{Ctx, End, Stop, COALESCE, HEAD_SPACE, LINGER, READ_SPACE};
use crate::gateway::body::Body;
use crate::gateway::clocks::SendClock;
use crate::gateway::deadline::Deadline;
use crate::gateway::error::HttpError;
use crate::gateway::front::{self, BodyOut, Parsed};
use crate::gateway::h1::{self, RequestFraming};
use crate::gateway::headers::{self, HeadersRef, Peer, RequestHeaders};
use crate::gateway::limits;
use crate::gateway::path::{self, normalize_path};
use crate::gateway::router::{Decision, RequestHead};

/// The front end's side of a connection.
pub(super) struct Front {
    pub(super) io: TcpStream,
    /// Bytes from the client not yet used: the next request's head, or
    /// what has arrived of it.
    pub(super) buf: BytesMut,
    /// The response head being written (reused from request to request).
    pub(super) out: Vec<u8>,
    /// The backend's request head being written (reused too).
    pub(super) req_head: Vec<u8>,
    /// The header-read or idle deadline; armed only when a read has to
    /// wait, so a request that is already there costs no timer work.
    pub(super) timer: Deadline,
    pub(super) armed: bool,
    /// The send timeout of writes to the client.
    pub(super) sending: SendClock,
}

/// Why a wait for the client ended early.
struct Gone;

impl Front {
    pub(super) async fn run(&mut self, ctx: &Ctx, origin: &Peer, stop: &mut Stop<'_>) -> End {
        let timeouts = ctx.shared.client_timeouts;
        let mut first = true;
        loop {
            // Wait until a whole head is buffered.
            self.armed = false;
            let mut idle = !first && self.buf.is_empty();
            while !h1::head_complete(&self.buf) {
                if let Some(over) = limits::partial(&self.buf) {
                    // Boxed: its drain buffer (4 KiB) would otherwise be
                    // part of every connection's task, idle ones included.
                    Box::pin(self.refuse(over)).await;
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
            crate::gateway::handle::log_request(client_ip, &m, &p, rule_id, *status, t);
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
