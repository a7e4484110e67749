//! The route rule model: the JSON wire format of `/admin/routes.json`,
//! compatible with the original OpenResty gateway's `admin_config.json`,
//! and its validation (pure: no I/O).
//!
//! Validation turns untrusted JSON (the manifest's `routes:`, an admin POST,
//! the state file) into a normalised [`Table`], or a [`RuleError`] that names
//! the rule (index and id) and the field, so both `stackctl check` and the
//! admin API can tell the user exactly what to fix.
//!
//! Leniency kept for the original's files: empty strings mean "absent",
//! `priority` may be a numeric string, and `set_headers` may be the
//! original's list of `{name, value}` or a map. Rules are written back in
//! the original's shape (a `set_headers` list), so its page and scripts can
//! read what we write.

use std::collections::HashSet;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use ipnet::IpNet;
use serde::{Deserialize, Deserializer, Serialize};

/// What a matching rule does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Forward to `backend`.
    #[default]
    Proxy,
    /// Answer with a redirect to `redirect_to` / `redirect_to_prefix`.
    Redirect,
}

/// A header condition: the header must exist and contain / match.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderMatch {
    /// Header name (case-insensitive).
    pub name: String,
    /// Substring the value must contain.
    #[serde(
        default,
        deserialize_with = "opt_nonempty",
        skip_serializing_if = "Option::is_none"
    )]
    pub contains: Option<String>,
    /// Regular expression the value must match.
    #[serde(
        default,
        deserialize_with = "opt_nonempty",
        skip_serializing_if = "Option::is_none"
    )]
    pub regex: Option<String>,
}

/// Conditions of a rule; every present one must hold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Match {
    /// The path starts with this, at a segment boundary (`/foo` matches
    /// `/foo` and `/foo/x`, never `/foobar`).
    #[serde(
        default,
        deserialize_with = "opt_nonempty",
        skip_serializing_if = "Option::is_none"
    )]
    pub path_prefix: Option<String>,
    /// The path is exactly this.
    #[serde(
        default,
        deserialize_with = "opt_nonempty",
        skip_serializing_if = "Option::is_none"
    )]
    pub path_equal: Option<String>,
    /// The Host header (without port) equals this, case-insensitively.
    #[serde(
        default,
        deserialize_with = "opt_nonempty",
        skip_serializing_if = "Option::is_none"
    )]
    pub host: Option<String>,
    /// The method equals this.
    #[serde(
        default,
        deserialize_with = "opt_nonempty",
        skip_serializing_if = "Option::is_none"
    )]
    pub method: Option<String>,
    /// The Referer contains this.
    #[serde(
        default,
        deserialize_with = "opt_nonempty",
        skip_serializing_if = "Option::is_none"
    )]
    pub referer_substr: Option<String>,
    /// The Referer matches this regular expression.
    #[serde(
        default,
        deserialize_with = "opt_nonempty",
        skip_serializing_if = "Option::is_none"
    )]
    pub referer_regex: Option<String>,
    /// Header conditions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<HeaderMatch>,
}

impl Match {
    fn is_empty(&self) -> bool {
        self.path_prefix.is_none()
            && self.path_equal.is_none()
            && self.host.is_none()
            && self.method.is_none()
            && self.referer_substr.is_none()
            && self.referer_regex.is_none()
            && self.headers.is_empty()
    }
}

/// One header set on the forwarded request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetHeader {
    /// Header name.
    pub name: String,
    /// Value (replaces any value the client sent).
    pub value: String,
}

/// One routing rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// Identifier, unique in a table (`rule-N` is assigned when empty).
    #[serde(default, deserialize_with = "string_or_null")]
    pub id: String,
    /// Higher wins.
    #[serde(default, deserialize_with = "lenient_i64")]
    pub priority: i64,
    /// Proxy or redirect.
    #[serde(default)]
    pub action: Action,
    /// `http://host:port` for proxy rules; absent means `default_backend`.
    #[serde(
        default,
        deserialize_with = "opt_nonempty",
        skip_serializing_if = "Option::is_none"
    )]
    pub backend: Option<String>,
    /// Remove the matched `path_prefix` before forwarding (sets X-Forwarded-Prefix).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub strip_prefix: bool,
    /// Headers set on the forwarded request, in order. Accepts the
    /// original's list of `{name, value}` or a `{name: value}` map.
    #[serde(
        default,
        deserialize_with = "set_headers_any",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub set_headers: Vec<SetHeader>,
    /// Redirect target (a path or absolute URL).
    #[serde(
        default,
        deserialize_with = "opt_nonempty",
        skip_serializing_if = "Option::is_none"
    )]
    pub redirect_to: Option<String>,
    /// Redirect to this prefix + the rest of the path after `path_prefix`.
    #[serde(
        default,
        deserialize_with = "opt_nonempty",
        skip_serializing_if = "Option::is_none"
    )]
    pub redirect_to_prefix: Option<String>,
    /// Redirect status: 302 (default), 303, 307 or 308; 301 is refused
    /// (browsers cache it forever, the original's defect 17).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redirect_code: Option<u16>,
    /// Conditions.
    #[serde(default, rename = "match", deserialize_with = "match_or_null")]
    pub matcher: Match,
}

/// A whole route table: what `GET /admin/routes.json` returns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Table {
    /// Where unmatched requests go (empty: nowhere, 404).
    #[serde(default)]
    pub default_backend: String,
    /// The rules, in order.
    #[serde(default)]
    pub rules: Vec<Rule>,
}

// ---- lenient deserializers -------------------------------------------------

fn opt_nonempty<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let v: Option<String> = Option::deserialize(d)?;
    Ok(v.filter(|s| !s.trim().is_empty()))
}

fn string_or_null<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let v: Option<String> = Option::deserialize(d)?;
    Ok(v.unwrap_or_default())
}

fn match_or_null<'de, D: Deserializer<'de>>(d: D) -> Result<Match, D::Error> {
    let v: Option<Match> = Option::deserialize(d)?;
    Ok(v.unwrap_or_default())
}

fn lenient_i64<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Num {
        Int(i64),
        Text(String),
        Null(()),
    }
    match Num::deserialize(d)? {
        Num::Int(n) => Ok(n),
        Num::Null(()) => Ok(0),
        Num::Text(s) if s.trim().is_empty() => Ok(0),
        Num::Text(s) => s
            .trim()
            .parse()
            .map_err(|_| serde::de::Error::custom(format!("expected an integer, got {s:?}"))),
    }
}

fn set_headers_any<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<SetHeader>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Any {
        List(Vec<SetHeader>),
        Map(std::collections::BTreeMap<String, String>),
        Null(()),
    }
    Ok(
        match Any::deserialize(d).map_err(|_| {
            serde::de::Error::custom("expected a list of {name, value} or a map of name: value")
        })? {
            Any::List(l) => l,
            Any::Map(m) => m
                .into_iter()
                .map(|(name, value)| SetHeader { name, value })
                .collect(),
            Any::Null(()) => Vec::new(),
        },
    )
}

// ---- backends ----------------------------------------------------------------

/// Which backends an admin (or the manifest) may point a rule at, so the
/// gateway cannot be turned into an open proxy into the network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendPolicy {
    /// Networks a backend address must be inside.
    pub allow: Vec<IpNet>,
    /// The gateway's own listen address: pointing a rule at it would loop.
    pub own_listen: Option<SocketAddr>,
}

impl Default for BackendPolicy {
    /// Loopback only (`127.0.0.0/8`, `::1`), the manifest's default.
    fn default() -> Self {
        BackendPolicy {
            allow: loopback_nets(),
            own_listen: None,
        }
    }
}

/// `127.0.0.0/8` and `::1/128`.
pub fn loopback_nets() -> Vec<IpNet> {
    vec![
        IpNet::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 0)), 8).unwrap_or_default(),
        IpNet::new(IpAddr::V6(Ipv6Addr::LOCALHOST), 128).unwrap_or_default(),
    ]
}

impl BackendPolicy {
    /// The policy for a gateway listening on `listen` with `allow_backends`
    /// (loopback when empty).
    pub fn new(allow: &[IpNet], listen: SocketAddr) -> Self {
        BackendPolicy {
            allow: if allow.is_empty() {
                loopback_nets()
            } else {
                allow.to_vec()
            },
            own_listen: Some(listen),
        }
    }

    /// Parse `url` and check it against the policy.
    pub fn check(&self, url: &str) -> Result<Backend, String> {
        let b = parse_backend(url)?;
        let ip = b.addr.ip();
        if ip.is_unspecified() {
            return Err(format!(
                "`{ip}` is not a backend address; use `127.0.0.1` for a local service"
            ));
        }
        if is_link_local(ip) {
            return Err(format!(
                "`{ip}` is link-local (cloud metadata lives there) and is always refused"
            ));
        }
        if !self.allow.iter().any(|n| n.contains(&ip)) {
            let nets: Vec<String> = self.allow.iter().map(|n| n.to_string()).collect();
            return Err(format!(
                "`{ip}` is outside `allow_backends` ({}); add its network to `gateway.allow_backends` if it is really a backend",
                nets.join(", ")
            ));
        }
        if let Some(own) = self.own_listen {
            let same_host = own.ip().is_unspecified()
                || own.ip() == ip
                || (ip.is_loopback() && own.ip().is_loopback());
            if own.port() != 0 && b.addr.port() == own.port() && same_host {
                return Err(format!(
                    "`{}` is the gateway's own listen address; a rule pointing at it would loop",
                    b.addr
                ));
            }
        }
        Ok(b)
    }
}

fn is_link_local(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_link_local(),
        IpAddr::V6(v6) => (v6.segments()[0] & 0xffc0) == 0xfe80,
    }
}

/// A parsed backend: where to connect, and how to write it in a URI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backend {
    /// The address connected to (`localhost` is `127.0.0.1`: no DNS lookups,
    /// and no surprise `::1` when the service listens on IPv4 only).
    pub addr: SocketAddr,
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "http://{}", self.addr)
    }
}

/// Parse `http://HOST[:PORT][/]` where HOST is an IP literal or `localhost`.
pub fn parse_backend(url: &str) -> Result<Backend, String> {
    let url = url.trim();
    let rest = match url.split_once("://") {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("http") => rest,
        Some((scheme, _)) if scheme.eq_ignore_ascii_case("https") => {
            return Err(
                "only `http://` backends are supported (the gateway talks plain HTTP to local services)"
                    .into(),
            )
        }
        _ => return Err(format!("`{url}` is not a URL; write it as `http://127.0.0.1:PORT`")),
    };
    let (authority, path) = match rest.find(['/', '?', '#']) {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    if !(path.is_empty() || path == "/") {
        return Err(format!(
            "a backend is `http://HOST:PORT` without a path (got path `{path}`); use `strip_prefix` or `set_headers` instead"
        ));
    }
    if authority.contains('@') {
        return Err("a backend URL may not contain a user name or password".into());
    }
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (h, after) = v6
            .split_once(']')
            .ok_or_else(|| format!("`{authority}`: unclosed `[` in IPv6 address"))?;
        let port = match after {
            "" => None,
            p => Some(
                p.strip_prefix(':')
                    .ok_or_else(|| format!("`{authority}`: expected `:PORT` after `]`"))?,
            ),
        };
        (h, port)
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    let port: u16 = match port {
        None => 80,
        Some(p) => p
            .parse()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| format!("`{p}` is not a port number (1-65535)"))?,
    };
    let ip: IpAddr = if host.eq_ignore_ascii_case("localhost") {
        IpAddr::V4(Ipv4Addr::LOCALHOST)
    } else {
        host.parse().map_err(|_| {
            format!("`{host}` must be an IP address or `localhost` (host names are not resolved, so a rule cannot follow DNS elsewhere)")
        })?
    };
    Ok(Backend {
        addr: SocketAddr::new(ip, port),
    })
}

// ---- errors ------------------------------------------------------------------

/// A problem with a route table, naming where it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleError {
    /// `default_backend` is invalid.
    #[error("`default_backend`: {0}")]
    DefaultBackend(String),
    /// A rule is invalid.
    #[error("rules[{index}]{}: `{field}`: {message}", id_part(.id))]
    Rule {
        /// Position in `rules` (0-based, as in the JSON array).
        index: usize,
        /// The rule's id, when it has one.
        id: Option<String>,
        /// The field at fault, dotted (`match.path_prefix`).
        field: String,
        /// What is wrong and how to fix it.
        message: String,
    },
    /// The table as a whole is invalid (`rules` not a list, …).
    #[error("{0}")]
    Table(String),
}

fn id_part(id: &Option<String>) -> String {
    match id {
        Some(id) if !id.is_empty() => format!(" (`{id}`)"),
        _ => String::new(),
    }
}

impl RuleError {
    /// The rule's index, when the error is about one rule.
    pub fn rule_index(&self) -> Option<usize> {
        match self {
            RuleError::Rule { index, .. } => Some(*index),
            _ => None,
        }
    }
}

// ---- validation --------------------------------------------------------------

/// Longest accepted rule id.
const MAX_ID_LEN: usize = 64;
/// Regexes are compiled with this size limit so a rule cannot eat memory.
pub(crate) const REGEX_SIZE_LIMIT: usize = 256 * 1024;

/// Validate a whole table given as wire JSON rules; returns it normalised
/// (ids assigned, methods upper-cased, hosts lower-cased).
///
/// This is the one validator: the manifest (`stackctl check`), the admin
/// API and the state file all go through it.
pub fn validate_table(
    default_backend: &str,
    rules: &[serde_json::Value],
    policy: &BackendPolicy,
) -> Result<Table, RuleError> {
    let default_backend = default_backend.trim();
    if !default_backend.is_empty() {
        policy
            .check(default_backend)
            .map_err(RuleError::DefaultBackend)?;
    }
    let mut parsed = Vec::with_capacity(rules.len());
    for (index, value) in rules.iter().enumerate() {
        parsed.push(parse_rule(index, value)?);
    }
    // Explicit ids first, so an assigned `rule-N` never collides with one.
    let mut seen: HashSet<String> = HashSet::new();
    for (index, rule) in parsed.iter().enumerate() {
        if rule.id.is_empty() {
            continue;
        }
        if !seen.insert(rule.id.clone()) {
            return Err(rule_err(
                index,
                rule,
                "id",
                format!(
                    "`{}` is used by an earlier rule; ids must be unique",
                    rule.id
                ),
            ));
        }
    }
    for (index, rule) in parsed.iter_mut().enumerate() {
        if rule.id.is_empty() {
            let mut n = index + 1;
            while seen.contains(&format!("rule-{n}")) {
                n += 1;
            }
            rule.id = format!("rule-{n}");
            seen.insert(rule.id.clone());
        }
        check_rule(index, rule, policy)?;
    }
    Ok(Table {
        default_backend: default_backend.to_string(),
        rules: parsed,
    })
}

/// Validate an already typed table (e.g. read from the state file).
pub fn validate_typed(table: &Table, policy: &BackendPolicy) -> Result<Table, RuleError> {
    let values: Vec<serde_json::Value> = table
        .rules
        .iter()
        .map(|r| serde_json::to_value(r).unwrap_or(serde_json::Value::Null))
        .collect();
    validate_table(&table.default_backend, &values, policy)
}

fn parse_rule(index: usize, value: &serde_json::Value) -> Result<Rule, RuleError> {
    let id = value
        .get("id")
        .and_then(|v| v.as_str())
        .filter(|s| !s.is_empty())
        .map(str::to_string);
    if !value.is_object() {
        return Err(RuleError::Rule {
            index,
            id,
            field: "(rule)".into(),
            message: "a rule must be a JSON object".into(),
        });
    }
    serde_path_to_error::deserialize::<_, Rule>(value).map_err(|e| {
        let path = e.path().to_string();
        let field = if path == "." {
            "(rule)".to_string()
        } else {
            path
        };
        RuleError::Rule {
            index,
            id,
            field,
            message: e.into_inner().to_string(),
        }
    })
}

fn rule_err(index: usize, rule: &Rule, field: &str, message: String) -> RuleError {
    RuleError::Rule {
        index,
        id: (!rule.id.is_empty()).then(|| rule.id.clone()),
        field: field.to_string(),
        message,
    }
}

fn check_rule(index: usize, rule: &mut Rule, policy: &BackendPolicy) -> Result<(), RuleError> {
    let err = |rule: &Rule, field: &str, msg: String| rule_err(index, rule, field, msg);
    if rule.id.len() > MAX_ID_LEN || rule.id.chars().any(|c| c.is_control()) {
        return Err(err(
            rule,
            "id",
            format!("must be at most {MAX_ID_LEN} printable characters"),
        ));
    }
    if rule.matcher.is_empty() {
        return Err(err(
            rule,
            "match",
            "has no condition, so the rule would catch every request; add `path_prefix` (or another condition), or change `default_backend` instead".into(),
        ));
    }
    // Paths: the same normalisation requests get, so a prefix can match.
    for (field, value) in [
        ("match.path_prefix", rule.matcher.path_prefix.clone()),
        ("match.path_equal", rule.matcher.path_equal.clone()),
    ] {
        if let Some(p) = value {
            check_rule_path(&p).map_err(|m| err(rule, field, m))?;
        }
    }
    if let Some(h) = &rule.matcher.host {
        let h = h.trim().to_ascii_lowercase();
        if h.contains(['/', ' ', '@']) || h.chars().any(|c| c.is_control()) {
            return Err(err(
                rule,
                "match.host",
                "must be a bare host name like `example.com`".into(),
            ));
        }
        if h.rsplit_once(':')
            .is_some_and(|(_, p)| p.chars().all(|c| c.is_ascii_digit()))
            && !h.ends_with(']')
        {
            return Err(err(
                rule,
                "match.host",
                "is compared without the port; remove `:PORT`".into(),
            ));
        }
        rule.matcher.host = Some(h);
    }
    if let Some(m) = &rule.matcher.method {
        let m = m.trim().to_ascii_uppercase();
        if http::Method::from_bytes(m.as_bytes()).is_err() {
            return Err(err(
                rule,
                "match.method",
                format!("`{m}` is not an HTTP method"),
            ));
        }
        rule.matcher.method = Some(m);
    }
    if let Some(re) = &rule.matcher.referer_regex {
        compile_regex(re).map_err(|m| err(rule, "match.referer_regex", m))?;
    }
    for (i, h) in rule.matcher.headers.iter().enumerate() {
        if http::HeaderName::from_bytes(h.name.as_bytes()).is_err() {
            return Err(err(
                rule,
                &format!("match.headers[{i}].name"),
                format!("`{}` is not a valid header name", h.name),
            ));
        }
        if let Some(re) = &h.regex {
            compile_regex(re).map_err(|m| err(rule, &format!("match.headers[{i}].regex"), m))?;
        }
    }
    for (i, h) in rule.set_headers.iter().enumerate() {
        let name = http::HeaderName::from_bytes(h.name.as_bytes()).map_err(|_| {
            err(
                rule,
                &format!("set_headers[{i}].name"),
                format!("`{}` is not a valid header name", h.name),
            )
        })?;
        if crate::gateway::headers::is_hop_by_hop(&name)
            || name == http::header::HOST
            || name == http::header::CONTENT_LENGTH
        {
            return Err(err(
                rule,
                &format!("set_headers[{i}].name"),
                format!("`{}` is managed by the gateway and cannot be set", h.name),
            ));
        }
        if http::HeaderValue::from_str(&h.value).is_err() {
            return Err(err(
                rule,
                &format!("set_headers[{i}].value"),
                "must be visible ASCII text without line breaks".into(),
            ));
        }
    }
    if rule.strip_prefix && rule.matcher.path_prefix.is_none() {
        return Err(err(
            rule,
            "strip_prefix",
            "needs `match.path_prefix` (the part to strip)".into(),
        ));
    }
    match rule.action {
        Action::Proxy => {
            if let Some(b) = &rule.backend {
                policy.check(b).map_err(|m| err(rule, "backend", m))?;
            }
            for (field, present) in [
                ("redirect_to", rule.redirect_to.is_some()),
                ("redirect_to_prefix", rule.redirect_to_prefix.is_some()),
                ("redirect_code", rule.redirect_code.is_some()),
            ] {
                if present {
                    return Err(err(
                        rule,
                        field,
                        "only applies to `action: redirect`".into(),
                    ));
                }
            }
        }
        Action::Redirect => {
            match (&rule.redirect_to, &rule.redirect_to_prefix) {
                (None, None) => {
                    return Err(err(
                        rule,
                        "redirect_to",
                        "a redirect rule needs `redirect_to` or `redirect_to_prefix`".into(),
                    ))
                }
                (Some(_), Some(_)) => {
                    return Err(err(
                        rule,
                        "redirect_to_prefix",
                        "give either `redirect_to` or `redirect_to_prefix`, not both".into(),
                    ))
                }
                (Some(t), None) => {
                    check_redirect_target(t).map_err(|m| err(rule, "redirect_to", m))?
                }
                (None, Some(t)) => {
                    if rule.matcher.path_prefix.is_none() {
                        return Err(err(
                            rule,
                            "redirect_to_prefix",
                            "needs `match.path_prefix` (the part replaced)".into(),
                        ));
                    }
                    check_redirect_target(t).map_err(|m| err(rule, "redirect_to_prefix", m))?
                }
            }
            match rule.redirect_code {
                None | Some(302 | 303 | 307 | 308) => {}
                Some(301) => {
                    return Err(err(
                        rule,
                        "redirect_code",
                        "301 is cached by browsers for good, so a later route change never reaches them; use 308 (permanent) or 302".into(),
                    ))
                }
                Some(c) => {
                    return Err(err(
                        rule,
                        "redirect_code",
                        format!("{c} is not a redirect status; use 302, 303, 307 or 308"),
                    ))
                }
            }
            for (field, present) in [
                ("backend", rule.backend.is_some()),
                ("strip_prefix", rule.strip_prefix),
                ("set_headers", !rule.set_headers.is_empty()),
            ] {
                if present {
                    return Err(err(rule, field, "only applies to `action: proxy`".into()));
                }
            }
        }
    }
    Ok(())
}

fn check_rule_path(p: &str) -> Result<(), String> {
    if !p.starts_with('/') {
        return Err(format!("`{p}` must start with `/`"));
    }
    if p.contains(['?', '#']) || p.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "`{p}` must be a plain path (no query, fragment or spaces)"
        ));
    }
    match crate::gateway::path::normalize_path(p) {
        Ok(n) if n == p => {}
        Ok(n) => {
            return Err(format!(
                "`{p}` is not in normal form; requests are matched after normalisation, write `{n}`"
            ))
        }
        Err(e) => return Err(format!("`{p}`: {e}")),
    }
    if crate::gateway::path::is_admin_path(p) {
        return Err(format!(
            "`{p}` is under `/admin/`, which is reserved for the gateway's admin API"
        ));
    }
    Ok(())
}

fn check_redirect_target(t: &str) -> Result<(), String> {
    if t.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err("must not contain spaces or control characters".into());
    }
    let lower = t.to_ascii_lowercase();
    // Browsers read `/\host` as `//host` too.
    if t.starts_with("//") || t.starts_with("/\\") {
        return Err("`//host` is a protocol-relative URL; write `https://host/...` if you mean another site".into());
    }
    if t.starts_with('/') || lower.starts_with("http://") || lower.starts_with("https://") {
        if http::HeaderValue::from_str(t).is_err() {
            return Err("must be ASCII (percent-encode other characters)".into());
        }
        Ok(())
    } else {
        Err(format!(
            "`{t}` must be a path starting with `/` or an `http(s)://` URL"
        ))
    }
}

/// Compile a rule regex with the gateway's size limit.
pub(crate) fn compile_regex(re: &str) -> Result<regex::Regex, String> {
    regex::RegexBuilder::new(re)
        .size_limit(REGEX_SIZE_LIMIT)
        .build()
        .map_err(|e| format!("invalid regular expression: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn policy() -> BackendPolicy {
        BackendPolicy::new(&[], "0.0.0.0:7860".parse().unwrap())
    }

    fn one(rule: serde_json::Value) -> Result<Table, RuleError> {
        validate_table("http://127.0.0.1:6185", &[rule], &policy())
    }

    fn err_text(rule: serde_json::Value) -> String {
        one(rule).unwrap_err().to_string()
    }

    #[test]
    fn original_default_rules_are_accepted_and_round_trip_in_the_original_shape() {
        let rules = json!([
            {"match": {"path_prefix": "/api/ws/"}, "backend": "http://127.0.0.1:6099", "action": "proxy", "id": "proxy-api-ws", "priority": 200},
            {"match": {"referer_substr": "gemini"}, "backend": "http://127.0.0.1:8000", "action": "proxy", "id": "proxy-referer-gemini", "priority": 195},
            {"match": {"path_equal": "/webui"}, "redirect_to": "/webui/", "action": "redirect", "id": "redirect-webui-slash", "priority": 200},
            {"match": {"path_prefix": "/webui/"}, "set_headers": [{"value": "/webui", "name": "X-Forwarded-Prefix"}],
             "backend": "http://127.0.0.1:6099", "action": "proxy", "id": "proxy-webui", "priority": 180}
        ]);
        let t = validate_table(
            "http://127.0.0.1:6185",
            rules.as_array().unwrap(),
            &policy(),
        )
        .unwrap();
        assert_eq!(t.rules.len(), 4);
        let back = serde_json::to_value(&t.rules[3]).unwrap();
        assert_eq!(
            back["set_headers"],
            json!([{"name": "X-Forwarded-Prefix", "value": "/webui"}])
        );
        assert!(back.get("redirect_to").is_none());
    }

    #[test]
    fn lenient_forms_are_normalised() {
        let t = one(json!({"id": "", "priority": "7", "backend": "", "redirect_to": "",
                           "set_headers": {"X-A": "1"}, "match": {"path_prefix": "/x/", "method": "get", "host": "Example.COM"}}))
        .unwrap();
        let r = &t.rules[0];
        assert_eq!(r.id, "rule-1");
        assert_eq!(r.priority, 7);
        assert_eq!(r.backend, None);
        assert_eq!(
            r.set_headers,
            vec![SetHeader {
                name: "X-A".into(),
                value: "1".into()
            }]
        );
        assert_eq!(r.matcher.method.as_deref(), Some("GET"));
        assert_eq!(r.matcher.host.as_deref(), Some("example.com"));
    }

    #[test]
    fn assigned_ids_skip_explicit_ones() {
        let rules = json!([{"match": {"path_prefix": "/a"}}, {"id": "rule-1", "match": {"path_prefix": "/b"}}]);
        let t = validate_table("", rules.as_array().unwrap(), &policy()).unwrap();
        assert_eq!(t.rules[0].id, "rule-2");
        assert_eq!(t.rules[1].id, "rule-1");
    }

    #[test]
    fn errors_name_the_rule_and_the_field() {
        let cases: &[(serde_json::Value, &str)] = &[
            (json!({"id": "g", "match": {"path_prefix": "gemini/"}}),
             "rules[0] (`g`): `match.path_prefix`: `gemini/` must start with `/`"),
            (json!({"id": "g", "priority": "high", "match": {"path_prefix": "/g/"}}),
             "rules[0] (`g`): `priority`: expected an integer, got \"high\""),
            (json!({"id": "g", "match": {"path_prefix": "/g/", "bogus": 1}}),
             "rules[0] (`g`): `match.bogus`: unknown field `bogus`"),
            (json!({"id": "g", "match": {}}),
             "rules[0] (`g`): `match`: has no condition"),
            (json!({"id": "g", "match": {"path_prefix": "/admin/"}}),
             "rules[0] (`g`): `match.path_prefix`: `/admin/` is under `/admin/`, which is reserved"),
            (json!({"id": "g", "match": {"path_equal": "/admin"}}),
             "`match.path_equal`: `/admin` is under `/admin/`"),
            (json!({"id": "g", "match": {"path_prefix": "/a/../b/"}}),
             "`match.path_prefix`: `/a/../b/` is not in normal form; requests are matched after normalisation, write `/b/`"),
            (json!({"id": "g", "match": {"referer_regex": "("}}),
             "`match.referer_regex`: invalid regular expression"),
            (json!({"id": "g", "match": {"headers": [{"name": "bad name"}]}}),
             "`match.headers[0].name`: `bad name` is not a valid header name"),
            (json!({"id": "g", "match": {"path_equal": "/x"}, "action": "redirect", "redirect_to": "/y", "redirect_code": 301}),
             "`redirect_code`: 301 is cached by browsers"),
            (json!({"id": "g", "match": {"path_equal": "/x"}, "action": "redirect"}),
             "`redirect_to`: a redirect rule needs"),
            (json!({"id": "g", "match": {"path_equal": "/x"}, "action": "redirect", "redirect_to": "//evil.com"}),
             "`redirect_to`: `//host` is a protocol-relative URL"),
            (json!({"id": "g", "match": {"path_equal": "/x"}, "action": "redirect", "redirect_to": "/\\evil.com"}),
             "`redirect_to`: `//host` is a protocol-relative URL"),
            (json!({"id": "g", "match": {"path_equal": "/x"}, "action": "redirect", "redirect_to_prefix": "/y/"}),
             "`redirect_to_prefix`: needs `match.path_prefix`"),
            (json!({"id": "g", "match": {"path_equal": "/x"}, "strip_prefix": true}),
             "`strip_prefix`: needs `match.path_prefix`"),
            (json!({"id": "g", "match": {"path_prefix": "/x"}, "set_headers": [{"name": "Connection", "value": "x"}]}),
             "`set_headers[0].name`: `Connection` is managed by the gateway"),
            (json!({"id": "g", "match": {"path_prefix": "/x"}, "action": "teleport"}),
             "`action`: unknown variant `teleport`"),
        ];
        for (rule, want) in cases {
            let got = err_text(rule.clone());
            assert!(got.contains(want), "rule {rule}\n got: {got}\nwant: {want}");
        }
    }

    #[test]
    fn duplicate_ids_are_refused_at_the_second_rule() {
        let rules = json!([{"id": "a", "match": {"path_prefix": "/a"}}, {"id": "a", "match": {"path_prefix": "/b"}}]);
        let e = validate_table("", rules.as_array().unwrap(), &policy()).unwrap_err();
        assert_eq!(e.rule_index(), Some(1));
        assert!(
            e.to_string().contains("`a` is used by an earlier rule"),
            "{e}"
        );
    }

    #[test]
    fn backend_policy_refusals() {
        let p = BackendPolicy::new(&[], "0.0.0.0:7860".parse().unwrap());
        let refused: &[(&str, &str)] = &[
            ("https://127.0.0.1:1", "only `http://`"),
            ("ftp://127.0.0.1:1", "is not a URL"),
            ("127.0.0.1:80", "is not a URL"),
            ("http://user:pw@127.0.0.1:1", "user name or password"),
            (
                "http://example.com:80",
                "must be an IP address or `localhost`",
            ),
            ("http://10.0.0.5:80", "outside `allow_backends`"),
            ("http://169.254.169.254:80", "link-local"),
            ("http://[fe80::1]:80", "link-local"),
            ("http://0.0.0.0:80", "is not a backend address"),
            ("http://127.0.0.1:7860", "own listen address"),
            ("http://localhost:7860", "own listen address"),
            ("http://127.0.0.1:1/path", "without a path"),
            ("http://127.0.0.1:99999", "not a port number"),
            ("http://[::1", "unclosed"),
        ];
        for (url, want) in refused {
            let e = p.check(url).unwrap_err();
            assert!(e.contains(want), "{url}: {e}");
        }
        for ok in [
            "http://127.0.0.1:6185",
            "http://localhost:8000/",
            "http://[::1]:9000",
            "HTTP://127.0.0.2",
        ] {
            p.check(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        assert_eq!(
            p.check("http://localhost:8000").unwrap().addr,
            "127.0.0.1:8000".parse().unwrap()
        );
        let wide = BackendPolicy::new(
            &["10.0.0.0/8".parse().unwrap()],
            "127.0.0.1:7860".parse().unwrap(),
        );
        wide.check("http://10.0.0.5:80").unwrap();
        wide.check("http://10.0.0.5:7860").unwrap();
        assert!(wide.check("http://127.0.0.1:80").is_err());
    }

    #[test]
    fn default_backend_is_checked() {
        let e = validate_table("http://10.1.1.1:80", &[], &policy()).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("`default_backend`: `10.1.1.1` is outside"),
            "{e}"
        );
        assert_eq!(
            validate_table("", &[], &policy()).unwrap().default_backend,
            ""
        );
    }
}
