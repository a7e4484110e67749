//! The public port while data is being restored, before the gateway proper
//! exists.
//!
//! The gateway's state file (routes, password hash) is itself restored, so
//! the real [`Gateway`](super::Gateway) can only be built afterwards. Until
//! then this minimal server answers every request with the same 503
//! "restoring" page the gateway uses (and `/admin/healthz` with 503), so a
//! Space never looks dead during a long restore. Each answer closes its
//! connection, so clients reconnect to the real gateway after the handover.

use std::convert::Infallible;
use std::sync::Arc;

use hyper::header::{HeaderValue, CONNECTION};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::gateway::error::HttpError;
use crate::shutdown::CancellationToken;
use crate::status::StatusBoard;

/// Answer "restoring" on `listener` until `handover`; then give the
/// listener back for the real gateway.
pub async fn serve(
    listener: TcpListener,
    status: StatusBoard,
    handover: CancellationToken,
) -> TcpListener {
    let status = Arc::new(status);
    loop {
        let stream = tokio::select! {
            () = handover.cancelled() => break,
            r = listener.accept() => match r {
                Ok((s, _)) => s,
                Err(_) => {
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let status = status.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                let progress = status.snapshot().restore_line();
                let mut resp = HttpError::Restoring(progress).response(req.headers());
                resp.headers_mut()
                    .insert(CONNECTION, HeaderValue::from_static("close"));
                async move { Ok::<_, Infallible>(resp) }
            });
            let _ = http1::Builder::new()
                .keep_alive(false)
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
    listener
}
