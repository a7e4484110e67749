//! A snapshot is point-in-time across files (issue 17, item 9): with a
//! writer creating numbered files as fast as it can while snapshots are
//! taken, the files in each snapshot are exactly the first N ones created,
//! never a later file without an earlier one.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use stackctl::persist::{Persister, RestoreOptions};

use crate::common_persist::{git, quick, Dirs};

/// Directories the writer spreads its files over: a walk reads them in an
/// order that has nothing to do with the order the files appear in.
const DIRS: usize = 8;
/// Enough for the writer to outlast the snapshots below.
const MAX_FILES: u64 = 20_000;

/// The numbers of the writer's files in `commit` of the workdir repository.
fn numbers_in(d: &Dirs, commit: &str) -> BTreeSet<u64> {
    let repo = d.root.join("work/repo.git");
    let names = git(
        &d.root,
        &[
            "--git-dir",
            repo.to_str().unwrap(),
            "ls-tree",
            "-r",
            "--name-only",
            commit,
        ],
    );
    names
        .lines()
        .filter_map(|l| l.rsplit('/').next()?.strip_prefix("f")?.parse().ok())
        .collect()
}

#[test]
fn files_created_during_a_snapshot_leave_no_gap_among_those_included() {
    let d = Dirs::new();
    for i in 0..DIRS {
        std::fs::create_dir_all(d.data.join(format!("d{i}"))).unwrap();
    }
    let p = Persister::with_config(d.config("work"), quick()).unwrap();
    p.restore(&RestoreOptions::default()).unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (stop, data) = (stop.clone(), d.data.clone());
        std::thread::spawn(move || {
            let mut n = 0u64;
            // About a thousand files a second, the issue's order of magnitude.
            while !stop.load(Ordering::Relaxed) && n < MAX_FILES {
                let dir = data.join(format!("d{}", n as usize % DIRS));
                std::fs::write(dir.join(format!("f{n}")), n.to_string()).unwrap();
                n += 1;
                std::thread::sleep(Duration::from_micros(500));
            }
            n
        })
    };
    let mut checked = 0;
    let mut last = 0;
    for _ in 0..10 {
        let report = p.snapshot().unwrap();
        let Some(commit) = report.commit else {
            continue;
        };
        let got = numbers_in(&d, &commit.to_string());
        let gaps: Vec<u64> = (0..got.len() as u64).filter(|n| !got.contains(n)).collect();
        assert!(
            gaps.is_empty(),
            "snapshot {commit} holds {} files up to f{:?} but lacks {} of the earlier ones, e.g. {:?}",
            got.len(),
            got.last(),
            gaps.len(),
            &gaps[..gaps.len().min(10)]
        );
        assert!(got.len() >= last, "a later snapshot holds fewer files");
        last = got.len();
        checked += 1;
        std::thread::sleep(Duration::from_millis(20));
    }
    stop.store(true, Ordering::Relaxed);
    let written = writer.join().unwrap();
    assert!(checked >= 5, "only {checked} snapshots committed");
    assert!(written as usize > last, "the writer outpaced no snapshot");
    // Once the writer stopped, the next snapshot has everything.
    let report = p.snapshot().unwrap();
    let all = numbers_in(&d, &report.commit.unwrap().to_string());
    assert_eq!(all.len() as u64, written);
}
