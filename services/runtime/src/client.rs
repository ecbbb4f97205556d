//! Typed gRPC clients for calls between services: a deadline on every call, the
//! caller's bearer token and trace context in the metadata, and retries on
//! UNAVAILABLE only (any other code is an answer, not a failure to answer).

use std::future::Future;
use std::time::Duration;

use tonic::metadata::{AsciiMetadataValue, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

use crate::config::UpstreamConfig;
use crate::trace_context::TraceContext;

/// Why a client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The URL is not a valid endpoint.
    #[error("invalid upstream url {url}: {message}")]
    BadUrl {
        /// The URL.
        url: String,
        /// Why.
        message: String,
    },
    /// The token cannot be sent as a header.
    #[error("upstream token contains characters not allowed in a header")]
    BadToken,
}

/// Adds the bearer token and the current trace context to every outgoing call.
#[derive(Clone)]
pub struct CallCredentials {
    authorization: Option<AsciiMetadataValue>,
}

impl std::fmt::Debug for CallCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CallCredentials([redacted])")
    }
}

impl CallCredentials {
    /// Credentials presenting `token` (none when empty).
    pub fn bearer(token: &str) -> Result<Self, ClientError> {
        if token.is_empty() {
            return Ok(Self { authorization: None });
        }
        let mut value: AsciiMetadataValue =
            MetadataValue::try_from(format!("Bearer {token}")).map_err(|_| ClientError::BadToken)?;
        value.set_sensitive(true);
        Ok(Self { authorization: Some(value) })
    }
}

impl tonic::service::Interceptor for CallCredentials {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.authorization {
            request.metadata_mut().insert("authorization", value.clone());
        }
        if let Some(ctx) = TraceContext::current()
            && let Ok(value) = MetadataValue::try_from(ctx.child_header())
        {
            request.metadata_mut().insert("traceparent", value);
        }
        Ok(request)
    }
}

/// A channel that authenticates and propagates traces.
pub type AuthedChannel = InterceptedService<Channel, CallCredentials>;

/// A lazily connecting channel to `url` with a per-call deadline.
pub fn channel(url: &str, token: &str, timeout: Duration) -> Result<AuthedChannel, ClientError> {
    let endpoint = Endpoint::from_shared(url.to_string())
        .map_err(|e| ClientError::BadUrl { url: url.to_string(), message: e.to_string() })?
        .timeout(timeout)
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true);
    Ok(InterceptedService::new(endpoint.connect_lazy(), CallCredentials::bearer(token)?))
}

/// A channel for an upstream named in config (deadline defaults to 10 s).
pub fn upstream_channel(cfg: &UpstreamConfig) -> Result<AuthedChannel, ClientError> {
    let timeout = if cfg.timeout_ms == 0 { 10_000 } else { cfg.timeout_ms };
    channel(&cfg.url, cfg.token.expose(), Duration::from_millis(timeout))
}

/// A policy service client.
pub type PolicyClient = muster_proto::policy::v1::policy_service_client::PolicyServiceClient<AuthedChannel>;

/// A policy client for `cfg`.
pub fn policy_client(cfg: &UpstreamConfig) -> Result<PolicyClient, ClientError> {
    Ok(PolicyClient::new(upstream_channel(cfg)?))
}

/// A membership service client.
pub type MembershipClient =
    muster_proto::membership::v1::membership_service_client::MembershipServiceClient<AuthedChannel>;

/// A membership client for `cfg`.
pub fn membership_client(cfg: &UpstreamConfig) -> Result<MembershipClient, ClientError> {
    Ok(MembershipClient::new(upstream_channel(cfg)?))
}

/// How often to retry an UNAVAILABLE call.
#[derive(Clone, Copy, Debug)]
pub struct RetryPolicy {
    /// Attempts in all, the first included.
    pub attempts: u32,
    /// Wait before the first retry; doubles each time.
    pub first_backoff: Duration,
    /// Longest wait between attempts.
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self { attempts: 4, first_backoff: Duration::from_millis(100), max_backoff: Duration::from_secs(2) }
    }
}

/// Runs `call`, retrying only while it answers UNAVAILABLE. Every other status, and
/// the last UNAVAILABLE, goes back to the caller unchanged.
pub async fn retry_unavailable<T, F, Fut>(policy: RetryPolicy, mut call: F) -> Result<T, tonic::Status>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, tonic::Status>>,
{
    let mut backoff = policy.first_backoff;
    let mut attempt = 1;
    loop {
        match call().await {
            Err(status) if status.code() == tonic::Code::Unavailable && attempt < policy.attempts => {
                tracing::debug!(attempt, error = %status.message(), "upstream unavailable; retrying");
                // Jitter spreads the retries of many callers that failed together.
                let jitter = backoff.mul_f64(rand::random::<f64>() * 0.5);
                tokio::time::sleep(backoff + jitter).await;
                backoff = (backoff * 2).min(policy.max_backoff);
                attempt += 1;
            }
            other => return other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn fast() -> RetryPolicy {
        RetryPolicy { attempts: 3, first_backoff: Duration::from_millis(1), max_backoff: Duration::from_millis(2) }
    }

    #[tokio::test]
    async fn retries_unavailable_then_gives_up() {
        let calls = AtomicU32::new(0);
        let result: Result<(), _> = retry_unavailable(fast(), || {
            calls.fetch_add(1, Ordering::SeqCst);
            async { Err(tonic::Status::unavailable("down")) }
        })
        .await;
        assert_eq!(result.unwrap_err().code(), tonic::Code::Unavailable);
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn other_codes_are_not_retried() {
        let calls = AtomicU32::new(0);
        let result: Result<(), _> = retry_unavailable(fast(), || {
            calls.fetch_add(1, Ordering::SeqCst);
            async { Err(tonic::Status::not_found("x")) }
        })
        .await;
        assert_eq!(result.unwrap_err().code(), tonic::Code::NotFound);
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn succeeds_after_a_retry() {
        let calls = AtomicU32::new(0);
        let result = retry_unavailable(fast(), || {
            let n = calls.fetch_add(1, Ordering::SeqCst);
            async move { if n == 0 { Err(tonic::Status::unavailable("down")) } else { Ok(7) } }
        })
        .await;
        assert_eq!(result.unwrap(), 7);
    }
}

#[cfg(test)]
mod propagation_tests {
    use super::*;
    use tonic::service::Interceptor;

    #[tokio::test]
    async fn outgoing_calls_carry_the_token_and_the_current_trace() {
        let mut creds = CallCredentials::bearer("t0k").unwrap();
        let ctx = TraceContext::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
        let request = ctx.scope(async { creds.call(tonic::Request::new(())).unwrap() }).await;
        let md = request.metadata();
        assert_eq!(md.get("authorization").unwrap().to_str().unwrap(), "Bearer t0k");
        let sent = TraceContext::parse(md.get("traceparent").unwrap().to_str().unwrap()).unwrap();
        assert_eq!(sent.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736", "same trace, new span");
        assert_ne!(sent.parent_span_id, "00f067aa0ba902b7");

        let outside = creds.call(tonic::Request::new(())).unwrap();
        assert!(outside.metadata().get("traceparent").is_none(), "no trace, no header");
    }
}
