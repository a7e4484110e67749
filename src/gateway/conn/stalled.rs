//! `timeouts.send` for each HTTP/2 response stream (nginx resets a stream
//! that cannot send for `send_timeout`).
//!
//! HTTP/2 flow control lets a client keep its connection alive (it
//! answers pings, reads every frame) while granting one stream no window.
//! hyper then holds that response's next frame and polls the body no
//! more: nothing waits at the socket, so the connection's `SendClock`
//! sees no wait, and the stream, with the backend connection relaying its
//! body, would be held for good. So:
//!
//! - The response body (`clocks::Tracked`) says when it hands hyper a
//!   frame ([`handed`]). hyper asks for the next one as soon as that frame
//!   is taken, so a frame handed and not followed by another poll is
//!   waiting for window: that is the stream's "data ready since".
//! - hyper runs each stream as a future it gives the executor;
//!   [`StreamExec`] wraps it in [`Watched`], which keeps that stamp and
//!   makes it reachable to the body while the stream is polled (a
//!   thread-local swapped in and out around each poll, as tokio's
//!   task-locals are; the body runs only inside that poll). Once a frame
//!   has waited `timeouts.send`, hyper's stream future is dropped: h2
//!   resets the stream (RST_STREAM, CANCEL) and the body goes with it, so
//!   its backend connection is closed, never pooled mid-response. The
//!   other streams of the connection go on.
//!
//! No task of its own per stream (hyper already spawns one): a stamp, and
//! one timer made the first time a frame has to wait. HTTP/1 pays
//! nothing: its responses are never polled inside a [`Watched`], and the
//! front end's own path has no `Tracked` at all.
//!
//! The granularity is a frame, not a byte: a client that takes less than
//! one frame of the body (at most about 64 KiB, what one read from the
//! backend brings) in `timeouts.send` is reset, although its window moved.

use std::cell::Cell;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use crate::gateway::deadline::{coarse_now, Deadline};

thread_local! {
    /// The HTTP/2 connection being polled: its client and `timeouts.send`,
    /// for the streams it spawns meanwhile.
    static CONN: Cell<Option<(SocketAddr, Duration)>> = const { Cell::new(None) };
    /// The stream being polled (`None`: none): since when (coarse clock)
    /// its body's last frame has waited to be taken, if it has.
    static STREAM: Cell<Option<Option<Duration>>> = const { Cell::new(None) };
}

/// Run `poll` (one poll of the HTTP/2 connection to `client`) so that the
/// streams it starts are timed by `send`.
pub(super) fn serving<R>(client: SocketAddr, send: Duration, poll: impl FnOnce() -> R) -> R {
    let _restore = Restore(&CONN, CONN.replace(Some((client, send))));
    poll()
}

/// Whether this is a watched HTTP/2 stream's poll: a response body made
/// now should say when its frames wait ([`handed`]).
pub(in crate::gateway) fn in_stream() -> bool {
    STREAM.get().is_some()
}

/// The stream's body was just polled: `true` if it handed hyper a data
/// frame (which now waits to be taken), `false` if not (it waits for the
/// backend, or ended).
pub(in crate::gateway) fn handed(data: bool) {
    STREAM.set(Some(data.then(coarse_now)));
}

/// Puts a thread-local back as it was, also if the poll in between
/// panicked (tokio catches a task's panic, and the thread goes on).
struct Restore<T: Copy + 'static>(&'static std::thread::LocalKey<Cell<T>>, T);

impl<T: Copy + 'static> Drop for Restore<T> {
    fn drop(&mut self) {
        self.0.set(self.1);
    }
}

/// The executor of HTTP/2 streams: hyper's stream futures, each wrapped
/// in [`Watched`] when it comes from a connection polled in [`serving`].
#[derive(Debug, Clone, Copy, Default)]
pub(in crate::gateway) struct StreamExec;

impl<F> hyper::rt::Executor<F> for StreamExec
where
    F: Future<Output = ()> + Send + 'static,
{
    fn execute(&self, fut: F) {
        match CONN.get() {
            Some((client, send)) => tokio::spawn(Watched::new(fut, client, send)),
            None => tokio::spawn(fut),
        };
    }
}

/// One HTTP/2 stream's future, reset once its response has waited
/// `limit` for window (see the module docs).
pub(super) struct Watched<F> {
    /// `None` once reset (dropped).
    inner: Option<F>,
    client: SocketAddr,
    limit: Duration,
    /// Since when the body's last frame has waited to be taken.
    waiting: Option<Duration>,
    /// Made the first time a frame waits.
    timer: Option<Deadline>,
}

impl<F> Watched<F> {
    pub(super) fn new(inner: F, client: SocketAddr, limit: Duration) -> Self {
        Watched {
            inner: Some(inner),
            client,
            limit,
            waiting: None,
            timer: None,
        }
    }
}

impl<F: Future<Output = ()>> Future for Watched<F> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        // SAFETY: `inner` is pinned structurally: it is only polled and
        // dropped in place (`Pin::set`), never moved out; the other
        // fields are never pinned. `Watched` has no `Drop` of its own and
        // is `Unpin` only when `F` is.
        let this = unsafe { self.get_unchecked_mut() };
        let mut inner = unsafe { Pin::new_unchecked(&mut this.inner) };
        let Some(fut) = inner.as_mut().as_pin_mut() else {
            return Poll::Ready(());
        };
        let polled = {
            let restore = Restore(&STREAM, STREAM.replace(Some(this.waiting)));
            let polled = fut.poll(cx);
            this.waiting = STREAM.get().flatten();
            drop(restore);
            polled
        };
        if polled.is_ready() {
            return Poll::Ready(());
        }
        let Some(since) = this.waiting else {
            return Poll::Pending;
        };
        // The same frame waiting gives the same deadline, which `reset`
        // leaves alone: other wake-ups of the stream do not move it.
        let left = (since + this.limit).saturating_sub(coarse_now());
        let timer = this.timer.get_or_insert_with(|| Deadline::after(left));
        timer.reset(left);
        if !timer.poll_passed(cx) {
            return Poll::Pending;
        }
        tracing::info!(
            client = %this.client,
            send_s = this.limit.as_secs_f32(),
            "gateway: an HTTP/2 client granted a response stream no flow-control window for timeouts.send; reset the stream and closed the backend connection relaying it"
        );
        inner.set(None);
        this.timer = None;
        Poll::Ready(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    /// A stream whose body hands a frame (`data`) or waits for its
    /// backend; a frame handed is never taken, so hyper does not poll the
    /// body again (the stream's wake-ups reach it all the same).
    /// `dropped` tells when the gateway lets go of it.
    struct Stream {
        data: bool,
        polled: bool,
        dropped: Arc<AtomicBool>,
    }

    impl Future for Stream {
        type Output = ();
        fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
            assert!(in_stream(), "polled inside its Watched");
            if !self.polled || !self.data {
                self.polled = true;
                handed(self.data);
            }
            // Woken often, as a stream waiting for window may be.
            let waker = cx.waker().clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_secs(7)).await;
                waker.wake();
            });
            Poll::Pending
        }
    }

    impl Drop for Stream {
        fn drop(&mut self) {
            self.dropped.store(true, Ordering::SeqCst);
        }
    }

    fn watched(data: bool) -> (tokio::task::JoinHandle<()>, Arc<AtomicBool>) {
        let dropped = Arc::new(AtomicBool::new(false));
        let stream = Stream {
            data,
            polled: false,
            dropped: dropped.clone(),
        };
        let client = SocketAddr::from(([127, 0, 0, 1], 9));
        let task = tokio::spawn(Watched::new(stream, client, Duration::from_secs(60)));
        (task, dropped)
    }

    /// A frame that waits for window resets the stream at `timeouts.send`
    /// and not before; a body waiting for its backend is never cut here.
    #[tokio::test(start_paused = true)]
    async fn a_stream_whose_frame_waits_is_reset_at_the_send_timeout() {
        let (stuck, stuck_dropped) = watched(true);
        let (slow, slow_dropped) = watched(false);
        tokio::time::sleep(Duration::from_millis(59_000)).await;
        assert!(!stuck.is_finished() && !stuck_dropped.load(Ordering::SeqCst));
        tokio::time::sleep(Duration::from_millis(1_001)).await;
        assert!(stuck.is_finished(), "not reset at the send timeout");
        assert!(stuck_dropped.load(Ordering::SeqCst), "its future was kept");
        tokio::time::sleep(Duration::from_secs(600)).await;
        assert!(!slow.is_finished() && !slow_dropped.load(Ordering::SeqCst));
        slow.abort();
    }

    #[test]
    fn outside_a_stream_nothing_is_watched() {
        assert!(!in_stream());
        let client = SocketAddr::from(([127, 0, 0, 1], 9));
        serving(client, Duration::from_secs(1), || {
            assert_eq!(CONN.get(), Some((client, Duration::from_secs(1))));
        });
        assert_eq!(CONN.get(), None);
    }
}
