//! The HTTP/1.1 wire format spoken to backends, as pure functions: the
//! request head we write, the response head we parse, how the response
//! body is framed (RFC 9112 §6.3), and a chunked-body decoder.
//!
//! The I/O around it lives in [`super::upstream`]. Keeping the codec free
//! of sockets lets every framing rule be tested on byte strings.

mod chunked;
mod framing;
mod request;
mod response;

pub use chunked::{Chunked, Decoded};
pub use framing::{decide, Decided, ResponseFraming};
pub use request::{chunk_header, encode_request_head, RequestFraming, CHUNKED_END};
pub use response::{
    head_complete, header_slots, parse_response, peek_status, HeaderSlots, RawHead,
};

/// The largest response head accepted from a backend (status line and
/// headers); nginx's default `proxy_buffer_size` is 4–8 KiB, so this is
/// generous while still bounding what a broken backend can make us hold.
pub const MAX_HEAD: usize = 64 * 1024;

/// Headers a response head may carry.
pub const MAX_HEADERS: usize = 128;

/// Why a backend's response could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("malformed response head")]
    Malformed,
    #[error("response head over {MAX_HEAD} bytes")]
    TooLarge,
    #[error("conflicting Content-Length headers")]
    BadLength,
    #[error("malformed chunked body")]
    BadChunk,
}

fn trim_ows(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

/// `n` copies of `base`, each with a few random bytes changed, inserted or
/// cut off (seeded: the same every run), for tests that parsers never
/// panic and keep their promises on broken input.
#[cfg(test)]
pub(crate) fn mangled(base: &[u8], n: usize) -> impl Iterator<Item = Vec<u8>> + '_ {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    (0..n).map(move |_| {
        let mut buf = base.to_vec();
        for _ in 0..rng.random_range(1..4) {
            if buf.is_empty() {
                break;
            }
            let i = rng.random_range(0..buf.len());
            match rng.random_range(0..3) {
                0 => buf[i] = rng.random(),
                1 => buf.truncate(i),
                _ => buf.insert(i, rng.random()),
            }
        }
        buf
    })
}

/// The settings of the generated-input tests over the parsers: `cases`
/// inputs, bounded so that they run in every `cargo test` (a second or two
/// in a debug build), and no regression files left behind.
#[cfg(test)]
pub(crate) fn generated(cases: u32) -> proptest::prelude::ProptestConfig {
    proptest::prelude::ProptestConfig {
        cases,
        failure_persistence: None,
        ..proptest::prelude::ProptestConfig::default()
    }
}

/// A head as generated inputs build it: the start line and its line end,
/// `name: value` fields each with its own line end, the blank line's end,
/// then `tail` (body bytes, or the next message).
#[cfg(test)]
pub(crate) fn head_bytes<'a>(
    start: &[&[u8]],
    fields: impl IntoIterator<Item = (&'a str, Vec<u8>, &'a str)>,
    blank: &str,
    tail: &[u8],
) -> Vec<u8> {
    let mut out = start.concat();
    for (name, value, end) in fields {
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(&value);
        out.extend_from_slice(end.as_bytes());
    }
    out.extend_from_slice(blank.as_bytes());
    out.extend_from_slice(tail);
    out
}

#[cfg(test)]
mod tests;
