//! Directory-sync end to end: SCIM pushes over real HTTP land as members through
//! policy and membership over real gRPC; runs, the mass-removal brake, previews,
//! outages and restarts. Waits are on the thing itself (the reconcile queue draining,
//! a run settling, a stream message), never on a clock.

use muster_proto::common::v1 as common;
use muster_proto::directory::v1 as dpb;
use muster_proto::membership::v1 as mpb;
use muster_proto::policy::v1 as ppb;
use muster_runtime::client::{MembershipClient, PolicyClient};
use muster_tests::{DbKind, DirectoryClient, TestCluster};

use super::support::{Scim, admin, named, until};
use serde_json::{Value, json};

on_both_databases! {
    scim_push_provisions_into_every_scim_org => scim_push_provisions_into_every_scim_org;
    deactivation_and_group_removal_remove => deactivation_and_group_removal_remove;
    seats_exhausted_pending_then_active => seats_exhausted_pending_then_active;
    brake_holds_until_approved_or_rejected => brake_holds_until_approved_or_rejected;
    preview_equals_the_result_of_saving => preview_equals_the_result_of_saving;
    dependencies_down_remove_nobody => dependencies_down_remove_nobody;
    restart_between_write_and_reconcile_lands_once => restart_between_write_and_reconcile_lands_once;
    events_resume_exactly_and_tokens_isolate => events_resume_exactly_and_tokens_isolate;
    scim_log_records_only_when_on_with_secrets_stripped => scim_log_records_only_when_on_with_secrets_stripped;
}

/// A running cluster with a parent, its orgs and a SCIM directory.
struct World {
    cluster: TestCluster,
    policy: PolicyClient,
    membership: MembershipClient,
    directory: DirectoryClient,
    parent_id: String,
    dir_id: String,
    scim: Scim,
}

impl World {
    async fn start(kind: DbKind) -> Self {
        let cluster = TestCluster::start(kind).await;
        let mut policy = cluster.policy();
        let membership = cluster.membership();
        let mut directory = cluster.directory();
        let parent = policy
            .create_parent_org(ppb::CreateParentOrgRequest {
                name: "Acme".into(),
                kind: ppb::ParentKind::Enterprise as i32,
            })
            .await
            .unwrap()
            .into_inner();
        let created = directory
            .create_directory(dpb::CreateDirectoryRequest {
                parent_id: parent.id.clone(),
                kind: dpb::DirectoryKind::Scim as i32,
                display_name: "Okta".into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        let dir = created.directory.unwrap();
        assert_eq!(dir.scim_base_url, cluster.scim_url(&dir.id));
        assert!(!created.scim_token.is_empty());
        let scim = Scim { http: reqwest::Client::new(), base: dir.scim_base_url.clone(), token: created.scim_token };
        Self { cluster, policy, membership, directory, parent_id: parent.id, dir_id: dir.id, scim }
    }

    async fn org(&mut self, name: &str, mode: ppb::ProvisioningMode, agm: bool) -> String {
        let org = self
            .policy
            .create_org(ppb::CreateOrgRequest {
                parent_id: self.parent_id.clone(),
                name: name.into(),
                product: ppb::ProductKind::ClaudeEnterpriseSeat as i32,
            })
            .await
            .unwrap()
            .into_inner();
        let (role_mappings, seat_tier_mappings) = if agm {
            (
                vec![
                    ppb::RoleMapping { role: "Owner".into(), groups: vec![named("owners")] },
                    ppb::RoleMapping { role: "Admin".into(), groups: vec![named("admins")] },
                    ppb::RoleMapping { role: "User".into(), groups: vec![named("everyone")] },
                ],
                vec![ppb::SeatTierMapping { seat_tier: "Premium".into(), groups: vec![named("engineering")] }],
            )
        } else {
            (vec![], vec![])
        };
        self.policy
            .update_settings(ppb::UpdateSettingsRequest {
                org_id: org.id.clone(),
                expected_version: 0,
                settings: Some(ppb::SettingsInput {
                    mode: mode as i32,
                    advanced_group_mapping: agm,
                    role_mappings,
                    seat_tier_mappings,
                }),
                actor: admin(),
            })
            .await
            .unwrap();
        org.id
    }

    /// Waits until every queued mirror change is reconciled and no run is in flight.
    async fn settle(&self) {
        let dir = self.dir_id.clone();
        let client = self.directory.clone();
        until("the reconcile queue to drain", || {
            let mut c = client.clone();
            let dir = dir.clone();
            async move {
                let lag = c.get_reconcile_lag(dpb::GetReconcileLagRequest { directory_id: dir.clone() }).await;
                let runs = c
                    .list_sync_runs(dpb::ListSyncRunsRequest {
                        directory_id: dir,
                        page_size: 5,
                        page_token: String::new(),
                    })
                    .await;
                match (lag, runs) {
                    (Ok(l), Ok(r)) => {
                        l.into_inner().queued == 0
                            && r.into_inner().runs.iter().all(|r| r.state != dpb::RunState::Running as i32)
                    }
                    _ => false,
                }
            }
        })
        .await;
    }

    async fn members(&self, org_id: &str) -> Vec<mpb::Member> {
        let mut out = Vec::new();
        let mut token = String::new();
        loop {
            let page = self
                .membership
                .clone()
                .list_members(mpb::ListMembersRequest {
                    org_id: org_id.into(),
                    page_size: 1000,
                    page_token: token,
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner();
            out.extend(page.members);
            if page.next_page_token.is_empty() {
                return out;
            }
            token = page.next_page_token;
        }
    }

    async fn member(&self, org_id: &str, email: &str) -> Option<mpb::Member> {
        self.members(org_id).await.into_iter().find(|m| m.user.as_ref().is_some_and(|u| u.email == email))
    }

    /// Waits until the org has exactly `n` members.
    async fn until_members(&self, org_id: &str, n: usize) {
        until(&format!("{n} members in {org_id}"), || async { self.members(org_id).await.len() == n }).await;
    }

    async fn sync_now(&mut self) -> dpb::SyncRun {
        let mut stream = self
            .directory
            .sync_now(dpb::SyncNowRequest { directory_id: self.dir_id.clone(), wait: true, actor: admin() })
            .await
            .unwrap()
            .into_inner();
        let mut last = None;
        while let Some(p) = stream.message().await.unwrap() {
            let done = p.done;
            last = p.run;
            if done {
                break;
            }
        }
        last.expect("a final run")
    }

    async fn runs(&self) -> Vec<dpb::SyncRun> {
        self.directory
            .clone()
            .list_sync_runs(dpb::ListSyncRunsRequest {
                directory_id: self.dir_id.clone(),
                page_size: 100,
                page_token: String::new(),
            })
            .await
            .unwrap()
            .into_inner()
            .runs
    }

    async fn stop(self) {
        self.cluster.stop().await;
    }
}

async fn scim_push_provisions_into_every_scim_org(kind: DbKind) {
    let mut w = World::start(kind).await;
    let plain = w.org("Plain", ppb::ProvisioningMode::Scim, false).await;
    let mapped = w.org("Mapped", ppb::ProvisioningMode::Scim, true).await;
    let jit = w.org("Jit", ppb::ProvisioningMode::Jit, true).await;

    let ann = w.scim.create_user("ann@acme.io").await;
    let bob = w.scim.create_user("bob@acme.io").await;
    let cid = w.scim.create_user("cid@acme.io").await;
    let admins = w.scim.create_group("admins", &[&ann]).await;
    w.scim.create_group("everyone", &[&ann, &bob]).await;
    w.scim.create_group("engineering", &[&bob]).await;
    w.settle().await;

    // Both scim orgs got them; the jit org was not touched.
    let a = w.member(&plain, "ann@acme.io").await.expect("ann in the plain org");
    assert_eq!((a.role.as_str(), a.status), ("User", mpb::MemberStatus::Active as i32));
    assert_eq!(a.source, common::MemberSource::Directory as i32);
    assert_eq!(a.directory_id, w.dir_id);
    assert_eq!(w.members(&plain).await.len(), 3, "every assigned user, groups or not");
    let a = w.member(&mapped, "ann@acme.io").await.expect("ann in the mapped org");
    assert_eq!(a.role, "Admin");
    let b = w.member(&mapped, "bob@acme.io").await.expect("bob in the mapped org");
    assert_eq!((b.role.as_str(), b.seat_tier.as_str()), ("User", "Premium"));
    assert!(w.member(&mapped, "cid@acme.io").await.is_none(), "cid is in no mapped group");
    assert!(w.members(&jit).await.is_empty(), "jit orgs are not driven by the directory");

    // A role group change re-roles under AGM, not without it.
    w.scim.group_members(&admins, "add", &[&bob]).await;
    w.settle().await;
    assert_eq!(w.member(&mapped, "bob@acme.io").await.unwrap().role, "Admin");
    assert_eq!(w.member(&plain, "bob@acme.io").await.unwrap().role, "User");

    // The mirror shows what the IdP said.
    let detail = w
        .directory
        .get_directory_user(dpb::GetDirectoryUserRequest { directory_id: w.dir_id.clone(), user_id: bob.clone() })
        .await
        .unwrap()
        .into_inner();
    let mut names: Vec<String> = detail.groups.iter().map(|g| g.name.clone()).collect();
    names.sort();
    assert_eq!(names, ["admins", "engineering", "everyone"]);
    assert_eq!(detail.user.unwrap().email, "bob@acme.io");
    let status = w
        .directory
        .get_directory_status(dpb::GetDirectoryStatusRequest { id: w.dir_id.clone() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((status.users, status.groups, status.queued), (3, 3, 0));
    let runs = w.runs().await;
    // Pushes run as scim_push runs; the settings change that put the orgs in scim mode
    // may reconcile first, so either kind may be the one that created the members.
    assert!(runs.iter().any(|r| r.trigger == dpb::RunTrigger::ScimPush as i32));
    let created: i64 = runs.iter().map(|r| r.counts.as_ref().map_or(0, |c| c.created)).sum();
    assert!(created >= 5, "runs created {created}");
    assert!(runs.iter().all(|r| r.state == dpb::RunState::Succeeded as i32), "{runs:?}");
    let _ = cid;
    w.stop().await;
}

async fn deactivation_and_group_removal_remove(kind: DbKind) {
    let mut w = World::start(kind).await;
    let plain = w.org("Plain", ppb::ProvisioningMode::Scim, false).await;
    let mapped = w.org("Mapped", ppb::ProvisioningMode::Scim, true).await;
    let ann = w.scim.create_user("ann@acme.io").await;
    let bob = w.scim.create_user("bob@acme.io").await;
    let everyone = w.scim.create_group("everyone", &[&ann, &bob]).await;
    w.settle().await;
    assert_eq!(w.members(&mapped).await.len(), 2);

    // Leaving the only mapped group removes from the AGM org only.
    w.scim.group_members(&everyone, "remove", &[&bob]).await;
    w.settle().await;
    assert!(w.member(&mapped, "bob@acme.io").await.is_none());
    assert!(w.member(&plain, "bob@acme.io").await.is_some());

    // Deactivation removes everywhere.
    w.scim.set_active(&ann, false).await;
    w.settle().await;
    assert!(w.member(&mapped, "ann@acme.io").await.is_none());
    assert!(w.member(&plain, "ann@acme.io").await.is_none());
    // Deleting the user removes too.
    let (status, _) = w.scim.send(reqwest::Method::DELETE, &format!("/Users/{bob}"), None).await;
    assert_eq!(status, 204);
    w.settle().await;
    assert!(w.members(&plain).await.is_empty());

    // Re-activation brings them back as the same person.
    w.scim.set_active(&ann, true).await;
    w.settle().await;
    assert!(w.member(&plain, "ann@acme.io").await.is_some());
    w.stop().await;
}

async fn seats_exhausted_pending_then_active(kind: DbKind) {
    let mut w = World::start(kind).await;
    let org = w.org("Plain", ppb::ProvisioningMode::Scim, false).await;
    for tier in ["Premium", "Standard"] {
        w.membership
            .set_seats(mpb::SetSeatsRequest {
                org_id: org.clone(),
                seat_tier: tier.into(),
                purchased: Some(if tier == "Premium" { 1 } else { 0 }),
                actor: admin(),
            })
            .await
            .unwrap();
    }
    w.scim.create_user("ann@acme.io").await;
    w.scim.create_user("bob@acme.io").await;
    w.settle().await;
    let members = w.members(&org).await;
    assert_eq!(members.len(), 2, "nobody is dropped for lack of a seat");
    let pending: Vec<_> = members.iter().filter(|m| m.status == mpb::MemberStatus::PendingSeat as i32).collect();
    assert_eq!(pending.len(), 1);

    // More seats, then Sync now: everyone active.
    w.membership
        .set_seats(mpb::SetSeatsRequest {
            org_id: org.clone(),
            seat_tier: "Standard".into(),
            purchased: Some(5),
            actor: admin(),
        })
        .await
        .unwrap();
    let run = w.sync_now().await;
    assert_eq!(run.state, dpb::RunState::Succeeded as i32, "{}", run.outcome);
    assert_eq!(run.trigger, dpb::RunTrigger::SyncNow as i32);
    assert!(run.end_time.is_some());
    let members = w.members(&org).await;
    assert!(members.iter().all(|m| m.status == mpb::MemberStatus::Active as i32), "{members:?}");
    w.stop().await;
}

async fn brake_holds_until_approved_or_rejected(kind: DbKind) {
    let mut w = World::start(kind).await;
    let org = w.org("Plain", ppb::ProvisioningMode::Scim, false).await;
    let mut ids = Vec::new();
    for i in 0..24 {
        ids.push(w.scim.create_user(&format!("u{i:02}@acme.io")).await);
    }
    w.settle().await;
    assert_eq!(w.members(&org).await.len(), 24);

    // Twelve leave in one run: 50% of the org, and at least 10 people.
    let pause = |w: &World, on: bool| {
        let mut d = w.directory.clone();
        let id = w.dir_id.clone();
        async move {
            if on {
                d.pause_directory(dpb::PauseDirectoryRequest { id, actor: None }).await.unwrap();
            } else {
                d.resume_directory(dpb::ResumeDirectoryRequest { id, actor: None }).await.unwrap();
            }
        }
    };
    pause(&w, true).await;
    for id in &ids[..12] {
        w.scim.set_active(id, false).await;
    }
    pause(&w, false).await;
    w.settle().await;
    let held = w.runs().await.into_iter().find(|r| r.state == dpb::RunState::Held as i32).expect("a held run");
    assert_eq!(w.members(&org).await.len(), 24, "nothing removed while held");
    let shown =
        w.directory.get_sync_run(dpb::GetSyncRunRequest { run_id: held.id.clone() }).await.unwrap().into_inner();
    let would: Vec<_> = shown.items.iter().filter(|i| i.kind == dpb::RunItemKind::WouldRemove as i32).collect();
    assert_eq!(would.len(), 12);
    assert!(shown.orgs.iter().any(|o| o.org_id == org && o.brake_held && o.members_at_check == 24));

    // Approve: the removals land.
    let approved = w
        .directory
        .approve_run(dpb::ApproveRunRequest { run_id: held.id.clone(), actor: admin() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(approved.state, dpb::RunState::Running as i32);
    w.until_members(&org, 12).await;
    w.settle().await;
    let done = w.directory.get_sync_run(dpb::GetSyncRunRequest { run_id: held.id.clone() }).await.unwrap().into_inner();
    assert_eq!(done.state, dpb::RunState::Succeeded as i32, "{}", done.outcome);
    assert_eq!(done.counts.unwrap().removed, 12);
    assert_eq!(done.decided_by, "admin:tester");
    let err =
        w.directory.approve_run(dpb::ApproveRunRequest { run_id: held.id.clone(), actor: admin() }).await.unwrap_err();
    assert_eq!(muster_runtime::status::rule_of(&err).as_deref(), Some("run_not_held"));

    // Ten more leave at once (10 of 12): held again; rejected, nobody removed.
    pause(&w, true).await;
    for id in &ids[12..22] {
        w.scim.set_active(id, false).await;
    }
    pause(&w, false).await;
    w.settle().await;
    let held = w.runs().await.into_iter().find(|r| r.state == dpb::RunState::Held as i32).expect("held again");
    let rejected = w
        .directory
        .reject_run(dpb::RejectRunRequest { run_id: held.id.clone(), actor: admin() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(rejected.state, dpb::RunState::Rejected as i32);
    assert_eq!(w.members(&org).await.len(), 12);
    w.stop().await;
}

async fn preview_equals_the_result_of_saving(kind: DbKind) {
    let mut w = World::start(kind).await;
    let org = w.org("Plain", ppb::ProvisioningMode::Scim, false).await;
    let ann = w.scim.create_user("ann@acme.io").await;
    let bob = w.scim.create_user("bob@acme.io").await;
    let cid = w.scim.create_user("cid@acme.io").await;
    w.scim.create_group("admins", &[&ann]).await;
    w.scim.create_group("everyone", &[&ann, &bob]).await;
    w.scim.create_group("engineering", &[&bob]).await;
    w.settle().await;
    assert_eq!(w.members(&org).await.len(), 3);
    let cid_member = w.member(&org, "cid@acme.io").await.unwrap();

    // Turn on AGM: ann -> Admin, bob stays User with Premium, cid (no mapped group) removed.
    let proposed = ppb::SettingsInput {
        mode: ppb::ProvisioningMode::Scim as i32,
        advanced_group_mapping: true,
        role_mappings: vec![
            ppb::RoleMapping { role: "Admin".into(), groups: vec![named("admins")] },
            ppb::RoleMapping { role: "User".into(), groups: vec![named("everyone")] },
            ppb::RoleMapping { role: "Owner".into(), groups: vec![named("no-such-group")] },
        ],
        seat_tier_mappings: vec![ppb::SeatTierMapping {
            seat_tier: "Premium".into(),
            groups: vec![named("engineering")],
        }],
    };
    let preview = w
        .directory
        .preview_settings(dpb::PreviewSettingsRequest {
            org_id: org.clone(),
            settings: Some(proposed.clone()),
            acting_member_id: cid_member.id.clone(),
            actor: None,
        })
        .await
        .unwrap()
        .into_inner();
    let refs = |v: &[dpb::PreviewChange]| {
        let mut r: Vec<String> = v.iter().map(|c| c.email.clone()).collect();
        r.sort();
        r
    };
    assert_eq!(refs(&preview.removed), ["cid@acme.io"]);
    assert_eq!(refs(&preview.re_roled), ["ann@acme.io"]);
    assert!(preview.added.is_empty());
    assert_eq!(preview.unmatched_groups.len(), 1);
    assert_eq!(preview.unmatched_groups[0].name, "no-such-group");
    // Nothing was saved.
    assert_eq!(w.members(&org).await.len(), 3);
    let before: Vec<(String, String, String)> =
        w.members(&org).await.into_iter().map(|m| (m.user.unwrap().email, m.role, m.seat_tier)).collect();

    // Save, then let the settings change reconcile (the worker notices the new version).
    let current = w.policy.get_settings(ppb::GetSettingsRequest { org_id: org.clone() }).await.unwrap().into_inner();
    w.policy
        .update_settings(ppb::UpdateSettingsRequest {
            org_id: org.clone(),
            expected_version: current.version,
            settings: Some(proposed),
            actor: admin(),
        })
        .await
        .unwrap();
    w.until_members(&org, 2).await;
    w.settle().await;
    let after: Vec<(String, String, String)> =
        w.members(&org).await.into_iter().map(|m| (m.user.unwrap().email, m.role, m.seat_tier)).collect();
    let removed: Vec<String> =
        before.iter().filter(|b| !after.iter().any(|a| a.0 == b.0)).map(|b| b.0.clone()).collect();
    assert_eq!(removed, refs(&preview.removed));
    let re_roled: Vec<String> =
        after.iter().filter(|a| before.iter().any(|b| b.0 == a.0 && b.1 != a.1)).map(|a| a.0.clone()).collect();
    assert_eq!(re_roled, refs(&preview.re_roled));
    for c in &preview.re_roled {
        assert!(after.iter().any(|a| a.0 == c.email && a.1 == c.to_role));
    }
    assert!(w.runs().await.iter().any(|r| r.trigger == dpb::RunTrigger::SettingsChange as i32));
    let _ = (bob, cid);
    w.stop().await;
}

async fn dependencies_down_remove_nobody(kind: DbKind) {
    let mut w = World::start(kind).await;
    let org = w.org("Plain", ppb::ProvisioningMode::Scim, false).await;
    let ann = w.scim.create_user("ann@acme.io").await;
    w.scim.create_user("bob@acme.io").await;
    w.settle().await;
    assert_eq!(w.members(&org).await.len(), 2);

    // Membership away: a deactivation waits, and nobody else is touched.
    w.cluster.stop_membership().await;
    w.scim.set_active(&ann, false).await;
    let dir = w.dir_id.clone();
    until("the directory to report it waits for membership", || {
        let mut d = w.directory.clone();
        let id = dir.clone();
        async move {
            let s = d.get_directory_status(dpb::GetDirectoryStatusRequest { id }).await.unwrap().into_inner();
            s.last_error.contains("membership unavailable") && s.queued > 0
        }
    })
    .await;
    w.cluster.start_membership().await;
    w.settle().await;
    let members = w.members(&org).await;
    assert_eq!(members.len(), 1);
    assert_eq!(members[0].user.as_ref().unwrap().email, "bob@acme.io");

    // Policy away during Sync now: the run waits, then finishes; nobody is removed.
    w.cluster.stop_policy().await;
    let started = w
        .directory
        .sync_now(dpb::SyncNowRequest { directory_id: w.dir_id.clone(), wait: false, actor: admin() })
        .await
        .unwrap()
        .into_inner()
        .message()
        .await
        .unwrap()
        .unwrap()
        .run
        .unwrap();
    let run_id = started.id.clone();
    until("the run to wait for policy", || {
        let mut d = w.directory.clone();
        let id = run_id.clone();
        async move {
            let r = d.get_sync_run(dpb::GetSyncRunRequest { run_id: id }).await.unwrap().into_inner();
            r.state == dpb::RunState::Running as i32 && r.error.contains("policy unavailable")
        }
    })
    .await;
    assert_eq!(w.members(&org).await.len(), 1);
    w.cluster.start_policy().await;
    until("the run to finish once policy is back", || {
        let mut d = w.directory.clone();
        let id = run_id.clone();
        async move {
            let r = d.get_sync_run(dpb::GetSyncRunRequest { run_id: id }).await.unwrap().into_inner();
            r.state == dpb::RunState::Succeeded as i32
        }
    })
    .await;
    assert_eq!(w.members(&org).await.len(), 1);
    w.stop().await;
}

async fn restart_between_write_and_reconcile_lands_once(kind: DbKind) {
    let mut w = World::start(kind).await;
    let org = w.org("Plain", ppb::ProvisioningMode::Scim, false).await;
    w.directory.pause_directory(dpb::PauseDirectoryRequest { id: w.dir_id.clone(), actor: None }).await.unwrap();
    w.scim.create_user("ann@acme.io").await;
    let lag = w
        .directory
        .get_reconcile_lag(dpb::GetReconcileLagRequest { directory_id: w.dir_id.clone() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(lag.queued, 1, "the change waits in the durable queue");
    assert!(w.members(&org).await.is_empty());

    w.cluster.stop_directory().await;
    w.cluster.start_directory().await;
    w.directory = w.cluster.directory();
    w.directory.resume_directory(dpb::ResumeDirectoryRequest { id: w.dir_id.clone(), actor: None }).await.unwrap();
    w.settle().await;
    let members = w.members(&org).await;
    assert_eq!(members.len(), 1);
    // Exactly once: one member.added in the audit log.
    let audit = w
        .membership
        .list_audit(mpb::ListAuditRequest { org_id: org.clone(), page_size: 100, ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    let added = audit.entries.iter().filter(|e| e.action == "member.added").count();
    assert_eq!(added, 1, "{:?}", audit.entries);
    // Sync now changes nothing more.
    let run = w.sync_now().await;
    let c = run.counts.unwrap();
    assert_eq!((c.created, c.removed, c.unchanged), (0, 0, 1), "{}", run.outcome);
    w.stop().await;
}

async fn events_resume_exactly_and_tokens_isolate(kind: DbKind) {
    let mut w = World::start(kind).await;
    let ann = w.scim.create_user("ann@acme.io").await;
    w.scim.create_group("everyone", &[&ann]).await;
    w.scim.set_active(&ann, false).await;

    let read = |after: i64, n: usize| {
        let mut d = w.directory.clone();
        let dir = w.dir_id.clone();
        async move {
            let mut s = d
                .watch_events(dpb::WatchEventsRequest { after_sequence: after, directory_id: dir })
                .await
                .unwrap()
                .into_inner();
            let mut out = Vec::new();
            while out.len() < n {
                out.push(s.message().await.unwrap().unwrap());
            }
            out
        }
    };
    let all = read(0, 4).await;
    let types: Vec<&str> = all.iter().map(|e| e.r#type.as_str()).collect();
    assert_eq!(types, ["user.created", "group.created", "group.member_added", "user.deactivated"]);
    assert!(all.windows(2).all(|p| p[0].sequence < p[1].sequence));
    assert!(all[3].previous_json.contains("\"active\":true"));
    let resumed = read(all[1].sequence, 2).await;
    assert_eq!(resumed.iter().map(|e| e.id.clone()).collect::<Vec<_>>(), [all[2].id.clone(), all[3].id.clone()]);
    // A live watcher sees a new event once committed.
    let waiter = tokio::spawn(read(all[3].sequence, 1));
    w.scim.set_active(&ann, true).await;
    assert_eq!(waiter.await.unwrap()[0].r#type, "user.updated");

    // Tokens: wrong -> 401; another directory's token -> 404; a rotated token stops working.
    let other = w
        .directory
        .create_directory(dpb::CreateDirectoryRequest {
            parent_id: w.parent_id.clone(),
            kind: dpb::DirectoryKind::Scim as i32,
            display_name: "Other".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let wrong = Scim { http: reqwest::Client::new(), base: w.scim.base.clone(), token: "nope".into() };
    assert_eq!(wrong.send(reqwest::Method::GET, "/Users", None).await.0, 401);
    let cross = Scim { http: reqwest::Client::new(), base: w.scim.base.clone(), token: other.scim_token.clone() };
    assert_eq!(cross.send(reqwest::Method::GET, "/Users", None).await.0, 404);
    let rotated = w
        .directory
        .rotate_scim_token(dpb::RotateScimTokenRequest { id: w.dir_id.clone(), actor: None })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(w.scim.send(reqwest::Method::GET, "/Users", None).await.0, 401);
    let fresh = Scim { http: reqwest::Client::new(), base: rotated.scim_base_url, token: rotated.scim_token };
    let (status, list) =
        fresh.send(reqwest::Method::GET, "/Users?filter=userName%20eq%20%22ANN%40acme.io%22", None).await;
    assert_eq!(status, 200);
    assert_eq!(list["totalResults"], 1);

    // Secrets are never stored inline: a field the connector declares a secret is refused.
    let err = w
        .directory
        .create_directory(dpb::CreateDirectoryRequest {
            parent_id: w.parent_id.clone(),
            kind: dpb::DirectoryKind::Okta as i32,
            display_name: "Okta API".into(),
            config_json: r#"{"org_url":"https://acme.okta.com","auth":{"type":"api_token","token":"00abc"}}"#.into(),
            sync_interval_seconds: 900,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(muster_runtime::status::rule_of(&err).as_deref(), Some("secret_inline"));
    assert!(!err.message().contains("00abc"));
    // A field that only sounds like one (Google's token_url, a URL) is taken as given.
    let google = w
        .directory
        .create_directory(dpb::CreateDirectoryRequest {
            parent_id: w.parent_id.clone(),
            kind: dpb::DirectoryKind::Google as i32,
            display_name: "Google".into(),
            config_json: r#"{"service_account_key":{"file":"/nonexistent/key.json"},"admin_email":"admin@acme.io","token_url":"https://oauth2.googleapis.com/token"}"#.into(),
            sync_interval_seconds: 900,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(google.directory.unwrap().config_json.contains("oauth2.googleapis.com/token"));

    // Kinds come from the connector registry: ListDirectoryKinds names them, and is
    // authenticated like every other call.
    let kinds = w.directory.list_directory_kinds(dpb::ListDirectoryKindsRequest {}).await.unwrap().into_inner().kinds;
    let names: Vec<&str> = kinds.iter().map(|k| k.name.as_str()).collect();
    assert_eq!(names[..4], ["scim", "okta", "entra", "google"]);
    assert_eq!((kinds[0].pulled, kinds[0].secret_fields.len()), (false, 0));
    assert_eq!(kinds[1].secret_fields, ["auth.token", "auth.private_key"]);
    let anonymous = muster_runtime::client::channel(w.cluster.directory_url(), "", std::time::Duration::from_secs(5));
    let err = DirectoryClient::new(anonymous.unwrap())
        .list_directory_kinds(dpb::ListDirectoryKindsRequest {})
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated);
    // A kind without an enum value (the tests register one) is named by kind_name, and
    // its declared secret is refused inline like any connector's.
    let by_name = |kind: i32, kind_name: &str, config: &str| dpb::CreateDirectoryRequest {
        parent_id: w.parent_id.clone(),
        kind,
        kind_name: kind_name.into(),
        display_name: "By name".into(),
        config_json: config.into(),
        sync_interval_seconds: 900,
        ..Default::default()
    };
    let unnumbered = kinds
        .iter()
        .find(|k| k.kind == dpb::DirectoryKind::Unspecified as i32)
        .expect("the tests build directory-sync with a kind named by name only");
    assert!(unnumbered.pulled && !unnumbered.secret_fields.is_empty(), "{unnumbered:?}");
    // {"a": {"b": "an-inline-secret"}} for the declared field "a.b".
    let inline =
        unnumbered.secret_fields[0].rsplit('.').fold(json!("an-inline-secret"), |inner, key| json!({ key: inner }));
    let err = w.directory.create_directory(by_name(0, &unnumbered.name, &inline.to_string())).await.unwrap_err();
    assert_eq!(muster_runtime::status::rule_of(&err).as_deref(), Some("secret_inline"), "{err:?}");
    assert!(!err.message().contains("an-inline-secret"));
    // The kind is settled before the config is looked at.
    let okta = dpb::DirectoryKind::Okta as i32;
    let err = w.directory.create_directory(by_name(okta, "google", "{}")).await.unwrap_err();
    assert_eq!(muster_runtime::status::rule_of(&err).as_deref(), Some("kind_conflict"));
    let err = w.directory.create_directory(by_name(0, "okat", "{}")).await.unwrap_err();
    assert_eq!(muster_runtime::status::rule_of(&err).as_deref(), Some("kind_unknown"));
    assert!(err.message().contains("scim, okta, entra, google"), "{}", err.message());
    let legacy =
        w.directory.get_directory(dpb::GetDirectoryRequest { id: w.dir_id.clone() }).await.unwrap().into_inner();
    assert_eq!((legacy.kind, legacy.kind_name.as_str()), (dpb::DirectoryKind::Scim as i32, "scim"));
    w.stop().await;
}

/// Status, content type and body of a raw SCIM GET, as the IdP sees them.
async fn raw_get(scim: &Scim, path: &str) -> (u16, String, String) {
    let resp = scim.http.get(format!("{}{path}", scim.base)).bearer_auth(&scim.token).send().await.unwrap();
    let status = resp.status().as_u16();
    let content_type = resp.headers().get("content-type").map(|v| v.to_str().unwrap().to_string()).unwrap_or_default();
    (status, content_type, resp.text().await.unwrap())
}

async fn scim_log(w: &World) -> Vec<dpb::ScimRequestLog> {
    w.directory
        .clone()
        .list_scim_requests(dpb::ListScimRequestsRequest {
            directory_id: w.dir_id.clone(),
            page_size: 100,
            page_token: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .requests
}

async fn set_scim_log_days(w: &World, days: u32) -> dpb::Directory {
    w.directory
        .clone()
        .update_directory(dpb::UpdateDirectoryRequest {
            id: w.dir_id.clone(),
            scim_log_days: Some(days),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
}

/// Waits until the log holds a request whose path ends with `suffix`. The log is
/// written in order after each answer, so once it is there, everything sent before it
/// that was going to be logged is there too.
async fn until_logged(w: &World, suffix: &str) -> Vec<dpb::ScimRequestLog> {
    until(&format!("{suffix} in the scim log"), || async {
        scim_log(w).await.iter().any(|r| r.path.ends_with(suffix))
    })
    .await;
    scim_log(w).await
}

async fn scim_log_records_only_when_on_with_secrets_stripped(kind: DbKind) {
    let w = World::start(kind).await;
    // Off by default: requests are answered and nothing is kept.
    let dir = w.directory.clone().get_directory(dpb::GetDirectoryRequest { id: w.dir_id.clone() }).await.unwrap();
    assert_eq!(dir.into_inner().scim_log_days, 0);
    let ann = w.scim.create_user("ann@acme.io").await;
    let unlogged = raw_get(&w.scim, &format!("/Users/{ann}")).await;
    assert_eq!(unlogged.0, 200);

    assert_eq!(set_scim_log_days(&w, 7).await.scim_log_days, 7);
    let body = json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
        "userName": "bob@acme.io",
        "password": "hunter2-secret",
        "emails": [{"value": "bob@acme.io", "primary": true}],
        "active": true
    });
    let (status, created) = w.scim.send(reqwest::Method::POST, "/Users", Some(body)).await;
    assert_eq!(status, 201, "{created}");
    assert!(!created.to_string().contains("hunter2"));
    // The IdP's answer is the same with the log on.
    let logged = raw_get(&w.scim, &format!("/Users/{ann}")).await;
    assert_eq!(logged, unlogged);

    let log = until_logged(&w, &format!("/Users/{ann}")).await;
    assert_eq!(log.len(), 2, "only the requests made with the log on: {log:?}");
    let (get, post) = (&log[0], &log[1]);
    assert_eq!((get.method.as_str(), get.status), ("GET", 200));
    assert_eq!(
        serde_json::from_str::<Value>(&get.response_body).unwrap(),
        serde_json::from_str::<Value>(&logged.2).unwrap()
    );
    assert_eq!(post.method, "POST");
    assert_eq!(post.path, format!("/scim/v2/{}/Users", w.dir_id));
    assert_eq!(post.status, 201);
    assert_eq!(post.directory_id, w.dir_id);
    assert!(post.time.is_some() && post.duration_ms >= 0.0);
    assert!(!post.request_body.contains("hunter2"), "{}", post.request_body);
    let sent: Value = serde_json::from_str(&post.request_body).unwrap();
    assert_eq!(sent["password"], "[redacted]");
    assert_eq!(sent["userName"], "bob@acme.io");
    assert!(!post.request_body_truncated && !post.response_body_truncated);
    assert_eq!(serde_json::from_str::<Value>(&post.response_body).unwrap(), created);
    assert!(!post.request_headers.contains_key("authorization"), "{:?}", post.request_headers);
    assert!(post.request_headers.values().all(|v| !v.contains(&w.scim.token)));
    assert_eq!(post.request_headers.get("content-type").map(String::as_str), Some("application/scim+json"));

    // Off again: nothing more is kept.
    assert_eq!(set_scim_log_days(&w, 0).await.scim_log_days, 0);
    raw_get(&w.scim, "/Users?count=1").await;
    set_scim_log_days(&w, 7).await;
    raw_get(&w.scim, "/Groups").await;
    let log = until_logged(&w, "/Groups").await;
    assert_eq!(log.len(), 3, "{log:?}");
    assert!(log.iter().all(|r| !r.path.contains("count=1")));

    // Only SCIM directories log, and only for a bounded time.
    let err = w
        .directory
        .clone()
        .update_directory(dpb::UpdateDirectoryRequest {
            id: w.dir_id.clone(),
            scim_log_days: Some(365),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(muster_runtime::status::rule_of(&err).as_deref(), Some("scim_log_days_out_of_range"));
    w.stop().await;
}
