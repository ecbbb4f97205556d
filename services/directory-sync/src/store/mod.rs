//! Where directory-sync keeps its data: the [`SyncStore`] trait (directories, the
//! mirror as the engine reads it, the reconcile queue, runs, events), and
//! [`DieselStore`], which implements it and the SCIM connector's
//! [`muster_scim::DirectoryStore`] over SQLite or PostgreSQL.

mod audit_store;
mod brake_store;
mod diesel_store;
mod parent_store;
mod pull_store;
pub mod schema;
mod scim_log_store;
mod scim_store;

pub use audit_store::DirectoryAuditEntry;
pub use brake_store::Reservation;
pub use diesel_store::DieselStore;
pub use parent_store::UserWithGroups;
pub use pull_store::{ListingEnd, PagePass, PullState, PullWrite, SuspectListing};
pub use scim_log_store::{ScimLogSwitch, ScimRequestRow};

use std::collections::{HashMap, HashSet};

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::domain::brake::Brake;
use crate::domain::directory::{Directory, Kind, State};
use crate::domain::run::{ItemKind, RunItem, RunState, SyncRun};
use crate::error::SyncError;

/// A page of results and where the next one starts.
#[derive(Clone, Debug)]
pub struct Page<T> {
    /// This page.
    pub items: Vec<T>,
    /// The key to continue after, when more follow.
    pub next_after: Option<String>,
}

/// A directory to create.
#[derive(Clone, Debug)]
pub struct NewDirectory {
    /// Parent org.
    pub parent_id: String,
    /// Kind.
    pub kind: Kind,
    /// Name.
    pub display_name: String,
    /// Config JSON (checked).
    pub config_json: String,
    /// Interval.
    pub sync_interval_secs: u32,
    /// Brake.
    pub brake: Brake,
    /// SCIM token hash (hex), for SCIM directories.
    pub scim_token_hash: Option<String>,
    /// Days the SCIM request log is kept (0 = off).
    pub scim_log_days: u32,
}

/// Fields an update replaces.
#[derive(Clone, Debug, Default)]
pub struct DirectoryPatch {
    /// New name.
    pub display_name: Option<String>,
    /// New config.
    pub config_json: Option<String>,
    /// New interval.
    pub sync_interval_secs: Option<u32>,
    /// New brake.
    pub brake: Option<Brake>,
    /// New SCIM request log retention (0 = off).
    pub scim_log_days: Option<u32>,
}

/// A mirrored user, as the engine and the API read it.
#[derive(Clone, Debug, PartialEq)]
pub struct MirrorUser {
    /// Mirror id.
    pub id: String,
    /// Directory.
    pub directory_id: String,
    /// userName.
    pub user_name: String,
    /// IdP id.
    pub external_id: Option<String>,
    /// Email (lowercase).
    pub email: Option<String>,
    /// Name to show.
    pub display_name: String,
    /// Assigned and active.
    pub active: bool,
    /// Attributes JSON.
    pub attributes_json: String,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Changed.
    pub updated_at: DateTime<Utc>,
}

/// A mirrored group.
#[derive(Clone, Debug, PartialEq)]
pub struct MirrorGroup {
    /// Mirror id.
    pub id: String,
    /// Directory.
    pub directory_id: String,
    /// Name.
    pub display_name: String,
    /// IdP id.
    pub external_id: Option<String>,
    /// Direct members.
    pub member_count: i64,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Changed.
    pub updated_at: DateTime<Utc>,
}

/// Filters of a user listing.
#[derive(Clone, Debug, Default)]
pub struct UserFilter {
    /// userName or email prefix (lowercase).
    pub prefix: Option<String>,
    /// Only active or inactive.
    pub active: Option<bool>,
}

/// One waiting reconcile.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueueEntry {
    /// Position.
    pub seq: i64,
    /// Mirror user id.
    pub user_id: String,
    /// Email when enqueued (for users deleted since).
    pub email: String,
    /// Name when enqueued.
    pub display_name: String,
}

/// A directory event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirEvent {
    /// Commit-ordered sequence.
    pub seq: i64,
    /// Id.
    pub id: String,
    /// Directory.
    pub directory_id: String,
    /// Type.
    pub event_type: String,
    /// User or group.
    pub resource_id: String,
    /// Member, for member events.
    pub member_id: String,
    /// After.
    pub data_json: String,
    /// Before.
    pub previous_json: String,
    /// When.
    pub created_at: DateTime<Utc>,
}

/// Directory-sync's storage. Every method is one atomic operation.
#[async_trait]
pub trait SyncStore: Send + Sync + 'static {
    /// Creates a directory.
    async fn create_directory(&self, d: NewDirectory) -> Result<Directory, SyncError>;
    /// Reads a directory.
    async fn get_directory(&self, id: &str) -> Result<Directory, SyncError>;
    /// Directories (of a parent) after `after`, in id order.
    async fn list_directories(
        &self,
        parent_id: Option<String>,
        after: Option<String>,
        limit: usize,
    ) -> Result<Page<Directory>, SyncError>;
    /// Replaces the given fields.
    async fn update_directory(&self, id: &str, patch: DirectoryPatch) -> Result<Directory, SyncError>;
    /// Pauses or resumes.
    async fn set_state(&self, id: &str, state: State) -> Result<Directory, SyncError>;
    /// Records the last reconcile error ("" clears it).
    async fn set_last_error(&self, id: &str, error: &str) -> Result<(), SyncError>;
    /// Replaces the SCIM token hash.
    async fn set_token_hash(&self, id: &str, hash: &str) -> Result<(), SyncError>;
    /// Deletes a directory, its mirror, queue and watch rows (runs and events stay).
    async fn delete_directory(&self, id: &str) -> Result<(), SyncError>;

    /// (users, active users, groups) of a directory's mirror.
    async fn mirror_counts(&self, directory: &str) -> Result<(i64, i64, i64), SyncError>;
    /// Mirror users after `after`, in id order.
    async fn list_users(
        &self,
        directory: &str,
        filter: UserFilter,
        after: Option<String>,
        limit: usize,
    ) -> Result<Page<MirrorUser>, SyncError>;
    /// Mirror groups after `after`, in id order.
    async fn list_groups(
        &self,
        directory: &str,
        prefix: Option<String>,
        after: Option<String>,
        limit: usize,
    ) -> Result<Page<MirrorGroup>, SyncError>;
    /// Mirror users by id (absent ones are left out).
    async fn users_by_ids(&self, directory: &str, ids: Vec<String>) -> Result<Vec<MirrorUser>, SyncError>;
    /// Each user's direct groups as (group id, name).
    async fn groups_of(
        &self,
        directory: &str,
        user_ids: Vec<String>,
    ) -> Result<HashMap<String, Vec<(String, String)>>, SyncError>;
    /// Which of these emails (lowercase) some user of these directories has.
    async fn emails_in_mirror(
        &self,
        directories: Vec<String>,
        emails: Vec<String>,
    ) -> Result<HashSet<String>, SyncError>;
    /// Which of these group ids, and which of these lowercase names, exist in these directories.
    async fn existing_groups(
        &self,
        directories: Vec<String>,
        ids: Vec<String>,
        names_lower: Vec<String>,
    ) -> Result<(HashSet<String>, HashSet<String>), SyncError>;

    /// Directories with waiting queue entries.
    async fn directories_with_queue(&self) -> Result<Vec<String>, SyncError>;
    /// The oldest waiting entries of a directory.
    async fn peek_queue(&self, directory: &str, limit: usize) -> Result<Vec<QueueEntry>, SyncError>;
    /// Removes handled entries (by position, so entries written meanwhile stay).
    async fn delete_queue(&self, seqs: Vec<i64>) -> Result<(), SyncError>;
    /// (waiting entries, oldest enqueue time) of one or every directory.
    async fn queue_lag(&self, directory: Option<String>) -> Result<(i64, Option<DateTime<Utc>>), SyncError>;

    /// Records a new run.
    async fn create_run(&self, run: SyncRun) -> Result<(), SyncError>;
    /// Saves a run's progress and state.
    async fn save_run(&self, run: SyncRun) -> Result<(), SyncError>;
    /// Moves a run from one state to another, recording who decided; false if it was not in `from`.
    async fn transition_run(&self, id: &str, from: RunState, to: RunState, decided_by: &str)
    -> Result<bool, SyncError>;
    /// Adds items to a run.
    async fn add_items(&self, run_id: &str, items: Vec<RunItem>) -> Result<(), SyncError>;
    /// Reads a run.
    async fn get_run(&self, id: &str) -> Result<SyncRun, SyncError>;
    /// A run's items (of a kind), up to `limit`, and how many it has.
    async fn run_items(
        &self,
        run_id: &str,
        kind: Option<ItemKind>,
        limit: usize,
    ) -> Result<(Vec<RunItem>, i64), SyncError>;
    /// A directory's runs, newest first, before `before`.
    async fn list_runs(
        &self,
        directory: &str,
        before: Option<String>,
        limit: usize,
    ) -> Result<Page<SyncRun>, SyncError>;
    /// Held runs of a directory.
    async fn held_runs(&self, directory: &str) -> Result<i64, SyncError>;
    /// Marks runs left running by a stopped process as failed; returns how many. With
    /// `stale_before`, only runs whose last heartbeat is older (other replicas' live
    /// runs keep theirs fresh); without, every running run (one process per database).
    async fn fail_interrupted_runs(
        &self,
        stale_before: Option<chrono::DateTime<chrono::Utc>>,
    ) -> Result<usize, SyncError>;

    /// Events after `after`, in order.
    async fn events_after(
        &self,
        after: i64,
        directory: Option<String>,
        limit: usize,
    ) -> Result<Vec<DirEvent>, SyncError>;
    /// Deletes events older than `before`.
    async fn prune_events(&self, before: DateTime<Utc>) -> Result<usize, SyncError>;

    /// The settings version last reconciled for an org by a directory.
    async fn watched_version(&self, directory: &str, org_id: &str) -> Result<Option<i64>, SyncError>;
    /// Records it.
    async fn set_watched_version(&self, directory: &str, org_id: &str, version: i64) -> Result<(), SyncError>;
}
