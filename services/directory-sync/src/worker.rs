//! The background work of directory-sync: draining the reconcile queue into push runs,
//! noticing settings changes in policy, and pruning old events and SCIM request logs.
//!
//! Settings changes are noticed by polling: every `settings_poll` the worker reads the
//! settings version of each org of each active directory's parent, and when it differs
//! from the version last reconciled (kept in `org_watch`), it runs one full reconcile
//! of the parent for that org and records the version for every directory of the parent. Policy calls nobody, so a
//! poll is the honest way to learn of a change without a new dependency; the cost is
//! one ListOrgs and one GetSettings per org per interval.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::domain::directory::State;
use crate::domain::run::Trigger;
use crate::engine::{Engine, Scope};
use crate::error::SyncError;
use crate::store::SyncStore;

/// How the worker paces itself.
#[derive(Clone, Debug)]
pub struct WorkerConfig {
    /// Longest sleep when nothing wakes the worker (catches writes of other replicas).
    pub idle_poll: Duration,
    /// How often settings versions are checked.
    pub settings_poll: Duration,
    /// Events older than this many days are deleted.
    pub event_retention_days: u32,
    /// How long a replica's claim on draining one directory's queue lasts unless renewed.
    pub drain_lease: Duration,
    /// With several replicas (PostgreSQL): runs whose heartbeat is older than this are
    /// taken for dead and marked failed. `None`: one process, nothing to sweep.
    pub stale_runs: Option<Duration>,
}

/// How long a run may go without a heartbeat before another replica takes it for dead.
/// Runs write themselves after every batch and every retry of a waiting dependency,
/// so a live run is never this quiet.
pub const RUN_STALE_AFTER: Duration = Duration::from_secs(15 * 60);

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            idle_poll: Duration::from_secs(2),
            settings_poll: Duration::from_secs(10),
            event_retention_days: 30,
            drain_lease: Duration::from_secs(60),
            stale_runs: None,
        }
    }
}

/// Runs the worker until `shutdown` turns true.
pub async fn run_worker(
    engine: Arc<Engine>,
    config: WorkerConfig,
    mut shutdown: watch::Receiver<bool>,
    queue_depth: Option<prometheus_client::metrics::gauge::Gauge<i64>>,
) {
    let mut queue = engine.store.queue_changes();
    let mut next_settings = tokio::time::Instant::now();
    let mut next_prune = tokio::time::Instant::now();
    let mut backoff = engine.config.backoff_min;
    loop {
        if *shutdown.borrow() {
            return;
        }
        let mut failed = false;
        if let Some(g) = &queue_depth
            && let Ok((n, _)) = engine.store.queue_lag(None).await
        {
            g.set(n);
        }
        match drain_queue(&engine, config.drain_lease).await {
            Ok(()) => {}
            Err(SyncError::ShuttingDown) => return,
            Err(e) => {
                tracing::warn!(error = %e, "reconcile queue: will retry");
                failed = true;
            }
        }
        if tokio::time::Instant::now() >= next_settings {
            match check_settings(&engine).await {
                Ok(()) => next_settings = tokio::time::Instant::now() + config.settings_poll,
                Err(SyncError::ShuttingDown) => return,
                Err(e) => {
                    tracing::warn!(error = %e, "settings check: will retry");
                    failed = true;
                }
            }
        }
        if tokio::time::Instant::now() >= next_prune {
            let before = chrono::Utc::now() - chrono::Duration::days(i64::from(config.event_retention_days));
            match engine.store.prune_events(before).await {
                Ok(n) if n > 0 => tracing::info!(deleted = n, "old directory events pruned"),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "event pruning failed"),
            }
            match engine.store.prune_removal_log(chrono::Utc::now()).await {
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "removal log pruning failed"),
            }
            // Each directory keeps its SCIM request log its own scim_log_days.
            match engine.store.prune_scim_requests(chrono::Utc::now()).await {
                Ok(n) if n > 0 => tracing::info!(deleted = n, "old scim request log entries pruned"),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "scim request log pruning failed"),
            }
            if let Some(stale) = config.stale_runs {
                match engine.store.fail_interrupted_runs(Some(chrono::Utc::now() - stale)).await {
                    Ok(n) if n > 0 => tracing::warn!(runs = n, "runs of a replica that stopped marked failed"),
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "sweeping runs of stopped replicas failed"),
                }
            }
            next_prune = tokio::time::Instant::now() + Duration::from_secs(3600);
        }
        let wait = if failed {
            let w = backoff;
            backoff = (backoff * 2).min(engine.config.backoff_max);
            w
        } else {
            backoff = engine.config.backoff_min;
            config.idle_poll.min(next_settings.saturating_duration_since(tokio::time::Instant::now()))
        };
        tokio::select! {
            _ = shutdown.wait_for(|s| *s) => return,
            // A failed round waits its backoff even if new writes arrive meanwhile.
            changed = queue.changed(), if !failed => { if changed.is_err() { return; } }
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// Drains the queue of every active directory, one push run per batch. A directory is
/// drained under its lease (the one pulls take), so with several replicas on one
/// database exactly one reconciles a directory's changes at a time; the others skip it.
async fn drain_queue(engine: &Engine, lease_ttl: Duration) -> Result<(), SyncError> {
    for dir in engine.store.directories_with_queue().await? {
        let holder = format!("drain-{}", uuid::Uuid::now_v7());
        let drained = drain_directory(engine, &dir, &holder, lease_ttl).await;
        let _ = engine.store.release_lease(&dir, &holder).await;
        drained?;
    }
    Ok(())
}

/// Drains one directory's queue while this replica holds its lease.
async fn drain_directory(engine: &Engine, dir: &str, holder: &str, lease_ttl: Duration) -> Result<(), SyncError> {
    let dir = dir.to_string();
    loop {
        if engine.is_shutting_down() {
            return Err(SyncError::ShuttingDown);
        }
        if !engine.is_active(&dir).await? {
            break;
        }
        // Taken, or renewed, before every batch; another replica holding it (or a
        // pull running) means this one leaves the directory alone for now.
        if !engine.store.take_lease(&dir, holder, chrono::Utc::now(), lease_ttl).await? {
            break;
        }
        let lock = engine.directory_lock(&dir);
        let _guard = lock.lock().await;
        let entries = engine.store.peek_queue(&dir, engine.config.batch_size.max(1)).await?;
        if entries.is_empty() {
            break;
        }
        let seqs: Vec<i64> = entries.iter().map(|e| e.seq).collect();
        // A SCIM directory's queue is its pushes; a pull directory's is what a pull left
        // for the worker (more than its run takes, or its run failed).
        let trigger = if engine.store.get_directory(&dir).await?.kind.is_pull() {
            Trigger::QueuedChanges
        } else {
            Trigger::ScimPush
        };
        let run = engine.start_run(&dir, trigger, &format!("system:{}", trigger.name())).await?;
        let run = engine.execute(run, Scope::Users(entries)).await;
        match run.state {
            // Done (or held for approval, which keeps what it would remove on the
            // run): the entries are handled.
            crate::domain::run::RunState::Succeeded | crate::domain::run::RunState::Held => {
                engine.store.delete_queue(seqs).await?;
            }
            _ if engine.is_shutting_down() => return Err(SyncError::ShuttingDown),
            // Kept: the next round retries them after a backoff.
            _ => return Err(SyncError::Unavailable { service: "reconcile", message: run.error }),
        }
    }
    Ok(())
}

/// Reconciles every scim org whose settings changed since last time, once per org:
/// a parent's directories decide together, so one run of the parent covers the org
/// (recorded on the first active directory that noticed), and every directory of the
/// parent records the version. An org seen for the first time is recorded without a
/// run: a directory (or an org) that is new is not a settings change.
async fn check_settings(engine: &Engine) -> Result<(), SyncError> {
    let mut after = None;
    loop {
        let page = engine.store.list_directories(None, after.clone(), 1000).await?;
        for dir in &page.items {
            if dir.state != State::Active {
                continue;
            }
            let orgs = match engine.up.orgs_of_parent(&dir.parent_id).await {
                Ok(o) => o,
                Err(e) if e.is_transient() => return Err(e),
                Err(e) => {
                    tracing::warn!(directory = %dir.id, error = %e, "cannot read the parent's orgs");
                    continue;
                }
            };
            for org in orgs {
                let seen = engine.store.watched_version(&dir.id, &org.org_id).await?;
                if seen == Some(org.settings_version) {
                    continue;
                }
                if seen.is_some() && org.settings.mode == muster_proto::policy::v1::ProvisioningMode::Scim as i32 {
                    let lock = engine.directory_lock(&dir.id);
                    let _guard = lock.lock().await;
                    let run = engine.start_run(&dir.id, Trigger::SettingsChange, "system:settings_change").await?;
                    let run = engine.execute(run, Scope::Full { only_org: Some(org.org_id.clone()) }).await;
                    if run.state == crate::domain::run::RunState::Failed {
                        if engine.is_shutting_down() {
                            return Err(SyncError::ShuttingDown);
                        }
                        continue;
                    }
                }
                for d in engine.store.parent_directories(&dir.parent_id).await? {
                    engine.store.set_watched_version(&d.id, &org.org_id, org.settings_version).await?;
                }
            }
        }
        match page.next_after {
            Some(a) => after = Some(a),
            None => return Ok(()),
        }
    }
}
