//! Upgrades other than WebSocket are not passed on (issue 11): a backend
//! that speaks h2c must never see `Upgrade: h2c` (nor `HTTP2-Settings`),
//! or a client could switch the connection to HTTP/2 and send it requests
//! past routing and the forwarding headers. Raw sockets on both sides.
//! HTTP/2 prior knowledge: the streams a connection may open, its idle
//! timeout, and the send timeout of a stream granted no window (the real
//! binary, with hyper's HTTP/2 client).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::gateway::{start, DEADLINE};
use super::harness::{free_port, Running, Stack};
use super::pool::{raw_backend, read_request, whole_answer};

/// A backend that would switch to h2c if asked (101), and otherwise
/// answers `ok`; it keeps every request head it saw, lower-cased.
async fn h2c_backend() -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
    let heads = Arc::new(Mutex::new(Vec::new()));
    let seen = heads.clone();
    let addr = raw_backend(move |mut s| {
        let seen = seen.clone();
        async move {
            let mut buf = Vec::new();
            while let Some(head) = read_request(&mut s, &mut buf).await {
                seen.lock().unwrap().push(head.clone());
                let answer: &[u8] = if head.contains("upgrade: h2c") {
                    b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n"
                } else {
                    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
                };
                if s.write_all(answer).await.is_err() {
                    return;
                }
            }
        }
    })
    .await;
    (addr, heads)
}

/// Send `request` on a new connection; the status of the answer.
async fn status_of(gw: SocketAddr, request: &str) -> u16 {
    let mut s = TcpStream::connect(gw).await.unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some((answer, _)) = whole_answer(&buf) {
            return answer.status;
        }
        let n = tokio::time::timeout(DEADLINE, s.read(&mut chunk))
            .await
            .expect("an answer in time")
            .expect("a readable connection");
        assert!(n > 0, "closed without an answer to {request:?}");
        buf.extend_from_slice(&chunk[..n]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_upgrades_and_http2_settings_never_reach_the_backend() {
    let (backend, heads) = h2c_backend().await;
    let gw = start(Some(format!("http://{backend}")), json!([])).await;
    let settings = "HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n";
    let requests = [
        // The h2c upgrade as curl --http2 sends it.
        format!("GET /a HTTP/1.1\r\nHost: gw.test\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n{settings}\r\n"),
        // Other spellings: any case, the settings not named in Connection,
        // next to WebSocket, HTTP/1.0, with a body.
        format!("GET /b HTTP/1.1\r\nHost: gw.test\r\nConnection: upgrade\r\nUpgrade: H2C\r\n{settings}\r\n"),
        "GET /c HTTP/1.1\r\nHost: gw.test\r\nConnection: keep-alive, Upgrade\r\nUpgrade: h2c, h2c\r\n\r\n".to_string(),
        format!("GET /d HTTP/1.0\r\nHost: gw.test\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n{settings}\r\n"),
        format!("POST /e HTTP/1.1\r\nHost: gw.test\r\nContent-Length: 2\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n{settings}\r\nhi"),
        // No upgrade at all: the front end's own path.
        format!("GET /f HTTP/1.1\r\nHost: gw.test\r\n{settings}\r\n"),
    ];
    for request in &requests {
        assert_eq!(status_of(gw.addr, request).await, 200, "{request:?}");
    }
    let heads = heads.lock().unwrap().clone();
    assert_eq!(heads.len(), requests.len(), "{heads:#?}");
    for head in &heads {
        assert!(
            !head.contains("upgrade") && !head.contains("http2-settings"),
            "the backend saw an upgrade: {head}"
        );
    }
    gw.shutdown().await;
}

/// The value of `SETTINGS_MAX_CONCURRENT_STREAMS` the gateway announces to
/// an HTTP/2 prior-knowledge client, if any.
async fn announced_max_streams(gw: SocketAddr) -> Option<u32> {
    let mut s = TcpStream::connect(gw).await.unwrap();
    s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await
        .unwrap();
    // An empty SETTINGS frame: length 0, type 4, flags 0, stream 0.
    s.write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0]).await.unwrap();
    let mut head = [0u8; 9];
    tokio::time::timeout(DEADLINE, s.read_exact(&mut head))
        .await
        .expect("a SETTINGS frame in time")
        .expect("a readable connection");
    assert_eq!(head[3], 4, "the server's first frame is SETTINGS");
    let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
    let mut payload = vec![0u8; len];
    tokio::time::timeout(DEADLINE, s.read_exact(&mut payload))
        .await
        .expect("the SETTINGS payload in time")
        .expect("a readable connection");
    payload.chunks_exact(6).find_map(|p| {
        (u16::from_be_bytes([p[0], p[1]]) == 3)
            .then(|| u32::from_be_bytes([p[2], p[3], p[4], p[5]]))
    })
}

/// Issue 16: one HTTP/2 connection may not fan out into hundreds of
/// concurrent backend requests; at most 100 streams at a time, like nginx's
/// `http2_max_concurrent_streams`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_client_may_open_at_most_100_streams_at_once() {
    let (backend, _) = h2c_backend().await;
    let gw = start(Some(format!("http://{backend}")), json!([])).await;
    let max = announced_max_streams(gw.addr).await;
    assert!(matches!(max, Some(n) if n <= 100), "announced {max:?}");
}

/// How long the gateway waits for the real binary to listen.
const START: Duration = Duration::from_secs(30);

/// `stackctl up` with only a gateway, on a free port.
pub(crate) struct GatewayOnly {
    /// Dropped first: the process stops before its directory goes.
    pub(crate) up: Running,
    pub(crate) addr: SocketAddr,
    _stack: Stack,
}

/// [`GatewayOnly`], forwarding to `backend`, with `timeouts` (a YAML
/// flow mapping).
pub(crate) fn gateway_only(backend: SocketAddr, timeouts: &str) -> GatewayOnly {
    let port = free_port();
    let stack = Stack::new(&format!(
        "version: 1\n\
         name: peers\n\
         gateway:\n  \
           listen: 127.0.0.1:{port}\n  \
           default_backend: http://{backend}\n  \
           timeouts: {timeouts}\n  \
           admin: {{ password: peers-test-password-1 }}\n"
    ));
    let mut up = stack.up();
    up.wait_for("gateway: listening", START);
    GatewayOnly {
        up,
        addr: SocketAddr::from(([127, 0, 0, 1], port)),
        _stack: stack,
    }
}

/// Answer `ok` to a request (its lower-cased `head`) unless it is a GET
/// of `path`: whether it is (`None`: the connection broke).
async fn ok_unless(s: &mut TcpStream, head: &str, path: &str) -> Option<bool> {
    if head.starts_with(&format!("get {path} ")) {
        return Some(true);
    }
    let ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
    s.write_all(ok).await.ok().map(|()| false)
}

/// A backend that answers `/sse` with an event stream, one event every
/// `every` until the gateway closes it, and anything else with `ok`.
async fn sse_backend(every: Duration) -> SocketAddr {
    raw_backend(move |mut s| async move {
        let mut buf = Vec::new();
        while let Some(head) = read_request(&mut s, &mut buf).await {
            match ok_unless(&mut s, &head, "/sse").await {
                None => return,
                Some(false) => continue,
                Some(true) => {}
            }
            let head = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\
                        Transfer-Encoding: chunked\r\n\r\n";
            if s.write_all(head.as_bytes()).await.is_err() {
                return;
            }
            loop {
                if s.write_all(b"9\r\ndata: x\n\n\r\n").await.is_err() {
                    return;
                }
                tokio::time::sleep(every).await;
            }
        }
    })
    .await
}

/// An HTTP/2 prior-knowledge connection with hyper's client; the task
/// driving it ends when the connection closes, and says when.
async fn h2_client(
    gw: SocketAddr,
) -> (
    hyper::client::conn::http2::SendRequest<Empty<Bytes>>,
    tokio::task::JoinHandle<Instant>,
) {
    let s = TcpStream::connect(gw).await.unwrap();
    let (tx, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(s))
        .await
        .expect("an HTTP/2 handshake");
    let closed = tokio::spawn(async move {
        let _ = conn.await;
        Instant::now()
    });
    (tx, closed)
}

/// A GET of `path` on an HTTP/2 connection; the response, its body
/// still to read.
async fn h2_get(
    tx: &mut hyper::client::conn::http2::SendRequest<Empty<Bytes>>,
    gw: SocketAddr,
    path: &str,
) -> hyper::Response<hyper::body::Incoming> {
    let req = hyper::Request::get(format!("http://{gw}{path}"))
        .body(Empty::new())
        .unwrap();
    let resp = tokio::time::timeout(DEADLINE, tx.send_request(req))
        .await
        .expect("an answer in time")
        .expect("an answer");
    assert_eq!(resp.status(), 200);
    resp
}

/// Issue 16 leftovers: an HTTP/2 connection with no stream open is closed
/// (GOAWAY) once it has been so for `timeouts.idle`, as a kept-alive
/// HTTP/1.1 one is; before, it stayed open for good. One with a long
/// stream open (SSE) stays open, pings and all, for as long as the stream
/// lasts, and idles from its end.
#[test]
fn an_idle_http2_connection_is_closed_and_one_with_a_stream_open_is_not() {
    let idle = Duration::from_secs(1);
    // How much earlier than `idle` a close may come (the deadline's own
    // slack is a sixteenth of it), and how much later on a busy machine.
    let early = Duration::from_millis(150);
    let late = Duration::from_secs(2);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let backend = rt.block_on(sse_backend(idle / 4));
    let gateway = gateway_only(backend, "{ idle: 1s, send: 1s }");
    let gw = gateway.addr;
    rt.block_on(async {
        // A request, then nothing: closed `idle` after its answer.
        let (mut tx, closed) = h2_client(gw).await;
        let body = h2_get(&mut tx, gw, "/x").await.collect().await.unwrap();
        assert_eq!(body.to_bytes(), "ok");
        let answered = Instant::now();
        let at = tokio::time::timeout(idle + late, closed)
            .await
            .unwrap_or_else(|_| {
                gateway
                    .up
                    .fail("an idle HTTP/2 connection outlived timeouts.idle")
            })
            .unwrap();
        let quiet = at - answered;
        assert!(quiet >= idle - early, "closed after {quiet:?}");

        // An event stream: open for three times `idle`, every event in.
        let (mut tx, mut closed) = h2_client(gw).await;
        let mut events = h2_get(&mut tx, gw, "/sse").await.into_body();
        let until = Instant::now() + 3 * idle;
        let mut got = 0usize;
        while Instant::now() < until {
            let frame = tokio::time::timeout(DEADLINE, events.frame())
                .await
                .expect("an event in time")
                .expect("an open stream")
                .expect("a frame");
            got += frame.into_data().map_or(0, |d| d.len());
        }
        assert!(got > 0);
        if closed.is_finished() {
            gateway.up.fail("closed with a stream open");
        }
        // The stream ends (the client resets it): idle from then on.
        drop(events);
        let ended = Instant::now();
        let at = tokio::time::timeout(idle + late, &mut closed)
            .await
            .unwrap_or_else(|_| {
                gateway
                    .up
                    .fail("the connection outlived timeouts.idle after its stream")
            })
            .unwrap();
        let quiet = at - ended;
        assert!(quiet >= idle - early, "closed after {quiet:?}");
        drop(tx);
    });
}

/// A client that opens an HTTP/2 connection and then reads nothing (so
/// it never answers the gateway's pings, nor lets a graceful close
/// finish) is closed too, within `idle` and `send` of its start.
#[test]
fn an_http2_client_that_never_reads_is_closed() {
    let (idle, send) = (Duration::from_secs(1), Duration::from_secs(1));
    let late = Duration::from_secs(2);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let backend = rt.block_on(sse_backend(idle));
    let gateway = gateway_only(backend, "{ idle: 1s, send: 1s }");
    let closed = rt.block_on(async {
        let mut s = TcpStream::connect(gateway.addr).await.unwrap();
        s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
            .await
            .unwrap();
        // An empty SETTINGS frame, and then nothing: no ACK, no read.
        s.write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0]).await.unwrap();
        tokio::time::sleep(idle + send + late).await;
        // By now the gateway has closed it: what it sent is read to the
        // end without waiting.
        let mut sink = [0u8; 4096];
        loop {
            match tokio::time::timeout(Duration::from_secs(1), s.read(&mut sink)).await {
                Err(_) => return false,
                Ok(Ok(0) | Err(_)) => return true,
                Ok(Ok(_)) => {}
            }
        }
    });
    if !closed {
        gateway
            .up
            .fail("an HTTP/2 client that never reads is still connected");
    }
}

/// The length of the body a [`big_backend`] sends for `/big`: far more
/// than the socket buffers between it and the client hold.
const BIG: usize = 64 << 20;

/// A backend that answers `/big` with [`BIG`] bytes, written as fast as
/// the gateway takes them, and anything else with `ok`. The returned
/// channel says when a `/big` connection was closed under it.
async fn big_backend() -> (SocketAddr, tokio::sync::mpsc::UnboundedReceiver<Instant>) {
    let (closed, closes) = tokio::sync::mpsc::unbounded_channel();
    let addr = raw_backend(move |mut s| {
        let closed = closed.clone();
        async move {
            let mut buf = Vec::new();
            while let Some(head) = read_request(&mut s, &mut buf).await {
                match ok_unless(&mut s, &head, "/big").await {
                    None => return,
                    Some(false) => continue,
                    Some(true) => {}
                }
                let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {BIG}\r\n\r\n");
                if s.write_all(head.as_bytes()).await.is_err() {
                    return;
                }
                let piece = vec![b'x'; 64 << 10];
                for _ in 0..BIG / piece.len() {
                    if s.write_all(&piece).await.is_err() {
                        let _ = closed.send(Instant::now());
                        return;
                    }
                }
            }
        }
    })
    .await;
    (addr, closes)
}

/// An HTTP/2 client that answers pings (hyper's client does) but grants a
/// download's stream no window (a 1 KiB stream window it never releases:
/// the body is not read) holds that stream, and the backend connection
/// relaying it, for no longer than `timeouts.send`: the stream is reset,
/// the gateway says why, the backend connection is closed, and the other
/// streams of the connection are served before and after.
#[test]
fn an_http2_stream_granted_no_window_is_reset_after_the_send_timeout() {
    let send = Duration::from_secs(1);
    let late = Duration::from_secs(3);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (backend, mut closes) = rt.block_on(big_backend());
    let mut gateway = gateway_only(backend, "{ send: 1s }");
    let gw = gateway.addr;
    let (mut tx, stuck, asked) = rt.block_on(async {
        let s = TcpStream::connect(gw).await.unwrap();
        let (tx, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
            .initial_stream_window_size(1024)
            .handshake(TokioIo::new(s))
            .await
            .expect("an HTTP/2 handshake");
        tokio::spawn(conn);
        let mut tx: hyper::client::conn::http2::SendRequest<Empty<Bytes>> = tx;
        let asked = Instant::now();
        let stuck = h2_get(&mut tx, gw, "/big").await;
        // Another stream while that one is stuck.
        let ok = h2_get(&mut tx, gw, "/x").await.collect().await.unwrap();
        assert_eq!(ok.to_bytes(), "ok");
        (tx, stuck, asked)
    });
    let warned = "granted a response stream no flow-control window for timeouts.send";
    gateway.up.wait_for(warned, send + late);
    let after = asked.elapsed();
    // A sixteenth of the limit is the deadline's slack.
    assert!(after >= send - send / 16, "reset after {after:?}");
    rt.block_on(async {
        let closed = tokio::time::timeout(late, closes.recv())
            .await
            .expect("the backend connection closed in time")
            .expect("a close");
        assert!(closed - asked >= send - send / 16);
        // What the window let through, then the reset: never the whole.
        let mut body = stuck.into_body();
        let mut got = 0usize;
        let end = loop {
            match tokio::time::timeout(DEADLINE, body.frame()).await {
                Err(_) => panic!("the stream was neither reset nor ended"),
                Ok(None) => break Ok(()),
                Ok(Some(Err(e))) => break Err(e),
                Ok(Some(Ok(f))) => got += f.into_data().map_or(0, |d| d.len()),
            }
        };
        assert!(
            end.is_err(),
            "the stuck stream ended cleanly after {got} bytes"
        );
        assert!(got < BIG, "{got} bytes");
        // The connection still serves new streams.
        let ok = h2_get(&mut tx, gw, "/x").await.collect().await.unwrap();
        assert_eq!(ok.to_bytes(), "ok");
    });
}
