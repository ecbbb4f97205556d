//! Proto <-> domain conversions for the gRPC layer.

use chrono::{DateTime, Utc};
use muster_proto::common::v1 as common;
use muster_proto::directory::v1 as pb;

use crate::app::{RunView, StatusView, item_kind_pb};
use crate::domain::brake::Brake;
use crate::domain::directory::{Authority, Directory, Kind, State};
use crate::domain::run::{Counts, Phase, RunState, SyncRun, Trigger};
use crate::error::SyncError;
use crate::store::{DirEvent, DirectoryAuditEntry, MirrorGroup, MirrorUser, ScimRequestRow};

/// A proto timestamp.
pub fn ts(t: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp { seconds: t.timestamp(), nanos: t.timestamp_subsec_nanos() as i32 }
}

fn kind_unknown(field: &'static str, what: String) -> SyncError {
    SyncError::invalid(
        "kind_unknown",
        field,
        format!("{what} is not a directory kind; the kinds are {}", Kind::names()),
    )
}

/// A directory kind from the wire: `kind_name` (any kind of the registry,
/// lowercased), or the legacy enum value of the kinds that have one. Both given
/// must name the same kind.
pub fn kind(raw: i32, kind_name: &str) -> Result<Kind, SyncError> {
    let by_enum = match pb::DirectoryKind::try_from(raw) {
        Ok(pb::DirectoryKind::Unspecified) => None,
        Ok(value) => Some(Kind::from_proto(value).ok_or_else(|| kind_unknown("kind", format!("kind {raw}")))?),
        Err(_) => return Err(kind_unknown("kind", format!("kind {raw}"))),
    };
    let name = kind_name.trim().to_ascii_lowercase();
    let by_name = match name.as_str() {
        "" => None,
        name => Some(Kind::from_name(name).ok_or_else(|| kind_unknown("kind_name", format!("{kind_name:?}")))?),
    };
    match (by_enum, by_name) {
        (Some(k), None) | (None, Some(k)) => Ok(k),
        (Some(a), Some(b)) if a == b => Ok(a),
        (Some(a), Some(b)) => Err(SyncError::invalid(
            "kind_conflict",
            "kind_name",
            format!("kind says {} but kind_name says {}; give one", a.name(), b.name()),
        )),
        (None, None) => Err(SyncError::invalid(
            "kind_required",
            "kind_name",
            format!("kind_name must name the directory's kind, one of {}", Kind::names()),
        )),
    }
}

/// A kind's legacy enum value (`UNSPECIFIED` for a kind named by name only).
pub fn kind_pb(k: Kind) -> pb::DirectoryKind {
    k.proto()
}

/// A kind of the registry for the wire.
pub fn kind_info_pb(k: Kind) -> pb::DirectoryKindInfo {
    pb::DirectoryKindInfo {
        name: k.name().to_string(),
        title: k.title().to_string(),
        pulled: k.is_pull(),
        kind: k.proto() as i32,
        secret_fields: k.secret_fields().unwrap_or_default().iter().map(|f| f.to_string()).collect(),
    }
}

/// Brake settings from the wire (defaults for unset fields).
pub fn brake(b: Option<&pb::BrakeSettings>) -> Result<Brake, SyncError> {
    let (p, m, w) = b.map(|b| (b.max_removal_percent, b.min_removals, b.window_seconds)).unwrap_or((None, None, None));
    if p.is_some_and(|p| !(1..=100).contains(&p)) {
        return Err(SyncError::invalid(
            "brake_percent_out_of_range",
            "brake.max_removal_percent",
            "max_removal_percent must be 1 to 100",
        ));
    }
    Brake::from_input(p, m, w).ok_or_else(|| {
        SyncError::invalid(
            "brake_window_out_of_range",
            "brake.window_seconds",
            format!("window_seconds must be 60 to {}", crate::domain::brake::MAX_WINDOW_SECS),
        )
    })
}

/// A directory authority from the wire.
pub fn authority(raw: i32) -> Result<Authority, SyncError> {
    match pb::DirectoryAuthority::try_from(raw) {
        Ok(pb::DirectoryAuthority::ProvisioningOnly) => Ok(Authority::ProvisioningOnly),
        Ok(pb::DirectoryAuthority::Authoritative) => Ok(Authority::Authoritative),
        _ => Err(SyncError::invalid(
            "authority_required",
            "authority",
            "authority must be provisioning_only or authoritative",
        )),
    }
}

fn authority_pb(a: Authority) -> pb::DirectoryAuthority {
    match a {
        Authority::ProvisioningOnly => pb::DirectoryAuthority::ProvisioningOnly,
        Authority::Authoritative => pb::DirectoryAuthority::Authoritative,
    }
}

/// An audit entry for the wire.
pub fn audit_pb(e: DirectoryAuditEntry) -> pb::DirectoryAuditEntry {
    pb::DirectoryAuditEntry {
        sequence: e.seq,
        directory_id: e.directory_id,
        action: e.action,
        actor: e.actor,
        before_json: e.before_json,
        after_json: e.after_json,
        time: Some(ts(e.at)),
    }
}

/// A directory for the wire.
pub fn directory_pb(d: Directory, scim_base_url: String) -> pb::Directory {
    let removes_unknown = d.removes_unknown();
    pb::Directory {
        id: d.id,
        parent_id: d.parent_id,
        kind: kind_pb(d.kind) as i32,
        kind_name: d.kind.name().to_string(),
        display_name: d.display_name,
        config_json: d.config_json,
        sync_interval_seconds: d.sync_interval_secs,
        brake: Some(pb::BrakeSettings {
            max_removal_percent: Some(d.brake.max_percent),
            min_removals: Some(d.brake.min_removals),
            window_seconds: Some(d.brake.window_secs),
        }),
        state: match d.state {
            State::Active => pb::DirectoryState::Active,
            State::Paused => pb::DirectoryState::Paused,
            State::Leaving => pb::DirectoryState::Leaving,
        } as i32,
        scim_base_url,
        create_time: Some(ts(d.created_at)),
        update_time: Some(ts(d.updated_at)),
        scim_log_days: d.scim_log_days,
        authority: authority_pb(d.authority) as i32,
        proven_time: d.proven_at.map(ts),
        removes_unknown,
    }
}

/// A logged SCIM exchange for the wire.
pub fn scim_request_pb(r: ScimRequestRow) -> pb::ScimRequestLog {
    let request_headers: std::collections::HashMap<String, String> =
        serde_json::from_str(&r.request_headers).unwrap_or_default();
    pb::ScimRequestLog {
        id: r.id,
        directory_id: r.directory_id,
        time: Some(ts(r.received_at.and_utc())),
        method: r.method,
        path: r.path,
        request_headers,
        request_body: r.request_body,
        request_body_truncated: r.request_truncated,
        status: u32::try_from(r.status).unwrap_or(0),
        response_body: r.response_body,
        response_body_truncated: r.response_truncated,
        duration_ms: r.duration_us as f64 / 1000.0,
    }
}

fn counts_pb(c: &Counts) -> pb::RunCounts {
    pb::RunCounts {
        created: c.created,
        updated: c.updated,
        removed: c.removed,
        pending_seat: c.pending_seat,
        held: c.held,
        errors: c.errors,
        unchanged: c.unchanged,
        kept: c.kept,
    }
}

fn trigger_pb(t: Trigger) -> pb::RunTrigger {
    match t {
        Trigger::ScimPush => pb::RunTrigger::ScimPush,
        Trigger::Interval => pb::RunTrigger::Interval,
        Trigger::SyncNow => pb::RunTrigger::SyncNow,
        Trigger::SettingsChange => pb::RunTrigger::SettingsChange,
        Trigger::QueuedChanges => pb::RunTrigger::QueuedChanges,
        Trigger::AuthorityChange => pb::RunTrigger::AuthorityChange,
        Trigger::Deletion => pb::RunTrigger::DirectoryDeletion,
    }
}

fn phase_pb(p: Phase) -> pb::RunPhase {
    match p {
        Phase::Starting => pb::RunPhase::Unspecified,
        Phase::WaitingForLease => pb::RunPhase::WaitingForLease,
        Phase::Listing => pb::RunPhase::Listing,
        Phase::Reconciling => pb::RunPhase::Reconciling,
        Phase::Removing => pb::RunPhase::Removing,
        Phase::Done => pb::RunPhase::Done,
    }
}

fn state_pb(s: RunState) -> pb::RunState {
    match s {
        RunState::Running => pb::RunState::Running,
        RunState::Succeeded => pb::RunState::Succeeded,
        RunState::Held => pb::RunState::Held,
        RunState::Failed => pb::RunState::Failed,
        RunState::Rejected => pb::RunState::Rejected,
    }
}

/// A run for the wire, without items.
pub fn run_pb(r: SyncRun) -> pb::SyncRun {
    let totals = r.totals();
    pb::SyncRun {
        counts: Some(counts_pb(&totals)),
        orgs: r
            .orgs
            .iter()
            .map(|o| pb::OrgRunResult {
                org_id: o.org_id.clone(),
                counts: Some(counts_pb(&o.counts)),
                brake_held: o.brake_held,
                removals_decided: o.removals_decided,
                members_at_check: o.members_at_check,
                removed_in_window: o.removed_in_window,
                held_in_run: o.held_in_run.clone(),
            })
            .collect(),
        id: r.id,
        directory_id: r.directory_id,
        trigger: trigger_pb(r.trigger) as i32,
        state: state_pb(r.state) as i32,
        outcome: r.outcome,
        error: r.error,
        processed: r.processed,
        total: r.total,
        items: Vec::new(),
        items_total: 0,
        start_time: Some(ts(r.started_at)),
        end_time: r.ended_at.map(ts),
        decided_by: r.decided_by,
        phase: phase_pb(r.phase) as i32,
        listing_held: r.held_listing.is_some(),
        actor: r.actor,
    }
}

/// A run with its items.
pub fn run_view_pb(v: RunView) -> pb::SyncRun {
    let mut out = run_pb(v.run);
    out.items = v
        .items
        .into_iter()
        .map(|i| pb::RunItem {
            org_id: i.org_id,
            user_ref: i.user_ref,
            email: i.email,
            kind: item_kind_pb(i.kind) as i32,
            detail: i.detail,
            member_id: i.member_id,
            display_name: i.display_name,
        })
        .collect();
    out.items_total = v.items_total;
    out
}

/// A status for the wire.
pub fn status_pb(s: StatusView, scim_base_url: String) -> pb::DirectoryStatus {
    pb::DirectoryStatus {
        last_error: s.directory.last_error.clone(),
        directory: Some(directory_pb(s.directory, scim_base_url)),
        last_run: s.last_run.map(run_pb),
        users: s.counts.0,
        active_users: s.counts.1,
        groups: s.counts.2,
        queued: s.queued,
        held_runs: s.held_runs,
    }
}

/// A mirror user for the wire.
pub fn user_pb(u: MirrorUser) -> pb::DirectoryUser {
    pb::DirectoryUser {
        id: u.id,
        directory_id: u.directory_id,
        user_name: u.user_name,
        external_id: u.external_id.unwrap_or_default(),
        email: u.email.unwrap_or_default(),
        display_name: u.display_name,
        active: u.active,
        raw_json: u.attributes_json,
        create_time: Some(ts(u.created_at)),
        update_time: Some(ts(u.updated_at)),
    }
}

/// A mirror group for the wire.
pub fn group_pb(g: MirrorGroup) -> pb::DirectoryGroup {
    pb::DirectoryGroup {
        id: g.id,
        directory_id: g.directory_id,
        display_name: g.display_name,
        external_id: g.external_id.unwrap_or_default(),
        member_count: g.member_count,
        create_time: Some(ts(g.created_at)),
        update_time: Some(ts(g.updated_at)),
    }
}

/// Group references for the wire.
pub fn group_refs(groups: Vec<(String, String)>) -> Vec<common::GroupRef> {
    groups.into_iter().map(|(id, name)| common::GroupRef { id, name }).collect()
}

/// An event for the wire.
pub fn event_pb(e: DirEvent) -> pb::DirectoryEvent {
    pb::DirectoryEvent {
        sequence: e.seq,
        id: e.id,
        directory_id: e.directory_id,
        r#type: e.event_type,
        resource_id: e.resource_id,
        member_id: e.member_id,
        data_json: e.data_json,
        previous_json: e.previous_json,
        time: Some(ts(e.created_at)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(e: SyncError) -> &'static str {
        match e {
            SyncError::InvalidArgument { rule, .. } => rule,
            other => panic!("not an invalid argument: {other:?}"),
        }
    }

    #[test]
    fn a_kind_comes_by_name_or_by_its_legacy_enum_value() {
        let okta = Kind::from_name("okta").unwrap();
        assert_eq!(kind(pb::DirectoryKind::Okta as i32, "").unwrap(), okta);
        assert_eq!(kind(0, "okta").unwrap(), okta);
        assert_eq!(kind(0, " Okta ").unwrap(), okta);
        assert_eq!(kind(pb::DirectoryKind::Okta as i32, "okta").unwrap(), okta);
        assert_eq!(kind(pb::DirectoryKind::Scim as i32, "").unwrap(), Kind::SCIM);
        assert_eq!(rule(kind(pb::DirectoryKind::Okta as i32, "google").unwrap_err()), "kind_conflict");
        assert_eq!(rule(kind(0, "").unwrap_err()), "kind_required");
        assert_eq!(rule(kind(0, "okta2").unwrap_err()), "kind_unknown");
        assert_eq!(rule(kind(99, "").unwrap_err()), "kind_unknown");
        for k in Kind::all() {
            assert_eq!(kind(0, k.name()).unwrap(), k);
            assert_eq!(kind(kind_pb(k) as i32, k.name()).unwrap(), k);
            let info = kind_info_pb(k);
            assert_eq!((info.name.as_str(), info.pulled), (k.name(), k.is_pull()));
        }
    }
}
