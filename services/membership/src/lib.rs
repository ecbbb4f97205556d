//! The membership service: people and their memberships, seats, JIT logins, the
//! guardian guard, the audit log and member events (SPEC §4 login side, §5, §7, §8,
//! §9). It asks policy for each org's product and for login decisions, and nothing
//! else.

pub mod app;
pub mod convert;
pub mod domain;
pub mod error;
pub mod grpc;
pub mod ops;
pub mod org_catalog;
pub mod store;

use std::future::Future;

use muster_proto::membership::v1::membership_service_server::MembershipServiceServer;
use muster_runtime::auth::TokenSet;
use muster_runtime::config::{AuthConfig, DatabaseConfig, ListenConfig, LogConfig, UpstreamConfig};
use muster_runtime::metrics::RpcMetrics;
use muster_runtime::{Db, Migrations, ServeOptions, ServiceSpec};
use serde::{Deserialize, Serialize};

use crate::app::Membership;
use crate::grpc::MembershipGrpc;
use crate::org_catalog::OrgCatalog;
use crate::store::MembershipStore;

/// The gRPC service name.
pub const GRPC_NAME: &str = "muster.membership.v1.MembershipService";

/// Largest message: an Apply batch of 10,000 desired states.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// Membership's configuration (`muster serve membership --config FILE`).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MembershipConfig {
    /// Where it listens.
    pub listen: ListenConfig,
    /// Its database.
    pub database: DatabaseConfig,
    /// Who may call it.
    pub auth: AuthConfig,
    /// Logging.
    pub log: LogConfig,
    /// How it reaches policy.
    pub policy: UpstreamConfig,
}

impl Default for MembershipConfig {
    fn default() -> Self {
        Self {
            listen: ListenConfig::on_ports(50052, 9462),
            database: DatabaseConfig {
                url: muster_runtime::Secret::new("sqlite://membership.db"),
                max_connections: 8,
                allow_newer_schema: false,
            },
            auth: AuthConfig::default(),
            log: LogConfig::default(),
            policy: UpstreamConfig {
                url: "http://127.0.0.1:50051".into(),
                token: muster_runtime::Secret::default(),
                timeout_ms: 10_000,
                check_interval_secs: 30,
            },
        }
    }
}

/// Why membership could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Caller tokens are misconfigured.
    #[error(transparent)]
    Tokens(#[from] muster_runtime::auth::TokenConfigError),
    /// Policy's address is unusable.
    #[error("policy upstream: {0}")]
    Upstream(#[from] muster_runtime::client::ClientError),
    /// The database could not be opened.
    #[error(transparent)]
    Db(#[from] muster_runtime::DbError),
    /// Serving failed.
    #[error(transparent)]
    Serve(#[from] muster_runtime::ServeError),
}

pub const MIGRATIONS: Migrations = muster_runtime::service_migrations!();

/// Runs membership on `listener` until `shutdown` completes.
pub async fn run(
    config: MembershipConfig,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
    metrics: RpcMetrics,
) -> Result<(), StartError> {
    let tokens = TokenSet::from_config(&config.auth)?;
    let policy = muster_runtime::client::policy_client(&config.policy)?;
    let db = Db::open(&config.database).await?;
    let stopping = muster_runtime::Stopping::new(shutdown);
    let app = Membership::new(MembershipStore::new(db.clone()), OrgCatalog::new(policy), stopping.clone());
    let server = MembershipServiceServer::new(MembershipGrpc::new(app))
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let spec = ServiceSpec {
        grpc_names: vec![GRPC_NAME],
        routes: tonic::service::Routes::new(server),
        db,
        migrations: MIGRATIONS,
        upstreams: vec![muster_runtime::upstream_check::UpstreamCheck {
            upstream: "policy",
            caller: "membership",
            channel: muster_runtime::client::upstream_channel(&config.policy)?,
            every: config.policy.check_interval(),
        }],
    };
    let options = ServeOptions::new(&config.listen, tokens, metrics);
    muster_runtime::serve(listener, stopping, spec, options).await?;
    Ok(())
}
