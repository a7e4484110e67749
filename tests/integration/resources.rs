//! What client connections cost the gateway (issue 11): the real binary
//! under a low `RLIMIT_NOFILE` (set with `prlimit`), flooded with
//! connections; and the memory idle kept-alive connections hold.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;

use super::harness::{free_port, http_get, Running, Stack};
use super::pool::{raw_backend, read_request, whole_answer};

const WAIT: Duration = Duration::from_secs(30);
/// What the log says when `accept` fails for want of descriptors, before
/// and after the fix alike: the error's text.
const EMFILE: &str = "Too many open files";

/// A stack with only a gateway, forwarding to `backend`.
fn gateway_stack(gport: u16, backend: std::net::SocketAddr, services: &str) -> Stack {
    Stack::new(&format!(
        "version: 1\n\
         name: fds\n\
         {services}\
         gateway:\n  \
           listen: 127.0.0.1:{gport}\n  \
           default_backend: http://{backend}\n  \
           timeouts: {{ pool_idle: 60s }}\n  \
           admin: {{ password: fds-test-password-1 }}\n"
    ))
}

/// A backend answering `ok` to every request, kept alive; and the runtime
/// it runs on (dropping it stops the backend).
fn ok_backend() -> (tokio::runtime::Runtime, std::net::SocketAddr) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let addr = rt.block_on(raw_backend(|mut s| async move {
        let mut buf = Vec::new();
        while read_request(&mut s, &mut buf).await.is_some() {
            let ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
            if s.write_all(ok).await.is_err() {
                return;
            }
        }
    }));
    (rt, addr)
}

/// One GET on a kept-alive connection; the status and body.
fn get_on(s: &mut TcpStream) -> (u16, String) {
    s.write_all(b"GET /x HTTP/1.1\r\nHost: fds.test\r\n\r\n")
        .unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some((answer, _)) = whole_answer(&buf) {
            return (answer.status, answer.body);
        }
        let n = s.read(&mut chunk).expect("an answer in time");
        assert!(n > 0, "closed: {:?}", String::from_utf8_lossy(&buf));
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn count(up: &Running, text: &str) -> usize {
    up.lines().iter().filter(|l| l.text.contains(text)).count()
}

#[test]
fn out_of_descriptors_the_gateway_pauses_accepting_logs_once_and_serves_open_connections() {
    let (_rt, backend) = ok_backend();
    let gport = free_port();
    let stack = gateway_stack(gport, backend, "");
    let mut up = stack.spawn(&["up"], Some(&["prlimit", "--nofile=64:64", "--"]));
    up.wait_for("gateway: listening", WAIT);

    // A client whose connection (and pooled backend connection) is open
    // before the descriptors run out.
    let mut first = TcpStream::connect(("127.0.0.1", gport)).unwrap();
    first.set_read_timeout(Some(WAIT)).unwrap();
    assert_eq!(get_on(&mut first), (200, "ok".into()));

    // More connections than the gateway has descriptors for: the rest wait
    // in the listen queue.
    let flood: Vec<TcpStream> = (0..100)
        .map(|_| TcpStream::connect(("127.0.0.1", gport)).unwrap())
        .collect();
    up.wait_for(EMFILE, WAIT);

    // Over a window of 1.5 s at the limit (a measurement, not a wait for
    // something to happen): the open connection is served, and the log
    // has one line, not one per retry.
    let window = Instant::now() + Duration::from_millis(1500);
    while Instant::now() < window {
        assert_eq!(get_on(&mut first), (200, "ok".into()));
        std::thread::sleep(Duration::from_millis(100));
    }
    let lines = count(&up, EMFILE);
    assert!(
        lines <= 2,
        "{lines} log lines about the limit in 1.5 s:\n{}",
        up.log()
    );

    // Descriptors free again: new clients are served.
    drop(flood);
    let url = format!("http://127.0.0.1:{gport}/after");
    let got = http_get(&url).map(|(status, _, body)| (status, body));
    assert_eq!(got, Some((200, "ok".into())), "{}", up.log());
    up.wait_for("gateway: accepting connections again", WAIT);
}

#[test]
fn the_open_file_limit_is_raised_for_stackctl_and_kept_for_services() {
    let (_rt, backend) = ok_backend();
    let stack = gateway_stack(
        free_port(),
        backend,
        "services:\n  sleeper:\n    command: sleep 300\n",
    );
    let mut up = stack.spawn(&["up"], Some(&["prlimit", "--nofile=256:1024", "--"]));
    up.wait_for("gateway: listening", WAIT);
    let service = super::harness::poll(WAIT, "the service to start", || {
        up.marked_pids().into_iter().next()
    });
    let soft = |pid: i32| -> String {
        let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
        let line = limits
            .lines()
            .find(|l| l.starts_with("Max open files"))
            .unwrap()
            .to_string();
        line.split_whitespace().nth(3).unwrap().to_string()
    };
    assert_eq!(soft(up.pid()), "1024", "stackctl's soft limit");
    assert_eq!(soft(service), "256", "the service's soft limit");
}

/// Resident memory of `pid` in KiB.
fn rss_kib(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[test]
fn an_idle_kept_alive_connection_holds_no_buffers() {
    // 11.8 KiB each in this debug build before the fix (buffers kept, the
    // whole forwarding state in every connection's task), 1.3 KiB after.
    // bench/gateway.sh measures the release binary against the issue's
    // 4 KiB.
    const CONNS: usize = 800;
    const MAX_BYTES: u64 = 6 * 1024;
    // This test process holds them all too.
    stackctl::supervisor::nofile::raise();
    let (_rt, backend) = ok_backend();
    let gport = free_port();
    let stack = gateway_stack(gport, backend, "");
    let mut up = stack.spawn(&["up"], None);
    up.wait_for("gateway: listening", WAIT);
    let connect = || {
        let mut s = TcpStream::connect(("127.0.0.1", gport)).unwrap();
        s.set_read_timeout(Some(WAIT)).unwrap();
        assert_eq!(get_on(&mut s), (200, "ok".into()));
        s
    };
    // Warm up: the runtime's threads, the pool, the allocator's arenas.
    let warm: Vec<TcpStream> = (0..50).map(|_| connect()).collect();
    drop(warm);
    let before = rss_kib(up.pid());
    let idle: Vec<TcpStream> = (0..CONNS).map(|_| connect()).collect();
    let after = rss_kib(up.pid());
    let per_conn = after.saturating_sub(before) * 1024 / CONNS as u64;
    assert!(
        per_conn <= MAX_BYTES,
        "{per_conn} bytes of RSS per idle connection ({before} KiB before, {after} KiB after {CONNS})"
    );
    drop(idle);
}
