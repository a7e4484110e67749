//! Hugging Face's multipart upload: the plan read from an action, the
//! completion payload, and the reader that streams and hashes one part.

use super::*;

/// Hugging Face's plan for a multipart upload, read from the `upload`
/// action's `header`.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Multipart {
    pub(super) chunk_size: u64,
    /// The presigned part URLs, part 1 first.
    pub(super) urls: Vec<String>,
    /// The other entries of `header`: real headers, for the completion.
    pub(super) headers: Vec<(String, String)>,
}

impl Multipart {
    /// The plan for a `size`-byte object, `None` without `chunk_size` (a
    /// single `PUT`). Part URLs are ordered by their number, not by the
    /// order of the JSON keys, and there must be exactly one per chunk.
    pub(super) fn parse(
        header: &HashMap<String, String>,
        size: u64,
    ) -> Result<Option<Multipart>, String> {
        let Some(cs) = header.get("chunk_size") else {
            return Ok(None);
        };
        let chunk_size = cs
            .trim()
            .parse::<u64>()
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| format!("`chunk_size` `{cs}` is not a positive number of bytes"))?;
        let mut numbered = Vec::new();
        let mut headers = Vec::new();
        for (k, v) in header {
            if k == "chunk_size" {
                continue;
            }
            if !k.is_empty() && k.bytes().all(|b| b.is_ascii_digit()) {
                let n: u64 = k
                    .parse()
                    .map_err(|_| format!("part number `{k}` is out of range"))?;
                numbered.push((n, v.clone()));
            } else {
                headers.push((k.clone(), v.clone()));
            }
        }
        numbered.sort_by_key(|(n, _)| *n);
        if let Some(w) = numbered.windows(2).find(|w| w[0].0 == w[1].0) {
            return Err(format!("part number {} is given twice", w[0].0));
        }
        let want = size.div_ceil(chunk_size);
        if numbered.len() as u64 != want {
            return Err(format!(
                "{} part URLs for {size} bytes in chunks of {chunk_size} ({want} expected)",
                numbered.len()
            ));
        }
        headers.sort();
        Ok(Some(Multipart {
            chunk_size,
            urls: numbered.into_iter().map(|(_, u)| u).collect(),
            headers,
        }))
    }

    /// Bytes `[start, end)` of part `index` (0-based) of a `size`-byte object.
    pub(super) fn range(&self, index: usize, size: u64) -> (u64, u64) {
        let start = (index as u64).saturating_mul(self.chunk_size).min(size);
        (start, start.saturating_add(self.chunk_size).min(size))
    }
}

/// The body that assembles the parts (`partNumber` counts from 1, in order).
#[derive(serde::Serialize)]
pub(super) struct Completion<'a> {
    pub(super) oid: String,
    pub(super) parts: Vec<CompletedPart<'a>>,
}

#[derive(serde::Serialize)]
pub(super) struct CompletedPart<'a> {
    #[serde(rename = "partNumber")]
    pub(super) part_number: usize,
    pub(super) etag: &'a str,
}

pub(super) fn completion(oid: String, etags: &[String]) -> Completion<'_> {
    Completion {
        oid,
        parts: etags
            .iter()
            .enumerate()
            .map(|(i, etag)| CompletedPart {
                part_number: i + 1,
                etag,
            })
            .collect(),
    }
}

/// Streams one part (`[pos, end)` of the file) into a request body, hashing
/// it on top of the hash of all parts before it. When the range is done the
/// running hash is handed back through `done`, so the next part (or a
/// retry of this one, which starts again from the same state) continues it.
/// On the last part the final bytes are withheld, and `changed` set, unless
/// the whole object hashes to `expected`: the server never receives a
/// complete last part of the wrong content, and we never assemble it.
pub(super) struct PartReader {
    pub(super) file: Arc<File>,
    pub(super) pos: u64,
    pub(super) end: u64,
    pub(super) hasher: Sha256,
    /// Set on the last part only.
    pub(super) expected: Option<Pointer>,
    pub(super) done: Arc<Mutex<Option<Sha256>>>,
    pub(super) changed: Arc<AtomicBool>,
    /// Byte progress of the whole file (`None` when nobody watches).
    pub(super) counter: Option<Arc<super::super::ByteCounter>>,
}

impl PartReader {
    pub(super) fn mismatch(&self) -> io::Error {
        self.changed.store(true, Ordering::SeqCst);
        io::Error::new(
            io::ErrorKind::InvalidData,
            "file changed while it was uploaded",
        )
    }
}

impl Read for PartReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.pos >= self.end || buf.is_empty() {
            return Ok(0);
        }
        let want = buf
            .len()
            .min(usize::try_from(self.end - self.pos).unwrap_or(usize::MAX));
        // Positioned reads: a retry never depends on where the last attempt
        // left a shared file offset.
        let n = loop {
            match self.file.read_at(&mut buf[..want], self.pos) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => break other?,
            }
        };
        if n == 0 {
            // Shrunk since it was hashed.
            return Err(self.mismatch());
        }
        self.hasher.update(&buf[..n]);
        self.pos += n as u64;
        if let Some(c) = &self.counter {
            c.add(n as u64);
        }
        if self.pos == self.end {
            if let Some(p) = self.expected {
                if self.hasher.clone().finalize()[..] != p.sha256 {
                    return Err(self.mismatch());
                }
            }
            *self.done.lock().unwrap_or_else(|e| e.into_inner()) = Some(self.hasher.clone());
        }
        Ok(n)
    }
}
