//! Changes to members, each run inside one transaction on a [`Ledger`]: manual
//! changes, Apply batches, logins, seat changes and pending retries. Every change
//! goes through one [`Session`], which holds the org lock, the seat ledger and the
//! guardian count for the whole transaction, so no path can over-allocate seats or
//! remove the last guardian, and which writes the audit log and events last.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::domain::guardian::{self, GuardedChange};
use crate::domain::member::{Member, Source, Status, User, normalize_email, plausible_email};
use crate::domain::seats::{SeatChoice, SeatLedger, TierWish};
use crate::error::MembershipError;
use crate::org_catalog::OrgProduct;
use crate::store::{AuditRecord, EventRecord, Ledger};

/// How a directory or login knows a person.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IdentityIn {
    /// The directory (or "sso" for logins).
    pub directory_id: String,
    /// The person's id there.
    pub external_id: String,
    /// Their email.
    pub email: String,
    /// Their name.
    pub display_name: String,
}

impl IdentityIn {
    /// How results refer to the person.
    pub fn user_ref(&self) -> String {
        if self.external_id.is_empty() { self.email.clone() } else { self.external_id.clone() }
    }
}

/// Which seat tier a desired state asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TierPref {
    /// Exactly this tier.
    Mapped(String),
    /// The highest tier with a free seat.
    HighestFree,
    /// Whatever they hold.
    Keep,
}

/// What a desired state asks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Want {
    /// Be a member with this role and tier.
    Member,
    /// Not be a member.
    Gone,
    /// Nothing to do.
    Nothing,
}

/// One desired state of an Apply batch.
#[derive(Clone, Debug)]
pub struct Desired {
    /// Who.
    pub identity: IdentityIn,
    /// What.
    pub want: Want,
    /// Role (for `Member`).
    pub role: String,
    /// Tier (for `Member`).
    pub tier: TierPref,
    /// Policy's reasons.
    pub reasons: Vec<String>,
}

/// What happened to one desired state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Changed.
    Applied,
    /// Already so.
    Unchanged,
    /// A member, waiting for a seat.
    PendingSeat,
    /// Not applied: the org would lose its last guardian.
    HeldGuardian,
    /// Invalid item.
    Error,
}

/// The result of one desired state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ItemResult {
    /// The person's reference.
    pub user_ref: String,
    /// What happened.
    pub outcome: Outcome,
    /// Their member id, if they are one.
    pub member_id: String,
    /// For errors.
    pub error: String,
}

fn wish_of(pref: &TierPref) -> TierWish {
    match pref {
        TierPref::Mapped(t) => TierWish::Mapped(t.clone()),
        _ => TierWish::HighestFree,
    }
}

fn json_of(member: Option<&Member>) -> String {
    member.and_then(|m| serde_json::to_string(m).ok()).unwrap_or_else(|| "null".into())
}

/// One transaction's view of an org. Reads of a batch's people are fetched at once
/// ([`Session::prefetch`]) and writes are buffered and flushed in multi-row
/// statements, so a 10,000-item batch costs tens of round trips, not tens of
/// thousands. Safe because the org lock taken in [`Session::begin`] keeps every
/// other writer of this org out until commit.
pub struct Session<'l, L: Ledger> {
    ledger: &'l mut L,
    product: &'l OrgProduct,
    actor: String,
    at: DateTime<Utc>,
    seats: SeatLedger,
    guardians: i64,
    audit: Vec<AuditRecord>,
    events: Vec<EventRecord>,
    users_by_link: HashMap<(String, String), User>,
    users_by_email: HashMap<String, User>,
    members_by_user: HashMap<String, Option<Member>>,
    prefetched: bool,
    new_users: Vec<User>,
    new_links: Vec<(String, String, String)>,
    new_member_ids: HashSet<String>,
    dirty: HashMap<String, Option<Member>>,
    dirty_order: Vec<String>,
}

impl<'l, L: Ledger> Session<'l, L> {
    /// Locks the org and loads its seats and guardian count.
    pub fn begin(ledger: &'l mut L, product: &'l OrgProduct, actor: String) -> Result<Self, MembershipError> {
        ledger.lock_org(&product.org_id)?;
        let seats = ledger.seat_ledger(&product.org_id, &product.seat_tiers)?;
        let guardians = ledger.count_active_role(&product.org_id, product.guardian_role())?;
        let at = crate::store::now();
        Ok(Self {
            ledger,
            product,
            actor,
            at,
            seats,
            guardians,
            audit: Vec::new(),
            events: Vec::new(),
            users_by_link: HashMap::new(),
            users_by_email: HashMap::new(),
            members_by_user: HashMap::new(),
            prefetched: false,
            new_users: Vec::new(),
            new_links: Vec::new(),
            new_member_ids: HashSet::new(),
            dirty: HashMap::new(),
            dirty_order: Vec::new(),
        })
    }

    /// The ledger, with this session's buffered writes flushed first so that what
    /// it reads is current.
    pub fn ledger(&mut self) -> Result<&mut L, MembershipError> {
        self.flush()?;
        Ok(self.ledger)
    }

    /// Writes buffered people, links and member changes.
    fn flush(&mut self) -> Result<(), MembershipError> {
        if !self.new_users.is_empty() {
            self.ledger.insert_users(&std::mem::take(&mut self.new_users))?;
        }
        if !self.new_links.is_empty() {
            self.ledger.insert_links(&std::mem::take(&mut self.new_links))?;
        }
        if !self.dirty_order.is_empty() {
            let mut gone = Vec::new();
            let mut rows = Vec::new();
            for id in std::mem::take(&mut self.dirty_order) {
                let Some(after) = self.dirty.remove(&id) else { continue };
                if !self.new_member_ids.contains(&id) {
                    gone.push(id);
                }
                rows.extend(after);
            }
            self.new_member_ids.clear();
            self.ledger.replace_members(&gone, &rows)?;
        }
        Ok(())
    }

    /// Flushes every write, then the audit records and events collected, last.
    pub fn finish(mut self) -> Result<(), MembershipError> {
        self.flush()?;
        self.ledger.append_audit(&self.audit)?;
        self.ledger.append_events(&self.events)
    }

    /// Loads the people of a batch, and their memberships in this org, in a few queries.
    pub fn prefetch(&mut self, identities: &[IdentityIn]) -> Result<(), MembershipError> {
        let links: Vec<(String, String)> = identities
            .iter()
            .filter(|i| !i.directory_id.is_empty() && !i.external_id.is_empty())
            .map(|i| (i.directory_id.clone(), i.external_id.clone()))
            .collect();
        let emails: Vec<String> =
            identities.iter().map(|i| normalize_email(&i.email)).filter(|e| !e.is_empty()).collect();
        let (by_link, by_email) = self.ledger.users_for(&links, &emails)?;
        let mut user_ids: Vec<String> = by_link.values().chain(by_email.values()).map(|u| u.id.clone()).collect();
        user_ids.sort();
        user_ids.dedup();
        self.users_by_link.extend(by_link);
        self.users_by_email.extend(by_email);
        for id in &user_ids {
            self.members_by_user.insert(id.clone(), None);
        }
        for m in self.ledger.members_of(&self.product.org_id, &user_ids)? {
            self.members_by_user.insert(m.user.id.clone(), Some(m));
        }
        self.prefetched = true;
        Ok(())
    }

    /// A person's membership in this org.
    pub fn member_of_user(&mut self, user: &User) -> Result<Option<Member>, MembershipError> {
        if let Some(known) = self.members_by_user.get(&user.id) {
            return Ok(known.clone());
        }
        // Anything this session changed for the person is cached, so the stored row is current.
        let found = self.ledger.member_of_user(&self.product.org_id, user)?;
        self.members_by_user.insert(user.id.clone(), found.clone());
        Ok(found)
    }

    fn write_member(&mut self, member: &Member) {
        self.members_by_user.insert(member.user.id.clone(), Some(member.clone()));
        self.dirty.insert(member.id.clone(), Some(member.clone()));
        self.dirty_order.push(member.id.clone());
    }

    fn delete_member(&mut self, member: &Member) {
        self.members_by_user.insert(member.user.id.clone(), None);
        self.dirty.insert(member.id.clone(), None);
        self.dirty_order.push(member.id.clone());
    }

    fn record(&mut self, action: &str, before: Option<&Member>, after: Option<&Member>, reasons: &[String]) {
        let who = after.or(before);
        self.audit.push(AuditRecord {
            id: 0,
            org_id: self.product.org_id.clone(),
            user_id: who.map(|m| m.user.id.clone()).unwrap_or_default(),
            member_id: who.map(|m| m.id.clone()).unwrap_or_default(),
            action: action.to_string(),
            actor: self.actor.clone(),
            reasons: reasons.to_vec(),
            before_json: json_of(before),
            after_json: json_of(after),
            at: self.at,
        });
        if action != "member.held_guardian" {
            self.events.push(EventRecord {
                sequence: 0,
                event_type: action.to_string(),
                org_id: self.product.org_id.clone(),
                payload: json_of(who),
                at: self.at,
            });
        }
    }

    /// Records a seats change (audit and event) with the usage as JSON.
    pub fn record_seats(&mut self, usage_json: String, reasons: Vec<String>) {
        self.audit.push(AuditRecord {
            id: 0,
            org_id: self.product.org_id.clone(),
            user_id: String::new(),
            member_id: String::new(),
            action: "seats.changed".into(),
            actor: self.actor.clone(),
            reasons,
            before_json: "null".into(),
            after_json: usage_json.clone(),
            at: self.at,
        });
        self.events.push(EventRecord {
            sequence: 0,
            event_type: "seats.changed".into(),
            org_id: self.product.org_id.clone(),
            payload: usage_json,
            at: self.at,
        });
    }

    /// Finds a person by directory identity, then by email; creates them when
    /// `create` (an email is then required). Links the identity when found by email.
    pub fn resolve_user(&mut self, id: &IdentityIn, create: bool) -> Result<Option<User>, MembershipError> {
        let link = (!id.directory_id.is_empty() && !id.external_id.is_empty())
            .then(|| (id.directory_id.clone(), id.external_id.clone()));
        if let Some(key) = &link {
            if let Some(user) = self.users_by_link.get(key) {
                return Ok(Some(user.clone()));
            }
            if !self.prefetched
                && let Some(user) = self.ledger.user_by_link(&key.0, &key.1)?
            {
                self.users_by_link.insert(key.clone(), user.clone());
                return Ok(Some(user));
            }
        }
        let email = normalize_email(&id.email);
        let found = if email.is_empty() {
            None
        } else if let Some(user) = self.users_by_email.get(&email) {
            Some(user.clone())
        } else if self.prefetched {
            None
        } else {
            self.ledger.user_by_email(&email)?
        };
        let user = match found {
            Some(user) => user,
            None if !create => return Ok(None),
            None => {
                if !plausible_email(&email) {
                    return Err(MembershipError::invalid(
                        "email_required",
                        "email",
                        format!("`{}` is not an email address; a new person needs one", id.email),
                    ));
                }
                let user = User {
                    id: uuid::Uuid::now_v7().to_string(),
                    email: email.clone(),
                    display_name: if id.display_name.trim().is_empty() {
                        email
                    } else {
                        id.display_name.trim().to_string()
                    },
                };
                self.new_users.push(user.clone());
                // Nobody else can be a member yet: no query needed later.
                self.members_by_user.insert(user.id.clone(), None);
                user
            }
        };
        self.users_by_email.insert(user.email.clone(), user.clone());
        if let Some(key) = link {
            // Looked up above and not found: the link is new.
            self.new_links.push((key.0.clone(), key.1.clone(), user.id.clone()));
            self.users_by_link.insert(key, user.clone());
        }
        Ok(Some(user))
    }

    fn check_member_state(&self, role: &str, pref: &TierPref) -> Result<(), MembershipError> {
        self.product.check_role(role, "role")?;
        if let TierPref::Mapped(t) = pref
            && !self.product.seat_tiers.is_empty()
        {
            self.product.check_tier(t, "seat_tier")?;
        }
        Ok(())
    }

    /// Adds `user` as a member with `role`, taking a seat as `pref` says (or pending).
    pub fn add(
        &mut self,
        user: User,
        role: &str,
        pref: &TierPref,
        source: Source,
        directory_id: Option<String>,
        reasons: &[String],
    ) -> Result<(Member, Outcome), MembershipError> {
        self.check_member_state(role, pref)?;
        let (status, seat_tier, wanted) = match self
            .seats
            .take(&wish_of(pref))
            .map_err(|e| MembershipError::invalid("unknown_seat_tier", "seat_tier", e.to_string()))?
        {
            SeatChoice::NoTiers => (Status::Active, None, None),
            SeatChoice::Seat(t) => (Status::Active, Some(t), None),
            SeatChoice::Pending(w) => (Status::PendingSeat, None, w),
        };
        let member = Member {
            id: uuid::Uuid::now_v7().to_string(),
            org_id: self.product.org_id.clone(),
            user,
            role: role.to_string(),
            seat_tier,
            wanted_seat_tier: wanted,
            status,
            source,
            directory_id,
            version: 1,
            created_at: self.at,
            updated_at: self.at,
        };
        self.new_member_ids.insert(member.id.clone());
        self.write_member(&member);
        if status == Status::Active && member.role == self.product.guardian_role() {
            self.guardians += 1;
        }
        let (action, outcome) = match status {
            Status::Active => ("member.added", Outcome::Applied),
            Status::PendingSeat => ("member.pending_seat", Outcome::PendingSeat),
        };
        self.record(action, None, Some(&member), reasons);
        Ok((member, outcome))
    }

    fn guard(&self, member: &Member, change: GuardedChange<'_>) -> bool {
        guardian::allows(
            self.product.guardian_role(),
            &member.role,
            member.status == Status::Active,
            self.guardians,
            change,
        )
    }

    /// Changes a member's role and/or tier. Refuses (returns `HeldGuardian`) a
    /// demotion of the last guardian. A move to a tier with no free seat keeps the
    /// member's seat and records the tier they wait for.
    pub fn change(
        &mut self,
        before: Member,
        role: Option<&str>,
        pref: &TierPref,
        expected_version: Option<i64>,
        reasons: &[String],
    ) -> Result<(Member, Outcome), MembershipError> {
        if let Some(v) = expected_version
            && v != before.version
        {
            return Err(MembershipError::VersionConflict { expected: v });
        }
        let new_role = role.unwrap_or(&before.role).to_string();
        self.check_member_state(&new_role, pref)?;
        if !self.guard(&before, GuardedChange::Role(&new_role)) {
            self.record("member.held_guardian", Some(&before), Some(&before), reasons);
            return Ok((before, Outcome::HeldGuardian));
        }
        let mut after = before.clone();
        after.role = new_role;
        if !self.product.seat_tiers.is_empty() {
            match (before.status, pref) {
                (Status::Active, TierPref::Mapped(t)) if before.seat_tier.as_deref() != Some(t.as_str()) => {
                    if let Some(old) = &before.seat_tier {
                        self.seats.release(old);
                    }
                    match self
                        .seats
                        .take(&TierWish::Mapped(t.clone()))
                        .map_err(|e| MembershipError::invalid("unknown_seat_tier", "seat_tier", e.to_string()))?
                    {
                        SeatChoice::Seat(tier) => {
                            after.seat_tier = Some(tier);
                            after.wanted_seat_tier = None;
                        }
                        _ => {
                            // Give the old seat back to them: nobody loses access for a full tier.
                            if let Some(old) = &before.seat_tier {
                                let _ = self.seats.take(&TierWish::Mapped(old.clone()));
                            }
                            after.wanted_seat_tier = Some(t.clone());
                        }
                    }
                }
                (Status::Active, TierPref::Mapped(_)) => after.wanted_seat_tier = None,
                (Status::PendingSeat, TierPref::Mapped(t)) => after.wanted_seat_tier = Some(t.clone()),
                (Status::PendingSeat, TierPref::HighestFree) => after.wanted_seat_tier = None,
                _ => {}
            }
            if after.status == Status::PendingSeat
                && let Ok(SeatChoice::Seat(tier)) = self.seats.take(&wish_of(&match &after.wanted_seat_tier {
                    Some(t) => TierPref::Mapped(t.clone()),
                    None => TierPref::HighestFree,
                }))
            {
                after.status = Status::Active;
                after.seat_tier = Some(tier);
                after.wanted_seat_tier = None;
            }
        }
        let unchanged = after.role == before.role
            && after.seat_tier == before.seat_tier
            && after.status == before.status
            && after.wanted_seat_tier == before.wanted_seat_tier;
        if unchanged {
            let outcome = if after.wanted_seat_tier.is_some() || after.status == Status::PendingSeat {
                Outcome::PendingSeat
            } else {
                Outcome::Unchanged
            };
            return Ok((before, outcome));
        }
        after.version = before.version + 1;
        after.updated_at = self.at;
        self.write_member(&after);
        let guardian = self.product.guardian_role();
        let was = before.status == Status::Active && before.role == guardian;
        let is = after.status == Status::Active && after.role == guardian;
        self.guardians += i64::from(is) - i64::from(was);
        let waiting = after.status == Status::PendingSeat || after.wanted_seat_tier.is_some();
        let action = if waiting && before.wanted_seat_tier != after.wanted_seat_tier {
            "member.pending_seat"
        } else {
            "member.updated"
        };
        self.record(action, Some(&before), Some(&after), reasons);
        let outcome = if waiting { Outcome::PendingSeat } else { Outcome::Applied };
        Ok((after, outcome))
    }

    /// Removes a member, unless they are the last guardian (then `HeldGuardian`).
    pub fn remove(&mut self, member: Member, reasons: &[String]) -> Result<Outcome, MembershipError> {
        if !self.guard(&member, GuardedChange::Remove) {
            self.record("member.held_guardian", Some(&member), Some(&member), reasons);
            return Ok(Outcome::HeldGuardian);
        }
        self.delete_member(&member);
        if member.status == Status::Active {
            if let Some(t) = &member.seat_tier {
                self.seats.release(t);
            }
            if member.role == self.product.guardian_role() {
                self.guardians -= 1;
            }
        }
        self.record("member.removed", Some(&member), None, reasons);
        Ok(Outcome::Applied)
    }

    /// Gives every waiting member the seat they wait for, as seats allow, longest
    /// waiting first. Returns (activated or moved, still waiting).
    pub fn retry_waiting(&mut self) -> Result<(i64, i64), MembershipError> {
        let reasons = vec!["a seat became free".to_string()];
        let mut done = 0;
        let mut still = 0;
        let org = self.product.org_id.clone();
        for member in self.ledger()?.pending(&org)? {
            let pref = match &member.wanted_seat_tier {
                Some(t) => TierPref::Mapped(t.clone()),
                None => TierPref::HighestFree,
            };
            let (_, outcome) = self.change(member, None, &pref, None, &reasons)?;
            match outcome {
                Outcome::Applied => done += 1,
                _ => still += 1,
            }
        }
        Ok((done, still))
    }

    /// Replaces the seat ledger (after seats were bought or given up in this transaction).
    pub fn replace_seats(&mut self, seats: SeatLedger) {
        self.seats = seats;
    }

    /// The seat ledger as it stands.
    pub fn seats(&self) -> &SeatLedger {
        &self.seats
    }
}

/// Applies one desired state.
pub fn apply_one<L: Ledger>(
    s: &mut Session<'_, L>,
    item: &Desired,
    source: Source,
    directory_id: Option<&str>,
) -> Result<ItemResult, MembershipError> {
    let user_ref = item.identity.user_ref();
    let result = |outcome, member_id: String| ItemResult {
        user_ref: user_ref.clone(),
        outcome,
        member_id,
        error: String::new(),
    };
    match item.want {
        Want::Nothing => Ok(result(Outcome::Unchanged, String::new())),
        Want::Gone => {
            let Some(user) = s.resolve_user(&item.identity, false)? else {
                return Ok(result(Outcome::Unchanged, String::new()));
            };
            match s.member_of_user(&user)? {
                None => Ok(result(Outcome::Unchanged, String::new())),
                Some(member) => {
                    let id = member.id.clone();
                    let outcome = s.remove(member, &item.reasons)?;
                    Ok(result(outcome, if outcome == Outcome::HeldGuardian { id } else { String::new() }))
                }
            }
        }
        Want::Member => {
            let Some(user) = s.resolve_user(&item.identity, true)? else {
                return Ok(result(Outcome::Error, String::new()));
            };
            match s.member_of_user(&user)? {
                Some(member) => {
                    let (m, outcome) = s.change(member, Some(&item.role), &item.tier, None, &item.reasons)?;
                    Ok(result(outcome, m.id))
                }
                None => {
                    let (m, outcome) =
                        s.add(user, &item.role, &item.tier, source, directory_id.map(str::to_string), &item.reasons)?;
                    Ok(result(outcome, m.id))
                }
            }
        }
    }
}

/// Applies a batch; an invalid item is answered `Error` and the rest still apply.
pub fn apply_batch<L: Ledger>(
    s: &mut Session<'_, L>,
    items: &[Desired],
    directory_id: &str,
) -> Result<Vec<ItemResult>, MembershipError> {
    let directory = (!directory_id.is_empty()).then_some(directory_id);
    let identities: Vec<IdentityIn> = items.iter().map(|i| i.identity.clone()).collect();
    s.prefetch(&identities)?;
    let mut results = Vec::with_capacity(items.len());
    for item in items {
        match apply_one(s, item, Source::Directory, directory) {
            Ok(r) => results.push(r),
            Err(MembershipError::Invalid { message, .. }) => results.push(ItemResult {
                user_ref: item.identity.user_ref(),
                outcome: Outcome::Error,
                member_id: String::new(),
                error: message,
            }),
            Err(other) => return Err(other),
        }
    }
    Ok(results)
}

/// Applies a batch once per idempotency key: a key seen before answers with its
/// stored results (`true`: replayed) and changes nothing; a key reused for a
/// different batch (another `request_hash`) is refused.
pub fn apply_once<L: Ledger>(
    s: &mut Session<'_, L>,
    org_id: &str,
    key: &str,
    request_hash: &str,
    items: &[Desired],
    directory_id: &str,
) -> Result<(Vec<ItemResult>, bool), MembershipError> {
    if let Some((hash, answer)) = s.ledger()?.stored_apply(org_id, key)? {
        if hash != request_hash {
            return Err(MembershipError::Refused {
                rule: "idempotency_key_reused",
                message: format!("idempotency key `{key}` was used for a different batch"),
            });
        }
        let results: Vec<ItemResult> =
            serde_json::from_str(&answer).map_err(|e| MembershipError::Corrupt(e.to_string()))?;
        return Ok((results, true));
    }
    let results = apply_batch(s, items, directory_id)?;
    let answer = serde_json::to_string(&results).map_err(|e| MembershipError::Corrupt(e.to_string()))?;
    s.ledger()?.store_apply(org_id, key, request_hash, &answer)?;
    Ok((results, false))
}

#[cfg(test)]
#[path = "ops_tests.rs"]
mod tests;
