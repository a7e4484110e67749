//! What the stack reports: `GET /admin/status`, `/admin/healthz` and
//! `GET /admin/persist`.

use std::sync::Arc;

use http::{header, HeaderMap, HeaderValue, Response, StatusCode};
use serde_json::{json, Value};

use crate::gateway::body::{empty, Body};
use crate::gateway::error::HttpError;
use crate::gateway::Shared;
use crate::status::Phase;

use super::reply::{if_none_match_holds, json_response};

pub(super) fn get_status(gw: &Shared, head_only: bool) -> Response<Body> {
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

pub(super) fn healthz(gw: &Shared, head_only: bool) -> Response<Body> {
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

/// The recovery of a stack with persistence on; 409 without it.
pub(super) fn recovery(gw: &Shared) -> Result<&Arc<crate::recovery::Recovery>, HttpError> {
    gw.recovery.as_ref().ok_or_else(|| {
        HttpError::Recovery(crate::recovery::Error::Conflict(
            "persistence is off: add a persist section to stack.yaml".into(),
        ))
    })
}

/// `GET /admin/persist`: with an ETag over the answer, so a page that
/// polls it gets 304 until something changed.
pub(super) fn get_persist(gw: &Shared, headers: &HeaderMap, head_only: bool) -> Response<Body> {
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
