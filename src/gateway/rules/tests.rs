use super::*;
use serde_json::json;

fn policy() -> BackendPolicy {
    BackendPolicy::new(&[], "0.0.0.0:7860".parse().unwrap())
}

fn one(rule: serde_json::Value) -> Result<Table, RuleError> {
    validate_table("http://127.0.0.1:6185", &[rule], &policy())
}

fn err_text(rule: serde_json::Value) -> String {
    one(rule).unwrap_err().to_string()
}

#[test]
fn original_default_rules_are_accepted_and_round_trip_in_the_original_shape() {
    let rules = json!([
        {"match": {"path_prefix": "/api/ws/"}, "backend": "http://127.0.0.1:6099", "action": "proxy", "id": "proxy-api-ws", "priority": 200},
        {"match": {"referer_substr": "gemini"}, "backend": "http://127.0.0.1:8000", "action": "proxy", "id": "proxy-referer-gemini", "priority": 195},
        {"match": {"path_equal": "/webui"}, "redirect_to": "/webui/", "action": "redirect", "id": "redirect-webui-slash", "priority": 200},
        {"match": {"path_prefix": "/webui/"}, "set_headers": [{"value": "/webui", "name": "X-Forwarded-Prefix"}],
         "backend": "http://127.0.0.1:6099", "action": "proxy", "id": "proxy-webui", "priority": 180}
    ]);
    let t = validate_table(
        "http://127.0.0.1:6185",
        rules.as_array().unwrap(),
        &policy(),
    )
    .unwrap();
    assert_eq!(t.rules.len(), 4);
    let back = serde_json::to_value(&t.rules[3]).unwrap();
    assert_eq!(
        back["set_headers"],
        json!([{"name": "X-Forwarded-Prefix", "value": "/webui"}])
    );
    assert!(back.get("redirect_to").is_none());
}

#[test]
fn lenient_forms_are_normalised() {
    let t = one(json!({"id": "", "priority": "7", "backend": "", "redirect_to": "",
                           "set_headers": {"X-A": "1"}, "match": {"path_prefix": "/x/", "method": "get", "host": "Example.COM"}}))
        .unwrap();
    let r = &t.rules[0];
    assert_eq!(r.id, "rule-1");
    assert_eq!(r.priority, 7);
    assert_eq!(r.backend, None);
    assert_eq!(
        r.set_headers,
        vec![SetHeader {
            name: "X-A".into(),
            value: "1".into()
        }]
    );
    assert_eq!(r.matcher.method.as_deref(), Some("GET"));
    assert_eq!(r.matcher.host.as_deref(), Some("example.com"));
}

#[test]
fn assigned_ids_skip_explicit_ones() {
    let rules =
        json!([{"match": {"path_prefix": "/a"}}, {"id": "rule-1", "match": {"path_prefix": "/b"}}]);
    let t = validate_table("", rules.as_array().unwrap(), &policy()).unwrap();
    assert_eq!(t.rules[0].id, "rule-2");
    assert_eq!(t.rules[1].id, "rule-1");
}

#[test]
fn errors_name_the_rule_and_the_field() {
    let cases: &[(serde_json::Value, &str)] = &[
            (json!({"id": "g", "match": {"path_prefix": "gemini/"}}),
             "rules[0] (`g`): `match.path_prefix`: `gemini/` must start with `/`"),
            (json!({"id": "g", "priority": "high", "match": {"path_prefix": "/g/"}}),
             "rules[0] (`g`): `priority`: expected an integer, got \"high\""),
            (json!({"id": "g", "match": {"path_prefix": "/g/", "bogus": 1}}),
             "rules[0] (`g`): `match.bogus`: unknown field `bogus`"),
            (json!({"id": "g", "match": {}}),
             "rules[0] (`g`): `match`: has no condition"),
            (json!({"id": "g", "match": {"path_prefix": "/admin/"}}),
             "rules[0] (`g`): `match.path_prefix`: `/admin/` is under `/admin/`, which is reserved"),
            (json!({"id": "g", "match": {"path_equal": "/admin"}}),
             "`match.path_equal`: `/admin` is under `/admin/`"),
            (json!({"id": "g", "match": {"path_prefix": "/a/../b/"}}),
             "`match.path_prefix`: `/a/../b/` is not in normal form; requests are matched after normalisation, write `/b/`"),
            (json!({"id": "g", "match": {"referer_regex": "("}}),
             "`match.referer_regex`: invalid regular expression"),
            (json!({"id": "g", "match": {"headers": [{"name": "bad name"}]}}),
             "`match.headers[0].name`: `bad name` is not a valid header name"),
            (json!({"id": "g", "match": {"path_equal": "/x"}, "action": "redirect", "redirect_to": "/y", "redirect_code": 301}),
             "`redirect_code`: 301 is cached by browsers"),
            (json!({"id": "g", "match": {"path_equal": "/x"}, "action": "redirect"}),
             "`redirect_to`: a redirect rule needs"),
            (json!({"id": "g", "match": {"path_equal": "/x"}, "action": "redirect", "redirect_to": "//evil.com"}),
             "`redirect_to`: `//host` is a protocol-relative URL"),
            (json!({"id": "g", "match": {"path_equal": "/x"}, "action": "redirect", "redirect_to": "/\\evil.com"}),
             "`redirect_to`: `//host` is a protocol-relative URL"),
            (json!({"id": "g", "match": {"path_equal": "/x"}, "action": "redirect", "redirect_to_prefix": "/y/"}),
             "`redirect_to_prefix`: needs `match.path_prefix`"),
            (json!({"id": "g", "match": {"path_equal": "/x"}, "strip_prefix": true}),
             "`strip_prefix`: needs `match.path_prefix`"),
            (json!({"id": "g", "match": {"path_prefix": "/x"}, "set_headers": [{"name": "Connection", "value": "x"}]}),
             "`set_headers[0].name`: `Connection` is managed by the gateway"),
            (json!({"id": "g", "match": {"path_prefix": "/x"}, "action": "teleport"}),
             "`action`: unknown variant `teleport`"),
        ];
    for (rule, want) in cases {
        let got = err_text(rule.clone());
        assert!(got.contains(want), "rule {rule}\n got: {got}\nwant: {want}");
    }
}

#[test]
fn duplicate_ids_are_refused_at_the_second_rule() {
    let rules = json!([{"id": "a", "match": {"path_prefix": "/a"}}, {"id": "a", "match": {"path_prefix": "/b"}}]);
    let e = validate_table("", rules.as_array().unwrap(), &policy()).unwrap_err();
    assert_eq!(e.rule_index(), Some(1));
    assert!(
        e.to_string().contains("`a` is used by an earlier rule"),
        "{e}"
    );
}

#[test]
fn backend_policy_refusals() {
    let p = BackendPolicy::new(&[], "0.0.0.0:7860".parse().unwrap());
    let refused: &[(&str, &str)] = &[
        ("https://127.0.0.1:1", "only `http://`"),
        ("ftp://127.0.0.1:1", "is not a URL"),
        ("127.0.0.1:80", "is not a URL"),
        ("http://user:pw@127.0.0.1:1", "user name or password"),
        (
            "http://example.com:80",
            "must be an IP address or `localhost`",
        ),
        ("http://10.0.0.5:80", "outside `allow_backends`"),
        ("http://169.254.169.254:80", "link-local"),
        ("http://[fe80::1]:80", "link-local"),
        ("http://0.0.0.0:80", "is not a backend address"),
        ("http://127.0.0.1:7860", "own listen address"),
        ("http://localhost:7860", "own listen address"),
        ("http://127.0.0.1:1/path", "without a path"),
        ("http://127.0.0.1:99999", "not a port number"),
        ("http://[::1", "unclosed"),
    ];
    for (url, want) in refused {
        let e = p.check(url).unwrap_err();
        assert!(e.contains(want), "{url}: {e}");
    }
    for ok in [
        "http://127.0.0.1:6185",
        "http://localhost:8000/",
        "http://[::1]:9000",
        "HTTP://127.0.0.2",
    ] {
        p.check(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
    }
    assert_eq!(
        p.check("http://localhost:8000").unwrap().addr,
        "127.0.0.1:8000".parse().unwrap()
    );
    let wide = BackendPolicy::new(
        &["10.0.0.0/8".parse().unwrap()],
        "127.0.0.1:7860".parse().unwrap(),
    );
    wide.check("http://10.0.0.5:80").unwrap();
    wide.check("http://10.0.0.5:7860").unwrap();
    assert!(wide.check("http://127.0.0.1:80").is_err());
}

#[test]
fn default_backend_is_checked() {
    let e = validate_table("http://10.1.1.1:80", &[], &policy()).unwrap_err();
    assert!(
        e.to_string()
            .starts_with("`default_backend`: `10.1.1.1` is outside"),
        "{e}"
    );
    assert_eq!(
        validate_table("", &[], &policy()).unwrap().default_backend,
        ""
    );
}

/// Backend URLs are read by the crate's one URL parser (WHATWG rules, as
/// reqwest reads them). What that accepts beyond the old hand parser:
/// IPv4 shorthand, an empty port (the default), dot segments that leave
/// no path. What stays refused: no `//`, control characters (the parser
/// would drop them), an empty user name, and everything before.
#[test]
fn backend_urls_follow_the_url_grammar() {
    let addr = |u: &str| parse_backend(u).map(|b| b.addr.to_string());
    assert_eq!(addr("http://127.1:8000"), Ok("127.0.0.1:8000".into()));
    assert_eq!(addr("http://127.0.0.1:"), Ok("127.0.0.1:80".into()));
    assert_eq!(addr("http://[::1]:"), Ok("[::1]:80".into()));
    assert_eq!(addr("http://127.0.0.1:9/a/.."), Ok("127.0.0.1:9".into()));
    assert_eq!(addr("http://LocalHost:9"), Ok("127.0.0.1:9".into()));
    assert_eq!(addr(" http://127.0.0.1:9/ "), Ok("127.0.0.1:9".into()));
    let refused: &[(&str, &str)] = &[
        ("http:127.0.0.1:80", "is not a URL"),
        ("http:/127.0.0.1:80", "is not a URL"),
        ("http://127.0.0.1:80\t80", "is not a URL"),
        ("http://127.0.0.1:8\n0", "is not a URL"),
        ("http://@127.0.0.1:80", "user name or password"),
        ("http://[::1]x", "expected `:PORT` after `]`"),
        ("http://[zz]:80", "`zz` must be an IP address"),
        ("http://1.2.3.256:80", "`1.2.3.256` must be an IP address"),
        ("http://Example.COM", "`example.com` must be an IP address"),
        ("http://localhost.:80", "must be an IP address"),
        ("http://", "`` must be an IP address"),
        ("http://127.0.0.1:0", "`0` is not a port number"),
        ("http://127.0.0.1:+80", "`+80` is not a port number"),
        ("http://127.0.0.1:1?x", "without a path (got path `/?x`)"),
        ("http://127.0.0.1:1#f", "without a path"),
    ];
    for (url, want) in refused {
        let e = parse_backend(url).unwrap_err();
        assert!(e.contains(want), "{url:?}: {e}");
    }
}

/// The manifest's `routes:` as `stackctl check` reads them.
fn manifest_routes(routes: &str) -> Result<crate::manifest::Gateway, String> {
    let text = format!("gateway:\n  default_backend: http://127.0.0.1:6185\n  routes:\n{routes}");
    crate::manifest::load_str(
        &text,
        std::path::Path::new("/x/stack.yaml"),
        &crate::manifest::ContainerEnv::new(),
    )
    .map(|m| m.gateway.expect("a gateway"))
    .map_err(|e| e.to_string())
}

/// The manifest's routes are refused with the admin API's own words, at
/// the route's line, and only the first refusal (as the API answers one).
#[test]
fn manifest_route_errors_read_as_the_admin_apis() {
    let cases: &[(&str, &str)] = &[
        (
            "    - { id: t, prefix: /x/, action: teleport }\n",
            "4:7: `gateway.routes[0]`: rules[0] (`t`): `action`: unknown variant `teleport`, expected `proxy` or `redirect`",
        ),
        (
            "    - { id: h, match: { headers: [{ contains: x }] } }\n",
            "4:7: `gateway.routes[0]`: rules[0] (`h`): `match.headers[0]`: missing field `name`",
        ),
        (
            "    - { id: p, prefix: /x/, priority: high }\n",
            "`gateway.routes[0].priority`: expected a whole number, found `high`",
        ),
        (
            "    - { id: c, match: { path_equal: /x }, action: redirect, redirect_to: /y, redirect_code: 70000 }\n",
            "`gateway.routes[0].redirect_code`: expected a whole number, found `70000`",
        ),
        (
            "    - { id: c, match: { path_equal: /x }, action: redirect, redirect_to: /y, redirect_code: 301 }\n",
            "4:7: `gateway.routes[0]`: rules[0] (`c`): `redirect_code`: 301 is cached by browsers",
        ),
        // A rule that cannot be read is named before an earlier rule that
        // reads but is wrong, as the API's validator orders them.
        (
            "    - { id: a, prefix: /a/, backend: http://10.1.2.3:80 }\n    - { id: b, prefix: /b/, action: jump }\n",
            "5:7: `gateway.routes[1]`: rules[1] (`b`): `action`: unknown variant `jump`",
        ),
        (
            "    - { prefix: /a/, strip_prefix: maybe }\n",
            "`gateway.routes[0].strip_prefix`",
        ),
    ];
    for (routes, want) in cases {
        let got = manifest_routes(routes).expect_err(routes);
        assert!(got.contains(want), "{routes}\n got: {got}\nwant: {want}");
        assert_eq!(got.matches("gateway.routes").count(), 1, "{got}");
    }
}

/// A route read from the manifest is the rule the admin API reads from the
/// same JSON: blank texts absent, a `set_headers` map in name order.
#[test]
fn manifest_routes_are_the_rules_their_json_is() {
    let g = manifest_routes(
        "    - id: w\n      priority: \"7\"\n      prefix: /w/\n      backend: \" \"\n      strip_prefix: yes\n      set_headers: { X-B: \"2\", X-A: \"\" }\n      match: { method: get, host: \" \", headers: [{ name: X-K, contains: \"\", regex: \"^a\" }] }\n    - { match: { path_equal: /r }, action: redirect, redirect_to: /s, redirect_code: 308 }\n",
    )
    .unwrap();
    let json = json!([
        {"id": "w", "priority": 7, "backend": " ", "strip_prefix": true,
         "set_headers": {"X-B": "2", "X-A": ""},
         "match": {"path_prefix": "/w/", "method": "get", "host": " ",
                   "headers": [{"name": "X-K", "contains": "", "regex": "^a"}]}},
        {"match": {"path_equal": "/r"}, "action": "redirect", "redirect_to": "/s", "redirect_code": 308}
    ]);
    let t = validate_table("http://127.0.0.1:6185", json.as_array().unwrap(), &policy()).unwrap();
    assert_eq!(g.routes, t.rules);
    assert_eq!(g.routes[0].set_headers[0].name, "X-A");
    assert_eq!(g.routes[0].backend, None);
    assert_eq!(g.routes[1].id, "rule-2");
}
