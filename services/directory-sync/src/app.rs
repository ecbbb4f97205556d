//! Directory-sync's use cases: each checks its input, then works through the store and
//! the engine. The gRPC layer only translates to and from these.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use muster_proto::common::v1 as common;
use muster_proto::directory::v1 as pb;
use muster_proto::membership::v1 as mpb;
use muster_proto::policy::v1 as ppb;
use muster_scim::TokenHash;
use rand::RngCore;

use crate::domain::brake::Brake;
use crate::domain::directory::{Directory, Kind, State, check_interval, clean_config, clean_name};
use crate::domain::run::{ItemKind, RunItem, RunState, SyncRun, Trigger};
use crate::domain::scim_log::check_scim_log_days;
use crate::engine::{Decided, Engine, Scope};
use crate::error::SyncError;
use crate::pull::{CheckAnswer, Puller};
use crate::store::{DirectoryPatch, MirrorGroup, MirrorUser, NewDirectory, Page, QueueEntry, SyncStore, UserFilter};

/// Page size when none is asked for.
pub const DEFAULT_PAGE_SIZE: usize = 100;
/// Largest page size.
pub const MAX_PAGE_SIZE: usize = 1000;
/// Most items shown on one run.
pub const MAX_RUN_ITEMS: usize = 1000;

/// Turns a requested page size into one we serve.
pub fn page_size(requested: i32) -> Result<usize, SyncError> {
    match requested {
        0 => Ok(DEFAULT_PAGE_SIZE),
        n if n < 0 => Err(SyncError::invalid("page_size_negative", "page_size", "page_size must not be negative")),
        n => Ok((n as usize).min(MAX_PAGE_SIZE)),
    }
}

fn after(token: &str) -> Option<String> {
    (!token.is_empty()).then(|| token.to_string())
}

/// A fresh SCIM bearer token: 32 random bytes, hex.
fn new_scim_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!("mscim_{}", hex::encode(bytes))
}

/// Who an actor is, as runs record it.
pub fn actor_name(actor: Option<&common::Actor>) -> String {
    muster_runtime::actor::actor_name(actor).unwrap_or_else(|| "unknown".into())
}

/// A run with its items, as GetSyncRun shows it.
#[derive(Clone, Debug)]
pub struct RunView {
    /// The run.
    pub run: SyncRun,
    /// Up to [`MAX_RUN_ITEMS`] items.
    pub items: Vec<RunItem>,
    /// How many in all.
    pub items_total: i64,
}

/// A directory's status.
#[derive(Clone, Debug)]
pub struct StatusView {
    /// The directory.
    pub directory: Directory,
    /// Latest run.
    pub last_run: Option<SyncRun>,
    /// (users, active, groups).
    pub counts: (i64, i64, i64),
    /// Queue depth.
    pub queued: i64,
    /// Held runs.
    pub held_runs: i64,
}

/// The directory-sync application.
#[derive(Clone)]
pub struct DirectorySync {
    pub(crate) engine: Arc<Engine>,
    scim_base_url: String,
    puller: Option<Arc<Puller>>,
}

impl std::fmt::Debug for DirectorySync {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DirectorySync").field("scim_base_url", &self.scim_base_url).finish()
    }
}

impl DirectorySync {
    /// The application over `engine`; `scim_base_url` has `{directory_id}` in it.
    pub fn new(engine: Arc<Engine>, scim_base_url: String) -> Self {
        Self { engine, scim_base_url, puller: None }
    }

    /// Pulls Okta, Entra and Google directories through `puller`.
    pub fn with_puller(mut self, puller: Arc<Puller>) -> Self {
        self.puller = Some(puller);
        self
    }

    fn puller(&self) -> Result<&Arc<Puller>, SyncError> {
        self.puller.as_ref().ok_or_else(|| SyncError::FailedPrecondition {
            rule: "pulls_disabled",
            message: "this directory-sync runs no pull connectors".into(),
        })
    }

    /// Runs a pull directory's connection check (`check()` of its connector).
    pub async fn test_directory(&self, id: &str) -> Result<(Directory, CheckAnswer), SyncError> {
        let d = self.get(id).await?;
        let answer = self.puller()?.check(&d).await?;
        Ok((d, answer))
    }

    fn store(&self) -> &crate::store::DieselStore {
        &self.engine.store
    }

    /// The SCIM base URL of a directory (empty for pull kinds).
    pub fn scim_url(&self, d: &Directory) -> String {
        if d.kind == Kind::Scim {
            self.scim_base_url.replace("{directory_id}", &d.id).trim_end_matches('/').to_string()
        } else {
            String::new()
        }
    }

    /// Creates a directory; for SCIM also its first token (returned once).
    #[allow(clippy::too_many_arguments)]
    pub async fn create(
        &self,
        parent_id: &str,
        kind: Kind,
        raw_name: &str,
        raw_config: &str,
        interval: u32,
        brake: Brake,
        scim_log_days: u32,
    ) -> Result<(Directory, Option<String>), SyncError> {
        let display_name = clean_name(raw_name)?;
        let config_json = clean_config(kind, raw_config)?;
        check_interval(kind, interval)?;
        check_scim_log_days(kind, scim_log_days)?;
        if kind != Kind::Scim {
            self.puller()?.validate(kind, &config_json)?;
        }
        if !self.engine.up.parent_exists(parent_id).await? {
            return Err(SyncError::NotFound { what: "parent org", id: parent_id.to_string() });
        }
        let token = (kind == Kind::Scim).then(new_scim_token);
        let d = self
            .store()
            .create_directory(NewDirectory {
                parent_id: parent_id.to_string(),
                kind,
                display_name,
                config_json,
                sync_interval_secs: interval,
                brake,
                scim_token_hash: token.as_deref().map(|t| TokenHash::of(t).to_hex()),
                scim_log_days,
            })
            .await?;
        tracing::info!(directory = %d.id, parent = parent_id, kind = kind.name(), "directory created");
        Ok((d, token))
    }

    /// Reads a directory.
    pub async fn get(&self, id: &str) -> Result<Directory, SyncError> {
        self.store().get_directory(id).await
    }

    /// Lists directories.
    pub async fn list(&self, parent_id: &str, size: i32, token: &str) -> Result<Page<Directory>, SyncError> {
        let parent = (!parent_id.is_empty()).then(|| parent_id.to_string());
        self.store().list_directories(parent, after(token), page_size(size)?).await
    }

    /// Changes a directory's settings.
    pub async fn update(
        &self,
        id: &str,
        name: Option<&str>,
        config: Option<&str>,
        interval: Option<u32>,
        brake: Option<Brake>,
        scim_log_days: Option<u32>,
    ) -> Result<Directory, SyncError> {
        let current = self.get(id).await?;
        if let Some(days) = scim_log_days {
            check_scim_log_days(current.kind, days)?;
        }
        if let (Some(c), true) = (config, current.kind != Kind::Scim) {
            self.puller()?.validate(current.kind, &clean_config(current.kind, c)?)?;
        }
        let patch = DirectoryPatch {
            display_name: name.map(clean_name).transpose()?,
            config_json: config.map(|c| clean_config(current.kind, c)).transpose()?,
            sync_interval_secs: match interval {
                Some(i) => {
                    check_interval(current.kind, i)?;
                    Some(i)
                }
                None => None,
            },
            brake,
            scim_log_days,
        };
        self.store().update_directory(id, patch).await
    }

    /// Deletes a directory. Its members leave first, through a normal run of every
    /// mirror user as unassigned (members it never knew are untouched); when the brake
    /// holds that run nothing is removed and the directory stays `leaving`: approve the
    /// run, then delete again (or resume to cancel). Then the mirror goes.
    pub async fn delete(&self, id: &str) -> Result<(), SyncError> {
        let lock = self.engine.directory_lock(id);
        let _guard = lock.lock().await;
        let dir = self.store().get_directory(id).await?;
        if dir.state != State::Leaving {
            self.store().set_state(id, State::Leaving).await?;
        }
        let mut entries = Vec::new();
        let mut after = None;
        loop {
            let page = self.store().list_users(id, UserFilter::default(), after.clone(), 1000).await?;
            entries.extend(page.items.into_iter().map(|u| QueueEntry {
                seq: 0,
                email: u.email.clone().unwrap_or_default(),
                display_name: u.display_name.clone(),
                user_id: u.id,
            }));
            match page.next_after {
                Some(a) => after = Some(a),
                None => break,
            }
        }
        if !entries.is_empty() {
            let run = self.engine.start_run(id, Trigger::SyncNow, "system:directory_deletion").await?;
            let run = self.engine.execute_noted(run, Scope::Users(entries), Some("directory deletion")).await;
            match run.state {
                RunState::Succeeded => {}
                RunState::Held => {
                    return Err(SyncError::FailedPrecondition {
                        rule: "deletion_held",
                        message: format!(
                            "deleting directory {id} would remove more members than the brake allows; nothing was removed. \
                             Approve run {} (then delete again), or resume the directory to cancel",
                            run.id
                        ),
                    });
                }
                _ => {
                    return Err(SyncError::FailedPrecondition {
                        rule: "deletion_incomplete",
                        message: format!(
                            "directory {id}: its members could not all be removed ({}); it stays leaving, delete again to retry",
                            run.error
                        ),
                    });
                }
            }
        }
        self.store().delete_directory(id).await?;
        tracing::info!(directory = id, "directory deleted");
        Ok(())
    }

    /// Pauses or resumes.
    pub async fn set_state(&self, id: &str, state: State) -> Result<Directory, SyncError> {
        self.store().set_state(id, state).await
    }

    /// A new SCIM token; the old one stops working.
    pub async fn rotate_token(&self, id: &str) -> Result<(Directory, String), SyncError> {
        let d = self.get(id).await?;
        if d.kind != Kind::Scim {
            return Err(SyncError::FailedPrecondition {
                rule: "not_scim",
                message: format!("directory {id} is a {} directory; only SCIM directories have a token", d.kind.name()),
            });
        }
        let token = new_scim_token();
        self.store().set_token_hash(id, &TokenHash::of(&token).to_hex()).await?;
        tracing::info!(directory = id, "scim token rotated");
        Ok((d, token))
    }

    /// A directory's status.
    pub async fn status(&self, id: &str) -> Result<StatusView, SyncError> {
        let directory = self.get(id).await?;
        let last_run = self.store().list_runs(id, None, 1).await?.items.into_iter().next();
        let counts = self.store().mirror_counts(id).await?;
        let (queued, _) = self.store().queue_lag(Some(id.to_string())).await?;
        let held_runs = self.store().held_runs(id).await?;
        Ok(StatusView { directory, last_run, counts, queued, held_runs })
    }

    /// Mirror users.
    pub async fn users(
        &self,
        dir: &str,
        prefix: &str,
        active: Option<bool>,
        size: i32,
        token: &str,
    ) -> Result<Page<MirrorUser>, SyncError> {
        self.get(dir).await?;
        let filter = UserFilter { prefix: (!prefix.is_empty()).then(|| prefix.to_string()), active };
        self.store().list_users(dir, filter, after(token), page_size(size)?).await
    }

    /// Mirror groups.
    pub async fn groups(
        &self,
        dir: &str,
        prefix: &str,
        size: i32,
        token: &str,
    ) -> Result<Page<MirrorGroup>, SyncError> {
        self.get(dir).await?;
        let prefix = (!prefix.is_empty()).then(|| prefix.to_string());
        self.store().list_groups(dir, prefix, after(token), page_size(size)?).await
    }

    /// One mirror user with their groups.
    pub async fn user(&self, dir: &str, user_id: &str) -> Result<(MirrorUser, Vec<(String, String)>), SyncError> {
        let user = self
            .store()
            .users_by_ids(dir, vec![user_id.to_string()])
            .await?
            .into_iter()
            .next()
            .ok_or_else(|| SyncError::NotFound { what: "directory user", id: user_id.to_string() })?;
        let mut groups = self.store().groups_of(dir, vec![user_id.to_string()]).await?;
        Ok((user, groups.remove(user_id).unwrap_or_default()))
    }

    /// Starts "Sync now" in the background and returns the run as it starts.
    pub async fn sync_now(&self, dir: &str, actor: &str) -> Result<SyncRun, SyncError> {
        let d = self.get(dir).await?;
        if d.state == State::Paused {
            return Err(SyncError::FailedPrecondition {
                rule: "directory_paused",
                message: format!("directory {dir} is paused; resume it first"),
            });
        }
        if d.state == State::Leaving {
            // A full reconcile of a leaving directory would also remove members it never created.
            return Err(SyncError::FailedPrecondition {
                rule: "directory_leaving",
                message: format!("directory {dir} is being deleted; resume it to cancel, or delete it again"),
            });
        }
        let run = self.engine.start_run(dir, Trigger::SyncNow, actor).await?;
        let started = run.clone();
        if d.kind != Kind::Scim {
            // A pull kind: a full listing first, then the full reconcile (under the lease).
            let puller = self.puller()?.clone();
            tokio::spawn(async move {
                puller.sync_now(run).await;
            });
            return Ok(started);
        }
        let engine = self.engine.clone();
        tokio::spawn(async move {
            let lock = engine.directory_lock(&run.directory_id);
            let _guard = lock.lock().await;
            engine.execute(run, Scope::Full { only_org: None }).await;
        });
        Ok(started)
    }

    /// A run with its items.
    pub async fn run(&self, id: &str) -> Result<RunView, SyncError> {
        let run = self.store().get_run(id).await?;
        let (items, items_total) = self.store().run_items(id, None, MAX_RUN_ITEMS).await?;
        Ok(RunView { run, items, items_total })
    }

    /// A directory's runs, newest first.
    pub async fn runs(&self, dir: &str, size: i32, token: &str) -> Result<Page<SyncRun>, SyncError> {
        self.get(dir).await?;
        self.store().list_runs(dir, after(token), page_size(size)?).await
    }

    fn not_held(id: &str) -> SyncError {
        SyncError::FailedPrecondition { rule: "run_not_held", message: format!("run {id} is not held by the brake") }
    }

    /// Releases a held run; its removals are applied in the background.
    pub async fn approve(&self, id: &str, actor: &str) -> Result<SyncRun, SyncError> {
        if !self.store().transition_run(id, RunState::Held, RunState::Running, actor).await? {
            self.store().get_run(id).await?;
            return Err(Self::not_held(id));
        }
        let mut run = self.store().get_run(id).await?;
        run.outcome = format!("approved by {actor}: applying the held removals");
        self.engine.save(&run).await?;
        tracing::info!(run = id, actor, "held run approved");
        let engine = self.engine.clone();
        let started = run.clone();
        tokio::spawn(async move {
            let lock = engine.directory_lock(&run.directory_id);
            let _guard = lock.lock().await;
            engine.release(run).await;
        });
        Ok(started)
    }

    /// Ends a held run without removing anyone.
    pub async fn reject(&self, id: &str, actor: &str) -> Result<SyncRun, SyncError> {
        if !self.store().transition_run(id, RunState::Held, RunState::Rejected, actor).await? {
            self.store().get_run(id).await?;
            return Err(Self::not_held(id));
        }
        let mut run = self.store().get_run(id).await?;
        run.ended_at = Some(chrono::Utc::now());
        run.outcome = format!("rejected by {actor}: nobody was removed; {}", run.summary());
        self.engine.save(&run).await?;
        tracing::info!(run = id, actor, "held run rejected");
        Ok(run)
    }

    /// (queued, oldest enqueue time).
    pub async fn lag(&self, dir: &str) -> Result<(i64, Option<chrono::DateTime<chrono::Utc>>), SyncError> {
        let dir = (!dir.is_empty()).then(|| dir.to_string());
        self.store().queue_lag(dir).await
    }

    /// What saving `proposed` for `org_id` would do; saves nothing.
    pub async fn preview(
        &self,
        org_id: &str,
        proposed: ppb::SettingsInput,
        acting_member_id: &str,
    ) -> Result<pb::PreviewSettingsResponse, SyncError> {
        let up = &self.engine.up;
        let (org, _) = up.org(org_id).await?;
        let product = up.product(org.product).await?;
        let mut dirs = Vec::new();
        let mut after_id = None;
        loop {
            let page = self.store().list_directories(Some(org.parent_id.clone()), after_id, MAX_PAGE_SIZE).await?;
            dirs.extend(page.items);
            match page.next_after {
                Some(a) => after_id = Some(a),
                None => break,
            }
        }
        let dir_ids: Vec<String> = dirs.iter().map(|d| d.id.clone()).collect();
        // A scratch run: previews share the engine's decision path but record nothing.
        let mut scratch = SyncRun {
            id: "preview".into(),
            directory_id: dirs.first().map(|d| d.id.clone()).unwrap_or_default(),
            trigger: Trigger::SettingsChange,
            state: RunState::Running,
            orgs: Vec::new(),
            outcome: String::new(),
            error: String::new(),
            processed: 0,
            total: 0,
            actor: String::new(),
            decided_by: String::new(),
            started_at: chrono::Utc::now(),
            ended_at: None,
        };
        let batch = self.engine.config.batch_size.max(1);
        let mut decided: Vec<Decided> = Vec::new();
        for d in &dirs {
            let mut after_user = None;
            loop {
                let page = self.store().list_users(&d.id, UserFilter::default(), after_user, batch).await?;
                let people = self.engine.people_of_users(&d.id, page.items).await?;
                decided.extend(self.decide_preview(&mut scratch, org_id, people, &proposed).await?);
                match page.next_after {
                    Some(a) => after_user = Some(a),
                    None => break,
                }
            }
        }
        let mut members = 0i64;
        let mut guardians = 0i64;
        let mut token = String::new();
        loop {
            let t = token.clone();
            let (page, next) = self.engine.patient(&mut scratch, || up.list_members(org_id, &t)).await?;
            members += page.len() as i64;
            guardians += page.iter().filter(|m| m.role == product.guardian_role).count() as i64;
            let emails: Vec<String> = page
                .iter()
                .filter_map(|m| m.user.as_ref().map(|u| u.email.to_lowercase()))
                .filter(|e| !e.is_empty())
                .collect();
            let known = self.store().emails_in_mirror(dir_ids.clone(), emails).await?;
            let outside: Vec<_> = page
                .iter()
                .filter(|m| {
                    m.user.as_ref().is_none_or(|u| u.email.is_empty() || !known.contains(&u.email.to_lowercase()))
                })
                .map(Engine::person_of_member)
                .collect();
            decided.extend(self.decide_preview(&mut scratch, org_id, outside, &proposed).await?);
            if next.is_empty() {
                break;
            }
            token = next;
        }

        let mut out = pb::PreviewSettingsResponse { org_id: org_id.to_string(), ..Default::default() };
        out.considered = decided.len() as i64;
        // Seats: what is free now, plus what removals free, handed out in decision order.
        let usage = up.seat_usage(org_id).await?;
        let mut free: HashMap<String, Option<i64>> =
            usage.tiers.iter().map(|t| (t.seat_tier.clone(), t.purchased.map(|p| (p - t.used).max(0)))).collect();
        for d in &decided {
            if d.decision.action == ppb::Action::Remove as i32
                && let Some(m) = &d.current
                && m.status == mpb::MemberStatus::Active as i32
                && let Some(Some(n)) = free.get_mut(&m.seat_tier)
            {
                *n += 1;
            }
        }
        let mut guardians_after = guardians;
        let mut acting_loses = false;
        for d in &decided {
            let action = ppb::Action::try_from(d.decision.action).unwrap_or(ppb::Action::Unspecified);
            let from_role = d.current.as_ref().map(|m| m.role.clone()).unwrap_or_default();
            let from_tier = d.current.as_ref().map(|m| m.seat_tier.clone()).unwrap_or_default();
            let is_acting =
                !acting_member_id.is_empty() && d.current.as_ref().is_some_and(|m| m.id == acting_member_id);
            let mut change = pb::PreviewChange {
                user_ref: d.person.user_ref.clone(),
                email: d.person.identity.email.clone(),
                display_name: d.person.identity.display_name.clone(),
                from_role: from_role.clone(),
                to_role: d.decision.role.clone(),
                from_seat_tier: from_tier.clone(),
                to_seat_tier: String::new(),
                reasons: d.decision.reasons.clone(),
            };
            let was_guardian = from_role == product.guardian_role && d.current.is_some();
            match action {
                ppb::Action::Remove => {
                    change.to_role.clear();
                    if was_guardian {
                        guardians_after -= 1;
                        acting_loses |= is_acting;
                    }
                    out.removed.push(change);
                }
                ppb::Action::Provision => {
                    let tier = take_seat(&mut free, &product.seat_tiers, d.decision.seat_tier.as_ref());
                    if d.decision.role == product.guardian_role {
                        guardians_after += 1;
                    }
                    match tier {
                        Some(t) => {
                            change.to_seat_tier = t;
                            out.added.push(change);
                        }
                        None => out.pending.push(change),
                    }
                }
                ppb::Action::Update => {
                    let becomes_guardian = d.decision.role == product.guardian_role;
                    if was_guardian && !becomes_guardian {
                        guardians_after -= 1;
                        acting_loses |= is_acting;
                    } else if !was_guardian && becomes_guardian {
                        guardians_after += 1;
                    }
                    let new_tier = match d.decision.seat_tier.as_ref().and_then(|p| p.choice.as_ref()) {
                        Some(ppb::seat_tier_preference::Choice::Mapped(t)) if *t != from_tier => Some(t.clone()),
                        _ => None,
                    };
                    if d.decision.role != from_role {
                        let mut c = change.clone();
                        c.to_seat_tier = new_tier.clone().unwrap_or_else(|| from_tier.clone());
                        out.re_roled.push(c);
                    }
                    if let Some(t) = new_tier {
                        let tier_free = free.get(&t).cloned().flatten();
                        if tier_free == Some(0) {
                            out.pending.push(change);
                        } else {
                            if let Some(Some(n)) = free.get_mut(&t) {
                                *n -= 1;
                            }
                            change.to_seat_tier = t;
                            out.re_tiered.push(change);
                        }
                    }
                }
                _ => {}
            }
        }
        // Mapped groups that match nothing in the parent's directories.
        let mapped: Vec<common::GroupRef> = proposed
            .role_mappings
            .iter()
            .flat_map(|m| m.groups.iter().cloned())
            .chain(proposed.seat_tier_mappings.iter().flat_map(|m| m.groups.iter().cloned()))
            .collect();
        let ids: Vec<String> = mapped.iter().filter(|g| !g.id.is_empty()).map(|g| g.id.clone()).collect();
        let names: Vec<String> =
            mapped.iter().filter(|g| g.id.is_empty() && !g.name.is_empty()).map(|g| g.name.to_lowercase()).collect();
        let (found_ids, found_names) = self.store().existing_groups(dir_ids, ids, names).await?;
        let mut seen = HashSet::new();
        for g in mapped {
            let matched =
                if g.id.is_empty() { found_names.contains(&g.name.to_lowercase()) } else { found_ids.contains(&g.id) };
            if !matched && seen.insert((g.id.clone(), g.name.to_lowercase())) {
                out.warnings.push(format!("mapped group {} matches no group of the directory", label(&g)));
                out.unmatched_groups.push(g);
            }
        }
        let scim = proposed.mode == ppb::ProvisioningMode::Scim as i32;
        let brake = dirs.first().map(|d| d.brake).unwrap_or_default();
        out.would_trip_brake = scim && brake.holds(out.removed.len() as u64, members.max(0) as u64);
        if out.would_trip_brake {
            out.warnings.push(format!(
                "{} of {members} members would be removed: more than the directory's mass-removal brake allows; the run would be held for approval",
                out.removed.len()
            ));
        }
        out.acting_member_loses_guardian = acting_loses;
        if acting_loses {
            out.warnings.push(format!("you would lose the {} role", product.guardian_role));
        }
        out.org_left_without_guardian = guardians_after <= 0 && (members > 0 || !out.added.is_empty());
        if out.org_left_without_guardian {
            out.warnings.push(format!(
                "the org would have no {}: the guardian guard would hold the change that removes or demotes the last one",
                product.guardian_role
            ));
        }
        Ok(out)
    }

    async fn decide_preview(
        &self,
        scratch: &mut SyncRun,
        org_id: &str,
        people: Vec<crate::engine::Person>,
        proposed: &ppb::SettingsInput,
    ) -> Result<Vec<Decided>, SyncError> {
        // The trigger a settings-change run decides with: the preview must match it.
        self.engine.decide_batch(scratch, org_id, common::Trigger::DirectorySync, people, Some(proposed.clone())).await
    }
}

fn label(g: &common::GroupRef) -> String {
    if g.name.is_empty() { format!("id {}", g.id) } else { format!("\"{}\"", g.name) }
}

/// The tier a newcomer would get, taking a seat; `None` when they would wait.
fn take_seat(
    free: &mut HashMap<String, Option<i64>>,
    tiers: &[String],
    pref: Option<&ppb::SeatTierPreference>,
) -> Option<String> {
    if tiers.is_empty() {
        return Some(String::new());
    }
    let mut take = |t: &str| -> bool {
        match free.get_mut(t) {
            Some(Some(n)) if *n > 0 => {
                *n -= 1;
                true
            }
            Some(Some(_)) => false,
            // No purchase recorded: unlimited.
            Some(None) | None => true,
        }
    };
    match pref.and_then(|p| p.choice.as_ref()) {
        Some(ppb::seat_tier_preference::Choice::Mapped(t)) => take(t).then(|| t.clone()),
        _ => tiers.iter().find(|t| take(t)).cloned(),
    }
}

/// Items of a run as their kind names them (for the API).
pub fn item_kind_pb(k: ItemKind) -> pb::RunItemKind {
    match k {
        ItemKind::WouldRemove => pb::RunItemKind::WouldRemove,
        ItemKind::HeldGuardian => pb::RunItemKind::HeldGuardian,
        ItemKind::Error => pb::RunItemKind::Error,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seats_are_taken_in_order_and_mapped_tiers_do_not_fall_back() {
        let tiers = vec!["Premium".to_string(), "Standard".to_string()];
        let mut free = HashMap::from([("Premium".to_string(), Some(1)), ("Standard".to_string(), Some(1))]);
        let highest = ppb::SeatTierPreference { choice: Some(ppb::seat_tier_preference::Choice::HighestFree(true)) };
        let premium =
            ppb::SeatTierPreference { choice: Some(ppb::seat_tier_preference::Choice::Mapped("Premium".into())) };
        assert_eq!(take_seat(&mut free, &tiers, Some(&highest)).as_deref(), Some("Premium"));
        assert_eq!(take_seat(&mut free, &tiers, Some(&premium)), None);
        assert_eq!(take_seat(&mut free, &tiers, Some(&highest)).as_deref(), Some("Standard"));
        assert_eq!(take_seat(&mut free, &tiers, Some(&highest)), None);
        assert_eq!(take_seat(&mut free, &[], None).as_deref(), Some(""));
    }

    #[test]
    fn actors_are_named() {
        let a = common::Actor { kind: Some(common::actor::Kind::AdminId("ann".into())) };
        assert_eq!(actor_name(Some(&a)), "admin:ann");
        assert_eq!(actor_name(None), "unknown");
    }
}
