//! Validation: untrusted wire rules into a normalised [`Table`], or the
//! [`RuleError`] that names the rule and the field.

use std::collections::HashSet;

use super::{Action, BackendPolicy, Rule, RuleError, Table};

/// Longest accepted rule id.
const MAX_ID_LEN: usize = 64;
/// Regexes are compiled with this size limit so a rule cannot eat memory.
pub(crate) const REGEX_SIZE_LIMIT: usize = 256 * 1024;

/// Validate a whole table: the one validator. The manifest (`stackctl
/// check` and the start), the admin API and the state file all go through
/// it. Each rule comes as read, or as the error of reading it: the first
/// such error is the table's, after `default_backend` and before any rule
/// is checked, so every reader names the same problem first. Returns the
/// table normalised (ids assigned, methods upper-cased, hosts lower-cased).
pub fn validate(
    default_backend: &str,
    rules: impl IntoIterator<Item = Result<Rule, RuleError>>,
    policy: &BackendPolicy,
) -> Result<Table, RuleError> {
    let default_backend = default_backend.trim();
    if !default_backend.is_empty() {
        policy
            .check(default_backend)
            .map_err(RuleError::DefaultBackend)?;
    }
    let mut parsed: Vec<Rule> = rules.into_iter().collect::<Result<_, _>>()?;
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

/// [`validate`] for rules given as wire JSON (an admin POST), read by the
/// model's lenient deserializers.
pub fn validate_table(
    default_backend: &str,
    rules: &[serde_json::Value],
    policy: &BackendPolicy,
) -> Result<Table, RuleError> {
    let parsed = rules.iter().enumerate().map(|(i, v)| parse_rule(i, v));
    validate(default_backend, parsed, policy)
}

/// One wire JSON rule, read as the rule at `index` of its table (not yet
/// validated: pass it to [`validate`]).
pub(crate) fn parse_rule(index: usize, value: &serde_json::Value) -> Result<Rule, RuleError> {
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
