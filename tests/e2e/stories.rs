//! The administrator guide's stories, end to end: what a preview says a `jit` or
//! `jit` + advanced-group-mapping change would do at each person's next login
//! (including the administrator who turns mapping on and loses Owner), and the
//! guide's three troubleshooting stories — someone not added (seats), someone with
//! the wrong role (fix the group), someone who lost Owner (restored by another
//! guardian, or through the IdP group) — for `scim` and for `jit`.

use muster_proto::common::v1 as common;
use muster_proto::directory::v1 as dpb;
use muster_proto::membership::v1 as mpb;
use muster_proto::policy::v1 as ppb;
use muster_runtime::client::{MembershipClient, PolicyClient};
use muster_tests::{DbKind, DirectoryClient, TestCluster};

use super::support::{Scim, admin, named, until};

on_both_databases! {
    a_jit_preview_says_what_each_next_login_would_do => jit_preview;
    the_guides_troubleshooting_stories_for_scim => scim_troubleshooting;
    the_guides_troubleshooting_stories_for_jit => jit_troubleshooting;
}

fn mappings(tiers: bool) -> (Vec<ppb::RoleMapping>, Vec<ppb::SeatTierMapping>) {
    let roles = vec![
        ppb::RoleMapping { role: "Owner".into(), groups: vec![named("owners")] },
        ppb::RoleMapping { role: "Admin".into(), groups: vec![named("admins")] },
        ppb::RoleMapping { role: "User".into(), groups: vec![named("everyone")] },
    ];
    let tiers = if tiers {
        vec![ppb::SeatTierMapping { seat_tier: "Premium".into(), groups: vec![named("engineering")] }]
    } else {
        vec![]
    };
    (roles, tiers)
}

fn settings(mode: ppb::ProvisioningMode, agm: bool, tiers: bool) -> ppb::SettingsInput {
    let (role_mappings, seat_tier_mappings) = if agm { mappings(tiers) } else { (vec![], vec![]) };
    ppb::SettingsInput { mode: mode as i32, advanced_group_mapping: agm, role_mappings, seat_tier_mappings }
}

struct World {
    cluster: TestCluster,
    policy: PolicyClient,
    membership: MembershipClient,
    directory: DirectoryClient,
    org: String,
    dir: String,
    scim: Scim,
}

impl World {
    async fn start(kind: DbKind, s: ppb::SettingsInput) -> Self {
        let cluster = TestCluster::start(kind).await;
        let (parent, org) = cluster.enterprise_org(s).await;
        let mut directory = cluster.directory();
        let created = directory
            .create_directory(dpb::CreateDirectoryRequest {
                parent_id: parent,
                kind: dpb::DirectoryKind::Scim as i32,
                display_name: "SCIM".into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        let d = created.directory.unwrap();
        let scim = Scim { http: reqwest::Client::new(), base: d.scim_base_url.clone(), token: created.scim_token };
        let (policy, membership) = (cluster.policy(), cluster.membership());
        Self { cluster, policy, membership, directory, org, dir: d.id, scim }
    }

    async fn save(&mut self, s: ppb::SettingsInput) {
        let current =
            self.policy.get_settings(ppb::GetSettingsRequest { org_id: self.org.clone() }).await.unwrap().into_inner();
        self.policy
            .update_settings(ppb::UpdateSettingsRequest {
                org_id: self.org.clone(),
                expected_version: current.version,
                settings: Some(s),
                actor: admin(),
            })
            .await
            .unwrap();
    }

    async fn member(&self, email: &str) -> Option<mpb::Member> {
        let page = self
            .membership
            .clone()
            .list_members(mpb::ListMembersRequest {
                org_id: self.org.clone(),
                email_prefix: email.into(),
                page_size: 10,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        page.members.into_iter().find(|m| m.user.as_ref().is_some_and(|u| u.email == email))
    }

    async fn until_role(&self, email: &str, role: &str) {
        until(&format!("{email} to be {role}"), || async { self.member(email).await.is_some_and(|m| m.role == role) })
            .await;
    }

    async fn settle(&self) {
        until("the queue to drain", || async {
            let lag = self
                .directory
                .clone()
                .get_reconcile_lag(dpb::GetReconcileLagRequest { directory_id: self.dir.clone() })
                .await
                .unwrap()
                .into_inner();
            let runs = self
                .directory
                .clone()
                .list_sync_runs(dpb::ListSyncRunsRequest {
                    directory_id: self.dir.clone(),
                    page_size: 5,
                    page_token: String::new(),
                })
                .await
                .unwrap()
                .into_inner()
                .runs;
            lag.queued == 0 && runs.iter().all(|r| r.state != dpb::RunState::Running as i32)
        })
        .await;
    }

    async fn login(&self, email: &str, groups: &[&str]) -> mpb::LoginResponse {
        self.membership
            .clone()
            .login(mpb::LoginRequest {
                org_id: self.org.clone(),
                identity: Some(mpb::Identity {
                    directory_id: String::new(),
                    external_id: format!("sub-{email}"),
                    email: email.into(),
                    display_name: String::new(),
                }),
                assigned: true,
                groups: groups.iter().map(|g| named(g)).collect(),
            })
            .await
            .unwrap()
            .into_inner()
    }

    /// The member's role set by another guardian (a manual change); returns the notes.
    async fn restore(&self, email: &str, role: &str, by: &str) -> Vec<String> {
        let m = self.member(email).await.unwrap();
        self.membership
            .clone()
            .update_member(mpb::UpdateMemberRequest {
                org_id: self.org.clone(),
                member_id: m.id,
                expected_version: m.version,
                role: Some(role.into()),
                seat_tier: None,
                actor: Some(common::Actor { kind: Some(common::actor::Kind::AdminId(by.into())) }),
            })
            .await
            .unwrap()
            .into_inner()
            .notes
    }

    async fn preview(&self, s: ppb::SettingsInput, acting: &str) -> dpb::PreviewSettingsResponse {
        self.directory
            .clone()
            .preview_settings(dpb::PreviewSettingsRequest {
                org_id: self.org.clone(),
                settings: Some(s),
                acting_member_id: String::new(),
                actor: Some(common::Actor { kind: Some(common::actor::Kind::AdminId(acting.into())) }),
            })
            .await
            .unwrap()
            .into_inner()
    }

    async fn sync_now(&self) -> dpb::SyncRun {
        let mut stream = self
            .directory
            .clone()
            .sync_now(dpb::SyncNowRequest { directory_id: self.dir.clone(), wait: true, actor: admin() })
            .await
            .unwrap()
            .into_inner();
        let mut last = None;
        while let Some(p) = stream.message().await.unwrap() {
            last = p.run;
            if p.done {
                break;
            }
        }
        last.unwrap()
    }
}

fn emails(v: &[dpb::PreviewChange]) -> Vec<String> {
    let mut out: Vec<String> = v.iter().map(|c| c.email.clone()).collect();
    out.sort();
    out
}

/// Rule 6 and the guide's warning: in a `jit` org whose people are also in the
/// parent's SCIM directory, a preview predicts each member's next login from the
/// directory; turning advanced group mapping on would demote the administrator who
/// saves it (they are in no group mapped to Owner), and the preview says so. Then the
/// story plays out: saved, they log in and are User; another guardian restores them,
/// their next login (still not in the group) takes it away again; in the group, Owner.
async fn jit_preview(kind: DbKind) {
    let mut w = World::start(kind, settings(ppb::ProvisioningMode::Jit, false, false)).await;
    let adm = w.scim.create_user("adm@acme.test").await;
    let ann = w.scim.create_user("ann@acme.test").await;
    let bob = w.scim.create_user("bob@acme.test").await;
    let cid = w.scim.create_user("cid@acme.test").await;
    w.scim.create_group("owners", &[&ann]).await;
    w.scim.create_group("everyone", &[&adm, &ann, &bob, &cid]).await;
    w.settle().await;
    for who in ["adm", "ann", "bob", "cid"] {
        let r = w.login(&format!("{who}@acme.test"), &["everyone"]).await;
        assert!(r.allowed, "{r:?}");
    }
    assert!(w.restore("adm@acme.test", "Owner", "bootstrap").await.is_empty());
    // cid leaves the IdP application.
    w.scim.set_active(&cid, false).await;
    w.settle().await;

    // jit as it is: only cid's next login changes anything (refused, and removed).
    let p = w.preview(settings(ppb::ProvisioningMode::Jit, false, false), "adm@acme.test").await;
    assert!(p.at_next_login);
    assert_eq!(emails(&p.removed), ["cid@acme.test"]);
    assert!(p.re_roled.is_empty() && p.added.is_empty(), "{p:?}");
    assert!(!p.acting_member_loses_guardian);

    // jit + advanced group mapping: roles follow the groups at the next login.
    let proposed = settings(ppb::ProvisioningMode::Jit, true, false);
    let p = w.preview(proposed.clone(), "adm@acme.test").await;
    assert!(p.at_next_login);
    assert_eq!(emails(&p.re_roled), ["adm@acme.test", "ann@acme.test"], "{p:?}");
    let adm_change = p.re_roled.iter().find(|c| c.email == "adm@acme.test").unwrap();
    assert_eq!((adm_change.from_role.as_str(), adm_change.to_role.as_str()), ("Owner", "User"));
    assert_eq!(emails(&p.removed), ["cid@acme.test"]);
    assert!(p.acting_member_loses_guardian, "{p:?}");
    assert!(p.warnings.iter().any(|x| x == "you would lose the Owner role at your next login"), "{:?}", p.warnings);
    assert!(!p.org_left_without_guardian, "ann becomes Owner: {p:?}");
    assert!(!p.would_trip_brake, "logins are not braked");
    assert!(w.member("adm@acme.test").await.unwrap().role == "Owner", "a preview saves nothing");

    // Saved anyway. The guide's story: the administrator logs in and is User.
    w.save(proposed).await;
    assert_eq!(w.login("ann@acme.test", &["owners", "everyone"]).await.member.unwrap().role, "Owner");
    let r = w.login("adm@acme.test", &["everyone"]).await;
    assert_eq!(r.member.unwrap().role, "User", "lost Owner after enabling mapping");
    // Restored by another guardian: the answer says the next login recomputes it...
    let notes = w.restore("adm@acme.test", "Owner", "ann").await;
    assert!(notes.iter().any(|n| n.contains("next login recomputes")), "{notes:?}");
    assert_eq!(w.login("adm@acme.test", &["everyone"]).await.member.unwrap().role, "User");
    // ...so the lasting fix is the IdP group: log out and in again, Owner.
    assert_eq!(w.login("adm@acme.test", &["owners", "everyone"]).await.member.unwrap().role, "Owner");
    w.cluster.stop().await;
}

/// The guide's troubleshooting for `scim` + advanced group mapping: not added (no
/// seat: they wait, and get one as soon as seats are added); wrong role (fix the
/// group in the IdP: the push, or Sync now, re-roles them); lost Owner (another
/// guardian restores it, but the next sync follows the IdP; put them in the group).
async fn scim_troubleshooting(kind: DbKind) {
    let w = World::start(kind, settings(ppb::ProvisioningMode::Scim, true, true)).await;
    for (tier, n) in [("Premium", 3), ("Standard", 0)] {
        w.membership
            .clone()
            .set_seats(mpb::SetSeatsRequest {
                org_id: w.org.clone(),
                seat_tier: tier.into(),
                purchased: Some(n),
                actor: admin(),
            })
            .await
            .unwrap();
    }
    let o1 = w.scim.create_user("o1@acme.test").await;
    let o2 = w.scim.create_user("o2@acme.test").await;
    let ann = w.scim.create_user("ann@acme.test").await;
    let bob = w.scim.create_user("bob@acme.test").await;
    let owners = w.scim.create_group("owners", &[&o1, &o2]).await;
    let admins = w.scim.create_group("admins", &[]).await;
    w.scim.create_group("everyone", &[&o1, &o2, &ann, &bob]).await;
    w.scim.create_group("engineering", &[&o1, &ann, &bob]).await;
    w.settle().await;

    // Not added: three Premium seats (taken by o1, o2 and ann) and no Standard seat —
    // bob waits for Premium.
    let bob_m = w.member("bob@acme.test").await.unwrap();
    assert_eq!((bob_m.status, bob_m.wanted_seat_tier.as_str()), (mpb::MemberStatus::PendingSeat as i32, "Premium"));
    // A seat is bought: they get it at once, without a Sync now.
    w.membership
        .clone()
        .set_seats(mpb::SetSeatsRequest {
            org_id: w.org.clone(),
            seat_tier: "Premium".into(),
            purchased: Some(4),
            actor: admin(),
        })
        .await
        .unwrap();
    let bob_m = w.member("bob@acme.test").await.unwrap();
    assert_eq!((bob_m.status, bob_m.seat_tier.as_str()), (mpb::MemberStatus::Active as i32, "Premium"));
    let run = w.sync_now().await;
    assert_eq!(run.counts.unwrap().pending_seat, 0, "{run:?}");

    // Wrong role: ann is User; the administrator fixes her group in the IdP.
    assert_eq!(w.member("ann@acme.test").await.unwrap().role, "User");
    w.scim.group_members(&admins, "add", &[&ann]).await;
    w.until_role("ann@acme.test", "Admin").await;

    // Lost Owner: o1 leaves the owners group in the IdP (o2 is still Owner).
    w.scim.group_members(&owners, "remove", &[&o1]).await;
    w.until_role("o1@acme.test", "User").await;
    // Another guardian restores it directly; the answer says the next sync recomputes...
    let notes = w.restore("o1@acme.test", "Owner", "o2").await;
    assert!(notes.iter().any(|n| n.contains("next directory sync recomputes")), "{notes:?}");
    assert_eq!(w.member("o1@acme.test").await.unwrap().role, "Owner");
    // ...and Sync now follows the IdP again.
    w.sync_now().await;
    assert_eq!(w.member("o1@acme.test").await.unwrap().role, "User");
    // The lasting fix: back in the group, the push (or Sync now, or the next cycle) restores it.
    w.scim.group_members(&owners, "add", &[&o1]).await;
    w.until_role("o1@acme.test", "Owner").await;
    w.cluster.stop().await;
}

/// The same troubleshooting for `jit` + advanced group mapping: the fixes take effect
/// at the person's next login.
async fn jit_troubleshooting(kind: DbKind) {
    let w = World::start(kind, settings(ppb::ProvisioningMode::Jit, true, true)).await;
    w.membership
        .clone()
        .set_seats(mpb::SetSeatsRequest {
            org_id: w.org.clone(),
            seat_tier: "Premium".into(),
            purchased: Some(1),
            actor: admin(),
        })
        .await
        .unwrap();
    assert_eq!(w.login("o1@acme.test", &["owners", "engineering"]).await.member.unwrap().role, "Owner");
    assert_eq!(w.login("o2@acme.test", &["owners"]).await.member.unwrap().role, "Owner");
    // Not added: no Premium seat is left, so the login waits; a seat bought, they are in.
    let r = w.login("ann@acme.test", &["everyone", "engineering"]).await;
    assert!(!r.allowed, "{r:?}");
    assert_eq!(r.member.unwrap().status, mpb::MemberStatus::PendingSeat as i32);
    w.membership
        .clone()
        .set_seats(mpb::SetSeatsRequest {
            org_id: w.org.clone(),
            seat_tier: "Premium".into(),
            purchased: Some(2),
            actor: admin(),
        })
        .await
        .unwrap();
    assert!(w.login("ann@acme.test", &["everyone", "engineering"]).await.allowed);
    // Wrong role: fixed in the IdP, the next login re-roles her.
    assert_eq!(w.login("ann@acme.test", &["admins", "engineering"]).await.member.unwrap().role, "Admin");
    // Lost Owner: out of the owners group, the next login demotes o1; back in, Owner again.
    assert_eq!(w.login("o1@acme.test", &["everyone", "engineering"]).await.member.unwrap().role, "User");
    assert_eq!(w.login("o1@acme.test", &["owners", "engineering"]).await.member.unwrap().role, "Owner");
    w.cluster.stop().await;
}
