//! Under `stackctl up`, a directory written without pause from the start
//! is snapshotted one debounce after the first change, not only at the
//! 60 s ceiling (issue 17, item 10): a container killed in its first
//! minute keeps what it wrote.

use std::time::Duration;

use crate::harness::Stack;

#[test]
fn a_directory_written_without_pause_is_snapshotted_within_the_debounce() {
    let s = Stack::new(
        r#"
name: busy
services:
  writer:
    command: [sh, -c, "i=0; while :; do i=$((i+1)); echo $i > data/tick; sleep 0.1; done"]
    stop_timeout: 1s
persist:
  remote: ./remote.git
  workdir: ./work
  debounce: 1s
  interval: 1h
  paths: [./data]
"#,
    );
    std::fs::create_dir_all(s.path("data")).unwrap();
    crate::common_persist::init_bare(&s.path("remote.git"));
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
