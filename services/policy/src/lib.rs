//! The policy service: parent organizations and organizations, the product catalog,
//! each org's provisioning settings, and the decision engine that turns what an IdP
//! says of a person into the membership they should have (SPEC §1–§4). It calls no
//! other service.

pub mod app;
pub mod convert;
pub mod domain;
pub mod error;
pub mod grpc;
pub mod store;

use std::future::Future;

use muster_proto::policy::v1::policy_service_server::PolicyServiceServer;
use muster_runtime::auth::TokenSet;
use muster_runtime::config::{AuthConfig, DatabaseConfig, ListenConfig, LogConfig};
use muster_runtime::metrics::RpcMetrics;
use muster_runtime::{Db, Migrations, ServeOptions, ServiceSpec};
use serde::{Deserialize, Serialize};

use crate::app::Policy;
use crate::domain::catalog::Catalog;
use crate::grpc::PolicyGrpc;
use crate::store::DieselPolicyStore;

/// The gRPC service name, as health and reflection report it.
pub const GRPC_NAME: &str = "muster.policy.v1.PolicyService";

/// Largest request policy accepts: a Decide batch of 10,000 subjects with their groups.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// The policy service's configuration (`muster serve policy --config FILE`).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PolicyConfig {
    /// Where it listens.
    pub listen: ListenConfig,
    /// Its database.
    pub database: DatabaseConfig,
    /// Who may call it.
    pub auth: AuthConfig,
    /// Logging.
    pub log: LogConfig,
    /// A replacement product catalog (TOML); empty for the built-in one.
    pub catalog_file: String,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        Self {
            listen: ListenConfig::on_ports(50051, 9461),
            database: DatabaseConfig {
                url: muster_runtime::Secret::new("sqlite://policy.db"),
                max_connections: 8,
                allow_newer_schema: false,
            },
            auth: AuthConfig::default(),
            log: LogConfig::default(),
            catalog_file: String::new(),
        }
    }
}

/// Why policy could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The catalog file is unreadable or invalid.
    #[error("catalog file {path}: {message}")]
    Catalog {
        /// The file.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// Caller tokens are misconfigured.
    #[error(transparent)]
    Tokens(#[from] muster_runtime::auth::TokenConfigError),
    /// The database could not be opened.
    #[error(transparent)]
    Db(#[from] muster_runtime::DbError),
    /// Serving failed.
    #[error(transparent)]
    Serve(#[from] muster_runtime::ServeError),
}

pub const MIGRATIONS: Migrations = muster_runtime::service_migrations!();

/// Loads the catalog the config names (or the built-in one).
pub fn load_catalog(config: &PolicyConfig) -> Result<Catalog, StartError> {
    if config.catalog_file.is_empty() {
        return Ok(Catalog::builtin());
    }
    let path = config.catalog_file.clone();
    let text = std::fs::read_to_string(&path)
        .map_err(|e| StartError::Catalog { path: path.clone(), message: e.to_string() })?;
    Catalog::parse(&text).map_err(|e| StartError::Catalog { path, message: e.to_string() })
}

/// Runs policy on `listener` until `shutdown` completes.
pub async fn run(
    config: PolicyConfig,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
    metrics: RpcMetrics,
) -> Result<(), StartError> {
    let catalog = load_catalog(&config)?;
    let tokens = TokenSet::from_config(&config.auth)?;
    let db = Db::open(&config.database).await?;
    let policy = Policy::new(DieselPolicyStore::new(db.clone()), catalog);
    let server = PolicyServiceServer::new(PolicyGrpc::new(policy))
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let spec = ServiceSpec {
        grpc_names: vec![GRPC_NAME],
        routes: tonic::service::Routes::new(server),
        db,
        migrations: MIGRATIONS,
        // Policy calls nobody.
        upstreams: vec![],
    };
    let options = ServeOptions::new(&config.listen, tokens, metrics);
    muster_runtime::serve(listener, muster_runtime::Stopping::new(shutdown), spec, options).await?;
    Ok(())
}
