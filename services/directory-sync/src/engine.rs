//! The sync engine: runs that reconcile the mirror into every directory-driven org of
//! a directory's parent. For each org in scim mode it looks up the people's current
//! memberships, asks policy to decide in batches, and applies the decisions through
//! membership with an idempotency key per batch. Removals are collected per org and
//! checked against the mass-removal brake before any is applied. A dependency that
//! does not answer makes the run wait with backoff — it is never read as "no users".

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use muster_proto::common::v1 as common;
use muster_proto::membership::v1 as mpb;
use muster_proto::policy::v1 as ppb;
use tokio::sync::{Mutex, watch};

use crate::domain::directory::{Directory, State};
use crate::domain::mirror::{apply_key, member_ref};
use crate::domain::run::{Counts, ItemKind, RunItem, RunState, SyncRun, Trigger};
use crate::error::SyncError;
use crate::store::{DieselStore, MirrorUser, QueueEntry, SyncStore, UserFilter};
use crate::upstream::{OrgTarget, Upstreams};

/// How the engine paces itself.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// People per Decide/Apply batch (at most 10,000).
    pub batch_size: usize,
    /// First wait after a dependency failed to answer.
    pub backoff_min: Duration,
    /// Longest wait between attempts.
    pub backoff_max: Duration,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self { batch_size: 1000, backoff_min: Duration::from_millis(200), backoff_max: Duration::from_secs(30) }
    }
}

/// What a run reconciles.
#[derive(Clone, Debug)]
pub enum Scope {
    /// The users a push touched.
    Users(Vec<QueueEntry>),
    /// Every user of the directory and every member outside it; of one org only when set.
    Full {
        /// Only this org.
        only_org: Option<String>,
    },
}

/// A person to decide for, with how membership knows them.
#[derive(Clone, Debug)]
pub(crate) struct Person {
    pub user_ref: String,
    pub identity: mpb::Identity,
    pub assigned: bool,
    pub groups: Vec<common::GroupRef>,
    /// Already known (members outside the mirror come with their membership).
    pub known_current: Option<mpb::Member>,
}

/// A person with their decision.
#[derive(Clone, Debug)]
pub(crate) struct Decided {
    pub person: Person,
    pub current: Option<mpb::Member>,
    pub decision: ppb::Decision,
}

/// The sync engine, shared by the workers and the API.
pub struct Engine {
    pub(crate) store: DieselStore,
    pub(crate) up: Arc<dyn Upstreams>,
    pub(crate) config: EngineConfig,
    locks: std::sync::Mutex<HashMap<String, Arc<Mutex<()>>>>,
    shutdown: watch::Receiver<bool>,
    runs_tx: watch::Sender<u64>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine").field("config", &self.config).finish()
    }
}

fn actor_run(run_id: &str) -> common::Actor {
    common::Actor { kind: Some(common::actor::Kind::SyncRunId(run_id.to_string())) }
}

fn is_scim(settings: &ppb::Settings) -> bool {
    settings.mode == ppb::ProvisioningMode::Scim as i32
}

fn current_of(m: &mpb::Member) -> ppb::CurrentMembership {
    ppb::CurrentMembership { role: m.role.clone(), seat_tier: m.seat_tier.clone(), source: m.source }
}

impl Engine {
    /// An engine over `store` and `up`, stopping its waits when `shutdown` turns true.
    pub fn new(
        store: DieselStore,
        up: Arc<dyn Upstreams>,
        config: EngineConfig,
        shutdown: watch::Receiver<bool>,
    ) -> Self {
        Self { store, up, config, locks: std::sync::Mutex::new(HashMap::new()), shutdown, runs_tx: watch::channel(0).0 }
    }

    /// Wakes when any run is saved.
    pub fn run_changes(&self) -> watch::Receiver<u64> {
        self.runs_tx.subscribe()
    }

    pub(crate) fn is_shutting_down(&self) -> bool {
        *self.shutdown.borrow()
    }

    /// One run at a time per directory in this process: runs of one directory never
    /// interleave their batches.
    pub(crate) fn directory_lock(&self, directory: &str) -> Arc<Mutex<()>> {
        let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
        locks.entry(directory.to_string()).or_default().clone()
    }

    pub(crate) async fn save(&self, run: &SyncRun) -> Result<(), SyncError> {
        self.store.save_run(run.clone()).await?;
        self.runs_tx.send_modify(|n| *n = n.wrapping_add(1));
        Ok(())
    }

    /// A new run row, running.
    pub async fn start_run(&self, directory: &str, trigger: Trigger, actor: &str) -> Result<SyncRun, SyncError> {
        let run = SyncRun {
            id: uuid::Uuid::now_v7().to_string(),
            directory_id: directory.to_string(),
            trigger,
            state: RunState::Running,
            orgs: Vec::new(),
            outcome: "running".into(),
            error: String::new(),
            processed: 0,
            total: 0,
            actor: actor.to_string(),
            decided_by: String::new(),
            started_at: chrono::Utc::now(),
            ended_at: None,
        };
        self.store.create_run(run.clone()).await?;
        self.runs_tx.send_modify(|n| *n = n.wrapping_add(1));
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

    /// The orgs of the directory's parent that the directory drives (scim mode).
    pub(crate) async fn targets(&self, run: &mut SyncRun, dir: &Directory) -> Result<Vec<OrgTarget>, SyncError> {
        let parent = dir.parent_id.clone();
        let all = self.patient(run, || self.up.orgs_of_parent(&parent)).await?;
        Ok(all.into_iter().filter(|t| is_scim(&t.settings)).collect())
    }

    /// People for mirror users, with their groups.
    pub(crate) async fn people_of_users(&self, dir: &str, users: Vec<MirrorUser>) -> Result<Vec<Person>, SyncError> {
        // A directory being deleted assigns nobody: its members leave through this run.
        let leaving = self.store.get_directory(dir).await?.state == State::Leaving;
        let ids: Vec<String> = users.iter().map(|u| u.id.clone()).collect();
        let groups = if leaving { HashMap::new() } else { self.store.groups_of(dir, ids).await? };
        Ok(users
            .into_iter()
            .map(|u| {
                let groups = groups
                    .get(&u.id)
                    .into_iter()
                    .flatten()
                    .map(|(id, name)| common::GroupRef { id: id.clone(), name: name.clone() })
                    .collect();
                Person {
                    user_ref: u.id.clone(),
                    identity: mpb::Identity {
                        directory_id: dir.to_string(),
                        external_id: u.id.clone(),
                        email: u.email.clone().unwrap_or_default(),
                        display_name: u.display_name.clone(),
                    },
                    assigned: u.active && !leaving,
                    groups,
                    known_current: None,
                }
            })
            .collect())
    }

    /// A member who is not in the mirror: not assigned, and the directory is authoritative.
    pub(crate) fn person_of_member(m: &mpb::Member) -> Person {
        let user = m.user.clone().unwrap_or_default();
        Person {
            user_ref: member_ref(&m.id),
            identity: mpb::Identity {
                directory_id: m.directory_id.clone(),
                external_id: String::new(),
                email: user.email,
                display_name: user.display_name,
            },
            assigned: false,
            groups: Vec::new(),
            known_current: Some(m.clone()),
        }
    }

    /// Looks up current memberships (when not known) and decides, for one org.
    pub(crate) async fn decide_batch(
        &self,
        run: &mut SyncRun,
        org_id: &str,
        trigger: common::Trigger,
        people: Vec<Person>,
        proposed: Option<ppb::SettingsInput>,
    ) -> Result<Vec<Decided>, SyncError> {
        if people.is_empty() {
            return Ok(Vec::new());
        }
        let unknown: Vec<usize> = (0..people.len()).filter(|i| people[*i].known_current.is_none()).collect();
        let mut current: Vec<Option<mpb::Member>> = people.iter().map(|p| p.known_current.clone()).collect();
        if !unknown.is_empty() {
            let identities: Vec<mpb::Identity> = unknown.iter().map(|i| people[*i].identity.clone()).collect();
            let found = self.patient(run, || self.up.lookup_members(org_id, identities.clone())).await?;
            for (i, m) in unknown.into_iter().zip(found) {
                current[i] = m;
            }
        }
        let subjects: Vec<ppb::Subject> = people
            .iter()
            .zip(&current)
            .map(|(p, c)| ppb::Subject {
                user_ref: p.user_ref.clone(),
                assigned: p.assigned,
                groups: p.groups.clone(),
                current: c.as_ref().map(current_of),
            })
            .collect();
        let request = ppb::DecideRequest {
            org_id: org_id.to_string(),
            trigger: trigger as i32,
            subjects,
            proposed_settings: proposed,
        };
        let decisions = self.patient(run, || self.up.decide(request.clone())).await?;
        if decisions.len() != people.len() {
            return Err(SyncError::Upstream {
                service: "policy",
                status: tonic::Status::internal(format!(
                    "Decide answered {} of {} subjects",
                    decisions.len(),
                    people.len()
                )),
            });
        }
        Ok(people
            .into_iter()
            .zip(current)
            .zip(decisions)
            .map(|((person, current), decision)| Decided { person, current, decision })
            .collect())
    }

    fn desired(d: &Decided) -> mpb::DesiredMember {
        mpb::DesiredMember {
            identity: Some(d.person.identity.clone()),
            action: d.decision.action,
            role: d.decision.role.clone(),
            seat_tier: d.decision.seat_tier.clone(),
            reasons: d.decision.reasons.clone(),
        }
    }

    /// Applies one batch through membership and counts what happened.
    async fn apply_batch(
        &self,
        run: &mut SyncRun,
        dir: &str,
        org_id: &str,
        phase: &str,
        batch_no: u64,
        batch: &[Decided],
    ) -> Result<(), SyncError> {
        if batch.is_empty() {
            return Ok(());
        }
        let request = mpb::ApplyRequest {
            org_id: org_id.to_string(),
            idempotency_key: apply_key(&run.id, org_id, phase, batch_no),
            directory_id: dir.to_string(),
            actor: Some(actor_run(&run.id)),
            items: batch.iter().map(Self::desired).collect(),
        };
        let response = self.patient(run, || self.up.apply(request.clone())).await?;
        let mut counts = Counts::default();
        let mut items = Vec::new();
        for (i, d) in batch.iter().enumerate() {
            let Some(r) = response.results.get(i) else {
                counts.errors += 1;
                items.push(item(org_id, d, ItemKind::Error, "membership gave no result for this person".into()));
                continue;
            };
            let action = ppb::Action::try_from(d.decision.action).unwrap_or(ppb::Action::Unspecified);
            match mpb::ApplyOutcome::try_from(r.outcome).unwrap_or(mpb::ApplyOutcome::Unspecified) {
                mpb::ApplyOutcome::Applied => match action {
                    ppb::Action::Provision => counts.created += 1,
                    ppb::Action::Remove => counts.removed += 1,
                    _ => counts.updated += 1,
                },
                mpb::ApplyOutcome::Unchanged => counts.unchanged += 1,
                mpb::ApplyOutcome::PendingSeat => counts.pending_seat += 1,
                mpb::ApplyOutcome::HeldGuardian => {
                    counts.held += 1;
                    items.push(item(org_id, d, ItemKind::HeldGuardian, d.decision.reasons.join("; ")));
                }
                mpb::ApplyOutcome::Error | mpb::ApplyOutcome::Unspecified => {
                    counts.errors += 1;
                    items.push(item(org_id, d, ItemKind::Error, r.error.clone()));
                }
            }
        }
        run.org_mut(org_id).counts.add(&counts);
        self.store.add_items(&run.id, items).await?;
        Ok(())
    }

    /// Decides a batch for an org, applies what is not a removal, and returns the removals.
    async fn reconcile_batch(
        &self,
        run: &mut SyncRun,
        dir: &str,
        org_id: &str,
        trigger: common::Trigger,
        people: Vec<Person>,
        batch_no: u64,
    ) -> Result<Vec<Decided>, SyncError> {
        let n = people.len() as i64;
        let decided = self.decide_batch(run, org_id, trigger, people, None).await?;
        let mut apply = Vec::new();
        let mut removals = Vec::new();
        let mut unchanged = 0;
        for d in decided {
            match ppb::Action::try_from(d.decision.action).unwrap_or(ppb::Action::Unspecified) {
                ppb::Action::Provision | ppb::Action::Update => apply.push(d),
                ppb::Action::Remove => removals.push(d),
                _ => unchanged += 1,
            }
        }
        run.org_mut(org_id).counts.unchanged += unchanged;
        self.apply_batch(run, dir, org_id, "apply", batch_no, &apply).await?;
        run.processed += n;
        self.save(run).await?;
        Ok(removals)
    }

    /// How many members an org has (pages through them; used only when the brake may hold).
    async fn member_count(&self, run: &mut SyncRun, org_id: &str) -> Result<i64, SyncError> {
        let mut token = String::new();
        let mut n = 0i64;
        loop {
            let t = token.clone();
            let (members, next) = self.patient(run, || self.up.list_members(org_id, &t)).await?;
            n += members.len() as i64;
            if next.is_empty() {
                return Ok(n);
            }
            token = next;
        }
    }

    /// Applies an org's removals, unless the brake holds them.
    async fn settle_removals(
        &self,
        run: &mut SyncRun,
        dir: &Directory,
        org_id: &str,
        removals: Vec<Decided>,
        known_members: Option<i64>,
    ) -> Result<(), SyncError> {
        let n = removals.len() as u64;
        run.org_mut(org_id).removals_decided += n as i64;
        if dir.brake.may_hold(n) {
            let members = match known_members {
                Some(m) => m,
                None => self.member_count(run, org_id).await?,
            };
            run.org_mut(org_id).members_at_check = members;
            if dir.brake.holds(n, members.max(0) as u64) {
                tracing::warn!(run = %run.id, org = org_id, removals = n, members, "mass-removal brake holds the run");
                let o = run.org_mut(org_id);
                o.brake_held = true;
                o.counts.held += n as i64;
                let items = removals
                    .iter()
                    .map(|d| item(org_id, d, ItemKind::WouldRemove, d.decision.reasons.join("; ")))
                    .collect();
                self.store.add_items(&run.id, items).await?;
                return self.save(run).await;
            }
        }
        for (i, chunk) in removals.chunks(self.config.batch_size.max(1)).enumerate() {
            self.apply_batch(run, &dir.id, org_id, "remove", i as u64, chunk).await?;
            self.save(run).await?;
        }
        Ok(())
    }

    /// Runs `run` over `scope` to its end: succeeded, held, or failed.
    pub async fn execute(&self, run: SyncRun, scope: Scope) -> SyncRun {
        self.execute_noted(run, scope, None).await
    }

    /// Like [`Engine::execute`], with `note` (what a pull did) leading the outcome.
    pub async fn execute_noted(&self, mut run: SyncRun, scope: Scope, note: Option<&str>) -> SyncRun {
        let result = self.execute_inner(&mut run, scope).await;
        run.ended_at = Some(chrono::Utc::now());
        match result {
            Ok(()) => {
                let held = run.orgs.iter().any(|o| o.brake_held);
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
            }
        }
        if let Err(e) = self.save(&run).await {
            tracing::error!(run = %run.id, error = %e, "cannot record the end of a run");
        }
        tracing::info!(run = %run.id, directory = %run.directory_id, state = run.state.name(), outcome = %run.outcome, "sync run ended");
        run
    }

    async fn execute_inner(&self, run: &mut SyncRun, scope: Scope) -> Result<(), SyncError> {
        let dir = self.store.get_directory(&run.directory_id).await?;
        let trigger = match run.trigger {
            Trigger::SyncNow => common::Trigger::SyncNow,
            _ => common::Trigger::DirectorySync,
        };
        let mut targets = self.targets(run, &dir).await?;
        if let Scope::Full { only_org: Some(org) } = &scope {
            targets.retain(|t| &t.org_id == org);
        }
        match scope {
            Scope::Users(entries) => {
                run.total = (entries.len() * targets.len()) as i64;
                let people = self.people_of_entries(&dir.id, entries).await?;
                for t in &targets {
                    run.org_mut(&t.org_id);
                    let mut removals = Vec::new();
                    for (i, chunk) in people.chunks(self.config.batch_size.max(1)).enumerate() {
                        removals.extend(
                            self.reconcile_batch(run, &dir.id, &t.org_id, trigger, chunk.to_vec(), i as u64).await?,
                        );
                    }
                    self.settle_removals(run, &dir, &t.org_id, removals, None).await?;
                }
            }
            Scope::Full { .. } => {
                let (users, _, _) = self.store.mirror_counts(&dir.id).await?;
                run.total = users * targets.len() as i64;
                for t in &targets {
                    run.org_mut(&t.org_id);
                    let removals_and_count = self.full_org(run, &dir, &t.org_id, trigger).await?;
                    let (removals, members) = removals_and_count;
                    self.settle_removals(run, &dir, &t.org_id, removals, Some(members)).await?;
                    if run.trigger == Trigger::SyncNow {
                        let actor = actor_run(&run.id);
                        let org = t.org_id.clone();
                        let retried = self.patient(run, || self.up.retry_pending(&org, actor.clone())).await?;
                        let o = run.org_mut(&t.org_id);
                        o.counts.created += retried.activated;
                        o.counts.pending_seat = o.counts.pending_seat.max(retried.still_pending);
                        self.save(run).await?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Mirror users for queue entries; users gone from the mirror are not assigned.
    async fn people_of_entries(&self, dir: &str, entries: Vec<QueueEntry>) -> Result<Vec<Person>, SyncError> {
        let mut seen = std::collections::HashSet::new();
        let entries: Vec<QueueEntry> = entries.into_iter().filter(|e| seen.insert(e.user_id.clone())).collect();
        let ids: Vec<String> = entries.iter().map(|e| e.user_id.clone()).collect();
        let users = self.store.users_by_ids(dir, ids).await?;
        let present: std::collections::HashSet<String> = users.iter().map(|u| u.id.clone()).collect();
        let mut people = self.people_of_users(dir, users).await?;
        for e in entries.into_iter().filter(|e| !present.contains(&e.user_id)) {
            people.push(Person {
                user_ref: e.user_id.clone(),
                identity: mpb::Identity {
                    directory_id: dir.to_string(),
                    external_id: e.user_id,
                    email: e.email,
                    display_name: e.display_name,
                },
                assigned: false,
                groups: Vec::new(),
                known_current: None,
            });
        }
        Ok(people)
    }

    /// Every mirror user, then every member outside the mirror, for one org. Returns
    /// the removals (not yet applied) and how many members the org has.
    async fn full_org(
        &self,
        run: &mut SyncRun,
        dir: &Directory,
        org_id: &str,
        trigger: common::Trigger,
    ) -> Result<(Vec<Decided>, i64), SyncError> {
        let mut removals = Vec::new();
        let mut batch_no = 0u64;
        let mut after: Option<String> = None;
        loop {
            let page = self
                .store
                .list_users(&dir.id, UserFilter::default(), after.clone(), self.config.batch_size.max(1))
                .await?;
            let people = self.people_of_users(&dir.id, page.items).await?;
            removals.extend(self.reconcile_batch(run, &dir.id, org_id, trigger, people, batch_no).await?);
            batch_no += 1;
            match page.next_after {
                Some(a) => after = Some(a),
                None => break,
            }
        }
        // Members nobody in the mirror accounts for: the directory is authoritative.
        let directories = vec![dir.id.clone()];
        let mut token = String::new();
        let mut members = 0i64;
        loop {
            let t = token.clone();
            let (page, next) = self.patient(run, || self.up.list_members(org_id, &t)).await?;
            members += page.len() as i64;
            let emails: Vec<String> = page
                .iter()
                .filter_map(|m| m.user.as_ref().map(|u| u.email.to_lowercase()))
                .filter(|e| !e.is_empty())
                .collect();
            let known = self.store.emails_in_mirror(directories.clone(), emails).await?;
            let outside: Vec<Person> = page
                .iter()
                .filter(|m| {
                    m.user.as_ref().is_none_or(|u| u.email.is_empty() || !known.contains(&u.email.to_lowercase()))
                })
                .map(Self::person_of_member)
                .collect();
            if !outside.is_empty() {
                run.total += outside.len() as i64;
                removals.extend(self.reconcile_batch(run, &dir.id, org_id, trigger, outside, batch_no).await?);
                batch_no += 1;
            }
            if next.is_empty() {
                break;
            }
            token = next;
        }
        // Members counted after the mirror pass: those it just added count too.
        Ok((removals, members))
    }

    /// Applies the removals of a held run (each person re-decided first), bypassing the brake.
    pub async fn release(&self, mut run: SyncRun) -> SyncRun {
        let result = self.release_inner(&mut run).await;
        run.ended_at = Some(chrono::Utc::now());
        match result {
            Ok(()) => {
                run.state = RunState::Succeeded;
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
        let dir = self.store.get_directory(&run.directory_id).await?;
        let (items, _) = self.store.run_items(&run.id, Some(ItemKind::WouldRemove), usize::MAX >> 1).await?;
        let mut by_org: HashMap<String, Vec<RunItem>> = HashMap::new();
        for it in items {
            by_org.entry(it.org_id.clone()).or_default().push(it);
        }
        for (org_id, items) in by_org {
            for (batch_no, chunk) in items.chunks(self.config.batch_size.max(1)).enumerate() {
                let mut people = Vec::new();
                let user_ids: Vec<String> =
                    chunk.iter().filter(|i| !i.user_ref.starts_with("member:")).map(|i| i.user_ref.clone()).collect();
                let users = self.store.users_by_ids(&dir.id, user_ids).await?;
                let present: std::collections::HashSet<String> = users.iter().map(|u| u.id.clone()).collect();
                people.extend(self.people_of_users(&dir.id, users).await?);
                for it in chunk {
                    if let Some(member_id) = it.user_ref.strip_prefix("member:") {
                        let org = org_id.clone();
                        let id = member_id.to_string();
                        if let Some(m) = self.patient(run, || self.up.member(&org, &id)).await? {
                            people.push(Self::person_of_member(&m));
                        }
                    } else if !present.contains(&it.user_ref) {
                        people.push(Person {
                            user_ref: it.user_ref.clone(),
                            identity: mpb::Identity {
                                directory_id: dir.id.clone(),
                                external_id: it.user_ref.clone(),
                                email: it.email.clone(),
                                display_name: it.display_name.clone(),
                            },
                            assigned: false,
                            groups: Vec::new(),
                            known_current: None,
                        });
                    }
                }
                // Re-decided now: someone re-assigned since the run was held stays.
                let decided = self.decide_batch(run, &org_id, common::Trigger::DirectorySync, people, None).await?;
                let removals: Vec<Decided> =
                    decided.into_iter().filter(|d| d.decision.action == ppb::Action::Remove as i32).collect();
                let o = run.org_mut(&org_id);
                o.counts.held = (o.counts.held - chunk.len() as i64).max(0);
                o.brake_held = false;
                self.apply_batch(run, &dir.id, &org_id, "approved", batch_no as u64, &removals).await?;
                self.save(run).await?;
            }
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

fn item(org_id: &str, d: &Decided, kind: ItemKind, detail: String) -> RunItem {
    RunItem {
        org_id: org_id.to_string(),
        user_ref: d.person.user_ref.clone(),
        email: d.person.identity.email.clone(),
        display_name: d.person.identity.display_name.clone(),
        kind,
        detail,
    }
}
