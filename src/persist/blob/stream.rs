//! Streaming with verification and byte counting: what every store moves
//! its bytes through ([`VerifyingReader`] for uploads, [`download_to`] for
//! downloads, [`ByteCounter`] for progress).

use std::cell::RefCell;
use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use sha2::{Digest, Sha256};

use super::{BlobError, Retry, CHUNK};
use crate::persist::deadline;
use crate::persist::pointer::Pointer;

/// Bytes of the large file being transferred now, for progress: the only
/// cost on the transfer's path is one relaxed atomic add per chunk; a
/// reporter thread reads it at its own pace ([`crate::persist::progress`]).
#[derive(Debug, Default)]
pub struct ByteCounter(AtomicU64);

impl ByteCounter {
    /// Count `n` more bytes.
    pub fn add(&self, n: u64) {
        // Relaxed: the value is only displayed; nothing is ordered by it.
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    /// Bytes counted since the last [`ByteCounter::reset`].
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }

    /// Start again from zero: a retried transfer reads its file again.
    pub fn reset(&self) {
        self.0.store(0, Ordering::Relaxed);
    }
}

thread_local! {
    /// The counter uploads and downloads opened on this thread report to.
    static COUNTER: RefCell<Option<Arc<ByteCounter>>> = const { RefCell::new(None) };
}

/// Run `f` with `counter` counting the bytes of every upload
/// ([`open_verified`]) and download ([`download_to`]) opened on this thread
/// meanwhile. A thread-local rather than a parameter because
/// [`BlobStore::put`](super::BlobStore::put) only takes a path: each store opens the file itself
/// through [`open_verified`], which picks the counter up here. The reader
/// keeps its own handle, so it counts even when an HTTP client reads the
/// body on another thread.
pub fn counting<T>(counter: &Arc<ByteCounter>, f: impl FnOnce() -> T) -> T {
    struct Restore(Option<Arc<ByteCounter>>);
    impl Drop for Restore {
        fn drop(&mut self) {
            let previous = self.0.take();
            COUNTER.with(|c| *c.borrow_mut() = previous);
        }
    }
    let previous = COUNTER.with(|c| c.borrow_mut().replace(counter.clone()));
    // Restored on unwind too: a panic must not leave a stale counter behind.
    let _restore = Restore(previous);
    f()
}

/// The counter of the enclosing [`counting`], reset for a new transfer.
/// Stores that upload a file in parts call it once per file and hand the
/// counter to each part's reader ([`VerifyingReader::counted`]).
pub fn start_counting() -> Option<Arc<ByteCounter>> {
    let counter = COUNTER.with(|c| c.borrow().clone());
    if let Some(c) = &counter {
        c.reset();
    }
    counter
}

/// SHA-256 and size of everything `r` yields, streaming.
pub fn hash_reader(mut r: impl Read) -> io::Result<Pointer> {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    let mut size = 0u64;
    loop {
        let n = match r.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        h.update(&buf[..n]);
        size += n as u64;
    }
    Ok(Pointer {
        sha256: h.finalize().into(),
        size,
    })
}

/// The pointer of the file at `path` (streamed: flat memory).
pub fn hash_file(path: &Path) -> io::Result<Pointer> {
    hash_reader(fs::File::open(path)?)
}

/// Reads exactly `p.size` bytes from a file while hashing them, and fails
/// instead of returning the last bytes when the content does not hash to
/// `p`: the consumer (an upload) never sees a complete wrong object.
pub struct VerifyingReader<R> {
    inner: R,
    expected: Pointer,
    left: u64,
    hasher: Sha256,
    changed: Arc<AtomicBool>,
    counter: Option<Arc<ByteCounter>>,
}

impl<R: Read> VerifyingReader<R> {
    /// Wrap `inner`; `changed` is set when the content did not match.
    pub fn new(inner: R, expected: Pointer, changed: Arc<AtomicBool>) -> Self {
        Self {
            inner,
            expected,
            left: expected.size,
            hasher: Sha256::new(),
            changed,
            counter: None,
        }
    }

    /// Count what is read into `counter` (one part of a file uploaded in
    /// parts: the counter spans the whole file).
    pub fn counted(mut self, counter: Option<Arc<ByteCounter>>) -> Self {
        self.counter = counter;
        self
    }

    fn mismatch(&self) -> io::Error {
        self.changed.store(true, Ordering::SeqCst);
        io::Error::new(
            io::ErrorKind::InvalidData,
            "file changed while it was uploaded",
        )
    }
}

impl<R: Read> Read for VerifyingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        // An upload ends at the next chunk once its operation must stop.
        deadline::check().map_err(io::Error::other)?;
        if self.left == 0 || buf.is_empty() {
            if self.left == 0 && self.hasher.clone().finalize()[..] != self.expected.sha256 {
                return Err(self.mismatch());
            }
            return Ok(0);
        }
        let want = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        if n == 0 {
            // Shrunk since it was hashed.
            return Err(self.mismatch());
        }
        self.hasher.update(&buf[..n]);
        self.left -= n as u64;
        if let Some(c) = &self.counter {
            c.add(n as u64);
        }
        if self.left == 0 && self.hasher.clone().finalize()[..] != self.expected.sha256 {
            return Err(self.mismatch());
        }
        Ok(n)
    }
}

/// Open `src` for an upload of `p`: a verifying reader, and the flag it
/// sets when the file no longer matches.
pub fn open_verified(
    src: &Path,
    p: &Pointer,
) -> Result<(VerifyingReader<fs::File>, Arc<AtomicBool>), BlobError> {
    let f = fs::File::open(src).map_err(|source| BlobError::Io {
        what: "read",
        path: src.to_path_buf(),
        source,
    })?;
    let flag = Arc::new(AtomicBool::new(false));
    let reader = VerifyingReader::new(f, *p, flag.clone()).counted(start_counting());
    Ok((reader, flag))
}

/// A writer that hashes and counts what passes through.
pub struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    size: u64,
    counter: Option<Arc<ByteCounter>>,
}

impl<W: Write> HashingWriter<W> {
    /// Wrap `inner`.
    pub fn new(inner: W) -> Self {
        Self {
            inner,
            hasher: Sha256::new(),
            size: 0,
            counter: None,
        }
    }

    /// What was written, and the inner writer.
    pub fn finish(self) -> (Pointer, W) {
        (
            Pointer {
                sha256: self.hasher.finalize().into(),
                size: self.size,
            },
            self.inner,
        )
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        // A download ends at the next chunk once its operation must stop.
        deadline::check().map_err(io::Error::other)?;
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.size += n as u64;
        if let Some(c) = &self.counter {
            c.add(n as u64);
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Download blob `p` into a new file `tmp` (mode 0600), verifying size and
/// SHA-256; on any failure `tmp` is removed. `fetch` does the transfer
/// (`store.get` or `store.get_original`); it is retried on network errors.
pub fn download_to(
    retry: &Retry,
    p: &Pointer,
    tmp: &Path,
    mut fetch: impl FnMut(&mut dyn Write) -> Result<(), BlobError>,
) -> Result<(), BlobError> {
    let io_err = |source| BlobError::Io {
        what: "write",
        path: tmp.to_path_buf(),
        source,
    };
    let result = retry.run(|| {
        let _ = fs::remove_file(tmp);
        let f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(tmp)
            .map_err(io_err)?;
        let mut w = HashingWriter::new(io::BufWriter::with_capacity(CHUNK, f));
        w.counter = start_counting();
        fetch(&mut w)?;
        let (got, buf) = w.finish();
        let f = buf.into_inner().map_err(|e| io_err(e.into_error()))?;
        if got != *p {
            return Err(BlobError::Corrupt {
                expected: *p,
                got_size: got.size,
                got_oid: got.oid(),
            });
        }
        f.sync_all().map_err(io_err)
    });
    if result.is_err() {
        let _ = fs::remove_file(tmp);
    }
    result
}
