//! Request paths, before any rule looks at them: normalisation, the
//! `/admin` check, prefix matching at a segment boundary and the target
//! sent on to the backend (pure). Both [`super::rules`] (checking a rule's
//! own path) and [`super::router`] (matching requests) use it, so it sits
//! below both.

use std::borrow::Cow;

/// Why a request path was refused before matching.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// `%2F` (or `%5C`, `%00`): an encoded separator could let a path mean
    /// one thing to us and another to the backend.
    #[error("encoded `/`, `\\` or NUL in the path")]
    EncodedSeparator,
    /// A `%` not followed by two hex digits.
    #[error("malformed percent-encoding in the path")]
    BadEscape,
    /// `..` above the root.
    #[error("`..` climbs above the root")]
    EscapesRoot,
    /// Not an origin-form path.
    #[error("the path must start with `/`")]
    NotAbsolute,
}

/// `/admin` and everything under `/admin/` belong to the gateway.
pub fn is_admin_path(path: &str) -> bool {
    path == "/admin" || path.starts_with("/admin/")
}

/// Normalise a request path before matching and forwarding: decode
/// percent-encoded unreserved characters (so `%2e%2e` is `..`), resolve `.`
/// and `..`, merge repeated slashes (as nginx does); refuse encoded
/// separators and paths that climb above the root. The backend receives the
/// normalised path, so what was matched is what is served.
///
/// Cost: linear in the path's length (issue 11: a target of 10,000 `../`
/// segments must cost microseconds). Each byte is looked at a constant
/// number of times: once while decoding, once while splitting into
/// segments, once while joining; `..` pops the segment stack in O(1)
/// (never a search back through the output or a re-scan from the start),
/// and nothing is formatted or allocated per escape or per segment beyond
/// the stack's amortised growth. The request-line limit
/// ([`super::limits::MAX_REQUEST_LINE`]) bounds the length anyway.
pub fn normalize_path(raw: &str) -> Result<Cow<'_, str>, PathError> {
    if raw.is_empty() {
        return Ok(Cow::Borrowed("/"));
    }
    if !raw.starts_with('/') {
        return Err(PathError::NotAbsolute);
    }
    // Fast path: the overwhelmingly common already-normal path.
    if !raw.contains('%') && !raw.contains("/.") && !raw.contains("//") {
        return Ok(Cow::Borrowed(raw));
    }
    let bytes = raw.as_bytes();
    let mut decoded = String::with_capacity(raw.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%' {
            let hex = |c: u8| (c as char).to_digit(16);
            let (hi, lo) = match (bytes.get(i + 1), bytes.get(i + 2)) {
                (Some(&h), Some(&l)) => (hex(h), hex(l)),
                _ => (None, None),
            };
            let (Some(hi), Some(lo)) = (hi, lo) else {
                return Err(PathError::BadEscape);
            };
            let v = (hi * 16 + lo) as u8;
            match v {
                b'/' | b'\\' | 0 => return Err(PathError::EncodedSeparator),
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                    decoded.push(v as char)
                }
                _ => {
                    const HEX: &[u8; 16] = b"0123456789ABCDEF";
                    decoded.push('%');
                    decoded.push(HEX[usize::from(v >> 4)] as char);
                    decoded.push(HEX[usize::from(v & 15)] as char);
                }
            }
            i += 3;
        } else {
            // Copy the run up to the next escape as text: a raw UTF-8 path
            // (`/café//x`) stays the same bytes. Pushing byte by byte as
            // `char` read each byte as Latin-1 and sent mojibake on. Both
            // ends of the run are ASCII (`%` or an escape's end), so they
            // are char boundaries.
            let end = raw[i..].find('%').map_or(raw.len(), |n| i + n);
            decoded.push_str(&raw[i..end]);
            i = end;
        }
    }
    // A trailing slash survives when the last segment is empty, `.` or
    // `..` (the latter two name a directory).
    let trailing = matches!(decoded.rsplit('/').next(), Some("" | "." | ".."));
    let mut segs: Vec<&str> = Vec::new();
    for seg in decoded.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                if segs.pop().is_none() {
                    return Err(PathError::EscapesRoot);
                }
            }
            s => segs.push(s),
        }
    }
    let mut out = String::with_capacity(decoded.len());
    for s in &segs {
        out.push('/');
        out.push_str(s);
    }
    if out.is_empty() || trailing {
        out.push('/');
    }
    Ok(Cow::Owned(out))
}

/// The request target for the backend: `path` (the normalised path, with
/// a prefix stripped if the rule says so) followed by the client's query.
/// `client_target` is the client's origin-form target (`path?query`, or
/// empty for another form); when its path is already `path`, it is
/// returned as it is, so the common case allocates nothing.
pub fn backend_target<'a>(
    client_target: &'a str,
    path: &'a str,
    query: Option<&str>,
) -> Cow<'a, str> {
    let client_path = client_target
        .split_once('?')
        .map_or(client_target, |(p, _)| p);
    if !client_target.is_empty() && client_path == path {
        return Cow::Borrowed(client_target);
    }
    match query {
        Some(q) => Cow::Owned(format!("{path}?{q}")),
        None => Cow::Borrowed(path),
    }
}

/// `path` is under `prefix`, at a segment boundary: `/foo` and `/foo/`
/// match `/foo/x`; neither matches `/foobar`.
pub fn prefix_matches(prefix: &str, path: &str) -> bool {
    path.starts_with(prefix)
        && (prefix.ends_with('/')
            || path.len() == prefix.len()
            || path.as_bytes().get(prefix.len()) == Some(&b'/'))
}

#[cfg(test)]
mod tests;
