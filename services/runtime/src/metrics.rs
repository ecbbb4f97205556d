//! Prometheus metrics: request counts by method and status code, latency histograms,
//! and errors by code, served as text on `/metrics` of a separate HTTP port so that
//! scraping never competes with gRPC traffic for auth or timeouts.

use std::sync::{Arc, Mutex};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    service: String,
    method: String,
    code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MethodLabels {
    service: String,
    method: String,
}

/// The RPC metrics of one process (shared by every service it runs).
#[derive(Clone)]
pub struct RpcMetrics {
    registry: Arc<Mutex<Registry>>,
    requests: Family<CallLabels, Counter>,
    errors: Family<CallLabels, Counter>,
    latency: Family<MethodLabels, Histogram>,
}

impl std::fmt::Debug for RpcMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RpcMetrics")
    }
}

impl Default for RpcMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl RpcMetrics {
    /// A fresh registry with the gRPC server metrics registered.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("muster");
        let requests = Family::<CallLabels, Counter>::default();
        let errors = Family::<CallLabels, Counter>::default();
        let latency = Family::<MethodLabels, Histogram>::new_with_constructor(|| {
            // 0.5 ms to ~16 s: covers a cache hit and a 10,000-subject batch.
            Histogram::new(exponential_buckets(0.0005, 2.0, 16))
        });
        registry.register("grpc_server_requests", "gRPC requests handled, by method and status code", requests.clone());
        registry.register(
            "grpc_server_errors",
            "gRPC requests that ended in an error, by method and code",
            errors.clone(),
        );
        registry.register("grpc_server_latency_seconds", "gRPC handling time in seconds", latency.clone());
        Self { registry: Arc::new(Mutex::new(registry)), requests, errors, latency }
    }

    /// Records one finished call. `path` is `/package.Service/Method`.
    pub fn record(&self, path: &str, code: tonic::Code, seconds: f64) {
        let (service, method) = split_path(path);
        let code_name = format!("{code:?}");
        let labels = CallLabels { service: service.to_string(), method: method.to_string(), code: code_name };
        self.requests.get_or_create(&labels).inc();
        if code != tonic::Code::Ok {
            self.errors.get_or_create(&labels).inc();
        }
        self.latency
            .get_or_create(&MethodLabels { service: service.to_string(), method: method.to_string() })
            .observe(seconds);
    }

    /// Lets a service add its own metrics.
    pub fn with_registry<R>(&self, f: impl FnOnce(&mut Registry) -> R) -> R {
        let mut guard = self.registry.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut guard)
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let guard = self.registry.lock().unwrap_or_else(|p| p.into_inner());
        if prometheus_client::encoding::text::encode(&mut out, &guard).is_err() {
            out.clear();
        }
        out
    }

    /// Serves `/metrics` on `listener` until `shutdown` completes.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let app = axum::Router::new().route(
            "/metrics",
            axum::routing::get(move || {
                let metrics = self.clone();
                async move {
                    (
                        [(http::header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")],
                        metrics.encode(),
                    )
                }
            }),
        );
        axum::serve(listener, app).with_graceful_shutdown(shutdown).await
    }
}

/// `(service, method)` of a call, for labels: only methods some Muster service, health
/// or reflection has. Any other path (a caller may send any) is `unknown`, so labels
/// cannot grow with what callers invent.
fn split_path(path: &str) -> (&str, &str) {
    if !known_methods().contains(path) {
        return ("unknown", "unknown");
    }
    let trimmed = path.trim_start_matches('/');
    trimmed.split_once('/').unwrap_or((trimmed, ""))
}

fn known_methods() -> &'static std::collections::HashSet<String> {
    static KNOWN: std::sync::OnceLock<std::collections::HashSet<String>> = std::sync::OnceLock::new();
    KNOWN.get_or_init(|| {
        use prost::Message;
        let mut known: std::collections::HashSet<String> = [
            "/grpc.health.v1.Health/Check",
            "/grpc.health.v1.Health/Watch",
            "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
            "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
        ]
        .into_iter()
        .map(String::from)
        .collect();
        if let Ok(set) = prost_types::FileDescriptorSet::decode(muster_proto::FILE_DESCRIPTOR_SET) {
            for file in set.file {
                let package = file.package.unwrap_or_default();
                for service in file.service {
                    let name = service.name.unwrap_or_default();
                    for method in service.method {
                        known.insert(format!("/{package}.{name}/{}", method.name.unwrap_or_default()));
                    }
                }
            }
        }
        known
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invented_paths_are_one_unknown_label() {
        assert_eq!(split_path("/muster.policy.v1.PolicyService/GetOrg"), ("muster.policy.v1.PolicyService", "GetOrg"));
        assert_eq!(split_path("/grpc.health.v1.Health/Check"), ("grpc.health.v1.Health", "Check"));
        for invented in
            ["/muster.policy.v1.PolicyService/Nope", "/x.Y/Z", "/", "", "/muster.runtime.v1.CredentialsProbe/Check"]
        {
            assert_eq!(split_path(invented), ("unknown", "unknown"), "{invented}");
        }
    }

    #[test]
    fn records_requests_errors_and_latency() {
        let m = RpcMetrics::new();
        m.record("/muster.policy.v1.PolicyService/GetOrg", tonic::Code::Ok, 0.01);
        m.record("/muster.policy.v1.PolicyService/GetOrg", tonic::Code::NotFound, 0.01);
        let text = m.encode();
        assert!(text.contains("muster_grpc_server_requests_total{service=\"muster.policy.v1.PolicyService\",method=\"GetOrg\",code=\"Ok\"} 1"), "{text}");
        assert!(text.contains("muster_grpc_server_errors_total{service=\"muster.policy.v1.PolicyService\",method=\"GetOrg\",code=\"NotFound\"} 1"), "{text}");
        assert!(text.contains("muster_grpc_server_latency_seconds_count"), "{text}");
    }
}
