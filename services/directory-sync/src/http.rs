//! The HTTP front: the SCIM connector's router mounted at `/scim/v2/{directory_id}`,
//! one base URL and one bearer token per directory. Tokens are checked by the router
//! through the store (hash lookup, constant-time compare); a token of one directory
//! never reaches another's data. Directories that turned their SCIM request log on
//! have each exchange recorded by [`crate::scim_log::record`] around that router.

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use muster_scim::ScimConfig;

use crate::http_limits::TokenLimits;
use crate::http_metrics::HttpMetrics;
use crate::scim_log::ScimLog;
use crate::store::DieselStore;

/// The path SCIM directories are served under.
pub const SCIM_PREFIX: &str = "/scim/v2/{directory_id}";

/// The HTTP router of directory-sync: SCIM, and `GET /healthz` (no token: for a load
/// balancer, it answers 200 while the port serves).
pub fn router(
    store: DieselStore,
    config: ScimConfig,
    log: ScimLog,
    metrics: HttpMetrics,
    limits: TokenLimits,
) -> Router {
    Router::new()
        .nest(SCIM_PREFIX, muster_scim::router(Arc::new(store), config))
        .route("/healthz", axum::routing::get(|| async { axum::Json(serde_json::json!({"status": "serving"})) }))
        // Outside the SCIM router, so it sees the request exactly as the IdP sent it (full path and
        // query, every header) and the answer exactly as the IdP gets it, including the
        // SCIM router's own refusals (401, 404, 413). For directories with the log off
        // it is one cached lookup and a pass-through.
        .layer(axum::middleware::from_fn_with_state(log, crate::scim_log::record))
        // Each token's rate and requests in flight, and every request's deadline.
        .layer(axum::middleware::from_fn_with_state(limits, crate::http_limits::limit))
        // Outermost: every request, refusals included, is timed and counted.
        .layer(axum::middleware::from_fn_with_state(metrics, crate::http_metrics::observe))
}

/// Serves `router` on `listener` until `shutdown` completes.
pub async fn serve(
    listener: crate::http_limits::LimitedListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router).with_graceful_shutdown(shutdown).await
}
