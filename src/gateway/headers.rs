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
static HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

// Built at compile time: naming a header by `&str` parses it on every use.
// Statics, not consts, so that the forwarded headers can be lent out.
static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static X_FORWARDED_PORT: HeaderName = HeaderName::from_static("x-forwarded-port");
static X_FORWARDED_PREFIX: HeaderName = HeaderName::from_static("x-forwarded-prefix");
static X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");

/// A connection-level header a rule may not set.
pub fn is_hop_by_hop(name: &HeaderName) -> bool {
    HOP_BY_HOP.contains(name)
}

/// The request headers, as hyper parsed them (`HeaderMap`) or as the
/// gateway's own HTTP/1 front end parsed them (httparse's slices of the
/// connection's read buffer, names in any case). Lookups take a
/// lower-case [`HeaderName`] and compare without regard to case.
#[derive(Debug, Clone, Copy)]
pub enum HeadersRef<'a> {
    /// Parsed by hyper.
    Map(&'a HeaderMap),
    /// Parsed in place by [`super::front`].
    Raw(&'a [httparse::Header<'a>]),
}

impl<'a> From<&'a HeaderMap> for HeadersRef<'a> {
    fn from(map: &'a HeaderMap) -> Self {
        HeadersRef::Map(map)
    }
}

impl<'a> HeadersRef<'a> {
    /// Every value of `name`, in order.
    pub fn values(self, name: &'a HeaderName) -> impl Iterator<Item = &'a [u8]> + 'a {
        let (map, raw) = match self {
            HeadersRef::Map(m) => (
                Some(m.get_all(name).iter().map(HeaderValue::as_bytes)),
                None,
            ),
            HeadersRef::Raw(r) => {
                let want = name.as_str().as_bytes();
                let hits = r
                    .iter()
                    .filter(move |h| h.name.as_bytes().eq_ignore_ascii_case(want))
                    .map(|h| h.value);
                (None, Some(hits))
            }
        };
        map.into_iter().flatten().chain(raw.into_iter().flatten())
    }

    /// The first value of `name`.
    pub fn get(self, name: &'a HeaderName) -> Option<&'a [u8]> {
        self.values(name).next()
    }

    /// The first value of `name`, if it is text.
    pub fn get_str(self, name: &'a HeaderName) -> Option<&'a str> {
        self.get(name).and_then(|v| std::str::from_utf8(v).ok())
    }

    /// Every header, in order, as (name, value).
    pub fn pairs(self) -> impl Iterator<Item = (&'a [u8], &'a [u8])> {
        let (map, raw) = match self {
            HeadersRef::Map(m) => (
                Some(m.iter().map(|(n, v)| (n.as_str().as_bytes(), v.as_bytes()))),
                None,
            ),
            HeadersRef::Raw(r) => (None, Some(r.iter().map(|h| (h.name.as_bytes(), h.value)))),
        };
        map.into_iter().flatten().chain(raw.into_iter().flatten())
    }
}

/// Whether a header name (any case) is hop-by-hop (the nine of
/// `HOP_BY_HOP`). Matched on the length first: this runs once per
/// header per message.
pub fn is_hop_by_hop_name(name: &[u8]) -> bool {
    let is = |want: &str| name.eq_ignore_ascii_case(want.as_bytes());
    match name.len() {
        2 => is("te"),
        7 => is("trailer") || is("upgrade"),
        10 => is("connection") || is("keep-alive"),
        16 => is("proxy-connection"),
        17 => is("transfer-encoding"),
        18 => is("proxy-authenticate"),
        19 => is("proxy-authorization"),
        _ => false,
    }
}

/// Whether a header name (any case) is one the gateway never passes on in
/// a request: hop-by-hop, a forwarding header only the gateway may set,
/// h2c's `HTTP2-Settings`, or a name with an underscore. The last as nginx
/// does by default (`underscores_in_headers off`): frameworks that map
/// headers to variables (CGI, WSGI, PHP) read `X_Forwarded_For` and
/// `X-Forwarded-For` alike, so a client could pose as the gateway with it.
fn is_dropped_request_header(name: &[u8]) -> bool {
    let is = |want: &str| name.eq_ignore_ascii_case(want.as_bytes());
    is_hop_by_hop_name(name)
        || name.contains(&b'_')
        || match name.len() {
            9 => is("forwarded") || is("x-real-ip"),
            // Only meaningful with `Upgrade: h2c`, which is never passed on.
            14 => is("http2-settings"),
            15 => is("x-forwarded-for"),
            16 => is("x-forwarded-host") || is("x-forwarded-port"),
            17 => is("x-forwarded-proto"),
            18 => is("x-forwarded-prefix"),
            _ => false,
        }
}

/// The protocol an upgrade request (`Connection: upgrade` + `Upgrade`)
/// may switch to: WebSocket only, whatever its case and whatever else the
/// `Upgrade` header lists. Any other upgrade (h2c above all: an HTTP/2
/// connection to the backend would carry requests past routing and the
/// forwarding headers) is not passed on, as nginx does; the request then
/// goes to the backend as a plain one, its `Upgrade` header dropped.
pub fn upgrade_protocol(headers: &HeaderMap) -> Option<HeaderValue> {
    (lists(headers, &header::CONNECTION, "upgrade")
        && lists(headers, &header::UPGRADE, "websocket"))
    .then(|| HeaderValue::from_static("websocket"))
}

/// Whether a comma-separated list header `name` holds `token` (any case).
fn lists(headers: &HeaderMap, name: &HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// Remove hop-by-hop headers, including those the `Connection` header names.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Most messages carry none: one pass over the few names present is
    // cheaper than nine hashed removals.
    if !headers.keys().any(is_hop_by_hop) {
        return;
    }
    for name in connection_named(HeadersRef::Map(headers)) {
        headers.remove(name);
    }
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
}

/// What is known about a client connection before its first request: the
/// peer and the port it connected to, with their header texts formatted
/// once per connection rather than once per request.
#[derive(Debug, Clone)]
pub struct Peer {
    ip: IpAddr,
    ip_text: HeaderValue,
    port_text: HeaderValue,
}

impl Peer {
    /// The peer `ip` connected to our `local_port`.
    pub fn new(ip: IpAddr, local_port: u16) -> Peer {
        Peer {
            ip,
            ip_text: ip_header(ip),
            port_text: HeaderValue::from(local_port),
        }
    }
}

/// An IP address as a header value (digits, dots, colons: always valid).
fn ip_header(ip: IpAddr) -> HeaderValue {
    HeaderValue::from_maybe_shared(bytes::Bytes::from(ip.to_string()))
        .unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// Who the client is and how it reached us, after applying trust; the
/// values are ready-made header values for the forwarded request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forwarded {
    /// The client's address: the peer, or (behind a trusted proxy) the
    /// right-most untrusted address of X-Forwarded-For.
    pub client_ip: IpAddr,
    /// `client_ip` as text (X-Real-IP).
    pub client_ip_text: HeaderValue,
    /// The X-Forwarded-For value to send.
    pub xff: HeaderValue,
    /// `http` or `https`.
    pub proto: HeaderValue,
    /// The host the client asked for.
    pub host: Option<HeaderValue>,
    /// The port the client connected to.
    pub port: HeaderValue,
}

fn trusted(ip: IpAddr, nets: &[IpNet]) -> bool {
    nets.iter().any(|n| n.contains(&ip))
}

fn first_value<'a>(headers: HeadersRef<'a>, name: &'a HeaderName) -> Option<&'a str> {
    headers
        .get_str(name)
        .map(|v| v.split(',').next().unwrap_or("").trim())
        .filter(|v| !v.is_empty())
}

/// Work out the forwarded facts of a request that arrived from `peer`.
/// `uri_host` is the URI's authority (HTTP/2 requests have no Host).
pub fn forwarded<'a>(
    headers: impl Into<HeadersRef<'a>>,
    uri_host: Option<&str>,
    peer: &Peer,
    trusted_proxies: &[IpNet],
) -> Forwarded {
    let headers = headers.into();
    let host_header = match headers.get(&header::HOST) {
        // A copy, not a slice sharing the request's bytes: those would keep
        // hyper's read buffer shared while the request is forwarded, and
        // reading the next request would then allocate a new buffer.
        Some(v) => HeaderValue::from_bytes(v).ok(),
        None => uri_host.and_then(|h| HeaderValue::from_str(h).ok()),
    };
    if !trusted(peer.ip, trusted_proxies) {
        return Forwarded {
            client_ip: peer.ip,
            client_ip_text: peer.ip_text.clone(),
            xff: peer.ip_text.clone(),
            proto: HeaderValue::from_static("http"),
            host: host_header,
            port: peer.port_text.clone(),
        };
    }
    let chain: Vec<&str> = headers
        .values(&X_FORWARDED_FOR)
        .filter_map(|v| std::str::from_utf8(v).ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    let client_ip = chain
        .iter()
        .rev()
        .filter_map(|s| s.parse::<IpAddr>().ok())
        .find(|ip| !trusted(*ip, trusted_proxies))
        .unwrap_or(peer.ip);
    let xff = if chain.is_empty() {
        peer.ip_text.clone()
    } else {
        // Built from header text plus an address: a valid value, or
        // (never) dropped to the peer alone.
        HeaderValue::from_str(&format!("{}, {}", chain.join(", "), peer.ip))
            .unwrap_or_else(|_| peer.ip_text.clone())
    };
    let https = matches!(first_value(headers, &X_FORWARDED_PROTO), Some(p) if p.eq_ignore_ascii_case("https"));
    let proto = HeaderValue::from_static(if https { "https" } else { "http" });
    let host = first_value(headers, &X_FORWARDED_HOST)
        .and_then(|h| HeaderValue::from_str(h).ok())
        .or(host_header);
    let port = match first_value(headers, &X_FORWARDED_PORT).filter(|p| p.parse::<u16>().is_ok()) {
        Some(p) => HeaderValue::from_str(p).unwrap_or_else(|_| peer.port_text.clone()),
        None if https => HeaderValue::from_static("443"),
        None => peer.port_text.clone(),
    };
    Forwarded {
        client_ip,
        client_ip_text: if client_ip == peer.ip {
            peer.ip_text.clone()
        } else {
            ip_header(client_ip)
        },
        xff,
        proto,
        host,
        port,
    }
}

/// The headers of a forwarded request: the client's, without hop-by-hop
/// ones (and those its `Connection` names), without the forwarding headers
/// only we may set and those a rule sets; then ours, then the rule's.
///
/// A view rather than an edited `HeaderMap`: the proxy writes the request
/// head straight from it, which spares the hashed removals and inserts
/// (and the map growing) that editing the client's map cost per request.
/// RFC 7239 `Forwarded` is not produced; an incoming one is dropped so
/// backends see only the facts we vouch for.
pub struct RequestHeaders<'a> {
    client: HeadersRef<'a>,
    /// Borrowed from the `Forwarded` facts: cloning a shared header value
    /// is an atomic increment and decrement, per header, per request.
    ours: [(&'static HeaderName, Option<&'a HeaderValue>); 5],
    prefix: Option<HeaderValue>,
    set_headers: &'a [(HeaderName, HeaderValue)],
    /// Extra hop-by-hop names listed in the client's `Connection` header
    /// (rarely any).
    named: Vec<HeaderName>,
}

impl<'a> RequestHeaders<'a> {
    /// The forwarded view of `client`'s headers.
    pub fn new(
        client: impl Into<HeadersRef<'a>>,
        fwd: &'a Forwarded,
        forwarded_prefix: Option<&str>,
        set_headers: &'a [(HeaderName, HeaderValue)],
    ) -> Self {
        let client = client.into();
        RequestHeaders {
            client,
            ours: [
                (&X_FORWARDED_FOR, Some(&fwd.xff)),
                (&X_FORWARDED_PROTO, Some(&fwd.proto)),
                (&X_FORWARDED_HOST, fwd.host.as_ref()),
                (&X_FORWARDED_PORT, Some(&fwd.port)),
                (&X_REAL_IP, Some(&fwd.client_ip_text)),
            ],
            prefix: forwarded_prefix.and_then(|p| HeaderValue::from_str(p).ok()),
            set_headers,
            named: connection_named(client),
        }
    }

    /// Whether the rule sets `name` (any case).
    fn rule_sets(&self, name: &[u8]) -> bool {
        self.set_headers
            .iter()
            .any(|(n, _)| n.as_str().as_bytes().eq_ignore_ascii_case(name))
    }

    fn passes(&self, name: &[u8]) -> bool {
        !(is_dropped_request_header(name)
            || self.rule_sets(name)
            || self
                .named
                .iter()
                .any(|n| n.as_str().as_bytes().eq_ignore_ascii_case(name)))
    }

    /// Every header of the forwarded request, in order, as (name, value).
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        let client = self.client.pairs().filter(|(n, _)| self.passes(n));
        let prefix = self.prefix.as_ref().map(|p| (&X_FORWARDED_PREFIX, p));
        let ours = self
            .ours
            .iter()
            .filter_map(|(n, v)| Some((*n, (*v)?)))
            .chain(prefix)
            .map(|(n, v)| (n.as_str().as_bytes(), v.as_bytes()))
            .filter(|(n, _)| !self.rule_sets(n));
        let rule = self
            .set_headers
            .iter()
            .map(|(n, v)| (n.as_str().as_bytes(), v.as_bytes()));
        client.chain(ours).chain(rule)
    }
}

/// Headers a client's `Connection` may not remove: `Connection: Host` would
/// send the request on without the host it was routed by, and
/// `Connection: Content-Length` a body without its length — a request the
/// backend frames differently from us.
fn is_end_to_end_only(name: &[u8]) -> bool {
    name.eq_ignore_ascii_case(b"host") || name.eq_ignore_ascii_case(b"content-length")
}

/// Header names the `Connection` header lists as hop-by-hop, besides the
/// standard ones (which are removed anyway).
fn connection_named(headers: HeadersRef<'_>) -> Vec<HeaderName> {
    headers
        .values(&header::CONNECTION)
        .filter_map(|v| std::str::from_utf8(v).ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        // `keep-alive` and `close` are the common tokens; `keep-alive` is
        // removed anyway and parsing them would allocate.
        .filter(|t| {
            !t.is_empty()
                && !t.eq_ignore_ascii_case("keep-alive")
                && !t.eq_ignore_ascii_case("close")
                && !is_end_to_end_only(t.as_bytes())
        })
        .filter_map(|t| HeaderName::from_bytes(t.as_bytes()).ok())
        .collect()
}

/// Turn a client request's headers into the forwarded request's headers
/// (the upgrade path, which hands a `HeaderMap` to hyper's client).
pub fn prepare_request(
    headers: &mut HeaderMap,
    upgrade: Option<&HeaderValue>,
    fwd: &Forwarded,
    forwarded_prefix: Option<&str>,
    set_headers: &[(HeaderName, HeaderValue)],
) {
    let mut out = HeaderMap::with_capacity(headers.len() + 8);
    for (n, v) in RequestHeaders::new(&*headers, fwd, forwarded_prefix, set_headers).iter() {
        // Rare (upgrades only): re-parsing the names and copying the
        // values is fine here.
        if let (Ok(n), Ok(v)) = (HeaderName::from_bytes(n), HeaderValue::from_bytes(v)) {
            out.append(n, v);
        }
    }
    if let Some(proto) = upgrade {
        out.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        out.insert(header::UPGRADE, proto.clone());
    }
    *headers = out;
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

    fn peer(ip: &str, port: u16) -> Peer {
        Peer::new(ip.parse().unwrap(), port)
    }

    fn text(v: &HeaderValue) -> &str {
        v.to_str().unwrap()
    }

    /// (client_ip, xff, proto, host, port) as text.
    fn facts(f: &Forwarded) -> (String, &str, &str, Option<&str>, &str) {
        assert_eq!(text(&f.client_ip_text), f.client_ip.to_string());
        (
            f.client_ip.to_string(),
            text(&f.xff),
            text(&f.proto),
            f.host.as_ref().map(text),
            text(&f.port),
        )
    }

    fn fwd(
        ip: &str,
        xff: &'static str,
        host: Option<&'static str>,
        port: &'static str,
    ) -> Forwarded {
        let ip: IpAddr = ip.parse().unwrap();
        Forwarded {
            client_ip: ip,
            client_ip_text: HeaderValue::from_str(&ip.to_string()).unwrap(),
            xff: HeaderValue::from_static(xff),
            proto: HeaderValue::from_static("http"),
            host: host.map(HeaderValue::from_static),
            port: HeaderValue::from_static(port),
        }
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
        let f = forwarded(&h, None, &peer("203.0.113.9", 7860), &proxies());
        assert_eq!(
            facts(&f),
            (
                "203.0.113.9".to_string(),
                "203.0.113.9",
                "http",
                Some("a.example:7860"),
                "7860"
            )
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
        let f = forwarded(&h, None, &peer("10.2.2.2", 7860), &proxies());
        assert_eq!(
            facts(&f),
            (
                "198.51.100.7".to_string(),
                "198.51.100.7, 10.1.1.1, 10.2.2.2",
                "https",
                Some("space.hf.space"),
                "443"
            )
        );
        // A spoofed left-most entry does not win over the right-most untrusted one.
        let h = map(&[("x-forwarded-for", "6.6.6.6, 198.51.100.7")]);
        let f = forwarded(&h, Some("h"), &peer("10.2.2.2", 80), &proxies());
        assert_eq!(
            facts(&f),
            (
                "198.51.100.7".to_string(),
                "6.6.6.6, 198.51.100.7, 10.2.2.2",
                "http",
                Some("h"),
                "80"
            )
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
        let fwd = fwd("127.0.0.1", "127.0.0.1", Some("h:1"), "1");
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
    fn a_rule_may_override_a_forwarding_header_once() {
        let h = map(&[
            ("host", "h"),
            ("x-forwarded-proto", "forged"),
            ("expect", "100-continue"),
        ]);
        let fwd = fwd("127.0.0.1", "127.0.0.1", Some("h"), "1");
        let set = [(
            HeaderName::from_static("x-forwarded-proto"),
            HeaderValue::from_static("https"),
        )];
        let view = RequestHeaders::new(&h, &fwd, None, &set);
        let got: Vec<String> = view
            .iter()
            .map(|(k, v)| {
                format!(
                    "{}: {}",
                    String::from_utf8_lossy(k),
                    String::from_utf8_lossy(v)
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                "host: h",
                "expect: 100-continue",
                "x-forwarded-for: 127.0.0.1",
                "x-forwarded-host: h",
                "x-forwarded-port: 1",
                "x-real-ip: 127.0.0.1",
                "x-forwarded-proto: https",
            ]
        );
    }

    /// Issue 16: `X_Forwarded_For` could pose as `X-Forwarded-For` to a
    /// backend that normalises names, and `Connection: Host` (or
    /// `Content-Length`) removed what routing and framing depend on.
    #[test]
    fn underscores_are_dropped_and_connection_cannot_remove_host_or_length() {
        let h = map(&[
            ("host", "h"),
            ("connection", "Host, Content-Length, X-Custom"),
            ("content-length", "3"),
            ("x_forwarded_for", "10.9.9.9"),
            ("X_Real_IP", "10.9.9.9"),
            ("x-custom", "gone"),
            ("x-kept", "yes"),
        ]);
        let fwd = fwd("127.0.0.1", "127.0.0.1", Some("h"), "1");
        let view = RequestHeaders::new(&h, &fwd, None, &[]);
        let names: Vec<String> = view
            .iter()
            .map(|(k, _)| String::from_utf8_lossy(k).to_ascii_lowercase())
            .collect();
        assert_eq!(
            names,
            [
                "host",
                "content-length",
                "x-kept",
                "x-forwarded-for",
                "x-forwarded-proto",
                "x-forwarded-host",
                "x-forwarded-port",
                "x-real-ip",
            ]
        );
    }

    #[test]
    fn dropped_request_headers_are_hop_by_hop_ones_and_ours_in_any_case() {
        let ours = [
            "forwarded",
            "x-forwarded-for",
            "x-forwarded-proto",
            "x-forwarded-host",
            "x-forwarded-port",
            "x-forwarded-prefix",
            "x-real-ip",
            "http2-settings",
        ];
        for name in HOP_BY_HOP.iter().map(HeaderName::as_str) {
            assert!(
                is_hop_by_hop_name(name.to_ascii_uppercase().as_bytes()),
                "{name}"
            );
        }
        for name in ours {
            assert!(!is_hop_by_hop_name(name.as_bytes()), "{name}");
        }
        for name in HOP_BY_HOP.iter().map(HeaderName::as_str).chain(ours) {
            assert!(is_dropped_request_header(name.as_bytes()), "{name}");
            let upper = name.to_ascii_uppercase();
            assert!(is_dropped_request_header(upper.as_bytes()), "{upper}");
        }
        for name in [
            "host",
            "accept",
            "x-forwarded",
            "tE2",
            "upgrade-insecure-requests",
        ] {
            assert!(!is_dropped_request_header(name.as_bytes()), "{name}");
        }
    }

    #[test]
    fn raw_headers_are_looked_up_without_regard_to_case() {
        let raw = [
            httparse::Header {
                name: "Host",
                value: b"h",
            },
            httparse::Header {
                name: "X-Forwarded-For",
                value: b"1.2.3.4",
            },
            httparse::Header {
                name: "x-forwarded-for",
                value: b"5.6.7.8",
            },
        ];
        let h = HeadersRef::Raw(&raw);
        assert_eq!(h.get(&header::HOST), Some(&b"h"[..]));
        let all: Vec<&[u8]> = h.values(&X_FORWARDED_FOR).collect();
        assert_eq!(all, [&b"1.2.3.4"[..], b"5.6.7.8"]);
        let f = forwarded(h, None, &peer("10.2.2.2", 80), &proxies());
        assert_eq!(text(&f.xff), "1.2.3.4, 5.6.7.8, 10.2.2.2");
        assert_eq!(f.client_ip.to_string(), "5.6.7.8");
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
        // Issue 11: only WebSocket is passed on, in any case, from any list.
        let with = |up: &str| upgrade_protocol(&map(&[("connection", "Upgrade"), ("upgrade", up)]));
        assert_eq!(with("WebSocket").unwrap(), "websocket");
        assert_eq!(with("h2c, websocket").unwrap(), "websocket");
        for other in ["h2c", "H2C", "h2c, h2", "websocket/13", "TLS/1.2", ""] {
            assert_eq!(with(other), None, "{other}");
        }
        let mut req = h.clone();
        let fwd = fwd("127.0.0.1", "x", None, "1");
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
