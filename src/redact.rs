//! The one place that hides credentials in URLs before a URL reaches a
//! message, a log line or a file (issue 12 item 5).
//!
//! A URL may carry credentials in two places: the user-info
//! (`https://user:TOKEN@host/…`, `ssh://user:pass@host/…`) and the query
//! (`https://host/repo.git?access_token=…`). Both are replaced by `***`;
//! a fragment is dropped. Everything else (scheme, host, port, path) stays,
//! so the message still says which server was meant.

/// `u` with its user-info replaced by `***@` and its query by `?***`
/// (a fragment is dropped). Text that is not a `scheme://` URL comes back
/// as it is.
pub fn url(u: &str) -> String {
    let Some((scheme, rest)) = split_scheme(u) else {
        return u.to_string();
    };
    let (before_fragment, _) = rest.split_once('#').unwrap_or((rest, ""));
    let (base, query) = match before_fragment.split_once('?') {
        Some((b, _)) => (b, "?***"),
        None => (before_fragment, ""),
    };
    let authority_end = base.find('/').unwrap_or(base.len());
    let (authority, path) = base.split_at(authority_end);
    let authority = match authority.rsplit_once('@') {
        Some((_, host)) => format!("***@{host}"),
        None => authority.to_string(),
    };
    format!("{scheme}://{authority}{path}{query}")
}

/// `text` with every `scheme://…` URL in it redacted as [`url()`] does. For
/// free text that may quote a URL: a transport's error message, a server's
/// answer.
pub fn text(t: &str) -> String {
    let mut out = String::with_capacity(t.len());
    let mut rest = t;
    while let Some(i) = rest.find("://") {
        // The scheme: the letters (and `+-.`) right before `://`.
        let start = rest[..i]
            .rfind(|c: char| !(c.is_ascii_alphanumeric() || "+-.".contains(c)))
            .map_or(0, |j| j + 1);
        if start == i {
            out.push_str(&rest[..i + 3]);
            rest = &rest[i + 3..];
            continue;
        }
        // The URL ends at whitespace or a quote.
        let end = rest[i..]
            .find(|c: char| c.is_whitespace() || "'\"`<>".contains(c))
            .map_or(rest.len(), |j| i + j);
        out.push_str(&rest[..start]);
        out.push_str(&url(&rest[start..end]));
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

/// Does `u` carry user-info (`user@` or `user:password@`)?
pub fn has_userinfo(u: &str) -> bool {
    split_scheme(u).is_some_and(|(_, rest)| authority(rest).contains('@'))
}

/// Does `u` carry a query string (`?…`)?
pub fn has_query(u: &str) -> bool {
    split_scheme(u).is_some_and(|(_, rest)| rest.split('#').next().unwrap_or("").contains('?'))
}

fn split_scheme(u: &str) -> Option<(&str, &str)> {
    let (scheme, rest) = u.split_once("://")?;
    let ok = !scheme.is_empty()
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c));
    ok.then_some((scheme, rest))
}

/// The authority of what follows `scheme://`: up to the first `/`, `?` or `#`.
fn authority(rest: &str) -> &str {
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    &rest[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_lose_userinfo_and_query() {
        let table = [
            ("https://h/p", "https://h/p"),
            ("https://a:b@h/p", "https://***@h/p"),
            ("ssh://git:hunter2@h:22/o/r.git", "ssh://***@h:22/o/r.git"),
            (
                "https://h/o/r.git?access_token=ghp_x",
                "https://h/o/r.git?***",
            ),
            ("https://u:p@h?t=1#frag", "https://***@h?***"),
            ("https://h/p#frag", "https://h/p"),
            ("/srv/backup.git", "/srv/backup.git"),
            ("owner/repo", "owner/repo"),
        ];
        for (input, want) in table {
            assert_eq!(url(input), want, "{input}");
        }
    }

    #[test]
    fn urls_inside_text_are_redacted() {
        assert_eq!(
            text("failed to fetch 'https://x:ghp_s@h/r.git?k=v': 401"),
            "failed to fetch 'https://***@h/r.git?***': 401"
        );
        assert_eq!(
            text("from ssh://u:pw@h/x and http://h/y?t=1 done"),
            "from ssh://***@h/x and http://h/y?*** done"
        );
        assert_eq!(text("no url here :// at all"), "no url here :// at all");
    }

    #[test]
    fn credentials_are_detected() {
        assert!(has_userinfo("https://a:b@h/p"));
        assert!(has_userinfo("ssh://git@h/p"));
        assert!(!has_userinfo("https://h/p@v"));
        assert!(has_query("https://h/p?x=1"));
        assert!(!has_query("https://h/p#?x"));
        assert!(!has_query("/srv/a?b"));
    }
}
