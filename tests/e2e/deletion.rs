//! Deleting a directory: its members leave through a normal run, guarded by the
//! mass-removal brake (and the guardian guard), before the mirror goes.

use std::time::Duration;

use muster_proto::common::v1 as common;
use muster_proto::directory::v1 as dpb;
use muster_proto::membership::v1 as mpb;
use muster_proto::policy::v1 as ppb;
use muster_runtime::status::rule_of;
use muster_tests::{DbKind, TestCluster};
use serde_json::json;

on_both_databases! {
    deleting_a_directory_removes_its_members_through_the_brake => deletion;
}

fn admin() -> Option<common::Actor> {
    Some(common::Actor { kind: Some(common::actor::Kind::AdminId("tester".into())) })
}

async fn member_emails(cluster: &TestCluster, org: &str) -> Vec<String> {
    let page = cluster
        .membership()
        .list_members(mpb::ListMembersRequest { org_id: org.into(), page_size: 1000, ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    let mut emails: Vec<String> = page.members.into_iter().map(|m| m.user.unwrap().email).collect();
    emails.sort();
    emails
}

async fn wait_members(cluster: &TestCluster, org: &str, n: usize) {
    let waited = tokio::time::timeout(Duration::from_secs(90), async {
        while member_emails(cluster, org).await.len() != n {
            tokio::task::yield_now().await;
        }
    })
    .await;
    assert!(waited.is_ok(), "org never had {n} members: {:?}", member_emails(cluster, org).await);
}

/// A SCIM directory for `parent` with `users` pushed into it; returns its id.
async fn directory_with(cluster: &TestCluster, parent: &str, users: &[String]) -> String {
    let created = cluster
        .directory()
        .create_directory(dpb::CreateDirectoryRequest {
            parent_id: parent.into(),
            kind: dpb::DirectoryKind::Scim as i32,
            display_name: "IdP".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let dir = created.directory.unwrap();
    let http = reqwest::Client::new();
    for user in users {
        let body = json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": user,
                          "emails": [{"value": user, "primary": true}], "active": true});
        let resp = http
            .post(format!("{}/Users", dir.scim_base_url))
            .bearer_auth(&created.scim_token)
            .header("content-type", "application/scim+json")
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 201);
    }
    dir.id
}

async fn deletion(kind: DbKind) {
    let cluster = TestCluster::start(kind).await;
    let (parent_id, org_id) = cluster
        .enterprise_org(ppb::SettingsInput { mode: ppb::ProvisioningMode::Scim as i32, ..Default::default() })
        .await;
    // The org's only Owner: the guardian guard keeps them through everything below.
    for (email, role) in [("boss@acme.test", "Owner")] {
        cluster
            .membership()
            .add_member(mpb::AddMemberRequest {
                org_id: org_id.clone(),
                email: email.into(),
                role: role.into(),
                actor: admin(),
                ..Default::default()
            })
            .await
            .unwrap();
    }
    let mut directory = cluster.directory();

    // A small directory: its three members leave with it.
    let small: Vec<String> = (0..3).map(|i| format!("s{i}@acme.test")).collect();
    let dir = directory_with(&cluster, &parent_id, &small).await;
    wait_members(&cluster, &org_id, 4).await;
    directory.delete_directory(dpb::DeleteDirectoryRequest { id: dir.clone(), actor: None }).await.unwrap();
    assert_eq!(member_emails(&cluster, &org_id).await, ["boss@acme.test"]);
    let gone = directory.get_directory(dpb::GetDirectoryRequest { id: dir }).await.unwrap_err();
    assert_eq!(gone.code(), tonic::Code::NotFound);

    // A large one: removing its 12 members is held by the brake; nothing goes until approved.
    let large: Vec<String> = (0..12).map(|i| format!("l{i:02}@acme.test")).collect();
    let dir = directory_with(&cluster, &parent_id, &large).await;
    wait_members(&cluster, &org_id, 13).await;
    let err =
        directory.delete_directory(dpb::DeleteDirectoryRequest { id: dir.clone(), actor: None }).await.unwrap_err();
    assert_eq!((err.code(), rule_of(&err).as_deref()), (tonic::Code::FailedPrecondition, Some("deletion_held")));
    assert_eq!(member_emails(&cluster, &org_id).await.len(), 13, "held: nobody removed");
    let leaving = directory.get_directory(dpb::GetDirectoryRequest { id: dir.clone() }).await.unwrap().into_inner();
    assert_eq!(leaving.state, dpb::DirectoryState::Leaving as i32);
    let runs = directory
        .list_sync_runs(dpb::ListSyncRunsRequest {
            directory_id: dir.clone(),
            page_size: 100,
            page_token: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .runs;
    let held = runs.iter().find(|r| r.state == dpb::RunState::Held as i32).expect("a held run");
    assert!(err.message().contains(&held.id), "the error names the run: {}", err.message());
    directory.approve_run(dpb::ApproveRunRequest { run_id: held.id.clone(), actor: admin() }).await.unwrap();
    wait_members(&cluster, &org_id, 1).await;
    directory.delete_directory(dpb::DeleteDirectoryRequest { id: dir.clone(), actor: None }).await.unwrap();
    assert_eq!(member_emails(&cluster, &org_id).await, ["boss@acme.test"]);
    cluster.stop().await;
}
