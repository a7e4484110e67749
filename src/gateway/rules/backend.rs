//! Backend addresses in rules and the policy that limits where a rule may
//! point (pure).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use ipnet::IpNet;
use url::{Host, Position};

use crate::weburl::{Problem, WebUrl};

/// Which backends an admin (or the manifest) may point a rule at, so the
/// gateway cannot be turned into an open proxy into the network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendPolicy {
    /// Networks a backend address must be inside.
    pub allow: Vec<IpNet>,
    /// The gateway's own listen address: pointing a rule at it would loop.
    pub own_listen: Option<SocketAddr>,
}

impl Default for BackendPolicy {
    /// Loopback only (`127.0.0.0/8`, `::1`), the manifest's default.
    fn default() -> Self {
        BackendPolicy {
            allow: loopback_nets(),
            own_listen: None,
        }
    }
}

/// `127.0.0.0/8` and `::1/128`.
pub fn loopback_nets() -> Vec<IpNet> {
    vec![
        IpNet::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 0)), 8).unwrap_or_default(),
        IpNet::new(IpAddr::V6(Ipv6Addr::LOCALHOST), 128).unwrap_or_default(),
    ]
}

impl BackendPolicy {
    /// The policy for a gateway listening on `listen` with `allow_backends`
    /// (loopback when empty).
    pub fn new(allow: &[IpNet], listen: SocketAddr) -> Self {
        BackendPolicy {
            allow: if allow.is_empty() {
                loopback_nets()
            } else {
                allow.to_vec()
            },
            own_listen: Some(listen),
        }
    }

    /// Parse `url` and check it against the policy.
    pub fn check(&self, url: &str) -> Result<Backend, String> {
        let b = parse_backend(url)?;
        let ip = b.addr.ip();
        if ip.is_unspecified() {
            return Err(format!(
                "`{ip}` is not a backend address; use `127.0.0.1` for a local service"
            ));
        }
        if is_link_local(ip) {
            return Err(format!(
                "`{ip}` is link-local (cloud metadata lives there) and is always refused"
            ));
        }
        if !self.allow.iter().any(|n| n.contains(&ip)) {
            let nets: Vec<String> = self.allow.iter().map(|n| n.to_string()).collect();
            return Err(format!(
                "`{ip}` is outside `allow_backends` ({}); add its network to `gateway.allow_backends` if it is really a backend",
                nets.join(", ")
            ));
        }
        if let Some(own) = self.own_listen {
            let same_host = own.ip().is_unspecified()
                || own.ip() == ip
                || (ip.is_loopback() && own.ip().is_loopback());
            if own.port() != 0 && b.addr.port() == own.port() && same_host {
                return Err(format!(
                    "`{}` is the gateway's own listen address; a rule pointing at it would loop",
                    b.addr
                ));
            }
        }
        Ok(b)
    }
}

fn is_link_local(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_link_local(),
        IpAddr::V6(v6) => (v6.segments()[0] & 0xffc0) == 0xfe80,
    }
}

/// A parsed backend: where to connect, and how to write it in a URI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backend {
    /// The address connected to (`localhost` is `127.0.0.1`: no DNS lookups,
    /// and no surprise `::1` when the service listens on IPv4 only).
    pub addr: SocketAddr,
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "http://{}", self.addr)
    }
}

/// Parse `http://HOST[:PORT][/]` where HOST is an IP address or
/// `localhost`, by the crate's one URL parser ([`WebUrl`], WHATWG rules as
/// reqwest reads them): `127.1` is `127.0.0.1`, `http://h:` has the
/// default port, `/a/..` is no path.
pub fn parse_backend(url: &str) -> Result<Backend, String> {
    let url = url.trim();
    let not_a_url = || format!("`{url}` is not a URL; write it as `http://127.0.0.1:PORT`");
    match url.split_once("://") {
        Some((scheme, _)) if scheme.eq_ignore_ascii_case("http") => {}
        Some((scheme, _)) if scheme.eq_ignore_ascii_case("https") => {
            return Err(
                "only `http://` backends are supported (the gateway talks plain HTTP to local services)"
                    .into(),
            )
        }
        _ => return Err(not_a_url()),
    }
    // The URL grammar drops tabs and line breaks anywhere in a URL: in a
    // backend they are a typo or an injection, never meant.
    if url.contains(|c: char| c.is_ascii_control()) {
        return Err(not_a_url());
    }
    let authority = authority(url);
    let parsed = match WebUrl::parse(url) {
        Ok(u) => u.into_url(),
        Err(Problem::Port(p)) => return Err(not_a_port(&p)),
        Err(Problem::Scheme) => return Err(not_a_url()),
        Err(Problem::Credentials) => return Err(CREDENTIALS.into()),
        Err(Problem::Invalid) => return Err(bad_host(authority)),
    };
    let path = &parsed[Position::BeforePath..];
    if path != "/" {
        return Err(format!(
            "a backend is `http://HOST:PORT` without a path (got path `{path}`); use `strip_prefix` or `set_headers` instead"
        ));
    }
    // `@` alone (an empty user name) is no credential to the parser.
    if authority.contains('@') || !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(CREDENTIALS.into());
    }
    let port = match parsed.port() {
        Some(0) => return Err(not_a_port("0")),
        Some(p) => p,
        None => 80,
    };
    let ip = match parsed.host() {
        Some(Host::Ipv4(ip)) => IpAddr::V4(ip),
        Some(Host::Ipv6(ip)) => IpAddr::V6(ip),
        // The parser lowercases host names.
        Some(Host::Domain("localhost")) => IpAddr::V4(Ipv4Addr::LOCALHOST),
        Some(Host::Domain(host)) => return Err(not_an_ip(host)),
        None => return Err(bad_host(authority)),
    };
    Ok(Backend {
        addr: SocketAddr::new(ip, port),
    })
}

const CREDENTIALS: &str = "a backend URL may not contain a user name or password";

fn not_a_port(p: &str) -> String {
    format!("`{p}` is not a port number (1-65535)")
}

fn not_an_ip(host: &str) -> String {
    format!("`{host}` must be an IP address or `localhost` (host names are not resolved, so a rule cannot follow DNS elsewhere)")
}

/// The authority as written, for messages about it (the parser says
/// only what kind of thing it refused, not where).
fn authority(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    rest.split(['/', '?', '#']).next().unwrap_or_default()
}

/// The message for a host the parser refused: a broken IPv6 bracket, or
/// something that is no IP address (an empty host, `1.2.3.256`).
fn bad_host(authority: &str) -> String {
    if let Some(v6) = authority.strip_prefix('[') {
        return match v6.split_once(']') {
            None => format!("`{authority}`: unclosed `[` in IPv6 address"),
            Some((_, after)) if !after.is_empty() && !after.starts_with(':') => {
                format!("`{authority}`: expected `:PORT` after `]`")
            }
            Some((host, _)) => not_an_ip(host),
        };
    }
    let host = authority.rsplit_once(':').map_or(authority, |(h, _)| h);
    not_an_ip(host)
}
