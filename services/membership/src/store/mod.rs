//! Where membership keeps its data. [`Ledger`] is what a change needs inside one
//! transaction (the rules in `ops` are written against it, never against diesel);
//! [`MembershipStore`] runs changes in transactions and answers reads.

pub mod schema;
mod sql_ledger;

pub use sql_ledger::{AuditFilter, Lookup, MemberFilter, MembershipStore, SqlLedger, now};

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::domain::member::{IdentityLink, LinkRecord, Member, User};
use crate::domain::seats::SeatLedger;
use crate::error::MembershipError;

/// One audit record to append.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// Position (set by the database).
    pub id: i64,
    /// The org.
    pub org_id: String,
    /// The person (empty for seat changes).
    pub user_id: String,
    /// The member (empty for seat changes).
    pub member_id: String,
    /// What happened.
    pub action: String,
    /// Who did it.
    pub actor: String,
    /// Why.
    pub reasons: Vec<String>,
    /// Before, as JSON (`null` when nothing was there).
    pub before_json: String,
    /// After, as JSON.
    pub after_json: String,
    /// When.
    pub at: DateTime<Utc>,
}

/// One event to publish.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EventRecord {
    /// Sequence (set by the database).
    pub sequence: i64,
    /// member.added, member.updated, member.removed, member.pending_seat, seats.changed.
    pub event_type: String,
    /// The org.
    pub org_id: String,
    /// The member (or seat usage) as JSON.
    pub payload: String,
    /// When.
    pub at: DateTime<Utc>,
}

/// An identity link to write: who it is and what it reports now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewLink {
    /// The directory ("sso" for SSO logins).
    pub directory_id: String,
    /// The person's id there.
    pub external_id: String,
    /// The person it belongs to.
    pub user_id: String,
    /// The email it reports (normalized), if any.
    pub email: Option<String>,
    /// The name it reports, if any.
    pub display_name: Option<String>,
}

/// People linked to identities, with what each identity last reported.
pub type LinkedUsers = HashMap<(String, String), (User, LinkRecord)>;

/// What a change reads and writes inside its transaction.
pub trait Ledger {
    /// Serialises changes to one org (seat counts, guardian counts) for the rest of the transaction.
    fn lock_org(&mut self, org_id: &str) -> Result<(), MembershipError>;
    /// A person by (lowercased) email.
    fn user_by_email(&mut self, email: &str) -> Result<Option<User>, MembershipError>;
    /// A person by a directory identity, with what that identity last reported.
    fn user_by_link(
        &mut self,
        directory_id: &str,
        external_id: &str,
    ) -> Result<Option<(User, LinkRecord)>, MembershipError>;
    /// People by directory identity and by (lowercased) email, for a batch.
    fn users_for(
        &mut self,
        links: &[(String, String)],
        emails: &[String],
    ) -> Result<(LinkedUsers, HashMap<String, User>), MembershipError>;
    /// The memberships in an org of these people.
    fn members_of(&mut self, org_id: &str, user_ids: &[String]) -> Result<Vec<Member>, MembershipError>;
    /// Members of an org by member id (absent ones are left out).
    fn members_by_id(&mut self, org_id: &str, ids: &[String]) -> Result<Vec<Member>, MembershipError>;
    /// Every membership of a person, in any org.
    fn memberships_of_user(&mut self, user_id: &str) -> Result<Vec<Member>, MembershipError>;
    /// Each of these people's identity links.
    fn links_of(&mut self, user_ids: &[String]) -> Result<HashMap<String, Vec<IdentityLink>>, MembershipError>;
    /// A member by id, in an org.
    fn member(&mut self, org_id: &str, member_id: &str) -> Result<Option<Member>, MembershipError>;
    /// A person's membership in an org.
    fn member_of_user(&mut self, org_id: &str, user: &User) -> Result<Option<Member>, MembershipError>;
    /// Adds people.
    fn insert_users(&mut self, users: &[User]) -> Result<(), MembershipError>;
    /// Adds identity links.
    fn insert_links(&mut self, links: &[NewLink]) -> Result<(), MembershipError>;
    /// Records what existing links report now (their user does not change).
    fn update_links(&mut self, links: &[NewLink]) -> Result<(), MembershipError>;
    /// Writes people's new email and name.
    fn update_users(&mut self, users: &[User]) -> Result<(), MembershipError>;
    /// Deletes the members `gone` (by id), then writes `rows` (new or changed members)
    /// in their place. The org lock makes a compare-and-set unnecessary here.
    fn replace_members(&mut self, gone: &[String], rows: &[Member]) -> Result<(), MembershipError>;
    /// Active members of an org holding `role`.
    fn count_active_role(&mut self, org_id: &str, role: &str) -> Result<i64, MembershipError>;
    /// The org's seats for `tiers` (highest first), with their use now.
    fn seat_ledger(&mut self, org_id: &str, tiers: &[String]) -> Result<SeatLedger, MembershipError>;
    /// Sets the seats bought of one tier (`None`: unlimited).
    fn set_seats(&mut self, org_id: &str, tier: &str, purchased: Option<i64>) -> Result<(), MembershipError>;
    /// Members waiting for a seat (pending, or active and waiting to move tier), in the
    /// order they started waiting.
    fn pending(&mut self, org_id: &str) -> Result<Vec<Member>, MembershipError>;
    /// Appends audit records.
    fn append_audit(&mut self, records: &[AuditRecord]) -> Result<(), MembershipError>;
    /// Appends events; called once, last, so the events' order is their commit order.
    fn append_events(&mut self, events: &[EventRecord]) -> Result<(), MembershipError>;
    /// The stored (request hash, answer) of an Apply key.
    fn stored_apply(&mut self, org_id: &str, key: &str) -> Result<Option<(String, String)>, MembershipError>;
    /// Stores an Apply key's request hash and answer.
    fn store_apply(&mut self, org_id: &str, key: &str, hash: &str, answer: &str) -> Result<(), MembershipError>;
}
