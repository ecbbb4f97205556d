//! The policy service over gRPC: orgs, catalog, settings rules, versions, decisions.

use muster_proto::common::v1 as common;
use muster_proto::policy::v1 as pb;
use muster_runtime::client::PolicyClient;
use muster_runtime::status::{field_violations, rule_of};
use muster_tests::{DbKind, TestCluster};

on_both_databases! {
    parents_and_orgs_lifecycle => parents_and_orgs_lifecycle;
    listing_pages_to_the_end => listing_pages_to_the_end;
    settings_are_versioned => settings_are_versioned;
    invalid_settings_name_the_rule => invalid_settings_name_the_rule;
    decide_follows_saved_and_proposed_settings => decide_follows_saved_and_proposed_settings;
    decide_rejects_bad_batches => decide_rejects_bad_batches;
}

async fn parent(policy: &mut PolicyClient, kind: pb::ParentKind) -> pb::ParentOrg {
    policy
        .create_parent_org(pb::CreateParentOrgRequest { name: "Acme".into(), kind: kind as i32 })
        .await
        .unwrap()
        .into_inner()
}

async fn org(policy: &mut PolicyClient, parent_id: &str, product: pb::ProductKind) -> pb::Org {
    policy
        .create_org(pb::CreateOrgRequest { parent_id: parent_id.into(), name: "Org".into(), product: product as i32 })
        .await
        .unwrap()
        .into_inner()
}

fn by_id(id: &str) -> common::GroupRef {
    common::GroupRef { id: id.into(), name: String::new() }
}

async fn parents_and_orgs_lifecycle(kind: DbKind) {
    let cluster = TestCluster::start(kind).await;
    let mut policy = cluster.policy();
    let p = parent(&mut policy, pb::ParentKind::Enterprise).await;
    assert_eq!(p.kind, pb::ParentKind::Enterprise as i32);
    let o = org(&mut policy, &p.id, pb::ProductKind::ClaudeEnterpriseSeat).await;
    assert_eq!(o.parent_id, p.id);

    let err = policy
        .create_org(pb::CreateOrgRequest {
            parent_id: p.id.clone(),
            name: "Team".into(),
            product: pb::ProductKind::ClaudeTeam as i32,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition);
    assert_eq!(rule_of(&err).as_deref(), Some("product_not_allowed_for_parent"));

    let err = policy
        .create_org(pb::CreateOrgRequest { parent_id: p.id.clone(), name: " ".into(), product: 2 })
        .await
        .unwrap_err();
    assert_eq!((err.code(), rule_of(&err).as_deref()), (tonic::Code::InvalidArgument, Some("name_invalid")));

    let renamed = policy.update_org(pb::UpdateOrgRequest { id: o.id.clone(), name: "Renamed".into() }).await.unwrap();
    assert_eq!(renamed.into_inner().name, "Renamed");

    let err = policy.delete_parent_org(pb::DeleteParentOrgRequest { id: p.id.clone() }).await.unwrap_err();
    assert_eq!((err.code(), rule_of(&err).as_deref()), (tonic::Code::FailedPrecondition, Some("parent_has_orgs")));
    policy.delete_org(pb::DeleteOrgRequest { id: o.id.clone() }).await.unwrap();
    policy.delete_parent_org(pb::DeleteParentOrgRequest { id: p.id.clone() }).await.unwrap();
    let err = policy.get_parent_org(pb::GetParentOrgRequest { id: p.id }).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    let err = policy.get_org(pb::GetOrgRequest { id: o.id }).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);

    let products = policy.list_products(pb::ListProductsRequest {}).await.unwrap().into_inner().products;
    let console = products.iter().find(|p| p.name == "console").unwrap();
    assert_eq!(console.guardian_role, "Admin");
    assert!(console.seat_tiers.is_empty());
    let usage = policy
        .get_product(pb::GetProductRequest { kind: pb::ProductKind::ClaudeEnterpriseUsage as i32 })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(usage.seat_tiers, ["Chat + Claude Code", "Chat"]);
    cluster.stop().await;
}

async fn listing_pages_to_the_end(kind: DbKind) {
    let cluster = TestCluster::start(kind).await;
    let mut policy = cluster.policy();
    let p = parent(&mut policy, pb::ParentKind::Console).await;
    let mut created = Vec::new();
    for _ in 0..7 {
        created.push(org(&mut policy, &p.id, pb::ProductKind::Console).await.id);
    }
    let other = parent(&mut policy, pb::ParentKind::Team).await;
    org(&mut policy, &other.id, pb::ProductKind::ClaudeTeam).await;

    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = policy
            .list_orgs(pb::ListOrgsRequest { parent_id: p.id.clone(), page_size: 3, page_token: token })
            .await
            .unwrap()
            .into_inner();
        assert!(page.orgs.len() <= 3);
        seen.extend(page.orgs.into_iter().map(|o| o.id));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(seen, created, "every org of the parent once, in creation order");
    let err = policy.list_orgs(pb::ListOrgsRequest { page_size: -1, ..Default::default() }).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    cluster.stop().await;
}

fn scim_agm(owner_group: &str) -> pb::SettingsInput {
    pb::SettingsInput {
        mode: pb::ProvisioningMode::Scim as i32,
        advanced_group_mapping: true,
        role_mappings: vec![pb::RoleMapping { role: "Owner".into(), groups: vec![by_id(owner_group)] }],
        seat_tier_mappings: vec![pb::SeatTierMapping { seat_tier: "Premium".into(), groups: vec![by_id("g-prem")] }],
    }
}

async fn settings_are_versioned(kind: DbKind) {
    let cluster = TestCluster::start(kind).await;
    let mut policy = cluster.policy();
    let p = parent(&mut policy, pb::ParentKind::Enterprise).await;
    let o = org(&mut policy, &p.id, pb::ProductKind::ClaudeEnterpriseSeat).await;

    let defaults = policy.get_settings(pb::GetSettingsRequest { org_id: o.id.clone() }).await.unwrap().into_inner();
    assert_eq!((defaults.version, defaults.mode), (0, pb::ProvisioningMode::Manual as i32));

    let actor = Some(common::Actor { kind: Some(common::actor::Kind::AdminId("alice".into())) });
    let v1 = policy
        .update_settings(pb::UpdateSettingsRequest {
            org_id: o.id.clone(),
            expected_version: 0,
            settings: Some(scim_agm("g-owners")),
            actor: actor.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(v1.version, 1);
    assert_eq!(v1.role_mappings[0].groups[0].id, "g-owners");

    // Two administrators who both read version 1: the second save is refused.
    let save = |group: &str| pb::UpdateSettingsRequest {
        org_id: o.id.clone(),
        expected_version: 1,
        settings: Some(scim_agm(group)),
        actor: actor.clone(),
    };
    let (mut first, mut second) = (policy.clone(), policy.clone());
    let (a, b) = tokio::join!(first.update_settings(save("g-a")), second.update_settings(save("g-b")));
    let outcomes = [a.map(|r| r.into_inner().version), b.map(|r| r.into_inner().version)];
    let won: Vec<_> = outcomes.iter().filter_map(|o| o.as_ref().ok()).collect();
    assert_eq!(won, [&2], "exactly one save wins: {outcomes:?}");
    let lost = outcomes.iter().find_map(|o| o.as_ref().err()).unwrap();
    assert_eq!(lost.code(), tonic::Code::Aborted);
    assert_eq!(rule_of(lost).as_deref(), Some("version_conflict"));

    let err =
        policy.update_settings(pb::UpdateSettingsRequest { expected_version: 0, ..save("g-c") }).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Aborted, "a stale first save is refused too");
    cluster.stop().await;
}

async fn invalid_settings_name_the_rule(kind: DbKind) {
    let cluster = TestCluster::start(kind).await;
    let mut policy = cluster.policy();
    let team_parent = parent(&mut policy, pb::ParentKind::Team).await;
    let team = org(&mut policy, &team_parent.id, pb::ProductKind::ClaudeTeam).await;
    let team_console = org(&mut policy, &team_parent.id, pb::ProductKind::Console).await;
    let ent_parent = parent(&mut policy, pb::ParentKind::Enterprise).await;
    let ent = org(&mut policy, &ent_parent.id, pb::ProductKind::ClaudeEnterpriseUsage).await;
    let console = org(&mut policy, &ent_parent.id, pb::ProductKind::Console).await;

    let manual_agm = pb::SettingsInput {
        mode: pb::ProvisioningMode::Manual as i32,
        advanced_group_mapping: true,
        ..Default::default()
    };
    let scim = pb::SettingsInput { mode: pb::ProvisioningMode::Scim as i32, ..Default::default() };
    let unknown_role = pb::SettingsInput {
        mode: pb::ProvisioningMode::Jit as i32,
        advanced_group_mapping: true,
        role_mappings: vec![pb::RoleMapping { role: "Wizard".into(), groups: vec![by_id("g")] }],
        ..Default::default()
    };
    let wrong_tier = pb::SettingsInput {
        seat_tier_mappings: vec![pb::SeatTierMapping { seat_tier: "Premium".into(), groups: vec![by_id("g")] }],
        role_mappings: vec![],
        ..unknown_role.clone()
    };
    let cases = [
        (&team.id, scim.clone(), "scim_not_allowed_for_product", "mode"),
        (&team_console.id, scim.clone(), "scim_not_allowed_for_parent", "mode"),
        (&ent.id, manual_agm, "agm_requires_jit_or_scim", "advanced_group_mapping"),
        (&ent.id, unknown_role, "unknown_role", "role_mappings[0].role"),
        (&ent.id, wrong_tier.clone(), "unknown_seat_tier", "seat_tier_mappings[0].seat_tier"),
        (&console.id, wrong_tier, "seat_tiers_on_console", "seat_tier_mappings"),
    ];
    for (org_id, settings, rule, field) in cases {
        let err = policy
            .update_settings(pb::UpdateSettingsRequest {
                org_id: org_id.clone(),
                expected_version: 0,
                settings: Some(settings.clone()),
                actor: None,
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{rule}: {err:?}");
        assert_eq!(rule_of(&err).as_deref(), Some(rule));
        assert!(field_violations(&err).iter().any(|(f, _)| f == field), "{rule}: {:?}", field_violations(&err));
        assert!(err.message().contains(rule), "the message names the rule: {}", err.message());

        let check = policy
            .validate_settings(pb::ValidateSettingsRequest { org_id: org_id.clone(), settings: Some(settings) })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(check.violations[0].rule, rule);
    }
    // Nothing was saved by any refused update.
    let s = policy.get_settings(pb::GetSettingsRequest { org_id: ent.id.clone() }).await.unwrap().into_inner();
    assert_eq!(s.version, 0);
    // Scim is fine for an Enterprise org and a Console org under an Enterprise parent.
    for org_id in [&ent.id, &console.id] {
        policy
            .update_settings(pb::UpdateSettingsRequest {
                org_id: org_id.clone(),
                expected_version: 0,
                settings: Some(scim.clone()),
                actor: None,
            })
            .await
            .unwrap();
    }
    cluster.stop().await;
}

fn subject(user: &str, assigned: bool, groups: &[&str], current_role: Option<&str>) -> pb::Subject {
    pb::Subject {
        user_ref: user.into(),
        assigned,
        groups: groups.iter().map(|g| common::GroupRef { id: g.to_string(), name: format!("{g}-name") }).collect(),
        current: current_role.map(|role| pb::CurrentMembership {
            role: role.into(),
            seat_tier: "Standard".into(),
            source: common::MemberSource::Directory as i32,
        }),
    }
}

async fn decide_follows_saved_and_proposed_settings(kind: DbKind) {
    let cluster = TestCluster::start(kind).await;
    let mut policy = cluster.policy();
    let p = parent(&mut policy, pb::ParentKind::Enterprise).await;
    let o = org(&mut policy, &p.id, pb::ProductKind::ClaudeEnterpriseSeat).await;
    let subjects = vec![
        subject("owner", true, &["g-owners", "g-prem"], None),
        subject("demoted", true, &["g-other"], Some("Owner")),
        subject("gone", false, &[], Some("User")),
    ];
    let decide = |proposed: Option<pb::SettingsInput>| pb::DecideRequest {
        org_id: o.id.clone(),
        trigger: common::Trigger::DirectorySync as i32,
        subjects: subjects.clone(),
        proposed_settings: proposed,
    };

    // Manual (defaults): a directory changes nothing.
    let manual = policy.decide(decide(None)).await.unwrap().into_inner();
    assert!(manual.decisions.iter().all(|d| d.action == pb::Action::None as i32));

    // Proposed scim+AGM, unsaved: the engine evaluates it without touching stored settings.
    let preview = policy.decide(decide(Some(scim_agm("g-owners")))).await.unwrap().into_inner();
    assert_eq!(preview.settings_version, 0);
    let actions: Vec<i32> = preview.decisions.iter().map(|d| d.action).collect();
    assert_eq!(actions, [pb::Action::Provision as i32, pb::Action::Remove as i32, pb::Action::Remove as i32]);
    let owner = &preview.decisions[0];
    assert_eq!(owner.role, "Owner");
    assert_eq!(owner.reasons[0], "Owner: from Owner (group g-owners-name)");
    assert_eq!(
        owner.seat_tier.as_ref().and_then(|t| t.choice.clone()),
        Some(pb::seat_tier_preference::Choice::Mapped("Premium".into()))
    );

    policy
        .update_settings(pb::UpdateSettingsRequest {
            org_id: o.id.clone(),
            expected_version: 0,
            settings: Some(scim_agm("g-owners")),
            actor: None,
        })
        .await
        .unwrap();
    let saved = policy.decide(decide(None)).await.unwrap().into_inner();
    assert_eq!(saved.settings_version, 1);
    assert_eq!(saved.decisions, preview.decisions, "saving gives what the proposal showed");

    let err = policy
        .decide(decide(Some(pb::SettingsInput {
            mode: pb::ProvisioningMode::Manual as i32,
            advanced_group_mapping: true,
            ..Default::default()
        })))
        .await
        .unwrap_err();
    assert_eq!(rule_of(&err).as_deref(), Some("agm_requires_jit_or_scim"));
    cluster.stop().await;
}

async fn decide_rejects_bad_batches(kind: DbKind) {
    let cluster = TestCluster::start(kind).await;
    let mut policy = cluster.policy();
    let p = parent(&mut policy, pb::ParentKind::Enterprise).await;
    let o = org(&mut policy, &p.id, pb::ProductKind::ClaudeEnterpriseSeat).await;

    let too_many: Vec<pb::Subject> = (0..10_001).map(|i| subject(&format!("u{i}"), true, &[], None)).collect();
    let err = policy
        .decide(pb::DecideRequest {
            org_id: o.id.clone(),
            trigger: common::Trigger::SyncNow as i32,
            subjects: too_many,
            proposed_settings: None,
        })
        .await
        .unwrap_err();
    assert_eq!((err.code(), rule_of(&err).as_deref()), (tonic::Code::InvalidArgument, Some("batch_too_large")));

    let full: Vec<pb::Subject> = (0..10_000).map(|i| subject(&format!("u{i}"), true, &["g-owners"], None)).collect();
    let ok = policy
        .decide(pb::DecideRequest {
            org_id: o.id.clone(),
            trigger: common::Trigger::SyncNow as i32,
            subjects: full,
            proposed_settings: Some(scim_agm("g-owners")),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ok.decisions.len(), 10_000);
    assert!(ok.decisions.iter().all(|d| d.role == "Owner"));

    let err = policy
        .decide(pb::DecideRequest { org_id: o.id.clone(), trigger: 0, subjects: vec![], proposed_settings: None })
        .await
        .unwrap_err();
    assert_eq!(rule_of(&err).as_deref(), Some("trigger_required"));
    let err = policy
        .decide(pb::DecideRequest {
            org_id: "missing".into(),
            trigger: common::Trigger::Login as i32,
            subjects: vec![],
            proposed_settings: None,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    cluster.stop().await;
}
