//! Where membership keeps its data. [`Ledger`] is what a change needs inside one
//! transaction (the rules in `ops` are written against it, never against diesel);
//! [`MembershipStore`] runs changes in transactions and answers reads.

pub mod schema;
mod sql_ledger;

pub use sql_ledger::{AuditFilter, MemberFilter, MembershipStore, SqlLedger, now};

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::domain::member::{Member, User};
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

/// What a change reads and writes inside its transaction.
pub trait Ledger {
    /// Serialises changes to one org (seat counts, guardian counts) for the rest of the transaction.
    fn lock_org(&mut self, org_id: &str) -> Result<(), MembershipError>;
    /// A person by (lowercased) email.
    fn user_by_email(&mut self, email: &str) -> Result<Option<User>, MembershipError>;
    /// A person by a directory identity.
    fn user_by_link(&mut self, directory_id: &str, external_id: &str) -> Result<Option<User>, MembershipError>;
    /// People by directory identity and by (lowercased) email, for a batch.
    #[allow(clippy::type_complexity)]
    fn users_for(
        &mut self,
        links: &[(String, String)],
        emails: &[String],
    ) -> Result<(HashMap<(String, String), User>, HashMap<String, User>), MembershipError>;
    /// The memberships in an org of these people.
    fn members_of(&mut self, org_id: &str, user_ids: &[String]) -> Result<Vec<Member>, MembershipError>;
    /// A member by id, in an org.
    fn member(&mut self, org_id: &str, member_id: &str) -> Result<Option<Member>, MembershipError>;
    /// A person's membership in an org.
    fn member_of_user(&mut self, org_id: &str, user: &User) -> Result<Option<Member>, MembershipError>;
    /// Adds people.
    fn insert_users(&mut self, users: &[User]) -> Result<(), MembershipError>;
    /// Adds identity links (directory id, external id, user id).
    fn insert_links(&mut self, links: &[(String, String, String)]) -> Result<(), MembershipError>;
    /// Deletes the members `gone` (by id), then writes `rows` (new or changed members)
    /// in their place. The org lock makes a compare-and-set unnecessary here.
    fn replace_members(&mut self, gone: &[String], rows: &[Member]) -> Result<(), MembershipError>;
    /// Active members of an org holding `role`.
    fn count_active_role(&mut self, org_id: &str, role: &str) -> Result<i64, MembershipError>;
    /// The org's seats for `tiers` (highest first), with their use now.
    fn seat_ledger(&mut self, org_id: &str, tiers: &[String]) -> Result<SeatLedger, MembershipError>;
    /// Sets the seats bought of one tier (`None`: unlimited).
    fn set_seats(&mut self, org_id: &str, tier: &str, purchased: Option<i64>) -> Result<(), MembershipError>;
    /// Members waiting for a seat (pending, or active and waiting to move tier), longest waiting first.
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
