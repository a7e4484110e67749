use super::*;

fn rules(own: &[&str], global: &[&str]) -> PathRules {
    let own: Vec<String> = own.iter().map(|s| s.to_string()).collect();
    let global: Vec<String> = global.iter().map(|s| s.to_string()).collect();
    PathRules::new(
        Path::new("/app/.config/QQ"),
        &own,
        &global,
        &[PathBuf::from("/app/.config/QQ/.stackctl")],
    )
    .unwrap()
}

#[test]
fn only_a_file_born_before_the_probes_tick_predates_it() {
    let clock = ScanClock {
        dev: 1,
        mtime_ns: 1_000,
    };
    assert!(clock.predates(999));
    assert!(!clock.predates(1_000), "the same tick could be either side");
    assert!(!clock.predates(1_001));
}

#[test]
fn tree_paths_follow_the_originals_layout() {
    let table: &[(&str, Result<&str, PlanError>)] = &[
        ("/home/user/AstrBot/data", Ok("home/user/AstrBot/data")),
        ("/a", Ok("a")),
        ("/a/b/", Ok("a/b")),
        ("/données/é", Ok("données/é")),
        (
            "relative/x",
            Err(PlanError::NotAbsolute("relative/x".into())),
        ),
        ("/a/../etc", Err(PlanError::NotAbsolute("/a/../etc".into()))),
        ("/a/./b", Err(PlanError::NotAbsolute("/a/./b".into()))),
        ("/", Err(PlanError::Root)),
    ];
    for (input, want) in table {
        let got = tree_path(Path::new(input));
        assert_eq!(
            got.as_deref().map_err(Clone::clone),
            want.clone(),
            "{input}"
        );
    }
}

#[test]
fn unsafe_entry_names_are_refused() {
    for (name, ok) in [
        (&b"a.txt"[..], true),
        (b"..x", true),
        (b"", false),
        (b".", false),
        (b"..", false),
        (b"a/b", false),
        (b"../etc", false),
        (b"a\0b", false),
    ] {
        assert_eq!(
            safe_entry_name(name),
            ok,
            "{:?}",
            String::from_utf8_lossy(name)
        );
    }
}

#[test]
fn symlinks_must_stay_inside_their_root() {
    for (link, target, ok) in [
        ("a", "b", true),
        ("d/a", "../b", true),
        ("d/a", "../../b", false),
        ("a", "../x", false),
        ("a", "/etc/passwd", false),
        ("d/e/a", "./../../f/g", true),
        ("d/a", "x/../../..", false),
        // `d` may be a symlink to `.`: `d/..` would then leave the root.
        ("a", "d/..", false),
        ("d/a", "../x/y", true),
    ] {
        assert_eq!(
            symlink_stays_inside(Path::new(link), Path::new(target)),
            ok,
            "{link} -> {target}"
        );
    }
}

#[test]
fn sidecars_are_recognised_by_suffix() {
    for (name, yes) in [
        ("db.sqlite-wal", true),
        ("db-shm", true),
        ("x.db-journal", true),
        ("-wal", false),
        ("wal", false),
        ("notes.journal", false),
    ] {
        assert_eq!(is_sqlite_sidecar(OsStr::new(name)), yes, "{name}");
    }
}

#[test]
fn decisions_per_file() {
    let r = rules(&["**/cache/**"], &["**/*.log", "tmp"]);
    let sqlite = b"SQLite format 3\0rest";
    let t = 100;
    type Row<'a> = (&'a str, FileType, u64, Option<&'a [u8]>, Decision);
    let table: &[Row] = &[
        ("a.txt", FileType::File, 5, None, Decision::Blob),
        (
            "db/x.db",
            FileType::File,
            50,
            Some(sqlite),
            Decision::Sqlite,
        ),
        (
            "db/x.db",
            FileType::File,
            50,
            Some(b"SQLite format 2\0"),
            Decision::Blob,
        ),
        (
            "big.bin",
            FileType::File,
            100,
            None,
            Decision::Offload { size: 100 },
        ),
        (
            "big.db",
            FileType::File,
            500,
            Some(sqlite),
            Decision::Offload { size: 500 },
        ),
        (
            "x.db-wal",
            FileType::File,
            5,
            None,
            Decision::Excluded(Excluded::SqliteSidecar),
        ),
        (
            "x.db-journal",
            FileType::File,
            5,
            None,
            Decision::Excluded(Excluded::SqliteSidecar),
        ),
        (
            "logs/a.log",
            FileType::File,
            5,
            None,
            Decision::Excluded(Excluded::Glob("**/*.log".into())),
        ),
        (
            "top.log",
            FileType::File,
            5,
            None,
            Decision::Excluded(Excluded::Glob("**/*.log".into())),
        ),
        (
            "x/cache/y",
            FileType::File,
            5,
            None,
            Decision::Excluded(Excluded::Glob("**/cache/**".into())),
        ),
        (
            "tmp",
            FileType::Dir,
            0,
            None,
            Decision::Excluded(Excluded::Glob("tmp".into())),
        ),
        ("sub/tmp", FileType::Dir, 0, None, Decision::Dir),
        ("sub", FileType::Dir, 0, None, Decision::Dir),
        (
            ".stackctl/state",
            FileType::File,
            1,
            None,
            Decision::Excluded(Excluded::Internal),
        ),
        ("ln", FileType::Symlink, 0, None, Decision::Symlink),
        ("fifo", FileType::Other, 0, None, Decision::Special),
    ];
    for (rel, ty, size, header, want) in table {
        assert_eq!(
            &r.decide(Path::new(rel), *ty, *size, *header, t, false),
            want,
            "{rel}"
        );
    }
    // Threshold 0 disables the size limit.
    assert_eq!(
        r.decide(Path::new("big"), FileType::File, 1 << 40, None, 0, false),
        Decision::Blob
    );
}

#[test]
fn globs_match_the_full_tree_path_too() {
    let r = rules(&["app/.config/QQ/nt_qq/**"], &[]);
    assert!(r.excluded(Path::new("nt_qq/a"), FileType::File).is_some());
    assert!(r.excluded(Path::new("other/a"), FileType::File).is_none());
}

#[test]
fn bad_globs_and_overlaps_are_reported() {
    let e = PathRules::new(Path::new("/a"), &["a[".into()], &[], &[]).unwrap_err();
    assert!(
        matches!(e, PlanError::BadGlob { ref glob, .. } if glob == "a["),
        "{e}"
    );
    assert!(check_disjoint(&["/a/b".into(), "/a/c".into()]).is_ok());
    assert_eq!(
        check_disjoint(&["/a/b".into(), "/a".into()]),
        Err(PlanError::Overlap("/a/b".into(), "/a".into()))
    );
}

#[test]
fn header_is_read_only_when_it_can_matter() {
    let h = SQLITE_HEADER.len();
    for (size, threshold, rule, want) in [
        (10, 100, false, 0),
        (16, 100, false, h),
        (100, 100, false, 0),
        (1 << 40, 0, false, h),
        // With the binary rule, small files too, and the whole window.
        (1, 100, true, SNIFF_LEN),
        (99, 100, true, SNIFF_LEN),
        (100, 100, true, 0),
        (0, 100, true, 0),
    ] {
        assert_eq!(
            head_len(size, threshold, rule),
            want,
            "{size} {threshold} {rule}"
        );
    }
}

#[test]
fn binary_means_a_nul_in_the_first_8000_bytes_as_git_says() {
    let at = |i: usize| {
        let mut v = vec![b'a'; SNIFF_LEN + 100];
        v[i] = 0;
        v
    };
    assert!(looks_binary(&at(0)));
    assert!(looks_binary(&at(SNIFF_LEN - 1)));
    assert!(!looks_binary(&at(SNIFF_LEN)), "past git's window");
    assert!(!looks_binary(b""));
    assert!(!looks_binary("héllo, 世界\n\tdone\r\n".as_bytes()));
    assert!(looks_binary(SQLITE_HEADER));
}

#[test]
fn offload_by_size_always_and_binary_only_under_the_rule() {
    let t = 1 << 20;
    for (size, threshold, binary, rule, want) in [
        (t, t, false, false, true),
        (t - 1, t, false, false, false),
        (t - 1, t, true, false, false),
        (t - 1, t, true, true, true),
        (t - 1, t, false, true, false),
        (5, 0, true, true, true),
        (1 << 40, 0, false, true, false),
        (0, t, false, true, false),
    ] {
        assert_eq!(
            offload(size, threshold, binary, rule),
            want,
            "{size} {threshold} {binary} {rule}"
        );
    }
}

#[test]
fn small_binary_files_and_databases_are_offloaded_under_the_rule() {
    let r = rules(&[], &[]);
    let d = |head: &[u8], size: u64, rule: bool| {
        r.decide(Path::new("f"), FileType::File, size, Some(head), 100, rule)
    };
    let sqlite = b"SQLite format 3\0rest";
    assert_eq!(d(b"ab\0c", 4, true), Decision::Offload { size: 4 });
    assert_eq!(d(b"ab\0c", 4, false), Decision::Blob);
    assert_eq!(d(b"text", 4, true), Decision::Blob);
    assert_eq!(d(sqlite, 50, true), Decision::Offload { size: 50 });
    assert_eq!(d(sqlite, 50, false), Decision::Sqlite);
}

#[test]
fn cached_blobs_are_told_apart_by_size() {
    use Cached::*;
    // (copy, file size, blob size, pointer's size, want)
    for (copy, file, blob, ptr, want) in [
        (false, 500, 500, None, Raw),
        (false, 500, 130, Some(500), Pointer),
        (false, 500, 130, Some(499), Unsure),
        (false, 500, 400, None, Unsure),
        // A raw file that happens to hold a pointer to something else.
        (false, 130, 130, Some(77), Raw),
        // A pointer text the size it names: raw or pointer? Read it.
        (false, 128, 128, Some(128), Unsure),
        // A database copy's size need not be the live file's.
        (true, 500, 4096, None, Raw),
        (true, 500, 130, Some(4096), Pointer),
    ] {
        assert_eq!(
            cached_kind(copy, file, blob, ptr),
            want,
            "{copy} {file} {blob} {ptr:?}"
        );
    }
}

#[test]
fn a_cached_blob_is_reused_only_if_the_decision_still_holds() {
    use Cached::*;
    let t = 100;
    // (kind, size, rule, sniffed binary, reuse)
    for (kind, size, rule, binary, want) in [
        (Unsure, 5, false, None, false),
        (Pointer, 100, false, None, true),
        (Raw, 100, true, Some(false), false),
        (Raw, 5, false, None, true),
        (Pointer, 5, false, Some(true), false),
        (Raw, 5, true, Some(false), true),
        (Raw, 5, true, Some(true), false),
        // Never sniffed (an older cache, a restore): a raw blob may be a
        // binary file the remote refuses; a pointer is always accepted.
        (Raw, 5, true, None, false),
        (Pointer, 5, true, None, true),
        (Pointer, 5, true, Some(true), true),
        // Offloaded by an older, lower threshold, and text: back to a blob.
        (Pointer, 5, true, Some(false), false),
    ] {
        assert_eq!(
            reuse_cached(kind, size, t, rule, binary),
            want,
            "{kind:?} {size} {rule} {binary:?}"
        );
    }
}

#[test]
fn stat_cache_hits_only_on_identical_stat_and_skips_racy_files() {
    let mut c = StatCache::default();
    let key = StatKey {
        size: 3,
        mtime_ns: 1_000,
        ino: 7,
    };
    let p = Path::new("/d/f");
    let now = 10_000_000_000;
    c.store(
        p,
        CacheEntry {
            key,
            wal: None,
            oid: "abc".into(),
            copy: false,
            binary: None,
        },
        now,
    );
    assert_eq!(c.lookup(p, key, None), Some("abc"));
    for other in [
        StatKey { size: 4, ..key },
        StatKey {
            mtime_ns: 1_001,
            ..key
        },
        StatKey { ino: 8, ..key },
    ] {
        assert_eq!(c.lookup(p, other, None), None, "{other:?}");
    }
    // A changed WAL invalidates a database's entry.
    assert_eq!(c.lookup(p, key, Some(key)), None);
    // A file modified just before the scan is not cached.
    let fresh = StatKey {
        mtime_ns: now - 1,
        ..key
    };
    c.store(
        p,
        CacheEntry {
            key: fresh,
            wal: None,
            oid: "def".into(),
            copy: false,
            binary: None,
        },
        now,
    );
    assert_eq!(c.lookup(p, fresh, None), None);
    assert!(c.is_empty());
}

#[test]
fn restore_reads_a_local_file_only_when_the_stat_cache_cannot_answer() {
    use OnDisk::*;
    let table: &[(Option<u64>, u64, Option<bool>, OnDisk)] = &[
        (None, 10, None, Differs),
        (None, 10, Some(true), Differs),
        (Some(9), 10, Some(true), Differs),
        (Some(10), 10, Some(true), Same),
        (Some(10), 10, Some(false), Differs),
        (Some(10), 10, None, Hash),
        (Some(0), 0, None, Hash),
    ];
    for &(local, want, cached, expected) in table {
        assert_eq!(
            compare_local(local, want, cached),
            expected,
            "{local:?} {want} {cached:?}"
        );
    }
}

#[test]
fn only_files_older_than_the_probe_on_its_device_are_settled() {
    let clock = ScanClock {
        dev: 3,
        mtime_ns: 1_000,
    };
    assert!(clock.settled(3, 999));
    assert!(
        !clock.settled(3, 1_000),
        "same tick: a later write may keep it"
    );
    assert!(!clock.settled(3, 1_001));
    assert!(!clock.settled(4, 1), "another filesystem, another clock");
}

#[test]
fn written_entries_are_kept_without_the_racy_check() {
    let mut c = StatCache::default();
    let key = StatKey {
        size: 3,
        mtime_ns: 1_000,
        ino: 7,
    };
    let p = Path::new("/d/f");
    c.store_settled(
        p,
        CacheEntry {
            key,
            wal: None,
            oid: "abc".into(),
            copy: false,
            binary: None,
        },
    );
    assert_eq!(c.lookup(p, key, None), Some("abc"));
    c.forget(p);
    assert!(c.is_empty());
}

#[test]
fn modes_round_trip_and_are_sanitised() {
    let text = render_modes(&[("b".into(), 0o100755), ("a b".into(), 0o600)]);
    assert_eq!(text, "0600 a b\n0755 b\n");
    let m = parse_modes(&(text + "garbage\n9999 x\n"));
    assert_eq!(m.get("a b"), Some(&0o600));
    assert_eq!(m.get("b"), Some(&0o755));
    assert_eq!(m.len(), 2);
    assert_eq!(safe_mode(0o4755), 0o755);
}
