use super::*;
use bytes::BytesMut;
use http::{HeaderMap, HeaderValue, Method, StatusCode};

use super::chunked::MAX_LINE;
use crate::gateway::headers;
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
    let cases: [(&Method, &str, Result<ResponseFraming, ParseError>, bool); 13] = [
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
        // Issue 16: only digits make a length.
        (
            &Method::GET,
            "HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\n",
            Err(ParseError::BadLength),
            true,
        ),
        (
            &Method::GET,
            "HTTP/1.1 200 OK\r\nContent-Length: 0x5\r\n\r\n",
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
    let wire = b"5;ext=1\r\nhello\r\n1A\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nX-Trailer: t\r\n\r\n";
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
