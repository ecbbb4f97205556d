//! HTTP for connectors: one client with retries (exponential backoff with
//! jitter and a cap), `Retry-After` in seconds or as an HTTP date, vendor
//! rate-limit headers honoured before the limit is hit, timeouts, and the
//! paging helpers (Link `rel="next"`, next-page tokens, `@odata.nextLink`).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use http::header::{HeaderMap, LINK, RETRY_AFTER};
pub use reqwest::{Method, StatusCode, Url};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tracing::{debug, warn};

use crate::clock::Clock;
use crate::error::ConnectorError;
use crate::secret::Secret;

/// The HTTP knobs of a connector's configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpSettings {
    /// Whole-request timeout.
    pub timeout_secs: u64,
    pub connect_timeout_secs: u64,
    /// Attempts per request, the first included.
    pub max_attempts: u32,
    /// First backoff step; doubles per attempt, with jitter.
    pub backoff_base_ms: u64,
    /// Largest backoff step.
    pub backoff_cap_ms: u64,
    /// Longest wait accepted from `Retry-After` or a rate-limit reset; a
    /// longer one fails the pull with [`ConnectorError::RateLimited`].
    pub max_wait_secs: u64,
}

impl Default for HttpSettings {
    fn default() -> Self {
        Self {
            timeout_secs: 30,
            connect_timeout_secs: 10,
            max_attempts: 6,
            backoff_base_ms: 500,
            backoff_cap_ms: 60_000,
            max_wait_secs: 900,
        }
    }
}

/// Exponential backoff with equal jitter and a cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    pub max_attempts: u32,
    pub base: Duration,
    pub cap: Duration,
}

impl RetryPolicy {
    /// The wait before retry number `retry` (1-based): half of
    /// `min(cap, base * 2^(retry-1))` plus a random part of the other half.
    pub fn backoff(&self, retry: u32) -> Duration {
        let factor = 2u32.saturating_pow(retry.saturating_sub(1).min(30));
        let step = self.base.saturating_mul(factor).min(self.cap);
        let half = step / 2;
        let jitter_ms = u64::try_from(half.as_millis()).unwrap_or(u64::MAX);
        let extra = if jitter_ms == 0 { 0 } else { rand::random_range(0..=jitter_ms) };
        half + Duration::from_millis(extra)
    }
}

/// The names of a vendor's rate-limit headers. `reset` is a UTC epoch second.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimitHeaders {
    pub limit: &'static str,
    pub remaining: &'static str,
    pub reset: &'static str,
}

impl RateLimitHeaders {
    /// Okta's: <https://developer.okta.com/docs/reference/rl-best-practices/>.
    pub const OKTA: Self =
        Self { limit: "x-rate-limit-limit", remaining: "x-rate-limit-remaining", reset: "x-rate-limit-reset" };

    fn number(headers: &HeaderMap, name: &str) -> Option<i64> {
        headers.get(name)?.to_str().ok()?.trim().parse().ok()
    }

    /// When the current window resets, if the headers say so.
    pub fn reset_at(&self, headers: &HeaderMap) -> Option<DateTime<Utc>> {
        Utc.timestamp_opt(Self::number(headers, self.reset)?, 0).single()
    }

    /// Requests left in the current window, if the headers say so.
    pub fn remaining(&self, headers: &HeaderMap) -> Option<i64> {
        Self::number(headers, self.remaining)
    }
}

/// `Retry-After`: delay-seconds or an HTTP date (RFC 9110 §10.2.3).
pub fn parse_retry_after(value: &str, now: DateTime<Utc>) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at: DateTime<Utc> = httpdate::parse_http_date(value).ok()?.into();
    Some(at.signed_duration_since(now).to_std().unwrap_or(Duration::ZERO))
}

/// The `rel="next"` target among the `Link` headers (RFC 8288), as written.
pub fn link_next(headers: &HeaderMap) -> Option<String> {
    for value in headers.get_all(LINK) {
        let Ok(text) = value.to_str() else { continue };
        let mut rest = text;
        while let Some(open) = rest.find('<') {
            let after_open = &rest[open + 1..];
            let Some(close) = after_open.find('>') else { break };
            let target = &after_open[..close];
            let params_all = &after_open[close + 1..];
            let params = &params_all[..params_all.find('<').unwrap_or(params_all.len())];
            let is_next = params.split(';').any(|p| {
                let p = p.trim().trim_end_matches(',').trim();
                p.strip_prefix("rel=")
                    .map(|v| v.trim_matches('"').split_whitespace().any(|r| r.eq_ignore_ascii_case("next")))
                    .unwrap_or(false)
            });
            if is_next {
                return Some(target.to_owned());
            }
            rest = params_all;
        }
    }
    None
}

/// `@odata.nextLink` of a Microsoft Graph page.
pub fn odata_next_link(body: &serde_json::Value) -> Option<&str> {
    body.get("@odata.nextLink")?.as_str()
}

/// `@odata.deltaLink` of the last page of a Microsoft Graph delta round.
pub fn odata_delta_link(body: &serde_json::Value) -> Option<&str> {
    body.get("@odata.deltaLink")?.as_str()
}

/// `nextPageToken` of a Google API page (absent or empty on the last page).
pub fn next_page_token(body: &serde_json::Value) -> Option<&str> {
    body.get("nextPageToken")?.as_str().filter(|t| !t.is_empty())
}

/// One request, kept so it can be sent again on retry.
#[derive(Clone)]
pub struct ApiRequest {
    method: Method,
    url: Url,
    headers: Vec<(String, String)>,
    authorization: Option<(String, Secret)>,
    form: Option<Vec<(String, String)>>,
    json: Option<serde_json::Value>,
}

impl std::fmt::Debug for ApiRequest {
    // Only the method and path: queries can carry tokens, bodies secrets.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.method, self.url.path())
    }
}

impl ApiRequest {
    pub fn get(url: Url) -> Self {
        Self { method: Method::GET, url, headers: Vec::new(), authorization: None, form: None, json: None }
    }

    pub fn post_form(url: Url, form: Vec<(String, String)>) -> Self {
        Self { method: Method::POST, url, headers: Vec::new(), authorization: None, form: Some(form), json: None }
    }

    /// A POST with a JSON body (Graph's `$batch`).
    pub fn post_json(url: Url, body: serde_json::Value) -> Self {
        Self { method: Method::POST, url, headers: Vec::new(), authorization: None, form: None, json: Some(body) }
    }

    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    /// `Authorization: <scheme> <secret>` (`Bearer`, Okta's `SSWS`).
    pub fn authorization(mut self, scheme: &str, secret: &Secret) -> Self {
        self.authorization = Some((scheme.to_owned(), secret.clone()));
        self
    }

    pub fn url(&self) -> &Url {
        &self.url
    }
}

/// A whole response: one page of an API is small enough to hold.
#[derive(Debug, Clone)]
pub struct ApiResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
    pub url: Url,
}

impl ApiResponse {
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, ConnectorError> {
        serde_json::from_slice(&self.body)
            .map_err(|e| ConnectorError::Protocol(format!("{} {}: {e}", self.status.as_u16(), self.url.path())))
    }

    /// The body as text, cut to 300 characters, for error messages.
    pub fn detail(&self) -> String {
        let text = String::from_utf8_lossy(&self.body);
        text.chars().take(300).collect()
    }

    /// The `rel="next"` link, resolved against the request URL.
    pub fn next_link(&self) -> Option<Url> {
        let target = link_next(&self.headers)?;
        self.url.join(&target).ok()
    }
}

/// What to do with a response.
#[derive(Debug)]
pub enum Verdict {
    Accept,
    /// Try again: after `Retry-After`, a rate-limit reset, or a backoff.
    Retry,
    Fail(ConnectorError),
}

/// The default classification: 2xx accepted; 429 and 500/502/503/504
/// retried; 401, 403, 404 and 410 mapped to their error; the rest fail.
pub fn default_verdict(response: &ApiResponse) -> Verdict {
    let detail = || format!("{} {}: {}", response.status.as_u16(), response.url.path(), response.detail());
    match response.status.as_u16() {
        200..=299 => Verdict::Accept,
        429 | 500 | 502 | 503 | 504 => Verdict::Retry,
        401 => Verdict::Fail(ConnectorError::Unauthorized(detail())),
        403 => Verdict::Fail(ConnectorError::Forbidden(detail())),
        404 => Verdict::Fail(ConnectorError::NotFound(detail())),
        410 => Verdict::Fail(ConnectorError::ResyncRequired(detail())),
        status => Verdict::Fail(ConnectorError::Http { status, detail: detail() }),
    }
}

/// The HTTP client of a connector.
#[derive(Clone)]
pub struct ApiClient {
    inner: reqwest::Client,
    clock: Arc<dyn Clock>,
    retry: RetryPolicy,
    max_wait: Duration,
    rate_headers: Option<RateLimitHeaders>,
    /// When the vendor said the window is used up: wait until then.
    blocked_until: Arc<Mutex<Option<DateTime<Utc>>>>,
}

impl std::fmt::Debug for ApiClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiClient").field("retry", &self.retry).finish_non_exhaustive()
    }
}

impl ApiClient {
    pub fn new(settings: &HttpSettings, clock: Arc<dyn Clock>) -> Result<Self, ConnectorError> {
        let inner = reqwest::Client::builder()
            .timeout(Duration::from_secs(settings.timeout_secs))
            .connect_timeout(Duration::from_secs(settings.connect_timeout_secs))
            .user_agent(concat!("muster-connector/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ConnectorError::Config(format!("http client: {e}")))?;
        Ok(Self {
            inner,
            clock,
            retry: RetryPolicy {
                max_attempts: settings.max_attempts.max(1),
                base: Duration::from_millis(settings.backoff_base_ms),
                cap: Duration::from_millis(settings.backoff_cap_ms),
            },
            max_wait: Duration::from_secs(settings.max_wait_secs),
            rate_headers: None,
            blocked_until: Arc::new(Mutex::new(None)),
        })
    }

    /// Honour these rate-limit headers: when `remaining` reaches 0, the next
    /// request waits for `reset` instead of running into a 429.
    pub fn with_rate_limit_headers(mut self, headers: RateLimitHeaders) -> Self {
        self.rate_headers = Some(headers);
        self
    }

    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// Sends with [`default_verdict`].
    pub async fn send(&self, request: &ApiRequest) -> Result<ApiResponse, ConnectorError> {
        self.send_with(request, &default_verdict).await
    }

    /// Sends `request`, retrying as `classify` says, waiting through the clock.
    pub async fn send_with(
        &self,
        request: &ApiRequest,
        classify: &(dyn Fn(&ApiResponse) -> Verdict + Sync),
    ) -> Result<ApiResponse, ConnectorError> {
        let mut attempt: u32 = 0;
        loop {
            self.wait_for_window().await?;
            attempt += 1;
            let (asked_wait, failure) = match self.send_once(request).await {
                Ok(response) => {
                    self.observe(&response.headers);
                    match classify(&response) {
                        Verdict::Accept => return Ok(response),
                        Verdict::Fail(e) => return Err(e),
                        Verdict::Retry => {
                            let wait = self.asked_wait(&response.headers);
                            let failure = if response.status == StatusCode::TOO_MANY_REQUESTS {
                                ConnectorError::RateLimited { wait }
                            } else {
                                ConnectorError::Http { status: response.status.as_u16(), detail: response.detail() }
                            };
                            (wait, failure)
                        }
                    }
                }
                Err(e) => (None, e),
            };
            if attempt >= self.retry.max_attempts {
                warn!(request = ?request, attempts = attempt, error = %failure, "giving up");
                return Err(failure);
            }
            let wait = asked_wait.unwrap_or_else(|| self.retry.backoff(attempt));
            if wait > self.max_wait {
                return Err(ConnectorError::RateLimited { wait: Some(wait) });
            }
            warn!(request = ?request, attempt, wait_ms = wait.as_millis() as u64, error = %failure, "retrying");
            self.clock.sleep(wait).await;
        }
    }

    async fn send_once(&self, request: &ApiRequest) -> Result<ApiResponse, ConnectorError> {
        let mut builder = self.inner.request(request.method.clone(), request.url.clone());
        for (name, value) in &request.headers {
            builder = builder.header(name, value);
        }
        if let Some((scheme, secret)) = &request.authorization {
            builder = builder.header(http::header::AUTHORIZATION, format!("{scheme} {}", secret.expose()));
        }
        if let Some(form) = &request.form {
            builder = builder.form(form);
        }
        if let Some(json) = &request.json {
            builder = builder.json(json);
        }
        debug!(request = ?request, "sending");
        let response = builder.send().await.map_err(|e| ConnectorError::Transport(describe(&e)))?;
        let status = response.status();
        let headers = response.headers().clone();
        let url = response.url().clone();
        let body = response.bytes().await.map_err(|e| ConnectorError::Transport(describe(&e)))?.to_vec();
        Ok(ApiResponse { status, headers, body, url })
    }

    /// `Retry-After` first, then the vendor's reset header.
    fn asked_wait(&self, headers: &HeaderMap) -> Option<Duration> {
        let now = self.clock.now();
        if let Some(value) = headers.get(RETRY_AFTER).and_then(|v| v.to_str().ok())
            && let Some(wait) = parse_retry_after(value, now)
        {
            return Some(wait);
        }
        let reset = self.rate_headers?.reset_at(headers)?;
        Some(reset.signed_duration_since(now).to_std().unwrap_or(Duration::ZERO))
    }

    fn observe(&self, headers: &HeaderMap) {
        let Some(names) = self.rate_headers else { return };
        if names.remaining(headers).is_some_and(|left| left <= 0)
            && let Some(reset) = names.reset_at(headers)
        {
            *self.blocked_until.lock().unwrap_or_else(|p| p.into_inner()) = Some(reset);
        }
    }

    async fn wait_for_window(&self) -> Result<(), ConnectorError> {
        let until = self.blocked_until.lock().unwrap_or_else(|p| p.into_inner()).take();
        let Some(until) = until else { return Ok(()) };
        let Ok(wait) = until.signed_duration_since(self.clock.now()).to_std() else { return Ok(()) };
        if wait > self.max_wait {
            return Err(ConnectorError::RateLimited { wait: Some(wait) });
        }
        debug!(wait_ms = wait.as_millis() as u64, "rate-limit window used up; waiting for its reset");
        self.clock.sleep(wait).await;
        Ok(())
    }
}

fn describe(error: &reqwest::Error) -> String {
    // The URL without its query: a query may carry a token.
    let kind = if error.is_timeout() {
        "timeout"
    } else if error.is_connect() {
        "connect"
    } else {
        "request"
    };
    let mut text = format!("{kind}: {}", error.without_url_ref());
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    text
}

trait WithoutUrl {
    fn without_url_ref(&self) -> String;
}

impl WithoutUrl for reqwest::Error {
    /// The URL as scheme, host, port and path: enough to tell which endpoint
    /// (a proxy, a national cloud, a typo in a base URL) could not be
    /// reached, without the query, which may carry a token.
    fn without_url_ref(&self) -> String {
        let mut text = self.to_string();
        if let Some(url) = self.url() {
            let host = url.host_str().unwrap_or("");
            let port = url.port_or_known_default().map(|p| format!(":{p}")).unwrap_or_default();
            text = text.replace(url.as_str(), &format!("{}://{host}{port}{}", url.scheme(), url.path()));
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn link_header_next_is_found_among_several() {
        let mut h = HeaderMap::new();
        h.append(LINK, HeaderValue::from_static("<https://x.okta.com/api/v1/users?limit=2>; rel=\"self\""));
        h.append(LINK, HeaderValue::from_static("<https://x.okta.com/api/v1/users?after=abc&limit=2>; rel=\"next\""));
        assert_eq!(link_next(&h).as_deref(), Some("https://x.okta.com/api/v1/users?after=abc&limit=2"));
        let mut one = HeaderMap::new();
        one.insert(LINK, HeaderValue::from_static("</a?p=1>; rel=\"prev\", </a?p=3>; rel=next"));
        assert_eq!(link_next(&one).as_deref(), Some("/a?p=3"));
        assert_eq!(link_next(&HeaderMap::new()), None);
    }

    #[test]
    fn retry_after_in_seconds_and_as_a_date() {
        let now = Utc.with_ymd_and_hms(2015, 10, 21, 7, 27, 0).unwrap();
        assert_eq!(parse_retry_after("120", now), Some(Duration::from_secs(120)));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now), Some(Duration::from_secs(60)));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:20:00 GMT", now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("soon", now), None);
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let p = RetryPolicy { max_attempts: 5, base: Duration::from_millis(100), cap: Duration::from_millis(1000) };
        for retry in 1..20 {
            let d = p.backoff(retry);
            let step = Duration::from_millis(100 * 2u64.pow((retry - 1).min(10))).min(Duration::from_secs(1));
            assert!(d >= step / 2 && d <= step, "retry {retry}: {d:?}");
        }
    }

    #[test]
    fn paging_tokens() {
        let v = serde_json::json!({"nextPageToken": "t", "@odata.nextLink": "n", "@odata.deltaLink": "d"});
        assert_eq!(next_page_token(&v), Some("t"));
        assert_eq!(odata_next_link(&v), Some("n"));
        assert_eq!(odata_delta_link(&v), Some("d"));
        assert_eq!(next_page_token(&serde_json::json!({"nextPageToken": ""})), None);
    }
}
