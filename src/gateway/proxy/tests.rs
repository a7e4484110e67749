use super::*;
use http_body_util::BodyExt;
use std::borrow::Cow;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::gateway::headers::Peer;
use crate::gateway::rules::Backend;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

#[test]
fn origin_form_reuses_or_rebuilds_the_target() {
    let cases = [
        ("/a/b?x=1", "/a/b", "/a/b?x=1"),
        ("/gemini/v1?x=1", "/v1", "/v1?x=1"),
        ("/gemini/", "/", "/"),
        ("http://h:1/a?q", "/a", "/a?q"),
        ("/a//b", "/a/b", "/a/b"),
    ];
    for (client, path, want) in cases {
        let u: Uri = client.parse().unwrap();
        assert_eq!(origin_form(&u, path).unwrap().to_string(), want, "{client}");
    }
}

/// A backend answering `ok` to each request; with `close_after_each`
/// it closes the connection after the response without saying so, as
/// a backend whose keep-alive timer fired would. Returns its address
/// and a count of accepted connections.
async fn backend(close_after_each: bool) -> (SocketAddr, Arc<AtomicUsize>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        loop {
            let (mut s, _) = l.accept().await.unwrap();
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 1024];
                loop {
                    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                        match s.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    buf.clear();
                    let resp = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                    if s.write_all(resp).await.is_err() || close_after_each {
                        return;
                    }
                }
            });
        }
    });
    (addr, accepted)
}

/// The gateway's data path alone: a server whose every request is
/// forwarded to `to` through `up`.
async fn front(up: Upstream, to: SocketAddr) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let backend: &'static Backend = Box::leak(Box::new(Backend { addr: to }));
    let tunnels = Tunnels {
        tracker: TaskTracker::new(),
        stop: CancellationToken::new(),
        idle: Duration::from_secs(60),
    };
    tokio::spawn(async move {
        loop {
            let (s, peer) = l.accept().await.unwrap();
            let (up, tunnels) = (up.clone(), tunnels.clone());
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let (up, tunnels) = (up.clone(), tunnels.clone());
                    async move {
                        let fwd =
                            headers::forwarded(req.headers(), None, &Peer::new(peer.ip(), 80), &[]);
                        let path = req.uri().path().to_string();
                        let target = Target {
                            rule_id: None,
                            backend,
                            path: Cow::Owned(path),
                            forwarded_prefix: None,
                            set_headers: &[],
                        };
                        let r = up.forward(req, &target, &fwd, &tunnels).await;
                        Ok::<_, std::convert::Infallible>(r.unwrap_or_else(|e| {
                            let mut r = Response::new(crate::gateway::body::full(e.to_string()));
                            *r.status_mut() = StatusCode::BAD_GATEWAY;
                            r
                        }))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    addr
}

fn upstream_idle(pool_idle: Duration) -> Upstream {
    Upstream::new(UpstreamConfig {
        connect: Duration::from_secs(5),
        response: Duration::from_secs(5),
        pool_idle,
        max_body: 0,
    })
}

fn upstream() -> Upstream {
    upstream_idle(Duration::from_secs(4))
}

/// Send `n` requests one after another on one client connection;
/// returns each response's status line and body.
async fn get_n(gw: SocketAddr, n: usize) -> Vec<String> {
    let mut s = tokio::net::TcpStream::connect(gw).await.unwrap();
    let mut out = Vec::new();
    for _ in 0..n {
        s.write_all(b"GET /x HTTP/1.1\r\nhost: t\r\n\r\n")
            .await
            .unwrap();
        let mut buf = Vec::new();
        let mut chunk = [0u8; 1024];
        while !(buf.windows(4).any(|w| w == b"\r\n\r\n")
            && String::from_utf8_lossy(&buf).ends_with("ok")
            || String::from_utf8_lossy(&buf).contains("502"))
        {
            let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut chunk))
                .await
                .unwrap()
                .unwrap();
            assert!(n > 0, "gateway closed: {}", String::from_utf8_lossy(&buf));
            buf.extend_from_slice(&chunk[..n]);
        }
        let text = String::from_utf8_lossy(&buf).to_string();
        let status = text.lines().next().unwrap_or("").to_string();
        out.push(format!(
            "{status} {}",
            text.rsplit("\r\n").next().unwrap_or("")
        ));
    }
    out
}

#[tokio::test]
async fn one_backend_connection_serves_requests_in_turn() {
    let (b, accepted) = backend(false).await;
    let gw = front(upstream(), b).await;
    let got = get_n(gw, 5).await;
    assert_eq!(got, vec!["HTTP/1.1 200 OK ok"; 5]);
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        1,
        "the connection is pooled and reused"
    );
}

#[tokio::test]
async fn a_pooled_connection_the_backend_closed_is_not_a_failure() {
    let (b, accepted) = backend(true).await;
    let gw = front(upstream(), b).await;
    let got = get_n(gw, 5).await;
    assert_eq!(got, vec!["HTTP/1.1 200 OK ok"; 5]);
    assert_eq!(accepted.load(Ordering::SeqCst), 5);
}

// On tokio's paused clock, which the pool's idleness (the coarse clock)
// follows in unit tests: everything here is one runtime's tasks on
// loopback, so the clock only moves when all of them wait.
#[tokio::test(start_paused = true)]
async fn connections_idle_past_pool_idle_are_not_reused() {
    let idle = Duration::from_secs(30);
    let (b, accepted) = backend(false).await;
    let gw = front(upstream_idle(idle), b).await;
    assert_eq!(get_n(gw, 1).await, vec!["HTTP/1.1 200 OK ok"]);
    // Just under the idle limit: reused.
    tokio::time::advance(idle - Duration::from_secs(1)).await;
    assert_eq!(get_n(gw, 1).await, vec!["HTTP/1.1 200 OK ok"]);
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
    // Past it: a new connection.
    tokio::time::advance(idle + Duration::from_secs(1)).await;
    assert_eq!(get_n(gw, 1).await, vec!["HTTP/1.1 200 OK ok"]);
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
}

/// What a scripted backend saw of one request.
struct Seen {
    head: String,
    body: Vec<u8>,
}

/// Read one request (head and body, by its framing) off `s`.
async fn read_request(s: &mut tokio::net::TcpStream, buf: &mut Vec<u8>) -> Option<Seen> {
    let mut chunk = [0u8; 4096];
    let end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        match s.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..end]).to_lowercase();
    buf.drain(..end);
    let length = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length: "))
        .map(|v| v.trim().parse::<usize>().unwrap());
    let done = |b: &[u8]| match length {
        Some(n) => b.len() >= n,
        None if head.contains("transfer-encoding: chunked") => b.ends_with(b"0\r\n\r\n"),
        None => true,
    };
    while !done(buf) {
        match s.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let take = length.unwrap_or(buf.len());
    let body = buf.drain(..take).collect();
    Some(Seen { head, body })
}

/// When a scripted backend answers.
#[derive(Clone, Copy, PartialEq)]
enum Mode {
    /// After reading the whole request.
    AfterBody,
    /// Right after the head, then it reads nothing more.
    EarlyThenStall,
    /// Right after the head, then it reads the body and drops it, as
    /// nginx's `return` does.
    EarlyThenDiscard,
}

/// A backend that answers each request with `answer(request)`: the
/// bytes to write and whether to close afterwards.
async fn scripted(
    mode: Mode,
    answer: fn(&Seen) -> (Vec<u8>, bool),
) -> (SocketAddr, Arc<AtomicUsize>) {
    scripted_telling(mode, answer, Arc::new(tokio::sync::Notify::new())).await
}

/// [`scripted`], notifying `answered` each time an answer is written.
async fn scripted_telling(
    mode: Mode,
    answer: fn(&Seen) -> (Vec<u8>, bool),
    answered: Arc<tokio::sync::Notify>,
) -> (SocketAddr, Arc<AtomicUsize>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        loop {
            let (mut s, _) = l.accept().await.unwrap();
            count.fetch_add(1, Ordering::SeqCst);
            let answered = answered.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                loop {
                    let seen = if mode == Mode::AfterBody {
                        match read_request(&mut s, &mut buf).await {
                            Some(r) => r,
                            None => return,
                        }
                    } else {
                        let mut chunk = [0u8; 4096];
                        while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                            match s.read(&mut chunk).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            }
                        }
                        Seen {
                            head: String::from_utf8_lossy(&buf).to_lowercase(),
                            body: Vec::new(),
                        }
                    };
                    let (bytes, close) = answer(&seen);
                    if s.write_all(&bytes).await.is_err() || close {
                        return;
                    }
                    answered.notify_one();
                    match mode {
                        Mode::AfterBody => {}
                        // Keep the connection open without reading on.
                        Mode::EarlyThenStall => std::future::pending::<()>().await,
                        Mode::EarlyThenDiscard => {
                            if read_request(&mut s, &mut buf).await.is_none() {
                                return;
                            }
                        }
                    }
                }
            });
        }
    });
    (addr, accepted)
}

/// Send raw requests one after another on one client connection; each
/// response's status line and decoded body, read with hyper's client.
async fn send_all(gw: SocketAddr, reqs: Vec<Request<Body>>) -> Vec<(u16, String, String)> {
    let s = tokio::net::TcpStream::connect(gw).await.unwrap();
    let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s))
        .await
        .unwrap();
    tokio::spawn(conn);
    let mut out = Vec::new();
    for r in reqs {
        let resp = tokio::time::timeout(Duration::from_secs(5), tx.send_request(r))
            .await
            .unwrap()
            .unwrap();
        let status = resp.status().as_u16();
        let cl = resp
            .headers()
            .get(header::CONTENT_LENGTH)
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        out.push((status, cl, String::from_utf8_lossy(&body).to_string()));
    }
    out
}

fn req(method: &str, body: Body) -> Request<Body> {
    Request::builder()
        .method(method)
        .uri("/x")
        .header(header::HOST, "t")
        .body(body)
        .unwrap()
}

/// A body of unknown length (sent chunked).
fn streamed(data: &'static str) -> Body {
    let frames = futures_util::stream::iter(vec![Ok::<_, BoxErr>(hyper::body::Frame::data(
        bytes::Bytes::from(data),
    ))]);
    http_body_util::StreamBody::new(frames)
        .boxed_unsync()
        .into()
}
type BoxErr = crate::gateway::body::BoxError;

/// `n` MiB streamed in 1 MiB frames: far more than socket buffers hold,
/// so a backend's early answer comes while most of it is still unsent.
fn mebibytes(n: usize) -> Body {
    let frames = futures_util::stream::iter((0..n).map(|_| {
        Ok::<_, BoxErr>(hyper::body::Frame::data(bytes::Bytes::from(vec![
            b'x';
            1 << 20
        ])))
    }));
    http_body_util::StreamBody::new(frames)
        .boxed_unsync()
        .into()
}

#[tokio::test]
async fn chunked_responses_stream_and_keep_the_connection() {
    let (b, accepted) = scripted(Mode::AfterBody, |_| {
            (
                b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\n3\r\n!!!\r\n0\r\n\r\n".to_vec(),
                false,
            )
        })
        .await;
    let gw = front(upstream(), b).await;
    let empty = || crate::gateway::body::empty();
    let got = send_all(gw, vec![req("GET", empty()), req("GET", empty())]).await;
    assert_eq!(got, vec![(200, String::new(), "ok!!!".to_string()); 2]);
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn request_bodies_keep_their_length_or_go_chunked() {
    fn echo(r: &Seen) -> (Vec<u8>, bool) {
        let framing = if r.head.contains("content-length: 5\r\n") {
            "length"
        } else if r.head.contains("transfer-encoding: chunked\r\n") {
            "chunked"
        } else {
            "none"
        };
        let text = format!("{framing} {}", String::from_utf8_lossy(&r.body));
        let mut out =
            format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n", text.len()).into_bytes();
        out.extend_from_slice(text.as_bytes());
        (out, false)
    }
    let (b, accepted) = scripted(Mode::AfterBody, echo).await;
    let gw = front(upstream(), b).await;
    let got = send_all(
        gw,
        vec![
            req("POST", crate::gateway::body::full("hello")),
            req("POST", streamed("hello")),
            req("GET", crate::gateway::body::empty()),
        ],
    )
    .await;
    let bodies: Vec<&str> = got.iter().map(|(_, _, b)| b.as_str()).collect();
    assert_eq!(
        bodies,
        ["length hello", "chunked 5\r\nhello\r\n0\r\n\r\n", "none "]
    );
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn an_early_answer_is_relayed_and_its_connection_not_reused() {
    let (b, accepted) = scripted(Mode::EarlyThenStall, |_| {
        (
            b"HTTP/1.1 413 Payload Too Large\r\ncontent-length: 3\r\n\r\nbig".to_vec(),
            false,
        )
    })
    .await;
    let gw = front(upstream(), b).await;
    // A body the backend never reads.
    let body = mebibytes(64);
    let got = send_all(gw, vec![req("POST", body)]).await;
    assert_eq!((got[0].0, got[0].2.as_str()), (413, "big"));
    let got = send_all(gw, vec![req("GET", crate::gateway::body::empty())]).await;
    assert_eq!(got[0].0, 413);
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        2,
        "the cut-short connection was not reused"
    );
}

/// A request body whose frames the test sends, when it chooses, through
/// the returned channel; it ends when the sender is dropped.
fn body_fed_by_hand() -> (tokio::sync::mpsc::Sender<bytes::Bytes>, Body) {
    let (tx, rx) = tokio::sync::mpsc::channel::<bytes::Bytes>(1);
    let frames = futures_util::stream::unfold(rx, |mut rx| async move {
        let data = rx.recv().await?;
        Some((Ok::<_, BoxErr>(hyper::body::Frame::data(data)), rx))
    });
    let body = http_body_util::StreamBody::new(frames).boxed_unsync();
    (tx, body.into())
}

#[tokio::test]
async fn an_early_success_keeps_the_upload_going() {
    let answered = Arc::new(tokio::sync::Notify::new());
    let (b, accepted) = scripted_telling(
        Mode::EarlyThenDiscard,
        |_| {
            (
                b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nok\n".to_vec(),
                false,
            )
        },
        answered.clone(),
    )
    .await;
    let gw = front(upstream(), b).await;
    // The second half of the body goes out only once the backend has
    // answered: the answer comes while the upload is under way, whatever
    // the socket buffers hold. (A 64 MiB body stood for that before, and
    // pushing it through a debug build took past the 5 s below on a busy
    // machine.)
    const HALF: usize = 256 * 1024;
    let (feed, body) = body_fed_by_hand();
    let upload = Request::builder()
        .method("POST")
        .uri("/upload")
        .header(header::HOST, "t")
        .header(header::CONTENT_LENGTH, (2 * HALF).to_string())
        .body(body)
        .unwrap();
    let s = tokio::net::TcpStream::connect(gw).await.unwrap();
    let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s))
        .await
        .unwrap();
    tokio::spawn(conn);
    let in_time = Duration::from_secs(5);
    let response = tokio::spawn(tx.send_request(upload));
    feed.send(bytes::Bytes::from(vec![b'x'; HALF]))
        .await
        .unwrap();
    tokio::time::timeout(in_time, answered.notified())
        .await
        .expect("the backend answered after the head");
    // The rest of the body, after the answer: the gateway still relays it.
    feed.send(bytes::Bytes::from(vec![b'y'; HALF]))
        .await
        .unwrap();
    drop(feed);
    let resp = tokio::time::timeout(in_time, response)
        .await
        .expect("the answer once the upload is done")
        .unwrap()
        .unwrap();
    assert_eq!(resp.status(), 200);
    let answer = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&answer[..], b"ok\n");
    let next = req("GET", crate::gateway::body::empty());
    let next = tokio::time::timeout(in_time, tx.send_request(next))
        .await
        .expect("an answer in time")
        .expect("the client connection survived the upload");
    assert_eq!(next.status(), 200);
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        1,
        "the upload completed: connection reused"
    );
}

/// Send `upload` to a backend that answers 200 right after the head and
/// then, as `mode` says, stalls or reads on; the gateway gives up on a
/// stalled upload after `response`. Returns the answer's status and body,
/// how long it took from the request, and how many backend connections
/// there were once a next request was answered too.
async fn early_success_then(
    mode: Mode,
    upload: Request<Body>,
    response: Duration,
) -> (u16, String, Duration, usize) {
    let (b, accepted) = scripted(mode, |_| {
        (
            b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nok\n".to_vec(),
            false,
        )
    })
    .await;
    let up = Upstream::new(UpstreamConfig {
        connect: Duration::from_secs(5),
        response,
        pool_idle: Duration::from_secs(4),
        max_body: 0,
    });
    let gw = front(up, b).await;
    let asked = std::time::Instant::now();
    let got = send_all(gw, vec![upload]).await;
    let took = asked.elapsed();
    let next = send_all(gw, vec![req("GET", crate::gateway::body::empty())]).await;
    assert_eq!(next[0].0, 200, "{next:?}");
    let (status, _, answer) = got.into_iter().next().unwrap();
    (status, answer, took, accepted.load(Ordering::SeqCst))
}

/// An early success waits for the rest of the upload (see
/// `an_early_success_keeps_the_upload_going`); when the upload stops
/// instead, because the client sends no more or the backend reads no
/// more, the client still gets that success (not a 408 or 504) once the
/// gateway gives up on the upload, and the connection is not reused.
#[tokio::test]
async fn an_early_success_is_relayed_when_the_upload_stops() {
    let response = Duration::from_secs(1);
    // The client sends half of its body, then nothing (the feed stays
    // open: no end either).
    let (feed, body) = body_fed_by_hand();
    feed.send(bytes::Bytes::from(vec![b'x'; 256 * 1024]))
        .await
        .unwrap();
    let mut upload = req("POST", body);
    upload
        .headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from(512 * 1024));
    let got = early_success_then(Mode::EarlyThenDiscard, upload, response).await;
    drop(feed);
    // The backend reads nothing after its answer, and the body is far
    // more than the socket buffers hold.
    let upload = req("POST", mebibytes(64));
    let stalled = early_success_then(Mode::EarlyThenStall, upload, response).await;
    for (status, answer, took, accepted) in [got, stalled] {
        assert_eq!((status, answer.as_str()), (200, "ok\n"));
        assert!(
            took >= response,
            "relayed after {took:?}, while the upload could go on"
        );
        assert_eq!(accepted, 2, "the connection of the cut upload was reused");
    }
}

#[tokio::test]
async fn bytes_past_the_body_or_no_length_mean_no_reuse() {
    let (b, accepted) = scripted(Mode::AfterBody, |r| {
        if r.head.starts_with("get") {
            (
                b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nokEXTRA".to_vec(),
                false,
            )
        } else {
            (b"HTTP/1.1 200 OK\r\n\r\nuntil close".to_vec(), true)
        }
    })
    .await;
    let gw = front(upstream(), b).await;
    let e = crate::gateway::body::empty;
    let got = send_all(gw, vec![req("GET", e()), req("GET", e()), req("PUT", e())]).await;
    let bodies: Vec<&str> = got.iter().map(|(_, _, b)| b.as_str()).collect();
    assert_eq!(bodies, ["ok", "ok", "until close"]);
    assert_eq!(accepted.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn head_answers_keep_their_length_and_the_connection() {
    let (b, accepted) = scripted(Mode::AfterBody, |r| {
        if r.head.starts_with("head") {
            (
                b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n".to_vec(),
                false,
            )
        } else {
            (b"HTTP/1.1 204 No Content\r\n\r\n".to_vec(), false)
        }
    })
    .await;
    let gw = front(upstream(), b).await;
    let e = crate::gateway::body::empty;
    let got = send_all(
        gw,
        vec![req("HEAD", e()), req("GET", e()), req("HEAD", e())],
    )
    .await;
    assert_eq!(got[0], (200, "10".to_string(), String::new()));
    assert_eq!((got[1].0, got[1].2.as_str()), (204, ""));
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_post_never_goes_out_on_a_connection_the_backend_closed() {
    let (b, accepted) = backend(true).await;
    let gw = front(upstream(), b).await;
    let posts = (0..4)
        .map(|_| req("POST", crate::gateway::body::full("data")))
        .collect();
    let got = send_all(gw, posts).await;
    assert!(
        got.iter().all(|(s, _, b)| *s == 200 && b == "ok"),
        "{got:?}"
    );
    assert_eq!(accepted.load(Ordering::SeqCst), 4);
}

#[tokio::test]
async fn the_response_timeout_holds_on_a_reused_connection() {
    // Answers the first request, then never the second.
    let (b, accepted) = scripted(Mode::AfterBody, |r| {
        if r.head.contains("x-slow") {
            (Vec::new(), false)
        } else {
            (
                b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok".to_vec(),
                false,
            )
        }
    })
    .await;
    let up = Upstream::new(UpstreamConfig {
        connect: Duration::from_secs(5),
        response: Duration::from_millis(300),
        pool_idle: Duration::from_secs(4),
        max_body: 0,
    });
    let gw = front(up, b).await;
    let mut slow = req("GET", crate::gateway::body::empty());
    slow.headers_mut()
        .insert("x-slow", HeaderValue::from_static("1"));
    let got = send_all(gw, vec![req("GET", crate::gateway::body::empty()), slow]).await;
    assert_eq!((got[0].0, got[0].2.as_str()), (200, "ok"));
    assert_eq!(
        got[1].0, 502,
        "the test front answers every failure with 502"
    );
    assert!(got[1].2.starts_with("timed out"), "{:?}", got[1]);
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        1,
        "the second went on the pooled connection"
    );
}
