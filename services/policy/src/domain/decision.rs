//! The decision engine (SPEC §4): from what the IdP says of a person, and what their
//! membership is now, decide what it should become and say why. Pure: the same
//! engine decides previews, directory syncs and logins.

use std::collections::HashMap;

use super::catalog::Product;
use super::settings::{GroupRef, Mode, SettingsData};

/// What set a decision in motion.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trigger {
    /// A directory reported a change.
    DirectorySync,
    /// A person signed in.
    Login,
    /// "Sync now".
    SyncNow,
}

impl Trigger {
    fn is_login(self) -> bool {
        self == Trigger::Login
    }
}

/// What put a member in the org.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// An administrator.
    Manual,
    /// Their first login.
    Jit,
    /// A directory.
    Directory,
}

/// A membership as it is now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Current {
    /// Role.
    pub role: String,
    /// Seat tier (none on Console or while pending).
    pub seat_tier: Option<String>,
    /// Source.
    pub source: Source,
}

/// One person to decide for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Subject {
    /// Caller's reference.
    pub user_ref: String,
    /// Assigned to the IdP application.
    pub assigned: bool,
    /// Their IdP groups.
    pub groups: Vec<GroupRef>,
    /// Their membership now.
    pub current: Option<Current>,
}

/// What should happen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Nothing.
    None,
    /// Add as a member (at login: and let in).
    Provision,
    /// Change role and/or tier (at login: and let in).
    Update,
    /// Remove (at login: and deny).
    Remove,
    /// Login: let in, nothing changes.
    AllowLogin,
    /// Login: refuse; not a member.
    DenyLogin,
}

/// Which seat tier to give.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TierChoice {
    /// Exactly this tier, or wait for a seat in it.
    Mapped(String),
    /// The highest tier with a free seat.
    HighestFree,
    /// Keep the tier they hold.
    Keep,
}

/// The decision for one person.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    /// The subject's reference.
    pub user_ref: String,
    /// What to do.
    pub action: Action,
    /// The role they should hold (empty when they should hold none).
    pub role: String,
    /// The tier to give; `None` on Console and when no membership results.
    pub seat_tier: Option<TierChoice>,
    /// Why, most important first.
    pub reasons: Vec<String>,
    /// Login only: whether they may sign in.
    pub login_allowed: bool,
}

#[derive(Clone, Copy)]
enum Target {
    Role(usize),
    Tier(usize),
}

/// Decides memberships for one org's product and settings.
pub struct DecisionEngine<'a> {
    product: &'a Product,
    settings: &'a SettingsData,
    by_id: HashMap<&'a str, Vec<(Target, &'a GroupRef)>>,
    by_name: HashMap<String, Vec<(Target, &'a GroupRef)>>,
}

/// What the mappings say of one subject.
struct Mapped {
    role: Option<(usize, Vec<String>)>,
    tier: Option<(usize, Vec<String>)>,
}

impl<'a> DecisionEngine<'a> {
    /// An engine for `settings` on `product`. Builds an index of the mapped groups once,
    /// so a batch of 10,000 subjects costs in proportion to their groups.
    pub fn new(product: &'a Product, settings: &'a SettingsData) -> Self {
        let mut by_id: HashMap<&str, Vec<(Target, &GroupRef)>> = HashMap::new();
        let mut by_name: HashMap<String, Vec<(Target, &GroupRef)>> = HashMap::new();
        let targets = settings
            .role_mappings
            .iter()
            .filter_map(|m| product.role_rank(&m.target).map(|r| (Target::Role(r), m)))
            .chain(
                settings
                    .seat_tier_mappings
                    .iter()
                    .filter_map(|m| product.tier_rank(&m.target).map(|r| (Target::Tier(r), m))),
            );
        for (target, mapping) in targets {
            for g in &mapping.groups {
                // A group named by id matches by id only; by name only when it has no id.
                if !g.id.is_empty() {
                    by_id.entry(g.id.as_str()).or_default().push((target, g));
                } else if !g.name.is_empty() {
                    by_name.entry(g.name.to_lowercase()).or_default().push((target, g));
                }
            }
        }
        Self { product, settings, by_id, by_name }
    }

    fn mapped(&self, groups: &[GroupRef]) -> Mapped {
        let mut roles: Vec<(usize, String)> = Vec::new();
        let mut tiers: Vec<(usize, String)> = Vec::new();
        for g in groups {
            let by_id = (!g.id.is_empty()).then(|| self.by_id.get(g.id.as_str())).flatten();
            let by_name = (!g.name.is_empty()).then(|| self.by_name.get(&g.name.to_lowercase())).flatten();
            for (target, _) in by_id.into_iter().flatten().chain(by_name.into_iter().flatten()) {
                match *target {
                    Target::Role(rank) => roles.push((rank, g.label().to_string())),
                    Target::Tier(rank) => tiers.push((rank, g.label().to_string())),
                }
            }
        }
        let summarize = |mut hits: Vec<(usize, String)>, names: &[String]| {
            if hits.is_empty() {
                return None;
            }
            hits.sort();
            hits.dedup();
            let best = hits[0].0;
            let explained = hits.iter().map(|(rank, group)| format!("{} (group {group})", names[*rank])).collect();
            Some((best, explained))
        };
        Mapped {
            role: summarize(roles, &self.product.roles),
            tier: if self.product.has_seat_tiers() { summarize(tiers, &self.product.seat_tiers) } else { None },
        }
    }

    /// Decides for one subject.
    pub fn decide(&self, trigger: Trigger, subject: &Subject) -> Decision {
        let mut d = Decision {
            user_ref: subject.user_ref.clone(),
            action: Action::None,
            role: subject.current.as_ref().map(|c| c.role.clone()).unwrap_or_default(),
            seat_tier: None,
            reasons: Vec::new(),
            login_allowed: false,
        };
        let agm = self.settings.advanced_group_mapping;
        match (self.settings.mode, trigger.is_login()) {
            (Mode::Manual, true) => self.manual_login(subject, &mut d),
            (Mode::Manual, false) => {
                d.reasons.push("manual provisioning: directories do not change this org's members".into())
            }
            (Mode::Jit, false) => d.reasons.push(
                "jit provisioning: members join at login; directory syncs do not change this org's members".into(),
            ),
            (Mode::Scim, true) => self.scim_login(subject, &mut d),
            (Mode::Jit, true) if agm => self.grouped(subject, true, &mut d),
            (Mode::Jit, true) => self.jit_login(subject, &mut d),
            (Mode::Scim, false) if agm => self.grouped(subject, false, &mut d),
            (Mode::Scim, false) => self.scim_sync(subject, &mut d),
        }
        d
    }

    fn not_assigned(&self, subject: &Subject, login: bool, d: &mut Decision) {
        match (&subject.current, login) {
            (Some(_), true) => {
                d.action = Action::Remove;
                d.role.clear();
                d.reasons.push("login denied and membership removed: not assigned to the IdP application".into());
            }
            (None, true) => {
                d.action = Action::DenyLogin;
                d.reasons.push("login denied: not assigned to the IdP application".into());
            }
            (Some(_), false) => {
                d.action = Action::Remove;
                d.role.clear();
                d.reasons.push(
                    "removed: not an assigned user of the directory (unassigned, deactivated or deleted); the directory is authoritative"
                        .into(),
                );
            }
            (None, false) => d.reasons.push("not assigned in the directory: nothing to do".into()),
        }
    }

    fn default_tier(&self) -> Option<TierChoice> {
        self.product.has_seat_tiers().then_some(TierChoice::HighestFree)
    }

    fn provision_default(&self, d: &mut Decision, why: &str) {
        d.action = Action::Provision;
        d.role = self.product.default_role().to_string();
        d.seat_tier = self.default_tier();
        d.reasons.push(format!("{}: default role ({why})", d.role));
        if d.seat_tier.is_some() {
            d.reasons.push("seat tier: the highest tier with a free seat".into());
        }
    }

    fn manual_login(&self, subject: &Subject, d: &mut Decision) {
        match (&subject.current, subject.assigned) {
            (Some(_), true) => {
                d.action = Action::AllowLogin;
                d.login_allowed = true;
                d.reasons.push("login allowed: a member added by an administrator (manual provisioning)".into());
            }
            (Some(_), false) => {
                d.action = Action::DenyLogin;
                d.reasons.push(
                    "login denied: not assigned to the IdP application; under manual provisioning only an administrator removes members"
                        .into(),
                );
            }
            (None, _) => {
                d.action = Action::DenyLogin;
                d.reasons
                    .push("login denied: manual provisioning, and an administrator has not added this person".into());
            }
        }
    }

    fn scim_login(&self, subject: &Subject, d: &mut Decision) {
        match (&subject.current, subject.assigned) {
            (Some(_), true) => {
                d.action = Action::AllowLogin;
                d.login_allowed = true;
                d.reasons.push("login allowed: a member provisioned by the directory".into());
            }
            (Some(_), false) => {
                d.action = Action::DenyLogin;
                d.reasons.push(
                    "login denied: not assigned to the IdP application; the directory's next sync removes the membership"
                        .into(),
                );
            }
            (None, _) => {
                d.action = Action::DenyLogin;
                d.reasons
                    .push("login denied: scim provisioning, and the directory has not provisioned this person".into());
            }
        }
    }

    fn jit_login(&self, subject: &Subject, d: &mut Decision) {
        if !subject.assigned {
            return self.not_assigned(subject, true, d);
        }
        d.login_allowed = true;
        match &subject.current {
            Some(_) => {
                d.action = Action::AllowLogin;
                d.reasons.push(
                    "login allowed: jit without advanced group mapping; logins do not change role or seat tier".into(),
                );
            }
            None => self.provision_default(d, "first login under jit provisioning"),
        }
    }

    fn scim_sync(&self, subject: &Subject, d: &mut Decision) {
        if !subject.assigned {
            return self.not_assigned(subject, false, d);
        }
        match &subject.current {
            Some(_) => d
                .reasons
                .push("no change: scim without advanced group mapping; syncs do not change role or seat tier".into()),
            None => self.provision_default(d, "assigned in the directory"),
        }
    }

    /// Advanced group mapping, at a login (`login`) or a directory sync.
    fn grouped(&self, subject: &Subject, login: bool, d: &mut Decision) {
        if !subject.assigned {
            return self.not_assigned(subject, login, d);
        }
        let mapped = self.mapped(&subject.groups);
        if mapped.role.is_none() && mapped.tier.is_none() {
            let why = "in no mapped group (advanced group mapping)";
            match (&subject.current, login) {
                (Some(_), true) => {
                    d.action = Action::Remove;
                    d.role.clear();
                    d.reasons.push(format!("login denied and membership removed: {why}"));
                }
                (None, true) => {
                    d.action = Action::DenyLogin;
                    d.reasons.push(format!("login denied: {why}"));
                }
                (Some(_), false) => {
                    d.action = Action::Remove;
                    d.role.clear();
                    d.reasons.push(format!("removed: {why}"));
                }
                (None, false) => d.reasons.push(format!("not provisioned: {why}")),
            }
            return;
        }
        let (role, role_reason) = match &mapped.role {
            Some((rank, explained)) => {
                let role = self.product.roles[*rank].clone();
                let reason = if explained.len() == 1 {
                    format!("{role}: from {}", explained[0])
                } else {
                    format!("{role}: highest of {}", explained.join(", "))
                };
                (role, reason)
            }
            None => {
                let role = self.product.default_role().to_string();
                let reason = format!("{role}: default role (only in seat-tier groups, in no role-mapped group)");
                (role, reason)
            }
        };
        let (tier, tier_reason) = match (&mapped.tier, self.product.has_seat_tiers()) {
            (_, false) => (None, None),
            (Some((rank, explained)), true) => {
                let tier = self.product.seat_tiers[*rank].clone();
                let reason = if explained.len() == 1 {
                    format!("seat tier {tier}: from {}", explained[0])
                } else {
                    format!("seat tier {tier}: highest of {}", explained.join(", "))
                };
                (Some(TierChoice::Mapped(tier)), Some(reason))
            }
            (None, true) => (
                Some(TierChoice::HighestFree),
                Some("seat tier: the highest tier with a free seat (in no tier-mapped group)".to_string()),
            ),
        };
        d.login_allowed = login;
        d.reasons.push(role_reason);
        match &subject.current {
            None => {
                d.action = Action::Provision;
                d.role = role;
                d.seat_tier = tier;
                d.reasons.extend(tier_reason);
            }
            Some(current) => {
                let role_changes = current.role != role;
                let tier_changes = match &tier {
                    Some(TierChoice::Mapped(t)) => current.seat_tier.as_deref() != Some(t.as_str()),
                    // A person in no tier-mapped group keeps the tier they were given.
                    _ => false,
                };
                if role_changes || tier_changes {
                    d.action = Action::Update;
                    d.role = role;
                    d.seat_tier =
                        if tier_changes { tier } else { self.product.has_seat_tiers().then_some(TierChoice::Keep) };
                    if tier_changes {
                        d.reasons.extend(tier_reason);
                    }
                } else {
                    d.action = if login { Action::AllowLogin } else { Action::None };
                    d.reasons.push("role and seat tier already match the group mapping".into());
                }
            }
        }
    }
}

#[cfg(test)]
#[path = "decision_tests.rs"]
mod tests;
