//! Under `stackctl up`, a directory written without pause from the start
//! is snapshotted one debounce after the first change, not only at the
//! 60 s ceiling (issue 17, item 10): a container killed in its first
//! minute keeps what it wrote. And a write right after `restore finished`
//! is seen by the watcher: that line is logged once the paths are watched.

use std::time::Duration;

use crate::harness::Stack;

/// A stack of `services` backing up `data` to an empty `remote.git`, with a
/// 1 s debounce and a periodic scan an hour away.
fn stack(services: &str) -> Stack {
    let s = Stack::new(&format!(
        "name: watched\nservices:{services}\npersist:\n  remote: ./remote.git\n  workdir: ./work\n  debounce: 1s\n  interval: 1h\n  paths: [./data]\n"
    ));
    std::fs::create_dir_all(s.path("data")).unwrap();
    crate::common_persist::init_bare(&s.path("remote.git"));
    s
}

#[test]
fn a_directory_written_without_pause_is_snapshotted_within_the_debounce() {
    let s = stack(
        r#"
  writer:
    command: [sh, -c, "i=0; while :; do i=$((i+1)); echo $i > data/tick; sleep 0.1; done"]
    stop_timeout: 1s"#,
    );
    let mut up = s.up();
    let started = up.wait_for("started service=writer", Duration::from_secs(30));
    // The ceiling is 60 s; one debounce (1 s) plus the snapshot's own time
    // is what it should take.
    let pushed = up.wait_for("snapshot pushed", Duration::from_secs(30));
    let after = pushed.at.saturating_sub(started.at);
    if after > Duration::from_secs(10) {
        up.fail(&format!(
            "the first snapshot came {after:?} after the writer started"
        ));
    }
}

/// `restore finished` is logged once the snapshot loop's watch is on the
/// data: a file written right after it is pushed one debounce later, long
/// before the periodic scan (an hour away).
#[test]
fn a_write_right_after_restore_finished_is_snapshotted_by_the_debounce() {
    let s = stack(
        r#"
  idle:
    command: [sleep, "600"]
    stop_timeout: 1s"#,
    );
    let (data, remote) = (s.path("data"), s.path("remote.git"));
    // A snapshot to restore, so the persister's own restore line comes
    // before `restore finished` too.
    crate::common_persist::push_tree(
        &s.path(""),
        &remote,
        &data,
        "seed",
        &[("old.txt", b"old".to_vec())],
    );
    let mut up = s.up();
    up.wait_for("restore finished", Duration::from_secs(30));
    std::fs::write(data.join("late.txt"), "written right after").unwrap();
    up.wait_for("snapshot pushed", Duration::from_secs(30));
    let files = crate::common_persist::git(&remote, &["ls-tree", "-r", "--name-only", "main"]);
    if !files.lines().any(|f| f.ends_with("data/late.txt")) {
        up.fail(&format!(
            "the write right after `restore finished` is not in the pushed snapshot:\n{files}"
        ));
    }
}
