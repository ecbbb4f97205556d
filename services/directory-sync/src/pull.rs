//! Pull directories (Okta, Entra, Google): building a connector from a directory's
//! stored config, the [`DirectorySink`] on the mirror, and the [`Puller`] that pulls
//! each directory on its interval and on "Sync now", under a lease so that one
//! replica at a time pulls a directory, then reconciles what changed.
//!
//! A pull is one run: the connector's pages are written to the mirror (with the queue
//! rows of the users they touch), then the run reconciles those users (interval) or
//! the whole directory (Sync now). A connector that fails — IdP down, throttled past
//! its retries, a permission missing, an empty listing — fails the run with the
//! connector's message in the directory's status and is retried with backoff; it never
//! reaches `ListingComplete`, so it never removes anyone.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use muster_connector::{
    CheckReport, Clock, ConnectorError, DirectorySink, Page, PullConnector, PullEnd, PullKind, PullMode, PullOptions,
    PullOutcome, SinkError, TokenPool, WaitNote, plan_pull, run_pull,
};
use tokio::sync::watch;

use crate::domain::directory::{Directory, Kind, State};
use crate::domain::pull::{pull_interval, retry_delay};
use crate::domain::run::{ItemKind, Phase, RunItem, RunState, SyncRun, Trigger};
use crate::engine::{Engine, Scope};
use crate::error::SyncError;
use crate::store::{DieselStore, ListingEnd, PagePass, PullWrite, SuspectListing, SyncStore};

/// Most queued users one interval run reconciles; the worker takes the rest.
const MAX_RUN_QUEUE: usize = 50_000;

/// Builds connectors from stored directory config.
pub trait ConnectorFactory: Send + Sync {
    /// Checks that `config_json` is a valid config for `kind` (secrets are not read).
    fn validate(&self, kind: Kind, config_json: &str) -> Result<(), ConnectorError>;
    /// A connector for the directory (its secrets read now, from file or environment).
    fn build(&self, kind: Kind, config_json: &str) -> Result<Box<dyn PullConnector>, ConnectorError>;
}

/// The connectors of the registry (`crate::registry`), waiting through `clock`.
pub struct VendorConnectors {
    clock: Arc<dyn Clock>,
    /// Access tokens of every credential, kept across pulls (a connector lives one pull).
    tokens: TokenPool,
}

impl VendorConnectors {
    /// Connectors that wait through `clock` (the system clock in production).
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        Self { clock, tokens: TokenPool::new() }
    }
}

impl ConnectorFactory for VendorConnectors {
    fn validate(&self, kind: Kind, config_json: &str) -> Result<(), ConnectorError> {
        kind.validate(config_json)
    }

    fn build(&self, kind: Kind, config_json: &str) -> Result<Box<dyn PullConnector>, ConnectorError> {
        kind.build(config_json, self.clock.clone(), &self.tokens)
    }
}

/// What a pull read, for its run's outcome. A full listing that replaced a change
/// feed whose cursor was refused (expired delta token, System Log position too old)
/// says so; a connector without a feed lists in full every time, which is no news.
fn listing_kind(outcome: &PullOutcome, incremental: bool) -> &'static str {
    match (outcome.full_listing, outcome.resynced && incremental) {
        (true, true) => "full listing (resync: the change cursor had expired)",
        (true, false) => "full listing",
        (false, _) => "changes",
    }
}

/// How pulls are paced.
#[derive(Clone, Debug)]
pub struct PullConfig {
    /// The interval of a pull directory that has none.
    pub default_interval: Duration,
    /// Pull every pull directory this often, whatever its interval (tests, demos).
    pub interval_override: Option<Duration>,
    /// A full listing at least this often, to catch drift a change feed never reports.
    pub full_listing_every: Duration,
    /// How long a lease lasts unless renewed (renewed every third of it).
    pub lease_ttl: Duration,
    /// How often due pulls are looked for.
    pub poll: Duration,
    /// First wait after a failed pull.
    pub retry_min: Duration,
    /// Longest wait after failed pulls.
    pub retry_max: Duration,
}

impl Default for PullConfig {
    fn default() -> Self {
        Self {
            default_interval: Duration::from_secs(900),
            interval_override: None,
            full_listing_every: Duration::from_secs(86_400),
            lease_ttl: Duration::from_secs(60),
            poll: Duration::from_secs(5),
            retry_min: Duration::from_secs(5),
            retry_max: Duration::from_secs(900),
        }
    }
}

/// The mirror as a connector's sink: one transaction per page, fenced by the lease.
/// It also keeps the run's progress (users listed so far) current.
struct MirrorSink {
    store: DieselStore,
    engine: Arc<Engine>,
    dir: String,
    holder: String,
    generation: Option<i64>,
    lost: Arc<AtomicBool>,
    written: PullWrite,
    /// The listing looked wrong: nothing it left out was removed.
    held: Option<SuspectListing>,
    /// The run, for its progress.
    run: SyncRun,
    last_progress: tokio::time::Instant,
}

/// How often a listing's progress is written to its run (a write per page would
/// compete with the pages themselves on SQLite).
const PROGRESS_EVERY: Duration = Duration::from_millis(500);

fn sink_error(e: SyncError) -> SinkError {
    SinkError(e.to_string())
}

#[async_trait]
impl DirectorySink for MirrorSink {
    async fn begin(&mut self, kind: PullKind) -> Result<(), SinkError> {
        self.generation = match kind {
            PullKind::Listing => Some(self.store.begin_listing(&self.dir, &self.holder).await.map_err(sink_error)?),
            PullKind::Changes => None,
        };
        Ok(())
    }

    async fn page(&mut self, page: Page) -> Result<(), SinkError> {
        if self.lost.load(Ordering::SeqCst) {
            return Err(SinkError("the pull lease was lost to another replica".into()));
        }
        let pass = match self.generation {
            Some(generation) => PagePass::Listing { generation },
            None => PagePass::Changes,
        };
        let listed = page.users.len() as i64;
        let w = self.store.write_pull_page(&self.dir, &self.holder, pass, page).await.map_err(sink_error)?;
        self.written.add(&w);
        self.run.processed += listed;
        if self.last_progress.elapsed() >= PROGRESS_EVERY {
            self.last_progress = tokio::time::Instant::now();
            // Best effort: progress is for people watching; the pull goes on regardless.
            let _ = self.engine.save(&self.run).await;
        }
        Ok(())
    }

    async fn finish(&mut self, end: PullEnd) -> Result<(), SinkError> {
        match end {
            PullEnd::ListingComplete { cursor } => {
                let generation =
                    self.generation.ok_or_else(|| SinkError("listing completed without a begin".into()))?;
                match self
                    .store
                    .complete_listing(&self.dir, &self.holder, generation, cursor.map(|c| c.as_str().to_string()))
                    .await
                    .map_err(sink_error)?
                {
                    ListingEnd::Swept(w) => self.written.add(&w),
                    ListingEnd::Held(suspect) => {
                        tracing::warn!(directory = %self.dir, reasons = ?suspect.reasons, "full listing held: it looks wrong");
                        self.held = Some(suspect);
                    }
                }
            }
            PullEnd::ChangesApplied { cursor } => {
                self.store
                    .changes_applied(&self.dir, &self.holder, cursor.as_str().to_string())
                    .await
                    .map_err(sink_error)?;
            }
        }
        Ok(())
    }

    /// Shows the latest wait in the run's progress, so whoever watches a slow pull sees why.
    async fn waiting(&mut self, note: &WaitNote) {
        self.run.outcome = format!("pulling; latest wait: {note}");
        // A long wait is shown at once; short ones with the next progress write.
        if note.wait >= PROGRESS_EVERY || self.last_progress.elapsed() >= PROGRESS_EVERY {
            self.last_progress = tokio::time::Instant::now();
            let _ = self.engine.save(&self.run).await;
        }
    }
}

/// Pulls pull directories: on their interval (its loop) and on "Sync now".
pub struct Puller {
    engine: Arc<Engine>,
    connectors: Arc<dyn ConnectorFactory>,
    config: PullConfig,
    /// This replica's name on leases.
    holder: String,
}

impl std::fmt::Debug for Puller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Puller").field("holder", &self.holder).field("config", &self.config).finish()
    }
}

/// The answer to "test this directory's connection".
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckAnswer {
    /// True when the connector could read what it needs.
    pub ok: bool,
    /// What works, or what is wrong.
    pub message: String,
    /// `ok`, `unauthorized`, `forbidden`, `not_found`, `config`, `secret`, `unreachable`, `error`.
    pub problem: &'static str,
}

fn problem_of(e: &ConnectorError) -> &'static str {
    match e {
        ConnectorError::Unauthorized(_) => "unauthorized",
        ConnectorError::Forbidden(_) => "forbidden",
        ConnectorError::NotFound(_) => "not_found",
        ConnectorError::Config(_) => "config",
        ConnectorError::Secret { .. } => "secret",
        ConnectorError::Transport(_) | ConnectorError::RateLimited { .. } => "unreachable",
        _ => "error",
    }
}

impl Puller {
    /// A puller for this replica (`holder` names it on leases).
    pub fn new(engine: Arc<Engine>, connectors: Arc<dyn ConnectorFactory>, config: PullConfig, holder: String) -> Self {
        Self { engine, connectors, config, holder }
    }

    /// This replica's name.
    pub fn holder(&self) -> &str {
        &self.holder
    }

    /// The lease name of one pull: this replica's name and a fresh id, so two pulls
    /// in one process exclude each other as pulls of two replicas do.
    fn lease_name(&self) -> String {
        format!("{}/{}", self.holder, uuid::Uuid::now_v7())
    }

    /// Checks a pull directory's config for its kind.
    pub fn validate(&self, kind: Kind, config_json: &str) -> Result<(), SyncError> {
        self.connectors
            .validate(kind, config_json)
            .map_err(|e| SyncError::invalid("connector_config_invalid", "config_json", e.to_string()))
    }

    /// Runs the connector's `check()` for a directory.
    pub async fn check(&self, d: &Directory) -> Result<CheckAnswer, SyncError> {
        if !d.kind.is_pull() {
            return Err(SyncError::FailedPrecondition {
                rule: "not_pull",
                message: format!(
                    "directory {} is a SCIM directory: the IdP pushes to it; there is nothing to test",
                    d.id
                ),
            });
        }
        let connector = match self.connectors.build(d.kind, &d.config_json) {
            Ok(c) => c,
            Err(e) => return Ok(CheckAnswer { ok: false, problem: problem_of(&e), message: e.to_string() }),
        };
        Ok(match connector.check().await {
            Ok(CheckReport { summary }) => CheckAnswer { ok: true, message: summary, problem: "ok" },
            Err(e) => CheckAnswer { ok: false, problem: problem_of(&e), message: e.to_string() },
        })
    }

    /// Pulls due directories until `shutdown`.
    pub async fn run_loop(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        loop {
            if *shutdown.borrow() {
                return;
            }
            match self.engine.store.due_pulls(chrono::Utc::now(), &self.holder).await {
                Ok(due) => {
                    for dir in due {
                        if *shutdown.borrow() {
                            return;
                        }
                        // One lease name per pull: a Sync now in this process waits for it too.
                        let lease = self.lease_name();
                        match self
                            .engine
                            .store
                            .take_lease(&dir, &lease, chrono::Utc::now(), self.config.lease_ttl)
                            .await
                        {
                            Ok(true) => {
                                let actor = format!("system:interval@{}", self.holder);
                                match self.engine.start_run(&dir, Trigger::Interval, &actor).await {
                                    Ok(run) => {
                                        self.pull_and_reconcile(run, false, &lease).await;
                                    }
                                    Err(e) => tracing::warn!(directory = %dir, error = %e, "cannot start a pull run"),
                                }
                                let _ = self.engine.store.release_lease(&dir, &lease).await;
                            }
                            Ok(false) => {}
                            Err(e) => tracing::warn!(directory = %dir, error = %e, "cannot take the pull lease"),
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cannot read due pulls; will retry"),
            }
            tokio::select! {
                _ = shutdown.wait_for(|s| *s) => return,
                _ = tokio::time::sleep(self.config.poll) => {}
            }
        }
    }

    /// "Sync now" for a pull directory: waits for the lease (another pull of the
    /// directory, in this replica or another, may be running; the run says so while it
    /// waits), then a full listing and a full reconcile, recorded on `run`. A holder that
    /// died lets its lease lapse, so the wait ends by itself; only shutdown cuts it short.
    pub async fn sync_now(&self, mut run: SyncRun) -> SyncRun {
        let dir = run.directory_id.clone();
        let lease = self.lease_name();
        let mut said = String::new();
        loop {
            match self.engine.store.take_lease(&dir, &lease, chrono::Utc::now(), self.config.lease_ttl).await {
                Ok(true) => break,
                Ok(false) => {
                    let state = self.engine.store.pull_state(&dir).await.ok().flatten();
                    let holder = state.as_ref().and_then(|s| s.lease_holder.clone()).unwrap_or_default();
                    let until = state
                        .and_then(|s| s.lease_expires)
                        .map(|t| format!(" (renewed while it pulls; lapses {} if it stops)", t.format("%H:%M:%S UTC")))
                        .unwrap_or_default();
                    let who = if holder.starts_with(&self.holder) {
                        "this replica's scheduled pull".to_string()
                    } else {
                        holder.split('/').next().unwrap_or(&holder).to_string()
                    };
                    let message = format!("waiting for the pull lease held by {who}{until}");
                    if message != said {
                        tracing::info!(directory = %dir, run = %run.id, holder = %holder, "sync now waits for the pull lease");
                        said = message.clone();
                        run.phase = Phase::WaitingForLease;
                        run.outcome = message;
                        let _ = self.engine.save(&run).await;
                    }
                    if self.engine.is_shutting_down() {
                        return self
                            .fail(run, "interrupted: the service stopped while waiting for the pull lease".into())
                            .await;
                    }
                    tokio::time::sleep(self.config.poll.min(Duration::from_millis(500))).await;
                }
                Err(e) => return self.fail(run, format!("cannot take the pull lease: {e}")).await,
            }
        }
        run.phase = Phase::Listing;
        run.outcome = "pulling".into();
        let _ = self.engine.save(&run).await;
        let run = self.pull_and_reconcile(run, true, &lease).await;
        let _ = self.engine.store.release_lease(&dir, &lease).await;
        run
    }

    async fn fail(&self, mut run: SyncRun, message: String) -> SyncRun {
        run.state = RunState::Failed;
        run.phase = Phase::Done;
        run.ended_at = Some(chrono::Utc::now());
        run.outcome = format!("pull failed, nobody was removed: {message}");
        run.error = message;
        let _ = self.engine.store.set_last_error(&run.directory_id, &run.error).await;
        let _ = self.engine.save(&run).await;
        run
    }

    /// Keeps the lease while a pull and its reconcile run; marks `lost` when another
    /// replica has it (the sink then refuses further pages).
    fn keep_lease(&self, dir: &str, lease: &str, lost: Arc<AtomicBool>) -> tokio::task::JoinHandle<()> {
        let store = self.engine.store.clone();
        let (dir, holder, ttl) = (dir.to_string(), lease.to_string(), self.config.lease_ttl);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(ttl / 3).await;
                match store.take_lease(&dir, &holder, chrono::Utc::now(), ttl).await {
                    Ok(true) => {}
                    Ok(false) => {
                        tracing::warn!(directory = %dir, "pull lease lost to another replica");
                        lost.store(true, Ordering::SeqCst);
                        return;
                    }
                    // The database is away: keep trying; the fence stops writes if it lapses.
                    Err(e) => tracing::warn!(directory = %dir, error = %e, "cannot renew the pull lease"),
                }
            }
        })
    }

    /// One pull (a full listing when `full`, else what `plan_pull` says), then the
    /// reconcile, on `run`. The caller holds the lease.
    async fn pull_and_reconcile(&self, mut run: SyncRun, full: bool, lease: &str) -> SyncRun {
        let dir_id = run.directory_id.clone();
        let lock = self.engine.directory_lock(&dir_id);
        let _guard = lock.lock().await;
        let lost = Arc::new(AtomicBool::new(false));
        // Aborted however this ends, even if this task is itself abandoned at shutdown:
        // a renewal that outlived its pull would keep the lease from everyone.
        let _renewal = AbortOnDrop(self.keep_lease(&dir_id, lease, lost.clone()));
        let run_out = self.pull_inner(&mut run, full, lease, lost).await;
        drop(_renewal);
        match run_out {
            Ok(r) => r,
            Err(PullStop::Failed(message)) => self.fail(run, message).await,
            Err(PullStop::Interrupted) => self.interrupted(run).await,
        }
    }

    /// The service stopped mid-pull: what was written stays (each page is one
    /// transaction, with its checkpoint), nothing is swept, the pull stays due, so the
    /// next start (or another replica, once the lease is released) resumes from the
    /// stored cursor. Not a failure of the IdP: no backoff, no error on the directory.
    async fn interrupted(&self, mut run: SyncRun) -> SyncRun {
        tracing::info!(run = %run.id, directory = %run.directory_id, "pull interrupted by shutdown; it resumes at the next start");
        run.state = RunState::Failed;
        run.phase = Phase::Done;
        run.ended_at = Some(chrono::Utc::now());
        run.outcome =
            "interrupted: the service stopped during the pull; nobody was removed, the next start resumes from the stored cursor"
                .into();
        run.error = "interrupted by shutdown".into();
        let _ = self.engine.save(&run).await;
        run
    }

    async fn pull_inner(
        &self,
        run: &mut SyncRun,
        full: bool,
        lease: &str,
        lost: Arc<AtomicBool>,
    ) -> Result<SyncRun, PullStop> {
        let store = &self.engine.store;
        let dir = store.get_directory(&run.directory_id).await.map_err(|e| e.to_string())?;
        if dir.state != State::Active && run.trigger == Trigger::Interval {
            return Err(format!("directory {}", dir.state.name()).into());
        }
        let state = store.pull_state(&dir.id).await.map_err(|e| e.to_string())?;
        let interval =
            pull_interval(dir.sync_interval_secs, self.config.default_interval, self.config.interval_override);
        let failures = state.as_ref().map(|s| s.failures).unwrap_or(0);
        let connector = match self.connectors.build(dir.kind, &dir.config_json) {
            Ok(c) => c,
            Err(e) => return Err(self.pull_failed(&dir, failures, interval, &e).await.into()),
        };
        let mode = if full {
            PullMode::Refresh
        } else {
            plan_pull(
                state.as_ref().and_then(|s| s.cursor.clone()).map(muster_connector::Cursor::new),
                state.as_ref().and_then(|s| s.last_full_listing),
                chrono::Utc::now(),
                self.config.full_listing_every,
            )
        };
        run.phase = Phase::Listing;
        run.processed = 0;
        run.total = 0;
        let _ = self.engine.save(run).await;
        let mut sink = MirrorSink {
            store: store.clone(),
            engine: self.engine.clone(),
            dir: dir.id.clone(),
            holder: lease.to_string(),
            generation: None,
            lost,
            written: PullWrite::default(),
            held: None,
            run: run.clone(),
            last_progress: tokio::time::Instant::now(),
        };
        // A stop cancels the pull wherever it waits (a hanging IdP, a Retry-After); a
        // page being written finishes or rolls back on its own (one transaction).
        let options = PullOptions::default();
        let pulled = tokio::select! {
            r = run_pull(connector.as_ref(), mode, &mut sink, &options) => r,
            _ = self.engine.stopped() => return Err(PullStop::Interrupted),
        };
        let outcome = match pulled {
            Ok(o) => o,
            Err(e) => return Err(self.pull_failed(&dir, failures, interval, &e).await.into()),
        };
        let w = sink.written;
        let held = sink.held.take();
        let waits = if outcome.waits.is_empty() { String::new() } else { format!("; {}", outcome.waits) };
        let pulled = format!(
            "{} {}: {} users in {} pages; mirror: {} users changed, {} removed, {} groups and {} memberships changed{waits}",
            dir.kind.name(),
            listing_kind(&outcome, connector.capabilities().incremental),
            outcome.users,
            outcome.pages,
            w.users_changed,
            w.users_removed,
            w.groups_changed,
            w.memberships_changed
        );
        tracing::info!(directory = %dir.id, run = %run.id, "{pulled}");
        let next = chrono::Utc::now() + chrono::Duration::from_std(interval).unwrap_or(chrono::Duration::hours(1));
        store.pull_ended(&dir.id, true, 0, next).await.map_err(|e| e.to_string())?;
        run.outcome = pulled.clone();
        let pulled = match held {
            Some(suspect) => self.hold_listing(run, suspect, &pulled).await.map_err(|e| e.to_string())?,
            None if outcome.full_listing => {
                // A full listing that looked right supersedes one held earlier.
                self.supersede_held_listing(&dir.id, &run.id).await.map_err(|e| e.to_string())?;
                pulled
            }
            None => pulled,
        };
        let _ = self.engine.save(run).await;

        // Reconcile: Sync now covers everyone; an interval run the users the pull touched.
        let done = if run.trigger == Trigger::SyncNow {
            let head = store.queue_head(&dir.id).await.map_err(|e| e.to_string())?;
            let done = self.engine.execute_noted(run.clone(), Scope::Full { only_org: None }, Some(&pulled)).await;
            if let (Some(seq), RunState::Succeeded | RunState::Held) = (head, done.state) {
                store.delete_queue_through(&dir.id, seq).await.map_err(|e| e.to_string())?;
            }
            done
        } else {
            let entries = store.peek_queue(&dir.id, MAX_RUN_QUEUE).await.map_err(|e| e.to_string())?;
            let seqs: Vec<i64> = entries.iter().map(|e| e.seq).collect();
            let done = self.engine.execute_noted(run.clone(), Scope::Users(entries), Some(&pulled)).await;
            if matches!(done.state, RunState::Succeeded | RunState::Held) && !seqs.is_empty() {
                store.delete_queue(seqs).await.map_err(|e| e.to_string())?;
            }
            done
        };
        Ok(done)
    }

    /// A full listing looked wrong: nothing it left out is removed until someone
    /// approves. The directory's held run keeps it (one run holds a directory's
    /// listing: a later suspect listing replaces the generation it holds). Returns the
    /// outcome note.
    async fn hold_listing(
        &self,
        run: &mut SyncRun,
        suspect: SuspectListing,
        pulled: &str,
    ) -> Result<String, SyncError> {
        let store = &self.engine.store;
        let items: Vec<RunItem> = suspect
            .sample
            .iter()
            .map(|(id, email, name)| RunItem {
                org_id: String::new(),
                user_ref: id.clone(),
                email: email.clone(),
                display_name: name.clone(),
                kind: ItemKind::WouldSweep,
                detail: "not in the latest full listing".into(),
                member_id: String::new(),
            })
            .collect();
        let why = suspect.reasons.join("; ");
        if let Some(mut earlier) = store.held_listing_run(&run.directory_id).await?
            && earlier.id != run.id
        {
            earlier.held_listing = Some(suspect.generation);
            earlier.outcome =
                format!("held: the full listing still looks wrong ({why}); approve to apply the latest one");
            store.replace_sweep_items(&earlier.id, items).await?;
            self.engine.save(&earlier).await?;
            return Ok(format!(
                "{pulled}; the full listing looks wrong ({why}), nothing it left out was removed: it waits in held run {}",
                earlier.id
            ));
        }
        run.held_listing = Some(suspect.generation);
        store.replace_sweep_items(&run.id, items).await?;
        Ok(format!(
            "{pulled}; the full listing looks wrong ({why}): {} users it left out were not removed; approve the run to apply it",
            suspect.stale_users
        ))
    }

    async fn supersede_held_listing(&self, dir: &str, run_id: &str) -> Result<(), SyncError> {
        let store = &self.engine.store;
        if let Some(mut earlier) = store.held_listing_run(dir).await?
            && earlier.id != run_id
            && store.transition_run(&earlier.id, RunState::Held, RunState::Rejected, "system:superseded").await?
        {
            earlier.state = RunState::Rejected;
            earlier.decided_by = "system:superseded".into();
            earlier.held_listing = None;
            earlier.ended_at = Some(chrono::Utc::now());
            earlier.outcome = format!("superseded: run {run_id}'s full listing looked right and was applied");
            self.engine.save(&earlier).await?;
        }
        Ok(())
    }

    /// Records a failed pull: the message on the directory, the retry scheduled.
    async fn pull_failed(&self, dir: &Directory, failures: u32, interval: Duration, e: &ConnectorError) -> String {
        let failures = failures.saturating_add(1);
        let wait = retry_delay(failures, self.config.retry_min, self.config.retry_max, interval);
        let message = format!("{} connector: {e}", dir.kind.name());
        tracing::warn!(directory = %dir.id, failures, retry_in_ms = wait.as_millis() as u64, error = %message, "pull failed; nobody removed");
        let next = chrono::Utc::now() + chrono::Duration::from_std(wait).unwrap_or(chrono::Duration::minutes(15));
        if let Err(err) = self.engine.store.pull_ended(&dir.id, false, failures, next).await {
            tracing::warn!(directory = %dir.id, error = %err, "cannot record the failed pull");
        }
        message
    }
}

/// How a pull ended early.
enum PullStop {
    /// The IdP, the connector or the database refused: the run fails, nobody removed.
    Failed(String),
    /// The service is stopping: the pull resumes at the next start.
    Interrupted,
}

impl From<String> for PullStop {
    fn from(message: String) -> Self {
        PullStop::Failed(message)
    }
}

/// A task aborted when this is dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
