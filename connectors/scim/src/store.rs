//! The storage contract behind the SCIM router: [`DirectoryStore`].
//!
//! Directory-sync implements it on its database (diesel on SQLite or
//! PostgreSQL); this crate ships an in-memory implementation
//! ([`crate::memory::MemoryDirectoryStore`]) for tests and benchmarks.
//!
//! # Contract, for implementers
//!
//! - **Scoped.** Every method takes the directory id. Nothing a method reads
//!   or writes may belong to another directory: an id of directory A looked up
//!   in directory B is "not found".
//! - **Atomic.** Each writing method is one transaction: it applies fully or
//!   not at all. The router validates a request completely before it calls a
//!   writing method, and calls at most one writing method per request, so a
//!   SCIM request is atomic exactly when each method is.
//! - **Versioned.** Every write gives the resource a new opaque
//!   [`Meta::version`] (a counter or a hash; it is served as a weak ETag).
//!   A writing method given `expected_version` applies only if the stored
//!   version still equals it, and fails with [`StoreError::VersionMismatch`]
//!   otherwise (compare-and-set). The router uses this both for `If-Match`
//!   and to make its read-modify-write of a PATCH safe against a concurrent
//!   request. Membership changes also change the group's version.
//! - **Deltas for membership.** Membership changes arrive as
//!   [`MembershipChange`]: ids to add and ids to remove. Applying one must
//!   cost in proportion to the ids in it, not to the group's size (one
//!   indexed insert or delete per id). Only an explicit
//!   [`MembershipChange::replace_all`] (a PUT of the group, or a PATCH
//!   `replace` of `members`) may touch every member.
//! - **Members on demand.** [`DirectoryStore::get_group`] and
//!   [`ListQuery::include_members`] say whether members are wanted; when they
//!   are not, the implementation must not read the membership table at all
//!   (`GET /Groups/{id}?excludedAttributes=members` is how IdPs read big
//!   groups).
//! - **Paged listing.** [`DirectoryStore::list_users`] and
//!   [`DirectoryStore::list_groups`] get the parsed filter, a 1-based
//!   `start_index`, a `count` (already clamped by the router) and an optional
//!   sort. They return one page and `total_results` (a `COUNT(*)`, never
//!   loading every row). The order without `sort` must be stable between
//!   calls (for example by id). A database implementation translates the
//!   filters IdPs send (see [`crate::filter::ScimFilter::as_string_eq`] and
//!   [`crate::filter::ScimFilter::as_value_path_eqs`]: `userName eq`,
//!   `externalId eq`, `displayName eq`, `id eq`,
//!   `emails[type eq "work"].value eq`) into indexed queries and falls back to
//!   evaluating [`crate::filter::ScimFilter::matches`] on candidate rows for
//!   anything else. The resource JSON given to `matches` is the rendered
//!   SCIM representation ([`UserRecord::to_scim_json`]).
//! - **userName is unique case-insensitively** within a directory, among
//!   active and inactive users alike: a write that would break this fails
//!   with [`StoreError::UserNameTaken`].
//! - **Deactivation is an update.** IdPs unassign a user by setting
//!   `active` to `false` (PATCH or PUT), rarely by DELETE. The store receives
//!   that as an ordinary [`DirectoryStore::replace_user`] whose
//!   [`UserData::active`] is `false`: that write is how the owner (directory
//!   sync) learns the user is no longer assigned, and it must treat it so
//!   (reconcile the user out of the orgs). The user stays stored, readable and
//!   filterable, keeps its id, and comes back with the same id when the IdP
//!   re-activates it or POSTs its `userName` again.
//! - **Deletion cascades** to memberships: deleting a user removes it from
//!   every group, deleting a group removes it from every group it was in.
//! - **Errors.** Transient failures (a pool timeout, a lost connection) are
//!   [`StoreError::Unavailable`] (the IdP gets a 503 and retries); bugs and
//!   broken invariants are [`StoreError::Internal`] (logged, a 500).

use std::collections::HashMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::filter::{AttrPath, ScimFilter};

/// What a store can fail with.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum StoreError {
    /// The resource does not exist in this directory.
    #[error("not found")]
    NotFound,
    /// Another user of the directory has this userName (case-insensitively).
    #[error("userName taken")]
    UserNameTaken,
    /// `expected_version` did not match the stored version.
    #[error("version mismatch")]
    VersionMismatch,
    /// A member or group id that is not a user or group of this directory.
    #[error("unknown member {0}")]
    UnknownMember(String),
    /// Transient failure: retry later.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// Anything else.
    #[error("internal: {0}")]
    Internal(String),
}

/// SHA-256 of a bearer token. Tokens are stored hashed; a store looks the
/// hash up (an index on the hash column is fine: the hash is not secret).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct TokenHash(pub [u8; 32]);

impl TokenHash {
    /// Hashes a presented token.
    pub fn of(token: &str) -> Self {
        TokenHash(Sha256::digest(token.as_bytes()).into())
    }

    /// Lowercase hex, for storage.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl std::fmt::Debug for TokenHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TokenHash({}…)", &self.to_hex()[..8])
    }
}

/// Resource metadata kept by the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Meta {
    /// When created.
    pub created: DateTime<Utc>,
    /// When last changed (membership changes included, for groups).
    pub last_modified: DateTime<Utc>,
    /// Opaque version, new on every write; served as `W/"<version>"`.
    pub version: String,
}

/// A user as written by a request: validated, canonical attribute names.
#[derive(Debug, Clone, PartialEq)]
pub struct UserData {
    /// Unique case-insensitively within the directory.
    pub user_name: String,
    /// The IdP's id for the user.
    pub external_id: Option<String>,
    /// `active` as the IdP sent it: `Some(false)` means the IdP no longer assigns
    /// the user; `None` (the IdP sent no `active`, or removed it) reads back without
    /// `active` and counts as assigned ([`UserData::assigned`]).
    pub active: Option<bool>,
    /// Every other attribute in SCIM JSON with canonical names (`name`,
    /// `emails`, ...); enterprise extension attributes under the key
    /// `urn:ietf:params:scim:schemas:extension:enterprise:2.0:User`. Never
    /// contains `id`, `meta`, `schemas`, `groups`, `password`, `userName`,
    /// `externalId` or `active`.
    pub attributes: Map<String, Value>,
}

/// A stored user.
#[derive(Debug, Clone, PartialEq)]
pub struct UserRecord {
    /// Server-assigned id, immutable.
    pub id: String,
    /// The attributes.
    pub data: UserData,
    /// Metadata.
    pub meta: Meta,
}

/// A group as written by a request (members travel separately).
#[derive(Debug, Clone, PartialEq)]
pub struct GroupData {
    /// The group's name.
    pub display_name: String,
    /// The IdP's id for the group.
    pub external_id: Option<String>,
    /// Other attributes (none in the core schema; kept for extensions).
    pub attributes: Map<String, Value>,
}

/// Whether a member is a user or a nested group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MemberKind {
    /// A user of the directory.
    User,
    /// A group of the directory.
    Group,
}

impl MemberKind {
    /// `User` or `Group`.
    pub fn as_str(self) -> &'static str {
        match self {
            MemberKind::User => "User",
            MemberKind::Group => "Group",
        }
    }
}

/// A member as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// The member's id.
    pub value: String,
    /// User or group, as resolved by the store when the member was added.
    pub kind: MemberKind,
    /// The `display` the IdP sent, if any.
    pub display: Option<String>,
}

/// A member to add, as the IdP sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewMember {
    /// The member's id: a user or group of the same directory.
    pub value: String,
    /// The `display` the IdP sent, if any.
    pub display: Option<String>,
}

/// A stored group.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupRecord {
    /// Server-assigned id, immutable.
    pub id: String,
    /// The attributes.
    pub data: GroupData,
    /// Metadata.
    pub meta: Meta,
    /// `Some` only when members were asked for. Order: stable (by value).
    pub members: Option<Vec<Member>>,
}

/// A change to a group's members.
///
/// Without `replace_all`: `members := (members − remove) ∪ add`, where `add`
/// and `remove` are disjoint, adding a present member only refreshes its
/// `display`, and removing an absent one is a no-op. With `replace_all`:
/// `members := replace_all` (and `add`/`remove` are empty).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MembershipChange {
    /// Members to add; each must be a user or group of the directory, else
    /// [`StoreError::UnknownMember`] and nothing is written.
    pub add: Vec<NewMember>,
    /// Member ids to remove.
    pub remove: Vec<String>,
    /// The complete new member list.
    pub replace_all: Option<Vec<NewMember>>,
}

impl MembershipChange {
    /// Changes nothing?
    pub fn is_empty(&self) -> bool {
        self.add.is_empty() && self.remove.is_empty() && self.replace_all.is_none()
    }
}

/// One atomic change to a group.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GroupUpdate {
    /// New attributes, when they changed.
    pub data: Option<GroupData>,
    /// Membership delta.
    pub members: MembershipChange,
}

/// A sort request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SortSpec {
    /// `sortBy`.
    pub by: AttrPath,
    /// `sortOrder=descending`.
    pub descending: bool,
}

/// A listing request.
#[derive(Debug, Clone, PartialEq)]
pub struct ListQuery {
    /// The parsed filter, if any.
    pub filter: Option<ScimFilter>,
    /// 1-based index of the first result.
    pub start_index: usize,
    /// Most results to return (0: only count).
    pub count: usize,
    /// Sort, if any.
    pub sort: Option<SortSpec>,
    /// Load group members for each result (groups only).
    pub include_members: bool,
}

/// One page of results.
#[derive(Debug, Clone, PartialEq)]
pub struct Page<T> {
    /// How many resources match in total.
    pub total_results: usize,
    /// This page.
    pub items: Vec<T>,
}

/// A group a user belongs to, for the user's read-only `groups` attribute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupRef {
    /// The group's id.
    pub id: String,
    /// The group's displayName.
    pub display_name: String,
}

/// The storage behind the SCIM router. See the module documentation for the
/// contract every implementation must keep.
#[async_trait]
pub trait DirectoryStore: Send + Sync + 'static {
    /// The directory a bearer token opens, if any. Implementations look the
    /// hash up; an in-memory one compares hashes in constant time.
    async fn directory_for_token(&self, token: &TokenHash) -> Result<Option<String>, StoreError>;

    /// Creates a user with a fresh id, adding it to `join_groups` (ids of
    /// groups of the directory, else [`StoreError::UnknownMember`]) in the
    /// same transaction. [`StoreError::UserNameTaken`] when any user of the
    /// directory, active or not, has the userName case-insensitively.
    async fn create_user(
        &self,
        directory: &str,
        data: UserData,
        join_groups: &[String],
    ) -> Result<UserRecord, StoreError>;

    /// A user by id.
    async fn get_user(&self, directory: &str, id: &str) -> Result<Option<UserRecord>, StoreError>;

    /// A user by userName, case-insensitively (active or not).
    async fn find_user_by_user_name(&self, directory: &str, user_name: &str) -> Result<Option<UserRecord>, StoreError>;

    /// Replaces a user's attributes (PUT, PATCH, re-activation, and
    /// deactivation: `data.active == false` tells the owner the user is no
    /// longer assigned) and adds it to `join_groups`, in one transaction.
    /// Compare-and-set on `expected_version` when given.
    /// [`StoreError::NotFound`], [`StoreError::UserNameTaken`],
    /// [`StoreError::VersionMismatch`].
    async fn replace_user(
        &self,
        directory: &str,
        id: &str,
        expected_version: Option<&str>,
        data: UserData,
        join_groups: &[String],
    ) -> Result<UserRecord, StoreError>;

    /// Deletes a user and its memberships. [`StoreError::NotFound`],
    /// [`StoreError::VersionMismatch`].
    async fn delete_user(&self, directory: &str, id: &str, expected_version: Option<&str>) -> Result<(), StoreError>;

    /// One page of users matching the query (see the module docs).
    async fn list_users(&self, directory: &str, query: &ListQuery) -> Result<Page<UserRecord>, StoreError>;

    /// The groups each of these users is a direct member of (one query for a
    /// page of users). Users without groups may be absent from the map.
    async fn groups_of_users(
        &self,
        directory: &str,
        user_ids: &[String],
    ) -> Result<HashMap<String, Vec<GroupRef>>, StoreError>;

    /// Creates a group with its initial members, in one transaction. Returns
    /// the record with `members: Some(..)`.
    async fn create_group(
        &self,
        directory: &str,
        data: GroupData,
        members: Vec<NewMember>,
    ) -> Result<GroupRecord, StoreError>;

    /// A group by id; members are read only when `include_members`.
    async fn get_group(
        &self,
        directory: &str,
        id: &str,
        include_members: bool,
    ) -> Result<Option<GroupRecord>, StoreError>;

    /// One page of groups matching the query (see the module docs).
    async fn list_groups(&self, directory: &str, query: &ListQuery) -> Result<Page<GroupRecord>, StoreError>;

    /// Applies attribute and membership changes to a group in one
    /// transaction, costing in proportion to the change. Returns the record
    /// without members. [`StoreError::NotFound`],
    /// [`StoreError::VersionMismatch`], [`StoreError::UnknownMember`].
    async fn update_group(
        &self,
        directory: &str,
        id: &str,
        expected_version: Option<&str>,
        update: GroupUpdate,
    ) -> Result<GroupRecord, StoreError>;

    /// Deletes a group and its memberships. [`StoreError::NotFound`],
    /// [`StoreError::VersionMismatch`].
    async fn delete_group(&self, directory: &str, id: &str, expected_version: Option<&str>) -> Result<(), StoreError>;
}
