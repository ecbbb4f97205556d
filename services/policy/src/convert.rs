//! Translation between protobuf messages and policy's domain types.

use muster_proto::common::v1 as common;
use muster_proto::policy::v1 as pb;

use crate::domain::catalog::Product;
use crate::domain::decision::{Action, Current, Decision, Source, Subject, TierChoice, Trigger};
use crate::domain::org::{Org, ParentKind, ParentOrg, ProductKind};
use crate::domain::settings::{GroupRef, Mapping, Mode, SettingsData, StoredSettings, Violation};
use crate::error::PolicyError;

/// A protobuf timestamp.
pub fn timestamp(t: chrono::DateTime<chrono::Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp { seconds: t.timestamp(), nanos: t.timestamp_subsec_nanos() as i32 }
}

/// Parent kind from the wire.
pub fn parent_kind(raw: i32) -> Result<ParentKind, PolicyError> {
    match pb::ParentKind::try_from(raw) {
        Ok(pb::ParentKind::Enterprise) => Ok(ParentKind::Enterprise),
        Ok(pb::ParentKind::Team) => Ok(ParentKind::Team),
        Ok(pb::ParentKind::Console) => Ok(ParentKind::Console),
        _ => Err(PolicyError::invalid("kind_required", "kind", "kind must be enterprise, team or console")),
    }
}

fn parent_kind_pb(k: ParentKind) -> pb::ParentKind {
    match k {
        ParentKind::Enterprise => pb::ParentKind::Enterprise,
        ParentKind::Team => pb::ParentKind::Team,
        ParentKind::Console => pb::ParentKind::Console,
    }
}

/// Product from the wire.
pub fn product_kind(raw: i32, field: &str) -> Result<ProductKind, PolicyError> {
    match pb::ProductKind::try_from(raw) {
        Ok(pb::ProductKind::ClaudeTeam) => Ok(ProductKind::ClaudeTeam),
        Ok(pb::ProductKind::ClaudeEnterpriseSeat) => Ok(ProductKind::ClaudeEnterpriseSeat),
        Ok(pb::ProductKind::ClaudeEnterpriseUsage) => Ok(ProductKind::ClaudeEnterpriseUsage),
        Ok(pb::ProductKind::Console) => Ok(ProductKind::Console),
        _ => Err(PolicyError::invalid(
            "product_required",
            field,
            "product must be claude_team, claude_enterprise_seat, claude_enterprise_usage or console",
        )),
    }
}

fn product_kind_pb(k: ProductKind) -> pb::ProductKind {
    match k {
        ProductKind::ClaudeTeam => pb::ProductKind::ClaudeTeam,
        ProductKind::ClaudeEnterpriseSeat => pb::ProductKind::ClaudeEnterpriseSeat,
        ProductKind::ClaudeEnterpriseUsage => pb::ProductKind::ClaudeEnterpriseUsage,
        ProductKind::Console => pb::ProductKind::Console,
    }
}

/// Parent org to the wire.
pub fn parent_pb(p: ParentOrg) -> pb::ParentOrg {
    pb::ParentOrg {
        id: p.id,
        name: p.name,
        kind: parent_kind_pb(p.kind) as i32,
        create_time: Some(timestamp(p.created_at)),
        update_time: Some(timestamp(p.updated_at)),
    }
}

/// Org to the wire.
pub fn org_pb(o: Org) -> pb::Org {
    pb::Org {
        id: o.id,
        parent_id: o.parent_id,
        name: o.name,
        product: product_kind_pb(o.product) as i32,
        create_time: Some(timestamp(o.created_at)),
        update_time: Some(timestamp(o.updated_at)),
    }
}

/// Product to the wire.
pub fn product_pb(p: &Product) -> pb::Product {
    pb::Product {
        kind: product_kind_pb(p.kind) as i32,
        name: p.kind.name().to_string(),
        display_name: p.display_name.clone(),
        roles: p.roles.clone(),
        seat_tiers: p.seat_tiers.clone(),
        guardian_role: p.guardian_role().to_string(),
        default_role: p.default_role().to_string(),
    }
}

fn group(g: common::GroupRef) -> GroupRef {
    GroupRef { id: g.id.trim().to_string(), name: g.name.trim().to_string() }
}

fn group_pb(g: GroupRef) -> common::GroupRef {
    common::GroupRef { id: g.id, name: g.name }
}

/// Settings input from the wire.
pub fn settings_input(input: Option<pb::SettingsInput>) -> Result<SettingsData, PolicyError> {
    let input = input.ok_or_else(|| PolicyError::invalid("settings_required", "settings", "settings are required"))?;
    let mode = match pb::ProvisioningMode::try_from(input.mode) {
        Ok(pb::ProvisioningMode::Manual) => Mode::Manual,
        Ok(pb::ProvisioningMode::Jit) => Mode::Jit,
        Ok(pb::ProvisioningMode::Scim) => Mode::Scim,
        _ => return Err(PolicyError::invalid("mode_required", "settings.mode", "mode must be manual, jit or scim")),
    };
    Ok(SettingsData {
        mode,
        advanced_group_mapping: input.advanced_group_mapping,
        role_mappings: input
            .role_mappings
            .into_iter()
            .map(|m| Mapping { target: m.role.trim().to_string(), groups: m.groups.into_iter().map(group).collect() })
            .collect(),
        seat_tier_mappings: input
            .seat_tier_mappings
            .into_iter()
            .map(|m| Mapping {
                target: m.seat_tier.trim().to_string(),
                groups: m.groups.into_iter().map(group).collect(),
            })
            .collect(),
    })
}

fn mode_pb(m: Mode) -> pb::ProvisioningMode {
    match m {
        Mode::Manual => pb::ProvisioningMode::Manual,
        Mode::Jit => pb::ProvisioningMode::Jit,
        Mode::Scim => pb::ProvisioningMode::Scim,
    }
}

/// Stored settings to the wire.
pub fn settings_pb(s: StoredSettings) -> pb::Settings {
    pb::Settings {
        org_id: s.org_id,
        version: s.version,
        mode: mode_pb(s.data.mode) as i32,
        advanced_group_mapping: s.data.advanced_group_mapping,
        role_mappings: s
            .data
            .role_mappings
            .into_iter()
            .map(|m| pb::RoleMapping { role: m.target, groups: m.groups.into_iter().map(group_pb).collect() })
            .collect(),
        seat_tier_mappings: s
            .data
            .seat_tier_mappings
            .into_iter()
            .map(|m| pb::SeatTierMapping { seat_tier: m.target, groups: m.groups.into_iter().map(group_pb).collect() })
            .collect(),
        update_time: s.updated_at.map(timestamp),
    }
}

/// Violation to the wire.
pub fn violation_pb(v: Violation) -> pb::Violation {
    pb::Violation { rule: v.rule.to_string(), field: v.field, description: v.description }
}

/// Actor as recorded (`admin:ID`, …); "unnamed" when the caller named none.
pub fn actor(a: Option<common::Actor>) -> String {
    muster_runtime::actor::actor_name(a.as_ref()).unwrap_or_else(|| "unnamed".to_string())
}

/// Trigger from the wire.
pub fn trigger(raw: i32) -> Result<Trigger, PolicyError> {
    match common::Trigger::try_from(raw) {
        Ok(common::Trigger::DirectorySync) => Ok(Trigger::DirectorySync),
        Ok(common::Trigger::Login) => Ok(Trigger::Login),
        Ok(common::Trigger::SyncNow) => Ok(Trigger::SyncNow),
        _ => Err(PolicyError::invalid(
            "trigger_required",
            "trigger",
            "trigger must be directory_sync, login or sync_now",
        )),
    }
}

/// Subjects from the wire.
pub fn subjects(raw: Vec<pb::Subject>) -> Result<Vec<Subject>, PolicyError> {
    raw.into_iter()
        .enumerate()
        .map(|(i, s)| {
            let current = match s.current {
                None => None,
                Some(c) => {
                    let source = match common::MemberSource::try_from(c.source) {
                        Ok(common::MemberSource::Manual) => Source::Manual,
                        Ok(common::MemberSource::Jit) => Source::Jit,
                        Ok(common::MemberSource::Directory) => Source::Directory,
                        _ => {
                            return Err(PolicyError::invalid(
                                "source_required",
                                &format!("subjects[{i}].current.source"),
                                "a current membership must name its source",
                            ));
                        }
                    };
                    let seat_tier = (!c.seat_tier.is_empty()).then_some(c.seat_tier);
                    Some(Current { role: c.role, seat_tier, source })
                }
            };
            Ok(Subject {
                user_ref: s.user_ref,
                assigned: s.assigned,
                groups: s.groups.into_iter().map(group).collect(),
                current,
            })
        })
        .collect()
}

fn action_pb(a: Action) -> pb::Action {
    match a {
        Action::None => pb::Action::None,
        Action::Provision => pb::Action::Provision,
        Action::Update => pb::Action::Update,
        Action::Remove => pb::Action::Remove,
        Action::AllowLogin => pb::Action::AllowLogin,
        Action::DenyLogin => pb::Action::DenyLogin,
    }
}

/// Decision to the wire.
pub fn decision_pb(d: Decision) -> pb::Decision {
    use pb::seat_tier_preference::Choice;
    pb::Decision {
        user_ref: d.user_ref,
        action: action_pb(d.action) as i32,
        role: d.role,
        seat_tier: d.seat_tier.map(|t| pb::SeatTierPreference {
            choice: Some(match t {
                TierChoice::Mapped(tier) => Choice::Mapped(tier),
                TierChoice::HighestFree => Choice::HighestFree(true),
                TierChoice::Keep => Choice::Keep(true),
            }),
        }),
        reasons: d.reasons,
        login_allowed: d.login_allowed,
    }
}
