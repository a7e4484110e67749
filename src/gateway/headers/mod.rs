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
mod tests;
