//! One request and its response head, on a pooled or new connection.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use http::Method;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tokio::io::AsyncReadExt;

use super::{
    connect, Checkout, Conn, ForwardError, Pool, UpstreamBody, UpstreamConfig, READ_CHUNK,
};
use crate::gateway::deadline::Deadline;
use crate::gateway::h1::{self, RequestFraming};

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
///
/// Once the backend has answered, its answer is what the client gets,
/// whatever stops the rest of the request afterwards (the backend no
/// longer reading it, the client no longer sending it): on a connection
/// then not reused, instead of a 504 or 408 for a request the backend
/// already answered.
async fn send(
    conn: &mut Conn,
    head: &[u8],
    framing: RequestFraming,
    body: Option<Incoming>,
    cfg: &UpstreamConfig,
) -> Result<bool, Failed> {
    let mut early = false;
    let sent = async {
        let complete = write_watching(conn, head, cfg, &mut early).await?;
        match body {
            Some(body) if complete => send_body(conn, framing, body, cfg, &mut early).await,
            _ => Ok(complete),
        }
    }
    .await;
    let complete = match sent {
        Ok(complete) => complete,
        Err(_) if early => false,
        Err(f) => return Err(f),
    };
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
