//! Large-file pointers, pure: the Git LFS pointer (spec v1) a large file is
//! committed as, the `.gitattributes` lines that make the backup repository
//! a valid LFS repository, and the original's `*.pointer` JSON files
//! (`type: release-asset`) that restore hydrates so its users can migrate.
//!
//! No I/O here: hashing and transfers live in [`super::blob`].

use std::fmt;

/// The first line of every LFS pointer (spec v1).
pub const VERSION_LINE: &str = "version https://git-lfs.github.com/spec/v1";

/// Pointer files are small; the spec caps them at 1024 bytes.
pub const MAX_POINTER_SIZE: usize = 1024;

/// The attributes `git lfs track` writes for a tracked path.
pub const LFS_ATTRIBUTES: &str = "filter=lfs diff=lfs merge=lfs -text";

/// Suffix of the original's pointer files.
pub const ORIGINAL_SUFFIX: &str = ".pointer";

/// A blob's identity: SHA-256 of its bytes and its size. The LFS object id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Pointer {
    /// SHA-256 of the content.
    pub sha256: [u8; 32],
    /// Size in bytes.
    pub size: u64,
}

impl Pointer {
    /// The object id as lowercase hex (also the blob's name in every store).
    pub fn oid(&self) -> String {
        hex::encode(self.sha256)
    }

    /// The pointer file's text, byte-identical to `git lfs pointer --file`.
    pub fn render(&self) -> String {
        format!(
            "{VERSION_LINE}\noid sha256:{}\nsize {}\n",
            self.oid(),
            self.size
        )
    }

    /// Parse a pointer file. Strict: exactly the three lines of a v1 pointer
    /// in canonical form (what stackctl and git-lfs write), so an ordinary
    /// small file is never taken for a pointer by accident.
    pub fn parse(text: &[u8]) -> Option<Pointer> {
        if text.len() > MAX_POINTER_SIZE {
            return None;
        }
        let text = std::str::from_utf8(text).ok()?;
        let rest = text.strip_prefix(VERSION_LINE)?.strip_prefix('\n')?;
        let rest = rest.strip_prefix("oid sha256:")?;
        let (oid, rest) = rest.split_once('\n')?;
        let rest = rest.strip_prefix("size ")?;
        let size = rest.strip_suffix('\n')?;
        let sha256 = parse_sha256(oid)?;
        if size.is_empty() || !size.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        // Canonical form only: no leading zeros.
        if size.len() > 1 && size.starts_with('0') {
            return None;
        }
        Some(Pointer {
            sha256,
            size: size.parse().ok()?,
        })
    }
}

impl fmt::Display for Pointer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{} ({} bytes)", self.oid(), self.size)
    }
}

/// 64 lowercase hex digits → the digest.
pub fn parse_sha256(hex_text: &str) -> Option<[u8; 32]> {
    if hex_text.len() != 64
        || !hex_text
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return None;
    }
    let mut out = [0u8; 32];
    hex::decode_to_slice(hex_text, &mut out).ok()?;
    Some(out)
}

/// The `.gitattributes` pattern matching exactly `tree_path` (from the
/// repository root). Glob characters are escaped; a space becomes
/// `[[:space:]]` (as `git lfs track` writes it, since a space separates
/// attributes); characters a line cannot hold (control characters) become
/// `?`, which matches that one character.
pub fn attribute_pattern(tree_path: &str) -> String {
    let mut out = String::with_capacity(tree_path.len() + 1);
    // A pattern without a slash would match the name at any depth.
    if !tree_path.contains('/') {
        out.push('/');
    }
    for c in tree_path.chars() {
        match c {
            ' ' => out.push_str("[[:space:]]"),
            '*' | '?' | '[' | ']' | '\\' | '#' | '!' | '"' => {
                out.push('\\');
                out.push(c);
            }
            c if c.is_control() => out.push('?'),
            c => out.push(c),
        }
    }
    out
}

/// The root `.gitattributes` for these large files' tree paths, sorted.
pub fn render_gitattributes(tree_paths: &[String]) -> String {
    let mut lines: Vec<String> = tree_paths
        .iter()
        .map(|p| format!("{} {LFS_ATTRIBUTES}\n", attribute_pattern(p)))
        .collect();
    lines.sort();
    lines.dedup();
    let mut out = String::from(
        "# written by stackctl: files at or above `large_files.threshold` are Git LFS pointers\n",
    );
    out.extend(lines);
    out
}

/// The patterns a `.gitattributes` text sends through the LFS filter
/// (`filter=lfs` on the line), as written.
pub fn lfs_patterns(gitattributes: &str) -> std::collections::HashSet<String> {
    gitattributes
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| {
            let mut parts = l.split_whitespace();
            let pattern = parts.next()?;
            parts
                .any(|a| a == "filter=lfs")
                .then(|| pattern.to_string())
        })
        .collect()
}

/// Is `tree_path` tracked by LFS under `patterns` (exact-path lines, as
/// stackctl writes them)?
pub fn is_lfs_tracked(patterns: &std::collections::HashSet<String>, tree_path: &str) -> bool {
    patterns.contains(&attribute_pattern(tree_path))
        || patterns.contains(tree_path.trim_start_matches('/'))
}

/// `.lfsconfig` pointing clones at the LFS server, so `git lfs pull` in a
/// clone of the backup repository works without configuration.
pub fn render_lfsconfig(url: &str) -> String {
    format!("[lfs]\n\turl = {url}\n")
}

/// One of the original's `<file>.pointer` JSON files.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct OriginalPointer {
    /// Always `release-asset`.
    #[serde(rename = "type")]
    pub kind: String,
    /// `owner/repo` holding the release.
    #[serde(default)]
    pub repo: String,
    /// The release's tag.
    #[serde(default)]
    pub release_tag: String,
    /// The asset's name (`<sha256>-<basename>`).
    #[serde(default)]
    pub asset_name: String,
    /// The asset's id: what the download goes through. `null` when the
    /// original's upload failed or the asset was past the first 30 it
    /// listed: then the asset is found by `asset_name` in the release.
    pub asset_id: Option<u64>,
    /// The file's absolute path in the container.
    #[serde(default)]
    pub original_path: String,
    /// Size in bytes.
    pub size: u64,
    /// SHA-256 hex.
    pub sha256: String,
}

impl OriginalPointer {
    /// Parse a `.pointer` file; `None` unless it is a `release-asset`
    /// pointer with a valid size and SHA-256.
    pub fn parse(text: &[u8]) -> Option<(OriginalPointer, Pointer)> {
        if text.len() > 64 * 1024 {
            return None;
        }
        let p: OriginalPointer = serde_json::from_slice(text).ok()?;
        if p.kind != "release-asset" {
            return None;
        }
        let sha256 = parse_sha256(&p.sha256.to_ascii_lowercase())?;
        let size = p.size;
        Some((p, Pointer { sha256, size }))
    }

    /// The file a `.pointer` file at `name` stands for (`a.bin.pointer` → `a.bin`).
    pub fn target_name(name: &str) -> Option<&str> {
        name.strip_suffix(ORIGINAL_SUFFIX).filter(|n| !n.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p() -> Pointer {
        Pointer {
            sha256: [0xab; 32],
            size: 12345,
        }
    }

    #[test]
    fn pointer_text_is_the_v1_format_and_parses_back() {
        let text = p().render();
        assert_eq!(
            text,
            format!(
                "version https://git-lfs.github.com/spec/v1\noid sha256:{}\nsize 12345\n",
                "ab".repeat(32)
            )
        );
        assert_eq!(Pointer::parse(text.as_bytes()), Some(p()));
    }

    #[test]
    fn only_canonical_pointers_parse() {
        let oid = "ab".repeat(32);
        for bad in [
            String::new(),
            "hello".to_string(),
            format!(
                "version https://git-lfs.github.com/spec/v1\noid sha256:{oid}\nsize 12\nextra\n"
            ),
            format!("version https://git-lfs.github.com/spec/v1\noid sha256:{oid}\nsize 012\n"),
            format!(
                "version https://git-lfs.github.com/spec/v1\noid sha256:{}\nsize 12\n",
                "AB".repeat(32)
            ),
            format!("version https://git-lfs.github.com/spec/v1\noid sha256:{oid}\nsize 12"),
            format!("version https://git-lfs.github.com/spec/v1\noid md5:{oid}\nsize 12\n"),
            format!("version https://git-lfs.github.com/spec/v1\noid sha256:{oid}\nsize -1\n"),
        ] {
            assert_eq!(Pointer::parse(bad.as_bytes()), None, "{bad:?}");
        }
    }

    #[test]
    fn attribute_patterns_escape_what_gitattributes_would_read_otherwise() {
        for (path, want) in [
            ("home/user/data/big.bin", "home/user/data/big.bin"),
            ("top.bin", "/top.bin"),
            ("a/my file.bin", "a/my[[:space:]]file.bin"),
            ("a/x*[1]?.bin", "a/x\\*\\[1\\]\\?.bin"),
            ("a/#b", "a/\\#b"),
            ("a/new\nline", "a/new?line"),
            ("a/données", "a/données"),
        ] {
            assert_eq!(attribute_pattern(path), want, "{path:?}");
        }
        let text = render_gitattributes(&["b/2".into(), "a/1".into(), "a/1".into()]);
        let tracked = lfs_patterns(&text);
        assert!(is_lfs_tracked(&tracked, "a/1"));
        assert!(!is_lfs_tracked(&tracked, "a/2"));
        assert_eq!(
            text.lines().skip(1).collect::<Vec<_>>(),
            [
                "a/1 filter=lfs diff=lfs merge=lfs -text",
                "b/2 filter=lfs diff=lfs merge=lfs -text"
            ]
        );
    }

    #[test]
    fn the_originals_pointer_files_are_understood() {
        let sha = "cd".repeat(32);
        let json = format!(
            r#"{{"type":"release-asset","repo":"o/r","release_tag":"blobs","asset_name":"{sha}-a.bin","asset_id":42,"download_url":"https://x","original_path":"/data/a.bin","size":7,"sha256":"{sha}","generated_at":"2025-01-01T00:00:00Z"}}"#
        );
        let (orig, ptr) = OriginalPointer::parse(json.as_bytes()).unwrap();
        assert_eq!(orig.asset_id, Some(42));
        let null = json.replace(r#""asset_id":42"#, r#""asset_id":null"#);
        assert_eq!(
            OriginalPointer::parse(null.as_bytes()).unwrap().0.asset_id,
            None
        );
        assert_eq!(orig.repo, "o/r");
        assert_eq!(ptr.size, 7);
        assert_eq!(ptr.oid(), sha);
        assert!(
            OriginalPointer::parse(br#"{"type":"other","asset_id":1,"size":1,"sha256":"x"}"#)
                .is_none()
        );
        assert!(OriginalPointer::parse(b"not json").is_none());
        assert_eq!(OriginalPointer::target_name("a.bin.pointer"), Some("a.bin"));
        assert_eq!(OriginalPointer::target_name(".pointer"), None);
        assert_eq!(OriginalPointer::target_name("a.bin"), None);
    }
}
