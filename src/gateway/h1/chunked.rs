//! The chunked-body decoder for a backend's response.

use bytes::{Buf, Bytes, BytesMut};

use super::{trim_ows, ParseError};

/// What one step of chunked decoding produced.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded {
    /// Body bytes, in the order they came.
    Data(Bytes),
    /// The buffer holds no complete next element: read more.
    NeedMore,
    /// The last chunk and its trailers have been read.
    Done,
}

/// The longest chunk-size line (with extensions) or trailer line accepted.
pub(super) const MAX_LINE: usize = 4096;
/// The most trailer bytes accepted (they are read and dropped).
const MAX_TRAILERS: usize = 16 * 1024;

/// A chunked-body decoder. Data is handed out as soon as it is in the
/// buffer, even mid-chunk, so a streamed response is never held back
/// waiting for the rest of a chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chunked {
    /// Expecting a chunk-size line.
    Size,
    /// Inside a chunk with this many bytes left.
    Data(u64),
    /// Expecting the CRLF after a chunk's data.
    DataEnd,
    /// After the last chunk: trailer lines until an empty one; the number
    /// of trailer bytes seen so far.
    Trailers(usize),
    /// Complete.
    Done,
}

impl Chunked {
    /// Decode the next element from `buf`, consuming what it used.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Decoded, ParseError> {
        loop {
            match *self {
                Chunked::Size => {
                    let Some(line) = take_line(buf)? else {
                        return Ok(Decoded::NeedMore);
                    };
                    let digits = line.split(|b| *b == b';').next().unwrap_or(&[]);
                    let digits = trim_ows(digits);
                    if digits.is_empty() || digits.len() > 16 {
                        return Err(ParseError::BadChunk);
                    }
                    let mut n: u64 = 0;
                    for d in digits {
                        let v = (*d as char).to_digit(16).ok_or(ParseError::BadChunk)?;
                        n = n << 4 | u64::from(v);
                    }
                    *self = if n == 0 {
                        Chunked::Trailers(0)
                    } else {
                        Chunked::Data(n)
                    };
                }
                Chunked::Data(left) => {
                    if buf.is_empty() {
                        return Ok(Decoded::NeedMore);
                    }
                    let take = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
                    let data = buf.split_to(take).freeze();
                    let left = left - take as u64;
                    *self = if left == 0 {
                        Chunked::DataEnd
                    } else {
                        Chunked::Data(left)
                    };
                    return Ok(Decoded::Data(data));
                }
                Chunked::DataEnd => {
                    if buf.len() < 2 {
                        return Ok(Decoded::NeedMore);
                    }
                    if &buf[..2] != b"\r\n" {
                        return Err(ParseError::BadChunk);
                    }
                    buf.advance(2);
                    *self = Chunked::Size;
                }
                Chunked::Trailers(seen) => {
                    let before = buf.len();
                    let Some(line) = take_line(buf)? else {
                        return Ok(Decoded::NeedMore);
                    };
                    let seen = seen + (before - buf.len());
                    if line.is_empty() {
                        *self = Chunked::Done;
                    } else if seen > MAX_TRAILERS {
                        return Err(ParseError::BadChunk);
                    } else {
                        *self = Chunked::Trailers(seen);
                    }
                }
                Chunked::Done => return Ok(Decoded::Done),
            }
        }
    }
}

/// Take one CRLF-terminated line off `buf` (without the CRLF).
fn take_line(buf: &mut BytesMut) -> Result<Option<Bytes>, ParseError> {
    match buf.windows(2).position(|w| w == b"\r\n") {
        Some(i) if i > MAX_LINE => Err(ParseError::BadChunk),
        Some(i) => {
            let line = buf.split_to(i).freeze();
            buf.advance(2);
            Ok(Some(line))
        }
        None if buf.len() > MAX_LINE => Err(ParseError::BadChunk),
        None => Ok(None),
    }
}
