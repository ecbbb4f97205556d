//! HTTP for connectors: one client that retries by the one policy of
//! [`crate::retry`] (`Retry-After` in seconds or as an HTTP date, vendor
//! rate-limit headers honoured per endpoint family before the limit is hit,
//! exponential backoff with jitter and a cap, timeouts), records its waits,
//! bounds the requests in flight, and the paging helpers (Link `rel="next"`,
//! next-page tokens, `@odata.nextLink`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use http::header::{HeaderMap, LINK, RETRY_AFTER};
pub use reqwest::{Method, StatusCode, Url};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;
use tracing::{debug, warn};

use crate::clock::Clock;
use crate::error::ConnectorError;
use crate::retry::WaitLog;
pub use crate::retry::{RateSignal, RetryDecision, RetryPolicy, Trouble, WaitCause, WaitNote, WaitReason};
use crate::secret::Secret;

/// The HTTP knobs of a connector's configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpSettings {
    /// Whole-request timeout.
    pub timeout_secs: u64,
    /// Whole-request timeout in milliseconds; when set it replaces
    /// `timeout_secs` (for a timeout under a second).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
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
    /// Requests in flight at once. Absent: the connector's default (4); never
    /// more than the vendor's documented limit (see `docs/connectors.md`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<usize>,
}

impl Default for HttpSettings {
    fn default() -> Self {
        Self {
            timeout_secs: 30,
            timeout_ms: None,
            connect_timeout_secs: 10,
            max_attempts: 6,
            backoff_base_ms: 500,
            backoff_cap_ms: 60_000,
            max_wait_secs: 900,
            concurrency: None,
        }
    }
}

impl HttpSettings {
    /// The whole-request timeout.
    pub fn timeout(&self) -> Duration {
        self.timeout_ms.map(Duration::from_millis).unwrap_or(Duration::from_secs(self.timeout_secs))
    }

    /// The requests `vendor`'s connector may have in flight: `concurrency`,
    /// else `default`. Zero, or more than `limit` (the vendor's documented
    /// limit), is a configuration error: the operator asked for something
    /// the vendor would answer with 429s.
    pub fn concurrency_for(&self, vendor: &str, default: usize, limit: usize) -> Result<usize, ConnectorError> {
        match self.concurrency {
            None => Ok(default.clamp(1, limit.max(1))),
            Some(0) => Err(ConnectorError::Config("http.concurrency must be at least 1".into())),
            Some(n) if n > limit => Err(ConnectorError::Config(format!(
                "http.concurrency {n} is more than {vendor} allows: at most {limit} requests in flight"
            ))),
            Some(n) => Ok(n),
        }
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
    /// Try again, as the retry policy says for this status (429 and a 503
    /// with `Retry-After` are throttling, other 5xx are errors).
    Retry,
    /// The vendor's own "slow down" whatever the status (Google's 403
    /// `rateLimitExceeded`): retried as a throttling answer.
    Throttled,
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

/// The HTTP client of a connector: retries as [`RetryPolicy::decide`] says,
/// waits through the clock, records every wait in its [`WaitLog`], keeps
/// per-endpoint-family rate-limit windows, and bounds the requests in flight.
#[derive(Clone)]
pub struct ApiClient {
    inner: reqwest::Client,
    clock: Arc<dyn Clock>,
    policy: RetryPolicy,
    rate_headers: Option<RateLimitHeaders>,
    /// Per endpoint family (see [`endpoint_family`]): until when the vendor
    /// said its window is spent. Okta's limits are per family, so a spent
    /// `/api/v1/logs` window does not hold up `/api/v1/users`.
    windows: Arc<Mutex<HashMap<String, DateTime<Utc>>>>,
    /// Requests in flight at once, when bounded.
    slots: Option<Arc<Semaphore>>,
    vendor: &'static str,
    log: Arc<WaitLog>,
}

impl std::fmt::Debug for ApiClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiClient").field("vendor", &self.vendor).field("policy", &self.policy).finish_non_exhaustive()
    }
}

/// Why one attempt got no answer to classify.
enum AttemptError {
    /// Worth another attempt (a timeout, a refused or reset connection).
    Transport { trouble: Trouble, error: ConnectorError },
    /// Not worth one (a request that cannot be built, a redirect loop).
    Fatal(ConnectorError),
}

/// The endpoint family of a path, for rate-limit windows: the path up to
/// the segment after the API version (`/api/v1/groups/00g1/users` ->
/// `/api/v1/groups`, `/v1.0/users/delta` -> `/v1.0/users`), the whole path
/// when it has no version segment. Coarser than the vendor's own families
/// at worst, which waits more, never less.
pub fn endpoint_family(path: &str) -> String {
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let is_version = |s: &str| {
        s.strip_prefix('v').is_some_and(|rest| {
            !rest.is_empty()
                && rest.chars().all(|c| c.is_ascii_digit() || c == '.')
                && rest.starts_with(|c: char| c.is_ascii_digit())
        })
    };
    match segments.iter().position(|s| is_version(s)) {
        Some(i) => format!("/{}", segments[..(i + 2).min(segments.len())].join("/")),
        None => format!("/{}", segments.join("/")),
    }
}

/// A 429, or a 503 with `Retry-After`, is the vendor throttling; other
/// retried statuses are errors.
pub fn trouble_of(status: u16, signal: &RateSignal) -> Trouble {
    match status {
        429 => Trouble::Throttled { status },
        503 if signal.retry_after.is_some() => Trouble::Throttled { status },
        _ => Trouble::ServerError { status },
    }
}

impl ApiClient {
    pub fn new(settings: &HttpSettings, clock: Arc<dyn Clock>) -> Result<Self, ConnectorError> {
        let inner = reqwest::Client::builder()
            .timeout(settings.timeout())
            .connect_timeout(Duration::from_secs(settings.connect_timeout_secs))
            .user_agent(concat!("muster-connector/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ConnectorError::Config(format!("http client: {e}")))?;
        Ok(Self {
            inner,
            clock,
            policy: RetryPolicy::from_settings(settings),
            rate_headers: None,
            windows: Arc::new(Mutex::new(HashMap::new())),
            slots: None,
            vendor: "the api",
            log: Arc::new(WaitLog::new("the api")),
        })
    }

    /// Names the vendor in wait notes and tallies ("waited 3 s for Okta's rate limit").
    pub fn named(mut self, vendor: &'static str) -> Self {
        self.vendor = vendor;
        self.log = Arc::new(WaitLog::new(vendor));
        self
    }

    /// Honour these rate-limit headers: when `remaining` reaches 0, the next
    /// request of that endpoint family waits for `reset` instead of running
    /// into a 429; a 429 without `Retry-After` waits for `reset`.
    pub fn with_rate_limit_headers(mut self, headers: RateLimitHeaders) -> Self {
        self.rate_headers = Some(headers);
        self
    }

    /// At most `limit` requests in flight at once, whatever the callers do. A
    /// request holds its slot while it is sent, not while it waits to retry.
    pub fn with_concurrency(mut self, limit: usize) -> Self {
        self.slots = Some(Arc::new(Semaphore::new(limit.max(1))));
        self
    }

    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    pub fn policy(&self) -> &RetryPolicy {
        &self.policy
    }

    pub fn vendor(&self) -> &'static str {
        self.vendor
    }

    /// Where this client (and its clones) record their waits.
    pub fn wait_log(&self) -> Arc<WaitLog> {
        self.log.clone()
    }

    /// The retry policy's answer for `attempt`, with a random jitter.
    pub fn decide(&self, trouble: Trouble, signal: &RateSignal, attempt: u32) -> RetryDecision {
        self.policy.decide(trouble, signal, attempt, rand::random::<f64>())
    }

    /// Waits as `note` says, through the clock, recorded in the wait log.
    pub async fn pause(&self, note: WaitNote) {
        let _wait = self.log.begin(note, &self.clock);
        self.clock.sleep(note.wait).await;
    }

    /// What `headers` say about the rate limit, now.
    pub fn rate_signal(&self, headers: &HeaderMap) -> RateSignal {
        let now = self.clock.now();
        let retry_after =
            headers.get(RETRY_AFTER).and_then(|v| v.to_str().ok()).and_then(|v| parse_retry_after(v, now));
        let (remaining, reset_in) = match self.rate_headers {
            Some(names) => (
                names.remaining(headers),
                names.reset_at(headers).map(|at| at.signed_duration_since(now).to_std().unwrap_or(Duration::ZERO)),
            ),
            None => (None, None),
        };
        RateSignal { retry_after, remaining, reset_in }
    }

    /// Sends with [`default_verdict`].
    pub async fn send(&self, request: &ApiRequest) -> Result<ApiResponse, ConnectorError> {
        self.send_with(request, &default_verdict).await
    }

    /// Sends `request`, retrying as `classify` and the retry policy say,
    /// waiting through the clock.
    pub async fn send_with(
        &self,
        request: &ApiRequest,
        classify: &(dyn Fn(&ApiResponse) -> Verdict + Sync),
    ) -> Result<ApiResponse, ConnectorError> {
        let family = endpoint_family(request.url.path());
        let mut attempt: u32 = 0;
        loop {
            self.wait_for_window(&family).await?;
            attempt += 1;
            let sent = {
                // A slot per attempt: a request backing off holds none, so the others go on.
                let _slot = match &self.slots {
                    Some(slots) => slots.acquire().await.ok(),
                    None => None,
                };
                self.send_once(request).await
            };
            let (trouble, signal, failure) = match sent {
                Ok(response) => {
                    let signal = self.rate_signal(&response.headers);
                    let status = response.status.as_u16();
                    let trouble = match classify(&response) {
                        Verdict::Accept => {
                            self.observe(&family, &signal, None);
                            return Ok(response);
                        }
                        Verdict::Fail(e) => {
                            self.observe(&family, &signal, None);
                            return Err(e);
                        }
                        Verdict::Retry => trouble_of(status, &signal),
                        Verdict::Throttled => Trouble::Throttled { status },
                    };
                    self.observe(&family, &signal, Some(trouble));
                    let failure = if trouble.is_throttled() {
                        ConnectorError::RateLimited { wait: signal.retry_after.or(signal.reset_in) }
                    } else {
                        ConnectorError::Http { status, detail: response.detail() }
                    };
                    (trouble, signal, failure)
                }
                Err(AttemptError::Transport { trouble, error }) => (trouble, RateSignal::default(), error),
                Err(AttemptError::Fatal(error)) => return Err(error),
            };
            match self.decide(trouble, &signal, attempt) {
                RetryDecision::GiveUp => {
                    warn!(request = ?request, attempts = attempt, error = %failure, "giving up");
                    return Err(failure);
                }
                RetryDecision::TooLong { wait } => {
                    warn!(request = ?request, wait_ms = wait.as_millis() as u64, error = %failure, "asked to wait too long; giving up");
                    return Err(ConnectorError::RateLimited { wait: Some(wait) });
                }
                RetryDecision::Retry { wait, reason } => {
                    warn!(request = ?request, attempt, wait_ms = wait.as_millis() as u64, why = ?reason, error = %failure, "retrying");
                    let cause = WaitCause::after(trouble, reason);
                    self.pause(WaitNote { vendor: self.vendor, wait, cause, attempt }).await;
                }
            }
        }
    }

    async fn send_once(&self, request: &ApiRequest) -> Result<ApiResponse, AttemptError> {
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
        let response = builder.send().await.map_err(attempt_error)?;
        let status = response.status();
        let headers = response.headers().clone();
        let url = response.url().clone();
        let body = response.bytes().await.map_err(attempt_error)?.to_vec();
        Ok(ApiResponse { status, headers, body, url })
    }

    /// Notes a spent window of `family`: after a throttling answer with
    /// `Retry-After`, until then (the vendor's word for this family beats its
    /// reset header); else when `Remaining` is 0, until the reset.
    fn observe(&self, family: &str, signal: &RateSignal, trouble: Option<Trouble>) {
        let now = self.clock.now();
        let blocked = match (trouble, signal.retry_after) {
            (Some(t), Some(after)) if t.is_throttled() => Some(after),
            _ if signal.window_spent() => signal.reset_in,
            _ => None,
        };
        let Some(blocked) = blocked.filter(|b| !b.is_zero()) else { return };
        // A wait too long for the calendar is refused by the policy anyway; it blocks nothing here.
        let Some(until) = chrono::Duration::from_std(blocked).ok().and_then(|d| now.checked_add_signed(d)) else {
            return;
        };
        let mut windows = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        let entry = windows.entry(family.to_owned()).or_insert(until);
        *entry = (*entry).max(until);
    }

    /// Waits until `family`'s window is no longer spent (each concurrent
    /// request of the family waits; none runs into the 429).
    async fn wait_for_window(&self, family: &str) -> Result<(), ConnectorError> {
        loop {
            let now = self.clock.now();
            let until = {
                let mut windows = self.windows.lock().unwrap_or_else(|p| p.into_inner());
                match windows.get(family) {
                    Some(until) if *until > now => *until,
                    Some(_) => {
                        windows.remove(family);
                        return Ok(());
                    }
                    None => return Ok(()),
                }
            };
            let wait = until.signed_duration_since(now).to_std().unwrap_or(Duration::ZERO);
            if wait > self.policy.max_wait {
                return Err(ConnectorError::RateLimited { wait: Some(wait) });
            }
            debug!(family, wait_ms = wait.as_millis() as u64, "rate-limit window used up; waiting for its reset");
            self.pause(WaitNote { vendor: self.vendor, wait, cause: WaitCause::WindowSpent, attempt: 0 }).await;
        }
    }
}

fn attempt_error(error: reqwest::Error) -> AttemptError {
    let connector_error = ConnectorError::Transport(describe(&error));
    if error.is_builder() || error.is_redirect() {
        return AttemptError::Fatal(connector_error);
    }
    let trouble = if error.is_timeout() { Trouble::Timeout } else { Trouble::Connection };
    AttemptError::Transport { trouble, error: connector_error }
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
    fn endpoint_families() {
        assert_eq!(endpoint_family("/api/v1/groups/00g1/users"), "/api/v1/groups");
        assert_eq!(endpoint_family("/okta/api/v1/groups"), "/okta/api/v1/groups");
        assert_eq!(endpoint_family("/graph/v1.0/users/delta"), "/graph/v1.0/users");
        assert_eq!(endpoint_family("/v1.0/$batch"), "/v1.0/$batch");
        assert_eq!(endpoint_family("/admin/directory/v1/groups/g/members"), "/admin/directory/v1/groups");
        assert_eq!(endpoint_family("/oauth2/v1/token"), "/oauth2/v1/token");
        assert_eq!(endpoint_family("/x"), "/x");
        assert_eq!(endpoint_family("/"), "/");
        assert_eq!(endpoint_family("/very/important"), "/very/important");
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
