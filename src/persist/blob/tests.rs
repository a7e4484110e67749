use super::*;

use std::fs;
use std::io::Read;
use std::sync::atomic::{AtomicBool, Ordering};

fn ptr(bytes: &[u8]) -> Pointer {
    hash_reader(bytes).unwrap()
}

#[test]
fn hashing_matches_sha256sum_of_known_input() {
    let p = ptr(b"abc");
    assert_eq!(
        p.oid(),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
    assert_eq!(p.size, 3);
}

#[test]
fn a_verifying_reader_withholds_the_last_bytes_of_changed_content() {
    let good = vec![5u8; 3 * CHUNK + 7];
    let p = ptr(&good);
    let flag = Arc::new(AtomicBool::new(false));
    let mut out = Vec::new();
    VerifyingReader::new(&good[..], p, flag.clone())
        .read_to_end(&mut out)
        .unwrap();
    assert_eq!(out, good);
    assert!(!flag.load(Ordering::SeqCst));

    let mut bad = good.clone();
    let last = bad.len() - 1;
    bad[last] = 6;
    let mut out = Vec::new();
    let mut r = VerifyingReader::new(&bad[..], p, flag.clone());
    let mut buf = vec![0u8; 4096];
    let err = loop {
        match r.read(&mut buf) {
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) => break e,
        }
    };
    assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    assert!(out.len() < bad.len(), "the last bytes were withheld");
    assert!(flag.load(Ordering::SeqCst));

    // Shrunk: fails too.
    let flag = Arc::new(AtomicBool::new(false));
    let mut out = Vec::new();
    assert!(VerifyingReader::new(&good[..10], p, flag.clone())
        .read_to_end(&mut out)
        .is_err());
    assert!(flag.load(Ordering::SeqCst));
}

#[test]
fn remotes_map_to_lfs_endpoints_and_github_repos() {
    assert_eq!(
        lfs_endpoint("https://huggingface.co/datasets/u/d").as_deref(),
        Some("https://huggingface.co/datasets/u/d.git/info/lfs")
    );
    assert_eq!(
        lfs_endpoint("https://github.com/o/r.git").as_deref(),
        Some("https://github.com/o/r.git/info/lfs")
    );
    assert_eq!(lfs_endpoint("/srv/repo.git"), None);
    assert_eq!(
        lfs_endpoint("https://h/o/r.git?access_token=x").as_deref(),
        Some("https://h/o/r.git/info/lfs")
    );
    assert_eq!(github_repo("o/r").as_deref(), Some("o/r"));
    assert_eq!(
        github_repo("https://github.com/o/r.git").as_deref(),
        Some("o/r")
    );
    assert_eq!(github_repo("https://example.org/o/r"), None);
}

#[test]
fn downloads_are_verified_and_nothing_is_left_on_failure() {
    let d = tempfile::tempdir().unwrap();
    let tmp = d.path().join("t");
    let p = ptr(b"hello");
    let retry = Retry {
        attempts: 2,
        initial: Duration::ZERO,
        max: Duration::ZERO,
    };
    download_to(&retry, &p, &tmp, |w| {
        w.write_all(b"hello").map_err(|e| BlobError::Io {
            what: "write",
            path: PathBuf::new(),
            source: e,
        })
    })
    .unwrap();
    assert_eq!(fs::read(&tmp).unwrap(), b"hello");
    fs::remove_file(&tmp).unwrap();
    let e = download_to(&retry, &p, &tmp, |w| {
        w.write_all(b"hellO").map_err(|e| BlobError::Io {
            what: "write",
            path: PathBuf::new(),
            source: e,
        })
    })
    .unwrap_err();
    assert!(matches!(e, BlobError::Corrupt { .. }), "{e}");
    assert!(!tmp.exists());
}
