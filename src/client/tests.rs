//! Unit tests of the admin client: URLs, table edits, the status view, and
//! calls against fake gateways (real sockets on 127.0.0.1).

use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;

use serde_json::{json, Value};

use super::admin::{read_password_file, IO_TIMEOUT};
use super::http::{BaseUrl, Transport};
use super::table::*;
use super::*;
use std::net::TcpListener;
use std::sync::mpsc;
use std::thread;

// ------------------------------------------------------------ URLs

/// Where a base URL connects and what it prefixes: scheme, host, port, path.
fn parts(u: &BaseUrl) -> (&str, String, u16, &str) {
    (
        u.url.scheme(),
        u.url.host_str().unwrap_or_default().to_string(),
        u.url.port_or_known_default().unwrap_or(0),
        u.url.path().trim_end_matches('/'),
    )
}

#[test]
fn unspecified_listen_addresses_become_loopback() {
    let v4 = BaseUrl::from_listen("0.0.0.0:7860".parse().unwrap()).unwrap();
    assert_eq!(v4.display, "http://127.0.0.1:7860");
    let v6 = BaseUrl::from_listen("[::]:7860".parse().unwrap()).unwrap();
    assert_eq!(v6.display, "http://[::1]:7860");
    let specific = BaseUrl::from_listen("10.1.2.3:80".parse().unwrap()).unwrap();
    assert_eq!(parts(&specific), ("http", "10.1.2.3".into(), 80, ""));
}

/// Issue 14: a Space is reached through its host's HTTPS proxy, on 443.
#[test]
fn url_flag_accepts_urls_and_host_port() {
    for (given, (scheme, host, port, path), display) in [
        (
            "http://localhost:9000/",
            ("http", "localhost", 9000, ""),
            "http://localhost:9000",
        ),
        (
            "127.0.0.1:7860",
            ("http", "127.0.0.1", 7860, ""),
            "http://127.0.0.1:7860",
        ),
        (
            "http://example.org/sub/",
            ("http", "example.org", 80, "/sub"),
            "http://example.org/sub",
        ),
        (
            "http://[::1]:8080",
            ("http", "[::1]", 8080, ""),
            "http://[::1]:8080",
        ),
        ("http://[::1]", ("http", "[::1]", 80, ""), "http://[::1]"),
        (
            "https://user-space.hf.space/",
            ("https", "user-space.hf.space", 443, ""),
            "https://user-space.hf.space",
        ),
        (
            "https://example.org:8443/x",
            ("https", "example.org", 8443, "/x"),
            "https://example.org:8443/x",
        ),
    ] {
        let u = BaseUrl::parse(given).unwrap();
        assert_eq!(parts(&u), (scheme, host.to_string(), port, path), "{given}");
        assert_eq!(u.display, display);
    }
}

#[test]
fn url_flag_refuses_userinfo_odd_schemes_and_bad_ports() {
    let err = |u: &str| BaseUrl::parse(u).unwrap_err().to_string();
    assert!(err("http://user:pw@host:1").contains("not a usable gateway URL"));
    assert!(err("https://user:pw@host").contains("not a usable gateway URL"));
    assert!(err("https://host?x=1").contains("not a usable gateway URL"));
    assert!(err("https://host#x").contains("not a usable gateway URL"));
    // The URL grammar would drop the line break and reach `example.org`.
    assert!(err("http://exa\nmple.org").contains("not a usable gateway URL"));
    assert!(err("http://").contains("not a usable gateway URL"));
    assert_eq!(
        err("http://host:port"),
        "`http://host:port`: `port` is not a port number"
    );
    assert_eq!(
        err("127.0.0.1:99999"),
        "`127.0.0.1:99999`: `99999` is not a port number"
    );
    assert!(err("ftp://host").contains("not an http:// or https:// URL"));
}

/// TLS to something that is not TLS fails with a message, not a hang or
/// a panic.
#[test]
fn https_to_a_plain_http_server_says_so() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    thread::spawn(move || {
        if let Ok((mut s, _)) = listener.accept() {
            let mut buf = [0u8; 512];
            let _ = s.read(&mut buf);
            let _ = s.write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n");
        }
    });
    let mut a = admin(
        &format!("https://127.0.0.1:{port}"),
        vec![("pw", Source::Flag)],
    );
    let err = a
        .call("GET", "/admin/status", None, None)
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with(&format!("TLS with https://127.0.0.1:{port} failed: "))
            && err.contains("is it an https server"),
        "{err}"
    );
}

// ------------------------------------------------------------ table edits

#[test]
fn ids_derive_from_prefixes() {
    for (prefix, id) in [
        ("/gemini/", "gemini"),
        ("/api/ws/", "api-ws"),
        ("/", "root"),
        ("/WebUI", "webui"),
        ("/a__b/c.d/", "a-b-c-d"),
    ] {
        assert_eq!(id_from_prefix(prefix), id, "{prefix}");
    }
}

fn table() -> Value {
    json!({
        "default_backend": "http://127.0.0.1:6185",
        "rules": [
            { "id": "ws", "priority": 0, "action": "proxy", "backend": "http://127.0.0.1:6099",
              "match": { "path_prefix": "/api/ws/" } },
            { "id": "webui-assets", "priority": 190, "action": "proxy", "backend": "http://127.0.0.1:6099",
              "match": { "referer_substr": "/webui/" } },
            { "id": "gemini", "priority": 0, "backend": "http://127.0.0.1:8000", "strip_prefix": true,
              "set_headers": { "X-A": "1" }, "match": { "path_prefix": "/gemini/" } }
        ]
    })
}

#[test]
fn set_replaces_the_plain_rule_for_the_same_prefix_in_place() {
    let mut t = table();
    let rules = rules_mut(&mut t).unwrap();
    let id = simple_prefix_rule(rules, "/api/ws/").unwrap();
    assert_eq!(id, "ws");
    assert!(upsert(
        rules,
        prefix_rule(&id, "/api/ws/", "http://127.0.0.1:7000", false, 0)
    ));
    assert_eq!(rules.len(), 3);
    assert_eq!(rules[0]["backend"], "http://127.0.0.1:7000");
}

#[test]
fn set_appends_a_new_rule_without_empty_fields() {
    let mut t = table();
    let rules = rules_mut(&mut t).unwrap();
    assert_eq!(simple_prefix_rule(rules, "/new/"), None);
    assert!(!upsert(
        rules,
        prefix_rule("new", "/new/", "http://127.0.0.1:1", false, 5)
    ));
    assert_eq!(
        rules[3],
        json!({ "id": "new", "priority": 5, "action": "proxy", "backend": "http://127.0.0.1:1",
                "match": { "path_prefix": "/new/" } })
    );
    let with_strip = prefix_rule("s", "/s/", "http://127.0.0.1:1", true, 0);
    assert_eq!(with_strip["strip_prefix"], true);
}

#[test]
fn rm_takes_an_id_or_a_unique_prefix() {
    let mut t = table();
    let rules = rules_mut(&mut t).unwrap();
    assert_eq!(remove(rules, "webui-assets").unwrap(), "webui-assets");
    assert_eq!(remove(rules, "/gemini/").unwrap(), "gemini");
    assert_eq!(rules.len(), 1);
}

#[test]
fn rm_of_an_unknown_rule_lists_the_ids() {
    let mut t = table();
    let err = remove(rules_mut(&mut t).unwrap(), "/nope/")
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "no rule has the id or path prefix `/nope/`; the ids are `ws`, `webui-assets`, `gemini`"
    );
    let mut empty = json!({ "rules": [] });
    let err = remove(rules_mut(&mut empty).unwrap(), "x")
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "no rule has the id or path prefix `x`: the table has no rules"
    );
}

#[test]
fn rm_of_an_ambiguous_prefix_asks_for_an_id() {
    let mut t = json!({ "rules": [
        { "id": "a", "match": { "path_prefix": "/x/" } },
        { "id": "b", "match": { "path_prefix": "/x/", "method": "POST" } }
    ]});
    let err = remove(rules_mut(&mut t).unwrap(), "/x/")
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "several rules have the path prefix `/x/` (`a`, `b`); remove one by its id"
    );
}

#[test]
fn post_body_keeps_rules_and_a_non_empty_default() {
    assert_eq!(
        post_body(&json!({ "default_backend": "", "rules": [] })),
        json!({ "rules": [] })
    );
    let body = post_body(&table());
    assert_eq!(body["default_backend"], "http://127.0.0.1:6185");
    assert_eq!(body["rules"].as_array().map(Vec::len), Some(3));
}

// ------------------------------------------------------------ status

#[test]
fn status_renders_a_service_table_and_the_rest() {
    let text = render_status(&json!({
        "restored": true,
        "services": {
            "web": { "phase": "ready", "pid": 1234, "restarts": 0, "last_exit": null },
            "bot": { "phase": "backoff", "pid": null, "restarts": 12, "last_exit": "exited 1" }
        },
        "backup": { "last_snapshot": "abc123", "pending": false }
    }));
    assert_eq!(
        text,
        "SERVICE  PHASE    PID   RESTARTS  LAST EXIT\n\
         bot      backoff  -     12        exited 1\n\
         web      ready    1234  0         -\n\
         \n\
         restored: yes\n\
         backup:\n  last_snapshot: abc123\n  pending: false\n"
    );
}

#[test]
fn status_survives_odd_shapes() {
    let text = render_status(
        &json!({ "services": "?", "backup": null, "gateway": { "listen": "0.0.0.0:1" } }),
    );
    assert_eq!(
        text,
        "no services\n\ngateway:\n  listen: 0.0.0.0:1\nbackup: not configured\n"
    );
    assert_eq!(
        render_status(&json!([])),
        "no services\n\nbackup: not configured\n"
    );
}

// ------------------------------------------------------------ hostile answers

/// Serves each raw answer to one connection, after reading the request head.
fn raw_server(answers: Vec<Vec<u8>>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    thread::spawn(move || {
        for answer in answers {
            let Ok((stream, _)) = listener.accept() else {
                return;
            };
            let mut r = BufReader::new(stream);
            let mut line = String::new();
            while r.read_line(&mut line).is_ok_and(|n| n > 0) && line != "\r\n" {
                line.clear();
            }
            let _ = r.get_mut().write_all(&answer);
        }
    });
    url
}

/// Issue 11: whatever answers on the admin port, the client returns an
/// error that says so and never panics or grows without bound.
#[test]
fn hostile_answers_are_errors_not_panics() {
    let chunked = |rest: &str| {
        format!("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n{rest}").into_bytes()
    };
    let mut oversized = b"HTTP/1.1 200 OK\r\n\r\n".to_vec();
    oversized.resize(17 << 20, b'a');
    let cases = vec![
        b"SSH-2.0-OpenSSH\r\n".to_vec(),
        chunked("ffffffffffffffff\r\n"),
        chunked("-1\r\n"),
        chunked("5\r\nhel"),
        b"HTTP/1.1 200 OK\r\nContent-Length: 18446744073709551615\r\n\r\n".to_vec(),
        b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n".to_vec(),
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nab".to_vec(),
        b"HTTP/1.1 99999 OK\r\n\r\n".to_vec(),
        b"HTTP/1.1 200 OK\r\n".to_vec(),
        b"".to_vec(),
        oversized,
    ];
    let n = cases.len();
    let url = raw_server(cases);
    let mut a = admin(&url, vec![("pw", Source::Flag)]);
    for i in 0..n {
        let err = a
            .call("GET", "/admin/status", None, None)
            .unwrap_err()
            .to_string();
        assert!(err.contains(&url) && !err.contains("pw"), "case {i}: {err}");
    }
}

/// A redirect is an error that names it: the password header never goes
/// to the `Location`, which gets no request at all.
#[test]
fn redirects_are_never_followed() {
    let elsewhere = TcpListener::bind("127.0.0.1:0").unwrap();
    elsewhere.set_nonblocking(true).unwrap();
    let target = format!("http://{}/admin/status", elsewhere.local_addr().unwrap());
    let (url, seen) = fake_gateway(vec![answer(
        "302 Found",
        &format!("Location: {target}\r\n"),
        "",
    )]);
    let mut a = admin(&url, vec![("secret-pass-1", Source::Flag)]);
    let err = a
        .call("GET", "/admin/status", None, None)
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        format!("the gateway at {url} answered 302 (a redirect to {target}) to GET /admin/status; stackctl never follows redirects, so the admin password is not sent elsewhere: pass the address the stack answers on with --url")
    );
    assert!(seen.recv().unwrap().starts_with("GET /admin/status "));
    assert!(elsewhere.accept().is_err(), "the redirect was followed");
}

// ------------------------------------------------------------ against a fake gateway

/// A one-shot fake gateway: answers each accepted connection with the next
/// canned response and reports the requests it saw.
pub(crate) fn fake_gateway(answers: Vec<String>) -> (String, mpsc::Receiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for answer in answers {
            let (stream, _) = listener.accept().unwrap();
            let mut r = BufReader::new(stream);
            let mut request = String::new();
            let mut len = 0;
            loop {
                let mut line = String::new();
                r.read_line(&mut line).unwrap();
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap();
                }
                request.push_str(&line);
                if line == "\r\n" {
                    break;
                }
            }
            let mut body = vec![0; len];
            r.read_exact(&mut body).unwrap();
            request.push_str(&String::from_utf8(body).unwrap());
            tx.send(request).unwrap();
            r.get_mut().write_all(answer.as_bytes()).unwrap();
        }
    });
    (url, rx)
}

pub(crate) fn answer(status: &str, extra: &str, body: &str) -> String {
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\n{extra}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

pub(crate) fn admin(url: &str, passwords: Vec<(&str, Source)>) -> Admin {
    Admin {
        base: BaseUrl::parse(url).unwrap(),
        transport: Transport::new().unwrap(),
        candidates: passwords
            .into_iter()
            .map(|(p, s)| (p.to_string(), s))
            .collect(),
        password_file: Some(PathBuf::from(
            "/home/u/.config/stackctl/demo.admin-password",
        )),
        timeout: IO_TIMEOUT,
    }
}

#[test]
fn modify_sends_if_match_and_the_password_header() {
    let table = r#"{"default_backend":"http://127.0.0.1:1","rules":[]}"#;
    let (url, seen) = fake_gateway(vec![
        answer("200 OK", "ETag: \"t1\"\r\n", table),
        answer("200 OK", "", r#"{"ok":true}"#),
    ]);
    let mut a = admin(&url, vec![("secret-pass-1", Source::Flag)]);
    a.modify(|t| {
        upsert(
            rules_mut(t)?,
            prefix_rule("x", "/x/", "http://127.0.0.1:2", false, 0),
        );
        Ok(())
    })
    .unwrap();
    let get = seen.recv().unwrap();
    assert!(
        get.starts_with("GET /admin/routes.json HTTP/1.1\r\n"),
        "{get}"
    );
    assert!(get.contains("X-Admin-Password: secret-pass-1\r\n"));
    let post = seen.recv().unwrap();
    assert!(
        post.starts_with("POST /admin/routes.json HTTP/1.1\r\n"),
        "{post}"
    );
    assert!(post.contains("If-Match: \"t1\"\r\n"));
    assert!(post.contains("Content-Type: application/json\r\n"));
    assert!(post.ends_with(
        r#"{"default_backend":"http://127.0.0.1:1","rules":[{"action":"proxy","backend":"http://127.0.0.1:2","id":"x","match":{"path_prefix":"/x/"},"priority":0}]}"#
    ));
}

#[test]
fn modify_starts_over_on_412() {
    let table = r#"{"rules":[]}"#;
    let (url, seen) = fake_gateway(vec![
        answer("200 OK", "ETag: \"t1\"\r\n", table),
        answer("412 Precondition Failed", "", r#"{"error":"stale"}"#),
        answer("200 OK", "ETag: \"t2\"\r\n", table),
        answer("200 OK", "", r#"{"ok":true}"#),
    ]);
    let mut a = admin(&url, vec![("pw", Source::Flag)]);
    a.modify(|_| Ok(())).unwrap();
    let requests: Vec<String> = seen.iter().take(4).collect();
    assert!(requests[3].contains("If-Match: \"t2\"\r\n"));
}

#[test]
fn errors_teach_the_fix() {
    let (url, _seen) = fake_gateway(vec![
        answer("403 Forbidden", "", r#"{"error":"forbidden"}"#),
        answer(
            "429 Too Many Requests",
            "Retry-After: 17\r\n",
            r#"{"error":"slow down"}"#,
        ),
        answer(
            "400 Bad Request",
            "",
            r#"{"error":"rule `x`: backend: not allowed"}"#,
        ),
        answer("404 Not Found", "", "nothing here"),
    ]);
    let mut a = admin(&url, vec![("pw", Source::Flag)]);
    let mut err = || {
        a.call("GET", "/admin/status", None, None)
            .unwrap_err()
            .to_string()
    };
    assert_eq!(
        err(),
        "wrong admin password: pass --password, set STACKCTL_ADMIN_PASSWORD, or check `/home/u/.config/stackctl/demo.admin-password`"
    );
    assert_eq!(err(), "too many wrong passwords; retry in 17 s");
    assert_eq!(err(), "rule `x`: backend: not allowed");
    assert_eq!(
        err(),
        format!("the gateway at {url} answered 404 to GET /admin/status: nothing here")
    );
}

#[test]
fn a_wrong_file_password_falls_back_to_the_manifest_one() {
    let (url, seen) = fake_gateway(vec![
        answer("403 Forbidden", "", r#"{"error":"forbidden"}"#),
        answer("200 OK", "", r#"{"ok":true}"#),
    ]);
    let mut a = admin(
        &url,
        vec![
            ("old-file-pw", Source::File(PathBuf::from("/x"))),
            ("manifest-pw", Source::Manifest),
        ],
    );
    assert_eq!(
        a.call("GET", "/admin/status", None, None).unwrap().status,
        200
    );
    assert!(seen
        .recv()
        .unwrap()
        .contains("X-Admin-Password: old-file-pw\r\n"));
    assert!(seen
        .recv()
        .unwrap()
        .contains("X-Admin-Password: manifest-pw\r\n"));
}

#[test]
fn no_gateway_says_how_to_start_one() {
    // Bind then drop, so the port is (almost certainly) closed.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let mut a = admin(&url, vec![("pw", Source::Flag)]);
    let err = a
        .call("GET", "/admin/status", None, None)
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        format!("no gateway answers at {url} — is `stackctl up` running? (use --url to point elsewhere)")
    );
}

#[test]
fn a_password_with_a_line_break_is_never_sent() {
    let mut a = admin(
        "http://127.0.0.1:9",
        vec![("pw\r\nX-Evil: 1", Source::Flag)],
    );
    let err = a
        .call("GET", "/admin/status", None, None)
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "the admin password contains a line break, which cannot be sent"
    );
}

#[test]
fn password_change_updates_the_file_it_came_from() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("demo.admin-password");
    std::fs::write(&file, "old-password-1\n").unwrap();
    assert_eq!(
        read_password_file(&file).unwrap().as_deref(),
        Some("old-password-1")
    );
    let (url, seen) = fake_gateway(vec![answer("200 OK", "", r#"{"ok":true}"#)]);
    let mut a = admin(&url, vec![("old-password-1", Source::File(file.clone()))]);
    let note = a.change_password("new-password-2").unwrap();
    assert_eq!(note, format!("; updated `{}`", file.display()));
    assert!(seen
        .recv()
        .unwrap()
        .ends_with(r#"{"new_password":"new-password-2"}"#));
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "new-password-2\n");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(
        read_password_file(&dir.path().join("missing")).unwrap(),
        None
    );
}
