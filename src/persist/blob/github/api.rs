//! GitHub REST calls: auth, rate limits, retries, JSON and errors.

use super::*;

impl GithubStore {
    pub(super) fn authed(&self, req: RequestBuilder) -> RequestBuilder {
        let req = req
            .header("Accept", "application/vnd.github+json")
            .header("X-GitHub-Api-Version", "2022-11-28");
        match &self.token {
            Some(t) => req.bearer_auth(t),
            None => req,
        }
    }

    /// How long a rate-limited answer asks us to wait, if it is one.
    pub(super) fn rate_limit_wait(resp: &Response) -> Option<Duration> {
        let status = resp.status().as_u16();
        let h = |name: &str| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let retry_after = h("retry-after").and_then(|v| v.trim().parse::<u64>().ok());
        let remaining = h("x-ratelimit-remaining");
        let reset = h("x-ratelimit-reset").and_then(|v| v.trim().parse::<u64>().ok());
        if status != 429
            && !(status == 403 && (retry_after.is_some() || remaining.as_deref() == Some("0")))
        {
            return None;
        }
        if let Some(s) = retry_after {
            return Some(Duration::from_secs(s));
        }
        if remaining.as_deref() == Some("0") {
            if let Some(reset) = reset {
                let now = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs());
                return Some(Duration::from_secs(reset.saturating_sub(now) + 1));
            }
        }
        // A secondary limit without headers: GitHub asks for at least a minute.
        Some(Duration::from_secs(60))
    }

    /// Send, waiting out rate limits. `make` builds the request afresh for
    /// each attempt (a streamed body cannot be sent twice).
    pub(super) fn send(
        &self,
        url: &str,
        mut make: impl FnMut() -> Result<RequestBuilder, BlobError>,
    ) -> Result<Response, BlobError> {
        let mut waited = Duration::ZERO;
        loop {
            let resp = make()?.send_limited().map_err(|e| net_err(url, e))?;
            let Some(wait) = Self::rate_limit_wait(&resp) else {
                return Ok(resp);
            };
            if waited + wait > self.max_rate_wait {
                return Err(BlobError::Http {
                    url: shown(url),
                    status: 429,
                    message: format!(
                        "rate limited by GitHub for {}s more; will retry later",
                        wait.as_secs()
                    ),
                });
            }
            tracing::warn!(url = %shown(url), wait_s = wait.as_secs(), "GitHub rate limit: waiting");
            if let Err(stop) = deadline::sleep(wait) {
                return Err(BlobError::Stopped(stop));
            }
            waited += wait;
        }
    }

    pub(super) fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        url: &str,
    ) -> Result<Option<(T, Option<String>)>, BlobError> {
        let resp = self.send(url, || {
            Ok(self
                .authed(self.client.get(url))
                .timeout(Duration::from_secs(60)))
        })?;
        if resp.status().as_u16() == 404 {
            return Ok(None);
        }
        if !resp.status().is_success() {
            return Err(self.status_err(url, resp));
        }
        let next = resp
            .headers()
            .get("link")
            .and_then(|v| v.to_str().ok())
            .and_then(next_link);
        let v = resp.json().map_err(|e| BlobError::Protocol {
            url: shown(url),
            message: format!("unexpected JSON: {e}"),
        })?;
        Ok(Some((v, next)))
    }

    pub(super) fn status_err(&self, url: &str, resp: Response) -> BlobError {
        let status = resp.status().as_u16();
        let message: String = resp.text().unwrap_or_default().chars().take(300).collect();
        match status {
            401 | 403 => BlobError::Auth {
                url: shown(url),
                status,
            },
            _ => BlobError::Http {
                url: shown(url),
                status,
                message,
            },
        }
    }
}
