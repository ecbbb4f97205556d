//! Previews of a settings change: the pass a run makes (every member, every user of
//! the parent's directories, the same people and the same decisions), with the
//! proposed settings, and membership's dry run (`PreviewApply`) in place of Apply, so
//! seats, the guardian guard and identities are settled by the code that settles them
//! for real. For `jit` orgs each person is decided as their next login would be, from
//! what the directories say of them.

use std::collections::HashSet;

use muster_proto::common::v1 as common;
use muster_proto::directory::v1 as pb;
use muster_proto::membership::v1 as mpb;
use muster_proto::policy::v1 as ppb;

use crate::domain::directory::Directory;
use crate::domain::run::{SyncRun, Trigger};
use crate::error::SyncError;
use crate::upstream::OrgTarget;

use super::Engine;
use super::reconcile::{Decided, Mode, OrgPass};

/// Who is saving the settings, for the guardian warning.
#[derive(Clone, Debug, Default)]
pub struct Acting {
    /// Their member id, when known.
    pub member_id: String,
    /// Or how the calling application names them (a member id or an email).
    pub name: String,
}

impl Acting {
    fn is(&self, m: &mpb::Member) -> bool {
        let name = self.name.trim();
        (!self.member_id.is_empty() && m.id == self.member_id)
            || (!name.is_empty()
                && (m.id == name || m.user.as_ref().is_some_and(|u| u.email.eq_ignore_ascii_case(name))))
    }
}

fn label(g: &common::GroupRef) -> String {
    if g.name.is_empty() { format!("id {}", g.id) } else { format!("\"{}\"", g.name) }
}

fn change_of(d: &Decided) -> pb::PreviewChange {
    let current = d.current();
    pb::PreviewChange {
        user_ref: d.person.user_ref(),
        email: d.person.email(),
        display_name: d.person.display_name(),
        from_role: current.map(|m| m.role.clone()).unwrap_or_default(),
        to_role: d.decision.role.clone(),
        from_seat_tier: current.map(|m| m.seat_tier.clone()).unwrap_or_default(),
        to_seat_tier: String::new(),
        reasons: d.decision.reasons.clone(),
    }
}

impl Engine {
    /// What saving `proposed` for `org_id` would do; saves nothing.
    pub async fn preview(
        &self,
        org_id: &str,
        proposed: ppb::SettingsInput,
        acting: Acting,
    ) -> Result<pb::PreviewSettingsResponse, SyncError> {
        let (org, _) = self.up.org(org_id).await?;
        let product = self.up.product(org.product).await?;
        let dirs = self.store.parent_directories(&org.parent_id).await?;
        let mode = ppb::ProvisioningMode::try_from(proposed.mode).unwrap_or(ppb::ProvisioningMode::Unspecified);
        let mut out = pb::PreviewSettingsResponse { org_id: org_id.to_string(), ..Default::default() };
        let trigger = match mode {
            ppb::ProvisioningMode::Scim => common::Trigger::DirectorySync,
            ppb::ProvisioningMode::Jit => common::Trigger::Login,
            _ => {
                out.warnings.push(
                    "manual provisioning: directories and logins change nobody; only administrators add and remove members"
                        .into(),
                );
                return Ok(out);
            }
        };
        out.at_next_login = trigger == common::Trigger::Login;
        // A scratch run: previews share the run's path but record nothing.
        let mut scratch = SyncRun::new(
            "preview".into(),
            dirs.first().map(|d| d.id.as_str()).unwrap_or_default(),
            Trigger::SettingsChange,
            "preview",
        );
        let brake = dirs.first().map(|d| d.brake).unwrap_or_default();
        let target = OrgTarget {
            org_id: org_id.to_string(),
            settings_version: 0,
            settings: ppb::Settings::default(),
            guardian_role: product.guardian_role.clone(),
        };
        let mut pass = OrgPass::new(
            target,
            trigger,
            Some(proposed.clone()),
            scratch.directory_id.clone(),
            brake,
            dirs.clone(),
            Mode::Preview,
        );
        let (collected, answers) = self.dry_pass(&mut scratch, &mut pass).await?;
        out.considered = pass.considered;

        let guardian = product.guardian_role.as_str();
        let mut guardians_after = pass.guardians_seen;
        let mut guard_held = Vec::new();
        for ((_, decided), answer) in collected.iter().zip(&answers) {
            for (i, d) in decided.iter().enumerate() {
                let result = answer.results.get(i);
                let outcome = result
                    .and_then(|r| mpb::ApplyOutcome::try_from(r.outcome).ok())
                    .unwrap_or(mpb::ApplyOutcome::Unspecified);
                let after = result.and_then(|r| r.member.as_ref());
                let was_guardian = d.current().is_some_and(|m| m.role == guardian);
                let is_acting = d.current().is_some_and(|m| acting.is(m));
                let mut change = change_of(d);
                match d.action() {
                    ppb::Action::Remove => {
                        change.to_role.clear();
                        out.acting_member_loses_guardian |= is_acting && was_guardian;
                        match outcome {
                            mpb::ApplyOutcome::HeldGuardian => guard_held.push(change.email.clone()),
                            _ => {
                                guardians_after -= i64::from(was_guardian);
                                out.removed.push(change);
                            }
                        }
                    }
                    ppb::Action::Provision => {
                        // As they end up: a seat freed later in the run may have reached them.
                        let waiting = match after {
                            Some(m) => m.status == mpb::MemberStatus::PendingSeat as i32,
                            None => outcome == mpb::ApplyOutcome::PendingSeat,
                        };
                        if outcome == mpb::ApplyOutcome::Error {
                            out.warnings.push(format!(
                                "{} could not be added: {}",
                                change.email,
                                result.map(|r| r.error.as_str()).unwrap_or("no answer")
                            ));
                        } else if waiting {
                            change.to_seat_tier = after.map(|m| m.wanted_seat_tier.clone()).unwrap_or_default();
                            out.pending.push(change);
                        } else {
                            change.to_seat_tier = after.map(|m| m.seat_tier.clone()).unwrap_or_default();
                            guardians_after += i64::from(d.decision.role == guardian);
                            out.added.push(change);
                        }
                    }
                    ppb::Action::Update => {
                        let demoted = was_guardian && d.decision.role != guardian;
                        out.acting_member_loses_guardian |= is_acting && demoted;
                        if outcome == mpb::ApplyOutcome::HeldGuardian {
                            guard_held.push(change.email.clone());
                            continue;
                        }
                        guardians_after += i64::from(!was_guardian && d.decision.role == guardian);
                        guardians_after -= i64::from(demoted);
                        let to_tier = after.map(|m| m.seat_tier.clone()).unwrap_or_default();
                        let waits_for = after.map(|m| m.wanted_seat_tier.clone()).unwrap_or_default();
                        if change.from_role != change.to_role {
                            let mut c = change.clone();
                            c.to_seat_tier = to_tier.clone();
                            out.re_roled.push(c);
                        }
                        if !waits_for.is_empty() {
                            change.to_seat_tier = waits_for;
                            out.pending.push(change);
                        } else if to_tier != change.from_seat_tier {
                            change.to_seat_tier = to_tier;
                            out.re_tiered.push(change);
                        }
                    }
                    _ => {}
                }
            }
        }
        self.unmatched_groups(&dirs, &proposed, &mut out).await?;
        let when = if out.at_next_login { " at your next login" } else { "" };
        out.would_trip_brake = pass.would_hold;
        if out.would_trip_brake {
            out.warnings.push(format!(
                "{} of {} members would be removed: more than the directory's mass-removal brake allows; the run would be held for approval",
                out.removed.len(),
                pass.members_seen
            ));
        }
        if out.acting_member_loses_guardian {
            out.warnings.push(format!("you would lose the {guardian} role{when}"));
        } else if out.at_next_login && pass.kept.iter().any(|p| p.member.as_ref().is_some_and(|m| acting.is(m))) {
            out.warnings.push(
                "you are in no directory of the parent: your next login decides your role from what the IdP sends then"
                    .into(),
            );
        }
        if !guard_held.is_empty() {
            out.org_left_without_guardian = true;
            out.warnings.push(format!(
                "the org would have no {guardian}: the guardian guard would keep {} {}",
                guard_held.join(", "),
                if out.at_next_login { "at their next login" } else { "and hold that change" }
            ));
        } else if guardians_after <= 0 && (pass.members_seen > 0 || !out.added.is_empty()) {
            out.org_left_without_guardian = true;
            out.warnings.push(format!("the org would have no member in the {guardian} role"));
        }
        if out.at_next_login && !pass.kept.is_empty() {
            out.warnings.push(format!(
                "{} members are in no directory of the parent: their next login decides, from what the IdP sends then",
                pass.kept.len()
            ));
        }
        Ok(out)
    }

    /// Runs a pass in preview mode to its end and has membership dry-run what it would
    /// apply: the batches with their decisions, and membership's answer to each.
    async fn dry_pass(
        &self,
        scratch: &mut SyncRun,
        pass: &mut OrgPass,
    ) -> Result<(Vec<(mpb::ApplyRequest, Vec<Decided>)>, Vec<mpb::ApplyResponse>), SyncError> {
        self.full_passes(scratch, pass).await?;
        self.settle(scratch, pass, false).await?;
        let collected = std::mem::take(&mut pass.collected);
        let requests: Vec<mpb::ApplyRequest> = collected.iter().map(|(r, _)| r.clone()).collect();
        let answers = if requests.is_empty() { Vec::new() } else { self.up.preview_apply(requests).await? };
        Ok((collected, answers))
    }

    /// Who `dir` having `authority` would remove, per scim org of its parent (the run
    /// that follows the change, dry).
    pub async fn preview_authority(
        &self,
        dir: &Directory,
        authority: crate::domain::directory::Authority,
    ) -> Result<Vec<pb::AuthorityPreview>, SyncError> {
        let mut dirs = self.store.parent_directories(&dir.parent_id).await?;
        for d in dirs.iter_mut().filter(|d| d.id == dir.id) {
            d.authority = authority;
        }
        let mut scratch = SyncRun::new("preview".into(), &dir.id, Trigger::AuthorityChange, "preview");
        let mut out = Vec::new();
        for target in self.targets(&mut scratch, &dir.parent_id).await? {
            let org_id = target.org_id.clone();
            let mut pass = OrgPass::new(
                target,
                common::Trigger::DirectorySync,
                None,
                dir.id.clone(),
                dir.brake,
                dirs.clone(),
                Mode::Preview,
            );
            let (collected, answers) = self.dry_pass(&mut scratch, &mut pass).await?;
            let mut org = pb::AuthorityPreview { org_id, removed: Vec::new(), would_trip_brake: pass.would_hold };
            for ((_, decided), answer) in collected.iter().zip(&answers) {
                for (i, d) in decided.iter().enumerate() {
                    let held =
                        answer.results.get(i).is_some_and(|r| r.outcome == mpb::ApplyOutcome::HeldGuardian as i32);
                    if d.action() == ppb::Action::Remove && !held {
                        let mut change = change_of(d);
                        change.to_role.clear();
                        org.removed.push(change);
                    }
                }
            }
            out.push(org);
        }
        Ok(out)
    }

    /// Mapped groups of `proposed` that match no group of the parent's directories.
    async fn unmatched_groups(
        &self,
        dirs: &[Directory],
        proposed: &ppb::SettingsInput,
        out: &mut pb::PreviewSettingsResponse,
    ) -> Result<(), SyncError> {
        let mapped: Vec<common::GroupRef> = proposed
            .role_mappings
            .iter()
            .flat_map(|m| m.groups.iter().cloned())
            .chain(proposed.seat_tier_mappings.iter().flat_map(|m| m.groups.iter().cloned()))
            .collect();
        let ids: Vec<String> = mapped.iter().filter(|g| !g.id.is_empty()).map(|g| g.id.clone()).collect();
        let names: Vec<String> =
            mapped.iter().filter(|g| g.id.is_empty() && !g.name.is_empty()).map(|g| g.name.to_lowercase()).collect();
        let dir_ids = dirs.iter().map(|d| d.id.clone()).collect();
        let (found_ids, found_names) =
            crate::store::SyncStore::existing_groups(&self.store, dir_ids, ids, names).await?;
        let mut seen = HashSet::new();
        for g in mapped {
            let matched =
                if g.id.is_empty() { found_names.contains(&g.name.to_lowercase()) } else { found_ids.contains(&g.id) };
            if !matched && seen.insert((g.id.clone(), g.name.to_lowercase())) {
                out.warnings.push(format!("mapped group {} matches no group of the directory", label(&g)));
                out.unmatched_groups.push(g);
            }
        }
        Ok(())
    }
}
