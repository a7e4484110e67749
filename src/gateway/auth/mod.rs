//! The admin password: Argon2id hashes, constant-time checks, and a
//! failure rate limit (per client address and global) that answers 429 before
//! any hashing is done, so a password flood costs neither CPU nor proxy latency.
//!
//! Strangers must not lock the owner out (issue 16). Addresses are counted
//! per IPv4 address and per IPv6 /64 (one subscriber's usual allocation), so
//! rotating through one's own IPv6 range buys no extra tries. The global
//! bucket bounds guessing spread over many addresses; when it is empty, only
//! *known* clients are still checked: loopback (the container's own CLI), an
//! address that signed in within [`KNOWN_FOR`], and a browser holding the
//! device cookie issued at its last sign-in (OWASP's "device cookie"). Their
//! own per-address bucket still applies. A new browser at a new address has
//! to wait for the global bucket while a distributed flood lasts: letting it
//! through would let the flood's guesses through too.
//!
//! Verification runs on the blocking pool, one at a time, so the async
//! workers that move proxied bytes never run Argon2. A correct password is
//! remembered as a keyed, cheap digest (random key, memory only), so the
//! admin page's successive calls do not pay the 19 MiB Argon2 cost each.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

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

/// Whom a failure counts against: an IPv4 address, or an IPv6 /64.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ClientKey {
    /// One IPv4 address (IPv4-mapped IPv6 addresses count here too).
    V4([u8; 4]),
    /// The upper 64 bits of an IPv6 address.
    V6(u64),
}

impl ClientKey {
    /// The key `ip` counts under.
    pub fn of(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(v4) => ClientKey::V4(v4.octets()),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => ClientKey::V4(v4.octets()),
                None => ClientKey::V6((u128::from(v6) >> 64) as u64),
            },
        }
    }
}

/// How long an address that signed in stays known (past the global limit).
pub const KNOWN_FOR: Duration = Duration::from_secs(30 * 24 * 3600);
/// Bound on remembered known addresses; the least recent is forgotten.
const MAX_KNOWN: usize = 1024;

/// Token buckets of password failures, and the clients known to have signed
/// in; pure over the `now` it is given.
#[derive(Debug)]
pub struct Limiter {
    per_ip: HashMap<ClientKey, Bucket>,
    known: HashMap<ClientKey, Instant>,
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
            known: HashMap::new(),
            global: Bucket::full(cfg.global_burst, Instant::now()),
            cfg,
        }
    }

    /// Whether `ip` is past the global limit: loopback, or an address that
    /// signed in within [`KNOWN_FOR`].
    fn is_known(&self, ip: IpAddr, now: Instant) -> bool {
        ip.is_loopback()
            || ip.to_canonical().is_loopback()
            || self
                .known
                .get(&ClientKey::of(ip))
                .is_some_and(|at| now.saturating_duration_since(*at) < KNOWN_FOR)
    }

    /// `Err(seconds)` when `ip` (or everyone) must wait before trying again.
    /// `trusted_device`: the request carries a valid device cookie, so only
    /// its own address's bucket applies.
    pub fn check(&mut self, ip: IpAddr, trusted_device: bool, now: Instant) -> Result<(), u64> {
        let c = self.cfg;
        self.global.refill(now, c.global_burst, c.global_refill);
        let mut wait = if trusted_device || self.is_known(ip, now) {
            0
        } else {
            self.global.wait(c.global_refill)
        };
        if let Some(b) = self.per_ip.get_mut(&ClientKey::of(ip)) {
            b.refill(now, c.ip_burst, c.ip_refill);
            wait = wait.max(b.wait(c.ip_refill));
        }
        if wait == 0 {
            Ok(())
        } else {
            Err(wait)
        }
    }

    /// Remember that `ip` signed in (it stays known for [`KNOWN_FOR`]).
    pub fn success(&mut self, ip: IpAddr, now: Instant) {
        let key = ClientKey::of(ip);
        if self.known.len() >= MAX_KNOWN && !self.known.contains_key(&key) {
            if let Some(oldest) = self
                .known
                .iter()
                .min_by_key(|(_, at)| **at)
                .map(|(k, _)| *k)
            {
                self.known.remove(&oldest);
            }
        }
        self.known.insert(key, now);
    }

    /// Count one failed attempt from `ip`.
    pub fn failure(&mut self, ip: IpAddr, now: Instant) {
        let c = self.cfg;
        let ip = ClientKey::of(ip);
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

// ---- device cookies ---------------------------------------------------------

/// The cookie a browser gets at sign-in: it lets that browser past the
/// global limit later (its own address's limit still applies).
pub const DEVICE_COOKIE: &str = "stackctl_admin_device";
/// How long a device cookie is valid.
pub const DEVICE_FOR: Duration = Duration::from_secs(30 * 24 * 3600);

type HmacSha256 = Hmac<Sha256>;

/// The MAC key of device tokens, derived from the password hash: a changed
/// password invalidates every device cookie, and the key survives a restart
/// (the hash is in the state file) without storing another secret.
fn device_mac(phc: &str) -> Option<HmacSha256> {
    let mut h = Sha256::new();
    h.update(b"stackctl admin device v1\0");
    h.update(phc.as_bytes());
    HmacSha256::new_from_slice(&h.finalize()).ok()
}

/// A device token valid until `expires` (Unix seconds): `v1.<expires>.<mac>`.
pub fn device_token(phc: &str, expires: u64) -> Option<String> {
    let mut mac = device_mac(phc)?;
    let payload = format!("v1.{expires}");
    mac.update(payload.as_bytes());
    Some(format!(
        "{payload}.{}",
        hex::encode(mac.finalize().into_bytes())
    ))
}

/// Whether `token` was issued for `phc` and has not expired at `now`
/// (Unix seconds). The MAC comparison is constant-time.
pub fn device_token_valid(phc: &str, token: &str, now: u64) -> bool {
    let Some((payload, tag)) = token.rsplit_once('.') else {
        return false;
    };
    let Some(expires) = payload
        .strip_prefix("v1.")
        .and_then(|e| e.parse::<u64>().ok())
    else {
        return false;
    };
    let (Ok(tag), Some(mut mac)) = (hex::decode(tag), device_mac(phc)) else {
        return false;
    };
    mac.update(payload.as_bytes());
    mac.verify_slice(&tag).is_ok() && now < expires
}

/// The value of cookie `name` in a `Cookie` header.
pub fn cookie<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    header.split(';').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k.trim() == name).then(|| v.trim())
    })
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
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

    fn limited(&self, ip: IpAddr, device: bool) -> Result<(), HttpError> {
        lock(&self.limiter)
            .check(ip, device, Instant::now())
            .map_err(HttpError::RateLimited)
    }

    /// A correct password from `ip`: remember the address, and hand out a
    /// device token unless the request showed a valid one.
    fn granted(&self, ip: IpAddr, had_device: bool, phc: &str) -> Option<String> {
        lock(&self.limiter).success(ip, Instant::now());
        if had_device {
            return None;
        }
        device_token(phc, unix_now().saturating_add(DEVICE_FOR.as_secs()))
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

    /// Check a presented password from `ip`, with the device cookie the
    /// request carried: 429 when rate limited, 403 when wrong or missing.
    /// `Ok(Some(token))`: a device token for the caller to set as
    /// [`DEVICE_COOKIE`] (the request had none that is valid).
    pub async fn check(
        &self,
        ip: IpAddr,
        presented: Option<&str>,
        device: Option<&str>,
    ) -> Result<Option<String>, HttpError> {
        let phc = self.current_hash();
        let had_device = device.is_some_and(|t| device_token_valid(&phc, t, unix_now()));
        self.limited(ip, had_device)?;
        let Some(pw) = presented.filter(|p| !p.is_empty() && p.len() <= MAX_PASSWORD_LEN) else {
            return Err(self.fail(ip));
        };
        if let (Some(d), Some(known)) = (self.digest(pw), *lock(&self.cache)) {
            if constant_time_eq(&d, &known) {
                return Ok(self.granted(ip, had_device, &phc));
            }
        }
        let Ok(_permit) = self.slot.acquire().await else {
            return Err(HttpError::Internal("password check unavailable".into()));
        };
        // Failures may have piled up while this request queued.
        self.limited(ip, had_device)?;
        let pw_owned = pw.to_string();
        let hash = phc.clone();
        let ok = tokio::task::spawn_blocking(move || verify_password(&hash, &pw_owned))
            .await
            .unwrap_or(false);
        if ok {
            *lock(&self.cache) = self.digest(pw);
            Ok(self.granted(ip, had_device, &phc))
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
mod tests;
