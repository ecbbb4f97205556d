//! Directory-sync's use cases: each checks its input, then works through the store and
//! the engine. The gRPC layer only translates to and from these.

use std::sync::Arc;

use muster_proto::common::v1 as common;
use muster_proto::directory::v1 as pb;
use muster_proto::policy::v1 as ppb;
use muster_scim::TokenHash;
use rand::RngCore;

use crate::domain::brake::Brake;
use crate::domain::directory::{Authority, Directory, Kind, State, check_interval, clean_config, clean_name};
use crate::domain::run::{ItemKind, RunItem, RunState, SyncRun, Trigger};
use crate::domain::scim_log::check_scim_log_days;
use crate::engine::{Acting, Engine, Scope};
use crate::error::SyncError;
use crate::pull::{CheckAnswer, Puller};
use crate::store::{
    DirectoryAuditEntry, DirectoryPatch, MirrorGroup, MirrorUser, NewDirectory, Page, QueueEntry, SyncStore, UserFilter,
};

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

/// What the audit log keeps of a directory: its settings, never a secret (the config
/// holds references only; the SCIM token's hash is left out).
fn audit_json(d: &Directory) -> String {
    serde_json::json!({
        "id": d.id,
        "parent_id": d.parent_id,
        "kind": d.kind.name(),
        "display_name": d.display_name,
        "config": serde_json::from_str::<serde_json::Value>(&d.config_json).unwrap_or_default(),
        "sync_interval_seconds": d.sync_interval_secs,
        "brake": {
            "max_removal_percent": d.brake.max_percent,
            "min_removals": d.brake.min_removals,
            "window_seconds": d.brake.window_secs,
        },
        "state": d.state.name(),
        "authority": d.authority.name(),
        "scim_log_days": d.scim_log_days,
    })
    .to_string()
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
        if d.kind == Kind::SCIM {
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
        actor: &str,
    ) -> Result<(Directory, Option<String>), SyncError> {
        let display_name = clean_name(raw_name)?;
        let config_json = clean_config(kind, raw_config)?;
        check_interval(kind, interval)?;
        check_scim_log_days(kind, scim_log_days)?;
        if kind.is_pull() {
            self.puller()?.validate(kind, &config_json)?;
        }
        if !self.engine.up.parent_exists(parent_id).await? {
            return Err(SyncError::NotFound { what: "parent org", id: parent_id.to_string() });
        }
        let token = (kind == Kind::SCIM).then(new_scim_token);
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
        self.store().audit_directory(&d.id, "directory.created", actor, "null".into(), audit_json(&d)).await?;
        // A new directory drives nothing yet: the orgs' settings as they are now are
        // not a change to reconcile (its own pushes or pulls are what it adds).
        self.engine.watch_parent_settings(&d).await;
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
    #[allow(clippy::too_many_arguments)]
    pub async fn update(
        &self,
        id: &str,
        name: Option<&str>,
        config: Option<&str>,
        interval: Option<u32>,
        brake: Option<Brake>,
        scim_log_days: Option<u32>,
        actor: &str,
    ) -> Result<Directory, SyncError> {
        let current = self.get(id).await?;
        if let Some(days) = scim_log_days {
            check_scim_log_days(current.kind, days)?;
        }
        if let (Some(c), true) = (config, current.kind.is_pull()) {
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
        let updated = self.store().update_directory(id, patch).await?;
        let action =
            if updated.brake.is_looser_than(&current.brake) { "directory.brake_loosened" } else { "directory.updated" };
        if updated != current {
            self.store().audit_directory(id, action, actor, audit_json(&current), audit_json(&updated)).await?;
        }
        Ok(updated)
    }

    /// Deletes a directory. Its members leave first, through a normal run of every
    /// mirror user as unassigned (members it never knew are untouched); when the brake
    /// holds that run nothing is removed and the directory stays `leaving`: approve the
    /// run, then delete again (or resume to cancel). Then the mirror goes.
    pub async fn delete(&self, id: &str, actor: &str) -> Result<(), SyncError> {
        let lock = self.engine.directory_lock(id);
        let _guard = lock.lock().await;
        let dir = self.store().get_directory(id).await?;
        if dir.state != State::Leaving {
            let leaving = self.store().set_state(id, State::Leaving).await?;
            self.store()
                .audit_directory(id, "directory.leaving", actor, audit_json(&dir), audit_json(&leaving))
                .await?;
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
            let run = self.engine.start_run(id, Trigger::Deletion, actor).await?;
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
        // Runs of the directory that still hold an org's removals hold them no more:
        // the next run of the parent decides those people again.
        self.engine.drop_holds_of(id, actor).await?;
        self.store().delete_directory(id).await?;
        self.store().audit_directory(id, "directory.deleted", actor, audit_json(&dir), "null".into()).await?;
        tracing::info!(directory = id, "directory deleted");
        Ok(())
    }

    /// Pauses or resumes.
    pub async fn set_state(&self, id: &str, state: State, actor: &str) -> Result<Directory, SyncError> {
        let before = self.get(id).await?;
        let after = self.store().set_state(id, state).await?;
        if before.state != after.state {
            let action = if state == State::Paused { "directory.paused" } else { "directory.resumed" };
            self.store().audit_directory(id, action, actor, audit_json(&before), audit_json(&after)).await?;
        }
        Ok(after)
    }

    /// Makes a directory authoritative or provisioning-only. With `dry_run`, only says
    /// who the change would remove; otherwise audits it and starts a run of the parent.
    pub async fn set_authority(
        &self,
        id: &str,
        authority: Authority,
        dry_run: bool,
        actor: &str,
    ) -> Result<(Directory, Vec<pb::AuthorityPreview>, Option<String>), SyncError> {
        let before = self.get(id).await?;
        let preview = self.engine.preview_authority(&before, authority).await?;
        if dry_run || before.authority == authority {
            return Ok((before, preview, None));
        }
        let after = self.store().set_authority(id, authority).await?;
        self.store()
            .audit_directory(id, "directory.authority_changed", actor, audit_json(&before), audit_json(&after))
            .await?;
        tracing::info!(directory = id, authority = authority.name(), actor, "directory authority changed");
        if after.state != State::Active {
            return Ok((after, preview, None));
        }
        let run = self.engine.start_run(id, Trigger::AuthorityChange, actor).await?;
        let run_id = run.id.clone();
        let engine = self.engine.clone();
        tokio::spawn(async move {
            let lock = engine.directory_lock(&run.directory_id);
            let _guard = lock.lock().await;
            engine.execute(run, Scope::Full { only_org: None }).await;
        });
        Ok((after, preview, Some(run_id)))
    }

    /// A directory's audit log, newest first.
    pub async fn audit(&self, id: &str, size: i32, token: &str) -> Result<Page<DirectoryAuditEntry>, SyncError> {
        let before = match token {
            "" => None,
            t => Some(t.parse::<i64>().map_err(|_| {
                SyncError::invalid("page_token_invalid", "page_token", "page_token is not one this service gave")
            })?),
        };
        let limit = page_size(size)?;
        let mut items = self.store().directory_audit(id, before, limit + 1).await?;
        let more = items.len() > limit;
        items.truncate(limit);
        let next_after = if more { items.last().map(|e| e.seq.to_string()) } else { None };
        Ok(Page { items, next_after })
    }

    /// A new SCIM token; the old one stops working.
    pub async fn rotate_token(&self, id: &str, actor: &str) -> Result<(Directory, String), SyncError> {
        let d = self.get(id).await?;
        if d.kind != Kind::SCIM {
            return Err(SyncError::FailedPrecondition {
                rule: "not_scim",
                message: format!("directory {id} is a {} directory; only SCIM directories have a token", d.kind.name()),
            });
        }
        let token = new_scim_token();
        self.store().set_token_hash(id, &TokenHash::of(&token).to_hex()).await?;
        tracing::info!(directory = id, "scim token rotated");
        self.store().audit_directory(id, "directory.token_rotated", actor, "null".into(), "null".into()).await?;
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
        // One Sync now of a directory at a time in this replica: asking again while one
        // runs joins it (the same run and progress), so repeated clicks or a caller in
        // a loop cannot pile up full runs.
        let slot = loop {
            // Claim the directory's place, or learn whose it is (never held across an await).
            let holder = {
                let mut running = self.engine.sync_nows.lock().unwrap_or_else(|p| p.into_inner());
                match running.get(dir) {
                    Some(id) => Some(id.clone()),
                    None => {
                        running.insert(dir.to_string(), String::new());
                        None
                    }
                }
            };
            match holder {
                None => break SyncNowSlot { engine: self.engine.clone(), dir: dir.to_string() },
                // Claimed, its run not created yet: a moment.
                Some(id) if id.is_empty() => tokio::time::sleep(std::time::Duration::from_millis(20)).await,
                Some(id) => {
                    let run = self.store().get_run(&id).await?;
                    if run.state == RunState::Running {
                        tracing::info!(directory = %dir, run = %run.id, actor, "sync now joins the one running");
                        return Ok(run);
                    }
                    // Ended between two looks: its slot is about to go.
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                }
            }
        };
        let run = self.engine.start_run(dir, Trigger::SyncNow, actor).await?;
        self.engine.sync_nows.lock().unwrap_or_else(|p| p.into_inner()).insert(dir.to_string(), run.id.clone());
        let started = run.clone();
        if d.kind.is_pull() {
            // A pull kind: a full listing first, then the full reconcile (under the lease).
            let puller = self.puller()?.clone();
            tokio::spawn(async move {
                puller.sync_now(run).await;
                drop(slot);
            });
            return Ok(started);
        }
        let engine = self.engine.clone();
        tokio::spawn(async move {
            let lock = engine.directory_lock(&run.directory_id);
            let _guard = lock.lock().await;
            engine.execute(run, Scope::Full { only_org: None }).await;
            drop(slot);
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
        let what = serde_json::json!({"run_id": id, "summary": run.summary()}).to_string();
        self.store().audit_directory(&run.directory_id, "run.approved", actor, "null".into(), what).await?;
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
        self.store().release_holds(id).await?;
        tracing::info!(run = id, actor, "held run rejected");
        let what = serde_json::json!({"run_id": id, "summary": run.summary()}).to_string();
        self.store().audit_directory(&run.directory_id, "run.rejected", actor, "null".into(), what).await?;
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
        acting: Acting,
    ) -> Result<pb::PreviewSettingsResponse, SyncError> {
        self.engine.preview(org_id, proposed, acting).await
    }
}

/// Items of a run as their kind names them (for the API).
pub fn item_kind_pb(k: ItemKind) -> pb::RunItemKind {
    match k {
        ItemKind::WouldRemove => pb::RunItemKind::WouldRemove,
        ItemKind::HeldGuardian => pb::RunItemKind::HeldGuardian,
        ItemKind::Error => pb::RunItemKind::Error,
        ItemKind::WouldSweep => pb::RunItemKind::WouldSweep,
    }
}

/// A directory's place in [`Engine::sync_nows`], freed when its Sync now ends (or
/// could not start).
struct SyncNowSlot {
    engine: Arc<Engine>,
    dir: String,
}

impl Drop for SyncNowSlot {
    fn drop(&mut self) {
        self.engine.sync_nows.lock().unwrap_or_else(|p| p.into_inner()).remove(&self.dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actors_are_named() {
        let a = common::Actor { kind: Some(common::actor::Kind::AdminId("ann".into())) };
        assert_eq!(actor_name(Some(&a)), "admin:ann");
        assert_eq!(actor_name(None), "unknown");
    }
}
