//! The reconcile rules end to end (docs/directory-sync.md, "Who may remove whom"):
//! a parent's directories decide together; a directory that never proved its mirror
//! removes nobody it does not know; identity changes are updates; suspect listings
//! and trickling removals are held; runs say what they are. Every story runs through
//! the services' real interfaces, SCIM over HTTP and the vendor fakes over HTTP.

use std::sync::Arc;

use muster_connector::ManualClock;
use muster_proto::directory::v1 as dpb;
use muster_proto::membership::v1 as mpb;
use muster_proto::policy::v1 as ppb;
use muster_runtime::client::{MembershipClient, PolicyClient};
use muster_tests::{DbKind, DirectoryClient, TestCluster};
use serde_json::json;

use super::support::{PATIENCE, Scim, admin, named, person, until};

on_both_databases! {
    two_directories_on_a_parent_decide_together => two_directories;
    creating_a_directory_removes_nobody => creating_removes_nobody;
    an_email_change_in_the_idp_is_an_update => email_change;
    a_suspect_full_listing_is_held => suspect_listing;
    removals_trickling_in_trip_the_rolling_brake => rolling_brake;
    a_directory_made_authoritative_shows_whom_it_removes => set_authoritative;
    pull_runs_say_what_they_are => pull_runs_say_what_they_are;
}

/// A cluster (connectors on a manual clock) and one Enterprise parent.
struct Parent {
    cluster: TestCluster,
    policy: PolicyClient,
    membership: MembershipClient,
    directory: DirectoryClient,
    parent_id: String,
    clock: Arc<ManualClock>,
}

impl Parent {
    async fn start(kind: DbKind) -> Self {
        let clock = Arc::new(ManualClock::new(chrono::Utc::now()));
        let mut cluster = TestCluster::start(kind).await;
        cluster.stop_directory().await;
        cluster.connector_clock = Some(clock.clone());
        cluster.start_directory().await;
        let mut policy = cluster.policy();
        let parent = policy
            .create_parent_org(ppb::CreateParentOrgRequest {
                name: "Acme".into(),
                kind: ppb::ParentKind::Enterprise as i32,
            })
            .await
            .unwrap()
            .into_inner();
        let membership = cluster.membership();
        let directory = cluster.directory();
        Self { cluster, policy, membership, directory, parent_id: parent.id, clock }
    }

    /// An Enterprise org; with `agm`, owners/admins/everyone map to Owner/Admin/User.
    async fn org(&mut self, mode: ppb::ProvisioningMode, agm: bool) -> String {
        let org = self
            .policy
            .create_org(ppb::CreateOrgRequest {
                parent_id: self.parent_id.clone(),
                name: "Acme Enterprise".into(),
                product: ppb::ProductKind::ClaudeEnterpriseSeat as i32,
            })
            .await
            .unwrap()
            .into_inner();
        self.set_settings(&org.id, mode, agm, vec![]).await;
        org.id
    }

    async fn set_settings(
        &mut self,
        org: &str,
        mode: ppb::ProvisioningMode,
        agm: bool,
        seat_tier_mappings: Vec<ppb::SeatTierMapping>,
    ) {
        let current =
            self.policy.get_settings(ppb::GetSettingsRequest { org_id: org.into() }).await.unwrap().into_inner();
        let role_mappings = if agm {
            vec![
                ppb::RoleMapping { role: "Owner".into(), groups: vec![named("owners")] },
                ppb::RoleMapping { role: "Admin".into(), groups: vec![named("admins")] },
                ppb::RoleMapping { role: "User".into(), groups: vec![named("everyone")] },
            ]
        } else {
            vec![]
        };
        self.policy
            .update_settings(ppb::UpdateSettingsRequest {
                org_id: org.into(),
                expected_version: current.version,
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
    }

    async fn scim_dir(&mut self, name: &str) -> (String, Scim) {
        let created = self
            .directory
            .create_directory(dpb::CreateDirectoryRequest {
                parent_id: self.parent_id.clone(),
                kind: dpb::DirectoryKind::Scim as i32,
                display_name: name.into(),
                actor: admin(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        let dir = created.directory.unwrap();
        let scim = Scim { http: reqwest::Client::new(), base: dir.scim_base_url.clone(), token: created.scim_token };
        (dir.id, scim)
    }

    async fn pull_dir(&mut self, kind: &str, config: serde_json::Value, name: &str) -> String {
        self.directory
            .create_directory(dpb::CreateDirectoryRequest {
                parent_id: self.parent_id.clone(),
                kind_name: kind.into(),
                display_name: name.into(),
                config_json: config.to_string(),
                sync_interval_seconds: 300,
                actor: admin(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .directory
            .unwrap()
            .id
    }

    async fn members(&self, org: &str) -> Vec<mpb::Member> {
        let mut out = Vec::new();
        let mut token = String::new();
        loop {
            let page = self
                .membership
                .clone()
                .list_members(mpb::ListMembersRequest {
                    org_id: org.into(),
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

    async fn member(&self, org: &str, email: &str) -> Option<mpb::Member> {
        self.members(org).await.into_iter().find(|m| m.user.as_ref().is_some_and(|u| u.email == email))
    }

    /// (email local part, role) of every member, sorted.
    async fn roles(&self, org: &str) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = self
            .members(org)
            .await
            .into_iter()
            .map(|m| {
                let email = m.user.map(|u| u.email).unwrap_or_default();
                (email.split('@').next().unwrap_or_default().to_string(), m.role)
            })
            .collect();
        out.sort();
        out
    }

    async fn until_roles(&self, org: &str, want: &[(&str, &str)]) {
        let mut want: Vec<(String, String)> = want.iter().map(|(e, r)| (e.to_string(), r.to_string())).collect();
        want.sort();
        let waited = tokio::time::timeout(PATIENCE, async {
            while self.roles(org).await != want {
                tokio::task::yield_now().await;
            }
        })
        .await;
        assert!(waited.is_ok(), "gave up waiting for members {want:?}; have {:?}", self.roles(org).await);
    }

    async fn runs(&self, dir: &str) -> Vec<dpb::SyncRun> {
        self.directory
            .clone()
            .list_sync_runs(dpb::ListSyncRunsRequest {
                directory_id: dir.into(),
                page_size: 1000,
                page_token: String::new(),
            })
            .await
            .unwrap()
            .into_inner()
            .runs
    }

    async fn run(&self, id: &str) -> dpb::SyncRun {
        self.directory.clone().get_sync_run(dpb::GetSyncRunRequest { run_id: id.into() }).await.unwrap().into_inner()
    }

    /// Waits until a SCIM directory's queue is empty and none of its runs is running.
    async fn settle(&self, dir: &str) {
        until("the reconcile queue to drain", || async {
            let lag = self
                .directory
                .clone()
                .get_reconcile_lag(dpb::GetReconcileLagRequest { directory_id: dir.into() })
                .await
                .unwrap()
                .into_inner();
            lag.queued == 0 && self.runs(dir).await.iter().all(|r| r.state != dpb::RunState::Running as i32)
        })
        .await;
    }

    /// Sync now, waiting; every progress message and the final run.
    async fn sync_now_progress(&self, dir: &str) -> (Vec<dpb::SyncRun>, dpb::SyncRun) {
        let mut stream = self
            .directory
            .clone()
            .sync_now(dpb::SyncNowRequest { directory_id: dir.into(), wait: true, actor: admin() })
            .await
            .unwrap()
            .into_inner();
        let mut seen = Vec::new();
        while let Some(p) = stream.message().await.unwrap() {
            let run = p.run.unwrap_or_default();
            seen.push(run.clone());
            if p.done {
                return (seen, run);
            }
        }
        panic!("the stream ended without a final run");
    }

    async fn sync_now(&self, dir: &str) -> dpb::SyncRun {
        self.sync_now_progress(dir).await.1
    }

    async fn audit(&self, dir: &str) -> Vec<dpb::DirectoryAuditEntry> {
        self.directory
            .clone()
            .list_directory_audit(dpb::ListDirectoryAuditRequest {
                directory_id: dir.into(),
                page_size: 100,
                page_token: String::new(),
            })
            .await
            .unwrap()
            .into_inner()
            .entries
    }

    async fn stop(self) {
        self.cluster.stop().await;
    }
}

fn removed(run: &dpb::SyncRun) -> i64 {
    run.counts.unwrap_or_default().removed
}

/// Rule 1: a SCIM directory and an Okta directory on one parent, each with people of
/// its own and one person in both. Sync now on either, a settings change, a
/// deactivation in one only and the deletion of one never remove someone another
/// directory assigns; the person in both keeps access until both drop them.
async fn two_directories(kind: DbKind) {
    let mut p = Parent::start(kind).await;
    let org = p.org(ppb::ProvisioningMode::Scim, true).await;
    let (scim_dir, scim) = p.scim_dir("SCIM").await;
    let root = scim.create_user("root@example.com").await;
    let ann = scim.create_user("ann@example.com").await;
    let both_scim = scim.create_user("both@example.com").await;
    scim.create_group("owners", &[&root]).await;
    scim.create_group("admins", &[&ann]).await;
    scim.create_group("everyone", &[&root, &ann, &both_scim]).await;

    let fake = super::support::okta(p.clock.clone()).await;
    let f = fake.fake.clone();
    let everyone = f.create_group("everyone");
    let admins = f.create_group("admins");
    let bob = f.create_user(&person("bob"));
    let both_okta = f.create_user(&person("both"));
    f.add_member(&everyone, &bob);
    f.add_member(&admins, &both_okta);
    let okta_dir = p.pull_dir(fake.kind, fake.config.clone(), "Okta").await;

    // `both` is User by the SCIM directory and Admin by Okta: the union decides.
    let all = [("ann", "Admin"), ("bob", "User"), ("both", "Admin"), ("root", "Owner")];
    p.until_roles(&org, &all).await;

    // Sync now on either directory removes nobody the other assigns.
    let run = p.sync_now(&scim_dir).await;
    assert_eq!((run.state, removed(&run)), (dpb::RunState::Succeeded as i32, 0), "{run:?}");
    let run = p.sync_now(&okta_dir).await;
    assert_eq!((run.state, removed(&run)), (dpb::RunState::Succeeded as i32, 0), "{run:?}");
    p.until_roles(&org, &all).await;

    // A settings change (a seat-tier mapping) is one run of the whole parent: nobody leaves.
    let tier = vec![ppb::SeatTierMapping { seat_tier: "Premium".into(), groups: vec![named("admins")] }];
    p.set_settings(&org, ppb::ProvisioningMode::Scim, true, tier).await;
    until("a settings-change run", || async {
        let mut runs = p.runs(&scim_dir).await;
        runs.extend(p.runs(&okta_dir).await);
        runs.iter()
            .any(|r| r.trigger == dpb::RunTrigger::SettingsChange as i32 && r.state != dpb::RunState::Running as i32)
    })
    .await;
    p.until_roles(&org, &all).await;
    let b = p.member(&org, "both@example.com").await.unwrap();
    assert_eq!(b.seat_tier, "Premium", "Okta's admins group maps to Premium");

    // Deactivated in the SCIM directory only: Okta still assigns them, as Admin.
    scim.set_active(&both_scim, false).await;
    p.settle(&scim_dir).await;
    let again = p.member(&org, "both@example.com").await.expect("still a member: Okta assigns them");
    assert_eq!((again.id.as_str(), again.role.as_str()), (b.id.as_str(), "Admin"));
    // Deactivated in Okta too: now they leave.
    f.update_user(&both_okta, &muster_connector::conformance::FakeUser { active: false, ..person("both") });
    p.until_roles(&org, &[("ann", "Admin"), ("bob", "User"), ("root", "Owner")]).await;

    // Deleting the Okta directory lets its own people go, and only them.
    p.directory
        .clone()
        .delete_directory(dpb::DeleteDirectoryRequest { id: okta_dir.clone(), actor: admin() })
        .await
        .unwrap();
    p.until_roles(&org, &[("ann", "Admin"), ("root", "Owner")]).await;
    let audit = p.audit(&okta_dir).await;
    assert!(audit.iter().any(|e| e.action == "directory.deleted" && e.actor == "admin:tester"), "{audit:?}");
    p.stop().await;
}

/// Rules 1 and 2, the story from the issue: three Admins pushed by SCIM, then an Okta
/// directory whose token cannot be read. Its failed pull, and any directory created
/// after it, remove nobody; a member no directory knows stays until a directory that
/// proved its mirror is authoritative.
async fn creating_removes_nobody(kind: DbKind) {
    let mut p = Parent::start(kind).await;
    let org = p.org(ppb::ProvisioningMode::Scim, true).await;
    let (scim_dir, scim) = p.scim_dir("Demo SCIM").await;
    let mut ids = Vec::new();
    for n in ["a1", "a2", "a3"] {
        ids.push(scim.create_user(&format!("{n}@example.com")).await);
    }
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    scim.create_group("admins", &refs).await;
    scim.create_group("everyone", &refs).await;
    p.until_roles(&org, &[("a1", "Admin"), ("a2", "Admin"), ("a3", "Admin")]).await;
    // Someone an administrator added by hand, whom no directory knows.
    p.membership
        .clone()
        .add_member(mpb::AddMemberRequest {
            org_id: org.clone(),
            email: "hand@example.com".into(),
            role: "User".into(),
            actor: admin(),
            ..Default::default()
        })
        .await
        .unwrap();
    let everyone_now = [("a1", "Admin"), ("a2", "Admin"), ("a3", "Admin"), ("hand", "User")];

    // An Okta directory with a token file nobody can read: its pull fails, nobody leaves.
    let fake = super::support::okta(p.clock.clone()).await;
    let mut broken = fake.config.clone();
    broken["auth"]["token"] = json!({"file": "/nonexistent/okta-token"});
    let broken_dir = p.pull_dir(fake.kind, broken, "Broken Okta").await;
    until("the broken directory's pull to fail", || async {
        p.runs(&broken_dir).await.iter().any(|r| r.state == dpb::RunState::Failed as i32)
    })
    .await;
    // A SCIM directory with nobody in it.
    let (empty_dir, _) = p.scim_dir("Empty SCIM").await;
    let run = p.sync_now(&empty_dir).await;
    assert_eq!((run.state, removed(&run)), (dpb::RunState::Succeeded as i32, 0), "{run:?}");
    assert!(run.counts.unwrap().kept >= 1, "the hand-added member is kept, and counted: {run:?}");
    p.until_roles(&org, &everyone_now).await;
    for d in [&scim_dir, &broken_dir, &empty_dir] {
        let runs = p.runs(d).await;
        assert!(
            runs.iter().all(|r| r.trigger != dpb::RunTrigger::SettingsChange as i32),
            "creating a directory started a settings-change run: {runs:?}"
        );
        assert!(runs.iter().all(|r| removed(r) == 0), "{runs:?}");
    }

    // A working Okta directory: its people join; its first listing proves it.
    let f = fake.fake.clone();
    let everyone = f.create_group("everyone");
    let dan = f.create_user(&person("dan"));
    f.add_member(&everyone, &dan);
    let okta_dir = p.pull_dir(fake.kind, fake.config.clone(), "Okta").await;
    p.until_roles(&org, &[("a1", "Admin"), ("a2", "Admin"), ("a3", "Admin"), ("dan", "User"), ("hand", "User")]).await;
    // Authoritative and proven: Sync now removes the one person no directory assigns,
    // and keeps everyone the SCIM directory assigns.
    until("the Okta directory to be proven", || async {
        p.directory
            .clone()
            .get_directory(dpb::GetDirectoryRequest { id: okta_dir.clone() })
            .await
            .unwrap()
            .into_inner()
            .removes_unknown
    })
    .await;
    let run = p.sync_now(&okta_dir).await;
    assert_eq!((run.state, removed(&run)), (dpb::RunState::Succeeded as i32, 1), "{run:?}");
    p.until_roles(&org, &[("a1", "Admin"), ("a2", "Admin"), ("a3", "Admin"), ("dan", "User")]).await;
    p.stop().await;
}

/// Rule 3: an email and userName change in the IdP is an update of the same member
/// (same id, same role, the new email), with one audit entry, and no removal.
async fn email_change(kind: DbKind) {
    let mut p = Parent::start(kind).await;
    let org = p.org(ppb::ProvisioningMode::Scim, true).await;
    let (dir, scim) = p.scim_dir("SCIM").await;
    let ada = scim.create_user("ada@example.com").await;
    scim.create_group("admins", &[&ada]).await;
    p.until_roles(&org, &[("ada", "Admin")]).await;
    let before = p.member(&org, "ada@example.com").await.unwrap();

    let (status, v) = scim
        .send(
            reqwest::Method::PATCH,
            &format!("/Users/{ada}"),
            Some(json!({
                "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                "Operations": [
                    {"op": "replace", "path": "userName", "value": "ada.lovelace@example.com"},
                    {"op": "replace", "path": "emails", "value": [{"value": "ada.lovelace@example.com", "type": "work", "primary": true}]}
                ]
            })),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    p.settle(&dir).await;
    until("the new email", || async { p.member(&org, "ada.lovelace@example.com").await.is_some() }).await;
    let after = p.member(&org, "ada.lovelace@example.com").await.unwrap();
    assert_eq!((after.id.as_str(), after.role.as_str()), (before.id.as_str(), "Admin"), "the same member, role kept");
    let user = after.user.clone().unwrap();
    assert_eq!(user.id, before.user.unwrap().id, "one person");
    // A full run sees the same: the member is the directory's user, found by link.
    let run = p.sync_now(&dir).await;
    assert_eq!((removed(&run), run.counts.unwrap().created), (0, 0), "{run:?}");
    let audit = p
        .membership
        .clone()
        .list_audit(mpb::ListAuditRequest { org_id: org.clone(), page_size: 100, ..Default::default() })
        .await
        .unwrap()
        .into_inner()
        .entries;
    let changes: Vec<&mpb::AuditEntry> =
        audit.iter().filter(|e| e.reasons.iter().any(|r| r.contains("email changed"))).collect();
    assert_eq!(changes.len(), 1, "{audit:?}");
    assert!(changes[0].reasons[0].contains("ada@example.com -> ada.lovelace@example.com"), "{:?}", changes[0]);
    assert!(audit.iter().all(|e| e.action != "member.removed"), "{audit:?}");
    assert_eq!(audit.iter().filter(|e| e.action == "member.added").count(), 1);
    p.stop().await;
}

/// Rule 4: a full listing with users but no groups (a scope that stopped covering
/// groups looks like this) is held: nothing it left out is removed, later suspect
/// listings wait in the same run, a right listing supersedes it, and approval applies
/// it. Google lists in full on every pull, so the interval loop meets it by itself.
async fn suspect_listing(kind: DbKind) {
    let mut p = Parent::start(kind).await;
    let org = p.org(ppb::ProvisioningMode::Scim, true).await;
    let fake = super::support::google(p.clock.clone()).await;
    let f = fake.fake.clone();
    let everyone = f.create_group("everyone");
    let admins = f.create_group("admins");
    let people: Vec<String> = ["ann", "bob", "cid"].iter().map(|n| f.create_user(&person(n))).collect();
    for u in &people {
        f.add_member(&everyone, u);
    }
    f.add_member(&admins, &people[0]);
    let dir = p.pull_dir(fake.kind, fake.config.clone(), "Google").await;
    let all = [("ann", "Admin"), ("bob", "User"), ("cid", "User")];
    p.until_roles(&org, &all).await;

    // The groups vanish from the listing.
    f.delete_group(&everyone);
    f.delete_group(&admins);
    let held = |runs: &[dpb::SyncRun]| -> Vec<dpb::SyncRun> {
        runs.iter().filter(|r| r.state == dpb::RunState::Held as i32 && r.listing_held).cloned().collect()
    };
    until("a held listing", || async { !held(&p.runs(&dir).await).is_empty() }).await;
    let first = held(&p.runs(&dir).await).remove(0);
    assert!(first.outcome.contains("no groups"), "{}", first.outcome);
    // More listings come, all suspect: they wait in the one held run, and nobody leaves.
    let count = p.runs(&dir).await.len();
    until("more pulls", || async { p.runs(&dir).await.len() >= count + 3 }).await;
    assert_eq!(held(&p.runs(&dir).await).len(), 1, "one run holds the directory's listing");
    p.until_roles(&org, &all).await;

    // The IdP is fixed: a listing that looks right supersedes the held one.
    let everyone = f.create_group("everyone");
    for u in &people {
        f.add_member(&everyone, u);
    }
    until("the held run to be superseded", || async { p.run(&first.id).await.state == dpb::RunState::Rejected as i32 })
        .await;
    assert!(p.run(&first.id).await.outcome.contains("superseded"));
    p.until_roles(&org, &[("ann", "User"), ("bob", "User"), ("cid", "User")]).await;

    // Groups vanish again, and this time an administrator approves: the listing is
    // applied, and people in no mapped group leave.
    f.delete_group(&everyone);
    until("a held listing", || async { held(&p.runs(&dir).await).iter().any(|r| r.id != first.id) }).await;
    let second = held(&p.runs(&dir).await).into_iter().find(|r| r.id != first.id).unwrap();
    p.directory
        .clone()
        .approve_run(dpb::ApproveRunRequest { run_id: second.id.clone(), actor: admin() })
        .await
        .unwrap();
    until("the approved run to end", || async { p.run(&second.id).await.state == dpb::RunState::Succeeded as i32 })
        .await;
    p.until_roles(&org, &[]).await;
    let audit = p.audit(&dir).await;
    assert!(audit.iter().any(|e| e.action == "run.approved"), "{audit:?}");
    p.stop().await;
}

/// Rule 5: thirty deactivations pushed one at a time add up over the brake's window
/// like one batch would: the first nine go, the tenth trips the brake, and every
/// later one joins the same held run. Approval re-decides each held person: one
/// re-activated meanwhile stays.
async fn rolling_brake(kind: DbKind) {
    let mut p = Parent::start(kind).await;
    let org = p.org(ppb::ProvisioningMode::Scim, false).await;
    let (dir, scim) = p.scim_dir("SCIM").await;
    let mut users = Vec::new();
    for i in 0..40 {
        users.push(scim.create_user(&format!("u{i:02}@example.com")).await);
    }
    p.settle(&dir).await;
    until("40 members", || async { p.members(&org).await.len() == 40 }).await;

    for (i, u) in users.iter().take(30).enumerate() {
        scim.set_active(u, false).await;
        // Most pushes reconcile alone; some pairs share a run.
        if i % 3 != 1 {
            p.settle(&dir).await;
        }
    }
    p.settle(&dir).await;
    assert_eq!(p.members(&org).await.len(), 31, "9 removed: 10 of 40 within the window trips the brake");
    let runs = p.runs(&dir).await;
    let held: Vec<&dpb::SyncRun> = runs.iter().filter(|r| r.state == dpb::RunState::Held as i32).collect();
    assert_eq!(held.len(), 1, "one held run: {runs:?}");
    let held_id = held[0].id.clone();
    let joined = runs.iter().filter(|r| r.orgs.iter().any(|o| o.held_in_run == held_id)).count();
    assert!(joined >= 1, "later removals joined the held run: {runs:?}");
    let held_run = p.run(&held_id).await;
    assert_eq!(held_run.items_total, 21, "{held_run:?}");

    // One held person is re-assigned before anyone approves: they stay.
    scim.set_active(&users[29], true).await;
    p.settle(&dir).await;
    p.directory.clone().approve_run(dpb::ApproveRunRequest { run_id: held_id.clone(), actor: admin() }).await.unwrap();
    until("the approved run to end", || async { p.run(&held_id).await.state == dpb::RunState::Succeeded as i32 }).await;
    let left = p.members(&org).await;
    assert_eq!(left.len(), 11, "{}", left.len());
    assert!(p.member(&org, "u29@example.com").await.is_some(), "re-assigned meanwhile: spared");

    // The brake's limits are audited when loosened.
    p.directory
        .clone()
        .update_directory(dpb::UpdateDirectoryRequest {
            id: dir.clone(),
            brake: Some(dpb::BrakeSettings { max_removal_percent: Some(50), ..Default::default() }),
            actor: admin(),
            ..Default::default()
        })
        .await
        .unwrap();
    let audit = p.audit(&dir).await;
    let loosened = audit.iter().find(|e| e.action == "directory.brake_loosened").expect("audited");
    assert!(loosened.before_json.contains("\"max_removal_percent\":10"), "{}", loosened.before_json);
    assert!(loosened.after_json.contains("\"max_removal_percent\":50"), "{}", loosened.after_json);
    assert_eq!(loosened.actor, "admin:tester");
    p.stop().await;
}

/// Rule 2: a SCIM directory is provisioning-only until an administrator makes it
/// authoritative; the dry run names who that would remove, and only the real change
/// (audited) removes them.
async fn set_authoritative(kind: DbKind) {
    let mut p = Parent::start(kind).await;
    let org = p.org(ppb::ProvisioningMode::Scim, false).await;
    let (dir, scim) = p.scim_dir("SCIM").await;
    scim.create_user("kept@example.com").await;
    p.settle(&dir).await;
    p.membership
        .clone()
        .add_member(mpb::AddMemberRequest {
            org_id: org.clone(),
            email: "stray@example.com".into(),
            actor: admin(),
            ..Default::default()
        })
        .await
        .unwrap();
    let run = p.sync_now(&dir).await;
    assert_eq!((removed(&run), run.counts.unwrap().kept), (0, 1), "provisioning-only: {run:?}");

    let ask = |dry_run: bool| {
        let mut d = p.directory.clone();
        let id = dir.clone();
        async move {
            d.set_directory_authority(dpb::SetDirectoryAuthorityRequest {
                id,
                authority: dpb::DirectoryAuthority::Authoritative as i32,
                dry_run,
                actor: admin(),
            })
            .await
            .unwrap()
            .into_inner()
        }
    };
    let preview = ask(true).await;
    let would: Vec<&str> = preview.orgs.iter().flat_map(|o| o.removed.iter().map(|c| c.email.as_str())).collect();
    assert_eq!(would, ["stray@example.com"]);
    assert!(preview.run_id.is_empty());
    let d = preview.directory.unwrap();
    assert_eq!(d.authority, dpb::DirectoryAuthority::ProvisioningOnly as i32, "a dry run changes nothing");
    assert!(p.member(&org, "stray@example.com").await.is_some());

    let done = ask(false).await;
    assert!(!done.run_id.is_empty());
    assert!(done.directory.unwrap().removes_unknown);
    until("the authority run to end", || async { p.run(&done.run_id).await.state == dpb::RunState::Succeeded as i32 })
        .await;
    let run = p.run(&done.run_id).await;
    assert_eq!(run.trigger, dpb::RunTrigger::AuthorityChange as i32);
    assert_eq!(removed(&run), 1);
    assert!(p.member(&org, "stray@example.com").await.is_none());
    assert!(p.member(&org, "kept@example.com").await.is_some());
    let audit = p.audit(&dir).await;
    let changed = audit.iter().find(|e| e.action == "directory.authority_changed").expect("audited");
    assert!(changed.after_json.contains("\"authority\":\"authoritative\""), "{}", changed.after_json);
    assert!(audit.iter().any(|e| e.action == "directory.created"));
    p.stop().await;
}

/// Rule 8: a pull directory's queue drained by the worker is labelled as such, not as
/// a SCIM push; Sync now behind another replica's pull says it waits, and then runs;
/// its progress shows real totals.
async fn pull_runs_say_what_they_are(kind: DbKind) {
    use muster_connector::conformance::Failure;
    use muster_directory_sync::store::schema::pull_state;

    let mut p = Parent::start(kind).await;
    let org = p.org(ppb::ProvisioningMode::Scim, false).await;
    let fake = super::support::okta(p.clock.clone()).await;
    let f = fake.fake.clone();
    let everyone = f.create_group("everyone");
    let names = ["ann", "bob", "cid", "dan", "eve", "fay"];
    for n in names {
        let u = f.create_user(&person(n));
        f.add_member(&everyone, &u);
    }
    // Okta fails after a few requests: the first listing writes some user pages, then
    // fails, and every later pull fails at once. Only the worker reconciles what it wrote.
    f.fail_after(3, Failure::ServerError);
    let dir = p.pull_dir(fake.kind, fake.config.clone(), "Okta").await;
    until("the worker to reconcile what the failed pull wrote", || async {
        p.runs(&dir).await.iter().any(|r| {
            r.trigger == dpb::RunTrigger::QueuedChanges as i32
                && r.state == dpb::RunState::Succeeded as i32
                && r.counts.unwrap_or_default().created > 0
        })
    })
    .await;
    let runs = p.runs(&dir).await;
    assert!(
        runs.iter().all(|r| r.trigger != dpb::RunTrigger::ScimPush as i32),
        "a pull directory has no SCIM pushes: {runs:?}"
    );
    assert!(
        runs.iter().any(|r| r.trigger == dpb::RunTrigger::Interval as i32 && r.state == dpb::RunState::Failed as i32),
        "{runs:?}"
    );
    f.clear_failures();
    let want: Vec<(&str, &str)> = names.iter().map(|n| (*n, "User")).collect();
    p.until_roles(&org, &want).await;

    // Another replica holds the pull lease (as if pulling): Sync now waits, says so, then runs.
    let db = muster_runtime::Db::connect(p.cluster.directory_db_url(), 1).unwrap();
    let take_free_lease = || {
        let (db, dir) = (db.clone(), dir.clone());
        async move {
            let until = (chrono::Utc::now() + chrono::Duration::seconds(60)).naive_utc();
            db.write(move |conn| -> Result<usize, muster_directory_sync::error::SyncError> {
                use diesel::prelude::*;
                Ok(diesel::update(pull_state::table.find(&dir).filter(pull_state::lease_holder.is_null()))
                    .set((
                        pull_state::lease_holder.eq(Some("replica-elsewhere/pull")),
                        pull_state::lease_expires.eq(Some(until)),
                    ))
                    .execute(conn)?)
            })
            .await
            .unwrap()
                == 1
        }
    };
    // Taken between two of this replica's own pulls (its loop pulls every 100 ms here).
    until("the lease taken for another replica", take_free_lease).await;
    let releaser = {
        let (db, directory, dir) = (db.clone(), p.directory.clone(), dir.clone());
        tokio::spawn(async move {
            let waiting = async {
                loop {
                    let runs = directory
                        .clone()
                        .list_sync_runs(dpb::ListSyncRunsRequest {
                            directory_id: dir.clone(),
                            page_size: 5,
                            page_token: String::new(),
                        })
                        .await
                        .unwrap()
                        .into_inner()
                        .runs;
                    if runs.iter().any(|r| r.phase == dpb::RunPhase::WaitingForLease as i32) {
                        return;
                    }
                    tokio::task::yield_now().await;
                }
            };
            tokio::time::timeout(PATIENCE, waiting).await.expect("the run said it waits");
            // The other replica's pull ends.
            db.write(move |conn| -> Result<usize, muster_directory_sync::error::SyncError> {
                use diesel::prelude::*;
                Ok(diesel::update(pull_state::table.find(&dir))
                    .set((
                        pull_state::lease_holder.eq(None::<String>),
                        pull_state::lease_expires.eq(None::<chrono::NaiveDateTime>),
                    ))
                    .execute(conn)?)
            })
            .await
            .unwrap();
        })
    };
    let (progress, run) = p.sync_now_progress(&dir).await;
    releaser.await.unwrap();
    assert_eq!(run.state, dpb::RunState::Succeeded as i32, "{run:?}");
    let waited = progress.iter().find(|r| r.phase == dpb::RunPhase::WaitingForLease as i32).expect("it said it waits");
    assert!(waited.outcome.contains("replica-elsewhere"), "{}", waited.outcome);
    assert!(
        progress.iter().any(|r| r.phase == dpb::RunPhase::Reconciling as i32 && r.total > 0),
        "the progress had real totals: {progress:?}"
    );
    assert_eq!(run.processed, run.total, "{run:?}");
    assert!(run.total >= 6, "{run:?}");
    p.stop().await;
}
