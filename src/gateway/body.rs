//! The one body type every gateway response uses, so a proxied body
//! (streamed frame by frame, never collected) and a small generated one
//! share a type.
//!
//! An enum rather than one boxed trait object: the proxied body, which
//! every forwarded request has, then needs no allocation of its own and
//! no dynamic call per frame; everything else is boxed as before.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::{combinators::UnsyncBoxBody, BodyExt, Empty, Full};
use hyper::body::{Frame, Incoming, SizeHint};

pub use super::upstream::BoxError;
use super::upstream::UpstreamBody;

/// A response or forwarded request body.
pub enum Body {
    /// A backend's response, read from its socket as the client takes it.
    Upstream(UpstreamBody),
    /// Anything else: generated pages, upgrade answers, test bodies.
    Boxed(UnsyncBoxBody<Bytes, BoxError>),
}

impl From<UnsyncBoxBody<Bytes, BoxError>> for Body {
    fn from(b: UnsyncBoxBody<Bytes, BoxError>) -> Self {
        Body::Boxed(b)
    }
}

impl hyper::body::Body for Body {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        // Both variants are Unpin.
        match self.get_mut() {
            Body::Upstream(b) => Pin::new(b).poll_frame(cx),
            Body::Boxed(b) => Pin::new(b).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Body::Upstream(b) => b.is_end_stream(),
            Body::Boxed(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Body::Upstream(b) => b.size_hint(),
            Body::Boxed(b) => b.size_hint(),
        }
    }
}

/// A body holding `bytes`.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
        .into()
}

/// An empty body.
pub fn empty() -> Body {
    Empty::new()
        .map_err(|never| match never {})
        .boxed_unsync()
        .into()
}

/// Box an upgrade response's body (hyper's client) like every other.
pub fn boxed_incoming(body: Incoming) -> super::body::Body {
    body.map_err(BoxError::from).boxed_unsync().into()
}
