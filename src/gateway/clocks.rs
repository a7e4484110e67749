//! The clocks of a client connection besides the front end's own wait
//! for a head (see `conn`):
//!
//! - [`SendClock`]: `timeouts.send`, nginx's `send_timeout`, on every
//!   write to the client, on both paths and under a WebSocket tunnel, and
//!   on a tunnel's writes to the backend.
//! - [`ReadClock`]: on a connection hyper took over, `idle` between
//!   requests and `header_read` from a head's first byte, timed by the
//!   connection's reads: hyper's own header timer starts as soon as a
//!   response is written, which made `header_read` the idle timeout.
//!   hyper's side says where it is through [`Activity`].
//! - On HTTP/2, `timeouts.send` per response stream (flow control can hold
//!   one while the socket stays writable): `conn::stalled`, told by
//!   [`Tracked`] when a frame waits.
//!
//! hyper does not read again after a response while its last read is
//! pending: it waits for the socket to wake it. A read that waited while
//! a request was served (untimed) would then sleep through the idle
//! timeout until the client's next byte or some other wake-up, so the end
//! of the last request in flight wakes that read (see [`Activity`]).

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;

use crate::gateway::body::Body;
use crate::gateway::conn::stalled;
use crate::gateway::deadline::Deadline;

/// The timeouts of client connections.
#[derive(Debug, Clone, Copy)]
pub(super) struct ClientTimeouts {
    pub header_read: Duration,
    pub idle: Duration,
    pub send: Duration,
}

/// The send timeout (`timeouts.send`, nginx's `send_timeout`): a write to
/// the client may wait for room this long, counted from when it first had
/// to wait since the last write that went through; not a limit on the
/// whole response, so a slow but steady reader is never cut.
pub(super) struct SendClock {
    limit: Duration,
    peer: SocketAddr,
    /// The writes go to a backend (a tunnel's), not to a client.
    backend: bool,
    /// Made at the first wait: most connections never wait to write.
    timer: Option<Deadline>,
    waiting: bool,
    /// The limit has passed: every later wait fails at once.
    expired: bool,
}

impl SendClock {
    pub(super) fn new(limit: Duration, peer: SocketAddr) -> Self {
        SendClock {
            limit,
            peer,
            backend: false,
            timer: None,
            waiting: false,
            expired: false,
        }
    }

    /// The same rule on a WebSocket tunnel's writes to `backend`: one
    /// that stopped reading while the client goes on sending.
    pub(super) fn to_backend(limit: Duration, backend: SocketAddr) -> Self {
        SendClock {
            backend: true,
            ..SendClock::new(limit, backend)
        }
    }

    /// Pass on the outcome of a write, turned into an error once the
    /// writes have waited past the limit (logged as the fault of the side
    /// that read nothing).
    pub(super) fn watch(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<io::Result<usize>>,
    ) -> Poll<io::Result<usize>> {
        if polled.is_ready() {
            self.waiting = false;
            return polled;
        }
        if self.expired {
            return Poll::Ready(Err(io::ErrorKind::TimedOut.into()));
        }
        let limit = self.limit;
        let timer = self.timer.get_or_insert_with(|| Deadline::after(limit));
        if !self.waiting {
            self.waiting = true;
            timer.reset(limit);
        }
        if !timer.poll_passed(cx) {
            return Poll::Pending;
        }
        let send_s = limit.as_secs_f32();
        if self.backend {
            tracing::warn!(
                backend = %self.peer,
                send_s,
                "gateway: the backend took nothing of what the client sent through a WebSocket tunnel for timeouts.send; closed the tunnel"
            );
        } else {
            tracing::info!(
                client = %self.peer,
                send_s,
                "gateway: the client took nothing of its response for timeouts.send; closed its connection and the backend's"
            );
        }
        self.expired = true;
        self.timer = None;
        Poll::Ready(Err(io::ErrorKind::TimedOut.into()))
    }
}

/// What hyper's side of a connection tells that connection's reads:
/// requests being served, and whether it became a tunnel.
#[derive(Debug, Default)]
pub(super) struct Activity {
    open: AtomicUsize,
    upgraded: AtomicBool,
    /// The read that waited, untimed, while a request was served: woken
    /// when the last one ends, so that the idle timeout starts then.
    parked: Mutex<Option<Waker>>,
}

impl Activity {
    /// Whether a request (an HTTP/2 stream) is being served; if so, the
    /// task is woken when the last one ends.
    pub(super) fn poll_busy(&self, cx: &mut Context<'_>) -> bool {
        if self.open.load(Ordering::Acquire) == 0 {
            return false;
        }
        self.park(cx.waker());
        // The last one may have ended before the waker was parked.
        self.open.load(Ordering::Acquire) > 0
    }

    fn park(&self, waker: &Waker) {
        let mut parked = self.parked.lock().unwrap_or_else(PoisonError::into_inner);
        if !parked.as_ref().is_some_and(|w| w.will_wake(waker)) {
            *parked = Some(waker.clone());
        }
    }

    fn unpark(&self) {
        let parked = self
            .parked
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(w) = parked {
            w.wake();
        }
    }
}

/// One request being served, from its head until its response is
/// written (the response body is dropped) or abandoned.
pub(super) struct InFlight(Arc<Activity>);

impl InFlight {
    pub(super) fn new(activity: &Arc<Activity>) -> Self {
        activity.open.fetch_add(1, Ordering::AcqRel);
        InFlight(activity.clone())
    }

    /// Its response switched protocols: the connection is a tunnel now.
    pub(super) fn upgraded(&self) {
        self.0.upgraded.store(true, Ordering::Release);
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.0.open.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.unpark();
        }
    }
}

/// A response body that marks its request done when hyper drops it; on
/// an HTTP/2 stream it also says when a frame waits to be taken, for the
/// stream's send timeout (see `conn::stalled`).
pub(super) struct Tracked {
    body: Body,
    _open: InFlight,
    /// It is an HTTP/2 stream's body, polled inside its `Watched`.
    stream: bool,
}

impl Tracked {
    pub(super) fn new(body: Body, open: InFlight) -> Self {
        Tracked {
            body,
            _open: open,
            stream: stalled::in_stream(),
        }
    }
}

impl hyper::body::Body for Tracked {
    type Data = Bytes;
    type Error = crate::gateway::body::BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.body).poll_frame(cx);
        if this.stream {
            stalled::handed(matches!(&polled, Poll::Ready(Some(Ok(f))) if f.is_data()));
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

/// Where a connection served by hyper is, as far as its read timeouts go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Between requests: `idle` until a byte of the next one arrives.
    Idle,
    /// A head has begun: `header_read` for the rest of it.
    Head,
    /// A request is being served (its body is the backend's to time).
    Busy,
    /// A tunnel: reads are not timed here (see `proxy`).
    Off,
}

impl Phase {
    /// The phase before a read, given whether a request is being served
    /// and whether the connection became a tunnel.
    fn before_read(self, open: bool, upgraded: bool) -> Phase {
        match self {
            Phase::Off => Phase::Off,
            _ if upgraded => Phase::Off,
            _ if open => Phase::Busy,
            // The response is out: the connection idles.
            Phase::Busy => Phase::Idle,
            p => p,
        }
    }

    /// The phase after a read that brought bytes.
    fn after_bytes(self) -> Phase {
        match self {
            Phase::Idle => Phase::Head,
            p => p,
        }
    }

    fn limit(self, t: &ClientTimeouts) -> Option<Duration> {
        match self {
            Phase::Idle => Some(t.idle),
            Phase::Head => Some(t.header_read),
            Phase::Busy | Phase::Off => None,
        }
    }
}

/// The front end's rule for idle connections and slow heads, kept on
/// hyper's side by timing its reads (see [`Phase`]). A timeout is a read
/// error: hyper closes the connection without an answer, as the front
/// end does.
pub(super) struct ReadClock {
    activity: Arc<Activity>,
    timeouts: ClientTimeouts,
    phase: Phase,
    timer: Deadline,
    /// Whether `timer` is set for the current phase's wait.
    armed: bool,
}

impl ReadClock {
    /// The clock of an HTTP/1 connection handed over with a request head
    /// in hand.
    pub(super) fn new(timer: Deadline, timeouts: ClientTimeouts, activity: Arc<Activity>) -> Self {
        ReadClock {
            activity,
            timeouts,
            phase: Phase::Head,
            timer,
            armed: false,
        }
    }

    fn enter(&mut self, phase: Phase) {
        if phase != self.phase {
            self.phase = phase;
            self.armed = false;
        }
    }

    /// Before a read: the phase as hyper's side now says.
    pub(super) fn refresh(&mut self) {
        let open = self.activity.open.load(Ordering::Acquire) > 0;
        let upgraded = self.activity.upgraded.load(Ordering::Acquire);
        self.enter(self.phase.before_read(open, upgraded));
    }

    /// A read brought bytes.
    pub(super) fn got_bytes(&mut self) {
        self.enter(self.phase.after_bytes());
    }

    /// A read has to wait: whether the phase's limit has passed.
    pub(super) fn poll_expired(&mut self, cx: &mut Context<'_>) -> bool {
        if self.phase == Phase::Busy {
            self.activity.park(cx.waker());
            // The request may have ended since `refresh`, before the
            // waker was parked: that wake-up would be lost.
            self.refresh();
        }
        let Some(limit) = self.phase.limit(&self.timeouts) else {
            return false;
        };
        if !self.armed {
            self.armed = true;
            self.timer.reset(limit);
        }
        self.timer.poll_passed(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 16 item 9: `idle` between requests, `header_read` from a
    /// head's first byte, nothing while a request is served or once the
    /// connection is a tunnel.
    #[test]
    fn hypers_reads_are_timed_by_phase() {
        let t = ClientTimeouts {
            header_read: Duration::from_secs(1),
            idle: Duration::from_secs(3),
            send: Duration::from_secs(60),
        };
        // Handed over with a head: served, then idle, then a new head.
        let mut p = Phase::Head;
        assert_eq!(p.limit(&t), Some(t.header_read));
        p = p.before_read(true, false);
        assert_eq!((p, p.limit(&t)), (Phase::Busy, None));
        // Bytes of the body while it is served change nothing.
        assert_eq!(p.after_bytes(), Phase::Busy);
        p = p.before_read(false, false);
        assert_eq!((p, p.limit(&t)), (Phase::Idle, Some(t.idle)));
        assert_eq!(p.before_read(false, false), Phase::Idle);
        p = p.after_bytes();
        assert_eq!((p, p.limit(&t)), (Phase::Head, Some(t.header_read)));
        // Still no request: the head goes on being timed, not reset.
        assert_eq!(p.before_read(false, false), Phase::Head);
        // A tunnel is never timed here again.
        p = Phase::Busy.before_read(false, true);
        assert_eq!((p, p.limit(&t)), (Phase::Off, None));
        assert_eq!(p.before_read(true, false), Phase::Off);
        assert_eq!(p.after_bytes(), Phase::Off);
    }
}
