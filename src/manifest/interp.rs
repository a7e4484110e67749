//! `${NAME}` interpolation, as docker-compose users know it.
//!
//! Supported: `${NAME}`, `${NAME:-default}` (unset or empty → default),
//! `${NAME-default}` (unset → default), `${NAME:?message}` /
//! `${NAME?message}` (an error when unset/empty), and `$$` for a literal
//! `$`. A `$` not followed by `{` or `$` is kept as it is, so commands like
//! `sh -c 'echo $HOME'` work without escaping. Defaults may themselves
//! contain `${...}`. A bare `${NAME}` that is unset reads as blank, as in
//! compose, and is reported to the caller, which warns about it.

/// Interpolate `text`, looking names up with `lookup`. Also reports which
/// names were used, so callers can tell a value that came from a secret,
/// and which bare `${NAME}`s were unset and so came out blank (`unset`):
/// nothing the manifest wrote says blank is meant there, so the reader
/// warns, as docker-compose does. An operator (`:-`, `-`, `:?`, `?`)
/// says what an unset name means, so those never land in `unset`.
pub fn interpolate(
    text: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
    used: &mut Vec<String>,
    unset: &mut Vec<String>,
) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(body_start) = after.strip_prefix('{') {
            let end =
                matching_brace(body_start).ok_or_else(|| format!("unclosed `${{` in `{text}`"))?;
            let body = &body_start[..end];
            out.push_str(&expand(body, lookup, used, unset)?);
            rest = &body_start[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// Index of the `}` closing an expression, allowing nested `${...}`.
fn matching_brace(s: &str) -> Option<usize> {
    let mut depth = 0usize;
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'$' if bytes.get(i + 1) == Some(&b'{') => {
                depth += 1;
                i += 1;
            }
            b'}' if depth == 0 => return Some(i),
            b'}' => depth -= 1,
            _ => {}
        }
        i += 1;
    }
    None
}

fn expand(
    body: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
    used: &mut Vec<String>,
    unset: &mut Vec<String>,
) -> Result<String, String> {
    let name_len = body
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(body.len());
    let (name, op) = body.split_at(name_len);
    if name.is_empty() {
        return Err(format!("`${{{body}}}` does not start with a variable name"));
    }
    used.push(name.to_string());
    let value = lookup(name);
    let set = value.is_some();
    let non_empty = value.as_deref().is_some_and(|v| !v.is_empty());
    let (kind, arg) = if op.is_empty() {
        ("", "")
    } else if let Some(a) = op.strip_prefix(":-") {
        (":-", a)
    } else if let Some(a) = op.strip_prefix(":?") {
        (":?", a)
    } else if let Some(a) = op.strip_prefix('-') {
        ("-", a)
    } else if let Some(a) = op.strip_prefix('?') {
        ("?", a)
    } else {
        return Err(format!(
            "`${{{body}}}`: unsupported operator (use `${{NAME}}`, `${{NAME:-default}}` or `${{NAME:?message}}`)"
        ));
    };
    match kind {
        "" if !set => {
            unset.push(name.to_string());
            Ok(String::new())
        }
        ":-" if non_empty => Ok(value.unwrap_or_default()),
        "-" if set => Ok(value.unwrap_or_default()),
        ":-" | "-" => interpolate(arg, lookup, used, unset),
        ":?" if !non_empty => Err(required_message(name, arg)),
        "?" if !set => Err(required_message(name, arg)),
        _ => Ok(value.unwrap_or_default()),
    }
}

fn required_message(name: &str, message: &str) -> String {
    if message.is_empty() {
        format!("`{name}` must be set")
    } else {
        format!("`{name}` must be set: {message}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(text: &str) -> Result<String, String> {
        let lookup = |n: &str| match n {
            "SET" => Some("value".to_string()),
            "EMPTY" => Some(String::new()),
            _ => None,
        };
        interpolate(text, &lookup, &mut Vec::new(), &mut Vec::new())
    }

    #[test]
    fn expands_like_compose() {
        let cases = [
            ("${SET}", "value"),
            ("a-${SET}-b", "a-value-b"),
            ("${UNSET}", ""),
            ("${UNSET:-dflt}", "dflt"),
            ("${EMPTY:-dflt}", "dflt"),
            ("${EMPTY-dflt}", ""),
            ("${UNSET-dflt}", "dflt"),
            ("${UNSET:-${SET}}", "value"),
            ("$$HOME", "$HOME"),
            ("echo $HOME", "echo $HOME"),
            ("cost: 5$", "cost: 5$"),
        ];
        for (text, want) in cases {
            assert_eq!(run(text).unwrap(), want, "{text}");
        }
    }

    #[test]
    fn required_and_malformed_are_errors() {
        assert_eq!(
            run("${UNSET:?set it}").unwrap_err(),
            "`UNSET` must be set: set it"
        );
        assert_eq!(run("${EMPTY:?}").unwrap_err(), "`EMPTY` must be set");
        assert!(run("${EMPTY?}").is_ok());
        assert!(run("${SET").unwrap_err().contains("unclosed"));
        assert!(run("${}").unwrap_err().contains("variable name"));
        assert!(run("${SET/x}")
            .unwrap_err()
            .contains("unsupported operator"));
    }

    #[test]
    fn reports_used_names() {
        let mut used = Vec::new();
        interpolate("${A:-${B}}", &|_| None, &mut used, &mut Vec::new()).unwrap();
        assert_eq!(used, ["A", "B"]);
    }

    /// Only a bare `${NAME}` that is unset counts: set-but-empty is what
    /// someone set, and every operator says what unset means.
    #[test]
    fn reports_bare_names_that_were_unset() {
        let lookup = |n: &str| match n {
            "SET" => Some("value".to_string()),
            "EMPTY" => Some(String::new()),
            _ => None,
        };
        let unset_in = |text: &str| {
            let mut unset = Vec::new();
            let _ = interpolate(text, &lookup, &mut Vec::new(), &mut unset);
            unset
        };
        assert_eq!(unset_in("${A}/${SET}/${EMPTY}/${B}"), ["A", "B"]);
        for quiet in [
            "${A:-}",
            "${A-x}",
            "${A:-x}",
            "${A:?msg}",
            "${A?}",
            "$${A}",
            "$A",
            "${SET:-${A}}",
            "${SET-${A}}",
        ] {
            assert_eq!(unset_in(quiet), Vec::<String>::new(), "{quiet}");
        }
        // A default is expanded only when it is taken, and then its own
        // bare names count.
        assert_eq!(unset_in("${A:-${B}}"), ["B"]);
        assert_eq!(unset_in("${EMPTY:-${B}}"), ["B"]);
    }
}
