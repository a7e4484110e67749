//! The wire rule model and its lenient reading of the original's files
//! (see the module docs of [`super`]).

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
    pub(super) fn is_empty(&self) -> bool {
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
    #[serde(default, deserialize_with = "null_as_default")]
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
    #[serde(default, rename = "match", deserialize_with = "null_as_default")]
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

/// `null` reads as the default, as a missing key does.
fn null_as_default<'de, D: Deserializer<'de>, T: Deserialize<'de> + Default>(
    d: D,
) -> Result<T, D::Error> {
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
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
