//! `stackctl check`: the resolved plan, and one test per class of manifest
//! error, each asserting the exact place (file:line:col) and key.

use crate::harness::Stack;

/// Run `check` on `yaml`; expect exit 2 and `want` (a `line:col: `key`…`
/// fragment) in the error.
#[track_caller]
fn rejects(yaml: &str, want: &str) {
    let s = Stack::new(yaml);
    let out = s.run(&["check"]);
    out.code(2);
    let file = s.file().display().to_string();
    let expected = format!("{file}:{want}");
    if !out.stderr.contains(&expected) {
        panic!("stderr lacks {expected:?}\n{out}");
    }
}

#[test]
fn yaml_syntax_error_names_the_line() {
    rejects("services:\n  web: [1\n", "3:1: YAML syntax error");
}

#[test]
fn unknown_key_suggests_the_nearest() {
    rejects(
        "services:\n  web:\n    command: x\n    restrat: always\n",
        "4:5: `services.web.restrat`: unknown key (did you mean `restart`?)",
    );
}

#[test]
fn unknown_top_level_key_lists_valid_ones() {
    rejects(
        "servises: {}\n",
        "1:1: `servises`: unknown key (did you mean `services`?)",
    );
}

#[test]
fn wrong_shape_is_named() {
    rejects(
        "services:\n  web:\n    command: x\n    readiness: [1]\n",
        "4:16: `services.web.readiness`: expected a mapping, found a list",
    );
}

#[test]
fn bad_duration_names_the_unit() {
    rejects(
        "services:\n  web:\n    command: x\n    stop_timeout: 10 parsecs\n",
        "4:19: `services.web.stop_timeout`: `10 parsecs`: unknown unit `parsecs`",
    );
}

/// Issue 12 item 7: aborted `check` (exit 134 in release).
#[test]
fn a_huge_duration_is_an_error_not_a_panic() {
    rejects(
        "services:\n  web:\n    command: x\n    stop_timeout: 999999999999999d\n",
        "4:19: `services.web.stop_timeout`: `999999999999999d` is too long: at most 100 years (`36500d`)",
    );
}

/// Issue 12 item 7: `2026-02-31` was read as 3 March.
#[test]
fn restore_at_an_impossible_date_is_a_usage_error() {
    let s = Stack::new("services: {}\npersist:\n  remote: ./remote.git\n  paths: [./data]\n");
    let out = s.run(&["restore", "--at", "2026-02-31"]);
    out.code(2)
        .stderr_has("`2026-02-31` is not a date: month 2 of 2026 has 28 days");
}

#[test]
fn bad_size_is_rejected() {
    rejects(
        "services:\n  web:\n    command: x\n    logs: { file: a.log, max_size: lots }\n",
        "4:36: `services.web.logs.max_size`: `lots` is not a size",
    );
}

#[test]
fn unknown_dependency_suggests_a_service() {
    rejects(
        "services:\n  db: { command: x }\n  web:\n    command: x\n    depends_on: [dbb]\n",
        "5:18: `services.web.depends_on`: unknown service `dbb` (did you mean `db`?)",
    );
}

#[test]
fn dependency_cycle_is_spelled_out() {
    rejects(
        "services:\n  a: { command: x, depends_on: [b] }\n  b: { command: x, depends_on: { a: healthy } }\n",
        "2:3: `services.a.depends_on`: dependency cycle: a → b → a",
    );
}

#[test]
fn unknown_condition_is_rejected() {
    rejects(
        "services:\n  a: { command: x }\n  b: { command: x, depends_on: { a: ready } }\n",
        "3:37: `services.b.depends_on.a`: unknown condition `ready`",
    );
}

#[test]
fn missing_command_is_reported() {
    rejects(
        "services:\n  web:\n    restart: always\n",
        "2:3: `services.web`: `command` is missing",
    );
}

#[test]
fn bad_restart_policy_lists_the_valid_ones() {
    rejects(
        "services:\n  web: { command: x, restart: sometimes }\n",
        "2:31: `services.web.restart`: unknown restart policy `sometimes` (use always, on-failure or no)",
    );
}

#[test]
fn required_env_names_its_aliases() {
    let s = Stack::new("env:\n  GITHUB_REPO: { from: [github_project], required: true }\n")
        .env_remove("github_project")
        .env_remove("GITHUB_REPO");
    let out = s.run(&["check"]);
    out.code(2).stderr_has(
        ":2:3: `env.GITHUB_REPO`: is required but not set (set `github_project` or `GITHUB_REPO` in the container's environment)",
    );
}

#[test]
fn interpolation_error_is_placed() {
    rejects(
        "services:\n  web: { command: \"${NOPE:?set NOPE first}\" }\n",
        "2:19: `services.web.command`: `NOPE` must be set: set NOPE first",
    );
}

/// A mistyped `${NAME}` reads as blank, as in docker-compose; `check`
/// says so (the manifest stays valid), once, where it is first written.
#[test]
fn an_unset_variable_is_a_warning_naming_the_nearest() {
    let s = Stack::new(
        "env:\n  GITHUB_REPO: {}\nservices:\n  web:\n    command: \"true\"\n    environment: { A: \"${GITHUB_REOP}\", B: \"${GITHUB_REOP}\", C: \"${GITHUB_REOP:-}\" }\n",
    )
    .env_remove("GITHUB_REOP");
    let out = s.run(&["check"]);
    let file = s.file().display().to_string();
    out.code(0).stdout_has(&format!(
        "{file}:6:23: `services.web.environment.A`: variable `GITHUB_REOP` is not set, so it reads as blank (did you mean `GITHUB_REPO`? write `${{GITHUB_REOP:-}}` if blank is meant)\n"
    ));
    assert_eq!(out.stdout.matches("GITHUB_REOP").count(), 2, "{out}");
}

#[test]
fn unsupported_version_is_rejected() {
    rejects("version: 2\n", "1:10: `version`: unsupported version `2`");
}

#[test]
fn overlapping_persist_paths_are_rejected() {
    rejects(
        "persist:\n  remote: /tmp/x\n  paths: [/data, /data/sub]\n",
        "3:18: `persist.paths[1]`: overlaps `/data`",
    );
}

#[test]
fn every_problem_is_reported_at_once() {
    let s = Stack::new(
        "services:\n  a: { command: x, restrat: no }\n  b: { command: x, depends_on: [zz] }\n",
    );
    let out = s.run(&["check"]);
    out.code(2)
        .stderr_has("(2 problems)")
        .stderr_has("2:20: `services.a.restrat`")
        .stderr_has("3:33: `services.b.depends_on`: unknown service `zz`");
}

#[test]
fn missing_file_says_how_to_point_at_one() {
    let s = Stack::new("");
    std::fs::remove_file(s.file()).unwrap();
    s.run(&["check"]).code(2).stderr_has("cannot read");
}

#[test]
fn check_prints_the_plan_with_secrets_masked() {
    let s = Stack::new(
        r#"
name: demo
env:
  GITHUB_REPO:  { from: [github_project, GITHUB_REPO] }
  GITHUB_TOKEN: { from: [github_secret, GITHUB_PAT], secret: true }
  GIT_BRANCH:   { default: main }
services:
  web:
    command: python3 -m http.server 9001
    environment: [GITHUB_TOKEN]
  worker:
    command: "true"
    depends_on: { web: healthy }
    enabled: ${API_KEYS}
persist:
  remote: ${GITHUB_REPO}
  token: ${GITHUB_TOKEN}
  branch: ${GIT_BRANCH}
  paths: [/home/user/data]
"#,
    )
    .env("github_project", "me/data")
    .env("github_secret", "ghp_verysecretvalue123")
    .env_remove("API_KEYS");
    let out = s.run(&["check"]);
    out.code(0)
        .stdout_has("GITHUB_REPO  = me/data  (from github_project)")
        .stdout_has("GITHUB_TOKEN = ********  (secret, from github_secret)")
        .stdout_has("GIT_BRANCH   = main  (default)")
        .stdout_has("disabled: worker")
        .stdout_has("remote          me/data (branch main)")
        .stdout_has("is valid");
    assert!(
        !out.stdout.contains("ghp_verysecretvalue123")
            && !out.stderr.contains("ghp_verysecretvalue123"),
        "secret leaked:\n{out}"
    );
}

/// Each manifest route is one line: id, priority, what it matches → where
/// it goes (what it changes), in the manifest's order, ids as the admin
/// API assigns them, a secret in a header value masked.
#[test]
fn check_prints_each_route_on_one_line() {
    let s = Stack::new(
        r#"
env:
  TOKEN: { secret: true }
gateway:
  default_backend: http://127.0.0.1:9100
  routes:
    - { id: api, priority: 10, prefix: /api/, backend: http://127.0.0.1:9000, strip_prefix: true }
    - { match: { path_equal: /old }, action: redirect, redirect_to: /new/, redirect_code: 308 }
    - { id: docs, prefix: /docs/, action: redirect, redirect_to_prefix: "https://example.com/docs/" }
    - id: bot
      priority: -5
      match: { method: post, host: Example.com, referer_substr: chat, headers: [{ name: X-Key, regex: "^k" }, { name: X-Trace }] }
      set_headers: { X-B: "2", Authorization: "Bearer ${TOKEN}" }
"#,
    )
    .env("TOKEN", "tok-very-secret-42");
    let out = s.run(&["check", "--manifest-only"]);
    let want = "  routes          4 in the manifest (id, priority, what it matches → where it goes; the highest priority that matches wins)
    api       10  prefix /api/ → http://127.0.0.1:9000 (strip prefix)
    rule-2     0  path /old → redirect 308 to /new/
    docs       0  prefix /docs/ → redirect 302 to https://example.com/docs/ + the rest of the path
    bot       -5  method POST and host example.com and referer contains \"chat\" and header X-Key matches `^k` and header X-Trace present → the default backend (sets Authorization: Bearer ********, sets X-B: 2)
";
    out.code(0).stdout_has(want);
    assert!(!out.stdout.contains("tok-very-secret-42"), "{out}");
}

#[test]
fn a_secret_never_appears_in_an_error() {
    let s = Stack::new("env:\n  KEY: { secret: true }\nservices:\n  web: { command: x, stop_timeout: \"${KEY}\" }\n")
        .env("KEY", "hunter2hunter2");
    let out = s.run(&["check"]);
    out.code(2)
        .stderr_has("`services.web.stop_timeout`: `********`");
    assert!(!out.stderr.contains("hunter2"), "{out}");
}

#[test]
fn check_reports_a_program_or_working_dir_that_is_not_on_this_machine() {
    // Regression (issue 13, item 14): these were found only when `up` tried
    // to start the service, and then retried for minutes.
    let s = Stack::new(
        "services:\n  ghost: { command: no-such-program-xyz --flag }\n  lost: { command: /bin/sh, working_dir: ./nowhere }\n  extra: { command: ./missing.sh, optional: true }\n",
    );
    let out = s.run(&["check"]);
    out.code(2)
        .stderr_has("error: service `ghost` cannot start: program `no-such-program-xyz` not found in PATH (")
        .stderr_has(&format!(
            "error: service `lost` cannot start: working directory `{}` does not exist",
            s.path("nowhere").display()
        ))
        .stderr_has(&format!(
            "warning: service `extra` cannot start: `{}/./missing.sh` does not exist",
            s.dir.path().display()
        ))
        .stderr_has("`check --manifest-only` skips this machine's files");
    s.run(&["check", "--manifest-only"]).code(0);
}

#[test]
fn the_quickstart_and_the_real_stack_are_valid() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    // The real stack runs in its image: its programs are not on this machine.
    for (f, args) in [
        ("examples/quickstart/stack.yaml", &["check"][..]),
        ("stack.yaml", &["check", "--manifest-only"][..]),
        (
            "examples/space/stack.yaml",
            &["check", "--manifest-only"][..],
        ),
        (
            "examples/astrbot/stack.yaml",
            &["check", "--manifest-only"][..],
        ),
    ] {
        let s = Stack::new("");
        let out = std::process::Command::new(crate::harness::bin())
            .arg("-f")
            .arg(root.join(f))
            .args(args)
            .env("HOME", s.dir.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{f}: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        // What they leave unset is declared: blank on purpose.
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(!stdout.contains("reads as blank"), "{f}: {stdout}");
    }
}

#[test]
fn invalid_route_names_the_rule_and_field() {
    rejects(
        "gateway:\n  routes:\n    - { id: ok, prefix: /a/, backend: http://127.0.0.1:1 }\n    - { id: bad, prefix: /b/, backend: http://10.1.2.3:80 }\n",
        "4:7: `gateway.routes[1]`: rules[1] (`bad`): `backend`",
    );
}
