//! What every Muster service shares: typed, layered configuration with redacted
//! secrets; telemetry; storage on SQLite or PostgreSQL through one diesel code base;
//! `serve()` with bearer-token auth, health, reflection, tracing, metrics, timeouts
//! and graceful shutdown; and gRPC clients with deadlines and UNAVAILABLE retries.

pub mod actor;
pub mod auth;
pub mod client;
pub mod config;
pub mod metrics;
pub mod rpc_layer;
pub mod serve;
pub mod status;
pub mod storage;
pub mod telemetry;
pub mod trace_context;
pub mod upstream_check;

pub use config::Secret;
pub use serve::{
    ServeError, ServeOptions, ServiceSpec, Stopping, exit_after_grace_or_second_signal, serve, shutdown_signal,
};
pub use storage::{Backend, Db, DbConnection, DbError, Migrations};
