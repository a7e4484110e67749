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
    let host = proptest::option::weighted(0.8, (Just("Host"), select(vec!["h", "h:1", ""]), eol()));
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
            "HTTP/1.1 200 OK\r\ndate: Thu, 01 Jan 1970 00:00:00 GMT\r\ncontent-length: 3\r\n\r\n"
                .into(),
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
