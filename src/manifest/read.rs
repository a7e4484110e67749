//! From the position-aware YAML tree to the validated [`Manifest`].
//!
//! The reader walks the tree once, collecting every problem (unknown key
//! with the nearest valid one, wrong type, bad duration, unknown dependency,
//! cycle…) with its line and column, so a user fixes a broken manifest in
//! one round instead of one error at a time.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use ipnet::IpNet;

use crate::manifest::error::{nearest, ManifestError, Problem};
use crate::manifest::interp::interpolate;
use crate::manifest::model::*;
use crate::manifest::remotes::{looks_like_github, looks_like_hugging_face};
use crate::manifest::units::{parse_duration, parse_size};
use crate::manifest::yaml::{self, Key, Node, Pos, Value};

// Kept here for its callers; it lives in `model` so that `env` needs
// nothing from this reader.
pub use crate::manifest::model::ContainerEnv;

const TOP_KEYS: &[&str] = &[
    "version",
    "name",
    "env",
    "services",
    "gateway",
    "persist",
    "shutdown_timeout",
];
const ENV_KEYS: &[&str] = &[
    "from",
    "default",
    "required",
    "secret",
    "description",
    "deprecated",
    "format",
];
const SERVICE_KEYS: &[&str] = &[
    "command",
    "working_dir",
    "environment",
    "env_file",
    "depends_on",
    "readiness",
    "liveness",
    "restart",
    "backoff",
    "max_restarts",
    "stop_signal",
    "stop_timeout",
    "enabled",
    "optional",
    "logs",
    "required_paths",
    "description",
    "requires_one_of",
];
const PROBE_KEYS: &[&str] = &[
    "http",
    "tcp",
    "exec",
    "file",
    "log",
    "interval",
    "timeout",
    "failures",
    "initial_delay",
];
const PROBE_CHECKS: &[&str] = &["http", "tcp", "exec", "file", "log"];
const GATEWAY_KEYS: &[&str] = &[
    "listen",
    "default_backend",
    "routes",
    "admin",
    "allow_backends",
    "trusted_proxies",
    "state_file",
    "timeouts",
    "max_body",
    "import_from",
    "backend_connections",
];
const ROUTE_KEYS: &[&str] = &[
    "id",
    "priority",
    "action",
    "backend",
    "strip_prefix",
    "set_headers",
    "redirect_to",
    "redirect_to_prefix",
    "redirect_code",
    "match",
    "prefix",
];
const MATCH_KEYS: &[&str] = &[
    "path_prefix",
    "path_equal",
    "host",
    "method",
    "referer_substr",
    "referer_regex",
    "headers",
];
const PERSIST_KEYS: &[&str] = &[
    "remote",
    "token",
    "branch",
    "workdir",
    "interval",
    "debounce",
    "paths",
    "exclude",
    "history",
    "large_files",
    "readiness_file",
];

/// Read and validate the manifest at `file`.
pub fn load(file: &Path, container: &ContainerEnv) -> Result<Manifest, ManifestError> {
    let text = std::fs::read_to_string(file).map_err(|source| ManifestError::Read {
        file: file.to_path_buf(),
        source,
    })?;
    load_str(&text, file, container)
}

/// Validate manifest `text` as if read from `file` (relative paths resolve
/// against `file`'s directory).
pub fn load_str(
    text: &str,
    file: &Path,
    container: &ContainerEnv,
) -> Result<Manifest, ManifestError> {
    let invalid = |problems| ManifestError::Invalid {
        file: file.to_path_buf(),
        problems,
    };
    let root = yaml::parse(text).map_err(|e| {
        invalid(vec![Problem {
            pos: e.pos,
            key: String::new(),
            message: format!("YAML syntax error: {}", e.message),
            hint: None,
        }])
    })?;
    let dir = absolute_dir(file);
    let mut r = Reader {
        problems: Vec::new(),
        warnings: Vec::new(),
        container,
        declared: BTreeMap::new(),
        secrets: Vec::new(),
        dir,
    };
    let manifest = r.manifest(&root, file);
    if r.problems.is_empty() {
        let mut m = manifest;
        m.warnings = r.warnings;
        Ok(m)
    } else {
        let mut problems = r.problems;
        problems.sort_by_key(|p| (p.pos.line, p.pos.col));
        Err(invalid(problems))
    }
}

fn absolute_dir(file: &Path) -> PathBuf {
    let parent = file.parent().unwrap_or(Path::new("."));
    let parent = if parent.as_os_str().is_empty() {
        Path::new(".")
    } else {
        parent
    };
    std::path::absolute(parent).unwrap_or_else(|_| parent.to_path_buf())
}

struct Reader<'e> {
    problems: Vec<Problem>,
    warnings: Vec<Problem>,
    container: &'e ContainerEnv,
    /// Resolved values of declared env entries (they shadow container variables).
    declared: BTreeMap<String, String>,
    /// Names of secret entries and their aliases.
    secrets: Vec<String>,
    dir: PathBuf,
}

/// A mapping being read: its entries and its dotted path.
struct Fields<'n> {
    path: String,
    pos: Pos,
    entries: &'n [(Key, Node)],
}

impl<'n> Fields<'n> {
    fn get(&self, key: &str) -> Option<&'n Node> {
        self.entries
            .iter()
            .find(|(k, _)| k.name == key)
            .map(|(_, v)| v)
    }

    fn key(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.path)
        }
    }
}

static EMPTY: &[(Key, Node)] = &[];

impl Reader<'_> {
    fn problem(&mut self, pos: Pos, key: &str, message: impl Into<String>, hint: Option<String>) {
        // A message may quote a value that came from a secret (`interval:
        // ${API_KEYS}`); errors must never show one.
        let message = crate::check::mask(&message.into(), &self.secret_values());
        self.problems.push(Problem {
            pos,
            key: key.to_string(),
            message,
            hint,
        });
    }

    fn warn(&mut self, pos: Pos, key: &str, message: impl Into<String>) {
        let message = crate::check::mask(&message.into(), &self.secret_values());
        self.warnings.push(Problem {
            pos,
            key: key.to_string(),
            message,
            hint: None,
        });
    }

    fn secret_values(&self) -> Vec<String> {
        self.secrets.iter().filter_map(|n| self.lookup(n)).collect()
    }

    /// `name` (declared or a container variable) has a value that means
    /// something: not empty, and not an empty JSON list or object (`[]` is
    /// how the original deployment spelled "no tokens").
    fn is_set(&self, name: &str) -> bool {
        self.lookup(name)
            .is_some_and(|v| match serde_json::from_str(&v) {
                Ok(serde_json::Value::Array(a)) => !a.is_empty(),
                Ok(serde_json::Value::Object(o)) => !o.is_empty(),
                _ => !v.trim().is_empty(),
            })
    }

    /// A mapping with only `known` keys; null counts as an empty mapping.
    fn fields<'n>(&mut self, node: &'n Node, path: &str, known: &[&str]) -> Option<Fields<'n>> {
        let entries = match &node.value {
            Value::Map(entries) => entries.as_slice(),
            Value::Null => EMPTY,
            _ => {
                self.problem(
                    node.pos,
                    path,
                    format!("expected a mapping, found {}", node.kind()),
                    None,
                );
                return None;
            }
        };
        let f = Fields {
            path: path.to_string(),
            pos: node.pos,
            entries,
        };
        for (k, _) in entries {
            if !known.contains(&k.name.as_str()) {
                let hint = match nearest(&k.name, known) {
                    Some(n) => format!("did you mean `{n}`?"),
                    None => format!("valid keys: {}", known.join(", ")),
                };
                let key = f.key(&k.name);
                self.problem(k.pos, &key, "unknown key", Some(hint));
            }
        }
        Some(f)
    }

    fn lookup(&self, name: &str) -> Option<String> {
        self.declared
            .get(name)
            .or_else(|| self.container.get(name))
            .cloned()
    }

    /// A scalar's text, interpolated. `None` for null (and for errors,
    /// which are recorded).
    fn text_used(&mut self, node: &Node, key: &str) -> Option<(String, Vec<String>)> {
        match &node.value {
            Value::Null => None,
            Value::Scalar { text, .. } => {
                let mut used = Vec::new();
                let result = interpolate(text, &|n| self.lookup(n), &mut used);
                match result {
                    Ok(v) => Some((v, used)),
                    Err(e) => {
                        self.problem(node.pos, key, e, None);
                        None
                    }
                }
            }
            _ => {
                self.problem(
                    node.pos,
                    key,
                    format!("expected a string, found {}", node.kind()),
                    None,
                );
                None
            }
        }
    }

    fn text(&mut self, node: &Node, key: &str) -> Option<String> {
        self.text_used(node, key).map(|(v, _)| v)
    }

    fn opt_text(&mut self, f: &Fields, name: &str) -> Option<String> {
        let node = f.get(name)?;
        self.text(node, &f.key(name))
    }

    fn parsed<T>(
        &mut self,
        f: &Fields,
        name: &str,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Option<T> {
        let node = f.get(name)?;
        let key = f.key(name);
        let (text, used) = self.text_used(node, &key)?;
        match parse(&text) {
            Ok(v) => Some(v),
            Err(e) => {
                // A value made from a variable names it: the fix is in the
                // container's environment, not in the YAML line.
                self.problem(node.pos, &key, format!("{e}{}", from_vars(&used)), None);
                None
            }
        }
    }

    /// A list of paths (relative to the manifest's directory) under `name`.
    fn path_list(&mut self, f: &Fields, name: &str) -> Vec<PathBuf> {
        match f.get(name) {
            Some(n) => self
                .text_list(n, &f.key(name))
                .iter()
                .map(|t| self.path(&self.dir.clone(), t))
                .collect(),
            None => Vec::new(),
        }
    }

    fn duration(&mut self, f: &Fields, name: &str, default: Duration) -> Duration {
        self.parsed(f, name, parse_duration).unwrap_or(default)
    }

    fn size(&mut self, f: &Fields, name: &str, default: u64) -> u64 {
        self.parsed(f, name, parse_size).unwrap_or(default)
    }

    fn flag(&mut self, f: &Fields, name: &str, default: bool) -> bool {
        self.parsed(f, name, parse_bool).unwrap_or(default)
    }

    fn number<T: FromStr>(&mut self, f: &Fields, name: &str, default: T) -> T {
        self.parsed(f, name, |t| {
            t.trim()
                .parse::<T>()
                .map_err(|_| format!("expected a whole number, found `{t}`"))
        })
        .unwrap_or(default)
    }

    /// `text` as an absolute, normalised path (relative to `base`).
    fn path(&self, base: &Path, text: &str) -> PathBuf {
        let p = Path::new(text);
        normalize(&if p.is_absolute() {
            p.to_path_buf()
        } else {
            base.join(p)
        })
    }

    /// A string or a list of strings.
    fn text_list(&mut self, node: &Node, key: &str) -> Vec<String> {
        match &node.value {
            Value::Seq(items) => items
                .iter()
                .enumerate()
                .filter_map(|(i, n)| self.text(n, &format!("{key}[{i}]")))
                .collect(),
            Value::Null => Vec::new(),
            _ => self.text(node, key).into_iter().collect(),
        }
    }

    /// A command: a string split like a shell (without one), or a list.
    fn command(&mut self, node: &Node, key: &str) -> Option<Vec<String>> {
        let (argv, used) = match &node.value {
            Value::Seq(items) => {
                let mut argv = Vec::new();
                let mut used = Vec::new();
                for (i, n) in items.iter().enumerate() {
                    let (v, u) = self.text_used(n, &format!("{key}[{i}]"))?;
                    argv.push(v);
                    used.extend(u);
                }
                (argv, used)
            }
            _ => {
                let (line, used) = self.text_used(node, key)?;
                match shell_words::split(&line) {
                    Ok(argv) => (argv, used),
                    Err(e) => {
                        self.problem(
                            node.pos,
                            key,
                            format!("cannot split the command: {e}"),
                            None,
                        );
                        return None;
                    }
                }
            }
        };
        if argv.is_empty() || argv[0].is_empty() {
            self.problem(
                node.pos,
                key,
                "the command is empty",
                Some("give the program to run, e.g. `python3 -m http.server 9001`".into()),
            );
            return None;
        }
        if let Some(secret) = used.iter().find(|u| self.secrets.contains(u)) {
            // Arguments are visible to every process through /proc/PID/cmdline.
            let msg = format!(
                "puts secret `{secret}` on a command line, where every process can read it; pass it through `environment:` instead"
            );
            self.warn(node.pos, key, msg);
        }
        Some(argv)
    }

    fn manifest(&mut self, root: &Node, file: &Path) -> Manifest {
        let top = self.fields(root, "", TOP_KEYS).unwrap_or(Fields {
            path: String::new(),
            pos: root.pos,
            entries: EMPTY,
        });
        let version = match top.get("version") {
            None => 1,
            Some(n) => {
                let v = self.number(&top, "version", 1u32);
                if v != 1 {
                    self.problem(
                        n.pos,
                        "version",
                        format!("unsupported version `{v}`"),
                        Some("this stackctl reads `version: 1`".into()),
                    );
                }
                v
            }
        };
        let name = self.opt_text(&top, "name").unwrap_or_else(|| {
            self.dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "stack".into())
        });
        let env = match top.get("env") {
            Some(n) => self.env(n),
            None => Vec::new(),
        };
        let services = match top.get("services") {
            Some(n) => self.services(n),
            None => Vec::new(),
        };
        let shutdown_timeout = self.duration(&top, "shutdown_timeout", Duration::from_secs(9));
        let persist = top.get("persist").and_then(|n| self.persist(n));
        let gateway = top
            .get("gateway")
            .and_then(|n| self.gateway(n, &name, persist.as_ref()));
        self.check_required_paths(&services, persist.as_ref());
        let mut persist = persist;
        if let (Some(p), Some(g)) = (persist.as_mut(), gateway.as_ref()) {
            // Live route edits and the password hash must survive a wiped
            // disk: their directory is persisted with the data.
            if !p.paths.iter().any(|pp| g.state_file.starts_with(&pp.path)) {
                if let Some(dir) = g.state_file.parent() {
                    p.paths.push(PersistPath {
                        path: dir.to_path_buf(),
                        exclude: Vec::new(),
                    });
                }
            }
        }
        Manifest {
            file: file.to_path_buf(),
            dir: self.dir.clone(),
            version,
            name,
            env,
            services,
            gateway,
            persist,
            shutdown_timeout,
            warnings: Vec::new(),
        }
    }

    /// A service's `required_paths` must be persisted: only a restore can
    /// fail to bring them back.
    fn check_required_paths(&mut self, services: &[Service], persist: Option<&Persist>) {
        for s in services {
            for (i, p) in s.required_paths.iter().enumerate() {
                let key = format!("services.{}.required_paths[{i}]", s.name);
                let inside =
                    persist.is_some_and(|pc| pc.paths.iter().any(|pp| p.starts_with(&pp.path)));
                if !inside {
                    self.problem(
                        s.pos,
                        &key,
                        format!("`{}` is not inside a persisted path", p.display()),
                        Some(
                            "list it under `persist.paths` (or a directory above it), or remove it"
                                .into(),
                        ),
                    );
                }
            }
        }
    }

    fn env(&mut self, node: &Node) -> Vec<EnvVar> {
        let Some(section) = self.fields_any(node, "env") else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for (k, v) in section.entries {
            let key = format!("env.{}", k.name);
            if !valid_var_name(&k.name) {
                self.problem(
                    k.pos,
                    &key,
                    "not a valid variable name",
                    Some("use letters, digits and `_`, not starting with a digit".into()),
                );
                continue;
            }
            let mut decl = EnvVar {
                name: k.name.clone(),
                candidates: Vec::new(),
                value: None,
                source: EnvSource::Unset,
                secret: false,
                required: false,
                description: None,
            };
            let mut default = None;
            let mut deprecated = None;
            let mut format = None;
            match &v.value {
                // `NAME: value` is shorthand for `NAME: { default: value }`.
                Value::Scalar { .. } => default = self.text(v, &key),
                Value::Null => {}
                _ => {
                    let Some(f) = self.fields(v, &key, ENV_KEYS) else {
                        continue;
                    };
                    if let Some(from) = f.get("from") {
                        decl.candidates = self.text_list(from, &f.key("from"));
                        for c in &decl.candidates {
                            if !valid_var_name(c) {
                                self.problem(
                                    from.pos,
                                    &f.key("from"),
                                    format!("`{c}` is not a valid variable name"),
                                    None,
                                );
                            }
                        }
                    }
                    default = self.opt_text(&f, "default");
                    decl.secret = self.flag(&f, "secret", false);
                    decl.required = self.flag(&f, "required", false);
                    decl.description = self.opt_text(&f, "description");
                    deprecated = self.opt_text(&f, "deprecated");
                    format = self.parsed(&f, "format", |t| match t {
                        "json-list" => Ok(EnvFormat::JsonList),
                        other => Err(format!("unknown format `{other}` (use json-list)")),
                    });
                }
            }
            // The entry's own name is always a candidate, after the listed
            // ones unless the list places it.
            if !decl.candidates.contains(&decl.name) {
                decl.candidates.push(decl.name.clone());
            }
            match pick(&decl.candidates, self.container) {
                Some((name, value)) => {
                    decl.value = Some(value);
                    decl.source = EnvSource::Variable(name);
                }
                None if default.is_some() => {
                    decl.value = default;
                    decl.source = EnvSource::Default;
                }
                None => {}
            }
            if decl.required && decl.value.as_deref().unwrap_or("").is_empty() {
                let names = backticked(&decl.candidates, " or ");
                self.problem(
                    k.pos,
                    &key,
                    "is required but not set",
                    Some(format!("set {names} in the container's environment")),
                );
            }
            if decl.secret {
                self.secrets.extend(decl.candidates.iter().cloned());
            }
            if let (Some(EnvFormat::JsonList), Some(v)) = (format, &decl.value) {
                if !v.trim().is_empty() && !is_json_string_list(v) {
                    // The value is never quoted: it may be a list of keys.
                    let from = match &decl.source {
                        EnvSource::Variable(n) => format!("`{n}`"),
                        _ => format!("the default of `{}`", decl.name),
                    };
                    self.problem(
                        k.pos,
                        &key,
                        format!("{from} is not a JSON list of strings"),
                        Some(format!(
                            "write it as a JSON list, e.g. {}=[\"first\",\"second\"]",
                            match &decl.source {
                                EnvSource::Variable(n) => n.as_str(),
                                _ => decl.name.as_str(),
                            }
                        )),
                    );
                }
            }
            // A variable that no longer means anything is accepted, with a
            // word on why, so an old deployment's settings keep working.
            if let (Some(why), EnvSource::Variable(name)) = (&deprecated, &decl.source) {
                let msg = format!("`{name}` is set but no longer has any effect: {why}");
                self.warn(k.pos, &key, msg);
            }
            if let Some(v) = &decl.value {
                self.declared.insert(decl.name.clone(), v.clone());
            }
            out.push(decl);
        }
        out
    }

    /// A mapping whose keys are names chosen by the user.
    fn fields_any<'n>(&mut self, node: &'n Node, path: &str) -> Option<Fields<'n>> {
        match &node.value {
            Value::Map(entries) => Some(Fields {
                path: path.to_string(),
                pos: node.pos,
                entries,
            }),
            Value::Null => Some(Fields {
                path: path.to_string(),
                pos: node.pos,
                entries: EMPTY,
            }),
            _ => {
                self.problem(
                    node.pos,
                    path,
                    format!("expected a mapping, found {}", node.kind()),
                    None,
                );
                None
            }
        }
    }

    fn services(&mut self, node: &Node) -> Vec<Service> {
        let Some(section) = self.fields_any(node, "services") else {
            return Vec::new();
        };
        let mut out = Vec::new();
        let mut dep_pos: Vec<Vec<Pos>> = Vec::new();
        for (k, v) in section.entries {
            let key = format!("services.{}", k.name);
            if !valid_service_name(&k.name) {
                self.problem(
                    k.pos,
                    &key,
                    "not a valid service name",
                    Some("use letters, digits, `-` and `_`".into()),
                );
                continue;
            }
            if let Some((svc, pos)) = self.service(&k.name, k.pos, v, &key) {
                out.push(svc);
                dep_pos.push(pos);
            }
        }
        self.check_dependencies(&out, &dep_pos);
        out
    }

    fn service(
        &mut self,
        name: &str,
        pos: Pos,
        node: &Node,
        key: &str,
    ) -> Option<(Service, Vec<Pos>)> {
        let f = self.fields(node, key, SERVICE_KEYS)?;
        let command = match f.get("command") {
            Some(n) => self.command(n, &f.key("command")),
            None => {
                self.problem(
                    pos,
                    key,
                    "`command` is missing",
                    Some("every service needs a program to run".into()),
                );
                None
            }
        };
        let working_dir = match self.opt_text(&f, "working_dir") {
            Some(t) => self.path(&self.dir.clone(), &t),
            None => self.dir.clone(),
        };
        let environment = match f.get("environment") {
            Some(n) => self.environment(n, &f.key("environment")),
            None => Vec::new(),
        };
        let env_files = self.path_list(&f, "env_file");
        let (depends_on, dep_pos) = match f.get("depends_on") {
            Some(n) => self.depends_on(n, &f.key("depends_on")),
            None => (Vec::new(), Vec::new()),
        };
        let readiness = f.get("readiness").and_then(|n| {
            self.probe(
                n,
                &f.key("readiness"),
                &working_dir,
                Duration::from_secs(1),
                1,
            )
        });
        let liveness = f.get("liveness").and_then(|n| {
            self.probe(
                n,
                &f.key("liveness"),
                &working_dir,
                Duration::from_secs(10),
                3,
            )
        });
        if let Some(Probe {
            check: ProbeCheck::Log(_),
            ..
        }) = &liveness
        {
            if let Some(n) = f.get("liveness") {
                self.problem(
                    n.pos,
                    &f.key("liveness"),
                    "a `log` check can only be a readiness probe",
                    Some("use http, tcp, exec or file for liveness".into()),
                );
            }
        }
        let restart = self
            .parsed(&f, "restart", |t| match t {
                "always" | "unless-stopped" => Ok(RestartPolicy::Always),
                "on-failure" | "on_failure" => Ok(RestartPolicy::OnFailure),
                "no" | "never" | "false" => Ok(RestartPolicy::No),
                other => Err(format!(
                    "unknown restart policy `{other}` (use always, on-failure or no)"
                )),
            })
            .unwrap_or(RestartPolicy::OnFailure);
        let backoff = match f.get("backoff") {
            Some(n) => {
                let key = f.key("backoff");
                let b = self.fields(n, &key, &["initial", "max"]);
                let mut backoff = Backoff {
                    initial: Duration::from_secs(1),
                    max: Duration::from_secs(60),
                };
                if let Some(b) = b {
                    backoff.initial = self.duration(&b, "initial", backoff.initial);
                    backoff.max = self.duration(&b, "max", backoff.max);
                    if backoff.max < backoff.initial {
                        self.problem(n.pos, &key, "`max` is shorter than `initial`", None);
                    }
                }
                backoff
            }
            None => Backoff {
                initial: Duration::from_secs(1),
                max: Duration::from_secs(60),
            },
        };
        let mut max_restarts = MaxRestarts {
            count: 10,
            within: Duration::from_secs(300),
        };
        if let Some(n) = f.get("max_restarts") {
            let key = f.key("max_restarts");
            if let Value::Scalar { .. } = n.value {
                max_restarts.count = self.number(&f, "max_restarts", 10);
            } else if let Some(m) = self.fields(n, &key, &["count", "within"]) {
                max_restarts.count = self.number(&m, "count", 10);
                max_restarts.within = self.duration(&m, "within", max_restarts.within);
            }
        }
        let stop_signal = self
            .parsed(&f, "stop_signal", parse_signal)
            .unwrap_or(libc::SIGTERM);
        let stop_timeout = self.duration(&f, "stop_timeout", Duration::from_secs(5));
        let enabled = match f.get("enabled") {
            Some(n) => self.text(n, &f.key("enabled")).is_some_and(|t| truthy(&t)),
            None => true,
        };
        let optional = self.flag(&f, "optional", false);
        if let Some(n) = f.get("requires_one_of") {
            let key = f.key("requires_one_of");
            let names = self.text_list(n, &key);
            // Checked only for a service that runs: `enabled:` switches off
            // a service together with what it needs.
            if enabled && !names.is_empty() && !names.iter().any(|v| self.is_set(v)) {
                let list = backticked(&names, ", ");
                self.problem(
                    n.pos,
                    &key,
                    format!("service `{name}` needs one of {list} set, and none is"),
                    Some(format!(
                        "set one of {list} in the container's environment (an empty JSON list `[]` counts as unset), or switch the service off"
                    )),
                );
            }
        }
        let required_paths = self.path_list(&f, "required_paths");
        let logs = f.get("logs").and_then(|n| {
            let key = f.key("logs");
            let l = self.fields(n, &key, &["file", "max_size", "keep"])?;
            let Some(file) = self.opt_text(&l, "file") else {
                self.problem(n.pos, &key, "`file` is missing", None);
                return None;
            };
            Some(LogFile {
                file: self.path(&self.dir.clone(), &file),
                max_size: self.size(&l, "max_size", 10 << 20),
                keep: self.number(&l, "keep", 3),
            })
        });
        Some((
            Service {
                name: name.to_string(),
                pos,
                command: command.unwrap_or_default(),
                working_dir,
                environment,
                env_files,
                depends_on,
                readiness,
                liveness,
                restart,
                backoff,
                max_restarts,
                stop_signal,
                stop_timeout,
                enabled,
                optional,
                logs,
                required_paths,
            },
            dep_pos,
        ))
    }

    fn environment(&mut self, node: &Node, key: &str) -> Vec<(String, Option<String>)> {
        let mut out = Vec::new();
        match &node.value {
            Value::Map(entries) => {
                for (k, v) in entries {
                    let ekey = format!("{key}.{}", k.name);
                    if !valid_var_name(&k.name) {
                        self.problem(k.pos, &ekey, "not a valid variable name", None);
                        continue;
                    }
                    let value = match &v.value {
                        Value::Null => None,
                        _ => Some(self.text(v, &ekey).unwrap_or_default()),
                    };
                    out.push((k.name.clone(), value));
                }
            }
            Value::Seq(items) => {
                for (i, n) in items.iter().enumerate() {
                    let ekey = format!("{key}[{i}]");
                    let Some(item) = self.text(n, &ekey) else {
                        continue;
                    };
                    let (name, value) = match item.split_once('=') {
                        Some((k, v)) => (k.to_string(), Some(v.to_string())),
                        None => (item.clone(), None),
                    };
                    if !valid_var_name(&name) {
                        self.problem(
                            n.pos,
                            &ekey,
                            format!("`{name}` is not a valid variable name"),
                            Some("write `NAME=value` or `NAME`".into()),
                        );
                        continue;
                    }
                    out.push((name, value));
                }
            }
            Value::Null => {}
            Value::Scalar { .. } => {
                self.problem(
                    node.pos,
                    key,
                    "expected a mapping or a list of `NAME=value`",
                    None,
                );
            }
        }
        out
    }

    fn depends_on(&mut self, node: &Node, key: &str) -> (Vec<Dependency>, Vec<Pos>) {
        let mut deps = Vec::new();
        let mut pos = Vec::new();
        match &node.value {
            Value::Seq(items) => {
                for (i, n) in items.iter().enumerate() {
                    if let Some(name) = self.text(n, &format!("{key}[{i}]")) {
                        deps.push(Dependency {
                            service: name,
                            condition: Condition::Started,
                        });
                        pos.push(n.pos);
                    }
                }
            }
            Value::Map(entries) => {
                for (k, v) in entries {
                    let dkey = format!("{key}.{}", k.name);
                    // `db: healthy` or compose's long form `db: {condition: service_healthy}`.
                    let cond_node = match &v.value {
                        Value::Map(_) => self
                            .fields(v, &dkey, &["condition"])
                            .and_then(|f| f.get("condition")),
                        _ => Some(v),
                    };
                    let condition = match cond_node {
                        None => Some(Condition::Started),
                        Some(c) => self.text(c, &dkey).and_then(|t| match parse_condition(&t) {
                            Ok(c) => Some(c),
                            Err(e) => {
                                self.problem(c.pos, &dkey, e, None);
                                None
                            }
                        }),
                    };
                    if let Some(condition) = condition {
                        deps.push(Dependency {
                            service: k.name.clone(),
                            condition,
                        });
                        pos.push(k.pos);
                    }
                }
            }
            Value::Null => {}
            Value::Scalar { .. } => {
                if let Some(name) = self.text(node, key) {
                    deps.push(Dependency {
                        service: name,
                        condition: Condition::Started,
                    });
                    pos.push(node.pos);
                }
            }
        }
        (deps, pos)
    }

    fn probe(
        &mut self,
        node: &Node,
        key: &str,
        working_dir: &Path,
        interval: Duration,
        failures: u32,
    ) -> Option<Probe> {
        let f = self.fields(node, key, PROBE_KEYS)?;
        let present: Vec<&str> = PROBE_CHECKS
            .iter()
            .copied()
            .filter(|c| f.get(c).is_some())
            .collect();
        if present.len() != 1 {
            let message = if present.is_empty() {
                "no check given".to_string()
            } else {
                format!("several checks given ({})", present.join(", "))
            };
            self.problem(
                node.pos,
                key,
                message,
                Some("give exactly one of http, tcp, exec, file, log".into()),
            );
            return None;
        }
        let kind = present[0];
        let cnode = f.get(kind)?;
        let ckey = f.key(kind);
        let check = match kind {
            "exec" => ProbeCheck::Exec(self.command(cnode, &ckey)?),
            "http" => {
                let url = self.text(cnode, &ckey)?;
                if !url.starts_with("http://") {
                    self.problem(
                        cnode.pos,
                        &ckey,
                        format!("`{url}` is not an http:// URL"),
                        Some("probes speak plain HTTP, e.g. `http://127.0.0.1:8000/health`".into()),
                    );
                    return None;
                }
                ProbeCheck::Http(url)
            }
            "tcp" => {
                let addr = self.text(cnode, &ckey)?;
                if addr
                    .rsplit_once(':')
                    .and_then(|(_, p)| p.parse::<u16>().ok())
                    .is_none()
                {
                    self.problem(
                        cnode.pos,
                        &ckey,
                        format!("`{addr}` is not HOST:PORT"),
                        Some("e.g. `127.0.0.1:6099`".into()),
                    );
                    return None;
                }
                ProbeCheck::Tcp(addr)
            }
            "file" => {
                let p = self.text(cnode, &ckey)?;
                ProbeCheck::File(self.path(working_dir, &p))
            }
            _ => {
                let t = self.text(cnode, &ckey)?;
                if t.is_empty() {
                    self.problem(cnode.pos, &ckey, "the text to wait for is empty", None);
                    return None;
                }
                ProbeCheck::Log(t)
            }
        };
        let interval = self.duration(&f, "interval", interval);
        if interval.is_zero() {
            self.problem(f.pos, key, "`interval` must be above zero", None);
        }
        Some(Probe {
            check,
            interval,
            timeout: self.duration(&f, "timeout", Duration::from_secs(2)),
            failures: self.number(&f, "failures", failures).max(1),
            initial_delay: self.duration(&f, "initial_delay", Duration::ZERO),
        })
    }

    fn check_dependencies(&mut self, services: &[Service], dep_pos: &[Vec<Pos>]) {
        let names: Vec<&str> = services.iter().map(|s| s.name.as_str()).collect();
        for (si, s) in services.iter().enumerate() {
            for (di, d) in s.depends_on.iter().enumerate() {
                let pos = dep_pos[si][di];
                let key = format!("services.{}.depends_on", s.name);
                match services.iter().find(|o| o.name == d.service) {
                    None => {
                        let hint = nearest(&d.service, &names)
                            .map(|n| format!("did you mean `{n}`?"))
                            .unwrap_or_else(|| format!("services are: {}", names.join(", ")));
                        self.problem(
                            pos,
                            &key,
                            format!("unknown service `{}`", d.service),
                            Some(hint),
                        );
                    }
                    Some(o) if o.name == s.name => {
                        self.problem(pos, &key, "a service cannot depend on itself", None);
                    }
                    Some(o) if s.enabled && !o.enabled => {
                        self.problem(
                            pos,
                            &key,
                            format!(
                                "depends on `{}`, which is disabled by its `enabled:`",
                                o.name
                            ),
                            Some(format!("enable `{}` or disable `{}` too", o.name, s.name)),
                        );
                    }
                    Some(_) => {}
                }
            }
        }
        if let Some(cycle) = crate::manifest::read::find_cycle(services) {
            let first = &services[cycle[0]];
            let path: Vec<&str> = cycle.iter().map(|&i| services[i].name.as_str()).collect();
            self.problem(
                first.pos,
                &format!("services.{}.depends_on", first.name),
                format!("dependency cycle: {} → {}", path.join(" → "), path[0]),
                Some("remove one of these dependencies".into()),
            );
        }
    }

    fn persist(&mut self, node: &Node) -> Option<Persist> {
        let f = self.fields(node, "persist", PERSIST_KEYS)?;
        let remote_node = f.get("remote");
        let (mut remote, remote_vars) = remote_node
            .and_then(|n| self.text_used(n, "persist.remote"))
            .unwrap_or_default();
        // A relative local path is relative to the manifest, like every path.
        if remote.starts_with("./") || remote.starts_with("../") {
            remote = self.path(&self.dir.clone(), &remote).display().to_string();
        }
        let remote_pos = f.get("remote").map_or(f.pos, |n| n.pos);
        if crate::persist::remote::is_ssh(&remote) {
            // Issue 17 item 8: it passed `check`, then failed at every start.
            self.problem(
                remote_pos,
                "persist.remote",
                format!(
                    "`{}`: SSH remotes are not supported (stackctl's git has no SSH)",
                    crate::redact::url(&remote)
                ),
                Some("use the repository's https URL (or `owner/repo` for GitHub) and put a token in `persist.token`".into()),
            );
        } else {
            self.url_credentials(remote_pos, "persist.remote", &remote, &remote_vars);
        }
        let token = self.opt_text(&f, "token").filter(|t| !t.is_empty());
        let branch = self
            .opt_text(&f, "branch")
            .filter(|b| !b.is_empty())
            .unwrap_or_else(|| "main".into());
        let workdir = match self.opt_text(&f, "workdir").filter(|w| !w.is_empty()) {
            Some(w) => self.path(&self.dir.clone(), &w),
            None => self.dir.join(".stackctl"),
        };
        let mut paths = Vec::new();
        match f.get("paths") {
            Some(Node {
                value: Value::Seq(items),
                ..
            }) => {
                for (i, n) in items.iter().enumerate() {
                    let pkey = format!("persist.paths[{i}]");
                    let (p, exclude) = match &n.value {
                        Value::Map(_) => {
                            let Some(pf) = self.fields(n, &pkey, &["path", "exclude"]) else {
                                continue;
                            };
                            let Some(p) = self.opt_text(&pf, "path") else {
                                self.problem(n.pos, &pkey, "`path` is missing", None);
                                continue;
                            };
                            let ex = pf
                                .get("exclude")
                                .map(|e| self.text_list(e, &pf.key("exclude")))
                                .unwrap_or_default();
                            (p, ex)
                        }
                        _ => match self.text(n, &pkey) {
                            Some(p) => (p, Vec::new()),
                            None => continue,
                        },
                    };
                    let path = self.path(&self.dir.clone(), &p);
                    if path == Path::new("/") {
                        self.problem(
                            n.pos,
                            &pkey,
                            "cannot persist the whole filesystem `/`",
                            None,
                        );
                        continue;
                    }
                    if let Some(other) = paths.iter().find(|o: &&PersistPath| {
                        path.starts_with(&o.path) || o.path.starts_with(&path)
                    }) {
                        let msg = format!("overlaps `{}`", other.path.display());
                        self.problem(
                            n.pos,
                            &pkey,
                            msg,
                            Some(
                                "list each directory once; use `exclude` for parts to skip".into(),
                            ),
                        );
                        continue;
                    }
                    paths.push(PersistPath { path, exclude });
                }
            }
            Some(n) => self.problem(
                n.pos,
                "persist.paths",
                format!("expected a list, found {}", n.kind()),
                None,
            ),
            None => {}
        }
        if paths.is_empty() {
            self.problem(
                f.pos,
                "persist.paths",
                "no paths to persist",
                Some("list the data directories, e.g. `paths: [/home/user/AstrBot/data]`".into()),
            );
        }
        let exclude = f
            .get("exclude")
            .map(|e| self.text_list(e, "persist.exclude"))
            .unwrap_or_default();
        let keep = match f.get("history") {
            Some(h) => match self.fields(h, "persist.history", &["keep"]) {
                Some(hf) => self.number(&hf, "keep", 50u32).max(1),
                None => 50,
            },
            None => 50,
        };
        let github = looks_like_github(&remote);
        let mut large_files = LargeFiles {
            threshold: 50 << 20,
            store: if github {
                BlobStore::GithubRelease
            } else {
                BlobStore::None
            },
            tag: "blobs".into(),
            url: None,
            offload_binary: OffloadBinary::Auto,
        };
        if let Some(lf) = f.get("large_files") {
            if let Some(l) = self.fields(
                lf,
                "persist.large_files",
                &["threshold", "store", "tag", "url", "offload_binary"],
            ) {
                large_files.threshold = self.size(&l, "threshold", large_files.threshold);
                if let Some(store) = {
                    let dir = self.dir.clone();
                    self.parsed(&l, "store", |t| parse_store(t, &dir))
                } {
                    large_files.store = store;
                }
                if let Some(tag) = self.opt_text(&l, "tag").filter(|t| !t.is_empty()) {
                    large_files.tag = tag;
                }
                large_files.url = self.opt_text(&l, "url").filter(|u| !u.is_empty());
                if let Some(url) = large_files.url.clone() {
                    let pos = l.get("url").map_or(l.pos, |n| n.pos);
                    self.url_credentials(pos, "persist.large_files.url", &url, &[]);
                }
                if let Some(o) = self.parsed(&l, "offload_binary", parse_offload_binary) {
                    large_files.offload_binary = o;
                }
                if large_files.store == BlobStore::GithubRelease && !github && !remote.is_empty() {
                    self.problem(
                        lf.pos,
                        "persist.large_files.store",
                        "`github-release` needs a GitHub remote (owner/repo or a github.com URL)",
                        Some("use `lfs`, `dir:PATH` or `none` with this remote".into()),
                    );
                }
            }
        }
        if looks_like_hugging_face(&remote) {
            self.hugging_face_warnings(&f, &large_files);
        }
        if let Some(inside) = paths
            .iter()
            .find(|pp| workdir.starts_with(&pp.path) || pp.path.starts_with(&workdir))
        {
            let pos = f.get("workdir").map(|n| n.pos).unwrap_or(f.pos);
            let msg = format!(
                "`{}` overlaps the persisted path `{}`: the workdir holds git objects, not data",
                workdir.display(),
                inside.path.display()
            );
            self.problem(
                pos,
                "persist.workdir",
                msg,
                Some("put the workdir outside every persisted path".into()),
            );
        }
        let readiness_file = self
            .opt_text(&f, "readiness_file")
            .filter(|t| !t.is_empty())
            .map(|t| self.path(&self.dir.clone(), &t));
        let interval = self.duration(&f, "interval", Duration::from_secs(180));
        let debounce = self.duration(&f, "debounce", Duration::from_secs(10));
        if remote.is_empty() {
            // A Space without credentials still runs; it just keeps nothing.
            self.warn(
                f.pos,
                "persist.remote",
                "is empty: persistence is off and data is lost when the container stops (set the repository variable, e.g. `GITHUB_REPO`)",
            );
            return None;
        }
        Some(Persist {
            remote,
            token,
            branch,
            workdir,
            interval,
            debounce,
            paths,
            exclude,
            keep,
            large_files,
            readiness_file,
        })
    }

    /// Credentials belong in `persist.token`, never in a URL (issue 12 item
    /// 5): user-info would be sent as it is and lands in logs and files, so
    /// it is refused; a query string is allowed (some servers want one) but
    /// warned about, since stackctl hides it everywhere it shows the URL.
    /// `used`: the variables the URL was made of, named in the error.
    fn url_credentials(&mut self, pos: Pos, key: &str, url: &str, used: &[String]) {
        let shown = crate::redact::url(url);
        if crate::redact::has_userinfo(url) {
            self.problem(
                pos,
                key,
                format!("`{shown}` holds credentials (`user:password@`){}: they would end up in logs and files", from_vars(used)),
                Some("remove them from the URL and put the token in `persist.token`".into()),
            );
        } else if crate::redact::has_query(url) {
            self.warn(
                pos,
                key,
                format!("`{shown}` has a query string: if it carries a token, put the token in `persist.token` instead (stackctl hides the query in its messages, but the server may log it)"),
            );
        }
    }

    /// Hugging Face refuses a push holding a file of 10 MiB or more, or a
    /// binary file, outside LFS (see [`LargeFiles::offloads_binary`]): say
    /// which setting would make every push fail, and what to set instead.
    fn hugging_face_warnings(&mut self, f: &Fields, lf: &LargeFiles) {
        let at = |k: &str| {
            f.get("large_files")
                .and_then(|n| match &n.value {
                    Value::Map(e) => e.iter().find(|(key, _)| key.name == k).map(|(_, v)| v.pos),
                    _ => None,
                })
                .or_else(|| f.get("large_files").map(|n| n.pos))
                .unwrap_or(f.pos)
        };
        if lf.store != BlobStore::Lfs {
            self.warn(
                at("store"),
                "persist.large_files.store",
                "Hugging Face refuses pushes with binary files or files of 10 MiB or more outside LFS: set `store: lfs` (and `threshold: 1MiB`)",
            );
            return;
        }
        if lf.threshold == 0 || lf.threshold > HF_MAX_NON_LFS {
            self.warn(
                at("threshold"),
                "persist.large_files.threshold",
                "Hugging Face refuses pushes with files of 10 MiB or more outside LFS: set `threshold: 10MiB` or lower (`1MiB` is a good choice)",
            );
        }
        if lf.offload_binary == OffloadBinary::Never {
            self.warn(
                at("offload_binary"),
                "persist.large_files.offload_binary",
                "Hugging Face refuses pushes with binary files outside LFS: remove `offload_binary: never` (the default, `auto`, offloads them)",
            );
        }
    }

    fn gateway(&mut self, node: &Node, name: &str, persist: Option<&Persist>) -> Option<Gateway> {
        let f = self.fields(node, "gateway", GATEWAY_KEYS)?;
        let listen = self
            .parsed(&f, "listen", parse_listen)
            .unwrap_or_else(|| ([0, 0, 0, 0], 7860).into());
        let default_backend = self
            .opt_text(&f, "default_backend")
            .filter(|b| !b.is_empty());
        let mut routes = Vec::new();
        let mut route_pos = Vec::new();
        match f.get("routes") {
            Some(Node {
                value: Value::Seq(items),
                ..
            }) => {
                for (i, n) in items.iter().enumerate() {
                    if let Some(v) = self.route(n, &format!("gateway.routes[{i}]")) {
                        routes.push(v);
                        route_pos.push(n.pos);
                    }
                }
            }
            Some(Node {
                value: Value::Null, ..
            })
            | None => {}
            Some(n) => self.problem(
                n.pos,
                "gateway.routes",
                format!("expected a list, found {}", n.kind()),
                None,
            ),
        }
        let mut admin_password = None;
        let mut password_file = None;
        if let Some(a) = f.get("admin") {
            if let Some(af) = self.fields(a, "gateway.admin", &["password", "password_file"]) {
                if let Some(n) = af.get("password") {
                    let key = af.key("password");
                    if let Some((pw, used)) = self.text_used(n, &key) {
                        // The one password rule of the API, page and CLI,
                        // at `check` time rather than in a live Space.
                        let problem =
                            crate::gateway::auth::password_problem(&pw).filter(|_| !pw.is_empty());
                        if let Some(problem) = problem {
                            self.problem(
                                n.pos,
                                &key,
                                format!("the admin password{} is {problem}", from_vars(&used)),
                                Some(
                                    "or leave it empty to have one generated and printed once"
                                        .into(),
                                ),
                            );
                        }
                        admin_password = Some(pw).filter(|p| !p.is_empty());
                    }
                }
                password_file = self
                    .opt_text(&af, "password_file")
                    .filter(|p| !p.is_empty())
                    .map(|p| self.path(&self.dir.clone(), &p));
            }
        }
        let state_file = match self.opt_text(&f, "state_file").filter(|s| !s.is_empty()) {
            Some(s) => self.path(&self.dir.clone(), &s),
            None => match persist {
                Some(p) => p.workdir.join("state/gateway.json"),
                None => self.dir.join(".stackctl/gateway.json"),
            },
        };
        // The default file is keyed by the state file's location too: two
        // stacks of the same name elsewhere (issue 12 item 6) each keep
        // their own. The name-only file of earlier versions is read once,
        // to migrate (see `Admin::legacy_password_file`).
        let (password_file, legacy_password_file) = match password_file {
            Some(p) => (p, None),
            None => {
                let dir = self
                    .container
                    .get("HOME")
                    .filter(|h| !h.is_empty())
                    .map(PathBuf::from)
                    .unwrap_or_else(|| self.dir.clone())
                    .join(".config/stackctl");
                let key = password_file_key(&state_file);
                (
                    dir.join(format!("{name}-{key}.admin-password")),
                    Some(dir.join(format!("{name}.admin-password"))),
                )
            }
        };
        if let Some(p) = persist.and_then(|p| {
            p.paths
                .iter()
                .find(|pp| password_file.starts_with(&pp.path))
        }) {
            self.problem(
                f.get("admin").map(|a| a.pos).unwrap_or(f.pos),
                "gateway.admin.password_file",
                format!("`{}` is inside the persisted path `{}`: the plaintext password would be pushed", password_file.display(), p.path.display()),
                Some("put the password file outside every persisted path".into()),
            );
        }
        let nets = |r: &mut Self, key: &str, default: Vec<IpNet>| -> Vec<IpNet> {
            let Some(n) = f.get(key) else { return default };
            let k = f.key(key);
            let mut out = Vec::new();
            for t in r.text_list(n, &k) {
                match parse_net(&t) {
                    Ok(net) => out.push(net),
                    Err(e) => r.problem(n.pos, &k, e, None),
                }
            }
            out
        };
        let allow_backends = nets(
            self,
            "allow_backends",
            vec![
                "127.0.0.0/8".parse().expect("literal network"),
                "::1/128".parse().expect("literal network"),
            ],
        );
        let trusted_proxies = nets(self, "trusted_proxies", Vec::new());
        let mut timeouts = GatewayTimeouts {
            connect: Duration::from_secs(5),
            response: Duration::from_secs(600),
            pool_idle: Duration::from_secs(4),
            header_read: Duration::from_secs(30),
            idle: Duration::from_secs(75),
            send: Duration::from_secs(60),
        };
        if let Some(t) = f.get("timeouts") {
            if let Some(tf) = self.fields(
                t,
                "gateway.timeouts",
                &[
                    "connect",
                    "response",
                    "pool_idle",
                    "header_read",
                    "idle",
                    "send",
                ],
            ) {
                timeouts.connect = self.duration(&tf, "connect", timeouts.connect);
                timeouts.response = self.duration(&tf, "response", timeouts.response);
                timeouts.pool_idle = self.duration(&tf, "pool_idle", timeouts.pool_idle);
                timeouts.header_read = self.duration(&tf, "header_read", timeouts.header_read);
                timeouts.idle = self.duration(&tf, "idle", timeouts.idle);
                // Zero would close every response whose first write has to
                // wait for the client.
                timeouts.send = self
                    .parsed(&tf, "send", |t| match parse_duration(t)? {
                        d if d.is_zero() => Err(format!(
                            "`{t}`: the send timeout must be more than zero (nginx's default is 60s)"
                        )),
                        d => Ok(d),
                    })
                    .unwrap_or(timeouts.send);
            }
        }
        let max_body = self.size(&f, "max_body", 1 << 30);
        let backend_connections = self.backend_connections(&f);
        let import_from = self
            .opt_text(&f, "import_from")
            .filter(|p| !p.is_empty())
            .map(|p| self.path(&self.dir.clone(), &p));
        // The same validator as the admin API, so `check` rejects what a
        // live edit would.
        let policy = crate::gateway::rules::BackendPolicy::new(&allow_backends, listen);
        let table = crate::gateway::rules::validate_table(
            default_backend.as_deref().unwrap_or(""),
            &routes,
            &policy,
        );
        if let Err(e) = table {
            let (pos, key) = match e.rule_index() {
                Some(i) => (
                    route_pos.get(i).copied().unwrap_or(f.pos),
                    format!("gateway.routes[{i}]"),
                ),
                None => (
                    f.get("default_backend").map(|n| n.pos).unwrap_or(f.pos),
                    "gateway".to_string(),
                ),
            };
            self.problem(pos, &key, e.to_string(), None);
        }
        Some(Gateway {
            listen,
            default_backend,
            routes,
            route_pos,
            admin: Admin {
                password: admin_password,
                password_file,
                legacy_password_file,
            },
            allow_backends,
            trusted_proxies,
            state_file,
            timeouts,
            max_body,
            import_from,
            backend_connections,
        })
    }

    /// `gateway.backend_connections`: a number (the cap), or
    /// `{ max, queue }`.
    fn backend_connections(&mut self, f: &Fields) -> BackendConnections {
        let mut out = BackendConnections::default();
        let Some(n) = f.get("backend_connections") else {
            return out;
        };
        if let Value::Scalar { .. } = n.value {
            out.max = self.number(f, "backend_connections", out.max);
        } else if let Some(bf) = self.fields(n, "gateway.backend_connections", &["max", "queue"]) {
            out.max = self.number(&bf, "max", out.max);
            out.queue = self.duration(&bf, "queue", out.queue);
        }
        out
    }

    /// A route in the manifest's form → the admin API's JSON rule.
    fn route(&mut self, node: &Node, key: &str) -> Option<serde_json::Value> {
        use serde_json::{json, Map, Value as J};
        let f = self.fields(node, key, ROUTE_KEYS)?;
        let mut rule = Map::new();
        for name in [
            "id",
            "action",
            "backend",
            "redirect_to",
            "redirect_to_prefix",
        ] {
            if let Some(t) = self.opt_text(&f, name) {
                rule.insert(name.into(), J::String(t));
            }
        }
        if f.get("priority").is_some() {
            rule.insert("priority".into(), json!(self.number(&f, "priority", 0i64)));
        }
        if f.get("redirect_code").is_some() {
            rule.insert(
                "redirect_code".into(),
                json!(self.number(&f, "redirect_code", 302u16)),
            );
        }
        if f.get("strip_prefix").is_some() {
            rule.insert(
                "strip_prefix".into(),
                json!(self.flag(&f, "strip_prefix", false)),
            );
        }
        if let Some(h) = f.get("set_headers") {
            if let Some(hf) = self.fields_any(h, &f.key("set_headers")) {
                let mut m = Map::new();
                for (k, v) in hf.entries {
                    let t = self.text(v, &hf.key(&k.name)).unwrap_or_default();
                    m.insert(k.name.clone(), J::String(t));
                }
                rule.insert("set_headers".into(), J::Object(m));
            }
        }
        let mut matcher = Map::new();
        if let Some(m) = f.get("match") {
            if let Some(mf) = self.fields(m, &f.key("match"), MATCH_KEYS) {
                for name in MATCH_KEYS.iter().filter(|k| **k != "headers") {
                    if let Some(t) = self.opt_text(&mf, name) {
                        matcher.insert(name.to_string(), J::String(t));
                    }
                }
                if let Some(hs) = mf.get("headers") {
                    let hkey = mf.key("headers");
                    let mut list = Vec::new();
                    if let Value::Seq(items) = &hs.value {
                        for (i, h) in items.iter().enumerate() {
                            let ikey = format!("{hkey}[{i}]");
                            if let Some(hf) = self.fields(h, &ikey, &["name", "contains", "regex"])
                            {
                                let mut o = Map::new();
                                for n in ["name", "contains", "regex"] {
                                    if let Some(t) = self.opt_text(&hf, n) {
                                        o.insert(n.into(), J::String(t));
                                    }
                                }
                                list.push(J::Object(o));
                            }
                        }
                    } else {
                        self.problem(
                            hs.pos,
                            &hkey,
                            format!("expected a list, found {}", hs.kind()),
                            None,
                        );
                    }
                    matcher.insert("headers".into(), J::Array(list));
                }
            }
        }
        if let Some(p) = self.opt_text(&f, "prefix") {
            if matcher.contains_key("path_prefix") {
                let pos = f.get("prefix").map(|n| n.pos).unwrap_or(f.pos);
                self.problem(
                    pos,
                    &f.key("prefix"),
                    "given twice (as `prefix` and `match.path_prefix`)",
                    Some("keep one".into()),
                );
            }
            matcher.insert("path_prefix".into(), J::String(p));
        }
        rule.insert("match".into(), J::Object(matcher));
        Some(J::Object(rule))
    }
}

/// Find a dependency cycle; returns the services on it, in order.
pub(crate) fn find_cycle(services: &[Service]) -> Option<Vec<usize>> {
    // Colours: 0 unvisited, 1 on the stack, 2 done.
    fn visit(
        i: usize,
        services: &[Service],
        colour: &mut [u8],
        stack: &mut Vec<usize>,
    ) -> Option<Vec<usize>> {
        colour[i] = 1;
        stack.push(i);
        for d in &services[i].depends_on {
            let Some(j) = services.iter().position(|s| s.name == d.service) else {
                continue;
            };
            if j == i {
                continue; // reported as self-dependency
            }
            if colour[j] == 1 {
                let start = stack.iter().position(|&s| s == j).unwrap_or(0);
                return Some(stack[start..].to_vec());
            }
            if colour[j] == 0 {
                if let Some(c) = visit(j, services, colour, stack) {
                    return Some(c);
                }
            }
        }
        stack.pop();
        colour[i] = 2;
        None
    }
    let mut colour = vec![0u8; services.len()];
    for i in 0..services.len() {
        if colour[i] == 0 {
            if let Some(c) = visit(i, services, &mut colour, &mut Vec::new()) {
                return Some(c);
            }
        }
    }
    None
}

/// A value checked by an env entry's `format:`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EnvFormat {
    /// A JSON list of strings, as Gemini Balance reads `API_KEYS`.
    JsonList,
}

fn is_json_string_list(v: &str) -> bool {
    matches!(serde_json::from_str::<serde_json::Value>(v), Ok(serde_json::Value::Array(a)) if a.iter().all(|x| x.is_string()))
}

/// " (from `A`)" for the variables a value was made of, or nothing.
fn from_vars(used: &[String]) -> String {
    if used.is_empty() {
        String::new()
    } else {
        format!(" (from {})", backticked(used, ", "))
    }
}

/// `a`, `b` → "`a`, `b`".
fn backticked(names: &[String], sep: &str) -> String {
    names
        .iter()
        .map(|n| format!("`{n}`"))
        .collect::<Vec<_>>()
        .join(sep)
}

fn valid_var_name(n: &str) -> bool {
    !n.is_empty()
        && !n.starts_with(|c: char| c.is_ascii_digit())
        && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn valid_service_name(n: &str) -> bool {
    !n.is_empty()
        && n.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// `enabled:` semantics: empty, `false`, `0`, `no`, `off` switch off.
pub fn truthy(t: &str) -> bool {
    !matches!(
        t.trim().to_ascii_lowercase().as_str(),
        "" | "false" | "0" | "no" | "off"
    )
}

fn parse_bool(t: &str) -> Result<bool, String> {
    match t.trim().to_ascii_lowercase().as_str() {
        "true" | "yes" | "on" | "1" => Ok(true),
        "false" | "no" | "off" | "0" => Ok(false),
        _ => Err(format!("expected true or false, found `{t}`")),
    }
}

fn parse_condition(t: &str) -> Result<Condition, String> {
    match t {
        "started" | "service_started" => Ok(Condition::Started),
        "healthy" | "service_healthy" => Ok(Condition::Healthy),
        "completed_successfully" | "service_completed_successfully" => {
            Ok(Condition::CompletedSuccessfully)
        }
        other => Err(format!(
            "unknown condition `{other}` (use started, healthy or completed_successfully)"
        )),
    }
}

/// `TERM`, `SIGTERM` or `15`.
pub fn parse_signal(t: &str) -> Result<i32, String> {
    let t = t.trim();
    if let Ok(n) = t.parse::<i32>() {
        return nix::sys::signal::Signal::try_from(n)
            .map(|s| s as i32)
            .map_err(|_| format!("`{t}` is not a signal number"));
    }
    let upper = t.to_ascii_uppercase();
    let name = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    nix::sys::signal::Signal::from_str(&name)
        .map(|s| s as i32)
        .map_err(|_| format!("unknown signal `{t}` (e.g. TERM, INT, QUIT, HUP)"))
}

/// `0.0.0.0:7860`, `[::]:7860`, `:7860` or `7860`.
fn parse_listen(t: &str) -> Result<std::net::SocketAddr, String> {
    let t = t.trim();
    if let Ok(a) = t.parse() {
        return Ok(a);
    }
    let port = t.strip_prefix(':').unwrap_or(t);
    port.parse::<u16>()
        .map(|p| ([0, 0, 0, 0], p).into())
        .map_err(|_| format!("`{t}` is not an address like `0.0.0.0:7860` or a port"))
}

fn parse_net(t: &str) -> Result<IpNet, String> {
    let t = t.trim();
    if let Ok(n) = t.parse::<IpNet>() {
        return Ok(n);
    }
    t.parse::<std::net::IpAddr>()
        .map(IpNet::from)
        .map_err(|_| format!("`{t}` is not an IP address or network like `127.0.0.0/8`"))
}

fn parse_store(t: &str, dir: &Path) -> Result<BlobStore, String> {
    match t {
        "github-release" => Ok(BlobStore::GithubRelease),
        "lfs" => Ok(BlobStore::Lfs),
        "none" | "" => Ok(BlobStore::None),
        _ => match t.strip_prefix("dir:") {
            Some(p) if !p.is_empty() => {
                let p = Path::new(p);
                Ok(BlobStore::Dir(if p.is_absolute() {
                    p.to_path_buf()
                } else {
                    dir.join(p)
                }))
            }
            _ => Err(format!(
                "unknown store `{t}` (use github-release, lfs, dir:PATH or none)"
            )),
        },
    }
}

/// Largest file Hugging Face takes outside LFS (it refuses 10 MiB or more).
const HF_MAX_NON_LFS: u64 = 10 << 20;

fn parse_offload_binary(t: &str) -> Result<OffloadBinary, String> {
    match t {
        "auto" | "" => Ok(OffloadBinary::Auto),
        "always" => Ok(OffloadBinary::Always),
        "never" => Ok(OffloadBinary::Never),
        _ => Err(format!("unknown value `{t}` (use auto, always or never)")),
    }
}

/// 12 hex digits of the SHA-256 of the state file's path: what tells the
/// default admin-password files of two same-named stacks apart.
fn password_file_key(state_file: &Path) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(state_file.as_os_str().as_encoded_bytes());
    hex::encode(&digest[..6])
}

/// Remove `.` and `..` components without touching the filesystem.
fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

#[cfg(test)]
mod tests {
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
            let m =
                persist_with(other, &format!("{{ store: lfs, offload_binary: {value} }}")).unwrap();
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
}
