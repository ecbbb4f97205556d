//! Changes to members, each run inside one transaction on a [`Ledger`]: manual
//! changes, Apply batches, logins, seat changes and pending retries. Every change
//! goes through one [`Session`], which holds the org lock, the seat ledger and the
//! guardian count for the whole transaction, so no path can over-allocate seats or
//! remove the last guardian, and which writes the audit log and events last.
//!
//! A session can also be *dry* ([`Session::begin_dry`]): the same rules run on the
//! same reads, but writes stay in the session (later reads see them) and nothing
//! reaches the database. Previews use it, so a preview and the run that follows
//! compute with one piece of code.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::domain::guardian::{self, GuardedChange};
use crate::domain::member::{LinkRecord, Member, Source, Status, User, normalize_email, plausible_email};
use crate::domain::seats::{SeatChoice, SeatLedger, TierWish};
use crate::error::MembershipError;
use crate::org_catalog::OrgProduct;
use crate::store::{AuditRecord, EventRecord, Ledger, NewLink};

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

    fn link_key(&self) -> Option<(String, String)> {
        (!self.directory_id.is_empty() && !self.external_id.is_empty())
            .then(|| (self.directory_id.clone(), self.external_id.clone()))
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
    /// Nothing to do (identities are still linked and followed).
    Nothing,
}

/// One desired state of an Apply batch.
#[derive(Clone, Debug)]
pub struct Desired {
    /// Who.
    pub identity: IdentityIn,
    /// Other identities of the same person, linked to them when unlinked.
    pub also_known_as: Vec<IdentityIn>,
    /// Exactly this member of the org, when the caller knows it.
    pub member_id: Option<String>,
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
    /// For errors: what is wrong; otherwise a note (may be empty).
    pub error: String,
    /// Dry runs only: the member as they are at the end of the run (as they were, for
    /// a removal). Never stored with an idempotency key's answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub member: Option<Member>,
}

/// How a person was found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Matched {
    /// By the member id the caller gave.
    Member,
    /// By the identity's link.
    Link,
    /// By email only: good enough to add or update, never to remove.
    Email,
    /// Not found, so created.
    Created,
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

fn is_waiting(m: &Member) -> bool {
    m.status == Status::PendingSeat || m.wanted_seat_tier.is_some()
}

fn non_empty(s: &str) -> Option<String> {
    let t = s.trim();
    (!t.is_empty()).then(|| t.to_string())
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
    /// Dry: nothing is ever flushed; the buffers are the overlay later reads see.
    dry: bool,
    /// A seat was given back since waiting members were last served.
    freed: bool,
    audit: Vec<AuditRecord>,
    events: Vec<EventRecord>,
    /// Every person this session has seen, by id (current, including its own changes).
    users: HashMap<String, User>,
    /// (directory, external id) -> what the link says; `None` when known to be absent.
    links: HashMap<(String, String), Option<LinkRecord>>,
    /// Lowercased email -> person id; `None` when known to be nobody's.
    by_email: HashMap<String, Option<String>>,
    /// Person id -> their membership in this org (`None`: not a member).
    members_by_user: HashMap<String, Option<Member>>,
    /// Member id -> person id, for members named by id.
    member_users: HashMap<String, String>,
    prefetched: bool,
    new_users: Vec<User>,
    changed_users: Vec<String>,
    new_links: Vec<NewLink>,
    changed_links: Vec<NewLink>,
    new_member_ids: HashSet<String>,
    dirty: HashMap<String, Option<Member>>,
    dirty_order: Vec<String>,
}

impl<'l, L: Ledger> Session<'l, L> {
    /// Locks the org and loads its seats and guardian count.
    pub fn begin(ledger: &'l mut L, product: &'l OrgProduct, actor: String) -> Result<Self, MembershipError> {
        ledger.lock_org(&product.org_id)?;
        Self::open(ledger, product, actor, false)
    }

    /// A dry session: no lock, and nothing it does is written (see the module docs).
    pub fn begin_dry(ledger: &'l mut L, product: &'l OrgProduct, actor: String) -> Result<Self, MembershipError> {
        Self::open(ledger, product, actor, true)
    }

    fn open(ledger: &'l mut L, product: &'l OrgProduct, actor: String, dry: bool) -> Result<Self, MembershipError> {
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
            dry,
            freed: false,
            audit: Vec::new(),
            events: Vec::new(),
            users: HashMap::new(),
            links: HashMap::new(),
            by_email: HashMap::new(),
            members_by_user: HashMap::new(),
            member_users: HashMap::new(),
            prefetched: false,
            new_users: Vec::new(),
            changed_users: Vec::new(),
            new_links: Vec::new(),
            changed_links: Vec::new(),
            new_member_ids: HashSet::new(),
            dirty: HashMap::new(),
            dirty_order: Vec::new(),
        })
    }

    /// Whether this session writes nothing.
    pub fn is_dry(&self) -> bool {
        self.dry
    }

    /// The ledger, with this session's buffered writes flushed first so that what
    /// it reads is current. Not for dry sessions, whose writes are never flushed.
    pub fn ledger(&mut self) -> Result<&mut L, MembershipError> {
        if self.dry {
            return Err(MembershipError::Corrupt("a dry session cannot hand out its ledger".into()));
        }
        self.flush()?;
        Ok(self.ledger)
    }

    /// Writes buffered people, links and member changes (a dry session keeps them).
    fn flush(&mut self) -> Result<(), MembershipError> {
        if self.dry {
            return Ok(());
        }
        // Changed emails first: a new person may take an email someone else just gave up.
        if !self.changed_users.is_empty() {
            let users: Vec<User> =
                std::mem::take(&mut self.changed_users).iter().filter_map(|id| self.users.get(id).cloned()).collect();
            self.ledger.update_users(&users)?;
        }
        if !self.new_users.is_empty() {
            self.ledger.insert_users(&std::mem::take(&mut self.new_users))?;
        }
        if !self.new_links.is_empty() {
            self.ledger.insert_links(&std::mem::take(&mut self.new_links))?;
        }
        if !self.changed_links.is_empty() {
            self.ledger.update_links(&std::mem::take(&mut self.changed_links))?;
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

    /// Serves waiting members if a seat came free, then flushes every write, then the
    /// audit records and events collected, last. A dry session writes nothing.
    pub fn finish(mut self) -> Result<(), MembershipError> {
        self.settle_seats()?;
        if self.dry {
            return Ok(());
        }
        self.flush()?;
        self.ledger.append_audit(&self.audit)?;
        self.ledger.append_events(&self.events)
    }

    /// Loads the people of a batch, the members it names and their memberships in
    /// this org, in a few queries. What the session already knows (its own changes)
    /// wins over what is stored.
    pub fn prefetch(&mut self, items: &[Desired]) -> Result<(), MembershipError> {
        let identities: Vec<&IdentityIn> =
            items.iter().flat_map(|i| std::iter::once(&i.identity).chain(i.also_known_as.iter())).collect();
        let keys: Vec<(String, String)> =
            identities.iter().filter_map(|i| i.link_key()).filter(|k| !self.links.contains_key(k)).collect();
        let emails: Vec<String> = identities
            .iter()
            .map(|i| normalize_email(&i.email))
            .filter(|e| !e.is_empty() && !self.by_email.contains_key(e))
            .collect();
        let (by_link, by_email) = self.ledger.users_for(&keys, &emails)?;
        let mut user_ids: Vec<String> = Vec::new();
        for key in keys {
            match by_link.get(&key) {
                Some((user, record)) => {
                    user_ids.push(user.id.clone());
                    self.users.entry(user.id.clone()).or_insert_with(|| user.clone());
                    self.links.insert(key, Some(record.clone()));
                }
                None => {
                    self.links.insert(key, None);
                }
            }
        }
        for email in emails {
            let found = by_email.get(&email);
            if let Some(user) = found {
                user_ids.push(user.id.clone());
                self.users.entry(user.id.clone()).or_insert_with(|| user.clone());
            }
            self.by_email.insert(email, found.map(|u| u.id.clone()));
        }
        let named: Vec<String> = items
            .iter()
            .filter_map(|i| i.member_id.clone())
            .filter(|id| !self.member_users.contains_key(id) && !self.dirty.contains_key(id))
            .collect();
        if !named.is_empty() {
            for m in self.ledger.members_by_id(&self.product.org_id, &named)? {
                self.member_users.insert(m.id.clone(), m.user.id.clone());
                self.users.entry(m.user.id.clone()).or_insert_with(|| m.user.clone());
                self.members_by_user.entry(m.user.id.clone()).or_insert(Some(m));
            }
        }
        user_ids.retain(|id| !self.members_by_user.contains_key(id));
        user_ids.sort();
        user_ids.dedup();
        for m in self.ledger.members_of(&self.product.org_id, &user_ids)? {
            self.member_users.insert(m.id.clone(), m.user.id.clone());
            self.members_by_user.insert(m.user.id.clone(), Some(m));
        }
        for id in user_ids {
            self.members_by_user.entry(id).or_insert(None);
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
        if let Some(m) = &found {
            self.member_users.insert(m.id.clone(), user.id.clone());
        }
        self.members_by_user.insert(user.id.clone(), found.clone());
        Ok(found)
    }

    /// A member of this org by id, as this session sees them.
    pub fn member_by_id(&mut self, member_id: &str) -> Result<Option<Member>, MembershipError> {
        if let Some(state) = self.dirty.get(member_id) {
            return Ok(state.clone());
        }
        if let Some(user) = self.member_users.get(member_id)
            && let Some(state) = self.members_by_user.get(user)
        {
            return Ok(state.clone().filter(|m| m.id == member_id));
        }
        let found = self.ledger.member(&self.product.org_id, member_id)?;
        if let Some(m) = &found {
            self.member_users.insert(m.id.clone(), m.user.id.clone());
            self.users.entry(m.user.id.clone()).or_insert_with(|| m.user.clone());
            self.members_by_user.entry(m.user.id.clone()).or_insert_with(|| Some(m.clone()));
        }
        Ok(found)
    }

    fn write_member(&mut self, member: &Member) {
        self.member_users.insert(member.id.clone(), member.user.id.clone());
        self.members_by_user.insert(member.user.id.clone(), Some(member.clone()));
        self.dirty.insert(member.id.clone(), Some(member.clone()));
        self.dirty_order.push(member.id.clone());
    }

    fn delete_member(&mut self, member: &Member) {
        self.members_by_user.insert(member.user.id.clone(), None);
        self.dirty.insert(member.id.clone(), None);
        self.dirty_order.push(member.id.clone());
    }

    fn audit_record(
        &mut self,
        org_id: &str,
        action: &str,
        before: Option<&Member>,
        after: Option<&Member>,
        reasons: &[String],
    ) {
        if self.dry {
            return;
        }
        let who = after.or(before);
        self.audit.push(AuditRecord {
            id: 0,
            org_id: org_id.to_string(),
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
                org_id: org_id.to_string(),
                payload: json_of(who),
                at: self.at,
            });
        }
    }

    fn record(&mut self, action: &str, before: Option<&Member>, after: Option<&Member>, reasons: &[String]) {
        let org = self.product.org_id.clone();
        self.audit_record(&org, action, before, after, reasons);
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

    fn link_of(&mut self, key: &(String, String)) -> Result<Option<LinkRecord>, MembershipError> {
        if let Some(known) = self.links.get(key) {
            return Ok(known.clone());
        }
        if self.prefetched {
            return Ok(None);
        }
        let found = self.ledger.user_by_link(&key.0, &key.1)?;
        let record = found.map(|(user, record)| {
            self.users.entry(user.id.clone()).or_insert(user);
            record
        });
        self.links.insert(key.clone(), record.clone());
        Ok(record)
    }

    fn user_with_email(&mut self, email: &str) -> Result<Option<User>, MembershipError> {
        let id = match self.by_email.get(email) {
            Some(known) => known.clone(),
            None if self.prefetched => None,
            None => {
                let found = self.ledger.user_by_email(email)?;
                let id = found.as_ref().map(|u| u.id.clone());
                if let Some(u) = found {
                    self.users.entry(u.id.clone()).or_insert(u);
                }
                self.by_email.insert(email.to_string(), id.clone());
                id
            }
        };
        Ok(id.and_then(|id| self.users.get(&id).cloned()))
    }

    /// Finds a person by directory identity, then by email; creates them when
    /// `create` (an email is then required). Says how they were found. Links nothing:
    /// see [`Session::learn`].
    pub fn resolve(&mut self, id: &IdentityIn, create: bool) -> Result<Option<(User, Matched)>, MembershipError> {
        if let Some(key) = id.link_key()
            && let Some(record) = self.link_of(&key)?
            && let Some(user) = self.users.get(&record.user_id)
        {
            return Ok(Some((user.clone(), Matched::Link)));
        }
        let email = normalize_email(&id.email);
        if !email.is_empty()
            && let Some(user) = self.user_with_email(&email)?
        {
            return Ok(Some((user, Matched::Email)));
        }
        if !create {
            return Ok(None);
        }
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
            display_name: non_empty(&id.display_name).unwrap_or_else(|| email.clone()),
            links: Vec::new(),
        };
        self.new_users.push(user.clone());
        self.users.insert(user.id.clone(), user.clone());
        self.by_email.insert(email, Some(user.id.clone()));
        // Nobody else can be a member yet: no query needed later.
        self.members_by_user.insert(user.id.clone(), None);
        Ok(Some((user, Matched::Created)))
    }

    /// [`Session::resolve`] without how.
    pub fn resolve_user(&mut self, id: &IdentityIn, create: bool) -> Result<Option<User>, MembershipError> {
        Ok(self.resolve(id, create)?.map(|(u, _)| u))
    }

    /// What `identities` say of `user`: each unlinked one is linked to them; each linked
    /// to them that reports an email or name different from what it reported last
    /// changes the person (one audit entry per membership they have). An identity of
    /// another person is left alone. Returns the person as they are now, and notes.
    pub fn learn(&mut self, user: User, identities: &[&IdentityIn]) -> Result<(User, Vec<String>), MembershipError> {
        let mut user = user;
        let mut notes = Vec::new();
        for id in identities {
            let Some(key) = id.link_key() else { continue };
            let email = non_empty(&normalize_email(&id.email));
            let name = non_empty(&id.display_name);
            match self.link_of(&key)? {
                None => {
                    let record =
                        LinkRecord { user_id: user.id.clone(), email: email.clone(), display_name: name.clone() };
                    self.links.insert(key.clone(), Some(record));
                    self.new_links.push(NewLink {
                        directory_id: key.0,
                        external_id: key.1,
                        user_id: user.id.clone(),
                        email,
                        display_name: name,
                    });
                }
                Some(record) if record.user_id == user.id => {
                    // Links made before what they reported was kept report what the person had.
                    let said_email = record.email.clone().unwrap_or_else(|| user.email.clone());
                    let said_name = record.display_name.clone().unwrap_or_else(|| user.display_name.clone());
                    let email_changed = email.as_ref().is_some_and(|e| *e != said_email);
                    let name_changed = name.as_ref().is_some_and(|n| *n != said_name);
                    if !email_changed && !name_changed {
                        continue;
                    }
                    let mut after = user.clone();
                    let mut reasons = Vec::new();
                    if let Some(e) = email.as_ref().filter(|_| email_changed)
                        && *e != user.email
                    {
                        if !plausible_email(e) {
                            notes.push(format!("email not changed: `{e}` is not an email address"));
                        } else if let Some(other) = self.user_with_email(e)?.filter(|o| o.id != user.id) {
                            tracing::warn!(user = %user.id, other = %other.id, "email change refused: another person has it");
                            notes.push(format!(
                                "email not changed to {e}: another person has that email; fix it in the IdP"
                            ));
                        } else {
                            reasons.push(format!("email changed in directory {}: {} -> {e}", key.0, user.email));
                            after.email = e.clone();
                        }
                    }
                    if let Some(n) = name.as_ref().filter(|_| name_changed)
                        && *n != user.display_name
                    {
                        reasons.push(format!("name changed in directory {}: {} -> {n}", key.0, user.display_name));
                        after.display_name = n.clone();
                    }
                    let update = NewLink {
                        directory_id: key.0.clone(),
                        external_id: key.1.clone(),
                        user_id: user.id.clone(),
                        email: email.clone().or(record.email.clone()),
                        display_name: name.clone().or(record.display_name.clone()),
                    };
                    self.links.insert(
                        key,
                        Some(LinkRecord {
                            user_id: user.id.clone(),
                            email: update.email.clone(),
                            display_name: update.display_name.clone(),
                        }),
                    );
                    self.changed_links.push(update);
                    if !reasons.is_empty() {
                        self.change_user(&user, &after, &reasons)?;
                        user = after;
                    }
                }
                Some(_) => notes.push(format!("identity {}/{} belongs to another person; not linked", key.0, key.1)),
            }
        }
        Ok((user, notes))
    }

    /// Gives a person a new email or name, everywhere this session holds them, and
    /// records it on each of their memberships.
    fn change_user(&mut self, before: &User, after: &User, reasons: &[String]) -> Result<(), MembershipError> {
        if before.email != after.email {
            self.by_email.insert(before.email.clone(), None);
            self.by_email.insert(after.email.clone(), Some(after.id.clone()));
        }
        self.users.insert(after.id.clone(), after.clone());
        if !self.new_users.iter().any(|u| u.id == after.id) {
            self.changed_users.push(after.id.clone());
        } else if let Some(u) = self.new_users.iter_mut().find(|u| u.id == after.id) {
            *u = after.clone();
        }
        if let Some(Some(m)) = self.members_by_user.get_mut(&after.id) {
            m.user = after.clone();
        }
        for state in self.dirty.values_mut().flatten() {
            if state.user.id == after.id {
                state.user = after.clone();
            }
        }
        if self.dry {
            return Ok(());
        }
        // Every membership of the person shows the change in its org's log.
        let here = self.members_by_user.get(&after.id).cloned().flatten();
        let mut memberships = self.ledger.memberships_of_user(&after.id)?;
        memberships.retain(|m| m.org_id != self.product.org_id);
        memberships.extend(here);
        for m in memberships {
            let mut old = m.clone();
            old.user = before.clone();
            let mut new = m;
            new.user = after.clone();
            let org = new.org_id.clone();
            self.audit_record(&org, "member.updated", Some(&old), Some(&new), reasons);
        }
        Ok(())
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
            user: User { links: Vec::new(), ..user },
            role: role.to_string(),
            seat_tier,
            wanted_seat_tier: wanted,
            status,
            source,
            directory_id,
            waiting_since: (status == Status::PendingSeat).then_some(self.at),
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
        // A seat left behind (a move to another tier) can go to someone waiting.
        if before.status == Status::Active && before.seat_tier.is_some() && after.seat_tier != before.seat_tier {
            self.freed = true;
        }
        after.waiting_since = match (is_waiting(&before), is_waiting(&after)) {
            (_, false) => None,
            (false, true) => Some(self.at),
            (true, true) => before.waiting_since.or(Some(self.at)),
        };
        let unchanged = after.role == before.role
            && after.seat_tier == before.seat_tier
            && after.status == before.status
            && after.wanted_seat_tier == before.wanted_seat_tier;
        if unchanged {
            let outcome = if is_waiting(&after) { Outcome::PendingSeat } else { Outcome::Unchanged };
            return Ok((before, outcome));
        }
        after.version = before.version + 1;
        after.updated_at = self.at;
        self.write_member(&after);
        let guardian = self.product.guardian_role();
        let was = before.status == Status::Active && before.role == guardian;
        let is = after.status == Status::Active && after.role == guardian;
        self.guardians += i64::from(is) - i64::from(was);
        let waiting = is_waiting(&after);
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
                self.freed = true;
            }
            if member.role == self.product.guardian_role() {
                self.guardians -= 1;
            }
        }
        self.record("member.removed", Some(&member), None, reasons);
        Ok(Outcome::Applied)
    }

    /// Members waiting for a seat, in the order they started waiting, as this session
    /// sees them (stored, with its own changes laid over).
    fn waiting(&mut self) -> Result<Vec<Member>, MembershipError> {
        self.flush()?;
        let org = self.product.org_id.clone();
        let mut list: Vec<Member> =
            self.ledger.pending(&org)?.into_iter().filter(|m| !self.dirty.contains_key(&m.id)).collect();
        list.extend(self.dirty.values().flatten().filter(|m| is_waiting(m)).cloned());
        list.sort_by(|a, b| (a.waiting_since, &a.id).cmp(&(b.waiting_since, &b.id)));
        Ok(list)
    }

    /// Gives every waiting member the seat they wait for, as seats allow, in the order
    /// they started waiting. Returns (activated or moved, still waiting).
    pub fn retry_waiting(&mut self) -> Result<(i64, i64), MembershipError> {
        let reasons = vec!["a seat became free".to_string()];
        let mut done = 0;
        let mut still = 0;
        for member in self.waiting()? {
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

    /// When a seat came free in this session (a removal, a move to another tier),
    /// gives it to whoever waits longest, at once. A move can free another seat, so
    /// this repeats while people keep moving (a few rounds at most).
    pub fn settle_seats(&mut self) -> Result<i64, MembershipError> {
        let mut moved = 0;
        for _ in 0..4 {
            if !self.freed {
                break;
            }
            self.freed = false;
            let (done, _) = self.retry_waiting()?;
            moved += done;
            if done == 0 {
                break;
            }
        }
        Ok(moved)
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
    let result = |outcome, member_id: String, note: String| ItemResult {
        user_ref: user_ref.clone(),
        outcome,
        member_id,
        error: note,
        member: None,
    };
    let identities: Vec<&IdentityIn> = std::iter::once(&item.identity).chain(item.also_known_as.iter()).collect();
    let target = match &item.member_id {
        Some(id) => match s.member_by_id(id)? {
            Some(m) => Some((m.user.clone(), Matched::Member)),
            None => {
                return Ok(result(
                    Outcome::Error,
                    String::new(),
                    format!("member {id} is no longer a member of the org"),
                ));
            }
        },
        None => s.resolve(&item.identity, item.want == Want::Member)?,
    };
    match item.want {
        Want::Nothing => {
            let Some((user, _)) = target else { return Ok(result(Outcome::Unchanged, String::new(), String::new())) };
            let (user, notes) = s.learn(user, &identities)?;
            let member = s.member_of_user(&user)?;
            let mut r =
                result(Outcome::Unchanged, member.as_ref().map(|m| m.id.clone()).unwrap_or_default(), notes.join("; "));
            r.member = member.filter(|_| s.is_dry());
            Ok(r)
        }
        Want::Gone => {
            let Some((user, matched)) = target else {
                return Ok(result(Outcome::Unchanged, String::new(), String::new()));
            };
            let Some(member) = s.member_of_user(&user)? else {
                return Ok(result(Outcome::Unchanged, String::new(), String::new()));
            };
            if matched == Matched::Email {
                // Another identity with the same email is not proof this person left.
                let mut r = result(
                    Outcome::Unchanged,
                    member.id.clone(),
                    "kept: found by email only, and a removal needs the identity the member is linked by".into(),
                );
                r.member = Some(member).filter(|_| s.is_dry());
                return Ok(r);
            }
            let id = member.id.clone();
            let before = member.clone();
            let outcome = s.remove(member, &item.reasons)?;
            let mut r = result(outcome, id, String::new());
            r.member = Some(before).filter(|_| s.is_dry());
            Ok(r)
        }
        Want::Member => {
            let Some((user, _)) = target else { return Ok(result(Outcome::Error, String::new(), String::new())) };
            let (user, notes) = s.learn(user, &identities)?;
            let (m, outcome) = match s.member_of_user(&user)? {
                Some(member) => s.change(member, Some(&item.role), &item.tier, None, &item.reasons)?,
                None => s.add(user, &item.role, &item.tier, source, directory_id.map(str::to_string), &item.reasons)?,
            };
            let mut r = result(outcome, m.id.clone(), notes.join("; "));
            r.member = Some(m).filter(|_| s.is_dry());
            Ok(r)
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
    s.prefetch(items)?;
    let mut results = Vec::with_capacity(items.len());
    for item in items {
        match apply_one(s, item, Source::Directory, directory) {
            Ok(r) => results.push(r),
            Err(MembershipError::Invalid { message, .. }) => results.push(ItemResult {
                user_ref: item.identity.user_ref(),
                outcome: Outcome::Error,
                member_id: String::new(),
                error: message,
                member: None,
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

/// A dry run of Apply over `batches` (each with the directory applying it), in order,
/// on one dry session: each batch sees the earlier ones, waiting members are served
/// as seats free, and every result carries the member as they stand at the end.
pub fn preview_batches<L: Ledger>(
    s: &mut Session<'_, L>,
    batches: &[(String, Vec<Desired>)],
) -> Result<Vec<Vec<ItemResult>>, MembershipError> {
    let mut out = Vec::with_capacity(batches.len());
    for (directory, items) in batches {
        out.push(apply_batch(s, items, directory)?);
        s.settle_seats()?;
    }
    // People served later (a seat freed by a removal) show as they end up.
    for results in &mut out {
        for r in results.iter_mut() {
            if r.member_id.is_empty() {
                continue;
            }
            if let Some(now) = s.member_by_id(&r.member_id)? {
                r.member = Some(now);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
#[path = "ops_tests.rs"]
mod tests;
