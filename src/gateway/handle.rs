//! Answering a request on hyper's path: the head checks, routing, the
//! admin endpoints, forwarding, and how a failed forward is answered.

use std::sync::Arc;
use std::time::Instant;

use http::{header, HeaderMap, HeaderValue, Method, Request, Response};
use hyper::body::Incoming;

use crate::status::Phase;

use super::Shared;
use crate::gateway::body::Body;
use crate::gateway::error::HttpError;
use crate::gateway::path::normalize_path;
use crate::gateway::router::{Decision, RequestHead};
use crate::gateway::rules::Backend;
use crate::gateway::upstream::ForwardError;
use crate::gateway::{admin, body, error, headers, limits, throttle};

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

impl Shared {
    /// Answer one request.
    pub(super) async fn handle(
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
    pub(super) fn forward_failed(
        &self,
        f: ForwardError,
        backend: &Backend,
        rule_id: Option<&str>,
        html: bool,
    ) -> Response<Body> {
        let e = self.failure(f, backend);
        let rule = rule_id.unwrap_or("default");
        if f.is_client_fault() {
            // A client's broken or stalled upload says nothing about the
            // backend: logged as the client's, below warning level.
            tracing::info!(backend = %backend, rule, error = %e, "gateway: the client's request failed");
        } else if let ForwardError::Busy(_) = f {
            // A burst refused at the cap is one line per interval, not one
            // per 503.
            if let Some(refused) = self.upstream.refused(backend.addr) {
                let every_s = throttle::LOG_EVERY.as_secs();
                tracing::warn!(backend = %backend, rule, error = %e, refused, every_s, "gateway: requests refused at the backend's connection cap (backend_connections.max)");
            }
        } else {
            tracing::warn!(backend = %backend, rule, error = %e, "gateway: forwarding failed");
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
pub(super) fn log_request(
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
