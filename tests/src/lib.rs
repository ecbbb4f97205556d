//! Test support for Muster's end-to-end tests: per-test databases (a temp SQLite
//! file, or a fresh PostgreSQL database dropped afterwards) and a [`TestCluster`]
//! that runs the services on `127.0.0.1:0` and hands out authenticated clients.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::OnceLock;

use diesel::{Connection, PgConnection, RunQueryDsl};
use muster_runtime::auth::{generate_token, hash_token};
use muster_runtime::client::{AuthedChannel, MembershipClient, PolicyClient, channel};
use muster_runtime::config::{AuthConfig, DatabaseConfig, ListenConfig, UpstreamConfig};
use muster_runtime::metrics::RpcMetrics;
use tokio::net::TcpListener;

/// A directory-sync client.
pub type DirectoryClient = muster_proto::directory::v1::directory_service_client::DirectoryServiceClient<AuthedChannel>;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Which database the services run on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DbKind {
    /// A temp SQLite file per service.
    Sqlite,
    /// A fresh PostgreSQL database per service.
    Postgres,
}

/// The PostgreSQL server tests create their databases on.
pub fn postgres_admin_url() -> String {
    std::env::var("MUSTER_TEST_POSTGRES_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// Whether PostgreSQL tests run. Under `CI` a missing server fails the test run
/// instead of skipping, so CI can never go green without them.
pub fn postgres_available() -> bool {
    static AVAILABLE: OnceLock<bool> = OnceLock::new();
    *AVAILABLE.get_or_init(|| match PgConnection::establish(&postgres_admin_url()) {
        Ok(_) => true,
        Err(e) if std::env::var_os("CI").is_some() => {
            panic!("CI is set but PostgreSQL at {} is not reachable: {e}", postgres_admin_url())
        }
        Err(e) => {
            eprintln!("PostgreSQL not reachable ({e}); PostgreSQL variants are skipped (set CI=1 to make this fatal)");
            false
        }
    })
}

/// A database that exists for one test and is removed after it.
pub struct TestDb {
    url: String,
    _dir: Option<tempfile::TempDir>,
    pg_name: Option<String>,
}

impl TestDb {
    /// A new database of `kind` for `service`.
    pub fn create(kind: DbKind, service: &str) -> Self {
        match kind {
            DbKind::Sqlite => {
                let dir = tempfile::tempdir().unwrap();
                let url = format!("sqlite://{}", dir.path().join(format!("{service}.db")).display());
                Self { url, _dir: Some(dir), pg_name: None }
            }
            DbKind::Postgres => {
                let name = format!("muster_t_{}_{}", service.replace('-', "_"), uuid::Uuid::new_v4().simple());
                let mut admin = PgConnection::establish(&postgres_admin_url()).unwrap();
                diesel::sql_query(format!("CREATE DATABASE {name}")).execute(&mut admin).unwrap();
                let base = postgres_admin_url();
                let url = match base.rsplit_once('/') {
                    Some((server, _)) => format!("{server}/{name}"),
                    None => panic!("bad MUSTER_TEST_POSTGRES_URL {base}"),
                };
                Self { url, _dir: None, pg_name: Some(name) }
            }
        }
    }

    /// Its URL.
    pub fn url(&self) -> &str {
        &self.url
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Some(name) = &self.pg_name
            && let Ok(mut admin) = PgConnection::establish(&postgres_admin_url())
        {
            let _ = diesel::sql_query(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).execute(&mut admin);
        }
    }
}

/// One running service.
pub struct RunningService {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    stop: watch::Sender<bool>,
    task: JoinHandle<anyhow::Result<()>>,
}

impl RunningService {
    /// Stops it gracefully and returns how it ended.
    pub async fn stop(self) -> anyhow::Result<()> {
        let _ = self.stop.send(true);
        self.task.await?
    }
}

fn stopper() -> (watch::Sender<bool>, impl std::future::Future<Output = ()> + Send + 'static) {
    let (tx, mut rx) = watch::channel(false);
    (tx, async move {
        let _ = rx.wait_for(|stop| *stop).await;
    })
}

/// Waits until the service's health reports SERVING (watching, not sleeping).
pub async fn wait_serving(url: &str, service: &str) {
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus};
    // A server restarted on the port it had may see the first connection torn down
    // while the old one's sockets drain; that is a failed attempt, not a verdict.
    let mut last_error = String::new();
    for _ in 0..100 {
        let chan = channel(url, "", std::time::Duration::from_secs(30)).unwrap();
        let mut health = HealthClient::new(chan);
        let attempt = async {
            let mut stream = health.watch(HealthCheckRequest { service: service.to_string() }).await?.into_inner();
            while let Some(msg) = stream.message().await? {
                if msg.status == ServingStatus::Serving as i32 {
                    return Ok(true);
                }
            }
            Ok::<bool, tonic::Status>(false)
        };
        match attempt.await {
            Ok(true) => return,
            Ok(false) => last_error = "health stream ended".into(),
            Err(status) if status.code() == tonic::Code::Unavailable || status.code() == tonic::Code::Unknown => {
                last_error = status.to_string();
            }
            Err(status) => panic!("health watch of {service} failed: {status}"),
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("{service} at {url} never reported SERVING: {last_error}");
}

/// A listener for a service that may be restarted on the same port (others keep its
/// address). The first port is picked below Linux's ephemeral range (32768+): a port
/// from that range can be taken meanwhile by any client socket of a busy test run (a
/// database pool connection, say), and then the restart cannot have it back.
async fn bind_restartable(previous: Option<std::net::SocketAddr>) -> TcpListener {
    if let Some(addr) = previous {
        return TcpListener::bind(addr).await.unwrap_or_else(|e| panic!("cannot listen again on {addr}: {e}"));
    }
    for _ in 0..1000 {
        let port: u16 = rand_port();
        if let Ok(listener) = TcpListener::bind(("127.0.0.1", port)).await {
            return listener;
        }
    }
    panic!("no free port found in 20000..26000");
}

fn rand_port() -> u16 {
    // 26xxx and 27xxx are the fixed ports of the CLI test and the CI compliance run.
    20_000 + (uuid::Uuid::new_v4().as_u128() % 6_000) as u16
}

/// A service's listen config in tests: any port, no metrics port, a short grace.
fn test_listen() -> ListenConfig {
    ListenConfig {
        grpc: "127.0.0.1:0".into(),
        metrics: String::new(),
        request_timeout_secs: 30,
        shutdown_grace_secs: 5,
    }
}

/// Muster's services, running in this process for one test.
pub struct TestCluster {
    /// Which database they run on.
    pub kind: DbKind,
    /// The token every service accepts.
    pub token: String,
    /// Metrics shared by the services.
    pub metrics: RpcMetrics,
    /// Policy.
    pub policy: Option<RunningService>,
    policy_db: TestDb,
    /// Policy's address, kept across restarts so other services can find it again.
    policy_addr: Option<std::net::SocketAddr>,
    /// Membership.
    pub membership: Option<RunningService>,
    membership_db: TestDb,
    /// Membership's address, kept across restarts so directory-sync finds it again.
    membership_addr: Option<std::net::SocketAddr>,
    /// Directory-sync (gRPC).
    pub directory: Option<RunningService>,
    directory_db: TestDb,
    /// Directory-sync's (gRPC, HTTP) addresses, kept across restarts.
    directory_addrs: Option<(std::net::SocketAddr, std::net::SocketAddr)>,
    /// The clock directory-sync's pull connectors wait through (set it, then restart
    /// directory-sync): a manual clock makes throttling waits instant.
    pub connector_clock: Option<std::sync::Arc<dyn muster_connector::Clock>>,
    /// Directory-sync's replica name (set it, then restart directory-sync); unset, each
    /// start is a new replica with a name of its own.
    pub replica_name: Option<String>,
}

impl TestCluster {
    /// Starts every service on fresh databases of `kind`.
    pub async fn start(kind: DbKind) -> Self {
        let token = generate_token();
        let metrics = RpcMetrics::new();
        let policy_db = TestDb::create(kind, "policy");
        let membership_db = TestDb::create(kind, "membership");
        let directory_db = TestDb::create(kind, "directory_sync");
        let mut cluster = Self {
            kind,
            token,
            metrics,
            policy: None,
            policy_db,
            policy_addr: None,
            membership: None,
            membership_db,
            membership_addr: None,
            directory: None,
            directory_db,
            directory_addrs: None,
            connector_clock: None,
            replica_name: None,
        };
        cluster.start_policy().await;
        cluster.start_membership().await;
        cluster.start_directory().await;
        cluster
    }

    fn auth(&self) -> AuthConfig {
        AuthConfig { token_sha256: vec![hash_token(&self.token)] }
    }

    /// Policy's config for this cluster (port 0; metrics off).
    pub fn policy_config(&self) -> muster_policy::PolicyConfig {
        muster_policy::PolicyConfig {
            listen: test_listen(),
            database: DatabaseConfig {
                url: muster_runtime::Secret::new(self.policy_db.url()),
                max_connections: 4,
                allow_newer_schema: false,
            },
            auth: self.auth(),
            ..Default::default()
        }
    }

    /// (Re)starts policy on its database, on the same port as before if it ran already.
    pub async fn start_policy(&mut self) {
        let listener = bind_restartable(self.policy_addr).await;
        self.policy_addr = Some(listener.local_addr().unwrap());
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (stop, shutdown) = stopper();
        let config = self.policy_config();
        let metrics = self.metrics.clone();
        let task = tokio::spawn(async move { Ok(muster_policy::run(config, listener, shutdown, metrics).await?) });
        wait_serving(&url, muster_policy::GRPC_NAME).await;
        self.policy = Some(RunningService { url, stop, task });
    }

    /// Membership's config for this cluster.
    pub fn membership_config(&self) -> muster_membership::MembershipConfig {
        let policy_addr = self.policy_addr.expect("policy started first");
        muster_membership::MembershipConfig {
            listen: test_listen(),
            database: DatabaseConfig {
                url: muster_runtime::Secret::new(self.membership_db.url()),
                max_connections: 4,
                allow_newer_schema: false,
            },
            auth: self.auth(),
            policy: UpstreamConfig {
                url: format!("http://{policy_addr}"),
                token: muster_runtime::Secret::new(self.token.clone()),
                timeout_ms: 5_000,
                check_interval_secs: 1,
            },
            ..Default::default()
        }
    }

    /// (Re)starts membership on its database, on the same port as before if it ran already.
    pub async fn start_membership(&mut self) {
        let listener = bind_restartable(self.membership_addr).await;
        self.membership_addr = Some(listener.local_addr().unwrap());
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (stop, shutdown) = stopper();
        let config = self.membership_config();
        let metrics = self.metrics.clone();
        let task = tokio::spawn(async move { Ok(muster_membership::run(config, listener, shutdown, metrics).await?) });
        wait_serving(&url, muster_membership::GRPC_NAME).await;
        self.membership = Some(RunningService { url, stop, task });
    }

    /// Stops policy (to test what others do without it).
    pub async fn stop_policy(&mut self) {
        if let Some(p) = self.policy.take() {
            p.stop().await.unwrap();
        }
    }

    /// Stops membership (to test what others do without it).
    pub async fn stop_membership(&mut self) {
        if let Some(m) = self.membership.take() {
            m.stop().await.unwrap();
        }
    }

    /// Directory-sync's config for this cluster: fast polls and short backoffs.
    pub fn directory_config(&self) -> muster_directory_sync::DirectorySyncConfig {
        let upstream = |addr: std::net::SocketAddr| UpstreamConfig {
            url: format!("http://{addr}"),
            token: muster_runtime::Secret::new(self.token.clone()),
            timeout_ms: 10_000,
            check_interval_secs: 1,
        };
        muster_directory_sync::DirectorySyncConfig {
            listen: test_listen(),
            database: DatabaseConfig {
                url: muster_runtime::Secret::new(self.directory_db.url()),
                max_connections: 4,
                allow_newer_schema: false,
            },
            auth: self.auth(),
            policy: upstream(self.policy_addr.expect("policy started first")),
            membership: upstream(self.membership_addr.expect("membership started first")),
            sync: muster_directory_sync::SyncConfig {
                backoff_min_ms: 20,
                backoff_max_ms: 300,
                idle_poll_ms: 200,
                settings_poll_ms: 200,
                replica_name: self.replica_name.clone().unwrap_or_else(|| format!("test-{}", generate_token())),
                ..Default::default()
            },
            // Pull directories are pulled continuously, leases lapse in seconds.
            pull: muster_directory_sync::PullSettings {
                interval_override_ms: 100,
                poll_ms: 50,
                lease_secs: 3,
                retry_min_ms: 20,
                retry_max_ms: 300,
                ..Default::default()
            },
            ..Default::default()
        }
    }

    /// Starts another directory-sync replica on the same database (fresh ports), for
    /// tests of what several replicas do; stop it with [`RunningService::stop`].
    pub async fn start_directory_replica(&self) -> RunningService {
        let grpc = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let http = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", grpc.local_addr().unwrap());
        let (stop, shutdown) = stopper();
        let config = self.directory_config();
        let metrics = RpcMetrics::new();
        let listeners = muster_directory_sync::Listeners { grpc, http };
        let clock = self.connector_clock.clone();
        let task = tokio::spawn(async move {
            match clock {
                Some(c) => {
                    muster_directory_sync::run_with_connector_clock(config, listeners, shutdown, metrics, c).await?
                }
                None => muster_directory_sync::run(config, listeners, shutdown, metrics).await?,
            }
            Ok(())
        });
        wait_serving(&url, muster_directory_sync::GRPC_NAME).await;
        RunningService { url, stop, task }
    }

    /// (Re)starts directory-sync on its database, on the same ports as before if it ran already.
    pub async fn start_directory(&mut self) {
        let grpc = bind_restartable(self.directory_addrs.map(|(g, _)| g)).await;
        let http = bind_restartable(self.directory_addrs.map(|(_, h)| h)).await;
        self.directory_addrs = Some((grpc.local_addr().unwrap(), http.local_addr().unwrap()));
        let url = format!("http://{}", grpc.local_addr().unwrap());
        let (stop, shutdown) = stopper();
        let config = self.directory_config();
        let metrics = self.metrics.clone();
        let listeners = muster_directory_sync::Listeners { grpc, http };
        let clock = self.connector_clock.clone();
        let task = tokio::spawn(async move {
            match clock {
                Some(c) => {
                    muster_directory_sync::run_with_connector_clock(config, listeners, shutdown, metrics, c).await?
                }
                None => muster_directory_sync::run(config, listeners, shutdown, metrics).await?,
            }
            Ok(())
        });
        wait_serving(&url, muster_directory_sync::GRPC_NAME).await;
        self.directory = Some(RunningService { url, stop, task });
    }

    /// Directory-sync's database URL, for the few tests that must set up what no API
    /// sets (another replica's pull lease, say).
    pub fn directory_db_url(&self) -> &str {
        self.directory_db.url()
    }

    /// Stops directory-sync.
    pub async fn stop_directory(&mut self) {
        if let Some(d) = self.directory.take() {
            d.stop().await.unwrap();
        }
    }

    /// An authenticated directory-sync client.
    pub fn directory(&self) -> DirectoryClient {
        DirectoryClient::new(self.channel(self.directory_url()))
    }

    /// The SCIM base URL of a directory (`http://127.0.0.1:PORT/scim/v2/ID`).
    pub fn scim_url(&self, directory_id: &str) -> String {
        let (_, http) = self.directory_addrs.expect("directory-sync started");
        format!("http://{http}/scim/v2/{directory_id}")
    }

    /// A new Enterprise parent ("Acme") with one seat-based Enterprise org, its
    /// settings saved as given (left at the defaults when they are the defaults).
    /// Returns (parent id, org id).
    pub async fn enterprise_org(&self, settings: muster_proto::policy::v1::SettingsInput) -> (String, String) {
        use muster_proto::policy::v1 as ppb;
        let mut policy = self.policy();
        let parent = policy
            .create_parent_org(ppb::CreateParentOrgRequest {
                name: "Acme".into(),
                kind: ppb::ParentKind::Enterprise as i32,
            })
            .await
            .unwrap()
            .into_inner();
        let org = policy
            .create_org(ppb::CreateOrgRequest {
                parent_id: parent.id.clone(),
                name: "Acme Enterprise".into(),
                product: ppb::ProductKind::ClaudeEnterpriseSeat as i32,
            })
            .await
            .unwrap()
            .into_inner();
        let defaults = ppb::SettingsInput { mode: ppb::ProvisioningMode::Manual as i32, ..Default::default() };
        if settings != defaults {
            let actor = muster_proto::common::v1::Actor {
                kind: Some(muster_proto::common::v1::actor::Kind::AdminId("tester".into())),
            };
            policy
                .update_settings(ppb::UpdateSettingsRequest {
                    org_id: org.id.clone(),
                    expected_version: 0,
                    settings: Some(settings),
                    actor: Some(actor),
                })
                .await
                .unwrap();
        }
        (parent.id, org.id)
    }

    /// Membership's URL.
    pub fn membership_url(&self) -> &str {
        &self.membership.as_ref().expect("membership running").url
    }

    /// An authenticated membership client.
    pub fn membership(&self) -> MembershipClient {
        MembershipClient::new(self.channel(self.membership_url()))
    }

    /// Directory-sync's gRPC URL.
    pub fn directory_url(&self) -> &str {
        &self.directory.as_ref().expect("directory-sync running").url
    }

    /// Policy's URL.
    pub fn policy_url(&self) -> &str {
        &self.policy.as_ref().expect("policy running").url
    }

    /// An authenticated channel to `url`.
    pub fn channel(&self, url: &str) -> AuthedChannel {
        channel(url, &self.token, std::time::Duration::from_secs(30)).unwrap()
    }

    /// An authenticated policy client.
    pub fn policy(&self) -> PolicyClient {
        PolicyClient::new(self.channel(self.policy_url()))
    }

    /// Stops every service.
    pub async fn stop(mut self) {
        if let Some(d) = self.directory.take() {
            d.stop().await.unwrap();
        }
        if let Some(m) = self.membership.take() {
            m.stop().await.unwrap();
        }
        if let Some(p) = self.policy.take() {
            p.stop().await.unwrap();
        }
    }
}
