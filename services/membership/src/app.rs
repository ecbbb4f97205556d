//! Membership's use cases: validate, ask policy where a decision is needed, then run
//! the change in one transaction (see `ops`). The gRPC layer only translates.

use std::sync::Arc;

use muster_proto::common::v1 as common;
use muster_proto::policy::v1 as ppb;
use muster_runtime::client::{RetryPolicy, retry_unavailable};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use crate::domain::member::{Member, Source, Status, normalize_email, plausible_email};
use crate::error::MembershipError;
use crate::ops::{self, Desired, IdentityIn, ItemResult, Outcome, Session, TierPref, Want};
use crate::org_catalog::{OrgCatalog, OrgProduct};
use crate::store::{AuditFilter, AuditRecord, EventRecord, Ledger, MemberFilter, MembershipStore};

/// Most items one Apply or LookupMembers call takes.
pub const MAX_BATCH: usize = 10_000;
/// Most items one PreviewApply stream takes (an org of a million members).
pub const MAX_PREVIEW_ITEMS: usize = 1_000_000;

/// Seats of one tier.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TierUsage {
    /// Tier.
    pub seat_tier: String,
    /// Bought; `None` unlimited.
    pub purchased: Option<i64>,
    /// Active members in it.
    pub used: i64,
    /// Members waiting for exactly it.
    pub pending: i64,
}

/// An org's seat use.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeatUsage {
    /// Org.
    pub org_id: String,
    /// Per tier, highest first.
    pub tiers: Vec<TierUsage>,
    /// Pending members who take any tier.
    pub pending_any_tier: i64,
}

/// What a login did.
#[derive(Clone, Debug)]
pub struct LoginResult {
    /// May they use the org now.
    pub allowed: bool,
    /// Their membership after the login.
    pub member: Option<Member>,
    /// Policy's action.
    pub action: ppb::Action,
    /// Why.
    pub reasons: Vec<String>,
}

/// The membership application.
#[derive(Clone)]
pub struct Membership {
    store: MembershipStore,
    catalog: OrgCatalog,
    events: Arc<Notify>,
    stopping: muster_runtime::Stopping,
}

fn agm_note(uses: Option<(bool, i32)>) -> Vec<String> {
    match uses {
        Some((true, mode)) if mode == ppb::ProvisioningMode::Scim as i32 => vec![
            "this org uses advanced group mapping: the next directory sync recomputes this member's role and seat tier"
                .into(),
        ],
        Some((true, _)) => vec![
            "this org uses advanced group mapping: this member's next login recomputes their role and seat tier".into(),
        ],
        _ => vec![],
    }
}

impl Membership {
    /// Over `store`, asking `catalog` (policy).
    pub fn new(store: MembershipStore, catalog: OrgCatalog, stopping: muster_runtime::Stopping) -> Self {
        Self { store, catalog, events: Arc::new(Notify::new()), stopping }
    }

    /// Fires when the service is shutting down (streams end so clients resume elsewhere).
    pub fn stopping(&self) -> muster_runtime::Stopping {
        self.stopping.clone()
    }

    /// Woken whenever this process commits events.
    pub fn event_signal(&self) -> Arc<Notify> {
        self.events.clone()
    }

    async fn transact<T, F>(&self, product: Arc<OrgProduct>, actor: String, f: F) -> Result<T, MembershipError>
    where
        F: FnOnce(&mut Session<'_, crate::store::SqlLedger<'_>>) -> Result<T, MembershipError> + Send + 'static,
        T: Send + 'static,
    {
        let result = self
            .store
            .transact(move |ledger| {
                let mut session = Session::begin(ledger, &product, actor)?;
                let value = f(&mut session)?;
                session.finish()?;
                Ok(value)
            })
            .await;
        if result.is_ok() {
            self.events.notify_waiters();
        }
        result
    }

    /// Adds a member by hand.
    pub async fn add_member(
        &self,
        org_id: &str,
        email: &str,
        display_name: &str,
        role: &str,
        seat_tier: &str,
        actor: String,
    ) -> Result<(Member, Vec<String>), MembershipError> {
        if !plausible_email(email) {
            return Err(MembershipError::invalid(
                "email_invalid",
                "email",
                format!("`{email}` is not an email address"),
            ));
        }
        let product = self.catalog.product(org_id).await?;
        let role = if role.is_empty() { product.default_role().to_string() } else { role.to_string() };
        let pref = if seat_tier.is_empty() || product.seat_tiers.is_empty() {
            TierPref::HighestFree
        } else {
            product.check_tier(seat_tier, "seat_tier")?;
            TierPref::Mapped(seat_tier.to_string())
        };
        let identity =
            IdentityIn { email: email.to_string(), display_name: display_name.to_string(), ..Default::default() };
        let reasons = vec!["added by an administrator".to_string()];

        let member = self
            .transact(product, actor, move |s| {
                let Some(user) = s.resolve_user(&identity, true)? else {
                    return Err(MembershipError::invalid("email_invalid", "email", "no email"));
                };
                if s.member_of_user(&user)?.is_some() {
                    return Err(MembershipError::AlreadyMember(user.email));
                }
                Ok(s.add(user, &role, &pref, Source::Manual, None, &reasons)?.0)
            })
            .await?;
        let mut notes = agm_note(self.catalog.uses_group_mapping(org_id).await);
        if member.status == Status::PendingSeat {
            notes.insert(0, "no seat of the tier is free: the member is pending_seat until one is".into());
        }
        Ok((member, notes))
    }

    /// Changes a member's role and/or tier by hand.
    pub async fn update_member(
        &self,
        org_id: &str,
        member_id: &str,
        expected_version: i64,
        role: Option<String>,
        seat_tier: Option<String>,
        actor: String,
    ) -> Result<(Member, Vec<String>), MembershipError> {
        let product = self.catalog.product(org_id).await?;
        if let Some(r) = &role {
            product.check_role(r, "role")?;
        }
        let pref = match &seat_tier {
            Some(t) => {
                product.check_tier(t, "seat_tier")?;
                TierPref::Mapped(t.clone())
            }
            None => TierPref::Keep,
        };
        let (org, id) = (org_id.to_string(), member_id.to_string());
        let reasons = vec!["changed by an administrator".to_string()];
        let (member, outcome) = self
            .transact(product, actor, move |s| {
                let before = s.ledger()?.member(&org, &id)?.ok_or(MembershipError::NotFound { what: "member", id })?;
                let (after, outcome) = s.change(before, role.as_deref(), &pref, Some(expected_version), &reasons)?;
                if outcome == Outcome::HeldGuardian {
                    return Err(MembershipError::Refused {
                        rule: "guardian_required",
                        message: "this is the org's last member in the guardian role; make someone else one first"
                            .into(),
                    });
                }
                Ok((after, outcome))
            })
            .await?;
        let mut notes = agm_note(self.catalog.uses_group_mapping(org_id).await);
        if outcome == Outcome::PendingSeat {
            notes
                .insert(0, "no seat of that tier is free: the member keeps their seat and moves when one frees".into());
        }
        Ok((member, notes))
    }

    /// Removes a member by hand.
    pub async fn remove_member(&self, org_id: &str, member_id: &str, actor: String) -> Result<(), MembershipError> {
        let product = self.catalog.product(org_id).await?;
        let (org, id) = (org_id.to_string(), member_id.to_string());
        self.transact(product, actor, move |s| {
            let member = s.ledger()?.member(&org, &id)?.ok_or(MembershipError::NotFound { what: "member", id })?;
            match s.remove(member, &["removed by an administrator".to_string()])? {
                Outcome::HeldGuardian => Err(MembershipError::Refused {
                    rule: "guardian_required",
                    message: "this is the org's last member in the guardian role; make someone else one first".into(),
                }),
                _ => Ok(()),
            }
        })
        .await
    }

    /// One member.
    pub async fn get_member(&self, org_id: &str, member_id: &str) -> Result<Member, MembershipError> {
        self.store
            .member(org_id.to_string(), member_id.to_string())
            .await?
            .ok_or_else(|| MembershipError::NotFound { what: "member", id: member_id.to_string() })
    }

    /// A page of members (ask one more than you show, to tell if another page
    /// follows) and how many match the filters in all.
    pub async fn list_members(
        &self,
        org_id: &str,
        filter: MemberFilter,
        after: Option<String>,
        limit: usize,
    ) -> Result<(Vec<Member>, i64), MembershipError> {
        self.store.list_members(org_id.to_string(), filter, after, limit).await
    }

    /// The person each identity resolves to and their member in the org.
    pub async fn lookup(
        &self,
        org_id: &str,
        identities: Vec<IdentityIn>,
    ) -> Result<Vec<crate::store::Lookup>, MembershipError> {
        if identities.len() > MAX_BATCH {
            return Err(MembershipError::invalid(
                "batch_too_large",
                "identities",
                format!("at most {MAX_BATCH} identities"),
            ));
        }
        let keys = identities.into_iter().map(|i| (i.directory_id, i.external_id, normalize_email(&i.email))).collect();
        self.store.lookup(org_id.to_string(), keys).await
    }

    async fn usage(&self, product: &OrgProduct) -> Result<SeatUsage, MembershipError> {
        let (ledger, pending) = self.store.seat_usage(product.org_id.clone(), product.seat_tiers.clone()).await?;
        Ok(usage_of(product, ledger.tiers(), &pending))
    }

    /// Seat use of an org.
    pub async fn seat_usage(&self, org_id: &str) -> Result<SeatUsage, MembershipError> {
        let product = self.catalog.product(org_id).await.map_err(|e| e.when_reading("the org's seats"))?;
        self.usage(&product).await
    }

    /// Sets seats bought of one tier; then gives waiting members the seats that allow.
    pub async fn set_seats(
        &self,
        org_id: &str,
        tier: &str,
        purchased: Option<i64>,
        actor: String,
    ) -> Result<SeatUsage, MembershipError> {
        let product = self.catalog.product(org_id).await?;
        product.check_tier(tier, "seat_tier")?;
        if purchased.is_some_and(|p| p < 0) {
            return Err(MembershipError::invalid(
                "seats_negative",
                "purchased",
                "purchased seats must not be negative",
            ));
        }
        let (org, tier) = (org_id.to_string(), tier.to_string());
        let described = match purchased {
            Some(n) => format!("{tier}: {n} seats purchased"),
            None => format!("{tier}: unlimited seats"),
        };
        let copy = product.clone();
        self.transact(product.clone(), actor, move |s| {
            let in_use = s.seats().tiers().iter().find(|t| t.tier == tier).map(|t| t.used).unwrap_or(0);
            if let Some(p) = purchased
                && p < in_use
            {
                return Err(MembershipError::Refused {
                    rule: "seats_below_use",
                    message: format!(
                        "{tier} has {in_use} seats in use; {p} is fewer. Remove members or move them to another tier first"
                    ),
                });
            }
            s.ledger()?.set_seats(&org, &tier, purchased)?;
            // Reload so the session's ledger sees the new count, then retry waiting members.
            let fresh = s.ledger()?.seat_ledger(&org, &copy.seat_tiers)?;
            s.replace_seats(fresh);
            s.retry_waiting()?;
            let tiers = s.seats().tiers().to_vec();
            let mut waiting = std::collections::HashMap::new();
            for m in s.ledger()?.pending(&org)? {
                *waiting.entry(m.wanted_seat_tier).or_insert(0) += 1;
            }
            let usage = usage_of(&copy, &tiers, &waiting);
            s.record_seats(serde_json::to_string(&usage).unwrap_or_default(), vec![described]);
            Ok(())
        })
        .await?;
        self.usage(&product).await
    }

    /// Applies a batch of desired states, once per idempotency key.
    pub async fn apply(
        &self,
        org_id: &str,
        key: &str,
        request_hash: String,
        directory_id: &str,
        actor: String,
        items: Vec<Desired>,
    ) -> Result<(Vec<ItemResult>, bool), MembershipError> {
        if key.trim().is_empty() {
            return Err(MembershipError::invalid(
                "idempotency_key_required",
                "idempotency_key",
                "an idempotency key is required",
            ));
        }
        if items.len() > MAX_BATCH {
            return Err(MembershipError::invalid(
                "batch_too_large",
                "items",
                format!("at most {MAX_BATCH} items per call, got {}", items.len()),
            ));
        }
        let product = self.catalog.product(org_id).await?;
        let (org, key, directory) = (org_id.to_string(), key.to_string(), directory_id.to_string());
        self.transact(product, actor, move |s| ops::apply_once(s, &org, &key, &request_hash, &items, &directory)).await
    }

    /// A dry run of Apply (see [`ops::preview_batches`]): the batches, in order, with
    /// the directory applying each; nothing is written.
    pub async fn preview_apply(
        &self,
        org_id: &str,
        actor: String,
        batches: Vec<(String, Vec<Desired>)>,
    ) -> Result<Vec<Vec<ItemResult>>, MembershipError> {
        let total: usize = batches.iter().map(|(_, b)| b.len()).sum();
        if total > MAX_PREVIEW_ITEMS {
            return Err(MembershipError::invalid(
                "preview_too_large",
                "items",
                format!("at most {MAX_PREVIEW_ITEMS} items per preview, got {total}"),
            ));
        }
        if let Some((_, b)) = batches.iter().find(|(_, b)| b.len() > MAX_BATCH) {
            return Err(MembershipError::invalid(
                "batch_too_large",
                "items",
                format!("at most {MAX_BATCH} items per batch, got {}", b.len()),
            ));
        }
        let product = self.catalog.product(org_id).await?;
        self.store
            .dry_run(move |ledger| {
                let mut session = Session::begin_dry(ledger, &product, actor)?;
                ops::preview_batches(&mut session, &batches)
            })
            .await
    }

    /// A JIT login: asks policy, then applies its decision.
    pub async fn login(
        &self,
        org_id: &str,
        mut identity: IdentityIn,
        assigned: bool,
        groups: Vec<common::GroupRef>,
    ) -> Result<LoginResult, MembershipError> {
        if identity.email.trim().is_empty() && identity.external_id.trim().is_empty() {
            return Err(MembershipError::invalid(
                "identity_required",
                "identity",
                "a login needs an email or a subject",
            ));
        }
        if identity.directory_id.is_empty() {
            identity.directory_id = "sso".into();
        }
        let product = self.catalog.product(org_id).await?;
        let current = self.lookup(org_id, vec![identity.clone()]).await?.into_iter().next().and_then(|(m, _)| m);
        let subject = ppb::Subject {
            user_ref: identity.user_ref(),
            assigned,
            groups,
            current: current.as_ref().map(|m| ppb::CurrentMembership {
                role: m.role.clone(),
                seat_tier: m.seat_tier.clone().unwrap_or_default(),
                source: match m.source {
                    Source::Manual => common::MemberSource::Manual,
                    Source::Jit => common::MemberSource::Jit,
                    Source::Directory => common::MemberSource::Directory,
                } as i32,
            }),
        };
        let policy = self.catalog.policy();
        let request = ppb::DecideRequest {
            org_id: org_id.to_string(),
            trigger: common::Trigger::Login as i32,
            subjects: vec![subject],
            proposed_settings: None,
        };
        let decided = retry_unavailable(RetryPolicy::default(), || {
            let mut p = policy.clone();
            let r = request.clone();
            async move { p.decide(r).await }
        })
        .await
        .map_err(MembershipError::from_policy)?
        .into_inner();
        let decision = decided
            .decisions
            .into_iter()
            .next()
            .ok_or_else(|| MembershipError::Policy(tonic::Status::internal("policy returned no decision")))?;
        let action = ppb::Action::try_from(decision.action).unwrap_or(ppb::Action::Unspecified);
        let want = match action {
            ppb::Action::Provision | ppb::Action::Update => Want::Member,
            ppb::Action::Remove => Want::Gone,
            _ => Want::Nothing,
        };
        let desired = Desired {
            identity: identity.clone(),
            also_known_as: Vec::new(),
            member_id: None,
            want,
            role: decision.role.clone(),
            tier: crate::convert::tier_pref(decision.seat_tier.as_ref()),
            reasons: decision.reasons.clone(),
        };
        let actor = format!("login:{}", identity.user_ref());
        let (member, outcome, note) = self
            .transact(product, actor, move |s| {
                let result = ops::apply_one(s, &desired, Source::Jit, None)?;
                let member = match s.resolve_user(&desired.identity, false)? {
                    Some(user) => s.member_of_user(&user)?,
                    None => None,
                };
                Ok((member, result.outcome, result.error))
            })
            .await?;
        let mut reasons = decision.reasons;
        if want == Want::Gone && member.is_some() && !note.is_empty() {
            // Matched by email only: this login is not proof the member is gone.
            reasons.push(format!("membership {note}"));
        }
        let active = member.as_ref().is_some_and(|m| m.status == Status::Active);
        if decision.login_allowed && !active && member.is_some() {
            reasons.push("login denied for now: no seat of the tier is free (pending_seat)".into());
        }
        if outcome == Outcome::HeldGuardian {
            reasons.push("membership kept: removing the org's last guardian is held (guardian guard)".into());
        }
        Ok(LoginResult { allowed: decision.login_allowed && active, member, action, reasons })
    }

    /// Retries every waiting member of an org.
    pub async fn retry_pending(&self, org_id: &str, actor: String) -> Result<(i64, i64), MembershipError> {
        let product = self.catalog.product(org_id).await?;
        self.transact(product, actor, |s| s.retry_waiting()).await
    }

    /// A page of the audit log, newest first.
    pub async fn list_audit(
        &self,
        org_id: &str,
        filter: AuditFilter,
        before: Option<i64>,
        limit: usize,
    ) -> Result<Vec<AuditRecord>, MembershipError> {
        self.store.list_audit(org_id.to_string(), filter, before, limit).await
    }

    /// Events after a sequence.
    pub async fn events_after(
        &self,
        after: i64,
        org_id: Option<String>,
        limit: usize,
    ) -> Result<Vec<EventRecord>, MembershipError> {
        self.store.events_after(after, org_id, limit).await
    }
}

/// Seat use from a ledger's tiers and pending counts by wanted tier.
pub fn usage_of(
    product: &OrgProduct,
    tiers: &[crate::domain::seats::TierSeats],
    pending: &std::collections::HashMap<Option<String>, i64>,
) -> SeatUsage {
    SeatUsage {
        org_id: product.org_id.clone(),
        tiers: tiers
            .iter()
            .map(|t| TierUsage {
                seat_tier: t.tier.clone(),
                purchased: t.purchased,
                used: t.used,
                pending: pending.get(&Some(t.tier.clone())).copied().unwrap_or(0),
            })
            .collect(),
        pending_any_tier: pending.get(&None).copied().unwrap_or(0),
    }
}
