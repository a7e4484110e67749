use super::*;
use bytes::BytesMut;
use std::io::Write;

/// A pool holding one idle connection to a plain socket, and that
/// socket's other end (the "backend").
async fn pooled(pool: &Pool) -> (SocketAddr, std::net::TcpStream) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let io = TcpStream::connect(addr).await.unwrap();
    let (peer, _) = l.accept().unwrap();
    let conn = Conn {
        io,
        buf: BytesMut::new(),
        timer: None,
        permit: None,
    };
    pool.put(addr, conn);
    (addr, peer)
}

/// A pool with at most one connection per backend, waiting `queue`.
fn one_per_backend(queue: Duration) -> Arc<Pool> {
    Arc::new(Pool::capped(Duration::from_secs(60), Cap { max: 1, queue }))
}

/// A connection to `addr` holding a permit, and the backend's end.
async fn permitted(pool: &Pool, l: &std::net::TcpListener) -> (Conn, std::net::TcpStream) {
    let addr = l.local_addr().unwrap();
    let permit = pool.permit(addr).await.unwrap();
    assert!(permit.is_some(), "a capped pool hands out permits");
    let io = TcpStream::connect(addr).await.unwrap();
    let (peer, _) = l.accept().unwrap();
    let conn = Conn {
        io,
        buf: BytesMut::new(),
        timer: None,
        permit,
    };
    (conn, peer)
}

#[tokio::test]
async fn at_the_cap_a_request_takes_a_connection_going_back_to_the_pool() {
    let pool = one_per_backend(Duration::from_secs(10));
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let (busy, _peer) = permitted(&pool, &l).await;
    let waiter = {
        let pool = pool.clone();
        tokio::spawn(async move { matches!(pool.checkout(addr).await, Ok(Checkout::Pooled(_))) })
    };
    let b = pool.limits.backend(addr).unwrap();
    while b.available() > 0 || !waiting(&b) {
        tokio::task::yield_now().await;
    }
    // Its exchange done, the connection goes back: the waiter has it,
    // rather than waiting for it to expire.
    pool.put(addr, busy);
    assert!(
        waiter.await.unwrap(),
        "the waiter reused the returned connection"
    );
    assert_eq!(b.available(), 1, "its permit came back when it was dropped");
}

/// Whether a request is waiting for `b`.
fn waiting(b: &fanout::Backend) -> bool {
    b.waiting_now() > 0
}

#[tokio::test]
async fn at_the_cap_an_upgrade_closes_an_idle_connection_to_make_room() {
    let pool = one_per_backend(Duration::from_secs(10));
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let (idle, mut peer) = permitted(&pool, &l).await;
    pool.put(addr, idle);
    let permit = tokio::time::timeout(Duration::from_secs(10), pool.permit(addr))
        .await
        .expect("no wait for the queue time")
        .unwrap();
    assert!(permit.is_some());
    assert_eq!(pool.idle_count(addr), 0, "the idle connection was closed");
    let mut rest = Vec::new();
    peer.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    std::io::Read::read_to_end(&mut peer, &mut rest).unwrap();
}

#[tokio::test]
async fn at_the_cap_past_the_queue_time_a_request_is_refused_and_holds_nothing() {
    let pool = one_per_backend(Duration::from_millis(50));
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let (busy, _peer) = permitted(&pool, &l).await;
    assert!(matches!(
        pool.checkout(addr).await,
        Err(ForwardError::Busy(1))
    ));
    assert!(matches!(
        pool.permit(addr).await,
        Err(ForwardError::Busy(1))
    ));
    let b = pool.limits.backend(addr).unwrap();
    assert_eq!((b.available(), b.waiting_now()), (0, 0));
    // A connection that ends in any way (here: dropped after an error)
    // gives its place back.
    drop(busy);
    assert!(matches!(
        pool.checkout(addr).await,
        Ok(Checkout::New(Some(_)))
    ));
}

#[tokio::test]
async fn a_byte_or_a_close_just_before_reuse_keeps_the_connection_out_of_use() {
    // Issue 11: no task switch happens between the backend's write and
    // the reuse, so only the check at reuse can see it.
    let pool = Pool::new(Duration::from_secs(60));
    let (addr, mut peer) = pooled(&pool).await;
    let again = pool.take(addr).expect("a quiet connection is reused");
    pool.put(addr, again);
    peer.write_all(b"H").unwrap();
    assert!(pool.take(addr).is_none(), "reused after a stray byte");

    let (addr, peer) = pooled(&pool).await;
    drop(peer);
    assert!(pool.take(addr).is_none(), "reused after the backend closed");
}

#[tokio::test]
async fn the_keeper_closes_an_idle_connection_on_which_anything_arrives() {
    let pool = Arc::new(Pool::new(Duration::from_secs(60)));
    pool.start_keeper();
    let (addr, mut peer) = pooled(&pool).await;
    let (quiet_addr, _quiet_peer) = pooled(&pool).await;
    // Let the keeper run once and take charge of both.
    tokio::task::yield_now().await;
    peer.write_all(b"HTTP/1.1 200 OK\r\n\r\n").unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while pool.idle_count(addr) > 0 {
        assert!(std::time::Instant::now() < deadline, "still pooled");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // The backend sees the close (a reset: the answer is left unread);
    // the quiet connection stays.
    peer.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut rest = Vec::new();
    if let Err(e) = std::io::Read::read_to_end(&mut peer, &mut rest) {
        assert_eq!(e.kind(), io::ErrorKind::ConnectionReset, "{e}");
    }
    assert_eq!(pool.idle_count(quiet_addr), 1);
}
