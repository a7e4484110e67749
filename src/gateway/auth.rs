//! The admin password: Argon2id hashes, constant-time checks, and a
//! failure rate limit (per client IP and global) that answers 429 before any
//! hashing is done, so a password flood costs neither CPU nor proxy latency.
//!
//! Verification runs on the blocking pool, one at a time, so the async
//! workers that move proxied bytes never run Argon2. A correct password is
//! remembered as a keyed, cheap digest (random key, memory only), so the
//! admin page's successive calls do not pay the 19 MiB Argon2 cost each.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};

use crate::gateway::error::HttpError;

/// The shortest password `POST /admin/password` accepts.
pub const MIN_PASSWORD_LEN: usize = 10;
/// Longer presented passwords are refused without hashing.
const MAX_PASSWORD_LEN: usize = 1024;

/// What is wrong with `password` as a new admin password, or `None` when it
/// can be used.
///
/// The rule (issue 16: passwords that could be set but never used): at
/// least [`MIN_PASSWORD_LEN`] characters, at most 1024 bytes, printable
/// ASCII only (space allowed inside), no space at either end. The password
/// travels in the `X-Admin-Password` header: browsers refuse to send
/// characters outside Latin-1 there and send Latin-1 ones as single bytes
/// (not UTF-8), and every HTTP parser strips spaces at the ends of a value,
/// so any other password would be stored but never match. One rule for the
/// API, the page (which mirrors it in `app.js`), `stackctl routes password`
/// and `gateway.admin.password`.
pub fn password_problem(password: &str) -> Option<String> {
    let len = password.chars().count();
    if len < MIN_PASSWORD_LEN {
        return Some(format!(
            "too short ({len} characters); use at least {MIN_PASSWORD_LEN}"
        ));
    }
    header_problem(password)
}

/// The part of [`password_problem`] that makes a password unusable at any
/// length: what no `X-Admin-Password` header can carry.
pub fn header_problem(password: &str) -> Option<String> {
    if password.len() > MAX_PASSWORD_LEN {
        return Some(format!(
            "too long ({} bytes); use at most {MAX_PASSWORD_LEN}",
            password.len()
        ));
    }
    if let Some(c) = password.chars().find(|c| !matches!(c, ' '..='~')) {
        let what = if c.is_control() {
            "a control character".to_string()
        } else {
            format!("`{c}`")
        };
        return Some(format!(
            "contains {what}; use printable ASCII only (letters, digits, punctuation, inner spaces): \
             the password travels in an HTTP header, where other characters cannot be sent reliably"
        ));
    }
    if password.starts_with(' ') || password.ends_with(' ') {
        return Some(
            "starts or ends with a space; HTTP drops spaces at the ends of a header value, \
             so such a password could never match"
                .into(),
        );
    }
    None
}

/// Password-module failures.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// Argon2 refused its inputs (cannot happen with the fixed parameters).
    #[error("cannot hash the admin password: {0}")]
    Hash(String),
    /// A stored hash is not a valid PHC string.
    #[error("the stored admin password hash is not a valid Argon2 hash: {0}")]
    BadHash(String),
}

/// Argon2id with OWASP's minimum: m = 19 MiB, t = 2, p = 1.
fn argon2() -> Argon2<'static> {
    let params = Params::new(19 * 1024, 2, 1, None).unwrap_or_default();
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

fn random_salt() -> Result<SaltString, AuthError> {
    let bytes: [u8; 16] = rand::random();
    SaltString::encode_b64(&bytes).map_err(|e| AuthError::Hash(e.to_string()))
}

/// Hash `password` into a PHC string (`$argon2id$v=19$m=19456,t=2,p=1$…`).
pub fn hash_password(password: &str) -> Result<String, AuthError> {
    let salt = random_salt()?;
    argon2()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| AuthError::Hash(e.to_string()))
}

/// Check `password` against a PHC hash; the output comparison inside is
/// constant-time.
pub fn verify_password(phc: &str, password: &str) -> bool {
    match PasswordHash::new(phc) {
        Ok(parsed) => argon2()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok(),
        Err(_) => false,
    }
}

/// Check that `phc` parses, so a corrupt state file is reported at start.
pub fn check_hash(phc: &str) -> Result<(), AuthError> {
    PasswordHash::new(phc)
        .map(|_| ())
        .map_err(|e| AuthError::BadHash(e.to_string()))
}

/// A random password: 24 characters from [A-Za-z0-9] (~142 bits).
pub fn generate_password() -> String {
    use rand::distr::{Alphanumeric, SampleString};
    Alphanumeric.sample_string(&mut rand::rng(), 24)
}

// ---- rate limit ----------------------------------------------------------

/// Token buckets of password failures; pure over the `now` it is given.
#[derive(Debug)]
pub struct Limiter {
    per_ip: HashMap<IpAddr, Bucket>,
    global: Bucket,
    cfg: LimitConfig,
}

/// Bucket sizes and refill rates.
#[derive(Debug, Clone, Copy)]
pub struct LimitConfig {
    /// Failures one IP may make in a burst.
    pub ip_burst: f64,
    /// Failures per second one IP regains.
    pub ip_refill: f64,
    /// Failures all clients together may make in a burst.
    pub global_burst: f64,
    /// Failures per second regained globally.
    pub global_refill: f64,
}

impl Default for LimitConfig {
    /// 10 tries per IP then one per 6 s; 100 in all, then one per second.
    fn default() -> Self {
        LimitConfig {
            ip_burst: 10.0,
            ip_refill: 1.0 / 6.0,
            global_burst: 100.0,
            global_refill: 1.0,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn full(burst: f64, now: Instant) -> Self {
        Bucket {
            tokens: burst,
            at: now,
        }
    }

    fn refill(&mut self, now: Instant, burst: f64, rate: f64) {
        let dt = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + dt * rate).min(burst);
        self.at = now;
    }

    /// Seconds until one token is back (0 when one is there).
    fn wait(&self, rate: f64) -> u64 {
        if self.tokens >= 1.0 {
            0
        } else {
            ((1.0 - self.tokens) / rate).ceil().max(1.0) as u64
        }
    }
}

/// Bound on remembered IPs; full buckets are forgotten first.
const MAX_TRACKED_IPS: usize = 10_000;

impl Limiter {
    /// A limiter with `cfg`.
    pub fn new(cfg: LimitConfig) -> Self {
        Limiter {
            per_ip: HashMap::new(),
            global: Bucket::full(cfg.global_burst, Instant::now()),
            cfg,
        }
    }

    /// `Err(seconds)` when `ip` (or everyone) must wait before trying again.
    pub fn check(&mut self, ip: IpAddr, now: Instant) -> Result<(), u64> {
        let c = self.cfg;
        self.global.refill(now, c.global_burst, c.global_refill);
        let mut wait = self.global.wait(c.global_refill);
        if let Some(b) = self.per_ip.get_mut(&ip) {
            b.refill(now, c.ip_burst, c.ip_refill);
            wait = wait.max(b.wait(c.ip_refill));
        }
        if wait == 0 {
            Ok(())
        } else {
            Err(wait)
        }
    }

    /// Count one failed attempt from `ip`.
    pub fn failure(&mut self, ip: IpAddr, now: Instant) {
        let c = self.cfg;
        if self.per_ip.len() >= MAX_TRACKED_IPS && !self.per_ip.contains_key(&ip) {
            self.per_ip.retain(|_, b| {
                b.refill(now, c.ip_burst, c.ip_refill);
                b.tokens < c.ip_burst
            });
            if self.per_ip.len() >= MAX_TRACKED_IPS {
                // Still full of active attackers: the global bucket limits them.
                self.per_ip.clear();
            }
        }
        let b = self
            .per_ip
            .entry(ip)
            .or_insert_with(|| Bucket::full(c.ip_burst, now));
        b.refill(now, c.ip_burst, c.ip_refill);
        b.tokens = (b.tokens - 1.0).max(0.0);
        self.global.refill(now, c.global_burst, c.global_refill);
        self.global.tokens = (self.global.tokens - 1.0).max(0.0);
    }
}

// ---- the live checker ------------------------------------------------------

/// The admin password check shared by all connections.
#[derive(Debug)]
pub struct Auth {
    hash: RwLock<Arc<str>>,
    /// Digest of the last password that verified, under `cache_key`.
    cache: Mutex<Option<[u8; 32]>>,
    cache_key: [u8; 16],
    limiter: Mutex<Limiter>,
    /// One Argon2 verification at a time (19 MiB and ~1 core each).
    slot: tokio::sync::Semaphore,
}

impl Auth {
    /// A checker for the PHC hash `phc`.
    pub fn new(phc: String, limits: LimitConfig) -> Self {
        Auth {
            hash: RwLock::new(Arc::from(phc)),
            cache: Mutex::new(None),
            cache_key: rand::random(),
            limiter: Mutex::new(Limiter::new(limits)),
            slot: tokio::sync::Semaphore::new(1),
        }
    }

    /// Replace the hash (password changed); forgets the remembered password.
    pub fn set_hash(&self, phc: String) {
        *lock_write(&self.hash) = Arc::from(phc);
        *lock(&self.cache) = None;
    }

    /// The current PHC hash.
    pub fn hash(&self) -> String {
        self.current_hash().to_string()
    }

    fn current_hash(&self) -> Arc<str> {
        match self.hash.read() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    fn limited(&self, ip: IpAddr) -> Result<(), HttpError> {
        lock(&self.limiter)
            .check(ip, Instant::now())
            .map_err(HttpError::RateLimited)
    }

    fn fail(&self, ip: IpAddr) -> HttpError {
        lock(&self.limiter).failure(ip, Instant::now());
        tracing::warn!(client = %ip, "admin: wrong or missing password");
        HttpError::Forbidden
    }

    /// A cheap keyed digest (Argon2 at its minimum cost) of a password that
    /// already passed the real check.
    fn digest(&self, password: &str) -> Option<[u8; 32]> {
        let params = Params::new(8, 1, 1, Some(32)).ok()?;
        let mut out = [0u8; 32];
        Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
            .hash_password_into(password.as_bytes(), &self.cache_key, &mut out)
            .ok()?;
        Some(out)
    }

    /// Check a presented password from `ip`: 429 when rate limited, 403 when
    /// wrong or missing.
    pub async fn check(&self, ip: IpAddr, presented: Option<&str>) -> Result<(), HttpError> {
        self.limited(ip)?;
        let Some(pw) = presented.filter(|p| !p.is_empty() && p.len() <= MAX_PASSWORD_LEN) else {
            return Err(self.fail(ip));
        };
        if let (Some(d), Some(known)) = (self.digest(pw), *lock(&self.cache)) {
            if constant_time_eq(&d, &known) {
                return Ok(());
            }
        }
        let Ok(_permit) = self.slot.acquire().await else {
            return Err(HttpError::Internal("password check unavailable".into()));
        };
        // Failures may have piled up while this request queued.
        self.limited(ip)?;
        let phc = self.current_hash();
        let pw_owned = pw.to_string();
        let ok = tokio::task::spawn_blocking(move || verify_password(&phc, &pw_owned))
            .await
            .unwrap_or(false);
        if ok {
            *lock(&self.cache) = self.digest(pw);
            Ok(())
        } else {
            Err(self.fail(ip))
        }
    }
}

fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Poisoning only means a panic mid-update of plain data; keep going.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn lock_write<T>(m: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    m.write().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
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
            assert_eq!(l.check(a, t0), Ok(()));
            l.failure(a, t0);
        }
        assert_eq!(l.check(a, t0), Err(2));
        assert_eq!(l.check(b, t0), Ok(()), "another client is not affected");
        assert_eq!(l.check(a, t0 + Duration::from_secs(1)), Err(1));
        assert_eq!(l.check(a, t0 + Duration::from_secs(2)), Ok(()));
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
        assert_eq!(l.check("203.0.113.1".parse().unwrap(), t0), Err(4));
        assert_eq!(
            l.check("203.0.113.1".parse().unwrap(), t0 + Duration::from_secs(4)),
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
        assert_eq!(auth.check(ip, Some("right-password")).await, Ok(()));
        assert_eq!(
            auth.check(ip, Some("right-password")).await,
            Ok(()),
            "cached digest path"
        );
        assert_eq!(auth.check(ip, None).await, Err(HttpError::Forbidden));
        assert_eq!(
            auth.check(ip, Some("wrong")).await,
            Err(HttpError::Forbidden)
        );
        assert!(matches!(
            auth.check(ip, Some("right-password")).await,
            Err(HttpError::RateLimited(_))
        ));
        auth.set_hash(hash_password("another-password").unwrap());
        let other: IpAddr = "192.0.2.8".parse().unwrap();
        assert_eq!(
            auth.check(other, Some("right-password")).await,
            Err(HttpError::Forbidden)
        );
        assert_eq!(auth.check(other, Some("another-password")).await, Ok(()));
    }
}
