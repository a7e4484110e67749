//! Large files (issue 5): Git LFS pointers checked against the real
//! `git-lfs`, the `dir` store, the `lfs` store against a real giftless
//! server (with `git clone` + `git lfs pull` of the backup repository), and
//! `github-release` against an in-process *fake* of GitHub's REST endpoints
//! (GitHub itself cannot be reached from the tests).

use std::fs;
use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use stackctl::manifest::Persist;
use stackctl::persist::blob::github::GithubStore;
use stackctl::persist::blob::{self, BlobError, BlobStore, StoreConfig};
use stackctl::persist::pointer::Pointer;
use stackctl::persist::{PersistError, Persister, RestoreOptions, RestoreState};

use super::common_persist::{
    clone_without_lfs, git, noise, original_pointer_json, push_tree, quick, run, Dirs,
};

fn has_git_lfs() -> bool {
    let ok = Command::new("git")
        .args(["lfs", "version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        super::harness::skip("git-lfs is not installed (apt-get install git-lfs)");
    }
    ok
}

/// The shared temp root and remote; `data/sub` exists.
struct Setup(Dirs);

impl std::ops::Deref for Setup {
    type Target = Dirs;
    fn deref(&self) -> &Dirs {
        &self.0
    }
}

impl Setup {
    fn new() -> Self {
        let dirs = Dirs::new();
        fs::create_dir_all(dirs.data.join("sub")).unwrap();
        Self(dirs)
    }

    fn tree_path(&self, rel: &str) -> String {
        format!("{}/{rel}", self.data.strip_prefix("/").unwrap().display())
    }

    fn show(&self, rel: &str) -> Vec<u8> {
        run(
            &self.remote,
            "git",
            &["show", &format!("main:{}", self.tree_path(rel))],
        )
    }

    fn remote_head(&self) -> Option<String> {
        Command::new("git")
            .args(["rev-parse", "--verify", "-q", "refs/heads/main"])
            .current_dir(&self.remote)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    }

    /// Two large files (one with a space in its name, one a duplicate of the
    /// other's content) and a small one. Returns (name, bytes).
    fn populate(&self) -> Vec<(&'static str, Vec<u8>)> {
        let files = vec![
            ("big.bin", noise(3 << 20, 1)),
            ("sub/my file.bin", noise((1 << 20) + 17, 2)),
            ("sub/copy.bin", noise(3 << 20, 1)),
            ("small.txt", b"small".to_vec()),
        ];
        for (name, bytes) in &files {
            fs::write(self.data.join(name), bytes).unwrap();
        }
        files
    }
}

fn dir_store(s: &Setup) -> StoreConfig {
    StoreConfig::Dir(s.root.join("blobs"))
}

#[test]
fn large_files_become_pointers_identical_to_git_lfs_and_the_live_files_stay() {
    if !has_git_lfs() {
        return;
    }
    let s = Setup::new();
    let files = s.populate();
    let p = Persister::with_store(s.config("work"), quick(), &dir_store(&s)).unwrap();
    p.restore(&RestoreOptions::default()).unwrap();
    let rep = p.snapshot_and_push().unwrap();
    assert!(rep.pushed.is_some());
    assert_eq!((rep.large, rep.uploaded), (3, 2), "{rep:?}");
    assert!(rep.too_large.is_empty());
    for (name, bytes) in &files {
        let live = s.data.join(name);
        assert_eq!(&fs::read(&live).unwrap(), bytes, "live `{name}` untouched");
        let committed = s.show(name);
        if bytes.len() >= 1 << 20 {
            let want = run(
                &s.data,
                "git",
                &["lfs", "pointer", &format!("--file={}", live.display())],
            );
            assert_eq!(
                String::from_utf8_lossy(&committed),
                String::from_utf8_lossy(&want),
                "`{name}`"
            );
        } else {
            assert_eq!(&committed, bytes);
        }
    }
    let attrs = git(&s.remote, &["show", "main:.gitattributes"]);
    assert!(
        attrs.contains(&format!(
            "{} filter=lfs diff=lfs merge=lfs -text",
            s.tree_path("big.bin")
        )),
        "{attrs}"
    );
    assert!(
        attrs.contains(&format!(
            "{} filter=lfs diff=lfs merge=lfs -text",
            s.tree_path("sub/my[[:space:]]file.bin")
        )),
        "{attrs}"
    );
    // git itself agrees which paths are LFS files.
    let clone = clone_without_lfs(&s.root, &s.remote);
    let attr = git(
        &clone,
        &[
            "check-attr",
            "filter",
            "--",
            &s.tree_path("sub/my file.bin"),
        ],
    );
    assert!(attr.ends_with("filter: lfs"), "{attr}");
    let attr = git(
        &clone,
        &["check-attr", "filter", "--", &s.tree_path("small.txt")],
    );
    assert!(attr.ends_with("filter: unspecified"), "{attr}");

    // The blobs are in the store, content-addressed; nothing half-written.
    let big = blob::hash_file(&s.data.join("big.bin")).unwrap();
    let stored = s.root.join("blobs").join(&big.oid()[..2]).join(big.oid());
    assert_eq!(fs::read(stored).unwrap(), files[0].1);
    assert_eq!(fs::read_dir(s.root.join("blobs/tmp")).unwrap().count(), 0);

    // Unchanged: nothing new committed, nothing uploaded again.
    let again = p.snapshot_and_push().unwrap();
    assert_eq!((again.commit, again.uploaded), (None, 0), "{again:?}");
}

#[test]
fn the_dir_store_round_trips_and_present_files_are_not_downloaded_again() {
    let s = Setup::new();
    let files = s.populate();
    let p = Persister::with_store(s.config("work"), quick(), &dir_store(&s)).unwrap();
    p.restore(&RestoreOptions::default()).unwrap();
    p.snapshot_and_push().unwrap();
    drop(p);

    // A new container: data and workdir wiped.
    fs::remove_dir_all(&s.data).unwrap();
    let p = Persister::with_store(s.config("work2"), quick(), &dir_store(&s)).unwrap();
    let r = p.restore(&RestoreOptions::default()).unwrap();
    for (name, bytes) in &files {
        assert_eq!(&fs::read(s.data.join(name)).unwrap(), bytes, "`{name}`");
    }
    assert_eq!(r.applied.large_files, 3, "{:?}", r.applied);
    assert_eq!(
        r.applied.downloaded, 2,
        "the duplicate is copied, not downloaded"
    );
    let leftovers: Vec<_> = fs::read_dir(s.data.join("sub"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains("stackctl-tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    drop(p);

    // Restoring over files that already hold the right bytes downloads nothing.
    let p = Persister::with_store(s.config("work3"), quick(), &dir_store(&s)).unwrap();
    let r = p
        .restore(&RestoreOptions {
            force: true,
            ..RestoreOptions::default()
        })
        .unwrap();
    assert_eq!((r.applied.downloaded, r.applied.already_present), (0, 3));
}

/// A store whose uploads always fail (the network went away).
struct FailingStore;

impl BlobStore for FailingStore {
    fn describe(&self) -> String {
        "failing".into()
    }
    fn has(&self, _p: &Pointer) -> Result<bool, BlobError> {
        Ok(false)
    }
    fn put(&self, _p: &Pointer, _src: &Path) -> Result<(), BlobError> {
        Err(BlobError::Network {
            url: "http://store.invalid".into(),
            message: "connection refused".into(),
        })
    }
    fn get(&self, p: &Pointer, _out: &mut dyn Write) -> Result<(), BlobError> {
        Err(BlobError::Missing(*p))
    }
}

#[test]
fn a_failed_upload_commits_and_pushes_nothing() {
    let s = Setup::new();
    fs::write(s.data.join("small.txt"), "v1").unwrap();
    let p = Persister::with_store(s.config("work"), quick(), &dir_store(&s)).unwrap();
    p.restore(&RestoreOptions::default()).unwrap();
    p.snapshot_and_push().unwrap();
    let good = s.remote_head().unwrap();
    drop(p);

    fs::write(s.data.join("small.txt"), "v2").unwrap();
    fs::write(s.data.join("big.bin"), noise(2 << 20, 3)).unwrap();
    let p = Persister::with_blob_store(s.config("work"), quick(), Some(Arc::new(FailingStore)))
        .unwrap();
    p.restore(&RestoreOptions {
        keep_newer_local: true,
        ..RestoreOptions::default()
    })
    .unwrap();
    let e = p.snapshot_and_push().unwrap_err();
    assert!(matches!(e, PersistError::Blob { .. }), "{e}");
    assert!(e.is_retryable());
    assert!(
        e.to_string().contains("big.bin`")
            && e.to_string()
                .contains("this snapshot was not committed or pushed"),
        "{e}"
    );
    assert_eq!(s.remote_head().as_deref(), Some(good.as_str()));
    // Nor is it queued locally to go out later.
    assert!(p.push().unwrap().is_none());
    assert_eq!(s.remote_head().as_deref(), Some(good.as_str()));
    assert_eq!(p.status().pending, 0);
}

#[test]
fn a_corrupted_blob_is_refused_on_restore_and_reported_by_path() {
    let s = Setup::new();
    let files = s.populate();
    let p = Persister::with_store(s.config("work"), quick(), &dir_store(&s)).unwrap();
    p.restore(&RestoreOptions::default()).unwrap();
    p.snapshot_and_push().unwrap();
    drop(p);
    // Damage the blob of `sub/my file.bin` in the store (same size).
    let ptr = blob::hash_file(&s.data.join("sub/my file.bin")).unwrap();
    let stored = s.root.join("blobs").join(&ptr.oid()[..2]).join(ptr.oid());
    let mut bytes = fs::read(&stored).unwrap();
    bytes[1000] ^= 0xff;
    fs::write(&stored, bytes).unwrap();

    fs::remove_dir_all(&s.data).unwrap();
    let p = Persister::with_store(s.config("work2"), quick(), &dir_store(&s)).unwrap();
    // One corrupt blob does not keep the stack down (issue 17): the restore
    // completes without that file, and says so by path, in status too.
    let r = p.restore(&RestoreOptions::default()).unwrap();
    assert!(matches!(r.state, RestoreState::Restored(_)));
    let failed = &r.applied.failed;
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0].0, s.data.join("sub/my file.bin"));
    assert!(failed[0].1.contains("is corrupt"), "{failed:?}");
    let status = p.status();
    assert_eq!(status.unrestored.len(), 1);
    assert!(
        status.unrestored[0]
            .starts_with(&format!("{}: ", s.data.join("sub/my file.bin").display())),
        "{:?}",
        status.unrestored
    );
    assert!(!s.data.join("sub/my file.bin").exists());
    // The rest was restored.
    assert_eq!(fs::read(s.data.join("big.bin")).unwrap(), files[0].1);
    assert_eq!(fs::read(s.data.join("small.txt")).unwrap(), b"small");
    let names: Vec<_> = fs::read_dir(s.data.join("sub"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        !names.iter().any(|n| n.contains("stackctl-tmp")),
        "{names:?}"
    );
}

#[test]
fn the_originals_pointer_files_are_hydrated() {
    // The original committed `<file>.pointer` JSON and kept the bytes in a
    // release asset; here the blob sits in a dir store under its SHA-256.
    let s = Setup::new();
    let content = noise(200_000, 9);
    let src = s.root.join("asset");
    fs::write(&src, &content).unwrap();
    let ptr = blob::hash_file(&src).unwrap();
    blob::dir::DirStore::new(s.root.join("blobs"))
        .put(&ptr, &src)
        .unwrap();
    let clone = s.root.join("orig");
    git(
        &s.root,
        &["init", "-q", "-b", "main", clone.to_str().unwrap()],
    );
    let rel = s.data.strip_prefix("/").unwrap();
    fs::create_dir_all(clone.join(rel)).unwrap();
    let json = format!(
        r#"{{"type":"release-asset","repo":"o/r","release_tag":"blobs","asset_name":"{oid}-model.bin","asset_id":7,"download_url":"https://github.com/o/r/releases/download/blobs/{oid}-model.bin","original_path":"{path}","size":{size},"sha256":"{oid}","generated_at":"2025-01-01T00:00:00Z"}}"#,
        oid = ptr.oid(),
        path = s.data.join("model.bin").display(),
        size = ptr.size
    );
    fs::write(clone.join(rel).join("model.bin.pointer"), json).unwrap();
    git(&clone, &["add", "-A"]);
    git(&clone, &["commit", "-q", "-m", "auto: 2025-01-01 00:00:00"]);
    git(&clone, &["push", "-q", s.remote.to_str().unwrap(), "main"]);

    let p = Persister::with_store(s.config("work"), quick(), &dir_store(&s)).unwrap();
    let r = p.restore(&RestoreOptions::default()).unwrap();
    assert_eq!(fs::read(s.data.join("model.bin")).unwrap(), content);
    assert_eq!(r.applied.downloaded, 1);
    // Hydrated: the pointer leaves the live directory, and so the branch
    // at the next snapshot, which holds the file instead (issue 17).
    assert!(!s.data.join("model.bin.pointer").exists());
    p.snapshot_and_push().unwrap();
    let tree = git(
        &s.remote,
        &[
            "ls-tree",
            "--name-only",
            &format!("main:{}", s.tree_path("")),
        ],
    );
    assert_eq!(tree.lines().collect::<Vec<_>>(), ["model.bin", "sub"]);
}

#[test]
fn blobs_dropped_by_the_squash_are_collected_after_the_grace_period_and_kept_ones_never() {
    let s = Setup::new();
    let a = noise((1 << 20) + 5, 21);
    let b = noise((1 << 20) + 9, 22);
    fs::write(s.data.join("a.bin"), &a).unwrap();
    fs::write(s.data.join("b.bin"), &b).unwrap();
    let (pa, pb) = (
        blob::hash_reader(&a[..]).unwrap(),
        blob::hash_reader(&b[..]).unwrap(),
    );
    let store = blob::dir::DirStore::new(s.root.join("blobs"));
    let mut cfg = s.config("work");
    cfg.keep = 2;
    let mut n = 0;
    // Snapshots until one squashes (keep 2 + slack 1: the fourth commit).
    let mut until_squash = |p: &Persister| loop {
        n += 1;
        fs::write(s.data.join("small.txt"), format!("v{n}")).unwrap();
        let r = p.snapshot_and_push().unwrap();
        assert!(r.pushed.is_some());
        if r.squashed > 0 {
            return r;
        }
        assert!(n < 20, "no squash happened");
    };

    // Default grace (7 days): the squash leaves `b` unreferenced, it stays.
    let p = Persister::with_store(cfg.clone(), quick(), &dir_store(&s)).unwrap();
    p.restore(&RestoreOptions::default()).unwrap();
    p.snapshot_and_push().unwrap();
    assert!(store.has(&pa).unwrap() && store.has(&pb).unwrap());
    fs::remove_file(s.data.join("b.bin")).unwrap();
    let r = until_squash(&p);
    assert_eq!(r.blobs_collected, 0);
    assert!(store.has(&pa).unwrap() && store.has(&pb).unwrap());
    // The kept history no longer refers to `b`.
    let log = git(&s.remote, &["log", "--format=%H", "main"]);
    assert_eq!(log.lines().count(), 2, "{log}");
    drop(p);

    // Zero grace: the next squash deletes exactly `b`, never `a`.
    let p = Persister::with_store(cfg.clone(), quick(), &dir_store(&s))
        .unwrap()
        .with_blob_gc_grace(Duration::ZERO);
    p.restore(&RestoreOptions {
        force: true,
        ..RestoreOptions::default()
    })
    .unwrap();
    let r = until_squash(&p);
    assert_eq!(r.blobs_collected, 1);
    assert!(store.has(&pa).unwrap(), "a kept snapshot refers to `a`");
    assert!(!store.has(&pb).unwrap(), "no kept snapshot refers to `b`");
    let listed: Vec<_> = store
        .list()
        .unwrap()
        .unwrap()
        .iter()
        .map(|x| x.sha256)
        .collect();
    assert_eq!(listed, vec![pa.sha256]);
    // Nothing left to collect: a referenced blob survives any number of squashes.
    let r = until_squash(&p);
    assert_eq!(r.blobs_collected, 0);
    assert!(store.has(&pa).unwrap());
    drop(p);

    // Restore from scratch still works.
    fs::remove_dir_all(&s.data).unwrap();
    let p = Persister::with_store(s.config("work3"), quick(), &dir_store(&s)).unwrap();
    let r = p.restore(&RestoreOptions::default()).unwrap();
    assert_eq!(fs::read(s.data.join("a.bin")).unwrap(), a);
    assert!(!s.data.join("b.bin").exists());
    assert_eq!(r.applied.downloaded, 1);
}

/// A blob this instance remembers as stored may have been collected by the
/// instance that held the write lease meanwhile: a snapshot taken without
/// the lease asks the store instead of its memory, and uploads again what
/// is gone, so a parked snapshot never points at a deleted blob.
#[test]
fn a_snapshot_taken_without_the_lease_uploads_again_what_the_holder_collected() {
    let s = Setup::new();
    let x = noise((1 << 20) + 3, 31);
    let px = blob::hash_reader(&x[..]).unwrap();
    let store = blob::dir::DirStore::new(s.root.join("blobs"));
    let persister = |name: &str| {
        let mut cfg = s.config(&format!("work-{name}"));
        cfg.keep = 1;
        let tuning = stackctl::persist::Tuning {
            instance: name.into(),
            lease_ttl: Duration::from_secs(600),
            ..quick()
        };
        Persister::with_store(cfg, tuning, &dir_store(&s)).unwrap()
    };
    // `p` stores `x` (and remembers it), then gives the lease up.
    fs::write(s.data.join("x.bin"), &x).unwrap();
    let p = persister("p");
    p.restore(&RestoreOptions::default()).unwrap();
    assert!(p.snapshot_and_push().unwrap().pushed.is_some());
    fs::write(s.data.join("small.txt"), "p").unwrap();
    assert!(p.snapshot_and_push().unwrap().pushed.is_some());
    assert!(store.has(&px).unwrap());
    p.release_lease().unwrap();
    // `h` takes the lease, deletes `x`, squashes it out of the history and
    // collects its blob.
    let h = persister("h").with_blob_gc_grace(Duration::ZERO);
    h.restore(&RestoreOptions {
        force: true,
        ..RestoreOptions::default()
    })
    .unwrap();
    fs::remove_file(s.data.join("x.bin")).unwrap();
    let mut n = 0;
    while store.has(&px).unwrap() {
        n += 1;
        assert!(n < 20, "`h` never collected `x`");
        fs::write(s.data.join("small.txt"), format!("h{n}")).unwrap();
        assert!(h.snapshot_and_push().unwrap().pushed.is_some());
    }
    // `p` writes `x`'s bytes again, under a new name: its next snapshot is
    // parked for `h`, and the blob it points at is in the store again.
    fs::write(s.data.join("y.bin"), &x).unwrap();
    fs::write(s.data.join("small.txt"), "p again").unwrap();
    let r = p.snapshot_and_push().unwrap();
    assert!(r.parked.is_some(), "{r:?}");
    assert!(
        store.has(&px).unwrap(),
        "the parked snapshot points at a deleted blob"
    );
    // And `h` folds it in: restored anywhere, the file is whole.
    fs::write(s.data.join("small.txt"), "h last").unwrap();
    h.snapshot_and_push().unwrap();
    fs::remove_dir_all(&s.data).unwrap();
    let fresh = persister("fresh");
    fresh.restore(&RestoreOptions::default()).unwrap();
    assert_eq!(fs::read(s.data.join("y.bin")).unwrap(), x);
}

/// A giftless LFS server on loopback (see `.ci/run` for its venv).
struct Giftless {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Giftless {
    fn venv() -> PathBuf {
        std::env::var_os("GIFTLESS_VENV")
            .map(PathBuf::from)
            .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/giftless-venv"))
    }

    fn start() -> Option<Giftless> {
        let flask = Self::venv().join("bin/flask");
        if !flask.exists() {
            super::harness::skip(&format!(
                "giftless not found at {} (set GIFTLESS_VENV; see .ci/run)",
                flask.display()
            ));
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let storage = dir.path().join("objects");
        fs::create_dir_all(&storage).unwrap();
        let cfg = dir.path().join("giftless.yaml");
        fs::write(
            &cfg,
            format!(
                "AUTH_PROVIDERS: [\"giftless.auth.allow_anon:read_write\"]\nTRANSFER_ADAPTERS:\n  basic:\n    factory: giftless.transfer.basic_streaming:factory\n    options:\n      storage_class: giftless.storage.local_storage:LocalStorage\n      storage_options: {{ path: {} }}\n",
                storage.display()
            ),
        )
        .unwrap();
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(&flask)
            .args([
                "--app",
                "giftless.wsgi_entrypoint",
                "run",
                "-h",
                "127.0.0.1",
                "-p",
                &port.to_string(),
            ])
            .env("GIFTLESS_CONFIG_FILE", &cfg)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let g = Giftless {
            child,
            port,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "giftless did not start on {port}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Some(g)
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/org/repo", self.port)
    }
}

impl Drop for Giftless {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn the_lfs_store_works_with_giftless_and_git_lfs_pull_gives_the_bytes_back() {
    if !has_git_lfs() {
        return;
    }
    let Some(server) = Giftless::start() else {
        return;
    };
    let s = Setup::new();
    let files = s.populate();
    let store = StoreConfig::Lfs { url: server.url() };
    let p = Persister::with_store(s.config("work"), quick(), &store).unwrap();
    p.restore(&RestoreOptions::default()).unwrap();
    let rep = p.snapshot_and_push().unwrap();
    assert_eq!(rep.uploaded, 2, "{rep:?}");
    drop(p);

    // A plain git + git-lfs user gets the bytes back from the backup repository.
    let clone = clone_without_lfs(&s.root, &s.remote);
    let lfsconfig = fs::read_to_string(clone.join(".lfsconfig")).unwrap();
    assert!(lfsconfig.contains(&server.url()), "{lfsconfig}");
    git(&clone, &["lfs", "install", "--local"]);
    git(&clone, &["lfs", "pull"]);
    let rel = s.data.strip_prefix("/").unwrap();
    for (name, bytes) in &files {
        assert_eq!(
            &fs::read(clone.join(rel).join(name)).unwrap(),
            bytes,
            "`{name}` after git lfs pull"
        );
    }

    // And stackctl restores from it into a wiped container.
    fs::remove_dir_all(&s.data).unwrap();
    let p = Persister::with_store(s.config("work2"), quick(), &store).unwrap();
    let r = p.restore(&RestoreOptions::default()).unwrap();
    assert_eq!(r.applied.downloaded, 2);
    for (name, bytes) in &files {
        assert_eq!(&fs::read(s.data.join(name)).unwrap(), bytes, "`{name}`");
    }
}

/// Issue 17 item 7: an LFS endpoint with `user:TOKEN@` is refused before
/// anything is written (it went into `.lfsconfig`, which is pushed).
#[test]
fn credentials_in_the_lfs_url_are_refused_and_never_written() {
    let s = Setup::new();
    fs::write(s.data.join("small.txt"), "v1").unwrap();
    let store = StoreConfig::Lfs {
        url: "http://x-access-token:ghp_LfsUrlToken5@127.0.0.1:9/org/repo".into(),
    };
    let e = match Persister::with_store(s.config("work"), quick(), &store) {
        Ok(p) => {
            let _ = p.restore(&RestoreOptions::default());
            let _ = p.snapshot_and_push();
            let lfsconfig = Command::new("git")
                .arg("-C")
                .arg(&s.remote)
                .args(["show", "main:.lfsconfig"])
                .output()
                .unwrap();
            panic!(
                "accepted; the remote's .lfsconfig: {}",
                String::from_utf8_lossy(&lfsconfig.stdout)
            );
        }
        Err(e) => e.to_string(),
    };
    assert!(e.contains("holds credentials"), "{e}");
    assert!(!e.contains("ghp_LfsUrlToken5"), "{e}");
}

#[test]
fn an_lfs_server_that_is_down_fails_the_snapshot_without_pushing() {
    let s = Setup::new();
    fs::write(s.data.join("small.txt"), "v1").unwrap();
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let store = StoreConfig::Lfs {
        url: format!("http://127.0.0.1:{port}/org/repo"),
    };
    let p = Persister::with_store(s.config("work"), quick(), &store).unwrap();
    p.restore(&RestoreOptions::default()).unwrap();
    p.snapshot_and_push().unwrap();
    let good = s.remote_head().unwrap();
    fs::write(s.data.join("big.bin"), noise(1 << 20, 4)).unwrap();
    let e = p.snapshot_and_push().unwrap_err();
    assert!(e.to_string().contains("cannot reach"), "{e}");
    assert_eq!(s.remote_head(), Some(good));
}

/// A *fake* of the GitHub REST endpoints the `github-release` store uses,
/// reproducing GitHub's documented behaviour and quirks: private repository
/// (404 without the token), paginated asset lists (default 30, at most 100
/// per page, `Link: rel="next"`), uploads on a separate upload URL,
/// `422 already_exists`, a 502 that leaves a `starter` asset, 429 with
/// `Retry-After`, the `digest`, `created_at` and `updated_at` fields, and
/// downloads answered by a 302 to another host that refuses requests
/// carrying `Authorization` (as S3 does). Its limits are GitHub's unless a
/// test lowers them ([`State::cap`], [`State::max_size`]): 1000 assets per
/// release and assets up to 2 GiB, an upload beyond either refused with a
/// `422 Validation Failed` whose error names the field (`file_count`,
/// `size`), as GitHub answers (seen in public bug reports; GitHub's
/// documentation states the limits but not the answer).
mod fake_github {
    use super::*;
    use crate::fake_http::{read_req, respond, Req};
    use sha2::{Digest, Sha256};

    use std::net::TcpStream;

    #[derive(Clone)]
    pub struct Asset {
        pub id: u64,
        pub name: String,
        pub state: String,
        pub bytes: Vec<u8>,
        /// Seconds since the epoch (`created_at`, `updated_at`).
        pub created: i64,
    }

    fn unix_now() -> i64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64
    }

    /// `2024-01-02T03:04:05Z`, as GitHub writes times (whole seconds).
    fn github_time(secs: i64) -> String {
        let t = stackctl::supervisor::logs::rfc3339(UNIX_EPOCH + Duration::from_secs(secs as u64));
        format!("{}Z", &t[..19])
    }

    pub struct Release {
        pub id: u64,
        pub tag: String,
        pub assets: Vec<Asset>,
    }

    #[derive(Default)]
    pub struct State {
        pub releases: Vec<Release>,
        pub next_id: u64,
        /// Unrelated assets put into every new release first.
        pub filler: usize,
        /// Upload requests seen.
        pub uploads: usize,
        /// Quirks by upload number (1-based): "429", "502", "exists".
        pub quirks: Vec<(usize, &'static str)>,
        /// Assets per release (GitHub: 1000).
        pub cap: usize,
        /// Largest asset in bytes (GitHub: 2 GiB).
        pub max_size: u64,
        /// Uploads refused for a limit, by the field GitHub names.
        pub refused: Vec<&'static str>,
        /// Requests that reached the download host with `Authorization`.
        pub leaked_auth: usize,
        pub log: Vec<String>,
    }

    pub struct Fake {
        pub state: Arc<Mutex<State>>,
        pub api: String,
    }

    fn asset_json(a: &Asset) -> serde_json::Value {
        serde_json::json!({
            "id": a.id, "name": a.name, "size": a.bytes.len(), "state": a.state,
            "digest": format!("sha256:{}", hex::encode(Sha256::digest(&a.bytes))),
            "content_type": "application/octet-stream",
            "created_at": github_time(a.created), "updated_at": github_time(a.created),
        })
    }

    impl State {
        /// Every asset, with its release's tag.
        pub fn assets(&self) -> impl Iterator<Item = (&str, &Asset)> {
            self.releases
                .iter()
                .flat_map(|r| r.assets.iter().map(move |a| (r.tag.as_str(), a)))
        }

        /// Make the assets `pick` chooses look `age` old.
        pub fn backdate(&mut self, age: Duration, pick: impl Fn(&Asset) -> bool) {
            let then = unix_now() - age.as_secs() as i64;
            for r in &mut self.releases {
                for a in r.assets.iter_mut().filter(|a| pick(a)) {
                    a.created = then;
                }
            }
        }
    }

    fn json(stream: TcpStream, status: u16, v: serde_json::Value, extra: &[(&str, String)]) {
        let mut h = vec![("Content-Type", "application/json".to_string())];
        h.extend(extra.iter().cloned());
        respond(stream, status, &h, v.to_string().as_bytes());
    }

    impl Fake {
        pub fn start(token: &str, filler: usize, quirks: Vec<(usize, &'static str)>) -> Fake {
            let api = TcpListener::bind("127.0.0.1:0").unwrap();
            let dl = TcpListener::bind("127.0.0.1:0").unwrap();
            let api_port = api.local_addr().unwrap().port();
            let dl_port = dl.local_addr().unwrap().port();
            let state = Arc::new(Mutex::new(State {
                next_id: 1,
                filler,
                quirks,
                cap: 1000,
                max_size: 2 << 30,
                ..State::default()
            }));
            let st = state.clone();
            let token = format!("Bearer {token}");
            std::thread::spawn(move || {
                for stream in api.incoming().flatten() {
                    let st = st.clone();
                    let token = token.clone();
                    std::thread::spawn(move || {
                        if let Some(req) = read_req(&stream) {
                            api_handle(&st, &token, api_port, dl_port, stream, req);
                        }
                    });
                }
            });
            let st = state.clone();
            std::thread::spawn(move || {
                for stream in dl.incoming().flatten() {
                    let Some(req) = read_req(&stream) else {
                        continue;
                    };
                    let mut s = st.lock().unwrap();
                    if req.header("authorization").is_some() {
                        s.leaked_auth += 1;
                        drop(s);
                        respond(stream, 400, &[], b"Only one auth mechanism allowed");
                        continue;
                    }
                    let id: u64 = req.path.trim_start_matches("/blob/").parse().unwrap_or(0);
                    let bytes = s
                        .releases
                        .iter()
                        .flat_map(|r| &r.assets)
                        .find(|a| a.id == id)
                        .map(|a| a.bytes.clone());
                    drop(s);
                    match bytes {
                        Some(b) => respond(stream, 200, &[], &b),
                        None => respond(stream, 404, &[], b""),
                    }
                }
            });
            Fake {
                state,
                api: format!("http://127.0.0.1:{api_port}"),
            }
        }
    }

    fn api_handle(
        st: &Mutex<State>,
        token: &str,
        api_port: u16,
        dl_port: u16,
        stream: TcpStream,
        req: Req,
    ) {
        let mut s = st.lock().unwrap();
        s.log
            .push(format!("{} {}?{}", req.method, req.path, req.query));
        // A private repository: without the token it does not exist.
        if req.header("authorization") != Some(token) {
            drop(s);
            return json(
                stream,
                404,
                serde_json::json!({"message": "Not Found"}),
                &[],
            );
        }
        let parts: Vec<&str> = req.path.trim_start_matches('/').split('/').collect();
        let release_json = |r: &Release| {
            serde_json::json!({
                "id": r.id, "tag_name": r.tag,
                "upload_url": format!("http://127.0.0.1:{api_port}/upload/repos/o/r/releases/{}/assets{{?name,label}}", r.id),
            })
        };
        match (req.method.as_str(), parts.as_slice()) {
            ("GET", ["repos", "o", "r", "releases", "tags", tag]) => {
                match s.releases.iter().find(|r| r.tag == *tag) {
                    Some(r) => {
                        let v = release_json(r);
                        drop(s);
                        json(stream, 200, v, &[])
                    }
                    None => {
                        drop(s);
                        json(
                            stream,
                            404,
                            serde_json::json!({"message": "Not Found"}),
                            &[],
                        )
                    }
                }
            }
            ("POST", ["repos", "o", "r", "releases"]) => {
                let body: serde_json::Value = serde_json::from_slice(&req.body).unwrap_or_default();
                let tag = body["tag_name"].as_str().unwrap_or_default().to_string();
                if s.releases.iter().any(|r| r.tag == tag) {
                    drop(s);
                    return json(
                        stream,
                        422,
                        serde_json::json!({"message": "Validation Failed", "errors": [{"resource": "Release", "code": "already_exists", "field": "tag_name"}]}),
                        &[],
                    );
                }
                let id = s.next_id;
                s.next_id += 1;
                let mut assets = Vec::new();
                for i in 0..s.filler {
                    assets.push(Asset {
                        id: s.next_id + i as u64,
                        name: format!("filler-{i}"),
                        state: "uploaded".into(),
                        bytes: vec![1],
                        created: unix_now(),
                    });
                }
                s.next_id += s.filler as u64;
                s.releases.push(Release { id, tag, assets });
                let v = release_json(s.releases.last().unwrap());
                drop(s);
                json(stream, 201, v, &[])
            }
            ("GET", ["repos", "o", "r", "releases", rid, "assets"]) => {
                let rid: u64 = rid.parse().unwrap_or(0);
                let per_page: usize = req
                    .param("per_page")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(30)
                    .min(100);
                let page: usize = req.param("page").and_then(|v| v.parse().ok()).unwrap_or(1);
                let Some(r) = s.releases.iter().find(|r| r.id == rid) else {
                    drop(s);
                    return json(
                        stream,
                        404,
                        serde_json::json!({"message": "Not Found"}),
                        &[],
                    );
                };
                let items: Vec<_> = r
                    .assets
                    .iter()
                    .skip((page - 1) * per_page)
                    .take(per_page)
                    .map(asset_json)
                    .collect();
                let more = r.assets.len() > page * per_page;
                drop(s);
                let link = if more {
                    vec![("Link", format!("<http://127.0.0.1:{api_port}/repos/o/r/releases/{rid}/assets?per_page={per_page}&page={}>; rel=\"next\"", page + 1))]
                } else {
                    vec![]
                };
                json(stream, 200, serde_json::Value::Array(items), &link)
            }
            ("POST", ["upload", "repos", "o", "r", "releases", rid, "assets"]) => {
                let rid: u64 = rid.parse().unwrap_or(0);
                let name = req.param("name").unwrap_or_default().to_string();
                s.uploads += 1;
                let n = s.uploads;
                let quirk = s.quirks.iter().find(|(k, _)| *k == n).map(|(_, q)| *q);
                let id = s.next_id;
                s.next_id += 1;
                let (cap, max_size) = (s.cap, s.max_size);
                let Some(r) = s.releases.iter_mut().find(|r| r.id == rid) else {
                    drop(s);
                    return json(
                        stream,
                        404,
                        serde_json::json!({"message": "Not Found"}),
                        &[],
                    );
                };
                match quirk {
                    Some("429") => {
                        drop(s);
                        return json(
                            stream,
                            429,
                            serde_json::json!({"message": "secondary rate limit"}),
                            &[("Retry-After", "1".into())],
                        );
                    }
                    Some("502") => {
                        let half = req.body[..req.body.len() / 2].to_vec();
                        r.assets.push(Asset {
                            id,
                            name,
                            state: "starter".into(),
                            bytes: half,
                            created: unix_now(),
                        });
                        drop(s);
                        return json(
                            stream,
                            502,
                            serde_json::json!({"message": "Bad Gateway"}),
                            &[],
                        );
                    }
                    Some("exists") => {
                        // Another writer stored it just before us.
                        r.assets.push(Asset {
                            id,
                            name: name.clone(),
                            state: "uploaded".into(),
                            bytes: req.body.clone(),
                            created: unix_now(),
                        });
                    }
                    _ => {}
                }
                if r.assets.iter().any(|a| a.name == name) {
                    drop(s);
                    return json(
                        stream,
                        422,
                        serde_json::json!({"message": "Validation Failed", "errors": [{"resource": "ReleaseAsset", "code": "already_exists", "field": "name"}]}),
                        &[],
                    );
                }
                // GitHub's limits; every asset counts, half-uploaded ones too.
                let full = r.assets.len() >= cap;
                let too_big = req.body.len() as u64 > max_size;
                if full || too_big {
                    let (field, message) = if full {
                        ("file_count", format!("file_count limited to {cap} assets"))
                    } else {
                        (
                            "size",
                            format!("size must be less than or equal to {max_size}"),
                        )
                    };
                    s.refused.push(field);
                    drop(s);
                    return json(
                        stream,
                        422,
                        serde_json::json!({"message": "Validation Failed", "errors": [{"resource": "ReleaseAsset", "code": "custom", "field": field, "message": message}]}),
                        &[],
                    );
                }
                let a = Asset {
                    id,
                    name,
                    state: "uploaded".into(),
                    bytes: req.body,
                    created: unix_now(),
                };
                let v = asset_json(&a);
                r.assets.push(a);
                drop(s);
                json(stream, 201, v, &[])
            }
            ("DELETE", ["repos", "o", "r", "releases", "assets", id]) => {
                let id: u64 = id.parse().unwrap_or(0);
                for r in &mut s.releases {
                    r.assets.retain(|a| a.id != id);
                }
                drop(s);
                respond(stream, 204, &[], b"");
            }
            ("GET", ["repos", "o", "r", "releases", "assets", id]) => {
                let id: u64 = id.parse().unwrap_or(0);
                let a = s
                    .releases
                    .iter()
                    .flat_map(|r| &r.assets)
                    .find(|a| a.id == id)
                    .cloned();
                drop(s);
                match a {
                    None => json(
                        stream,
                        404,
                        serde_json::json!({"message": "Not Found"}),
                        &[],
                    ),
                    Some(_) if req.header("accept") == Some("application/octet-stream") => respond(
                        stream,
                        302,
                        &[("Location", format!("http://127.0.0.1:{dl_port}/blob/{id}"))],
                        b"",
                    ),
                    Some(a) => json(stream, 200, asset_json(&a), &[]),
                }
            }
            _ => {
                drop(s);
                json(
                    stream,
                    404,
                    serde_json::json!({"message": "Not Found"}),
                    &[],
                )
            }
        }
    }
}

#[test]
fn the_github_release_store_survives_githubs_quirks_against_a_fake() {
    let s = Setup::new();
    let files = s.populate();
    // Upload 1: rate limited; 2: 502 leaving a starter asset; 3: succeeds;
    // 4: someone else stored it meanwhile (422 already_exists).
    let fake = fake_github::Fake::start("tok", 150, vec![(1, "429"), (2, "502"), (4, "exists")]);
    let store = StoreConfig::GithubRelease {
        repo: "o/r".into(),
        tag: "blobs".into(),
        api: fake.api.clone(),
    };
    let mut cfg = s.config("work");
    cfg.token = Some("tok".into());
    let p = Persister::with_store(cfg.clone(), quick(), &store).unwrap();
    p.restore(&RestoreOptions::default()).unwrap();
    let rep = p.snapshot_and_push().unwrap();
    assert_eq!(rep.uploaded, 2, "{rep:?}");
    {
        let st = fake.state.lock().unwrap();
        assert_eq!(st.releases.len(), 1);
        let ours: Vec<_> = st.releases[0]
            .assets
            .iter()
            .filter(|a| !a.name.starts_with("filler"))
            .collect();
        assert_eq!(
            ours.len(),
            2,
            "{:?}",
            ours.iter().map(|a| (&a.name, &a.state)).collect::<Vec<_>>()
        );
        assert!(ours
            .iter()
            .all(|a| a.state == "uploaded" && a.name.len() == 64));
    }
    // The release hangs on an orphan anchor tag, not on the data branch.
    let anchor = git(&s.remote, &["rev-list", "--count", "refs/tags/blobs"]);
    assert_eq!(anchor, "1");
    let tree = git(&s.remote, &["ls-tree", "--name-only", "refs/tags/blobs"]);
    assert_eq!(tree, "README");
    drop(p);

    // A new container: the asset list is paged (150 fillers come first).
    fs::remove_dir_all(&s.data).unwrap();
    cfg.workdir = s.root.join("work2");
    let p = Persister::with_store(cfg, quick(), &store).unwrap();
    let r = p.restore(&RestoreOptions::default()).unwrap();
    assert_eq!(r.applied.downloaded, 2);
    for (name, bytes) in &files {
        assert_eq!(&fs::read(s.data.join(name)).unwrap(), bytes, "`{name}`");
    }
    let st = fake.state.lock().unwrap();
    assert_eq!(st.leaked_auth, 0, "Authorization followed the redirect");
    assert!(
        st.log.iter().any(|l| l.contains("per_page=100&page=2")),
        "{:?}",
        st.log
    );
}

/// Issue 17: the original wrote `"asset_id": null` when an upload failed or
/// for assets past the first 30 it listed. Such a pointer is resolved by
/// its asset name in the release (every page of it); one whose asset
/// really is not there is named, and its pointer file stays.
#[test]
fn original_pointers_without_an_asset_id_are_found_by_name_or_named_missing() {
    let s = Setup::new();
    let content = noise(300_000, 11);
    let oid = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&content));
    let fake = fake_github::Fake::start("tok", 0, vec![]);
    {
        let mut st = fake.state.lock().unwrap();
        // 150 assets before it: it is on the second page.
        let mut assets: Vec<_> = (0..150)
            .map(|i| fake_github::Asset {
                id: 1000 + i,
                name: format!("filler-{i}"),
                state: "uploaded".into(),
                bytes: b"x".to_vec(),
                created: 0,
            })
            .collect();
        assets.push(fake_github::Asset {
            id: 9001,
            name: format!("{oid}-model.bin"),
            state: "uploaded".into(),
            bytes: content.clone(),
            created: 0,
        });
        st.releases.push(fake_github::Release {
            id: 77,
            tag: "blobs".into(),
            assets,
        });
        st.next_id = 10_000;
    }
    let lost = "ef".repeat(32);
    let lost_json = original_pointer_json(&lost, 5, None).replace("-model.bin", "-lost.bin");
    push_tree(
        &s.root,
        &s.remote,
        &s.data,
        "orig",
        &[
            (
                "model.bin.pointer",
                original_pointer_json(&oid, content.len() as u64, None).into_bytes(),
            ),
            ("lost.bin.pointer", lost_json.into_bytes()),
        ],
    );
    let anchors = Arc::new(Mutex::new(Vec::new()));
    let store = limited_github_store(&fake, 1000, 2 << 30, &anchors);
    let p = github_persister(s.config("work"), &store);
    let r = p.restore(&RestoreOptions::default()).unwrap();
    assert_eq!(fs::read(s.data.join("model.bin")).unwrap(), content);
    assert!(!s.data.join("model.bin.pointer").exists());
    assert_eq!(
        r.applied.failed,
        [(
            s.data.join("lost.bin"),
            format!("the release `blobs` of `o/r` has no asset `{lost}-lost.bin` (the original's pointer names no asset id: its upload had failed); restore an older snapshot")
        )]
    );
    assert!(!s.data.join("lost.bin").exists());
    assert!(
        s.data.join("lost.bin.pointer").exists(),
        "kept: still referred to"
    );
}

/// A `github-release` store on `fake` with GitHub's limits lowered to
/// `max_assets` per release and parts for blobs of `max_asset_size` or more
/// (the store's test-only knob). Its anchor records the tags it is asked
/// to push: the fake does not look at tags, and the real anchor (an orphan
/// tag pushed to the remote) is exercised through `Persister::with_store`
/// in the quirks test above.
fn limited_github_store(
    fake: &fake_github::Fake,
    max_assets: usize,
    max_asset_size: u64,
    anchors: &Arc<Mutex<Vec<String>>>,
) -> Arc<GithubStore> {
    let anchors = anchors.clone();
    Arc::new(
        GithubStore::new(&fake.api, "o/r", "blobs", Some("tok".into()))
            .unwrap()
            .with_lower_limits(max_assets, max_asset_size)
            .with_anchor(Box::new(move |tag: &str| {
                anchors.lock().unwrap().push(tag.to_string());
                Ok(())
            })),
    )
}

fn github_persister(cfg: Persist, store: &Arc<GithubStore>) -> Persister {
    let mut cfg = cfg;
    cfg.token = Some("tok".into());
    Persister::with_blob_store(cfg, quick(), Some(store.clone() as Arc<dyn BlobStore>)).unwrap()
}

/// The releases of the fake: (tag, assets in it).
fn shards(fake: &fake_github::Fake) -> Vec<(String, usize)> {
    let st = fake.state.lock().unwrap();
    st.releases
        .iter()
        .map(|r| (r.tag.clone(), r.assets.len()))
        .collect()
}

#[test]
fn the_github_release_store_shards_releases_at_the_asset_cap_and_finds_blobs_in_any() {
    let s = Setup::new();
    let fake = fake_github::Fake::start("tok", 0, vec![]);
    fake.state.lock().unwrap().cap = 3;
    let anchors = Arc::new(Mutex::new(Vec::new()));
    let large = |i: usize| {
        (
            format!("f{i}.bin"),
            noise((1 << 20) + 7 * i, 100 + i as u64),
        )
    };
    let mut files: Vec<_> = (0..7).map(large).collect();
    for (name, bytes) in &files {
        fs::write(s.data.join(name), bytes).unwrap();
    }
    fs::write(s.data.join("small.txt"), "v1").unwrap();
    let oids = |files: &[(String, Vec<u8>)]| {
        let mut v: Vec<String> = files
            .iter()
            .map(|(_, b)| blob::hash_reader(&b[..]).unwrap().oid())
            .collect();
        v.sort();
        v
    };
    let asset_names = || {
        let st = fake.state.lock().unwrap();
        let mut v: Vec<String> = st.assets().map(|(_, a)| a.name.clone()).collect();
        v.sort();
        v
    };

    // Cap 3 on both sides: the store opens a new release before GitHub
    // would refuse an upload.
    let store = limited_github_store(&fake, 3, blob::github::MAX_ASSET_SIZE, &anchors);
    let p = github_persister(s.config("work"), &store);
    p.restore(&RestoreOptions::default()).unwrap();
    let rep = p.snapshot_and_push().unwrap();
    assert_eq!(rep.uploaded, 7, "{rep:?}");
    assert_eq!(
        shards(&fake),
        [("blobs", 3), ("blobs-2", 3), ("blobs-3", 1)].map(|(t, n)| (t.to_string(), n))
    );
    assert_eq!(*anchors.lock().unwrap(), ["blobs", "blobs-2", "blobs-3"]);
    assert!(fake.state.lock().unwrap().refused.is_empty());
    assert_eq!(
        asset_names(),
        oids(&files),
        "each blob once, by its SHA-256"
    );
    drop(p);

    // A new container: wiped disk and workdir, a store that knows nothing yet.
    fs::remove_dir_all(&s.data).unwrap();
    let store = limited_github_store(&fake, 3, blob::github::MAX_ASSET_SIZE, &anchors);
    let p = github_persister(s.config("work2"), &store);
    let r = p.restore(&RestoreOptions::default()).unwrap();
    assert_eq!(r.applied.downloaded, 7, "{:?}", r.applied);
    for (name, bytes) in &files {
        assert_eq!(&fs::read(s.data.join(name)).unwrap(), bytes, "`{name}`");
    }
    // The next backup finds every blob, whichever shard holds it.
    let uploads = fake.state.lock().unwrap().uploads;
    fs::write(s.data.join("small.txt"), "v2").unwrap();
    let rep = p.snapshot_and_push().unwrap();
    assert!(rep.pushed.is_some());
    assert_eq!((rep.large, rep.uploaded), (7, 0), "{rep:?}");
    assert_eq!(fake.state.lock().unwrap().uploads, uploads);
    drop(p);

    // GitHub's cap below the store's (here the store keeps GitHub's 1000):
    // one refused upload (`file_count`) teaches it the cap, and it shards.
    let store = limited_github_store(&fake, usize::MAX, blob::github::MAX_ASSET_SIZE, &anchors);
    let p = github_persister(s.config("work3"), &store);
    p.restore(&RestoreOptions {
        force: true,
        ..RestoreOptions::default()
    })
    .unwrap();
    for i in 7..10 {
        let f = large(i);
        fs::write(s.data.join(&f.0), &f.1).unwrap();
        files.push(f);
    }
    let rep = p.snapshot_and_push().unwrap();
    assert_eq!(rep.uploaded, 3, "{rep:?}");
    assert_eq!(fake.state.lock().unwrap().refused, ["file_count"]);
    assert_eq!(
        shards(&fake),
        [("blobs", 3), ("blobs-2", 3), ("blobs-3", 3), ("blobs-4", 1)]
            .map(|(t, n)| (t.to_string(), n))
    );
    assert_eq!(asset_names(), oids(&files));
    assert_eq!(anchors.lock().unwrap().last().unwrap(), "blobs-4");
    drop(p);

    fs::remove_dir_all(&s.data).unwrap();
    let store = limited_github_store(&fake, 3, blob::github::MAX_ASSET_SIZE, &anchors);
    let p = github_persister(s.config("work4"), &store);
    let r = p.restore(&RestoreOptions::default()).unwrap();
    assert_eq!(r.applied.downloaded, 10);
    for (name, bytes) in &files {
        assert_eq!(&fs::read(s.data.join(name)).unwrap(), bytes, "`{name}`");
    }
}

#[test]
fn github_release_files_over_the_asset_limit_go_as_parts_and_a_lost_part_is_sent_again() {
    let s = Setup::new();
    let fake = fake_github::Fake::start("tok", 0, vec![]);
    // The store splits blobs of 2 MiB or more into parts of at most 1 MiB;
    // the fake refuses any asset of 2 MiB or more (GitHub: 2 GiB).
    let limit = 2u64 << 20;
    fake.state.lock().unwrap().max_size = limit - 1;
    let anchors = Arc::new(Mutex::new(Vec::new()));
    let files = [
        ("big.bin", noise((3 << 20) + 5, 41)),
        ("exact.bin", noise(2 << 20, 42)),
        ("whole.bin", noise((1 << 20) + 1, 43)),
    ];
    for (name, bytes) in &files {
        fs::write(s.data.join(name), bytes).unwrap();
    }
    fs::write(s.data.join("small.txt"), "v1").unwrap();
    let ptr = |b: &[u8]| blob::hash_reader(b).unwrap();
    let (big, exact, whole) = (ptr(&files[0].1), ptr(&files[1].1), ptr(&files[2].1));

    let store = limited_github_store(&fake, 1000, limit, &anchors);
    let p = github_persister(s.config("work"), &store);
    p.restore(&RestoreOptions::default()).unwrap();
    let rep = p.snapshot_and_push().unwrap();
    assert_eq!(rep.uploaded, 3, "{rep:?}");
    {
        let st = fake.state.lock().unwrap();
        assert!(st.refused.is_empty(), "{:?}", st.refused);
        let mut names: Vec<_> = st.assets().map(|(_, a)| a.name.clone()).collect();
        names.sort();
        let mut want = vec![whole.oid()];
        want.extend((1..=4).map(|i| format!("{}.part-00{i}-of-004", big.oid())));
        want.extend((1..=2).map(|i| format!("{}.part-00{i}-of-002", exact.oid())));
        want.sort();
        assert_eq!(names, want);
        // In order, the parts are the file.
        let mut joined = Vec::new();
        for i in 1..=4 {
            let name = format!("{}.part-00{i}-of-004", big.oid());
            let (_, a) = st.assets().find(|(_, a)| a.name == name).unwrap();
            assert!(a.bytes.len() <= 1 << 20, "{name}: {}", a.bytes.len());
            joined.extend_from_slice(&a.bytes);
        }
        assert!(joined == files[0].1, "the parts of big.bin are its bytes");
    }
    drop(p);

    // A new container gets every byte back.
    fs::remove_dir_all(&s.data).unwrap();
    let p = github_persister(
        s.config("work2"),
        &limited_github_store(&fake, 1000, limit, &anchors),
    );
    let r = p.restore(&RestoreOptions::default()).unwrap();
    assert_eq!(r.applied.downloaded, 3);
    for (name, bytes) in &files {
        assert!(&fs::read(s.data.join(name)).unwrap() == bytes, "`{name}`");
    }
    drop(p);

    // Part 2 of big.bin is lost: the blob is no longer held, and the next
    // backup sends that part alone (the others still hold their share).
    let lost = format!("{}.part-002-of-004", big.oid());
    fake.state
        .lock()
        .unwrap()
        .releases
        .iter_mut()
        .for_each(|r| r.assets.retain(|a| a.name != lost));
    let store = limited_github_store(&fake, 1000, limit, &anchors);
    assert!(!store.has(&big).unwrap());
    assert!(store.has(&exact).unwrap() && store.has(&whole).unwrap());
    let uploads = fake.state.lock().unwrap().uploads;
    let p = github_persister(s.config("work3"), &store);
    p.restore(&RestoreOptions {
        force: true,
        ..RestoreOptions::default()
    })
    .unwrap();
    fs::write(s.data.join("small.txt"), "v2").unwrap();
    let rep = p.snapshot_and_push().unwrap();
    assert_eq!(rep.uploaded, 1, "{rep:?}");
    {
        let st = fake.state.lock().unwrap();
        assert_eq!(st.uploads, uploads + 1, "one part, not the whole file");
        let last = st.log.iter().rev().find(|l| l.starts_with("POST /upload"));
        assert!(
            last.is_some_and(|l| l.contains(&format!("name={lost}"))),
            "{last:?}"
        );
    }
    assert!(store.has(&big).unwrap());
    drop(p);

    // Content that no longer hashes to the pointer is refused before any
    // part is sent.
    let liar = Pointer {
        sha256: [1; 32],
        ..big
    };
    let e = store.put(&liar, &s.data.join("big.bin")).unwrap_err();
    assert!(matches!(e, BlobError::Changed { .. }), "{e}");
    assert_eq!(fake.state.lock().unwrap().uploads, uploads + 1);

    fs::remove_dir_all(&s.data).unwrap();
    let p = github_persister(
        s.config("work4"),
        &limited_github_store(&fake, 1000, limit, &anchors),
    );
    p.restore(&RestoreOptions::default()).unwrap();
    assert!(fs::read(s.data.join("big.bin")).unwrap() == files[0].1);
}

#[test]
fn github_release_gc_deletes_old_unreferenced_blobs_with_their_parts_and_nothing_else() {
    const WEEK_AND_A_DAY: Duration = Duration::from_secs(8 * 24 * 3600);
    let s = Setup::new();
    // One foreign asset (`filler-0`) in the release, as a human might add.
    let fake = fake_github::Fake::start("tok", 1, vec![]);
    let anchors = Arc::new(Mutex::new(Vec::new()));
    let a = noise((1 << 20) + 5, 51); // kept in every snapshot
    let b = noise((3 << 20) + 3, 52); // four parts; dropped by the squash, old
    let c = noise((1 << 20) + 9, 53); // dropped by the squash, young
    for (name, bytes) in [("a.bin", &a), ("b.bin", &b), ("c.bin", &c)] {
        fs::write(s.data.join(name), bytes).unwrap();
    }
    let ptr = |x: &[u8]| blob::hash_reader(x).unwrap().oid();
    let (pa, pb, pc) = (ptr(&a), ptr(&b), ptr(&c));
    let store = limited_github_store(&fake, 1000, 2 << 20, &anchors);
    let mut cfg = s.config("work");
    cfg.keep = 2;
    // The default grace period (7 days): age comes from the assets' `created_at`.
    let p = github_persister(cfg, &store);
    p.restore(&RestoreOptions::default()).unwrap();
    assert_eq!(p.snapshot_and_push().unwrap().uploaded, 3);
    let names = || -> Vec<String> {
        let st = fake.state.lock().unwrap();
        let mut v: Vec<_> = st.assets().map(|(_, a)| a.name.clone()).collect();
        v.sort();
        v
    };
    let deletes = || {
        let st = fake.state.lock().unwrap();
        st.log.iter().filter(|l| l.starts_with("DELETE")).count()
    };
    {
        let mut st = fake.state.lock().unwrap();
        // The original deployment's asset for the same content as b, old:
        // not named by a SHA-256 alone, so never stackctl's to delete.
        let id = st.next_id;
        st.next_id += 1;
        st.releases[0].assets.push(fake_github::Asset {
            id,
            name: format!("{pb}-b.bin"),
            state: "uploaded".into(),
            bytes: vec![2],
            created: 0,
        });
        let young = pc.clone();
        st.backdate(WEEK_AND_A_DAY, |x| !x.name.starts_with(&young));
    }
    let before = names();
    assert_eq!(before.iter().filter(|n| n.starts_with(&pb)).count(), 5);

    fs::remove_file(s.data.join("b.bin")).unwrap();
    fs::remove_file(s.data.join("c.bin")).unwrap();
    let mut n = 0;
    let mut until_squash = |p: &Persister| loop {
        n += 1;
        fs::write(s.data.join("small.txt"), format!("v{n}")).unwrap();
        let r = p.snapshot_and_push().unwrap();
        assert!(r.pushed.is_some());
        if r.squashed > 0 {
            return r;
        }
        assert!(n < 20, "no squash happened");
    };
    // b (every part) is deleted; c is too young; a is referenced.
    let r = until_squash(&p);
    assert_eq!(r.blobs_collected, 1, "{r:?}");
    assert_eq!(deletes(), 4, "the four parts of b");
    let mut want: Vec<_> = before
        .iter()
        .filter(|n| !n.starts_with(&format!("{pb}.part-")))
        .cloned()
        .collect();
    want.sort();
    assert_eq!(names(), want);
    assert!(store.has(&blob::hash_reader(&a[..]).unwrap()).unwrap());

    // Once c is old too, it goes; a, still referenced, never does.
    fake.state
        .lock()
        .unwrap()
        .backdate(WEEK_AND_A_DAY, |x| x.name == pc);
    let r = until_squash(&p);
    assert_eq!(r.blobs_collected, 1, "{r:?}");
    let mut want = vec![pa.clone(), "filler-0".into(), format!("{pb}-b.bin")];
    want.sort();
    assert_eq!(names(), want);
    let r = until_squash(&p);
    assert_eq!(r.blobs_collected, 0);
    assert_eq!(deletes(), 5);
    drop(p);

    // A new container still gets a back.
    fs::remove_dir_all(&s.data).unwrap();
    let p = github_persister(
        s.config("work2"),
        &limited_github_store(&fake, 1000, 2 << 20, &anchors),
    );
    let r = p.restore(&RestoreOptions::default()).unwrap();
    assert_eq!(fs::read(s.data.join("a.bin")).unwrap(), a);
    assert!(!s.data.join("b.bin").exists() && !s.data.join("c.bin").exists());
    assert_eq!(r.applied.downloaded, 1);
}
