//! The HTTP/1.1 wire format spoken to backends, as pure functions: the
//! request head we write, the response head we parse, how the response
//! body is framed (RFC 9112 §6.3), and a chunked-body decoder.
//!
//! The I/O around it lives in [`super::upstream`]. Keeping the codec free
//! of sockets lets every framing rule be tested on byte strings.

use std::mem::MaybeUninit;

use bytes::{Buf, Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};

use super::headers;

/// The largest response head accepted from a backend (status line and
/// headers); nginx's default `proxy_buffer_size` is 4–8 KiB, so this is
/// generous while still bounding what a broken backend can make us hold.
pub const MAX_HEAD: usize = 64 * 1024;

/// Headers a response head may carry.
pub const MAX_HEADERS: usize = 128;

/// How the request body is framed on the way to the backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestFraming {
    /// No body and no framing header (a plain GET).
    None,
    /// `Content-Length: n`.
    Length(u64),
    /// `Transfer-Encoding: chunked`: the length is not known up front.
    Chunked,
}

impl RequestFraming {
    /// Framing for a body whose exact length is `exact` (if known), where
    /// `declared` says the client sent a `Content-Length` header itself.
    pub fn for_body(exact: Option<u64>, declared: bool) -> Self {
        match exact {
            Some(0) if !declared => RequestFraming::None,
            Some(n) => RequestFraming::Length(n),
            None => RequestFraming::Chunked,
        }
    }
}

/// Encode a request head into `out` (cleared first; a connection reuses
/// one buffer). `headers` must already be free of hop-by-hop
/// headers; a `Content-Length` among them is replaced by what `framing`
/// says.
pub fn encode_request_head<'a>(
    out: &mut Vec<u8>,
    method: &str,
    target: &str,
    headers: impl IntoIterator<Item = (&'a [u8], &'a [u8])>,
    framing: RequestFraming,
) {
    out.clear();
    out.extend_from_slice(method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in headers {
        if name.eq_ignore_ascii_case(b"content-length") {
            continue;
        }
        out.extend_from_slice(name);
        out.extend_from_slice(b": ");
        out.extend_from_slice(value);
        out.extend_from_slice(b"\r\n");
    }
    match framing {
        RequestFraming::None => {}
        RequestFraming::Length(n) => {
            out.extend_from_slice(b"content-length: ");
            out.extend_from_slice(n.to_string().as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        RequestFraming::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
    }
    out.extend_from_slice(b"\r\n");
}

/// The size line that starts a chunk of `len` bytes.
pub fn chunk_header(len: usize) -> String {
    format!("{len:x}\r\n")
}

/// The end of a chunked request body (no trailers).
pub const CHUNKED_END: &[u8] = b"0\r\n\r\n";

/// Why a backend's response could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("malformed response head")]
    Malformed,
    #[error("response head over {MAX_HEAD} bytes")]
    TooLarge,
    #[error("conflicting Content-Length headers")]
    BadLength,
    #[error("malformed chunked body")]
    BadChunk,
}

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
    names_hop_by_hop: bool,
    /// A `Transfer-Encoding` is present: it decides the framing, and a
    /// `Content-Length` next to it is not passed on.
    has_coding: bool,
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
    fn values<'s>(&'s self, name: &'s str) -> impl DoubleEndedIterator<Item = &'s [u8]> + 's {
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

/// How a response body is delimited (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseFraming {
    /// No body at all (HEAD, 1xx, 204, 304).
    Empty,
    /// Exactly this many bytes.
    Length(u64),
    /// Chunked transfer coding.
    Chunked,
    /// Everything until the backend closes the connection (which therefore
    /// cannot be reused).
    UntilClose,
}

/// How a response's body is framed, and whether its connection can carry
/// another request afterwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decided {
    pub framing: ResponseFraming,
    pub keep_alive: bool,
}

/// The framing of the body that follows `head`, sent in answer to a
/// request with `method`. `Transfer-Encoding` wins over `Content-Length`
/// (and such a message is never reused: the two disagreeing is how request
/// smuggling starts); differing `Content-Length` values are an error.
pub fn decide(method: &Method, head: &RawHead<'_, '_>) -> Result<Decided, ParseError> {
    let s = head.status.as_u16();
    let mut keep_alive = head.keep_alive;
    // Both framings on one message: whatever the status, the backend and
    // we may not agree where it ends (found by the generated heads below).
    if head.has_coding && head.values("content-length").next().is_some() {
        keep_alive = false;
    }
    if method == Method::HEAD || (100..200).contains(&s) || s == 204 || s == 304 {
        return Ok(Decided {
            framing: ResponseFraming::Empty,
            keep_alive,
        });
    }
    let lengths = head.values("content-length");
    if head.has_coding {
        // Only the last coding matters: chunked must be the final one.
        let chunked_last = head
            .values("transfer-encoding")
            .next_back()
            .and_then(|te| te.rsplit(|b| *b == b',').next())
            .is_some_and(|last| trim_ows(last).eq_ignore_ascii_case(b"chunked"));
        if lengths.count() > 0 || !chunked_last {
            keep_alive = false;
        }
        let framing = if chunked_last {
            ResponseFraming::Chunked
        } else {
            ResponseFraming::UntilClose
        };
        return Ok(Decided {
            framing,
            keep_alive,
        });
    }
    let mut length = None;
    for v in lengths {
        for part in v.split(|b| *b == b',') {
            let n: u64 = std::str::from_utf8(trim_ows(part))
                .ok()
                .and_then(|t| t.parse().ok())
                .ok_or(ParseError::BadLength)?;
            if length.is_some_and(|l| l != n) {
                return Err(ParseError::BadLength);
            }
            length = Some(n);
        }
    }
    let framing = match length {
        Some(n) => ResponseFraming::Length(n),
        None => {
            keep_alive = false;
            ResponseFraming::UntilClose
        }
    };
    Ok(Decided {
        framing,
        keep_alive,
    })
}

/// What one step of chunked decoding produced.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded {
    /// Body bytes, in the order they came.
    Data(Bytes),
    /// The buffer holds no complete next element: read more.
    NeedMore,
    /// The last chunk and its trailers have been read.
    Done,
}

/// The longest chunk-size line (with extensions) or trailer line accepted.
const MAX_LINE: usize = 4096;
/// The most trailer bytes accepted (they are read and dropped).
const MAX_TRAILERS: usize = 16 * 1024;

/// A chunked-body decoder. Data is handed out as soon as it is in the
/// buffer, even mid-chunk, so a streamed response is never held back
/// waiting for the rest of a chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chunked {
    /// Expecting a chunk-size line.
    Size,
    /// Inside a chunk with this many bytes left.
    Data(u64),
    /// Expecting the CRLF after a chunk's data.
    DataEnd,
    /// After the last chunk: trailer lines until an empty one; the number
    /// of trailer bytes seen so far.
    Trailers(usize),
    /// Complete.
    Done,
}

impl Chunked {
    /// Decode the next element from `buf`, consuming what it used.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Decoded, ParseError> {
        loop {
            match *self {
                Chunked::Size => {
                    let Some(line) = take_line(buf)? else {
                        return Ok(Decoded::NeedMore);
                    };
                    let digits = line.split(|b| *b == b';').next().unwrap_or(&[]);
                    let digits = trim_ows(digits);
                    if digits.is_empty() || digits.len() > 16 {
                        return Err(ParseError::BadChunk);
                    }
                    let mut n: u64 = 0;
                    for d in digits {
                        let v = (*d as char).to_digit(16).ok_or(ParseError::BadChunk)?;
                        n = n << 4 | u64::from(v);
                    }
                    *self = if n == 0 {
                        Chunked::Trailers(0)
                    } else {
                        Chunked::Data(n)
                    };
                }
                Chunked::Data(left) => {
                    if buf.is_empty() {
                        return Ok(Decoded::NeedMore);
                    }
                    let take = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
                    let data = buf.split_to(take).freeze();
                    let left = left - take as u64;
                    *self = if left == 0 {
                        Chunked::DataEnd
                    } else {
                        Chunked::Data(left)
                    };
                    return Ok(Decoded::Data(data));
                }
                Chunked::DataEnd => {
                    if buf.len() < 2 {
                        return Ok(Decoded::NeedMore);
                    }
                    if &buf[..2] != b"\r\n" {
                        return Err(ParseError::BadChunk);
                    }
                    buf.advance(2);
                    *self = Chunked::Size;
                }
                Chunked::Trailers(seen) => {
                    let before = buf.len();
                    let Some(line) = take_line(buf)? else {
                        return Ok(Decoded::NeedMore);
                    };
                    let seen = seen + (before - buf.len());
                    if line.is_empty() {
                        *self = Chunked::Done;
                    } else if seen > MAX_TRAILERS {
                        return Err(ParseError::BadChunk);
                    } else {
                        *self = Chunked::Trailers(seen);
                    }
                }
                Chunked::Done => return Ok(Decoded::Done),
            }
        }
    }
}

/// Take one CRLF-terminated line off `buf` (without the CRLF).
fn take_line(buf: &mut BytesMut) -> Result<Option<Bytes>, ParseError> {
    match buf.windows(2).position(|w| w == b"\r\n") {
        Some(i) if i > MAX_LINE => Err(ParseError::BadChunk),
        Some(i) => {
            let line = buf.split_to(i).freeze();
            buf.advance(2);
            Ok(Some(line))
        }
        None if buf.len() > MAX_LINE => Err(ParseError::BadChunk),
        None => Ok(None),
    }
}

fn trim_ows(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

/// `n` copies of `base`, each with a few random bytes changed, inserted or
/// cut off (seeded: the same every run), for tests that parsers never
/// panic and keep their promises on broken input.
#[cfg(test)]
pub(crate) fn mangled(base: &[u8], n: usize) -> impl Iterator<Item = Vec<u8>> + '_ {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    (0..n).map(move |_| {
        let mut buf = base.to_vec();
        for _ in 0..rng.random_range(1..4) {
            if buf.is_empty() {
                break;
            }
            let i = rng.random_range(0..buf.len());
            match rng.random_range(0..3) {
                0 => buf[i] = rng.random(),
                1 => buf.truncate(i),
                _ => buf.insert(i, rng.random()),
            }
        }
        buf
    })
}

/// The settings of the generated-input tests over the parsers: `cases`
/// inputs, bounded so that they run in every `cargo test` (a second or two
/// in a debug build), and no regression files left behind.
#[cfg(test)]
pub(crate) fn generated(cases: u32) -> proptest::prelude::ProptestConfig {
    proptest::prelude::ProptestConfig {
        cases,
        failure_persistence: None,
        ..proptest::prelude::ProptestConfig::default()
    }
}

/// A head as generated inputs build it: the start line and its line end,
/// `name: value` fields each with its own line end, the blank line's end,
/// then `tail` (body bytes, or the next message).
#[cfg(test)]
pub(crate) fn head_bytes<'a>(
    start: &[&[u8]],
    fields: impl IntoIterator<Item = (&'a str, Vec<u8>, &'a str)>,
    blank: &str,
    tail: &[u8],
) -> Vec<u8> {
    let mut out = start.concat();
    for (name, value, end) in fields {
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(&value);
        out.extend_from_slice(end.as_bytes());
    }
    out.extend_from_slice(blank.as_bytes());
    out.extend_from_slice(tail);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateway::headers::HeadersRef;
    use http::header;

    /// Parse `text` as one whole response head and look at it with `f`.
    fn with_head<T>(text: &str, f: impl FnOnce(&RawHead<'_, '_>) -> T) -> T {
        let mut slots = header_slots::<MAX_HEADERS>();
        let h = parse_response(text.as_bytes(), &mut slots)
            .unwrap()
            .unwrap_or_else(|| panic!("incomplete: {text:?}"));
        assert_eq!(h.bytes.len(), text.len());
        f(&h)
    }

    fn relayed_names(text: &str) -> Vec<String> {
        with_head(text, |h| {
            h.relayed_headers()
                .map(|(n, _)| String::from_utf8_lossy(n).into_owned())
                .collect()
        })
    }

    #[test]
    fn request_heads_carry_the_framing_the_body_needs() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("b"));
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("999"));
        let cases = [
            (
                RequestFraming::None,
                "GET /v1/x?q=1 HTTP/1.1\r\nhost: b\r\n\r\n",
            ),
            (
                RequestFraming::Length(5),
                "GET /v1/x?q=1 HTTP/1.1\r\nhost: b\r\ncontent-length: 5\r\n\r\n",
            ),
            (
                RequestFraming::Chunked,
                "GET /v1/x?q=1 HTTP/1.1\r\nhost: b\r\ntransfer-encoding: chunked\r\n\r\n",
            ),
        ];
        for (framing, want) in cases {
            let mut got = b"stale".to_vec();
            encode_request_head(
                &mut got,
                "GET",
                "/v1/x?q=1",
                HeadersRef::Map(&h).pairs(),
                framing,
            );
            assert_eq!(String::from_utf8(got).unwrap(), want);
        }
        assert_eq!(
            RequestFraming::for_body(Some(0), false),
            RequestFraming::None
        );
        assert_eq!(
            RequestFraming::for_body(Some(0), true),
            RequestFraming::Length(0)
        );
        assert_eq!(
            RequestFraming::for_body(Some(7), false),
            RequestFraming::Length(7)
        );
        assert_eq!(
            RequestFraming::for_body(None, true),
            RequestFraming::Chunked
        );
        assert_eq!(chunk_header(255), "ff\r\n");
    }

    #[test]
    fn response_heads_parse_incrementally() {
        let full = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-A: 1\r\nX-A: 2\r\n\r\nok";
        for cut in 0..full.len() - 2 {
            let mut slots = header_slots::<MAX_HEADERS>();
            assert!(
                parse_response(&full[..cut], &mut slots).unwrap().is_none(),
                "cut {cut}"
            );
            assert!(!head_complete(&full[..cut]), "cut {cut}");
        }
        assert!(head_complete(full));
        let mut slots = header_slots::<MAX_HEADERS>();
        let h = parse_response(full, &mut slots).unwrap().unwrap();
        assert_eq!(h.status, StatusCode::OK);
        assert!(h.keep_alive);
        assert_eq!(h.values("x-a").count(), 2);
        assert_eq!(
            h.bytes.len(),
            full.len() - 2,
            "the body is not part of the head"
        );
        let map = h.header_map().unwrap();
        let got: Vec<_> = map.get_all("x-a").iter().collect();
        assert_eq!(got, ["1", "2"]);
        assert_eq!(map["content-length"], "2");
    }

    #[test]
    fn heads_end_at_a_blank_line_and_their_status_can_be_peeked() {
        for (text, want) in [
            ("HTTP/1.1 200 OK\r\nA: b\r\n\r\n", true),
            ("HTTP/1.1 200 OK\nA: b\n\n", true),
            ("HTTP/1.1 200 OK\r\nA: b\r\n\r", false),
            ("", false),
            ("\n", false),
        ] {
            assert_eq!(head_complete(text.as_bytes()), want, "{text:?}");
        }
        assert_eq!(peek_status(b"HTTP/1.1 103 Early Hints\r\n"), Some(103));
        assert_eq!(peek_status(b"HTTP/1.0 200 OK"), Some(200));
        assert_eq!(peek_status(b"HTTP/1.1 2x0 OK"), None);
        assert_eq!(peek_status(b"HTTP/1.1 20"), None);
    }

    #[test]
    fn keep_alive_needs_http11_without_close() {
        assert!(!with_head("HTTP/1.0 200 OK\r\n\r\n", |h| h.keep_alive));
        assert!(!with_head(
            "HTTP/1.1 200 OK\r\nConnection: keep-alive, Close\r\n\r\n",
            |h| h.keep_alive
        ));
        assert!(with_head(
            "HTTP/1.1 200 OK\r\nConnection: keep-alive\r\n\r\n",
            |h| h.keep_alive
        ));
    }

    #[test]
    fn connection_level_headers_stay_behind() {
        assert_eq!(
            relayed_names(
                "HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\nX-A: 1\r\n\r\n"
            ),
            ["X-A"]
        );
        // Headers the `Connection` header names stay behind with it.
        let text = "HTTP/1.1 200 OK\r\nConnection: close, X-Hop\r\nX-Hop: 1\r\nX-B: 2\r\n\r\n";
        assert_eq!(relayed_names(text), ["X-B"]);
        assert!(!with_head(text, |h| h.keep_alive));
        // The hop's coding, and a length beside it, are not passed on.
        let text =
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\nX-C: 3\r\n\r\n";
        assert_eq!(relayed_names(text), ["X-C"]);
        let map = with_head(text, |h| h.header_map().unwrap());
        assert_eq!(map.keys().map(|k| k.as_str()).collect::<Vec<_>>(), ["x-c"]);
    }

    #[test]
    fn mangled_response_heads_never_panic() {
        let base = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close, X-Hop\r\nX-Hop: 1\r\nTransfer-Encoding: chunked\r\nX-A: b\r\n\r\nok";
        for buf in mangled(base, 20_000) {
            response_holds_its_promises(&buf);
        }
    }

    /// What the upstream client relies on, for any bytes: no panic; a
    /// parsed head is a whole head within `buf`; no hop-by-hop header is
    /// relayed; a decided framing agrees with the headers (a HEAD answer
    /// has no body, a length is the one every `Content-Length` says, a
    /// coding beside a length never lets the connection be reused); and
    /// the client's head says exactly one framing: the relayed lengths, or
    /// our one `Transfer-Encoding: chunked` and no length.
    fn response_holds_its_promises(buf: &[u8]) {
        let shown = || String::from_utf8_lossy(buf).into_owned();
        let _ = peek_status(buf);
        let complete = head_complete(buf);
        let mut slots = header_slots::<MAX_HEADERS>();
        let Ok(Some(h)) = parse_response(buf, &mut slots) else {
            return;
        };
        assert!(h.bytes.len() <= buf.len());
        assert!(complete, "parsed but not complete: {}", shown());
        let _ = h.header_map();
        assert!(h
            .relayed_headers()
            .all(|(n, _)| !headers::is_hop_by_hop_name(n)));
        let lengths: Vec<&[u8]> = h.values("content-length").collect();
        for method in [Method::GET, Method::HEAD] {
            let Ok(d) = decide(&method, &h) else {
                continue;
            };
            if method == Method::HEAD {
                assert_eq!(d.framing, ResponseFraming::Empty);
            }
            if let ResponseFraming::Length(n) = d.framing {
                let all_n = lengths
                    .iter()
                    .flat_map(|v| v.split(|b| *b == b','))
                    .all(|p| {
                        std::str::from_utf8(trim_ows(p))
                            .ok()
                            .and_then(|t| t.parse().ok())
                            == Some(n)
                    });
                assert!(all_n, "{}", shown());
            }
            if h.has_coding && !lengths.is_empty() {
                assert!(!d.keep_alive, "{}", shown());
            }
            let mut out = Vec::new();
            crate::gateway::front::encode_relayed_head(&mut out, &h, d, false);
            assert!(out.ends_with(b"\r\n\r\n"));
            let mut slots = header_slots::<{ MAX_HEADERS + 4 }>();
            let mut again = httparse::Response::new(&mut []);
            let parsed = httparse::ParserConfig::default()
                .parse_response_with_uninit_headers(&mut again, &out, &mut slots);
            assert!(
                matches!(parsed, Ok(httparse::Status::Complete(n)) if n == out.len()),
                "{}",
                String::from_utf8_lossy(&out)
            );
            let count = |name: &str| {
                again
                    .headers
                    .iter()
                    .filter(|x| x.name.eq_ignore_ascii_case(name))
                    .count()
            };
            match d.framing {
                ResponseFraming::Chunked | ResponseFraming::UntilClose => {
                    assert_eq!(
                        (count("transfer-encoding"), count("content-length")),
                        (1, 0),
                        "{}",
                        shown()
                    );
                }
                ResponseFraming::Length(_) => {
                    assert_eq!(count("transfer-encoding"), 0, "{}", shown());
                    assert!(count("content-length") > 0, "{}", shown());
                }
                ResponseFraming::Empty => assert_eq!(count("transfer-encoding"), 0, "{}", shown()),
            }
        }
    }

    /// Response heads built from the parts that decide their framing and
    /// reuse, with arbitrary bytes among them.
    fn response_heads() -> impl proptest::strategy::Strategy<Value = Vec<u8>> {
        use proptest::prelude::*;
        use proptest::sample::select;
        let bytes = |n| proptest::collection::vec(any::<u8>(), 0..n);
        let status = prop_oneof![
            4 => select(vec!["HTTP/1.1 200 OK", "HTTP/1.0 200 OK", "HTTP/1.1 204 No Content", "HTTP/1.1 304 Not Modified"]),
            1 => select(vec!["HTTP/1.1 100 Continue", "HTTP/1.1 101 Switching", "HTTP/1.1 999 X", "HTTP/1.1 20 OK", "HTTP/2 200", ""]),
        ];
        let eol = || prop_oneof![8 => Just("\r\n"), 2 => Just("\n"), 1 => select(vec!["\r", ""])];
        let name = select(vec![
            "Content-Length",
            "content-length",
            "Transfer-Encoding",
            "Connection",
            "Keep-Alive",
            "X-Hop",
            "X-A",
            "Upgrade",
            "Content-Length ",
            "",
        ]);
        let value = prop_oneof![
            select(vec![
                "5",
                "5, 5",
                "5, 6",
                "-1",
                "close",
                "keep-alive, X-Hop",
                "chunked",
                "gzip, chunked",
                "chunked, gzip",
                "18446744073709551616"
            ])
            .prop_map(|v| v.as_bytes().to_vec()),
            bytes(12),
        ];
        let fields = proptest::collection::vec((name, value, eol()), 0..6);
        (status, eol(), fields, eol(), bytes(8)).prop_map(|(status, end, fields, blank, tail)| {
            head_bytes(&[status.as_bytes(), end.as_bytes()], fields, blank, &tail)
        })
    }

    /// A chunked body as a backend may send it: the chunks' data, each
    /// size in upper or lower case hex with or without an extension,
    /// trailers, and bytes after the end (the next response).
    fn chunked_wire(chunks: &[(Vec<u8>, bool, bool)], trailers: bool) -> Vec<u8> {
        let mut wire = Vec::new();
        for (data, upper, ext) in chunks {
            let size = if *upper {
                format!("{:X}", data.len())
            } else {
                format!("{:x}", data.len())
            };
            wire.extend_from_slice(size.as_bytes());
            if *ext {
                wire.extend_from_slice(b";name=\"v\"");
            }
            wire.extend_from_slice(b"\r\n");
            wire.extend_from_slice(data);
            wire.extend_from_slice(b"\r\n");
        }
        wire.extend_from_slice(b"0\r\n");
        if trailers {
            wire.extend_from_slice(b"X-T: 1\r\n");
        }
        wire.extend_from_slice(b"\r\nHTTP/1.1 200 OK\r\n");
        wire
    }

    proptest::proptest! {
        #![proptest_config(generated(2000))]

        #[test]
        fn generated_response_heads_hold_the_parsers_promises(buf in response_heads()) {
            response_holds_its_promises(&buf);
        }

        /// Whatever the read sizes, the decoder gives back exactly the
        /// chunks' data, ends at the last chunk and leaves what follows
        /// the body in the buffer.
        #[test]
        fn chunked_bodies_decode_exactly_whatever_the_reads(
            chunks in proptest::collection::vec(
                (proptest::collection::vec(proptest::prelude::any::<u8>(), 1..40), proptest::prelude::any::<bool>(), proptest::prelude::any::<bool>()),
                0..6,
            ),
            trailers in proptest::prelude::any::<bool>(),
            steps in proptest::collection::vec(1usize..24, 1..8),
        ) {
            let wire = chunked_wire(&chunks, trailers);
            let want: Vec<u8> = chunks.iter().flat_map(|(d, _, _)| d.clone()).collect();
            let mut d = Chunked::Size;
            let mut buf = BytesMut::new();
            let mut got = Vec::new();
            let mut fed = 0;
            let mut done = false;
            for step in steps.iter().cycle() {
                let end = (fed + step).min(wire.len());
                buf.extend_from_slice(&wire[fed..end]);
                fed = end;
                loop {
                    match d.decode(&mut buf).unwrap() {
                        Decoded::Data(b) => got.extend_from_slice(&b),
                        Decoded::NeedMore => break,
                        Decoded::Done => {
                            done = true;
                            break;
                        }
                    }
                }
                if done || fed == wire.len() {
                    break;
                }
            }
            proptest::prop_assert!(done);
            proptest::prop_assert_eq!(got, want);
            let mut rest = buf.to_vec();
            rest.extend_from_slice(&wire[fed..]);
            proptest::prop_assert_eq!(rest, b"HTTP/1.1 200 OK\r\n".to_vec());
        }

        /// On any bytes the decoder stops (an error, more wanted, or the
        /// end) without a panic, and never hands out more than it was given.
        #[test]
        fn the_chunked_decoder_survives_any_bytes(
            wire in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64),
            prefix in proptest::sample::select(vec![&b""[..], b"5\r\n", b"0\r\n", b"ffffffffffffffff\r\n", b"1;\r\na\r\n"]),
        ) {
            let input = [prefix, &wire].concat();
            let mut d = Chunked::Size;
            let mut buf = BytesMut::from(&input[..]);
            let mut out = 0;
            // Each step consumes bytes or ends the loop, so this ends.
            for _ in 0..=input.len() + 1 {
                match d.decode(&mut buf) {
                    Ok(Decoded::Data(b)) => out += b.len(),
                    Ok(Decoded::NeedMore) | Ok(Decoded::Done) | Err(_) => break,
                }
            }
            proptest::prop_assert!(out <= input.len());
        }
    }

    #[test]
    fn broken_heads_are_errors() {
        let mut slots = header_slots::<MAX_HEADERS>();
        assert_eq!(
            parse_response(b"HTTP/1.1 abc\r\n\r\n", &mut slots).unwrap_err(),
            ParseError::Malformed
        );
        let mut huge = b"HTTP/1.1 200 OK\r\n".to_vec();
        while huge.len() < MAX_HEAD {
            huge.extend_from_slice(b"x-pad: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n");
        }
        let mut slots = header_slots::<MAX_HEADERS>();
        assert_eq!(
            parse_response(&huge, &mut slots).unwrap_err(),
            ParseError::TooLarge
        );
    }

    #[test]
    fn body_framing_follows_rfc9112() {
        use ResponseFraming::*;
        let cases: [(&Method, &str, Result<ResponseFraming, ParseError>, bool); 11] = [
            // Both framings: never reused, even where no body follows.
            (
                &Method::HEAD,
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n",
                Ok(Empty),
                false,
            ),
            (
                &Method::GET,
                "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n",
                Ok(Length(5)),
                true,
            ),
            (
                &Method::HEAD,
                "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n",
                Ok(Empty),
                true,
            ),
            (
                &Method::GET,
                "HTTP/1.1 204 No Content\r\n\r\n",
                Ok(Empty),
                true,
            ),
            (
                &Method::GET,
                "HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n",
                Ok(Empty),
                true,
            ),
            (
                &Method::GET,
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
                Ok(Chunked),
                true,
            ),
            (
                &Method::GET,
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n",
                Ok(Chunked),
                false,
            ),
            (
                &Method::GET,
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
                Ok(UntilClose),
                false,
            ),
            (
                &Method::GET,
                "HTTP/1.1 200 OK\r\n\r\n",
                Ok(UntilClose),
                false,
            ),
            (
                &Method::GET,
                "HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\n",
                Ok(Length(5)),
                true,
            ),
            (
                &Method::GET,
                "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
                Err(ParseError::BadLength),
                true,
            ),
        ];
        for (method, text, want, reuse) in cases {
            let got = with_head(text, |h| decide(method, h));
            assert_eq!(got.map(|d| d.framing), want, "{text:?}");
            if let Ok(d) = got {
                assert_eq!(d.keep_alive, reuse, "reuse after {text:?}");
            }
        }
    }

    /// Feed `wire` to a decoder in pieces of `step` bytes; collect the data.
    fn decode_in_steps(wire: &[u8], step: usize) -> Result<(Vec<u8>, usize), ParseError> {
        let mut d = Chunked::Size;
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        let mut frames = 0;
        for piece in wire.chunks(step) {
            buf.extend_from_slice(piece);
            loop {
                match d.decode(&mut buf)? {
                    Decoded::Data(b) => {
                        out.extend_from_slice(&b);
                        frames += 1;
                    }
                    Decoded::NeedMore => break,
                    Decoded::Done => return Ok((out, frames)),
                }
            }
        }
        Err(ParseError::BadChunk)
    }

    #[test]
    fn chunked_bodies_decode_whatever_the_read_sizes() {
        let wire =
            b"5;ext=1\r\nhello\r\n1A\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nX-Trailer: t\r\n\r\n";
        for step in 1..wire.len() {
            let (out, _) = decode_in_steps(wire, step).unwrap();
            assert_eq!(out, b"helloabcdefghijklmnopqrstuvwxyz", "step {step}");
        }
    }

    #[test]
    fn each_chunk_is_its_own_frame() {
        // Two SSE events in one read stay two frames: nothing is merged.
        let wire = b"8\r\ndata: 1\n\r\n8\r\ndata: 2\n\r\n0\r\n\r\n";
        let (_, frames) = decode_in_steps(wire, wire.len()).unwrap();
        assert_eq!(frames, 2);
    }

    #[test]
    fn malformed_chunks_are_errors() {
        for wire in [
            &b"zz\r\n"[..],
            b"\r\n",
            b"5\r\nhelloXX",
            b"11111111111111111\r\n",
        ] {
            assert_eq!(
                decode_in_steps(wire, wire.len()),
                Err(ParseError::BadChunk),
                "{wire:?}"
            );
        }
        let long = vec![b'1'; MAX_LINE + 10];
        assert_eq!(
            decode_in_steps(&long, long.len()),
            Err(ParseError::BadChunk)
        );
    }
}
