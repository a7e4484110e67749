use super::*;

#[test]
fn required_paths_must_be_persisted() {
    let load = |persist: &str| {
        let text = format!(
            "services:\n  app:\n    command: [x]\n    required_paths: [./data/model.bin, /data/db]\n{persist}"
        );
        load_str(&text, Path::new("/x/stack.yaml"), &ContainerEnv::new())
    };
    let m = load("persist:\n  remote: ./r.git\n  paths: [/data, ./data]\n").unwrap();
    assert_eq!(
        m.services[0].required_paths,
        [
            PathBuf::from("/x/data/model.bin"),
            PathBuf::from("/data/db")
        ]
    );
    let text = load("persist:\n  remote: ./r.git\n  paths: [/data]\n")
        .unwrap_err()
        .to_string();
    assert!(
        text.contains("services.app.required_paths[0]")
            && text.contains("`/x/data/model.bin` is not inside a persisted path")
            && !text.contains("required_paths[1]"),
        "{text}"
    );
    let text = load("").unwrap_err().to_string();
    assert!(text.contains("required_paths[1]"), "{text}");
}

/// Issue 16 item 1: `gateway.timeouts.send`, 60 s like nginx's
/// `send_timeout` unless set; zero is refused.
#[test]
fn the_send_timeout_defaults_to_60s_and_is_never_zero() {
    let load = |timeouts: &str| {
        let text = format!("services: {{}}\ngateway:\n  timeouts: {timeouts}\n");
        load_str(&text, Path::new("/x/stack.yaml"), &ContainerEnv::new())
    };
    let send = |m: Manifest| m.gateway.expect("a gateway").timeouts.send;
    assert_eq!(send(load("{}").unwrap()), Duration::from_secs(60));
    assert_eq!(
        send(load("{ send: 1m30s, idle: 5s }").unwrap()),
        Duration::from_secs(90)
    );
    let text = load("{ send: 0s }").unwrap_err().to_string();
    assert!(
        text.contains("gateway.timeouts.send") && text.contains("must be more than zero"),
        "{text}"
    );
}

fn persist_with(remote: &str, large_files: &str) -> Result<Manifest, ManifestError> {
    let text = format!(
        "services: {{}}\npersist:\n  remote: {remote}\n  paths: [/data]\n  large_files: {large_files}\n"
    );
    load_str(&text, Path::new("/x/stack.yaml"), &ContainerEnv::new())
}

fn warned_keys(m: &Manifest) -> Vec<&str> {
    m.warnings.iter().map(|w| w.key.as_str()).collect()
}

/// Issue 17 item 8: libgit2 here has no SSH; `check` says so.
#[test]
fn ssh_remotes_are_refused() {
    for remote in ["ssh://git@github.com/o/r.git", "git@github.com:o/r.git"] {
        let text = persist_with(remote, "{}").unwrap_err().to_string();
        assert!(text.contains("SSH remotes are not supported"), "{text}");
        assert!(text.contains("https URL"), "{text}");
    }
}

/// Issue 12 item 5: credentials belong in `persist.token`.
#[test]
fn credentials_in_the_remote_url_are_refused_or_warned_about() {
    let e = persist_with("https://x:ghp_inurl@github.com/o/r.git", "{}").unwrap_err();
    let text = e.to_string();
    assert!(text.contains("holds credentials"), "{text}");
    assert!(text.contains("persist.token"), "{text}");
    assert!(!text.contains("ghp_inurl"), "{text}");
    // Issue 17 item 7: the same for the LFS endpoint.
    let e = persist_with(
        "o/r",
        "{ store: lfs, url: \"https://u:hf_inurl@huggingface.co/d/u/r.git/info/lfs\" }",
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("persist.large_files.url"), "{e}");
    assert!(
        e.contains("holds credentials") && !e.contains("hf_inurl"),
        "{e}"
    );
    let m = persist_with("https://h/o/r.git?access_token=ghp_q", "{}").unwrap();
    assert_eq!(warned_keys(&m), ["persist.remote"]);
    assert!(
        !m.warnings[0].message.contains("ghp_q"),
        "{}",
        m.warnings[0]
    );
    assert!(m.warnings[0].message.contains("persist.token"));
}

#[test]
fn offload_binary_parses_and_auto_follows_the_remote() {
    let hf = "https://huggingface.co/datasets/u/d";
    let m = persist_with(hf, "{ store: lfs, threshold: 1MiB }").unwrap();
    let lf = &m.persist.as_ref().unwrap().large_files;
    assert_eq!(lf.offload_binary, OffloadBinary::Auto);
    assert!(lf.offloads_binary(hf));
    assert!(!lf.offloads_binary("https://gitea.example/u/d"));
    assert!(m.warnings.is_empty(), "{:?}", m.warnings);

    let other = "https://gitea.example/u/d";
    for (value, want) in [("always", true), ("never", false), ("auto", false)] {
        let m = persist_with(other, &format!("{{ store: lfs, offload_binary: {value} }}")).unwrap();
        let lf = &m.persist.as_ref().unwrap().large_files;
        assert_eq!(lf.offloads_binary(other), want, "{value}");
    }
    // Without a store there is nowhere to offload to.
    let m = persist_with(other, "{ store: none, offload_binary: always }").unwrap();
    assert!(!m.persist.unwrap().large_files.offloads_binary(other));

    let e = persist_with(other, "{ store: lfs, offload_binary: yes }").unwrap_err();
    let text = e.to_string();
    assert!(
        text.contains("persist.large_files.offload_binary")
            && text.contains("use auto, always or never"),
        "{text}"
    );
}

#[test]
fn hugging_face_settings_that_make_pushes_fail_are_warned_about() {
    let hf = "https://huggingface.co/datasets/u/d";
    let m = persist_with(hf, "{ store: lfs, threshold: 50MiB }").unwrap();
    assert_eq!(warned_keys(&m), ["persist.large_files.threshold"]);
    assert!(
        m.warnings[0]
            .message
            .contains("`threshold: 10MiB` or lower"),
        "{:?}",
        m.warnings
    );
    let m = persist_with(hf, "{ store: lfs, threshold: 10MiB }").unwrap();
    assert!(m.warnings.is_empty(), "{:?}", m.warnings);
    let m = persist_with(hf, "{ store: lfs, threshold: 0 }").unwrap();
    assert_eq!(warned_keys(&m), ["persist.large_files.threshold"]);
    let m = persist_with(hf, "{ store: none }").unwrap();
    assert_eq!(warned_keys(&m), ["persist.large_files.store"]);
    assert!(m.warnings[0].message.contains("set `store: lfs`"));
    let m = persist_with(hf, "{ store: lfs, threshold: 1MiB, offload_binary: never }").unwrap();
    assert_eq!(warned_keys(&m), ["persist.large_files.offload_binary"]);
    // The same settings on another host are fine.
    let m = persist_with("https://gitea.example/u/d", "{ store: none }").unwrap();
    assert!(m.warnings.is_empty(), "{:?}", m.warnings);
}

/// The rendered error of `yaml` read with `env`, or "" when it is valid.
fn errors_of(yaml: &str, env: &[(&str, &str)]) -> String {
    let env: ContainerEnv = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    match load_str(yaml, Path::new("/x/stack.yaml"), &env) {
        Ok(_) => String::new(),
        Err(e) => e.to_string(),
    }
}

const GEMINI: &str = r#"
env:
  API_KEYS: { secret: true, format: json-list }
  ALLOWED_TOKENS: { secret: true, format: json-list, default: "[]" }
  AUTH_TOKEN: { secret: true }
services:
  gemini:
    command: uvicorn app.main:app
    enabled: ${API_KEYS}
    requires_one_of: [ALLOWED_TOKENS, AUTH_TOKEN]
"#;

#[test]
fn a_service_that_needs_a_token_is_refused_without_one() {
    // Regression (issue 13, item 6): Gemini Balance with no token is an
    // open proxy for the user's keys.
    let keys = ("API_KEYS", r#"["AIzaSECRET"]"#);
    let e = errors_of(GEMINI, &[keys]);
    assert!(
        e.contains("`services.gemini.requires_one_of`: service `gemini` needs one of `ALLOWED_TOKENS`, `AUTH_TOKEN` set, and none is"),
        "{e}"
    );
    assert!(!e.contains("AIzaSECRET"), "{e}");
    assert!(errors_of(GEMINI, &[keys, ("ALLOWED_TOKENS", "[]")]).contains("needs one of"));
    assert_eq!(errors_of(GEMINI, &[keys, ("AUTH_TOKEN", "sk-1")]), "");
    assert_eq!(
        errors_of(GEMINI, &[keys, ("ALLOWED_TOKENS", r#"["sk-1"]"#)]),
        ""
    );
    // Switched off: nothing is needed.
    assert_eq!(errors_of(GEMINI, &[]), "");
}

#[test]
fn a_json_list_variable_that_is_not_one_is_named_never_shown() {
    let e = errors_of(
        GEMINI,
        &[("API_KEYS", "AIzaSECRET,AIzaOTHER"), ("AUTH_TOKEN", "sk-1")],
    );
    assert!(
        e.contains("`env.API_KEYS`: `API_KEYS` is not a JSON list of strings"),
        "{e}"
    );
    assert!(e.contains(r#"API_KEYS=["first","second"]"#), "{e}");
    assert!(!e.contains("AIzaSECRET"), "{e}");
    let e = errors_of(GEMINI, &[("API_KEYS", "[1, 2]"), ("AUTH_TOKEN", "sk-1")]);
    assert!(
        e.contains("`API_KEYS` is not a JSON list of strings"),
        "{e}"
    );
}

#[test]
fn a_bad_value_from_a_variable_names_the_variable() {
    let yaml = "env:\n  BACKUP_INTERVAL_SECONDS: { default: \"180\" }\nservices: {}\npersist:\n  remote: me/data\n  interval: ${BACKUP_INTERVAL_SECONDS}\n  paths: [/data]\n";
    let e = errors_of(yaml, &[("BACKUP_INTERVAL_SECONDS", "soon")]);
    assert!(e.contains("`persist.interval`: "), "{e}");
    assert!(e.contains("(from `BACKUP_INTERVAL_SECONDS`)"), "{e}");
}

#[test]
fn a_short_admin_password_names_its_variable() {
    let yaml = "env:\n  ADMIN_PASSWORD: { secret: true }\ngateway:\n  admin: { password: \"${ADMIN_PASSWORD}\" }\n";
    let e = errors_of(yaml, &[("ADMIN_PASSWORD", "hunter2")]);
    assert!(
        e.contains("`gateway.admin.password`: the admin password (from `ADMIN_PASSWORD`) is too short (7 characters); use at least 10"),
        "{e}"
    );
    assert!(!e.contains("hunter2"), "{e}");
    assert_eq!(
        errors_of(yaml, &[("ADMIN_PASSWORD", "a-long-enough-one")]),
        ""
    );
    assert_eq!(errors_of(yaml, &[]), "", "empty: one is generated");
}

#[test]
fn a_remote_url_with_credentials_names_its_variable() {
    // Issue 13 item 14: the error caused by a variable names it.
    let yaml = "services: {}\npersist:\n  remote: ${GITHUB_REPO}\n  paths: [/data]\n";
    for remote in [
        "https://x-access-token:ghp_SECRET1@github.com/me/data.git",
        "https://ghp_SECRET1@github.com/me/data.git",
    ] {
        let e = errors_of(yaml, &[("GITHUB_REPO", remote)]);
        assert!(
            e.contains("holds credentials (`user:password@`) (from `GITHUB_REPO`)"),
            "{e}"
        );
        assert!(!e.contains("SECRET1"), "{e}");
    }
    for fine in ["me/data", "https://github.com/me/data.git"] {
        assert_eq!(errors_of(yaml, &[("GITHUB_REPO", fine)]), "", "{fine}");
    }
}

#[test]
fn backend_connections_is_a_number_or_max_and_queue() {
    let read = |v: &str| {
        let yaml = format!("gateway:\n  backend_connections: {v}\n");
        load_str(&yaml, Path::new("/x/stack.yaml"), &ContainerEnv::new())
            .map(|m| m.gateway.unwrap().backend_connections)
            .map_err(|e| e.to_string())
    };
    let def = BackendConnections::default();
    assert_eq!((def.max, def.queue), (256, Duration::from_secs(5)));
    assert_eq!(read("64").unwrap(), BackendConnections { max: 64, ..def });
    assert_eq!(
        read("{ max: 0, queue: 200ms }").unwrap(),
        BackendConnections {
            max: 0,
            queue: Duration::from_millis(200)
        }
    );
    assert_eq!(read("{ queue: 1s }").unwrap().max, 256);
    let e = read("-1").unwrap_err();
    assert!(
        e.contains("`gateway.backend_connections`: expected a whole number"),
        "{e}"
    );
    let e = read("{ max: 10, wait: 1s }").unwrap_err();
    assert!(e.contains("wait"), "{e}");
}

/// The warnings of `yaml` read with `env` (it must be valid).
fn warnings_of(yaml: &str, env: &[(&str, &str)]) -> Vec<String> {
    let env: ContainerEnv = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let m = load_str(yaml, Path::new("/x/stack.yaml"), &env).unwrap();
    let at = |w: &Problem| format!("{}:{}: {w}", w.pos.line, w.pos.col);
    m.warnings.iter().map(at).collect()
}

/// A mistyped `${NAME}` was silently blank; now it is a warning, once per
/// name, where it is first written, naming the declared variable it is
/// closest to.
#[test]
fn an_unset_variable_is_warned_about_once_where_first_written() {
    // `persist` is read after `services`, but comes first in the file.
    let yaml = "env:\n  GITHUB_REPO: {}\npersist:\n  remote: me/data\n  branch: \"${GITHUB_REOP}\"\n  paths: [/data]\nservices:\n  web:\n    command: run ${GITHUB_REOP} ${GITHUB_REOP}\n    environment: { A: \"${ZZQ}\" }\n";
    assert_eq!(
        warnings_of(yaml, &[]),
        [
            "5:11: `persist.branch`: variable `GITHUB_REOP` is not set, so it reads as blank (did you mean `GITHUB_REPO`? write `${GITHUB_REOP:-}` if blank is meant)",
            "10:23: `services.web.environment.A`: variable `ZZQ` is not set, so it reads as blank (declare it in `env:`, or write `${ZZQ:-}` if blank is meant)",
        ]
    );
    // A container variable is a known name too.
    let yaml = "services:\n  web: { command: \"run ${HOSTNAM}\" }\n";
    let w = warnings_of(yaml, &[("HOSTNAME", "h")]);
    assert!(w[0].contains("did you mean `HOSTNAME`?"), "{w:?}");
}

/// `env:` is read from top to bottom: an entry whose default reads one
/// declared further down got blank (or its fallback) without a word. Now
/// that is a warning naming the order as the cause; an entry declared
/// blank on purpose, or set in the container, stays quiet.
#[test]
fn a_variable_declared_below_its_use_is_warned_about() {
    let yaml = "env:\n  URL: \"https://${HOST}/x\"\n  PORT: { default: \"${P:-80}\" }\n  HOST: example.org\n  P: \"8080\"\n  EMPTY: \"${NOTHING}\"\n  NOTHING: \"\"\n  SELF: \"${SELF:-s}\"\nservices:\n  web: { command: \"run ${URL} ${HOST}\" }\n";
    let below = |name: &str, at: &str, key: &str| {
        format!("{at}: `env.{key}`: reads `{name}` before `env:` declares it (further down), so not its value (move `{name}` above this entry: `env:` is read from top to bottom)")
    };
    assert_eq!(
        warnings_of(yaml, &[]),
        [
            below("HOST", "2:8", "URL"),
            below("P", "3:20", "PORT.default")
        ]
    );
    // Set in the container, the later entry's value is read from there.
    assert_eq!(
        warnings_of(yaml, &[("HOST", "h"), ("P", "1")]),
        Vec::<String>::new()
    );
    // Used after its declaration, it has its value.
    let m = load_str(yaml, Path::new("/x/stack.yaml"), &ContainerEnv::default()).unwrap();
    assert_eq!(m.services[0].command[2], "example.org");
}

/// Warnings come in file order, as problems do, whichever check found
/// them (unset variables are only known once `env:` is read).
#[test]
fn warnings_are_in_file_order() {
    let yaml = "env:\n  TOKEN: { secret: true, default: x }\npersist:\n  remote: me/data\n  branch: \"${GITHUB_REOP}\"\n  paths: [/data]\nservices:\n  web: { command: \"run ${TOKEN}\" }\n";
    let lines: Vec<String> = warnings_of(yaml, &[])
        .iter()
        .map(|w| w.split(':').next().unwrap_or_default().to_string())
        .collect();
    assert_eq!(lines, ["5", "8"]);
}

#[test]
fn a_variable_that_is_declared_set_or_given_a_meaning_is_not_warned_about() {
    let quiet = [
        // Declared (blank on purpose: the docs' way to say so).
        "env:\n  TOKEN: {}\nservices:\n  web: { command: \"run ${TOKEN}\" }\n",
        // A default, or blank written out.
        "services:\n  web: { command: \"run ${X:-} ${X-x} ${X:-x} ${Y-}\" }\n",
        // Escaped, or without braces (the shell's business).
        "services:\n  web: { command: \"sh -c 'echo $${X} $X'\" }\n",
        // Set in the container, even to nothing.
        "services:\n  web: { command: \"run ${SET} ${EMPTY}\" }\n",
    ];
    for yaml in quiet {
        let env = [("SET", "1"), ("EMPTY", "")];
        assert_eq!(warnings_of(yaml, &env), Vec::<String>::new(), "{yaml}");
    }
    // `${X:?msg}` stays an error.
    let e = errors_of("services:\n  web: { command: \"run ${X:?set X}\" }\n", &[]);
    assert!(e.contains("`X` must be set: set X"), "{e}");
}

/// A dependency's condition is a value like any other: a bad one from a
/// variable names the variable, and the long form's is reported under
/// its own key, as `backoff.initial` is.
#[test]
fn a_bad_dependency_condition_names_its_key_and_variable() {
    let yaml = "services:\n  db: { command: x }\n  a: { command: x, depends_on: { db: \"${COND}\" } }\n  b: { command: x, depends_on: { db: { condition: \"${COND}\" } } }\n  c: { command: x, depends_on: { db: { condition: ready } } }\n";
    let e = errors_of(yaml, &[("COND", "ready")]);
    let unknown = "unknown condition `ready` (use started, healthy or completed_successfully)";
    for want in [
        format!("/x/stack.yaml:3:38: `services.a.depends_on.db`: {unknown} (from `COND`)\n"),
        format!(
            "/x/stack.yaml:4:51: `services.b.depends_on.db.condition`: {unknown} (from `COND`)\n"
        ),
        format!("/x/stack.yaml:5:51: `services.c.depends_on.db.condition`: {unknown}"),
    ] {
        assert!(e.contains(&want), "{want}\n{e}");
    }
    // A good value through a variable is taken, in either form.
    let env: ContainerEnv = [("COND".to_string(), "service_healthy".to_string())].into();
    let ok = yaml.replace("ready", "healthy");
    let m = load_str(&ok, Path::new("/x/stack.yaml"), &env).unwrap();
    for s in &m.services[1..] {
        assert_eq!(s.depends_on[0].condition, Condition::Healthy, "{}", s.name);
    }
}

/// A dependency written with nothing after it (`db:` or `condition:`) is
/// still a dependency, on compose's default condition, not none at all.
#[test]
fn an_empty_dependency_condition_means_started() {
    let yaml = "services:\n  db: { command: x }\n  a:\n    command: x\n    depends_on:\n      db:\n  b:\n    command: x\n    depends_on:\n      db: { condition: }\n  c:\n    command: x\n    depends_on:\n      db: {}\n";
    let m = load_str(yaml, Path::new("/x/stack.yaml"), &ContainerEnv::default()).unwrap();
    for s in &m.services[1..] {
        assert_eq!(s.depends_on.len(), 1, "{}", s.name);
        assert_eq!(s.depends_on[0].service, "db", "{}", s.name);
        assert_eq!(s.depends_on[0].condition, Condition::Started, "{}", s.name);
    }
}
