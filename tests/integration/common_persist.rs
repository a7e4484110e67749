//! Setup the persistence tests share (`persist.rs`, `large_files.rs`): the
//! git CLI with a fixed identity, and a temp root holding a bare remote and
//! the data to back up to it.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use stackctl::manifest::{BlobStore, LargeFiles, OffloadBinary, Persist, PersistPath};
use stackctl::persist::retry::Policy;
use stackctl::persist::Tuning;

/// Run a command (tests only: stackctl itself never runs git), panicking
/// with its output on failure; its stdout.
pub fn run(dir: &Path, prog: &str, args: &[&str]) -> Vec<u8> {
    let out = Command::new(prog)
        .args(args)
        .current_dir(dir)
        .env("GIT_AUTHOR_NAME", "someone")
        .env("GIT_AUTHOR_EMAIL", "someone@example.org")
        .env("GIT_COMMITTER_NAME", "someone")
        .env("GIT_COMMITTER_EMAIL", "someone@example.org")
        .output()
        .unwrap_or_else(|e| panic!("{prog} cannot run: {e}"));
    assert!(
        out.status.success(),
        "{prog} {args:?} in {} failed: {}\n{}",
        dir.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// The git CLI; its stdout, trimmed.
pub fn git(dir: &Path, args: &[&str]) -> String {
    String::from_utf8_lossy(&run(dir, "git", args))
        .trim()
        .to_string()
}

/// `git clone` of `remote` into `root/clone` with the LFS filters off: the
/// working tree holds the pointers as committed. Returns the clone.
pub fn clone_without_lfs(root: &Path, remote: &Path) -> PathBuf {
    let clone = root.join("clone");
    git(
        root,
        &[
            "-c",
            "filter.lfs.smudge=",
            "-c",
            "filter.lfs.process=",
            "-c",
            "filter.lfs.required=false",
            "clone",
            "-q",
            remote.to_str().unwrap(),
            clone.to_str().unwrap(),
        ],
    );
    clone
}

/// Create an empty bare repository at `path` whose HEAD is `main`.
pub fn init_bare(path: &Path) {
    let ok = Command::new("git")
        .args(["init", "-q", "--bare", "-b", "main"])
        .arg(path)
        .status()
        .unwrap()
        .success();
    assert!(ok, "git init --bare {}", path.display());
}

/// Bytes that do not compress or repeat (a pseudo-random sequence).
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// A temp root (removed on drop) with a bare repository `remote.git` whose
/// HEAD is `main`, and `data`, the path to persist (not created here).
pub struct Dirs {
    _tmp: tempfile::TempDir,
    pub root: PathBuf,
    pub data: PathBuf,
    pub remote: PathBuf,
}

impl Dirs {
    pub fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().canonicalize().unwrap();
        let remote = root.join("remote.git");
        init_bare(&remote);
        let data = root.join("data");
        Self {
            _tmp: tmp,
            root,
            data,
            remote,
        }
    }

    /// Back up `data` to the remote over `file://` from `root/<workdir>`:
    /// files of 1 MiB or more are large, nothing excluded, the whole
    /// history kept (with [`quick`]: no lease to wait for, quick retries).
    pub fn config(&self, workdir: &str) -> Persist {
        section(&self.remote, self.root.join(workdir), self.data.clone())
    }
}

/// A `persist:` section backing up `data` to the bare repository `remote`
/// over `file://` from `workdir`: files of 1 MiB or more are large, nothing
/// excluded, the whole history kept.
pub fn section(remote: &Path, workdir: PathBuf, data: PathBuf) -> Persist {
    Persist {
        remote: format!("file://{}", remote.display()),
        token: None,
        branch: "main".into(),
        workdir,
        interval: Duration::from_secs(60),
        debounce: Duration::from_secs(10),
        paths: vec![PersistPath {
            path: data,
            exclude: vec![],
        }],
        exclude: vec![],
        keep: 0,
        large_files: LargeFiles {
            threshold: 1 << 20,
            // The tests hand the persister its store themselves.
            store: BlobStore::None,
            tag: "blobs".into(),
            url: None,
            offload_binary: OffloadBinary::Never,
        },
        readiness_file: None,
    }
}

/// The runtime knobs of the persistence tests: instance `test`, no lease to
/// wait for, two attempts with short delays.
pub fn quick() -> Tuning {
    Tuning {
        instance: "test".into(),
        lease_ttl: Duration::ZERO,
        retry: Policy {
            attempts: 2,
            initial: Duration::from_millis(10),
            max: Duration::from_millis(50),
        },
    }
}

/// The original deployment's release-asset pointer JSON for a blob of
/// `size` bytes with SHA-256 `oid` (what it committed as `<file>.pointer`).
pub fn original_pointer_json(oid: &str, size: u64, asset_id: Option<u64>) -> String {
    let id = asset_id.map_or("null".to_string(), |i| i.to_string());
    format!(
        r#"{{"type":"release-asset","repo":"o/r","release_tag":"blobs","asset_name":"{oid}-model.bin","asset_id":{id},"original_path":"/data/model.bin","size":{size},"sha256":"{oid}","generated_at":"2025-01-01T00:00:00Z"}}"#
    )
}

/// Push to `remote` one commit whose tree holds `files` (path relative to
/// `data`, content) at `data`'s tree path, made with the git CLI in
/// `root/<scratch>` as the original deployment would.
pub fn push_tree(
    root: &Path,
    remote: &Path,
    data: &Path,
    scratch: &str,
    files: &[(&str, Vec<u8>)],
) {
    let clone = root.join(scratch);
    git(root, &["init", "-q", "-b", "main", clone.to_str().unwrap()]);
    let base = clone.join(data.strip_prefix("/").unwrap());
    for (rel, bytes) in files {
        let path = base.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, bytes).unwrap();
    }
    git(&clone, &["add", "-A"]);
    git(&clone, &["commit", "-q", "-m", "auto: 2025-01-01 00:00:00"]);
    git(&clone, &["push", "-q", remote.to_str().unwrap(), "main"]);
}

/// Pointers whose target name climbs out (`...pointer` stands for `..`,
/// `sub/..pointer` for `sub/.`; issue 17), beside an ordinary file.
pub fn hostile_pointer_files() -> Vec<(&'static str, Vec<u8>)> {
    let json = original_pointer_json(&"ab".repeat(32), 5, Some(1)).into_bytes();
    vec![
        ("...pointer", json.clone()),
        ("sub/..pointer", json),
        ("ok.txt", b"fine".to_vec()),
    ]
}
