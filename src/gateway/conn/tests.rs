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
