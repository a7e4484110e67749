//! Upgrades other than WebSocket are not passed on (issue 11): a backend
//! that speaks h2c must never see `Upgrade: h2c` (nor `HTTP2-Settings`),
//! or a client could switch the connection to HTTP/2 and send it requests
//! past routing and the forwarding headers. Raw sockets on both sides.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::gateway::{start, DEADLINE};
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
