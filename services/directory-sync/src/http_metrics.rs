//! What the SCIM port did, for operators: one access line per request (method, route
//! template, status, seconds) and a latency histogram with the same labels. Routes are
//! templates (`/scim/v2/{directory}/Users/{id}`), never raw paths: ids in labels would
//! grow the metrics without bound, and a caller choosing paths could make them grow.

use std::time::Instant;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};

/// Labels of one SCIM request.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    /// HTTP method.
    pub method: String,
    /// The route template.
    pub route: String,
    /// HTTP status code.
    pub status: String,
}

/// The SCIM port's latency histogram (its count is the request count).
#[derive(Clone)]
pub struct HttpMetrics {
    latency: Family<RouteLabels, Histogram>,
}

impl HttpMetrics {
    /// Registers the histogram in `metrics`' registry.
    pub fn register(metrics: &muster_runtime::metrics::RpcMetrics) -> Self {
        let latency = Family::<RouteLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.0005, 2.0, 16))
        });
        metrics.with_registry(|r| {
            r.register(
                "directory_scim_request_duration_seconds",
                "SCIM requests by method, route template and status, in seconds",
                latency.clone(),
            )
        });
        Self { latency }
    }
}

/// The SCIM resource types (RFC 7644 §3.2) a route template may name; anything else is `other`.
const RESOURCES: [&str; 7] =
    ["Users", "Groups", "ServiceProviderConfig", "ResourceTypes", "Schemas", "Bulk", ".search"];

/// The route template of a request path.
pub fn route_template(path: &str) -> String {
    if path == "/healthz" {
        return path.into();
    }
    let Some(rest) = path.strip_prefix("/scim/v2/") else { return "other".into() };
    let mut parts = rest.split('/').filter(|p| !p.is_empty());
    let Some(_directory) = parts.next() else { return "/scim/v2".into() };
    let mut route = String::from("/scim/v2/{directory}");
    match parts.next() {
        None => {}
        Some(resource) if RESOURCES.contains(&resource) => {
            route.push('/');
            route.push_str(resource);
            match parts.next() {
                None => {}
                Some(".search") => route.push_str("/.search"),
                Some(_) => route.push_str("/{id}"),
            }
            if parts.next().is_some() {
                route.push_str("/other");
            }
        }
        Some(_) => route.push_str("/other"),
    }
    route
}

/// The directory id of a SCIM path, for the access line.
fn directory_of(path: &str) -> &str {
    path.strip_prefix("/scim/v2/").and_then(|r| r.split('/').next()).unwrap_or("")
}

/// Middleware: times the request, records it, writes the access line.
pub async fn observe(State(metrics): State<HttpMetrics>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().to_string();
    let path = request.uri().path().to_string();
    let response = next.run(request).await;
    let seconds = started.elapsed().as_secs_f64();
    let route = route_template(&path);
    let status = response.status().as_u16();
    metrics
        .latency
        .get_or_create(&RouteLabels { method: method.clone(), route: route.clone(), status: status.to_string() })
        .observe(seconds);
    let directory = directory_of(&path);
    if route == "/healthz" {
        tracing::debug!(target: "muster_access", method, route, status, seconds, "scim");
    } else if status >= 500 {
        tracing::error!(target: "muster_access", method, route, status, seconds, directory, "scim request failed");
    } else {
        tracing::info!(target: "muster_access", method, route, status, seconds, directory, "scim");
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_are_templates_never_ids() {
        for (path, want) in [
            ("/scim/v2/d1/Users", "/scim/v2/{directory}/Users"),
            ("/scim/v2/d1/Users/", "/scim/v2/{directory}/Users"),
            ("/scim/v2/d1/Users/8f2e", "/scim/v2/{directory}/Users/{id}"),
            ("/scim/v2/d1/Users/.search", "/scim/v2/{directory}/Users/.search"),
            ("/scim/v2/d1/Groups/g/x", "/scim/v2/{directory}/Groups/{id}/other"),
            ("/scim/v2/d1/Schemas/urn:ietf:params:scim:schemas:core:2.0:User", "/scim/v2/{directory}/Schemas/{id}"),
            ("/scim/v2/d1/ServiceProviderConfig", "/scim/v2/{directory}/ServiceProviderConfig"),
            ("/scim/v2/d1/.search", "/scim/v2/{directory}/.search"),
            ("/scim/v2/d1/anything-a-caller-types", "/scim/v2/{directory}/other"),
            ("/scim/v2/d1", "/scim/v2/{directory}"),
            ("/scim/v2/", "/scim/v2"),
            ("/etc/passwd", "other"),
            ("/healthz", "/healthz"),
        ] {
            assert_eq!(route_template(path), want, "{path}");
        }
        assert_eq!(directory_of("/scim/v2/d1/Users/x"), "d1");
        assert_eq!(directory_of("/healthz"), "");
    }
}
