use super::*;

#[test]
fn remotes_resolve() {
    let gh = |s: &str| Some(s.to_string());
    let table: &[(&str, Option<String>, bool)] = &[
        ("owner/repo", gh("https://github.com/owner/repo.git"), false),
        (
            "MoYang-king/astr_bot.backup",
            gh("https://github.com/MoYang-king/astr_bot.backup.git"),
            false,
        ),
        (
            "owner/repo.git",
            gh("https://github.com/owner/repo.git"),
            false,
        ),
        (
            "https://example.org/x/y.git",
            gh("https://example.org/x/y.git"),
            false,
        ),
        ("ssh://git@example.org/x/y.git", None, false),
        ("git@github.com:o/r.git", None, false),
        ("/srv/backup.git", gh("/srv/backup.git"), true),
        ("file:///srv/backup.git", gh("file:///srv/backup.git"), true),
        (
            "https://x-access-token:ghp_secret@github.com/o/r.git",
            None,
            false,
        ),
        ("ftp://x/y", None, false),
        ("owner/repo/extra", None, false),
        ("../x", None, false),
        ("", None, false),
        ("file://relative", None, false),
    ];
    for (input, want, local) in table {
        let got = resolve_url(input);
        assert_eq!(got.as_ref().ok().map(|u| u.url.clone()), *want, "{input}");
        if let Ok(u) = got {
            assert_eq!(u.local.is_some(), *local, "{input}");
            assert_eq!(u.shallow_ok, !local, "{input}");
        }
    }
}

#[test]
fn a_refused_url_does_not_echo_its_token() {
    let e = resolve_url("https://x-access-token:ghp_secret@github.com/o/r.git").unwrap_err();
    assert!(!e.to_string().contains("ghp_secret"), "{e}");
}

/// Issue 12 item 5: a query-string token or an ssh password is in no
/// message about the remote.
#[test]
fn messages_about_the_remote_hide_credentials_in_its_url() {
    for (url, secret) in [
        ("https://h/o/r.git?access_token=ghp_query", "ghp_query"),
        ("ssh://git:hunter2pw@h/o/r.git", "hunter2pw"),
    ] {
        // (SSH is refused by resolve_url now; the message still hides it.)
        let remote = RemoteUrl {
            url: url.into(),
            local: None,
            shallow_ok: true,
        };
        let r = Remote::new(remote, None, "main");
        assert!(!r.url().contains(secret), "{}", r.url());
        let e = git2::Error::new(
            git2::ErrorCode::GenericError,
            git2::ErrorClass::Net,
            format!("failed to connect to '{url}': refused"),
        );
        let shown = r.classify(&e, &Cell::new(0)).to_string();
        assert!(!shown.contains(secret), "{shown}");
        assert!(shown.contains("h/o/r.git"), "{shown}");
    }
}

/// Issue 17 item 8: SSH is refused up front; a full disk, a permission
/// problem or an unknown protocol is not a network error.
#[test]
fn errors_are_classified_by_what_they_are() {
    let e = resolve_url("ssh://git:pw@example.org/x/y.git").unwrap_err();
    assert!(matches!(e, RemoteError::Unsupported { .. }), "{e:?}");
    assert!(e.to_string().contains("not SSH") && !e.to_string().contains("pw@"));
    assert!(is_ssh("git@github.com:o/r.git"));
    assert!(!is_ssh("https://github.com/o/r.git") && !is_ssh("/srv/a:b@c"));
    let r = Remote::new(resolve_url("/srv/backup.git").unwrap(), None, "main");
    let class = |class, msg: &str| {
        let e = git2::Error::new(git2::ErrorCode::GenericError, class, msg);
        r.classify(&e, &Cell::new(0))
    };
    use git2::ErrorClass as C;
    for (c, msg) in [
        (
            C::Os,
            "failed to write '/w/objects/ab': No space left on device",
        ),
        (C::Os, "could not open '/w/x.lock': Permission denied"),
        (C::Odb, "no error"),
        (
            C::Filesystem,
            "failed to make directory: Read-only file system",
        ),
    ] {
        let e = class(c, msg);
        assert!(matches!(e, RemoteError::Storage { .. }), "{msg}: {e:?}");
        assert!(!e.is_retryable());
        assert!(!e.to_string().contains(": no error"), "{e}");
    }
    let e = class(C::Net, "unsupported URL protocol");
    assert!(matches!(e, RemoteError::Unsupported { .. }), "{e:?}");
    let e = class(C::Os, "failed to connect to 127.0.0.1: Connection refused");
    assert!(e.is_retryable(), "{e:?}");
}

#[test]
fn scrub_hides_the_token() {
    let r = Remote::new(
        resolve_url("owner/repo").unwrap(),
        Some("tok-123456".into()),
        "main",
    );
    assert_eq!(r.scrub("failed for tok-123456 at x"), "failed for *** at x");
}

#[test]
fn retries_only_retryable_errors() {
    let quick = crate::persist::retry::Policy {
        attempts: 3,
        initial: Duration::ZERO,
        max: Duration::ZERO,
    };
    let mut n = 0;
    let r: Result<(), _> = with_retries(quick, || {
        n += 1;
        Err(RemoteError::Network {
            url: "u".into(),
            message: "down".into(),
        })
    });
    assert!(r.is_err());
    assert_eq!(n, 3);
    let mut n = 0;
    let r: Result<(), _> = with_retries(quick, || {
        n += 1;
        Err(RemoteError::Rejected {
            refname: "r".into(),
            message: "m".into(),
        })
    });
    assert!(r.is_err());
    assert_eq!(n, 1);
}
