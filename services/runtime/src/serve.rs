//! `serve()`: runs one gRPC service on an already-bound listener until a shutdown
//! future completes, with health, reflection, auth, tracing, metrics and timeouts.

use std::future::Future;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::service::Routes;
use tonic_health::ServingStatus;

use crate::auth::TokenSet;
use crate::metrics::RpcMetrics;
use crate::rpc_layer::{Readiness, RpcGuardLayer};
use crate::storage::{Db, DbError, Migrations};

/// Why a service stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// Start-up could not finish the database work.
    #[error(transparent)]
    Database(#[from] DbError),
    /// The gRPC server failed.
    #[error("grpc server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// Reflection could not be built from the descriptor set.
    #[error("cannot build reflection service: {0}")]
    Reflection(String),
    /// The server task ended abnormally.
    #[error("server task failed: {0}")]
    Task(String),
}

/// Streams one client connection may have open at once: far above what a service's
/// callers use (a few watches, a batch of calls), far below what would exhaust it.
pub const MAX_CONCURRENT_STREAMS: u32 = 256;

/// What a service hands to [`serve`].
pub struct ServiceSpec {
    /// Fully qualified gRPC service names, reported by health (e.g. `muster.policy.v1.PolicyService`).
    pub grpc_names: Vec<&'static str>,
    /// The service's routes (its tonic servers).
    pub routes: Routes,
    /// The database it owns and the migrations to run before serving.
    pub db: Db,
    /// Its migrations.
    pub migrations: Migrations,
    /// The services it calls, whose acceptance of its token is checked at start and
    /// periodically: health is NOT_SERVING while one refuses it.
    pub upstreams: Vec<crate::upstream_check::UpstreamCheck>,
}

/// Settings every service serves with.
#[derive(Clone, Debug)]
pub struct ServeOptions {
    /// Accepted bearer tokens.
    pub tokens: TokenSet,
    /// Longest time one RPC may run.
    pub request_timeout: Duration,
    /// Where RPC metrics go.
    pub metrics: RpcMetrics,
    /// After shutdown is asked for, how long in-flight calls may take before the
    /// remaining connections are closed.
    pub shutdown_grace: Duration,
}

impl ServeOptions {
    /// Options from a service's `[listen]` config.
    pub fn new(listen: &crate::config::ListenConfig, tokens: TokenSet, metrics: RpcMetrics) -> Self {
        Self { tokens, request_timeout: listen.request_timeout(), metrics, shutdown_grace: listen.shutdown_grace() }
    }
}

/// A shutdown that many parts of a service can watch: the server, and long-lived
/// streams that must end (so clients reconnect elsewhere and resume from their cursor).
#[derive(Clone, Debug)]
pub struct Stopping(tokio::sync::watch::Receiver<bool>);

impl Stopping {
    /// Fires when `shutdown` completes.
    pub fn new(shutdown: impl Future<Output = ()> + Send + 'static) -> Self {
        let (tx, rx) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            shutdown.await;
            let _ = tx.send(true);
        });
        Self(rx)
    }

    /// Completes once shutdown is asked for.
    pub async fn wait(&self) {
        let mut rx = self.0.clone();
        let _ = rx.wait_for(|stop| *stop).await;
    }

    /// Whether shutdown was asked for.
    pub fn is_stopping(&self) -> bool {
        *self.0.borrow()
    }
}

/// Serves `spec` on `listener` until `stopping` fires, then lets in-flight calls
/// finish for up to `shutdown_grace`. Health reports NOT_SERVING, and other calls get
/// UNAVAILABLE, until the migrations are done; a failed migration stops the server
/// and is returned.
pub async fn serve(
    listener: TcpListener,
    stopping: Stopping,
    spec: ServiceSpec,
    options: ServeOptions,
) -> Result<(), ServeError> {
    let (reporter, health) = tonic_health::server::health_reporter();
    set_health(&reporter, &spec.grpc_names, ServingStatus::NotServing).await;
    // Reflection lists what this port serves (its own service, health, reflection),
    // not every service the descriptor set knows; v1alpha too, for older tools.
    let reflection = || {
        let mut b = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(muster_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .with_service_name("grpc.health.v1.Health");
        for name in &spec.grpc_names {
            b = b.with_service_name(*name);
        }
        b
    };
    let reflection_v1 = reflection().build_v1().map_err(|e| ServeError::Reflection(e.to_string()))?;
    let reflection_v1alpha = reflection().build_v1alpha().map_err(|e| ServeError::Reflection(e.to_string()))?;
    let routes = spec.routes.add_service(health).add_service(reflection_v1).add_service(reflection_v1alpha);
    let readiness = Readiness::new();
    let (fail_tx, mut fail_rx) = tokio::sync::watch::channel(false);
    let server_stopping = stopping.clone();
    let stop = async move {
        tokio::select! {
            _ = server_stopping.wait() => {}
            _ = fail_rx.changed() => {}
        }
    };
    let server = tonic::transport::Server::builder()
        // The server enforces this deadline (or the client's shorter grpc-timeout) on every call.
        .timeout(options.request_timeout)
        // One connection cannot open streams without bound (HTTP/2's default is unlimited).
        .max_concurrent_streams(MAX_CONCURRENT_STREAMS)
        .layer(RpcGuardLayer::new(options.tokens, readiness.clone(), options.metrics))
        .add_routes(routes)
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), stop);
    let mut server = tokio::spawn(server);

    if let Err(e) = spec.db.migrate(spec.migrations).await {
        tracing::error!(error = %e, "start-up failed");
        let _ = fail_tx.send(true);
        let _ = server.await;
        return Err(e.into());
    }
    readiness.set_ready();
    // A first look at the upstreams before saying SERVING (briefly: one that is down
    // is not a reason to wait, only one that refuses the token is a reason to refuse).
    let initially_refused = refused_upstreams(&spec.upstreams, Some(Duration::from_secs(2))).await;
    log_refusals(None, &initially_refused);
    set_health(&reporter, &spec.grpc_names, health_of(&initially_refused)).await;
    tracing::info!(services = ?spec.grpc_names, database = spec.db.target(), "serving");
    // Stopping: health says so at once, so a load balancer sends no new work during
    // the grace, while calls in flight finish. Until then, health follows whether the
    // upstreams accept this service's token.
    let health_stopping = stopping.clone();
    let names = spec.grpc_names.clone();
    let upstreams = spec.upstreams;
    tokio::spawn(async move {
        let checking = async {
            if upstreams.is_empty() {
                return std::future::pending::<()>().await;
            }
            let every =
                upstreams.iter().map(|u| u.every).min().unwrap_or(crate::upstream_check::DEFAULT_CHECK_INTERVAL);
            let mut refused = initially_refused;
            loop {
                tokio::time::sleep(every).await;
                let now = refused_upstreams(&upstreams, None).await;
                if now != refused {
                    log_refusals(refused.as_deref(), &now);
                    set_health(&reporter, &names, health_of(&now)).await;
                    refused = now;
                }
            }
        };
        tokio::select! {
            _ = health_stopping.wait() => {}
            _ = checking => {}
        }
        set_health(&reporter, &names, ServingStatus::NotServing).await;
    });
    let grace = options.shutdown_grace;
    tokio::select! {
        finished = &mut server => match finished {
            Ok(result) => result.map_err(ServeError::from),
            Err(e) => Err(ServeError::Task(e.to_string())),
        },
        _ = async { stopping.wait().await; tokio::time::sleep(grace).await } => {
            tracing::warn!(grace_secs = grace.as_secs(), "shutdown grace period over: closing remaining connections");
            server.abort();
            Ok(())
        }
    }
}

/// Sets the whole server's and each of its services' health.
async fn set_health(reporter: &tonic_health::server::HealthReporter, names: &[&'static str], status: ServingStatus) {
    reporter.set_service_status("", status).await;
    for name in names {
        reporter.set_service_status(*name, status).await;
    }
}

/// What refuses this service's token now, each check within `each_within` if given
/// (a check that takes longer counts as "no answer", not as a refusal).
async fn refused_upstreams(
    upstreams: &[crate::upstream_check::UpstreamCheck],
    each_within: Option<Duration>,
) -> Option<String> {
    use crate::upstream_check::{Credentials, check, refusals};
    let mut found = Vec::with_capacity(upstreams.len());
    for u in upstreams {
        found.push(match each_within {
            Some(d) => tokio::time::timeout(d, check(u)).await.unwrap_or(Credentials::Unknown("no answer yet".into())),
            None => check(u).await,
        });
    }
    refusals(&found)
}

/// Health while `refused` holds: NOT_SERVING while an upstream refuses the token.
fn health_of(refused: &Option<String>) -> ServingStatus {
    if refused.is_some() { ServingStatus::NotServing } else { ServingStatus::Serving }
}

/// Logs a change of what refuses this service's token (from `before` to `now`).
fn log_refusals(before: Option<&str>, now: &Option<String>) {
    match now {
        Some(why) => {
            tracing::error!(problem = %why, "an upstream refuses this service's token: health is NOT_SERVING until it accepts it")
        }
        None if before.is_some() => tracing::info!("upstreams accept this service's token again: SERVING"),
        None => {}
    }
}

/// Completes on SIGTERM or SIGINT (Ctrl-C).
pub async fn shutdown_signal() {
    next_signal().await;
    tracing::info!("shutdown requested: finishing in-flight calls");
}

/// After the first signal: a second SIGTERM or Ctrl-C exits at once (status 130), and
/// a process still running `grace` after the first exits anyway (status 1). A stop
/// that an IdP's hang or a stuck call keeps from finishing must not outlive the
/// grace an orchestrator gives (Kubernetes kills 30 s after SIGTERM by default).
pub fn exit_after_grace_or_second_signal(grace: Duration) {
    tokio::spawn(async move {
        tokio::select! {
            _ = next_signal() => {
                tracing::warn!("second signal: exiting now");
                eprintln!("second signal: exiting now");
                std::process::exit(130);
            }
            _ = tokio::time::sleep(grace) => {
                tracing::error!(grace_secs = grace.as_secs(), "did not stop within the shutdown grace; exiting");
                std::process::exit(1);
            }
        }
    });
}

async fn next_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
