//! The one check every removal and write of a restore goes through.
//!
//! A restore may only touch a persisted root or what lies below it by plain
//! names. [`Guard::check`] is the only way to get an [`Inside`], and the
//! restore's file-system operations take an [`Inside`], never a bare path:
//! a name derived from repository content that slipped past the planner
//! (`..` from `...pointer` minus `.pointer`, issue 17) is stopped here,
//! before anything is removed. The check is on bytes, not on
//! [`Path::components`], which silently drops a `.` and would take
//! `root/sub/..` for a path below `root`.

use std::ffi::OsString;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use crate::persist::plan::safe_entry_name;

/// The persisted roots a restore may write in.
#[derive(Debug)]
pub struct Guard {
    roots: Vec<PathBuf>,
}

/// A path the [`Guard`] let through: a persisted root, or below one by
/// plain names. The only kind of path a restore removes or writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inside {
    path: PathBuf,
    root: PathBuf,
}

/// Why a path was refused (for the "unsafe entries" error).
pub type Refusal = String;

impl Guard {
    /// A guard for `roots`; each must be an absolute path of plain names.
    pub fn new(roots: &[PathBuf]) -> Result<Guard, Refusal> {
        for r in roots {
            if !is_plain_absolute(r) {
                return Err(format!(
                    "`{}` is not an absolute path of plain names",
                    r.display()
                ));
            }
        }
        Ok(Guard {
            roots: roots.to_vec(),
        })
    }

    /// Let `path` through if it is a root or below one by plain names.
    pub fn check(&self, path: &Path) -> Result<Inside, Refusal> {
        let bytes = path.as_os_str().as_bytes();
        for root in &self.roots {
            let r = root.as_os_str().as_bytes();
            let Some(rest) = bytes.strip_prefix(r) else {
                continue;
            };
            let below = match rest {
                [] => true,
                [b'/', names @ ..] => names.split(|b| *b == b'/').all(safe_entry_name),
                _ => false,
            };
            if below {
                return Ok(Inside {
                    path: path.to_path_buf(),
                    root: root.clone(),
                });
            }
        }
        Err(format!(
            "`{}` is outside the persisted paths",
            path.display()
        ))
    }
}

impl Inside {
    /// The path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The persisted root it is (or lies below).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Is this the persisted root itself?
    pub fn is_root(&self) -> bool {
        self.path == self.root
    }

    /// The directory holding this path, when that is inside too (not for a root).
    pub fn parent(&self) -> Option<Inside> {
        if self.is_root() {
            return None;
        }
        self.path.parent().map(|p| Inside {
            path: p.to_path_buf(),
            root: self.root.clone(),
        })
    }

    /// This path with `suffix` appended to its last name (`db` → `db-wal`):
    /// a SQLite side file, which belongs to the file it is named after (also
    /// beside a root that is a file). `suffix` is one of ours, never a name
    /// from the repository.
    pub fn with_suffix(&self, suffix: &'static str) -> Inside {
        debug_assert!(!suffix.contains('/'));
        let mut p: OsString = self.path.clone().into_os_string();
        p.push(suffix);
        Inside {
            path: PathBuf::from(p),
            root: self.root.clone(),
        }
    }

    /// A temp name beside this path for an atomic replace (beside a root
    /// that is a file: in its directory, which is where the rename happens).
    pub fn temp(&self) -> Inside {
        let name = self
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let short: String = name.chars().take(100).collect();
        Inside {
            path: self
                .path
                .with_file_name(format!(".{short}.stackctl-tmp-{}", std::process::id())),
            root: self.root.clone(),
        }
    }
}

/// Absolute, and every name after the root is plain (no `.`, `..`, empty).
fn is_plain_absolute(p: &Path) -> bool {
    let bytes = p.as_os_str().to_os_string().into_vec();
    match bytes.as_slice() {
        [b'/', names @ ..] if !names.is_empty() => names.split(|b| *b == b'/').all(safe_entry_name),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard() -> Guard {
        Guard::new(&[PathBuf::from("/srv/data"), PathBuf::from("/etc/app.db")]).unwrap()
    }

    #[test]
    fn only_roots_and_plain_names_below_them_pass() {
        let g = guard();
        for ok in [
            "/srv/data",
            "/srv/data/a",
            "/srv/data/a/b.txt",
            "/srv/data/...x",
            "/srv/data/.hidden",
            "/etc/app.db",
        ] {
            let inside = g.check(Path::new(ok)).unwrap();
            assert_eq!(inside.path(), Path::new(ok));
        }
        for bad in [
            "/srv/data/..",
            "/srv/data/.",
            "/srv/data/sub/..",
            "/srv/data/sub/../..",
            "/srv/data/./x",
            "/srv/data//x",
            "/srv/data/",
            "/srv/database",
            "/srv",
            "/etc/app.db-wal",
            "/etc/passwd",
            "srv/data/x",
            "",
        ] {
            assert_eq!(
                g.check(Path::new(bad)).unwrap_err(),
                format!("`{bad}` is outside the persisted paths"),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn roots_must_be_absolute_plain_paths() {
        for bad in ["/srv/data/..", "/srv/./data", "relative", "/", "/srv//data"] {
            assert!(Guard::new(&[PathBuf::from(bad)]).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn derived_paths_stay_with_their_root() {
        let g = guard();
        let f = g.check(Path::new("/srv/data/a/x.db")).unwrap();
        assert_eq!(f.parent().unwrap().path(), Path::new("/srv/data/a"));
        assert_eq!(
            f.with_suffix("-wal").path(),
            Path::new("/srv/data/a/x.db-wal")
        );
        assert_eq!(
            f.temp().path(),
            Path::new(&format!(
                "/srv/data/a/.x.db.stackctl-tmp-{}",
                std::process::id()
            ))
        );
        let root = g.check(Path::new("/srv/data")).unwrap();
        assert!(root.is_root() && root.parent().is_none());
        assert_eq!(root.root(), Path::new("/srv/data"));
    }
}
