//! The membership service over gRPC: logins per SPEC §4, seats, the guardian guard,
//! Apply idempotency, events, audit.

use muster_proto::common::v1 as common;
use muster_proto::membership::v1 as pb;
use muster_proto::policy::v1 as ppb;
use muster_runtime::client::MembershipClient;
use muster_runtime::status::rule_of;
use muster_tests::{DbKind, TestCluster};

on_both_databases! {
    manual_mode_logins => manual_mode_logins;
    jit_logins_follow_spec => jit_logins_follow_spec;
    jit_agm_logins_follow_groups => jit_agm_logins_follow_groups;
    seats_exhausted_then_added => seats_exhausted_then_added;
    guardian_guard_on_every_path => guardian_guard_on_every_path;
    apply_is_idempotent => apply_is_idempotent;
    concurrent_adds_never_over_allocate => concurrent_adds_never_over_allocate;
    events_resume_after_restart => events_resume_after_restart;
    manual_changes_and_listing => manual_changes_and_listing;
    login_without_policy_is_unavailable => login_without_policy_is_unavailable;
    freed_seats_reach_waiting_people_in_order => freed_seats_reach_waiting_people_in_order;
}

fn admin() -> Option<common::Actor> {
    Some(common::Actor { kind: Some(common::actor::Kind::AdminId("alice".into())) })
}

fn named(name: &str) -> common::GroupRef {
    common::GroupRef { id: String::new(), name: name.into() }
}

/// An Enterprise (seat) org with the given settings.
async fn org_with(cluster: &TestCluster, settings: ppb::SettingsInput) -> String {
    cluster.enterprise_org(settings).await.1
}

fn mode(mode: ppb::ProvisioningMode) -> ppb::SettingsInput {
    ppb::SettingsInput { mode: mode as i32, ..Default::default() }
}

fn jit_agm() -> ppb::SettingsInput {
    ppb::SettingsInput {
        mode: ppb::ProvisioningMode::Jit as i32,
        advanced_group_mapping: true,
        role_mappings: vec![
            ppb::RoleMapping { role: "Owner".into(), groups: vec![named("owners")] },
            ppb::RoleMapping { role: "Admin".into(), groups: vec![named("admins")] },
        ],
        seat_tier_mappings: vec![ppb::SeatTierMapping {
            seat_tier: "Premium".into(),
            groups: vec![named("engineering")],
        }],
    }
}

async fn login(m: &mut MembershipClient, org: &str, email: &str, assigned: bool, groups: &[&str]) -> pb::LoginResponse {
    m.login(pb::LoginRequest {
        org_id: org.into(),
        identity: Some(pb::Identity {
            directory_id: String::new(),
            external_id: format!("sub-{email}"),
            email: email.into(),
            display_name: String::new(),
        }),
        assigned,
        groups: groups.iter().map(|g| named(g)).collect(),
    })
    .await
    .unwrap()
    .into_inner()
}

async fn add(
    m: &mut MembershipClient,
    org: &str,
    email: &str,
    role: &str,
    tier: &str,
) -> Result<pb::MemberChange, tonic::Status> {
    m.add_member(pb::AddMemberRequest {
        org_id: org.into(),
        email: email.into(),
        display_name: String::new(),
        role: role.into(),
        seat_tier: tier.into(),
        actor: admin(),
    })
    .await
    .map(|r| r.into_inner())
}

async fn members(m: &mut MembershipClient, org: &str) -> Vec<pb::Member> {
    m.list_members(pb::ListMembersRequest { org_id: org.into(), page_size: 1000, ..Default::default() })
        .await
        .unwrap()
        .into_inner()
        .members
}

async fn manual_mode_logins(kind: DbKind) {
    let cluster = TestCluster::start(kind).await;
    let org = org_with(&cluster, mode(ppb::ProvisioningMode::Manual)).await;
    let mut m = cluster.membership();
    let r = login(&mut m, &org, "new@acme.test", true, &["owners"]).await;
    assert!(!r.allowed);
    assert!(r.member.is_none(), "manual: a login never adds anyone");
    add(&mut m, &org, "kept@acme.test", "Admin", "").await.unwrap();
    let r = login(&mut m, &org, "KEPT@acme.test", true, &[]).await;
    assert!(r.allowed, "{:?}", r.reasons);
    let r = login(&mut m, &org, "kept@acme.test", false, &[]).await;
    assert!(!r.allowed);
    assert_eq!(members(&mut m, &org).await.len(), 1, "manual: only an administrator removes");
    cluster.stop().await;
}

async fn jit_logins_follow_spec(kind: DbKind) {
    let cluster = TestCluster::start(kind).await;
    let org = org_with(&cluster, mode(ppb::ProvisioningMode::Jit)).await;
    let mut m = cluster.membership();
    let r = login(&mut m, &org, "ada@acme.test", true, &["owners"]).await;
    assert!(r.allowed);
    assert_eq!(r.action, ppb::Action::Provision as i32);
    let member = r.member.unwrap();
    assert_eq!((member.role.as_str(), member.seat_tier.as_str()), ("User", "Premium"));
    assert_eq!(member.source, common::MemberSource::Jit as i32);

    // An administrator promotes her; logins without AGM never change it back.
    m.update_member(pb::UpdateMemberRequest {
        org_id: org.clone(),
        member_id: member.id.clone(),
        expected_version: member.version,
        role: Some("Owner".into()),
        seat_tier: None,
        actor: admin(),
    })
    .await
    .unwrap();
    let r = login(&mut m, &org, "ada@acme.test", true, &[]).await;
    assert!(r.allowed);
    assert_eq!(r.member.unwrap().role, "Owner");

    login(&mut m, &org, "bob@acme.test", true, &[]).await;
    let r = login(&mut m, &org, "bob@acme.test", false, &[]).await;
    assert!(!r.allowed);
    assert_eq!(r.action, ppb::Action::Remove as i32);
    assert!(r.member.is_none(), "an unassigned login removes the member");
    let r = login(&mut m, &org, "carol@acme.test", false, &[]).await;
    assert_eq!((r.allowed, r.action), (false, ppb::Action::DenyLogin as i32));
    let left: Vec<String> = members(&mut m, &org).await.into_iter().map(|m| m.user.unwrap().email).collect();
    assert_eq!(left, ["ada@acme.test"]);
    cluster.stop().await;
}

async fn jit_agm_logins_follow_groups(kind: DbKind) {
    let cluster = TestCluster::start(kind).await;
    let org = org_with(&cluster, jit_agm()).await;
    let mut m = cluster.membership();
    // Someone first, so the guardian guard does not hold the later changes.
    let r = login(&mut m, &org, "root@acme.test", true, &["owners"]).await;
    assert_eq!(r.member.unwrap().role, "Owner");

    let r = login(&mut m, &org, "eve@acme.test", true, &["admins", "engineering"]).await;
    assert!(r.allowed);
    let member = r.member.unwrap();
    assert_eq!((member.role.as_str(), member.seat_tier.as_str()), ("Admin", "Premium"));
    assert!(r.reasons[0].starts_with("Admin: from Admin (group admins)"), "{:?}", r.reasons);

    let r = login(&mut m, &org, "eve@acme.test", true, &["owners", "engineering"]).await;
    assert_eq!(r.action, ppb::Action::Update as i32);
    assert_eq!(r.member.unwrap().role, "Owner", "AGM recomputes the role at every login");

    let r = login(&mut m, &org, "eve@acme.test", true, &["unmapped"]).await;
    assert!(!r.allowed);
    assert_eq!(r.action, ppb::Action::Remove as i32, "no mapped group: denied and removed");
    assert!(r.member.is_none());

    let r = login(&mut m, &org, "zed@acme.test", true, &["unmapped"]).await;
    assert_eq!((r.allowed, r.action), (false, ppb::Action::DenyLogin as i32));
    assert_eq!(members(&mut m, &org).await.len(), 1);
    cluster.stop().await;
}

async fn seats_exhausted_then_added(kind: DbKind) {
    let cluster = TestCluster::start(kind).await;
    let org = org_with(&cluster, jit_agm()).await;
    let mut m = cluster.membership();
    for (tier, n) in [("Premium", 1), ("Standard", 1)] {
        m.set_seats(pb::SetSeatsRequest {
            org_id: org.clone(),
            seat_tier: tier.into(),
            purchased: Some(n),
            actor: admin(),
        })
        .await
        .unwrap();
    }
    let first = login(&mut m, &org, "a@acme.test", true, &["owners", "engineering"]).await;
    assert_eq!(first.member.unwrap().seat_tier, "Premium");
    let second = login(&mut m, &org, "b@acme.test", true, &["admins", "engineering"]).await;
    let pending = second.member.unwrap();
    assert!(!second.allowed, "mapped tier full: pending, never a lower tier");
    assert_eq!(pending.status, pb::MemberStatus::PendingSeat as i32);
    assert_eq!(pending.wanted_seat_tier, "Premium");
    let third = login(&mut m, &org, "c@acme.test", true, &["admins"]).await;
    assert_eq!(third.member.unwrap().seat_tier, "Standard", "no tier group: the highest tier with a free seat");

    let usage = m.get_seat_usage(pb::GetSeatUsageRequest { org_id: org.clone() }).await.unwrap().into_inner();
    assert_eq!(usage.tiers[0].used, 1);
    assert_eq!(usage.tiers[0].pending, 1);

    let usage = m
        .set_seats(pb::SetSeatsRequest {
            org_id: org.clone(),
            seat_tier: "Premium".into(),
            purchased: Some(2),
            actor: admin(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((usage.tiers[0].used, usage.tiers[0].pending), (2, 0), "adding seats activates pending members");
    let b =
        m.get_member(pb::GetMemberRequest { org_id: org.clone(), member_id: pending.id }).await.unwrap().into_inner();
    assert_eq!((b.status, b.seat_tier.as_str()), (pb::MemberStatus::Active as i32, "Premium"));
    cluster.stop().await;
}

async fn guardian_guard_on_every_path(kind: DbKind) {
    let cluster = TestCluster::start(kind).await;
    let org = org_with(&cluster, jit_agm()).await;
    let mut m = cluster.membership();
    let owner = login(&mut m, &org, "owner@acme.test", true, &["owners"]).await.member.unwrap();

    // Manual: remove and demote are refused with the rule named.
    let err = m
        .remove_member(pb::RemoveMemberRequest { org_id: org.clone(), member_id: owner.id.clone(), actor: admin() })
        .await
        .unwrap_err();
    assert_eq!((err.code(), rule_of(&err).as_deref()), (tonic::Code::FailedPrecondition, Some("guardian_required")));
    let err = m
        .update_member(pb::UpdateMemberRequest {
            org_id: org.clone(),
            member_id: owner.id.clone(),
            expected_version: owner.version,
            role: Some("User".into()),
            seat_tier: None,
            actor: admin(),
        })
        .await
        .unwrap_err();
    assert_eq!(rule_of(&err).as_deref(), Some("guardian_required"));

    // Login: the last owner's group mapping is gone; the removal is held, and audited.
    let r = login(&mut m, &org, "owner@acme.test", true, &["unmapped"]).await;
    assert!(!r.allowed);
    assert_eq!(r.member.unwrap().role, "Owner", "held: still a member, still Owner");
    assert!(r.reasons.iter().any(|x| x.contains("guardian")), "{:?}", r.reasons);

    // Apply: removal held.
    let apply = m
        .apply(pb::ApplyRequest {
            org_id: org.clone(),
            idempotency_key: "run-1/0".into(),
            directory_id: "dir-1".into(),
            actor: None,
            items: vec![pb::DesiredMember {
                identity: Some(pb::Identity { email: "owner@acme.test".into(), ..Default::default() }),
                action: ppb::Action::Remove as i32,
                role: String::new(),
                seat_tier: None,
                reasons: vec!["removed: in no mapped group".into()],
                // A removal names its member: an email alone never removes anyone.
                member_id: owner.id.clone(),
                also_known_as: vec![],
            }],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(apply.results[0].outcome, pb::ApplyOutcome::HeldGuardian as i32);
    let audit = m
        .list_audit(pb::ListAuditRequest { org_id: org.clone(), page_size: 100, ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    assert!(audit.entries.iter().filter(|e| e.action == "member.held_guardian").count() >= 2);

    // With a second owner the first may go.
    add(&mut m, &org, "second@acme.test", "Owner", "").await.unwrap();
    m.remove_member(pb::RemoveMemberRequest { org_id: org.clone(), member_id: owner.id, actor: admin() })
        .await
        .unwrap();
    cluster.stop().await;
}

fn provision(email: &str, role: &str) -> pb::DesiredMember {
    pb::DesiredMember {
        identity: Some(pb::Identity {
            directory_id: "dir-1".into(),
            external_id: format!("ext-{email}"),
            email: email.into(),
            display_name: email.into(),
        }),
        action: ppb::Action::Provision as i32,
        role: role.into(),
        seat_tier: Some(ppb::SeatTierPreference { choice: Some(ppb::seat_tier_preference::Choice::HighestFree(true)) }),
        reasons: vec!["assigned in the directory".into()],
        member_id: String::new(),
        also_known_as: vec![],
    }
}

async fn apply_is_idempotent(kind: DbKind) {
    let cluster = TestCluster::start(kind).await;
    let org = org_with(&cluster, mode(ppb::ProvisioningMode::Scim)).await;
    let mut m = cluster.membership();
    let request = pb::ApplyRequest {
        org_id: org.clone(),
        idempotency_key: "run-7/batch-0".into(),
        directory_id: "dir-1".into(),
        actor: Some(common::Actor { kind: Some(common::actor::Kind::SyncRunId("run-7".into())) }),
        items: vec![
            provision("a@acme.test", "User"),
            provision("b@acme.test", "Owner"),
            provision("c@acme.test", "Wizard"),
        ],
    };
    let first = m.apply(request.clone()).await.unwrap().into_inner();
    let outcomes: Vec<i32> = first.results.iter().map(|r| r.outcome).collect();
    assert_eq!(
        outcomes,
        [pb::ApplyOutcome::Applied as i32, pb::ApplyOutcome::Applied as i32, pb::ApplyOutcome::Error as i32]
    );
    assert!(first.results[2].error.contains("Wizard"));
    assert!(!first.replayed);
    let again = m.apply(request.clone()).await.unwrap().into_inner();
    assert!(again.replayed);
    assert_eq!(again.results, first.results);
    assert_eq!(members(&mut m, &org).await.len(), 2, "nothing applied twice");
    let audit = m
        .list_audit(pb::ListAuditRequest { org_id: org.clone(), actor: "sync_run:run-7".into(), ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(audit.entries.len(), 2);

    let mut other = request.clone();
    other.items.truncate(1);
    let err = m.apply(other).await.unwrap_err();
    assert_eq!(rule_of(&err).as_deref(), Some("idempotency_key_reused"));

    // The directory's member shows up by its identity.
    let found = m
        .lookup_members(pb::LookupMembersRequest {
            org_id: org.clone(),
            identities: vec![
                pb::Identity {
                    directory_id: "dir-1".into(),
                    external_id: "ext-b@acme.test".into(),
                    ..Default::default()
                },
                pb::Identity { email: "nobody@acme.test".into(), ..Default::default() },
            ],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(found.results[0].member.as_ref().unwrap().role, "Owner");
    assert!(found.results[1].member.is_none());
    cluster.stop().await;
}

async fn concurrent_adds_never_over_allocate(kind: DbKind) {
    let cluster = TestCluster::start(kind).await;
    let org = org_with(&cluster, mode(ppb::ProvisioningMode::Scim)).await;
    let mut m = cluster.membership();
    for (tier, n) in [("Premium", 5), ("Standard", 3)] {
        m.set_seats(pb::SetSeatsRequest {
            org_id: org.clone(),
            seat_tier: tier.into(),
            purchased: Some(n),
            actor: admin(),
        })
        .await
        .unwrap();
    }
    let mut tasks = Vec::new();
    for i in 0..12 {
        let mut client = cluster.membership();
        let org = org.clone();
        tasks.push(tokio::spawn(async move {
            if i % 2 == 0 {
                let _ = add(&mut client, &org, &format!("manual{i}@acme.test"), "User", "").await.unwrap();
            } else {
                let items = (0..3).map(|j| provision(&format!("sync{i}-{j}@acme.test"), "User")).collect();
                client
                    .apply(pb::ApplyRequest {
                        org_id: org,
                        idempotency_key: format!("k{i}"),
                        directory_id: "dir-1".into(),
                        actor: None,
                        items,
                    })
                    .await
                    .unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let all = members(&mut m, &org).await;
    assert_eq!(all.len(), 6 + 18);
    let count =
        |tier: &str| all.iter().filter(|x| x.seat_tier == tier && x.status == pb::MemberStatus::Active as i32).count();
    assert_eq!((count("Premium"), count("Standard")), (5, 3), "every seat used once, none twice");
    let pending = all.iter().filter(|x| x.status == pb::MemberStatus::PendingSeat as i32).count();
    assert_eq!(pending, 16);
    cluster.stop().await;
}

async fn events_resume_after_restart(kind: DbKind) {
    use tokio_stream::StreamExt;
    let mut cluster = TestCluster::start(kind).await;
    let org = org_with(&cluster, mode(ppb::ProvisioningMode::Jit)).await;
    let mut m = cluster.membership();
    for i in 0..3 {
        add(&mut m, &org, &format!("p{i}@acme.test"), "Admin", "").await.unwrap();
    }
    let mut stream =
        m.watch_events(pb::WatchEventsRequest { after_sequence: 0, org_id: org.clone() }).await.unwrap().into_inner();
    let mut seen = Vec::new();
    while seen.len() < 3 {
        seen.push(stream.next().await.unwrap().unwrap());
    }
    assert!(seen.iter().all(|e| e.r#type == "member.added"));
    let cursor = seen.last().unwrap().sequence;
    drop(stream);

    // Restart membership; changes happen while nobody watches.
    cluster.membership.take().unwrap().stop().await.unwrap();
    cluster.start_membership().await;
    let mut m = cluster.membership();
    add(&mut m, &org, "p3@acme.test", "User", "").await.unwrap();
    m.set_seats(pb::SetSeatsRequest {
        org_id: org.clone(),
        seat_tier: "Premium".into(),
        purchased: Some(10),
        actor: admin(),
    })
    .await
    .unwrap();

    let mut stream = m
        .watch_events(pb::WatchEventsRequest { after_sequence: cursor, org_id: org.clone() })
        .await
        .unwrap()
        .into_inner();
    let next = stream.next().await.unwrap().unwrap();
    let after = stream.next().await.unwrap().unwrap();
    assert_eq!(next.r#type, "member.added");
    assert_eq!(next.member.unwrap().user.unwrap().email, "p3@acme.test", "nothing lost, nothing repeated");
    assert_eq!(after.r#type, "seats.changed");
    assert!(next.sequence > cursor && after.sequence > next.sequence);

    // A live watcher sees a change made after it started.
    add(&mut m, &org, "p4@acme.test", "User", "").await.unwrap();
    let live = stream.next().await.unwrap().unwrap();
    assert_eq!(live.member.unwrap().user.unwrap().email, "p4@acme.test");
    cluster.stop().await;
}

async fn manual_changes_and_listing(kind: DbKind) {
    let cluster = TestCluster::start(kind).await;
    let org = org_with(&cluster, jit_agm()).await;
    let mut m = cluster.membership();
    let a = add(&mut m, &org, "Alpha@Acme.test", "Owner", "Premium").await.unwrap();
    assert!(a.notes.iter().any(|n| n.contains("next login recomputes")), "{:?}", a.notes);
    let a = a.member.unwrap();
    add(&mut m, &org, "beta@acme.test", "", "").await.unwrap();
    let err = add(&mut m, &org, "ALPHA@acme.test", "User", "").await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::AlreadyExists);
    let err = add(&mut m, &org, "gamma@acme.test", "Wizard", "").await.unwrap_err();
    assert_eq!((err.code(), rule_of(&err).as_deref()), (tonic::Code::InvalidArgument, Some("unknown_role")));
    let err = add(&mut m, &org, "not-an-email", "User", "").await.unwrap_err();
    assert_eq!(rule_of(&err).as_deref(), Some("email_invalid"));

    let stale = m
        .update_member(pb::UpdateMemberRequest {
            org_id: org.clone(),
            member_id: a.id.clone(),
            expected_version: a.version + 5,
            role: None,
            seat_tier: Some("Standard".into()),
            actor: admin(),
        })
        .await
        .unwrap_err();
    assert_eq!(stale.code(), tonic::Code::Aborted);

    let owners = m
        .list_members(pb::ListMembersRequest { org_id: org.clone(), role: "Owner".into(), ..Default::default() })
        .await
        .unwrap()
        .into_inner()
        .members;
    assert_eq!(owners.len(), 1);
    let by_prefix = m
        .list_members(pb::ListMembersRequest { org_id: org.clone(), email_prefix: "BE".into(), ..Default::default() })
        .await
        .unwrap()
        .into_inner()
        .members;
    assert_eq!(by_prefix[0].user.as_ref().unwrap().email, "beta@acme.test");
    assert_eq!(by_prefix[0].role, "User", "default role when none is given");
    let page = m
        .list_members(pb::ListMembersRequest { org_id: org.clone(), page_size: 1, ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(page.members.len(), 1);
    assert_eq!(page.total_size, 2, "the count covers every page");
    let rest = m
        .list_members(pb::ListMembersRequest {
            org_id: org.clone(),
            page_size: 1,
            page_token: page.next_page_token,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(rest.members.len(), 1);
    assert!(rest.next_page_token.is_empty());
    assert_ne!(rest.members[0].id, page.members[0].id);
    cluster.stop().await;
}

async fn login_without_policy_is_unavailable(kind: DbKind) {
    let mut cluster = TestCluster::start(kind).await;
    let org = org_with(&cluster, mode(ppb::ProvisioningMode::Jit)).await;
    let mut m = cluster.membership();
    login(&mut m, &org, "known@acme.test", true, &[]).await;
    // An org membership has not met yet: its product must come from policy.
    let unseen = org_with(&cluster, mode(ppb::ProvisioningMode::Manual)).await;
    cluster.stop_policy().await;
    // A read says what it could not read (not that "nothing was changed").
    let err = m.get_seat_usage(pb::GetSeatUsageRequest { org_id: unseen }).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");
    assert!(err.message().starts_with("cannot read the org's seats: policy"), "{}", err.message());
    assert!(!err.message().contains("nothing was changed"), "{}", err.message());
    let err = m
        .login(pb::LoginRequest {
            org_id: org.clone(),
            identity: Some(pb::Identity { email: "known@acme.test".into(), ..Default::default() }),
            assigned: false,
            groups: vec![],
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");
    assert_eq!(members(&mut m, &org).await.len(), 1, "nobody removed on a guess");
    cluster.start_policy().await;
    let r = login(&mut m, &org, "known@acme.test", true, &[]).await;
    assert!(r.allowed, "works again once policy is back");
    cluster.stop().await;
}

async fn set_seats(m: &mut MembershipClient, org: &str, tier: &str, n: i64) -> Result<pb::SeatUsage, tonic::Status> {
    m.set_seats(pb::SetSeatsRequest { org_id: org.into(), seat_tier: tier.into(), purchased: Some(n), actor: admin() })
        .await
        .map(|r| r.into_inner())
}

async fn seat_of(m: &mut MembershipClient, org: &str, email: &str) -> (i32, String, String) {
    let all = members(m, org).await;
    let x = all.iter().find(|x| x.user.as_ref().is_some_and(|u| u.email == email)).expect("a member");
    (x.status, x.seat_tier.clone(), x.wanted_seat_tier.clone())
}

/// Rule 7: a seat freed by a removal, a seat purchase or a move to another tier goes
/// at once to whoever waits for it, in the order they started waiting; fewer seats
/// than are in use cannot be bought.
async fn freed_seats_reach_waiting_people_in_order(kind: DbKind) {
    let cluster = TestCluster::start(kind).await;
    let org = org_with(&cluster, mode(ppb::ProvisioningMode::Manual)).await;
    let mut m = cluster.membership();
    set_seats(&mut m, &org, "Premium", 1).await.unwrap();
    set_seats(&mut m, &org, "Standard", 1).await.unwrap();
    let active = pb::MemberStatus::Active as i32;
    let pending = pb::MemberStatus::PendingSeat as i32;
    let a = add(&mut m, &org, "a@acme.test", "Owner", "Premium").await.unwrap().member.unwrap();
    // A second Owner, so that a may leave.
    let b = add(&mut m, &org, "b@acme.test", "Owner", "Standard").await.unwrap().member.unwrap();
    // Three wait, in this order: c and e for any tier, d for Standard only.
    for (who, tier) in [("c", ""), ("d", "Standard"), ("e", "")] {
        let r = add(&mut m, &org, &format!("{who}@acme.test"), "User", tier).await.unwrap();
        assert_eq!(r.member.unwrap().status, pending, "{who}");
    }

    let err = set_seats(&mut m, &org, "Premium", 0).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition);
    assert_eq!(rule_of(&err).as_deref(), Some("seats_below_use"));
    assert!(err.message().contains("1 seats in use"), "{}", err.message());

    // A purchase: the new Premium seat goes to c, who waited first.
    set_seats(&mut m, &org, "Premium", 2).await.unwrap();
    assert_eq!(seat_of(&mut m, &org, "c@acme.test").await, (active, "Premium".into(), String::new()));
    assert_eq!(seat_of(&mut m, &org, "e@acme.test").await.0, pending);
    // A removal: a's Premium seat goes to e (d waits for Standard only).
    m.remove_member(pb::RemoveMemberRequest { org_id: org.clone(), member_id: a.id, actor: admin() }).await.unwrap();
    assert_eq!(seat_of(&mut m, &org, "e@acme.test").await, (active, "Premium".into(), String::new()));
    assert_eq!(seat_of(&mut m, &org, "d@acme.test").await.0, pending);
    // A move to another tier: b takes a new Premium seat, and b's Standard seat goes to d.
    set_seats(&mut m, &org, "Premium", 3).await.unwrap();
    assert_eq!(seat_of(&mut m, &org, "d@acme.test").await.0, pending, "nobody waits for that Premium seat");
    let b_now = members(&mut m, &org).await.into_iter().find(|x| x.id == b.id).unwrap();
    m.update_member(pb::UpdateMemberRequest {
        org_id: org.clone(),
        member_id: b.id.clone(),
        expected_version: b_now.version,
        role: None,
        seat_tier: Some("Premium".into()),
        actor: admin(),
    })
    .await
    .unwrap();
    assert_eq!(seat_of(&mut m, &org, "b@acme.test").await.1, "Premium");
    assert_eq!(seat_of(&mut m, &org, "d@acme.test").await, (active, "Standard".into(), String::new()));
    cluster.stop().await;
}
