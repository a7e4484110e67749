use super::*;

fn header(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn part_urls_are_ordered_by_their_number_and_counted_against_the_chunks() {
    // Keys as Hugging Face writes them, out of order; 10 parts so that
    // "00010" must sort after "00009" by number.
    let mut pairs: Vec<(String, String)> = (1..=10)
        .rev()
        .map(|n| (format!("{n:05}"), format!("https://s3.example/part?n={n}")))
        .collect();
    pairs.push(("chunk_size".into(), "4".into()));
    pairs.push(("X-Extra".into(), "yes".into()));
    let h: HashMap<String, String> = pairs.into_iter().collect();
    let plan = Multipart::parse(&h, 38).unwrap().unwrap();
    assert_eq!(plan.chunk_size, 4);
    let want: Vec<String> = (1..=10)
        .map(|n| format!("https://s3.example/part?n={n}"))
        .collect();
    assert_eq!(plan.urls, want);
    assert_eq!(plan.headers, vec![("X-Extra".into(), "yes".into())]);

    // Too few or too many parts for the size: refused before any upload.
    let e = Multipart::parse(&h, 41).unwrap_err();
    assert!(
        e.contains("10 part URLs") && e.contains("11 expected"),
        "{e}"
    );
    assert!(Multipart::parse(&h, 36).is_err());
    // Exactly full chunks.
    assert!(Multipart::parse(&h, 40).unwrap().is_some());
}

#[test]
fn a_bad_plan_is_refused_and_no_chunk_size_means_a_single_put() {
    assert_eq!(
        Multipart::parse(&header(&[("Authorization", "x")]), 9).unwrap(),
        None
    );
    for bad in ["0", "-5", "ten", ""] {
        let h = header(&[("chunk_size", bad), ("00001", "u")]);
        assert!(Multipart::parse(&h, 9).is_err(), "chunk_size {bad:?}");
    }
    let h = header(&[("chunk_size", "5"), ("1", "a"), ("01", "b")]);
    let e = Multipart::parse(&h, 10).unwrap_err();
    assert!(e.contains("twice"), "{e}");
}

#[test]
fn chunk_ranges_cover_the_object_exactly() {
    let plan = Multipart {
        chunk_size: 4,
        urls: vec![String::new(); 3],
        headers: vec![],
    };
    let ranges: Vec<_> = (0..3).map(|i| plan.range(i, 10)).collect();
    assert_eq!(ranges, vec![(0, 4), (4, 8), (8, 10)]);
    // One byte over a chunk boundary.
    assert_eq!(plan.range(2, 9), (8, 9));
}

#[test]
fn the_completion_payload_numbers_parts_from_one_in_order() {
    let etags = vec!["\"a1\"".to_string(), "\"b2\"".to_string()];
    let v = serde_json::to_value(completion("ab".repeat(32), &etags)).unwrap();
    assert_eq!(
        v,
        serde_json::json!({
            "oid": "ab".repeat(32),
            "parts": [
                {"partNumber": 1, "etag": "\"a1\""},
                {"partNumber": 2, "etag": "\"b2\""},
            ],
        })
    );
}

#[test]
fn an_action_header_with_a_numeric_chunk_size_or_null_is_read() {
    let a: Action = serde_json::from_str(
        r#"{"href": "https://hf.example/complete", "header": {"chunk_size": 8, "00001": "u1"}}"#,
    )
    .unwrap();
    assert_eq!(a.header.get("chunk_size").map(String::as_str), Some("8"));
    let plan = Multipart::parse(&a.header, 8).unwrap().unwrap();
    assert_eq!(plan.urls, vec!["u1".to_string()]);
    let a: Action = serde_json::from_str(r#"{"href": "h", "header": null}"#).unwrap();
    assert!(a.header.is_empty());
}

/// Read parts of `path` like the upload does; `attempts[i]` reads part
/// `i` that many times (a retry restarts from the same hash state).
fn read_parts(
    path: &Path,
    p: Pointer,
    chunk: u64,
    attempts: &[usize],
) -> (Vec<u8>, io::Result<()>, bool) {
    let file = Arc::new(File::open(path).unwrap());
    let changed = Arc::new(AtomicBool::new(false));
    let parts = p.size.div_ceil(chunk) as usize;
    let plan = Multipart {
        chunk_size: chunk,
        urls: vec![String::new(); parts],
        headers: vec![],
    };
    let mut hashed = Sha256::new();
    let mut sent = Vec::new();
    for i in 0..parts {
        let (pos, end) = plan.range(i, p.size);
        for attempt in 0..attempts.get(i).copied().unwrap_or(1) {
            let done = Arc::new(Mutex::new(None));
            let mut r = PartReader {
                file: file.clone(),
                pos,
                end,
                hasher: hashed.clone(),
                expected: (i + 1 == parts).then_some(p),
                done: done.clone(),
                changed: changed.clone(),
                counter: None,
            };
            let mut buf = Vec::new();
            let res = r.read_to_end(&mut buf).map(|_| ());
            if attempt + 1 == attempts.get(i).copied().unwrap_or(1) {
                sent.extend_from_slice(&buf);
            }
            if let Err(e) = res {
                return (sent, Err(e), changed.load(Ordering::SeqCst));
            }
            if attempt + 1 == attempts.get(i).copied().unwrap_or(1) {
                hashed = done.lock().unwrap().take().expect("whole part read");
            }
        }
    }
    (sent, Ok(()), changed.load(Ordering::SeqCst))
}

#[test]
fn parts_stream_the_file_verified_across_parts_and_retries() {
    let d = tempfile::tempdir().unwrap();
    let path = d.path().join("f");
    let bytes: Vec<u8> = (0..10_000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(&path, &bytes).unwrap();
    let p = super::super::hash_reader(&bytes[..]).unwrap();

    let (sent, res, changed) = read_parts(&path, p, 3000, &[1, 3, 1, 2]);
    res.unwrap();
    assert_eq!(sent, bytes);
    assert!(!changed);

    // Changed after hashing: the last bytes of the last part are withheld.
    let mut other = bytes.clone();
    other[9_999] ^= 1;
    std::fs::write(&path, &other).unwrap();
    let (sent, res, changed) = read_parts(&path, p, 3000, &[1, 1, 1, 1]);
    assert_eq!(res.unwrap_err().kind(), io::ErrorKind::InvalidData);
    assert!(changed);
    assert!(sent.len() < bytes.len(), "the last bytes were withheld");

    // Shrunk: fails too.
    std::fs::write(&path, &bytes[..7000]).unwrap();
    let (_, res, changed) = read_parts(&path, p, 3000, &[1, 1, 1, 1]);
    assert!(res.is_err() && changed);
}

/// Issue 17 item 7: credentials in the endpoint are refused, and a
/// query string never reaches `.lfsconfig`.
#[test]
fn credentials_in_the_endpoint_never_reach_a_file() {
    let e = LfsStore::new("https://u:TOKEN_in_url@h/o/r.git/info/lfs", None)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("holds credentials"), "{e}");
    assert!(!e.contains("TOKEN_in_url"), "{e}");
    let s = LfsStore::new("https://h/o/r.git/info/lfs?t=TOKEN_q", None).unwrap();
    assert_eq!(s.lfs_url(), None);
    let s = LfsStore::new("https://h/o/r.git/info/lfs", None).unwrap();
    assert_eq!(s.lfs_url().as_deref(), Some("https://h/o/r.git/info/lfs"));
}

#[test]
fn urls_in_errors_lose_query_and_user_info() {
    assert_eq!(
        shown("https://s3.example/b/o?X-Amz-Signature=secret#f"),
        "https://s3.example/b/o?***"
    );
    assert_eq!(
        shown("https://user:hf_secret@huggingface.co/datasets/u/d.git/info/lfs"),
        "https://***@huggingface.co/datasets/u/d.git/info/lfs"
    );
    assert_eq!(shown("http://127.0.0.1:9/a@b"), "http://127.0.0.1:9/a@b");
}

fn auth_header(store: &LfsStore, url: &str) -> Option<String> {
    let req = store.auth(store.client.get(url), url).build().unwrap();
    req.headers()
        .get(reqwest::header::AUTHORIZATION)
        .map(|v| v.to_str().unwrap().to_string())
}

#[test]
fn each_host_gets_the_auth_it_documents_and_other_hosts_none() {
    let tok = Some("hf_secret".to_string());
    let hf = LfsStore::new(
        "https://huggingface.co/datasets/u/d.git/info/lfs",
        tok.clone(),
    )
    .unwrap();
    assert_eq!(
        auth_header(
            &hf,
            "https://huggingface.co/datasets/u/d.git/info/lfs/objects/batch"
        )
        .as_deref(),
        Some("Bearer hf_secret")
    );
    // Presigned storage on another host: nothing of ours.
    assert_eq!(auth_header(&hf, "https://s3.example/part?sig=1"), None);
    let short = LfsStore::new("https://hf.co/datasets/u/d.git/info/lfs", tok.clone()).unwrap();
    assert!(short.bearer);

    // GitHub and Gitea: Basic, the token as the password.
    let gh = LfsStore::new("https://github.com/o/r.git/info/lfs", tok.clone()).unwrap();
    let basic = auth_header(&gh, "https://github.com/o/r.git/info/lfs/objects/batch").unwrap();
    // base64("x-access-token:hf_secret")
    assert_eq!(basic, "Basic eC1hY2Nlc3MtdG9rZW46aGZfc2VjcmV0");
    assert_eq!(
        auth_header(&gh, "https://github-cloud.s3.amazonaws.com/x"),
        None
    );
    let none = LfsStore::new("https://github.com/o/r.git/info/lfs", None).unwrap();
    assert_eq!(
        auth_header(&none, "https://github.com/o/r.git/info/lfs/objects/batch"),
        None
    );
}

#[test]
fn errors_never_carry_the_token() {
    let s = LfsStore::new(
        "https://git.example/o/r.git/info/lfs",
        Some("tok123".into()),
    )
    .unwrap();
    let e = s.scrub(BlobError::Http {
        url: "https://git.example/x".into(),
        status: 500,
        message: "bad header Basic tok123 here".into(),
    });
    assert!(!e.to_string().contains("tok123"), "{e}");
    assert!(e.is_retryable());
}
