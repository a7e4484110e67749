//! One parser for the URLs stackctl reaches (the admin client's gateway
//! URL, a persistence remote, where credentials may go), the `url` crate
//! (WHATWG rules) instead of string splitting, so `[::1]:8080`, a default
//! port, percent-escapes and case mean what reqwest and a browser take
//! them to mean.

use std::fmt;

/// An `http://` or `https://` URL with a host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct WebUrl(url::Url);

/// Why a text is not a usable web URL; the caller words the message (it
/// knows which flag or key the text came from).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Problem {
    /// Another scheme (`ftp://`, `ssh://`, …) or none.
    Scheme,
    /// The port is not a number from 0 to 65535; the port text as given.
    Port(String),
    /// `user:password@` in it.
    Credentials,
    /// No host, or something the URL grammar refuses.
    Invalid,
}

impl WebUrl {
    pub(crate) fn parse(text: &str) -> Result<WebUrl, Problem> {
        let url = match url::Url::parse(text) {
            Ok(u) => u,
            Err(url::ParseError::InvalidPort) => return Err(Problem::Port(port_text(text))),
            Err(url::ParseError::RelativeUrlWithoutBase) => return Err(Problem::Scheme),
            Err(_) => return Err(Problem::Invalid),
        };
        if !matches!(url.scheme(), "http" | "https") {
            return Err(Problem::Scheme);
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(Problem::Invalid);
        }
        Ok(WebUrl(url))
    }

    pub(crate) fn into_url(self) -> url::Url {
        self.0
    }
}

impl fmt::Display for WebUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.as_str())
    }
}

/// A persistence remote given as a URL: `http(s)://` or `git://` with a
/// host, a valid port and no credentials (a token in the URL would end up in
/// logs and errors: it goes in `persist.token`).
pub(crate) fn check_remote(text: &str) -> Result<(), Problem> {
    let url = url::Url::parse(text).map_err(|e| match e {
        url::ParseError::InvalidPort => Problem::Port(port_text(text)),
        _ => Problem::Invalid,
    })?;
    if !matches!(url.scheme(), "http" | "https" | "git") {
        return Err(Problem::Scheme);
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(Problem::Credentials);
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(Problem::Invalid);
    }
    Ok(())
}

/// Where a `scheme://` URL connects: its host (lowercase, an IPv6 address
/// without brackets) and port (the scheme's default when none is given).
/// `None` for text that is not such a URL or names no host.
pub(crate) fn origin(text: &str) -> Option<(String, u16)> {
    let url = url::Url::parse(text).ok()?;
    let host = match url.host()? {
        url::Host::Domain(d) => d.to_ascii_lowercase(),
        url::Host::Ipv4(ip) => ip.to_string(),
        url::Host::Ipv6(ip) => ip.to_string(),
    };
    if host.is_empty() {
        return None;
    }
    // The url crate knows the web's default ports; git's own are added.
    let default = match url.scheme() {
        "ssh" | "git+ssh" | "ssh+git" => 22,
        "git" => 9418,
        other => url::Url::parse(&format!("{other}://h"))
            .ok()
            .and_then(|u| u.port_or_known_default())
            .unwrap_or(0),
    };
    Some((host, url.port().unwrap_or(default)))
}

/// The port as the user typed it, for the message (the parser does not say).
fn port_text(text: &str) -> String {
    let rest = text.split_once("://").map_or(text, |(_, r)| r);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host_port = authority.rsplit('@').next().unwrap_or_default();
    let after_host = match host_port.rfind(']') {
        Some(close) => &host_port[close + 1..],
        None => host_port,
    };
    after_host
        .split_once(':')
        .map_or(String::new(), |(_, p)| p.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn web_urls_parse_with_default_ports_and_brackets() {
        let u = WebUrl::parse("https://User-Space.hf.space/x/").unwrap();
        assert_eq!(u.to_string(), "https://user-space.hf.space/x/");
        let u = WebUrl::parse("http://[::1]:8080").unwrap().into_url();
        assert_eq!((u.host_str(), u.port()), (Some("[::1]"), Some(8080)));
        let u = WebUrl::parse("https://h:443").unwrap().into_url();
        assert_eq!((u.port(), u.port_or_known_default()), (None, Some(443)));
    }

    #[test]
    fn other_schemes_bad_ports_and_hostless_urls_are_refused() {
        assert_eq!(WebUrl::parse("ftp://h/x"), Err(Problem::Scheme));
        assert_eq!(WebUrl::parse("ssh://git@h/o/r"), Err(Problem::Scheme));
        assert_eq!(WebUrl::parse("h:80/x"), Err(Problem::Scheme));
        assert_eq!(
            WebUrl::parse("http://host:port/x"),
            Err(Problem::Port("port".into()))
        );
        assert_eq!(
            WebUrl::parse("http://[::1]:70000"),
            Err(Problem::Port("70000".into()))
        );
        assert_eq!(WebUrl::parse("http://"), Err(Problem::Invalid));
        assert_eq!(WebUrl::parse("http://a b/"), Err(Problem::Invalid));
    }

    #[test]
    fn remotes_are_web_or_git_urls_without_credentials() {
        assert_eq!(check_remote("https://example.org/x/y.git"), Ok(()));
        assert_eq!(check_remote("git://example.org:9419/x.git"), Ok(()));
        assert_eq!(check_remote("http://[::1]:8080/r.git"), Ok(()));
        assert_eq!(
            check_remote("https://x-access-token:ghp_secret@github.com/o/r.git"),
            Err(Problem::Credentials)
        );
        assert_eq!(
            check_remote("https://tok@h/r.git"),
            Err(Problem::Credentials)
        );
        assert_eq!(check_remote("ftp://h/r.git"), Err(Problem::Scheme));
        assert_eq!(
            check_remote("https://h:notaport/r.git"),
            Err(Problem::Port("notaport".into()))
        );
        assert_eq!(check_remote("git:///r.git"), Err(Problem::Invalid));
    }

    #[test]
    fn origins_name_host_and_port_with_each_schemes_default() {
        let o = |u: &str| origin(u);
        assert_eq!(
            o("https://GitHub.com/o/r.git"),
            Some(("github.com".into(), 443))
        );
        assert_eq!(
            o("http://u:p@127.0.0.1:8080/x"),
            Some(("127.0.0.1".into(), 8080))
        );
        assert_eq!(o("http://[::1]/x"), Some(("::1".into(), 80)));
        assert_eq!(o("http://[::1]:81/x"), Some(("::1".into(), 81)));
        // The URL grammar (as reqwest reads it) skips the extra slash.
        assert_eq!(o("http:///x"), Some(("x".into(), 80)));
        assert_eq!(
            o("ssh://git@Host.example/x"),
            Some(("host.example".into(), 22))
        );
        assert_eq!(o("git://h/x"), Some(("h".into(), 9418)));
        assert_eq!(o("/srv/x"), None);
        assert_eq!(o("http://h:notaport/x"), None);
        assert_eq!(o("git:///x"), None);
    }
}
