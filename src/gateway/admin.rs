//! The admin API under `/admin/` (spec table): routes, password, status,
//! health, persistence (`/admin/persist…`: state, backup, snapshots,
//! restore; the work is [`crate::recovery`]'s), and the page.
//!
//! Order of checks for the API endpoints: method (405 + `Allow`), then
//! cross-site (403: a third-party page cannot drive the API from a logged-in
//! browser), then rate limit (429) and password (403), then body type
//! (415), size (413, 64 KiB) and content (400 naming the rule and field),
//! then `If-Match` (412). No CORS headers are ever sent, so browsers keep
//! other sites from reading answers.

use std::net::IpAddr;
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use serde_json::{json, Value};

use crate::gateway::auth::{self, hash_password, password_problem};
use crate::gateway::body::{empty, full, Body};
use crate::gateway::error::HttpError;
use crate::gateway::headers::Forwarded;
use crate::gateway::router::Router;
use crate::gateway::rules::validate_table;
use crate::gateway::{state, Shared};
use crate::status::Phase;

/// Admin request bodies larger than this are refused (413).
pub const ADMIN_BODY_LIMIT: usize = 64 * 1024;

/// The admin password header (the original's name).
pub const PASSWORD_HEADER: &str = "x-admin-password";

/// Answer an `/admin…` request.
///
/// `fwd` is what the gateway believes of the client after applying
/// `trusted_proxies`: its address and the host it asked for.
pub(crate) async fn handle(
    gw: &Arc<Shared>,
    req: Request<Incoming>,
    path: &str,
    fwd: &Forwarded,
) -> Response<Body> {
    let headers = req.headers().clone();
    let client = Client {
        ip: fwd.client_ip,
        host: fwd.host.as_ref().and_then(|h| h.to_str().ok()),
        https: fwd.proto == "https",
        device_cookie: OnceLock::new(),
    };
    let mut resp = match route(gw, req, path, &client).await {
        Ok(resp) => resp,
        Err(e) => {
            if e.status().is_server_error() {
                tracing::error!(path, error = %e, "admin request failed");
            }
            e.response(&headers)
        }
    };
    if let Some(v) = client.device_cookie.get() {
        resp.headers_mut().append(header::SET_COOKIE, v.clone());
    }
    resp
}

/// Who sent an admin request, as far as the gateway trusts it.
struct Client<'a> {
    ip: IpAddr,
    /// The host the client asked for: `Host`, or `X-Forwarded-Host` only
    /// from a trusted proxy.
    host: Option<&'a str>,
    /// The client reached us over HTTPS (directly or via a trusted proxy).
    https: bool,
    /// A `Set-Cookie` value for the device cookie, once the password passed.
    device_cookie: OnceLock<HeaderValue>,
}

async fn route(
    gw: &Arc<Shared>,
    req: Request<Incoming>,
    path: &str,
    client: &Client<'_>,
) -> Result<Response<Body>, HttpError> {
    let method = req.method().clone();
    match path {
        "/admin" | "/admin/" => Ok(redirect("/admin/ui/", StatusCode::FOUND)),
        "/admin/ui" => Ok(redirect("/admin/ui/", StatusCode::PERMANENT_REDIRECT)),
        "/admin/healthz" => {
            allow(&method, &[Method::GET, Method::HEAD], "GET, HEAD")?;
            Ok(healthz(gw, method == Method::HEAD))
        }
        "/admin/routes.json" => {
            allow(
                &method,
                &[Method::GET, Method::HEAD, Method::POST],
                "GET, HEAD, POST",
            )?;
            guard(gw, req.headers(), client).await?;
            if method == Method::POST {
                post_routes(gw, req).await
            } else {
                Ok(get_routes(gw, method == Method::HEAD))
            }
        }
        "/admin/password" => {
            allow(&method, &[Method::POST], "POST")?;
            guard(gw, req.headers(), client).await?;
            post_password(gw, req).await
        }
        "/admin/status" => {
            allow(&method, &[Method::GET, Method::HEAD], "GET, HEAD")?;
            guard(gw, req.headers(), client).await?;
            Ok(get_status(gw, method == Method::HEAD))
        }
        "/admin/persist" => {
            allow(&method, &[Method::GET, Method::HEAD], "GET, HEAD")?;
            guard(gw, req.headers(), client).await?;
            Ok(get_persist(gw, req.headers(), method == Method::HEAD))
        }
        "/admin/persist/backup" => {
            allow(&method, &[Method::POST], "POST")?;
            guard(gw, req.headers(), client).await?;
            read_json_or_empty(req).await?;
            let value = recovery(gw)?.backup().await?;
            Ok(json_response(StatusCode::OK, &value, false))
        }
        "/admin/persist/snapshots" => {
            allow(&method, &[Method::GET, Method::HEAD], "GET, HEAD")?;
            guard(gw, req.headers(), client).await?;
            let page =
                crate::recovery::request::page(req.uri().query()).map_err(HttpError::BadRequest)?;
            let value = recovery(gw)?.snapshots(page).await?;
            Ok(json_response(
                StatusCode::OK,
                &value,
                method == Method::HEAD,
            ))
        }
        "/admin/persist/restore" => {
            allow(&method, &[Method::POST], "POST")?;
            guard(gw, req.headers(), client).await?;
            let body = read_json(req).await?;
            let recovery = recovery(gw)?;
            let wanted = crate::recovery::request::restore(&body).map_err(HttpError::BadRequest)?;
            let value = recovery.restore(wanted).await?;
            Ok(json_response(StatusCode::OK, &value, false))
        }
        p if p.starts_with("/admin/ui/") => {
            allow(&method, &[Method::GET, Method::HEAD], "GET, HEAD")?;
            ui_asset(&p["/admin/ui/".len()..], method == Method::HEAD)
        }
        _ => Err(HttpError::NotFound),
    }
}

fn allow(method: &Method, allowed: &[Method], header: &'static str) -> Result<(), HttpError> {
    if allowed.contains(method) {
        Ok(())
    } else {
        Err(HttpError::MethodNotAllowed(header))
    }
}

/// Cross-site check, then the password.
async fn guard(
    gw: &Arc<Shared>,
    headers: &HeaderMap,
    client: &Client<'_>,
) -> Result<(), HttpError> {
    if !same_origin(headers, client.host) {
        tracing::warn!(client = %client.ip, "admin: cross-site request refused");
        return Err(HttpError::CrossSite);
    }
    let presented = headers.get(PASSWORD_HEADER).and_then(|v| v.to_str().ok());
    let device = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| auth::cookie(v, auth::DEVICE_COOKIE));
    if let Some(token) = gw.auth.check(client.ip, presented, device).await? {
        // Secure only over HTTPS: a browser drops a Secure cookie set over
        // plain HTTP (a local stack), and it would help nobody there.
        let cookie = format!(
            "{}={token}; Path=/admin/; Max-Age={}; HttpOnly; SameSite=Strict{}",
            auth::DEVICE_COOKIE,
            auth::DEVICE_FOR.as_secs(),
            if client.https { "; Secure" } else { "" }
        );
        if let Ok(v) = HeaderValue::from_str(&cookie) {
            let _ = client.device_cookie.set(v);
        }
    }
    Ok(())
}

/// Whether a request may drive the admin API: `Sec-Fetch-Site` (set by
/// browsers, not forgeable by a page) must be `same-origin` or `none`;
/// without it, an `Origin` must name the host the request was sent to
/// (`host`: the `Host` header, or `X-Forwarded-Host` from a trusted proxy —
/// from anyone else that header is the client's own claim and proves
/// nothing). Requests with neither come from tools (curl, `stackctl routes`).
pub fn same_origin(headers: &HeaderMap, host: Option<&str>) -> bool {
    if let Some(site) = headers.get("sec-fetch-site") {
        return matches!(site.to_str(), Ok("same-origin" | "none"));
    }
    let Some(origin) = headers.get(header::ORIGIN) else {
        return true;
    };
    let Ok(origin) = origin.to_str() else {
        return false;
    };
    let Some((_, authority)) = origin.split_once("://") else {
        return false; // `null` and other opaque origins
    };
    let authority = authority.trim_end_matches('/');
    host.is_some_and(|host| host.eq_ignore_ascii_case(authority))
}

fn json_response(status: StatusCode, value: &Value, head_only: bool) -> Response<Body> {
    let body = if head_only {
        empty()
    } else {
        full(format!("{value}\n"))
    };
    let mut r = Response::new(body);
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

fn redirect(to: &'static str, status: StatusCode) -> Response<Body> {
    let mut r = Response::new(empty());
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::LOCATION, HeaderValue::from_static(to));
    r
}

fn with_etag(mut r: Response<Body>, router: &Router) -> Response<Body> {
    if let Ok(v) = HeaderValue::from_str(router.etag()) {
        r.headers_mut().insert(header::ETAG, v);
    }
    r
}

fn get_routes(gw: &Shared, head_only: bool) -> Response<Body> {
    let router = gw.router.load_full();
    let value = serde_json::to_value(router.table()).unwrap_or(Value::Null);
    with_etag(json_response(StatusCode::OK, &value, head_only), &router)
}

/// `If-Match` holds for `etag`: absent, `*`, or one of the listed tags.
/// RFC 9110 §13.1.1: If-Match uses the strong comparison, so a weak tag
/// (`W/"…"`) never matches — a client cannot claim it saw these exact bytes
/// with a validator that only promises "equivalent".
pub fn if_match_holds(headers: &HeaderMap, etag: &str) -> bool {
    let values: Vec<&str> = headers
        .get_all(header::IF_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .collect();
    values.is_empty()
        || values
            .iter()
            .any(|v| *v == "*" || (!v.starts_with("W/") && *v == etag))
}

async fn read_json(req: Request<Incoming>) -> Result<Value, HttpError> {
    let ctype = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let essence = ctype.split(';').next().unwrap_or("").trim();
    if !essence.eq_ignore_ascii_case("application/json") {
        return Err(HttpError::UnsupportedMediaType);
    }
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > ADMIN_BODY_LIMIT) {
        return Err(HttpError::BodyTooLarge(ADMIN_BODY_LIMIT as u64));
    }
    let bytes: Bytes = match Limited::new(req.into_body(), ADMIN_BODY_LIMIT)
        .collect()
        .await
    {
        Ok(c) => c.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            return Err(HttpError::BodyTooLarge(ADMIN_BODY_LIMIT as u64))
        }
        Err(e) => return Err(HttpError::BadRequest(format!("cannot read the body: {e}"))),
    };
    serde_json::from_slice(&bytes).map_err(|e| HttpError::BadRequest(format!("invalid json: {e}")))
}

/// A JSON body that may also be empty (`POST /admin/persist/backup` takes
/// no arguments; `{}` and nothing at all both do).
async fn read_json_or_empty(req: Request<Incoming>) -> Result<Value, HttpError> {
    let empty = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .is_some_and(|v| v.as_bytes() == b"0");
    if empty && req.headers().get(header::CONTENT_TYPE).is_none() {
        return Ok(json!({}));
    }
    match read_json(req).await {
        Err(HttpError::BadRequest(m)) if m.contains("EOF while parsing") => Ok(json!({})),
        Ok(Value::Object(o)) if o.is_empty() => Ok(Value::Object(o)),
        Ok(_) => Err(HttpError::BadRequest(
            "this request takes no arguments: send {} or an empty body".into(),
        )),
        Err(e) => Err(e),
    }
}

/// The recovery of a stack with persistence on; 409 without it.
fn recovery(gw: &Shared) -> Result<&Arc<crate::recovery::Recovery>, HttpError> {
    gw.recovery.as_ref().ok_or_else(|| {
        HttpError::Recovery(crate::recovery::Error::Conflict(
            "persistence is off: add a persist section to stack.yaml".into(),
        ))
    })
}

/// `GET /admin/persist`: with an ETag over the answer, so a page that
/// polls it gets 304 until something changed.
fn get_persist(gw: &Shared, headers: &HeaderMap, head_only: bool) -> Response<Body> {
    let value = match &gw.recovery {
        Some(r) => r.state(),
        None => json!({"enabled": false}),
    };
    let tag = format!(
        "\"{:016x}\"",
        crate::gateway::router::fnv1a(value.to_string().as_bytes())
    );
    let mut r = if if_none_match_holds(headers, &tag) {
        json_response(StatusCode::OK, &value, head_only)
    } else {
        let mut r = Response::new(empty());
        *r.status_mut() = StatusCode::NOT_MODIFIED;
        r.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        r
    };
    if let Ok(v) = HeaderValue::from_str(&tag) {
        r.headers_mut().insert(header::ETAG, v);
    }
    r
}

/// `If-None-Match` does not name `etag` (absent, or other tags): send the
/// body. RFC 9110 §13.1.2 uses the weak comparison here, so `W/"x"`
/// matches `"x"`.
pub fn if_none_match_holds(headers: &HeaderMap, etag: &str) -> bool {
    !headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .any(|v| v == "*" || v.trim_start_matches("W/") == etag)
}

async fn post_routes(
    gw: &Arc<Shared>,
    req: Request<Incoming>,
) -> Result<Response<Body>, HttpError> {
    let if_match = req.headers().clone();
    let body = read_json(req).await?;
    let Value::Object(obj) = body else {
        return Err(HttpError::BadRequest(
            "invalid json: expected an object like {\"default_backend\": …, \"rules\": […]}".into(),
        ));
    };
    for key in obj.keys() {
        if !matches!(key.as_str(), "default_backend" | "rules" | "admin_password") {
            return Err(HttpError::BadRequest(format!(
                "unknown field `{key}`; expected `default_backend` and/or `rules`"
            )));
        }
    }
    if obj.contains_key("admin_password") {
        // The original's admin_config.json carries a plaintext password;
        // accepting the file is useful, changing the password this way is
        // not (use `/admin/password`).
        tracing::warn!(
            "admin: `admin_password` in a routes update is ignored; use /admin/password"
        );
    }
    // One writer at a time: If-Match, validation, the file and the swap
    // happen as one step.
    let mut st = gw.state.lock().await;
    let current = gw.router.load_full();
    if !if_match_holds(&if_match, current.etag()) {
        return Err(HttpError::PreconditionFailed);
    }
    let default_backend = match obj.get("default_backend") {
        None | Some(Value::Null) => current.table().default_backend.clone(),
        Some(Value::String(s)) if s.trim().is_empty() => current.table().default_backend.clone(),
        Some(Value::String(s)) => s.clone(),
        Some(_) => {
            return Err(HttpError::BadRequest(
                "`default_backend`: expected a string".into(),
            ))
        }
    };
    let rules: Vec<Value> = match obj.get("rules") {
        None | Some(Value::Null) => current
            .table()
            .rules
            .iter()
            .map(|r| serde_json::to_value(r).unwrap_or(Value::Null))
            .collect(),
        Some(Value::Array(a)) => a.clone(),
        Some(_) => {
            return Err(HttpError::BadRequest(
                "`rules`: expected a list of rules".into(),
            ))
        }
    };
    let policy = gw.policy();
    let table = validate_table(&default_backend, &rules, &policy)
        .map_err(|e| HttpError::BadRequest(e.to_string()))?;
    let router = Router::new(table.clone()).map_err(|e| HttpError::BadRequest(e.to_string()))?;
    let mut next = st.clone();
    next.table = Some(table);
    save_state(gw, &next).await?;
    *st = next;
    let router = Arc::new(router);
    gw.router.store(router.clone());
    tracing::info!(
        rules = router.rule_count(),
        etag = router.etag(),
        "admin: route table replaced"
    );
    Ok(with_etag(
        json_response(StatusCode::OK, &json!({"ok": true}), false),
        &router,
    ))
}

async fn save_state(gw: &Arc<Shared>, next: &state::State) -> Result<(), HttpError> {
    let path = gw.state_path.clone();
    let next = next.clone();
    tokio::task::spawn_blocking(move || state::save(&path, &next))
        .await
        .map_err(|e| HttpError::Internal(format!("state writer failed: {e}")))?
        .map_err(|e| HttpError::Internal(e.to_string()))
}

async fn post_password(
    gw: &Arc<Shared>,
    req: Request<Incoming>,
) -> Result<Response<Body>, HttpError> {
    let body = read_json(req).await?;
    let new = match body.get("new_password") {
        Some(Value::String(s)) => s.clone(),
        _ => {
            return Err(HttpError::BadRequest(
                "`new_password`: expected a string, as in {\"new_password\": \"…\"}".into(),
            ))
        }
    };
    if let Some(problem) = password_problem(&new) {
        return Err(HttpError::BadRequest(format!("`new_password`: {problem}")));
    }
    let pw = new.clone();
    let phc = tokio::task::spawn_blocking(move || hash_password(&pw))
        .await
        .map_err(|e| HttpError::Internal(format!("password hashing failed: {e}")))?
        .map_err(|e| HttpError::Internal(e.to_string()))?;
    let mut st = gw.state.lock().await;
    let mut next = st.clone();
    next.password_hash = Some(phc.clone());
    save_state(gw, &next).await?;
    *st = next;
    gw.auth.set_hash(phc);
    // Keep the local password file (written for a generated password) in
    // step, so `stackctl routes` goes on working.
    if gw.password_file.exists() {
        let file = gw.password_file.clone();
        let res = tokio::task::spawn_blocking(move || {
            state::write_atomic(&file, format!("{new}\n").as_bytes())
        })
        .await;
        if !matches!(res, Ok(Ok(()))) {
            tracing::warn!(file = %gw.password_file.display(), "admin: cannot update the password file");
        }
    }
    tracing::info!("admin: password changed");
    Ok(json_response(StatusCode::OK, &json!({"ok": true}), false))
}

fn get_status(gw: &Shared, head_only: bool) -> Response<Body> {
    let snap = gw.status.snapshot();
    let router = gw.router.load_full();
    let healthy = snap.healthy();
    let mut value = serde_json::to_value(&snap).unwrap_or_else(|_| json!({}));
    if let Value::Object(m) = &mut value {
        m.insert("healthy".into(), json!(healthy));
        m.insert(
            "gateway".into(),
            json!({
                "listen": gw.listen().to_string(),
                "routes": router.rule_count(),
                "default_backend": router.table().default_backend,
                "etag": router.etag(),
                "state_file": gw.state_path.display().to_string(),
            }),
        );
    }
    json_response(StatusCode::OK, &value, head_only)
}

fn healthz(gw: &Shared, head_only: bool) -> Response<Body> {
    let snap = gw.status.snapshot();
    if snap.healthy() {
        return json_response(StatusCode::OK, &json!({"ok": true}), head_only);
    }
    let not_ready: Vec<&String> = snap
        .services
        .iter()
        .filter(|(_, s)| {
            let done = s.phase == Phase::Exited && s.last_exit.as_deref() == Some("exited 0");
            !(matches!(s.phase, Phase::Ready | Phase::Disabled) || done)
        })
        .map(|(n, _)| n)
        .collect();
    json_response(
        StatusCode::SERVICE_UNAVAILABLE,
        &json!({"ok": false, "restored": snap.restored, "not_ready": not_ready}),
        head_only,
    )
}

fn ui_asset(rel: &str, head_only: bool) -> Result<Response<Body>, HttpError> {
    let rel = if rel.is_empty() { "index.html" } else { rel };
    let (ctype, bytes) = crate::gateway::ui::asset(rel).ok_or(HttpError::NotFound)?;
    let mut r = Response::new(if head_only {
        empty()
    } else {
        full(Bytes::from_static(bytes))
    });
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(ctype));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(crate::gateway::ui::CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        m
    }

    #[test]
    fn cross_site_requests_are_told_apart() {
        // (headers, the host the gateway believes, verdict)
        type Case<'a> = (&'a [(&'a str, &'a str)], Option<&'a str>, bool);
        let cases: &[Case] = &[
            (&[], None, true),
            (&[("sec-fetch-site", "same-origin")], None, true),
            (&[("sec-fetch-site", "none")], None, true),
            (&[("sec-fetch-site", "same-site")], None, false),
            (
                &[("sec-fetch-site", "cross-site"), ("origin", "http://h:1")],
                Some("h:1"),
                false,
            ),
            (&[("origin", "http://h:1")], Some("h:1"), true),
            (&[("origin", "http://H:1/")], Some("h:1"), true),
            // Behind a trusted proxy, the gateway believes X-Forwarded-Host.
            (
                &[("origin", "https://space.hf.space")],
                Some("space.hf.space"),
                true,
            ),
            // Issue 16: from an untrusted peer the gateway believes only
            // Host, so a forged X-Forwarded-Host proves nothing.
            (
                &[
                    ("origin", "https://evil.example"),
                    ("x-forwarded-host", "evil.example"),
                ],
                Some("10.0.0.1:7860"),
                false,
            ),
            (&[("origin", "https://evil.example")], Some("h:1"), false),
            (&[("origin", "http://h:1")], None, false),
            (&[("origin", "null")], Some("h:1"), false),
        ];
        for (pairs, host, want) in cases {
            assert_eq!(same_origin(&h(pairs), *host), *want, "{pairs:?} {host:?}");
        }
    }

    #[test]
    fn if_none_match_forms() {
        let tag = "\"00000000000000ab\"";
        assert!(if_none_match_holds(&h(&[]), tag));
        assert!(if_none_match_holds(&h(&[("if-none-match", "\"x\"")]), tag));
        assert!(!if_none_match_holds(&h(&[("if-none-match", "*")]), tag));
        assert!(!if_none_match_holds(
            &h(&[("if-none-match", "\"x\", W/\"00000000000000ab\"")]),
            tag
        ));
    }

    #[test]
    fn if_match_forms() {
        let tag = "\"00000000000000ab\"";
        assert!(if_match_holds(&h(&[]), tag));
        assert!(if_match_holds(&h(&[("if-match", "*")]), tag));
        assert!(if_match_holds(
            &h(&[("if-match", "\"x\", \"00000000000000ab\"")]),
            tag
        ));
        assert!(!if_match_holds(
            &h(&[("if-match", "W/\"00000000000000ab\"")]),
            tag
        ));
        assert!(!if_match_holds(
            &h(&[("if-match", "\"00000000000000ac\"")]),
            tag
        ));
    }
}
