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
//!
//! Here: the dispatch and the checks above; `reply` the JSON bodies,
//! answers and ETag conditions, `routes` the route table and password,
//! `status` status, health and persistence state.

use std::net::IpAddr;
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;

use crate::gateway::auth;
use crate::gateway::body::{empty, full, Body};
use crate::gateway::error::HttpError;
use crate::gateway::headers::Forwarded;
use crate::gateway::Shared;

mod reply;
mod routes;
mod status;
#[cfg(test)]
mod tests;

pub use reply::{if_match_holds, if_none_match_holds};
use reply::{json_response, read_json, read_json_or_empty, redirect};
use routes::{get_routes, post_password, post_routes};
use status::{get_persist, get_status, healthz, recovery};

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
