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
    // Issue 11: 10,000 `../` segments (and their encoded and interleaved
    // kin) must cost microseconds, not a second. What is measured is how
    // the cost grows, not a wall-clock bound (which failed on a busy
    // machine): each shape is normalised at `n` and at 32 `n` segments,
    // on this thread's CPU time (time spent waiting for a core does not
    // count), the fastest of several runs. A linear algorithm costs the
    // larger 32 times the smaller, give or take the caches (up to twice
    // that was seen); a quadratic one costs 1,024 times. The bound, 256
    // times, is four times away from both.
    const GROWTH: usize = 32;
    let n = 500;
    // A path of `n` segments of one shape, and what it normalises to.
    type Shape = fn(usize) -> (String, Result<String, PathError>);
    let shapes: [(&str, Shape); 6] = [
        ("../", |n| {
            (format!("/{}", "../".repeat(n)), Err(PathError::EscapesRoot))
        }),
        ("a/ then ../", |n| {
            let raw = format!("/{}", "a/".repeat(n) + &"../".repeat(n));
            (raw, Ok("/".to_string()))
        }),
        ("/b/..", |n| {
            (format!("/a{}", "/b/..".repeat(n)), Ok("/a/".to_string()))
        }),
        ("%2e%2e/", |n| {
            let raw = format!("/{}x", "%2e%2e/".repeat(n));
            (raw, Err(PathError::EscapesRoot))
        }),
        ("%c3%a9/./", |n| {
            let raw = format!("/{}", "%c3%a9/./".repeat(n));
            (raw, Ok("/%C3%A9".repeat(n) + "/"))
        }),
        ("/", |n| {
            (format!("/{}", "/".repeat(4 * n)), Ok("/".to_string()))
        }),
    ];
    let cpu_now = || {
        nix::time::clock_gettime(nix::time::ClockId::CLOCK_THREAD_CPUTIME_ID)
            .map(std::time::Duration::from)
            .expect("this thread's CPU clock")
    };
    let fastest = |raw: &str, want: &Result<String, PathError>| {
        (0..7)
            .map(|_| {
                let started = cpu_now();
                let got = normalize_path(raw).map(Cow::into_owned);
                let took = cpu_now().saturating_sub(started);
                assert_eq!(&got, want);
                took
            })
            .min()
            .unwrap_or_default()
    };
    for (shape, make) in shapes {
        let (small, small_want) = make(n);
        let (large, large_want) = make(GROWTH * n);
        let t_small = fastest(&small, &small_want);
        let t_large = fastest(&large, &large_want);
        // A floor of 1 µs for the small one: a clock too coarse to see it
        // must not turn the bound into zero.
        let bound = 8 * GROWTH as u32 * t_small.max(std::time::Duration::from_micros(1));
        assert!(
            t_large <= bound,
            "{shape}: {t_large:?} for {} segments, {t_small:?} for {n}",
            GROWTH * n
        );
    }
}
