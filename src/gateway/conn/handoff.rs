//! The rest of a connection, served by hyper once the front end hands it
//! over, with the bytes the front end had already read put back in front.
//!
//! An HTTP/2 connection is idle while it has no stream open (see
//! [`StreamsIdle`]): once it has been so for `timeouts.idle` it is closed
//! gracefully, with a GOAWAY (a client opens its next stream on a new
//! connection, as after nginx's `keepalive_timeout`), and dropped if it
//! has not closed `timeouts.send` later (a client that never reads the
//! GOAWAY). Its streams are counted by the same guard as HTTP/1's
//! requests ([`InFlight`]), which lives from the request's head until
//! hyper drops the response body; the last one to end wakes the
//! connection's task, so the idle timer starts then. A dead peer under a
//! long stream is noticed by hyper's HTTP/2 keep-alive pings (set up with
//! the builder, in `super::super`); a stream the client grants no window
//! is reset after `timeouts.send` (see `stalled`).

use std::future::{poll_fn, Future};
use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use super::{stalled, Ctx, Stop, LINGER};
use crate::gateway::clocks::{Activity, ClientTimeouts, InFlight, ReadClock, SendClock, Tracked};
use crate::gateway::deadline::Deadline;
use crate::gateway::headers::Peer;

/// Serve the rest of a connection with hyper: HTTP/1 with upgrades, or
/// HTTP/2 when it starts with the preface (`streams` is then its idle
/// rule).
pub(super) async fn hyper_serve(
    ctx: &Arc<Ctx>,
    io: Prefixed,
    origin: Arc<Peer>,
    peer: SocketAddr,
    stop: &mut Stop<'_>,
    activity: Arc<Activity>,
    mut streams: Option<StreamsIdle>,
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
    let send = ctx.shared.client_timeouts.send;
    let ended = poll_fn(|cx| loop {
        if !draining && stop.poll_fired(cx) {
            draining = true;
            conn.as_mut().graceful_shutdown();
        }
        let polled = if streams.is_some() {
            // The streams it starts are timed by `send` (see `stalled`).
            stalled::serving(peer, send, || conn.as_mut().poll(cx))
        } else {
            conn.as_mut().poll(cx)
        };
        if let Poll::Ready(r) = polled {
            return Poll::Ready(Some(r));
        }
        let Some(idle) = streams.as_mut() else {
            return Poll::Pending;
        };
        if !idle.poll_passed(cx) {
            return Poll::Pending;
        }
        if idle.closing {
            tracing::debug!(%peer, "gateway: dropped an idle HTTP/2 connection that had not closed timeouts.send after its GOAWAY");
            return Poll::Ready(None);
        }
        tracing::debug!(%peer, "gateway: closing an HTTP/2 connection that had no stream open for timeouts.idle");
        idle.close();
        if !draining {
            draining = true;
            conn.as_mut().graceful_shutdown();
        }
        // Polled again at once: the GOAWAY goes out.
    })
    .await;
    if let Some(Err(e)) = ended {
        tracing::debug!(%peer, error = %e, draining, "gateway: connection ended with an error");
    }
}

/// The idle rule of an HTTP/2 connection (see the module docs): the
/// time with no stream open, `timeouts.idle` until the GOAWAY and
/// `timeouts.send` after it.
pub(super) struct StreamsIdle {
    activity: Arc<Activity>,
    timeouts: ClientTimeouts,
    timer: Deadline,
    /// Whether `timer` is set for the current spell with no stream open.
    armed: bool,
    /// The GOAWAY has been sent: the connection is closing.
    closing: bool,
}

impl StreamsIdle {
    pub(super) fn new(timer: Deadline, timeouts: ClientTimeouts, activity: Arc<Activity>) -> Self {
        StreamsIdle {
            activity,
            timeouts,
            timer,
            armed: false,
            closing: false,
        }
    }

    /// Whether the connection has had no stream open for the current
    /// limit. While one is open, the task is woken when the last ends.
    fn poll_passed(&mut self, cx: &mut Context<'_>) -> bool {
        if self.activity.poll_busy(cx) {
            self.armed = false;
            return false;
        }
        if !self.armed {
            self.armed = true;
            let limit = if self.closing {
                self.timeouts.send
            } else {
                self.timeouts.idle
            };
            self.timer.reset(limit);
        }
        self.timer.poll_passed(cx)
    }

    /// The GOAWAY is out: from now on the close is timed.
    fn close(&mut self) {
        self.closing = true;
        self.armed = false;
    }
}

/// A connection handed to hyper: the bytes the front end already read
/// come first, then the socket. Closing it lingers (see `poll_shutdown`).
pub(super) struct Prefixed {
    pub(super) prefix: Bytes,
    pub(super) io: TcpStream,
    /// Set once our side is shut down: until then, what the client still
    /// sends is read and dropped.
    pub(super) linger: Option<Pin<Box<tokio::time::Sleep>>>,
    /// While the gateway stops, closing does not linger: a client that
    /// keeps its end open must not hold up the shutdown.
    pub(super) ctx: Option<Arc<Ctx>>,
    /// The idle and head timeouts (`None`: reads are not timed).
    pub(super) reads: Option<ReadClock>,
    pub(super) sending: SendClock,
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
