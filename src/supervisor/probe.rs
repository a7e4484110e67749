//! Readiness and liveness probes.
//!
//! Readiness: after `initial_delay`, check every `interval` until a check
//! passes (→ ready); after that keep checking, and `failures` consecutive
//! failures mark the service not ready again (dependents already started
//! stay up; only `status`/healthz change).
//!
//! Liveness starts once the service is ready (right after spawn without a
//! readiness probe), so a slow start is never mistaken for a hang; after
//! `initial_delay`, `failures` consecutive failures report the service hung
//! and the loop restarts it.
//!
//! Exec checks run through the reaper like services do (see
//! [`super::reaper`]): a `tokio::process` child here would race its
//! `waitpid(-1)`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;

use super::reaper::Reaper;
use super::spawn::{self, Output};
use crate::manifest::{Probe, ProbeCheck};

/// What a probe loop tells the supervisor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Report {
    /// Readiness passed (first time, or again after `Unready`).
    Ready,
    /// Readiness failed `failures` times in a row after having passed.
    Unready,
    /// Liveness failed `failures` times in a row.
    Hung,
}

/// What a check needs besides the probe itself.
#[derive(Debug, Clone)]
pub struct Ctx {
    /// For exec checks.
    pub reaper: Reaper,
    /// The service's environment (exec checks run with it).
    pub env: Arc<Vec<(String, String)>>,
    /// The service's working directory.
    pub dir: PathBuf,
    /// Set once the service printed the `log:` text (log checks only).
    pub log_seen: Option<watch::Receiver<bool>>,
}

/// Counts consecutive failures against a threshold.
#[derive(Debug, Clone, Copy, Default)]
pub struct Streak {
    failures: u32,
}

impl Streak {
    /// Record a result; `true` when this failure reaches `threshold`
    /// (reported once per streak).
    pub fn record(&mut self, ok: bool, threshold: u32) -> bool {
        if ok {
            self.failures = 0;
            return false;
        }
        self.failures = self.failures.saturating_add(1);
        self.failures == threshold.max(1)
    }
}

/// The readiness loop; reports until cancelled by the caller.
pub async fn readiness(name: Arc<str>, probe: Probe, ctx: Ctx, report: impl Fn(Report)) {
    tokio::time::sleep(probe.initial_delay).await;
    let mut ready = false;
    let mut streak = Streak::default();
    loop {
        let result = check(&probe.check, probe.timeout, &ctx).await;
        match &result {
            Ok(()) if !ready => {
                ready = true;
                tracing::debug!(service = %name, "readiness probe passed");
                report(Report::Ready);
            }
            Ok(()) => {}
            Err(e) => tracing::debug!(service = %name, error = %e, "readiness probe failed"),
        }
        if streak.record(result.is_ok(), probe.failures) && ready {
            ready = false;
            tracing::warn!(service = %name, failures = probe.failures, "service is no longer ready");
            report(Report::Unready);
        }
        tokio::time::sleep(next_readiness_check(probe.interval, ready)).await;
    }
}

/// Once ready, a service is re-checked at least every [`READY_RECHECK`]
/// rather than at its start-up `interval`: a short interval is there to
/// notice readiness quickly (like Docker's `start_interval`), and probing a
/// ready service every 200 ms would only flood its access log.
pub const READY_RECHECK: Duration = Duration::from_secs(10);

/// The pause before the next readiness check.
pub fn next_readiness_check(interval: Duration, ready: bool) -> Duration {
    if ready {
        interval.max(READY_RECHECK)
    } else {
        interval
    }
}

/// The liveness loop; returns after reporting [`Report::Hung`].
pub async fn liveness(name: Arc<str>, probe: Probe, ctx: Ctx, report: impl Fn(Report)) {
    tokio::time::sleep(probe.initial_delay).await;
    let mut streak = Streak::default();
    loop {
        let result = check(&probe.check, probe.timeout, &ctx).await;
        if let Err(e) = &result {
            tracing::warn!(service = %name, error = %e, "liveness probe failed");
        }
        if streak.record(result.is_ok(), probe.failures) {
            tracing::warn!(service = %name, failures = probe.failures, "liveness probe failed too often; restarting the service");
            report(Report::Hung);
            return;
        }
        tokio::time::sleep(probe.interval).await;
    }
}

/// Run one check within `timeout`; the error says what failed.
pub async fn check(check: &ProbeCheck, timeout: Duration, ctx: &Ctx) -> Result<(), String> {
    match check {
        ProbeCheck::Http(url) => within(timeout, http_get(url)).await,
        ProbeCheck::Tcp(addr) => {
            within(timeout, async {
                TcpStream::connect(addr.as_str())
                    .await
                    .map(drop)
                    .map_err(|e| format!("connect to {addr}: {e}"))
            })
            .await
        }
        ProbeCheck::Exec(cmd) => exec(cmd, timeout, ctx).await,
        ProbeCheck::File(path) => match tokio::fs::try_exists(path).await {
            Ok(true) => Ok(()),
            Ok(false) => Err(format!("{} does not exist", path.display())),
            Err(e) => Err(format!("{}: {e}", path.display())),
        },
        ProbeCheck::Log(text) => {
            let Some(mut seen) = ctx.log_seen.clone() else {
                return Err("no output to watch".to_string());
            };
            // Wait for the line rather than poll: readiness is seen at once.
            let found = matches!(
                tokio::time::timeout(timeout, seen.wait_for(|v| *v)).await,
                Ok(Ok(_))
            );
            if found {
                Ok(())
            } else {
                Err(format!("no line containing {text:?} yet"))
            }
        }
    }
}

async fn within(
    timeout: Duration,
    fut: impl std::future::Future<Output = Result<(), String>>,
) -> Result<(), String> {
    tokio::time::timeout(timeout, fut)
        .await
        .unwrap_or_else(|_| Err(format!("timed out after {timeout:?}")))
}

/// Where an `http://` probe URL points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpTarget {
    /// Host to connect to (IPv6 without brackets).
    pub host: String,
    /// Port (80 by default).
    pub port: u16,
    /// Path and query, at least `/`.
    pub path: String,
    /// The `Host:` header value.
    pub authority: String,
}

/// Parse `http://host[:port][/path]`; `https` is not supported (probes talk
/// to services on loopback). The `url` crate reads it, as reqwest would.
pub fn parse_http_url(text: &str) -> Result<HttpTarget, String> {
    let expected = || format!("`{text}`: expected http://host:port/path");
    let url = match crate::weburl::WebUrl::parse(text) {
        Ok(u) => u.into_url(),
        Err(crate::weburl::Problem::Port(p)) => return Err(format!("`{text}`: bad port `{p}`")),
        Err(crate::weburl::Problem::Scheme) => {
            return Err(format!("`{text}`: only http:// URLs can be probed"))
        }
        Err(_) => return Err(expected()),
    };
    // `http:x` and `https:` are refused as written, before the URL grammar
    // (which reads `http:///x` as host `x`: a typo here, not a host).
    let Some(rest) = text
        .get(..7)
        .filter(|p| p.eq_ignore_ascii_case("http://"))
        .map(|_| &text[7..])
    else {
        return Err(format!("`{text}`: only http:// URLs can be probed"));
    };
    if !url.username().is_empty() || url.password().is_some() || rest.starts_with('/') {
        return Err(expected());
    }
    let (host, bracketed) = match url.host() {
        Some(url::Host::Ipv6(ip)) => (ip.to_string(), format!("[{ip}]")),
        Some(h) => (h.to_string(), h.to_string()),
        None => return Err(expected()),
    };
    let path = match url.query() {
        Some(q) => format!("{}?{q}", url.path()),
        None => url.path().to_string(),
    };
    Ok(HttpTarget {
        port: url.port_or_known_default().unwrap_or(80),
        authority: match url.port() {
            Some(p) => format!("{bracketed}:{p}"),
            None => bracketed,
        },
        host,
        path,
    })
}

/// The status code of an HTTP/1.x response head, if it starts with one.
pub fn parse_status(head: &[u8]) -> Option<u16> {
    let line = head.split(|&b| b == b'\n').next()?;
    let line = std::str::from_utf8(line).ok()?;
    let mut parts = line.split_whitespace();
    if !parts.next()?.starts_with("HTTP/1.") {
        return None;
    }
    let code = parts.next()?;
    if code.len() != 3 {
        return None;
    }
    code.parse().ok()
}

async fn http_get(url: &str) -> Result<(), String> {
    let t = parse_http_url(url)?;
    let mut s = TcpStream::connect((t.host.as_str(), t.port))
        .await
        .map_err(|e| format!("connect to {}: {e}", t.authority))?;
    let req = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: stackctl-probe\r\nAccept: */*\r\nConnection: close\r\n\r\n",
        t.path, t.authority
    );
    s.write_all(req.as_bytes())
        .await
        .map_err(|e| format!("GET {url}: {e}"))?;
    // Only the status line matters; read until it is complete.
    let mut head = Vec::with_capacity(256);
    let mut buf = [0u8; 256];
    while !head.contains(&b'\n') && head.len() < 4096 {
        let n = s
            .read(&mut buf)
            .await
            .map_err(|e| format!("GET {url}: {e}"))?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    match parse_status(&head) {
        Some(code) if code < 400 => Ok(()),
        Some(code) => Err(format!("GET {url}: status {code}")),
        None => Err(format!("GET {url}: not an HTTP response")),
    }
}

async fn exec(cmd: &[String], timeout: Duration, ctx: &Ctx) -> Result<(), String> {
    let spawned = spawn::spawn(
        &ctx.reaper,
        cmd,
        Path::new(&ctx.dir),
        &ctx.env,
        Output::Null,
    )
    .map_err(|e| e.to_string())?;
    // The probe loop may be cancelled mid-check (the run ended): the guard
    // then kills the check's group instead of leaving it behind.
    let mut guard = KillGroupOnDrop(Some(spawned.pid()));
    let mut exit = spawned.exit;
    let result = match tokio::time::timeout(timeout, &mut exit).await {
        Ok(Ok(e)) if e.success() => Ok(()),
        Ok(Ok(e)) => Err(format!("`{}` {e}", cmd.join(" "))),
        Ok(Err(_)) => Err("exit status lost".to_string()),
        Err(_) => {
            guard.fire();
            let _ = tokio::time::timeout(Duration::from_secs(1), exit).await;
            return Err(format!("`{}` timed out after {timeout:?}", cmd.join(" ")));
        }
    };
    // The leader is reaped; whatever it left in its group goes too.
    guard.fire();
    result
}

/// SIGKILLs a process group when dropped, unless emptied first.
struct KillGroupOnDrop(Option<i32>);

impl KillGroupOnDrop {
    fn fire(&mut self) {
        if let Some(pgid) = self.0.take() {
            kill_group(pgid);
        }
    }
}

impl Drop for KillGroupOnDrop {
    fn drop(&mut self) {
        self.fire();
    }
}

fn kill_group(pgid: i32) {
    // ESRCH (already gone) is the usual, fine answer.
    let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ready_service_is_rechecked_less_often() {
        let fast = Duration::from_millis(200);
        assert_eq!(next_readiness_check(fast, false), fast);
        assert_eq!(next_readiness_check(fast, true), READY_RECHECK);
        let slow = Duration::from_secs(30);
        assert_eq!(next_readiness_check(slow, true), slow);
    }

    #[test]
    fn http_urls_parse_into_host_port_and_path() {
        let t = |h: &str, p: u16, path: &str, a: &str| HttpTarget {
            host: h.into(),
            port: p,
            path: path.into(),
            authority: a.into(),
        };
        let table = [
            (
                "http://127.0.0.1:9001/",
                t("127.0.0.1", 9001, "/", "127.0.0.1:9001"),
            ),
            ("http://localhost", t("localhost", 80, "/", "localhost")),
            ("http://h:8/a/b?c=d", t("h", 8, "/a/b?c=d", "h:8")),
            ("http://h:8?x", t("h", 8, "/?x", "h:8")),
            (
                "http://[::1]:7000/health",
                t("::1", 7000, "/health", "[::1]:7000"),
            ),
        ];
        for (url, want) in table {
            assert_eq!(parse_http_url(url), Ok(want), "{url}");
        }
    }

    #[test]
    fn unsupported_urls_say_why() {
        assert_eq!(
            parse_http_url("https://x/"),
            Err("`https://x/`: only http:// URLs can be probed".into())
        );
        assert_eq!(
            parse_http_url("http://h:99999/"),
            Err("`http://h:99999/`: bad port `99999`".into())
        );
        assert!(parse_http_url("http:///x").is_err());
        assert!(parse_http_url("http://user@h/").is_err());
        // Short or odd text is an error, never a slice out of range.
        for odd in ["http:x", "http:", "h", "", "http://", "ftp://h/"] {
            assert!(parse_http_url(odd).is_err(), "{odd}");
        }
        // Read as an HTTP client reads it: scheme and host case, dot segments.
        assert_eq!(
            parse_http_url("HTTP://H:8/a/../b").map(|t| (t.host, t.path, t.authority)),
            Ok(("h".to_string(), "/b".to_string(), "h:8".to_string()))
        );
    }

    #[test]
    fn status_lines_are_read_strictly() {
        let table: [(&[u8], Option<u16>); 6] = [
            (b"HTTP/1.1 200 OK\r\n", Some(200)),
            (b"HTTP/1.0 404 Not Found\r\nX: y", Some(404)),
            (b"HTTP/1.1 302\r\n", Some(302)),
            (b"SSH-2.0-OpenSSH\r\n", None),
            (b"HTTP/1.1 2000 OK\r\n", None),
            (b"", None),
        ];
        for (head, want) in table {
            assert_eq!(
                parse_status(head),
                want,
                "{:?}",
                String::from_utf8_lossy(head)
            );
        }
    }

    #[test]
    fn a_streak_fires_once_when_reaching_the_threshold() {
        let mut s = Streak::default();
        let results = [false, false, true, false, false, false, false];
        let fired: Vec<bool> = results.iter().map(|&ok| s.record(ok, 3)).collect();
        assert_eq!(fired, [false, false, false, false, false, true, false]);
        let mut s = Streak::default();
        assert!(s.record(false, 0), "a threshold of 0 acts as 1");
    }
}
