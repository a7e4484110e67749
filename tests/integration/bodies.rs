//! Small request bodies of a declared length are forwarded by the
//! gateway's own front end (issue 11: POSTs as fast as GETs), with the
//! same answers as hyper's side gives: raw sockets on both sides, every
//! wait with a deadline.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use tokio::io::AsyncWriteExt;

use super::front::Client;
use super::gateway::{config, restored, start, start_with};
use super::pool::{raw_backend, read_request, whole_answer, Answer};

/// A backend that answers each request with its body, under a header
/// whose name is spelled in mixed case (the front end relays names as
/// they came; hyper's side writes them in lower case); it keeps each
/// request it saw (head lower-cased, then the body).
async fn echo_backend() -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let addr = raw_backend(move |mut s| {
        let log = log.clone();
        async move {
            let mut buf = Vec::new();
            while let Some(request) = read_request(&mut s, &mut buf).await {
                let body = request.split_once("\r\n\r\n").map_or("", |(_, b)| b);
                let answer = format!(
                    "HTTP/1.1 200 OK\r\nX-Echo-Case: 1\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                );
                log.lock().unwrap().push(request.clone());
                if s.write_all(answer.as_bytes()).await.is_err() {
                    return;
                }
            }
        }
    })
    .await;
    (addr, seen)
}

/// The next response on `c` (with a `Content-Length` body, or none),
/// header names as spelled.
async fn answer(c: &mut Client) -> Answer {
    loop {
        if let Some((answer, len)) = whole_answer(&c.buf) {
            c.buf.drain(..len);
            return answer;
        }
        c.more().await;
    }
}

fn post(path: &str, body: &str) -> String {
    format!(
        "POST {path} HTTP/1.1\r\nHost: gw.test\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// A chat completion's request, about 1 KiB.
fn chat() -> String {
    let history: Vec<_> = (0..12)
        .map(|i| json!({"role": if i % 2 == 0 { "user" } else { "assistant" }, "content": format!("message number {i} of a conversation, long enough to matter")}))
        .collect();
    json!({"model": "gpt-4o-mini", "stream": false, "temperature": 0.7, "messages": history})
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_bodies_are_forwarded_by_the_front_end_whole_and_in_order() {
    let (backend, seen) = echo_backend().await;
    let gw = start(Some(format!("http://{backend}")), json!([])).await;
    let body = chat();
    assert!((900..2048).contains(&body.len()), "{}", body.len());
    let mut c = Client::connect(&gw).await;
    // Keep-alive, then pipelined with a GET and an empty body.
    c.send(&post("/v1/chat/completions", &body)).await;
    let a = answer(&mut c).await;
    assert_eq!((a.status, a.body.as_str()), (200, body.as_str()));
    assert!(
        a.names.iter().any(|n| n == "X-Echo-Case"),
        "not relayed by the front end: {a:?}"
    );
    let get = "GET /after HTTP/1.1\r\nHost: gw.test\r\n\r\n";
    c.send(&format!(
        "{}{get}{}",
        post("/two", "{\"n\":2}"),
        post("/three", "")
    ))
    .await;
    for want in ["{\"n\":2}", "", ""] {
        let a = answer(&mut c).await;
        assert_eq!((a.status, a.body.as_str()), (200, want));
        assert!(a.names.iter().any(|n| n == "X-Echo-Case"), "{a:?}");
    }
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 4, "{seen:#?}");
    assert!(
        seen[0].starts_with("post /v1/chat/completions http/1.1\r\n"),
        "{}",
        seen[0]
    );
    assert!(seen[0].contains(&format!("\r\ncontent-length: {}\r\n", body.len())));
    assert!(seen[0].ends_with(&body));
    assert!(seen[2].starts_with("get /after ") && !seen[2].contains("content-length"));
    assert!(seen[3].contains("\r\ncontent-length: 0\r\n"), "{}", seen[3]);
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_looks_like_a_request_stays_a_body_even_when_forwarding_fails() {
    let (backend, seen) = echo_backend().await;
    let gw = start(
        Some(format!("http://{backend}")),
        json!([{"id": "down", "match": {"path_prefix": "/down"}, "backend": "http://127.0.0.1:1"}]),
    )
    .await;
    let smuggled = "GET /smuggled HTTP/1.1\r\nHost: gw.test\r\n\r\n";
    let mut c = Client::connect(&gw).await;
    c.send(&format!(
        "{}{}",
        post("/down/x", smuggled),
        "GET /ok HTTP/1.1\r\nHost: gw.test\r\n\r\n"
    ))
    .await;
    assert_eq!(answer(&mut c).await.status, 502);
    c.send(&post("/echo", smuggled)).await;
    let a = answer(&mut c).await;
    assert_eq!(
        (a.status, a.body.as_str()),
        (200, ""),
        "the pipelined GET /ok"
    );
    let a = answer(&mut c).await;
    assert_eq!((a.status, a.body.as_str()), (200, smuggled));
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2, "{seen:#?}");
    assert!(seen.iter().all(|r| !r.starts_with("get /smuggled")));
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_over_the_limit_or_still_on_their_way_get_hyper_s_answers() {
    let (backend, _) = echo_backend().await;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), Some(format!("http://{backend}")), json!([]));
    cfg.max_body = 100;
    let gw = start_with(cfg, dir, restored(), |g| g).await;
    // Over `max_body`: 413, as for any body.
    let mut c = Client::connect(&gw).await;
    c.send(&post("/big", &"x".repeat(101))).await;
    assert_eq!(answer(&mut c).await.status, 413);
    // A body sent well after its head is streamed by hyper's side; the
    // answer is the same, and so is the next one on the connection.
    let mut c = Client::connect(&gw).await;
    let body = "{\"late\":true}";
    let request = post("/late", body);
    let (head, rest) = request.split_at(request.len() - body.len());
    c.send(head).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    c.send(rest).await;
    let a = answer(&mut c).await;
    assert_eq!((a.status, a.body.as_str()), (200, body));
    c.send(&post("/next", "{}")).await;
    assert_eq!(answer(&mut c).await.body, "{}");
    gw.shutdown().await;
}
