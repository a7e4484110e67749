//! The admin API's HTTP plumbing: JSON answers and bodies, redirects,
//! ETags and the `If-Match` / `If-None-Match` checks.

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use serde_json::{json, Value};

use crate::gateway::body::{empty, full, Body};
use crate::gateway::error::HttpError;
use crate::gateway::router::Router;

use super::ADMIN_BODY_LIMIT;

pub(super) fn json_response(status: StatusCode, value: &Value, head_only: bool) -> Response<Body> {
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

pub(super) fn redirect(to: &'static str, status: StatusCode) -> Response<Body> {
    let mut r = Response::new(empty());
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::LOCATION, HeaderValue::from_static(to));
    r
}

pub(super) fn with_etag(mut r: Response<Body>, router: &Router) -> Response<Body> {
    if let Ok(v) = HeaderValue::from_str(router.etag()) {
        r.headers_mut().insert(header::ETAG, v);
    }
    r
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

pub(super) async fn read_json(req: Request<Incoming>) -> Result<Value, HttpError> {
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
pub(super) async fn read_json_or_empty(req: Request<Incoming>) -> Result<Value, HttpError> {
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
