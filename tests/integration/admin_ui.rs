//! The admin surfaces against a real `stackctl up` with a python3
//! http.server backend: the `/admin/ui/` page driven by headless Chromium
//! (tests/ui/admin_ui.mjs), and `stackctl routes …` / `stackctl status` from
//! a shell.
//!
//! The browser test needs Debian's `chromium`, Node.js and
//! `npm ci --prefix tests/ui`. Without them it is skipped with a notice, except
//! under `CI=true`, where it fails: CI must run it.

use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::harness::{free_port, http_get, poll, Running, Stack, MARKER};

const PASSWORD: &str = "ui-test-password-1";
const NEW_PASSWORD: &str = "ui-test-password-2";
const HELLO: &str = "hello from the python backend";

/// A stack with one python3 http.server service serving `site/` and a
/// gateway whose default backend is a closed port (so only routes work).
fn stack(admin_password: Option<&str>) -> (Stack, u16, u16) {
    stack_with(admin_password, false)
}

/// [`stack`], with `persist` also backing `site/` up to a bare repo in the
/// stack's directory.
fn stack_with(admin_password: Option<&str>, persist: bool) -> (Stack, u16, u16) {
    let gport = free_port();
    let bport = free_port();
    let dead = free_port();
    let admin = match admin_password {
        Some(p) => format!("  admin:\n    password: {p}\n"),
        None => String::new(),
    };
    let stack = Stack::new(&format!(
        "version: 1\n\
         name: uitest\n\
         services:\n  \
           backend:\n    \
             command: python3 -m http.server {bport} --bind 127.0.0.1\n    \
             working_dir: ./site\n    \
             readiness: {{ http: \"http://127.0.0.1:{bport}/\", interval: 100ms, timeout: 2s }}\n\
         gateway:\n  \
           listen: 127.0.0.1:{gport}\n  \
           default_backend: http://127.0.0.1:{dead}\n\
         {admin}"
    ));
    stack.write("site/hello.txt", &format!("{HELLO}\n"));
    if persist {
        let remote = stack.path("remote.git");
        crate::common_persist::init_bare(&remote);
        let yaml = std::fs::read_to_string(stack.file()).expect("read stack.yaml");
        std::fs::write(
            stack.file(),
            format!(
                "{yaml}persist:\n  remote: file://{}\n  branch: main\n  workdir: ./work\n  paths: [./site]\n",
                remote.display()
            ),
        )
        .expect("write stack.yaml");
    }
    (stack, gport, bport)
}

/// Wait until the gateway says the stack is healthy (the backend is ready).
fn wait_healthy(up: &mut Running, gport: u16) {
    let url = format!("http://127.0.0.1:{gport}/admin/healthz");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        if matches!(http_get(&url), Some((200, _, _))) {
            return;
        }
        if std::time::Instant::now() > deadline {
            up.fail(&format!("{url} did not answer 200 within 30 s"));
        }
        if let Ok(Some(_)) = up.child.try_wait() {
            up.wait_exit(Duration::from_secs(2));
            up.fail("stackctl up exited early");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The body of GET `url` once it answers 200 (routes apply at once, but allow
/// a moment), or a panic with what it answered.
fn get_ok(url: &str) -> String {
    poll(
        Duration::from_secs(10),
        &format!("GET {url} to answer 200"),
        || match http_get(url) {
            Some((200, _, body)) => Some(body),
            _ => None,
        },
    )
}

fn in_path(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

/// What the browser test runs with.
struct Browser {
    node: PathBuf,
    chromium: PathBuf,
    script_dir: PathBuf,
}

/// Node, Chromium and playwright-core, or `None` (after a notice) when one
/// is missing outside CI. Under `CI=true` a missing tool fails the test.
fn browser() -> Option<Browser> {
    let script_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/ui");
    let chromium = std::env::var_os("STACKCTL_CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    let node = in_path("node");
    let mut missing = Vec::new();
    if !chromium.is_file() {
        missing.push(format!(
            "`{}` (Debian: `apt-get install chromium`; or set STACKCTL_CHROMIUM)",
            chromium.display()
        ));
    }
    if node.is_none() {
        missing.push("`node` (Node.js 18 or later)".to_string());
    }
    if !script_dir.join("node_modules/playwright-core").is_dir() {
        missing.push("playwright-core (run `npm ci --prefix tests/ui`)".to_string());
    }
    if in_path("python3").is_none() {
        missing.push("`python3` (the test backend)".to_string());
    }
    if missing.is_empty() {
        return Some(Browser {
            node: node?,
            chromium,
            script_dir,
        });
    }
    let what = missing.join(", ");
    super::harness::skip(&format!("missing {what}"));
    None
}

/// Run admin_ui.mjs against the stack with `env` added; its output, or a
/// failed test with it.
fn run_script(
    browser: &Browser,
    stack: &Stack,
    up: &Running,
    gport: u16,
    bport: u16,
    env: &[(&str, String)],
) -> (String, PathBuf) {
    // Screenshots go to the test's temp dir; STACKCTL_UI_SCREENSHOTS keeps
    // them somewhere that outlives the test (to look at them).
    let shots = std::env::var_os("STACKCTL_UI_SCREENSHOTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| stack.path("screenshots"));
    let log_path = stack.path("admin_ui.log");
    let log = File::create(&log_path).expect("create the script log");
    let mut node = Command::new(&browser.node)
        .arg("admin_ui.mjs")
        .current_dir(&browser.script_dir)
        .env("STACKCTL_URL", format!("http://127.0.0.1:{gport}"))
        .env("ADMIN_PASSWORD", PASSWORD)
        .env("NEW_PASSWORD", NEW_PASSWORD)
        .env("BACKEND_URL", format!("http://127.0.0.1:{bport}"))
        .env("EXPECT_PATH", "/hello.txt")
        .env("EXPECT_TEXT", HELLO)
        .env("OUT_DIR", &shots)
        .env("CHROMIUM", &browser.chromium)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .env_remove("MOCK")
        // Marked like the stack's own processes, so dropping `up` also ends
        // a node or chromium left behind by a failed run.
        .env(MARKER, stack.marker())
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("clone the log handle"))
        .stderr(log)
        .process_group(0)
        .spawn()
        .expect("start node");
    let deadline = std::time::Instant::now() + Duration::from_secs(180);
    let status = loop {
        if let Ok(Some(st)) = node.try_wait() {
            break Some(st);
        }
        if std::time::Instant::now() > deadline {
            // SIGTERM lets playwright close its browser; then end the group.
            let pid = node.id() as i32;
            unsafe {
                libc::kill(pid, libc::SIGTERM);
            }
            let grace = std::time::Instant::now() + Duration::from_secs(5);
            while matches!(node.try_wait(), Ok(None)) && std::time::Instant::now() < grace {
                std::thread::sleep(Duration::from_millis(50));
            }
            unsafe {
                libc::kill(-pid, libc::SIGKILL);
            }
            let _ = node.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let script_log = std::fs::read_to_string(&log_path).unwrap_or_default();
    if status.map(|s| s.success()) != Some(true) {
        up.fail(&format!(
            "the browser script {} (screenshots in {}; set STACKCTL_UI_SCREENSHOTS to keep them)\n--- script output:\n{script_log}",
            match status {
                Some(st) => format!("failed: {st}"),
                None => "did not finish within 180 s".to_string(),
            },
            shots.display()
        ));
    }
    println!("{script_log}");
    (script_log, shots)
}

#[test]
fn admin_page_adds_a_working_route_in_headless_chromium() {
    let Some(browser) = browser() else { return };
    let (stack, gport, bport) = stack(Some(PASSWORD));
    let mut up = stack.up();
    wait_healthy(&mut up, gport);
    let (_, shots) = run_script(
        &browser,
        &stack,
        &up,
        gport,
        bport,
        &[("PERSIST", "off".to_string())],
    );

    let shot = shots.join("admin-ui.png");
    let png = std::fs::read(&shot).unwrap_or_default();
    assert!(
        png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 10_000,
        "{} is not a real screenshot ({} bytes)",
        shot.display(),
        png.len()
    );

    // What the page saved is what the API (and the CLI) now see.
    let out = stack.run(&["routes", "--password", NEW_PASSWORD, "get"]);
    out.code(0)
        .stdout_has("\"site\"")
        .stdout_has("\"elsewhere\"")
        .stdout_has(&format!(
            "\"default_backend\": \"http://127.0.0.1:{bport}\""
        ));
    assert!(
        !out.stdout.contains("<img"),
        "the HTML-id rule was deleted\n{out}"
    );
    assert_eq!(
        get_ok(&format!("http://127.0.0.1:{gport}/site/hello.txt")).trim(),
        HELLO
    );
}

#[test]
fn routes_and_status_commands_drive_the_running_gateway() {
    let (stack, gport, bport) = stack(None);
    let backend = format!("http://127.0.0.1:{bport}");
    let gateway = format!("http://127.0.0.1:{gport}");
    let mut up = stack.up();
    wait_healthy(&mut up, gport);
    // No password configured: `up` generated one into the password file
    // (under $HOME, which the harness points at the temp dir).
    // `uitest-<key>.admin-password`, the key naming the state file.
    let pw_file = poll(
        Duration::from_secs(10),
        "the generated password file",
        || {
            std::fs::read_dir(stack.path(".config/stackctl"))
                .ok()?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .find(|p| {
                    let name = p.file_name().unwrap_or_default().to_string_lossy();
                    name.starts_with("uitest-") && name.ends_with(".admin-password")
                })
        },
    );
    let generated = std::fs::read_to_string(&pw_file).expect("read the password file");
    let generated = generated.trim_end();
    let no_secret = |out: &crate::harness::Output, secret: &str| {
        assert!(
            !out.stdout.contains(secret) && !out.stderr.contains(secret),
            "a password was printed\n{out}"
        );
    };

    let out = stack.run(&["routes", "get"]);
    out.code(0)
        .stdout_has("\"default_backend\"")
        .stdout_has("\"rules\"");
    no_secret(&out, generated);

    stack
        .run(&["routes", "set", "/cli/", &backend, "--strip-prefix"])
        .code(0)
        .stdout_has(&format!(
            "added route `cli`: /cli/ → {backend} (prefix stripped)"
        ));
    assert_eq!(get_ok(&format!("{gateway}/cli/hello.txt")).trim(), HELLO);

    stack
        .run(&[
            "routes",
            "set",
            "/cli/",
            &backend,
            "--strip-prefix",
            "--priority",
            "5",
        ])
        .code(0)
        .stdout_has("replaced route `cli`");
    stack
        .run(&["routes", "get"])
        .code(0)
        .stdout_has("\"priority\": 5");

    stack
        .run(&["routes", "rm", "/nope/"])
        .code(1)
        .stderr_has("no rule has the id or path prefix `/nope/`; the ids are `cli`");
    stack
        .run(&["routes", "rm", "/cli/"])
        .code(0)
        .stdout_has("removed route `cli`");

    stack
        .run(&["routes", "default", &backend])
        .code(0)
        .stdout_has(&format!("default backend is now {backend}"));
    assert_eq!(get_ok(&format!("{gateway}/hello.txt")).trim(), HELLO);

    let out = stack.run(&["status"]);
    out.code(0)
        .stdout_has("SERVICE")
        .stdout_has("LAST EXIT")
        .stdout_has("backend");
    no_secret(&out, generated);

    let out = stack.run(&["routes", "--password", "not-the-password", "get"]);
    out.code(1).stderr_has(&format!(
        "wrong admin password: pass --password, set STACKCTL_ADMIN_PASSWORD, or check `{}`",
        pw_file.display()
    ));
    no_secret(&out, generated);

    // A new password from stdin; the file it came from follows.
    let out = stack.run_with_stdin(&["routes", "password"], "fresh-password-123\n");
    out.code(0).stdout_has(&format!(
        "admin password changed; updated `{}`",
        pw_file.display()
    ));
    no_secret(&out, "fresh-password-123");
    assert_eq!(
        std::fs::read_to_string(&pw_file).expect("read the password file"),
        "fresh-password-123\n"
    );
    stack.run(&["routes", "get"]).code(0);

    // Too short: the server's 400 message, nothing changed.
    let out = stack.run(&["routes", "password", "--new", "short"]);
    out.code(1);
    assert!(!out.stderr.trim().is_empty(), "an explanation\n{out}");
    // Issue 16: a password no header can carry is refused before it is sent.
    stack
        .run(&["routes", "password", "--new", "new-password-  "])
        .code(1)
        .stderr_has("the new password starts or ends with a space");
    assert_eq!(
        std::fs::read_to_string(&pw_file).expect("read the password file"),
        "fresh-password-123\n"
    );

    up.signal(libc::SIGTERM);
    up.wait_exit(Duration::from_secs(15));
    stack.run(&["routes", "get"]).code(1).stderr_has(&format!(
        "no gateway answers at {gateway} — is `stackctl up` running? (use --url to point elsewhere)"
    ));
}

/// Issue 14: the Backups section against a real `up` with a file:// remote:
/// back up now, preview a restore (dry run), restore behind the typed id
/// (the served file comes back), the undo snapshot, the status card.
#[test]
fn admin_page_backs_up_previews_and_restores_in_headless_chromium() {
    let Some(browser) = browser() else { return };
    let (stack, gport, bport) = stack_with(Some(PASSWORD), true);
    let mut up = stack.up();
    wait_healthy(&mut up, gport);
    let data_file = stack.path("site/note.txt");
    let (log, _) = run_script(
        &browser,
        &stack,
        &up,
        gport,
        bport,
        &[
            ("PERSIST", "on".to_string()),
            ("ONLY_BACKUPS", "1".to_string()),
            ("DATA_FILE", data_file.display().to_string()),
        ],
    );
    assert!(log.contains("admin UI test passed"), "{log}");
    // What the page restored is on disk, and the backend serves it.
    assert_eq!(
        std::fs::read_to_string(&data_file).expect("read the restored file"),
        "kept by the snapshot\n"
    );
    assert_eq!(
        get_ok(&format!("http://127.0.0.1:{bport}/note.txt")).trim(),
        "kept by the snapshot"
    );
}
