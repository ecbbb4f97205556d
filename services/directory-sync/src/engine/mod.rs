//! The sync engine: runs that reconcile a parent's directories into every scim-mode
//! org of the parent. A parent's directories decide together (see
//! `domain::evidence`): for each org, each person is decided from everything the
//! parent's directories say of them, through policy in batches, and applied through
//! membership with an idempotency key per batch. Removals (and demotions out of the
//! guardian role) wait for the end of the run and pass the mass-removal brake, which
//! counts over a rolling window across runs. A dependency that does not answer makes
//! the run wait with backoff — it is never read as "no users".
//!
//! A preview is the same pass with membership's dry run in place of Apply
//! (`preview.rs`), so what it shows is what the run that follows does.

mod people;
mod preview;
mod reconcile;

pub use preview::Acting;

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use muster_proto::common::v1 as common;
use tokio::sync::{Mutex, watch};

use crate::domain::directory::{Directory, State};
use crate::domain::run::{ItemKind, Phase, RunState, SyncRun, Trigger};
use crate::error::SyncError;
use crate::store::{DieselStore, QueueEntry, SyncStore, UserFilter};
use crate::upstream::{OrgTarget, Upstreams};

use people::{MirrorRef, Seed};
use reconcile::{Mode, OrgPass};

/// How the engine paces itself.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// People per Decide/Apply batch (at most 10,000).
    pub batch_size: usize,
    /// First wait after a dependency failed to answer.
    pub backoff_min: Duration,
    /// Longest wait between attempts.
    pub backoff_max: Duration,
    /// This replica (`name#boot`), recorded as the owner of the runs it executes.
    pub replica: String,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            batch_size: 1000,
            backoff_min: Duration::from_millis(200),
            backoff_max: Duration::from_secs(30),
            replica: String::new(),
        }
    }
}

/// What a run reconciles.
#[derive(Clone, Debug)]
pub enum Scope {
    /// The users of the run's directory that a push or pull touched.
    Users(Vec<QueueEntry>),
    /// Every member of each org and every user of the parent's directories; of one org only when set.
    Full {
        /// Only this org.
        only_org: Option<String>,
    },
}

/// How long a parent's reconcile lease lasts unless renewed (renewed every third).
const PARENT_LEASE_TTL: Duration = Duration::from_secs(60);

/// A parent's reconcile lease, held by one run.
pub(crate) struct ParentLease {
    store: DieselStore,
    parent: String,
    holder: String,
    renewal: tokio::task::JoinHandle<()>,
}

impl ParentLease {
    /// Gives it up.
    pub(crate) async fn release(self) {
        self.renewal.abort();
        if let Err(e) = self.store.release_parent_lease(&self.parent, &self.holder).await {
            // It lapses by itself; the next run of the parent waits at most its TTL.
            tracing::warn!(parent = %self.parent, error = %e, "cannot release the parent's reconcile lease");
        }
    }
}

/// The sync engine, shared by the workers and the API.
pub struct Engine {
    pub(crate) store: DieselStore,
    pub(crate) up: Arc<dyn Upstreams>,
    pub(crate) config: EngineConfig,
    locks: std::sync::Mutex<HashMap<String, Arc<Mutex<()>>>>,
    shutdown: watch::Receiver<bool>,
    runs_tx: watch::Sender<u64>,
    /// The Sync now running for each directory in this replica (directory -> run id).
    pub(crate) sync_nows: std::sync::Mutex<HashMap<String, String>>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine").field("config", &self.config).finish()
    }
}

fn is_scim(t: &OrgTarget) -> bool {
    t.settings.mode == muster_proto::policy::v1::ProvisioningMode::Scim as i32
}

fn mirror_seed(dir: &str, e: QueueEntry) -> Seed {
    Seed::Mirror(MirrorRef {
        directory_id: dir.to_string(),
        user_id: e.user_id,
        email: e.email.to_lowercase(),
        display_name: e.display_name,
    })
}

impl Engine {
    /// An engine over `store` and `up`, stopping its waits when `shutdown` turns true.
    pub fn new(
        store: DieselStore,
        up: Arc<dyn Upstreams>,
        config: EngineConfig,
        shutdown: watch::Receiver<bool>,
    ) -> Self {
        Self {
            store,
            up,
            config,
            locks: std::sync::Mutex::new(HashMap::new()),
            shutdown,
            runs_tx: watch::channel(0).0,
            sync_nows: std::sync::Mutex::new(HashMap::new()),
        }
    }

    /// Wakes when any run is saved.
    pub fn run_changes(&self) -> watch::Receiver<u64> {
        self.runs_tx.subscribe()
    }

    pub(crate) fn runs_changed(&self) {
        self.runs_tx.send_modify(|n| *n = n.wrapping_add(1));
    }

    pub(crate) fn is_shutting_down(&self) -> bool {
        *self.shutdown.borrow()
    }

    /// Completes once the service is stopping.
    pub(crate) async fn stopped(&self) {
        let mut stop = self.shutdown.clone();
        let _ = stop.wait_for(|s| *s).await;
    }

    /// One run at a time per directory in this process: runs of one directory never
    /// interleave their batches.
    pub(crate) fn directory_lock(&self, directory: &str) -> Arc<Mutex<()>> {
        let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
        locks.entry(directory.to_string()).or_default().clone()
    }

    pub(crate) async fn save(&self, run: &SyncRun) -> Result<(), SyncError> {
        self.store.save_run(run.clone()).await?;
        self.runs_changed();
        Ok(())
    }

    /// A new run row, running.
    pub async fn start_run(&self, directory: &str, trigger: Trigger, actor: &str) -> Result<SyncRun, SyncError> {
        // A stopping service takes no new work; the caller retries on another replica.
        if self.is_shutting_down() {
            return Err(SyncError::ShuttingDown);
        }
        let mut run = SyncRun::new(uuid::Uuid::now_v7().to_string(), directory, trigger, actor);
        run.owner = self.config.replica.clone();
        self.store.create_run(run.clone()).await?;
        self.runs_changed();
        Ok(run)
    }

    /// Runs `call` until it answers. While a dependency (or the database) does not
    /// answer, the run records what it waits for and retries with backoff; every other
    /// error is returned. Shutdown ends the wait.
    pub(crate) async fn patient<T, F, Fut>(&self, run: &mut SyncRun, mut call: F) -> Result<T, SyncError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, SyncError>>,
    {
        let mut backoff = self.config.backoff_min;
        loop {
            // Every call to policy or membership is a batch boundary: a stopping service
            // ends the run here (it is retried from the queue), not after the whole directory.
            if self.is_shutting_down() {
                return Err(SyncError::ShuttingDown);
            }
            match call().await {
                Ok(v) => {
                    if !run.error.is_empty() {
                        run.error.clear();
                        let _ = self.store.set_last_error(&run.directory_id, "").await;
                        self.save(run).await?;
                    }
                    return Ok(v);
                }
                Err(e) if e.is_transient() => {
                    let message = format!("waiting: {e}");
                    if run.error != message {
                        tracing::warn!(run = %run.id, directory = %run.directory_id, error = %e, "dependency unavailable; the run waits");
                        run.error = message.clone();
                        // Best effort: the database may be the thing that is away.
                        let _ = self.store.set_last_error(&run.directory_id, &message).await;
                    }
                    // Saved on every attempt: the heartbeat tells other replicas this run lives.
                    let _ = self.save(run).await;
                    let mut stop = self.shutdown.clone();
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = stop.wait_for(|s| *s) => return Err(SyncError::ShuttingDown),
                    }
                    backoff = (backoff * 2).min(self.config.backoff_max);
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// The orgs of a parent that its directories drive (scim mode).
    pub(crate) async fn targets(&self, run: &mut SyncRun, parent_id: &str) -> Result<Vec<OrgTarget>, SyncError> {
        let parent = parent_id.to_string();
        let all = self.patient(run, || self.up.orgs_of_parent(&parent)).await?;
        Ok(all.into_iter().filter(is_scim).collect())
    }

    /// Runs `run` over `scope` to its end: succeeded, held, or failed.
    pub async fn execute(&self, run: SyncRun, scope: Scope) -> SyncRun {
        self.execute_noted(run, scope, None).await
    }

    /// Like [`Engine::execute`], with `note` (what a pull did) leading the outcome.
    pub async fn execute_noted(&self, run: SyncRun, scope: Scope, note: Option<&str>) -> SyncRun {
        self.finish_run(run, scope, note, false).await
    }

    /// Runs and records the end. `approved`: an administrator approved what this run
    /// removes (a held listing), so the brake does not hold it again.
    async fn finish_run(&self, mut run: SyncRun, scope: Scope, note: Option<&str>, approved: bool) -> SyncRun {
        let result = match self.store.get_directory(&run.directory_id).await {
            Ok(dir) => match self.parent_lease(&mut run, &dir.parent_id).await {
                Ok(lease) => {
                    let r = self.execute_inner(&mut run, scope, approved).await;
                    lease.release().await;
                    r
                }
                Err(e) => Err(e),
            },
            Err(e) => Err(e),
        };
        self.end(&mut run, result, note).await;
        run
    }

    /// Waits for the parent's reconcile lease (one run at a time reconciles a parent,
    /// in any replica: its directories decide together), keeping it while the run goes.
    pub(crate) async fn parent_lease(&self, run: &mut SyncRun, parent: &str) -> Result<ParentLease, SyncError> {
        let holder = format!("run/{}", run.id);
        let mut said = false;
        loop {
            if self.store.take_parent_lease(parent, &holder, PARENT_LEASE_TTL).await? {
                break;
            }
            if !said {
                said = true;
                run.outcome = "waiting for another run of the parent's directories to end".into();
                let _ = self.save(run).await;
            }
            let mut stop = self.shutdown.clone();
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(50)) => {}
                _ = stop.wait_for(|s| *s) => return Err(SyncError::ShuttingDown),
            }
        }
        let (store, p, h) = (self.store.clone(), parent.to_string(), holder.clone());
        let renewal = tokio::spawn(async move {
            loop {
                tokio::time::sleep(PARENT_LEASE_TTL / 3).await;
                if let Err(e) = store.take_parent_lease(&p, &h, PARENT_LEASE_TTL).await {
                    tracing::warn!(parent = %p, error = %e, "cannot renew the parent's reconcile lease");
                }
            }
        });
        Ok(ParentLease { store: self.store.clone(), parent: parent.to_string(), holder, renewal })
    }

    async fn end(&self, run: &mut SyncRun, result: Result<(), SyncError>, note: Option<&str>) {
        run.ended_at = Some(chrono::Utc::now());
        run.phase = Phase::Done;
        match result {
            Ok(()) => {
                let held = run.orgs.iter().any(|o| o.brake_held) || run.held_listing.is_some();
                run.state = if held { RunState::Held } else { RunState::Succeeded };
                if held {
                    run.ended_at = None;
                }
                run.outcome = match note {
                    Some(n) => format!("{n}; {}", run.summary()),
                    None => run.summary(),
                };
                run.error.clear();
                let _ = self.store.set_last_error(&run.directory_id, "").await;
            }
            Err(e) => {
                run.state = RunState::Failed;
                run.outcome = match &e {
                    SyncError::ShuttingDown => "interrupted: the service stopped; queued changes are retried".into(),
                    _ => format!("failed: {}", run.summary()),
                };
                if let Some(n) = note {
                    run.outcome = format!("{n}; {}", run.outcome);
                }
                run.error = e.to_string();
                tracing::warn!(run = %run.id, directory = %run.directory_id, error = %e, "sync run failed");
                let _ = self.store.set_last_error(&run.directory_id, &run.error).await;
                // A failed run holds nothing: the next run decides its removals again.
                let _ = self.store.release_holds(&run.id).await;
            }
        }
        if let Err(e) = self.save(run).await {
            tracing::error!(run = %run.id, error = %e, "cannot record the end of a run");
        }
        tracing::info!(run = %run.id, directory = %run.directory_id, state = run.state.name(), outcome = %run.outcome, "sync run ended");
    }

    fn decide_trigger(run: &SyncRun) -> common::Trigger {
        match run.trigger {
            Trigger::SyncNow => common::Trigger::SyncNow,
            _ => common::Trigger::DirectorySync,
        }
    }

    async fn execute_inner(&self, run: &mut SyncRun, scope: Scope, approved: bool) -> Result<(), SyncError> {
        let dir = self.store.get_directory(&run.directory_id).await?;
        let dirs = self.store.parent_directories(&dir.parent_id).await?;
        let mut targets = self.targets(run, &dir.parent_id).await?;
        if let Scope::Full { only_org: Some(org) } = &scope {
            targets.retain(|t| &t.org_id == org);
        }
        let trigger = Self::decide_trigger(run);
        run.phase = Phase::Reconciling;
        match scope {
            Scope::Users(entries) => {
                let mut seen = std::collections::HashSet::new();
                let seeds: Vec<Seed> = entries
                    .into_iter()
                    .filter(|e| seen.insert(e.user_id.clone()))
                    .map(|e| mirror_seed(&dir.id, e))
                    .collect();
                run.total = (seeds.len() * targets.len()) as i64;
                self.save(run).await?;
                for t in targets {
                    run.org_mut(&t.org_id);
                    let mut pass = OrgPass::new(t, trigger, None, dir.id.clone(), dir.brake, dirs.clone(), Mode::Live);
                    for chunk in seeds.chunks(self.config.batch_size.max(1)) {
                        let people = self.people(run, &pass.org.org_id, &dirs, chunk.to_vec(), false).await?;
                        self.handle(run, &mut pass, people, chunk.len()).await?;
                    }
                    self.settle(run, &mut pass, approved).await?;
                }
            }
            Scope::Full { .. } => {
                let mut total = 0i64;
                for d in dirs.iter().filter(|d| d.state != State::Leaving) {
                    total += self.store.mirror_counts(&d.id).await?.0 * targets.len() as i64;
                }
                for t in &targets {
                    let org = t.org_id.clone();
                    total += self.patient(run, || self.up.member_count(&org)).await?;
                }
                run.total = total;
                self.save(run).await?;
                for t in targets {
                    run.org_mut(&t.org_id);
                    let org = t.org_id.clone();
                    let mut pass = OrgPass::new(t, trigger, None, dir.id.clone(), dir.brake, dirs.clone(), Mode::Live);
                    self.full_passes(run, &mut pass).await?;
                    self.settle(run, &mut pass, approved).await?;
                    if run.trigger == Trigger::SyncNow {
                        let actor = common::Actor { kind: Some(common::actor::Kind::SyncRunId(run.id.clone())) };
                        let retried = self.patient(run, || self.up.retry_pending(&org, actor.clone())).await?;
                        let o = run.org_mut(&org);
                        o.counts.created += retried.activated;
                        o.counts.pending_seat = o.counts.pending_seat.max(retried.still_pending);
                        self.save(run).await?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Every member of the pass's org, then every user of the parent's directories who
    /// is not one: the whole parent, as a full run and a preview see it.
    pub(crate) async fn full_passes(&self, run: &mut SyncRun, pass: &mut OrgPass) -> Result<(), SyncError> {
        let org = pass.org.org_id.clone();
        let dirs = pass.dirs.clone();
        let mut token = String::new();
        loop {
            let t = token.clone();
            let (page, next) = self.patient(run, || self.up.list_members(&org, &t)).await?;
            pass.saw_members(&page);
            let n = page.len();
            let seeds = page.into_iter().map(|m| Seed::Member(Box::new(m))).collect();
            let people = self.people(run, &org, &dirs, seeds, false).await?;
            self.handle(run, pass, people, n).await?;
            if next.is_empty() {
                break;
            }
            token = next;
        }
        // A leaving directory assigns nobody: its users are only ever seen through a member.
        for d in dirs.iter().filter(|d| d.state != State::Leaving) {
            let mut after: Option<String> = None;
            loop {
                let page = self
                    .store
                    .list_users(&d.id, UserFilter::default(), after.clone(), self.config.batch_size.max(1))
                    .await?;
                let seeds = page
                    .items
                    .into_iter()
                    .map(|u| {
                        Seed::Mirror(MirrorRef {
                            directory_id: d.id.clone(),
                            email: u.email.clone().unwrap_or_default(),
                            display_name: u.display_name.clone(),
                            user_id: u.id,
                        })
                    })
                    .collect::<Vec<_>>();
                let n = seeds.len();
                let people = self.people(run, &org, &dirs, seeds, true).await?;
                self.handle(run, pass, people, n).await?;
                match page.next_after {
                    Some(a) => after = Some(a),
                    None => break,
                }
            }
        }
        Ok(())
    }

    /// Applies what a held run holds, each person re-decided first from the parent's
    /// directories as they are now (someone re-assigned meanwhile stays), bypassing
    /// the brake; a held listing is swept first.
    pub async fn release(&self, mut run: SyncRun) -> SyncRun {
        // Whoever applies an approval runs it now.
        run.owner = self.config.replica.clone();
        if let Err(e) = self.store.set_run_owner(&run.id, &run.owner).await {
            tracing::warn!(run = %run.id, error = %e, "cannot record the run's replica");
        }
        let result = match self.store.get_directory(&run.directory_id).await {
            Ok(dir) => match self.parent_lease(&mut run, &dir.parent_id).await {
                Ok(lease) => {
                    let r = self.release_inner(&mut run).await;
                    lease.release().await;
                    r
                }
                Err(e) => Err(e),
            },
            // The run's directory is gone: its held people are re-decided all the same.
            Err(SyncError::NotFound { .. }) => self.release_inner(&mut run).await,
            Err(e) => Err(e),
        };
        let _ = self.store.release_holds(&run.id).await;
        run.ended_at = Some(chrono::Utc::now());
        run.phase = Phase::Done;
        match result {
            Ok(()) => {
                run.state = RunState::Succeeded;
                run.held_listing = None;
                for o in &mut run.orgs {
                    o.brake_held = false;
                }
                run.outcome = format!("approved by {}: {}", run.decided_by, run.summary());
            }
            Err(e) => {
                run.state = RunState::Failed;
                run.error = e.to_string();
                run.outcome = format!("approved by {}, then failed: {}", run.decided_by, run.summary());
            }
        }
        if let Err(e) = self.save(&run).await {
            tracing::error!(run = %run.id, error = %e, "cannot record a released run");
        }
        run
    }

    async fn release_inner(&self, run: &mut SyncRun) -> Result<(), SyncError> {
        if let Some(generation) = run.held_listing {
            self.release_listing(run, generation).await?;
        }
        let (items, _) = self.store.run_items(&run.id, Some(ItemKind::WouldRemove), usize::MAX >> 1).await?;
        let mut by_org: HashMap<String, Vec<String>> = HashMap::new();
        for it in items.into_iter().filter(|i| !i.member_id.is_empty()) {
            by_org.entry(it.org_id).or_default().push(it.member_id);
        }
        for (org_id, mut member_ids) in by_org {
            member_ids.sort();
            member_ids.dedup();
            let (org, _) = self.patient(run, || self.up.org(&org_id)).await?;
            let Some(target) = self.targets(run, &org.parent_id).await?.into_iter().find(|t| t.org_id == org_id) else {
                tracing::warn!(run = %run.id, org = %org_id, "held org is no longer in scim mode; nobody removed");
                continue;
            };
            let dirs = self.store.parent_directories(&org.parent_id).await?;
            run.phase = Phase::Removing;
            let mut pass = OrgPass::new(
                target,
                common::Trigger::DirectorySync,
                None,
                run.directory_id.clone(),
                Default::default(),
                dirs.clone(),
                Mode::Live,
            );
            for chunk in member_ids.chunks(self.config.batch_size.max(1)) {
                let mut seeds = Vec::new();
                for id in chunk {
                    let (o, i) = (org_id.clone(), id.clone());
                    if let Some(m) = self.patient(run, || self.up.member(&o, &i)).await? {
                        seeds.push(Seed::Member(Box::new(m)));
                    }
                }
                let o = run.org_mut(&org_id);
                o.counts.held = (o.counts.held - chunk.len() as i64).max(0);
                // Re-decided now: someone re-assigned since the run was held stays.
                let n = seeds.len();
                let people = self.people(run, &org_id, &dirs, seeds, false).await?;
                self.handle(run, &mut pass, people, n).await?;
            }
            self.settle(run, &mut pass, true).await?;
            self.save(run).await?;
        }
        Ok(())
    }

    /// Applies a held listing: sweeps what it left out (under the pull lease, as a pull
    /// writes), then reconciles the users that touched, without holding them again.
    async fn release_listing(&self, run: &mut SyncRun, generation: i64) -> Result<(), SyncError> {
        let dir = run.directory_id.clone();
        let holder = format!("approval/{}", run.id);
        let ttl = Duration::from_secs(60);
        let give_up = tokio::time::Instant::now() + ttl * 2;
        while !self.store.take_lease(&dir, &holder, chrono::Utc::now(), ttl).await? {
            if tokio::time::Instant::now() > give_up {
                return Err(SyncError::FailedPrecondition {
                    rule: "pull_in_progress",
                    message: format!("directory {dir} is being pulled; approve again when the pull ends"),
                });
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let swept = self.store.sweep_listing(&dir, &holder, generation).await;
        let _ = self.store.release_lease(&dir, &holder).await;
        let swept = swept?;
        tracing::info!(run = %run.id, directory = %dir, users = swept.users_removed, "held listing applied");
        run.held_listing = None;
        loop {
            let entries = self.store.peek_queue(&dir, self.config.batch_size.max(1)).await?;
            if entries.is_empty() {
                return Ok(());
            }
            let seqs: Vec<i64> = entries.iter().map(|e| e.seq).collect();
            self.execute_inner(run, Scope::Users(entries), true).await?;
            self.store.delete_queue(seqs).await?;
        }
    }

    /// Records the settings versions of the parent's orgs as reconciled for a new
    /// directory: creating a directory is not a settings change. Best effort (the
    /// worker records a first sighting without a run anyway).
    pub(crate) async fn watch_parent_settings(&self, d: &Directory) {
        match self.up.orgs_of_parent(&d.parent_id).await {
            Ok(orgs) => {
                for o in orgs {
                    if let Err(e) = self.store.set_watched_version(&d.id, &o.org_id, o.settings_version).await {
                        tracing::warn!(directory = %d.id, error = %e, "cannot record an org's settings version");
                    }
                }
            }
            Err(e) => tracing::warn!(directory = %d.id, error = %e, "cannot read the parent's orgs yet"),
        }
    }

    /// Ends the held runs of a directory that is going away: nobody they hold is
    /// removed, and their orgs' removals are free to be decided (and held) again.
    pub(crate) async fn drop_holds_of(&self, directory: &str, actor: &str) -> Result<(), SyncError> {
        for id in self.store.held_run_ids(directory).await? {
            if self.store.transition_run(&id, RunState::Held, RunState::Rejected, actor).await? {
                let mut run = self.store.get_run(&id).await?;
                run.ended_at = Some(chrono::Utc::now());
                run.outcome =
                    format!("ended: its directory was deleted; nobody it held was removed; {}", run.summary());
                self.save(&run).await?;
            }
            self.store.release_holds(&id).await?;
        }
        Ok(())
    }

    /// Whether a directory reconciles now.
    pub(crate) async fn is_active(&self, directory: &str) -> Result<bool, SyncError> {
        match self.store.get_directory(directory).await {
            Ok(d) => Ok(d.state == State::Active),
            Err(SyncError::NotFound { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }
}
