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

use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::task::{ready, Context, Poll, Waker};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use http::Method;
use http_body_util::BodyExt;
use hyper::body::{Frame, Incoming, SizeHint};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

use super::body::BoxError;
use super::deadline::{self, Deadline};
use super::fanout::{self, Cap, Full, Held, Limits, Permit, Waited};
use super::h1::{self, Chunked, Decoded, RequestFraming, ResponseFraming};
use super::proxy::{ForwardError, UpstreamConfig};

/// Idle connections kept per backend; more are closed when they come back.
/// Matches a generous nginx `keepalive` setting: enough for every client
/// connection of a busy container to find a warm backend connection.
const MAX_IDLE_PER_BACKEND: usize = 256;

/// Read buffer growth step: one small response fits in one read.
const READ_CHUNK: usize = 16 * 1024;
/// Read size for the rest of a long body of known length.
const BIG_READ: usize = 64 * 1024;

/// One connection to a backend, with bytes read but not yet used.
#[derive(Debug)]
pub struct Conn {
    io: TcpStream,
    buf: BytesMut,
    /// The response timeout, kept with the connection and moved for each
    /// request (see [`Deadline`]).
    timer: Option<Deadline>,
    /// Its place under the backend's connection cap, given back when the
    /// connection is dropped (`None`: no cap).
    permit: Option<Permit>,
}

impl Conn {
    /// Whether the backend has sent nothing since the connection went
    /// idle: not a byte, not a close. Asks the kernel (one `recv` with
    /// `MSG_PEEK`), not tokio's readiness, which lags until the runtime
    /// next polls for events.
    fn silent(&self) -> bool {
        let mut probe = [0u8; 1];
        // SAFETY: `recv` writes at most 1 byte into `probe`, which lives
        // across the call; the descriptor is owned by `self.io` and open.
        let n = unsafe {
            libc::recv(
                self.io.as_raw_fd(),
                probe.as_mut_ptr().cast(),
                1,
                libc::MSG_PEEK | libc::MSG_DONTWAIT,
            )
        };
        n < 0 && io::Error::last_os_error().kind() == io::ErrorKind::WouldBlock
    }
}

/// Whether an idle connection is still quiet; if so, `cx` is woken when
/// anything arrives on it. tokio's readiness can say "readable" after a
/// read that happened to empty the socket exactly: a read then tells, and
/// clears it.
fn quiet(io: &TcpStream, cx: &mut Context<'_>) -> bool {
    // A stale "readable" is cleared by the first read; a second one means
    // the backend did send something meanwhile.
    for _ in 0..2 {
        match io.poll_read_ready(cx) {
            Poll::Pending => return true,
            Poll::Ready(Err(_)) => return false,
            Poll::Ready(Ok(())) => {
                let mut probe = [0u8; 1];
                match io.try_read(&mut probe) {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    // A byte (an answer to no request), EOF, or an error.
                    _ => return false,
                }
            }
        }
    }
    false
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

/// One request ready to go: its encoded head and its body, if it has one.
pub struct Outgoing<'a> {
    pub method: Method,
    /// The head, and (from the front end) the whole body after it.
    pub head: &'a [u8],
    pub framing: RequestFraming,
    /// The client's body; `None` (or ignored) when `framing` says none.
    pub body: Option<Incoming>,
}

/// How one attempt failed.
struct Failed {
    error: ForwardError,
    /// Nothing of a response had arrived: on a pooled connection that the
    /// backend had just closed, the request can be sent again if it is
    /// safe to repeat.
    before_response: bool,
}

impl From<ForwardError> for Failed {
    fn from(error: ForwardError) -> Self {
        Failed {
            error,
            before_response: false,
        }
    }
}

/// Send `req` to `addr` on a pooled or new connection and read the
/// response head; the response body then streams from the backend.
///
/// The head is handed to `take_head` parsed in place, with its framing
/// decided: hyper's server path builds a `HeaderMap` from it, the front
/// end writes the client's head from it directly.
pub async fn exchange<T>(
    pool: &Arc<Pool>,
    cfg: &UpstreamConfig,
    addr: SocketAddr,
    req: Outgoing<'_>,
    take_head: impl FnOnce(&h1::RawHead<'_, '_>, h1::Decided) -> Result<T, h1::ParseError>,
) -> Result<(T, UpstreamBody), ForwardError> {
    let Outgoing {
        method,
        head,
        framing,
        body,
    } = req;
    // Repeating the request is safe only if it can be sent whole again
    // (nothing streamed from the client) and the method says a repeat
    // changes nothing.
    let mut body = body.filter(|_| framing != RequestFraming::None);
    let repeatable = body.is_none() && method.is_idempotent();
    let (mut conn, complete) = loop {
        let (mut conn, pooled) = match pool.checkout(addr).await? {
            Checkout::Pooled(c) => (c, true),
            Checkout::New(permit) => {
                pool.start_keeper();
                let io = connect(addr, cfg.connect).await?;
                let conn = Conn {
                    io,
                    buf: BytesMut::with_capacity(READ_CHUNK),
                    timer: None,
                    permit,
                };
                (conn, false)
            }
        };
        match send(&mut conn, head, framing, body.take(), cfg).await {
            Ok(complete) => break (conn, complete),
            Err(f) if f.before_response && pooled && repeatable => {
                tracing::debug!(%addr, error = %f.error, "gateway: pooled connection closed under the request; sending it again");
            }
            Err(f) => return Err(f.error),
        }
    };
    // `send` returned with a whole final head at the start of the buffer.
    let mut slots = h1::header_slots::<{ h1::MAX_HEADERS }>();
    let taken = h1::parse_response(&conn.buf, &mut slots).and_then(|parsed| {
        let raw = parsed.ok_or(h1::ParseError::Malformed)?;
        let decided = h1::decide(&method, &raw)?;
        Ok((raw.bytes.len(), decided, take_head(&raw, decided)?))
    });
    let (len, decided, out) = match taken {
        Ok(t) => t,
        Err(e) => {
            tracing::debug!(%addr, error = %e, "gateway: unreadable response head");
            return Err(ForwardError::Broken);
        }
    };
    conn.buf.advance(len);
    let reuse = (decided.keep_alive && complete).then(|| (pool.clone(), addr));
    Ok((out, UpstreamBody::new(conn, decided.framing, reuse)))
}

/// Write the request and wait for a final response head, which is then
/// whole at the start of `conn.buf`. `Ok(complete)` says the whole request
/// went out (an early error answer cuts it short, and such a connection
/// is not reused).
async fn send(
    conn: &mut Conn,
    head: &[u8],
    framing: RequestFraming,
    body: Option<Incoming>,
    cfg: &UpstreamConfig,
) -> Result<bool, Failed> {
    let mut early = false;
    let mut complete = write_watching(conn, head, cfg, &mut early).await?;
    if complete {
        if let Some(body) = body {
            complete = send_body(conn, framing, body, cfg, &mut early).await?;
        }
    }
    if !early {
        read_head_within(conn, cfg.response).await?;
    }
    Ok(complete)
}

/// Stream the client's body to the backend. `Ok(false)`: the backend
/// answered with an error (or closed) before the body was all sent.
async fn send_body(
    conn: &mut Conn,
    framing: RequestFraming,
    mut body: Incoming,
    cfg: &UpstreamConfig,
    early: &mut bool,
) -> Result<bool, Failed> {
    let limit = cfg.max_body;
    let chunked = framing == RequestFraming::Chunked;
    let mut sent: u64 = 0;
    loop {
        // The client's pace sets the upload's; a client that stalls for
        // the whole response timeout gives up its backend connection.
        let frame = tokio::select! {
            f = body.frame() => f,
            r = conn.io.readable(), if !*early => {
                r.map_err(broken)?;
                if answered(conn, cfg, early).await? {
                    continue;
                }
                return Ok(false);
            }
            // Waiting on the client's body, not on the backend: its fault.
            () = tokio::time::sleep(cfg.response) => return Err(ForwardError::ClientStalled(cfg.response).into()),
        };
        let Some(frame) = frame else { break };
        // The client's body broke its own framing (a bad chunk) or the
        // client left: its fault, not the backend's.
        let frame = frame.map_err(|_| Failed::from(ForwardError::ClientBody))?;
        let Ok(data) = frame.into_data() else {
            continue; // request trailers are not forwarded
        };
        if data.is_empty() {
            continue;
        }
        sent += data.len() as u64;
        if limit > 0 && sent > limit {
            return Err(ForwardError::TooLarge(limit).into());
        }
        let all = if chunked {
            let mut piece = Vec::with_capacity(data.len() + 12);
            piece.extend_from_slice(h1::chunk_header(data.len()).as_bytes());
            piece.extend_from_slice(&data);
            piece.extend_from_slice(b"\r\n");
            write_watching(conn, &piece, cfg, early).await?
        } else {
            write_watching(conn, &data, cfg, early).await?
        };
        if !all {
            return Ok(false);
        }
    }
    if chunked {
        return write_watching(conn, h1::CHUNKED_END, cfg, early).await;
    }
    Ok(true)
}

fn broken<E>(_: E) -> Failed {
    Failed::from(ForwardError::Broken)
}

/// A write failed: the backend has not answered anything yet (on a pooled
/// connection, it had closed it).
fn unsent<E>(_: E) -> Failed {
    Failed {
        error: ForwardError::Broken,
        before_response: true,
    }
}

/// Write all of `data`. While no answer has come, the backend speaking
/// first is noticed: see [`answered`]; `Ok(false)` means stop sending. A
/// backend that neither reads nor answers for the response timeout is an
/// error.
async fn write_watching(
    conn: &mut Conn,
    mut data: &[u8],
    cfg: &UpstreamConfig,
    early: &mut bool,
) -> Result<bool, Failed> {
    while !data.is_empty() {
        match conn.io.try_write(data) {
            Ok(n) => data = &data[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                let watch = !*early;
                tokio::select! {
                    r = conn.io.writable() => r.map_err(unsent)?,
                    r = conn.io.readable(), if watch => {
                        r.map_err(broken)?;
                        if !answered(conn, cfg, early).await? {
                            return Ok(false);
                        }
                    }
                    () = tokio::time::sleep(cfg.response) => {
                        return Err(ForwardError::Timeout(cfg.response).into())
                    }
                }
            }
            Err(e) => return Err(unsent(e)),
        }
    }
    Ok(true)
}

/// The backend spoke while the request was still going out: wait for its
/// answer's head (`early` is then set). A success on a connection it keeps
/// open means it takes (or discards) the rest of the body, so sending goes
/// on (`true`), as RFC 9112 §9.3 asks of clients; an error answer, or one
/// that closes, stops the upload (`false`), and the client gets the answer
/// at once.
async fn answered(conn: &mut Conn, cfg: &UpstreamConfig, early: &mut bool) -> Result<bool, Failed> {
    read_head_within(conn, cfg.response).await?;
    *early = true;
    let mut slots = h1::header_slots::<{ h1::MAX_HEADERS }>();
    match h1::parse_response(&conn.buf, &mut slots) {
        Ok(Some(h)) => Ok(h.keep_alive && h.status.as_u16() < 400),
        _ => Err(ForwardError::Broken.into()),
    }
}

/// [`read_head`], given up after `timeout` (a 504).
async fn read_head_within(conn: &mut Conn, timeout: Duration) -> Result<(), Failed> {
    let mut timer = match conn.timer.take() {
        Some(mut t) => {
            t.reset(timeout);
            t
        }
        None => Deadline::after(timeout),
    };
    let head = tokio::select! {
        biased;
        h = read_head(conn) => h,
        () = &mut timer => Err(ForwardError::Timeout(timeout).into()),
    };
    conn.timer = Some(timer);
    head
}

/// Read until a final response head is whole at the start of `conn.buf`;
/// interim 1xx responses (100 Continue, 103 Early Hints) are skipped. The
/// head is parsed once, by the caller, when it is all there.
async fn read_head(conn: &mut Conn) -> Result<(), Failed> {
    let mut received = false;
    loop {
        if h1::head_complete(&conn.buf) {
            match h1::peek_status(&conn.buf) {
                // Upgrades never come this way: a 101 here is not HTTP/1.1
                // we can relay.
                Some(101) => return Err(ForwardError::Broken.into()),
                Some(100..=199) => {
                    let mut slots = h1::header_slots::<{ h1::MAX_HEADERS }>();
                    match h1::parse_response(&conn.buf, &mut slots) {
                        Ok(Some(h)) => {
                            let len = h.bytes.len();
                            conn.buf.advance(len);
                            received = true;
                            continue;
                        }
                        Ok(None) => {}
                        Err(_) => return Err(ForwardError::Broken.into()),
                    }
                }
                _ => return Ok(()),
            }
        } else if conn.buf.len() >= h1::MAX_HEAD {
            tracing::debug!("gateway: response head from backend too large");
            return Err(ForwardError::Broken.into());
        }
        if conn.buf.capacity() - conn.buf.len() < 1024 {
            conn.buf.reserve(READ_CHUNK);
        }
        match conn.io.read_buf(&mut conn.buf).await {
            Ok(0) | Err(_) => {
                return Err(Failed {
                    error: ForwardError::Broken,
                    before_response: !received && conn.buf.is_empty(),
                })
            }
            Ok(_) => {}
        }
    }
}

/// Where a response body is in its framing.
#[derive(Debug, Clone, Copy)]
enum State {
    Length(u64),
    Chunked(Chunked),
    UntilClose,
    Done,
}

/// A backend response body, read from the backend socket as the client
/// connection asks for frames. Its connection goes back to the pool when
/// the body has been read to its end; dropped early (the client went
/// away), the connection is closed with it.
pub struct UpstreamBody {
    conn: Option<Conn>,
    state: State,
    /// Where the connection goes when the body is complete (`None`: it is
    /// closed instead).
    reuse: Option<(Arc<Pool>, SocketAddr)>,
}

impl UpstreamBody {
    fn new(conn: Conn, framing: ResponseFraming, reuse: Option<(Arc<Pool>, SocketAddr)>) -> Self {
        let state = match framing {
            ResponseFraming::Empty | ResponseFraming::Length(0) => State::Done,
            ResponseFraming::Length(n) => State::Length(n),
            ResponseFraming::Chunked => State::Chunked(Chunked::Size),
            ResponseFraming::UntilClose => State::UntilClose,
        };
        let mut body = UpstreamBody {
            conn: Some(conn),
            state,
            reuse,
        };
        if matches!(body.state, State::Done) {
            body.finish();
        }
        body
    }

    /// The body is complete: pool the connection if it is clean.
    fn finish(&mut self) {
        self.state = State::Done;
        let conn = self.conn.take();
        if let (Some(conn), Some((pool, addr))) = (conn, self.reuse.take()) {
            // A byte past the body's end means the backend and we disagree
            // about framing: never reuse such a connection.
            if conn.buf.is_empty() {
                let mut conn = conn;
                // An idle connection keeps a small buffer, not the large
                // one a download grew.
                if conn.buf.capacity() > READ_CHUNK {
                    conn.buf = BytesMut::new();
                }
                pool.put(addr, conn);
            }
        }
    }

    /// When the whole of a body of known length is already in the buffer
    /// (a small response arrives with its head), append it to `out`, end
    /// the body and say so; otherwise leave everything as it is. Copying
    /// it spares cutting a shared `Bytes` from the buffer for one frame.
    pub fn take_whole_into(&mut self, out: &mut Vec<u8>, max: usize) -> bool {
        match (self.state, self.conn.as_mut()) {
            (State::Done, _) => true,
            (State::Length(left), Some(conn)) => {
                let Ok(n) = usize::try_from(left) else {
                    return false;
                };
                if n > max || conn.buf.len() < n {
                    return false;
                }
                out.extend_from_slice(&conn.buf[..n]);
                conn.buf.advance(n);
                self.finish();
                true
            }
            _ => false,
        }
    }

    /// The connection broke or lied: close it.
    fn fail(&mut self, why: impl Into<BoxError>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.state = State::Done;
        self.conn = None;
        self.reuse = None;
        Poll::Ready(Some(Err(why.into())))
    }

    /// The next data already in the buffer, if the framing allows one.
    fn buffered(&mut self) -> Result<Option<Bytes>, h1::ParseError> {
        let Some(conn) = self.conn.as_mut() else {
            return Ok(None);
        };
        match &mut self.state {
            State::Done => Ok(None),
            State::Length(left) => {
                if conn.buf.is_empty() {
                    return Ok(None);
                }
                let take = usize::try_from(*left)
                    .unwrap_or(usize::MAX)
                    .min(conn.buf.len());
                *left -= take as u64;
                let data = conn.buf.split_to(take).freeze();
                if *left == 0 {
                    self.finish();
                }
                Ok(Some(data))
            }
            State::Chunked(d) => match d.decode(&mut conn.buf)? {
                Decoded::Data(b) => Ok(Some(b)),
                Decoded::NeedMore => Ok(None),
                Decoded::Done => {
                    self.finish();
                    Ok(None)
                }
            },
            State::UntilClose => Ok((!conn.buf.is_empty()).then(|| conn.buf.split().freeze())),
        }
    }
}

impl hyper::body::Body for UpstreamBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        loop {
            match this.buffered() {
                Ok(Some(data)) => return Poll::Ready(Some(Ok(Frame::data(data)))),
                Ok(None) => {}
                Err(e) => return this.fail(e),
            }
            if matches!(this.state, State::Done) {
                return Poll::Ready(None);
            }
            let Some(conn) = this.conn.as_mut() else {
                return Poll::Ready(None);
            };
            if conn.buf.capacity() - conn.buf.len() < 1024 {
                // Large bodies are read in larger pieces (fewer syscalls);
                // memory stays bounded, as hyper writes each frame out
                // before it asks for the next.
                let want = match this.state {
                    State::Length(n) => usize::try_from(n)
                        .unwrap_or(BIG_READ)
                        .clamp(READ_CHUNK, BIG_READ),
                    _ => READ_CHUNK,
                };
                conn.buf.reserve(want);
            }
            match ready!(tokio_util::io::poll_read_buf(
                Pin::new(&mut conn.io),
                cx,
                &mut conn.buf
            )) {
                Ok(0) if matches!(this.state, State::UntilClose) => {
                    // The close is the end of this body; the connection is
                    // spent.
                    this.reuse = None;
                    this.conn = None;
                    this.state = State::Done;
                    return Poll::Ready(None);
                }
                Ok(0) => {
                    return this
                        .fail("the backend closed the connection before the end of the body")
                }
                Ok(_) => {}
                Err(e) => return this.fail(e),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.state, State::Done)
    }

    fn size_hint(&self) -> SizeHint {
        match self.state {
            State::Done => SizeHint::with_exact(0),
            State::Length(n) => SizeHint::with_exact(n),
            _ => SizeHint::default(),
        }
    }
}

/// Box an upgrade response's body (hyper's client) like every other.
pub fn boxed_incoming(body: Incoming) -> super::body::Body {
    body.map_err(BoxError::from).boxed_unsync().into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// A pool holding one idle connection to a plain socket, and that
    /// socket's other end (the "backend").
    async fn pooled(pool: &Pool) -> (SocketAddr, std::net::TcpStream) {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let io = TcpStream::connect(addr).await.unwrap();
        let (peer, _) = l.accept().unwrap();
        let conn = Conn {
            io,
            buf: BytesMut::new(),
            timer: None,
            permit: None,
        };
        pool.put(addr, conn);
        (addr, peer)
    }

    /// A pool with at most one connection per backend, waiting `queue`.
    fn one_per_backend(queue: Duration) -> Arc<Pool> {
        Arc::new(Pool::capped(Duration::from_secs(60), Cap { max: 1, queue }))
    }

    /// A connection to `addr` holding a permit, and the backend's end.
    async fn permitted(pool: &Pool, l: &std::net::TcpListener) -> (Conn, std::net::TcpStream) {
        let addr = l.local_addr().unwrap();
        let permit = pool.permit(addr).await.unwrap();
        assert!(permit.is_some(), "a capped pool hands out permits");
        let io = TcpStream::connect(addr).await.unwrap();
        let (peer, _) = l.accept().unwrap();
        let conn = Conn {
            io,
            buf: BytesMut::new(),
            timer: None,
            permit,
        };
        (conn, peer)
    }

    #[tokio::test]
    async fn at_the_cap_a_request_takes_a_connection_going_back_to_the_pool() {
        let pool = one_per_backend(Duration::from_secs(10));
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let (busy, _peer) = permitted(&pool, &l).await;
        let waiter = {
            let pool = pool.clone();
            tokio::spawn(
                async move { matches!(pool.checkout(addr).await, Ok(Checkout::Pooled(_))) },
            )
        };
        let b = pool.limits.backend(addr).unwrap();
        while b.available() > 0 || !waiting(&b) {
            tokio::task::yield_now().await;
        }
        // Its exchange done, the connection goes back: the waiter has it,
        // rather than waiting for it to expire.
        pool.put(addr, busy);
        assert!(
            waiter.await.unwrap(),
            "the waiter reused the returned connection"
        );
        assert_eq!(b.available(), 1, "its permit came back when it was dropped");
    }

    /// Whether a request is waiting for `b`.
    fn waiting(b: &fanout::Backend) -> bool {
        b.waiting_now() > 0
    }

    #[tokio::test]
    async fn at_the_cap_an_upgrade_closes_an_idle_connection_to_make_room() {
        let pool = one_per_backend(Duration::from_secs(10));
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let (idle, mut peer) = permitted(&pool, &l).await;
        pool.put(addr, idle);
        let permit = tokio::time::timeout(Duration::from_secs(10), pool.permit(addr))
            .await
            .expect("no wait for the queue time")
            .unwrap();
        assert!(permit.is_some());
        assert_eq!(pool.idle_count(addr), 0, "the idle connection was closed");
        let mut rest = Vec::new();
        peer.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        std::io::Read::read_to_end(&mut peer, &mut rest).unwrap();
    }

    #[tokio::test]
    async fn at_the_cap_past_the_queue_time_a_request_is_refused_and_holds_nothing() {
        let pool = one_per_backend(Duration::from_millis(50));
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let (busy, _peer) = permitted(&pool, &l).await;
        assert!(matches!(
            pool.checkout(addr).await,
            Err(ForwardError::Busy(1))
        ));
        assert!(matches!(
            pool.permit(addr).await,
            Err(ForwardError::Busy(1))
        ));
        let b = pool.limits.backend(addr).unwrap();
        assert_eq!((b.available(), b.waiting_now()), (0, 0));
        // A connection that ends in any way (here: dropped after an error)
        // gives its place back.
        drop(busy);
        assert!(matches!(
            pool.checkout(addr).await,
            Ok(Checkout::New(Some(_)))
        ));
    }

    #[tokio::test]
    async fn a_byte_or_a_close_just_before_reuse_keeps_the_connection_out_of_use() {
        // Issue 11: no task switch happens between the backend's write and
        // the reuse, so only the check at reuse can see it.
        let pool = Pool::new(Duration::from_secs(60));
        let (addr, mut peer) = pooled(&pool).await;
        let again = pool.take(addr).expect("a quiet connection is reused");
        pool.put(addr, again);
        peer.write_all(b"H").unwrap();
        assert!(pool.take(addr).is_none(), "reused after a stray byte");

        let (addr, peer) = pooled(&pool).await;
        drop(peer);
        assert!(pool.take(addr).is_none(), "reused after the backend closed");
    }

    #[tokio::test]
    async fn the_keeper_closes_an_idle_connection_on_which_anything_arrives() {
        let pool = Arc::new(Pool::new(Duration::from_secs(60)));
        pool.start_keeper();
        let (addr, mut peer) = pooled(&pool).await;
        let (quiet_addr, _quiet_peer) = pooled(&pool).await;
        // Let the keeper run once and take charge of both.
        tokio::task::yield_now().await;
        peer.write_all(b"HTTP/1.1 200 OK\r\n\r\n").unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while pool.idle_count(addr) > 0 {
            assert!(std::time::Instant::now() < deadline, "still pooled");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // The backend sees the close (a reset: the answer is left unread);
        // the quiet connection stays.
        peer.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut rest = Vec::new();
        if let Err(e) = std::io::Read::read_to_end(&mut peer, &mut rest) {
            assert_eq!(e.kind(), io::ErrorKind::ConnectionReset, "{e}");
        }
        assert_eq!(pool.idle_count(quiet_addr), 1);
    }
}
