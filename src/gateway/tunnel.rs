//! A WebSocket tunnel: the client's and the backend's upgraded
//! connections joined with `copy_bidirectional`, in a task the gateway
//! tracks and cancels at shutdown.
//!
//! A tunnel that passes nothing either way for `timeouts.send` is closed,
//! as nginx closes one after `proxy_read_timeout` (60 s by default): a
//! WebSocket whose peers ping stays open. A client that takes nothing of
//! what waits for it is closed by the same timeout on its writes (see
//! `conn`'s send clock, under the upgraded connection), and so is a
//! backend: a write to it that cannot make progress for `timeouts.send`
//! closes the tunnel (logged), even while the backend goes on sending,
//! which the idle rule alone would take for a live tunnel.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::gateway::clocks::SendClock;
use crate::gateway::deadline;

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

/// Join the client's and the backend's upgraded connections once both
/// upgrades complete, in a task on `tunnels`.
pub(super) fn spawn_tunnel(
    tunnels: &Tunnels,
    client_side: hyper::upgrade::OnUpgrade,
    backend_side: hyper::upgrade::OnUpgrade,
    backend: std::net::SocketAddr,
) {
    let stop = tunnels.stop.clone();
    let idle = tunnels.idle;
    tunnels.tracker.spawn(async move {
        let (client_io, backend_io) = match tokio::try_join!(client_side, backend_side) {
            Ok(pair) => pair,
            Err(e) => {
                tracing::debug!(%backend, error = %e, "upgrade did not complete");
                return;
            }
        };
        let last = Arc::new(AtomicU64::new(now_ms()));
        let mut client_io = Traffic::new(TokioIo::new(client_io), &last, None);
        let sending = SendClock::to_backend(idle, backend);
        let mut backend_io = Traffic::new(TokioIo::new(backend_io), &last, Some(sending));
        // Dropping both ends (any way out of the select) closes both
        // connections.
        tokio::select! {
            r = tokio::io::copy_bidirectional(&mut client_io, &mut backend_io) => match r {
                Ok((up, down)) => tracing::debug!(%backend, up, down, "tunnel closed"),
                Err(e) => tracing::debug!(%backend, error = %e, "tunnel ended with an error"),
            },
            () = quiet_for(&last, idle) => tracing::info!(
                %backend,
                idle_s = idle.as_secs(),
                "gateway: closed a WebSocket tunnel that passed nothing either way for timeouts.send"
            ),
            () = stop.cancelled() => tracing::debug!(%backend, "tunnel closed for shutdown"),
        }
    });
}

/// Milliseconds on the coarse monotonic clock (see [`deadline`]).
fn now_ms() -> u64 {
    u64::try_from(deadline::coarse_now().as_millis()).unwrap_or(u64::MAX)
}

/// Wait until nothing has passed through a tunnel for `idle` (`last` is
/// when something last did, in [`now_ms`]).
async fn quiet_for(last: &AtomicU64, idle: Duration) {
    let idle_ms = u64::try_from(idle.as_millis()).unwrap_or(u64::MAX);
    loop {
        let since = now_ms().saturating_sub(last.load(Ordering::Relaxed));
        if since >= idle_ms {
            return;
        }
        tokio::time::sleep(Duration::from_millis(idle_ms - since)).await;
    }
}

/// One end of a tunnel: every read or write that moves bytes stamps
/// `last`, which both ends share.
struct Traffic<T> {
    io: T,
    last: Arc<AtomicU64>,
    /// The send timeout of writes to this end, where no layer below has
    /// one (the backend's).
    sending: Option<SendClock>,
}

impl<T> Traffic<T> {
    fn new(io: T, last: &Arc<AtomicU64>, sending: Option<SendClock>) -> Self {
        Traffic {
            io,
            last: last.clone(),
            sending,
        }
    }

    fn moved<R>(
        &self,
        r: Poll<std::io::Result<R>>,
        n: impl FnOnce(&R) -> usize,
    ) -> Poll<std::io::Result<R>> {
        if let Poll::Ready(Ok(v)) = &r {
            if n(v) > 0 {
                self.last.store(now_ms(), Ordering::Relaxed);
            }
        }
        r
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Traffic<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let r = Pin::new(&mut this.io).poll_read(cx, buf);
        let got = buf.filled().len() - before;
        this.moved(r, |()| got)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Traffic<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let mut r = Pin::new(&mut this.io).poll_write(cx, buf);
        if let Some(clock) = this.sending.as_mut() {
            r = clock.watch(cx, r);
        }
        this.moved(r, |n| *n)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    // On tokio's paused clock, which the coarse clock follows in unit
    // tests (see `deadline::coarse_now`): the close comes at an exact time.
    #[tokio::test(start_paused = true)]
    async fn bytes_either_way_put_off_the_idle_close() {
        let idle = Duration::from_millis(300);
        let last = Arc::new(AtomicU64::new(now_ms()));
        let (a, mut b) = tokio::io::duplex(64);
        let mut end = Traffic::new(a, &last, None);
        let started = tokio::time::Instant::now();
        let talk = async {
            // A write, then (after a pause) a read: each is traffic.
            let opened = last.load(Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(50)).await;
            end.write_all(b"x").await.unwrap();
            let stamped = last.load(Ordering::Relaxed);
            assert_eq!(stamped, opened + 50, "a write is traffic");
            tokio::time::sleep(idle / 2).await;
            b.write_all(b"y").await.unwrap();
            let mut one = [0u8; 1];
            end.read_exact(&mut one).await.unwrap();
            assert_eq!(
                last.load(Ordering::Relaxed),
                stamped + 150,
                "a read is traffic"
            );
        };
        // Quiet only once `idle` has passed since the read, 200 ms in.
        tokio::join!(quiet_for(&last, idle), talk);
        assert_eq!(started.elapsed(), Duration::from_millis(200) + idle);
    }
}
