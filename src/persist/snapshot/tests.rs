use super::*;

use std::time::Duration;

use git2::Repository;

use super::super::plan::{self, PathRules, StatCache, KEEP_MARKER};

#[test]
fn utc_formatting() {
    for (secs, want) in [
        (0, "1970-01-01 00:00:00"),
        (951_782_400, "2000-02-29 00:00:00"),
        (1_790_000_000, "2026-09-21 14:13:20"),
        (-1, "1969-12-31 23:59:59"),
    ] {
        assert_eq!(format_utc(secs), want);
    }
}

fn repo() -> (tempfile::TempDir, Repository) {
    let d = tempfile::tempdir().unwrap();
    let r = Repository::init_bare(d.path().join("repo.git")).unwrap();
    (d, r)
}

#[test]
fn unchanged_tree_commits_nothing_and_cache_skips_reads() {
    let (d, repo) = repo();
    let data = d.path().join("data");
    fs::create_dir_all(data.join("empty")).unwrap();
    fs::write(data.join("a.txt"), "hello").unwrap();
    let rules = vec![PathRules::new(&data, &[], &[], &[]).unwrap()];
    let mut cache = StatCache::default();
    let tmp = d.path().join("tmp");
    let b1 = TreeBuilder::new(&repo, 0, &tmp, &mut cache)
        .build(&rules)
        .unwrap();
    assert_eq!((b1.files, b1.read), (1, 1));
    let c1 = commit_if_changed(&repo, "refs/heads/main", b1.tree.unwrap(), "one").unwrap();
    assert!(c1.is_some());
    // Pretend the scan happened long after the write: the cache may be trusted.
    let mut cache = StatCache::default();
    let mut tb = TreeBuilder::new(&repo, 0, &tmp, &mut cache);
    tb.scan_start_ns += 10 * plan::RACY_WINDOW_NS;
    tb.build(&rules).unwrap();
    let mut tb = TreeBuilder::new(&repo, 0, &tmp, &mut cache);
    tb.scan_start_ns += 10 * plan::RACY_WINDOW_NS;
    let b2 = tb.build(&rules).unwrap();
    assert_eq!((b2.files, b2.read), (1, 0), "second scan served from cache");
    assert_eq!(b2.tree, b1.tree);
    assert_eq!(
        commit_if_changed(&repo, "refs/heads/main", b2.tree.unwrap(), "two").unwrap(),
        None
    );
    // The empty dir is kept with a marker.
    let tree = repo.find_tree(b1.tree.unwrap()).unwrap();
    let rel = format!("{}/empty/{KEEP_MARKER}", plan::tree_path(&data).unwrap());
    assert!(tree.get_path(Path::new(&rel)).is_ok(), "{rel}");
    assert!(tree.get_path(Path::new(".stackctl/modes")).is_ok());
}

#[test]
fn small_binary_files_become_pointers_and_unchanged_ones_are_not_read_again() {
    let (d, repo) = repo();
    let data = d.path().join("data");
    fs::create_dir_all(&data).unwrap();
    fs::write(data.join("a.bin"), b"ab\0cd").unwrap();
    fs::write(data.join("a.txt"), "hello").unwrap();
    let rules = vec![PathRules::new(&data, &[], &[], &[]).unwrap()];
    let tmp = d.path().join("tmp");
    let mut cache = StatCache::default();
    let build = |cache: &mut StatCache, rule: bool| {
        let mut tb = TreeBuilder::new(&repo, 1 << 20, &tmp, cache)
            .with_pointers(None)
            .with_offload_binary(rule);
        // As if the scan came long after the writes: the cache may be trusted.
        tb.scan_start_ns += 10 * plan::RACY_WINDOW_NS;
        tb.build(&rules).unwrap()
    };
    let b1 = build(&mut cache, true);
    assert_eq!((b1.files, b1.read), (2, 2));
    let large: Vec<_> = b1.large.iter().map(|l| l.path.clone()).collect();
    assert_eq!(large, [data.join("a.bin")]);
    let b2 = build(&mut cache, true);
    assert_eq!((b2.files, b2.read), (2, 0), "served from the cache");
    assert_eq!(b2.tree, b1.tree);
    // Still listed: its blob must be in the store before a commit names it.
    assert_eq!(b2.large, b1.large);
    // Without the rule the cached pointer no longer fits: read again.
    let b3 = build(&mut cache, false);
    assert_eq!((b3.read, b3.large.len()), (1, 0));
    assert_ne!(b3.tree, b1.tree);
}

#[test]
fn sqlite_copy_is_a_valid_database() {
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("src.db");
    let c = rusqlite::Connection::open(&src).unwrap();
    c.pragma_update(None, "journal_mode", "WAL").unwrap();
    c.execute_batch("create table t(x); insert into t values (1),(2),(3);")
        .unwrap();
    let dst = d.path().join("dst.db");
    sqlite_copy(&src, &dst, Duration::from_secs(2)).unwrap();
    let copy = rusqlite::Connection::open(&dst).unwrap();
    let n: i64 = copy
        .query_row("select count(*) from t", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 3);
    let ok: String = copy
        .query_row("pragma integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(ok, "ok");
    drop(copy);
    // A copy of the copy (what a snapshot after a restore takes) is byte-identical.
    let again = d.path().join("again.db");
    sqlite_copy(&dst, &again, Duration::from_secs(2)).unwrap();
    assert_eq!(fs::read(&dst).unwrap(), fs::read(&again).unwrap());
}
