//! The directory-sync service: directories (connections to an IdP) attached to parent
//! orgs, the mirror of each directory's users and groups (written by the SCIM
//! endpoint it serves over HTTP), and the sync engine that reconciles the mirror into
//! every scim-mode org of the directory's parent through policy (`Decide`) and
//! membership (`Apply`): a durable queue written with each mirror change, recorded
//! runs, the mass-removal brake, settings previews and a directory event stream
//! (SPEC §4, §6, §7, §9). It calls policy and membership; nothing calls it but
//! operators and IdPs.

pub mod app;
pub mod convert;
pub mod domain;
pub mod engine;
pub mod error;
pub mod grpc;
pub mod http;
pub mod http_limits;
pub mod http_metrics;
pub mod pull;
pub mod registry;
pub mod scim_log;
pub mod store;
pub mod upstream;
pub mod worker;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use muster_proto::directory::v1::directory_service_server::DirectoryServiceServer;
use muster_runtime::auth::TokenSet;
use muster_runtime::config::{AuthConfig, DatabaseConfig, ListenConfig, LogConfig, UpstreamConfig};
use muster_runtime::metrics::RpcMetrics;
use muster_runtime::{Db, Migrations, ServeOptions, ServiceSpec};
use serde::{Deserialize, Serialize};

use crate::app::DirectorySync;
use crate::engine::{Engine, EngineConfig};
use crate::grpc::DirectoryGrpc;
use crate::store::{DieselStore, SyncStore};
use crate::upstream::{GrpcUpstreams, Upstreams};
use crate::worker::WorkerConfig;

/// The gRPC service name, as health and reflection report it.
pub const GRPC_NAME: &str = "muster.directory.v1.DirectoryService";

/// Largest gRPC message accepted or sent.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// The HTTP (SCIM) front.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Address of the HTTP port serving SCIM at `/scim/v2/{directory_id}`.
    pub addr: String,
    /// The public SCIM base URL IdPs use, with `{directory_id}`; empty: `http://<addr>/scim/v2/{directory_id}`.
    pub scim_base_url: String,
    /// Largest SCIM request body, in bytes.
    pub max_body_bytes: usize,
    /// Open connections at most; more wait in the backlog (0: no limit).
    pub max_connections: usize,
    /// A connection with nothing sent or received for this long is closed (0: never).
    pub idle_timeout_secs: u64,
    /// A request, its body included, must be answered within this, else 408 (0: no limit).
    pub request_timeout_secs: u64,
    /// Requests per second each SCIM token may send, sustained (0: no limit).
    pub token_requests_per_second: u32,
    /// Requests a token may send at once above that rate.
    pub token_burst: u32,
    /// Requests of one token in flight at once (0: no limit).
    pub token_concurrency: u32,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            addr: "127.0.0.1:8080".into(),
            scim_base_url: String::new(),
            max_body_bytes: 4 * 1024 * 1024,
            max_connections: 1024,
            idle_timeout_secs: 60,
            request_timeout_secs: 60,
            token_requests_per_second: 500,
            token_burst: 1000,
            token_concurrency: 32,
        }
    }
}

impl HttpConfig {
    /// The port's limits.
    pub fn limits(&self) -> http_limits::Limits {
        http_limits::Limits {
            max_connections: self.max_connections,
            idle_timeout: Duration::from_secs(self.idle_timeout_secs),
            request_timeout: Duration::from_secs(self.request_timeout_secs),
            token_rate: f64::from(self.token_requests_per_second),
            token_burst: f64::from(self.token_burst),
            token_concurrency: self.token_concurrency as usize,
        }
    }
}

/// How reconciling paces itself.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SyncConfig {
    /// People per Decide/Apply batch (1 to 10,000).
    pub batch_size: usize,
    /// First wait after policy, membership or the database did not answer, in ms.
    pub backoff_min_ms: u64,
    /// Longest wait between attempts, in ms.
    pub backoff_max_ms: u64,
    /// Longest idle sleep of the worker, in ms (catches other replicas' writes).
    pub idle_poll_ms: u64,
    /// How often orgs' settings versions are checked for changes, in ms.
    pub settings_poll_ms: u64,
    /// Directory events are kept this many days (at least 30).
    pub event_retention_days: u32,
    /// This replica's name, stable across its restarts (empty: the host name, which
    /// is the pod name on Kubernetes). A replica that starts under a name takes over
    /// at once what the last process of that name left running; two live replicas
    /// may not share a name (on PostgreSQL the second is refused at start).
    pub replica_name: String,
}

impl Default for SyncConfig {
    fn default() -> Self {
        Self {
            batch_size: 1000,
            backoff_min_ms: 200,
            backoff_max_ms: 30_000,
            idle_poll_ms: 2000,
            settings_poll_ms: 10_000,
            event_retention_days: 30,
            replica_name: String::new(),
        }
    }
}

/// How pull directories (Okta, Entra, Google) are pulled.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PullSettings {
    /// Interval of a pull directory created without one, in seconds.
    pub default_interval_secs: u64,
    /// Pull every pull directory this often (ms), whatever its interval; 0 = off.
    /// For tests and demos: production directories keep their own interval.
    pub interval_override_ms: u64,
    /// A full listing at least this often (seconds), to catch drift the change feed misses.
    pub full_listing_every_secs: u64,
    /// The pull lease lasts this long unless renewed (renewed every third), in seconds.
    pub lease_secs: u64,
    /// How often this replica looks for due pulls, in ms.
    pub poll_ms: u64,
    /// First wait after a failed pull, in ms (doubling per failure).
    pub retry_min_ms: u64,
    /// Longest wait after failed pulls, in ms (never longer than the interval).
    pub retry_max_ms: u64,
}

impl Default for PullSettings {
    fn default() -> Self {
        Self {
            default_interval_secs: 900,
            interval_override_ms: 0,
            full_listing_every_secs: 86_400,
            lease_secs: 60,
            poll_ms: 5_000,
            retry_min_ms: 5_000,
            retry_max_ms: 900_000,
        }
    }
}

impl PullSettings {
    /// As the puller reads it.
    pub fn to_config(&self) -> pull::PullConfig {
        pull::PullConfig {
            default_interval: Duration::from_secs(self.default_interval_secs.max(60)),
            interval_override: (self.interval_override_ms > 0)
                .then(|| Duration::from_millis(self.interval_override_ms)),
            full_listing_every: Duration::from_secs(self.full_listing_every_secs.max(60)),
            lease_ttl: Duration::from_secs(self.lease_secs.max(3)),
            poll: Duration::from_millis(self.poll_ms.max(10)),
            retry_min: Duration::from_millis(self.retry_min_ms.max(1)),
            retry_max: Duration::from_millis(self.retry_max_ms.max(self.retry_min_ms.max(1))),
        }
    }
}

/// Directory-sync's configuration (`muster serve directory-sync --config FILE`).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DirectorySyncConfig {
    /// Where gRPC and metrics listen.
    pub listen: ListenConfig,
    /// The SCIM HTTP front.
    pub http: HttpConfig,
    /// Its database.
    pub database: DatabaseConfig,
    /// Who may call its gRPC API.
    pub auth: AuthConfig,
    /// Logging.
    pub log: LogConfig,
    /// The policy service.
    pub policy: UpstreamConfig,
    /// The membership service.
    pub membership: UpstreamConfig,
    /// Reconcile pacing.
    pub sync: SyncConfig,
    /// Pull directories.
    pub pull: PullSettings,
}

impl Default for DirectorySyncConfig {
    fn default() -> Self {
        Self {
            listen: ListenConfig::on_ports(50053, 9463),
            http: HttpConfig::default(),
            database: DatabaseConfig {
                url: muster_runtime::Secret::new("sqlite://directory-sync.db"),
                max_connections: 8,
                allow_newer_schema: false,
            },
            auth: AuthConfig::default(),
            log: LogConfig::default(),
            policy: UpstreamConfig {
                url: "http://127.0.0.1:50051".into(),
                timeout_ms: 10_000,
                check_interval_secs: 30,
                ..Default::default()
            },
            membership: UpstreamConfig {
                url: "http://127.0.0.1:50052".into(),
                timeout_ms: 10_000,
                check_interval_secs: 30,
                ..Default::default()
            },
            sync: SyncConfig::default(),
            pull: PullSettings::default(),
        }
    }
}

/// Why directory-sync could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Caller tokens are misconfigured.
    #[error(transparent)]
    Tokens(#[from] muster_runtime::auth::TokenConfigError),
    /// An upstream is misconfigured.
    #[error(transparent)]
    Client(#[from] muster_runtime::client::ClientError),
    /// A setting is out of range.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The database could not be opened.
    #[error(transparent)]
    Db(#[from] muster_runtime::DbError),
    /// Start-up database work failed.
    #[error(transparent)]
    Sync(#[from] crate::error::SyncError),
    /// gRPC serving failed.
    #[error(transparent)]
    Serve(#[from] muster_runtime::ServeError),
    /// HTTP serving failed.
    #[error("scim http server failed: {0}")]
    Http(#[from] std::io::Error),
}

/// Directory-sync's migrations, per backend.
pub const MIGRATIONS: Migrations = muster_runtime::service_migrations!();

/// The two ports directory-sync serves on, already bound.
#[derive(Debug)]
pub struct Listeners {
    /// gRPC.
    pub grpc: tokio::net::TcpListener,
    /// HTTP (SCIM).
    pub http: tokio::net::TcpListener,
}

/// Runs directory-sync with its own policy and membership clients.
pub async fn run(
    config: DirectorySyncConfig,
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send + 'static,
    metrics: RpcMetrics,
) -> Result<(), StartError> {
    let upstreams = GrpcUpstreams::new(&config.policy, &config.membership)?;
    run_with(config, listeners, shutdown, metrics, Arc::new(upstreams)).await
}

/// Runs directory-sync with its own policy and membership clients, its connectors
/// waiting through `clock` (tests give a manual clock so throttling never sleeps).
pub async fn run_with_connector_clock(
    config: DirectorySyncConfig,
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send + 'static,
    metrics: RpcMetrics,
    clock: Arc<dyn muster_connector::Clock>,
) -> Result<(), StartError> {
    let upstreams = GrpcUpstreams::new(&config.policy, &config.membership)?;
    run_inner(config, listeners, shutdown, metrics, Arc::new(upstreams), clock).await
}

/// Runs directory-sync over the given upstreams until `shutdown` completes.
pub async fn run_with(
    config: DirectorySyncConfig,
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send + 'static,
    metrics: RpcMetrics,
    upstreams: Arc<dyn Upstreams>,
) -> Result<(), StartError> {
    run_inner(config, listeners, shutdown, metrics, upstreams, Arc::new(muster_connector::SystemClock)).await
}

async fn run_inner(
    config: DirectorySyncConfig,
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send + 'static,
    metrics: RpcMetrics,
    upstreams: Arc<dyn Upstreams>,
    clock: Arc<dyn muster_connector::Clock>,
) -> Result<(), StartError> {
    let tokens = TokenSet::from_config(&config.auth)?;
    if !(1..=10_000).contains(&config.sync.batch_size) {
        return Err(StartError::Config("sync.batch_size must be 1 to 10000".into()));
    }
    if config.sync.event_retention_days < 30 {
        return Err(StartError::Config("sync.event_retention_days must be at least 30".into()));
    }
    let db = Db::open(&config.database).await?;
    // Migrate before the SCIM port or the worker touch the database; serve() then
    // finds nothing pending and reports SERVING.
    db.migrate(MIGRATIONS).await?;
    let store = DieselStore::new(db.clone());
    // On SQLite this process is the only one: every run still marked running died with
    // the last one. On PostgreSQL other replicas may be running theirs: only runs whose
    // heartbeat went quiet are taken for dead (and the worker keeps sweeping for them).
    let stale_runs = match db.backend() {
        muster_runtime::Backend::Sqlite => None,
        muster_runtime::Backend::Postgres => Some(worker::RUN_STALE_AFTER),
    };
    let interrupted = store.fail_interrupted_runs(stale_runs.map(|d| chrono::Utc::now() - d)).await?;
    if interrupted > 0 {
        tracing::warn!(
            runs = interrupted,
            "runs interrupted by the last stop marked failed; their queued changes are retried"
        );
    }

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    // When the stop was asked for: everything after it shares one grace.
    let stop_deadline = Arc::new(std::sync::Mutex::new(None::<tokio::time::Instant>));
    let grace = config.listen.shutdown_grace();
    let deadline = stop_deadline.clone();
    tokio::spawn(async move {
        shutdown.await;
        *deadline.lock().unwrap_or_else(|p| p.into_inner()) = Some(tokio::time::Instant::now() + grace);
        let _ = stop_tx.send(true);
    });
    let stopped = |rx: tokio::sync::watch::Receiver<bool>| async move {
        let mut rx = rx;
        let _ = rx.wait_for(|s| *s).await;
    };

    // Who this process is: a stable name (so a restart takes over what the last process
    // of that name left), and a boot id (so its runs and leases are told apart from
    // that process's). On PostgreSQL a session lock proves no live process has the name.
    let name = replica_name(&config.sync.replica_name);
    let replica = format!("{name}#{}", &uuid::Uuid::now_v7().simple().to_string()[20..]);
    let _name_lock = db.try_session_lock(&format!("muster:directory-sync:replica:{name}")).await?.ok_or_else(|| {
        StartError::Config(format!(
            "another directory-sync is running as replica {name:?} on this database: give each replica its own \
             sync.replica_name (default: the host name)"
        ))
    })?;
    let taken_over = store.take_over_replica(&name, &replica).await?;
    if taken_over > 0 {
        tracing::warn!(replica = %name, runs = taken_over, "took over from the last process of this replica: its runs are marked interrupted, its leases freed");
    }

    let engine_config = EngineConfig {
        batch_size: config.sync.batch_size,
        backoff_min: Duration::from_millis(config.sync.backoff_min_ms.max(1)),
        backoff_max: Duration::from_millis(config.sync.backoff_max_ms.max(config.sync.backoff_min_ms.max(1))),
        replica: replica.clone(),
    };
    let engine = Arc::new(Engine::new(store.clone(), upstreams, engine_config, stop_rx.clone()));
    let http_addr = listeners.http.local_addr()?;
    let base_url = if config.http.scim_base_url.is_empty() {
        format!("http://{http_addr}{}", http::SCIM_PREFIX)
    } else {
        config.http.scim_base_url.clone()
    };
    // Pull leases are held as `name#boot/…`: a restart of this replica frees them above.
    let holder = replica.clone();
    let puller = Arc::new(pull::Puller::new(
        engine.clone(),
        Arc::new(pull::VendorConnectors::new(clock)),
        config.pull.to_config(),
        holder,
    ));
    let app = DirectorySync::new(engine.clone(), base_url.clone()).with_puller(puller.clone());

    let worker_config = WorkerConfig {
        idle_poll: Duration::from_millis(config.sync.idle_poll_ms.max(10)),
        settings_poll: Duration::from_millis(config.sync.settings_poll_ms.max(10)),
        event_retention_days: config.sync.event_retention_days,
        drain_lease: Duration::from_secs(config.pull.lease_secs.max(3)),
        stale_runs,
    };
    let queue_gauge = prometheus_client::metrics::gauge::Gauge::<i64>::default();
    metrics.with_registry(|r| {
        r.register(
            "directory_reconcile_queue_depth",
            "Mirror changes waiting to be reconciled (all directories)",
            queue_gauge.clone(),
        )
    });
    let worker = tokio::spawn(worker::run_worker(engine.clone(), worker_config, stop_rx.clone(), Some(queue_gauge)));
    let pulls = tokio::spawn(puller.run_loop(stop_rx.clone()));

    let scim_config =
        muster_scim::ScimConfig { base_url, max_body_bytes: config.http.max_body_bytes, ..Default::default() };
    let log_dropped = prometheus_client::metrics::counter::Counter::<u64>::default();
    metrics.with_registry(|r| {
        r.register(
            "directory_scim_log_dropped",
            "SCIM request log entries dropped (writer behind or database failing); the IdP's answers were not affected",
            log_dropped.clone(),
        )
    });
    let (scim_log, log_writer) = scim_log::ScimLog::start(store.clone(), config.http.max_body_bytes, log_dropped);
    let limits = config.http.limits();
    let http_task = tokio::spawn(http::serve(
        http_limits::LimitedListener::new(listeners.http, &limits),
        http::router(
            store,
            scim_config,
            scim_log,
            http_metrics::HttpMetrics::register(&metrics),
            http_limits::TokenLimits::new(limits),
        ),
        stopped(stop_rx.clone()),
    ));
    tracing::info!(addr = %http_addr, "scim listening");

    let server = DirectoryServiceServer::new(DirectoryGrpc::new(app))
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let spec = ServiceSpec {
        grpc_names: vec![GRPC_NAME],
        routes: tonic::service::Routes::new(server),
        db,
        migrations: MIGRATIONS,
        upstreams: vec![
            muster_runtime::upstream_check::UpstreamCheck {
                upstream: "policy",
                caller: "directory-sync",
                channel: muster_runtime::client::upstream_channel(&config.policy)?,
                every: config.policy.check_interval(),
            },
            muster_runtime::upstream_check::UpstreamCheck {
                upstream: "membership",
                caller: "directory-sync",
                channel: muster_runtime::client::upstream_channel(&config.membership)?,
                every: config.membership.check_interval(),
            },
        ],
    };
    let options = ServeOptions::new(&config.listen, tokens, metrics);
    let served =
        muster_runtime::serve(listeners.grpc, muster_runtime::Stopping::new(stopped(stop_rx)), spec, options).await;
    // The worker and the puller stop at their next batch or page (a pull's HTTP wait
    // is cancelled), which is quick; they get what is left of the grace, so a stuck
    // database call cannot keep the process past it.
    let deadline =
        stop_deadline.lock().unwrap_or_else(|p| p.into_inner()).unwrap_or_else(|| tokio::time::Instant::now() + grace);
    for (name, task) in [("worker", worker), ("puller", pulls)] {
        let abort = task.abort_handle();
        if tokio::time::timeout_at(deadline, task).await.is_err() {
            tracing::warn!(
                task = name,
                "did not stop in time; abandoned (its run is marked interrupted at the next start)"
            );
            abort.abort();
        }
    }
    let http_abort = http_task.abort_handle();
    let http_result = match tokio::time::timeout_at(deadline, http_task).await {
        Ok(joined) => joined.map_err(|e| StartError::Config(format!("http task: {e}")))?,
        Err(_) => {
            tracing::warn!("scim requests still open after the grace; closing them");
            http_abort.abort();
            Ok(())
        }
    };
    // The router is gone, so the writer ends once what was sent is written.
    if tokio::time::timeout(Duration::from_secs(5), log_writer).await.is_err() {
        tracing::warn!("scim request log writer did not finish; its last entries may be lost");
    }
    served?;
    http_result?;
    Ok(())
}

/// The replica name: configured, else the host name, else `directory-sync`.
fn replica_name(configured: &str) -> String {
    let name = if configured.trim().is_empty() {
        std::env::var("HOSTNAME")
            .ok()
            .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
            .map(|h| h.trim().to_string())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "directory-sync".into())
    } else {
        configured.trim().to_string()
    };
    // `#` separates the name from the boot id in holders.
    name.replace('#', "_")
}
