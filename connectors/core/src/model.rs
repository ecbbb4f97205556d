//! The normalized directory model every connector produces.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A person in the directory's scope, as the IdP describes them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct User {
    /// The IdP's immutable id (Okta `id`, Entra object id, Google `id`).
    pub id: String,
    /// The login: Okta `profile.login`, Entra `userPrincipalName`, Google `primaryEmail`.
    pub user_name: String,
    pub email: Option<String>,
    pub given_name: Option<String>,
    pub family_name: Option<String>,
    pub display_name: Option<String>,
    /// False when the IdP says the account is deactivated, suspended or archived.
    pub active: bool,
    /// How the user came into the directory's scope.
    pub assignment: Assignment,
    /// The vendor's object as received, kept for mappings and audits.
    pub raw: Value,
}

/// How a user is in scope: assigned to the app directly, through a group, or
/// because the directory's scope (whole tenant, org unit, scope group) covers them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Assignment {
    Direct,
    Group,
    Scope,
}

/// A group in the directory's scope.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Group {
    pub id: String,
    pub name: String,
    pub description: Option<String>,
    pub raw: Value,
}

/// A user being a direct member of a group.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Membership {
    pub group_id: String,
    pub user_id: String,
}

impl Membership {
    pub fn new(group_id: impl Into<String>, user_id: impl Into<String>) -> Self {
        Self { group_id: group_id.into(), user_id: user_id.into() }
    }
}

/// A membership seen (or added) and a membership removed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "op")]
pub enum MembershipChange {
    Added(Membership),
    Removed(Membership),
}

/// Something that left the directory, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Removal {
    pub id: String,
    pub reason: RemovalReason,
}

impl Removal {
    pub fn new(id: impl Into<String>, reason: RemovalReason) -> Self {
        Self { id: id.into(), reason }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RemovalReason {
    /// Deleted for good.
    Deleted,
    /// Deleted but restorable (Entra `@removed.reason = "changed"`).
    SoftDeleted,
    /// No longer assigned to the app.
    Unassigned,
    /// Left the configured scope (org unit, scope group).
    OutOfScope,
}

/// One page of a pull. In a full listing, `users`, `groups` and `Added`
/// memberships are what exists (the consumer computes what is gone once the
/// listing is reported complete); in a change feed they are upserts and the
/// removals say what left. Every page is idempotent: applying it twice
/// changes nothing the second time.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Page {
    pub users: Vec<User>,
    pub groups: Vec<Group>,
    pub memberships: Vec<MembershipChange>,
    pub removed_users: Vec<Removal>,
    pub removed_groups: Vec<Removal>,
    /// For a change feed: the cursor to resume from once this page is applied.
    /// Pages of a full listing carry none: an interrupted listing starts over.
    pub checkpoint: Option<Cursor>,
}

impl Page {
    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
            && self.groups.is_empty()
            && self.memberships.is_empty()
            && self.removed_users.is_empty()
            && self.removed_groups.is_empty()
    }
}

/// An opaque position in a connector's change feed. Only the connector that
/// produced it reads it; the consumer stores it as text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Cursor(String);

impl Cursor {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Encodes a connector's own cursor state as JSON text.
    pub fn encode<T: Serialize>(state: &T) -> Result<Self, crate::ConnectorError> {
        serde_json::to_string(state)
            .map(Self)
            .map_err(|e| crate::ConnectorError::Protocol(format!("cursor encoding: {e}")))
    }

    /// Decodes a cursor produced by [`Cursor::encode`]; a cursor that does
    /// not decode (another connector's, an older format) asks for a full listing.
    pub fn decode<T: for<'de> Deserialize<'de>>(&self) -> Result<T, crate::ConnectorError> {
        serde_json::from_str(&self.0)
            .map_err(|e| crate::ConnectorError::ResyncRequired(format!("cursor not understood: {e}")))
    }
}
