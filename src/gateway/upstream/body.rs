//! A backend's response body, read from its socket frame by frame.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use hyper::body::{Frame, SizeHint};

use super::{Conn, Pool, BIG_READ, READ_CHUNK};
use crate::gateway::h1::{self, Chunked, Decoded, ResponseFraming};

/// Errors carried by a body stream.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

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
    pub(super) fn new(
        conn: Conn,
        framing: ResponseFraming,
        reuse: Option<(Arc<Pool>, SocketAddr)>,
    ) -> Self {
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
