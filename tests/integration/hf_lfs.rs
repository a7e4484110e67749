//! The `lfs` store with a Hugging Face dataset repository, against an
//! in-process *fake* of Hugging Face's LFS endpoints (huggingface.co cannot
//! be reached from the tests; giftless has no Hugging Face multipart).
//!
//! The fake follows what Hugging Face's own client (`huggingface_hub`)
//! relies on: a private repository (Basic with the token as password, or
//! `Bearer`); objects above a size answered with an `upload` action whose
//! `header` carries `chunk_size` and one presigned part URL per
//! zero-padded part number, on another host ("storage", another port) that
//! refuses any `Authorization` header and answers each part with an `ETag`;
//! a completion `POST` to the action's `href` that checks the parts are
//! listed in order, complete, with their ETags, and that the bytes put
//! together hash to the oid; a `verify` action; smaller objects get a single
//! presigned `PUT`; downloads are presigned storage URLs too.

use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sha2::{Digest, Sha256};
use stackctl::manifest::Persist;
use stackctl::persist::blob::lfs::LfsStore;
use stackctl::persist::blob::{self, BlobError, BlobStore, Retry, StoreConfig};
use stackctl::persist::{PersistError, Persister, RestoreOptions};

use crate::common_persist::{git, noise, quick, Dirs};
use crate::harness::Stack;

const TOKEN: &str = "hf_FakeTokenForTests0123456789";
const MIB: usize = 1 << 20;

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

mod fake_hf {
    use super::*;
    use crate::fake_http::{read_req, respond, Req};

    /// What the fake saw and holds.
    #[derive(Default)]
    pub struct State {
        /// Stored objects by oid.
        pub objects: HashMap<String, Vec<u8>>,
        uploads: HashMap<u64, Upload>,
        next_upload: u64,
        /// PUT attempts per part number (any upload).
        pub part_attempts: HashMap<u64, usize>,
        /// Part numbers whose first attempt answers 500.
        pub fail_once: Vec<u64>,
        /// Requests to storage that carried `Authorization`.
        pub leaked_auth: usize,
        /// `Authorization` of every batch request.
        pub batch_auth: Vec<String>,
        /// The `transfers` of the last batch request.
        pub transfers: Vec<String>,
        /// Completion requests that assembled an object.
        pub completions: usize,
        /// Why completion requests were refused.
        pub refused: Vec<String>,
        /// Single (non-multipart) uploads.
        pub single_puts: usize,
        /// Called with the part number when a part has arrived, before
        /// it is answered.
        pub on_part: Option<Box<dyn FnMut(u64) + Send>>,
    }

    struct Upload {
        oid: String,
        size: u64,
        parts: u64,
        got: HashMap<u64, (String, Vec<u8>)>,
    }

    pub struct Fake {
        pub state: Arc<Mutex<State>>,
        /// The LFS endpoint (`.../datasets/u/d.git/info/lfs`).
        pub endpoint: String,
    }

    fn lfs_json(stream: TcpStream, status: u16, v: serde_json::Value) {
        respond(
            stream,
            status,
            &[("Content-Type", "application/vnd.git-lfs+json".into())],
            v.to_string().as_bytes(),
        );
    }

    /// Standard base64 (enough for an `Authorization: Basic` value).
    fn unbase64(s: &str) -> Option<Vec<u8>> {
        let val = |c: u8| -> Option<u32> {
            Some(match c {
                b'A'..=b'Z' => c - b'A',
                b'a'..=b'z' => c - b'a' + 26,
                b'0'..=b'9' => c - b'0' + 52,
                b'+' => 62,
                b'/' => 63,
                _ => return None,
            } as u32)
        };
        let s = s.trim_end_matches('=').as_bytes();
        let mut out = Vec::new();
        let (mut acc, mut bits) = (0u32, 0);
        for &c in s {
            acc = (acc << 6) | val(c)?;
            bits += 6;
            if bits >= 8 {
                bits -= 8;
                out.push((acc >> bits) as u8);
                acc &= (1 << bits) - 1;
            }
        }
        Some(out)
    }

    /// Hugging Face takes the token as `Bearer`, or as the password of
    /// Basic auth with any user name.
    fn authorized(req: &Req, token: &str) -> bool {
        match req.header("authorization") {
            Some(v) if v.strip_prefix("Bearer ") == Some(token) => true,
            Some(v) => v
                .strip_prefix("Basic ")
                .and_then(unbase64)
                .and_then(|b| String::from_utf8(b).ok())
                .and_then(|up| up.split_once(':').map(|(_, pw)| pw == token))
                .unwrap_or(false),
            None => false,
        }
    }

    impl Fake {
        /// Objects larger than `multipart_over` bytes go up in parts of
        /// `chunk_size` bytes.
        pub fn start(token: &str, chunk_size: u64, multipart_over: u64) -> Fake {
            let hub = TcpListener::bind("127.0.0.1:0").unwrap();
            let storage = TcpListener::bind("127.0.0.1:0").unwrap();
            let hub_url = format!("http://127.0.0.1:{}", hub.local_addr().unwrap().port());
            let storage_url = format!("http://127.0.0.1:{}", storage.local_addr().unwrap().port());
            let state = Arc::new(Mutex::new(State::default()));
            let st = state.clone();
            let token = token.to_string();
            let hub_base = hub_url.clone();
            std::thread::spawn(move || {
                for stream in hub.incoming().flatten() {
                    let st = st.clone();
                    let token = token.clone();
                    let hub_url = hub_base.clone();
                    let storage_url = storage_url.clone();
                    std::thread::spawn(move || {
                        if let Some(req) = read_req(&stream) {
                            let ctx = Hub {
                                token: &token,
                                hub: &hub_url,
                                storage: &storage_url,
                                chunk_size,
                                multipart_over,
                            };
                            ctx.handle(&st, stream, req);
                        }
                    });
                }
            });
            let st = state.clone();
            std::thread::spawn(move || {
                for stream in storage.incoming().flatten() {
                    let st = st.clone();
                    std::thread::spawn(move || {
                        if let Some(req) = read_req(&stream) {
                            storage_handle(&st, chunk_size, stream, req);
                        }
                    });
                }
            });
            Fake {
                state,
                endpoint: format!("{hub_url}/datasets/u/d.git/info/lfs"),
            }
        }
    }

    struct Hub<'a> {
        token: &'a str,
        hub: &'a str,
        storage: &'a str,
        chunk_size: u64,
        multipart_over: u64,
    }

    impl Hub<'_> {
        fn handle(&self, st: &Mutex<State>, stream: TcpStream, req: Req) {
            let lfs = "/datasets/u/d.git/info/lfs";
            match (req.method.as_str(), req.path.as_str()) {
                ("POST", p) if p == format!("{lfs}/objects/batch") => self.batch(st, stream, req),
                ("POST", p) if p == format!("{lfs}/objects/verify") => {
                    if !authorized(&req, self.token) {
                        return lfs_json(
                            stream,
                            401,
                            serde_json::json!({"message": "Invalid credentials"}),
                        );
                    }
                    let v: serde_json::Value =
                        serde_json::from_slice(&req.body).unwrap_or_default();
                    let oid = v["oid"].as_str().unwrap_or_default();
                    let size = v["size"].as_u64();
                    let ok = st
                        .lock()
                        .unwrap()
                        .objects
                        .get(oid)
                        .is_some_and(|b| Some(b.len() as u64) == size);
                    if ok {
                        lfs_json(
                            stream,
                            200,
                            serde_json::json!({"message": "Object verified"}),
                        )
                    } else {
                        lfs_json(
                            stream,
                            404,
                            serde_json::json!({"message": "Object not found"}),
                        )
                    }
                }
                ("POST", "/api/complete_multipart") => {
                    // Signed by its query; a token sent along must be valid.
                    if req.header("authorization").is_some() && !authorized(&req, self.token) {
                        return lfs_json(
                            stream,
                            401,
                            serde_json::json!({"message": "Invalid credentials"}),
                        );
                    }
                    let result = complete(st, &req);
                    let mut s = st.lock().unwrap();
                    match result {
                        Ok(()) => {
                            s.completions += 1;
                            drop(s);
                            lfs_json(stream, 200, serde_json::json!({"message": "ok"}))
                        }
                        Err(why) => {
                            s.refused.push(why.clone());
                            drop(s);
                            lfs_json(stream, 400, serde_json::json!({"message": why}))
                        }
                    }
                }
                _ => lfs_json(stream, 404, serde_json::json!({"message": "Not Found"})),
            }
        }

        fn batch(&self, st: &Mutex<State>, stream: TcpStream, req: Req) {
            let mut s = st.lock().unwrap();
            s.batch_auth
                .push(req.header("authorization").unwrap_or_default().to_string());
            // A private repository: wrong or missing credentials get 401.
            if !authorized(&req, self.token) {
                drop(s);
                return lfs_json(
                    stream,
                    401,
                    serde_json::json!({"message": "Invalid credentials in Authorization header"}),
                );
            }
            let v: serde_json::Value = serde_json::from_slice(&req.body).unwrap_or_default();
            let op = v["operation"].as_str().unwrap_or_default().to_string();
            s.transfers = v["transfers"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|t| t.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default();
            let multipart_offered = s.transfers.iter().any(|t| t == "multipart");
            let mut objects = Vec::new();
            let mut transfer = "basic";
            for o in v["objects"].as_array().cloned().unwrap_or_default() {
                let oid = o["oid"].as_str().unwrap_or_default().to_string();
                let size = o["size"].as_u64().unwrap_or(0);
                let stored = s.objects.contains_key(&oid);
                let verify = serde_json::json!({
                    "href": format!("{}/datasets/u/d.git/info/lfs/objects/verify", self.hub),
                    "header": {},
                });
                let answer = match (op.as_str(), stored) {
                    ("upload", true) => serde_json::json!({"oid": oid, "size": size}),
                    ("upload", false) if size > self.multipart_over => {
                        if multipart_offered {
                            transfer = "multipart";
                        }
                        let id = s.next_upload;
                        s.next_upload += 1;
                        let parts = size.div_ceil(self.chunk_size);
                        s.uploads.insert(
                            id,
                            Upload {
                                oid: oid.clone(),
                                size,
                                parts,
                                got: HashMap::new(),
                            },
                        );
                        let mut header = serde_json::Map::new();
                        header.insert("chunk_size".into(), self.chunk_size.to_string().into());
                        for n in 1..=parts {
                            header.insert(
                                format!("{n:05}"),
                                format!(
                                    "{}/part?uploadId={id}&partNumber={n}&X-Amz-Signature=sig{id}x{n}",
                                    self.storage
                                )
                                .into(),
                            );
                        }
                        serde_json::json!({
                            "oid": oid, "size": size,
                            "actions": {
                                "upload": {
                                    "href": format!("{}/api/complete_multipart?uploadId={id}&signature=s{id}", self.hub),
                                    "header": header,
                                },
                                "verify": verify,
                            },
                        })
                    }
                    ("upload", false) => serde_json::json!({
                        "oid": oid, "size": size,
                        "actions": {
                            "upload": {
                                "href": format!("{}/object/{oid}?X-Amz-Signature=single", self.storage),
                                "header": {},
                            },
                            "verify": verify,
                        },
                    }),
                    ("download", true) => serde_json::json!({
                        "oid": oid, "size": size,
                        "actions": {"download": {
                            "href": format!("{}/object/{oid}?X-Amz-Signature=get", self.storage),
                            "header": {},
                        }},
                    }),
                    _ => serde_json::json!({
                        "oid": oid, "size": size,
                        "error": {"code": 404, "message": "Object does not exist"},
                    }),
                };
                objects.push(answer);
            }
            drop(s);
            lfs_json(
                stream,
                200,
                serde_json::json!({"transfer": transfer, "objects": objects}),
            );
        }
    }

    /// Assemble an upload: parts listed in order 1..=n, each with the ETag
    /// its PUT was answered with, and the bytes hash to the oid.
    fn complete(st: &Mutex<State>, req: &Req) -> Result<(), String> {
        let v: serde_json::Value =
            serde_json::from_slice(&req.body).map_err(|e| format!("not JSON: {e}"))?;
        let id: u64 = req
            .param("uploadId")
            .and_then(|i| i.parse().ok())
            .ok_or("no uploadId")?;
        let mut s = st.lock().unwrap();
        let up = s.uploads.get(&id).ok_or("no such upload")?;
        if v["oid"].as_str() != Some(up.oid.as_str()) {
            return Err(format!("oid {} is not the upload's", v["oid"]));
        }
        let parts = v["parts"].as_array().ok_or("no parts")?;
        if parts.len() as u64 != up.parts {
            return Err(format!(
                "{} parts listed, {} expected",
                parts.len(),
                up.parts
            ));
        }
        let mut bytes = Vec::new();
        for (i, part) in parts.iter().enumerate() {
            let n = i as u64 + 1;
            if part["partNumber"].as_u64() != Some(n) {
                return Err(format!("part #{n} is listed as {}", part["partNumber"]));
            }
            let (etag, data) = up
                .got
                .get(&n)
                .ok_or(format!("part {n} was never uploaded"))?;
            if part["etag"].as_str() != Some(etag.as_str()) {
                return Err(format!("part {n}: etag {} is not {etag}", part["etag"]));
            }
            bytes.extend_from_slice(data);
        }
        if bytes.len() as u64 != up.size || sha256_hex(&bytes) != up.oid {
            return Err("the parts do not hash to the oid".into());
        }
        let oid = up.oid.clone();
        s.uploads.remove(&id);
        s.objects.insert(oid, bytes);
        Ok(())
    }

    fn storage_handle(st: &Mutex<State>, chunk_size: u64, stream: TcpStream, req: Req) {
        let mut s = st.lock().unwrap();
        // Presigned: the signature is the auth; S3 refuses a second one.
        if req.header("authorization").is_some() {
            s.leaked_auth += 1;
            drop(s);
            return respond(stream, 400, &[], b"<Error><Code>InvalidArgument</Code><Message>Only one auth mechanism allowed</Message></Error>");
        }
        if req.param("X-Amz-Signature").is_none() {
            drop(s);
            return respond(
                stream,
                403,
                &[],
                b"<Error><Code>AccessDenied</Code></Error>",
            );
        }
        match (req.method.as_str(), req.path.as_str()) {
            ("PUT", "/part") => {
                let id: u64 = req
                    .param("uploadId")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(u64::MAX);
                let n: u64 = req
                    .param("partNumber")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                let attempt = {
                    let a = s.part_attempts.entry(n).or_default();
                    *a += 1;
                    *a
                };
                if let Some(hook) = s.on_part.as_mut() {
                    hook(n);
                }
                if attempt == 1 && s.fail_once.contains(&n) {
                    drop(s);
                    return respond(
                        stream,
                        500,
                        &[],
                        b"<Error><Code>InternalError</Code></Error>",
                    );
                }
                let Some(up) = s.uploads.get_mut(&id) else {
                    drop(s);
                    return respond(
                        stream,
                        404,
                        &[],
                        b"<Error><Code>NoSuchUpload</Code></Error>",
                    );
                };
                // Every part but the last is exactly one chunk.
                let want = if n == up.parts {
                    up.size - (up.parts - 1) * chunk_size
                } else {
                    chunk_size
                };
                if req.body.len() as u64 != want || n == 0 || n > up.parts {
                    drop(s);
                    return respond(stream, 400, &[], b"<Error><Code>InvalidPart</Code></Error>");
                }
                let etag = format!("\"{}\"", &sha256_hex(&req.body)[..32]);
                up.got.insert(n, (etag.clone(), req.body));
                drop(s);
                respond(stream, 200, &[("ETag", etag)], b"");
            }
            ("PUT", p) if p.starts_with("/object/") => {
                let oid = p.trim_start_matches("/object/").to_string();
                s.single_puts += 1;
                s.objects.insert(oid, req.body);
                drop(s);
                respond(stream, 200, &[], b"");
            }
            ("GET", p) if p.starts_with("/object/") => {
                let bytes = s.objects.get(p.trim_start_matches("/object/")).cloned();
                drop(s);
                match bytes {
                    Some(b) => respond(stream, 200, &[], &b),
                    None => respond(stream, 404, &[], b"<Error><Code>NoSuchKey</Code></Error>"),
                }
            }
            _ => {
                drop(s);
                respond(stream, 405, &[], b"");
            }
        }
    }
}

fn tree_path(p: &Path) -> String {
    p.display().to_string().trim_start_matches('/').to_string()
}

/// A stack backing `./data` up to a bare `remote.git`, large files (1 MiB
/// and up, plus `extra` large_files keys) through the fake's LFS endpoint.
fn hf_stack(fake: &fake_hf::Fake, extra: &str) -> (Stack, PathBuf) {
    let s = Stack::new(&format!(
        r#"
name: hf
services: {{}}
persist:
  remote: ./remote.git
  token: ${{HF_TOKEN}}
  workdir: ./work
  paths: [./data]
  large_files: {{ threshold: 1MiB, store: lfs, url: "{}"{extra} }}
"#,
        fake.endpoint
    ))
    .env("HF_TOKEN", TOKEN);
    git(
        s.dir.path(),
        &["init", "-q", "--bare", "-b", "main", "remote.git"],
    );
    let data = s.path("data");
    fs::create_dir_all(&data).unwrap();
    (s, data)
}

#[test]
fn a_multipart_upload_round_trips_through_backup_and_restore() {
    // Parts of 1 MiB above 2 MiB; part 2 fails once with a 500.
    let fake = fake_hf::Fake::start(TOKEN, MIB as u64, 2 * MIB as u64);
    fake.state.lock().unwrap().fail_once = vec![2];
    let (s, data) = hf_stack(&fake, "");
    // Four parts (the last one short), one single PUT, one small file.
    let files = [
        ("big.bin", noise(3 * MIB + MIB / 2 + 17, 1)),
        ("mid.bin", noise(MIB + MIB / 2, 2)),
        ("small.txt", b"small".to_vec()),
    ];
    for (name, bytes) in &files {
        fs::write(data.join(name), bytes).unwrap();
    }
    let check = |o: &crate::harness::Output| {
        assert!(
            !o.stdout.contains(TOKEN) && !o.stderr.contains(TOKEN),
            "the token was printed\n{o}"
        );
    };
    let o = s.run(&["restore"]);
    check(&o);
    o.code(0);
    let o = s.run(&["backup"]);
    check(&o);
    o.code(0).stdout_has("pushed");

    let big_oid = sha256_hex(&files[0].1);
    {
        let st = fake.state.lock().unwrap();
        assert_eq!(st.objects.get(&big_oid), Some(&files[0].1));
        assert_eq!(st.objects.get(&sha256_hex(&files[1].1)), Some(&files[1].1));
        assert_eq!(st.completions, 1, "refused: {:?}", st.refused);
        assert_eq!(st.single_puts, 1);
        let mut attempts: Vec<_> = st.part_attempts.iter().map(|(n, a)| (*n, *a)).collect();
        attempts.sort();
        assert_eq!(
            attempts,
            vec![(1, 1), (2, 2), (3, 1), (4, 1)],
            "part 2 retried alone"
        );
        assert_eq!(st.leaked_auth, 0, "Authorization reached the storage");
        assert!(
            st.transfers.contains(&"multipart".to_string()),
            "{:?}",
            st.transfers
        );
        // Every batch request authenticated (Basic here: not huggingface.co).
        assert!(
            !st.batch_auth.is_empty() && st.batch_auth.iter().all(|a| a.starts_with("Basic ")),
            "{:?}",
            st.batch_auth
        );
    }
    // The branch holds a Git LFS pointer, never the bytes.
    let remote = s.path("remote.git");
    let pointer = git(
        &remote,
        &[
            "show",
            &format!("main:{}", tree_path(&data.join("big.bin"))),
        ],
    );
    assert!(
        pointer.starts_with("version https://git-lfs.github.com/spec/v1")
            && pointer.contains(&format!("oid sha256:{big_oid}")),
        "{pointer}"
    );

    // A wiped disk: everything comes back from the repository and the fake.
    fs::remove_dir_all(&data).unwrap();
    fs::remove_dir_all(s.path("work")).unwrap();
    let o = s.run(&["restore"]);
    check(&o);
    o.code(0);
    for (name, bytes) in &files {
        assert_eq!(&fs::read(data.join(name)).unwrap(), bytes, "`{name}`");
    }
    assert_eq!(fake.state.lock().unwrap().leaked_auth, 0);
}

/// A bare remote and a data dir, for the library-level tests.
/// The shared temp root and remote, backing up with the fake's token.
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
        fs::create_dir_all(&dirs.data).unwrap();
        Self(dirs)
    }

    fn config(&self, workdir: &str) -> Persist {
        Persist {
            token: Some(TOKEN.into()),
            ..self.0.config(workdir)
        }
    }

    fn remote_head(&self) -> String {
        git(&self.remote, &["rev-parse", "refs/heads/main"])
    }
}

#[test]
fn a_file_changed_during_a_multipart_upload_is_never_assembled_nor_committed() {
    let fake = fake_hf::Fake::start(TOKEN, MIB as u64, 2 * MIB as u64);
    let s = Setup::new();
    let store = StoreConfig::Lfs {
        url: fake.endpoint.clone(),
    };
    fs::write(s.data.join("small.txt"), "v1").unwrap();
    let p = Persister::with_store(s.config("work"), quick(), &store).unwrap();
    p.restore(&RestoreOptions::default()).unwrap();
    p.snapshot_and_push().unwrap();
    let good = s.remote_head();

    // While part 2 is being received, the end of the file is rewritten
    // (same size): part 3 would carry bytes that no longer hash to the
    // pointer taken before the upload.
    let big = s.data.join("big.bin");
    let original = noise(3 * MIB, 5);
    fs::write(&big, &original).unwrap();
    let target = big.clone();
    fake.state.lock().unwrap().on_part = Some(Box::new(move |n| {
        if n == 2 {
            let mut f = fs::OpenOptions::new().write(true).open(&target).unwrap();
            use std::io::{Seek, SeekFrom};
            f.seek(SeekFrom::End(-4)).unwrap();
            f.write_all(b"edit").unwrap();
        }
    }));
    let e = p.snapshot_and_push().unwrap_err();
    assert!(matches!(e, PersistError::Blob { .. }), "{e}");
    assert!(
        e.to_string().contains("changed while it was uploaded"),
        "{e}"
    );
    assert_eq!(s.remote_head(), good, "nothing was pushed");
    {
        let mut st = fake.state.lock().unwrap();
        assert_eq!(st.completions, 0, "the parts were never assembled");
        assert!(st.objects.is_empty());
        // Its last bytes were withheld: the request never arrived whole.
        assert_eq!(st.part_attempts.get(&3), None, "part 3 arrived complete");
        assert_eq!(st.part_attempts.get(&2), Some(&1));
        st.on_part = None;
    }

    // The next snapshot hashes the new content and uploads it whole.
    let rep = p.snapshot_and_push().unwrap();
    assert!(rep.pushed.is_some());
    let now = fs::read(&big).unwrap();
    assert_ne!(now, original);
    let st = fake.state.lock().unwrap();
    assert_eq!(st.objects.get(&sha256_hex(&now)), Some(&now));
    assert_eq!(st.completions, 1);
    assert_eq!(st.leaked_auth, 0);
}

fn fast() -> Retry {
    Retry {
        attempts: 3,
        initial: Duration::from_millis(10),
        max: Duration::from_millis(20),
    }
}

#[test]
fn the_store_against_the_fake_checks_credentials_and_never_shows_the_token() {
    let fake = fake_hf::Fake::start(TOKEN, 64 * 1024, 100 * 1024);
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("f");
    let bytes = noise(300 * 1024 + 1, 7);
    fs::write(&src, &bytes).unwrap();
    let ptr = blob::hash_file(&src).unwrap();

    // A wrong token: refused, and neither token shows in the error.
    let wrong = format!("{TOKEN}-revoked");
    let bad = LfsStore::new(&fake.endpoint, Some(wrong.clone()))
        .unwrap()
        .with_retry(fast());
    let e = bad.put(&ptr, &src).unwrap_err();
    assert!(matches!(e, BlobError::Auth { status: 401, .. }), "{e}");
    let text = format!("{e} {e:?}");
    assert!(!text.contains(&wrong) && !text.contains(TOKEN), "{text}");

    let store = LfsStore::new(&fake.endpoint, Some(TOKEN.into()))
        .unwrap()
        .with_retry(fast());
    assert!(!store.has(&ptr).unwrap());
    store.put(&ptr, &src).unwrap();
    assert!(store.has(&ptr).unwrap());
    // Already there: no second upload.
    store.put(&ptr, &src).unwrap();
    let mut out = Vec::new();
    store.get(&ptr, &mut out).unwrap();
    assert_eq!(out, bytes);
    let st = fake.state.lock().unwrap();
    assert_eq!(st.completions, 1);
    assert_eq!(st.part_attempts.len(), 5, "300 KiB + 1 in 64 KiB parts");
    assert!(st.part_attempts.values().all(|a| *a == 1));
    assert_eq!(st.leaked_auth, 0);
}

#[test]
fn small_binary_files_and_databases_go_to_lfs_under_offload_binary_and_text_stays() {
    // `offload_binary: always` stands in for a huggingface.co remote (`auto`
    // turns it on there): the fake cannot be reached under that name.
    let fake = fake_hf::Fake::start(TOKEN, MIB as u64, 2 * MIB as u64);
    let (s, data) = hf_stack(&fake, ", offload_binary: always");
    // 200 KiB each, far below the threshold. The binary one has its only
    // sure NUL late in git's 8000-byte window; the text one has none.
    let mut binary = noise(200 * 1024, 11);
    binary.iter_mut().for_each(|b| *b = (*b).max(1));
    binary[7999] = 0;
    let text: Vec<u8> = (0..)
        .flat_map(|i| format!("line {i}: plain UTF-8 text, café\n").into_bytes())
        .take(200 * 1024)
        .collect();
    fs::write(data.join("blob.bin"), &binary).unwrap();
    fs::write(data.join("notes.txt"), &text).unwrap();
    // A small database: snapshotted through the backup API, and binary.
    let db = data.join("app.db");
    {
        let c = rusqlite::Connection::open(&db).unwrap();
        c.execute_batch("create table t(x); insert into t values ('kept'), ('too');")
            .unwrap();
    }

    s.run(&["restore"]).code(0);
    s.run(&["backup"]).code(0).stdout_has("pushed");

    let remote = s.path("remote.git");
    let at = |name: &str| format!("main:{}", tree_path(&data.join(name)));
    let bin_oid = sha256_hex(&binary);
    let pointer = git(&remote, &["cat-file", "-p", &at("blob.bin")]);
    // (Only the start is shown: on failure this is 200 KiB of noise.)
    let start = |t: &str| t.chars().take(100).collect::<String>();
    assert!(
        pointer
            == format!(
                "version https://git-lfs.github.com/spec/v1\noid sha256:{bin_oid}\nsize {}",
                binary.len()
            ),
        "the binary file is not an LFS pointer: {:?}",
        start(&pointer)
    );
    let db_pointer = git(&remote, &["cat-file", "-p", &at("app.db")]);
    assert!(
        db_pointer.starts_with("version https://git-lfs.github.com/spec/v1\noid sha256:"),
        "the database is not an LFS pointer: {:?}",
        start(&db_pointer)
    );
    // The text file is stored as it is: its blob id is its content's.
    let text_file = data.join("notes.txt");
    assert_eq!(
        git(&remote, &["rev-parse", &at("notes.txt")]),
        git(s.dir.path(), &["hash-object", text_file.to_str().unwrap()]),
    );
    let attributes = git(&remote, &["cat-file", "-p", "main:.gitattributes"]);
    for (name, tracked) in [("blob.bin", true), ("app.db", true), ("notes.txt", false)] {
        assert_eq!(
            attributes.contains(&tree_path(&data.join(name))),
            tracked,
            "`{name}` in .gitattributes:\n{attributes}"
        );
    }
    let puts = {
        let st = fake.state.lock().unwrap();
        assert_eq!(st.objects.get(&bin_oid), Some(&binary));
        assert_eq!(st.objects.len(), 2, "the binary file and the database");
        st.single_puts
    };

    // Nothing changed: the same tree, nothing uploaded again.
    s.run(&["backup"])
        .code(0)
        .stdout_has("nothing changed since the last snapshot");
    assert_eq!(fake.state.lock().unwrap().single_puts, puts);

    // A wiped disk: everything comes back byte-identical.
    fs::remove_dir_all(&data).unwrap();
    fs::remove_dir_all(s.path("work")).unwrap();
    s.run(&["restore"]).code(0);
    assert_eq!(fs::read(data.join("blob.bin")).unwrap(), binary);
    assert_eq!(fs::read(&text_file).unwrap(), text);
    let c = rusqlite::Connection::open(&db).unwrap();
    let rows: Vec<String> = c
        .prepare("select x from t order by rowid")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(rows, ["kept", "too"]);
    drop(c);
    // And a snapshot right after the restore commits nothing.
    s.run(&["backup"])
        .code(0)
        .stdout_has("nothing changed since the last snapshot");
}
