use super::*;
use crate::gateway::path::normalize_path;
use crate::gateway::rules::{validate_table, BackendPolicy};
use serde_json::json;

fn router(default: &str, rules: serde_json::Value) -> Router {
    let t = validate_table(
        default,
        rules.as_array().unwrap(),
        &BackendPolicy::default(),
    )
    .unwrap();
    Router::new(t).unwrap()
}

struct Req<'a> {
    method: &'a str,
    path: &'a str,
    query: Option<&'a str>,
    host: Option<&'a str>,
    headers: Vec<(&'a str, &'a str)>,
}

fn get(path: &str) -> Req<'_> {
    Req {
        method: "GET",
        path,
        query: None,
        host: Some("space.hf.space"),
        headers: vec![],
    }
}

/// (rule id or "default"/"admin"/"none"/"redirect:LOCATION", backend path)
fn decide(r: &Router, q: &Req<'_>) -> (String, String) {
    let mut headers = http::HeaderMap::new();
    for (k, v) in &q.headers {
        headers.append(
            HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    let path = normalize_path(q.path).unwrap();
    let head = RequestHead {
        method: q.method,
        path: &path,
        query: q.query,
        host: q.host,
        headers: HeadersRef::Map(&headers),
    };
    match r.route(&head) {
        Decision::Admin => ("admin".into(), String::new()),
        Decision::NoRoute => ("none".into(), String::new()),
        Decision::Redirect {
            location, status, ..
        } => (
            format!("redirect {} {location}", status.as_u16()),
            String::new(),
        ),
        Decision::Proxy(t) => (
            format!(
                "{}@{}",
                t.rule_id.unwrap_or("default"),
                t.backend.addr.port()
            ),
            format!(
                "{}{}",
                t.path,
                t.forwarded_prefix
                    .map(|p| format!(" prefix={p}"))
                    .unwrap_or_default()
            ),
        ),
    }
}

fn original() -> Router {
    router(
        "http://127.0.0.1:6185",
        json!([
            {"match": {"path_prefix": "/api/ws/"}, "backend": "http://127.0.0.1:6099", "id": "proxy-api-ws", "priority": 200},
            {"match": {"referer_substr": "gemini"}, "backend": "http://127.0.0.1:8000", "id": "proxy-referer-gemini", "priority": 195},
            {"match": {"referer_substr": "webui"}, "backend": "http://127.0.0.1:6099", "id": "proxy-referer-webui", "priority": 195},
            {"match": {"path_equal": "/webui"}, "redirect_to": "/webui/", "action": "redirect", "id": "redirect-webui-slash", "priority": 200},
            {"match": {"referer_substr": "/webui/"}, "backend": "http://127.0.0.1:6099", "id": "proxy-webui-referer", "priority": 190},
            {"match": {"path_prefix": "/webui/"}, "set_headers": [{"name": "X-Forwarded-Prefix", "value": "/webui"}], "backend": "http://127.0.0.1:6099", "id": "proxy-webui", "priority": 180},
            {"match": {"path_prefix": "/gemini/"}, "backend": "http://127.0.0.1:8000", "id": "proxy-gemini", "priority": 180, "strip_prefix": true},
            {"match": {"path_equal": "/gemini"}, "redirect_to": "/gemini/", "action": "redirect", "id": "redirect-gemini-slash", "priority": 175}
        ]),
    )
}

#[test]
fn the_original_defaults_route_as_documented() {
    let r = original();
    let cases: &[(Req<'_>, &str, &str)] = &[
        (get("/"), "default@6185", "/"),
        (get("/api/ws/onebot"), "proxy-api-ws@6099", "/api/ws/onebot"),
        (get("/api/ws"), "default@6185", "/api/ws"),
        (get("/webui"), "redirect 302 /webui/", ""),
        (
            Req {
                query: Some("a=1&b=2"),
                ..get("/webui")
            },
            "redirect 302 /webui/?a=1&b=2",
            "",
        ),
        (
            get("/webui/index.html"),
            "proxy-webui@6099",
            "/webui/index.html",
        ),
        (
            get("/gemini/v1beta/models"),
            "proxy-gemini@8000",
            "/v1beta/models prefix=/gemini",
        ),
        (get("/gemini/"), "proxy-gemini@8000", "/ prefix=/gemini"),
        (get("/gemini"), "redirect 302 /gemini/", ""),
        (
            Req {
                headers: vec![("referer", "https://x/webui/login")],
                ..get("/assets/a.js")
            },
            "proxy-referer-webui@6099",
            "/assets/a.js",
        ),
        (
            Req {
                headers: vec![("referer", "https://x/gemini/")],
                ..get("/v1/chat")
            },
            "proxy-referer-gemini@8000",
            "/v1/chat",
        ),
        (get("/admin/routes.json"), "admin", ""),
        (
            Req {
                headers: vec![("referer", "https://x/webui/")],
                ..get("/admin/ui/")
            },
            "admin",
            "",
        ),
    ];
    for (req, want, want_path) in cases {
        let (got, path) = decide(&r, req);
        assert_eq!(
            (got.as_str(), path.as_str()),
            (*want, *want_path),
            "{} {}",
            req.method,
            req.path
        );
    }
}

#[test]
fn prefix_match_is_segment_aware() {
    let r = router(
        "",
        json!([
            {"id": "slash", "match": {"path_prefix": "/foo/"}, "backend": "http://127.0.0.1:1"},
            {"id": "bare", "match": {"path_prefix": "/bar"}, "backend": "http://127.0.0.1:2"}
        ]),
    );
    let cases = [
        ("/foo/", "slash@1"),
        ("/foo/x", "slash@1"),
        ("/foo", "none"),
        ("/foobar", "none"),
        ("/bar", "bare@2"),
        ("/bar/", "bare@2"),
        ("/bar/x", "bare@2"),
        ("/barn", "none"),
    ];
    for (path, want) in cases {
        assert_eq!(decide(&r, &get(path)).0, want, "{path}");
    }
}

#[test]
fn precedence_priority_then_prefix_length_then_referer_length_then_order() {
    let r = router(
        "",
        json!([
            {"id": "short", "match": {"path_prefix": "/a/"}, "backend": "http://127.0.0.1:1"},
            {"id": "long", "match": {"path_prefix": "/a/b/"}, "backend": "http://127.0.0.1:2"},
            {"id": "high", "priority": 10, "match": {"path_prefix": "/a/b/c/"}, "backend": "http://127.0.0.1:3"},
            {"id": "ref-short", "priority": 5, "match": {"referer_substr": "x"}, "backend": "http://127.0.0.1:4"},
            {"id": "ref-long", "priority": 5, "match": {"referer_substr": "xyz"}, "backend": "http://127.0.0.1:5"},
            {"id": "first", "priority": 1, "match": {"path_prefix": "/t/"}, "backend": "http://127.0.0.1:6"},
            {"id": "second", "priority": 1, "match": {"path_prefix": "/t/"}, "backend": "http://127.0.0.1:7"}
        ]),
    );
    let cases = [
        (get("/a/x"), "short@1"),
        (get("/a/b/x"), "long@2"),
        (get("/a/b/c/x"), "high@3"),
        (
            Req {
                headers: vec![("referer", "xyz")],
                ..get("/a/b/x")
            },
            "ref-long@5",
        ),
        (
            Req {
                headers: vec![("referer", "x")],
                ..get("/a/b/x")
            },
            "ref-short@4",
        ),
        (
            Req {
                headers: vec![("referer", "xyz")],
                ..get("/a/b/c/x")
            },
            "high@3",
        ),
        (get("/t/"), "first@6"),
    ];
    for (req, want) in cases {
        assert_eq!(decide(&r, &req).0, want, "{} {:?}", req.path, req.headers);
    }
}

#[test]
fn all_present_conditions_must_hold() {
    let r = router(
        "http://127.0.0.1:9",
        json!([
            {"id": "all", "match": {"path_prefix": "/x/", "method": "post", "host": "api.example.com",
              "referer_regex": "^https://app\\.", "headers": [{"name": "x-env", "contains": "prod"}, {"name": "x-key"}]},
             "backend": "http://127.0.0.1:1"}
        ]),
    );
    let ok = Req {
        method: "POST",
        path: "/x/y",
        query: None,
        host: Some("API.example.com:7860"),
        headers: vec![
            ("referer", "https://app.example.com/"),
            ("x-env", "staging"),
            ("x-env", "prod-eu"),
            ("x-key", ""),
        ],
    };
    assert_eq!(decide(&r, &ok).0, "all@1");
    let variants: Vec<Req<'_>> = vec![
        Req {
            method: "GET",
            ..Req {
                headers: ok.headers.clone(),
                ..ok
            }
        },
        Req {
            host: Some("other.example.com"),
            headers: ok.headers.clone(),
            ..ok
        },
        Req {
            host: None,
            headers: ok.headers.clone(),
            ..ok
        },
        Req {
            headers: vec![
                ("referer", "https://evil.app.example.com/"),
                ("x-env", "prod"),
                ("x-key", "1"),
            ],
            ..ok
        },
        Req {
            headers: vec![
                ("referer", "https://app.example.com/"),
                ("x-env", "staging"),
                ("x-key", "1"),
            ],
            ..ok
        },
        Req {
            headers: vec![("referer", "https://app.example.com/"), ("x-env", "prod")],
            ..ok
        },
        Req {
            path: "/x",
            headers: ok.headers.clone(),
            ..ok
        },
    ];
    for v in &variants {
        assert_eq!(
            decide(&r, v).0,
            "default@9",
            "{} {} {:?} {:?}",
            v.method,
            v.path,
            v.host,
            v.headers
        );
    }
}

#[test]
fn redirects_keep_the_query_and_map_prefixes() {
    let r = router(
        "",
        json!([
            {"id": "p", "action": "redirect", "match": {"path_prefix": "/napcat/"}, "redirect_to_prefix": "/webui/", "redirect_code": 308},
            {"id": "q", "action": "redirect", "match": {"path_equal": "/q"}, "redirect_to": "/target?x=1"},
            {"id": "bare", "action": "redirect", "match": {"path_prefix": "/old"}, "redirect_to_prefix": "/new"}
        ]),
    );
    let cases = [
        (
            Req {
                query: Some("t=2"),
                ..get("/napcat/a/b")
            },
            "redirect 308 /webui/a/b?t=2",
        ),
        (get("/napcat/"), "redirect 308 /webui/"),
        (
            Req {
                query: Some("y=2"),
                ..get("/q")
            },
            "redirect 302 /target?x=1&y=2",
        ),
        (get("/old/z"), "redirect 302 /new/z"),
        (get("/old"), "redirect 302 /new"),
    ];
    for (req, want) in cases {
        assert_eq!(decide(&r, &req).0, want, "{}", req.path);
    }
}

/// Issue 16: `/old/\evil.com` with `redirect_to_prefix: "/"` answered
/// `Location: /\evil.com`, which browsers follow to `//evil.com`.
#[test]
fn redirects_never_point_at_another_host() {
    let r = router(
        "",
        json!([
            {"id": "root", "action": "redirect", "match": {"path_prefix": "/old/"}, "redirect_to_prefix": "/"},
            {"id": "bare", "action": "redirect", "match": {"path_prefix": "/x"}, "redirect_to_prefix": "/"}
        ]),
    );
    let cases = [
        (get("/old/\\evil.com"), "redirect 302 /%5Cevil.com"),
        (get("/old/\\\\evil.com/a"), "redirect 302 /%5C%5Cevil.com/a"),
        (get("/x/\\evil.com"), "redirect 302 /%5Cevil.com"),
        (get("/old/a\\b"), "redirect 302 /a%5Cb"),
        (get("/old/fine"), "redirect 302 /fine"),
    ];
    for (req, want) in cases {
        assert_eq!(decide(&r, &req).0, want, "{}", req.path);
    }
}

#[test]
fn proxy_rule_without_backend_uses_the_default() {
    let r = router(
        "http://127.0.0.1:6185",
        json!([
            {"id": "h", "match": {"path_prefix": "/h/"}, "set_headers": {"X-A": "1"}}
        ]),
    );
    assert_eq!(decide(&r, &get("/h/x")).0, "h@6185");
    let none = router("", json!([{"id": "h", "match": {"path_prefix": "/h/"}}]));
    assert_eq!(decide(&none, &get("/h/x")).0, "none");
    assert_eq!(decide(&none, &get("/other")).0, "none");
}

#[test]
fn admin_is_reserved_even_when_reached_through_dot_segments() {
    let r = router(
        "http://127.0.0.1:1",
        json!([
            {"id": "all", "match": {"path_prefix": "/"}, "backend": "http://127.0.0.1:2"}
        ]),
    );
    assert_eq!(decide(&r, &get("/admin")).0, "admin");
    assert_eq!(decide(&r, &get("/webui/../admin/routes.json")).0, "admin");
    assert_eq!(decide(&r, &get("/administrator")).0, "all@2");
}

#[test]
fn etag_changes_with_the_table_and_is_stable() {
    let a = router("http://127.0.0.1:1", json!([]));
    let b = router("http://127.0.0.1:2", json!([]));
    assert_ne!(a.etag(), b.etag());
    assert_eq!(a.etag(), router("http://127.0.0.1:1", json!([])).etag());
    assert!(a.etag().starts_with('"') && a.etag().len() == 18);
}

/// The repository's `stack.yaml` route table, as a Space with Gemini
/// Balance on runs it.
fn deployment() -> Router {
    let file = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("stack.yaml");
    let text = std::fs::read_to_string(&file).unwrap();
    let env = [("API_KEYS", "[\"k\"]"), ("AUTH_TOKEN", "sk-t")]
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .into();
    let m = crate::manifest::load_str(&text, &file, &env).unwrap();
    let g = m.gateway.unwrap();
    let t = crate::gateway::rules::Table {
        default_backend: g.default_backend.unwrap_or_default(),
        rules: g.routes,
    };
    Router::new(t).unwrap()
}

#[test]
fn the_deployment_serves_gemini_balances_pages_under_its_prefix() {
    // Regression (issue 13, item 7): Gemini Balance's pages use absolute
    // paths — the login form posts to `/auth`, which redirects to
    // `/config`; the pages link `/keys` and `/logs`, load `/static/...`
    // and call `/api/...` and its native `/gemini/v1beta/...` — so they
    // landed on AstrBot. The shapes below are those its pages make (at
    // gemini-balance 2.1.6).
    let r = deployment();
    let page = |p: &str| format!("https://me-bot.hf.space{p}");
    let from = |method: &'static str, path: &'static str, referer: String| {
        let mut q = get(path);
        q.method = method;
        if !referer.is_empty() {
            q.headers = vec![("referer", &*Box::leak(referer.into_boxed_str()))];
        }
        q
    };
    let gemini = |want: &str, q: &Req<'_>| {
        let (rule, path) = decide(&r, q);
        assert!(
            rule.ends_with("@8000") && path.split(" prefix=").next() == Some(want),
            "{} {} (Referer {:?}) went to {rule} {path}, not Gemini Balance's {want}",
            q.method,
            q.path,
            q.headers
        );
    };
    gemini("/", &get("/gemini/"));
    gemini("/auth", &from("POST", "/auth", page("/gemini/")));
    // A failed login redirects to `/`: its form must still reach Gemini.
    gemini("/auth", &from("POST", "/auth", page("/")));
    for p in ["/config", "/keys", "/logs"] {
        gemini(p, &get(p));
        gemini(p, &from("GET", p, page("/config")));
    }
    for (method, path) in [
        ("GET", "/static/js/config_editor.js"),
        ("GET", "/static/icons/logo.png"),
        ("GET", "/api/config"),
        ("PUT", "/api/config"),
        ("GET", "/api/config/ui/models"),
        ("POST", "/api/scheduler/start"),
        ("GET", "/api/version/check"),
        ("GET", "/api/stats/details"),
        ("GET", "/api/key-usage-details/AIzaKEY"),
        ("DELETE", "/api/config/keys/AIzaKEY"),
        ("GET", "/api/logs/errors"),
    ] {
        for referer in ["/config", "/keys", "/logs", "/keys?x=1", "/gemini/"] {
            gemini(path, &from(method, path, page(referer)));
        }
    }
    // Its native API keeps its own prefix (the key actions live only there).
    for p in [
        "/gemini/v1beta/verify-key/AIzaKEY",
        "/gemini/v1beta/verify-selected-keys",
        "/gemini/v1beta/reset-fail-count/AIzaKEY",
        "/gemini/v1beta/models/gemini-2.5-pro:generateContent",
    ] {
        gemini(p, &from("POST", p, page("/keys")));
        gemini(p, &from("POST", p, String::new()));
    }
    // API clients use the stripped prefix for the other paths.
    gemini("/hf/v1/models", &get("/gemini/hf/v1/models"));
    gemini(
        "/v1/chat/completions",
        &from("POST", "/gemini/v1/chat/completions", String::new()),
    );

    // AstrBot and NapCat keep theirs (AstrBot's pages are `/#/...`, so
    // their Referer is the root).
    for (path, referer, want) in [
        ("/api/config/get", page("/"), "default@6185"),
        ("/api/stat/start-time", String::new(), "default@6185"),
        ("/config.js", page("/"), "default@6185"),
        ("/configure", page("/"), "default@6185"),
        ("/api/config", page("/configure"), "default@6185"),
        ("/api/ws/", page("/"), "napcat-ws@6099"),
        ("/webui/", String::new(), "webui@6099"),
        (
            "/api/QQLogin/CheckLoginStatus",
            page("/webui/"),
            "webui-referer@6099",
        ),
    ] {
        assert_eq!(
            decide(&r, &from("GET", path, referer.clone())).0,
            want,
            "{path} from {referer:?}"
        );
    }
}
