//! Backend addresses in rules and the policy that limits where a rule may
//! point (pure).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use ipnet::IpNet;

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

/// Parse `http://HOST[:PORT][/]` where HOST is an IP literal or `localhost`.
pub fn parse_backend(url: &str) -> Result<Backend, String> {
    let url = url.trim();
    let rest = match url.split_once("://") {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("http") => rest,
        Some((scheme, _)) if scheme.eq_ignore_ascii_case("https") => {
            return Err(
                "only `http://` backends are supported (the gateway talks plain HTTP to local services)"
                    .into(),
            )
        }
        _ => return Err(format!("`{url}` is not a URL; write it as `http://127.0.0.1:PORT`")),
    };
    let (authority, path) = match rest.find(['/', '?', '#']) {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    if !(path.is_empty() || path == "/") {
        return Err(format!(
            "a backend is `http://HOST:PORT` without a path (got path `{path}`); use `strip_prefix` or `set_headers` instead"
        ));
    }
    if authority.contains('@') {
        return Err("a backend URL may not contain a user name or password".into());
    }
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (h, after) = v6
            .split_once(']')
            .ok_or_else(|| format!("`{authority}`: unclosed `[` in IPv6 address"))?;
        let port = match after {
            "" => None,
            p => Some(
                p.strip_prefix(':')
                    .ok_or_else(|| format!("`{authority}`: expected `:PORT` after `]`"))?,
            ),
        };
        (h, port)
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    let port: u16 = match port {
        None => 80,
        Some(p) => p
            .parse()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| format!("`{p}` is not a port number (1-65535)"))?,
    };
    let ip: IpAddr = if host.eq_ignore_ascii_case("localhost") {
        IpAddr::V4(Ipv4Addr::LOCALHOST)
    } else {
        host.parse().map_err(|_| {
            format!("`{host}` must be an IP address or `localhost` (host names are not resolved, so a rule cannot follow DNS elsewhere)")
        })?
    };
    Ok(Backend {
        addr: SocketAddr::new(ip, port),
    })
}
