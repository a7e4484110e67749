//! The gateway's own HTTP/1.1 front end, spoken to by hand over raw
//! sockets: pipelining, the hand-over to hyper in the middle of a
//! connection, `Connection: close`, HEAD, the client-side timeouts, a
//! client that leaves while the backend works, and shutdown of idle
//! connections. Every wait has a deadline.

use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::gateway::{backend, config, restored, start, start_with, Gw, DEADLINE};

/// One response as read off the wire.
#[derive(Debug)]
pub(crate) struct Raw {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Raw {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub(crate) fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "not JSON ({e}): {} {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}

/// A client connection that writes bytes as given and parses responses.
pub(crate) struct Client {
    s: TcpStream,
    pub(crate) buf: Vec<u8>,
}

impl Client {
    pub(crate) async fn connect(gw: &Gw) -> Client {
        Client {
            s: TcpStream::connect(gw.addr).await.unwrap(),
            buf: Vec::new(),
        }
    }

    pub(crate) async fn send(&mut self, text: &str) {
        self.s.write_all(text.as_bytes()).await.unwrap();
    }

    /// Read more; panics at EOF or past the deadline.
    pub(crate) async fn more(&mut self) {
        let mut chunk = [0u8; 16384];
        let n = tokio::time::timeout(DEADLINE, self.s.read(&mut chunk))
            .await
            .expect("an answer in time")
            .expect("a readable connection");
        assert!(
            n > 0,
            "connection closed; had {:?}",
            String::from_utf8_lossy(&self.buf)
        );
        self.buf.extend_from_slice(&chunk[..n]);
    }

    /// The next response; `head_request` says there is no body to read.
    pub(crate) async fn response(&mut self, head_request: bool) -> Raw {
        let (len, status, headers) = loop {
            let mut slots = [httparse::EMPTY_HEADER; 64];
            let mut r = httparse::Response::new(&mut slots);
            if let httparse::Status::Complete(len) = r.parse(&self.buf).unwrap() {
                let headers: Vec<(String, String)> = r
                    .headers
                    .iter()
                    .map(|h| {
                        (
                            h.name.to_ascii_lowercase(),
                            String::from_utf8_lossy(h.value).into_owned(),
                        )
                    })
                    .collect();
                break (len, r.code.unwrap(), headers);
            }
            self.more().await;
        };
        self.buf.drain(..len);
        let mut raw = Raw {
            status,
            headers,
            body: Vec::new(),
        };
        if head_request || status == 204 || status == 304 {
            return raw;
        }
        if let Some(n) = raw.header("content-length") {
            let n: usize = n.parse().unwrap();
            while self.buf.len() < n {
                self.more().await;
            }
            raw.body = self.buf.drain(..n).collect();
        } else {
            assert_eq!(raw.header("transfer-encoding"), Some("chunked"), "{raw:?}");
            loop {
                let line_end = loop {
                    if let Some(i) = self.buf.windows(2).position(|w| w == b"\r\n") {
                        break i;
                    }
                    self.more().await;
                };
                let size = usize::from_str_radix(
                    std::str::from_utf8(&self.buf[..line_end]).unwrap().trim(),
                    16,
                )
                .unwrap();
                while self.buf.len() < line_end + 2 + size + 2 {
                    self.more().await;
                }
                let chunk: Vec<u8> = self.buf.drain(..line_end + 2 + size + 2).collect();
                if size == 0 {
                    break;
                }
                raw.body
                    .extend_from_slice(&chunk[line_end + 2..line_end + 2 + size]);
            }
        }
        raw
    }

    /// Whether the gateway closes the connection (EOF) within the deadline.
    pub(crate) async fn closed(&mut self) -> bool {
        let mut chunk = [0u8; 1024];
        loop {
            match tokio::time::timeout(DEADLINE, self.s.read(&mut chunk)).await {
                Err(_) => return false,
                Ok(Ok(0)) | Ok(Err(_)) => return true,
                Ok(Ok(n)) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }
}

fn get(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: gw.test\r\n\r\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_are_answered_in_order() {
    let b = backend("b").await;
    let gw = start(Some(b.url()), json!([])).await;
    let mut c = Client::connect(&gw).await;
    c.send(&format!(
        "{}{}{}",
        get("/one"),
        get("/two?x=1"),
        get("/three")
    ))
    .await;
    for (path, query) in [
        ("/one", Value::Null),
        ("/two", json!("x=1")),
        ("/three", Value::Null),
    ] {
        let r = c.response(false).await;
        assert_eq!(r.status, 200);
        let v = r.json();
        assert_eq!(
            (v["path"].clone(), v["query"].clone()),
            (json!(path), query)
        );
        assert!(r.header("date").is_some(), "{r:?}");
    }
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_moves_to_hyper_at_its_first_request_the_front_end_does_not_serve() {
    let b = backend("b").await;
    let gw = start(
        Some(b.url()),
        json!([{"id": "old", "action": "redirect", "match": {"path_equal": "/old"}, "redirect_to": "/new"}]),
    )
    .await;
    let mut c = Client::connect(&gw).await;
    // Plain (front end), then a body (hyper), then plain again (still hyper).
    c.send(&get("/a")).await;
    assert_eq!(c.response(false).await.json()["path"], "/a");
    c.send("POST /x/upload HTTP/1.1\r\nHost: gw.test\r\nContent-Length: 5\r\n\r\nhello")
        .await;
    let r = c.response(false).await;
    assert_eq!((r.status, r.json()["bytes"].clone()), (200, json!(5)));
    c.send(&get("/b")).await;
    assert_eq!(c.response(false).await.json()["path"], "/b");

    // A redirect and the admin API on a connection that began plain.
    let mut c = Client::connect(&gw).await;
    c.send(&format!(
        "{}{}{}",
        get("/c"),
        get("/old?q=1"),
        get("/admin/healthz")
    ))
    .await;
    assert_eq!(c.response(false).await.json()["path"], "/c");
    let r = c.response(false).await;
    assert_eq!((r.status, r.header("location")), (302, Some("/new?q=1")));
    assert_eq!(c.response(false).await.status, 200);

    // A WebSocket upgrade after a plain request on the same connection.
    let mut c = Client::connect(&gw).await;
    c.send(&get("/d")).await;
    assert_eq!(c.response(false).await.json()["path"], "/d");
    c.send(
        "GET /ws HTTP/1.1\r\nHost: gw.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    )
    .await;
    let r = c.response(true).await;
    assert_eq!(
        (r.status, r.header("sec-websocket-accept")),
        (101, Some("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="))
    );
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_close_and_error_answers_from_the_front_end() {
    let b = backend("b").await;
    let gw = start(
        Some(b.url()),
        json!([{"id": "down", "match": {"path_equal": "/down"}, "backend": "http://127.0.0.1:1"}]),
    )
    .await;
    let mut c = Client::connect(&gw).await;
    // HEAD keeps the backend's length and sends no body: the next
    // response on the connection must still parse.
    c.send(&format!(
        "HEAD /h HTTP/1.1\r\nHost: gw.test\r\n\r\n{}",
        get("/after-head")
    ))
    .await;
    let r = c.response(true).await;
    assert_eq!(r.status, 200);
    assert!(
        r.header("content-length").is_some_and(|n| n != "0"),
        "{r:?}"
    );
    assert_eq!(c.response(false).await.json()["path"], "/after-head");
    // A backend that refuses: 502 from the front end, as JSON or HTML.
    c.send(&get("/down")).await;
    let r = c.response(false).await;
    assert_eq!(r.status, 502);
    assert!(
        r.json()["error"].as_str().unwrap().contains("127.0.0.1:1"),
        "{r:?}"
    );
    c.send("GET /down HTTP/1.1\r\nHost: gw.test\r\nAccept: text/html\r\n\r\n")
        .await;
    let r = c.response(false).await;
    assert_eq!(r.status, 502);
    assert!(r.header("content-type").unwrap().starts_with("text/html"));
    // `Connection: close` is answered, said back, and the connection closed.
    c.send("GET /last HTTP/1.1\r\nHost: gw.test\r\nConnection: close\r\n\r\n")
        .await;
    let r = c.response(false).await;
    assert_eq!(r.json()["path"], "/last");
    assert_eq!(r.header("connection"), Some("close"));
    assert!(
        c.closed().await,
        "the connection stays open after Connection: close"
    );
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_heads_and_idle_connections_are_closed() {
    let b = backend("b").await;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), Some(b.url()), json!([]));
    cfg.timeouts.header_read = Duration::from_millis(300);
    // Over twice the pause below (plus the deadline's slack, `idle`/16),
    // so that the pause stays well under it even on a loaded machine; no
    // longer, since the test waits it out.
    cfg.timeouts.idle = Duration::from_millis(2500);
    let gw = start_with(cfg, dir, restored(), |g| g).await;

    // Nothing, or half a head: closed after `header_read`.
    let mut silent = Client::connect(&gw).await;
    let mut half = Client::connect(&gw).await;
    half.send("GET / HTTP/1.1\r\nHost: gw").await;
    assert!(silent.closed().await, "a silent connection stays open");
    assert!(half.closed().await, "a half-sent head keeps its connection");

    // Between requests the longer idle timeout applies: a pause of
    // several `header_read`s (well under `idle`) keeps the connection.
    let mut c = Client::connect(&gw).await;
    c.send(&get("/1")).await;
    assert_eq!(c.response(false).await.json()["path"], "/1");
    tokio::time::sleep(Duration::from_millis(1200)).await;
    c.send(&get("/2")).await;
    assert_eq!(c.response(false).await.json()["path"], "/2");
    // Past `idle`, it is closed.
    assert!(
        c.closed().await,
        "an idle connection stays open past the idle timeout"
    );
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_leaves_closes_its_backend_request() {
    // A backend that reads the request head and then waits: it must see
    // its connection close once the client has gone.
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let backend_addr = l.local_addr().unwrap();
    let (has_request, got_request) = tokio::sync::oneshot::channel();
    let seen = tokio::spawn(async move {
        let (mut s, _) = l.accept().await.unwrap();
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = s.read(&mut chunk).await.unwrap();
            assert!(n > 0);
            buf.extend_from_slice(&chunk[..n]);
        }
        let head = String::from_utf8_lossy(&buf).into_owned();
        let _ = has_request.send(());
        let n = tokio::time::timeout(DEADLINE, s.read(&mut chunk)).await;
        (head, matches!(n, Ok(Ok(0)) | Ok(Err(_))))
    });
    let gw = start(Some(format!("http://{backend_addr}")), json!([])).await;
    let mut c = Client::connect(&gw).await;
    c.send(&get("/wait")).await;
    // Once the backend has the request, the client hangs up.
    tokio::time::timeout(DEADLINE, got_request)
        .await
        .expect("the request reaches the backend")
        .unwrap();
    drop(c);
    let (head, closed) = tokio::time::timeout(DEADLINE, seen).await.unwrap().unwrap();
    assert!(head.starts_with("GET /wait HTTP/1.1\r\n"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("x-forwarded-for: 127.0.0.1"),
        "{head}"
    );
    assert!(closed, "the backend connection outlived the client");
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_idle_kept_alive_connections() {
    let b = backend("b").await;
    let gw = start(Some(b.url()), json!([])).await;
    let mut c = Client::connect(&gw).await;
    c.send(&get("/x")).await;
    assert_eq!(c.response(false).await.status, 200);
    gw.stop.cancel();
    assert!(c.closed().await, "an idle connection outlived the shutdown");
    tokio::time::timeout(DEADLINE, gw.task)
        .await
        .expect("serve returns after shutdown")
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_with_prior_knowledge_is_handed_to_hyper() {
    use http_body_util::BodyExt;
    let b = backend("b").await;
    let gw = start(Some(b.url()), json!([])).await;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(true)
        .build_http::<http_body_util::Empty<bytes::Bytes>>();
    for path in ["/h2/a", "/h2/b"] {
        let resp = tokio::time::timeout(DEADLINE, client.get(gw.url(path).parse().unwrap()))
            .await
            .expect("an answer in time")
            .unwrap();
        assert_eq!(resp.version(), hyper::Version::HTTP_2);
        assert_eq!(resp.status(), 200);
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["path"], path);
    }
    gw.shutdown().await;
}

/// Issue 16 (RFC 9112 §3.2): an HTTP/1.1 request without Host or with two
/// gets 400 and never reaches the backend (before, one Host was picked or
/// invented); CONNECT gets 405. HTTP/1.0 may omit Host.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_rules_and_connect_are_enforced() {
    let b = backend("b").await;
    let gw = start(Some(b.url()), json!([])).await;
    for (req, want) in [
        ("GET /x HTTP/1.1\r\n\r\n", 400),
        ("GET /x HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
        ("POST /x HTTP/1.1\r\nContent-Length: 0\r\n\r\n", 400),
        ("GET http://h/x HTTP/1.1\r\n\r\n", 400),
        (
            "CONNECT 127.0.0.1:22 HTTP/1.1\r\nHost: 127.0.0.1:22\r\n\r\n",
            405,
        ),
        ("GET /x HTTP/1.0\r\n\r\n", 200),
    ] {
        let mut c = Client::connect(&gw).await;
        c.send(req).await;
        let r = c.response(false).await;
        assert_eq!(r.status, want, "{req:?}: {r:?}");
        if want == 200 {
            assert_eq!(r.json()["path"], "/x");
        }
    }
    // The same on a connection the front end served first.
    let mut c = Client::connect(&gw).await;
    c.send(&format!("{}GET /y HTTP/1.1\r\n\r\n", get("/one")))
        .await;
    assert_eq!(c.response(false).await.status, 200);
    assert_eq!(c.response(false).await.status, 400);
    gw.shutdown().await;
}

/// Issue 11, item 3: the same head limits on both paths. `prefix` is sent
/// first on the connection (empty: the front end serves it; a request
/// with a body: hyper has the connection by then).
async fn refused_on_one_path(gw: &Gw, prefix: &str, request: &str, want: u16) {
    let mut c = Client::connect(gw).await;
    if !prefix.is_empty() {
        c.send(prefix).await;
        assert_eq!(c.response(false).await.status, 200);
    }
    c.send(request).await;
    let r = c.response(false).await;
    let start: String = request.chars().take(60).collect();
    assert_eq!(r.status, want, "{start:?} after {prefix:?}: {r:?}");
    assert_eq!(r.header("connection"), Some("close"), "{r:?}");
    assert!(
        r.json()["error"].as_str().unwrap().contains("limit"),
        "{r:?}"
    );
    assert!(c.closed().await, "the connection stays open after {want}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heads_over_the_limits_are_414_or_431_on_both_paths() {
    use stackctl::gateway::limits::{request_line_len, MAX_HEAD, MAX_HEADERS, MAX_REQUEST_LINE};
    let b = backend("b").await;
    let gw = start(Some(b.url()), json!([])).await;
    let target = |len: usize| format!("/{}", "a".repeat(len - 1));
    // The longest request line accepted, on both paths.
    let longest = target(MAX_REQUEST_LINE - request_line_len("GET", 0));
    let upload = "POST /x/upload HTTP/1.1\r\nHost: gw.test\r\nContent-Length: 2\r\n\r\nhi";
    for prefix in ["", upload] {
        let mut c = Client::connect(&gw).await;
        c.send(&format!("{prefix}{}", get(&longest))).await;
        if !prefix.is_empty() {
            c.response(false).await;
        }
        let r = c.response(false).await;
        assert_eq!((r.status, r.json()["path"].clone()), (200, json!(longest)));
    }

    let long_target = get(&target(60 * 1024));
    let one_more = get(&format!("{longest}b"));
    let fields: String = (0..MAX_HEADERS).map(|i| format!("x-{i}: v\r\n")).collect();
    let many = format!("GET / HTTP/1.1\r\nHost: gw.test\r\n{fields}\r\n");
    let cookie = format!(
        "GET / HTTP/1.1\r\nHost: gw.test\r\nCookie: {}\r\n\r\n",
        "c".repeat(MAX_HEAD)
    );
    // Sent whole, so the front end decides on a complete head (hyper then
    // refuses it) rather than on a partial one.
    let cookie_fits_a_read = format!(
        "GET / HTTP/1.1\r\nHost: gw.test\r\nCookie: {}\r\n\r\n",
        "c".repeat(MAX_HEAD - 40)
    );
    for prefix in ["", upload] {
        for (request, want) in [
            (&long_target, 414),
            (&one_more, 414),
            (&many, 431),
            (&cookie, 431),
            (&cookie_fits_a_read, 431),
        ] {
            refused_on_one_path(&gw, prefix, request, want).await;
        }
    }

    // HTTP/2 (hyper's path from the start): the same limit on the target.
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(true)
        .build_http::<http_body_util::Empty<bytes::Bytes>>();
    for (path, want) in [
        (longest.clone(), 200),
        (format!("{longest}{}", "b".repeat(100)), 414),
    ] {
        let resp = tokio::time::timeout(DEADLINE, client.get(gw.url(&path).parse().unwrap()))
            .await
            .expect("an answer in time")
            .unwrap();
        assert_eq!(resp.status(), want, "HTTP/2 target of {} bytes", path.len());
    }
    gw.shutdown().await;
}

/// Issue 16: a raw UTF-8 path that is also normalised reached the backend
/// as mojibake; it must arrive as the same bytes, on both paths.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_utf8_paths_keep_their_bytes() {
    let b = backend("b").await;
    let gw = start(Some(b.url()), json!([])).await;
    for version in ["HTTP/1.1", "HTTP/1.0"] {
        let mut c = Client::connect(&gw).await;
        c.send(&format!(
            "GET /caf\u{e9}//x/./\u{5bc6} {version}\r\nHost: h\r\n\r\n"
        ))
        .await;
        let r = c.response(false).await;
        assert_eq!(r.status, 200, "{version}: {r:?}");
        assert_eq!(r.json()["path"], "/caf\u{e9}/x/\u{5bc6}", "{version}");
    }
    gw.shutdown().await;
}

/// Issue 16: headers with underscores are dropped (nginx's default), and a
/// client's `Connection` cannot remove Host or Content-Length; on both paths.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn underscored_headers_are_dropped_and_connection_keeps_host() {
    let b = backend("b").await;
    let gw = start(Some(b.url()), json!([])).await;
    for (version, body) in [("HTTP/1.1", ""), ("HTTP/1.1", "abc"), ("HTTP/1.0", "")] {
        let mut c = Client::connect(&gw).await;
        let method = if body.is_empty() { "GET" } else { "POST" };
        c.send(&format!(
            "{method} /h {version}\r\nHost: h\r\nConnection: Host, Content-Length, X-Custom\r\n\
             X_Forwarded_For: 10.9.9.9\r\nX-Custom: 1\r\nX-Kept: 1\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ))
        .await;
        let r = c.response(false).await;
        assert_eq!(r.status, 200, "{version} {method}: {r:?}");
        let h = &r.json()["headers"];
        assert_eq!(h["host"], "h", "{version} {method}: {h}");
        assert_eq!(h["x-kept"], "1");
        assert!(h.get("x_forwarded_for").is_none(), "{h}");
        assert!(h.get("x-custom").is_none(), "{h}");
        assert_eq!(h["x-forwarded-for"], "127.0.0.1");
        if !body.is_empty() {
            assert_eq!(h["content-length"], "3", "{h}");
        }
    }
    gw.shutdown().await;
}

/// Issue 16: a client that stops sending its body is the client's fault:
/// 408 (nginx's `client_body_timeout`), not the backend's 504.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_upload_is_408_not_504() {
    let b = backend("b").await;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), Some(b.url()), json!([]));
    cfg.timeouts.response = Duration::from_millis(400);
    let gw = start_with(cfg, dir, restored(), |g| g).await;
    let mut c = Client::connect(&gw).await;
    c.send("POST /upload HTTP/1.1\r\nHost: h\r\nContent-Length: 1000\r\n\r\nonly-a-little")
        .await;
    let r = c.response(false).await;
    assert_eq!(r.status, 408, "{r:?}");
    assert!(
        String::from_utf8_lossy(&r.body).contains("request body stalled"),
        "{r:?}"
    );
    gw.shutdown().await;
}
