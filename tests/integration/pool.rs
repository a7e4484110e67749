//! The gateway's pool of backend connections against a backend that
//! misbehaves on the wire (issue 11): a response must never reach a client
//! other than the one whose request it answers. Raw sockets on both sides;
//! every wait has a deadline.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::gateway::{config, restored, start, start_with, wait_until, DEADLINE};

/// The answer for `user`; `tag` marks the stray copy.
fn answer(user: &str, tag: &str) -> Vec<u8> {
    let body = format!("answer for user {user}{tag}");
    format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nSet-Cookie: session=user{user}{tag}\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Read one request (head, and a body of `Content-Length` bytes or a small
/// chunked one) off `s`; its head, lower-cased, then its body as sent.
/// `None` at EOF.
pub(crate) async fn read_request(s: &mut TcpStream, buf: &mut Vec<u8>) -> Option<String> {
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
    let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
    let declared: Option<usize> = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .map(|v| v.trim().parse().unwrap());
    let chunked = head.contains("\r\ntransfer-encoding: chunked\r\n");
    // A chunked body (small, no trailers here) ends at its last chunk.
    let body_end = |buf: &[u8]| match declared {
        Some(n) => (buf.len() >= end + n).then_some(end + n),
        None if chunked => buf[end..]
            .windows(5)
            .position(|w| w == b"0\r\n\r\n")
            .map(|i| end + i + 5),
        None => Some(end),
    };
    let length = loop {
        if let Some(at) = body_end(buf) {
            break at - end;
        }
        match s.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let body = String::from_utf8_lossy(&buf[end..end + length]).into_owned();
    buf.drain(..end + length);
    Some(head + &body)
}

/// The `user=` value of a request head's target.
fn user_of(head: &str) -> String {
    let target = head.split(' ').nth(1).unwrap_or("");
    target
        .split_once("user=")
        .map_or("", |(_, u)| u)
        .to_string()
}

/// One response with a `Content-Length` body (or none), as read off the
/// wire: header names as spelled.
#[derive(Debug)]
pub(crate) struct Answer {
    pub(crate) status: u16,
    pub(crate) names: Vec<String>,
    pub(crate) body: String,
}

/// The response at the start of `buf` once it is all there, and its size.
pub(crate) fn whole_answer(buf: &[u8]) -> Option<(Answer, usize)> {
    let mut slots = [httparse::EMPTY_HEADER; 32];
    let mut r = httparse::Response::new(&mut slots);
    let Ok(httparse::Status::Complete(len)) = r.parse(buf) else {
        return None;
    };
    let cl: usize = r
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("content-length"))
        .and_then(|h| std::str::from_utf8(h.value).ok()?.parse().ok())
        .unwrap_or(0);
    let body = buf.get(len..len + cl)?;
    let answer = Answer {
        status: r.code.unwrap_or(0),
        names: r.headers.iter().map(|h| h.name.to_string()).collect(),
        body: String::from_utf8_lossy(body).into_owned(),
    };
    Some((answer, len + cl))
}

/// A backend on a raw socket: `serve` runs for each connection.
pub(crate) async fn raw_backend<F, Fut>(serve: F) -> SocketAddr
where
    F: Fn(TcpStream) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            tokio::spawn(serve(s));
        }
    });
    addr
}

/// A backend with a handler bug: it answers every request, and 50 ms later
/// answers it again (a second complete response, in a segment of its
/// own), on a connection it keeps open. Counts the stray answers sent.
async fn double_answering() -> (SocketAddr, Arc<AtomicUsize>) {
    let strays = Arc::new(AtomicUsize::new(0));
    let sent = strays.clone();
    let addr = raw_backend(move |mut s| {
        let sent = sent.clone();
        async move {
            let mut buf = Vec::new();
            while let Some(head) = read_request(&mut s, &mut buf).await {
                let user = user_of(&head);
                if s.write_all(&answer(&user, "")).await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
                let stray = s.write_all(&answer(&user, "-stray")).await;
                sent.fetch_add(1, Ordering::SeqCst);
                if stray.is_err() {
                    return;
                }
            }
        }
    })
    .await;
    (addr, strays)
}

/// One response read off `s` to EOF: (status, Set-Cookie, body).
async fn read_to_close(mut s: TcpStream) -> (u16, String, String) {
    let mut raw = Vec::new();
    tokio::time::timeout(DEADLINE, s.read_to_end(&mut raw))
        .await
        .expect("an answer in time")
        .expect("a readable connection");
    let mut slots = [httparse::EMPTY_HEADER; 32];
    let mut r = httparse::Response::new(&mut slots);
    let Ok(httparse::Status::Complete(len)) = r.parse(&raw) else {
        panic!("no response: {:?}", String::from_utf8_lossy(&raw));
    };
    let cookie = r
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("set-cookie"))
        .map(|h| String::from_utf8_lossy(h.value).into_owned())
        .unwrap_or_default();
    let body = String::from_utf8_lossy(&raw[len..]).into_owned();
    (r.code.unwrap_or(0), cookie, body)
}

/// Five clients, one after another on fresh connections, each asking with
/// `request(user)`: each must get its own answer. The next client comes
/// only once the backend has sent its stray answer to the previous one.
async fn five_clients_each_get_their_own_answer(request: fn(usize) -> String) {
    let (backend, strays) = double_answering().await;
    let gw = start(Some(format!("http://{backend}")), json!([])).await;
    for user in 1..=5 {
        let mut s = TcpStream::connect(gw.addr).await.unwrap();
        s.write_all(request(user).as_bytes()).await.unwrap();
        let (status, cookie, body) = read_to_close(s).await;
        assert_eq!(
            (status, cookie.as_str(), body.as_str()),
            (
                200,
                format!("session=user{user}").as_str(),
                format!("answer for user {user}").as_str()
            ),
            "client {user} got another's answer"
        );
        assert!(
            wait_until("the backend's stray answer", || strays
                .load(Ordering::SeqCst)
                >= user)
            .await
        );
    }
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stray_answer_never_reaches_the_next_client_of_the_front_end() {
    five_clients_each_get_their_own_answer(|user| {
        format!("GET /me?user={user} HTTP/1.1\r\nHost: gw.test\r\nConnection: close\r\n\r\n")
    })
    .await;
    // A small body of a declared length is the front end's too.
    five_clients_each_get_their_own_answer(|user| {
        format!(
            "POST /me?user={user} HTTP/1.1\r\nHost: gw.test\r\nContent-Length: 2\r\n\
             Connection: close\r\n\r\nhi"
        )
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stray_answer_never_reaches_the_next_client_of_hyper() {
    // HTTP/1.0 and chunked bodies are served by hyper's side of the
    // gateway.
    five_clients_each_get_their_own_answer(|user| {
        format!("GET /me?user={user} HTTP/1.0\r\nHost: gw.test\r\n\r\n")
    })
    .await;
    five_clients_each_get_their_own_answer(|user| {
        format!(
            "POST /me?user={user} HTTP/1.1\r\nHost: gw.test\r\nTransfer-Encoding: chunked\r\n\
             Connection: close\r\n\r\n2\r\nhi\r\n0\r\n\r\n"
        )
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stray_answer_on_an_idle_pooled_connection_closes_it_at_once() {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let backend = l.local_addr().unwrap();
    let (stray, send_stray) = tokio::sync::oneshot::channel::<()>();
    let seen = tokio::spawn(async move {
        let (mut s, _) = l.accept().await.unwrap();
        let mut buf = Vec::new();
        let user = user_of(&read_request(&mut s, &mut buf).await.unwrap());
        s.write_all(&answer(&user, "")).await.unwrap();
        send_stray.await.unwrap();
        s.write_all(&answer(&user, "-stray")).await.unwrap();
        // The gateway closes the connection now, not when it expires (a
        // reset: it leaves the stray answer unread).
        let mut rest = Vec::new();
        matches!(
            tokio::time::timeout(DEADLINE, s.read_to_end(&mut rest)).await,
            Ok(Ok(0) | Err(_))
        )
    });
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), Some(format!("http://{backend}")), json!([]));
    cfg.timeouts.pool_idle = Duration::from_secs(300);
    let gw = start_with(cfg, dir, restored(), |g| g).await;
    let mut s = TcpStream::connect(gw.addr).await.unwrap();
    s.write_all(b"GET /me?user=1 HTTP/1.1\r\nHost: gw.test\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(read_to_close(s).await.2, "answer for user 1");
    stray.send(()).unwrap();
    assert!(
        tokio::time::timeout(DEADLINE * 2, seen)
            .await
            .unwrap()
            .unwrap(),
        "the idle connection stayed open after the backend sent an answer to no request"
    );
    gw.shutdown().await;
}
