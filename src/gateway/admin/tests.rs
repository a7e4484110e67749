use super::*;

fn h(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut m = HeaderMap::new();
    for (k, v) in pairs {
        m.append(
            http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    m
}

#[test]
fn cross_site_requests_are_told_apart() {
    // (headers, the host the gateway believes, verdict)
    type Case<'a> = (&'a [(&'a str, &'a str)], Option<&'a str>, bool);
    let cases: &[Case] = &[
        (&[], None, true),
        (&[("sec-fetch-site", "same-origin")], None, true),
        (&[("sec-fetch-site", "none")], None, true),
        (&[("sec-fetch-site", "same-site")], None, false),
        (
            &[("sec-fetch-site", "cross-site"), ("origin", "http://h:1")],
            Some("h:1"),
            false,
        ),
        (&[("origin", "http://h:1")], Some("h:1"), true),
        (&[("origin", "http://H:1/")], Some("h:1"), true),
        // Behind a trusted proxy, the gateway believes X-Forwarded-Host.
        (
            &[("origin", "https://space.hf.space")],
            Some("space.hf.space"),
            true,
        ),
        // Issue 16: from an untrusted peer the gateway believes only
        // Host, so a forged X-Forwarded-Host proves nothing.
        (
            &[
                ("origin", "https://evil.example"),
                ("x-forwarded-host", "evil.example"),
            ],
            Some("10.0.0.1:7860"),
            false,
        ),
        (&[("origin", "https://evil.example")], Some("h:1"), false),
        (&[("origin", "http://h:1")], None, false),
        (&[("origin", "null")], Some("h:1"), false),
    ];
    for (pairs, host, want) in cases {
        assert_eq!(same_origin(&h(pairs), *host), *want, "{pairs:?} {host:?}");
    }
}

#[test]
fn if_none_match_forms() {
    let tag = "\"00000000000000ab\"";
    assert!(if_none_match_holds(&h(&[]), tag));
    assert!(if_none_match_holds(&h(&[("if-none-match", "\"x\"")]), tag));
    assert!(!if_none_match_holds(&h(&[("if-none-match", "*")]), tag));
    assert!(!if_none_match_holds(
        &h(&[("if-none-match", "\"x\", W/\"00000000000000ab\"")]),
        tag
    ));
}

#[test]
fn if_match_forms() {
    let tag = "\"00000000000000ab\"";
    assert!(if_match_holds(&h(&[]), tag));
    assert!(if_match_holds(&h(&[("if-match", "*")]), tag));
    assert!(if_match_holds(
        &h(&[("if-match", "\"x\", \"00000000000000ab\"")]),
        tag
    ));
    assert!(!if_match_holds(
        &h(&[("if-match", "W/\"00000000000000ab\"")]),
        tag
    ));
    assert!(!if_match_holds(
        &h(&[("if-match", "\"00000000000000ac\"")]),
        tag
    ));
}
