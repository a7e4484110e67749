use super::*;
use crate::gateway::rules::{validate_table, BackendPolicy, Table};
use serde_json::{json, Map, Value};

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

/// A route table as the admin API holds it: validated, so with assigned
/// ids, normalised host and method, and `set_headers` in their order.
fn live_table(policy: &BackendPolicy) -> Table {
    let rules = json!([
        {"id": "a", "priority": "7", "backend": "http://127.0.0.1:7860",
         "set_headers": [{"name": "X-B", "value": "2"}, {"name": "X-A", "value": ""}],
         "match": {"path_prefix": "/a/", "host": "A.Example", "method": "get",
                   "headers": [{"name": "X-K", "regex": "^k"}]}},
        {"match": {"path_equal": "/r"}, "action": "redirect", "redirect_to": "/s", "redirect_code": 308},
        {"id": "rule-1", "strip_prefix": true, "match": {"path_prefix": "/p/"}}
    ]);
    let rules = rules.as_array().unwrap();
    validate_table("http://127.0.0.1:6185", rules, policy).unwrap()
}

/// What a POST made of the table before it kept the rules typed: the
/// current rules written as JSON and read back.
fn through_json(
    current: &Table,
    default_backend: &str,
    policy: &BackendPolicy,
) -> Result<Table, String> {
    let rules: Vec<Value> = current
        .rules
        .iter()
        .map(|r| serde_json::to_value(r).unwrap())
        .collect();
    validate_table(default_backend, &rules, policy).map_err(|e| e.to_string())
}

fn post(body: Value) -> Map<String, Value> {
    body.as_object().unwrap().clone()
}

/// A POST without `rules` keeps the current rules exactly (ids assigned
/// earlier included), whatever it does to `default_backend`.
#[test]
fn a_post_without_rules_keeps_the_rules() {
    let policy = BackendPolicy::default();
    let current = live_table(&policy);
    assert_eq!(current.rules[1].id, "rule-2");
    let cases = [
        (json!({}), "http://127.0.0.1:6185"),
        (json!({"rules": null}), "http://127.0.0.1:6185"),
        (
            json!({"default_backend": " ", "admin_password": "x"}),
            "http://127.0.0.1:6185",
        ),
        (
            json!({"default_backend": "http://127.0.0.1:7000"}),
            "http://127.0.0.1:7000",
        ),
    ];
    for (body, default_backend) in cases {
        let next = routes::next_table(&current, &post(body.clone()), &policy).unwrap();
        assert_eq!(next.rules, current.rules, "{body}");
        assert_eq!(next.default_backend, default_backend, "{body}");
        assert_eq!(Ok(next), through_json(&current, default_backend, &policy));
    }
}

/// The kept rules are still checked against today's policy and the new
/// default backend, and refused with the same words as before.
#[test]
fn a_post_without_rules_is_refused_as_before() {
    let current = live_table(&BackendPolicy::default());
    // The gateway now listens where rule `a` points.
    let policy = BackendPolicy::new(&[], "0.0.0.0:7860".parse().unwrap());
    let cases = [
        (json!({}), "http://127.0.0.1:6185"),
        (
            json!({"default_backend": "http://10.0.0.1:80"}),
            "http://10.0.0.1:80",
        ),
    ];
    for (body, default_backend) in cases {
        let got = routes::next_table(&current, &post(body.clone()), &policy).unwrap_err();
        let want = through_json(&current, default_backend, &policy).unwrap_err();
        assert_eq!(got, HttpError::BadRequest(want), "{body}");
    }
    let got = routes::next_table(&current, &post(json!({})), &policy);
    let want = "rules[0] (`a`): `backend`: `127.0.0.1:7860` is the gateway's own listen address; a rule pointing at it would loop";
    assert_eq!(got, Err(HttpError::BadRequest(want.into())));
    let wrong = [
        (
            json!({"default_backend": 5}),
            "`default_backend`: expected a string",
        ),
        (json!({"rules": {}}), "`rules`: expected a list of rules"),
    ];
    for (body, want) in wrong {
        let got = routes::next_table(&current, &post(body), &policy);
        assert_eq!(got, Err(HttpError::BadRequest(want.into())));
    }
}
