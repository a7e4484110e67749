//! Header transforms for forwarding (pure): hop-by-hop removal, upgrade
//! detection, the X-Forwarded-* family, and a rule's `set_headers`.
//!
//! Incoming X-Forwarded-* headers are believed only when the TCP peer is in
//! `trusted_proxies` (as Caddy does): otherwise any client could claim to be
//! anyone, and the admin rate limit would be keyed on a forged address.

use std::net::IpAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use ipnet::IpNet;

/// The headers that describe one connection, not the message (RFC 9110 §7.6.1).
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

const X_FORWARDED_FOR: &str = "x-forwarded-for";
const X_FORWARDED_PROTO: &str = "x-forwarded-proto";
const X_FORWARDED_HOST: &str = "x-forwarded-host";
const X_FORWARDED_PORT: &str = "x-forwarded-port";
const X_FORWARDED_PREFIX: &str = "x-forwarded-prefix";
const X_REAL_IP: &str = "x-real-ip";

/// A connection-level header a rule may not set.
pub fn is_hop_by_hop(name: &HeaderName) -> bool {
    HOP_BY_HOP.contains(&name.as_str())
}

/// The protocol asked for by an upgrade request (`Connection: upgrade` +
/// `Upgrade: websocket`), if any.
pub fn upgrade_protocol(headers: &HeaderMap) -> Option<HeaderValue> {
    let wants = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
    if wants {
        headers.get(header::UPGRADE).cloned()
    } else {
        None
    }
}

/// Remove hop-by-hop headers, including those the `Connection` header names.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(*name);
    }
}

/// Who the client is and how it reached us, after applying trust.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forwarded {
    /// The client's address: the peer, or (behind a trusted proxy) the
    /// right-most untrusted address of X-Forwarded-For.
    pub client_ip: IpAddr,
    /// The X-Forwarded-For value to send.
    pub xff: String,
    /// `http` or `https`.
    pub proto: String,
    /// The host the client asked for.
    pub host: Option<String>,
    /// The port the client connected to.
    pub port: String,
}

fn trusted(ip: IpAddr, nets: &[IpNet]) -> bool {
    nets.iter().any(|n| n.contains(&ip))
}

fn first_value<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(',').next().unwrap_or("").trim())
        .filter(|v| !v.is_empty())
}

/// Work out the forwarded facts of a request from `peer` that arrived on
/// `local_port`.
pub fn forwarded(
    headers: &HeaderMap,
    uri_host: Option<&str>,
    peer: IpAddr,
    local_port: u16,
    trusted_proxies: &[IpNet],
) -> Forwarded {
    let host_header = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .or(uri_host)
        .map(str::to_string);
    if !trusted(peer, trusted_proxies) {
        return Forwarded {
            client_ip: peer,
            xff: peer.to_string(),
            proto: "http".into(),
            host: host_header,
            port: local_port.to_string(),
        };
    }
    let chain: Vec<&str> = headers
        .get_all(X_FORWARDED_FOR)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    let client_ip = chain
        .iter()
        .rev()
        .filter_map(|s| s.parse::<IpAddr>().ok())
        .find(|ip| !trusted(*ip, trusted_proxies))
        .unwrap_or(peer);
    let xff = if chain.is_empty() {
        peer.to_string()
    } else {
        format!("{}, {peer}", chain.join(", "))
    };
    let proto = match first_value(headers, X_FORWARDED_PROTO) {
        Some(p) if p.eq_ignore_ascii_case("https") => "https",
        Some(p) if p.eq_ignore_ascii_case("http") => "http",
        _ => "http",
    }
    .to_string();
    let host = first_value(headers, X_FORWARDED_HOST)
        .map(str::to_string)
        .or(host_header);
    let port = first_value(headers, X_FORWARDED_PORT)
        .filter(|p| p.parse::<u16>().is_ok())
        .map(str::to_string)
        .unwrap_or_else(|| {
            if proto == "https" {
                "443".into()
            } else {
                local_port.to_string()
            }
        });
    Forwarded {
        client_ip,
        xff,
        proto,
        host,
        port,
    }
}

fn set(headers: &mut HeaderMap, name: &'static str, value: &str) {
    match HeaderValue::from_str(value) {
        Ok(v) => {
            headers.insert(HeaderName::from_static(name), v);
        }
        Err(_) => {
            headers.remove(name);
        }
    }
}

/// Turn a client request's headers into the forwarded request's headers.
pub fn prepare_request(
    headers: &mut HeaderMap,
    upgrade: Option<&HeaderValue>,
    fwd: &Forwarded,
    forwarded_prefix: Option<&str>,
    set_headers: &[(HeaderName, HeaderValue)],
) {
    strip_hop_by_hop(headers);
    if let Some(proto) = upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, proto.clone());
    }
    // RFC 7239 `Forwarded` is not produced; an incoming one is dropped so
    // backends see only the facts we vouch for.
    headers.remove(header::FORWARDED);
    set(headers, X_FORWARDED_FOR, &fwd.xff);
    set(headers, X_FORWARDED_PROTO, &fwd.proto);
    match &fwd.host {
        Some(h) => set(headers, X_FORWARDED_HOST, h),
        None => {
            headers.remove(X_FORWARDED_HOST);
        }
    }
    set(headers, X_FORWARDED_PORT, &fwd.port);
    set(headers, X_REAL_IP, &fwd.client_ip.to_string());
    match forwarded_prefix {
        Some(p) => set(headers, X_FORWARDED_PREFIX, p),
        None => {
            headers.remove(X_FORWARDED_PREFIX);
        }
    }
    for (name, value) in set_headers {
        headers.insert(name.clone(), value.clone());
    }
}

/// Clean a backend response's headers before passing it on. A 101 keeps
/// `Connection`/`Upgrade`, which the client needs to see the switch.
pub fn prepare_response(headers: &mut HeaderMap, switching: bool) {
    let upgrade = switching
        .then(|| headers.get(header::UPGRADE).cloned())
        .flatten();
    strip_hop_by_hop(headers);
    if let Some(u) = upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, u);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    fn proxies() -> Vec<IpNet> {
        vec!["10.0.0.0/8".parse().unwrap()]
    }

    #[test]
    fn untrusted_peers_cannot_forge_forwarded_headers() {
        let h = map(&[
            ("host", "a.example:7860"),
            ("x-forwarded-for", "1.2.3.4"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "evil"),
            ("x-forwarded-port", "1"),
        ]);
        let f = forwarded(&h, None, "203.0.113.9".parse().unwrap(), 7860, &proxies());
        assert_eq!(
            f,
            Forwarded {
                client_ip: "203.0.113.9".parse().unwrap(),
                xff: "203.0.113.9".into(),
                proto: "http".into(),
                host: Some("a.example:7860".into()),
                port: "7860".into()
            }
        );
    }

    #[test]
    fn trusted_proxies_pass_the_client_through() {
        let h = map(&[
            ("host", "space.hf.space"),
            ("x-forwarded-for", "198.51.100.7, 10.1.1.1"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "space.hf.space"),
        ]);
        let f = forwarded(&h, None, "10.2.2.2".parse().unwrap(), 7860, &proxies());
        assert_eq!(f.client_ip, "198.51.100.7".parse::<IpAddr>().unwrap());
        assert_eq!(f.xff, "198.51.100.7, 10.1.1.1, 10.2.2.2");
        assert_eq!(
            (f.proto.as_str(), f.host.as_deref(), f.port.as_str()),
            ("https", Some("space.hf.space"), "443")
        );
        // A spoofed left-most entry does not win over the right-most untrusted one.
        let h = map(&[("x-forwarded-for", "6.6.6.6, 198.51.100.7")]);
        let f = forwarded(&h, Some("h"), "10.2.2.2".parse().unwrap(), 80, &proxies());
        assert_eq!(f.client_ip, "198.51.100.7".parse::<IpAddr>().unwrap());
        assert_eq!(
            (f.proto.as_str(), f.host.as_deref(), f.port.as_str()),
            ("http", Some("h"), "80")
        );
    }

    #[test]
    fn request_headers_are_rewritten() {
        let mut h = map(&[
            ("connection", "keep-alive, x-secret"),
            ("x-secret", "1"),
            ("keep-alive", "5"),
            ("te", "trailers"),
            ("forwarded", "for=1.1.1.1"),
            ("x-forwarded-prefix", "/forged"),
            ("x-custom", "client"),
            ("accept", "*/*"),
        ]);
        let fwd = Forwarded {
            client_ip: "127.0.0.1".parse().unwrap(),
            xff: "127.0.0.1".into(),
            proto: "http".into(),
            host: Some("h:1".into()),
            port: "1".into(),
        };
        let set = [(
            HeaderName::from_static("x-custom"),
            HeaderValue::from_static("rule"),
        )];
        prepare_request(&mut h, None, &fwd, Some("/gemini"), &set);
        let mut got: Vec<String> = h
            .iter()
            .map(|(k, v)| format!("{k}: {}", v.to_str().unwrap()))
            .collect();
        got.sort();
        assert_eq!(
            got,
            [
                "accept: */*",
                "x-custom: rule",
                "x-forwarded-for: 127.0.0.1",
                "x-forwarded-host: h:1",
                "x-forwarded-port: 1",
                "x-forwarded-prefix: /gemini",
                "x-forwarded-proto: http",
                "x-real-ip: 127.0.0.1",
            ]
        );
    }

    #[test]
    fn upgrades_are_detected_and_kept() {
        let h = map(&[
            ("connection", "keep-alive, Upgrade"),
            ("upgrade", "websocket"),
        ]);
        let up = upgrade_protocol(&h).unwrap();
        assert_eq!(up, "websocket");
        assert_eq!(upgrade_protocol(&map(&[("upgrade", "websocket")])), None);
        let mut req = h.clone();
        let fwd = Forwarded {
            client_ip: "127.0.0.1".parse().unwrap(),
            xff: "x".into(),
            proto: "http".into(),
            host: None,
            port: "1".into(),
        };
        prepare_request(&mut req, Some(&up), &fwd, None, &[]);
        assert_eq!(req.get("connection").unwrap(), "upgrade");
        assert_eq!(req.get("upgrade").unwrap(), "websocket");
        let mut resp = map(&[
            ("connection", "Upgrade"),
            ("upgrade", "websocket"),
            ("sec-websocket-accept", "x"),
        ]);
        prepare_response(&mut resp, true);
        assert_eq!(resp.len(), 3);
        prepare_response(&mut resp, false);
        assert_eq!(resp.len(), 1);
    }
}
