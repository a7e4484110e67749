use super::*;

use std::path::Path;
use std::time::SystemTime;

use crate::manifest::{BlobStore as NoStore, LargeFiles, OffloadBinary, PersistPath};
use crate::persist::retry::Policy;
use crate::persist::{snapshot, Progress, RestoreOptions, Stage};

use std::os::unix::fs::{MetadataExt, PermissionsExt};

/// A `persist:` section for `data` with a local bare remote.
pub(in crate::persist) fn config(root: &Path, threshold: u64) -> Persist {
    let remote = root.join("remote.git");
    if !remote.exists() {
        Repository::init_bare(&remote).unwrap();
    }
    Persist {
        remote: format!("file://{}", remote.display()),
        token: None,
        branch: "main".into(),
        workdir: root.join("work"),
        interval: Duration::from_secs(60),
        debounce: Duration::from_secs(10),
        paths: vec![PersistPath {
            path: root.join("data"),
            exclude: vec![],
        }],
        exclude: vec![],
        keep: 0,
        large_files: LargeFiles {
            threshold,
            store: NoStore::None,
            tag: "blobs".into(),
            url: None,
            offload_binary: OffloadBinary::Never,
        },
        readiness_file: None,
    }
}

/// No lease, one quick attempt per remote operation.
pub(in crate::persist) fn tuning() -> Tuning {
    Tuning {
        instance: "test".into(),
        lease_ttl: Duration::ZERO,
        retry: Policy {
            attempts: 1,
            initial: Duration::from_millis(10),
            max: Duration::from_millis(10),
        },
    }
}

/// (inode, mtime ns, ctime ns) of every entry under `dir`.
fn stamps(dir: &Path) -> std::collections::BTreeMap<PathBuf, (u64, i64, i64, i64, i64)> {
    let mut out = std::collections::BTreeMap::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let m = fs::symlink_metadata(&p).unwrap();
            if m.is_dir() {
                todo.push(p.clone());
            }
            out.insert(
                p,
                (
                    m.ino(),
                    m.mtime(),
                    m.mtime_nsec(),
                    m.ctime(),
                    m.ctime_nsec(),
                ),
            );
        }
    }
    out
}

/// Backdate every file so the stat cache may trust it (as it would
/// data written more than a moment before a snapshot).
fn backdate(dir: &Path) {
    let old = SystemTime::now() - Duration::from_secs(3600);
    for (p, _) in stamps(dir) {
        if fs::symlink_metadata(&p).unwrap().is_file() {
            fs::File::options()
                .write(true)
                .open(&p)
                .unwrap()
                .set_modified(old)
                .unwrap();
        }
    }
}

// Issue 4 (benchmark): a restore over files that already match must not
// rewrite (and fdatasync) every one of them.
#[test]
fn a_restore_over_identical_files_writes_nothing_and_the_next_snapshot_reads_nothing() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path().canonicalize().unwrap();
    let data = root.join("data");
    fs::create_dir_all(data.join("sub/deeper")).unwrap();
    for i in 0..20 {
        fs::write(
            data.join(format!("sub/f{i}.json")),
            format!("{{\"n\":{i}}}"),
        )
        .unwrap();
    }
    fs::write(data.join("sub/deeper/run.sh"), "#!/bin/sh\n").unwrap();
    fs::set_permissions(
        data.join("sub/deeper/run.sh"),
        fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    std::os::unix::fs::symlink("sub/f1.json", data.join("link")).unwrap();
    let db = rusqlite::Connection::open(data.join("app.db")).unwrap();
    db.execute_batch("create table t(x); insert into t values (1),(2);")
        .unwrap();
    drop(db);
    backdate(&data);
    let cfg = config(&root, 1 << 20);
    let p = Persister::with_config(cfg.clone(), tuning()).unwrap();
    p.restore(&RestoreOptions::default()).unwrap();
    p.snapshot_and_push().unwrap().commit.unwrap();
    // The live database differs from its snapshot copy byte for byte:
    // the first restore puts the copy in place, and only that.
    let r = p.restore(&RestoreOptions::default()).unwrap();
    assert_eq!(r.changes, vec![data.join("app.db")]);
    assert_eq!(r.applied.files, 1, "{:?}", r.applied);
    backdate(&data);
    drop(p);

    let files = 22;
    for wiped_workdir in [false, true] {
        if wiped_workdir {
            // No stat cache: every file is hashed, still none written.
            fs::remove_dir_all(&cfg.workdir).unwrap();
        }
        let before = stamps(&data);
        let p = Persister::with_config(cfg.clone(), tuning()).unwrap();
        let r = p.restore(&RestoreOptions::default()).unwrap();
        assert!(matches!(r.state, RestoreState::Restored(_)), "{r:?}");
        assert!(r.changes.is_empty(), "{:?}", r.changes);
        assert_eq!(
            (r.applied.files, r.applied.symlinks, r.applied.unchanged),
            (0, 0, files + 1),
            "{:?}",
            r.applied
        );
        assert_eq!(stamps(&data), before, "nothing was rewritten or touched");
        let s = p.snapshot_and_push().unwrap();
        assert_eq!((s.read, s.commit), (0, None), "{s:?}");
    }

    // Into a wiped data directory: every file written, and the snapshot
    // right after the restore trusts their stat (reads nothing).
    fs::remove_dir_all(&data).unwrap();
    let p = Persister::with_config(cfg.clone(), tuning()).unwrap();
    let r = p.restore(&RestoreOptions::default()).unwrap();
    assert_eq!((r.applied.files, r.applied.symlinks), (files, 1));
    let s = p.snapshot_and_push().unwrap();
    assert_eq!((s.read, s.commit), (0, None), "{s:?}");
    assert_eq!(
        fs::metadata(data.join("sub/deeper/run.sh")).unwrap().mode() & 0o777,
        0o755
    );
    // A file changed after the restore is seen, even within the same second.
    fs::write(data.join("sub/f3.json"), "{\"n\":9}").unwrap();
    let s = p.snapshot_and_push().unwrap();
    assert_eq!(s.read, 1, "{s:?}");
    assert!(s.commit.is_some());
}

// Issue 5: a database at or above the threshold is copied with the
// backup API like a small one; its live file is never uploaded.
#[test]
fn a_large_sqlite_database_written_during_snapshots_restores_consistent() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let d = tempfile::tempdir().unwrap();
    let root = d.path().canonicalize().unwrap();
    let data = root.join("data");
    fs::create_dir_all(&data).unwrap();
    let path = data.join("big.db");
    let db = rusqlite::Connection::open(&path).unwrap();
    db.pragma_update(None, "journal_mode", "WAL").unwrap();
    // Committed rows stay in the -wal file: a raw copy of the database
    // file alone would miss them.
    db.pragma_update(None, "wal_autocheckpoint", 0).unwrap();
    db.execute_batch("create table t(x blob);").unwrap();
    for _ in 0..40 {
        db.execute("insert into t values (randomblob(4000))", [])
            .unwrap();
    }
    // The file itself is above the threshold...
    db.execute_batch("pragma wal_checkpoint(truncate);")
        .unwrap();
    // ...and these rows are only in the WAL.
    for _ in 0..10 {
        db.execute("insert into t values (randomblob(4000))", [])
            .unwrap();
    }
    let cfg = config(&root, 64 * 1024);
    let store = StoreConfig::Dir(root.join("blobs"));
    let p = Persister::with_store(cfg.clone(), tuning(), &store).unwrap();
    p.restore(&RestoreOptions::default()).unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        let path = path.clone();
        std::thread::spawn(move || {
            let c = rusqlite::Connection::open(&path).unwrap();
            c.busy_timeout(Duration::from_secs(5)).unwrap();
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                c.execute_batch(
                    "begin; insert into t values (randomblob(3000)); \
                     update t set x = randomblob(2000) where rowid % 7 = 0; commit;",
                )
                .unwrap();
                n += 1;
            }
            n
        })
    };
    let mut commits = 0;
    for _ in 0..3 {
        let r = p.snapshot_and_push().unwrap();
        assert_eq!(r.large, 1, "{r:?}");
        assert!(r.sqlite >= 1, "{r:?}");
        commits += usize::from(r.commit.is_some());
    }
    stop.store(true, Ordering::Relaxed);
    assert!(writer.join().unwrap() > 0);
    assert!(commits >= 1);
    // No copies left behind in the workdir.
    let left: Vec<_> = fs::read_dir(cfg.workdir.join("tmp"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(left.is_empty(), "{left:?}");
    drop(db);
    drop(p);

    fs::remove_dir_all(&data).unwrap();
    fs::remove_dir_all(&cfg.workdir).unwrap();
    let p = Persister::with_store(cfg, tuning(), &store).unwrap();
    let r = p.restore(&RestoreOptions::default()).unwrap();
    assert_eq!(r.applied.large_files, 1, "{:?}", r.applied);
    let c = rusqlite::Connection::open(&path).unwrap();
    let ok: String = c
        .query_row("pragma integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(ok, "ok");
    let rows: i64 = c
        .query_row("select count(*) from t", [], |r| r.get(0))
        .unwrap();
    assert!(
        rows >= 50,
        "rows committed to the WAL before the snapshot: {rows}"
    );
}

#[test]
fn progress_reads_as_status_text() {
    assert_eq!(
        Progress::restoring(12, 40).to_string(),
        "restoring (12 of 40 files)"
    );
    let up = Progress {
        stage: Stage::Uploading,
        done: 3 << 20,
        total: 12 << 20,
    };
    assert_eq!(up.to_string(), "uploading large files (3.0 of 12.0 MiB)");
}

#[test]
fn a_persister_can_be_shared_across_threads() {
    fn shareable<T: Send + Sync>() {}
    shareable::<Persister>();
}

#[test]
fn dates_parse_as_utc() {
    let table: &[(&str, Option<i64>)] = &[
        ("1970-01-01 00:00", Some(0)),
        ("1970-01-01", Some(86_399)),
        ("2000-02-29T00:00:00Z", Some(951_782_400)),
        ("2026-09-21 14:13:20 UTC", Some(1_790_000_000)),
        ("2026-13-01", None),
        ("2026-1-1", None),
        ("abc", None),
        ("2026-01-01 25:00", None),
        // Issue 12 item 7: was read as 3 March.
        ("2026-02-31", None),
        ("2026-02-29", None),
        ("2024-02-29", Some(1_709_251_199)),
        ("2026-04-31", None),
        ("2026-00-10", None),
        ("+026-01-01", None),
        ("2026-01-01 -1:00", None),
    ];
    for (input, want) in table {
        assert_eq!(parse_date(input), *want, "{input}");
        if let Some(secs) = want {
            if input.len() > 10 {
                assert!(snapshot::format_utc(*secs).starts_with(&input[..16].replace('T', " ")));
            }
        }
    }
}

#[test]
fn a_bad_at_says_what_is_wrong() {
    assert_eq!(at_arg("2026-01-31").as_deref(), Ok("2026-01-31"));
    assert_eq!(at_arg("abc1234").as_deref(), Ok("abc1234"));
    assert_eq!(
        at_arg("2026-02-31").unwrap_err(),
        "`2026-02-31` is not a date: month 2 of 2026 has 28 days; or give a snapshot id from `stackctl snapshots`"
    );
    assert!(at_arg("yesterday").unwrap_err().contains("is not a date"));
}

#[test]
fn counts_are_read_back_from_messages() {
    assert_eq!(
        parse_counts("snapshot 2026-01-01 00:00:00 UTC: 3 files, 42 bytes"),
        (Some(3), Some(42))
    );
    assert_eq!(parse_counts("auto: 2025-01-01 00:00:00"), (None, None));
}
