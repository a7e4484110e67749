//! The `gateway:` section, its routes checked by the admin API's own validator.

use serde::Deserialize;

use super::*;
use crate::gateway::rules::{Action, HeaderMatch, Rule, RuleError, SetHeader};

/// `gateway:` as written; the field order is the order of the key hints.
#[derive(Deserialize)]
struct RawGateway {
    listen: Option<Leaf<Listen>>,
    default_backend: Option<Leaf<String>>,
    routes: Option<Field>,
    admin: Option<Field>,
    allow_backends: Option<Field>,
    trusted_proxies: Option<Field>,
    state_file: Option<Leaf<String>>,
    timeouts: Option<Field>,
    max_body: Option<Leaf<Size>>,
    import_from: Option<Leaf<String>>,
    backend_connections: Option<Field>,
}

#[derive(Deserialize)]
struct RawAdmin {
    password: Option<Leaf<String>>,
    password_file: Option<Leaf<String>>,
}

#[derive(Deserialize)]
struct RawTimeouts {
    connect: Option<Leaf<Duration>>,
    response: Option<Leaf<Duration>>,
    pool_idle: Option<Leaf<Duration>>,
    header_read: Option<Leaf<Duration>>,
    idle: Option<Leaf<Duration>>,
    send: Option<Leaf<SendTimeout>>,
}

#[derive(Deserialize)]
struct RawConnections {
    max: Option<Leaf<usize>>,
    queue: Option<Leaf<Duration>>,
}

/// A route in the manifest's form.
#[derive(Deserialize)]
struct RawRoute {
    id: Option<Leaf<String>>,
    priority: Option<Leaf<i64>>,
    action: Option<Leaf<String>>,
    backend: Option<Leaf<String>>,
    strip_prefix: Option<Leaf<bool>>,
    set_headers: Option<Field>,
    redirect_to: Option<Leaf<String>>,
    redirect_to_prefix: Option<Leaf<String>>,
    redirect_code: Option<Leaf<u16>>,
    #[serde(rename = "match")]
    matcher: Option<Field>,
    prefix: Option<Leaf<String>>,
}

#[derive(Deserialize)]
struct RawMatch {
    path_prefix: Option<Leaf<String>>,
    path_equal: Option<Leaf<String>>,
    host: Option<Leaf<String>>,
    method: Option<Leaf<String>>,
    referer_substr: Option<Leaf<String>>,
    referer_regex: Option<Leaf<String>>,
    headers: Option<Field>,
}

#[derive(Deserialize)]
struct RawHeader {
    name: Option<Leaf<String>>,
    contains: Option<Leaf<String>>,
    regex: Option<Leaf<String>>,
}

impl Reader<'_> {
    pub(super) fn gateway(
        &mut self,
        node: &Node,
        name: &str,
        persist: Option<&Persist>,
    ) -> Option<Gateway> {
        let f: RawGateway = self.section(node, "gateway")?;
        let listen = self
            .val(&f.listen)
            .map_or_else(|| ([0, 0, 0, 0], 7860).into(), |l| l.0);
        let default_backend = self.val(&f.default_backend).filter(|b| !b.is_empty());
        let mut routes = Vec::new();
        let mut route_pos = Vec::new();
        match f.routes.as_ref().map(|r| &r.node) {
            Some(Node {
                value: Value::Seq(items),
                ..
            }) => {
                for (i, n) in items.iter().enumerate() {
                    if let Some(r) = self.route(n, &format!("gateway.routes[{i}]"), routes.len()) {
                        routes.push(r);
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
        if let Some(a) = &f.admin {
            if let Some(af) = self.section::<RawAdmin>(&a.node, &a.key) {
                if let Some(l) = &af.password {
                    if let Some(pw) = self.val(l) {
                        // The one password rule of the API, page and CLI,
                        // at `check` time rather than in a live Space.
                        let problem =
                            crate::gateway::auth::password_problem(&pw).filter(|_| !pw.is_empty());
                        if let Some(problem) = problem {
                            self.problem(
                                l.pos,
                                &l.key,
                                format!("the admin password{} is {problem}", from_vars(&l.used)),
                                Some(
                                    "or leave it empty to have one generated and printed once"
                                        .into(),
                                ),
                            );
                        }
                        admin_password = Some(pw).filter(|p| !p.is_empty());
                    }
                }
                password_file = self.opt_path(&af.password_file);
            }
        }
        let state_file = self
            .opt_path(&f.state_file)
            .unwrap_or_else(|| match persist {
                Some(p) => p.workdir.join("state/gateway.json"),
                None => self.dir.join(".stackctl/gateway.json"),
            });
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
        if let Some(p) = persist.and_then(|p| p.covering(&password_file)) {
            self.problem(
                f.admin.as_ref().map_or(node.pos, |a| a.node.pos),
                "gateway.admin.password_file",
                format!("`{}` is inside the persisted path `{}`: the plaintext password would be pushed", password_file.display(), p.path.display()),
                Some("put the password file outside every persisted path".into()),
            );
        }
        let nets = |r: &mut Self, f: Option<&Field>, default: Vec<IpNet>| -> Vec<IpNet> {
            let Some(Field { key, node }) = f else {
                return default;
            };
            let mut out = Vec::new();
            for t in r.text_list(node, key) {
                match parse_net(&t) {
                    Ok(net) => out.push(net),
                    Err(e) => r.problem(node.pos, key, e, None),
                }
            }
            out
        };
        let allow_backends = nets(
            self,
            f.allow_backends.as_ref(),
            vec![
                "127.0.0.0/8".parse().expect("literal network"),
                "::1/128".parse().expect("literal network"),
            ],
        );
        let trusted_proxies = nets(self, f.trusted_proxies.as_ref(), Vec::new());
        let mut timeouts = GatewayTimeouts {
            connect: Duration::from_secs(5),
            response: Duration::from_secs(600),
            pool_idle: Duration::from_secs(4),
            header_read: Duration::from_secs(30),
            idle: Duration::from_secs(75),
            send: Duration::from_secs(60),
        };
        if let Some(t) = &f.timeouts {
            if let Some(tf) = self.section::<RawTimeouts>(&t.node, &t.key) {
                let t = &mut timeouts;
                for (to, leaf) in [
                    (&mut t.connect, &tf.connect),
                    (&mut t.response, &tf.response),
                    (&mut t.pool_idle, &tf.pool_idle),
                    (&mut t.header_read, &tf.header_read),
                    (&mut t.idle, &tf.idle),
                ] {
                    *to = self.val(leaf).unwrap_or(*to);
                }
                if let Some(SendTimeout(d)) = self.val(&tf.send) {
                    t.send = d;
                }
            }
        }
        let max_body = self.val(&f.max_body).map_or(1 << 30, |s| s.0);
        let backend_connections = self.backend_connections(f.backend_connections.as_ref());
        let import_from = self.opt_path(&f.import_from);
        // The same validator as the admin API, so `check` rejects what a
        // live edit would.
        let policy = crate::gateway::rules::BackendPolicy::new(&allow_backends, listen);
        let table = crate::gateway::rules::validate(
            default_backend.as_deref().unwrap_or(""),
            routes,
            &policy,
        );
        let routes = match table {
            Ok(t) => t.rules,
            Err(e) => {
                let (pos, key) = match e.rule_index() {
                    Some(i) => (
                        route_pos.get(i).copied().unwrap_or(node.pos),
                        format!("gateway.routes[{i}]"),
                    ),
                    None => (
                        f.default_backend.as_ref().map_or(node.pos, |n| n.pos),
                        "gateway".to_string(),
                    ),
                };
                self.problem(pos, &key, e.to_string(), None);
                Vec::new()
            }
        };
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
    fn backend_connections(&mut self, f: Option<&Field>) -> BackendConnections {
        let mut out = BackendConnections::default();
        let Some(n) = f else {
            return out;
        };
        if let Value::Scalar { .. } = n.node.value {
            out.max = self.scalar(&n.node, &n.key).unwrap_or(out.max);
        } else if let Some(bf) = self.section::<RawConnections>(&n.node, &n.key) {
            out.max = self.val(&bf.max).unwrap_or(out.max);
            out.queue = self.val(&bf.queue).unwrap_or(out.queue);
        }
        out
    }

    /// A route in the manifest's form, read straight into the admin API's
    /// rule as its JSON reader would read it: blank texts are absent,
    /// `set_headers` is a map (so in name order), and what that reader
    /// refuses (an unknown `action`, a header condition without `name`) is
    /// the same [`RuleError`], for the route at `index` in the table.
    fn route(&mut self, node: &Node, key: &str, index: usize) -> Option<Result<Rule, RuleError>> {
        use serde::de::{value, Error as _, IntoDeserializer};
        let f: RawRoute = self.section(node, key)?;
        let nonblank = |t: Option<String>| t.filter(|t| !t.trim().is_empty());
        // The first thing the JSON reader would refuse, in its key order
        // (`action` before `match`).
        let mut unreadable: Option<(String, value::Error)> = None;
        let id = self.val(&f.id);
        let action = match self.val(&f.action) {
            None => Action::default(),
            Some(t) => Action::deserialize(t.into_deserializer()).unwrap_or_else(|e| {
                unreadable.get_or_insert(("action".into(), e));
                Action::default()
            }),
        };
        let mut rule = Rule {
            action,
            backend: nonblank(self.val(&f.backend)),
            redirect_to: nonblank(self.val(&f.redirect_to)),
            redirect_to_prefix: nonblank(self.val(&f.redirect_to_prefix)),
            priority: self.val(&f.priority).unwrap_or(0),
            redirect_code: f.redirect_code.as_ref().map(|c| self.val(c).unwrap_or(302)),
            strip_prefix: self.val(&f.strip_prefix).unwrap_or(false),
            ..Rule::default()
        };
        if let Some(h) = &f.set_headers {
            if let Some(entries) = self.mapping(&h.node, &h.key) {
                let mut m = std::collections::BTreeMap::new();
                for (k, v) in entries {
                    let t = self.scalar(v, &format!("{}.{}", h.key, k.name));
                    m.insert(k.name.clone(), t.unwrap_or_default());
                }
                rule.set_headers = m
                    .into_iter()
                    .map(|(name, value)| SetHeader { name, value })
                    .collect();
            }
        }
        let mut path_prefix = None;
        if let Some(m) = &f.matcher {
            if let Some(mf) = self.section::<RawMatch>(&m.node, &m.key) {
                let matcher = &mut rule.matcher;
                path_prefix = self.val(&mf.path_prefix);
                matcher.path_equal = nonblank(self.val(&mf.path_equal));
                matcher.host = nonblank(self.val(&mf.host));
                matcher.method = nonblank(self.val(&mf.method));
                matcher.referer_substr = nonblank(self.val(&mf.referer_substr));
                matcher.referer_regex = nonblank(self.val(&mf.referer_regex));
                if let Some(Field {
                    key: hkey,
                    node: hs,
                }) = &mf.headers
                {
                    if let Value::Seq(items) = &hs.value {
                        for (i, h) in items.iter().enumerate() {
                            let ikey = format!("{hkey}[{i}]");
                            let Some(hf) = self.section::<RawHeader>(h, &ikey) else {
                                continue;
                            };
                            let name = self.val(&hf.name);
                            let contains = nonblank(self.val(&hf.contains));
                            let regex = nonblank(self.val(&hf.regex));
                            match name {
                                Some(name) => matcher.headers.push(HeaderMatch {
                                    name,
                                    contains,
                                    regex,
                                }),
                                None => {
                                    let at = format!("match.headers[{}]", matcher.headers.len());
                                    unreadable
                                        .get_or_insert((at, value::Error::missing_field("name")));
                                }
                            }
                        }
                    } else {
                        self.problem(
                            hs.pos,
                            hkey,
                            format!("expected a list, found {}", hs.kind()),
                            None,
                        );
                    }
                }
            }
        }
        if let Some(p) = self.val(&f.prefix) {
            if let (true, Some(prefix)) = (path_prefix.is_some(), &f.prefix) {
                self.problem(
                    prefix.pos,
                    &prefix.key,
                    "given twice (as `prefix` and `match.path_prefix`)",
                    Some("keep one".into()),
                );
            }
            path_prefix = Some(p);
        }
        rule.matcher.path_prefix = nonblank(path_prefix);
        if let Some((field, e)) = unreadable {
            return Some(Err(RuleError::Rule {
                index,
                id: id.filter(|i| !i.is_empty()),
                field,
                message: e.to_string(),
            }));
        }
        rule.id = id.unwrap_or_default();
        Some(Ok(rule))
    }
}

/// `listen:`: `0.0.0.0:7860`, `[::]:7860`, `:7860` or `7860`.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Listen(std::net::SocketAddr);

impl FromText for Listen {
    const WHAT: &'static str = "an address like `0.0.0.0:7860` or a port";

    fn from_text(t: &str) -> Result<Listen, String> {
        let t = t.trim();
        if let Ok(a) = t.parse() {
            return Ok(Listen(a));
        }
        let port = t.strip_prefix(':').unwrap_or(t);
        port.parse::<u16>()
            .map(|p| Listen(([0, 0, 0, 0], p).into()))
            .map_err(|_| format!("`{t}` is not an address like `0.0.0.0:7860` or a port"))
    }
}

/// `timeouts.send`: zero would close every response whose first write has
/// to wait for the client.
#[derive(Debug, Clone, Copy, PartialEq)]
struct SendTimeout(Duration);

impl FromText for SendTimeout {
    const WHAT: &'static str = "a duration like `60s`";

    fn from_text(t: &str) -> Result<SendTimeout, String> {
        match parse_duration(t)? {
            d if d.is_zero() => Err(format!(
                "`{t}`: the send timeout must be more than zero (nginx's default is 60s)"
            )),
            d => Ok(SendTimeout(d)),
        }
    }
}

pub(super) fn parse_net(t: &str) -> Result<IpNet, String> {
    let t = t.trim();
    if let Ok(n) = t.parse::<IpNet>() {
        return Ok(n);
    }
    t.parse::<std::net::IpAddr>()
        .map(IpNet::from)
        .map_err(|_| format!("`{t}` is not an IP address or network like `127.0.0.0/8`"))
}

/// 12 hex digits of the SHA-256 of the state file's path: what tells the
/// default admin-password files of two same-named stacks apart.
pub(super) fn password_file_key(state_file: &Path) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(state_file.as_os_str().as_encoded_bytes());
    hex::encode(&digest[..6])
}
