//! Issue 11, "Prove it": the same raw requests (request smuggling variants)
//! and the same hostile backend answers, sent through stackctl's gateway
//! and, where nginx is installed, through nginx (`proxy_pass` with upstream
//! keep-alive) for comparison.
//!
//! Each side has its own recording backend: a raw HTTP/1.1 server that
//! parses what reaches it strictly (as a typical backend would) and records
//! every request it took from the wire. Per case the test asserts what the
//! backend took and what the client got, and two rules that must hold
//! whatever the case: no request named `/smuggled` ever reaches a backend
//! (nor its answer a client), and a fresh client right after the case gets
//! its own answer (nothing left over from the case on a pooled backend
//! connection). The table of both proxies' outcomes is printed.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use serde_json::json;
use stackctl::gateway::h1::{Chunked, Decoded};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::gateway::{config, restored, start_with, Gw};

/// The request every smuggling case tries to slip past the proxy.
const SMUGGLED: &str = "GET /smuggled HTTP/1.1\r\nHost: t\r\n\r\n";
/// Ends every case's bytes: a last request that closes the connection,
/// so the client's read ends at EOF instead of at a timeout.
const END: &str = "GET /end HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";
/// The backend expectation "nothing taken whole": the body is streamed,
/// so the backend may have had the head of a request whose body then
/// turned out malformed (it sees the abort), or nothing yet.
const ABORTED: &str = "!";
/// How long one case's client waits for the proxy to close.
const CASE_DEADLINE: Duration = Duration::from_secs(4);

// ---- the recording backend ---------------------------------------------------

/// What the backend took from the wire, in order.
#[derive(Default)]
struct Record {
    /// `METHOD /path (body bytes)` per request; `!why` where it gave up.
    seen: Vec<String>,
}

/// The raw answer a `/hostile/NAME` request gets, and whether the backend
/// closes the connection after it.
fn hostile(name: &str) -> Option<(&'static str, bool)> {
    let poison = "HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\npoisoned!";
    Some(match name {
        "cl-te" => (
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\npoisoned!",
            false,
        ),
        "bad-chunk" => ("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\nzz\r\npoisoned!", false),
        "chunk-overflow" => (
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n10000000000000009\r\npoisoned!\r\n0\r\n\r\n",
            false,
        ),
        "interim" => (
            "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
            false,
        ),
        "head-body" => (poison, false),
        "204-body" => ("HTTP/1.1 204 No Content\r\nContent-Length: 9\r\n\r\npoisoned!", false),
        "304-body" => ("HTTP/1.1 304 Not Modified\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\npoisoned!", false),
        "dup-cl" => ("HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 11\r\n\r\nokpoisoned!", false),
        "early-close" => ("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort", true),
        "no-answer" => ("", true),
        _ => return None,
    })
}

/// Start a recording backend; it serves until the test ends.
async fn recording_backend() -> (SocketAddr, Arc<Mutex<Record>>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let record = Arc::new(Mutex::new(Record::default()));
    let r = record.clone();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            tokio::spawn(serve_recording(s, r.clone()));
        }
    });
    (addr, record)
}

async fn serve_recording(mut s: TcpStream, record: Arc<Mutex<Record>>) {
    let note = |what: String| record.lock().unwrap().seen.push(what);
    let mut buf = BytesMut::new();
    loop {
        // The head.
        let (len, method, path, length, chunked, upgrade) = loop {
            let mut slots = [httparse::EMPTY_HEADER; 64];
            let mut req = httparse::Request::new(&mut slots);
            match req.parse(&buf) {
                Ok(httparse::Status::Complete(len)) => {
                    let mut lengths = Vec::new();
                    let mut codings = Vec::new();
                    let mut upgrade = false;
                    for h in req.headers.iter() {
                        let v = String::from_utf8_lossy(h.value).to_ascii_lowercase();
                        match h.name.to_ascii_lowercase().as_str() {
                            "content-length" => lengths.push(v),
                            "transfer-encoding" => codings.push(v),
                            "upgrade" => upgrade = true,
                            _ => {}
                        }
                    }
                    let chunked = codings
                        .last()
                        .is_some_and(|c| c.trim().ends_with("chunked"));
                    if !codings.is_empty() && (!chunked || !lengths.is_empty()) {
                        return note(format!("!framing {codings:?} {lengths:?}"));
                    }
                    lengths.dedup();
                    let length = match lengths.as_slice() {
                        [] => 0,
                        [one] => match one.trim().parse::<usize>() {
                            Ok(n) => n,
                            Err(_) => return note(format!("!length {one}")),
                        },
                        _ => return note(format!("!lengths {lengths:?}")),
                    };
                    break (
                        len,
                        req.method.unwrap_or("").to_string(),
                        req.path.unwrap_or("").to_string(),
                        length,
                        chunked,
                        upgrade,
                    );
                }
                Ok(httparse::Status::Partial) => {}
                Err(e) => return note(format!("!head {e}")),
            }
            if !read_more(&mut s, &mut buf).await {
                if !buf.is_empty() {
                    note(format!("!partial {:?}", String::from_utf8_lossy(&buf)));
                }
                return;
            }
        };
        let _ = buf.split_to(len);
        // The body.
        let mut body = 0;
        if chunked {
            let mut d = Chunked::Size;
            loop {
                match d.decode(&mut buf) {
                    Ok(Decoded::Data(b)) => body += b.len(),
                    Ok(Decoded::Done) => break,
                    Ok(Decoded::NeedMore) => {
                        if !read_more(&mut s, &mut buf).await {
                            return note(format!("!cut chunked {method} {path}"));
                        }
                    }
                    Err(e) => return note(format!("!chunks {e}")),
                }
            }
        } else {
            while buf.len() < length {
                if !read_more(&mut s, &mut buf).await {
                    return note(format!("!cut body {method} {path}"));
                }
            }
            let _ = buf.split_to(length);
            body = length;
        }
        note(format!("{method} {path} ({body})"));
        // The answer.
        if let Some((raw, close)) = path.strip_prefix("/hostile/").and_then(hostile) {
            let _ = s.write_all(raw.as_bytes()).await;
            if close {
                return;
            }
        } else if upgrade {
            let _ = s
                .write_all(b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
                .await;
            // Tunnelled bytes are the client's to send: recorded, not
            // parsed, up to the case's last request (then the tunnel closes).
            let mut tunnel = buf.to_vec();
            let mut chunk = [0u8; 4096];
            while !tunnel.ends_with(END.as_bytes()) {
                match s.read(&mut chunk).await {
                    Ok(n @ 1..) => tunnel.extend_from_slice(&chunk[..n]),
                    _ => break,
                }
            }
            return note(format!("tunnel {:?}", String::from_utf8_lossy(&tunnel)));
        } else {
            let text = format!("seen {method} {path}");
            let answer = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{text}",
                text.len()
            );
            if s.write_all(answer.as_bytes()).await.is_err() {
                return;
            }
        }
    }
}

async fn read_more(s: &mut TcpStream, buf: &mut BytesMut) -> bool {
    buf.reserve(4096);
    matches!(s.read_buf(buf).await, Ok(1..))
}

// ---- the client -------------------------------------------------------------

/// Send `raw` on a new connection to `proxy` and describe everything that
/// came back until the proxy closed (or the case deadline): one entry per
/// response (`status:body`, bodies shortened), then how it ended.
async fn exchange(proxy: SocketAddr, raw: &[u8], head_request: bool) -> Vec<String> {
    let mut s = TcpStream::connect(proxy).await.unwrap();
    // The proxy may answer and close before taking everything.
    let _ = s.write_all(raw).await;
    let mut got = Vec::new();
    let deadline = Instant::now() + CASE_DEADLINE;
    let mut chunk = [0u8; 16384];
    let end = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, s.read(&mut chunk)).await {
            Err(_) => break "open",
            Ok(Ok(0)) => break "EOF",
            Ok(Err(_)) => break "reset",
            Ok(Ok(n)) => got.extend_from_slice(&chunk[..n]),
        }
    };
    let mut out = responses(&got, head_request);
    out.push(end.to_string());
    out
}

/// The responses in `wire`, as the client would parse them.
fn responses(mut wire: &[u8], mut head_request: bool) -> Vec<String> {
    let mut out = Vec::new();
    while !wire.is_empty() {
        // Only the first request of a case may be a HEAD.
        let head_request = std::mem::take(&mut head_request);
        let mut slots = [httparse::EMPTY_HEADER; 64];
        let mut r = httparse::Response::new(&mut slots);
        let Ok(httparse::Status::Complete(len)) = r.parse(wire) else {
            out.push(format!(
                "garbage {:?}",
                String::from_utf8_lossy(&wire[..wire.len().min(40)])
            ));
            break;
        };
        let status = r.code.unwrap_or(0);
        let header = |name: &str| {
            r.headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case(name))
                .map(|h| String::from_utf8_lossy(h.value).to_ascii_lowercase())
        };
        let rest = &wire[len..];
        let (body, used) =
            if head_request || (100..200).contains(&status) || status == 204 || status == 304 {
                (Vec::new(), 0)
            } else if header("transfer-encoding").is_some_and(|te| te.contains("chunked")) {
                let mut d = Chunked::Size;
                let mut buf = BytesMut::from(rest);
                let mut body = Vec::new();
                let complete = loop {
                    match d.decode(&mut buf) {
                        Ok(Decoded::Data(b)) => body.extend_from_slice(&b),
                        Ok(Decoded::Done) => break true,
                        _ => break false,
                    }
                };
                if !complete {
                    body.extend_from_slice(b"<cut>");
                }
                (body, rest.len() - buf.len())
            } else if let Some(n) =
                header("content-length").and_then(|n| n.trim().parse::<usize>().ok())
            {
                if rest.len() < n {
                    let mut b = rest.to_vec();
                    b.extend_from_slice(b"<cut>");
                    (b, rest.len())
                } else {
                    (rest[..n].to_vec(), n)
                }
            } else {
                (rest.to_vec(), rest.len())
            };
        let body = String::from_utf8_lossy(&body);
        // Error pages differ between proxies; what matters is their status.
        let body = if body.starts_with("seen ") || body.len() <= 12 {
            body.into_owned()
        } else {
            String::new()
        };
        out.push(if body.is_empty() {
            status.to_string()
        } else {
            format!("{status}:{body}")
        });
        wire = &rest[used..];
    }
    out
}

// ---- the proxies ---------------------------------------------------------------

/// A proxy under test with its own recording backend.
struct Proxy {
    name: &'static str,
    addr: SocketAddr,
    record: Arc<Mutex<Record>>,
    /// stackctl's gateway, shut down at the end.
    gw: Option<Gw>,
    /// nginx, killed when dropped.
    _nginx: Option<NginxProcess>,
}

async fn stackctl_proxy() -> Proxy {
    let (backend, record) = recording_backend().await;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), Some(format!("http://{backend}")), json!([]));
    cfg.timeouts.header_read = Duration::from_secs(2);
    cfg.timeouts.response = Duration::from_secs(2);
    let gw = start_with(cfg, dir, restored(), |g| g).await;
    Proxy {
        name: "stackctl",
        addr: gw.addr,
        record,
        gw: Some(gw),
        _nginx: None,
    }
}

/// nginx, run from a config in a temp dir; killed on drop.
struct NginxProcess {
    child: Child,
    _dir: tempfile::TempDir,
}

impl Drop for NginxProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn nginx_config(dir: &Path, listen: u16, backend: SocketAddr) -> String {
    let d = dir.display();
    format!(
        "worker_processes 1;\nerror_log {d}/error.log;\npid {d}/nginx.pid;\n\
         events {{ worker_connections 256; }}\n\
         http {{\n  access_log off;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n\
           fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
           client_header_timeout 2s;\n  client_body_timeout 2s;\n\
           map $http_upgrade $connection_upgrade {{ default upgrade; '' ''; }}\n\
           upstream backend {{ server {backend}; keepalive 16; }}\n\
           server {{\n    listen 127.0.0.1:{listen};\n\
             location / {{\n      proxy_pass http://backend;\n      proxy_http_version 1.1;\n\
               proxy_set_header Upgrade $http_upgrade;\n\
               proxy_set_header Connection $connection_upgrade;\n      proxy_read_timeout 2s;\n    }}\n  }}\n}}\n"
    )
}

async fn nginx_proxy() -> Option<Proxy> {
    // Debian puts nginx in /usr/sbin, which a user's PATH may lack.
    let nginx = ["nginx", "/usr/sbin/nginx"].into_iter().find(|bin| {
        Command::new(bin)
            .arg("-v")
            .stderr(Stdio::null())
            .status()
            .is_ok()
    });
    let Some(nginx) = nginx else {
        super::harness::skip("nginx is not installed (apt-get install nginx): no comparison");
        return None;
    };
    let (backend, record) = recording_backend().await;
    let dir = tempfile::tempdir().unwrap();
    let port = super::harness::free_port();
    let conf = dir.path().join("nginx.conf");
    std::fs::write(&conf, nginx_config(dir.path(), port, backend)).unwrap();
    let child = Command::new(nginx)
        .arg("-p")
        .arg(dir.path())
        .arg("-c")
        .arg(&conf)
        // One process: the child itself serves. With a master, the kill on
        // drop (SIGKILL) left its worker running, one per test run.
        .args(["-g", "daemon off; master_process off;"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let nginx = NginxProcess { child, _dir: dir };
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(addr).await.is_err() {
        if Instant::now() > deadline {
            let log =
                std::fs::read_to_string(nginx._dir.path().join("error.log")).unwrap_or_default();
            super::harness::skip(&format!("nginx did not start: no comparison\n{log}"));
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Some(Proxy {
        name: "nginx",
        addr,
        record,
        gw: None,
        _nginx: Some(nginx),
    })
}

// ---- the cases ---------------------------------------------------------------

/// One case: its name, the client's bytes (before [`END`]), whether the
/// first request is a HEAD, and what stackctl must do: the client's
/// responses and the backend's requests, each joined with ` | `.
struct Case {
    name: &'static str,
    raw: String,
    head: bool,
    client: &'static str,
    backend: &'static str,
}

fn post(headers: &str, body: &str) -> String {
    format!("POST /a HTTP/1.1\r\nHost: t\r\n{headers}\r\n{body}")
}

fn request_cases() -> Vec<Case> {
    let s = SMUGGLED;
    let case = |name, raw: String, client, backend| Case {
        name,
        raw,
        head: false,
        client,
        backend,
    };
    vec![
        case(
            "CL+TE",
            post("Content-Length: 4\r\nTransfer-Encoding: chunked\r\n", &format!("0\r\n\r\n{s}")),
            // The coding wins, the length goes, and the connection closes
            // after the answer (RFC 9112 §6.1); nginx: 400.
            "200:seen POST /a | EOF",
            "POST /a (0)",
        ),
        case(
            "TE+CL",
            post("Transfer-Encoding: chunked\r\nContent-Length: 40\r\n", &format!("0\r\n\r\n{s}")),
            "200:seen POST /a | EOF",
            "POST /a (0)",
        ),
        case(
            "CL twice, same",
            // Equal lengths are one length (RFC 9110 §8.6); nginx: 400.
            post("Content-Length: 5\r\nContent-Length: 5\r\n", "hello"),
            "200:seen POST /a | 200:seen GET /end | EOF",
            "POST /a (5) | GET /end (0)",
        ),
        case(
            "CL twice, differing",
            post("Content-Length: 5\r\nContent-Length: 41\r\n", &format!("hello{s}")),
            "400 | EOF",
            "",
        ),
        case(
            "CL list",
            post("Content-Length: 5, 41\r\n", &format!("hello{s}")),
            "400 | EOF",
            "",
        ),
        case(
            "TE xchunked",
            post("Transfer-Encoding: xchunked\r\n", &format!("0\r\n\r\n{s}")),
            "400 | EOF",
            "",
        ),
        case(
            "TE xchunked + CL",
            post("Transfer-Encoding: xchunked\r\nContent-Length: 5\r\n", &format!("0\r\n\r\n{s}")),
            "400 | EOF",
            "",
        ),
        case(
            "TE chunked, identity",
            post("Transfer-Encoding: chunked, identity\r\n", &format!("0\r\n\r\n{s}")),
            "400 | EOF",
            "",
        ),
        case(
            "TE identity, chunked",
            post("Transfer-Encoding: identity, chunked\r\n", &format!("0\r\n\r\n{s}")),
            "400 | EOF",
            "",
        ),
        case(
            "TE with space before colon",
            post("Transfer-Encoding : chunked\r\n", &format!("0\r\n\r\n{s}")),
            "400 | EOF",
            "",
        ),
        case(
            "TE obs-fold",
            post("Transfer-Encoding:\r\n chunked\r\n", &format!("0\r\n\r\n{s}")),
            "400 | EOF",
            "",
        ),
        case(
            "obs-fold in another header",
            "GET /a HTTP/1.1\r\nHost: t\r\nX-A: 1\r\n folded\r\n\r\n".into(),
            "400 | EOF",
            "",
        ),
        case(
            "bare LF line ends",
            "GET /a HTTP/1.1\nHost: t\n\n".into(),
            "200:seen GET /a | 200:seen GET /end | EOF",
            "GET /a (0) | GET /end (0)",
        ),
        case(
            "bare LF in chunked body",
            post("Transfer-Encoding: chunked\r\n", &format!("5\nhello\n0\n\n{s}")),
            "400 | EOF",
            ABORTED,
        ),
        case(
            "NUL in a header value",
            "GET /a HTTP/1.1\r\nHost: t\r\nX-A: a\0b\r\n\r\n".into(),
            "400 | EOF",
            "",
        ),
        case(
            "chunk size overflows 64 bits",
            post("Transfer-Encoding: chunked\r\n", &format!("10000000000000005\r\nhello\r\n0\r\n\r\n{s}")),
            "400 | EOF",
            ABORTED,
        ),
        case(
            "negative chunk size",
            post("Transfer-Encoding: chunked\r\n", &format!("-5\r\nhello\r\n0\r\n\r\n{s}")),
            "400 | EOF",
            ABORTED,
        ),
        case(
            "missing chunk size",
            post("Transfer-Encoding: chunked\r\n", &format!("\r\nhello\r\n0\r\n\r\n{s}")),
            "400 | EOF",
            ABORTED,
        ),
        case(
            "pipelined bodies",
            format!(
                "{}{}{}",
                post("Content-Length: 5\r\n", "hello"),
                post("Transfer-Encoding: chunked\r\n", "3\r\nabc\r\n0\r\n\r\n"),
                "GET /b HTTP/1.1\r\nHost: t\r\n\r\n"
            ),
            "200:seen POST /a | 200:seen POST /a | 200:seen GET /b | 200:seen GET /end | EOF",
            "POST /a (5) | POST /a (3) | GET /b (0) | GET /end (0)",
        ),
        case(
            "pipelined upgrade",
            format!(
                "GET /ws HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n{s}"
            ),
            "101 | EOF",
            "GET /ws (0) | tunnel",
        ),
        case(
            "upgrade with a body",
            post("Connection: Upgrade\r\nUpgrade: websocket\r\nContent-Length: 5\r\n", &format!("hello{s}")),
            "101 | EOF",
            "POST /a (5) | tunnel",
        ),
    ]
}

fn hostile_cases() -> Vec<Case> {
    let case = |name: &'static str, method: &str, client, backend| Case {
        name,
        raw: format!("{method} /hostile/{name} HTTP/1.1\r\nHost: t\r\n\r\n"),
        head: method == "HEAD",
        client,
        backend,
    };
    let then_end = |name: &str| -> &'static str {
        Box::leak(format!("{name} | GET /end (0)").into_boxed_str())
    };
    vec![
        case(
            "cl-te",
            "GET",
            "200:ok | 200:seen GET /end | EOF",
            then_end("GET /hostile/cl-te (0)"),
        ),
        // A body that breaks its framing half-way: the client's connection
        // is closed (nginx the same) so that it cannot take a cut body
        // for a whole one.
        case("bad-chunk", "GET", "EOF", "GET /hostile/bad-chunk (0)"),
        case(
            "chunk-overflow",
            "GET",
            "EOF",
            "GET /hostile/chunk-overflow (0)",
        ),
        // Interim answers are skipped (nginx passes the 100 on and stops).
        case(
            "interim",
            "GET",
            "200:ok | 200:seen GET /end | EOF",
            then_end("GET /hostile/interim (0)"),
        ),
        case(
            "head-body",
            "HEAD",
            "200 | 200:seen GET /end | EOF",
            then_end("HEAD /hostile/head-body (0)"),
        ),
        case(
            "204-body",
            "GET",
            "204 | 200:seen GET /end | EOF",
            then_end("GET /hostile/204-body (0)"),
        ),
        case(
            "304-body",
            "GET",
            "304 | 200:seen GET /end | EOF",
            then_end("GET /hostile/304-body (0)"),
        ),
        // Differing lengths: 502 (nginx passes the body on by one of them).
        case(
            "dup-cl",
            "GET",
            "502 | 200:seen GET /end | EOF",
            then_end("GET /hostile/dup-cl (0)"),
        ),
        // Cut short: stackctl closes before the head goes out (nginx
        // sends the head and the part, then closes).
        case("early-close", "GET", "EOF", "GET /hostile/early-close (0)"),
        // A pooled connection closed under an idempotent request: sent
        // again once on a new one (nginx the same), then 502.
        case(
            "no-answer",
            "GET",
            "502 | 200:seen GET /end | EOF",
            then_end("GET /hostile/no-answer (0) | GET /hostile/no-answer (0)"),
        ),
    ]
}

/// Whether the backend's answers reached the client one for one: every
/// request the backend took (other than the hostile ones, whose answers
/// carry no `seen`) was answered to this client, in order, and every
/// `seen` answer the client got is for a request the backend took. A
/// request smuggled past the proxy breaks this (the backend answers a
/// request the proxy did not see as one), and so does an answer on the
/// wrong connection. Tunnelled bytes are the upgraded protocol's.
fn aligned(client: &[String], backend: &[String]) -> bool {
    let answered: Vec<&str> = client
        .iter()
        .filter_map(|c| match c.as_str() {
            "101" => Some("101"),
            c => c.strip_prefix("200:seen "),
        })
        .collect();
    let mut taken: Vec<&str> = Vec::new();
    for b in backend {
        if b.starts_with("tunnel") {
            // The request before the tunnel was answered with the 101.
            if let Some(last) = taken.last_mut() {
                *last = "101";
            }
        } else if !b.starts_with('!') && !b.contains("/hostile/") {
            taken.push(b.rsplit_once(" (").map_or(b.as_str(), |(r, _)| r));
        }
    }
    answered == taken
}

/// What one proxy did with one case.
struct Outcome {
    client: String,
    backend: String,
    /// Backend answers and client requests matched one for one.
    aligned: bool,
    /// A fresh client right after the case got its own answer.
    next_own: bool,
}

impl Outcome {
    /// Whether one of the rules that hold for every case was broken.
    fn broken(&self) -> bool {
        !self.aligned || !self.next_own || self.client.contains("poisoned")
    }
}

/// Run `case` through `proxy`.
async fn run(proxy: &Proxy, case: &Case, index: usize) -> Outcome {
    proxy.record.lock().unwrap().seen.clear();
    let raw = format!("{}{END}", case.raw);
    let client = exchange(proxy.addr, raw.as_bytes(), case.head).await;
    // The backend has taken what it will once the client's exchange is
    // over; what it records later belongs to the check below.
    let backend = proxy.record.lock().unwrap().seen.clone();
    let check = format!("/check/{index}");
    let got = exchange(
        proxy.addr,
        format!("GET {check} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").as_bytes(),
        false,
    )
    .await;
    let next_own = got.first().map(String::as_str) == Some(&format!("200:seen GET {check}"));
    Outcome {
        aligned: aligned(&client, &backend),
        client: client.join(" | "),
        backend: backend.join(" | "),
        next_own,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smuggling_and_hostile_answers_never_cross_requests_or_connections() {
    let mut proxies = vec![stackctl_proxy().await];
    proxies.extend(nginx_proxy().await);
    let cases: Vec<Case> = request_cases().into_iter().chain(hostile_cases()).collect();
    let mut table = BTreeMap::new();
    let mut failures = Vec::new();
    for (i, case) in cases.iter().enumerate() {
        for proxy in &proxies {
            let o = run(proxy, case, i).await;
            let backend_short = o
                .backend
                .split(" | ")
                .map(|b| if b.starts_with("tunnel") { "tunnel" } else { b })
                .collect::<Vec<_>>()
                .join(" | ");
            if proxy.name == "stackctl" {
                if o.broken() {
                    failures.push(format!(
                        "stackctl: {}: answers aligned={} next client got its own answer={}\n  client: {}\n  backend: {}",
                        case.name, o.aligned, o.next_own, o.client, o.backend
                    ));
                }
                let backend_ok = if case.backend == ABORTED {
                    o.backend
                        .split(" | ")
                        .all(|b| b.is_empty() || b.starts_with('!'))
                } else {
                    backend_short == case.backend
                };
                if o.client != case.client || !backend_ok {
                    failures.push(format!(
                        "stackctl: {}:\n  client:  {}\n  want:    {}\n  backend: {backend_short}\n  want:    {}",
                        case.name, o.client, case.client, case.backend
                    ));
                }
            }
            let mark = if o.broken() { "✗ " } else { "" };
            table.insert(
                (i, proxy.name),
                format!("{mark}{}  ⇢ backend: {backend_short}", o.client),
            );
        }
    }
    let mut out = String::from(
        "differential: what the client got ⇢ what the backend took (✗: a request or an answer crossed)\n",
    );
    for (i, case) in cases.iter().enumerate() {
        out.push_str(&format!("{}\n", case.name));
        for proxy in &proxies {
            out.push_str(&format!("  {:<9}{}\n", proxy.name, table[&(i, proxy.name)]));
        }
    }
    // The comparison is the point of running nginx: shown even when the
    // test passes.
    if proxies.len() > 1 {
        super::harness::loud(&out);
    } else {
        eprintln!("{out}");
    }
    for gw in proxies.into_iter().filter_map(|p| p.gw) {
        gw.shutdown().await;
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
