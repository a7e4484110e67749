//! The admin API's request bodies and query strings, checked (pure). Every
//! refusal names the field and says what to send instead.

use std::path::{Component, Path, PathBuf};

use serde_json::Value;

/// The longest `at` accepted (a commit id is 40 characters, a date 20).
const MAX_AT: usize = 100;
/// The most paths one restore names.
const MAX_PATHS: usize = 1000;
/// The longest path accepted (Linux's `PATH_MAX`).
const MAX_PATH: usize = 4096;
/// Snapshots per page unless asked otherwise, and at most.
pub const DEFAULT_LIMIT: usize = 50;
/// See [`DEFAULT_LIMIT`].
pub const MAX_LIMIT: usize = 500;

/// `POST /admin/persist/restore`, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restore {
    /// A commit id, a unique prefix, or a UTC date.
    pub at: String,
    /// Only these paths; empty: every persisted path.
    pub paths: Vec<PathBuf>,
    /// Only say what would change.
    pub dry_run: bool,
}

/// Check a restore body. A real restore (not `dry_run`) needs `confirm`
/// equal to `at`: typed by a person, not defaulted by a client.
pub fn restore(body: &Value) -> Result<Restore, String> {
    let Value::Object(obj) = body else {
        return Err(
            "expected a JSON object like {\"at\": \"<snapshot id or date>\", \"dry_run\": true}"
                .into(),
        );
    };
    for key in obj.keys() {
        if !matches!(key.as_str(), "at" | "paths" | "dry_run" | "confirm") {
            return Err(format!(
                "unknown field `{key}`; expected `at`, `paths`, `dry_run` and `confirm`"
            ));
        }
    }
    let at = match obj.get("at") {
        Some(Value::String(s)) if !s.trim().is_empty() => s.trim().to_string(),
        _ => {
            return Err("`at`: give the snapshot to restore, as a commit id from `GET /admin/persist/snapshots` or a UTC date like \"2026-01-31 12:00\"".into())
        }
    };
    if at.len() > MAX_AT || at.chars().any(char::is_control) {
        return Err(format!(
            "`at`: expected a commit id or a date (at most {MAX_AT} characters)"
        ));
    }
    let paths = match obj.get("paths") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(a)) if a.len() <= MAX_PATHS => a
            .iter()
            .map(|v| match v {
                Value::String(s) => path(s),
                _ => Err("`paths`: expected a list of absolute paths (strings)".to_string()),
            })
            .collect::<Result<_, _>>()?,
        Some(Value::Array(_)) => return Err(format!("`paths`: at most {MAX_PATHS} paths")),
        Some(_) => return Err("`paths`: expected a list of absolute paths".into()),
    };
    let dry_run = match obj.get("dry_run") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err("`dry_run`: expected true or false".into()),
    };
    let confirm = match obj.get("confirm") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.trim()),
        Some(_) => return Err("`confirm`: expected a string (the same as `at`)".into()),
    };
    if !dry_run && confirm != Some(at.as_str()) {
        return Err(format!(
            "a restore overwrites the data on disk: add \"confirm\": {} (the same string as `at`) to go ahead, or send \"dry_run\": true to see what would change",
            Value::String(at.clone())
        ));
    }
    Ok(Restore { at, paths, dry_run })
}

/// An absolute path without `.`/`..` pieces (which could leave the
/// persisted roots after the check), trailing slashes dropped.
fn path(s: &str) -> Result<PathBuf, String> {
    let p = Path::new(s);
    if s.len() > MAX_PATH || s.contains('\0') || !p.is_absolute() {
        return Err(format!(
            "`paths`: `{}` is not an absolute path; give persisted paths like \"/data/bot\"",
            s.escape_debug()
        ));
    }
    if p.components()
        .any(|c| matches!(c, Component::ParentDir | Component::CurDir))
    {
        return Err(format!(
            "`paths`: `{}` has `.` or `..` in it; give the path plainly",
            s.escape_debug()
        ));
    }
    Ok(p.components().collect())
}

/// `GET /admin/persist/snapshots?limit=N&after=<id>`, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    /// Snapshots per page.
    pub limit: usize,
    /// Start after this snapshot id (the previous page's `next`).
    pub after: Option<String>,
}

/// Check a snapshots query string (without the `?`).
pub fn page(query: Option<&str>) -> Result<Page, String> {
    let mut out = Page {
        limit: DEFAULT_LIMIT,
        after: None,
    };
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match key {
            "limit" => {
                out.limit = value
                    .parse::<usize>()
                    .ok()
                    .filter(|n| (1..=MAX_LIMIT).contains(n))
                    .ok_or_else(|| format!("`limit`: expected a number from 1 to {MAX_LIMIT}"))?;
            }
            "after" => {
                if value.is_empty()
                    || value.len() > 64
                    || !value.chars().all(|c| c.is_ascii_hexdigit())
                {
                    return Err(
                        "`after`: expected a snapshot id (the `next` of the previous page)".into(),
                    );
                }
                out.after = Some(value.to_ascii_lowercase());
            }
            other => {
                return Err(format!(
                    "unknown parameter `{}`; expected `limit` and `after`",
                    other.escape_debug()
                ))
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn restore_bodies() {
        let ok = restore(&json!({"at": "abc123", "dry_run": true})).unwrap();
        assert_eq!(
            ok,
            Restore {
                at: "abc123".into(),
                paths: vec![],
                dry_run: true
            }
        );
        let ok =
            restore(&json!({"at": "abc123", "confirm": "abc123", "paths": ["/data/a/"]})).unwrap();
        assert!(!ok.dry_run);
        assert_eq!(ok.paths, [PathBuf::from("/data/a")]);
        // (body, a piece of the error)
        let bad: &[(Value, &str)] = &[
            (json!([]), "JSON object"),
            (json!({"dry_run": true}), "`at`"),
            (json!({"at": "  ", "dry_run": true}), "`at`"),
            (json!({"at": "x".repeat(200), "dry_run": true}), "`at`"),
            (json!({"at": "a\nb", "dry_run": true}), "`at`"),
            (json!({"at": "abc"}), "\"confirm\": \"abc\""),
            (
                json!({"at": "abc", "confirm": "abd"}),
                "\"confirm\": \"abc\"",
            ),
            (json!({"at": "abc", "dry_run": false}), "confirm"),
            (json!({"at": "abc", "dry_run": "yes"}), "`dry_run`"),
            (
                json!({"at": "abc", "dry_run": true, "force": true}),
                "unknown field `force`",
            ),
            (
                json!({"at": "abc", "dry_run": true, "paths": "/data"}),
                "`paths`",
            ),
            (
                json!({"at": "abc", "dry_run": true, "paths": [1]}),
                "`paths`",
            ),
            (
                json!({"at": "abc", "dry_run": true, "paths": ["data/a"]}),
                "absolute",
            ),
            (
                json!({"at": "abc", "dry_run": true, "paths": ["/data/../etc"]}),
                "`..`",
            ),
            (
                json!({"at": "abc", "dry_run": true, "paths": ["/data/\u{0}x"]}),
                "absolute",
            ),
            (json!({"at": "abc", "confirm": 1}), "`confirm`"),
        ];
        for (body, want) in bad {
            let e = restore(body).unwrap_err();
            assert!(e.contains(want), "{body}: {e}");
        }
    }

    #[test]
    fn snapshot_pages() {
        assert_eq!(
            page(None).unwrap(),
            Page {
                limit: DEFAULT_LIMIT,
                after: None
            }
        );
        assert_eq!(
            page(Some("limit=2&after=ABC1")).unwrap(),
            Page {
                limit: 2,
                after: Some("abc1".into())
            }
        );
        for bad in [
            "limit=0",
            "limit=501",
            "limit=x",
            "after=",
            "after=zz",
            "x=1",
        ] {
            assert!(page(Some(bad)).is_err(), "{bad}");
        }
    }
}
