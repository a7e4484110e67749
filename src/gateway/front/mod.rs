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
mod tests {
    use super::*;
    use http::HeaderValue;

    fn plain(text: &str) -> Option<(usize, String, String, bool, bool)> {
        let mut slots = header_slots();
        match parse(text.as_bytes(), &mut slots) {
            Parsed::Plain(p) => Some((
                p.len,
                p.target.to_string(),
                p.host.to_string(),
                p.close,
                p.html,
            )),
            _ => None,
        }
    }

    fn verdict(text: &str) -> &'static str {
        let mut slots = header_slots();
        match parse(text.as_bytes(), &mut slots) {
            Parsed::Partial => "partial",
            Parsed::Other => "other",
            Parsed::Plain(_) => "plain",
        }
    }

    #[test]
    fn plain_requests_are_served_by_the_front_end() {
        let get = "GET /a/b?x=1 HTTP/1.1\r\nHost: h:1\r\nAccept: text/html,*/*\r\n\r\n";
        assert_eq!(
            plain(get),
            Some((get.len(), "/a/b?x=1".into(), "h:1".into(), false, true))
        );
        let close = "DELETE /x HTTP/1.1\r\nhost: h\r\nConnection: keep-alive, Close\r\n\r\nGET";
        assert_eq!(
            plain(close),
            Some((close.len() - 3, "/x".into(), "h".into(), true, false))
        );
        let mut slots = header_slots();
        let Parsed::Plain(p) = parse(get.as_bytes(), &mut slots) else {
            panic!("not plain")
        };
        assert_eq!(
            (p.method, p.path(), p.query()),
            ("GET", "/a/b", Some("x=1"))
        );
        assert_eq!(p.headers.len(), 2);
        assert_eq!(p.content_length, None);
        // Small bodies of a declared length, the body not part of `len`.
        for (length, want) in [("0", 0), ("1024", 1024), ("65536", MAX_BODY), ("007", 7)] {
            let post = format!(
                "POST /v1/chat HTTP/1.1\r\nHost: h\r\nContent-Type: application/json\r\nContent-Length: {length}\r\n\r\n{{}}"
            );
            let mut slots = header_slots();
            let Parsed::Plain(p) = parse(post.as_bytes(), &mut slots) else {
                panic!("not plain: {post:?}")
            };
            assert_eq!((p.len, p.content_length), (post.len() - 2, Some(want)));
        }
    }

    #[test]
    fn everything_else_goes_to_hyper() {
        let cases = [
            ("GET / HTTP/1.1\r\nHost: h\r\n", "partial"),
            ("GET / HTTP/1.0\r\nHost: h\r\n\r\n", "other"),
            ("GET http://h/ HTTP/1.1\r\nHost: h\r\n\r\n", "other"),
            ("OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n", "other"),
            ("CONNECT h:443 HTTP/1.1\r\nHost: h\r\n\r\n", "other"),
            ("GET / HTTP/1.1\r\n\r\n", "other"),
            ("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", "other"),
            (
                "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 65537\r\n\r\n",
                "other",
            ),
            (
                "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\n",
                "other",
            ),
            (
                "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 2, 2\r\n\r\n",
                "other",
            ),
            (
                "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: +2\r\n\r\n",
                "other",
            ),
            (
                "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: \r\n\r\n",
                "other",
            ),
            (
                "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n",
                "other",
            ),
            (
                "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n",
                "other",
            ),
            (
                "PUT / HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\n\r\n",
                "other",
            ),
            (
                "GET / HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n\r\n",
                "other",
            ),
            (
                "GET / HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\n\r\n",
                "other",
            ),
            (
                "GET / HTTP/1.1\r\nHost: h\r\nConnection: x-secret\r\n\r\n",
                "other",
            ),
            ("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", "other"),
            ("GET /\x01 HTTP/1.1\r\nHost: h\r\n\r\n", "other"),
            ("G@T / HTTP/1.1\r\nHost: h\r\n\r\n", "other"),
        ];
        for (text, want) in cases {
            assert_eq!(verdict(text), want, "{text:?}");
        }
        let many: String = (0..=MAX_HEADERS).map(|i| format!("x-{i}: v\r\n")).collect();
        assert_eq!(
            verdict(&format!("GET / HTTP/1.1\r\nHost: h\r\n{many}\r\n")),
            "other"
        );
        let long = format!("GET /{} HTTP/1.1\r\n", "a".repeat(MAX_HEAD));
        assert_eq!(verdict(&long), "other");
    }

    #[test]
    fn mangled_heads_never_panic_and_plain_ones_hold_their_promises() {
        let base = b"GET /a/b?x=1 HTTP/1.1\r\nHost: h:1\r\nAccept: text/html\r\nConnection: keep-alive\r\n\r\n";
        for buf in crate::gateway::h1::mangled(base, 20_000) {
            holds_its_promises(&buf);
        }
    }

    /// What the connection loop relies on, for any bytes: no panic; a
    /// plain request is a whole head (`head_complete` agrees), within the
    /// limits, with an origin-form target of URI bytes, one Host, nothing
    /// that promises a body or an upgrade, and the same when parsed from
    /// its own bytes alone; a partial one is under `MAX_HEAD`.
    fn holds_its_promises(buf: &[u8]) {
        let shown = || String::from_utf8_lossy(buf).into_owned();
        let _ = limits::partial(buf);
        let mut slots = header_slots();
        match parse(buf, &mut slots) {
            Parsed::Plain(p) => {
                assert!(p.len <= buf.len(), "{}", shown());
                assert!(crate::gateway::h1::head_complete(buf), "{}", shown());
                assert!(p.target.starts_with('/'), "{:?}", p.target);
                assert!(p.target.bytes().all(|b| (0x21..0x7f).contains(&b)));
                let named = |n: &str| {
                    p.headers
                        .iter()
                        .filter(|h| h.name.eq_ignore_ascii_case(n))
                        .count()
                };
                let bodyish = ["transfer-encoding", "expect", "upgrade"]
                    .iter()
                    .any(|n| named(n) > 0);
                assert!(!bodyish, "{}", shown());
                assert_eq!(named("host"), 1, "{}", shown());
                // A body's length is the one header that says it, whole.
                let lengths: Vec<&[u8]> = p
                    .headers
                    .iter()
                    .filter(|h| h.name.eq_ignore_ascii_case("content-length"))
                    .map(|h| h.value)
                    .collect();
                match p.content_length {
                    None => assert!(lengths.is_empty(), "{}", shown()),
                    Some(n) => {
                        assert!(n <= MAX_BODY, "{}", shown());
                        assert_eq!(lengths, [n.to_string().as_bytes()], "{}", shown());
                    }
                }
                let line = limits::request_line_len(p.method, p.target.len());
                assert_eq!(limits::complete(line, p.headers.len(), p.len), None);
                let mut again = header_slots();
                match parse(&buf[..p.len], &mut again) {
                    Parsed::Plain(q) => assert_eq!((q.len, q.target), (p.len, p.target)),
                    other => panic!("{other:?} from the head of {}", shown()),
                }
            }
            Parsed::Partial => assert!(buf.len() < MAX_HEAD),
            Parsed::Other => {}
        }
    }

    /// Request heads built from the parts that decide how the front end
    /// treats them (methods, targets, versions, the headers it looks at,
    /// line ends), with arbitrary bytes among them. Weighted towards the
    /// valid, so that plain requests are common and their promises tested.
    fn request_heads() -> impl proptest::strategy::Strategy<Value = Vec<u8>> {
        use proptest::prelude::*;
        use proptest::sample::select;
        let bytes = |n| proptest::collection::vec(any::<u8>(), 0..n);
        let method = prop_oneof![
            4 => Just("GET"),
            1 => select(vec!["HEAD", "POST", "CONNECT", "OPTIONS", "G@T", ""]),
        ];
        let target = prop_oneof![
            2 => select(vec!["/", "/a/b?x=1", "*", "http://h/", "/%2e%2e/admin", "//x", "/a b"])
                .prop_map(|t| t.as_bytes().to_vec()),
            1 => bytes(24).prop_map(|b| [b"/".as_slice(), &b].concat()),
        ];
        let version = prop_oneof![
            4 => Just("HTTP/1.1"),
            1 => select(vec!["HTTP/1.0", "HTTP/2.0", "http/1.1", "HTTP/1.1 "]),
        ];
        let eol = || {
            prop_oneof![
                8 => Just("\r\n"),
                2 => Just("\n"),
                1 => select(vec!["\r", "", "\n\r"]),
            ]
        };
        let host =
            proptest::option::weighted(0.8, (Just("Host"), select(vec!["h", "h:1", ""]), eol()));
        let name = select(vec![
            "Content-Length",
            "Transfer-Encoding",
            "Connection",
            "Upgrade",
            "Expect",
            "Accept",
            "X-A",
            "X-B",
            "Host",
            "Host ",
            " Host",
            "",
        ]);
        let value = prop_oneof![
            select(vec![
                "h",
                "close",
                "keep-alive, close",
                "upgrade",
                "chunked",
                "5",
                "text/html"
            ])
            .prop_map(|v| v.as_bytes().to_vec()),
            bytes(12),
        ];
        let fields = proptest::collection::vec((name, value, eol()), 0..4);
        (
            method,
            target,
            version,
            eol(),
            host,
            fields,
            eol(),
            bytes(8),
        )
            .prop_map(
                |(method, target, version, end, host, fields, blank, tail)| {
                    let start = [
                        method.as_bytes(),
                        b" ",
                        &target,
                        b" ",
                        version.as_bytes(),
                        end.as_bytes(),
                    ];
                    let host = host.map(|(n, v, e)| (n, v.as_bytes().to_vec(), e));
                    let fields = host.into_iter().chain(fields);
                    crate::gateway::h1::head_bytes(&start, fields, blank, &tail)
                },
            )
    }

    proptest::proptest! {
        #![proptest_config(crate::gateway::h1::generated(3000))]

        #[test]
        fn generated_request_heads_hold_the_parsers_promises(buf in request_heads()) {
            holds_its_promises(&buf);
        }
    }

    fn head(
        status: u16,
        headers: &[(&str, &str)],
        head_req: bool,
        exact: Option<u64>,
        close: bool,
    ) -> (String, BodyOut) {
        let mut map = HeaderMap::new();
        for (k, v) in headers {
            map.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        let mut out = b"stale".to_vec();
        let body = encode_response_head(
            &mut out,
            StatusCode::from_u16(status).unwrap(),
            &map,
            head_req,
            exact,
            close,
        );
        (String::from_utf8(out).unwrap(), body)
    }

    #[test]
    fn response_heads_say_how_the_body_is_framed() {
        let date = [("date", "Thu, 01 Jan 1970 00:00:00 GMT")];
        let with = |extra: &[(&'static str, &'static str)]| -> Vec<(&'static str, &'static str)> {
            date.iter().chain(extra).copied().collect()
        };
        assert_eq!(
            head(200, &with(&[("content-length", "3")]), false, None, false),
            (
                "HTTP/1.1 200 OK\r\ndate: Thu, 01 Jan 1970 00:00:00 GMT\r\ncontent-length: 3\r\n\r\n".into(),
                BodyOut::Length
            )
        );
        assert_eq!(
            head(502, &date, false, Some(12), true),
            (
                "HTTP/1.1 502 Bad Gateway\r\ndate: Thu, 01 Jan 1970 00:00:00 GMT\r\ncontent-length: 12\r\nconnection: close\r\n\r\n".into(),
                BodyOut::Length
            )
        );
        assert_eq!(
            head(200, &date, false, None, false),
            (
                "HTTP/1.1 200 OK\r\ndate: Thu, 01 Jan 1970 00:00:00 GMT\r\ntransfer-encoding: chunked\r\n\r\n".into(),
                BodyOut::Chunked
            )
        );
        for (status, head_req) in [(200, true), (204, false), (304, false)] {
            let (text, body) = head(
                status,
                &with(&[("content-length", "9")]),
                head_req,
                None,
                false,
            );
            assert_eq!(body, BodyOut::None);
            assert!(text.ends_with("content-length: 9\r\n\r\n"), "{text}");
        }
    }

    /// The client's head for a backend's `head` answering `method`.
    fn relayed(method: &http::Method, head: &str, close: bool) -> (String, BodyOut) {
        let mut slots = crate::gateway::h1::header_slots::<16>();
        let raw = crate::gateway::h1::parse_response(head.as_bytes(), &mut slots)
            .unwrap()
            .unwrap();
        let decided = crate::gateway::h1::decide(method, &raw).unwrap();
        let mut out = Vec::new();
        let body = encode_relayed_head(&mut out, &raw, decided, close);
        (String::from_utf8(out).unwrap(), body)
    }

    #[test]
    fn relayed_heads_keep_the_backends_headers_and_redo_the_framing() {
        let date = "Date: Thu, 01 Jan 1970 00:00:00 GMT\r\n";
        let get = http::Method::GET;
        assert_eq!(
            relayed(
                &get,
                &format!("HTTP/1.1 200 OK\r\nServer: b\r\n{date}Content-Length: 2\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\n\r\n"),
                false
            ),
            (
                format!("HTTP/1.1 200 OK\r\nServer: b\r\n{date}Content-Length: 2\r\n\r\n"),
                BodyOut::Length
            )
        );
        // The backend's coding is its own: the client gets chunks of ours,
        // and a body delimited by the backend's close is chunked too.
        for framing in ["Transfer-Encoding: chunked\r\nContent-Length: 9\r\n", ""] {
            let (text, body) = relayed(
                &get,
                &format!("HTTP/1.0 200 OK\r\n{date}{framing}X-A: 1\r\n\r\n"),
                true,
            );
            assert_eq!(
                text,
                format!("HTTP/1.1 200 OK\r\n{date}X-A: 1\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n")
            );
            assert_eq!(body, BodyOut::Chunked);
        }
        // Every line goes out as `name: value CRLF`, whatever the
        // backend's spacing and line ends; a dropped header leaves no gap.
        let (text, _) = relayed(
            &get,
            &format!("HTTP/1.1 200 OK\r\n{date}X-A:1\r\nConnection: keep-alive\r\nX-B: 2\nX-C: 3  \r\nX-D:\r\nContent-Length: 0\r\n\r\n"),
            false,
        );
        assert_eq!(
            text,
            format!("HTTP/1.1 200 OK\r\n{date}X-A: 1\r\nX-B: 2\r\nX-C: 3\r\nX-D: \r\nContent-Length: 0\r\n\r\n")
        );
        // HEAD keeps the length it announces, with no body.
        let (text, body) = relayed(
            &http::Method::HEAD,
            &format!("HTTP/1.1 200 OK\r\n{date}Content-Length: 7\r\n\r\n"),
            false,
        );
        assert!(text.ends_with("Content-Length: 7\r\n\r\n"), "{text}");
        assert_eq!(body, BodyOut::None);
    }

    #[test]
    fn a_missing_date_is_added() {
        let (text, _) = head(200, &[], false, Some(0), false);
        let date = text
            .lines()
            .find_map(|l| l.strip_prefix("date: "))
            .expect("a date header");
        let parsed = httpdate::parse_http_date(date).unwrap();
        let age = SystemTime::now().duration_since(parsed).unwrap_or_default();
        assert!(age.as_secs() < 5, "{date}");
    }
}
