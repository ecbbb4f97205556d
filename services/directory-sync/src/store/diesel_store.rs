//! [`SyncStore`] on diesel: one code base for SQLite and PostgreSQL.

use std::collections::{HashMap, HashSet};

use async_trait::async_trait;
use chrono::{DateTime, NaiveDateTime, Utc};
use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use muster_runtime::{Db, DbConnection};
use tokio::sync::watch;

use super::schema::{
    dir_events, dir_groups, dir_members, dir_users, directories, org_watch, pull_state, reconcile_queue, run_items,
    sync_runs,
};
use super::{DirEvent, DirectoryPatch, MirrorGroup, MirrorUser, NewDirectory, Page, QueueEntry, SyncStore, UserFilter};
use crate::domain::brake::Brake;
use crate::domain::directory::{Authority, Directory, Kind, State};
use crate::domain::run::{ItemKind, OrgResult, Phase, RunItem, RunState, SyncRun, Trigger};
use crate::error::SyncError;

/// Most rows bound in one statement: well under SQLite's variable limit.
pub(crate) const CHUNK: usize = 500;

/// A multi-row INSERT. The combined connection cannot build one (its dialect has no
/// single DEFAULT-keyword rule), so the statement is built for the backend in hand.
macro_rules! insert_many {
    ($conn:expr, $table:expr, $rows:expr) => {
        match $conn {
            muster_runtime::DbConnection::Sqlite(c) => diesel::insert_into($table).values($rows).execute(c),
            muster_runtime::DbConnection::Postgres(c) => diesel::insert_into($table).values($rows).execute(c),
        }
    };
}
pub(crate) use insert_many;

/// Directory-sync's store on a [`Db`]. Cheap to clone. Writers that change the mirror
/// or the events bump the watch channels, so workers and watchers wake without polling.
#[derive(Clone, Debug)]
pub struct DieselStore {
    pub(crate) db: Db,
    pub(crate) queue_tx: watch::Sender<u64>,
    pub(crate) events_tx: watch::Sender<u64>,
    /// Which directories log SCIM requests, cached for the HTTP front.
    pub(crate) scim_log: super::ScimLogSwitch,
}

impl DieselStore {
    /// A store over `db` (migrated by `serve`).
    pub fn new(db: Db) -> Self {
        Self {
            db,
            queue_tx: watch::channel(0).0,
            events_tx: watch::channel(0).0,
            scim_log: super::ScimLogSwitch::default(),
        }
    }

    /// Wakes when the reconcile queue may have grown.
    pub fn queue_changes(&self) -> watch::Receiver<u64> {
        self.queue_tx.subscribe()
    }

    /// Wakes when events may have been added.
    pub fn event_changes(&self) -> watch::Receiver<u64> {
        self.events_tx.subscribe()
    }

    /// Tells workers and watchers that a write committed.
    pub(crate) fn committed(&self) {
        self.queue_tx.send_modify(|n| *n = n.wrapping_add(1));
        self.events_tx.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// The database.
    pub fn db(&self) -> &Db {
        &self.db
    }
}

pub(crate) fn now() -> NaiveDateTime {
    // Microsecond precision: what both backends store, so a value read back equals the one written.
    let t = Utc::now();
    DateTime::from_timestamp_micros(t.timestamp_micros()).unwrap_or(t).naive_utc()
}

pub(crate) fn utc(t: NaiveDateTime) -> DateTime<Utc> {
    t.and_utc()
}

pub(crate) fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

#[derive(Queryable, Insertable, Clone)]
#[diesel(table_name = directories)]
struct DirectoryRow {
    id: String,
    parent_id: String,
    kind: String,
    display_name: String,
    config_json: String,
    sync_interval_secs: i64,
    brake_percent: i32,
    brake_min: i32,
    state: String,
    scim_token_hash: Option<String>,
    last_error: String,
    created_at: NaiveDateTime,
    updated_at: NaiveDateTime,
    scim_log_days: i32,
    authority: String,
    brake_window_secs: i64,
}

impl TryFrom<DirectoryRow> for Directory {
    type Error = SyncError;
    fn try_from(r: DirectoryRow) -> Result<Self, SyncError> {
        let corrupt = |what: &str| SyncError::Corrupt(format!("directory {}: {what}", r.id));
        Ok(Directory {
            kind: Kind::from_name(&r.kind).ok_or_else(|| corrupt("kind"))?,
            state: State::from_name(&r.state).ok_or_else(|| corrupt("state"))?,
            brake: Brake {
                max_percent: u32::try_from(r.brake_percent).map_err(|_| corrupt("brake"))?,
                min_removals: u32::try_from(r.brake_min).map_err(|_| corrupt("brake"))?,
                window_secs: u64::try_from(r.brake_window_secs).map_err(|_| corrupt("brake"))?,
            },
            authority: Authority::from_name(&r.authority).ok_or_else(|| corrupt("authority"))?,
            // Filled from pull_state by the loaders (`with_proof`).
            proven_at: None,
            sync_interval_secs: u32::try_from(r.sync_interval_secs).map_err(|_| corrupt("interval"))?,
            scim_log_days: u32::try_from(r.scim_log_days).map_err(|_| corrupt("scim_log_days"))?,
            id: r.id,
            parent_id: r.parent_id,
            display_name: r.display_name,
            config_json: r.config_json,
            last_error: r.last_error,
            created_at: utc(r.created_at),
            updated_at: utc(r.updated_at),
        })
    }
}

#[derive(Queryable, Insertable, Clone, Debug)]
#[diesel(table_name = dir_users)]
pub(crate) struct UserRow {
    pub id: String,
    pub directory_id: String,
    pub user_name: String,
    pub user_name_lower: String,
    pub external_id: Option<String>,
    pub email_lower: Option<String>,
    pub display_name: String,
    pub active: bool,
    pub attributes_json: String,
    pub version: i64,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
    /// Pulled rows: a hash of what the connector said, to skip unchanged rows.
    pub content_hash: Option<String>,
    /// Pulled rows: the last full listing that mentioned the row.
    pub seen_generation: i64,
}

impl From<UserRow> for MirrorUser {
    fn from(r: UserRow) -> Self {
        MirrorUser {
            id: r.id,
            directory_id: r.directory_id,
            user_name: r.user_name,
            external_id: r.external_id,
            email: r.email_lower,
            display_name: r.display_name,
            active: r.active,
            attributes_json: r.attributes_json,
            created_at: utc(r.created_at),
            updated_at: utc(r.updated_at),
        }
    }
}

#[derive(Queryable, Insertable, Clone, Debug)]
#[diesel(table_name = dir_groups)]
pub(crate) struct GroupRow {
    pub id: String,
    pub directory_id: String,
    pub display_name: String,
    pub display_name_lower: String,
    pub external_id: Option<String>,
    pub attributes_json: String,
    pub member_count: i64,
    pub version: i64,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
    /// Pulled rows: a hash of what the connector said, to skip unchanged rows.
    pub content_hash: Option<String>,
    /// Pulled rows: the last full listing that mentioned the row.
    pub seen_generation: i64,
}

impl From<GroupRow> for MirrorGroup {
    fn from(r: GroupRow) -> Self {
        MirrorGroup {
            id: r.id,
            directory_id: r.directory_id,
            display_name: r.display_name,
            external_id: r.external_id,
            member_count: r.member_count,
            created_at: utc(r.created_at),
            updated_at: utc(r.updated_at),
        }
    }
}

#[derive(Insertable)]
#[diesel(table_name = reconcile_queue)]
pub(crate) struct NewQueueRow {
    pub directory_id: String,
    pub user_id: String,
    pub email: String,
    pub display_name: String,
    pub enqueued_at: NaiveDateTime,
}

#[derive(Insertable)]
#[diesel(table_name = dir_events)]
pub(crate) struct NewEventRow {
    pub id: String,
    pub directory_id: String,
    pub event_type: String,
    pub resource_id: String,
    pub member_id: String,
    pub data_json: String,
    pub previous_json: String,
    pub created_at: NaiveDateTime,
}

impl NewEventRow {
    pub(crate) fn new(directory: &str, event_type: &str, resource_id: &str) -> Self {
        NewEventRow {
            id: new_id(),
            directory_id: directory.to_string(),
            event_type: event_type.to_string(),
            resource_id: resource_id.to_string(),
            member_id: String::new(),
            data_json: String::new(),
            previous_json: String::new(),
            created_at: now(),
        }
    }
}

/// Writes events at the end of a transaction. On PostgreSQL a transaction-scoped
/// advisory lock is taken first: sequence values are handed out at insert but become
/// visible at commit, so without it a watcher could read seq 8 before a slower
/// transaction holding seq 7 commits, and skip 7 for ever. Holding the lock from the
/// insert to the commit makes sequence order equal commit order. SQLite has one
/// writer at a time, which gives the same guarantee.
pub(crate) fn insert_events(conn: &mut DbConnection, events: Vec<NewEventRow>) -> Result<(), SyncError> {
    if events.is_empty() {
        return Ok(());
    }
    if let DbConnection::Postgres(pg) = conn {
        pg.batch_execute("SELECT pg_advisory_xact_lock(7202612)")?;
    }
    for chunk in events.chunks(CHUNK) {
        insert_many!(conn, dir_events::table, chunk)?;
    }
    Ok(())
}

/// Adds users to the reconcile queue, in the caller's transaction.
pub(crate) fn enqueue(conn: &mut DbConnection, rows: Vec<NewQueueRow>) -> Result<(), SyncError> {
    for chunk in rows.chunks(CHUNK) {
        insert_many!(conn, reconcile_queue::table, chunk)?;
    }
    Ok(())
}

#[derive(Queryable, Insertable, AsChangeset, Clone)]
#[diesel(table_name = sync_runs)]
#[diesel(treat_none_as_null = true)]
struct RunRow {
    id: String,
    directory_id: String,
    run_trigger: String,
    state: String,
    orgs_json: String,
    outcome: String,
    error: String,
    processed: i64,
    total: i64,
    actor: String,
    decided_by: String,
    started_at: NaiveDateTime,
    ended_at: Option<NaiveDateTime>,
    heartbeat_at: Option<NaiveDateTime>,
    phase: String,
    held_listing: Option<i64>,
}

fn run_row(r: &SyncRun) -> Result<RunRow, SyncError> {
    Ok(RunRow {
        id: r.id.clone(),
        directory_id: r.directory_id.clone(),
        run_trigger: r.trigger.name().to_string(),
        state: r.state.name().to_string(),
        orgs_json: serde_json::to_string(&r.orgs).map_err(|e| SyncError::Corrupt(e.to_string()))?,
        outcome: r.outcome.clone(),
        error: r.error.clone(),
        processed: r.processed,
        total: r.total,
        actor: r.actor.clone(),
        decided_by: r.decided_by.clone(),
        started_at: r.started_at.naive_utc(),
        ended_at: r.ended_at.map(|t| t.naive_utc()),
        // Every write of a run is a sign of life of the process running it.
        heartbeat_at: Some(now()),
        phase: r.phase.name().to_string(),
        held_listing: r.held_listing,
    })
}

impl TryFrom<RunRow> for SyncRun {
    type Error = SyncError;
    fn try_from(r: RunRow) -> Result<Self, SyncError> {
        let corrupt = |what: &str| SyncError::Corrupt(format!("run {}: {what}", r.id));
        let orgs: Vec<OrgResult> = serde_json::from_str(&r.orgs_json).map_err(|_| corrupt("orgs"))?;
        Ok(SyncRun {
            trigger: Trigger::from_name(&r.run_trigger).ok_or_else(|| corrupt("trigger"))?,
            state: RunState::from_name(&r.state).ok_or_else(|| corrupt("state"))?,
            orgs,
            id: r.id,
            directory_id: r.directory_id,
            outcome: r.outcome,
            error: r.error,
            processed: r.processed,
            total: r.total,
            actor: r.actor,
            decided_by: r.decided_by,
            phase: Phase::from_name(&r.phase),
            held_listing: r.held_listing,
            owner: String::new(),
            started_at: utc(r.started_at),
            ended_at: r.ended_at.map(utc),
        })
    }
}

#[derive(Queryable, Insertable)]
#[diesel(table_name = run_items)]
struct ItemRow {
    run_id: String,
    seq: i64,
    org_id: String,
    user_ref: String,
    email: String,
    display_name: String,
    kind: String,
    detail: String,
    member_id: String,
}

#[derive(Queryable)]
struct EventRow {
    seq: i64,
    id: String,
    directory_id: String,
    event_type: String,
    resource_id: String,
    member_id: String,
    data_json: String,
    previous_json: String,
    created_at: NaiveDateTime,
}

fn load_directory(conn: &mut DbConnection, id: &str) -> Result<Directory, SyncError> {
    let d: Directory = directories::table
        .find(id)
        .first::<DirectoryRow>(conn)
        .optional()?
        .ok_or_else(|| SyncError::NotFound { what: "directory", id: id.to_string() })?
        .try_into()?;
    with_proof(conn, vec![d])?.pop().ok_or_else(|| SyncError::NotFound { what: "directory", id: id.to_string() })
}

/// Fills in when each pull directory's last full listing completed (its proof).
fn with_proof(conn: &mut DbConnection, mut dirs: Vec<Directory>) -> Result<Vec<Directory>, SyncError> {
    let ids: Vec<String> = dirs.iter().filter(|d| d.kind.is_pull()).map(|d| d.id.clone()).collect();
    if ids.is_empty() {
        return Ok(dirs);
    }
    let mut proofs: HashMap<String, NaiveDateTime> = HashMap::new();
    for chunk in ids.chunks(CHUNK) {
        let rows: Vec<(String, Option<NaiveDateTime>)> = pull_state::table
            .filter(pull_state::directory_id.eq_any(chunk))
            .select((pull_state::directory_id, pull_state::last_full_listing))
            .load(conn)?;
        proofs.extend(rows.into_iter().filter_map(|(d, t)| t.map(|t| (d, t))));
    }
    for d in &mut dirs {
        d.proven_at = proofs.get(&d.id).copied().map(utc);
    }
    Ok(dirs)
}

fn page_of<T>(mut items: Vec<T>, limit: usize, key: impl Fn(&T) -> String) -> Page<T> {
    // One extra row was fetched to learn whether another page follows.
    let more = items.len() > limit;
    items.truncate(limit);
    let next_after = if more { items.last().map(key) } else { None };
    Page { items, next_after }
}

fn like_prefix(prefix: &str) -> String {
    let escaped: String = prefix
        .chars()
        .flat_map(|c| match c {
            '%' | '_' | '\\' => vec!['\\', c],
            c => vec![c],
        })
        .collect();
    format!("{escaped}%")
}

#[async_trait]
impl SyncStore for DieselStore {
    async fn create_directory(&self, d: NewDirectory) -> Result<Directory, SyncError> {
        self.db
            .write(move |conn| {
                let at = now();
                let row = DirectoryRow {
                    id: new_id(),
                    parent_id: d.parent_id,
                    kind: d.kind.name().to_string(),
                    display_name: d.display_name,
                    config_json: d.config_json,
                    sync_interval_secs: i64::from(d.sync_interval_secs),
                    brake_percent: i32::try_from(d.brake.max_percent).unwrap_or(i32::MAX),
                    brake_min: i32::try_from(d.brake.min_removals).unwrap_or(i32::MAX),
                    state: State::Active.name().to_string(),
                    scim_token_hash: d.scim_token_hash,
                    last_error: String::new(),
                    created_at: at,
                    updated_at: at,
                    scim_log_days: i32::try_from(d.scim_log_days).unwrap_or(i32::MAX),
                    authority: Authority::initial(d.kind).name().to_string(),
                    brake_window_secs: i64::try_from(d.brake.window_secs).unwrap_or(i64::MAX),
                };
                diesel::insert_into(directories::table).values(&row).execute(conn)?;
                row.try_into()
            })
            .await
    }

    async fn get_directory(&self, id: &str) -> Result<Directory, SyncError> {
        let id = id.to_string();
        self.db.run(move |conn| load_directory(conn, &id)).await
    }

    async fn list_directories(
        &self,
        parent_id: Option<String>,
        after: Option<String>,
        limit: usize,
    ) -> Result<Page<Directory>, SyncError> {
        self.db
            .run(move |conn| {
                let mut q = directories::table.order(directories::id).limit(limit as i64 + 1).into_boxed();
                if let Some(p) = parent_id {
                    q = q.filter(directories::parent_id.eq(p));
                }
                if let Some(a) = after {
                    q = q.filter(directories::id.gt(a));
                }
                let rows = q.load::<DirectoryRow>(conn)?;
                let items = rows.into_iter().map(Directory::try_from).collect::<Result<Vec<_>, _>>()?;
                Ok(page_of(with_proof(conn, items)?, limit, |d: &Directory| d.id.clone()))
            })
            .await
    }

    async fn update_directory(&self, id: &str, patch: DirectoryPatch) -> Result<Directory, SyncError> {
        let id = id.to_string();
        // The SCIM log switch may have changed: this replica sees it on the next request.
        self.scim_log.forget(&id);
        let forget = (self.scim_log.clone(), id.clone());
        let result = self
            .db
            .write(move |conn| {
                let mut d = load_directory(conn, &id)?;
                if let Some(n) = patch.display_name {
                    d.display_name = n;
                }
                if let Some(c) = patch.config_json {
                    d.config_json = c;
                }
                if let Some(i) = patch.sync_interval_secs {
                    d.sync_interval_secs = i;
                }
                if let Some(b) = patch.brake {
                    d.brake = b;
                }
                if let Some(days) = patch.scim_log_days {
                    d.scim_log_days = days;
                }
                diesel::update(directories::table.find(&id))
                    .set((
                        directories::display_name.eq(&d.display_name),
                        directories::config_json.eq(&d.config_json),
                        directories::sync_interval_secs.eq(i64::from(d.sync_interval_secs)),
                        directories::brake_percent.eq(i32::try_from(d.brake.max_percent).unwrap_or(i32::MAX)),
                        directories::brake_min.eq(i32::try_from(d.brake.min_removals).unwrap_or(i32::MAX)),
                        directories::brake_window_secs.eq(i64::try_from(d.brake.window_secs).unwrap_or(i64::MAX)),
                        directories::scim_log_days.eq(i32::try_from(d.scim_log_days).unwrap_or(i32::MAX)),
                        directories::updated_at.eq(now()),
                    ))
                    .execute(conn)?;
                load_directory(conn, &id)
            })
            .await;
        // Again after the commit: a request meanwhile may have cached the old value.
        forget.0.forget(&forget.1);
        result
    }

    async fn set_state(&self, id: &str, state: State) -> Result<Directory, SyncError> {
        let id = id.to_string();
        let result = self
            .db
            .write(move |conn| {
                load_directory(conn, &id)?;
                diesel::update(directories::table.find(&id))
                    .set((directories::state.eq(state.name()), directories::updated_at.eq(now())))
                    .execute(conn)?;
                load_directory(conn, &id)
            })
            .await;
        // A resumed directory has work waiting in its queue.
        self.committed();
        result
    }

    async fn set_last_error(&self, id: &str, error: &str) -> Result<(), SyncError> {
        let (id, error) = (id.to_string(), error.to_string());
        self.db
            .write(move |conn| {
                diesel::update(directories::table.find(&id).filter(directories::last_error.ne(&error)))
                    .set(directories::last_error.eq(&error))
                    .execute(conn)?;
                Ok(())
            })
            .await
    }

    async fn set_token_hash(&self, id: &str, hash: &str) -> Result<(), SyncError> {
        let (id, hash) = (id.to_string(), hash.to_string());
        self.db
            .write(move |conn| {
                let n = diesel::update(directories::table.find(&id))
                    .set((directories::scim_token_hash.eq(Some(hash)), directories::updated_at.eq(now())))
                    .execute(conn)?;
                if n == 0 {
                    return Err(SyncError::NotFound { what: "directory", id });
                }
                Ok(())
            })
            .await
    }

    async fn delete_directory(&self, id: &str) -> Result<(), SyncError> {
        let id = id.to_string();
        self.db
            .write(move |conn| {
                load_directory(conn, &id)?;
                diesel::delete(reconcile_queue::table.filter(reconcile_queue::directory_id.eq(&id))).execute(conn)?;
                // Memberships go with their groups (ON DELETE CASCADE); say so explicitly
                // for SQLite files created without foreign keys enforced.
                let groups = dir_groups::table.filter(dir_groups::directory_id.eq(&id)).select(dir_groups::id);
                diesel::delete(dir_members::table.filter(dir_members::group_id.eq_any(groups))).execute(conn)?;
                diesel::delete(dir_groups::table.filter(dir_groups::directory_id.eq(&id))).execute(conn)?;
                diesel::delete(dir_users::table.filter(dir_users::directory_id.eq(&id))).execute(conn)?;
                diesel::delete(org_watch::table.filter(org_watch::directory_id.eq(&id))).execute(conn)?;
                diesel::delete(directories::table.find(&id)).execute(conn)?;
                Ok(())
            })
            .await
    }

    async fn mirror_counts(&self, directory: &str) -> Result<(i64, i64, i64), SyncError> {
        let dir = directory.to_string();
        self.db
            .run(move |conn| {
                let users: i64 = dir_users::table.filter(dir_users::directory_id.eq(&dir)).count().get_result(conn)?;
                let active: i64 = dir_users::table
                    .filter(dir_users::directory_id.eq(&dir))
                    .filter(dir_users::active.eq(true))
                    .count()
                    .get_result(conn)?;
                let groups: i64 =
                    dir_groups::table.filter(dir_groups::directory_id.eq(&dir)).count().get_result(conn)?;
                Ok((users, active, groups))
            })
            .await
    }

    async fn list_users(
        &self,
        directory: &str,
        filter: UserFilter,
        after: Option<String>,
        limit: usize,
    ) -> Result<Page<MirrorUser>, SyncError> {
        let dir = directory.to_string();
        self.db
            .run(move |conn| {
                let mut q = dir_users::table
                    .filter(dir_users::directory_id.eq(&dir))
                    .order(dir_users::id)
                    .limit(limit as i64 + 1)
                    .into_boxed();
                if let Some(p) = filter.prefix {
                    let pattern = like_prefix(&p.to_lowercase());
                    q = q.filter(
                        dir_users::user_name_lower
                            .like(pattern.clone())
                            .escape('\\')
                            .or(dir_users::email_lower.like(pattern).escape('\\')),
                    );
                }
                if let Some(a) = filter.active {
                    q = q.filter(dir_users::active.eq(a));
                }
                if let Some(a) = after {
                    q = q.filter(dir_users::id.gt(a));
                }
                let rows = q.load::<UserRow>(conn)?;
                Ok(page_of(rows.into_iter().map(MirrorUser::from).collect(), limit, |u: &MirrorUser| u.id.clone()))
            })
            .await
    }

    async fn list_groups(
        &self,
        directory: &str,
        prefix: Option<String>,
        after: Option<String>,
        limit: usize,
    ) -> Result<Page<MirrorGroup>, SyncError> {
        let dir = directory.to_string();
        self.db
            .run(move |conn| {
                let mut q = dir_groups::table
                    .filter(dir_groups::directory_id.eq(&dir))
                    .order(dir_groups::id)
                    .limit(limit as i64 + 1)
                    .into_boxed();
                if let Some(p) = prefix {
                    q = q.filter(dir_groups::display_name_lower.like(like_prefix(&p.to_lowercase())).escape('\\'));
                }
                if let Some(a) = after {
                    q = q.filter(dir_groups::id.gt(a));
                }
                let rows = q.load::<GroupRow>(conn)?;
                Ok(page_of(rows.into_iter().map(MirrorGroup::from).collect(), limit, |g: &MirrorGroup| g.id.clone()))
            })
            .await
    }

    async fn users_by_ids(&self, directory: &str, ids: Vec<String>) -> Result<Vec<MirrorUser>, SyncError> {
        let dir = directory.to_string();
        self.db
            .run(move |conn| {
                let mut out = Vec::with_capacity(ids.len());
                for chunk in ids.chunks(CHUNK) {
                    let rows = dir_users::table
                        .filter(dir_users::directory_id.eq(&dir))
                        .filter(dir_users::id.eq_any(chunk))
                        .load::<UserRow>(conn)?;
                    out.extend(rows.into_iter().map(MirrorUser::from));
                }
                Ok(out)
            })
            .await
    }

    async fn groups_of(
        &self,
        directory: &str,
        user_ids: Vec<String>,
    ) -> Result<HashMap<String, Vec<(String, String)>>, SyncError> {
        let dir = directory.to_string();
        self.db.run(move |conn| groups_of_users(conn, &dir, &user_ids)).await
    }

    async fn emails_in_mirror(
        &self,
        directories_: Vec<String>,
        emails: Vec<String>,
    ) -> Result<HashSet<String>, SyncError> {
        self.db
            .run(move |conn| {
                let mut out = HashSet::new();
                for chunk in emails.chunks(CHUNK) {
                    let found: Vec<Option<String>> = dir_users::table
                        .filter(dir_users::directory_id.eq_any(&directories_))
                        .filter(dir_users::email_lower.eq_any(chunk))
                        .select(dir_users::email_lower)
                        .load(conn)?;
                    out.extend(found.into_iter().flatten());
                }
                Ok(out)
            })
            .await
    }

    async fn existing_groups(
        &self,
        directories_: Vec<String>,
        ids: Vec<String>,
        names_lower: Vec<String>,
    ) -> Result<(HashSet<String>, HashSet<String>), SyncError> {
        self.db
            .run(move |conn| {
                let by_id: Vec<String> = dir_groups::table
                    .filter(dir_groups::directory_id.eq_any(&directories_))
                    .filter(dir_groups::id.eq_any(&ids))
                    .select(dir_groups::id)
                    .load(conn)?;
                let by_name: Vec<String> = dir_groups::table
                    .filter(dir_groups::directory_id.eq_any(&directories_))
                    .filter(dir_groups::display_name_lower.eq_any(&names_lower))
                    .select(dir_groups::display_name_lower)
                    .load(conn)?;
                Ok((by_id.into_iter().collect(), by_name.into_iter().collect()))
            })
            .await
    }

    async fn directories_with_queue(&self) -> Result<Vec<String>, SyncError> {
        self.db
            .run(move |conn| {
                Ok(reconcile_queue::table.select(reconcile_queue::directory_id).distinct().load::<String>(conn)?)
            })
            .await
    }

    async fn peek_queue(&self, directory: &str, limit: usize) -> Result<Vec<QueueEntry>, SyncError> {
        let dir = directory.to_string();
        self.db
            .run(move |conn| {
                let rows: Vec<(i64, String, String, String)> = reconcile_queue::table
                    .filter(reconcile_queue::directory_id.eq(&dir))
                    .order(reconcile_queue::seq)
                    .limit(limit as i64)
                    .select((
                        reconcile_queue::seq,
                        reconcile_queue::user_id,
                        reconcile_queue::email,
                        reconcile_queue::display_name,
                    ))
                    .load(conn)?;
                Ok(rows
                    .into_iter()
                    .map(|(seq, user_id, email, display_name)| QueueEntry { seq, user_id, email, display_name })
                    .collect())
            })
            .await
    }

    async fn delete_queue(&self, seqs: Vec<i64>) -> Result<(), SyncError> {
        self.db
            .write(move |conn| {
                for chunk in seqs.chunks(CHUNK) {
                    diesel::delete(reconcile_queue::table.filter(reconcile_queue::seq.eq_any(chunk))).execute(conn)?;
                }
                Ok(())
            })
            .await
    }

    async fn queue_lag(&self, directory: Option<String>) -> Result<(i64, Option<DateTime<Utc>>), SyncError> {
        self.db
            .run(move |conn| {
                let mut count = reconcile_queue::table.count().into_boxed();
                let mut oldest = reconcile_queue::table
                    .select(reconcile_queue::enqueued_at)
                    .order(reconcile_queue::seq)
                    .limit(1)
                    .into_boxed();
                if let Some(d) = directory {
                    count = count.filter(reconcile_queue::directory_id.eq(d.clone()));
                    oldest = oldest.filter(reconcile_queue::directory_id.eq(d));
                }
                let n: i64 = count.get_result(conn)?;
                let first: Option<NaiveDateTime> = oldest.first(conn).optional()?;
                Ok((n, first.map(utc)))
            })
            .await
    }

    async fn create_run(&self, run: SyncRun) -> Result<(), SyncError> {
        let row = run_row(&run)?;
        let owner = run.owner.clone();
        self.db
            .write(move |conn| {
                diesel::insert_into(sync_runs::table).values(&row).execute(conn)?;
                if !owner.is_empty() {
                    diesel::insert_into(super::schema::run_owners::table)
                        .values((
                            super::schema::run_owners::run_id.eq(&row.id),
                            super::schema::run_owners::owner.eq(&owner),
                        ))
                        .execute(conn)?;
                }
                Ok(())
            })
            .await
    }

    async fn save_run(&self, run: SyncRun) -> Result<(), SyncError> {
        let row = run_row(&run)?;
        self.db
            .write(move |conn| {
                diesel::update(sync_runs::table.find(&row.id)).set(&row).execute(conn)?;
                Ok(())
            })
            .await
    }

    async fn transition_run(
        &self,
        id: &str,
        from: RunState,
        to: RunState,
        decided_by: &str,
    ) -> Result<bool, SyncError> {
        let (id, decided_by) = (id.to_string(), decided_by.to_string());
        self.db
            .write(move |conn| {
                // Compare and set: of two administrators deciding at once, one wins.
                let n = diesel::update(sync_runs::table.find(&id).filter(sync_runs::state.eq(from.name())))
                    .set((sync_runs::state.eq(to.name()), sync_runs::decided_by.eq(&decided_by)))
                    .execute(conn)?;
                Ok(n == 1)
            })
            .await
    }

    async fn add_items(&self, run_id: &str, items: Vec<RunItem>) -> Result<(), SyncError> {
        if items.is_empty() {
            return Ok(());
        }
        let run_id = run_id.to_string();
        self.db
            .write(move |conn| {
                let last: Option<i64> = run_items::table
                    .filter(run_items::run_id.eq(&run_id))
                    .select(diesel::dsl::max(run_items::seq))
                    .first(conn)?;
                let start = last.unwrap_or(0) + 1;
                let rows: Vec<ItemRow> = items
                    .into_iter()
                    .enumerate()
                    .map(|(i, it)| ItemRow {
                        run_id: run_id.clone(),
                        seq: start + i as i64,
                        org_id: it.org_id,
                        user_ref: it.user_ref,
                        email: it.email,
                        display_name: it.display_name,
                        kind: it.kind.name().to_string(),
                        detail: it.detail,
                        member_id: it.member_id,
                    })
                    .collect();
                for chunk in rows.chunks(CHUNK) {
                    insert_many!(conn, run_items::table, chunk)?;
                }
                Ok(())
            })
            .await
    }

    async fn get_run(&self, id: &str) -> Result<SyncRun, SyncError> {
        let id = id.to_string();
        self.db
            .run(move |conn| {
                sync_runs::table
                    .find(&id)
                    .first::<RunRow>(conn)
                    .optional()?
                    .ok_or_else(|| SyncError::NotFound { what: "sync run", id: id.clone() })?
                    .try_into()
            })
            .await
    }

    async fn run_items(
        &self,
        run_id: &str,
        kind: Option<ItemKind>,
        limit: usize,
    ) -> Result<(Vec<RunItem>, i64), SyncError> {
        let run_id = run_id.to_string();
        self.db
            .run(move |conn| {
                let mut q = run_items::table.filter(run_items::run_id.eq(&run_id)).into_boxed();
                let mut c = run_items::table.filter(run_items::run_id.eq(&run_id)).count().into_boxed();
                if let Some(k) = kind {
                    q = q.filter(run_items::kind.eq(k.name()));
                    c = c.filter(run_items::kind.eq(k.name()));
                }
                let total: i64 = c.get_result(conn)?;
                let rows = q.order(run_items::seq).limit(limit as i64).load::<ItemRow>(conn)?;
                let items = rows
                    .into_iter()
                    .map(|r| {
                        Ok(RunItem {
                            kind: ItemKind::from_name(&r.kind)
                                .ok_or_else(|| SyncError::Corrupt(format!("run item kind {}", r.kind)))?,
                            org_id: r.org_id,
                            user_ref: r.user_ref,
                            email: r.email,
                            display_name: r.display_name,
                            detail: r.detail,
                            member_id: r.member_id,
                        })
                    })
                    .collect::<Result<Vec<_>, SyncError>>()?;
                Ok((items, total))
            })
            .await
    }

    async fn list_runs(
        &self,
        directory: &str,
        before: Option<String>,
        limit: usize,
    ) -> Result<Page<SyncRun>, SyncError> {
        let dir = directory.to_string();
        self.db
            .run(move |conn| {
                let mut q = sync_runs::table
                    .filter(sync_runs::directory_id.eq(&dir))
                    .order(sync_runs::id.desc())
                    .limit(limit as i64 + 1)
                    .into_boxed();
                if let Some(b) = before {
                    q = q.filter(sync_runs::id.lt(b));
                }
                let rows = q.load::<RunRow>(conn)?;
                let items = rows.into_iter().map(SyncRun::try_from).collect::<Result<Vec<_>, _>>()?;
                Ok(page_of(items, limit, |r: &SyncRun| r.id.clone()))
            })
            .await
    }

    async fn held_runs(&self, directory: &str) -> Result<i64, SyncError> {
        let dir = directory.to_string();
        self.db
            .run(move |conn| {
                Ok(sync_runs::table
                    .filter(sync_runs::directory_id.eq(&dir))
                    .filter(sync_runs::state.eq(RunState::Held.name()))
                    .count()
                    .get_result(conn)?)
            })
            .await
    }

    async fn fail_interrupted_runs(&self, stale_before: Option<DateTime<Utc>>) -> Result<usize, SyncError> {
        self.db
            .write(move |conn| {
                let mut running =
                    diesel::update(sync_runs::table).filter(sync_runs::state.eq(RunState::Running.name())).into_boxed();
                if let Some(t) = stale_before {
                    let t = t.naive_utc();
                    running = running.filter(
                        sync_runs::heartbeat_at
                            .lt(t)
                            .or(sync_runs::heartbeat_at.is_null().and(sync_runs::started_at.lt(t))),
                    );
                }
                Ok(running
                    .set((
                        sync_runs::state.eq(RunState::Failed.name()),
                        sync_runs::outcome
                            .eq("interrupted: the service stopped during the run; its queued changes are reconciled by a later run"),
                        sync_runs::ended_at.eq(Some(now())),
                    ))
                    .execute(conn)?)
            })
            .await
    }

    async fn events_after(
        &self,
        after: i64,
        directory: Option<String>,
        limit: usize,
    ) -> Result<Vec<DirEvent>, SyncError> {
        self.db
            .run(move |conn| {
                let mut q = dir_events::table
                    .filter(dir_events::seq.gt(after))
                    .order(dir_events::seq)
                    .limit(limit as i64)
                    .into_boxed();
                if let Some(d) = directory {
                    q = q.filter(dir_events::directory_id.eq(d));
                }
                let rows = q.load::<EventRow>(conn)?;
                Ok(rows
                    .into_iter()
                    .map(|r| DirEvent {
                        seq: r.seq,
                        id: r.id,
                        directory_id: r.directory_id,
                        event_type: r.event_type,
                        resource_id: r.resource_id,
                        member_id: r.member_id,
                        data_json: r.data_json,
                        previous_json: r.previous_json,
                        created_at: utc(r.created_at),
                    })
                    .collect())
            })
            .await
    }

    async fn prune_events(&self, before: DateTime<Utc>) -> Result<usize, SyncError> {
        let before = before.naive_utc();
        self.db
            .write(move |conn| {
                Ok(diesel::delete(dir_events::table.filter(dir_events::created_at.lt(before))).execute(conn)?)
            })
            .await
    }

    async fn watched_version(&self, directory: &str, org_id: &str) -> Result<Option<i64>, SyncError> {
        let (dir, org) = (directory.to_string(), org_id.to_string());
        self.db
            .run(move |conn| {
                Ok(org_watch::table
                    .find((&dir, &org))
                    .select(org_watch::settings_version)
                    .first::<i64>(conn)
                    .optional()?)
            })
            .await
    }

    async fn set_watched_version(&self, directory: &str, org_id: &str, version: i64) -> Result<(), SyncError> {
        let (dir, org) = (directory.to_string(), org_id.to_string());
        self.db
            .write(move |conn| {
                // No upsert on the combined connection: update, then insert if nothing was there.
                let n = diesel::update(org_watch::table.find((&dir, &org)))
                    .set(org_watch::settings_version.eq(version))
                    .execute(conn)?;
                if n == 0 {
                    diesel::insert_into(org_watch::table)
                        .values((
                            org_watch::directory_id.eq(&dir),
                            org_watch::org_id.eq(&org),
                            org_watch::settings_version.eq(version),
                        ))
                        .execute(conn)?;
                }
                Ok(())
            })
            .await
    }
}

/// Each user's direct groups, (id, name), one query per chunk of users.
pub(crate) fn groups_of_users(
    conn: &mut DbConnection,
    directory: &str,
    user_ids: &[String],
) -> Result<HashMap<String, Vec<(String, String)>>, SyncError> {
    let mut out: HashMap<String, Vec<(String, String)>> = HashMap::new();
    for chunk in user_ids.chunks(CHUNK) {
        let rows: Vec<(String, String, String)> = dir_members::table
            .inner_join(dir_groups::table)
            .filter(dir_groups::directory_id.eq(directory))
            .filter(dir_members::member_id.eq_any(chunk))
            .order((dir_members::member_id, dir_groups::id))
            .select((dir_members::member_id, dir_groups::id, dir_groups::display_name))
            .load(conn)?;
        for (member, gid, name) in rows {
            out.entry(member).or_default().push((gid, name));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod heartbeat_tests {
    use muster_runtime::Db;

    use super::*;
    use crate::domain::brake::Brake;
    use crate::domain::run::{RunState, SyncRun, Trigger};
    use crate::store::{NewDirectory, SyncStore};

    fn run(dir: &str) -> SyncRun {
        SyncRun::new(uuid::Uuid::now_v7().to_string(), dir, Trigger::ScimPush, "system:test")
    }

    #[tokio::test]
    async fn only_runs_whose_heartbeat_went_quiet_are_taken_for_dead() {
        let tmp = tempfile::tempdir().unwrap();
        let db = Db::connect(&format!("sqlite://{}", tmp.path().join("t.db").display()), 2).unwrap();
        db.migrate(crate::MIGRATIONS).await.unwrap();
        let store = DieselStore::new(db.clone());
        let dir = store
            .create_directory(NewDirectory {
                parent_id: "p".into(),
                kind: crate::domain::directory::Kind::SCIM,
                display_name: "d".into(),
                config_json: "{}".into(),
                sync_interval_secs: 0,
                brake: Brake::default(),
                scim_token_hash: None,
                scim_log_days: 0,
            })
            .await
            .unwrap()
            .id;
        let (alive, dead) = (run(&dir), run(&dir));
        store.create_run(alive.clone()).await.unwrap();
        store.create_run(dead.clone()).await.unwrap();
        let quiet = (Utc::now() - chrono::Duration::hours(1)).naive_utc();
        let dead_id = dead.id.clone();
        db.write(move |conn| -> Result<usize, SyncError> {
            Ok(diesel::update(sync_runs::table.find(&dead_id))
                .set(sync_runs::heartbeat_at.eq(Some(quiet)))
                .execute(conn)?)
        })
        .await
        .unwrap();

        let cutoff = Utc::now() - chrono::Duration::minutes(15);
        assert_eq!(store.fail_interrupted_runs(Some(cutoff)).await.unwrap(), 1);
        assert_eq!(store.get_run(&dead.id).await.unwrap().state, RunState::Failed);
        assert_eq!(store.get_run(&alive.id).await.unwrap().state, RunState::Running, "a live replica's run stays");
        assert_eq!(store.fail_interrupted_runs(None).await.unwrap(), 1, "alone on the database: all of them");
        assert_eq!(store.get_run(&alive.id).await.unwrap().state, RunState::Failed);
    }
}
