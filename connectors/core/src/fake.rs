//! The HTTP half of the shared fake scaffolding (feature `fake`): serves a
//! vendor fake's routes on `127.0.0.1:0` behind one gate that, for every
//! request, in this order, records it and answers an injected failure in the
//! vendor's shape ([`FakeControls::admit`]), then refuses it in the vendor's
//! shape unless it carries credentials the fake accepts. The credential check
//! is not optional: the kit's "wrong credentials" step needs the fake itself to
//! refuse, or a connector that never sends its credentials would pass.
//!
//! A vendor fake is then its routes, its shapes and a [`VendorGate`]; its
//! handlers page their lists with [`FakeControls::page`].

use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::HeaderMap;
use axum::middleware::{self, Next};
use axum::response::Response;

use crate::conformance::{Failure, FakeControls};

/// The vendor's answer to an injected failure, by request path.
pub type FailureShape = Arc<dyn Fn(Failure, &str) -> Response + Send + Sync>;

/// What the gate needs from the vendor.
#[derive(Clone)]
pub struct VendorGate {
    /// Paths (below any prefix) served without the credential check: a token
    /// endpoint, which checks the credentials in its form itself.
    pub open_paths: Vec<String>,
    /// Whether a request's headers carry credentials the fake accepts.
    pub authorized: Arc<dyn Fn(&HeaderMap) -> bool + Send + Sync>,
    /// The vendor's answer to a request without acceptable credentials.
    pub refusal: Arc<dyn Fn() -> Response + Send + Sync>,
    /// The vendor's answer to an injected failure, by request path.
    pub failure: FailureShape,
}

impl std::fmt::Debug for VendorGate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VendorGate").field("open_paths", &self.open_paths).finish_non_exhaustive()
    }
}

#[derive(Clone)]
struct Gate {
    controls: Arc<FakeControls>,
    vendor: VendorGate,
}

async fn gate(State(gate): State<Gate>, request: Request, next: Next) -> Response {
    let path = request.uri().path().to_owned();
    let line = format!("{} {}", request.method(), request.uri());
    if let Some(failure) = gate.controls.admit(line) {
        return (gate.vendor.failure)(failure, &path);
    }
    let open = gate.vendor.open_paths.contains(&path);
    if !open && !(gate.vendor.authorized)(request.headers()) {
        gate.controls.note_refused();
        return (gate.vendor.refusal)();
    }
    next.run(request).await
}

/// Serves `routes` behind the gate, every route under `prefix` (`""`, or
/// `/proxy` to stand for a proxy in front of the API, so a test proves a base
/// URL's path is kept). Returns the base URL (`http://127.0.0.1:PORT/proxy`).
pub async fn serve(
    routes: Router,
    controls: Arc<FakeControls>,
    vendor: VendorGate,
    prefix: &str,
) -> std::io::Result<String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}{prefix}", listener.local_addr()?);
    let routes = routes.layer(middleware::from_fn_with_state(Gate { controls, vendor }, gate));
    let app = if prefix.is_empty() { routes } else { Router::new().nest(prefix, routes) };
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::warn!(error = %e, "fake server stopped");
        }
    });
    Ok(base)
}
