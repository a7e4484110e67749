//! The one body type every gateway response uses: a boxed stream of bytes
//! frames, so a proxied body (streamed frame by frame, never collected) and
//! a small generated one share a type.

use bytes::Bytes;
use http_body_util::{combinators::UnsyncBoxBody, BodyExt, Empty, Full};

/// Errors carried by a body stream.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A response or forwarded request body.
pub type Body = UnsyncBoxBody<Bytes, BoxError>;

/// A body holding `bytes`.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// An empty body.
pub fn empty() -> Body {
    Empty::new().map_err(|never| match never {}).boxed_unsync()
}
