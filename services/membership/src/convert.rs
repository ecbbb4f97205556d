//! Translation between protobuf messages and membership's domain types.

use muster_proto::common::v1 as common;
use muster_proto::membership::v1 as pb;
use muster_proto::policy::v1 as ppb;

use crate::app::SeatUsage;
use crate::domain::member::{Member, Source, Status, User};
use crate::error::MembershipError;
use crate::ops::{Desired, IdentityIn, ItemResult, Outcome, TierPref, Want};
use crate::store::{AuditRecord, EventRecord};

/// A protobuf timestamp.
pub fn timestamp(t: chrono::DateTime<chrono::Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp { seconds: t.timestamp(), nanos: t.timestamp_subsec_nanos() as i32 }
}

/// A time from the wire.
pub fn time(t: Option<prost_types::Timestamp>) -> Option<chrono::DateTime<chrono::Utc>> {
    t.and_then(|t| chrono::DateTime::from_timestamp(t.seconds, t.nanos.max(0) as u32))
}

/// Actor as recorded (`admin:ID`, …); "unnamed" when the caller named none.
pub fn actor(a: Option<common::Actor>) -> String {
    muster_runtime::actor::actor_name(a.as_ref()).unwrap_or_else(|| "unnamed".to_string())
}

fn status_pb(s: Status) -> pb::MemberStatus {
    match s {
        Status::Active => pb::MemberStatus::Active,
        Status::PendingSeat => pb::MemberStatus::PendingSeat,
    }
}

/// Status filter from the wire (`None`: any).
pub fn status(raw: i32) -> Option<Status> {
    match pb::MemberStatus::try_from(raw) {
        Ok(pb::MemberStatus::Active) => Some(Status::Active),
        Ok(pb::MemberStatus::PendingSeat) => Some(Status::PendingSeat),
        _ => None,
    }
}

fn source_pb(s: Source) -> common::MemberSource {
    match s {
        Source::Manual => common::MemberSource::Manual,
        Source::Jit => common::MemberSource::Jit,
        Source::Directory => common::MemberSource::Directory,
    }
}

/// Source filter from the wire (`None`: any).
pub fn source(raw: i32) -> Option<Source> {
    match common::MemberSource::try_from(raw) {
        Ok(common::MemberSource::Manual) => Some(Source::Manual),
        Ok(common::MemberSource::Jit) => Some(Source::Jit),
        Ok(common::MemberSource::Directory) => Some(Source::Directory),
        _ => None,
    }
}

/// A person to the wire.
pub fn user_pb(u: User) -> pb::User {
    pb::User {
        id: u.id,
        email: u.email,
        display_name: u.display_name,
        links: u
            .links
            .into_iter()
            .map(|l| pb::IdentityLink { directory_id: l.directory_id, external_id: l.external_id })
            .collect(),
    }
}

/// A member to the wire.
pub fn member_pb(m: Member) -> pb::Member {
    pb::Member {
        id: m.id,
        org_id: m.org_id,
        user: Some(user_pb(m.user)),
        role: m.role,
        seat_tier: m.seat_tier.unwrap_or_default(),
        status: status_pb(m.status) as i32,
        source: source_pb(m.source) as i32,
        directory_id: m.directory_id.unwrap_or_default(),
        wanted_seat_tier: m.wanted_seat_tier.unwrap_or_default(),
        version: m.version,
        create_time: Some(timestamp(m.created_at)),
        update_time: Some(timestamp(m.updated_at)),
    }
}

/// Seat use to the wire.
pub fn usage_pb(u: SeatUsage) -> pb::SeatUsage {
    pb::SeatUsage {
        org_id: u.org_id,
        tiers: u
            .tiers
            .into_iter()
            .map(|t| pb::TierUsage { seat_tier: t.seat_tier, purchased: t.purchased, used: t.used, pending: t.pending })
            .collect(),
        pending_any_tier: u.pending_any_tier,
    }
}

/// An identity from the wire.
pub fn identity(i: Option<pb::Identity>) -> IdentityIn {
    let i = i.unwrap_or_default();
    IdentityIn {
        directory_id: i.directory_id.trim().to_string(),
        external_id: i.external_id.trim().to_string(),
        email: i.email.trim().to_string(),
        display_name: i.display_name,
    }
}

/// A seat-tier preference from policy.
pub fn tier_pref(p: Option<&ppb::SeatTierPreference>) -> TierPref {
    use ppb::seat_tier_preference::Choice;
    match p.and_then(|p| p.choice.as_ref()) {
        Some(Choice::Mapped(t)) => TierPref::Mapped(t.clone()),
        Some(Choice::HighestFree(_)) => TierPref::HighestFree,
        Some(Choice::Keep(_)) | None => TierPref::Keep,
    }
}

/// Desired states from the wire.
pub fn desired(items: Vec<pb::DesiredMember>) -> Result<Vec<Desired>, MembershipError> {
    Ok(items
        .into_iter()
        .map(|d| {
            let want = match ppb::Action::try_from(d.action) {
                Ok(ppb::Action::Provision | ppb::Action::Update) => Want::Member,
                Ok(ppb::Action::Remove) => Want::Gone,
                _ => Want::Nothing,
            };
            // A new member with no tier preference takes the highest free tier.
            let tier = match tier_pref(d.seat_tier.as_ref()) {
                TierPref::Keep if d.seat_tier.is_none() => TierPref::HighestFree,
                other => other,
            };
            Desired {
                identity: identity(d.identity),
                also_known_as: d.also_known_as.into_iter().map(|i| identity(Some(i))).collect(),
                member_id: non_empty(d.member_id.trim()),
                want,
                role: d.role,
                tier,
                reasons: d.reasons,
            }
        })
        .collect())
}

/// Apply results to the wire.
pub fn results_pb(results: Vec<ItemResult>) -> Vec<pb::ApplyResult> {
    results
        .into_iter()
        .map(|r| pb::ApplyResult {
            user_ref: r.user_ref,
            outcome: match r.outcome {
                Outcome::Applied => pb::ApplyOutcome::Applied,
                Outcome::Unchanged => pb::ApplyOutcome::Unchanged,
                Outcome::PendingSeat => pb::ApplyOutcome::PendingSeat,
                Outcome::HeldGuardian => pb::ApplyOutcome::HeldGuardian,
                Outcome::Error => pb::ApplyOutcome::Error,
            } as i32,
            member_id: r.member_id,
            error: r.error,
            member: r.member.map(member_pb),
        })
        .collect()
}

fn non_empty(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_string())
}

/// An audit record to the wire.
pub fn audit_pb(a: AuditRecord) -> pb::AuditEntry {
    pb::AuditEntry {
        id: a.id,
        org_id: a.org_id,
        user_id: a.user_id,
        member_id: a.member_id,
        action: a.action,
        actor: a.actor,
        reasons: a.reasons,
        before_json: a.before_json,
        after_json: a.after_json,
        time: Some(timestamp(a.at)),
    }
}

/// An event to the wire.
pub fn event_pb(e: EventRecord) -> pb::MemberEvent {
    let (member, seats) = if e.event_type == "seats.changed" {
        (None, serde_json::from_str::<SeatUsage>(&e.payload).ok().map(usage_pb))
    } else {
        (serde_json::from_str::<Member>(&e.payload).ok().map(member_pb), None)
    };
    pb::MemberEvent {
        sequence: e.sequence,
        r#type: e.event_type,
        org_id: e.org_id,
        member,
        seats,
        time: Some(timestamp(e.at)),
    }
}
