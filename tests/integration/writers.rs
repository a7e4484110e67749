//! Concurrent writers never lose a snapshot (issues 17 item 2, 12 item 1):
//! overlapping containers on one backup repository merge per file instead
//! of replaying a full tree over the other's changes, and the write lease
//! never blocks a restarted container or drops a final snapshot.
//!
//! Two "containers" persist the same absolute path on different disks: a
//! test keeps each disk in a directory of its own and moves it into place
//! before acting as that container.

use std::fs;
use std::path::{Path, PathBuf};

use stackctl::persist::{Persister, RestoreOptions};

use super::common_persist::{git, Dirs};

/// The disks of two containers, swapped in and out of `dirs.data`.
struct Disks<'a> {
    dirs: &'a Dirs,
    mounted: &'static str,
}

impl<'a> Disks<'a> {
    /// `first`'s disk is in place (empty).
    fn new(dirs: &'a Dirs, first: &'static str) -> Self {
        fs::create_dir_all(&dirs.data).unwrap();
        Disks {
            dirs,
            mounted: first,
        }
    }

    fn stored(&self, name: &str) -> PathBuf {
        self.dirs.root.join(format!("disk-{name}"))
    }

    /// Put `name`'s disk in place (a new, empty one the first time).
    fn mount(&mut self, name: &'static str) -> &Path {
        if self.mounted != name {
            fs::rename(&self.dirs.data, self.stored(self.mounted)).unwrap();
            let disk = self.stored(name);
            if disk.exists() {
                fs::rename(&disk, &self.dirs.data).unwrap();
            } else {
                fs::create_dir_all(&self.dirs.data).unwrap();
            }
            self.mounted = name;
        }
        &self.dirs.data
    }
}

/// The remote branch's file at `rel` below the data path, if any.
fn remote_file(dirs: &Dirs, rel: &str) -> Option<String> {
    let tree = dirs.data.display().to_string();
    let spec = format!("main:{}/{rel}", tree.trim_start_matches('/'));
    let out = std::process::Command::new("git")
        .arg("--git-dir")
        .arg(&dirs.remote)
        .args(["show", &spec])
        .output()
        .unwrap();
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

// Issue 17 item 2: the old container's last write survives the new
// container's push, and a file both changed is kept twice.
#[test]
fn overlapping_containers_merge_per_file_and_keep_both_versions_on_conflict() {
    let dirs = Dirs::new();
    let mut disks = Disks::new(&dirs, "old");
    let data = disks.mount("old").to_path_buf();
    for (f, text) in [("note.txt", "v1"), ("both.txt", "base"), ("gone.txt", "x")] {
        fs::write(data.join(f), text).unwrap();
    }
    let old = Persister::with_config(dirs.config("work-old")).unwrap();
    old.restore(&RestoreOptions::default()).unwrap();
    old.snapshot_and_push().unwrap().pushed.unwrap();

    // The new container starts on a new disk and restores.
    disks.mount("new");
    let new = Persister::with_config(dirs.config("work-new")).unwrap();
    new.restore(&RestoreOptions::default()).unwrap();

    // The old one keeps writing, and pushes its final backup.
    disks.mount("old");
    fs::write(data.join("note.txt"), "old's last write").unwrap();
    fs::write(data.join("old-only.txt"), "added by old").unwrap();
    fs::write(data.join("both.txt"), "old's version").unwrap();
    fs::remove_file(data.join("gone.txt")).unwrap();
    let theirs = old.snapshot_and_push().unwrap().pushed.unwrap();
    drop(old);

    // The new one changes other files and one of the same, then pushes.
    disks.mount("new");
    fs::write(data.join("both.txt"), "new's version").unwrap();
    fs::write(data.join("new-only.txt"), "added by new").unwrap();
    let rep = new.snapshot_and_push().unwrap();
    assert!(rep.reparented, "{rep:?}");
    let head = git(&dirs.remote, &["rev-parse", "main"]);
    assert_eq!(rep.pushed.map(|o| o.to_string()), Some(head.clone()));
    assert_eq!(
        git(&dirs.remote, &["rev-parse", &format!("{head}^")]),
        theirs.to_string(),
        "our snapshot sits on theirs"
    );

    let copy = format!("both.txt.conflict-{}", &theirs.to_string()[..12]);
    for (rel, want) in [
        ("note.txt", Some("old's last write")),
        ("old-only.txt", Some("added by old")),
        ("gone.txt", None),
        ("both.txt", Some("new's version")),
        (copy.as_str(), Some("old's version")),
        ("new-only.txt", Some("added by new")),
    ] {
        assert_eq!(remote_file(&dirs, rel).as_deref(), want, "tip: {rel}");
        // The live files agree with the tip: the next snapshot keeps it.
        assert_eq!(
            fs::read_to_string(data.join(rel)).ok().as_deref(),
            want,
            "live: {rel}"
        );
    }
    let st = new.status();
    assert_eq!(
        st.conflicts,
        vec![data.join(&copy).display().to_string()],
        "{st:?}"
    );
    let again = new.snapshot_and_push().unwrap();
    assert_eq!(again.commit, None, "the live files hold the merged tip");
}
