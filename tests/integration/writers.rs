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
use std::time::Duration;

use stackctl::persist::{Persister, RestoreOptions, RestoreState};

use super::common_persist::{git, quick, Dirs};
use crate::harness::{free_port, Running, Stack};

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

/// The file `rel` below the persisted path `data` in the branch of the
/// bare repository `remote`, if it has one.
fn branch_file(remote: &Path, data: &Path, rel: &str) -> Option<String> {
    let tree = data.display().to_string();
    let spec = format!("main:{}/{rel}", tree.trim_start_matches('/'));
    let out = std::process::Command::new("git")
        .arg("--git-dir")
        .arg(remote)
        .args(["show", &spec])
        .output()
        .unwrap();
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

fn remote_file(dirs: &Dirs, rel: &str) -> Option<String> {
    branch_file(&dirs.remote, &dirs.data, rel)
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
    let old = Persister::with_config(dirs.config("work-old"), quick()).unwrap();
    old.restore(&RestoreOptions::default()).unwrap();
    old.snapshot_and_push().unwrap().pushed.unwrap();

    // The new container starts on a new disk and restores.
    disks.mount("new");
    let new = Persister::with_config(dirs.config("work-new"), quick()).unwrap();
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

/// A persister for container `name` with a 10-minute write lease.
fn leased(dirs: &Dirs, name: &str) -> Persister {
    let tuning = stackctl::persist::Tuning {
        instance: name.into(),
        lease_ttl: Duration::from_secs(600),
        ..quick()
    };
    Persister::with_config(dirs.config(&format!("work-{name}")), tuning).unwrap()
}

/// Container `old` on its disk with `both.txt` = "base", restored and
/// pushed (it holds the lease): the disks, the data path, `old`, its snapshot.
fn old_pushed(dirs: &Dirs) -> (Disks<'_>, PathBuf, Persister, git2::Oid) {
    let mut disks = Disks::new(dirs, "old");
    let data = disks.mount("old").to_path_buf();
    fs::write(data.join("both.txt"), "base").unwrap();
    let old = leased(dirs, "old");
    old.restore(&RestoreOptions::default()).unwrap();
    let first = old.snapshot_and_push().unwrap().pushed.unwrap();
    (disks, data, old, first)
}

// Issue 12 item 1: a snapshot taken while another instance holds the
// lease is parked, and the holder folds it in per file before its push.
#[test]
fn a_parked_snapshot_is_folded_in_per_file_by_the_lease_holder() {
    let dirs = Dirs::new();
    let (mut disks, data, old, first) = old_pushed(&dirs);

    disks.mount("new");
    let new = leased(&dirs, "new");
    new.restore(&RestoreOptions::default()).unwrap();
    fs::write(data.join("new-only.txt"), "from new").unwrap();
    fs::write(data.join("both.txt"), "new's version").unwrap();
    let rep = new.snapshot_and_push().unwrap();
    assert_eq!(
        rep.parked.as_deref(),
        Some("refs/stackctl/pending/new"),
        "{rep:?}"
    );
    let parked = rep.commit.unwrap();
    assert_eq!(git(&dirs.remote, &["rev-parse", "main"]), first.to_string());
    let listed = old.pending_snapshots().unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!((listed[0].0.as_str(), listed[0].1), ("new", parked));
    drop(new);

    disks.mount("old");
    fs::write(data.join("old-only.txt"), "from old").unwrap();
    fs::write(data.join("both.txt"), "old's version").unwrap();
    old.snapshot_and_push().unwrap().pushed.unwrap();
    let copy = format!("both.txt.conflict-{}", &parked.to_string()[..12]);
    for (rel, want) in [
        ("old-only.txt", "from old"),
        ("new-only.txt", "from new"),
        ("both.txt", "old's version"),
        (copy.as_str(), "new's version"),
    ] {
        assert_eq!(remote_file(&dirs, rel).as_deref(), Some(want), "tip: {rel}");
        assert_eq!(
            fs::read_to_string(data.join(rel)).unwrap(),
            want,
            "live: {rel}"
        );
    }
    assert_eq!(
        git(&dirs.remote, &["for-each-ref", "refs/stackctl/pending/"]),
        "",
        "the folded pending ref is deleted"
    );
    assert_eq!(old.snapshot_and_push().unwrap().commit, None);
}

/// Wait until the clock's second changes: commit times have one-second
/// resolution, and "newer" must be told apart.
fn next_second() {
    let now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    };
    let start = now();
    while now() == start {
        std::thread::sleep(Duration::from_millis(20));
    }
}

// Issue 12 item 1: newest wins, both kept. The holder's version of a file
// is older than the one parked: the parked one takes the name.
#[test]
fn a_newer_parked_version_takes_the_name_and_the_older_goes_beside_it() {
    let dirs = Dirs::new();
    let (mut disks, data, old, _) = old_pushed(&dirs);

    disks.mount("new");
    let new = leased(&dirs, "new");
    new.restore(&RestoreOptions::default()).unwrap();

    disks.mount("old");
    fs::write(data.join("both.txt"), "old's version").unwrap();
    let ours = old.snapshot_and_push().unwrap().pushed.unwrap();

    next_second();
    disks.mount("new");
    fs::write(data.join("both.txt"), "new's newer version").unwrap();
    assert!(new.snapshot_and_push().unwrap().parked.is_some());
    drop(new);

    disks.mount("old");
    old.push().unwrap().unwrap();
    let copy = format!("both.txt.conflict-{}", &ours.to_string()[..12]);
    for (rel, want) in [
        ("both.txt", "new's newer version"),
        (copy.as_str(), "old's version"),
    ] {
        assert_eq!(remote_file(&dirs, rel).as_deref(), Some(want), "tip: {rel}");
        assert_eq!(
            fs::read_to_string(data.join(rel)).unwrap(),
            want,
            "live: {rel}"
        );
    }
    assert_eq!(old.snapshot_and_push().unwrap().commit, None);
}

// Issue 12 item 1: the holder stopped before folding a parked snapshot
// in; a container restoring on a wiped disk still gets its files.
#[test]
fn a_restore_takes_a_pending_snapshot_newer_than_the_branch_into_account() {
    let dirs = Dirs::new();
    let mut disks = Disks::new(&dirs, "old");
    let data = disks.mount("old").to_path_buf();
    fs::write(data.join("note.txt"), "v1").unwrap();
    let old = leased(&dirs, "old");
    old.restore(&RestoreOptions::default()).unwrap();
    let head = old.snapshot_and_push().unwrap().pushed.unwrap();

    disks.mount("new");
    let new = leased(&dirs, "new");
    new.restore(&RestoreOptions::default()).unwrap();
    fs::write(data.join("note.txt"), "v2 from new").unwrap();
    assert!(new.snapshot_and_push().unwrap().parked.is_some());
    drop(new);

    disks.mount("third");
    let third = leased(&dirs, "third");
    let r = third.restore(&RestoreOptions::default()).unwrap();
    assert_ne!(r.state, RestoreState::Restored(head), "{r:?}");
    assert_eq!(
        fs::read_to_string(data.join("note.txt")).unwrap(),
        "v2 from new"
    );
    // Its first snapshot holds the folded state: nothing new to commit.
    let s = third.snapshot().unwrap();
    assert_eq!(s.commit, None, "{s:?}");
}

// ---- the write lease, end to end through the binary (issue 12 item 1) ----

const T: Duration = Duration::from_secs(30);

/// A stack whose one service prints the persisted note at start; its
/// workdir, data path and gateway port come from `WD`, `DATA` and `PORT`,
/// so two `up`s can share the directory and the remote (`remote.git`).
fn stack() -> Stack {
    let s = Stack::new(
        r#"
name: writers
services:
  app:
    command: [sh, -c, "echo \"saw: $(cat ${DATA:-./data}/note.txt 2>/dev/null || echo nothing)\"; exec sleep 1000"]
    stop_timeout: 2s
gateway:
  listen: 127.0.0.1:${PORT}
  admin: { password: "correct-horse-battery" }
persist:
  remote: ./remote.git
  workdir: ${WD:-./work}
  debounce: 300ms
  paths: ["${DATA:-./data}"]
"#,
    );
    crate::common_persist::init_bare(&s.path("remote.git"));
    fs::create_dir_all(s.path("data")).unwrap();
    s
}

/// `stackctl up` with workdir `wd` and data path `data` on a free port.
fn up(s: &Stack, wd: &str, data: &str) -> Running {
    fs::create_dir_all(s.path(data)).unwrap();
    let env = [
        "env".to_string(),
        format!("WD={wd}"),
        format!("DATA={data}"),
        format!("PORT={}", free_port()),
    ];
    let env: Vec<&str> = env.iter().map(String::as_str).collect();
    s.spawn(&["up"], Some(&env))
}

/// The remote's file `rel` below `data/`, if the branch has it.
fn remote_data(s: &Stack, rel: &str) -> Option<String> {
    remote_in(s, "data", rel)
}

/// The remote's file `rel` below the data path `data`, if the branch has it.
fn remote_in(s: &Stack, data: &str, rel: &str) -> Option<String> {
    branch_file(&s.path("remote.git"), &s.path(data), rel)
}

fn remote_refs(s: &Stack, prefix: &str) -> String {
    git(
        &s.path("remote.git"),
        &["for-each-ref", "--format=%(refname)", prefix],
    )
}

/// SIGTERM, then the exit code within `T`.
fn stop(r: &mut Running) -> Option<i32> {
    r.signal(libc::SIGTERM);
    r.wait_exit(T).code()
}

/// Write `text` to `path` (whole: through a rename) until `done`: the
/// first write may come before `up` watches the paths (it starts watching
/// as the services start), or be taken with a snapshot of something else.
fn write_until(r: &mut Running, path: &Path, text: &str, mut done: impl FnMut(&Running) -> bool) {
    let deadline = std::time::Instant::now() + T;
    let tmp = path.with_file_name(".write-until");
    let mut next_write = std::time::Instant::now();
    while !done(r) {
        let now = std::time::Instant::now();
        if now > deadline {
            r.fail(&format!("not done after writing {}", path.display()));
        }
        // Written again only after the debounce and a snapshot had time
        // to run: a write every debounce would put the snapshot off.
        if now >= next_write {
            fs::write(&tmp, text).unwrap();
            fs::rename(&tmp, path).unwrap();
            next_write = now + Duration::from_secs(1);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A new disk: data and workdir gone (the remote stays).
fn wipe(s: &Stack, wd: &str) {
    fs::remove_dir_all(s.path("data")).unwrap();
    let _ = fs::remove_dir_all(s.path(wd));
}

#[test]
fn a_one_shot_backup_leaves_the_lease_free_for_up_on_a_wiped_disk() {
    let s = stack().env("PORT", &free_port().to_string());
    fs::write(s.path("data/note.txt"), "one").unwrap();
    s.run(&["restore"]).code(0);
    s.run(&["backup"]).code(0).stdout_has("pushed");
    let lease = git(
        &s.path("remote.git"),
        &["log", "-1", "--format=%B", "refs/stackctl/lease"],
    );
    assert!(!lease.contains("pid:"), "released: {lease}");

    // Within the lease's 120 s, a container starts on a wiped disk.
    wipe(&s, "work");
    let mut u = up(&s, "./work-new", "./data");
    u.wait_for("app | saw: one", T);
    fs::write(s.path("data/late.txt"), "written in the new container").unwrap();
    assert_eq!(stop(&mut u), Some(0), "{}", u.log());
    assert!(u.has_line("final backup pushed"), "{}", u.log());
    assert_eq!(
        remote_data(&s, "late.txt").as_deref(),
        Some("written in the new container")
    );
}

#[test]
fn a_sigkilled_holder_on_this_host_does_not_block_the_next_container() {
    let s = stack();
    let mut first = up(&s, "./work-1", "./data");
    first.wait_for("app | saw: nothing", T);
    write_until(
        &mut first,
        &s.path("data/note.txt"),
        "before the kill",
        |_| remote_data(&s, "note.txt").as_deref() == Some("before the kill"),
    );
    let lease = git(
        &s.path("remote.git"),
        &["log", "-1", "--format=%B", "refs/stackctl/lease"],
    );
    assert!(lease.contains(&format!("pid: {}", first.pid())), "{lease}");
    // SIGKILL: no final backup, no release; its services go with it.
    unsafe {
        libc::kill(-first.pid(), libc::SIGKILL);
    }
    first.wait_exit(T);

    wipe(&s, "work-1");
    let mut second = up(&s, "./work-2", "./data");
    second.wait_for("app | saw: before the kill", T);
    fs::write(s.path("data/late.txt"), "after the kill").unwrap();
    assert_eq!(stop(&mut second), Some(0), "{}", second.log());
    assert!(
        second.has_line("process is gone from this host"),
        "{}",
        second.log()
    );
    assert_eq!(
        remote_data(&s, "late.txt").as_deref(),
        Some("after the kill")
    );
}

#[test]
fn two_ups_at_once_park_and_fold_instead_of_failing_the_final_backup() {
    // Each on a data path of its own, so one's writes never make the other
    // push (and fold) at a moment the test does not choose.
    let s = stack().env("PORT", &free_port().to_string());
    let mut a = up(&s, "./work-a", "./data-a");
    a.wait_for("app | saw: nothing", T);
    write_until(&mut a, &s.path("data-a/a.txt"), "from a", |_| {
        remote_in(&s, "data-a", "a.txt").is_some()
    });

    let mut b = up(&s, "./work-b", "./data-b");
    b.wait_for("app | saw: nothing", T);
    write_until(&mut b, &s.path("data-b/b.txt"), "from b", |b| {
        b.has_line("snapshot parked")
    });
    assert_eq!(stop(&mut b), Some(0), "{}", b.log());
    assert!(b.has_line("final snapshot parked"), "{}", b.log());
    assert!(!remote_refs(&s, "refs/stackctl/pending/").is_empty());
    s.run(&["snapshots"])
        .code(0)
        .stdout_has("pending (taken while another stackctl held the write lease")
        .stdout_has("from `");

    assert_eq!(stop(&mut a), Some(0), "{}", a.log());
    assert!(a.has_line("pending snapshot folded in"), "{}", a.log());
    assert_eq!(remote_refs(&s, "refs/stackctl/pending/"), "", "{}", a.log());
    assert_eq!(remote_in(&s, "data-a", "a.txt").as_deref(), Some("from a"));
    assert_eq!(remote_in(&s, "data-b", "b.txt").as_deref(), Some("from b"));
    assert_eq!(
        fs::read_to_string(s.path("data-a/a.txt")).unwrap(),
        "from a",
        "the other's snapshot deletes nothing it does not persist"
    );
}
