use super::*;
use std::time::Duration;

#[test]
fn hash_and_verify() {
    let h = hash_password("correct horse battery").unwrap();
    assert!(h.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{h}");
    assert!(verify_password(&h, "correct horse battery"));
    assert!(!verify_password(&h, "correct horse batterY"));
    assert!(!verify_password("not a hash", "x"));
    assert!(check_hash(&h).is_ok());
    assert!(check_hash("plaintext").is_err());
}

#[test]
fn only_passwords_a_header_can_carry_are_accepted() {
    let ok = [
        "correct horse",
        "0123456789",
        "~!@#$%^&*()_+{}|:\"<>?",
        "a b c d e f",
    ];
    for pw in ok {
        assert_eq!(password_problem(pw), None, "{pw:?}");
    }
    let long = "x".repeat(1025);
    let bad = [
        ("short", "too short (5 characters); use at least 10"),
        (
            "caf\u{e9}-caf\u{e9}-caf\u{e9}",
            "contains `\u{e9}`; use printable ASCII only",
        ),
        (
            "\u{5bc6}\u{7801}\u{5bc6}\u{7801}\u{5bc6}\u{7801}\u{5bc6}\u{7801}\u{5bc6}\u{7801}",
            "contains `\u{5bc6}`",
        ),
        ("tab\there-long", "contains a control character"),
        (" padded-password", "starts or ends with a space"),
        ("padded-password ", "starts or ends with a space"),
        (&long, "too long (1025 bytes)"),
    ];
    for (pw, want) in bad {
        let got = password_problem(pw).unwrap_or_default();
        assert!(got.starts_with(want), "{pw:?}: {got}");
    }
    assert_eq!(password_problem(&generate_password()), None);
}

#[test]
fn generated_passwords_are_long_and_distinct() {
    let a = generate_password();
    assert_eq!(a.len(), 24);
    assert!(a.len() >= MIN_PASSWORD_LEN);
    assert_ne!(a, generate_password());
}

#[test]
fn per_ip_limit_then_refill() {
    let cfg = LimitConfig {
        ip_burst: 3.0,
        ip_refill: 0.5,
        global_burst: 100.0,
        global_refill: 1.0,
    };
    let mut l = Limiter::new(cfg);
    let t0 = Instant::now();
    let a: IpAddr = "192.0.2.1".parse().unwrap();
    let b: IpAddr = "192.0.2.2".parse().unwrap();
    for _ in 0..3 {
        assert_eq!(l.check(a, false, t0), Ok(()));
        l.failure(a, t0);
    }
    assert_eq!(l.check(a, false, t0), Err(2));
    assert_eq!(
        l.check(b, false, t0),
        Ok(()),
        "another client is not affected"
    );
    assert_eq!(l.check(a, false, t0 + Duration::from_secs(1)), Err(1));
    assert_eq!(l.check(a, false, t0 + Duration::from_secs(2)), Ok(()));
}

#[test]
fn global_limit_covers_many_ips() {
    let cfg = LimitConfig {
        ip_burst: 10.0,
        ip_refill: 1.0,
        global_burst: 5.0,
        global_refill: 0.25,
    };
    let mut l = Limiter::new(cfg);
    let t0 = Instant::now();
    for i in 0..5u8 {
        l.failure(IpAddr::from([198, 51, 100, i]), t0);
    }
    assert_eq!(l.check("203.0.113.1".parse().unwrap(), false, t0), Err(4));
    assert_eq!(
        l.check(
            "203.0.113.1".parse().unwrap(),
            false,
            t0 + Duration::from_secs(4)
        ),
        Ok(())
    );
}

#[tokio::test]
async fn auth_checks_and_limits() {
    let h = hash_password("right-password").unwrap();
    let cfg = LimitConfig {
        ip_burst: 2.0,
        ip_refill: 0.01,
        global_burst: 100.0,
        global_refill: 1.0,
    };
    let auth = Auth::new(h, cfg);
    let ip: IpAddr = "192.0.2.7".parse().unwrap();
    let token = auth
        .check(ip, Some("right-password"), None)
        .await
        .expect("right password")
        .expect("a device token for a request without one");
    assert_eq!(
        auth.check(ip, Some("right-password"), Some(&token)).await,
        Ok(None),
        "cached digest path; the valid token is not handed out again"
    );
    assert_eq!(auth.check(ip, None, None).await, Err(HttpError::Forbidden));
    assert_eq!(
        auth.check(ip, Some("wrong"), None).await,
        Err(HttpError::Forbidden)
    );
    assert!(
        matches!(
            auth.check(ip, Some("right-password"), Some(&token)).await,
            Err(HttpError::RateLimited(_))
        ),
        "a device cookie does not lift the address's own limit"
    );
    auth.set_hash(hash_password("another-password").unwrap());
    let other: IpAddr = "192.0.2.8".parse().unwrap();
    assert_eq!(
        auth.check(other, Some("right-password"), None).await,
        Err(HttpError::Forbidden)
    );
    assert!(auth
        .check(other, Some("another-password"), None)
        .await
        .is_ok());
}

/// Issue 16: 150 wrong tries from 15 addresses (and then six addresses
/// at one try a second) kept the owner's correct password at 429.
#[test]
fn strangers_do_not_lock_out_known_clients() {
    let mut l = Limiter::new(LimitConfig::default());
    let t0 = Instant::now();
    let owner: IpAddr = "198.51.100.77".parse().unwrap();
    l.success(owner, t0);
    let mut t = t0;
    for i in 0..150u32 {
        l.failure(IpAddr::from([203, 0, 113, (i % 15) as u8]), t);
    }
    for _ in 0..60 {
        t += Duration::from_secs(1);
        for a in 0..6u8 {
            l.failure(IpAddr::from([192, 0, 2, a]), t);
        }
    }
    let stranger: IpAddr = "198.51.100.200".parse().unwrap();
    assert!(
        l.check(stranger, false, t).is_err(),
        "the global limit holds"
    );
    assert_eq!(l.check(owner, false, t), Ok(()), "a known address");
    assert_eq!(l.check(stranger, true, t), Ok(()), "a known browser");
    assert_eq!(l.check("127.0.0.1".parse().unwrap(), false, t), Ok(()));
    assert_eq!(l.check("::1".parse().unwrap(), false, t), Ok(()));
    // A known client's own bucket still applies.
    for _ in 0..10 {
        l.failure(owner, t);
    }
    assert!(l.check(owner, false, t).is_err());
    // Known for a while, not forever: a month on, a new flood holds it.
    let later = t0 + KNOWN_FOR;
    for i in 0..150u32 {
        l.failure(IpAddr::from([203, 0, 113, (i % 15) as u8]), later);
    }
    assert!(l.check(owner, false, later).is_err());
}

#[test]
fn ipv6_counts_per_64() {
    let cfg = LimitConfig {
        ip_burst: 3.0,
        ip_refill: 0.01,
        global_burst: 1000.0,
        global_refill: 1.0,
    };
    let mut l = Limiter::new(cfg);
    let t0 = Instant::now();
    for i in 0..3u16 {
        l.failure(IpAddr::from([0x2001, 0xdb8, 0, 1, i, 0, 0, i + 1]), t0);
    }
    let same_64: IpAddr = "2001:db8:0:1:ffff::9".parse().unwrap();
    let next_64: IpAddr = "2001:db8:0:2::1".parse().unwrap();
    assert!(l.check(same_64, false, t0).is_err(), "one /64, one bucket");
    assert_eq!(l.check(next_64, false, t0), Ok(()));
    // IPv4-mapped addresses count as the IPv4 address.
    for _ in 0..3 {
        l.failure("192.0.2.9".parse().unwrap(), t0);
    }
    assert!(l
        .check("::ffff:192.0.2.9".parse().unwrap(), false, t0)
        .is_err());
}

#[test]
fn device_tokens_are_bound_to_the_password_and_expire() {
    let phc = hash_password("right-password").unwrap();
    let tok = device_token(&phc, 1_000).unwrap();
    assert!(tok.starts_with("v1.1000."), "{tok}");
    assert!(device_token_valid(&phc, &tok, 999));
    assert!(!device_token_valid(&phc, &tok, 1_000), "expired");
    let other = hash_password("right-password").unwrap();
    assert!(!device_token_valid(&other, &tok, 999), "new hash, new key");
    let forged = tok.replace("v1.1000.", "v1.9999.");
    assert!(!device_token_valid(&phc, &forged, 999));
    for junk in [
        "", "v1", "v1.x.y", "v1.5.zz", "v2.5.00", ".", "v1..", "v1.1000.", "\u{0}",
    ] {
        assert!(!device_token_valid(&phc, junk, 0), "{junk:?}");
    }
    assert_eq!(
        cookie("a=1; stackctl_admin_device=t; b=2", DEVICE_COOKIE),
        Some("t")
    );
    assert_eq!(cookie("a=1", DEVICE_COOKIE), None);
    assert_eq!(cookie("", DEVICE_COOKIE), None);
}
