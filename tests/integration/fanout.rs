//! The cap on connections per backend (issue 16 item 2): one HTTP/2 client
//! with many streams, many HTTP/1.1 clients, and WebSocket tunnels never
//! have more than `gateway.backend_connections` open to one backend at
//! once; the excess waits the queue time and gets 503 with `Retry-After`,
//! and every way a request can end gives its connection's place back.
//! Raw sockets on 127.0.0.1; a backend that counts its open connections.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http_body_util::BodyExt;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;

use stackctl::manifest::BackendConnections;

use super::gateway::{config, restored, start_with, wait_until, Gw, DEADLINE};
use super::pool::{raw_backend, read_request, whole_answer};

/// What the backend saw.
#[derive(Default)]
struct Seen {
    /// Connections open now.
    open: AtomicUsize,
    /// The most ever open at once.
    peak: AtomicUsize,
    /// Requests it holds now (waiting for the gate).
    held: AtomicUsize,
}

impl Seen {
    fn open(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }
    fn peak(&self) -> usize {
        self.peak.load(Ordering::SeqCst)
    }
    fn held(&self) -> usize {
        self.held.load(Ordering::SeqCst)
    }
}

/// Counts a connection as open until it is dropped.
struct Open(Arc<Seen>);

impl Open {
    fn new(seen: Arc<Seen>) -> Self {
        let now = seen.open.fetch_add(1, Ordering::SeqCst) + 1;
        seen.peak.fetch_max(now, Ordering::SeqCst);
        Open(seen)
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A backend that holds each request until the gate is open, then answers
/// `ok` on a kept-alive connection; `/broken` closes the connection
/// instead, and a WebSocket upgrade is accepted and held until the client
/// closes it.
async fn counting_backend() -> (SocketAddr, Arc<Seen>, watch::Sender<bool>) {
    let seen = Arc::new(Seen::default());
    let (gate, opened) = watch::channel(false);
    let s2 = seen.clone();
    let addr = raw_backend(move |mut s| {
        let open = Open::new(s2.clone());
        let mut opened = opened.clone();
        async move {
            let _open = open;
            let seen = _open.0.clone();
            let mut buf = Vec::new();
            while let Some(head) = read_request(&mut s, &mut buf).await {
                if head.starts_with("get /broken") {
                    return;
                }
                if head.contains("upgrade: websocket") {
                    let answer = b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n";
                    if s.write_all(answer).await.is_err() {
                        return;
                    }
                    let mut rest = Vec::new();
                    let _ = s.read_to_end(&mut rest).await;
                    return;
                }
                // Held until the gate opens, or until the gateway closes
                // the connection (its client hung up).
                seen.held.fetch_add(1, Ordering::SeqCst);
                let mut probe = [0u8; 1];
                let closed = tokio::select! {
                    r = opened.wait_for(|open| *open) => r.is_err(),
                    _ = s.read(&mut probe) => true,
                };
                seen.held.fetch_sub(1, Ordering::SeqCst);
                let answer = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
                if closed || s.write_all(answer).await.is_err() {
                    return;
                }
            }
        }
    })
    .await;
    (addr, seen, gate)
}

/// A gateway to `backend` with at most `max` connections to it, waiting
/// `queue` for one.
async fn gateway(backend: SocketAddr, max: usize, queue: Duration) -> Gw {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), Some(format!("http://{backend}")), json!([]));
    cfg.backend_connections = BackendConnections { max, queue };
    start_with(cfg, dir, restored(), |g| g).await
}

/// An answer: status, `Retry-After`, body.
type Answer = (u16, String, String);

/// One HTTP/1.1 request on a new connection (the front end's own path
/// for a plain GET); its answer.
async fn http1(gw: SocketAddr, path: &str) -> Answer {
    let mut s = TcpStream::connect(gw).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: gw.test\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    read_answer(&mut s).await
}

async fn read_answer(s: &mut TcpStream) -> Answer {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some((a, _)) = whole_answer(&buf) {
            let text = String::from_utf8_lossy(&buf).to_ascii_lowercase();
            let retry = text
                .lines()
                .find_map(|l| l.strip_prefix("retry-after:"))
                .map_or(String::new(), |v| v.trim().to_string());
            return (a.status, retry, a.body);
        }
        let n = tokio::time::timeout(DEADLINE, s.read(&mut chunk))
            .await
            .expect("an answer in time")
            .expect("a readable connection");
        assert!(n > 0, "closed without an answer");
        buf.extend_from_slice(&chunk[..n]);
    }
}

type H2 = hyper::client::conn::http2::SendRequest<http_body_util::Empty<bytes::Bytes>>;

/// An HTTP/2 (prior knowledge) connection to the gateway: hyper's path.
async fn http2(gw: SocketAddr) -> H2 {
    http2_conn(gw).await.0
}

/// The same, and the task that holds the socket (aborted: the client
/// hangs up).
async fn http2_conn(gw: SocketAddr) -> (H2, tokio::task::JoinHandle<()>) {
    let s = TcpStream::connect(gw).await.unwrap();
    let (tx, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(s))
        .await
        .unwrap();
    let task = tokio::spawn(async move {
        let _ = conn.await;
    });
    (tx, task)
}

/// One stream on `tx`; its answer.
async fn stream(mut tx: H2, gw: SocketAddr, path: &str) -> Answer {
    let req = hyper::Request::get(format!("http://{gw}{path}"))
        .body(http_body_util::Empty::new())
        .unwrap();
    let resp = tokio::time::timeout(DEADLINE, tx.send_request(req))
        .await
        .expect("an answer in time")
        .expect("an HTTP/2 answer");
    let status = resp.status().as_u16();
    let retry = resp
        .headers()
        .get("retry-after")
        .map_or(String::new(), |v| v.to_str().unwrap().to_string());
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, retry, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_on_both_paths_never_opens_more_than_the_cap() {
    const CAP: usize = 4;
    let (backend, seen, gate) = counting_backend().await;
    let gw = gateway(backend, CAP, Duration::from_millis(300)).await;
    let h2 = http2(gw.addr).await;
    let mut answers = tokio::task::JoinSet::new();
    // One HTTP/2 connection with 30 streams open at once, and 10 HTTP/1.1
    // clients.
    for _ in 0..30 {
        let h2 = h2.clone();
        let gw = gw.addr;
        answers.spawn(async move { stream(h2, gw, "/x").await });
    }
    for _ in 0..10 {
        let gw = gw.addr;
        answers.spawn(async move { http1(gw, "/x").await });
    }
    // The backend holds what reaches it: the cap's worth; the rest waits
    // the queue time and is refused.
    let mut refused = Vec::new();
    while refused.len() < 40 - CAP {
        let got = tokio::time::timeout(DEADLINE, answers.join_next())
            .await
            .expect("the excess is answered without the backend")
            .unwrap()
            .unwrap();
        refused.push(got);
    }
    for (status, retry, body) in &refused {
        assert_eq!(*status, 503, "{body}");
        assert_eq!(retry, "1", "{body}");
        assert!(body.contains("connections busy"), "{body}");
    }
    assert_eq!((seen.held(), seen.peak()), (CAP, CAP));
    gate.send(true).unwrap();
    while let Some(got) = tokio::time::timeout(DEADLINE, answers.join_next())
        .await
        .expect("the held requests are answered")
    {
        assert_eq!(got.unwrap().0, 200);
    }

    // After the burst the cap is whole again: as many requests as the cap
    // reach the backend at once (on the connections now pooled), and no
    // more connections than the cap were ever open.
    gate.send(false).unwrap();
    let mut again = tokio::task::JoinSet::new();
    for i in 0..CAP {
        let gw = gw.addr;
        let h2 = h2.clone();
        if i % 2 == 0 {
            again.spawn(async move { http1(gw, "/y").await });
        } else {
            again.spawn(async move { stream(h2, gw, "/y").await });
        }
    }
    assert!(wait_until("the cap's worth at the backend", || seen.held() == CAP).await);
    gate.send(true).unwrap();
    while let Some(got) = again.join_next().await {
        assert_eq!(got.unwrap().0, 200);
    }
    assert_eq!(seen.peak(), CAP, "never more connections than the cap");
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hang_ups_and_backend_errors_give_their_connection_back() {
    const CAP: usize = 2;
    let (backend, seen, gate) = counting_backend().await;
    let gw = gateway(backend, CAP, Duration::from_millis(500)).await;

    // One request held at the backend per path; then a client that hangs
    // up while it waits for a connection.
    let (h2, h2_conn) = http2_conn(gw.addr).await;
    let on_h2 = tokio::spawn(stream(h2, gw.addr, "/a"));
    let mut on_h1 = TcpStream::connect(gw.addr).await.unwrap();
    on_h1
        .write_all(b"GET /b HTTP/1.1\r\nHost: gw.test\r\n\r\n")
        .await
        .unwrap();
    assert!(wait_until("both held", || seen.held() == CAP).await);
    let mut queued = TcpStream::connect(gw.addr).await.unwrap();
    queued
        .write_all(b"GET /c HTTP/1.1\r\nHost: gw.test\r\n\r\n")
        .await
        .unwrap();
    drop(queued);

    // Clients hang up while their request is at the backend: the
    // backend connection closes, and its place is free.
    h2_conn.abort();
    on_h2.abort();
    drop(on_h1);
    assert!(wait_until("the backend connections closed", || seen.open() == 0).await);
    // The backend learns of a close a moment after the gateway gave the
    // place back, and the queued request may have used it meanwhile: the
    // peak counts from here, where the backend has seen every close.
    seen.peak.store(0, Ordering::SeqCst);

    // A backend that drops the connection: 502, and the place comes back.
    for _ in 0..CAP + 1 {
        assert_eq!(http1(gw.addr, "/broken").await.0, 502);
    }

    // The whole cap is free: two requests reach the backend at once, a
    // third is refused.
    let first = tokio::spawn(http1(gw.addr, "/d"));
    let second = tokio::spawn(stream(http2(gw.addr).await, gw.addr, "/e"));
    assert!(wait_until("the cap's worth at the backend", || seen.held() == CAP).await);
    let (status, retry, _) = http1(gw.addr, "/f").await;
    assert_eq!((status, retry.as_str()), (503, "1"));
    gate.send(true).unwrap();
    assert_eq!(first.await.unwrap().0, 200);
    assert_eq!(second.await.unwrap().0, 200);
    assert!(seen.peak() <= CAP, "peak {}", seen.peak());
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_tunnel_holds_its_place_until_it_closes() {
    let (backend, seen, gate) = counting_backend().await;
    gate.send(true).unwrap();
    let gw = gateway(backend, 1, Duration::from_millis(300)).await;
    let mut ws = TcpStream::connect(gw.addr).await.unwrap();
    ws.write_all(
        b"GET /ws HTTP/1.1\r\nHost: gw.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
          Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    )
    .await
    .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(DEADLINE, ws.read(&mut byte))
            .await
            .expect("the 101 in time")
            .unwrap();
        assert!(n > 0, "closed before the 101");
        head.push(byte[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 101"), "{head:?}");

    // The tunnel is the backend's one connection: a request waits, then
    // gets 503 (JSON here; a browser gets a page).
    let (status, retry, body) = http1(gw.addr, "/x").await;
    assert_eq!((status, retry.as_str()), (503, "1"), "{body}");
    assert!(body.starts_with("{\"error\":"), "{body}");
    assert_eq!(seen.peak(), 1);

    // Closed, the tunnel gives its place back.
    drop(ws);
    assert!(wait_until("the tunnel closed", || seen.open() == 0).await);
    assert_eq!(http1(gw.addr, "/x").await.0, 200);
    assert_eq!(seen.peak(), 1);
    gw.shutdown().await;
}
