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
//! keep-alive). A pooled connection can still have been closed by the
//! backend a moment ago; an idempotent request without a body that fails
//! on it before any response byte arrives is therefore sent again on
//! another connection (nothing was acted on, or it is safe to repeat, as
//! RFC 9110 §9.2.2 allows). Any other request gets its pooled connection
//! probed first (one non-blocking read) and is never repeated.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use http::Method;
use http_body_util::BodyExt;
use hyper::body::{Frame, Incoming, SizeHint};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

use super::body::BoxError;
use super::deadline::{self, Deadline};
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
}

impl Conn {
    /// Whether an idle connection still looks usable: the backend has not
    /// closed it and has sent nothing unasked. Costs one non-blocking read
    /// (none when tokio already knows the socket is not readable).
    fn looks_open(&self) -> bool {
        let mut probe = [0u8; 1];
        matches!(self.io.try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
    }
}

/// Idle connections per backend address.
#[derive(Debug)]
pub struct Pool {
    /// A short list: one entry per backend address, each a stack (most
    /// recently used on top, so the warmest connection is reused first).
    idle: Mutex<Vec<(SocketAddr, Vec<Idle>)>>,
    max_idle_age: Duration,
    /// The idle sweeper task has been started.
    sweeper: AtomicBool,
}

#[derive(Debug)]
struct Idle {
    conn: Conn,
    since: Duration,
}

impl Pool {
    /// An empty pool whose connections expire after `max_idle_age`.
    pub fn new(max_idle_age: Duration) -> Self {
        Pool {
            idle: Mutex::new(Vec::new()),
            max_idle_age,
            sweeper: AtomicBool::new(false),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(SocketAddr, Vec<Idle>)>> {
        // The lock is held only for pushes and pops that cannot panic
        // half-way; a poisoned list is still consistent.
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The most recently used idle connection to `addr` that has not
    /// expired. Expired ones met on the way are dropped, which closes them.
    fn take(&self, addr: SocketAddr) -> Option<Conn> {
        let now = deadline::coarse_now();
        let mut idle = self.lock();
        let stack = &mut idle.iter_mut().find(|(a, _)| *a == addr)?.1;
        while let Some(c) = stack.pop() {
            if now.saturating_sub(c.since) < self.max_idle_age {
                return Some(c.conn);
            }
        }
        None
    }

    /// Keep a connection whose exchange is complete.
    fn put(&self, addr: SocketAddr, conn: Conn) {
        let c = Idle {
            conn,
            since: deadline::coarse_now(),
        };
        let mut idle = self.lock();
        match idle.iter_mut().find(|(a, _)| *a == addr) {
            Some((_, stack)) if stack.len() >= MAX_IDLE_PER_BACKEND => {
                // Full: the oldest connection (bottom) gives way.
                stack.remove(0);
                stack.push(c);
            }
            Some((_, stack)) => stack.push(c),
            None => idle.push((addr, vec![c])),
        }
    }

    /// Close connections idle for longer than `max_idle_age`, and forget
    /// backends without idle connections.
    fn sweep(&self) {
        let now = deadline::coarse_now();
        let mut idle = self.lock();
        for (_, stack) in idle.iter_mut() {
            stack.retain(|c| now.saturating_sub(c.since) < self.max_idle_age);
        }
        idle.retain(|(_, stack)| !stack.is_empty());
    }

    /// Start the task that sweeps idle connections, once, from inside the
    /// runtime. It ends when the pool is dropped.
    fn start_sweeper(self: &Arc<Self>) {
        if self.sweeper.swap(true, Ordering::Relaxed) {
            return;
        }
        let pool: Weak<Pool> = Arc::downgrade(self);
        let every = self.max_idle_age.max(Duration::from_millis(100));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                match pool.upgrade() {
                    Some(p) => p.sweep(),
                    None => return,
                }
            }
        });
    }

    /// Idle connections held for `addr` (tests).
    #[cfg(test)]
    pub fn idle_count(&self, addr: SocketAddr) -> usize {
        self.lock()
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

/// One request ready to go: its encoded head and its body, if it has one.
pub struct Outgoing<'a> {
    pub method: Method,
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
    // Repeating the request is safe only if nothing was consumed from the
    // client (no body) and the method says a repeat changes nothing.
    let repeatable = framing == RequestFraming::None && method.is_idempotent();
    let mut body = body.filter(|_| framing != RequestFraming::None);
    let (mut conn, complete) = loop {
        let (mut conn, pooled) = match pool.take(addr) {
            Some(c) => (c, true),
            None => {
                pool.start_sweeper();
                let io = connect(addr, cfg.connect).await?;
                let conn = Conn {
                    io,
                    buf: BytesMut::with_capacity(READ_CHUNK),
                    timer: None,
                };
                (conn, false)
            }
        };
        if pooled && !repeatable && !conn.looks_open() {
            continue;
        }
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
            () = tokio::time::sleep(cfg.response) => return Err(ForwardError::Timeout(cfg.response).into()),
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
