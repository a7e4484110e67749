use super::*;

#[test]
fn backend_targets_keep_the_query_and_reuse_the_clients_target() {
    let cases = [
        ("/a/b?x=1", "/a/b", Some("x=1"), "/a/b?x=1", true),
        ("/gemini/v1?x=1", "/v1", Some("x=1"), "/v1?x=1", false),
        ("/gemini/", "/", None, "/", false),
        ("", "/a", Some("q"), "/a?q", false),
        ("/a//b", "/a/b", None, "/a/b", false),
        ("/a?", "/a", Some(""), "/a?", true),
    ];
    for (client, path, query, want, reused) in cases {
        let got = backend_target(client, path, query);
        assert_eq!(got, want, "{client}");
        assert_eq!(
            matches!(got, Cow::Borrowed(t) if std::ptr::eq(t, client)),
            reused,
            "{client}"
        );
    }
}

#[test]
fn path_normalisation() {
    let ok = [
        ("", "/"),
        ("/", "/"),
        ("/a/b", "/a/b"),
        ("/a//b", "/a/b"),
        ("/a/./b", "/a/b"),
        ("/a/b/../c", "/a/c"),
        ("/a/b/..", "/a/"),
        ("/a/.", "/a/"),
        ("/a/b/", "/a/b/"),
        ("/%61dmin/", "/admin/"),
        ("/x/%2e%2e/admin/ui/", "/admin/ui/"),
        ("/a%20b", "/a%20b"),
        ("/a%7e", "/a~"),
        ("/%c3%a9", "/%C3%A9"),
        ("//admin/", "/admin/"),
        ("/webui/.%2E/gemini", "/gemini"),
        ("/a/...", "/a/..."),
        // Issue 16: raw UTF-8 stays the same bytes when normalised.
        ("/caf\u{e9}//x", "/caf\u{e9}/x"),
        ("/\u{5bc6}/./%41/\u{1f600}//", "/\u{5bc6}/A/\u{1f600}/"),
    ];
    for (raw, want) in ok {
        assert_eq!(normalize_path(raw).as_deref(), Ok(want), "{raw}");
    }
    let bad = [
        ("/a%2Fb", PathError::EncodedSeparator),
        ("/a%2fb", PathError::EncodedSeparator),
        ("/a%5cb", PathError::EncodedSeparator),
        ("/a%00", PathError::EncodedSeparator),
        ("/..", PathError::EscapesRoot),
        ("/a/../../b", PathError::EscapesRoot),
        ("/%2e%2e/etc", PathError::EscapesRoot),
        ("/a%zz", PathError::BadEscape),
        ("/a%2", PathError::BadEscape),
        ("a/b", PathError::NotAbsolute),
    ];
    for (raw, want) in bad {
        assert_eq!(normalize_path(raw), Err(want), "{raw}");
    }
}

#[test]
fn normalisation_is_linear_in_the_path_length() {
    // Issue 11: 10,000 `../` segments (and their encoded and
    // interleaved kin) must cost microseconds, not a second. The bound
    // is generous for a debug build on a busy machine; a quadratic
    // algorithm takes seconds here.
    let n = 10_000;
    let cases = [
        (format!("/{}", "../".repeat(n)), Err(PathError::EscapesRoot)),
        (
            format!("/{}", "a/".repeat(n) + &"../".repeat(n)),
            Ok("/".to_string()),
        ),
        (format!("/a{}", "/b/..".repeat(n)), Ok("/a/".to_string())),
        (
            format!("/{}x", "%2e%2e/".repeat(n)),
            Err(PathError::EscapesRoot),
        ),
        (
            format!("/{}", "%c3%a9/./".repeat(n)),
            Ok("/%C3%A9".repeat(n) + "/"),
        ),
        (format!("/{}", "/".repeat(4 * n)), Ok("/".to_string())),
    ];
    for (raw, want) in cases {
        let started = std::time::Instant::now();
        let got = normalize_path(&raw).map(Cow::into_owned);
        let took = started.elapsed();
        assert_eq!(got, want, "{}…", &raw[..20]);
        assert!(
            took < std::time::Duration::from_millis(50),
            "{took:?} for {}…",
            &raw[..20]
        );
    }
}
