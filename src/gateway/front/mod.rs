//! The client side of the gateway's own HTTP/1.1 front end, as pure
//! functions: which requests it serves itself, and the response head it
//! writes. The connection loop around them is `conn`.
//!
//! # Why a front end of our own
//!
//! Most traffic through a Space is plain: a bodiless HTTP/1.1 request that
//! a rule forwards to a backend. For those, hyper's server costs more than
//! the proxying itself: it builds a `HeaderMap` and a `Request` per
//! request, shares its read buffer with the header values, and arms a
//! timer per request. The front end parses the head in place (httparse
//! slices of the connection's buffer), writes the backend's request head
//! straight from those slices, and writes the response head from one
//! reused buffer.
//!
//! Small request bodies of a declared length (up to [`MAX_BODY`]; a chat
//! completion's JSON) are forwarded by the front end too, once the whole
//! body is in its buffer: with the head, in one write to the backend.
//!
//! Everything else goes to hyper, which then serves the rest of the
//! connection: chunked or larger bodies, a body still on its way when the
//! head is complete, `Expect`, upgrades (WebSocket),
//! HTTP/1.0, absolute-form targets, HTTP/2, the admin API and page,
//! redirects, the restoring page, and any head the front end does not
//! understand (hyper answers malformed ones with its own 400/431). So the
//! front end only ever has to be right about the simple case, and hyper's
//! tested code keeps the rest.

use std::cell::RefCell;
use std::time::{SystemTime, UNIX_EPOCH};

use http::{header, HeaderMap, StatusCode};

use super::h1::{Decided, RawHead, ResponseFraming};
use super::limits;

/// Headers a request head may carry (see [`super::limits`]).
pub const MAX_HEADERS: usize = limits::MAX_HEADERS;
/// The largest request head the front end waits for (see
/// [`super::limits`]).
pub const MAX_HEAD: usize = limits::MAX_HEAD;

/// The largest request body the front end forwards itself (declared with
/// `Content-Length`); a larger one is streamed by hyper's side.
pub const MAX_BODY: u64 = 64 * 1024;

/// Space for one request's parsed headers.
pub type HeaderSlots<'b> = super::h1::HeaderSlots<'b, MAX_HEADERS>;

/// An empty set of header slots.
pub fn header_slots<'b>() -> HeaderSlots<'b> {
    super::h1::header_slots()
}

/// What the front end makes of the bytes received so far.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed<'b, 'h> {
    /// The head is not complete yet: read more.
    Partial,
    /// Not a request the front end serves: hand the connection to hyper.
    Other,
    /// A plain request the front end may forward itself.
    Plain(Plain<'b, 'h>),
}

/// A plain request: HTTP/1.1, origin-form target, one Host, no body or
/// one of a length declared by a single `Content-Length` of at most
/// [`MAX_BODY`], no `Transfer-Encoding`, no `Expect`, no upgrade, and a
/// `Connection` header (if any) naming only `keep-alive` or `close`.
#[derive(Debug, PartialEq, Eq)]
pub struct Plain<'b, 'h> {
    /// Bytes of the head (request line, headers, blank line).
    pub len: usize,
    pub method: &'b str,
    /// The request target as sent (`/path?query`).
    pub target: &'b str,
    pub host: &'b str,
    pub headers: &'h [httparse::Header<'b>],
    /// The body's declared length (`Content-Length`), if any; the body
    /// follows the head's `len` bytes.
    pub content_length: Option<u64>,
    /// The client asked to close the connection after this response.
    pub close: bool,
    /// The client prefers HTML (an error page is then HTML, not JSON).
    pub html: bool,
}

impl Plain<'_, '_> {
    /// The path part of the target.
    pub fn path(&self) -> &str {
        self.target.split_once('?').map_or(self.target, |(p, _)| p)
    }

    /// The query string without `?`, if any.
    pub fn query(&self) -> Option<&str> {
        self.target.split_once('?').map(|(_, q)| q)
    }
}

/// Parse the request head at the start of `buf` and decide whether the
/// front end serves it.
pub fn parse<'b, 'h>(buf: &'b [u8], slots: &'h mut HeaderSlots<'b>) -> Parsed<'b, 'h> {
    let mut req = httparse::Request::new(&mut []);
    let len = match req.parse_with_uninit_headers(buf, slots) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => return Parsed::Partial,
        // Too long, too many headers, malformed, HTTP/2's preface: hyper
        // gives each its proper answer.
        _ => return Parsed::Other,
    };
    let (Some(method), Some(target), Some(1)) = (req.method, req.path, req.version) else {
        return Parsed::Other;
    };
    // Over the limits: hyper's side refuses it (`limits::parsed`).
    let line = limits::request_line_len(method, target.len());
    if limits::complete(line, req.headers.len(), len).is_some() {
        return Parsed::Other;
    }
    // Origin-form only, and only the bytes a URI may hold: anything odd
    // gets hyper's stricter parse (and its 400).
    if !target.starts_with('/') || !target.bytes().all(|b| (0x21..0x7f).contains(&b)) {
        return Parsed::Other;
    }
    if method == "CONNECT" {
        return Parsed::Other;
    }
    let mut host = None;
    let mut content_length = None;
    let mut close = false;
    let mut html = false;
    for h in req.headers.iter() {
        let name = h.name.as_bytes();
        let is = |want: &[u8]| name.eq_ignore_ascii_case(want);
        match name.len() {
            4 if is(b"host") => {
                if host.is_some() {
                    return Parsed::Other;
                }
                host = Some(h.value);
            }
            6 if is(b"accept") => {
                html |= h.value.windows(9).any(|w| w == b"text/html");
            }
            // The promise of a body, or one of a length not declared.
            6 if is(b"expect") => return Parsed::Other,
            17 if is(b"transfer-encoding") => return Parsed::Other,
            // One length, digits only, small: anything else (a list, a
            // second header, a sign) is hyper's to judge.
            14 if is(b"content-length") => match (content_length, small_length(h.value)) {
                (None, Some(n)) => content_length = Some(n),
                _ => return Parsed::Other,
            },
            7 if is(b"upgrade") => return Parsed::Other,
            10 if is(b"connection") => {
                for token in h.value.split(|b| *b == b',') {
                    let token = token.trim_ascii();
                    if token.eq_ignore_ascii_case(b"close") {
                        close = true;
                    } else if !token.eq_ignore_ascii_case(b"keep-alive") && !token.is_empty() {
                        // Names more hop-by-hop headers, or `upgrade`.
                        return Parsed::Other;
                    }
                }
            }
            _ => {}
        }
    }
    let Some(host) = host.and_then(|h| std::str::from_utf8(h).ok()) else {
        return Parsed::Other;
    };
    Parsed::Plain(Plain {
        len,
        method,
        target,
        host,
        headers: req.headers,
        content_length,
        close,
        html,
    })
}

/// A `Content-Length` value of at most [`MAX_BODY`]: 1 to 6 ASCII digits.
fn small_length(value: &[u8]) -> Option<u64> {
    if value.is_empty() || value.len() > 6 || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n = value.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
    (n <= MAX_BODY).then_some(n)
}

/// How the response body goes out to the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyOut {
    /// No body (HEAD, 204, 304): the headers say what they say.
    None,
    /// As many bytes as the `Content-Length` header says.
    Length,
    /// Chunked transfer coding: one chunk per body frame, so a streamed
    /// response (SSE) is passed on event by event.
    Chunked,
}

/// What the head adds to frame the body.
enum Add {
    /// Nothing: no body, or the headers already carry its length.
    Nothing(BodyOut),
    /// `Content-Length: n`.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
}

/// Encode a response head into `out` (cleared first): status line,
/// `headers`, the framing header, `Date` when the headers have none (as
/// hyper does), and `Connection: close` when `close`.
fn encode_head<'a>(
    out: &mut Vec<u8>,
    status: StatusCode,
    headers: impl IntoIterator<Item = (&'a [u8], &'a [u8])>,
    add: Add,
    close: bool,
) -> BodyOut {
    out.clear();
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    let mut dated = false;
    for (name, value) in headers {
        dated |= name.eq_ignore_ascii_case(b"date");
        out.extend_from_slice(name);
        out.extend_from_slice(b": ");
        out.extend_from_slice(value);
        out.extend_from_slice(b"\r\n");
    }
    let body = match add {
        Add::Nothing(body) => body,
        Add::Length(n) => {
            out.extend_from_slice(b"content-length: ");
            out.extend_from_slice(n.to_string().as_bytes());
            out.extend_from_slice(b"\r\n");
            BodyOut::Length
        }
        Add::Chunked => {
            out.extend_from_slice(b"transfer-encoding: chunked\r\n");
            BodyOut::Chunked
        }
    };
    if !dated {
        out.extend_from_slice(b"date: ");
        with_date(|d| out.extend_from_slice(d));
        out.extend_from_slice(b"\r\n");
    }
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    body
}

/// Encode the head of a response the gateway makes itself (an error
/// page). `exact` is the body's length when known up front.
pub fn encode_response_head(
    out: &mut Vec<u8>,
    status: StatusCode,
    headers: &HeaderMap,
    head_request: bool,
    exact: Option<u64>,
    close: bool,
) -> BodyOut {
    let s = status.as_u16();
    let add = if head_request || s == 204 || s == 304 || (100..200).contains(&s) {
        Add::Nothing(BodyOut::None)
    } else if headers.contains_key(header::CONTENT_LENGTH) {
        Add::Nothing(BodyOut::Length)
    } else if let Some(n) = exact {
        Add::Length(n)
    } else {
        Add::Chunked
    };
    let pairs = headers
        .iter()
        .map(|(n, v)| (n.as_str().as_bytes(), v.as_bytes()));
    encode_head(out, status, pairs, add, close)
}

/// Encode the client's head of a backend's response, straight from the
/// backend's head: its relayed headers as they are, and the framing
/// `decided` for its body (a body of unknown length is chunked).
pub fn encode_relayed_head(
    out: &mut Vec<u8>,
    head: &RawHead<'_, '_>,
    decided: Decided,
    close: bool,
) -> BodyOut {
    let add = match decided.framing {
        ResponseFraming::Empty => Add::Nothing(BodyOut::None),
        // The length is among the relayed headers.
        ResponseFraming::Length(_) => Add::Nothing(BodyOut::Length),
        ResponseFraming::Chunked | ResponseFraming::UntilClose => Add::Chunked,
    };
    encode_head(out, head.status, head.relayed_headers(), add, close)
}

thread_local! {
    /// The `Date` text of the current second, formatted once per second
    /// per thread.
    static DATE: RefCell<(u64, Vec<u8>)> = const { RefCell::new((u64::MAX, Vec::new())) };
}

/// Call `f` with the current IMF-fixdate (RFC 9110 §5.6.7).
fn with_date(f: impl FnOnce(&[u8])) {
    let now = SystemTime::now();
    let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    DATE.with(|cell| {
        let mut cached = cell.borrow_mut();
        if cached.0 != secs {
            cached.1 = httpdate::fmt_http_date(now).into_bytes();
            cached.0 = secs;
        }
        f(&cached.1);
    });
}

#[cfg(test)]
mod tests;
