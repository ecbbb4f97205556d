//! The mirror side of pull directories: pages from a connector written one
//! transaction each (with the directory events and the reconcile queue rows of the
//! users they touch, as the SCIM path writes them), mark-and-sweep of full listings
//! by a generation number, the stored cursor, the schedule, and the lease that lets
//! one replica at a time pull a directory.
//!
//! Costs follow the change, not the directory: a row whose content hash is unchanged
//! gets only its generation stamp (one bulk UPDATE per page, no event, no queue row);
//! the sweep at the end of a listing reads only the rows the listing did not stamp.
//! Every write is fenced by the lease: a replica that lost it writes nothing more.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use chrono::{DateTime, NaiveDateTime, Utc};
use diesel::prelude::*;
use diesel::result::{DatabaseErrorKind, Error as DieselError};
use muster_connector::{Group, MembershipChange, Page, User};
use muster_runtime::DbConnection;

use super::diesel_store::{
    CHUNK, DieselStore, GroupRow, NewEventRow, NewQueueRow, UserRow, enqueue, insert_events, insert_many, now, utc,
};
use super::schema::{dir_groups, dir_members, dir_user_emails, dir_users, directories, pull_state, reconcile_queue};
use super::scim_store::{all_emails, group_json, member_event, queue_row, user_json};
use crate::domain::directory::Kind;
use crate::domain::mirror::{display_name_of, email_of};
use crate::domain::pull::{group_attributes, group_hash, mirror_id, user_attributes, user_hash};
use crate::error::SyncError;

/// Which pass a page belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PagePass {
    /// A full listing with this generation: rows it mentions are stamped with it.
    Listing {
        /// The listing's generation.
        generation: i64,
    },
    /// A change feed: upserts and explicit removals.
    Changes,
}

/// What one page (or one sweep) changed in the mirror.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PullWrite {
    /// Users created or changed.
    pub users_changed: i64,
    /// Users removed.
    pub users_removed: i64,
    /// Groups created, changed or removed.
    pub groups_changed: i64,
    /// Memberships added or removed.
    pub memberships_changed: i64,
}

impl PullWrite {
    /// Adds another tally.
    pub fn add(&mut self, o: &PullWrite) {
        self.users_changed += o.users_changed;
        self.users_removed += o.users_removed;
        self.groups_changed += o.groups_changed;
        self.memberships_changed += o.memberships_changed;
    }
}

/// A pull directory's stored state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PullState {
    /// Where the change feed resumes.
    pub cursor: Option<String>,
    /// The last full listing's generation.
    pub listing_generation: i64,
    /// When the last full listing completed.
    pub last_full_listing: Option<DateTime<Utc>>,
    /// When the last pull succeeded.
    pub last_success: Option<DateTime<Utc>>,
    /// When the next pull is due.
    pub next_pull_at: DateTime<Utc>,
    /// Consecutive failed pulls.
    pub failures: u32,
    /// Who holds the lease.
    pub lease_holder: Option<String>,
    /// Until when.
    pub lease_expires: Option<DateTime<Utc>>,
}

#[derive(Queryable)]
struct StateRow {
    _directory_id: String,
    cursor: Option<String>,
    listing_generation: i64,
    last_full_listing: Option<NaiveDateTime>,
    last_success: Option<NaiveDateTime>,
    next_pull_at: NaiveDateTime,
    failures: i32,
    lease_holder: Option<String>,
    lease_expires: Option<NaiveDateTime>,
}

fn naive(t: DateTime<Utc>) -> NaiveDateTime {
    DateTime::from_timestamp_micros(t.timestamp_micros()).unwrap_or(t).naive_utc()
}

fn later(t: DateTime<Utc>, by: Duration) -> NaiveDateTime {
    naive(t + chrono::Duration::from_std(by).unwrap_or(chrono::Duration::days(365)))
}

fn lease_lost(dir: &str) -> SyncError {
    SyncError::FailedPrecondition {
        rule: "lease_lost",
        message: format!("directory {dir}: this replica no longer holds the pull lease; another one continues"),
    }
}

/// Stops a write by a replica that no longer holds the lease.
fn fence(conn: &mut DbConnection, dir: &str, holder: &str) -> Result<(), SyncError> {
    let current: Option<Option<String>> =
        pull_state::table.find(dir).select(pull_state::lease_holder).first::<Option<String>>(conn).optional()?;
    match current {
        Some(Some(h)) if h == holder => Ok(()),
        _ => Err(lease_lost(dir)),
    }
}

/// The pulled user as a mirror row.
fn user_row(dir: &str, u: &User, hash: String, generation: i64, old: Option<&UserRow>) -> UserRow {
    let attrs = user_attributes(u);
    let at = now();
    UserRow {
        id: mirror_id(dir, &u.id),
        directory_id: dir.to_string(),
        user_name: u.user_name.clone(),
        user_name_lower: u.user_name.to_lowercase(),
        external_id: Some(u.id.clone()),
        email_lower: email_of(&u.user_name, &attrs),
        display_name: display_name_of(&u.user_name, &attrs),
        active: u.active,
        attributes_json: serde_json::Value::Object(attrs).to_string(),
        version: old.map(|o| o.version + 1).unwrap_or(1),
        created_at: old.map(|o| o.created_at).unwrap_or(at),
        updated_at: at,
        content_hash: Some(hash),
        seen_generation: generation,
    }
}

fn set_emails(conn: &mut DbConnection, row: &UserRow) -> Result<(), SyncError> {
    diesel::delete(dir_user_emails::table.filter(dir_user_emails::user_id.eq(&row.id))).execute(conn)?;
    let attrs: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(&row.attributes_json).unwrap_or_default();
    let rows: Vec<_> = all_emails(&attrs)
        .into_iter()
        .map(|e| {
            (
                dir_user_emails::user_id.eq(row.id.clone()),
                dir_user_emails::directory_id.eq(row.directory_id.clone()),
                dir_user_emails::email_lower.eq(e),
            )
        })
        .collect();
    for chunk in rows.chunks(CHUNK) {
        insert_many!(conn, dir_user_emails::table, chunk)?;
    }
    Ok(())
}

/// What a page's transaction collects: events and queue rows are written at its end.
#[derive(Default)]
struct Tx {
    events: Vec<NewEventRow>,
    queue: Vec<NewQueueRow>,
    /// Users whose groups changed; queued at the end (deduplicated, if still mirrored).
    touched: Vec<String>,
    write: PullWrite,
}

impl Tx {
    fn commit(mut self, conn: &mut DbConnection, dir: &str) -> Result<PullWrite, SyncError> {
        self.touched.sort();
        self.touched.dedup();
        let queued: std::collections::HashSet<String> = self.queue.iter().map(|q| q.user_id.clone()).collect();
        let touched: Vec<String> = self.touched.into_iter().filter(|t| !queued.contains(t)).collect();
        for chunk in touched.chunks(CHUNK) {
            let rows = dir_users::table
                .filter(dir_users::directory_id.eq(dir))
                .filter(dir_users::id.eq_any(chunk))
                .load::<UserRow>(conn)?;
            self.queue.extend(rows.iter().map(queue_row));
        }
        enqueue(conn, self.queue)?;
        insert_events(conn, self.events)?;
        Ok(self.write)
    }
}

/// The last of each id, in first-seen order: a page may name an object twice (Entra
/// splits a group's `members@delta` over several entries), and one row is written.
fn last_of<T: Clone>(items: &[T], id: impl Fn(&T) -> &str) -> Vec<T> {
    let mut index: HashMap<String, usize> = HashMap::new();
    let mut out: Vec<T> = Vec::new();
    for item in items {
        match index.get(id(item)) {
            Some(&i) => out[i] = item.clone(),
            None => {
                index.insert(id(item).to_string(), out.len());
                out.push(item.clone());
            }
        }
    }
    out
}

fn write_users(
    conn: &mut DbConnection,
    dir: &str,
    users: &[User],
    pass: PagePass,
    tx: &mut Tx,
) -> Result<(), SyncError> {
    let users = last_of(users, |u| u.id.as_str());
    let generation = match pass {
        PagePass::Listing { generation } => generation,
        PagePass::Changes => 0,
    };
    for chunk in users.chunks(CHUNK) {
        let ids: Vec<String> = chunk.iter().map(|u| mirror_id(dir, &u.id)).collect();
        let existing: HashMap<String, UserRow> = dir_users::table
            .filter(dir_users::directory_id.eq(dir))
            .filter(dir_users::id.eq_any(&ids))
            .load::<UserRow>(conn)?
            .into_iter()
            .map(|r| (r.id.clone(), r))
            .collect();
        let mut unchanged = Vec::new();
        for u in chunk {
            let hash = user_hash(u);
            let id = mirror_id(dir, &u.id);
            let old = existing.get(&id);
            if old.is_some_and(|o| o.content_hash.as_deref() == Some(hash.as_str())) {
                unchanged.push(id);
                continue;
            }
            let row = user_row(dir, u, hash, old.map(|o| o.seen_generation.max(generation)).unwrap_or(generation), old);
            // Names are unique per directory. When an IdP hands one user's old name to
            // another, the earlier holder steps aside until its own row is rewritten
            // (later in this listing) or swept: a rename never fails the page.
            diesel::update(
                dir_users::table
                    .filter(dir_users::directory_id.eq(dir))
                    .filter(dir_users::user_name_lower.eq(&row.user_name_lower))
                    .filter(dir_users::id.ne(&row.id)),
            )
            .set(dir_users::user_name_lower.eq(format!("{}~displaced~{}", row.user_name_lower, row.id)))
            .execute(conn)?;
            match old {
                Some(old) => {
                    diesel::update(dir_users::table.find(&row.id))
                        .set((
                            dir_users::user_name.eq(&row.user_name),
                            dir_users::user_name_lower.eq(&row.user_name_lower),
                            dir_users::external_id.eq(&row.external_id),
                            dir_users::email_lower.eq(&row.email_lower),
                            dir_users::display_name.eq(&row.display_name),
                            dir_users::active.eq(row.active),
                            dir_users::attributes_json.eq(&row.attributes_json),
                            dir_users::version.eq(row.version),
                            dir_users::updated_at.eq(row.updated_at),
                            dir_users::content_hash.eq(&row.content_hash),
                            dir_users::seen_generation.eq(row.seen_generation),
                        ))
                        .execute(conn)?;
                    let kind = if old.active && !row.active { "user.deactivated" } else { "user.updated" };
                    let mut e = NewEventRow::new(dir, kind, &row.id);
                    e.data_json = user_json(&row);
                    e.previous_json = user_json(old);
                    tx.events.push(e);
                    // Only what reconciling reads makes a queue row; a vendor field that
                    // changes on every login (Okta `lastLogin`) does not.
                    if old.active != row.active
                        || old.email_lower != row.email_lower
                        || old.display_name != row.display_name
                    {
                        tx.queue.push(queue_row(&row));
                    }
                }
                None => {
                    diesel::insert_into(dir_users::table).values(&row).execute(conn)?;
                    let mut e = NewEventRow::new(dir, "user.created", &row.id);
                    e.data_json = user_json(&row);
                    tx.events.push(e);
                    tx.queue.push(queue_row(&row));
                }
            }
            set_emails(conn, &row)?;
            tx.write.users_changed += 1;
        }
        if generation > 0 && !unchanged.is_empty() {
            diesel::update(
                dir_users::table
                    .filter(dir_users::id.eq_any(&unchanged))
                    .filter(dir_users::seen_generation.ne(generation)),
            )
            .set(dir_users::seen_generation.eq(generation))
            .execute(conn)?;
        }
    }
    Ok(())
}

fn group_row(dir: &str, g: &Group, hash: Option<String>, generation: i64, old: Option<&GroupRow>) -> GroupRow {
    let at = now();
    GroupRow {
        id: mirror_id(dir, &g.id),
        directory_id: dir.to_string(),
        display_name: g.name.clone(),
        display_name_lower: g.name.to_lowercase(),
        external_id: Some(g.id.clone()),
        attributes_json: serde_json::Value::Object(group_attributes(g)).to_string(),
        member_count: old.map(|o| o.member_count).unwrap_or(0),
        version: old.map(|o| o.version + 1).unwrap_or(1),
        created_at: old.map(|o| o.created_at).unwrap_or(at),
        updated_at: at,
        content_hash: hash,
        seen_generation: generation,
    }
}

fn write_groups(
    conn: &mut DbConnection,
    dir: &str,
    groups: &[Group],
    pass: PagePass,
    tx: &mut Tx,
) -> Result<(), SyncError> {
    let groups = last_of(groups, |g| g.id.as_str());
    let generation = match pass {
        PagePass::Listing { generation } => generation,
        PagePass::Changes => 0,
    };
    for chunk in groups.chunks(CHUNK) {
        let ids: Vec<String> = chunk.iter().map(|g| mirror_id(dir, &g.id)).collect();
        let existing: HashMap<String, GroupRow> = dir_groups::table
            .filter(dir_groups::directory_id.eq(dir))
            .filter(dir_groups::id.eq_any(&ids))
            .load::<GroupRow>(conn)?
            .into_iter()
            .map(|r| (r.id.clone(), r))
            .collect();
        let mut unchanged = Vec::new();
        for g in chunk {
            let hash = group_hash(g);
            let id = mirror_id(dir, &g.id);
            let old = existing.get(&id);
            if old.is_some_and(|o| o.content_hash.as_deref() == Some(hash.as_str())) {
                unchanged.push(id);
                continue;
            }
            let row = group_row(
                dir,
                g,
                Some(hash),
                old.map(|o| o.seen_generation.max(generation)).unwrap_or(generation),
                old,
            );
            match old {
                Some(old) => {
                    diesel::update(dir_groups::table.find(&row.id))
                        .set((
                            dir_groups::display_name.eq(&row.display_name),
                            dir_groups::display_name_lower.eq(&row.display_name_lower),
                            dir_groups::attributes_json.eq(&row.attributes_json),
                            dir_groups::version.eq(row.version),
                            dir_groups::updated_at.eq(row.updated_at),
                            dir_groups::content_hash.eq(&row.content_hash),
                            dir_groups::seen_generation.eq(row.seen_generation),
                        ))
                        .execute(conn)?;
                    let mut e = NewEventRow::new(dir, "group.updated", &row.id);
                    e.data_json = group_json(&row);
                    e.previous_json = group_json(old);
                    tx.events.push(e);
                    if old.display_name != row.display_name {
                        // A mapping may name the group: everyone in it is re-decided.
                        let members: Vec<String> = dir_members::table
                            .filter(dir_members::group_id.eq(&row.id))
                            .filter(dir_members::member_kind.eq("user"))
                            .select(dir_members::member_id)
                            .load(conn)?;
                        tx.touched.extend(members);
                    }
                }
                None => {
                    diesel::insert_into(dir_groups::table).values(&row).execute(conn)?;
                    let mut e = NewEventRow::new(dir, "group.created", &row.id);
                    e.data_json = group_json(&row);
                    tx.events.push(e);
                }
            }
            tx.write.groups_changed += 1;
        }
        if generation > 0 && !unchanged.is_empty() {
            diesel::update(
                dir_groups::table
                    .filter(dir_groups::id.eq_any(&unchanged))
                    .filter(dir_groups::seen_generation.ne(generation)),
            )
            .set(dir_groups::seen_generation.eq(generation))
            .execute(conn)?;
        }
    }
    Ok(())
}

/// A group a membership names before the group itself arrived: a placeholder with
/// generation 0 (so a listing that never mentions the group sweeps it) and no hash
/// (so the group's own page rewrites it).
fn ensure_group(conn: &mut DbConnection, dir: &str, idp_id: &str) -> Result<String, SyncError> {
    let id = mirror_id(dir, idp_id);
    let exists = dir_groups::table.find(&id).select(dir_groups::id).first::<String>(conn).optional()?.is_some();
    if !exists {
        let g =
            Group { id: idp_id.to_string(), name: idp_id.to_string(), description: None, raw: serde_json::Value::Null };
        let row = group_row(dir, &g, None, 0, None);
        diesel::insert_into(dir_groups::table).values(&row).execute(conn)?;
    }
    Ok(id)
}

fn touch_group(conn: &mut DbConnection, group_id: &str, delta: i64) -> Result<(), SyncError> {
    diesel::update(dir_groups::table.find(group_id))
        .set((
            dir_groups::version.eq(dir_groups::version + 1),
            dir_groups::member_count.eq(dir_groups::member_count + delta),
            dir_groups::updated_at.eq(now()),
        ))
        .execute(conn)?;
    Ok(())
}

fn write_memberships(
    conn: &mut DbConnection,
    dir: &str,
    changes: &[MembershipChange],
    pass: PagePass,
    tx: &mut Tx,
) -> Result<(), SyncError> {
    let generation = match pass {
        PagePass::Listing { generation } => generation,
        PagePass::Changes => 0,
    };
    // Per group, in the page's order within each group (a later change wins).
    let mut by_group: BTreeMap<&str, Vec<(bool, String)>> = BTreeMap::new();
    for c in changes {
        match c {
            MembershipChange::Added(m) => {
                by_group.entry(&m.group_id).or_default().push((true, mirror_id(dir, &m.user_id)))
            }
            MembershipChange::Removed(m) => {
                by_group.entry(&m.group_id).or_default().push((false, mirror_id(dir, &m.user_id)))
            }
        }
    }
    for (idp_group, list) in by_group {
        let gid = ensure_group(conn, dir, idp_group)?;
        let mut last: HashMap<String, bool> = HashMap::new();
        for (add, uid) in list {
            last.insert(uid, add);
        }
        let adds: Vec<String> = last.iter().filter(|(_, a)| **a).map(|(u, _)| u.clone()).collect();
        let removes: Vec<String> = last.iter().filter(|(_, a)| !**a).map(|(u, _)| u.clone()).collect();
        let mut delta = 0i64;
        for chunk in removes.chunks(CHUNK) {
            let present: Vec<String> = dir_members::table
                .filter(dir_members::group_id.eq(&gid))
                .filter(dir_members::member_id.eq_any(chunk))
                .select(dir_members::member_id)
                .load(conn)?;
            if present.is_empty() {
                continue;
            }
            diesel::delete(
                dir_members::table
                    .filter(dir_members::group_id.eq(&gid))
                    .filter(dir_members::member_id.eq_any(&present)),
            )
            .execute(conn)?;
            delta -= present.len() as i64;
            for m in present {
                tx.events.push(member_event(dir, "group.member_removed", &gid, &m));
                tx.touched.push(m);
                tx.write.memberships_changed += 1;
            }
        }
        for chunk in adds.chunks(CHUNK) {
            let present: std::collections::HashSet<String> = dir_members::table
                .filter(dir_members::group_id.eq(&gid))
                .filter(dir_members::member_id.eq_any(chunk))
                .select(dir_members::member_id)
                .load::<String>(conn)?
                .into_iter()
                .collect();
            let new: Vec<_> = chunk
                .iter()
                .filter(|m| !present.contains(*m))
                .map(|m| {
                    (
                        dir_members::group_id.eq(gid.clone()),
                        dir_members::member_id.eq(m.clone()),
                        dir_members::member_kind.eq("user"),
                        dir_members::display.eq(None::<String>),
                        dir_members::seen_generation.eq(generation),
                    )
                })
                .collect();
            if !new.is_empty() {
                insert_many!(conn, dir_members::table, &new)?;
            }
            for m in chunk.iter().filter(|m| !present.contains(*m)) {
                tx.events.push(member_event(dir, "group.member_added", &gid, m));
                tx.touched.push(m.clone());
                tx.write.memberships_changed += 1;
            }
            delta += new.len() as i64;
            if generation > 0 && !present.is_empty() {
                let ids: Vec<&String> = present.iter().collect();
                diesel::update(
                    dir_members::table
                        .filter(dir_members::group_id.eq(&gid))
                        .filter(dir_members::member_id.eq_any(ids))
                        .filter(dir_members::seen_generation.ne(generation)),
                )
                .set(dir_members::seen_generation.eq(generation))
                .execute(conn)?;
            }
        }
        if delta != 0 {
            touch_group(conn, &gid, delta)?;
        }
    }
    Ok(())
}

/// Removes a user from the mirror as the SCIM path deletes one: memberships end, and
/// the queue row keeps the email so reconciling still finds (and removes) the member.
fn remove_user(conn: &mut DbConnection, dir: &str, id: &str, tx: &mut Tx) -> Result<(), SyncError> {
    let Some(old) = dir_users::table
        .filter(dir_users::directory_id.eq(dir))
        .filter(dir_users::id.eq(id))
        .first::<UserRow>(conn)
        .optional()?
    else {
        return Ok(());
    };
    let groups: Vec<String> =
        dir_members::table.filter(dir_members::member_id.eq(id)).select(dir_members::group_id).load(conn)?;
    diesel::delete(dir_members::table.filter(dir_members::member_id.eq(id))).execute(conn)?;
    for g in groups {
        touch_group(conn, &g, -1)?;
        tx.events.push(member_event(dir, "group.member_removed", &g, id));
    }
    diesel::delete(dir_user_emails::table.filter(dir_user_emails::user_id.eq(id))).execute(conn)?;
    diesel::delete(dir_users::table.find(id)).execute(conn)?;
    let mut e = NewEventRow::new(dir, "user.deleted", id);
    e.previous_json = user_json(&old);
    tx.events.push(e);
    tx.queue.push(queue_row(&old));
    tx.write.users_removed += 1;
    Ok(())
}

fn remove_group(conn: &mut DbConnection, dir: &str, id: &str, tx: &mut Tx) -> Result<(), SyncError> {
    let Some(old) = dir_groups::table
        .filter(dir_groups::directory_id.eq(dir))
        .filter(dir_groups::id.eq(id))
        .first::<GroupRow>(conn)
        .optional()?
    else {
        return Ok(());
    };
    let users: Vec<String> = dir_members::table
        .filter(dir_members::group_id.eq(id))
        .filter(dir_members::member_kind.eq("user"))
        .select(dir_members::member_id)
        .load(conn)?;
    diesel::delete(dir_members::table.filter(dir_members::group_id.eq(id))).execute(conn)?;
    diesel::delete(dir_groups::table.find(id)).execute(conn)?;
    let mut e = NewEventRow::new(dir, "group.deleted", id);
    e.previous_json = group_json(&old);
    tx.events.push(e);
    tx.touched.extend(users);
    tx.write.groups_changed += 1;
    Ok(())
}

/// How a full listing ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ListingEnd {
    /// What it left out was removed.
    Swept(PullWrite),
    /// It looked wrong: nothing was removed, the sweep waits for approval.
    Held(SuspectListing),
}

/// A full listing that looked wrong (rule 4 of the reconcile rules).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SuspectListing {
    /// Its generation (the sweep to approve).
    pub generation: i64,
    /// Why, in sentences.
    pub reasons: Vec<String>,
    /// Mirror users it would remove, in all.
    pub stale_users: i64,
    /// Up to 1,000 of them: (mirror id, email, name).
    pub sample: Vec<(String, String, String)>,
}

fn count_users(conn: &mut DbConnection, dir: &str, stale_before: Option<i64>) -> Result<i64, SyncError> {
    let mut q = dir_users::table.filter(dir_users::directory_id.eq(dir)).count().into_boxed();
    if let Some(g) = stale_before {
        q = q.filter(dir_users::seen_generation.lt(g));
    }
    Ok(q.get_result(conn)?)
}

/// Whether a completed listing looks wrong: it had users but no groups while the
/// mirror has groups (a permission or scope that stopped covering groups), or it would
/// remove more users, or group memberships, than the directory's brake allows. Either
/// would remove people at scale on the IdP's word, so it waits for a person.
fn suspect_listing(conn: &mut DbConnection, dir: &str, generation: i64) -> Result<Option<SuspectListing>, SyncError> {
    let brake = directories::table
        .find(dir)
        .select((directories::brake_percent, directories::brake_min))
        .first::<(i32, i32)>(conn)?;
    let brake = crate::domain::brake::Brake {
        max_percent: u32::try_from(brake.0).unwrap_or(10),
        min_removals: u32::try_from(brake.1).unwrap_or(10),
        ..Default::default()
    };
    let users = count_users(conn, dir, None)?;
    let stale_users = count_users(conn, dir, Some(generation))?;
    let groups: i64 = dir_groups::table.filter(dir_groups::directory_id.eq(dir)).count().get_result(conn)?;
    let listed_groups: i64 = dir_groups::table
        .filter(dir_groups::directory_id.eq(dir))
        .filter(dir_groups::seen_generation.ge(generation))
        .count()
        .get_result(conn)?;
    let of_dir = dir_groups::table.filter(dir_groups::directory_id.eq(dir)).select(dir_groups::id);
    let memberships: i64 = dir_members::table.filter(dir_members::group_id.eq_any(of_dir)).count().get_result(conn)?;
    let of_dir = dir_groups::table.filter(dir_groups::directory_id.eq(dir)).select(dir_groups::id);
    let stale_memberships: i64 = dir_members::table
        .filter(dir_members::group_id.eq_any(of_dir))
        .filter(dir_members::seen_generation.lt(generation))
        .count()
        .get_result(conn)?;
    let mut reasons = Vec::new();
    let listed_users = users - stale_users;
    if listed_users > 0 && listed_groups == 0 && groups > 0 {
        reasons
            .push(format!("the listing had {listed_users} users but no groups, while the mirror has {groups} groups"));
    }
    if brake.holds(stale_users.max(0) as u64, users.max(0) as u64) {
        reasons.push(format!(
            "it would remove {stale_users} of the mirror's {users} users, more than the brake allows ({}%)",
            brake.max_percent
        ));
    }
    if brake.holds(stale_memberships.max(0) as u64, memberships.max(0) as u64) {
        reasons.push(format!(
            "it would end {stale_memberships} of the mirror's {memberships} group memberships, more than the brake allows ({}%)",
            brake.max_percent
        ));
    }
    if reasons.is_empty() {
        return Ok(None);
    }
    let sample: Vec<(String, Option<String>, String)> = dir_users::table
        .filter(dir_users::directory_id.eq(dir))
        .filter(dir_users::seen_generation.lt(generation))
        .order(dir_users::id)
        .limit(1000)
        .select((dir_users::id, dir_users::email_lower, dir_users::display_name))
        .load(conn)?;
    Ok(Some(SuspectListing {
        generation,
        reasons,
        stale_users,
        sample: sample.into_iter().map(|(id, e, n)| (id, e.unwrap_or_default(), n)).collect(),
    }))
}

/// Removes what a listing of `generation` did not mention (users, groups, memberships),
/// with their events and queue rows. The caller records the listing as complete
/// (`last_full_listing`), which proves the directory: from then on its silence about
/// a member counts, if it is authoritative.
fn sweep(conn: &mut DbConnection, dir: &str, generation: i64) -> Result<PullWrite, SyncError> {
    let mut tx = Tx::default();
    loop {
        let stale: Vec<String> = dir_users::table
            .filter(dir_users::directory_id.eq(dir))
            .filter(dir_users::seen_generation.lt(generation))
            .select(dir_users::id)
            .limit(CHUNK as i64)
            .load(conn)?;
        if stale.is_empty() {
            break;
        }
        for id in stale {
            remove_user(conn, dir, &id, &mut tx)?;
        }
    }
    loop {
        let stale: Vec<String> = dir_groups::table
            .filter(dir_groups::directory_id.eq(dir))
            .filter(dir_groups::seen_generation.lt(generation))
            .select(dir_groups::id)
            .limit(CHUNK as i64)
            .load(conn)?;
        if stale.is_empty() {
            break;
        }
        for id in stale {
            remove_group(conn, dir, &id, &mut tx)?;
        }
    }
    loop {
        let groups = dir_groups::table.filter(dir_groups::directory_id.eq(dir)).select(dir_groups::id);
        let stale: Vec<(String, String)> = dir_members::table
            .filter(dir_members::group_id.eq_any(groups))
            .filter(dir_members::seen_generation.lt(generation))
            .select((dir_members::group_id, dir_members::member_id))
            .limit(CHUNK as i64)
            .load(conn)?;
        if stale.is_empty() {
            break;
        }
        for (g, m) in stale {
            diesel::delete(
                dir_members::table.filter(dir_members::group_id.eq(&g)).filter(dir_members::member_id.eq(&m)),
            )
            .execute(conn)?;
            touch_group(conn, &g, -1)?;
            tx.events.push(member_event(dir, "group.member_removed", &g, &m));
            tx.touched.push(m);
            tx.write.memberships_changed += 1;
        }
    }
    tx.commit(conn, dir)
}

fn load_state(conn: &mut DbConnection, dir: &str) -> Result<Option<PullState>, SyncError> {
    let row = pull_state::table.find(dir).first::<StateRow>(conn).optional()?;
    Ok(row.map(|r| PullState {
        cursor: r.cursor,
        listing_generation: r.listing_generation,
        last_full_listing: r.last_full_listing.map(utc),
        last_success: r.last_success.map(utc),
        next_pull_at: utc(r.next_pull_at),
        failures: u32::try_from(r.failures).unwrap_or(0),
        lease_holder: r.lease_holder,
        lease_expires: r.lease_expires.map(utc),
    }))
}

impl DieselStore {
    async fn pull_write<T, F>(&self, f: F) -> Result<T, SyncError>
    where
        F: FnOnce(&mut DbConnection) -> Result<T, SyncError> + Send + 'static,
        T: Send + 'static,
    {
        let result = self.db.write(f).await;
        if result.is_ok() {
            self.committed();
        }
        result
    }

    /// A pull directory's stored state (none before its first pull).
    pub async fn pull_state(&self, dir: &str) -> Result<Option<PullState>, SyncError> {
        let dir = dir.to_string();
        self.db.run(move |conn| load_state(conn, &dir)).await
    }

    /// Active pull directories whose next pull is due at `now` and whose lease is free
    /// or lapsed (or already `holder`'s).
    pub async fn due_pulls(&self, now_at: DateTime<Utc>, holder: &str) -> Result<Vec<String>, SyncError> {
        let (at, holder) = (naive(now_at), holder.to_string());
        self.db
            .run(move |conn| {
                let dirs: Vec<String> = directories::table
                    .filter(directories::kind.eq_any(Kind::pull_names()))
                    .filter(directories::state.eq("active"))
                    .order(directories::id)
                    .select(directories::id)
                    .load(conn)?;
                let mut due = Vec::new();
                for chunk in dirs.chunks(CHUNK) {
                    let states: HashMap<String, (NaiveDateTime, Option<String>, Option<NaiveDateTime>)> =
                        pull_state::table
                            .filter(pull_state::directory_id.eq_any(chunk))
                            .select((
                                pull_state::directory_id,
                                pull_state::next_pull_at,
                                pull_state::lease_holder,
                                pull_state::lease_expires,
                            ))
                            .load::<(String, NaiveDateTime, Option<String>, Option<NaiveDateTime>)>(conn)?
                            .into_iter()
                            .map(|(d, n, h, e)| (d, (n, h, e)))
                            .collect();
                    for d in chunk {
                        let ready = match states.get(d) {
                            None => true,
                            Some((next, h, exp)) => {
                                *next <= at
                                    && (h.is_none()
                                        || h.as_deref() == Some(holder.as_str())
                                        || exp.is_none_or(|e| e < at))
                            }
                        };
                        if ready {
                            due.push(d.clone());
                        }
                    }
                }
                Ok(due)
            })
            .await
    }

    /// Takes (or renews) the pull lease of `dir` for `holder` until `now + ttl`: a
    /// conditional UPDATE that succeeds only when the lease is free, lapsed, or
    /// already `holder`'s. Creates the directory's state row on first use.
    pub async fn take_lease(
        &self,
        dir: &str,
        holder: &str,
        now_at: DateTime<Utc>,
        ttl: Duration,
    ) -> Result<bool, SyncError> {
        let (dir, holder) = (dir.to_string(), holder.to_string());
        let (at, until) = (naive(now_at), later(now_at, ttl));
        self.db
            .write(move |conn| {
                let exists = pull_state::table
                    .find(&dir)
                    .select(pull_state::directory_id)
                    .first::<String>(conn)
                    .optional()?
                    .is_some();
                if !exists {
                    let inserted = diesel::insert_into(pull_state::table)
                        .values((
                            pull_state::directory_id.eq(&dir),
                            pull_state::cursor.eq(None::<String>),
                            pull_state::listing_generation.eq(0i64),
                            pull_state::last_full_listing.eq(None::<NaiveDateTime>),
                            pull_state::last_success.eq(None::<NaiveDateTime>),
                            pull_state::next_pull_at.eq(at),
                            pull_state::failures.eq(0),
                            pull_state::lease_holder.eq(Some(&holder)),
                            pull_state::lease_expires.eq(Some(until)),
                        ))
                        .execute(conn);
                    return match inserted {
                        Ok(_) => Ok(true),
                        // Another replica created it first: it holds the lease.
                        Err(DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, _)) => Ok(false),
                        Err(DieselError::DatabaseError(DatabaseErrorKind::ForeignKeyViolation, _)) => {
                            Err(SyncError::NotFound { what: "directory", id: dir.clone() })
                        }
                        Err(e) => Err(e.into()),
                    };
                }
                let n = diesel::update(
                    pull_state::table.filter(pull_state::directory_id.eq(&dir)).filter(
                        pull_state::lease_holder
                            .is_null()
                            .or(pull_state::lease_holder.eq(&holder))
                            .or(pull_state::lease_expires.lt(at)),
                    ),
                )
                .set((pull_state::lease_holder.eq(Some(&holder)), pull_state::lease_expires.eq(Some(until))))
                .execute(conn)?;
                Ok(n == 1)
            })
            .await
    }

    /// Gives the lease up (when `holder` still has it).
    pub async fn release_lease(&self, dir: &str, holder: &str) -> Result<(), SyncError> {
        let (dir, holder) = (dir.to_string(), holder.to_string());
        self.db
            .write(move |conn| {
                diesel::update(
                    pull_state::table
                        .filter(pull_state::directory_id.eq(&dir))
                        .filter(pull_state::lease_holder.eq(&holder)),
                )
                .set((pull_state::lease_holder.eq(None::<String>), pull_state::lease_expires.eq(None::<NaiveDateTime>)))
                .execute(conn)?;
                Ok(())
            })
            .await
    }

    /// Starts a full listing: its generation number.
    pub async fn begin_listing(&self, dir: &str, holder: &str) -> Result<i64, SyncError> {
        let (dir, holder) = (dir.to_string(), holder.to_string());
        self.db
            .write(move |conn| {
                fence(conn, &dir, &holder)?;
                diesel::update(pull_state::table.find(&dir))
                    .set(pull_state::listing_generation.eq(pull_state::listing_generation + 1))
                    .execute(conn)?;
                Ok(pull_state::table.find(&dir).select(pull_state::listing_generation).first::<i64>(conn)?)
            })
            .await
    }

    /// Writes one page in one transaction, with its events, its queue rows and (for a
    /// change feed) its checkpoint cursor.
    pub async fn write_pull_page(
        &self,
        dir: &str,
        holder: &str,
        pass: PagePass,
        page: Page,
    ) -> Result<PullWrite, SyncError> {
        let (dir, holder) = (dir.to_string(), holder.to_string());
        self.pull_write(move |conn| {
            fence(conn, &dir, &holder)?;
            let mut tx = Tx::default();
            write_groups(conn, &dir, &page.groups, pass, &mut tx)?;
            write_users(conn, &dir, &page.users, pass, &mut tx)?;
            write_memberships(conn, &dir, &page.memberships, pass, &mut tx)?;
            for r in &page.removed_users {
                remove_user(conn, &dir, &mirror_id(&dir, &r.id), &mut tx)?;
            }
            for r in &page.removed_groups {
                remove_group(conn, &dir, &mirror_id(&dir, &r.id), &mut tx)?;
            }
            if let Some(c) = &page.checkpoint {
                diesel::update(pull_state::table.find(&dir))
                    .set(pull_state::cursor.eq(Some(c.as_str().to_string())))
                    .execute(conn)?;
            }
            tx.commit(conn, &dir)
        })
        .await
    }

    /// A full listing reached its end. Unless it looks wrong (see [`suspect_listing`]),
    /// removes the users, groups and memberships it did not mention (reading only
    /// those), stores the cursor, and marks the directory proven, in one transaction.
    /// A suspect listing removes nothing: its cursor is kept and the sweep waits for
    /// an administrator ([`DieselStore::sweep_listing`]).
    pub async fn complete_listing(
        &self,
        dir: &str,
        holder: &str,
        generation: i64,
        cursor: Option<String>,
    ) -> Result<ListingEnd, SyncError> {
        let (dir, holder) = (dir.to_string(), holder.to_string());
        self.pull_write(move |conn| {
            fence(conn, &dir, &holder)?;
            if let Some(suspect) = suspect_listing(conn, &dir, generation)? {
                diesel::update(pull_state::table.find(&dir)).set(pull_state::cursor.eq(cursor)).execute(conn)?;
                return Ok(ListingEnd::Held(suspect));
            }
            let write = sweep(conn, &dir, generation)?;
            let at = now();
            diesel::update(pull_state::table.find(&dir))
                .set((pull_state::cursor.eq(cursor), pull_state::last_full_listing.eq(Some(at))))
                .execute(conn)?;
            Ok(ListingEnd::Swept(write))
        })
        .await
    }

    /// An administrator approved a held listing: what it left out is removed now (rows
    /// not mentioned by it, nor by any later listing), fenced by the lease as a pull is.
    pub async fn sweep_listing(&self, dir: &str, holder: &str, generation: i64) -> Result<PullWrite, SyncError> {
        let (dir, holder) = (dir.to_string(), holder.to_string());
        self.pull_write(move |conn| {
            fence(conn, &dir, &holder)?;
            let write = sweep(conn, &dir, generation)?;
            diesel::update(pull_state::table.find(&dir))
                .set(pull_state::last_full_listing.eq(Some(now())))
                .execute(conn)?;
            Ok(write)
        })
        .await
    }

    /// A change feed was read to its end: where the next one resumes.
    pub async fn changes_applied(&self, dir: &str, holder: &str, cursor: String) -> Result<(), SyncError> {
        let (dir, holder) = (dir.to_string(), holder.to_string());
        self.db
            .write(move |conn| {
                fence(conn, &dir, &holder)?;
                diesel::update(pull_state::table.find(&dir)).set(pull_state::cursor.eq(Some(cursor))).execute(conn)?;
                Ok(())
            })
            .await
    }

    /// Records how a pull ended and when the next one is due.
    pub async fn pull_ended(
        &self,
        dir: &str,
        succeeded: bool,
        failures: u32,
        next_pull_at: DateTime<Utc>,
    ) -> Result<(), SyncError> {
        let dir = dir.to_string();
        let next = naive(next_pull_at);
        let failures = i32::try_from(failures).unwrap_or(i32::MAX);
        self.db
            .write(move |conn| {
                if succeeded {
                    diesel::update(pull_state::table.find(&dir))
                        .set((
                            pull_state::next_pull_at.eq(next),
                            pull_state::failures.eq(0),
                            pull_state::last_success.eq(Some(now())),
                        ))
                        .execute(conn)?;
                } else {
                    diesel::update(pull_state::table.find(&dir))
                        .set((pull_state::next_pull_at.eq(next), pull_state::failures.eq(failures)))
                        .execute(conn)?;
                }
                Ok(())
            })
            .await
    }

    /// The newest queue position of a directory (none when its queue is empty).
    pub async fn queue_head(&self, dir: &str) -> Result<Option<i64>, SyncError> {
        let dir = dir.to_string();
        self.db
            .run(move |conn| {
                Ok(reconcile_queue::table
                    .filter(reconcile_queue::directory_id.eq(&dir))
                    .select(diesel::dsl::max(reconcile_queue::seq))
                    .first::<Option<i64>>(conn)?)
            })
            .await
    }

    /// Removes a directory's queue entries up to `seq` (a full reconcile covered them).
    pub async fn delete_queue_through(&self, dir: &str, seq: i64) -> Result<(), SyncError> {
        let dir = dir.to_string();
        self.db
            .write(move |conn| {
                diesel::delete(
                    reconcile_queue::table
                        .filter(reconcile_queue::directory_id.eq(&dir))
                        .filter(reconcile_queue::seq.le(seq)),
                )
                .execute(conn)?;
                Ok(())
            })
            .await
    }
}

impl DieselStore {
    /// A replica starting under `name` (as `me`, `name#boot`): the runs an earlier
    /// process of that name left running are interrupted, and the pull and reconcile
    /// leases it held are freed, at once. The caller has made sure no live process
    /// holds the name. Returns how many runs were interrupted.
    pub async fn take_over_replica(&self, name: &str, me: &str) -> Result<usize, SyncError> {
        use super::schema::{reconcile_leases, run_owners, sync_runs};
        let (prefix, me) = (format!("{name}#%"), me.to_string());
        self.db
            .write(move |conn| {
                // Runs still marked running are few; owners of ended runs are never read.
                let running: Vec<String> =
                    sync_runs::table.filter(sync_runs::state.eq(crate::domain::run::RunState::Running.name())).select(sync_runs::id).load(conn)?;
                let theirs: Vec<String> = run_owners::table
                    .filter(run_owners::run_id.eq_any(&running))
                    .filter(run_owners::owner.like(&prefix))
                    .filter(run_owners::owner.ne(&me))
                    .select(run_owners::run_id)
                    .load(conn)?;
                let n = diesel::update(sync_runs::table.filter(sync_runs::id.eq_any(&theirs)))
                    .set((
                        sync_runs::state.eq(crate::domain::run::RunState::Failed.name()),
                        sync_runs::phase.eq(crate::domain::run::Phase::Done.name()),
                        sync_runs::outcome.eq(
                            "interrupted: its replica stopped and restarted; queued changes are reconciled by a later run, \
                             a pull resumes from its stored cursor",
                        ),
                        sync_runs::ended_at.eq(Some(Utc::now().naive_utc())),
                    ))
                    .execute(conn)?;
                let holders: Vec<String> = theirs.iter().map(|id| format!("run/{id}")).collect();
                diesel::delete(reconcile_leases::table.filter(reconcile_leases::holder.eq_any(&holders))).execute(conn)?;
                diesel::update(pull_state::table.filter(pull_state::lease_holder.like(&prefix)))
                    .set((pull_state::lease_holder.eq(None::<String>), pull_state::lease_expires.eq(None::<NaiveDateTime>)))
                    .execute(conn)?;
                Ok(n)
            })
            .await
    }

    /// Records that `owner` runs `run` now (an approval applied by another replica).
    pub async fn set_run_owner(&self, run: &str, owner: &str) -> Result<(), SyncError> {
        use super::schema::run_owners;
        let (run, owner) = (run.to_string(), owner.to_string());
        self.db
            .write(move |conn| {
                diesel::delete(run_owners::table.find(&run)).execute(conn)?;
                diesel::insert_into(run_owners::table)
                    .values((run_owners::run_id.eq(&run), run_owners::owner.eq(&owner)))
                    .execute(conn)?;
                Ok(())
            })
            .await
    }
}
