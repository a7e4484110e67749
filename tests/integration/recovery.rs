//! Manual recovery through the admin API (issue 14), end to end: the real
//! binary, a `file://` git remote, real services. Back up now, list the
//! snapshots page by page, preview a restore, restore one path while
//! another service keeps writing elsewhere, undo it through the automatic
//! pre-restore snapshot; the refusals (password, confirmation, a second
//! restore at the same time, persistence off).

use std::io::{BufRead, Write};
use std::time::Duration;

use serde_json::{json, Value};

use crate::harness::{free_port, http_request, poll, Stack};

const T: Duration = Duration::from_secs(30);
const PASSWORD: &str = "correct-horse-battery";

/// Two services, each in its own persisted directory: `a` (idle; with
/// `slow_stop` it ignores SIGTERM and is killed after its 2 s
/// `stop_timeout`) and `b`, which appends to its log every 50 ms.
fn stack(port: u16, slow_stop: bool) -> Stack {
    let a = if slow_stop {
        "trap '' TERM; echo started; while true; do sleep 0.1; done"
    } else {
        "echo started; exec sleep 1000"
    };
    let s = Stack::new(&format!(
        r#"
name: recovery
services:
  a:
    command: [sh, -c, "{a}"]
    working_dir: ./data/a
    stop_timeout: 2s
  b:
    command: [sh, -c, "echo started; while true; do echo x >> log.txt; sleep 0.05; done"]
    working_dir: ./data/b
    stop_timeout: 2s
gateway:
  listen: 127.0.0.1:{port}
  admin: {{ password: "{PASSWORD}" }}
persist:
  remote: ./remote.git
  workdir: ./work
  debounce: 30s
  paths: [./data/a, ./data/b]
"#
    ));
    std::fs::create_dir_all(s.path("data/a")).unwrap();
    std::fs::create_dir_all(s.path("data/b")).unwrap();
    crate::common_persist::init_bare(&s.path("remote.git"));
    s
}

/// One admin API call with the password: (status, JSON body or Null).
fn api(port: u16, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    api_as(port, method, path, body, PASSWORD)
}

fn api_as(port: u16, method: &str, path: &str, body: Option<Value>, pw: &str) -> (u16, Value) {
    let text = body.map(|b| b.to_string()).unwrap_or_default();
    let mut headers = vec![("X-Admin-Password", pw)];
    if !text.is_empty() {
        headers.push(("Content-Type", "application/json"));
    }
    let (code, _, body) = http_request(
        method,
        &format!("http://127.0.0.1:{port}{path}"),
        &headers,
        &text,
    )
    .unwrap_or_else(|| panic!("no answer to {method} {path}"));
    (code, serde_json::from_str(&body).unwrap_or(Value::Null))
}

fn wait_ready(port: u16) {
    poll(T, "the admin API", || {
        let (code, v) = api(port, "GET", "/admin/persist", None);
        (code == 200 && v["enabled"] == json!(true)).then_some(())
    });
}

fn pid_of(port: u16, svc: &str) -> Option<u64> {
    api(port, "GET", "/admin/status", None).1["services"][svc]["pid"].as_u64()
}

fn backup(port: u16) -> String {
    let (code, v) = api(port, "POST", "/admin/persist/backup", Some(json!({})));
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["ok"], json!(true), "{v}");
    assert_eq!(v["snapshot"]["pushed"], json!(true), "{v}");
    v["snapshot"]["id"].as_str().unwrap().to_string()
}

fn read(s: &Stack, rel: &str) -> Option<String> {
    std::fs::read_to_string(s.path(rel)).ok()
}

#[test]
fn back_up_list_preview_restore_one_path_and_undo() {
    let port = free_port();
    let s = stack(port, false);
    std::fs::write(s.path("data/a/note.txt"), "v1").unwrap();
    let mut up = s.up();
    up.wait_for("a | started", T);
    up.wait_for("b | started", T);
    wait_ready(port);

    let (code, state) = api(port, "GET", "/admin/persist", None);
    assert_eq!(code, 200);
    assert_eq!(state["restore"]["state"], json!("fresh"), "{state}");
    assert_eq!(state["branch"], json!("main"));
    assert_eq!(state["running"], Value::Null);

    let first = backup(port);
    std::fs::write(s.path("data/a/note.txt"), "v2").unwrap();
    std::fs::write(s.path("data/a/new.txt"), "added later").unwrap();
    let second = backup(port);
    assert_ne!(first, second);
    let (_, state) = api(port, "GET", "/admin/persist", None);
    assert_eq!(state["last_snapshot"]["id"], json!(second), "{state}");
    assert_eq!(state["last_snapshot"]["pushed"], json!(true), "{state}");
    assert_eq!(state["pending"], json!(0), "{state}");

    // The list, one snapshot per page: newest first, `next` leads on.
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    for _ in 0..20 {
        let q = match &after {
            Some(a) => format!("/admin/persist/snapshots?limit=1&after={a}"),
            None => "/admin/persist/snapshots?limit=1".to_string(),
        };
        let (code, page) = api(port, "GET", &q, None);
        assert_eq!(code, 200, "{page}");
        let items = page["snapshots"].as_array().unwrap();
        assert!(items.len() <= 1, "{page}");
        seen.extend(items.iter().map(|i| i["id"].as_str().unwrap().to_string()));
        match page["next"].as_str() {
            Some(n) => after = Some(n.to_string()),
            None => break,
        }
    }
    let pos = |id: &str| seen.iter().position(|s| s == id);
    assert!(
        pos(&second).unwrap() < pos(&first).unwrap(),
        "newest first: {seen:?}"
    );
    let (code, _) = api(port, "GET", "/admin/persist/snapshots?limit=0", None);
    assert_eq!(code, 400);

    // The preview: nothing changes on disk.
    let a = s.path("data/a").display().to_string();
    let short = &first[..12];
    let (code, dry) = api(
        port,
        "POST",
        "/admin/persist/restore",
        Some(json!({"at": short, "paths": [a], "dry_run": true})),
    );
    assert_eq!(code, 200, "{dry}");
    assert_eq!(dry["at"], json!(first), "the full id: {dry}");
    let p = &dry["paths"][0];
    assert_eq!(p["path"], json!(a), "{dry}");
    assert_eq!(
        (&p["added"], &p["changed"], &p["removed"], &p["bytes"]),
        (&json!(0), &json!(1), &json!(1), &json!(2)),
        "{dry}"
    );
    let mut files: Vec<(String, String)> = p["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["path"]
                    .as_str()
                    .unwrap()
                    .rsplit('/')
                    .next()
                    .unwrap()
                    .to_string(),
                f["change"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    files.sort();
    assert_eq!(
        files,
        [
            ("new.txt".to_string(), "removed".to_string()),
            ("note.txt".to_string(), "changed".to_string())
        ]
    );
    assert_eq!(read(&s, "data/a/note.txt").as_deref(), Some("v2"));

    // The same restore through the control socket (no HTTP, no password:
    // only the stack's user can reach it).
    let sock = stackctl::control::socket_path(&s.path("work"));
    let mut conn = std::os::unix::net::UnixStream::connect(&sock).unwrap();
    let line = json!({"at": short, "paths": [a], "dry_run": true});
    writeln!(conn, "restore {line}").unwrap();
    let mut answer = String::new();
    std::io::BufReader::new(conn)
        .read_line(&mut answer)
        .unwrap();
    let answer: Value = serde_json::from_str(&answer).unwrap();
    assert_eq!(answer["ok"], json!(true), "{answer}");
    assert_eq!(answer["result"]["at"], json!(first), "{answer}");
    assert_eq!(
        answer["result"]["paths"][0]["changed"],
        json!(1),
        "{answer}"
    );

    // Refusals: no confirmation, wrong password, unknown snapshot, a path
    // that is not persisted.
    let (code, e) = api(
        port,
        "POST",
        "/admin/persist/restore",
        Some(json!({"at": first, "paths": [a]})),
    );
    assert_eq!(code, 400, "{e}");
    assert!(e["error"].as_str().unwrap().contains("confirm"), "{e}");
    let (code, _) = api_as(
        port,
        "POST",
        "/admin/persist/restore",
        Some(json!({"at": first, "paths": [a], "confirm": first})),
        "wrong-password-here",
    );
    assert_eq!(code, 403);
    let (code, e) = api(
        port,
        "POST",
        "/admin/persist/restore",
        Some(json!({"at": "deadbeefdeadbeef", "dry_run": true})),
    );
    assert_eq!(code, 404, "{e}");
    let (code, e) = api(
        port,
        "POST",
        "/admin/persist/restore",
        Some(json!({"at": first, "dry_run": true, "paths": ["/etc"]})),
    );
    assert_eq!(code, 400, "{e}");
    assert_eq!(read(&s, "data/a/note.txt").as_deref(), Some("v2"));

    // The restore of `data/a`: `a` stops and starts again, `b` goes on
    // writing its own directory throughout.
    let b_pid = pid_of(port, "b").expect("b runs");
    let b_log = read(&s, "data/b/log.txt").unwrap_or_default().len();
    let (code, done) = api(
        port,
        "POST",
        "/admin/persist/restore",
        Some(json!({"at": first, "paths": [a], "confirm": first})),
    );
    assert_eq!(code, 200, "{done}");
    assert_eq!(done["ok"], json!(true));
    assert_eq!(done["at"], json!(first));
    assert_eq!(done["stopped"], json!(["a"]), "{done}");
    assert_eq!(done["restarted"], json!(["a"]), "{done}");
    assert_eq!(done["paths"][0]["changed"], json!(1), "{done}");
    assert_eq!(done["paths"][0]["removed"], json!(1), "{done}");
    assert!(done["paths"][0].get("files").is_none(), "{done}");
    let undo = done["undo"].as_str().unwrap().to_string();
    assert_eq!(read(&s, "data/a/note.txt").as_deref(), Some("v1"));
    assert!(!s.path("data/a/new.txt").exists());
    up.wait_for_nth("a | started", 2, T);
    assert_eq!(pid_of(port, "b"), Some(b_pid), "b was not stopped");
    poll(T, "b still writing", || {
        (read(&s, "data/b/log.txt").unwrap_or_default().len() > b_log).then_some(())
    });

    // Undo: the snapshot taken just before the restore brings v2 back.
    let (code, back) = api(
        port,
        "POST",
        "/admin/persist/restore",
        Some(json!({"at": undo, "paths": [a], "confirm": undo})),
    );
    assert_eq!(code, 200, "{back}");
    assert_eq!(read(&s, "data/a/note.txt").as_deref(), Some("v2"));
    assert_eq!(read(&s, "data/a/new.txt").as_deref(), Some("added later"));

    up.signal(libc::SIGTERM);
    assert_eq!(up.wait_exit(T).code(), Some(0), "{}", up.log());
}

#[test]
fn of_two_restores_at_once_one_wins_and_the_other_gets_409() {
    let port = free_port();
    // `a` takes its whole stop_timeout to stop: the first restore is
    // still running when the second arrives.
    let s = stack(port, true);
    std::fs::write(s.path("data/a/note.txt"), "v1").unwrap();
    let mut up = s.up();
    up.wait_for("a | started", T);
    wait_ready(port);
    let id = backup(port);
    let a = s.path("data/a").display().to_string();
    let body = json!({"at": id, "paths": [a], "confirm": id});
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(2));
    let threads: Vec<_> = (0..2)
        .map(|_| {
            let (body, barrier) = (body.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                api(port, "POST", "/admin/persist/restore", Some(body))
            })
        })
        .collect();
    let mut answers: Vec<(u16, Value)> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    answers.sort_by_key(|(c, _)| *c);
    assert_eq!(answers[0].0, 200, "{answers:?}");
    assert_eq!(answers[1].0, 409, "{answers:?}");
    assert!(
        answers[1].1["error"]
            .as_str()
            .unwrap()
            .contains("restore is running"),
        "{answers:?}"
    );
    // Afterwards the slot is free again.
    let (_, state) = api(port, "GET", "/admin/persist", None);
    assert_eq!(state["running"], Value::Null, "{state}");
    up.wait_for_nth("a | started", 2, T);
    up.signal(libc::SIGTERM);
    assert_eq!(up.wait_exit(T).code(), Some(0), "{}", up.log());
}

#[test]
fn without_persistence_the_state_says_so_and_the_rest_is_409() {
    let port = free_port();
    let s = Stack::new(&format!(
        r#"
name: nopersist
services:
  a:
    command: [sh, -c, "echo started; exec sleep 1000"]
gateway:
  listen: 127.0.0.1:{port}
  admin: {{ password: "{PASSWORD}" }}
"#
    ));
    let mut up = s.up();
    up.wait_for("a | started", T);
    let (code, v) = poll(T, "the admin API", || {
        let r = api(port, "GET", "/admin/persist", None);
        (r.0 == 200).then_some(r)
    });
    assert_eq!((code, v), (200, json!({"enabled": false})));
    let calls = [
        ("POST", "/admin/persist/backup", Some(json!({}))),
        ("GET", "/admin/persist/snapshots", None),
        (
            "POST",
            "/admin/persist/restore",
            Some(json!({"at": "abcd", "dry_run": true})),
        ),
    ];
    for (method, path, body) in calls {
        let (code, e) = api(port, method, path, body);
        assert_eq!(code, 409, "{path}: {e}");
        assert_eq!(
            e["error"],
            json!("persistence is off: add a persist section to stack.yaml"),
            "{path}"
        );
    }
    // The password still guards it.
    let (code, _) = api_as(port, "GET", "/admin/persist", None, "wrong-password-here");
    assert_eq!(code, 403);
    up.signal(libc::SIGTERM);
    assert_eq!(up.wait_exit(T).code(), Some(0), "{}", up.log());
}

/// The state's live fields: after a backup with a large file, the last
/// push, the write lease and the large-file totals are real values; a
/// write afterwards shows as pending changes with the next snapshot one
/// debounce after it.
#[test]
fn the_state_shows_the_push_the_lease_large_files_and_the_next_snapshot() {
    let port = free_port();
    let s = Stack::new(&format!(
        r#"
name: live
services:
  a:
    command: [sh, -c, "echo started; exec sleep 1000"]
    working_dir: ./data
gateway:
  listen: 127.0.0.1:{port}
  admin: {{ password: "{PASSWORD}" }}
persist:
  remote: ./remote.git
  workdir: ./work
  debounce: 30s
  paths: [./data]
  large_files: {{ store: "dir:./blobs", threshold: 1KiB }}
"#
    ));
    std::fs::create_dir_all(s.path("data")).unwrap();
    crate::common_persist::init_bare(&s.path("remote.git"));
    std::fs::write(s.path("data/big.bin"), vec![7u8; 4096]).unwrap();
    std::fs::write(s.path("data/small.txt"), "small").unwrap();
    let mut up = s.up();
    up.wait_for("a | started", T);
    wait_ready(port);

    let id = backup(port);
    let state = dirty_is(port, false);
    assert_eq!(state["last_push"]["snapshot"], json!(id), "{state}");
    assert!(state["last_push"]["time"].is_string(), "{state}");
    let lease = &state["lease"];
    assert_eq!(lease["mine"], json!(true), "{state}");
    assert!(
        lease["holder"].as_str().is_some_and(|h| !h.is_empty()),
        "{state}"
    );
    assert!(lease["host"].is_string(), "{state}");
    // RFC 3339 UTC times of one format compare as strings.
    let time = |k: &str| lease[k].as_str().unwrap_or_else(|| panic!("{k}: {state}"));
    assert!(
        time("since") <= time("renewed") && time("renewed") < time("expires"),
        "{state}"
    );
    let large = &state["large_files"];
    assert!(
        large["store"]
            .as_str()
            .is_some_and(|s| s.starts_with("dir:")),
        "{state}"
    );
    assert_eq!(
        (large["files"].clone(), large["bytes"].clone()),
        (json!(1), json!(4096)),
        "{state}"
    );
    assert_eq!(
        state["next_snapshot"]["reason"],
        json!("periodic scan"),
        "{state}"
    );
    assert!(state["next_snapshot"]["time"].is_string(), "{state}");

    // A write: pending since then, snapshotted one debounce (30 s) later.
    std::fs::write(s.path("data/small.txt"), "changed").unwrap();
    let state = dirty_is(port, true);
    let since = state["changes"]["since"]
        .as_str()
        .unwrap_or_else(|| panic!("{state}"));
    let next = &state["next_snapshot"];
    assert_eq!(next["reason"], json!("first change"), "{state}");
    assert!(next["time"].as_str().is_some_and(|t| t > since), "{state}");

    up.signal(libc::SIGTERM);
    assert_eq!(up.wait_exit(T).code(), Some(0), "{}", up.log());
}

/// The state, once its `changes.dirty` is `dirty`.
fn dirty_is(port: u16, dirty: bool) -> Value {
    poll(T, &format!("changes.dirty = {dirty}"), || {
        let (_, v) = api(port, "GET", "/admin/persist", None);
        (v["changes"]["dirty"] == json!(dirty)).then_some(v)
    })
}
