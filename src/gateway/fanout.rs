//! A cap on the connections open to each backend at once (nginx's
//! `max_conns` on an upstream server, with its `queue`).
//!
//! Why: one HTTP/2 client connection may have 100 streams open, and a few
//! such clients (or many HTTP/1.1 ones) would otherwise open as many
//! backend connections at the same moment: a small Python backend then
//! runs out of workers or descriptors and fails everyone, not only the
//! burst. With a cap, the burst waits briefly and the excess gets a 503
//! with `Retry-After` while the backend keeps serving at its pace.
//!
//! How: each backend address has a semaphore with `max` permits. A
//! connection holds one [`Permit`] for its whole life, pooled idle time
//! included, and gives it back when it is dropped, whatever ends it (the
//! response read to its end, a client that hung up, a backend error, the
//! pool's keeper closing it). Nothing is counted by hand, so nothing can
//! leak. Idle connections holding permits would starve waiters, so a
//! connection going back to the pool wakes them (see [`Backend::returned`])
//! and the pool hands it over, or closes it for one that needs a new
//! connection (a WebSocket upgrade).
//!
//! A burst refused at the cap would log a warning per 503; each backend
//! keeps a [`Throttled`] instead: one line per interval, with a count.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

use crate::gateway::throttle::{self, Throttled};

/// Default connections per backend: a generous figure for one container's
/// services (uvicorn's default `limit_concurrency` is unlimited, but its
/// backlog is 2048 and a Python worker serves far fewer at once).
pub const DEFAULT_MAX: usize = 256;
/// Default wait for a free connection before the 503.
pub const DEFAULT_QUEUE: Duration = Duration::from_secs(5);
/// `Retry-After` of the 503, in seconds: a burst is usually over by then.
pub const RETRY_AFTER_SECS: u64 = 1;

/// The cap: `max` connections per backend (0: no cap), and how long a
/// request waits for one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cap {
    pub max: usize,
    pub queue: Duration,
}

impl Default for Cap {
    fn default() -> Self {
        Cap {
            max: DEFAULT_MAX,
            queue: DEFAULT_QUEUE,
        }
    }
}

/// One backend's permits and waiters.
#[derive(Debug)]
pub struct Backend {
    permits: Arc<Semaphore>,
    /// Requests waiting for a connection; a connection going back to the
    /// pool wakes them only when there are any (the common case costs one
    /// atomic load).
    waiting: AtomicUsize,
    /// Woken when a connection to this backend goes back to the pool.
    returned: Notify,
    /// Requests refused at the cap, as far as the log goes.
    refusals: Throttled,
}

impl Backend {
    /// A connection to this backend was pooled: a waiter may take it.
    /// One is woken per connection (a waiter that gives up passes its
    /// wake-up on), not all of them to race for it.
    pub fn pooled(&self) {
        if self.waiting.load(Ordering::SeqCst) > 0 {
            self.returned.notify_one();
        }
    }

    /// A permit, if one is free now.
    pub fn try_acquire(self: &Arc<Self>) -> Option<Permit> {
        let p = self.permits.clone().try_acquire_owned().ok()?;
        Some(self.permit(p))
    }

    fn permit(self: &Arc<Self>, p: OwnedSemaphorePermit) -> Permit {
        Permit {
            _held: p,
            backend: self.clone(),
        }
    }

    /// A request was refused at the cap at `now`: `Some(n)` when it is
    /// worth a log line, `n` refusals since the previous one.
    pub fn refused(&self, now: Instant) -> Option<u64> {
        self.refusals.failed(now)
    }

    /// Permits free now (tests).
    pub fn available(&self) -> usize {
        self.permits.available_permits()
    }

    /// Requests waiting now (tests).
    pub fn waiting_now(&self) -> usize {
        self.waiting.load(Ordering::SeqCst)
    }
}

/// The right to one open connection to a backend; dropping it gives the
/// right back.
#[derive(Debug)]
pub struct Permit {
    _held: OwnedSemaphorePermit,
    backend: Arc<Backend>,
}

impl Permit {
    /// The backend it is for.
    pub fn backend(&self) -> &Arc<Backend> {
        &self.backend
    }
}

/// Every backend's permits, by address.
#[derive(Debug)]
pub struct Limits {
    cap: Cap,
    /// A short list (a container has a handful of backends); an entry is
    /// kept for good once made, which is bounded by the routes' backends.
    backends: Mutex<Vec<(SocketAddr, Arc<Backend>)>>,
}

/// What a waiter got.
#[derive(Debug)]
pub enum Waited {
    /// A free permit: open a new connection with it.
    Permit(Permit),
    /// A connection went back to the pool: look there again.
    Returned,
}

/// No connection became free within the queue time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Full;

impl Limits {
    pub fn new(cap: Cap) -> Self {
        let max = cap.max.min(Semaphore::MAX_PERMITS);
        Limits {
            cap: Cap { max, ..cap },
            backends: Mutex::new(Vec::new()),
        }
    }

    pub fn cap(&self) -> Cap {
        self.cap
    }

    /// `addr`'s permits; `None` when there is no cap.
    pub fn backend(&self, addr: SocketAddr) -> Option<Arc<Backend>> {
        if self.cap.max == 0 {
            return None;
        }
        let mut list = self.backends.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((_, b)) = list.iter().find(|(a, _)| *a == addr) {
            return Some(b.clone());
        }
        let b = Arc::new(Backend {
            permits: Arc::new(Semaphore::new(self.cap.max)),
            waiting: AtomicUsize::new(0),
            returned: Notify::new(),
            // The refusals left out of the log reach it when their
            // interval ends (the rule and the error are in the first line).
            refusals: Throttled::new(move |refused| {
                let every_s = throttle::LOG_EVERY.as_secs();
                tracing::warn!(backend = %format_args!("http://{addr}"), refused, every_s, "gateway: more requests refused at the backend's connection cap (backend_connections.max) since the last line");
            }),
        });
        list.push((addr, b.clone()));
        Some(b)
    }
}

/// Counts a waiter for as long as it waits, however the wait ends
/// (a permit, a returned connection, the deadline, or a dropped future).
struct Waiting<'a>(&'a Backend);

impl<'a> Waiting<'a> {
    fn new(b: &'a Backend) -> Self {
        b.waiting.fetch_add(1, Ordering::SeqCst);
        Waiting(b)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Wait until `deadline` for a permit of `backend`, or for a connection
/// going back to its pool. `look` is called (when no permit is free) once
/// the wake-up for returned connections is armed, so a connection pooled
/// between the caller's last look and now is not missed: it returns what
/// it found there, if anything.
pub async fn wait<T>(
    backend: &Arc<Backend>,
    deadline: tokio::time::Instant,
    mut look: impl FnMut() -> Option<T>,
) -> Result<Result<T, Waited>, Full> {
    let _counted = Waiting::new(backend);
    let returned = backend.returned.notified();
    tokio::pin!(returned);
    returned.as_mut().enable();
    // A permit freed meanwhile first: `look` may close an idle
    // connection to make room, which is not needed then.
    if let Some(p) = backend.try_acquire() {
        return Ok(Err(Waited::Permit(p)));
    }
    if let Some(found) = look() {
        return Ok(Ok(found));
    }
    tokio::select! {
        p = backend.permits.clone().acquire_owned() => match p {
            Ok(p) => Ok(Err(Waited::Permit(backend.permit(p)))),
            // The semaphore is never closed.
            Err(_) => Err(Full),
        },
        () = returned => Ok(Err(Waited::Returned)),
        () = tokio::time::sleep_until(deadline) => Err(Full),
    }
}

/// A socket that holds its backend permit for as long as it exists: for
/// connections handed to hyper's client (WebSocket upgrades), which then
/// pass the socket on to the tunnel.
#[derive(Debug)]
pub struct Held<T> {
    io: T,
    _permit: Option<Permit>,
}

impl<T> Held<T> {
    pub fn new(io: T, permit: Option<Permit>) -> Self {
        Held {
            io,
            _permit: permit,
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Held<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Held<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::time::Instant;

    fn addr() -> SocketAddr {
        "127.0.0.1:9".parse().unwrap()
    }

    fn limits(max: usize) -> Limits {
        Limits::new(Cap {
            max,
            queue: Duration::from_millis(50),
        })
    }

    /// A burst of 503s at the cap is one log line per interval and
    /// backend, with the count of refusals since the previous line.
    #[test]
    fn refusals_are_logged_once_per_interval_and_backend() {
        use crate::gateway::throttle::LOG_EVERY;
        let t0 = std::time::Instant::now();
        let l = limits(1);
        let b = l.backend(addr()).unwrap();
        let other = l.backend("127.0.0.1:10".parse().unwrap()).unwrap();
        assert_eq!(b.refused(t0), Some(1));
        for _ in 0..99 {
            assert_eq!(b.refused(t0 + Duration::from_millis(10)), None);
        }
        // Another backend's first refusal is its own line.
        assert_eq!(other.refused(t0 + Duration::from_millis(20)), Some(1));
        assert_eq!(b.refused(t0 + LOG_EVERY), Some(100));
        assert_eq!(b.refused(t0 + LOG_EVERY), None);
        // The same backend, looked up again, shares the count.
        let again = l.backend(addr()).unwrap();
        assert_eq!(again.refused(t0 + 2 * LOG_EVERY), Some(2));
    }

    #[test]
    fn at_most_max_permits_per_backend_and_a_dropped_one_comes_back() {
        let l = limits(2);
        let b = l.backend(addr()).unwrap();
        let one = b.try_acquire().unwrap();
        let _two = b.try_acquire().unwrap();
        assert!(b.try_acquire().is_none(), "a third past the cap");
        // Another backend has its own permits; the same one shares them.
        let other = l.backend("127.0.0.1:10".parse().unwrap()).unwrap();
        assert!(other.try_acquire().is_some());
        assert!(l.backend(addr()).unwrap().try_acquire().is_none());
        drop(one);
        assert!(b.try_acquire().is_some(), "the dropped permit came back");
    }

    #[test]
    fn no_cap_means_no_permits_to_count() {
        assert!(limits(0).backend(addr()).is_none());
        // A cap past what a semaphore holds is clamped, not a panic.
        assert_eq!(limits(usize::MAX).cap().max, Semaphore::MAX_PERMITS);
    }

    // The clock is paused: the give-up costs no real time and its instant
    // is exact.
    #[tokio::test(start_paused = true)]
    async fn a_waiter_gets_a_permit_given_back_or_gives_up_at_its_deadline() {
        let l = limits(1);
        let b = l.backend(addr()).unwrap();
        let held = b.try_acquire().unwrap();
        let soon = Instant::now() + Duration::from_millis(30);
        let got = wait(&b, soon, || None::<()>).await;
        assert_eq!(got.unwrap_err(), Full);
        assert_eq!(Instant::now(), soon, "gave up before or after its deadline");
        assert_eq!(b.waiting.load(Ordering::SeqCst), 0);

        let later = Instant::now() + Duration::from_secs(10);
        let waiter = {
            let b = b.clone();
            tokio::spawn(async move {
                matches!(
                    wait(&b, later, || None::<()>).await,
                    Ok(Err(Waited::Permit(_)))
                )
            })
        };
        while b.waiting.load(Ordering::SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
        drop(held);
        assert!(waiter.await.unwrap(), "the waiter got the permit");
        assert_eq!(b.available(), 1, "the waiter's permit was dropped with it");
    }

    #[tokio::test]
    async fn a_returned_connection_wakes_waiters_and_a_look_finds_it() {
        let l = limits(1);
        let b = l.backend(addr()).unwrap();
        let _held = b.try_acquire().unwrap();
        let later = Instant::now() + Duration::from_secs(10);
        let waiter = {
            let b = b.clone();
            tokio::spawn(async move {
                matches!(
                    wait(&b, later, || None::<()>).await,
                    Ok(Err(Waited::Returned))
                )
            })
        };
        while b.waiting.load(Ordering::SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
        b.pooled();
        assert!(waiter.await.unwrap(), "woken by the pooled connection");
        // Something already in the pool is found before any wait.
        let found = wait(&b, later, || Some(7)).await;
        assert!(matches!(found, Ok(Ok(7))));
    }

    #[tokio::test]
    async fn a_cancelled_waiter_leaves_nothing_behind() {
        let l = limits(1);
        let b = l.backend(addr()).unwrap();
        let held = b.try_acquire().unwrap();
        let later = Instant::now() + Duration::from_secs(10);
        let waiter = {
            let b = b.clone();
            tokio::spawn(async move { wait(&b, later, || None::<()>).await.is_ok() })
        };
        while b.waiting.load(Ordering::SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
        waiter.abort();
        assert!(waiter.await.unwrap_err().is_cancelled());
        assert_eq!(b.waiting.load(Ordering::SeqCst), 0);
        drop(held);
        assert_eq!(b.available(), 1, "no permit kept by the cancelled waiter");
    }
}
