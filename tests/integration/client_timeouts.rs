//! Issue 16 items 1 and 9, over raw sockets: the send timeout
//! (`timeouts.send`, nginx's `send_timeout`) on both paths and in
//! WebSocket tunnels, and one idle rule for a connection whatever path its
//! requests took. Short timeouts come from the config; every wait has a
//! deadline.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

use super::front::Client;
use super::gateway::{backend, config, restored, start_with, Gw, DEADLINE};

/// Short, since most tests here wait it out; the steady reader and the
/// busy WebSocket below pause for fractions of it, so they scale with it.
const SEND: Duration = Duration::from_millis(500);
/// How much earlier than its limit a close may come: the deadline's own
/// slack (a sixteenth of the limit) and the coarse clock's ticks, with
/// room to spare.
const EARLY: Duration = Duration::from_millis(100);
/// How much later than its limit a close may come: a timer's wake-up on
/// a busy machine (nginx closes a keep-alive connection at its timeout).
const LATE: Duration = Duration::from_millis(500);

/// A request the front end relays itself, and one hyper's side takes (a
/// chunked body).
const PATHS: [(&str, &str); 2] = [
    ("front end", "GET /big HTTP/1.1\r\nHost: h\r\n\r\n"),
    (
        "hyper",
        "POST /big HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    ),
];

/// A backend that answers every request with a 200 MB body (see
/// [`flooding_backend`]).
async fn endless_backend() -> (SocketAddr, mpsc::UnboundedReceiver<Instant>) {
    let total = 200u64 << 20;
    flooding_backend(
        format!("HTTP/1.1 200 OK\r\nContent-Length: {total}\r\n\r\n"),
        total,
    )
    .await
}

/// A backend that answers every request with `head` and then `total`
/// bytes written as fast as they are taken, and reports each connection
/// the gateway closes (its writes fail).
async fn flooding_backend(
    head: String,
    total: u64,
) -> (SocketAddr, mpsc::UnboundedReceiver<Instant>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let (tx, head_out) = (tx.clone(), head.clone());
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut chunk = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&chunk[..n]),
                    }
                }
                if s.write_all(head_out.as_bytes()).await.is_err() {
                    let _ = tx.send(Instant::now());
                    return;
                }
                let body = vec![b'x'; 64 * 1024];
                let mut sent = 0u64;
                while sent < total {
                    if s.write_all(&body).await.is_err() {
                        let _ = tx.send(Instant::now());
                        return;
                    }
                    sent += body.len() as u64;
                }
            });
        }
    });
    (addr, rx)
}

async fn gateway(backend: String, tweak: impl FnOnce(&mut stackctl::manifest::Gateway)) -> Gw {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), Some(backend), json!([]));
    cfg.timeouts.send = SEND;
    tweak(&mut cfg);
    start_with(cfg, dir, restored(), |g| g).await
}

/// Read and drop until the gateway closes the connection; `false` if it
/// is still open at the deadline.
async fn drained_to_close(s: &mut TcpStream) -> bool {
    let mut chunk = vec![0u8; 256 * 1024];
    let end = Instant::now() + DEADLINE;
    loop {
        let left = end.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, s.read(&mut chunk)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => {}
        }
    }
}

/// Issue 16 item 1: a client that never reads its download is closed
/// after `timeouts.send`, and the backend connection relaying it too
/// (before, both stayed open for good).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_is_closed_with_its_backend_connection() {
    let (addr, mut closed) = endless_backend().await;
    let gw = gateway(format!("http://{addr}"), |_| {}).await;
    for (path, request) in PATHS {
        let mut s = TcpStream::connect(gw.addr).await.unwrap();
        s.write_all(request.as_bytes()).await.unwrap();
        let sent = Instant::now();
        let at = tokio::time::timeout(DEADLINE, closed.recv())
            .await
            .unwrap_or_else(|_| panic!("{path}: the backend connection is still open"))
            .unwrap();
        // Not before the send timeout (give or take the timer's slack).
        assert!(
            at - sent >= SEND - EARLY,
            "{path}: closed after {:?}",
            at - sent
        );
        assert!(
            drained_to_close(&mut s).await,
            "{path}: the client connection is still open"
        );
    }
    gw.shutdown().await;
}

/// Issue 16 item 1: the send timeout is between writes, not for the
/// whole response: a reader that takes a little at a time, for several
/// times the timeout, is not cut. "A little" is still some MB/s: Linux
/// lets a blocked writer go on only once a third of its send buffer
/// (grown to a few MB on loopback) is free, so a reader far slower than
/// that is, for the gateway as for nginx, one that takes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_but_steady_reader_is_not_cut() {
    let (addr, mut closed) = endless_backend().await;
    let gw = gateway(format!("http://{addr}"), |_| {}).await;
    for (path, request) in PATHS {
        let mut s = TcpStream::connect(gw.addr).await.unwrap();
        s.write_all(request.as_bytes()).await.unwrap();
        // Let the buffers fill, so that the gateway's writes wait.
        tokio::time::sleep(SEND / 2).await;
        let mut chunk = vec![0u8; 256 * 1024];
        let until = Instant::now() + 3 * SEND;
        let mut got = 0usize;
        while Instant::now() < until {
            let n = tokio::time::timeout(DEADLINE, s.read(&mut chunk))
                .await
                .expect("data in time")
                .expect("an open connection");
            assert!(n > 0, "{path}: cut after {got} bytes");
            got += n;
            tokio::time::sleep(SEND / 20).await;
        }
        assert!(
            closed.try_recv().is_err(),
            "{path}: the backend connection was closed"
        );
        drop(s);
        // The client left: its backend connection is closed (not pooled
        // half-read).
        tokio::time::timeout(DEADLINE, closed.recv())
            .await
            .unwrap_or_else(|_| panic!("{path}: the backend connection outlived the client"));
    }
    gw.shutdown().await;
}

/// Issue 16 item 1: a WebSocket tunnel that passes nothing either way
/// for `timeouts.send` is closed (nginx: `proxy_read_timeout`); one that
/// keeps talking, for several times that, is not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_websocket_tunnel_is_closed_and_a_busy_one_is_not() {
    let b = backend("b").await;
    let gw = gateway(b.url(), |_| {}).await;
    let (mut ws, resp) = tokio::time::timeout(
        DEADLINE,
        tokio_tungstenite::connect_async(format!("ws://{}/ws", gw.addr)),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(resp.status(), 101);
    let until = Instant::now() + 3 * SEND;
    let mut i = 0;
    while Instant::now() < until {
        tokio::time::sleep(SEND / 4).await;
        ws.send(Message::text(format!("m{i}"))).await.unwrap();
        let reply = tokio::time::timeout(DEADLINE, ws.next())
            .await
            .expect("an echo in time")
            .expect("an open tunnel")
            .expect("a message");
        assert_eq!(reply.into_text().unwrap().as_str(), format!("b:m{i}"));
        i += 1;
    }
    let quiet = Instant::now();
    let end = tokio::time::timeout(DEADLINE, ws.next())
        .await
        .expect("an idle tunnel stays open");
    assert!(
        !matches!(end, Some(Ok(Message::Text(_) | Message::Binary(_)))),
        "{end:?}"
    );
    assert!(
        quiet.elapsed() >= SEND - EARLY,
        "closed after {:?}",
        quiet.elapsed()
    );
    gw.shutdown().await;
}

/// Issue 16 item 9: after a request served by hyper's side, the
/// connection may still idle for `idle` (before, hyper's header timer
/// made it `header_read`), and a head that has begun still has only
/// `header_read`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_hyper_request_the_connection_idles_for_idle_not_header_read() {
    let b = backend("b").await;
    // `idle` is four `header_read`s: the pause of two below stays well
    // under it, and a half head's close well before it.
    let header_read = Duration::from_millis(500);
    let idle = Duration::from_secs(2);
    let gw = gateway(b.url(), |cfg| {
        cfg.timeouts.header_read = header_read;
        cfg.timeouts.idle = idle;
    })
    .await;
    let hyper_request = "POST /x/upload HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n";

    // Idle past `header_read`, well under `idle`: still served.
    let mut c = Client::connect(&gw).await;
    c.send(hyper_request).await;
    assert_eq!(c.response(false).await.json()["bytes"], 5);
    tokio::time::sleep(header_read * 2).await;
    c.send("GET /later HTTP/1.1\r\nHost: h\r\n\r\n").await;
    assert_eq!(c.response(false).await.json()["path"], "/later");
    // Then closed once `idle` has passed, and soon after it (the read
    // that waited while the request was served used to sleep through it).
    let answered = Instant::now();
    assert!(c.closed().await, "an idle connection outlived `idle`");
    let quiet = answered.elapsed();
    assert!(
        quiet >= idle - Duration::from_millis(300) && quiet < idle + LATE,
        "closed after {quiet:?}"
    );

    // A head begun after a hyper request has `header_read` to complete.
    let mut c = Client::connect(&gw).await;
    c.send(hyper_request).await;
    assert_eq!(c.response(false).await.json()["bytes"], 5);
    c.send("GET /half HTTP/1.1\r\nHo").await;
    let begun = Instant::now();
    assert!(c.closed().await, "a half head outlived `idle`");
    assert!(
        begun.elapsed() < idle - Duration::from_millis(500),
        "a half head was given {:?}",
        begun.elapsed()
    );
    gw.shutdown().await;
}

/// Issue 16 item 1: under a WebSocket tunnel too, a client that takes
/// nothing of what the backend sends is closed after `timeouts.send`,
/// and the backend's side of the tunnel with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_client_that_never_reads_is_closed_with_its_backend() {
    let head = "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
                Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n";
    let (addr, mut closed) = flooding_backend(head.into(), u64::MAX).await;
    let gw = gateway(format!("http://{addr}"), |_| {}).await;
    let mut s = TcpStream::connect(gw.addr).await.unwrap();
    s.write_all(
        b"GET /ws HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
          Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    )
    .await
    .unwrap();
    let sent = Instant::now();
    let at = tokio::time::timeout(DEADLINE, closed.recv())
        .await
        .expect("the backend side of the tunnel is still open")
        .unwrap();
    assert!(at - sent >= SEND - EARLY, "closed after {:?}", at - sent);
    assert!(
        drained_to_close(&mut s).await,
        "the client connection is still open"
    );
    gw.shutdown().await;
}
