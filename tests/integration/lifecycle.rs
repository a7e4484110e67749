//! `stackctl up` with persistence, end to end through the binary: restore
//! before services start, `stackctl backup` through the running stack, the
//! final backup on SIGTERM (exit 3 when it fails), the "restoring" page
//! while the remote is unreachable, and the gateway's live routes
//! surviving a wiped disk.

use std::process::Command;
use std::time::Duration;

use crate::harness::{free_port, http_get, http_request, poll, Stack};

const T: Duration = Duration::from_secs(30);

/// A stack whose one service prints the persisted file at start, behind a
/// gateway, persisted to a bare repository `remote.git` next to it.
fn stack(port: u16, remote: &str) -> Stack {
    let s = Stack::new(&format!(
        r#"
name: life
services:
  app:
    command: [sh, -c, "echo \"saw: $(cat data/note.txt 2>/dev/null || echo nothing)\"; exec sleep 1000"]
    restart: always
    stop_timeout: 2s
gateway:
  listen: 127.0.0.1:{port}
  admin: {{ password: "correct-horse-battery" }}
persist:
  remote: {remote}
  workdir: ./work
  debounce: 500ms
  paths: [./data]
"#
    ));
    std::fs::create_dir_all(s.path("data")).unwrap();
    s
}

fn bare_repo(s: &Stack) {
    crate::common_persist::init_bare(&s.path("remote.git"));
}

/// The remote branch's file `path` (tree path), or None.
fn remote_file(s: &Stack, path: &str) -> Option<String> {
    let out = Command::new("git")
        .arg("--git-dir")
        .arg(s.path("remote.git"))
        .args(["show", &format!("main:{path}")])
        .output()
        .unwrap();
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

fn tree_path(s: &Stack, rel: &str) -> String {
    s.path(rel)
        .display()
        .to_string()
        .trim_start_matches('/')
        .to_string()
}

#[test]
fn data_and_live_routes_survive_a_wiped_disk() {
    let port = free_port();
    let s = stack(port, "./remote.git");
    bare_repo(&s);
    std::fs::write(s.path("data/note.txt"), "first").unwrap();

    let mut up = s.up();
    up.wait_for("app | saw: first", T);
    // A live route edit through the admin API.
    s.run(&[
        "routes",
        "--password",
        "correct-horse-battery",
        "set",
        "/x/",
        "http://127.0.0.1:9",
    ])
    .code(0);
    std::fs::write(s.path("data/note.txt"), "second").unwrap();
    let out = s.run(&["backup"]);
    out.code(0).stdout_has("pushed");
    assert_eq!(
        remote_file(&s, &format!("{}/note.txt", tree_path(&s, "data"))).as_deref(),
        Some("second")
    );
    up.signal(libc::SIGTERM);
    assert_eq!(up.wait_exit(T).code(), Some(0), "{}", up.log());
    drop(up);

    // The disk is wiped: data, workdir (git objects, gateway state) all gone.
    std::fs::remove_dir_all(s.path("data")).unwrap();
    std::fs::remove_dir_all(s.path("work")).unwrap();
    let mut up = s.up();
    // Restored before the service started.
    up.wait_for("app | saw: second", T);
    let (code, _, body) = poll(T, "the admin API", || {
        http_request(
            "GET",
            &format!("http://127.0.0.1:{port}/admin/routes.json"),
            &[("X-Admin-Password", "correct-horse-battery")],
            "",
        )
        .filter(|(c, _, _)| *c == 200)
    });
    assert_eq!(code, 200);
    assert!(body.contains("/x/"), "the live route came back: {body}");
    up.signal(libc::SIGTERM);
    assert_eq!(up.wait_exit(T).code(), Some(0), "{}", up.log());
}

#[test]
fn sigterm_takes_a_final_backup() {
    let port = free_port();
    let s = stack(port, "./remote.git");
    bare_repo(&s);
    let mut up = s.up();
    up.wait_for("app | saw: nothing", T);
    std::fs::write(s.path("data/late.txt"), "written just before the stop").unwrap();
    up.signal(libc::SIGTERM);
    assert_eq!(up.wait_exit(T).code(), Some(0), "{}", up.log());
    assert!(up.has_line("final backup pushed"), "{}", up.log());
    assert_eq!(
        remote_file(&s, &format!("{}/late.txt", tree_path(&s, "data"))).as_deref(),
        Some("written just before the stop")
    );
}

#[test]
fn a_failed_final_backup_exits_3() {
    let port = free_port();
    let s = stack(port, "./remote.git");
    bare_repo(&s);
    let mut up = s.up();
    up.wait_for("app | saw: nothing", T);
    // The remote disappears (a revoked token, a deleted repository): make it
    // unusable, then change data and stop.
    std::fs::remove_dir_all(s.path("remote.git")).unwrap();
    std::fs::write(s.path("remote.git"), "not a repository").unwrap();
    std::fs::write(s.path("data/unsaved.txt"), "at risk").unwrap();
    up.signal(libc::SIGTERM);
    let status = up.wait_exit(T);
    assert_eq!(status.code(), Some(3), "{}", up.log());
    assert!(up.has_line("final backup failed"), "{}", up.log());
}

#[test]
fn an_unreachable_remote_keeps_services_waiting_behind_a_restoring_page() {
    let port = free_port();
    let dead = free_port();
    // Short retry delays (the documented knob): the persister's own retries
    // would wait 1+2+4+8 s before the restore loop sees the failure.
    let s = stack(port, &format!("http://127.0.0.1:{dead}/repo.git"))
        .env("STACKCTL_RETRY_DELAY", "50ms");
    let mut up = s.up();
    let (code, _, body) = poll(T, "the restoring page", || {
        http_get(&format!("http://127.0.0.1:{port}/")).filter(|(c, _, _)| *c == 503)
    });
    assert_eq!(code, 503);
    assert!(body.contains("restoring"), "{body}");
    // Once the first attempt failed, the page says it waits, with the
    // attempt, not "fetching" (issue 17).
    let (_, _, body) = poll(T, "the waiting line", || {
        http_get(&format!("http://127.0.0.1:{port}/"))
            .filter(|(_, _, b)| b.contains("waiting for the backup repository (attempt 2)"))
    });
    assert!(!body.contains("fetching"), "{body}");
    let (code, _, _) = http_get(&format!("http://127.0.0.1:{port}/admin/healthz")).unwrap();
    assert_eq!(code, 503);
    up.wait_for("restore failed; retrying", T);
    assert!(
        !up.has_line("app |"),
        "a service started before the restore:\n{}",
        up.log()
    );
    up.signal(libc::SIGTERM);
    assert_eq!(up.wait_exit(T).code(), Some(0), "{}", up.log());
    assert!(
        up.has_line("stopped before the restore finished"),
        "{}",
        up.log()
    );
}

/// Issue 17, under `up`: a pointer named `...pointer` in the backup must
/// not remove the stack directory holding `data` (and `app` beside it).
#[test]
fn up_refuses_a_pointer_named_to_climb_out_and_removes_nothing() {
    let port = free_port();
    let s = stack(port, "./remote.git");
    bare_repo(&s);
    s.write("app/keep.txt", "mine");
    crate::common_persist::push_tree(
        &s.path(""),
        &s.path("remote.git"),
        &s.path("data"),
        "orig",
        &crate::common_persist::hostile_pointer_files(),
    );
    let mut up = s.up();
    let status = up.wait_exit(T);
    assert_eq!(status.code(), Some(1), "{}", up.log());
    assert!(
        up.has_line("a large-file pointer for `..`, an unsafe name"),
        "{}",
        up.log()
    );
    assert!(!up.has_line("app |"), "{}", up.log());
    assert_eq!(
        std::fs::read_to_string(s.path("app/keep.txt")).unwrap(),
        "mine"
    );
    assert!(s.file().exists(), "the manifest is still there");
}

#[test]
fn snapshots_and_restore_work_without_a_running_stack() {
    let port = free_port();
    let s = stack(port, "./remote.git");
    bare_repo(&s);
    std::fs::write(s.path("data/note.txt"), "kept").unwrap();
    let mut up = s.up();
    up.wait_for("app | saw: kept", T);
    up.signal(libc::SIGTERM);
    assert_eq!(up.wait_exit(T).code(), Some(0), "{}", up.log());
    drop(up);

    s.run(&["snapshots"]).code(0).stdout_has("files");
    std::fs::write(s.path("data/note.txt"), "edited by hand").unwrap();
    std::fs::write(s.path("data/extra.txt"), "not in the snapshot").unwrap();
    s.run(&["restore", "--dry-run"])
        .code(0)
        .stdout_has("would restore")
        .stdout_has("note.txt")
        .stdout_has("extra.txt (with --force)");
    // Newer local data is not overwritten without --force.
    s.run(&["restore"]).code(1).stderr_has("--force");
    s.run(&["restore", "--force"])
        .code(0)
        .stdout_has("extra.txt (not in the snapshot)")
        .stdout_has("restored snapshot");
    assert_eq!(
        std::fs::read_to_string(s.path("data/note.txt")).unwrap(),
        "kept"
    );
    assert!(!s.path("data/extra.txt").exists());
}

/// The remote's `main` head, or None.
fn remote_head(s: &Stack) -> Option<String> {
    let out = Command::new("git")
        .arg("--git-dir")
        .arg(s.path("remote.git"))
        .args(["rev-parse", "-q", "--verify", "refs/heads/main"])
        .output()
        .unwrap();
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Issue 17: in a workdir that never completed a restore (wiped, or only
/// looked at the remote with `snapshots` / `restore --dry-run`), neither
/// `restore` without `--force` nor `backup` replaces local files that
/// differ from the snapshot; after a completed restore, `backup` keeps and
/// pushes newer local data.
#[test]
fn without_a_completed_restore_nothing_overwrites_local_data() {
    let port = free_port();
    let s = stack(port, "./remote.git");
    bare_repo(&s);
    s.write("data/note.txt", "old");
    s.run(&["restore"]).code(0);
    s.run(&["backup"]).code(0);
    let pushed = remote_head(&s);
    assert!(pushed.is_some());
    let note = || std::fs::read_to_string(s.path("data/note.txt")).unwrap();
    // A wiped workdir, but the same writer (its lease is still held).
    let id = std::fs::read_to_string(s.path("work/instance-id")).unwrap();
    let fresh = |local: &str| {
        std::fs::remove_dir_all(s.path("work")).unwrap();
        s.write("work/instance-id", &id);
        s.write("data/note.txt", local);
    };

    // 1. `restore` in a fresh workdir.
    fresh("newer local");
    s.run(&["restore"])
        .code(1)
        .stderr_has("1 local file(s) differ from the snapshot")
        .stderr_has("note.txt")
        .stderr_has("--force");
    assert_eq!(note(), "newer local");
    // 2. `snapshots`, then `backup`.
    fresh("newer local");
    s.run(&["snapshots"]).code(0);
    s.run(&["backup"]).code(1).stderr_has("has never restored");
    assert_eq!(note(), "newer local");
    // 3. `restore --dry-run`, then `backup`.
    fresh("newer local");
    s.run(&["restore", "--dry-run"])
        .code(0)
        .stdout_has("note.txt");
    s.run(&["backup"]).code(1).stderr_has("has never restored");
    assert_eq!(note(), "newer local");
    // 4. `restore --dry-run`, then `restore`.
    s.run(&["restore"]).code(1).stderr_has("--force");
    assert_eq!(note(), "newer local");
    assert_eq!(remote_head(&s), pushed, "nothing was pushed");

    // After a completed restore, newer local data is kept and pushed.
    s.run(&["restore", "--force"]).code(0);
    assert_eq!(note(), "old");
    s.write("data/note.txt", "newest");
    s.run(&["backup"]).code(0);
    assert_eq!(note(), "newest");
    assert_eq!(
        remote_file(&s, &format!("{}/note.txt", tree_path(&s, "data"))).as_deref(),
        Some("newest")
    );
}

/// Issue 17: a workdir path longer than a Unix socket path can be (108
/// bytes) still gets a control socket `stackctl backup` finds.
#[test]
fn a_long_workdir_path_keeps_the_control_socket_working() {
    let long = format!("./{}/work", "w".repeat(120));
    let s = Stack::new(&format!(
        r#"
services:
  app:
    command: [sh, -c, "echo started; exec sleep 1000"]
    stop_timeout: 2s
persist:
  remote: ./remote.git
  workdir: {long}
  paths: [./data]
"#
    ));
    std::fs::create_dir_all(s.path("data")).unwrap();
    bare_repo(&s);
    std::fs::write(s.path("data/note.txt"), "x").unwrap();
    let mut up = s.up();
    up.wait_for("app | started", T);
    s.run(&["backup"]).code(0).stdout_has("pushed");
    assert!(!up.has_line("no control socket"), "{}", up.log());
    up.signal(libc::SIGTERM);
    assert_eq!(up.wait_exit(T).code(), Some(0), "{}", up.log());
}

/// A stack whose service prints `data/small.txt`, with large files (1 KiB
/// and up) in a `dir:` store; `required` goes into the service's
/// `required_paths`.
fn large_file_stack(required: &str) -> Stack {
    let s = Stack::new(&format!(
        r#"
services:
  app:
    command: [sh, -c, "echo \"saw: $(cat data/small.txt)\"; exec sleep 1000"]
    stop_timeout: 2s
    required_paths: [{required}]
persist:
  remote: ./remote.git
  workdir: ./work
  paths: [./data]
  large_files: {{ store: "dir:./blobs", threshold: 1KiB }}
"#
    ));
    std::fs::create_dir_all(s.path("data")).unwrap();
    s
}

/// Issue 17: a large file whose blob is gone does not keep the stack down:
/// the rest is restored and the services start, the file is named in the
/// log; a service that lists it in `required_paths` keeps the old, strict
/// behaviour (`up` exits 1 naming it).
#[test]
fn a_missing_large_file_leaves_the_stack_up_unless_a_service_requires_it() {
    let s = large_file_stack("./data/other");
    bare_repo(&s);
    std::fs::write(s.path("data/small.txt"), "small").unwrap();
    std::fs::write(
        s.path("data/big.bin"),
        crate::common_persist::noise(4096, 3),
    )
    .unwrap();
    let mut up = s.up();
    up.wait_for("app | saw: small", T);
    up.signal(libc::SIGTERM);
    assert_eq!(up.wait_exit(T).code(), Some(0), "{}", up.log());
    drop(up);
    let wipe = || {
        for d in ["data", "work"] {
            std::fs::remove_dir_all(s.path(d)).unwrap();
        }
    };
    wipe();
    std::fs::remove_dir_all(s.path("blobs")).unwrap();

    let strict = large_file_stack("./data/big.bin");
    std::fs::copy(strict.file(), s.file()).unwrap();
    let mut up = s.up();
    assert_eq!(up.wait_exit(T).code(), Some(1), "{}", up.log());
    assert!(
        up.has_line("service `app` requires `")
            && up.has_line("big.bin`, which could not be restored"),
        "{}",
        up.log()
    );
    assert!(!up.has_line("app | saw"), "{}", up.log());
    drop(up);
    wipe();

    std::fs::copy(large_file_stack("./data/other").file(), s.file()).unwrap();
    let mut up = s.up();
    up.wait_for("app | saw: small", T);
    assert!(up.has_line("large file not restored"), "{}", up.log());
    assert!(!s.path("data/big.bin").exists());
    up.signal(libc::SIGTERM);
    assert_eq!(up.wait_exit(T).code(), Some(0), "{}", up.log());
}

#[test]
fn backup_without_persistence_says_how_to_turn_it_on() {
    let s = Stack::new("services: {}\n");
    s.run(&["backup"]).code(1).stderr_has("persistence is off");
}

/// Make `remote.git` hold one commit in the original deployment's layout:
/// `admin_config.json` at the tree path of `<stack dir>/nginx/`.
fn original_backup(s: &Stack, admin_config: &str) {
    bare_repo(s);
    let seed = s.path("seed");
    let rel = tree_path(s, "nginx/admin_config.json");
    let file = seed.join(&rel);
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    std::fs::write(&file, admin_config).unwrap();
    let git = |args: &[&str]| {
        let ok = Command::new("git")
            .arg("-C")
            .arg(&seed)
            .args(["-c", "user.name=original", "-c", "user.email=o@localhost"])
            .args(args)
            .status()
            .unwrap()
            .success();
        assert!(ok, "git {args:?}");
    };
    git(&["init", "-q", "-b", "main"]);
    git(&["add", "-A"]);
    git(&["commit", "-q", "-m", "auto: 2025-01-01 00:00:00"]);
    let remote = s.path("remote.git").display().to_string();
    git(&["push", "-q", &remote, "main"]);
    std::fs::remove_dir_all(&seed).unwrap();
}

fn migration_stack(port: u16) -> Stack {
    Stack::new(&format!(
        r#"
name: migrate
gateway:
  listen: 127.0.0.1:{port}
  default_backend: http://127.0.0.1:6185
  import_from: ./nginx/admin_config.json
persist:
  remote: ./remote.git
  workdir: ./work
  paths: [./nginx/admin_config.json]
"#
    ))
}

#[test]
fn the_originals_routes_and_password_are_imported_from_its_backup() {
    let port = free_port();
    let s = migration_stack(port);
    original_backup(
        &s,
        r#"{"admin_password":"the-old-password","default_backend":"http://127.0.0.1:6185",
            "rules":[{"id":"napcat-ws","priority":200,"action":"proxy","backend":"http://127.0.0.1:6099","match":{"path_prefix":"/api/ws/"}},
                     {"id":"mine","priority":50,"action":"proxy","backend":"http://127.0.0.1:6099","match":{"path_prefix":"/mine/"}},
                     {"id":"mine","priority":40,"action":"proxy","backend":"http://127.0.0.1:6099","match":{"path_prefix":"/also-mine/"}}]}"#,
    );
    let mut up = s.up();
    up.wait_for("imported the original admin_config.json and removed it", T);
    let (code, _, body) = poll(T, "the admin API", || {
        http_request(
            "GET",
            &format!("http://127.0.0.1:{port}/admin/routes.json"),
            &[("X-Admin-Password", "the-old-password")],
            "",
        )
        .filter(|(c, _, _)| *c != 503)
    });
    assert_eq!(code, 200, "the old password works: {body}");
    // The user's own rules come over (a duplicate id renamed); the
    // original's stock rules give way to the manifest's routes.
    assert!(
        body.contains("\"mine\"") && body.contains("\"mine-2\""),
        "{body}"
    );
    assert!(!body.contains("/api/ws/"), "{body}");
    assert!(
        !s.path("nginx/admin_config.json").exists(),
        "the plaintext file is gone"
    );
    assert!(!up.has_line("generated admin password"), "{}", up.log());
    up.signal(libc::SIGTERM);
    assert_eq!(up.wait_exit(T).code(), Some(0), "{}", up.log());
    // The final snapshot no longer carries the plaintext password.
    assert_eq!(
        remote_file(&s, &tree_path(&s, "nginx/admin_config.json")),
        None
    );
}

#[test]
fn an_imported_default_password_is_replaced_by_a_generated_one() {
    let port = free_port();
    let s = migration_stack(port);
    original_backup(
        &s,
        r#"{"admin_password":"admin","default_backend":"http://127.0.0.1:6185","rules":[]}"#,
    );
    let mut up = s.up();
    up.wait_for("generated admin password (shown once)", T);
    let (code, _, _) = poll(T, "the admin API", || {
        http_request(
            "GET",
            &format!("http://127.0.0.1:{port}/admin/routes.json"),
            &[("X-Admin-Password", "admin")],
            "",
        )
        .filter(|(c, _, _)| *c != 503)
    });
    assert_eq!(code, 403, "the universal default `admin` is refused");
}

/// `/admin/healthz` answers from the moment the gateway listens, before
/// the supervisor has started anything: it must never call the stack
/// healthy while a service is not ready yet.
#[test]
fn healthz_is_503_from_the_first_answer_until_every_service_is_ready() {
    healthz_until_ready(None);
}

/// The same with one worker, where `up` runs tokio's current-thread
/// scheduler: gateway, probes and supervisor share one thread.
#[test]
fn one_worker_runs_the_whole_stack_on_the_current_thread_scheduler() {
    healthz_until_ready(Some("1"));
}

fn healthz_until_ready(workers: Option<&str>) {
    let port = free_port();
    let s = Stack::new(&format!(
        r#"
name: health
services:
  app:
    command: [sleep, "1000"]
    readiness: {{ file: ./ready.flag, interval: 100ms }}
    stop_timeout: 2s
gateway:
  listen: 127.0.0.1:{port}
  admin: {{ password: "correct-horse-battery" }}
"#
    ));
    let s = match workers {
        Some(n) => s.env("STACKCTL_WORKERS", n),
        None => s.env_remove("STACKCTL_WORKERS"),
    };
    let mut up = s.up();
    let url = format!("http://127.0.0.1:{port}/admin/healthz");
    let (code, _, body) = poll(T, "a first healthz answer", || http_get(&url));
    assert_eq!(code, 503, "first answer: {body}\n{}", up.log());
    assert!(body.contains("app"), "{body}");
    up.wait_for("app", T);
    let (code, _, _) = http_get(&url).unwrap();
    assert_eq!(code, 503, "healthy before the readiness file exists");
    std::fs::write(s.path("ready.flag"), "").unwrap();
    poll(T, "healthz 200 once app is ready", || {
        http_get(&url).filter(|(c, _, _)| *c == 200)
    });
    up.signal(libc::SIGTERM);
    assert_eq!(up.wait_exit(T).code(), Some(0), "{}", up.log());
}

/// Can this test mount a tmpfs in a private mount namespace?
fn can_mount_tmpfs() -> bool {
    let ok = Command::new("unshare")
        .args(["-rm", "sh", "-c", "mount -t tmpfs -o size=64k tmpfs /mnt"])
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        super::harness::skip("cannot mount a tmpfs in a user+mount namespace here");
    }
    ok
}

/// Issue 17 item 8: a full disk (the workdir's, or a local-path remote's) is
/// not "cannot reach …, check the network" retried forever, nor "…: no
/// error": `backup` fails at once and says the disk is full.
#[test]
fn a_full_disk_is_named_as_such_and_not_retried() {
    if !can_mount_tmpfs() {
        return;
    }
    for full in ["remote.git", "work"] {
        let s = stack(free_port(), "./remote.git");
        std::fs::create_dir_all(s.path(full)).unwrap();
        if full == "work" {
            bare_repo(&s);
        }
        std::fs::write(
            s.path("data/blob.bin"),
            crate::common_persist::noise(2 << 20, 7),
        )
        .unwrap();
        // A 512 KiB tmpfs over `full` (a fresh bare repository when it is
        // the remote), only for this process.
        let mount = r#"mount -t tmpfs -o size=512k tmpfs "$1" || exit 99
            if [ "$2" = remote.git ]; then git init -q --bare -b main "$1" || exit 98; fi
            shift 2; "$@" restore || exit 97; exec "$@" backup"#;
        let dir = s.path(full).display().to_string();
        let wrapper = ["unshare", "-rm", "sh", "-c", mount, "sh", &dir, full];
        // `stackctl -f FILE` + `restore`, then `backup` in the same namespace.
        let mut run = s.spawn(&[], Some(&wrapper));
        let status = run.wait_exit(T);
        let log = run.log();
        assert_eq!(status.code(), Some(1), "{full}: {log}");
        assert!(
            log.to_lowercase().contains("no space left on device")
                || log.contains("usually a full disk"),
            "{full}: {log}"
        );
        assert!(!log.contains("cannot reach"), "{full}: {log}");
        assert!(!log.contains("retry"), "{full}: {log}");
        assert!(!log.contains(": no error"), "{full}: {log}");
    }
}

/// A stack named `twin` with a generated admin password, its `HOME` shared
/// with other stacks.
fn twin(port: u16, home: &std::path::Path) -> Stack {
    Stack::new(&format!(
        r#"
name: twin
services:
  app:
    command: [sleep, "1000"]
    stop_timeout: 2s
gateway:
  listen: 127.0.0.1:{port}
"#
    ))
    .env("HOME", home.to_str().unwrap())
}

/// Run `up` until the gateway has settled its password; return the
/// generated password if one was printed, and the log.
fn up_once(s: &Stack, port: u16) -> (Option<String>, String) {
    let mut up = s.up();
    poll(T, "the admin API", || {
        http_get(&format!("http://127.0.0.1:{port}/admin/healthz")).filter(|(c, _, _)| *c == 200)
    });
    up.signal(libc::SIGTERM);
    assert_eq!(up.wait_exit(T).code(), Some(0), "{}", up.log());
    let log = up.log();
    let pw = log
        .lines()
        .find_map(|l| l.split_once("generated admin password (shown once): "))
        .map(|(_, pw)| pw.trim().to_string());
    (pw, log)
}

/// Issue 12 item 6: two stacks with the same `name` (and `HOME`) each keep
/// their own admin-password file; the name-only file of earlier versions is
/// still read, and moved once to the stack's own file.
#[test]
fn same_named_stacks_keep_their_own_admin_password_files() {
    let home = tempfile::tempdir().unwrap();
    let config = home.path().join(".config/stackctl");
    let (pa, pb) = (free_port(), free_port());
    let (a, b) = (twin(pa, home.path()), twin(pb, home.path()));
    let (pw_a, log) = up_once(&a, pa);
    let pw_a = pw_a.unwrap_or_else(|| panic!("no password generated\n{log}"));
    let (pw_b, log) = up_once(&b, pb);
    let pw_b = pw_b.unwrap_or_else(|| panic!("no password generated\n{log}"));
    assert_ne!(pw_a, pw_b);
    let mut files: Vec<String> = std::fs::read_dir(&config)
        .unwrap()
        .map(|e| {
            std::fs::read_to_string(e.unwrap().path())
                .unwrap()
                .trim()
                .to_string()
        })
        .collect();
    files.sort();
    let mut want = vec![pw_a.clone(), pw_b.clone()];
    want.sort();
    assert_eq!(
        files, want,
        "one file per stack, each with its own password"
    );

    // An install of an earlier version: A's password in `twin.admin-password`.
    let own = std::fs::read_dir(&config)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| std::fs::read_to_string(p).unwrap().trim() == pw_a)
        .unwrap();
    let legacy = config.join("twin.admin-password");
    std::fs::rename(&own, &legacy).unwrap();
    let (generated, log) = up_once(&a, pa);
    assert_eq!(generated, None, "the stored hash is kept\n{log}");
    assert!(!legacy.exists(), "the old file was moved\n{log}");
    assert_eq!(std::fs::read_to_string(&own).unwrap().trim(), pw_a, "{log}");
}

/// Issue 12 item 8: a panicking gateway connection task (injected by the
/// debug-only `STACKCTL_TEST_PANIC=conn`) fails that connection only: the
/// gateway keeps answering, the service keeps running, and the stop is clean.
#[test]
fn a_panicking_connection_task_does_not_stop_the_stack() {
    let port = free_port();
    let s = stack(port, "./remote.git").env("STACKCTL_TEST_PANIC", "conn");
    bare_repo(&s);
    let mut up = s.up();
    up.wait_for("app | saw: nothing", T);
    // The first connection's task panics: no answer on it.
    let url = format!("http://127.0.0.1:{port}/admin/healthz");
    assert_eq!(http_get(&url), None, "{}", up.log());
    up.wait_for("injected panic at `conn`", T);
    let (code, _, _) = poll(T, "the gateway after the panic", || {
        http_get(&url).filter(|(c, _, _)| *c == 200)
    });
    assert_eq!(code, 200);
    std::fs::write(s.path("data/late.txt"), "after the panic").unwrap();
    up.signal(libc::SIGTERM);
    assert_eq!(up.wait_exit(T).code(), Some(0), "{}", up.log());
    assert_eq!(
        remote_file(&s, &format!("{}/late.txt", tree_path(&s, "data"))).as_deref(),
        Some("after the panic")
    );
}

/// Issue 12 item 8: when the supervisor or `up` itself panics (a bug), the
/// service is stopped as on SIGTERM, the final snapshot is still taken, and
/// the exit code says it failed (1). `supervisor` and `up-running` panic
/// while the service runs, `up` after the SIGTERM stopped it.
#[test]
fn a_panic_in_the_supervisor_or_up_still_takes_the_final_snapshot() {
    for point in ["supervisor", "up-running", "up"] {
        let port = free_port();
        let s = stack(port, "./remote.git").env("STACKCTL_TEST_PANIC", point);
        bare_repo(&s);
        std::fs::write(s.path("data/late.txt"), point).unwrap();
        let mut up = s.up();
        if point == "up" {
            up.wait_for("app | saw: nothing", T);
            up.signal(libc::SIGTERM);
        }
        assert_eq!(up.wait_exit(T).code(), Some(1), "{point}: {}", up.log());
        assert!(
            up.has_line(&format!("injected panic at `{point}`")),
            "{}",
            up.log()
        );
        assert!(
            up.has_line("stopping service=app signal=SIGTERM"),
            "{point}: {}",
            up.log()
        );
        assert!(up.has_line("taking the final snapshot"), "{}", up.log());
        assert_eq!(
            remote_file(&s, &format!("{}/late.txt", tree_path(&s, "data"))).as_deref(),
            Some(point),
            "{point}: {}",
            up.log()
        );
    }
}
