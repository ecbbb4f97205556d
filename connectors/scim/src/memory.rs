//! An in-memory [`DirectoryStore`], for tests, benchmarks and trying the
//! router out. It keeps the whole contract (scoping, atomic writes under one
//! lock, compare-and-set versions, membership deltas that cost in proportion
//! to the change, members read only on demand) so the router's tests say
//! something true about a database implementation too.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use async_trait::async_trait;
use chrono::Utc;
use subtle::ConstantTimeEq;
use tokio::sync::RwLock;

use crate::filter::{sort_cmp, sort_value};
use crate::schema::ResourceKind;
use crate::store::{
    DirectoryStore, GroupData, GroupRecord, GroupRef, GroupUpdate, ListQuery, Member, MemberKind, Meta, NewMember,
    Page, StoreError, TokenHash, UserData, UserRecord,
};

/// The in-memory store. Cheap to create; share it in an `Arc`.
#[derive(Default)]
pub struct MemoryDirectoryStore {
    state: RwLock<State>,
}

#[derive(Default)]
struct State {
    tokens: Vec<(TokenHash, String)>,
    directories: HashMap<String, Directory>,
}

#[derive(Default)]
struct Directory {
    users: BTreeMap<String, UserRecord>,
    /// Lowercased userName -> id.
    user_names: HashMap<String, String>,
    groups: BTreeMap<String, StoredGroup>,
    /// Member id (user or group) -> ids of the groups it is in.
    memberships: HashMap<String, BTreeSet<String>>,
    seq: u64,
}

struct StoredGroup {
    record: GroupRecord,
    members: BTreeMap<String, Member>,
}

impl Directory {
    fn next_version(&mut self) -> String {
        self.seq += 1;
        self.seq.to_string()
    }

    fn kind_of(&self, id: &str) -> Option<MemberKind> {
        if self.users.contains_key(id) {
            Some(MemberKind::User)
        } else if self.groups.contains_key(id) {
            Some(MemberKind::Group)
        } else {
            None
        }
    }

    fn check_name_free(&self, user_name: &str, except: Option<&str>) -> Result<(), StoreError> {
        match self.user_names.get(&user_name.to_lowercase()) {
            Some(owner) if Some(owner.as_str()) != except => Err(StoreError::UserNameTaken),
            _ => Ok(()),
        }
    }

    /// Resolves the kinds of members to add, or fails before anything changes.
    fn resolve_members(&self, members: &[NewMember]) -> Result<Vec<MemberKind>, StoreError> {
        members
            .iter()
            .map(|m| self.kind_of(&m.value).ok_or_else(|| StoreError::UnknownMember(m.value.clone())))
            .collect()
    }

    fn check_groups(&self, ids: &[String]) -> Result<(), StoreError> {
        match ids.iter().find(|g| !self.groups.contains_key(*g)) {
            Some(g) => Err(StoreError::UnknownMember(g.clone())),
            None => Ok(()),
        }
    }

    fn add_member(&mut self, group_id: &str, m: NewMember, kind: MemberKind) {
        if let Some(g) = self.groups.get_mut(group_id) {
            self.memberships.entry(m.value.clone()).or_default().insert(group_id.to_string());
            g.members.insert(m.value.clone(), Member { value: m.value, kind, display: m.display });
        }
    }

    fn remove_member(&mut self, group_id: &str, member_id: &str) {
        if let Some(g) = self.groups.get_mut(group_id) {
            g.members.remove(member_id);
        }
        if let Some(set) = self.memberships.get_mut(member_id) {
            set.remove(group_id);
            if set.is_empty() {
                self.memberships.remove(member_id);
            }
        }
    }

    fn touch_group(&mut self, group_id: &str) {
        let version = self.next_version();
        if let Some(g) = self.groups.get_mut(group_id) {
            g.record.meta.version = version;
            g.record.meta.last_modified = Utc::now();
        }
    }

    /// Adds a member to groups, bumping each group's version.
    fn join(&mut self, member_id: &str, kind: MemberKind, group_ids: &[String]) {
        for gid in group_ids {
            let already = self.groups.get(gid).is_some_and(|g| g.members.contains_key(member_id));
            if !already {
                self.add_member(gid, NewMember { value: member_id.to_string(), display: None }, kind);
                self.touch_group(gid);
            }
        }
    }

    /// Removes a member from every group it is in.
    fn leave_all(&mut self, member_id: &str) {
        let groups = self.memberships.remove(member_id).unwrap_or_default();
        for gid in groups {
            if let Some(g) = self.groups.get_mut(&gid) {
                g.members.remove(member_id);
            }
            self.touch_group(&gid);
        }
    }

    fn group_record(&self, g: &StoredGroup, include_members: bool) -> GroupRecord {
        let mut r = g.record.clone();
        if include_members {
            r.members = Some(g.members.values().cloned().collect());
        }
        r
    }
}

fn check_version(meta: &Meta, expected: Option<&str>) -> Result<(), StoreError> {
    match expected {
        Some(v) if v != meta.version => Err(StoreError::VersionMismatch),
        _ => Ok(()),
    }
}

fn paginate<T>(mut items: Vec<T>, query: &ListQuery) -> Page<T> {
    let total_results = items.len();
    let start = query.start_index.max(1) - 1;
    let items = if start >= items.len() { Vec::new() } else { items.drain(start..).take(query.count).collect() };
    Page { total_results, items }
}

impl MemoryDirectoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers a directory and a bearer token that opens it (stored hashed).
    pub async fn add_token(&self, directory: &str, token: &str) {
        let mut s = self.state.write().await;
        s.tokens.push((TokenHash::of(token), directory.to_string()));
        s.directories.entry(directory.to_string()).or_default();
    }

    /// The id of the user with this userName (for tests).
    pub async fn find_user_by_user_name_for_test(&self, directory: &str, user_name: &str) -> Option<String> {
        let s = self.state.read().await;
        let d = s.directories.get(directory)?;
        d.user_names.get(&user_name.to_lowercase()).cloned()
    }

    /// How many members a group has (for tests and benchmarks).
    pub async fn member_count(&self, directory: &str, group_id: &str) -> usize {
        let s = self.state.read().await;
        s.directories.get(directory).and_then(|d| d.groups.get(group_id)).map_or(0, |g| g.members.len())
    }
}

#[async_trait]
impl DirectoryStore for MemoryDirectoryStore {
    async fn directory_for_token(&self, token: &TokenHash) -> Result<Option<String>, StoreError> {
        let s = self.state.read().await;
        let mut found = None;
        // Compare every entry in constant time; no early exit.
        for (hash, dir) in &s.tokens {
            if bool::from(hash.0.ct_eq(&token.0)) {
                found = Some(dir.clone());
            }
        }
        Ok(found)
    }

    async fn create_user(
        &self,
        directory: &str,
        data: UserData,
        join_groups: &[String],
    ) -> Result<UserRecord, StoreError> {
        let mut s = self.state.write().await;
        let d = s.directories.entry(directory.to_string()).or_default();
        d.check_name_free(&data.user_name, None)?;
        d.check_groups(join_groups)?;
        let id = uuid::Uuid::new_v4().to_string();
        let now = Utc::now();
        let record = UserRecord {
            id: id.clone(),
            meta: Meta { created: now, last_modified: now, version: d.next_version() },
            data,
        };
        d.user_names.insert(record.data.user_name.to_lowercase(), id.clone());
        d.users.insert(id.clone(), record.clone());
        d.join(&id, MemberKind::User, join_groups);
        Ok(record)
    }

    async fn get_user(&self, directory: &str, id: &str) -> Result<Option<UserRecord>, StoreError> {
        let s = self.state.read().await;
        Ok(s.directories.get(directory).and_then(|d| d.users.get(id)).cloned())
    }

    async fn find_user_by_user_name(&self, directory: &str, user_name: &str) -> Result<Option<UserRecord>, StoreError> {
        let s = self.state.read().await;
        Ok(s.directories
            .get(directory)
            .and_then(|d| d.user_names.get(&user_name.to_lowercase()).and_then(|id| d.users.get(id)).cloned()))
    }

    async fn replace_user(
        &self,
        directory: &str,
        id: &str,
        expected_version: Option<&str>,
        data: UserData,
        join_groups: &[String],
    ) -> Result<UserRecord, StoreError> {
        let mut s = self.state.write().await;
        let d = s.directories.get_mut(directory).ok_or(StoreError::NotFound)?;
        let current = d.users.get(id).ok_or(StoreError::NotFound)?;
        check_version(&current.meta, expected_version)?;
        d.check_name_free(&data.user_name, Some(id))?;
        d.check_groups(join_groups)?;
        let old_name = current.data.user_name.to_lowercase();
        let version = d.next_version();
        let Some(user) = d.users.get_mut(id) else {
            return Err(StoreError::NotFound);
        };
        user.data = data;
        user.meta.version = version;
        user.meta.last_modified = Utc::now();
        let record = user.clone();
        d.user_names.remove(&old_name);
        d.user_names.insert(record.data.user_name.to_lowercase(), id.to_string());
        d.join(id, MemberKind::User, join_groups);
        Ok(record)
    }

    async fn delete_user(&self, directory: &str, id: &str, expected_version: Option<&str>) -> Result<(), StoreError> {
        let mut s = self.state.write().await;
        let d = s.directories.get_mut(directory).ok_or(StoreError::NotFound)?;
        let current = d.users.get(id).ok_or(StoreError::NotFound)?;
        check_version(&current.meta, expected_version)?;
        if let Some(u) = d.users.remove(id) {
            d.user_names.remove(&u.data.user_name.to_lowercase());
        }
        d.leave_all(id);
        Ok(())
    }

    async fn list_users(&self, directory: &str, query: &ListQuery) -> Result<Page<UserRecord>, StoreError> {
        let s = self.state.read().await;
        let Some(d) = s.directories.get(directory) else {
            return Ok(Page { total_results: 0, items: Vec::new() });
        };
        let kind = ResourceKind::User;
        // Indexed path, as a database would: `userName eq "x"`.
        let indexed = query
            .filter
            .as_ref()
            .and_then(|f| f.as_string_eq().filter(|(p, _)| p.is(kind, "userName")).map(|(_, v)| v.to_lowercase()));
        let needs_groups = query.filter.as_ref().is_some_and(|f| f.mentions(kind, "groups"))
            || query.sort.as_ref().is_some_and(|s| s.by.name.eq_ignore_ascii_case("groups"));
        let render = |u: &UserRecord| {
            let groups: Option<Vec<GroupRef>> = needs_groups.then(|| {
                d.memberships
                    .get(&u.id)
                    .into_iter()
                    .flatten()
                    .filter_map(|g| d.groups.get(g))
                    .map(|g| GroupRef { id: g.record.id.clone(), display_name: g.record.data.display_name.clone() })
                    .collect()
            });
            u.to_scim_json(None, groups.as_deref())
        };
        let candidates: Vec<&UserRecord> = match &indexed {
            Some(name) => d.user_names.get(name).and_then(|id| d.users.get(id)).into_iter().collect(),
            None => d.users.values().collect(),
        };
        let mut matched: Vec<(&UserRecord, Option<serde_json::Value>)> = Vec::new();
        for u in candidates {
            let json = if query.filter.is_some() || query.sort.is_some() { Some(render(u)) } else { None };
            let keep = match (&query.filter, &json) {
                (Some(f), Some(j)) => f.matches(j, kind),
                _ => true,
            };
            if keep {
                matched.push((u, json));
            }
        }
        if let Some(sort) = &query.sort {
            let exact = kind.case_exact(sort.by.urn.as_deref(), &sort.by.name, sort.by.sub.as_deref());
            matched.sort_by(|(_, a), (_, b)| {
                let va = a.as_ref().and_then(|j| sort_value(j, kind, &sort.by));
                let vb = b.as_ref().and_then(|j| sort_value(j, kind, &sort.by));
                let o = sort_cmp(va, vb, exact);
                if sort.descending { o.reverse() } else { o }
            });
        }
        let page = paginate(matched, query);
        Ok(Page { total_results: page.total_results, items: page.items.into_iter().map(|(u, _)| u.clone()).collect() })
    }

    async fn groups_of_users(
        &self,
        directory: &str,
        user_ids: &[String],
    ) -> Result<HashMap<String, Vec<GroupRef>>, StoreError> {
        let s = self.state.read().await;
        let mut out = HashMap::new();
        let Some(d) = s.directories.get(directory) else {
            return Ok(out);
        };
        for uid in user_ids {
            let refs: Vec<GroupRef> = d
                .memberships
                .get(uid)
                .into_iter()
                .flatten()
                .filter_map(|g| d.groups.get(g))
                .map(|g| GroupRef { id: g.record.id.clone(), display_name: g.record.data.display_name.clone() })
                .collect();
            if !refs.is_empty() {
                out.insert(uid.clone(), refs);
            }
        }
        Ok(out)
    }

    async fn create_group(
        &self,
        directory: &str,
        data: GroupData,
        members: Vec<NewMember>,
    ) -> Result<GroupRecord, StoreError> {
        let mut s = self.state.write().await;
        let d = s.directories.entry(directory.to_string()).or_default();
        let kinds = d.resolve_members(&members)?;
        let id = uuid::Uuid::new_v4().to_string();
        let now = Utc::now();
        let record = GroupRecord {
            id: id.clone(),
            data,
            meta: Meta { created: now, last_modified: now, version: d.next_version() },
            members: None,
        };
        d.groups.insert(id.clone(), StoredGroup { record, members: BTreeMap::new() });
        for (m, k) in members.into_iter().zip(kinds) {
            d.add_member(&id, m, k);
        }
        let g = d.groups.get(&id).ok_or(StoreError::NotFound)?;
        Ok(d.group_record(g, true))
    }

    async fn get_group(
        &self,
        directory: &str,
        id: &str,
        include_members: bool,
    ) -> Result<Option<GroupRecord>, StoreError> {
        let s = self.state.read().await;
        Ok(s.directories.get(directory).and_then(|d| d.groups.get(id).map(|g| d.group_record(g, include_members))))
    }

    async fn list_groups(&self, directory: &str, query: &ListQuery) -> Result<Page<GroupRecord>, StoreError> {
        let s = self.state.read().await;
        let Some(d) = s.directories.get(directory) else {
            return Ok(Page { total_results: 0, items: Vec::new() });
        };
        let kind = ResourceKind::Group;
        let filter_needs_members = query.filter.as_ref().is_some_and(|f| f.mentions(kind, "members"));
        let mut matched: Vec<(&StoredGroup, Option<serde_json::Value>)> = Vec::new();
        for g in d.groups.values() {
            let json = if query.filter.is_some() || query.sort.is_some() {
                Some(d.group_record(g, filter_needs_members).to_scim_json(None))
            } else {
                None
            };
            let keep = match (&query.filter, &json) {
                (Some(f), Some(j)) => f.matches(j, kind),
                _ => true,
            };
            if keep {
                matched.push((g, json));
            }
        }
        if let Some(sort) = &query.sort {
            let exact = kind.case_exact(sort.by.urn.as_deref(), &sort.by.name, sort.by.sub.as_deref());
            matched.sort_by(|(_, a), (_, b)| {
                let va = a.as_ref().and_then(|j| sort_value(j, kind, &sort.by));
                let vb = b.as_ref().and_then(|j| sort_value(j, kind, &sort.by));
                let o = sort_cmp(va, vb, exact);
                if sort.descending { o.reverse() } else { o }
            });
        }
        let page = paginate(matched, query);
        Ok(Page {
            total_results: page.total_results,
            items: page.items.into_iter().map(|(g, _)| d.group_record(g, query.include_members)).collect(),
        })
    }

    async fn update_group(
        &self,
        directory: &str,
        id: &str,
        expected_version: Option<&str>,
        update: GroupUpdate,
    ) -> Result<GroupRecord, StoreError> {
        let mut s = self.state.write().await;
        let d = s.directories.get_mut(directory).ok_or(StoreError::NotFound)?;
        let current = d.groups.get(id).ok_or(StoreError::NotFound)?;
        check_version(&current.record.meta, expected_version)?;
        let change = update.members;
        // Validate everything before the first write.
        let add_kinds = d.resolve_members(&change.add)?;
        let replace_kinds = match &change.replace_all {
            Some(all) => Some(d.resolve_members(all)?),
            None => None,
        };
        if let Some(data) = update.data
            && let Some(g) = d.groups.get_mut(id)
        {
            g.record.data = data;
        }
        if let (Some(all), Some(kinds)) = (change.replace_all, replace_kinds) {
            let old: Vec<String> = d.groups.get(id).map(|g| g.members.keys().cloned().collect()).unwrap_or_default();
            for m in old {
                d.remove_member(id, &m);
            }
            for (m, k) in all.into_iter().zip(kinds) {
                d.add_member(id, m, k);
            }
        }
        for m in &change.remove {
            d.remove_member(id, m);
        }
        for (m, k) in change.add.into_iter().zip(add_kinds) {
            d.add_member(id, m, k);
        }
        d.touch_group(id);
        let g = d.groups.get(id).ok_or(StoreError::NotFound)?;
        Ok(d.group_record(g, false))
    }

    async fn delete_group(&self, directory: &str, id: &str, expected_version: Option<&str>) -> Result<(), StoreError> {
        let mut s = self.state.write().await;
        let d = s.directories.get_mut(directory).ok_or(StoreError::NotFound)?;
        let current = d.groups.get(id).ok_or(StoreError::NotFound)?;
        check_version(&current.record.meta, expected_version)?;
        if let Some(g) = d.groups.remove(id) {
            for m in g.members.keys() {
                if let Some(set) = d.memberships.get_mut(m) {
                    set.remove(id);
                    if set.is_empty() {
                        d.memberships.remove(m);
                    }
                }
            }
        }
        d.leave_all(id);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MembershipChange;
    use serde_json::Map;

    fn user(name: &str) -> UserData {
        UserData { user_name: name.into(), external_id: None, active: Some(true), attributes: Map::new() }
    }

    #[tokio::test]
    async fn directories_are_isolated_and_names_unique_case_insensitively() {
        let s = MemoryDirectoryStore::new();
        let a = s.create_user("A", user("x@y.z"), &[]).await.unwrap();
        assert!(s.get_user("B", &a.id).await.unwrap().is_none());
        assert_eq!(s.create_user("A", user("X@Y.Z"), &[]).await.unwrap_err(), StoreError::UserNameTaken);
        s.create_user("B", user("X@Y.Z"), &[]).await.unwrap();
    }

    #[tokio::test]
    async fn membership_deltas_validate_before_writing() {
        let s = MemoryDirectoryStore::new();
        let u = s.create_user("A", user("u"), &[]).await.unwrap();
        let g = s
            .create_group(
                "A",
                GroupData { display_name: "g".into(), external_id: None, attributes: Map::new() },
                vec![],
            )
            .await
            .unwrap();
        let bad = GroupUpdate {
            data: None,
            members: MembershipChange {
                add: vec![
                    NewMember { value: u.id.clone(), display: None },
                    NewMember { value: "nope".into(), display: None },
                ],
                ..Default::default()
            },
        };
        assert!(matches!(s.update_group("A", &g.id, None, bad).await, Err(StoreError::UnknownMember(_))));
        assert_eq!(s.member_count("A", &g.id).await, 0);
        let stale = g.meta.version.clone();
        let ok = GroupUpdate {
            data: None,
            members: MembershipChange {
                add: vec![NewMember { value: u.id.clone(), display: None }],
                ..Default::default()
            },
        };
        let after = s.update_group("A", &g.id, Some(&stale), ok.clone()).await.unwrap();
        assert_ne!(after.meta.version, stale);
        assert_eq!(s.update_group("A", &g.id, Some(&stale), ok).await.unwrap_err(), StoreError::VersionMismatch);
        let groups = s.groups_of_users("A", std::slice::from_ref(&u.id)).await.unwrap();
        assert_eq!(groups[&u.id][0].id, g.id);
        s.delete_user("A", &u.id, None).await.unwrap();
        assert_eq!(s.member_count("A", &g.id).await, 0);
    }
}
