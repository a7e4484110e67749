//! One type for the web URLs stackctl reaches (the admin client's gateway
//! URL; remotes and blob endpoints as they move here), parsed by the `url`
//! crate (WHATWG rules) instead of string splitting, so `[::1]:8080`, a
//! default port, percent-escapes and case all mean what a browser and
//! reqwest take them to mean.

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
}
