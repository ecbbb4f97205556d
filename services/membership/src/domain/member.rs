//! Members and people as membership keeps them.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Whether a member holds a seat.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Holds a seat (or the product has none).
    Active,
    /// Waiting for a seat.
    PendingSeat,
}

impl Status {
    /// Stored name.
    pub fn name(self) -> &'static str {
        match self {
            Status::Active => "active",
            Status::PendingSeat => "pending_seat",
        }
    }
    /// From the stored name.
    pub fn from_name(s: &str) -> Option<Self> {
        [Status::Active, Status::PendingSeat].into_iter().find(|x| x.name() == s)
    }
}

/// What put a member there.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// An administrator.
    Manual,
    /// Their first login.
    Jit,
    /// A directory.
    Directory,
}

impl Source {
    /// Stored name.
    pub fn name(self) -> &'static str {
        match self {
            Source::Manual => "manual",
            Source::Jit => "jit",
            Source::Directory => "directory",
        }
    }
    /// From the stored name.
    pub fn from_name(s: &str) -> Option<Self> {
        [Source::Manual, Source::Jit, Source::Directory].into_iter().find(|x| x.name() == s)
    }
}

/// A person.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    /// Stable id.
    pub id: String,
    /// Lowercased email.
    pub email: String,
    /// Display name.
    pub display_name: String,
    /// The identities the person is known by. Filled by reads that show them
    /// (ListMembers, GetMember, LookupMembers); empty inside changes, which read links
    /// through the ledger instead.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub links: Vec<IdentityLink>,
}

/// One identity linked to a person: (directory or "sso", the person's id there).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct IdentityLink {
    /// The directory ("sso" for SSO logins).
    pub directory_id: String,
    /// The person's id there.
    pub external_id: String,
}

/// What an identity last reported of its person, kept on the link: a change is
/// noticed once, when the identity itself reports something new.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LinkRecord {
    /// The person the identity is linked to.
    pub user_id: String,
    /// The email it last reported (`None` for links made before this was kept).
    pub email: Option<String>,
    /// The name it last reported.
    pub display_name: Option<String>,
}

/// A member, with their person.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// Stable id.
    pub id: String,
    /// The org.
    pub org_id: String,
    /// The person.
    pub user: User,
    /// Role.
    pub role: String,
    /// Seat tier while active (none on Console).
    pub seat_tier: Option<String>,
    /// The mapped tier a pending member waits for (none: highest free).
    pub wanted_seat_tier: Option<String>,
    /// Active or pending.
    pub status: Status,
    /// Source.
    pub source: Source,
    /// For directory members: which directory.
    pub directory_id: Option<String>,
    /// Since when they wait for a seat (pending, or waiting to move tier); freed seats
    /// go to waiting members in this order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting_since: Option<DateTime<Utc>>,
    /// +1 per change.
    pub version: i64,
    /// Joined.
    pub created_at: DateTime<Utc>,
    /// Last changed.
    pub updated_at: DateTime<Utc>,
}

/// Normalizes an email for matching: trimmed and lowercased.
pub fn normalize_email(email: &str) -> String {
    email.trim().to_lowercase()
}

/// Whether an email looks like one (something@something, no spaces or control characters).
pub fn plausible_email(email: &str) -> bool {
    let e = email.trim();
    match e.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && !domain.is_empty()
                && !domain.contains('@')
                && e.len() <= 320
                && !e.chars().any(|c| c.is_whitespace() || c.is_control())
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_match_case_insensitively() {
        assert_eq!(normalize_email("  Ada@Example.COM "), "ada@example.com");
        assert!(plausible_email("a@b"));
        assert!(!plausible_email("ab"));
        assert!(!plausible_email("a b@c"));
        assert!(!plausible_email("@c"));
        assert!(!plausible_email("a@b@c"));
    }

    #[test]
    fn names_round_trip() {
        for s in [Status::Active, Status::PendingSeat] {
            assert_eq!(Status::from_name(s.name()), Some(s));
        }
        for s in [Source::Manual, Source::Jit, Source::Directory] {
            assert_eq!(Source::from_name(s.name()), Some(s));
        }
    }
}
