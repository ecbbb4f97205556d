//! One org's part of a run: people's subjects go to policy in batches; what changes
//! goes to membership (or, for a preview, is collected for membership's dry run);
//! removals, and demotions out of the guardian role, wait for the end of the run and
//! pass the mass-removal brake together.

use muster_proto::common::v1 as common;
use muster_proto::membership::v1 as mpb;
use muster_proto::policy::v1 as ppb;

use crate::domain::brake::Brake;
use crate::domain::directory::Directory;
use crate::domain::evidence::{Verdict, predicted_at_login};
use crate::domain::mirror::apply_key;
use crate::domain::run::{ItemKind, Phase, RunItem, SyncRun};
use crate::error::SyncError;
use crate::store::{Reservation, SyncStore};
use crate::upstream::OrgTarget;

use super::Engine;
use super::people::Person;

/// A person with policy's decision.
#[derive(Clone, Debug)]
pub(crate) struct Decided {
    /// Who.
    pub person: Person,
    /// What policy said.
    pub decision: ppb::Decision,
    /// Sent to membership only so it learns the person's identities (no change).
    pub learning: bool,
}

impl Decided {
    /// Their member now.
    pub fn current(&self) -> Option<&mpb::Member> {
        self.person.member.as_ref()
    }

    /// The action decided.
    pub fn action(&self) -> ppb::Action {
        ppb::Action::try_from(self.decision.action).unwrap_or(ppb::Action::Unspecified)
    }

    /// Whether it takes the guardian role away from a member who holds it.
    fn demotes(&self, guardian: &str) -> bool {
        !guardian.is_empty()
            && self.action() == ppb::Action::Update
            && self.current().is_some_and(|m| m.role == guardian)
            && self.decision.role != guardian
    }

    fn desired(&self) -> mpb::DesiredMember {
        mpb::DesiredMember {
            identity: Some(self.person.identity()),
            action: if self.learning { ppb::Action::None as i32 } else { self.decision.action },
            role: self.decision.role.clone(),
            seat_tier: self.decision.seat_tier.clone(),
            reasons: self.decision.reasons.clone(),
            member_id: self.current().map(|m| m.id.clone()).unwrap_or_default(),
            also_known_as: self.person.also_known_as(),
        }
    }
}

/// Whether a pass writes, or collects what it would write (a preview).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Through membership's Apply.
    Live,
    /// Into membership's dry run (PreviewApply), all at once at the end.
    Preview,
}

/// One org's pass of a run.
#[derive(Debug)]
pub(crate) struct OrgPass {
    /// The org.
    pub org: OrgTarget,
    /// What policy decides with.
    pub trigger: common::Trigger,
    /// Unsaved settings to decide with (previews).
    pub proposed: Option<ppb::SettingsInput>,
    /// The directory whose run applies (recorded on new members).
    pub directory_id: String,
    /// The brake that applies.
    pub brake: Brake,
    /// Every directory of the parent.
    pub dirs: Vec<Directory>,
    /// Live or preview.
    pub mode: Mode,
    removals: Vec<Decided>,
    batch_no: u64,
    /// Preview: the batches it would apply, with the decisions behind each item.
    pub collected: Vec<(mpb::ApplyRequest, Vec<Decided>)>,
    /// Preview: whether the brake would hold the removals.
    pub would_hold: bool,
    /// Preview: every person decided.
    pub considered: i64,
    /// Members of the org seen, and of them active guardians.
    pub members_seen: i64,
    /// Active members in the guardian role seen.
    pub guardians_seen: i64,
    /// People no directory may remove, kept (counted on the run too).
    pub kept: Vec<Person>,
}

impl OrgPass {
    /// A pass for `org`, applying as directory `directory_id` under `brake`.
    pub fn new(
        org: OrgTarget,
        trigger: common::Trigger,
        proposed: Option<ppb::SettingsInput>,
        directory_id: String,
        brake: Brake,
        dirs: Vec<Directory>,
        mode: Mode,
    ) -> Self {
        Self {
            org,
            trigger,
            proposed,
            directory_id,
            brake,
            dirs,
            mode,
            removals: Vec::new(),
            batch_no: 0,
            collected: Vec::new(),
            would_hold: false,
            considered: 0,
            members_seen: 0,
            guardians_seen: 0,
            kept: Vec::new(),
        }
    }

    /// Notes a page of the org's members (for counts a preview reports).
    pub fn saw_members(&mut self, page: &[mpb::Member]) {
        self.members_seen += page.len() as i64;
        self.guardians_seen += page
            .iter()
            .filter(|m| m.role == self.org.guardian_role && m.status == mpb::MemberStatus::Active as i32)
            .count() as i64;
    }
}

fn item(org_id: &str, d: &Decided, kind: ItemKind, detail: String) -> RunItem {
    RunItem {
        org_id: org_id.to_string(),
        user_ref: d.person.user_ref(),
        email: d.person.email(),
        display_name: d.person.display_name(),
        kind,
        detail,
        member_id: d.current().map(|m| m.id.clone()).unwrap_or_default(),
    }
}

fn current_of(m: &mpb::Member) -> ppb::CurrentMembership {
    ppb::CurrentMembership { role: m.role.clone(), seat_tier: m.seat_tier.clone(), source: m.source }
}

impl Engine {
    /// Decides a batch of people for the pass's org. People no directory may say
    /// anything of are not sent: members among them are kept as they are.
    async fn decide(
        &self,
        run: &mut SyncRun,
        pass: &mut OrgPass,
        people: Vec<Person>,
    ) -> Result<Vec<Decided>, SyncError> {
        let mut asked = Vec::new();
        let mut subjects = Vec::new();
        for mut p in people {
            if pass.trigger == common::Trigger::Login {
                // A jit preview: what each person's next login would find.
                p.verdict = predicted_at_login(&pass.dirs, &p.evidence);
            }
            let subject = match &p.verdict {
                Verdict::Assigned { groups } => Some(ppb::Subject {
                    user_ref: p.user_ref(),
                    assigned: true,
                    groups: groups
                        .iter()
                        .map(|(id, name)| common::GroupRef { id: id.clone(), name: name.clone() })
                        .collect(),
                    current: p.member.as_ref().map(current_of),
                }),
                Verdict::Gone { .. } => p.member.as_ref().map(|m| ppb::Subject {
                    user_ref: p.user_ref(),
                    assigned: false,
                    groups: Vec::new(),
                    current: Some(current_of(m)),
                }),
                Verdict::Unknown { .. } => None,
            };
            match subject {
                Some(s) => {
                    subjects.push(s);
                    asked.push(p);
                }
                None if p.member.is_some() => {
                    run.org_mut(&pass.org.org_id).counts.kept += 1;
                    pass.kept.push(p);
                }
                None => {}
            }
        }
        if subjects.is_empty() {
            return Ok(Vec::new());
        }
        let n = subjects.len();
        let request = ppb::DecideRequest {
            org_id: pass.org.org_id.clone(),
            trigger: pass.trigger as i32,
            subjects,
            proposed_settings: pass.proposed.clone(),
        };
        let decisions = self.patient(run, || self.up.decide(request.clone())).await?;
        if decisions.len() != n {
            return Err(SyncError::Upstream {
                service: "policy",
                status: tonic::Status::internal(format!("Decide answered {} of {n} subjects", decisions.len())),
            });
        }
        pass.considered += n as i64;
        Ok(asked
            .into_iter()
            .zip(decisions)
            .map(|(person, decision)| Decided { person, decision, learning: false })
            .collect())
    }

    /// Decides a batch of people and applies what changes now; removals (and guardian
    /// demotions) wait for [`Engine::settle`]. `seeds` is how many seeds the batch came
    /// from (the run's progress counts those, people left out included).
    pub(crate) async fn handle(
        &self,
        run: &mut SyncRun,
        pass: &mut OrgPass,
        people: Vec<Person>,
        seeds: usize,
    ) -> Result<(), SyncError> {
        let n = seeds as i64;
        let decided = self.decide(run, pass, people).await?;
        let mut apply = Vec::new();
        let mut unchanged = 0;
        for mut d in decided {
            match d.action() {
                ppb::Action::Remove => pass.removals.push(d),
                ppb::Action::Update if d.demotes(&pass.org.guardian_role) => pass.removals.push(d),
                ppb::Action::Provision | ppb::Action::Update => apply.push(d),
                _ if pass.mode == Mode::Live && d.person.needs_learning() => {
                    d.learning = true;
                    apply.push(d);
                }
                _ => unchanged += 1,
            }
        }
        run.org_mut(&pass.org.org_id).counts.unchanged += unchanged;
        self.apply_decided(run, pass, "apply", apply).await?;
        run.processed += n;
        if pass.mode == Mode::Live {
            self.save(run).await?;
        }
        Ok(())
    }

    /// Applies one batch (or, previewing, collects it); returns how many members it removed.
    async fn apply_decided(
        &self,
        run: &mut SyncRun,
        pass: &mut OrgPass,
        phase: &str,
        batch: Vec<Decided>,
    ) -> Result<i64, SyncError> {
        if batch.is_empty() {
            return Ok(0);
        }
        let org_id = pass.org.org_id.clone();
        let request = mpb::ApplyRequest {
            org_id: org_id.clone(),
            idempotency_key: apply_key(&run.id, &org_id, phase, pass.batch_no),
            directory_id: pass.directory_id.clone(),
            actor: Some(common::Actor { kind: Some(common::actor::Kind::SyncRunId(run.id.clone())) }),
            items: batch.iter().map(Decided::desired).collect(),
        };
        pass.batch_no += 1;
        if pass.mode == Mode::Preview {
            pass.collected.push((request, batch));
            return Ok(0);
        }
        let response = self.patient(run, || self.up.apply(request.clone())).await?;
        let mut items = Vec::new();
        let mut removed = 0;
        let run_id = run.id.clone();
        let counts = &mut run.org_mut(&org_id).counts;
        for (i, d) in batch.iter().enumerate() {
            let Some(r) = response.results.get(i) else {
                counts.errors += 1;
                items.push(item(&org_id, d, ItemKind::Error, "membership gave no result for this person".into()));
                continue;
            };
            match mpb::ApplyOutcome::try_from(r.outcome).unwrap_or(mpb::ApplyOutcome::Unspecified) {
                mpb::ApplyOutcome::Applied => match d.action() {
                    _ if d.learning => counts.unchanged += 1,
                    ppb::Action::Provision => counts.created += 1,
                    ppb::Action::Remove => {
                        counts.removed += 1;
                        removed += 1;
                    }
                    _ if d.demotes(&pass.org.guardian_role) => {
                        counts.updated += 1;
                        removed += 1;
                    }
                    _ => counts.updated += 1,
                },
                mpb::ApplyOutcome::Unchanged => counts.unchanged += 1,
                mpb::ApplyOutcome::PendingSeat => counts.pending_seat += 1,
                mpb::ApplyOutcome::HeldGuardian => {
                    counts.held += 1;
                    items.push(item(&org_id, d, ItemKind::HeldGuardian, d.decision.reasons.join("; ")));
                }
                _ => {
                    counts.errors += 1;
                    items.push(item(&org_id, d, ItemKind::Error, r.error.clone()));
                }
            }
            if !r.error.is_empty() && r.outcome != mpb::ApplyOutcome::Error as i32 {
                tracing::info!(run = %run_id, org = %org_id, note = %r.error, "membership noted");
            }
        }
        self.store.add_items(&run.id, items).await?;
        Ok(removed)
    }

    /// Applies the pass's removals, unless the brake holds them. Removals count over
    /// the brake's window across runs: over the limit, this run holds them (or, when
    /// another run already holds the org's removals, they join that run). `bypass`:
    /// an administrator approved them.
    pub(crate) async fn settle(&self, run: &mut SyncRun, pass: &mut OrgPass, bypass: bool) -> Result<(), SyncError> {
        let removals = std::mem::take(&mut pass.removals);
        if removals.is_empty() {
            return Ok(());
        }
        let org_id = pass.org.org_id.clone();
        let n = removals.len() as i64;
        run.org_mut(&org_id).removals_decided += n;
        let chunk = self.config.batch_size.max(1);
        if pass.mode == Mode::Preview {
            if pass.trigger != common::Trigger::Login {
                let members = self.patient(run, || self.up.member_count(&org_id)).await?;
                let since = chrono::Utc::now()
                    - chrono::Duration::seconds(i64::try_from(pass.brake.window_secs).unwrap_or(3600));
                let recent = self.store.removals_since(&org_id, since).await?;
                pass.would_hold = self.store.open_hold(&org_id).await?.is_some()
                    || pass.brake.holds_with(recent.max(0) as u64, n as u64, members.max(0) as u64);
            }
            for batch in chunked(removals, chunk) {
                self.apply_decided(run, pass, "remove", batch).await?;
            }
            return Ok(());
        }
        if bypass {
            run.phase = Phase::Removing;
            for batch in chunked(removals, chunk) {
                self.apply_decided(run, pass, "remove", batch).await?;
                self.save(run).await?;
            }
            return Ok(());
        }
        let members = self.patient(run, || self.up.member_count(&org_id)).await?;
        run.org_mut(&org_id).members_at_check = members;
        match self.store.reserve_removals(&org_id, &run.id, n, members, pass.brake).await? {
            Reservation::Granted { recent } => {
                run.org_mut(&org_id).removed_in_window = recent;
                run.phase = Phase::Removing;
                let mut removed = 0;
                for batch in chunked(removals, chunk) {
                    removed += self.apply_decided(run, pass, "remove", batch).await?;
                    self.save(run).await?;
                }
                self.store.settle_removals(&org_id, &run.id, removed).await?;
            }
            Reservation::Held { recent } => {
                tracing::warn!(run = %run.id, org = %org_id, removals = n, recent, members, "mass-removal brake holds the run");
                let o = run.org_mut(&org_id);
                o.brake_held = true;
                o.removed_in_window = recent;
                o.counts.held += n;
                let items = removals
                    .iter()
                    .map(|d| item(&org_id, d, ItemKind::WouldRemove, d.decision.reasons.join("; ")))
                    .collect();
                self.store.add_items(&run.id, items).await?;
                self.save(run).await?;
            }
            Reservation::Join { run_id } => {
                tracing::warn!(run = %run.id, org = %org_id, held_run = %run_id, removals = n, "removals join a run the brake holds");
                let o = run.org_mut(&org_id);
                o.held_in_run = run_id.clone();
                o.counts.held += n;
                let items = removals
                    .iter()
                    .map(|d| item(&org_id, d, ItemKind::WouldRemove, d.decision.reasons.join("; ")))
                    .collect();
                self.store.add_items_once(&run_id, items).await?;
                self.runs_changed();
                self.save(run).await?;
            }
        }
        Ok(())
    }
}

fn chunked<T>(items: Vec<T>, size: usize) -> Vec<Vec<T>> {
    let mut out = Vec::new();
    let mut it = items.into_iter().peekable();
    while it.peek().is_some() {
        out.push(it.by_ref().take(size).collect());
    }
    out
}
