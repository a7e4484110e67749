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
