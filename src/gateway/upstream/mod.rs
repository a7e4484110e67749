//! Pooled HTTP/1.1 connections to backends, driven from the request's own
//! task.
//!
//! Why not hyper's client: its connection runs in a task of its own, and a
//! proxied request then hops between the client connection's task and the
//! backend connection's task through channels about four times (request
//! sent, head received, body frames, end). Profiles showed those wake-ups,
//! not the syscalls, as most of the gateway's CPU per request. Here the
//! request future writes the head and reads the response head itself, and
//! the response body reads the backend socket from inside `poll_frame`, so
//! a proxied exchange runs in the one task hyper's server gives the client
//! connection: the same two reads and two writes per request as nginx, and
//! no hand-offs. The wire format is in [`super::h1`]; WebSocket upgrades
//! still use hyper's client (see [`super::proxy`]), since an upgraded
//! connection is never pooled and is long-lived.
//!
//! Pooling: a connection goes back to the pool when its response was read
//! to the end, it said nothing about closing, and no stray byte followed
//! the body. It is reused at most `pool_idle` later (below uvicorn's 5 s
//! keep-alive). Nothing may arrive on an idle connection: a byte there is
//! an answer to no request (a backend that answered one request twice),
//! and handing it to the next request would give one client another's
//! response (issue 11). So an idle connection is watched while it sits in
//! the pool (one keeper task per pool is woken by any byte or EOF on it
//! and closes it), and checked once more with a non-blocking peek right
//! before reuse, for bytes the keeper has not been told of yet. A pooled
//! connection can still have been closed by the backend a moment ago; an
//! idempotent request without a body that fails on it before any response
//! byte arrives is therefore sent again on another connection (nothing was
//! acted on, or it is safe to repeat, as RFC 9110 §9.2.2 allows); any
//! other request is never repeated.

mod body;
mod conn;
mod exchange;

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use tokio::net::TcpStream;

use super::deadline;
use super::fanout::{self, Cap, Full, Held, Limits, Permit, Waited};

pub use body::{BoxError, UpstreamBody};
use conn::quiet;
pub use conn::Conn;
pub use exchange::{exchange, Outgoing};

/// Idle connections kept per backend; more are closed when they come back.
/// Matches a generous nginx `keepalive` setting: enough for every client
/// connection of a busy container to find a warm backend connection.
const MAX_IDLE_PER_BACKEND: usize = 256;

/// Read buffer growth step: one small response fits in one read.
const READ_CHUNK: usize = 16 * 1024;
/// Read size for the rest of a long body of known length.
const BIG_READ: usize = 64 * 1024;

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

/// Idle connections per backend address, and the cap on all connections
/// per backend address (see [`fanout`]).
#[derive(Debug)]
pub struct Pool {
    idle: Mutex<Idles>,
    max_idle_age: Duration,
    limits: Limits,
    /// The keeper task has been started.
    keeper: AtomicBool,
}

#[derive(Debug, Default)]
struct Idles {
    /// A short list: one entry per backend address, each a stack (most
    /// recently used on top, so the warmest connection is reused first).
    stacks: Vec<(SocketAddr, Vec<Idle>)>,
    /// The keeper task's waker: every idle connection wakes it when
    /// anything arrives (`None` until the keeper first runs; it then
    /// registers the connections already pooled).
    keeper: Option<Waker>,
}

#[derive(Debug)]
struct Idle {
    conn: Conn,
    since: Duration,
}

impl Pool {
    /// An empty pool whose connections expire after `max_idle_age`, with
    /// the default cap per backend.
    pub fn new(max_idle_age: Duration) -> Self {
        Self::capped(max_idle_age, Cap::default())
    }

    /// An empty pool whose connections expire after `max_idle_age`, with
    /// at most `cap.max` connections (idle or busy) per backend.
    pub fn capped(max_idle_age: Duration, cap: Cap) -> Self {
        Pool {
            idle: Mutex::new(Idles::default()),
            max_idle_age,
            limits: Limits::new(cap),
            keeper: AtomicBool::new(false),
        }
    }

    /// A connection for a request to `addr`: the warmest idle one, or
    /// else the right to open a new one. At the cap, wait (at most the
    /// queue time) for a connection going back to the pool or closing.
    async fn checkout(&self, addr: SocketAddr) -> Result<Checkout, ForwardError> {
        if let Some(c) = self.take(addr) {
            return Ok(Checkout::Pooled(c));
        }
        let Some(backend) = self.limits.backend(addr) else {
            return Ok(Checkout::New(None));
        };
        if let Some(p) = backend.try_acquire() {
            return Ok(Checkout::New(Some(p)));
        }
        let deadline = tokio::time::Instant::now() + self.limits.cap().queue;
        loop {
            match fanout::wait(&backend, deadline, || self.take(addr)).await {
                Ok(Ok(c)) => return Ok(Checkout::Pooled(c)),
                Ok(Err(Waited::Permit(p))) => return Ok(Checkout::New(Some(p))),
                Ok(Err(Waited::Returned)) => {}
                Err(Full) => return Err(self.busy()),
            }
        }
    }

    /// The right to open a connection to `addr` that will never be pooled
    /// (an upgrade). At the cap, an idle connection to `addr` is closed to
    /// make room; with none, wait as [`Pool::checkout`] does.
    async fn permit(&self, addr: SocketAddr) -> Result<Option<Permit>, ForwardError> {
        let Some(backend) = self.limits.backend(addr) else {
            return Ok(None);
        };
        if let Some(p) = backend.try_acquire() {
            return Ok(Some(p));
        }
        let deadline = tokio::time::Instant::now() + self.limits.cap().queue;
        loop {
            // `take(..).map(drop)` closes one idle connection, freeing its
            // permit for the next round.
            match fanout::wait(&backend, deadline, || self.take(addr).map(drop)).await {
                Ok(Err(Waited::Permit(p))) => return Ok(Some(p)),
                Ok(_) => {}
                Err(Full) => return Err(self.busy()),
            }
        }
    }

    /// A request to `addr` was refused at the cap: `Some(n)` when that is
    /// worth a log line (see [`fanout::Backend::refused`]).
    pub fn refused(&self, addr: SocketAddr) -> Option<u64> {
        let backend = self.limits.backend(addr)?;
        backend.refused(std::time::Instant::now())
    }

    fn busy(&self) -> ForwardError {
        ForwardError::Busy(self.limits.cap().max)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Idles> {
        // The lock is held only for pushes, pops and readiness checks that
        // cannot panic half-way; a poisoned list is still consistent.
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The most recently used idle connection to `addr` that has not
    /// expired and on which the backend has sent nothing. The others met
    /// on the way are dropped, which closes them.
    fn take(&self, addr: SocketAddr) -> Option<Conn> {
        let now = deadline::coarse_now();
        loop {
            let c = {
                let mut idle = self.lock();
                let stack = &mut idle.stacks.iter_mut().find(|(a, _)| *a == addr)?.1;
                stack.pop()?
            };
            if now.saturating_sub(c.since) < self.max_idle_age && c.conn.silent() {
                return Some(c.conn);
            }
        }
    }

    /// Keep a connection whose exchange is complete.
    fn put(&self, addr: SocketAddr, conn: Conn) {
        let c = Idle {
            conn,
            since: deadline::coarse_now(),
        };
        let mut idle = self.lock();
        if let Some(waker) = &idle.keeper {
            if !quiet(&c.conn.io, &mut Context::from_waker(waker)) {
                return;
            }
        }
        let i = match idle.stacks.iter().position(|(a, _)| *a == addr) {
            Some(i) => i,
            None => {
                idle.stacks.push((addr, Vec::new()));
                idle.stacks.len() - 1
            }
        };
        let stack = &mut idle.stacks[i].1;
        if stack.len() >= MAX_IDLE_PER_BACKEND {
            // Full: the oldest connection (bottom) gives way.
            stack.remove(0);
        }
        stack.push(c);
        // Requests waiting at the cap may take it (checked after the push,
        // so a waiter that armed its wake-up later finds it there).
        if let Some(p) = stack.last().and_then(|c| c.conn.permit.as_ref()) {
            p.backend().pooled();
        }
    }

    /// The keeper's round: close idle connections on which anything
    /// arrived, and (`sweep`) those idle for longer than `max_idle_age`;
    /// forget backends without idle connections. Every connection left
    /// wakes `cx` when anything arrives on it.
    fn keep(&self, cx: &mut Context<'_>, sweep: bool) {
        let now = deadline::coarse_now();
        let mut idle = self.lock();
        if !idle
            .keeper
            .as_ref()
            .is_some_and(|w| w.will_wake(cx.waker()))
        {
            idle.keeper = Some(cx.waker().clone());
        }
        let mut closed = 0usize;
        for (_, stack) in idle.stacks.iter_mut() {
            stack.retain(|c| {
                let keep = (!sweep || now.saturating_sub(c.since) < self.max_idle_age)
                    && quiet(&c.conn.io, cx);
                closed += usize::from(!keep);
                keep
            });
        }
        idle.stacks.retain(|(_, stack)| !stack.is_empty());
        if closed > 0 {
            tracing::debug!(closed, "gateway: closed idle backend connections (expired, closed by the backend, or sent an answer to no request)");
        }
    }

    /// Start the keeper task, once, from inside the runtime. It watches
    /// the idle connections and sweeps expired ones, and ends when the
    /// pool is dropped.
    fn start_keeper(self: &Arc<Self>) {
        if self.keeper.swap(true, Ordering::Relaxed) {
            return;
        }
        let pool: Weak<Pool> = Arc::downgrade(self);
        let every = self.max_idle_age.max(Duration::from_millis(100));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            std::future::poll_fn(|cx| {
                let Some(pool) = pool.upgrade() else {
                    return Poll::Ready(());
                };
                let mut sweep = false;
                while tick.poll_tick(cx).is_ready() {
                    sweep = true;
                }
                pool.keep(cx, sweep);
                Poll::Pending
            })
            .await;
        });
    }

    /// Idle connections held for `addr` (tests).
    #[cfg(test)]
    pub fn idle_count(&self, addr: SocketAddr) -> usize {
        self.lock()
            .stacks
            .iter()
            .find(|(a, _)| *a == addr)
            .map_or(0, |(_, s)| s.len())
    }
}

/// Open a TCP connection to a backend, within the connect timeout.
pub async fn connect(addr: SocketAddr, timeout: Duration) -> Result<TcpStream, ForwardError> {
    let stream = match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
        Err(_) => return Err(ForwardError::Timeout(timeout)),
        Ok(Err(e)) if e.kind() == io::ErrorKind::TimedOut => {
            return Err(ForwardError::Timeout(timeout))
        }
        Ok(Err(_)) => return Err(ForwardError::Connect),
        Ok(Ok(s)) => s,
    };
    // Small requests and SSE events must not wait for Nagle.
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

/// Open a connection to `addr` that is never pooled (an upgrade): it
/// counts under the backend's cap for as long as the socket exists,
/// wherever hyper passes it on.
pub async fn connect_held(
    pool: &Pool,
    addr: SocketAddr,
    timeout: Duration,
) -> Result<Held<TcpStream>, ForwardError> {
    let permit = pool.permit(addr).await?;
    Ok(Held::new(connect(addr, timeout).await?, permit))
}

/// What [`Pool::checkout`] found.
enum Checkout {
    /// An idle connection.
    Pooled(Conn),
    /// Room for a new connection.
    New(Option<Permit>),
}

#[cfg(test)]
mod tests;
