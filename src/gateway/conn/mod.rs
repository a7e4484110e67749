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
//! `header_read` the idle timeout. An HTTP/2 connection is idle while no
//! stream is open, and is then closed with a GOAWAY (see `handoff`). At
//! shutdown, idle connections are closed at once and busy ones after
//! their current response.
//!
//! Writes to the client, on both sides and in WebSocket tunnels, may each
//! wait for room at most `timeouts.send` (nginx's `send_timeout`; see
//! `clocks`): a client that takes nothing of its response is closed,
//! and with it the backend connection relaying that response. On HTTP/2,
//! where flow control can hold one stream while the socket stays
//! writable, each response stream is held to the same limit (`stalled`).
//!
//! The front end's loop is in `plain`, hyper's part of a connection in
//! `handoff`, the HTTP/2 streams' send timeout in `stalled`.

mod handoff;
mod plain;
pub(super) mod stalled;

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::Context;
use std::time::Duration;

use bytes::BytesMut;
use hyper_util::server::conn::auto;
use tokio::net::TcpStream;
use tokio_util::sync::WaitForCancellationFuture;

use handoff::{hyper_serve, Prefixed, StreamsIdle};
use plain::Front;

use crate::gateway::clocks::{Activity, ReadClock, SendClock};
use crate::gateway::deadline::Deadline;
use crate::gateway::headers::Peer;
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
    pub builder: auto::Builder<stalled::StreamExec>,
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
        // HTTP/2 has no heads between idle spells to time: its writes are,
        // and its idleness is counted in open streams (`StreamsIdle`).
        let h2 = conn.buf.starts_with(H2_PREFACE);
        let (reads, streams) = if h2 {
            let idle = StreamsIdle::new(conn.timer, timeouts, activity.clone());
            (None, Some(idle))
        } else {
            let reads = ReadClock::new(conn.timer, timeouts, activity.clone());
            (Some(reads), None)
        };
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
        let serving = hyper_serve(&ctx, io, origin, peer, &mut stop, activity, streams);
        Box::pin(serving).await;
    }
}

/// How an HTTP/2 connection begins (RFC 9113 §3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n";

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
#[cfg(test)]
mod tests;
