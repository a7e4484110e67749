//! The HTTP/1.1 wire format spoken to backends, as pure functions: the
//! request head we write, the response head we parse, how the response
//! body is framed (RFC 9112 §6.3), and a chunked-body decoder.
//!
//! The I/O around it lives in [`super::upstream`]. Keeping the codec free
//! of sockets lets every framing rule be tested on byte strings.

use std::mem::MaybeUninit;

use bytes::{Buf, Bytes, BytesMut};
use http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode};

/// The largest response head accepted from a backend (status line and
/// headers); nginx's default `proxy_buffer_size` is 4–8 KiB, so this is
/// generous while still bounding what a broken backend can make us hold.
pub const MAX_HEAD: usize = 64 * 1024;

/// Headers a response head may carry.
const MAX_HEADERS: usize = 128;

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

/// Encode a request head. `headers` must already be free of hop-by-hop
/// headers; a `Content-Length` among them is replaced by what `framing`
/// says.
pub fn encode_request_head<'a>(
    method: &str,
    target: &str,
    headers: impl IntoIterator<Item = (&'a [u8], &'a [u8])>,
    framing: RequestFraming,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(512);
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
    out
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

/// A parsed response head.
#[derive(Debug)]
pub struct ResponseHead {
    pub status: StatusCode,
    pub headers: HeaderMap,
    /// HTTP/1.1 without `Connection: close`: the connection may carry the
    /// next request once this response's body is read.
    pub keep_alive: bool,
}

/// Parse a response head at the start of `buf`. `Ok(None)`: more bytes are
/// needed. On success the head's bytes are removed from `buf`.
///
/// Header values are slices of the head's bytes (no copy per header), and
/// the connection-level `Connection` and `Keep-Alive` headers are read
/// here and left out, so the proxy's hop-by-hop strip usually finds
/// nothing to do. A `Connection` header naming other headers is kept, so
/// that the strip removes those too.
pub fn parse_response_head(buf: &mut BytesMut) -> Result<Option<ResponseHead>, ParseError> {
    let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut parsed = httparse::Response::new(&mut []);
    let config = httparse::ParserConfig::default();
    let len = match config.parse_response_with_uninit_headers(&mut parsed, buf, &mut slots) {
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
    // Where each kept header's name and value sit in the head, so that the
    // values can be cut from it once it is frozen.
    let base = buf.as_ptr() as usize;
    let mut kept: Vec<(HeaderName, usize, usize)> = Vec::with_capacity(parsed.headers.len());
    for h in parsed.headers.iter() {
        let name = HeaderName::from_bytes(h.name.as_bytes()).map_err(|_| ParseError::Malformed)?;
        if name == header::CONNECTION {
            let mut others = false;
            for token in h.value.split(|b| *b == b',') {
                let token = trim_ows(token);
                if token.eq_ignore_ascii_case(b"close") {
                    keep_alive = false;
                } else if !token.eq_ignore_ascii_case(b"keep-alive") && !token.is_empty() {
                    others = true;
                }
            }
            if !others {
                continue;
            }
        } else if name.as_str() == "keep-alive" || name.as_str() == "proxy-connection" {
            continue;
        }
        let start = h.value.as_ptr() as usize - base;
        kept.push((name, start, start + h.value.len()));
    }
    let head = buf.split_to(len).freeze();
    let mut headers = HeaderMap::with_capacity(kept.len());
    for (name, start, end) in kept {
        let value = HeaderValue::from_maybe_shared(head.slice(start..end))
            .map_err(|_| ParseError::Malformed)?;
        headers.append(name, value);
    }
    Ok(Some(ResponseHead {
        status,
        headers,
        keep_alive,
    }))
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

/// The framing of the body that follows `head`, sent in answer to a
/// request with `method`. `Transfer-Encoding` wins over `Content-Length`
/// (and such a message is never reused: the two disagreeing is how request
/// smuggling starts); differing `Content-Length` values are an error.
pub fn response_framing(
    method: &Method,
    head: &mut ResponseHead,
) -> Result<ResponseFraming, ParseError> {
    let s = head.status.as_u16();
    if method == Method::HEAD || (100..200).contains(&s) || s == 204 || s == 304 {
        return Ok(ResponseFraming::Empty);
    }
    // Only the last coding matters: chunked must be the final one.
    let chunked_last = head
        .headers
        .get_all(header::TRANSFER_ENCODING)
        .iter()
        .next_back()
        .map(|te| {
            te.to_str()
                .ok()
                .and_then(|v| v.rsplit(',').next())
                .is_some_and(|last| last.trim().eq_ignore_ascii_case("chunked"))
        });
    if let Some(chunked_last) = chunked_last {
        // The coding is this hop's business; the client gets its own.
        head.headers.remove(header::TRANSFER_ENCODING);
        if head.headers.contains_key(header::CONTENT_LENGTH) {
            head.keep_alive = false;
            head.headers.remove(header::CONTENT_LENGTH);
        }
        if chunked_last {
            return Ok(ResponseFraming::Chunked);
        }
        head.keep_alive = false;
        return Ok(ResponseFraming::UntilClose);
    }
    let mut length = None;
    for v in head.headers.get_all(header::CONTENT_LENGTH) {
        for part in v.to_str().map_err(|_| ParseError::BadLength)?.split(',') {
            let n: u64 = part.trim().parse().map_err(|_| ParseError::BadLength)?;
            if length.is_some_and(|l| l != n) {
                return Err(ParseError::BadLength);
            }
            length = Some(n);
        }
    }
    Ok(match length {
        Some(n) => ResponseFraming::Length(n),
        None => {
            head.keep_alive = false;
            ResponseFraming::UntilClose
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateway::headers::HeadersRef;

    fn head(text: &str) -> ResponseHead {
        let mut buf = BytesMut::from(text.as_bytes());
        parse_response_head(&mut buf).unwrap().unwrap()
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
            let got = encode_request_head("GET", "/v1/x?q=1", HeadersRef::Map(&h).pairs(), framing);
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
            let mut buf = BytesMut::from(&full[..cut]);
            assert!(
                parse_response_head(&mut buf).unwrap().is_none(),
                "cut {cut}"
            );
        }
        let mut buf = BytesMut::from(&full[..]);
        let h = parse_response_head(&mut buf).unwrap().unwrap();
        assert_eq!(h.status, StatusCode::OK);
        assert!(h.keep_alive);
        assert_eq!(h.headers.get_all("x-a").iter().count(), 2);
        assert_eq!(&buf[..], b"ok", "the body stays in the buffer");
    }

    #[test]
    fn keep_alive_needs_http11_without_close() {
        assert!(!head("HTTP/1.0 200 OK\r\n\r\n").keep_alive);
        assert!(!head("HTTP/1.1 200 OK\r\nConnection: keep-alive, Close\r\n\r\n").keep_alive);
        assert!(head("HTTP/1.1 200 OK\r\nConnection: keep-alive\r\n\r\n").keep_alive);
    }

    #[test]
    fn connection_level_headers_stay_behind() {
        let h = head(
            "HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\nX-A: 1\r\n\r\n",
        );
        let names: Vec<&str> = h.headers.keys().map(|n| n.as_str()).collect();
        assert_eq!(names, ["x-a"]);
        // Naming another header keeps `Connection` for the strip to use.
        let h = head("HTTP/1.1 200 OK\r\nConnection: close, X-Hop\r\nX-Hop: 1\r\n\r\n");
        assert!(!h.keep_alive);
        assert_eq!(h.headers["connection"], "close, X-Hop");
        let mut h = head("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
        assert_eq!(
            response_framing(&Method::GET, &mut h),
            Ok(ResponseFraming::Chunked)
        );
        assert!(h.headers.is_empty(), "the hop's coding is not passed on");
    }

    #[test]
    fn broken_heads_are_errors() {
        let mut junk = BytesMut::from(&b"HTTP/1.1 abc\r\n\r\n"[..]);
        assert_eq!(
            parse_response_head(&mut junk).unwrap_err(),
            ParseError::Malformed
        );
        let mut huge = BytesMut::from(&b"HTTP/1.1 200 OK\r\n"[..]);
        while huge.len() < MAX_HEAD {
            huge.extend_from_slice(b"x-pad: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n");
        }
        assert_eq!(
            parse_response_head(&mut huge).unwrap_err(),
            ParseError::TooLarge
        );
    }

    #[test]
    fn body_framing_follows_rfc9112() {
        use ResponseFraming::*;
        let cases: [(&Method, &str, Result<ResponseFraming, ParseError>, bool); 10] = [
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
            let mut h = head(text);
            assert_eq!(response_framing(method, &mut h), want, "{text:?}");
            assert_eq!(h.keep_alive, reuse, "reuse after {text:?}");
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
