//! The SCIM connector's [`DirectoryStore`] on diesel. Each method is one transaction
//! that changes the mirror, records the directory events, and enqueues the users it
//! touched for reconciling — so a crash after the commit loses nothing, and a crash
//! before it leaves nothing half-done.

use std::collections::{BTreeSet, HashMap, HashSet};

use async_trait::async_trait;
use diesel::prelude::*;
use diesel::result::{DatabaseErrorKind, Error as DieselError};
use muster_runtime::{DbConnection, DbError};
use muster_scim::filter::{AttrPath, CompValue, CompareOp, ScimFilter, sort_cmp, sort_value};
use muster_scim::schema::ResourceKind;
use muster_scim::store::{
    DirectoryStore, GroupData, GroupRecord, GroupRef, GroupUpdate, ListQuery, Member, MemberKind, Meta, NewMember,
    Page, StoreError, TokenHash, UserData, UserRecord,
};
use serde_json::{Map, Value};
use subtle::ConstantTimeEq;

use super::diesel_store::{
    CHUNK, DieselStore, GroupRow, NewEventRow, NewQueueRow, UserRow, enqueue, insert_events, insert_many, new_id, now,
    utc,
};
use super::schema::{dir_groups, dir_members, dir_user_emails, dir_users, directories};
use crate::domain::mirror::{display_name_of, email_of};

/// A failure inside a transaction: a store answer for the router, or the database.
#[derive(Debug)]
enum Fail {
    Store(StoreError),
    Db(DbError),
}

impl From<DbError> for Fail {
    fn from(e: DbError) -> Self {
        Fail::Db(e)
    }
}

impl From<DieselError> for Fail {
    fn from(e: DieselError) -> Self {
        match e {
            // Two requests raced for one userName: the unique index decided.
            DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, _) => Fail::Store(StoreError::UserNameTaken),
            e => Fail::Db(DbError::Query(e)),
        }
    }
}

impl From<StoreError> for Fail {
    fn from(e: StoreError) -> Self {
        Fail::Store(e)
    }
}

fn store_error(f: Fail) -> StoreError {
    match f {
        Fail::Store(e) => e,
        Fail::Db(e) if e.is_unavailable() => StoreError::Unavailable(e.to_string()),
        Fail::Db(DbError::Query(DieselError::DatabaseError(DatabaseErrorKind::SerializationFailure, _))) => {
            StoreError::Unavailable("concurrent update; retry".into())
        }
        Fail::Db(e) => {
            tracing::error!(error = %e, "mirror write failed");
            StoreError::Internal("database error".into())
        }
    }
}

type Tx<T> = Result<T, Fail>;

fn attributes(json: &str) -> Map<String, Value> {
    serde_json::from_str::<Value>(json).ok().and_then(|v| v.as_object().cloned()).unwrap_or_default()
}

/// The key under which a user's `active`, as the IdP sent it, is kept in the stored
/// attributes (`null`: it sent none). Rows written before it was kept have no key;
/// their `active` column is what the IdP last said.
const SENT_ACTIVE: &str = "active";

fn user_record(r: &UserRow) -> UserRecord {
    let mut attrs = attributes(&r.attributes_json);
    let active = match attrs.remove(SENT_ACTIVE) {
        Some(Value::Bool(b)) => Some(b),
        Some(_) => None,
        None => Some(r.active),
    };
    UserRecord {
        id: r.id.clone(),
        data: UserData {
            user_name: r.user_name.clone(),
            external_id: r.external_id.clone(),
            active,
            attributes: attrs,
        },
        meta: Meta { created: utc(r.created_at), last_modified: utc(r.updated_at), version: r.version.to_string() },
    }
}

fn group_record(r: &GroupRow, members: Option<Vec<Member>>) -> GroupRecord {
    GroupRecord {
        id: r.id.clone(),
        data: GroupData {
            display_name: r.display_name.clone(),
            external_id: r.external_id.clone(),
            attributes: attributes(&r.attributes_json),
        },
        meta: Meta { created: utc(r.created_at), last_modified: utc(r.updated_at), version: r.version.to_string() },
        members,
    }
}

fn check_version(version: i64, expected: Option<&str>) -> Tx<()> {
    match expected {
        Some(v) if v != version.to_string() => Err(StoreError::VersionMismatch.into()),
        _ => Ok(()),
    }
}

fn load_user(conn: &mut DbConnection, dir: &str, id: &str) -> Tx<Option<UserRow>> {
    Ok(dir_users::table
        .filter(dir_users::directory_id.eq(dir))
        .filter(dir_users::id.eq(id))
        .first::<UserRow>(conn)
        .optional()?)
}

fn load_group(conn: &mut DbConnection, dir: &str, id: &str) -> Tx<Option<GroupRow>> {
    Ok(dir_groups::table
        .filter(dir_groups::directory_id.eq(dir))
        .filter(dir_groups::id.eq(id))
        .first::<GroupRow>(conn)
        .optional()?)
}

fn name_owner(conn: &mut DbConnection, dir: &str, lower: &str) -> Tx<Option<String>> {
    Ok(dir_users::table
        .filter(dir_users::directory_id.eq(dir))
        .filter(dir_users::user_name_lower.eq(lower))
        .select(dir_users::id)
        .first::<String>(conn)
        .optional()?)
}

/// Which of `ids` are users and which are groups of the directory.
fn kinds_of(conn: &mut DbConnection, dir: &str, ids: &[String]) -> Tx<HashMap<String, MemberKind>> {
    let mut out = HashMap::new();
    for chunk in ids.chunks(CHUNK) {
        let users: Vec<String> = dir_users::table
            .filter(dir_users::directory_id.eq(dir))
            .filter(dir_users::id.eq_any(chunk))
            .select(dir_users::id)
            .load(conn)?;
        out.extend(users.into_iter().map(|u| (u, MemberKind::User)));
        let groups: Vec<String> = dir_groups::table
            .filter(dir_groups::directory_id.eq(dir))
            .filter(dir_groups::id.eq_any(chunk))
            .select(dir_groups::id)
            .load(conn)?;
        out.extend(groups.into_iter().map(|g| (g, MemberKind::Group)));
    }
    Ok(out)
}

fn resolve(conn: &mut DbConnection, dir: &str, members: &[NewMember]) -> Tx<HashMap<String, MemberKind>> {
    let ids: Vec<String> = members.iter().map(|m| m.value.clone()).collect();
    let kinds = kinds_of(conn, dir, &ids)?;
    match members.iter().find(|m| !kinds.contains_key(&m.value)) {
        Some(m) => Err(StoreError::UnknownMember(m.value.clone()).into()),
        None => Ok(kinds),
    }
}

fn check_groups(conn: &mut DbConnection, dir: &str, ids: &[String]) -> Tx<()> {
    let kinds = kinds_of(conn, dir, ids)?;
    match ids.iter().find(|g| kinds.get(*g) != Some(&MemberKind::Group)) {
        Some(g) => Err(StoreError::UnknownMember(g.clone()).into()),
        None => Ok(()),
    }
}

/// Every email of a user, lowercased, deduplicated.
pub(crate) fn all_emails(attrs: &Map<String, Value>) -> BTreeSet<String> {
    attrs
        .get("emails")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|e| e.get("value").and_then(Value::as_str))
        .map(|s| s.trim().to_lowercase())
        .filter(|s| !s.is_empty())
        .collect()
}

fn set_emails(conn: &mut DbConnection, dir: &str, user_id: &str, attrs: &Map<String, Value>) -> Tx<()> {
    diesel::delete(dir_user_emails::table.filter(dir_user_emails::user_id.eq(user_id))).execute(conn)?;
    let rows: Vec<_> = all_emails(attrs)
        .into_iter()
        .map(|e| {
            (
                dir_user_emails::user_id.eq(user_id.to_string()),
                dir_user_emails::directory_id.eq(dir.to_string()),
                dir_user_emails::email_lower.eq(e),
            )
        })
        .collect();
    for chunk in rows.chunks(CHUNK) {
        insert_many!(conn, dir_user_emails::table, chunk)?;
    }
    Ok(())
}

fn user_row(dir: &str, id: String, data: &UserData, version: i64, created: chrono::NaiveDateTime) -> Tx<UserRow> {
    let mut stored = data.attributes.clone();
    stored.insert(SENT_ACTIVE.into(), data.active.map(Value::Bool).unwrap_or(Value::Null));
    let attrs = serde_json::to_string(&stored).map_err(|e| Fail::Store(StoreError::Internal(e.to_string())))?;
    Ok(UserRow {
        id,
        directory_id: dir.to_string(),
        user_name: data.user_name.clone(),
        user_name_lower: data.user_name.to_lowercase(),
        external_id: data.external_id.clone(),
        email_lower: email_of(&data.user_name, &data.attributes),
        display_name: display_name_of(&data.user_name, &data.attributes),
        active: data.assigned(),
        attributes_json: attrs,
        version,
        created_at: created,
        updated_at: now(),
        content_hash: None,
        seen_generation: 0,
    })
}

pub(crate) fn queue_row(r: &UserRow) -> NewQueueRow {
    NewQueueRow {
        directory_id: r.directory_id.clone(),
        user_id: r.id.clone(),
        email: r.email_lower.clone().unwrap_or_default(),
        display_name: r.display_name.clone(),
        enqueued_at: now(),
    }
}

pub(crate) fn user_json(r: &UserRow) -> String {
    user_record(r).to_scim_json(None, None).to_string()
}

pub(crate) fn group_json(r: &GroupRow) -> String {
    group_record(r, None).to_scim_json(None).to_string()
}

pub(crate) fn member_event(dir: &str, kind: &str, group: &str, member: &str) -> NewEventRow {
    let mut e = NewEventRow::new(dir, kind, group);
    e.member_id = member.to_string();
    e
}

/// Bumps a group's version after a change to it, adjusting its member count.
fn touch_group(conn: &mut DbConnection, group_id: &str, member_delta: i64) -> Tx<()> {
    diesel::update(dir_groups::table.find(group_id))
        .set((
            dir_groups::version.eq(dir_groups::version + 1),
            dir_groups::member_count.eq(dir_groups::member_count + member_delta),
            dir_groups::updated_at.eq(now()),
        ))
        .execute(conn)?;
    Ok(())
}

/// Adds a user to groups it is not in yet (one indexed read and write per group).
fn join_groups(
    conn: &mut DbConnection,
    dir: &str,
    user_id: &str,
    group_ids: &[String],
    events: &mut Vec<NewEventRow>,
) -> Tx<()> {
    if group_ids.is_empty() {
        return Ok(());
    }
    let already: HashSet<String> = dir_members::table
        .filter(dir_members::member_id.eq(user_id))
        .filter(dir_members::group_id.eq_any(group_ids))
        .select(dir_members::group_id)
        .load::<String>(conn)?
        .into_iter()
        .collect();
    let mut seen = HashSet::new();
    for gid in group_ids {
        if already.contains(gid) || !seen.insert(gid.clone()) {
            continue;
        }
        diesel::insert_into(dir_members::table)
            .values((
                dir_members::group_id.eq(gid),
                dir_members::member_id.eq(user_id),
                dir_members::member_kind.eq(MemberKind::User.as_str()),
                dir_members::display.eq(None::<String>),
            ))
            .execute(conn)?;
        touch_group(conn, gid, 1)?;
        events.push(member_event(dir, "group.member_added", gid, user_id));
    }
    Ok(())
}

/// Removes a member (user or group) from every group it is in.
fn leave_all(conn: &mut DbConnection, dir: &str, member_id: &str, events: &mut Vec<NewEventRow>) -> Tx<()> {
    let groups: Vec<String> =
        dir_members::table.filter(dir_members::member_id.eq(member_id)).select(dir_members::group_id).load(conn)?;
    diesel::delete(dir_members::table.filter(dir_members::member_id.eq(member_id))).execute(conn)?;
    for gid in groups {
        touch_group(conn, &gid, -1)?;
        events.push(member_event(dir, "group.member_removed", &gid, member_id));
    }
    Ok(())
}

/// Queue rows for the users among `ids` (groups are skipped: their members are
/// reconciled through their own rows).
fn queue_users(conn: &mut DbConnection, dir: &str, ids: &[String]) -> Tx<Vec<NewQueueRow>> {
    let mut out = Vec::new();
    for chunk in ids.chunks(CHUNK) {
        let rows = dir_users::table
            .filter(dir_users::directory_id.eq(dir))
            .filter(dir_users::id.eq_any(chunk))
            .load::<UserRow>(conn)?;
        out.extend(rows.iter().map(queue_row));
    }
    Ok(out)
}

fn members_of(conn: &mut DbConnection, group_id: &str) -> Tx<Vec<Member>> {
    let rows: Vec<(String, String, Option<String>)> = dir_members::table
        .filter(dir_members::group_id.eq(group_id))
        .order(dir_members::member_id)
        .select((dir_members::member_id, dir_members::member_kind, dir_members::display))
        .load(conn)?;
    Ok(rows
        .into_iter()
        .map(|(value, kind, display)| Member {
            value,
            kind: if kind == MemberKind::Group.as_str() { MemberKind::Group } else { MemberKind::User },
            display,
        })
        .collect())
}

/// What an indexed lookup can narrow a filter to, before the full filter is
/// evaluated on the candidates. Only conjunctions narrow: `a and b` may use either.
#[derive(Debug, Clone, PartialEq)]
enum Narrow {
    Id(String),
    UserName(String),
    ExternalId(String),
    Email(String),
    DisplayName(String),
}

fn narrow(f: &ScimFilter, kind: ResourceKind) -> Option<Narrow> {
    match f {
        ScimFilter::And(a, b) => narrow(a, kind).or_else(|| narrow(b, kind)),
        ScimFilter::Compare(path, CompareOp::Eq, CompValue::String(s)) => narrow_compare(path, None, s, kind),
        ScimFilter::ValuePath(parent, inner) => narrow_value_path(parent, inner, kind),
        _ => None,
    }
}

fn narrow_compare(path: &AttrPath, parent: Option<&AttrPath>, s: &str, kind: ResourceKind) -> Option<Narrow> {
    let core = path.urn.as_deref().is_none_or(|u| u.eq_ignore_ascii_case(kind.core_urn()));
    if !core {
        return None;
    }
    let name = path.name.to_ascii_lowercase();
    let sub = path.sub.as_deref().map(str::to_ascii_lowercase);
    match (parent, name.as_str(), sub.as_deref(), kind) {
        (None, "id", None, _) => Some(Narrow::Id(s.to_string())),
        (None, "externalid", None, _) => Some(Narrow::ExternalId(s.to_string())),
        (None, "username", None, ResourceKind::User) => Some(Narrow::UserName(s.to_lowercase())),
        (None, "displayname", None, ResourceKind::Group) => Some(Narrow::DisplayName(s.to_lowercase())),
        (None, "emails", Some("value"), ResourceKind::User) => Some(Narrow::Email(s.trim().to_lowercase())),
        (Some(p), "value", None, ResourceKind::User) if p.name.eq_ignore_ascii_case("emails") => {
            Some(Narrow::Email(s.trim().to_lowercase()))
        }
        _ => None,
    }
}

fn narrow_value_path(parent: &AttrPath, inner: &ScimFilter, kind: ResourceKind) -> Option<Narrow> {
    match inner {
        ScimFilter::And(a, b) => narrow_value_path(parent, a, kind).or_else(|| narrow_value_path(parent, b, kind)),
        ScimFilter::Compare(path, CompareOp::Eq, CompValue::String(s)) => narrow_compare(path, Some(parent), s, kind),
        _ => None,
    }
}

/// Keyset-scans users (or only the narrowed candidates), rendering and matching each.
fn scan_users(conn: &mut DbConnection, dir: &str, query: &ListQuery) -> Tx<Vec<(UserRecord, Value)>> {
    let kind = ResourceKind::User;
    let needs_groups = query.filter.as_ref().is_some_and(|f| f.mentions(kind, "groups"))
        || query.sort.as_ref().is_some_and(|s| s.by.name.eq_ignore_ascii_case("groups"));
    let narrowed = query.filter.as_ref().and_then(|f| narrow(f, kind));
    let mut out = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let mut q =
            dir_users::table.filter(dir_users::directory_id.eq(dir)).order(dir_users::id).limit(1000).into_boxed();
        match &narrowed {
            Some(Narrow::Id(v)) => q = q.filter(dir_users::id.eq(v.clone())),
            Some(Narrow::UserName(v)) => q = q.filter(dir_users::user_name_lower.eq(v.clone())),
            Some(Narrow::ExternalId(v)) => q = q.filter(dir_users::external_id.eq(v.clone())),
            Some(Narrow::Email(v)) => {
                let ids = dir_user_emails::table
                    .filter(dir_user_emails::directory_id.eq(dir.to_string()))
                    .filter(dir_user_emails::email_lower.eq(v.clone()))
                    .select(dir_user_emails::user_id);
                q = q.filter(dir_users::id.eq_any(ids));
            }
            Some(Narrow::DisplayName(_)) | None => {}
        }
        if let Some(a) = &after {
            q = q.filter(dir_users::id.gt(a.clone()));
        }
        let rows = q.load::<UserRow>(conn)?;
        let Some(last) = rows.last() else { break };
        after = Some(last.id.clone());
        let groups = if needs_groups {
            let ids: Vec<String> = rows.iter().map(|r| r.id.clone()).collect();
            super::diesel_store::groups_of_users(conn, dir, &ids).map_err(|e| match e {
                crate::error::SyncError::Db(d) => Fail::Db(d),
                other => Fail::Store(StoreError::Internal(other.to_string())),
            })?
        } else {
            HashMap::new()
        };
        let n = rows.len();
        for r in rows {
            let rec = user_record(&r);
            let refs: Option<Vec<GroupRef>> = needs_groups.then(|| {
                groups
                    .get(&r.id)
                    .into_iter()
                    .flatten()
                    .map(|(id, name)| GroupRef { id: id.clone(), display_name: name.clone() })
                    .collect()
            });
            let json = rec.to_scim_json(None, refs.as_deref());
            if query.filter.as_ref().is_none_or(|f| f.matches(&json, kind)) {
                out.push((rec, json));
            }
        }
        if n < 1000 {
            break;
        }
    }
    Ok(out)
}

fn scan_groups(conn: &mut DbConnection, dir: &str, query: &ListQuery) -> Tx<Vec<(GroupRow, Value)>> {
    let kind = ResourceKind::Group;
    let needs_members = query.filter.as_ref().is_some_and(|f| f.mentions(kind, "members"));
    let narrowed = query.filter.as_ref().and_then(|f| narrow(f, kind));
    let mut out = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let mut q =
            dir_groups::table.filter(dir_groups::directory_id.eq(dir)).order(dir_groups::id).limit(1000).into_boxed();
        match &narrowed {
            Some(Narrow::Id(v)) => q = q.filter(dir_groups::id.eq(v.clone())),
            Some(Narrow::ExternalId(v)) => q = q.filter(dir_groups::external_id.eq(v.clone())),
            Some(Narrow::DisplayName(v)) => q = q.filter(dir_groups::display_name_lower.eq(v.clone())),
            _ => {}
        }
        if let Some(a) = &after {
            q = q.filter(dir_groups::id.gt(a.clone()));
        }
        let rows = q.load::<GroupRow>(conn)?;
        let Some(last) = rows.last() else { break };
        after = Some(last.id.clone());
        let n = rows.len();
        for r in rows {
            let members = if needs_members { Some(members_of(conn, &r.id)?) } else { None };
            let json = group_record(&r, members).to_scim_json(None);
            if query.filter.as_ref().is_none_or(|f| f.matches(&json, kind)) {
                out.push((r, json));
            }
        }
        if n < 1000 {
            break;
        }
    }
    Ok(out)
}

fn sort_and_page<T>(mut matched: Vec<(T, Value)>, query: &ListQuery, kind: ResourceKind) -> Page<T> {
    if let Some(sort) = &query.sort {
        let exact = kind.case_exact(sort.by.urn.as_deref(), &sort.by.name, sort.by.sub.as_deref());
        matched.sort_by(|(_, a), (_, b)| {
            let o = sort_cmp(sort_value(a, kind, &sort.by), sort_value(b, kind, &sort.by), exact);
            if sort.descending { o.reverse() } else { o }
        });
    }
    let total_results = matched.len();
    let start = query.start_index.max(1) - 1;
    let items = matched.into_iter().skip(start).take(query.count).map(|(t, _)| t).collect();
    Page { total_results, items }
}

impl DieselStore {
    async fn tx<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        F: FnOnce(&mut DbConnection) -> Tx<T> + Send + 'static,
        T: Send + 'static,
    {
        let result = self.db.write(f).await.map_err(store_error);
        if result.is_ok() {
            self.committed();
        }
        result
    }

    async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        F: FnOnce(&mut DbConnection) -> Tx<T> + Send + 'static,
        T: Send + 'static,
    {
        self.db.run(f).await.map_err(store_error)
    }
}

#[async_trait]
impl DirectoryStore for DieselStore {
    async fn directory_for_token(&self, token: &TokenHash) -> Result<Option<String>, StoreError> {
        let presented = token.to_hex();
        let lookup = presented.clone();
        let found: Option<(String, Option<String>)> = self
            .read(move |conn| {
                Ok(directories::table
                    .filter(directories::scim_token_hash.eq(Some(lookup)))
                    .select((directories::id, directories::scim_token_hash))
                    .first(conn)
                    .optional()?)
            })
            .await?;
        // The index finds the row by hash (not secret); the final comparison is
        // constant-time anyway, so no timing difference depends on the stored value.
        Ok(found.and_then(|(id, stored)| {
            let stored = stored.unwrap_or_default();
            bool::from(stored.as_bytes().ct_eq(presented.as_bytes())).then_some(id)
        }))
    }

    async fn create_user(
        &self,
        directory: &str,
        data: UserData,
        join_groups_: &[String],
    ) -> Result<UserRecord, StoreError> {
        let dir = directory.to_string();
        let groups = join_groups_.to_vec();
        self.tx(move |conn| {
            if name_owner(conn, &dir, &data.user_name.to_lowercase())?.is_some() {
                return Err(StoreError::UserNameTaken.into());
            }
            check_groups(conn, &dir, &groups)?;
            let row = user_row(&dir, new_id(), &data, 1, now())?;
            diesel::insert_into(dir_users::table).values(&row).execute(conn)?;
            set_emails(conn, &dir, &row.id, &data.attributes)?;
            let mut events = Vec::new();
            let mut created = NewEventRow::new(&dir, "user.created", &row.id);
            created.data_json = user_json(&row);
            events.push(created);
            join_groups(conn, &dir, &row.id, &groups, &mut events)?;
            enqueue(conn, vec![queue_row(&row)]).map_err(sync_fail)?;
            insert_events(conn, events).map_err(sync_fail)?;
            Ok(user_record(&row))
        })
        .await
    }

    async fn get_user(&self, directory: &str, id: &str) -> Result<Option<UserRecord>, StoreError> {
        let (dir, id) = (directory.to_string(), id.to_string());
        self.read(move |conn| Ok(load_user(conn, &dir, &id)?.map(|r| user_record(&r)))).await
    }

    async fn find_user_by_user_name(&self, directory: &str, user_name: &str) -> Result<Option<UserRecord>, StoreError> {
        let (dir, lower) = (directory.to_string(), user_name.to_lowercase());
        self.read(move |conn| {
            Ok(dir_users::table
                .filter(dir_users::directory_id.eq(&dir))
                .filter(dir_users::user_name_lower.eq(&lower))
                .first::<UserRow>(conn)
                .optional()?
                .map(|r| user_record(&r)))
        })
        .await
    }

    async fn replace_user(
        &self,
        directory: &str,
        id: &str,
        expected_version: Option<&str>,
        data: UserData,
        join_groups_: &[String],
    ) -> Result<UserRecord, StoreError> {
        let (dir, id) = (directory.to_string(), id.to_string());
        let expected = expected_version.map(str::to_string);
        let groups = join_groups_.to_vec();
        self.tx(move |conn| {
            let old = load_user(conn, &dir, &id)?.ok_or(Fail::Store(StoreError::NotFound))?;
            check_version(old.version, expected.as_deref())?;
            if let Some(owner) = name_owner(conn, &dir, &data.user_name.to_lowercase())?
                && owner != id
            {
                return Err(StoreError::UserNameTaken.into());
            }
            check_groups(conn, &dir, &groups)?;
            let row = user_row(&dir, id.clone(), &data, old.version + 1, old.created_at)?;
            diesel::update(dir_users::table.find(&id))
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
                ))
                .execute(conn)?;
            set_emails(conn, &dir, &id, &data.attributes)?;
            let mut events = Vec::new();
            let kind = if old.active && !row.active { "user.deactivated" } else { "user.updated" };
            let mut e = NewEventRow::new(&dir, kind, &id);
            e.data_json = user_json(&row);
            e.previous_json = user_json(&old);
            events.push(e);
            join_groups(conn, &dir, &id, &groups, &mut events)?;
            enqueue(conn, vec![queue_row(&row)]).map_err(sync_fail)?;
            insert_events(conn, events).map_err(sync_fail)?;
            Ok(user_record(&row))
        })
        .await
    }

    async fn delete_user(&self, directory: &str, id: &str, expected_version: Option<&str>) -> Result<(), StoreError> {
        let (dir, id) = (directory.to_string(), id.to_string());
        let expected = expected_version.map(str::to_string);
        self.tx(move |conn| {
            let old = load_user(conn, &dir, &id)?.ok_or(Fail::Store(StoreError::NotFound))?;
            check_version(old.version, expected.as_deref())?;
            let mut events = Vec::new();
            leave_all(conn, &dir, &id, &mut events)?;
            diesel::delete(dir_user_emails::table.filter(dir_user_emails::user_id.eq(&id))).execute(conn)?;
            diesel::delete(dir_users::table.find(&id)).execute(conn)?;
            let mut e = NewEventRow::new(&dir, "user.deleted", &id);
            e.previous_json = user_json(&old);
            events.push(e);
            // The queue row keeps the email: the user is gone from the mirror, and
            // reconciling must still find (and remove) their memberships.
            enqueue(conn, vec![queue_row(&old)]).map_err(sync_fail)?;
            insert_events(conn, events).map_err(sync_fail)?;
            Ok(())
        })
        .await
    }

    async fn list_users(&self, directory: &str, query: &ListQuery) -> Result<Page<UserRecord>, StoreError> {
        let dir = directory.to_string();
        let query = query.clone();
        self.read(move |conn| {
            if query.filter.is_none() && query.sort.is_none() {
                // The common listing: a COUNT and one page by id, never every row.
                let total: i64 = dir_users::table.filter(dir_users::directory_id.eq(&dir)).count().get_result(conn)?;
                let rows = if query.count == 0 {
                    Vec::new()
                } else {
                    dir_users::table
                        .filter(dir_users::directory_id.eq(&dir))
                        .order(dir_users::id)
                        .offset((query.start_index.max(1) - 1) as i64)
                        .limit(query.count as i64)
                        .load::<UserRow>(conn)?
                };
                return Ok(Page { total_results: total as usize, items: rows.iter().map(user_record).collect() });
            }
            let matched = scan_users(conn, &dir, &query)?;
            Ok(sort_and_page(matched, &query, ResourceKind::User))
        })
        .await
    }

    async fn groups_of_users(
        &self,
        directory: &str,
        user_ids: &[String],
    ) -> Result<HashMap<String, Vec<GroupRef>>, StoreError> {
        let dir = directory.to_string();
        let ids = user_ids.to_vec();
        self.read(move |conn| {
            let map = super::diesel_store::groups_of_users(conn, &dir, &ids).map_err(sync_fail)?;
            Ok(map
                .into_iter()
                .map(|(u, gs)| {
                    (u, gs.into_iter().map(|(id, display_name)| GroupRef { id, display_name }).collect::<Vec<_>>())
                })
                .collect())
        })
        .await
    }

    async fn create_group(
        &self,
        directory: &str,
        data: GroupData,
        members: Vec<NewMember>,
    ) -> Result<GroupRecord, StoreError> {
        let dir = directory.to_string();
        self.tx(move |conn| {
            let kinds = resolve(conn, &dir, &members)?;
            let at = now();
            let mut unique: Vec<NewMember> = Vec::new();
            let mut seen = HashSet::new();
            for m in members {
                if seen.insert(m.value.clone()) {
                    unique.push(m);
                }
            }
            let row = GroupRow {
                id: new_id(),
                directory_id: dir.clone(),
                display_name: data.display_name.clone(),
                display_name_lower: data.display_name.to_lowercase(),
                external_id: data.external_id.clone(),
                attributes_json: serde_json::to_string(&data.attributes)
                    .map_err(|e| Fail::Store(StoreError::Internal(e.to_string())))?,
                member_count: unique.len() as i64,
                version: 1,
                created_at: at,
                updated_at: at,
                content_hash: None,
                seen_generation: 0,
            };
            diesel::insert_into(dir_groups::table).values(&row).execute(conn)?;
            let mut events = Vec::new();
            let mut e = NewEventRow::new(&dir, "group.created", &row.id);
            e.data_json = group_json(&row);
            events.push(e);
            let member_rows = insert_members(conn, &row.id, &unique, &kinds)?;
            let user_ids: Vec<String> = unique
                .iter()
                .filter(|m| kinds.get(&m.value) == Some(&MemberKind::User))
                .map(|m| m.value.clone())
                .collect();
            for m in &unique {
                events.push(member_event(&dir, "group.member_added", &row.id, &m.value));
            }
            let queue = queue_users(conn, &dir, &user_ids)?;
            enqueue(conn, queue).map_err(sync_fail)?;
            insert_events(conn, events).map_err(sync_fail)?;
            Ok(group_record(&row, Some(member_rows)))
        })
        .await
    }

    async fn get_group(
        &self,
        directory: &str,
        id: &str,
        include_members: bool,
    ) -> Result<Option<GroupRecord>, StoreError> {
        let (dir, id) = (directory.to_string(), id.to_string());
        self.read(move |conn| {
            let Some(row) = load_group(conn, &dir, &id)? else { return Ok(None) };
            // Members are read only when asked for: IdPs read big groups without them.
            let members = if include_members { Some(members_of(conn, &id)?) } else { None };
            Ok(Some(group_record(&row, members)))
        })
        .await
    }

    async fn list_groups(&self, directory: &str, query: &ListQuery) -> Result<Page<GroupRecord>, StoreError> {
        let dir = directory.to_string();
        let query = query.clone();
        self.read(move |conn| {
            let page = if query.filter.is_none() && query.sort.is_none() {
                let total: i64 =
                    dir_groups::table.filter(dir_groups::directory_id.eq(&dir)).count().get_result(conn)?;
                let rows = if query.count == 0 {
                    Vec::new()
                } else {
                    dir_groups::table
                        .filter(dir_groups::directory_id.eq(&dir))
                        .order(dir_groups::id)
                        .offset((query.start_index.max(1) - 1) as i64)
                        .limit(query.count as i64)
                        .load::<GroupRow>(conn)?
                };
                Page { total_results: total as usize, items: rows }
            } else {
                let matched = scan_groups(conn, &dir, &query)?;
                sort_and_page(matched, &query, ResourceKind::Group)
            };
            let mut items = Vec::with_capacity(page.items.len());
            for r in page.items {
                let members = if query.include_members { Some(members_of(conn, &r.id)?) } else { None };
                items.push(group_record(&r, members));
            }
            Ok(Page { total_results: page.total_results, items })
        })
        .await
    }

    async fn update_group(
        &self,
        directory: &str,
        id: &str,
        expected_version: Option<&str>,
        update: GroupUpdate,
    ) -> Result<GroupRecord, StoreError> {
        let (dir, id) = (directory.to_string(), id.to_string());
        let expected = expected_version.map(str::to_string);
        self.tx(move |conn| {
            let old = load_group(conn, &dir, &id)?.ok_or(Fail::Store(StoreError::NotFound))?;
            check_version(old.version, expected.as_deref())?;
            let change = update.members;
            // Validate everything before the first write.
            let add_kinds = resolve(conn, &dir, &change.add)?;
            let replace_kinds = match &change.replace_all {
                Some(all) => Some(resolve(conn, &dir, all)?),
                None => None,
            };
            let mut events = Vec::new();
            let mut touched: Vec<String> = Vec::new();
            let mut delta: i64 = 0;
            let mut renamed = false;
            if let Some(data) = &update.data {
                renamed = data.display_name != old.display_name;
                diesel::update(dir_groups::table.find(&id))
                    .set((
                        dir_groups::display_name.eq(&data.display_name),
                        dir_groups::display_name_lower.eq(data.display_name.to_lowercase()),
                        dir_groups::external_id.eq(&data.external_id),
                        dir_groups::attributes_json.eq(serde_json::to_string(&data.attributes)
                            .map_err(|e| Fail::Store(StoreError::Internal(e.to_string())))?),
                    ))
                    .execute(conn)?;
            }
            if let (Some(all), Some(kinds)) = (change.replace_all, replace_kinds) {
                // Only an explicit replace may touch every member.
                let before: Vec<(String, String)> = dir_members::table
                    .filter(dir_members::group_id.eq(&id))
                    .select((dir_members::member_id, dir_members::member_kind))
                    .load(conn)?;
                let mut unique: Vec<NewMember> = Vec::new();
                let mut seen = HashSet::new();
                for m in all {
                    if seen.insert(m.value.clone()) {
                        unique.push(m);
                    }
                }
                let before_ids: HashSet<&str> = before.iter().map(|(m, _)| m.as_str()).collect();
                diesel::delete(dir_members::table.filter(dir_members::group_id.eq(&id))).execute(conn)?;
                insert_members(conn, &id, &unique, &kinds)?;
                for (m, k) in &before {
                    if !seen.contains(m) {
                        events.push(member_event(&dir, "group.member_removed", &id, m));
                        if k == MemberKind::User.as_str() {
                            touched.push(m.clone());
                        }
                    }
                }
                for m in &unique {
                    if !before_ids.contains(m.value.as_str()) {
                        events.push(member_event(&dir, "group.member_added", &id, &m.value));
                        if kinds.get(&m.value) == Some(&MemberKind::User) {
                            touched.push(m.value.clone());
                        }
                    }
                }
                delta += unique.len() as i64 - before.len() as i64;
            }
            // Deltas: one indexed read and one write per id, whatever the group's size.
            for chunk in change.remove.chunks(CHUNK) {
                let present: Vec<(String, String)> = dir_members::table
                    .filter(dir_members::group_id.eq(&id))
                    .filter(dir_members::member_id.eq_any(chunk))
                    .select((dir_members::member_id, dir_members::member_kind))
                    .load(conn)?;
                if present.is_empty() {
                    continue;
                }
                let ids: Vec<&str> = present.iter().map(|(m, _)| m.as_str()).collect();
                diesel::delete(
                    dir_members::table.filter(dir_members::group_id.eq(&id)).filter(dir_members::member_id.eq_any(ids)),
                )
                .execute(conn)?;
                delta -= present.len() as i64;
                for (m, k) in present {
                    events.push(member_event(&dir, "group.member_removed", &id, &m));
                    if k == MemberKind::User.as_str() {
                        touched.push(m);
                    }
                }
            }
            let mut new_members: Vec<NewMember> = Vec::new();
            let mut seen = HashSet::new();
            for chunk in change.add.chunks(CHUNK) {
                let ids: Vec<&str> = chunk.iter().map(|m| m.value.as_str()).collect();
                let present: HashSet<String> = dir_members::table
                    .filter(dir_members::group_id.eq(&id))
                    .filter(dir_members::member_id.eq_any(ids))
                    .select(dir_members::member_id)
                    .load::<String>(conn)?
                    .into_iter()
                    .collect();
                for m in chunk {
                    if present.contains(&m.value) {
                        // Adding a present member only refreshes its display.
                        if m.display.is_some() {
                            diesel::update(
                                dir_members::table
                                    .filter(dir_members::group_id.eq(&id))
                                    .filter(dir_members::member_id.eq(&m.value)),
                            )
                            .set(dir_members::display.eq(&m.display))
                            .execute(conn)?;
                        }
                    } else if seen.insert(m.value.clone()) {
                        new_members.push(m.clone());
                    }
                }
            }
            insert_members(conn, &id, &new_members, &add_kinds)?;
            delta += new_members.len() as i64;
            for m in &new_members {
                events.push(member_event(&dir, "group.member_added", &id, &m.value));
                if add_kinds.get(&m.value) == Some(&MemberKind::User) {
                    touched.push(m.value.clone());
                }
            }
            touch_group(conn, &id, delta)?;
            let row = load_group(conn, &dir, &id)?.ok_or(Fail::Store(StoreError::NotFound))?;
            if update.data.is_some() {
                let mut e = NewEventRow::new(&dir, "group.updated", &id);
                e.data_json = group_json(&row);
                e.previous_json = group_json(&old);
                events.insert(0, e);
            }
            if renamed {
                // A mapping may name the group by its name: everyone in it is re-decided.
                let members: Vec<String> = dir_members::table
                    .filter(dir_members::group_id.eq(&id))
                    .filter(dir_members::member_kind.eq(MemberKind::User.as_str()))
                    .select(dir_members::member_id)
                    .load(conn)?;
                touched.extend(members);
            }
            touched.sort();
            touched.dedup();
            let queue = queue_users(conn, &dir, &touched)?;
            enqueue(conn, queue).map_err(sync_fail)?;
            insert_events(conn, events).map_err(sync_fail)?;
            Ok(group_record(&row, None))
        })
        .await
    }

    async fn delete_group(&self, directory: &str, id: &str, expected_version: Option<&str>) -> Result<(), StoreError> {
        let (dir, id) = (directory.to_string(), id.to_string());
        let expected = expected_version.map(str::to_string);
        self.tx(move |conn| {
            let old = load_group(conn, &dir, &id)?.ok_or(Fail::Store(StoreError::NotFound))?;
            check_version(old.version, expected.as_deref())?;
            let users: Vec<String> = dir_members::table
                .filter(dir_members::group_id.eq(&id))
                .filter(dir_members::member_kind.eq(MemberKind::User.as_str()))
                .select(dir_members::member_id)
                .load(conn)?;
            let mut events = Vec::new();
            leave_all(conn, &dir, &id, &mut events)?;
            diesel::delete(dir_members::table.filter(dir_members::group_id.eq(&id))).execute(conn)?;
            diesel::delete(dir_groups::table.find(&id)).execute(conn)?;
            // One event for the group; its memberships end with it.
            let mut e = NewEventRow::new(&dir, "group.deleted", &id);
            e.previous_json = group_json(&old);
            events.push(e);
            let queue = queue_users(conn, &dir, &users)?;
            enqueue(conn, queue).map_err(sync_fail)?;
            insert_events(conn, events).map_err(sync_fail)?;
            Ok(())
        })
        .await
    }
}

fn insert_members(
    conn: &mut DbConnection,
    group_id: &str,
    members: &[NewMember],
    kinds: &HashMap<String, MemberKind>,
) -> Tx<Vec<Member>> {
    let rows: Vec<_> = members
        .iter()
        .map(|m| {
            let kind = kinds.get(&m.value).copied().unwrap_or(MemberKind::User);
            (
                dir_members::group_id.eq(group_id.to_string()),
                dir_members::member_id.eq(m.value.clone()),
                dir_members::member_kind.eq(kind.as_str()),
                dir_members::display.eq(m.display.clone()),
            )
        })
        .collect();
    for chunk in rows.chunks(CHUNK) {
        insert_many!(conn, dir_members::table, chunk)?;
    }
    let mut out: Vec<Member> = members
        .iter()
        .map(|m| Member {
            value: m.value.clone(),
            kind: kinds.get(&m.value).copied().unwrap_or(MemberKind::User),
            display: m.display.clone(),
        })
        .collect();
    out.sort_by(|a, b| a.value.cmp(&b.value));
    Ok(out)
}

fn sync_fail(e: crate::error::SyncError) -> Fail {
    match e {
        crate::error::SyncError::Db(DbError::Query(q)) => Fail::from(q),
        crate::error::SyncError::Db(d) => Fail::Db(d),
        other => Fail::Store(StoreError::Internal(other.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_narrow_to_indexed_lookups() {
        let f = ScimFilter::parse(r#"userName eq "Ann@X.io""#).unwrap();
        assert_eq!(narrow(&f, ResourceKind::User), Some(Narrow::UserName("ann@x.io".into())));
        let f = ScimFilter::parse(r#"externalId eq "abc""#).unwrap();
        assert_eq!(narrow(&f, ResourceKind::User), Some(Narrow::ExternalId("abc".into())));
        let f = ScimFilter::parse(r#"emails[type eq "work" and value eq "A@x.io"]"#).unwrap();
        assert_eq!(narrow(&f, ResourceKind::User), Some(Narrow::Email("a@x.io".into())));
        let f = ScimFilter::parse(r#"emails.value eq "A@x.io""#).unwrap();
        assert_eq!(narrow(&f, ResourceKind::User), Some(Narrow::Email("a@x.io".into())));
        let f = ScimFilter::parse(r#"displayName eq "Eng""#).unwrap();
        assert_eq!(narrow(&f, ResourceKind::Group), Some(Narrow::DisplayName("eng".into())));
        // A disjunction cannot be narrowed to one lookup.
        let f = ScimFilter::parse(r#"userName eq "a" or userName eq "b""#).unwrap();
        assert_eq!(narrow(&f, ResourceKind::User), None);
        let f = ScimFilter::parse(r#"active eq true and userName eq "a""#).unwrap();
        assert_eq!(narrow(&f, ResourceKind::User), Some(Narrow::UserName("a".into())));
    }
}
