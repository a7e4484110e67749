//! The route table and the password: `GET|POST /admin/routes.json`,
//! `POST /admin/password`, and the state file write both make.

use std::sync::Arc;

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use serde_json::{json, Map, Value};

use crate::gateway::auth::{hash_password, password_problem};
use crate::gateway::body::Body;
use crate::gateway::error::HttpError;
use crate::gateway::router::Router;
use crate::gateway::rules::{validate, validate_table, BackendPolicy, Table};
use crate::gateway::{state, Shared};

use super::reply::{if_match_holds, json_response, read_json, with_etag};

pub(super) fn get_routes(gw: &Shared, head_only: bool) -> Response<Body> {
    let router = gw.router.load_full();
    let value = serde_json::to_value(router.table()).unwrap_or(Value::Null);
    with_etag(json_response(StatusCode::OK, &value, head_only), &router)
}

pub(super) async fn post_routes(
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
    let table = next_table(current.table(), &obj, &gw.policy())?;
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

/// The table a POST's fields make of the current one: a field left out
/// or `null` (or a blank `default_backend`) keeps the current value. The
/// kept rules are validated again as they are (the default backend or the
/// allowed backends may have changed), not re-read from their JSON.
pub(super) fn next_table(
    current: &Table,
    post: &Map<String, Value>,
    policy: &BackendPolicy,
) -> Result<Table, HttpError> {
    let default_backend = match post.get("default_backend") {
        None | Some(Value::Null) => current.default_backend.clone(),
        Some(Value::String(s)) if s.trim().is_empty() => current.default_backend.clone(),
        Some(Value::String(s)) => s.clone(),
        Some(_) => {
            return Err(HttpError::BadRequest(
                "`default_backend`: expected a string".into(),
            ))
        }
    };
    let table = match post.get("rules") {
        None | Some(Value::Null) => validate(
            &default_backend,
            current.rules.iter().cloned().map(Ok),
            policy,
        ),
        Some(Value::Array(rules)) => validate_table(&default_backend, rules, policy),
        Some(_) => {
            return Err(HttpError::BadRequest(
                "`rules`: expected a list of rules".into(),
            ))
        }
    };
    table.map_err(|e| HttpError::BadRequest(e.to_string()))
}

pub(super) async fn save_state(gw: &Arc<Shared>, next: &state::State) -> Result<(), HttpError> {
    let path = gw.state_path.clone();
    let next = next.clone();
    tokio::task::spawn_blocking(move || state::save(&path, &next))
        .await
        .map_err(|e| HttpError::Internal(format!("state writer failed: {e}")))?
        .map_err(|e| HttpError::Internal(e.to_string()))
}

pub(super) async fn post_password(
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
