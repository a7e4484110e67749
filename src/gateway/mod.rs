//! The gateway: one public HTTP port that routes requests by rule to the
//! services (reverse proxy, WebSocket, SSE), with a password-protected admin
//! API and page to change routes at run time.
//!
//! # Layout
//!
//! - [`rules`]: the wire rule model and its validation (pure).
//! - [`router`]: path normalisation and matching (pure).
//! - [`headers`]: hop-by-hop, X-Forwarded-*, `set_headers` (pure).
//! - [`front`]: the own HTTP/1.1 front end's request parse and response
//!   heads (pure); `conn` runs a client connection with it and hands
//!   anything else to hyper (I/O), `clocks` times its reads and writes.
//! - [`h1`]: the HTTP/1.1 wire format towards backends (pure).
//! - [`limits`]: how large a client's request head may be, checked on
//!   both paths (pure).
//! - [`proxy`]: forwarding, pooling, upgrades (I/O); [`upstream`] is the
//!   pooled backend client, `tunnel` a WebSocket's two joined connections,
//!   `deadline` the timer both sides reuse (`clocks` the client-side
//!   timeouts), [`fanout`] the cap on connections per backend both paths
//!   share, [`body`] the request and response bodies (limits, streaming).
//! - `accept`: what the accept loop does when `accept` fails (pure).
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
pub mod headers;
pub mod limits;
pub mod migrate;
pub mod path;
pub mod proxy;
pub mod restoring;
pub mod router;
pub mod rules;
pub mod state;
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
use http::{header, HeaderMap, HeaderValue, Method, Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use hyper_util::server::conn::auto;
use ipnet::IpNet;
use tokio::net::TcpListener;

use crate::manifest::yaml::Pos;
use crate::shutdown::{CancellationToken, TaskTracker};
use crate::status::{Phase, StatusBoard};

use crate::gateway::auth::{Auth, AuthError, LimitConfig};
use crate::gateway::body::Body;
use crate::gateway::error::HttpError;
use crate::gateway::path::normalize_path;
use crate::gateway::proxy::Upstream;
use crate::gateway::router::{Decision, RequestHead, Router};
use crate::gateway::rules::Backend;
use crate::gateway::state::{State, StateError};
use crate::gateway::tunnel::Tunnels;
use crate::gateway::upstream::{ForwardError, UpstreamConfig};

pub use crate::gateway::rules::{validate_table, BackendPolicy, RuleError, Table};

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

/// Fingerprint of the manifest's routes and default backend.
fn manifest_fingerprint(cfg: &crate::manifest::Gateway) -> String {
    let v = serde_json::json!({
        "default_backend": cfg.default_backend,
        "routes": cfg.routes,
    });
    format!("{:016x}", router::fnv1a(v.to_string().as_bytes()))
}

/// Backend port → service name, from each service's readiness (or
/// liveness) probe target: `http:` URL or `tcp:` address. Simple and
/// enough for one container, where every backend is a local port.
pub fn service_ports(services: &[crate::manifest::Service]) -> HashMap<u16, String> {
    use crate::manifest::ProbeCheck;
    let mut out = HashMap::new();
    for s in services {
        for probe in [&s.readiness, &s.liveness].into_iter().flatten() {
            let port = match &probe.check {
                ProbeCheck::Http(url) => url
                    .split_once("://")
                    .map(|(_, rest)| rest.split(['/', '?']).next().unwrap_or(""))
                    .and_then(|auth| rules::parse_backend(&format!("http://{auth}")).ok())
                    .map(|b| b.addr.port()),
                ProbeCheck::Tcp(addr) => addr.rsplit_once(':').and_then(|(_, p)| p.parse().ok()),
                _ => None,
            };
            if let Some(port) = port {
                out.entry(port).or_insert_with(|| s.name.clone());
            }
        }
    }
    out
}

impl Gateway {
    /// Build the gateway: validate the manifest routes, load or create the
    /// state file (route table + Argon2id password hash), and generate a
    /// password if none is configured or stored (printed once, written 0600
    /// to `admin.password_file`). See the module docs for precedence.
    pub fn new(
        cfg: &crate::manifest::Gateway,
        status: StatusBoard,
    ) -> Result<Gateway, GatewayError> {
        let policy = BackendPolicy::new(&cfg.allow_backends, cfg.listen);
        let manifest_table = validate_table(
            cfg.default_backend.as_deref().unwrap_or(""),
            &cfg.routes,
            &policy,
        )
        .map_err(|source| GatewayError::Routes {
            pos: source
                .rule_index()
                .and_then(|i| cfg.route_pos.get(i).copied()),
            source,
        })?;
        let fingerprint = manifest_fingerprint(cfg);
        let loaded = state::load(&cfg.state_file)?;
        let mut st = loaded.clone().unwrap_or(State {
            version: 1,
            ..State::default()
        });
        let imported = import_original(cfg, &policy, &mut st, &fingerprint, &manifest_table)?;

        let table = match (&st.table, &st.manifest_routes) {
            (Some(live), Some(fp)) if *fp == fingerprint => {
                match rules::validate_typed(live, &policy) {
                    Ok(t) => {
                        tracing::info!(file = %cfg.state_file.display(), rules = t.rules.len(), "gateway: live route table restored from the state file");
                        t
                    }
                    Err(e) => {
                        tracing::warn!(file = %cfg.state_file.display(), error = %e, "gateway: the saved route table is no longer valid; using the manifest's routes");
                        manifest_table
                    }
                }
            }
            (Some(_), _) => {
                tracing::info!(file = %cfg.state_file.display(), "gateway: the manifest's routes changed; they replace the live route table");
                manifest_table
            }
            (None, _) => manifest_table,
        };
        st.table = Some(table.clone());
        st.manifest_routes = Some(fingerprint);

        let phc = settle_password(cfg, &mut st)?;
        if loaded.as_ref() != Some(&st) {
            state::save(&cfg.state_file, &st)?;
        }
        if let Some(path) = imported {
            // The hash now lives in the state file: the old file's plaintext
            // password must not be pushed with the next snapshot.
            match std::fs::remove_file(&path) {
                Ok(()) => {
                    tracing::info!(file = %path.display(), "gateway: imported the original admin_config.json and removed it")
                }
                Err(e) => {
                    tracing::warn!(file = %path.display(), error = %e, "gateway: imported the original admin_config.json but cannot remove it; delete it by hand")
                }
            }
        }

        let router =
            Router::new(table).map_err(|source| GatewayError::Routes { pos: None, source })?;
        let shared = Shared {
            router: ArcSwap::from_pointee(router),
            status,
            auth: Auth::new(phc, LimitConfig::default()),
            upstream: Upstream::new(UpstreamConfig {
                connect: cfg.timeouts.connect,
                response: cfg.timeouts.response,
                pool_idle: cfg.timeouts.pool_idle,
                max_body: cfg.max_body,
            })
            .with_cap(fanout::Cap {
                max: cfg.backend_connections.max,
                queue: cfg.backend_connections.queue,
            }),
            policy: RwLock::new(policy),
            trusted: cfg.trusted_proxies.clone(),
            state_path: cfg.state_file.clone(),
            state: tokio::sync::Mutex::new(st),
            password_file: cfg.admin.password_file.clone(),
            listen: RwLock::new(cfg.listen),
            service_ports: HashMap::new(),
            restored: AtomicBool::new(false),
            client_timeouts: clocks::ClientTimeouts {
                header_read: cfg.timeouts.header_read,
                idle: cfg.timeouts.idle,
                send: cfg.timeouts.send,
            },
            tunnels: Tunnels {
                tracker: TaskTracker::new(),
                stop: CancellationToken::new(),
                idle: cfg.timeouts.send,
            },
            recovery: None,
        };
        Ok(Gateway { shared })
    }

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
        let mut builder = auto::Builder::new(TokioExecutor::new());
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

        let mut failures = accept::Throttle::default();
        loop {
            let (stream, peer) = tokio::select! {
                () = shutdown.cancelled() => break,
                r = listener.accept() => match r {
                    Ok(pair) => pair,
                    Err(e) => {
                        let pause = accept_failed(&e, &mut failures);
                        // Open connections go on being served meanwhile.
                        tokio::select! {
                            () = shutdown.cancelled() => break,
                            () = tokio::time::sleep(pause) => continue,
                        }
                    }
                },
            };
            if let Some(failed) = failures.accepted() {
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
fn accept_failed(e: &std::io::Error, failures: &mut accept::Throttle) -> Duration {
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
    let every_s = accept::LOG_EVERY.as_secs();
    if failure == accept::Failure::Exhausted {
        tracing::warn!(error = %e, failed, pause_ms, every_s, "gateway: out of file descriptors or memory: new connections wait, open ones are still served; raise the open-file limit (`ulimit -n`, docker's `--ulimit nofile=`)");
    } else {
        tracing::warn!(error = %e, failed, pause_ms, every_s, "gateway: accept failed");
    }
    pause
}

/// Seed a gateway that has no saved table from the original deployment's
/// `admin_config.json` (`gateway.import_from`). Returns the file to remove
/// once the state is saved.
fn import_original(
    cfg: &crate::manifest::Gateway,
    policy: &BackendPolicy,
    st: &mut State,
    fingerprint: &str,
    manifest_table: &Table,
) -> Result<Option<PathBuf>, GatewayError> {
    let Some(path) = cfg.import_from.as_ref().filter(|p| p.exists()) else {
        return Ok(None);
    };
    if st.table.is_some() {
        return Ok(None);
    }
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            tracing::warn!(file = %path.display(), error = %e, "gateway: cannot read the file to import");
            return Ok(None);
        }
    };
    let imp = match migrate::import_merged(&text, manifest_table, policy) {
        Ok(i) => i,
        Err(e) => {
            tracing::warn!(file = %path.display(), error = %e, "gateway: cannot import the original admin_config.json; using the manifest's routes");
            return Ok(None);
        }
    };
    for w in &imp.warnings {
        tracing::warn!(file = %path.display(), "gateway: import: {w}");
    }
    let mut table = imp.table;
    if table.default_backend.is_empty() {
        table.default_backend = manifest_table.default_backend.clone();
    }
    tracing::info!(file = %path.display(), rules = table.rules.len(), "gateway: imported the original deployment's routes");
    st.table = Some(table);
    // Seeded "from the manifest as it is now": a later manifest edit still
    // replaces the table, as for any saved one.
    st.manifest_routes = Some(fingerprint.to_string());
    if let (Some(pw), None, None) = (&imp.password, &cfg.admin.password, &st.password_hash) {
        st.password_hash = Some(auth::hash_password(pw)?);
        tracing::info!("gateway: the original admin password was imported (stored as a hash)");
    }
    Ok(Some(path.clone()))
}

/// Move the password file of earlier versions (keyed by the stack name
/// only) to this stack's own file, if it holds this stack's password: a
/// same-named stack elsewhere may have written it. True when moved.
fn migrate_password_file(admin: &crate::manifest::Admin, hash: &str) -> bool {
    let Some(old) = &admin.legacy_password_file else {
        return false;
    };
    let Ok(text) = std::fs::read_to_string(old) else {
        return false;
    };
    let pw = text.trim_end_matches(['\r', '\n']);
    if pw.is_empty() || !auth::verify_password(hash, pw) {
        return false;
    }
    if let Err(e) = state::write_atomic(&admin.password_file, format!("{pw}\n").as_bytes()) {
        tracing::warn!(error = %e, "gateway: cannot move the admin password file");
        return false;
    }
    let _ = std::fs::remove_file(old);
    tracing::info!(from = %old.display(), to = %admin.password_file.display(), "gateway: moved the admin password file to its per-stack name");
    true
}

/// RFC 9112 §3.2: an HTTP/1.1 request without `Host`, or any request with
/// more than one, is a 400 — a proxy must not pick one (the backend may pick
/// the other) nor invent one. HTTP/1.0 may omit it; HTTP/2 carries
/// `:authority` instead. CONNECT (a tunnel to anywhere) is not proxied: 405.
/// The front end hands such requests to this path, so this one check covers
/// both.
fn request_line_rules<B>(req: &Request<B>) -> Result<(), HttpError> {
    if req.method() == Method::CONNECT {
        return Err(HttpError::MethodNotAllowed(
            "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS",
        ));
    }
    let hosts = req.headers().get_all(header::HOST).iter().count();
    if hosts > 1 {
        return Err(HttpError::BadRequest(
            "more than one Host header (RFC 9112 §3.2)".into(),
        ));
    }
    if hosts == 0 && req.version() == http::Version::HTTP_11 {
        return Err(HttpError::BadRequest(
            "an HTTP/1.1 request needs a Host header (RFC 9112 §3.2)".into(),
        ));
    }
    Ok(())
}

/// Decide the password hash at start (see the module docs) and return it.
fn settle_password(cfg: &crate::manifest::Gateway, st: &mut State) -> Result<String, GatewayError> {
    if let Some(pw) = cfg.admin.password.as_deref().filter(|p| !p.is_empty()) {
        if let Some(problem) = auth::header_problem(pw) {
            return Err(GatewayError::Password(problem));
        }
        if pw.chars().count() < auth::MIN_PASSWORD_LEN {
            tracing::warn!(
                min = auth::MIN_PASSWORD_LEN,
                "gateway: the configured admin password is short; use a longer one"
            );
        }
        let unchanged = st
            .configured_password_hash
            .as_deref()
            .is_some_and(|h| auth::verify_password(h, pw));
        if let (true, Some(current)) = (unchanged, &st.password_hash) {
            auth::check_hash(current)?;
            return Ok(current.clone());
        }
        let phc = auth::hash_password(pw)?;
        st.password_hash = Some(phc.clone());
        st.configured_password_hash = Some(phc.clone());
        return Ok(phc);
    }
    if let Some(current) = &st.password_hash {
        auth::check_hash(current)?;
        if !cfg.admin.password_file.exists() && !migrate_password_file(&cfg.admin, current) {
            tracing::info!(state_file = %cfg.state_file.display(), "gateway: the admin password was set earlier (its hash is in the state file); if it is lost, set `gateway.admin.password` to replace it");
        }
        return Ok(current.clone());
    }
    let pw = auth::generate_password();
    let phc = auth::hash_password(&pw)?;
    st.password_hash = Some(phc.clone());
    st.configured_password_hash = None;
    state::write_atomic(&cfg.admin.password_file, format!("{pw}\n").as_bytes())?;
    // Printed once, on stderr and not through the log pipeline, so it does
    // not end up in shipped logs; the file keeps it for `stackctl routes`.
    eprintln!(
        "stackctl: generated admin password (shown once): {pw}\n\
         stackctl: also written to {} (mode 0600); change it with `stackctl routes password` or set `gateway.admin.password`",
        cfg.admin.password_file.display()
    );
    tracing::info!(file = %cfg.admin.password_file.display(), "gateway: generated an admin password");
    Ok(phc)
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

    /// Answer one request.
    async fn handle(
        self: &Arc<Self>,
        req: Request<Incoming>,
        peer: &headers::Peer,
    ) -> Response<Body> {
        if let Some(over) = limits::parsed(
            req.method().as_str(),
            req.version(),
            req.uri(),
            req.headers(),
        ) {
            return refuse_head(&req, HttpError::from(over));
        }
        if let Some(why) = limits::ambiguous_framing(req.headers()) {
            return refuse_head(&req, HttpError::BadRequest(why.into()));
        }
        if let Err(e) = request_line_rules(&req) {
            return refuse_head(&req, e);
        }
        // Timing is only for the debug log line; skip the clock otherwise.
        let started = tracing::enabled!(tracing::Level::DEBUG).then(Instant::now);
        let fwd = headers::forwarded(
            req.headers(),
            req.uri().authority().map(|a| a.as_str()),
            peer,
            &self.trusted,
        );
        // Owned: the request itself moves on while the decision borrows it.
        let path = match normalize_path(req.uri().path()) {
            Ok(p) => p.into_owned(),
            Err(e) => return HttpError::from(e).response(req.headers()),
        };
        let router = self.router.load_full();
        let host = req
            .headers()
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .or(req.uri().authority().map(|a| a.as_str()));
        let decision = router.route(&RequestHead {
            method: req.method().as_str(),
            path: &path,
            query: req.uri().query(),
            host,
            headers: req.headers().into(),
        });
        let method = req.method().clone();
        let (resp, rule) = match decision {
            Decision::Admin => return admin::handle(self, req, &path, &fwd).await,
            Decision::NoRoute => (HttpError::NoRoute.response(req.headers()), None),
            Decision::Redirect {
                rule_id,
                location,
                status,
            } => {
                let mut r = Response::new(body::empty());
                *r.status_mut() = status;
                match HeaderValue::from_str(&location) {
                    Ok(v) => {
                        r.headers_mut().insert(header::LOCATION, v);
                    }
                    Err(_) => {
                        return HttpError::BadRequest("cannot build the redirect location".into())
                            .response(req.headers())
                    }
                }
                (r, Some(rule_id))
            }
            Decision::Proxy(target) => {
                if !self.is_restored() {
                    let progress = self.status.snapshot().restore_line();
                    (
                        HttpError::Restoring(progress).response(req.headers()),
                        target.rule_id,
                    )
                } else {
                    // Decided now for an error page; the request itself
                    // moves on (and no slice of its head is kept: see
                    // `Upstream::forward`).
                    let html = error::wants_html(req.headers());
                    match self
                        .upstream
                        .forward(req, &target, &fwd, &self.tunnels)
                        .await
                    {
                        Ok(r) => (r, target.rule_id),
                        Err(f) => (
                            self.forward_failed(f, target.backend, target.rule_id, html),
                            target.rule_id,
                        ),
                    }
                }
            }
        };
        if let Some(t) = started {
            log_request(fwd.client_ip, &method, &path, rule, resp.status(), t);
        }
        resp
    }

    /// The client's answer when forwarding to `backend` failed (logged).
    fn forward_failed(
        &self,
        f: ForwardError,
        backend: &Backend,
        rule_id: Option<&str>,
        html: bool,
    ) -> Response<Body> {
        let e = self.failure(f, backend);
        if f.is_client_fault() {
            // A client's broken or stalled upload says nothing about the
            // backend: logged as the client's, below warning level.
            tracing::info!(backend = %backend, rule = rule_id.unwrap_or("default"), error = %e, "gateway: the client's request failed");
        } else {
            tracing::warn!(backend = %backend, rule = rule_id.unwrap_or("default"), error = %e, "gateway: forwarding failed");
        }
        e.response(&accept_only(html))
    }

    /// Turn a forwarding failure into the client's answer, using the
    /// backend's service state: a service still starting gets 503.
    fn failure(&self, f: ForwardError, backend: &Backend) -> HttpError {
        let b = backend.to_string();
        match f {
            ForwardError::TooLarge(n) => HttpError::BodyTooLarge(n),
            ForwardError::ClientBody => HttpError::BadRequest(
                "the request body is malformed or cut off (chunked framing)".into(),
            ),
            ForwardError::ClientStalled(d) => HttpError::RequestTimeout(d.as_secs()),
            ForwardError::Timeout(d) => HttpError::Timeout {
                backend: b,
                secs: d.as_secs(),
            },
            ForwardError::Broken => HttpError::BadGateway { backend: b },
            ForwardError::Busy(max) => HttpError::BackendBusy { backend: b, max },
            ForwardError::Connect => {
                let Some(service) = self.service_ports.get(&backend.addr.port()) else {
                    return HttpError::BadGateway { backend: b };
                };
                let state = self.status.snapshot().services.get(service).cloned();
                let phase = state.as_ref().map(|s| s.phase);
                // Its last try never got as far as a process (program or
                // working directory missing): say so, not "starting".
                let cannot = state
                    .as_ref()
                    .and_then(|s| s.last_exit.as_deref())
                    .and_then(|e| e.strip_prefix(crate::supervisor::state::SPAWN_FAILED));
                if let (Some(Phase::Backoff | Phase::Failed), Some(why)) = (phase, cannot) {
                    return HttpError::CannotStart {
                        service: service.clone(),
                        why: why.to_string(),
                    };
                }
                match phase {
                    Some(Phase::Waiting | Phase::Starting | Phase::Backoff) => {
                        HttpError::Starting {
                            service: service.clone(),
                        }
                    }
                    Some(
                        p @ (Phase::Failed
                        | Phase::Exited
                        | Phase::Stopped
                        | Phase::Stopping
                        | Phase::Disabled),
                    ) => HttpError::ServiceDown {
                        service: service.clone(),
                        backend: b,
                        phase: format!("{p:?}").to_lowercase(),
                    },
                    Some(Phase::Ready) | None => HttpError::BadGateway { backend: b },
                }
            }
        }
    }
}

/// The debug log line of one request.
fn log_request(
    client: std::net::IpAddr,
    method: &http::Method,
    path: &str,
    rule: Option<&str>,
    status: http::StatusCode,
    started: Instant,
) {
    tracing::debug!(
        client = %client,
        %method,
        path,
        rule = rule.unwrap_or("default"),
        status = status.as_u16(),
        micros = started.elapsed().as_micros() as u64,
        "gateway: request"
    );
}

/// The answer to a request whose head is refused before routing (over a
/// limit, or framed ambiguously); an HTTP/1 connection is closed after
/// it, as nginx does: what follows such a head cannot be trusted.
fn refuse_head<B>(req: &Request<B>, e: HttpError) -> Response<Body> {
    tracing::debug!(error = %e, "gateway: request head refused");
    let mut resp = e.response(req.headers());
    if req.version() < http::Version::HTTP_2 {
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    resp
}

/// Just the `Accept` header, which picks an error page's format.
fn accept_only(html: bool) -> HeaderMap {
    let mut out = HeaderMap::new();
    if html {
        out.insert(header::ACCEPT, HeaderValue::from_static("text/html"));
    }
    out
}
