use super::*;
use bytes::Bytes;
use tokio::io::AsyncWriteExt;

#[tokio::test]
async fn bytes_read_before_the_hand_over_come_first() {
    use tokio::io::AsyncReadExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let client = tokio::spawn(async move {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b" world").await.unwrap();
    });
    let (io, _) = listener.accept().await.unwrap();
    let mut p = Prefixed {
        linger: None,
        ctx: None,
        prefix: Bytes::from_static(b"hello"),
        io,
        reads: None,
        sending: SendClock::new(Duration::from_secs(60), addr),
    };
    let mut got = String::new();
    p.read_to_string(&mut got).await.unwrap();
    assert_eq!(got, "hello world");
    client.await.unwrap();
}

/// The size of the futures `f` returns, read from its type: no gateway,
/// socket or runtime is needed to make one (the same figure as
/// `size_of_val` of one).
fn future_size<A, B, C, Fut>(_: impl Fn(A, B, C) -> Fut) -> usize {
    std::mem::size_of::<Fut>()
}

/// Every accepted connection's task is this future, idle kept-alive ones
/// included, so its size is paid per connection: 648 bytes in this
/// (debug) build on 2026-12-06, after the refused head's 4 KiB drain
/// buffer and hyper's part were boxed out of it (an idle connection then
/// cost about 0.9 KB in all; 4.9 KB before). A state kept across an
/// `await` in `serve` or `Front::run` adds to it: a buffer, or a large
/// future awaited in place, should be boxed (allocated only while it
/// runs), as `Front::one_request` is. The bound leaves room for a few
/// fields, not for a buffer.
#[test]
fn a_connections_task_stays_small() {
    let size = future_size(serve);
    assert!(
        size <= 768,
        "a connection's task is {size} bytes; see this test's comment"
    );
}
