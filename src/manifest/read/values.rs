//! Scalar parsers and small helpers shared by the sections.

use super::*;

/// `a`, `b` → "`a`, `b`".
pub(super) fn backticked(names: &[String], sep: &str) -> String {
    names
        .iter()
        .map(|n| format!("`{n}`"))
        .collect::<Vec<_>>()
        .join(sep)
}

pub(super) fn valid_var_name(n: &str) -> bool {
    !n.is_empty()
        && !n.starts_with(|c: char| c.is_ascii_digit())
        && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

pub(super) fn valid_service_name(n: &str) -> bool {
    !n.is_empty()
        && n.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// A size in bytes (`50MiB`, `52428800`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Size(pub u64);

impl FromText for Size {
    const WHAT: &'static str = "a size like `50MiB`";

    fn from_text(t: &str) -> Result<Size, String> {
        parse_size(t).map(Size)
    }
}

/// A signal's number (`TERM`, `SIGTERM` or `15`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Signal(pub i32);

impl FromText for Signal {
    const WHAT: &'static str = "a signal like `SIGTERM`";

    fn from_text(t: &str) -> Result<Signal, String> {
        let t = t.trim();
        if let Ok(n) = t.parse::<i32>() {
            return nix::sys::signal::Signal::try_from(n)
                .map(|s| Signal(s as i32))
                .map_err(|_| format!("`{t}` is not a signal number"));
        }
        let upper = t.to_ascii_uppercase();
        let name = if upper.starts_with("SIG") {
            upper
        } else {
            format!("SIG{upper}")
        };
        nix::sys::signal::Signal::from_str(&name)
            .map(|s| Signal(s as i32))
            .map_err(|_| format!("unknown signal `{t}` (e.g. TERM, INT, QUIT, HUP)"))
    }
}

/// Remove `.` and `..` components without touching the filesystem.
pub(super) fn normalize(p: &Path) -> PathBuf {
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

/// `enabled:` semantics: empty, `false`, `0`, `no`, `off` switch off.
pub fn truthy(t: &str) -> bool {
    !matches!(
        t.trim().to_ascii_lowercase().as_str(),
        "" | "false" | "0" | "no" | "off"
    )
}
