//! Starting services from the binary: `muster serve <service>` for deployment, and
//! the shared pieces `muster up` uses to run them all in one process.

use std::future::Future;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, ValueEnum};
use muster_runtime::metrics::RpcMetrics;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// The services the binary can run.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum ServiceName {
    /// Orgs, catalog, settings, decisions.
    Policy,
    /// Members, seats, logins, audit, events.
    Membership,
    /// Directories, mirror, SCIM endpoint, sync runs, previews.
    DirectorySync,
}

/// `muster serve <service> --config FILE`
#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Which service.
    #[arg(value_enum)]
    pub service: ServiceName,
    /// TOML config file; `MUSTER_<SERVICE>__…` environment variables override it.
    #[arg(long)]
    pub config: Option<PathBuf>,
}

/// A shutdown that many tasks can wait on.
#[derive(Clone)]
pub struct Shutdown(watch::Receiver<bool>);

impl Shutdown {
    /// A shutdown fired by SIGTERM/SIGINT, and the sender that fires it by hand. After
    /// the signal the process has `grace` to stop (a second signal ends it at once).
    pub fn on_signal(grace: std::time::Duration) -> (watch::Sender<bool>, Self) {
        let (tx, rx) = watch::channel(false);
        let signal_tx = tx.clone();
        tokio::spawn(async move {
            muster_runtime::shutdown_signal().await;
            muster_runtime::exit_after_grace_or_second_signal(grace);
            let _ = signal_tx.send(true);
        });
        (tx, Self(rx))
    }

    /// Completes when shutdown is asked for.
    pub fn wait(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut rx = self.0.clone();
        async move {
            let _ = rx.wait_for(|stop| *stop).await;
        }
    }
}

/// Binds `addr`, naming it in the error.
pub async fn bind(addr: &str, what: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr).await.with_context(|| format!("cannot listen for {what} on {addr}"))
}

/// Serves metrics on `addr` (when not empty) until shutdown.
pub async fn spawn_metrics(addr: &str, metrics: RpcMetrics, shutdown: &Shutdown) -> anyhow::Result<()> {
    if addr.is_empty() {
        return Ok(());
    }
    let listener = bind(addr, "metrics").await?;
    let stop = shutdown.wait();
    tokio::spawn(async move {
        if let Err(e) = metrics.serve(listener, stop).await {
            tracing::error!(error = %e, "metrics server failed");
        }
    });
    Ok(())
}

/// An error already written to the service's log (in its format, JSON included):
/// `main` exits non-zero without printing it again.
#[derive(Debug)]
pub struct Reported;

impl std::fmt::Display for Reported {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the service stopped with an error (see its log)")
    }
}

impl std::error::Error for Reported {}

/// Logs a service's fatal error in the service's own log format.
fn reported(service: &str, e: anyhow::Error) -> anyhow::Error {
    tracing::error!(service, error = %format!("{e:#}"), "the service stopped with an error");
    Reported.into()
}

/// Runs one service until SIGTERM/SIGINT. Until its log is set up (the config is
/// read), errors are plain text on stderr; after, they are log lines. "serving" is
/// logged once the database is migrated and the port answers, not before.
pub async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    match args.service {
        ServiceName::Policy => {
            let config: muster_policy::PolicyConfig =
                muster_runtime::config::load(args.config.as_deref(), "MUSTER_POLICY").context("policy config")?;
            muster_runtime::telemetry::init(&config.log);
            let run = async {
                let (_tx, shutdown) = Shutdown::on_signal(config.listen.shutdown_grace());
                let metrics = RpcMetrics::new();
                spawn_metrics(&config.listen.metrics, metrics.clone(), &shutdown).await?;
                let listener = bind(&config.listen.grpc, "policy gRPC").await?;
                tracing::info!(addr = %config.listen.grpc, "policy starting: opening and migrating its database");
                muster_policy::run(config, listener, shutdown.wait(), metrics).await?;
                anyhow::Ok(())
            };
            run.await.map_err(|e| reported("policy", e))?;
        }
        ServiceName::Membership => {
            let config: muster_membership::MembershipConfig =
                muster_runtime::config::load(args.config.as_deref(), "MUSTER_MEMBERSHIP")
                    .context("membership config")?;
            muster_runtime::telemetry::init(&config.log);
            let run = async {
                let (_tx, shutdown) = Shutdown::on_signal(config.listen.shutdown_grace());
                let metrics = RpcMetrics::new();
                spawn_metrics(&config.listen.metrics, metrics.clone(), &shutdown).await?;
                let listener = bind(&config.listen.grpc, "membership gRPC").await?;
                tracing::info!(addr = %config.listen.grpc, "membership starting: opening and migrating its database");
                muster_membership::run(config, listener, shutdown.wait(), metrics).await?;
                anyhow::Ok(())
            };
            run.await.map_err(|e| reported("membership", e))?;
        }
        ServiceName::DirectorySync => {
            let config: muster_directory_sync::DirectorySyncConfig =
                muster_runtime::config::load(args.config.as_deref(), "MUSTER_DIRECTORY_SYNC")
                    .context("directory-sync config")?;
            muster_runtime::telemetry::init(&config.log);
            let run = async {
                let (_tx, shutdown) = Shutdown::on_signal(config.listen.shutdown_grace());
                let metrics = RpcMetrics::new();
                spawn_metrics(&config.listen.metrics, metrics.clone(), &shutdown).await?;
                let grpc = bind(&config.listen.grpc, "directory-sync gRPC").await?;
                let http = bind(&config.http.addr, "directory-sync SCIM HTTP").await?;
                tracing::info!(grpc = %config.listen.grpc, scim = %config.http.addr, "directory-sync starting: opening and migrating its database");
                let listeners = muster_directory_sync::Listeners { grpc, http };
                muster_directory_sync::run(config, listeners, shutdown.wait(), metrics).await?;
                anyhow::Ok(())
            };
            run.await.map_err(|e| reported("directory-sync", e))?;
        }
    }
    Ok(())
}

/// `muster migrate <service> --config FILE`: runs the service's migrations and exits
/// (for an upgrade step before the new release starts, or an init container).
pub async fn migrate(args: ServeArgs) -> anyhow::Result<()> {
    let (database, migrations, name) = match args.service {
        ServiceName::Policy => {
            let c: muster_policy::PolicyConfig =
                muster_runtime::config::load(args.config.as_deref(), "MUSTER_POLICY").context("policy config")?;
            muster_runtime::telemetry::init(&c.log);
            (c.database, muster_policy::MIGRATIONS, "policy")
        }
        ServiceName::Membership => {
            let c: muster_membership::MembershipConfig =
                muster_runtime::config::load(args.config.as_deref(), "MUSTER_MEMBERSHIP")
                    .context("membership config")?;
            muster_runtime::telemetry::init(&c.log);
            (c.database, muster_membership::MIGRATIONS, "membership")
        }
        ServiceName::DirectorySync => {
            let c: muster_directory_sync::DirectorySyncConfig =
                muster_runtime::config::load(args.config.as_deref(), "MUSTER_DIRECTORY_SYNC")
                    .context("directory-sync config")?;
            muster_runtime::telemetry::init(&c.log);
            (c.database, muster_directory_sync::MIGRATIONS, "directory-sync")
        }
    };
    let db = muster_runtime::Db::open(&database).await.with_context(|| format!("{name} database"))?;
    db.migrate(migrations).await.with_context(|| format!("{name} database"))?;
    println!("{name}: {} is migrated", db.target());
    Ok(())
}

/// `muster config check <service> FILE`: loads the config as the service would (file,
/// then `MUSTER_<SERVICE>__…` variables), and prints the effective config, secrets
/// redacted, or the first error.
pub fn config_check(args: ServeArgs) -> anyhow::Result<String> {
    let table = match args.service {
        ServiceName::Policy => effective::<muster_policy::PolicyConfig>(&args, "MUSTER_POLICY")?,
        ServiceName::Membership => effective::<muster_membership::MembershipConfig>(&args, "MUSTER_MEMBERSHIP")?,
        ServiceName::DirectorySync => {
            effective::<muster_directory_sync::DirectorySyncConfig>(&args, "MUSTER_DIRECTORY_SYNC")?
        }
    };
    Ok(toml::to_string(&table)?)
}

fn effective<T>(args: &ServeArgs, prefix: &str) -> anyhow::Result<toml::Table>
where
    T: Default + serde::Serialize + serde::de::DeserializeOwned,
{
    let config: T = muster_runtime::config::load(args.config.as_deref(), prefix)?;
    let mut table = toml::Table::try_from(&config)?;
    redact(&mut table, "");
    Ok(table)
}

/// Secrets out of a config before it is shown: every `token`, and the password of a
/// database URL.
fn redact(table: &mut toml::Table, section: &str) {
    for (key, value) in table.iter_mut() {
        match value {
            toml::Value::Table(t) => redact(t, key),
            toml::Value::String(s) if key == "token" && !s.is_empty() => *s = "[redacted]".into(),
            toml::Value::String(s) if section == "database" && key == "url" => {
                *s = muster_runtime::storage::redact_url(s)
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shown_configs_hold_no_secret() {
        let mut t: toml::Table = toml::from_str(
            "[database]\nurl = \"postgres://u:hunter2@h/db\"\n[policy]\ntoken = \"mst_secret\"\nurl = \"http://p\"\n",
        )
        .unwrap();
        redact(&mut t, "");
        let shown = toml::to_string(&t).unwrap();
        assert!(!shown.contains("hunter2") && !shown.contains("mst_secret"), "{shown}");
        assert!(shown.contains("http://p") && shown.contains("[redacted]"), "{shown}");
    }
}
