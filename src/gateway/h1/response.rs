//! The response head we read from a backend, parsed in place.

use std::mem::MaybeUninit;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};

use super::{trim_ows, ParseError, MAX_HEAD};
use crate::gateway::headers;

/// Space for one head's parsed headers.
pub type HeaderSlots<'b, const N: usize> = [MaybeUninit<httparse::Header<'b>>; N];

/// An empty set of header slots.
pub fn header_slots<'b, const N: usize>() -> HeaderSlots<'b, N> {
    [const { MaybeUninit::uninit() }; N]
}

/// A response head parsed in place: its header names and values are
/// slices of the connection's read buffer, so parsing allocates nothing.
#[derive(Debug)]
pub struct RawHead<'b, 'h> {
    /// The head's bytes, status line to blank line.
    pub bytes: &'b [u8],
    pub status: StatusCode,
    /// HTTP/1.1 without `Connection: close`: the connection may carry the
    /// next request once this response's body is read.
    pub keep_alive: bool,
    pub headers: &'h [httparse::Header<'b>],
    /// `Connection` names headers besides `keep-alive` and `close`; those
    /// stay behind too.
    pub(super) names_hop_by_hop: bool,
    /// A `Transfer-Encoding` is present: it decides the framing, and a
    /// `Content-Length` next to it is not passed on.
    pub(super) has_coding: bool,
}

/// Parse the response head at the start of `buf`. `Ok(None)`: more bytes
/// are needed.
pub fn parse_response<'b, 'h, const N: usize>(
    buf: &'b [u8],
    slots: &'h mut HeaderSlots<'b, N>,
) -> Result<Option<RawHead<'b, 'h>>, ParseError> {
    let mut parsed = httparse::Response::new(&mut []);
    let config = httparse::ParserConfig::default();
    let len = match config.parse_response_with_uninit_headers(&mut parsed, buf, slots) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() >= MAX_HEAD => return Err(ParseError::TooLarge),
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(ParseError::TooLarge),
        Err(_) => return Err(ParseError::Malformed),
    };
    let status = parsed
        .code
        .and_then(|c| StatusCode::from_u16(c).ok())
        .ok_or(ParseError::Malformed)?;
    let mut keep_alive = parsed.version == Some(1);
    let mut names_hop_by_hop = false;
    let mut has_coding = false;
    for h in parsed.headers.iter() {
        if h.name.eq_ignore_ascii_case("connection") {
            for token in h.value.split(|b| *b == b',') {
                let token = trim_ows(token);
                if token.eq_ignore_ascii_case(b"close") {
                    keep_alive = false;
                } else if !token.eq_ignore_ascii_case(b"keep-alive") && !token.is_empty() {
                    names_hop_by_hop = true;
                }
            }
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            has_coding = true;
        }
    }
    Ok(Some(RawHead {
        bytes: &buf[..len],
        status,
        keep_alive,
        headers: parsed.headers,
        names_hop_by_hop,
        has_coding,
    }))
}

impl RawHead<'_, '_> {
    /// Whether the header `name` goes on to the client: not hop-by-hop,
    /// not named by `Connection`, and not a `Content-Length` beside a
    /// `Transfer-Encoding` (the framing is re-done for the client).
    pub fn relayed(&self, name: &str) -> bool {
        let n = name.as_bytes();
        if headers::is_hop_by_hop_name(n) {
            return false;
        }
        if self.has_coding && n.eq_ignore_ascii_case(b"content-length") {
            return false;
        }
        if self.names_hop_by_hop {
            let named = self
                .headers
                .iter()
                .filter(|h| h.name.eq_ignore_ascii_case("connection"))
                .flat_map(|h| h.value.split(|b| *b == b','))
                .any(|t| trim_ows(t).eq_ignore_ascii_case(n));
            if named {
                return false;
            }
        }
        true
    }

    /// The headers that go on to the client, in order.
    pub fn relayed_headers(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.headers
            .iter()
            .filter(|h| self.relayed(h.name))
            .map(|h| (h.name.as_bytes(), h.value))
    }

    /// The relayed headers as a `HeaderMap` (for hyper's server). The head
    /// is copied once and the values are slices of the copy.
    pub fn header_map(&self) -> Result<HeaderMap, ParseError> {
        let copy = Bytes::copy_from_slice(self.bytes);
        let base = self.bytes.as_ptr() as usize;
        let mut map = HeaderMap::with_capacity(self.headers.len());
        for (name, value) in self.relayed_headers() {
            let name = HeaderName::from_bytes(name).map_err(|_| ParseError::Malformed)?;
            let start = value.as_ptr() as usize - base;
            let value = HeaderValue::from_maybe_shared(copy.slice(start..start + value.len()))
                .map_err(|_| ParseError::Malformed)?;
            map.append(name, value);
        }
        Ok(map)
    }

    /// Every value of the header `name`.
    pub(super) fn values<'s>(
        &'s self,
        name: &'s str,
    ) -> impl DoubleEndedIterator<Item = &'s [u8]> + 's {
        self.headers
            .iter()
            .filter(move |h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value)
    }
}

/// The status code at the start of a response head, read from its status
/// line alone (`HTTP/1.x NNN`), for skipping interim responses without
/// parsing their headers.
pub fn peek_status(buf: &[u8]) -> Option<u16> {
    match buf {
        [b'H', b'T', b'T', b'P', b'/', b'1', b'.', _, b' ', a, b, c, ..]
            if a.is_ascii_digit() && b.is_ascii_digit() && c.is_ascii_digit() =>
        {
            Some(u16::from(a - b'0') * 100 + u16::from(b - b'0') * 10 + u16::from(c - b'0'))
        }
        _ => None,
    }
}

/// Whether `buf` holds a complete head (its blank line). A bare LF ends
/// lines too, as httparse accepts. Cheaper than a parse, so the head is
/// parsed once, when it is all there.
pub fn head_complete(buf: &[u8]) -> bool {
    let mut rest = buf;
    while let Some(i) = rest.iter().position(|b| *b == b'\n') {
        match rest.get(i + 1..) {
            Some([b'\n', ..]) | Some([b'\r', b'\n', ..]) => return true,
            _ => rest = &rest[i + 1..],
        }
    }
    false
}
