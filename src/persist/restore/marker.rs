//! The workdir's record that a restore completed: `<workdir>/restored`.
//!
//! "Never restored" must not be read from anything a look at the remote
//! leaves behind (`repo.git` is created by opening the workdir, and
//! `stackctl snapshots` or `restore --dry-run` fetch into it): only a
//! completed restore (files written, or the remote confirmed empty, or
//! newer local data kept) writes this file. `stackctl restore` without
//! `--force` and `stackctl backup` without a running `up` decide from it
//! whether local files are known to this workdir (issue 17).

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// The marker's name in the workdir.
pub const NAME: &str = "restored";

/// The marker's path for `workdir`.
pub fn path(workdir: &Path) -> PathBuf {
    workdir.join(NAME)
}

/// Has a restore into `workdir` completed?
pub fn exists(workdir: &Path) -> bool {
    path(workdir).is_file()
}

/// Record that a restore completed, as `state` (e.g. `restored <commit>`).
/// Durable before it returns: a crash must not leave a marker for a
/// restore whose record was lost, nor lose the record of one that finished.
pub fn write(workdir: &Path, state: &str) -> io::Result<()> {
    let dst = path(workdir);
    let tmp = workdir.join(format!(".{NAME}.tmp-{}", std::process::id()));
    let mut f = fs::File::create(&tmp)?;
    f.write_all(format!("{state}\n").as_bytes())?;
    f.sync_all()?;
    drop(f);
    fs::rename(&tmp, &dst)?;
    fs::File::open(workdir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_written_marker_counts() {
        let d = tempfile::tempdir().unwrap();
        assert!(!exists(d.path()));
        fs::create_dir_all(d.path().join("repo.git")).unwrap();
        assert!(!exists(d.path()), "a repository is not a restore");
        write(d.path(), "restored abc").unwrap();
        assert!(exists(d.path()));
        assert_eq!(
            fs::read_to_string(d.path().join("restored")).unwrap(),
            "restored abc\n"
        );
    }
}
