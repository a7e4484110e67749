//! How a response body is delimited (RFC 9112 §6.3), decided from its head.

use http::Method;

use super::{trim_ows, ParseError, RawHead};

/// How a response body is delimited (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseFraming {
    /// No body at all (HEAD, 1xx, 204, 304).
    Empty,
    /// Exactly this many bytes.
    Length(u64),
    /// Chunked transfer coding.
    Chunked,
    /// Everything until the backend closes the connection (which therefore
    /// cannot be reused).
    UntilClose,
}

/// How a response's body is framed, and whether its connection can carry
/// another request afterwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decided {
    pub framing: ResponseFraming,
    pub keep_alive: bool,
}

/// A `Content-Length` value: one or more ASCII digits and nothing else
/// (RFC 9110 §8.6). `str::parse` would also take `+5`, which other parsers
/// on the way may read differently.
fn digits(v: &[u8]) -> Option<u64> {
    if v.is_empty() || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(v).ok()?.parse().ok()
}

/// The framing of the body that follows `head`, sent in answer to a
/// request with `method`. `Transfer-Encoding` wins over `Content-Length`
/// (and such a message is never reused: the two disagreeing is how request
/// smuggling starts); differing `Content-Length` values are an error.
pub fn decide(method: &Method, head: &RawHead<'_, '_>) -> Result<Decided, ParseError> {
    let s = head.status.as_u16();
    let mut keep_alive = head.keep_alive;
    // Both framings on one message: whatever the status, the backend and
    // we may not agree where it ends (found by the generated heads below).
    if head.has_coding && head.values("content-length").next().is_some() {
        keep_alive = false;
    }
    if method == Method::HEAD || (100..200).contains(&s) || s == 204 || s == 304 {
        return Ok(Decided {
            framing: ResponseFraming::Empty,
            keep_alive,
        });
    }
    let lengths = head.values("content-length");
    if head.has_coding {
        // Only the last coding matters: chunked must be the final one.
        let chunked_last = head
            .values("transfer-encoding")
            .next_back()
            .and_then(|te| te.rsplit(|b| *b == b',').next())
            .is_some_and(|last| trim_ows(last).eq_ignore_ascii_case(b"chunked"));
        if lengths.count() > 0 || !chunked_last {
            keep_alive = false;
        }
        let framing = if chunked_last {
            ResponseFraming::Chunked
        } else {
            ResponseFraming::UntilClose
        };
        return Ok(Decided {
            framing,
            keep_alive,
        });
    }
    let mut length = None;
    for v in lengths {
        for part in v.split(|b| *b == b',') {
            let n = digits(trim_ows(part)).ok_or(ParseError::BadLength)?;
            if length.is_some_and(|l| l != n) {
                return Err(ParseError::BadLength);
            }
            length = Some(n);
        }
    }
    let framing = match length {
        Some(n) => ResponseFraming::Length(n),
        None => {
            keep_alive = false;
            ResponseFraming::UntilClose
        }
    };
    Ok(Decided {
        framing,
        keep_alive,
    })
}
