//! The tower layer in front of every gRPC service. In one place, in this order:
//! 1. a tracing span per RPC (method, trace id, outcome), so everything below logs inside it;
//! 2. health checks pass straight through, so probes work without a token and before start-up ends;
//! 3. readiness: until migrations are done, other calls get UNAVAILABLE instead of touching a
//!    half-built schema;
//! 4. authentication: a missing or wrong bearer token gets UNAUTHENTICATED before any handler runs;
//! 5. the trace context is made current for the handler, so its downstream calls carry it;
//! 6. metrics record every call, rejected ones included, with its final status code.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Instant;

use tracing::Instrument;

use crate::auth::TokenSet;
use crate::metrics::RpcMetrics;
use crate::trace_context::TraceContext;

/// Whether a service has finished starting (migrations done).
#[derive(Clone, Debug, Default)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    /// Not ready yet.
    pub fn new() -> Self {
        Self::default()
    }
    /// Marks the service ready.
    pub fn set_ready(&self) {
        self.0.store(true, Ordering::Release);
    }
    /// Whether it is ready.
    pub fn is_ready(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

/// Builds [`RpcGuard`]s.
#[derive(Clone, Debug)]
pub struct RpcGuardLayer {
    tokens: Arc<TokenSet>,
    readiness: Readiness,
    metrics: RpcMetrics,
}

impl RpcGuardLayer {
    /// A layer accepting `tokens`, refusing work until `readiness` is set, recording into `metrics`.
    pub fn new(tokens: TokenSet, readiness: Readiness, metrics: RpcMetrics) -> Self {
        Self { tokens: Arc::new(tokens), readiness, metrics }
    }
}

impl<S> tower_layer::Layer<S> for RpcGuardLayer {
    type Service = RpcGuard<S>;
    fn layer(&self, inner: S) -> RpcGuard<S> {
        RpcGuard { inner, layer: self.clone() }
    }
}

/// See the module documentation.
#[derive(Clone, Debug)]
pub struct RpcGuard<S> {
    inner: S,
    layer: RpcGuardLayer,
}

type BoxFuture<T, E> = Pin<Box<dyn std::future::Future<Output = Result<T, E>> + Send>>;

fn code_of<B>(response: &http::Response<B>) -> tonic::Code {
    // Errors are sent trailers-only, so their status is in the headers; a success
    // carries its status in the trailers, which a unary call only sends as OK.
    response
        .headers()
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i32>().ok())
        .map(tonic::Code::from)
        .unwrap_or(tonic::Code::Ok)
}

impl<S, ReqBody> tower_service::Service<http::Request<ReqBody>> for RpcGuard<S>
where
    S: tower_service::Service<http::Request<ReqBody>, Response = http::Response<tonic::body::Body>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    ReqBody: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        // The clone is ready only after poll_ready; keep the polled one for this call.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let layer = self.layer.clone();
        let path = request.uri().path().to_string();
        let ctx = request
            .headers()
            .get("traceparent")
            .and_then(|v| v.to_str().ok())
            .and_then(TraceContext::parse)
            .unwrap_or_else(TraceContext::start);
        let span = tracing::info_span!("rpc", method = %path, trace_id = %ctx.trace_id, code = tracing::field::Empty);
        Box::pin(
            async move {
                let started = Instant::now();
                let trace_id = ctx.trace_id.clone();
                let public = path.starts_with("/grpc.health.v1.Health/");
                let rejection = if public {
                    None
                } else if !layer.readiness.is_ready() {
                    Some(tonic::Status::unavailable("service is starting: database migrations are running"))
                } else {
                    let header = request.headers().get(http::header::AUTHORIZATION).and_then(|v| v.to_str().ok());
                    (!layer.tokens.verify_header(header)).then(|| {
                        tonic::Status::unauthenticated(
                            "missing or invalid bearer token: send `authorization: Bearer <token>`",
                        )
                    })
                };
                let response = match rejection {
                    Some(status) => status.into_http(),
                    None => ctx.scope(inner.call(request)).await?,
                };
                let code = code_of(&response);
                let span = tracing::Span::current();
                span.record("code", tracing::field::debug(code));
                let seconds = started.elapsed().as_secs_f64();
                layer.metrics.record(&path, code, seconds);
                // One access line per call, under its own target so an operator can
                // turn it down (`level = "info,muster_access=warn"`); health probes
                // only at debug, or they would drown everything else.
                let (method, trace_id, status) = (path.as_str(), trace_id.as_str(), format!("{code:?}"));
                match code {
                    // Health probes and other services' credential checks are routine.
                    _ if public || path == crate::upstream_check::PROBE_PATH => {
                        tracing::debug!(target: "muster_access", method, status, seconds, trace_id, "rpc")
                    }
                    tonic::Code::Ok => {
                        tracing::info!(target: "muster_access", method, status, seconds, trace_id, "rpc")
                    }
                    tonic::Code::Internal | tonic::Code::Unknown | tonic::Code::DataLoss => {
                        tracing::error!(target: "muster_access", method, status, seconds, trace_id, "rpc failed")
                    }
                    _ => tracing::info!(target: "muster_access", method, status, seconds, trace_id, "rpc refused"),
                }
                Ok(response)
            }
            .instrument(span),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::{TokenSet, hash_token};
    use tower::ServiceExt;

    /// An inner service that answers with the trace id it runs under.
    fn echo_trace() -> impl tower_service::Service<
        http::Request<()>,
        Response = http::Response<tonic::body::Body>,
        Error = std::convert::Infallible,
        Future = impl Send,
    > + Clone
    + Send
    + 'static {
        tower::service_fn(|_req: http::Request<()>| async {
            let id = TraceContext::current().map(|c| c.trace_id).unwrap_or_default();
            let mut response = http::Response::new(tonic::body::Body::empty());
            response.headers_mut().insert("x-trace", http::HeaderValue::from_str(&id).unwrap());
            Ok(response)
        })
    }

    fn guard(
        ready: bool,
    ) -> RpcGuard<
        impl tower_service::Service<
            http::Request<()>,
            Response = http::Response<tonic::body::Body>,
            Error = std::convert::Infallible,
            Future = impl Send,
        > + Clone
        + Send
        + 'static,
    > {
        let readiness = Readiness::new();
        if ready {
            readiness.set_ready();
        }
        let tokens = TokenSet::from_hex_hashes(&[hash_token("good")]).unwrap();
        tower_layer::Layer::layer(&RpcGuardLayer::new(tokens, readiness, RpcMetrics::new()), echo_trace())
    }

    fn request(path: &str, token: Option<&str>, traceparent: Option<&str>) -> http::Request<()> {
        let mut b = http::Request::builder().uri(path);
        if let Some(t) = token {
            b = b.header("authorization", format!("Bearer {t}"));
        }
        if let Some(t) = traceparent {
            b = b.header("traceparent", t);
        }
        b.body(()).unwrap()
    }

    fn status_of(r: &http::Response<tonic::body::Body>) -> Option<String> {
        r.headers().get("grpc-status").map(|v| v.to_str().unwrap().to_string())
    }

    #[tokio::test]
    async fn handlers_run_inside_the_callers_trace() {
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let r = guard(true)
            .oneshot(request("/muster.policy.v1.PolicyService/GetOrg", Some("good"), Some(tp)))
            .await
            .unwrap();
        assert_eq!(r.headers()["x-trace"], "4bf92f3577b34da6a3ce929d0e0e4736");
        let r =
            guard(true).oneshot(request("/muster.policy.v1.PolicyService/GetOrg", Some("good"), None)).await.unwrap();
        assert_eq!(r.headers()["x-trace"].len(), 32, "a trace is started when none came in");
    }

    #[tokio::test]
    async fn tokens_are_checked_but_health_is_open() {
        let r =
            guard(true).oneshot(request("/muster.policy.v1.PolicyService/GetOrg", Some("bad"), None)).await.unwrap();
        assert_eq!(status_of(&r).as_deref(), Some("16"), "UNAUTHENTICATED");
        let r = guard(true).oneshot(request("/muster.policy.v1.PolicyService/GetOrg", None, None)).await.unwrap();
        assert_eq!(status_of(&r).as_deref(), Some("16"));
        let r = guard(true).oneshot(request("/grpc.health.v1.Health/Check", None, None)).await.unwrap();
        assert_eq!(status_of(&r), None, "health passes without a token");
    }

    #[tokio::test]
    async fn nothing_but_health_runs_before_migrations_finish() {
        let r =
            guard(false).oneshot(request("/muster.policy.v1.PolicyService/GetOrg", Some("good"), None)).await.unwrap();
        assert_eq!(status_of(&r).as_deref(), Some("14"), "UNAVAILABLE");
        let r = guard(false).oneshot(request("/grpc.health.v1.Health/Check", None, None)).await.unwrap();
        assert_eq!(status_of(&r), None);
    }
}
