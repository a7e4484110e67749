//! The gateway: one public HTTP port that routes requests by rule to the
//! services (reverse proxy, WebSocket, SSE), with a password-protected admin
//! API and page to change routes at run time.
//!
//! # Layout
//!
//! Wiring (this file): the [`Gateway`], what every connection shares, the
//! accept loop and the drain at shutdown.
//!
//! - `seed`: building the gateway at start: the route table and password
//!   that win (below), the original deployment's files imported once.
//! - `handle`: one request on hyper's path: head checks, routing, admin,
//!   forwarding, and the answer to a failed forward.
//! - [`rules`]: the wire rule model and its validation (pure); the
//!   backends a rule may name and the policy over them in `rules::backend`.
//! - [`path`]: request paths: normalisation, the `/admin` check, prefix
//!   matching, the target sent on (pure); [`rules`] and [`router`] both
//!   use it.
//! - [`router`]: matching a request against the compiled table (pure).
//! - [`headers`]: hop-by-hop, X-Forwarded-*, `set_headers` (pure).
//! - [`front`]: the own HTTP/1.1 front end's request parse and response
//!   heads (pure); `conn` runs a client connection with it (its own loop
//!   in `conn::plain`) and hands anything else to hyper (`conn::handoff`),
//!   `clocks` times its reads and writes and holds the client timeouts.
//! - [`h1`]: the HTTP/1.1 wire format towards backends (pure): request
//!   head, response head, framing decision, chunked decoding.
//! - [`limits`]: how large a client's request head may be, checked on
//!   both paths (pure).
//! - [`proxy`]: forwarding and upgrades (I/O); [`upstream`] is the pooled
//!   backend client (connection, exchange, response body; its settings and
//!   failures), `tunnel` a WebSocket's two joined connections and where
//!   they are tracked, `deadline` the timer both sides reuse, [`fanout`]
//!   the cap on connections per backend both paths share, [`body`] the
//!   one body type of requests and responses.
//! - `accept`: what the accept loop does when `accept` fails (pure).
//! - `throttle`: one log line per interval for a failure that repeats
//!   (a failing `accept`, requests refused at a backend's cap); what an
//!   interval left out is logged when it ends.
//! - [`admin`]: the `/admin/` endpoints.
//! - [`auth`]: Argon2id password checks and the failure rate limit.
//! - [`state`]: the state file (route table + password hash), atomic writes.
//! - [`migrate`]: the original deployment's `admin_config.json`, imported once.
//! - [`restoring`]: the 503 page served while the restore at start runs.
//! - [`error`]: the one mapping of failures to HTTP statuses.
//! - [`ui`]: the admin page's static files.
//!
//! # Which routes win at start
//!
//! The state file keeps the live table (admin edits) together with a
//! fingerprint of the manifest routes it was seeded from. At start:
//!
//! - no table in the state file → the manifest's `routes:` and
//!   `default_backend` seed it;
//! - a table whose fingerprint matches the manifest's current routes → the
//!   state file wins: live edits survive restarts;
//! - the manifest's routes changed since (someone edited `stack.yaml`) → the
//!   manifest wins and replaces the live table (logged), because an edited
//!   file is the newer intent.
//!
//! The fingerprint is taken of the manifest's *validated* table (`v2:` and
//! a hash of its JSON), so it changes with what the routes mean, not with
//! how they are written: spelling out the default `priority: 0` or moving
//! `prefix` under `match:` keeps the live table. A fingerprint of the form
//! earlier versions wrote (a hash of the routes as written, no `v2:`)
//! cannot be compared, so it counts as unchanged: the first start after
//! the upgrade keeps the live table, logs how to apply routes changed in
//! the same deploy, and rewrites the fingerprint in the new form.
//!
//! The admin password follows the same rule: a configured
//! `admin.password` seeds the hash; a password changed through the API
//! stays until the configured one changes. With no password configured and
//! none stored, one is generated, printed once on stderr and written (0600)
//! to `admin.password_file` for `stackctl routes`.

mod accept;
pub mod admin;
pub mod auth;
pub mod body;
mod clocks;
mod conn;
mod deadline;
pub mod error;
pub mod fanout;
pub mod front;
pub mod h1;
mod handle;
pub mod headers;
pub mod limits;
pub mod migrate;
pub mod path;
pub mod proxy;
pub mod restoring;
pub mod router;
pub mod rules;
mod seed;
pub mod state;
mod throttle;
mod tunnel;
pub mod ui;
pub mod upstream;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use hyper_util::rt::TokioTimer;
use hyper_util::server::conn::auto;
use ipnet::IpNet;
use tokio::net::TcpListener;

use crate::manifest::yaml::Pos;
use crate::shutdown::CancellationToken;
use crate::status::StatusBoard;

use crate::gateway::auth::{Auth, AuthError, LimitConfig};
use crate::gateway::proxy::Upstream;
use crate::gateway::router::Router;
use crate::gateway::state::{State, StateError};
use crate::gateway::tunnel::Tunnels;

pub use crate::gateway::rules::{BackendPolicy, RuleError, Table};
pub use crate::gateway::seed::service_ports;

/// How long `serve` waits for open requests after shutdown begins.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(3);

/// hyper's HTTP/1 read buffer limit: twice the largest head accepted.
const HYPER_MAX_BUF: usize = 2 * limits::MAX_HEAD;

/// Most HTTP/2 streams one client connection may have open at once; more
/// are refused by the client's own HTTP/2 stack until some finish.
const MAX_STREAMS_PER_CONN: u32 = 100;

/// Why the gateway could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// A manifest route is invalid.
    #[error("gateway route{}: {source}", .pos.map(|p| format!(" at line {}, column {}", p.line, p.col)).unwrap_or_default())]
    Routes {
        /// Where the route was written.
        pos: Option<Pos>,
        /// What is wrong.
        source: RuleError,
    },
    /// The state file could not be read or written.
    #[error(transparent)]
    State(#[from] StateError),
    /// The password could not be hashed, or the stored hash is corrupt.
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// `gateway.admin.password` could be stored but never typed in.
    #[error("`gateway.admin.password` {0}; change the value it comes from (e.g. the ADMIN_PASSWORD variable)")]
    Password(String),
}

/// The gateway, built from the manifest; run it with [`Gateway::serve`].
#[derive(Debug)]
pub struct Gateway {
    shared: Shared,
}

/// What every connection shares.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) router: ArcSwap<Router>,
    pub(crate) status: StatusBoard,
    pub(crate) auth: Auth,
    upstream: Upstream,
    policy: RwLock<BackendPolicy>,
    trusted: Vec<IpNet>,
    pub(crate) state_path: PathBuf,
    /// The state as last written; its lock also serialises admin writers.
    pub(crate) state: tokio::sync::Mutex<State>,
    pub(crate) password_file: PathBuf,
    listen: RwLock<SocketAddr>,
    /// Backend port → service whose probes target it (for "starting" 503s).
    service_ports: HashMap<u16, String>,
    /// Restore has been seen finished (it never un-finishes).
    restored: AtomicBool,
    tunnels: Tunnels,
    client_timeouts: clocks::ClientTimeouts,
    /// Backup, snapshots and restore for `/admin/persist…`; `None` when
    /// the manifest has no `persist:` section.
    pub(crate) recovery: Option<Arc<crate::recovery::Recovery>>,
}

impl Gateway {
    /// Map backend ports to services (see [`service_ports`]) so a request to
    /// a service that is still starting gets a 503 "starting", not a 502.
    pub fn with_services(mut self, services: &[crate::manifest::Service]) -> Self {
        self.shared.service_ports = service_ports(services);
        self
    }

    /// Serve `/admin/persist…` from `recovery` (persistence on).
    pub fn with_recovery(mut self, recovery: Option<Arc<crate::recovery::Recovery>>) -> Self {
        self.shared.recovery = recovery;
        self
    }

    /// Replace the admin failure rate limits (tests use small ones).
    pub fn with_rate_limits(mut self, limits: LimitConfig) -> Self {
        let phc = self.shared.auth.hash();
        self.shared.auth = Auth::new(phc, limits);
        self
    }

    /// The live route table.
    pub fn table(&self) -> Table {
        self.shared.router.load().table().clone()
    }

    /// Serve on `listener` until `shutdown` is cancelled, then stop
    /// accepting, let open requests finish (at most [`DRAIN_TIMEOUT`]),
    /// close WebSocket tunnels, and return.
    pub async fn serve(self, listener: TcpListener, shutdown: CancellationToken) {
        let shared = Arc::new(self.shared);
        if let Ok(addr) = listener.local_addr() {
            shared.set_listen(addr);
        }
        let idle = shared.client_timeouts.idle;
        let mut builder = auto::Builder::new(conn::stalled::StreamExec);
        builder
            .http1()
            .timer(TokioTimer::new())
            // Not hyper's: it starts the clock as soon as a response is
            // written, which made `header_read` the idle timeout. The
            // connection's reads time both (see `conn`).
            .header_read_timeout(None)
            // Room for every head within the limits and a good deal past
            // them, which `handle` then refuses with the precise status and
            // a message; only a head past even these gets hyper's bare 431.
            .max_headers(2 * limits::MAX_HEADERS)
            .max_buf_size(HYPER_MAX_BUF)
            .keep_alive(true);
        builder
            .http2()
            .timer(TokioTimer::new())
            // Each stream may become a backend request: bound what one
            // client connection can fan out to (nginx's default, 128, is
            // of this order; hyper's own default is 200).
            .max_concurrent_streams(MAX_STREAMS_PER_CONN)
            // A dead peer under a long stream (an SSE that sends rarely)
            // would otherwise hold its connection until TCP gives up: a
            // ping after `idle` with nothing received, answered within
            // `send`. An idle connection is closed by `conn` (no stream
            // open for `idle`); pings do not keep it open. `idle: 0` (no
            // keep-alive) would ping back to back: no pings then.
            .keep_alive_interval(Some(idle).filter(|d| !d.is_zero()))
            .keep_alive_timeout(shared.client_timeouts.send)
            // HTTP/2 counts 32 bytes more per field than HTTP/1.1 spells.
            .max_header_list_size((limits::MAX_HEAD + 32 * limits::MAX_HEADERS) as u32);
        let tracker = shared.tunnels.tracker.clone();
        let stop = shared.tunnels.stop.clone();
        tracing::info!(listen = %shared.listen(), rules = shared.router.load().rule_count(), "gateway: listening");
        let ctx = Arc::new(conn::Ctx {
            shared: shared.clone(),
            builder,
            stop: stop.clone(),
            stopping: AtomicBool::new(false),
        });

        let failures = throttle::Throttled::new(|failed| {
            let every_s = throttle::LOG_EVERY.as_secs();
            tracing::warn!(
                failed,
                every_s,
                "gateway: accept went on failing since the last line"
            );
        });
        loop {
            let (stream, peer) = tokio::select! {
                () = shutdown.cancelled() => break,
                r = listener.accept() => match r {
                    Ok(pair) => pair,
                    Err(e) => {
                        let pause = accept_failed(&e, &failures);
                        // Open connections go on being served meanwhile.
                        tokio::select! {
                            () = shutdown.cancelled() => break,
                            () = tokio::time::sleep(pause) => continue,
                        }
                    }
                },
            };
            if let Some(failed) = failures.recovered() {
                tracing::info!(failed, "gateway: accepting connections again");
            }
            let _ = stream.set_nodelay(true);
            tracker.spawn(conn::serve(ctx.clone(), stream, peer));
        }
        drop(listener);
        ctx.begin_stop();
        tracker.close();
        if tokio::time::timeout(DRAIN_TIMEOUT, tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                open = tracker.len(),
                "gateway: requests still open after the drain timeout; dropping them"
            );
        }
        tracing::info!("gateway: stopped");
    }
}

/// Log a failed `accept` (throttled) and say how long to pause accepting.
fn accept_failed(e: &std::io::Error, failures: &throttle::Throttled) -> Duration {
    let failure = accept::classify(e);
    let pause = match failure {
        accept::Failure::Client => {
            tracing::debug!(error = %e, "gateway: a connection was gone before it was accepted");
            return Duration::ZERO;
        }
        accept::Failure::Exhausted => accept::EXHAUSTED_PAUSE,
        accept::Failure::Other => accept::OTHER_PAUSE,
    };
    let Some(failed) = failures.failed(Instant::now()) else {
        return pause;
    };
    let pause_ms = pause.as_millis() as u64;
    let every_s = throttle::LOG_EVERY.as_secs();
    if failure == accept::Failure::Exhausted {
        tracing::warn!(error = %e, failed, pause_ms, every_s, "gateway: out of file descriptors or memory: new connections wait, open ones are still served; raise the open-file limit (`ulimit -n`, docker's `--ulimit nofile=`)");
    } else {
        tracing::warn!(error = %e, failed, pause_ms, every_s, "gateway: accept failed");
    }
    pause
}

impl Shared {
    pub(crate) fn policy(&self) -> BackendPolicy {
        match self.policy.read() {
            Ok(p) => p.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    pub(crate) fn listen(&self) -> SocketAddr {
        match self.listen.read() {
            Ok(l) => *l,
            Err(p) => *p.into_inner(),
        }
    }

    fn set_listen(&self, addr: SocketAddr) {
        if let Ok(mut l) = self.listen.write() {
            *l = addr;
        }
        // The real port (the manifest may say :0) is the one rules must
        // never point at.
        if let Ok(mut p) = self.policy.write() {
            p.own_listen = Some(addr);
        }
    }

    fn is_restored(&self) -> bool {
        if self.restored.load(Ordering::Relaxed) {
            return true;
        }
        let r = self.status.update(|s| s.restored);
        if r {
            self.restored.store(true, Ordering::Relaxed);
        }
        r
    }
}
