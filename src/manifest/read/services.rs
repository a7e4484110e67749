//! The `services:` section: each service, its dependencies and the checks across services.

use serde::Deserialize;

use super::*;

/// A service as written; the field order is the order of the key hints.
#[derive(Deserialize)]
struct RawService {
    command: Option<Field>,
    working_dir: Option<Leaf<String>>,
    environment: Option<Field>,
    env_file: Option<Many<String>>,
    depends_on: Option<Field>,
    readiness: Option<Field>,
    liveness: Option<Field>,
    restart: Option<Leaf<RestartPolicy>>,
    backoff: Option<Field>,
    max_restarts: Option<Field>,
    stop_signal: Option<Leaf<Signal>>,
    stop_timeout: Option<Leaf<Duration>>,
    enabled: Option<Leaf<String>>,
    optional: Option<Leaf<bool>>,
    logs: Option<Field>,
    required_paths: Option<Many<String>>,
    // Free text for people reading the manifest.
    #[serde(rename = "description")]
    _description: Option<Field>,
    requires_one_of: Option<Field>,
}

#[derive(Deserialize)]
struct RawBackoff {
    initial: Option<Leaf<Duration>>,
    max: Option<Leaf<Duration>>,
}

#[derive(Deserialize)]
struct RawMaxRestarts {
    count: Option<Leaf<u32>>,
    within: Option<Leaf<Duration>>,
}

/// compose's long form of a dependency.
#[derive(Deserialize)]
struct RawCondition {
    condition: Option<Leaf<Condition>>,
}

#[derive(Deserialize)]
struct RawLogs {
    file: Option<Leaf<String>>,
    max_size: Option<Leaf<Size>>,
    keep: Option<Leaf<u32>>,
}

impl FromText for RestartPolicy {
    fn from_text(t: &str) -> Result<Self, String> {
        use RestartPolicy::*;
        let words: &[(&[&str], _)] = &[
            (&["always", "unless-stopped"], Always),
            (&["on-failure", "on_failure"], OnFailure),
            (&["no", "never", "false"], No),
        ];
        one_of(
            t,
            words,
            "unknown restart policy `{}` (use always, on-failure or no)",
        )
    }
}

impl FromText for Condition {
    fn from_text(t: &str) -> Result<Self, String> {
        use Condition::*;
        let words: &[(&[&str], _)] = &[
            (&["started", "service_started"], Started),
            (&["healthy", "service_healthy"], Healthy),
            (
                &["completed_successfully", "service_completed_successfully"],
                CompletedSuccessfully,
            ),
        ];
        let hint = "unknown condition `{}` (use started, healthy or completed_successfully)";
        one_of(t, words, hint)
    }
}

impl Reader<'_> {
    pub(super) fn services(&mut self, node: &Node) -> Vec<Service> {
        let Some(section) = self.mapping(node, "services") else {
            return Vec::new();
        };
        let mut out = Vec::new();
        let mut dep_pos: Vec<Vec<Pos>> = Vec::new();
        for (k, v) in section {
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

    pub(super) fn service(
        &mut self,
        name: &str,
        pos: Pos,
        node: &Node,
        key: &str,
    ) -> Option<(Service, Vec<Pos>)> {
        let f: RawService = self.section(node, key)?;
        let command = match &f.command {
            Some(c) => self.command(&c.node, &c.key),
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
        let working_dir = match self.val(&f.working_dir) {
            Some(t) => self.at_dir(&t),
            None => self.dir.clone(),
        };
        let environment = match &f.environment {
            Some(e) => self.environment(&e.node, &e.key),
            None => Vec::new(),
        };
        let env_files = self.paths(&f.env_file);
        let (depends_on, dep_pos) = match &f.depends_on {
            Some(d) => self.depends_on(&d.node, &d.key),
            None => (Vec::new(), Vec::new()),
        };
        let readiness = f
            .readiness
            .as_ref()
            .and_then(|n| self.probe(&n.node, &n.key, &working_dir, Duration::from_secs(1), 1));
        let liveness = f
            .liveness
            .as_ref()
            .and_then(|n| self.probe(&n.node, &n.key, &working_dir, Duration::from_secs(10), 3));
        if let Some(Probe {
            check: ProbeCheck::Log(_),
            ..
        }) = &liveness
        {
            if let Some(n) = &f.liveness {
                self.problem(
                    n.node.pos,
                    &n.key,
                    "a `log` check can only be a readiness probe",
                    Some("use http, tcp, exec or file for liveness".into()),
                );
            }
        }
        let restart = self.val(&f.restart).unwrap_or(RestartPolicy::OnFailure);
        let mut backoff = Backoff {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(60),
        };
        if let Some(Field { key, node: n }) = &f.backoff {
            if let Some(b) = self.section::<RawBackoff>(n, key) {
                backoff.initial = self.val(&b.initial).unwrap_or(backoff.initial);
                backoff.max = self.val(&b.max).unwrap_or(backoff.max);
                if backoff.max < backoff.initial {
                    self.problem(n.pos, key, "`max` is shorter than `initial`", None);
                }
            }
        }
        let mut max_restarts = MaxRestarts {
            count: 10,
            within: Duration::from_secs(300),
        };
        if let Some(n) = &f.max_restarts {
            if let Value::Scalar { .. } = n.node.value {
                max_restarts.count = self.scalar(&n.node, &n.key).unwrap_or(10);
            } else if let Some(m) = self.section::<RawMaxRestarts>(&n.node, &n.key) {
                max_restarts.count = self.val(&m.count).unwrap_or(10);
                max_restarts.within = self.val(&m.within).unwrap_or(max_restarts.within);
            }
        }
        let stop_signal = self.val(&f.stop_signal).map_or(libc::SIGTERM, |s| s.0);
        let stop_timeout = self.val(&f.stop_timeout).unwrap_or(Duration::from_secs(5));
        let enabled = match &f.enabled {
            Some(l) => self.val(l).is_some_and(|t| truthy(&t)),
            None => true,
        };
        let optional = self.val(&f.optional).unwrap_or(false);
        if let Some(Field { key, node: n }) = &f.requires_one_of {
            let names = self.text_list(n, key);
            // Checked only for a service that runs: `enabled:` switches off
            // a service together with what it needs.
            if enabled && !names.is_empty() && !names.iter().any(|v| self.is_set(v)) {
                let list = backticked(&names, ", ");
                self.problem(
                    n.pos,
                    key,
                    format!("service `{name}` needs one of {list} set, and none is"),
                    Some(format!(
                        "set one of {list} in the container's environment (an empty JSON list `[]` counts as unset), or switch the service off"
                    )),
                );
            }
        }
        let required_paths = self.paths(&f.required_paths);
        let logs = f.logs.as_ref().and_then(|Field { key, node: n }| {
            let l = self.section::<RawLogs>(n, key)?;
            let Some(file) = self.val(&l.file) else {
                self.problem(n.pos, key, "`file` is missing", None);
                return None;
            };
            Some(LogFile {
                file: self.at_dir(&file),
                max_size: self.val(&l.max_size).map_or(10 << 20, |s| s.0),
                keep: self.val(&l.keep).unwrap_or(3),
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

    pub(super) fn environment(&mut self, node: &Node, key: &str) -> Vec<(String, Option<String>)> {
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
                        _ => Some(self.scalar(v, &ekey).unwrap_or_default()),
                    };
                    out.push((k.name.clone(), value));
                }
            }
            Value::Seq(_) => {
                let items: Many<String> = self.section(node, key).unwrap_or_default();
                for l in &items.0 {
                    let Some(item) = self.val(l) else {
                        continue;
                    };
                    let (name, value) = match item.split_once('=') {
                        Some((k, v)) => (k.to_string(), Some(v.to_string())),
                        None => (item.clone(), None),
                    };
                    if !valid_var_name(&name) {
                        self.problem(
                            l.pos,
                            &l.key,
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

    pub(super) fn depends_on(&mut self, node: &Node, key: &str) -> (Vec<Dependency>, Vec<Pos>) {
        let mut deps = Vec::new();
        let started = |service| Dependency {
            service,
            condition: Condition::Started,
        };
        let Value::Map(entries) = &node.value else {
            // A name or a list of names.
            let names: Many<String> = self.section(node, key).unwrap_or_default();
            for l in &names.0 {
                if let Some(name) = self.val(l) {
                    deps.push((started(name), l.pos));
                }
            }
            return deps.into_iter().unzip();
        };
        for (k, v) in entries {
            let dkey = format!("{key}.{}", k.name);
            // `db: healthy` or compose's long form `db: {condition: service_healthy}`;
            // either is a leaf like every other value, so a bad one is
            // reported under its own key and names the variable it came from.
            let leaf = match &v.value {
                Value::Map(_) => self
                    .section::<RawCondition>(v, &dkey)
                    .and_then(|f| f.condition),
                _ => self.leaf::<Condition>(v, &dkey),
            };
            let condition = match &leaf {
                // `db:` or `condition:` with nothing after it still names
                // the dependency: compose's default condition, not no
                // dependency at all.
                None => Some(Condition::Started),
                Some(l) if l.value.is_none() && l.problem.is_none() => Some(Condition::Started),
                Some(l) => self.val(l),
            };
            if let Some(condition) = condition {
                let service = k.name.clone();
                deps.push((Dependency { service, condition }, k.pos));
            }
        }
        deps.into_iter().unzip()
    }

    pub(super) fn check_dependencies(&mut self, services: &[Service], dep_pos: &[Vec<Pos>]) {
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

    /// A service's `required_paths` must be persisted: only a restore can
    /// fail to bring them back.
    pub(super) fn check_required_paths(&mut self, services: &[Service], persist: Option<&Persist>) {
        for s in services {
            for (i, p) in s.required_paths.iter().enumerate() {
                let key = format!("services.{}.required_paths[{i}]", s.name);
                let inside = persist.is_some_and(|pc| pc.covering(p).is_some());
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
