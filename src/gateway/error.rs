//! Every way a gateway request can fail, and the one place that maps a
//! failure to an HTTP status and a small JSON (or, for browsers, HTML) body.

use http::{header, HeaderMap, HeaderValue, Response, StatusCode};

use crate::gateway::body::{full, Body};
use crate::gateway::limits::{self, Exceeded};
use crate::gateway::path::PathError;

/// A request-level failure, answered to the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HttpError {
    /// The path was refused before matching.
    #[error("bad request path: {0}")]
    BadPath(#[from] PathError),
    /// The request head passed a limit (see [`limits`]).
    #[error("{}", head_limit_message(*.0))]
    HeadTooLarge(Exceeded),
    /// No rule matched and there is no default backend.
    #[error("no route for this path (no rule matched and there is no `default_backend`)")]
    NoRoute,
    /// The request body is over `max_body`.
    #[error("the request body is larger than the gateway's {0}-byte limit (`gateway.max_body`)")]
    BodyTooLarge(u64),
    /// The backend refused, reset or broke the connection.
    #[error("the backend `{backend}` refused or dropped the connection")]
    BadGateway {
        /// `http://ip:port`.
        backend: String,
    },
    /// The backend's service is given up or stopped.
    #[error("the service `{service}` behind `{backend}` is {phase}")]
    ServiceDown {
        /// Service name.
        service: String,
        /// `http://ip:port`.
        backend: String,
        /// Its phase, as `status` shows it.
        phase: String,
    },
    /// The backend did not answer in time.
    #[error("the backend `{backend}` did not answer within {secs} s (`gateway.timeouts`)")]
    Timeout {
        /// `http://ip:port`.
        backend: String,
        /// The timeout that passed.
        secs: u64,
    },
    /// The backend's service has not passed its readiness check yet.
    #[error("the service `{service}` is starting; retry in a few seconds")]
    Starting {
        /// Service name.
        service: String,
    },
    /// The backend's service could not even be started (its program or
    /// working directory is missing); retrying will not help by itself.
    #[error("the service `{service}` cannot start: {why}")]
    CannotStart {
        /// Service name.
        service: String,
        /// Why, as the supervisor said it.
        why: String,
    },
    /// The backend had all the connections it may have open busy for the
    /// whole queue time (`gateway.backend_connections`).
    #[error("the backend `{backend}` has all its {max} connections busy (`gateway.backend_connections`); retry in a moment")]
    BackendBusy {
        /// `http://ip:port`.
        backend: String,
        /// The cap.
        max: usize,
    },
    /// Persisted data is being restored; services are not up yet.
    #[error("restoring data{}; retry in a few seconds", .0.as_deref().map(|p| format!(" ({p})")).unwrap_or_default())]
    Restoring(Option<String>),
    /// Wrong or missing admin password.
    #[error("forbidden")]
    Forbidden,
    /// A browser request from another site (CSRF).
    #[error("cross-site request refused: the admin API only accepts requests from its own page or from tools without a browser Origin")]
    CrossSite,
    /// Too many failed password attempts.
    #[error("too many failed password attempts; retry in {0} s")]
    RateLimited(u64),
    /// The request is malformed (names the bad field).
    #[error("{0}")]
    BadRequest(String),
    /// `If-Match` does not match the current table.
    #[error("the route table changed since it was read (ETag mismatch); reload it and apply the change again")]
    PreconditionFailed,
    /// The admin API takes JSON only.
    #[error("send `Content-Type: application/json`")]
    UnsupportedMediaType,
    /// Wrong method; `Allow` lists the right ones.
    #[error("method not allowed (allowed: {0})")]
    MethodNotAllowed(&'static str),
    /// Unknown admin path.
    #[error("not found")]
    NotFound,
    /// Something on our side failed (state file not writable, …).
    #[error("{0}")]
    Internal(String),
    /// The client stopped sending its request body (its fault: 408, as
    /// nginx's `client_body_timeout`, not the backend's 504).
    #[error(
        "the request body stalled: nothing of it arrived for {0} s (`gateway.timeouts.response`)"
    )]
    RequestTimeout(u64),
    /// A backup, snapshot list or restore of `/admin/persist…` was not done.
    #[error(transparent)]
    Recovery(#[from] crate::recovery::Error),
}

impl HttpError {
    /// The status code: the one mapping of failures to HTTP.
    pub fn status(&self) -> StatusCode {
        match self {
            HttpError::BadPath(_) | HttpError::BadRequest(_) => StatusCode::BAD_REQUEST,
            HttpError::HeadTooLarge(over) => over.status(),
            HttpError::Forbidden | HttpError::CrossSite => StatusCode::FORBIDDEN,
            HttpError::NoRoute | HttpError::NotFound => StatusCode::NOT_FOUND,
            HttpError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            HttpError::PreconditionFailed => StatusCode::PRECONDITION_FAILED,
            HttpError::BodyTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            HttpError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            HttpError::RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
            HttpError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            HttpError::BadGateway { .. } | HttpError::ServiceDown { .. } => StatusCode::BAD_GATEWAY,
            HttpError::Starting { .. }
            | HttpError::BackendBusy { .. }
            | HttpError::Restoring(_)
            | HttpError::CannotStart { .. } => StatusCode::SERVICE_UNAVAILABLE,
            HttpError::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            HttpError::RequestTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            HttpError::Recovery(e) => {
                use crate::recovery::Error as R;
                match e {
                    R::Conflict(_) => StatusCode::CONFLICT,
                    R::BadRequest(_) => StatusCode::BAD_REQUEST,
                    R::NotFound(_) => StatusCode::NOT_FOUND,
                    R::Failed(_) => StatusCode::BAD_GATEWAY,
                    R::Stopping => StatusCode::SERVICE_UNAVAILABLE,
                }
            }
        }
    }

    /// Seconds a client should wait before retrying, when that is known.
    fn retry_after(&self) -> Option<u64> {
        match self {
            HttpError::RateLimited(s) => Some(*s),
            HttpError::Starting { .. } | HttpError::Restoring(_) => Some(5),
            HttpError::BackendBusy { .. } => Some(crate::gateway::fanout::RETRY_AFTER_SECS),
            _ => None,
        }
    }

    /// The response: JSON `{"error": "…"}`, or a small HTML page when the
    /// client prefers HTML (a browser navigating to a starting service).
    pub fn response(&self, request_headers: &HeaderMap) -> Response<Body> {
        let status = self.status();
        let message = self.to_string();
        let html = wants_html(request_headers) && !matches!(self, HttpError::Forbidden);
        let (ctype, body) = if html {
            // A page that reloads itself when a retry is worth it.
            let refresh = match self.retry_after() {
                Some(s) if status == StatusCode::SERVICE_UNAVAILABLE => {
                    format!("<meta http-equiv=\"refresh\" content=\"{s}\">")
                }
                _ => String::new(),
            };
            let title = format!(
                "{} {}",
                status.as_u16(),
                status.canonical_reason().unwrap_or("")
            );
            (
                "text/html; charset=utf-8",
                format!(
                    "<!doctype html><html><head><meta charset=\"utf-8\">{refresh}<title>{t}</title></head>\
                     <body><h1>{t}</h1><p>{m}</p><hr><p>stackctl gateway</p></body></html>\n",
                    t = escape_html(&title),
                    m = escape_html(&message)
                ),
            )
        } else {
            (
                "application/json",
                format!("{}\n", serde_json::json!({ "error": message })),
            )
        };
        let mut resp = Response::new(full(body));
        *resp.status_mut() = status;
        let h = resp.headers_mut();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static(ctype));
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if let Some(s) = self.retry_after() {
            h.insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        if let HttpError::MethodNotAllowed(allow) = self {
            h.insert(header::ALLOW, HeaderValue::from_static(allow));
        }
        resp
    }
}

impl From<Exceeded> for HttpError {
    fn from(over: Exceeded) -> Self {
        HttpError::HeadTooLarge(over)
    }
}

/// What a client over a head limit is told, with the limit and the fix.
fn head_limit_message(over: Exceeded) -> String {
    match over {
        Exceeded::RequestLine => format!(
            "the request line is longer than the gateway's limit of {} bytes; send long data in a request body, not in the URL",
            limits::MAX_REQUEST_LINE
        ),
        Exceeded::Headers => format!(
            "the request headers are over the gateway's limits ({} fields, {} bytes in all); send fewer or smaller headers (cookies)",
            limits::MAX_HEADERS,
            limits::MAX_HEAD
        ),
    }
}

/// A browser navigation (`Accept: text/html…`) gets HTML; APIs get JSON.
pub fn wants_html(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("text/html"))
}

/// Escape text for an HTML element body or attribute.
pub fn escape_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[test]
    fn each_failure_has_its_status() {
        let b = || "http://127.0.0.1:1".to_string();
        let table: Vec<(HttpError, u16)> = vec![
            (HttpError::BadPath(PathError::EscapesRoot), 400),
            (HttpError::BadRequest("x".into()), 400),
            (HttpError::HeadTooLarge(Exceeded::RequestLine), 414),
            (HttpError::HeadTooLarge(Exceeded::Headers), 431),
            (HttpError::Forbidden, 403),
            (HttpError::CrossSite, 403),
            (HttpError::NoRoute, 404),
            (HttpError::NotFound, 404),
            (HttpError::MethodNotAllowed("GET"), 405),
            (HttpError::PreconditionFailed, 412),
            (HttpError::BodyTooLarge(1), 413),
            (HttpError::UnsupportedMediaType, 415),
            (HttpError::RateLimited(3), 429),
            (HttpError::Internal("x".into()), 500),
            (HttpError::BadGateway { backend: b() }, 502),
            (
                HttpError::ServiceDown {
                    service: "s".into(),
                    backend: b(),
                    phase: "failed".into(),
                },
                502,
            ),
            (
                HttpError::Starting {
                    service: "s".into(),
                },
                503,
            ),
            (HttpError::Restoring(None), 503),
            (
                HttpError::BackendBusy {
                    backend: b(),
                    max: 2,
                },
                503,
            ),
            (
                HttpError::CannotStart {
                    service: "s".into(),
                    why: "x".into(),
                },
                503,
            ),
            (
                HttpError::Timeout {
                    backend: b(),
                    secs: 1,
                },
                504,
            ),
            (HttpError::RequestTimeout(1), 408),
        ];
        for (e, code) in table {
            assert_eq!(e.status().as_u16(), code, "{e:?}");
        }
    }

    async fn body_of(r: Response<Body>) -> String {
        String::from_utf8(r.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap()
    }

    #[tokio::test]
    async fn bodies_are_json_or_escaped_html_by_accept() {
        let r = HttpError::Forbidden.response(&HeaderMap::new());
        assert_eq!(r.headers()["content-type"], "application/json");
        assert_eq!(body_of(r).await, "{\"error\":\"forbidden\"}\n");

        let mut accept = HeaderMap::new();
        accept.insert(
            header::ACCEPT,
            HeaderValue::from_static("text/html,application/xhtml+xml"),
        );
        let r = HttpError::Starting {
            service: "<napcat>".into(),
        }
        .response(&accept);
        assert_eq!(r.headers()["retry-after"], "5");
        let page = body_of(r).await;
        assert!(
            page.contains("the service `&lt;napcat&gt;` is starting"),
            "{page}"
        );
        assert!(page.contains("http-equiv=\"refresh\""), "{page}");

        // A busy backend: retry soon, and the page reloads itself as soon.
        let busy = HttpError::BackendBusy {
            backend: "http://127.0.0.1:1".into(),
            max: 4,
        };
        let r = busy.response(&accept);
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(r.headers()["retry-after"], "1");
        let page = body_of(r).await;
        assert!(page.contains("content=\"1\""), "{page}");
        assert!(page.contains("all its 4 connections busy"), "{page}");
        let r = busy.response(&HeaderMap::new());
        assert_eq!(r.headers()["retry-after"], "1");

        let r = HttpError::MethodNotAllowed("GET, POST").response(&HeaderMap::new());
        assert_eq!(r.headers()["allow"], "GET, POST");
    }
}
