//! How large a client's request head may be, as pure checks that both of
//! the gateway's paths apply: the own front end (`conn`, on bytes as they
//! arrive) and hyper's server (`Shared::handle`, on the parsed request).
//!
//! The numbers follow nginx's defaults (`large_client_header_buffers 4 8k`):
//!
//! - the request line (method, target, version) at most [`MAX_REQUEST_LINE`]
//!   bytes, else 414 URI Too Long (nginx: 414 too);
//! - at most [`MAX_HEADERS`] header fields, and the whole head (request
//!   line, headers, blank line) at most [`MAX_HEAD`] bytes, else 431
//!   Request Header Fields Too Large. nginx answers 400 "Request Header Or
//!   Cookie Too Large" there; 431 is the status RFC 6585 made for it, and
//!   hyper's own answer when its buffer fills.
//!
//! A refused request is answered and its connection closed: what follows a
//! head cut short cannot be told apart from the rest of that head.
//!
//! The same goes for a head whose body framing two parsers could read two
//! ways ([`ambiguous_framing`], 400; nginx says 501): the way requests are
//! smuggled past a proxy.

use http::{HeaderMap, StatusCode, Uri};

/// The longest request line accepted (method, target, version).
pub const MAX_REQUEST_LINE: usize = 8 * 1024;
/// The most header fields a request may carry.
pub const MAX_HEADERS: usize = 100;
/// The largest request head accepted: request line, headers, blank line.
pub const MAX_HEAD: usize = 32 * 1024;

/// Which limit a request head passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exceeded {
    /// The request line is over [`MAX_REQUEST_LINE`].
    RequestLine,
    /// Over [`MAX_HEADERS`] fields, or the head over [`MAX_HEAD`] bytes.
    Headers,
}

impl Exceeded {
    /// The status the client gets.
    pub fn status(self) -> StatusCode {
        match self {
            Exceeded::RequestLine => StatusCode::URI_TOO_LONG,
            Exceeded::Headers => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        }
    }
}

/// Whether the start of a head that is not complete yet (no blank line in
/// `buf`) already passes a limit, so that waiting for the rest is pointless.
/// Costs one scan of `buf` (at most [`MAX_HEAD`] bytes are ever waited for).
pub fn partial(buf: &[u8]) -> Option<Exceeded> {
    // A request line longer than the limit, ended or not (a line ends at
    // LF, as httparse accepts; a CR before it is not counted).
    let line = match buf.iter().position(|b| *b == b'\n') {
        Some(i) => buf[..i].strip_suffix(b"\r").map_or(i, <[u8]>::len),
        None => buf.len(),
    };
    if line > MAX_REQUEST_LINE {
        return Some(Exceeded::RequestLine);
    }
    // The blank line is still to come, so the whole head will be longer
    // than what is here.
    if buf.len() >= MAX_HEAD {
        return Some(Exceeded::Headers);
    }
    // Every LF after the request line's ends a header field.
    let fields = buf
        .iter()
        .filter(|b| **b == b'\n')
        .count()
        .saturating_sub(1);
    (fields > MAX_HEADERS).then_some(Exceeded::Headers)
}

/// Whether a complete head passes a limit: `request_line` bytes of request
/// line (without its line end), `headers` fields, `head` bytes in all.
pub fn complete(request_line: usize, headers: usize, head: usize) -> Option<Exceeded> {
    if request_line > MAX_REQUEST_LINE {
        Some(Exceeded::RequestLine)
    } else if headers > MAX_HEADERS || head > MAX_HEAD {
        Some(Exceeded::Headers)
    } else {
        None
    }
}

/// The length of the request line `METHOD SP target SP HTTP/1.1`.
pub fn request_line_len(method: &str, target_len: usize) -> usize {
    method.len() + 1 + target_len + " HTTP/1.1".len()
}

/// The checks of [`complete`] on a request hyper has parsed (HTTP/1 or
/// HTTP/2): its head's size is counted as HTTP/1.1 would spell it. An
/// HTTP/1 target counts as sent (an absolute-form one with its scheme and
/// authority); an HTTP/2 one is its path and query (`:path`), its
/// authority counting as a Host field would.
pub fn parsed(
    method: &str,
    version: http::Version,
    uri: &Uri,
    headers: &HeaderMap,
) -> Option<Exceeded> {
    let path = uri.path_and_query().map_or(0, |pq| pq.as_str().len());
    let prefix = uri.scheme_str().map_or(0, |s| s.len() + "://".len())
        + uri.authority().map_or(0, |a| a.as_str().len());
    let (target, host_field) = if version >= http::Version::HTTP_2 {
        (
            path,
            uri.authority()
                .map_or(0, |a| "host: \r\n".len() + a.as_str().len()),
        )
    } else {
        (prefix + path, 0)
    };
    let line = request_line_len(method, target);
    // `name: value CRLF` per field, then the request line's CRLF and the
    // blank line.
    let fields: usize = headers
        .iter()
        .map(|(n, v)| n.as_str().len() + v.len() + 4)
        .sum();
    complete(line, headers.len(), line + 2 + host_field + fields + 2)
}

/// Why a request's body framing is refused, if it is: a
/// `Transfer-Encoding` other than exactly one `chunked` (hyper would take
/// `identity, chunked` as chunked; nginx refuses it, and a backend may read
/// it another way). `Content-Length` beside `Transfer-Encoding` and
/// repeated equal lengths never get here on HTTP/1: hyper drops the
/// length in favour of the coding (and closes the connection after the
/// answer, as RFC 9112 §6.1 asks), and keeps one of equal lengths.
pub fn ambiguous_framing(headers: &HeaderMap) -> Option<&'static str> {
    let mut codings = headers.get_all(http::header::TRANSFER_ENCODING).iter();
    let only_chunked = codings
        .next()
        .is_none_or(|c| c.as_bytes().trim_ascii().eq_ignore_ascii_case(b"chunked"));
    if !only_chunked || codings.next().is_some() {
        return Some("the only `Transfer-Encoding` accepted on a request is `chunked`");
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(target_len: usize, fields: usize, value_len: usize) -> Vec<u8> {
        let mut h = format!(
            "GET /{} HTTP/1.1\r\nHost: h\r\n",
            "a".repeat(target_len - 1)
        );
        for i in 1..fields {
            h.push_str(&format!("x-{i:03}: {}\r\n", "v".repeat(value_len)));
        }
        h.push_str("\r\n");
        h.into_bytes()
    }

    #[test]
    fn a_long_request_line_is_414_before_its_end_arrives() {
        let line_max = MAX_REQUEST_LINE - request_line_len("GET", 0);
        let ok = head(line_max, 1, 0);
        assert_eq!(partial(&ok[..ok.len() - 2]), None);
        let long = head(line_max + 1, 1, 0);
        for cut in [MAX_REQUEST_LINE + 1, long.len() - 2] {
            assert_eq!(partial(&long[..cut]), Some(Exceeded::RequestLine), "{cut}");
        }
        assert_eq!(
            partial(format!("GET /{}", "a".repeat(60 * 1024)).as_bytes()),
            Some(Exceeded::RequestLine)
        );
        // A bare LF ends the line as well as CRLF.
        let lf = format!("GET /{} HTTP/1.1\nHost: h\n", "a".repeat(line_max - 1));
        assert_eq!(partial(lf.as_bytes()), None);
        assert_eq!(
            complete(request_line_len("GET", line_max + 1), 1, 9000),
            Some(Exceeded::RequestLine)
        );
        assert_eq!(complete(request_line_len("GET", line_max), 1, 9000), None);
        assert_eq!(Exceeded::RequestLine.status().as_u16(), 414);
    }

    #[test]
    fn too_many_or_too_large_headers_are_431() {
        let many = head(1, MAX_HEADERS + 1, 1);
        // Noticed as soon as the field past the limit has ended.
        let cut = many.len() - 2;
        assert_eq!(partial(&many[..cut]), Some(Exceeded::Headers));
        let enough = head(1, MAX_HEADERS, 1);
        assert_eq!(partial(&enough[..enough.len() - 2]), None);
        assert_eq!(complete(20, MAX_HEADERS, 4000), None);
        assert_eq!(complete(20, MAX_HEADERS + 1, 4000), Some(Exceeded::Headers));

        let big = head(1, 10, 4000);
        assert!(big.len() > MAX_HEAD);
        assert_eq!(partial(&big[..MAX_HEAD]), Some(Exceeded::Headers));
        assert_eq!(partial(&big[..MAX_HEAD - 1]), None);
        assert_eq!(complete(20, 10, MAX_HEAD), None);
        assert_eq!(complete(20, 10, MAX_HEAD + 1), Some(Exceeded::Headers));
        assert_eq!(Exceeded::Headers.status().as_u16(), 431);
    }

    #[test]
    fn framing_two_parsers_could_read_two_ways_is_refused() {
        let map = |pairs: &[(&'static str, &'static str)]| {
            let mut m = HeaderMap::new();
            for (k, v) in pairs {
                m.append(*k, v.parse().unwrap());
            }
            m
        };
        let te = "transfer-encoding";
        for ok in [vec![], vec![(te, "chunked")], vec![(te, " Chunked ")]] {
            assert_eq!(ambiguous_framing(&map(&ok)), None, "{ok:?}");
        }
        for bad in [
            vec![(te, "identity, chunked")],
            vec![(te, "chunked, identity")],
            vec![(te, "gzip")],
            vec![(te, "chunked"), (te, "chunked")],
        ] {
            assert!(ambiguous_framing(&map(&bad)).is_some(), "{bad:?}");
        }
    }

    const H1: http::Version = http::Version::HTTP_11;

    #[test]
    fn parsed_requests_are_measured_as_http11_spells_them() {
        let mut headers = HeaderMap::new();
        headers.insert("host", "h".parse().unwrap());
        let uri: Uri = format!("/{}", "a".repeat(100)).parse().unwrap();
        assert_eq!(parsed("GET", H1, &uri, &headers), None);
        let line_max = MAX_REQUEST_LINE - request_line_len("GET", 0);
        let uri: Uri = format!("/{}", "a".repeat(line_max)).parse().unwrap();
        assert_eq!(
            parsed("GET", H1, &uri, &headers),
            Some(Exceeded::RequestLine)
        );
        let uri: Uri = format!("http://h/{}", "a".repeat(line_max - 9))
            .parse()
            .unwrap();
        assert_eq!(parsed("GET", H1, &uri, &headers), None);
        let uri: Uri = format!("http://h/{}", "a".repeat(line_max - 8))
            .parse()
            .unwrap();
        assert_eq!(
            parsed("GET", H1, &uri, &headers),
            Some(Exceeded::RequestLine)
        );

        // HTTP/2: the target is `:path`; the authority is a Host field.
        let h2 = http::Version::HTTP_2;
        let uri: Uri = format!("http://h/{}", "a".repeat(line_max - 1))
            .parse()
            .unwrap();
        assert_eq!(parsed("GET", h2, &uri, &HeaderMap::new()), None);
        let uri: Uri = format!("http://h/{}", "a".repeat(line_max))
            .parse()
            .unwrap();
        assert_eq!(
            parsed("GET", h2, &uri, &HeaderMap::new()),
            Some(Exceeded::RequestLine)
        );

        let uri: Uri = "/".parse().unwrap();
        for i in 0..MAX_HEADERS {
            headers.append(
                http::HeaderName::from_bytes(format!("x-{i}").as_bytes()).unwrap(),
                "v".parse().unwrap(),
            );
        }
        assert_eq!(parsed("GET", H1, &uri, &headers), Some(Exceeded::Headers));
        let mut big = HeaderMap::new();
        big.insert("cookie", "c".repeat(MAX_HEAD).parse().unwrap());
        assert_eq!(parsed("GET", H1, &uri, &big), Some(Exceeded::Headers));
    }
}
