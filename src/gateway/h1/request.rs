//! The request head we write to a backend, and the request body's framing.

/// How the request body is framed on the way to the backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestFraming {
    /// No body and no framing header (a plain GET).
    None,
    /// `Content-Length: n`.
    Length(u64),
    /// `Transfer-Encoding: chunked`: the length is not known up front.
    Chunked,
}

impl RequestFraming {
    /// Framing for a body whose exact length is `exact` (if known), where
    /// `declared` says the client sent a `Content-Length` header itself.
    pub fn for_body(exact: Option<u64>, declared: bool) -> Self {
        match exact {
            Some(0) if !declared => RequestFraming::None,
            Some(n) => RequestFraming::Length(n),
            None => RequestFraming::Chunked,
        }
    }
}

/// Encode a request head into `out` (cleared first; a connection reuses
/// one buffer). `headers` must already be free of hop-by-hop
/// headers; a `Content-Length` among them is replaced by what `framing`
/// says.
pub fn encode_request_head<'a>(
    out: &mut Vec<u8>,
    method: &str,
    target: &str,
    headers: impl IntoIterator<Item = (&'a [u8], &'a [u8])>,
    framing: RequestFraming,
) {
    out.clear();
    out.extend_from_slice(method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in headers {
        if name.eq_ignore_ascii_case(b"content-length") {
            continue;
        }
        out.extend_from_slice(name);
        out.extend_from_slice(b": ");
        out.extend_from_slice(value);
        out.extend_from_slice(b"\r\n");
    }
    match framing {
        RequestFraming::None => {}
        RequestFraming::Length(n) => {
            out.extend_from_slice(b"content-length: ");
            out.extend_from_slice(n.to_string().as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        RequestFraming::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
    }
    out.extend_from_slice(b"\r\n");
}

/// The size line that starts a chunk of `len` bytes.
pub fn chunk_header(len: usize) -> String {
    format!("{len:x}\r\n")
}

/// The end of a chunked request body (no trailers).
pub const CHUNKED_END: &[u8] = b"0\r\n\r\n";
