//! Where pulled pages go: the trait directory-sync implements on its
//! database, and an in-memory implementation for tests.

use std::collections::{BTreeMap, BTreeSet};

use async_trait::async_trait;

use crate::model::{Cursor, Group, Membership, MembershipChange, Page, User};
use crate::retry::WaitNote;

/// The sink failed to store a page; the pull stops and nothing is reported complete.
#[derive(Debug, thiserror::Error)]
#[error("sink: {0}")]
pub struct SinkError(pub String);

/// Which kind of pull is starting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PullKind {
    /// A full listing: the sink starts remembering what it sees.
    Listing,
    /// A change feed: pages are upserts and explicit removals.
    Changes,
}

/// How a pull ended. Only [`run_pull`](crate::run_pull) reports this, and
/// only after every page was delivered without error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PullEnd {
    /// The full listing reached its end: whatever was not seen since
    /// `begin(Listing)` is gone. `cursor` is where the next change feed starts
    /// (none for connectors without one).
    ListingComplete { cursor: Option<Cursor> },
    /// The change feed was read to its end; resume from `cursor` next time.
    ChangesApplied { cursor: Cursor },
}

/// The consumer of a pull. Directory-sync implements it on its mirror,
/// writing each page in one transaction; every call must be idempotent.
#[async_trait]
pub trait DirectorySink: Send {
    /// A pull starts. `begin(Listing)` may follow a `begin(Changes)` in the
    /// same run when the cursor turned out to be expired.
    async fn begin(&mut self, kind: PullKind) -> Result<(), SinkError>;
    /// One page; once this returns Ok, `page.checkpoint` (if any) may be stored.
    async fn page(&mut self, page: Page) -> Result<(), SinkError>;
    /// The pull finished; never called for a failed or partial pull.
    async fn finish(&mut self, end: PullEnd) -> Result<(), SinkError>;
    /// A request of the pull starts to wait (a rate limit, a retry after an
    /// error), while the pull goes on: for progress shown to people. The
    /// default ignores it; nothing may depend on hearing it.
    async fn waiting(&mut self, note: &WaitNote) {
        let _ = note;
    }
}

/// A [`DirectorySink`] that keeps the mirror in memory, for tests and the
/// conformance kit. It applies full-listing deletions the way directory-sync
/// must: only at [`PullEnd::ListingComplete`].
#[derive(Debug, Default, Clone)]
pub struct MemorySink {
    pub users: BTreeMap<String, User>,
    pub groups: BTreeMap<String, Group>,
    pub memberships: BTreeSet<Membership>,
    /// The last cursor stored (from a checkpoint or a finish).
    pub cursor: Option<Cursor>,
    /// How many pages were received in all.
    pub pages: usize,
    /// How many full listings were reported complete.
    pub listings_completed: usize,
    /// How many change feeds were reported applied.
    pub changes_applied: usize,
    /// The waits heard of, as they started.
    pub waits: Vec<WaitNote>,
    listing: Option<Seen>,
}

#[derive(Debug, Default, Clone)]
struct Seen {
    users: BTreeSet<String>,
    groups: BTreeSet<String>,
    memberships: BTreeSet<Membership>,
}

impl MemorySink {
    pub fn new() -> Self {
        Self::default()
    }

    /// The user names of the mirror, sorted.
    pub fn user_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.users.values().map(|u| u.user_name.clone()).collect();
        names.sort();
        names
    }

    fn remove_user(&mut self, id: &str) {
        self.users.remove(id);
        self.memberships.retain(|m| m.user_id != id);
    }

    fn remove_group(&mut self, id: &str) {
        self.groups.remove(id);
        self.memberships.retain(|m| m.group_id != id);
    }
}

#[async_trait]
impl DirectorySink for MemorySink {
    async fn begin(&mut self, kind: PullKind) -> Result<(), SinkError> {
        self.listing = match kind {
            PullKind::Listing => Some(Seen::default()),
            PullKind::Changes => None,
        };
        Ok(())
    }

    async fn page(&mut self, page: Page) -> Result<(), SinkError> {
        self.pages += 1;
        for user in page.users {
            if let Some(seen) = self.listing.as_mut() {
                seen.users.insert(user.id.clone());
            }
            self.users.insert(user.id.clone(), user);
        }
        for group in page.groups {
            if let Some(seen) = self.listing.as_mut() {
                seen.groups.insert(group.id.clone());
            }
            self.groups.insert(group.id.clone(), group);
        }
        for change in page.memberships {
            match change {
                MembershipChange::Added(m) => {
                    if let Some(seen) = self.listing.as_mut() {
                        seen.memberships.insert(m.clone());
                    }
                    self.memberships.insert(m);
                }
                MembershipChange::Removed(m) => {
                    if let Some(seen) = self.listing.as_mut() {
                        seen.memberships.remove(&m);
                    }
                    self.memberships.remove(&m);
                }
            }
        }
        for removal in page.removed_users {
            if let Some(seen) = self.listing.as_mut() {
                seen.users.remove(&removal.id);
            }
            self.remove_user(&removal.id);
        }
        for removal in page.removed_groups {
            if let Some(seen) = self.listing.as_mut() {
                seen.groups.remove(&removal.id);
            }
            self.remove_group(&removal.id);
        }
        if page.checkpoint.is_some() {
            self.cursor = page.checkpoint;
        }
        Ok(())
    }

    async fn finish(&mut self, end: PullEnd) -> Result<(), SinkError> {
        match end {
            PullEnd::ListingComplete { cursor } => {
                let seen = self.listing.take().unwrap_or_default();
                let gone_users: Vec<String> =
                    self.users.keys().filter(|id| !seen.users.contains(*id)).cloned().collect();
                for id in gone_users {
                    self.remove_user(&id);
                }
                let gone_groups: Vec<String> =
                    self.groups.keys().filter(|id| !seen.groups.contains(*id)).cloned().collect();
                for id in gone_groups {
                    self.remove_group(&id);
                }
                self.memberships.retain(|m| seen.memberships.contains(m));
                self.cursor = cursor;
                self.listings_completed += 1;
            }
            PullEnd::ChangesApplied { cursor } => {
                self.cursor = Some(cursor);
                self.changes_applied += 1;
            }
        }
        Ok(())
    }

    async fn waiting(&mut self, note: &WaitNote) {
        self.waits.push(*note);
    }
}
