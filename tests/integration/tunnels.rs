//! A WebSocket tunnel whose backend stops reading while the client goes
//! on sending: the real binary, raw sockets on both sides. Every wait has
//! a deadline.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::gateway::DEADLINE;
use super::h2c::gateway_only;
use super::pool::{raw_backend, read_request};

/// A backend that accepts a WebSocket upgrade, then never reads again but
/// sends a few bytes every `every` (so the tunnel is never quiet) until
/// its connection is closed.
async fn deaf_backend(every: Duration) -> SocketAddr {
    raw_backend(move |mut s| async move {
        if read_request(&mut s, &mut Vec::new()).await.is_none() {
            return;
        }
        let switched = "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n\
                        Upgrade: websocket\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n";
        if s.write_all(switched.as_bytes()).await.is_err() {
            return;
        }
        while s.write_all(b"ping").await.is_ok() {
            tokio::time::sleep(every).await;
        }
    })
    .await
}

/// Issue 16 leftovers: a write to a tunnel's backend that cannot make
/// progress for `timeouts.send` closes the tunnel, as one to the client
/// does, and the log says why. Before, a backend that stopped reading but
/// went on sending held the tunnel (and the client's pushes) for good:
/// the tunnel was never quiet, and only writes to the client were timed.
#[test]
fn a_tunnel_whose_backend_stops_reading_is_closed_after_timeouts_send() {
    let send = Duration::from_secs(1);
    let early = Duration::from_millis(150);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let backend = rt.block_on(deaf_backend(send / 4));
    let mut gateway = gateway_only(backend, "{ send: 1s }");
    let addr = gateway.addr;
    let took = rt.block_on(async {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(
            b"GET /ws HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
              Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
        )
        .await
        .unwrap();
        let (mut from_gw, mut to_gw) = s.into_split();
        // Whatever the backend sends is read: the client is not the one
        // that stalls.
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            let mut chunk = [0u8; 4096];
            while let Ok(n @ 1..) = from_gw.read(&mut chunk).await {
                got.extend_from_slice(&chunk[..n]);
            }
            got
        });
        // Push until the gateway closes the tunnel: the buffers on the way
        // fill within milliseconds, then the gateway's writes wait.
        let started = Instant::now();
        let block = vec![b'x'; 64 * 1024];
        let pushed = async { while to_gw.write_all(&block).await.is_ok() {} };
        if tokio::time::timeout(DEADLINE, pushed).await.is_err() {
            return None;
        }
        let took = started.elapsed();
        let got = tokio::time::timeout(DEADLINE, reader)
            .await
            .expect("the client connection closed with the tunnel")
            .unwrap();
        assert!(
            got.starts_with(b"HTTP/1.1 101 ") && got.ends_with(b"ping"),
            "{:?}",
            String::from_utf8_lossy(&got)
        );
        Some(took)
    });
    let Some(took) = took else {
        gateway
            .up
            .fail("the tunnel stayed open with its backend not reading");
    };
    assert!(took >= send - early, "closed after {took:?}");
    gateway.up.wait_for(
        "the backend took nothing of what the client sent through a WebSocket tunnel for timeouts.send",
        DEADLINE,
    );
}
