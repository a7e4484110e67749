//! Route matching: a pure function of (request head, route table) → decision.
//!
//! A [`Router`] is compiled once from a validated [`Table`] (regexes built,
//! rules pre-sorted by precedence) and then only read; a route change builds
//! a new one and swaps it in whole, so a request always sees one consistent
//! table.
//!
//! Precedence (spec): highest `priority`, then longest `path_prefix`, then
//! longest `referer_substr`, then earlier in the list. Sorting once by that
//! key makes matching "first rule whose conditions all hold".

use std::borrow::Cow;

use http::{HeaderName, HeaderValue, StatusCode};

use crate::gateway::headers::HeadersRef;
use crate::gateway::path::{is_admin_path, prefix_matches};

use crate::gateway::rules::{
    compile_regex, parse_backend, Action, Backend, Rule, RuleError, Table,
};

/// The parts of a request that rules look at. The path has its own
/// lifetime `'p` so that a decision can borrow it while the rest of the
/// request moves on.
#[derive(Debug, Clone, Copy)]
pub struct RequestHead<'a, 'p> {
    /// The method, as sent.
    pub method: &'a str,
    /// The normalised path (see [`normalize_path`](super::path::normalize_path)).
    pub path: &'p str,
    /// The query string without `?`, if any.
    pub query: Option<&'a str>,
    /// Host (header, or URI authority in HTTP/2), with or without port.
    pub host: Option<&'a str>,
    /// The request headers (Referer and header rules).
    pub headers: HeadersRef<'a>,
}

/// What to do with a request.
#[derive(Debug, PartialEq)]
pub enum Decision<'r, 'p> {
    /// The admin API or page.
    Admin,
    /// Forward to a backend.
    Proxy(Target<'r, 'p>),
    /// Answer with a redirect.
    Redirect {
        /// The rule that matched.
        rule_id: &'r str,
        /// The `Location`, query string kept.
        location: String,
        /// 302 unless the rule says otherwise.
        status: StatusCode,
    },
    /// No rule and no default backend.
    NoRoute,
}

/// Where and how to forward.
#[derive(Debug, PartialEq)]
pub struct Target<'r, 'p> {
    /// The rule that matched; `None` for the default backend.
    pub rule_id: Option<&'r str>,
    /// The backend.
    pub backend: &'r Backend,
    /// The path sent to the backend (prefix stripped if asked).
    pub path: Cow<'p, str>,
    /// The stripped prefix without its trailing slash, for X-Forwarded-Prefix.
    pub forwarded_prefix: Option<&'r str>,
    /// Headers the rule sets.
    pub set_headers: &'r [(HeaderName, HeaderValue)],
}

#[derive(Debug)]
struct HeaderCond {
    name: HeaderName,
    contains: Option<String>,
    regex: Option<regex::Regex>,
}

#[derive(Debug)]
struct Cond {
    path_prefix: Option<String>,
    path_equal: Option<String>,
    host: Option<String>,
    method: Option<String>,
    referer_substr: Option<String>,
    referer_regex: Option<regex::Regex>,
    headers: Vec<HeaderCond>,
}

#[derive(Debug)]
enum Kind {
    Proxy {
        backend: Option<Backend>,
        strip: bool,
        set_headers: Vec<(HeaderName, HeaderValue)>,
    },
    Redirect {
        to: Option<String>,
        to_prefix: Option<String>,
        status: StatusCode,
    },
}

#[derive(Debug)]
struct Compiled {
    id: String,
    cond: Cond,
    kind: Kind,
}

/// A compiled, immutable route table.
#[derive(Debug)]
pub struct Router {
    table: Table,
    rules: Vec<Compiled>,
    default: Option<Backend>,
    etag: String,
}

impl Router {
    /// Compile a table that [`crate::gateway::rules::validate()`] accepted.
    pub fn new(table: Table) -> Result<Router, RuleError> {
        let mut order: Vec<usize> = (0..table.rules.len()).collect();
        let key = |r: &Rule| {
            (
                std::cmp::Reverse(r.priority),
                std::cmp::Reverse(r.matcher.path_prefix.as_ref().map_or(0, |p| p.len())),
                std::cmp::Reverse(r.matcher.referer_substr.as_ref().map_or(0, |p| p.len())),
            )
        };
        // Stable sort: equal keys keep list order, the last tie-breaker.
        order.sort_by_key(|&i| key(&table.rules[i]));
        let mut rules = Vec::with_capacity(order.len());
        for i in order {
            rules.push(compile(i, &table.rules[i])?);
        }
        let default = if table.default_backend.is_empty() {
            None
        } else {
            Some(parse_backend(&table.default_backend).map_err(RuleError::DefaultBackend)?)
        };
        let etag = etag_of(&table);
        Ok(Router {
            table,
            rules,
            default,
            etag,
        })
    }

    /// The table this router was built from.
    pub fn table(&self) -> &Table {
        &self.table
    }

    /// A strong ETag (quoted) of the table's JSON.
    pub fn etag(&self) -> &str {
        &self.etag
    }

    /// Decide what to do with a request. The decision borrows the router
    /// (`'r`) and may borrow the request's path (`'p`: no copy when it is
    /// forwarded unchanged).
    pub fn route<'r, 'p>(&'r self, req: &RequestHead<'_, 'p>) -> Decision<'r, 'p> {
        if is_admin_path(req.path) {
            return Decision::Admin;
        }
        let host = req.host.map(strip_port);
        let referer = req.headers.get_str(&http::header::REFERER);
        for rule in &self.rules {
            if !rule.cond.holds(req, host, referer) {
                continue;
            }
            return match &rule.kind {
                Kind::Proxy {
                    backend,
                    strip,
                    set_headers,
                } => {
                    let Some(backend) = backend.as_ref().or(self.default.as_ref()) else {
                        return Decision::NoRoute;
                    };
                    let (path, forwarded_prefix) = match (&rule.cond.path_prefix, strip) {
                        (Some(prefix), true) => {
                            let rest = &req.path[prefix.len()..];
                            let path = if rest.starts_with('/') {
                                Cow::Borrowed(rest)
                            } else {
                                Cow::Owned(format!("/{rest}"))
                            };
                            let fp = prefix.trim_end_matches('/');
                            (path, (!fp.is_empty()).then_some(fp))
                        }
                        _ => (Cow::Borrowed(req.path), None),
                    };
                    Decision::Proxy(Target {
                        rule_id: Some(&rule.id),
                        backend,
                        path,
                        forwarded_prefix,
                        set_headers,
                    })
                }
                Kind::Redirect {
                    to,
                    to_prefix,
                    status,
                } => {
                    let mut location = match (to, to_prefix, &rule.cond.path_prefix) {
                        (Some(to), _, _) => to.clone(),
                        (None, Some(tp), Some(prefix)) => {
                            let rest = &req.path[prefix.len()..];
                            join_path(tp, &escape_backslashes(rest))
                        }
                        // Validation guarantees one of the above.
                        _ => "/".to_string(),
                    };
                    no_protocol_relative(&mut location);
                    if let Some(q) = req.query.filter(|q| !q.is_empty()) {
                        location.push(if location.contains('?') { '&' } else { '?' });
                        location.push_str(q);
                    }
                    Decision::Redirect {
                        rule_id: &rule.id,
                        location,
                        status: *status,
                    }
                }
            };
        }
        match &self.default {
            Some(backend) => Decision::Proxy(Target {
                rule_id: None,
                backend,
                path: Cow::Borrowed(req.path),
                forwarded_prefix: None,
                set_headers: &[],
            }),
            None => Decision::NoRoute,
        }
    }

    /// How many rules the table has.
    pub fn rule_count(&self) -> usize {
        self.rules.len()
    }
}

/// A raw `\` from the request path, percent-encoded: browsers read `/\host`
/// in a `Location` as `//host`, another site (an open redirect).
fn escape_backslashes(rest: &str) -> Cow<'_, str> {
    if rest.contains('\\') {
        Cow::Owned(rest.replace('\\', "%5C"))
    } else {
        Cow::Borrowed(rest)
    }
}

/// Never answer with a `Location` that a browser reads as another host:
/// leading `//` (or `/\`, which browsers treat alike) collapses to one `/`.
/// Validation refuses such targets in rules; this holds for any path a
/// request can bring in, too.
fn no_protocol_relative(location: &mut String) {
    let b = location.as_bytes();
    if b.first() == Some(&b'/') && matches!(b.get(1), Some(b'/' | b'\\')) {
        let keep = location.trim_start_matches(['/', '\\']).to_string();
        *location = format!("/{keep}");
    }
}

fn join_path(base: &str, rest: &str) -> String {
    match (base.ends_with('/'), rest.starts_with('/')) {
        (true, true) => format!("{base}{}", &rest[1..]),
        (false, false) if !rest.is_empty() => format!("{base}/{rest}"),
        _ => format!("{base}{rest}"),
    }
}

fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host.find(']').map_or(host, |i| &host[..=i]);
    }
    match host.rsplit_once(':') {
        Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    }
}

impl Cond {
    fn holds(&self, req: &RequestHead<'_, '_>, host: Option<&str>, referer: Option<&str>) -> bool {
        if let Some(p) = &self.path_equal {
            if req.path != p {
                return false;
            }
        }
        if let Some(p) = &self.path_prefix {
            if !prefix_matches(p, req.path) {
                return false;
            }
        }
        if let Some(m) = &self.method {
            if !req.method.eq_ignore_ascii_case(m) {
                return false;
            }
        }
        if let Some(h) = &self.host {
            if !host.is_some_and(|got| got.eq_ignore_ascii_case(h)) {
                return false;
            }
        }
        if let Some(s) = &self.referer_substr {
            if !referer.is_some_and(|r| r.contains(s.as_str())) {
                return false;
            }
        }
        if let Some(re) = &self.referer_regex {
            if !referer.is_some_and(|r| re.is_match(r)) {
                return false;
            }
        }
        self.headers.iter().all(|c| {
            req.headers.values(&c.name).any(|v| {
                let Ok(v) = std::str::from_utf8(v) else {
                    return false;
                };
                !matches!(&c.contains, Some(s) if !v.contains(s.as_str()))
                    && !matches!(&c.regex, Some(re) if !re.is_match(v))
            })
        })
    }
}

fn compile(index: usize, r: &Rule) -> Result<Compiled, RuleError> {
    let bad = |field: &str, message: String| RuleError::Rule {
        index,
        id: Some(r.id.clone()),
        field: field.into(),
        message,
    };
    let m = &r.matcher;
    let referer_regex = match &m.referer_regex {
        Some(re) => Some(compile_regex(re).map_err(|e| bad("match.referer_regex", e))?),
        None => None,
    };
    let mut headers = Vec::with_capacity(m.headers.len());
    for (i, h) in m.headers.iter().enumerate() {
        let name = HeaderName::from_bytes(h.name.as_bytes())
            .map_err(|e| bad(&format!("match.headers[{i}].name"), e.to_string()))?;
        let regex = match &h.regex {
            Some(re) => {
                Some(compile_regex(re).map_err(|e| bad(&format!("match.headers[{i}].regex"), e))?)
            }
            None => None,
        };
        headers.push(HeaderCond {
            name,
            contains: h.contains.clone(),
            regex,
        });
    }
    let cond = Cond {
        path_prefix: m.path_prefix.clone(),
        path_equal: m.path_equal.clone(),
        host: m.host.clone(),
        method: m.method.clone(),
        referer_substr: m.referer_substr.clone(),
        referer_regex,
        headers,
    };
    let kind = match r.action {
        Action::Proxy => {
            let backend = match &r.backend {
                Some(b) => Some(parse_backend(b).map_err(|e| bad("backend", e))?),
                None => None,
            };
            let mut set_headers = Vec::with_capacity(r.set_headers.len());
            for (i, h) in r.set_headers.iter().enumerate() {
                let name = HeaderName::from_bytes(h.name.as_bytes())
                    .map_err(|e| bad(&format!("set_headers[{i}].name"), e.to_string()))?;
                let value = HeaderValue::from_str(&h.value)
                    .map_err(|e| bad(&format!("set_headers[{i}].value"), e.to_string()))?;
                set_headers.push((name, value));
            }
            Kind::Proxy {
                backend,
                strip: r.strip_prefix,
                set_headers,
            }
        }
        Action::Redirect => Kind::Redirect {
            to: r.redirect_to.clone(),
            to_prefix: r.redirect_to_prefix.clone(),
            status: StatusCode::from_u16(r.redirect_code.unwrap_or(302))
                .map_err(|e| bad("redirect_code", e.to_string()))?,
        },
    };
    Ok(Compiled {
        id: r.id.clone(),
        cond,
        kind,
    })
}

/// FNV-1a over the table's JSON: stable across Rust versions and restarts
/// (unlike `DefaultHasher`), so an ETag read before a restart still matches
/// the same table after it.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

fn etag_of(table: &Table) -> String {
    let json = serde_json::to_vec(table).unwrap_or_default();
    format!("\"{:016x}\"", fnv1a(&json))
}

#[cfg(test)]
mod tests;
