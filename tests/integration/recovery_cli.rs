//! `stackctl backup|snapshots|restore|status --url` against a running
//! `stackctl up` with a file:// git remote (issue 14): the commands a user
//! runs from their own machine, with no manifest there, to recover a stack
//! that has no shell.

use std::time::Duration;

use crate::harness::{free_port, http_get, poll, Output, Running, Stack};

const PASSWORD: &str = "recovery-password-1";

/// A stack persisting `./data` to a bare repo, with a python3 http.server
/// service and the gateway; returns it and the gateway's URL.
fn stack() -> (Stack, String) {
    let gport = free_port();
    let bport = free_port();
    let stack = Stack::new(&format!(
        "version: 1\n\
         name: recovery\n\
         services:\n  \
           web:\n    \
             command: python3 -m http.server {bport} --bind 127.0.0.1\n    \
             working_dir: ./data\n    \
             readiness: {{ http: \"http://127.0.0.1:{bport}/\", interval: 100ms, timeout: 2s }}\n\
         gateway:\n  \
           listen: 127.0.0.1:{gport}\n  \
           default_backend: http://127.0.0.1:{bport}\n  \
           admin: {{ password: {PASSWORD} }}\n\
         persist:\n  \
           remote: file://{remote}\n  \
           branch: main\n  \
           workdir: ./work\n  \
           paths: [./data]\n",
        remote = "REMOTE",
    ));
    // The remote lives in the stack's temp dir (cleaned up with it).
    let remote = stack.path("remote.git");
    crate::common_persist::init_bare(&remote);
    let yaml = std::fs::read_to_string(stack.file()).expect("read stack.yaml");
    std::fs::write(
        stack.file(),
        yaml.replace("REMOTE", &remote.display().to_string()),
    )
    .expect("write stack.yaml");
    stack.write("data/a.txt", "one\n");
    (stack, format!("http://127.0.0.1:{gport}"))
}

fn wait_healthy(up: &mut Running, url: &str) {
    let health = format!("{url}/admin/healthz");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !matches!(http_get(&health), Some((200, _, _))) {
        if std::time::Instant::now() > deadline {
            up.fail(&format!("{health} did not answer 200 within 60 s"));
        }
        if let Ok(Some(_)) = up.child.try_wait() {
            up.wait_exit(Duration::from_secs(2));
            up.fail("stackctl up exited early");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The remote branch's commit.
fn remote_head(stack: &Stack) -> String {
    crate::common_persist::git(
        &stack.path(""),
        &[
            "--git-dir",
            stack.path("remote.git").to_str().unwrap(),
            "rev-parse",
            "main",
        ],
    )
}

/// The 12-character id after `word` in `text` (e.g. `snapshot abc…`).
fn id_after(out: &Output, word: &str) -> String {
    let at = out
        .stdout
        .find(word)
        .unwrap_or_else(|| panic!("no `{word}` in\n{out}"));
    out.stdout[at + word.len()..]
        .chars()
        .take_while(char::is_ascii_hexdigit)
        .collect()
}

#[test]
fn backup_snapshots_restore_and_status_through_url() {
    let (stack, url) = stack();
    let mut up = stack.up();
    wait_healthy(&mut up, &url);
    // From "another machine": no manifest where the command runs, so the
    // URL and the password are all it has.
    let elsewhere = Stack::new("");
    std::fs::remove_file(elsewhere.file()).expect("remove the manifest");
    let remote = |args: &[&str]| {
        let mut all: Vec<&str> = args.to_vec();
        all.extend(["--url", &url, "--password", PASSWORD]);
        elsewhere.run(&all)
    };

    let out = remote(&["status"]);
    out.code(0)
        .stdout_has("SERVICE")
        .stdout_has("persistence:")
        .stdout_has("remote: file://");
    assert!(!out.stdout.contains(PASSWORD) && !out.stderr.contains(PASSWORD));

    // Back up now: the snapshot is on the remote when the command returns.
    stack.write("data/a.txt", "kept\n");
    let out = remote(&["backup"]);
    out.code(0).stdout_has(", pushed");
    let snap = id_after(&out, "snapshot ");
    assert_eq!(snap.len(), 12, "{out}");
    assert!(remote_head(&stack).starts_with(&snap), "{out}");
    // Nothing changed since: said so, still exit 0.
    remote(&["backup"])
        .code(0)
        .stdout_has("nothing changed since the last snapshot");

    let out = remote(&["snapshots"]);
    out.code(0).stdout_has("time (UTC)").stdout_has(&snap);

    restore_script(&stack, &url, &snap, &format!(" --url {url}"), &remote);

    // Errors teach the fix.
    let out = elsewhere.run(&["backup", "--url", &url, "--password", "not-the-password"]);
    out.code(1)
        .stderr_has("wrong admin password: pass --password");
    assert!(!out.stderr.contains("not-the-password"));
    remote(&["restore", "--at", "ffffffff", "--force"])
        .code(1)
        .stderr_has("no snapshot matches");
    elsewhere
        .run(&["snapshots", "--url", &url])
        .code(1)
        .stderr_has("no admin password: pass --password or set STACKCTL_ADMIN_PASSWORD");
    // The password from the environment works as for `routes`.
    let env = Stack::new("").env("STACKCTL_ADMIN_PASSWORD", PASSWORD);
    std::fs::remove_file(env.file()).expect("remove the manifest");
    env.run(&["snapshots", "--url", &url])
        .code(0)
        .stdout_has(&snap);

    up.signal(libc::SIGTERM);
    up.wait_exit(Duration::from_secs(30));
    remote(&["snapshots"])
        .code(1)
        .stderr_has(&format!("no gateway answers at {url}"));
}

#[test]
fn persistence_off_is_said_not_restored_yes() {
    let gport = free_port();
    let bport = free_port();
    let stack = Stack::new(&format!(
        "version: 1\n\
         name: nopersist\n\
         services:\n  \
           web:\n    \
             command: python3 -m http.server {bport} --bind 127.0.0.1\n    \
             readiness: {{ http: \"http://127.0.0.1:{bport}/\", interval: 100ms, timeout: 2s }}\n\
         gateway:\n  \
           listen: 127.0.0.1:{gport}\n  \
           default_backend: http://127.0.0.1:{bport}\n  \
           admin: {{ password: {PASSWORD} }}\n"
    ));
    let url = format!("http://127.0.0.1:{gport}");
    let mut up = stack.up();
    wait_healthy(&mut up, &url);
    let out = stack.run(&["status"]);
    out.code(0)
        .stdout_has("persistence: off (no `persist:` section in the manifest)");
    assert!(!out.stdout.contains("restored: yes"), "{out}");
    stack
        .run(&["backup", "--url", &url, "--password", PASSWORD])
        .code(1)
        .stderr_has("persistence is off on the stack at");
}

/// A local `stackctl restore` while `up` runs goes through its control
/// socket: the same dry run, confirmation and undo point as `--url`.
#[test]
fn a_local_restore_while_up_runs_goes_through_the_running_stack() {
    let (stack, url) = stack();
    let mut up = stack.up();
    wait_healthy(&mut up, &url);

    stack.write("data/a.txt", "kept\n");
    let out = stack.run(&["backup"]);
    out.code(0).stdout_has(", pushed");
    let snap = id_after(&out, "snapshot ");
    restore_script(&stack, &url, &snap, "", &|args| stack.run(args));
    stack
        .run(&["restore", "--at", "ffffffff", "--dry-run"])
        .code(1)
        .stderr_has("no snapshot matches");
    up.signal(libc::SIGTERM);
    assert_eq!(up.wait_exit(Duration::from_secs(30)).code(), Some(0));
}

/// A local restore through the running stack shows its progress as it
/// goes, as the restore without `up` does (stderr is not a terminal here:
/// plain lines): the step it is at, and the bytes of a large file coming
/// back from the blob store, several times within the file.
#[test]
fn a_local_restore_while_up_runs_shows_its_progress() {
    let (stack, mut up, _, snap) = big_file_backed_up_through_up();
    let out = stack.run(&["restore", "--at", &snap, "--force"]);
    out.code(0).stdout_has(&format!("restored snapshot {snap}"));
    let steps: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| !l.starts_with("restore: ") || !l.contains(" of "))
        .collect();
    for step in [
        "restore: planning the restore",
        "restore: stopping web",
        "restore: starting the services again",
    ] {
        assert!(steps.contains(&step), "no line {step:?} in\n{out}");
    }
    let lines = crate::progress::byte_lines(&out.stderr, "restore", "data/big.bin");
    crate::progress::assert_moving(&lines, &out.to_string());
    assert!(stack.path("data/big.bin").exists(), "{out}");
    up.signal(libc::SIGTERM);
    assert_eq!(up.wait_exit(Duration::from_secs(30)).code(), Some(0));
}

/// A local backup through the running stack, and a dry run of a restore
/// through it, show their progress as the restore does (plain lines, as
/// stderr is not a terminal here): the backup the bytes of its large file
/// going to the blob store, the dry run the step it is at.
#[test]
fn a_local_backup_and_dry_run_while_up_runs_show_their_progress() {
    let (stack, mut up, out, snap) = big_file_backed_up_through_up();
    let lines = crate::progress::byte_lines(&out.stderr, "backup", "data/big.bin");
    crate::progress::assert_moving(&lines, &out.to_string());

    let out = stack.run(&["restore", "--at", &snap, "--dry-run"]);
    out.code(0)
        .stdout_has("would restore ")
        .stdout_has("big.bin");
    assert!(
        out.stderr
            .lines()
            .any(|l| l == "restore: planning the restore"),
        "{out}"
    );
    assert!(
        !stack.path("data/big.bin").exists(),
        "a dry run restored: {out}"
    );
    up.signal(libc::SIGTERM);
    assert_eq!(up.wait_exit(Duration::from_secs(30)).code(), Some(0));
}

/// A running stack whose large files go to a `dir:` store, with progress
/// lines at most every millisecond and no snapshot of its own meanwhile:
/// a large file is backed up by a local `backup` through it (its output),
/// and removed. The snapshot's id comes last.
fn big_file_backed_up_through_up() -> (Stack, Running, Output, String) {
    let (stack, url) = stack();
    let yaml = std::fs::read_to_string(stack.file()).expect("read stack.yaml");
    let more = "  large_files: { threshold: 1MiB, store: \"dir:./blobs\" }\n  debounce: 1h\n";
    std::fs::write(stack.file(), format!("{yaml}{more}")).expect("write stack.yaml");
    let stack = stack.env("STACKCTL_PROGRESS_INTERVAL", "1ms");
    let mut up = stack.up();
    wait_healthy(&mut up, &url);
    std::fs::write(stack.path("data/big.bin"), crate::progress::big_file()).unwrap();
    let out = stack.run(&["backup"]);
    out.code(0).stdout_has(", pushed");
    let snap = id_after(&out, "snapshot ");
    std::fs::remove_file(stack.path("data/big.bin")).unwrap();
    (stack, up, out, snap)
}

/// After a snapshot `snap` of `a.txt` = "kept": change the data, then
/// through `run` a dry run (nothing changes), a restore refused without
/// --force off a terminal, the restore (its undo line names `flag`), and
/// the undo; the stack at `url` is healthy again afterwards.
fn restore_script(
    stack: &Stack,
    url: &str,
    snap: &str,
    flag: &str,
    run: &dyn Fn(&[&str]) -> Output,
) {
    let data = |name: &str| std::fs::read_to_string(stack.path(&format!("data/{name}"))).ok();
    stack.write("data/a.txt", "changed\n");
    stack.write("data/b.txt", "new\n");
    let out = run(&["restore", "--at", snap, "--dry-run"]);
    out.code(0)
        .stdout_has("would restore ")
        .stdout_has("a.txt")
        .stdout_has("would delete ")
        .stdout_has("b.txt");
    assert_eq!(data("a.txt").as_deref(), Some("changed\n"));

    // A real restore is not done without --force off a terminal.
    run(&["restore", "--at", snap])
        .code(1)
        .stderr_has("pass --force to do it");
    assert_eq!(data("b.txt").as_deref(), Some("new\n"));

    let out = run(&["restore", "--at", snap, "--force"]);
    out.code(0)
        .stdout_has(&format!("restored snapshot {snap}"))
        .stdout_has(&format!("undo: stackctl restore{flag} --at "));
    assert_eq!(data("a.txt").as_deref(), Some("kept\n"));
    assert_eq!(data("b.txt"), None, "a file not in the snapshot is deleted");
    let undo = id_after(&out, "--at ");
    assert_eq!(undo.len(), 12, "{out}");

    // The undo point holds the data as it was before the restore.
    run(&["restore", "--at", &undo, "--force"]).code(0);
    assert_eq!(data("a.txt").as_deref(), Some("changed\n"));
    assert_eq!(data("b.txt").as_deref(), Some("new\n"));

    // The service is running again after the restores.
    poll(Duration::from_secs(30), "the stack healthy again", || {
        matches!(http_get(&format!("{url}/admin/healthz")), Some((200, _, _))).then_some(())
    });
}
