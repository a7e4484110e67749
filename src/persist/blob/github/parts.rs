//! A large blob as parts: their names, sizes and hashes.

use super::*;

/// The name of part `i` (1-based) of `n` of the blob `oid`.
pub fn part_name(oid: &str, i: u64, n: u64) -> String {
    format!("{oid}.part-{i:03}-of-{n:03}")
}

/// `(sha256, i, n)` of a part's name, written exactly as [`part_name`]
/// writes it (so one part has one name).
pub fn parse_part_name(name: &str) -> Option<([u8; 32], u64, u64)> {
    let (oid, rest) = name.split_once(".part-")?;
    let sha = parse_sha256(oid)?;
    let (i, n) = rest.split_once("-of-")?;
    let (i, n): (u64, u64) = (i.parse().ok()?, n.parse().ok()?);
    ((1..=n).contains(&i) && n <= MAX_PARTS && part_name(oid, i, n) == name).then_some((sha, i, n))
}

/// The sizes of the `n` parts of a blob of `size` bytes: as even as
/// possible (the first `size % n` parts one byte longer). A function of the
/// blob's size and the part count alone, so any store finds the layout
/// from the names, whatever part size it would choose itself.
pub fn part_sizes(size: u64, n: u64) -> Vec<u64> {
    (0..n).map(|i| part_len(size, n, i)).collect()
}

/// The size of part `i` (0-based) of [`part_sizes`]`(size, n)`.
pub(super) fn part_len(size: u64, n: u64, i: u64) -> u64 {
    let n = n.max(1);
    size / n + u64::from(i < size % n)
}

/// SHA-256 of each part of the file at `src`, read once; the file must
/// hash to `p` as a whole, or it changed since it was hashed.
pub(super) fn hash_parts(
    src: &Path,
    p: &Pointer,
    sizes: &[u64],
) -> Result<Vec<Pointer>, BlobError> {
    let io = |source| BlobError::Io {
        what: "read",
        path: src.to_path_buf(),
        source,
    };
    let changed = || BlobError::Changed {
        path: src.to_path_buf(),
    };
    let mut f = std::fs::File::open(src).map_err(io)?;
    let mut whole = Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    let mut out = Vec::with_capacity(sizes.len());
    for &size in sizes {
        let mut part = Sha256::new();
        let mut left = size;
        while left > 0 {
            let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
            let n = match f.read(&mut buf[..want]) {
                Ok(0) => return Err(changed()),
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(io(e)),
            };
            part.update(&buf[..n]);
            whole.update(&buf[..n]);
            left -= n as u64;
        }
        out.push(Pointer {
            sha256: part.finalize().into(),
            size,
        });
    }
    let grown = f.read(&mut buf[..1]).map_err(io)? > 0;
    if grown || whole.finalize()[..] != p.sha256 {
        return Err(changed());
    }
    Ok(out)
}
