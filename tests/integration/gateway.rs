//! The gateway over real sockets on 127.0.0.1: `Gateway::serve` runs
//! in-process on a `:0` listener, with in-process backends (an echo server
//! that can also stream, upgrade, and stall on demand).
//!
//! Timing is never asserted with sleeps: streaming tests gate each step on
//! the other side having seen the previous one, and every wait has a
//! deadline that fails the test with what was seen.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

use stackctl::gateway::auth::LimitConfig;
use stackctl::gateway::body::{empty, full, Body, BoxError};
use stackctl::gateway::Gateway;
use stackctl::manifest::yaml::Pos;
use stackctl::manifest::{Admin, GatewayTimeouts};
use stackctl::shutdown::CancellationToken;
use stackctl::status::{Phase, StatusBoard};

pub(crate) const PASSWORD: &str = "test-password-123";
pub(crate) const DEADLINE: Duration = Duration::from_secs(20);

// ---- backends ------------------------------------------------------------

/// Knobs and counters shared between a test and its backend.
#[derive(Default)]
struct Ctl {
    /// Request body bytes the backend has read (upload test).
    received: AtomicU64,
    /// Response body bytes the client has read (download test).
    client_got: AtomicU64,
    /// The sender of the open SSE stream.
    sse: Mutex<Option<mpsc::Sender<Bytes>>>,
}

pub(crate) struct Backend {
    pub(crate) addr: SocketAddr,
    ctl: Arc<Ctl>,
}

impl Backend {
    pub(crate) fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

async fn serve_fn<F, Fut>(f: F) -> SocketAddr
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<Body>> + Send + 'static,
{
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = l.accept().await else { return };
            let f = f.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |r| {
                    let f = f.clone();
                    async move { Ok::<_, Infallible>(f(r).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(s), svc)
                    .with_upgrades()
                    .await;
            });
        }
    });
    addr
}

fn json_resp(v: Value) -> Response<Body> {
    let mut r = Response::new(full(v.to_string()));
    r.headers_mut()
        .insert("content-type", "application/json".parse().unwrap());
    r
}

pub(crate) async fn wait_until(what: &str, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + DEADLINE;
    while !f() {
        if Instant::now() > deadline {
            eprintln!("gave up waiting for {what}");
            return false;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    true
}

/// An echo backend called `name`: answers JSON describing the request,
/// and has special paths for streaming tests.
pub(crate) async fn backend(name: &'static str) -> Backend {
    let ctl = Arc::new(Ctl::default());
    let c = ctl.clone();
    let addr = serve_fn(move |req: Request<Incoming>| {
        let ctl = c.clone();
        async move { echo(name, ctl, req).await }
    })
    .await;
    Backend { addr, ctl }
}

async fn echo(name: &'static str, ctl: Arc<Ctl>, mut req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path().to_string();
    if path.ends_with("/slow") {
        tokio::time::sleep(Duration::from_secs(30)).await;
        return json_resp(json!({"slow": true}));
    }
    if path.ends_with("/upload") {
        // This request's bytes are answered; the shared counter lets a
        // test watch an upload's progress from outside.
        let mut body = req.into_body();
        let mut mine = 0u64;
        while let Some(frame) = body.frame().await {
            let Ok(frame) = frame else { break };
            if let Some(d) = frame.data_ref() {
                mine += d.len() as u64;
                ctl.received.fetch_add(d.len() as u64, Ordering::SeqCst);
            }
        }
        return json_resp(json!({"bytes": mine}));
    }
    if path.ends_with("/download") {
        let total: u64 = req
            .uri()
            .query()
            .and_then(|q| q.strip_prefix("n="))
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        let chunk = Bytes::from(vec![b'd'; 64 * 1024]);
        let stream = futures_util::stream::unfold(0u64, move |sent| {
            let (ctl, chunk) = (ctl.clone(), chunk.clone());
            async move {
                if sent >= total {
                    return None;
                }
                // Half-way, wait for the client to have most of what was
                // sent: a gateway that buffered the whole body would
                // never let it through.
                if sent == total / 2 {
                    let slack = 32 << 20;
                    if !wait_until("the client to read the first half", || {
                        ctl.client_got.load(Ordering::SeqCst) + slack >= sent
                    })
                    .await
                    {
                        return Some((
                            Err::<Frame<Bytes>, BoxError>("client did not keep up".into()),
                            total,
                        ));
                    }
                }
                let n = chunk.len().min((total - sent) as usize);
                Some((Ok(Frame::data(chunk.slice(..n))), sent + n as u64))
            }
        });
        let mut r = Response::new(StreamBody::new(stream).boxed_unsync().into());
        r.headers_mut().insert("content-length", total.into());
        return r;
    }
    if path.ends_with("/sse") {
        let (tx, rx) = mpsc::channel::<Bytes>(16);
        *ctl.sse.lock().unwrap() = Some(tx);
        let stream = futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv()
                .await
                .map(|b| (Ok::<_, BoxError>(Frame::data(b)), rx))
        });
        let mut r = Response::new(StreamBody::new(stream).boxed_unsync().into());
        r.headers_mut()
            .insert("content-type", "text/event-stream".parse().unwrap());
        r.headers_mut()
            .insert("cache-control", "no-cache".parse().unwrap());
        return r;
    }
    if path.ends_with("/ws") {
        let key = req.headers().get("sec-websocket-key").cloned();
        let Some(key) = key else {
            return json_resp(json!({"error": "not a websocket request"}));
        };
        let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
        let on = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            let Ok(up) = on.await else { return };
            let mut ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
                TokioIo::new(up),
                tokio_tungstenite::tungstenite::protocol::Role::Server,
                None,
            )
            .await;
            while let Some(Ok(msg)) = ws.next().await {
                if msg.is_text() || msg.is_binary() {
                    let reply = match msg {
                        Message::Text(t) => Message::text(format!("{name}:{t}")),
                        m => m,
                    };
                    if ws.send(reply).await.is_err() {
                        break;
                    }
                }
            }
        });
        let mut r = Response::new(empty());
        *r.status_mut() = hyper::StatusCode::SWITCHING_PROTOCOLS;
        let h = r.headers_mut();
        h.insert("connection", "upgrade".parse().unwrap());
        h.insert("upgrade", "websocket".parse().unwrap());
        h.insert("sec-websocket-accept", accept.parse().unwrap());
        return r;
    }
    let headers: BTreeMap<String, String> = req
        .headers()
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
        .collect();
    json_resp(json!({
        "backend": name,
        "method": req.method().as_str(),
        "path": path,
        "query": req.uri().query(),
        "headers": headers,
    }))
}

// ---- the gateway under test ---------------------------------------------------

pub(crate) struct Gw {
    pub(crate) addr: SocketAddr,
    pub(crate) stop: CancellationToken,
    pub(crate) task: tokio::task::JoinHandle<()>,
    dir: tempfile::TempDir,
}

impl Gw {
    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub(crate) async fn shutdown(self) -> tempfile::TempDir {
        self.stop.cancel();
        tokio::time::timeout(DEADLINE, self.task)
            .await
            .expect("serve returns after shutdown")
            .unwrap();
        self.dir
    }
}

pub(crate) fn config(
    dir: &Path,
    default_backend: Option<String>,
    routes: Value,
) -> stackctl::manifest::Gateway {
    let routes: Vec<stackctl::gateway::rules::Rule> =
        serde_json::from_value(routes).expect("the test's routes read as rules");
    stackctl::manifest::Gateway {
        listen: "127.0.0.1:0".parse().unwrap(),
        default_backend,
        route_pos: vec![Pos { line: 10, col: 7 }; routes.len()],
        routes,
        admin: Admin {
            password: Some(PASSWORD.into()),
            password_file: dir.join("home/admin-password"),
            legacy_password_file: None,
        },
        allow_backends: vec![],
        trusted_proxies: vec![],
        state_file: dir.join("state/gateway.json"),
        timeouts: GatewayTimeouts {
            connect: Duration::from_secs(2),
            response: Duration::from_secs(5),
            pool_idle: Duration::from_secs(4),
            header_read: Duration::from_secs(30),
            idle: Duration::from_secs(75),
            send: Duration::from_secs(60),
        },
        max_body: 1 << 30,
        import_from: None,
        backend_connections: Default::default(),
    }
}

pub(crate) async fn start_with(
    cfg: stackctl::manifest::Gateway,
    dir: tempfile::TempDir,
    status: StatusBoard,
    tweak: impl FnOnce(Gateway) -> Gateway + Send + 'static,
) -> Gw {
    let s = status.clone();
    // Argon2 hashing happens in `new`: keep it off the async workers.
    let gw = tokio::task::spawn_blocking(move || Gateway::new(&cfg, s).map(tweak))
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("Gateway::new: {e}"));
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let stop = CancellationToken::new();
    let task = tokio::spawn(gw.serve(l, stop.clone()));
    drop(status);
    Gw {
        addr,
        stop,
        task,
        dir,
    }
}

pub(crate) fn restored() -> StatusBoard {
    let s = StatusBoard::new();
    s.update(|st| st.restored = true);
    s
}

pub(crate) async fn start(default_backend: Option<String>, routes: Value) -> Gw {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), default_backend, routes);
    start_with(cfg, dir, restored(), |g| g).await
}

// ---- a small client ------------------------------------------------------------

struct Resp {
    status: u16,
    headers: hyper::HeaderMap,
    body: String,
}

impl Resp {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {} {}", self.status, self.body))
    }

    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .map(|v| v.to_str().unwrap())
            .unwrap_or("")
    }
}

fn client() -> Client<HttpConnector, Body> {
    Client::builder(TokioExecutor::new()).build_http()
}

async fn call(method: &str, url: &str, headers: &[(&str, &str)], body: Body) -> Resp {
    let mut b = Request::builder().method(method).uri(url);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let resp = tokio::time::timeout(DEADLINE, client().request(b.body(body).unwrap()))
        .await
        .unwrap_or_else(|_| panic!("{method} {url}: no answer in time"))
        .unwrap_or_else(|e| panic!("{method} {url}: {e}"));
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    Resp {
        status,
        headers,
        body: String::from_utf8_lossy(&bytes).into_owned(),
    }
}

async fn get(url: &str) -> Resp {
    call("GET", url, &[], empty()).await
}

async fn admin_get(gw: &Gw, path: &str) -> Resp {
    call(
        "GET",
        &gw.url(path),
        &[("x-admin-password", PASSWORD)],
        empty(),
    )
    .await
}

async fn admin_post(gw: &Gw, path: &str, body: Value, extra: &[(&str, &str)]) -> Resp {
    let mut h = vec![
        ("x-admin-password", PASSWORD),
        ("content-type", "application/json"),
    ];
    h.extend_from_slice(extra);
    call("POST", &gw.url(path), &h, full(body.to_string())).await
}

// ---- proxying -----------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxies_with_and_without_strip_prefix_and_sets_forwarded_headers() {
    let a = backend("a").await;
    let g = backend("g").await;
    let gw = start(
        Some(a.url()),
        json!([
            {"id": "gemini", "match": {"path_prefix": "/gemini/"}, "backend": g.url(), "strip_prefix": true},
            {"id": "keep", "match": {"path_prefix": "/keep/"}, "backend": g.url(),
             "set_headers": [{"name": "X-Forwarded-Prefix", "value": "/keep"}, {"name": "X-Extra", "value": "yes"}]}
        ]),
    )
    .await;

    let r = call(
        "GET",
        &gw.url("/gemini/v1beta/models?key=1"),
        &[
            ("x-forwarded-for", "6.6.6.6"),
            ("x-forwarded-proto", "https"),
        ],
        empty(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let j = r.json();
    assert_eq!(
        (
            j["backend"].as_str(),
            j["path"].as_str(),
            j["query"].as_str()
        ),
        (Some("g"), Some("/v1beta/models"), Some("key=1"))
    );
    let h = &j["headers"];
    assert_eq!(h["x-forwarded-prefix"], "/gemini");
    assert_eq!(
        h["x-forwarded-for"], "127.0.0.1",
        "untrusted peers cannot forge X-Forwarded-For"
    );
    assert_eq!(h["x-forwarded-proto"], "http");
    assert_eq!(h["x-forwarded-host"], gw.addr.to_string());
    assert_eq!(h["x-forwarded-port"], gw.addr.port().to_string());
    assert_eq!(
        h["host"],
        gw.addr.to_string(),
        "the client's Host is passed on"
    );

    let j = get(&gw.url("/keep/x")).await.json();
    assert_eq!(
        (j["backend"].as_str(), j["path"].as_str()),
        (Some("g"), Some("/keep/x"))
    );
    assert_eq!(
        (
            j["headers"]["x-forwarded-prefix"].as_str(),
            j["headers"]["x-extra"].as_str()
        ),
        (Some("/keep"), Some("yes"))
    );

    let j = get(&gw.url("/keepsake")).await.json();
    assert_eq!(j["backend"], "a", "/keepsake is not under /keep/");
    let j = get(&gw.url("/x/../gemini/v1")).await.json();
    assert_eq!(
        (j["backend"].as_str(), j["path"].as_str()),
        (Some("g"), Some("/v1")),
        "dot segments resolved before matching"
    );

    let r = get(&gw.url("/a%2Fb")).await;
    assert_eq!(r.status, 400, "encoded slash refused");
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn referer_and_header_rules_route_and_redirects_keep_the_query() {
    let a = backend("a").await;
    let n = backend("napcat").await;
    let gw = start(
        Some(a.url()),
        json!([
            {"id": "webui-assets", "priority": 190, "match": {"referer_substr": "/webui/"}, "backend": n.url()},
            {"id": "beta", "match": {"headers": [{"name": "x-channel", "regex": "^beta-\\d+$"}]}, "backend": n.url()},
            {"id": "webui-slash", "priority": 200, "action": "redirect", "match": {"path_equal": "/webui"}, "redirect_to": "/webui/"},
            {"id": "moved", "priority": 200, "action": "redirect", "match": {"path_prefix": "/old/"}, "redirect_to_prefix": "/new/", "redirect_code": 308}
        ]),
    )
    .await;

    let j = call(
        "GET",
        &gw.url("/assets/app.js"),
        &[("referer", "https://space.hf.space/webui/login")],
        empty(),
    )
    .await
    .json();
    assert_eq!(j["backend"], "napcat");
    assert_eq!(get(&gw.url("/assets/app.js")).await.json()["backend"], "a");
    assert_eq!(
        call("GET", &gw.url("/x"), &[("x-channel", "beta-42")], empty())
            .await
            .json()["backend"],
        "napcat"
    );
    assert_eq!(
        call("GET", &gw.url("/x"), &[("x-channel", "beta-x")], empty())
            .await
            .json()["backend"],
        "a"
    );

    let r = get(&gw.url("/webui?token=abc&x=1")).await;
    assert_eq!(
        (r.status, r.header("location")),
        (302, "/webui/?token=abc&x=1")
    );
    let r = call("POST", &gw.url("/old/a/b?q=1"), &[], full("x")).await;
    assert_eq!((r.status, r.header("location")), (308, "/new/a/b?q=1"));
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_echo_through_the_gateway() {
    let n = backend("napcat").await;
    let gw = start(
        None,
        json!([{"id": "ws", "match": {"path_prefix": "/api/ws/"}, "backend": n.url()}]),
    )
    .await;
    let (mut ws, resp) = tokio::time::timeout(
        DEADLINE,
        tokio_tungstenite::connect_async(format!("ws://{}/api/ws/ws", gw.addr)),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(resp.status(), 101);
    for i in 0..20 {
        ws.send(Message::text(format!("hello {i}"))).await.unwrap();
        let reply = tokio::time::timeout(DEADLINE, ws.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(
            reply.into_text().unwrap().as_str(),
            format!("napcat:hello {i}")
        );
    }
    let big = vec![7u8; 1 << 20];
    ws.send(Message::binary(big.clone())).await.unwrap();
    let reply = tokio::time::timeout(DEADLINE, ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(reply.into_data().len(), big.len());
    ws.close(None).await.unwrap();
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_events_arrive_one_by_one() {
    let g = backend("gemini").await;
    let gw = start(Some(g.url()), json!([])).await;
    let resp = client()
        .request(
            Request::get(gw.url("/v1/stream/sse"))
                .header("accept", "text/event-stream")
                .body(empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let mut body = resp.into_body();
    let tx = {
        let ctl = g.ctl.clone();
        assert!(
            wait_until("the SSE stream to open", || ctl
                .sse
                .lock()
                .unwrap()
                .is_some())
            .await
        );
        let tx = ctl.sse.lock().unwrap().take().unwrap();
        tx
    };
    let mut delays = Vec::new();
    for i in 0..10 {
        let event = format!("data: {{\"n\": {i}}}\n\n");
        let sent = Instant::now();
        tx.send(Bytes::from(event.clone())).await.unwrap();
        // The next event is only sent once this one has arrived, so
        // receiving exactly this event proves nothing was held back.
        let mut got = Vec::new();
        while got.len() < event.len() {
            let frame = tokio::time::timeout(DEADLINE, body.frame())
                .await
                .unwrap_or_else(|_| {
                    panic!(
                        "event {i} did not arrive; got so far {:?}",
                        String::from_utf8_lossy(&got)
                    )
                })
                .unwrap()
                .unwrap();
            if let Some(d) = frame.data_ref() {
                got.extend_from_slice(d);
            }
        }
        delays.push(sent.elapsed());
        assert_eq!(String::from_utf8(got).unwrap(), event);
    }
    drop(tx);
    assert!(
        tokio::time::timeout(DEADLINE, body.frame())
            .await
            .unwrap()
            .is_none(),
        "stream ends when the backend ends it"
    );
    eprintln!("sse per-event delays: {delays:?}");
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_200_mb_upload_and_download_stream_through() {
    const TOTAL: u64 = 200 << 20;
    let b = backend("files").await;
    let gw = start(Some(b.url()), json!([])).await;

    // Upload: the client sends half, then waits until the backend has read
    // nearly all of it before sending the rest.
    let ctl = b.ctl.clone();
    let chunk = Bytes::from(vec![b'u'; 64 * 1024]);
    let stream = futures_util::stream::unfold(0u64, move |sent| {
        let (ctl, chunk) = (ctl.clone(), chunk.clone());
        async move {
            if sent >= TOTAL {
                return None;
            }
            if sent == TOTAL / 2 {
                let slack = 32 << 20;
                if !wait_until("the backend to read the first half", || {
                    ctl.received.load(Ordering::SeqCst) + slack >= sent
                })
                .await
                {
                    return Some((
                        Err::<Frame<Bytes>, BoxError>("gateway did not stream the upload".into()),
                        TOTAL,
                    ));
                }
            }
            Some((Ok(Frame::data(chunk.clone())), sent + chunk.len() as u64))
        }
    });
    let req = Request::post(gw.url("/upload"))
        .header("content-length", TOTAL)
        .body(StreamBody::new(stream).boxed_unsync().into())
        .unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(120), client().request(req))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(resp.status(), 200);
    let j: Value =
        serde_json::from_slice(&resp.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(j["bytes"], TOTAL);

    // Download: the backend sends half, then waits until the client has
    // read nearly all of it.
    let resp = client()
        .request(
            Request::get(gw.url(&format!("/download?n={TOTAL}")))
                .body(empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    let mut got = 0u64;
    while let Some(frame) = tokio::time::timeout(DEADLINE, body.frame())
        .await
        .expect("download stalled")
    {
        if let Some(d) = frame.unwrap().data_ref() {
            got += d.len() as u64;
            b.ctl.client_got.store(got, Ordering::SeqCst);
        }
    }
    assert_eq!(got, TOTAL);
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_body_limit_is_413() {
    let b = backend("files").await;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), Some(b.url()), json!([]));
    cfg.max_body = 1000;
    let gw = start_with(cfg, dir, restored(), |g| g).await;
    let r = call("POST", &gw.url("/upload"), &[], full(vec![0u8; 1001])).await;
    assert_eq!(r.status, 413, "{}", r.body);
    // Chunked (no Content-Length): refused once the limit is passed.
    let stream = futures_util::stream::iter(
        (0..4).map(|_| Ok::<_, BoxError>(Frame::data(Bytes::from(vec![0u8; 400])))),
    );
    let r = call(
        "POST",
        &gw.url("/upload"),
        &[],
        StreamBody::new(stream).boxed_unsync().into(),
    )
    .await;
    assert_eq!(r.status, 413, "{}", r.body);
    // (The backend saw the start of the refused stream: bodies are not
    // held back to be counted first.)
    let r = call("POST", &gw.url("/upload"), &[], full(vec![0u8; 1000])).await;
    assert_eq!((r.status, r.json()["bytes"].as_u64()), (200, Some(1000)));
    gw.shutdown().await;
}

/// Issue 16: the 413 for an over-limit upload must reach a client that is
/// still sending its body: the gateway lingers (reads and drops) before
/// closing, instead of resetting the connection under the answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_413_reaches_a_client_still_uploading() {
    let b = backend("files").await;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), Some(b.url()), json!([]));
    cfg.max_body = 1000;
    let gw = start_with(cfg, dir, restored(), |g| g).await;
    let addr = gw.addr;
    let answer = tokio::task::spawn_blocking(move || {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(DEADLINE)).unwrap();
        let len = 64 << 20;
        let head = format!("POST /upload HTTP/1.1\r\nHost: h\r\nContent-Length: {len}\r\n\r\n");
        s.write_all(head.as_bytes()).unwrap();
        // The whole body, as a client that does not read while it sends.
        let chunk = vec![0u8; 64 << 10];
        let mut sent = 0;
        while sent < len {
            match s.write(&chunk) {
                Ok(n) => sent += n,
                Err(_) => break,
            }
        }
        let mut got = Vec::new();
        let read = s.read_to_end(&mut got);
        (
            sent,
            read.map_err(|e| e.to_string()),
            String::from_utf8_lossy(&got).to_string(),
        )
    })
    .await
    .unwrap();
    let (sent, read, text) = answer;
    // Like nginx: the client can send its whole body (no "broken pipe"
    // halfway, which clients report instead of the answer), then reads it.
    assert!(
        sent == 64 << 20 && read.is_ok() && text.starts_with("HTTP/1.1 413"),
        "sent {sent} bytes; read {read:?}: {text:?}"
    );
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_down_is_502_slow_is_504_and_other_routes_keep_working() {
    let a = backend("a").await;
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(
        dir.path(),
        Some(a.url()),
        json!([{"id": "dead", "match": {"path_prefix": "/dead/"}, "backend": format!("http://{dead}")}]),
    );
    cfg.timeouts.response = Duration::from_millis(300);
    let gw = start_with(cfg, dir, restored(), |g| g).await;

    let r = get(&gw.url("/dead/x")).await;
    assert_eq!(r.status, 502);
    assert_eq!(r.header("content-type"), "application/json");
    assert!(
        r.json()["error"]
            .as_str()
            .unwrap()
            .contains("refused or dropped"),
        "{}",
        r.body
    );
    let r = call(
        "GET",
        &gw.url("/dead/x"),
        &[("accept", "text/html")],
        empty(),
    )
    .await;
    assert!(r.body.contains("<h1>502 Bad Gateway</h1>"), "{}", r.body);

    let started = Instant::now();
    let r = get(&gw.url("/slow")).await;
    assert_eq!(r.status, 504, "{}", r.body);
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(get(&gw.url("/fine")).await.json()["backend"], "a");
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restoring_and_starting_services_get_503_not_502() {
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), Some(format!("http://{dead}")), json!([]));
    let status = StatusBoard::new();
    let svc = stackctl_service("astrbot", dead.port());
    let gw = start_with(cfg, dir, status.clone(), move |g| g.with_services(&[svc])).await;

    let r = call("GET", &gw.url("/"), &[("accept", "text/html")], empty()).await;
    assert_eq!((r.status, r.header("retry-after")), (503, "5"));
    assert!(r.body.contains("restoring data"), "{}", r.body);
    assert_eq!(get(&gw.url("/admin/healthz")).await.status, 503);

    status.update(|s| s.restored = true);
    status.service("astrbot", |s| s.phase = Phase::Starting);
    let r = get(&gw.url("/")).await;
    assert_eq!(r.status, 503);
    assert_eq!(
        r.json()["error"],
        "the service `astrbot` is starting; retry in a few seconds"
    );
    let h = get(&gw.url("/admin/healthz")).await;
    assert_eq!(
        (h.status, h.json()["not_ready"].clone()),
        (503, json!(["astrbot"]))
    );

    // Regression (issue 13, item 15): a service that cannot start at all
    // said "starting" through its backoff, for minutes.
    let missing = "failed to start: program `astrbot` not found in PATH (/usr/bin)";
    for phase in [Phase::Backoff, Phase::Failed] {
        status.service("astrbot", |s| {
            s.phase = phase;
            s.last_exit = Some(missing.into());
        });
        let r = call("GET", &gw.url("/"), &[("accept", "text/html")], empty()).await;
        assert_eq!(r.status, 503, "{phase:?}: {}", r.body);
        assert!(
            r.body.contains("the service `astrbot` cannot start: program `astrbot` not found in PATH (/usr/bin)"),
            "{phase:?}: {}",
            r.body
        );
    }

    status.service("astrbot", |s| {
        s.phase = Phase::Failed;
        s.last_exit = Some("exited 1".into());
    });
    let r = get(&gw.url("/")).await;
    assert_eq!(r.status, 502);
    assert!(r.body.contains("is failed"), "{}", r.body);

    status.service("astrbot", |s| s.phase = Phase::Ready);
    assert_eq!(get(&gw.url("/admin/healthz")).await.status, 200);
    gw.shutdown().await;
}

fn stackctl_service(name: &str, port: u16) -> stackctl::manifest::Service {
    use stackctl::manifest::*;
    Service {
        name: name.into(),
        pos: Pos::default(),
        command: vec!["true".into()],
        working_dir: "/".into(),
        environment: vec![],
        env_files: vec![],
        depends_on: vec![],
        readiness: Some(Probe {
            check: ProbeCheck::Http(format!("http://127.0.0.1:{port}/api/stat/start-time")),
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            failures: 1,
            initial_delay: Duration::ZERO,
        }),
        liveness: None,
        restart: RestartPolicy::Always,
        backoff: Backoff {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(60),
        },
        max_restarts: MaxRestarts {
            count: 10,
            within: Duration::from_secs(300),
        },
        stop_signal: 15,
        stop_timeout: Duration::from_secs(10),
        enabled: true,
        optional: false,
        logs: None,
        required_paths: vec![],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn route_swaps_under_load_fail_no_request_and_keep_websockets_open() {
    let a = backend("a").await;
    let b = backend("b").await;
    let rule = |to: &Backend| json!([{"id": "swap", "match": {"path_prefix": "/s/"}, "backend": to.url()}]);
    let gw = start(Some(a.url()), rule(&a)).await;
    let gw = Arc::new(gw);

    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/s/ws", gw.addr))
        .await
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(AtomicU64::new(0));
    let seen = Arc::new(Mutex::new(BTreeMap::<String, u64>::new()));
    let mut loaders = Vec::new();
    for _ in 0..8 {
        let (gw, stop, failures, seen) = (gw.clone(), stop.clone(), failures.clone(), seen.clone());
        loaders.push(tokio::spawn(async move {
            let c = client();
            while !stop.load(Ordering::SeqCst) {
                match c
                    .request(Request::get(gw.url("/s/x")).body(empty()).unwrap())
                    .await
                {
                    Ok(r) if r.status() == 200 => {
                        let body = r.into_body().collect().await.unwrap().to_bytes();
                        let j: Value = serde_json::from_slice(&body).unwrap();
                        *seen
                            .lock()
                            .unwrap()
                            .entry(j["backend"].as_str().unwrap().to_string())
                            .or_default() += 1;
                    }
                    Ok(r) => {
                        eprintln!("failed request: {}", r.status());
                        failures.fetch_add(1, Ordering::SeqCst);
                    }
                    Err(e) => {
                        eprintln!("failed request: {e}");
                        failures.fetch_add(1, Ordering::SeqCst);
                    }
                }
            }
        }));
    }
    for i in 0..100 {
        let to = if i % 2 == 0 { &b } else { &a };
        let r = admin_post(&gw, "/admin/routes.json", json!({"rules": rule(to)}), &[]).await;
        assert_eq!(r.status, 200, "swap {i}: {}", r.body);
    }
    stop.store(true, Ordering::SeqCst);
    for l in loaders {
        l.await.unwrap();
    }
    assert_eq!(failures.load(Ordering::SeqCst), 0);
    let seen = seen.lock().unwrap().clone();
    assert!(
        seen.get("a").copied().unwrap_or(0) > 0 && seen.get("b").copied().unwrap_or(0) > 0,
        "{seen:?}"
    );

    // The WebSocket opened before the swaps still talks to its backend.
    ws.send(Message::text("still here")).await.unwrap();
    let reply = tokio::time::timeout(DEADLINE, ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(reply.into_text().unwrap().as_str(), "a:still here");
    let gw = Arc::try_unwrap(gw).ok().expect("loaders are done");
    gw.shutdown().await;
}

// ---- admin --------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_requires_the_password_and_rate_limits_failures() {
    let a = backend("a").await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), Some(a.url()), json!([]));
    let limits = LimitConfig {
        ip_burst: 3.0,
        ip_refill: 0.01,
        global_burst: 100.0,
        global_refill: 1.0,
    };
    let gw = start_with(cfg, dir, restored(), move |g| g.with_rate_limits(limits)).await;

    let r = get(&gw.url("/admin/routes.json")).await;
    assert_eq!(
        (r.status, r.body.as_str()),
        (403, "{\"error\":\"forbidden\"}\n")
    );
    let r = admin_get(&gw, "/admin/routes.json").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json(), json!({"default_backend": a.url(), "rules": []}));
    assert!(
        r.headers.get("access-control-allow-origin").is_none(),
        "no CORS"
    );
    assert_eq!(r.header("cache-control"), "no-store");

    // The missing password above was the first failure of three allowed.
    for wrong in ["wrong-password", "wrong-again"] {
        let r = call(
            "GET",
            &gw.url("/admin/status"),
            &[("x-admin-password", wrong)],
            empty(),
        )
        .await;
        assert_eq!(r.status, 403);
    }
    let r = admin_get(&gw, "/admin/status").await;
    assert_eq!(
        r.status, 429,
        "even the right password waits once limited: {}",
        r.body
    );
    assert!(r.header("retry-after").parse::<u64>().unwrap() >= 1);

    // Proxied traffic is not limited.
    assert_eq!(get(&gw.url("/x")).await.json()["backend"], "a");
    assert_eq!(get(&gw.url("/admin/healthz")).await.status, 200);
    gw.shutdown().await;
}

/// Issue 16: wrong passwords from many addresses (behind a trusted proxy,
/// as on a Space) kept the owner's correct password at 429. Known clients
/// stay in: an address that signed in before, a browser with the device
/// cookie from its last sign-in, and loopback.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strangers_cannot_lock_the_owner_out() {
    let a = backend("a").await;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), Some(a.url()), json!([]));
    cfg.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
    let limits = LimitConfig {
        ip_burst: 10.0,
        ip_refill: 0.01,
        global_burst: 20.0,
        global_refill: 0.01,
    };
    let gw = start_with(cfg, dir, restored(), move |g| g.with_rate_limits(limits)).await;
    let from = |addr: &'static str, pw: &'static str| {
        let url = gw.url("/admin/status");
        async move {
            call(
                "GET",
                &url,
                &[("x-forwarded-for", addr), ("x-admin-password", pw)],
                empty(),
            )
            .await
        }
    };

    let r = from("198.51.100.77", PASSWORD).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let set_cookie = r.header("set-cookie").to_string();
    assert!(
        set_cookie.starts_with("stackctl_admin_device=v1.")
            && set_cookie.contains("; Path=/admin/; ")
            && set_cookie.contains("; HttpOnly; SameSite=Strict")
            && !set_cookie.contains("Secure"),
        "{set_cookie}"
    );
    let device = set_cookie.split(';').next().unwrap().to_string();

    const STRANGERS: [&str; 15] = [
        "203.0.113.1",
        "203.0.113.2",
        "203.0.113.3",
        "203.0.113.4",
        "203.0.113.5",
        "203.0.113.6",
        "203.0.113.7",
        "203.0.113.8",
        "203.0.113.9",
        "203.0.113.10",
        "203.0.113.11",
        "203.0.113.12",
        "203.0.113.13",
        "203.0.113.14",
        "203.0.113.15",
    ];
    for stranger in STRANGERS.iter().cycle().take(30) {
        let r = from(stranger, "wrong-password").await;
        assert!(matches!(r.status, 403 | 429), "{}", r.status);
    }
    let r = from("198.51.100.200", PASSWORD).await;
    assert_eq!(r.status, 429, "a new address waits for the global limit");

    assert_eq!(
        from("198.51.100.77", PASSWORD).await.status,
        200,
        "known address"
    );
    let r = call(
        "GET",
        &gw.url("/admin/status"),
        &[
            ("x-forwarded-for", "198.51.100.201"),
            ("x-admin-password", PASSWORD),
            ("cookie", device.as_str()),
        ],
        empty(),
    )
    .await;
    assert_eq!(r.status, 200, "known browser at a new address: {}", r.body);
    assert!(r.headers.get("set-cookie").is_none(), "its cookie is valid");
    assert_eq!(
        admin_get(&gw, "/admin/status").await.status,
        200,
        "loopback"
    );
    // A forged cookie is no key.
    let r = call(
        "GET",
        &gw.url("/admin/status"),
        &[
            ("x-forwarded-for", "198.51.100.202"),
            ("x-admin-password", PASSWORD),
            ("cookie", "stackctl_admin_device=v1.99999999999.00"),
        ],
        empty(),
    )
    .await;
    assert_eq!(r.status, 429);
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_http_semantics_etag_validation_media_type_methods_origin() {
    let a = backend("a").await;
    let gw = start(
        Some(a.url()),
        json!([{"id": "one", "match": {"path_prefix": "/one/"}, "backend": a.url()}]),
    )
    .await;

    let r = admin_get(&gw, "/admin/routes.json").await;
    let etag = r.header("etag").to_string();
    assert!(etag.starts_with('"'), "{etag}");

    let new_rules =
        json!({"rules": [{"id": "two", "match": {"path_prefix": "/two/"}, "backend": a.url()}]});
    let r = admin_post(
        &gw,
        "/admin/routes.json",
        new_rules.clone(),
        &[("if-match", "\"0000000000000000\"")],
    )
    .await;
    assert_eq!(r.status, 412, "{}", r.body);
    let r = admin_post(
        &gw,
        "/admin/routes.json",
        new_rules.clone(),
        &[("if-match", &etag)],
    )
    .await;
    assert_eq!((r.status, r.json()), (200, json!({"ok": true})));
    let new_etag = r.header("etag").to_string();
    // Issue 16: If-Match uses the strong comparison (RFC 9110 §13.1.1), so
    // a weak tag never matches, not even the current one.
    let weak = format!("W/{new_etag}");
    let r = admin_post(
        &gw,
        "/admin/routes.json",
        new_rules.clone(),
        &[("if-match", &weak)],
    )
    .await;
    assert_eq!(r.status, 412, "weak If-Match: {}", r.body);
    assert_ne!(new_etag, etag);
    let r = admin_post(
        &gw,
        "/admin/routes.json",
        new_rules.clone(),
        &[("if-match", &etag)],
    )
    .await;
    assert_eq!(r.status, 412, "the old ETag is stale now");
    let r = admin_get(&gw, "/admin/routes.json").await;
    assert_eq!(
        (r.header("etag"), r.json()["rules"][0]["id"].as_str()),
        (new_etag.as_str(), Some("two"))
    );
    assert_eq!(
        r.json()["default_backend"],
        a.url(),
        "default_backend kept when not given"
    );

    let bad = json!({"rules": [
        {"id": "ok", "match": {"path_prefix": "/ok/"}},
        {"id": "typo", "match": {"path_prefx": "/x/"}}
    ]});
    let r = admin_post(&gw, "/admin/routes.json", bad, &[]).await;
    assert_eq!(r.status, 400);
    assert!(
        r.json()["error"]
            .as_str()
            .unwrap()
            .starts_with("rules[1] (`typo`): `match.path_prefx`: unknown field `path_prefx`"),
        "{}",
        r.body
    );
    let r = admin_post(
        &gw,
        "/admin/routes.json",
        json!({"rules": [{"id": "adm", "match": {"path_prefix": "/admin/x/"}}]}),
        &[],
    )
    .await;
    assert!(r.status == 400 && r.body.contains("reserved"), "{}", r.body);
    assert_eq!(
        admin_get(&gw, "/admin/routes.json").await.header("etag"),
        new_etag,
        "a refused update changes nothing"
    );

    let r = call(
        "POST",
        &gw.url("/admin/routes.json"),
        &[
            ("x-admin-password", PASSWORD),
            ("content-type", "text/plain"),
        ],
        full("{}"),
    )
    .await;
    assert_eq!(r.status, 415);
    let r = call(
        "POST",
        &gw.url("/admin/routes.json"),
        &[
            ("x-admin-password", PASSWORD),
            ("content-type", "application/json"),
        ],
        full("{nope"),
    )
    .await;
    assert!(
        r.status == 400
            && r.json()["error"]
                .as_str()
                .unwrap()
                .starts_with("invalid json"),
        "{}",
        r.body
    );
    let big = format!("{{\"rules\": [], \"pad\": \"{}\"}}", "x".repeat(70 * 1024));
    let r = call(
        "POST",
        &gw.url("/admin/routes.json"),
        &[
            ("x-admin-password", PASSWORD),
            ("content-type", "application/json"),
        ],
        full(big),
    )
    .await;
    assert_eq!(r.status, 413);

    let r = call(
        "DELETE",
        &gw.url("/admin/routes.json"),
        &[("x-admin-password", PASSWORD)],
        empty(),
    )
    .await;
    assert_eq!((r.status, r.header("allow")), (405, "GET, HEAD, POST"));
    let r = call(
        "OPTIONS",
        &gw.url("/admin/routes.json"),
        &[("origin", "https://evil.example")],
        empty(),
    )
    .await;
    assert_eq!(r.status, 405);
    assert!(r.headers.get("access-control-allow-origin").is_none());
    let r = call("GET", &gw.url("/admin/password"), &[], empty()).await;
    assert_eq!((r.status, r.header("allow")), (405, "POST"));

    let host = gw.addr.to_string();
    let cross = [
        ("x-admin-password", PASSWORD),
        ("content-type", "application/json"),
        ("origin", "https://evil.example"),
        ("host", host.as_str()),
    ];
    let r = call(
        "POST",
        &gw.url("/admin/routes.json"),
        &cross,
        full("{\"rules\": []}"),
    )
    .await;
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(r.body.contains("cross-site"));
    // Issue 16: X-Forwarded-Host from a peer outside `trusted_proxies` is
    // the client's own claim; it must not make a foreign Origin pass.
    let forged = [
        ("x-admin-password", PASSWORD),
        ("content-type", "application/json"),
        ("origin", "https://evil.example"),
        ("x-forwarded-host", "evil.example"),
    ];
    let r = call(
        "POST",
        &gw.url("/admin/routes.json"),
        &forged,
        full("{\"rules\": []}"),
    )
    .await;
    assert_eq!(r.status, 403, "forged X-Forwarded-Host: {}", r.body);
    let r = call(
        "GET",
        &gw.url("/admin/routes.json"),
        &[
            ("x-admin-password", PASSWORD),
            ("sec-fetch-site", "cross-site"),
        ],
        empty(),
    )
    .await;
    assert_eq!(r.status, 403);
    let own_origin = format!("http://{host}");
    let r = call(
        "GET",
        &gw.url("/admin/routes.json"),
        &[
            ("x-admin-password", PASSWORD),
            ("origin", own_origin.as_str()),
            ("sec-fetch-site", "same-origin"),
        ],
        empty(),
    )
    .await;
    assert_eq!(r.status, 200);

    let r = admin_get(&gw, "/admin/status").await;
    let j = r.json();
    assert_eq!(
        (j["gateway"]["routes"].as_u64(), j["restored"].as_bool()),
        (Some(1), Some(true))
    );
    assert_eq!(j["gateway"]["listen"], gw.addr.to_string());

    let r = get(&gw.url("/admin/ui/")).await;
    assert_eq!(r.status, 200);
    assert!(r
        .header("content-security-policy")
        .contains("default-src 'self'"));
    assert!(r
        .header("content-security-policy")
        .contains("frame-ancestors 'none'"));
    assert_eq!(r.header("x-content-type-options"), "nosniff");
    assert_eq!(get(&gw.url("/admin/ui/nope.js")).await.status, 404);
    let r = get(&gw.url("/admin")).await;
    assert_eq!((r.status, r.header("location")), (302, "/admin/ui/"));
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_allow_list_refusals() {
    let a = backend("a").await;
    let gw = start(Some(a.url()), json!([])).await;
    let own = format!("http://127.0.0.1:{}", gw.addr.port());
    let cases = [
        ("http://10.0.0.5:80", "outside `allow_backends`"),
        ("http://169.254.169.254:80", "link-local"),
        ("http://0.0.0.0:8000", "is not a backend address"),
        ("https://127.0.0.1:8000", "only `http://`"),
        ("http://admin:pw@127.0.0.1:8000", "user name or password"),
        (
            "http://metadata.google.internal:80",
            "must be an IP address or `localhost`",
        ),
        (own.as_str(), "own listen address"),
    ];
    for (backend, want) in cases {
        let r = admin_post(
            &gw,
            "/admin/routes.json",
            json!({"rules": [{"id": "x", "match": {"path_prefix": "/x/"}, "backend": backend}]}),
            &[],
        )
        .await;
        assert_eq!(r.status, 400, "{backend}");
        let e = r.json()["error"].as_str().unwrap().to_string();
        assert!(
            e.starts_with("rules[0] (`x`): `backend`: ") && e.contains(want),
            "{backend}: {e}"
        );
    }
    let r = admin_post(
        &gw,
        "/admin/routes.json",
        json!({"default_backend": "http://192.168.1.1:80"}),
        &[],
    )
    .await;
    assert!(
        r.status == 400 && r.body.contains("`default_backend`"),
        "{}",
        r.body
    );
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_change_and_state_file_survive_a_restart() {
    let a = backend("a").await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(
        dir.path(),
        Some(a.url()),
        json!([{"id": "m", "match": {"path_prefix": "/m/"}}]),
    );
    let gw = start_with(cfg.clone(), dir, restored(), |g| g).await;

    let r = admin_post(
        &gw,
        "/admin/password",
        json!({"new_password": "short"}),
        &[],
    )
    .await;
    assert!(
        r.status == 400 && r.body.contains("at least 10"),
        "{}",
        r.body
    );
    // Issue 16: passwords no X-Admin-Password header can carry are refused
    // when set, instead of locking the owner out afterwards.
    for (pw, why) in [
        (" padded-password", "starts or ends with a space"),
        ("padded-password ", "starts or ends with a space"),
        ("caf\u{e9}-caf\u{e9}-caf\u{e9}", "printable ASCII only"),
    ] {
        let r = admin_post(&gw, "/admin/password", json!({"new_password": pw}), &[]).await;
        assert!(
            r.status == 400 && r.body.contains(why),
            "{pw:?}: {}",
            r.body
        );
    }
    let r = admin_post(
        &gw,
        "/admin/password",
        json!({"new_password": "a-much-longer-secret"}),
        &[],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        admin_get(&gw, "/admin/routes.json").await.status,
        403,
        "old password no longer works"
    );
    let r = call(
        "GET",
        &gw.url("/admin/routes.json"),
        &[("x-admin-password", "a-much-longer-secret")],
        empty(),
    )
    .await;
    assert_eq!(r.status, 200);
    let r = call(
        "POST",
        &gw.url("/admin/routes.json"),
        &[
            ("x-admin-password", "a-much-longer-secret"),
            ("content-type", "application/json"),
        ],
        full(json!({"rules": [{"id": "live", "match": {"path_prefix": "/live/"}}]}).to_string()),
    )
    .await;
    assert_eq!(r.status, 200);
    let dir = gw.shutdown().await;

    let state_text = std::fs::read_to_string(&cfg.state_file).unwrap();
    assert!(
        !state_text.contains("a-much-longer-secret") && !state_text.contains(PASSWORD),
        "no plaintext in the state file"
    );
    assert!(state_text.contains("$argon2id$"));
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&cfg.state_file)
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );

    // Same manifest: the live table and the API-set password win.
    let gw = start_with(cfg.clone(), dir, restored(), |g| g).await;
    let r = call(
        "GET",
        &gw.url("/admin/routes.json"),
        &[("x-admin-password", "a-much-longer-secret")],
        empty(),
    )
    .await;
    assert_eq!(r.json()["rules"][0]["id"], "live");
    let dir = gw.shutdown().await;

    // Edited manifest (routes and password): the manifest wins.
    let mut edited = cfg.clone();
    edited.routes =
        serde_json::from_value(json!([{"id": "edited", "match": {"path_prefix": "/e/"}}])).unwrap();
    edited.route_pos = vec![Pos::default()];
    edited.admin.password = Some("a-new-configured-pw".into());
    let gw = start_with(edited, dir, restored(), |g| g).await;
    let r = call(
        "GET",
        &gw.url("/admin/routes.json"),
        &[("x-admin-password", "a-new-configured-pw")],
        empty(),
    )
    .await;
    assert_eq!(
        (r.status, r.json()["rules"][0]["id"].as_str()),
        (200, Some("edited"))
    );
    gw.shutdown().await;
}

/// Issue 16: a configured password that no header can carry (here with a
/// trailing space, as a pasted Space variable may have) stops the start with
/// a message that names the key, instead of locking the owner out.
#[test]
fn a_configured_password_no_header_can_carry_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), None, json!([]));
    cfg.admin.password = Some("pasted-password ".into());
    let err = Gateway::new(&cfg, restored()).expect_err("refused");
    let msg = err.to_string();
    assert!(
        msg.starts_with("`gateway.admin.password` starts or ends with a space"),
        "{msg}"
    );
    assert!(!msg.contains("pasted-password"), "no secret in it: {msg}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_is_generated_when_none_is_configured() {
    let a = backend("a").await;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), Some(a.url()), json!([]));
    cfg.admin.password = None;
    let gw = start_with(cfg.clone(), dir, restored(), |g| g).await;
    let pw = std::fs::read_to_string(&cfg.admin.password_file)
        .unwrap()
        .trim()
        .to_string();
    assert_eq!(pw.len(), 24);
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&cfg.admin.password_file)
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    assert_eq!(
        get(&gw.url("/admin/routes.json")).await.status,
        403,
        "no default password"
    );
    let r = call(
        "GET",
        &gw.url("/admin/routes.json"),
        &[("x-admin-password", &pw)],
        empty(),
    )
    .await;
    assert_eq!(r.status, 200);
    let dir = gw.shutdown().await;
    // A restart keeps the stored hash and does not generate another.
    let gw = start_with(cfg.clone(), dir, restored(), |g| g).await;
    assert_eq!(
        std::fs::read_to_string(&cfg.admin.password_file)
            .unwrap()
            .trim(),
        pw
    );
    let r = call(
        "GET",
        &gw.url("/admin/routes.json"),
        &[("x-admin-password", &pw)],
        empty(),
    )
    .await;
    assert_eq!(r.status, 200);
    gw.shutdown().await;
}

/// The original's `nginx/default_admin_config.json` (its default rules, as
/// listed in shared/reference/original.md), posted as it is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_originals_admin_config_json_loads_through_the_api() {
    let astrbot = backend("astrbot").await;
    let napcat = backend("napcat").await;
    let gemini = backend("gemini").await;
    let gw = start(Some(astrbot.url()), json!([])).await;
    let original = json!({
      "admin_password": "admin",
      "default_backend": astrbot.url(),
      "rules": [
        {"match": {"path_prefix": "/api/ws/"}, "backend": napcat.url(), "action": "proxy", "id": "proxy-api-ws", "priority": 200},
        {"match": {"referer_substr": "gemini"}, "backend": gemini.url(), "action": "proxy", "id": "proxy-referer-gemini", "priority": 195},
        {"match": {"referer_substr": "webui"}, "backend": napcat.url(), "action": "proxy", "id": "proxy-referer-webui", "priority": 195},
        {"match": {"path_equal": "/webui"}, "redirect_to": "/webui/", "action": "redirect", "id": "redirect-webui-slash", "priority": 200},
        {"match": {"referer_substr": "/webui/"}, "backend": napcat.url(), "action": "proxy", "id": "proxy-webui-referer", "priority": 190},
        {"match": {"path_prefix": "/webui/"}, "set_headers": [{"value": "/webui", "name": "X-Forwarded-Prefix"}],
         "backend": napcat.url(), "action": "proxy", "id": "proxy-webui", "priority": 180},
        {"match": {"path_prefix": "/gemini/"}, "set_headers": [{"value": "/gemini", "name": "X-Forwarded-Prefix"}],
         "backend": gemini.url(), "action": "proxy", "id": "proxy-gemini", "priority": 180},
        {"match": {"path_equal": "/gemini"}, "redirect_to": "/gemini/", "action": "redirect", "id": "redirect-gemini-slash", "priority": 175}
      ]
    });
    let r = admin_post(&gw, "/admin/routes.json", original.clone(), &[]).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let table = admin_get(&gw, "/admin/routes.json").await.json();
    assert_eq!(table["rules"].as_array().unwrap().len(), 8);
    assert_eq!(
        table["rules"][5]["set_headers"],
        json!([{"name": "X-Forwarded-Prefix", "value": "/webui"}]),
        "written back in the original's shape"
    );
    assert!(table.get("admin_password").is_none());
    assert_eq!(
        admin_get(&gw, "/admin/routes.json").await.status,
        200,
        "`admin_password` in the file does not change the password"
    );

    assert_eq!(get(&gw.url("/")).await.json()["backend"], "astrbot");
    let r = get(&gw.url("/webui")).await;
    assert_eq!(
        (r.status, r.header("location")),
        (302, "/webui/"),
        "302, not the original's browser-cached 301"
    );
    let j = get(&gw.url("/webui/index.html")).await.json();
    assert_eq!(
        (
            j["backend"].as_str(),
            j["headers"]["x-forwarded-prefix"].as_str()
        ),
        (Some("napcat"), Some("/webui"))
    );
    let j = get(&gw.url("/gemini/v1beta/models")).await.json();
    assert_eq!(
        (j["backend"].as_str(), j["path"].as_str()),
        (Some("gemini"), Some("/gemini/v1beta/models"))
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/api/ws/ws", gw.addr))
        .await
        .unwrap();
    ws.send(Message::text("ping")).await.unwrap();
    let reply = tokio::time::timeout(DEADLINE, ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(reply.into_text().unwrap().as_str(), "napcat:ping");
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_drains_and_closes_tunnels() {
    let n = backend("napcat").await;
    let gw = start(Some(n.url()), json!([])).await;
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/ws", gw.addr))
        .await
        .unwrap();
    ws.send(Message::text("x")).await.unwrap();
    let _ = tokio::time::timeout(DEADLINE, ws.next()).await.unwrap();
    let addr = gw.addr;
    let started = Instant::now();
    gw.shutdown().await;
    assert!(
        started.elapsed() < Duration::from_secs(3) + Duration::from_millis(500),
        "{:?}",
        started.elapsed()
    );
    let end = tokio::time::timeout(DEADLINE, ws.next())
        .await
        .expect("tunnel closed at shutdown");
    assert!(
        matches!(end, None | Some(Err(_)) | Some(Ok(Message::Close(_)))),
        "{end:?}"
    );
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "no longer listening"
    );
}

/// Upgrading over a state file whose manifest fingerprint is of the older
/// form (a hash of the routes as written): `up` keeps the live table, says
/// so once with how to apply routes changed in the same deploy, and
/// rewrites the fingerprint in the new form.
#[test]
fn up_keeps_the_live_table_over_an_older_fingerprint_and_says_so() {
    use crate::harness::{free_port, http_request, poll, Stack};
    let t = Duration::from_secs(30);
    let port = free_port();
    let s = Stack::new(&format!(
        "gateway:\n  listen: 127.0.0.1:{port}\n  state_file: ./state/gateway.json\n  admin: {{ password: {PASSWORD} }}\n  routes:\n    - {{ id: manifest, prefix: /m/, backend: http://127.0.0.1:9 }}\n"
    ));
    s.write(
        "state/gateway.json",
        &json!({
            "version": 1,
            "table": {"default_backend": "", "rules": [{"id": "live", "match": {"path_prefix": "/live/"}}]},
            "manifest_routes": "3f1c9a7be0d24c15",
        })
        .to_string(),
    );
    let mut up = s.up();
    up.wait_for("is from an older stackctl, so the live route table is kept; if this deploy also changed `gateway.routes`, apply them with `stackctl routes set` or the admin page", t);
    let (code, _, body) = poll(t, "the admin API", || {
        http_request(
            "GET",
            &format!("http://127.0.0.1:{port}/admin/routes.json"),
            &[("X-Admin-Password", PASSWORD)],
            "",
        )
        .filter(|(c, _, _)| *c != 503)
    });
    assert_eq!(code, 200, "{body}");
    assert!(
        body.contains("\"live\"") && !body.contains("\"manifest\""),
        "{body}"
    );
    up.signal(libc::SIGTERM);
    assert_eq!(up.wait_exit(t).code(), Some(0), "{}", up.log());
    let state: Value =
        serde_json::from_str(&std::fs::read_to_string(s.path("state/gateway.json")).unwrap())
            .unwrap();
    let fp = state["manifest_routes"].as_str().unwrap_or_default();
    assert!(fp.starts_with("v2:"), "{state}");
}
