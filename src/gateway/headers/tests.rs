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

fn fwd(ip: &str, xff: &'static str, host: Option<&'static str>, port: &'static str) -> Forwarded {
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
