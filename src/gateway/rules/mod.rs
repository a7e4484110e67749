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

mod backend;
mod error;

use std::collections::HashSet;

use serde::{Deserialize, Deserializer, Serialize};

pub use backend::{loopback_nets, parse_backend, Backend, BackendPolicy};
pub use error::RuleError;

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
mod tests;
