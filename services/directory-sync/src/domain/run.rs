//! Sync runs: what started them, where they are, and what they did, counted per org.

use serde::{Deserialize, Serialize};

/// What started a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trigger {
    /// A SCIM push.
    ScimPush,
    /// A pull directory's schedule.
    Interval,
    /// "Sync now".
    SyncNow,
    /// An org's settings changed.
    SettingsChange,
    /// Changes a pull directory's pull left in the queue (too many for its run, or
    /// its run failed), reconciled by the worker.
    QueuedChanges,
    /// A directory was marked authoritative (or no longer).
    AuthorityChange,
    /// A directory is being deleted: its people leave unless another directory keeps them.
    Deletion,
}

impl Trigger {
    /// Stored name.
    pub fn name(self) -> &'static str {
        match self {
            Trigger::ScimPush => "scim_push",
            Trigger::Interval => "interval",
            Trigger::SyncNow => "sync_now",
            Trigger::SettingsChange => "settings_change",
            Trigger::QueuedChanges => "queued_changes",
            Trigger::AuthorityChange => "authority_change",
            Trigger::Deletion => "directory_deletion",
        }
    }

    /// Every trigger.
    pub const ALL: [Trigger; 7] = [
        Trigger::ScimPush,
        Trigger::Interval,
        Trigger::SyncNow,
        Trigger::SettingsChange,
        Trigger::QueuedChanges,
        Trigger::AuthorityChange,
        Trigger::Deletion,
    ];

    /// From a stored name.
    pub fn from_name(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.name() == s)
    }
}

/// What a running run is doing now (shown as its progress).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Phase {
    /// Not started (or a run recorded before phases were).
    #[default]
    Starting,
    /// Waiting for another pull of the directory to end (its lease).
    WaitingForLease,
    /// Reading the IdP: `processed` counts users listed so far; the total is unknown.
    Listing,
    /// Deciding and applying: `processed` of `total` people.
    Reconciling,
    /// Applying removals that passed the brake.
    Removing,
    /// Ended.
    Done,
}

impl Phase {
    /// Stored name.
    pub fn name(self) -> &'static str {
        match self {
            Phase::Starting => "starting",
            Phase::WaitingForLease => "waiting_for_lease",
            Phase::Listing => "listing",
            Phase::Reconciling => "reconciling",
            Phase::Removing => "removing",
            Phase::Done => "done",
        }
    }

    /// From a stored name ("" and unknown: starting).
    pub fn from_name(s: &str) -> Self {
        [Phase::WaitingForLease, Phase::Listing, Phase::Reconciling, Phase::Removing, Phase::Done]
            .into_iter()
            .find(|p| p.name() == s)
            .unwrap_or(Phase::Starting)
    }
}

/// Where a run is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunState {
    /// Working, or waiting for a dependency.
    Running,
    /// Done.
    Succeeded,
    /// Done except removals held by the brake.
    Held,
    /// Ended by an error.
    Failed,
    /// Held, then rejected.
    Rejected,
}

impl RunState {
    /// Stored name.
    pub fn name(self) -> &'static str {
        match self {
            RunState::Running => "running",
            RunState::Succeeded => "succeeded",
            RunState::Held => "held",
            RunState::Failed => "failed",
            RunState::Rejected => "rejected",
        }
    }

    /// From a stored name.
    pub fn from_name(s: &str) -> Option<Self> {
        Some(match s {
            "running" => RunState::Running,
            "succeeded" => RunState::Succeeded,
            "held" => RunState::Held,
            "failed" => RunState::Failed,
            "rejected" => RunState::Rejected,
            _ => return None,
        })
    }

    /// Whether the run will change no more by itself.
    pub fn is_settled(self) -> bool {
        !matches!(self, RunState::Running)
    }
}

/// People affected, by outcome.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    /// Became active members.
    pub created: i64,
    /// Changed role or tier.
    pub updated: i64,
    /// Removed.
    pub removed: i64,
    /// Waiting for a seat.
    pub pending_seat: i64,
    /// Held (guardian guard or brake).
    pub held: i64,
    /// Failed.
    pub errors: i64,
    /// Already right.
    pub unchanged: i64,
    /// Assigned by no directory, but kept: none that knew them removed them, and no
    /// directory of the parent is authoritative for people it does not know.
    #[serde(default)]
    pub kept: i64,
}

impl Counts {
    /// Adds another tally.
    pub fn add(&mut self, o: &Counts) {
        self.created += o.created;
        self.updated += o.updated;
        self.removed += o.removed;
        self.pending_seat += o.pending_seat;
        self.held += o.held;
        self.errors += o.errors;
        self.unchanged += o.unchanged;
        self.kept += o.kept;
    }
}

/// One org's part of a run.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrgResult {
    /// The org.
    pub org_id: String,
    /// Its counts.
    pub counts: Counts,
    /// Removals held by the brake.
    pub brake_held: bool,
    /// Removals decided (applied or held).
    pub removals_decided: i64,
    /// Members at the brake check.
    pub members_at_check: i64,
    /// Removals made from the org within the brake's window before this run's.
    #[serde(default)]
    pub removed_in_window: i64,
    /// Another run already held the org's removals: this run's joined it.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub held_in_run: String,
}

/// Why a person is listed on a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ItemKind {
    /// Held by the brake.
    WouldRemove,
    /// Held by the guardian guard.
    HeldGuardian,
    /// Failed.
    Error,
    /// A mirror user a held full listing would sweep.
    WouldSweep,
}

impl ItemKind {
    /// Stored name.
    pub fn name(self) -> &'static str {
        match self {
            ItemKind::WouldRemove => "would_remove",
            ItemKind::HeldGuardian => "held_guardian",
            ItemKind::Error => "error",
            ItemKind::WouldSweep => "would_sweep",
        }
    }

    /// From a stored name.
    pub fn from_name(s: &str) -> Option<Self> {
        Some(match s {
            "would_remove" => ItemKind::WouldRemove,
            "held_guardian" => ItemKind::HeldGuardian,
            "error" => ItemKind::Error,
            "would_sweep" => ItemKind::WouldSweep,
            _ => return None,
        })
    }
}

/// A person a run could not simply apply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunItem {
    /// The org.
    pub org_id: String,
    /// Mirror user id or `member:<id>`.
    pub user_ref: String,
    /// Email.
    pub email: String,
    /// Display name.
    pub display_name: String,
    /// Why listed.
    pub kind: ItemKind,
    /// Reasons or error.
    pub detail: String,
    /// The member concerned (empty for mirror users of a held listing).
    pub member_id: String,
}

/// A run as stored.
#[derive(Clone, Debug, PartialEq)]
pub struct SyncRun {
    /// Id.
    pub id: String,
    /// Directory.
    pub directory_id: String,
    /// What started it.
    pub trigger: Trigger,
    /// Where it is.
    pub state: RunState,
    /// Per org.
    pub orgs: Vec<OrgResult>,
    /// How it ended.
    pub outcome: String,
    /// Last error.
    pub error: String,
    /// Handled so far.
    pub processed: i64,
    /// To handle.
    pub total: i64,
    /// Who started it.
    pub actor: String,
    /// Who approved or rejected it.
    pub decided_by: String,
    /// What it is doing now.
    pub phase: Phase,
    /// Held because its full listing looked wrong: that listing's generation (its
    /// sweep waits for approval).
    pub held_listing: Option<i64>,
    /// The replica running it (`name#boot`); empty before any replica took it.
    pub owner: String,
    /// Started.
    pub started_at: chrono::DateTime<chrono::Utc>,
    /// Ended.
    pub ended_at: Option<chrono::DateTime<chrono::Utc>>,
}

impl SyncRun {
    /// A new run of `directory`, running, started now.
    pub fn new(id: String, directory: &str, trigger: Trigger, actor: &str) -> Self {
        SyncRun {
            id,
            directory_id: directory.to_string(),
            trigger,
            state: RunState::Running,
            orgs: Vec::new(),
            outcome: "running".into(),
            error: String::new(),
            processed: 0,
            total: 0,
            actor: actor.to_string(),
            decided_by: String::new(),
            phase: Phase::Starting,
            held_listing: None,
            owner: String::new(),
            started_at: chrono::Utc::now(),
            ended_at: None,
        }
    }

    /// Totals over every org.
    pub fn totals(&self) -> Counts {
        let mut c = Counts::default();
        for o in &self.orgs {
            c.add(&o.counts);
        }
        c
    }

    /// The org's result, created if absent.
    pub fn org_mut(&mut self, org_id: &str) -> &mut OrgResult {
        let i = match self.orgs.iter().position(|o| o.org_id == org_id) {
            Some(i) => i,
            None => {
                self.orgs.push(OrgResult { org_id: org_id.to_string(), ..Default::default() });
                self.orgs.len() - 1
            }
        };
        &mut self.orgs[i]
    }

    /// A sentence summing the run up.
    pub fn summary(&self) -> String {
        let c = self.totals();
        let held_orgs = self.orgs.iter().filter(|o| o.brake_held).count();
        let mut s = format!(
            "{} created, {} updated, {} removed, {} pending seat, {} held, {} errors, {} unchanged",
            c.created, c.updated, c.removed, c.pending_seat, c.held, c.errors, c.unchanged
        );
        if c.kept > 0 {
            s.push_str(&format!(", {} kept (assigned by no directory, but no directory may remove them)", c.kept));
        }
        if held_orgs > 0 {
            s.push_str(&format!(
                "; removals in {held_orgs} org(s) held by the mass-removal brake until an administrator approves or rejects the run"
            ));
        }
        let mut joined: Vec<&str> =
            self.orgs.iter().filter(|o| !o.held_in_run.is_empty()).map(|o| o.held_in_run.as_str()).collect();
        joined.dedup();
        for run in joined {
            s.push_str(&format!("; removals added to run {run}, held by the mass-removal brake"));
        }
        if self.held_listing.is_some() {
            s.push_str(
                "; the full listing looked wrong, so nothing it left out was removed: approve the run to apply it",
            );
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for t in Trigger::ALL {
            assert_eq!(Trigger::from_name(t.name()), Some(t));
        }
        for p in [Phase::WaitingForLease, Phase::Listing, Phase::Reconciling, Phase::Removing, Phase::Done] {
            assert_eq!(Phase::from_name(p.name()), p);
        }
        assert_eq!(Phase::from_name(""), Phase::Starting);
        for s in [RunState::Running, RunState::Succeeded, RunState::Held, RunState::Failed, RunState::Rejected] {
            assert_eq!(RunState::from_name(s.name()), Some(s));
        }
        for k in [ItemKind::WouldRemove, ItemKind::HeldGuardian, ItemKind::Error, ItemKind::WouldSweep] {
            assert_eq!(ItemKind::from_name(k.name()), Some(k));
        }
    }

    #[test]
    fn totals_add_up_over_orgs() {
        let mut run = SyncRun::new("r".into(), "d", Trigger::SyncNow, "");
        run.org_mut("a").counts.created = 2;
        run.org_mut("b").counts.created = 3;
        run.org_mut("a").counts.removed = 1;
        assert_eq!(run.orgs.len(), 2);
        assert_eq!(run.totals().created, 5);
        assert!(run.summary().starts_with("5 created, 0 updated, 1 removed"));
        run.org_mut("b").brake_held = true;
        assert!(run.summary().contains("held by the mass-removal brake"));
    }
}
