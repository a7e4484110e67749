//! The real AstrBot (4.14.6 from PyPI, offline) under `stackctl up`, behind
//! the gateway, its data persisted to a local bare git repository: data
//! written through the gateway survives a stop, a wiped disk and a restart.
//!
//! The virtualenv is made once by `scripts/astrbot-venv.sh` and cached in
//! `target/astrbot-venv`. Where it cannot be made (no network to PyPI), the
//! test is skipped with a notice — except under `CI=true`, where it fails.
//! See `shared/testing/astrbot.md` for the facts this relies on.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::harness::{free_port, http_get, http_request, poll, Running, Stack};

const VERSION: &str = "4.14.6";
/// `md5("astrbot")`: the dashboard's default password, as its web UI sends it.
const DEFAULT_PASSWORD_MD5: &str = "77b90590a8945a7d36c963981a307dc9";

/// The cached venv, made if missing; `None` (after a notice) when it cannot
/// be made outside CI.
fn venv() -> Option<PathBuf> {
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let dir = repo.join("target/astrbot-venv");
    let out = Command::new("bash")
        .arg(repo.join("scripts/astrbot-venv.sh"))
        .arg(&dir)
        .output();
    let ok = matches!(&out, Ok(o) if o.status.success()) && dir.join("bin/astrbot").exists();
    if ok {
        return Some(dir);
    }
    let why = match out {
        Ok(o) => format!(
            "{}\n{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ),
        Err(e) => e.to_string(),
    };
    super::harness::skip(&format!("cannot create the AstrBot {VERSION} venv:\n{why}"));
    None
}

/// Run the git CLI in `dir` (the test inspects the remote with it).
fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("git runs");
    assert!(
        out.status.success(),
        "git {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// What the Docker image bakes in and a wiped disk keeps: the root marker and
/// a placeholder web UI (AstrBot refuses to start without one, and the HTTP
/// API does not need the real one).
fn prepare_root(root: &Path) {
    std::fs::create_dir_all(root.join("data/dist/assets")).unwrap();
    std::fs::write(root.join(".astrbot"), "").unwrap();
    std::fs::write(
        root.join("data/dist/assets/version"),
        format!("v{VERSION}\n"),
    )
    .unwrap();
    std::fs::write(root.join("data/dist/index.html"), "<!doctype html>\n").unwrap();
}

/// The body of an HTTP/1.1 response, de-chunked if it was chunked.
fn body_of(head: &str, body: &str) -> String {
    let chunked = head.lines().any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    if !chunked {
        return body.to_string();
    }
    let mut out = String::new();
    let mut rest = body;
    while let Some((size, after)) = rest.split_once("\r\n") {
        let n = usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16).unwrap_or(0);
        if n == 0 || after.len() < n {
            break;
        }
        out.push_str(&after[..n]);
        rest = after[n..].strip_prefix("\r\n").unwrap_or(&after[n..]);
    }
    out
}

/// A JSON request through the gateway: `(status, parsed body)`.
fn api(
    up: &Running,
    gw: u16,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &serde_json::Value,
) -> (u16, serde_json::Value) {
    let url = format!("http://127.0.0.1:{gw}{path}");
    let auth = token.map(|t| format!("Bearer {t}"));
    let mut headers = vec![("Content-Type", "application/json")];
    if let Some(a) = &auth {
        headers.push(("Authorization", a.as_str()));
    }
    let text = if body.is_null() {
        String::new()
    } else {
        body.to_string()
    };
    let Some((status, head, raw)) = http_request(method, &url, &headers, &text) else {
        up.fail(&format!("no answer to {method} {path}"));
    };
    let b = body_of(&head, &raw);
    let json = serde_json::from_str(&b).unwrap_or_else(|_| {
        up.fail(&format!(
            "{method} {path}: {status}, not JSON:\n{head}\n\n{b}"
        ))
    });
    (status, json)
}

/// Log in with the default account; the bearer token.
fn login(up: &Running, gw: u16) -> String {
    let (status, j) = api(
        up,
        gw,
        "POST",
        "/api/auth/login",
        None,
        &serde_json::json!({"username": "astrbot", "password": DEFAULT_PASSWORD_MD5}),
    );
    match j["data"]["token"].as_str() {
        Some(t) if status == 200 => t.to_string(),
        _ => up.fail(&format!("login through the gateway failed: {status} {j}")),
    }
}

fn persona_ids(up: &Running, gw: u16, token: &str) -> Vec<String> {
    let (status, j) = api(
        up,
        gw,
        "GET",
        "/api/persona/list",
        Some(token),
        &serde_json::Value::Null,
    );
    if status != 200 {
        up.fail(&format!("persona list: {status} {j}"));
    }
    j["data"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|p| p["persona_id"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// Until restore has finished and AstrBot is ready, `/admin/healthz` is 503.
fn wait_healthy(up: &mut Running, gw: u16) {
    let url = format!("http://127.0.0.1:{gw}/admin/healthz");
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        if matches!(http_get(&url), Some((200, _, _))) {
            return;
        }
        if std::time::Instant::now() > deadline {
            up.fail("AstrBot behind the gateway was not healthy within 120 s");
        }
        if let Ok(Some(_)) = up.child.try_wait() {
            up.wait_exit(Duration::from_secs(2));
            up.fail("stackctl exited before AstrBot was healthy");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[track_caller]
fn stop(up: &mut Running) {
    up.signal(libc::SIGTERM);
    let status = up.wait_exit(Duration::from_secs(30));
    if status.code() != Some(0) {
        up.fail(&format!(
            "stackctl up did not exit 0 on SIGTERM: {status:?}"
        ));
    }
}

#[test]
fn astrbot_data_written_through_the_gateway_survives_a_wiped_disk() {
    let Some(venv) = venv() else { return };
    let port = free_port();
    let gw = free_port();
    let remotes = tempfile::tempdir().unwrap();
    let remote = remotes.path().join("backup.git");
    crate::common_persist::init_bare(&remote);

    let yaml = format!(
        r#"
version: 1
name: astrbot-e2e
services:
  astrbot:
    command: [{astrbot}, run]
    working_dir: ./root
    environment:
      DASHBOARD_PORT: "{port}"
      ASTRBOT_DISABLE_METRICS: "1"
    readiness: {{ http: "http://127.0.0.1:{port}/api/stat/start-time", interval: 250ms, timeout: 3s }}
    restart: on-failure
    stop_signal: INT
    stop_timeout: 5s
gateway:
  listen: 127.0.0.1:{gw}
  default_backend: http://127.0.0.1:{port}
  admin: {{ password: e2e-admin-password }}
persist:
  remote: file://{remote}
  branch: main
  workdir: ./backup
  paths:
    - {{ path: ./root/data, exclude: ["temp/**", "dist/**"] }}
  exclude: ["**/*.log", "**/__pycache__/**"]
"#,
        astrbot = venv.join("bin/astrbot").display(),
        remote = remote.display(),
    );
    let stack = Stack::new(&yaml);
    let root = stack.path("root");
    prepare_root(&root);
    // 4.14.6 takes its listen address only from the config file; AstrBot
    // fills in every other key. Restored from the backup on the second start.
    std::fs::write(
        root.join("data/cmd_config.json"),
        r#"{"dashboard": {"host": "127.0.0.1"}}"#,
    )
    .unwrap();

    // First start: write a persona through the gateway.
    let mut up = stack.up();
    wait_healthy(&mut up, gw);
    let token = login(&up, gw);
    let (status, j) = api(
        &up,
        gw,
        "POST",
        "/api/persona/create",
        Some(&token),
        &serde_json::json!({"persona_id": "e2e-persona", "system_prompt": "kept across a wiped disk"}),
    );
    if status != 200 || j["status"] != "ok" {
        up.fail(&format!("persona create: {status} {j}"));
    }
    if !persona_ids(&up, gw, &token).contains(&"e2e-persona".to_string()) {
        up.fail("the new persona is not listed");
    }
    stop(&mut up);
    let first_log = up.log();
    drop(up);

    // The snapshot holds the database, never its WAL files or the web UI
    // (the excluded `dist/` stays as an empty directory: its keep marker).
    let files = git(&remote, &["ls-tree", "-r", "--name-only", "main"]);
    let data_prefix = root
        .join("data")
        .to_string_lossy()
        .trim_start_matches('/')
        .to_string();
    let has = |suffix: &str| {
        files
            .lines()
            .any(|l| l == format!("{data_prefix}/{suffix}"))
    };
    assert!(
        has("data_v4.db") && has("cmd_config.json"),
        "the remote lacks AstrBot's database or config:\n{files}\n--- log:\n{first_log}"
    );
    assert!(
        !files.lines().any(|l| l.ends_with("-wal")
            || l.ends_with("-shm")
            || (l.contains("/dist/") && !l.ends_with("/dist/.stackctl-keep"))),
        "the remote holds WAL files or the web UI:\n{files}"
    );

    // A wiped disk: the data and the backup workdir are gone; only what the
    // image would bring back (marker, web UI) is there.
    std::fs::remove_dir_all(root.join("data")).unwrap();
    std::fs::remove_dir_all(stack.path("backup")).unwrap();
    prepare_root(&root);

    let mut up = stack.up();
    wait_healthy(&mut up, gw);
    let token = login(&up, gw);
    poll(Duration::from_secs(10), "the restored persona", || {
        persona_ids(&up, gw, &token)
            .contains(&"e2e-persona".to_string())
            .then_some(())
    });
    stop(&mut up);
}
