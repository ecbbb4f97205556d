//! Two directory-sync replicas on one database: a directory's queued changes are
//! reconciled by one replica at a time (under the directory's lease), never by both.

use std::time::Duration;

use muster_proto::directory::v1 as dpb;
use muster_proto::membership::v1 as mpb;
use muster_proto::policy::v1 as ppb;
use muster_tests::{DbKind, TestCluster};
use serde_json::json;

// Several replicas share a database only on PostgreSQL; a SQLite file belongs to one
// process (docs/operations.md), and two writers' pools on it collide (SQLITE_BUSY).
mod replicas_drain_a_directory_one_at_a_time {
    use muster_tests::DbKind;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres() {
        if muster_tests::postgres_available() {
            super::replicas(DbKind::Postgres).await;
        }
    }
}

async fn replicas(kind: DbKind) {
    let cluster = TestCluster::start(kind).await;
    let replica = cluster.start_directory_replica().await;
    let (parent_id, org_id) = cluster
        .enterprise_org(ppb::SettingsInput { mode: ppb::ProvisioningMode::Scim as i32, ..Default::default() })
        .await;
    let mut directory = cluster.directory();
    let created = directory
        .create_directory(dpb::CreateDirectoryRequest {
            parent_id: parent_id.clone(),
            kind: dpb::DirectoryKind::Scim as i32,
            display_name: "IdP".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let dir = created.directory.unwrap();
    let http = reqwest::Client::new();
    const PEOPLE: usize = 25;
    for i in 0..PEOPLE {
        let user = format!("p{i:02}@acme.test");
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
    let mut membership = cluster.membership();
    let waited = tokio::time::timeout(Duration::from_secs(90), async {
        loop {
            let page = membership
                .list_members(mpb::ListMembersRequest { org_id: org_id.clone(), page_size: 1, ..Default::default() })
                .await
                .unwrap()
                .into_inner();
            if page.total_size == PEOPLE as i64 {
                break;
            }
            tokio::task::yield_now().await;
        }
    })
    .await;
    assert!(waited.is_ok(), "every pushed person became a member");

    let runs = directory
        .list_sync_runs(dpb::ListSyncRunsRequest {
            directory_id: dir.id.clone(),
            page_size: 1000,
            page_token: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .runs;
    let nanos = |t: &prost_types::Timestamp| t.seconds as i128 * 1_000_000_000 + i128::from(t.nanos);
    let mut spans: Vec<(i128, i128)> = runs
        .iter()
        .filter(|r| r.trigger == dpb::RunTrigger::ScimPush as i32)
        .map(|r| (nanos(r.start_time.as_ref().unwrap()), nanos(r.end_time.as_ref().expect("push runs end"))))
        .collect();
    assert!(!spans.is_empty());
    spans.sort();
    for pair in spans.windows(2) {
        assert!(pair[0].1 <= pair[1].0, "two replicas reconciled the directory at once: {pair:?}");
    }
    replica.stop().await.unwrap();
    cluster.stop().await;
}
