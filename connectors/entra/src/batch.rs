//! Microsoft Graph JSON batching ("Combine multiple HTTP requests using JSON
//! batching", learn.microsoft.com/graph/json-batching): up to 20 GET requests
//! in one `POST {graph}/v1.0/$batch`, `{"requests": [{"id", "method", "url"}]}`
//! with `url` relative to the version (`/users?...`), answered by
//! `{"responses": [{"id", "status", "headers", "body"}]}` in any order. A
//! 200 on the batch says nothing of its requests: each has its own status.
//! Requests are throttled one by one ("Requests in a batch are evaluated
//! individually against the applicable throttling limits"): a 429 (or a 5xx)
//! inside the batch is sent again, alone with the others that failed so,
//! after the longest `Retry-After` among them (or a backoff), through the
//! clock. The batch as a whole (malformed: 400; throttled: 429) is retried by
//! the core client like any request.

use std::collections::HashMap;
use std::time::Duration;

use futures::stream::{self, StreamExt, TryStreamExt};
use muster_connector::http::{Url, parse_retry_after, trouble_of};
use muster_connector::{ApiRequest, ConnectorError, RateSignal, RetryDecision, Trouble, WaitCause, WaitNote};
use serde::Deserialize;
use serde_json::{Value, json};
use tracing::warn;

use crate::{EntraConnector, graph_error};

/// Graph takes at most 20 requests in one batch ("Batch size limitations").
pub const MAX_BATCH: usize = 20;

/// Requests (batches or plain GETs) in flight at once, the default and the
/// most `http.concurrency` may ask. Graph's identity limits are a token
/// bucket per app and tenant ("Identity and access service limits": 3,500
/// resource units per 10 s for the smallest tenants, 8,000 above 500
/// users), each GET costing 1 with `$select`. Four batches of 20 in flight
/// at ~300 ms each stay near 2,700 units per 10 s, under the smallest
/// tenant's limit, and leave room for other apps of the tenant.
pub const BATCH_CONCURRENCY: usize = 4;

/// One GET of a batch: `url` is relative to the version (`/users?...`).
#[derive(Debug, Clone)]
pub(crate) struct BatchGet {
    pub url: String,
}

impl BatchGet {
    /// The part of `url` after `{graph}/v1.0`, when `url` is under it (a
    /// paging link Graph returned); None when it is not.
    pub fn relative_to(version_root: &str, url: &str) -> Option<Self> {
        let rest = url.strip_prefix(version_root)?;
        rest.starts_with('/').then(|| Self { url: rest.to_owned() })
    }

    /// `path` with `query` form-encoded, relative to the version.
    pub fn new(path: &str, query: &[(&str, &str)]) -> Result<Self, ConnectorError> {
        // Encoded through a throwaway URL, exactly as a top-level GET would be.
        let mut url = Url::parse("https://batch.invalid/")
            .and_then(|u| u.join(path.trim_start_matches('/')))
            .map_err(|e| ConnectorError::Config(format!("batch url {path}: {e}")))?;
        if !query.is_empty() {
            let mut pairs = url.query_pairs_mut();
            for (k, v) in query {
                pairs.append_pair(k, v);
            }
        }
        Ok(Self {
            url: match url.query() {
                Some(q) => format!("{}?{q}", url.path()),
                None => url.path().to_owned(),
            },
        })
    }
}

#[derive(Deserialize)]
struct BatchBody {
    #[serde(default)]
    responses: Vec<BatchAnswer>,
}

#[derive(Deserialize)]
struct BatchAnswer {
    id: String,
    status: u16,
    #[serde(default)]
    headers: HashMap<String, Value>,
    #[serde(default)]
    body: Value,
}

impl BatchAnswer {
    fn retry_after(&self, now: chrono::DateTime<chrono::Utc>) -> Option<Duration> {
        let value = self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case("retry-after"))?.1;
        let text = match value {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            _ => return None,
        };
        parse_retry_after(&text, now)
    }
}

impl EntraConnector {
    /// Sends `gets` (at most [`MAX_BATCH`]) as one batch and answers each, in
    /// the order given: the body of a 2xx, or the error its status means
    /// (a 404 is [`ConnectorError::NotFound`], for the caller to weigh).
    /// Throttled (429) and failing (5xx) requests are sent again as said above.
    pub(crate) async fn batch(&self, gets: &[BatchGet]) -> Result<Vec<Result<Value, ConnectorError>>, ConnectorError> {
        if gets.len() > MAX_BATCH {
            return Err(ConnectorError::Config(format!("{} requests do not fit one $batch", gets.len())));
        }
        let url = self.url("/v1.0/$batch");
        let mut answers: Vec<Option<Result<Value, ConnectorError>>> = (0..gets.len()).map(|_| None).collect();
        let mut pending: Vec<usize> = (0..gets.len()).collect();
        let mut attempt: u32 = 0;
        while !pending.is_empty() {
            attempt += 1;
            // The id is the request's index: unique in the batch, and says where the answer goes.
            let requests: Vec<Value> =
                pending.iter().map(|&i| json!({"id": i.to_string(), "method": "GET", "url": gets[i].url})).collect();
            let body: BatchBody = self.post(url.clone(), json!({ "requests": requests })).await?.json()?;
            let now = self.api.clock().now();
            let mut again = Vec::new();
            let mut asked: Option<Duration> = None;
            let mut last_status = 0;
            let mut throttled_status = None;
            let mut unauthorized = false;
            for answer in body.responses {
                let Some(i) = answer.id.parse::<usize>().ok().filter(|i| pending.contains(i)) else {
                    return Err(ConnectorError::Protocol(format!(
                        "$batch answered an unknown request id {:?}",
                        answer.id
                    )));
                };
                match answer.status {
                    200..=299 => answers[i] = Some(Ok(answer.body)),
                    429 | 500 | 502 | 503 | 504 => {
                        let after = answer.retry_after(now);
                        let signal = RateSignal { retry_after: after, ..RateSignal::default() };
                        // Classified as a whole request is: a 429, or a 503 with Retry-After, is throttling.
                        if trouble_of(answer.status, &signal).is_throttled() {
                            asked = asked.max(after);
                            throttled_status = throttled_status.or(Some(answer.status));
                        }
                        last_status = answer.status;
                        again.push(i);
                    }
                    status => {
                        unauthorized |= status == 401;
                        answers[i] = Some(Err(graph_error(status, &gets[i].url, &answer.body)));
                    }
                }
            }
            if unauthorized {
                // The token may have been revoked early: the next request fetches a fresh one.
                self.tokens.invalidate().await;
            }
            if let Some(&i) = pending.iter().find(|&&i| answers[i].is_none() && !again.contains(&i)) {
                return Err(ConnectorError::Protocol(format!("$batch left request {} unanswered", gets[i].url)));
            }
            if again.is_empty() {
                break;
            }
            // One decision for the requests to send again, by the policy every request follows:
            // the longest Retry-After among the throttled ones, else a backoff.
            let trouble = match throttled_status {
                Some(status) => Trouble::Throttled { status },
                None => Trouble::ServerError { status: last_status },
            };
            let signal = RateSignal { retry_after: asked, ..RateSignal::default() };
            match self.api.decide(trouble, &signal, attempt) {
                RetryDecision::GiveUp => {
                    warn!(requests = again.len(), attempts = attempt, "giving up on throttled batch requests");
                    return Err(if trouble.is_throttled() {
                        ConnectorError::RateLimited { wait: asked }
                    } else {
                        ConnectorError::Http { status: last_status, detail: "batch requests kept failing".into() }
                    });
                }
                RetryDecision::TooLong { wait } => return Err(ConnectorError::RateLimited { wait: Some(wait) }),
                RetryDecision::Retry { wait, reason } => {
                    warn!(
                        requests = again.len(),
                        attempt,
                        wait_ms = wait.as_millis() as u64,
                        "batch requests throttled or failing; retrying them"
                    );
                    let cause = WaitCause::after(trouble, reason);
                    self.api.pause(WaitNote { vendor: self.api.vendor(), wait, cause, attempt }).await;
                }
            }
            pending = again;
        }
        Ok(answers
            .into_iter()
            .map(|a| a.unwrap_or_else(|| Err(ConnectorError::Protocol("unanswered".into()))))
            .collect())
    }

    /// Sends `gets` in batches of [`MAX_BATCH`], `http.concurrency` (at most
    /// [`BATCH_CONCURRENCY`]) at a time, answering each in the order given.
    pub(crate) async fn batch_all(
        &self,
        gets: Vec<BatchGet>,
    ) -> Result<Vec<Result<Value, ConnectorError>>, ConnectorError> {
        // The futures are made first: a stream mapping by a closure trips the
        // compiler's Send analysis inside async_trait.
        let batches: Vec<_> = gets.chunks(MAX_BATCH).map(|chunk| self.batch(chunk)).collect();
        let answers: Vec<Vec<Result<Value, ConnectorError>>> =
            stream::iter(batches).buffered(self.concurrency).try_collect().await?;
        Ok(answers.into_iter().flatten().collect())
    }

    /// POSTs a JSON body to Graph with the access token.
    async fn post(&self, url: Url, body: Value) -> Result<muster_connector::ApiResponse, ConnectorError> {
        let token = self.access_token().await?;
        let request =
            ApiRequest::post_json(url, body).header("accept", "application/json").authorization("Bearer", &token);
        let response = self.api.send_with(&request, &crate::graph_verdict).await;
        if let Err(ConnectorError::Unauthorized(_)) = response {
            self.tokens.invalidate().await;
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_urls_are_encoded_like_top_level_ones() {
        let get = BatchGet::new("/users", &[("$filter", "id in ('a','b')"), ("$select", "id,mail")]).unwrap();
        assert_eq!(get.url, "/users?%24filter=id+in+%28%27a%27%2C%27b%27%29&%24select=id%2Cmail");
        let link = "https://proxy.example/graph/v1.0/groups/g/members?$skiptoken=x";
        let next = BatchGet::relative_to("https://proxy.example/graph/v1.0", link).unwrap();
        assert_eq!(next.url, "/groups/g/members?$skiptoken=x");
        assert!(BatchGet::relative_to("https://proxy.example/graph/v1.0", "https://elsewhere/v1.0/x").is_none());
        assert!(
            BatchGet::relative_to("https://proxy.example/graph/v1.0", "https://proxy.example/graph/v1.0x/y").is_none()
        );
    }
}
